//! Federation: certd's own SPIFFE bundle as its bundle endpoint serves it,
//! with a `spiffe_sequence` kept in the store so that it grows with every
//! change across restarts and replicas; and the relationships with other
//! trust domains, which operators add and remove (audited).

use std::sync::Mutex;

use super::{Authority, Caller};
use crate::Result;
use crate::audit::{self, Decision};
use crate::federation::{FederationError, FederationSpec};
use crate::identity::TrustDomain;
use crate::jwt;
use crate::model::{AuditEvent, EndpointProfile, FederationRecord};

/// The sequence last stored for certd's own bundle, and the SHA-256 of the
/// keys it was stored for: the store is asked again only when they change.
#[derive(Debug, Default)]
pub(super) struct BundleSequence {
    last: Mutex<Option<([u8; 32], u64)>>,
}

impl Authority {
    /// The SPIFFE trust bundle now (`/bundle.spiffe`, the bundle endpoint).
    /// Its sequence is the store's, so every replica and every restart
    /// numbers one content alike and a change always gets a higher number.
    pub async fn spiffe_bundle(&self) -> Result<serde_json::Value> {
        let bundle = self.ca.trust_bundle();
        let roots: Vec<&[u8]> = bundle.roots_der.iter().map(Vec::as_slice).collect();
        let (keys, floor) = jwt::spiffe_bundle_keys(&roots, &self.jwt_keys, self.now());
        let digest: [u8; 32] = {
            let canonical = serde_json::to_vec(&keys).unwrap_or_default();
            let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
            let mut bytes = [0; 32];
            bytes.copy_from_slice(digest.as_ref());
            bytes
        };
        let cached = *self
            .bundle_sequence
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sequence = match cached {
            Some((seen, sequence)) if seen == digest && sequence >= floor => sequence,
            _ => {
                let sequence = self.store.bundle_sequence(&digest, floor).await?;
                *self
                    .bundle_sequence
                    .last
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((digest, sequence));
                sequence
            }
        };
        Ok(jwt::spiffe_bundle_json(
            keys,
            sequence,
            self.bundle_refresh_hint.as_secs().max(1),
        ))
    }
}

impl Authority {
    /// Adds a federation relationship: checked, stored durably (and told to
    /// the other replicas), audited either way.
    pub async fn add_federation(
        &self,
        caller: &Caller,
        spec: &FederationSpec,
    ) -> Result<FederationRecord> {
        let outcome = async {
            let record = spec.validate(self.ca.trust_domain(), self.now(), &caller.0)?;
            if !self.store.insert_federation(&record).await? {
                return Err(FederationError::AlreadyExists(record.trust_domain.to_string()).into());
            }
            Ok(record)
        }
        .await;
        let detail = |record: &FederationRecord| {
            format!(
                "{} at {} ({}{})",
                record.trust_domain,
                record.bundle_endpoint_url,
                record.profile.name(),
                match &record.profile {
                    EndpointProfile::HttpsSpiffe { endpoint_id } => format!(", {endpoint_id}"),
                    EndpointProfile::HttpsWeb { ca_pem: Some(_) } => ", its own CA".to_owned(),
                    EndpointProfile::HttpsWeb { ca_pem: None } => String::new(),
                }
            )
        };
        let reason = match &outcome {
            Ok(record) => detail(record),
            Err(error) => format!("{}: {error}", spec.trust_domain),
        };
        self.audit_federation(AuditEvent::AddFederation, caller, reason, &outcome)
            .await;
        outcome
    }

    /// Removes the relationship with `trust_domain`: its bundle is no
    /// longer fetched nor handed to workloads. Audited either way.
    pub async fn remove_federation(
        &self,
        caller: &Caller,
        trust_domain: &str,
    ) -> Result<FederationRecord> {
        let outcome = async {
            let parsed: TrustDomain = trust_domain
                .parse()
                .map_err(|_| FederationError::BadTrustDomain(trust_domain.to_owned()))?;
            self.store
                .remove_federation(&parsed)
                .await?
                .ok_or_else(|| FederationError::NotFound(trust_domain.to_owned()).into())
        }
        .await;
        let reason = match &outcome {
            Ok(record) => record.trust_domain.to_string(),
            Err(error) => format!("{trust_domain}: {error}"),
        };
        self.audit_federation(AuditEvent::RemoveFederation, caller, reason, &outcome)
            .await;
        outcome
    }

    /// Every federation relationship, or the one with `trust_domain`
    /// (`NotFound` if there is none).
    pub async fn federations(&self, trust_domain: Option<&str>) -> Result<Vec<FederationRecord>> {
        match trust_domain {
            None => Ok(self.store.federations().await?),
            Some(name) => {
                let parsed: TrustDomain = name
                    .parse()
                    .map_err(|_| FederationError::BadTrustDomain(name.to_owned()))?;
                let record = self
                    .store
                    .federation(&parsed)
                    .await?
                    .ok_or_else(|| FederationError::NotFound(name.to_owned()))?;
                Ok(vec![record])
            }
        }
    }

    async fn audit_federation(
        &self,
        event: AuditEvent,
        caller: &Caller,
        reason: String,
        outcome: &Result<FederationRecord>,
    ) {
        let decision = Decision {
            event,
            allowed: outcome.is_ok(),
            caller: &caller.0,
            reason: Some(reason),
            refusal: outcome.as_ref().err().map(crate::Error::kind),
            ..Decision::default()
        };
        audit::record(self.store.as_ref(), self.now(), decision).await;
    }
}
