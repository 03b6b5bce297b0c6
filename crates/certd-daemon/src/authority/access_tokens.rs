//! The OAuth 2.0 token endpoint's decisions (RFC 6749 §4.4 client
//! credentials, without client secrets), the token policy it enforces, and
//! `certd policy explain`.
//!
//! The client authenticates with its certd certificate over mTLS (RFC 8705
//! `tls_client_auth`: recorded, unrevoked, unexpired and not superseded by
//! its renewal; the token is then bound to it, `cnf.x5t#S256`) or with a
//! JWT-SVID as client assertion (the SPIFFE client-authentication draft's
//! `jwt-spiffe`, or RFC 7523 `jwt-bearer`), whose audience must be the
//! token endpoint or the issuer. `policy::grants` decides audience and
//! scopes. Every decision is audited with the caller, audience, scopes
//! asked and granted, and the deciding rule. The form itself is parsed by
//! `api::oauth`; this module never sees HTTP.

use std::sync::{Arc, RwLock};

use super::{Authority, Caller};
use crate::attest::{AttestError, AttestFailure, RenewalEvidence};
use crate::audit::{self, Decision};
use crate::identity::{ServiceName, SpiffeId};
use crate::jwt::{self, AccessTokenClaims, JwtError, TokenKind};
use crate::model::{AuditEvent, PolicyRecord};
use crate::policy::grants::{self, PolicyConflict, PolicyRules, Rule, TokenCaller, TokenRefusal};
use crate::store::{EntryRecord, IssuanceRecord, StoreError};

/// `client_assertion_type` of the SPIFFE client-authentication draft.
pub const JWT_SPIFFE_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
/// `client_assertion_type` of RFC 7523 §2.2; taken with the same meaning.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why the token endpoint refused. `api::oauth` names the RFC 6749 §5.2
/// error code of each (`oauth_error`).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error(
        "grant_type {0:?} is not supported: certd's token endpoint supports client_credentials and urn:ietf:params:oauth:grant-type:token-exchange"
    )]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidTarget(String),
    /// The subject or actor token of an exchange is not acceptable: not
    /// valid, not for the caller, or refused by policy (RFC 8693 §2.2.2
    /// names `invalid_request` for all of these).
    #[error("{0}")]
    UnacceptableToken(String),
    #[error(transparent)]
    Refused(#[from] TokenRefusal),
    #[error(transparent)]
    Delegation(#[from] crate::policy::delegations::DelegationRefusal),
    #[error(transparent)]
    Failed(#[from] crate::Error),
}

impl TokenError {
    /// The RFC 6749 §5.2 (and RFC 8707 §2) error code.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) => "invalid_request",
            TokenError::InvalidClient(_) => "invalid_client",
            TokenError::UnsupportedGrantType(_) => "unsupported_grant_type",
            TokenError::InvalidTarget(_) => "invalid_target",
            TokenError::UnacceptableToken(_) => "invalid_request",
            TokenError::Delegation(refusal) => refusal.oauth_error(),
            TokenError::Refused(TokenRefusal::NoGrant { .. }) => "invalid_target",
            TokenError::Refused(TokenRefusal::ScopeNotGranted { .. }) => "invalid_scope",
            TokenError::Failed(error) => match error.kind() {
                crate::ErrorKind::InvalidInput => "invalid_request",
                crate::ErrorKind::Unauthenticated => "invalid_client",
                crate::ErrorKind::PermissionDenied => "unauthorized_client",
                crate::ErrorKind::Exhausted | crate::ErrorKind::Unavailable => {
                    "temporarily_unavailable"
                }
                _ => "server_error",
            },
        }
    }

    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            TokenError::InvalidRequest(_) | TokenError::UnsupportedGrantType(_) => {
                crate::ErrorKind::InvalidInput
            }
            TokenError::InvalidClient(_) => crate::ErrorKind::Unauthenticated,
            TokenError::InvalidTarget(_) => crate::ErrorKind::PermissionDenied,
            TokenError::UnacceptableToken(_) => crate::ErrorKind::PermissionDenied,
            TokenError::Delegation(refusal) => refusal.kind(),
            TokenError::Refused(refusal) => refusal.kind(),
            TokenError::Failed(error) => error.kind(),
        }
    }
}

