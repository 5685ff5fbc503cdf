//! Helpers called by the code that `#[derive(VmState)]` generates. Not a public API:
//! reached through `vmstate::__private`, and free to change between releases.
//!
//! Each helper is small and `#[inline]`, so the generated code stays straight-line.
//! Hook helpers take typed closures so that a hook with the wrong signature is a type
//! error pointing at the hook's path.
//!
//! The fixed-size fast path (run layouts, raw sizes and their compile-time agreement
//! with the description table) is in `raw`; its items are re-exported here.

use crate::description::{Field, FieldType, Info, VmStateDescription, infos};
use crate::error::{Error, ErrorKind, HookError, Result};
use crate::save_context::SaveContext;
use crate::state::{VmElem, VmState};
use crate::wire::{Reader, Writer};

mod raw;

pub use raw::{
    RawRun, described_field_size, described_size, described_type_size, no_subsection_at, raw_mul,
    run_agrees, size_agrees,
};

/// The subsection marker byte (QEMU_VM_SUBSECTION).
pub const SUBSECTION_MARKER: u8 = 0x05;

/// QEMU's version range check at the start of `vmstate_load_state`.
#[inline]
pub fn check_version(
    desc: &'static VmStateDescription,
    version: u32,
    r: &Reader<'_>,
) -> Result<()> {
    if version > desc.version {
        return Err(Error::new(ErrorKind::VersionTooNew {
            vmsd: desc.name,
            stream: version,
            local: desc.version,
        })
        .at_offset(r.position()));
    }
    if version < desc.min_version {
        return Err(Error::new(ErrorKind::VersionTooOld {
            vmsd: desc.name,
            stream: version,
            min: desc.min_version,
        })
        .at_offset(r.position()));
    }
    Ok(())
}

/// Runs a `pre_save` hook.
#[inline]
pub fn pre_save<T, E: Into<HookError>>(
    this: &mut T,
    hook: impl FnOnce(&mut T) -> std::result::Result<(), E>,
) -> Result<()> {
    hook(this).map_err(|e| Error::hook("pre_save", e))
}

/// Runs a `post_save` hook.
#[inline]
pub fn post_save<T, E: Into<HookError>>(
    this: &mut T,
    hook: impl FnOnce(&mut T) -> std::result::Result<(), E>,
) -> Result<()> {
    hook(this).map_err(|e| Error::hook("post_save", e))
}

/// Runs a `pre_load` hook.
#[inline]
pub fn pre_load<T, E: Into<HookError>>(
    this: &mut T,
    r: &Reader<'_>,
    hook: impl FnOnce(&mut T) -> std::result::Result<(), E>,
) -> Result<()> {
    hook(this).map_err(|e| Error::hook("pre_load", e).at_offset(r.position()))
}

/// Runs a `post_load` hook with the stream version.
#[inline]
pub fn post_load<T, E: Into<HookError>>(
    this: &mut T,
    version: u32,
    r: &Reader<'_>,
    hook: impl FnOnce(&mut T, u32) -> std::result::Result<(), E>,
) -> Result<()> {
    hook(this, version).map_err(|e| Error::hook("post_load", e).at_offset(r.position()))
}

/// Calls a `needed` predicate.
#[inline]
pub fn needed<T>(this: &T, pred: impl FnOnce(&T) -> bool) -> bool {
    pred(this)
}

/// Calls an `exists` predicate with the version being saved or loaded.
#[inline]
pub fn exists<T>(this: &T, version: u32, pred: impl FnOnce(&T, u32) -> bool) -> bool {
    pred(this, version)
}

/// Runs a `validate` check on load (QEMU's `VMSTATE_VALIDATE`): the predicate gets the
/// fields loaded so far and the stream's version; false fails the load.
#[inline]
pub fn validate<T>(
    this: &T,
    version: u32,
    r: &Reader<'_>,
    check: &'static str,
    pred: impl FnOnce(&T, u32) -> bool,
) -> Result<()> {
    if pred(this, version) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::ValidationFailed { check }).at_offset(r.position()))
    }
}

