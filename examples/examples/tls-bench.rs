//! The cost of mutual TLS on the main example's live migration: the same migration
//! (the demo machine, vCPUs writing all along, QEMU's return path, the destination's
//! digest checked) over plain TCP and over mutual TLS, run alternately, medians.
//!
//! ```text
//! cargo run --release --example tls-bench                      # 5 runs each, 1 GiB RAM
//! cargo run --release --example tls-bench -- --runs 3 --ram 512M
//! ```

use clap::Parser;
use compat_tests::certs::TestPki;
use vmstate::transport::tls::{TlsClient, TlsServer};
use vmstate_examples::machine::live::{Outcome, migrate_locally};

/// Live migration over plain TCP against mutual TLS, alternately.
#[derive(Parser, Debug)]
struct Args {
    /// Runs of each.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Guest RAM in MiB (M suffix optional).
    #[arg(long, default_value = "1024M")]
    ram: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let ram = args
        .ram
        .trim_end_matches(['M', 'm'])
        .parse::<u64>()
        .expect("RAM in MiB")
        << 20;
    let dir = std::env::temp_dir().join(format!("vmstate-tls-bench-{}", std::process::id()));
    let pki = TestPki::generate(&dir).unwrap();
    let tls = || {
        Some((
            TlsServer::new(&pki.server()).unwrap(),
            TlsClient::new(&pki.client(), Some("127.0.0.1")).unwrap(),
        ))
    };
    let (mut tcp, mut over_tls) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        tcp.push(migrate_locally(ram, None));
        over_tls.push(migrate_locally(ram, tls()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let stat = |v: &[Outcome], f: &dyn Fn(&Outcome) -> f64| median(v.iter().map(f).collect());
    let total = |o: &Outcome| o.stats.total_time.as_secs_f64() * 1000.0;
    let down = |o: &Outcome| o.stats.downtime.as_secs_f64() * 1000.0;
    let rate =
        |o: &Outcome| o.stats.transferred as f64 / o.stats.total_time.as_secs_f64() / 1_048_576.0;
    println!(
        "live migration, {} MiB RAM, {} runs each, medians",
        ram >> 20,
        args.runs
    );
    println!(
        "{:<22} {:>12} {:>12} {:>8}",
        "", "plain TCP", "mutual TLS", "ratio"
    );
    for (name, f) in [
        ("total time (ms)", &total as &dyn Fn(&Outcome) -> f64),
        ("downtime (ms)", &down),
        ("throughput (MiB/s)", &rate),
    ] {
        let (a, b) = (stat(&tcp, f), stat(&over_tls, f));
        println!("{name:<22} {a:>12.1} {b:>12.1} {:>8.2}", b / a);
    }
}
