//! Codec speed: the derive against a hand-written encoder and the serialization crates
//! people would otherwise pick (bincode 2, postcard, versionize).
//!
//! - [`states`]: the three representative states (UART, PIT, x86 vCPU), defined once
//!   and deriving every codec;
//! - [`hand`]: the hand-written `byteorder` codec that writes the derive's bytes;
//! - [`Codec`] and its five adapters ([`Derive`], [`Hand`], [`Bincode2`], [`Postcard`],
//!   [`Versionize`]): encode into a reused buffer, decode into an existing value; and
//!   two faster configurations of the alternatives ([`Bincode2Fixint`],
//!   [`PostcardSlice`]) to show the ranking does not hang on a configuration;
//! - [`visit_all`]: runs a generic [`Visitor`] over every (state, codec) pair, which is
//!   how the `codec-bench` example and the criterion bench measure all of them.
//!
//! `BENCHMARKS.md` at the repository root has the measured numbers.

pub mod hand;
pub mod states;

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use versionize::VersionMap;
use vmstate::{VmState, Writer};

pub use hand::HandCodec;
pub use states::{Msr, Pit, PitChannel, Segment, Uart16550, X86Cpu};

/// An error from any codec (only built on the error path).
pub type CodecError = Box<dyn std::error::Error + Send + Sync>;

/// The result of a codec operation.
pub type CodecResult<T = ()> = Result<T, CodecError>;

/// One state used by the benchmark: it implements every codec under test.
pub trait BenchState:
    VmState
    + HandCodec
    + Serialize
    + DeserializeOwned
    + bincode::Encode
    + bincode::Decode<()>
    + versionize::Versionize
    + Clone
    + PartialEq
    + Debug
    + 'static
{
    /// `small`, `medium` or `large`.
    const LABEL: &'static str;
    /// A populated value; different seeds give different values.
    fn sample(seed: u64) -> Self;
}

impl BenchState for Uart16550 {
    const LABEL: &'static str = "small";
    fn sample(seed: u64) -> Self {
        Uart16550::sample(seed)
    }
}

impl BenchState for Pit {
    const LABEL: &'static str = "medium";
    fn sample(seed: u64) -> Self {
        Pit::sample(seed)
    }
}

impl BenchState for X86Cpu {
    const LABEL: &'static str = "large";
    fn sample(seed: u64) -> Self {
        X86Cpu::sample(seed)
    }
}

/// The state labels, in table order.
pub const STATES: [&str; 3] = ["small", "medium", "large"];

/// The codec names, in table order.
pub const CODECS: [&str; 5] = ["derive", "hand", "bincode2", "postcard", "versionize"];

/// A codec under test: encodes into a buffer it keeps and reuses, and decodes into an
/// existing value.
pub trait Codec<T>: 'static {
    /// Its name in the table and the JSON.
    const NAME: &'static str;
    /// A codec with an empty buffer.
    fn new() -> Self;
    /// Encodes `value`, replacing the buffer's contents (its allocation is kept).
    fn encode(&mut self, value: &mut T) -> CodecResult;
    /// The bytes of the last [`Codec::encode`].
    fn bytes(&self) -> &[u8];
    /// Decodes `bytes` into `value`.
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult;
}

/// This project: `#[derive(VmState)]`, saved into a reused [`Writer`] and loaded with
/// [`VmState::load_bytes`] at the current version.
pub struct Derive {
    w: Writer<'static>,
}

impl<T: VmState> Codec<T> for Derive {
    const NAME: &'static str = "derive";

    fn new() -> Self {
        Derive {
            w: Writer::from_vec(Vec::new()),
        }
    }

    #[inline]
    fn encode(&mut self, value: &mut T) -> CodecResult {
        self.w.clear();
        value.save(&mut self.w)?;
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.w.as_bytes()
    }

    #[inline]
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult {
        value.load_bytes(bytes, T::DESCRIPTION.version)?;
        Ok(())
    }
}

/// The hand-written `byteorder` codec ([`hand`]), the floor.
pub struct Hand {
    buf: Vec<u8>,
}

impl<T: HandCodec> Codec<T> for Hand {
    const NAME: &'static str = "hand";

    fn new() -> Self {
        Hand { buf: Vec::new() }
    }

    #[inline]
    fn encode(&mut self, value: &mut T) -> CodecResult {
        self.buf.clear();
        value.encode(&mut self.buf)?;
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[inline]
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult {
        let mut r = bytes;
        value.decode(&mut r)?;
        if !r.is_empty() {
            return Err(format!("{} bytes left over", r.len()).into());
        }
        Ok(())
    }
}

/// bincode 2 with its own `Encode`/`Decode` derive and its default configuration
/// (`config::standard()`: little-endian, variable-length integers), writing into a
/// reused `Vec` and decoding from a slice.
pub struct Bincode2 {
    buf: Vec<u8>,
}

impl<T: bincode::Encode + bincode::Decode<()>> Codec<T> for Bincode2 {
    const NAME: &'static str = "bincode2";

    fn new() -> Self {
        Bincode2 { buf: Vec::new() }
    }

