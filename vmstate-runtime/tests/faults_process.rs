//! Failures that kill a process: a destination killed mid-migration, a source killed
//! mid-stream, and a snapshot writer killed with SIGKILL at random points.
//!
//! The test binary starts itself as the child process (`VMSTATE_CHILD` names the role),
//! so the children run the same code as the tests; its own harness (libtest-mimic)
//! runs the tests otherwise.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use support::proxy::{Cut, Proxy};
use support::{MACHINE, ShadowGuest, connect, listen};
use vmstate::migrate::{CancelToken, IncomingParams, OnTimeout, migrate_over};
use vmstate::ram::RamBlock;
use vmstate::stream::{LoadOptions, StreamConfig, load_file, save_snapshot};
use vmstate::transport::AtomicFile;
use vmstate::{ErrorKind, Registration, Registry, VmState};

const PAGES: u64 = 256;
const ROLE: &str = "VMSTATE_CHILD";

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return match role.as_str() {
            "destination" => child_destination(),
            "source" => child_source(&args[0]),
            "snapshot-writer" => {
                child_snapshot_writer(Path::new(&args[0]), args[1].parse().unwrap())
            }
            other => panic!("unknown role {other}"),
        };
    }
    let tests = vec![
        Trial::test(
            "a_killed_destination_process_leaves_the_source_guest_intact",
            killed_destination,
        ),
        Trial::test(
            "a_killed_source_process_leaves_a_destination_that_reports_a_truncated_stream",
            killed_source,
        ),
        Trial::test(
            "a_snapshot_writer_killed_at_random_points_never_damages_the_previous_snapshot",
            killed_snapshot_writer,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), tests).exit_code()
}

