//! Reading the vmdesc trailer (the JSON after EOF), and what it tells about sections.
//!
//! [`find_trailer`] locates the trailer from the end of a file the way QEMU's
//! `analyze-migration.py` does, so a loader can learn every FULL section's layout
//! before reading the stream. [`payload_size`] turns a device entry into the byte
//! length of its payload, which lets a loader skip sections nobody registered.

use std::io::{Read, Seek, SeekFrom};

use serde_json::Value;

use super::format;
use crate::error::{Error, Result};

/// How far from the end of a file the trailer is searched for (as analyze-migration.py).
pub const TRAILER_SEARCH: u64 = 10 << 20;

/// The parsed vmdesc trailer of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VmDesc {
    /// The whole JSON object.
    pub json: Value,
    /// Stream offset of the 0x06 byte.
    pub offset: u64,
}

impl VmDesc {
    /// Parses the JSON text of a trailer found at `offset`.
    pub fn parse(text: &[u8], offset: u64) -> Result<Self> {
        let json: Value = serde_json::from_slice(text)
            .map_err(|e| Error::invalid("vmdesc JSON", e.to_string()).at_offset(offset + 5))?;
        if !json.is_object() {
            return Err(Error::invalid("vmdesc JSON", "not an object").at_offset(offset + 5));
        }
        Ok(VmDesc { json, offset })
    }

    /// The device entries, in stream order.
    pub fn devices(&self) -> &[Value] {
        self.json["devices"].as_array().map_or(&[], Vec::as_slice)
    }

    /// The entry of the FULL section for `idstr` / `instance_id`.
    pub fn device(&self, idstr: &str, instance_id: u32) -> Option<&Value> {
        self.devices().iter().find(|d| {
            d["name"].as_str() == Some(idstr)
                && d["instance_id"].as_u64() == Some(instance_id as u64)
        })
    }
}

/// The trailer within `tail`, the last bytes of a stream starting at offset `base`:
/// the last `0x06, be32 len, JSON object` whose JSON runs exactly to the end and that
/// `parse` accepts (it gets the stream offset of the `0x06` byte and the JSON text).
/// Every reader of trailers (the loader's [`find_trailer`], the decoder of
/// `vmstate-tools` with its own JSON tree) finds it here, parsing the JSON once.
pub fn locate_trailer<T>(
    tail: &[u8],
    base: u64,
    mut parse: impl FnMut(u64, &[u8]) -> Option<T>,
) -> Option<T> {
    // The JSON is an object, so it starts with '{' right after the 5-byte header.
    for at in (0..tail.len().saturating_sub(6)).rev() {
        if tail[at] != format::VMDESCRIPTION || tail[at + 5] != b'{' {
            continue;
        }
        let len = u32::from_be_bytes([tail[at + 1], tail[at + 2], tail[at + 3], tail[at + 4]]);
        let text = &tail[at + 5..];
        if text.len() == len as usize
            && let Some(found) = parse(base + at as u64, text)
        {
            return Some(found);
        }
    }
    None
}

/// Finds the trailer of a seekable stream ([`locate_trailer`]) by reading only its
/// last bytes: the last MiB first, then up to [`TRAILER_SEARCH`] bytes. The position
/// is restored.
pub fn read_trailer<T, R: Read + Seek>(
    src: &mut R,
    mut parse: impl FnMut(u64, &[u8]) -> Option<T>,
) -> std::io::Result<Option<T>> {
    let here = src.stream_position()?;
    // The trailer ends where the integrity record, if any, starts.
    let (len, _) = super::integrity::find_record(src)?;
    let mut found = None;
    for window in [1 << 20, TRAILER_SEARCH] {
        let start = len.saturating_sub(window);
        src.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        src.by_ref().take(len - start).read_to_end(&mut tail)?;
        found = locate_trailer(&tail, start, &mut parse);
        if found.is_some() || start == 0 {
            break;
        }
    }
    src.seek(SeekFrom::Start(here))?;
    Ok(found)
}

/// Finds and parses the vmdesc trailer of a seekable stream ([`read_trailer`]).
/// Returns `None` if there is none. The position is restored.
pub fn find_trailer<R: Read + Seek>(file: &mut R) -> Result<Option<VmDesc>> {
    Ok(read_trailer(file, |offset, text| {
        VmDesc::parse(text, offset).ok()
    })?)
}

/// The trailer within `tail`, the last bytes of a stream starting at offset `base`
/// (without its integrity record, if it has one).
pub fn find_trailer_in(tail: &[u8], base: u64) -> Option<VmDesc> {
    locate_trailer(tail, base, |offset, text| VmDesc::parse(text, offset).ok())
}

/// The payload length of a section from its vmdesc entry: the sizes of its fields
/// (`size` × `array_len`), plus each subsection's header and payload.
pub fn payload_size(vmsd: &Value) -> Result<u64> {
    let mut total: u64 = 0;
    if let Some(fields) = vmsd["fields"].as_array() {
        for f in fields {
            let size = f["size"]
                .as_u64()
                .ok_or_else(|| Error::invalid("vmdesc field", format!("no size in {f}")))?;
            let n = f["array_len"].as_u64().unwrap_or(1);
            total = total.saturating_add(size.saturating_mul(n));
        }
    }
    if let Some(subs) = vmsd["subsections"].as_array() {
        for s in subs {
            let name = s["vmsd_name"].as_str().unwrap_or_default();
            total = total
                .saturating_add(1 + 1 + name.len() as u64 + 4)
                .saturating_add(payload_size(s)?);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_size_counts_arrays_and_subsection_headers() {
        let v: Value = serde_json::from_str(
            r#"{"fields": [{"size": 4}, {"array_len": 3, "size": 8}],
                "subsections": [{"vmsd_name": "a/b", "fields": [{"size": 2}]}]}"#,
        )
        .unwrap();
        assert_eq!(payload_size(&v).unwrap(), 4 + 24 + (1 + 1 + 3 + 4) + 2);
    }

    #[test]
    fn trailer_is_found_only_when_it_runs_to_the_end() {
        let json = br#"{"devices": []}"#;
        let mut s = vec![0u8, 0x06, 0, 0, 0, json.len() as u8];
        s.extend(json);
        let d = find_trailer_in(&s, 100).unwrap();
        assert_eq!(d.offset, 101);
        s.push(0);
        assert!(find_trailer_in(&s, 100).is_none());
    }
}
