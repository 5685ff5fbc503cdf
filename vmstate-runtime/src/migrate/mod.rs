//! The precopy driver: live migration that converges under a downtime limit
//! (QEMU's `migration_thread` / `migration_iteration_run`, spec 4.2-4.3).
//!
//! It runs setup, then rounds while the guest keeps running. After each round it
//! measures the bandwidth achieved and compares what is still dirty, at what the last
//! round cost per page of data (below a page with XBZRLE), with what can be sent
//! within the downtime limit (`threshold = bandwidth × downtime_limit`). Once the
//! remaining state fits, it stops the guest through [`GuestControl::stop`], sends the
//! rest and every device, and waits for the destination
//! ([`GuestControl::wait_destination`]) to measure the real downtime. One exception:
//! while the last round found nothing newly dirtied (a paused or idle guest), the rest
//! is sent with the guest still running, as stopping early would only lengthen the
//! downtime.
//!
//! With `auto_converge`, a guest that dirties memory faster than the link drains it is
//! slowed down through [`GuestControl::throttle`], as QEMU's auto-converge does.
//!
//! Cancellation ([`CancelToken`]) and every failure before the switchover leave the guest
//! running on the source with its state intact (handlers are cleaned up, nothing on the
//! source is modified). A failure after the guest was stopped resumes it on the source.
//!
//! ```no_run
//! use std::net::TcpStream;
//! use vmstate::migrate::{migrate, CancelToken, GuestControl, MigrationParams};
//! # fn registry() -> vmstate::Registry { vmstate::Registry::new() }
//! struct Vcpus;
//! impl GuestControl for Vcpus {
//!     fn stop(&mut self) -> vmstate::Result<()> { /* pause vCPU threads */ Ok(()) }
//!     fn resume(&mut self) { /* restart them */ }
//! }
//! let mut reg = registry();
//! let sock = TcpStream::connect("127.0.0.1:4444").unwrap();
//! let stats = migrate(&mut reg, sock, &mut Vcpus, &MigrationParams::new("my-vmm-1.0"),
//!                     &CancelToken::new(), &mut |_| {}).unwrap();
//! println!("downtime {:?}", stats.downtime);
//! ```

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod auto_converge;
mod incoming;
mod listener;
mod rate_limit;
pub mod return_path;

use auto_converge::AutoConverge;
pub use incoming::{IncomingGuest, IncomingParams, receive, receive_with};
use listener::Listener;
use rate_limit::RateLimit;

use crate::error::{Error, ErrorKind, Result};
use crate::handler::IterationStatus;
use crate::ram::postcopy::PageRequests;
use crate::ram::{RamCounters, RamStats};
use crate::registry::Registry;
use crate::stream::{SaveSession, StreamConfig};
use crate::transport::{Connection, WriteHalf};
use crate::wire::Writer;

/// The default [`MigrationParams::io_timeout`] and [`IncomingParams::io_timeout`].
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What to do when `max_total_time` runs out before the migration converges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// Cancel: the guest keeps running on the source (the default).
    #[default]
    Cancel,
    /// Stop the guest and switch over anyway, accepting a longer downtime.
    ForceSwitchover,
}

