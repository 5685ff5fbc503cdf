//! The `ram` iterative handler in QEMU's wire format (section `ram`, version 4;
//! spec section 5).
//!
//! Setup sends the block list (MEM_SIZE record) and marks every page dirty. Each round
//! scans the dirty bitmaps from where the last round stopped and sends dirty pages as
//! ZERO or PAGE records until the byte budget is spent; a round that scans every page
//! and finds nothing dirty reports `Done`. Completion sends every page still dirty.
//! Each payload ends with EOS. A record names its block unless it is the block of the
//! previous record on this stream (CONTINUE), across section boundaries too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{CONTINUE, EOS, MEM_SIZE, PAGE, ZERO};
use super::guest_ram::GuestRam;
use super::records::{BlockEntry, BlockRef, RamRecord, RamRecordReader};
use super::zero::is_zero;
use crate::error::{Error, Result};
use crate::handler::{IterationStatus, IterativeHandler, Pending, Phase};
use crate::wire::{Reader, Writer};

/// The section version QEMU uses for RAM.
pub const RAM_VERSION: u32 = 4;

/// Counters of the RAM handler, readable from other threads while a migration runs
/// (QEMU's `query-migrate` `ram` object).
#[derive(Debug, Default)]
pub struct RamStats {
    /// Pages sent (or received) with their contents (QEMU's `normal`).
    pub normal_pages: AtomicU64,
    /// Zero pages sent (or received) as 9-byte records (QEMU's `duplicate`).
    pub zero_pages: AtomicU64,
    /// Completed passes over all dirty bitmaps (QEMU's `dirty-sync-count`, roughly).
    pub passes: AtomicU64,
    /// Pages found dirty again after they had been sent (for the dirty rate).
    pub redirtied_pages: AtomicU64,
    /// The target page size.
    pub page_size: AtomicU64,
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
}

impl RamCounters {
    /// Bytes of guest RAM sent (full and zero pages, at page size each).
    pub fn pages_bytes(&self) -> u64 {
        (self.normal_pages + self.zero_pages) * self.page_size
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
        }
    }

    fn reset(&self) {
        for c in [
            &self.normal_pages,
            &self.zero_pages,
            &self.passes,
            &self.redirtied_pages,
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
    /// Block of the last record received (for CONTINUE on load).
    last_loaded: Option<usize>,
    /// The record reader of the current load (CONTINUE spans sections).
    records: RamRecordReader,
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
            last_loaded: None,
            records: RamRecordReader::new(page_size as u64),
        })
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
    fn send_page(&mut self, w: &mut Writer<'_>, bi: usize, page: usize) -> Result<bool> {
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
                return Ok(true);
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
                return Ok(true);
            }
            let rewound = w.rewind_to(start);
            debug_assert!(rewound, "no flush happens inside a record");
        }
        w.put_be64(offset | ZERO | cont);
        if cont == 0 {
            w.put_counted_str(block.name())?;
        }
        w.put_u8(0);
        Ok(false)
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
        let (mut full, mut zero) = (0, 0);
        while bits != 0 && w.position() < limit {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if self.send_page(w, bi, wi * 64 + bit)? {
                full += 1;
            } else {
                zero += 1;
            }
        }
        self.stats.normal_pages.fetch_add(full, Ordering::Relaxed);
        self.stats.zero_pages.fetch_add(zero, Ordering::Relaxed);
        if self.first_pass_done {
            self.stats
                .redirtied_pages
                .fetch_add(full + zero, Ordering::Relaxed);
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
    fn advance_cursor(&mut self) {
        let (bi, wi) = self.cursor;
        if wi + 1 < self.blocks[bi].migration_bitmap().words() {
            self.cursor = (bi, wi + 1);
            return;
        }
        let next = self.next_block_with_pages(bi + 1);
        if next <= bi {
            self.stats.passes.fetch_add(1, Ordering::Relaxed);
            self.first_pass_done = true;
        }
        self.cursor = (next, 0);
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

    fn check_page(&self, bi: usize, offset: u64, at: u64) -> Result<usize> {
        let block = &self.blocks[bi];
        if offset
            .checked_add(self.page_size as u64)
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
        Ok((offset / self.page_size as u64) as usize)
    }
}

impl IterativeHandler for RamHandler {
    fn save_setup(&mut self, w: &mut Writer<'_>) -> Result<()> {
        self.last_sent = None;
        self.cursor = (self.next_block_with_pages(0), 0);
        self.first_pass_done = false;
        self.stats.reset();
        w.put_be64(self.total_bytes() | MEM_SIZE);
        for b in &self.blocks {
            w.put_counted_str(b.name())?;
            w.put_be64(b.len());
            b.migration_bitmap().mark_all();
        }
        self.sync_dirty(); // start from a clean external log
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
        let start = w.position();
        let total_words: usize = self
            .blocks
            .iter()
            .map(|b| b.migration_bitmap().words())
            .sum();
        let mut clean_run = 0;
        let mut status = IterationStatus::Done;
        let limit = start.saturating_add(budget);
        while clean_run < total_words {
            if w.position() >= limit {
                status = IterationStatus::More;
                break;
            }
            let (bi, wi) = self.cursor;
            let dirty = self.blocks[bi].migration_bitmap();
            if dirty.peek_word(wi) == 0 {
                self.advance_cursor();
                clean_run += 1;
                continue;
            }
            let bits = dirty.take_word(wi);
            clean_run = 0;
            // Stop at the budget page by page (as QEMU's rate limit does); the pages not
            // sent stay dirty, and the next round resumes at this word.
            let unsent = self.send_word(w, bi, wi, bits, limit)?;
            if unsent != 0 {
                self.blocks[bi].migration_bitmap().or_word(wi, unsent);
                status = IterationStatus::More;
                break;
            }
            self.advance_cursor();
        }
        w.put_be64(EOS);
        Ok(status)
    }

    fn save_complete(&mut self, w: &mut Writer<'_>) -> Result<()> {
        self.sync_dirty();
        for bi in 0..self.blocks.len() {
            for wi in 0..self.blocks[bi].migration_bitmap().words() {
                if self.blocks[bi].migration_bitmap().peek_word(wi) != 0 {
                    let bits = self.blocks[bi].migration_bitmap().take_word(wi);
                    self.send_word(w, bi, wi, bits, u64::MAX)?;
                }
            }
        }
        w.put_be64(EOS);
        Ok(())
    }

    fn load_setup(&mut self) -> Result<()> {
        self.last_loaded = None;
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
        loop {
            let at = r.position();
            match self.records.next(r)? {
                RamRecord::Eos => return Ok(()),
                RamRecord::MultifdFlush => {}
                RamRecord::MemSize { total } => {
                    let records = self.records.clone();
                    records.block_list(r, total, |entry, at| {
                        self.check_block_entry(&entry).map_err(|e| e.at_offset(at))
                    })?;
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
                RamRecord::Xbzrle { .. } => {
                    return Err(Error::invalid(
                        "RAM record",
                        "XBZRLE pages are not supported by this RAM handler",
                    )
                    .at_offset(at));
                }
            }
        }
    }
}
