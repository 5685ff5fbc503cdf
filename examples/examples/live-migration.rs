//! A whole live migration on this machine: a source guest with vCPU threads writing its
//! RAM, a destination process, loopback TCP between them, a progress display, a final
//! report, and a check that the destination's state equals the source's at switchover.
//!
//! ```text
//! cargo run --release --example live-migration                 # everything, defaults
//! cargo run --release --example live-migration -- --ram 2G --working-set 512M --dirty-rate 200M
//! cargo run --release --example live-migration -- --json       # final report as JSON
//! cargo run --release --example live-migration -- --working-set 768M --downtime-ms 50 --xbzrle 1G
//! cargo run --release --example live-migration -- --channels 2   # pages on two multifd channels
//! cargo run --release --example live-migration -- --channels 2 --compress zstd --compress-level 3
//! # postcopy: requested pages on a preempt channel, destination memory preallocated
//! cargo run --release --example live-migration -- --working-set 768M --downtime-ms 50 \
//!     --postcopy --postcopy-preempt --prealloc
//! # two hosts: start the destination first, then the source
//! cargo run --release --example live-migration -- --listen 0.0.0.0:4444 --ram 1G
//! cargo run --release --example live-migration -- --connect desthost:4444 --ram 1G
//! # over mutual TLS: throwaway certificates, then the same two ends with --tls-dir
//! cargo run --release --example live-migration -- --tls                # local, throwaway PKI
//! cargo run --release --example live-migration -- --tls-make-certs /tmp/pki
//! cargo run --release --example live-migration -- --listen 127.0.0.1:4444 --tls-dir /tmp/pki/good
//! cargo run --release --example live-migration -- --connect 127.0.0.1:4444 --tls-dir /tmp/pki/good
//! # or this end's files: --tls-cert FILE --tls-key FILE --tls-ca FILE [--tls-hostname NAME]
//! # the devices' schema, as QEMU's -dump-vmstate, for `vmstate check` between releases
//! cargo run --release --example live-migration -- --dump-vmstate schema.json
//! ```
//!
//! The protocol between the two ends is described in `vmstate_examples::machine::live`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use vmstate::migrate::PostcopyPolicy;
use vmstate::multifd::compress::Compression;
use vmstate::transport::tls::{Endpoint, TlsClient, TlsCredentials, TlsServer};
use vmstate_examples::cli::{human, ms, parse_size, progress_bar, show_progress};
use vmstate_examples::machine::Workload;
use vmstate_examples::machine::live::{self, Outcome, SourceConfig};

