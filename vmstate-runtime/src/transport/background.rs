//! File I/O in a second thread, so that the stream engine's own work (copying pages,
//! checksums, parsing) overlaps the system calls instead of waiting for them.
//!
//! A snapshot written through [`BackgroundWriter`] costs about as much as the `write`
//! calls alone, and one read through [`ReadAhead`] (what
//! [`load_file`](crate::stream::load_file) uses) about as much as the `read` calls and
//! the page stores, whichever is longer. Both keep at most a few MiB in flight and
//! reuse their buffers.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// The size of the chunks handed between the threads.
const CHUNK: usize = 1 << 20;
/// Chunks in flight at once (besides the one being filled).
const IN_FLIGHT: usize = 2;

/// What the writing thread is asked to do.
enum Job {
    Write(Vec<u8>),
    Flush(SyncSender<()>),
}

/// A writer that hands its bytes, 1 MiB at a time, to a thread that writes them to
/// `W`: the caller goes on producing the next chunk while the previous one is written.
///
/// An error of the writing thread comes back from the next [`write`](Write::write),
/// [`flush`](Write::flush) or [`into_inner`](Self::into_inner). Dropping the writer
/// without `flush` or `into_inner` writes what was buffered but loses any error, as with
/// `BufWriter`.
///
/// ```
/// use std::io::Write;
/// use vmstate::transport::BackgroundWriter;
/// let mut w = BackgroundWriter::new(Vec::new());
/// w.write_all(b"QEVM").unwrap();
/// assert_eq!(w.into_inner().unwrap(), b"QEVM");
/// ```
pub struct BackgroundWriter<W: Write + Send + 'static> {
    chunk: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    /// Chunks the thread has written, back for reuse.
    spare: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> BackgroundWriter<W> {
    /// Starts the writing thread.
    pub fn new(mut inner: W) -> Self {
        let (jobs, todo) = sync_channel::<Job>(IN_FLIGHT);
        let (give_back, spare) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
        let thread = std::thread::Builder::new()
            .name("vmstate-writer".into())
            .spawn(move || {
                for job in todo {
                    match job {
                        Job::Write(mut chunk) => {
                            inner.write_all(&chunk)?;
                            chunk.clear();
                            let _ = give_back.try_send(chunk);
                        }
                        Job::Flush(done) => {
                            inner.flush()?;
                            let _ = done.send(());
                        }
                    }
                }
                Ok(inner)
            })
            .expect("spawning the writer thread");
        BackgroundWriter {
            chunk: Vec::with_capacity(CHUNK),
            jobs: Some(jobs),
            spare,
            thread: Some(thread),
        }
    }

    /// Writes what is buffered, waits for the thread and returns the inner writer
    /// (flushed), or the first error the thread met.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.send_chunk()?;
        let inner = self.stop()?;
        let mut inner = inner.expect("the thread is stopped once");
        inner.flush()?;
        Ok(inner)
    }

    /// Hands the current chunk to the thread.
    fn send_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        self.send(Job::Write(full))
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job).is_ok());
        match sent {
            Some(true) => Ok(()),
            // The thread stopped: it met an error.
            _ => Err(self
                .stop()
                .err()
                .unwrap_or_else(|| io::Error::other("the background writer has already stopped"))),
        }
    }

    /// Ends the thread and returns what it ended with (`None` if it was already
    /// stopped).
    fn stop(&mut self) -> io::Result<Option<W>> {
        self.jobs = None;
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r.map(Some),
                Err(panic) => std::panic::resume_unwind(panic),
            },
            None => Ok(None),
        }
    }
}

impl<W: Write + Send + 'static> Write for BackgroundWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.chunk.len();
        let n = room.min(buf.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        let (done, wait) = sync_channel(1);
        self.send(Job::Flush(done))?;
        match wait.recv() {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stop().err().unwrap_or_else(|| {
                io::Error::other("the background writer stopped during a flush")
            })),
        }
    }
}

impl<W: Write + Send + 'static> Drop for BackgroundWriter<W> {
    fn drop(&mut self) {
        let _ = self.send_chunk();
        let _ = self.stop();
    }
}

