//! What the RAM handler needs from guest memory, so that it works over this crate's
//! [`RamBlock`](super::RamBlock) and over other VMMs' memory (the `vm-memory` adapter).
//!
//! A block has a *migration bitmap* (a [`DirtyBitmap`]) that the handler reads and
//! clears. Memory that tracks writes elsewhere (a hypervisor's dirty log, vm-memory's
//! `AtomicBitmap`) merges that log into the migration bitmap in
//! [`sync_dirty`](GuestRam::sync_dirty), which the handler calls at setup, before every
//! round and before completion: QEMU's `migration_bitmap_sync`.

use super::dirty::DirtyBitmap;
use super::mapping::GuestPages;

/// One block of guest RAM as the `ram` handler sees it.
pub trait GuestRam: Send + Sync {
    /// The block's name (its idstr in the stream).
    fn name(&self) -> &str;
    /// Size in bytes.
    fn len(&self) -> u64;
    /// True for a zero-sized block.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The page size (a power of two, at least 1 KiB).
    fn page_size(&self) -> usize;
    /// The migration bitmap: one bit per page, set when the page must be (re)sent.
    fn migration_bitmap(&self) -> &DirtyBitmap;
    /// Merges writes tracked elsewhere into the migration bitmap. Default: nothing
    /// (writes mark the migration bitmap directly).
    fn sync_dirty(&self) {}
    /// Whether page `page` is all zero, if the block can tell without copying it
    /// (`None`: the handler copies the page and checks the copy).
    fn page_is_zero(&self, _page: usize) -> Option<bool> {
        None
    }
    /// Copies page `page` into `out` (one page long).
    fn copy_page(&self, page: usize, out: &mut [u8]);
    /// Page `page` where it is, for a writer that can send it without copying it
    /// (`None`, the default: the handler copies it with [`copy_page`](Self::copy_page)).
    fn page_in_place(&self, _page: usize) -> Option<GuestPages> {
        None
    }
    /// Writes a page received from a stream.
    fn load_page(&self, page: usize, data: &[u8]);
    /// Writes `data` at byte `at` of page `page` (an XBZRLE record's changed run),
    /// leaving the rest of the page as it is. The default reads the page, patches the
    /// copy and loads it back.
    ///
    /// Panics if the range is outside the page.
    fn patch_page(&self, page: usize, at: usize, data: &[u8]) {
        let mut copy = vec![0; self.page_size()];
        self.copy_page(page, &mut copy);
        copy[at..at + data.len()].copy_from_slice(data);
        self.load_page(page, &copy);
    }
    /// Zeroes a page received as a zero page.
    fn zero_page(&self, page: usize);
    /// Reads `count` pages from `page` on straight from `file` at `offset` (a
    /// mapped-ram file's pages, positioned reads into guest memory), or `None` when
    /// this memory cannot (the default: the caller reads them and loads each page).
    fn read_pages_at(
        &self,
        _page: usize,
        _count: usize,
        _file: &std::fs::File,
        _offset: u64,
    ) -> Option<std::io::Result<()>> {
        None
    }
    /// Fetches pages on first touch through `fetcher` from now on, or `None` when this
    /// memory cannot (the default). See [`super::on_demand`].
    fn fetch_on_demand(
        &self,
        _fetcher: Box<dyn super::on_demand::PageFetcher>,
    ) -> Option<crate::Result<()>> {
        None
    }
    /// Whether page `page` is still to come (it fetches on demand and is not in
    /// place). Default: never.
    fn page_missing(&self, _page: usize) -> bool {
        false
    }
    /// Pages still to come (0 for memory that does not fetch on demand).
    fn missing_pages(&self) -> u64 {
        0
    }
    /// Makes pages `first .. first + count` missing again (postcopy's discard), for
    /// memory that fetches on demand; `false` when this memory cannot.
    fn discard_pages(&self, _first: usize, _count: usize) -> bool {
        false
    }
}
