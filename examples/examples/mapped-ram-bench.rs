//! Mapped-ram snapshots of a 1 GiB guest against plain file I/O of the same bytes, run
//! by run interleaved: the save (`save_mapped_ram_snapshot`, fsync included) against
//! one plain write of as many bytes (the guest's, from a copy of its memory as large)
//! and an fsync; the full restore (`load_file` into a
//! fresh guest) against one plain read of the file into fresh memory; the lazy
//! restore (pages fetched on first touch) against the full one, and the time to touch
//! every page afterwards; and the file's size on disk for a mostly-zero guest.
//!
//! ```text
//! cargo run --release --example mapped-ram-bench                 # 1 GiB, 5 runs
//! cargo run --release --example mapped-ram-bench -- --ram 256M --runs 3 --dir /tmp
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::{LoadOptions, StreamConfig, load_file, save_mapped_ram_snapshot};
use vmstate::{Registration, Registry};
use vmstate_examples::cli::{median, parse_size};

/// Mapped-ram save and restore against plain writes and reads.
#[derive(Parser, Debug)]
struct Args {
    /// Guest RAM (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    ram: u64,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the files (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only time this operation (save, write, restore, read), for profiling.
    #[arg(long)]
    only: Option<String>,
}

fn registry(ram: &Arc<RamBlock>) -> Registry {
    registry_with(ram, false)
}

fn registry_with(ram: &Arc<RamBlock>, lazy: bool) -> Registry {
    let mut reg = Registry::new();
    let h = RamHandler::new(vec![ram.clone()]).unwrap();
    let h = if lazy {
        h.with_lazy_restore()
    } else {
        h.with_mapped_ram()
    };
    reg.register_iterative("ram", RAM_VERSION, h, Registration::new())
        .unwrap();
    reg
}

