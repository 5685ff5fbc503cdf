//! A dirty-page bitmap that guest (vCPU) threads mark while a migration thread reads
//! and clears it: one bit per page in atomic 64-bit words.
//!
//! Ordering: a writer stores the page data, then marks the page with a `Release`
//! read-modify-write; the migration thread clears a word with an `Acquire` swap before
//! it reads the pages. A write that lands after the swap sets the bit again, so the
//! page is sent again later; a write whose mark the swap saw is visible to the read.
//! The mark is always a real `fetch_or` (never skipped when the bit looks set): a
//! skipped mark would publish nothing, and the swap could then miss that write.

use std::sync::atomic::{AtomicU64, Ordering};

/// One bit per page.
#[derive(Debug)]
pub struct DirtyBitmap {
    words: Box<[AtomicU64]>,
    pages: usize,
}

impl DirtyBitmap {
    /// A clean bitmap for `pages` pages.
    pub fn new(pages: usize) -> Self {
        DirtyBitmap {
            words: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            pages,
        }
    }

    /// The number of pages covered.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The number of 64-bit words.
    pub fn words(&self) -> usize {
        self.words.len()
    }

    /// Marks page `page` dirty (called after writing the page's data).
    #[inline]
    pub fn mark(&self, page: usize) {
        self.words[page / 64].fetch_or(1 << (page % 64), Ordering::Release);
    }

    /// Marks page `page`; true if this call set the bit (it was clear before).
    #[inline]
    pub fn test_and_mark(&self, page: usize) -> bool {
        let bit = 1 << (page % 64);
        self.words[page / 64].fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// Clears page `page`; true if it was set.
    #[inline]
    pub fn test_and_clear(&self, page: usize) -> bool {
        let bit = 1 << (page % 64);
        self.words[page / 64].fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Marks page `page` unless it is already marked, without the release ordering of
    /// [`mark`](Self::mark): for monotonic flags read only while writers are stopped.
    #[inline]
    pub fn mark_relaxed(&self, page: usize) {
        let word = &self.words[page / 64];
        let bit = 1 << (page % 64);
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// Marks pages `first..=last` dirty.
    pub fn mark_range(&self, first: usize, last: usize) {
        for page in first..=last.min(self.pages.saturating_sub(1)) {
            self.mark(page);
        }
    }

    /// Marks every page dirty (the start of a migration: everything must be sent).
    pub fn mark_all(&self) {
        for (i, w) in self.words.iter().enumerate() {
            w.fetch_or(self.valid_mask(i), Ordering::Release);
        }
    }

    /// ORs `bits` into word `i` (merging an external dirty log).
    #[inline]
    pub fn or_word(&self, i: usize, bits: u64) {
        if bits != 0 {
            self.words[i].fetch_or(bits, Ordering::Release);
        }
    }

    /// Clears every bit.
    pub fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Release);
        }
    }

    /// Whether page `page` is dirty.
    pub fn is_dirty(&self, page: usize) -> bool {
        self.words[page / 64].load(Ordering::Relaxed) & (1 << (page % 64)) != 0
    }

    /// [`is_dirty`](Self::is_dirty) with acquire ordering: what was written before
    /// the page was marked is visible after this returns true.
    pub fn is_marked(&self, page: usize) -> bool {
        self.words[page / 64].load(Ordering::Acquire) & (1 << (page % 64)) != 0
    }

    /// Reads word `i` without clearing it (cheap pre-check before [`take_word`]).
    ///
    /// [`take_word`]: Self::take_word
    #[inline]
    pub fn peek_word(&self, i: usize) -> u64 {
        self.words[i].load(Ordering::Relaxed)
    }

    /// Takes and clears word `i`: the pages whose bits are returned must be sent.
    #[inline]
    pub fn take_word(&self, i: usize) -> u64 {
        self.words[i].swap(0, Ordering::Acquire)
    }

    /// Number of dirty pages.
    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as u64)
            .sum()
    }

    fn valid_mask(&self, word: usize) -> u64 {
        let left = self.pages - word * 64;
        if left >= 64 {
            u64::MAX
        } else {
            (1u64 << left) - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_all_covers_exactly_the_pages() {
        let b = DirtyBitmap::new(70);
        b.mark_all();
        assert_eq!(b.count(), 70);
        assert_eq!(b.take_word(1), (1 << 6) - 1);
        assert_eq!(b.count(), 64);
    }

    #[test]
    fn take_clears_and_marks_after_take_are_kept() {
        let b = DirtyBitmap::new(128);
        b.mark(3);
        b.mark(64);
        assert_eq!(b.take_word(0), 1 << 3);
        b.mark(5);
        assert!(b.is_dirty(5) && !b.is_dirty(3));
        assert_eq!(b.count(), 2);
    }
}
