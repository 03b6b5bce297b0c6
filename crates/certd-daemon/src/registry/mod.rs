//! Registration entries: which identity a workload may hold, given the
//! selectors its attestation proved.
//!
//! An entry maps a set of selectors to a service, a SPIFFE ID, DNS names and
//! a lifetime. A workload gets a certificate only when the selectors it
//! proved include the full set of exactly one entry; the certificate's names
//! come from that entry alone. Operators create, update (all but id and
//! service) and delete entries. This module owns entry validation, the
//! in-memory index used on every issuance, and matching. It writes entries
//! to the store but nothing else, and knows nothing of X.509 or gRPC.

mod entry;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

pub use entry::{
    EntryBounds, EntrySpec, MAX_DNS_NAMES, MAX_SELECTORS, ValidEntry, describe, identity_of,
};

use crate::attest::TOKEN_SELECTORS;
use crate::identity::{ServiceName, SpiffeId};
use crate::selector::Selector;
use crate::store::{EntryRecord, SharedStorage, Storage, StoreError};

/// Why an entry could not be created, changed, found or matched; a store
/// failure underneath keeps its own kind.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The entry asked for is not valid; nothing was stored.
    #[error("{0}")]
    InvalidEntry(String),
    #[error("entry {existing} already has exactly these selectors; delete it first")]
    DuplicateSelectors { existing: String },
    #[error("no registration entry matches the proven selectors [{selectors}]")]
    NoMatchingEntry { selectors: String },
    #[error(
        "the proven selectors [{selectors}] match {} registration entries ({}); an attestation must match exactly one, so narrow or delete entries",
        entries.len(),
        entries.join(", ")
    )]
    AmbiguousEntries {
        selectors: String,
        entries: Vec<String>,
    },
    #[error("registration entry {id}, which this certificate was issued for, has been deleted")]
    EntryDeleted { id: String },
    #[error(
        "entry {id} requires selectors a join token cannot prove ({selectors}); join tokens prove token:<label> selectors only"
    )]
    NotATokenEntry { id: String, selectors: String },
    #[error(
        "the client certificate ({identity}) is not a node agent's: only certificates issued for an --agent entry may call agent methods"
    )]
    NotAnAgent { identity: String },
    #[error("registration entry {id:?} is not parented to agent {agent}")]
    NotParentedTo { id: String, agent: String },
    #[error(
        "registration entry {id} {why}: ACME issues only for workload entries of their own, never an agent's identity or one an agent holds"
    )]
    NotForAcme { id: String, why: &'static str },
    #[error("{name} is not a DNS name of registration entry {id}")]
    NotAnEntryName { name: String, id: String },
    #[error(
        "this certificate was issued through node agent {agent}, which renews it and fetches its tokens; ask that agent"
    )]
    IssuedThroughAgent { agent: String },
    #[error(
        "audience {audience:?} is not allowed for entry {entry} (allowed: [{allowed}]); an operator adds it with --jwt-audience"
    )]
    AudienceNotAllowed {
        audience: String,
        entry: String,
        allowed: String,
    },
    #[error(
        "the client certificate ({identity}) was not issued for a registration entry, so it may get no JWT-SVIDs"
    )]
    NoJwtAudiences { identity: String },
    #[error(
        "this certificate was issued by `certd issue` without --renewable, so it does not renew; issue a new one"
    )]
    NotRenewable,
    #[error("registration entry {id:?} not found")]
    NoSuchEntry { id: String },
    #[error(
        "registration entry of service {service} that a join token can satisfy (create one: certd entry create --service {service} --selector token:{service}) not found"
    )]
    NoTokenEntry { service: String },
    #[error(
        "service {service} has {} entries a join token can satisfy ({}); name one with --entry",
        entries.len(),
        entries.join(", ")
    )]
    SeveralTokenEntries {
        service: String,
        entries: Vec<String>,
    },
    /// A name in the entry is not valid.
    #[error(transparent)]
    Name(#[from] crate::identity::NameError),
    /// The entry's lifetime is outside the bounds.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task that makes join tokens stopped before it finished.
    #[error("making join tokens stopped before it finished")]
    MakingTokensStopped(#[source] tokio::task::JoinError),
}

impl RegistryError {
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            RegistryError::InvalidEntry(_) | RegistryError::NotATokenEntry { .. } => {
                ErrorKind::InvalidInput
            }
            RegistryError::DuplicateSelectors { .. } => ErrorKind::AlreadyExists,
            RegistryError::NoSuchEntry { .. } | RegistryError::NoTokenEntry { .. } => {
                ErrorKind::NotFound
            }
            RegistryError::SeveralTokenEntries { .. } => ErrorKind::InvalidInput,
            RegistryError::Name(_) => ErrorKind::InvalidInput,
            RegistryError::Policy(error) => error.kind(),
            RegistryError::Store(error) => error.kind(),
            RegistryError::MakingTokensStopped(_) => ErrorKind::Internal,
            RegistryError::NoMatchingEntry { .. }
            | RegistryError::AmbiguousEntries { .. }
            | RegistryError::EntryDeleted { .. }
            | RegistryError::NotAnAgent { .. }
            | RegistryError::NotParentedTo { .. }
            | RegistryError::NotForAcme { .. }
            | RegistryError::NotAnEntryName { .. }
            | RegistryError::IssuedThroughAgent { .. }
            | RegistryError::AudienceNotAllowed { .. }
            | RegistryError::NoJwtAudiences { .. }
            | RegistryError::NotRenewable => ErrorKind::PermissionDenied,
        }
    }
}

