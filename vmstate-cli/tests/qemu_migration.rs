//! Live migration against a real QEMU 10 over TCP: QEMU's return path in both
//! directions (QEMU as the source with the `return-path` capability talking to our
//! `receive`, our `migrate_over` talking to a QEMU destination), a QEMU destination
//! that fails, and switchover-ack.
//!
//! The peer is `qemu-system-x86_64 -M none -m 64M`: one RAM block `ram` plus the
//! `timer` and `globalstate` sections, all modelled in `compat-tests`. RAM gets
//! content through QEMU's generic `loader` device (a random 1 MiB blob at 1 MiB) on a
//! QEMU source; a QEMU destination's RAM is checked by having it save its state to a
//! file afterwards and loading that here.
//!
//! Ignored by default (they need QEMU); `.ci/run` runs them with `-- --ignored`.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use compat_tests::qemu::{Qemu, free_port};
use serde_json::json;
use vmstate::migrate::{
    CancelToken, GuestControl, IncomingParams, MigrationParams, Status, migrate_over, receive,
};
use vmstate::ram::RamBlock;
use vmstate::stream::{LoadOptions, load_file};

const RAM: u64 = 64 << 20;
const BLOB_AT: u64 = 1 << 20;

/// A random 1 MiB blob in `dir`, for QEMU's loader device.
fn blob(dir: &Path) -> (Vec<u8>, String) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.join("blob.bin");
    std::fs::write(&path, &bytes).unwrap();
    (bytes, path.to_str().unwrap().to_string())
}

fn ram_bytes(ram: &RamBlock, at: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    ram.read(at, &mut out);
    out
}

/// A source guest with nothing running: the test only checks stop/resume.
#[derive(Default)]
struct StillGuest {
    stops: u32,
    resumes: u32,
}

impl GuestControl for StillGuest {
    fn stop(&mut self) -> vmstate::Result<()> {
        self.stops += 1;
        Ok(())
    }
    fn resume(&mut self) {
        self.resumes += 1;
    }
}

