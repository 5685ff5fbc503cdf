//! Both ends of a live migration over TCP, as the `live-migration` example runs them.
//!
//! The migration runs over one connection with QEMU's return path
//! ([`migrate_over`] / [`receive_with`]): the destination confirms with `SHUT(0)` and starts
//! its guest only after the source let go. Then the source opens a second connection to
//! the same address and reads the destination's digest (a checksum per page and the
//! devices' bytes), which it compares with its own state at switchover.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vmstate::migrate::{
    CancelToken, IncomingGuest, IncomingParams, MigrationParams, MigrationStats, OnTimeout,
    PostcopyPolicy, migrate_over, receive_with,
};

use vmstate::transport::Connection;
use vmstate::transport::tls::{TlsClient, TlsServer};

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
    /// Send pages sent before as XBZRLE deltas, with a cache of this many bytes.
    pub xbzrle_cache: Option<u64>,
    /// Multifd channels beside the main connection (0: none), each over its own TLS
    /// session when `tls` is set.
    pub channels: usize,
    /// How the multifd channels compress pages (needs `channels` > 0).
    pub compression: vmstate::multifd::compress::Compression,
    /// Mutual TLS: this side's client credentials and the destination's expected name.
    pub tls: Option<TlsClient>,
    /// Switch to postcopy when this policy says so.
    pub postcopy: Option<PostcopyPolicy>,
    /// Cap on the background pages after the switch to postcopy, in bytes per second.
    pub max_postcopy_bandwidth: Option<u64>,
    /// Send requested pages on a postcopy-preempt channel (not over TLS).
    pub postcopy_preempt: bool,
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
    /// What the destination saw of postcopy (fault latency, requests), if it ran.
    pub destination_postcopy: Option<DestinationPostcopy>,
}

/// The destination's postcopy figures, sent back with its digest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationPostcopy {
    /// Page requests its guest made.
    pub requests: u64,
    /// Pages asked for.
    pub requested_pages: u64,
    /// Fault latency, median, in microseconds.
    pub fault_p50_us: f64,
    /// Fault latency, 99th percentile, in microseconds.
    pub fault_p99_us: f64,
    /// The longest fault, in microseconds.
    pub fault_max_us: f64,
    /// From POSTCOPY_RUN to the end of the stream, in milliseconds.
    pub time_in_postcopy_ms: f64,
    /// Pages discarded at the switch.
    pub discarded_pages: u64,
    /// Pages that came on the postcopy-preempt channel.
    pub preempt_pages: u64,
}

impl DestinationPostcopy {
    /// The figures of the destination's load report.
    pub fn from_report(r: &vmstate::ram::postcopy::PostcopyReport) -> Self {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        DestinationPostcopy {
            requests: r.requests,
            requested_pages: r.requested_pages,
            fault_p50_us: us(r.fault_latency_p50),
            fault_p99_us: us(r.fault_latency_p99),
            fault_max_us: us(r.fault_latency_max),
            time_in_postcopy_ms: r.time_in_postcopy.as_secs_f64() * 1e3,
            discarded_pages: r.discarded_pages,
            preempt_pages: r.preempt_pages,
        }
    }

    /// As JSON, for the answer to the source.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "requested_pages": self.requested_pages,
            "fault_p50_us": self.fault_p50_us,
            "fault_p99_us": self.fault_p99_us,
            "fault_max_us": self.fault_max_us,
            "time_in_postcopy_ms": self.time_in_postcopy_ms,
            "discarded_pages": self.discarded_pages,
            "preempt_pages": self.preempt_pages,
        })
    }

    /// Back from [`to_json`](Self::to_json).
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        Some(DestinationPostcopy {
            requests: v["requests"].as_u64()?,
            requested_pages: v["requested_pages"].as_u64()?,
            fault_p50_us: v["fault_p50_us"].as_f64()?,
            fault_p99_us: v["fault_p99_us"].as_f64()?,
            fault_max_us: v["fault_max_us"].as_f64()?,
            time_in_postcopy_ms: v["time_in_postcopy_ms"].as_f64()?,
            discarded_pages: v["discarded_pages"].as_u64()?,
            preempt_pages: v["preempt_pages"].as_u64()?,
        })
    }
}