/// How the client proved who it is.
#[derive(Debug, Clone, Copy)]
pub enum ClientProof<'a> {
    /// The certificate it presented in the TLS handshake (DER).
    Certificate(&'a [u8]),
    /// A JWT-SVID (`client_assertion`).
    Assertion(&'a str),
}

/// A checked token request (the form parsed by `api::oauth`).
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub proof: ClientProof<'a>,
    /// `client_id`, which must then name the authenticated client.
    pub client_id: Option<&'a str>,
    pub audience: &'a str,
    /// Checked, sorted and distinct.
    pub scopes: Vec<String>,
}

/// An access token and what it grants.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: String,
    pub expires_in: i64,
    pub scopes: Vec<String>,
    pub certificate_bound: bool,
}

/// What `certd policy explain` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub allowed: bool,
    pub scopes: Vec<String>,
    pub rules: Vec<String>,
    /// The endpoint's error code, or empty when allowed.
    pub error: String,
    pub message: String,
}

/// The entries naming the caller `explain` asks about (at least one),
/// and the scopes asked, checked.
pub(super) type ExplainedCaller = (Vec<EntryRecord>, Vec<String>);

impl Explanation {
    /// What the policy granted, and the rules that did: "`what` with
    /// scope(s) […]`note` by <rules>".
    pub(super) fn granted(grant: grants::TokenGrant, what: &str, note: &str) -> Self {
        let rules = rule_names(&grant.rules);
        Explanation {
            allowed: true,
            message: format!(
                "{what} with scope(s) [{}]{note} by {}",
                grant.scopes.join(" "),
                rules.join(", ")
            ),
            rules,
            scopes: grant.scopes,
            error: String::new(),
        }
    }

    /// A refusal by the policy: its error code, why, and the rules.
    pub(super) fn denied(error: &str, message: String, rules: &[Rule]) -> Self {
        Explanation {
            rules: rule_names(rules),
            ..Explanation::refused(error, message)
        }
    }

    pub(super) fn refused(error: &str, message: String) -> Self {
        Explanation {
            allowed: false,
            scopes: Vec::new(),
            rules: Vec::new(),
            error: error.into(),
            message,
        }
    }
}

/// The token policy in force.
#[derive(Debug, Default)]
pub(super) struct PolicyState {
    current: RwLock<Arc<PolicyRecord>>,
}

impl PolicyState {
    pub(super) async fn load(store: &dyn crate::store::Storage) -> Result<Self, StoreError> {
        let state = PolicyState::default();
        if let Some(policy) = store.policy().await? {
            state.adopt(policy);
        }
        Ok(state)
    }

    pub(super) fn current(&self) -> Arc<PolicyRecord> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `policy` unless a newer one is served already: a replica
    /// never goes back.
    fn adopt(&self, policy: PolicyRecord) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if policy.version > current.version {
            *current = Arc::new(policy);
        }
    }
}

impl Authority {
    /// Reads the stored policy again (another replica changed it).
    pub(super) async fn reload_policy(&self) -> Result<(), StoreError> {
        if let Some(policy) = self.store.policy().await? {
            self.policy.adopt(policy);
        }
        Ok(())
    }

    /// Parses and checks a policy file against this CA's trust domain.
    pub fn check_policy(&self, text: &str) -> crate::Result<PolicyRules> {
        Ok(grants::parse_policy(text, self.ca.trust_domain())?)
    }

    /// The token policy as stored now (not this replica's cache, which may
    /// be a moment behind another replica's change): for editing it.
    pub async fn stored_token_policy(&self) -> crate::Result<PolicyRecord> {
        Ok(self.store.policy().await?.unwrap_or_default())
    }

