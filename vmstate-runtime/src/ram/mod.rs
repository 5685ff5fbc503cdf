//! Guest RAM: blocks with dirty tracking, and the `ram` iterative handler that sends
//! them in QEMU's RAM section format (spec section 5).

mod block;
mod dirty;
pub mod format;
mod guest_ram;
mod handler;
#[cfg(feature = "kvm")]
mod kvm;
pub mod mapped_ram;
pub(crate) mod mapping;
pub mod on_demand;
mod page_cache;
pub mod postcopy;
pub mod preempt;
pub mod records;
#[cfg(feature = "vm-memory")]
mod vm_memory;
pub mod xbzrle;
mod zero;

pub use block::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, RamBlock};
pub use dirty::DirtyBitmap;
pub use guest_ram::GuestRam;
pub use handler::{MAX_ROUND_TIME, RAM_VERSION, RamCounters, RamHandler, RamStats};
#[cfg(feature = "kvm")]
pub use kvm::{KvmRam, set_vcpu_xsave};
pub use mapping::GuestPages;
#[cfg(feature = "vm-memory")]
pub use vm_memory::VmMemoryRam;
pub use zero::is_zero;
