//! Compatibility suites for `vmstate`.
//!
//! - [`qemu10`]: devices of QEMU 10.0.2 modelled with `#[derive(VmState)]` the way an
//!   emulator author would write them, tested byte for byte against real QEMU streams
//!   (`tests/qemu_devices.rs`).
//! - [`evolving`]: "demo", an emulator whose devices evolve over four releases (one
//!   module per release), with golden streams and schemas per release in
//!   `fixtures/evolving/`; `tests/release_matrix.rs` loads every golden stream into every
//!   release and saves for older releases.
//! - [`destination`]: registries that real QEMU streams load into.
//! - [`fixture`]: test support to find a section's payload and the vmdesc trailer in a
//!   stream, written independently of the runtime.
//! - [`qemu`]: a QEMU process driven over QMP, for the tests and benchmarks that need a
//!   real QEMU.

pub mod certs;
pub mod destination;
pub mod evolving;
pub mod fixture;
pub mod qemu;
pub mod qemu10;
