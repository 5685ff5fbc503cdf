//! The fault harness: a live migration over `migrate_over`/`receive` whose connection
//! is cut with a reset at 100 seeded points covering setup, the first round, a bulk
//! round, rounds of re-dirtied pages, the END section, each device section, the
//! trailer and the confirmation (inside the destination's SHUT message).
//!
//! In every one: the source reports a `MigrationFailed` error naming a phase no earlier
//! than the cut's; its guest runs (stopped guests were resumed) and its RAM and devices
//! equal the copy the vCPU kept of every write, page by page and device by device; the
//! destination returns an error and never started its guest.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::proxy::{Cut, Proxy};
use support::{MACHINE, ShadowGuest, connect, destination, listen, same_ram};
use vmstate::ErrorKind;
use vmstate::migrate::{
    CancelToken, IncomingParams, MigrationParams, MigrationStats, OnTimeout, Status, migrate_over,
};

const PAGES: u64 = 256; // 1 MiB: two rounds of the first pass at 4 MiB/s
const WORKING_SET: u64 = 16;

fn tune(mut p: MigrationParams) -> MigrationParams {
    p.max_bandwidth = Some(4 << 20);
    // Nothing fits a zero downtime while the vCPU writes: rounds of re-dirtied pages
    // follow the first pass until the total time forces the switchover.
    p.downtime_limit = Duration::ZERO;
    p.max_total_time = Some(Duration::from_millis(650));
    p.on_timeout = OnTimeout::ForceSwitchover;
    p.io_timeout = Some(Duration::from_secs(10));
    p
}

/// Where a point cuts.
#[derive(Debug, Clone)]
enum Point {
    /// At this offset of the setup (header, configuration, commands, START).
    Setup(u64),
    /// `x` bytes into round `k` (1-based).
    Round { k: u64, x: u64 },
    /// `x` bytes after the switchover began (SWITCHOVER_START, the END section).
    End(u64),
    /// `x` bytes into device section `idx`.
    Device { idx: usize, x: u64 },
    /// `x` bytes into the EOF record and vmdesc trailer.
    Trailer(u64),
    /// After `bytes` bytes of the destination's SHUT(0).
    Shut(usize),
}

const SWITCHOVER: u64 = 1_000_000;
const CONFIRMATION: u64 = 1_000_001;

fn phase_rank(phase: &str) -> u64 {
    match phase {
        "setup" => 0,
        "switchover" => SWITCHOVER,
        "confirmation" => CONFIRMATION,
        p => p
            .strip_prefix("round ")
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("unknown phase {p:?}")),
    }
}

/// What one migration did.
struct Run {
    result: vmstate::Result<MigrationStats>,
    /// Bytes the source had sent at each progress call, with the status and round.
    events: Vec<(Status, u64, u64, u64)>,
    stream: Vec<u8>,
    forwarded: u64,
    cut: bool,
    guest: ShadowGuest,
    landed: support::Landed,
}

/// The byte patterns that find records in a stream, taken from a full run.
struct Layout {
    setup_len: u64,
    /// Size of each round, from the progress calls.
    rounds: Vec<u64>,
    /// Rounds until the first pass over RAM was complete.
    first_pass: u64,
    /// First bytes of each device section, and its length.
    devices: Vec<(Vec<u8>, u64)>,
    /// First bytes of the EOF record and trailer, and their length.
    trailer: (Vec<u8>, u64),
}

fn migrate_once(seed: u64, point: Option<&Point>, layout: Option<&Layout>) -> Run {
    let mut guest = ShadowGuest::new(PAGES, WORKING_SET, seed);
    let (mut reg, params) = guest.source();
    let params = tune(params);
    let (l, dst_addr) = listen();
    let mut incoming = IncomingParams::new(MACHINE);
    incoming.io_timeout = Some(Duration::from_secs(10));
    let dst = destination(l, PAGES, incoming);
    let initial = match point {
        None => Cut::Never,
        Some(Point::Setup(x)) => Cut::At(*x),
        Some(Point::Shut(b)) => Cut::InShut { bytes: *b },
        Some(_) => Cut::Never,
    };
    let proxy = Proxy::start(dst_addr, initial);
    let planner: Arc<Mutex<Cut>> = proxy.planner();
    let mut events = Vec::new();
    let result = migrate_over(
        &mut reg,
        connect(proxy.addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |s| {
            let pages = s.ram.map_or(0, |r| r.normal_pages + r.zero_pages);
            events.push((s.status, s.rounds, s.transferred, pages));
            let plan = match (point, s.status) {
                (Some(Point::Round { k, x }), Status::Active) if s.rounds + 1 == *k => {
                    Cut::At(s.transferred + x)
                }
                (Some(Point::End(x)), Status::Device) => Cut::At(s.transferred + x),
                // The run converged before the planned round: cut at the switchover.
                (Some(Point::Round { x, .. }), Status::Device)
                    if matches!(*planner.lock().unwrap(), Cut::Never)
                        || matches!(*planner.lock().unwrap(), Cut::At(at) if at > s.transferred) =>
                {
                    Cut::At(s.transferred + x % 24)
                }
                (Some(Point::Device { idx, x }), Status::Device) => Cut::AfterPattern {
                    pattern: layout.unwrap().devices[*idx].0.clone(),
                    from: s.transferred,
                    plus: *x,
                },
                (Some(Point::Trailer(x)), Status::Device) => Cut::AfterPattern {
                    pattern: layout.unwrap().trailer.0.clone(),
                    from: s.transferred,
                    plus: *x,
                },
                _ => return,
            };
            *planner.lock().unwrap() = plan;
        },
    );
    let landed = dst.join().unwrap();
    let (stream, forwarded, cut) = (
        proxy.stream.lock().unwrap().clone(),
        proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst),
        proxy.did_cut(),
    );
    proxy.join();
    Run {
        result,
        events,
        stream,
        forwarded,
        cut,
        guest,
        landed,
    }
}

