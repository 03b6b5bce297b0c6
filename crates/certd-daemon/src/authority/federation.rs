//! Federation: certd's own SPIFFE bundle as its bundle endpoint serves it,
//! with a `spiffe_sequence` kept in the store so that it grows with every
//! change across restarts and replicas; and the relationships with other
//! trust domains, which operators add and remove (audited).

use std::sync::Mutex;

use super::{Authority, Caller};
use crate::Result;
use crate::audit::{self, Decision};
use crate::federation::fetch::{BundleEndpoint, FetchError};
use crate::federation::status::FederationStatus;
use crate::federation::{FederationError, FederationSpec, parse_bundle};
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
            self.federation_touched(record.trust_domain.as_str());
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
            let removed = self
                .store
                .remove_federation(&parsed)
                .await?
                .ok_or_else(|| FederationError::NotFound(trust_domain.to_owned()))?;
            self.federation_touched(trust_domain);
            Ok(removed)
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

/// What one fetch of a foreign bundle came to.
enum Fetched {
    /// A bundle with a higher sequence, now stored.
    Accepted { from: Option<u64>, to: u64 },
    /// The bundle held, again (or one another replica stored first).
    Unchanged,
}

impl Authority {
    /// The fetch state of each relationship in this process.
    pub fn federation_status(&self) -> &FederationStatus {
        &self.federation_status
    }

    /// Completes when a relationship was added or removed, here or (through
    /// the change feed) on another replica: the refresh task looks again.
    pub async fn federation_changed(&self) {
        self.federation_wake.notified().await;
    }

    /// Fetches every relationship's bundle that is due, at once, each
    /// bounded in time and size; stores the new ones. Failures are kept in
    /// `federation_status` (and logged) and back off; the bundle held stays.
    pub async fn refresh_due_federations(&self) {
        let relationships = match self.store.federations().await {
            Ok(relationships) => relationships,
            Err(error) => {
                tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot read the federation relationships");
                return;
            }
        };
        let names: Vec<String> = relationships
            .iter()
            .map(|record| record.trust_domain.to_string())
            .collect();
        self.federation_status.retain(&names);
        for record in &relationships {
            self.federation_status.note_held(
                record.trust_domain.as_str(),
                record
                    .bundle
                    .as_ref()
                    .map(|bundle| (bundle.sequence, bundle.accepted_at)),
            );
        }
        let now = self.now();
        let mut fetches = tokio::task::JoinSet::new();
        for record in relationships {
            if !self
                .federation_status
                .due(record.trust_domain.as_str(), now)
            {
                continue;
            }
            let authority = self.clone();
            fetches.spawn(async move { authority.refresh_federation(record).await });
        }
        while fetches.join_next().await.is_some() {}
    }

    /// Seconds until the next relationship is due (at most `at_most`).
    pub fn next_federation_refresh(&self, at_most: std::time::Duration) -> std::time::Duration {
        match self.federation_status.next_attempt() {
            Some(at) => std::time::Duration::from_secs(
                u64::try_from(at.saturating_sub(self.now())).unwrap_or(0),
            )
            .min(at_most),
            None => at_most,
        }
    }

    async fn refresh_federation(&self, record: FederationRecord) {
        let trust_domain = record.trust_domain.to_string();
        let outcome = self.fetch_foreign_bundle(&record).await;
        let now = self.now();
        match outcome {
            Ok((fetched, hint)) => {
                self.federation_status.succeeded(&trust_domain, now, hint);
                if let Fetched::Accepted { from, to } = fetched {
                    let decision = Decision {
                        event: AuditEvent::AcceptForeignBundle,
                        allowed: true,
                        caller: "federation",
                        reason: Some(format!(
                            "{trust_domain}: sequence {} -> {to} from {}",
                            from.map_or("(none)".to_owned(), |from| from.to_string()),
                            record.bundle_endpoint_url
                        )),
                        ..Decision::default()
                    };
                    audit::record(self.store.as_ref(), now, decision).await;
                }
            }
            Err(error) => {
                tracing::warn!(trust_domain = %trust_domain, error = %crate::error_kind::with_causes(&error), "cannot refresh a foreign bundle; the one held stays");
                self.federation_status
                    .failed(&trust_domain, now, error.to_string());
            }
        }
    }

    /// One fetch, with every check: the endpoint authenticated per the
    /// profile, the bundle well formed and of this trust domain, its
    /// sequence never below the one held.
    async fn fetch_foreign_bundle(
        &self,
        record: &FederationRecord,
    ) -> std::result::Result<(Fetched, Option<u64>), FetchError> {
        let endpoint = BundleEndpoint::of(record)?;
        let body = endpoint.fetch().await?;
        let parsed = parse_bundle(&body, &record.trust_domain)
            .map_err(|error| FetchError(error.to_string()))?;
        let hint = parsed.refresh_hint;
        let held = record.bundle.as_ref();
        match held {
            Some(held) if parsed.sequence < held.sequence => {
                return Err(FetchError(format!(
                    "refused a bundle whose sequence went backwards: {} after {}",
                    parsed.sequence, held.sequence
                )));
            }
            Some(held) if parsed.sequence == held.sequence => {
                if parsed.json != held.json {
                    return Err(FetchError(format!(
                        "refused a bundle that changed without a new sequence ({})",
                        parsed.sequence
                    )));
                }
                return Ok((Fetched::Unchanged, hint));
            }
            _ => {}
        }
        let to = parsed.sequence;
        let from = held.map(|held| held.sequence);
        let foreign = parsed.into_foreign(self.now());
        let accepted = self
            .store
            .accept_foreign_bundle(&record.trust_domain, &foreign)
            .await
            .map_err(|error| FetchError(format!("cannot store the bundle: {error}")))?;
        if accepted {
            self.federation_status.note_held(
                record.trust_domain.as_str(),
                Some((foreign.sequence, foreign.accepted_at)),
            );
        }
        Ok((
            if accepted {
                Fetched::Accepted { from, to }
            } else {
                Fetched::Unchanged
            },
            hint,
        ))
    }

