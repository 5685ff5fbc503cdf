//! What the checker reports: [`Problem`]s, their kinds, QEMU's wording and the JSON
//! output.

use std::fmt;

use serde_json::{Map, Value};

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

/// One incompatibility found by [`check`](super::check).
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

/// The checker's exit code: the number of problems, capped at 255.
pub fn exit_code(problems: &[Problem]) -> u8 {
    problems.len().min(255) as u8
}

/// The problems as a JSON array of [`Problem::to_json`] objects.
pub fn problems_to_json(problems: &[Problem]) -> Value {
    Value::Array(problems.iter().map(Problem::to_json).collect())
}