    /// Replaces the token policy with the policy file `text`, if the one
    /// stored is still version `expected` (`None`: whatever it is, tried
    /// again if another change comes between reading and writing); returns
    /// the new policy. Audited either way, a file that is not valid too.
    pub async fn replace_token_policy(
        &self,
        caller: &Caller,
        expected: Option<u64>,
        text: &str,
    ) -> crate::Result<PolicyRecord> {
        let outcome = async {
            let rules = self.check_policy(text)?;
            let mut attempts = 0;
            loop {
                let stored = self.store.policy().await?.unwrap_or_default();
                if let Some(expected) = expected
                    && expected != stored.version
                {
                    return Err(crate::Error::from(PolicyConflict {
                        expected,
                        current: stored.version,
                    }));
                }
                let policy = PolicyRecord {
                    version: stored.version + 1,
                    grants: rules.grants.clone(),
                    delegations: rules.delegations.clone(),
                    changed_at: self.now(),
                    changed_by: caller.0.clone(),
                };
                if self.store.replace_policy(stored.version, &policy).await? {
                    self.policy.adopt(policy.clone());
                    return Ok(policy);
                }
                attempts += 1;
                if expected.is_some() || attempts == 3 {
                    let current = self.store.policy().await?.map_or(0, |p| p.version);
                    return Err(PolicyConflict {
                        expected: stored.version,
                        current,
                    }
                    .into());
                }
            }
        }
        .await;
        let reason = match &outcome {
            Ok(policy) => format!(
                "policy version {} with {} grants and {} delegations",
                policy.version,
                policy.grants.len(),
                policy.delegations.len()
            ),
            Err(error) => error.to_string(),
        };
        audit::record(
            self.store.as_ref(),
            self.now(),
            Decision {
                event: AuditEvent::ReplacePolicy,
                allowed: outcome.is_ok(),
                caller: &caller.0,
                reason: Some(reason),
                refusal: outcome.as_ref().err().map(crate::Error::kind),
                ..Decision::default()
            },
        )
        .await;
        outcome
    }

    /// An access token for the client `request` authenticates, asked for
    /// from `peer`.
    pub async fn token(
        &self,
        peer: &Caller,
        request: &TokenRequest<'_>,
    ) -> Result<AccessToken, TokenError> {
        let mut client = None;
        let mut rules = Vec::new();
        let outcome = async {
            let _admission = self.limits.admit().map_err(crate::Error::from)?;
            let now = self.now();
            let authenticated = self
                .authenticate_client(request.proof, request.client_id, now)
                .await?;
            client = Some(authenticated.clone());
            self.refuse_own_audience(request.audience)?;
            let caller = TokenCaller {
                spiffe_id: &authenticated.spiffe_id,
                service: &authenticated.service,
                entries: authenticated
                    .entries
                    .iter()
                    .map(|e| (e.id.as_str(), e.jwt_audiences.as_slice()))
                    .collect(),
            };
            let policy = self.policy.current();
            let grant = grants::decide(&policy, &caller, request.audience, &request.scopes)
                .inspect_err(|refusal| rules = refusal.rules())?;
            rules.clone_from(&grant.rules);
            let ttl = i64::try_from(self.jwt_settings.default_ttl.as_secs()).unwrap_or(300);
            let claims = AccessTokenClaims {
                issuer: self.issuer.url.clone(),
                client: authenticated.spiffe_id.clone(),
                audience: request.audience.to_owned(),
                scopes: grant.scopes.clone(),
                certificate_thumbprint: authenticated.thumbprint.clone(),
                token_id: hex::encode(crate::identity::Serial::generate().as_bytes()),
                on_behalf_of: None,
            };
            let minted = jwt::mint_access_token(&self.jwt_keys, &claims, now, ttl)
                .map_err(crate::Error::from)?;
            Ok(AccessToken {
                token: minted.token,
                expires_in: ttl,
                scopes: grant.scopes,
                certificate_bound: authenticated.thumbprint.is_some(),
            })
        }
        .await;
        self.audit_token(peer, client.as_ref(), request, &rules, &outcome)
            .await;
        outcome
    }