/// Migration parameters, named after QEMU's (`downtime-limit`, `max-bandwidth`, ...).
#[derive(Debug, Clone)]
pub struct MigrationParams {
    /// The stream's configuration (machine name, optional commands).
    pub stream: StreamConfig,
    /// Longest acceptable downtime (QEMU's default: 300 ms).
    pub downtime_limit: Duration,
    /// Bandwidth cap in bytes per second (`None`: unlimited, the default here).
    pub max_bandwidth: Option<u64>,
    /// Give up (or force the switchover) after this long (`None`: no limit).
    pub max_total_time: Option<Duration>,
    /// What happens when `max_total_time` runs out.
    pub on_timeout: OnTimeout,
    /// RAM counters to report, if the registry has a RAM handler. They also tell the
    /// driver what a round consumed in pages (rather than stream bytes), which is how it
    /// knows that nothing was re-dirtied and sends the rest before stopping the guest.
    pub ram_stats: Option<Arc<RamStats>>,
    /// Slow the guest down when it dirties memory faster than the link drains it
    /// (QEMU's `auto-converge` capability; off by default, as in QEMU). Needs a
    /// [`GuestControl::throttle`] that does something.
    pub auto_converge: bool,
    /// How often auto-converge compares what the guest dirtied with what was sent
    /// (QEMU: at its dirty-bitmap syncs, at most once a second; default 1 s).
    pub auto_converge_period: Duration,
    /// With [`migrate_over`]: the longest a write to the destination may block, and the
    /// longest the source waits for the destination's report after the last byte.
    /// A peer that stops reading or answering fails the migration after this long
    /// instead of hanging it; the guest then runs on the source. Default: 30 s.
    /// `None` waits forever.
    pub io_timeout: Option<Duration>,
    /// Switch over only after the destination's `SWITCHOVER_ACK` (QEMU's
    /// `switchover-ack` capability; both sides must have it). Needs [`migrate_over`].
    /// Default: off.
    pub switchover_ack: bool,
    /// Switch to postcopy when this policy says so, unless precopy converges first
    /// (QEMU's `postcopy-ram` capability with `migrate-start-postcopy`). Needs
    /// [`migrate_over`] and a handler that can go on in postcopy (a
    /// [`RamHandler`](crate::ram::RamHandler) without multifd channels); the
    /// destination must be able to take pages on demand. Default: off.
    pub postcopy: Option<PostcopyPolicy>,
    /// Bandwidth cap in bytes per second for the pages sent in the background after
    /// the switch to postcopy (QEMU's `max-postcopy-bandwidth`); requested pages are
    /// always sent at once. Default: `None`, unlimited.
    pub max_postcopy_bandwidth: Option<u64>,
}

/// When a migration switches to postcopy: the guest then runs on the destination,
/// which asks for each page it misses while the rest follows in the background. The
/// switch happens at the first of these that applies.
#[derive(Debug, Clone, Default)]
pub struct PostcopyPolicy {
    /// Switch when this is triggered (QEMU's `migrate-start-postcopy`), from any thread.
    pub trigger: StartPostcopy,
    /// Switch once this many precopy rounds ran without converging.
    pub after_rounds: Option<u64>,
    /// Switch once precopy ran this long without converging.
    pub after: Option<Duration>,
}

impl PostcopyPolicy {
    /// Switch only when `trigger` is pulled.
    pub fn on_request(trigger: StartPostcopy) -> Self {
        PostcopyPolicy {
            trigger,
            ..Default::default()
        }
    }

    /// Switch after `rounds` precopy rounds.
    pub fn after_rounds(rounds: u64) -> Self {
        PostcopyPolicy {
            after_rounds: Some(rounds),
            ..Default::default()
        }
    }

    /// Whether it is time to switch.
    fn due(&self, rounds: u64, elapsed: Duration) -> bool {
        self.trigger.is_requested()
            || self.after_rounds.is_some_and(|n| rounds >= n)
            || self.after.is_some_and(|t| elapsed >= t)
    }
}

/// Asks a running migration to switch to postcopy (QEMU's `migrate-start-postcopy`).
#[derive(Debug, Clone, Default)]
pub struct StartPostcopy(Arc<AtomicBool>);

impl StartPostcopy {
    /// A trigger not pulled yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks for the switch; it happens after the current round.
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether the switch was asked for.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl MigrationParams {
    /// QEMU's defaults, except an unlimited bandwidth, for machine `machine`.
    pub fn new(machine: impl Into<String>) -> Self {
        MigrationParams {
            stream: StreamConfig::new(machine),
            downtime_limit: Duration::from_millis(300),
            max_bandwidth: None,
            max_total_time: None,
            on_timeout: OnTimeout::Cancel,
            ram_stats: None,
            auto_converge: false,
            auto_converge_period: Duration::from_secs(1),
            io_timeout: Some(DEFAULT_IO_TIMEOUT),
            switchover_ack: false,
            postcopy: None,
            max_postcopy_bandwidth: None,
        }
    }
}

/// The emulator's control over the source guest.
pub trait GuestControl {
    /// Stops the guest (pauses every vCPU); after it returns, no vCPU writes memory.
    fn stop(&mut self) -> Result<()>;
    /// Runs the guest again on the source (after a failure that followed `stop`).
    fn resume(&mut self);
    /// Blocks until the destination reports that it loaded the stream and can run the
    /// guest; the downtime ends here. Default: return at once (downtime then ends when
    /// the stream is flushed).
    fn wait_destination(&mut self) -> Result<()> {
        Ok(())
    }
    /// Lets the vCPUs run only `100 - percent`% of the time (auto-converge); 0 removes
    /// the throttle. Default: not supported (nothing happens).
    fn throttle(&mut self, _percent: u8) {}
}

/// Cancels a migration from another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation. Honoured until the switchover starts.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Writing the header and START sections.
    #[default]
    Setup,
    /// Sending rounds while the guest runs.
    Active,
    /// The guest is stopped and the rest is being sent.
    Device,
    /// Postcopy: the guest runs on the destination, which asks for pages it misses.
    Postcopy,
    /// Done: the destination has the guest.
    Completed,
    /// Cancelled or timed out; the guest runs on the source.
    Cancelled,
    /// Failed; the guest runs on the source.
    Failed,
}

