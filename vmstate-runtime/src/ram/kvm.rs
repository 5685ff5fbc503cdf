//! A [`RamBlock`] as the memory slot of a KVM virtual machine (feature `kvm`), with
//! KVM's dirty log feeding the migration bitmap.
//!
//! KVM's vCPUs write guest memory directly, behind the block's back, so nothing marks
//! their pages dirty as [`RamBlock::write`] does. The slot is created with
//! `KVM_MEM_LOG_DIRTY_PAGES`, and [`GuestRam::sync_dirty`] (which the `ram` handler
//! calls at setup, before every round and before completion, QEMU's
//! `migration_bitmap_sync`) reads the log with `KVM_GET_DIRTY_LOG`, which also clears
//! it, and merges it into the block's bitmap with [`RamBlock::note_guest_writes`].

use std::sync::Arc;

use kvm_ioctls::VmFd;

use super::block::{DEFAULT_PAGE_SIZE, RamBlock};
use super::dirty::DirtyBitmap;
use super::guest_ram::GuestRam;
use super::mapping::{GuestPages, KvmSlot};
use crate::error::{Error, Result};

/// A RAM block that is also guest memory of a KVM VM, in one memory slot.
///
/// The slot is deleted when the `KvmRam` is dropped. The block can still be written
/// through [`RamBlock::write`] (loading a kernel, device DMA), and loaded into by a
/// destination before its vCPUs run.
pub struct KvmRam {
    block: Arc<RamBlock>,
    slot: KvmSlot,
}

impl KvmRam {
    /// Makes `block` guest physical memory at `guest_phys_addr` in memory slot `slot`
    /// of `vm`, with KVM's dirty log on. The block's page size must be 4 KiB (the
    /// granule of KVM's log).
    pub fn new(
        block: Arc<RamBlock>,
        vm: Arc<VmFd>,
        slot: u32,
        guest_phys_addr: u64,
    ) -> Result<KvmRam> {
        if block.page_size() != DEFAULT_PAGE_SIZE {
            return Err(Error::invalid(
                "KVM memory slot",
                format!(
                    "block '{}' has {}-byte pages; KVM's dirty log tracks 4 KiB pages",
                    block.name(),
                    block.page_size()
                ),
            ));
        }
        let slot =
            KvmSlot::register(vm, slot, guest_phys_addr, block.mapping().clone()).map_err(|e| {
                Error::invalid(
                    "KVM memory slot",
                    format!("cannot make '{}' a memory slot: {e}", block.name()),
                )
            })?;
        Ok(KvmRam { block, slot })
    }

    /// The block.
    pub fn block(&self) -> &Arc<RamBlock> {
        &self.block
    }
}

/// Gives a stopped vCPU of `vm` its XSAVE area (`KVM_SET_XSAVE`: x87, SSE, AVX and
/// later registers), as read with `VcpuFd::get_xsave`. kvm-ioctls makes this call
/// `unsafe`, as KVM may read more than the 4 KiB `kvm_xsave` on a VM with dynamically
/// enabled features (AMX); this asks KVM for the VM's area size first and refuses such
/// VMs with an error.
pub fn set_vcpu_xsave(
    vm: &VmFd,
    vcpu: &kvm_ioctls::VcpuFd,
    xsave: &kvm_bindings::kvm_xsave,
) -> Result<()> {
    super::mapping::set_xsave(vm, vcpu, xsave)
        .map_err(|e| Error::invalid("vCPU XSAVE area", format!("KVM_SET_XSAVE failed: {e}")))
}

impl GuestRam for KvmRam {
    fn name(&self) -> &str {
        self.block.name()
    }
    fn len(&self) -> u64 {
        self.block.len()
    }
    fn page_size(&self) -> usize {
        self.block.page_size()
    }
    fn migration_bitmap(&self) -> &DirtyBitmap {
        self.block.dirty()
    }
    /// Merges KVM's dirty log (and clears it). If the log cannot be read, every page is
    /// taken as written: sending pages twice is better than losing one.
    fn sync_dirty(&self) {
        let words = self.block.dirty().words();
        match self
            .slot
            .vm()
            .get_dirty_log(self.slot.slot(), self.block.len() as usize)
        {
            Ok(log) => {
                for (i, bits) in log.into_iter().enumerate().take(words) {
                    self.block.note_guest_writes(i, bits);
                }
            }
            Err(_) => {
                let pages = self.block.pages();
                for i in 0..words {
                    // Bits past the last page stay clear.
                    let valid = match (i + 1) * 64 <= pages {
                        true => u64::MAX,
                        false => (1u64 << (pages % 64)) - 1,
                    };
                    self.block.note_guest_writes(i, valid);
                }
            }
        }
    }
    fn page_is_zero(&self, page: usize) -> Option<bool> {
        Some(self.block.page_is_zero(page))
    }
    fn copy_page(&self, page: usize, out: &mut [u8]) {
        self.block.copy_page(page, out)
    }
    fn page_in_place(&self, page: usize) -> Option<GuestPages> {
        Some(self.block.page_in_place(page))
    }
    fn load_page(&self, page: usize, data: &[u8]) {
        self.block.load_page(page, data)
    }
    fn patch_page(&self, page: usize, at: usize, data: &[u8]) {
        self.block.patch_page(page, at, data)
    }
    fn zero_page(&self, page: usize) {
        self.block.zero_page(page)
    }
    fn fetch_on_demand(
        &self,
        fetcher: Box<dyn super::on_demand::PageFetcher>,
    ) -> Option<Result<()>> {
        // KVM's vCPUs touch the memory directly: missing pages come through
        // userfaultfd.
        Some(self.block.fetch_on_demand_userfault(fetcher))
    }
    fn page_missing(&self, page: usize) -> bool {
        self.block.page_missing(page)
    }
    fn missing_pages(&self) -> u64 {
        self.block.missing_pages()
    }
    fn discard_pages(&self, first: usize, count: usize) -> bool {
        self.block.discard_pages(first, count)
    }
}
