//! The `vmstate` binary on the real QEMU 10.0.2 streams of the fixtures.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, vmstate};
use sha3::Shake256;
use sha3::digest::{ExtendableOutput, Update, XofReader};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../compat-tests/fixtures/qemu-10.0.2")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Every stream in the fixtures.
fn streams() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mig"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "expected the three QEMU streams, found {v:?}");
    v
}

#[test]
fn dump_equals_the_analyze_migration_reference() {
    for name in ["pc-minimal", "pc-ramdata"] {
        let out = ok(&["dump", p(&fixture(&format!("{name}.mig")))]);
        let reference = std::fs::read_to_string(fixture(&format!("{name}.analyze.json"))).unwrap();
        let ours: serde_json::Value = serde_json::from_str(&out).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&reference).unwrap();
        assert_eq!(
            ours, theirs,
            "{name}: dump differs from analyze-migration.py"
        );
        // Same key order and formatting too, so a plain diff shows nothing.
        assert_eq!(out, reference, "{name}: not byte-identical");
    }
}

#[test]
fn dump_of_the_none_stream() {
    let out = ok(&["dump", p(&fixture("none-minimal.mig"))]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ram (1)", "timer (0)", "globalstate (3)"]);
    assert_eq!(v["globalstate (3)"]["size"], "0x0000000a");
    assert_eq!(v["timer (0)"]["unused"], "00 00 00 00 00 00 00 00");
    assert_eq!(v["ram (1)"]["section sizes"], serde_json::json!({}));
}

#[test]
fn dump_memory_shows_every_page() {
    let mig = fixture("pc-minimal.mig");
    let bytes = std::fs::read(&mig).unwrap();
    let out = ok(&["dump", "--memory", p(&mig)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mem = v["ram (1)"]["memory"].as_object().unwrap();
    // QEMU's query-migrate: 51 full pages, 4175 zero pages.
    assert_eq!(mem.len(), 51 + 4175);
    let zero = mem.values().filter(|x| *x == "Filled with 0x00").count();
    assert_eq!(zero, 4175);
    // Each full page's hex is the 4096 bytes that follow its record in the file.
    for (k, val) in mem {
        let Some(hex) = val.as_str().filter(|s| *s != "Filled with 0x00") else {
            continue;
        };
        let page: Vec<u8> = hex
            .split(' ')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        assert_eq!(page.len(), 4096, "{k}");
        assert!(
            bytes.windows(4096).any(|w| w == page.as_slice()),
            "{k}: page not found in the stream"
        );
        break;
    }
    // The state part is unchanged by --memory.
    let plain: serde_json::Value = serde_json::from_str(&ok(&["dump", p(&mig)])).unwrap();
    assert_eq!(v["cpu (4)"], plain["cpu (4)"]);
}

#[test]
fn dump_desc_prints_the_vmdesc() {
    let out = ok(&["dump", "--desc", p(&fixture("pc-minimal.mig"))]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["page_size"], 4096);
    assert_eq!(v["devices"].as_array().unwrap().len(), 30);
    assert!(
        out.starts_with("{\n    \"configuration\": {\n        \"vmsd_name\": \"configuration\",")
    );
}

#[test]
fn dump_writes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("state.json");
    ok(&["dump", p(&fixture("pc-minimal.mig")), "-o", p(&o)]);
    let reference = std::fs::read_to_string(fixture("pc-minimal.analyze.json")).unwrap();
    assert_eq!(std::fs::read_to_string(&o).unwrap(), reference);
}

#[test]
fn rewrite_is_byte_identical_for_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    for mig in streams() {
        let out = dir.path().join("out.mig");
        ok(&["rewrite", p(&mig), p(&out)]);
        assert!(
            std::fs::read(&mig).unwrap() == std::fs::read(&out).unwrap(),
            "{}: rewrite is not byte-identical",
            mig.display()
        );
    }
}

#[test]
fn rewrite_refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.mig");
    std::fs::copy(fixture("none-minimal.mig"), &f).unwrap();
    let out = vmstate(&["rewrite", p(&f), p(&f)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read(&f).unwrap(),
        std::fs::read(fixture("none-minimal.mig")).unwrap()
    );
}

#[test]
fn verify_accepts_every_fixture() {
    for mig in streams() {
        let out = ok(&["verify", p(&mig)]);
        assert!(out.contains(": OK: "), "{out}");
    }
    let out = ok(&["verify", p(&fixture("pc-ramdata.mig"))]);
    assert!(out.contains("1971 full pages, 14543 zero pages"), "{out}");
}

#[test]
fn verify_names_record_field_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("pc-minimal.mig")).unwrap();
    // fw_cfg (FULL section 10 at 0x3d047, header 20 bytes): cur_entry (2 bytes),
    // cur_offset (4 bytes), then its subsection "fw_cfg/dma" whose marker we break.
    let at = 0x3d047 + 20 + 6;
    assert_eq!(bytes[at], 0x05);
    let mut broken = bytes.clone();
    broken[at] = 0x09;
    let f = dir.path().join("broken.mig");
    std::fs::write(&f, &broken).unwrap();
    let out = vmstate(&["verify", p(&f)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("FULL section 10 'fw_cfg' instance 0"), "{err}");
    assert!(err.contains("fw_cfg/dma"), "{err}");
    assert!(
        err.contains(&format!("at byte offset {at} (0x{at:x})")),
        "{err}"
    );

    // A field inside a nested struct: the ide section's payload cut short (the
    // trailer kept), so a field of a struct runs out.
    let ide = 0x3d27f;
    let mut cut = bytes[..ide + 300].to_vec();
    cut.push(0);
    let trailer = 0x3f7db;
    cut.extend_from_slice(&bytes[trailer..]);
    std::fs::write(&f, &cut).unwrap();
    let out = vmstate(&["verify", p(&f)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("'0000:00:01.1/ide'"), "{err}");
    assert!(err.contains("field "), "{err}");
    assert!(err.contains("byte offset"), "{err}");
}

#[test]
fn verify_reports_a_section_without_the_footer_the_others_have() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("pc-minimal.mig")).unwrap();
    // The FULL 'timer' section at 0x3c5a1: drop its footer (0x7e + be32 id).
    let footer = 0x3c5cc;
    assert_eq!(bytes[footer], 0x7e);
    bytes.drain(footer..footer + 5);
    let f = dir.path().join("no-footer.mig");
    std::fs::write(&f, &bytes).unwrap();
    let out = vmstate(&["verify", p(&f)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("missing section footer"), "{err}");
    assert!(err.contains("'timer' instance 0"), "{err}");
    assert!(
        err.contains(&format!("at byte offset {footer} (0x{footer:x})")),
        "{err}"
    );
}

