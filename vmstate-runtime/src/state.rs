//! The `VmState` trait (a type with its own description) and `VmElem` (anything that can
//! be one element of a field), with the impls for integers, `bool` and `f64`.

use byteorder::{BigEndian, ByteOrder};

use crate::description::{FieldType, VmStateDescription, infos};
use crate::error::Result;
use crate::save_context::{Describer, PlainSave, SaveContext};
use crate::wire::{Reader, Writer};

/// A type whose state is described by a [`VmStateDescription`] and saved and loaded
/// as QEMU saves a `VMStateDescription`: fields that exist at the version, then the
/// subsections that are needed.
///
/// Implement it with `#[derive(VmState)]`; see `docs/attributes.md`.
///
/// ```
/// use vmstate::VmState;
///
/// #[derive(VmState, Default)]
/// #[vmstate(name = "port92", version = 1)]
/// struct Port92 {
///     outport: u8,
/// }
///
/// let mut dev = Port92 { outport: 2 };
/// let bytes = dev.to_bytes().unwrap();
/// assert_eq!(bytes, [2]);
///
/// let mut fresh = Port92::default();
/// fresh.load_bytes(&bytes, 1).unwrap();
/// assert_eq!(fresh.outport, 2);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no vmstate description",
    label = "`{Self}` does not implement `VmState`",
    note = "a subsection's type, and a device's state, must `#[derive(VmState)]` (with its own \
            `#[vmstate(name = \"...\")]`)"
)]
pub trait VmState {
    /// The static description of this type.
    const DESCRIPTION: &'static VmStateDescription;