/// Live-migrate a small emulated guest between two processes over loopback TCP.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
struct Args {
    /// Guest RAM size (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    ram: u64,
    /// Bytes of RAM the vCPUs keep rewriting while the migration runs.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    working_set: u64,
    /// Cap on the guest's dirty rate, in bytes per second (default: no cap).
    #[arg(long, value_parser = parse_size)]
    dirty_rate: Option<u64>,
    /// Number of vCPU threads.
    #[arg(long, default_value_t = 1)]
    vcpus: usize,
    /// Downtime limit in milliseconds.
    #[arg(long, default_value_t = 300)]
    downtime_ms: u64,
    /// Bandwidth cap in bytes per second (default: unlimited).
    #[arg(long, value_parser = parse_size)]
    max_bandwidth: Option<u64>,
    /// Throttle the vCPUs when they dirty memory faster than the link drains it
    /// (QEMU's auto-converge).
    #[arg(long)]
    auto_converge: bool,
    /// Send pages sent before as XBZRLE deltas, with a cache of this size (K, M, G
    /// suffixes; QEMU's xbzrle capability and xbzrle-cache-size).
    #[arg(long, value_name = "CACHE_SIZE", value_parser = parse_size)]
    xbzrle: Option<u64>,
    /// Multifd channels beside the main connection (QEMU's multifd capability and
    /// multifd-channels; 0: none). Both ends must be given the same number.
    #[arg(long, default_value_t = 0)]
    channels: usize,
    /// Compress the multifd channels' pages: none, zlib or zstd (QEMU's
    /// multifd-compression; needs --channels). The destination recognises the method.
    #[arg(
        long,
        value_name = "METHOD",
        default_value = "none",
        requires = "channels"
    )]
    compress: String,
    /// The compression level (zlib 0-9, zstd 1-20; QEMU's default 1).
    #[arg(long, value_name = "LEVEL", requires = "compress")]
    compress_level: Option<i32>,
    /// Switch to postcopy when precopy has not converged after --postcopy-after-rounds
    /// rounds or --postcopy-after-ms (QEMU's postcopy-ram): the guest then runs on the
    /// destination, whose vCPU reads the working set, asking for each page it misses.
    #[arg(long)]
    postcopy: bool,
    /// With --postcopy: switch after this many precopy rounds.
    #[arg(long, default_value_t = 2, requires = "postcopy")]
    postcopy_after_rounds: u64,
    /// With --postcopy: switch after this long in precopy, whatever the rounds.
    #[arg(long, value_name = "MS", requires = "postcopy")]
    postcopy_after_ms: Option<u64>,
    /// With --postcopy: cap the pages sent in the background after the switch, in bytes
    /// per second (QEMU's max-postcopy-bandwidth; requested pages are not capped).
    #[arg(long, value_parser = parse_size, requires = "postcopy")]
    max_postcopy_bandwidth: Option<u64>,
    /// With --postcopy: send requested pages on a second connection, ahead of the
    /// background pages (QEMU's postcopy-preempt; both ends must be given it; not with
    /// --tls)
    #[arg(long, requires = "postcopy", conflicts_with_all = ["tls", "tls_cert", "tls_dir"])]
    postcopy_preempt: bool,
    /// Destination: back guest RAM with memory before the migration starts (QEMU's
    /// -mem-prealloc), so that arriving pages never wait for the kernel to find memory
    #[arg(long)]
    prealloc: bool,
    /// Give up after this many seconds and force the switchover.
    #[arg(long, default_value_t = 120)]
    max_time: u64,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run as the destination, listening on ADDR (port 0 picks one; it is printed).
    #[arg(long, value_name = "ADDR", conflicts_with = "connect")]
    listen: Option<String>,
    /// Run as the source, connecting to a destination at ADDR.
    #[arg(long, value_name = "ADDR")]
    connect: Option<String>,
    /// Write the machine's schema (QEMU's -dump-vmstate format) to FILE and exit.
    #[arg(long, value_name = "FILE")]
    dump_vmstate: Option<std::path::PathBuf>,
    /// Migrate over mutual TLS. Run locally without credentials, both ends use a
    /// throwaway CA and certificates made for this run.
    #[arg(long)]
    tls: bool,
    /// This end's certificate (PEM); with --tls-key and --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This end's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA certificate(s) the peer's certificate must chain to (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// A directory in QEMU's tls-creds-x509 layout (ca-cert.pem, server-cert.pem,
    /// server-key.pem, client-cert.pem, client-key.pem); --listen uses the server
    /// files, the source the client files.
    #[arg(long, value_name = "DIR", conflicts_with = "tls_cert")]
    tls_dir: Option<PathBuf>,
    /// The name the destination's certificate must be valid for (QEMU's tls-hostname).
    /// Default: the host of --connect (127.0.0.1 when run locally).
    #[arg(long, value_name = "NAME")]
    tls_hostname: Option<String>,
    /// Write a throwaway CA and certificates in QEMU's layout under DIR and exit.
    #[arg(long, value_name = "DIR")]
    tls_make_certs: Option<PathBuf>,
}

impl Args {
    /// Whether this run uses TLS.
    fn wants_tls(&self) -> bool {
        self.tls || self.tls_cert.is_some() || self.tls_dir.is_some()
    }

