//! The fixed-size fast path: the layout of a run of raw fields ([`RawRun`]), raw sizes,
//! the subsection peek after raw bytes, and the compile-time checks that the generated
//! runs agree with the description table.

use crate::description::{Field, FieldType, VmStateDescription};

use super::SUBSECTION_MARKER;

/// The layout of a run of consecutive fixed-size fields that the generated code writes
/// into one reserved slot and reads from one checked slice: where each field starts and
/// ends, and the total. `ok` is false when some field's type is not raw
/// ([`VmElem::RAW_SIZE`] is `None`); the generated code then takes the `Writer`/`Reader`
/// path for the whole run. Built at compile time.
///
/// [`VmElem::RAW_SIZE`]: crate::VmElem::RAW_SIZE
#[derive(Debug, Clone, Copy)]
pub struct RawRun<const M: usize> {
    /// Every field's type is raw.
    pub ok: bool,
    /// Total bytes (meaningful when `ok`).
    pub total: usize,
    /// Offset of each field in the run.
    pub start: [usize; M],
    /// Offset just past each field.
    pub end: [usize; M],
}

impl<const M: usize> RawRun<M> {
    /// The run of fields of these raw sizes, in order.
    pub const fn new(sizes: [Option<usize>; M]) -> Self {
        let mut run = RawRun {
            ok: true,
            total: 0,
            start: [0; M],
            end: [0; M],
        };
        let mut i = 0;
        while i < M {
            run.start[i] = run.total;
            match sizes[i] {
                Some(n) => run.total += n,
                None => run.ok = false,
            }
            run.end[i] = run.total;
            i += 1;
        }
        run
    }

    /// The raw size of a struct made of exactly this run.
    pub const fn size(&self) -> Option<usize> {
        if self.ok { Some(self.total) } else { None }
    }
}

/// The raw size of `n` elements of raw size `size`.
pub const fn raw_mul(size: Option<usize>, n: usize) -> Option<usize> {
    match size {
        Some(s) => s.checked_mul(n),
        None => None,
    }
}

/// After a derived struct's raw bytes (`at` bytes into `input`), QEMU peeks for a
/// subsection: raw reading is fine only if the next byte is certainly not the marker.
#[inline]
pub fn no_subsection_at(input: &[u8], at: usize, at_end: bool) -> bool {
    match input.get(at) {
        Some(&b) => b != SUBSECTION_MARKER,
        None => at_end,
    }
}

/// The wire size of one element of `ty` as the description says (`const`
/// [`FieldType::fixed_size`]).
pub const fn described_type_size(ty: &FieldType) -> Option<usize> {
    match ty {
        FieldType::Info(i) => Some(i.size),
        FieldType::Struct(d) => described_size(d),
    }
}

/// The wire size of the description's fields as the description says (`const`
/// [`VmStateDescription::fixed_size`]).
pub const fn described_size(desc: &VmStateDescription) -> Option<usize> {
    if !desc.subsections.is_empty() {
        return None;
    }
    let mut total = 0;
    let mut i = 0;
    while i < desc.fields.len() {
        let f = &desc.fields[i];
        i += 1;
        if !f.exists_at(desc.version) {
            continue;
        }
        if f.has_exists_test {
            return None;
        }
        match described_field_size(f) {
            Some(n) => total += n,
            None => return None,
        }
    }
    Some(total)
}

/// The wire size of one field as the description says, when fixed.
pub const fn described_field_size(f: &Field) -> Option<usize> {
    match (described_type_size(&f.ty), f.static_count()) {
        (Some(size), Some(count)) => size.checked_mul(count),
        _ => None,
    }
}

/// Compile-time agreement between a run of generated code and the description table:
/// fields `first..first + M` of `desc` take exactly the run's bytes. The generated code
/// asserts this for every run it emits.
pub const fn run_agrees<const M: usize>(
    desc: &VmStateDescription,
    first: usize,
    run: &RawRun<M>,
) -> bool {
    if !run.ok {
        return true;
    }
    if first + M > desc.fields.len() {
        return false;
    }
    let mut i = 0;
    while i < M {
        match described_field_size(&desc.fields[first + i]) {
            Some(n) if n == run.end[i] - run.start[i] => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// Compile-time agreement between a raw struct's size and its description's fixed size.
pub const fn size_agrees(desc: &VmStateDescription, raw: Option<usize>) -> bool {
    match (raw, described_size(desc)) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    }
}
