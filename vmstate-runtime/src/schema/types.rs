//! The typed schema: a dump in the shape of QEMU's `-dump-vmstate` as Rust values, read
//! and written with serde.
//!
//! Every key QEMU always writes is required: a dump without it does not deserialise,
//! and the error names the key (`missing field `size``). The keys QEMU leaves out in
//! some cases are `Option`s, `None` when absent ([`Description::fields`],
//! [`Description::subsections`], [`Field::num`], [`Field::description`]), and are
//! written back only when present, so a dump read and written again gives the same
//! text. Unknown keys are errors too: a misspelt key is not silently dropped.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The top-level key that carries the machine type (`{"Name": machine}`).
pub const MACHINE_KEY: &str = "vmschkmachine";

/// A schema dump: the machine type and the sections, in dump order.
///
/// In JSON it is one object: `"vmschkmachine": {"Name": machine}` first, then one entry
/// per section keyed by its name. Both are required when reading; the machine entry may
/// be anywhere in the object, and is always written first, as QEMU writes it. Section
/// names are unique and never [`MACHINE_KEY`] ([`Dump::insert`] keeps it so; a dump
/// with a repeated key does not deserialise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    machine: String,
    sections: Vec<(String, Section)>,
}

/// A top-level section: `{"Name", "version_id", "minimum_version_id", "Description"}`,
/// all required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The section name again (`"Name"`; QEMU writes the key's name).
    #[serde(rename = "Name")]
    pub name: String,
    /// The version the build writes.
    pub version_id: u32,
    /// The oldest version the build loads.
    pub minimum_version_id: u32,
    /// The section's description (`"Description"`).
    #[serde(rename = "Description")]
    pub description: Description,
}

/// A description (a section's, a nested struct's or a subsection's): `{"name",
/// "version_id", "minimum_version_id", ["Fields"], ["Subsections"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// The description's name (QEMU's `vmsd->name`).
    pub name: String,
    /// Its version.
    pub version_id: u32,
    /// The oldest version it loads.
    pub minimum_version_id: u32,
    /// The field list (`"Fields"`). `None` when the key is absent: QEMU leaves it out for
    /// a description without a field list (`fields == NULL`, devices that save by hand).
    /// A list holding only `VMSTATE_END_OF_LIST()` is `Some` and empty.
    #[serde(rename = "Fields", default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<Field>>,
    /// The subsections (`"Subsections"`), in the same shape. `None` when the key is
    /// absent, as QEMU leaves it out for a description without subsections.
    #[serde(
        rename = "Subsections",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subsections: Option<Vec<Description>>,
}

/// A field: `{"field", "version_id", "field_exists", ["num"], "size",
/// ["Description"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// The field name (`"field"`; `unused` for unused bytes).
    #[serde(rename = "field")]
    pub name: String,
    /// The version that introduced the field.
    pub version_id: u32,
    /// Whether an `exists` test decides instead of the version.
    pub field_exists: bool,
    /// The element count of a fixed array (QEMU's `VMS_ARRAY`); `None` when the key is
    /// absent, as it is for everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num: Option<u64>,
    /// The size of one element.
    pub size: u64,
    /// The nested description of a struct field (`"Description"`); `None` when the key
    /// is absent, as it is for primitive fields.
    #[serde(
        rename = "Description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Description>,
}

impl Dump {
    /// An empty dump for `machine`.
    pub fn new(machine: impl Into<String>) -> Self {
        Dump {
            machine: machine.into(),
            sections: Vec::new(),
        }
    }

    /// The machine type (`"vmschkmachine": {"Name": ...}`).
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// Replaces the machine type.
    pub fn set_machine(&mut self, machine: impl Into<String>) {
        self.machine = machine.into();
    }

    /// The sections with their names, in dump order.
    pub fn sections(&self) -> &[(String, Section)] {
        &self.sections
    }

    /// The section named `name`, if there is one.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// The section named `name`, to change it.
    pub fn section_mut(&mut self, name: &str) -> Option<&mut Section> {
        self.sections
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// Adds a section after the others. A name that is already there, or that is
    /// [`MACHINE_KEY`], is refused: the dump is left as it was and the result is false.
    pub fn insert(&mut self, name: impl Into<String>, section: Section) -> bool {
        let name = name.into();
        if name == MACHINE_KEY || self.section(&name).is_some() {
            return false;
        }
        self.sections.push((name, section));
        true
    }

    /// The dump as a JSON value, keys in QEMU's order.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a schema dump always converts to JSON")
    }

