//! Corrupted streams through the registry loader, in process: every stream truncated at
//! every byte offset (every 5th in the device sections of the large one, and a sample of
//! its RAM), and 10,000 seeded single-byte
//! flips, splices and duplicated ranges. Each load gives a value or an error; an error
//! names the byte offset, the record or section, and the field path inside a modelled
//! device. A panic fails the test.
//!
//! Streams: QEMU 10.0.2's `none` and `pc` streams (the `pc` one loaded with the vmdesc
//! of the intact file to skip the devices not modelled here, and with its RAM) and the
//! "demo" emulator's 3.0 golden stream (subsections, counted arrays, optional state).

use std::io::Cursor;

use compat_tests::destination;
use compat_tests::evolving::{fixtures_dir, r3_0};
use compat_tests::fixture::{qemu10_dir, read_qemu10_json};
use vmstate::stream::vmdesc;
use vmstate::stream::{LoadOptions, load_stream};
use vmstate::{Error, ErrorKind, Reader, Registry};

/// A stream and how to build the registry it loads into.
struct Target {
    name: &'static str,
    bytes: Vec<u8>,
    destination: Box<dyn Fn() -> Registry>,
    opts: LoadOptions,
    /// Offsets of the device sections, where truncations are dense.
    dense: std::ops::Range<usize>,
    /// Every how many bytes a truncation is tried inside `dense` (1: every offset).
    dense_step: usize,
}

fn targets() -> Vec<Target> {
    let none = std::fs::read(qemu10_dir().join("none-minimal.mig")).unwrap();
    let pc = std::fs::read(qemu10_dir().join("pc-minimal.mig")).unwrap();
    let desc = vmdesc::find_trailer(&mut Cursor::new(&pc))
        .unwrap()
        .unwrap();
    let analyze = read_qemu10_json("pc-minimal.analyze.json");
    let demo = std::fs::read(fixtures_dir().join("busy-3.0.0.mig")).unwrap();
    vec![
        Target {
            name: "none-minimal",
            dense: 0..none.len(),
            dense_step: 1,
            bytes: none,
            destination: Box::new(destination::none),
            opts: LoadOptions::default(),
        },
        Target {
            name: "demo busy-3.0.0",
            dense: 0..demo.len(),
            dense_step: 1,
            bytes: demo,
            destination: Box::new(|| r3_0::Machine::idle().registry()),
            opts: LoadOptions::default(),
        },
        Target {
            name: "pc-minimal",
            // The device sections, from the end of RAM to EOF (pc-minimal.sections.txt).
            dense: 0x3c580..0x3f7e0,
            // Each load reads the 247 KB of RAM first: every 5th offset keeps the test
            // short while still cutting every field of every section somewhere.
            dense_step: 5,
            bytes: pc,
            destination: Box::new(move || destination::pc(&analyze).reg),
            opts: LoadOptions {
                skip_unknown: Some(desc),
                ..LoadOptions::default()
            },
        },
    ]
}

/// Whether the error is in the section of a device registered in `reg` (not RAM, and
/// not a section skipped with the vmdesc).
fn is_device_section(e: &Error, reg: &Registry) -> bool {
    e.section().is_some_and(|s| {
        reg.sections()
            .any(|i| !i.iterative && i.idstr == s.idstr && i.instance_id == s.instance_id)
    })
}

/// Errors about a section as a whole (its header, version or footer) rather than one of
/// its fields.
fn is_section_level(e: &Error) -> bool {
    e.to_string().contains("section footer")
        || matches!(
            e.kind(),
            ErrorKind::SectionVersionTooNew { .. }
                | ErrorKind::UnknownSection { .. }
                | ErrorKind::SectionSentTwice { .. }
                | ErrorKind::MissingFooter { .. }
                | ErrorKind::FooterMismatch { .. }
                | ErrorKind::VersionTooNew { .. }
                | ErrorKind::VersionTooOld { .. }
        )
}

#[derive(Default, Debug)]
struct Tally {
    loaded: usize,
    failed: usize,
}

