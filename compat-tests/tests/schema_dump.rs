//! Schema dumps of the QEMU 10.0.2 device models (`compat_tests::qemu10`) against the
//! same sections of QEMU 10.0.2's own `-dump-vmstate` output
//! (`vmstate-pc-qemu10.0.2.json`), key for key and value for value.

use compat_tests::fixture::{read_qemu10, read_qemu10_json};
use compat_tests::qemu10::{FwCfg, Hpet, I8254, I8259, IoApic, Mc146818Rtc, Port92};
use serde_json::Value;
use vmstate::schema::{self, Dump};
use vmstate::{Registration, Registry, VmState, VmStateDescription};
use vmstate_tools::check::{self, CheckOptions};

/// The modelled devices under their QOM type names (QEMU's dump keys).
fn modelled() -> Vec<(&'static str, &'static VmStateDescription)> {
    vec![
        ("isa-i8259", I8259::DESCRIPTION),
        ("port92", Port92::DESCRIPTION),
        ("hpet", Hpet::DESCRIPTION),
        ("ioapic", IoApic::DESCRIPTION),
        ("mc146818rtc", Mc146818Rtc::DESCRIPTION),
        ("fw_cfg_io", FwCfg::DESCRIPTION),
        ("isa-pit", I8254::DESCRIPTION),
    ]
}

/// Every difference between two dumps: keys (and their order) and values, with a path.
fn diff(path: &str, ours: &Value, qemu: &Value, out: &mut Vec<String>) {
    match (ours, qemu) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            if ka != kb {
                out.push(format!("{path}: keys {ka:?}, QEMU {kb:?}"));
            }
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    // Name array elements by their field or description name.
                    diff(&format!("{path}.{k}"), v, w, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!("{path}: {} elements, QEMU {}", a.len(), b.len()));
            }
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                let name = v
                    .get("field")
                    .or_else(|| v.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                diff(&format!("{path}[{i}]({name})"), v, w, out);
            }
        }
        _ if ours != qemu => out.push(format!("{path}: {ours}, QEMU {qemu}")),
        _ => {}
    }
}

#[test]
fn modelled_devices_dump_as_qemu_does() {
    let qemu = read_qemu10_json("vmstate-pc-qemu10.0.2.json");
    let ours = schema::dump_json("pc-i440fx-10.0", modelled());
    assert_eq!(ours["vmschkmachine"], qemu["vmschkmachine"]);

    let mut diffs = Vec::new();
    for (name, _) in modelled() {
        diff(name, &ours[name], &qemu[name], &mut diffs);
    }
    // The known differences, all in `size`:
    // - struct fields: QEMU prints sizeof the C struct (HPETTimer: 80 bytes,
    //   PITChannelState: 56), we print the element's wire size (hpet_timer: 1 + 4*8 + 1
    //   + 8 = 42; pit channel: 4 + 2 + 10*1 + 8 + 8 = 32). QEMU's checker never compares
    //   struct sizes.
    // - fw_cfg's version-1 `cur_offset`: QEMU's VMSTATE_UINT16_HACK reads a be16 into a
    //   uint32 member (size 4, info `int32_as_uint16`); the model keeps it in its own
    //   u16 (size 2). Same bytes on the wire (see `qemu10::fw_cfg`).
    assert_eq!(
        diffs,
        [
            "hpet.Description.Fields[4](timer).size: 42, QEMU 80",
            "fw_cfg_io.Description.Fields[1](cur_offset).size: 2, QEMU 4",
            "isa-pit.Description.Fields[1](channels).size: 32, QEMU 56",
        ]
    );
}

#[test]
fn the_same_descriptions_serve_other_qemu_types() {
    // QEMU dumps one entry per QOM type; several types share a description.
    let qemu = read_qemu10_json("vmstate-pc-qemu10.0.2.json");
    for (qom, like) in [
        ("pic-common", "isa-i8259"),
        ("kvm-i8259", "isa-i8259"),
        ("ioapic-common", "ioapic"),
        ("kvm-ioapic", "ioapic"),
        ("fw_cfg", "fw_cfg_io"),
        ("fw_cfg_mem", "fw_cfg_io"),
        ("pit-common", "isa-pit"),
        ("kvm-pit", "isa-pit"),
    ] {
        assert_eq!(
            qemu[qom]["Description"], qemu[like]["Description"],
            "{qom} vs {like}"
        );
    }
}

