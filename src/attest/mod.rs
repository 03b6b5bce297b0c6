//! Attestation: how a caller proves which identity it may hold.
//!
//! Three attestors exist: a one-time join token and a Kubernetes projected
//! service-account token (bootstrap), and the caller's current certificate
//! presented over mTLS (renewal). The first two turn evidence into
//! selectors, which `registry` matches to an entry; renewal finds the
//! record of the current certificate. Each refuses with an `AttestError`.
//! This module reads the store but never writes it: consuming a token
//! happens in the same step as recording the certificate, in `store`.

mod join_token;
mod jwks_url;
mod kubernetes;
mod renewal;

pub use join_token::{JOIN_TOKEN_PREFIX, JoinToken};
pub use kubernetes::{
    JwksUrlSettings, KeyFileError, KubernetesAttestor, KubernetesEvidence, KubernetesSettings,
};
pub use renewal::{AdminCaller, RenewalEvidence};

/// Why attestation failed. Every variant means "you have not proven who you
/// are", so all map to `UNAUTHENTICATED`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestError {
    #[error("no attestation given: send a join token or a Kubernetes service-account token")]
    Missing,
    #[error("Kubernetes service-account token refused: {0}")]
    KubernetesToken(String),
    #[error(
        "this certd does not accept Kubernetes service-account tokens (its config has no [kubernetes] section)"
    )]
    KubernetesNotConfigured,
    #[error("join token is not valid (unknown, malformed or already used)")]
    InvalidJoinToken,
    #[error("join token expired at {expired_at} (unix time)")]
    ExpiredJoinToken { expired_at: i64 },
    #[error("renewal needs the current certificate as a TLS client certificate")]
    NoClientCertificate,
    #[error("client certificate was not issued to a workload by this CA: {0}")]
    UnknownClientCertificate(String),
    #[error("client certificate {serial} is revoked")]
    RevokedClientCertificate { serial: String },
    #[error("client certificate {serial} expired at {not_after} (unix time)")]
    ExpiredClientCertificate { serial: String, not_after: i64 },
}
