//! Schema dumps: our descriptions as JSON in the shape of QEMU's `-dump-vmstate`.
//!
//! See the [module documentation](super) for the shape and for how our description
//! model maps onto QEMU's keys.

use serde_json::{Map, Value};

use crate::description::{Count, Field, FieldType, VmStateDescription};
use crate::registry::Registry;

/// The top-level key that carries the machine type (`{"Name": machine}`).
pub const MACHINE_KEY: &str = "vmschkmachine";

/// Dumps `sections`, each a `(section name, description)` pair, as QEMU's
/// `-dump-vmstate` would: `"vmschkmachine": {"Name": machine}` first, then one entry per
/// section in iteration order.
///
/// QEMU keys sections by QOM type name, which is unique; here a name that was already
/// dumped (or that equals `"vmschkmachine"`) is skipped, so the first description given
/// for a name wins.
pub fn dump_json<'a, I>(machine: &str, sections: I) -> Value
where
    I: IntoIterator<Item = (&'a str, &'static VmStateDescription)>,
{
    let mut top = Map::new();
    let mut m = Map::new();
    m.insert("Name".into(), Value::from(machine));
    top.insert(MACHINE_KEY.into(), Value::Object(m));
    for (name, desc) in sections {
        if top.contains_key(name) {
            continue;
        }
        top.insert(name.to_string(), section_json(name, desc));
    }
    Value::Object(top)
}

/// Dumps the devices of a registry: each device entry under its idstr, in save order.
/// Iterative handlers (RAM and the like) have no description and are left out, as QEMU's
/// dump leaves out everything that is not a qdev device. Several instances of one idstr
/// (two `i8259`s) give one entry, as QEMU's dump has one entry per device type.
pub fn dump_registry(machine: &str, registry: &Registry) -> Value {
    let sections = registry
        .entries()
        .iter()
        .filter_map(|e| Some((e.idstr(), e.device()?.description())));
    dump_json(machine, sections)
}

/// One top-level section entry: `{"Name", "version_id", "minimum_version_id",
/// "Description"}`.
pub fn section_json(name: &str, desc: &VmStateDescription) -> Value {
    let mut m = Map::new();
    m.insert("Name".into(), Value::from(name));
    m.insert("version_id".into(), Value::from(desc.version));
    m.insert("minimum_version_id".into(), Value::from(desc.min_version));
    m.insert("Description".into(), description_json(desc));
    Value::Object(m)
}

/// A description: `{"name", "version_id", "minimum_version_id", "Fields"}`, then
/// `"Subsections"` when there are any. Subsections use the same shape.
///
/// `validate` fields ([`Count::Validate`]) are left out, as QEMU's dump leaves out its
/// `VMS_MUST_EXIST` fields (`VMSTATE_VALIDATE`): they are not migrated.
///
/// `"Fields"` is always there, empty or not: QEMU omits it only for a description
/// without a field list (`fields == NULL`, devices that save themselves by hand), and
/// prints an empty list for one whose list holds only `VMSTATE_END_OF_LIST()` (the
/// `rtl8139/hotplug_ready` subsection), which is what a derived struct without fields
/// is.
pub fn description_json(desc: &VmStateDescription) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::from(desc.name));
    m.insert("version_id".into(), Value::from(desc.version));
    m.insert("minimum_version_id".into(), Value::from(desc.min_version));
    let fields = dumped_fields(desc).map(field_json).collect();
    m.insert("Fields".into(), Value::Array(fields));
    if !desc.subsections.is_empty() {
        let subs = desc
            .subsections
            .iter()
            .map(|s| description_json(s))
            .collect();
        m.insert("Subsections".into(), Value::Array(subs));
    }
    Value::Object(m)
}

/// The fields a dump lists: all but the `validate` checks, which QEMU's dump leaves out.
pub fn dumped_fields(desc: &VmStateDescription) -> impl Iterator<Item = &'static Field> {
    desc.fields.iter().filter(|f| !f.is_validation())
}

/// A field: `{"field", "version_id", "field_exists", ["num"], "size", ["Description"]}`.
/// A counted `buffer` ([`Count::Vbuffer`]) has no `num` and size 0, as QEMU prints a
/// `VMSTATE_VBUFFER*` field.
pub fn field_json(field: &Field) -> Value {
    let mut m = Map::new();
    m.insert("field".into(), Value::from(field.name));
    m.insert("version_id".into(), Value::from(field.since));
    m.insert("field_exists".into(), Value::from(field.has_exists_test));
    if let Count::Array(n) = field.count {
        m.insert("num".into(), Value::from(n));
    }
    m.insert("size".into(), Value::from(element_size(&field.ty)));
    if let FieldType::Struct(d) = field.ty {
        m.insert("Description".into(), description_json(d));
    }
    Value::Object(m)
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
