//! Guest memory from rust-vmm's `vm-memory` (feature `vm-memory`): a region of a
//! `GuestMemoryMmap<AtomicBitmap>` as a [`GuestRam`] block.
//!
//! vm-memory marks its `AtomicBitmap` on every write made through its API (and a VMM
//! merges KVM's dirty log into it the same way). [`GuestRam::sync_dirty`] takes that
//! bitmap with `get_and_reset` and merges it into the block's migration bitmap, as QEMU
//! syncs the KVM log into its migration bitmap. Pages are copied with vm-memory's
//! volatile copies.

use std::sync::Arc;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
    MmapRegion,
};

use super::dirty::DirtyBitmap;
use super::guest_ram::GuestRam;
use crate::error::{Error, Result};

/// The page size vm-memory's `AtomicBitmap` tracks when built by `from_ranges`.
const PAGE_SIZE: usize = 4096;

/// One region of a vm-memory guest memory, as a RAM block.
///
/// ```
/// use std::sync::Arc;
/// use vm_memory::{bitmap::AtomicBitmap, Bytes, GuestAddress, GuestMemoryMmap};
/// use vmstate::ram::{RamHandler, VmMemoryRam};
///
/// let mem: Arc<GuestMemoryMmap<AtomicBitmap>> =
///     Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
/// let ram = Arc::new(VmMemoryRam::new("pc.ram", mem.clone(), GuestAddress(0)).unwrap());
/// mem.write_slice(b"hello", GuestAddress(0x1000)).unwrap();
/// let handler = RamHandler::new(vec![ram]).unwrap();
/// ```
pub struct VmMemoryRam {
    name: String,
    mem: Arc<GuestMemoryMmap<AtomicBitmap>>,
    base: GuestAddress,
    len: u64,
    migration: DirtyBitmap,
}

impl VmMemoryRam {
    /// The region of `mem` that starts at guest address `base`, named `name`.
    pub fn new(
        name: impl Into<String>,
        mem: Arc<GuestMemoryMmap<AtomicBitmap>>,
        base: GuestAddress,
    ) -> Result<Self> {
        let name = name.into();
        let region = mem
            .find_region(base)
            .filter(|r| r.start_addr() == base)
            .ok_or_else(|| {
                Error::invalid(
                    "vm-memory region",
                    format!("no region starts at 0x{:x}", base.0),
                )
            })?;
        let len = region.len();
        if len % PAGE_SIZE as u64 != 0 {
            return Err(Error::invalid(
                "vm-memory region",
                format!("'{name}' is {len} bytes, not a multiple of {PAGE_SIZE}"),
            ));
        }
        let pages = (len / PAGE_SIZE as u64) as usize;
        if MmapRegion::bitmap(region).len() != pages {
            return Err(Error::invalid(
                "vm-memory region",
                format!("'{name}': its dirty bitmap does not track {PAGE_SIZE}-byte pages"),
            ));
        }
        Ok(VmMemoryRam {
            name,
            mem,
            base,
            len,
            migration: DirtyBitmap::new(pages),
        })
    }

    fn region(&self) -> &vm_memory::GuestRegionMmap<AtomicBitmap> {
        self.mem
            .find_region(self.base)
            .expect("the region was found at construction and guest memory is immutable")
    }

    fn page_slice(
        &self,
        page: usize,
    ) -> vm_memory::VolatileSlice<'_, vm_memory::bitmap::BS<'_, AtomicBitmap>> {
        self.region()
            .get_slice(MemoryRegionAddress((page * PAGE_SIZE) as u64), PAGE_SIZE)
            .expect("page index checked by the caller")
    }
}

impl GuestRam for VmMemoryRam {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn page_size(&self) -> usize {
        PAGE_SIZE
    }
    fn migration_bitmap(&self) -> &DirtyBitmap {
        &self.migration
    }
    fn sync_dirty(&self) {
        let log = MmapRegion::bitmap(self.region()).get_and_reset();
        for (i, bits) in log.into_iter().enumerate() {
            self.migration.or_word(i, bits);
        }
    }
    fn copy_page(&self, page: usize, out: &mut [u8]) {
        self.page_slice(page).copy_to(out);
    }
    fn load_page(&self, page: usize, data: &[u8]) {
        self.page_slice(page).copy_from(data);
    }
    fn zero_page(&self, page: usize) {
        self.page_slice(page).copy_from(&[0u8; PAGE_SIZE][..]);
    }
}
