//! The authority: every issuance decision, start to finish.
//!
//! It strings the pieces together in one fixed order: parse the CSR, attest
//! the caller, match its proven selectors to exactly one registration
//! entry, check policy, sign, record durably, and only then return the
//! certificate. It writes one audit event per decision. It knows nothing of
//! gRPC or of the CLI; `api` and `cli` call it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::attest::{AdminCaller, AttestError, JoinToken, KubernetesAttestor, RenewalEvidence};
use crate::audit::{self, Decision};
use crate::ca::csr::ValidatedCsr;
use crate::ca::{CaError, CertificateAuthority, SignedCertificate, unix_seconds};
use crate::config::{AuthoritySettings, ConfigError, Lifetimes};
use crate::identity::{OperatorIdentity, Serial, ServiceName, WorkloadIdentity};
use crate::limits::Limits;
use crate::policy::{self, PolicyError};
use crate::registry::{self, EntryBounds, EntrySpec, Registry, RegistryError, Selector};
use crate::revocation::{RevocationReason, Revocations};
use crate::store::{
    Attestation, EntryRecord, IssuanceRecord, JoinTokenRecord, Proof, Revocation, RevokeOutcome,
    Store, StoreError, TokenHash,
};
use crate::{Error, Result};

/// How many fresh serials to try if one is, against all odds, taken.
const SERIAL_ATTEMPTS: usize = 3;

/// A certificate that has been issued and durably recorded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub record: IssuanceRecord,
    pub certificate_pem: String,
    pub chain_pem: String,
}

/// Join tokens just created; the secrets are shown once.
#[derive(Debug)]
pub struct CreatedJoinTokens {
    pub tokens: Vec<JoinToken>,
    pub expires_at: i64,
    /// The registration entry they were made for.
    pub entry: EntryRecord,
}

/// Which registration entry join tokens are made for.
#[derive(Debug, Clone)]
pub enum TokenFor {
    /// The entry with this id.
    Entry(String),
    /// The one entry of this service that a join token can satisfy.
    Service(String),
}

/// Most join tokens one request may create.
pub const MAX_TOKENS_PER_REQUEST: usize = 100_000;

/// An issuance record as operators see it (`certd list`, `certd show`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertificateSummary {
    pub serial: String,
    pub service: String,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    pub sha256_fingerprint: String,
    pub attestation: String,
    /// The registration entry it was issued for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    pub renewed_from: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate_pem: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub chain_pem: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trust_bundle_pem: String,
}

/// Who is asking, for the audit log: a peer address or the admin socket.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub struct Authority {
    ca: Arc<CertificateAuthority>,
    store: Store,
    lifetimes: Lifetimes,
    revocations: Arc<Revocations>,
    limits: Arc<Limits>,
    /// SPIFFE IDs of operators allowed on the admin API over mTLS.
    admins: Arc<HashSet<String>>,
    registry: Arc<Registry>,
    entry_bounds: Arc<EntryBounds>,
    /// `None` when Kubernetes service-account tokens are not accepted.
    kubernetes: Option<Arc<KubernetesAttestor>>,
}

/// What a revocation did, for one certificate.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub record: IssuanceRecord,
    pub newly_revoked: bool,
}

/// The result of a revocation request: the certificates and the number of
/// the CRL that lists them.
#[derive(Debug, Clone)]
pub struct RevocationResult {
    pub certificates: Vec<Revoked>,
    pub crl_number: u64,
}

/// How an issuance is recorded: under which service, attested how, and
/// which token it consumes.
struct RecordedAs {
    service: ServiceName,
    attestation: Attestation,
    renewed_from: Option<Serial>,
    token: Option<TokenHash>,
}

