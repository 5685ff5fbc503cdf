//! A real KVM guest migrated live between two processes: the guest's own code runs on a
//! vCPU under KVM and rewrites its working set pass after pass, KVM's dirty log feeds
//! the migration rounds, and the destination's guest goes on from the next pass.
//! Progress display, final report, and a page-by-page check of the destination's state
//! against the source's at switchover (with each vCPU's, the chipset's and the consoles'
//! state).
//!
//! ```text
//! cargo run --release --example kvm-migration                      # 1 GiB, 256 MiB working set
//! cargo run --release --example kvm-migration -- --ram 512M --working-set 64M --downtime-ms 50
//! cargo run --release --example kvm-migration -- --json
//! cargo run --release --example kvm-migration -- --paused --working-set 256M   # a paused guest
//! cargo run --release --example kvm-migration -- --vcpus 2          # two vCPUs, a slice each
//! # two hosts (both with /dev/kvm): the destination first, then the source
//! cargo run --release --example kvm-migration -- --listen 0.0.0.0:4444 --ram 1G
//! cargo run --release --example kvm-migration -- --connect desthost:4444 --ram 1G
//! ```
//!
//! The guest and the VMM are in `vmstate_examples::kvm`; the protocol between the two
//! ends in `vmstate_examples::kvm::live`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use vmstate_examples::cli::{human, ms, parse_size, progress_bar, show_progress};
use vmstate_examples::kvm::live::{
    self, DestinationConfig, Outcome, PASSES_AFTER_RESUME, SourceConfig,
};
use vmstate_examples::kvm::{FILLED, LineSink, Workload};

