//! Loading any input of at most 1 MiB allocates a bounded amount beyond the registered
//! RAM: this test binary counts every allocation (`peak_alloc`'s global allocator) and loads
//! hostile inputs into a `pc` destination: hostile counts and lengths near `u32::MAX`
//! and `u64::MAX` in every place the format has one, random bytes, and corrupted real
//! streams. The peak of live bytes during a load, over what the destination held
//! before, must stay under [`BOUND`].
//!
//! One test function only: the counter sees every thread of the process.

use std::io::Cursor;

use compat_tests::destination;
use compat_tests::fixture::{qemu10_dir, read_qemu10_json};
use peak_alloc::PeakAlloc;
use vmstate::stream::vmdesc;
use vmstate::stream::{LoadOptions, load_stream};
use vmstate::{Reader, VmState};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// Runs `f`; returns the peak of live bytes during it over the live bytes before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> usize {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let out = f();
    let peak = ALLOCATOR.peak_usage().saturating_sub(before);
    drop(out);
    peak
}

/// The most a load may allocate beyond what the destination holds: the 1 MiB read
/// buffer, 64 KiB growth steps of counted fields, the vmdesc of a 1 MiB input, and the
/// small change.
const BOUND: usize = 8 << 20;

/// Hostile inputs, each at most 1 MiB.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let pc = std::fs::read(qemu10_dir().join("pc-minimal.mig")).unwrap();
    let header = &pc[..0x1b]; // magic, version, configuration
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        assert!(bytes.len() <= 1 << 20, "{name} is over 1 MiB");
        out.push((name.to_string(), bytes));
    };

    // A FULL section for the hpet (a counted array of timers) with the count at
    // u8::MAX; for fw_cfg and the RTC with every be32 near u32::MAX.
    let full = |idstr: &str, version: u32, payload: &[u8]| {
        let mut s = header.to_vec();
        s.push(0x04);
        s.extend(99u32.to_be_bytes());
        s.push(idstr.len() as u8);
        s.extend(idstr.as_bytes());
        s.extend(0u32.to_be_bytes());
        s.extend(version.to_be_bytes());
        s.extend(payload);
        s
    };
    add(
        "hpet with 255 timers and no bytes",
        full("hpet", 2, &[0; 17]),
    );
    add("fw_cfg all 0xff", full("fw_cfg", 2, &[0xff; 64]));
    add("cpu timers all 0xff", full("timer", 2, &[0xff; 64]));
    // A counted string (idstr) and a command length at their maximum.
    let mut s = header.to_vec();
    s.extend([0x04, 0, 0, 0, 1, 0xff]);
    add("idstr of 255 bytes cut short", s);
    let mut s = header.to_vec();
    s.extend([0x08, 0, 7, 0xff, 0xff]);
    add("PACKAGED command with length 65535", s);
    let mut s = header.to_vec();
    s.extend([0x08, 0, 7, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    add("PACKAGED of 4 GiB", s);
    // RAM: a block list claiming u64::MAX bytes, a block of 255-byte name with a huge
    // size, a page at offset u64::MAX.
    let ram_start = |body: &[u8]| {
        let mut s = header.to_vec();
        s.extend([0x01, 0, 0, 0, 1, 3]);
        s.extend(b"ram");
        s.extend(0u32.to_be_bytes());
        s.extend(4u32.to_be_bytes());
        s.extend(body);
        s
    };
    add(
        "RAM total u64::MAX",
        ram_start(&(!0xfffu64 | 0x04).to_be_bytes()),
    );
    let mut body = (0x1000u64 | 0x04).to_be_bytes().to_vec();
    body.push(7);
    body.extend(b"pc.bios");
    body.extend(u64::MAX.to_be_bytes());
    add("RAM block of u64::MAX bytes", ram_start(&body));
    add(
        "RAM page at u64::MAX",
        ram_start(&(!0xfffu64 | 0x08).to_be_bytes()),
    );
    // The vmdesc trailer announcing 4 GiB.
    let eof = pc.len() - 98_923; // the trailer's offset (pc-minimal.sections.txt)
    let mut s = pc[..eof].to_vec();
    s.extend([0x06, 0xff, 0xff, 0xff, 0xff, b'{']);
    let tail = s.len() - (1 << 20).min(s.len());
    add("vmdesc of 4 GiB (last MiB)", s[tail..].to_vec());
    add("vmdesc of 4 GiB", {
        let mut t = s.clone();
        t.truncate(1 << 20);
        t
    });

    // Random bytes after a valid header, and corrupted copies of the real stream.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..64 {
        let len = (next() % (1 << 16)) as usize;
        let mut s = header.to_vec();
        s.extend((0..len).map(|_| next() as u8));
        add(&format!("random {i}"), s);
    }
    for i in 0..64 {
        let mut s = pc[..pc.len().min(1 << 20)].to_vec();
        for _ in 0..8 {
            let at = (next() as usize) % s.len();
            s[at] = 0xff;
        }
        add(&format!("pc-minimal with 8 bytes set to 0xff ({i})"), s);
    }
    out
}

