//! Where streams go: files (snapshots written atomically), sockets and memory.
//!
//! The stream engine reads any `std::io::Read` and writes any `std::io::Write`, with
//! its own buffering, so TCP (`std::net::TcpStream`) and Unix sockets
//! (`std::os::unix::net::UnixStream`) are used as they are. This module adds what std
//! lacks: [`AtomicFile`] for snapshots that are never torn, and an in-memory [`pipe`]
//! between threads.

mod file;
mod memory;

pub use file::{AtomicFile, open_snapshot};
pub use memory::{PipeReader, PipeWriter, pipe};
