//! Attestation: how a caller proves which identity it may hold.
//!
//! Bootstrap attestors implement [`Attestor`]: each turns one kind of
//! evidence into proven selectors, which `registry` matches to an entry.
//! Two exist, a one-time join token (`join_token`) and a Kubernetes
//! projected service-account token (`kubernetes`); `Attestors` holds those
//! this certd accepts, registered at start-up. Renewal and admin access are
//! not bootstrap attestors: they find the record of the caller's current
//! certificate (`renewal`). Each refuses with an `AttestError`.
//!
//! This module reads the store but never writes it: consuming a token
//! happens in the same step as recording the certificate, in `store`.
//!
//! Adding an attestor: its own file here implementing `Attestor`; if it
//! takes a configuration section (`[attestors.<kind>]`), a `Configurable`
//! beside it and one line in `configured::CONFIGURABLE`, else one line in
//! `Attestors::from_settings`; if it proves a new kind of selector, one
//! line in `SELECTOR_KINDS`. Its evidence travels in the wire's generic
//! form (`IssueRequest.evidence`: its kind and bytes), which needs no
//! change for it.

pub mod configured;
mod join_token;
pub mod kubernetes;
mod renewal;
pub mod unix;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Proof, TokenHash};
use crate::selector::{Selector, SelectorKind};
use crate::store::{Storage, StoreError};

pub use configured::{ConfiguredAttestors, SectionError};
pub use join_token::{JOIN_TOKEN_PREFIX, JoinToken, JoinTokenAttestor};
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
    #[error("this certd does not accept {kind} attestation")]
    NotAccepted { kind: String },
    #[error(
        "attestation kind {kind:?} is not a kind: 1 to 64 lower-case letters, digits or '-' (join-token, kubernetes, …)"
    )]
    MalformedKind { kind: String },
    #[error("Kubernetes service-account token refused: {0}")]
    KubernetesToken(String),
    #[error("this certd does not accept {accepts} (its config has no [{section}] section)")]
    NotConfigured {
        accepts: &'static str,
        section: String,
    },
    #[error("join token is not valid (unknown, malformed or already used)")]
    InvalidJoinToken,
    #[error("join token expired at {expired_at} (unix time)")]
    ExpiredJoinToken { expired_at: i64 },
    #[error("renewal needs the current certificate as a TLS client certificate")]
    NoClientCertificate,
    #[error(
        "the admin API over TLS needs an operator certificate (from `certd operator issue`) as the TLS client certificate"
    )]
    NoOperatorCertificate,
    #[error("client certificate was not issued to a workload by this CA: {0}")]
    UnknownClientCertificate(String),
    #[error("client certificate {serial} is revoked")]
    RevokedClientCertificate { serial: String },
    #[error("client certificate {serial} expired at {not_after} (unix time)")]
    ExpiredClientCertificate { serial: String, not_after: i64 },
    #[error(
        "certificate {serial} was superseded: {predecessor}, which it renewed, was renewed again as {successor}; a superseded certificate cannot renew (if this is the workload's own certificate, its key may have been copied: revoke with `certd revoke --lineage {successor}`)"
    )]
    Superseded {
        serial: String,
        predecessor: String,
        successor: String,
    },
    #[error(
        "certificate {serial} was already renewed as {successor}, which is in use; a certificate renews once (if the workload did not renew it, its key may have been copied: revoke with `certd revoke --lineage {successor}`)"
    )]
    AlreadyRenewed { serial: String, successor: String },
    #[error(
        "certificate {serial} was renewed as {successor}, which is revoked; a certificate whose renewal was revoked cannot renew (get a new identity with a join token or the workload's own attestation)"
    )]
    SuccessorRevoked { serial: String, successor: String },
    #[error(
        "certificate {serial} was renewed by another caller at the same moment; only one renewal of a certificate succeeds"
    )]
    RenewalRaced { serial: String },
    #[error(
        "certificate {serial} was issued over ACME: certificates issued over ACME renew over ACME, and prove nothing to certd's other APIs"
    )]
    IssuedOverAcme { serial: String },
}

/// Why an attestation gave no proof: a refusal, or the store failing
/// underneath (a lookup the proof needs). It becomes the crate's `Error` as
/// the one or the other (`error.rs`), so its kind is theirs.
#[derive(Debug, thiserror::Error)]
pub enum AttestFailure {
    #[error(transparent)]
    Refused(#[from] AttestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AttestFailure {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            AttestFailure::Refused(error) => error.kind(),
            AttestFailure::Store(error) => error.kind(),
        }
    }
}

impl AttestError {
    /// Refusals of a proven caller that may not renew are PERMISSION_DENIED;
    /// every other attestation failure is UNAUTHENTICATED.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            AttestError::Superseded { .. }
            | AttestError::AlreadyRenewed { .. }
            | AttestError::SuccessorRevoked { .. }
            | AttestError::RenewalRaced { .. }
            | AttestError::IssuedOverAcme { .. } => crate::ErrorKind::PermissionDenied,
            AttestError::MalformedKind { .. } => crate::ErrorKind::InvalidInput,
            _ => crate::ErrorKind::Unauthenticated,
        }
    }
}

