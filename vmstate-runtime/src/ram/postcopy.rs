//! Postcopy RAM (spec 5.6): the source's queue of pages the destination asked for,
//! the destination's side that asks for them and waits, and the payloads of the two
//! RAM commands (`POSTCOPY_ADVISE`, `POSTCOPY_RAM_DISCARD`).
//!
//! After the switch to postcopy the guest runs on the destination while some of its
//! pages are still on the source. A guest access to such a page goes through
//! [`RamBlock`](super::RamBlock)'s API (the received-bitmap mechanism of
//! [`on_demand`](super::on_demand)), which calls the [`PostcopyIncoming`] fetcher: it
//! sends `REQ_PAGES_ID` / `REQ_PAGES` on the return path and waits until the loader
//! has placed the page touched. The source serves queued requests before anything
//! else, or at once on a postcopy-preempt channel ([`super::preempt`]).
//!
//! ```
//! use vmstate::ram::postcopy::{decode_discard, encode_discard};
//! let payload = encode_discard("pc.ram", &[(0x1000, 0x3000)]);
//! let (name, ranges) = decode_discard(&payload).unwrap();
//! assert_eq!((name.as_str(), ranges), ("pc.ram", vec![(0x1000, 0x3000)]));
//! ```

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::GuestRam;
use super::handler::RamStats;
use super::on_demand::PageFetcher;
use super::preempt::PreemptSender;
use crate::error::{Error, Result};
use crate::migrate::return_path::{Message, write_message};

/// The `POSTCOPY_RAM_DISCARD` payload version QEMU writes and accepts.
pub const DISCARD_VERSION: u8 = 0;

/// QEMU's `MAX_DISCARDS_PER_COMMAND`: ranges per `POSTCOPY_RAM_DISCARD` command.
pub const DISCARDS_PER_COMMAND: usize = 12;

/// What the destination must discard at the switch to postcopy: per RAM block, its
/// name and the byte ranges (start, length) to drop.
pub type Discards = Vec<(String, Vec<(u64, u64)>)>;

/// What runs at `POSTCOPY_LISTEN` (see [`PostcopyIncoming::at_listen`]).
pub(crate) type ListenHook = Box<dyn FnOnce(&Arc<PostcopyIncoming>) + Send>;

/// Slots of [`PostcopyIncoming`]'s count of waiting accesses (by page number modulo
/// this): a page placed takes the lock only when its slot has a waiter.
const AWAIT_SLOTS: usize = 4096;

/// Page requests that may wait on the source at once.
pub const MAX_QUEUED: usize = 1 << 16;

/// Fault latencies kept for the percentiles (the first this many faults).
const MAX_LATENCIES: usize = 1 << 20;

/// The `POSTCOPY_ADVISE` payload: the summary of the RAM page sizes (QEMU ORs every
/// block's page size together) and the target page size, both be64.
pub fn encode_advise(page_size_summary: u64, target_page_size: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&page_size_summary.to_be_bytes());
    out[8..].copy_from_slice(&target_page_size.to_be_bytes());
    out
}

/// Reads a `POSTCOPY_ADVISE` payload: `None` for the empty one (only dirty-bitmap
/// postcopy), else the page-size summary and the target page size.
pub fn decode_advise(payload: &[u8]) -> Result<Option<(u64, u64)>> {
    match payload.len() {
        0 => Ok(None),
        16 => {
            let be = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
            Ok(Some((be(&payload[..8]), be(&payload[8..]))))
        }
        n => Err(Error::invalid(
            "POSTCOPY_ADVISE",
            format!("{n} bytes of payload; QEMU sends 0 or 16"),
        )),
    }
}

/// One `POSTCOPY_RAM_DISCARD` payload: version 0, the block name (counted, then a NUL
/// byte) and `(start, length)` byte ranges, be64 each.
pub fn encode_discard(block: &str, ranges: &[(u64, u64)]) -> Vec<u8> {
    let name = &block.as_bytes()[..block.len().min(255)];
    let mut out = Vec::with_capacity(3 + name.len() + 16 * ranges.len());
    out.push(DISCARD_VERSION);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(0);
    for &(start, len) in ranges {
        out.extend(start.to_be_bytes());
        out.extend(len.to_be_bytes());
    }
    out
}

