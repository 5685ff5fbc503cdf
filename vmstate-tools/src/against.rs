//! Will a machine load this stream? A decoded stream checked against a schema dump
//! (QEMU's `-dump-vmstate` JSON or this project's), before anyone tries it.
//!
//! Each START/FULL section is matched to the schema's description of the same name (the
//! idstr's last `/` component is the description name, as QEMU builds idstrs), then:
//! the section version must lie in the description's `[minimum_version_id,
//! version_id]`; every field the stream's vmdesc describes must be in the description
//! (by name, among the fields of that name the version has) with the same element size
//! and count for primitives (the schema prints a C `sizeof` for everything else: the
//! descriptions of structs are compared recursively instead, and arrays of pointers,
//! whose elements the schema sizes as pointers, are not compared); every subsection sent
//! must be one the description has. Sections the schema does not describe (RAM, and
//! what QEMU registers outside device classes: `timer`, `globalstate`, the CPUs, ...)
//! are listed as not checked.
//!
//! The check goes from the stream to the schema: a field the schema's machine reads but
//! the stream lacks is not reported, since QEMU describes no entry for a counted array
//! that has no element, and a dump cannot tell such a field from a single value.
//!
//! ```
//! use vmstate::schema::Dump;
//! use vmstate::stream::{StreamConfig, save_snapshot};
//! use vmstate::{Registration, Registry, VmState};
//! use vmstate_tools::{against, decode};
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 2)]
//! struct Port92 { outport: u8 }
//!
//! let mut reg = Registry::new();
//! reg.register_device(Port92::default(), Registration::new()).unwrap();
//! let mut bytes = Vec::new();
//! save_snapshot(&mut reg, &mut bytes, StreamConfig::new("m")).unwrap();
//! let stream = decode::decode_slice(&bytes, Default::default()).unwrap();
//!
//! // A machine whose port92 is still at version 1 cannot load it.
//! let mut schema = Dump::from_descriptions("m", [("port92", Port92::DESCRIPTION)]);
//! let mut old = schema.section("port92").unwrap().clone();
//! old.version_id = 1;
//! old.description.version_id = 1;
//! let mut schema = Dump::new("m");
//! schema.insert("port92", old);
//! let report = against::check(&stream, &schema);
//! assert_eq!(report.problems.len(), 1);
//! assert!(report.problems[0].to_string().contains("newer than the schema's 1"));
//! ```

use std::collections::HashMap;
use std::fmt;

use vmstate::schema::{Description, Dump, Field};

use crate::decode::{FieldDesc, RecordBody, Stream, VmsdDesc};

/// A difference between the stream and what the schema's machine accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The section's idstr and instance.
    pub section: String,
    /// Where in it: description names and fields, `/`-separated (empty for the section
    /// itself).
    pub path: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.section, self.what)
        } else {
            write!(f, "{}: {}: {}", self.section, self.path, self.what)
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Sections checked.
    pub checked: Vec<String>,
    /// Sections the schema does not describe (not checked).
    pub not_described: Vec<String>,
    /// Every difference.
    pub problems: Vec<Problem>,
}

/// Checks `stream` against `schema`.
pub fn check(stream: &Stream, schema: &Dump) -> Report {
    let by_name: HashMap<&str, &Description> = schema
        .sections()
        .iter()
        .map(|(_, s)| (s.description.name.as_str(), &s.description))
        .collect();
    let mut report = Report::default();
    for rec in &stream.records {
        let RecordBody::Section(s) = &rec.body else {
            continue;
        };
        let h = &s.header;
        if !h.kind.has_full_header() {
            continue;
        }
        let section = format!("{} (instance {})", h.idstr, h.instance_id);
        let vmsd_name = h.idstr.rsplit('/').next().unwrap_or(&h.idstr);
        let Some(desc) = by_name.get(vmsd_name) else {
            report.not_described.push(section);
            continue;
        };
        let mut cx = Cx {
            section: &section,
            problems: &mut report.problems,
        };
        if h.version > desc.version_id {
            cx.report(
                "",
                format!(
                    "section version {} is newer than the schema's {}",
                    h.version, desc.version_id
                ),
            );
        } else if h.version < desc.minimum_version_id {
            cx.report(
                "",
                format!(
                    "section version {} is older than the schema's minimum {}",
                    h.version, desc.minimum_version_id
                ),
            );
        }
        let vmdesc = stream
            .desc
            .as_ref()
            .and_then(|d| d.devices.get(&(h.idstr.clone(), h.instance_id)));
        if let Some(v) = vmdesc {
            cx.vmsd(v, desc, vmsd_name);
        }
        report.checked.push(section);
    }
    report
}

