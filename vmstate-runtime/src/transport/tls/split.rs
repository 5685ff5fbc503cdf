//! One TLS session read by one thread and written by another.
//!
//! The rustls connection is shared behind a mutex (the *state* lock) and held only for
//! bookkeeping, never across a blocking socket call:
//!
//! - The reader reads raw bytes from the socket without any lock (`&TcpStream` reads and
//!   writes from two threads at once), then
//!   takes the state lock to hand them to rustls and take plaintext out. Bytes that
//!   rustls has not taken yet stay in the reader's buffer; a partial record stays in
//!   rustls. A timeout therefore loses nothing.
//! - The writer encrypts under the state lock and moves the records into a buffer of
//!   the *out* lock, then writes that buffer to the socket holding only the out lock, so
//!   the reader keeps draining the socket while the writer blocks (two sides that both
//!   send a lot do not deadlock).
//! - Records must reach the socket in the order rustls made them (their sequence
//!   numbers are in the encryption), so whoever moves records takes the out lock before
//!   it lets go of the state lock. The reader, which only has small control messages to
//!   send (alerts, key updates), never waits for the out lock: when a writer holds it,
//!   the writer picks the records up, as it looks at the state once more after each
//!   socket write.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use super::explain::{Peer, explain, session_error};

/// How much the reader reads from the socket at a time (four full TLS records).
const RAW_BUFFER: usize = 64 * 1024;

/// The longest [`TlsReader::probe_after_write_error`] waits for more bytes.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest a dropped writer waits to send close_notify when the socket has no write
/// timeout of its own.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The session shared by the two halves.
pub(super) struct Shared {
    sock: TcpStream,
    state: Mutex<State>,
    out: Mutex<Outgoing>,
    pub(super) peer: Peer,
}

/// The rustls connection and what this module remembers about it.
pub(super) struct State {
    pub(super) conn: rustls::Connection,
    /// The first TLS error of the session (kind, words); later reads and writes repeat it.
    failed: Option<(io::ErrorKind, String)>,
    /// close_notify was sent: nothing more may be written.
    closed: bool,
    /// Plaintext has come from the peer.
    received_data: bool,
}

impl State {
    /// A guess at why the peer ended the connection, when it never sent anything.
    fn refusal_hint(&self) -> &'static str {
        if self.received_data {
            ""
        } else {
            "; it had sent nothing: if this was right after the handshake, it may have \
             refused our certificate (QEMU checks certificates after the handshake and \
             closes without a TLS alert; its log says why)"
        }
    }
}

