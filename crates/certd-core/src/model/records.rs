//! The records certd keeps: one per issued certificate, revocation, join
//! token, registration entry and audited decision.

use crate::identity::{DnsName, Serial, ServiceName, SpiffeId};
use crate::selector::Selector;

/// The SHA-256 of a join token: all the store ever sees of it.
pub type TokenHash = [u8; 32];

/// The durable record of one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attestation {
    /// A one-time join token, before registration entries existed (now
    /// `Registered`); kept so that older records still decode.
    JoinToken { token_id: String },
    /// The caller's current certificate, presented over mTLS, for a
    /// certificate issued without an entry (by an operator, or before
    /// entries existed).
    Renewal,
    /// An operator, through the admin API (`certd issue`). Renews only if
    /// `renewable` (`certd issue --renewable`): it belongs to no entry, so
    /// nothing else would ever end it.
    Admin { caller: String, renewable: bool },
    /// certd's own TLS serving certificate.
    ServingCertificate,
    /// An operator certificate, issued through the admin API by `caller`.
    Operator { caller: String },
    /// Issued for registration entry `entry_id`, whose selectors `proof`
    /// satisfied.
    Registered { entry_id: String, proof: Proof },
}

/// How a workload proved the selectors of its registration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// Evidence a bootstrap attestor checked: its kind (`kind`) and a
    /// non-secret account of what was shown (a join token's id, the prefix
    /// of its hash; a service account's `system:serviceaccount:<ns>:<name>`).
    Attested { kind: String, detail: String },
    /// The caller's current certificate, issued for the same entry.
    Renewal,
}

/// Attestation kinds, as requests name them and records and audits keep them.
pub mod kind {
    pub const JOIN_TOKEN: &str = "join-token";
    pub const KUBERNETES: &str = "kubernetes";
    /// Issued to a node agent for an entry parented to it; the proof's
    /// detail is the agent's SPIFFE ID.
    pub const AGENT: &str = "agent";
    /// Issued to an ACME account for the entry it is bound to (or whose
    /// names it proved control of); the proof's detail is the account id.
    pub const ACME: &str = "acme";
}

impl Attestation {
    pub fn kind(&self) -> &str {
        match self {
            Attestation::JoinToken { .. } => kind::JOIN_TOKEN,
            Attestation::Renewal => "renewal",
            Attestation::Admin { .. } => "admin",
            Attestation::ServingCertificate => "serving-certificate",
            Attestation::Operator { .. } => "operator",
            Attestation::Registered { proof, .. } => match proof {
                Proof::Attested { kind, .. } => kind,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub revoked_at: i64,
    /// RFC 5280 CRLReason code.
    pub reason_code: u8,
}

/// The certificate a renewal of another one produced: its lineage link.
/// A certificate has at most one live successor; `presented` is set once
/// the successor has itself been used to renew, which proves its holder
/// received it (see `authority::lineage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    pub serial: Serial,
    pub presented: bool,
}

/// An entry of the revocation index: what a CRL needs, without the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub revocation: Revocation,
    /// The certificate's notAfter: once past, the entry leaves the CRL.
    pub not_after: i64,
}

/// A signed CRL, as one replica publishes it for the others to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCrl {
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
    /// How many certificates it lists.
    pub entries: u64,
    pub der: Vec<u8>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    /// What was asked.
    pub event: AuditEvent,
    pub allowed: bool,
    /// Who asked: a peer address or the admin socket's uid.
    pub caller: String,
    pub attestation: Option<String>,
    pub service: Option<String>,
    pub serial: Option<String>,
    /// Why it was refused, or details of what was done. Never a secret.
    pub reason: Option<String>,
    /// The selectors the caller proved, when it proved any.
    pub selectors: Vec<Selector>,
}

/// A join token, stored under the SHA-256 of its secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// The selectors presenting the token proves (`token:<label>`).
    pub selectors: Vec<Selector>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A registration entry: which identity a workload proving all of
/// `selectors` may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub id: String,
    pub service: ServiceName,
    pub spiffe_id: SpiffeId,
    /// Every DNS SAN, the default `<service>.<trust-domain>` first.
    pub dns_names: Vec<DnsName>,
    /// Certificate lifetime in seconds; `None` for the configured default.
    pub ttl_seconds: Option<u64>,
    /// Sorted and without duplicates.
    pub selectors: Vec<Selector>,
    pub created_at: i64,
    pub created_by: String,
    /// The node agent (`spiffe://<td>/agent/<name>`) this entry is issued
    /// through, and only through; `None` for direct attestation only.
    pub parent: Option<SpiffeId>,
    /// The audiences JWT-SVIDs for this entry may name; none: no tokens.
    pub jwt_audiences: Vec<String>,
    /// The foreign trust domains this entry's workloads trust (federation):
    /// the node agent hands them those domains' bundles. Sorted, no
    /// duplicates; never certd's own.
    pub federates_with: Vec<crate::identity::TrustDomain>,
}

impl EntryRecord {
    /// Whether this entry names a node agent (`spiffe://<td>/agent/<name>`):
    /// its holder may obtain the entries parented to it.
    pub fn is_agent(&self) -> bool {
        self.spiffe_id.path().starts_with("agent/")
    }
}

/// Who a grant is for: every entry of a service, or one SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantCaller {
    Service(ServiceName),
    SpiffeId(SpiffeId),
}

impl std::fmt::Display for GrantCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrantCaller::Service(service) => write!(f, "{service}"),
            GrantCaller::SpiffeId(id) => write!(f, "{id}"),
        }
    }
}