/// Every entry, held in memory and indexed by selector so that matching
/// costs a few hash lookups however many entries exist. Writes go to the
/// store first, then to the index, so changes apply to the next request
/// without a restart; each index update touches only the entry's own
/// selectors.
#[derive(Debug)]
pub struct Registry {
    store: SharedStorage,
    index: RwLock<Index>,
    /// Serialises writers, so a duplicate check and its insert are one step.
    writer: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<String, Arc<EntryRecord>>,
    /// Selector → ids of the entries that require it.
    by_selector: HashMap<Selector, HashSet<String>>,
    /// Node agent → ids of the entries parented to it.
    by_parent: HashMap<SpiffeId, HashSet<String>>,
    /// Entry ids by the SPIFFE ID they issue (the token endpoint's client).
    by_spiffe_id: HashMap<SpiffeId, HashSet<String>>,
}

impl Index {
    async fn load(store: &dyn Storage) -> Result<Self, StoreError> {
        let mut index = Index::default();
        for entry in store.entries().await? {
            index.insert(entry);
        }
        Ok(index)
    }

    fn insert(&mut self, entry: EntryRecord) {
        for selector in &entry.selectors {
            self.by_selector
                .entry(selector.clone())
                .or_default()
                .insert(entry.id.clone());
        }
        if let Some(parent) = &entry.parent {
            self.by_parent
                .entry(parent.clone())
                .or_default()
                .insert(entry.id.clone());
        }
        self.by_spiffe_id
            .entry(entry.spiffe_id.clone())
            .or_default()
            .insert(entry.id.clone());
        self.by_id.insert(entry.id.clone(), Arc::new(entry));
    }

    fn remove(&mut self, id: &str) {
        let Some(entry) = self.by_id.remove(id) else {
            return;
        };
        for selector in &entry.selectors {
            if let Some(ids) = self.by_selector.get_mut(selector) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_selector.remove(selector);
                }
            }
        }
        if let Some(parent) = &entry.parent
            && let Some(ids) = self.by_parent.get_mut(parent)
        {
            ids.remove(id);
            if ids.is_empty() {
                self.by_parent.remove(parent);
            }
        }
        if let Some(ids) = self.by_spiffe_id.get_mut(&entry.spiffe_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_spiffe_id.remove(&entry.spiffe_id);
            }
        }
    }

    /// The entries with these ids (from one of the indexes), oldest first.
    fn oldest_first(&self, ids: Option<&HashSet<String>>) -> Vec<EntryRecord> {
        let mut entries: Vec<EntryRecord> = ids
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
            .map(|e| EntryRecord::clone(e))
            .collect();
        entries.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        entries
    }

    /// Entries that require `selector` (and possibly more).
    fn requiring<'a>(&'a self, selector: &Selector) -> impl Iterator<Item = &'a Arc<EntryRecord>> {
        self.by_selector
            .get(selector)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }
}

