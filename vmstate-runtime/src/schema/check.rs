//! The compatibility checker: QEMU's `scripts/vmstate-static-checker.py`, rule for rule,
//! plus two rules it misses.
//!
//! See the [module documentation](super) for the rules, their order and the messages.

use std::fmt;

use serde_json::{Map, Value};

use super::MACHINE_KEY;

/// Which list of tolerated field renames to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Renames {
    /// The list in QEMU 10.0's script (the one that wrote the reference output kept with
    /// the test vectors).
    #[default]
    Qemu10_0,
    /// QEMU 10.0's list plus `hpet`: `num_timers` ↔ `num_timers_save`, added upstream in
    /// May 2025 (after 10.0) for the rename in QEMU commit 1433e38cc8.
    Upstream,
}

/// Options for [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// The field rename whitelist.
    pub renames: Renames,
    /// Also apply the rules QEMU's checker misses (default: on): a top-level
    /// `minimum_version_id` in dest above the src `version_id`, and fields at the end of
    /// a dest field list that src does not send.
    pub extra_rules: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            renames: Renames::default(),
            extra_rules: true,
        }
    }
}

impl CheckOptions {
    /// Exactly QEMU 10.0's checker: its rename list, without the extra rules.
    pub fn qemu() -> Self {
        CheckOptions {
            renames: Renames::Qemu10_0,
            extra_rules: false,
        }
    }
}

/// What went wrong; the data needed to render QEMU's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// A src section has no counterpart in dest (after the tolerated section renames).
    SectionMissing,
    /// src `version_id` is above dest `version_id` (section, description or field).
    VersionError {
        /// src `version_id`.
        src: i64,
        /// dest `version_id`.
        dest: i64,
    },
    /// src `version_id` is below dest `minimum_version_id`. For a section (no
    /// description) this is one of our extra rules.
    MinimumVersionError {
        /// src `version_id`.
        src: i64,
        /// dest `minimum_version_id`.
        dest_min: i64,
    },
    /// A key of the src section or description is missing in dest.
    EntryMissing {
        /// The key (`"Fields"`, `"Subsections"`, ...).
        entry: String,
    },
    /// The description names differ (and are not a tolerated rename); the description
    /// is not checked further.
    DescriptionMismatch {
        /// The src description name.
        src: String,
        /// The dest description name.
        dest: String,
    },
    /// The field lists diverge; the rest of the description's fields is not checked.
    FieldMismatch {
        /// The src field name.
        src: String,
        /// The dest field name.
        dest: String,
    },
    /// dest has no field where src still has one.
    DestFieldsExhausted,
    /// An `unused` field could not be balanced by whole fields on the other side.
    UnusedSizeMismatch,
    /// The element sizes of two matched primitive fields differ.
    SizeMismatch {
        /// src size.
        src: i64,
        /// dest size.
        dest: i64,
    },
    /// A src struct field has a description; the dest field has none.
    MissingDescription,
    /// A src subsection has no dest subsection of the same name.
    SubsectionMissing {
        /// The subsection name.
        name: String,
    },
    /// Extra rule: a dest field after the last src field, which dest reads (no `exists`
    /// test, introduced at or before the version it loads) but src never sends.
    ExtraDestField {
        /// The dest field's `version_id`.
        version_id: i64,
    },
    /// Extra rule: a dest `unused` field that the src fields only partly cover.
    UnusedUncovered {
        /// The bytes dest still expects.
        bytes: i64,
    },
}

impl ProblemKind {
    /// A short stable name for the kind (used in the JSON output).
    pub fn name(&self) -> &'static str {
        match self {
            ProblemKind::SectionMissing => "section-missing",
            ProblemKind::VersionError { .. } => "version-error",
            ProblemKind::MinimumVersionError { .. } => "minimum-version-error",
            ProblemKind::EntryMissing { .. } => "entry-missing",
            ProblemKind::DescriptionMismatch { .. } => "description-mismatch",
            ProblemKind::FieldMismatch { .. } => "field-mismatch",
            ProblemKind::DestFieldsExhausted => "dest-fields-exhausted",
            ProblemKind::UnusedSizeMismatch => "unused-size-mismatch",
            ProblemKind::SizeMismatch { .. } => "size-mismatch",
            ProblemKind::MissingDescription => "missing-description",
            ProblemKind::SubsectionMissing { .. } => "subsection-missing",
            ProblemKind::ExtraDestField { .. } => "extra-dest-field",
            ProblemKind::UnusedUncovered { .. } => "unused-uncovered",
        }
    }
}

/// One incompatibility found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The src section name (top-level key).
    pub section: String,
    /// The description path, outermost first: the section's description, then nested
    /// struct descriptions and subsections. Empty for section-level problems. Its last
    /// element is the description QEMU's message names.
    pub description: Vec<String>,
    /// The field, for field-level problems (the src field name).
    pub field: Option<String>,
    /// What went wrong.
    pub kind: ProblemKind,
    /// The message after the location, in QEMU's words (`version error: 2 > 1`).
    pub message: String,
}

impl Problem {
    /// The description QEMU's message names: the innermost one.
    pub fn description_name(&self) -> Option<&str> {
        self.description.last().map(String::as_str)
    }

    /// True for problems QEMU's checker does not report (our extra rules).
    pub fn is_extra(&self) -> bool {
        match self.kind {
            ProblemKind::ExtraDestField { .. } | ProblemKind::UnusedUncovered { .. } => true,
            ProblemKind::MinimumVersionError { .. } => self.description.is_empty(),
            _ => false,
        }
    }

