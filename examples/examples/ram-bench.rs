//! RAM and migration benchmarks, each against a baseline measured in the same run.
//!
//! ```text
//! cargo run --release --example ram-bench            # table
//! cargo run --release --example ram-bench -- --json  # one JSON object
//! cargo run --release --example ram-bench -- --dir /dev/shm  # snapshot files on a tmpfs
//! ```
//!
//! 1. One full RAM pass over 1 GiB (256 MiB of random pages, the rest zero) into memory,
//!    against `memcpy` of the non-zero bytes plus a zero scan of the rest; and the two
//!    parts alone (all-random RAM vs memcpy, all-zero RAM vs a memory scan).
//! 2. A round with 1% and 10% of the pages dirty, on 256 MiB and 1 GiB of RAM: the
//!    cost per dirty page must not depend on the RAM size.
//! 3. Migrating the 1 GiB machine over loopback TCP to a destination that loads it into
//!    fresh memory, against a raw loopback TCP copy of the same number of bytes: 9
//!    pairs, each migration followed by its copy; the median of the pairwise ratios and
//!    their range. The source sends pages straight from guest memory, as
//!    `migrate_over` does on a plain socket; 5 runs of that alternate with 5 that copy
//!    pages into the stream buffer.
//! 4. Saving the 1 GiB machine to a snapshot file (page cache, no fsync; written
//!    through a `BackgroundWriter`) against one large `write` of the same bytes, and
//!    loading it into fresh memory (`load_file`, which reads ahead in a thread) against
//!    one `read` of them: 9 interleaved pairs each, pairwise ratios.
//! 5. The same snapshot with its integrity record (CRC32C of every byte, the default)
//!    against without it, the two measured alternately.
//! 6. The loopback migration of 3. over mutual TLS (rustls, TLS 1.3, AES-256-GCM)
//!    against plain TCP, the two measured alternately.
//!
//! Times are medians over several repetitions.

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler, is_zero};
use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream, save_snapshot};
use vmstate::transport::BackgroundWriter;
use vmstate::transport::tls::{TlsClient, TlsServer};
use vmstate::{IterativeHandler, Reader, Registration, Registry, Writer};

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
const REPS: usize = 9;
/// Measurement/baseline pairs for the ratios of sections 3 and 4.
const PAIRS: usize = 9;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `ratios` and their range.
fn spread(ratios: &[f64]) -> (f64, f64, f64) {
    let mut v = ratios.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// Fills every `stride`-th page with pseudo-random bytes.
fn fill_random(ram: &RamBlock, stride: u64) {
    let mut x = 0x243f_6a88_85a3_08d3u64;
    let mut page = vec![0u8; PAGE as usize];
    for p in (0..ram.pages() as u64).step_by(stride as usize) {
        for chunk in page.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_ne_bytes());
        }
        ram.write(p * PAGE, &page);
    }
}

/// A registry with one RAM block as the `ram` section.
fn ram_registry(block: Arc<RamBlock>) -> Registry {
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![block]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg
}

