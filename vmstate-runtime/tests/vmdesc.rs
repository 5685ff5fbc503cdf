//! The vmdesc JSON rules of spec 1.7, against JSON written by hand from the spec.

use vmstate::{Timer, VmState, qjson};

#[derive(VmState, Default)]
#[vmstate(name = "elem", version = 4)]
struct Elem {
    v: u16,
}

#[derive(VmState, Default)]
#[vmstate(name = "elem2")]
struct ElemWithSub {
    v: u8,
    #[vmstate(subsection, needed = Self::always)]
    sub: ElemWithSubS,
}

impl ElemWithSub {
    fn always(&self) -> bool {
        true
    }
}

#[derive(VmState, Default)]
#[vmstate(name = "elem2/s", version = 7)]
struct ElemWithSubS {
    w: u32,
}

#[derive(VmState, Default)]
#[vmstate(name = "shapes", version = 5)]
struct Shapes {
    scalar: u32,
    regs: [u64; 3],
    #[vmstate(unused = 6)]
    _a: (),
    structs: [Elem; 2],
    loose: [ElemWithSub; 3],
    #[vmstate(unused = 2)]
    _b: (),
    n: u8,
    #[vmstate(len = n)]
    counted: Vec<u32>,
    #[vmstate(buffer)]
    buf: [u8; 5],
    t: Timer,
    #[vmstate(equal)]
    id: u64,
    #[vmstate(subsection, needed = Self::never)]
    never: ShapesNever,
}

impl Shapes {
    fn never(&self) -> bool {
        false
    }
}

#[derive(VmState, Default)]
#[vmstate(name = "shapes/never")]
struct ShapesNever {
    z: u8,
}

#[test]
fn vmdesc_follows_qemu_rules_for_every_shape() {
    let (bytes, desc) = Shapes::default().save_described().unwrap();
    let expected = concat!(
        r#"{"vmsd_name": "shapes", "version": 5, "fields": ["#,
        r#"{"name": "scalar", "type": "uint32", "size": 4}, "#,
        // A compressible array: first element only, with array_len.
        r#"{"name": "regs", "array_len": 3, "type": "uint64", "size": 8}, "#,
        // Fields sharing a name get [k].
        r#"{"name": "unused[0]", "type": "unused_buffer", "size": 6}, "#,
        r#"{"name": "structs", "array_len": 2, "type": "struct", "struct": {"vmsd_name": "elem", "version": 4, "fields": [{"name": "v", "type": "uint16", "size": 2}]}, "size": 2}, "#,
        // Structs with subsections are not compressible: one entry per element, no
        // index on the last one; the size includes the subsection.
        r#"{"name": "loose", "index": 0, "type": "struct", "struct": {"vmsd_name": "elem2", "version": 1, "fields": [{"name": "v", "type": "uint8", "size": 1}], "subsections": [{"vmsd_name": "elem2/s", "version": 7, "fields": [{"name": "w", "type": "uint32", "size": 4}]}]}, "size": 18}, "#,
        r#"{"name": "loose", "index": 1, "type": "struct", "struct": {"vmsd_name": "elem2", "version": 1, "fields": [{"name": "v", "type": "uint8", "size": 1}], "subsections": [{"vmsd_name": "elem2/s", "version": 7, "fields": [{"name": "w", "type": "uint32", "size": 4}]}]}, "size": 18}, "#,
        r#"{"name": "loose", "type": "struct", "struct": {"vmsd_name": "elem2", "version": 1, "fields": [{"name": "v", "type": "uint8", "size": 1}], "subsections": [{"vmsd_name": "elem2/s", "version": 7, "fields": [{"name": "w", "type": "uint32", "size": 4}]}]}, "size": 18}, "#,
        r#"{"name": "unused[1]", "type": "unused_buffer", "size": 2}, "#,
        r#"{"name": "n", "type": "uint8", "size": 1}, "#,
        // An empty counted array has no entry at all.
        r#"{"name": "buf", "type": "buffer", "size": 5}, "#,
        r#"{"name": "t", "type": "timer", "size": 8}, "#,
        r#"{"name": "id", "type": "int64 equal", "size": 8}]}"#,
    );
    assert_eq!(qjson::to_string(&desc), expected);
    let total = 4 + 24 + 6 + 4 + 3 * 18 + 2 + 1 + 5 + 8 + 8;
    assert_eq!(bytes.len(), total);
}

