//! Multifd: RAM pages on extra channels beside the main stream, in QEMU 10's format.
//!
//! What is here: the channels' wire format ([`packet`]), checked against a real
//! QEMU 10 migration captured channel by channel
//! (`compat-tests/fixtures/qemu-10.0.2-multifd`), and the destination's side without
//! compression ([`recv`]): a QEMU 10 source with `multifd` migrates into this
//! project's RAM blocks. Not yet: the sending side and the driver's `channels`
//! parameter, zstd/zlib, and channels over TLS (issue 16).

pub mod packet;
pub mod recv;