/// QEMU 10 as the source, `return-path` on (and `switchover-ack` when asked): our
/// destination answers PONG (and SWITCHOVER_ACK), loads, reports SHUT(0) and starts.
fn qemu_source_to_our_destination(switchover_ack: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (content, blob_path) = blob(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dst = std::thread::spawn(move || {
        let (mut reg, ram) = compat_tests::destination::none_with_ram(RAM);
        let (sock, _) = listener.accept().unwrap();
        let mut params = IncomingParams::new("none");
        params.switchover_ack = switchover_ack;
        let mut started = false;
        let report = receive(&mut reg, sock, &params, &mut || {
            started = true;
            Ok(())
        });
        (report, started, ram)
    });
    let loader = format!("loader,file={blob_path},addr={BLOB_AT},force-raw=on");
    let mut q = Qemu::start(
        dir.path(),
        "src",
        &["-M", "none", "-m", "64M", "-device", &loader],
    );
    let mut caps = vec![json!({"capability": "return-path", "state": true})];
    if switchover_ack {
        caps.push(json!({"capability": "switchover-ack", "state": true}));
    }
    q.execute("migrate-set-capabilities", json!({ "capabilities": caps }));
    q.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    q.wait_migration("QEMU source to our destination");
    let (report, started, ram) = dst.join().unwrap();
    let report = report.unwrap_or_else(|e| panic!("our destination failed: {e}"));
    assert!(report.return_path, "QEMU opened the return path");
    assert!(started, "our destination started the guest");
    assert_eq!(ram_bytes(&ram, BLOB_AT, content.len()), content);
    assert!(ram_bytes(&ram, 0, 1 << 20).iter().all(|&b| b == 0));
    q.quit();
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_source_with_return_path_migrates_to_our_destination() {
    qemu_source_to_our_destination(false);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_source_waits_for_our_switchover_ack() {
    qemu_source_to_our_destination(true);
}

/// Our source's registry for `-M none -m 64M`, RAM filled with a pattern.
fn our_none_source() -> (vmstate::Registry, Arc<RamBlock>, Vec<u8>) {
    let (reg, ram) = compat_tests::destination::none_with_ram(RAM);
    let pattern: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ram.write(3 << 20, &pattern);
    (reg, ram, pattern)
}

/// Runs our `-M none` source (its RAM holding a pattern at 3 MiB) over `conn`:
/// the outcome, the guest (its stops and resumes) and the pattern.
fn run_our_source<C: vmstate::transport::Connection>(
    conn: C,
    switchover_ack: bool,
) -> (
    vmstate::Result<vmstate::migrate::MigrationStats>,
    StillGuest,
    Vec<u8>,
) {
    let (mut reg, _ram, pattern) = our_none_source();
    let mut guest = StillGuest::default();
    let result = migrate_over(
        &mut reg,
        conn,
        &mut guest,
        &params(switchover_ack),
        &CancelToken::new(),
        &mut |_| {},
    );
    (result, guest, pattern)
}

/// Starts a QEMU destination on a free port, with `caps` set before it listens.
fn qemu_destination(dir: &Path, mem: &str, caps: &[&str]) -> (Qemu, u16) {
    let port = free_port();
    let mut q = Qemu::start(dir, "dst", &["-M", "none", "-m", mem, "-incoming", "defer"]);
    if !caps.is_empty() {
        let caps: Vec<_> = caps
            .iter()
            .map(|c| json!({"capability": c, "state": true}))
            .collect();
        q.execute("migrate-set-capabilities", json!({ "capabilities": caps }));
    }
    q.execute(
        "migrate-incoming",
        json!({"uri": format!("tcp:127.0.0.1:{port}")}),
    );
    (q, port)
}

/// Has QEMU save its state to a file and loads it here: the RAM it holds.
fn qemu_ram(q: &mut Qemu, dir: &Path) -> Arc<RamBlock> {
    let file = dir.join("after.mig");
    // A file has no return path and one channel: the capabilities of the incoming
    // side must go.
    let off: Vec<_> = [
        "switchover-ack",
        "return-path",
        "multifd",
        "mapped-ram",
        "postcopy-preempt",
        "postcopy-ram",
    ]
    .iter()
    .map(|c| json!({"capability": c, "state": false}))
    .collect();
    q.execute("migrate-set-capabilities", json!({ "capabilities": off }));
    q.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", file.display())}),
    );
    q.wait_migration("saving the destination's state");
    let (mut reg, ram) = compat_tests::destination::none_with_ram(RAM);
    let opts = LoadOptions {
        machine: Some("none".into()),
        ..Default::default()
    };
    load_file(&mut reg, &file, opts, false).unwrap();
    ram
}

fn params(switchover_ack: bool) -> MigrationParams {
    let mut p = MigrationParams::new("none");
    p.io_timeout = Some(Duration::from_secs(30));
    p.switchover_ack = switchover_ack;
    p
}

/// Our source to a QEMU 10 destination: QEMU answers PING with PONG and reports
/// SHUT(0) on the return path; its RAM then equals ours.
fn our_source_to_qemu_destination(switchover_ack: bool) {
    let dir = tempfile::tempdir().unwrap();
    let caps: &[&str] = if switchover_ack {
        &["return-path", "switchover-ack"]
    } else {
        &[]
    };
    let (mut q, port) = qemu_destination(dir.path(), "64M", caps);
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (result, guest, pattern) = run_our_source(sock, switchover_ack);
    let stats =
        result.unwrap_or_else(|e| panic!("our source failed: {e}; QEMU said: {}", q.stderr()));
    assert_eq!(stats.status, Status::Completed);
    assert_eq!((guest.stops, guest.resumes), (1, 0));
    q.wait_migration("our source to the QEMU destination");
    let theirs = qemu_ram(&mut q, dir.path());
    assert_eq!(ram_bytes(&theirs, 3 << 20, pattern.len()), pattern);
    q.quit();
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_source_with_return_path_migrates_to_a_qemu_destination() {
    our_source_to_qemu_destination(false);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_source_waits_for_a_qemu_destinations_switchover_ack() {
    our_source_to_qemu_destination(true);
}

/// A QEMU destination whose load fails after the return path is open (its RAM block
/// is smaller than ours) reports SHUT(1): our source fails at a named phase, says what
/// the destination reported, and resumes the guest.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn a_failing_qemu_destination_makes_our_source_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (q, port) = qemu_destination(dir.path(), "32M", &[]);
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (result, guest, _) = run_our_source(sock, false);
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err.kind(), vmstate::ErrorKind::MigrationFailed { .. }),
        "{text}"
    );
    assert!(text.contains("SHUT 1"), "{text}; QEMU said: {}", q.stderr());
    assert_eq!(
        guest.stops, guest.resumes,
        "a stopped guest was resumed: {text}"
    );
}

// ---- mutual TLS with QEMU's tls-creds-x509 (verify-peer=on) ----

use compat_tests::certs::{Set, TestPki};
use vmstate::transport::tls::{Endpoint, TlsClient, TlsServer};

fn pki(dir: &Path) -> TestPki {
    TestPki::generate(&dir.join("pki")).unwrap()
}

/// QEMU's credentials object for `endpoint` from the PKI set `set`.
fn tls_object(pki: &TestPki, set: Set, endpoint: &str) -> String {
    format!(
        "tls-creds-x509,id=tls0,dir={},endpoint={endpoint},verify-peer=on",
        pki.dir_of(set).display()
    )
}

/// QEMU 10 as a TLS client (its default tls-hostname is the URI's host, 127.0.0.1,
/// which our server certificate names) migrates with the return path to our TLS
/// destination.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_source_over_mutual_tls_migrates_to_our_destination() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (content, blob_path) = blob(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = TlsServer::new(&pki.server()).unwrap();
    let dst = std::thread::spawn(move || {
        let (mut reg, ram) = compat_tests::destination::none_with_ram(RAM);
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let tls = server.accept(sock).unwrap();
        let mut started = false;
        // QEMU ends its TLS connection without close_notify after our SHUT(0).
        let mut params = IncomingParams::new("none");
        params.accept_close_without_notify = true;
        let report = receive(&mut reg, tls, &params, &mut || {
            started = true;
            Ok(())
        });
        (report, started, ram)
    });
    let loader = format!("loader,file={blob_path},addr={BLOB_AT},force-raw=on");
    let obj = tls_object(&pki, Set::Good, "client");
    let mut q = Qemu::start(
        dir.path(),
        "src",
        &[
            "-M", "none", "-m", "64M", "-device", &loader, "-object", &obj,
        ],
    );
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "return-path", "state": true}]}),
    );
    q.execute("migrate-set-parameters", json!({"tls-creds": "tls0"}));
    q.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    q.wait_migration("QEMU TLS source to our destination");
    let (report, started, ram) = dst.join().unwrap();
    let report = report.unwrap_or_else(|e| panic!("our destination failed: {e}"));
    assert!(report.return_path && started);
    assert_eq!(ram_bytes(&ram, BLOB_AT, content.len()), content);
    q.quit();
}

