//! The authority: every issuance decision, start to finish.
//!
//! It strings the pieces together in one fixed order: parse the CSR, attest
//! the caller, match its proven selectors to exactly one registration
//! entry, check policy, sign, record durably, and only then return the
//! certificate. It writes one audit event per decision. It knows nothing of
//! gRPC or of the CLI; `api` and `cli` call it.
//!
//! This file holds issuance (bootstrap, renewal, CI, certd's own serving
//! certificate); operators' changes live beside it: `registration` (entries
//! and join tokens), `revoke`, `operators` (admin access and operator
//! certificates) and `views` (what `certd list` and `show` print).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::attest::{AttestError, Attestors, Proven, RenewalEvidence};
use crate::audit::{self, Decision};
use crate::ca::csr::ValidatedCsr;
use crate::ca::{CaError, CertificateAuthority, SignedCertificate};
use crate::clock::unix_seconds;
use crate::config::{AuthoritySettings, ConfigError, Lifetimes};
use crate::identity::{Serial, ServiceName, WorkloadIdentity};
use crate::limits::Limits;
use crate::model::AuditEvent;
use crate::policy;
use crate::registry::{self, EntryBounds, Registry, RegistryError};
use crate::revocation::Revocations;
use crate::selector::Selector;
use crate::store::{
    Attestation, EntryRecord, IssuanceRecord, Proof, SharedStorage, Storage, StoreError, TokenHash,
    WriteComing,
};
use crate::{Error, Result};

mod access_tokens;
mod acme;
mod agents;
mod changes;
mod exchange;
mod federation;
mod join_tokens;
mod lineage;
mod monitoring;
mod operators;
pub mod readiness;
mod registration;
mod revoke;
mod tokens;
mod views;

pub use access_tokens::{
    AccessToken, ClientProof, Explanation, JWT_BEARER_ASSERTION, JWT_SPIFFE_ASSERTION, TokenError,
    TokenRequest,
};
pub use acme::{AcmeIssuance, AcmeState};
pub use changes::{Update, follow};
pub use exchange::{
    ExchangeRequest, TOKEN_EXCHANGE_GRANT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_JWT,
};
pub use join_tokens::{JoinTokenView, TokensToRevoke};
pub use registration::{CreatedJoinTokens, MAX_TOKENS_PER_REQUEST, TokenFor};
pub use revoke::{CrlWait, RevocationResult, RevokeTarget, Revoked};
pub use tokens::MintedFor;
pub use views::{CertificateSummary, Listing, ListingRequest};

/// How an operator's `certd issue` may issue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorIssue {
    /// Issue for a service no registration entry names (ad-hoc CI names).
    pub unregistered: bool,
    /// The certificate may renew (it renews forever until revoked).
    pub renewable: bool,
}

/// How many fresh serials to try if one is, against all odds, taken.
const SERIAL_ATTEMPTS: usize = 3;

