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
    CancelToken, IncomingGuest, IncomingParams, MigrationParams, MigrationStats, OnTimeout,
    PostcopyPolicy, migrate_over, receive_with,
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
    /// vCPUs (the destination must have as many).
    pub vcpus: u32,
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
    /// Switch to postcopy when this policy says so: the destination's vCPUs then run
    /// before all of the guest's memory is there, and each page they touch that is
    /// missing comes through userfaultfd.
    pub postcopy: Option<PostcopyPolicy>,
    /// Send requested pages on a postcopy-preempt channel (the destination must take
    /// one).
    pub postcopy_preempt: bool,
    /// Cap on the background pages after the switch to postcopy, in bytes per second.
    pub max_postcopy_bandwidth: Option<u64>,
}

/// The destination's settings.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Guest RAM in bytes (the source's).
    pub ram: u64,
    /// vCPUs (the source's).
    pub vcpus: u32,
    /// Fault in all guest memory before the migration starts (QEMU's
    /// `-mem-prealloc`), so that placing pages does not pay the kernel's zeroing.
    pub preallocate: bool,
    /// Take requested pages from a postcopy-preempt channel too (a second connection
    /// on `listener`, taken at POSTCOPY_LISTEN).
    pub postcopy_preempt: bool,
}

/// What a finished migration reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The driver's statistics.
    pub stats: MigrationStats,
    /// The last pass each vCPU reported on the source.
    pub source_last_passes: Vec<u32>,
    /// The first and last pass each vCPU reported on the destination.
    pub destination_passes: Vec<(u32, u32)>,
    /// RAM pages compared.
    pub pages: usize,
    /// Pages whose contents differ between source and destination at switchover.
    pub differing_pages: usize,
    /// Whether the pages were compared: not after postcopy with a rewriting guest,
    /// which rewrites them as soon as it runs on the destination (its devices and its
    /// passes are still checked).
    pub pages_compared: bool,
    /// Devices (the vCPUs, the chipset, the consoles) whose state differs.
    pub differing_devices: Vec<String>,
    /// What the destination saw of postcopy (its vCPUs' faults), if it ran.
    pub destination_postcopy: Option<crate::machine::live::DestinationPostcopy>,
}

impl Outcome {
    /// True when the destination's state equals the source's at switchover and (for a
    /// rewriting guest) each vCPU went on from its next pass.
    pub fn verified(&self) -> bool {
        self.differing_pages == 0
            && self.differing_devices.is_empty()
            && self.source_last_passes.len() == self.destination_passes.len()
            && self
                .source_last_passes
                .iter()
                .zip(&self.destination_passes)
                .all(|(&last, &(first, _))| last == FILLED || first == last + 1)
    }
}

/// A checksum of every page of the machine's RAM.
fn page_checksums(m: &KvmMachine) -> Vec<u64> {
    (0..m.block.pages())
        .map(|p| m.block.page_checksum(p))
        .collect()
}

/// The destination's guest: records what was loaded just before its vCPUs start (in
/// postcopy, inside the load: the devices only, as reading a missing page from the
/// loading thread would wait for itself), then starts them.
struct StartingGuest<'a> {
    machine: &'a mut KvmMachine,
    loaded: Option<Digest>,
    /// Each vCPU's last pass and console reports before the start.
    passes: Option<(Vec<u32>, Vec<u64>)>,
}

impl IncomingGuest for StartingGuest<'_> {
    fn start(&mut self) -> vmstate::Result<()> {
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
            vmstate::Error::invalid("destination guest", e.to_string())
        };
        self.loaded = Some(digest(self.machine).map_err(fail)?);
        let reports = self
            .machine
            .consoles
            .iter()
            .map(|c| c.lock().unwrap().reports)
            .collect();
        self.passes = Some((self.machine.last_passes(), reports));
        self.machine.start().map_err(fail)
    }

    fn pause(&mut self) {
        let _ = self.machine.stop();
    }
}

