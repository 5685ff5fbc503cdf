//! Decoder tests on real QEMU streams (the repository's fixtures), on streams written
//! by the engine, and on mutated bytes (no panic, no hang, exact re-encoding).

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::{StreamConfig, save_snapshot};
use vmstate::{Registration, Registry, VmState};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../compat-tests/fixtures/qemu-10.0.2")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn roundtrip(bytes: &[u8]) -> Stream {
    let s = decode_slice(bytes, DecodeOptions::default()).unwrap();
    let mut out = Vec::new();
    let mut src = bytes;
    let n = encode(&s, &mut out, Some(&mut src)).unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert!(out == bytes, "re-encoding differs");
    s
}

#[test]
fn none_minimal_decodes_field_by_field() {
    let bytes = fixture("none-minimal.mig");
    let s = roundtrip(&bytes);
    assert_eq!(s.machine().as_deref(), Some("none"));
    let kinds: Vec<u8> = s.records.iter().map(Record::type_byte).collect();
    assert_eq!(kinds, [7, 1, 0x7e, 8, 3, 0x7e, 4, 0x7e, 4, 0x7e, 0]);
    assert_eq!(s.trailer.as_ref().unwrap().json.len(), 823);
    let RecordBody::Section(gs) = &s.records[8].body else {
        panic!("globalstate")
    };
    let Payload::Vmsd(v) = &gs.payload else {
        panic!("vmsd")
    };
    assert_eq!(v.field("size"), Some(&Value::Int(10)));
    let json = state_json_string(&s, &DumpOptions::default()).unwrap();
    assert!(
        json.contains("\"runstate\": \"70 72 65 6c 61 75 6e 63 68 00"),
        "{json}"
    );
    assert!(json.starts_with("{\n    \"ram (1)\": {\n        \"section sizes\": {}\n    },"));
}

#[test]
fn pc_minimal_matches_the_script_and_reencodes() {
    let bytes = fixture("pc-minimal.mig");
    let s = roundtrip(&bytes);
    assert_eq!(s.machine().as_deref(), Some("pc-i440fx-10.0"));
    assert_eq!(s.page_counts(), (51, 4175));
    assert_eq!(s.ram_blocks().len(), 6);
    let mut src = &bytes[..];
    let mut out = Vec::new();
    write_state_json(&s, &mut out, Some(&mut src), &DumpOptions::default()).unwrap();
    let ours: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_slice(&fixture("pc-minimal.analyze.json")).unwrap();
    assert_eq!(ours, theirs);
    // Byte for byte, too (the script prints with indent=4 and a final newline).
    assert_eq!(
        String::from_utf8(out).unwrap(),
        String::from_utf8(fixture("pc-minimal.analyze.json")).unwrap()
    );
}

#[test]
fn keep_pages_holds_every_byte() {
    let bytes = fixture("pc-minimal.mig");
    let opts = DecodeOptions {
        keep_pages: true,
        ..Default::default()
    };
    let s = decode_slice(&bytes, opts).unwrap();
    assert_eq!(encode_to_vec(&s).unwrap(), bytes);
    // Without kept pages and without a source, encoding says what is missing.
    let s = decode_slice(&bytes, DecodeOptions::default()).unwrap();
    let e = encode_to_vec(&s).unwrap_err();
    assert!(e.to_string().contains("page source"), "{e}");
}

#[test]
fn file_and_slice_decoding_agree_and_report_progress() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../compat-tests/fixtures/qemu-10.0.2/pc-minimal.mig");
    let mut seen = Vec::new();
    let opts = DecodeOptions {
        progress: Some(Box::new(|p| seen.push(p))),
        ..Default::default()
    };
    let a = decode_file(&p, opts).unwrap();
    let b = decode_slice(&fixture("pc-minimal.mig"), DecodeOptions::default()).unwrap();
    assert_eq!(a.records.len(), b.records.len());
    assert_eq!(a.len, b.len);
    assert_eq!(seen.last(), Some(&358_982));
}

