//! QEMU 10's mapped-ram file layout: a snapshot QEMU wrote
//! (`fixtures/qemu-10.0.2-mapped-ram`) loads here page for page, and what this project
//! writes in that layout reads back and has QEMU's shape.

use std::path::PathBuf;

use vmstate::ram::RamBlock;
use vmstate::stream::{LoadOptions, StreamConfig, load_file, save_mapped_ram_snapshot};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn mapped_options() -> LoadOptions {
    LoadOptions {
        machine: Some("none".into()),
        capabilities: vec!["mapped-ram".into()],
        ..Default::default()
    }
}

fn read(ram: &RamBlock, at: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    ram.read(at, &mut b);
    b
}

#[test]
fn qemus_mapped_ram_snapshot_loads_page_for_page() {
    let (mut reg, ram, stats) =
        compat_tests::destination::none_with_handler(2 << 20, |h| h.with_mapped_ram());
    ram.write(0, &[0xaa; 4096]); // a page the file leaves out: zeroed by the load
    let file = fixtures().join("qemu-10.0.2-mapped-ram/mapped-ram.mig");
    load_file(&mut reg, &file, mapped_options(), false).unwrap();
    let blob = std::fs::read(fixtures().join("qemu-10.0.2-multifd/blob.bin")).unwrap();
    let text = std::fs::read(fixtures().join("qemu-10.0.2-multifd-compressed/text.bin")).unwrap();
    assert_eq!(read(&ram, 0x100000, blob.len()), blob);
    assert_eq!(read(&ram, 0x180000, text.len()), text);
    assert!(read(&ram, 0, 4096).iter().all(|&b| b == 0));
    let s = stats.get();
    assert_eq!((s.normal_pages, s.zero_pages), (8, 512 - 8));
}

#[test]
fn a_mapped_ram_file_needs_the_capability_on_both_sides() {
    let (mut reg, _ram, _) =
        compat_tests::destination::none_with_handler(2 << 20, |h| h.with_mapped_ram());
    let file = fixtures().join("qemu-10.0.2-mapped-ram/mapped-ram.mig");
    let opts = LoadOptions {
        machine: Some("none".into()),
        ..Default::default()
    };
    let err = load_file(&mut reg, &file, opts, false).unwrap_err();
    assert!(err.to_string().contains("mapped-ram"), "{err}");
}

/// Our `-M none` machine saved in the mapped-ram layout to a file: QEMU's offsets
/// (the same header bytes as QEMU's file for the same block), the data pages at their
/// offsets, the zero pages as holes (the file takes less disk than its length), and it
/// loads back.
#[test]
fn our_mapped_ram_snapshot_has_qemus_layout_holes_and_loads_back() {
    let (mut reg, ram, _) =
        compat_tests::destination::none_with_handler(2 << 20, |h| h.with_mapped_ram());
    let blob = std::fs::read(fixtures().join("qemu-10.0.2-multifd/blob.bin")).unwrap();
    ram.write(0x100000, &blob);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.mig");
    save_mapped_ram_snapshot(&mut reg, &path, StreamConfig::new("none")).unwrap();
    let ours = std::fs::read(&path).unwrap();
    let theirs = std::fs::read(fixtures().join("qemu-10.0.2-mapped-ram/mapped-ram.mig")).unwrap();
    assert_eq!(ours[0x65..0x65 + 28], theirs[0x65..0x65 + 28], "the header");
    assert_eq!(&ours[0x200000..0x200000 + blob.len()], &blob[..]);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert!(
        meta.blocks() * 512 < meta.len() / 2,
        "holes: {} bytes on disk for {}",
        meta.blocks() * 512,
        meta.len()
    );
    let (mut back, copy, _) =
        compat_tests::destination::none_with_handler(2 << 20, |h| h.with_mapped_ram());
    load_file(&mut back, &path, mapped_options(), false).unwrap();
    for p in 0..ram.pages() {
        assert_eq!(ram.page_checksum(p), copy.page_checksum(p), "page {p}");
    }
}
