//! The vmdesc trailer turned into descriptions the decoder walks (spec 1.7).
//!
//! Only the JSON drives decoding, as in `analyze-migration.py`: each field entry gives
//! a name, a `type` (which picks the reader), a `size`, and `array_len` for compressed
//! arrays; `struct` entries nest a description; `subsections` follow the fields.
//! Entries of type `vstruct`, `tmp`, `qtailq`, `qlist` and `gtree` carry their nested
//! description's keys inline (once per element for lists, hence duplicate keys);
//! [`FieldDesc::inline`] keeps each group.

use std::collections::HashMap;
use std::sync::Arc;

use super::json::Json;
use vmstate::Error;
use vmstate::stream::vmdesc;

/// How a field's bytes are read and shown (the reader classes of
/// `analyze-migration.py`, picked by the field's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A big-endian integer of `size` bytes; `signed` picks how it is shown.
    Int {
        /// Shown as signed (`"0xfffffffe (-2)"`) when negative.
        signed: bool,
    },
    /// One byte, any non-zero value is true.
    Bool,
    /// The NULL pointer marker, the byte `'0'`.
    Nullptr,
    /// A capability name: u8 length and the name (the `size` is not used).
    Capability,
    /// A nested description (`struct`).
    Struct,
    /// `size` raw bytes (`buffer`, `unused_buffer`, `timer`, `bitmap`, device-specific
    /// types, `vstruct`, `tmp`, `qtailq`, ...).
    Raw,
}

impl FieldKind {
    /// The reader for a vmdesc `type` string (`None` = no `type` key).
    pub fn for_type(ty: Option<&str>) -> FieldKind {
        match ty {
            Some(
                "int8" | "int16" | "int32" | "int64" | "int32 equal" | "int32 le" | "int64 equal"
                | "uint8 equal" | "uint16 equal",
            ) => FieldKind::Int { signed: true },
            Some("uint8" | "uint16" | "uint32" | "uint64" | "uint32 equal") => {
                FieldKind::Int { signed: false }
            }
            Some("bool") => FieldKind::Bool,
            Some("nullptr") => FieldKind::Nullptr,
            Some("capability") => FieldKind::Capability,
            Some("struct") => FieldKind::Struct,
            _ => FieldKind::Raw,
        }
    }
}

/// One description (a device, a subsection, a nested struct, or an inline group).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmsdDesc {
    /// `vmsd_name`, if given.
    pub name: Option<String>,
    /// `version`, if given.
    pub version: Option<i64>,
    /// The field entries, in stream order.
    pub fields: Vec<FieldDesc>,
    /// The subsections, in the order they were sent.
    pub subsections: Vec<Arc<VmsdDesc>>,
}

/// One field entry of a description.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDesc {
    /// `name` (with QEMU's `[k]` suffix for repeated names).
    pub name: String,
    /// `type`, if given.
    pub ty: Option<String>,
    /// The reader the type selects.
    pub kind: FieldKind,
    /// `size`: bytes of one element (`None` if missing or not a number).
    pub size: Option<u64>,
    /// `array_len` of a compressed array.
    pub array_len: Option<u64>,
    /// `index` of one element of an uncompressed array.
    pub index: Option<u64>,
    /// The nested description of a `struct` entry.
    pub struct_desc: Option<Arc<VmsdDesc>>,
    /// Inline description groups (`vstruct`, `tmp`: one; `qtailq`/`qlist`: one per
    /// element).
    pub inline: Vec<Arc<VmsdDesc>>,
}

impl FieldDesc {
    /// How many values this entry stands for (`array_len`, at least 1, as the script
    /// unfolds it).
    pub fn count(&self) -> u64 {
        self.array_len.unwrap_or(1).max(1)
    }

    /// True for the types whose nested description is inlined in the field object.
    pub fn is_inline_type(&self) -> bool {
        matches!(
            self.ty.as_deref(),
            Some("vstruct" | "tmp" | "qtailq" | "qlist" | "gtree")
        )
    }
}

/// The whole vmdesc: page size, configuration and per-device descriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct VmDescription {
    /// The parsed JSON, duplicates kept.
    pub json: Json,
    /// `page_size` (target page size), 4096 if absent.
    pub page_size: u64,
    /// The `configuration` description, if present.
    pub configuration: Option<Arc<VmsdDesc>>,
    /// Device descriptions by (idstr, instance id); a later duplicate wins.
    pub devices: HashMap<(String, u32), Arc<VmsdDesc>>,
    /// How many entries `devices` has in the JSON.
    pub device_count: usize,
}