/// Our TLS source (checking the name `localhost`) to a QEMU 10 destination that
/// requires a client certificate signed by its CA.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_source_over_mutual_tls_migrates_to_a_qemu_destination() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (mut q, port) = qemu_tls_destination(dir.path(), &pki);
    let client = TlsClient::new(&pki.client(), Some("localhost")).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let tls = client.connect(sock).unwrap();
    let (result, _, pattern) = run_our_source(tls, false);
    let stats =
        result.unwrap_or_else(|e| panic!("our source failed: {e}; QEMU said: {}", q.stderr()));
    assert_eq!(stats.status, Status::Completed);
    q.wait_migration("our TLS source to the QEMU destination");
    q.execute("migrate-set-parameters", json!({"tls-creds": ""}));
    let theirs = qemu_ram(&mut q, dir.path());
    assert_eq!(ram_bytes(&theirs, 3 << 20, pattern.len()), pattern);
    q.quit();
}

/// A QEMU destination with TLS, verify-peer on, listening on a free port.
fn qemu_tls_destination(dir: &Path, pki: &TestPki) -> (Qemu, u16) {
    let port = free_port();
    let obj = tls_object(pki, Set::Good, "server");
    let mut q = Qemu::start(
        dir,
        "dst",
        &[
            "-M",
            "none",
            "-m",
            "64M",
            "-incoming",
            "defer",
            "-object",
            &obj,
        ],
    );
    q.execute("migrate-set-parameters", json!({"tls-creds": "tls0"}));
    q.execute(
        "migrate-incoming",
        json!({"uri": format!("tcp:127.0.0.1:{port}"), "exit-on-error": false}),
    );
    (q, port)
}

/// QEMU refuses our client certificate signed by an unrelated CA: our source fails in
/// the handshake or in its setup, having sent no state, and QEMU reports the refusal
/// (and keeps waiting for a migration it can accept).
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn a_qemu_destination_refuses_our_certificate_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (mut q, port) = qemu_tls_destination(dir.path(), &pki);
    let client = TlsClient::new(&pki.impostor(Endpoint::Client), Some("localhost")).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    match client.connect(sock).map(|tls| run_our_source(tls, false)) {
        // Refused in the handshake: nothing of the stream left.
        Err(e) => assert!(matches!(e.kind(), vmstate::ErrorKind::Tls { .. }), "{e}"),
        Ok((result, guest, _)) => {
            let err = result.unwrap_err();
            let vmstate::ErrorKind::MigrationFailed { phase, bytes, .. } = err.kind() else {
                panic!("unexpected error: {err}");
            };
            assert_eq!(phase, "setup", "{err}");
            assert!(
                bytes < &64,
                "only the header, configuration and commands: {err}"
            );
            assert_eq!(guest.stops, 0, "{err}");
        }
    }
    // QEMU reports the refusal and keeps waiting for a migration it can accept.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !q.stderr().to_lowercase().contains("certificate") {
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU said: {}",
            q.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("QEMU said: {}", q.stderr().trim());
    let r = q.execute("query-migrate", json!({}));
    assert_ne!(r["status"], "completed", "{r}");
}

/// QEMU with credentials from an unrelated PKI (its own CA, certificate and key): our
/// destination and QEMU refuse each other in the handshake, before any of the stream
/// is read; our error says why.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_destination_refuses_a_qemu_source_from_another_pki() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = TlsServer::new(&pki.server()).unwrap();
    let dst = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        server.accept(sock).err()
    });
    // QEMU checks its own certificate against its own CA when it starts, so it gets a
    // whole unrelated set (it then refuses our server certificate, or we its).
    let obj = tls_object(&pki, Set::OtherCa, "client");
    let mut q = Qemu::start(
        dir.path(),
        "src",
        &["-M", "none", "-m", "64M", "-object", &obj],
    );
    q.execute("migrate-set-parameters", json!({"tls-creds": "tls0"}));
    q.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    let refused = dst.join().unwrap().expect("the handshake failed");
    assert!(
        matches!(refused.kind(), vmstate::ErrorKind::Tls { .. }),
        "{refused}"
    );
    eprintln!("our destination said: {refused}");
    let (status, _) = q.migration_outcome("QEMU from another PKI");
    assert_eq!(status, "failed", "QEMU said: {}", q.stderr());
}

// ---- XBZRLE ----

/// Our source sends XBZRLE pages (the guest rewrote 8 bytes of each page between the
/// rounds) over a plain stream; a QEMU 10 destination applies them, and the RAM it
/// then holds equals ours.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_xbzrle_pages_reach_a_qemu_destination() {
    use vmstate::stream::{SaveSession, StreamConfig};
    let dir = tempfile::tempdir().unwrap();
    let (mut q, port) = qemu_destination(dir.path(), "64M", &["xbzrle"]);
    let (mut reg, ram, stats) = compat_tests::destination::none_with_xbzrle(RAM, 8 << 20);
    let pattern: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ram.write(3 << 20, &pattern);
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    {
        let mut s = SaveSession::new(&mut reg, sock, StreamConfig::new("none"));
        s.setup().unwrap();
        // A round ends at MAX_ROUND_TIME too: go on until everything went out.
        let mut round = || while s.iterate(u64::MAX).unwrap() == vmstate::IterationStatus::More {};
        round();
        for r in 1..4u64 {
            // 8 bytes into each page of the pattern, at a place that moves each round.
            for page in 0..512u64 {
                ram.write_u64((3 << 20) + page * 4096 + r * 64, page * 1000 + r);
            }
            round();
        }
        ram.write(5 << 20, b"sent whole in completion");
        s.complete().unwrap();
    }
    let sent = stats.get();
    assert_eq!(sent.xbzrle_pages, 3 * 512, "{sent:?}");
    q.wait_migration("our XBZRLE source to the QEMU destination");
    let theirs = qemu_ram(&mut q, dir.path());
    for page in 0..ram.pages() {
        assert_eq!(
            theirs.page_checksum(page),
            ram.page_checksum(page),
            "page {page} differs in QEMU"
        );
    }
    q.quit();
}

