//! Pages on demand: a [`RamBlock`] whose pages are not all there yet fetches each
//! missing page the first time anything touches it through the block's API (a vCPU's
//! read or write, the migration's copy), before the access goes on. This is the
//! mechanism for emulators whose guest memory accesses go through the RAM block API
//! (the received-bitmap way of QEMU's postcopy); lazy snapshot restore uses it with a
//! [`PageFetcher`] that reads a mapped-ram file, and postcopy with one that asks the
//! source ([`super::postcopy`]).
//!
//! Fetches are serialised per block and re-checked under the lock, so a page is
//! fetched once and a late fetch never overwrites what the guest wrote after the first.
//! Writes made behind the block's back (KVM vCPUs touching the mapping directly) are
//! not seen here: such guests need userfaultfd, not this.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{DirtyBitmap, RamBlock};
use crate::error::Result;

/// Where missing pages come from.
pub trait PageFetcher: Send + Sync {
    /// Puts pages `first .. first + count` of `block` in place (with
    /// [`RamBlock::read_pages_at`], [`RamBlock::load_page`] or by leaving a zero page
    /// alone). Returns how many of them, from `first` on, are in place when it
    /// returns: at least the first, which the access waits for. The others may be
    /// left to arrive later through the block's loading methods (postcopy asks for
    /// them all and waits only for the first); until then they stay missing.
    fn fetch(&self, block: &RamBlock, first: usize, count: usize) -> Result<usize>;
}

/// Pages fetched at most at once: the touched page and the missing ones after it
/// (a guest touching memory in order then waits once per this many pages).
pub const FETCH_PAGES: usize = 64;

/// Counters of a block's on-demand fetches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnDemandStats {
    /// Fetches made (each for up to [`FETCH_PAGES`] pages).
    pub fetches: u64,
    /// Pages fetched.
    pub pages: u64,
    /// Time spent in fetches, in nanoseconds (what accesses waited in total).
    pub wait_ns: u64,
    /// The longest fetch, in nanoseconds.
    pub max_wait_ns: u64,
}

pub(crate) struct OnDemand {
    fetcher: Box<dyn PageFetcher>,
    /// Pages in place: fetched, or there from the start.
    present: DirtyBitmap,
    /// Pages still missing; 0 means the block is whole.
    missing: AtomicU64,
    lock: Mutex<()>,
    fetches: AtomicU64,
    pages: AtomicU64,
    wait_ns: AtomicU64,
    max_wait_ns: AtomicU64,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnDemand({} pages missing)", self.missing())
    }
}

impl OnDemand {
    pub(crate) fn new(fetcher: Box<dyn PageFetcher>, pages: usize) -> OnDemand {
        OnDemand {
            fetcher,
            present: DirtyBitmap::new(pages),
            missing: AtomicU64::new(pages as u64),
            lock: Mutex::new(()),
            fetches: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            wait_ns: AtomicU64::new(0),
            max_wait_ns: AtomicU64::new(0),
        }
    }

    /// Pages not fetched yet.
    pub(crate) fn missing(&self) -> u64 {
        self.missing.load(Ordering::Acquire)
    }

    /// Makes pages `first..=last` present, fetching what is missing. Panics if the
    /// fetcher fails: the access cannot go on without its page (the guest must not run
    /// with a page missing).
    #[inline]
    pub(crate) fn ensure(&self, block: &RamBlock, first: usize, last: usize) {
        if self.missing() == 0 {
            return;
        }
        for page in first..=last {
            if !self.present.is_marked(page) {
                self.fetch(block, page);
            }
        }
    }

    /// Whether page `page` is in place.
    #[inline]
    pub(crate) fn is_present(&self, page: usize) -> bool {
        self.present.is_marked(page)
    }

    /// Makes pages `first..=last` missing again (postcopy's discard: the source has
    /// newer contents for them).
    pub(crate) fn mark_missing(&self, first: usize, last: usize) {
        for page in first..=last {
            if self.present.test_and_clear(page) {
                self.missing.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Marks pages present without fetching (the stream or the loader put them there).
    pub(crate) fn mark_present(&self, first: usize, last: usize) {
        for page in first..=last {
            if self.present.test_and_mark(page) {
                self.missing.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    #[cold]
    fn fetch(&self, block: &RamBlock, page: usize) {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.present.is_dirty(page) {
            return; // another access fetched it meanwhile
        }
        let pages = self.present.pages();
        let mut end = page + 1;
        while end < pages && end - page < FETCH_PAGES && !self.present.is_dirty(end) {
            end += 1;
        }
        let t = Instant::now();
        let placed = match self.fetcher.fetch(block, page, end - page) {
            Ok(n) => n.clamp(1, end - page),
            Err(e) => panic!(
                "page {page} of RAM block '{}' cannot be fetched: {e}",
                block.name()
            ),
        };
        let ns = t.elapsed().as_nanos() as u64;
        self.mark_present(page, page + placed - 1);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.pages.fetch_add(placed as u64, Ordering::Relaxed);
        self.wait_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_wait_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> OnDemandStats {
        OnDemandStats {
            fetches: self.fetches.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            wait_ns: self.wait_ns.load(Ordering::Relaxed),
            max_wait_ns: self.max_wait_ns.load(Ordering::Relaxed),
        }
    }
}
