//! QEMU's load rules (spec 3.5-3.7), each checked against bytes built by hand.

use vmstate::{ErrorKind, Reader, Timer, VmState};

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "dev", version = 3, min_version = 2)]
struct Dev {
    a: u16,
    #[vmstate(since = 3)]
    b: u8,
    c: u32,
    #[vmstate(subsection, needed = Self::has_extra)]
    extra: DevExtra,
    #[vmstate(subsection, needed = Self::has_more)]
    more: DevMore,
}

impl Dev {
    fn has_extra(&self) -> bool {
        self.extra.x != 0
    }
    fn has_more(&self) -> bool {
        self.more.y != 0
    }
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "dev/extra", version = 2, min_version = 1)]
struct DevExtra {
    x: u8,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "dev/more", version = 1)]
struct DevMore {
    y: u64,
}

/// A subsection record built by hand: marker, counted name, be32 version, payload.
fn subsection(name: &str, version: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x05, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

const V3_FIELDS: [u8; 7] = [0x12, 0x34, 0x56, 0, 0, 0, 9];
const V2_FIELDS: [u8; 6] = [0x12, 0x34, 0, 0, 0, 9];

#[test]
fn version_too_new_is_rejected_with_both_versions() {
    let err = Dev::default().load_bytes(&V3_FIELDS, 4).unwrap_err();
    match err.kind() {
        ErrorKind::VersionTooNew {
            vmsd,
            stream,
            local,
        } => {
            assert_eq!((*vmsd, *stream, *local), ("dev", 4, 3));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.path(), "dev");
    assert_eq!(err.offset(), Some(0));
}

#[test]
fn version_below_min_version_is_rejected() {
    let err = Dev::default().load_bytes(&V2_FIELDS, 1).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::VersionTooOld {
            stream: 1,
            min: 2,
            ..
        }
    ));
}

#[test]
fn field_since_3_is_read_only_from_version_3_streams() {
    let mut d = Dev {
        b: 0x77,
        ..Default::default()
    };
    d.load_bytes(&V2_FIELDS, 2).unwrap();
    assert_eq!(
        (d.a, d.b, d.c),
        (0x1234, 0x77, 9),
        "b keeps its value at v2"
    );
    d.load_bytes(&V3_FIELDS, 3).unwrap();
    assert_eq!((d.a, d.b, d.c), (0x1234, 0x56, 9));
}

#[test]
fn save_writes_fields_then_needed_subsections_only() {
    let mut d = Dev {
        a: 1,
        b: 2,
        c: 3,
        extra: DevExtra { x: 0 },
        more: DevMore { y: 5 },
    };
    let mut expected = vec![0, 1, 2, 0, 0, 0, 3];
    expected.extend(subsection("dev/more", 1, &5u64.to_be_bytes()));
    assert_eq!(d.to_bytes().unwrap(), expected);
}

#[test]
fn present_subsection_is_loaded() {
    let mut bytes = V3_FIELDS.to_vec();
    bytes.extend(subsection("dev/extra", 2, &[42]));
    let mut d = Dev::default();
    d.load_bytes(&bytes, 3).unwrap();
    assert_eq!(d.extra.x, 42);
}

#[test]
fn absent_subsection_leaves_the_local_value() {
    let mut d = Dev {
        extra: DevExtra { x: 7 },
        ..Default::default()
    };
    d.load_bytes(&V3_FIELDS, 3).unwrap();
    assert_eq!(d.extra.x, 7);
}

#[test]
fn subsections_load_in_any_order() {
    let mut bytes = V3_FIELDS.to_vec();
    bytes.extend(subsection("dev/more", 1, &9u64.to_be_bytes()));
    bytes.extend(subsection("dev/extra", 1, &[3]));
    let mut d = Dev::default();
    d.load_bytes(&bytes, 3).unwrap();
    assert_eq!((d.extra.x, d.more.y), (3, 9));
}

