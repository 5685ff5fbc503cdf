//! The RAM handler: layouts, every phase, the record format, load errors, and a guest
//! writing while RAM is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream, save_snapshot};
use vmstate::{
    ErrorKind, IterationStatus, IterativeHandler, Phase, Reader, Registration, Registry, Writer,
};

const PAGE: u64 = 4096;

fn blocks(sizes: &[(&str, u64)]) -> Vec<Arc<RamBlock>> {
    sizes
        .iter()
        .map(|(n, pages)| Arc::new(RamBlock::new(*n, pages * PAGE).unwrap()))
        .collect()
}

fn registry(blocks: &[Arc<RamBlock>]) -> Registry {
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(blocks.to_vec()).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg
}

fn assert_same(a: &[Arc<RamBlock>], b: &[Arc<RamBlock>]) {
    for (x, y) in a.iter().zip(b) {
        for p in 0..x.pages() {
            assert_eq!(
                x.page_checksum(p),
                y.page_checksum(p),
                "block {} page {p} differs",
                x.name()
            );
        }
    }
}

const LAYOUT: [(&str, u64); 4] = [("a", 1), ("bios", 3), ("main.ram", 100), ("z", 65)];

#[test]
fn multi_block_layout_with_data_at_every_boundary_round_trips() {
    let src = blocks(&LAYOUT);
    for b in &src {
        let last = b.len() - 8;
        b.write(0, b"first!!!");
        b.write(last, b"last!!!!");
        if b.pages() > 1 {
            b.write(PAGE - 3, b"straddle"); // crosses the first page boundary
        }
    }
    let mut out = Vec::new();
    save_snapshot(&mut registry(&src), &mut out, StreamConfig::new("m")).unwrap();
    let dst = blocks(&LAYOUT);
    load_stream(
        &mut registry(&dst),
        &mut Reader::from_slice(&out),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_same(&src, &dst);
}

#[test]
fn pages_dirtied_in_every_phase_arrive() {
    let src = blocks(&LAYOUT);
    let mut reg = registry(&src);
    let mut out = Vec::new();
    {
        let mut s = SaveSession::new(&mut reg, &mut out, StreamConfig::new("m"));
        src[2].write(10 * PAGE, b"before setup");
        s.setup().unwrap();
        src[2].write(11 * PAGE, b"after setup");
        src[0].write(0, b"after setup, block a");
        for round in 0..5u64 {
            s.iterate(20 * PAGE).unwrap();
            src[2].write((20 + round) * PAGE + 100, b"during rounds");
            src[3].write(64 * PAGE, &round.to_le_bytes()); // last page of the last block
        }
        src[1].write(2 * PAGE, b"just before completion");
        s.complete().unwrap();
    }
    let dst = blocks(&LAYOUT);
    load_stream(
        &mut registry(&dst),
        &mut Reader::from_slice(&out),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_same(&src, &dst);
}

#[test]
fn iterate_reports_more_until_a_clean_pass_then_done() {
    let src = blocks(&[("m", 200)]);
    src[0].write(0, &[1; 200 * 4096]);
    let mut h = RamHandler::new(src.clone()).unwrap();
    let mut w = Writer::new();
    h.save_setup(&mut w).unwrap();
    assert_eq!(h.pending(false).must_precopy, 200 * PAGE);
    assert_eq!(
        h.save_iterate(&mut w, 50 * PAGE).unwrap(),
        IterationStatus::More
    );
    let left = h.pending(true).must_precopy;
    assert!(left < 200 * PAGE && left > 0, "left {left}");
    assert_eq!(
        h.save_iterate(&mut w, u64::MAX).unwrap(),
        IterationStatus::Done
    );
    assert_eq!(h.pending(false).must_precopy, 0);
    let stats = h.stats().get();
    assert_eq!(stats.normal_pages, 200);
}

/// Parses a RAM payload independently: (flags, offset, block name if present).
fn records(payload: &[u8]) -> Vec<(u64, u64, Option<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let word = u64::from_be_bytes(payload[at..at + 8].try_into().unwrap());
        at += 8;
        let (flags, offset) = (word & 0xfff, word & !0xfff);
        if flags == 0x10 {
            return out;
        }
        let mut name = None;
        if flags & 0x20 == 0 {
            let len = payload[at] as usize;
            name = Some(String::from_utf8(payload[at + 1..at + 1 + len].to_vec()).unwrap());
            at += 1 + len;
        }
        at += if flags & 0x02 != 0 { 1 } else { 4096 };
        out.push((flags, offset, name));
    }
}

#[test]
fn records_use_continue_within_and_across_sections() {
    let src = blocks(&[("pc.ram", 65), ("pc.bios", 1)]);
    src[0].write(PAGE, b"x");
    src[0].write(64 * PAGE, b"y");
    let mut h = RamHandler::new(src).unwrap();
    let mut w = Writer::new();
    h.save_setup(&mut w).unwrap();
    let setup = w.take_bytes();
    // MEM_SIZE | total, then the block list, then EOS.
    assert_eq!(&setup[..8], &((66 * PAGE) | 0x4).to_be_bytes());
    assert_eq!(&setup[8..15], b"\x06pc.ram");
    // The budget runs out with the first full page: the round stops there.
    h.save_iterate(&mut w, PAGE).unwrap();
    let first = records(&w.take_bytes());
    assert_eq!(
        first,
        [
            (0x02, 0, Some("pc.ram".into())), // zero page: name sent
            (0x28, PAGE, None),               // page | continue
        ]
    );
    h.save_iterate(&mut w, u64::MAX).unwrap();
    let second = records(&w.take_bytes());
    // Same block as the last record of the previous section: CONTINUE, no name.
    assert_eq!(second[0], (0x22, 2 * PAGE, None));
    assert_eq!(second.len(), 64);
    assert_eq!(second[62], (0x28, 64 * PAGE, None));
    assert_eq!(second[63], (0x02, 0, Some("pc.bios".into())));
}

#[test]
fn a_round_stops_at_its_budget_page_by_page() {
    let src = blocks(&[("m", 256)]);
    src[0].write(0, &vec![1u8; 256 * 4096]);
    let mut h = RamHandler::new(src).unwrap();
    let mut w = Writer::new();
    h.save_setup(&mut w).unwrap();
    w.take_bytes();
    h.save_iterate(&mut w, 3 * PAGE).unwrap();
    // Three pages reach the budget; the fourth would exceed it by a whole page.
    assert_eq!(records(&w.take_bytes()).len(), 3);
    assert_eq!(h.pending(false).must_precopy, 253 * PAGE);
}

#[test]
fn an_empty_first_block_is_skipped() {
    let src = blocks(&[("empty", 0), ("main", 64)]);
    src[1].write(5 * PAGE, b"data");
    let mut reg = registry(&src);
    let mut out = Vec::new();
    save_snapshot(&mut reg, &mut out, StreamConfig::new("m")).unwrap();
    let dst = blocks(&[("empty", 0), ("main", 64)]);
    load_stream(
        &mut registry(&dst),
        &mut Reader::from_slice(&out),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_same(&src, &dst);
}

#[test]
fn a_page_offset_near_the_top_of_u64_is_an_error() {
    let dst = blocks(&[("pc.ram", 1)]);
    for flags in [0x8u64, 0x2] {
        let tail: &[u8] = if flags == 0x8 { &[0; 4096] } else { &[0] };
        let err = load_payload(
            &dst,
            &record(0xffff_ffff_ffff_f000 | flags, Some("pc.ram"), tail),
        )
        .unwrap_err();
        assert!(err.to_string().contains("outside block 'pc.ram'"), "{err}");
    }
}

#[test]
fn zero_page_record_matches_qemu_bytes() {
    // Spec 5.1, real pc stream: `0x0000000000000002` then `06 "pc.ram" 00`.
    let src = blocks(&[("pc.ram", 1)]);
    let mut h = RamHandler::new(src).unwrap();
    let mut w = Writer::new();
    h.save_setup(&mut w).unwrap();
    w.take_bytes();
    h.save_iterate(&mut w, u64::MAX).unwrap();
    let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 2, 6];
    expected.extend(b"pc.ram");
    expected.push(0);
    expected.extend(0x10u64.to_be_bytes());
    assert_eq!(w.take_bytes(), expected);
}

fn load_payload(dst: &[Arc<RamBlock>], payload: &[u8]) -> vmstate::Result<()> {
    let mut h = RamHandler::new(dst.to_vec()).unwrap();
    h.load_setup().unwrap();
    h.load(&mut Reader::from_slice(payload), RAM_VERSION, Phase::Part)
}

fn record(word: u64, name: Option<&str>, tail: &[u8]) -> Vec<u8> {
    let mut v = word.to_be_bytes().to_vec();
    if let Some(n) = name {
        v.push(n.len() as u8);
        v.extend(n.as_bytes());
    }
    v.extend(tail);
    v
}

#[test]
fn unknown_block_name_is_an_error_naming_it() {
    let dst = blocks(&[("pc.ram", 1)]);
    let err = load_payload(&dst, &record(0x2, Some("vga.vram"), &[0])).unwrap_err();
    assert!(
        err.to_string().contains("unknown RAM block 'vga.vram'"),
        "{err}"
    );
    assert_eq!(err.offset(), Some(0));
}

#[test]
fn page_past_the_block_end_is_refused_and_nothing_is_written() {
    let dst = blocks(&[("pc.ram", 2), ("next", 1)]);
    let mut p = record((2 * PAGE) | 0x8, Some("pc.ram"), &[0xab; 4096]);
    p.extend(0x10u64.to_be_bytes());
    let err = load_payload(&dst, &p).unwrap_err();
    assert!(err.to_string().contains("outside block 'pc.ram'"), "{err}");
    assert_eq!(
        dst[1].page_checksum(0),
        RamBlock::new("z", PAGE).unwrap().page_checksum(0)
    );
}

#[test]
fn zero_page_with_a_non_zero_fill_byte_is_refused() {
    let dst = blocks(&[("pc.ram", 1)]);
    let err = load_payload(&dst, &record(0x2, Some("pc.ram"), &[0x5a])).unwrap_err();
    assert!(err.to_string().contains("fill byte 0x5a"), "{err}");
}

#[test]
fn unknown_flags_are_refused() {
    let dst = blocks(&[("pc.ram", 1)]);
    let err = load_payload(&dst, &record(0x400, None, &[])).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Invalid { .. }));
    assert!(
        err.to_string().contains("unsupported combination of flags"),
        "{err}"
    );
}

