//! Federation: certd's own SPIFFE bundle as its bundle endpoint serves it,
//! with a `spiffe_sequence` kept in the store so that it grows with every
//! change across restarts and replicas.

use std::sync::Mutex;

use super::Authority;
use crate::Result;
use crate::jwt;

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
