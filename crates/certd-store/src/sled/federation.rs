//! Federation relationships (tree `federations`, by trust domain) and the
//! sequence of certd's own bundle (`meta`), on sled.

use super::{BUNDLE_SEQUENCE_KEY, Open};
use crate::codec as record;
use crate::{FederationRecord, ForeignBundle, StoreError};
use certd_core::identity::TrustDomain;

impl Open {
    pub(super) async fn insert_federation(
        &self,
        federation: &FederationRecord,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .federations
            .compare_and_swap(
                federation.trust_domain.as_str().as_bytes(),
                None as Option<&[u8]>,
                Some(record::encode(federation)?),
            )?
            .is_ok();
        if inserted {
            self.durable().await?;
        }
        Ok(inserted)
    }

    pub(super) async fn remove_federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        let Some(bytes) = self.federations.remove(trust_domain.as_str().as_bytes())? else {
            return Ok(None);
        };
        self.durable().await?;
        record::decode(&bytes).map(Some)
    }

    pub(super) fn federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        self.federations
            .get(trust_domain.as_str().as_bytes())?
            .map(|bytes| record::decode(&bytes))
            .transpose()
    }

    pub(super) fn federations(&self) -> Result<Vec<FederationRecord>, StoreError> {
        self.federations
            .iter()
            .map(|item| record::decode(&item?.1))
            .collect()
    }

    /// Compare-and-swap on the stored bytes, retried while another writer
    /// changes the record between the read and the swap.
    pub(super) async fn accept_foreign_bundle(
        &self,
        trust_domain: &TrustDomain,
        bundle: &ForeignBundle,
    ) -> Result<bool, StoreError> {
        let key = trust_domain.as_str().as_bytes();
        loop {
            let Some(current) = self.federations.get(key)? else {
                return Ok(false);
            };
            let mut federation: FederationRecord = record::decode(&current)?;
            if federation
                .bundle
                .as_ref()
                .is_some_and(|held| held.sequence >= bundle.sequence)
            {
                return Ok(false);
            }
            federation.bundle = Some(bundle.clone());
            let swapped = self
                .federations
                .compare_and_swap(key, Some(current), Some(record::encode(&federation)?))?
                .is_ok();
            if swapped {
                self.durable().await?;
                return Ok(true);
            }
        }
    }

    pub(super) fn stored_bundle_sequence(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(BUNDLE_SEQUENCE_KEY)?
            .and_then(|bytes| bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()))
            .map_or(0, u64::from_be_bytes))
    }

    /// The value is the sequence (u64, big-endian) then the digest.
    pub(super) async fn bundle_sequence(
        &self,
        digest: &[u8; 32],
        at_least: u64,
    ) -> Result<u64, StoreError> {
        let mut changed = false;
        let updated = self.meta.update_and_fetch(BUNDLE_SEQUENCE_KEY, |old| {
            let (sequence, stored_digest) = match old.map(|bytes| bytes.split_at_checked(8)) {
                Some(Some((sequence, stored_digest))) => (
                    <[u8; 8]>::try_from(sequence).map_or(0, u64::from_be_bytes),
                    stored_digest,
                ),
                _ => (0, &[][..]),
            };
            let next = if stored_digest == digest {
                sequence.max(at_least)
            } else {
                sequence.saturating_add(1).max(at_least)
            };
            changed = next != sequence || stored_digest != digest;
            let mut value = next.to_be_bytes().to_vec();
            value.extend_from_slice(digest);
            Some(value)
        })?;
        let sequence = updated
            .as_ref()
            .and_then(|bytes| bytes.get(..8))
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::Corrupt("bundle sequence".into()))?;
        if changed {
            self.durable().await?;
        }
        Ok(sequence)
    }
}