    /// A dump from a JSON value; an error names what is missing or unexpected.
    pub fn from_json(value: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// The text of the dump file, byte for byte as QEMU writes it
    /// ([`to_string`](super::to_string)).
    pub fn to_text(&self) -> String {
        super::to_string(&self.to_json())
    }
}

/// Reads a dump file's text; an error names what is missing or unexpected, with its
/// line and column.
impl FromStr for Dump {
    type Err = serde_json::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(text)
    }
}

impl Description {
    /// The fields, empty when there is no field list.
    pub fn fields(&self) -> &[Field] {
        self.fields.as_deref().unwrap_or(&[])
    }

    /// The subsections, empty when there are none.
    pub fn subsections(&self) -> &[Description] {
        self.subsections.as_deref().unwrap_or(&[])
    }
}

/// `"vmschkmachine"`'s value.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineEntry {
    #[serde(rename = "Name")]
    name: String,
}

impl Serialize for Dump {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.sections.len() + 1))?;
        let machine = MachineEntry {
            name: self.machine.clone(),
        };
        map.serialize_entry(MACHINE_KEY, &machine)?;
        for (name, section) in &self.sections {
            map.serialize_entry(name, section)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Dump {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(DumpVisitor)
    }
}

struct DumpVisitor;

impl<'de> Visitor<'de> for DumpVisitor {
    type Value = Dump;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a schema dump: an object with \"{MACHINE_KEY}\" and one entry per section"
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dump, A::Error> {
        let mut machine = None;
        let mut sections = Vec::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == MACHINE_KEY {
                if machine.is_some() {
                    return Err(de::Error::duplicate_field(MACHINE_KEY));
                }
                let entry: MachineEntry = map.next_value()?;
                machine = Some(entry.name);
            } else {
                let section: Section = map.next_value()?;
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(format_args!(
                        "duplicate section \"{key}\""
                    )));
                }
                sections.push((key, section));
            }
        }
        let machine = machine.ok_or_else(|| de::Error::missing_field(MACHINE_KEY))?;
        Ok(Dump { machine, sections })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: &str) -> Value {
        json!({"field": name, "version_id": 0, "field_exists": false, "size": 1})
    }

    fn dump_with(field: Value) -> Value {
        json!({
            "vmschkmachine": {"Name": "pc"},
            "dev": {
                "Name": "dev", "version_id": 1, "minimum_version_id": 1,
                "Description": {
                    "name": "dev", "version_id": 1, "minimum_version_id": 1,
                    "Fields": [field]
                }
            }
        })
    }

    fn error(v: Value) -> String {
        Dump::from_json(v).unwrap_err().to_string()
    }

    #[test]
    fn reads_and_writes_the_same_json() {
        let mut arr = field("regs");
        arr["num"] = json!(4);
        let v = dump_with(arr);
        let dump = Dump::from_json(v.clone()).unwrap();
        assert_eq!(dump.machine(), "pc");
        let dev = dump.section("dev").unwrap();
        assert_eq!(dev.description.fields()[0].num, Some(4));
        assert_eq!(dev.description.subsections, None);
        assert_eq!(dump.to_json(), v);
        // Key order too, and the machine entry first even when read from elsewhere.
        let text = r#"{"dev": {"Name": "dev", "version_id": 0, "minimum_version_id": 0,
            "Description": {"name": "dev", "version_id": 0, "minimum_version_id": 0}},
            "vmschkmachine": {"Name": "m"}}"#;
        let dump: Dump = text.parse().unwrap();
        assert_eq!(
            dump.to_text(),
            "{\n  \"vmschkmachine\": {\n    \"Name\": \"m\"\n  },\n  \"dev\": {\n    \
             \"Name\": \"dev\",\n    \"version_id\": 0,\n    \"minimum_version_id\": 0,\n    \
             \"Description\": {\n      \"name\": \"dev\",\n      \"version_id\": 0,\n      \
             \"minimum_version_id\": 0\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn an_absent_field_list_is_not_an_empty_one() {
        let mut v = dump_with(field("a"));
        v["dev"]["Description"]["Fields"] = json!([]);
        let empty = Dump::from_json(v.clone()).unwrap();
        assert_eq!(empty.sections()[0].1.description.fields, Some(vec![]));
        assert_eq!(empty.to_json(), v);
        v["dev"]["Description"]
            .as_object_mut()
            .unwrap()
            .remove("Fields");
        let none = Dump::from_json(v.clone()).unwrap();
        assert_eq!(none.sections()[0].1.description.fields, None);
        assert!(none.sections()[0].1.description.fields().is_empty());
        assert_eq!(none.to_json(), v);
    }

    #[test]
    fn a_missing_required_key_is_an_error_naming_it() {
        for key in ["field", "version_id", "field_exists", "size"] {
            let mut f = field("a");
            f.as_object_mut().unwrap().remove(key);
            assert_eq!(error(dump_with(f)), format!("missing field `{key}`"));
        }
        for key in ["name", "version_id", "minimum_version_id"] {
            let mut v = dump_with(field("a"));
            v["dev"]["Description"].as_object_mut().unwrap().remove(key);
            assert_eq!(error(v), format!("missing field `{key}`"));
        }
        for key in ["Name", "version_id", "minimum_version_id", "Description"] {
            let mut v = dump_with(field("a"));
            v["dev"].as_object_mut().unwrap().remove(key);
            assert_eq!(error(v), format!("missing field `{key}`"));
        }
        let mut v = dump_with(field("a"));
        v.as_object_mut().unwrap().remove(MACHINE_KEY);
        assert_eq!(error(v), "missing field `vmschkmachine`");
        // From text, the error also says where.
        let text = r#"{"vmschkmachine": {"Name": "pc"}, "dev": {"Name": "dev"}}"#;
        let err = text.parse::<Dump>().unwrap_err().to_string();
        assert!(
            err.starts_with("missing field `version_id` at line 1"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_unknown_keys_and_repeated_sections_are_errors() {
        let mut f = field("a");
        f["size"] = json!(-1);
        assert!(error(dump_with(f)).contains("invalid value: integer `-1`"));
        let mut f = field("a");
        f["size"] = json!("4");
        assert!(error(dump_with(f)).contains("invalid type: string \"4\""));
        let mut f = field("a");
        f["Feilds"] = json!([]);
        assert!(error(dump_with(f)).starts_with("unknown field `Feilds`"));
        assert!(error(json!([])).contains("a schema dump"));
        assert!(error(json!({"vmschkmachine": {"Name": "pc", "x": 1}})).contains("`x`"));
        let text = r#"{"vmschkmachine": {"Name": "pc"}, "vmschkmachine": {"Name": "q"}}"#;
        assert!(
            text.parse::<Dump>()
                .unwrap_err()
                .to_string()
                .starts_with("duplicate field `vmschkmachine`")
        );
        let sec = r#"{"Name": "a", "version_id": 0, "minimum_version_id": 0,
            "Description": {"name": "a", "version_id": 0, "minimum_version_id": 0}}"#;
        let text = format!(r#"{{"vmschkmachine": {{"Name": "pc"}}, "a": {sec}, "a": {sec}}}"#);
        assert!(
            text.parse::<Dump>()
                .unwrap_err()
                .to_string()
                .starts_with("duplicate section \"a\"")
        );
    }

    #[test]
    fn insert_keeps_names_unique() {
        let v = dump_with(field("a"));
        let section = Dump::from_json(v).unwrap().sections()[0].1.clone();
        let mut dump = Dump::new("pc");
        assert!(dump.insert("dev", section.clone()));
        assert!(!dump.insert("dev", section.clone()));
        assert!(!dump.insert(MACHINE_KEY, section.clone()));
        assert_eq!(dump.sections().len(), 1);
        dump.section_mut("dev").unwrap().version_id = 7;
        assert_eq!(dump.section("dev").unwrap().version_id, 7);
        dump.set_machine("q35");
        assert_eq!(dump.to_json()[MACHINE_KEY]["Name"], "q35");
    }
}
