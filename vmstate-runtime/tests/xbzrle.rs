//! XBZRLE pages (`RAM_SAVE_FLAG_XBZRLE`): the encoder against an independent
//! byte-by-byte reference, records built by hand applied to the page the destination
//! holds, malformed records refused by page, and migrations with the cache on where the
//! guest rewrites a few bytes, nothing, everything, or zeroes a page between rounds.

use std::sync::Arc;

use proptest::prelude::*;
use vmstate::ram::xbzrle::{decode, encode};
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler, RamStats};
use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream};
use vmstate::{IterationStatus, IterativeHandler, Phase, Reader, Registration, Registry};

const PAGE: usize = 4096;

/// The encoding as the format describes it, one byte at a time: maximal runs of equal
/// and of different bytes, a trailing equal run left out, lengths as ULEB128.
fn reference_encoding(old: &[u8], new: &[u8]) -> Vec<u8> {
    fn uleb(out: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            out.push(0x80 | (n & 0x7f) as u8);
            out.push((n >> 7) as u8);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < old.len() {
        let same = (i..old.len()).take_while(|&k| old[k] == new[k]).count();
        i += same;
        if i == old.len() {
            break;
        }
        let changed = (i..old.len()).take_while(|&k| old[k] != new[k]).count();
        uleb(&mut out, same);
        uleb(&mut out, changed);
        out.extend_from_slice(&new[i..i + changed]);
        i += changed;
    }
    out
}

proptest! {
    #[test]
    fn the_encoder_writes_the_reference_encoding_and_it_decodes_back(
        seed in any::<u64>(),
        changes in prop::collection::vec((0usize..PAGE, 1usize..64, any::<u8>()), 0..40),
    ) {
        let mut old = vec![0u8; PAGE];
        let mut x = seed | 1;
        for b in old.iter_mut() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            *b = (x >> 56) as u8 & 0x3; // few distinct values: equal bytes happen inside changes
        }
        let mut new = old.clone();
        for (at, len, v) in changes {
            for b in &mut new[at..(at + len).min(PAGE)] {
                *b = b.wrapping_add(v);
            }
        }
        let reference = reference_encoding(&old, &new);
        let mut out = Vec::new();
        match encode(&old, &new, &mut out, PAGE) {
            None => prop_assert!(reference.len() + 2 > PAGE, "overflow only when it does not fit"),
            Some(n) => {
                prop_assert_eq!(n, reference.len());
                prop_assert_eq!(&out, &reference);
                let mut page = old.clone();
                decode(&out, PAGE, |at, bytes| page[at..at + bytes.len()].copy_from_slice(bytes))
                    .unwrap();
                prop_assert_eq!(page, new);
            }
        }
    }

    #[test]
    fn any_bytes_decode_to_an_error_or_runs_inside_the_page(
        enc in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = decode(&enc, 64, |at, bytes| assert!(at + bytes.len() <= 64));
    }
}

/// A one-block destination holding `fill` in every byte, loading `payload` (a `ram`
/// section's records, EOS included).
fn load_into(pages: usize, fill: u8, payload: &[u8]) -> (Arc<RamBlock>, vmstate::Result<()>) {
    let block = Arc::new(RamBlock::new("pc.ram", (pages * PAGE) as u64).unwrap());
    block.write(0, &vec![fill; pages * PAGE]);
    let mut h = RamHandler::new(vec![block.clone()]).unwrap();
    h.load_setup().unwrap();
    let result = h.load(&mut Reader::from_slice(payload), RAM_VERSION, Phase::Part);
    (block, result)
}

/// An XBZRLE record for `offset` of `pc.ram`, built by hand.
fn xbzrle_record(offset: u64, encoded: &[u8]) -> Vec<u8> {
    let mut rec = (offset | 0x40).to_be_bytes().to_vec();
    rec.push(6);
    rec.extend(b"pc.ram");
    rec.push(0x01); // ENCODING_FLAG_XBZRLE
    rec.extend((encoded.len() as u16).to_be_bytes());
    rec.extend(encoded);
    rec.extend(0x10u64.to_be_bytes()); // EOS
    rec
}

fn page_bytes(block: &RamBlock, page: usize) -> Vec<u8> {
    let mut out = vec![0; PAGE];
    block.read((page * PAGE) as u64, &mut out);
    out
}

