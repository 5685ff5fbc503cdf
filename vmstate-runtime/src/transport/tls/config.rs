//! The two ends: rustls configurations built from [`TlsCredentials`].

use std::fmt;
use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;

use super::stream::TlsStream;
use super::verify::ChainOnly;
use super::{Endpoint, TlsCredentials, handshake, provider, tls_error};
use crate::Result;

/// The listening side of migration TLS (the destination).
///
/// Always requires the client to present a certificate that chains to the CA of its
/// credentials, like QEMU's `tls-creds-x509` with `endpoint=server,verify-peer=on`.
/// One `TlsServer` serves any number of connections.
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
}

impl TlsServer {
    /// A server that presents `credentials`' certificate and accepts clients whose
    /// certificate chains to `credentials`' CA.
    pub fn new(credentials: &TlsCredentials) -> Result<TlsServer> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&credentials.roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| tls_error(format!("cannot check client certificates: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("cannot configure the TLS server: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(
                &credentials.key,
            ))));
        // One connection per migration: nothing to resume.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(TlsServer {
            config: Arc::new(config),
        })
    }

    /// Runs the TLS handshake on an accepted connection and returns once both sides have
    /// checked each other's certificate, so nothing is read from a refused client.
    ///
    /// Timeouts already set on `sock` bound the handshake. Errors:
    /// [`ErrorKind::Tls`](crate::ErrorKind::Tls) saying why the handshake failed (the
    /// client sent no certificate, its certificate is not signed by the CA, has expired,
    /// the client refused ours, it does not speak TLS, ...), or
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) with the socket's error; a timeout keeps its
    /// kind (see [`is_timeout`](crate::transport::is_timeout)).
    pub fn accept(&self, sock: TcpStream) -> Result<TlsStream> {
        let conn = rustls::ServerConnection::new(Arc::clone(&self.config))
            .map_err(|e| tls_error(format!("cannot start a TLS session: {e}")))?;
        handshake::run(conn.into(), sock, Endpoint::Server)
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

/// The connecting side of migration TLS (the source).
///
/// Presents the certificate of its credentials and checks that the server's chains to
/// their CA; with a hostname, like QEMU's `tls-hostname`, the server's certificate must
/// also name that host (a DNS name or an IP address in its subject alternative names).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    hostname: Option<ServerName<'static>>,
}

impl TlsClient {
    /// A client that presents `credentials`' certificate and accepts servers whose
    /// certificate chains to `credentials`' CA and, if `hostname` is given, is valid for
    /// it. `hostname` is a DNS name or an IP address; it is also sent as SNI (a DNS
    /// name only). Without it, any name is accepted: only the chain is checked.
    pub fn new(credentials: &TlsCredentials, hostname: Option<&str>) -> Result<TlsClient> {
        let hostname = hostname
            .map(|h| {
                ServerName::try_from(h.to_owned()).map_err(|_| {
                    tls_error(format!(
                        "'{h}' is neither a valid DNS name nor an IP address"
                    ))
                })
            })
            .transpose()?;
        let provider = provider();
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&credentials.roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| tls_error(format!("cannot check server certificates: {e}")))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("cannot configure the TLS client: {e}")))?;
        let builder = match hostname {
            Some(_) => builder.with_webpki_verifier(webpki),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki))),
        };
        let mut config = builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            Arc::clone(&credentials.key),
        )));
        config.resumption = Resumption::disabled();
        Ok(TlsClient {
            config: Arc::new(config),
            hostname,
        })
    }

    /// Runs the TLS handshake on a connected socket and returns once this side has
    /// checked the server's certificate and sent its own.
    ///
    /// With TLS 1.3 the server checks the client's certificate after the client has
    /// finished its part, so a server that refuses it shows as an error of a later read
    /// or write, which says so ("the server refused our certificate (alert: ...)"),
    /// rather than here.
    ///
    /// Timeouts already set on `sock` bound the handshake. Errors as for
    /// [`TlsServer::accept`].
    pub fn connect(&self, sock: TcpStream) -> Result<TlsStream> {
        let name = match &self.hostname {
            Some(name) => name.clone(),
            // Checked by chain only; the address stands in for a name (no SNI is sent).
            None => ServerName::IpAddress(sock.peer_addr()?.ip().into()),
        };
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| tls_error(format!("cannot start a TLS session: {e}")))?;
        handshake::run(conn.into(), sock, Endpoint::Client)
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("hostname", &self.hostname.as_ref().map(|h| h.to_str()))
            .finish_non_exhaustive()
    }
}
