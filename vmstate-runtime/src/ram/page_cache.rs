//! The sender's XBZRLE cache: copies of pages as last sent, so that the next time a
//! page goes out only its changes need to (QEMU's `migration/page_cache.c`).
//!
//! Direct-mapped: a page (numbered across all blocks) has one slot, the page number
//! modulo the slot count (a power of two). A slot holding another page is taken over
//! only when that page has not been sent for [`LIFETIME`] passes, as QEMU does, so that
//! a working set larger than the cache keeps part of itself cached instead of evicting
//! itself in turn. The destination keeps no cache: its copy of a page is the page.

/// Passes a cached page keeps its slot against other pages.
pub(crate) const LIFETIME: u64 = 2;

/// A slot's owner: the page and the pass it was last stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    page: u64,
    age: u64,
}

/// Page copies in a fixed amount of memory.
#[derive(Debug)]
pub(crate) struct PageCache {
    page_size: usize,
    tags: Vec<Option<Tag>>,
    /// `tags.len()` pages, slot after slot (zero-filled, touched on first use).
    data: Vec<u8>,
}

impl PageCache {
    /// A cache of at most `bytes` (rounded down to a power-of-two number of pages,
    /// at least one).
    pub(crate) fn new(bytes: u64, page_size: usize) -> PageCache {
        let pages = (bytes / page_size as u64).max(1);
        let slots = 1usize << (63 - pages.leading_zeros()).min(40);
        PageCache {
            page_size,
            tags: vec![None; slots],
            data: vec![0; slots * page_size],
        }
    }

    /// The cache's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn slot(&self, page: u64) -> usize {
        (page & (self.tags.len() as u64 - 1)) as usize
    }

    fn bytes_mut(&mut self, slot: usize) -> &mut [u8] {
        &mut self.data[slot * self.page_size..(slot + 1) * self.page_size]
    }

    /// The cached copy of `page`, if it has one; storing into it (a page sent again)
    /// renews its age to `age`.
    pub(crate) fn get_mut(&mut self, page: u64, age: u64) -> Option<&mut [u8]> {
        let slot = self.slot(page);
        match &mut self.tags[slot] {
            Some(tag) if tag.page == page => {
                tag.age = age;
                Some(self.bytes_mut(slot))
            }
            _ => None,
        }
    }

    /// Stores `data` as the copy of `page` in pass `age`; false when the slot belongs
    /// to another page sent within [`LIFETIME`] passes.
    pub(crate) fn insert(&mut self, page: u64, age: u64, data: &[u8]) -> bool {
        let slot = self.slot(page);
        if let Some(tag) = self.tags[slot]
            && tag.page != page
            && tag.age + LIFETIME > age
        {
            return false;
        }
        self.tags[slot] = Some(Tag { page, age });
        self.bytes_mut(slot).copy_from_slice(data);
        true
    }

    /// Forgets `page` (it went out as a zero page: the copy no longer matches what the
    /// destination holds).
    pub(crate) fn forget(&mut self, page: u64) {
        let slot = self.slot(page);
        if self.tags[slot].is_some_and(|t| t.page == page) {
            self.tags[slot] = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_rounds_down_to_a_power_of_two_pages() {
        assert_eq!(PageCache::new(64 << 20, 4096).size(), 64 << 20);
        assert_eq!(PageCache::new(3 * 4096, 4096).size(), 2 * 4096);
        assert_eq!(PageCache::new(1, 4096).size(), 4096);
    }

    #[test]
    fn a_fresh_page_keeps_its_slot_and_an_old_one_gives_it_up() {
        let mut c = PageCache::new(4 * 4096, 4096);
        assert!(c.insert(1, 0, &[1; 4096]));
        assert!(!c.insert(5, 1, &[5; 4096]), "page 1 was sent a pass ago");
        assert_eq!(c.get_mut(1, 1).unwrap()[0], 1);
        assert!(c.get_mut(5, 1).is_none());
        assert!(c.insert(5, 3, &[5; 4096]), "page 1 is two passes old");
        assert!(c.get_mut(1, 3).is_none());
        assert_eq!(c.get_mut(5, 3).unwrap()[0], 5);
        c.forget(5);
        assert!(c.get_mut(5, 3).is_none());
    }
}
