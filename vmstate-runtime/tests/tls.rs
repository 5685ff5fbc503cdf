//! Mutual TLS over loopback TCP: handshakes, refusals and why, both halves at once,
//! timeouts, and the end of a session.
//!
//! Every socket gets a generous timeout as a safety net, so a test that would hang fails
//! with a timeout error instead. No test asserts how long anything took.

#![cfg(feature = "tls")]
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use vmstate::transport::tls::{
    CertificateDer, Endpoint, TlsClient, TlsCredentials, TlsServer, TlsStream,
};
use vmstate::transport::{Connection, is_timeout};
use vmstate::{Error, ErrorKind};

// The same generator compat-tests uses (vmstate-runtime must not depend on compat-tests).
#[allow(dead_code)]
#[path = "../../compat-tests/src/certs.rs"]
mod certs;
use certs::{Set, TestPki};

const SAFETY_TIMEOUT: Duration = Duration::from_secs(60);

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // One directory per process (test binaries may run side by side); those of
        // processes that have ended go.
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix("tls-test-pki-"));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("tls-test-pki-{}", std::process::id()));
        TestPki::generate(&dir).expect("generate test certificates")
    })
}

fn safety_timeouts(sock: &TcpStream) {
    sock.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
}

/// Runs `server` on a thread against `client` over loopback: `(client result, server
/// result)`.
fn handshake(
    server: &TlsCredentials,
    client: &TlsClient,
) -> (vmstate::Result<TlsStream>, vmstate::Result<TlsStream>) {
    let server = TlsServer::new(server).unwrap();
    with_server(
        move |sock| server.accept(sock),
        |addr| {
            let sock = TcpStream::connect(addr).unwrap();
            safety_timeouts(&sock);
            client.connect(sock)
        },
    )
}

/// Accepts one connection on a thread and runs `server` on it while `client` runs here.
fn with_server<S: Send, C>(
    server: impl FnOnce(TcpStream) -> S + Send,
    client: impl FnOnce(SocketAddr) -> C,
) -> (C, S) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::scope(|s| {
        let srv = s.spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            safety_timeouts(&sock);
            server(sock)
        });
        let c = client(addr);
        (c, srv.join().unwrap())
    })
}

fn good_pair() -> (TlsStream, TlsStream) {
    let client = TlsClient::new(&pki().client(), Some("localhost")).unwrap();
    let (c, s) = handshake(&pki().server(), &client);
    (c.unwrap(), s.unwrap())
}

/// The TLS error's text; panics on success or another kind of error.
fn tls_detail<T>(r: vmstate::Result<T>) -> String {
    match r {
        Ok(_) => panic!("the handshake succeeded"),
        Err(e) => match e.kind() {
            ErrorKind::Tls { detail } => detail.clone(),
            _ => panic!("not a TLS error: {e}"),
        },
    }
}

/// What a client whose handshake the server refused learns: the handshake error, or with
/// TLS 1.3 (where the server checks the client last) the error of its first read.
fn client_refusal(r: vmstate::Result<TlsStream>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(mut stream) => {
            let err = stream
                .read(&mut [0; 16])
                .expect_err("a refused client must not read data");
            assert!(!is_timeout(&err), "the refused client hung: {err}");
            err.to_string()
        }
    }
}

fn assert_contains(text: &str, wanted: &str) {
    assert!(text.contains(wanted), "expected {wanted:?} in: {text}");
}

#[test]
fn good_peers_exchange_data_both_ways() {
    let (mut client, mut server) = good_pair();
    assert!(client.peer_addr().is_some() && server.peer_addr().is_some());
    thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0; 5];
            server.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            server.write_all(b"HELLO, CLIENT").unwrap();
            server.flush().unwrap();
        });
        client.write_all(b"hello").unwrap();
        client.flush().unwrap();
        let mut buf = [0; 13];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HELLO, CLIENT");
    });

    // Each side saw the other's certificate.
    let chain = |set, endpoint| pem_chain(&pki().dir_of(set), endpoint);
    assert_eq!(
        client.peer_certificates(),
        chain(Set::Good, Endpoint::Server)
    );
    assert_eq!(
        server.peer_certificates(),
        chain(Set::Good, Endpoint::Client)
    );
    assert_contains(&client.session_summary(), "TLS");
}