/// Statistics as QEMU's `query-migrate` reports them, updated while the migration runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MigrationStats {
    /// Where the migration is.
    pub status: Status,
    /// Time since the start.
    pub total_time: Duration,
    /// Time spent in setup (header and START sections).
    pub setup_time: Duration,
    /// From the request to stop the guest on the source until the destination could
    /// run it (0 until then), as QEMU measures it.
    pub downtime: Duration,
    /// Downtime predicted from the remaining dirty bytes and the bandwidth.
    pub expected_downtime: Duration,
    /// Bytes written to the stream and (with RAM counters) the multifd channels.
    pub transferred: u64,
    /// Bytes still dirty at the last check.
    pub remaining: u64,
    /// Rounds (PART sections per handler) run.
    pub rounds: u64,
    /// Bandwidth achieved over the last round, in bytes per second.
    pub bandwidth: u64,
    /// Rate at which the guest dirtied memory over the last round, in bytes per second
    /// (pages newly dirtied since the previous check, at page size).
    pub dirty_rate: u64,
    /// Threshold used for the switchover decision (bandwidth × downtime limit).
    pub threshold: u64,
    /// Whether the switchover was forced by `max_total_time`.
    pub forced_switchover: bool,
    /// The vCPU throttle auto-converge applies, in percent (0: none).
    pub throttle_percent: u8,
    /// RAM page counters, if `ram_stats` was given.
    pub ram: Option<RamCounters>,
    /// Postcopy's figures, once the migration switched to it.
    pub postcopy: Option<PostcopyStats>,
}

/// What the source saw of postcopy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostcopyStats {
    /// Precopy's share: from the start to the switch.
    pub precopy_time: Duration,
    /// From the switch to the end.
    pub time_in_postcopy: Duration,
    /// Page requests from the destination.
    pub requests: u64,
    /// Pages sent because they were requested (pages already sent are not resent).
    pub requested_pages: u64,
    /// From a request's arrival to its pages being written: median.
    pub request_latency_p50: Duration,
    /// From a request's arrival to its pages being written: 99th percentile.
    pub request_latency_p99: Duration,
}

/// Migrates the guest described by `registry` to the destination at the other end of
/// `sink`, a transport without a return path: the end of the downtime is
/// [`GuestControl::wait_destination`]. `progress` is called after every round and at
/// the end with the current statistics (for a progress display).
///
/// Over a two-way connection, [`migrate_over`] is the better choice: the destination
/// confirms over QEMU's return path, and I/O timeouts bound every wait.
pub fn migrate(
    registry: &mut Registry,
    sink: impl Write,
    guest: &mut dyn GuestControl,
    params: &MigrationParams,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(&MigrationStats),
) -> Result<MigrationStats> {
    let sink = Writer::to_io(sink);
    run(registry, sink, guest, params, cancel, progress, None)
}