#[test]
fn truncated_stream_names_record_and_offset() {
    let bytes = fixture("pc-minimal.mig");
    // Cut inside the cpu section (0x3c5f6..0x3cd42): the trailer is gone, so the
    // decoder says it has no vmdesc; keep the trailer and break the section instead.
    let mut broken = bytes.clone();
    // The FULL 'timer' section at 0x3c5a1: make its footer id wrong.
    let footer = 0x3c5cc;
    assert_eq!(broken[footer], 0x7e);
    broken[footer + 4] ^= 0xff;
    let e = decode_slice(&broken, DecodeOptions::default()).unwrap_err();
    assert!(e.to_string().contains("mismatched section footer"), "{e}");
    assert_eq!(e.offset(), Some(footer as u64));
    // A bad subsection marker inside fw_cfg names the section and the offset.
    let mut broken = bytes.clone();
    let (s, _) = decode_slice_partial(&bytes, DecodeOptions::default());
    let fw = s
        .records
        .iter()
        .find(|r| matches!(&r.body, RecordBody::Section(s) if s.header.kind.has_full_header() && s.header.idstr == "fw_cfg"))
        .unwrap();
    // fw_cfg: header 20 bytes, then cur_entry (2), cur_offset (4), then subsection.
    let sub_at = (fw.offset + 20 + 2 + 4) as usize;
    assert_eq!(broken[sub_at], 5);
    broken[sub_at] = 9;
    let e = decode_slice(&broken, DecodeOptions::default()).unwrap_err();
    assert_eq!(e.section().map(|s| s.idstr.as_str()), Some("fw_cfg"), "{e}");
    assert_eq!(e.offset(), Some(sub_at as u64), "{e}");
    assert!(e.kind().to_string().contains("fw_cfg/dma"), "{e}");
}

#[test]
fn field_path_is_reported() {
    let bytes = fixture("pc-minimal.mig");
    // A nullptr-typed field would need '0'; easier: make the RAM CONTINUE chain break.
    // Instead corrupt the bool-free 'ide' section so a nested subsection marker is
    // wrong and check the path names the struct field.
    let (s, _) = decode_slice_partial(&bytes, DecodeOptions::default());
    let ide = s
        .records
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Section(sec)
                if sec.header.kind.has_full_header() && sec.header.idstr.ends_with("/ide") =>
            {
                Some((r.offset, sec))
            }
            _ => None,
        })
        .unwrap();
    let Payload::Vmsd(v) = &ide.1.payload else {
        panic!()
    };
    assert!(v.field("bmdma").is_some());
    // Truncating the JSON-described payload: cut the stream in the middle of ide and
    // glue the original trailer back on, so the decoder still has its vmdesc.
    let t = s.trailer.as_ref().unwrap();
    let cut = ide.0 as usize + 200;
    let mut broken = bytes[..cut].to_vec();
    broken.push(0);
    broken.extend_from_slice(&bytes[t.offset as usize..]);
    let e = decode_slice(&broken, DecodeOptions::default()).unwrap_err();
    assert_eq!(e.section().unwrap().idstr, "0000:00:01.1/ide", "{e}");
    assert!(!e.path().is_empty(), "{e}");
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    a: u32,
    b: i16,
    flag: bool,
    buf: [u8; 5],
}

fn engine_stream(ram_pages: usize) -> Vec<u8> {
    let mut reg = Registry::new();
    let ram = Arc::new(RamBlock::new("pc.ram", (ram_pages * 4096) as u64).unwrap());
    for p in 0..ram_pages {
        if p % 3 == 0 {
            ram.write((p * 4096) as u64, &[p as u8 + 1; 64]);
        }
    }
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![ram]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg.register_device(
        Dev {
            a: 7,
            b: -2,
            flag: true,
            buf: *b"hello",
        },
        Registration::new(),
    )
    .unwrap();
    let mut out = Vec::new();
    save_snapshot(&mut reg, &mut out, StreamConfig::new("demo-1.0")).unwrap();
    out
}

