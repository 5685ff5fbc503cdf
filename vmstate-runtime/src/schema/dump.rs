//! Schema dumps: our descriptions as JSON in the shape of QEMU's `-dump-vmstate`.
//!
//! See the [module documentation](super) for the shape and for how our description
//! model maps onto QEMU's keys.

use serde_json::Value;

use super::types::{self, Dump, Section};
use crate::description::{Count, FieldType, VmStateDescription};
use crate::registry::Registry;

impl Dump {
    /// Dumps `sections`, each a `(section name, description)` pair, as QEMU's
    /// `-dump-vmstate` would: the machine entry, then one section per pair in iteration
    /// order.
    ///
    /// QEMU keys sections by QOM type name, which is unique; here a name that was
    /// already dumped (or that equals `"vmschkmachine"`) is skipped, so the first
    /// description given for a name wins.
    pub fn from_descriptions<'a, I>(machine: &str, sections: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'static VmStateDescription)>,
    {
        let mut dump = Dump::new(machine);
        for (name, desc) in sections {
            if dump.section(name).is_none() {
                dump.insert(name, Section::from_description(name, desc));
            }
        }
        dump
    }

    /// Dumps the devices of a registry: each device entry under its idstr, in save
    /// order. Iterative handlers (RAM and the like) have no description and are left
    /// out, as QEMU's dump leaves out everything that is not a qdev device. Several
    /// instances of one idstr (two `i8259`s) give one entry, as QEMU's dump has one
    /// entry per device type.
    pub fn from_registry(machine: &str, registry: &Registry) -> Self {
        let sections = registry
            .entries()
            .iter()
            .filter_map(|e| Some((e.idstr(), e.device()?.description())));
        Dump::from_descriptions(machine, sections)
    }
}

impl Section {
    /// The section `name` of a description: its versions and the description.
    pub fn from_description(name: &str, desc: &VmStateDescription) -> Self {
        Section {
            name: name.to_string(),
            version_id: desc.version,
            minimum_version_id: desc.min_version,
            description: desc.into(),
        }
    }
}

/// A description with all its fields (but the `validate` checks: [`dumped_fields`])
/// and its subsections.
///
/// `Fields` is always there, empty or not: QEMU omits it only for a description without
/// a field list (`fields == NULL`, devices that save themselves by hand), and prints an
/// empty list for one whose list holds only `VMSTATE_END_OF_LIST()` (the
/// `rtl8139/hotplug_ready` subsection), which is what a derived struct without fields
/// is. `Subsections` is left out when there are none, as QEMU does.
impl From<&VmStateDescription> for types::Description {
    fn from(desc: &VmStateDescription) -> Self {
        let subsections = desc.subsections.iter().map(|s| (*s).into());
        types::Description {
            name: desc.name.to_string(),
            version_id: desc.version,
            minimum_version_id: desc.min_version,
            fields: Some(dumped_fields(desc).map(types::Field::from).collect()),
            subsections: (!desc.subsections.is_empty()).then(|| subsections.collect()),
        }
    }
}

/// A field. `num` is given for [`Count::Array`] and [`Count::ArrayOfPointer`] only; a
/// counted `buffer` ([`Count::Vbuffer`]) has no `num` and size 0, as QEMU prints a
/// `VMSTATE_VBUFFER*` field; `size` is [`element_size`], except for an array of
/// pointers, whose elements QEMU sizes as pointers (8 bytes on the 64-bit hosts QEMU
/// dumps are taken on).
impl From<&crate::Field> for types::Field {
    fn from(field: &crate::Field) -> Self {
        types::Field {
            name: field.name.to_string(),
            version_id: field.since,
            field_exists: field.has_exists_test,
            num: match field.count {
                Count::Array(n) | Count::ArrayOfPointer(n) => Some(n as u64),
                _ => None,
            },
            size: match field.count {
                Count::ArrayOfPointer(_) => POINTER_SIZE,
                _ => element_size(&field.ty) as u64,
            },
            description: match field.ty {
                FieldType::Struct(d) => Some(d.into()),
                FieldType::Info(_) => None,
            },
        }
    }
}

/// The size of a pointer in a dump: QEMU prints `sizeof(T *)` for an array of pointers.
const POINTER_SIZE: u64 = 8;

/// [`Dump::from_descriptions`] as JSON.
pub fn dump_json<'a, I>(machine: &str, sections: I) -> Value
where
    I: IntoIterator<Item = (&'a str, &'static VmStateDescription)>,
{
    Dump::from_descriptions(machine, sections).to_json()
}