/// Loads `bytes` into a fresh destination of `t`; checks what an error says.
fn attempt(t: &Target, bytes: &[u8], what: &dyn Fn() -> String, tally: &mut Tally) {
    let mut reg = (t.destination)();
    match load_stream(&mut reg, &mut Reader::from_slice(bytes), &t.opts) {
        Ok(_) => tally.loaded += 1,
        Err(e) => {
            tally.failed += 1;
            let at = e
                .offset()
                .unwrap_or_else(|| panic!("{}: {}: error without an offset: {e}", t.name, what()));
            assert!(
                at <= bytes.len() as u64,
                "{}: {}: offset {at} past the end: {e}",
                t.name,
                what()
            );
            if at >= 8 && !matches!(e.kind(), ErrorKind::UnknownRecordType { .. }) {
                assert!(
                    e.section().is_some() || e.record().is_some(),
                    "{}: {}: error names no record or section: {e}",
                    t.name,
                    what()
                );
            }
            if is_device_section(&e, &reg) && !is_section_level(&e) {
                assert!(
                    !e.path().is_empty(),
                    "{}: {}: error in a device section without a field path: {e}",
                    t.name,
                    what()
                );
            }
        }
    }
}

#[test]
fn the_intact_streams_load() {
    for t in targets() {
        let mut reg = (t.destination)();
        load_stream(&mut reg, &mut Reader::from_slice(&t.bytes), &t.opts)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    }
}

#[test]
fn every_truncation_is_an_error_naming_where() {
    for t in targets() {
        let mut tally = Tally::default();
        // The device sections densely, the first KiB, and a sample elsewhere.
        let offsets = (0..t.bytes.len())
            .filter(|&n| {
                (t.dense.contains(&n) && (n - t.dense.start) % t.dense_step == 0)
                    || n < 1024
                    || n % 509 == 0
            })
            .collect::<Vec<_>>();
        for &n in &offsets {
            attempt(
                &t,
                &t.bytes[..n],
                &|| format!("truncated to {n} bytes"),
                &mut tally,
            );
        }
        // Only the cut right after the EOF record (no vmdesc) leaves a loadable stream.
        eprintln!("{}: {} truncations: {tally:?}", t.name, offsets.len());
        assert!(tally.loaded <= 1, "{}: {tally:?}", t.name);
    }
}

/// xorshift64*: a small seeded generator, so that every run corrupts the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An offset, inside the device sections half of the time.
fn offset(rng: &mut Rng, t: &Target) -> usize {
    if rng.below(2) == 0 {
        t.dense.start + rng.below(t.dense.len().min(t.bytes.len() - t.dense.start))
    } else {
        rng.below(t.bytes.len())
    }
}

#[test]
fn ten_thousand_flips_splices_and_duplicated_ranges_never_panic() {
    let targets = targets();
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    for i in 0..10_000 {
        let which = i % targets.len();
        let t = &targets[which];
        let mut bytes = t.bytes.clone();
        let (a, b) = {
            let x = offset(&mut rng, t);
            let y = (x + 1 + rng.below(64)).min(bytes.len());
            (x, y)
        };
        let what = match rng.below(3) {
            0 => {
                let mask = 1 + rng.below(255) as u8;
                bytes[a] ^= mask;
                format!("byte {a} xor 0x{mask:02x}")
            }
            1 => {
                let to = offset(&mut rng, t);
                let piece = t.bytes[a..b].to_vec();
                bytes.splice(to..to, piece);
                format!("bytes {a}..{b} spliced in at {to}")
            }
            _ => {
                let piece = t.bytes[a..b].to_vec();
                bytes.splice(b..b, piece);
                format!("bytes {a}..{b} duplicated")
            }
        };
        attempt(t, &bytes, &|| what.clone(), &mut tallies[which]);
    }
    for (t, tally) in targets.iter().zip(&tallies) {
        eprintln!("{}: {tally:?}", t.name);
        assert!(tally.failed > 0, "{}: no corruption was noticed", t.name);
    }
}