#[test]
fn engine_streams_round_trip() {
    let bytes = engine_stream(40);
    let s = roundtrip(&bytes);
    let (full, zero) = s.page_counts();
    assert_eq!(full + zero, 40);
    assert_eq!(full, 14);
    let json = state_json_string(&s, &DumpOptions::default()).unwrap();
    assert!(json.contains("\"b\": \"0xfffe (-2)\""), "{json}");
    assert!(json.contains("\"flag\": true"), "{json}");
    // A `[u8; 5]` is described as an array of uint8, so the script shows a list.
    assert!(
        json.contains("\"buf\": [\n            \"0x68\",\n"),
        "{json}"
    );
    let opts = DecodeOptions {
        keep_pages: true,
        ..Default::default()
    };
    let s = decode_slice(&bytes, opts).unwrap();
    let json = state_json_string(
        &s,
        &DumpOptions {
            memory: true,
            ..Default::default()
        },
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ram_key = v
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with("ram ("))
        .unwrap();
    let mem = v[ram_key]["memory"].as_object().unwrap();
    assert_eq!(mem.len(), 40);
    assert_eq!(mem["pc.ram (0x0000000000001000)"], "Filled with 0x00");
    assert!(
        mem["pc.ram (0x0000000000000000)"]
            .as_str()
            .unwrap()
            .starts_with("01 01 01")
    );
}

/// A small deterministic generator (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Lcg, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match rng.below(6) {
        0 => {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        2 => {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        3 => {
            let i = rng.below(b.len());
            let n = rng.below(16).min(b.len() - i);
            b.drain(i..i + n);
        }
        4 => {
            let i = rng.below(b.len());
            for _ in 0..rng.below(8) + 1 {
                b.insert(i, rng.next() as u8);
            }
        }
        _ => {
            // Interesting values over a word.
            let i = rng.below(b.len().saturating_sub(4));
            let v: [u8; 4] =
                [[0xff; 4], [0; 4], [0x7f, 0xff, 0xff, 0xff], [0, 0, 0, 1]][rng.below(4)];
            b[i..i + 4].copy_from_slice(&v);
        }
    }
    b
}

/// Decodes `b`; if it decodes, the tree must re-encode to exactly `b`.
fn check_no_panic(b: &[u8]) {
    let opts = DecodeOptions {
        max_values: 1 << 20,
        ..Default::default()
    };
    if let Ok(s) = decode_slice(b, opts) {
        let mut out = Vec::new();
        let mut src = b;
        encode(&s, &mut out, Some(&mut src)).unwrap();
        assert!(out == b, "a decoded mutation does not re-encode exactly");
        let mut sink = Vec::new();
        write_state_json(
            &s,
            &mut sink,
            Some(&mut src),
            &DumpOptions {
                memory: true,
                ..Default::default()
            },
        )
        .unwrap();
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Lcg(0x5eed);
    let small = fixture("none-minimal.mig");
    for _ in 0..3000 {
        let m = mutate(&mut rng, &small);
        check_no_panic(&m);
        let m2 = mutate(&mut rng, &m);
        check_no_panic(&m2);
    }
    let engine = engine_stream(8);
    for _ in 0..1500 {
        check_no_panic(&mutate(&mut rng, &engine));
    }
    // The pc stream is larger: mutate only its device and JSON parts, fewer times.
    let pc = fixture("pc-minimal.mig");
    for _ in 0..150 {
        check_no_panic(&mutate(&mut rng, &pc));
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_after_a_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut b = b"QEVM\0\0\0\x03".to_vec();
            b.extend(tail);
            check_no_panic(&b);
        }

        #[test]
        fn arbitrary_json_trailers_never_panic(json in "\\{(\"[a-z_]{1,8}\": (\\[\\]|[0-9]{1,3}|\\{\\}|\"[a-z0-9 ]{0,6}\")(, )?){0,6}\\}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = b"QEVM\0\0\0\x03".to_vec();
            b.extend(body);
            b.push(0);
            b.push(6);
            b.extend((json.len() as u32).to_be_bytes());
            b.extend(json.as_bytes());
            check_no_panic(&b);
        }

        #[test]
        fn engine_streams_with_a_flipped_byte_never_panic(pos in any::<prop::sample::Index>(), val in any::<u8>()) {
            let mut b = engine_stream(4);
            let i = pos.index(b.len());
            b[i] = val;
            check_no_panic(&b);
        }
    }
}