/// [`Dump::from_registry`] as JSON.
pub fn dump_registry(machine: &str, registry: &Registry) -> Value {
    Dump::from_registry(machine, registry).to_json()
}

/// A description as JSON: `{"name", "version_id", "minimum_version_id", "Fields"}`,
/// then `"Subsections"` when there are any (see [`types::Description`]'s `From`).
///
/// `validate` fields ([`Count::Validate`]) are left out, as QEMU's dump leaves out its
/// `VMS_MUST_EXIST` fields (`VMSTATE_VALIDATE`): they are not migrated.
pub fn description_json(desc: &VmStateDescription) -> Value {
    serde_json::to_value(types::Description::from(desc))
        .expect("a description always converts to JSON")
}

/// The fields a dump lists: all but the `validate` checks, which QEMU's dump leaves out.
pub fn dumped_fields(desc: &VmStateDescription) -> impl Iterator<Item = &'static crate::Field> {
    desc.fields.iter().filter(|f| !f.is_validation())
}

/// The `"size"` of a field: the size of one element. For a primitive it is the info's
/// wire size. For a struct QEMU prints `sizeof` the C struct, which has no equivalent
/// here: we print the element's fixed wire size when it has one, else 0.
pub fn element_size(ty: &FieldType) -> usize {
    match ty {
        FieldType::Info(i) => i.size,
        FieldType::Struct(d) => d.fixed_size().unwrap_or(0),
    }
}