/// Fills `ram`: every page holds data when `every`, else one page in a hundred.
fn fill(ram: &RamBlock, every: bool) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for p in 0..ram.pages() as u64 {
        if !every && p % 100 != 0 {
            continue;
        }
        for w in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ram.write_u64(p * 4096 + w * 512, x);
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Each write goes to a new file: the old one is removed first, outside the timing
/// (replacing it would count the kernel's freeing of its gigabyte).
fn save(ram: &Arc<RamBlock>, path: &Path) -> f64 {
    let _ = std::fs::remove_file(path);
    let t = Instant::now();
    save_mapped_ram_snapshot(&mut registry(ram), path, StreamConfig::new("bench")).unwrap();
    ms(t)
}

/// One plain write of `data` (as large as the file), 1 MiB at a time, then fsync.
fn plain_write(path: &Path, data: &[u8]) -> f64 {
    let _ = std::fs::remove_file(path);
    let t = Instant::now();
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in data.chunks(1 << 20) {
        f.write_all(chunk).unwrap();
    }
    f.sync_all().unwrap();
    ms(t)
}

/// A fresh guest of `len` bytes loaded from `path`, fully or lazily.
fn load(len: u64, path: &Path, lazy: bool) -> Arc<RamBlock> {
    let ram = Arc::new(RamBlock::new("pc.ram", len).unwrap());
    let opts = LoadOptions {
        machine: Some("bench".into()),
        capabilities: vec!["mapped-ram".into()],
        ..Default::default()
    };
    load_file(&mut registry_with(&ram, lazy), path, opts, false).unwrap();
    ram
}

fn restore(len: u64, path: &Path) -> f64 {
    let t = Instant::now();
    let _ram = load(len, path, false);
    ms(t)
}

/// A lazy restore: (time until the guest can run, time for a guest reading 8 bytes of
/// every page in order afterwards, on-demand stats).
fn lazy_restore(len: u64, path: &Path) -> (f64, f64, vmstate::ram::on_demand::OnDemandStats) {
    let t = Instant::now();
    let ram = load(len, path, true);
    let ready = ms(t);
    let t = Instant::now();
    let mut sum = 0u64;
    let mut b = [0u8; 8];
    for p in 0..ram.pages() as u64 {
        ram.read(p * 4096, &mut b);
        sum = sum.wrapping_add(u64::from_le_bytes(b));
    }
    std::hint::black_box(sum);
    (ready, ms(t), ram.on_demand_stats().unwrap())
}

/// One plain read of the whole file into fresh memory, 1 MiB at a time.
fn plain_read(path: &Path) -> f64 {
    let t = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let mut buf = vec![0u8; len];
    for chunk in buf.chunks_mut(1 << 20) {
        f.read_exact(chunk).unwrap();
    }
    std::hint::black_box(&buf);
    ms(t)
}

fn main() {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("mapped-ram-bench-{}.mig", std::process::id()));
    let plain = dir.join(format!("mapped-ram-bench-{}.raw", std::process::id()));
    let mib = args.ram >> 20;

    let ram = Arc::new(RamBlock::new("pc.ram", args.ram).unwrap());
    fill(&ram, true);
    save(&ram, &path); // warm-up
    let len = std::fs::metadata(&path).unwrap().len();
    // The same bytes from memory of the same size: the guest's, then the rest.
    let mut copy = vec![0u8; len as usize];
    ram.read(0, &mut copy[..args.ram as usize]);
    if let Some(op) = &args.only {
        for _ in 0..args.runs {
            let t = match op.as_str() {
                "save" => save(&ram, &path),
                "restore" => restore(args.ram, &path),
                "read" => plain_read(&path),
                _ => plain_write(&plain, &copy),
            };
            println!("{op}: {t:.1} ms");
        }
        return;
    }
    let (mut saves, mut writes, mut restores, mut reads) = (vec![], vec![], vec![], vec![]);
    let (mut save_ratio, mut restore_ratio) = (vec![], vec![]);
    // Saves and writes first, then restores and reads, each phase after a warm-up
    // pair, each pair in both orders in turn: what ran just before (and what the
    // kernel is still reclaiming from it) weighs on whichever comes first.
    plain_write(&plain, &copy);
    for run in 0..args.runs {
        let (s, w) = if run % 2 == 0 {
            let s = save(&ram, &path);
            (s, plain_write(&plain, &copy))
        } else {
            let w = plain_write(&plain, &copy);
            (save(&ram, &path), w)
        };
        saves.push(s);
        writes.push(w);
        save_ratio.push(s / w);
    }
    restore(args.ram, &path);
    plain_read(&path);
    for run in 0..args.runs {
        let (r, p) = if run % 2 == 0 {
            let r = restore(args.ram, &path);
            (r, plain_read(&path))
        } else {
            let p = plain_read(&path);
            (restore(args.ram, &path), p)
        };
        restores.push(r);
        reads.push(p);
        restore_ratio.push(r / p);
    }
    lazy_restore(args.ram, &path);
    let (mut ready, mut touch, mut lazy_ratio, mut fetch) = (vec![], vec![], vec![], None);
    for run in 0..args.runs {
        let ((l, t, st), full) = if run % 2 == 0 {
            let l = lazy_restore(args.ram, &path);
            (l, restore(args.ram, &path))
        } else {
            let full = restore(args.ram, &path);
            (lazy_restore(args.ram, &path), full)
        };
        ready.push(l);
        touch.push(t);
        lazy_ratio.push(l / full);
        fetch = Some(st);
    }
    println!(
        "{mib} MiB guest, data in every page; file {} bytes; {} runs, medians",
        len, args.runs
    );
    println!("| operation | ms | plain I/O of the same bytes, ms | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| save (fsync included) | {:.1} | {:.1} (write + fsync) | {:.2} |",
        median(saves),
        median(writes),
        median(save_ratio)
    );
    println!(
        "| full restore | {:.1} | {:.1} (read into fresh memory) | {:.2} |",
        median(restores),
        median(reads),
        median(restore_ratio)
    );

    let fetch = fetch.expect("a run");
    println!(
        "| lazy restore: until the guest can run | {:.2} | (the full restore above) | {:.4} |",
        median(ready),
        median(lazy_ratio)
    );
    println!(
        "| lazy restore: then touching every page in order | {:.1} | {} fetches of up to 64 pages, longest {:.2} ms | |",
        median(touch),
        fetch.fetches,
        fetch.max_wait_ns as f64 / 1e6
    );

    let sparse = Arc::new(RamBlock::new("pc.ram", args.ram).unwrap());
    fill(&sparse, false);
    save(&sparse, &path);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    println!();
    println!(
        "{mib} MiB guest, data in 1 page of 100: file length {} bytes, on disk {} bytes ({:.1}% of the length; the data pages are {} bytes)",
        meta.len(),
        meta.blocks() * 512,
        (meta.blocks() * 512) as f64 * 100.0 / meta.len() as f64,
        sparse.pages().div_ceil(100) * 4096
    );
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&plain);
}
