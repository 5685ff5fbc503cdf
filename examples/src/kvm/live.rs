//! Both ends of the KVM guest's live migration over TCP, as the `kvm-migration` example
//! runs them.
//!
//! The migration runs over one connection with QEMU's return path. The destination
//! records a digest of what it loaded (a checksum per page, the vCPU's and the
//! console's saved bytes) just before its vCPU starts, lets the guest run until it has
//! reported [`PASSES_AFTER_RESUME`] more passes, then answers a second connection with
//! the digest and the first and last pass it saw; the source compares the digest with
//! its own stopped state.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vmstate::migrate::{
    CancelToken, IncomingParams, MigrationParams, MigrationStats, OnTimeout, migrate_over, receive,
};

use super::{FILLED, KvmMachine, LineSink, MACHINE_TYPE, Workload};
use crate::machine::Digest;

/// Passes the destination's guest reports before the destination answers.
pub const PASSES_AFTER_RESUME: u32 = 3;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The source's settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Guest RAM in bytes.
    pub ram: u64,
    /// What the guest does. A [`Workload::Fill`] or [`Workload::Preloaded`] guest is
    /// paused once its memory is filled, and migrated paused.
    pub workload: Workload,
    /// Downtime limit.
    pub downtime_limit: Duration,
    /// Bandwidth cap in bytes per second.
    pub max_bandwidth: Option<u64>,
    /// Force the switchover after this long.
    pub max_time: Duration,
    /// How long a rewriting guest runs after its first pass before the migration
    /// starts.
    pub warm_up: Duration,
}

/// What a finished migration reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The driver's statistics.
    pub stats: MigrationStats,
    /// The last pass the guest reported on the source.
    pub source_last_pass: u32,
    /// The first and last pass the destination's guest reported.
    pub destination_passes: (u32, u32),
    /// RAM pages compared.
    pub pages: usize,
    /// Pages whose contents differ between source and destination at switchover.
    pub differing_pages: usize,
    /// Devices (the vCPU, the console) whose state differs.
    pub differing_devices: Vec<String>,
}

impl Outcome {
    /// True when the destination's state equals the source's at switchover and (for a
    /// rewriting guest) its guest went on from the next pass.
    pub fn verified(&self) -> bool {
        self.differing_pages == 0
            && self.differing_devices.is_empty()
            && (self.source_last_pass == FILLED
                || self.destination_passes.0 == self.source_last_pass + 1)
    }
}

/// The digest of a stopped (or not yet started) machine.
pub fn digest(m: &KvmMachine) -> AnyResult<Digest> {
    use vmstate::VmState;
    Ok(Digest {
        pages: (0..m.block.pages())
            .map(|p| m.block.page_checksum(p))
            .collect(),
        devices: vec![
            ("kvm-cpu".into(), m.cpu.lock().unwrap().to_bytes()?),
            ("kvm-console".into(), m.console.lock().unwrap().to_bytes()?),
        ],
    })
}