/// A FULL section "dev" with every kind of entry the vmdesc can describe, built by
/// hand: a qtailq (duplicate keys), tmp and vstruct (inline keys), a split pointer
/// array, uncompressed struct array elements with a nested subsection, integers of
/// unusual sizes, and a section subsection.
fn synthetic_stream() -> Vec<u8> {
    let json = r#"{"page_size": 4096, "devices": [{"name": "dev", "instance_id": 0, "vmsd_name": "dev", "version": 1, "fields": [
        {"name": "q", "type": "qtailq", "vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint16", "size": 2}], "vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint16", "size": 2}], "size": 7},
        {"name": "tmp", "type": "tmp", "vmsd_name": "t", "version": 0, "fields": [{"name": "a", "type": "uint8", "size": 1}, {"name": "b", "type": "int32 le", "size": 4}], "size": 5},
        {"name": "p", "array_len": 2, "type": "nullptr", "size": 1},
        {"name": "p", "type": "uint8", "size": 1},
        {"name": "v", "type": "vstruct", "vmsd_name": "vs", "version": 2, "fields": [{"name": "y", "type": "uint32", "size": 4}], "size": 4},
        {"name": "s", "index": 0, "type": "struct", "struct": {"vmsd_name": "el", "version": 1, "fields": [{"name": "z", "type": "bool", "size": 1}], "subsections": [{"vmsd_name": "el/sub", "version": 1, "fields": [{"name": "w", "type": "int8", "size": 1}]}]}, "size": 13},
        {"name": "s", "type": "struct", "struct": {"vmsd_name": "el", "version": 1, "fields": [{"name": "z", "type": "bool", "size": 1}]}, "size": 1},
        {"name": "odd", "type": "uint32", "size": 3},
        {"name": "big", "type": "int64", "size": 10},
        {"name": "cap", "type": "capability", "size": 9}
    ], "subsections": [{"vmsd_name": "dev/extra", "version": 3, "fields": [{"name": "e", "type": "uint64", "size": 8}]}]}]}"#;
    let mut b = b"QEVM\0\0\0\x03".to_vec();
    b.extend([4, 0, 0, 0, 0, 3]);
    b.extend(b"dev");
    b.extend([0, 0, 0, 0, 0, 0, 0, 1]);
    b.extend([1, 0, 5, 1, 0, 6, 0]); // q
    b.extend([9, 0xff, 0xff, 0xff, 0xfe]); // tmp
    b.extend(b"00"); // p[0], p[1]
    b.push(7); // p (uint8)
    b.extend([0, 0, 0, 42]); // v
    b.push(1); // s[0].z
    b.extend([5, 6]);
    b.extend(b"el/sub");
    b.extend([0, 0, 0, 1, 0xff]); // s[0] subsection
    b.push(0); // s[1].z
    b.extend([1, 2, 3]); // odd
    b.extend([0xff; 10]); // big
    b.push(8);
    b.extend(b"x-colo-1"); // cap
    b.extend([5, 9]);
    b.extend(b"dev/extra");
    b.extend([0, 0, 0, 3]);
    b.extend(0x1122_3344_5566_7788u64.to_be_bytes());
    b.extend([0x7e, 0, 0, 0, 0, 0]); // footer, EOF
    b.push(6);
    b.extend((json.len() as u32).to_be_bytes());
    b.extend(json.as_bytes());
    b
}

#[test]
fn every_entry_kind_decodes_and_reencodes() {
    let bytes = synthetic_stream();
    let s = roundtrip(&bytes);
    let RecordBody::Section(sec) = &s.records[0].body else {
        panic!()
    };
    let Payload::Vmsd(v) = &sec.payload else {
        panic!()
    };
    // The qtailq's two elements, each with its own (duplicate-key) description.
    let Some(Value::Inline(q)) = v.field("q") else {
        panic!("{v:?}")
    };
    let el = q.elements.as_ref().expect("qtailq elements decoded");
    assert_eq!(el.len(), 2);
    assert_eq!(el[1].field("x"), Some(&Value::Int(6)));
    let Some(Value::Inline(t)) = v.field("tmp") else {
        panic!()
    };
    assert_eq!(
        t.elements.as_ref().unwrap()[0].field("b"),
        Some(&Value::Int(0xffff_fffe))
    );
    let Some(Value::Inline(vs)) = v.field("v") else {
        panic!()
    };
    assert_eq!(
        vs.elements.as_ref().unwrap()[0].field("y"),
        Some(&Value::Int(42))
    );
    assert_eq!(v.subsection("dev/extra").unwrap().version, 3);

    let json = state_json_string(&s, &DumpOptions::default()).unwrap();
    let got: serde_json::Value = serde_json::from_str(&json).unwrap();
    let want = serde_json::json!({"dev (0)": {
        "q": "01 00 05 01 00 06 00",
        "tmp": "09 ff ff ff fe",
        "p": ["nullptr", "nullptr", "0x07"],
        "v": "00 00 00 2a",
        "s": [{"z": true, "el/sub": {"w": "0xff (-1)"}}, {"z": false}],
        "odd": "0x010203",
        "big": "0xffffffffffffffffffff (-1)",
        "cap": "x-colo-1",
        "dev/extra": {"e": "0x1122334455667788"}
    }});
    assert_eq!(got, want, "{json}");
}