/// A child process that is killed and reaped when dropped (a failed test leaves none).
struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary as `role` with `args`; stdout and stderr piped.
fn spawn(role: &str, args: &[&str]) -> Reaped {
    Reaped(
        Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env(ROLE, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The first line of a child's stdout.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

/// Role: a destination on a free port (printed), exit 0 only if it started the guest.
fn child_destination() -> ExitCode {
    let (l, addr) = listen();
    println!("LISTENING {addr}");
    std::io::stdout().flush().unwrap();
    let mut params = IncomingParams::new(MACHINE);
    params.io_timeout = Some(Duration::from_secs(10));
    let landed = support::destination(l, PAGES, params).join().unwrap();
    match landed.result {
        Ok(_) if landed.started => {
            println!("STARTED");
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("destination: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Role: a source that migrates to `addr`, printing each round; bandwidth-limited so
/// that the migration takes a while.
fn child_source(addr: &str) -> ExitCode {
    let mut guest = ShadowGuest::new(PAGES, 16, 9);
    let (mut reg, mut params) = guest.source();
    params.max_bandwidth = Some(2 << 20);
    params.downtime_limit = Duration::ZERO;
    params.max_total_time = Some(Duration::from_secs(2));
    params.on_timeout = OnTimeout::ForceSwitchover;
    let addr: SocketAddr = addr.parse().unwrap();
    let r = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |s| {
            println!("ROUND {} {}", s.rounds, s.transferred);
            let _ = std::io::stdout().flush();
        },
    );
    match r {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("source: {e}");
            ExitCode::FAILURE
        }
    }
}

fn killed_destination() -> Result<(), Failed> {
    // Offsets of the stream at which the destination dies; `None`: after the whole
    // stream, while its SHUT(0) is held back on the way to the source.
    let points = [
        Some(40),
        Some(5_000),
        Some(150_000),
        Some(400_000),
        Some(700_000),
        None,
    ];
    for point in points {
        let mut dst = spawn("destination", &[]);
        let line = first_line(&mut dst);
        let addr: SocketAddr = line
            .strip_prefix("LISTENING ")
            .ok_or(line.clone())?
            .parse()
            .unwrap();
        let plan = point.map_or(Cut::HoldShut, Cut::Hold);
        let proxy = Proxy::start(addr, plan);
        let dst = Arc::new(Mutex::new(dst));
        let killer = {
            let (dst, forwarded, held) = (
                dst.clone(),
                proxy.forwarded.clone(),
                proxy.held_shut.clone(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let due = match point {
                        Some(at) => forwarded.load(Ordering::SeqCst) >= at,
                        None => held.load(Ordering::SeqCst),
                    };
                    if due || Instant::now() > deadline {
                        dst.lock().unwrap().kill().unwrap();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let mut guest = ShadowGuest::new(PAGES, 16, 7);
        let (mut reg, mut params) = guest.source();
        params.max_bandwidth = Some(4 << 20);
        params.io_timeout = Some(Duration::from_secs(10));
        let result = migrate_over(
            &mut reg,
            connect(proxy.addr),
            &mut guest,
            &params,
            &CancelToken::new(),
            &mut |_| {},
        );
        killer.join().unwrap();
        let status = dst.lock().unwrap().wait().unwrap();
        let out = {
            let mut d = dst.lock().unwrap();
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(d.stdout.as_mut().unwrap(), &mut s);
            s
        };
        proxy.join();
        let what = format!("destination killed at {point:?}");
        let err = result
            .err()
            .ok_or(format!("{what}: the source reported success"))?;
        if !matches!(err.kind(), ErrorKind::MigrationFailed { .. }) {
            return Err(format!("{what}: {err}").into());
        }
        if status.code().is_some() || out.contains("STARTED") {
            return Err(format!(
                "{what}: the destination was not killed before it started ({status})"
            )
            .into());
        }
        if !guest.is_running() || guest.stops != guest.resumes {
            return Err(format!("{what}: the source's guest is not running: {err}").into());
        }
        let (bad, dev) = guest.check_intact();
        if !bad.is_empty() || dev {
            return Err(format!("{what}: the source's state changed").into());
        }
        eprintln!("{what}: source reported: {err}");
    }
    Ok(())
}

fn killed_source() -> Result<(), Failed> {
    // Killed after the first, the second and the third round's progress report.
    for after_round in 1..=3u64 {
        let mut dst = spawn("destination", &[]);
        let line = first_line(&mut dst);
        let addr = line
            .strip_prefix("LISTENING ")
            .ok_or(line.clone())?
            .to_string();
        let mut src = spawn("source", &[&addr]);
        let mut lines = BufReader::new(src.stdout.take().unwrap()).lines();
        loop {
            let l = lines.next().ok_or("the source ended before the kill")??;
            if l.starts_with(&format!("ROUND {after_round} ")) {
                break;
            }
        }
        src.kill().unwrap();
        src.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = dst.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                dst.kill().unwrap();
                return Err("the destination did not end after its source died".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let said = stderr_of(&mut dst);
        if status.success() || status.code().is_none() {
            return Err(format!("the destination exited with {status}: {said}").into());
        }
        if !said.contains("truncated") {
            return Err(
                format!("the destination did not report a truncated stream: {said}").into(),
            );
        }
        eprintln!(
            "source killed after round {after_round}: destination said: {}",
            said.trim()
        );
    }
    Ok(())
}

/// A snapshot's content: a generation number and RAM derived from it.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "generation")]
struct Generation {
    value: u64,
}

const SNAP_RAM: u64 = 4 << 20;

fn snapshot_registry(generation: u64) -> (Registry, Arc<Mutex<Generation>>, Arc<RamBlock>) {
    let ram = Arc::new(RamBlock::new("ram0", SNAP_RAM).unwrap());
    let g = Arc::new(Mutex::new(Generation { value: generation }));
    let mut reg = support::ram_registry(ram.clone());
    reg.register_device(g.clone(), Registration::new()).unwrap();
    (reg, g, ram)
}

/// The RAM word at `i` for generation `generation`.
fn word(generation: u64, i: u64) -> u64 {
    (i ^ generation.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

fn write_generation(path: &Path, generation: u64) {
    let (mut reg, _, ram) = snapshot_registry(generation);
    for i in 0..SNAP_RAM / 8 {
        ram.write_u64(i * 8, word(generation, i));
    }
    let mut f = AtomicFile::create(path).unwrap();
    save_snapshot(&mut reg, &mut f, StreamConfig::new(MACHINE)).unwrap();
    f.commit().unwrap();
}

/// Loads the snapshot at `path`: its generation, after checking every RAM word.
fn read_generation(path: &Path) -> Result<u64, String> {
    let (mut reg, g, ram) = snapshot_registry(u64::MAX);
    let opts = LoadOptions {
        machine: Some(MACHINE.into()),
        ..Default::default()
    };
    let report = load_file(&mut reg, path, opts, false).map_err(|e| e.to_string())?;
    if !matches!(
        report.integrity,
        vmstate::stream::integrity::Integrity::Valid(_)
    ) {
        return Err(format!("integrity: {}", report.integrity.describe()));
    }
    let generation = g.lock().unwrap().value;
    let mut b = [0u8; 8];
    for i in 0..SNAP_RAM / 8 {
        ram.read(i * 8, &mut b);
        if u64::from_ne_bytes(b) != word(generation, i) {
            return Err(format!(
                "generation {generation}: RAM word {i} is from another generation"
            ));
        }
    }
    Ok(generation)
}

/// Role: writes generations `first`, `first + 1`, ... to `path` until killed.
fn child_snapshot_writer(path: &Path, first: u64) -> ExitCode {
    for generation in first.. {
        write_generation(path, generation);
        println!("WROTE {generation}");
        let _ = std::io::stdout().flush();
    }
    ExitCode::SUCCESS
}

fn killed_snapshot_writer() -> Result<(), Failed> {
    let dir = tempfile_dir();
    let path = dir.join("guest.snap");
    write_generation(&path, 0);
    // A reader loads the snapshot over and over while writers come and die.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, path) = (stop.clone(), reads.clone(), path.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::SeqCst) {
                read_generation(&path)
                    .map_err(|e| format!("a reader saw a damaged snapshot: {e}"))?;
                reads.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut last_seen = 0;
    let trials = 50;
    for trial in 1..=trials {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let first = trial * 1000;
        let mut w = spawn(
            "snapshot-writer",
            &[path.to_str().unwrap(), &first.to_string()],
        );
        // Kill after 0 to 3 complete writes and a random 0-40 ms into the next.
        let writes_before = rng % 4;
        let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
        let mut committed = None;
        for _ in 0..writes_before {
            let l = lines.next().ok_or("the writer died")??;
            committed = Some(l.trim_start_matches("WROTE ").parse::<u64>().unwrap());
        }
        std::thread::sleep(Duration::from_micros((rng >> 20) % 40_000));
        w.kill().unwrap();
        w.wait().unwrap();
        let generation = read_generation(&path).map_err(|e| format!("trial {trial}: {e}"))?;
        let floor = committed.unwrap_or(last_seen);
        if generation < floor || (generation != last_seen && generation < first) {
            return Err(format!(
                "trial {trial}: generation {generation}, expected at least {floor}"
            )
            .into());
        }
        last_seen = generation;
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap()?;
    let n = reads.load(Ordering::SeqCst);
    if n < 10 {
        return Err(format!("the reader only managed {n} reads").into());
    }
    // Killed writers leave their temporary files, never anything at the path itself.
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name != "guest.snap" && !(name.starts_with(".guest.snap.") && name.ends_with(".tmp")) {
            return Err(format!("unexpected file {name}").into());
        }
    }
    eprintln!(
        "{trials} writers killed; {n} reads saw only complete snapshots; last generation {last_seen}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmstate-snapkill-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
