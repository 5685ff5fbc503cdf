//! The `ram` iterative handler in QEMU's wire format (section `ram`, version 4;
//! spec section 5).
//!
//! Setup sends the block list (MEM_SIZE record) and marks every page dirty. Each round
//! scans the dirty bitmaps from where the last round stopped and sends dirty pages as
//! ZERO or PAGE records until the byte budget is spent or [`MAX_ROUND_TIME`] has
//! passed; a round that scans every page and finds nothing dirty reports `Done`. Completion sends every page still dirty.
//! Each payload ends with EOS. A record names its block unless it is the block of the
//! previous record on this stream (CONTINUE), across section boundaries too.
//!
//! With XBZRLE ([`RamHandler::with_xbzrle`]) a page that was sent before and is still
//! in the sender's cache goes out as an XBZRLE record holding only its changed bytes,
//! or not at all when nothing changed; the cache is filled from the first pass on.
//! The loader applies XBZRLE records to the page it holds, whatever the sender's
//! settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{CONTINUE, EOS, MEM_SIZE, MULTIFD_FLUSH, PAGE, XBZRLE, ZERO};
use super::guest_ram::GuestRam;
use super::page_cache::PageCache;
use super::postcopy::{PageRequests, PostcopyIncoming};
use super::records::{BlockEntry, BlockRef, RamRecord, RamRecordReader};
use super::xbzrle;
use super::zero::is_zero;
use crate::error::{Error, Result};
use crate::handler::{IterationStatus, IterativeHandler, Pending, Phase};
use crate::wire::{Reader, Writer};

/// The section version QEMU uses for RAM.
pub const RAM_VERSION: u32 = 4;

/// How long one round may take whatever its byte budget (QEMU's `MAX_WAIT` in
/// `ram_save_iterate`): rounds where each page costs more time than bytes (XBZRLE)
/// still come back to the driver often enough to decide and to throttle.
pub const MAX_ROUND_TIME: std::time::Duration = std::time::Duration::from_millis(50);

/// Counters of the RAM handler, readable from other threads while a migration runs
/// (QEMU's `query-migrate` `ram` object).
#[derive(Debug, Default)]
pub struct RamStats {
    /// Pages sent (or received) with their contents (QEMU's `normal`).
    pub normal_pages: AtomicU64,
    /// Zero pages sent (or received) as 9-byte records (QEMU's `duplicate`).
    pub zero_pages: AtomicU64,
    /// Completed passes over all dirty bitmaps that sent something, the first one
    /// always (QEMU's `dirty-sync-count`, roughly). Also the XBZRLE cache's clock.
    pub passes: AtomicU64,
    /// Pages found dirty again after they had been sent (for the dirty rate).
    pub redirtied_pages: AtomicU64,
    /// The target page size.
    pub page_size: AtomicU64,
    /// XBZRLE records sent (or received) (QEMU's `xbzrle-cache.pages`).
    pub xbzrle_pages: AtomicU64,
    /// Stream bytes of those records, headers included (QEMU's `xbzrle-cache.bytes`).
    pub xbzrle_bytes: AtomicU64,
    /// Dirty pages found unchanged against the cache, so not sent at all.
    pub xbzrle_unchanged: AtomicU64,
    /// Dirty pages found in the cache.
    pub xbzrle_cache_hits: AtomicU64,
    /// Dirty pages not in the cache (sent whole; QEMU's `cache-miss`).
    pub xbzrle_cache_misses: AtomicU64,
    /// Pages whose encoding would not fit a page (sent whole; QEMU's `overflow`).
    pub xbzrle_overflows: AtomicU64,
    /// The cache's size in bytes (0: XBZRLE off).
    pub xbzrle_cache_size: AtomicU64,
    /// Bytes written to the multifd channels (QEMU's `multifd-bytes`).
    pub multifd_bytes: AtomicU64,
    /// Bytes written to the postcopy-preempt channel.
    pub preempt_bytes: AtomicU64,
}

/// A snapshot of [`RamStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RamCounters {
    /// Pages sent with contents.
    pub normal_pages: u64,
    /// Zero pages.
    pub zero_pages: u64,
    /// Completed passes.
    pub passes: u64,
    /// Pages dirtied again after being sent.
    pub redirtied_pages: u64,
    /// The target page size.
    pub page_size: u64,
    /// XBZRLE records.
    pub xbzrle_pages: u64,
    /// Stream bytes of XBZRLE records.
    pub xbzrle_bytes: u64,
    /// Dirty pages not sent because they equal the cached copy.
    pub xbzrle_unchanged: u64,
    /// XBZRLE cache hits.
    pub xbzrle_cache_hits: u64,
    /// XBZRLE cache misses.
    pub xbzrle_cache_misses: u64,
    /// Encodings that did not fit a page.
    pub xbzrle_overflows: u64,
    /// The XBZRLE cache's size in bytes (0: XBZRLE off).
    pub xbzrle_cache_size: u64,
    /// Bytes written to the multifd channels.
    pub multifd_bytes: u64,
    /// Bytes written to the postcopy-preempt channel.
    pub preempt_bytes: u64,
}

impl RamCounters {
    /// Bytes of guest RAM dealt with (pages sent whole, as zero pages, as XBZRLE
    /// records, or found unchanged), at page size each.
    pub fn pages_bytes(&self) -> u64 {
        (self.normal_pages + self.zero_pages + self.xbzrle_pages + self.xbzrle_unchanged)
            * self.page_size
    }

    /// Pages dealt with that hold data: all of [`pages_bytes`](Self::pages_bytes)'s
    /// but the zero pages.
    pub fn data_pages(&self) -> u64 {
        self.normal_pages + self.xbzrle_pages + self.xbzrle_unchanged
    }

    /// Page bytes that XBZRLE records stood for, per stream byte they took (QEMU's
    /// `encoding-rate`); 0 before the first record.
    pub fn xbzrle_encoding_rate(&self) -> f64 {
        match self.xbzrle_bytes {
            0 => 0.0,
            b => (self.xbzrle_pages * self.page_size) as f64 / b as f64,
        }
    }

    /// Stream bytes XBZRLE saved: the whole pages the records and the unchanged pages
    /// would have taken, minus what the records took.
    pub fn xbzrle_bytes_saved(&self) -> u64 {
        ((self.xbzrle_pages + self.xbzrle_unchanged) * self.page_size)
            .saturating_sub(self.xbzrle_bytes)
    }