#[test]
fn unknown_subsection_with_the_parent_prefix_is_an_error() {
    let mut bytes = V3_FIELDS.to_vec();
    bytes.extend(subsection("dev/other", 1, &[]));
    let err = Dev::default().load_bytes(&bytes, 3).unwrap_err();
    match err.kind() {
        ErrorKind::UnknownSubsection { name, parent } => {
            assert_eq!((name.as_str(), *parent), ("dev/other", "dev"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.offset(), Some(7));
}

#[test]
fn subsection_of_another_parent_is_left_unread() {
    let mut bytes = V3_FIELDS.to_vec();
    let foreign = subsection("other/x", 1, &[]);
    bytes.extend(&foreign);
    let mut r = Reader::from_slice(&bytes);
    Dev::default().load(&mut r, 3).unwrap();
    assert_eq!(r.position(), V3_FIELDS.len() as u64);
}

#[test]
fn subsection_version_is_checked_against_its_own_range() {
    let mut bytes = V3_FIELDS.to_vec();
    bytes.extend(subsection("dev/extra", 3, &[1]));
    let err = Dev::default().load_bytes(&bytes, 3).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::VersionTooNew {
            vmsd: "dev/extra",
            ..
        }
    ));
    assert_eq!(err.path(), "dev/extra");
}

#[test]
fn truncated_field_names_the_field_and_offset() {
    let err = Dev::default().load_bytes(&V3_FIELDS[..5], 3).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::UnexpectedEof { .. }));
    assert_eq!(err.path(), "dev.c");
    assert_eq!(err.offset(), Some(3));
    assert!(err.to_string().contains("dev.c"));
}

// ---- nested structs (VMS_STRUCT) ----

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "chan", version = 2)]
struct Chan {
    count: i32,
    #[vmstate(since = 2)]
    mode: u8,
    #[vmstate(subsection, needed = Self::has_gate)]
    gate: ChanGate,
}

impl Chan {
    fn has_gate(&self) -> bool {
        self.gate.on
    }
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "chan/gate", version = 1)]
struct ChanGate {
    on: bool,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "pit", version = 1)]
struct Pit {
    channels: [Chan; 2],
    tail: u8,
}

#[test]
fn nested_struct_loads_at_its_own_version_and_has_no_bytes_of_its_own() {
    // Parent version 1 must not hide the nested `since = 2` field.
    let bytes = [0, 0, 0, 1, 5, 0, 0, 0, 2, 6, 0xee];
    let mut p = Pit::default();
    p.load_bytes(&bytes, 1).unwrap();
    assert_eq!((p.channels[0].count, p.channels[0].mode), (1, 5));
    assert_eq!((p.channels[1].count, p.channels[1].mode), (2, 6));
    assert_eq!(p.tail, 0xee);
}

#[test]
fn nested_subsection_follows_that_element_fields() {
    let mut p = Pit::default();
    p.channels[0].gate.on = true;
    let mut expected = vec![0, 0, 0, 0, 0];
    expected.extend(subsection("chan/gate", 1, &[1]));
    expected.extend([0, 0, 0, 0, 0, 0]);
    let bytes = p.to_bytes().unwrap();
    assert_eq!(bytes, expected);
    let mut back = Pit::default();
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back, p);
}

#[test]
fn error_inside_an_array_element_names_the_index() {
    let bytes = [0, 0, 0, 1, 5, 0, 0];
    let err = Pit::default().load_bytes(&bytes, 1).unwrap_err();
    assert_eq!(err.path(), "pit.channels[1].count");
    assert_eq!(err.offset(), Some(5));
}

// ---- every field attribute ----

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "all", version = 2, min_version = 1,
          pre_save = Self::pre_save, post_save = Self::post_save,
          pre_load = Self::pre_load, post_load = Self::post_load)]
struct All {
    #[vmstate(equal)]
    magic: u32,
    n: u8,
    #[vmstate(len = n)]
    items: Vec<u16>,
    #[vmstate(unused = 3)]
    _gap: (),
    #[vmstate(buffer)]
    regs: [u8; 4],
    flag: bool,
    timer: Timer,
    ratio: f64,
    #[vmstate(exists = Self::odd_version)]
    odd: u8,
    #[vmstate(rename = "renamed")]
    original: i8,
    #[vmstate(skip)]
    runtime: u64,
    #[vmstate(skip)]
    log: Vec<String>,
}

impl All {
    fn odd_version(&self, version: u32) -> bool {
        version % 2 == 1
    }
    fn pre_save(&mut self) -> Result<(), String> {
        self.log.push("pre_save".into());
        Ok(())
    }
    fn post_save(&mut self) -> Result<(), String> {
        self.log.push("post_save".into());
        Ok(())
    }
    fn pre_load(&mut self) -> Result<(), String> {
        self.log.push("pre_load".into());
        Ok(())
    }
    fn post_load(&mut self, version: u32) -> Result<(), String> {
        if self.magic == 0xbad {
            return Err("bad magic".into());
        }
        self.log.push(format!("post_load v{version}"));
        Ok(())
    }
}