/// Migrates the guest over `conn`, with QEMU's return path: the stream opens it
/// (`OPEN_RETURN_PATH`, `PING`) and no state is sent before the destination's `PONG`;
/// a thread reads the destination's messages, and the migration completes only when the destination reports `SHUT(0)`: it loaded
/// everything and runs the guest. Until then the source's guest stays stopped and
/// intact; if the destination reports a failure, the link breaks, or nothing arrives
/// within [`MigrationParams::io_timeout`], the guest is resumed on the source and the
/// error ([`ErrorKind::MigrationFailed`]) says in which phase it happened. After
/// `SHUT(0)` the source closes its side of the connection, which tells a [`receive`]
/// destination that the source has let the guest go.
///
/// `GuestControl::wait_destination` is not called. The failure semantics at each step
/// are listed in `docs/migration.md`.
///
/// ```no_run
/// use std::net::TcpStream;
/// use vmstate::migrate::{migrate_over, CancelToken, GuestControl, MigrationParams};
/// # fn registry() -> vmstate::Registry { vmstate::Registry::new() }
/// # struct Vcpus;
/// # impl GuestControl for Vcpus {
/// #     fn stop(&mut self) -> vmstate::Result<()> { Ok(()) }
/// #     fn resume(&mut self) {}
/// # }
/// let sock = TcpStream::connect("127.0.0.1:4444").unwrap();
/// let stats = migrate_over(&mut registry(), sock, &mut Vcpus,
///                          &MigrationParams::new("my-vmm-1.0"), &CancelToken::new(),
///                          &mut |_| {}).unwrap();
/// ```
pub fn migrate_over<C: Connection>(
    registry: &mut Registry,
    conn: C,
    guest: &mut dyn GuestControl,
    params: &MigrationParams,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(&MigrationStats),
) -> Result<MigrationStats> {
    let failed = |phase: &str, e: Error| failure(phase, 0, e);
    conn.set_io_timeout(params.io_timeout)
        .map_err(|e| failed("setup", e.into()))?;
    let requests = match &params.postcopy {
        None => None,
        Some(_) => Some(page_requests(registry).ok_or_else(|| {
            failed(
                "setup",
                Error::invalid(
                    "postcopy",
                    "no iterative handler can go on in postcopy (a RamHandler without multifd channels can)",
                ),
            )
        })?),
    };
    let (from_dst, to_dst) = conn.split().map_err(|e| failed("setup", e.into()))?;
    let mut listener =
        Listener::spawn(from_dst, requests.clone()).map_err(|e| failed("setup", e))?;
    let mut params = params.clone();
    params.stream.open_return_path = true;
    params.stream.postcopy = params.postcopy.is_some();
    // The session writes through the cell; after SHUT(0) the driver closes through it.
    // Over a plain socket, guest pages go from guest memory to the kernel uncopied,
    // through a second descriptor of the same socket.
    let in_place = to_dst.try_clone_fd();
    if params.postcopy.is_some()
        && let Some(fd) = &in_place
    {
        // A requested page waits behind what the socket already holds (the pages
        // written before it, precopy's included): keep that small. A socket that
        // refuses keeps its buffer (the pages only wait longer).
        let _ = socket2::SockRef::from(fd).set_send_buffer_size(POSTCOPY_SEND_BUFFER);
    }
    let in_place = in_place.map(Writer::to_fd);
    let to_dst = RefCell::new(to_dst);
    let sink = in_place.unwrap_or_else(|| Writer::to_io(CellWriter(&to_dst)));
    let result = run(
        registry,
        sink,
        guest,
        &params,
        cancel,
        progress,
        // The source has let the guest go: say so by closing, at once (a `receive`
        // destination starts its guest on this). If even that fails, no close reached
        // the destination, which will not start: the source keeps the guest.
        Some((&mut listener, &mut || {
            to_dst.borrow_mut().close().map_err(Error::from)
        })),
    );
    let mut to_dst = to_dst.into_inner();
    if let Err(e) = &result {
        if matches!(e.kind(), ErrorKind::MigrationFailed { phase, .. } if phase == "confirmation") {
            // The destination may have the whole stream and be about to report SHUT(0):
            // a byte after the stream, instead of a clean close, tells it the source
            // took the guest back (a `receive` destination then does not start).
            let _ = to_dst.write_all(&[ABORT_BYTE]).and_then(|_| to_dst.flush());
        }
        // Ends the destination's load and wakes the return-path thread.
        to_dst.abort();
    }
    result
}

/// The page-request queue of the first handler that serves one.
fn page_requests(registry: &mut Registry) -> Option<Arc<PageRequests>> {
    registry
        .entries_mut()
        .iter_mut()
        .find_map(|e| e.iterative_mut().and_then(|h| h.page_requests()))
}

/// What a source that took its guest back after the whole stream was sent writes
/// before it ends the connection (any byte after the stream would do).
const ABORT_BYTE: u8 = 0xff;

/// A writer through a `RefCell`, borrowed only for each call.
struct CellWriter<'a, W: Write>(&'a RefCell<W>);

