//! Where streams go: files (snapshots written atomically), sockets and memory.
//!
//! The stream engine reads any `std::io::Read` and writes any `std::io::Write`, with
//! its own buffering, so TCP (`std::net::TcpStream`) and Unix sockets
//! (`std::os::unix::net::UnixStream`) are used as they are. This module adds what std
//! lacks: [`AtomicFile`] for snapshots that are never torn, file I/O in a second thread
//! ([`BackgroundWriter`], [`ReadAhead`]) so that the engine's work overlaps the system
//! calls, an in-memory [`pipe`] between threads, the [`Connection`] trait for two-way
//! links (the return path), and with the `tls` feature, mutual TLS.

mod background;
mod connection;
mod file;
mod memory;
#[cfg(feature = "tls")]
pub mod tls;

pub use background::{BackgroundWriter, ReadAhead};
pub use connection::{Connection, WriteHalf, is_timeout};
pub use file::{AtomicFile, open_snapshot};
pub use memory::{PipeReader, PipeWriter, pipe};
