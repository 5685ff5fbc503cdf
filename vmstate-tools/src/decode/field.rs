//! Field decoding: a VMState payload read with its description, as
//! `analyze-migration.py` does (fields in order, arrays unfolded, then every listed
//! subsection: `0x05`, counted name, be32 version, payload).

use std::sync::Arc;

use super::desc::{FieldDesc, FieldKind, VmsdDesc};
use super::value::{FieldValue, InlineValue, StructValue, Subsection, Value};
use vmstate::Error;
use vmstate::wire::Reader;

/// The subsection marker inside a payload.
const SUBSECTION: u8 = 0x05;
/// The NULL pointer marker (`'0'`).
const NULLPTR_MARKER: u8 = b'0';
/// Deepest nesting of structs and subsections.
pub const MAX_NESTING: u32 = 64;

/// Shared state of one decode: the reader, where the stream ends, and the budget of
/// values left (so that zero-sized or huge arrays cannot hang or exhaust memory).
pub(crate) struct FieldCtx<'r, 'a> {
    pub r: &'r mut Reader<'a>,
    /// Stream offset where the data ends (the trailer, or the end of input).
    pub end: u64,
    /// Values that may still be created.
    pub budget: &'r mut u64,
}

impl FieldCtx<'_, '_> {
    fn need(&self, n: u64) -> Result<(), Error> {
        let pos = self.r.position();
        if n > self.end.saturating_sub(pos) {
            return Err(Error::malformed(format!(
                "{n} bytes needed, but the stream data ends {} bytes further",
                self.end.saturating_sub(pos)
            ))
            .at_offset(pos));
        }
        Ok(())
    }

