//! The destination of a live migration over a two-way connection: load the stream,
//! answer QEMU's return path, and start the guest only when it is safe.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::DEFAULT_IO_TIMEOUT;
use super::return_path::{Message, write_message};
use crate::error::{Error, ErrorKind, Result};
use crate::ram::postcopy::PostcopyIncoming;
use crate::registry::Registry;
use crate::stream::load::{ReturnPath, load_answering};
use crate::stream::{LoadOptions, LoadReport};
use crate::transport::{Connection, is_timeout};
use crate::wire::Reader;

/// How the destination receives a migration.
#[derive(Debug, Clone)]
pub struct IncomingParams {
    /// How the stream is loaded (machine name, capabilities, limits, ...).
    pub load: LoadOptions,
    /// The longest a read from the source may block: a source that stops sending
    /// without closing fails the load after this long instead of hanging it.
    /// Default: [`DEFAULT_IO_TIMEOUT`] (30 s). `None` waits forever.
    pub io_timeout: Option<Duration>,
    /// QEMU's `switchover-ack` capability on this side: send `SWITCHOVER_ACK` once
    /// every iterative handler that needs it is ready (at once if none does).
    pub switchover_ack: bool,
    /// Over TLS, take a TCP close without TLS's `close_notify` after `SHUT(0)` as the
    /// source letting go. QEMU 10 as a TLS source ends its connection that way, so
    /// receiving from it needs this; but a TCP close is not authenticated, so someone
    /// on the path who can forge one could make this side start a guest the source
    /// took back. Default: off (a `migrate_over` source always sends `close_notify`).
    pub accept_close_without_notify: bool,
}

impl IncomingParams {
    /// Defaults for the local machine type `machine` (the stream's must be a prefix).
    pub fn new(machine: impl Into<String>) -> Self {
        IncomingParams {
            load: LoadOptions {
                machine: Some(machine.into()),
                ..Default::default()
            },
            io_timeout: Some(DEFAULT_IO_TIMEOUT),
            switchover_ack: false,
            accept_close_without_notify: false,
        }
    }
}

/// Receives a migration on `conn` into `registry` and calls `start_guest` when the
/// guest may run here. Returns what was loaded.
///
/// The guest is started only after all of these: the whole stream loaded (the EOF
/// record and trailer read, every check passed); when the source opened QEMU's return
/// path, `SHUT(0)` ("loaded, taking over") was sent to it, and the source then closed
/// its side of the connection, which a [`migrate_over`](super::migrate_over) source
/// does only after it received `SHUT(0)` and let its guest go. That last step closes
/// the window in which both sides would run the guest: if the link breaks after
/// `SHUT(0)` was written but before the source had it, the source resumes its guest and
/// this side does not start its own. A source that never opened a return path (a
/// plain [`migrate`](super::migrate) or QEMU without `return-path`) gets no messages;
/// the guest starts after the load.
///
/// On any failure the guest is not started, `SHUT(1)` is sent when the return path is
/// open, and the error says where the load stopped; the registry's state is then
/// partly loaded and must not run.
///
/// ```no_run
/// use std::net::TcpListener;
/// use vmstate::migrate::{receive, IncomingParams};
/// # fn registry() -> vmstate::Registry { vmstate::Registry::new() }
/// let (sock, _) = TcpListener::bind("0.0.0.0:4444").unwrap().accept().unwrap();
/// let mut reg = registry();
/// let report = receive(&mut reg, sock, &IncomingParams::new("my-vmm-1.0"),
///                      &mut || { /* start the vCPUs */ Ok(()) }).unwrap();
/// println!("{} sections loaded", report.sections.len());
/// ```
pub fn receive<C: Connection>(
    registry: &mut Registry,
    conn: C,
    params: &IncomingParams,
    start_guest: &mut dyn FnMut() -> Result<()>,
) -> Result<LoadReport> {
    receive_with(registry, conn, params, &mut StartOnly(start_guest))
}

/// The destination's control over its guest.
pub trait IncomingGuest {
    /// Starts the guest (its vCPUs).
    fn start(&mut self) -> Result<()>;
    /// Pauses a guest that was started before the stream ended (postcopy) when the
    /// link to the source fails: its missing pages will not come. vCPUs that touch a
    /// missing page wait for it forever in any case; this stops the others. Default:
    /// nothing (only the waiting vCPUs stop).
    fn pause(&mut self) {}
}

struct StartOnly<'a>(&'a mut dyn FnMut() -> Result<()>);

impl IncomingGuest for StartOnly<'_> {
    fn start(&mut self) -> Result<()> {
        (self.0)()
    }
}

/// A writer shared by the loader (PONG, SHUT) and postcopy's page requests; each call
/// takes the lock, so a message written with one `write_all` is never split.
struct SharedWriter<W>(Arc<Mutex<W>>);

