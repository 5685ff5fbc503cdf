//! Multifd: RAM pages on extra channels beside the main stream, in QEMU 10's format.
//!
//! What is here: the channels' wire format ([`packet`]), checked against a real
//! QEMU 10 migration captured channel by channel
//! (`compat-tests/fixtures/qemu-10.0.2-multifd`); the destination's side without
//! compression ([`recv`]): a QEMU 10 source with `multifd` migrates into this
//! project's RAM blocks; and the source's side without compression ([`send`], used by
//! [`RamHandler::with_multifd_channels`](crate::ram::RamHandler::with_multifd_channels)):
//! a QEMU 10 destination with `multifd` loads from it. Not yet: the driver's `channels`
//! parameter (opening the connections for `migrate_over`), zstd/zlib, channels over
//! TLS, and the measurements (issue 16).

pub mod packet;
pub mod recv;
pub mod send;
