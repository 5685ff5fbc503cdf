//! This side's certificate and key, and the CA the peer must chain to, read from PEM.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{Endpoint, provider, tls_error};
use crate::Result;

/// This side's certificate chain and private key, and the CA certificate(s) that the
/// peer's certificate must chain to.
///
/// The same credentials serve a [`TlsServer`](super::TlsServer) or a
/// [`TlsClient`](super::TlsClient); the certificate should carry the extended key usage
/// of its role (`serverAuth` or `clientAuth`) when it has that extension at all.
/// Checked when built: the key must match the certificate.
#[derive(Clone)]
pub struct TlsCredentials {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) roots: Arc<RootCertStore>,
}

impl TlsCredentials {
    /// Credentials from PEM text: `cert_pem` holds this side's certificate first, then any
    /// intermediate certificates; `key_pem` its private key (PKCS#8, PKCS#1 or SEC1, not
    /// encrypted); `ca_pem` one or more CA certificates.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<Self> {
        Self::parse(
            (cert_pem, "the certificate PEM"),
            (key_pem, "the private key PEM"),
            (ca_pem, "the CA PEM"),
        )
    }

    /// Credentials from three PEM files (see [`from_pem`](Self::from_pem)). An error names
    /// the file and what is wrong with it.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                tls_error(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))
            })
        };
        let (cert_pem, key_pem, ca_pem) = (
            read(cert, "certificate")?,
            read(key, "private key")?,
            read(ca, "CA certificate")?,
        );
        Self::parse(
            (&cert_pem, &cert.display().to_string()),
            (&key_pem, &key.display().to_string()),
            (&ca_pem, &ca.display().to_string()),
        )
    }

    /// Credentials from a directory laid out like QEMU's `tls-creds-x509` `dir`:
    /// `ca-cert.pem`, and `server-cert.pem` with `server-key.pem` for
    /// [`Endpoint::Server`], `client-cert.pem` with `client-key.pem` for
    /// [`Endpoint::Client`].
    ///
    /// QEMU's optional `ca-crl.pem` is not supported: if the directory has one, this fails
    /// rather than accept certificates that the list revokes.
    pub fn from_qemu_dir(dir: &Path, endpoint: Endpoint) -> Result<Self> {
        let crl = dir.join("ca-crl.pem");
        if crl.exists() {
            return Err(tls_error(format!(
                "{} is present, but certificate revocation lists are not supported: \
                 remove it to use this directory without revocation checks",
                crl.display()
            )));
        }
        let role = endpoint.name();
        Self::from_pem_files(
            &dir.join(format!("{role}-cert.pem")),
            &dir.join(format!("{role}-key.pem")),
            &dir.join("ca-cert.pem"),
        )
    }

    /// The end-entity certificate first, then the intermediates.
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    fn parse(cert: (&[u8], &str), key: (&[u8], &str), ca: (&[u8], &str)) -> Result<Self> {
        let chain = certificates(cert.0, cert.1)?;
        let private_key = private_key(key.0, key.1)?;
        let mut roots = RootCertStore::empty();
        for (i, ca_cert) in certificates(ca.0, ca.1)?.into_iter().enumerate() {
            roots.add(ca_cert).map_err(|e| {
                tls_error(format!(
                    "certificate {} in {} is not a usable CA certificate: {e}",
                    i + 1,
                    ca.1
                ))
            })?;
        }
        let key = CertifiedKey::from_der(chain, private_key, &provider()).map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => {
                    format!("it does not belong to the certificate in {}", cert.1)
                }
                e => e.to_string(),
            };
            tls_error(format!("the private key in {} is not usable: {why}", key.1))
        })?;
        Ok(TlsCredentials {
            key: Arc::new(key),
            roots: Arc::new(roots),
        })
    }
}

impl fmt::Debug for TlsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCredentials")
            .field("chain_len", &self.key.cert.len())
            .field("ca_count", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// Every `CERTIFICATE` block in `pem`; at least one.
fn certificates(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{source} is not valid PEM: {}", pem_problem(&e))))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "no certificate in {source} (expected a '-----BEGIN CERTIFICATE-----' block)"
        )));
    }
    Ok(certs)
}

/// The first private key block in `pem`.
fn private_key(pem: &[u8], source: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound if contains(pem, b"ENCRYPTED") => tls_error(format!(
            "the private key in {source} is encrypted; it must be stored without a passphrase"
        )),
        pem::Error::NoItemsFound => tls_error(format!(
            "no private key in {source} (expected a '-----BEGIN PRIVATE KEY-----', \
             'RSA PRIVATE KEY' or 'EC PRIVATE KEY' block)"
        )),
        e => tls_error(format!("{source} is not valid PEM: {}", pem_problem(&e))),
    })
}

fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing '{}'", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line '{}'", String::from_utf8_lossy(line))
        }
        e => e.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
