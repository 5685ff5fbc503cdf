//! QEMU's return path between `migrate_over` and `receive`: the confirmation, failures
//! reported back, switchover-ack, I/O timeouts, and the commands on the wire.

mod support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::{MACHINE, ShadowGuest, connect, destination, listen, same_ram};
use vmstate::migrate::{
    CancelToken, IncomingParams, OnTimeout, Status, migrate_over,
    return_path::{Message, read_message, write_message},
};
use vmstate::stream::{LoadOptions, load_stream};
use vmstate::{ErrorKind, Reader};

const PAGES: u64 = 1024;

fn phase_of(e: &vmstate::Error) -> String {
    match e.kind() {
        ErrorKind::MigrationFailed { phase, .. } => phase.clone(),
        other => panic!("not a MigrationFailed error: {other}"),
    }
}

#[test]
fn the_destination_confirms_and_only_then_runs_the_guest() {
    let mut guest = ShadowGuest::new(PAGES, 32, 1);
    let (mut reg, params) = guest.source();
    let (l, addr) = listen();
    let dst = destination(l, PAGES, IncomingParams::new(MACHINE));
    let stats = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap();
    let landed = dst.join().unwrap();
    let report = landed.result.unwrap();
    assert!(landed.started);
    assert!(report.return_path, "the source opened the return path");
    assert_eq!(stats.status, Status::Completed);
    assert!(!guest.is_running());
    assert_eq!((guest.stops, guest.resumes), (1, 0));
    assert!(same_ram(&guest.ram, &landed.ram));
    assert_eq!(*guest.dev.lock().unwrap(), *landed.dev.lock().unwrap());
}

#[test]
fn a_destination_whose_load_fails_says_so_and_the_source_resumes() {
    let mut guest = ShadowGuest::new(PAGES, 32, 2);
    let (mut reg, params) = guest.source();
    let (l, addr) = listen();
    // The destination is another machine type: its load fails at the configuration.
    let dst = destination(l, PAGES, IncomingParams::new("other-machine"));
    let err = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap_err();
    let landed = dst.join().unwrap();
    assert!(!landed.started);
    let dst_err = landed.result.unwrap_err().to_string();
    assert!(dst_err.contains("machine type mismatch"), "{dst_err}");
    assert!(dst_err.contains("not started"), "{dst_err}");
    // The source learns it from SHUT(1) or from the closed connection, whichever
    // comes first (in its setup: no state leaves before the PONG).
    let text = err.to_string();
    assert!(
        text.contains("SHUT 1") || text.contains("closed") || text.contains("I/O error"),
        "{text}"
    );
    assert!(guest.is_running(), "the guest runs on the source");
    let (bad_pages, dev_differs) = guest.check_intact();
    assert!(bad_pages.is_empty() && !dev_differs);
}

/// A destination that reads the whole stream and answers PONG but never SHUT.
fn silent_destination(l: std::net::TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut pong = false;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            if !pong {
                write_message(&mut s, &Message::Pong(1)).unwrap();
                pong = true;
            }
        }
    })
}

#[test]
fn a_destination_that_never_reports_times_out_and_the_source_resumes() {
    let mut guest = ShadowGuest::new(PAGES, 32, 3);
    let (mut reg, mut params) = guest.source();
    params.io_timeout = Some(Duration::from_millis(500));
    let (l, addr) = listen();
    let dst = silent_destination(l);
    let err = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap_err();
    assert_eq!(phase_of(&err), "confirmation", "{err}");
    assert!(err.to_string().contains("did not report within"), "{err}");
    assert_eq!((guest.stops, guest.resumes), (1, 1));
    let (bad_pages, dev_differs) = guest.check_intact();
    assert!(bad_pages.is_empty() && !dev_differs);
    dst.join().unwrap();
}