#[test]
fn an_xbzrle_record_changes_only_its_runs_of_the_page_held() {
    // 10 unchanged, 3 changed (a b c), 200 unchanged (two-byte length), 1 changed (z).
    let enc = [10, 3, b'a', b'b', b'c', 0xc8, 0x01, 1, b'z'];
    let (block, result) = load_into(2, 0x11, &xbzrle_record(PAGE as u64, &enc));
    result.unwrap();
    let mut expected = vec![0x11; PAGE];
    expected[10..13].copy_from_slice(b"abc");
    expected[213] = b'z';
    assert_eq!(page_bytes(&block, 1), expected);
    assert_eq!(page_bytes(&block, 0), vec![0x11; PAGE]);
}

#[test]
fn an_empty_encoding_leaves_the_page_as_it_is() {
    let (block, result) = load_into(1, 0x22, &xbzrle_record(0, &[]));
    result.unwrap();
    assert_eq!(page_bytes(&block, 0), vec![0x22; PAGE]);
}

#[test]
fn a_malformed_encoding_is_refused_naming_the_page_and_nothing_lands_outside_it() {
    // 4000 unchanged, then 200 changed: past the page's end.
    let mut enc = vec![0xa0, 0x1f, 0xc8, 0x01];
    enc.extend([0x77; 200]);
    let (block, result) = load_into(2, 0x33, &xbzrle_record(0, &enc));
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("page 0x0 of block 'pc.ram'"), "{text}");
    assert!(text.contains("goes past the page"), "{text}");
    assert_eq!(err.offset(), Some(0), "the record's offset");
    assert_eq!(page_bytes(&block, 1), vec![0x33; PAGE], "the next page");
}

#[test]
fn a_wrong_encoding_byte_or_a_length_over_a_page_is_refused() {
    let mut rec = xbzrle_record(0, &[1, 1, 9]);
    rec[15] = 0x02; // the encoding byte
    let (_, result) = load_into(1, 0, &rec);
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("encoding byte 0x02")
    );
    let mut rec = (0x40u64).to_be_bytes().to_vec();
    rec.extend([6, b'p', b'c', b'.', b'r', b'a', b'm', 1, 0x10, 0x01]); // 4097 bytes
    let (_, result) = load_into(1, 0, &rec);
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("exceeds the page size")
    );
}

/// A source with XBZRLE on over `pages` pages.
fn source(pages: usize, cache: u64) -> (Arc<RamBlock>, Registry, Arc<RamStats>) {
    let block = Arc::new(RamBlock::new("pc.ram", (pages * PAGE) as u64).unwrap());
    let handler = RamHandler::new(vec![block.clone()])
        .unwrap()
        .with_xbzrle(cache);
    let stats = handler.stats();
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    (block, reg, stats)
}

/// Runs setup, then `rounds` full rounds with `between(round)` before each, then
/// completion; loads the stream into a fresh block and returns it and the stream.
fn migrate(
    block: &Arc<RamBlock>,
    reg: &mut Registry,
    rounds: u32,
    mut between: impl FnMut(u32),
) -> (Arc<RamBlock>, Vec<u8>) {
    let mut out = Vec::new();
    {
        let mut s = SaveSession::new(reg, &mut out, StreamConfig::new("m"));
        s.setup().unwrap();
        for round in 0..rounds {
            between(round);
            // A round ends at MAX_ROUND_TIME too: go on until everything went out.
            while s.iterate(u64::MAX).unwrap() == IterationStatus::More {}
        }
        s.complete().unwrap();
    }
    (load_copy(block, &out), out)
}

/// A fresh block the size of `block` with `stream` loaded into it.
fn load_copy(block: &RamBlock, stream: &[u8]) -> Arc<RamBlock> {
    let copy = Arc::new(RamBlock::new("pc.ram", block.len()).unwrap());
    let mut dst = Registry::new();
    dst.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![copy.clone()]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    load_stream(
        &mut dst,
        &mut Reader::from_slice(stream),
        &LoadOptions::default(),
    )
    .unwrap();
    copy
}

fn assert_same(a: &RamBlock, b: &RamBlock) {
    for p in 0..a.pages() {
        assert_eq!(a.page_checksum(p), b.page_checksum(p), "page {p} differs");
    }
}