/// Live-migrate a KVM guest between two processes over loopback TCP.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
struct Args {
    /// Guest RAM size (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    ram: u64,
    /// Bytes of RAM the guest keeps rewriting (one store per 4 KiB page per pass).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    working_set: u64,
    /// vCPUs; each rewrites its own slice of the working set.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    vcpus: u32,
    /// Fault in the destination's guest memory before the migration starts (QEMU's
    /// -mem-prealloc), so that placing pages does not wait for the kernel's zeroing.
    #[arg(long)]
    prealloc: bool,
    /// Instead of rewriting its working set, the guest finds it filled with
    /// pseudo-random data and is paused; the paused guest is migrated.
    #[arg(long)]
    paused: bool,
    /// Downtime limit in milliseconds.
    #[arg(long, default_value_t = 300)]
    downtime_ms: u64,
    /// Bandwidth cap in bytes per second (default: unlimited).
    #[arg(long, value_parser = parse_size)]
    max_bandwidth: Option<u64>,
    /// Switch to postcopy after --postcopy-after-rounds precopy rounds (unless precopy
    /// converged first): the destination's vCPUs run at once, and each missing page
    /// they touch comes through userfaultfd (needs root).
    #[arg(long)]
    postcopy: bool,
    /// With --postcopy: send requested pages on a second connection, ahead of the
    /// background pages (QEMU's postcopy-preempt)
    #[arg(long, requires = "postcopy")]
    postcopy_preempt: bool,
    /// With --postcopy: switch after this many precopy rounds.
    #[arg(long, default_value_t = 1, requires = "postcopy")]
    postcopy_after_rounds: u64,
    /// Give up after this many seconds and force the switchover.
    #[arg(long, default_value_t = 120)]
    max_time: u64,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run as the destination, listening on ADDR (port 0 picks one; it is printed).
    #[arg(long, value_name = "ADDR", conflicts_with = "connect")]
    listen: Option<String>,
    /// Run as the source, connecting to a destination at ADDR.
    #[arg(long, value_name = "ADDR")]
    connect: Option<String>,
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.listen {
        Some(addr) => destination(&args, addr),
        None => source(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvm-migration: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The destination: print the address, load the guest, let it run a few passes.
fn destination(args: &Args, addr: &str) -> AnyResult<ExitCode> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    // The guest's serial lines after it resumed here (a pass takes milliseconds, so
    // only the first few are shown).
    let shown = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let on_line: LineSink = Arc::new(move |line: &str| {
        if shown.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < PASSES_AFTER_RESUME {
            eprintln!("[destination] {line}");
        }
    });
    let cfg = DestinationConfig {
        ram: args.ram,
        vcpus: args.vcpus,
        preallocate: args.prealloc,
        postcopy_preempt: args.postcopy_preempt,
    };
    live::run_destination(listener, &cfg, on_line, || {
        println!("LISTENING {local}");
        let _ = std::io::stdout().flush();
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Starts this program again as the destination on a free loopback port.
fn spawn_destination(args: &Args) -> AnyResult<(std::process::Child, String)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--listen", "127.0.0.1:0", "--ram", &args.ram.to_string()])
        .args(["--vcpus", &args.vcpus.to_string()]);
    if args.prealloc {
        cmd.arg("--prealloc");
    }
    if args.postcopy_preempt {
        cmd.args(["--postcopy", "--postcopy-preempt"]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr = line
        .strip_prefix("LISTENING ")
        .map(|a| a.trim().to_string())
        .ok_or_else(|| format!("destination said {line:?}"))?;
    Ok((child, addr))
}

fn source(args: &Args) -> AnyResult<ExitCode> {
    let pages = u32::try_from(args.working_set.min(args.ram.saturating_sub(1 << 20)) / 4096)?;
    let (child, addr) = match &args.connect {
        Some(a) => (None, a.clone()),
        None => {
            let (c, a) = spawn_destination(args)?;
            (Some(c), a)
        }
    };
    let cfg = SourceConfig {
        ram: args.ram,
        vcpus: args.vcpus,
        workload: match args.paused {
            true => Workload::Preloaded {
                pages: pages.max(1),
                seed: 0x2545_f491,
            },
            false => Workload::Rewrite {
                pages: pages.max(1),
            },
        },
        downtime_limit: Duration::from_millis(args.downtime_ms),
        max_bandwidth: args.max_bandwidth,
        max_time: Duration::from_secs(args.max_time),
        warm_up: Duration::from_millis(200),
        postcopy: args.postcopy.then(|| vmstate::migrate::PostcopyPolicy {
            after_rounds: Some(args.postcopy_after_rounds),
            ..Default::default()
        }),
        postcopy_preempt: args.postcopy_preempt,
        max_postcopy_bandwidth: None,
    };
    let bar = progress_bar(args.ram);
    // The source's serial lines: every 100th pass, above the progress line.
    let bar_lines = bar.clone();
    let on_line: LineSink = Arc::new(move |line: &str| {
        let mut words = line.split_whitespace().skip_while(|w| *w != "pass");
        let pass = words.nth(1).and_then(|p| p.parse::<u32>().ok());
        if pass.is_some_and(|p| p % 100 == 1) {
            match bar_lines.is_hidden() {
                true => eprintln!("[source] {line}"),
                false => bar_lines.println(format!("[source] {line}")),
            }
        }
    });
    let outcome = live::run_source(&cfg, &addr, on_line, &mut |s| show_progress(&bar, s));
    bar.finish_and_clear();
    let outcome = outcome?;
    if let Some(mut c) = child {
        if !c.wait()?.success() {
            return Err("the destination process failed".into());
        }
    }
    report(args, cfg.workload.pages(), &outcome);
    Ok(if outcome.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report(args: &Args, pages: u32, o: &Outcome) {
    let s = &o.stats;
    let ram = s.ram.unwrap_or_default();
    let throughput = s.transferred as f64 / s.total_time.as_secs_f64().max(1e-9);
    if args.json {
        let v = json!({
            "status": format!("{:?}", s.status).to_lowercase(),
            "total_time_ms": ms(s.total_time),
            "setup_time_ms": ms(s.setup_time),
            "downtime_ms": ms(s.downtime),
            "downtime_limit_ms": args.downtime_ms,
            "transferred_bytes": s.transferred,
            "throughput_bytes_per_sec": throughput as u64,
            "rounds": s.rounds,
            "normal_pages": ram.normal_pages,
            "zero_pages": ram.zero_pages,
            "redirtied_pages": ram.redirtied_pages,
            "forced_switchover": s.forced_switchover,
            "ram_bytes": args.ram,
            "working_set_pages": pages,
            "vcpus": args.vcpus,
            "source_last_passes": o.source_last_passes,
            "destination_passes": o.destination_passes,
            "verified": o.verified(),
            "pages_compared": o.pages_compared,
            "postcopy": s.postcopy.as_ref().map(|p| {
                vmstate_examples::machine::live::postcopy_json(p, o.destination_postcopy.as_ref())
            }),
            "differing_pages": o.differing_pages,
            "differing_devices": o.differing_devices,
        });
        println!("{v}");
        return;
    }
    println!("KVM guest live migration {:?}", s.status);
    println!(
        "  guest              {} vCPU{} under KVM, {} RAM, working set {} pages ({})",
        args.vcpus,
        if args.vcpus == 1 { "" } else { "s" },
        human(args.ram),
        pages,
        human(u64::from(pages) * 4096)
    );
    println!(
        "  total time         {:.1} ms (setup {:.2} ms)",
        ms(s.total_time),
        ms(s.setup_time)
    );
    println!(
        "  downtime           {:.1} ms (limit {} ms){}",
        ms(s.downtime),
        args.downtime_ms,
        if s.forced_switchover {
            ", switchover forced by --max-time"
        } else {
            ""
        }
    );
    println!(
        "  transferred        {} ({}/s), {} rounds",
        human(s.transferred),
        human(throughput as u64),
        s.rounds
    );
    println!(
        "  pages              {} full, {} zero, {} sent again after the guest rewrote them",
        ram.normal_pages, ram.zero_pages, ram.redirtied_pages
    );
    if let Some(p) = &s.postcopy {
        println!(
            "  postcopy           switched after {:.1} ms of precopy; {:.1} ms in postcopy; {} page requests through userfaultfd ({} pages sent for them, served in {:.0} us median, {:.0} us p99)",
            ms(p.precopy_time),
            ms(p.time_in_postcopy),
            p.requests,
            p.requested_pages,
            p.request_latency_p50.as_secs_f64() * 1e6,
            p.request_latency_p99.as_secs_f64() * 1e6
        );
        if let Some(d) = &o.destination_postcopy {
            println!(
                "  vCPU faults        {} on the destination: {:.0} us median, {:.0} us p99, {:.0} us longest; {} pages discarded",
                d.requests, d.fault_p50_us, d.fault_p99_us, d.fault_max_us, d.discarded_pages
            );
        }
    }
    if o.source_last_passes.first() == Some(&FILLED) {
        println!("  guest              paused with its working set filled");
    } else {
        for (i, (last, (first, then))) in o
            .source_last_passes
            .iter()
            .zip(&o.destination_passes)
            .enumerate()
        {
            println!(
                "  guest vCPU {i}       stopped after pass {last} on the source; on the destination it reported passes {first} to {then}"
            );
        }
    }
    if o.verified() && !o.pages_compared {
        println!(
            "  verification       OK: the vCPUs, the chipset and the consoles equal the source at switchover, and the guest went on (pages not compared: the guest rewrote them on the destination while they arrived)"
        );
    } else if o.verified() {
        println!(
            "  verification       OK: {} pages, the vCPUs, the chipset and the consoles equal the source at switchover, and the guest went on",
            o.pages
        );
    } else {
        println!(
            "  verification       FAILED: {} pages differ, devices {:?}, destination passes {:?} after {:?}",
            o.differing_pages, o.differing_devices, o.destination_passes, o.source_last_passes
        );
    }
}
