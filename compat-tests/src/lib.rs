//! Compatibility suites for `vmstate`.
//!
//! - [`qemu10`]: devices of QEMU 10.0.2 modelled with `#[derive(VmState)]` the way an
//!   emulator author would write them, tested byte for byte against real QEMU streams
//!   (`tests/qemu_devices.rs`).
//! - [`fixture`]: test support to find a section's payload and the vmdesc trailer in a
//!   stream, written independently of the runtime.

pub mod fixture;
pub mod qemu10;
