//! Live migration over mutual TLS: `migrate_over` and `receive` on `TlsStream`s, and
//! peers without a valid certificate refused before any state moves.
#![cfg(feature = "tls")]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use support::{MACHINE, ShadowGuest, connect, listen, same_ram};
use vmstate::ErrorKind;
use vmstate::migrate::{CancelToken, IncomingParams, Status, migrate_over};
use vmstate::transport::tls::{Endpoint, TlsClient, TlsServer};

#[allow(dead_code)]
#[path = "../../compat-tests/src/certs.rs"]
mod certs;
use certs::{Set, TestPki};

const PAGES: u64 = 512;

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-migration-pki-{}", std::process::id()));
        TestPki::generate(&dir).expect("generate test certificates")
    })
}

/// A destination that accepts TLS with `server`'s credentials, then receives; returns
/// the handshake error if the peer was refused.
fn tls_destination(
    l: TcpListener,
    set: Set,
) -> std::thread::JoinHandle<Result<support::Landed, vmstate::Error>> {
    let server = TlsServer::new(&pki().credentials(set, Endpoint::Server)).unwrap();
    std::thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let tls = server.accept(sock)?;
        Ok(support::receive_on(
            tls,
            PAGES,
            IncomingParams::new(MACHINE),
        ))
    })
}

#[test]
fn a_migration_over_mutual_tls_verifies_every_page() {
    let mut guest = ShadowGuest::new(PAGES, 32, 11);
    let (mut reg, params) = guest.source();
    let (l, addr) = listen();
    let dst = tls_destination(l, Set::Good);
    let client = TlsClient::new(&pki().client(), Some("localhost")).unwrap();
    let tls = client.connect(connect(addr)).unwrap();
    let stats = migrate_over(
        &mut reg,
        tls,
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(stats.status, Status::Completed);
    let landed = dst.join().unwrap().unwrap();
    landed.result.unwrap();
    assert!(landed.started);
    assert!(same_ram(&guest.ram, &landed.ram));
    assert_eq!(*guest.dev.lock().unwrap(), *landed.dev.lock().unwrap());
}

/// A client whose certificate the destination refuses: nothing is loaded there, and
/// the source fails in its setup having sent no state (only the header, the
/// configuration and the return-path commands, before the PONG that never comes).
fn refused_client(creds: vmstate::transport::tls::TlsCredentials, why: &str) {
    let mut guest = ShadowGuest::new(PAGES, 32, 12);
    let (mut reg, params) = guest.source();
    let (l, addr) = listen();
    let dst = tls_destination(l, Set::Good);
    let client = TlsClient::new(&creds, Some("localhost")).unwrap();
    // TLS 1.3: the client's handshake ends before the server checks its certificate,
    // so the refusal may come at connect or at the first read or write.
    let result = client.connect(connect(addr)).and_then(|tls| {
        migrate_over(
            &mut reg,
            tls,
            &mut guest,
            &params,
            &CancelToken::new(),
            &mut |_| {},
        )
    });
    let err = result.unwrap_err();
    match err.kind() {
        // Refused in the handshake: the source sent nothing of the stream at all.
        ErrorKind::Tls { .. } => {}
        // Refused right after it: only the header, the configuration and the
        // return-path commands went out, before the PONG that never came.
        ErrorKind::MigrationFailed { phase, bytes, .. } => {
            assert_eq!(phase, "setup", "{err}");
            assert!(*bytes <= 8 + 1 + 4 + MACHINE.len() as u64 + 14, "{err}");
        }
        _ => panic!("unexpected error: {err}"),
    }
    assert_eq!(guest.stops, 0);
    let (bad, dev) = guest.check_intact();
    assert!(bad.is_empty() && !dev);
    let refused = dst
        .join()
        .unwrap()
        .err()
        .expect("the destination refused the peer");
    assert!(matches!(refused.kind(), ErrorKind::Tls { .. }), "{refused}");
    assert!(refused.to_string().contains(why), "{refused}");
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_before_any_state() {
    // Signed by an unrelated CA, while trusting ours: only the destination refuses.
    refused_client(
        pki().impostor(Endpoint::Client),
        "not signed by the configured CA",
    );
}

#[test]
fn an_expired_client_certificate_is_refused_before_any_state() {
    refused_client(
        pki().credentials(Set::ExpiredClient, Endpoint::Client),
        "expired",
    );
}

#[test]
fn a_destination_with_the_wrong_name_is_refused_by_the_source() {
    let (l, addr) = listen();
    let server = TlsServer::new(&pki().credentials(Set::WrongHost, Endpoint::Server)).unwrap();
    let dst = std::thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        server.accept(sock).err()
    });
    let client = TlsClient::new(&pki().client(), Some("localhost")).unwrap();
    let Err(err) = client.connect(connect(addr)) else {
        panic!("the source accepted a destination with the wrong name");
    };
    assert!(
        err.to_string().contains("not valid for host 'localhost'"),
        "{err}"
    );
    assert!(
        dst.join().unwrap().is_some(),
        "the destination saw the refusal"
    );
}