    /// The problem as a JSON object: `section`, `description` (the path), `field`
    /// (or null), `kind` (see [`ProblemKind::name`]) and the kind's data, `message`,
    /// `text` (the rendered line) and `extra` ([`Problem::is_extra`]).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("section".into(), Value::from(self.section.as_str()));
        m.insert(
            "description".into(),
            Value::Array(
                self.description
                    .iter()
                    .map(|d| Value::from(d.as_str()))
                    .collect(),
            ),
        );
        m.insert(
            "field".into(),
            self.field.as_deref().map_or(Value::Null, Value::from),
        );
        m.insert("kind".into(), Value::from(self.kind.name()));
        let mut data = |k: &str, v: Value| {
            m.insert(k.into(), v);
        };
        match &self.kind {
            ProblemKind::VersionError { src, dest } | ProblemKind::SizeMismatch { src, dest } => {
                data("src", Value::from(*src));
                data("dest", Value::from(*dest));
            }
            ProblemKind::MinimumVersionError { src, dest_min } => {
                data("src", Value::from(*src));
                data("dest_min", Value::from(*dest_min));
            }
            ProblemKind::EntryMissing { entry } => data("entry", Value::from(entry.as_str())),
            ProblemKind::DescriptionMismatch { src, dest }
            | ProblemKind::FieldMismatch { src, dest } => {
                data("src", Value::from(src.as_str()));
                data("dest", Value::from(dest.as_str()));
            }
            ProblemKind::SubsectionMissing { name } => data("name", Value::from(name.as_str())),
            ProblemKind::ExtraDestField { version_id } => {
                data("version_id", Value::from(*version_id))
            }
            ProblemKind::UnusedUncovered { bytes } => data("bytes", Value::from(*bytes)),
            ProblemKind::SectionMissing
            | ProblemKind::DestFieldsExhausted
            | ProblemKind::UnusedSizeMismatch
            | ProblemKind::MissingDescription => {}
        }
        m.insert("message".into(), Value::from(self.message.as_str()));
        m.insert("text".into(), Value::from(self.to_string()));
        m.insert("extra".into(), Value::from(self.is_extra()));
        Value::Object(m)
    }
}

/// One line in QEMU's wording, e.g. `Section "hpet" Description "hpet": version error:
/// 2 > 1`. Field-level version errors also name the field (QEMU's do not), and an
/// `unused` mismatch reads `near "f"` (QEMU prints `near " f"`).
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sec = &self.section;
        let desc = self.description_name();
        let msg = &self.message;
        match &self.kind {
            ProblemKind::SectionMissing => write!(f, "Section \"{sec}\" {msg}"),
            ProblemKind::VersionError { .. } | ProblemKind::MinimumVersionError { .. } => {
                write!(f, "Section \"{sec}\"")?;
                if let Some(d) = desc {
                    write!(f, " Description \"{d}\"")?;
                }
                if let Some(field) = &self.field {
                    write!(f, ", Field \"{field}\"")?;
                }
                if desc.is_some() || self.field.is_some() {
                    f.write_str(":")?;
                }
                write!(f, " {msg}")
            }
            ProblemKind::EntryMissing { .. } => match desc {
                Some(d) => write!(f, "Section \"{sec}\" Description \"{d}\": {msg}"),
                None => write!(f, "Section \"{sec}\": {msg}"),
            },
            ProblemKind::DescriptionMismatch { .. } => write!(f, "Section \"{sec}\": {msg}"),
            ProblemKind::SizeMismatch { .. } => {
                write!(f, "Section \"{sec}\"")?;
                if let Some(d) = desc {
                    write!(f, " Description \"{d}\"")?;
                }
                if let Some(field) = &self.field {
                    write!(f, " Field \"{field}\"")?;
                }
                write!(f, " {msg}")
            }
            ProblemKind::MissingDescription => write!(
                f,
                "Section \"{sec}\", Description \"{}\", Field \"{}\": {msg}",
                desc.unwrap_or(""),
                self.field.as_deref().unwrap_or("")
            ),
            ProblemKind::FieldMismatch { .. }
            | ProblemKind::DestFieldsExhausted
            | ProblemKind::UnusedSizeMismatch
            | ProblemKind::SubsectionMissing { .. }
            | ProblemKind::ExtraDestField { .. }
            | ProblemKind::UnusedUncovered { .. } => write!(
                f,
                "Section \"{sec}\", Description \"{}\": {msg}",
                desc.unwrap_or("")
            ),
        }
    }
}

/// Checks whether state described by the dump `src` can be loaded by the build that
/// wrote the dump `dest` (migration from src to dest). Returns the problems in the
/// order QEMU's checker prints them (src sections in file order, each depth first).
///
/// Malformed input never panics: a missing number reads as 0, a missing name as `""`,
/// and a missing or non-array list as empty (QEMU's script would stop with a Python
/// exception).
pub fn check(src: &Value, dest: &Value, opts: &CheckOptions) -> Vec<Problem> {
    let mut c = Checker {
        opts,
        problems: Vec::new(),
    };
    c.check_top(src, dest);
    c.problems
}

/// QEMU's `--reverse`: checks migration from `dest` to `src`.
pub fn check_reverse(src: &Value, dest: &Value, opts: &CheckOptions) -> Vec<Problem> {
    check(dest, src, opts)
}

/// The warning QEMU's checker prints (without counting an error) when the two dumps come
/// from different machine types: `Warning: checking incompatible machine types: "a",
/// "b"`. None when the names agree or either dump has no `vmschkmachine`.
pub fn machine_warning(src: &Value, dest: &Value) -> Option<String> {
    let s = src.get(MACHINE_KEY)?;
    let d = dest.get(MACHINE_KEY)?;
    let (s, d) = (text(s, "Name"), text(d, "Name"));
    (s != d).then(|| format!("Warning: checking incompatible machine types: \"{s}\", \"{d}\""))
}

/// The checker's exit code: the number of problems, capped at 255.
pub fn exit_code(problems: &[Problem]) -> u8 {
    problems.len().min(255) as u8
}

/// The problems as a JSON array of [`Problem::to_json`] objects.
pub fn problems_to_json(problems: &[Problem]) -> Value {
    Value::Array(problems.iter().map(Problem::to_json).collect())
}

