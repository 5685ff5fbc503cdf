//! The VM-wide state of KVM's in-kernel devices, as one device section
//! (`kvm-chipset`): the two 8259 interrupt controllers, the IOAPIC and the KVM clock.
//!
//! KVM keeps these inside the kernel (`KVM_CREATE_IRQCHIP`); `KVM_GET_IRQCHIP` reads
//! each controller as a 512-byte structure (`kvm_pic_state`, `kvm_ioapic_state`), which
//! travels as it is, as QEMU's `kvm-i8259` and `kvm-ioapic` devices carry the same
//! fields.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
    kvm_irqchip__bindgen_ty_1,
};
use kvm_ioctls::VmFd;
use vmstate::VmState;
use zerocopy::{FromBytes, IntoBytes};

/// The in-kernel interrupt controllers and the clock of a stopped VM.
#[derive(VmState, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-chipset", version = 1)]
pub struct Chipset {
    /// The master 8259 (`kvm_pic_state`, padded to 512 bytes).
    #[vmstate(buffer)]
    pub pic_master: [u8; 512],
    /// The slave 8259.
    #[vmstate(buffer)]
    pub pic_slave: [u8; 512],
    /// The IOAPIC (`kvm_ioapic_state`).
    #[vmstate(buffer)]
    pub ioapic: [u8; 512],
    /// The KVM clock, in nanoseconds.
    pub clock: u64,
}

impl Default for Chipset {
    fn default() -> Self {
        Chipset {
            pic_master: [0; 512],
            pic_slave: [0; 512],
            ioapic: [0; 512],
            clock: 0,
        }
    }
}

impl Chipset {
    /// Reads the state of a VM whose vCPUs are stopped.
    pub fn capture(vm: &VmFd) -> Result<Chipset, kvm_ioctls::Error> {
        let read = |chip_id| {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            vm.get_irqchip(&mut chip)?;
            let mut out = [0u8; 512];
            out.copy_from_slice(chip.chip.as_bytes());
            Ok::<_, kvm_ioctls::Error>(out)
        };
        Ok(Chipset {
            pic_master: read(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: read(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: read(KVM_IRQCHIP_IOAPIC)?,
            clock: vm.get_clock()?.clock,
        })
    }

    /// Gives a VM (before its vCPUs run) this state.
    pub fn restore(&self, vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
        for (chip_id, bytes) in [
            (KVM_IRQCHIP_PIC_MASTER, &self.pic_master),
            (KVM_IRQCHIP_PIC_SLAVE, &self.pic_slave),
            (KVM_IRQCHIP_IOAPIC, &self.ioapic),
        ] {
            let chip = kvm_irqchip {
                chip_id,
                pad: 0,
                chip: kvm_irqchip__bindgen_ty_1::read_from_bytes(bytes)
                    .expect("a controller's state is 512 bytes"),
            };
            vm.set_irqchip(&chip)?;
        }
        vm.set_clock(&kvm_clock_data {
            clock: self.clock,
            ..Default::default()
        })
    }
}
