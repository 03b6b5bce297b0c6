//! How the stores encode a record as bytes: sled keeps these bytes as its
//! values, PostgreSQL in `bytea` columns beside the columns its queries
//! need. Private to `store`.
//!
//! Every value is postcard behind a one-byte format version (never `0xFF`:
//! the sled backend marks its packed certificate records with that byte,
//! `sled::packing`). The types here
//! are the format: their field order and enum variant order are what the
//! bytes mean, so they change only together with `FORMAT_VERSION`, and
//! never because a domain type in `model` changed. Each converts to and
//! from its domain type by hand.
//!
//! Version 2 added registration entries: join tokens name the selectors
//! they prove instead of a service, and audit entries carry selectors.
//! Version 3 changed entries only (they name their parent agent and the
//! audiences of their JWT-SVIDs); every
//! other value is still written as version 2. The token policy, added
//! later, was written as version 2 too (no earlier format knew it); it is
//! written as version 3 since it holds delegations. Federation
//! relationships, added later still, are written as version 3 (no earlier
//! format knew them). Version 4 changed entries only (the trust domains
//! they federate with). Version 5 changed issuance records only: they
//! leave out what their certificate's DER says (`issuance`). Earlier
//! values are still read.
//!
//! Decoding trusts what certd itself wrote: names, serials and selectors
//! were parsed once, at the edge, before they were stored, so they are
//! wrapped again here without being parsed a second time.

mod issuance;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use certd_core::identity::{DnsName, Serial, ServiceName, SpiffeId};
use certd_core::model::{
    Attestation, AuditEntry, AuditEvent, DelegationRecord, EndpointProfile, EntryRecord,
    FederationRecord, ForeignBundle, GrantCaller, GrantRecord, IssuanceRecord, JoinTokenRecord,
    PolicyRecord, Proof, Revocation, RevokedEntry, kind,
};
use certd_core::selector::Selector;

/// Format version of the values whose encoding version 3 did not change.
const FORMAT_VERSION: u8 = 2;
/// Registration entries with a parent agent.
const FORMAT_VERSION_3: u8 = 3;
/// Registration entries that federate with other trust domains.
const FORMAT_VERSION_4: u8 = 4;
/// The format before registration entries.
const FORMAT_VERSION_1: u8 = 1;
/// Issuance records without what their DER says.
const FORMAT_VERSION_5: u8 = 5;
// The sled backend's packed records begin with 0xFF (`sled::packing`).
const _: () = assert!(FORMAT_VERSION_5 < 0xFF);

/// A domain value the stores keep, and its encodings.
pub(crate) trait Stored: Sized {
    /// The version this build writes.
    const VERSION: u8;
    /// The encoding of `VERSION`.
    type Disk: Serialize + DeserializeOwned + From<Self> + TryInto<Self, Error: Into<StoreError>>;
    /// The version 3 encoding; `Self::Disk` where that is what is written
    /// or no version 3 of it was ever written.
    type V3: DeserializeOwned + TryInto<Self, Error: Into<StoreError>>;
    /// The version 2 encoding; `Self::Disk` where that is what is written.
    type V2: DeserializeOwned + TryInto<Self, Error: Into<StoreError>>;
    /// The version 1 encoding; `Self::Disk` where it has not changed.
    type V1: DeserializeOwned + TryInto<Self, Error: Into<StoreError>>;
}

impl From<std::convert::Infallible> for StoreError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

pub(crate) fn encode<T: Stored + Clone>(value: &T) -> Result<Vec<u8>, StoreError> {
    let disk = T::Disk::from(value.clone());
    let mut bytes = vec![T::VERSION];
    let encoded = postcard::to_stdvec(&disk).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    bytes.extend_from_slice(&encoded);
    Ok(bytes)
}

pub(crate) fn decode<T: Stored>(bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |e: postcard::Error| StoreError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&version, rest)) if version == T::VERSION => postcard::from_bytes::<T::Disk>(rest)
            .map_err(corrupt)?
            .try_into()
            .map_err(Into::into),
        Some((&FORMAT_VERSION_3, rest)) => postcard::from_bytes::<T::V3>(rest)
            .map_err(corrupt)?
            .try_into()
            .map_err(Into::into),
        Some((&FORMAT_VERSION, rest)) => postcard::from_bytes::<T::V2>(rest)
            .map_err(corrupt)?
            .try_into()
            .map_err(Into::into),
        Some((&FORMAT_VERSION_1, rest)) => postcard::from_bytes::<T::V1>(rest)
            .map_err(corrupt)?
            .try_into()
            .map_err(Into::into),
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "record format {version} is not known to this certd"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

fn selectors_to_disk(selectors: Vec<Selector>) -> Vec<String> {
    selectors.into_iter().map(Selector::into_string).collect()
}

fn selectors_from_disk(selectors: Vec<String>) -> Vec<Selector> {
    selectors.into_iter().map(Selector::from_stored).collect()
}