    /// A relationship changed (here, or another replica said so): fetch it
    /// at the next look, and wake the refresh task.
    pub(super) fn federation_touched(&self, trust_domain: &str) {
        self.federation_status.fetch_soon(trust_domain);
        self.federation_wake.notify_one();
    }
}

/// One relationship's state, as `/readyz`, the metrics and the admin API
/// tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationHealth {
    pub trust_domain: String,
    /// The sequence of the bundle held, if any.
    pub sequence: Option<u64>,
    /// Seconds since the bundle held was last fetched good here (else
    /// since it was accepted), if one is held.
    pub age_seconds: Option<i64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

impl FederationHealth {
    /// One line of `/readyz`'s detail.
    pub fn line(&self) -> String {
        let held = match (self.sequence, self.age_seconds) {
            (Some(sequence), Some(age)) => format!("bundle sequence {sequence}, {age}s old"),
            _ => "no bundle yet".to_owned(),
        };
        match &self.last_error {
            None => format!("federation {}: ok, {held}", self.trust_domain),
            Some(error) => format!(
                "federation {}: failing ({} in a row: {error}), keeping {held}",
                self.trust_domain, self.consecutive_failures
            ),
        }
    }
}

impl Authority {
    /// Every relationship's health, as the refresh task last saw it: from
    /// memory, so `/readyz` and a scrape never wait on the database.
    pub fn federation_health(&self) -> Vec<FederationHealth> {
        let now = self.now();
        self.federation_status
            .snapshot()
            .into_iter()
            .map(|(trust_domain, state)| {
                let confirmed = state
                    .last_success_at
                    .or(state.held.map(|(_, accepted_at)| accepted_at));
                FederationHealth {
                    trust_domain,
                    sequence: state.held.map(|(sequence, _)| sequence),
                    age_seconds: state.held.and(confirmed).map(|at| now.saturating_sub(at)),
                    consecutive_failures: state.consecutive_failures,
                    last_error: state.last_error,
                }
            })
            .collect()
    }

    pub(super) fn update_federation_metrics(&self) {
        let metrics = crate::metrics::get();
        let health = self.federation_health();
        // Relationships removed since the last scrape leave no series.
        metrics.federation_sequence.clear();
        metrics.federation_age.clear();
        metrics.federation_failures.clear();
        for relationship in health {
            let labels = crate::metrics::TrustDomainLabels {
                trust_domain: relationship.trust_domain.clone(),
            };
            metrics.federation_sequence.get_or_create(&labels).set(
                relationship
                    .sequence
                    .map_or(-1, |sequence| i64::try_from(sequence).unwrap_or(i64::MAX)),
            );
            metrics
                .federation_age
                .get_or_create(&labels)
                .set(relationship.age_seconds.unwrap_or(-1));
            metrics
                .federation_failures
                .get_or_create(&labels)
                .set(i64::from(relationship.consecutive_failures));
        }
    }
}

impl Authority {
    /// The bundles certd holds of the foreign trust domains `entries`
    /// federate with, by trust domain (what a node agent hands those
    /// entries' workloads); a domain without a bundle yet is left out.
    pub async fn federated_bundles(
        &self,
        entries: &[crate::store::EntryRecord],
    ) -> Result<Vec<(TrustDomain, crate::federation::ParsedBundle)>> {
        let wanted: std::collections::HashSet<&TrustDomain> = entries
            .iter()
            .flat_map(|entry| &entry.federates_with)
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut bundles = Vec::new();
        for record in self.store.federations().await? {
            if !wanted.contains(&record.trust_domain) {
                continue;
            }
            let Some(held) = &record.bundle else {
                continue;
            };
            // Checked when it was accepted; a bundle that no longer parses
            // (a stricter certd) is left out, not handed out.
            match parse_bundle(held.json.as_bytes(), &record.trust_domain) {
                Ok(parsed) => bundles.push((record.trust_domain.clone(), parsed)),
                Err(error) => {
                    tracing::warn!(trust_domain = %record.trust_domain, error = %crate::error_kind::with_causes(&error), "a held foreign bundle does not parse; not handed out");
                }
            }
        }
        Ok(bundles)
    }
}

impl Authority {
    /// The foreign bundles for the entry `record` was issued for (none for
    /// a certificate without an entry, or an entry since deleted).
    pub async fn federated_bundles_of(
        &self,
        record: &crate::store::IssuanceRecord,
    ) -> Result<Vec<(TrustDomain, crate::federation::ParsedBundle)>> {
        let crate::store::Attestation::Registered { entry_id, .. } = &record.attestation else {
            return Ok(Vec::new());
        };
        match self.registry.get(entry_id) {
            Some(entry) => self.federated_bundles(&[entry]).await,
            None => Ok(Vec::new()),
        }
    }
}