    /// The share of cache lookups that missed (QEMU's `cache-miss-rate`).
    pub fn xbzrle_cache_miss_rate(&self) -> f64 {
        match self.xbzrle_cache_hits + self.xbzrle_cache_misses {
            0 => 0.0,
            n => self.xbzrle_cache_misses as f64 / n as f64,
        }
    }
}

impl RamStats {
    /// The current values.
    pub fn get(&self) -> RamCounters {
        RamCounters {
            normal_pages: self.normal_pages.load(Ordering::Relaxed),
            zero_pages: self.zero_pages.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            redirtied_pages: self.redirtied_pages.load(Ordering::Relaxed),
            page_size: self.page_size.load(Ordering::Relaxed),
            xbzrle_pages: self.xbzrle_pages.load(Ordering::Relaxed),
            xbzrle_bytes: self.xbzrle_bytes.load(Ordering::Relaxed),
            xbzrle_unchanged: self.xbzrle_unchanged.load(Ordering::Relaxed),
            xbzrle_cache_hits: self.xbzrle_cache_hits.load(Ordering::Relaxed),
            xbzrle_cache_misses: self.xbzrle_cache_misses.load(Ordering::Relaxed),
            xbzrle_overflows: self.xbzrle_overflows.load(Ordering::Relaxed),
            xbzrle_cache_size: self.xbzrle_cache_size.load(Ordering::Relaxed),
            multifd_bytes: self.multifd_bytes.load(Ordering::Relaxed),
            preempt_bytes: self.preempt_bytes.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for c in [
            &self.normal_pages,
            &self.zero_pages,
            &self.passes,
            &self.redirtied_pages,
            &self.xbzrle_pages,
            &self.xbzrle_bytes,
            &self.xbzrle_unchanged,
            &self.xbzrle_cache_hits,
            &self.xbzrle_cache_misses,
            &self.xbzrle_overflows,
            &self.multifd_bytes,
            &self.preempt_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Guest RAM as an iterative handler. Register it as `("ram", RAM_VERSION)`.
///
/// ```
/// use std::sync::Arc;
/// use vmstate::ram::{RamBlock, RamHandler, RAM_VERSION};
/// use vmstate::{Registration, Registry};
///
/// let ram = Arc::new(RamBlock::new("pc.ram", 16 << 20).unwrap());
/// let mut reg = Registry::new();
/// reg.register_iterative("ram", RAM_VERSION, RamHandler::new(vec![ram.clone()]).unwrap(),
///                        Registration::new()).unwrap();
/// ```
pub struct RamHandler {
    blocks: Vec<Arc<dyn GuestRam>>,
    page_size: usize,
    stats: Arc<RamStats>,
    /// Block of the last record sent on this stream (for CONTINUE).
    last_sent: Option<usize>,
    /// Scan position: block index and bitmap word index.
    cursor: (usize, usize),
    /// Whether setup ran (pages dirtied again are counted only after the first pass).
    first_pass_done: bool,
    /// Whether a page went out since the scan last wrapped around.
    sent_since_wrap: bool,
    /// Block of the last record received (for CONTINUE on load).
    last_loaded: Option<usize>,
    /// The record reader of the current load (CONTINUE spans sections).
    records: RamRecordReader,
    /// XBZRLE's sender state, when it is on.
    xbzrle: Option<XbzrleSender>,
    /// Completion is running (QEMU's last stage: the XBZRLE cache is no longer
    /// updated).
    last_stage: bool,
    /// What a multifd flush record waits for on load (the channels' SYNC packets).
    multifd_flush: Option<crate::multifd::recv::FlushHook>,
    /// The running multifd channels (source side).
    multifd: Option<crate::multifd::send::MultifdSender>,
    /// Pages went to the channels since their last sync.
    multifd_unsynced: bool,
    /// QEMU's `mapped-ram` file layout (see [`with_mapped_ram`](Self::with_mapped_ram)).
    mapped_ram: bool,
    /// Mapped-ram loads leave the pages in the file, fetched on first touch.
    lazy: bool,
    /// Source: the destination's page requests (postcopy), served first.
    requests: Arc<PageRequests>,
    /// Source: the switch to postcopy happened.
    in_postcopy: bool,
    /// Destination: the source advised postcopy; pages not here are asked for.
    incoming: Option<Arc<PostcopyIncoming>>,
    /// Destination: pages discarded so far (a source discards each page at most once).
    discarded: u64,
    /// Source: opens the postcopy-preempt channel at the switch.
    preempt_opener: Option<super::preempt::PreemptOpener>,
    /// Destination: takes the postcopy-preempt channel when postcopy is advised.
    preempt_acceptor: Option<super::preempt::PreemptAcceptor>,
}

/// How a page went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// A PAGE record.
    Full,
    /// A ZERO record.
    Zero,
    /// An XBZRLE record.
    Delta,
    /// Nothing: it equals the copy the destination holds.
    Unchanged,
}

/// XBZRLE on the sending side: the cache and two page-sized buffers.
struct XbzrleSender {
    cache: PageCache,
    /// The page being sent, copied once (the guest may change it meanwhile: what the
    /// cache keeps must be exactly what went out).
    page: Vec<u8>,
    encoded: Vec<u8>,
    /// The number, across all blocks, of each block's first page (cache keys).
    first_page: Vec<u64>,
}

impl RamHandler {
    /// A handler over `blocks`, in RAM list order. All blocks must share a page size.
    pub fn new<B: GuestRam + 'static>(blocks: Vec<Arc<B>>) -> Result<Self> {
        Self::from_blocks(blocks.into_iter().map(|b| b as Arc<dyn GuestRam>).collect())
    }

    /// A handler over blocks of different kinds (e.g. [`RamBlock`](super::RamBlock)s
    /// and vm-memory regions).
    pub fn from_blocks(blocks: Vec<Arc<dyn GuestRam>>) -> Result<Self> {
        let page_size = blocks
            .first()
            .map_or(super::block::DEFAULT_PAGE_SIZE, |b| b.page_size());
        if let Some(b) = blocks.iter().find(|b| b.page_size() != page_size) {
            return Err(Error::invalid(
                "RAM blocks",
                format!(
                    "block '{}' has page size {}, others {page_size}",
                    b.name(),
                    b.page_size()
                ),
            ));
        }
        for (i, b) in blocks.iter().enumerate() {
            if blocks[..i].iter().any(|o| o.name() == b.name()) {
                return Err(Error::invalid(
                    "RAM blocks",
                    format!("two blocks named '{}'", b.name()),
                ));
            }
        }
        let stats = Arc::new(RamStats::default());
        stats.page_size.store(page_size as u64, Ordering::Relaxed);
        Ok(RamHandler {
            blocks,
            page_size,
            stats,
            last_sent: None,
            cursor: (0, 0),
            first_pass_done: false,
            sent_since_wrap: false,
            last_loaded: None,
            records: RamRecordReader::new(page_size as u64),
            xbzrle: None,
            last_stage: false,
            multifd_flush: None,
            multifd: None,
            multifd_unsynced: false,
            mapped_ram: false,
            lazy: false,
            requests: PageRequests::new(),
            in_postcopy: false,
            incoming: None,
            discarded: 0,
            preempt_opener: None,
            preempt_acceptor: None,
        })
    }

    /// Source: sends requested pages on a postcopy-preempt channel (QEMU's
    /// `postcopy-preempt` capability, which the destination must have too): `open`
    /// connects it just before the switch to postcopy, with the guest still running
    /// ([`SaveSession::prepare_postcopy`](crate::stream::SaveSession::prepare_postcopy);
    /// `migrate_over` calls it), and the return path's thread then writes each
    /// request's pages on it the moment the request arrives, ahead of whatever the main
    /// stream has queued. The channel is closed once the destination says `SHUT`.
    /// Serves one migration. Not over TLS yet: a destination of this crate takes the
    /// channel only at `POSTCOPY_LISTEN`.
    pub fn with_postcopy_preempt(mut self, open: super::preempt::PreemptOpener) -> Self {
        self.preempt_opener = Some(open);
        self
    }

    /// Destination: reads requested pages from a postcopy-preempt channel too (QEMU's
    /// `postcopy-preempt` capability, which the source must have too): when the source
    /// advises postcopy, a thread takes the channel with `accept` (the connection the
    /// source opens after the main one) and places the pages it brings. Serves one
    /// migration.
    pub fn with_postcopy_preempt_incoming(
        mut self,
        accept: super::preempt::PreemptAcceptor,
    ) -> Self {
        self.preempt_acceptor = Some(accept);
        self
    }

    /// Sends pages on multifd channels, one per writer (QEMU's `multifd` capability
    /// with as many `multifd-channels`, no compression): each writer is a connection
    /// to the destination opened after the main one. The main stream carries the
    /// block list and, at the end of every pass over RAM, a `MULTIFD_FLUSH` record
    /// matched by a SYNC packet on every channel; the channels carry the pages, zero
    /// pages as offsets. Cannot be combined with XBZRLE (QEMU refuses it too), and
    /// serves one migration: the connections are used up.
    ///
    /// The channels' threads start here and write their handshakes at once, so that a
    /// destination telling its connections apart sees them before the main stream
    /// needs an answer.
    pub fn with_multifd_channels(self, writers: Vec<crate::multifd::send::ChannelWriter>) -> Self {
        self.with_multifd(writers, crate::multifd::compress::Compression::None)
            .expect("no compression has no level to refuse")
    }

    /// [`with_multifd_channels`](Self::with_multifd_channels) with each channel's page
    /// data compressed (QEMU's `multifd-compression` zlib or zstd with its level): one
    /// stream per channel for the whole migration, flushed at every packet's end, as
    /// QEMU writes it, so a QEMU 10 destination set to the same method loads it.
    /// Refuses a level outside QEMU's range.
    pub fn with_multifd(
        self,
        writers: Vec<crate::multifd::send::ChannelWriter>,
        compression: crate::multifd::compress::Compression,
    ) -> Result<Self> {
        let openers = writers
            .into_iter()
            .map(|w| Box::new(move || Ok(w)) as crate::multifd::send::ChannelOpener)
            .collect();
        self.with_multifd_connecting(openers, compression)
    }

    /// [`with_multifd`](Self::with_multifd) with each channel's connection opened by
    /// its opener in the channel's own thread, while the main stream starts. Needed
    /// with TLS towards a QEMU destination: QEMU reads the main stream's first bytes
    /// before it answers the channels' TLS handshakes, so channels connected one by
    /// one before the main stream starts would wait for each other. Open the main
    /// connection first: a destination under TLS takes the first connection for the
    /// main stream. A failed opener fails the migration at the next batch of pages
    /// or sync, naming the channel.
    pub fn with_multifd_connecting(
        mut self,
        openers: Vec<crate::multifd::send::ChannelOpener>,
        compression: crate::multifd::compress::Compression,
    ) -> Result<Self> {
        compression.check()?;
        self.multifd = Some(crate::multifd::send::MultifdSender::start(
            openers,
            self.page_size,
            self.stats.clone(),
            compression,
        ));
        Ok(self)
    }

    /// Saves and loads in QEMU's `mapped-ram` file layout ([`super::mapped_ram`]):
    /// each block's pages at fixed, 1 MiB-aligned file offsets after its entry in the
    /// setup section, zero pages left as holes, a bitmap of the pages present. Both
    /// sides must also list the `mapped-ram` capability (`StreamConfig`'s
    /// configuration and `LoadOptions::capabilities`), as in QEMU.
    ///
    /// Saving writes every page in setup, so the guest must be stopped (a snapshot); a
    /// page dirtied afterwards fails the save (QEMU's live file migration rewrites it
    /// in place; that is not supported here). Holes need a
    /// [`Writer::to_fd`](crate::Writer::to_fd) writer on a file; other writers get
    /// zeros. Loading reads the file front to back (QEMU's files have this layout):
    /// pages present are placed, the others zeroed.
    pub fn with_mapped_ram(mut self) -> Self {
        self.mapped_ram = true;
        self
    }

    /// [`with_mapped_ram`](Self::with_mapped_ram) whose loads are lazy: a block's
    /// header and bitmap are read, its pages stay in the file and come in on first
    /// touch ([`RamBlock::fetch_on_demand`](super::RamBlock::fetch_on_demand)), so the
    /// guest can run before its memory is read. Load with
    /// [`load_file`](crate::stream::load_file) (the pages are read from that file
    /// later: keep it in place); the blocks must be [`RamBlock`](super::RamBlock)s, and
    /// every guest access must go through their API (a KVM vCPU touching the mapping
    /// directly would see zeros: such guests need userfaultfd). Watch
    /// [`RamBlock::missing_pages`](super::RamBlock::missing_pages); call
    /// [`RamBlock::fetch_all`](super::RamBlock::fetch_all) in a thread to fetch the
    /// rest in the background.
    pub fn with_lazy_restore(mut self) -> Self {
        self.mapped_ram = true;
        self.lazy = true;
        self
    }

    /// On load, waits at each `RAM_SAVE_FLAG_MULTIFD_FLUSH` record with `hook` (a
    /// [`MultifdReceiver`](crate::multifd::recv::MultifdReceiver)'s, which returns
    /// once every channel has reached its SYNC packet). Without one, flush records are
    /// passed over.
    pub fn with_multifd_flush(mut self, hook: crate::multifd::recv::FlushHook) -> Self {
        self.multifd_flush = Some(hook);
        self
    }

    /// Sends pages that were sent before as XBZRLE deltas against a cache of
    /// `cache_bytes` (QEMU's `xbzrle` capability and `xbzrle-cache-size`, 64 MiB by
    /// default there). Pages whose copy is in the cache and changed go out as their
    /// changed bytes; unchanged ones are not sent again. Pay for it with the cache's
    /// memory and one copy and comparison per page; it pays off when a guest rewrites
    /// a few bytes of many pages.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vmstate::ram::{RamBlock, RamHandler};
    ///
    /// let ram = Arc::new(RamBlock::new("pc.ram", 16 << 20).unwrap());
    /// let handler = RamHandler::new(vec![ram]).unwrap().with_xbzrle(64 << 20);
    /// assert_eq!(handler.stats().get().xbzrle_cache_size, 16 << 20); // no larger than RAM
    /// ```
    pub fn with_xbzrle(mut self, cache_bytes: u64) -> Self {
        let mut first_page = Vec::new();
        let mut pages = 0;
        for b in &self.blocks {
            first_page.push(pages);
            pages += b.len() / self.page_size as u64;
        }
        // A cache larger than RAM would only hold slots no page maps to.
        let bytes = cache_bytes.min(pages.max(1).next_power_of_two() * self.page_size as u64);
        let cache = PageCache::new(bytes, self.page_size);
        self.stats
            .xbzrle_cache_size
            .store(cache.size(), Ordering::Relaxed);
        self.xbzrle = Some(XbzrleSender {
            cache,
            page: vec![0; self.page_size],
            encoded: Vec::with_capacity(self.page_size),
            first_page,
        });
        self
    }

    /// The blocks.
    pub fn blocks(&self) -> &[Arc<dyn GuestRam>] {
        &self.blocks
    }

    /// Merges every block's external dirty log into its migration bitmap.
    fn sync_dirty(&self) {
        for b in &self.blocks {
            b.sync_dirty();
        }
    }

    /// The counters, shared (clone the `Arc` to read them from another thread).
    pub fn stats(&self) -> Arc<RamStats> {
        self.stats.clone()
    }

    /// Total bytes of RAM.
    pub fn total_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.len()).sum()
    }