/// Field renames QEMU's checker tolerates, per description (or, for description names,
/// per section): any two names of one list are the same field.
const RENAMES: &[(&str, &[&str])] = &[
    ("apic", &["timer", "timer_expiry"]),
    ("e1000", &["dev", "parent_obj"]),
    ("ehci", &["dev", "pcidev"]),
    ("I440FX", &["dev", "parent_obj"]),
    ("ich9_ahci", &["card", "parent_obj"]),
    ("ich9-ahci", &["ahci", "ich9_ahci"]),
    ("ioh3420", &["PCIDevice", "PCIEDevice"]),
    (
        "ioh-3240-express-root-port",
        &[
            "port.br.dev",
            "parent_obj.parent_obj.parent_obj",
            "port.br.dev.exp.aer_log",
            "parent_obj.parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    (
        "cirrus_vga",
        &[
            "hw_cursor_x",
            "vga.hw_cursor_x",
            "hw_cursor_y",
            "vga.hw_cursor_y",
        ],
    ),
    ("lsiscsi", &["dev", "parent_obj"]),
    ("mch", &["d", "parent_obj"]),
    (
        "pci_bridge",
        &["bridge.dev", "parent_obj", "bridge.dev.shpc", "shpc"],
    ),
    ("pcnet", &["pci_dev", "parent_obj"]),
    ("PIIX3", &["pci_irq_levels", "pci_irq_levels_vmstate"]),
    (
        "piix4_pm",
        &[
            "dev",
            "parent_obj",
            "pci0_status",
            "acpi_pci_hotplug.acpi_pcihp_pci_status[0x0]",
            "pm1a.sts",
            "ar.pm1.evt.sts",
            "pm1a.en",
            "ar.pm1.evt.en",
            "pm1_cnt.cnt",
            "ar.pm1.cnt.cnt",
            "tmr.timer",
            "ar.tmr.timer",
            "tmr.overflow_time",
            "ar.tmr.overflow_time",
            "gpe",
            "ar.gpe",
        ],
    ),
    ("rtl8139", &["dev", "parent_obj"]),
    ("qxl", &["num_surfaces", "ssd.num_surfaces"]),
    (
        "usb-ccid",
        &["abProtocolDataStructure", "abProtocolDataStructure.data"],
    ),
    ("usb-host", &["dev", "parent_obj"]),
    ("usb-mouse", &["usb-ptr-queue", "HIDPointerEventQueue"]),
    ("usb-tablet", &["usb-ptr-queue", "HIDPointerEventQueue"]),
    ("vmware_vga", &["card", "parent_obj"]),
    ("vmware_vga_internal", &["depth", "new_depth"]),
    ("xhci", &["pci_dev", "parent_obj"]),
    ("x3130-upstream", &["PCIDevice", "PCIEDevice"]),
    (
        "xio3130-express-downstream-port",
        &[
            "port.br.dev",
            "parent_obj.parent_obj.parent_obj",
            "port.br.dev.exp.aer_log",
            "parent_obj.parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    ("xio3130-downstream", &["PCIDevice", "PCIEDevice"]),
    (
        "xio3130-express-upstream-port",
        &[
            "br.dev",
            "parent_obj.parent_obj",
            "br.dev.exp.aer_log",
            "parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    (
        "spapr_pci",
        &[
            "dma_liobn[0]",
            "mig_liobn",
            "mem_win_addr",
            "mig_mem_win_addr",
            "mem_win_size",
            "mig_mem_win_size",
            "io_win_addr",
            "mig_io_win_addr",
            "io_win_size",
            "mig_io_win_size",
        ],
    ),
];

/// The entry [`Renames::Upstream`] adds.
const UPSTREAM_RENAMES: &[(&str, &[&str])] = &[("hpet", &["num_timers", "num_timers_save"])];

/// Section renames QEMU's checker tolerates, in both directions.
const SECTION_RENAMES: &[(&str, &str)] = &[("ICH9 LPC", "ICH9-LPC"), ("e1000-82540em", "e1000")];

impl Renames {
    /// Whether `s` and `d` name the same field of `name` (equal, or both in its rename
    /// list). QEMU's `check_fields_match`.
    pub fn fields_match(self, name: &str, s: &str, d: &str) -> bool {
        if s == d {
            return true;
        }
        let extra: &[(&str, &[&str])] = match self {
            Renames::Qemu10_0 => &[],
            Renames::Upstream => UPSTREAM_RENAMES,
        };
        // QEMU's list is a dict: the first entry for a name is the only one.
        match RENAMES.iter().chain(extra).find(|(n, _)| *n == name) {
            Some((_, list)) => list.contains(&s) && list.contains(&d),
            None => false,
        }
    }
}

/// The tolerated other name of a section, if any. QEMU's `get_changed_sec_name`.
pub fn renamed_section(name: &str) -> Option<&'static str> {
    SECTION_RENAMES.iter().find_map(|&(a, b)| {
        if a == name {
            Some(b)
        } else if b == name {
            Some(a)
        } else {
            None
        }
    })
}

fn int(v: &Value, key: &str) -> i64 {
    match v.get(key) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Some(Value::Bool(b)) => i64::from(*b),
        _ => 0,
    }
}

fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn slice(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key).map_or(&[], slice)
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some()
}

/// `size`, times `num` when present. QEMU's `size_total`.
fn size_total(field: &Value) -> i64 {
    let size = int(field, "size");
    if has(field, "num") {
        size.wrapping_mul(int(field, "num"))
    } else {
        size
    }
}

/// A position in a field list, with the version dest loads that list at.
struct Cursor<'v> {
    items: &'v [Value],
    pos: usize,
    load_version: i64,
}

impl<'v> Cursor<'v> {
    fn new(items: &'v [Value], load_version: i64) -> Self {
        Cursor {
            items,
            pos: 0,
            load_version,
        }
    }

    fn next(&mut self) -> Option<&'v Value> {
        let item = self.items.get(self.pos)?;
        self.pos += 1;
        Some(item)
    }

    fn rest(&self) -> &'v [Value] {
        &self.items[self.pos.min(self.items.len())..]
    }
}

static NULL: Value = Value::Null;