/// A migration's postcopy figures as the examples' JSON reports show them: the
/// source's, and the destination's when it sent them.
pub fn postcopy_json(
    p: &vmstate::migrate::PostcopyStats,
    destination: Option<&DestinationPostcopy>,
) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    serde_json::json!({
        "precopy_ms": ms(p.precopy_time),
        "time_in_postcopy_ms": ms(p.time_in_postcopy),
        "requests": p.requests,
        "requested_pages": p.requested_pages,
        "request_latency_p50_us": us(p.request_latency_p50),
        "request_latency_p99_us": us(p.request_latency_p99),
        "destination": destination.map(|d| serde_json::json!({
            "requests": d.requests,
            "requested_pages": d.requested_pages,
            "fault_latency_p50_us": d.fault_p50_us,
            "fault_latency_p99_us": d.fault_p99_us,
            "fault_latency_max_us": d.fault_max_us,
            "time_in_postcopy_ms": d.time_in_postcopy_ms,
            "discarded_pages": d.discarded_pages,
            "preempt_pages": d.preempt_pages,
        })),
    })
}

/// The destination's guest: once started (at POSTCOPY_RUN, or after the load), one
/// vCPU reads every page of the working set once, in a scattered order, through the
/// RAM block (so that in postcopy each missing page is asked for). It only reads: the
/// destination's state stays comparable with the source's at the switch.
struct ReadingVcpu {
    ram: std::sync::Arc<vmstate::ram::RamBlock>,
    read_set: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IncomingGuest for ReadingVcpu {
    fn start(&mut self) -> vmstate::Result<()> {
        let (ram, pages) = (self.ram.clone(), self.read_set / 4096);
        self.thread = Some(std::thread::spawn(move || {
            let mut word = [0u8; 8];
            for i in 0..pages {
                // An odd stride over a power-of-two count visits every page once.
                let page = (i * 7919) % pages;
                ram.read(page * 4096, &mut word);
            }
        }));
        Ok(())
    }
}

impl Outcome {
    /// True when the destination's state equals the source's at switchover.
    pub fn verified(&self) -> bool {
        self.differing_pages == 0 && self.differing_devices.is_empty()
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The destination: accepts the migration on `listener` (over mutual TLS with `tls`),
/// loads the guest into a machine with `ram` bytes (started only once the source
/// confirmed it let go), then answers one more connection with its digest.
pub fn run_destination(listener: TcpListener, ram: u64, tls: Option<&TlsServer>) -> AnyResult<()> {
    run_destination_with(listener, ram, tls, &DestinationOptions::default())
}

/// What the destination expects beside the main connection, and what its guest does.
#[derive(Debug, Clone, Default)]
pub struct DestinationOptions {
    /// Multifd channels beside the main connection.
    pub channels: usize,
    /// Once started, the guest reads the first this many bytes of RAM once (in
    /// postcopy, while pages still arrive).
    pub read_set: u64,
    /// Take requested pages from a postcopy-preempt channel too.
    pub postcopy_preempt: bool,
    /// Back guest RAM with memory before the migration starts (QEMU's
    /// `-mem-prealloc`): no page faults while pages arrive.
    pub preallocate: bool,
}

/// [`run_destination`] as `opts` says: multifd channels beside the main connection
/// (each with its own TLS session under `tls`; compressed channels are recognised by
/// their packets), a postcopy-preempt channel, and a guest that reads RAM.
pub fn run_destination_with(
    listener: TcpListener,
    ram: u64,
    tls: Option<&TlsServer>,
    opts: &DestinationOptions,
) -> AnyResult<()> {
    let (channels, read_set) = (opts.channels, opts.read_set);
    let machine = Machine::new(ram)?;
    if opts.preallocate {
        machine.state.ram.preallocate()?;
    }
    // The guest's RAM for the channels' receiver, and the receiver's flush hook for
    // the main stream's RAM handler.
    let multifd = |channels: Vec<Box<dyn std::io::Read + Send>>| {
        let rx = vmstate::multifd::recv::MultifdReceiver::start(
            vec![machine.state.ram.clone() as std::sync::Arc<dyn vmstate::ram::GuestRam>],
            channels,
        );
        let setup = super::RamSetup {
            multifd_flush: Some(rx.flush_hook()),
            ..Default::default()
        };
        (rx, setup)
    };
    let timeout = vmstate::migrate::DEFAULT_IO_TIMEOUT;
    let (main, receiver, setup) = match (channels, tls) {
        (0, _) => (
            Main::Plain(listener.accept()?.0),
            None,
            super::RamSetup::default(),
        ),
        (n, None) => {
            let (main, socks) = vmstate::multifd::recv::accept_channels(&listener, n, timeout)?;
            let socks = socks.into_iter().map(|s| Box::new(s) as _).collect();
            let (rx, setup) = multifd(socks);
            (Main::Plain(main), Some(rx), setup)
        }
        (n, Some(server)) => {
            let (main, socks) =
                vmstate::multifd::recv::accept_tls_channels(&listener, n, timeout, server)?;
            let socks = socks.into_iter().map(|s| Box::new(s) as _).collect();
            let (rx, setup) = multifd(socks);
            (Main::Tls(main), Some(rx), setup)
        }
    };
    let mut setup = setup;
    if opts.postcopy_preempt && tls.is_some() {
        return Err("the postcopy-preempt channel is not available over TLS".into());
    }
    // The source connects it just before the switch to postcopy; the preempt thread
    // takes it at POSTCOPY_LISTEN, and only while the load runs.
    let preempt = match opts.postcopy_preempt {
        true => {
            let (preempt, accept) = crate::preempt::PreemptListener::new(&listener)?;
            setup.postcopy_preempt_incoming = Some(accept);
            Some(preempt)
        }
        false => None,
    };
    let (reg, _) = machine.registry_with(setup)?;
    let mut reg = reg;
    let params = IncomingParams::new(MACHINE_TYPE);
    let mut guest = ReadingVcpu {
        ram: machine.state.ram.clone(),
        read_set: read_set.min(ram),
        thread: None,
    };
    let report = match main {
        Main::Plain(sock) => {
            sock.set_nodelay(true)?;
            match tls {
                Some(server) => {
                    receive_with(&mut reg, accept_tls(server, sock)?, &params, &mut guest)?
                }
                None => receive_with(&mut reg, sock, &params, &mut guest)?,
            }
        }
        Main::Tls(stream) => receive_with(&mut reg, stream, &params, &mut guest)?,
    };
    if let Some(p) = preempt {
        p.finish();
    }
    if let Some(t) = guest.thread.take() {
        let _ = t.join();
    }
    let postcopy = report
        .postcopy
        .as_ref()
        .map(|r| DestinationPostcopy::from_report(r).to_json());
    if let Some(rx) = receiver {
        rx.finish()?;
    }
    let (verify, _) = listener.accept()?;
    let digest = machine.digest()?.to_bytes();
    let postcopy = serde_json::to_vec(&postcopy)?;
    let send = |mut w: Box<dyn Write>| -> AnyResult<()> {
        for part in [&digest, &postcopy] {
            w.write_all(&(part.len() as u64).to_be_bytes())?;
            w.write_all(part)?;
        }
        w.flush()?;
        Ok(())
    };
    match tls {
        Some(server) => send(Box::new(accept_tls(server, verify)?))?,
        None => send(Box::new(verify))?,
    }
    Ok(())
}

/// The destination's main connection: TCP (TLS still to be set up when asked for),
/// or a TLS session set up with the multifd channels'.
enum Main {
    Plain(TcpStream),
    Tls(vmstate::transport::tls::TlsStream),
}

/// The TLS handshake on an accepted connection, bounded by the default I/O timeout.
fn accept_tls(
    server: &TlsServer,
    sock: TcpStream,
) -> AnyResult<vmstate::transport::tls::TlsStream> {
    sock.set_io_timeout(Some(vmstate::migrate::DEFAULT_IO_TIMEOUT))?;
    Ok(server.accept(sock)?)
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
    let mut vcpus = vcpus;
    // TLS on the main connection first: the destination takes the first session for
    // the main stream.
    let main = match &cfg.tls {
        Some(client) => {
            sock.set_io_timeout(Some(vmstate::migrate::DEFAULT_IO_TIMEOUT))?;
            Main::Tls(client.connect(sock)?)
        }
        None => Main::Plain(sock),
    };
    // The channels connect after the main connection, as QEMU's do, each in its own
    // thread while the main stream starts (a QEMU destination under TLS answers them
    // only then).
    let multifd_channels = (0..cfg.channels)
        .map(|_| {
            let (addr, tls) = (addr.to_string(), cfg.tls.clone());
            Box::new(
                move || -> vmstate::Result<vmstate::multifd::send::ChannelWriter> {
                    let s = TcpStream::connect(&addr)?;
                    s.set_nodelay(true)?;
                    // A destination that stops reading fails the channel's writes.
                    s.set_io_timeout(Some(vmstate::migrate::DEFAULT_IO_TIMEOUT))?;
                    Ok(match tls {
                        Some(client) => Box::new(client.connect(s)?),
                        None => Box::new(s),
                    })
                },
            ) as vmstate::multifd::send::ChannelOpener
        })
        .collect();
    if cfg.postcopy_preempt && cfg.tls.is_some() {
        return Err("the postcopy-preempt channel is not available over TLS".into());
    }
    let postcopy_preempt = cfg.postcopy_preempt.then(|| {
        let addr = addr.to_string();
        Box::new(move || -> vmstate::Result<Box<dyn Write + Send>> {
            let s = crate::preempt::connect(&addr)?;
            s.set_nodelay(true)?;
            s.set_io_timeout(Some(vmstate::migrate::DEFAULT_IO_TIMEOUT))?;
            Ok(Box::new(s))
        }) as vmstate::ram::preempt::PreemptOpener
    });
    let setup = super::RamSetup {
        xbzrle_cache: cfg.xbzrle_cache,
        multifd_channels,
        multifd_compression: cfg.compression,
        postcopy_preempt,
        ..Default::default()
    };
    let (mut reg, ram_stats) = machine.registry_with(setup)?;
    let mut params = MigrationParams::new(MACHINE_TYPE);
    params.downtime_limit = cfg.downtime_limit;
    params.max_bandwidth = cfg.max_bandwidth;
    params.max_total_time = Some(cfg.max_time);
    params.on_timeout = OnTimeout::ForceSwitchover;
    params.ram_stats = Some(ram_stats);
    params.auto_converge = cfg.auto_converge;
    params.postcopy = cfg.postcopy.clone();
    params.max_postcopy_bandwidth = cfg.max_postcopy_bandwidth;

    let started = Instant::now();
    let cancel = CancelToken::new();
    let stats = match main {
        Main::Tls(tls) => migrate_over(&mut reg, tls, &mut vcpus, &params, &cancel, progress)?,
        Main::Plain(sock) => migrate_over(&mut reg, sock, &mut vcpus, &params, &cancel, progress)?,
    };
    let wall = started.elapsed();

    // The guest is stopped: the source's state is the state at switchover.
    let source_digest = machine.digest()?;
    let sock = TcpStream::connect(addr)?;
    sock.set_io_timeout(Some(Duration::from_secs(60)))?;
    let mut verify: Box<dyn Read> = match &cfg.tls {
        Some(client) => Box::new(client.connect(sock)?),
        None => Box::new(sock),
    };
    let bytes = read_part(&mut verify)?;
    let dest = Digest::from_bytes(&bytes).ok_or("malformed digest from the destination")?;
    let postcopy: serde_json::Value = serde_json::from_slice(&read_part(&mut verify)?)?;
    Ok(Outcome {
        stats,
        wall,
        guest_writes: vcpus.writes.load(std::sync::atomic::Ordering::Relaxed),
        pages: source_digest.pages.len(),
        differing_pages: source_digest.differing_pages(&dest),
        differing_devices: source_digest.differing_devices(&dest),
        destination_postcopy: DestinationPostcopy::from_json(&postcopy),
    })
}

/// One length-prefixed part of the destination's answer.
fn read_part(r: &mut dyn Read) -> AnyResult<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_be_bytes(len))?;
    if len > 64 << 20 {
        return Err(format!("an answer of {len} bytes is implausible").into());
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The main example's default migration (a quarter of `ram` rewritten by one vCPU,
/// 300 ms downtime limit, no bandwidth cap) with both ends in this process, the
/// destination in a thread, over TLS when `tls` is given; panics unless it verifies.
/// What the benchmarks built on the main example run.
pub fn migrate_locally(ram: u64, tls: Option<(TlsServer, TlsClient)>) -> Outcome {
    let (server, client) = tls.unzip();
    let cfg = SourceConfig {
        ram,
        workload: Workload {
            vcpus: 1,
            working_set: ram / 4,
            dirty_rate: None,
        },
        downtime_limit: Duration::from_millis(300),
        max_bandwidth: None,
        max_time: Duration::from_secs(120),
        warm_up: Duration::from_millis(200),
        auto_converge: false,
        xbzrle_cache: None,
        channels: 0,
        compression: Default::default(),
        tls: client,
        postcopy: None,
        max_postcopy_bandwidth: None,
        postcopy_preempt: false,
    };
    migrate_locally_with(&cfg, server, &mut |_| {})
}

/// A migration as `cfg` says, with both ends in this process (the destination in a
/// thread, over TLS with `server` when `cfg.tls` is set), `progress` seeing the
/// statistics after every round; panics unless it verifies.
pub fn migrate_locally_with(
    cfg: &SourceConfig,
    server: Option<TlsServer>,
    progress: &mut dyn FnMut(&MigrationStats),
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address").to_string();
    let ram = cfg.ram;
    let opts = DestinationOptions {
        channels: cfg.channels,
        read_set: cfg.workload.working_set,
        postcopy_preempt: cfg.postcopy_preempt,
        preallocate: false,
    };
    let dst = std::thread::spawn(move || {
        run_destination_with(listener, ram, server.as_ref(), &opts).map_err(|e| e.to_string())
    });
    let o = run_source(cfg, &addr, progress).expect("the source's migration");
    dst.join()
        .expect("the destination thread")
        .expect("the destination's migration");
    assert!(o.verified(), "the destination differs from the source");
    o
}
