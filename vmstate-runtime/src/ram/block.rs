//! A RAM block: guest memory the emulator owns, with its dirty bitmap.
//!
//! The memory is an anonymous mapping (see `mapping.rs`): vCPU threads write it as
//! atomic 64-bit words while the migration copies pages out or hands them to the kernel,
//! without locks. It starts zeroed and the OS maps it lazily. Every write through
//! [`RamBlock::write`] / [`RamBlock::write_u64`] marks its pages dirty after storing
//! the data (see [`DirtyBitmap`] for why that order is enough), and marks them
//! *populated*: a page never populated is known to be zero, so it is sent and loaded
//! as a zero page without touching (and faulting in) its memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::dirty::DirtyBitmap;
use super::guest_ram::GuestRam;
use super::mapping::Userfault;
use super::mapping::{GuestPages, Mapping};
use super::on_demand::{OnDemand, OnDemandStats, PageFetcher};
use crate::error::{Error, Result};

/// The target page size QEMU uses on x86 and most targets.
pub const DEFAULT_PAGE_SIZE: usize = 4096;

/// The largest page size a block may have (QEMU's target pages are at most 64 KiB; a
/// page is read from a stream in one piece).
pub const MAX_PAGE_SIZE: usize = 1 << 20;

/// A named block of guest RAM (QEMU's RAMBlock: `pc.ram`, `pc.bios`, ...).
///
/// ```
/// use vmstate::ram::RamBlock;
/// let ram = RamBlock::new("pc.ram", 1 << 20).unwrap();
/// ram.write(0x1003, b"hello");
/// let mut out = [0u8; 5];
/// ram.read(0x1003, &mut out);
/// assert_eq!(&out, b"hello");
/// assert!(ram.dirty().is_dirty(1));
/// ```
#[derive(Debug)]
pub struct RamBlock {
    name: String,
    /// The guest memory (atomic words for guest writes, copies for the migration).
    memory: Arc<Mapping>,
    page_size: usize,
    dirty: DirtyBitmap,
    /// Pages that may be non-zero (written since the block was created). Only grows.
    populated: DirtyBitmap,
    /// Pages fetched on first touch (lazy restore), once set up.
    on_demand: std::sync::OnceLock<OnDemand>,
    /// Postcopy into memory touched directly (KVM): the userfaultfd registration.
    userfault: std::sync::OnceLock<Userfault>,
}

impl RamBlock {
    /// A zero-filled block of `size` bytes with 4 KiB pages.
    pub fn new(name: impl Into<String>, size: u64) -> Result<Self> {
        Self::with_page_size(name, size, DEFAULT_PAGE_SIZE)
    }