impl Registry {
    /// Loads every entry from the store.
    pub async fn load(store: SharedStorage) -> Result<Self, StoreError> {
        let index = Index::load(store.as_ref()).await?;
        Ok(Registry {
            store,
            index: RwLock::new(index),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// Brings entry `id` in the index up to date with the store, after
    /// another process changed it (the store's change feed said so).
    pub async fn entry_changed(&self, id: &str) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let current = self.store.entry(id).await?;
        let mut index = self.write();
        index.remove(id);
        if let Some(entry) = current {
            index.insert(entry);
        }
        Ok(())
    }

    /// Reloads every entry, for a change feed that fell behind.
    pub async fn resync(&self) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let index = Index::load(self.store.as_ref()).await?;
        *self.write() = index;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a new entry and returns it once durable. Refuses an entry
    /// whose selector set another entry already has: no attestation could
    /// ever tell the two apart.
    pub async fn create(
        &self,
        entry: ValidEntry,
        created_at: i64,
        created_by: &str,
    ) -> Result<EntryRecord, RegistryError> {
        let _writer = self.writer.lock().await;
        let selectors = entry.selectors;
        if selectors.is_empty() {
            return Err(RegistryError::InvalidEntry(
                "an entry needs a selector".into(),
            ));
        }
        if let Some(existing) = self.same_selectors(&selectors, entry.parent.as_ref()) {
            return Err(RegistryError::DuplicateSelectors { existing });
        }
        let mut record = EntryRecord {
            id: String::new(),
            service: entry.service,
            spiffe_id: entry.spiffe_id,
            dns_names: entry.dns_names,
            ttl_seconds: entry.ttl_seconds,
            selectors,
            created_at,
            created_by: created_by.to_owned(),
            parent: entry.parent,
            jwt_audiences: entry.jwt_audiences,
            federates_with: entry.federates_with,
        };
        loop {
            record.id = new_entry_id();
            if self.store.insert_entry(&record).await? {
                break;
            }
        }
        self.write().insert(record.clone());
        Ok(record)
    }

    /// Replaces entry `id`'s selectors, SPIFFE ID, DNS names and lifetime
    /// (its service, id and creation stay). Certificates issued for it get
    /// the new names at their next renewal.
    pub async fn update(&self, id: &str, entry: ValidEntry) -> Result<EntryRecord, RegistryError> {
        let _writer = self.writer.lock().await;
        let not_found = || RegistryError::NoSuchEntry { id: id.to_owned() };
        let current = self.get(id).ok_or_else(not_found)?;
        if entry.service != current.service {
            return Err(RegistryError::InvalidEntry(format!(
                "entry {id} is for service {}; an entry's service cannot change (create a new entry)",
                current.service
            )));
        }
        // An agent's certificates would otherwise renew as a service's
        // identity, or a service's as an agent's.
        let becomes_agent = entry.spiffe_id.path().starts_with("agent/");
        if becomes_agent != current.is_agent() {
            let (was, would_be) = if current.is_agent() {
                ("a node agent's (--agent)", "a workload's")
            } else {
                ("a workload's", "a node agent's")
            };
            return Err(RegistryError::InvalidEntry(format!(
                "entry {id} is {was}; it cannot become {would_be} (create a new entry)"
            )));
        }
        let selectors = entry.selectors;
        if let Some(existing) = self
            .same_selectors(&selectors, entry.parent.as_ref())
            .filter(|other| other != id)
        {
            return Err(RegistryError::DuplicateSelectors { existing });
        }
        let updated = EntryRecord {
            spiffe_id: entry.spiffe_id,
            dns_names: entry.dns_names,
            ttl_seconds: entry.ttl_seconds,
            selectors,
            parent: entry.parent,
            jwt_audiences: entry.jwt_audiences,
            federates_with: entry.federates_with,
            ..current
        };
        if !self.store.replace_entry(&updated).await? {
            return Err(not_found());
        }
        let mut index = self.write();
        index.remove(id);
        index.insert(updated.clone());
        Ok(updated)
    }

    /// The id of the entry with exactly `selectors` (sorted) under the
    /// same parent, if any: the same selectors on two nodes are two
    /// different workloads.
    fn same_selectors(&self, selectors: &[Selector], parent: Option<&SpiffeId>) -> Option<String> {
        let first = selectors.first()?;
        self.read()
            .requiring(first)
            .find(|e| e.selectors == selectors && e.parent.as_ref() == parent)
            .map(|e| e.id.clone())
    }

    /// The entries that issue `spiffe_id`, oldest first (an index, not a
    /// scan: the token endpoint asks on every request).
    pub fn issuing(&self, spiffe_id: &SpiffeId) -> Vec<EntryRecord> {
        let index = self.read();
        index.oldest_first(index.by_spiffe_id.get(spiffe_id))
    }

    /// Whether any entry issues `spiffe_id` (the index alone).
    pub fn issues(&self, spiffe_id: &SpiffeId) -> bool {
        self.read()
            .by_spiffe_id
            .get(spiffe_id)
            .is_some_and(|ids| !ids.is_empty())
    }

    /// The entries issued through node agent `agent`, oldest first.
    pub fn parented_to(&self, agent: &SpiffeId) -> Vec<EntryRecord> {
        let index = self.read();
        index.oldest_first(index.by_parent.get(agent))
    }

    /// Deletes an entry; certificates issued for it can no longer renew.
    pub async fn delete(&self, id: &str) -> Result<EntryRecord, RegistryError> {
        let _writer = self.writer.lock().await;
        let removed = self
            .store
            .remove_entry(id)
            .await?
            .ok_or_else(|| RegistryError::NoSuchEntry { id: id.to_owned() })?;
        self.write().remove(id);
        Ok(removed)
    }

    /// Every entry, oldest first; optionally one service's.
    pub fn list(&self, service: Option<&ServiceName>) -> Vec<EntryRecord> {
        let mut entries: Vec<EntryRecord> = self
            .read()
            .by_id
            .values()
            .filter(|e| service.is_none_or(|s| &e.service == s))
            .map(|e| EntryRecord::clone(e))
            .collect();
        entries.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        entries
    }

    /// The services entries issue for (for the certificate expiry metric's
    /// start-up load).
    pub fn services(&self) -> BTreeSet<ServiceName> {
        self.read()
            .by_id
            .values()
            .map(|entry| entry.service.clone())
            .collect()
    }

    /// The service entry `id` issues for, if it exists.
    pub fn service_of(&self, id: &str) -> Option<ServiceName> {
        self.read().by_id.get(id).map(|entry| entry.service.clone())
    }

    pub fn get(&self, id: &str) -> Option<EntryRecord> {
        self.read().by_id.get(id).map(|e| EntryRecord::clone(e))
    }

    /// The one entry for direct attestation (no parent) whose every
    /// selector is among `proven`. Entries with a parent are issued only
    /// through that agent, never here.
    pub fn resolve(&self, proven: &[Selector]) -> Result<EntryRecord, RegistryError> {
        let proven_set: BTreeSet<&str> = proven.iter().map(Selector::as_str).collect();
        let mut matching: Vec<Arc<EntryRecord>> = Vec::new();
        {
            let index = self.read();
            for selector in proven {
                for entry in index.requiring(selector) {
                    let covered = entry
                        .selectors
                        .iter()
                        .all(|s| proven_set.contains(s.as_str()));
                    if covered
                        && entry.parent.is_none()
                        && !matching.iter().any(|m| m.id == entry.id)
                    {
                        matching.push(entry.clone());
                    }
                }
            }
        }
        match matching.as_slice() {
            [entry] => Ok(EntryRecord::clone(entry)),
            [] => Err(RegistryError::NoMatchingEntry {
                selectors: describe(proven),
            }),
            many => {
                let mut entries: Vec<String> = many.iter().map(|e| e.id.clone()).collect();
                entries.sort();
                Err(RegistryError::AmbiguousEntries {
                    selectors: describe(proven),
                    entries,
                })
            }
        }
    }

    /// The entry of `service` a join token can satisfy: the shorthand
    /// `certd token create --service NAME`. There must be exactly one.
    pub fn token_entry_of(&self, service: &ServiceName) -> Result<EntryRecord, RegistryError> {
        let candidates: Vec<EntryRecord> = self
            .list(Some(service))
            .into_iter()
            .filter(|entry| entry.selectors.iter().all(|s| s.is(TOKEN_SELECTORS)))
            .collect();
        match candidates.as_slice() {
            [entry] => Ok(entry.clone()),
            [] => Err(RegistryError::NoTokenEntry {
                service: service.to_string(),
            }),
            many => Err(RegistryError::SeveralTokenEntries {
                service: service.to_string(),
                entries: many.iter().map(|e| e.id.clone()).collect(),
            }),
        }
    }
}

/// The selectors a join token made for `entry` proves: its own, which must
/// all be `token:` selectors.
pub(crate) fn token_selectors(entry: &EntryRecord) -> Result<Vec<Selector>, RegistryError> {
    if entry.selectors.iter().all(|s| s.is(TOKEN_SELECTORS)) {
        Ok(entry.selectors.clone())
    } else {
        Err(RegistryError::NotATokenEntry {
            id: entry.id.clone(),
            selectors: describe(&entry.selectors),
        })
    }
}

/// A fresh entry id: 16 hex digits from the OS CSPRNG.
fn new_entry_id() -> String {
    let mut bytes = [0u8; 8];
    crate::fsutil::fill_random(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::entry::tests::{bounds, selectors, spec};

    #[tokio::test]
    async fn entries_through_an_agent_are_listed_for_it_alone_and_never_resolved_directly() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::load(crate::store::open(dir.path()).unwrap())
            .await
            .unwrap();
        let node = |name: &str| -> SpiffeId {
            format!("spiffe://certd.internal/agent/{name}")
                .parse()
                .unwrap()
        };
        let mut agent = spec("node-1", &["token:node-1"]);
        agent.agent = true;
        let agent = agent.validate(&bounds()).unwrap();
        assert_eq!(agent.spiffe_id, node("node-1"));
        assert!(agent.dns_names.is_empty(), "an agent poses as no service");
        let agent = registry.create(agent, 1, "test").await.unwrap();
        assert!(agent.is_agent());
        let mut created = Vec::new();
        for name in ["node-1", "node-2"] {
            let mut web = spec("web", &["unix:uid:1000"]);
            web.parent = Some(node(name).to_string());
            let web = web.validate(&bounds()).unwrap();
            created.push(registry.create(web, 2, "test").await.unwrap());
        }
        assert_eq!(registry.parented_to(&node("node-1")), [created[0].clone()]);
        assert_eq!(registry.parented_to(&node("node-2")), [created[1].clone()]);
        assert!(registry.parented_to(&node("node-3")).is_empty());
        assert!(matches!(
            registry.resolve(&selectors(&["unix:uid:1000"])),
            Err(RegistryError::NoMatchingEntry { .. })
        ));
        // Same selectors under the same agent: refused.
        let mut again = spec("other", &["unix:uid:1000"]);
        again.parent = Some(node("node-1").to_string());
        let again = registry
            .create(again.validate(&bounds()).unwrap(), 3, "test")
            .await;
        assert!(matches!(
            again,
            Err(RegistryError::DuplicateSelectors { .. })
        ));
        // An agent's entry stays an agent's, a workload's a workload's.
        let as_workload = spec("node-1", &["token:node-1"])
            .validate(&bounds())
            .unwrap();
        let refused = registry.update(&agent.id, as_workload).await.unwrap_err();
        assert!(
            refused.to_string().contains("cannot become a workload's"),
            "{refused}"
        );
        let mut as_agent = spec("web", &["token:web"]);
        as_agent.agent = true;
        let plain = registry
            .create(
                spec("web", &["token:w1"]).validate(&bounds()).unwrap(),
                4,
                "test",
            )
            .await
            .unwrap();
        let refused = registry
            .update(&plain.id, as_agent.validate(&bounds()).unwrap())
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("cannot become a node agent's"),
            "{refused}"
        );

        // By the SPIFFE ID they issue: both web entries and the plain one.
        let web: SpiffeId = "spiffe://certd.internal/svc/web".parse().unwrap();
        let mut issuing: Vec<String> = registry.issuing(&web).into_iter().map(|e| e.id).collect();
        let mut expected = vec![
            created[0].id.clone(),
            created[1].id.clone(),
            plain.id.clone(),
        ];
        issuing.sort();
        expected.sort();
        assert_eq!(issuing, expected);
        assert_eq!(
            registry.issuing(&node("node-1")),
            std::slice::from_ref(&agent)
        );

        registry.delete(&created[0].id).await.unwrap();
        assert!(registry.parented_to(&node("node-1")).is_empty());
        assert_eq!(
            registry.issuing(&web).len(),
            2,
            "the index follows a delete"
        );
        assert_eq!(
            registry.resolve(&selectors(&["token:node-1"])).unwrap().id,
            agent.id
        );
    }

    #[tokio::test]
    async fn matching_needs_exactly_one_full_selector_set() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::load(crate::store::open(dir.path()).unwrap())
            .await
            .unwrap();
        let create = |service: &str, sel: &[&str]| {
            let entry = spec(service, sel).validate(&bounds()).unwrap();
            registry.create(entry, 1, "test")
        };
        let billing = create("billing", &["k8s:ns:payments", "k8s:sa:billing"])
            .await
            .unwrap();
        let ns_wide = create("payments", &["k8s:ns:payments"]).await.unwrap();
        let duplicate = create("other", &["k8s:sa:billing", "k8s:ns:payments"]).await;
        assert!(
            matches!(duplicate, Err(RegistryError::DuplicateSelectors { ref existing }) if *existing == billing.id),
            "{duplicate:?}"
        );

        let proven = selectors(&["k8s:ns:payments", "k8s:sa:reports"]);
        assert_eq!(registry.resolve(&proven).unwrap().id, ns_wide.id);
        let proven = selectors(&["k8s:ns:orders", "k8s:sa:billing"]);
        assert!(matches!(
            registry.resolve(&proven),
            Err(RegistryError::NoMatchingEntry { .. })
        ));
        let proven = selectors(&["k8s:ns:payments", "k8s:sa:billing"]);
        match registry.resolve(&proven) {
            Err(RegistryError::AmbiguousEntries { entries, .. }) => {
                assert_eq!(entries.len(), 2);
            }
            other => panic!("{other:?}"),
        }

        registry.delete(&ns_wide.id).await.unwrap();
        assert_eq!(registry.resolve(&proven).unwrap().id, billing.id);
        let gone = registry.delete(&ns_wide.id).await.unwrap_err();
        assert!(matches!(gone, RegistryError::NoSuchEntry { .. }), "{gone}");
        assert_eq!(gone.kind(), crate::ErrorKind::NotFound);
        // Changes are in the store, not only in memory.
        let reloaded = Registry::load(registry.store.clone()).await.unwrap();
        assert_eq!(reloaded.list(None), vec![billing]);
    }

