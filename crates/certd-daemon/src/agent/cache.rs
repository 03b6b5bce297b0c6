//! The agent's memory: the entries certd says are parented to this agent,
//! an X.509-SVID ready for each, and the trust bundle.
//!
//! Owns the one cache the agent has. `sync` is its only writer; it
//! publishes a whole new [`Snapshot`] through a watch channel after every
//! change, and the Workload API streams read snapshots and resend when one
//! changes. Nothing here is written to disk: a restarted agent fetches
//! fresh SVIDs before it serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::selector::Selector;

/// One entry this agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedEntry {
    pub id: String,
    pub spiffe_id: String,
    /// Sorted; a workload must prove every one.
    pub selectors: Vec<Selector>,
    /// The foreign trust domains its workloads trust (federation).
    pub federates_with: Vec<String>,
}

/// A foreign trust domain's bundle, for the entries that federate with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForeignBundle {
    /// Root certificates, DER.
    pub roots_der: Vec<Vec<u8>>,
    /// Its JWT-SVID keys.
    pub jwt_keys: crate::jwt::JwkSet,
}

/// An X.509-SVID held for an entry.
#[derive(Clone)]
pub struct Svid {
    pub spiffe_id: String,
    /// Leaf first, then the intermediate; DER.
    pub chain_der: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key_pkcs8: Arc<Zeroizing<Vec<u8>>>,
    pub serial: String,
    pub not_after: i64,
    /// When the agent replaces it: half its validity after it arrived.
    pub renew_at: i64,
}

impl std::fmt::Debug for Svid {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Everything the Workload API answers from, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub trust_domain: String,
    /// Root certificates, DER.
    pub bundle_der: Vec<Vec<u8>>,
    pub entries: Vec<ServedEntry>,
    /// By entry id. An entry may lack one while certd is unreachable.
    pub svids: BTreeMap<String, Svid>,
    /// The JWT keys verifiers need now, from certd.
    pub jwt_keys: crate::jwt::JwkSet,
    /// The bundles of the foreign trust domains entries federate with, by
    /// trust domain.
    pub federated: BTreeMap<String, ForeignBundle>,
}

/// What a workload proving `selectors` gets.
#[derive(Debug)]
pub enum Grant<'a> {
    /// Its one entry's SVID.
    Svid(&'a Svid),
    /// Its entry has no SVID yet (certd has not been reached since it
    /// appeared): try again shortly.
    Pending {
        entry: &'a str,
    },
    NoEntry,
    Ambiguous {
        entries: Vec<&'a str>,
    },
}

impl Snapshot {
    /// The entry whose every selector is among `proven`, exactly one, and
    /// its SVID.
    pub fn grant(&self, proven: &[Selector]) -> Grant<'_> {
        match self.entry_for(proven) {
            Ok(entry) => match self.svids.get(&entry.id) {
                Some(svid) => Grant::Svid(svid),
                None => Grant::Pending { entry: &entry.id },
            },
            Err(refusal) => refusal,
        }
    }

    /// The one entry whose every selector is among `proven`; `Err` holds
    /// `NoEntry` or `Ambiguous`.
    pub fn entry_for(&self, proven: &[Selector]) -> Result<&ServedEntry, Grant<'_>> {
        let matching: Vec<&ServedEntry> = self
            .entries
            .iter()
            .filter(|entry| entry.selectors.iter().all(|s| proven.contains(s)))
            .collect();
        match matching.as_slice() {
            [] => Err(Grant::NoEntry),
            [entry] => Ok(entry),
            many => Err(Grant::Ambiguous {
                entries: many.iter().map(|e| e.id.as_str()).collect(),
            }),
        }
    }

    /// Whether some entry requires a `unix:sha256:` selector.
    pub fn wants_executable_hash(&self) -> bool {
        self.entries
            .iter()
            .flat_map(|entry| &entry.selectors)
            .any(|selector| selector.as_str().starts_with("unix:sha256:"))
    }

    /// The foreign trust domains `entry` federates with whose bundle is
    /// held, and those bundles.
    pub fn federated_for<'a>(
        &'a self,
        entry: &'a ServedEntry,
    ) -> impl Iterator<Item = (&'a String, &'a ForeignBundle)> + 'a {
        entry
            .federates_with
            .iter()
            .filter_map(|domain| self.federated.get_key_value(domain))
    }

    /// The roots, concatenated DER, as the Workload API sends them.
    pub fn bundle_bytes(&self) -> Vec<u8> {
        self.bundle_der.concat()
    }
}

/// The published snapshot and its subscribers.
#[derive(Debug, Clone)]
pub struct Cache {
    sender: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            sender: Arc::new(watch::Sender::new(Arc::new(Snapshot::default()))),
        }
    }
}

impl Cache {
    pub fn current(&self) -> Arc<Snapshot> {
        self.sender.borrow().clone()
    }

    /// Follows every snapshot published from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.sender.subscribe()
    }

    /// Publishes `snapshot`; subscribers wake.
    pub fn publish(&self, snapshot: Snapshot) {
        self.sender.send_replace(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, selectors: &[&str]) -> ServedEntry {
        ServedEntry {
            federates_with: Vec::new(),
            id: id.into(),
            spiffe_id: format!("spiffe://td/{id}"),
            selectors: selectors
                .iter()
                .map(|s| crate::attest::parse_selector(s).unwrap())
                .collect(),
        }
    }

    fn svid(id: &str) -> Svid {
        Svid {
            spiffe_id: format!("spiffe://td/{id}"),
            chain_der: vec![vec![1]],
            key_pkcs8: Arc::new(Zeroizing::new(vec![2])),
            serial: "01".into(),
            not_after: 10,
            renew_at: 5,
        }
    }

    #[test]
    fn a_workload_gets_its_one_entrys_svid() {
        let mut snapshot = Snapshot {
            entries: vec![
                entry("web", &["unix:uid:1000"]),
                entry("db", &["unix:uid:1001", "unix:gid:50"]),
                entry("any-50", &["unix:gid:50"]),
            ],
            ..Snapshot::default()
        };
        snapshot.svids.insert("web".into(), svid("web"));
        let proven = |values: &[&str]| -> Vec<Selector> {
            values
                .iter()
                .map(|s| crate::attest::parse_selector(s).unwrap())
                .collect()
        };
        assert!(matches!(
            snapshot.grant(&proven(&["unix:uid:1000", "unix:gid:1"])),
            Grant::Svid(svid) if svid.spiffe_id == "spiffe://td/web"
        ));
        assert!(matches!(
            snapshot.grant(&proven(&["unix:uid:7", "unix:gid:7"])),
            Grant::NoEntry
        ));
        assert!(matches!(
            snapshot.grant(&proven(&["unix:uid:1001", "unix:gid:50"])),
            Grant::Ambiguous { entries } if entries == ["db", "any-50"]
        ));
        assert!(matches!(
            snapshot.grant(&proven(&["unix:uid:2", "unix:gid:50"])),
            Grant::Pending { entry: "any-50" }
        ));
    }
}
