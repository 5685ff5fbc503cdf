//! rustls errors said in words: why a handshake or a session failed.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use rustls::{AlertDescription, CertificateError, ExtendedKeyPurpose};
use rustls_pki_types::UnixTime;

use super::Endpoint;

/// The other end of a connection, for messages: its role and address.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    /// The peer's role (the opposite of this side's).
    pub(super) role: Endpoint,
    pub(super) addr: Option<SocketAddr>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "{} {addr}", self.role.name()),
            None => f.write_str(self.role.name()),
        }
    }
}

/// Why a TLS error happened, in a sentence about `peer`.
pub(super) fn explain(err: &rustls::Error, peer: Endpoint) -> String {
    let who = peer.name();
    match err {
        rustls::Error::NoCertificatesPresented => format!(
            "the {who} sent no certificate (this side requires one signed by the configured CA)"
        ),
        rustls::Error::InvalidCertificate(e) => certificate(e, peer),
        rustls::Error::AlertReceived(alert) => received_alert(*alert, who),
        rustls::Error::InvalidMessage(m) => format!(
            "the {who} sent something that is not a valid TLS message ({m:?}): does it speak TLS?"
        ),
        rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            format!("the {who} sent a TLS message out of order ({err})")
        }
        rustls::Error::PeerIncompatible(p) => {
            format!("the {who}'s TLS settings cannot work with this side's ({p:?})")
        }
        rustls::Error::PeerMisbehaved(p) => format!("the {who} broke the TLS protocol ({p:?})"),
        rustls::Error::DecryptError => format!(
            "a TLS record from the {who} failed to decrypt (corrupted in transit, or not sent by the {who})"
        ),
        rustls::Error::PeerSentOversizedRecord => {
            format!("the {who} sent a TLS record larger than the protocol allows")
        }
        other => other.to_string(),
    }
}

fn certificate(e: &CertificateError, peer: Endpoint) -> String {
    let whose = format!("the {}'s certificate", peer.name());
    match e {
        CertificateError::UnknownIssuer => {
            format!("{whose} is not signed by the configured CA (UnknownIssuer)")
        }
        CertificateError::BadSignature => format!("{whose} has a bad signature (BadSignature)"),
        CertificateError::Expired => format!("{whose} has expired"),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "{whose} has expired (valid until {}, now {})",
            date(*not_after),
            date(*time)
        ),
        CertificateError::NotValidYet => {
            format!("{whose} is not valid yet (check both machines' clocks)")
        }
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "{whose} is not valid yet (valid from {}, now {}; check both machines' clocks)",
            date(*not_before),
            date(*time)
        ),
        CertificateError::NotValidForName => {
            format!("{whose} is not valid for the host name this side connected to")
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let host = expected.to_str();
            if presented.is_empty() {
                format!("{whose} is not valid for host '{host}' (it names no host)")
            } else {
                let names: Vec<&str> = presented.iter().map(|n| plain_name(n)).collect();
                format!(
                    "{whose} is not valid for host '{host}' (it is valid for {})",
                    names.join(", ")
                )
            }
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            let usage = match e {
                CertificateError::InvalidPurposeContext {
                    required: ExtendedKeyPurpose::ClientAuth,
                    ..
                } => "clientAuth",
                CertificateError::InvalidPurposeContext {
                    required: ExtendedKeyPurpose::ServerAuth,
                    ..
                } => "serverAuth",
                _ if peer == Endpoint::Client => "clientAuth",
                _ => "serverAuth",
            };
            format!(
                "{whose} is not meant for a TLS {} (its extended key usage lacks {usage})",
                peer.name()
            )
        }
        CertificateError::Revoked => format!("{whose} has been revoked"),
        CertificateError::UnhandledCriticalExtension => {
            format!("{whose} has a critical extension that this side does not understand")
        }
        CertificateError::BadEncoding => format!("{whose} could not be parsed (BadEncoding)"),
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            format!("{whose} is signed with an algorithm that this side does not support")
        }
        other => format!("{whose} was refused ({other:?})"),
    }
}

/// `other.example` for webpki's `DnsName("other.example")`, `10.0.0.1` for
/// `IpAddress(10.0.0.1)`; anything else as it is.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

