//! Temporary state: QEMU's `VMSTATE_WITH_TMP`.
//!
//! Some state is migrated in a different shape from the one the device keeps: QEMU
//! allocates a temporary struct, fills it from the device in the temporary's `pre_save`,
//! saves it, and on load applies it to the device in the temporary's `post_load`. Here
//! the temporary is a type that derives `VmState`; the device marks the place in its
//! field order with a zero-sized [`Tmp<T>`] field and names two functions:
//!
//! - `to_tmp = path`: `fn(&Self) -> T`, computes the temporary (on save, and as the
//!   starting value on load, so fields the stream does not carry keep computed values);
//! - `from_tmp = path`: `fn(&mut Self, T) -> Result<(), E>`, applies a loaded temporary;
//!   an error fails the load, as a failing `post_load` does.
//!
//! The temporary's own hooks run as for any `VmState`. On the wire it is the
//! temporary's fields and subsections, nothing else. QEMU names the field `tmp` (`tmp[0]`,
//! `tmp[1]`, ... in the vmdesc when there are several) and loads the temporary at
//! version 0, so the temporary type must have `min_version = 0` and no field with
//! `since`; the derive checks this at compile time. Its vmdesc entry is
//! `{"name": "tmp", "type": "tmp", "vmsd_name": ..., "version": ..., "fields": [...],
//! "size": N}`.
//!
//! ```
//! use vmstate::{Tmp, VmState};
//!
//! /// What is migrated: the difference of two counters.
//! #[derive(VmState, Default)]
//! #[vmstate(name = "counter/tmp", version = 0)]
//! struct CounterTmp { diff: i64 }
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "counter")]
//! struct Counter {
//!     base: u32,
//!     #[vmstate(to_tmp = Self::to_tmp, from_tmp = Self::apply_tmp)]
//!     tmp: Tmp<CounterTmp>,
//!     #[vmstate(skip)]
//!     value: u32,
//! }
//!
//! impl Counter {
//!     fn to_tmp(&self) -> CounterTmp {
//!         CounterTmp { diff: i64::from(self.value) - i64::from(self.base) }
//!     }
//!     fn apply_tmp(&mut self, t: CounterTmp) -> Result<(), String> {
//!         let v = i64::from(self.base) + t.diff;
//!         self.value = u32::try_from(v).map_err(|_| format!("counter out of range: {v}"))?;
//!         Ok(())
//!     }
//! }
//!
//! let mut c = Counter { base: 2, value: 4, ..Default::default() };
//! let bytes = c.to_bytes().unwrap();
//! assert_eq!(bytes, [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]);
//! let mut back = Counter::default();
//! back.load_bytes(&bytes, 1).unwrap();
//! assert_eq!(back.value, 4);
//! ```

use std::fmt;
use std::marker::PhantomData;

use crate::derive_support::{check_version, save_single};
use crate::description::{Field, VmStateDescription};
use crate::error::{Error, HookError, Result};
use crate::save_context::SaveContext;
use crate::state::VmState;
use crate::wire::{Reader, Writer};

/// The place of a `VMSTATE_WITH_TMP` temporary of type `T` in a device's field order.
/// Zero-sized: the temporary exists only while the device is saved or loaded.
pub struct Tmp<T>(PhantomData<fn() -> T>);

impl<T> Tmp<T> {
    /// The marker.
    pub const fn new() -> Self {
        Tmp(PhantomData)
    }
}

impl<T> Default for Tmp<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Tmp<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Tmp<T> {}

impl<T> PartialEq for Tmp<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Tmp<T> {}

impl<T> fmt::Debug for Tmp<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tmp<{}>", std::any::type_name::<T>())
    }
}

/// The type of a field marked `to_tmp`/`from_tmp`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a temporary-state field",
    label = "a field with `to_tmp`/`from_tmp` is a `vmstate::Tmp<T>`, `T` deriving `VmState`"
)]
pub trait VmTmp {
    /// The temporary's type.
    type State: VmState;
}

impl<T: VmState> VmTmp for Tmp<T> {
    type State = T;
}

/// Computes the temporary of field type `F` with the user's `to_tmp`.
#[inline]
pub fn make_tmp<F: VmTmp, S>(this: &S, to_tmp: impl FnOnce(&S) -> F::State) -> F::State {
    to_tmp(this)
}

/// Saves a temporary, described as one vmdesc entry holding its description.
pub fn save_tmp<T: VmState, C: SaveContext>(
    tmp: &mut T,
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    save_single(field, w, ctx, |w, ctx| tmp.save_state(w, ctx))
}

/// Loads a temporary at version 0, as QEMU's `get_tmp` does.
pub fn load_tmp<T: VmState>(tmp: &mut T, r: &mut Reader<'_>) -> Result<()> {
    check_version(T::DESCRIPTION, 0, r)?;
    tmp.load_state(r, 0)
}

/// Applies a loaded temporary with the user's `from_tmp`; its error fails the load.
#[inline]
pub fn apply_tmp<S, T, E: Into<HookError>>(
    this: &mut S,
    tmp: T,
    r: &Reader<'_>,
    from_tmp: impl FnOnce(&mut S, T) -> std::result::Result<(), E>,
) -> Result<()> {
    from_tmp(this, tmp).map_err(|e| Error::hook("from_tmp", e).at_offset(r.position()))
}

/// Whether a temporary type loads at version 0 exactly as it saves: `min_version` 0
/// and no field added by `since`. Checked by the derive at compile time.
pub const fn tmp_loadable(desc: &VmStateDescription) -> bool {
    if desc.min_version != 0 {
        return false;
    }
    let mut i = 0;
    while i < desc.fields.len() {
        if desc.fields[i].since != 0 {
            return false;
        }
        i += 1;
    }
    true
}
