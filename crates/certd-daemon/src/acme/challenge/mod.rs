//! Challenge validation (RFC 8555 §8, RFC 8737): certd connects to the name
//! being validated and checks the answer. Owns where certd may connect
//! (never link-local or cloud metadata addresses), the limits of each
//! attempt (time, size, no redirects) and the test-only overrides. Knows
//! nothing of accounts, orders or the store.
//!
//! # What certd connects to
//!
//! Validating a challenge makes certd, inside the network it runs in, open
//! connections that an ACME client chose the target of. So:
//!
//! - **Names are resolved by DNS only** (A and AAAA, A first), through the
//!   configured `dns_server` or else the system's resolvers
//!   (`/etc/resolv.conf`); `/etc/hosts` is not read, so a name means what
//!   the network's DNS says it means. `dns-01` asks the same servers for TXT
//!   records. Each validation asks afresh (no cache).
//! - **Refused addresses** (`rejectedIdentifier`, naming the address and
//!   why): link-local (169.254.0.0/16, fe80::/10), cloud metadata services
//!   (169.254.169.254, fd00:ec2::254, 100.100.100.200), unspecified
//!   (0.0.0.0/8, ::), multicast, broadcast, and loopback (127.0.0.0/8, ::1)
//!   unless the test-only `resolve_all_to` is set. IPv4-mapped IPv6
//!   addresses (::ffff:0:0/96) and NAT64 ones (64:ff9b::/96) are judged as
//!   the IPv4 address they carry. Private ranges
//!   (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7) are allowed:
//!   certd is an internal CA, and its names live there.
//! - **The allowed addresses are tried in turn**, each with its share of
//!   what is left of the attempt's time, until one accepts the connection.
//! - **http-01**: one HTTP/1.1 `GET /.well-known/acme-challenge/<token>`
//!   with `Host: <name>` to port 80 (`http_port`); redirects are not
//!   followed, only a 200 counts, and at most 8 KiB of body is read.
//! - **tls-alpn-01**: one TLS 1.2/1.3 handshake to port 443
//!   (`tls_alpn_port`) with SNI `<name>` and ALPN `acme-tls/1`; the
//!   certificate is read, never trusted (it is self-signed by design).
//! - **Everything within `timeout`** (10 s by default): resolution,
//!   connection and answer together.
//!
//! `[acme.testing]`'s `resolve_all_to` (every name resolves to one address,
//! loopback allowed) and its ports exist for tests, as Pebble's do.

mod address;
mod dns;
mod dns01;
mod http01;
mod tls_alpn01;

// BIND for the dns-01 tests: the same file the integration tests use.
#[cfg(test)]
#[path = "../../../../../tests/common/bind.rs"]
mod bind;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The challenge types certd validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeType {
    Http01,
    TlsAlpn01,
    Dns01,
}

impl ChallengeType {
    pub const ALL: [ChallengeType; 3] = [Self::Http01, Self::TlsAlpn01, Self::Dns01];

    /// The name RFC 8555 and RFC 8737 give it (`http-01`, `tls-alpn-01`, `dns-01`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// How certd reaches the names it validates.
#[derive(Debug, Clone)]
pub struct ValidationSettings {
    /// The port http-01 connects to (80; test-only override).
    pub http_port: u16,
    /// The port tls-alpn-01 connects to (443; test-only override).
    pub tls_alpn_port: u16,
    /// Test-only: every name resolves to this address, and loopback is allowed.
    pub resolve_all_to: Option<IpAddr>,
    /// The DNS servers asked for addresses (http-01, tls-alpn-01) and TXT
    /// records (dns-01); empty: the system's (/etc/resolv.conf).
    pub dns_servers: Vec<SocketAddr>,
    /// The limit of one validation attempt, connection and answer together.
    pub timeout: Duration,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            http_port: 80,
            tls_alpn_port: 443,
            resolve_all_to: None,
            dns_servers: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a challenge failed, classified as RFC 8555 §6.7 problem types.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// `urn:ietf:params:acme:error:dns`
    #[error("{0}")]
    Dns(String),
    /// `urn:ietf:params:acme:error:connection`
    #[error("{0}")]
    Connection(String),
    /// `urn:ietf:params:acme:error:tls`
    #[error("{0}")]
    Tls(String),
    /// `urn:ietf:params:acme:error:incorrectResponse`
    #[error("{0}")]
    IncorrectResponse(String),
    /// `urn:ietf:params:acme:error:rejectedIdentifier`: an address certd must not connect to.
    #[error("{0}")]
    Forbidden(String),
}

impl ChallengeError {
    /// The problem type's last part (`dns`, `connection`, `tls`, `incorrectResponse`, `rejectedIdentifier`).
    pub fn problem_type(&self) -> &'static str {
        match self {
            Self::Dns(_) => "dns",
            Self::Connection(_) => "connection",
            Self::Tls(_) => "tls",
            Self::IncorrectResponse(_) => "incorrectResponse",
            Self::Forbidden(_) => "rejectedIdentifier",
        }
    }
}