/// One full pass (setup + iterate until done) into a reused in-memory writer.
fn full_pass(ram: &Arc<RamBlock>, buf: &mut Writer<'static>) -> u64 {
    let mut h = RamHandler::new(vec![ram.clone()]).unwrap();
    buf.clear();
    h.save_setup(buf).unwrap();
    h.save_iterate(buf, u64::MAX).unwrap();
    buf.position()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let json_out = std::env::args().any(|a| a == "--json");
    let mut results = serde_json::Map::new();
    let mut rows: Vec<(String, f64, f64, String)> = Vec::new();

    // ---- 1. full pass ----
    let mixed = Arc::new(RamBlock::new("pc.ram", GIB).unwrap());
    fill_random(&mixed, 4); // 1 page in 4 random: 256 MiB
    let random = Arc::new(RamBlock::new("pc.ram", GIB / 4).unwrap());
    fill_random(&random, 1);
    // Zero pages that were written (so they must be scanned), and untouched ones.
    let zero = Arc::new(RamBlock::new("pc.ram", GIB * 3 / 4).unwrap());
    zero.write(0, &vec![0u8; (GIB * 3 / 4) as usize]);
    let untouched = Arc::new(RamBlock::new("pc.ram", GIB * 3 / 4).unwrap());
    let mut buf = Writer::from_vec(Vec::with_capacity((GIB / 4 + (16 << 20)) as usize));

    let src = vec![0x5au8; (GIB / 4) as usize];
    let mut dst = vec![0u8; (GIB / 4) as usize];
    // Real memory (not calloc's lazily mapped zero page), like a guest's written RAM.
    // The ones must be stored before the zeros (black_box), or the compiler turns the
    // two into one calloc and the "scan" reads the kernel's shared zero page, from
    // cache: 768 MiB in 12-18 ms instead of 80-100 ms from memory on this machine.
    let mut zeros = vec![1u8; (GIB * 3 / 4) as usize];
    black_box(&mut zeros);
    zeros.fill(0);
    let zeros = black_box(zeros);
    let t_memcpy = time(REPS, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    });
    // The same bytes as the mixed block's non-zero pages: every 4th page of 1 GiB.
    let strided_src = vec![0x5au8; GIB as usize];
    let t_memcpy_strided = time(REPS, || {
        for (i, out) in dst.chunks_exact_mut(PAGE as usize).enumerate() {
            let at = i * 4 * PAGE as usize;
            out.copy_from_slice(black_box(&strided_src[at..at + PAGE as usize]));
        }
        black_box(&dst);
    });
    drop(strided_src);
    let t_scan = time(REPS, || {
        black_box(zeros.chunks_exact(PAGE as usize).all(is_zero));
    });
    let t_mixed = time(REPS, || {
        black_box(full_pass(&mixed, &mut buf));
    });
    let t_random = time(REPS, || {
        black_box(full_pass(&random, &mut buf));
    });
    let t_zero = time(REPS, || {
        black_box(full_pass(&zero, &mut buf));
    });
    let t_untouched = time(REPS, || {
        black_box(full_pass(&untouched, &mut buf));
    });
    let baseline = t_memcpy_strided + t_scan;
    rows.push((
        "full pass 1 GiB (every 4th page random)".into(),
        ms(t_mixed),
        ms(baseline),
        "memcpy of those pages + zero scan 768 MiB".into(),
    ));
    rows.push((
        "  non-zero pages: pass over 256 MiB random".into(),
        ms(t_random),
        ms(t_memcpy),
        "memcpy 256 MiB".into(),
    ));
    rows.push((
        "  zero pages: pass over 768 MiB written zeros".into(),
        ms(t_zero),
        ms(t_scan),
        "zero scan 768 MiB".into(),
    ));
    rows.push((
        "  zero pages: pass over 768 MiB never written".into(),
        ms(t_untouched),
        ms(t_scan),
        "zero scan 768 MiB".into(),
    ));
    results.insert("full_pass".into(), json!({
        "pass_ms": ms(t_mixed), "baseline_ms": ms(baseline), "ratio": ms(t_mixed) / ms(baseline),
        "memcpy_strided_ms": ms(t_memcpy_strided),
        "nonzero_pass_ms": ms(t_random), "memcpy_ms": ms(t_memcpy),
        "nonzero_ratio": ms(t_random) / ms(t_memcpy),
        "zero_pass_ms": ms(t_zero), "scan_ms": ms(t_scan), "zero_ratio": ms(t_zero) / ms(t_scan),
        "untouched_pass_ms": ms(t_untouched),
    }));
    drop((src, dst, zeros, random, zero, untouched));

    // ---- 2. dirty rounds ----
    let small = Arc::new(RamBlock::new("pc.ram", GIB / 4).unwrap());
    fill_random(&small, 4);
    let mut dirty = serde_json::Map::new();
    for (label, ram) in [("256MiB", &small), ("1GiB", &mixed)] {
        for percent in [1u64, 10] {
            let mut h = RamHandler::new(vec![ram.clone()]).unwrap();
            buf.clear();
            h.save_setup(&mut buf).unwrap();
            h.save_iterate(&mut buf, u64::MAX).unwrap(); // first full pass
            // The same dirty pages on both sizes: `percent` of the first 256 MiB, at the
            // same addresses, so that only the RAM size differs.
            let n = (GIB / 4 / PAGE) * percent / 100;
            let step = (GIB / 4 / PAGE) / n;
            // Only the round is timed, not the guest's writes.
            let t = median(
                (0..REPS)
                    .map(|_| {
                        for i in 0..n {
                            ram.write_u64(i * step * PAGE, i);
                        }
                        buf.clear();
                        let t = Instant::now();
                        black_box(h.save_iterate(&mut buf, u64::MAX).unwrap());
                        t.elapsed()
                    })
                    .collect(),
            );
            let ns_per_page = t.as_secs_f64() * 1e9 / n as f64;
            rows.push((
                format!("round, {n} dirty pages ({percent}% of 256 MiB), RAM {label}"),
                ms(t),
                f64::NAN,
                format!("{ns_per_page:.0} ns per dirty page"),
            ));
            dirty.insert(
                format!("{label}_{percent}pct"),
                json!({
                "dirty_pages": n, "round_ms": ms(t), "ns_per_dirty_page": ns_per_page }),
            );
        }
    }
    results.insert("dirty_rounds".into(), serde_json::Value::Object(dirty));
    drop(small);

    // ---- 3. migration over loopback TCP vs raw TCP, pair by pair ----
    // Each migration loads into fresh destination memory (its first-touch page faults
    // are part of a real migration) and is followed by a raw copy of the same number of
    // bytes; the ratio is taken per pair, so a slow moment of the machine hits both.
    let migrate_fresh = |in_place: bool| {
        let dst_ram = Arc::new(RamBlock::new("pc.ram", GIB).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Instant::now();
        let dst = std::thread::spawn(move || {
            let mut reg = ram_registry(dst_ram);
            let (sock, _) = listener.accept().unwrap();
            load_stream(
                &mut reg,
                &mut Reader::from_io(sock),
                &LoadOptions::default(),
            )
            .unwrap()
            .bytes
        });
        let mut reg = ram_registry(mixed.clone());
        let sock = TcpStream::connect(addr).unwrap();
        // As `migrate_over` writes a plain socket: pages straight from guest memory.
        let w = match in_place {
            true => Writer::to_fd(sock),
            false => Writer::to_io(sock),
        };
        SaveSession::with_writer(&mut reg, w, StreamConfig::new("bench"))
            .save_all()
            .unwrap();
        let n = dst.join().unwrap();
        (t.elapsed(), n)
    };
    let raw_copy = |payload: &Arc<Vec<u8>>| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let n = payload.len();
        let t = Instant::now();
        let dst = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0;
            while got < n {
                let k = sock.read(&mut buf).unwrap();
                assert!(k > 0);
                got += k;
            }
        });
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.write_all(payload).unwrap();
        dst.join().unwrap();
        t.elapsed()
    };
    let stream_len = migrate_fresh(true).1; // also warms up
    let payload = Arc::new(vec![0xa5u8; stream_len as usize]);
    let (mut t_migrations, mut t_raws, mut pair_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let (t_m, _) = migrate_fresh(true);
        let t_r = raw_copy(&payload);
        pair_ratios.push(t_r.as_secs_f64() / t_m.as_secs_f64());
        t_migrations.push(t_m);
        t_raws.push(t_r);
    }
    let (t_migrate, t_raw) = (median(t_migrations), median(t_raws));
    let (ratio, lo, hi) = spread(&pair_ratios);
    // Pages sent in place against pages copied into the stream buffer, alternately.
    let (mut copied, mut in_place) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        copied.push(migrate_fresh(false).0);
        in_place.push(migrate_fresh(true).0);
    }
    let (t_copied, t_in_place) = (median(copied), median(in_place));
    // The two ends alone: the source into a sink that discards, the destination from
    // a stream in memory (fresh memory each time).
    let t_source = time(3, || {
        let mut reg = ram_registry(mixed.clone());
        save_snapshot(&mut reg, std::io::sink(), StreamConfig::new("bench")).unwrap();
    });
    let mut stream = Vec::new();
    {
        let mut reg = ram_registry(mixed.clone());
        save_snapshot(&mut reg, &mut stream, StreamConfig::new("bench")).unwrap();
    }
    let t_dest = median(
        (0..3)
            .map(|_| {
                let mut reg = ram_registry(Arc::new(RamBlock::new("pc.ram", GIB).unwrap()));
                let t = Instant::now();
                load_stream(
                    &mut reg,
                    &mut Reader::from_io(&stream[..]),
                    &LoadOptions::default(),
                )
                .unwrap();
                t.elapsed()
            })
            .collect(),
    );
    drop(stream);
    rows.push((
        format!(
            "migrate 1 GiB over loopback TCP ({} MiB stream), {PAIRS} pairs",
            stream_len >> 20
        ),
        ms(t_migrate),
        ms(t_raw),
        format!(
            "raw TCP copy; throughput ratio, median of pairs {ratio:.2} (pairs {lo:.2}-{hi:.2})"
        ),
    ));
    rows.push((
        "  pages sent in place, 5 runs alternately with".into(),
        ms(t_in_place),
        ms(t_copied),
        "pages copied into the stream buffer".into(),
    ));
    rows.push((
        "  source alone (copying into a discarding sink)".into(),
        ms(t_source),
        ms(t_raw),
        "raw TCP copy".into(),
    ));
    rows.push((
        "  destination alone (from memory, fresh RAM)".into(),
        ms(t_dest),
        ms(t_raw),
        "raw TCP copy".into(),
    ));
    results.insert(
        "tcp_migration".into(),
        json!({
        "source_alone_ms": ms(t_source), "destination_alone_ms": ms(t_dest),
        "stream_bytes": stream_len, "migrate_ms": ms(t_migrate), "raw_tcp_ms": ms(t_raw),
        "throughput_ratio": ratio, "pair_ratio_min": lo, "pair_ratio_max": hi,
        "in_place_ms": ms(t_in_place), "copied_ms": ms(t_copied),
        "pairs": PAIRS }),
    );
    drop(payload);

    // ---- 4. snapshot to a file vs one large write ----
    // `--dir DIR` puts the snapshot files elsewhere (a tmpfs such as /dev/shm measures
    // the engine without the disk's writeback and the page cache's evictions).
    let base = std::env::args()
        .skip_while(|a| a != "--dir")
        .nth(1)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = base.join(format!("vmstate-ram-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("snap.mig");
    let save_once = || {
        let mut reg = ram_registry(mixed.clone());
        let t = Instant::now();
        // The writes run in a second thread while the next MiB is produced.
        let mut out = BackgroundWriter::new(File::create(&snap).unwrap());
        save_snapshot(&mut reg, &mut out, StreamConfig::new("bench")).unwrap();
        out.into_inner().unwrap();
        t.elapsed()
    };
    save_once();
    let bytes = std::fs::read(&snap).unwrap();
    let plain = dir.join("plain.bin");
    let write_once = || {
        let t = Instant::now();
        File::create(&plain).unwrap().write_all(&bytes).unwrap();
        t.elapsed()
    };
    let load_once = || {
        let mut reg = ram_registry(Arc::new(RamBlock::new("pc.ram", GIB).unwrap()));
        let opts = LoadOptions::default();
        let t = Instant::now();
        vmstate::stream::load_file(&mut reg, &snap, opts, false).unwrap();
        t.elapsed()
    };
    let read_once = || {
        let mut out = Vec::with_capacity(bytes.len());
        let t = Instant::now();
        File::open(&plain).unwrap().read_to_end(&mut out).unwrap();
        black_box(&out);
        t.elapsed()
    };
    let (mut saves, mut writes, mut save_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut loads, mut reads, mut load_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let (s, w) = (save_once(), write_once());
        save_ratios.push(s.as_secs_f64() / w.as_secs_f64());
        saves.push(s);
        writes.push(w);
        let (l, r) = (load_once(), read_once());
        load_ratios.push(l.as_secs_f64() / r.as_secs_f64());
        loads.push(l);
        reads.push(r);
    }
    let (t_snapshot, t_write) = (median(saves), median(writes));
    let (t_load, t_read) = (median(loads), median(reads));
    let (save_ratio, save_lo, save_hi) = spread(&save_ratios);
    let (load_ratio, load_lo, load_hi) = spread(&load_ratios);
    // ---- 5. the integrity record's cost, with and without alternating ----
    let save_to_file = |record: bool| {
        let mut reg = ram_registry(mixed.clone());
        let mut config = StreamConfig::new("bench");
        config.integrity_record = record;
        let t = Instant::now();
        save_snapshot(&mut reg, File::create(&snap).unwrap(), config).unwrap();
        t.elapsed()
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        without.push(save_to_file(false));
        with.push(save_to_file(true));
    }
    let (t_with, t_without) = (median(with), median(without));
    std::fs::remove_dir_all(&dir).unwrap();
    rows.push((
        format!(
            "snapshot 1 GiB to a file ({} MiB), {PAIRS} pairs",
            bytes.len() >> 20
        ),
        ms(t_snapshot),
        ms(t_write),
        format!("one write() of the same bytes; median of pairs {save_ratio:.2} ({save_lo:.2}-{save_hi:.2})"),
    ));
    rows.push((
        "load that snapshot into fresh RAM".into(),
        ms(t_load),
        ms(t_read),
        format!("one read() of the same bytes; median of pairs {load_ratio:.2} ({load_lo:.2}-{load_hi:.2})"),
    ));
    results.insert(
        "snapshot_file".into(),
        json!({
        "file_bytes": bytes.len(), "snapshot_ms": ms(t_snapshot), "write_ms": ms(t_write),
        "ratio": save_ratio, "ratio_min": save_lo, "ratio_max": save_hi,
        "load_ms": ms(t_load), "read_ms": ms(t_read),
        "load_ratio": load_ratio, "load_ratio_min": load_lo, "load_ratio_max": load_hi }),
    );
    rows.push((
        "  with the integrity record (CRC32C)".into(),
        ms(t_with),
        ms(t_without),
        "the same snapshot without it".into(),
    ));
    results.insert(
        "integrity_record".into(),
        json!({ "with_ms": ms(t_with), "without_ms": ms(t_without),
        "ratio": ms(t_with) / ms(t_without) }),
    );

    // ---- 6. the loopback migration over mutual TLS vs plain TCP, alternately ----
    let pki_dir =
        std::env::temp_dir().join(format!("vmstate-ram-bench-pki-{}", std::process::id()));
    let pki = compat_tests::certs::TestPki::generate(&pki_dir).unwrap();
    let server = TlsServer::new(&pki.server()).unwrap();
    let client = TlsClient::new(&pki.client(), Some("localhost")).unwrap();
    let dst_ram = Arc::new(RamBlock::new("pc.ram", GIB).unwrap());
    let migrate_once = |tls: bool| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ram, server) = (dst_ram.clone(), server.clone());
        let t = Instant::now();
        let dst = std::thread::spawn(move || {
            let mut reg = ram_registry(ram);
            let (sock, _) = listener.accept().unwrap();
            let mut r = match tls {
                true => Reader::from_io(server.accept(sock).unwrap()),
                false => Reader::from_io(sock),
            };
            load_stream(&mut reg, &mut r, &LoadOptions::default()).unwrap();
        });
        let mut reg = ram_registry(mixed.clone());
        let sock = TcpStream::connect(addr).unwrap();
        match tls {
            true => {
                let mut s = client.connect(sock).unwrap();
                save_snapshot(&mut reg, &mut s, StreamConfig::new("bench")).unwrap();
                s.flush().unwrap();
            }
            false => {
                save_snapshot(&mut reg, sock, StreamConfig::new("bench")).unwrap();
            }
        }
        dst.join().unwrap();
        t.elapsed()
    };
    let (mut over_tls, mut over_tcp) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        over_tcp.push(migrate_once(false));
        over_tls.push(migrate_once(true));
    }
    let (t_tls, t_tcp) = (median(over_tls), median(over_tcp));
    drop(dst_ram);
    std::fs::remove_dir_all(&pki_dir).unwrap();
    rows.push((
        "migrate 1 GiB over loopback with mutual TLS".into(),
        ms(t_tls),
        ms(t_tcp),
        "the same over plain TCP, alternately".into(),
    ));
    results.insert(
        "tls_migration".into(),
        json!({ "tls_ms": ms(t_tls), "tcp_ms": ms(t_tcp), "ratio": ms(t_tls) / ms(t_tcp) }),
    );

    if json_out {
        println!("{}", serde_json::Value::Object(results));
        return;
    }
    println!(
        "{:<62} {:>10} {:>10} {:>7}  baseline",
        "measurement", "ms", "base ms", "ratio"
    );
    for (name, t, base, what) in rows {
        if base.is_nan() {
            println!("{name:<62} {t:>10.2} {:>10} {:>7}  {what}", "", "");
        } else {
            println!(
                "{name:<62} {t:>10.2} {base:>10.2} {:>7.2}  {what}",
                t / base
            );
        }
    }
}