/// A full migration through the proxy, and the layout of its stream.
fn calibrate() -> Layout {
    let mut run = migrate_once(1, None, None);
    let stats = run.result.as_ref().unwrap();
    assert_eq!(stats.status, Status::Completed);
    assert!(run.landed.started && run.landed.result.is_ok());
    assert!(same_ram(&run.guest.ram, &run.landed.ram));
    assert!(!run.cut);
    let s = &run.stream;
    let setup_len = run.events[0].2;
    let mut rounds = Vec::new();
    let mut first_pass = 0;
    let mut prev = setup_len;
    for &(status, _, sent, pages) in &run.events[1..] {
        if status == Status::Active {
            rounds.push(sent - prev);
            prev = sent;
            if first_pass == 0 && pages >= PAGES {
                first_pass = rounds.len() as u64;
            }
        }
    }
    // The trailer: EOF, then the vmdesc record that runs to the end.
    let eof = (0..s.len() - 5)
        .rev()
        .find(|&p| {
            s[p] == 6
                && u32::from_be_bytes(s[p + 1..p + 5].try_into().unwrap()) as usize
                    == s.len() - p - 5
        })
        .expect("a vmdesc trailer")
        - 1;
    // Device sections: `len idstr instance version` after `0x04 section_id`.
    let mut starts: Vec<usize> = ["timer-dev", "uart-dev"]
        .iter()
        .map(|name| {
            let mut key = vec![name.len() as u8];
            key.extend(name.as_bytes());
            key.extend(0u32.to_be_bytes());
            s.windows(key.len())
                .rposition(|w| w == key.as_slice())
                .expect("the device section")
                - 5
        })
        .collect();
    starts.push(eof);
    let devices = (0..2)
        .map(|i| {
            (
                s[starts[i]..starts[i] + 16].to_vec(),
                (starts[i + 1] - starts[i]) as u64,
            )
        })
        .collect();
    let trailer = (s[eof..eof + 16].to_vec(), (s.len() - eof) as u64);
    run.guest.check_intact();
    Layout {
        setup_len,
        rounds,
        first_pass,
        devices,
        trailer,
    }
}

/// Where a run's cut really fell, from its progress calls: the phase of the first byte
/// the destination did not get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Landing {
    Setup,
    FirstRound,
    /// A later round of the first pass over RAM.
    BulkRound,
    /// A round after the first pass: pages the guest dirtied again.
    DirtyRound,
    Switchover,
    Confirmation,
}