/// The digest of a stopped (or not yet started) machine: a checksum per page and the
/// saved bytes of every device.
pub fn digest(m: &KvmMachine) -> AnyResult<Digest> {
    use vmstate::VmState;
    let mut devices = vec![("kvm-chipset".into(), m.chipset.lock().unwrap().to_bytes()?)];
    for (i, cpu) in m.cpus.iter().enumerate() {
        devices.push((format!("kvm-cpu {i}"), cpu.lock().unwrap().to_bytes()?));
    }
    for (i, console) in m.consoles.iter().enumerate() {
        devices.push((
            format!("kvm-console {i}"),
            console.lock().unwrap().to_bytes()?,
        ));
    }
    Ok(Digest {
        pages: if m.block.missing_pages() > 0 {
            // Postcopy, at the start: pages are checksummed once they are all there.
            Vec::new()
        } else {
            page_checksums(m)
        },
        devices,
    })
}

/// The destination: creates its VM, calls `ready` (to announce the address: only now
/// is a preallocated VM's memory in place), accepts the migration on `listener`,
/// starts the guest once the source let go, waits for each vCPU's next passes, then
/// answers one more connection with the digest and the passes.
pub fn run_destination(
    listener: TcpListener,
    cfg: &DestinationConfig,
    on_line: LineSink,
    ready: impl FnOnce(),
) -> AnyResult<()> {
    let mut machine = KvmMachine::with_vcpus(cfg.ram, cfg.vcpus, on_line)?;
    if cfg.preallocate {
        machine.preallocate()?;
    }
    // The preempt thread takes the source's second connection at POSTCOPY_LISTEN,
    // and only while the load runs.
    let (preempt, accept) = match cfg.postcopy_preempt {
        true => {
            let (p, a) = crate::preempt::PreemptListener::new(&listener)?;
            (Some(p), Some(a))
        }
        false => (None, None),
    };
    let (mut reg, _) = machine.registry_with(|h| match accept {
        Some(a) => h.with_postcopy_preempt_incoming(a),
        None => h,
    })?;
    ready();
    let (sock, _) = listener.accept()?;
    sock.set_nodelay(true)?;
    let mut guest = StartingGuest {
        machine: &mut machine,
        loaded: None,
        passes: None,
    };
    let report = receive_with(
        &mut reg,
        sock,
        &IncomingParams::new(MACHINE_TYPE),
        &mut guest,
    )?;
    if let Some(p) = preempt {
        p.finish();
    }
    let mut loaded = guest
        .loaded
        .take()
        .ok_or("the source never let the guest go")?;
    let (resumed_from, reports) = guest.passes.take().expect("set with the digest");
    let postcopy = report
        .postcopy
        .as_ref()
        .map_or(serde_json::Value::Null, |r| {
            crate::machine::live::DestinationPostcopy::from_report(r).to_json()
        });
    if report.postcopy.is_some() && resumed_from[0] == FILLED {
        // Postcopy: the pages were not all there when the guest started; now they are,
        // and a filled guest only spins: they are still the source's.
        loaded.pages = page_checksums(&machine);
    }
    if resumed_from[0] == FILLED {
        // A filled guest only spins: there are no passes to wait for.
        std::thread::sleep(Duration::from_millis(50));
        machine.stop()?;
        let none = vec![(0, 0); resumed_from.len()];
        return answer(&listener, &loaded, &none, &postcopy);
    }
    // Each vCPU's first pass after the resume, once it reported one.
    let mut first: Vec<Option<u32>> = vec![None; resumed_from.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = true;
        for (i, console) in machine.consoles.iter().enumerate() {
            let c = console.lock().unwrap().clone();
            if first[i].is_none() && c.reports > reports[i] {
                first[i] = Some(
                    c.last_pass
                        .saturating_sub((c.reports - reports[i] - 1) as u32),
                );
            }
            done &= c.last_pass >= resumed_from[i] + PASSES_AFTER_RESUME;
        }
        if done && first.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the resumed guest stopped making progress".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    machine.stop()?;
    let passes: Vec<(u32, u32)> = first
        .into_iter()
        .zip(machine.last_passes())
        .map(|(f, last)| (f.unwrap_or(0), last))
        .collect();
    answer(&listener, &loaded, &passes, &postcopy)
}

/// Answers the source's second connection: the digest, then each vCPU's first and
/// last pass.
fn answer(
    listener: &TcpListener,
    loaded: &Digest,
    passes: &[(u32, u32)],
    postcopy: &serde_json::Value,
) -> AnyResult<()> {
    let (mut verify, _) = listener.accept()?;
    let bytes = loaded.to_bytes();
    verify.write_all(&(bytes.len() as u64).to_be_bytes())?;
    verify.write_all(&bytes)?;
    verify.write_all(&(passes.len() as u32).to_be_bytes())?;
    for (first, last) in passes {
        verify.write_all(&first.to_be_bytes())?;
        verify.write_all(&last.to_be_bytes())?;
    }
    let postcopy = serde_json::to_vec(postcopy)?;
    verify.write_all(&(postcopy.len() as u64).to_be_bytes())?;
    verify.write_all(&postcopy)?;
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
    let mut machine = KvmMachine::with_vcpus(cfg.ram, cfg.vcpus, on_line)?;
    machine.boot(cfg.workload)?;
    machine.start()?;
    // Migrate once the guest has touched its whole working set: after each vCPU's
    // first pass and the warm-up (a rewriting guest), or paused once filled.
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = |passes: &[u32]| match cfg.workload {
        Workload::Rewrite { .. } => passes.iter().all(|&p| p >= 1),
        Workload::Fill { .. } | Workload::Preloaded { .. } => passes[0] == FILLED,
    };
    while !ready(&machine.last_passes()) {
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
    let preempt_addr = cfg.postcopy_preempt.then(|| addr.to_string());
    let (mut reg, ram_stats) = machine.registry_with(|h| match preempt_addr {
        Some(addr) => h.with_postcopy_preempt(Box::new(move || {
            let s = crate::preempt::connect(&addr)?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as Box<dyn std::io::Write + Send>)
        })),
        None => h,
    })?;
    let mut params = MigrationParams::new(MACHINE_TYPE);
    params.downtime_limit = cfg.downtime_limit;
    params.max_bandwidth = cfg.max_bandwidth;
    params.max_total_time = Some(cfg.max_time);
    params.on_timeout = OnTimeout::ForceSwitchover;
    params.ram_stats = Some(ram_stats);
    params.postcopy = cfg.postcopy.clone();
    params.max_postcopy_bandwidth = cfg.max_postcopy_bandwidth;
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
    let source_last_passes = machine.last_passes();

    let mut verify = TcpStream::connect(addr)?;
    verify.set_read_timeout(Some(Duration::from_secs(120)))?;
    let len = usize::try_from(read_u64(&mut verify)?)?;
    if len > 256 << 20 {
        return Err(format!("a digest of {len} bytes is implausible").into());
    }
    let mut bytes = vec![0u8; len];
    verify.read_exact(&mut bytes)?;
    let theirs = Digest::from_bytes(&bytes).ok_or("malformed digest from the destination")?;
    let count = read_u32(&mut verify)?;
    if count != machine.vcpu_count() {
        return Err(format!(
            "the destination has {count} vCPUs, the source {}",
            machine.vcpu_count()
        )
        .into());
    }
    let mut destination_passes = Vec::new();
    for _ in 0..count {
        destination_passes.push((read_u32(&mut verify)?, read_u32(&mut verify)?));
    }
    let len = usize::try_from(read_u64(&mut verify)?)?;
    if len > 1 << 20 {
        return Err(format!("a postcopy report of {len} bytes is implausible").into());
    }
    let mut postcopy = vec![0u8; len];
    verify.read_exact(&mut postcopy)?;
    let postcopy: serde_json::Value = serde_json::from_slice(&postcopy)?;
    Ok(Outcome {
        stats,
        source_last_passes,
        destination_passes,
        pages: mine.pages.len(),
        pages_compared: !theirs.pages.is_empty(),
        differing_pages: if theirs.pages.is_empty() {
            0
        } else {
            mine.differing_pages(&theirs)
        },
        differing_devices: mine.differing_devices(&theirs),
        destination_postcopy: crate::machine::live::DestinationPostcopy::from_json(&postcopy),
    })
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