struct Cx<'a> {
    section: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Cx<'_> {
    fn report(&mut self, path: &str, what: String) {
        self.problems.push(Problem {
            section: self.section.to_string(),
            path: path.to_string(),
            what,
        });
    }

    /// The fields and subsections the stream sent for one description.
    fn vmsd(&mut self, v: &VmsdDesc, d: &Description, path: &str) {
        let fields = d.fields.as_deref().unwrap_or_default();
        // vmdesc names repeated fields `name[k]`; the schema repeats the bare name.
        let mut matched = vec![false; fields.len()];
        let entries = &v.fields;
        let mut i = 0;
        while i < entries.len() {
            let entry = &entries[i];
            // The entries of one field: an array's `index` entries, or the runs of an
            // array of pointers, all under the same name.
            let group = entries[i..]
                .iter()
                .take_while(|e| e.name == entry.name)
                .count();
            i += group;
            let name = bare_name(&entry.name);
            // The schema field it is: the first of that name not matched yet that exists
            // at this version, one without an `exists` test first (QEMU's
            // `VMSTATE_UINT16_HACK` pairs a tested field with a versioned one).
            let version = v
                .version
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(u32::MAX);
            let candidates = || {
                fields
                    .iter()
                    .enumerate()
                    .filter(|&(at, f)| f.name == name && !matched[at] && f.version_id <= version)
            };
            let schema_field = candidates()
                .find(|(_, f)| !f.field_exists)
                .or_else(|| candidates().next())
                .or_else(|| {
                    fields
                        .iter()
                        .enumerate()
                        .find(|&(at, f)| f.name == name && !matched[at])
                });
            let here = format!("{path}/{name}");
            match schema_field {
                None => self.report(&here, "not in the schema's description".into()),
                Some((at, f)) => {
                    matched[at] = true;
                    let runs = entries[i - group..i]
                        .iter()
                        .any(|e| e.ty.as_deref() == Some("nullptr"));
                    if !runs {
                        self.field(entry, f, &here);
                    }
                }
            }
        }
        for sub in &v.subsections {
            let name = sub.name.as_deref().unwrap_or("?");
            let found = d
                .subsections
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|s| s.name == name);
            match found {
                None => self.report(
                    path,
                    format!("subsection '{name}' is not one the schema's description has"),
                ),
                Some(s) => {
                    let version = sub.version.unwrap_or(0);
                    if version > i64::from(s.version_id) {
                        self.report(
                            path,
                            format!(
                                "subsection '{name}' version {version} is newer than the \
                                 schema's {}",
                                s.version_id
                            ),
                        );
                    }
                    self.vmsd(sub, s, name);
                }
            }
        }
    }

    fn field(&mut self, entry: &FieldDesc, f: &Field, path: &str) {
        if let (Some(nested), Some(d)) = (&entry.struct_desc, &f.description) {
            self.vmsd(nested, d, path);
            return;
        }
        // Only primitives have a schema size that is their wire size (structs, lists,
        // temporaries, `virtio`, `timer`, ... print a C sizeof).
        if f.description.is_some() || !entry.ty.as_deref().is_some_and(is_fixed_primitive) {
            return;
        }
        if let (Some(size), Some(n)) = (entry.size, f.num)
            && entry.array_len.is_some_and(|len| len != n)
        {
            self.report(
                path,
                format!(
                    "{} elements in the stream, {n} in the schema ({size} bytes each)",
                    entry.array_len.unwrap_or(1)
                ),
            );
        }
        if let Some(size) = entry.size
            && size != f.size
        {
            self.report(
                path,
                format!(
                    "{size} bytes per element in the stream, {} in the schema",
                    f.size
                ),
            );
        }
    }
}

/// QEMU info types whose `-dump-vmstate` size is their size on the wire.
fn is_fixed_primitive(ty: &str) -> bool {
    let base = ty.strip_suffix(" equal").unwrap_or(ty);
    matches!(
        base,
        "bool"
            | "int8"
            | "int16"
            | "int32"
            | "int64"
            | "uint8"
            | "uint16"
            | "uint32"
            | "uint64"
            | "float64"
            | "buffer"
            | "unused_buffer"
    )
}

/// A vmdesc field name without QEMU's `[k]` suffix for repeated names.
fn bare_name(name: &str) -> &str {
    match name.rfind('[') {
        Some(i) if name.ends_with(']') && name[i + 1..name.len() - 1].parse::<u32>().is_ok() => {
            &name[..i]
        }
        _ => name,
    }
}