// ---- multifd ----

use vmstate::multifd::compress::Compression;

/// QEMU's multifd parameters for `compression`.
fn multifd_parameters(channels: usize, compression: Compression) -> serde_json::Value {
    let mut p = json!({"multifd-channels": channels, "multifd-compression": compression.method()});
    match compression {
        Compression::Zlib { level } => p["multifd-zlib-level"] = json!(level),
        Compression::Zstd { level } => p["multifd-zstd-level"] = json!(level),
        Compression::None => {}
    }
    p
}

/// Text-like bytes (compressible), for QEMU's loader beside the random blob.
fn text_blob(dir: &Path) -> (Vec<u8>, String) {
    let bytes: Vec<u8> = (0..8192u32)
        .flat_map(|i| {
            format!("line {i:05}: the guest wrote this text into its memory\n").into_bytes()
        })
        .take(256 << 10)
        .collect();
    let path = dir.join("text.bin");
    std::fs::write(&path, &bytes).unwrap();
    (bytes, path.to_str().unwrap().to_string())
}

const TEXT_AT: u64 = 8 << 20;

/// A QEMU 10 source `-M none -m 64M` (plus `extra` arguments) whose loader devices put
/// a random MiB at `BLOB_AT` and text at `TEXT_AT`: QEMU, the random bytes, the text.
fn qemu_source_with_blobs(dir: &Path, extra: &[&str]) -> (Qemu, Vec<u8>, Vec<u8>) {
    let (content, blob_path) = blob(dir);
    let (text, text_path) = text_blob(dir);
    let loader = format!("loader,file={blob_path},addr={BLOB_AT},force-raw=on");
    let text_loader = format!("loader,file={text_path},addr={TEXT_AT},force-raw=on");
    let mut args = vec![
        "-M",
        "none",
        "-m",
        "64M",
        "-device",
        &loader,
        "-device",
        &text_loader,
    ];
    args.extend_from_slice(extra);
    (Qemu::start(dir, "src", &args), content, text)
}

