//! Snapshots in QEMU's mapped-ram layout with several blocks: each block's pages at
//! their 1 MiB-aligned offsets, holes for zero pages, a round trip page for page, and
//! damaged files refused by what is wrong.

use std::sync::Arc;

use vmstate::ram::mapped_ram::{FILE_OFFSET_ALIGNMENT, HEADER_LEN, MappedRamHeader};
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler, RamStats};
use vmstate::stream::{LoadOptions, StreamConfig, load_file, save_mapped_ram_snapshot};
use vmstate::{Reader, Registration, Registry};

const PAGE: u64 = 4096;

/// A registry with blocks `pc.ram` (3 MiB) and `vram` (256 KiB), mapped-ram on.
fn machine() -> (Registry, Arc<RamBlock>, Arc<RamBlock>, Arc<RamStats>) {
    let ram = Arc::new(RamBlock::new("pc.ram", 3 << 20).unwrap());
    let vram = Arc::new(RamBlock::new("vram", 256 << 10).unwrap());
    let h = RamHandler::new(vec![ram.clone(), vram.clone()])
        .unwrap()
        .with_mapped_ram();
    let stats = h.stats();
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, h, Registration::new())
        .unwrap();
    (reg, ram, vram, stats)
}

fn options() -> LoadOptions {
    LoadOptions {
        capabilities: vec!["mapped-ram".into()],
        ..Default::default()
    }
}

/// The offset just past `name`'s block list entry in `file`.
fn header_at(file: &[u8], name: &str) -> u64 {
    let mut entry = vec![name.len() as u8];
    entry.extend(name.as_bytes());
    let at = file
        .windows(entry.len())
        .position(|w| w == entry)
        .expect("the entry");
    (at + entry.len() + 8) as u64
}

#[test]
fn two_blocks_round_trip_with_their_pages_at_fixed_offsets_and_holes() {
    let (mut reg, ram, vram, stats) = machine();
    ram.write(0, b"first page of pc.ram");
    ram.write((3 << 20) - PAGE, b"last page of pc.ram");
    vram.write(5 * PAGE, &[0x5a; PAGE as usize]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.mig");
    save_mapped_ram_snapshot(&mut reg, &path, StreamConfig::new("m")).unwrap();
    assert_eq!(stats.get().normal_pages, 3);

    let file = std::fs::read(&path).unwrap();
    for (name, len, page, expected) in [
        ("pc.ram", 3u64 << 20, 0, &b"first page of pc.ram"[..]),
        ("pc.ram", 3 << 20, 767, b"last page of pc.ram"),
        ("vram", 256 << 10, 5, &[0x5a; 16]),
    ] {
        let at = header_at(&file, name);
        let h = MappedRamHeader::decode(&mut Reader::from_slice(&file[at as usize..])).unwrap();
        assert_eq!(h, MappedRamHeader::layout(at, len, PAGE), "{name}");
        assert_eq!(h.bitmap_offset, at + HEADER_LEN);
        assert_eq!(h.pages_offset % FILE_OFFSET_ALIGNMENT, 0);
        let page_at = (h.pages_offset + page * PAGE) as usize;
        assert_eq!(
            &file[page_at..page_at + expected.len()],
            expected,
            "{name} page {page}"
        );
    }
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "{} bytes on disk",
        meta.blocks() * 512
    );

    let (mut back, ram2, vram2, stats2) = machine();
    ram2.write(PAGE, b"not in the file: zeroed");
    load_file(&mut back, &path, options(), false).unwrap();
    for (a, b) in [(&ram, &ram2), (&vram, &vram2)] {
        for p in 0..a.pages() {
            assert_eq!(
                a.page_checksum(p),
                b.page_checksum(p),
                "{} page {p}",
                a.name()
            );
        }
    }
    let s = stats2.get();
    assert_eq!((s.normal_pages, s.zero_pages), (3, 768 + 64 - 3));

    // The same bytes through a reader without the file (no positioned reads): read
    // front to back.
    let (mut again, ram3, vram3, _) = machine();
    vmstate::stream::load_stream(&mut again, &mut Reader::from_slice(&file), &options()).unwrap();
    for (a, b) in [(&ram, &ram3), (&vram, &vram3)] {
        for p in 0..a.pages() {
            assert_eq!(
                a.page_checksum(p),
                b.page_checksum(p),
                "{} page {p}",
                a.name()
            );
        }
    }
}

#[test]
fn a_guest_written_during_the_save_fails_it() {
    let (mut reg, ram, _, _) = machine();
    let mut s =
        vmstate::stream::SaveSession::new(&mut reg, std::io::sink(), StreamConfig::new("m"));
    s.setup().unwrap();
    ram.write(10 * PAGE, b"too late");
    let err = s.iterate(u64::MAX).unwrap_err().to_string();
    assert!(err.contains("stop the guest"), "{err}");
}

#[test]
fn damaged_mapped_ram_files_are_refused_by_what_is_wrong() {
    let (mut reg, ram, _, _) = machine();
    ram.write(0, b"data");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.mig");
    save_mapped_ram_snapshot(&mut reg, &path, StreamConfig::new("m")).unwrap();
    let good = std::fs::read(&path).unwrap();
    let at = header_at(&good, "pc.ram") as usize;
    let cases: [(usize, &[u8], &str); 3] = [
        (at, &[0, 0, 0, 2], "version 2"),
        (at + 4, &[0, 0, 0, 0, 0, 1, 0, 0], "page size 65536"),
        (
            at + 12,
            &[0, 0, 0, 0, 0, 0, 0, 0],
            "not right after the header",
        ),
    ];
    for (offset, bytes, expected) in cases {
        let mut bad = good.clone();
        bad[offset..offset + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&path, &bad).unwrap();
        let (mut reg, ..) = machine();
        let err = load_file(&mut reg, &path, options(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // Cut inside the pages region.
    std::fs::write(&path, &good[..(2 << 20)]).unwrap();
    let (mut reg, ..) = machine();
    assert!(load_file(&mut reg, &path, options(), false).is_err());
}