/// The issuance record of a certificate just signed.
fn record_of(
    signed: &SignedCertificate,
    recorded_as: &RecordedAs,
    now: SystemTime,
) -> IssuanceRecord {
    IssuanceRecord {
        serial: signed.serial.clone(),
        service: recorded_as.service.clone(),
        dns_names: signed.dns_names.clone(),
        uris: signed.uris.clone(),
        not_before: signed.not_before,
        not_after: signed.not_after,
        issued_at: unix_seconds(now),
        sha256_fingerprint: signed.sha256_fingerprint,
        der: signed.der.to_vec(),
        attestation: recorded_as.attestation.clone(),
        renewed_from: recorded_as.renewed_from.clone(),
        revocation: None,
    }
}

/// What a bootstrap attestor proved.
struct Proven {
    selectors: Vec<Selector>,
    proof: Proof,
    /// The join token to consume with the record, if one was presented.
    token: Option<TokenHash>,
}

/// What one issuance needs besides the CSR.
struct IssuanceRequest {
    identity: WorkloadIdentity,
    ttl: Duration,
    attestation: Attestation,
    renewed_from: Option<Serial>,
    token: Option<TokenHash>,
}

impl Authority {
    /// Loads the registration entries and, if configured, the Kubernetes
    /// issuer's keys.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        store: Store,
        settings: AuthoritySettings,
    ) -> Result<Self> {
        let revocations = Arc::new(Revocations::new(
            ca.clone(),
            store.clone(),
            settings.revocation,
        ));
        let kubernetes = settings
            .kubernetes
            .map(KubernetesAttestor::load)
            .transpose()
            .map_err(|error| ConfigError::Invalid {
                field: "kubernetes",
                message: error.to_string(),
            })?
            .map(Arc::new);
        let entry_bounds = EntryBounds {
            trust_domain: ca.trust_domain().clone(),
            max_ttl: settings.lifetimes.max_cert_ttl,
            reserved_dns_names: settings.server_names,
        };
        Ok(Authority {
            registry: Arc::new(Registry::load(store.clone())?),
            entry_bounds: Arc::new(entry_bounds),
            kubernetes,
            ca,
            store,
            lifetimes: settings.lifetimes,
            revocations,
            limits: Arc::new(Limits::new(settings.limits)),
            admins: Arc::new(settings.admins.into_iter().collect()),
        })
    }

    /// Decides whether an mTLS caller of the admin API may use it: only a
    /// current operator certificate certd issued, for an operator listed in
    /// `admins`. Refusals are audited with who tried.
    pub fn authorize_admin(&self, peer: &str, client_leaf: Option<&[u8]>) -> Result<Caller> {
        let outcome =
            match AdminCaller::check(client_leaf, &self.store, unix_seconds(SystemTime::now())) {
                Ok(AdminCaller::Operator { spiffe_id }) if self.admins.contains(&spiffe_id) => {
                    Ok(Caller(spiffe_id))
                }
                Ok(
                    AdminCaller::Operator { spiffe_id } | AdminCaller::NotOperator { spiffe_id },
                ) => Err((
                    spiffe_id.clone(),
                    PolicyError::NotAnAdmin { spiffe_id }.into(),
                )),
                Err(error) => Err((peer.to_owned(), error)),
            };
        outcome.map_err(|(who, error): (String, Error)| {
            audit::record(
                &self.store,
                Decision {
                    event: "admin-access",
                    allowed: false,
                    caller: &who,
                    reason: Some(error.to_string()),
                    ..Decision::default()
                },
            );
            error
        })
    }

    /// Issues an operator certificate (`certd operator issue`): the admin
    /// API over mTLS accepts it when its SPIFFE ID is listed in `admins`.
    pub async fn issue_operator_certificate(
        &self,
        caller: &Caller,
        name: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Issued> {
        let outcome = self
            .issue_operator_certificate_inner(caller, name, csr_der, ttl)
            .await;
        audit_issuance(
            &self.store,
            IssuanceEvent::new("issue-operator", caller, "admin", &[]),
            &outcome,
        );
        outcome
    }

    async fn issue_operator_certificate_inner(
        &self,
        caller: &Caller,
        name: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Issued> {
        let operator = OperatorIdentity {
            trust_domain: self.ca.trust_domain().clone(),
            name: name.parse()?,
        };
        let csr = ValidatedCsr::from_der(csr_der)?;
        policy::check_operator_csr(&csr, &operator)?;
        let ttl = ttl.unwrap_or(self.lifetimes.default_cert_ttl);
        policy::check_ttl(ttl, self.lifetimes.max_cert_ttl)?;
        let recorded_as = RecordedAs {
            service: operator.name.clone(),
            attestation: Attestation::Operator {
                caller: caller.0.clone(),
            },
            renewed_from: None,
            token: None,
        };
        self.sign_and_record(
            |serial, now| self.ca.sign_operator(&csr, &operator, serial, ttl, now),
            recorded_as,
        )
        .await
    }

    /// The CRL and OCSP publisher.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Revokes one certificate by serial. Idempotent: revoking again keeps
    /// the first time and reason. Returns once the revocation is durable and
    /// the published CRL lists it.
    pub async fn revoke(
        &self,
        caller: &Caller,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let outcome = match self.revoke_serial(serial, reason).await {
            Ok(revoked) => self.publish(vec![revoked]).await,
            Err(error) => Err(error),
        };
        audit_revocation(&self.store, caller, serial, reason, &outcome);
        outcome
    }

    /// Revokes every unexpired certificate of `service`.
    pub async fn revoke_service(
        &self,
        caller: &Caller,
        service: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let outcome = self.revoke_service_inner(service, reason).await;
        audit_revocation(
            &self.store,
            caller,
            &format!("service {service}"),
            reason,
            &outcome,
        );
        outcome
    }

    async fn revoke_service_inner(
        &self,
        service: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let service: ServiceName = service.parse()?;
        let now = unix_seconds(SystemTime::now());
        let mut revoked = Vec::new();
        for record in self.store.certificates(Some(&service))? {
            if record.not_after >= now {
                revoked.push(self.revoke_serial(&record.serial.to_hex(), reason).await?);
            }
        }
        if revoked.is_empty() {
            return Err(Error::NotFound(format!(
                "unexpired certificate of service {service}"
            )));
        }
        self.publish(revoked).await
    }

    async fn revoke_serial(&self, serial: &str, reason: RevocationReason) -> Result<Revoked> {
        let serial: Serial = serial.parse()?;
        let revocation = Revocation {
            revoked_at: unix_seconds(SystemTime::now()),
            reason_code: reason.code(),
        };
        let outcome = self
            .store
            .revoke(&serial, revocation)
            .await?
            .ok_or_else(|| Error::NotFound(format!("certificate {serial}")))?;
        self.revocations.note_revocation(&serial);
        Ok(match outcome {
            RevokeOutcome::Revoked(record) => Revoked {
                record,
                newly_revoked: true,
            },
            RevokeOutcome::AlreadyRevoked(record) => Revoked {
                record,
                newly_revoked: false,
            },
        })
    }

    async fn publish(&self, certificates: Vec<Revoked>) -> Result<RevocationResult> {
        let crl = if certificates.iter().any(|c| c.newly_revoked) {
            self.revocations.refresh_crl().await?
        } else {
            self.revocations.current_crl().await?
        };
        Ok(RevocationResult {
            certificates,
            crl_number: crl.number,
        })
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bootstrap: a CSR attested by a one-time join token, which proves
    /// the `token:` selectors of the entry it was made for.
    pub async fn issue_with_join_token(
        &self,
        caller: &Caller,
        csr_der: &[u8],
        token: &str,
    ) -> Result<Issued> {
        self.bootstrap(caller, "join-token", csr_der, || {
            let token = JoinToken::from_presented(token)?;
            let now = unix_seconds(SystemTime::now());
            let claim = token.verify(&self.store, now)?;
            let selectors = claim
                .selectors
                .iter()
                .map(|s| s.parse())
                .collect::<std::result::Result<_, String>>()
                .map_err(StoreError::Corrupt)?;
            Ok(Proven {
                selectors,
                proof: Proof::JoinToken {
                    token_id: token.id(),
                },
                token: Some(token.hash()),
            })
        })
        .await
    }

    /// Bootstrap: a CSR attested by a Kubernetes projected service-account
    /// token, which proves `k8s:` selectors.
    pub async fn issue_with_kubernetes_token(
        &self,
        caller: &Caller,
        csr_der: &[u8],
        token: &str,
    ) -> Result<Issued> {
        self.bootstrap(caller, "kubernetes", csr_der, || {
            let attestor = self
                .kubernetes
                .as_ref()
                .ok_or(AttestError::KubernetesNotConfigured)?;
            let evidence = attestor.verify(token)?;
            Ok(Proven {
                selectors: evidence.selectors,
                proof: Proof::KubernetesToken {
                    subject: evidence.subject,
                },
                token: None,
            })
        })
        .await
    }

    /// The common path of every bootstrap: limits, the CSR, the attestor's
    /// proof, the one matching entry, then issuance; audited with the
    /// selectors proven, whatever the outcome.
    async fn bootstrap(
        &self,
        caller: &Caller,
        attestation: &str,
        csr_der: &[u8],
        attest: impl FnOnce() -> Result<Proven>,
    ) -> Result<Issued> {
        let mut proven_selectors = Vec::new();
        let outcome = self
            .bootstrap_inner(csr_der, attest, &mut proven_selectors)
            .await;
        audit_issuance(
            &self.store,
            IssuanceEvent::new("issue", caller, attestation, &proven_selectors),
            &outcome,
        );
        outcome
    }

    async fn bootstrap_inner(
        &self,
        csr_der: &[u8],
        attest: impl FnOnce() -> Result<Proven>,
        proven_selectors: &mut Vec<Selector>,
    ) -> Result<Issued> {
        // Limits come first, before any expensive work is done for the caller.
        let _admission = self.limits.admit()?;
        self.limits.issuance()?;
        let csr = ValidatedCsr::from_der(csr_der)?;
        let proven = attest()?;
        proven_selectors.clone_from(&proven.selectors);
        let entry = self.registry.resolve(&proven.selectors)?;
        let mut request = self.request_for_entry(&entry, proven.proof);
        request.token = proven.token;
        self.issue(&csr, request).await
    }

    /// An issuance for a registration entry: its names and lifetime.
    fn request_for_entry(&self, entry: &EntryRecord, proof: Proof) -> IssuanceRequest {
        let ttl = entry
            .ttl_seconds
            .map_or(self.lifetimes.default_cert_ttl, Duration::from_secs)
            .min(self.lifetimes.max_cert_ttl);
        IssuanceRequest {
            identity: registry::identity_of(entry),
            ttl,
            attestation: Attestation::Registered {
                entry_id: entry.id.clone(),
                proof,
            },
            renewed_from: None,
            token: None,
        }
    }

    /// Renewal: a CSR for a fresh key, attested by the caller's current
    /// certificate (`client_leaf`, from the mTLS handshake).
    pub async fn renew(
        &self,
        caller: &Caller,
        csr_der: &[u8],
        client_leaf: Option<&[u8]>,
    ) -> Result<Issued> {
        let mut presented = None;
        let outcome = self.renew_inner(csr_der, client_leaf, &mut presented).await;
        let mut event = IssuanceEvent::new("renew", caller, "renewal", &[]);
        event.presented = presented;
        audit_issuance(&self.store, event, &outcome);
        outcome
    }

    /// Renewal; `presented` learns the service and serial of the caller's
    /// certificate once it is known, so a refusal says whose it was.
    async fn renew_inner(
        &self,
        csr_der: &[u8],
        client_leaf: Option<&[u8]>,
        presented: &mut Option<(ServiceName, Serial)>,
    ) -> Result<Issued> {
        let _admission = self.limits.admit()?;
        self.limits.issuance()?;
        let evidence =
            RenewalEvidence::check(client_leaf, &self.store, unix_seconds(SystemTime::now()))?;
        let current = evidence.current;
        *presented = Some((current.service.clone(), current.serial.clone()));
        let csr = ValidatedCsr::from_der(csr_der)?;
        // A certificate issued for an entry renews only while the entry
        // exists, and gets the entry's names and lifetime; one issued
        // without (by an operator) keeps its service's default identity.
        let mut request = match current.attestation.entry_id() {
            Some(id) => {
                let entry = self
                    .registry
                    .get(id)
                    .ok_or_else(|| RegistryError::EntryDeleted { id: id.to_owned() })?;
                self.request_for_entry(&entry, Proof::Renewal)
            }
            None => IssuanceRequest {
                identity: self.identity(current.service),
                ttl: self.lifetimes.default_cert_ttl,
                attestation: Attestation::Renewal,
                renewed_from: None,
                token: None,
            },
        };
        request.renewed_from = Some(current.serial);
        self.issue(&csr, request).await
    }

    /// An operator issues directly (CI): `ttl` of `None` means the default.
    pub async fn issue_for_operator(
        &self,
        caller: &Caller,
        service: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Issued> {
        let outcome = self
            .issue_for_operator_inner(caller, service, csr_der, ttl)
            .await;
        audit_issuance(
            &self.store,
            IssuanceEvent::new("issue", caller, "admin", &[]),
            &outcome,
        );
        outcome
    }

    async fn issue_for_operator_inner(
        &self,
        caller: &Caller,
        service: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Issued> {
        let service: ServiceName = service.parse()?;
        let csr = ValidatedCsr::from_der(csr_der)?;
        let ttl = ttl.unwrap_or(self.lifetimes.default_cert_ttl);
        policy::check_ttl(ttl, self.lifetimes.max_cert_ttl)?;
        let request = IssuanceRequest {
            identity: self.identity(service),
            ttl,
            attestation: Attestation::Admin {
                caller: caller.0.clone(),
            },
            renewed_from: None,
            token: None,
        };
        self.issue(&csr, request).await
    }

    /// Creates `count` one-time join tokens for a registration entry, all
    /// durable when this returns. Each proves the entry's `token:`
    /// selectors, so it stops working if the entry is deleted.
    pub async fn create_join_tokens(
        &self,
        caller: &Caller,
        target: &TokenFor,
        ttl: Option<Duration>,
        count: usize,
    ) -> Result<CreatedJoinTokens> {
        let outcome = self.create_join_tokens_inner(target, ttl, count).await;
        let decision = match &outcome {
            Ok(created) => Decision {
                event: "create-join-token",
                allowed: true,
                caller: &caller.0,
                service: Some(created.entry.service.to_string()),
                reason: Some(format!(
                    "{} token(s) for entry {}, first id {}, expire at {}",
                    created.tokens.len(),
                    created.entry.id,
                    created
                        .tokens
                        .first()
                        .map(JoinToken::id)
                        .unwrap_or_default(),
                    created.expires_at
                )),
                selectors: created.entry.selectors.clone(),
                ..Decision::default()
            },
            Err(error) => Decision {
                event: "create-join-token",
                allowed: false,
                caller: &caller.0,
                service: match target {
                    TokenFor::Service(service) => Some(service.clone()),
                    TokenFor::Entry(_) => None,
                },
                reason: Some(match target {
                    TokenFor::Entry(id) => format!("entry {id:?}: {error}"),
                    TokenFor::Service(_) => error.to_string(),
                }),
                ..Decision::default()
            },
        };
        audit::record(&self.store, decision);
        outcome
    }

    async fn create_join_tokens_inner(
        &self,
        target: &TokenFor,
        ttl: Option<Duration>,
        count: usize,
    ) -> Result<CreatedJoinTokens> {
        let entry = match target {
            TokenFor::Entry(id) => self
                .registry
                .get(id)
                .ok_or_else(|| Error::NotFound(format!("registration entry {id:?}")))?,
            TokenFor::Service(service) => self.registry.token_entry_of(&service.parse()?)?,
        };
        let selectors = self.registry.token_selectors(&entry.id)?;
        if !(1..=MAX_TOKENS_PER_REQUEST).contains(&count) {
            return Err(Error::InvalidArgument(format!(
                "token count {count} is not between 1 and {MAX_TOKENS_PER_REQUEST}"
            )));
        }
        let ttl = ttl.unwrap_or(self.lifetimes.default_join_token_ttl);
        policy::check_ttl(ttl, self.lifetimes.max_join_token_ttl)?;
        let now = unix_seconds(SystemTime::now());
        let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let record = JoinTokenRecord {
            selectors: selectors.iter().map(Selector::to_string).collect(),
            created_at: now,
            expires_at,
        };
        let tokens: Vec<JoinToken> = (0..count).map(|_| JoinToken::generate()).collect();
        let entries: Vec<_> = tokens.iter().map(|t| (t.hash(), record.clone())).collect();
        self.store.insert_join_tokens(&entries).await?;
        Ok(CreatedJoinTokens {
            tokens,
            expires_at,
            entry,
        })
    }

    /// Creates a registration entry; it applies to the next request.
    pub async fn create_entry(&self, caller: &Caller, spec: &EntrySpec) -> Result<EntryRecord> {
        let outcome = match spec.validate(&self.entry_bounds) {
            Ok(valid) => {
                let now = unix_seconds(SystemTime::now());
                self.registry.create(valid, now, &caller.0).await
            }
            Err(error) => Err(error),
        };
        let decision = match &outcome {
            Ok(entry) => Decision {
                event: "create-entry",
                allowed: true,
                caller: &caller.0,
                service: Some(entry.service.to_string()),
                reason: Some(format!(
                    "entry {}: {}, DNS {}, TTL {}",
                    entry.id,
                    entry.spiffe_id,
                    entry.dns_names.join(" "),
                    entry
                        .ttl_seconds
                        .map_or("default".to_owned(), |s| format!("{s}s"))
                )),
                selectors: entry.selectors.clone(),
                ..Decision::default()
            },
            Err(error) => Decision {
                event: "create-entry",
                allowed: false,
                caller: &caller.0,
                service: Some(spec.service.clone()),
                reason: Some(error.to_string()),
                selectors: spec.selectors.clone(),
                ..Decision::default()
            },
        };
        audit::record(&self.store, decision);
        outcome
    }

    /// Deletes a registration entry: no new certificate is issued for it,
    /// and certificates issued for it no longer renew.
    pub async fn delete_entry(&self, caller: &Caller, id: &str) -> Result<EntryRecord> {
        let outcome = self.registry.delete(id).await;
        let decision = match &outcome {
            Ok(entry) => Decision {
                event: "delete-entry",
                allowed: true,
                caller: &caller.0,
                service: Some(entry.service.to_string()),
                reason: Some(format!("entry {}", entry.id)),
                selectors: entry.selectors.clone(),
                ..Decision::default()
            },
            Err(error) => Decision {
                event: "delete-entry",
                allowed: false,
                caller: &caller.0,
                reason: Some(format!("entry {id:?}: {error}")),
                ..Decision::default()
            },
        };
        audit::record(&self.store, decision);
        outcome
    }

    /// Every registration entry, or one service's, oldest first.
    pub fn entries(&self, service: Option<&str>) -> Result<Vec<EntryRecord>> {
        let service = service.map(str::parse::<ServiceName>).transpose()?;
        Ok(self.registry.list(service.as_ref()))
    }

    /// Issues and records certd's own serving certificate.
    pub async fn issue_serving_certificate(
        &self,
        key: &rcgen::KeyPair,
        names: &[String],
        ttl: Duration,
    ) -> Result<Issued> {
        let recorded_as = RecordedAs {
            service: "certd".parse()?,
            attestation: Attestation::ServingCertificate,
            renewed_from: None,
            token: None,
        };
        self.sign_and_record(
            |serial, now| self.ca.sign_server(key, names, serial, ttl, now),
            recorded_as,
        )
        .await
    }

    /// The record of one certificate.
    pub fn certificate(&self, serial: &str) -> Result<IssuanceRecord> {
        let serial: Serial = serial.parse()?;
        self.store
            .certificate(&serial)?
            .ok_or_else(|| Error::NotFound(format!("certificate {serial}")))
    }

    /// The `limit` most recently issued certificates, or one service's, as
    /// listings show them: without PEMs, which are for `certificate`.
    pub fn listing(&self, service: Option<&str>, limit: usize) -> Result<Vec<CertificateSummary>> {
        let service = service.map(str::parse::<ServiceName>).transpose()?;
        let now = unix_seconds(SystemTime::now());
        let records = self.store.newest_certificates(service.as_ref(), limit)?;
        Ok(records
            .iter()
            .map(|record| {
                let mut summary = self.summary(record, now);
                summary.certificate_pem.clear();
                summary.chain_pem.clear();
                summary.trust_bundle_pem.clear();
                summary
            })
            .collect())
    }

    /// What operators see of a record: its facts, status at `now`, and PEMs.
    pub fn summary(&self, record: &IssuanceRecord, now: i64) -> CertificateSummary {
        let certificate_pem = crate::ca::pem_encode("CERTIFICATE", &record.der);
        let mut chain_pem = certificate_pem.clone();
        chain_pem.push_str(&crate::ca::pem_encode(
            "CERTIFICATE",
            self.ca.intermediate_der(),
        ));
        CertificateSummary {
            serial: record.serial.to_hex(),
            service: record.service.to_string(),
            dns_names: record.dns_names.clone(),
            uris: record.uris.clone(),
            not_before: record.not_before,
            not_after: record.not_after,
            issued_at: record.issued_at,
            sha256_fingerprint: hex::encode(record.sha256_fingerprint),
            attestation: record.attestation.kind().to_owned(),
            entry_id: record.attestation.entry_id().map(str::to_owned),
            renewed_from: record.renewed_from.as_ref().map(Serial::to_hex),
            status: record.state(now).as_str().to_owned(),
            certificate_pem,
            chain_pem,
            trust_bundle_pem: self.ca.trust_bundle_pem().to_owned(),
        }
    }

    fn identity(&self, service: ServiceName) -> WorkloadIdentity {
        WorkloadIdentity::for_service(self.ca.trust_domain(), service)
    }

    /// Policy, signing and recording: the common end of every issuance.
    async fn issue(&self, csr: &ValidatedCsr, request: IssuanceRequest) -> Result<Issued> {
        policy::check_csr(csr, &request.identity)?;
        // Operators (`certd issue`) are not rate limited; workloads are,
        // per service, once their identity is known.
        if !matches!(request.attestation, Attestation::Admin { .. }) {
            self.limits.service_issuance(&request.identity.service)?;
        }
        let recorded_as = RecordedAs {
            service: request.identity.service.clone(),
            attestation: request.attestation,
            renewed_from: request.renewed_from,
            token: request.token,
        };
        let (identity, ttl) = (&request.identity, request.ttl);
        self.sign_and_record(
            |serial, now| self.ca.sign_workload(csr, identity, serial, ttl, now),
            recorded_as,
        )
        .await
    }

    /// The common end of every issuance: sign with a fresh serial, record
    /// durably (consuming the token, if any), and only then hand the
    /// certificate out. A taken serial, practically impossible, is retried
    /// with a new one.
    async fn sign_and_record(
        &self,
        sign: impl Fn(Serial, SystemTime) -> std::result::Result<SignedCertificate, CaError>,
        recorded_as: RecordedAs,
    ) -> Result<Issued> {
        let now = SystemTime::now();
        for _ in 0..SERIAL_ATTEMPTS {
            let signed = sign(self.fresh_serial()?, now)?;
            let record = record_of(&signed, &recorded_as, now);
            match self
                .store
                .record_issuance(&record, recorded_as.token.as_ref())
                .await
            {
                Err(StoreError::SerialTaken(_)) => continue,
                Err(StoreError::TokenAlreadyUsed) => {
                    return Err(AttestError::InvalidJoinToken.into());
                }
                outcome => outcome?,
            }
            return Ok(self.issued(record, &signed));
        }
        Err(Error::Store(StoreError::Corrupt(
            "no free serial found".into(),
        )))
    }

    fn fresh_serial(&self) -> Result<Serial> {
        // 158 random bits make a collision practically impossible; checking
        // first keeps a broken RNG from signing a duplicate, and the store's
        // transaction refuses one in any case.
        let serial = Serial::generate();
        if self.store.serial_exists(&serial)? {
            return Err(StoreError::SerialTaken(serial).into());
        }
        Ok(serial)
    }

    fn issued(&self, record: IssuanceRecord, signed: &SignedCertificate) -> Issued {
        Issued {
            certificate_pem: signed.pem(),
            chain_pem: self.ca.chain_pem(signed),
            record,
        }
    }
}

/// One audit entry per certificate a revocation request touched, or one
/// for its refusal.
fn audit_revocation(
    store: &Store,
    caller: &Caller,
    target: &str,
    reason: RevocationReason,
    outcome: &Result<RevocationResult>,
) {
    match outcome {
        Ok(result) => {
            for revoked in &result.certificates {
                let state = if revoked.newly_revoked {
                    "revoked"
                } else {
                    "already revoked"
                };
                audit::record(
                    store,
                    Decision {
                        event: "revoke",
                        allowed: true,
                        caller: &caller.0,
                        service: Some(revoked.record.service.to_string()),
                        serial: Some(revoked.record.serial.to_hex()),
                        reason: Some(format!("{state}: {reason}; CRL {}", result.crl_number)),
                        ..Decision::default()
                    },
                );
            }
        }
        Err(error) => audit::record(
            store,
            Decision {
                event: "revoke",
                allowed: false,
                caller: &caller.0,
                serial: Some(target.to_owned()),
                reason: Some(format!("{error} (asked reason: {reason})")),
                ..Decision::default()
            },
        ),
    }
}

/// What an issuance decision is audited as.
struct IssuanceEvent<'a> {
    event: &'a str,
    caller: &'a Caller,
    attestation: &'a str,
    selectors: Vec<String>,
    /// For a renewal: the service and serial of the certificate presented.
    presented: Option<(ServiceName, Serial)>,
}

impl<'a> IssuanceEvent<'a> {
    fn new(event: &'a str, caller: &'a Caller, attestation: &'a str, proven: &[Selector]) -> Self {
        IssuanceEvent {
            event,
            caller,
            attestation,
            selectors: proven.iter().map(Selector::to_string).collect(),
            presented: None,
        }
    }
}

/// One audit entry per issuance decision. Never includes tokens or keys.
fn audit_issuance(store: &Store, event: IssuanceEvent<'_>, outcome: &Result<Issued>) {
    let decision = match outcome {
        Ok(issued) => {
            let record = &issued.record;
            let mut details = Vec::new();
            if let Some(entry_id) = record.attestation.entry_id() {
                details.push(format!("entry {entry_id}"));
            }
            if let Some(serial) = &record.renewed_from {
                details.push(format!("renewed {serial}"));
            }
            Decision {
                event: event.event,
                allowed: true,
                caller: &event.caller.0,
                attestation: Some(event.attestation),
                service: Some(record.service.to_string()),
                serial: Some(record.serial.to_hex()),
                reason: (!details.is_empty()).then(|| details.join("; ")),
                selectors: event.selectors,
            }
        }
        Err(error) => Decision {
            event: event.event,
            allowed: false,
            caller: &event.caller.0,
            attestation: Some(event.attestation),
            reason: Some(match &event.presented {
                Some((_, serial)) => format!("presented certificate {serial}: {error}"),
                None => error.to_string(),
            }),
            service: event.presented.map(|(service, _)| service.to_string()),
            selectors: event.selectors,
            ..Decision::default()
        },
    };
    audit::record(store, decision);
}