/// One rule of the token policy: `caller` may get tokens for `audience`
/// carrying any of `scopes` (none: the audience alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Unique within the policy; what audits and `policy explain` name.
    pub name: String,
    pub caller: GrantCaller,
    pub audience: String,
    /// Sorted and without duplicates.
    pub scopes: Vec<String>,
}

/// One delegation of the token policy (RFC 8693 token exchange): `actor`
/// may trade a token of a subject issued by one of `subject_issuers` for a
/// token for `audience` on the subject's behalf, carrying any of `scopes`
/// the subject's token carries too, with at most `max_chain` actors in the
/// new token's `act` chain (the actor included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRecord {
    /// Unique within the policy, among grants too.
    pub name: String,
    pub actor: GrantCaller,
    /// The `iss` of the subjects' original tokens (certd's own issuer for
    /// subjects certd issued to). Sorted and without duplicates.
    pub subject_issuers: Vec<String>,
    pub audience: String,
    /// Sorted and without duplicates.
    pub scopes: Vec<String>,
    pub max_chain: u8,
}

/// The token policy: every grant and delegation, replaced as a whole.
/// `version` counts the replacements, so no replica ever goes back to an
/// older policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRecord {
    pub version: u64,
    pub grants: Vec<GrantRecord>,
    pub delegations: Vec<DelegationRecord>,
    pub changed_at: i64,
    pub changed_by: String,
}

/// What an audited decision was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditEvent {
    /// A workload certificate: bootstrap, or an operator's `certd issue`.
    #[default]
    Issue,
    IssueOperator,
    Renew,
    Revoke,
    AdminAccess,
    CreateJoinToken,
    CreateEntry,
    UpdateEntry,
    DeleteEntry,
    /// A JWT-SVID.
    MintJwt,
    /// An OAuth access token from the token endpoint.
    MintAccessToken,
    /// The token policy was replaced.
    ReplacePolicy,
    /// A token was introspected (RFC 7662).
    IntrospectToken,
    /// A token was exchanged for one on a subject's behalf (RFC 8693).
    ExchangeToken,
    /// The daemon took a database it could not check against the CA's
    /// marks (`--danger-accept-unmarked-store`).
    AcceptUnmarkedStore,
    /// An operator revoked unused join tokens.
    RevokeJoinToken,
    /// A federation relationship was added.
    AddFederation,
    /// A federation relationship was removed.
    RemoveFederation,
    /// A foreign trust domain's bundle was accepted (a new sequence).
    AcceptForeignBundle,
    /// An ACME external account binding key was made for an entry.
    CreateAcmeEab,
    /// An ACME account was created.
    CreateAcmeAccount,
    /// An ACME account was deactivated (by its holder or an operator).
    DeactivateAcmeAccount,
    /// An entry's ACME policy was set.
    SetAcmePolicy,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 23] = [
        AuditEvent::Issue,
        AuditEvent::IssueOperator,
        AuditEvent::Renew,
        AuditEvent::Revoke,
        AuditEvent::AdminAccess,
        AuditEvent::CreateJoinToken,
        AuditEvent::CreateEntry,
        AuditEvent::UpdateEntry,
        AuditEvent::DeleteEntry,
        AuditEvent::MintJwt,
        AuditEvent::MintAccessToken,
        AuditEvent::ReplacePolicy,
        AuditEvent::IntrospectToken,
        AuditEvent::ExchangeToken,
        AuditEvent::AcceptUnmarkedStore,
        AuditEvent::RevokeJoinToken,
        AuditEvent::AddFederation,
        AuditEvent::RemoveFederation,
        AuditEvent::AcceptForeignBundle,
        AuditEvent::CreateAcmeEab,
        AuditEvent::CreateAcmeAccount,
        AuditEvent::DeactivateAcmeAccount,
        AuditEvent::SetAcmePolicy,
    ];

    /// The name logs, the audit listing and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Issue => "issue",
            AuditEvent::IssueOperator => "issue-operator",
            AuditEvent::Renew => "renew",
            AuditEvent::Revoke => "revoke",
            AuditEvent::AdminAccess => "admin-access",
            AuditEvent::CreateJoinToken => "create-join-token",
            AuditEvent::CreateEntry => "create-entry",
            AuditEvent::UpdateEntry => "update-entry",
            AuditEvent::DeleteEntry => "delete-entry",
            AuditEvent::MintJwt => "mint-jwt",
            AuditEvent::MintAccessToken => "mint-access-token",
            AuditEvent::ReplacePolicy => "replace-policy",
            AuditEvent::IntrospectToken => "introspect-token",
            AuditEvent::ExchangeToken => "exchange-token",
            AuditEvent::AcceptUnmarkedStore => "accept-unmarked-store",
            AuditEvent::RevokeJoinToken => "revoke-join-token",
            AuditEvent::AddFederation => "add-federation",
            AuditEvent::RemoveFederation => "remove-federation",
            AuditEvent::AcceptForeignBundle => "accept-foreign-bundle",
            AuditEvent::CreateAcmeEab => "create-acme-eab",
            AuditEvent::CreateAcmeAccount => "create-acme-account",
            AuditEvent::DeactivateAcmeAccount => "deactivate-acme-account",
            AuditEvent::SetAcmePolicy => "set-acme-policy",
        }
    }

    /// The event of a name `as_str` gave; `None` for any other.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == name)
    }
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a revocation request for one serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked now.
    Revoked(IssuanceRecord),
    /// Was already revoked; the first time and reason are kept.
    AlreadyRevoked(IssuanceRecord),
}

impl RevokeOutcome {
    pub fn record(&self) -> &IssuanceRecord {
        match self {
            RevokeOutcome::Revoked(record) | RevokeOutcome::AlreadyRevoked(record) => record,
        }
    }
}