#[test]
fn loading_any_input_of_at_most_1_mib_allocates_a_bounded_amount() {
    let analyze = read_qemu10_json("pc-minimal.analyze.json");
    let pc = std::fs::read(qemu10_dir().join("pc-minimal.mig")).unwrap();
    let desc = vmdesc::find_trailer(&mut Cursor::new(&pc))
        .unwrap()
        .unwrap();
    let mut worst = (0, String::new());
    for (name, bytes) in inputs() {
        for (skip, io) in [(false, false), (true, false), (true, true)] {
            let mut dest = destination::pc(&analyze);
            let opts = LoadOptions {
                skip_unknown: skip.then(|| desc.clone()),
                ..LoadOptions::default()
            };
            // From memory, and through the buffered I/O reader `load_file` uses.
            let peak = peak_during(|| {
                let mut r = if io {
                    Reader::from_io(Cursor::new(&bytes))
                } else {
                    Reader::from_slice(&bytes)
                };
                load_stream(&mut dest.reg, &mut r, &opts)
            });
            if peak > worst.0 {
                worst = (
                    peak,
                    format!("{name} (skip_unknown: {skip}, I/O reader: {io})"),
                );
            }
            assert!(
                peak <= BOUND,
                "{name}: {peak} bytes allocated during the load (bound {BOUND})"
            );
        }
    }
    eprintln!("largest: {} bytes, for {}", worst.0, worst.1);
    // The derive's own loader alone, on counted fields whose counts come from the
    // stream: a count just under the allocation limit followed by a few bytes allocates
    // one 64 KiB step, not the whole array.
    let mut items = 0x00ff_ffffu32.to_be_bytes().to_vec();
    items.extend([0xab; 100]);
    let peak = peak_during(|| Counted::default().load_bytes(&items, 1));
    assert!(peak <= 1 << 20, "counted array: {peak} bytes");
    let mut blob = [0u8; 4].to_vec();
    blob.extend(0x0fff_ffffu32.to_be_bytes());
    blob.extend([0xcd; 100]);
    let peak = peak_during(|| Counted::default().load_bytes(&blob, 1));
    assert!(peak <= 1 << 20, "counted buffer: {peak} bytes");
    // An error past the first 64 KiB step names the element by its index in the array.
    let mut short = 70_000u32.to_be_bytes().to_vec();
    short.extend(std::iter::repeat_n(0u8, 16 * 65_536 + 8));
    let err = Counted::default().load_bytes(&short, 1).unwrap_err();
    assert_eq!(err.path(), "counted.items[65536].b", "{err}");
}

/// Two counted fields whose counts come from the stream.
#[derive(VmState, Default)]
#[vmstate(name = "counted")]
struct Counted {
    n: u32,
    #[vmstate(len = n)]
    items: Vec<Pair>,
    m: u32,
    #[vmstate(buffer, len = m)]
    blob: Vec<u8>,
}

/// 16 bytes.
#[derive(VmState, Default, Clone)]
#[vmstate(name = "pair")]
struct Pair {
    a: u64,
    b: u64,
}
