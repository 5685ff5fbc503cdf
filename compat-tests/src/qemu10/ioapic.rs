//! The I/O APIC: QEMU's `vmstate_ioapic_common` ("ioapic") in
//! `hw/intc/ioapic_common.c`.
//!
//! A sysbus device: idstr `ioapic`, instance 0.

use vmstate::VmState;

/// The number of redirection table entries (`IOAPIC_NUM_PINS`).
pub const IOAPIC_NUM_PINS: usize = 24;

/// QEMU's `vmstate_ioapic_common` ("ioapic"), version 3, minimum version 1.
///
/// ```c
/// VMSTATE_UINT8(id, IOAPICCommonState),
/// VMSTATE_UINT8(ioregsel, IOAPICCommonState),
/// VMSTATE_UNUSED_V(2, 8), /* to account for qemu-kvm's v2 format */
/// VMSTATE_UINT32_V(irr, IOAPICCommonState, 2),
/// VMSTATE_UINT64_ARRAY(ioredtbl, IOAPICCommonState, IOAPIC_NUM_PINS),
/// ```
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "ioapic", version = 3, min_version = 1)]
pub struct IoApic {
    /// `id`.
    pub id: u8,
    /// `ioregsel`: the selected register.
    pub ioregsel: u8,
    /// `VMSTATE_UNUSED_V(2, 8)`: qemu-kvm's version 2 format (since version 2).
    #[vmstate(unused = 8, since = 2)]
    pub _unused: (),
    /// `irr` (since version 2).
    #[vmstate(since = 2)]
    pub irr: u32,
    /// `ioredtbl`: the redirection table.
    pub ioredtbl: [u64; IOAPIC_NUM_PINS],
}