    /// Saves the state: `pre_save`, the fields that exist at the save version, the
    /// subsections that are needed, `post_save` (also after a failed save). The context
    /// picks the version and may describe what is written.
    fn save_state<C: SaveContext>(&mut self, w: &mut Writer<'_>, ctx: &mut C) -> Result<()>;

    /// Loads state saved at `version` over the current value (QEMU's
    /// `vmstate_load_state`): version range check, `pre_load`, the fields that exist at
    /// `version`, subsections by name in any order, `post_load`. Fields marked `skip`
    /// keep their values.
    fn load_state(&mut self, r: &mut Reader<'_>, version: u32) -> Result<()>;

    /// Whether the state is sent at all (QEMU's top-level `needed`). Default: always.
    /// A hand-written implementation that overrides it must also set
    /// [`VmState::SENT_CONDITIONALLY`], or a load counts its absent section as missing.
    fn needed(&self) -> bool {
        true
    }

    /// True when [`VmState::needed`] may say no (the derive sets it for `needed = path`):
    /// a stream may then lack this device's section, and a load does not count it as
    /// missing.
    const SENT_CONDITIONALLY: bool = false;

    /// Saves the state at the current version. Errors carry the field path.
    fn save(&mut self, w: &mut Writer<'_>) -> Result<()>
    where
        Self: Sized,
    {
        self.save_state(w, &mut PlainSave)
            .map_err(|e| e.in_vmsd(Self::DESCRIPTION.name))
    }

    /// Loads state saved at `version`. Errors carry the field path and byte offset.
    fn load(&mut self, r: &mut Reader<'_>, version: u32) -> Result<()>
    where
        Self: Sized,
    {
        self.load_state(r, version)
            .map_err(|e| e.in_vmsd(Self::DESCRIPTION.name))
    }

    /// Saves the state into a new byte vector.
    fn to_bytes(&mut self) -> Result<Vec<u8>>
    where
        Self: Sized,
    {
        let mut w = Writer::new();
        self.save(&mut w)?;
        Ok(w.into_vec())
    }

    /// Loads state saved at `version` from bytes, requiring that all of them are used.
    fn load_bytes(&mut self, bytes: &[u8], version: u32) -> Result<()>
    where
        Self: Sized,
    {
        let mut r = Reader::from_slice(bytes);
        self.load(&mut r, version)?;
        if !r.at_end()? {
            return Err(crate::Error::invalid(
                "state",
                format!(
                    "{} bytes left over after loading",
                    bytes.len() as u64 - r.position()
                ),
            )
            .at_offset(r.position())
            .in_vmsd(Self::DESCRIPTION.name));
        }
        Ok(())
    }

    /// Saves the state and returns the bytes together with the vmdesc JSON object that
    /// describes them (QEMU's `vmsd_name`/`version`/`fields`/`subsections`).
    fn save_described(&mut self) -> Result<(Vec<u8>, serde_json::Value)>
    where
        Self: Sized,
    {
        let mut w = Writer::new();
        let mut d = Describer::new();
        self.save_state(&mut w, &mut d)
            .map_err(|e| e.in_vmsd(Self::DESCRIPTION.name))?;
        Ok((w.into_vec(), d.finish().to_value()))
    }
}

/// One element of a field: an integer, `bool`, `f64`, [`Timer`](crate::Timer), or a type
/// that derives [`VmState`] (QEMU's `VMS_STRUCT`: no bytes of its own, loaded at its own
/// local version).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a vmstate field",
    label = "`{Self}` is not a vmstate field type",
    note = "a vmstate field is an integer (`u8`..`u64`, `i8`..`i64`), `bool`, `f64`, \
            `vmstate::Timer`, a type that derives `VmState`, or a `[T; N]` or \
            `Vec<T>` (with `len = field`) of those; bytes can also be a `buffer`",
    note = "mark runtime-only state `#[vmstate(skip)]`, or implement `vmstate::VmElem` for \
            the type"
)]
pub trait VmElem: Sized {
    /// The element type for the description.
    const TYPE: FieldType;

    /// Writes this element.
    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, ctx: &mut C) -> Result<()>;

    /// Reads this element in place.
    fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()>;

    /// Writes many elements; primitives override this with a bulk write. The default
    /// writes a raw type (see [`VmElem::RAW_SIZE`]) in one reservation when the context
    /// does not describe, and element by element otherwise.
    fn save_slice<C: SaveContext>(
        elems: &mut [Self],
        w: &mut Writer<'_>,
        ctx: &mut C,
    ) -> Result<()> {
        if let Some(size) = Self::RAW_SIZE
            && !C::DESCRIBES
            && let Some(total) = elems.len().checked_mul(size)
        {
            Self::put_raw_slice(elems, w.put_slot(total));
            return Ok(());
        }
        for (i, e) in elems.iter_mut().enumerate() {
            e.save_elem(w, ctx).map_err(|err| err.at_index(i))?;
        }
        Ok(())
    }

    /// Reads many elements; primitives override this with a bulk read. The default
    /// reads a raw type straight from the buffered bytes when they are all there and
    /// [`VmElem::raw_ok`] accepts them, and element by element otherwise.
    fn load_slice(elems: &mut [Self], r: &mut Reader<'_>) -> Result<()> {
        if let Some(size) = Self::RAW_SIZE
            && let Some(total) = elems.len().checked_mul(size)
        {
            let n = elems.len();
            let done = r.read_raw(total, |input, at_end| {
                if !Self::raw_ok_slice(n, input, at_end) {
                    return false;
                }
                Self::get_raw_slice(elems, &input[..total]);
                true
            });
            if done {
                return Ok(());
            }
        }
        for (i, e) in elems.iter_mut().enumerate() {
            e.load_elem(r).map_err(|err| err.at_index(i))?;
        }
        Ok(())
    }

    /// The size of one element on the wire when it is the same for every value, every
    /// version and every save context, so that the element can be written with
    /// [`VmElem::put_raw`] into a slot reserved once and read with [`VmElem::get_raw`]
    /// from a slice checked once: integers, `bool`, `f64`, [`Timer`](crate::Timer), and
    /// derived structs with no hooks, subsections, `since`, `exists`, `equal` or `Vec`
    /// fields whose fields are all raw. `None` (the default) for everything else, which
    /// is then always saved and loaded through the `Writer` and `Reader`.
    ///
    /// Used by the derive's generated code; the two paths write the same bytes.
    #[doc(hidden)]
    const RAW_SIZE: Option<usize> = None;

    /// True when [`VmElem::raw_ok`] must look at the bytes (a derived struct: QEMU
    /// looks for a subsection after it); false when raw bytes are always accepted.
    #[doc(hidden)]
    const RAW_CHECK: bool = false;

    /// Writes the element into `out`, which is [`VmElem::RAW_SIZE`] bytes long. Only
    /// called when `RAW_SIZE` is `Some`; the default writes nothing.
    #[doc(hidden)]
    #[inline]
    fn put_raw(&self, out: &mut [u8]) {
        let _ = out;
    }

    /// Reads the element from `input`, which is [`VmElem::RAW_SIZE`] bytes long and
    /// was accepted by [`VmElem::raw_ok`]. Only called when `RAW_SIZE` is `Some`.
    #[doc(hidden)]
    #[inline]
    fn get_raw(&mut self, input: &[u8]) {
        let _ = input;
    }

    /// Whether the element starting at `input[0]` can be read raw; `input` runs to the
    /// end of the buffered bytes, and `at_end` says whether that is the end of the
    /// stream. False where the `Reader` path could do something else: after a derived
    /// struct comes a byte that may start a subsection (QEMU peeks for one).
    #[doc(hidden)]
    #[inline]
    fn raw_ok(input: &[u8], at_end: bool) -> bool {
        let _ = (input, at_end);
        true
    }

    /// [`VmElem::put_raw`] for consecutive elements.
    #[doc(hidden)]
    #[inline]
    fn put_raw_slice(elems: &[Self], out: &mut [u8]) {
        if let Some(size) = Self::RAW_SIZE
            && size > 0
        {
            for (e, chunk) in elems.iter().zip(out.chunks_exact_mut(size)) {
                e.put_raw(chunk);
            }
        }
    }

    /// [`VmElem::get_raw`] for consecutive elements.
    #[doc(hidden)]
    #[inline]
    fn get_raw_slice(elems: &mut [Self], input: &[u8]) {
        if let Some(size) = Self::RAW_SIZE
            && size > 0
        {
            for (e, chunk) in elems.iter_mut().zip(input.chunks_exact(size)) {
                e.get_raw(chunk);
            }
        }
    }

    /// [`VmElem::raw_ok`] for `n` consecutive elements.
    #[doc(hidden)]
    #[inline]
    fn raw_ok_slice(n: usize, input: &[u8], at_end: bool) -> bool {
        if !Self::RAW_CHECK {
            return true;
        }
        let Some(size) = Self::RAW_SIZE else {
            return false;
        };
        (0..n).all(|i| {
            input
                .get(i * size..)
                .is_some_and(|rest| Self::raw_ok(rest, at_end))
        })
    }
}

/// The raw (context-free) encoding of the primitive types: fixed-width big-endian.
macro_rules! raw_prim {
    ($ut:ty, |$s:ident| $to:expr, |$v:ident| $from:expr) => {
        const RAW_SIZE: Option<usize> = Some(std::mem::size_of::<$ut>());

        #[inline]
        fn put_raw(&self, out: &mut [u8]) {
            if let Some(out) = out.first_chunk_mut::<{ std::mem::size_of::<$ut>() }>() {
                let $s = self;
                let wire: $ut = $to;
                *out = wire.to_be_bytes();
            }
        }

        #[inline]
        fn get_raw(&mut self, input: &[u8]) {
            if let Some(b) = input.first_chunk::<{ std::mem::size_of::<$ut>() }>() {
                let $v = <$ut>::from_be_bytes(*b);
                *self = $from;
            }
        }
    };
}
pub(crate) use raw_prim;

macro_rules! int_elem {
    ($t:ty, $info:expr, $put:ident, $get:ident, $get_into:ident, $ut:ty) => {
        int_elem!($t, $info, $put, $get, $get_into, $ut, {});
    };
    ($t:ty, $info:expr, $put:ident, $get:ident, $get_into:ident, $ut:ty, $write_into:ident, $read_into:ident) => {
        int_elem!($t, $info, $put, $get, $get_into, $ut, {
            #[inline]
            fn put_raw_slice(elems: &[Self], out: &mut [u8]) {
                BigEndian::$write_into(elems, out);
            }

            #[inline]
            fn get_raw_slice(elems: &mut [Self], input: &[u8]) {
                BigEndian::$read_into(input, elems);
            }
        });
    };
    ($t:ty, $info:expr, $put:ident, $get:ident, $get_into:ident, $ut:ty, { $($bulk:tt)* }) => {
        impl VmElem for $t {
            const TYPE: FieldType = FieldType::Info($info);

            #[inline]
            fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, _: &mut C) -> Result<()> {
                w.$put(*self as $ut);
                Ok(())
            }

            #[inline]
            fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()> {
                *self = r.$get()? as $t;
                Ok(())
            }

            fn save_slice<C: SaveContext>(
                elems: &mut [Self],
                w: &mut Writer<'_>,
                _: &mut C,
            ) -> Result<()> {
                w.reserve(elems.len() * std::mem::size_of::<$t>());
                for e in elems.iter() {
                    w.$put(*e as $ut);
                }
                Ok(())
            }

            fn load_slice(elems: &mut [Self], r: &mut Reader<'_>) -> Result<()> {
                $get_into(elems, r)
            }

            raw_prim!($ut, |v| *v as $ut, |v| v as $t);

            $($bulk)*
        }
    };
}

