//! A real QEMU 10.0.2 device with QTAILQs, modelled with the derive: `uefi-vars-sysbus`
//! from `fixtures/qemu-10.0.2/q35-uefi-vars.mig` (a `q35` machine with `-device
//! uefi-vars-x64`), whose variable queue holds six elements and whose policy queue is
//! empty. Loaded, saved again byte for byte, described exactly as QEMU's vmdesc (keys
//! repeated once per element), and dumped as QEMU's `-dump-vmstate`.

use std::sync::OnceLock;

use compat_tests::fixture::{self, Section, Stream};
use compat_tests::qemu10::UefiVarsSysbus;
use serde_json::Value;
use vmstate::qjson::Style;
use vmstate::{Describer, VmState, Writer, schema};

fn stream() -> &'static Stream {
    static S: OnceLock<Stream> = OnceLock::new();
    S.get_or_init(|| Stream::load("q35-uefi-vars.mig"))
}

fn section() -> Section<'static> {
    stream()
        .full_section("uefi-vars-sysbus", 0)
        .expect("the stream has the uefi-vars-sysbus section")
}

fn loaded() -> UefiVarsSysbus {
    let s = section();
    let mut dev = UefiVarsSysbus::default();
    dev.load_bytes(s.payload, s.version)
        .expect("QEMU's payload loads");
    dev
}

#[test]
fn loads_qemus_six_variables_in_their_order() {
    let dev = loaded();
    let names: Vec<String> = dev.state.variables.iter().map(|v| v.name_str()).collect();
    assert_eq!(
        names,
        [
            "SetupMode",
            "SignatureSupport",
            "SecureBoot",
            "CustomMode",
            "VendorKeysNv",
            "VendorKeys"
        ]
    );
    let sizes: Vec<(u32, u32)> = dev
        .state
        .variables
        .iter()
        .map(|v| (v.name_size, v.data_size))
        .collect();
    assert_eq!(
        sizes,
        [(20, 1), (34, 80), (22, 1), (22, 1), (26, 1), (22, 1)]
    );
    assert_eq!(dev.state.variables[0].data, [1]);
    assert!(dev.state.var_policies.is_empty());
    assert_eq!(dev.state.used_storage, 0x327);
}

#[test]
fn saves_qemus_bytes() {
    assert_eq!(loaded().to_bytes().unwrap(), section().payload);
}

#[test]
fn vmdesc_equals_qemus_text_with_the_keys_repeated_per_element() {
    let mut dev = loaded();
    let mut d = Describer::new();
    dev.save_state(&mut Writer::new(), &mut d).unwrap();
    let ours = Style::QEMU.to_string_json(&d.finish());
    let expected = format!(
        "{{\"name\": \"uefi-vars-sysbus\", \"instance_id\": 0, {}",
        &ours[1..]
    );
    let text = std::str::from_utf8(stream().vmdesc_bytes().unwrap()).unwrap();
    assert!(
        text.contains(&expected),
        "our description is not in QEMU's vmdesc:\n{expected}"
    );
    assert_eq!(ours.matches(r#""vmsd_name": "uefi-variable""#).count(), 6);
    assert!(ours.contains(r#"{"name": "var_policies", "type": "qtailq", "size": 1}"#));
}

/// Drops the `size` of every field that has a `Description`: QEMU prints the C struct's
/// size there, which a Rust model does not have (its checker ignores it too).
fn without_struct_sizes(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("Description") {
                m.remove("size");
            }
            m.values_mut().for_each(without_struct_sizes);
        }
        Value::Array(a) => a.iter_mut().for_each(without_struct_sizes),
        _ => {}
    }
}

#[test]
fn description_equals_qemus_dump_but_struct_sizes() {
    let theirs = fixture::read_qemu10_json("vmstate-q35-uefi-vars.json");
    let ours = schema::dump_json(
        "pc-q35-10.0",
        [("uefi-vars-sysbus", UefiVarsSysbus::DESCRIPTION)],
    );
    let (mut a, mut b) = (
        ours["uefi-vars-sysbus"].clone(),
        theirs["uefi-vars-sysbus"].clone(),
    );
    without_struct_sizes(&mut a);
    without_struct_sizes(&mut b);
    assert_eq!(a, b);
}

#[test]
fn the_list_terminator_changed_to_a_marker_fails_naming_the_field() {
    // QEMU's own behaviour on this edit: the policy list's bytes are read as a variable.
    let s = section();
    let mut payload = s.payload.to_vec();
    let end_of_variables = payload.len() - 2;
    assert_eq!(payload[end_of_variables..], [0, 0]);
    payload[end_of_variables] = 1;
    let err = UefiVarsSysbus::default()
        .load_bytes(&payload, s.version)
        .unwrap_err();
    assert!(err.path().contains("variables[6]"), "{}", err.path());
}
