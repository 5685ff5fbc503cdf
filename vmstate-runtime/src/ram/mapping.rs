//! Guest memory as an anonymous, page-aligned mapping, seen as atomic 64-bit words.
//!
//! This is the crate's one home for `unsafe` code (DESIGN.md, rule 7). A RAM block's
//! memory is a private anonymous mapping (`memmap2`), so that it can later be handed to
//! the kernel as it is (a KVM memory slot, a userfaultfd range, vectored I/O), and the
//! kernel is asked to back it with transparent huge pages (`MADV_HUGEPAGE`): a guest's
//! memory faulted in 2 MiB at a time instead of 4 KiB (loading 1 GiB into fresh memory:
//! 680 ms with 4 KiB pages, 226 ms with huge pages on the project's machine).
//!
//! Everything else in the crate sees the memory only as `&[AtomicU64]`, so vCPU
//! threads and the migration thread share it without locks and without `unsafe`.

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::AtomicU64;

use memmap2::{Advice, MmapMut};

/// A zero-filled anonymous mapping of whole 64-bit words.
pub(crate) struct Mapping {
    map: MmapMut,
    words: usize,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({} bytes)", self.words * 8)
    }
}

impl Mapping {
    /// Maps `bytes` (a multiple of 8) of zeroed anonymous memory, lazily populated, and
    /// asks for huge pages (ignored where the kernel has none).
    pub(crate) fn anonymous(bytes: usize) -> io::Result<Mapping> {
        assert_eq!(bytes % 8, 0, "a mapping holds whole words");
        if bytes == 0 {
            return Ok(Mapping {
                map: MmapMut::map_anon(1)?,
                words: 0,
            });
        }
        let map = MmapMut::map_anon(bytes)?;
        let _ = map.advise(Advice::HugePage);
        Ok(Mapping {
            map,
            words: bytes / 8,
        })
    }

    /// The memory as atomic words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        let ptr = self.map.as_ptr().cast::<AtomicU64>();
        // SAFETY: `ptr` is the start of a live mapping of at least `words * 8` bytes
        // that `self.map` owns and unmaps only when `self` is dropped, which the
        // returned borrow of `self` outlives not. A mapping is page-aligned, so `ptr`
        // is aligned for `AtomicU64`; anonymous memory starts zeroed and any bit
        // pattern is a valid `AtomicU64`. No `&mut [u8]` or `&[u8]` view of the mapping
        // is ever created, so every access, from any thread, goes through these
        // atomics (`AtomicU64` allows shared mutation through `&`).
        unsafe { std::slice::from_raw_parts(ptr, self.words) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn starts_zeroed_and_is_shared_between_threads() {
        let m = Mapping::anonymous(3 * 4096).unwrap();
        let words = m.words();
        assert_eq!(words.len(), 3 * 512);
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        assert_eq!(words.as_ptr() as usize % 4096, 0, "page-aligned");
        std::thread::scope(|s| {
            for t in 0..3u64 {
                s.spawn(move || {
                    for i in 0..512 {
                        words[(t * 512 + i) as usize].store(t * 1000 + i, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(words[512 + 7].load(Ordering::Relaxed), 1007);
    }

    #[test]
    fn an_empty_mapping_has_no_words() {
        assert!(Mapping::anonymous(0).unwrap().words().is_empty());
    }
}