/// QEMU 10 as the source with `multifd`, `channels` channels and `compression`: our
/// destination accepts the main stream and the channels, places (and decompresses)
/// the channels' pages, waits at each flush for every channel's SYNC, and holds
/// QEMU's RAM: a random blob and a text blob.
fn qemu_multifd_source_to_our_destination(channels: usize, compression: Compression) {
    use vmstate::multifd::recv::{MultifdReceiver, accept_channels};
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::{Reader, Registration};
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dst = std::thread::spawn(move || {
        let ram = Arc::new(RamBlock::new("ram", RAM).unwrap());
        let (main, socks) = accept_channels(&listener, channels, Duration::from_secs(30))?;
        let receiver = MultifdReceiver::start(vec![ram.clone()], socks);
        let handler = RamHandler::new(vec![ram.clone()])?.with_multifd_flush(receiver.flush_hook());
        let stats = handler.stats();
        let mut reg = compat_tests::destination::none();
        reg.unregister(reg.find_section("ram", 0).unwrap());
        reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())?;
        let opts = LoadOptions {
            machine: Some("none".into()),
            ..Default::default()
        };
        vmstate::stream::load_stream(&mut reg, &mut Reader::from_io(main), &opts)?;
        let per_channel = receiver.finish()?;
        Ok::<_, vmstate::Error>((ram, per_channel, stats.get()))
    });
    let (mut q, content, text) = qemu_source_with_blobs(dir.path(), &[]);
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "multifd", "state": true}]}),
    );
    q.execute(
        "migrate-set-parameters",
        multifd_parameters(channels, compression),
    );
    q.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    q.wait_migration("QEMU multifd source to our destination");
    let (ram, per_channel, main_stats) = dst
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("our destination failed: {e}; QEMU said: {}", q.stderr()));
    assert_eq!(ram_bytes(&ram, BLOB_AT, content.len()), content);
    assert_eq!(ram_bytes(&ram, TEXT_AT, text.len()), text);
    assert!(ram_bytes(&ram, 0, 1 << 20).iter().all(|&b| b == 0));
    assert_eq!(per_channel.len(), channels);
    let mut ids: Vec<u8> = per_channel.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..channels as u8).collect::<Vec<_>>());
    let normal: u64 = per_channel.iter().map(|c| c.normal_pages).sum();
    let zero: u64 = per_channel.iter().map(|c| c.zero_pages).sum();
    assert_eq!(normal, 256 + 64, "the blobs came through the channels");
    assert_eq!(
        normal + zero + main_stats.normal_pages + main_stats.zero_pages,
        RAM / 4096
    );
    assert!(per_channel.iter().all(|c| c.syncs >= 2), "{per_channel:?}");
    let compressed: u64 = per_channel.iter().map(|c| c.compressed_bytes).sum();
    match compression {
        Compression::None => assert_eq!(compressed, 0),
        // The random MiB does not shrink; the text's 64 pages do, to a few KiB.
        _ => assert!(
            compressed > 0 && compressed < (256 + 16) * 4096,
            "{compression}: {compressed} compressed bytes for {normal} pages"
        ),
    }
    q.quit();
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_multifd_source_with_two_channels_migrates_to_our_destination() {
    qemu_multifd_source_to_our_destination(2, Compression::None);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_multifd_source_with_four_channels_migrates_to_our_destination() {
    qemu_multifd_source_to_our_destination(4, Compression::None);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_multifd_source_with_zstd_migrates_to_our_destination() {
    qemu_multifd_source_to_our_destination(2, Compression::Zstd { level: 3 });
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_multifd_source_with_zlib_migrates_to_our_destination() {
    qemu_multifd_source_to_our_destination(3, Compression::Zlib { level: 6 });
}

/// Our source with `channels` multifd channels and `compression` to a QEMU 10
/// destination with `multifd` and the same compression: QEMU places (and
/// decompresses) the channels' pages, and the RAM it then holds equals ours, pages
/// written between the rounds and in completion included.
fn our_multifd_source_to_a_qemu_destination(channels: usize, compression: Compression) {
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::{SaveSession, StreamConfig};
    use vmstate::{IterationStatus, Registration};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut q = Qemu::start(
        dir.path(),
        "dst",
        &["-M", "none", "-m", "64M", "-incoming", "defer"],
    );
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "multifd", "state": true}]}),
    );
    q.execute(
        "migrate-set-parameters",
        multifd_parameters(channels, compression),
    );
    q.execute(
        "migrate-incoming",
        json!({"uri": format!("tcp:127.0.0.1:{port}")}),
    );
    let (mut reg, ram, pattern) = our_none_source();
    let main = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let writers = (0..channels)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            Box::new(s) as Box<dyn std::io::Write + Send>
        })
        .collect();
    let handler = RamHandler::new(vec![ram.clone()])
        .unwrap()
        .with_multifd(writers, compression)
        .unwrap();
    reg.unregister(reg.find_section("ram", 0).unwrap());
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    {
        let mut s = SaveSession::new(&mut reg, main, StreamConfig::new("none"));
        s.setup().unwrap();
        while s.iterate(8 << 20).unwrap() == IterationStatus::More {}
        ram.write(20 << 20, b"written between the rounds");
        while s.iterate(8 << 20).unwrap() == IterationStatus::More {}
        ram.write(40 << 20, b"written for completion");
        s.complete()
            .unwrap_or_else(|e| panic!("our source failed: {e}; QEMU said: {}", q.stderr()));
    }
    q.wait_migration("our multifd source to the QEMU destination");
    let theirs = qemu_ram(&mut q, dir.path());
    assert_eq!(ram_bytes(&theirs, 3 << 20, pattern.len()), pattern);
    assert_eq!(
        &ram_bytes(&theirs, 20 << 20, 26),
        b"written between the rounds"
    );
    assert_eq!(&ram_bytes(&theirs, 40 << 20, 22), b"written for completion");
    for page in 0..ram.pages() {
        assert_eq!(
            theirs.page_checksum(page),
            ram.page_checksum(page),
            "page {page}"
        );
    }
    q.quit();
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_multifd_source_with_two_channels_reaches_a_qemu_destination() {
    our_multifd_source_to_a_qemu_destination(2, Compression::None);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_multifd_source_with_four_channels_reaches_a_qemu_destination() {
    our_multifd_source_to_a_qemu_destination(4, Compression::None);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_zstd_multifd_source_reaches_a_qemu_destination() {
    our_multifd_source_to_a_qemu_destination(2, Compression::Zstd { level: 3 });
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_zlib_multifd_source_reaches_a_qemu_destination() {
    our_multifd_source_to_a_qemu_destination(3, Compression::Zlib { level: 6 });
}

// ---- multifd over mutual TLS ----

/// QEMU 10 as a TLS source with two zstd multifd channels: our destination takes the
/// first TLS session as the main stream and the next two as the channels (QEMU's own
/// rule under TLS), and holds QEMU's RAM.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_multifd_source_over_mutual_tls_migrates_to_our_destination() {
    use vmstate::multifd::recv::{MultifdReceiver, accept_tls_channels};
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::{Reader, Registration};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = TlsServer::new(&pki.server()).unwrap();
    let dst = std::thread::spawn(move || {
        let ram = Arc::new(RamBlock::new("ram", RAM).unwrap());
        let (main, channels) = accept_tls_channels(&listener, 2, Duration::from_secs(30), &server)?;
        let receiver = MultifdReceiver::start(vec![ram.clone()], channels);
        let handler = RamHandler::new(vec![ram.clone()])?.with_multifd_flush(receiver.flush_hook());
        let mut reg = compat_tests::destination::none();
        reg.unregister(reg.find_section("ram", 0).unwrap());
        reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())?;
        let opts = LoadOptions {
            machine: Some("none".into()),
            ..Default::default()
        };
        vmstate::stream::load_stream(&mut reg, &mut Reader::from_io(main), &opts)?;
        let per_channel = receiver.finish()?;
        Ok::<_, vmstate::Error>((ram, per_channel))
    });
    let obj = tls_object(&pki, Set::Good, "client");
    let (mut q, content, text) = qemu_source_with_blobs(dir.path(), &["-object", &obj]);
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "multifd", "state": true}]}),
    );
    let mut p = multifd_parameters(2, Compression::ZSTD);
    p["tls-creds"] = json!("tls0");
    q.execute("migrate-set-parameters", p);
    q.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    q.wait_migration("QEMU multifd TLS source to our destination");
    let (ram, per_channel) = dst
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("our destination failed: {e}; QEMU said: {}", q.stderr()));
    assert_eq!(ram_bytes(&ram, BLOB_AT, content.len()), content);
    assert_eq!(ram_bytes(&ram, TEXT_AT, text.len()), text);
    assert_eq!(per_channel.len(), 2);
    assert!(
        per_channel.iter().all(|c| c.compressed_bytes > 0),
        "{per_channel:?}"
    );
    q.quit();
}