#[test]
fn counted_array_of_one_element_has_no_array_len() {
    let mut s = Shapes {
        n: 1,
        counted: vec![5],
        ..Default::default()
    };
    let (_, desc) = s.save_described().unwrap();
    let counted = &desc["fields"][9];
    assert_eq!(
        qjson::to_string(counted),
        r#"{"name": "counted", "type": "uint32", "size": 4}"#
    );
}

#[test]
fn description_and_generated_code_agree_on_sizes() {
    // Every fixed-size description predicts exactly what the generated code writes.
    let mut e = Elem::default();
    assert_eq!(
        Elem::DESCRIPTION.fixed_size(),
        Some(e.to_bytes().unwrap().len())
    );
    assert_eq!(ElemWithSub::DESCRIPTION.fixed_size(), None);
    let fields: Vec<_> = Shapes::DESCRIPTION
        .fields
        .iter()
        .map(|f| f.vmdesc_name)
        .collect();
    assert_eq!(
        fields,
        [
            "scalar",
            "regs",
            "unused[0]",
            "structs",
            "loose",
            "unused[1]",
            "n",
            "counted",
            "buf",
            "t",
            "id"
        ]
    );
    assert_eq!(Shapes::DESCRIPTION.subsections[0].name, "shapes/never");
}

/// The configuration section's layout, derived: QEMU's
/// `VMSTATE_UINT32(len, ...)`, `VMSTATE_VBUFFER_ALLOC_UINT32(name, ..., len)`.
#[derive(VmState, Default)]
#[vmstate(name = "configuration", version = 1, min_version = 0)]
struct DerivedConfiguration {
    len: u32,
    #[vmstate(buffer, len = len)]
    name: Vec<u8>,
}

#[test]
fn counted_buffer_is_one_buffer_element_of_its_byte_count() {
    let mut c = DerivedConfiguration {
        len: 4,
        name: b"none".to_vec(),
    };
    let (bytes, desc) = c.save_described().unwrap();
    // The same bytes and vmdesc as the hand-written configuration section (and QEMU).
    let (cfg_bytes, cfg_desc) = vmstate::stream::Configuration::new("none")
        .save_described()
        .unwrap();
    assert_eq!(bytes, cfg_bytes);
    assert_eq!(qjson::to_string(&desc), qjson::to_string(&cfg_desc));
    assert_eq!(
        qjson::to_string(&desc),
        r#"{"vmsd_name": "configuration", "version": 1, "fields": [{"name": "len", "type": "uint32", "size": 4}, {"name": "name", "type": "buffer", "size": 4}]}"#
    );
    // The description says VBUFFER, as the hand-written one does.
    assert_eq!(
        DerivedConfiguration::DESCRIPTION.fields,
        vmstate::stream::Configuration::DESCRIPTION.fields
    );
    assert_eq!(
        DerivedConfiguration::DESCRIPTION.fields[1].count,
        vmstate::Count::Vbuffer {
            len_field: "len",
            len_type: vmstate::LenType::U32
        }
    );
    assert_eq!(DerivedConfiguration::DESCRIPTION.fixed_size(), None);
}

#[test]
fn empty_counted_buffer_still_has_its_entry() {
    // Unlike an empty counted array (no entry), QEMU's VBUFFER is one element of 0 bytes.
    let (bytes, desc) = DerivedConfiguration::default().save_described().unwrap();
    assert_eq!(bytes, [0, 0, 0, 0]);
    assert_eq!(
        qjson::to_string(&desc["fields"][1]),
        r#"{"name": "name", "type": "buffer", "size": 0}"#
    );
}
