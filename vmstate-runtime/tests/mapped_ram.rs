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
    machine_with(RamHandler::with_mapped_ram)
}

/// [`machine`] with its RAM handler set up by `configure`.
fn machine_with(
    configure: fn(RamHandler) -> RamHandler,
) -> (Registry, Arc<RamBlock>, Arc<RamBlock>, Arc<RamStats>) {
    let ram = Arc::new(RamBlock::new("pc.ram", 3 << 20).unwrap());
    let vram = Arc::new(RamBlock::new("vram", 256 << 10).unwrap());
    let h = configure(RamHandler::new(vec![ram.clone(), vram.clone()]).unwrap());
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

/// A registry whose RAM handler loads mapped-ram files lazily.
fn lazy_machine() -> (Registry, Arc<RamBlock>, Arc<RamBlock>) {
    let (reg, ram, vram, _) = machine_with(RamHandler::with_lazy_restore);
    (reg, ram, vram)
}

/// A saved snapshot of [`machine`] with data in some pages of both blocks.
fn saved(dir: &std::path::Path) -> (std::path::PathBuf, Arc<RamBlock>, Arc<RamBlock>) {
    let (mut reg, ram, vram, _) = machine();
    for p in (0..768u64).step_by(3) {
        ram.write_u64(p * PAGE + 8, p + 1);
    }
    vram.write(5 * PAGE, &[0x5a; PAGE as usize]);
    let path = dir.join("snap.mig");
    save_mapped_ram_snapshot(&mut reg, &path, StreamConfig::new("m")).unwrap();
    (path, ram, vram)
}

/// A lazy restore reads no page: every page is missing after the load, comes in on
/// its first touch (read, partial write, the migration's copy) with the file's bytes,
/// and `fetch_all` brings the rest.
#[test]
fn a_lazy_restore_fetches_each_page_on_first_touch() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ram, vram) = saved(dir.path());
    let (mut reg, ram2, vram2) = lazy_machine();
    load_file(&mut reg, &path, options(), false).unwrap();
    assert_eq!(ram2.missing_pages(), 768);
    assert_eq!(vram2.missing_pages(), 64);

    let mut b = [0u8; 8];
    ram2.read(3 * PAGE + 8, &mut b);
    assert_eq!(u64::from_le_bytes(b), 4, "the file's bytes on first read");
    let fetched = ram2.on_demand_stats().unwrap();
    assert_eq!(fetched.fetches, 1);
    assert_eq!(fetched.pages, 64, "the touched page and the 63 after it");
    assert_eq!(ram2.missing_pages(), 768 - 64);

    // A partial write to a missing page keeps the rest of the page from the file.
    ram2.write(300 * PAGE, b"guest");
    let mut page = vec![0u8; PAGE as usize];
    ram2.read(300 * PAGE, &mut page);
    assert_eq!(&page[..5], b"guest");
    assert_eq!(u64::from_le_bytes(page[8..16].try_into().unwrap()), 301);

    // The migration's view fetches too.
    assert_eq!(vram2.page_checksum(5), vram.page_checksum(5));

    vram2.fetch_all();
    ram2.fetch_all();
    assert_eq!((ram2.missing_pages(), vram2.missing_pages()), (0, 0));
    for p in 0..ram.pages() {
        if p != 300 {
            assert_eq!(ram.page_checksum(p), ram2.page_checksum(p), "page {p}");
        }
    }
    for p in 0..vram.pages() {
        assert_eq!(
            vram.page_checksum(p),
            vram2.page_checksum(p),
            "vram page {p}"
        );
    }
}

/// Threads touching the same missing pages at once: each page is fetched once, and a
/// write made after a fetch is never overwritten by a late one.
#[test]
fn concurrent_first_touches_fetch_once_and_keep_the_guests_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = saved(dir.path());
    let (mut reg, ram2, _) = lazy_machine();
    load_file(&mut reg, &path, options(), false).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ram = ram2.clone();
            std::thread::spawn(move || {
                for p in 0..768u64 {
                    // Each thread writes its own word of every page.
                    ram.write_u64(p * PAGE + 64 + t * 8, t + 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = ram2.on_demand_stats().unwrap();
    assert_eq!(
        stats.pages, 768,
        "every page fetched exactly once: {stats:?}"
    );
    for p in 0..768u64 {
        let mut b = [0u8; 40];
        ram2.read(p * PAGE + 64, &mut b[..32]);
        ram2.read(p * PAGE + 8, &mut b[32..]);
        for t in 0..4 {
            let w = u64::from_le_bytes(b[t * 8..t * 8 + 8].try_into().unwrap());
            assert_eq!(w, t as u64 + 1, "page {p} thread {t}");
        }
        let file_word = u64::from_le_bytes(b[32..40].try_into().unwrap());
        assert_eq!(file_word, if p % 3 == 0 { p + 1 } else { 0 }, "page {p}");
    }
}

/// A snapshot file cut after the lazy load: the first touch of a page it no longer
/// holds cannot go on, and says which page and why.
#[test]
fn a_page_that_cannot_be_fetched_stops_the_access_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = saved(dir.path());
    let (mut reg, ram2, _) = lazy_machine();
    load_file(&mut reg, &path, options(), false).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let touched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut b = [0u8; 8];
        ram2.read(3 * PAGE, &mut b);
    }));
    let message = touched.unwrap_err();
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("page 3 of RAM block 'pc.ram' cannot be fetched"),
        "{text}"
    );
}
