//! Two-way connections: the migration stream one way, QEMU's return path the other.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connection that carries the migration stream from the source and the return path
/// back from the destination, and can be split so that one thread writes while another
/// reads (QEMU's source reads the return path in its own thread).
///
/// Implemented for [`TcpStream`], [`UnixStream`] and, with the `tls` feature, the TLS
/// stream of [`transport::tls`](crate::transport).
pub trait Connection: Send {
    /// The reading half.
    type Reader: Read + Send + 'static;
    /// The writing half.
    type Writer: WriteHalf;
    /// Bounds every blocking read and write (`None`: wait forever). A read or write that
    /// waits longer fails with [`io::ErrorKind::WouldBlock`] or
    /// [`io::ErrorKind::TimedOut`]. Applies to both halves after [`split`](Self::split).
    fn set_io_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Splits the connection into a reading and a writing half, usable from two threads
    /// at once.
    fn split(self) -> io::Result<(Self::Reader, Self::Writer)>;
}

impl Connection for TcpStream {
    type Reader = TcpStream;
    type Writer = TcpStream;
    fn set_io_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
    fn split(self) -> io::Result<(TcpStream, TcpStream)> {
        Ok((self.try_clone()?, self))
    }
}

impl Connection for UnixStream {
    type Reader = UnixStream;
    type Writer = UnixStream;
    fn set_io_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
    fn split(self) -> io::Result<(UnixStream, UnixStream)> {
        Ok((self.try_clone()?, self))
    }
}

/// The writing half of a [`Connection`], which can end its direction of the
/// connection while the other direction stays open.
pub trait WriteHalf: Write + Send + 'static {
    /// Flushes and closes this direction: the peer reads the end of the stream (TCP
    /// FIN; for TLS, `close_notify` first). Reading from the other half still works.
    fn close(&mut self) -> io::Result<()>;
    /// Ends both directions at once, without a clean close: the peer sees the stream
    /// end without `close_notify` (TLS), and a thread blocked reading the other half
    /// wakes up. Best effort.
    fn abort(&mut self);
    /// A second descriptor of this half's socket, when bytes written to it reach the
    /// peer just as bytes written through this half do (a plain socket; not TLS). The
    /// migration then writes the stream through it with vectored calls that send guest
    /// pages straight from guest memory. Default: `None`.
    fn try_clone_fd(&self) -> Option<OwnedFd> {
        None
    }
}

impl WriteHalf for TcpStream {
    fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        self.shutdown(std::net::Shutdown::Write)
    }
    fn abort(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn try_clone_fd(&self) -> Option<OwnedFd> {
        self.as_fd().try_clone_to_owned().ok()
    }
}

impl WriteHalf for UnixStream {
    fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        self.shutdown(std::net::Shutdown::Write)
    }
    fn abort(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn try_clone_fd(&self) -> Option<OwnedFd> {
        self.as_fd().try_clone_to_owned().ok()
    }
}

/// Whether an I/O error is a timeout set by [`Connection::set_io_timeout`].
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