    /// RFC 7662 introspection of `token` for the client `proof`
    /// authenticates: `{"active": false}` unless it is an access token
    /// certd signed, unexpired, whose audience names the caller (its SPIFFE
    /// ID or service), for a client still named by a registration entry
    /// and, exchanged on a subject's behalf, whose every actor is still
    /// registered with an unrevoked certificate; then its claims,
    /// `active: true` and `token_type`. Audited.
    pub async fn introspect(
        &self,
        peer: &Caller,
        proof: ClientProof<'_>,
        client_id: Option<&str>,
        token: &str,
    ) -> Result<serde_json::Value, TokenError> {
        let mut caller = None;
        let outcome = async {
            let _admission = self.limits.admit().map_err(crate::Error::from)?;
            let now = self.now();
            let authenticated = self.authenticate_client(proof, client_id, now).await?;
            caller = Some(authenticated.clone());
            let verified = jwt::verify_for_any_at(
                token,
                TokenKind::AccessToken,
                &[
                    authenticated.spiffe_id.as_str(),
                    authenticated.service.as_str(),
                ],
                &self.jwt_key_set(),
                now,
            )
            .ok()
            .filter(|verified| self.is_registered(&verified.spiffe_id));
            // A token exchanged on a subject's behalf stands only while its
            // subject's issuer is trusted and every actor of its chain stands.
            let verified = match verified {
                Some(verified) if self.exchanged_token_stands(&verified).await => Some(verified),
                _ => None,
            };
            Ok::<_, TokenError>(verified.map(|verified| {
                let mut claims = verified.claims;
                claims.insert("active".into(), true.into());
                claims.insert("token_type".into(), "Bearer".into());
                serde_json::Value::Object(claims)
            }))
        }
        .await;
        let reason = match &outcome {
            Ok(Some(claims)) => format!(
                "active: token {} of {}",
                claims["jti"].as_str().unwrap_or("?"),
                claims["sub"].as_str().unwrap_or("?")
            ),
            Ok(None) => "inactive".to_owned(),
            Err(error) => format!("{}: {error}", error.oauth_error()),
        };
        let who = audited_caller(peer, caller.as_ref());
        audit::record(
            self.store.as_ref(),
            self.now(),
            Decision {
                event: AuditEvent::IntrospectToken,
                allowed: outcome.is_ok(),
                caller: &who,
                attestation: Some(caller.as_ref().map_or("none", |c| c.method)),
                service: caller.as_ref().map(|c| c.service.to_string()),
                reason: Some(reason),
                refusal: outcome.as_ref().err().map(TokenError::kind),
                ..Decision::default()
            },
        )
        .await;
        Ok(outcome?.unwrap_or_else(|| serde_json::json!({ "active": false })))
    }

    /// `certd policy explain`: what the token endpoint would answer
    /// `from` (a service name or SPIFFE ID) asking for `audience` and
    /// `scopes`, and the rule that decides.
    pub fn explain(
        &self,
        from: &str,
        audience: &str,
        scopes: &[String],
    ) -> crate::Result<Explanation> {
        let (entries, scopes) = match self.explained_caller(from, audience, scopes)? {
            Ok(explained) => explained,
            Err(refused) => return Ok(refused),
        };
        let first = &entries[0];
        let caller = TokenCaller {
            spiffe_id: &first.spiffe_id,
            service: &first.service,
            entries: entries
                .iter()
                .filter(|e| e.spiffe_id == first.spiffe_id)
                .map(|e| (e.id.as_str(), e.jwt_audiences.as_slice()))
                .collect(),
        };
        Ok(
            match grants::decide(&self.policy.current(), &caller, audience, &scopes) {
                Ok(grant) => Explanation::granted(
                    grant,
                    &format!("{} gets a token for {audience:?}", first.spiffe_id),
                    "",
                ),
                Err(refusal) => Explanation::denied(
                    TokenError::Refused(refusal.clone()).oauth_error(),
                    refusal.to_string(),
                    &refusal.rules(),
                ),
            },
        )
    }