pub use crate::model::kind;

/// Every kind of selector something proves, in the order refusals list
/// them: the one list of selector kinds. An attestor whose evidence proves
/// a new kind adds it here.
pub(crate) static SELECTOR_KINDS: [&SelectorKind; 3] = [
    &kubernetes::SELECTORS,
    &join_token::SELECTORS,
    &unix::SELECTORS,
];

/// What a join token proves (`token:`): the registry keeps entries made
/// only of these for join tokens.
pub(crate) static TOKEN_SELECTORS: &SelectorKind = &join_token::SELECTORS;

/// `value` as a selector of a kind in `SELECTOR_KINDS`, or why it is not.
pub fn parse_selector(value: &str) -> Result<Selector, String> {
    Selector::parse(value, &SELECTOR_KINDS)
}

/// Whether only a node agent proves `selector` (from the kernel).
pub fn proven_by_agent(selector: &Selector) -> bool {
    SELECTOR_KINDS
        .iter()
        .any(|kind| selector.is(kind) && kind.proven_by_agent)
}

/// Longest attestor kind a request may name.
const MAX_KIND_LEN: usize = 64;

/// `kind` as a request names an attestor, if it has the form of one (1 to
/// 64 lower-case letters, digits or '-'); whether one of that kind runs
/// here is `Attestors::get`'s answer. The refusal quotes at most 64
/// characters of what was sent.
pub fn parse_kind(kind: &str) -> Result<&str, AttestError> {
    let well_formed = (1..=MAX_KIND_LEN).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if well_formed {
        Ok(kind)
    } else {
        Err(AttestError::MalformedKind {
            kind: kind.chars().take(MAX_KIND_LEN).collect(),
        })
    }
}

/// What a bootstrap attestor proved about a caller.
#[derive(Debug)]
pub struct Proven {
    /// Every selector the evidence proves; `registry` matches them.
    pub selectors: Vec<Selector>,
    /// What is recorded with the certificate about how it was proven.
    pub proof: Proof,
    /// A one-time token to consume in the same step as recording the
    /// certificate, so that exactly one certificate is issued for it.
    pub consumes: Option<TokenHash>,
}

/// A future that completes when the daemon stops.
pub(crate) type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One kind of bootstrap evidence, checked. Implementations never write the
/// store; a token they ask to consume is consumed with the record.
#[async_trait]
pub trait Attestor: std::fmt::Debug + Send + Sync {
    /// The attestation kind, as audited and recorded: `join-token`.
    fn kind(&self) -> &'static str;

    /// The kind of selector its evidence proves (`token:`, `k8s:`).
    fn proves(&self) -> &'static SelectorKind;

    /// Checks `evidence` at time `now` (Unix seconds) and returns what it
    /// proves, or why it proves nothing (an `AttestError`, or a store
    /// failure).
    async fn attest(
        &self,
        evidence: &[u8],
        store: &dyn Storage,
        now: i64,
    ) -> Result<Proven, AttestFailure>;

    /// Work to finish before serving (fetching keys); a failure is logged
    /// by the attestor, never fatal. None by default.
    async fn prepare(&self) {}

    /// Upkeep while serving (key refresh), until `stopped`. None by default.
    async fn maintain(&self, stopped: Stopped) {
        drop(stopped);
    }
}

/// The attestors this certd accepts, by kind.
#[derive(Debug, Clone, Default)]
pub struct Attestors {
    by_kind: BTreeMap<&'static str, Arc<dyn Attestor>>,
}

impl Attestors {
    /// Every attestor the settings enable: join tokens always, and each
    /// configured one (`[attestors.<kind>]`). A failure names the section
    /// of the attestor that could not start, as it was written, and why.
    pub fn from_settings(configured: &ConfiguredAttestors) -> Result<Self, (String, String)> {
        let mut attestors = Attestors::default();
        attestors.register(Arc::new(JoinTokenAttestor));
        for (section, settings) in configured.iter() {
            let started = settings
                .start()
                .map_err(|message| (section.to_owned(), message))?;
            attestors.register(started);
        }
        Ok(attestors)
    }

    pub fn register(&mut self, attestor: Arc<dyn Attestor>) {
        self.by_kind.insert(attestor.kind(), attestor);
    }

    /// The attestor of `kind`; `NotAccepted` if this certd has none.
    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Attestor>, AttestError> {
        self.by_kind
            .get(kind)
            .ok_or_else(|| match configured::configurable(kind) {
                Some(configurable) => AttestError::NotConfigured {
                    accepts: configurable.accepts,
                    section: configurable.section(),
                },
                None => AttestError::NotAccepted { kind: kind.into() },
            })
    }

