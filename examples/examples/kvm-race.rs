//! The race against QEMU on the same guest: QEMU 10 under KVM and this project's KVM
//! example migrate the same guest program (the multiboot image of
//! `vmstate_examples::kvm`, loaded at the same address, its working set at the same
//! place), with the same RAM size, working set, downtime limit and bandwidth, over
//! loopback TCP, interleaved run by run; each run is followed by a raw loopback copy of
//! the bytes it sent, the yardstick for throughput.
//!
//! ```text
//! cargo run --release --example kvm-race                     # 3 runs of each row
//! cargo run --release --example kvm-race -- --runs 5 --rows paused,64M
//! ```
//!
//! Rows: `paused` (256 MiB of pseudo-random words placed in the guest's memory before
//! it starts, by this VMM and by QEMU's `-device loader`; the guest is paused, then
//! migrated), and `64M`, `256M`, `768M` (the guest keeps rewriting a working set of that
//! size while it is migrated). QEMU: `qemu-system-x86_64 -accel kvm -M pc -m RAM -kernel
//! IMAGE`, migrated with QMP (`migrate`, polling `query-migrate` every 10 ms), its
//! `max-bandwidth` set to the same cap (unlimited: 1 TB/s) and its `downtime-limit` to
//! the same limit. Ours: the `kvm-migration` example's two ends, the destination in a
//! second process. A run that has not converged after `--max-time` seconds is forced to
//! switch over (ours: `OnTimeout::ForceSwitchover`; QEMU: its downtime limit raised to
//! 100 s), and the table says so. With `--prealloc`, both destinations fault in their
//! guest memory before the migration (QEMU: `-mem-prealloc`; ours:
//! `DestinationConfig::preallocate`). Needs `/dev/kvm` and QEMU 10 (`.ci/run` installs
//! it).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use compat_tests::qemu::{Qemu, free_port};
use serde_json::json;
use vmstate_examples::cli::{median, raw_loopback_copy as raw_copy};
use vmstate_examples::kvm::live::{DestinationConfig, SourceConfig, run_destination, run_source};
use vmstate_examples::kvm::{
    LineSink, WORKING_SET_BASE, Workload, fill_words, guest_image, preload,
};

/// QEMU and this project migrating the same KVM guest, interleaved.
#[derive(Parser, Debug)]
struct Args {
    /// Runs of each row and each side.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 1024)]
    ram_mib: u64,
    /// Downtime limit in milliseconds.
    #[arg(long, default_value_t = 300)]
    downtime_ms: u64,
    /// Bandwidth cap in MiB/s (default: unlimited).
    #[arg(long)]
    max_bandwidth_mib: Option<u64>,
    /// Force the switchover after this many seconds.
    #[arg(long, default_value_t = 30)]
    max_time: u64,
    /// Rows to run: paused, 64M, 256M, 768M.
    #[arg(long, value_delimiter = ',', default_value = "paused,64M,256M,768M")]
    rows: Vec<String>,
    /// Both destinations fault in their guest memory before the migration starts.
    #[arg(long)]
    prealloc: bool,
    /// QEMU's runs use postcopy: `postcopy-ram` (and `postcopy-blocktime` on the
    /// destination) on both ends, `migrate-start-postcopy` this many milliseconds after
    /// `migrate`. Our side still runs precopy here (`kvm-migration --postcopy` measures
    /// ours).
    #[arg(long, value_name = "MS")]
    qemu_postcopy_after_ms: Option<u64>,
    /// With --qemu-postcopy-after-ms: `postcopy-preempt` on both QEMUs too (requested
    /// pages on their own connection).
    #[arg(long, requires = "qemu_postcopy_after_ms")]
    qemu_postcopy_preempt: bool,
    /// (Internal) run our destination, listening on ADDR.
    #[arg(long, hide = true)]
    listen: Option<String>,
}