    /// What `explain` and `explain_exchange` check first: the caller
    /// `from` names (its entries, at least one), and the scopes; or the
    /// endpoint's refusal, when `from` is no client or `audience` is certd.
    pub(super) fn explained_caller(
        &self,
        from: &str,
        audience: &str,
        scopes: &[String],
    ) -> crate::Result<Result<ExplainedCaller, Explanation>> {
        let trust_domain = self.ca.trust_domain();
        let invalid = crate::Error::InvalidArgument;
        let named = grants::parse_caller(from, trust_domain)
            .map_err(|m| invalid(format!("--from: {m}")))?;
        crate::jwt::check_audience(audience).map_err(|m| invalid(format!("--to: {m}")))?;
        let scopes = grants::check_scopes(scopes).map_err(|m| invalid(format!("--scope: {m}")))?;
        let entries: Vec<EntryRecord> = match &named {
            crate::model::GrantCaller::Service(service) => self.registry.list(Some(service)),
            crate::model::GrantCaller::SpiffeId(id) => self.entries_of(id),
        };
        if entries.is_empty() {
            return Ok(Err(Explanation::refused(
                "invalid_client",
                format!(
                    "no registration entry names {from}: the token endpoint does not know it as a client"
                ),
            )));
        }
        if let Err(refusal) = self.refuse_own_audience(audience) {
            return Ok(Err(Explanation::refused(
                refusal.oauth_error(),
                refusal.to_string(),
            )));
        }
        Ok(Ok((entries, scopes)))
    }

    /// Refuses certd itself (its token endpoint or issuer) as an audience:
    /// a token for certd would be a way around the client's own
    /// authentication.
    pub(super) fn refuse_own_audience(&self, audience: &str) -> Result<(), TokenError> {
        if audience == self.issuer.url || audience == self.issuer.token_endpoint {
            return Err(TokenError::InvalidTarget(format!(
                "{audience:?} is certd's own token endpoint or issuer, never an audience of its tokens"
            )));
        }
        Ok(())
    }

    /// Every entry naming `spiffe_id`.
    pub(super) fn entries_of(&self, spiffe_id: &SpiffeId) -> Vec<EntryRecord> {
        self.registry.issuing(spiffe_id)
    }

    /// Whether an entry names `spiffe_id` (the index alone, nothing copied:
    /// asked for every actor of every exchange and introspection).
    pub(super) fn is_registered(&self, spiffe_id: &SpiffeId) -> bool {
        self.registry.issues(spiffe_id)
    }

    /// The client `proof` authenticates, checked against the `client_id`
    /// sent beside it, if any.
    pub(super) async fn authenticate_client(
        &self,
        proof: ClientProof<'_>,
        client_id: Option<&str>,
        now: i64,
    ) -> Result<Client, TokenError> {
        let client = self.authenticate_proof(proof, now).await?;
        client.check_client_id(client_id)?;
        Ok(client)
    }