#[test]
fn wrong_nullptr_marker_and_subsection_are_errors_with_paths() {
    let bytes = synthetic_stream();
    // p[1] is at 8 + 17 (section header) + 7 + 5 + 1.
    let at = 8 + 17 + 7 + 5 + 1;
    assert_eq!(bytes[at], b'0');
    let mut b = bytes.clone();
    b[at] = 0;
    let e = decode_slice(&b, DecodeOptions::default()).unwrap_err();
    assert_eq!(e.path(), "p[1]");
    assert_eq!(e.offset(), Some(at as u64));
    let section = e.section().unwrap();
    assert_eq!(
        (section.idstr.as_str(), section.instance_id),
        ("dev", 0),
        "{e}"
    );
    // s[0]'s subsection marker.
    let at = 8 + 17 + 7 + 5 + 2 + 1 + 4 + 1;
    assert_eq!(bytes[at], 5);
    let mut b = bytes.clone();
    b[at] = 4;
    let e = decode_slice(&b, DecodeOptions::default()).unwrap_err();
    assert_eq!(e.path(), "s[0]");
    assert!(e.kind().to_string().contains("el/sub"), "{e}");
}

#[test]
fn page_records_follow_qemu_rules() {
    // A RAM section by hand: block list, a named zero page, CONTINUE pages, EOS.
    let json = br#"{"page_size": 4096, "devices": []}"#;
    let mut b = b"QEVM\0\0\0\x03".to_vec();
    b.extend([1, 0, 0, 0, 1, 3]);
    b.extend(b"ram");
    b.extend([0, 0, 0, 0, 0, 0, 0, 4]);
    b.extend((0x3000u64 | 4).to_be_bytes());
    b.push(2);
    b.extend(b"ab");
    b.extend(0x3000u64.to_be_bytes());
    b.extend(2u64.to_be_bytes()); // zero page, named
    b.push(2);
    b.extend(b"ab");
    b.push(0);
    b.extend((0x1000u64 | 0x28).to_be_bytes()); // PAGE|CONTINUE
    b.extend([0xab; 4096]);
    b.extend((0x2000u64 | 0x28).to_be_bytes());
    b.extend([0xcd; 4096]);
    b.extend(0x10u64.to_be_bytes());
    b.extend([0x7e, 0, 0, 0, 1, 0, 6]);
    b.extend((json.len() as u32).to_be_bytes());
    b.extend(json);
    let s = roundtrip(&b);
    assert_eq!(s.page_counts(), (2, 1));
    let runs: Vec<&PageRun> = s
        .ram_records()
        .filter_map(|r| match r {
            RamRecord::Pages(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[1].addr, runs[1].count, runs[1].named),
        (0x1000, 2, false)
    );
    // A page beyond the block, a non-zero fill byte, an unknown block: errors.
    // Header 8, START header 17, MEM_SIZE word 8 and block 11: the zero page's word
    // is at 44, its name at 52, its fill byte at 55, the next word at 56.
    for (at, val, what) in [
        (61, 0x30u8, "outside RAM block"),
        (55, 1, "fill byte"),
        (53, b'x', "not in the block list"),
    ] {
        let mut m = b.clone();
        m[at] = val;
        let e = decode_slice(&m, DecodeOptions::default()).unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
        assert_eq!(e.path(), "ram", "{e}");
    }
}