    #[tokio::test]
    async fn an_update_replaces_the_content_but_not_the_service_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::load(crate::store::open(dir.path()).unwrap())
            .await
            .unwrap();
        let valid = |service: &str, selectors: &[&str]| {
            spec(service, selectors).validate(&bounds()).unwrap()
        };
        let billing = registry
            .create(valid("billing", &["k8s:sa:billing"]), 1, "test")
            .await
            .unwrap();
        let other = registry
            .create(valid("orders", &["k8s:sa:orders"]), 2, "test")
            .await
            .unwrap();
        let mut change = spec("billing", &["k8s:sa:billing", "k8s:ns:payments"]);
        change.dns_names = vec!["billing.example.com".into()];
        let updated = registry
            .update(&billing.id, change.validate(&bounds()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            (updated.id.as_str(), updated.created_at),
            (billing.id.as_str(), 1)
        );
        assert_eq!(updated.dns_names[1], "billing.example.com");
        let proven = selectors(&["k8s:ns:payments", "k8s:sa:billing"]);
        assert_eq!(registry.resolve(&proven).unwrap(), updated);
        assert!(matches!(
            registry.resolve(&selectors(&["k8s:sa:billing"])),
            Err(RegistryError::NoMatchingEntry { .. })
        ));
        for (id, change, refused) in [
            (&billing.id, valid("orders", &["k8s:sa:x"]), "cannot change"),
            (
                &billing.id,
                valid("billing", &["k8s:sa:orders"]),
                "already has",
            ),
            (
                &"0000".to_owned(),
                valid("billing", &["k8s:sa:x"]),
                "not found",
            ),
        ] {
            let error = registry.update(id, change).await.unwrap_err().to_string();
            assert!(error.contains(refused), "{error}");
        }
        assert_eq!(registry.get(&other.id).unwrap(), other);
        let reloaded = Registry::load(registry.store.clone()).await.unwrap();
        assert_eq!(reloaded.get(&billing.id).unwrap(), updated);
    }