fn bad(what: impl Into<String>) -> Error {
    Error::malformed(format!("vmdesc: {}", what.into()))
}

impl VmDescription {
    /// Builds the descriptions from the parsed trailer JSON.
    pub fn from_json(json: Json) -> Result<Self, Error> {
        if !json.is_object() {
            return Err(bad("the JSON is not an object"));
        }
        let page_size = match json.get("page_size") {
            None => 4096,
            Some(p) => p
                .as_u64()
                .filter(|p| p.is_power_of_two() && (1024..=1 << 30).contains(p))
                .ok_or_else(|| bad("page_size is not a power of two from 1 KiB to 1 GiB"))?,
        };
        let configuration = match json.get("configuration") {
            Some(c) if c.is_object() => Some(Arc::new(vmsd(c, "configuration")?)),
            Some(_) => return Err(bad("configuration is not an object")),
            None => None,
        };
        let mut devices = HashMap::new();
        let list = match json.get("devices") {
            None => &[][..],
            Some(d) => d.as_array().ok_or_else(|| bad("devices is not an array"))?,
        };
        for d in list {
            let name = d
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("a device entry has no name"))?;
            let instance = d
                .get("instance_id")
                .and_then(Json::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(format!("device '{name}' has no valid instance_id")))?;
            if d.get("fields").is_none() {
                return Err(bad(format!("vmstate for device {name} has no fields")));
            }
            let desc = vmsd(d, name)?;
            devices.insert((name.to_string(), instance), Arc::new(desc));
        }
        Ok(VmDescription {
            device_count: list.len(),
            json,
            page_size,
            configuration,
            devices,
        })
    }

    /// The description of the section (idstr, instance id).
    pub fn device(&self, idstr: &str, instance_id: u32) -> Option<&Arc<VmsdDesc>> {
        self.devices.get(&(idstr.to_string(), instance_id))
    }
}

/// Corrects QEMU 10.0's over-count in arrays of pointers: when such an array starts with
/// a present element and has NULL ones further on, its first entry claims the whole
/// array (`array_len` = N) although the entries after it describe the rest. The array
/// is the run of consecutive entries with one name (other fields' names differ, QEMU
/// adds `[k]` to repeated names) that contains a `nullptr` entry; its first run is N
/// minus what the later entries claim. (`analyze-migration.py` reads N elements there
/// and misparses the rest of the section.)
fn undo_pointer_overcount(fields: &mut [FieldDesc]) {
    let mut start = 0;
    while start < fields.len() {
        let end = start
            + fields[start..]
                .iter()
                .take_while(|f| f.name == fields[start].name)
                .count();
        let group = &mut fields[start..end];
        let has_null = group.iter().any(|f| f.ty.as_deref() == Some("nullptr"));
        if let [first, rest @ ..] = group
            && has_null
            && first.ty.as_deref() != Some("nullptr")
            && let Some(claimed) = first.array_len
        {
            let later = rest
                .iter()
                .try_fold(0u64, |sum, f| sum.checked_add(f.count()));
            if let Some(later) = later
                && claimed > later
            {
                first.array_len = Some(claimed - later);
            }
        }
        start = end;
    }
}

/// A description object: `vmsd_name`, `version`, `fields`, `subsections`.
fn vmsd(obj: &Json, what: &str) -> Result<VmsdDesc, Error> {
    let mut fields = match obj.get("fields") {
        None => Vec::new(),
        Some(f) => f
            .as_array()
            .ok_or_else(|| bad(format!("fields of '{what}' is not an array")))?
            .iter()
            .map(|f| field(f, what))
            .collect::<Result<Vec<_>, _>>()?,
    };
    undo_pointer_overcount(&mut fields);
    let subsections = match obj.get("subsections") {
        None => Vec::new(),
        Some(s) => s
            .as_array()
            .ok_or_else(|| bad(format!("subsections of '{what}' is not an array")))?
            .iter()
            .map(|s| {
                if s.get("fields").is_none() {
                    return Err(bad(format!("a subsection of '{what}' has no fields")));
                }
                vmsd(s, what).map(Arc::new)
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(VmsdDesc {
        name: obj
            .get("vmsd_name")
            .and_then(Json::as_str)
            .map(str::to_string),
        version: obj.get("version").and_then(Json::as_i64),
        fields,
        subsections,
    })
}

fn field(f: &Json, what: &str) -> Result<FieldDesc, Error> {
    if !f.is_object() {
        return Err(bad(format!("a field of '{what}' is not an object")));
    }
    let name = f
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("a field of '{what}' has no name")))?
        .to_string();
    let ty = f.get("type").and_then(Json::as_str).map(str::to_string);
    let kind = FieldKind::for_type(ty.as_deref());
    let array_len = match f.get("array_len") {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .ok_or_else(|| bad(format!("array_len of field '{name}' is not a count")))?,
        ),
    };
    let struct_desc = if kind == FieldKind::Struct {
        let s = f
            .get("struct")
            .filter(|s| s.is_object())
            .ok_or_else(|| bad(format!("struct field '{name}' has no struct description")))?;
        if s.get("fields").is_none() {
            return Err(bad(format!("No fields in struct '{name}'")));
        }
        Some(Arc::new(vmsd(s, &name)?))
    } else {
        None
    };
    let mut d = FieldDesc {
        size: f.get("size").and_then(Json::as_u64),
        index: f.get("index").and_then(Json::as_u64),
        name,
        ty,
        kind,
        array_len,
        struct_desc,
        inline: Vec::new(),
    };
    if d.is_inline_type() {
        d.inline = inline_groups(f);
    }
    Ok(d)
}

