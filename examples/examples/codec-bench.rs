//! Codec speed: the derive against the hand-written floor and the alternatives, all
//! measured in one run.
//!
//! ```text
//! cargo run --release --example codec-bench                 # the table
//! cargo run --release --example codec-bench -- --json       # one JSON object
//! cargo run --release --example codec-bench -- --runs 5     # median of 5 processes
//! cargo run --release --example codec-bench -- --variants   # + faster configurations
//! ```
//!
//! `--variants` adds bincode 2 with fixed-width integers and postcard into a
//! preallocated slice (their fastest configurations) to the table and the JSON.
//!
//! Every (state, codec, operation) is a closure that runs one batch of calls and returns
//! the time per call. The batches are interleaved round-robin (so that noise from other
//! processes spreads over all codecs alike) and each result is the median over the
//! rounds. With `--runs N` the measurement runs in N processes of its own (buffer
//! placement, and so cache and alignment effects on the large copies, differs between
//! processes) and the median of the N medians is reported. Encode writes into the codec's reused buffer; decode reads into
//! an existing value.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use vmstate_examples::codec::{
    BenchState, CODECS, Codec, STATES, VARIANTS, Visitor, visit_all, visit_variants,
};

/// One measured operation: runs `iters` calls and returns the nanoseconds per call.
type Batch = Box<dyn FnMut(u64) -> f64>;

struct Job {
    state: &'static str,
    codec: &'static str,
    op: &'static str,
    batch: Batch,
    iters: u64,
    samples: Vec<f64>,
}

/// Builds the jobs of every (state, codec) pair.
struct Collect {
    jobs: Vec<Job>,
    sizes: BTreeMap<(&'static str, &'static str), usize>,
}