/// Pretty-prints a dump the way QEMU writes the file: [`crate::qjson::Style::QEMU_DUMP`]
/// (two-space indentation, `": "` after keys, one member or element per line, an empty
/// list as `[`, an empty line and `]` at the key's indentation, QEMU's quirk) and a
/// final newline. Printing a parsed QEMU dump gives back the file byte for byte.
pub fn to_string(dump: &Value) -> String {
    let mut out = crate::qjson::Style::QEMU_DUMP.to_string(dump);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::MACHINE_KEY;
    use crate::{Registration, Timer, VmState};

    #[derive(VmState, Default)]
    #[vmstate(name = "tmr", version = 2, min_version = 1)]
    struct Tmr {
        config: u64,
        #[vmstate(since = 2)]
        wrap: u8,
        qemu_timer: Timer,
    }

    #[derive(VmState, Default)]
    #[vmstate(name = "dev/extra", version = 1)]
    struct TmrExtra {
        v: u16,
    }

    #[derive(VmState, Default)]
    #[vmstate(name = "dev", version = 3, min_version = 2)]
    struct Dev {
        regs: [u32; 4],
        #[vmstate(buffer)]
        mac: [u8; 6],
        #[vmstate(unused = 5)]
        _gap: (),
        n: u8,
        #[vmstate(len = n)]
        timers: Vec<Tmr>,
        pair: [Tmr; 2],
        #[vmstate(subsection, needed = Self::never)]
        extra: TmrExtra,
    }

    impl Dev {
        fn never(&self) -> bool {
            false
        }
    }

    #[test]
    fn dump_has_qemu_shape() {
        let v = dump_json("pc", [("dev", Dev::DESCRIPTION)]);
        let tmr = json!({
            "name": "tmr", "version_id": 2, "minimum_version_id": 1,
            "Fields": [
                {"field": "config", "version_id": 0, "field_exists": false, "size": 8},
                {"field": "wrap", "version_id": 2, "field_exists": false, "size": 1},
                {"field": "qemu_timer", "version_id": 0, "field_exists": false, "size": 8}
            ]
        });
        let expected = json!({
            "vmschkmachine": {"Name": "pc"},
            "dev": {
                "Name": "dev", "version_id": 3, "minimum_version_id": 2,
                "Description": {
                    "name": "dev", "version_id": 3, "minimum_version_id": 2,
                    "Fields": [
                        {"field": "regs", "version_id": 0, "field_exists": false,
                         "num": 4, "size": 4},
                        {"field": "mac", "version_id": 0, "field_exists": false, "size": 6},
                        {"field": "unused", "version_id": 0, "field_exists": false, "size": 5},
                        {"field": "n", "version_id": 0, "field_exists": false, "size": 1},
                        // Fixed wire size at the struct's own version: 8 + 1 + 8.
                        // (QEMU would print sizeof the C struct.)
                        {"field": "timers", "version_id": 0, "field_exists": false,
                         "size": 17, "Description": tmr},
                        {"field": "pair", "version_id": 0, "field_exists": false,
                         "num": 2, "size": 17, "Description": tmr}
                    ],
                    "Subsections": [
                        {"name": "dev/extra", "version_id": 1, "minimum_version_id": 1,
                         "Fields": [
                            {"field": "v", "version_id": 0, "field_exists": false, "size": 2}
                         ]}
                    ]
                }
            }
        });
        assert_eq!(v, expected);
        // Key order as QEMU writes it (serde_json keeps insertion order here).
        let keys: Vec<_> = v["dev"]["Description"]["Fields"][5]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "field",
                "version_id",
                "field_exists",
                "num",
                "size",
                "Description"
            ]
        );
    }

    #[test]
    fn empty_field_list_and_qemu_text() {
        #[derive(VmState, Default)]
        #[vmstate(name = "nothing", version = 0, min_version = 0)]
        struct Nothing {}
        let v = dump_json("none", [("nothing", Nothing::DESCRIPTION)]);
        assert_eq!(
            to_string(&v),
            "{\n  \"vmschkmachine\": {\n    \"Name\": \"none\"\n  },\n  \"nothing\": {\n    \
             \"Name\": \"nothing\",\n    \"version_id\": 0,\n    \"minimum_version_id\": 0,\n    \
             \"Description\": {\n      \"name\": \"nothing\",\n      \"version_id\": 0,\n      \
             \"minimum_version_id\": 0,\n      \"Fields\": [\n\n      ]\n    }\n  }\n}\n"
        );
        assert_eq!(to_string(&json!({})), "{}\n");
        assert_eq!(
            to_string(&json!({"a": [1, {"b": "c"}]})),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"c\"\n    }\n  ]\n}\n"
        );
    }

    #[test]
    fn typed_dump_is_the_json_dump() {
        let dump = Dump::from_descriptions("pc", [("dev", Dev::DESCRIPTION)]);
        assert_eq!(dump.to_json(), dump_json("pc", [("dev", Dev::DESCRIPTION)]));
        let dev = &dump.section("dev").unwrap().description;
        assert_eq!(dev.fields()[0].num, Some(4));
        assert_eq!(dev.fields()[4].description.as_ref().unwrap().name, "tmr");
        assert_eq!(dev.subsections()[0].name, "dev/extra");
        assert_eq!(Dump::from_json(dump.to_json()).unwrap(), dump);
        assert_eq!(
            description_json(Dev::DESCRIPTION),
            dump.to_json()["dev"]["Description"]
        );
    }

    #[test]
    fn duplicate_names_keep_the_first() {
        let v = dump_json(
            "pc",
            [
                ("a", Tmr::DESCRIPTION),
                ("a", Dev::DESCRIPTION),
                (MACHINE_KEY, Dev::DESCRIPTION),
            ],
        );
        assert_eq!(v.as_object().unwrap().len(), 2);
        assert_eq!(v["a"]["Description"]["name"], "tmr");
        assert_eq!(v[MACHINE_KEY], json!({"Name": "pc"}));
    }

    #[test]
    fn registry_dump_lists_devices_once_by_idstr() {
        struct Nop;
        impl crate::IterativeHandler for Nop {
            fn save_setup(&mut self, _: &mut crate::Writer<'_>) -> crate::Result<()> {
                Ok(())
            }
            fn pending(&mut self, _: bool) -> crate::Pending {
                crate::Pending::default()
            }
            fn save_iterate(
                &mut self,
                _: &mut crate::Writer<'_>,
                _: u64,
            ) -> crate::Result<crate::IterationStatus> {
                unreachable!()
            }
            fn save_complete(&mut self, _: &mut crate::Writer<'_>) -> crate::Result<()> {
                Ok(())
            }
            fn load(
                &mut self,
                _: &mut crate::Reader<'_>,
                _: u32,
                _: crate::Phase,
            ) -> crate::Result<()> {
                Ok(())
            }
        }
        let mut reg = Registry::new();
        reg.register_device(Tmr::default(), Registration::new())
            .unwrap();
        reg.register_device(Tmr::default(), Registration::new())
            .unwrap();
        reg.register_device(Dev::default(), Registration::new().path("0000:00:02.0"))
            .unwrap();
        reg.register_iterative("ram", 4, Nop, Registration::new())
            .unwrap();
        let v = dump_registry("pc", &reg);
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, [MACHINE_KEY, "tmr", "0000:00:02.0/dev"]);
        assert_eq!(v["0000:00:02.0/dev"]["Description"]["name"], "dev");
    }
}