fn landing(run: &Run) -> (Landing, u64) {
    let c = run.forwarded;
    if run.events.is_empty() {
        return (Landing::Setup, 0); // the setup never finished
    }
    if c >= run.stream.len() as u64 {
        return (Landing::Confirmation, CONFIRMATION);
    }
    let mut pages_before = 0;
    for &(status, rounds, sent, pages) in &run.events {
        if c < sent {
            return match (status, rounds) {
                (Status::Active, 0) => (Landing::Setup, 0),
                (Status::Active, 1) => (Landing::FirstRound, 1),
                (Status::Active, k) if pages_before < PAGES => (Landing::BulkRound, k),
                (Status::Active, k) => (Landing::DirtyRound, k),
                _ => (Landing::Switchover, SWITCHOVER),
            };
        }
        pages_before = pages;
    }
    (Landing::Switchover, SWITCHOVER)
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn points(layout: &Layout, seed: u64) -> Vec<Point> {
    let mut rng = Rng(seed);
    let mut v = Vec::new();
    let bulk = layout.first_pass;
    assert!(
        bulk >= 2,
        "the first pass takes at least two rounds: {:?}",
        layout.rounds
    );
    let size = |k: u64| layout.rounds[(k - 1) as usize];
    for _ in 0..10 {
        v.push(Point::Setup(rng.below(layout.setup_len)));
    }
    for _ in 0..12 {
        v.push(Point::Round {
            k: 1,
            x: rng.below(size(1)),
        });
    }
    for _ in 0..12 {
        let k = 2 + rng.below(bulk - 1);
        v.push(Point::Round {
            k,
            x: rng.below(size(k)),
        });
    }
    // Rounds of re-dirtied pages: how many there are depends on how much the vCPU ran
    // (a round with nothing dirty converges); the cut stays in the first two and in
    // what they surely hold (a few dirty pages). A run without them is cut at the
    // switchover instead, and counted there.
    for _ in 0..12 {
        let k = bulk + 1 + rng.below(2);
        v.push(Point::Round {
            k,
            x: rng.below(4 * 4096),
        });
    }
    // The switchover's first bytes: SWITCHOVER_START, the END header, the first RAM
    // record (the dirty pages after it vary from run to run).
    for _ in 0..10 {
        v.push(Point::End(rng.below(24)));
    }
    for i in 0..16 {
        let idx = i % 2;
        v.push(Point::Device {
            idx,
            x: rng.below(layout.devices[idx].1),
        });
    }
    for _ in 0..12 {
        v.push(Point::Trailer(rng.below(layout.trailer.1)));
    }
    for i in 0..16 {
        v.push(Point::Shut(i % 8));
    }
    v
}

#[test]
fn a_connection_cut_at_any_of_100_points_loses_no_guest() {
    let layout = calibrate();
    let points = points(&layout, 0x5eed_2026);
    assert_eq!(points.len(), 100);
    let mut failures = Vec::new();
    let mut landed_in = std::collections::BTreeMap::new();
    for (i, point) in points.iter().enumerate() {
        let mut run = migrate_once(100 + i as u64, Some(point), Some(&layout));
        let (landing, rank) = landing(&run);
        *landed_in.entry(landing).or_insert(0) += 1;
        let mut problems = Vec::new();
        if !run.cut {
            problems.push("the proxy never cut".to_string());
        }
        match &run.result {
            Ok(_) => problems.push("the source reported success".into()),
            Err(e) => match e.kind() {
                ErrorKind::MigrationFailed { phase, bytes, .. } => {
                    if phase_rank(phase) < rank {
                        problems.push(format!(
                            "reported phase {phase:?} is before the cut ({landing:?})"
                        ));
                    }
                    if *bytes < run.forwarded {
                        problems.push(format!(
                            "reported {bytes} bytes, {} were delivered",
                            run.forwarded
                        ));
                    }
                }
                _ => problems.push(format!("not a MigrationFailed error: {e}")),
            },
        }
        if !run.guest.is_running() || run.guest.stops != run.guest.resumes {
            problems.push(format!(
                "guest not running on the source (stops {}, resumes {})",
                run.guest.stops, run.guest.resumes
            ));
        }
        let (bad_pages, dev_differs) = run.guest.check_intact();
        if !bad_pages.is_empty() {
            problems.push(format!(
                "{} source pages differ from the copy",
                bad_pages.len()
            ));
        }
        if dev_differs {
            problems.push("a source device differs from the copy".into());
        }
        if run.landed.started {
            problems.push("the destination started its guest".into());
        }
        if run.landed.result.is_ok() {
            problems.push("the destination reported success".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "point {i} {point:?}: {}; source: {:?}; destination: {:?}",
                problems.join(", "),
                run.result.as_ref().err().map(|e| e.to_string()),
                run.landed.result.as_ref().err().map(|e| e.to_string()),
            ));
        }
        drop(run.stream);
    }
    assert!(
        failures.is_empty(),
        "{} of 100 points failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every kind of point was hit, whatever the timing of the runs.
    eprintln!("cuts by phase: {landed_in:?}");
    for (kind, least) in [
        (Landing::Setup, 10),
        (Landing::FirstRound, 10),
        (Landing::BulkRound, 5),
        // How many runs reach rounds of re-dirtied pages depends on how much the vCPU
        // thread ran (a round with nothing dirty converges); 12 points aim there.
        (Landing::DirtyRound, 2),
        (Landing::Switchover, 30),
        (Landing::Confirmation, 10),
    ] {
        let n = landed_in.get(&kind).copied().unwrap_or(0);
        assert!(n >= least, "only {n} cuts in {kind:?}: {landed_in:?}");
    }
}