    /// This end's credentials: from --tls-cert/--tls-key/--tls-ca, or --tls-dir.
    fn tls_credentials(&self, endpoint: Endpoint) -> AnyResult<TlsCredentials> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca, &self.tls_dir) {
            (Some(cert), Some(key), Some(ca), _) => {
                Ok(TlsCredentials::from_pem_files(cert, key, ca)?)
            }
            (_, _, _, Some(dir)) => Ok(TlsCredentials::from_qemu_dir(dir, endpoint)?),
            _ => Err(
                "--tls needs --tls-dir DIR or --tls-cert/--tls-key/--tls-ca (or run locally)"
                    .into(),
            ),
        }
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let result = if let Some(path) = &args.dump_vmstate {
        dump_vmstate(path)
    } else if let Some(dir) = &args.tls_make_certs {
        make_certs(dir)
    } else if let Some(addr) = &args.listen {
        destination(&args, addr)
    } else {
        local_pki(&mut args).and_then(|_pki| source(&args))
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("live-migration: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The destination: print the address, then load the guest from one connection.
fn destination(args: &Args, addr: &str) -> AnyResult<ExitCode> {
    let listener = TcpListener::bind(addr)?;
    let tls = match args.wants_tls() {
        true => Some(TlsServer::new(&args.tls_credentials(Endpoint::Server)?)?),
        false => None,
    };
    println!("LISTENING {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let opts = live::DestinationOptions {
        channels: args.channels,
        read_set: args.working_set,
        postcopy_preempt: args.postcopy_preempt,
        preallocate: args.prealloc,
    };
    live::run_destination_with(listener, args.ram, tls.as_ref(), &opts)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the schema of every device, as QEMU's `-dump-vmstate FILE` does, for
/// `vmstate check OLD.json NEW.json` between releases.
fn dump_vmstate(path: &std::path::Path) -> AnyResult<ExitCode> {
    let machine = vmstate_examples::machine::Machine::new(4096)?;
    let (reg, _) = machine.registry()?;
    let dump = vmstate::schema::dump_registry(vmstate_examples::machine::MACHINE_TYPE, &reg);
    std::fs::write(path, vmstate::schema::to_string(&dump))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a throwaway PKI under `dir` and says how to use it.
fn make_certs(dir: &Path) -> AnyResult<ExitCode> {
    let pki = compat_tests::certs::TestPki::generate(dir)?;
    let good = pki.dir_of(compat_tests::certs::Set::Good);
    println!(
        "throwaway CA and certificates for localhost/127.0.0.1 in {}",
        good.display()
    );
    println!("  --tls-dir {}", good.display());
    println!("(the other directories hold certificates a peer must refuse, for experiments)");
    Ok(ExitCode::SUCCESS)
}

/// `--tls` run locally without credentials: a throwaway PKI for this run, used by both
/// ends through `--tls-dir`. Returned to be removed when the run ends.
fn local_pki(args: &mut Args) -> AnyResult<Option<TempPki>> {
    if !args.tls || args.connect.is_some() || args.tls_cert.is_some() || args.tls_dir.is_some() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("vmstate-live-pki-{}", std::process::id()));
    let pki = compat_tests::certs::TestPki::generate(&dir)?;
    args.tls_dir = Some(pki.dir_of(compat_tests::certs::Set::Good));
    Ok(Some(TempPki(dir)))
}

/// A directory removed on drop.
struct TempPki(PathBuf);

impl Drop for TempPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts this program again as the destination on a free loopback port.
fn spawn_destination(args: &Args) -> AnyResult<(std::process::Child, String)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--listen", "127.0.0.1:0", "--ram", &args.ram.to_string()])
        .args(["--channels", &args.channels.to_string()])
        .args(["--working-set", &args.working_set.to_string()]);
    if args.postcopy_preempt {
        cmd.args(["--postcopy", "--postcopy-preempt"]);
    }
    if args.prealloc {
        cmd.arg("--prealloc");
    }
    if let Some(dir) = &args.tls_dir {
        cmd.arg("--tls-dir").arg(dir);
    } else if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca)
    {
        cmd.arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--tls-ca")
            .arg(ca);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr = line
        .strip_prefix("LISTENING ")
        .map(|a| a.trim().to_string())
        .ok_or_else(|| format!("destination said {line:?}"))?;
    Ok((child, addr))
}

fn source(args: &Args) -> AnyResult<ExitCode> {
    let (child, addr) = match &args.connect {
        Some(a) => (None, a.clone()),
        None => {
            let (c, a) = spawn_destination(args)?;
            (Some(c), a)
        }
    };
    let cfg = SourceConfig {
        ram: args.ram,
        workload: Workload {
            vcpus: args.vcpus,
            working_set: args.working_set.min(args.ram),
            dirty_rate: args.dirty_rate,
        },
        downtime_limit: Duration::from_millis(args.downtime_ms),
        max_bandwidth: args.max_bandwidth,
        max_time: Duration::from_secs(args.max_time),
        warm_up: Duration::from_millis(200),
        auto_converge: args.auto_converge,
        xbzrle_cache: args.xbzrle,
        channels: args.channels,
        compression: Compression::parse(&args.compress, args.compress_level)?,
        tls: match args.wants_tls() {
            true => {
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let name = args
                    .tls_hostname
                    .as_deref()
                    .unwrap_or(host.trim_matches(['[', ']']));
                Some(TlsClient::new(
                    &args.tls_credentials(Endpoint::Client)?,
                    Some(name),
                )?)
            }
            false => None,
        },
        max_postcopy_bandwidth: args.max_postcopy_bandwidth,
        postcopy: args.postcopy.then(|| PostcopyPolicy {
            after_rounds: Some(args.postcopy_after_rounds),
            after: args.postcopy_after_ms.map(Duration::from_millis),
            ..Default::default()
        }),
        postcopy_preempt: args.postcopy_preempt,
    };
    let bar = progress_bar(args.ram);
    let outcome = live::run_source(&cfg, &addr, &mut |s| show_progress(&bar, s));
    bar.finish_and_clear();
    let outcome = outcome?;
    if let Some(mut c) = child {
        c.wait()?;
    }
    report(args, &outcome);
    Ok(if outcome.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report(args: &Args, o: &Outcome) {
    let s = &o.stats;
    let ram = s.ram.unwrap_or_default();
    let throughput = s.transferred as f64 / s.total_time.as_secs_f64().max(1e-9);
    if args.json {
        let v = json!({
            "status": format!("{:?}", s.status).to_lowercase(),
            "total_time_ms": ms(s.total_time),
            "setup_time_ms": ms(s.setup_time),
            "downtime_ms": ms(s.downtime),
            "downtime_limit_ms": args.downtime_ms,
            "transferred_bytes": s.transferred,
            "throughput_bytes_per_sec": throughput as u64,
            "last_round_bandwidth_bytes_per_sec": s.bandwidth,
            "dirty_rate_bytes_per_sec": s.dirty_rate,
            "rounds": s.rounds,
            "normal_pages": ram.normal_pages,
            "zero_pages": ram.zero_pages,
            "xbzrle": args.xbzrle.map(|_| json!({
                "cache_size": ram.xbzrle_cache_size,
                "pages": ram.xbzrle_pages,
                "bytes": ram.xbzrle_bytes,
                "unchanged_pages": ram.xbzrle_unchanged,
                "cache_hits": ram.xbzrle_cache_hits,
                "cache_misses": ram.xbzrle_cache_misses,
                "cache_miss_rate": ram.xbzrle_cache_miss_rate(),
                "overflows": ram.xbzrle_overflows,
                "encoding_rate": ram.xbzrle_encoding_rate(),
                "bytes_saved": ram.xbzrle_bytes_saved(),
            })),
            "redirtied_pages": ram.redirtied_pages,
            "forced_switchover": s.forced_switchover,
            "postcopy": s.postcopy.as_ref()
                .map(|p| live::postcopy_json(p, o.destination_postcopy.as_ref())),
            "tls": args.wants_tls(),
            "throttle_percent": s.throttle_percent,
            "guest_page_writes": o.guest_writes,
            "ram_bytes": args.ram,
            "working_set_bytes": args.working_set,
            "verified": o.verified(),
            "differing_pages": o.differing_pages,
            "differing_devices": o.differing_devices,
            "wall_time_ms": ms(o.wall),
        });
        println!("{v}");
        return;
    }
    println!("live migration {:?}", s.status);
    println!(
        "  transport          {}",
        if args.wants_tls() {
            "TCP with mutual TLS (rustls), QEMU's return path"
        } else {
            "TCP, QEMU's return path"
        }
    );
    println!(
        "  RAM                {} ({} pages), working set {}",
        human(args.ram),
        o.pages,
        human(args.working_set)
    );
    println!(
        "  total time         {:.1} ms (setup {:.2} ms)",
        ms(s.total_time),
        ms(s.setup_time)
    );
    println!(
        "  downtime           {:.1} ms (limit {} ms){}",
        ms(s.downtime),
        args.downtime_ms,
        if s.forced_switchover {
            ", switchover forced by --max-time"
        } else {
            ""
        }
    );
    println!(
        "  transferred        {} ({}/s)",
        human(s.transferred),
        human(throughput as u64)
    );
    println!("  rounds             {}", s.rounds);
    if let Some(p) = &s.postcopy {
        println!(
            "  postcopy           switched after {:.1} ms of precopy; {:.1} ms in postcopy",
            ms(p.precopy_time),
            ms(p.time_in_postcopy)
        );
        println!(
            "  page requests      {} ({} pages sent for them); served in {:.0} us median, {:.0} us p99",
            p.requests,
            p.requested_pages,
            p.request_latency_p50.as_secs_f64() * 1e6,
            p.request_latency_p99.as_secs_f64() * 1e6
        );
        if let Some(d) = &o.destination_postcopy {
            println!(
                "  guest faults       {} on the destination: {:.0} us median, {:.0} us p99, {:.0} us longest; {} pages discarded",
                d.requests, d.fault_p50_us, d.fault_p99_us, d.fault_max_us, d.discarded_pages
            );
        }
    }
    if s.throttle_percent > 0 || args.auto_converge {
        println!(
            "  vCPU throttle      {}% at the switchover",
            s.throttle_percent
        );
    }
    println!(
        "  pages              {} full, {} zero",
        ram.normal_pages, ram.zero_pages
    );
    if args.xbzrle.is_some() {
        let per_page = match ram.xbzrle_pages {
            0 => 0.0,
            n => ram.xbzrle_bytes as f64 / n as f64,
        };
        println!(
            "  XBZRLE             {} pages in {} ({per_page:.1} bytes each), {} unchanged, {} saved",
            ram.xbzrle_pages,
            human(ram.xbzrle_bytes),
            ram.xbzrle_unchanged,
            human(ram.xbzrle_bytes_saved())
        );
        println!(
            "  XBZRLE cache       {}: {} hits, {} misses ({:.1}%), {} overflows, encoding rate {:.0}",
            human(ram.xbzrle_cache_size),
            ram.xbzrle_cache_hits,
            ram.xbzrle_cache_misses,
            100.0 * ram.xbzrle_cache_miss_rate(),
            ram.xbzrle_overflows,
            ram.xbzrle_encoding_rate()
        );
    }
    println!(
        "  dirty rate         {}/s (last round); the guest made {} page writes",
        human(s.dirty_rate),
        o.guest_writes
    );
    println!("  bandwidth          {}/s (last round)", human(s.bandwidth));
    if o.verified() {
        println!(
            "  verification       OK: {} pages and 3 devices equal the source at switchover",
            o.pages
        );
    } else {
        println!(
            "  verification       FAILED: {} pages differ, devices {:?}",
            o.differing_pages, o.differing_devices
        );
    }
}