    fn dirty_pages(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| b.migration_bitmap().count())
            .sum()
    }

    /// Writes one page record, ZERO or PAGE, for `page` of block `bi`; returns true for
    /// a full page. A block that can tell a zero page without copying it (a
    /// [`RamBlock`](super::RamBlock)) says so first, and a non-zero page is handed to
    /// the writer in place (sent from guest memory by a descriptor writer, appended to
    /// the buffer by others); a page of other memory is copied straight into the
    /// stream buffer and, if it turns out zero, rewritten as a ZERO record.
    #[inline]
    fn send_page(&mut self, w: &mut Writer<'_>, bi: usize, page: usize) -> Result<Sent> {
        if self.xbzrle.is_some() && !self.in_postcopy {
            return self.send_page_xbzrle(w, bi, page);
        }
        let block = &self.blocks[bi];
        let offset = (page * self.page_size) as u64;
        let cont = if self.last_sent == Some(bi) {
            CONTINUE
        } else {
            0
        };
        self.last_sent = Some(bi);
        let start = w.position();
        let known_zero = block.page_is_zero(page);
        if known_zero == Some(false) {
            if let Some(pages) = block.page_in_place(page) {
                w.put_be64(offset | PAGE | cont);
                if cont == 0 {
                    w.put_counted_str(block.name())?;
                }
                w.put_guest_pages(pages);
                return Ok(Sent::Full);
            }
        }
        if known_zero != Some(true) {
            w.put_be64(offset | PAGE | cont);
            if cont == 0 {
                w.put_counted_str(block.name())?;
            }
            let slot = w.put_slot(self.page_size);
            block.copy_page(page, slot);
            if known_zero == Some(false) || !is_zero(slot) {
                return Ok(Sent::Full);
            }
            let rewound = w.rewind_to(start);
            debug_assert!(rewound, "no flush happens inside a record");
        }
        self.put_zero(w, bi, offset, cont)
    }

    /// The record header for `page` of block `bi` with `flags`, naming the block unless
    /// it is the previous record's.
    fn put_header(&mut self, w: &mut Writer<'_>, bi: usize, page: usize, flags: u64) -> Result<()> {
        let cont = if self.last_sent == Some(bi) {
            CONTINUE
        } else {
            0
        };
        self.last_sent = Some(bi);
        w.put_be64((page * self.page_size) as u64 | flags | cont);
        if cont == 0 {
            w.put_counted_str(self.blocks[bi].name())?;
        }
        Ok(())
    }

    fn put_zero(&self, w: &mut Writer<'_>, bi: usize, offset: u64, cont: u64) -> Result<Sent> {
        w.put_be64(offset | ZERO | cont);
        if cont == 0 {
            w.put_counted_str(self.blocks[bi].name())?;
        }
        w.put_u8(0);
        Ok(Sent::Zero)
    }

    /// [`send_page`](Self::send_page) with XBZRLE on (QEMU's `save_xbzrle_page`): the
    /// page is copied once; a zero page goes out as such and leaves the cache; a page
    /// in the cache goes out as its changes (or not at all, unchanged), and one that is
    /// not is sent whole and cached. In completion the cache is left as it is.
    fn send_page_xbzrle(&mut self, w: &mut Writer<'_>, bi: usize, page: usize) -> Result<Sent> {
        let x = self.xbzrle.as_mut().expect("XBZRLE is on");
        let key = x.first_page[bi] + page as u64;
        let block = &self.blocks[bi];
        if block.page_is_zero(page) != Some(true) {
            block.copy_page(page, &mut x.page);
        }
        if block.page_is_zero(page) == Some(true) || is_zero(&x.page) {
            x.cache.forget(key);
            self.put_header(w, bi, page, ZERO)?;
            w.put_u8(0);
            return Ok(Sent::Zero);
        }
        let age = self.stats.passes.load(Ordering::Relaxed);
        let update = !self.last_stage;
        let stats = &self.stats;
        let sent = match x.cache.get_mut(key, age) {
            None => {
                stats.xbzrle_cache_misses.fetch_add(1, Ordering::Relaxed);
                if update {
                    x.cache.insert(key, age, &x.page);
                }
                Sent::Full
            }
            Some(cached) => {
                stats.xbzrle_cache_hits.fetch_add(1, Ordering::Relaxed);
                x.encoded.clear();
                let encoded = xbzrle::encode(cached, &x.page, &mut x.encoded, self.page_size);
                match encoded {
                    // The changed runs are all that differ: write only them.
                    Some(n) if update && n > 0 => {
                        xbzrle::decode(&x.encoded, self.page_size, |at, bytes| {
                            cached[at..at + bytes.len()].copy_from_slice(bytes)
                        })
                        .expect("an encoding just made decodes");
                    }
                    None if update => cached.copy_from_slice(&x.page),
                    _ => {}
                }
                match encoded {
                    Some(0) => return Ok(Sent::Unchanged),
                    Some(_) => Sent::Delta,
                    None => {
                        stats.xbzrle_overflows.fetch_add(1, Ordering::Relaxed);
                        Sent::Full
                    }
                }
            }
        };
        let start = w.position();
        if sent == Sent::Delta {
            self.put_header(w, bi, page, XBZRLE)?;
            let x = self.xbzrle.as_ref().expect("XBZRLE is on");
            w.put_u8(xbzrle::ENCODING_FLAG);
            w.put_be16(x.encoded.len() as u16);
            w.put_bytes(&x.encoded);
            self.stats
                .xbzrle_bytes
                .fetch_add(w.position() - start, Ordering::Relaxed);
        } else {
            self.put_header(w, bi, page, PAGE)?;
            let x = self.xbzrle.as_ref().expect("XBZRLE is on");
            w.put_bytes(&x.page);
        }
        Ok(sent)
    }

    /// Sends the pages whose bits are set in `bits` (word `wi` of block `bi`), stopping
    /// once the stream reaches `limit`; returns the bits not sent. Counts the pages and
    /// lets the writer flush (at most 64 pages are buffered in between).
    fn send_word(
        &mut self,
        w: &mut Writer<'_>,
        bi: usize,
        wi: usize,
        mut bits: u64,
        limit: u64,
    ) -> Result<u64> {
        let mut count = [0u64; 4]; // by `Sent`, in declaration order
        while bits != 0 && w.position() < limit {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            count[self.send_page(w, bi, wi * 64 + bit)? as usize] += 1;
        }
        let [full, zero, delta, unchanged] = count;
        self.sent_since_wrap |= count.iter().any(|&n| n > 0);
        let s = &self.stats;
        s.normal_pages.fetch_add(full, Ordering::Relaxed);
        s.zero_pages.fetch_add(zero, Ordering::Relaxed);
        s.xbzrle_pages.fetch_add(delta, Ordering::Relaxed);
        s.xbzrle_unchanged.fetch_add(unchanged, Ordering::Relaxed);
        if self.first_pass_done {
            s.redirtied_pages
                .fetch_add(count.iter().sum(), Ordering::Relaxed);
        }
        w.flush_if_full()?;
        Ok(bits)
    }

    /// The first block at or after `from` (wrapping around) that has pages.
    fn next_block_with_pages(&self, from: usize) -> usize {
        let n = self.blocks.len();
        (0..n)
            .map(|k| (from + k) % n.max(1))
            .find(|&i| self.blocks[i].migration_bitmap().words() > 0)
            .unwrap_or(0)
    }

    /// Moves the scan to the next bitmap word, skipping blocks without pages; wrapping
    /// past the last block ends a pass.
    /// Returns true when the scan wrapped around (a pass ended).
    fn advance_cursor(&mut self) -> bool {
        let (bi, wi) = self.cursor;
        if wi + 1 < self.blocks[bi].migration_bitmap().words() {
            self.cursor = (bi, wi + 1);
            return false;
        }
        let next = self.next_block_with_pages(bi + 1);
        let wrapped = next <= bi;
        if wrapped {
            // A wrap after a scan that found nothing is not another pass.
            if self.sent_since_wrap || !self.first_pass_done {
                self.stats.passes.fetch_add(1, Ordering::Relaxed);
            }
            self.sent_since_wrap = false;
            self.first_pass_done = true;
        }
        self.cursor = (next, 0);
        wrapped
    }

    /// Multifd: every channel sends a SYNC packet and the main stream a flush record,
    /// pushed out at once (the destination's channels wait at their SYNC until its
    /// main stream reads the record).
    fn multifd_sync(&mut self, w: &mut Writer<'_>) -> Result<()> {
        if let Some(m) = &mut self.multifd {
            m.sync()?;
            w.put_be64(MULTIFD_FLUSH);
            w.flush()?;
            self.multifd_unsynced = false;
        }
        Ok(())
    }

    /// Multifd: hands the dirty pages of word `wi` of block `bi` to the channels, in
    /// packets of one block.
    fn dispatch_word(&mut self, bi: usize, wi: usize, mut bits: u64) -> Result<u64> {
        let m = self.multifd.as_mut().expect("multifd is on");
        let mut batch = Vec::with_capacity(64);
        let mut count = 0;
        while bits != 0 {
            batch.push(wi * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
            count += 1;
        }
        for chunk in batch.chunks(m.batch()) {
            m.send_pages(self.blocks[bi].clone(), chunk.to_vec())?;
        }
        self.sent_since_wrap |= count > 0;
        self.multifd_unsynced |= count > 0;
        if self.first_pass_done {
            self.stats
                .redirtied_pages
                .fetch_add(count, Ordering::Relaxed);
        }
        Ok(count)
    }

    /// The block a page record is for.
    fn block_for(&mut self, block: &BlockRef) -> Result<usize> {
        let bi = match block {
            // The record reader refuses CONTINUE before any named record.
            BlockRef::Same => self.last_loaded.unwrap_or(0),
            BlockRef::Named(name) => self
                .blocks
                .iter()
                .position(|b| b.name() == name)
                .ok_or_else(|| {
                    Error::invalid("RAM block", format!("unknown RAM block '{name}'"))
                })?,
        };
        self.last_loaded = Some(bi);
        Ok(bi)
    }

    /// Checks one block list entry against the local block of that name.
    fn check_block_entry(&self, entry: &BlockEntry) -> Result<()> {
        let name = &entry.name;
        let block = self
            .blocks
            .iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                Error::invalid("RAM block list", format!("unknown RAM block '{name}'"))
            })?;
        if block.len() != entry.used_length {
            return Err(Error::invalid(
                "RAM block list",
                format!(
                    "block '{name}' is 0x{:x} bytes in the stream and 0x{:x} here (resizing is not supported)",
                    entry.used_length,
                    block.len()
                ),
            ));
        }
        Ok(())
    }

    /// Mapped-ram saving: fails if a page was written since setup wrote them all.
    fn check_nothing_dirtied(&self) -> Result<()> {
        match self
            .blocks
            .iter()
            .find(|b| b.migration_bitmap().count() > 0)
        {
            Some(b) => Err(Error::invalid(
                "RAM handler",
                format!(
                    "block '{}' was written after its pages went into the mapped-ram file: \
                     stop the guest before saving in that layout",
                    b.name()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Mapped-ram loading: the block's header, bitmap and pages after its entry.
    fn load_mapped_block(&self, entry: &BlockEntry, r: &mut Reader<'_>) -> Result<()> {
        let block = self
            .blocks
            .iter()
            .find(|b| b.name() == entry.name)
            .expect("the entry was checked");
        let named = |e: Error| Error::invalid("mapped-ram block", format!("'{}': {e}", entry.name));
        if self.lazy {
            return super::mapped_ram::load_block_lazily(r, block.as_ref()).map_err(named);
        }
        let (data, zero) = super::mapped_ram::load_block(r, block.as_ref()).map_err(named)?;
        self.stats.normal_pages.fetch_add(data, Ordering::Relaxed);
        self.stats.zero_pages.fetch_add(zero, Ordering::Relaxed);
        Ok(())
    }

    /// Postcopy (source): sends the pages of every queued request that are still to
    /// be sent (the others went out already), then pushes them out at once.
    fn serve_requests(&mut self, w: &mut Writer<'_>) -> Result<()> {
        let mut served = Vec::new();
        while let Some(req) = self.requests.pop() {
            let (bi, pages) = super::postcopy::requested_pages(
                &self.blocks,
                self.page_size,
                &req.block,
                req.start,
                req.len,
            )?;
            let mut sent = 0;
            for page in pages {
                if self.blocks[bi].migration_bitmap().test_and_clear(page) {
                    let how = self.send_page(w, bi, page)?;
                    let counter = match how {
                        Sent::Zero => &self.stats.zero_pages,
                        _ => &self.stats.normal_pages,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                }
            }
            served.push((req, sent));
        }
        if !served.is_empty() {
            w.flush()?;
            for (req, sent) in &served {
                self.requests.served(req, *sent);
            }
        }
        Ok(())
    }

    fn check_page(&self, bi: usize, offset: u64, at: u64) -> Result<usize> {
        page_index(self.blocks[bi].as_ref(), self.page_size, offset, at)
    }
}

/// The page at `offset` of `block`, if the page lies inside it (`at`: the record's
/// stream offset, for the error).
pub(super) fn page_index(
    block: &dyn GuestRam,
    page_size: usize,
    offset: u64,
    at: u64,
) -> Result<usize> {
    if offset
        .checked_add(page_size as u64)
        .is_none_or(|end| end > block.len())
    {
        return Err(Error::invalid(
            "RAM page",
            format!(
                "offset 0x{offset:x} is outside block '{}' (0x{:x} bytes)",
                block.name(),
                block.len()
            ),
        )
        .at_offset(at));
    }
    Ok((offset / page_size as u64) as usize)
}

impl IterativeHandler for RamHandler {
    fn save_setup(&mut self, w: &mut Writer<'_>) -> Result<()> {
        self.requests.accept(false); // until this migration switches to postcopy
        while self.requests.pop().is_some() {}
        self.last_sent = None;
        self.last_stage = false;
        if let Some(x) = &mut self.xbzrle {
            // A new migration: nothing the destination holds is known yet.
            x.cache = PageCache::new(x.cache.size(), self.page_size);
        }
        self.cursor = (self.next_block_with_pages(0), 0);
        self.first_pass_done = false;
        self.sent_since_wrap = false;
        self.stats.reset();
        if self.multifd.is_some() && self.xbzrle.is_some() {
            return Err(Error::invalid(
                "RAM handler",
                "XBZRLE and multifd cannot be combined (QEMU refuses it too)",
            ));
        }
        if self.multifd.as_ref().is_some_and(|m| m.is_finished()) {
            return Err(Error::invalid(
                "RAM handler",
                "the multifd channels served a migration already: give new connections",
            ));
        }
        if self.mapped_ram && (self.multifd.is_some() || self.xbzrle.is_some()) {
            return Err(Error::invalid(
                "RAM handler",
                "mapped-ram is a file layout: not with XBZRLE or multifd channels here",
            ));
        }
        if self.mapped_ram {
            // Writes from before the save are in the pages; only later ones count.
            self.sync_dirty();
        }
        w.put_be64(self.total_bytes() | MEM_SIZE);
        for b in &self.blocks {
            w.put_counted_str(b.name())?;
            w.put_be64(b.len());
            if self.mapped_ram {
                let (data, zero) = super::mapped_ram::save_block(w, b.as_ref())?;
                self.stats.normal_pages.fetch_add(data, Ordering::Relaxed);
                self.stats.zero_pages.fetch_add(zero, Ordering::Relaxed);
                b.migration_bitmap().clear();
            } else {
                b.migration_bitmap().mark_all();
            }
        }
        self.sync_dirty(); // start from a clean external log
        self.multifd_sync(w)?;
        w.put_be64(EOS);
        Ok(())
    }

    fn pending(&mut self, exact: bool) -> Pending {
        if exact {
            self.sync_dirty();
        }
        Pending {
            must_precopy: self.dirty_pages() * self.page_size as u64,
            can_postcopy: 0,
        }
    }

    fn save_iterate(&mut self, w: &mut Writer<'_>, budget: u64) -> Result<IterationStatus> {
        self.sync_dirty();
        if self.mapped_ram {
            self.check_nothing_dirtied()?;
            w.put_be64(EOS);
            return Ok(IterationStatus::Done);
        }
        let start = w.position();
        let total_words: usize = self
            .blocks
            .iter()
            .map(|b| b.migration_bitmap().words())
            .sum();
        let mut clean_run = 0;
        let mut status = IterationStatus::Done;
        let limit = start.saturating_add(budget);
        let began = std::time::Instant::now();
        let mut words_sent = 0u32;
        let mut handed = 0u64;
        while clean_run < total_words {
            if self.in_postcopy && self.requests.has_pending() {
                self.serve_requests(w)?;
            }
            if w.position() >= limit || (words_sent % 16 == 15 && began.elapsed() >= MAX_ROUND_TIME)
            {
                status = IterationStatus::More;
                break;
            }
            let (bi, wi) = self.cursor;
            let dirty = self.blocks[bi].migration_bitmap();
            if dirty.peek_word(wi) == 0 {
                if self.advance_cursor() && self.multifd_unsynced {
                    self.multifd_sync(w)?;
                }
                clean_run += 1;
                continue;
            }
            let bits = dirty.take_word(wi);
            clean_run = 0;
            words_sent += 1;
            if self.multifd.is_some() {
                // The byte budget counts the pages handed to the channels.
                let pages = self.dispatch_word(bi, wi, bits)?;
                handed += pages * self.page_size as u64;
                if self.advance_cursor() && self.multifd_unsynced {
                    self.multifd_sync(w)?;
                }
                if w.position() + handed >= limit {
                    status = IterationStatus::More;
                    break;
                }
                continue;
            }
            // Stop at the budget page by page (as QEMU's rate limit does); the pages not
            // sent stay dirty, and the next round resumes at this word.
            let unsent = self.send_word(w, bi, wi, bits, limit)?;
            if unsent != 0 {
                self.blocks[bi].migration_bitmap().or_word(wi, unsent);
                status = IterationStatus::More;
                break;
            }
            if self.in_postcopy {
                // Little in flight ahead of the next requested page.
                w.flush()?;
            }
            self.advance_cursor();
        }
        if self.in_postcopy {
            self.serve_requests(w)?;
        }
        w.put_be64(EOS);
        Ok(status)
    }

    fn save_complete(&mut self, w: &mut Writer<'_>) -> Result<()> {
        self.last_stage = true;
        self.sync_dirty();
        if self.mapped_ram {
            self.check_nothing_dirtied()?;
            w.put_be64(EOS);
            return Ok(());
        }
        // Multifd: a sync first, so that no page goes out twice between two syncs (the
        // destination's channels would apply the two in any order).
        self.multifd_sync(w)?;
        for bi in 0..self.blocks.len() {
            for wi in 0..self.blocks[bi].migration_bitmap().words() {
                if self.blocks[bi].migration_bitmap().peek_word(wi) != 0 {
                    let bits = self.blocks[bi].migration_bitmap().take_word(wi);
                    if self.multifd.is_some() {
                        self.dispatch_word(bi, wi, bits)?;
                    } else {
                        self.send_word(w, bi, wi, bits, u64::MAX)?;
                    }
                }
            }
        }
        self.multifd_sync(w)?;
        if let Some(m) = &mut self.multifd {
            m.finish()?; // every channel has written everything
        }
        w.put_be64(EOS);
        Ok(())
    }

    fn has_postcopy(&self) -> bool {
        self.multifd.is_none() && !self.mapped_ram
    }

    fn postcopy_prepare(&mut self) -> Result<()> {
        if let Some(open) = self.preempt_opener.take() {
            let out = open().map_err(|e| e.in_record("postcopy preempt channel (connecting)"))?;
            self.requests
                .open_preempt(super::preempt::PreemptSender::new(
                    out,
                    self.blocks.clone(),
                    self.page_size,
                    self.stats.clone(),
                ));
        }
        Ok(())
    }

    fn postcopy_start(&mut self) -> Result<crate::ram::postcopy::Discards> {
        self.sync_dirty();
        self.in_postcopy = true;
        self.requests.accept(true);
        Ok(self
            .blocks
            .iter()
            .map(|b| {
                (
                    b.name().to_string(),
                    super::postcopy::dirty_ranges(b.as_ref()),
                )
            })
            .filter(|(_, ranges)| !ranges.is_empty())
            .collect())
    }

    fn page_requests(&self) -> Option<Arc<PageRequests>> {
        self.has_postcopy().then(|| self.requests.clone())
    }

    fn save_cleanup(&mut self) {
        // (The queue stays open: a request crossing the last pages is not an error.)
        self.in_postcopy = false;
        while self.requests.pop().is_some() {}
    }

    fn load_postcopy_advise(
        &mut self,
        incoming: &Arc<PostcopyIncoming>,
        page_sizes: Option<(u64, u64)>,
    ) -> Result<()> {
        let Some((summary, target)) = page_sizes else {
            return Ok(()); // dirty-bitmap postcopy only: nothing for RAM
        };
        let ours = self
            .blocks
            .iter()
            .fold(0, |acc, b| acc | b.page_size() as u64);
        if summary != ours || target != self.page_size as u64 {
            return Err(Error::invalid(
                "POSTCOPY_ADVISE",
                format!(
                    "the source's RAM page sizes are 0x{summary:x} (target page 0x{target:x}), \
                     this side's 0x{ours:x} (target page 0x{:x})",
                    self.page_size
                ),
            ));
        }
        for b in &self.blocks {
            incoming.attach(b.clone())?;
        }
        if let Some(accept) = self.preempt_acceptor.take() {
            // Weak until LISTEN: the blocks' fetchers hold `incoming`, which holds this.
            let blocks: Vec<_> = self.blocks.iter().map(Arc::downgrade).collect();
            let (stats, page_size) = (self.stats.clone(), self.page_size);
            incoming.at_listen(Box::new(move |incoming| {
                let blocks = blocks.iter().filter_map(std::sync::Weak::upgrade).collect();
                super::preempt::spawn_receiver(accept, blocks, page_size, stats, incoming.clone());
            }));
        }
        self.incoming = Some(incoming.clone());
        Ok(())
    }

    fn load_postcopy_discard(&mut self, block: &str, ranges: &[(u64, u64)]) -> Result<bool> {
        let Some(b) = self.blocks.iter().find(|b| b.name() == block) else {
            return Ok(false);
        };
        let Some(incoming) = &self.incoming else {
            return Err(Error::invalid(
                "POSTCOPY_RAM_DISCARD",
                "a discard before POSTCOPY_ADVISE",
            ));
        };
        let ps = self.page_size as u64;
        for &(start, len) in ranges {
            if start % ps != 0
                || len % ps != 0
                || start.checked_add(len).is_none_or(|end| end > b.len())
            {
                return Err(Error::invalid(
                    "POSTCOPY_RAM_DISCARD",
                    format!(
                        "0x{len:x} bytes at 0x{start:x} of block '{block}' (0x{:x} bytes, pages of 0x{ps:x})",
                        b.len()
                    ),
                ));
            }
            let total_pages = self.total_bytes() / ps;
            self.discarded += len / ps;
            if self.discarded > total_pages {
                return Err(Error::invalid(
                    "POSTCOPY_RAM_DISCARD",
                    format!(
                        "{} pages discarded, more than RAM's {total_pages}: a source discards each page once",
                        self.discarded
                    ),
                ));
            }
            b.discard_pages((start / ps) as usize, (len / ps) as usize);
            incoming.discarded(len / ps);
        }
        Ok(true)
    }

    fn load_setup(&mut self) -> Result<()> {
        self.last_loaded = None;
        self.discarded = 0;
        self.records = RamRecordReader::new(self.page_size as u64);
        self.stats.reset();
        Ok(())
    }

    fn load(&mut self, r: &mut Reader<'_>, version: u32, _phase: Phase) -> Result<()> {
        if version != RAM_VERSION {
            return Err(Error::invalid(
                "RAM section",
                format!("version {version}; only version {RAM_VERSION} exists"),
            )
            .at_offset(r.position()));
        }
        // After POSTCOPY_LISTEN the guest may run: pages are placed only if missing.
        let listening = self.incoming.clone().filter(|i| i.is_listening());
        loop {
            let at = r.position();
            let record = self.records.next(r)?;
            let zero = matches!(record, RamRecord::Zero { .. });
            match record {
                RamRecord::Eos => return Ok(()),
                RamRecord::MultifdFlush if listening.is_some() => {
                    return Err(Error::invalid(
                        "RAM record",
                        "a multifd flush record in postcopy (only ZERO, PAGE and EOS are valid there)",
                    )
                    .at_offset(at));
                }
                RamRecord::MultifdFlush => {
                    if let Some(wait) = &self.multifd_flush {
                        wait().map_err(|e| e.at_offset(at))?;
                    }
                }
                RamRecord::MemSize { total } => {
                    let records = self.records.clone();
                    records.block_list_with(r, total, |entry, at, r| {
                        self.check_block_entry(&entry)
                            .map_err(|e| e.at_offset(at))?;
                        if self.mapped_ram {
                            self.load_mapped_block(&entry, r)?;
                        }
                        Ok(())
                    })?;
                }
                _ if self.mapped_ram => {
                    return Err(Error::invalid(
                        "RAM record",
                        "a page or flush record in a mapped-ram file (pages live at fixed offsets there)",
                    )
                    .at_offset(at));
                }
                RamRecord::Zero { block, offset } | RamRecord::Page { block, offset }
                    if let Some(incoming) = &listening =>
                {
                    let bi = self.block_for(&block).map_err(|e| e.at_offset(at))?;
                    let page = self.check_page(bi, offset, at)?;
                    let block = self.blocks[bi].as_ref();
                    super::postcopy::place_postcopy_page(
                        block,
                        self.page_size,
                        &self.stats,
                        incoming,
                        r,
                        page,
                        zero,
                    )?;
                }
                RamRecord::Xbzrle { .. } if listening.is_some() => {
                    return Err(Error::invalid(
                        "RAM record",
                        "an XBZRLE record in postcopy (only ZERO, PAGE and EOS are valid there)",
                    )
                    .at_offset(at));
                }
                RamRecord::Zero { block, offset } => {
                    let bi = self.block_for(&block).map_err(|e| e.at_offset(at))?;
                    let page = self.check_page(bi, offset, at)?;
                    self.blocks[bi].zero_page(page);
                    self.stats.zero_pages.fetch_add(1, Ordering::Relaxed);
                }
                RamRecord::Page { block, offset } => {
                    let bi = self.block_for(&block).map_err(|e| e.at_offset(at))?;
                    let page = self.check_page(bi, offset, at)?;
                    let block = &self.blocks[bi];
                    r.with_bytes(self.page_size, |data| block.load_page(page, data))?;
                    self.stats.normal_pages.fetch_add(1, Ordering::Relaxed);
                }
                RamRecord::Xbzrle {
                    block,
                    offset,
                    data,
                } => {
                    let bi = self.block_for(&block).map_err(|e| e.at_offset(at))?;
                    let page = self.check_page(bi, offset, at)?;
                    let block = &self.blocks[bi];
                    if block.page_missing(page) {
                        // (With postcopy advised, patching it would first ask the
                        // source for it and wait for this very loader.)
                        return Err(Error::invalid(
                            "RAM XBZRLE page",
                            format!(
                                "page 0x{offset:x} of block '{}' was never received: no page to apply a delta to",
                                block.name()
                            ),
                        )
                        .at_offset(at));
                    }
                    // The record reader checked the encoding byte and the length.
                    let encoded = &data[3..];
                    xbzrle::decode(encoded, self.page_size, |from, bytes| {
                        block.patch_page(page, from, bytes)
                    })
                    .map_err(|e| {
                        Error::invalid(
                            "RAM XBZRLE page",
                            format!("page 0x{offset:x} of block '{}': {e}", block.name()),
                        )
                        .at_offset(at)
                    })?;
                    let s = &self.stats;
                    s.xbzrle_pages.fetch_add(1, Ordering::Relaxed);
                    s.xbzrle_bytes
                        .fetch_add(r.position() - at, Ordering::Relaxed);
                }
            }
        }
    }
}