fn load_u16s(e: &mut [u16], r: &mut Reader<'_>) -> Result<()> {
    r.get_be16_into(e)
}
fn load_u32s(e: &mut [u32], r: &mut Reader<'_>) -> Result<()> {
    r.get_be32_into(e)
}
fn load_u64s(e: &mut [u64], r: &mut Reader<'_>) -> Result<()> {
    r.get_be64_into(e)
}
fn load_each<T: VmElem>(e: &mut [T], r: &mut Reader<'_>) -> Result<()> {
    for x in e {
        x.load_elem(r)?;
    }
    Ok(())
}

int_elem!(i8, infos::INT8, put_u8, get_u8, load_each, u8);
int_elem!(i16, infos::INT16, put_be16, get_be16, load_each, u16);
int_elem!(i32, infos::INT32, put_be32, get_be32, load_each, u32);
int_elem!(i64, infos::INT64, put_be64, get_be64, load_each, u64);
int_elem!(
    u16,
    infos::UINT16,
    put_be16,
    get_be16,
    load_u16s,
    u16,
    write_u16_into,
    read_u16_into
);
int_elem!(
    u32,
    infos::UINT32,
    put_be32,
    get_be32,
    load_u32s,
    u32,
    write_u32_into,
    read_u32_into
);
int_elem!(
    u64,
    infos::UINT64,
    put_be64,
    get_be64,
    load_u64s,
    u64,
    write_u64_into,
    read_u64_into
);