#[test]
fn a_guest_storing_eight_bytes_per_page_costs_a_few_bytes_per_page_again() {
    let (block, mut reg, stats) = source(256, 1 << 20);
    for p in 0..256 {
        block.write((p * PAGE) as u64, &[0x5a; PAGE]);
    }
    let (copy, _) = migrate(&block, &mut reg, 4, |round| {
        if round > 0 {
            for p in 0..256u64 {
                block.write_u64(p * PAGE as u64 + 8 * u64::from(round), p << 20 | 0xabcd);
            }
        }
    });
    assert_same(&block, &copy);
    let s = stats.get();
    assert_eq!(
        s.xbzrle_pages,
        3 * 256,
        "every rewrite after the first pass"
    );
    assert_eq!(s.normal_pages, 256, "only the first pass whole");
    let per_page = s.xbzrle_bytes as f64 / s.xbzrle_pages as f64;
    assert!(per_page <= 32.0, "{per_page} bytes per page");
    assert_eq!(s.xbzrle_cache_misses, 256);
    assert_eq!(s.xbzrle_cache_hits, 3 * 256);
    assert!(s.xbzrle_encoding_rate() > 100.0);
}

#[test]
fn unchanged_pages_are_not_sent_again_and_overflows_go_whole() {
    let (block, mut reg, stats) = source(64, 1 << 20);
    block.write(0, &[7; 64 * PAGE]);
    let (copy, _) = migrate(&block, &mut reg, 3, |round| match round {
        // Rewritten with the same bytes: dirty, unchanged.
        1 => block.write(0, &[7; 32 * PAGE]),
        // Every byte different: the encoding would not fit a page.
        2 => block.write(32 * PAGE as u64, &[8; 32 * PAGE]),
        _ => {}
    });
    assert_same(&block, &copy);
    let s = stats.get();
    assert_eq!(s.xbzrle_unchanged, 32);
    assert_eq!(s.xbzrle_overflows, 32);
    assert_eq!(s.xbzrle_pages, 0);
    assert_eq!(s.normal_pages, 64 + 32);
}

#[test]
fn a_page_zeroed_then_changed_is_not_encoded_against_its_old_copy() {
    let (block, mut reg, stats) = source(4, 1 << 20);
    block.write(0, &[9; 4 * PAGE]);
    let (copy, _) = migrate(&block, &mut reg, 4, |round| match round {
        1 => block.write(PAGE as u64, &[0; PAGE]), // goes out as a zero page
        2 => block.write(PAGE as u64 + 100, b"after zero"),
        _ => {}
    });
    assert_same(&block, &copy);
    let s = stats.get();
    assert_eq!(s.xbzrle_pages, 0, "the zeroed page left the cache");
    assert_eq!(s.normal_pages, 4 + 1);
}

#[test]
fn a_cache_smaller_than_the_working_set_keeps_part_of_it() {
    // 64 pages through 16 slots: a slot taken in a pass is kept for two passes, so
    // each page keeps the slot it got first (pages 0-15) and the rest miss.
    let (block, mut reg, stats) = source(64, 16 * PAGE as u64);
    block.write(0, &[1; 64 * PAGE]);
    let (copy, _) = migrate(&block, &mut reg, 3, |round| {
        if round > 0 {
            for p in 0..64u64 {
                block.write_u64(p * PAGE as u64, u64::from(round));
            }
        }
    });
    assert_same(&block, &copy);
    let s = stats.get();
    assert_eq!(s.xbzrle_cache_size, 16 * PAGE as u64);
    assert_eq!(s.xbzrle_pages, 2 * 16);
    assert_eq!(s.xbzrle_cache_misses, 64 + 2 * 48);
}

#[test]
fn a_guest_writing_during_the_rounds_arrives_exactly() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (block, mut reg, _) = source(512, 1 << 20);
    block.write(0, &[3; 512 * PAGE]);
    let running = Arc::new(AtomicBool::new(true));
    let vcpu = {
        let (block, running) = (block.clone(), running.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                block.write_u64((i % 512) * PAGE as u64 + (i % 509) * 8, i);
                i += 1;
            }
        })
    };
    let mut out = Vec::new();
    {
        let mut s = SaveSession::new(&mut reg, &mut out, StreamConfig::new("m"));
        s.setup().unwrap();
        for _ in 0..6 {
            // A budget, as the driver gives: with the guest writing, an unlimited
            // round would never find the bitmap clean.
            s.iterate(128 * PAGE as u64).unwrap();
        }
        running.store(false, Ordering::Relaxed);
        vcpu.join().unwrap();
        s.complete().unwrap();
    }
    assert_same(&block, &load_copy(&block, &out));
}