/// An issuance record as versions 1 to 3 wrote it (version 1 and 2 with
/// the same fields; version 3 never wrote one, but read it the same).
#[derive(Serialize, Deserialize)]
pub(super) struct DiskIssuanceRecord {
    serial: Vec<u8>,
    service: String,
    dns_names: Vec<String>,
    uris: Vec<String>,
    not_before: i64,
    not_after: i64,
    issued_at: i64,
    sha256_fingerprint: [u8; 32],
    der: Vec<u8>,
    attestation: DiskAttestation,
    renewed_from: Option<Vec<u8>>,
    revocation: Option<DiskRevocation>,
}

/// Variant order is the format: append, never reorder.
#[derive(Serialize, Deserialize)]
enum DiskAttestation {
    JoinToken {
        token_id: String,
    },
    Renewal,
    Admin {
        caller: String,
    },
    ServingCertificate,
    Operator {
        caller: String,
    },
    Registered {
        entry_id: String,
        proof: DiskProof,
    },
    /// `Admin` issued with `--renewable`.
    AdminRenewable {
        caller: String,
    },
}

/// Variant order is the format: append, never reorder. The two attestors
/// that existed before `Attested` keep their own variants, so their records
/// read and write as they always did.
#[derive(Serialize, Deserialize)]
enum DiskProof {
    JoinToken { token_id: String },
    KubernetesToken { subject: String },
    Renewal,
    Attested { kind: String, detail: String },
}

impl From<Proof> for DiskProof {
    fn from(proof: Proof) -> Self {
        match proof {
            Proof::Attested { kind, detail } => match kind.as_str() {
                kind::JOIN_TOKEN => DiskProof::JoinToken { token_id: detail },
                kind::KUBERNETES => DiskProof::KubernetesToken { subject: detail },
                _ => DiskProof::Attested { kind, detail },
            },
            Proof::Renewal => DiskProof::Renewal,
        }
    }
}

