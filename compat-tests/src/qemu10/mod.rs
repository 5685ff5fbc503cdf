//! QEMU 10.0.2 device state, modelled with `#[derive(VmState)]`.
//!
//! Each submodule models one QEMU `VMStateDescription` (named in its docs) with the exact
//! QEMU names, versions, minimum versions and subsections, so that saving produces the
//! same bytes and the same vmdesc JSON as QEMU 10.0.2. QEMU names that are not Rust
//! identifiers are kept with `rename`. Runtime-only state and qdev properties that decide
//! whether a subsection is sent are `skip` fields.

pub mod fw_cfg;
pub mod globalstate;
pub mod hpet;
pub mod i8254;
pub mod i8259;
pub mod ioapic;
pub mod mc146818rtc;
pub mod port92;
pub mod timer;
pub mod uefi_vars;
pub mod virtio_mem;

pub use fw_cfg::{FwCfg, FwCfgAcpiMr, FwCfgDma};
pub use globalstate::GlobalState;
pub use hpet::{Hpet, HpetOffset, HpetRtcIrqLevel, HpetTimer};
pub use i8254::{I8254, PitChannel};
pub use i8259::{I8259, I8259Ltim};
pub use ioapic::IoApic;
pub use mc146818rtc::{Mc146818Rtc, RtcIrqReinjectOnAckCount};
pub use port92::Port92;
pub use timer::{
    CpuTimers, TimersIcount, TimersIcountShift, TimersIcountTimers, TimersIcountWarpTimer,
};
pub use uefi_vars::{UefiTime, UefiVarPolicy, UefiVariable, UefiVars, UefiVarsSysbus};
pub use virtio_mem::{VirtioMemBitmap, VirtioMemEarly, VirtioMemSanityChecks};