    #[inline]
    fn encode(&mut self, value: &mut T) -> CodecResult {
        self.buf.clear();
        bincode::encode_into_std_write(&*value, &mut self.buf, bincode::config::standard())?;
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[inline]
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult {
        let (v, _) = bincode::decode_from_slice(bytes, bincode::config::standard())?;
        *value = v;
        Ok(())
    }
}

/// postcard (serde), writing into a reused `Vec` with `to_extend` and decoding with
/// `from_bytes`.
pub struct Postcard {
    buf: Vec<u8>,
}

impl<T: Serialize + DeserializeOwned> Codec<T> for Postcard {
    const NAME: &'static str = "postcard";

    fn new() -> Self {
        Postcard { buf: Vec::new() }
    }

    #[inline]
    fn encode(&mut self, value: &mut T) -> CodecResult {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.buf = postcard::to_extend(&*value, buf)?;
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[inline]
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult {
        *value = postcard::from_bytes(bytes)?;
        Ok(())
    }
}

/// versionize (Firecracker's former versioned derive) with a one-version map,
/// serializing into a reused `Vec` and deserializing from a slice.
pub struct Versionize {
    buf: Vec<u8>,
    map: VersionMap,
}

fn versionize_error(e: versionize::VersionizeError) -> CodecError {
    e.to_string().into()
}

impl<T: versionize::Versionize> Codec<T> for Versionize {
    const NAME: &'static str = "versionize";

    fn new() -> Self {
        Versionize {
            buf: Vec::new(),
            map: VersionMap::new(),
        }
    }

    #[inline]
    fn encode(&mut self, value: &mut T) -> CodecResult {
        self.buf.clear();
        value
            .serialize(&mut self.buf, &self.map, 1)
            .map_err(versionize_error)
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[inline]
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult {
        let mut r = bytes;
        *value = T::deserialize(&mut r, &self.map, 1).map_err(versionize_error)?;
        Ok(())
    }
}

/// bincode 2 with fixed-width integers (`config::standard().with_fixed_int_encoding()`),
/// which suits register-heavy states better than the default varints. A variant: shown
/// with `codec-bench --variants`, not among the five codecs of the table.
pub struct Bincode2Fixint {
    buf: Vec<u8>,
}

const FIXINT: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
> = bincode::config::standard().with_fixed_int_encoding();

impl<T: bincode::Encode + bincode::Decode<()>> Codec<T> for Bincode2Fixint {
    const NAME: &'static str = "bincode2-fixint";

    fn new() -> Self {
        Bincode2Fixint { buf: Vec::new() }
    }

    #[inline]
    fn encode(&mut self, value: &mut T) -> CodecResult {
        self.buf.clear();
        bincode::encode_into_std_write(&*value, &mut self.buf, FIXINT)?;
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[inline]
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult {
        let (v, _) = bincode::decode_from_slice(bytes, FIXINT)?;
        *value = v;
        Ok(())
    }
}

/// postcard serializing into a preallocated slice (`to_slice`), its fastest encoder. A
/// variant: shown with `codec-bench --variants`.
pub struct PostcardSlice {
    buf: Vec<u8>,
    len: usize,
}

impl<T: Serialize + DeserializeOwned> Codec<T> for PostcardSlice {
    const NAME: &'static str = "postcard-slice";

    fn new() -> Self {
        PostcardSlice {
            buf: vec![0; 64 << 10],
            len: 0,
        }
    }

    #[inline]
    fn encode(&mut self, value: &mut T) -> CodecResult {
        self.len = postcard::to_slice(&*value, &mut self.buf)?.len();
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    #[inline]
    fn decode(&self, bytes: &[u8], value: &mut T) -> CodecResult {
        *value = postcard::from_bytes(bytes)?;
        Ok(())
    }
}

/// Something done for each (state, codec) pair.
pub trait Visitor {
    /// Called once per pair.
    fn visit<T: BenchState, C: Codec<T>>(&mut self);
}

/// Visits every codec for state `T`, in [`CODECS`] order.
pub fn visit_state<T: BenchState, V: Visitor>(v: &mut V) {
    v.visit::<T, Derive>();
    v.visit::<T, Hand>();
    v.visit::<T, Bincode2>();
    v.visit::<T, Postcard>();
    v.visit::<T, Versionize>();
}

/// Visits every (state, codec) pair, in [`STATES`] then [`CODECS`] order.
pub fn visit_all<V: Visitor>(v: &mut V) {
    visit_state::<Uart16550, V>(v);
    visit_state::<Pit, V>(v);
    visit_state::<X86Cpu, V>(v);
}

/// The names of the faster configurations of the alternatives ([`visit_variants`]).
pub const VARIANTS: [&str; 2] = ["bincode2-fixint", "postcard-slice"];

/// Visits the faster configurations of the alternatives ([`Bincode2Fixint`],
/// [`PostcardSlice`]) for every state.
pub fn visit_variants<V: Visitor>(v: &mut V) {
    fn one<T: BenchState, V: Visitor>(v: &mut V) {
        v.visit::<T, Bincode2Fixint>();
        v.visit::<T, PostcardSlice>();
    }
    one::<Uart16550, V>(v);
    one::<Pit, V>(v);
    one::<X86Cpu, V>(v);
}