/// One migration's figures.
#[derive(Debug, Clone, Default)]
struct Run {
    total_ms: f64,
    downtime_ms: f64,
    setup_ms: f64,
    rounds: f64,
    bytes: f64,
    /// Throughput as a fraction of a raw loopback copy of the same bytes.
    raw_ratio: f64,
    forced: bool,
    /// Postcopy (QEMU only): pages the destination requested, and the total time its
    /// vCPUs were blocked on missing pages (`postcopy-blocktime`), in ms.
    postcopy_requests: f64,
    blocktime_ms: f64,
}

fn quiet() -> LineSink {
    Arc::new(|_: &str| {})
}

fn workload(row: &str) -> Workload {
    match row {
        "paused" => Workload::Preloaded {
            pages: 65536,
            seed: 0x2545_f491,
        },
        size => {
            let mib: u32 = size
                .trim_end_matches(['M', 'm'])
                .parse()
                .unwrap_or_else(|_| {
                    panic!("row '{size}' is neither 'paused' nor a size like 256M")
                });
            Workload::Rewrite { pages: mib * 256 }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(addr) = &args.listen {
        let listener = TcpListener::bind(addr).unwrap();
        let local = listener.local_addr().unwrap();
        let cfg = DestinationConfig {
            ram: args.ram_mib << 20,
            vcpus: 1,
            preallocate: args.prealloc,
            postcopy_preempt: false,
        };
        let ready = || {
            println!("LISTENING {local}");
            std::io::stdout().flush().unwrap();
        };
        return match run_destination(listener, &cfg, quiet(), ready) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kvm-race destination: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let dir = std::env::temp_dir().join(format!("vmstate-kvm-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut table = Vec::new();
    for row in &args.rows {
        let w = workload(row);
        let image = dir.join(format!("{row}.img"));
        std::fs::write(&image, guest_image(w)).unwrap();
        let (mut qemu, mut ours) = (Vec::new(), Vec::new());
        for i in 0..args.runs {
            eprintln!("{row}: run {} of {}", i + 1, args.runs);
            qemu.push(run_qemu(&args, &dir, &image, w));
            ours.push(run_ours(&args, w));
        }
        table.push((row.clone(), median_run(&qemu), median_run(&ours)));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    print_table(&args, &table);
    ExitCode::SUCCESS
}

fn qemu_vm(dir: &Path, tag: &str, args: &Args, image: &Path, extra: &[&str]) -> Qemu {
    let ram = format!("{}M", args.ram_mib);
    let mut all = vec![
        "-accel",
        "kvm",
        "-M",
        "pc",
        "-m",
        &ram,
        "-kernel",
        image.to_str().unwrap(),
    ];
    all.extend_from_slice(extra);
    Qemu::start_with(
        dir,
        tag,
        &["-no-user-config", "-nodefaults", "-display", "none"],
        &all,
    )
}

fn run_qemu(args: &Args, dir: &Path, image: &Path, w: Workload) -> Run {
    let port = free_port();
    // Preloaded memory goes in with QEMU's generic loader, on both ends (the same
    // devices).
    let loader = preload(w).map(|data| {
        let file = dir.join("preload.bin");
        std::fs::write(&file, data).unwrap();
        format!(
            "loader,file={},addr=0x{WORKING_SET_BASE:x},force-raw=on",
            file.display()
        )
    });
    let extra: Vec<&str> = loader
        .iter()
        .flat_map(|l| ["-device", l.as_str()])
        .collect();
    let mut dst_args = vec!["-incoming", "defer"];
    if args.prealloc {
        dst_args.push("-mem-prealloc");
    }
    dst_args.extend(&extra);
    let mut dst = qemu_vm(dir, "dst", args, image, &dst_args);
    let mut src = qemu_vm(dir, "src", args, image, &extra);
    if args.qemu_postcopy_after_ms.is_some() {
        let caps = |names: &[&str]| {
            let v: Vec<_> = names
                .iter()
                .map(|c| json!({"capability": c, "state": true}))
                .collect();
            json!({ "capabilities": v })
        };
        let preempt: &[&str] = match args.qemu_postcopy_preempt {
            true => &["postcopy-preempt"],
            false => &[],
        };
        dst.execute(
            "migrate-set-capabilities",
            caps(&[&["postcopy-ram", "postcopy-blocktime"][..], preempt].concat()),
        );
        src.execute(
            "migrate-set-capabilities",
            caps(&[&["postcopy-ram"][..], preempt].concat()),
        );
    }
    let bandwidth = args.max_bandwidth_mib.map_or(1u64 << 40, |m| m << 20);
    src.execute(
        "migrate-set-parameters",
        json!({"downtime-limit": args.downtime_ms, "max-bandwidth": bandwidth}),
    );
    settle(&mut src, dir, w);
    dst.execute(
        "migrate-incoming",
        json!({"uri": format!("tcp:127.0.0.1:{port}")}),
    );
    src.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    let started = Instant::now();
    let mut forced = false;
    let mut postcopy_started = false;
    let reply = loop {
        if let Some(ms) = args.qemu_postcopy_after_ms
            && !postcopy_started
            && started.elapsed() >= Duration::from_millis(ms)
        {
            src.execute("migrate-start-postcopy", json!({}));
            postcopy_started = true;
        }
        let r = src.execute("query-migrate", json!({}));
        match r["status"].as_str().unwrap_or("") {
            "completed" => break r,
            "failed" | "cancelled" => panic!("QEMU's migration failed: {r}"),
            _ => {}
        }
        if !forced && started.elapsed() > Duration::from_secs(args.max_time) {
            forced = true;
            src.execute("migrate-set-parameters", json!({"downtime-limit": 100_000}));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let blocktime_ms = match args.qemu_postcopy_after_ms {
        Some(_) => {
            // The destination's figures, once its side of the migration completed.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = dst.execute("query-migrate", json!({}));
                if r["status"] == "completed" || Instant::now() > deadline {
                    break r["postcopy-blocktime"].as_f64().unwrap_or(0.0);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        None => 0.0,
    };
    src.quit();
    dst.quit();
    let bytes = reply["ram"]["transferred"].as_f64().unwrap_or(0.0);
    let total_ms = reply["total-time"].as_f64().unwrap_or(0.0);
    Run {
        total_ms,
        downtime_ms: reply["downtime"].as_f64().unwrap_or(0.0),
        setup_ms: reply["setup-time"].as_f64().unwrap_or(0.0),
        rounds: reply["ram"]["dirty-sync-count"].as_f64().unwrap_or(0.0),
        bytes,
        raw_ratio: raw_copy(bytes as u64).as_secs_f64() * 1e3 / total_ms,
        forced,
        postcopy_requests: reply["ram"]["postcopy-requests"].as_f64().unwrap_or(0.0),
        blocktime_ms,
    }
}

/// Lets QEMU's guest run as ours does before its migration: a rewriting guest until
/// it finished a pass (the firmware boots it first, which takes a while), then 200 ms
/// more; a filling one until its memory is filled (the last word written), then it is
/// paused.
fn settle(src: &mut Qemu, dir: &Path, w: Workload) {
    let file: PathBuf = dir.join("word.bin");
    let word_at = |src: &mut Qemu, addr: u64| {
        src.execute(
            "pmemsave",
            json!({"val": addr, "size": 4, "filename": file.to_str().unwrap()}),
        );
        let b = std::fs::read(&file).unwrap();
        u32::from_le_bytes(b[..4].try_into().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    match w {
        Workload::Rewrite { pages } => {
            let last_page = WORKING_SET_BASE + u64::from(pages - 1) * 4096;
            while word_at(src, last_page) < 1 {
                assert!(Instant::now() < deadline, "QEMU's guest never made a pass");
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Workload::Preloaded { .. } => {
            // The program writes FILLED just below the working set once it runs.
            while word_at(src, WORKING_SET_BASE - 4) != vmstate_examples::kvm::FILLED {
                assert!(Instant::now() < deadline, "QEMU's guest never started");
                std::thread::sleep(Duration::from_millis(20));
            }
            src.execute("stop", json!({}));
        }
        Workload::Fill { pages, seed } => {
            let last = fill_words(seed).nth(pages as usize * 1024 - 1).unwrap();
            let addr = WORKING_SET_BASE + u64::from(pages) * 4096 - 4;
            while word_at(src, addr) != last {
                assert!(
                    Instant::now() < deadline,
                    "QEMU's guest never filled its memory"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            src.execute("stop", json!({}));
        }
    }
}

fn run_ours(args: &Args, w: Workload) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ram-mib",
            &args.ram_mib.to_string(),
        ])
        .args(args.prealloc.then_some("--prealloc"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.strip_prefix("LISTENING ").unwrap().trim().to_string();
    let cfg = SourceConfig {
        ram: args.ram_mib << 20,
        vcpus: 1,
        workload: w,
        downtime_limit: Duration::from_millis(args.downtime_ms),
        max_bandwidth: args.max_bandwidth_mib.map(|m| m << 20),
        max_time: Duration::from_secs(args.max_time),
        warm_up: Duration::from_millis(200),
        postcopy: None,
        postcopy_preempt: false,
        max_postcopy_bandwidth: None,
    };
    let o = run_source(&cfg, &addr, quiet(), &mut |_| {}).unwrap();
    assert!(child.wait().unwrap().success(), "our destination failed");
    assert!(o.verified(), "our migration did not verify: {o:?}");
    let s = o.stats;
    let total_ms = s.total_time.as_secs_f64() * 1e3;
    Run {
        total_ms,
        downtime_ms: s.downtime.as_secs_f64() * 1e3,
        setup_ms: s.setup_time.as_secs_f64() * 1e3,
        rounds: s.rounds as f64,
        bytes: s.transferred as f64,
        raw_ratio: raw_copy(s.transferred).as_secs_f64() * 1e3 / total_ms,
        forced: s.forced_switchover,
        ..Run::default()
    }
}

/// The median of each figure over the runs (figure by figure).
fn median_run(runs: &[Run]) -> Run {
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    Run {
        total_ms: m(|r| r.total_ms),
        downtime_ms: m(|r| r.downtime_ms),
        setup_ms: m(|r| r.setup_ms),
        rounds: m(|r| r.rounds),
        bytes: m(|r| r.bytes),
        raw_ratio: m(|r| r.raw_ratio),
        forced: runs.iter().any(|r| r.forced),
        postcopy_requests: m(|r| r.postcopy_requests),
        blocktime_ms: m(|r| r.blocktime_ms),
    }
}

fn print_table(args: &Args, table: &[(String, Run, Run)]) {
    println!(
        "KVM guest, {} MiB RAM, downtime limit {} ms, bandwidth {}, {} runs each, medians",
        args.ram_mib,
        args.downtime_ms,
        args.max_bandwidth_mib
            .map_or("unlimited".to_string(), |m| format!("{m} MiB/s")),
        args.runs
    );
    println!(
        "| row | side | total ms | downtime ms | setup ms | rounds | MiB sent | throughput / raw loopback |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (row, qemu, ours) in table {
        for (side, r) in [("QEMU 10.0.2", qemu), ("vmstate", ours)] {
            println!(
                "| {row} | {side} | {:.1}{} | {:.1} | {:.1} | {:.0} | {:.1} | {:.2} |",
                r.total_ms,
                if r.forced { " (forced)" } else { "" },
                r.downtime_ms,
                r.setup_ms,
                r.rounds,
                r.bytes / 1_048_576.0,
                r.raw_ratio
            );
        }
        if args.qemu_postcopy_after_ms.is_some() {
            println!(
                "  QEMU postcopy: {:.0} page requests, vCPUs blocked {:.1} ms in all (postcopy-blocktime)",
                qemu.postcopy_requests, qemu.blocktime_ms
            );
        }
    }
}
