//! Will a machine load this stream? A decoded stream checked against a schema dump
//! (QEMU's `-dump-vmstate` JSON or this project's), before anyone tries it.
//!
//! Each START/FULL section is matched to the schema's description of the same name (the
//! idstr's last `/` component is the description name, as QEMU builds idstrs), then:
//! the section version must lie in the description's `[minimum_version_id,
//! version_id]`; every field the stream's vmdesc describes must be in the description
//! (by name and position among fields of that name) with the same element size and
//! count (sizes of structs, whose schema size is a C `sizeof`, are not compared: their
//! descriptions are, recursively); every subsection sent must be one the description
//! has. Sections the schema does not describe (RAM, and what QEMU registers outside
//! device classes: `timer`, `globalstate`, the CPUs, ...) are listed as not checked.
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
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut last: Option<&str> = None;
        for entry in &v.fields {
            let name = bare_name(&entry.name);
            // Entries of one array (`index`, or pointer-array runs) share the field.
            if entry.index.is_some_and(|i| i > 0) || (last == Some(entry.name.as_str())) {
                continue;
            }
            last = Some(entry.name.as_str());
            let k = seen.entry(name).or_default();
            let schema_field = fields.iter().filter(|f| f.name == name).nth(*k);
            *k += 1;
            let here = format!("{path}/{name}");
            match schema_field {
                None => self.report(&here, "not in the schema's description".into()),
                Some(f) => self.field(entry, f, &here),
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
        if f.description.is_some()
            || entry.is_inline_type()
            || entry.ty.as_deref() == Some("nullptr")
        {
            // Sizes of structs, lists and temporaries are C sizes in the schema.
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
            && !matches!(entry.ty.as_deref(), Some("buffer" | "unused_buffer"))
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

/// A vmdesc field name without QEMU's `[k]` suffix for repeated names.
fn bare_name(name: &str) -> &str {
    match name.rfind('[') {
        Some(i) if name.ends_with(']') && name[i + 1..name.len() - 1].parse::<u32>().is_ok() => {
            &name[..i]
        }
        _ => name,
    }
}