fn pem_chain(dir: &Path, endpoint: Endpoint) -> Vec<CertificateDer<'static>> {
    TlsCredentials::from_qemu_dir(dir, endpoint)
        .unwrap()
        .certificate_chain()
        .to_vec()
}

/// Byte `i` of an endless pseudo-random stream (the same whatever the chunking).
struct Pattern {
    word_index: u64,
    word: u64,
}

impl Pattern {
    fn new() -> Self {
        Pattern {
            word_index: u64::MAX,
            word: 0,
        }
    }

    fn byte(&mut self, i: u64) -> u8 {
        if i >> 3 != self.word_index {
            self.word_index = i >> 3;
            // splitmix64
            let mut z = self.word_index.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            self.word = z ^ (z >> 31);
        }
        (self.word >> ((i & 7) * 8)) as u8
    }

    fn fill(&mut self, pos: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(pos + i as u64);
        }
    }
}

/// The destination's small reply number `seq`: length, sequence number, payload.
fn reply(seq: u32) -> Vec<u8> {
    let len = (seq % 61) as usize;
    let mut msg = Vec::with_capacity(8 + len);
    msg.extend_from_slice(&(len as u32).to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend((0..len).map(|i| (seq as usize + i) as u8));
    msg
}

#[test]
fn split_halves_carry_a_large_stream_and_small_replies_at_once() {
    const STREAM: u64 = 64 << 20;
    const REPLIES: u32 = 20_000;
    let (client, server) = good_pair();
    let (mut src_read, mut src_write) = client.split().unwrap();
    let (mut dst_read, mut dst_write) = server.split().unwrap();

    thread::scope(|s| {
        // Source: the stream, in chunks of 1 byte to 1 MiB.
        let sent = s.spawn(move || {
            let (mut pattern, mut buf) = (Pattern::new(), vec![0; 1 << 20]);
            let (mut pos, mut size, mut crc) = (0u64, 1usize, 0u32);
            while pos < STREAM {
                let n = size.min((STREAM - pos) as usize);
                pattern.fill(pos, &mut buf[..n]);
                src_write.write_all(&buf[..n]).unwrap();
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                pos += n as u64;
                size = (size * 7 + 4093) % (1 << 20) + 1;
            }
            src_write.flush().unwrap();
            src_write.close().unwrap();
            crc
        });
        // Destination: reads and checks every byte of it.
        let received = s.spawn(move || {
            let (mut pattern, mut buf, mut want) =
                (Pattern::new(), vec![0; 300_000], vec![0; 300_000]);
            let (mut pos, mut crc) = (0u64, 0u32);
            loop {
                let n = dst_read.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                pattern.fill(pos, &mut want[..n]);
                if buf[..n] != want[..n] {
                    let at = (0..n).find(|&i| buf[i] != want[i]).unwrap();
                    panic!("stream byte {} differs", pos + at as u64);
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                pos += n as u64;
            }
            (pos, crc)
        });
        // Destination: many small replies meanwhile.
        s.spawn(move || {
            for seq in 0..REPLIES {
                dst_write.write_all(&reply(seq)).unwrap();
                if seq % 100 == 0 {
                    dst_write.flush().unwrap();
                }
            }
            dst_write.flush().unwrap();
            drop(dst_write); // close_notify
        });
        // Source: reads the replies.
        let replies = s.spawn(move || {
            let mut seq = 0;
            loop {
                let mut head = [0; 8];
                match src_read.read(&mut head[..1]).unwrap() {
                    0 => break,
                    _ => src_read.read_exact(&mut head[1..]).unwrap(),
                }
                let len = u32::from_be_bytes(head[..4].try_into().unwrap());
                let mut msg = head.to_vec();
                msg.resize(8 + len as usize, 0);
                src_read.read_exact(&mut msg[8..]).unwrap();
                assert_eq!(msg, reply(seq), "reply {seq}");
                seq += 1;
            }
            seq
        });

        let sent_crc = sent.join().unwrap();
        assert_eq!(received.join().unwrap(), (STREAM, sent_crc));
        assert_eq!(replies.join().unwrap(), REPLIES);
    });
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let server = TlsServer::new(&pki().server()).unwrap();
    let (client_err, server_result) = with_server(
        move |sock| server.accept(sock),
        |addr| {
            // A plain rustls client that presents no certificate.
            let config = raw_client_config(false, rustls::ALL_VERSIONS);
            let sock = TcpStream::connect(addr).unwrap();
            safety_timeouts(&sock);
            let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap());
            let mut stream = rustls::StreamOwned::new(conn.unwrap(), sock);
            let err = stream.read(&mut [0; 16]).expect_err("refused, no data");
            assert!(!is_timeout(&err), "the refused client hung: {err}");
            err.to_string()
        },
    );
    assert_contains(
        &tls_detail(server_result),
        "the client sent no certificate (this side requires one signed by the configured CA)",
    );
    assert_contains(&client_err, "CertificateRequired");
}

/// A plain rustls client that trusts the test CA, presenting the good client certificate
/// or none.
fn raw_client_config(
    with_client_cert: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki().dir_of(Set::Good).join("ca-cert.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let config = match with_client_cert {
        false => builder.with_no_client_auth(),
        true => {
            let dir = pki().dir_of(Set::Good);
            let chain = CertificateDer::pem_file_iter(dir.join("client-cert.pem"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("client-key.pem"))
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let client = TlsClient::new(&pki().impostor(Endpoint::Client), Some("localhost")).unwrap();
    let (c, s) = handshake(&pki().server(), &client);
    let server_says = tls_detail(s);
    assert_contains(
        &server_says,
        "the client's certificate is not signed by the configured CA (UnknownIssuer)",
    );
    assert_contains(&server_says, "handshake with client 127.0.0.1:");
    assert_contains(
        &client_refusal(c),
        "the server refused our certificate (alert: UnknownCA)",
    );
}

#[test]
fn a_refused_client_learns_why_when_it_writes() {
    // With TLS 1.3 the client's handshake is over before the server checks its
    // certificate; a source that only writes still learns why it was refused.
    let client = TlsClient::new(&pki().impostor(Endpoint::Client), None).unwrap();
    let (c, s) = handshake(&pki().server(), &client);
    assert!(s.is_err());
    let mut c = match c {
        Ok(c) => c,
        Err(e) => return assert_contains(&e.to_string(), "refused our certificate"),
    };
    let chunk = vec![0; 1 << 20];
    let err = (0..64)
        .find_map(|_| c.write_all(&chunk).and_then(|()| c.flush()).err())
        .expect("writing to a server that refused us fails");
    assert_contains(
        &err.to_string(),
        "the server refused our certificate (alert: UnknownCA)",
    );

    // Split: once the reading half has met the alert, the writing half reports it too.
    let (c, _) = handshake(&pki().server(), &client);
    let Ok(c) = c else { return };
    let (mut reader, mut writer) = c.split().unwrap();
    let read_err = reader.read(&mut [0; 8]).expect_err("refused");
    assert_contains(&read_err.to_string(), "refused our certificate");
    let err = (0..64)
        .find_map(|_| writer.write_all(&chunk).and_then(|()| writer.flush()).err())
        .expect("writing to a server that refused us fails");
    assert_contains(
        &err.to_string(),
        "the server refused our certificate (alert: UnknownCA)",
    );
}

#[test]
fn an_expired_client_certificate_is_refused() {
    let creds = pki().credentials(Set::ExpiredClient, Endpoint::Client);
    let client = TlsClient::new(&creds, Some("localhost")).unwrap();
    let (c, s) = handshake(&pki().server(), &client);
    assert_contains(
        &tls_detail(s),
        "the client's certificate has expired (valid until ",
    );
    assert_contains(&client_refusal(c), "the server refused our certificate");
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let client = TlsClient::new(&pki().client(), None).unwrap();
    let (c, s) = handshake(&pki().impostor(Endpoint::Server), &client);
    let client_says = tls_detail(c);
    assert_contains(&client_says, "handshake with server 127.0.0.1:");
    assert_contains(
        &client_says,
        "the server's certificate is not signed by the configured CA (UnknownIssuer)",
    );
    assert_contains(
        &tls_detail(s),
        "the client refused our certificate (alert: UnknownCA)",
    );
}

#[test]
fn the_server_certificate_must_name_the_requested_host() {
    let wrong_host = pki().credentials(Set::WrongHost, Endpoint::Server);
    let client = TlsClient::new(&pki().client(), Some("localhost")).unwrap();
    let (c, s) = handshake(&wrong_host, &client);
    assert_contains(
        &tls_detail(c),
        "the server's certificate is not valid for host 'localhost' (it is valid for other.example)",
    );
    assert_contains(&tls_detail(s), "the client refused our certificate");

    // The name it has, though the connection goes to 127.0.0.1.
    let client = TlsClient::new(&pki().client(), Some("other.example")).unwrap();
    let (c, s) = handshake(&wrong_host, &client);
    c.unwrap();
    s.unwrap();

    // Without a hostname only the chain counts.
    let client = TlsClient::new(&pki().client(), None).unwrap();
    let (c, s) = handshake(&wrong_host, &client);
    c.unwrap();
    s.unwrap();

    // An IP address SAN.
    let client = TlsClient::new(&pki().client(), Some("127.0.0.1")).unwrap();
    let (c, s) = handshake(&pki().server(), &client);
    c.unwrap();
    s.unwrap();
    let client = TlsClient::new(&pki().client(), Some("127.0.0.2")).unwrap();
    let (c, _) = handshake(&pki().server(), &client);
    assert_contains(&tls_detail(c), "not valid for host '127.0.0.2'");
}

#[test]
fn a_peer_sending_a_plain_migration_stream_is_refused() {
    let server = TlsServer::new(&pki().server()).unwrap();
    let (client_got, server_result) = with_server(
        move |sock| server.accept(sock),
        |addr| {
            let mut sock = TcpStream::connect(addr).unwrap();
            safety_timeouts(&sock);
            sock.write_all(b"QEVM\0\0\0\x03\x05\0\0\0\x0cpc-q35-10.0")
                .unwrap();
            // Whatever comes back (an alert), the connection ends.
            let mut got = Vec::new();
            match sock.read_to_end(&mut got) {
                Ok(_) => {}
                Err(e) => assert!(!is_timeout(&e), "the plain client hung: {e}"),
            }
            got
        },
    );
    assert_contains(
        &tls_detail(server_result),
        "the client sent a plain migration stream (it starts with \"QEVM\") instead of a TLS handshake",
    );
    // If anything came back, it is a TLS alert record.
    if let Some(&first) = client_got.first() {
        assert_eq!(first, 21, "{client_got:?}");
    }
}

#[test]
fn a_tls12_peer_works() {
    let server = TlsServer::new(&pki().server()).unwrap();
    let (client_read, server_read) = with_server(
        move |sock| {
            let mut stream = server.accept(sock).unwrap();
            stream.write_all(b"from server").unwrap();
            stream.flush().unwrap();
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).unwrap();
            (buf, stream.session_summary())
        },
        |addr| {
            let config = raw_client_config(true, &[&rustls::version::TLS12]);
            let sock = TcpStream::connect(addr).unwrap();
            safety_timeouts(&sock);
            let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap());
            let mut stream = rustls::StreamOwned::new(conn.unwrap(), sock);
            let mut buf = [0; 11];
            stream.read_exact(&mut buf).unwrap();
            stream.write_all(b"from client").unwrap();
            stream.conn.send_close_notify();
            stream.flush().unwrap();
            buf
        },
    );
    assert_eq!(&client_read, b"from server");
    assert_eq!(server_read.0, b"from client");
    assert_contains(&server_read.1, "TLSv1_2");
}

#[test]
fn a_handshake_without_an_answer_times_out() {
    // A server that accepts TCP and never answers.
    let (err, ()) = with_server(
        |mut sock| {
            // Wait for the client to give up.
            let _ = io::copy(&mut sock, &mut io::sink());
        },
        |addr| {
            let sock = TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let client = TlsClient::new(&pki().client(), Some("localhost")).unwrap();
            client.connect(sock).expect_err("nobody answers")
        },
    );
    assert_timeout(&err, "TLS handshake with server 127.0.0.1:");

    // And a client that connects and sends nothing.
    let server = TlsServer::new(&pki().server()).unwrap();
    let (_, err) = with_server(
        move |sock| {
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            server.accept(sock).expect_err("nothing sent")
        },
        |addr| {
            let mut sock = TcpStream::connect(addr).unwrap();
            safety_timeouts(&sock);
            let _ = sock.read(&mut [0; 16]);
        },
    );
    assert_timeout(&err, "TLS handshake with client 127.0.0.1:");
}

fn assert_timeout(err: &Error, wanted: &str) {
    match err.kind() {
        ErrorKind::Io(e) if is_timeout(e) => {}
        _ => panic!("not a timeout: {err}"),
    }
    assert_contains(&err.to_string(), wanted);
    assert_contains(&err.to_string(), "timed out");
}

#[test]
fn a_read_timeout_loses_nothing() {
    let (mut client, server) = good_pair();
    server
        .set_io_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut reader, _writer) = server.split().unwrap();
    let err = reader.read(&mut [0; 16]).expect_err("nothing sent yet");
    assert!(is_timeout(&err), "{err}");
    client.write_all(b"late").unwrap();
    client.flush().unwrap();
    let mut buf = [0; 4];
    read_exact_retrying(&mut reader, &mut buf);
    assert_eq!(&buf, b"late");
}

/// `read_exact` that goes on after timeouts.
fn read_exact_retrying(r: &mut impl Read, mut buf: &mut [u8]) {
    while !buf.is_empty() {
        match r.read(buf) {
            Ok(0) => panic!("end of stream"),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Copies `from` to `to` in small pieces with pauses, until either end closes.
fn trickle(mut from: TcpStream, mut to: TcpStream, piece: usize) {
    let mut buf = vec![0; piece];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn timeouts_in_the_middle_of_records_lose_nothing() {
    // client -> relay -> server; the relay passes 333 bytes at a time, so the server's
    // very short timeouts fall inside TLS records.
    const DATA: u64 = 96 * 1024;
    let server = TlsServer::new(&pki().server()).unwrap();
    let server_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server_listener.local_addr().unwrap();
    let received = thread::scope(|s| {
        let received = s.spawn(move || {
            let (sock, _) = server_listener.accept().unwrap();
            safety_timeouts(&sock);
            let stream = server.accept(sock).unwrap();
            stream
                .set_io_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let (mut reader, _writer) = stream.split().unwrap();
            let mut buf = vec![0; DATA as usize];
            read_exact_retrying(&mut reader, &mut buf);
            buf
        });
        let (c, ()) = with_server(
            |to_client| {
                let to_server = TcpStream::connect(server_addr).unwrap();
                let (a, b) = (
                    to_client.try_clone().unwrap(),
                    to_server.try_clone().unwrap(),
                );
                thread::scope(|s| {
                    s.spawn(move || trickle(b, a, 4096));
                    trickle(to_client, to_server, 333);
                });
            },
            |addr| {
                let sock = TcpStream::connect(addr).unwrap();
                safety_timeouts(&sock);
                let client = TlsClient::new(&pki().client(), None).unwrap();
                let mut stream = client.connect(sock).unwrap();
                let mut data = vec![0; DATA as usize];
                Pattern::new().fill(0, &mut data);
                stream.write_all(&data).unwrap();
                stream.flush().unwrap();
                let received = received.join().unwrap();
                (data, received)
            },
        );
        c
    });
    assert!(received.0 == received.1, "the data differs");
}

#[test]
fn close_notify_ends_the_stream_cleanly() {
    let (mut client, server) = good_pair();
    let (mut reader, _writer) = server.split().unwrap();
    client.write_all(b"last words").unwrap();
    client.close().unwrap();
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
    assert_eq!(reader.read(&mut [0; 8]).unwrap(), 0);
    // Writing after close is an error.
    let err = client.write(b"more").expect_err("closed");
    assert_contains(&err.to_string(), "closed by this side");

    // Dropping the writing half closes too; the other direction goes on.
    let (client, mut server) = good_pair();
    let (mut c_read, c_write) = client.split().unwrap();
    drop(c_write);
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert!(got.is_empty());
    server.write_all(b"still open").unwrap();
    server.flush().unwrap();
    let mut buf = [0; 10];
    c_read.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still open");
}

#[test]
fn an_abrupt_close_is_an_error() {
    let client = TlsClient::new(&pki().client(), Some("localhost")).unwrap();
    let server = TlsServer::new(&pki().server()).unwrap();
    let (client_stream, server_result) = with_server(
        move |sock| server.accept(sock),
        |addr| {
            let sock = TcpStream::connect(addr).unwrap();
            safety_timeouts(&sock);
            let raw = sock.try_clone().unwrap();
            let mut stream = client.connect(sock).unwrap();
            stream.write_all(b"partial").unwrap();
            stream.flush().unwrap();
            // The connection ends without close_notify.
            raw.shutdown(std::net::Shutdown::Write).unwrap();
            stream
        },
    );
    let mut server = server_result.unwrap();
    let mut buf = [0; 7];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"partial");
    let err = server.read(&mut [0; 8]).expect_err("no close_notify");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_contains(&err.to_string(), "without a TLS close_notify");
    drop(client_stream);
}

#[test]
fn credentials_errors_name_the_file_and_the_problem() {
    let good = pki().dir_of(Set::Good);
    let (cert, key, ca) = (
        good.join("client-cert.pem"),
        good.join("client-key.pem"),
        good.join("ca-cert.pem"),
    );
    let missing = good.join("no-such-file.pem");
    let e = tls_detail(TlsCredentials::from_pem_files(&missing, &key, &ca));
    assert_contains(&e, "cannot read the certificate file");
    assert_contains(&e, "no-such-file.pem");

    let e = tls_detail(TlsCredentials::from_pem_files(&key, &key, &ca));
    assert_contains(&e, &format!("no certificate in {}", key.display()));

    let e = tls_detail(TlsCredentials::from_pem_files(&cert, &cert, &ca));
    assert_contains(&e, &format!("no private key in {}", cert.display()));

    let e = tls_detail(TlsCredentials::from_pem_files(
        &cert,
        &good.join("server-key.pem"),
        &ca,
    ));
    assert_contains(&e, "does not belong to the certificate in");

    let e = tls_detail(TlsCredentials::from_pem(b"", b"", b""));
    assert_contains(&e, "no certificate in the certificate PEM");

    // The same files as PEM text work.
    let read = |p: &Path| std::fs::read(p).unwrap();
    TlsCredentials::from_pem(&read(&cert), &read(&key), &read(&ca)).unwrap();

    // A QEMU directory with a revocation list is refused rather than half-honoured.
    let dir = pki().dir().join("with-crl");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["ca-cert.pem", "client-cert.pem", "client-key.pem"] {
        std::fs::copy(good.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("ca-crl.pem"), "").unwrap();
    let e = tls_detail(TlsCredentials::from_qemu_dir(&dir, Endpoint::Client));
    assert_contains(&e, "ca-crl.pem is present");
    let e = tls_detail(TlsCredentials::from_qemu_dir(&dir, Endpoint::Server));
    assert_contains(&e, "ca-crl.pem");

    let e = tls_detail(TlsClient::new(&pki().client(), Some("not a host!")));
    assert_contains(
        &e,
        "'not a host!' is neither a valid DNS name nor an IP address",
    );
}

#[test]
fn a_source_that_never_reads_does_not_lose_the_end_of_its_stream() {
    // The destination's writer sends close_notify at once; the source never reads it.
    // Closing a socket with unread data resets the connection, and a reset throws away
    // what the destination has not read yet, unless the closing side drains it first.
    const STREAM: usize = 16 << 20;
    let (client, server) = good_pair();
    let (mut dst_read, dst_write) = server.split().unwrap();
    drop(dst_write);
    thread::scope(|s| {
        s.spawn(move || {
            let mut client = client;
            let chunk = vec![0x5a; 1 << 20];
            for _ in 0..STREAM / chunk.len() {
                client.write_all(&chunk).unwrap();
            }
            // Dropped without reading: close_notify, then close.
        });
        let mut buf = vec![0; 1 << 16];
        let mut total = 0;
        loop {
            match dst_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("after {total} bytes: {e}"),
            }
        }
        assert_eq!(total, STREAM);
    });
}

#[test]
fn a_peer_that_hangs_up_right_after_the_handshake_may_have_refused_us() {
    // QEMU checks the peer's certificate after the handshake and then closes the
    // connection without an alert; this server does the same.
    let server = TlsServer::new(&pki().server()).unwrap();
    let client = TlsClient::new(&pki().client(), None).unwrap();
    let (client_result, ()) = with_server(
        move |sock| {
            let raw = sock.try_clone().unwrap();
            let stream = server.accept(sock).unwrap();
            raw.shutdown(std::net::Shutdown::Both).unwrap();
            drop(stream);
        },
        |addr| {
            let sock = TcpStream::connect(addr).unwrap();
            safety_timeouts(&sock);
            client.connect(sock)
        },
    );
    let mut client = client_result.unwrap();
    let err = client.read(&mut [0; 8]).expect_err("hung up");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_contains(&err.to_string(), "it had sent nothing");
    assert_contains(&err.to_string(), "it may have refused our certificate");
}