/// A certificate that has been issued and durably recorded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub record: IssuanceRecord,
    pub certificate_pem: String,
    pub chain_pem: String,
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
    store: SharedStorage,
    lifetimes: Lifetimes,
    revocations: Arc<Revocations>,
    limits: Arc<Limits>,
    /// Operators allowed on the admin API over mTLS, and their roles.
    operators: Arc<crate::policy::operator_roles::OperatorRoles>,
    registry: Arc<Registry>,
    entry_bounds: Arc<EntryBounds>,
    /// The bootstrap attestors this certd accepts, by kind.
    attestors: Attestors,
    /// The JWT-SVID signing keys and their lifetimes.
    jwt_keys: Arc<crate::jwt::JwtKeys>,
    jwt_settings: crate::config::JwtSettings,
    /// How fast a backup may stream (`[store] backup_rate`).
    backup_rate: Option<crate::pace::ByteRate>,
    /// What listing pages may still read (`[store] list_rate`); `None`:
    /// unpaced.
    listing_budget: Option<Arc<crate::pace::ListingBudget>>,
    /// The `iss` of its tokens and where their keys are published.
    issuer: Arc<crate::jwt::Issuer>,
    /// The latest probe of the store, for readiness.
    store_probe: Arc<readiness::StoreProbe>,
    /// The token policy in force (`access_tokens`).
    policy: Arc<access_tokens::PolicyState>,
    /// The outside issuers whose users' tokens `exchange` accepts.
    subject_issuers: crate::subject_issuers::SubjectIssuers,
    /// `spiffe_refresh_hint` of certd's own bundle.
    bundle_refresh_hint: Duration,
    /// The sequence last stored for certd's own bundle, by its content.
    bundle_sequence: Arc<federation::BundleSequence>,
    /// Each federation relationship's fetches in this process.
    federation_status: Arc<crate::federation::status::FederationStatus>,
    /// Wakes the federation refresh task when a relationship changes.
    federation_wake: Arc<tokio::sync::Notify>,
    /// The ACME server's settings and keys.
    acme: Arc<AcmeState>,
    /// Requests that run to their end on a task of their own, whatever
    /// their caller does (`run_to_completion`); shutdown waits for them.
    to_completion: tokio_util::task::TaskTracker,
}