/// Validates challenge `kind` for DNS name `domain` (already checked to be a
/// DNS name certd may issue for, lowercase, no trailing dot): `token` is the
/// challenge's token and `key_authorization` is `token || '.' ||
/// base64url(JWK thumbprint of the account key)` (RFC 8555 §8.1).
pub async fn validate(
    settings: &ValidationSettings,
    kind: ChallengeType,
    domain: &str,
    token: &str,
    key_authorization: &str,
) -> Result<(), ChallengeError> {
    let attempt = async {
        match kind {
            ChallengeType::Http01 => {
                http01::validate(settings, domain, token, key_authorization).await
            }
            ChallengeType::TlsAlpn01 => {
                tls_alpn01::validate(settings, domain, key_authorization).await
            }
            ChallengeType::Dns01 => dns01::validate(settings, domain, key_authorization).await,
        }
    };
    // The backstop: each step has its own limit too, with a sharper message.
    match tokio::time::timeout(settings.timeout, attempt).await {
        Ok(result) => result,
        Err(_elapsed) => {
            let message = format!(
                "{} validation of {domain} did not finish within {}",
                kind.as_str(),
                humantime::format_duration(settings.timeout)
            );
            Err(match kind {
                ChallengeType::Dns01 => ChallengeError::Dns(message),
                ChallengeType::Http01 | ChallengeType::TlsAlpn01 => {
                    ChallengeError::Connection(message)
                }
            })
        }
    }
}

/// What an outside party sent, for an error message: at most 64 characters,
/// control characters escaped, marked when cut.
fn excerpt(text: &[u8]) -> String {
    const MAX_CHARS: usize = 64;
    let text = String::from_utf8_lossy(text);
    let mut shown: String = text.chars().take(MAX_CHARS).collect();
    let cut = shown.len() < text.len();
    shown = shown.escape_debug().to_string();
    if cut {
        shown.push('…');
    }
    format!("\"{shown}\"")
}

/// base64url without padding (RFC 8555 §6.1) of SHA-256: what dns-01's TXT
/// record holds.
fn sha256_base64url(key_authorization: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(key_authorization))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeout names the challenge, the domain and the limit, with the
    /// problem type of the step that could hang.
    #[tokio::test]
    async fn an_attempt_past_its_timeout_is_a_connection_problem() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and then says nothing: the handshake never ends.
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let settings = ValidationSettings {
            tls_alpn_port: port,
            resolve_all_to: Some("127.0.0.1".parse().unwrap()),
            timeout: Duration::from_millis(300),
            ..ValidationSettings::default()
        };
        let err = validate(&settings, ChallengeType::TlsAlpn01, "slow.test", "t", "t.k")
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "connection", "{err}");
        assert_eq!(
            err.to_string(),
            "tls-alpn-01 validation of slow.test did not finish within 300ms"
        );
    }

    #[test]
    fn excerpts_are_cut_and_escaped() {
        assert_eq!(excerpt(b"ok"), "\"ok\"");
        assert_eq!(excerpt(b"a\nb"), "\"a\\nb\"");
        let long = "x".repeat(100);
        assert_eq!(excerpt(long.as_bytes()), format!("\"{}…\"", "x".repeat(64)));
    }

    /// base64url, not base64, and no padding: SHA-256("abc") is the FIPS
    /// 180-2 example, whose base64 has `+`, `/` and `=`.
    #[test]
    fn the_dns01_digest_is_base64url_without_padding() {
        assert_eq!(
            sha256_base64url("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