impl From<DiskProof> for Proof {
    fn from(disk: DiskProof) -> Self {
        let attested = |kind: &str, detail| Proof::Attested {
            kind: kind.to_owned(),
            detail,
        };
        match disk {
            DiskProof::JoinToken { token_id } => attested(kind::JOIN_TOKEN, token_id),
            DiskProof::KubernetesToken { subject } => attested(kind::KUBERNETES, subject),
            DiskProof::Renewal => Proof::Renewal,
            DiskProof::Attested { kind, detail } => Proof::Attested { kind, detail },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DiskRevocation {
    revoked_at: i64,
    reason_code: u8,
}

/// Only tests write version 2 any more (to read it back).
#[cfg(test)]
impl From<IssuanceRecord> for DiskIssuanceRecord {
    fn from(record: IssuanceRecord) -> Self {
        DiskIssuanceRecord {
            serial: record.serial.as_bytes().to_vec(),
            service: record.service.into(),
            dns_names: record.dns_names,
            uris: record.uris,
            not_before: record.not_before,
            not_after: record.not_after,
            issued_at: record.issued_at,
            sha256_fingerprint: record.sha256_fingerprint,
            der: record.der,
            attestation: record.attestation.into(),
            renewed_from: record.renewed_from.map(|s| s.as_bytes().to_vec()),
            revocation: record.revocation.map(Into::into),
        }
    }
}

impl From<DiskIssuanceRecord> for IssuanceRecord {
    fn from(disk: DiskIssuanceRecord) -> Self {
        IssuanceRecord {
            serial: Serial::from_stored(disk.serial),
            service: ServiceName::from_stored(disk.service),
            dns_names: disk.dns_names,
            uris: disk.uris,
            not_before: disk.not_before,
            not_after: disk.not_after,
            issued_at: disk.issued_at,
            sha256_fingerprint: disk.sha256_fingerprint,
            der: disk.der,
            attestation: disk.attestation.into(),
            renewed_from: disk.renewed_from.map(Serial::from_stored),
            revocation: disk.revocation.map(Into::into),
        }
    }
}

impl From<Attestation> for DiskAttestation {
    fn from(attestation: Attestation) -> Self {
        match attestation {
            Attestation::JoinToken { token_id } => DiskAttestation::JoinToken { token_id },
            Attestation::Renewal => DiskAttestation::Renewal,
            Attestation::Admin {
                caller,
                renewable: false,
            } => DiskAttestation::Admin { caller },
            Attestation::Admin {
                caller,
                renewable: true,
            } => DiskAttestation::AdminRenewable { caller },
            Attestation::ServingCertificate => DiskAttestation::ServingCertificate,
            Attestation::Operator { caller } => DiskAttestation::Operator { caller },
            Attestation::Registered { entry_id, proof } => DiskAttestation::Registered {
                entry_id,
                proof: proof.into(),
            },
        }
    }
}

impl From<DiskAttestation> for Attestation {
    fn from(disk: DiskAttestation) -> Self {
        match disk {
            DiskAttestation::JoinToken { token_id } => Attestation::JoinToken { token_id },
            DiskAttestation::Renewal => Attestation::Renewal,
            DiskAttestation::Admin { caller } => Attestation::Admin {
                caller,
                renewable: false,
            },
            DiskAttestation::AdminRenewable { caller } => Attestation::Admin {
                caller,
                renewable: true,
            },
            DiskAttestation::ServingCertificate => Attestation::ServingCertificate,
            DiskAttestation::Operator { caller } => Attestation::Operator { caller },
            DiskAttestation::Registered { entry_id, proof } => Attestation::Registered {
                entry_id,
                proof: proof.into(),
            },
        }
    }
}

impl From<Revocation> for DiskRevocation {
    fn from(revocation: Revocation) -> Self {
        DiskRevocation {
            revoked_at: revocation.revoked_at,
            reason_code: revocation.reason_code,
        }
    }
}

impl From<DiskRevocation> for Revocation {
    fn from(disk: DiskRevocation) -> Self {
        Revocation {
            revoked_at: disk.revoked_at,
            reason_code: disk.reason_code,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct DiskRevokedEntry {
    serial: Vec<u8>,
    revocation: DiskRevocation,
    not_after: i64,
}

impl From<RevokedEntry> for DiskRevokedEntry {
    fn from(entry: RevokedEntry) -> Self {
        DiskRevokedEntry {
            serial: entry.serial.as_bytes().to_vec(),
            revocation: entry.revocation.into(),
            not_after: entry.not_after,
        }
    }
}

impl From<DiskRevokedEntry> for RevokedEntry {
    fn from(disk: DiskRevokedEntry) -> Self {
        RevokedEntry {
            serial: Serial::from_stored(disk.serial),
            revocation: disk.revocation.into(),
            not_after: disk.not_after,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct DiskAuditEntry {
    at: i64,
    event: String,
    allowed: bool,
    caller: String,
    attestation: Option<String>,
    service: Option<String>,
    serial: Option<String>,
    reason: Option<String>,
    selectors: Vec<String>,
}

impl From<AuditEntry> for DiskAuditEntry {
    fn from(entry: AuditEntry) -> Self {
        DiskAuditEntry {
            at: entry.at,
            event: entry.event.as_str().to_owned(),
            allowed: entry.allowed,
            caller: entry.caller,
            attestation: entry.attestation,
            service: entry.service,
            serial: entry.serial,
            reason: entry.reason,
            selectors: selectors_to_disk(entry.selectors),
        }
    }
}

/// The event of a stored name; every name certd writes is known.
fn audit_event(name: &str) -> Result<AuditEvent, StoreError> {
    AuditEvent::from_name(name).ok_or_else(|| {
        StoreError::Corrupt(format!("audit event {name:?} is not known to this certd"))
    })
}

impl TryFrom<DiskAuditEntry> for AuditEntry {
    type Error = StoreError;

    fn try_from(disk: DiskAuditEntry) -> Result<Self, StoreError> {
        Ok(AuditEntry {
            at: disk.at,
            event: audit_event(&disk.event)?,
            allowed: disk.allowed,
            caller: disk.caller,
            attestation: disk.attestation,
            service: disk.service,
            serial: disk.serial,
            reason: disk.reason,
            selectors: selectors_from_disk(disk.selectors),
        })
    }
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

impl TryFrom<AuditEntryV1> for AuditEntry {
    type Error = StoreError;

    fn try_from(v1: AuditEntryV1) -> Result<Self, StoreError> {
        Ok(AuditEntry {
            at: v1.at,
            event: audit_event(&v1.event)?,
            allowed: v1.allowed,
            caller: v1.caller,
            attestation: v1.attestation,
            service: v1.service,
            serial: v1.serial,
            reason: v1.reason,
            selectors: Vec::new(),
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct DiskJoinToken {
    selectors: Vec<String>,
    created_at: i64,
    expires_at: i64,
}

impl From<JoinTokenRecord> for DiskJoinToken {
    fn from(token: JoinTokenRecord) -> Self {
        DiskJoinToken {
            selectors: selectors_to_disk(token.selectors),
            created_at: token.created_at,
            expires_at: token.expires_at,
        }
    }
}

impl From<DiskJoinToken> for JoinTokenRecord {
    fn from(disk: DiskJoinToken) -> Self {
        JoinTokenRecord {
            selectors: selectors_from_disk(disk.selectors),
            created_at: disk.created_at,
            expires_at: disk.expires_at,
        }
    }
}

/// `JoinTokenRecord` as version 1 wrote it: bound to a service.
#[derive(Deserialize)]
pub(super) struct JoinTokenRecordV1 {
    service: String,
    created_at: i64,
    expires_at: i64,
}

impl From<JoinTokenRecordV1> for JoinTokenRecord {
    /// A token made before entries proves `token:<service>`, so an entry
    /// with that selector honours it; without one it is refused.
    fn from(v1: JoinTokenRecordV1) -> Self {
        JoinTokenRecord {
            selectors: vec![Selector::from_stored(format!("token:{}", v1.service))],
            created_at: v1.created_at,
            expires_at: v1.expires_at,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct DiskEntry {
    id: String,
    service: String,
    spiffe_id: String,
    dns_names: Vec<String>,
    ttl_seconds: Option<u64>,
    selectors: Vec<String>,
    created_at: i64,
    created_by: String,
    parent: Option<String>,
    jwt_audiences: Vec<String>,
    federates_with: Vec<String>,
}

/// `EntryRecord` as version 3 wrote it: before federation.
#[derive(Deserialize)]
pub(super) struct EntryV3 {
    id: String,
    service: String,
    spiffe_id: String,
    dns_names: Vec<String>,
    ttl_seconds: Option<u64>,
    selectors: Vec<String>,
    created_at: i64,
    created_by: String,
    parent: Option<String>,
    jwt_audiences: Vec<String>,
}

impl TryFrom<EntryV3> for EntryRecord {
    type Error = StoreError;

    fn try_from(v3: EntryV3) -> Result<Self, StoreError> {
        DiskEntry {
            id: v3.id,
            service: v3.service,
            spiffe_id: v3.spiffe_id,
            dns_names: v3.dns_names,
            ttl_seconds: v3.ttl_seconds,
            selectors: v3.selectors,
            created_at: v3.created_at,
            created_by: v3.created_by,
            parent: v3.parent,
            jwt_audiences: v3.jwt_audiences,
            federates_with: Vec::new(),
        }
        .try_into()
    }
}

/// `EntryRecord` as version 2 wrote it: before parent agents.
#[derive(Deserialize)]
pub(super) struct EntryV2 {
    id: String,
    service: String,
    spiffe_id: String,
    dns_names: Vec<String>,
    ttl_seconds: Option<u64>,
    selectors: Vec<String>,
    created_at: i64,
    created_by: String,
}

impl TryFrom<EntryV2> for EntryRecord {
    type Error = StoreError;

    fn try_from(v2: EntryV2) -> Result<Self, StoreError> {
        DiskEntry {
            id: v2.id,
            service: v2.service,
            spiffe_id: v2.spiffe_id,
            dns_names: v2.dns_names,
            ttl_seconds: v2.ttl_seconds,
            selectors: v2.selectors,
            created_at: v2.created_at,
            created_by: v2.created_by,
            parent: None,
            jwt_audiences: Vec::new(),
            federates_with: Vec::new(),
        }
        .try_into()
    }
}

impl From<EntryRecord> for DiskEntry {
    fn from(entry: EntryRecord) -> Self {
        DiskEntry {
            id: entry.id,
            service: entry.service.into(),
            spiffe_id: entry.spiffe_id.into_string(),
            dns_names: entry
                .dns_names
                .into_iter()
                .map(DnsName::into_string)
                .collect(),
            ttl_seconds: entry.ttl_seconds,
            selectors: selectors_to_disk(entry.selectors),
            created_at: entry.created_at,
            created_by: entry.created_by,
            parent: entry.parent.map(SpiffeId::into_string),
            jwt_audiences: entry.jwt_audiences,
            federates_with: entry.federates_with.into_iter().map(String::from).collect(),
        }
    }
}

impl TryFrom<DiskEntry> for EntryRecord {
    type Error = StoreError;

    fn try_from(disk: DiskEntry) -> Result<Self, StoreError> {
        // `TrustDomain` has no unchecked constructor; the check is cheap.
        let federates_with = disk
            .federates_with
            .into_iter()
            .map(|domain| {
                domain
                    .parse()
                    .map_err(|_| StoreError::Corrupt("entry federates_with".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(EntryRecord {
            id: disk.id,
            service: ServiceName::from_stored(disk.service),
            spiffe_id: SpiffeId::from_stored(disk.spiffe_id),
            dns_names: disk
                .dns_names
                .into_iter()
                .map(DnsName::from_stored)
                .collect(),
            ttl_seconds: disk.ttl_seconds,
            selectors: selectors_from_disk(disk.selectors),
            created_at: disk.created_at,
            created_by: disk.created_by,
            parent: disk.parent.map(SpiffeId::from_stored),
            jwt_audiences: disk.jwt_audiences,
            federates_with,
        })
    }
}

impl Stored for IssuanceRecord {
    const VERSION: u8 = FORMAT_VERSION_5;
    type Disk = issuance::DiskIssuanceRecordV5;
    type V3 = DiskIssuanceRecord;
    type V2 = DiskIssuanceRecord;
    type V1 = DiskIssuanceRecord;
}
impl Stored for RevokedEntry {
    const VERSION: u8 = FORMAT_VERSION;
    type Disk = DiskRevokedEntry;
    type V3 = DiskRevokedEntry;
    type V2 = DiskRevokedEntry;
    type V1 = DiskRevokedEntry;
}
impl Stored for EntryRecord {
    const VERSION: u8 = FORMAT_VERSION_4;
    type Disk = DiskEntry;
    type V3 = EntryV3;
    type V2 = EntryV2;
    // Version 1 had no entries.
    type V1 = EntryV2;
}
/// The token policy with its delegations (format version 3). Variant and
/// field order are the format.
#[derive(Serialize, Deserialize)]
pub(super) struct DiskPolicy {
    version: u64,
    grants: Vec<DiskGrant>,
    delegations: Vec<DiskDelegation>,
    changed_at: i64,
    changed_by: String,
}

/// The token policy before delegations (format version 2).
#[derive(Deserialize)]
pub(super) struct PolicyV2 {
    version: u64,
    grants: Vec<DiskGrant>,
    changed_at: i64,
    changed_by: String,
}

#[derive(Serialize, Deserialize)]
struct DiskGrant {
    name: String,
    caller: DiskGrantCaller,
    audience: String,
    scopes: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct DiskDelegation {
    name: String,
    actor: DiskGrantCaller,
    subject_issuers: Vec<String>,
    audience: String,
    scopes: Vec<String>,
    max_chain: u8,
}

/// Variant order is the format: append, never reorder.
#[derive(Serialize, Deserialize)]
enum DiskGrantCaller {
    Service(String),
    SpiffeId(String),
}

impl From<GrantCaller> for DiskGrantCaller {
    fn from(caller: GrantCaller) -> Self {
        match caller {
            GrantCaller::Service(service) => DiskGrantCaller::Service(service.into()),
            GrantCaller::SpiffeId(id) => DiskGrantCaller::SpiffeId(id.into_string()),
        }
    }
}

impl From<DiskGrantCaller> for GrantCaller {
    fn from(caller: DiskGrantCaller) -> Self {
        match caller {
            DiskGrantCaller::Service(service) => {
                GrantCaller::Service(ServiceName::from_stored(service))
            }
            DiskGrantCaller::SpiffeId(id) => GrantCaller::SpiffeId(SpiffeId::from_stored(id)),
        }
    }
}

impl From<GrantRecord> for DiskGrant {
    fn from(grant: GrantRecord) -> Self {
        DiskGrant {
            name: grant.name,
            caller: grant.caller.into(),
            audience: grant.audience,
            scopes: grant.scopes,
        }
    }
}

impl From<DiskGrant> for GrantRecord {
    fn from(grant: DiskGrant) -> Self {
        GrantRecord {
            name: grant.name,
            caller: grant.caller.into(),
            audience: grant.audience,
            scopes: grant.scopes,
        }
    }
}

impl From<DelegationRecord> for DiskDelegation {
    fn from(delegation: DelegationRecord) -> Self {
        DiskDelegation {
            name: delegation.name,
            actor: delegation.actor.into(),
            subject_issuers: delegation.subject_issuers,
            audience: delegation.audience,
            scopes: delegation.scopes,
            max_chain: delegation.max_chain,
        }
    }
}

impl From<DiskDelegation> for DelegationRecord {
    fn from(delegation: DiskDelegation) -> Self {
        DelegationRecord {
            name: delegation.name,
            actor: delegation.actor.into(),
            subject_issuers: delegation.subject_issuers,
            audience: delegation.audience,
            scopes: delegation.scopes,
            max_chain: delegation.max_chain,
        }
    }
}

impl From<PolicyRecord> for DiskPolicy {
    fn from(policy: PolicyRecord) -> Self {
        DiskPolicy {
            version: policy.version,
            grants: policy.grants.into_iter().map(DiskGrant::from).collect(),
            delegations: policy
                .delegations
                .into_iter()
                .map(DiskDelegation::from)
                .collect(),
            changed_at: policy.changed_at,
            changed_by: policy.changed_by,
        }
    }
}

impl From<DiskPolicy> for PolicyRecord {
    fn from(disk: DiskPolicy) -> Self {
        PolicyRecord {
            version: disk.version,
            grants: disk.grants.into_iter().map(GrantRecord::from).collect(),
            delegations: disk
                .delegations
                .into_iter()
                .map(DelegationRecord::from)
                .collect(),
            changed_at: disk.changed_at,
            changed_by: disk.changed_by,
        }
    }
}

impl From<PolicyV2> for PolicyRecord {
    fn from(disk: PolicyV2) -> Self {
        PolicyRecord {
            version: disk.version,
            grants: disk.grants.into_iter().map(GrantRecord::from).collect(),
            delegations: Vec::new(),
            changed_at: disk.changed_at,
            changed_by: disk.changed_by,
        }
    }
}

impl Stored for PolicyRecord {
    const VERSION: u8 = FORMAT_VERSION_3;
    type Disk = DiskPolicy;
    type V3 = DiskPolicy;
    type V2 = PolicyV2;
    // No earlier format held a policy.
    type V1 = PolicyV2;
}
/// A federation relationship. Field and variant order are the format.
#[derive(Serialize, Deserialize)]
pub(super) struct DiskFederation {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: DiskEndpointProfile,
    created_at: i64,
    created_by: String,
    bundle: Option<DiskForeignBundle>,
}

/// Variant order is the format: append, never reorder.
#[derive(Serialize, Deserialize)]
enum DiskEndpointProfile {
    HttpsWeb { ca_pem: Option<String> },
    HttpsSpiffe { endpoint_id: String },
}

#[derive(Serialize, Deserialize)]
struct DiskForeignBundle {
    sequence: u64,
    refresh_hint: Option<u64>,
    json: String,
    accepted_at: i64,
}

impl From<FederationRecord> for DiskFederation {
    fn from(record: FederationRecord) -> Self {
        DiskFederation {
            trust_domain: record.trust_domain.into(),
            bundle_endpoint_url: record.bundle_endpoint_url,
            profile: match record.profile {
                EndpointProfile::HttpsWeb { ca_pem } => DiskEndpointProfile::HttpsWeb { ca_pem },
                EndpointProfile::HttpsSpiffe { endpoint_id } => DiskEndpointProfile::HttpsSpiffe {
                    endpoint_id: endpoint_id.into_string(),
                },
            },
            created_at: record.created_at,
            created_by: record.created_by,
            bundle: record.bundle.map(|bundle| DiskForeignBundle {
                sequence: bundle.sequence,
                refresh_hint: bundle.refresh_hint,
                json: bundle.json,
                accepted_at: bundle.accepted_at,
            }),
        }
    }
}

impl TryFrom<DiskFederation> for FederationRecord {
    type Error = StoreError;

    fn try_from(disk: DiskFederation) -> Result<Self, StoreError> {
        Ok(FederationRecord {
            // `TrustDomain` has no unchecked constructor; the check is cheap.
            trust_domain: disk
                .trust_domain
                .parse()
                .map_err(|_| StoreError::Corrupt("federation trust domain".into()))?,
            bundle_endpoint_url: disk.bundle_endpoint_url,
            profile: match disk.profile {
                DiskEndpointProfile::HttpsWeb { ca_pem } => EndpointProfile::HttpsWeb { ca_pem },
                DiskEndpointProfile::HttpsSpiffe { endpoint_id } => EndpointProfile::HttpsSpiffe {
                    endpoint_id: SpiffeId::from_stored(endpoint_id),
                },
            },
            created_at: disk.created_at,
            created_by: disk.created_by,
            bundle: disk.bundle.map(|bundle| ForeignBundle {
                sequence: bundle.sequence,
                refresh_hint: bundle.refresh_hint,
                json: bundle.json,
                accepted_at: bundle.accepted_at,
            }),
        })
    }
}

impl Stored for FederationRecord {
    const VERSION: u8 = FORMAT_VERSION_3;
    type Disk = DiskFederation;
    type V3 = DiskFederation;
    // No earlier format held a federation relationship.
    type V2 = DiskFederation;
    type V1 = DiskFederation;
}

impl Stored for AuditEntry {
    const VERSION: u8 = FORMAT_VERSION;
    type Disk = DiskAuditEntry;
    type V3 = DiskAuditEntry;
    type V2 = DiskAuditEntry;
    type V1 = AuditEntryV1;
}
impl Stored for JoinTokenRecord {
    const VERSION: u8 = FORMAT_VERSION;
    type Disk = DiskJoinToken;
    type V3 = DiskJoinToken;
    type V2 = DiskJoinToken;
    type V1 = JoinTokenRecordV1;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by certd before the storage trait existed (format 2),
    /// one value of each kind; they must keep reading the same.
    const ISSUANCE_V2: &str = "02034a0b0c0762696c6c696e67011662696c6c696e672e63657274642e696e7465726e616c01237370696666653a2f2f63657274642e696e7465726e616c2f7376632f62696c6c696e67c8019003c00207070707070707070707070707070707070707070707070707070707070707070301020305026531011b73797374656d3a736572766963656163636f756e743a6e733a736101010101d40201";
    const TOKEN_V2: &str = "02010d746f6b656e3a62696c6c696e670a12";
    const ENTRY_V2: &str = "020265310762696c6c696e67237370696666653a2f2f63657274642e696e7465726e616c2f7376632f62696c6c696e67021662696c6c696e672e63657274642e696e7465726e616c09622e6578616d706c6501901c020f6b38733a6e733a7061796d656e747307746f6b656e3a7802057569643a30";
    /// An entry with a parent agent and a JWT audience, as version 3
    /// writes it.
    const ENTRY_V3: &str = "030265310762696c6c696e67237370696666653a2f2f63657274642e696e7465726e616c2f7376632f62696c6c696e67021662696c6c696e672e63657274642e696e7465726e616c09622e6578616d706c6501901c010d756e69783a7569643a3130303002057569643a3001247370696666653a2f2f63657274642e696e7465726e616c2f6167656e742f6e6f64652d3101247370696666653a2f2f63657274642e696e7465726e616c2f7376632f7061796d656e7473";
    /// The same entry federating with partner.example, as version 4 writes
    /// it.
    const ENTRY_V4: &str = "040265310762696c6c696e67237370696666653a2f2f63657274642e696e7465726e616c2f7376632f62696c6c696e67021662696c6c696e672e63657274642e696e7465726e616c09622e6578616d706c6501901c010d756e69783a7569643a3130303002057569643a3001247370696666653a2f2f63657274642e696e7465726e616c2f6167656e742f6e6f64652d3101247370696666653a2f2f63657274642e696e7465726e616c2f7376632f7061796d656e7473010f706172746e65722e6578616d706c65";
    const AUDIT_V2: &str = "0254056973737565000b3132372e302e302e313a35010a6a6f696e2d746f6b656e010762696c6c696e67010634613062306301026e6f010d746f6b656e3a62696c6c696e67";
    const REVOKED_V2: &str = "02034a0b0cd402019003";
    /// `ISSUANCE_V2`'s record as version 5 writes it: its DER (`01 02 03`)
    /// is no certificate, so every field the DER could have given is kept.
    const ISSUANCE_V5: &str = "0501034a0b0c0762696c6c696e6701011662696c6c696e672e63657274642e696e7465726e616c0101237370696666653a2f2f63657274642e696e7465726e616c2f7376632f62696c6c696e67c8019003c0020107070707070707070707070707070707070707070707070707070707070707070301020305026531011b73797374656d3a736572766963656163636f756e743a6e733a736101010101d40201";

    fn selector(value: &str) -> Selector {
        Selector::from_stored(value.into())
    }

    /// Decodes `hex_bytes`, checks it is `expected`, and that encoding it
    /// again gives the very same bytes.
    fn check<T: Stored + Clone + PartialEq + std::fmt::Debug>(hex_bytes: &str, expected: T) {
        let bytes = hex::decode(hex_bytes).unwrap();
        assert_eq!(decode::<T>(&bytes).unwrap(), expected);
        assert_eq!(encode(&expected).unwrap(), bytes, "the format is unchanged");
    }

    /// A token policy as version 2 wrote it, before delegations: grant
    /// "a" (billing may call "x" with scope "s"), version 1, changed at 5
    /// by "t".
    const POLICY_V2: &str = "0201010161000762696c6c696e6701780101730a0174";

    #[test]
    fn a_policy_written_before_delegations_reads_the_same_and_is_rewritten_with_them() {
        let old = PolicyRecord {
            version: 1,
            grants: vec![GrantRecord {
                name: "a".into(),
                caller: GrantCaller::Service("billing".parse().unwrap()),
                audience: "x".into(),
                scopes: vec!["s".into()],
            }],
            delegations: Vec::new(),
            changed_at: 5,
            changed_by: "t".into(),
        };
        assert_eq!(
            decode::<PolicyRecord>(&hex::decode(POLICY_V2).unwrap()).unwrap(),
            old
        );
        let with_delegation = PolicyRecord {
            delegations: vec![DelegationRecord {
                name: "d".into(),
                actor: GrantCaller::SpiffeId("spiffe://certd.internal/svc/orders".parse().unwrap()),
                subject_issuers: vec!["https://idp.example".into()],
                audience: "payments".into(),
                scopes: vec!["payments:charge".into()],
                max_chain: 2,
            }],
            ..old
        };
        let bytes = encode(&with_delegation).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION_3);
        assert_eq!(decode::<PolicyRecord>(&bytes).unwrap(), with_delegation);
    }

    #[test]
    fn values_written_by_earlier_certd_read_the_same() {
        let serial: Serial = "4a0b0c".parse().unwrap();
        let revocation = Revocation {
            revoked_at: 170,
            reason_code: 1,
        };
        let issued = IssuanceRecord {
            serial: serial.clone(),
            service: "billing".parse().unwrap(),
            dns_names: vec!["billing.certd.internal".into()],
            uris: vec!["spiffe://certd.internal/svc/billing".into()],
            not_before: 100,
            not_after: 200,
            issued_at: 160,
            sha256_fingerprint: [7; 32],
            der: vec![1, 2, 3],
            attestation: Attestation::Registered {
                entry_id: "e1".into(),
                proof: Proof::Attested {
                    kind: kind::KUBERNETES.into(),
                    detail: "system:serviceaccount:ns:sa".into(),
                },
            },
            renewed_from: Some("01".parse().unwrap()),
            revocation: Some(revocation),
        };
        // Issuance records are written as version 5 since; version 2's
        // bytes read the same.
        assert_eq!(
            decode::<IssuanceRecord>(&hex::decode(ISSUANCE_V2).unwrap()).unwrap(),
            issued
        );
        check(ISSUANCE_V5, issued);
        check(
            TOKEN_V2,
            JoinTokenRecord {
                selectors: vec![selector("token:billing")],
                created_at: 5,
                expires_at: 9,
            },
        );
        let entry = EntryRecord {
            id: "e1".into(),
            service: "billing".parse().unwrap(),
            spiffe_id: "spiffe://certd.internal/svc/billing".parse().unwrap(),
            dns_names: vec![
                "billing.certd.internal".parse().unwrap(),
                "b.example".parse().unwrap(),
            ],
            ttl_seconds: Some(3600),
            selectors: vec![selector("k8s:ns:payments"), selector("token:x")],
            created_at: 1,
            created_by: "uid:0".into(),
            parent: None,
            jwt_audiences: Vec::new(),
            federates_with: Vec::new(),
        };
        // Version 2 entries read the same; this build writes entries as
        // version 4: version 3 added the parent agent, version 4 the trust
        // domains an entry federates with.
        let entry_v2 = hex::decode(ENTRY_V2).unwrap();
        assert_eq!(decode::<EntryRecord>(&entry_v2).unwrap(), entry);
        let entry_v3 = EntryRecord {
            selectors: vec![selector("unix:uid:1000")],
            parent: Some("spiffe://certd.internal/agent/node-1".parse().unwrap()),
            jwt_audiences: vec!["spiffe://certd.internal/svc/payments".into()],
            ..entry
        };
        assert_eq!(
            decode::<EntryRecord>(&hex::decode(ENTRY_V3).unwrap()).unwrap(),
            entry_v3
        );
        check(
            ENTRY_V4,
            EntryRecord {
                federates_with: vec!["partner.example".parse().unwrap()],
                ..entry_v3
            },
        );
        check(
            AUDIT_V2,
            AuditEntry {
                at: 42,
                event: AuditEvent::Issue,
                allowed: false,
                caller: "127.0.0.1:5".into(),
                attestation: Some("join-token".into()),
                service: Some("billing".into()),
                serial: Some("4a0b0c".into()),
                reason: Some("no".into()),
                selectors: vec![selector("token:billing")],
            },
        );
        check(
            REVOKED_V2,
            RevokedEntry {
                serial,
                revocation,
                not_after: 200,
            },
        );
    }

    fn token(label: &str, expires_at: i64) -> JoinTokenRecord {
        JoinTokenRecord {
            selectors: vec![selector(&format!("token:{label}"))],
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn unknown_record_formats_are_reported_not_misread() {
        let bytes = encode(&token("a", 1)).unwrap();
        let mut future = bytes.clone();
        future[0] = 99;
        assert!(matches!(
            decode::<JoinTokenRecord>(&future),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode::<JoinTokenRecord>(&[]),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(decode::<JoinTokenRecord>(&bytes).unwrap(), token("a", 1));
    }

    /// An attestor added later needs no new variant: its proof is stored
    /// as kind and detail; the two older attestors keep their own variants.
    #[test]
    fn proofs_of_any_attestor_round_trip() {
        let mut record: IssuanceRecord = decode(&hex::decode(ISSUANCE_V2).unwrap()).unwrap();
        for proof in [
            Proof::Attested {
                kind: "tpm".into(),
                detail: "ek 01ab".into(),
            },
            Proof::Attested {
                kind: kind::JOIN_TOKEN.into(),
                detail: "0011223344556677".into(),
            },
            Proof::Renewal,
        ] {
            record.attestation = Attestation::Registered {
                entry_id: "e1".into(),
                proof,
            };
            let bytes = encode(&record).unwrap();
            assert_eq!(decode::<IssuanceRecord>(&bytes).unwrap(), record);
        }
    }

    #[test]
    fn every_audit_event_round_trips_and_an_unknown_one_is_refused() {
        for event in AuditEvent::ALL {
            assert_eq!(AuditEvent::from_name(event.as_str()), Some(event));
        }
        let mut disk = DiskAuditEntry::from(AuditEntry {
            at: 1,
            event: AuditEvent::Revoke,
            allowed: true,
            caller: "uid:0".into(),
            attestation: None,
            service: None,
            serial: None,
            reason: None,
            selectors: vec![],
        });
        disk.event = "launch-missiles".into();
        let bytes = [vec![FORMAT_VERSION], postcard::to_stdvec(&disk).unwrap()].concat();
        assert!(matches!(
            decode::<AuditEntry>(&bytes),
            Err(StoreError::Corrupt(message)) if message.contains("launch-missiles")
        ));
    }

    #[test]
    fn version_1_values_still_read() {
        #[derive(serde::Serialize)]
        struct TokenV1 {
            service: String,
            created_at: i64,
            expires_at: i64,
        }
        let v1 = TokenV1 {
            service: "billing".into(),
            created_at: 0,
            expires_at: 1,
        };
        let mut bytes = vec![1];
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        assert_eq!(
            decode::<JoinTokenRecord>(&bytes).unwrap(),
            token("billing", 1),
            "a pre-entry token proves token:<its service>"
        );
        // Issuance records did not change shape: the version byte alone differs.
        let mut bytes = hex::decode(ISSUANCE_V2).unwrap();
        let current = decode::<IssuanceRecord>(&bytes).unwrap();
        bytes[0] = 1;
        assert_eq!(decode::<IssuanceRecord>(&bytes).unwrap(), current);
    }
}