    fn spend(&mut self) -> Result<(), Error> {
        if *self.budget == 0 {
            return Err(Error::malformed(
                "too many values (the decoder's value limit was reached)",
            )
            .at_offset(self.r.position()));
        }
        *self.budget -= 1;
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<Box<[u8]>, Error> {
        self.need(n)?;
        Ok(self.r.get_vec(n)?.into_boxed_slice())
    }
}

/// Decodes a payload with `desc`: its fields, then its subsections.
pub(crate) fn decode_struct(
    cx: &mut FieldCtx<'_, '_>,
    desc: &Arc<VmsdDesc>,
    depth: u32,
) -> Result<StructValue, Error> {
    if depth > MAX_NESTING {
        return Err(Error::malformed("descriptions nested too deeply").at_offset(cx.r.position()));
    }
    let mut fields = Vec::with_capacity(desc.fields.len());
    for (fi, f) in desc.fields.iter().enumerate() {
        let n = f.count();
        // The element index for error paths: the array position of a compressed
        // array, or the entry's `index` (the last element of an uncompressed array
        // has none: it follows the previous entry's).
        let base = f.index.or_else(|| {
            let prev = desc.fields[..fi].last()?;
            (prev.name == f.name).then_some(prev.index? + 1)
        });
        for i in 0..n {
            let v = decode_value(cx, f, depth).map_err(|e| {
                let e = match base {
                    Some(b) => e.at_index(b + i),
                    None if n > 1 => e.at_index(i),
                    None => e,
                };
                e.in_field(f.name.clone())
            })?;
            fields.push(FieldValue {
                field: fi as u32,
                value: v,
            });
        }
    }
    let mut subsections = Vec::with_capacity(desc.subsections.len());
    for sub in &desc.subsections {
        let at = cx.r.position();
        let want = sub.name.as_deref().unwrap_or("?");
        let marker = cx.r.get_u8()?;
        if marker != SUBSECTION {
            return Err(Error::malformed(format!(
                "subsection '{want}' not found: expected 0x05, found 0x{marker:02x}"
            ))
            .at_offset(at));
        }
        let name = cx.r.get_counted_string()?;
        let version = cx.r.get_be32()?;
        let body = decode_struct(cx, sub, depth + 1).map_err(|e| e.in_field(name.clone()))?;
        subsections.push(Subsection {
            name,
            version,
            body,
        });
    }
    Ok(StructValue {
        desc: desc.clone(),
        fields,
        subsections,
    })
}

fn size_of(cx: &FieldCtx<'_, '_>, f: &FieldDesc) -> Result<u64, Error> {
    f.size.ok_or_else(|| {
        Error::malformed(format!(
            "the vmdesc gives no size for field '{}' of type '{}'",
            f.name,
            f.ty.as_deref().unwrap_or("?")
        ))
        .at_offset(cx.r.position())
    })
}

fn decode_value(cx: &mut FieldCtx<'_, '_>, f: &FieldDesc, depth: u32) -> Result<Value, Error> {
    cx.spend()?;
    match f.kind {
        FieldKind::Int { .. } => {
            let size = size_of(cx, f)?;
            if (1..=8).contains(&size) {
                cx.need(size)?;
                let mut b = [0u8; 8];
                cx.r.get_bytes_into(&mut b[8 - size as usize..])?;
                Ok(Value::Int(u64::from_be_bytes(b)))
            } else {
                Ok(Value::Bytes(cx.bytes(size)?))
            }
        }
        FieldKind::Bool => {
            let size = size_of(cx, f)?;
            if size == 1 {
                cx.need(1)?;
                Ok(Value::Bool(cx.r.get_u8()?))
            } else {
                Ok(Value::Bytes(cx.bytes(size)?))
            }
        }
        FieldKind::Nullptr => {
            let at = cx.r.position();
            let size = size_of(cx, f)?;
            let b = cx.bytes(size)?;
            if *b != [NULLPTR_MARKER] {
                return Err(Error::malformed(format!(
                    "a nullptr entry must be the byte 0x30, found {}",
                    super::analyze::hex_bytes(&b)
                ))
                .at_offset(at));
            }
            Ok(Value::Nullptr)
        }
        FieldKind::Capability => {
            let at = cx.r.position();
            let len = cx.r.get_u8()? as u64;
            let b = cx.bytes(len)?;
            let s = String::from_utf8(b.into_vec())
                .map_err(|_| Error::malformed("capability name is not UTF-8").at_offset(at))?;
            Ok(Value::Capability(s))
        }
        FieldKind::Struct => {
            let Some(d) = &f.struct_desc else {
                return Err(
                    Error::malformed("struct field without description").at_offset(cx.r.position())
                );
            };
            Ok(Value::Struct(Box::new(decode_struct(cx, d, depth + 1)?)))
        }
        FieldKind::Raw => {
            let at = cx.r.position();
            let size = size_of(cx, f)?;
            let bytes = cx.bytes(size)?;
            if f.inline.is_empty() && !f.is_inline_type() {
                return Ok(Value::Bytes(bytes));
            }
            let (elements, direct_keys) = match decode_inline(f, &bytes, at, cx.budget, depth) {
                Some((e, k)) => (Some(e), k),
                None => (None, Vec::new()),
            };
            Ok(Value::Inline(Box::new(InlineValue {
                bytes,
                elements,
                direct_keys,
            })))
        }
    }
}

/// Decodes the raw bytes of an inline entry with its inline descriptions, and a gtree's
/// direct keys; `None` if they do not account for exactly these bytes.
fn decode_inline(
    f: &FieldDesc,
    bytes: &[u8],
    at: u64,
    budget: &mut u64,
    depth: u32,
) -> Option<(Vec<StructValue>, Vec<u64>)> {
    let mut r = Reader::from_slice(bytes).with_base_offset(at);
    let end = at + bytes.len() as u64;
    let mut cx = FieldCtx {
        r: &mut r,
        end,
        budget,
    };
    let mut out = Vec::new();
    let mut keys = Vec::new();
    match f.ty.as_deref() {
        Some("vstruct" | "tmp") => {
            let [d] = f.inline.as_slice() else {
                return None;
            };
            out.push(decode_struct(&mut cx, d, depth + 1).ok()?);
        }
        Some("qtailq" | "qlist") => {
            loop {
                match cx.r.get_u8().ok()? {
                    0 => break,
                    1 => {
                        let d = f.inline.get(out.len())?;
                        out.push(decode_struct(&mut cx, d, depth + 1).ok()?);
                    }
                    _ => return None,
                }
            }
            if out.len() != f.inline.len() {
                return None;
            }
        }
        // A be32 node count, then marked nodes: a described key and a value (two
        // description groups per node), or a be64 key and a value (one group).
        Some("gtree") => {
            let nodes = cx.r.get_be32().ok()? as usize;
            let struct_keys = nodes > 0 && f.inline.len() == 2 * nodes;
            if nodes > 0 && !struct_keys && f.inline.len() != nodes {
                return None;
            }
            loop {
                match cx.r.get_u8().ok()? {
                    0 => break,
                    1 => {
                        if !struct_keys {
                            keys.push(cx.r.get_be64().ok()?);
                        }
                        for _ in 0..1 + usize::from(struct_keys) {
                            let d = f.inline.get(out.len())?;
                            out.push(decode_struct(&mut cx, d, depth + 1).ok()?);
                        }
                    }
                    _ => return None,
                }
            }
            if out.len() != f.inline.len() {
                return None;
            }
        }
        _ => return None,
    }
    cx.r.at_end().ok()?.then_some((out, keys))
}
