//! # vmstate
//!
//! Save, restore and live-migrate virtual-machine state the way QEMU does, in QEMU's
//! migration stream format.
//!
//! Describe a device's state with `#[derive(VmState)]`; the derive emits a static
//! [`VmStateDescription`] and straight-line save/load code that follows QEMU's
//! versioning rules (section version, minimum version, per-field `since`, subsections
//! sent only when needed).
//!
//! ```
//! use vmstate::{Timer, VmState};
//!
//! #[derive(VmState, Default, Debug, PartialEq)]
//! #[vmstate(name = "serial", version = 3, min_version = 2)]
//! struct Serial {
//!     divider: u16,
//!     lsr: u8,
//!     #[vmstate(since = 3)]
//!     scr: u8,
//!     fifo_len: u8,
//!     #[vmstate(len = fifo_len)]
//!     fifo: Vec<u8>,
//!     #[vmstate(unused = 4)]
//!     _gap: (),
//!     timeout: Timer,
//!     #[vmstate(subsection, needed = Self::has_poll)]
//!     poll: SerialPoll,
//!     #[vmstate(skip)]
//!     irq_raised: bool,
//! }
//!
//! #[derive(VmState, Default, Debug, PartialEq)]
//! #[vmstate(name = "serial/poll", version = 1)]
//! struct SerialPoll {
//!     interval_ns: u64,
//! }
//!
//! impl Serial {
//!     fn has_poll(&self) -> bool {
//!         self.poll.interval_ns != 0
//!     }
//! }
//!
//! let mut dev = Serial { divider: 12, fifo_len: 2, fifo: vec![b'h', b'i'], ..Default::default() };
//! let bytes = dev.to_bytes().unwrap();
//!
//! // Load a version-2 stream (no `scr`) over a live device: skipped fields keep their value.
//! let mut v2 = bytes.clone();
//! v2.remove(3); // drop `scr`
//! let mut restored = Serial { irq_raised: true, ..Default::default() };
//! restored.load_bytes(&v2, 2).unwrap();
//! assert_eq!(restored.fifo, b"hi");
//! assert!(restored.irq_raised);
//! ```
//!
//! The wire format is described in `docs/` and in QEMU's own documentation; the
//! modules are:
//! - [`wire`]: the big-endian [`Reader`] and [`Writer`];
//! - [`description`]: the static description types;
//! - [`VmState`] / [`VmElem`]: the traits the derive implements;
//! - [`save_context`]: the save context trait and the vmdesc [`Describer`];
//! - [`save_policy`]: which versions and subsections a device section is written with;
//! - [`qjson`]: JSON written exactly as QEMU writes it;
//! - [`Error`]: one error type with the field path, byte offset and section.

#[allow(unused_extern_crates)] // lets the derive's `::vmstate` paths work in-crate
extern crate self as vmstate;

pub mod description;
mod error;
pub mod handler;
pub mod json;
pub mod list;
pub mod migrate;
pub mod multifd;
pub mod pointers;
pub mod qjson;
pub mod ram;
pub mod registry;
pub mod release;
pub mod save_context;
pub mod save_policy;
pub mod schema;
mod state;
pub mod stream;
mod timer;
pub mod tmp;
pub mod transport;
pub mod tree;
pub mod wire;

#[doc(hidden)]
pub mod derive_support;

pub use description::{Count, Field, FieldType, Info, LenType, ListKind, VmStateDescription};
pub use error::{Error, ErrorKind, HookError, PathSegment, Result, SectionRef};
pub use handler::{IterationStatus, IterativeHandler, Pending, Phase};
pub use list::VmList;
pub use pointers::VmNullable;
pub use registry::{Device, Priority, Registration, Registry, SectionHandle, SectionInfo};
pub use save_context::{Describer, PlainSave, SaveContext};
pub use save_policy::{SavePolicy, StreamSaveCtx};
pub use state::{VmElem, VmState};
pub use timer::Timer;
pub use tmp::{Tmp, VmTmp};
pub use tree::{GtreeKey, VmTree};
pub use wire::{Limits, Reader, Writer};

/// `#[derive(VmState)]`: see `docs/attributes.md` for every attribute.
pub use vmstate_derive::VmState;

/// Paths used by the generated code. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::derive_support::*;
    pub use crate::description::{Count, Field, FieldType, LenType, ListKind, VmStateDescription};
    pub use crate::error::{Error, Result};
    pub use crate::list::{VmList, load_list, save_list};
    pub use crate::pointers::{VmNullable, load_pointer_array, save_pointer_array};
    pub use crate::save_context::SaveContext;
    pub use crate::state::{VmElem, VmState};
    pub use crate::tmp::{Tmp, VmTmp, apply_tmp, load_tmp, make_tmp, save_tmp, tmp_loadable};
    pub use crate::tree::{GtreeKey, VmTree, load_tree, save_tree};
    pub use crate::wire::{Reader, Writer};
}