    /// A zero-filled block with a given page size: a power of two, at least 1 KiB (RAM
    /// flags live in the low 10 bits of page offsets) and at most [`MAX_PAGE_SIZE`].
    pub fn with_page_size(name: impl Into<String>, size: u64, page_size: usize) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name.len() > 255 {
            return Err(Error::invalid(
                "RAM block name",
                format!("'{name}' must be 1 to 255 bytes"),
            ));
        }
        if !page_size.is_power_of_two() || !(1024..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(Error::invalid(
                "page size",
                format!("{page_size} is not a power of two from 1 KiB to 1 MiB"),
            ));
        }
        if size % page_size as u64 != 0 {
            return Err(Error::invalid(
                "RAM block size",
                format!("{size} is not a multiple of the page size {page_size}"),
            ));
        }
        let bytes = usize::try_from(size)
            .map_err(|_| Error::invalid("RAM block size", "too large for this host"))?;
        let memory = Mapping::anonymous(bytes).map_err(|e| {
            Error::invalid(
                "RAM block",
                format!("cannot map {size} bytes for '{name}': {e}"),
            )
        })?;
        let pages = bytes / page_size;
        Ok(RamBlock {
            name,
            memory: Arc::new(memory),
            page_size,
            dirty: DirtyBitmap::new(pages),
            populated: DirtyBitmap::new(pages),
            on_demand: std::sync::OnceLock::new(),
            userfault: std::sync::OnceLock::new(),
        })
    }

    /// Faults in all of the block's memory now, as QEMU's `-mem-prealloc` does, so that
    /// loading or running the guest later does not pay the kernel's page zeroing page
    /// by page. The block's contents (all zero) and its dirty and populated knowledge do
    /// not change. Linux 5.14 or later (`MADV_POPULATE_WRITE`).
    pub fn preallocate(&self) -> Result<()> {
        self.memory.populate().map_err(|e| {
            Error::invalid(
                "RAM block",
                format!("cannot preallocate '{}': {e}", self.name),
            )
        })
    }

    /// The block's name (its idstr in the stream).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size in bytes (QEMU's `used_length`).
    pub fn len(&self) -> u64 {
        self.memory.len() as u64
    }

    /// True for a zero-sized block.
    pub fn is_empty(&self) -> bool {
        self.memory.len() == 0
    }

    /// The page size.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.dirty.pages()
    }

    /// The dirty bitmap.
    pub fn dirty(&self) -> &DirtyBitmap {
        &self.dirty
    }

    /// Guest write of any length at any offset; marks the pages dirty.
    ///
    /// Panics if the range is outside the block (a guest bug, like a bad DMA address).
    pub fn write(&self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let first = (offset / self.page_size as u64) as usize;
        let last = ((offset + data.len() as u64 - 1) / self.page_size as u64) as usize;
        self.ensure(first, last);
        for page in first..=last {
            self.populated.mark_relaxed(page);
        }
        self.store(offset, data);
        self.dirty.mark_range(first, last);
    }

    /// Guest write of an aligned 64-bit value; marks the page dirty.
    #[inline]
    pub fn write_u64(&self, offset: u64, value: u64) {
        debug_assert_eq!(offset % 8, 0, "unaligned write_u64");
        let page = (offset / self.page_size as u64) as usize;
        self.ensure(page, page);
        self.populated.mark_relaxed(page);
        self.memory.words()[(offset / 8) as usize].store(value, Ordering::Relaxed);
        self.dirty.mark(page);
    }

    /// Reads `out.len()` bytes at `offset`.
    ///
    /// Panics if the range is outside the block.
    pub fn read(&self, offset: u64, out: &mut [u8]) {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        if !out.is_empty()
            && at
                .checked_add(out.len())
                .is_some_and(|e| e as u64 <= self.len())
        {
            let ps = self.page_size;
            self.ensure(at / ps, (at + out.len() - 1) / ps);
        }
        self.memory.copy_out(at, out);
    }

    /// Copies page `page` into `out` (exactly one page long).
    #[inline]
    pub fn copy_page(&self, page: usize, out: &mut [u8]) {
        assert_eq!(out.len(), self.page_size, "copy_page copies one page");
        self.ensure(page, page);
        self.memory.copy_out(page * self.page_size, out);
    }

    /// Page `page` in place, for a writer that sends it straight from guest memory.
    pub fn page_in_place(&self, page: usize) -> GuestPages {
        self.ensure(page, page);
        GuestPages::new(self.memory.clone(), page * self.page_size, self.page_size)
    }

    /// Records writes made behind the block's back (by a KVM vCPU, or DMA through the
    /// memory's host address), one 64-page word of a dirty log at a time: bit `i` of
    /// `bits` is page `word * 64 + i`. Those pages become dirty and are known to hold
    /// data (a page never written otherwise is sent as a zero page without being read).
    pub fn note_guest_writes(&self, word: usize, bits: u64) {
        // Populated first: the migration must not see the page dirty yet still "never
        // written" (it would send it as a zero page).
        self.populated.or_word(word, bits);
        self.dirty.or_word(word, bits);
    }

    /// The block's memory (for a KVM memory slot).
    #[cfg(feature = "kvm")]
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.memory
    }

    /// Whether page `page` may hold non-zero bytes (it was written since creation).
    #[inline]
    pub fn is_populated(&self, page: usize) -> bool {
        self.populated.is_dirty(page)
    }

    /// Whether page `page` is all zero: false at the first non-zero word, without
    /// copying, and true at once for a page never written.
    #[inline]
    pub fn page_is_zero(&self, page: usize) -> bool {
        self.ensure(page, page);
        if !self.is_populated(page) {
            return true;
        }
        let per_page = self.page_size / 8;
        self.memory.words()[page * per_page..(page + 1) * per_page]
            .chunks_exact(8)
            .all(|c| c.iter().fold(0, |acc, w| acc | w.load(Ordering::Relaxed)) == 0)
    }

    /// Writes a whole page from the stream (destination side; not marked dirty).
    #[inline]
    pub fn load_page(&self, page: usize, data: &[u8]) {
        assert_eq!(data.len(), self.page_size, "load_page loads one page");
        let at = page * self.page_size;
        // Registered with userfaultfd, a page not mapped yet is placed atomically (a
        // plain write would fault into userfaultfd and wait for itself).
        let placed = match self.userfault.get() {
            Some(uf) if !self.is_populated(page) => uf.place(at, data).unwrap_or_else(|e| {
                panic!(
                    "page {page} of RAM block '{}' cannot be placed: {e}",
                    self.name
                )
            }),
            _ => false,
        };
        self.populated.mark_relaxed(page);
        if !placed {
            self.memory.copy_in(at, data);
        }
        self.now_present(page, page);
    }

    /// Reads `count` pages from `page` on straight from `file` at `offset` (destination
    /// side: a mapped-ram file's pages, with positioned reads and no copy through a
    /// buffer), without marking them dirty.
    ///
    /// Panics if the pages are outside the block.
    pub fn read_pages_at(
        &self,
        page: usize,
        count: usize,
        file: &std::fs::File,
        offset: u64,
    ) -> std::io::Result<()> {
        if self.userfault.get().is_some() {
            // Registered memory: a read into a page not mapped yet would fault into
            // userfaultfd; read aside and place page by page.
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; count * self.page_size];
            file.read_exact_at(&mut buf, offset)?;
            for (i, data) in buf.chunks_exact(self.page_size).enumerate() {
                self.load_page(page + i, data);
            }
            return Ok(());
        }
        self.populated.mark_range(page, page + count - 1);
        self.memory
            .read_in_at(page * self.page_size, count * self.page_size, file, offset)?;
        self.now_present(page, page + count - 1);
        Ok(())
    }

    /// Writes `data` at byte `at` of page `page` (destination side: an XBZRLE
    /// record's changed run), without marking it dirty.
    ///
    /// Panics if the range is outside the page.
    pub fn patch_page(&self, page: usize, at: usize, data: &[u8]) {
        assert!(
            at.checked_add(data.len())
                .is_some_and(|end| end <= self.page_size),
            "patch_page stays inside one page"
        );
        self.ensure(page, page);
        self.populated.mark_relaxed(page);
        self.memory.copy_in(page * self.page_size + at, data);
    }

    /// Zeroes a page (destination side). A page never written is left untouched, so
    /// loading zero pages into fresh memory does not fault it in.
    pub fn zero_page(&self, page: usize) {
        if !self.is_populated(page) {
            self.now_present(page, page);
            return;
        }
        let per_page = self.page_size / 8;
        for w in &self.memory.words()[page * per_page..(page + 1) * per_page] {
            if w.load(Ordering::Relaxed) != 0 {
                w.store(0, Ordering::Relaxed);
            }
        }
        // `populated` stays set: a write racing this zeroing (DMA during a load) would
        // otherwise leave data in a page the block believes is zero.
        self.now_present(page, page);
    }

    /// A 64-bit FNV-1a checksum of page `page` (for verifying a migration).
    pub fn page_checksum(&self, page: usize) -> u64 {
        self.ensure(page, page);
        let per_page = self.page_size / 8;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        if !self.is_populated(page) {
            // All zero: the same result as hashing the zero words, without reading them.
            for _ in 0..per_page {
                h = h.wrapping_mul(0x100_0000_01b3);
            }
            return h;
        }
        for w in &self.memory.words()[page * per_page..(page + 1) * per_page] {
            h ^= w.load(Ordering::Relaxed);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    }

    /// Fetches pages on first touch from now on ([`on_demand`](super::on_demand)):
    /// every page counts as missing until `fetcher` put it in place, the stream loaded
    /// it, or it was zeroed by a load. Fails if the block fetches on demand already.
    pub fn fetch_on_demand(&self, fetcher: Box<dyn PageFetcher>) -> Result<()> {
        self.on_demand
            .set(OnDemand::new(fetcher, self.pages()))
            .map_err(|_| {
                crate::Error::invalid(
                    "RAM block",
                    format!("block '{}' fetches pages on demand already", self.name),
                )
            })
    }

    /// [`fetch_on_demand`](Self::fetch_on_demand) for memory that is also touched
    /// directly, not through this API (a KVM vCPU's accesses): the mapping is
    /// registered with userfaultfd, and a thread turns each access to a missing page
    /// into a fetch (the accessing thread waits in the kernel meanwhile). Pages are
    /// then placed atomically (`UFFDIO_COPY`), and a page known to be zero but never
    /// written gets a zero page (`UFFDIO_ZEROPAGE`). Needs 4 KiB pages and userfaultfd
    /// (root, or `vm.unprivileged_userfaultfd`; x86_64, aarch64 or riscv64). The thread
    /// ends when the block is dropped.
    pub fn fetch_on_demand_userfault(
        self: &Arc<Self>,
        fetcher: Box<dyn PageFetcher>,
    ) -> Result<()> {
        if self.page_size != DEFAULT_PAGE_SIZE {
            // Pages are placed one host page at a time.
            return Err(crate::Error::invalid(
                "RAM block",
                format!(
                    "'{}' has {}-byte pages; userfaultfd places 4 KiB host pages",
                    self.name, self.page_size
                ),
            ));
        }
        let uf = Userfault::register(self.memory.clone()).map_err(|e| {
            crate::Error::invalid(
                "RAM block",
                format!("'{}' cannot be registered with userfaultfd: {e}", self.name),
            )
        })?;
        self.fetch_on_demand(fetcher)?;
        self.userfault
            .set(uf)
            .map_err(|_| crate::Error::invalid("RAM block", "registered with userfaultfd twice"))?;
        let block = Arc::downgrade(self);
        std::thread::Builder::new()
            .name(format!("userfault {}", self.name))
            .spawn(move || serve_userfaults(&block))
            .map_err(crate::Error::from)?;
        Ok(())
    }

    /// Pages still to be fetched on demand (0 when the block does not fetch on demand
    /// or is whole).
    pub fn missing_pages(&self) -> u64 {
        self.on_demand.get().map_or(0, OnDemand::missing)
    }

    /// The on-demand fetches so far, if the block fetches on demand.
    pub fn on_demand_stats(&self) -> Option<OnDemandStats> {
        self.on_demand.get().map(OnDemand::stats)
    }

    /// Whether page `page` is still to be fetched on demand.
    pub fn page_missing(&self, page: usize) -> bool {
        self.on_demand.get().is_some_and(|od| !od.is_present(page))
    }

    /// Makes pages `first .. first + count` missing again, to be fetched on next
    /// touch (postcopy's discard); `false` if the block does not fetch on demand.
    /// Panics if the pages are outside the block.
    pub fn discard_pages(&self, first: usize, count: usize) -> bool {
        assert!(first + count <= self.pages(), "discard inside the block");
        match self.on_demand.get() {
            Some(od) if count > 0 => {
                od.mark_missing(first, first + count - 1);
                if self.userfault.get().is_some() {
                    // The kernel must see them missing too: an access faults again.
                    for page in first..first + count {
                        self.populated.test_and_clear(page);
                    }
                    let at = first * self.page_size;
                    if let Err(e) = self.memory.discard(at, count * self.page_size) {
                        panic!(
                            "pages of RAM block '{}' cannot be discarded: {e}",
                            self.name
                        );
                    }
                }
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Fetches every page still missing, in order (a background thread's job after a
    /// lazy restore, so that the guest stops waiting on first touches).
    pub fn fetch_all(&self) {
        if let Some(od) = self.on_demand.get() {
            let mut page = 0;
            while page < self.pages() && od.missing() > 0 {
                od.ensure(self, page, page);
                page += 1;
            }
        }
    }

    #[inline]
    fn ensure(&self, first: usize, last: usize) {
        if let Some(od) = self.on_demand.get() {
            od.ensure(self, first, last);
        }
    }

    #[inline]
    fn now_present(&self, first: usize, last: usize) {
        if let Some(od) = self.on_demand.get() {
            od.mark_present(first, last);
        }
    }

    fn store(&self, offset: u64, data: &[u8]) {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let word = &self.memory.words()[(at / 8) as usize];
            let in_word = (at % 8) as usize;
            let n = (8 - in_word).min(rest.len());
            if n == 8 {
                word.store(
                    u64::from_ne_bytes(rest[..8].try_into().expect("8")),
                    Ordering::Relaxed,
                );
            } else {
                // A partial word: merge atomically, other vCPUs may write its other bytes.
                let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    let mut b = old.to_ne_bytes();
                    b[in_word..in_word + n].copy_from_slice(&rest[..n]);
                    Some(u64::from_ne_bytes(b))
                });
            }
            at += n as u64;
            rest = &rest[n..];
        }
    }
}

/// The thread behind [`RamBlock::fetch_on_demand_userfault`]: each access to a page
/// that is not mapped is either for a page still missing (fetched, which places it and
/// wakes the access) or for one that is here in the block's books but was never written
/// (a zero page: mapped as such). Ends when the block is gone or userfaultfd fails.
fn serve_userfaults(block: &std::sync::Weak<RamBlock>) {
    loop {
        let Some(b) = block.upgrade() else { return };
        let Some(uf) = b.userfault.get() else { return };
        let at = match uf.next_fault(100) {
            Ok(Some(at)) => at,
            Ok(None) => continue,
            Err(_) => return,
        };
        let page = at / b.page_size;
        let start = page * b.page_size;
        if b.page_missing(page) {
            b.ensure(page, page);
        }
        // Here in the block's books but not mapped: a zero page never written, or one
        // whose first write is on its way (it was zero until then). A zero page is
        // right either way; if one is mapped meanwhile, the access only needs waking.
        let done = match uf.place_zero(start, b.page_size) {
            Ok(true) => Ok(()),
            Ok(false) => uf.wake(start, b.page_size),
            Err(e) => Err(e),
        };
        if done.is_err() {
            return;
        }
    }
}

impl GuestRam for RamBlock {
    fn name(&self) -> &str {
        RamBlock::name(self)
    }
    fn len(&self) -> u64 {
        RamBlock::len(self)
    }
    fn page_size(&self) -> usize {
        RamBlock::page_size(self)
    }
    fn migration_bitmap(&self) -> &DirtyBitmap {
        &self.dirty
    }
    #[inline]
    fn page_is_zero(&self, page: usize) -> Option<bool> {
        Some(RamBlock::page_is_zero(self, page))
    }
    #[inline]
    fn copy_page(&self, page: usize, out: &mut [u8]) {
        RamBlock::copy_page(self, page, out)
    }
    #[inline]
    fn page_in_place(&self, page: usize) -> Option<GuestPages> {
        Some(RamBlock::page_in_place(self, page))
    }
    fn load_page(&self, page: usize, data: &[u8]) {
        RamBlock::load_page(self, page, data)
    }
    fn patch_page(&self, page: usize, at: usize, data: &[u8]) {
        RamBlock::patch_page(self, page, at, data)
    }
    fn zero_page(&self, page: usize) {
        RamBlock::zero_page(self, page)
    }
    fn read_pages_at(
        &self,
        page: usize,
        count: usize,
        file: &std::fs::File,
        offset: u64,
    ) -> Option<std::io::Result<()>> {
        Some(RamBlock::read_pages_at(self, page, count, file, offset))
    }
    fn fetch_on_demand(&self, fetcher: Box<dyn PageFetcher>) -> Option<Result<()>> {
        Some(RamBlock::fetch_on_demand(self, fetcher))
    }
    fn page_missing(&self, page: usize) -> bool {
        RamBlock::page_missing(self, page)
    }
    fn missing_pages(&self) -> u64 {
        RamBlock::missing_pages(self)
    }
    fn discard_pages(&self, first: usize, count: usize) -> bool {
        RamBlock::discard_pages(self, first, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fetches pages by loading `page as u8` into every byte, counting fetches.
    struct Pattern(std::sync::Mutex<Vec<usize>>);

    impl PageFetcher for Arc<Pattern> {
        fn fetch(&self, block: &RamBlock, first: usize, count: usize) -> Result<usize> {
            for page in first..first + count {
                self.0.lock().unwrap().push(page);
                block.load_page(page, &vec![page as u8; block.page_size()]);
            }
            Ok(count)
        }
    }

    /// A word read as a vCPU reads it: straight from the mapping, not through the API.
    fn direct_read(block: &Arc<RamBlock>, page: usize) -> u64 {
        let b = block.clone();
        std::thread::spawn(move || b.mapping().words()[page * 512].load(Ordering::Relaxed))
            .join()
            .unwrap()
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no userfaultfd")]
    fn direct_accesses_to_missing_pages_wait_for_them_through_userfaultfd() {
        let block = Arc::new(RamBlock::new("uf", 16 * 4096).unwrap());
        let fetched = Arc::new(Pattern(Default::default()));
        block
            .fetch_on_demand_userfault(Box::new(fetched.clone()))
            .expect("userfaultfd (this runs as root)");
        // A missing page: the access faults, the page is fetched (with the missing
        // pages after it) and placed, and the access sees it.
        assert_eq!(direct_read(&block, 3), u64::from_ne_bytes([3; 8]));
        assert_eq!(fetched.0.lock().unwrap().first(), Some(&3));
        // A page that came as a zero page and was never written: no fetch, zeros.
        let block2 = Arc::new(RamBlock::new("uf2", 16 * 4096).unwrap());
        let fetched2 = Arc::new(Pattern(Default::default()));
        block2
            .fetch_on_demand_userfault(Box::new(fetched2.clone()))
            .unwrap();
        block2.zero_page(5);
        block2.load_page(6, &[6; 4096]);
        assert_eq!(direct_read(&block2, 5), 0);
        assert_eq!(direct_read(&block2, 6), u64::from_ne_bytes([6; 8]));
        assert!(fetched2.0.lock().unwrap().is_empty(), "nothing was fetched");
        // Discarded: missing again, in the kernel too; the next access fetches it.
        assert!(block2.discard_pages(6, 1));
        assert!(block2.page_missing(6));
        assert_eq!(direct_read(&block2, 6), u64::from_ne_bytes([6; 8]));
        // The access went on once its page was placed; the fetch places the missing
        // pages after it too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while block2.page_missing(15) {
            assert!(
                std::time::Instant::now() < deadline,
                "the fetch never ended"
            );
            std::thread::yield_now();
        }
        assert_eq!(*fetched2.0.lock().unwrap(), (6..16).collect::<Vec<_>>());
    }

    #[test]
    fn unaligned_writes_read_back_and_mark_every_touched_page() {
        let b = RamBlock::new("r", 3 * 4096).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        b.write(4090, &data);
        let mut out = vec![0u8; 5000];
        b.read(4090, &mut out);
        assert_eq!(out, data);
        assert_eq!(b.dirty().count(), 3);
    }

    #[test]
    fn written_zeros_and_untouched_pages_are_both_zero_pages() {
        let b = RamBlock::new("r", 3 * 4096).unwrap();
        b.write(4096, &[0; 16]);
        b.write(8192 + 4095, &[1]);
        assert!(!b.is_populated(0) && b.page_is_zero(0));
        assert!(b.is_populated(1) && b.page_is_zero(1));
        assert!(!b.page_is_zero(2));
        let untouched = RamBlock::new("u", 4096).unwrap().page_checksum(0);
        assert_eq!(b.page_checksum(0), untouched);
        assert_eq!(b.page_checksum(1), untouched);
        assert_ne!(b.page_checksum(2), untouched);
    }

    #[test]
    fn loading_a_zero_page_clears_a_written_page() {
        let b = RamBlock::new("r", 4096).unwrap();
        b.load_page(0, &[0xff; 4096]);
        assert!(!b.page_is_zero(0));
        b.zero_page(0);
        assert!(b.page_is_zero(0));
        let mut out = [1u8; 8];
        b.read(4088, &mut out);
        assert_eq!(out, [0; 8]);
    }

    #[test]
    fn sizes_must_be_page_multiples() {
        assert!(RamBlock::new("r", 4097).is_err());
        assert!(RamBlock::new("", 4096).is_err());
        assert!(RamBlock::with_page_size("r", 4096, 512).is_err());
        assert!(RamBlock::with_page_size("r", 4 << 20, 2 << 20).is_err());
    }

    #[test]
    fn page_copy_and_load_are_inverse() {
        let a = RamBlock::new("a", 8192).unwrap();
        a.write(4096, &[7; 100]);
        let mut page = vec![0; 4096];
        a.copy_page(1, &mut page);
        let b = RamBlock::new("b", 8192).unwrap();
        b.load_page(1, &page);
        assert_eq!(a.page_checksum(1), b.page_checksum(1));
        b.zero_page(1);
        assert_eq!(
            b.page_checksum(1),
            RamBlock::new("c", 4096).unwrap().page_checksum(0)
        );
    }
}
