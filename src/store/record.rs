//! What the store keeps, and how it is encoded on disk.
//!
//! Values are postcard-encoded behind a one-byte format version, so a later
//! certd can tell old records from new ones. Version 2 added registration
//! entries: join tokens name the selectors they prove instead of a service,
//! and audit entries carry selectors. Version 1 values are still read.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::identity::{Serial, ServiceName};

/// Format version of every value written by this build.
const FORMAT_VERSION: u8 = 2;
/// The format before registration entries.
const FORMAT_VERSION_1: u8 = 1;

/// A value the store keeps, and how its version 1 form reads today.
pub(super) trait Stored: Serialize + DeserializeOwned {
    /// The version 1 encoding; `Self` where the type has not changed.
    type V1: DeserializeOwned + Into<Self>;
}

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
    /// A one-time join token, before registration entries existed (now
    /// `Registered`); kept so that older records still decode.
    JoinToken { token_id: String },
    /// The caller's current certificate, presented over mTLS, for a
    /// certificate issued without an entry (by an operator, or before
    /// entries existed).
    Renewal,
    /// An operator, through the admin API (`certd issue`).
    Admin { caller: String },
    /// certd's own TLS serving certificate.
    ServingCertificate,
    /// An operator certificate, issued through the admin API by `caller`.
    Operator { caller: String },
    /// Issued for registration entry `entry_id`, whose selectors `proof`
    /// satisfied. (Appended last: postcard numbers variants in order, so
    /// records written before it still decode.)
    Registered { entry_id: String, proof: Proof },
}

/// How a workload proved the selectors of its registration entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proof {
    /// A one-time join token; `token_id` is a non-secret prefix of its hash.
    JoinToken { token_id: String },
    /// A Kubernetes service-account token for `subject`
    /// (`system:serviceaccount:<namespace>:<name>`).
    KubernetesToken { subject: String },
    /// The caller's current certificate, issued for the same entry.
    Renewal,
}

impl Attestation {
    pub fn kind(&self) -> &'static str {
        match self {
            Attestation::JoinToken { .. } => "join-token",
            Attestation::Renewal => "renewal",
            Attestation::Admin { .. } => "admin",
            Attestation::ServingCertificate => "serving-certificate",
            Attestation::Operator { .. } => "operator",
            Attestation::Registered { proof, .. } => match proof {
                Proof::JoinToken { .. } => "join-token",
                Proof::KubernetesToken { .. } => "kubernetes",
                Proof::Renewal => "renewal",
            },
        }
    }

    /// The registration entry the certificate was issued for, if any.
    pub fn entry_id(&self) -> Option<&str> {
        match self {
            Attestation::Registered { entry_id, .. } => Some(entry_id),
            _ => None,
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
    /// The selectors the caller proved, when it proved any.
    pub selectors: Vec<String>,
}

/// A join token, stored under the SHA-256 of its secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// The selectors presenting the token proves (`token:<label>`).
    pub selectors: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A registration entry: which identity a workload proving all of
/// `selectors` may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub id: String,
    pub service: ServiceName,
    pub spiffe_id: String,
    /// Every DNS SAN, the default `<service>.<trust-domain>` first.
    pub dns_names: Vec<String>,
    /// Certificate lifetime in seconds; `None` for the configured default.
    pub ttl_seconds: Option<u64>,
    /// Sorted and without duplicates.
    pub selectors: Vec<String>,
    pub created_at: i64,
    pub created_by: String,
}

/// `AuditEntry` as version 1 wrote it: without selectors.
#[derive(Deserialize)]
pub(super) struct AuditEntryV1 {
    at: i64,
    event: String,
    allowed: bool,
    caller: String,
    attestation: Option<String>,
    service: Option<String>,
    serial: Option<String>,
    reason: Option<String>,
}

impl From<AuditEntryV1> for AuditEntry {
    fn from(v1: AuditEntryV1) -> Self {
        AuditEntry {
            at: v1.at,
            event: v1.event,
            allowed: v1.allowed,
            caller: v1.caller,
            attestation: v1.attestation,
            service: v1.service,
            serial: v1.serial,
            reason: v1.reason,
            selectors: Vec::new(),
        }
    }
}

/// `JoinTokenRecord` as version 1 wrote it: bound to a service.
#[derive(Deserialize)]
pub(super) struct JoinTokenRecordV1 {
    service: ServiceName,
    created_at: i64,
    expires_at: i64,
}

impl From<JoinTokenRecordV1> for JoinTokenRecord {
    /// A token made before entries proves `token:<service>`, so an entry
    /// with that selector honours it; without one it is refused.
    fn from(v1: JoinTokenRecordV1) -> Self {
        JoinTokenRecord {
            selectors: vec![format!("token:{}", v1.service)],
            created_at: v1.created_at,
            expires_at: v1.expires_at,
        }
    }
}

impl Stored for IssuanceRecord {
    type V1 = Self;
}
impl Stored for RevokedEntry {
    type V1 = Self;
}
impl Stored for EntryRecord {
    type V1 = Self;
}
impl Stored for AuditEntry {
    type V1 = AuditEntryV1;
}
impl Stored for JoinTokenRecord {
    type V1 = JoinTokenRecordV1;
}

pub(super) fn encode<T: Stored>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_VERSION];
    let encoded = postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    bytes.extend_from_slice(&encoded);
    Ok(bytes)
}

pub(super) fn decode<T: Stored>(bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |e: postcard::Error| StoreError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&FORMAT_VERSION_1, rest)) => postcard::from_bytes::<T::V1>(rest)
            .map(Into::into)
            .map_err(corrupt),
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "record format {version} is not known to this certd"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}
