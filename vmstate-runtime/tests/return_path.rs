//! QEMU's return path between `migrate_over` and `receive`: the confirmation, failures
//! reported back, switchover-ack, I/O timeouts, and the commands on the wire.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
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
    let stats = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
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
    let err = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
    let landed = dst.join().unwrap();
    assert!(!landed.started);
    let dst_err = landed.result.unwrap_err().to_string();
    assert!(dst_err.contains("machine type mismatch"), "{dst_err}");
    assert!(dst_err.contains("not started"), "{dst_err}");
    // The source learns it from SHUT(1) or from the closed connection, whichever
    // comes first, in a round or at the switchover.
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
    let err = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
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
    let err = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
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
    migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
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
    let err = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
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
    let stats = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
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
    let err = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
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

#[allow(dead_code)]
fn _unused(_: TcpStream) {}