    async fn authenticate_proof(
        &self,
        proof: ClientProof<'_>,
        now: i64,
    ) -> Result<Client, TokenError> {
        match proof {
            ClientProof::Certificate(leaf) => {
                let current = RenewalEvidence::check(Some(leaf), self.store.as_ref(), now)
                    .await
                    .map_err(|failure| match failure {
                        AttestFailure::Refused(error) => {
                            TokenError::InvalidClient(error.to_string())
                        }
                        // The store failing is not the client's fault.
                        AttestFailure::Store(error) => TokenError::Failed(error.into()),
                    })?
                    .current;
                self.refuse_superseded(&current).await?;
                let spiffe_id: SpiffeId = current
                    .uris
                    .iter()
                    .find_map(|uri| uri.parse::<SpiffeId>().ok())
                    .ok_or_else(|| {
                        TokenError::InvalidClient(format!(
                            "certificate {} names no SPIFFE ID",
                            current.serial
                        ))
                    })?;
                let mut client = self.registered_client(
                    spiffe_id,
                    Some(current.service.clone()),
                    Some(jwt::certificate_thumbprint(leaf)),
                    "tls_client_auth",
                )?;
                client.serial = Some(current.serial.clone());
                Ok(client)
            }
            ClientProof::Assertion(assertion) => {
                let keys = self.jwt_key_set();
                let verified = jwt::verify_at(assertion, &self.issuer.token_endpoint, &keys, now)
                    .or_else(|error| match error {
                        JwtError::WrongAudience(_) => {
                            jwt::verify_at(assertion, &self.issuer.url, &keys, now)
                        }
                        other => Err(other),
                    })
                    .map_err(|error| match error {
                        JwtError::WrongAudience(_) => TokenError::InvalidClient(format!(
                            "the client assertion is not for this token endpoint: its audience must be {} or {}",
                            self.issuer.token_endpoint, self.issuer.url
                        )),
                        other => TokenError::InvalidClient(format!("client assertion: {other}")),
                    })?;
                if verified.audiences.len() != 1 {
                    // One meant for another service as well would let that
                    // service act as the client.
                    return Err(TokenError::InvalidClient(
                        "client assertion: it must name exactly one audience, this token endpoint"
                            .into(),
                    ));
                }
                self.registered_client(verified.spiffe_id, None, None, "client_assertion")
            }
        }
    }

    /// The authenticated client, with the entries naming it: a client is
    /// what a registration entry names, whichever way it authenticated (and
    /// as `policy explain` sees it). Its service is its certificate's, or
    /// else its first entry's.
    fn registered_client(
        &self,
        spiffe_id: SpiffeId,
        service: Option<ServiceName>,
        thumbprint: Option<String>,
        method: &'static str,
    ) -> Result<Client, TokenError> {
        let entries = self.entries_of(&spiffe_id);
        let Some(first) = entries.first() else {
            return Err(TokenError::InvalidClient(format!(
                "no registration entry names {spiffe_id}: the token endpoint serves registered workloads"
            )));
        };
        Ok(Client {
            service: service.unwrap_or_else(|| first.service.clone()),
            spiffe_id,
            thumbprint,
            serial: None,
            method,
            entries,
        })
    }

    /// Refuses a certificate its holder has moved on from: another renewal
    /// of its predecessor replaced it, or its own renewal is in use.
    async fn refuse_superseded(&self, current: &IssuanceRecord) -> Result<(), TokenError> {
        let store = self.store.as_ref();
        let refused = |error: AttestError| TokenError::InvalidClient(error.to_string());
        if let Some(predecessor) = &current.renewed_from
            && let Some(link) = store
                .successor(predecessor)
                .await
                .map_err(crate::Error::from)?
            && link.serial != current.serial
        {
            return Err(refused(AttestError::Superseded {
                serial: current.serial.to_hex(),
                predecessor: predecessor.to_hex(),
                successor: link.serial.to_hex(),
            }));
        }
        if let Some(successor) = store
            .successor(&current.serial)
            .await
            .map_err(crate::Error::from)?
            && successor.presented
        {
            return Err(refused(AttestError::AlreadyRenewed {
                serial: current.serial.to_hex(),
                successor: successor.serial.to_hex(),
            }));
        }
        Ok(())
    }

    async fn audit_token(
        &self,
        peer: &Caller,
        client: Option<&Client>,
        request: &TokenRequest<'_>,
        rules: &[Rule],
        outcome: &Result<AccessToken, TokenError>,
    ) {
        let asked = format!(
            "audience {:?}; scopes asked [{}]",
            request.audience,
            request.scopes.join(" ")
        );
        self.audit_token_decision(
            AuditEvent::MintAccessToken,
            peer,
            client,
            asked,
            rules,
            outcome,
        )
        .await;
    }

