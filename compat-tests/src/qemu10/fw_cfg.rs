//! The firmware configuration device: QEMU's `vmstate_fw_cfg` ("fw_cfg") and its
//! subsections `fw_cfg/dma` and `fw_cfg/acpi_mr` in `hw/nvram/fw_cfg.c`.
//!
//! On pc machines it is `fw_cfg_io`, a sysbus device: idstr `fw_cfg`, instance 0.

use vmstate::VmState;

/// The host page size QEMU's `fw_cfg_acpi_mr_restore` aligns against
/// (`qemu_real_host_page_size()`, 4 KiB on the x86 hosts the streams come from).
pub const HOST_PAGE_SIZE: u64 = 4096;

/// QEMU's `vmstate_fw_cfg` ("fw_cfg"), version 2, minimum version 1.
///
/// ```c
/// VMSTATE_UINT16(cur_entry, FWCfgState),
/// VMSTATE_UINT16_HACK(cur_offset, FWCfgState, is_version_1),
/// VMSTATE_UINT32_V(cur_offset, FWCfgState, 2),
/// subsections: &vmstate_fw_cfg_dma, &vmstate_fw_cfg_acpi_mr
/// ```
///
/// `cur_offset` is in the list twice. Version 1 streams carry it as a be16 that QEMU's
/// `VMSTATE_UINT16_HACK` (info `int32_as_uint16`, field test `is_version_1`) reads into
/// the 32-bit member; version 2 streams carry a be32. Here the version 1 copy is its own
/// `u16` field, sent only when `is_version_1` says so, and `post_load` moves it into
/// `cur_offset` for version 1 streams. (Its description says `uint16`, 2 bytes, where
/// QEMU's says `int32_as_uint16` with size 4; the field never exists at version 2, so
/// neither bytes nor the vmdesc differ.)
///
/// `Default` is written by hand to match QEMU's property defaults: `dma_enabled=on` and
/// `acpi-mr-restore=on`.
#[derive(VmState, Debug, Clone, PartialEq)]
#[vmstate(
    name = "fw_cfg",
    version = 2,
    min_version = 1,
    post_load = Self::post_load
)]
pub struct FwCfg {
    /// `cur_entry`: the selected entry.
    pub cur_entry: u16,
    /// `cur_offset` as sent by version 1 streams (be16).
    #[vmstate(exists = Self::is_version_1, rename = "cur_offset")]
    pub cur_offset_v1: u16,
    /// `cur_offset` (since version 2): the read offset in the selected entry.
    #[vmstate(since = 2, rename = "cur_offset")]
    pub cur_offset: u32,
    /// Subsection `fw_cfg/dma`, sent when DMA is enabled.
    #[vmstate(subsection, needed = Self::fw_cfg_dma_enabled)]
    pub dma: FwCfgDma,
    /// Subsection `fw_cfg/acpi_mr`, sent when an ACPI blob size is not page aligned.
    #[vmstate(subsection, needed = Self::fw_cfg_acpi_mr_restore)]
    pub acpi_mr: FwCfgAcpiMr,
    /// Not migrated: the `dma_enabled` property (default on).
    #[vmstate(skip)]
    pub dma_enabled: bool,
    /// Not migrated: the `acpi-mr-restore` property (default on).
    #[vmstate(skip)]
    pub acpi_mr_restore: bool,
}

impl Default for FwCfg {
    fn default() -> Self {
        FwCfg {
            cur_entry: 0,
            cur_offset_v1: 0,
            cur_offset: 0,
            dma: FwCfgDma::default(),
            acpi_mr: FwCfgAcpiMr::default(),
            dma_enabled: true,
            acpi_mr_restore: true,
        }
    }
}

impl FwCfg {
    /// QEMU's `is_version_1`.
    fn is_version_1(&self, version: u32) -> bool {
        version == 1
    }

    /// Version 1 streams carry a 16-bit `cur_offset`.
    fn post_load(&mut self, version: u32) -> Result<(), std::convert::Infallible> {
        if version == 1 {
            self.cur_offset = u32::from(self.cur_offset_v1);
        }
        Ok(())
    }

    /// QEMU's `fw_cfg_dma_enabled`.
    fn fw_cfg_dma_enabled(&self) -> bool {
        self.dma_enabled
    }

    /// QEMU's `fw_cfg_acpi_mr_restore`: the property is on and one of the three sizes is
    /// not a multiple of the host page size.
    fn fw_cfg_acpi_mr_restore(&self) -> bool {
        let m = &self.acpi_mr;
        let aligned = [m.table_mr_size, m.linker_mr_size, m.rsdp_mr_size]
            .iter()
            .all(|s| s % HOST_PAGE_SIZE == 0);
        self.acpi_mr_restore && !aligned
    }
}

/// QEMU's `vmstate_fw_cfg_dma` ("fw_cfg/dma"): no version set, so version 0 and minimum
/// version 0.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "fw_cfg/dma", version = 0, min_version = 0)]
pub struct FwCfgDma {
    /// `dma_addr`: the DMA control structure address.
    pub dma_addr: u64,
}

/// QEMU's `vmstate_fw_cfg_acpi_mr` ("fw_cfg/acpi_mr"), version 1, minimum version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "fw_cfg/acpi_mr", version = 1, min_version = 1)]
pub struct FwCfgAcpiMr {
    /// `table_mr_size`: bytes of `etc/acpi/tables`.
    pub table_mr_size: u64,
    /// `linker_mr_size`: bytes of `etc/table-loader`.
    pub linker_mr_size: u64,
    /// `rsdp_mr_size`: bytes of `etc/acpi/rsdp`.
    pub rsdp_mr_size: u64,
}
