//! Decoder speed (BENCHMARKS.md, "Decoder speed").
//!
//! Run with `cargo bench -p vmstate-cli --bench decoder`. It writes streams of a VM
//! with 1 GiB of RAM with the stream engine (one 1 GiB RAM block plus a small device;
//! first with 256 MiB of pseudo-random pages and the rest zero, then with every page
//! random, a stream of about 1 GiB) into a temporary directory, then times, in the
//! same run:
//! * a plain sequential read of the file (1 MiB reads): the baseline, and a plain
//!   copy of it (1 MiB reads and writes), the baseline for `rewrite`;
//! * `decode_file` (the library, pages skipped);
//! * `vmstate dump FILE`, `vmstate verify FILE` and `vmstate rewrite FILE OUT` (the
//!   built binary, output to /dev/null or the temp dir);
//!
//! and the same on the largest real fixture, `pc-ramdata.mig`. Each time is the best
//! of a few runs (the file is in the page cache). Set `DECODER_BENCH_GIB` to change
//! the generated size.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::{StreamConfig, save_snapshot};
use vmstate::{Registration, Registry, VmState};
use vmstate_tools::decode::{self, DecodeOptions};

#[derive(VmState, Default)]
#[vmstate(name = "bench-dev", version = 1)]
struct BenchDev {
    counter: u64,
    regs: [u32; 16],
}

fn best_of(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("n > 0")
}

fn sequential_read(path: &Path) {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut sum = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sum = sum.wrapping_add(buf[n - 1] as u64);
    }
    std::hint::black_box(sum);
}

/// A plain copy through a 1 MiB buffer: the baseline for `rewrite`.
fn plain_copy(from: &Path, to: &Path) {
    let mut f = File::open(from).unwrap();
    let mut t = File::create(to).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut t, &buf[..n]).unwrap();
    }
}

fn run_bin(args: &[&str]) {
    let st = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "vmstate {args:?} failed");
}

/// A stream of a VM with `gib` GiB of RAM whose first `size / random_div` bytes are
/// pseudo-random and the rest zero.
fn generate(path: &Path, gib: u64, random_div: u64) {
    let size = gib << 30;
    let ram = Arc::new(RamBlock::new("pc.ram", size).unwrap());
    let random = size / random_div;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 1 << 20];
    for off in (0..random).step_by(chunk.len()) {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        ram.write(off, &chunk);
    }
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![ram]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg.register_device(
        BenchDev {
            counter: 42,
            regs: [7; 16],
        },
        Registration::new(),
    )
    .unwrap();
    let f = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    save_snapshot(&mut reg, f, StreamConfig::new("bench-1.0")).unwrap();
}

fn measure(label: &str, path: &Path, out_dir: &Path, runs: usize) {
    let size = std::fs::metadata(path).unwrap().len();
    let p = path.to_str().unwrap();
    let out = out_dir.join("rewritten.mig");
    let o = out.to_str().unwrap();
    sequential_read(path); // warm the page cache
    let base = best_of(runs, || sequential_read(path));
    let decode = best_of(runs, || {
        let s = decode::decode_file(path, DecodeOptions::default()).unwrap();
        std::hint::black_box(s.records.len());
    });
    let dump = best_of(runs, || run_bin(&["dump", p]));
    let verify = best_of(runs, || run_bin(&["verify", p]));
    let copy = best_of(runs, || plain_copy(path, &out));
    let rewrite = best_of(runs, || run_bin(&["rewrite", "--no-check", p, o]));
    assert_eq!(
        std::fs::read(path).unwrap().len(),
        std::fs::read(&out).unwrap().len()
    );
    let mib = size as f64 / (1 << 20) as f64;
    println!("\n{label}: {size} bytes ({mib:.1} MiB), best of {runs}");
    println!(
        "  {:<34} {:>10} {:>12} {:>10}",
        "what", "time", "MiB/s", "vs read"
    );
    for (what, t) in [
        ("sequential read (baseline)", base),
        ("decode_file (pages skipped)", decode),
        ("vmstate dump > /dev/null", dump),
        ("vmstate verify", verify),
        ("plain copy (1 MiB read+write)", copy),
        ("vmstate rewrite --no-check", rewrite),
    ] {
        let s = t.as_secs_f64();
        println!(
            "  {what:<34} {:>8.1}ms {:>12.0} {:>9.2}x",
            s * 1e3,
            mib / s,
            s / base.as_secs_f64()
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: only
    // run the measurement under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let gib: u64 = std::env::var("DECODER_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../compat-tests/fixtures/qemu-10.0.2/pc-ramdata.mig");
    if fixture.exists() {
        measure(
            "pc-ramdata.mig (QEMU 10.0.2, -m 64)",
            &fixture,
            dir.path(),
            10,
        );
    }
    // 1 GiB of RAM with 256 MiB random (the rest zero pages), then 1 GiB all random
    // (a stream of about 1 GiB).
    for (div, what) in [(4, "1/4 random, rest zero"), (1, "all random")] {
        let path = dir.path().join("big.mig");
        let t = Instant::now();
        generate(&path, gib, div);
        println!(
            "\ngenerated {} in {:.1}s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
        measure(
            &format!("generated stream ({gib} GiB RAM, {what})"),
            &path,
            dir.path(),
            3,
        );
        std::fs::remove_file(&path).unwrap();
    }
}
