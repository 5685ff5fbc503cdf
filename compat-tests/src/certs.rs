//! Throwaway certificates for TLS tests, generated with rcgen (nothing is committed).
//!
//! [`TestPki::generate`] writes four directories, each a complete QEMU `tls-creds-x509`
//! directory (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`, `client-cert.pem`,
//! `client-key.pem`) that real QEMU (gnutls) accepts as `dir=` for either endpoint:
//!
//! | [`Set`] | CA | server certificate | client certificate |
//! | --- | --- | --- | --- |
//! | [`Set::Good`] | the test CA | `localhost`, `127.0.0.1` | valid |
//! | [`Set::OtherCa`] | an unrelated CA | `localhost`, `127.0.0.1`, signed by it | signed by it |
//! | [`Set::ExpiredClient`] | the test CA | as in `Good` | expired two days ago |
//! | [`Set::WrongHost`] | the test CA | valid only for `other.example` | as in `Good` |
//!
//! [`TestPki::impostor`] combines the unrelated CA's certificate and key with trust in the
//! test CA: a peer that a good peer refuses but that would itself accept the good peer.
//!
//! Certificates are valid from yesterday for a year (ECDSA P-256 keys). The CA has key
//! usages keyCertSign and cRLSign; the end-entity certificates digitalSignature and
//! keyEncipherment, with extended key usage serverAuth or clientAuth.
//!
//! ```no_run
//! use compat_tests::certs::{Set, TestPki};
//! use vmstate::transport::tls::{Endpoint, TlsServer};
//!
//! let pki = TestPki::generate(std::path::Path::new("/tmp/pki")).unwrap();
//! let server = TlsServer::new(&pki.credentials(Set::Good, Endpoint::Server)).unwrap();
//! // QEMU: -object tls-creds-x509,id=tls0,endpoint=server,verify-peer=on,dir=<this>
//! let qemu_dir = pki.dir_of(Set::Good);
//! # let _ = (server, qemu_dir);
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use vmstate::transport::tls::{Endpoint, TlsCredentials};

/// One of the directories that [`TestPki::generate`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// Everything valid: both sides accept each other.
    Good,
    /// A CA unrelated to the test CA, with its own server and client certificates: a
    /// peer with these is refused by one with [`Good`](Set::Good) credentials.
    OtherCa,
    /// The test CA and server certificate, with a client certificate signed by the test
    /// CA that has expired.
    ExpiredClient,
    /// The test CA and client certificate, with a server certificate signed by the test
    /// CA for `other.example` only (not `localhost` or `127.0.0.1`).
    WrongHost,
}

impl Set {
    /// Every set.
    pub const ALL: [Set; 4] = [Set::Good, Set::OtherCa, Set::ExpiredClient, Set::WrongHost];

    /// The directory name under [`TestPki::dir`].
    pub fn dir_name(self) -> &'static str {
        match self {
            Set::Good => "good",
            Set::OtherCa => "other-ca",
            Set::ExpiredClient => "expired-client",
            Set::WrongHost => "wrong-host",
        }
    }
}

/// Test certificates written to a directory; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct TestPki {
    dir: PathBuf,
}

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

