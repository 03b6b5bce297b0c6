//! Registration entries and the join tokens made for them: what operators
//! change so that workloads can attest.

use std::time::Duration;

use super::{Authority, Caller};
use crate::attest::JoinToken;
use crate::audit::{self, Decision};
use crate::identity::DnsName;
use crate::identity::ServiceName;
use crate::model::AuditEvent;
use crate::policy;
use crate::registry::{self, EntrySpec, RegistryError};
use crate::store::{EntryRecord, JoinTokenRecord, Storage};
use crate::{Error, Result};

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

impl Authority {
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
                event: AuditEvent::CreateJoinToken,
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
                event: AuditEvent::CreateJoinToken,
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
                refusal: Some(error.kind()),
                ..Decision::default()
            },
        };
        audit::record(self.store.as_ref(), self.now(), decision).await;
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
                .ok_or_else(|| RegistryError::NoSuchEntry { id: id.clone() })?,
            TokenFor::Service(service) => self.registry.token_entry_of(&service.parse()?)?,
        };
        let selectors = registry::token_selectors(&entry)?;
        if !(1..=MAX_TOKENS_PER_REQUEST).contains(&count) {
            return Err(Error::InvalidArgument(format!(
                "token count {count} is not between 1 and {MAX_TOKENS_PER_REQUEST}"
            )));
        }
        let ttl = ttl.unwrap_or(self.lifetimes.default_join_token_ttl);
        policy::check_ttl(
            ttl,
            self.lifetimes.max_join_token_ttl,
            policy::JOIN_TOKEN_MAX_TTL,
        )?;
        let now = self.now();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let record = JoinTokenRecord {
            selectors: selectors.clone(),
            created_at: now,
            expires_at,
        };
        // Made on the blocking pool (a CSPRNG read, base64 and SHA-256 per
        // token): on an async worker a bulk request (up to
        // MAX_TOKENS_PER_REQUEST) held it, and every issuance queued on it
        // waited (docs/PERFORMANCE.md, "Join tokens made in bulk beside
        // issuance").
        let (tokens, entries) = tokio::task::spawn_blocking(move || {
            let tokens: Vec<JoinToken> = (0..count).map(|_| JoinToken::generate()).collect();
            let entries: Vec<_> = tokens.iter().map(|t| (t.hash(), record.clone())).collect();
            (tokens, entries)
        })
        .await
        .map_err(RegistryError::MakingTokensStopped)?;
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
                let now = self.now();
                self.registry.create(valid, now, &caller.0).await
            }
            Err(error) => Err(error),
        }
        .map_err(Error::from);
        let attempted = EntryChange {
            event: AuditEvent::CreateEntry,
            id: None,
            service: Some(&spec.service),
            selectors: &spec.selectors,
        };
        audit_entry_change(self.store.as_ref(), self.now(), caller, attempted, &outcome).await;
        outcome
    }

    /// Replaces entry `id`'s selectors, SPIFFE ID, DNS names and lifetime
    /// with those of `spec`. Its service stays: `spec.service` may be empty,
    /// or must name it. It applies to the next request; certificates issued
    /// for the entry get the new names when they renew.
    pub async fn update_entry(
        &self,
        caller: &Caller,
        id: &str,
        spec: &EntrySpec,
    ) -> Result<EntryRecord> {
        let mut spec = spec.clone();
        let outcome = match self.registry.get(id) {
            None => Err(RegistryError::NoSuchEntry { id: id.to_owned() }),
            Some(current) => {
                if spec.service.is_empty() {
                    spec.service = current.service.to_string();
                }
                match spec.validate(&self.entry_bounds) {
                    Ok(valid) => self.registry.update(id, valid).await,
                    Err(error) => Err(error),
                }
            }
        }
        .map_err(Error::from);
        let attempted = EntryChange {
            event: AuditEvent::UpdateEntry,
            id: Some(id),
            service: Some(&spec.service),
            selectors: &spec.selectors,
        };
        audit_entry_change(self.store.as_ref(), self.now(), caller, attempted, &outcome).await;
        outcome
    }

    /// Deletes a registration entry: no new certificate is issued for it,
    /// and certificates issued for it no longer renew.
    pub async fn delete_entry(&self, caller: &Caller, id: &str) -> Result<EntryRecord> {
        let outcome = self.registry.delete(id).await.map_err(Error::from);
        if outcome.is_ok() {
            self.track_entry_change(id);
        }
        let attempted = EntryChange {
            event: AuditEvent::DeleteEntry,
            id: Some(id),
            service: None,
            selectors: &[],
        };
        audit_entry_change(self.store.as_ref(), self.now(), caller, attempted, &outcome).await;
        outcome
    }

    /// What may keep an entry from ever being used, as this certd sees it:
    /// a selector no attestor here proves (a `k8s:` entry without the
    /// Kubernetes attestor), or a parent no node agent entry names yet.
    /// Warnings, not refusals: replicas may differ in attestors, and an
    /// agent's entry may be made after its workloads'.
    pub fn entry_warnings(&self, entry: &EntryRecord) -> Vec<String> {
        let mut warnings: Vec<String> = entry
            .selectors
            .iter()
            .filter_map(|selector| self.attestors.cannot_prove(selector))
            .collect();
        if let Some(parent) = &entry.parent
            && !self.registry.issues(parent)
        {
            warnings.push(format!(
                "the parent {parent} is no node agent's entry yet: its workloads get nothing until one is made (certd entry create --agent)"
            ));
        }
        warnings
    }

    /// Every registration entry, or one service's, oldest first.
    pub fn entries(&self, service: Option<&str>) -> Result<Vec<EntryRecord>> {
        let service = service.map(str::parse::<ServiceName>).transpose()?;
        Ok(self.registry.list(service.as_ref()))
    }
}

/// An operator's change to an entry, as asked.
struct EntryChange<'a> {
    event: AuditEvent,
    id: Option<&'a str>,
    service: Option<&'a str>,
    selectors: &'a [String],
}

/// One audit entry per entry change: the entry as it now is, or what was
/// asked and why it was refused.
async fn audit_entry_change(
    store: &dyn Storage,
    at: i64,
    caller: &Caller,
    attempted: EntryChange<'_>,
    outcome: &Result<EntryRecord>,
) {
    let decision = match outcome {
        Ok(entry) => Decision {
            event: attempted.event,
            allowed: true,
            caller: &caller.0,
            service: Some(entry.service.to_string()),
            reason: Some(format!(
                "entry {}: {}, DNS {}, TTL {}",
                entry.id,
                entry.spiffe_id,
                entry
                    .dns_names
                    .iter()
                    .map(DnsName::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                entry
                    .ttl_seconds
                    .map_or("default".to_owned(), |s| format!("{s}s"))
            )),
            selectors: entry.selectors.clone(),
            ..Decision::default()
        },
        Err(error) => Decision {
            event: attempted.event,
            allowed: false,
            caller: &caller.0,
            service: attempted.service.map(str::to_owned),
            reason: Some(match attempted.id {
                Some(id) => format!("entry {id:?}: {error}"),
                None => error.to_string(),
            }),
            // Those that parse: the reason names any that did not.
            selectors: attempted
                .selectors
                .iter()
                .filter_map(|s| crate::attest::parse_selector(s).ok())
                .collect(),
            refusal: Some(error.kind()),
            ..Decision::default()
        },
    };
    audit::record(store, at, decision).await;
}