#[test]
fn corrupted_inputs_never_crash_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.mig");
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for name in ["none-minimal.mig", "pc-minimal.mig"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let n = bytes.len();
        for cut in [0, 1, 4, 8, 9, 12, 30, n / 3, n / 2, n - 900, n - 1] {
            cases.push(bytes[..cut].to_vec());
        }
        let mut x = 0x1234_5678u64;
        for _ in 0..12 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = bytes.clone();
            let i = (x % n as u64) as usize;
            b[i] = b[i].wrapping_add((x >> 32) as u8 | 1);
            cases.push(b);
        }
    }
    cases.push(b"not a migration stream at all".to_vec());
    cases.push(Vec::new());
    for (i, case) in cases.iter().enumerate() {
        std::fs::write(&f, case).unwrap();
        for cmd in ["verify", "info", "dump"] {
            let out = vmstate(&[cmd, p(&f)]);
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(1),
                "case {i}: vmstate {cmd} exited with {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if code == Some(1) {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.starts_with("error: "), "case {i}: {err}");
                assert!(!err.contains("panicked"), "case {i}: {err}");
            }
        }
    }
}

#[test]
fn info_lists_records_like_the_section_map() {
    let out = ok(&["info", p(&fixture("pc-minimal.mig"))]);
    assert!(out.contains("machine    pc-i440fx-10.0"), "{out}");
    assert!(out.contains("page size  4096"), "{out}");
    assert!(out.contains("51 full pages, 4175 zero pages"), "{out}");
    assert!(
        out.contains("sections   31 (1 iterative, 30 devices)"),
        "{out}"
    );
    // Offsets and lengths as in pc-minimal.sections.txt.
    let map = std::fs::read_to_string(fixture("pc-minimal.sections.txt")).unwrap();
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("0x")).collect();
    let expected: Vec<(String, String)> = map
        .lines()
        .filter(|l| l.starts_with("0x"))
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            )
        })
        .collect();
    // Our table has the 8-byte header as a first row.
    assert_eq!(rows.len(), expected.len() + 1);
    for (row, (off, len)) in rows[1..].iter().zip(&expected) {
        let mut it = row.split_whitespace();
        assert_eq!(it.next().unwrap(), off, "{row}");
        assert_eq!(it.next().unwrap(), len, "{row}");
    }
    assert!(
        out.contains(
            "0x0003d27f        460  SECTION_FULL       14        0       3  0000:00:01.1/ide"
        ),
        "{out}"
    );
    assert!(out.contains("COMMAND                                 SWITCHOVER_START (11), 0 bytes"));
    assert!(out.contains("VMDESCRIPTION                           98918 bytes of JSON"));
}