/// Reads a `POSTCOPY_RAM_DISCARD` payload, with QEMU's checks (version 0, the NUL
/// after the name, whole 16-byte ranges).
pub fn decode_discard(payload: &[u8]) -> Result<(String, Vec<(u64, u64)>)> {
    let bad = |why: String| Error::invalid("POSTCOPY_RAM_DISCARD", why);
    let [version, len, rest @ ..] = payload else {
        return Err(bad("shorter than its version and name length".into()));
    };
    if *version != DISCARD_VERSION {
        return Err(bad(format!("version {version}; only 0 exists")));
    }
    let len = usize::from(*len);
    if rest.len() < len + 1 {
        return Err(bad("the block name runs past the payload".into()));
    }
    let name = String::from_utf8_lossy(&rest[..len]).into_owned();
    if rest[len] != 0 {
        return Err(bad(format!(
            "byte 0x{:02x} after the block name, expected 0x00",
            rest[len]
        )));
    }
    let ranges = &rest[len + 1..];
    if ranges.len() % 16 != 0 {
        return Err(bad(format!(
            "{} bytes of ranges, not a multiple of 16",
            ranges.len()
        )));
    }
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    let ranges = ranges
        .chunks_exact(16)
        .map(|c| (be(&c[..8]), be(&c[8..])))
        .collect();
    Ok((name, ranges))
}

/// Runs of set bits in a block's bitmap as `(start, length)` byte ranges: what the
/// source tells the destination to discard at the switch.
pub fn dirty_ranges(block: &dyn GuestRam) -> Vec<(u64, u64)> {
    let bitmap = block.migration_bitmap();
    let page = block.page_size() as u64;
    let mut ranges = Vec::new();
    let mut run: Option<usize> = None;
    for p in 0..=bitmap.pages() {
        let dirty = p < bitmap.pages() && bitmap.is_dirty(p);
        match (dirty, run) {
            (true, None) => run = Some(p),
            (false, Some(first)) => {
                ranges.push((first as u64 * page, (p - first) as u64 * page));
                run = None;
            }
            _ => {}
        }
    }
    ranges
}

/// A page request from the destination (`REQ_PAGES_ID` / `REQ_PAGES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The RAM block.
    pub block: String,
    /// Byte offset in the block.
    pub start: u64,
    /// Bytes asked for.
    pub len: u64,
    /// When the request arrived.
    pub arrived: Instant,
}

/// The source's queue of requested pages, filled by the return-path thread and served
/// by the RAM handler before any other page.
#[derive(Debug, Default)]
pub struct PageRequests {
    /// Set at the switch to postcopy: requests before it are refused.
    accepting: AtomicBool,
    queue: Mutex<VecDeque<PageRequest>>,
    arrived: Condvar,
    pending: AtomicBool,
    /// The block of the last `REQ_PAGES_ID` (a `REQ_PAGES` refers to it).
    last_block: Mutex<Option<String>>,
    requests: AtomicU64,
    served_pages: AtomicU64,
    latencies_ns: Mutex<Vec<u64>>,
    /// The postcopy-preempt channel, when open: requests are served on it at once,
    /// from the thread that pushes them, instead of being queued.
    preempt: Mutex<Option<PreemptSender>>,
}