impl VmElem for u8 {
    const TYPE: FieldType = FieldType::Info(infos::UINT8);

    #[inline]
    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, _: &mut C) -> Result<()> {
        w.put_u8(*self);
        Ok(())
    }

    #[inline]
    fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()> {
        *self = r.get_u8()?;
        Ok(())
    }

    fn save_slice<C: SaveContext>(elems: &mut [Self], w: &mut Writer<'_>, _: &mut C) -> Result<()> {
        w.put_bytes(elems);
        Ok(())
    }

    fn load_slice(elems: &mut [Self], r: &mut Reader<'_>) -> Result<()> {
        r.get_bytes_into(elems)
    }

    raw_prim!(u8, |v| *v, |v| v);

    #[inline]
    fn put_raw_slice(elems: &[Self], out: &mut [u8]) {
        out.copy_from_slice(elems);
    }

    #[inline]
    fn get_raw_slice(elems: &mut [Self], input: &[u8]) {
        elems.copy_from_slice(input);
    }
}

impl VmElem for bool {
    const TYPE: FieldType = FieldType::Info(infos::BOOL);

    #[inline]
    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, _: &mut C) -> Result<()> {
        w.put_bool(*self);
        Ok(())
    }

    #[inline]
    fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()> {
        *self = r.get_bool()?;
        Ok(())
    }

    raw_prim!(u8, |v| *v as u8, |v| v != 0);
}

impl VmElem for f64 {
    const TYPE: FieldType = FieldType::Info(infos::FLOAT64);

    #[inline]
    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, _: &mut C) -> Result<()> {
        w.put_be64(self.to_bits());
        Ok(())
    }

    #[inline]
    fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()> {
        *self = f64::from_bits(r.get_be64()?);
        Ok(())
    }

    raw_prim!(u64, |v| v.to_bits(), |v| f64::from_bits(v));
}

/// A boxed element is its contents (for `[Option<Box<T>>; N]` pointer arrays and boxed
/// large structs).
impl<T: VmElem> VmElem for Box<T> {
    const TYPE: FieldType = T::TYPE;

    #[inline]
    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, ctx: &mut C) -> Result<()> {
        (**self).save_elem(w, ctx)
    }

    #[inline]
    fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()> {
        (**self).load_elem(r)
    }
}
