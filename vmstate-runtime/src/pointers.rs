//! Arrays of nullable elements: QEMU's `VMSTATE_ARRAY_OF_POINTER` and
//! `VMSTATE_ARRAY_OF_POINTER_TO_STRUCT`.
//!
//! A C device keeps an array of pointers, some of them NULL; here a field is an array
//! of [`VmNullable`] elements, `[Option<T>; N]` or `[Option<Box<T>>; N]`, marked
//! `#[vmstate(array_of_pointer)]`. On the wire a present element is written as `T`, an
//! absent one as the single byte `0x30` (QEMU's `nullptr` placeholder, ASCII `'0'`).
//!
//! What is read for an element depends on the *local* element, never on the stream, as
//! in QEMU: a local `Some` reads a `T` into it; a local `None` reads one byte, which must
//! be `0x30`. Source and destination must therefore agree on which elements exist (a
//! device sets them up from its configuration before loading). A loaded stream whose
//! element was absent where the local one is present desyncs in QEMU; here too, since
//! the bytes are valid data.
//!
//! The vmdesc splits the array into runs of present and absent elements exactly as
//! QEMU 10.0 does, including its over-count: when the first element is present, its
//! entry claims the rest of the array (see [`vmdesc_entries`]).
//!
//! ```
//! use vmstate::VmState;
//!
//! #[derive(VmState, Default, Debug, PartialEq)]
//! #[vmstate(name = "clock")]
//! struct Clock { period: u64 }
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "board")]
//! struct Board {
//!     #[vmstate(array_of_pointer)]
//!     clocks: [Option<Box<Clock>>; 2],
//! }
//!
//! let mut board = Board { clocks: [Some(Box::new(Clock { period: 5 })), None] };
//! let bytes = board.to_bytes().unwrap();
//! assert_eq!(bytes, [0, 0, 0, 0, 0, 0, 0, 5, 0x30]);
//! let mut back = Board { clocks: [Some(Box::default()), None] };
//! back.load_bytes(&bytes, 1).unwrap();
//! assert_eq!(back.clocks[0].as_deref(), Some(&Clock { period: 5 }));
//! ```

use crate::description::Field;
use crate::error::{Error, Result};
use crate::save_context::SaveContext;
use crate::state::VmElem;
use crate::wire::{Reader, Writer};

/// The byte written for an absent element (QEMU's `VMS_NULLPTR_MARKER`).
pub const NULLPTR_MARKER: u8 = 0x30;

/// An element of an `array_of_pointer` field: present (a `T`) or absent.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an element of an `array_of_pointer` field",
    label = "an `array_of_pointer` field is a `[Option<T>; N]` or `[Option<Box<T>>; N]`",
    note = "`T` is a vmstate field type: an integer, `bool`, `f64`, `Timer` or a type that \
            derives `VmState`"
)]
pub trait VmNullable {
    /// The type of a present element.
    type Target: VmElem;
    /// The element, if present.
    fn target_mut(&mut self) -> Option<&mut Self::Target>;
}

impl<T: VmElem> VmNullable for Option<T> {
    type Target = T;
    fn target_mut(&mut self) -> Option<&mut T> {
        self.as_mut()
    }
}

/// The vmdesc entry QEMU writes for one element of an array of pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointerEntry {
    /// The element count the entry claims (`array_len`, or whether `index` is written).
    pub run: usize,
    /// Whether the element is absent (a `"nullptr"` entry).
    pub null: bool,
}

/// The vmdesc entries of an array of pointers whose absent elements are `nulls`, for a
/// field that is `compressible` ([`Field::is_compressible`]): one item per element,
/// `None` where QEMU writes no entry.
///
/// QEMU 10.0's `vmstate_save_state_v` starts a new entry where an element's presence
/// differs from the previous one's (an imaginary element before the first counts as
/// present), and that entry claims the length of its run; other entries claim the rest
/// of the array. A compressible field is then described by the first entry of each run
/// only. So `[Some, None, Some, Some]` gives entries claiming 4 (the over-count: no run
/// starts at element 0), 1 and 2.
pub fn vmdesc_entries(nulls: &[bool], compressible: bool) -> Vec<Option<PointerEntry>> {
    let n = nulls.len();
    let mut out = Vec::with_capacity(n);
    let mut describing = true;
    let mut prev_null = false;
    for (i, &null) in nulls.iter().enumerate() {
        let mut run = n - i;
        if null != prev_null {
            prev_null = null;
            describing = true;
            run = nulls[i..].iter().take_while(|&&x| x == null).count();
        }
        out.push(describing.then_some(PointerEntry { run, null }));
        if compressible {
            describing = false;
        }
    }
    out
}