impl<W: Write> Write for CellWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.borrow_mut().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// The driver, with or without a return path.
fn run(
    registry: &mut Registry,
    sink: Writer<'_>,
    guest: &mut dyn GuestControl,
    params: &MigrationParams,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(&MigrationStats),
    // The return path, and what tells the destination the source let the guest go.
    return_path: Option<(&mut Listener, &mut dyn FnMut() -> Result<()>)>,
) -> Result<MigrationStats> {
    let (mut rp, let_go) = return_path.unzip();
    let start = Instant::now();
    let mut stats = MigrationStats::default();
    let ram = || params.ram_stats.as_ref().map(|r| r.get());
    // Bytes sent on every channel: the main stream, the multifd channels and the
    // postcopy-preempt channel (QEMU's `transferred`; the channels are counted when
    // RAM counters are given).
    let multifd = || {
        params.ram_stats.as_ref().map_or(0, |r| {
            let c = r.get();
            c.multifd_bytes + c.preempt_bytes
        })
    };
    let requests = params
        .postcopy
        .as_ref()
        .and_then(|_| page_requests(registry));
    let mut session = SaveSession::with_writer(registry, sink, params.stream.clone());
    let needs_ack = params.switchover_ack && rp.is_some();

    // With a return path, no state leaves before the destination answered the PING:
    // it is alive, speaks the return path, and (over TLS) accepted our certificate.
    session
        .begin()
        .map_err(|e| failure("setup", session.bytes_written(), e))?;
    if let Some(l) = rp.as_deref_mut() {
        l.wait_pong(params.io_timeout)
            .map_err(|e| failure("setup", session.bytes_written(), e))?;
    }
    session
        .setup()
        .map_err(|e| failure("setup", session.bytes_written(), e))?;
    stats.setup_time = start.elapsed();
    stats.status = Status::Active;
    stats.transferred = session.bytes_written() + multifd();
    progress(&stats);

    let mut limit = RateLimit::new(params.max_bandwidth);
    let limit_ms = params.downtime_limit.as_secs_f64() * 1000.0;
    let mut bandwidth_bpms: Option<f64> = None; // bytes per millisecond
    let mut remaining = session.pending(false).total();
    // Whether the last round sent pending state and nothing was newly dirtied.
    let mut last_round_quiet = false;
    // Stream bytes per pending byte, as the last round cost: below 1 when XBZRLE sends
    // only what changed (QEMU counts whole pages, and a guest rewriting a few bytes of
    // each page never converges there). Pages holding data only: zero pages cost
    // almost nothing, and a round of them says nothing about the pages that follow.
    let mut cost_factor = 1.0f64;
    let mut auto = AutoConverge::new(params.auto_converge_period);
    let mut go_postcopy = false;
    loop {
        let round = format!("round {}", stats.rounds + 1);
        if let Some(l) = rp.as_deref_mut()
            && let Err(e) = l.poll()
        {
            release_throttle(guest, &auto);
            return Err(failure(&round, session.bytes_written(), e));
        }
        let acked = !needs_ack || rp.as_deref().is_some_and(|l| l.heard().switchover_ack);
        if cancel.is_cancelled() {
            release_throttle(guest, &auto);
            return finish_cancelled(session, stats, start, ram(), progress, None);
        }
        let timed_out = params.max_total_time.is_some_and(|t| start.elapsed() >= t);
        if timed_out && (params.on_timeout == OnTimeout::Cancel || !acked) {
            release_throttle(guest, &auto);
            let why = if acked {
                "max_total_time"
            } else {
                "max_total_time (still waiting for the destination's SWITCHOVER_ACK)"
            };
            return finish_cancelled(session, stats, start, ram(), progress, Some(why));
        }
        let threshold = bandwidth_bpms.map_or(0.0, |b| b * limit_ms) as u64;
        stats.threshold = threshold;
        let fits = |pending: u64| (pending as f64 * cost_factor) as u64 <= threshold;
        if !acked && bandwidth_bpms.is_some() && fits(remaining) {
            // Converged, but the destination is not ready: wait for its ack a little
            // instead of spinning through empty rounds.
            if let Some(l) = rp.as_deref_mut()
                && let Err(e) = l.wait_a_little(Duration::from_millis(10))
            {
                release_throttle(guest, &auto);
                return Err(failure(&round, session.bytes_written(), e));
            }
        }
        // Nothing re-dirtied and something left: one more round costs the guest
        // nothing and takes its pages out of the downtime.
        let quiet = remaining > 0 && last_round_quiet;
        if acked && bandwidth_bpms.is_some() && fits(remaining) && !quiet {
            remaining = session.pending(true).total(); // QEMU's exact pass
            if fits(remaining) {
                break;
            }
        }
        if timed_out {
            stats.forced_switchover = true;
            break;
        }
        if acked
            && rp.is_some()
            && params
                .postcopy
                .as_ref()
                .is_some_and(|p| p.due(stats.rounds, start.elapsed()))
        {
            go_postcopy = true;
            break;
        }

        // The round's time includes any wait for the rate limit, so that the measured
        // bandwidth is what the link is allowed to carry, as QEMU measures it.
        let round_start = Instant::now();
        let budget = limit.budget();
        let before = session.bytes_written() + multifd();
        let ram_before = ram();
        let status = match session.iterate(budget) {
            Ok(status) => status,
            Err(e) => {
                release_throttle(guest, &auto);
                let e = with_report(rp.as_deref_mut(), e);
                return Err(failure(&round, session.bytes_written(), e));
            }
        };
        let sent = (session.bytes_written() + multifd()).saturating_sub(before);
        let elapsed = round_start.elapsed();
        limit.sent(sent);

        let ms = (elapsed.as_secs_f64() * 1000.0).max(0.001);
        if sent > 0 {
            // A round that fits in a rate-limit window runs at burst speed; the link
            // can carry no more than the cap, so the estimate cannot either.
            let cap = params
                .max_bandwidth
                .map_or(f64::INFINITY, |b| b as f64 / 1000.0);
            bandwidth_bpms = Some((sent as f64 / ms).min(cap));
        }
        let now_pending = session.pending(false).total();
        // Pending state the round consumed: RAM pages at their page size (a zero page
        // costs 9 stream bytes but clears 4 KiB of pending), else the bytes sent.
        let consumed = match (ram_before, ram()) {
            (Some(a), Some(b)) => b.pages_bytes() - a.pages_bytes(),
            _ => sent,
        };
        if let (Some(a), Some(b)) = (ram_before, ram()) {
            let data_bytes = (b.data_pages() - a.data_pages()) * b.page_size;
            if data_bytes > 0 {
                cost_factor = (sent as f64 / data_bytes as f64).min(1.0);
            }
        }
        // What is dirty now, minus what was left of the old dirty set: newly dirtied.
        let redirtied = (now_pending + consumed).saturating_sub(remaining);
        remaining = now_pending;
        last_round_quiet = redirtied == 0 && consumed > 0;
        if params.auto_converge
            && let Some(percent) = auto.after_round(sent, redirtied, elapsed)
        {
            guest.throttle(percent);
        }
        stats.throttle_percent = auto.percent();
        stats.rounds += 1;
        stats.transferred = session.bytes_written() + multifd();
        stats.remaining = remaining;
        stats.bandwidth = bandwidth_bpms.map_or(0, |b| (b * 1000.0) as u64);
        stats.dirty_rate = (redirtied as f64 / elapsed.as_secs_f64().max(1e-6)) as u64;
        stats.expected_downtime = bandwidth_bpms.map_or(Duration::ZERO, |b| {
            Duration::from_secs_f64(remaining as f64 * cost_factor / b / 1000.0)
        });
        stats.total_time = start.elapsed();
        stats.ram = ram();
        progress(&stats);
        if status == IterationStatus::Done && remaining == 0 && bandwidth_bpms.is_none() {
            if acked {
                // Nothing at all to send (no RAM): switch over.
                break;
            }
            // Nothing to send but the destination is not ready: wait for it a little.
            if let Some(l) = rp.as_deref_mut()
                && let Err(e) = l.wait_a_little(Duration::from_millis(10))
            {
                return Err(failure(&round, session.bytes_written(), e));
            }
        }
    }

    // Switchover: from here on the guest is stopped; failures resume it. The throttle
    // is lifted first, so that a guest resumed on the source runs at full speed.
    release_throttle(guest, &auto);
    if cancel.is_cancelled() {
        return finish_cancelled(session, stats, start, ram(), progress, None);
    }
    if go_postcopy {
        let (Some(l), Some(g)) = (rp, let_go) else {
            unreachable!("postcopy is chosen only with a return path");
        };
        let ctx = Postcopy {
            start,
            params,
            multifd: &multifd,
            ram: &ram,
            requests,
        };
        return ctx.run(session, guest, l, g, stats, progress);
    }
    let stopped = Instant::now();
    guest
        .stop()
        .map_err(|e| failure("switchover", session.bytes_written(), e))?;
    stats.status = Status::Device;
    progress(&stats);
    let completed = match session.complete() {
        Err(e) => {
            let e = with_report(rp.as_deref_mut(), e);
            Err(failure("switchover", session.bytes_written(), e))
        }
        Ok(_) => match rp {
            Some(l) => l.wait_shut(params.io_timeout),
            None => guest.wait_destination(),
        }
        .and_then(|_| let_go.map_or(Ok(()), |g| g()))
        .map_err(|e| failure("confirmation", session.bytes_written(), e)),
    };
    if let Err(e) = completed {
        guest.resume();
        stats.status = Status::Failed;
        stats.transferred = session.bytes_written() + multifd();
        stats.total_time = start.elapsed();
        progress(&stats);
        return Err(e);
    }
    stats.downtime = stopped.elapsed();
    stats.status = Status::Completed;
    stats.transferred = session.bytes_written() + multifd();
    stats.remaining = 0;
    stats.total_time = start.elapsed();
    stats.ram = ram();
    progress(&stats);
    Ok(stats)
}