struct Checker<'o> {
    opts: &'o CheckOptions,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(
        &mut self,
        section: &str,
        description: &[String],
        field: Option<&str>,
        kind: ProblemKind,
        message: String,
    ) {
        self.problems.push(Problem {
            section: section.to_string(),
            description: description.to_vec(),
            field: field.map(str::to_string),
            kind,
            message,
        });
    }

    fn fields_match(&self, name: &str, s: &str, d: &str) -> bool {
        self.opts.renames.fields_match(name, s, d)
    }

    fn check_top(&mut self, src: &Value, dest: &Value) {
        let (Some(src), Some(dest)) = (src.as_object(), dest.as_object()) else {
            return;
        };
        for (sec, s) in src {
            let d = match dest.get(sec) {
                Some(d) => d,
                None => match renamed_section(sec).and_then(|n| dest.get(n)) {
                    Some(d) => d,
                    None => {
                        let msg = "does not exist in dest".to_string();
                        self.report(sec, &[], None, ProblemKind::SectionMissing, msg);
                        continue;
                    }
                },
            };
            if sec == MACHINE_KEY {
                // Only a warning; see `machine_warning`.
                continue;
            }
            self.check_version(s, d, sec, &[], None);
            let Some(entries) = s.as_object() else {
                continue;
            };
            for (entry, sv) in entries {
                let Some(dv) = d.get(entry) else {
                    let kind = ProblemKind::EntryMissing {
                        entry: entry.clone(),
                    };
                    self.report(sec, &[], None, kind, format!("Entry \"{entry}\" missing"));
                    continue;
                };
                if entry == "Description" {
                    // A section is loaded at the version in its header: src's.
                    let load = int(sv, "version_id");
                    self.check_descriptions(sv, dv, sec, &[], load);
                }
            }
        }
    }

    /// QEMU's `check_version`. `path` is empty for a section, `field` is set for a field.
    fn check_version(
        &mut self,
        s: &Value,
        d: &Value,
        sec: &str,
        path: &[String],
        field: Option<&str>,
    ) {
        let (sv, dv) = (int(s, "version_id"), int(d, "version_id"));
        if sv > dv {
            let kind = ProblemKind::VersionError { src: sv, dest: dv };
            self.report(
                sec,
                path,
                field,
                kind,
                format!("version error: {sv} > {dv}"),
            );
        }
        if !has(d, "minimum_version_id") {
            return;
        }
        let dmin = int(d, "minimum_version_id");
        // QEMU only reports this with a description: a section-level one is lost to an
        // indentation slip in the script. Reporting it is one of our extra rules.
        if sv < dmin && (!path.is_empty() || self.opts.extra_rules) {
            let kind = ProblemKind::MinimumVersionError {
                src: sv,
                dest_min: dmin,
            };
            let msg = format!("minimum version error: {sv} < {dmin}");
            self.report(sec, path, field, kind, msg);
        }
    }

    /// QEMU's `check_descriptions`. `parent` is the path above this description;
    /// `load_version` the version dest loads its fields at.
    fn check_descriptions(
        &mut self,
        s: &Value,
        d: &Value,
        sec: &str,
        parent: &[String],
        load_version: i64,
    ) {
        let name = text(s, "name");
        let mut path = parent.to_vec();
        path.push(name.to_string());
        self.check_version(s, d, sec, &path, None);

        let dname = text(d, "name");
        if !self.fields_match(sec, name, dname) {
            let kind = ProblemKind::DescriptionMismatch {
                src: name.to_string(),
                dest: dname.to_string(),
            };
            let msg = format!("Description \"{name}\" missing, got \"{dname}\" instead; skipping");
            self.report(sec, &path, None, kind, msg);
            return;
        }

        let Some(entries) = s.as_object() else {
            return;
        };
        if self.opts.extra_rules && !has(s, "Fields") && has(d, "Fields") {
            // src has no field list at all (QEMU skips the comparison): every dest field
            // is an extra one.
            self.check_fields(&[], list(d, "Fields"), sec, &path, load_version);
        }
        for (key, sv) in entries {
            let Some(dv) = d.get(key) else {
                let kind = ProblemKind::EntryMissing { entry: key.clone() };
                self.report(sec, &path, None, kind, format!("Entry \"{key}\" missing"));
                continue;
            };
            match key.as_str() {
                "Fields" => self.check_fields(slice(sv), slice(dv), sec, &path, load_version),
                "Subsections" => self.check_subsections(slice(sv), slice(dv), sec, &path),
                _ => {}
            }
        }
    }

    /// QEMU's `check_subsections`: each src subsection must exist in dest, by name.
    fn check_subsections(&mut self, src: &[Value], dest: &[Value], sec: &str, path: &[String]) {
        for s in src {
            let name = text(s, "name");
            let mut found = false;
            for d in dest.iter().filter(|d| text(d, "name") == name) {
                found = true;
                // A subsection is loaded at the version in its header: src's.
                self.check_descriptions(s, d, sec, path, int(s, "version_id"));
            }
            if !found {
                let kind = ProblemKind::SubsectionMissing {
                    name: name.to_string(),
                };
                self.report(
                    sec,
                    path,
                    None,
                    kind,
                    format!("Subsection \"{name}\" not found"),
                );
            }
        }
    }

    /// QEMU's `exists_in_substruct`: `item` is a struct whose first field matches
    /// `other` (by name or by its description's rename list).
    fn exists_in_substruct(&self, item: &Value, other: &str) -> bool {
        let Some(desc) = item.get("Description") else {
            return false;
        };
        match desc.get("Fields").and_then(Value::as_array) {
            Some(fields) if !fields.is_empty() => {
                self.fields_match(text(desc, "name"), text(&fields[0], "field"), other)
            }
            _ => false,
        }
    }

    /// QEMU's `check_fields`, step for step, plus the trailing-dest-fields rule.
    fn check_fields(
        &mut self,
        src: &[Value],
        dest: &[Value],
        sec: &str,
        path: &[String],
        load_version: i64,
    ) {
        let desc = path.last().map(String::as_str).unwrap_or("");
        let mut s_it = Cursor::new(src, load_version);
        let mut d_it = Cursor::new(dest, load_version);
        // Where to resume when a substruct we descended into is over.
        let mut s_stack: Vec<Cursor<'_>> = Vec::new();
        let mut d_stack: Vec<Cursor<'_>> = Vec::new();
        let mut advance_src = true;
        let mut advance_dest = true;
        let mut unused_count: i64 = 0;
        let mut s_item: &Value = &NULL;
        let mut d_item: &Value = &NULL;

        loop {
            if advance_src {
                match s_it.next() {
                    Some(item) => s_item = item,
                    None => match s_stack.pop() {
                        Some(outer) => {
                            s_it = outer;
                            continue;
                        }
                        None => {
                            if self.opts.extra_rules {
                                self.trailing_dest(
                                    sec,
                                    path,
                                    d_item,
                                    (!advance_dest).then_some(unused_count),
                                    &d_it,
                                    &d_stack,
                                );
                            }
                            break;
                        }
                    },
                }
            } else if unused_count == 0 {
                // Not advancing just once: when entering or leaving a substruct.
                advance_src = true;
            }

            if advance_dest {
                match d_it.next() {
                    Some(item) => d_item = item,
                    None => match d_stack.pop() {
                        Some(outer) => {
                            d_it = outer;
                            advance_src = false;
                            continue;
                        }
                        None => {
                            let sf = text(s_item, "field");
                            let msg = format!(
                                "expected field \"{sf}\", while dest has no further fields"
                            );
                            self.report(sec, path, Some(sf), ProblemKind::DestFieldsExhausted, msg);
                            break;
                        }
                    },
                }
            } else if unused_count == 0 {
                advance_dest = true;
            }

            if unused_count != 0 {
                // Balancing an `unused` field against whole fields on the other side:
                // src fields while dest's `unused` waits, or the reverse. (QEMU
                // subtracts `size` here, not `size * num`.)
                let other = if !advance_dest {
                    Some((s_item, true))
                } else if !advance_src {
                    Some((d_item, false))
                } else {
                    None
                };
                if let Some((other, other_is_src)) = other {
                    unused_count -= int(other, "size");
                    if unused_count == 0 {
                        if other_is_src {
                            advance_dest = true;
                        } else {
                            advance_src = true;
                        }
                        continue;
                    }
                    if unused_count < 0 {
                        let of = text(other, "field");
                        let msg = format!("unused size mismatch near \"{of}\"");
                        self.report(sec, path, Some(of), ProblemKind::UnusedSizeMismatch, msg);
                        break;
                    }
                    continue;
                }
            }

            let sf = text(s_item, "field");
            let df = text(d_item, "field");
            if !self.fields_match(desc, sf, df) {
                // Fields moved into a substruct without a wire change: first a new dest
                // substruct, then a src substruct that dest removed.
                if self.exists_in_substruct(d_item, sf) {
                    let sub = list(&d_item["Description"], "Fields");
                    let sub_version = int(&d_item["Description"], "version_id");
                    d_stack.push(std::mem::replace(&mut d_it, Cursor::new(sub, sub_version)));
                    advance_src = false;
                    continue;
                }
                if self.exists_in_substruct(s_item, df) {
                    let sub = list(&s_item["Description"], "Fields");
                    let sub_version = int(&s_item["Description"], "version_id");
                    s_stack.push(std::mem::replace(&mut s_it, Cursor::new(sub, sub_version)));
                    advance_dest = false;
                    continue;
                }
                if sf == "unused" || df == "unused" {
                    let (s_size, d_size) = (size_total(s_item), size_total(d_item));
                    if s_size == d_size {
                        continue;
                    }
                    if df == "unused" {
                        advance_dest = false;
                        unused_count = d_size - s_size;
                        continue;
                    }
                    advance_src = false;
                    unused_count = s_size - d_size;
                    continue;
                }
                let kind = ProblemKind::FieldMismatch {
                    src: sf.to_string(),
                    dest: df.to_string(),
                };
                let msg = format!("expected field \"{sf}\", got \"{df}\"; skipping rest");
                self.report(sec, path, Some(sf), kind, msg);
                break;
            }

            self.check_version(s_item, d_item, sec, path, Some(sf));
            if !has(s_item, "Description") {
                // Sizes are compared for primitives only (a struct's is its C sizeof).
                let (ss, ds) = (int(s_item, "size"), int(d_item, "size"));
                if ss != ds {
                    let kind = ProblemKind::SizeMismatch { src: ss, dest: ds };
                    let msg = format!("size mismatch: {ss} , {ds}");
                    self.report(sec, path, Some(sf), kind, msg);
                }
            }
            self.check_description_in_list(s_item, d_item, sec, path);
        }
    }

    /// QEMU's `check_description_in_list`: a src struct field's description against
    /// dest's.
    fn check_description_in_list(&mut self, s: &Value, d: &Value, sec: &str, path: &[String]) {
        let Some(sd) = s.get("Description") else {
            return;
        };
        let Some(dd) = d.get("Description") else {
            let sf = text(s, "field");
            let msg = "missing description".to_string();
            self.report(sec, path, Some(sf), ProblemKind::MissingDescription, msg);
            return;
        };
        // QEMU loads a nested struct at its own (dest) version.
        self.check_descriptions(sd, dd, sec, path, int(dd, "version_id"));
    }

    /// Extra rule: src has no more fields, but dest would read more. `unused_left` is
    /// set when the last dest field is an `unused` the src fields only partly covered.
    fn trailing_dest(
        &mut self,
        sec: &str,
        path: &[String],
        d_item: &Value,
        unused_left: Option<i64>,
        d_it: &Cursor<'_>,
        d_stack: &[Cursor<'_>],
    ) {
        if let Some(bytes) = unused_left.filter(|&b| b > 0) {
            let df = text(d_item, "field");
            let msg = format!("dest field \"{df}\" expects {bytes} more byte(s) than src sends");
            self.report(
                sec,
                path,
                Some(df),
                ProblemKind::UnusedUncovered { bytes },
                msg,
            );
        }
        let levels = std::iter::once(d_it).chain(d_stack.iter().rev());
        for level in levels {
            for item in level.rest() {
                let version = int(item, "version_id");
                let has_test = item
                    .get("field_exists")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                // Fields with an `exists` test depend on run-time state (typically a
                // compat property): they are not reported.
                if has_test || version > level.load_version {
                    continue;
                }
                let df = text(item, "field");
                let msg = format!(
                    "dest has extra field \"{df}\" (version_id {version}) that src does not send"
                );
                self.report(
                    sec,
                    path,
                    Some(df),
                    ProblemKind::ExtraDestField {
                        version_id: version,
                    },
                    msg,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A primitive field.
    fn f(name: &str, size: i64) -> Value {
        json!({"field": name, "version_id": 0, "field_exists": false, "size": size})
    }

    /// A field with a version.
    fn fv(name: &str, size: i64, version: i64) -> Value {
        json!({"field": name, "version_id": version, "field_exists": false, "size": size})
    }

    /// A struct field.
    fn st(name: &str, desc: Value) -> Value {
        json!({"field": name, "version_id": 0, "field_exists": false, "size": 0,
               "Description": desc})
    }

    fn desc(name: &str, version: i64, min: i64, fields: Vec<Value>) -> Value {
        json!({"name": name, "version_id": version, "minimum_version_id": min,
               "Fields": fields})
    }

    fn with_subs(mut d: Value, subs: Vec<Value>) -> Value {
        d["Subsections"] = Value::Array(subs);
        d
    }

    fn section(name: &str, d: Value) -> Value {
        json!({"Name": name, "version_id": d["version_id"],
               "minimum_version_id": d["minimum_version_id"], "Description": d})
    }

    fn dump(sections: Vec<(&str, Value)>) -> Value {
        let mut m = Map::new();
        m.insert(MACHINE_KEY.into(), json!({"Name": "pc"}));
        for (name, d) in sections {
            m.insert(name.into(), section(name, d));
        }
        Value::Object(m)
    }

    /// One section `dev` with one description `dev` holding `fields`.
    fn dev(version: i64, min: i64, fields: Vec<Value>) -> Value {
        dump(vec![("dev", desc("dev", version, min, fields))])
    }

    fn lines(src: &Value, dest: &Value, opts: &CheckOptions) -> Vec<String> {
        check(src, dest, opts)
            .iter()
            .map(Problem::to_string)
            .collect()
    }

    fn strict(src: &Value, dest: &Value) -> Vec<String> {
        lines(src, dest, &CheckOptions::default())
    }

    #[test]
    fn identical_dumps_are_compatible() {
        let a = dev(3, 1, vec![f("a", 4), fv("b", 8, 2)]);
        assert!(check(&a, &a, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn version_error_at_section_and_description_level() {
        let src = dev(2, 1, vec![f("a", 4)]);
        let dest = dev(1, 1, vec![f("a", 4)]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(
            p.iter().map(Problem::to_string).collect::<Vec<_>>(),
            [
                r#"Section "dev" version error: 2 > 1"#,
                r#"Section "dev" Description "dev": version error: 2 > 1"#,
            ]
        );
        assert_eq!(p[0].description, Vec::<String>::new());
        assert_eq!(p[1].description, ["dev"]);
        assert_eq!(p[1].kind, ProblemKind::VersionError { src: 2, dest: 1 });
        // Older src, newer dest: fine.
        assert!(check(&dest, &src, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn field_version_error_names_the_field() {
        let src = dev(2, 1, vec![fv("a", 4, 2)]);
        let dest = dev(2, 1, vec![fv("a", 4, 1)]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field.as_deref(), Some("a"));
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev" Description "dev", Field "a": version error: 2 > 1"#
        );
    }

    #[test]
    fn missing_section_and_tolerated_section_renames() {
        let src = dump(vec![
            ("gone", desc("gone", 1, 1, vec![])),
            ("ICH9 LPC", desc("ICH9LPC", 1, 1, vec![f("a", 1)])),
            ("e1000", desc("e1000", 2, 1, vec![f("a", 1)])),
        ]);
        let dest = dump(vec![
            ("ICH9-LPC", desc("ICH9LPC", 1, 1, vec![f("a", 1)])),
            ("e1000-82540em", desc("e1000", 2, 1, vec![f("a", 1)])),
        ]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].kind, ProblemKind::SectionMissing);
        assert_eq!(p[0].to_string(), r#"Section "gone" does not exist in dest"#);
        assert_eq!(renamed_section("ICH9-LPC"), Some("ICH9 LPC"));
        assert_eq!(renamed_section("e1000-82540em"), Some("e1000"));
        assert_eq!(renamed_section("hpet"), None);
    }

    #[test]
    fn machine_mismatch_is_only_a_warning() {
        let src = dev(1, 1, vec![f("a", 1)]);
        let mut dest = src.clone();
        dest[MACHINE_KEY]["Name"] = json!("q35");
        assert!(check(&src, &dest, &CheckOptions::default()).is_empty());
        assert_eq!(
            machine_warning(&src, &dest).as_deref(),
            Some(r#"Warning: checking incompatible machine types: "pc", "q35""#)
        );
        assert_eq!(machine_warning(&src, &src), None);
        // Without a machine entry in dest, QEMU counts a missing section.
        dest.as_object_mut().unwrap().remove(MACHINE_KEY);
        assert_eq!(
            strict(&src, &dest),
            [r#"Section "vmschkmachine" does not exist in dest"#]
        );
    }

    #[test]
    fn missing_field_when_dest_runs_out() {
        let src = dev(1, 1, vec![f("a", 4), f("b", 4), f("c", 4)]);
        let dest = dev(1, 1, vec![f("a", 4)]);
        let p = check(&src, &dest, &CheckOptions::default());
        // Only the first missing field is reported.
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::DestFieldsExhausted);
        assert_eq!(p[0].field.as_deref(), Some("b"));
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev", Description "dev": expected field "b", while dest has no further fields"#
        );
    }

    #[test]
    fn field_name_mismatch_skips_the_rest() {
        let src = dev(1, 1, vec![f("a", 4), f("b", 4), f("c", 2)]);
        let dest = dev(1, 1, vec![f("a", 4), f("x", 4), f("c", 4)]);
        assert_eq!(
            strict(&src, &dest),
            [r#"Section "dev", Description "dev": expected field "b", got "x"; skipping rest"#]
        );
    }

    #[test]
    fn size_mismatch() {
        let src = dev(1, 1, vec![f("a", 8), f("b", 4)]);
        let dest = dev(1, 1, vec![f("a", 4), f("b", 4)]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::SizeMismatch { src: 8, dest: 4 });
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev" Description "dev" Field "a" size mismatch: 8 , 4"#
        );
    }

    #[test]
    fn struct_sizes_are_not_compared() {
        let inner = |size| desc("inner", 1, 1, vec![f("x", size)]);
        let mut s = st("s", inner(4));
        s["size"] = json!(80);
        let mut d = st("s", inner(4));
        d["size"] = json!(42);
        assert!(strict(&dev(1, 1, vec![s.clone()]), &dev(1, 1, vec![d])).is_empty());
        // ...but their descriptions are, with the nested path.
        let d = st("s", inner(2));
        let p = check(
            &dev(1, 1, vec![s]),
            &dev(1, 1, vec![d]),
            &CheckOptions::default(),
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].description, ["dev", "inner"]);
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev" Description "inner" Field "x" size mismatch: 4 , 2"#
        );
    }

    #[test]
    fn unused_balances_against_whole_fields() {
        // src: 8 unused bytes; dest: two u32 fields in their place, then the same tail.
        let mut unused8 = f("unused", 8);
        unused8["version_id"] = json!(0);
        let src = dev(1, 1, vec![f("a", 1), unused8.clone(), f("z", 2)]);
        let dest = dev(1, 1, vec![f("a", 1), f("b", 4), f("c", 4), f("z", 2)]);
        assert!(strict(&src, &dest).is_empty());
        // And the other way round (dest turned fields into unused bytes).
        assert!(strict(&dest, &src).is_empty());
        // Equal totals: an array against unused bytes.
        let arr = json!({"field": "regs", "version_id": 0, "field_exists": false,
                         "num": 4, "size": 2});
        let dest = dev(1, 1, vec![f("a", 1), arr, f("z", 2)]);
        assert!(strict(&src, &dest).is_empty());
    }

    #[test]
    fn unused_overshoot_is_a_mismatch() {
        let src = dev(1, 1, vec![f("unused", 6), f("z", 2)]);
        let dest = dev(1, 1, vec![f("b", 4), f("c", 4), f("z", 2)]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::UnusedSizeMismatch);
        assert_eq!(p[0].field.as_deref(), Some("c"));
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev", Description "dev": unused size mismatch near "c""#
        );
        // Same in the other direction, now consuming src fields.
        let p = check(&dest, &src, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::UnusedSizeMismatch);
        assert_eq!(p[0].field.as_deref(), Some("c"));
    }

    #[test]
    fn descends_into_substructs_both_ways() {
        let flat = dev(1, 1, vec![f("a", 4), f("b", 4), f("c", 4)]);
        let nested = dev(
            1,
            1,
            vec![
                st("s", desc("sub", 1, 1, vec![f("a", 4), f("b", 4)])),
                f("c", 4),
            ],
        );
        assert!(strict(&flat, &nested).is_empty());
        assert!(strict(&nested, &flat).is_empty());
        // A size difference inside the substruct is still found.
        let nested2 = dev(
            1,
            1,
            vec![
                st("s", desc("sub", 1, 1, vec![f("a", 4), f("b", 2)])),
                f("c", 4),
            ],
        );
        assert_eq!(
            strict(&flat, &nested2),
            [r#"Section "dev" Description "dev" Field "b" size mismatch: 4 , 2"#]
        );
    }

    #[test]
    fn missing_description_of_a_struct_field() {
        let src = dev(1, 1, vec![st("s", desc("sub", 1, 1, vec![f("a", 4)]))]);
        let dest = dev(1, 1, vec![f("s", 0)]);
        assert_eq!(
            strict(&src, &dest),
            [r#"Section "dev", Description "dev", Field "s": missing description"#]
        );
    }

    #[test]
    fn description_name_mismatch_and_missing_entries() {
        let src = dump(vec![(
            "dev",
            with_subs(
                desc("dev", 1, 1, vec![f("a", 1)]),
                vec![desc("dev/x", 1, 1, vec![])],
            ),
        )]);
        let dest = dump(vec![("dev", desc("other", 1, 1, vec![f("a", 1)]))]);
        assert_eq!(
            strict(&src, &dest),
            [r#"Section "dev": Description "dev" missing, got "other" instead; skipping"#]
        );
        let dest = dump(vec![("dev", desc("dev", 1, 1, vec![f("a", 1)]))]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].kind,
            ProblemKind::EntryMissing {
                entry: "Subsections".into()
            }
        );
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev" Description "dev": Entry "Subsections" missing"#
        );
        // A section-level entry.
        let mut dest2 = src.clone();
        dest2["dev"].as_object_mut().unwrap().remove("Description");
        assert_eq!(
            strict(&src, &dest2),
            [r#"Section "dev": Entry "Description" missing"#]
        );
    }

    #[test]
    fn subsection_missing_and_checked_when_present() {
        let sub = |size| desc("dev/sub", 1, 1, vec![f("x", size)]);
        let src = dump(vec![(
            "dev",
            with_subs(desc("dev", 1, 1, vec![f("a", 1)]), vec![sub(4)]),
        )]);
        let dest = dump(vec![(
            "dev",
            with_subs(
                desc("dev", 1, 1, vec![f("a", 1)]),
                vec![desc("dev/other", 1, 1, vec![])],
            ),
        )]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].kind,
            ProblemKind::SubsectionMissing {
                name: "dev/sub".into()
            }
        );
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev", Description "dev": Subsection "dev/sub" not found"#
        );
        // Extra dest subsections are fine; a present one is checked.
        let dest = dump(vec![(
            "dev",
            with_subs(
                desc("dev", 1, 1, vec![f("a", 1)]),
                vec![desc("dev/other", 1, 1, vec![]), sub(2)],
            ),
        )]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].description, ["dev", "dev/sub"]);
        assert_eq!(p[0].kind, ProblemKind::SizeMismatch { src: 4, dest: 2 });
    }

    #[test]
    fn rename_whitelist_is_per_description() {
        let src = dump(vec![(
            "e1000",
            desc("e1000", 2, 1, vec![f("dev", 4), f("mac", 6)]),
        )]);
        let dest = dump(vec![(
            "e1000",
            desc("e1000", 2, 1, vec![f("parent_obj", 4), f("mac", 6)]),
        )]);
        assert!(strict(&src, &dest).is_empty());
        assert!(strict(&dest, &src).is_empty());
        // The same rename in another description is a mismatch.
        let src = dev(1, 1, vec![f("dev", 4)]);
        let dest = dev(1, 1, vec![f("parent_obj", 4)]);
        assert_eq!(strict(&src, &dest).len(), 1);
        // hpet's rename is only in the upstream list.
        let src = dump(vec![(
            "hpet",
            desc("hpet", 2, 1, vec![fv("num_timers", 1, 2)]),
        )]);
        let dest = dump(vec![(
            "hpet",
            desc("hpet", 2, 1, vec![fv("num_timers_save", 1, 2)]),
        )]);
        assert_eq!(strict(&src, &dest).len(), 1);
        let upstream = CheckOptions {
            renames: Renames::Upstream,
            ..CheckOptions::default()
        };
        assert!(lines(&src, &dest, &upstream).is_empty());
        assert!(Renames::Qemu10_0.fields_match("piix4_pm", "gpe", "ar.gpe"));
        // Any two names of one list match, as in QEMU (not only the intended pairs).
        assert!(Renames::Qemu10_0.fields_match("piix4_pm", "gpe", "ar.tmr.timer"));
        assert!(!Renames::Qemu10_0.fields_match("piix4_pm", "gpe", "nope"));
    }

    #[test]
    fn minimum_version_at_section_level_is_an_extra_rule() {
        // dest dropped support for version 1 streams.
        let src = dev(1, 1, vec![f("a", 1)]);
        let mut dest = dev(2, 2, vec![f("a", 1)]);
        // Keep the descriptions compatible so that only the section level differs.
        dest["dev"]["Description"]["minimum_version_id"] = json!(1);
        assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert!(p[0].is_extra());
        assert_eq!(
            p[0].kind,
            ProblemKind::MinimumVersionError {
                src: 1,
                dest_min: 2
            }
        );
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev" minimum version error: 1 < 2"#
        );
        // At description level QEMU reports it too.
        let dest = dev(2, 2, vec![f("a", 1)]);
        let q = lines(&src, &dest, &CheckOptions::qemu());
        assert_eq!(
            q,
            [r#"Section "dev" Description "dev": minimum version error: 1 < 2"#]
        );
        assert_eq!(check(&src, &dest, &CheckOptions::default()).len(), 2);
    }

    #[test]
    fn extra_trailing_dest_fields() {
        let src = dev(2, 1, vec![f("a", 4)]);
        let dest = dev(
            3,
            1,
            vec![
                f("a", 4),
                f("b", 4),     // read: reported
                fv("c", 4, 2), // since 2 <= 2: reported
                fv("d", 4, 3), // since 3 > 2: skipped on load
                json!({"field": "e", "version_id": 0, "field_exists": true, "size": 4}),
            ],
        );
        assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(
            p.iter()
                .map(|p| p.field.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(p.iter().all(Problem::is_extra));
        assert_eq!(p[1].kind, ProblemKind::ExtraDestField { version_id: 2 });
        assert_eq!(
            p[0].to_string(),
            r#"Section "dev", Description "dev": dest has extra field "b" (version_id 0) that src does not send"#
        );
    }

    #[test]
    fn dest_fields_where_src_has_no_field_list() {
        let mut src = dev(1, 1, vec![]);
        src["dev"]["Description"]
            .as_object_mut()
            .unwrap()
            .remove("Fields");
        let dest = dev(1, 1, vec![f("virtio", 0)]);
        assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
        assert_eq!(
            strict(&src, &dest),
            [
                r#"Section "dev", Description "dev": dest has extra field "virtio" (version_id 0) that src does not send"#
            ]
        );
        // The other way round it is QEMU's `Entry "Fields" missing`.
        assert_eq!(
            strict(&dest, &src),
            [r#"Section "dev" Description "dev": Entry "Fields" missing"#]
        );
    }

    #[test]
    fn extra_trailing_fields_in_nested_structs_use_the_dest_version() {
        // A nested struct is loaded at dest's own version, so a field added behind a
        // version bump of the struct is still read.
        let src = dev(1, 1, vec![st("s", desc("sub", 1, 1, vec![f("x", 4)]))]);
        let dest = dev(
            1,
            1,
            vec![st("s", desc("sub", 2, 1, vec![f("x", 4), fv("y", 4, 2)]))],
        );
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].description, ["dev", "sub"]);
        assert_eq!(p[0].field.as_deref(), Some("y"));
        // While in a subsection, the src version from the header decides.
        let src = dump(vec![(
            "dev",
            with_subs(
                desc("dev", 1, 1, vec![]),
                vec![desc("dev/s", 1, 1, vec![f("x", 4)])],
            ),
        )]);
        let dest = dump(vec![(
            "dev",
            with_subs(
                desc("dev", 1, 1, vec![]),
                vec![desc("dev/s", 2, 1, vec![f("x", 4), fv("y", 4, 2)])],
            ),
        )]);
        assert!(strict(&src, &dest).is_empty());
    }

    #[test]
    fn extra_trailing_fields_after_a_dest_substruct() {
        let flat = dev(1, 1, vec![f("a", 4)]);
        let nested = dev(
            1,
            1,
            vec![
                st("s", desc("sub", 1, 1, vec![f("a", 4), f("b", 4)])),
                f("c", 4),
            ],
        );
        let p = check(&flat, &nested, &CheckOptions::default());
        assert_eq!(
            p.iter()
                .map(|p| p.field.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn unused_partly_covered_at_the_end() {
        let src = dev(1, 1, vec![f("a", 1), f("b", 4)]);
        let dest = dev(1, 1, vec![f("a", 1), f("unused", 8)]);
        assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::UnusedUncovered { bytes: 4 });
        assert_eq!(p[0].field.as_deref(), Some("unused"));
    }

    #[test]
    fn exit_code_is_capped() {
        let p = Problem {
            section: "s".into(),
            description: vec![],
            field: None,
            kind: ProblemKind::SectionMissing,
            message: "does not exist in dest".into(),
        };
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&vec![p.clone(); 3]), 3);
        assert_eq!(exit_code(&vec![p; 300]), 255);
    }

    #[test]
    fn json_output() {
        let src = dev(1, 1, vec![f("a", 8)]);
        let dest = dev(1, 1, vec![f("a", 4)]);
        let p = check(&src, &dest, &CheckOptions::default());
        assert_eq!(
            problems_to_json(&p),
            json!([{
                "section": "dev",
                "description": ["dev"],
                "field": "a",
                "kind": "size-mismatch",
                "src": 8,
                "dest": 4,
                "message": "size mismatch: 8 , 4",
                "text": "Section \"dev\" Description \"dev\" Field \"a\" size mismatch: 8 , 4",
                "extra": false
            }])
        );
    }

    #[test]
    fn malformed_input_does_not_panic() {
        let junk = [
            json!(null),
            json!([]),
            json!({"x": 1}),
            json!({"x": {"Description": {"Fields": [1, null, {"Description": 3}]}}}),
            json!({"x": {"Description": {"Fields": {}, "Subsections": [null]}}}),
        ];
        for a in &junk {
            for b in &junk {
                let _ = check(a, b, &CheckOptions::default());
            }
        }
    }
}