/// How an issuance is recorded: under which service, attested how, and
/// which token it consumes.
struct RecordedAs {
    service: ServiceName,
    attestation: Attestation,
    renewed_from: Option<Serial>,
    token: Option<TokenHash>,
    /// For a renewal: the lineage link to set before recording.
    lineage: Option<lineage::LineageClaim>,
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

/// An issuance let in (`Authority::admit_issuance`): held until it ends.
struct AdmittedIssuance {
    _admission: crate::limits::Admission,
    /// Handed to the record's write (`Authority::issue`).
    announced: WriteComing,
}

/// What one issuance needs besides the CSR.
struct IssuanceRequest {
    identity: WorkloadIdentity,
    /// Which certificate: an SVID, except for ACME.
    profile: crate::ca::WorkloadProfile,
    ttl: Duration,
    attestation: Attestation,
    renewed_from: Option<Serial>,
    token: Option<TokenHash>,
    /// Set by `renew` (`lineage`).
    lineage: Option<lineage::LineageClaim>,
}

impl Authority {
    /// Loads the registration entries and, if configured, the Kubernetes
    /// issuer's keys.
    pub async fn new(
        ca: Arc<CertificateAuthority>,
        store: SharedStorage,
        settings: AuthoritySettings,
        jwt_keys: Arc<crate::jwt::JwtKeys>,
    ) -> Result<Self> {
        let revocations = Arc::new(Revocations::new(
            ca.clone(),
            store.clone(),
            settings.revocation.clone(),
        ));
        // Revocations answer once durable; this task lists them in the CRL.
        revocations.start_publisher();
        let attestors =
            Attestors::from_settings(&settings.attestors).map_err(|(kind, message)| {
                ConfigError::Invalid {
                    field: format!("attestors.{kind}").into(),
                    message,
                }
            })?;
        let entry_bounds = EntryBounds {
            trust_domain: ca.trust_domain().clone(),
            max_ttl: settings.lifetimes.max_cert_ttl,
            reserved_dns_names: settings.server_names,
        };
        if settings
            .subject_issuers
            .iter()
            .any(|trusted| trusted.issuer == settings.issuer.url)
        {
            // certd's own tokens are always subjects, checked as certd's
            // (their audience, their `act` chain); never as an outsider's.
            return Err(ConfigError::Invalid {
                field: "token_exchange.subject_issuer".into(),
                message: format!(
                    "{} is certd's own issuer: its tokens are accepted as subject tokens without a section",
                    settings.issuer.url
                ),
            }
            .into());
        }
        let subject_issuers = crate::subject_issuers::SubjectIssuers::load(
            &settings.subject_issuers,
        )
        .map_err(|error| ConfigError::Invalid {
            field: "token_exchange.subject_issuer".into(),
            message: error.to_string(),
        })?;
        let acme = Arc::new(AcmeState {
            nonces: crate::acme::nonce::NonceKey::new(
                jwt_keys
                    .derived_secret(crate::acme::NONCE_SECRET_LABEL)
                    .as_ref(),
            ),
            eab: crate::acme::eab::EabKeys::new(
                jwt_keys
                    .derived_secret(crate::acme::eab::EAB_SECRET_LABEL)
                    .as_ref(),
            ),
            limits: crate::acme::rate_limits::AcmeLimits::new(&settings.acme),
            validations: Arc::new(tokio::sync::Semaphore::new(
                crate::acme::server::MAX_CONCURRENT_VALIDATIONS,
            )),
            settings: settings.acme,
        });
        Ok(Authority {
            acme,
            subject_issuers,
            registry: Arc::new(Registry::load(store.clone()).await?),
            policy: Arc::new(access_tokens::PolicyState::load(store.as_ref()).await?),
            entry_bounds: Arc::new(entry_bounds),
            attestors,
            ca,
            store,
            lifetimes: settings.lifetimes,
            revocations,
            limits: Arc::new(Limits::new(settings.limits)),
            operators: Arc::new(settings.operators),
            jwt_keys,
            bundle_refresh_hint: settings.federation.refresh_hint(&settings.jwt),
            bundle_sequence: Arc::default(),
            federation_status: Arc::default(),
            federation_wake: Arc::default(),
            jwt_settings: settings.jwt,
            backup_rate: settings.backup_rate,
            listing_budget: settings.list_rate.map(|rate| {
                Arc::new(crate::pace::ListingBudget::new(
                    rate,
                    std::time::Instant::now(),
                ))
            }),
            issuer: Arc::new(settings.issuer),
            store_probe: Arc::default(),
            to_completion: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Runs `request` on a task of its own, so that it ends (and audits
    /// what it did) even if its caller goes away meanwhile; shutdown waits
    /// for it (`finish_requests_run_to_completion`).
    pub fn run_to_completion<F>(&self, request: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.to_completion.spawn(request)
    }

    /// Waits, at most `within`, for the requests `run_to_completion`
    /// started; whether they all ended. No new one starts afterwards.
    pub async fn finish_requests_run_to_completion(&self, within: Duration) -> bool {
        self.to_completion.close();
        tokio::time::timeout(within, self.to_completion.wait())
            .await
            .is_ok()
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The clock the daemon tells the time by (the CA's).
    pub fn clock(&self) -> &crate::clock::SharedClock {
        self.ca.clock()
    }

    /// The time now, in Unix seconds.
    pub fn now(&self) -> i64 {
        self.ca.now()
    }

    /// The CA, shared, for what outlives a call (the TLS verifier).
    pub fn ca_handle(&self) -> Arc<CertificateAuthority> {
        self.ca.clone()
    }

    /// Whether certd can issue now: the store answers, in time, and the
    /// intermediate has not expired. `Err` says why not, for `/readyz` and
    /// the gRPC health service.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if let Some(fault) = self.store.fault() {
            return Err(fault);
        }
        self.store_probe.verdict(std::time::Instant::now())?;
        let now = self.now();
        let not_after = self.ca.intermediate_not_after();
        if now >= not_after {
            return Err(crate::ca::CaError::IntermediateExpired { not_after }.to_string());
        }
        Ok(())
    }

    /// Probes the store once, for readiness (`readiness::StoreProbe`).
    pub async fn probe_store(&self) {
        self.store_probe.run(self.store.as_ref()).await;
    }

    pub fn store(&self) -> &dyn Storage {
        self.store.as_ref()
    }

    /// The bootstrap attestors this certd accepts.
    pub fn attestors(&self) -> &Attestors {
        &self.attestors
    }

    /// The trusted subject issuers of token exchange.
    pub fn subject_issuers(&self) -> &crate::subject_issuers::SubjectIssuers {
        &self.subject_issuers
    }

    /// Bootstrap: a CSR attested by evidence of `kind` (a join token, a
    /// Kubernetes service-account token), which proves selectors.
    pub async fn issue_attested(
        &self,
        caller: &Caller,
        kind: &str,
        csr_der: &[u8],
        evidence: &[u8],
    ) -> Result<Issued> {
        // What the audit and the metrics name: the attestor's own kind, or
        // "unknown" for one this certd does not run (the refusal quotes what
        // was sent), so that no caller can mint new metric labels.
        let audited = self
            .attestors
            .get(kind)
            .map_or("unknown", |attestor| attestor.kind());
        self.bootstrap(caller, audited, csr_der, async {
            let attestor = self.attestors.get(kind)?;
            let now = self.now();
            Ok(attestor.attest(evidence, self.store.as_ref(), now).await?)
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
        attest: impl Future<Output = Result<Proven>>,
    ) -> Result<Issued> {
        let mut proven_selectors = Vec::new();
        let outcome = self
            .bootstrap_inner(csr_der, attest, &mut proven_selectors)
            .await;
        audit_issuance(
            self.store.as_ref(),
            self.now(),
            IssuanceEvent::new(AuditEvent::Issue, caller, attestation, proven_selectors),
            &outcome,
        )
        .await;
        outcome
    }

    async fn bootstrap_inner(
        &self,
        csr_der: &[u8],
        attest: impl Future<Output = Result<Proven>>,
        proven_selectors: &mut Vec<Selector>,
    ) -> Result<Issued> {
        let admitted = self.admit_issuance()?;
        let csr = ValidatedCsr::from_der(csr_der)?;
        let Proven {
            selectors,
            proof,
            consumes,
        } = attest.await?;
        let entry = self.registry.resolve(&selectors);
        *proven_selectors = selectors;
        let mut request = self.request_for_entry(&entry?, proof);
        request.token = consumes;
        self.issue(&csr, request, admitted.announced).await
    }

    /// Lets an issuance in: limits come first, before any expensive work
    /// is done for the caller (a place among the requests in flight, then
    /// the issuance rate), and then its record's write is announced, so
    /// that its flush may be shared with others' (`Storage::write_coming`).
    fn admit_issuance(&self) -> Result<AdmittedIssuance> {
        let admission = self.limits.admit()?;
        self.limits.issuance()?;
        Ok(AdmittedIssuance {
            _admission: admission,
            announced: self.store.write_coming(),
        })
    }

    /// An issuance for a registration entry: its names and lifetime.
    fn request_for_entry(&self, entry: &EntryRecord, proof: Proof) -> IssuanceRequest {
        let ttl = entry
            .ttl_seconds
            .map_or(self.lifetimes.default_cert_ttl, Duration::from_secs)
            .min(self.lifetimes.max_cert_ttl);
        IssuanceRequest {
            identity: registry::identity_of(entry),
            profile: crate::ca::WorkloadProfile::Spiffe,
            ttl,
            attestation: Attestation::Registered {
                entry_id: entry.id.clone(),
                proof,
            },
            renewed_from: None,
            token: None,
            lineage: None,
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
        let mut event = IssuanceEvent::new(AuditEvent::Renew, caller, "renewal", Vec::new());
        event.presented = presented;
        audit_issuance(self.store.as_ref(), self.now(), event, &outcome).await;
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
        let admitted = self.admit_issuance()?;
        let evidence = RenewalEvidence::check(client_leaf, self.store.as_ref(), self.now()).await?;
        let current = evidence.current;
        *presented = Some((current.service.clone(), current.serial.clone()));
        let csr = ValidatedCsr::from_der(csr_der)?;
        let claim = self.lineage_claim(&current).await?;
        // A certificate issued for an entry renews only while the entry
        // exists, and gets the entry's names and lifetime; one issued
        // without (by an operator) keeps its service's default identity.
        let mut request = match current.attestation.entry_id() {
            Some(id) => {
                let entry = self
                    .registry
                    .get(id)
                    .ok_or_else(|| RegistryError::EntryDeleted { id: id.to_owned() })?;
                // A workload's certificate from its node agent is the
                // agent's to renew, so that it stays on that node.
                if let Some(agent) = &entry.parent {
                    return Err(RegistryError::IssuedThroughAgent {
                        agent: agent.to_string(),
                    }
                    .into());
                }
                self.request_for_entry(&entry, Proof::Renewal)
            }
            None => IssuanceRequest {
                identity: self.identity(current.service),
                profile: crate::ca::WorkloadProfile::Spiffe,
                ttl: self.lifetimes.default_cert_ttl,
                // `certd issue` certificates belong to no entry: they renew
                // only if issued `--renewable`, and stay so.
                attestation: match current.attestation {
                    Attestation::Admin {
                        renewable: false, ..
                    } => return Err(RegistryError::NotRenewable.into()),
                    admin @ Attestation::Admin { .. } => admin,
                    _ => Attestation::Renewal,
                },
                renewed_from: None,
                token: None,
                lineage: None,
            },
        };
        let replaced = claim.expected.clone();
        let predecessor = current.serial.clone();
        request.renewed_from = Some(current.serial);
        request.lineage = Some(claim);
        let issued = self.issue(&csr, request, admitted.announced).await;
        // Whoever moved the link away from an unpresented successor retires
        // it, even if this renewal then lost to a third (its own
        // certificate is revoked by `confirm_successor`): otherwise the
        // winner retires only the one it replaced, and this one stays live.
        if let Some(replaced) = replaced {
            self.retire_if_replaced(&predecessor, &replaced).await;
        }
        issued
    }

    /// An operator issues directly (CI): `ttl` of `None` means the default.
    pub async fn issue_for_operator(
        &self,
        caller: &Caller,
        service: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
        options: OperatorIssue,
    ) -> Result<Issued> {
        let outcome = self
            .issue_for_operator_inner(caller, service, csr_der, ttl, options)
            .await;
        audit_issuance(
            self.store.as_ref(),
            self.now(),
            IssuanceEvent::new(AuditEvent::Issue, caller, "admin", Vec::new()),
            &outcome,
        )
        .await;
        outcome
    }

    async fn issue_for_operator_inner(
        &self,
        caller: &Caller,
        service: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
        options: OperatorIssue,
    ) -> Result<Issued> {
        let service: ServiceName = service.parse()?;
        // A typo'd name would otherwise mint an identity nobody registered.
        if !options.unregistered && self.registry.list(Some(&service)).is_empty() {
            return Err(Error::NotFound(format!(
                "registration entry for service {service} (check the name, or give --unregistered to issue for a service no entry names)"
            )));
        }
        let csr = ValidatedCsr::from_der(csr_der)?;
        let ttl = ttl.unwrap_or(self.lifetimes.default_cert_ttl);
        policy::check_ttl(
            ttl,
            self.lifetimes.max_cert_ttl,
            policy::CERTIFICATE_MAX_TTL,
        )?;
        let request = IssuanceRequest {
            identity: self.identity(service),
            profile: crate::ca::WorkloadProfile::Spiffe,
            ttl,
            attestation: Attestation::Admin {
                caller: caller.0.clone(),
                renewable: options.renewable,
            },
            renewed_from: None,
            token: None,
            lineage: None,
        };
        self.issue(&csr, request, WriteComing::default()).await
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
            lineage: None,
        };
        self.sign_and_record(
            |serial, now| self.ca.sign_server(key, names, serial, ttl, now),
            recorded_as,
            WriteComing::default(),
        )
        .await
    }

    fn identity(&self, service: ServiceName) -> WorkloadIdentity {
        WorkloadIdentity::for_service(self.ca.trust_domain(), service)
    }

    /// Policy, signing and recording: the common end of every issuance.
    /// `announced`: the write this issuance announced when it was
    /// admitted, if it did (`Storage::write_coming`).
    async fn issue(
        &self,
        csr: &ValidatedCsr,
        request: IssuanceRequest,
        announced: WriteComing,
    ) -> Result<Issued> {
        policy::check_csr(csr, &request.identity)?;
        // Operators (`certd issue`) are not rate limited; workloads are,
        // per service, once their identity is known.
        if !matches!(request.attestation, Attestation::Admin { .. })
            || request.renewed_from.is_some()
        {
            self.limits.service_issuance(&request.identity.service)?;
        }
        let recorded_as = RecordedAs {
            service: request.identity.service.clone(),
            attestation: request.attestation,
            renewed_from: request.renewed_from,
            token: request.token,
            lineage: request.lineage,
        };
        let (identity, profile, ttl) = (&request.identity, request.profile, request.ttl);
        self.sign_and_record(
            |serial, now| {
                self.ca
                    .sign_workload(csr, identity, profile, serial, ttl, now)
            },
            recorded_as,
            announced,
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
        mut recorded_as: RecordedAs,
        announced: WriteComing,
    ) -> Result<Issued> {
        let now = self.clock().now();
        // Carried by the first attempt's write; a retry's is not announced.
        let mut announced = Some(announced);
        for _ in 0..SERIAL_ATTEMPTS {
            let signed = sign(self.fresh_serial().await?, now)?;
            let record = record_of(&signed, &recorded_as, now);
            // A renewal links its predecessor first: a crash before the
            // record is written leaves a link to a serial never issued,
            // which the predecessor may replace by renewing again.
            if let Some(claim) = recorded_as.lineage.as_mut() {
                self.link_successor(claim, &record.serial).await?;
            }
            match self
                .store
                .record_announced_issuance(
                    &record,
                    recorded_as.token.as_ref(),
                    announced.take().unwrap_or_default(),
                )
                .await
            {
                Err(StoreError::SerialTaken(_)) => continue,
                Err(StoreError::TokenAlreadyUsed) => {
                    return Err(AttestError::InvalidJoinToken.into());
                }
                outcome => outcome?,
            }
            if let Some(claim) = &recorded_as.lineage {
                self.confirm_successor(claim, &record.serial).await?;
            }
            self.track_issuance(&record);
            return Ok(self.issued(record, &signed));
        }
        Err(Error::Store(StoreError::Corrupt(
            "no free serial found".into(),
        )))
    }

    async fn fresh_serial(&self) -> Result<Serial> {
        // 112 random bits within a second make a collision practically
        // impossible; checking first keeps a broken RNG from signing a
        // duplicate, and the store's write refuses one in any case. Time
        // first keeps the store's inserts (and this lookup) at the edge of
        // its tree (`Serial::generate_time_ordered`).
        let serial = Serial::generate_time_ordered(self.now());
        if self.store.serial_exists(&serial).await? {
            return Err(StoreError::SerialTaken(serial).into());
        }
        Ok(serial)
    }

    fn issued(&self, record: IssuanceRecord, signed: &SignedCertificate) -> Issued {
        Issued {
            certificate_pem: signed.pem(),
            chain_pem: signed.chain_pem(),
            record,
        }
    }
}

/// What an issuance decision is audited as.
struct IssuanceEvent<'a> {
    event: AuditEvent,
    caller: &'a Caller,
    attestation: &'a str,
    selectors: Vec<Selector>,
    /// For a renewal: the service and serial of the certificate presented.
    presented: Option<(ServiceName, Serial)>,
}

impl<'a> IssuanceEvent<'a> {
    fn new(
        event: AuditEvent,
        caller: &'a Caller,
        attestation: &'a str,
        proven: Vec<Selector>,
    ) -> Self {
        IssuanceEvent {
            event,
            caller,
            attestation,
            selectors: proven,
            presented: None,
        }
    }
}

/// One audit entry per issuance decision. Never includes tokens or keys.
async fn audit_issuance(
    store: &dyn Storage,
    at: i64,
    event: IssuanceEvent<'_>,
    outcome: &Result<Issued>,
) {
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
                refusal: None,
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
            refusal: Some(error.kind()),
            ..Decision::default()
        },
    };
    audit::record(store, at, decision).await;
}