/// The pc-ramdata payload, regenerated independently: SHAKE-256("ramdata-v1"),
/// 8 MiB, page i%16==5 zeroed, i%16==9 filled with 0xA5, a text header on page 0.
fn ramdata_payload() -> Vec<u8> {
    let mut h = Shake256::default();
    h.update(b"ramdata-v1");
    let mut data = vec![0u8; 8 << 20];
    h.finalize_xof().read(&mut data);
    for (i, page) in data.chunks_mut(4096).enumerate() {
        match i % 16 {
            5 => page.fill(0),
            9 => page.fill(0xa5),
            _ => {}
        }
    }
    let text = b"QEMU-MIGRATION-TEST-VECTOR ramdata seed=ramdata-v1\n";
    data[..text.len()].copy_from_slice(text);
    data
}

#[test]
fn extract_writes_each_ram_block() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["extract", p(&fixture("pc-ramdata.mig")), p(dir.path())]);
    assert!(out.lines().any(|l| l == "pc.ram"), "{out}");
    let sizes = [
        ("pc.ram", 64 << 20),
        ("rom@etc/acpi/tables", 0x20000),
        ("pc.bios", 0x40000),
        ("pc.rom", 0x20000),
        ("rom@etc/table-loader", 0x1000),
        ("rom@etc/acpi/rsdp", 0x1000),
    ];
    for (name, size) in sizes {
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert_eq!(len, size, "{name}");
    }
    let ram = std::fs::read(dir.path().join("pc.ram")).unwrap();
    let payload = ramdata_payload();
    assert!(
        ram[0x100000..0x100000 + payload.len()] == payload[..],
        "pc.ram at 0x100000 is not the known payload"
    );
    // desc.json and state.json as the script's -x writes them.
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert_eq!(
        state,
        std::fs::read_to_string(fixture("pc-ramdata.analyze.json")).unwrap()
    );
    let desc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("desc.json")).unwrap())
            .unwrap();
    assert_eq!(desc["page_size"], 4096);
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in ["info", "dump", "extract", "verify", "rewrite"] {
        let out = ok(&[cmd, "--help"]);
        assert!(out.contains("Examples:"), "{cmd}: {out}");
        assert!(out.contains(&format!("vmstate {cmd}")), "{cmd}: {out}");
    }
    let out = ok(&["--help"]);
    for cmd in ["info", "dump", "extract", "verify", "rewrite"] {
        assert!(out.contains(cmd), "{out}");
    }
    // Usage errors are clap's status 2, not a crash.
    assert_eq!(vmstate(&["dump"]).status.code(), Some(2));
    assert_eq!(vmstate(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn missing_file_is_a_clean_error() {
    let out = vmstate(&["verify", "/nonexistent/file.mig"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.mig"));
}

// ---- check ----

/// QEMU's own checker output for the first run recorded in the fixture (7.2 -> 10.0.2):
/// its problem lines, and its exit code.
fn qemu_checker_forward() -> (Vec<String>, i32) {
    let text = std::fs::read_to_string(fixture("static-checker-qemu7.2-to-qemu10.txt")).unwrap();
    let mut lines = Vec::new();
    for line in text.lines().skip_while(|l| !l.starts_with("$ ")).skip(1) {
        if let Some(code) = line.strip_prefix("[exit ") {
            return (lines, code.trim_end_matches(']').parse().unwrap());
        }
        if !line.starts_with("Warning:") {
            lines.push(line.to_string());
        }
    }
    panic!("no exit line in the fixture");
}

#[test]
fn check_on_the_real_qemu_dumps_reports_what_qemus_checker_reports() {
    let old = fixture("vmstate-pc-qemu7.2.json");
    let new = fixture("vmstate-pc-qemu10.0.2.json");
    let out = vmstate(&["check", "--qemu", p(&old), p(&new)]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ours: Vec<&str> = stdout.lines().collect();
    let (qemus, qemu_exit) = qemu_checker_forward();
    assert_eq!(
        ours, qemus,
        "--qemu reproduces QEMU's checker line for line"
    );
    assert_eq!(
        out.status.code(),
        Some(qemu_exit),
        "exit code = problem count, as QEMU's"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pc-i440fx-7.2"));
    // With the added rules there is at least as much, and --json parses.
    let json = vmstate(&["check", "--json", p(&old), p(&new)]);
    let problems: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(problems.as_array().unwrap().len() >= ours.len());
    let reverse = vmstate(&["check", "--qemu", "--reverse", p(&old), p(&new)]);
    assert!(reverse.status.code().unwrap() > 0);
}

#[test]
fn check_of_identical_dumps_exits_zero_and_bad_input_is_an_error() {
    let new = fixture("vmstate-pc-qemu10.0.2.json");
    let out = vmstate(&["check", p(&new), p(&new)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let bad = vmstate(&["check", p(&fixture("pc-minimal.mig")), p(&new)]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not JSON"));
}

/// A snapshot of the demo machine, with or without the integrity record.
fn demo_snapshot(with_record: bool) -> Vec<u8> {
    let mut config = vmstate::stream::StreamConfig::new(compat_tests::evolving::r3_0::MACHINE);
    config.integrity_record = with_record;
    let mut out = Vec::new();
    let mut reg = compat_tests::evolving::r3_0::Machine::busy().registry();
    vmstate::stream::save_snapshot(&mut reg, &mut out, config).unwrap();
    out
}

#[test]
fn info_and_verify_check_the_integrity_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.mig");
    std::fs::write(&path, demo_snapshot(true)).unwrap();
    let info = ok(&["info", p(&path)]);
    assert!(info.contains("integrity  valid (CRC32C 0x"), "{info}");
    assert!(info.contains("INTEGRITY"), "{info}");
    assert!(ok(&["verify", p(&path)]).contains("integrity record valid"));

    let mut bytes = demo_snapshot(true);
    bytes[40] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let out = vmstate(&["verify", p(&path)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("integrity record: CRC32C mismatch"), "{err}");
    let info = vmstate(&["info", p(&path)]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("integrity  CRC32C mismatch"));

    std::fs::write(&path, demo_snapshot(false)).unwrap();
    assert!(ok(&["info", p(&path)]).contains("integrity  absent"));
    // QEMU's own streams have no record and verify as before.
    assert!(ok(&["verify", p(&fixture("none-minimal.mig"))]).contains("integrity record absent"));
}

#[test]
fn verify_reports_a_missing_configuration_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noconf.mig");
    let mut config = vmstate::stream::StreamConfig::new("demo-3.0");
    config.send_configuration = false;
    let mut out = Vec::new();
    let mut reg = compat_tests::evolving::r3_0::Machine::busy().registry();
    vmstate::stream::save_snapshot(&mut reg, &mut out, config).unwrap();
    std::fs::write(&path, out).unwrap();
    let res = vmstate(&["verify", p(&path)]);
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("no configuration section"), "{err}");
}

/// `pc-minimal.mig` with every occurrence of `from` replaced by `to` (same length).
fn edited_pc_minimal(dir: &Path, from: &[u8], to: &[u8]) -> PathBuf {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(fixture("pc-minimal.mig")).unwrap();
    let mut n = 0;
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from) {
        bytes[at + i..at + i + to.len()].copy_from_slice(to);
        at += i + to.len();
        n += 1;
    }
    assert!(n > 0, "nothing to edit");
    let path = dir.join("edited.mig");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn verify_against_a_schema_reports_what_that_machine_would_refuse() {
    let schema10 = fixture("vmstate-pc-qemu10.0.2.json");
    let schema72 = fixture("vmstate-pc-qemu7.2.json");
    let stream = fixture("pc-minimal.mig");
    // The unedited stream is what QEMU 10.0.2's pc accepts.
    let out = ok(&["verify", "--against", p(&schema10), p(&stream)]);
    assert!(out.contains("22 sections checked"), "{out}");
    // QEMU 7.2's hpet has no `num_timers_save` (QEMU's own checker reports the rename).
    let res = vmstate(&["verify", "--against", p(&schema72), p(&stream)]);
    assert!(!res.status.success());
    let out = String::from_utf8_lossy(&res.stdout);
    assert!(
        out.contains("hpet (instance 0): hpet/num_timers_save: not in the schema's description"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    // The RTC's section version raised from 3 to 4 (its header: idstr, instance, version).
    let mut header = b"\x0bmc146818rtc\0\0\0\0\0\0\0".to_vec();
    header.push(3);
    let mut raised = header.clone();
    *raised.last_mut().unwrap() = 4;
    let edited = edited_pc_minimal(dir.path(), &header, &raised);
    let res = vmstate(&["verify", "--against", p(&schema10), p(&edited)]);
    let out = String::from_utf8_lossy(&res.stdout);
    assert!(
        out.contains("mc146818rtc (instance 0): section version 4 is newer than the schema's 3"),
        "{out}"
    );
    assert!(!res.status.success());

    // A subsection QEMU 10.0.2's fw_cfg does not have (renamed in stream and vmdesc).
    let edited = edited_pc_minimal(dir.path(), b"fw_cfg/acpi_mr", b"fw_cfg/acpi_mx");
    let res = vmstate(&["verify", "--against", p(&schema10), p(&edited)]);
    let out = String::from_utf8_lossy(&res.stdout);
    assert!(
        out.contains("subsection 'fw_cfg/acpi_mx' is not one the schema's description has"),
        "{out}"
    );
    assert!(!res.status.success());

    // A footer removed: a structural error, with or without a schema.
    let bytes = std::fs::read(&stream).unwrap();
    let footer = 0x3c5cc; // timer's footer (pc-minimal.sections.txt)
    assert_eq!(bytes[footer], 0x7e);
    let cut = [&bytes[..footer], &bytes[footer + 5..]].concat();
    let path = dir.path().join("nofooter.mig");
    std::fs::write(&path, cut).unwrap();
    let res = vmstate(&["verify", "--against", p(&schema10), p(&path)]);
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("footer"));
}

/// A `-M none` stream from our XBZRLE sender: the first pass whole, then two rounds in
/// which 8 bytes of each of 16 pages changed, sent as XBZRLE records.
fn xbzrle_stream() -> Vec<u8> {
    use vmstate::stream::{SaveSession, StreamConfig};
    let (mut reg, ram, _) = compat_tests::destination::none_with_xbzrle(1 << 20, 1 << 20);
    ram.write(0, &[0x5a; 16 * 4096]);
    let mut out = Vec::new();
    {
        let mut s = SaveSession::new(&mut reg, &mut out, StreamConfig::new("none"));
        s.setup().unwrap();
        let mut round = || while s.iterate(u64::MAX).unwrap() == vmstate::IterationStatus::More {};
        round();
        for r in 1..3u64 {
            for page in 0..16u64 {
                ram.write_u64(page * 4096 + r * 8, r << 32 | page);
            }
            round();
        }
        s.complete().unwrap();
    }
    out
}

#[test]
fn info_dump_and_verify_read_xbzrle_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xbzrle.mig");
    std::fs::write(&path, xbzrle_stream()).unwrap();
    let info = ok(&["info", p(&path)]);
    assert!(
        info.contains("16 full pages, 240 zero pages, 32 XBZRLE pages"),
        "{info}"
    );
    assert!(info.contains("16 XBZRLE pages"), "the rounds' rows: {info}");
    // The memory dump shows each page as the destination ends up with it: the full
    // page, then the XBZRLE records' changes.
    let dump: serde_json::Value =
        serde_json::from_str(&ok(&["dump", "--memory", p(&path)])).unwrap();
    let memory = &dump["ram (1)"]["memory"];
    for page in [0u64, 7, 15] {
        let mut expected = vec![0x5au8; 4096];
        for round in 1..3u64 {
            let at = (round * 8) as usize;
            expected[at..at + 8].copy_from_slice(&(round << 32 | page).to_le_bytes());
        }
        let hex: Vec<String> = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            memory[format!("ram (0x{:016x})", page * 4096)],
            hex.join(" "),
            "page {page}"
        );
    }
    assert_eq!(memory["ram (0x0000000000010000)"], "Filled with 0x00");
    let verify = ok(&["verify", p(&path)]);
    assert!(verify.contains("OK"), "{verify}");
}

#[test]
fn info_and_dump_read_the_main_channel_of_a_qemu_multifd_migration() {
    let main = fixtures().join("../qemu-10.0.2-multifd/main.mig");
    let info = ok(&["info", p(&main)]);
    assert!(
        info.contains("SECTION_START       1        0       4  ram: 1 RAM blocks; multifd flush"),
        "{info}"
    );
    assert!(
        info.contains("ram: 0 pages, 0 zero pages; multifd flush"),
        "{info}"
    );
    let dump: serde_json::Value = serde_json::from_str(&ok(&["dump", p(&main)])).unwrap();
    assert_eq!(
        dump["ram (1)"]["section sizes"]["ram"],
        "0x0000000000400000"
    );
    assert!(ok(&["verify", p(&main)]).contains("OK"));
}

/// QEMU 10's mapped-ram snapshot (`compat-tests/fixtures/qemu-10.0.2-mapped-ram`):
/// `info` lists the capability and the pages present, `dump --memory` shows them at
/// their guest addresses, `verify` re-encodes it to its own bytes (holes included),
/// and `extract` writes the block with the pages where they belong.
#[test]
fn info_dump_verify_and_extract_read_a_qemu_mapped_ram_snapshot() {
    let file = fixtures().join("../qemu-10.0.2-mapped-ram/mapped-ram.mig");
    let info = ok(&["info", p(&file)]);
    assert!(info.contains("caps       mapped-ram"), "{info}");
    assert!(info.contains("ram: 1 RAM blocks; 8 pages"), "{info}");
    let dump: serde_json::Value =
        serde_json::from_str(&ok(&["dump", "--memory", p(&file)])).unwrap();
    let memory = dump["ram (1)"]["memory"].as_object().unwrap();
    let addrs: Vec<&String> = memory.keys().collect();
    assert_eq!(addrs.len(), 8, "{addrs:?}");
    assert_eq!(addrs[0], "ram (0x0000000000100000)");
    assert_eq!(addrs[4], "ram (0x0000000000180000)");
    assert!(ok(&["verify", p(&file)]).contains("OK"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    ok(&["extract", p(&file), p(&out)]);
    let ram = std::fs::read(out.join("ram")).unwrap();
    let blob = std::fs::read(fixtures().join("../qemu-10.0.2-multifd/blob.bin")).unwrap();
    assert_eq!(ram.len(), 2 << 20);
    assert_eq!(&ram[0x100000..0x100000 + blob.len()], &blob[..]);
    let text =
        std::fs::read(fixtures().join("../qemu-10.0.2-multifd-compressed/text.bin")).unwrap();
    assert_eq!(&ram[0x180000..0x180000 + text.len()], &text[..]);
    assert!(ram[..0x100000].iter().all(|&b| b == 0));
}

/// A mapped-ram file with a byte set where it holds no page cannot re-encode to
/// itself: `verify` refuses it and says where.
#[test]
fn verify_refuses_data_in_a_mapped_ram_hole() {
    let file = fixtures().join("../qemu-10.0.2-mapped-ram/mapped-ram.mig");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0x100000 + 5] = 1; // page 0 of `ram`, absent from the bitmap
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.mig");
    std::fs::write(&bad, &bytes).unwrap();
    let out = common::vmstate(&["verify", p(&bad)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("non-zero bytes where the file holds no page"),
        "{err}"
    );
}
