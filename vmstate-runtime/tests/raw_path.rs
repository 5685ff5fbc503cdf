//! The derive's bulk path: runs of fixed-size fields are written into one reserved slot
//! and read from one checked slice. It must behave exactly like the field-by-field
//! path, which is still taken when describing, when the bytes are not buffered, for an
//! older version, or where QEMU would look for a subsection after a nested struct.

#[path = "support/trickle.rs"]
mod trickle;

use trickle::Trickle;
use vmstate::{ErrorKind, Reader, Timer, VmElem, VmState};

#[derive(VmState, Default, Debug, Clone, Copy, PartialEq)]
#[vmstate(name = "inner")]
struct Inner {
    x: u8,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "outer")]
struct Outer {
    pair: [Inner; 2],
    tail: [u8; 14],
}

/// Every raw kind of field in one struct.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "mixed", version = 2)]
struct Mixed {
    a: i8,
    b: i16,
    c: i32,
    d: i64,
    e: u16,
    f: u32,
    g: u64,
    h: bool,
    i: f64,
    t: Timer,
    #[vmstate(unused = 3)]
    _gap: (),
    #[vmstate(buffer)]
    buf: [u8; 5],
    words: [u16; 3],
    signed: [i32; 2],
    flags: [bool; 2],
    inner: Inner,
    inners: [Inner; 2],
    #[vmstate(skip)]
    runtime_only: u32,
}

/// A run with a `since` field: loaded in bulk at version 2, field by field at 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "versioned", version = 2, min_version = 1)]
struct Versioned {
    a: u8,
    #[vmstate(since = 2)]
    b: u16,
    c: u8,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "list")]
struct List {
    n: u8,
    #[vmstate(len = n)]
    items: Vec<Inner>,
}

fn mixed() -> Mixed {
    Mixed {
        a: -2,
        b: -300,
        c: -70000,
        d: -(1 << 40),
        e: 0xbeef,
        f: 0xdead_beef,
        g: 0x0102_0304_0506_0708,
        h: true,
        i: 1.5,
        t: Timer::armed_at(42),
        _gap: (),
        buf: *b"hello",
        words: [1, 2, 0xffff],
        signed: [-1, 7],
        flags: [false, true],
        inner: Inner { x: 9 },
        inners: [Inner { x: 1 }, Inner { x: 2 }],
        runtime_only: 77,
    }
}

#[test]
fn bulk_and_field_by_field_paths_agree_on_every_raw_kind() {
    let mut m = mixed();
    let bytes = m.to_bytes().unwrap();
    // Describing takes the field-by-field path.
    let (described, _) = m.save_described().unwrap();
    assert_eq!(bytes, described);
    assert_eq!(Some(bytes.len()), Mixed::DESCRIPTION.fixed_size());
    assert_eq!(<Mixed as VmElem>::RAW_SIZE, Some(bytes.len()));
    assert_eq!(&bytes[..3], &[0xfe, 0xfe, 0xd4]);
    // The unused gap is zeros, after the i64, u16, u32, u64, bool, f64 and timer.
    let gap = 1 + 2 + 4 + 8 + 2 + 4 + 8 + 1 + 8 + 8;
    assert_eq!(&bytes[gap..gap + 3], &[0, 0, 0]);
    assert_eq!(&bytes[gap + 3..gap + 8], b"hello");

    let mut fast = Mixed::default();
    fast.load_bytes(&bytes, 2).unwrap();
    let mut slow = Mixed::default();
    slow.load(&mut Reader::from_io(Trickle(&bytes)), 2).unwrap();
    let expected = Mixed {
        runtime_only: 0,
        ..mixed()
    };
    assert_eq!(fast, expected);
    assert_eq!(slow, expected);
}

#[test]
fn a_marker_byte_after_a_nested_struct_that_is_no_subsection_loads() {
    // After pair[0] comes 0x05 (pair[1].x), which QEMU peeks at as a possible
    // subsection of "inner"; the length byte after it is too short for one.
    let mut o = Outer {
        pair: [Inner { x: 1 }, Inner { x: 0x05 }],
        tail: [0; 14],
    };
    let bytes = o.to_bytes().unwrap();
    let mut back = Outer::default();
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back, o);
}

#[test]
fn a_subsection_of_a_nested_struct_is_still_an_error() {
    // After pair[1] come bytes that look like a subsection "inner/zz" of the nested
    // struct, which has none: QEMU fails the load, in bulk or not.
    let mut bytes = vec![1, 2, 0x05, 8];
    bytes.extend_from_slice(b"inner/zz");
    bytes.extend_from_slice(&1u32.to_be_bytes());
    assert_eq!(bytes.len(), 2 + 14);
    for from_io in [false, true] {
        let mut o = Outer::default();
        let err = if from_io {
            o.load(&mut Reader::from_io(Trickle(&bytes)), 1)
        } else {
            o.load_bytes(&bytes, 1)
        }
        .unwrap_err();
        match err.kind() {
            ErrorKind::UnknownSubsection { name, parent } => {
                assert_eq!((name.as_str(), *parent), ("inner/zz", "inner"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.offset(), Some(2));
    }
}

#[test]
fn an_older_version_without_a_field_loads_field_by_field() {
    let mut v = Versioned {
        a: 1,
        b: 0x0203,
        c: 4,
    };
    assert_eq!(v.to_bytes().unwrap(), [1, 2, 3, 4]);
    let mut old = Versioned {
        b: 0x7777,
        ..Default::default()
    };
    old.load_bytes(&[9, 8], 1).unwrap();
    assert_eq!(
        old,
        Versioned {
            a: 9,
            b: 0x7777,
            c: 8
        }
    );
    let mut new = Versioned::default();
    new.load_bytes(&[1, 2, 3, 4], 2).unwrap();
    assert_eq!(new, v);
    // Not raw: the size depends on the version.
    assert_eq!(<Versioned as VmElem>::RAW_SIZE, None);
}

#[test]
fn a_vec_of_raw_structs_loads_in_bulk_or_element_by_element() {
    let mut l = List {
        n: 4,
        items: vec![
            Inner { x: 1 },
            Inner { x: 5 },
            Inner { x: 5 },
            Inner { x: 2 },
        ],
    };
    let bytes = l.to_bytes().unwrap();
    assert_eq!(bytes, [4, 1, 5, 5, 2]);
    let mut back = List::default();
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back, l);
    let mut slow = List::default();
    slow.load(&mut Reader::from_io(Trickle(&bytes)), 1).unwrap();
    assert_eq!(slow, l);
    // A truncated list is an error naming the element.
    let err = List::default().load_bytes(&bytes[..4], 1).unwrap_err();
    assert_eq!(err.path(), "list.items[3].x");
}

#[test]
fn truncated_runs_fail_at_the_first_missing_field() {
    let bytes = mixed().to_bytes().unwrap();
    let err = Mixed::default().load_bytes(&bytes[..5], 2).unwrap_err();
    assert_eq!(err.path(), "mixed.c");
    assert!(matches!(err.kind(), ErrorKind::UnexpectedEof { needed: 4 }));
    assert_eq!(err.offset(), Some(3));
}
