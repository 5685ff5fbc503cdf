//! An authenticated TLS connection: plaintext in, plaintext out.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::split::{TlsReader, TlsWriter, connection_ended};
use crate::transport::Connection;

/// A TLS connection whose handshake is complete: both sides have checked each other's
/// certificate. Made by [`TlsServer::accept`](super::TlsServer::accept) and
/// [`TlsClient::connect`](super::TlsClient::connect).
///
/// Reads and writes plaintext from one thread; [`Connection::split`] gives halves for two
/// threads. Dropping the stream (or its writing half) sends close_notify, so the peer
/// can tell the end of the data from a cut connection; [`close`](Self::close) does it
/// explicitly and reports errors.
pub struct TlsStream {
    reader: TlsReader,
    writer: TlsWriter,
}

impl TlsStream {
    pub(super) fn new(reader: TlsReader, writer: TlsWriter) -> Self {
        TlsStream { reader, writer }
    }

    /// The peer's address, if the socket knew it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.reader.peer_addr()
    }

    /// The certificate chain the peer presented, its own certificate first (DER).
    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        let st = self.reader.shared().lock();
        st.conn
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// The negotiated protocol and cipher suite, such as
    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`, for logs.
    pub fn session_summary(&self) -> String {
        let st = self.reader.shared().lock();
        let version = st
            .conn
            .protocol_version()
            .map_or_else(|| "unknown version".to_owned(), |v| format!("{v:?}"));
        let suite = st.conn.negotiated_cipher_suite().map_or_else(
            || "unknown cipher suite".to_owned(),
            |s| format!("{:?}", s.suite()),
        );
        format!("{version} {suite}")
    }

    /// Sends close_notify after everything written so far and shuts down the sending
    /// direction of the socket; reading goes on. See [`TlsWriter::close`].
    pub fn close(&mut self) -> io::Result<()> {
        self.writer.close()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl TlsStream {
    /// A write error, explained by the peer's last words when it ended the connection.
    fn write_error(&mut self, e: io::Error) -> io::Error {
        if connection_ended(&e) {
            self.reader.probe_after_write_error().unwrap_or(e)
        } else {
            e
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf).map_err(|e| self.write_error(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().map_err(|e| self.write_error(e))
    }
}

impl Connection for TlsStream {
    type Reader = TlsReader;
    type Writer = TlsWriter;

    /// Sets the read and write timeouts of the TCP socket, which both halves share.
    fn set_io_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let sock = self.reader.socket();
        sock.set_read_timeout(timeout)?;
        sock.set_write_timeout(timeout)
    }

    fn split(self) -> io::Result<(TlsReader, TlsWriter)> {
        Ok((self.reader, self.writer))
    }
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.peer_addr())
            .finish_non_exhaustive()
    }
}