impl Visitor for Collect {
    fn visit<T: BenchState, C: Codec<T>>(&mut self) {
        let mut codec = C::new();
        let mut value = T::sample(1);
        codec.encode(&mut value).expect("encode");
        let bytes = codec.bytes().to_vec();
        self.sizes.insert((T::LABEL, C::NAME), bytes.len());

        // Decode must give the value back; checked once here, outside the timing.
        let mut target = T::sample(2);
        codec.decode(&bytes, &mut target).expect("decode");
        assert_eq!(target, value, "{} {} round trip", T::LABEL, C::NAME);

        let mut enc = C::new();
        let encode: Batch = Box::new(move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                enc.encode(black_box(&mut value)).expect("encode");
                black_box(enc.bytes());
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        });
        let decode: Batch = Box::new(move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                codec
                    .decode(black_box(&bytes), black_box(&mut target))
                    .expect("decode");
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        });
        for (op, batch) in [("encode", encode), ("decode", decode)] {
            self.jobs.push(Job {
                state: T::LABEL,
                codec: C::NAME,
                op,
                batch,
                iters: 1,
                samples: Vec::new(),
            });
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Options {
    json: bool,
    variants: bool,
    runs: usize,
    rounds: usize,
    batch: Duration,
}

fn parse_args() -> Options {
    let mut o = Options {
        json: false,
        variants: false,
        runs: 1,
        rounds: 101,
        batch: Duration::from_micros(500),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--json" => o.json = true,
            "--variants" => o.variants = true,
            "--runs" => o.runs = num("--runs").max(1) as usize,
            "--rounds" => o.rounds = num("--rounds").max(1) as usize,
            "--batch-us" => o.batch = Duration::from_micros(num("--batch-us").max(1)),
            "--help" | "-h" => {
                println!(
                    "usage: codec-bench [--json] [--variants] [--runs N] [--rounds N] [--batch-us N]\n\
                     Median ns per encode/decode for every state and codec."
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (try --help)"),
        }
    }
    o
}

/// One full measurement: calibrate, then `rounds` interleaved batches of every job.
/// Returns the median ns per call of each (state, codec, op).
fn run_once(
    jobs: &mut [Job],
    o: &Options,
) -> BTreeMap<(&'static str, &'static str, &'static str), f64> {
    for job in jobs.iter_mut() {
        // Double the batch until it lasts a fifth of the target, then scale.
        let mut iters = 1u64;
        loop {
            let start = Instant::now();
            (job.batch)(iters);
            let took = start.elapsed();
            if took >= o.batch / 5 || iters >= 1 << 30 {
                let scale = o.batch.as_secs_f64() / took.as_secs_f64().max(1e-9);
                job.iters = ((iters as f64 * scale) as u64).max(1);
                break;
            }
            iters *= 2;
        }
        job.samples.clear();
    }
    for _ in 0..o.rounds {
        for job in jobs.iter_mut() {
            let ns = (job.batch)(job.iters);
            job.samples.push(ns);
        }
    }
    jobs.iter_mut()
        .map(|j| ((j.state, j.codec, j.op), median(&mut j.samples)))
        .collect()
}

/// Runs this program again for one in-process measurement and returns its JSON.
fn child_run(o: &Options) -> serde_json::Value {
    let exe = std::env::current_exe().expect("current executable");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--json", "--runs", "1"])
        .args(["--rounds", &o.rounds.to_string()])
        .args(["--batch-us", &o.batch.as_micros().to_string()]);
    if o.variants {
        cmd.arg("--variants");
    }
    let out = cmd.output().expect("run a child measurement");
    assert!(
        out.status.success(),
        "child run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("child JSON")
}

fn main() {
    let o = parse_args();
    let mut collect = Collect {
        jobs: Vec::new(),
        sizes: BTreeMap::new(),
    };
    visit_all(&mut collect);
    let mut codecs = CODECS.to_vec();
    if o.variants {
        visit_variants(&mut collect);
        codecs.extend(VARIANTS);
    }
    let mut jobs = collect.jobs;

    let mut runs: BTreeMap<_, Vec<f64>> = BTreeMap::new();
    if o.runs == 1 {
        for (k, v) in run_once(&mut jobs, &o) {
            runs.entry(k).or_default().push(v);
        }
    } else {
        // Each run is a process of its own: buffer addresses (and so cache and
        // alignment effects on the large copies) differ between processes, which
        // repeating the measurement inside one process would not sample.
        drop(jobs);
        for run in 0..o.runs {
            if !o.json {
                eprintln!("run {}/{}", run + 1, o.runs);
            }
            let json = child_run(&o);
            for s in STATES {
                for &c in &codecs {
                    for op in ["encode", "decode"] {
                        let v = json[s][c][format!("{op}_ns")]
                            .as_f64()
                            .unwrap_or_else(|| panic!("child run lacks {s}.{c}.{op}"));
                        runs.entry((s, c, op)).or_default().push(v);
                    }
                }
            }
        }
    }
    let ns: BTreeMap<_, f64> = runs
        .into_iter()
        .map(|(k, mut v)| (k, median(&mut v)))
        .collect();
    let get = |s: &str, c: &str, op: &str| ns[&(s, c, op)];

    if o.json {
        let states: Vec<String> = STATES
            .iter()
            .map(|s| {
                let codecs: Vec<String> = codecs
                    .iter()
                    .map(|c| {
                        format!(
                            "\"{c}\": {{\"encode_ns\": {:.2}, \"decode_ns\": {:.2}}}",
                            get(s, c, "encode"),
                            get(s, c, "decode")
                        )
                    })
                    .collect();
                format!("\"{s}\": {{{}}}", codecs.join(", "))
            })
            .collect();
        println!("{{{}}}", states.join(", "));
        return;
    }

    println!(
        "Codec speed: median ns per operation ({} process(es) x {} interleaved batches of ~{} us)",
        o.runs,
        o.rounds,
        o.batch.as_micros()
    );
    println!(
        "x derive = this codec's time / the derive's time (above 1: slower than the derive)\n"
    );
    println!(
        "{:<7} {:<15} {:>6} {:>11} {:>11} {:>10} {:>10}",
        "state", "codec", "bytes", "encode ns", "decode ns", "enc x der", "dec x der"
    );
    for s in STATES {
        for &c in &codecs {
            let (e, d) = (get(s, c, "encode"), get(s, c, "decode"));
            println!(
                "{:<7} {:<15} {:>6} {:>11.1} {:>11.1} {:>10.2} {:>10.2}",
                s,
                c,
                collect.sizes[&(s, c)],
                e,
                d,
                e / get(s, "derive", "encode"),
                d / get(s, "derive", "decode"),
            );
        }
    }

    println!("\nTargets:");
    let mut all = true;
    let mut check = |what: String, ok: bool| {
        all &= ok;
        println!("  [{}] {what}", if ok { "met" } else { "NOT MET" });
    };
    for s in STATES {
        for op in ["encode", "decode"] {
            let d = get(s, "derive", op);
            let r = d / get(s, "hand", op);
            check(
                format!("{s:<6} {op}: derive / hand = {r:.2} (<= 1.2)"),
                r <= 1.2,
            );
            let r = get(s, "versionize", op) / d;
            check(
                format!("{s:<6} {op}: versionize / derive = {r:.1} (>= 5)"),
                r >= 5.0,
            );
            for alt in ["bincode2", "postcard"] {
                let r = get(s, alt, op) / d;
                check(
                    format!("{s:<6} {op}: {alt} / derive = {r:.2} (> 1)"),
                    r > 1.0,
                );
            }
        }
    }
    println!(
        "\n{}",
        if all {
            "all targets met"
        } else {
            "some targets NOT met"
        }
    );
}