fn sample_all() -> All {
    All {
        magic: 0xfeed,
        n: 2,
        items: vec![0x0102, 0x0304],
        regs: *b"abcd",
        flag: true,
        timer: Timer::disarmed(),
        ratio: 1.5,
        odd: 9,
        original: -2,
        runtime: 77,
        ..Default::default()
    }
}

/// `sample_all()` at version 2, encoded by hand.
fn sample_all_v2_bytes() -> Vec<u8> {
    let mut v = vec![0, 0, 0xfe, 0xed, 2, 1, 2, 3, 4, 0, 0, 0];
    v.extend(b"abcd");
    v.push(1);
    v.extend([0xff; 8]);
    v.extend(1.5f64.to_bits().to_be_bytes());
    v.push(0xfe); // `odd` does not exist at version 2
    v
}

#[test]
fn every_attribute_encodes_as_qemu_does() {
    let mut a = sample_all();
    assert_eq!(a.to_bytes().unwrap(), sample_all_v2_bytes());
    assert_eq!(a.log, ["pre_save", "post_save"]);
}

#[test]
fn every_attribute_round_trips_and_skip_keeps_runtime_state() {
    let mut target = All {
        magic: 0xfeed,
        runtime: 1234,
        ..Default::default()
    };
    target.load_bytes(&sample_all_v2_bytes(), 2).unwrap();
    let mut expected = sample_all();
    expected.runtime = 1234;
    expected.odd = 0;
    expected.log = vec!["pre_load".into(), "post_load v2".into()];
    assert_eq!(target, expected);
}

#[test]
fn exists_predicate_decides_per_version() {
    let mut bytes = sample_all_v2_bytes();
    let last = bytes.pop().unwrap();
    bytes.push(0x44); // odd, present at version 1
    bytes.push(last);
    let mut target = All {
        magic: 0xfeed,
        ..Default::default()
    };
    target.load_bytes(&bytes, 1).unwrap();
    assert_eq!(target.odd, 0x44);
}

#[test]
fn unused_bytes_are_ignored_on_load() {
    let mut bytes = sample_all_v2_bytes();
    bytes[9..12].copy_from_slice(&[1, 2, 3]);
    let mut target = All {
        magic: 0xfeed,
        ..Default::default()
    };
    target.load_bytes(&bytes, 2).unwrap();
    assert_eq!(target.regs, *b"abcd");
}

#[test]
fn equal_field_mismatch_names_both_values() {
    let mut target = All {
        magic: 0xbeef,
        ..Default::default()
    };
    let err = target.load_bytes(&sample_all_v2_bytes(), 2).unwrap_err();
    match err.kind() {
        ErrorKind::NotEqual { stream, local } => {
            assert_eq!(stream, &0xfeed.to_string());
            assert_eq!(local, &0xbeef.to_string());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.path(), "all.magic");
}

#[test]
fn bool_loads_any_non_zero_byte_as_true() {
    let mut bytes = sample_all_v2_bytes();
    bytes[16] = 0x80;
    let mut target = All {
        magic: 0xfeed,
        ..Default::default()
    };
    target.load_bytes(&bytes, 2).unwrap();
    assert!(target.flag);
}

#[test]
fn timer_minus_one_is_disarmed_and_other_values_arm_it() {
    let mut bytes = sample_all_v2_bytes();
    bytes[17..25].copy_from_slice(&1_000i64.to_be_bytes());
    let mut target = All {
        magic: 0xfeed,
        ..Default::default()
    };
    target.load_bytes(&bytes, 2).unwrap();
    assert_eq!(target.timer.expiry_ns(), Some(1_000));
}

#[test]
fn count_field_that_disagrees_with_the_vec_fails_the_save() {
    let mut a = sample_all();
    a.n = 3;
    let err = a.to_bytes().unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::CountMismatch {
            count_field: "n",
            count: 3,
            actual: 2
        }
    ));
    assert_eq!(err.path(), "all.items");
    assert_eq!(
        a.log,
        ["pre_save", "post_save"],
        "post_save runs after a failed save"
    );
}

#[test]
fn hook_error_fails_the_load_and_names_the_hook() {
    let mut bytes = sample_all_v2_bytes();
    bytes[2..4].copy_from_slice(&[0x0b, 0xad]);
    let mut target = All {
        magic: 0xbad,
        ..Default::default()
    };
    let err = target.load_bytes(&bytes, 2).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Hook {
            hook: "post_load",
            ..
        }
    ));
    assert!(err.to_string().contains("bad magic"));
}