/// A reader that reads `R` ahead in a thread, 1 MiB at a time, so that the next chunk
/// is on its way while the caller works on the current one.
///
/// A read error reaches the caller where it happened in the byte sequence: every byte
/// before it is delivered first.
///
/// ```
/// use std::io::Read;
/// use vmstate::transport::ReadAhead;
/// let mut r = ReadAhead::new(std::io::Cursor::new(vec![7u8; 3 << 20]));
/// let mut all = Vec::new();
/// r.read_to_end(&mut all).unwrap();
/// assert_eq!(all.len(), 3 << 20);
/// ```
pub struct ReadAhead {
    chunk: Vec<u8>,
    /// Bytes of `chunk` already handed out.
    at: usize,
    chunks: Receiver<io::Result<Vec<u8>>>,
    /// Chunks handed out, back to the thread for reuse.
    give_back: SyncSender<Vec<u8>>,
    /// The end of the input was reached (or an error returned).
    done: bool,
}

impl ReadAhead {
    /// Starts the reading thread. It stops at the end of `inner`, at its first error,
    /// or when the `ReadAhead` is dropped (after the read it is in finishes).
    pub fn new<R: Read + Send + 'static>(mut inner: R) -> ReadAhead {
        let (send, chunks) = sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
        let (give_back, spare) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        std::thread::Builder::new()
            .name("vmstate-reader".into())
            .spawn(move || {
                loop {
                    let mut chunk = spare.try_recv().unwrap_or_default();
                    chunk.resize(CHUNK, 0);
                    let mut filled = 0;
                    let result = loop {
                        match inner.read(&mut chunk[filled..]) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                filled += n;
                                if filled == CHUNK {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    chunk.truncate(filled);
                    let end = filled < CHUNK;
                    if filled > 0 && send.send(Ok(chunk)).is_err() {
                        return;
                    }
                    if let Err(e) = result {
                        let _ = send.send(Err(e));
                        return;
                    }
                    if end {
                        return; // the channel closing is the end of the input
                    }
                }
            })
            .expect("spawning the reader thread");
        ReadAhead {
            chunk: Vec::new(),
            at: 0,
            chunks,
            give_back,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(next)) => {
                    let used = std::mem::replace(&mut self.chunk, next);
                    let _ = self.give_back.try_send(used);
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails after `ok` bytes.
    struct FailsAfter {
        ok: usize,
        got: Vec<u8>,
    }

    impl Write for FailsAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.got.len() + buf.len() > self.ok {
                return Err(io::Error::other("disk full"));
            }
            self.got.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_background_writer_writes_everything_in_order() {
        let data: Vec<u8> = (0..(5 * CHUNK + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = BackgroundWriter::new(Vec::new());
        for piece in data.chunks(300_001) {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        assert!(w.into_inner().unwrap() == data);
    }

    #[test]
    fn a_write_error_comes_back_to_the_caller() {
        let mut w = BackgroundWriter::new(FailsAfter {
            ok: CHUNK + 10,
            got: Vec::new(),
        });
        let mut result = Ok(());
        for _ in 0..8 {
            result = w.write_all(&vec![1u8; CHUNK]);
            if result.is_err() {
                break;
            }
        }
        let err = result.and_then(|_| w.flush()).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }

    /// A reader that fails after `ok` bytes.
    struct ReadFails {
        ok: usize,
        at: usize,
    }

    impl Read for ReadFails {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.ok {
                return Err(io::Error::other("bad sector"));
            }
            let n = buf.len().min(self.ok - self.at).min(4000);
            buf[..n].fill(9);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn read_ahead_delivers_everything_then_the_end() {
        let data: Vec<u8> = (0..(3 * CHUNK + 5)).map(|i| (i % 253) as u8).collect();
        let mut r = ReadAhead::new(io::Cursor::new(data.clone()));
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(got == data);
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn a_read_error_comes_after_every_byte_before_it() {
        let ok = 2 * CHUNK + 77;
        let mut r = ReadAhead::new(ReadFails { ok, at: 0 });
        let mut got = Vec::new();
        let err = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.to_string(), "bad sector");
        assert_eq!(got.len(), ok);
    }
}