/// Writes a single-element field with `write`, describing it as one element when the
/// context describes.
#[inline]
pub(crate) fn save_single<C: SaveContext>(
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
    write: impl FnOnce(&mut Writer<'_>, &mut C) -> Result<()>,
) -> Result<()> {
    if C::DESCRIBES {
        ctx.begin_field(field, 1);
        ctx.begin_elem(0, w.position());
    }
    write(w, ctx)?;
    if C::DESCRIBES {
        ctx.end_elem(w.position());
        ctx.end_field();
    }
    Ok(())
}

/// Saves a single-element field.
#[inline]
pub fn save_one<T: VmElem, C: SaveContext>(
    value: &mut T,
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    save_single(field, w, ctx, |w, ctx| value.save_elem(w, ctx))
}

/// Saves an array or counted field, element by element when describing and in bulk
/// otherwise.
#[inline]
pub fn save_many<T: VmElem, C: SaveContext>(
    elems: &mut [T],
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    if !C::DESCRIBES {
        return T::save_slice(elems, w, ctx);
    }
    ctx.begin_field(field, elems.len());
    for (i, e) in elems.iter_mut().enumerate() {
        ctx.begin_elem(i, w.position());
        e.save_elem(w, ctx).map_err(|err| err.at_index(i))?;
        ctx.end_elem(w.position());
    }
    ctx.end_field();
    Ok(())
}

/// Saves raw bytes as one element (a `buffer` field, fixed or counted).
#[inline]
pub fn save_buffer<C: SaveContext>(
    bytes: &[u8],
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    save_single(field, w, ctx, |w, _| {
        w.put_bytes(bytes);
        Ok(())
    })
}

/// Saves `n` zero bytes (an `unused` field).
#[inline]
pub fn save_unused<C: SaveContext>(
    n: usize,
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    save_single(field, w, ctx, |w, _| {
        w.put_zeros(n);
        Ok(())
    })
}

/// Loads a field marked `equal`: the stream value must equal the local one.
#[inline]
pub fn load_equal<T: VmElem + Copy + PartialEq + std::fmt::Debug>(
    local: &mut T,
    r: &mut Reader<'_>,
) -> Result<()> {
    let at = r.position();
    let mut incoming = *local;
    incoming.load_elem(r)?;
    if incoming != *local {
        return Err(Error::new(ErrorKind::NotEqual {
            stream: format!("{incoming:?}"),
            local: format!("{local:?}"),
        })
        .at_offset(at));
    }
    Ok(())
}

/// An integer type usable as a count field (`len = ...`), as QEMU's VARRAY flags.
pub trait CountField: Copy {
    /// The count's type in the description.
    const LEN_TYPE: crate::description::LenType;
    /// The count as a u64, or the raw value when it cannot be a count (negative i32).
    fn count(self) -> std::result::Result<u64, i64>;
}

macro_rules! count_field {
    ($t:ty, $lt:ident) => {
        impl CountField for $t {
            const LEN_TYPE: crate::description::LenType = crate::description::LenType::$lt;
            #[inline]
            #[allow(clippy::unnecessary_fallible_conversions)]
            fn count(self) -> std::result::Result<u64, i64> {
                u64::try_from(self).map_err(|_| self as i64)
            }
        }
    };
}
count_field!(u8, U8);
count_field!(u16, U16);
count_field!(u32, U32);
count_field!(i32, I32);

/// The element count from a count field while saving; it must match the data.
#[inline]
pub fn save_count<N: CountField>(count: N, count_field: &'static str, actual: usize) -> Result<()> {
    match count.count() {
        Ok(n) if n == actual as u64 => Ok(()),
        Ok(n) => Err(Error::new(ErrorKind::CountMismatch {
            count_field,
            count: n,
            actual: actual as u64,
        })),
        Err(raw) => Err(Error::new(ErrorKind::InvalidCount {
            count_field,
            count: raw,
        })),
    }
}

/// How many bytes of new elements a counted field grows by at a time while loading.
const LOAD_CHUNK_BYTES: usize = 64 << 10;

/// The element count read into a count field, within the allocation limit.
fn loaded_count<T, N: CountField>(
    count: N,
    count_field: &'static str,
    r: &Reader<'_>,
) -> Result<usize> {
    let n = count.count().map_err(|raw| {
        Error::new(ErrorKind::InvalidCount {
            count_field,
            count: raw,
        })
        .at_offset(r.position())
    })?;
    r.check_alloc(n, std::mem::size_of::<T>() as u64)
}

/// Loads a counted field (`len = field`) of `count` elements with `load` (a slice
/// loader that adds element indexes to its errors). Elements already in `vec` are loaded
/// in place (QEMU loads into the existing array); new ones are added 64 KiB at a time
/// and read before the next are added, so a hostile count in a short stream fails at
/// the stream's end having allocated little more than what was read.
fn load_counted<T: Default, N: CountField>(
    vec: &mut Vec<T>,
    count: N,
    count_field: &'static str,
    r: &mut Reader<'_>,
    mut load: impl FnMut(&mut [T], &mut Reader<'_>) -> Result<()>,
) -> Result<()> {
    let n = loaded_count::<T, N>(count, count_field, r)?;
    vec.truncate(n);
    load(&mut vec[..], r)?;
    let per_chunk = (LOAD_CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(1);
    while vec.len() < n {
        let done = vec.len();
        vec.resize_with(done + (n - done).min(per_chunk), T::default);
        load(&mut vec[done..], r).map_err(|e| e.shift_index(done as u64))?;
    }
    Ok(())
}

/// Loads a counted array (`len = field` on a `Vec<T>`, QEMU's `VMS_VARRAY_*`).
#[inline]
pub fn load_varray<T: VmElem + Default, N: CountField>(
    vec: &mut Vec<T>,
    count: N,
    count_field: &'static str,
    r: &mut Reader<'_>,
) -> Result<()> {
    load_counted(vec, count, count_field, r, T::load_slice)
}

/// Loads a counted buffer (`buffer, len = field` on a `Vec<u8>`, QEMU's `VMS_VBUFFER`).
#[inline]
pub fn load_vbuffer<N: CountField>(
    bytes: &mut Vec<u8>,
    count: N,
    count_field: &'static str,
    r: &mut Reader<'_>,
) -> Result<()> {
    load_counted(bytes, count, count_field, r, |chunk, r| {
        r.get_bytes_into(chunk)
    })
}

/// Writes a subsection: marker, counted name, be32 version, then its state.
#[inline]
pub fn save_subsection<S: VmState, C: SaveContext>(
    sub: &mut S,
    parent: &'static VmStateDescription,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    let desc = S::DESCRIPTION;
    if !ctx.include_subsection(parent, desc)? {
        return Ok(());
    }
    w.put_u8(SUBSECTION_MARKER);
    w.put_counted_str(desc.name)?;
    w.put_be32(ctx.save_version(desc));
    if C::DESCRIBES {
        ctx.begin_subsection();
    }
    sub.save_state(w, ctx).map_err(|e| e.in_vmsd(desc.name))?;
    if C::DESCRIBES {
        ctx.end_subsection();
    }
    Ok(())
}

/// QEMU's `vmstate_subsection_load`: while the next bytes look like a subsection of
/// `parent` (marker, length, name with the parent's prefix), read its header and let
/// `load` load it. `load` returns `Ok(false)` for a name it does not know, which is an
/// error. Anything else ends the loop without consuming a byte.
///
/// The common case, a next byte that is not the marker (or the end of an in-memory
/// stream), returns at once without peeking.
#[inline]
pub fn load_subsections(
    r: &mut Reader<'_>,
    parent: &'static VmStateDescription,
    load: impl FnMut(&str, &mut Reader<'_>, u32) -> Result<bool>,
) -> Result<()> {
    if !r.may_be_next(SUBSECTION_MARKER) {
        return Ok(());
    }
    load_subsections_peek(r, parent, load)
}

fn load_subsections_peek(
    r: &mut Reader<'_>,
    parent: &'static VmStateDescription,
    mut load: impl FnMut(&str, &mut Reader<'_>, u32) -> Result<bool>,
) -> Result<()> {
    let prefix = parent.name.as_bytes();
    loop {
        let head = r.peek(2)?;
        if head.len() < 2 || head[0] != SUBSECTION_MARKER {
            return Ok(());
        }
        let len = head[1] as usize;
        if len < prefix.len() + 1 {
            return Ok(());
        }
        let bytes = r.peek(2 + len)?;
        if bytes.len() < 2 + len || !bytes[2..].starts_with(prefix) {
            return Ok(());
        }
        let at = r.position();
        r.skip(1)?;
        let name = r.get_counted_string()?;
        let version_at = r.position();
        let version = r.get_be32()?;
        // QEMU reads the be32 into a byte and loads whatever is left of it.
        if version > u32::from(u8::MAX) {
            return Err(Error::invalid(
                "subsection",
                format!(
                    "'{name}' has version {version}, which QEMU would truncate to {} (its \
                     loader keeps one byte)",
                    version as u8
                ),
            )
            .at_offset(version_at));
        }
        if !load(&name, r, version)? {
            return Err(Error::new(ErrorKind::UnknownSubsection {
                name,
                parent: parent.name,
            })
            .at_offset(at));
        }
    }
}

/// Loads a subsection found by [`load_subsections`], adding its name to error paths.
#[inline]
pub fn load_subsection<S: VmState>(sub: &mut S, r: &mut Reader<'_>, version: u32) -> Result<bool> {
    sub.load_state(r, version)
        .map_err(|e| e.in_vmsd(S::DESCRIPTION.name))?;
    Ok(true)
}

/// The element type of a field marked `equal` (QEMU's `* equal` infos).
pub const fn equal_type(ty: FieldType) -> FieldType {
    match ty {
        FieldType::Info(i) => FieldType::Info(infos::equal_variant(i)),
        other => other,
    }
}

/// The element type of a `buffer` field of `size` bytes.
pub const fn buffer_type(size: usize) -> FieldType {
    FieldType::Info(infos::buffer(size))
}

/// The element type of a `validate` field (no bytes).
pub const VALIDATE_TYPE: FieldType = FieldType::Info(infos::VALIDATE);

/// The element type of an `unused` field of `size` bytes.
pub const fn unused_type(size: usize) -> FieldType {
    FieldType::Info(Info::new("unused_buffer", size))
}

/// Compile-time check that a subsection's name starts with its parent's name.
pub const fn has_prefix(name: &str, prefix: &str) -> bool {
    let (n, p) = (name.as_bytes(), prefix.as_bytes());
    if n.len() < p.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if n[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}