/// The switch to postcopy and what follows it.
struct Postcopy<'a> {
    start: Instant,
    params: &'a MigrationParams,
    multifd: &'a dyn Fn() -> u64,
    ram: &'a dyn Fn() -> Option<RamCounters>,
    requests: Option<Arc<PageRequests>>,
}

/// The source socket's send buffer when postcopy may happen (the kernel doubles it).
const POSTCOPY_SEND_BUFFER: usize = 128 << 10;

/// How much a postcopy round may send (requested pages go out within it at once).
const POSTCOPY_ROUND: u64 = 64 << 20;

impl Postcopy<'_> {
    /// Stops the guest, sends the switch (discards, package), then the rest while the
    /// guest runs on the destination. A failure before the package is out resumes the
    /// guest here; after it, the guest belongs to the destination and is not resumed
    /// (the destination pauses it; postcopy recovery is not supported).
    fn run(
        &self,
        mut session: SaveSession<'_, '_>,
        guest: &mut dyn GuestControl,
        rp: &mut Listener,
        let_go: &mut dyn FnMut() -> Result<()>,
        mut stats: MigrationStats,
        progress: &mut dyn FnMut(&MigrationStats),
    ) -> Result<MigrationStats> {
        let bytes = |s: &SaveSession<'_, '_>| s.bytes_written() + (self.multifd)();
        if let Err(e) = session.prepare_postcopy() {
            // The guest was not stopped: it goes on here.
            stats.status = Status::Failed;
            progress(&stats);
            return Err(failure("switch to postcopy", session.bytes_written(), e));
        }
        let stopped = Instant::now();
        guest
            .stop()
            .map_err(|e| failure("switch to postcopy", session.bytes_written(), e))?;
        if let Err(e) = session.start_postcopy() {
            guest.resume();
            let e = with_report(Some(rp), e);
            stats.status = Status::Failed;
            progress(&stats);
            return Err(failure("switch to postcopy", session.bytes_written(), e));
        }
        let switched = Instant::now();
        let requests = self.requests.clone();
        stats.status = Status::Postcopy;
        let mut postcopy = PostcopyStats {
            precopy_time: switched.duration_since(self.start),
            ..Default::default()
        };
        let lost = |e: Error, s: &SaveSession<'_, '_>| {
            let e = Error::invalid(
                "postcopy",
                format!(
                    "{e}; the guest had moved to the destination, which pauses it with pages \
                     missing; it cannot resume here (postcopy recovery is not supported)"
                ),
            );
            failure("postcopy", s.bytes_written(), e)
        };
        let mut limit =
            RateLimit::with_window(self.params.max_postcopy_bandwidth, Duration::from_millis(5));
        loop {
            if let Err(e) = rp.poll() {
                return Err(self.failed(lost(e, &session), &mut stats, &session, progress));
            }
            note_downtime(rp, stopped, &mut stats);
            let budget = match limit.try_budget() {
                Some(b) => b.min(POSTCOPY_ROUND),
                // Over the cap: a round of one byte sends requested pages only.
                None if requests.as_ref().is_some_and(|q| q.has_pending()) => 1,
                None => {
                    if let Some(q) = &requests {
                        q.wait(Duration::from_millis(5));
                    }
                    continue;
                }
            };
            let before = session.bytes_written();
            let status = match session.iterate(budget) {
                Ok(s) => s,
                Err(e) => {
                    let e = with_report(Some(rp), e);
                    return Err(self.failed(lost(e, &session), &mut stats, &session, progress));
                }
            };
            limit.sent(session.bytes_written() - before);
            stats.rounds += 1;
            stats.transferred = bytes(&session);
            stats.remaining = session.pending(false).total();
            stats.ram = (self.ram)();
            stats.total_time = self.start.elapsed();
            progress(&stats);
            if status == IterationStatus::Done && stats.remaining == 0 {
                break;
            }
        }
        let done = session
            .complete()
            .map(|_| ())
            .and_then(|_| rp.wait_shut(self.params.io_timeout))
            .and_then(|_| let_go());
        if let Err(e) = done {
            return Err(self.failed(lost(e, &session), &mut stats, &session, progress));
        }
        note_downtime(rp, stopped, &mut stats);
        postcopy.time_in_postcopy = switched.elapsed();
        if let Some(q) = requests {
            let (n, pages, latency) = q.summary();
            postcopy.requests = n;
            postcopy.requested_pages = pages;
            if let Some((p50, p99)) = latency {
                postcopy.request_latency_p50 = p50;
                postcopy.request_latency_p99 = p99;
            }
        }
        stats.postcopy = Some(postcopy);
        stats.status = Status::Completed;
        stats.transferred = bytes(&session);
        stats.remaining = 0;
        stats.total_time = self.start.elapsed();
        stats.ram = (self.ram)();
        progress(&stats);
        Ok(stats)
    }

    fn failed(
        &self,
        e: Error,
        stats: &mut MigrationStats,
        session: &SaveSession<'_, '_>,
        progress: &mut dyn FnMut(&MigrationStats),
    ) -> Error {
        stats.status = Status::Failed;
        stats.transferred = session.bytes_written() + (self.multifd)();
        stats.total_time = self.start.elapsed();
        progress(stats);
        e
    }
}

