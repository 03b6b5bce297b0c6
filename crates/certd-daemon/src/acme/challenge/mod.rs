//! Challenge validation (RFC 8555 §8, RFC 8737): certd connects to the name
//! being validated and checks the answer. Owns where certd may connect
//! (never link-local or cloud metadata addresses), the limits of each
//! attempt (time, size, no redirects) and the test-only overrides. Knows
//! nothing of accounts, orders or the store.

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
    // Filled in by the challenge validators (http-01, tls-alpn-01, dns-01).
    let _ = (settings, domain, token, key_authorization);
    Err(ChallengeError::Connection(format!(
        "{} validation is not built yet",
        kind.as_str()
    )))
}
