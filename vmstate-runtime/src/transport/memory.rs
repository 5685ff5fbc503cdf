//! An in-memory pipe between two threads, bounded so a fast writer waits for a slow
//! reader (like a socket's buffer).

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Chunks in flight before the writer blocks.
const CHUNKS_IN_FLIGHT: usize = 16;

/// The writing end of a [`pipe`]. Dropping it ends the stream for the reader.
pub struct PipeWriter {
    tx: SyncSender<Vec<u8>>,
}

/// The reading end of a [`pipe`].
pub struct PipeReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

/// A bounded in-memory byte pipe.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut w, mut r) = vmstate::transport::pipe();
/// std::thread::spawn(move || w.write_all(b"hello").unwrap());
/// let mut s = String::new();
/// r.read_to_string(&mut s).unwrap();
/// assert_eq!(s, "hello");
/// ```
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
    (
        PipeWriter { tx },
        PipeReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        },
    )
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.tx
            .send(buf.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "pipe reader is gone"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