    /// Audits a token decision of the endpoint: what was asked (`asked`),
    /// what was granted or why not, and the deciding rules.
    pub(super) async fn audit_token_decision(
        &self,
        event: AuditEvent,
        peer: &Caller,
        client: Option<&Client>,
        asked: String,
        rules: &[Rule],
        outcome: &Result<AccessToken, TokenError>,
    ) {
        let mut reason = asked;
        match outcome {
            Ok(token) => reason.push_str(&format!(
                "; granted [{}]{}",
                token.scopes.join(" "),
                if token.certificate_bound {
                    "; bound to the client certificate"
                } else {
                    ""
                }
            )),
            Err(error) => reason.push_str(&format!("; {}: {error}", error.oauth_error())),
        }
        if !rules.is_empty() {
            reason.push_str(&format!("; rule {}", rule_names(rules).join(", ")));
        }
        let caller = audited_caller(peer, client);
        audit::record(
            self.store.as_ref(),
            self.now(),
            Decision {
                event,
                allowed: outcome.is_ok(),
                caller: &caller,
                attestation: Some(client.map_or("none", |c| c.method)),
                service: client.map(|c| c.service.to_string()),
                reason: Some(reason),
                refusal: outcome.as_ref().err().map(TokenError::kind),
                ..Decision::default()
            },
        )
        .await;
    }
}

/// The client the token endpoint authenticated.
#[derive(Debug, Clone)]
pub(super) struct Client {
    pub(super) spiffe_id: SpiffeId,
    pub(super) service: ServiceName,
    /// Set when it authenticated with its certificate.
    pub(super) thumbprint: Option<String>,
    /// The certificate's serial, when it authenticated with one.
    pub(super) serial: Option<crate::identity::Serial>,
    pub(super) method: &'static str,
    /// The registration entries naming it (at least one).
    entries: Vec<EntryRecord>,
}

impl Client {
    /// A `client_id` sent beside the authentication must name this client.
    pub(super) fn check_client_id(&self, client_id: Option<&str>) -> Result<(), TokenError> {
        match client_id {
            Some(client_id) if client_id != self.spiffe_id.as_str() => {
                Err(TokenError::InvalidClient(format!(
                    "client_id {:?} is not the authenticated client {}",
                    client_id.chars().take(256).collect::<String>(),
                    self.spiffe_id
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Who asked, for the audit: the client and its address, or the address
/// alone when it did not authenticate.
pub(super) fn audited_caller(peer: &Caller, client: Option<&Client>) -> String {
    match client {
        Some(client) => format!("{} ({peer})", client.spiffe_id),
        None => peer.0.clone(),
    }
}

pub(super) fn rule_names(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(Rule::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_never_goes_back_to_an_older_policy() {
        let state = PolicyState::default();
        let policy = |version| PolicyRecord {
            version,
            ..PolicyRecord::default()
        };
        state.adopt(policy(3));
        state.adopt(policy(2));
        assert_eq!(state.current().version, 3);
        state.adopt(policy(4));
        assert_eq!(state.current().version, 4);
    }

    #[test]
    fn every_refusal_has_its_rfc_error_code() {
        assert_eq!(
            TokenError::InvalidRequest(String::new()).oauth_error(),
            "invalid_request"
        );
        assert_eq!(
            TokenError::UnsupportedGrantType("password".into()).oauth_error(),
            "unsupported_grant_type"
        );
        let unavailable =
            TokenError::Failed(crate::Error::Store(StoreError::Unavailable("down".into())));
        assert_eq!(unavailable.oauth_error(), "temporarily_unavailable");
        let refused = TokenError::Refused(TokenRefusal::NoGrant {
            caller: "x".into(),
            audience: "y".into(),
        });
        assert_eq!(refused.oauth_error(), "invalid_target");
        assert_eq!(refused.kind(), crate::ErrorKind::PermissionDenied);
    }
}
