//! Driving a handshake to its end over a blocking socket, and saying why one failed.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

use super::explain::{Peer, explain, handshake_io, not_tls};
use super::split::{Fault, Shared, TlsReader, TlsWriter};
use super::stream::TlsStream;
use super::{Endpoint, tls_error};
use crate::transport::is_timeout;
use crate::{Error, ErrorKind, Result};

/// Runs the handshake of `conn` over `sock` as `me`; returns the stream once both sides
/// have authenticated each other. Timeouts already set on `sock` apply.
pub(super) fn run(conn: rustls::Connection, sock: TcpStream, me: Endpoint) -> Result<TlsStream> {
    let peer = Peer {
        role: me.peer(),
        addr: sock.peer_addr().ok(),
    };
    let shared = Arc::new(Shared::new(conn, sock, peer));
    let mut reader = TlsReader::new(Arc::clone(&shared));
    match drive(&shared, &mut reader) {
        Ok(()) => Ok(TlsStream::new(reader, TlsWriter::new(shared))),
        Err(fault) => {
            if let Fault::Tls(_) = fault {
                // Tell the peer why (rustls queued an alert), best effort.
                drop(shared.send(shared.lock()));
            }
            shared.shutdown_write();
            Err(describe(fault, peer, reader.first_bytes()))
        }
    }
}

fn drive(shared: &Shared, reader: &mut TlsReader) -> std::result::Result<(), Fault> {
    loop {
        let st = shared.lock();
        let handshaking = st.conn.is_handshaking();
        drop(shared.send(st).map_err(Fault::Io)?);
        if !handshaking {
            return Ok(());
        }
        if reader.fill().map_err(Fault::Io)? == 0 {
            return Err(Fault::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut st = shared.lock();
        while reader.has_input() && st.conn.is_handshaking() {
            reader.feed(&mut st)?;
        }
    }
}

fn describe(fault: Fault, peer: Peer, first_bytes: &[u8]) -> Error {
    let why = match fault {
        Fault::Io(e) if is_timeout(&e) => {
            return Error::new(ErrorKind::Io(io::Error::new(
                e.kind(),
                format!(
                    "TLS handshake with {peer} timed out: no answer within the socket's \
                     timeout (is the other side speaking TLS?)"
                ),
            )));
        }
        // Whatever went wrong, bytes that are not TLS explain it best.
        _ if not_tls(first_bytes, peer.role).is_some() => {
            not_tls(first_bytes, peer.role).unwrap_or_default()
        }
        Fault::Tls(e) => explain(&e, peer.role),
        Fault::Io(e) => handshake_io(&e, peer.role, !first_bytes.is_empty()),
    };
    tls_error(format!("handshake with {peer} failed: {why}"))
}
