//! `qtailq` and `qlist` fields against the byte vectors of QEMU 10's
//! `tests/unit/test-vmstate.c` (transcribed in `docs/notes/qemu-field-kinds.md`; the
//! test harness there appends an EOF byte that is not part of the state) and the vmdesc
//! QEMU's writer produces for them.

use std::collections::VecDeque;

use vmstate::json::Json;
use vmstate::qjson::Style;
use vmstate::{Describer, ErrorKind, Limits, Reader, VmState, Writer};

#[derive(VmState, Default, Debug, PartialEq, Clone)]
#[vmstate(name = "test/queue-element", version = 1)]
struct QueueElement {
    b: bool,
    u8: u8,
}

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "test/queue", version = 1)]
struct TestQtailq {
    i16: i16,
    #[vmstate(qtailq, since = 1)]
    q: VecDeque<QueueElement>,
    i32: i32,
}

#[derive(VmState, Default, Debug, PartialEq, Clone)]
#[vmstate(name = "test/queue list", version = 1)]
struct QListElement {
    id: u32,
}

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "test/container/qlist", version = 1)]
struct QListContainer {
    id: u32,
    #[vmstate(qlist, since = 1)]
    list: Vec<QListElement>,
}

fn qtailq() -> TestQtailq {
    TestQtailq {
        i16: -512,
        q: VecDeque::from([
            QueueElement { b: true, u8: 130 },
            QueueElement { b: false, u8: 65 },
        ]),
        i32: 70000,
    }
}

/// `/vmstate/qtailq/save/saveq`.
const QTAILQ_BYTES: [u8; 13] = [
    0xfe, 0x00, 0x01, 0x01, 0x82, 0x01, 0x00, 0x41, 0x00, 0x00, 0x01, 0x11, 0x70,
];

#[test]
fn qtailq_saves_qemus_bytes_and_loads_them_in_order() {
    assert_eq!(qtailq().to_bytes().unwrap(), QTAILQ_BYTES);
    // Loading replaces whatever the queue held.
    let mut back = TestQtailq {
        q: VecDeque::from([QueueElement { b: true, u8: 1 }]),
        ..Default::default()
    };
    back.load_bytes(&QTAILQ_BYTES, 1).unwrap();
    assert_eq!(back, qtailq());
}

#[test]
fn qlist_saves_qemus_bytes_and_keeps_the_order() {
    // `/vmstate/qlist/save/saveqlist`: head first.
    let mut c = QListContainer {
        id: 1,
        list: [0x0a, 0x0b00, 0x0c_0000, 0x0d00_0000]
            .map(|id| QListElement { id })
            .to_vec(),
    };
    let expected = [
        0, 0, 0, 1, 1, 0, 0, 0, 0x0a, 1, 0, 0, 0x0b, 0, 1, 0, 0x0c, 0, 0, 1, 0x0d, 0, 0, 0, 0,
    ];
    assert_eq!(c.to_bytes().unwrap(), expected);
    let mut back = QListContainer::default();
    back.load_bytes(&expected, 1).unwrap();
    assert_eq!(back, c);
    // An empty list is the end marker alone.
    c.list.clear();
    assert_eq!(c.to_bytes().unwrap(), [0, 0, 0, 1, 0]);
}

#[test]
fn any_non_zero_marker_means_another_element_as_in_qemu() {
    let mut bytes = QTAILQ_BYTES;
    bytes[5] = 0x02;
    let mut back = TestQtailq::default();
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back, qtailq());
}

#[test]
fn the_vmdesc_repeats_each_elements_description_in_the_field_object() {
    let mut w = Writer::new();
    let mut d = Describer::new();
    qtailq().save_state(&mut w, &mut d).unwrap();
    let Json::Object(members) = d.finish() else {
        panic!("not an object")
    };
    let (_, Json::Array(fields)) = members.iter().find(|(k, _)| k == "fields").unwrap() else {
        panic!("no fields")
    };
    let element = r#""vmsd_name": "test/queue-element", "version": 1, "fields": [{"name": "b", "type": "bool", "size": 1}, {"name": "u8", "type": "uint8", "size": 1}]"#;
    assert_eq!(
        Style::QEMU.to_string_json(&fields[1]),
        format!(r#"{{"name": "q", "type": "qtailq", {element}, {element}, "size": 7}}"#)
    );
    // An empty list: the type and the one end byte.
    let mut empty = TestQtailq::default();
    let mut d = Describer::new();
    empty.save_state(&mut Writer::new(), &mut d).unwrap();
    let Json::Object(members) = d.finish() else {
        panic!("not an object")
    };
    let (_, Json::Array(fields)) = members.iter().find(|(k, _)| k == "fields").unwrap() else {
        panic!("no fields")
    };
    assert_eq!(
        Style::QEMU.to_string_json(&fields[1]),
        r#"{"name": "q", "type": "qtailq", "size": 1}"#
    );
}

#[derive(VmState, Default, Debug)]
#[vmstate(name = "newer-element", version = 2, min_version = 2)]
struct NewerElement {
    x: u8,
}

#[derive(VmState, Default, Debug)]
#[vmstate(name = "holder", version = 1)]
struct Holder {
    #[vmstate(qtailq, since = 1)]
    items: Vec<NewerElement>,
}

#[test]
fn elements_load_at_the_fields_version_which_they_must_accept() {
    // QEMU loads the elements at the field's version (1), which this element type no
    // longer loads: refused before anything is read.
    let err = Holder::default().load_bytes(&[1, 5, 0], 1).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::VersionTooOld {
                vmsd: "newer-element",
                stream: 1,
                min: 2
            }
        ),
        "{err}"
    );
    assert_eq!(err.path(), "holder.items");
}

#[test]
fn an_error_inside_an_element_names_its_index() {
    // The second element's second byte is missing.
    let err = TestQtailq::default()
        .load_bytes(&QTAILQ_BYTES[..7], 1)
        .unwrap_err();
    assert!(err.path().contains("q[1]"), "{}", err.path());
}

#[derive(VmState, Default, Debug)]
#[vmstate(name = "empty")]
struct Empty {}

#[derive(VmState, Default, Debug)]
#[vmstate(name = "many")]
struct Many {
    #[vmstate(qtailq)]
    items: Vec<Empty>,
}

#[test]
fn endless_markers_stop_at_the_allocation_limit() {
    // Elements without bytes: each costs one marker byte but memory; the reader's
    // allocation limit ends the list.
    let bytes = vec![1u8; 100];
    let mut r = Reader::from_slice(&bytes).with_limits(Limits { max_alloc: 16 });
    let err = Many::default().load(&mut r, 1).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::AllocationTooLarge { limit: 16, .. }),
        "{err}"
    );
}