impl PageRequests {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Opens the queue (at the switch to postcopy) or closes it (when a migration
    /// starts; it stays open after one ends, for requests that cross the last pages).
    pub fn accept(&self, on: bool) {
        self.accepting.store(on, Ordering::Release);
    }

    /// Queues a request; `block` is `None` for `REQ_PAGES` (the block of the previous
    /// request). Refuses a `REQ_PAGES` before any block was named, a request before
    /// the switch to postcopy, and more than [`MAX_QUEUED`] waiting requests (a
    /// destination flooding the source).
    pub fn push(&self, block: Option<&str>, start: u64, len: u64) -> Result<()> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Error::invalid(
                "return path",
                "a page request before the switch to postcopy",
            ));
        }
        let mut last = self.last_block.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = block {
            *last = Some(name.to_string());
        }
        let Some(block) = last.clone() else {
            return Err(Error::invalid(
                "return path",
                "REQ_PAGES before any REQ_PAGES_ID named a RAM block",
            ));
        };
        drop(last);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let arrived = Instant::now();
        if let Some(sender) = self
            .preempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let sent = sender.send(&block, start, len)?;
            self.record_served(arrived, sent);
            return Ok(());
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_QUEUED {
            return Err(Error::invalid(
                "return path",
                format!(
                    "more than {MAX_QUEUED} page requests waiting: the destination floods the source"
                ),
            ));
        }
        q.push_back(PageRequest {
            block,
            start,
            len,
            arrived,
        });
        self.pending.store(true, Ordering::Release);
        self.arrived.notify_all();
        Ok(())
    }

    /// Waits up to `limit` for a request (a source over its bandwidth cap serves
    /// requests only).
    pub fn wait(&self, limit: Duration) {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() {
            let _ = self.arrived.wait_timeout(q, limit);
        }
    }

    /// Whether a request waits (cheap: checked between pages).
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The oldest request.
    pub fn pop(&self) -> Option<PageRequest> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let r = q.pop_front();
        if q.is_empty() {
            self.pending.store(false, Ordering::Release);
        }
        r
    }

    /// Records that a request's pages went out (`pages` of them were still to send).
    pub fn served(&self, req: &PageRequest, pages: u64) {
        self.record_served(req.arrived, pages);
    }

    fn record_served(&self, arrived: Instant, pages: u64) {
        self.served_pages.fetch_add(pages, Ordering::Relaxed);
        let mut l = self.latencies_ns.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() < MAX_LATENCIES {
            l.push(arrived.elapsed().as_nanos() as u64);
        }
    }

    /// Serves requests on the postcopy-preempt channel from now on (at the switch).
    pub(crate) fn open_preempt(&self, sender: PreemptSender) {
        *self.preempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
    }

    /// Closes the postcopy-preempt channel, if open: when the destination said SHUT
    /// (it no longer reads the channel) or the return path ended.
    pub(crate) fn close_preempt(&self) {
        self.preempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Requests received, pages sent for them (pages already sent are not sent
    /// again), and the time from a request's arrival to its pages being written, as
    /// (median, 99th percentile).
    pub fn summary(&self) -> (u64, u64, Option<(Duration, Duration)>) {
        let l = self.latencies_ns.lock().unwrap_or_else(|e| e.into_inner());
        (
            self.requests.load(Ordering::Relaxed),
            self.served_pages.load(Ordering::Relaxed),
            percentiles(&l),
        )
    }
}

/// The median and 99th percentile of `ns`.
fn percentiles(ns: &[u64]) -> Option<(Duration, Duration)> {
    if ns.is_empty() {
        return None;
    }
    let mut v = ns.to_vec();
    v.sort_unstable();
    let at = |q: f64| Duration::from_nanos(v[((v.len() - 1) as f64 * q).round() as usize]);
    Some((at(0.5), at(0.99)))
}

/// What the destination saw of postcopy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostcopyReport {
    /// Faults (accesses to a missing page) that sent a request.
    pub requests: u64,
    /// Pages asked for in those requests.
    pub requested_pages: u64,
    /// Fault latency (access to page in place): median.
    pub fault_latency_p50: Duration,
    /// Fault latency: 99th percentile.
    pub fault_latency_p99: Duration,
    /// Fault latency: the longest.
    pub fault_latency_max: Duration,
    /// Pages received after the guest started here.
    pub pages_after_start: u64,
    /// Pages received after the guest started here that were there already (a request
    /// crossing the page on its way): dropped, as QEMU's `UFFDIO_COPY` does.
    pub duplicate_pages: u64,
    /// From `POSTCOPY_RUN` (the guest starts here) to the end of the stream.
    pub time_in_postcopy: Duration,
    /// Pages discarded by `POSTCOPY_RAM_DISCARD`.
    pub discarded_pages: u64,
    /// Page records read from the postcopy-preempt channel.
    pub preempt_pages: u64,
}

