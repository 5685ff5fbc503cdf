//! Guest RAM: blocks with dirty tracking, and the `ram` iterative handler that sends
//! them in QEMU's RAM section format (spec section 5).

mod block;
mod dirty;
pub mod format;
mod handler;
mod zero;

pub use block::{DEFAULT_PAGE_SIZE, RamBlock};
pub use dirty::DirtyBitmap;
pub use handler::{RAM_VERSION, RamCounters, RamHandler, RamStats};
pub use zero::is_zero;