/// Our TLS source with three zlib multifd channels, each its own TLS session, to a
/// QEMU 10 TLS destination with the same settings: the RAM QEMU then holds is ours.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn our_multifd_source_over_mutual_tls_reaches_a_qemu_destination() {
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::{SaveSession, StreamConfig};
    use vmstate::{IterationStatus, Registration};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let port = free_port();
    let obj = tls_object(&pki, Set::Good, "server");
    let mut q = Qemu::start(
        dir.path(),
        "dst",
        &[
            "-M",
            "none",
            "-m",
            "64M",
            "-incoming",
            "defer",
            "-object",
            &obj,
        ],
    );
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "multifd", "state": true}]}),
    );
    let compression = Compression::Zlib { level: 1 };
    let mut p = multifd_parameters(3, compression);
    p["tls-creds"] = json!("tls0");
    q.execute("migrate-set-parameters", p);
    q.execute(
        "migrate-incoming",
        json!({"uri": format!("tcp:127.0.0.1:{port}")}),
    );
    let client = Arc::new(TlsClient::new(&pki.client(), Some("localhost")).unwrap());
    let connect = move |client: &TlsClient| -> vmstate::Result<_> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        client.connect(s)
    };
    let main = connect(&client).unwrap();
    // QEMU answers the channels' handshakes once the main stream has started: they
    // connect in their threads.
    let openers = (0..3)
        .map(|_| {
            let client = client.clone();
            Box::new(move || {
                connect(&client).map(|tls| Box::new(tls) as vmstate::multifd::send::ChannelWriter)
            }) as vmstate::multifd::send::ChannelOpener
        })
        .collect();
    let (mut reg, ram, pattern) = our_none_source();
    let handler = RamHandler::new(vec![ram.clone()])
        .unwrap()
        .with_multifd_connecting(openers, compression)
        .unwrap();
    reg.unregister(reg.find_section("ram", 0).unwrap());
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    {
        let mut s = SaveSession::new(&mut reg, main, StreamConfig::new("none"));
        s.setup().unwrap();
        while s.iterate(8 << 20).unwrap() == IterationStatus::More {}
        ram.write(20 << 20, b"written between the rounds");
        while s.iterate(8 << 20).unwrap() == IterationStatus::More {}
        s.complete()
            .unwrap_or_else(|e| panic!("our source failed: {e}; QEMU said: {}", q.stderr()));
    }
    q.wait_migration("our multifd TLS source to the QEMU destination");
    q.execute("migrate-set-parameters", json!({"tls-creds": ""}));
    let theirs = qemu_ram(&mut q, dir.path());
    assert_eq!(ram_bytes(&theirs, 3 << 20, pattern.len()), pattern);
    for page in 0..ram.pages() {
        assert_eq!(
            theirs.page_checksum(page),
            ram.page_checksum(page),
            "page {page}"
        );
    }
    q.quit();
}

// ---- mapped-ram ----

fn mapped_ram_options() -> LoadOptions {
    LoadOptions {
        machine: Some("none".into()),
        capabilities: vec!["mapped-ram".into()],
        ..Default::default()
    }
}

/// Our `-M none` machine (a pattern at 3 MiB, a page at 60 MiB) saved in the
/// mapped-ram layout to a file: a QEMU 10 destination with `mapped-ram` loads it
/// (`migrate-incoming file:`), and the RAM it then holds is ours, page for page.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_loads_our_mapped_ram_snapshot() {
    use vmstate::stream::{StreamConfig, save_mapped_ram_snapshot};
    let dir = tempfile::tempdir().unwrap();
    let (mut reg, ram, _) =
        compat_tests::destination::none_with_handler(RAM, |h| h.with_mapped_ram());
    let pattern: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ram.write(3 << 20, &pattern);
    ram.write(60 << 20, b"the last page but a few");
    let path = dir.path().join("ours.mig");
    save_mapped_ram_snapshot(&mut reg, &path, StreamConfig::new("none")).unwrap();
    let mut q = Qemu::start(
        dir.path(),
        "dst",
        &["-M", "none", "-m", "64M", "-incoming", "defer"],
    );
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "mapped-ram", "state": true}]}),
    );
    q.execute(
        "migrate-incoming",
        json!({"uri": format!("file:{}", path.display())}),
    );
    q.wait_migration("QEMU loading our mapped-ram file");
    let theirs = qemu_ram(&mut q, dir.path());
    assert_eq!(ram_bytes(&theirs, 3 << 20, pattern.len()), pattern);
    for page in 0..ram.pages() {
        assert_eq!(
            theirs.page_checksum(page),
            ram.page_checksum(page),
            "page {page}"
        );
    }
    q.quit();
}

/// QEMU 10 saves a `-M none -m 64M` machine (a random MiB at 1 MiB, text at 8 MiB) in
/// the mapped-ram layout (`migrate file:`); this project loads the file and holds the
/// same RAM.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemus_mapped_ram_snapshot_loads_here() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, content, text) = qemu_source_with_blobs(dir.path(), &[]);
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "mapped-ram", "state": true}]}),
    );
    let path = dir.path().join("theirs.mig");
    q.execute(
        "migrate",
        json!({"uri": format!("file:{}", path.display())}),
    );
    q.wait_migration("QEMU saving a mapped-ram file");
    q.quit();
    let (mut reg, ram, stats) =
        compat_tests::destination::none_with_handler(RAM, |h| h.with_mapped_ram());
    load_file(&mut reg, &path, mapped_ram_options(), false).unwrap();
    assert_eq!(ram_bytes(&ram, BLOB_AT, content.len()), content);
    assert_eq!(ram_bytes(&ram, TEXT_AT, text.len()), text);
    let s = stats.get();
    assert_eq!(s.normal_pages, 256 + 64);
    assert_eq!(s.normal_pages + s.zero_pages, RAM / 4096);
}

/// The destination's guest in the postcopy tests: at the start a vCPU thread reads the
/// text blob's pages through the RAM block (each missing one is asked for).
struct ReadingGuest {
    ram: Arc<RamBlock>,
    vcpu: Option<std::thread::JoinHandle<()>>,
}

