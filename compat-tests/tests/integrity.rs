//! Snapshots that prove their integrity: a snapshot written with the integrity record
//! (the default) loads with the record checked; 10,000 random single-bit flips anywhere
//! in the file are each reported by `load_file` with an error naming the integrity
//! record, none loads; a file without the record (QEMU's kind) still loads.

use std::sync::Arc;

use compat_tests::evolving::r3_0;
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::integrity::{self, Integrity};
use vmstate::stream::{LoadOptions, StreamConfig, load_file, save_snapshot};
use vmstate::{Registration, Registry};

/// `machine`'s registry with 16 KiB of RAM, each page holding `page N` when `data`.
fn with_ram(machine: r3_0::Machine, data: bool) -> Registry {
    let block = Arc::new(RamBlock::new("pc.ram", 16 << 10).unwrap());
    for page in (0..4u64).filter(|_| data) {
        block.write(page * 4096 + 17, format!("page {page}").as_bytes());
    }
    let mut reg = machine.registry();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![block]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg
}

fn source() -> Registry {
    with_ram(r3_0::Machine::busy(), true)
}

fn destination() -> Registry {
    with_ram(r3_0::Machine::idle(), false)
}

fn snapshot(with_record: bool) -> Vec<u8> {
    let mut config = StreamConfig::new(r3_0::MACHINE);
    config.integrity_record = with_record;
    let mut out = Vec::new();
    save_snapshot(&mut source(), &mut out, config).unwrap();
    out
}

fn load(bytes: &[u8], dir: &std::path::Path) -> vmstate::Result<vmstate::stream::LoadReport> {
    let path = dir.join("snapshot.mig");
    std::fs::write(&path, bytes).unwrap();
    load_file(&mut destination(), &path, LoadOptions::default(), false)
}

#[test]
fn a_snapshot_ends_with_a_valid_record_and_loads_checked() {
    let with = snapshot(true);
    let without = snapshot(false);
    assert_eq!(with.len(), without.len() + integrity::RECORD_LEN as usize);
    assert_eq!(with[..without.len()], without[..]);
    let record = integrity::IntegrityRecord::from_tail(&with).unwrap();
    assert_eq!(record.covered, without.len() as u64);
    // An independent CRC32C of the stream.
    assert_eq!(record.crc32c, crc32c::crc32c(&without));
    let dir = tempfile::tempdir().unwrap();
    let report = load(&with, dir.path()).unwrap();
    assert_eq!(report.integrity, Integrity::Valid(record));
}

#[test]
fn a_file_without_the_record_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let report = load(&snapshot(false), dir.path()).unwrap();
    assert_eq!(report.integrity, Integrity::Absent);
}

#[test]
fn ten_thousand_single_bit_flips_are_each_reported() {
    let good = snapshot(true);
    let dir = tempfile::tempdir().unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut failed_first = 0;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bit = (x % (good.len() as u64 * 8)) as usize;
        let mut bytes = good.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let err = match load(&bytes, dir.path()) {
            Ok(_) => panic!("bit {bit} flipped and the snapshot loaded"),
            Err(e) => e,
        };
        assert_eq!(err.record(), Some("integrity record"), "bit {bit}: {err}");
        if err.to_string().contains("the load had stopped at") {
            failed_first += 1;
        }
    }
    // Most flips land in RAM pages or the vmdesc, which load without a complaint
    // but for the record; the others broke the stream first, and say so.
    eprintln!("{failed_first} of 10000 flips broke the stream before the checksum");
}

#[test]
fn a_cut_or_extended_file_is_reported() {
    let good = snapshot(true);
    let dir = tempfile::tempdir().unwrap();
    let mut longer = good[..good.len() - 20].to_vec();
    longer.extend(b"junk");
    longer.extend(&good[good.len() - 20..]);
    let err = load(&longer, dir.path()).unwrap_err();
    assert!(err.to_string().contains("cut or extended"), "{err}");
    // Bytes after the stream that are not a record (a damaged record, or junk).
    let mut junk = snapshot(false);
    junk.extend([0u8; 7]);
    let err = load(&junk, dir.path()).unwrap_err();
    assert_eq!(err.record(), Some("integrity record"), "{err}");
}

#[test]
fn check_reads_the_whole_file_once() {
    let good = snapshot(true);
    let verdict = integrity::check(&mut std::io::Cursor::new(&good)).unwrap();
    assert!(matches!(verdict, Integrity::Valid(_)));
    assert!(verdict.describe().starts_with("valid (CRC32C 0x"));
    let mut bad = good.clone();
    bad[100] ^= 0x80;
    let verdict = integrity::check(&mut std::io::Cursor::new(&bad)).unwrap();
    assert!(
        verdict.describe().contains("CRC32C mismatch"),
        "{verdict:?}"
    );
}