#[derive(Debug, Default)]
struct IncomingState {
    /// Why postcopy failed, once it did.
    failed: Option<String>,
    started: Option<Instant>,
    ended: Option<Instant>,
    /// What waiting accesses wait for: block name and page.
    waits: Vec<(String, usize)>,
    /// A side channel (postcopy-preempt) brings pages too: opened, and whether it ended.
    side_channel: Option<bool>,
    /// Why the side channel failed, if it did while it mattered.
    side_channel_error: Option<String>,
}

/// The destination's postcopy state, shared by the loader and every thread that
/// touches guest memory: sends page requests on the return path and wakes the
/// threads that wait for them.
pub struct PostcopyIncoming {
    /// The return path, and the block named by the last request written to it (a
    /// `REQ_PAGES` refers to it: decided and written under one lock).
    out: Mutex<(Box<dyn Write + Send>, Option<String>)>,
    state: Mutex<IncomingState>,
    arrived: Condvar,
    /// Accesses waiting, counted by page number modulo [`AWAIT_SLOTS`]: a page placed
    /// looks here (no lock) before it looks for a waiter to wake.
    awaited: Box<[AtomicUsize]>,
    /// Weak: each block's fetcher holds this state.
    blocks: Mutex<Vec<std::sync::Weak<dyn GuestRam>>>,
    latencies_ns: Mutex<Vec<u64>>,
    requests: AtomicU64,
    requested_pages: AtomicU64,
    pages_after_start: AtomicU64,
    duplicate_pages: AtomicU64,
    discarded_pages: AtomicU64,
    preempt_pages: AtomicU64,
    listening: AtomicBool,
    /// `POSTCOPY_RUN` was seen (read for every page placed: no lock).
    running: AtomicBool,
    /// Held while a page is checked and placed: the main stream and a side channel
    /// never both place one page.
    placing: Mutex<()>,
    /// Runs at `POSTCOPY_LISTEN` (starts the side channel's thread).
    on_listen: Mutex<Option<ListenHook>>,
}

impl std::fmt::Debug for PostcopyIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostcopyIncoming({:?})", self.report())
    }
}

impl PostcopyIncoming {
    /// Postcopy state whose requests go to `return_path` (the connection back to the
    /// source; each message is written whole, under a lock).
    pub fn new(return_path: Box<dyn Write + Send>) -> Arc<Self> {
        Arc::new(PostcopyIncoming {
            out: Mutex::new((return_path, None)),
            state: Mutex::default(),
            arrived: Condvar::new(),
            awaited: (0..AWAIT_SLOTS).map(|_| AtomicUsize::new(0)).collect(),
            blocks: Mutex::default(),
            latencies_ns: Mutex::default(),
            requests: AtomicU64::new(0),
            requested_pages: AtomicU64::new(0),
            pages_after_start: AtomicU64::new(0),
            duplicate_pages: AtomicU64::new(0),
            discarded_pages: AtomicU64::new(0),
            preempt_pages: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            running: AtomicBool::new(false),
            placing: Mutex::new(()),
            on_listen: Mutex::new(None),
        })
    }