fn received_alert(alert: AlertDescription, who: &str) -> String {
    match alert {
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateUnknown
        | AlertDescription::UnknownCA
        | AlertDescription::AccessDenied
        | AlertDescription::CertificateRequired => {
            format!("the {who} refused our certificate (alert: {alert:?})")
        }
        AlertDescription::HandshakeFailure
        | AlertDescription::ProtocolVersion
        | AlertDescription::InsufficientSecurity
        | AlertDescription::IllegalParameter => format!(
            "the {who} ended the handshake (alert: {alert:?}): it found no TLS version, cipher or \
             signature scheme in common with this side, or refused our certificate"
        ),
        AlertDescription::DecodeError
        | AlertDescription::UnexpectedMessage
        | AlertDescription::DecryptError
        | AlertDescription::BadRecordMac => {
            format!("the {who} could not process our TLS messages (alert: {alert:?})")
        }
        _ => format!("the {who} ended the TLS session with an alert ({alert:?})"),
    }
}

/// An I/O error that ended a handshake, said in words (timeouts are reported apart).
pub(super) fn handshake_io(e: &io::Error, peer: Endpoint, sent_certificate: bool) -> String {
    let who = peer.name();
    let guess = if sent_certificate {
        "it may have refused our certificate, or it does not speak TLS"
    } else {
        "it may not speak TLS, or it may have refused the connection"
    };
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            format!("the {who} closed the connection during the handshake ({guess})")
        }
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => {
            format!("the {who} dropped the connection during the handshake ({guess}): {e}")
        }
        _ => format!("I/O error during the handshake: {e}"),
    }
}

/// What the first bytes from a peer that does not speak TLS tell.
pub(super) fn not_tls(first: &[u8], peer: Endpoint) -> Option<String> {
    let who = peer.name();
    if first.starts_with(b"QEVM") {
        return Some(format!(
            "the {who} sent a plain migration stream (it starts with \"QEVM\") instead of a \
             TLS handshake: TLS is not enabled on its side"
        ));
    }
    // A TLS record starts with a content type (20..=24) and major version 3.
    let tls_like = matches!(first, [20..=24, 3, ..]);
    if first.len() >= 2 && !tls_like {
        let hex: Vec<String> = first.iter().map(|b| format!("{b:02x}")).collect();
        return Some(format!(
            "the {who} does not speak TLS (its first bytes are {})",
            hex.join(" ")
        ));
    }
    None
}

/// An error in a TLS session after the handshake, carried inside an [`io::Error`].
#[derive(Debug)]
pub(super) struct SessionError(pub(super) String);

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for SessionError {}

/// `SessionError(detail)` as an I/O error of `kind`.
pub(super) fn session_error(kind: io::ErrorKind, detail: String) -> io::Error {
    io::Error::new(kind, SessionError(detail))
}

/// `2025-01-31 12:00:00 UTC`.
fn date(t: UnixTime) -> String {
    let secs = t.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` days after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count from 0000-03-01 so that the leap day ends each 4-, 100- and 400-year cycle.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            date(UnixTime::since_unix_epoch(std::time::Duration::ZERO)),
            "1970-01-01 00:00:00 UTC"
        );
        // 2000-02-29 (a leap day of a 400-year year) 01:02:03.
        let t = UnixTime::since_unix_epoch(std::time::Duration::from_secs(951_786_123));
        assert_eq!(date(t), "2000-02-29 01:02:03 UTC");
        let t = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_767_225_599));
        assert_eq!(date(t), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn presented_names_are_plain() {
        assert_eq!(plain_name("DnsName(\"other.example\")"), "other.example");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }

    #[test]
    fn plain_streams_are_recognised() {
        let m = not_tls(b"QEVM\0\0\0\x03", Endpoint::Client).unwrap();
        assert!(m.contains("plain migration stream"), "{m}");
        assert!(not_tls(&[22, 3, 1, 0], Endpoint::Client).is_none());
        assert!(
            not_tls(b"GET ", Endpoint::Client)
                .unwrap()
                .contains("47 45 54 20")
        );
    }
}