/// Saves an `array_of_pointer` field: each present element as its type, each absent
/// one as [`NULLPTR_MARKER`].
pub fn save_pointer_array<P: VmNullable, C: SaveContext>(
    elems: &mut [P],
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    if !C::DESCRIBES {
        for (i, e) in elems.iter_mut().enumerate() {
            match e.target_mut() {
                Some(t) => t.save_elem(w, ctx).map_err(|err| err.at_index(i))?,
                None => w.put_u8(NULLPTR_MARKER),
            }
        }
        return Ok(());
    }
    let nulls: Vec<bool> = elems.iter_mut().map(|e| e.target_mut().is_none()).collect();
    let entries = vmdesc_entries(&nulls, field.is_compressible());
    ctx.begin_field(field, elems.len());
    for (i, (e, entry)) in elems.iter_mut().zip(entries).enumerate() {
        ctx.begin_pointer_elem(i, entry, w.position());
        match e.target_mut() {
            Some(t) => t.save_elem(w, ctx).map_err(|err| err.at_index(i))?,
            None => w.put_u8(NULLPTR_MARKER),
        }
        ctx.end_elem(w.position());
    }
    ctx.end_field();
    Ok(())
}

/// Loads an `array_of_pointer` field: a present local element reads its type, an absent
/// one reads the [`NULLPTR_MARKER`], which must be there.
pub fn load_pointer_array<P: VmNullable>(elems: &mut [P], r: &mut Reader<'_>) -> Result<()> {
    for (i, e) in elems.iter_mut().enumerate() {
        match e.target_mut() {
            Some(t) => t.load_elem(r).map_err(|err| err.at_index(i))?,
            None => {
                let at = r.position();
                let byte = r.get_u8().map_err(|err| err.at_index(i))?;
                if byte != NULLPTR_MARKER {
                    return Err(Error::invalid(
                        "nullptr",
                        format!(
                            "the local element is absent, so the stream must hold the \
                             placeholder 0x30 here, not 0x{byte:02x}"
                        ),
                    )
                    .at_offset(at)
                    .at_index(i));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{PointerEntry, vmdesc_entries};

    fn entry(run: usize, null: bool) -> Option<PointerEntry> {
        Some(PointerEntry { run, null })
    }

    #[test]
    fn test_vmstate_arps_gives_qemus_three_entries() {
        // QEMU 10.0's test/arps with {&a0, NULL, &a2, &a3}: 4, nullptr, 2.
        let got = vmdesc_entries(&[false, true, false, false], true);
        assert_eq!(
            got,
            [entry(4, false), entry(1, true), entry(2, false), None]
        );
    }

    #[test]
    fn leading_nulls_are_counted_exactly() {
        // The s390 css case: NULLs first, one struct, a NULL.
        let got = vmdesc_entries(&[true, true, true, false, true], true);
        assert_eq!(
            got,
            [entry(3, true), None, None, entry(1, false), entry(1, true)]
        );
    }

    #[test]
    fn no_nulls_is_one_entry() {
        assert_eq!(
            vmdesc_entries(&[false; 3], true),
            [entry(3, false), None, None]
        );
    }

    #[test]
    fn non_compressible_fields_describe_every_element() {
        // Without compression every element gets an entry; runs still restart at a
        // change of presence, and other elements claim the rest of the array.
        let got = vmdesc_entries(&[false, true, true, false], false);
        assert_eq!(
            got,
            [
                entry(4, false),
                entry(2, true),
                entry(2, true),
                entry(1, false)
            ]
        );
    }
}