/// A CA: its certificate and what signs with it.
struct Ca {
    cert: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// Generates every [`Set`] under `dir` (created if missing; files already there are
    /// overwritten).
    pub fn generate(dir: &Path) -> io::Result<TestPki> {
        let now = OffsetDateTime::now_utc();
        let valid = (now - Duration::days(1), now + Duration::days(365));

        let ca = make_ca("vmstate test CA", valid).map_err(io::Error::other)?;
        let other_ca = make_ca("unrelated test CA", valid).map_err(io::Error::other)?;
        let leaf = |ca: &Ca, role: Endpoint, names: &[&str], validity| {
            make_leaf(ca, role, names, validity).map_err(io::Error::other)
        };
        let localhost = ["localhost", "127.0.0.1"];
        let server = leaf(&ca, Endpoint::Server, &localhost, valid)?;
        let client = leaf(&ca, Endpoint::Client, &[], valid)?;
        let expired = (now - Duration::days(30), now - Duration::days(2));

        let pki = TestPki {
            dir: dir.to_owned(),
        };
        pki.write(Set::Good, &ca.cert, &server, &client)?;
        pki.write(
            Set::OtherCa,
            &other_ca.cert,
            &leaf(&other_ca, Endpoint::Server, &localhost, valid)?,
            &leaf(&other_ca, Endpoint::Client, &[], valid)?,
        )?;
        pki.write(
            Set::ExpiredClient,
            &ca.cert,
            &server,
            &leaf(&ca, Endpoint::Client, &[], expired)?,
        )?;
        pki.write(
            Set::WrongHost,
            &ca.cert,
            &leaf(&ca, Endpoint::Server, &["other.example"], valid)?,
            &client,
        )?;
        Ok(pki)
    }

    /// The directory holding one subdirectory per [`Set`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The QEMU `tls-creds-x509` directory of `set`.
    pub fn dir_of(&self, set: Set) -> PathBuf {
        self.dir.join(set.dir_name())
    }

    /// The credentials of `endpoint` in `set`, read from its directory.
    ///
    /// # Panics
    ///
    /// If the files cannot be read back.
    pub fn credentials(&self, set: Set, endpoint: Endpoint) -> TlsCredentials {
        TlsCredentials::from_qemu_dir(&self.dir_of(set), endpoint)
            .unwrap_or_else(|e| panic!("test credentials {set:?} {endpoint:?}: {e}"))
    }

    /// The good server's credentials.
    pub fn server(&self) -> TlsCredentials {
        self.credentials(Set::Good, Endpoint::Server)
    }

    /// The good client's credentials.
    pub fn client(&self) -> TlsCredentials {
        self.credentials(Set::Good, Endpoint::Client)
    }

    /// An impostor of `endpoint`: its certificate and key from [`Set::OtherCa`], but it
    /// trusts the test CA. A good peer refuses it, while it would accept the good peer.
    ///
    /// # Panics
    ///
    /// If the files cannot be read back.
    pub fn impostor(&self, endpoint: Endpoint) -> TlsCredentials {
        let (other, good) = (self.dir_of(Set::OtherCa), self.dir_of(Set::Good));
        let role = match endpoint {
            Endpoint::Server => "server",
            Endpoint::Client => "client",
        };
        TlsCredentials::from_pem_files(
            &other.join(format!("{role}-cert.pem")),
            &other.join(format!("{role}-key.pem")),
            &good.join("ca-cert.pem"),
        )
        .unwrap_or_else(|e| panic!("impostor credentials {endpoint:?}: {e}"))
    }

    fn write(&self, set: Set, ca: &str, server: &Pem, client: &Pem) -> io::Result<()> {
        let dir = self.dir_of(set);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("ca-cert.pem"), ca)?;
        for (role, pem) in [("server", server), ("client", client)] {
            fs::write(dir.join(format!("{role}-cert.pem")), &pem.cert)?;
            let key = dir.join(format!("{role}-key.pem"));
            fs::write(&key, &pem.key)?;
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vmstate tests");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn make_ca(
    common_name: &str,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> Result<Ca, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?.pem();
    Ok(Ca {
        cert,
        issuer: Issuer::new(params, key),
    })
}

/// A server certificate for `names` (DNS names or IP addresses), or a client certificate.
fn make_leaf(
    ca: &Ca,
    role: Endpoint,
    names: &[&str],
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> Result<Pem, rcgen::Error> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone())?;
    let (common_name, usage) = match role {
        Endpoint::Server => (
            names.first().map_or("server", String::as_str),
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        Endpoint::Client => ("vmstate test client", ExtendedKeyUsagePurpose::ClientAuth),
    };
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?.pem();
    Ok(Pem {
        cert,
        key: key.serialize_pem(),
    })
}