// ---- counted arrays of each count type ----

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "counts")]
struct Counts {
    n16: u16,
    #[vmstate(len = n16)]
    a: Vec<u8>,
    n32: u32,
    #[vmstate(len = n32)]
    b: Vec<u32>,
    ni: i32,
    #[vmstate(len = ni)]
    c: Vec<Chan>,
}

#[test]
fn counted_vecs_of_every_count_type_round_trip() {
    let mut c = Counts {
        n16: 3,
        a: vec![1, 2, 3],
        n32: 1,
        b: vec![0xdeadbeef],
        ni: 2,
        c: vec![
            Chan {
                count: -1,
                ..Default::default()
            },
            Chan::default(),
        ],
    };
    let bytes = c.to_bytes().unwrap();
    let mut expected = vec![
        0, 3, 1, 2, 3, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 2,
    ];
    expected.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bytes, expected);
    let mut back = Counts::default();
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back, c);
}

#[test]
fn negative_i32_count_is_an_error() {
    let bytes = [0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe];
    let err = Counts::default().load_bytes(&bytes, 1).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::InvalidCount {
            count_field: "ni",
            count: -2
        }
    ));
}

#[test]
fn huge_count_is_refused_before_allocating() {
    let bytes = [0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    let mut r = Reader::from_slice(&bytes).with_limits(vmstate::Limits { max_alloc: 1 << 20 });
    let err = Counts::default().load(&mut r, 1).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::AllocationTooLarge { .. }));
    assert_eq!(err.path(), "counts.b");
}

// ---- top-level needed ----

#[derive(VmState, Default)]
#[vmstate(name = "opt", needed = Self::active)]
struct Optional {
    on: bool,
}

impl Optional {
    fn active(&self) -> bool {
        self.on
    }
}

#[test]
fn top_level_needed_is_reported() {
    assert!(!Optional { on: false }.needed());
    assert!(Optional { on: true }.needed());
}

// ---- tuple structs ----

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "pair")]
struct Pair(u8, #[vmstate(rename = "second")] u16);

#[test]
fn tuple_struct_fields_save_in_order() {
    let mut p = Pair(1, 0x0203);
    assert_eq!(p.to_bytes().unwrap(), [1, 2, 3]);
    let (_, desc) = p.save_described().unwrap();
    assert_eq!(desc["fields"][1]["name"], "second");
}

#[test]
fn leftover_bytes_are_reported_by_load_bytes() {
    let err = Pair::default().load_bytes(&[1, 2, 3, 4], 1).unwrap_err();
    assert_eq!(err.offset(), Some(3));
}

// ---- counted buffers (QEMU's VMSTATE_VBUFFER) ----

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "blob")]
struct Blob {
    tag: u8,
    size: u32,
    #[vmstate(buffer, len = size)]
    data: Vec<u8>,
    tail: u16,
}

#[test]
fn counted_buffer_is_its_bytes_after_the_count() {
    let mut b = Blob {
        tag: 7,
        size: 3,
        data: b"abc".to_vec(),
        tail: 0x0102,
    };
    let bytes = b.to_bytes().unwrap();
    assert_eq!(bytes, [7, 0, 0, 0, 3, b'a', b'b', b'c', 1, 2]);
    let mut back = Blob {
        data: vec![9; 10],
        ..Default::default()
    };
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back, b);
}

#[test]
fn counted_buffer_size_must_match_on_save() {
    let mut b = Blob {
        size: 4,
        data: b"abc".to_vec(),
        ..Default::default()
    };
    let err = b.to_bytes().unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::CountMismatch {
            count_field: "size",
            count: 4,
            actual: 3
        }
    ));
    assert_eq!(err.path(), "blob.data");
}

#[test]
fn counted_buffer_size_is_checked_against_the_allocation_limit() {
    // One byte over the 1 MiB limit.
    let bytes = [0, 0, 0x10, 0, 1, 1, 2, 3];
    let mut r = Reader::from_slice(&bytes).with_limits(vmstate::Limits { max_alloc: 1 << 20 });
    let err = Blob::default().load(&mut r, 1).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::AllocationTooLarge {
                requested: 0x0010_0001,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.path(), "blob.data");
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "sblob")]
struct SignedBlob {
    size: i32,
    #[vmstate(buffer, len = size)]
    data: Vec<u8>,
}