impl<W: Write> Write for SharedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// [`receive`] with a guest that can also be paused: what a destination that accepts
/// postcopy needs. When the source switches to postcopy (`POSTCOPY_RUN`), the guest
/// starts before the stream ends, and every access to a page not here yet asks the
/// source for it and waits (RAM blocks must fetch on demand: [`RamBlock`]s do). If the
/// link then fails, [`IncomingGuest::pause`] is called and the error says how many
/// pages were still missing; the guest never runs with a page missing. At the end of
/// a postcopy stream `SHUT(0)` is sent and the source's close is not waited for: the
/// source gave the guest up at the switch.
///
/// [`RamBlock`]: crate::ram::RamBlock
pub fn receive_with<C: Connection>(
    registry: &mut Registry,
    conn: C,
    params: &IncomingParams,
    guest: &mut dyn IncomingGuest,
) -> Result<LoadReport> {
    conn.set_io_timeout(params.io_timeout)?;
    let (from_src, to_src) = conn.split()?;
    let to_src = Arc::new(Mutex::new(to_src));
    let mut r = Reader::from_io(from_src).with_limits(params.load.limits);
    let incoming = PostcopyIncoming::new(Box::new(SharedWriter(to_src.clone())));
    let mut out = SharedWriter(to_src.clone());
    let mut started = false;
    let mut start_now = || {
        started = true;
        guest.start()
    };
    let mut rp = ReturnPath {
        out: &mut out,
        switchover_ack: params.switchover_ack,
        open: false,
        ack_sent: false,
        postcopy: Some((incoming.clone(), &mut start_now)),
    };
    let loaded = load_answering(
        registry,
        &mut r,
        &params.load,
        &mut |_| Ok(()),
        Some(&mut rp),
    );
    let opened = rp.open;
    drop(rp);
    incoming.forget_listen_hook();
    let shut =
        |failed: bool| write_message(&mut SharedWriter(to_src.clone()), &Message::Shut { failed });
    let report = match loaded {
        Ok(report) => report,
        Err(e) if started => {
            // Postcopy: the guest runs here and the rest of its memory is lost.
            incoming.fail(e.to_string());
            guest.pause();
            if opened {
                let _ = shut(true);
            }
            let e = explain_lost_source(e, params.io_timeout);
            return Err(Error::new(ErrorKind::MigrationFailed {
                phase: "postcopy (the guest had started here; it is now paused)".into(),
                bytes: r.position(),
                cause: Box::new(Error::invalid(
                    "postcopy",
                    format!(
                        "{} pages were still missing when the stream failed: {e}",
                        incoming.missing_pages()
                    ),
                )),
            }));
        }
        Err(e) => {
            if opened {
                let _ = shut(true);
            }
            let e = explain_lost_source(e, params.io_timeout);
            return Err(not_started(e, r.position()));
        }
    };
    if started {
        // Postcopy: every page is here; the source gave the guest up at the switch.
        if opened {
            shut(false).map_err(|e| Error::from(e).in_record("return path (sending SHUT 0)"))?;
        }
        return Ok(report);
    }
    if opened {
        let at = r.position();
        shut(false).map_err(|e| {
            not_started(Error::from(e).in_record("return path (sending SHUT 0)"), at)
        })?;
        wait_for_close(&mut r, params).map_err(|e| not_started(e, at))?;
    }
    guest.start()?;
    Ok(report)
}

/// Says in words when a load failed because the source or the link went away.
fn explain_lost_source(e: Error, timeout: Option<Duration>) -> Error {
    let why = match e.kind() {
        ErrorKind::UnexpectedEof { .. } => "the source closed the connection mid-stream",
        // The record reader's "no EOF record" at a record boundary.
        ErrorKind::Malformed { .. } if e.record() == Some("EOF") => {
            "the source closed the connection between two records, before the EOF record"
        }
        ErrorKind::Io(io) if is_timeout(io) => {
            return Error::invalid(
                "stream",
                format!(
                    "the source sent nothing for the I/O timeout of {:?} ({e})",
                    timeout.unwrap_or_default()
                ),
            );
        }
        ErrorKind::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ) =>
        {
            "the connection was reset mid-stream (the source or the link died)"
        }
        _ => return e,
    };
    Error::invalid("stream", format!("truncated: {why} ({e})"))
}

/// Waits for the source to close its side after `SHUT(0)`: its sign that it let the
/// guest go. A reset, a timeout or more data means it may still run it.
fn wait_for_close(r: &mut Reader<'_>, params: &IncomingParams) -> Result<()> {
    let at = r.position();
    let unauthenticated_eof = |e: &Error| matches!(e.kind(), ErrorKind::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof);
    match r.at_end() {
        Ok(true) => Ok(()),
        // TLS: the TCP connection ended without close_notify.
        Err(e) if unauthenticated_eof(&e) && params.accept_close_without_notify => Ok(()),
        Err(e) if unauthenticated_eof(&e) => Err(Error::invalid(
            "confirmation",
            "the source ended the connection after SHUT(0) without TLS's close_notify, \
             which anyone on the path could forge (QEMU sources do this: set \
             IncomingParams::accept_close_without_notify to accept it)",
        )
        .at_offset(at)),
        Ok(false) => Err(Error::invalid(
            "confirmation",
            "the source sent bytes after the stream instead of closing: it took the guest \
             back (it gave up waiting for SHUT(0), or could not close cleanly)",
        )
        .at_offset(at)),
        Err(e) => {
            let timed_out = matches!(e.kind(), ErrorKind::Io(io) if is_timeout(io));
            let why = if timed_out {
                format!(
                    "the source did not close the connection within {:?} after SHUT(0)",
                    params.io_timeout.unwrap_or_default()
                )
            } else {
                format!("the connection failed after SHUT(0) before the source closed it: {e}")
            };
            Err(Error::invalid("confirmation", why).at_offset(at))
        }
    }
}

/// Marks an error as one after which the guest was not started.
fn not_started(e: Error, bytes: u64) -> Error {
    Error::new(ErrorKind::MigrationFailed {
        phase: "incoming migration (the guest was not started here)".into(),
        bytes,
        cause: Box::new(e),
    })
}
