//! Both ends of a live migration over TCP, as the `live-migration` example runs them.
//!
//! Protocol on the connection: the source sends the migration stream; the destination
//! answers `LOADED\n` as soon as the guest could run (the end of the downtime), then a
//! digest of its state (a checksum per page and the devices' bytes), which the source
//! compares with its own state at switchover.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vmstate::Reader;
use vmstate::migrate::{
    CancelToken, GuestControl, MigrationParams, MigrationStats, OnTimeout, migrate,
};
use vmstate::stream::{LoadOptions, load_stream};

use super::{Digest, MACHINE_TYPE, Machine, Vcpus, Workload};

/// The source's settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Guest RAM size in bytes.
    pub ram: u64,
    /// The guest workload.
    pub workload: Workload,
    /// Downtime limit.
    pub downtime_limit: Duration,
    /// Bandwidth cap in bytes per second.
    pub max_bandwidth: Option<u64>,
    /// Force the switchover after this long.
    pub max_time: Duration,
    /// How long the guest runs before the migration starts.
    pub warm_up: Duration,
    /// Throttle the vCPUs when they dirty memory faster than the link drains it.
    pub auto_converge: bool,
}

/// What a finished migration reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The driver's statistics.
    pub stats: MigrationStats,
    /// Wall time of the migration as seen by the caller.
    pub wall: Duration,
    /// Page writes the guest made before it was stopped.
    pub guest_writes: u64,
    /// RAM pages compared.
    pub pages: usize,
    /// Pages whose contents differ between source and destination.
    pub differing_pages: usize,
    /// Devices whose state differs.
    pub differing_devices: Vec<String>,
}

impl Outcome {
    /// True when the destination's state equals the source's at switchover.
    pub fn verified(&self) -> bool {
        self.differing_pages == 0 && self.differing_devices.is_empty()
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The destination: accepts one connection on `listener`, loads the guest into a
/// machine with `ram` bytes, confirms, and sends its digest.
pub fn run_destination(listener: TcpListener, ram: u64) -> AnyResult<()> {
    let machine = Machine::new(ram)?;
    let (mut reg, _) = machine.registry()?;
    let (sock, _) = listener.accept()?;
    sock.set_nodelay(true)?;
    let mut reply = sock.try_clone()?;
    let opts = LoadOptions {
        machine: Some(MACHINE_TYPE.into()),
        ..Default::default()
    };
    if let Err(e) = load_stream(&mut reg, &mut Reader::from_io(sock), &opts) {
        let _ = writeln!(reply, "FAILED {e}");
        return Err(e.into());
    }
    reply.write_all(b"LOADED\n")?;
    let digest = machine.digest()?.to_bytes();
    reply.write_all(&(digest.len() as u64).to_be_bytes())?;
    reply.write_all(&digest)?;
    reply.flush()?;
    Ok(())
}

/// The source's guest control: vCPUs, plus the destination's confirmation.
struct Source {
    vcpus: Vcpus,
    replies: BufReader<TcpStream>,
}

impl GuestControl for Source {
    fn stop(&mut self) -> vmstate::Result<()> {
        self.vcpus.stop()
    }
    fn resume(&mut self) {
        self.vcpus.resume()
    }
    fn throttle(&mut self, percent: u8) {
        self.vcpus.throttle(percent)
    }
    fn wait_destination(&mut self) -> vmstate::Result<()> {
        let mut line = String::new();
        self.replies.read_line(&mut line)?;
        if line == "LOADED\n" {
            Ok(())
        } else {
            Err(vmstate::Error::invalid(
                "destination",
                format!("answered {:?}", line.trim()),
            ))
        }
    }
}

/// The source: starts the guest, migrates it to `addr`, and checks the destination's
/// digest against its own state at switchover. `progress` sees the statistics after
/// every round.
pub fn run_source(
    cfg: &SourceConfig,
    addr: &str,
    progress: &mut dyn FnMut(&MigrationStats),
) -> AnyResult<Outcome> {
    let machine = Machine::new(cfg.ram)?;
    let vcpus = Vcpus::start(machine.state.clone(), cfg.workload);
    std::thread::sleep(cfg.warm_up);

    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let replies = BufReader::new(sock.try_clone()?);
    let mut guest = Source { vcpus, replies };
    let (mut reg, ram_stats) = machine.registry()?;
    let mut params = MigrationParams::new(MACHINE_TYPE);
    params.downtime_limit = cfg.downtime_limit;
    params.max_bandwidth = cfg.max_bandwidth;
    params.max_total_time = Some(cfg.max_time);
    params.on_timeout = OnTimeout::ForceSwitchover;
    params.ram_stats = Some(ram_stats);
    params.auto_converge = cfg.auto_converge;

    let started = Instant::now();
    let stats = migrate(
        &mut reg,
        &sock,
        &mut guest,
        &params,
        &CancelToken::new(),
        progress,
    )?;
    let wall = started.elapsed();

    // The guest is stopped: the source's state is the state at switchover.
    let source_digest = machine.digest()?;
    let mut len = [0u8; 8];
    guest.replies.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_be_bytes(len))?;
    if len > 64 << 20 {
        return Err(format!("digest of {len} bytes is implausible").into());
    }
    let mut bytes = vec![0u8; len];
    guest.replies.read_exact(&mut bytes)?;
    let dest = Digest::from_bytes(&bytes).ok_or("malformed digest from the destination")?;
    Ok(Outcome {
        stats,
        wall,
        guest_writes: guest
            .vcpus
            .writes
            .load(std::sync::atomic::Ordering::Relaxed),
        pages: source_digest.pages.len(),
        differing_pages: source_digest.differing_pages(&dest),
        differing_devices: source_digest.differing_devices(&dest),
    })
}