#[test]
fn continue_on_the_first_record_is_refused() {
    let dst = blocks(&[("pc.ram", 1)]);
    let err = load_payload(&dst, &record(0x22, None, &[0])).unwrap_err();
    assert!(err.to_string().contains("CONTINUE"), "{err}");
}

#[test]
fn block_size_mismatch_in_the_block_list_is_refused() {
    let dst = blocks(&[("pc.ram", 2)]);
    let mut p = record(PAGE | 0x4, Some("pc.ram"), &PAGE.to_be_bytes());
    p.extend(0x10u64.to_be_bytes());
    let err = load_payload(&dst, &p).unwrap_err();
    assert!(
        err.to_string().contains("resizing is not supported"),
        "{err}"
    );
}

#[test]
fn ram_section_of_another_version_is_refused() {
    let dst = blocks(&[("pc.ram", 1)]);
    let mut h = RamHandler::new(dst).unwrap();
    let err = h
        .load(
            &mut Reader::from_slice(&0x10u64.to_be_bytes()),
            3,
            Phase::Start,
        )
        .unwrap_err();
    assert!(err.to_string().contains("version 3"), "{err}");
}

#[test]
fn guest_writing_during_the_whole_save_loses_nothing() {
    let src = blocks(&[("lo", 64), ("hi", 192)]);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let vcpu = {
        let (src, stop, writes) = (src.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let b = &src[(i % 2) as usize];
                let off = (i.wrapping_mul(0x9e37_79b9) % (b.len() / 8)) * 8;
                b.write_u64(off, i);
                i += 1;
                writes.store(i, Ordering::Relaxed);
            }
        })
    };
    // Waits until the vCPU has made `n` more writes: each phase really overlaps them.
    let wait_writes = |n: u64| {
        let target = writes.load(Ordering::Relaxed) + n;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while writes.load(Ordering::Relaxed) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the vCPU thread stalled"
            );
            std::thread::yield_now();
        }
    };
    let mut reg = registry(&src);
    let mut out = Vec::new();
    {
        let mut s = SaveSession::new(&mut reg, &mut out, StreamConfig::new("m"));
        wait_writes(1000);
        s.setup().unwrap();
        for _ in 0..20 {
            wait_writes(100);
            s.iterate(32 * PAGE).unwrap();
        }
        wait_writes(100);
        stop.store(true, Ordering::Relaxed);
        vcpu.join().unwrap();
        s.complete().unwrap();
    }
    let dst = blocks(&[("lo", 64), ("hi", 192)]);
    load_stream(
        &mut registry(&dst),
        &mut Reader::from_slice(&out),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_same(&src, &dst);
}
