//! Multifd: RAM pages on extra channels beside the main stream, in QEMU 10's format.
//!
//! This is the first step of multifd support: the channels' wire format
//! ([`packet`]), checked against a real QEMU 10 migration captured channel by channel
//! (`compat-tests/fixtures/qemu-10.0.2-multifd`). The sender and receiver threads, the
//! driver's `channels` parameter, compression and the QEMU interoperability tests
//! come next (issue 16).

pub mod packet;
