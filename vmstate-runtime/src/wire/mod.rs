//! The wire codec: big-endian readers and writers, like QEMU's `QEMUFile`.
//!
//! Everything in a QEMU migration stream is big-endian. The [`Writer`] appends to a
//! buffer and cannot fail per call; the [`Reader`] works over a slice or any
//! `std::io::Read`, knows its absolute position for error messages, can peek ahead
//! (subsections are detected by peeking) and refuses stream-driven allocations above
//! its [`Limits`].

mod reader;
mod writer;

pub use reader::{Limits, MAX_PEEK, Reader};
pub use writer::{FLUSH_THRESHOLD, Writer};
