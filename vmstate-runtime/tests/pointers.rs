//! `array_of_pointer` fields against QEMU 10's `tests/unit/test-vmstate.c` (the
//! `/vmstate/array/ptr/...` cases, transcribed in `docs/notes/qemu-field-kinds.md`; the
//! harness's trailing EOF byte is not part of the state) and the vmdesc QEMU 10.0 writes
//! for arrays with NULL elements, over-count included.

use vmstate::qjson::Style;
use vmstate::schema;
use vmstate::{Describer, ErrorKind, VmState, Writer};

#[derive(VmState, Default, Debug, PartialEq, Clone)]
#[vmstate(name = "test/tst", version = 1)]
struct TestStructTriv {
    i: i32,
}

/// `TestArrayOfPtrToStuct`: `VMSTATE_ARRAY_OF_POINTER_TO_STRUCT(ar, 4, 0, test/tst)`.
#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "test/arps", version = 1)]
struct ArrayOfPtrToStruct {
    #[vmstate(array_of_pointer)]
    ar: [Option<Box<TestStructTriv>>; 4],
}

/// `TestArrayOfPtrToInt`: `VMSTATE_ARRAY_OF_POINTER(ar, 4, 0, vmstate_info_int32, int32_t *)`.
#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "test/arps", version = 1)]
struct ArrayOfPtrToInt {
    #[vmstate(array_of_pointer)]
    ar: [Option<i32>; 4],
}

/// `wire_arr_ptr_no0`.
const NO_NULL: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
/// `wire_arr_ptr_0`: element 1 is NULL.
const ONE_NULL: [u8; 13] = [0, 0, 0, 0, 0x30, 0, 0, 0, 2, 0, 0, 0, 3];

fn triv(i: i32) -> Option<Box<TestStructTriv>> {
    Some(Box::new(TestStructTriv { i }))
}

#[test]
fn struct_pointers_without_null_save_and_load_qemus_bytes() {
    // `/vmstate/array/ptr/str/no0/save` and `.../load`.
    let mut src = ArrayOfPtrToStruct {
        ar: [triv(0), triv(1), triv(2), triv(3)],
    };
    assert_eq!(src.to_bytes().unwrap(), NO_NULL);
    let mut dst = ArrayOfPtrToStruct {
        ar: [triv(0), triv(0), triv(0), triv(0)],
    };
    dst.load_bytes(&NO_NULL, 1).unwrap();
    assert_eq!(dst, src);
}

#[test]
fn a_null_struct_pointer_is_the_0x30_marker_and_stays_null() {
    // `/vmstate/array/ptr/str/0/save` and `.../load`.
    let mut src = ArrayOfPtrToStruct {
        ar: [triv(0), None, triv(2), triv(3)],
    };
    assert_eq!(src.to_bytes().unwrap(), ONE_NULL);
    let mut dst = ArrayOfPtrToStruct {
        ar: [triv(9), None, triv(9), triv(9)],
    };
    dst.load_bytes(&ONE_NULL, 1).unwrap();
    assert_eq!(dst, src);
}

#[test]
fn a_null_int_pointer_keeps_what_is_behind_it() {
    // `/vmstate/array/ptr/prim/0/save` and `.../load`: the slot stays NULL, the others
    // take the stream's values.
    let mut src = ArrayOfPtrToInt {
        ar: [Some(0), None, Some(2), Some(3)],
    };
    assert_eq!(src.to_bytes().unwrap(), ONE_NULL);
    let mut dst = ArrayOfPtrToInt {
        ar: [Some(3), None, Some(1), Some(0)],
    };
    dst.load_bytes(&ONE_NULL, 1).unwrap();
    assert_eq!(dst.ar, [Some(0), None, Some(2), Some(3)]);
}

#[test]
fn what_is_read_depends_on_the_local_element() {
    // A local NULL reads one byte, whatever the stream holds: data where the marker
    // should be is refused, with the element and the byte offset.
    let mut dst = ArrayOfPtrToInt {
        ar: [Some(0), None, Some(0), Some(0)],
    };
    let err = dst.load_bytes(&NO_NULL, 1).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Invalid { what: "nullptr", detail } if detail.contains("not 0x00")),
        "{err}"
    );
    assert_eq!(err.path(), "test/arps.ar[1]");
    assert_eq!(err.offset(), Some(4));
    // A local element present where the source had NULL takes the marker as data (as
    // in QEMU): the stream then ends early.
    let mut dst = ArrayOfPtrToInt {
        ar: [Some(0), Some(0), Some(0), Some(0)],
    };
    assert!(dst.load_bytes(&ONE_NULL, 1).is_err());
}

fn vmdesc<T: VmState>(v: &mut T) -> String {
    let mut d = Describer::new();
    v.save_state(&mut Writer::new(), &mut d).unwrap();
    Style::QEMU.to_string_json(&d.finish())
}

#[test]
fn vmdesc_splits_runs_with_qemus_first_run_over_count() {
    // QEMU 10.0 describes {&a0, NULL, &a2, &a3} with entries claiming 4, 1 and 2.
    let mut v = ArrayOfPtrToStruct {
        ar: [triv(0), None, triv(2), triv(3)],
    };
    let tst = r#"{"vmsd_name": "test/tst", "version": 1, "fields": [{"name": "i", "type": "int32", "size": 4}]}"#;
    let expected = format!(
        r#"{{"vmsd_name": "test/arps", "version": 1, "fields": [{{"name": "ar", "array_len": 4, "type": "struct", "struct": {tst}, "size": 4}}, {{"name": "ar", "type": "nullptr", "size": 1}}, {{"name": "ar", "array_len": 2, "type": "struct", "struct": {tst}, "size": 4}}]}}"#
    );
    assert_eq!(vmdesc(&mut v), expected);

    let mut p = ArrayOfPtrToInt {
        ar: [None, None, Some(2), Some(3)],
    };
    assert_eq!(
        vmdesc(&mut p),
        r#"{"vmsd_name": "test/arps", "version": 1, "fields": [{"name": "ar", "array_len": 2, "type": "nullptr", "size": 1}, {"name": "ar", "array_len": 2, "type": "int32", "size": 4}]}"#
    );
}

#[test]
fn vmdesc_of_an_array_without_null_is_one_entry() {
    let mut p = ArrayOfPtrToInt {
        ar: [Some(0), Some(1), Some(2), Some(3)],
    };
    assert_eq!(
        vmdesc(&mut p),
        r#"{"vmsd_name": "test/arps", "version": 1, "fields": [{"name": "ar", "array_len": 4, "type": "int32", "size": 4}]}"#
    );
}

#[test]
fn schema_dump_sizes_elements_as_pointers() {
    // QEMU's -dump-vmstate prints sizeof(T *) and `num`; structs get a Description.
    let dump = schema::description_json(ArrayOfPtrToStruct::DESCRIPTION);
    let field = &dump["Fields"][0];
    assert_eq!(field["field"], "ar");
    assert_eq!(field["num"], 4);
    assert_eq!(field["size"], 8);
    assert_eq!(field["Description"]["name"], "test/tst");
    let dump = schema::description_json(ArrayOfPtrToInt::DESCRIPTION);
    assert_eq!(dump["Fields"][0]["size"], 8);
    assert!(dump["Fields"][0].get("Description").is_none());
}