#[test]
fn a_destination_that_stops_reading_times_the_source_out() {
    let mut guest = ShadowGuest::new(PAGES * 16, 32, 4); // 64 MiB: more than the buffers
    let (mut reg, mut params) = guest.source();
    params.io_timeout = Some(Duration::from_millis(300));
    let (l, addr) = listen();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let dst = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        // Answers the PING, then holds the socket open and never reads again.
        let mut head = vec![0u8; 8 + 1 + 4 + MACHINE.len() + 5 + 9];
        s.read_exact(&mut head).unwrap();
        write_message(&mut s, &Message::Pong(1)).unwrap();
        let _ = done_rx.recv();
        drop(s);
    });
    let err = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap_err();
    done_tx.send(()).unwrap();
    dst.join().unwrap();
    let text = err.to_string();
    assert!(phase_of(&err).starts_with("round"), "{text}");
    assert!(
        text.contains("timed out") || text.contains("Resource temporarily unavailable"),
        "{text}"
    );
    assert!(guest.is_running());
    let (bad_pages, dev_differs) = guest.check_intact();
    assert!(bad_pages.is_empty() && !dev_differs);
}

#[test]
fn a_source_that_stops_sending_times_the_destination_out() {
    let (l, addr) = listen();
    let mut params = IncomingParams::new(MACHINE);
    params.io_timeout = Some(Duration::from_millis(300));
    let dst = destination(l, PAGES, params);
    let mut s = connect(addr);
    // The header and half a configuration section, then silence with the socket open.
    s.write_all(b"QEVM\x00\x00\x00\x03\x07\x00\x00").unwrap();
    let landed = dst.join().unwrap();
    drop(s);
    assert!(!landed.started);
    let text = landed.result.unwrap_err().to_string();
    assert!(
        text.contains("timed out") || text.contains("Resource temporarily unavailable"),
        "{text}"
    );
}

#[test]
fn the_stream_opens_the_return_path_right_after_the_configuration() {
    // Record what the source sends; answer as a destination would.
    let mut guest = ShadowGuest::new(16, 4, 5);
    let (mut reg, params) = guest.source();
    let (l, addr) = listen();
    let dst = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut ponged = false;
        while !got.ends_with(b"]}") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended early");
            got.extend_from_slice(&buf[..n]);
            if !ponged && got.len() >= 8 + 1 + 4 + MACHINE.len() + 14 {
                write_message(&mut s, &Message::Pong(1)).unwrap();
                ponged = true;
            }
        }
        write_message(&mut s, &Message::Shut { failed: false }).unwrap();
        got
    });
    support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap();
    let got = dst.join().unwrap();
    // Header, configuration (len 15 + "faults-test-1.0"), then the two commands as
    // QEMU's qemu_savevm_send_open_return_path / qemu_savevm_send_ping write them.
    let config_end = 8 + 1 + 4 + MACHINE.len();
    assert_eq!(&got[..9], b"QEVM\x00\x00\x00\x03\x07");
    assert_eq!(
        &got[config_end..config_end + 13],
        &[8, 0, 1, 0, 0, 8, 0, 2, 0, 4, 0, 0, 0, 1][..13]
    );
    assert_eq!(got[config_end + 13], 1, "PING carries 1");
}

#[test]
fn no_state_is_sent_before_the_destinations_pong() {
    let mut guest = ShadowGuest::new(16, 4, 8);
    let (mut reg, mut params) = guest.source();
    params.io_timeout = Some(Duration::from_millis(300));
    let (l, addr) = listen();
    // A peer that reads but never answers: the source stops after the commands.
    let dst = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let err = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap_err();
    assert_eq!(phase_of(&err), "setup", "{err}");
    assert!(err.to_string().contains("did not answer PING"), "{err}");
    let got = dst.join().unwrap();
    // Header, configuration, OPEN_RETURN_PATH, PING: nothing of the guest.
    assert_eq!(got.len(), 8 + 1 + 4 + MACHINE.len() + 5 + 9, "{got:?}");
    assert_eq!(guest.stops, 0);
}