/// The destination: accepts the migration on `listener` into a new VM with `ram`
/// bytes, starts the guest once the source let go, waits for its next passes, then
/// answers one more connection with the digest and the passes.
pub fn run_destination(listener: TcpListener, ram: u64, on_line: LineSink) -> AnyResult<()> {
    let mut machine = KvmMachine::new(ram, on_line)?;
    let (mut reg, _) = machine.registry()?;
    let (sock, _) = listener.accept()?;
    sock.set_nodelay(true)?;
    let mut loaded = None;
    receive(
        &mut reg,
        sock,
        &IncomingParams::new(MACHINE_TYPE),
        &mut || {
            loaded = Some(
                digest(&machine).map_err(|e| vmstate::Error::invalid("digest", e.to_string()))?,
            );
            Ok(())
        },
    )?;
    let loaded = loaded.ok_or("the source never let the guest go")?;
    let resumed_from = machine.console.lock().unwrap().last_pass;
    let reports = machine.console.lock().unwrap().reports;
    machine.start()?;
    if resumed_from == FILLED {
        // A filled guest only spins: there are no passes to wait for.
        std::thread::sleep(Duration::from_millis(50));
        machine.stop()?;
        return answer(&listener, &loaded, (0, 0));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let c = machine.console.lock().unwrap().clone();
        if c.reports > reports {
            break c.last_pass.saturating_sub((c.reports - reports - 1) as u32);
        }
        if Instant::now() > deadline {
            return Err("the guest reported nothing after it was resumed".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    while machine.console.lock().unwrap().last_pass < resumed_from + PASSES_AFTER_RESUME {
        if Instant::now() > deadline {
            return Err("the resumed guest stopped making progress".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    machine.stop()?;
    let last = machine.console.lock().unwrap().last_pass;
    answer(&listener, &loaded, (first, last))
}

/// Answers the source's second connection: the digest, then the first and last pass.
fn answer(listener: &TcpListener, loaded: &Digest, passes: (u32, u32)) -> AnyResult<()> {
    let (mut verify, _) = listener.accept()?;
    let bytes = loaded.to_bytes();
    verify.write_all(&(bytes.len() as u64).to_be_bytes())?;
    verify.write_all(&bytes)?;
    verify.write_all(&passes.0.to_be_bytes())?;
    verify.write_all(&passes.1.to_be_bytes())?;
    verify.flush()?;
    Ok(())
}

/// The source: boots the guest, lets it run, migrates it to `addr` and checks the
/// destination's answer. `progress` sees the statistics after every round.
pub fn run_source(
    cfg: &SourceConfig,
    addr: &str,
    on_line: LineSink,
    progress: &mut dyn FnMut(&MigrationStats),
) -> AnyResult<Outcome> {
    let mut machine = KvmMachine::new(cfg.ram, on_line)?;
    machine.boot(cfg.workload)?;
    machine.start()?;
    // Migrate once the guest has touched its whole working set: after its first pass
    // and the warm-up (a rewriting guest), or paused once filled (a filling one).
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = |pass: u32| match cfg.workload {
        Workload::Rewrite { .. } => pass >= 1,
        Workload::Fill { .. } | Workload::Preloaded { .. } => pass == FILLED,
    };
    while !ready(machine.console.lock().unwrap().last_pass) {
        if Instant::now() > deadline {
            return Err("the guest did not go through its working set within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match cfg.workload {
        Workload::Rewrite { .. } => std::thread::sleep(cfg.warm_up),
        Workload::Fill { .. } | Workload::Preloaded { .. } => machine.stop()?, // migrated paused
    }

    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let (mut reg, ram_stats) = machine.registry()?;
    let mut params = MigrationParams::new(MACHINE_TYPE);
    params.downtime_limit = cfg.downtime_limit;
    params.max_bandwidth = cfg.max_bandwidth;
    params.max_total_time = Some(cfg.max_time);
    params.on_timeout = OnTimeout::ForceSwitchover;
    params.ram_stats = Some(ram_stats);
    let stats = migrate_over(
        &mut reg,
        sock,
        &mut machine,
        &params,
        &CancelToken::new(),
        progress,
    )?;
    // The guest is stopped here for good: its state is the state at switchover.
    let mine = digest(&machine)?;
    let source_last_pass = machine.console.lock().unwrap().last_pass;

    let mut verify = TcpStream::connect(addr)?;
    verify.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut len = [0u8; 8];
    verify.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_be_bytes(len))?;
    if len > 256 << 20 {
        return Err(format!("a digest of {len} bytes is implausible").into());
    }
    let mut bytes = vec![0u8; len];
    verify.read_exact(&mut bytes)?;
    let theirs = Digest::from_bytes(&bytes).ok_or("malformed digest from the destination")?;
    let mut passes = [0u8; 8];
    verify.read_exact(&mut passes)?;
    let first = u32::from_be_bytes(passes[..4].try_into()?);
    let last = u32::from_be_bytes(passes[4..].try_into()?);
    Ok(Outcome {
        stats,
        source_last_pass,
        destination_passes: (first, last),
        pages: mine.pages.len(),
        differing_pages: mine.differing_pages(&theirs),
        differing_devices: mine.differing_devices(&theirs),
    })
}