    /// Writes a return-path message (the loader's PONGs share the connection).
    pub fn send(&self, msg: &Message) -> std::io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        write_message(&mut *out.0, msg)
    }

    /// Makes `block` take its missing pages from the source from now on: every page
    /// counts as missing until the stream loads it.
    pub fn attach(self: &Arc<Self>, block: Arc<dyn GuestRam>) -> Result<()> {
        let fetcher = Box::new(Fetcher(self.clone()));
        match block.fetch_on_demand(fetcher) {
            Some(r) => r?,
            None => {
                return Err(Error::invalid(
                    "postcopy",
                    format!(
                        "RAM block '{}' cannot take pages on demand (postcopy needs \
                         RamBlocks whose accesses go through their API)",
                        block.name()
                    ),
                ));
            }
        }
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&block));
        Ok(())
    }

    /// `POSTCOPY_LISTEN`: from here on page requests are answered.
    pub fn listen(self: &Arc<Self>) {
        self.listening.store(true, Ordering::Release);
        let hook = self
            .on_listen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(hook) = hook {
            hook(self);
        }
    }

    /// Runs `hook` at `POSTCOPY_LISTEN` (once the source switched: it opened its side
    /// channels before it sent the package that holds LISTEN). The hook is kept here
    /// until then: it must not hold this state or its blocks (their fetchers hold it).
    pub(crate) fn at_listen(&self, hook: ListenHook) {
        *self.on_listen.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// The stream ended, loaded or not: what was to run at `POSTCOPY_LISTEN` no longer
    /// will (dropped now: it may hold a listener).
    pub(crate) fn forget_listen_hook(&self) {
        drop(
            self.on_listen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    /// Whether `POSTCOPY_LISTEN` was seen.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// `POSTCOPY_RUN`: the guest starts here now.
    pub fn started(&self) {
        self.lock_state().started = Some(Instant::now());
        self.running.store(true, Ordering::Release);
    }

    /// Whether the guest was started here.
    pub fn has_started(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The stream ended: every page is here.
    pub fn ended(&self) {
        self.lock_state().ended = Some(Instant::now());
    }

    /// Counts discarded pages.
    pub(crate) fn discarded(&self, pages: u64) {
        self.discarded_pages.fetch_add(pages, Ordering::Relaxed);
    }

    /// The loader placed page `page` of `block` (`fresh`: it was missing; else it was
    /// dropped). Wakes the accesses whose pages are now all there (only those: a
    /// wake-up per page would cost more than the page).
    pub(crate) fn placed(&self, block: &dyn GuestRam, page: usize, fresh: bool) {
        if self.has_started() {
            self.pages_after_start.fetch_add(1, Ordering::Relaxed);
            if !fresh {
                self.duplicate_pages.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Pairs with the fence in `wait_for`: either the waiter sees the page, or
        // this side sees the waiter.
        fence(Ordering::SeqCst);
        if self.awaited[page % AWAIT_SLOTS].load(Ordering::Relaxed) > 0 {
            let s = self.lock_state();
            if s.waits
                .iter()
                .any(|(name, p)| *p == page && name == block.name())
            {
                self.arrived.notify_all();
            }
        }
    }

    /// The link to the source is gone: pages still missing will never come. Threads
    /// waiting for one stay blocked (the guest never runs with a page missing).
    pub fn fail(&self, why: impl Into<String>) {
        let mut s = self.lock_state();
        s.failed.get_or_insert_with(|| why.into());
        self.arrived.notify_all();
    }

    /// A side channel (the postcopy-preempt channel) will bring pages too.
    pub(crate) fn side_channel_opened(&self) {
        self.lock_state().side_channel = Some(false);
    }

    /// Counts a page record read from the side channel.
    pub(crate) fn side_channel_page(&self) {
        self.preempt_pages.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a side channel (postcopy-preempt) was opened.
    fn has_side_channel(&self) -> bool {
        self.lock_state().side_channel.is_some()
    }

    /// The side channel ended: cleanly (`None`) or with an error.
    pub(crate) fn side_channel_ended(&self, error: Option<Error>) {
        let mut s = self.lock_state();
        s.side_channel = Some(true);
        if let Some(e) = error
            && s.ended.is_none()
        {
            s.side_channel_error = Some(e.to_string());
        }
        self.arrived.notify_all();
    }

    /// Pages still missing when the main stream ended, after waiting up to `limit`
    /// for a side channel that is still open to bring them (its pages may arrive
    /// after the main stream's last ones), and why the side channel failed, if it did.
    pub(crate) fn missing_at_end(&self, limit: Duration) -> (u64, Option<String>) {
        let t = Instant::now();
        loop {
            let missing = self.missing_pages();
            let s = self.lock_state();
            if missing == 0 || s.side_channel != Some(false) || t.elapsed() >= limit {
                return (missing, s.side_channel_error.clone());
            }
            drop(
                self.arrived
                    .wait_timeout(s, Duration::from_millis(20))
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }

    /// Pages still missing, over every attached block.
    pub fn missing_pages(&self) -> u64 {
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|b| b.missing_pages())
            .sum()
    }

    /// What happened so far.
    pub fn report(&self) -> PostcopyReport {
        let l = self.latencies_ns.lock().unwrap_or_else(|e| e.into_inner());
        let (p50, p99) = percentiles(&l).unwrap_or_default();
        let max = Duration::from_nanos(l.iter().copied().max().unwrap_or(0));
        drop(l);
        let s = self.lock_state();
        let time_in_postcopy = match (s.started, s.ended) {
            (Some(a), Some(b)) => b.duration_since(a),
            (Some(a), None) => a.elapsed(),
            _ => Duration::ZERO,
        };
        PostcopyReport {
            requests: self.requests.load(Ordering::Relaxed),
            requested_pages: self.requested_pages.load(Ordering::Relaxed),
            fault_latency_p50: p50,
            fault_latency_p99: p99,
            fault_latency_max: max,
            pages_after_start: self.pages_after_start.load(Ordering::Relaxed),
            duplicate_pages: self.duplicate_pages.load(Ordering::Relaxed),
            time_in_postcopy,
            discarded_pages: self.discarded_pages.load(Ordering::Relaxed),
            preempt_pages: self.preempt_pages.load(Ordering::Relaxed),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, IncomingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the source for `count` pages of `block` from `first` on and waits until
    /// the first is in place (the others come on their own: an access to one still
    /// missing asks again, and the source sends each page once).
    fn request(&self, block: &dyn GuestRam, first: usize, count: usize) -> Result<()> {
        let t = Instant::now();
        let page = block.page_size() as u64;
        let start = first as u64 * page;
        let len = u32::try_from(count as u64 * page).unwrap_or(u32::MAX);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.requested_pages
            .fetch_add(count as u64, Ordering::Relaxed);
        let sent = {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let msg = if out.1.as_deref() == Some(block.name()) {
                Message::ReqPages { start, len }
            } else {
                out.1 = Some(block.name().to_string());
                Message::ReqPagesId {
                    block: block.name().to_string(),
                    start,
                    len,
                }
            };
            write_message(&mut *out.0, &msg)
        };
        if let Err(e) = sent {
            self.fail(format!("a page request could not be sent: {e}"));
        }
        self.wait_for(block, first);
        let mut l = self.latencies_ns.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() < MAX_LATENCIES {
            l.push(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    }

    fn wait_for(&self, block: &dyn GuestRam, page: usize) {
        let slot = &self.awaited[page % AWAIT_SLOTS];
        let mut s = self.lock_state();
        s.waits.push((block.name().to_string(), page));
        slot.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        while block.page_missing(page) {
            // A timed wait as well: a wake-up is cheap to miss and costly to lose.
            s = self
                .arrived
                .wait_timeout(s, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if let Some(i) = s
            .waits
            .iter()
            .position(|(n, p)| *p == page && n == block.name())
        {
            s.waits.swap_remove(i);
        }
        slot.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks a page request against the source's blocks: the block's index and the
/// pages asked for.
pub(crate) fn requested_pages(
    blocks: &[Arc<dyn GuestRam>],
    page_size: usize,
    block: &str,
    start: u64,
    len: u64,
) -> Result<(usize, std::ops::Range<usize>)> {
    let bi = blocks
        .iter()
        .position(|b| b.name() == block)
        .ok_or_else(|| {
            Error::invalid(
                "page request",
                format!("the destination asked for pages of unknown RAM block '{block}'"),
            )
        })?;
    let b = &blocks[bi];
    let ps = page_size as u64;
    if start % ps != 0 || len == 0 || start.checked_add(len).is_none_or(|end| end > b.len()) {
        return Err(Error::invalid(
            "page request",
            format!(
                "0x{len:x} bytes at 0x{start:x} of block '{block}' (0x{:x} bytes, pages of 0x{ps:x})",
                b.len()
            ),
        ));
    }
    let first = (start / ps) as usize;
    Ok((bi, first..first + len.div_ceil(ps) as usize))
}

/// Postcopy (destination): places a page record read after `POSTCOPY_LISTEN`, on
/// the main stream or a side channel (`r` is just past its header; a PAGE's data
/// follows). Only a page still missing is placed: one that is here already (a request
/// crossed it) is dropped, as QEMU's `UFFDIO_COPY` refuses to overwrite a present page.
pub(crate) fn place_postcopy_page(
    block: &dyn GuestRam,
    page_size: usize,
    stats: &RamStats,
    incoming: &PostcopyIncoming,
    r: &mut crate::wire::Reader<'_>,
    page: usize,
    zero: bool,
) -> Result<()> {
    // Checked and placed under the lock, the page's bytes already read (a read may
    // wait for the network).
    let place = |data: Option<&[u8]>| {
        let _placing = incoming.placing.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = block.page_missing(page);
        match data {
            _ if !fresh => {}
            Some(data) => block.load_page(page, data),
            None => block.zero_page(page),
        }
        fresh
    };
    let fresh = if zero {
        place(None)
    } else {
        r.with_bytes(page_size, |data| place(Some(data)))?
    };
    incoming.placed(block, page, fresh);
    let counter = if zero {
        &stats.zero_pages
    } else {
        &stats.normal_pages
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The [`PageFetcher`] of a block attached to [`PostcopyIncoming`].
struct Fetcher(Arc<PostcopyIncoming>);

impl PageFetcher for Fetcher {
    fn fetch(&self, block: &super::RamBlock, first: usize, count: usize) -> Result<usize> {
        // With a preempt channel, only the page touched, as QEMU asks: more would queue
        // there ahead of the next fault's page (the background stream brings the rest).
        let count = if self.0.has_side_channel() { 1 } else { count };
        self.0.request(block, first, count)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_payloads_are_checked_as_qemu_checks_them() {
        let good = encode_discard("ram", &[(0, 4096), (8192, 4096)]);
        assert_eq!(
            &good[..6],
            &[0, 3, b'r', b'a', b'm', 0],
            "version, length, name, NUL"
        );
        assert_eq!(good.len(), 6 + 32);
        let mut wrong_version = good.clone();
        wrong_version[0] = 1;
        let mut no_nul = good.clone();
        no_nul[5] = b'x';
        for bad in [
            &wrong_version[..],
            &no_nul[..],
            &good[..good.len() - 1],
            &good[..4],
            &[][..],
        ] {
            assert!(decode_discard(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn advise_is_empty_or_two_words() {
        assert_eq!(decode_advise(&[]).unwrap(), None);
        assert_eq!(
            decode_advise(&encode_advise(0x1000, 0x1000)).unwrap(),
            Some((0x1000, 0x1000))
        );
        assert!(decode_advise(&[0; 8]).is_err());
    }

    #[test]
    fn req_pages_needs_a_block_named_first() {
        let q = PageRequests::default();
        assert!(q.push(Some("ram"), 0, 4096).is_err(), "before the switch");
        q.accept(true);
        assert!(q.push(None, 0, 4096).is_err());
        q.push(Some("ram"), 0, 4096).unwrap();
        q.push(None, 4096, 4096).unwrap();
        assert_eq!(q.pop().unwrap().block, "ram");
        assert!(q.has_pending());
        assert_eq!(q.pop().unwrap().start, 4096);
        assert!(!q.has_pending());
    }
}
