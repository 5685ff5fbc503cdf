//! The main example's live migration against a raw loopback TCP copy of the same number
//! of bytes, pair by pair: how close the migration's throughput comes to the wire's.
//!
//! ```text
//! cargo run --release --example live-bench                    # 7 pairs, 1 GiB RAM
//! cargo run --release --example live-bench -- --pairs 9 --ram 512M
//! ```
//!
//! Each pair runs the live migration (the demo machine, one vCPU rewriting a quarter of
//! its RAM, QEMU's return path, the destination's digest checked) and then copies as
//! many bytes as it sent through a fresh loopback TCP connection. The ratio of a pair is
//! the copy's time over the migration's (the migration's throughput as a fraction of
//! the raw copy's); the median and the range of the pairs are printed.

use clap::Parser;
use vmstate_examples::cli::{median, raw_loopback_copy as raw_copy};
use vmstate_examples::machine::live::migrate_locally;

/// Live migration against a raw loopback copy, pair by pair.
#[derive(Parser, Debug)]
struct Args {
    /// Pairs of runs.
    #[arg(long, default_value_t = 7)]
    pairs: usize,
    /// Guest RAM in MiB (M suffix optional).
    #[arg(long, default_value = "1024M")]
    ram: String,
}

fn main() {
    let args = Args::parse();
    let ram = args
        .ram
        .trim_end_matches(['M', 'm'])
        .parse::<u64>()
        .expect("RAM in MiB")
        << 20;
    let (mut ratios, mut totals, mut raws, mut sent) = (vec![], vec![], vec![], vec![]);
    migrate_locally(ram, None); // warm-up
    for _ in 0..args.pairs {
        let o = migrate_locally(ram, None);
        let raw = raw_copy(o.stats.transferred);
        let total = o.stats.total_time;
        ratios.push(raw.as_secs_f64() / total.as_secs_f64());
        totals.push(total.as_secs_f64() * 1e3);
        raws.push(raw.as_secs_f64() * 1e3);
        sent.push(o.stats.transferred as f64 / 1_048_576.0);
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "live migration, {} MiB RAM, {} pairs, medians",
        ram >> 20,
        args.pairs
    );
    println!("  migration total time (ms)     {:>9.1}", median(totals));
    println!("  bytes sent (MiB)              {:>9.1}", median(sent));
    println!("  raw copy of those bytes (ms)  {:>9.1}", median(raws));
    println!(
        "  throughput / raw loopback     {:>9.2}  (pairs {lo:.2}-{hi:.2})",
        median(ratios)
    );
}
