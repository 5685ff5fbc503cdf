//! The main example's two ends, over loopback TCP, with a guest writing all along.

use std::net::TcpListener;
use std::time::Duration;

use compat_tests::certs::{Set, TestPki};
use vmstate::migrate::Status;
use vmstate::transport::tls::{Endpoint, TlsClient, TlsServer};
use vmstate_examples::machine::Workload;
use vmstate_examples::machine::live::{
    DestinationOptions, SourceConfig, run_destination_with, run_source,
};

fn run(cfg: SourceConfig) -> vmstate_examples::machine::live::Outcome {
    run_with(cfg, None)
}

fn run_with(cfg: SourceConfig, tls: Option<TlsServer>) -> vmstate_examples::machine::live::Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let ram = cfg.ram;
    let channels = cfg.channels;
    let dst = std::thread::spawn(move || {
        run_destination_with(
            listener,
            ram,
            tls.as_ref(),
            &DestinationOptions {
                channels,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
    });
    let mut rounds = 0;
    let outcome = run_source(&cfg, &addr, &mut |s| rounds = s.rounds).unwrap();
    dst.join().unwrap().unwrap();
    assert_eq!(rounds, outcome.stats.rounds, "progress saw every round");
    outcome
}

fn config(vcpus: usize, dirty_rate: Option<u64>) -> SourceConfig {
    SourceConfig {
        ram: 64 << 20,
        workload: Workload {
            vcpus,
            working_set: 16 << 20,
            dirty_rate,
        },
        downtime_limit: Duration::from_millis(300),
        max_bandwidth: None,
        max_time: Duration::from_secs(60),
        warm_up: Duration::from_millis(20),
        auto_converge: false,
        xbzrle_cache: None,
        channels: 0,
        compression: Default::default(),
        tls: None,
        postcopy: None,
        max_postcopy_bandwidth: None,
        postcopy_preempt: false,
    }
}

#[test]
fn live_migration_with_vcpus_writing_verifies_every_page_and_device() {
    let o = run(config(2, None));
    assert_eq!(o.stats.status, Status::Completed);
    assert!(
        o.verified(),
        "{} pages differ, devices {:?}",
        o.differing_pages,
        o.differing_devices
    );
    assert_eq!(o.pages, (64 << 20) / 4096);
    assert!(o.guest_writes > 0);
    let ram = o.stats.ram.unwrap();
    assert!(ram.normal_pages + ram.zero_pages >= o.pages as u64);
}

#[test]
fn live_migration_with_a_dirty_rate_cap_and_a_bandwidth_cap_verifies() {
    let mut cfg = config(1, Some(4 << 20));
    cfg.max_bandwidth = Some(256 << 20);
    let o = run(cfg);
    assert!(o.verified());
    assert!(o.stats.rounds >= 1);
}

#[test]
fn auto_converge_throttles_a_guest_that_outruns_the_link_until_it_converges() {
    // The guest dirties 32 MiB/s over a 16 MiB/s link; with a 50 ms downtime limit it
    // can only converge once throttled to about 75%.
    let mut cfg = config(1, Some(32 << 20));
    cfg.auto_converge = true;
    cfg.max_bandwidth = Some(16 << 20);
    cfg.downtime_limit = Duration::from_millis(50);
    let o = run(cfg);
    assert!(o.verified());
    assert!(!o.stats.forced_switchover, "converged before max_time");
    assert!(
        o.stats.throttle_percent >= 20,
        "throttle {}",
        o.stats.throttle_percent
    );
}

#[test]
fn live_migration_over_mutual_tls_verifies() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("live-tls-pki-{}", std::process::id()));
    let pki = TestPki::generate(&dir).unwrap();
    let server = TlsServer::new(&pki.credentials(Set::Good, Endpoint::Server)).unwrap();
    let mut cfg = config(1, None);
    cfg.tls = Some(TlsClient::new(&pki.client(), Some("127.0.0.1")).unwrap());
    let o = run_with(cfg, Some(server));
    assert_eq!(o.stats.status, Status::Completed);
    assert!(o.verified(), "{} pages differ", o.differing_pages);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn live_migration_on_three_multifd_channels_verifies_and_counts_their_bytes() {
    let mut cfg = config(2, None);
    cfg.channels = 3;
    let o = run(cfg);
    assert_eq!(o.stats.status, Status::Completed);
    assert!(o.verified(), "{o:?}");
    let ram = o.stats.ram.unwrap();
    assert!(
        ram.multifd_bytes > 16 << 20,
        "the pages went on the channels: {ram:?}"
    );
    assert!(
        o.stats.transferred > ram.multifd_bytes,
        "transferred counts every channel"
    );
}

/// Two multifd channels compressed with zstd, each over its own mutual-TLS session
/// beside the main stream's: the destination verifies, and the channels carried
/// fewer bytes than the pages they sent (the guest's pages are mostly one value).
#[test]
fn zstd_multifd_channels_over_mutual_tls_verify() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("live-tls-multifd-pki-{}", std::process::id()));
    let pki = TestPki::generate(&dir).unwrap();
    let server = TlsServer::new(&pki.credentials(Set::Good, Endpoint::Server)).unwrap();
    let mut cfg = config(1, None);
    cfg.tls = Some(TlsClient::new(&pki.client(), Some("127.0.0.1")).unwrap());
    cfg.channels = 2;
    cfg.compression = vmstate::multifd::compress::Compression::ZSTD;
    let o = run_with(cfg, Some(server));
    assert_eq!(o.stats.status, Status::Completed);
    assert!(o.verified(), "{o:?}");
    let ram = o.stats.ram.unwrap();
    assert!(
        ram.multifd_bytes < ram.normal_pages * 4096 / 2,
        "compressed on the channels: {ram:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// zlib on three plain channels.
#[test]
fn zlib_multifd_channels_verify() {
    let mut cfg = config(2, None);
    cfg.channels = 3;
    cfg.compression = vmstate::multifd::compress::Compression::ZLIB;
    let o = run(cfg);
    assert!(o.verified(), "{o:?}");
    let ram = o.stats.ram.unwrap();
    assert!(ram.multifd_bytes < ram.normal_pages * 4096 / 2, "{ram:?}");
}

#[test]
fn xbzrle_live_migration_verifies_with_a_guest_writing() {
    let mut cfg = config(1, None);
    cfg.xbzrle_cache = Some(32 << 20);
    let o = run(cfg);
    assert!(o.verified(), "{o:?}");
    assert!(o.stats.ram.unwrap().xbzrle_cache_size > 0);
}