impl vmstate::migrate::IncomingGuest for ReadingGuest {
    fn start(&mut self) -> vmstate::Result<()> {
        let ram = self.ram.clone();
        self.vcpu = Some(std::thread::spawn(move || {
            let mut b = [0u8; 8];
            for page in (0..(1u64 << 20) / 4096).rev() {
                ram.read(TEXT_AT + page * 4096, &mut b);
            }
        }));
        Ok(())
    }
}

/// Our `-M none` destination in a thread, its RAM handler set up by `configure`:
/// receives one migration on `listener` with a [`ReadingGuest`], and returns the
/// outcome and the RAM once the guest's reads are done.
fn reading_destination(
    listener: TcpListener,
    configure: impl FnOnce(vmstate::ram::RamHandler) -> vmstate::ram::RamHandler + Send + 'static,
) -> std::thread::JoinHandle<(vmstate::Result<vmstate::stream::LoadReport>, Arc<RamBlock>)> {
    std::thread::spawn(move || {
        let (mut reg, ram, _) = compat_tests::destination::none_with_handler(RAM, configure);
        let (sock, _) = listener.accept().unwrap();
        let mut guest = ReadingGuest {
            ram: ram.clone(),
            vcpu: None,
        };
        let report = vmstate::migrate::receive_with(
            &mut reg,
            sock,
            &IncomingParams::new("none"),
            &mut guest,
        );
        if let Some(v) = guest.vcpu.take() {
            v.join().unwrap();
        }
        (report, ram)
    })
}

/// QEMU 10 as the source with `postcopy-ram`, slowed to 2 MB/s so that most of RAM is
/// still there when `migrate-start-postcopy` switches: our destination loads the
/// discards and the package, starts its guest at POSTCOPY_RUN, asks for the pages the
/// guest reads (REQ_PAGES_ID / REQ_PAGES), and ends with QEMU's RAM.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_postcopy_source_migrates_to_our_destination() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dst = reading_destination(listener, |h| h);
    let (mut q, content, text) = qemu_source_with_blobs(dir.path(), &[]);
    let caps = json!([{"capability": "postcopy-ram", "state": true}]);
    q.execute("migrate-set-capabilities", json!({ "capabilities": caps }));
    q.execute(
        "migrate-set-parameters",
        json!({"max-bandwidth": 2_000_000}),
    );
    // VMSTATE_CAPTURE=FILE records QEMU's stream on the way (the fixture of
    // compat-tests/fixtures/qemu-10.0.2-postcopy was made so).
    let port = match std::env::var_os("VMSTATE_CAPTURE") {
        Some(file) => recording_proxy(port, file.into()),
        None => port,
    };
    q.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    q.execute("migrate-start-postcopy", json!({}));
    q.wait_migration("QEMU postcopy source to our destination");
    let (report, ram) = dst.join().unwrap();
    let report = report.unwrap_or_else(|e| panic!("our destination failed: {e}"));
    let pc = report.postcopy.expect("QEMU switched to postcopy");
    assert!(
        pc.discarded_pages > 0,
        "QEMU discarded what it had not sent: {pc:?}"
    );
    assert!(pc.requests > 0, "our guest asked QEMU for pages: {pc:?}");
    assert_eq!(ram.missing_pages(), 0);
    assert_eq!(ram_bytes(&ram, BLOB_AT, content.len()), content);
    assert_eq!(ram_bytes(&ram, TEXT_AT, text.len()), text);
    assert!(ram_bytes(&ram, 0, 1 << 20).iter().all(|&b| b == 0));
    q.quit();
}

/// QEMU 10 as the source with `postcopy-ram` and `postcopy-preempt`: QEMU opens a
/// second connection at the switch and answers our guest's requests on it; our
/// destination takes it at POSTCOPY_LISTEN, places the pages it brings, and ends with
/// QEMU's RAM.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_postcopy_preempt_source_answers_requests_on_its_preempt_channel() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let preempt = listener.try_clone().unwrap();
    let dst = reading_destination(listener, move |h| {
        h.with_postcopy_preempt_incoming(Box::new(move || {
            let (sock, _) = preempt.accept()?;
            Ok(Box::new(sock) as Box<dyn std::io::Read + Send>)
        }))
    });
    let (mut q, content, text) = qemu_source_with_blobs(dir.path(), &[]);
    let caps = json!([
        {"capability": "postcopy-ram", "state": true},
        {"capability": "postcopy-preempt", "state": true},
    ]);
    q.execute("migrate-set-capabilities", json!({ "capabilities": caps }));
    q.execute(
        "migrate-set-parameters",
        json!({"max-bandwidth": 2_000_000, "max-postcopy-bandwidth": 2_000_000}),
    );
    q.execute("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}));
    q.execute("migrate-start-postcopy", json!({}));
    q.wait_migration("QEMU postcopy-preempt source to our destination");
    let (report, ram) = dst.join().unwrap();
    let report = report.unwrap_or_else(|e| panic!("our destination failed: {e}"));
    let pc = report.postcopy.expect("QEMU switched to postcopy");
    assert!(pc.requests > 0, "our guest asked QEMU for pages: {pc:?}");
    assert!(
        pc.preempt_pages > 0,
        "QEMU sent requested pages on the preempt channel: {pc:?}"
    );
    assert_eq!(ram.missing_pages(), 0);
    assert_eq!(ram_bytes(&ram, BLOB_AT, content.len()), content);
    assert_eq!(ram_bytes(&ram, TEXT_AT, text.len()), text);
    q.quit();
}