#[test]
fn our_printer_writes_qemus_file_byte_for_byte() {
    // Parsing QEMU's file (keys keep their order) and printing it back gives the file:
    // two-space indentation, `": "`, one member per line, final newline.
    let text = read_qemu10("vmstate-pc-qemu10.0.2.json");
    let qemu: Value = serde_json::from_slice(&text).unwrap();
    assert!(schema::to_string(&qemu).as_bytes() == text.as_slice());
    let text72 = read_qemu10("vmstate-pc-qemu7.2.json");
    let qemu72: Value = serde_json::from_slice(&text72).unwrap();
    assert!(schema::to_string(&qemu72).as_bytes() == text72.as_slice());

    // And our own dump of a device prints exactly as QEMU's entry for it does.
    let ours = schema::dump_json("pc-i440fx-10.0", [("port92", Port92::DESCRIPTION)]);
    let port92 = serde_json::json!({
        "vmschkmachine": qemu["vmschkmachine"],
        "port92": qemu["port92"],
    });
    assert_eq!(schema::to_string(&ours), schema::to_string(&port92));
}

#[test]
fn qemu_dumps_round_trip_through_the_typed_schema_byte_for_byte() {
    for (file, machine) in [
        ("vmstate-pc-qemu10.0.2.json", "pc-i440fx-10.0"),
        ("vmstate-pc-qemu7.2.json", "pc-i440fx-7.2"),
    ] {
        let text = read_qemu10(file);
        let dump: Dump = serde_json::from_slice(&text).unwrap();
        assert_eq!(dump.machine(), machine);
        assert!(
            dump.to_text().as_bytes() == text.as_slice(),
            "{file}: dump -> typed -> JSON differs"
        );
    }
    // Sections keep QEMU's order, and keys QEMU leaves out stay out.
    let dump: Dump = serde_json::from_slice(&read_qemu10("vmstate-pc-qemu10.0.2.json")).unwrap();
    let (first, vsock) = &dump.sections()[0];
    assert_eq!(first, "vhost-user-vsock-device");
    assert_eq!(vsock.description.fields, None);
}

#[test]
fn checker_between_the_models_and_qemu() {
    // Only our models' sections are compared: restrict QEMU's dump to them.
    let qemu_all = read_qemu10_json("vmstate-pc-qemu10.0.2.json");
    let mut qemu = serde_json::Map::new();
    qemu.insert("vmschkmachine".into(), qemu_all["vmschkmachine"].clone());
    for (name, _) in modelled() {
        qemu.insert(name.into(), qemu_all[name].clone());
    }
    let qemu = Dump::from_json(Value::Object(qemu)).unwrap();
    let ours = Dump::from_descriptions("pc-i440fx-10.0", modelled());

    // The fw_cfg size difference is the only one the checker sees, both ways.
    for (src, dest, expected) in [
        (
            &ours,
            &qemu,
            r#"Section "fw_cfg_io" Description "fw_cfg" Field "cur_offset" size mismatch: 2 , 4"#,
        ),
        (
            &qemu,
            &ours,
            r#"Section "fw_cfg_io" Description "fw_cfg" Field "cur_offset" size mismatch: 4 , 2"#,
        ),
    ] {
        let lines: Vec<String> = check::check(src, dest, &CheckOptions::default())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines, [expected]);
    }
}

#[test]
fn registry_dump_uses_idstrs() {
    let mut reg = Registry::new();
    reg.register_device(I8259::default(), Registration::new())
        .unwrap();
    reg.register_device(I8259::default(), Registration::new())
        .unwrap();
    reg.register_device(Hpet::default(), Registration::new())
        .unwrap();
    let dump = schema::dump_registry("pc-i440fx-10.0", &reg);
    let keys: Vec<&String> = dump.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["vmschkmachine", "i8259", "hpet"]);
    let qemu = read_qemu10_json("vmstate-pc-qemu10.0.2.json");
    assert_eq!(
        dump["i8259"]["Description"],
        qemu["isa-i8259"]["Description"]
    );
}

/// QEMU's `vmstate_fifo8` (util/fifo8.c): `VMSTATE_VBUFFER_UINT32(data, Fifo8, 1, NULL,
/// capacity)`, counted by `capacity`, which is not migrated.
#[derive(vmstate::VmState, Default)]
#[vmstate(name = "Fifo8", version = 1)]
struct Fifo8 {
    #[vmstate(skip)]
    capacity: u32,
    #[vmstate(buffer, len = capacity, since = 1)]
    data: Vec<u8>,
    head: u32,
    num: u32,
}

/// The first description named `name` anywhere in a dump.
fn find_description<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if m.get("name").and_then(Value::as_str) == Some(name) && m.contains_key("Fields") {
                return Some(v);
            }
            m.values().find_map(|x| find_description(x, name))
        }
        Value::Array(a) => a.iter().find_map(|x| find_description(x, name)),
        _ => None,
    }
}

#[test]
fn counted_buffer_dumps_as_qemus_vbuffer() {
    // A VBUFFER field has no `num` and size 0 in QEMU's dump (serial's recv_fifo).
    let qemu = read_qemu10_json("vmstate-pc-qemu10.0.2.json");
    let fifo = find_description(&qemu, "Fifo8").expect("QEMU's dump has Fifo8");
    assert_eq!(&schema::description_json(Fifo8::DESCRIPTION), fifo);
}