/// Records taken from rustls that are not on the socket yet: `buf[sent..]`.
struct Outgoing {
    buf: Vec<u8>,
    sent: usize,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.sent == self.buf.len()
    }

    /// Writes out the whole buffer. On an error (a timeout, say) the unwritten rest stays
    /// and goes first next time.
    fn write_pending(&mut self, mut sock: &TcpStream) -> io::Result<()> {
        while self.sent < self.buf.len() {
            match sock.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while locked leaves rustls as consistent as any rustls error would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new(conn: rustls::Connection, sock: TcpStream, peer: Peer) -> Self {
        Shared {
            sock,
            state: Mutex::new(State {
                conn,
                failed: None,
                closed: false,
                received_data: false,
            }),
            out: Mutex::new(Outgoing {
                buf: Vec::new(),
                sent: 0,
            }),
            peer,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Writes everything rustls has queued and anything an earlier failed write left,
    /// waiting for another thread that is writing. Returns the state, locked, with nothing
    /// left to send.
    pub(super) fn send<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> io::Result<MutexGuard<'a, State>> {
        loop {
            let mut out = lock(&self.out);
            take_records(&mut st, &mut out);
            if out.is_empty() {
                // Let go of `out` first: whoever takes the state next finds it free.
                drop(out);
                return Ok(st);
            }
            drop(st);
            out.write_pending(&self.sock)?;
            drop(out);
            st = self.lock();
        }
    }

    /// Like [`send`](Self::send) but for the reader, which must not wait for the writer:
    /// if another thread is writing, it sends the queued records after its own.
    fn send_if_idle(&self, mut st: MutexGuard<'_, State>) -> io::Result<()> {
        let mut out = match self.out.try_lock() {
            Ok(out) => out,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        take_records(&mut st, &mut out);
        drop(st);
        out.write_pending(&self.sock)
    }

    /// Shuts down the sending direction of the socket (best effort).
    pub(super) fn shutdown_write(&self) {
        let _ = self.sock.shutdown(Shutdown::Write);
    }

    /// Shuts down both directions of the socket (best effort).
    fn shutdown_both(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// `e`, a write error, with what is known about why the connection ended.
    fn write_error(&self, e: io::Error) -> io::Error {
        if !connection_ended(&e) {
            return e;
        }
        let st = self.lock();
        failure(&st).unwrap_or_else(|| {
            session_error(
                e.kind(),
                format!(
                    "session with {}: the {} ended the connection ({e}){}",
                    self.peer,
                    self.peer.role.name(),
                    st.refusal_hint()
                ),
            )
        })
    }

    /// The error of a failed session, or of a closed writer.
    fn check(&self, st: &State) -> io::Result<()> {
        if let Some(e) = failure(st) {
            return Err(e);
        }
        if st.closed {
            return Err(session_error(
                io::ErrorKind::BrokenPipe,
                format!("the session with {} was closed by this side", self.peer),
            ));
        }
        Ok(())
    }
}

/// How much a closing connection reads and throws away at most (see `Drop for Shared`).
const DRAIN_LIMIT: usize = 1 << 20;

impl Drop for Shared {
    /// Closing a socket that has unread data makes the kernel reset the connection, and a
    /// reset throws away whatever the peer has received but not read yet: the end of the
    /// stream this side sent. So the data that has arrived (often only the peer's
    /// close_notify) is read and dropped first, without waiting for more.
    fn drop(&mut self) {
        if self.sock.set_nonblocking(true).is_err() {
            return;
        }
        let (mut buf, mut drained) = ([0; 16 * 1024], 0);
        while drained < DRAIN_LIMIT {
            match (&self.sock).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

/// Moves every record rustls has queued into `out`.
fn take_records(st: &mut State, out: &mut Outgoing) {
    while st.conn.wants_write() {
        // Writing into a Vec cannot fail.
        let _ = st.conn.write_tls(&mut out.buf);
    }
}

/// What stopped a read or a handshake: a TLS error, or the socket's.
pub(super) enum Fault {
    Tls(rustls::Error),
    Io(io::Error),
}

/// The reading half of a [`TlsStream`](super::TlsStream).
///
/// Reads plaintext; returns `Ok(0)` once the peer closed the session with close_notify,
/// and an [`io::ErrorKind::UnexpectedEof`] error if the connection ended without one (the
/// stream may have been cut short). A timeout set with
/// [`Connection::set_io_timeout`](crate::transport::Connection::set_io_timeout) fails a
/// read with [`WouldBlock`](io::ErrorKind::WouldBlock) or
/// [`TimedOut`](io::ErrorKind::TimedOut) and loses nothing: the next read goes on.
pub struct TlsReader {
    shared: Arc<Shared>,
    raw: Box<[u8]>,
    /// `raw[start..end]` was read from the socket and not yet given to rustls.
    start: usize,
    end: usize,
    /// The first bytes the peer sent, to tell a peer that does not speak TLS.
    first: [u8; 8],
    first_len: usize,
}

enum Step {
    Done(io::Result<usize>),
    NeedBytes,
}

impl TlsReader {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        TlsReader {
            shared,
            raw: vec![0; RAW_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            first: [0; 8],
            first_len: 0,
        }
    }

    /// The peer's address, if the socket knew it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.peer.addr
    }

    pub(super) fn socket(&self) -> &TcpStream {
        &self.shared.sock
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The first bytes received from the peer.
    pub(super) fn first_bytes(&self) -> &[u8] {
        &self.first[..self.first_len]
    }

    pub(super) fn has_input(&self) -> bool {
        self.start < self.end
    }

    /// Reads from the socket (blocking, no lock held) into the empty raw buffer; `Ok(0)` at
    /// the end of the connection.
    pub(super) fn fill(&mut self) -> io::Result<usize> {
        debug_assert!(!self.has_input());
        let n = loop {
            match (&self.shared.sock).read(&mut self.raw) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        (self.start, self.end) = (0, n);
        let keep = n.min(self.first.len() - self.first_len);
        self.first[self.first_len..self.first_len + keep].copy_from_slice(&self.raw[..keep]);
        self.first_len += keep;
        Ok(n)
    }

    /// Hands rustls the next buffered bytes (at most about one record) and processes them.
    pub(super) fn feed(&mut self, st: &mut State) -> Result<(), Fault> {
        let mut input = &self.raw[self.start..self.end];
        let taken = match st.conn.read_tls(&mut input) {
            // After close_notify rustls takes nothing more: drop the rest.
            Ok(0) => self.end - self.start,
            Ok(n) => n,
            Err(e) => return Err(self.fail(st, Fault::Io(e))),
        };
        self.start += taken;
        match st.conn.process_new_packets() {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(st, Fault::Tls(e))),
        }
    }

    /// Remembers a session's fatal error for later reads and writes.
    fn fail(&self, st: &mut State, fault: Fault) -> Fault {
        if st.failed.is_none() {
            let role = self.shared.peer.role;
            let (kind, why) = match &fault {
                Fault::Tls(e @ rustls::Error::AlertReceived(_)) => {
                    (io::ErrorKind::ConnectionAborted, explain(e, role))
                }
                Fault::Tls(e) => (io::ErrorKind::InvalidData, explain(e, role)),
                Fault::Io(e) => (e.kind(), e.to_string()),
            };
            st.failed = Some((kind, format!("session with {}: {why}", self.shared.peer)));
        }
        fault
    }

    /// The error for a connection that ended without close_notify.
    fn ended_without_close_notify(&self, st: &State) -> io::Error {
        let what = if st.received_data {
            " (the data may have been cut short)"
        } else {
            ""
        };
        session_error(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the {} closed the connection without a TLS close_notify{what}{}",
                self.shared.peer,
                st.refusal_hint()
            ),
        )
    }

    /// Tells rustls the connection ended.
    fn end_of_connection(&self) {
        let _ = self.shared.lock().conn.read_tls(&mut io::empty());
    }

    /// After a write found the connection ended, reads what the peer sent last, without
    /// taking any plaintext and without waiting long, to find out why: the alert of a
    /// peer that refused our certificate (with TLS 1.3 the server decides after the
    /// client's handshake is over) explains more than "broken pipe". Only for a reader
    /// that no other thread uses.
    pub(super) fn probe_after_write_error(&mut self) -> Option<io::Error> {
        let saved = self.socket().read_timeout().ok()?;
        self.socket().set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        let mut reads = 0;
        let shared = Arc::clone(&self.shared);
        let found = loop {
            let mut st = shared.lock();
            if let Some(e) = failure(&st) {
                break Some(e);
            }
            // Plaintext waiting: the peer sent data, and rustls takes no more bytes.
            if let Ok(io) = st.conn.process_new_packets()
                && io.plaintext_bytes_to_read() > 0
            {
                break None;
            }
            if self.has_input() {
                let _ = self.feed(&mut st);
                continue;
            }
            drop(st);
            reads += 1;
            match self.fill() {
                Ok(0) => {
                    self.end_of_connection();
                    break Some(self.ended_without_close_notify(&shared.lock()));
                }
                Ok(_) if reads < 4 => {}
                _ => break None,
            }
        };
        let _ = self.socket().set_read_timeout(saved);
        found
    }

    /// Copies plaintext into `buf`, feeding rustls buffered bytes as needed.
    fn take_plaintext(&mut self, st: &mut State, buf: &mut [u8]) -> Step {
        let mut filled = 0;
        loop {
            match st.conn.reader().read(&mut buf[filled..]) {
                // The peer sent close_notify.
                Ok(0) => return Step::Done(Ok(filled)),
                Ok(n) => {
                    filled += n;
                    st.received_data = true;
                    if filled == buf.len() {
                        return Step::Done(Ok(filled));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) if filled > 0 => return Step::Done(Ok(filled)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Step::Done(Err(self.ended_without_close_notify(st)));
                }
                Err(e) => return Step::Done(Err(e)),
            }
            if filled > 0 {
                return Step::Done(Ok(filled));
            }
            if let Some(e) = failure(st) {
                return Step::Done(Err(e));
            }
            if !self.has_input() {
                return Step::NeedBytes;
            }
            if let Err(fault) = self.feed(st) {
                return Step::Done(Err(match fault {
                    Fault::Io(e) => e,
                    Fault::Tls(_) => failure(st).expect("feed records the failure"),
                }));
            }
        }
    }
}

/// Whether a write error says that the peer ended the connection.
pub(super) fn connection_ended(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// The error of a failed session.
fn failure(st: &State) -> Option<io::Error> {
    st.failed
        .as_ref()
        .map(|(kind, detail)| session_error(*kind, detail.clone()))
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let shared = Arc::clone(&self.shared);
            let mut st = shared.lock();
            let step = self.take_plaintext(&mut st, buf);
            // Processing may have queued an alert or a key update to send.
            if st.conn.wants_write() {
                // If this fails, the writer meets the same error.
                let _ = shared.send_if_idle(st);
            } else {
                drop(st);
            }
            match step {
                Step::Done(result) => return result,
                Step::NeedBytes => {
                    if self.fill()? == 0 {
                        self.end_of_connection();
                    }
                }
            }
        }
    }
}

impl fmt::Debug for TlsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReader")
            .field("peer", &self.shared.peer.addr)
            .field("buffered", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

/// The writing half of a [`TlsStream`](super::TlsStream).
///
/// [`write`](Write::write) encrypts and sends up to 64 KiB at a time; when sending fails
/// after rustls took the data, the write still counts it and the next write or
/// [`flush`](Write::flush) sends it first and reports the error. [`close`](Self::close),
/// or dropping the writer, sends close_notify and shuts down the sending direction of
/// the socket.
pub struct TlsWriter {
    shared: Arc<Shared>,
    closed: bool,
}

impl TlsWriter {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        TlsWriter {
            shared,
            closed: false,
        }
    }

    /// The peer's address, if the socket knew it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.peer.addr
    }

    /// Ends the session: sends close_notify after everything written so far, then shuts
    /// down the sending direction of the socket. The peer reads to the end and then gets
    /// `Ok(0)`. Reading (with the [`TlsReader`]) goes on.
    pub fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let mut st = self.shared.lock();
        if st.closed {
            return Ok(());
        }
        st.closed = true;
        st.conn.send_close_notify();
        drop(self.shared.send(st)?);
        self.shared.shutdown_write();
        Ok(())
    }
}

impl Write for TlsWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // First what an earlier write could not send.
        let mut st =
            (self.shared.send(self.shared.lock())).map_err(|e| self.shared.write_error(e))?;
        self.shared.check(&st)?;
        let n = st.conn.writer().write(data)?;
        match self.shared.send(st) {
            Ok(_) => Ok(n),
            // rustls has the data: count it, and let the next call report the error.
            Err(_) if n > 0 => Ok(n),
            Err(e) => Err(self.shared.write_error(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let st = self
            .shared
            .send(self.shared.lock())
            .map_err(|e| self.shared.write_error(e))?;
        failure(&st).map_or(Ok(()), Err)
    }
}

impl Drop for TlsWriter {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        {
            let st = self.shared.lock();
            if st.failed.is_some() || st.closed {
                return;
            }
        }
        // Best effort, and bounded: the peer may have stopped reading.
        if let Ok(None) = self.shared.sock.write_timeout() {
            let _ = self.shared.sock.set_write_timeout(Some(CLOSE_TIMEOUT));
        }
        let _ = self.close();
    }
}

impl fmt::Debug for TlsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWriter")
            .field("peer", &self.shared.peer.addr)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl crate::transport::WriteHalf for TlsWriter {
    /// Sends close_notify and ends this direction of the TCP connection.
    fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        TlsWriter::close(self)
    }
    /// Ends the TCP connection without close_notify.
    fn abort(&mut self) {
        let _ = self.flush();
        self.closed = true;
        self.shared.shutdown_both();
    }
}
