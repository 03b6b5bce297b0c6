//! What the store keeps, and how it is encoded on disk.
//!
//! Values are postcard-encoded behind a one-byte format version, so a later
//! certd can tell old records from new ones.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::identity::{Serial, ServiceName};

/// Format version of every value written by this build.
const FORMAT_VERSION: u8 = 1;

/// The durable record of one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceRecord {
    pub serial: Serial,
    pub service: ServiceName,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    pub sha256_fingerprint: [u8; 32],
    pub der: Vec<u8>,
    pub attestation: Attestation,
    pub renewed_from: Option<Serial>,
    pub revocation: Option<Revocation>,
}

/// How the caller proved it may hold the identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attestation {
    /// A one-time join token; `token_id` is a non-secret prefix of its hash.
    JoinToken { token_id: String },
    /// The caller's current certificate, presented over mTLS.
    Renewal,
    /// An operator, through the admin API (`certd issue`).
    Admin { caller: String },
    /// certd's own TLS serving certificate.
    ServingCertificate,
    /// An operator certificate, issued through the admin API by `caller`.
    Operator { caller: String },
}

impl Attestation {
    pub fn kind(&self) -> &'static str {
        match self {
            Attestation::JoinToken { .. } => "join-token",
            Attestation::Renewal => "renewal",
            Attestation::Admin { .. } => "admin",
            Attestation::ServingCertificate => "serving-certificate",
            Attestation::Operator { .. } => "operator",
        }
    }
}

/// When and why a certificate was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub revoked_at: i64,
    /// RFC 5280 CRLReason code.
    pub reason_code: u8,
}

/// An entry of the revocation index: what a CRL needs, without the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub revocation: Revocation,
    /// The certificate's notAfter: once past, the entry leaves the CRL.
    pub not_after: i64,
}

/// The status of a certificate at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateState {
    Good,
    Revoked,
    Expired,
}

impl CertificateState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateState::Good => "good",
            CertificateState::Revoked => "revoked",
            CertificateState::Expired => "expired",
        }
    }
}

impl IssuanceRecord {
    pub fn state(&self, now: i64) -> CertificateState {
        if self.revocation.is_some() {
            CertificateState::Revoked
        } else if now > self.not_after {
            CertificateState::Expired
        } else {
            CertificateState::Good
        }
    }
}

/// One audited decision, as kept in the append-only audit tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    /// What was asked: "issue", "renew", "revoke", "create-join-token".
    pub event: String,
    pub allowed: bool,
    /// Who asked: a peer address or the admin socket's uid.
    pub caller: String,
    pub attestation: Option<String>,
    pub service: Option<String>,
    pub serial: Option<String>,
    /// Why it was refused, or details of what was done. Never a secret.
    pub reason: Option<String>,
}

/// A join token, stored under the SHA-256 of its secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub service: ServiceName,
    pub created_at: i64,
    pub expires_at: i64,
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_VERSION];
    let encoded = postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    bytes.extend_from_slice(&encoded);
    Ok(bytes)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "record format {version} is not known to this certd"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}
