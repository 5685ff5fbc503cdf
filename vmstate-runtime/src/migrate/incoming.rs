//! The destination of a live migration over a two-way connection: load the stream,
//! answer QEMU's return path, and start the guest only when it is safe.

use std::io;
use std::time::Duration;

use super::DEFAULT_IO_TIMEOUT;
use super::return_path::{Message, write_message};
use crate::error::{Error, ErrorKind, Result};
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
    conn.set_io_timeout(params.io_timeout)?;
    let (from_src, mut to_src) = conn.split()?;
    let mut r = Reader::from_io(from_src).with_limits(params.load.limits);
    let mut rp = ReturnPath {
        out: &mut to_src,
        switchover_ack: params.switchover_ack,
        open: false,
        ack_sent: false,
    };
    let loaded = load_answering(
        registry,
        &mut r,
        &params.load,
        &mut |_| Ok(()),
        Some(&mut rp),
    );
    let opened = rp.open;
    let report = match loaded {
        Ok(report) => report,
        Err(e) => {
            if opened {
                let _ = write_message(&mut to_src, &Message::Shut { failed: true });
            }
            let e = explain_lost_source(e, params.io_timeout);
            return Err(not_started(e, r.position()));
        }
    };
    if opened {
        let at = r.position();
        write_message(&mut to_src, &Message::Shut { failed: false }).map_err(|e| {
            not_started(Error::from(e).in_record("return path (sending SHUT 0)"), at)
        })?;
        wait_for_close(&mut r, params).map_err(|e| not_started(e, at))?;
    }
    start_guest()?;
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