    /// Another process writing the store (a replica on a shared backend)
    /// reaches this registry through `entry_changed` and `resync`.
    #[tokio::test]
    async fn changes_made_by_another_process_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let registry = Registry::load(store.clone()).await.unwrap();
        let proven = selectors(&["k8s:sa:billing"]);
        // Written behind the registry's back, as another replica would.
        let elsewhere = Registry::load(store.clone()).await.unwrap();
        let valid = spec("billing", &["k8s:sa:billing"])
            .validate(&bounds())
            .unwrap();
        let entry = elsewhere.create(valid, 1, "replica-2").await.unwrap();
        assert!(registry.resolve(&proven).is_err(), "not seen yet");
        registry.entry_changed(&entry.id).await.unwrap();
        assert_eq!(registry.resolve(&proven).unwrap().id, entry.id);

        elsewhere.delete(&entry.id).await.unwrap();
        registry.entry_changed(&entry.id).await.unwrap();
        assert!(registry.resolve(&proven).is_err(), "deletion seen");

        let valid = spec("orders", &["k8s:sa:orders"])
            .validate(&bounds())
            .unwrap();
        let orders = elsewhere.create(valid, 2, "replica-2").await.unwrap();
        registry.resync().await.unwrap();
        assert_eq!(registry.list(None), vec![orders]);
    }

    #[tokio::test]
    async fn join_tokens_are_for_entries_of_token_selectors_only() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::load(crate::store::open(dir.path()).unwrap())
            .await
            .unwrap();
        let vm = spec("billing", &["token:billing-vm"])
            .validate(&bounds())
            .unwrap();
        let vm = registry.create(vm, 1, "test").await.unwrap();
        let pod = spec("billing", &["k8s:ns:payments"])
            .validate(&bounds())
            .unwrap();
        let pod = registry.create(pod, 2, "test").await.unwrap();
        assert_eq!(
            token_selectors(&vm).unwrap(),
            selectors(&["token:billing-vm"])
        );
        assert!(matches!(
            token_selectors(&pod),
            Err(RegistryError::NotATokenEntry { .. })
        ));
        let billing = "billing".parse().unwrap();
        assert_eq!(registry.token_entry_of(&billing).unwrap().id, vm.id);
        let none = registry
            .token_entry_of(&"orders".parse().unwrap())
            .unwrap_err();
        assert!(matches!(none, RegistryError::NoTokenEntry { .. }), "{none}");
        assert_eq!(none.kind(), crate::ErrorKind::NotFound);
    }
}
