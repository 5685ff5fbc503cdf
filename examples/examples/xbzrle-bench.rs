//! XBZRLE against whole pages on the main example's guest, whose vCPU stores 8 bytes
//! into each page of its working set, page after page: bytes per re-sent dirty page,
//! rounds, total time and downtime, each case run both ways in one run.
//!
//! ```text
//! cargo run --release --example xbzrle-bench                  # the three cases
//! cargo run --release --example xbzrle-bench -- --max-time 10
//! ```
//!
//! Cases (1 GiB of RAM, no bandwidth cap, both ends in this process):
//! - 256 MiB working set, 300 ms downtime limit (the example's defaults);
//! - 768 MiB working set, 50 ms limit (the case that never converged), forced to switch
//!   over after `--max-time`;
//! - the same with auto-converge, which slows the vCPU until the rest fits.
//!
//! "Bytes per re-sent page" is the stream bytes after the round that ended the first
//! pass over RAM, over the pages sent again after their first sending (whole pages,
//! XBZRLE records and unchanged pages; headers and device state included).

use std::time::Duration;

use clap::Parser;
use vmstate_examples::machine::Workload;
use vmstate_examples::machine::live::{Outcome, SourceConfig, migrate_locally_with};

/// XBZRLE against whole pages, case by case.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds before a case that has not converged is forced to switch over.
    #[arg(long, default_value_t = 15)]
    max_time: u64,
    /// The XBZRLE cache in MiB (the working sets fit in the default).
    #[arg(long, default_value_t = 1024)]
    cache_mib: u64,
}

fn config(working_set: u64, downtime_ms: u64, auto_converge: bool, args: &Args) -> SourceConfig {
    SourceConfig {
        ram: 1 << 30,
        workload: Workload {
            vcpus: 1,
            working_set,
            dirty_rate: None,
        },
        downtime_limit: Duration::from_millis(downtime_ms),
        max_bandwidth: None,
        max_time: Duration::from_secs(args.max_time),
        warm_up: Duration::from_millis(200),
        auto_converge,
        xbzrle_cache: None,
        channels: 0,
        compression: Default::default(),
        tls: None,
        postcopy: None,
        max_postcopy_bandwidth: None,
        postcopy_preempt: false,
    }
}

/// One table row; `first_pass_bytes` is what the stream held when the first pass over
/// RAM ended.
fn row(case: &str, xbzrle: bool, o: &Outcome, first_pass_bytes: u64) {
    let s = &o.stats;
    let ram = s.ram.unwrap_or_default();
    let resent = ram.redirtied_pages.max(1);
    let per_page = s.transferred.saturating_sub(first_pass_bytes) as f64 / resent as f64;
    println!(
        "| {case} | {} | {} | {:.1} | {} | {:.0} | {:.1} | {:.1} | {} |",
        if xbzrle { "XBZRLE" } else { "whole pages" },
        ram.redirtied_pages,
        per_page,
        s.rounds,
        s.total_time.as_secs_f64() * 1e3,
        s.downtime.as_secs_f64() * 1e3,
        s.transferred as f64 / (1 << 20) as f64,
        match (s.forced_switchover, s.throttle_percent) {
            (true, _) => "no (forced)".to_string(),
            (false, 0) => "yes".to_string(),
            (false, t) => format!("yes (throttle {t}%)"),
        }
    );
}

fn main() {
    let args = Args::parse();
    let cases = [
        ("256 MiB, 300 ms", config(256 << 20, 300, false, &args)),
        ("768 MiB, 50 ms", config(768 << 20, 50, false, &args)),
        (
            "768 MiB, 50 ms, auto-converge",
            config(768 << 20, 50, true, &args),
        ),
    ];
    println!(
        "| case | pages as | re-sent pages | bytes per re-sent page | rounds | total ms | downtime ms | MiB sent | converged |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for (case, cfg) in cases {
        for xbzrle in [false, true] {
            let mut cfg = cfg.clone();
            cfg.xbzrle_cache = xbzrle.then_some(args.cache_mib << 20);
            let mut first_pass_bytes = None;
            let o = migrate_locally_with(&cfg, None, &mut |s| {
                if first_pass_bytes.is_none() && s.ram.is_some_and(|r| r.passes >= 1) {
                    first_pass_bytes = Some(s.transferred);
                }
            });
            row(case, xbzrle, &o, first_pass_bytes.unwrap_or(0));
        }
    }
}
