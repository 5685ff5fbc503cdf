//! Temporary-state fields (`to_tmp`/`from_tmp`, QEMU's `VMSTATE_WITH_TMP`) against QEMU
//! 10's `tests/unit/test-vmstate.c` `/vmstate/tmp_struct` case (transcribed in
//! `docs/notes/qemu-field-kinds.md`; the harness's trailing EOF byte is not part of the
//! state), with its truncation failures and the vmdesc QEMU would write.

use vmstate::qjson::Style;
use vmstate::{Describer, Tmp, VmState, Writer, schema};

/// `TestStruct`: only `a` and `d` are fields of `test/with_tmp`; `b` and `f` travel in
/// the temporary.
#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "test/with_tmp", version = 1, min_version = 0)]
struct TestStruct {
    a: u32,
    d: u64,
    #[vmstate(to_tmp = Self::to_tmp, from_tmp = Self::apply_tmp)]
    tmp: Tmp<TmpChild>,
    #[vmstate(skip)]
    b: u32,
    #[vmstate(skip)]
    f: u64,
}

/// `TmpTestStruct` with `vmstate_tmp_child` ("test/tmp_child", v0): `diff`, and the
/// parent's `f` through `VMSTATE_STRUCT_POINTER(parent, test/tmp_child_parent)`.
#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "test/tmp_child", version = 0)]
struct TmpChild {
    diff: i64,
    parent: TmpChildParent,
}

/// `vmstate_tmp_child_parent` ("test/tmp_child_parent", v0): the parent's `f`.
#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "test/tmp_child_parent", version = 0)]
struct TmpChildParent {
    f: u64,
}

impl TestStruct {
    /// `tmp_child_pre_save`: `diff = b - a`.
    fn to_tmp(&self) -> TmpChild {
        TmpChild {
            diff: i64::from(self.b) - i64::from(self.a),
            parent: TmpChildParent { f: self.f },
        }
    }

    /// `tmp_child_post_load`: `b = a + diff`.
    fn apply_tmp(&mut self, t: TmpChild) -> Result<(), String> {
        let b = i64::from(self.a) + t.diff;
        self.b = u32::try_from(b).map_err(|_| format!("b = {b} is out of range"))?;
        self.f = t.parent.f;
        Ok(())
    }
}

/// The expected bytes: a, d, diff, f.
const BYTES: [u8; 28] = [
    0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 8,
];

fn source() -> TestStruct {
    TestStruct {
        a: 2,
        b: 4,
        d: 1,
        f: 8,
        ..Default::default()
    }
}

#[test]
fn saves_qemus_bytes() {
    assert_eq!(source().to_bytes().unwrap(), BYTES);
}

#[test]
fn loads_them_applying_the_temporary_to_the_device() {
    let mut dst = TestStruct::default();
    dst.load_bytes(&BYTES, 1).unwrap();
    assert_eq!(dst, source());
}

#[test]
fn qemus_truncated_inputs_fail() {
    // test-vmstate's load_vmstate: empty, size-2, the first half, the second half (with
    // the EOF byte QEMU's buffer has at the end).
    let mut with_eof = BYTES.to_vec();
    with_eof.push(0);
    let n = with_eof.len();
    let cases: [&[u8]; 4] = [
        &[],
        &with_eof[..n - 2],
        &with_eof[..n / 2],
        &with_eof[n / 2..n / 2 + n / 2],
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut dst = TestStruct::default();
        assert!(dst.load_bytes(case, 1).is_err(), "case {i} loaded");
    }
}

#[test]
fn a_failing_from_tmp_fails_the_load_at_the_field() {
    // diff = -3 with a = 2 gives b = -1.
    let mut bytes = BYTES;
    bytes[12..20].copy_from_slice(&(-3i64).to_be_bytes());
    let err = TestStruct::default().load_bytes(&bytes, 1).unwrap_err();
    assert_eq!(err.path(), "test/with_tmp.tmp");
    assert!(err.to_string().contains("b = -1 is out of range"), "{err}");
}

#[test]
fn vmdesc_is_qemus_tmp_entry() {
    let mut d = Describer::new();
    source().save_state(&mut Writer::new(), &mut d).unwrap();
    let json = Style::QEMU.to_string_json(&d.finish());
    let tmp = r#"{"name": "tmp", "type": "tmp", "vmsd_name": "test/tmp_child", "version": 0, "fields": [{"name": "diff", "type": "int64", "size": 8}, {"name": "parent", "type": "struct", "struct": {"vmsd_name": "test/tmp_child_parent", "version": 0, "fields": [{"name": "f", "type": "uint64", "size": 8}]}, "size": 8}], "size": 16}"#;
    assert!(json.contains(tmp), "{json}");
}

#[test]
fn schema_dump_names_the_field_tmp_with_the_temporarys_description() {
    let dump = schema::description_json(TestStruct::DESCRIPTION);
    let field = &dump["Fields"][2];
    assert_eq!(field["field"], "tmp");
    assert_eq!(field["version_id"], 0);
    assert_eq!(field["Description"]["name"], "test/tmp_child");
}

/// Two temporaries in one description: QEMU's vmdesc names them `tmp[0]` and `tmp[1]`.
#[derive(VmState, Default)]
#[vmstate(name = "two")]
struct Two {
    #[vmstate(to_tmp = Self::first, from_tmp = Self::apply)]
    one: Tmp<TmpChildParent>,
    #[vmstate(to_tmp = Self::first, from_tmp = Self::apply)]
    two: Tmp<TmpChildParent>,
}

impl Two {
    fn first(&self) -> TmpChildParent {
        TmpChildParent { f: 1 }
    }
    fn apply(&mut self, _: TmpChildParent) -> Result<(), std::convert::Infallible> {
        Ok(())
    }
}

#[test]
fn several_temporaries_are_tmp_0_and_tmp_1() {
    let mut d = Describer::new();
    Two::default()
        .save_state(&mut Writer::new(), &mut d)
        .unwrap();
    let json = Style::QEMU.to_string_json(&d.finish());
    assert!(
        json.contains(r#"{"name": "tmp[0]", "type": "tmp""#),
        "{json}"
    );
    assert!(
        json.contains(r#"{"name": "tmp[1]", "type": "tmp""#),
        "{json}"
    );
}