/// Our source with a postcopy-preempt channel to a QEMU 10 destination with
/// `postcopy-ram` and `postcopy-preempt`: QEMU takes our second connection as its
/// preempt channel; reads of guest memory through its monitor while the pages are
/// still on our side fault, QEMU asks for them, and our return-path thread answers on
/// that channel: the bytes QEMU reads are ours, and QEMU ends with our RAM.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run) and userfaultfd (root)"]
fn our_postcopy_preempt_source_answers_a_qemu_destination_on_the_preempt_channel() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, port) = qemu_destination(dir.path(), "64M", &["postcopy-ram", "postcopy-preempt"]);
    let (switched_tx, switched) = std::sync::mpsc::channel();
    let pattern: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let expected = pattern.clone();
    let src = std::thread::spawn(move || {
        let (mut reg, ram, stats) = compat_tests::destination::none_with_handler(RAM, |h| {
            h.with_postcopy_preempt(Box::new(move || {
                let s = TcpStream::connect(("127.0.0.1", port))?;
                s.set_nodelay(true)?;
                Ok(Box::new(s) as Box<dyn std::io::Write + Send>)
            }))
        });
        ram.write(3 << 20, &pattern);
        let trigger = vmstate::migrate::StartPostcopy::new();
        let mut p = params(false);
        p.ram_stats = Some(stats);
        p.max_bandwidth = Some(4 << 20);
        p.max_postcopy_bandwidth = Some(512 << 10);
        p.downtime_limit = Duration::ZERO;
        p.postcopy = Some(vmstate::migrate::PostcopyPolicy::on_request(
            trigger.clone(),
        ));
        let mut guest = StillGuest::default();
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut told = false;
        let stats = migrate_over(
            &mut reg,
            sock,
            &mut guest,
            &p,
            &CancelToken::new(),
            &mut |s| {
                // Switch after the first round: most pages are still here.
                trigger.start();
                if s.status == Status::Postcopy && !told {
                    told = true;
                    let _ = switched_tx.send(());
                }
            },
        );
        (stats, guest)
    });
    switched
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("our source never switched; QEMU said: {}", q.stderr()));
    // Once QEMU listens (its RAM registered with userfaultfd), its monitor reads bytes
    // spread over the pattern, most of it not sent yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = q.execute("query-migrate", json!({}));
        if r["status"] == "postcopy-active" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU never entered postcopy: {r}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for k in 0..8u64 {
        let at = (3 << 20) + k * (256 << 10) + 8;
        let out = q.execute(
            "human-monitor-command",
            json!({"command-line": format!("xp /4xb 0x{at:x}")}),
        );
        let text = out.as_str().unwrap_or_default();
        let got: Vec<u8> = text
            .split_once(':')
            .map(|(_, v)| v)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
            .collect();
        let off = (at - (3 << 20)) as usize;
        assert_eq!(
            got,
            expected[off..off + 4],
            "QEMU read {text:?} at 0x{at:x}"
        );
    }
    let (stats, guest) = src.join().unwrap();
    let stats =
        stats.unwrap_or_else(|e| panic!("our source failed: {e}; QEMU said: {}", q.stderr()));
    assert_eq!(stats.status, Status::Completed);
    assert_eq!((guest.stops, guest.resumes), (1, 0));
    let pc = stats.postcopy.expect("the migration switched to postcopy");
    assert!(
        pc.requests > 0 && pc.requested_pages > 0,
        "QEMU asked for pages not sent yet: {pc:?}"
    );
    let ram = stats.ram.expect("RAM counters");
    assert!(
        ram.preempt_bytes >= pc.requested_pages * 4096,
        "the requested pages (of the pattern, none zero) went on the preempt channel: {} bytes for {pc:?}",
        ram.preempt_bytes
    );
    q.wait_migration("our postcopy-preempt source to the QEMU destination");
    let theirs = qemu_ram(&mut q, dir.path());
    assert_eq!(ram_bytes(&theirs, 3 << 20, expected.len()), expected);
    q.quit();
}

/// A proxy on a new port that forwards one connection to `to` both ways and writes
/// what came from the connecting side to `file` when it ends.
fn recording_proxy(to: u16, file: std::path::PathBuf) -> u16 {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut from, _) = l.accept().unwrap();
        let mut up = TcpStream::connect(("127.0.0.1", to)).unwrap();
        let (mut back_from, mut back_to) = (up.try_clone().unwrap(), from.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut back_from, &mut back_to);
        });
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || up.write_all(&buf[..n]).is_err() {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = up.shutdown(std::net::Shutdown::Write);
        std::fs::write(file, seen).unwrap();
    });
    port
}

/// Our source with postcopy to a QEMU 10 destination with `postcopy-ram` (which
/// registers its RAM with userfaultfd at LISTEN): QEMU loads the discards and the
/// package, runs, takes the rest in the background, reports SHUT(0), and holds our RAM.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run) and userfaultfd (root)"]
fn our_postcopy_source_reaches_a_qemu_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, port) = qemu_destination(dir.path(), "64M", &["postcopy-ram"]);
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut reg, _ram, pattern) = our_none_source();
    let mut guest = StillGuest::default();
    let mut p = params(false);
    p.max_bandwidth = Some(8 << 20);
    p.downtime_limit = Duration::ZERO;
    p.postcopy = Some(vmstate::migrate::PostcopyPolicy::after_rounds(1));
    let stats = migrate_over(
        &mut reg,
        sock,
        &mut guest,
        &p,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("our source failed: {e}; QEMU said: {}", q.stderr()));
    assert_eq!(stats.status, Status::Completed);
    assert!(
        stats.postcopy.is_some(),
        "the migration switched to postcopy"
    );
    assert_eq!((guest.stops, guest.resumes), (1, 0));
    q.wait_migration("our postcopy source to the QEMU destination");
    let theirs = qemu_ram(&mut q, dir.path());
    assert_eq!(ram_bytes(&theirs, 3 << 20, pattern.len()), pattern);
    q.quit();
}
