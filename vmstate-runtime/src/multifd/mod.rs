//! Multifd: RAM pages on extra channels beside the main stream, in QEMU 10's format.
//!
//! What is here: the channels' wire format ([`packet`]), checked against a real
//! QEMU 10 migration captured channel by channel
//! (`compat-tests/fixtures/qemu-10.0.2-multifd`); zlib and zstd as QEMU uses them on
//! channels ([`compress`]); the destination's side ([`recv`]): a QEMU 10 source with
//! `multifd` (and compression, and TLS) migrates into this project's RAM blocks; and
//! the source's side ([`send`], used by
//! [`RamHandler::with_multifd`](crate::ram::RamHandler::with_multifd)): a QEMU 10
//! destination with `multifd` loads from it. `docs/migration.md` ("Multifd") tells
//! the whole story. Not yet: device state on channels.

pub mod compress;
pub mod packet;
pub mod recv;
pub mod send;
