//! virtio-mem's early-setup section: QEMU's `vmstate_virtio_mem_device_early`
//! ("virtio-mem-device-early") in `hw/virtio/virtio-mem.c`, whose first field is a
//! `VMSTATE_WITH_TMP` of `vmstate_virtio_mem_sanity_checks`.
//!
//! With `-M q35 -m 128,maxmem=1G,slots=1 -object memory-backend-ram,id=mem0,size=128M
//! -device virtio-mem-pci,memdev=mem0` the section is `0000:00:01.0/virtio-mem-device-early`,
//! instance 0, version 1, sent right after RAM's START section. The temporary carries the
//! device's placement and sizes; on load QEMU compares them with the destination's
//! properties and refuses the stream on a difference ("Property 'block-size' changed from
//! 0x400000 to 0x200000").

use vmstate::description::{FieldType, Info};
use vmstate::{Reader, SaveContext, Tmp, VmElem, VmState, Writer};

/// QEMU's `vmstate_virtio_mem_device_early`, version 1. The device fields other than
/// the migrated ones are the qdev properties the sanity checks compare against.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "virtio-mem-device-early", version = 1, min_version = 1)]
pub struct VirtioMemEarly {
    /// `VMSTATE_WITH_TMP(VirtIOMEM, VirtIOMEMMigSanityChecks, ...)`.
    #[vmstate(to_tmp = Self::sanity_checks, from_tmp = Self::check_sanity)]
    pub tmp: Tmp<VirtioMemSanityChecks>,
    /// `size`: the plugged size in bytes.
    pub size: u64,
    /// `bitmap`: one bit per block, plugged or not.
    pub bitmap: VirtioMemBitmap,
    /// Property `memaddr`: the guest-physical address of the device's region.
    #[vmstate(skip)]
    pub addr: u64,
    /// The size of the memory backend: the region's size.
    #[vmstate(skip)]
    pub region_size: u64,
    /// Property `block-size`.
    #[vmstate(skip)]
    pub block_size: u64,
    /// Property `node`.
    #[vmstate(skip)]
    pub node: u32,
}

/// QEMU's `vmstate_virtio_mem_sanity_checks` ("virtio-mem-device/sanity-checks"),
/// version 0: the temporary.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "virtio-mem-device/sanity-checks", version = 0, min_version = 0)]
pub struct VirtioMemSanityChecks {
    /// `addr`.
    pub addr: u64,
    /// `region_size`.
    pub region_size: u64,
    /// `block_size`.
    pub block_size: u64,
    /// `node`.
    pub node: u32,
}

impl VirtioMemEarly {
    /// The device of the command line above: region at 4 GiB, 128 MiB, 2 MiB blocks.
    pub fn q35_128m() -> Self {
        VirtioMemEarly {
            addr: 0x1_0000_0000,
            region_size: 128 << 20,
            block_size: 2 << 20,
            ..Default::default()
        }
    }

    /// QEMU's `virtio_mem_mig_sanity_checks_pre_save`.
    fn sanity_checks(&self) -> VirtioMemSanityChecks {
        VirtioMemSanityChecks {
            addr: self.addr,
            region_size: self.region_size,
            block_size: self.block_size,
            node: self.node,
        }
    }

    /// QEMU's `virtio_mem_mig_sanity_checks_post_load`, with its messages.
    fn check_sanity(&mut self, t: VirtioMemSanityChecks) -> Result<(), String> {
        if t.addr != self.addr {
            return Err(format!(
                "Property 'memaddr' changed from 0x{:x} to 0x{:x}",
                t.addr, self.addr
            ));
        }
        if t.region_size != self.region_size {
            return Err(format!(
                "Property 'memdev' size changed from 0x{:x} to 0x{:x}",
                t.region_size, self.region_size
            ));
        }
        if t.block_size != self.block_size {
            return Err(format!(
                "Property 'block-size' changed from 0x{:x} to 0x{:x}",
                t.block_size, self.block_size
            ));
        }
        if t.node != self.node {
            return Err(format!(
                "Property 'node' changed from {} to {}",
                t.node, self.node
            ));
        }
        Ok(())
    }
}

/// The plug bitmap for this configuration: 128 MiB / 2 MiB = 64 blocks, so one be64 word
/// (QEMU's `VMSTATE_BITMAP`, info `bitmap`, writes the bits as be64 words).
#[derive(Default, Debug, Clone, Copy, PartialEq)]
pub struct VirtioMemBitmap(pub u64);

impl VmElem for VirtioMemBitmap {
    const TYPE: FieldType = FieldType::Info(Info::new("bitmap", 8));

    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, _: &mut C) -> vmstate::Result<()> {
        w.put_be64(self.0);
        Ok(())
    }

    fn load_elem(&mut self, r: &mut Reader<'_>) -> vmstate::Result<()> {
        self.0 = r.get_be64()?;
        Ok(())
    }
}
