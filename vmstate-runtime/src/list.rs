//! Lists of described elements: QEMU's `VMSTATE_QTAILQ_V` and `VMSTATE_QLIST_V`.
//!
//! On the wire each element is a `0x01` marker and the element's state (its fields,
//! then its subsections); `0x00` ends the list. There is no count. QEMU saves each
//! element at its own version and loads it at the *field's* version (the `_V`
//! argument, our `since`; a field without `since` loads its elements at their own
//! version), after checking that version against the element's `[min_version,
//! version]`; both list kinds keep the saved order on load. Like QEMU, any non-zero
//! marker means "another element".
//!
//! A field holds a list through [`VmList`], implemented for `Vec<T>` and `VecDeque<T>`;
//! a load replaces the list's contents (QEMU appends to whatever the list holds and
//! leaves it to the device's `pre_load` to empty it first).
//!
//! ```
//! use std::collections::VecDeque;
//! use vmstate::VmState;
//!
//! #[derive(VmState, Default, Debug, PartialEq)]
//! #[vmstate(name = "req")]
//! struct Request { id: u32 }
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "queue")]
//! struct Queue {
//!     #[vmstate(qtailq)]
//!     pending: VecDeque<Request>,
//! }
//!
//! let mut q = Queue { pending: VecDeque::from([Request { id: 7 }]) };
//! let bytes = q.to_bytes().unwrap();
//! assert_eq!(bytes, [1, 0, 0, 0, 7, 0]);
//! let mut back = Queue::default();
//! back.load_bytes(&bytes, 1).unwrap();
//! assert_eq!(back.pending, [Request { id: 7 }]);
//! ```

use std::collections::VecDeque;

use crate::derive_support::{check_version, save_single};
use crate::description::Field;
use crate::error::Result;
use crate::save_context::SaveContext;
use crate::state::VmState;
use crate::wire::{Reader, Writer};

/// The marker before each element.
const MORE: u8 = 0x01;
/// The marker that ends the list.
const END: u8 = 0x00;

/// A container a `qtailq` or `qlist` field can hold its elements in.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold a `qtailq`/`qlist` field",
    label = "a list field is a `Vec<T>` or `VecDeque<T>` of a type that derives `VmState`",
    note = "implement `vmstate::VmList` for your own list type"
)]
pub trait VmList {
    /// The element type, with its own description.
    type Elem: VmState + Default;
    /// Every element, in list order.
    fn elems_mut(&mut self) -> impl Iterator<Item = &mut Self::Elem>;
    /// Empties the list before a load.
    fn clear(&mut self);
    /// Appends a loaded element.
    fn push(&mut self, elem: Self::Elem);
}

impl<T: VmState + Default> VmList for Vec<T> {
    type Elem = T;
    fn elems_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.iter_mut()
    }
    fn clear(&mut self) {
        Vec::clear(self)
    }
    fn push(&mut self, elem: T) {
        Vec::push(self, elem)
    }
}

impl<T: VmState + Default> VmList for VecDeque<T> {
    type Elem = T;
    fn elems_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.iter_mut()
    }
    fn clear(&mut self) {
        VecDeque::clear(self)
    }
    fn push(&mut self, elem: T) {
        self.push_back(elem)
    }
}

/// Saves a list field: a marker and the state of each element, then the end marker.
/// Described as one vmdesc entry holding every element's description.
pub fn save_list<L: VmList, C: SaveContext>(
    list: &mut L,
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    save_single(field, w, ctx, |w, ctx| {
        for (i, elem) in list.elems_mut().enumerate() {
            w.put_u8(MORE);
            elem.save_state(w, ctx).map_err(|e| e.at_index(i))?;
        }
        w.put_u8(END);
        Ok(())
    })
}

/// Loads a list field written by [`save_list`]: its elements replace the list's, each
/// loaded at `version` (the field's `since`, as QEMU loads them; without one, the
/// element type's own version), which must be one the element type loads. Elements are
/// counted against the reader's allocation limit as they arrive.
pub fn load_list<L: VmList>(list: &mut L, version: Option<u32>, r: &mut Reader<'_>) -> Result<()> {
    let version = version.unwrap_or(L::Elem::DESCRIPTION.version);
    check_version(L::Elem::DESCRIPTION, version, r)?;
    list.clear();
    let elem_size = std::mem::size_of::<L::Elem>().max(1) as u64;
    let mut count: u64 = 0;
    loop {
        let at = r.position();
        if r.get_u8()? == END {
            return Ok(());
        }
        count += 1;
        r.check_alloc(count, elem_size)
            .map_err(|e| e.at_offset(at).at_index(count - 1))?;
        let mut elem = L::Elem::default();
        elem.load_state(r, version)
            .map_err(|e| e.at_index(count - 1))?;
        list.push(elem);
    }
}