/// The downtime of a postcopy switch ends when the destination answers the last
/// PING (4), sent after the package: it has loaded the devices and started the guest.
fn note_downtime(rp: &Listener, stopped: Instant, stats: &mut MigrationStats) {
    if stats.downtime.is_zero()
        && rp.heard().last_pong == 4
        && let Some(at) = rp.heard().last_pong_at
    {
        stats.downtime = at.saturating_duration_since(stopped);
    }
}

/// When writing failed and the destination has a return path, its own report (a
/// `SHUT(1)`, a closed connection) usually says why: wait briefly for it and name it.
fn with_report(rp: Option<&mut Listener>, e: Error) -> Error {
    let Some(l) = rp else { return e };
    if !matches!(e.kind(), ErrorKind::Io(_)) {
        return e;
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        if let Err(report) = l.wait_a_little(Duration::from_millis(20)) {
            return Error::invalid(
                "destination",
                format!("{report}; writing to it failed: {e}"),
            );
        }
    }
    e
}

/// A failure at `phase`, `sent` bytes into the stream.
fn failure(phase: &str, bytes: u64, cause: Error) -> Error {
    Error::new(ErrorKind::MigrationFailed {
        phase: phase.to_string(),
        bytes,
        cause: Box::new(cause),
    })
}

/// Lifts the auto-converge throttle, if one was applied.
fn release_throttle(guest: &mut dyn GuestControl, auto: &AutoConverge) {
    if auto.percent() > 0 {
        guest.throttle(0);
    }
}

fn finish_cancelled(
    session: SaveSession<'_, '_>,
    mut stats: MigrationStats,
    start: Instant,
    ram: Option<RamCounters>,
    progress: &mut dyn FnMut(&MigrationStats),
    why: Option<&'static str>,
) -> Result<MigrationStats> {
    drop(session); // runs every handler's cleanup
    stats.status = Status::Cancelled;
    stats.total_time = start.elapsed();
    stats.ram = ram;
    progress(&stats);
    Err(match why {
        Some(limit) => Error::invalid(
            "migration",
            format!(
                "{limit} ran out before the migration converged; the guest keeps running on the source"
            ),
        ),
        None => Error::new(ErrorKind::Cancelled),
    })
}