#[test]
fn a_file_with_return_path_commands_is_refused_by_a_plain_load() {
    let mut stream = b"QEVM\x00\x00\x00\x03".to_vec();
    stream.extend([7, 0, 0, 0, 4]);
    stream.extend(b"none");
    stream.extend([8, 0, 1, 0, 0]);
    let mut reg = vmstate::Registry::new();
    let err = load_stream(
        &mut reg,
        &mut Reader::from_slice(&stream),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("OPEN_RETURN_PATH"), "{err}");
    assert_eq!(err.offset(), Some(17));
    // PING without OPEN_RETURN_PATH: QEMU's "received with no return path".
    let mut ping = stream[..17].to_vec();
    ping.extend([8, 0, 2, 0, 4, 0, 0, 0, 9]);
    let err = load_stream(
        &mut reg,
        &mut Reader::from_slice(&ping),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no return path"), "{err}");
}

#[test]
fn switchover_waits_for_the_destinations_ack() {
    let mut guest = ShadowGuest::new(PAGES, 32, 6);
    let (mut reg, mut params) = guest.source();
    params.switchover_ack = true;
    let (l, addr) = listen();
    let mut incoming = IncomingParams::new(MACHINE);
    incoming.switchover_ack = true;
    let dst = destination(l, PAGES, incoming);
    let stats = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap();
    assert_eq!(stats.status, Status::Completed);
    assert!(dst.join().unwrap().started);
}

#[test]
fn without_the_ack_the_source_never_switches_over() {
    let mut guest = ShadowGuest::new(PAGES, 32, 7);
    let (mut reg, mut params) = guest.source();
    params.switchover_ack = true;
    params.max_total_time = Some(Duration::from_millis(300));
    params.on_timeout = OnTimeout::ForceSwitchover;
    let (l, addr) = listen();
    // The destination does not have the capability: it never sends the ack.
    let dst = destination(l, PAGES, IncomingParams::new(MACHINE));
    let err = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap_err();
    assert!(err.to_string().contains("SWITCHOVER_ACK"), "{err}");
    assert_eq!(guest.stops, 0, "the guest was never stopped");
    let (bad_pages, dev_differs) = guest.check_intact();
    assert!(bad_pages.is_empty() && !dev_differs);
    let landed = dst.join().unwrap();
    assert!(!landed.started);
    assert!(landed.result.is_err());
}

#[test]
fn the_source_reads_pong_and_shut_as_qemu_writes_them() {
    // Independent encoding: QEMU's migrate_send_rp_message writes be16 type, be16 len.
    let mut wire: &[u8] = &[0, 2, 0, 4, 0, 0, 0, 1, 0, 7, 0, 0, 0, 1, 0, 4, 0, 0, 0, 1];
    let mut got = Vec::new();
    while let Some(m) = read_message(&mut wire).unwrap() {
        got.push(m);
    }
    assert_eq!(
        got,
        [
            Message::Pong(1),
            Message::SwitchoverAck,
            Message::Shut { failed: true }
        ]
    );
}

/// A device whose load takes a while (a slow `post_load`).
#[derive(vmstate::VmState, Default)]
#[vmstate(name = "slow-dev", post_load = Self::slow)]
struct SlowDev {
    x: u32,
}

impl SlowDev {
    fn slow(&mut self, _version: u32) -> Result<(), std::convert::Infallible> {
        std::thread::sleep(Duration::from_millis(1200));
        Ok(())
    }
}

#[test]
fn a_destination_slower_than_the_source_timeout_does_not_start_after_the_source_took_the_guest_back()
 {
    let mut guest = ShadowGuest::new(PAGES, 32, 9);
    let (mut reg, mut params) = guest.source();
    reg.register_device(SlowDev::default(), vmstate::Registration::new())
        .unwrap();
    params.io_timeout = Some(Duration::from_millis(300));
    let (l, addr) = listen();
    let dst = std::thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        support::receive_on_with(sock, PAGES, IncomingParams::new(MACHINE), |reg| {
            reg.register_device(SlowDev::default(), vmstate::Registration::new())
                .unwrap();
        })
    });
    let err = support::migrate_to(&mut reg, addr, &mut guest, &params).unwrap_err();
    assert_eq!(phase_of(&err), "confirmation", "{err}");
    assert_eq!((guest.stops, guest.resumes), (1, 1));
    let (bad_pages, dev_differs) = guest.check_intact();
    assert!(bad_pages.is_empty() && !dev_differs);
    // The destination loaded everything and sent SHUT(0) after the source had given
    // up: the byte after the stream tells it not to start.
    let landed = dst.join().unwrap();
    assert!(!landed.started, "the guest would run on both hosts");
    let text = landed.result.unwrap_err().to_string();
    assert!(text.contains("took the guest back"), "{text}");
}