#[test]
fn counted_buffer_with_a_negative_i32_size_is_an_error() {
    let err = SignedBlob::default()
        .load_bytes(&[0xff, 0xff, 0xff, 0xff], 1)
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::InvalidCount {
            count_field: "size",
            count: -1
        }
    ));
}

/// QEMU's `Fifo8`: the buffer is counted by `capacity`, which is not migrated.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "Fifo8", version = 1)]
struct Fifo8 {
    #[vmstate(skip)]
    capacity: u32,
    #[vmstate(buffer, len = capacity, since = 1)]
    data: Vec<u8>,
    head: u32,
    num: u32,
}

#[test]
fn counted_buffer_with_a_local_count_loads_the_configured_size() {
    let mut f = Fifo8 {
        capacity: 4,
        ..Default::default()
    };
    let bytes = [1, 2, 3, 4, 0, 0, 0, 1, 0, 0, 0, 2];
    f.load_bytes(&bytes, 1).unwrap();
    assert_eq!(
        (f.data.as_slice(), f.head, f.num),
        (&[1, 2, 3, 4][..], 1, 2)
    );
    assert_eq!(f.to_bytes().unwrap(), bytes);
    // A device configured with another capacity reads another layout.
    let mut small = Fifo8 {
        capacity: 2,
        ..Default::default()
    };
    assert!(small.load_bytes(&bytes, 1).is_err());
}

// ---- validate (QEMU's VMSTATE_VALIDATE) ----

#[derive(VmState, Default, Debug, Clone)]
#[vmstate(name = "checked", version = 2, min_version = 1)]
struct Checked {
    n: u8,
    #[vmstate(validate = Self::n_in_range, rename = "n in range")]
    _n_ok: (),
    #[vmstate(len = n)]
    v: Vec<u8>,
    #[vmstate(skip)]
    checks: std::cell::RefCell<Vec<(u8, usize, u32)>>,
}

impl Checked {
    fn n_in_range(&self, version: u32) -> bool {
        // What the check sees: the count just loaded, the Vec not yet loaded.
        self.checks
            .borrow_mut()
            .push((self.n, self.v.len(), version));
        self.n <= 4
    }
}

#[test]
fn validate_sends_nothing_and_is_not_run_on_save() {
    let mut c = Checked {
        n: 6,
        v: vec![1, 2, 3, 4, 5, 6],
        ..Default::default()
    };
    let (bytes, desc) = c.save_described().unwrap();
    assert_eq!(bytes, [6, 1, 2, 3, 4, 5, 6]);
    assert!(c.checks.borrow().is_empty());
    let names: Vec<_> = desc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n", "v"]);
}

#[test]
fn validate_runs_between_the_fields_with_the_stream_version() {
    let mut c = Checked::default();
    c.load_bytes(&[2, 8, 9], 1).unwrap();
    assert_eq!(c.v, [8, 9]);
    assert_eq!(*c.checks.borrow(), [(2, 0, 1)]);
    c.load_bytes(&[1, 7], 2).unwrap();
    assert_eq!(c.checks.borrow()[1], (1, 2, 2));
}

#[test]
fn failed_validate_stops_the_load_and_names_the_check() {
    let mut c = Checked {
        v: vec![1],
        ..Default::default()
    };
    let err = c.load_bytes(&[5, 1, 2, 3, 4, 5], 2).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::ValidationFailed {
            check: "n in range"
        }
    ));
    assert_eq!(err.path(), "checked.n in range");
    assert_eq!(err.offset(), Some(1));
    assert!(err.to_string().contains("input validation failed"), "{err}");
    // The fields after the check were not read.
    assert_eq!((c.n, c.v.as_slice()), (5, &[1][..]));
}

#[test]
fn validate_is_described_as_qemus_must_exist_field() {
    let f = &Checked::DESCRIPTION.fields[1];
    assert_eq!(f.name, "n in range");
    assert!(f.is_validation() && f.has_exists_test);
    assert_eq!(f.count, vmstate::Count::Validate);
    assert_eq!(f.static_count(), Some(0));
    // QEMU's -dump-vmstate leaves VMSTATE_VALIDATE out.
    let dump = vmstate::schema::description_json(Checked::DESCRIPTION);
    let dumped: Vec<_> = dump["Fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(dumped, ["n", "v"]);
}