/// The inline description groups of a field object: each `vmsd_name` starts a group,
/// and the `version`, `fields` and `subsections` after it belong to it. A group that
/// does not parse is dropped (the field is then only raw bytes).
fn inline_groups(f: &Json) -> Vec<Arc<VmsdDesc>> {
    let mut groups: Vec<Vec<(String, Json)>> = Vec::new();
    for (k, v) in f.members().unwrap_or_default() {
        match k.as_str() {
            "vmsd_name" => groups.push(vec![(k.clone(), v.clone())]),
            "version" | "fields" | "subsections" => match groups.last_mut() {
                Some(g) => g.push((k.clone(), v.clone())),
                None => groups.push(vec![(k.clone(), v.clone())]),
            },
            _ => {}
        }
    }
    let mut out = Vec::new();
    for g in groups {
        match vmsd(&Json::Object(g), "inline") {
            Ok(d) => out.push(Arc::new(d)),
            Err(_) => return Vec::new(),
        }
    }
    out
}

/// How far from the end of a file the trailer is searched for.
pub const TRAILER_SEARCH: u64 = vmdesc::TRAILER_SEARCH;

/// The vmdesc trailer found in the last bytes of a stream.
#[derive(Debug, Clone)]
pub struct FoundTrailer {
    /// Stream offset of the 0x06 byte.
    pub offset: u64,
    /// The JSON text.
    pub text: Vec<u8>,
    /// The parsed JSON.
    pub json: Json,
}

impl FoundTrailer {
    /// The trailer at `offset` with JSON `text`, if the text parses.
    pub fn parse(offset: u64, text: &[u8]) -> Option<Self> {
        let json = Json::parse(text).ok()?;
        Some(FoundTrailer {
            offset,
            text: text.to_vec(),
            json,
        })
    }
}

/// Finds the trailer in `tail` (the last bytes of a stream, starting at stream offset
/// `base`) with [`vmdesc::locate_trailer`], keeping the JSON's duplicate keys.
pub fn find_trailer(tail: &[u8], base: u64) -> Option<FoundTrailer> {
    vmdesc::locate_trailer(tail, base, FoundTrailer::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_groups_follow_vmsd_name() {
        let j = Json::parse(
            br#"{"devices": [{"name": "d", "instance_id": 0, "vmsd_name": "d", "version": 1,
            "fields": [{"name": "q", "type": "qtailq",
               "vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint8", "size": 1}],
               "vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint8", "size": 1}],
               "size": 5},
              {"name": "a", "array_len": 3, "type": "uint16", "size": 2}]}]}"#,
        )
        .unwrap();
        let d = VmDescription::from_json(j).unwrap();
        assert_eq!(d.page_size, 4096);
        let dev = d.device("d", 0).unwrap();
        assert_eq!(dev.fields[0].inline.len(), 2);
        assert_eq!(dev.fields[0].size, Some(5));
        assert_eq!(dev.fields[1].count(), 3);
        assert_eq!(dev.fields[1].kind, FieldKind::Int { signed: false });
    }

    #[test]
    fn a_device_without_fields_is_an_error() {
        let j = Json::parse(br#"{"devices": [{"name": "d", "instance_id": 0}]}"#).unwrap();
        assert!(VmDescription::from_json(j).is_err());
    }
}