    /// Why no attestor here can prove `selector`, naming the one that
    /// would; `None` when one here can, or when only a node agent proves
    /// it (the entry's parent does).
    pub fn cannot_prove(&self, selector: &Selector) -> Option<String> {
        if proven_by_agent(selector) || self.by_kind.values().any(|a| selector.is(a.proves())) {
            return None;
        }
        let kind = SELECTOR_KINDS
            .iter()
            .find(|kind| selector.is(kind))
            .map_or("?", |kind| kind.name);
        let section = configured::CONFIGURABLE
            .iter()
            .find(|configurable| configurable.proves == kind)
            .map_or_else(
                || "its attestor".to_owned(),
                |configurable| format!("[attestors.{}]", configurable.kind),
            );
        Some(format!(
            "no attestor of this certd proves {selector} ({section} is not in certd.toml): no workload can attest for this entry here until it is"
        ))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Attestor>> {
        self.by_kind.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JoinTokenRecord;

    #[test]
    fn every_registered_selector_kind_parses() {
        for value in [
            "k8s:ns:payments",
            "k8s:sa:billing",
            "k8s:pod-name:billing-7d9f.x",
            "k8s:pod-uid:0b1c2d3e-aaaa-bbbb-cccc-1234567890ab",
            "k8s:node-name:node-1.example",
            "token:billing-vm",
            "token:Host_1.a",
            "unix:uid:1000",
            "unix:gid:0",
            "unix:user:www-data",
            "unix:group:nogroup",
            "unix:path:/usr/bin/billing",
            "unix:sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert_eq!(parse_selector(value).unwrap().as_str(), value);
        }
        assert!(proven_by_agent(&parse_selector("unix:uid:1").unwrap()));
        assert!(!proven_by_agent(&parse_selector("k8s:ns:a").unwrap()));
        assert!(parse_selector("token:a").unwrap().is(TOKEN_SELECTORS));
        assert_eq!(unix::uid(7).unwrap().as_str(), "unix:uid:7");
        assert_eq!(
            unix::sha256(&[0xab; 32]).unwrap().as_str(),
            format!("unix:sha256:{}", "ab".repeat(32))
        );
        assert!(unix::path("relative").is_err());
    }

    #[test]
    fn malformed_or_unprovable_selectors_are_refused_with_a_reason() {
        for (value, says) in [
            ("payments", "not kind:value"),
            ("k8s:namespace:payments", "unknown key"),
            ("k8s:ns:Payments", "invalid value"),
            ("k8s:ns:", "invalid value"),
            ("k8s:sa:-x", "invalid value"),
            ("token:", "invalid value"),
            ("token:a b", "invalid value"),
            ("unix:uid:-1", "invalid value"),
            ("unix:uid:01", "invalid value"),
            ("unix:path:bin/x", "invalid value"),
            ("unix:path:/a/../b", "invalid value"),
            ("unix:sha256:ABC", "invalid value"),
            ("unix:pid:1", "unknown key"),
            (
                "aws:iid:1",
                "unknown kind \"aws\"; known kinds: k8s, token, unix",
            ),
        ] {
            let error = parse_selector(value).unwrap_err();
            assert!(error.contains(says), "{value}: {error}");
        }
        assert!(parse_selector(&format!("token:{}", "a".repeat(400))).is_err());
    }

    #[test]
    fn kinds_have_one_form_and_a_refusal_quotes_little() {
        assert_eq!(parse_kind("join-token"), Ok("join-token"));
        assert_eq!(parse_kind("tpm2"), Ok("tpm2"));
        for bad in ["", "Join-Token", "k8s:sat", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(parse_kind(bad), Err(AttestError::MalformedKind { .. })),
                "{bad:?}"
            );
        }
        let Err(AttestError::MalformedKind { kind }) = parse_kind(&"X".repeat(10_000)) else {
            panic!("a long kind is refused");
        };
        assert_eq!(kind.len(), 64);
        assert_eq!(
            AttestError::MalformedKind { kind }.kind(),
            crate::ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn attestors_are_found_by_kind_and_the_join_token_one_proves_its_selectors() {
        let attestors = Attestors::from_settings(&ConfiguredAttestors::default()).unwrap();
        assert_eq!(
            attestors.get("kubernetes").unwrap_err(),
            AttestError::NotConfigured {
                accepts: "Kubernetes service-account tokens",
                section: "kubernetes".into(),
            }
        );
        assert_eq!(
            attestors.get("tpm").unwrap_err(),
            AttestError::NotAccepted { kind: "tpm".into() }
        );

        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let token = JoinToken::generate();
        let selectors = vec![parse_selector("token:billing-vm").unwrap()];
        let record = JoinTokenRecord {
            selectors: selectors.clone(),
            created_at: 0,
            expires_at: 100,
        };
        store
            .insert_join_tokens(&[(token.hash(), record)])
            .await
            .unwrap();
        let attestor = attestors.get("join-token").unwrap();
        let proven = attestor
            .attest(token.expose_secret().as_bytes(), store.as_ref(), 50)
            .await
            .unwrap();
        assert_eq!(proven.selectors, selectors);
        assert_eq!(proven.consumes, Some(token.hash()));
        let expired = attestor
            .attest(token.expose_secret().as_bytes(), store.as_ref(), 100)
            .await
            .unwrap_err();
        assert!(
            matches!(
                expired,
                AttestFailure::Refused(AttestError::ExpiredJoinToken { .. })
            ),
            "{expired}"
        );
    }
}
