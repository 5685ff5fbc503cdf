//! Mutual TLS for migration connections (rustls with the ring provider).
//!
//! Both ends prove who they are: each has a certificate chain and a private key
//! ([`TlsCredentials`]), and each refuses a peer whose certificate does not chain to the
//! configured CA. This is what QEMU does with a `tls-creds-x509` object created with
//! `verify-peer=on` on both sides (`-object tls-creds-x509,id=tls0,dir=DIR,endpoint=server,verify-peer=on`
//! and `migrate-set-parameters tls-creds=tls0`); [`TlsCredentials::from_qemu_dir`] reads
//! the same directory layout (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`,
//! `client-cert.pem`, `client-key.pem`). QEMU's `tls-hostname` parameter, the name the
//! server's certificate must be valid for, is the `hostname` of [`TlsClient::new`].
//! Cloud Hypervisor's `tls_dir` plays the same part as QEMU's directory.
//!
//! - [`TlsServer`] is the listening (destination) side. It always asks for a client
//!   certificate and refuses a client without one that chains to the CA.
//! - [`TlsClient`] is the connecting (source) side. It presents its certificate and checks
//!   the server's chain, and with a hostname also the name.
//! - Both complete the handshake before they return a [`TlsStream`], so a refused peer
//!   never gets to send or read migration state. A failed handshake is an
//!   [`ErrorKind::Tls`](crate::ErrorKind::Tls) whose text says why in words ("the peer's
//!   certificate is not signed by the configured CA", "the peer refused our certificate
//!   (alert: ...)").
//! - A [`TlsStream`] reads and writes plaintext, and implements
//!   [`Connection`]: [`Connection::split`] gives a
//!   [`TlsReader`] and a [`TlsWriter`] that two threads use at once (the source writes the
//!   stream while a thread reads the return path).
//!
//! Timeouts set on the `TcpStream` before the handshake bound the handshake too.
//!
//! ```no_run
//! use std::net::{TcpListener, TcpStream};
//! use std::path::Path;
//! use vmstate::transport::tls::{Endpoint, TlsClient, TlsCredentials, TlsServer};
//!
//! # fn main() -> vmstate::Result<()> {
//! // Destination.
//! let creds = TlsCredentials::from_qemu_dir(Path::new("/etc/pki/qemu"), Endpoint::Server)?;
//! let server = TlsServer::new(&creds)?;
//! let listener = TcpListener::bind("0.0.0.0:4444")?;
//! let (sock, _) = listener.accept()?;
//! let stream = server.accept(sock)?;
//! # drop(stream);
//!
//! // Source.
//! let creds = TlsCredentials::from_qemu_dir(Path::new("/etc/pki/qemu"), Endpoint::Client)?;
//! let client = TlsClient::new(&creds, Some("dst.example"))?;
//! let stream = client.connect(TcpStream::connect("dst.example:4444")?)?;
//! # drop(stream);
//! # Ok(())
//! # }
//! ```

mod config;
mod credentials;
mod explain;
mod handshake;
mod split;
mod stream;
mod verify;

use std::sync::Arc;

pub use config::{TlsClient, TlsServer};
pub use credentials::TlsCredentials;
pub use rustls_pki_types::CertificateDer;
pub use split::{TlsReader, TlsWriter};
pub use stream::TlsStream;

#[cfg(doc)]
use crate::transport::Connection;

/// Which end of a connection: the side that listens or the side that connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The listening side (QEMU's `endpoint=server`; the migration destination).
    Server,
    /// The connecting side (QEMU's `endpoint=client`; the migration source).
    Client,
}

impl Endpoint {
    /// The other end.
    fn peer(self) -> Endpoint {
        match self {
            Endpoint::Server => Endpoint::Client,
            Endpoint::Client => Endpoint::Server,
        }
    }

    /// `"server"` or `"client"`.
    fn name(self) -> &'static str {
        match self {
            Endpoint::Server => "server",
            Endpoint::Client => "client",
        }
    }
}

/// The crypto provider every configuration is built with.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An [`ErrorKind::Tls`](crate::ErrorKind::Tls) error.
fn tls_error(detail: impl Into<String>) -> crate::Error {
    crate::Error::new(crate::ErrorKind::Tls {
        detail: detail.into(),
    })
}