/// Source side of a handler that needs the switchover ack: one byte per round.
struct Ticker;

impl vmstate::IterativeHandler for Ticker {
    fn save_setup(&mut self, _w: &mut vmstate::Writer<'_>) -> vmstate::Result<()> {
        Ok(())
    }
    fn pending(&mut self, _exact: bool) -> vmstate::Pending {
        vmstate::Pending::default()
    }
    fn save_iterate(
        &mut self,
        w: &mut vmstate::Writer<'_>,
        _budget: u64,
    ) -> vmstate::Result<vmstate::IterationStatus> {
        w.put_u8(1);
        Ok(vmstate::IterationStatus::Done)
    }
    fn save_complete(&mut self, _w: &mut vmstate::Writer<'_>) -> vmstate::Result<()> {
        Ok(())
    }
    fn load(
        &mut self,
        _r: &mut vmstate::Reader<'_>,
        _version: u32,
        _phase: vmstate::Phase,
    ) -> vmstate::Result<()> {
        unreachable!("source only")
    }
}

/// Destination side: ready for the switchover after `need` PART sections, as VFIO is
/// after its setup data.
struct ReadyAfter {
    seen: Arc<AtomicU64>,
    need: u64,
}

impl vmstate::IterativeHandler for ReadyAfter {
    fn save_setup(&mut self, _w: &mut vmstate::Writer<'_>) -> vmstate::Result<()> {
        unreachable!("destination only")
    }
    fn pending(&mut self, _exact: bool) -> vmstate::Pending {
        vmstate::Pending::default()
    }
    fn save_iterate(
        &mut self,
        _w: &mut vmstate::Writer<'_>,
        _budget: u64,
    ) -> vmstate::Result<vmstate::IterationStatus> {
        unreachable!("destination only")
    }
    fn save_complete(&mut self, _w: &mut vmstate::Writer<'_>) -> vmstate::Result<()> {
        unreachable!("destination only")
    }
    fn load(
        &mut self,
        r: &mut vmstate::Reader<'_>,
        _version: u32,
        phase: vmstate::Phase,
    ) -> vmstate::Result<()> {
        if phase == vmstate::Phase::Part {
            r.get_u8()?;
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn switchover_ack_needed(&self) -> bool {
        true
    }
    fn switchover_ready(&self) -> bool {
        self.seen.load(Ordering::SeqCst) >= self.need
    }
}

#[test]
fn a_handler_that_needs_the_ack_holds_the_switchover_until_it_is_ready() {
    const NEED: u64 = 25;
    let mut guest = ShadowGuest::new(PAGES, 32, 10);
    let (mut reg, mut params) = guest.source();
    reg.register_iterative("ticker", 1, Ticker, vmstate::Registration::new())
        .unwrap();
    params.switchover_ack = true;
    let (l, addr) = listen();
    let seen = Arc::new(AtomicU64::new(0));
    let seen_dst = seen.clone();
    let dst = std::thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        let mut incoming = IncomingParams::new(MACHINE);
        incoming.switchover_ack = true;
        support::receive_on_with(sock, PAGES, incoming, |reg| {
            let h = ReadyAfter {
                seen: seen_dst,
                need: NEED,
            };
            reg.register_iterative("ticker", 1, h, vmstate::Registration::new())
                .unwrap();
        })
    });
    let stopped_at = Arc::new(AtomicU64::new(u64::MAX));
    let (seen_src, stopped) = (seen.clone(), stopped_at.clone());
    let stats = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |s| {
            if s.status == Status::Device {
                stopped.store(seen_src.load(Ordering::SeqCst), Ordering::SeqCst);
            }
        },
    )
    .unwrap();
    assert_eq!(stats.status, Status::Completed);
    assert!(
        stats.rounds >= NEED,
        "switched over after {} rounds",
        stats.rounds
    );
    // When the source stopped the guest, the destination had loaded enough.
    assert!(stopped_at.load(Ordering::SeqCst) >= NEED);
    let landed = dst.join().unwrap();
    landed.result.unwrap();
    assert!(landed.started);
}
