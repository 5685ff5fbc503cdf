//! The port 0x92 A20 gate: QEMU's `vmstate_port92_isa` ("port92") in
//! `hw/i386/port92.c`.
//!
//! An ISA device: idstr `port92`, instance 0.

use vmstate::VmState;

/// QEMU's `vmstate_port92_isa` ("port92"), version 1, minimum version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "port92", version = 1, min_version = 1)]
pub struct Port92 {
    /// `outport`: bit 1 is the A20 gate.
    pub outport: u8,
}
