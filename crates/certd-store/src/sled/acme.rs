//! ACME objects (tree `acme`, by key) and consumed ACME nonces (tree
//! `acme-nonces`), on sled.
//!
//! An object's value is its expiry (i64, big-endian; `i64::MAX` for none)
//! then its bytes, so a compare-and-swap compares both at once. A nonce's
//! value is its expiry alone.

use super::Open;
use crate::{AcmeObject, StoreError};

/// Length of the expiry in front of an object's bytes.
const EXPIRY_LEN: usize = 8;

impl Open {
    pub(super) fn acme_object(&self, key: &str) -> Result<Option<AcmeObject>, StoreError> {
        self.acme
            .get(key.as_bytes())?
            .map(|bytes| object_of(&bytes))
            .transpose()
    }

    pub(super) fn acme_objects(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, AcmeObject)>, StoreError> {
        self.acme
            .scan_prefix(prefix.as_bytes())
            .map(|item| {
                let (key, value) = item?;
                let key = String::from_utf8(key.to_vec())
                    .map_err(|_| StoreError::Corrupt("an ACME object's key".into()))?;
                Ok((key, object_of(&value)?))
            })
            .collect()
    }

    /// The keys after `after` under `prefix`, read from where `after` (or
    /// the prefix) starts: no key before it is read.
    pub(super) fn acme_objects_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, AcmeObject)>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        for item in self.acme.range::<&[u8], _>((start, Bound::Unbounded)) {
            if page.len() >= limit {
                break;
            }
            let (key, value) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| StoreError::Corrupt("an ACME object's key".into()))?;
            page.push((key, object_of(&value)?));
        }
        Ok(page)
    }

    pub(super) async fn swap_acme_object(
        &self,
        key: &str,
        expected: Option<&AcmeObject>,
        new: Option<&AcmeObject>,
    ) -> Result<bool, StoreError> {
        let swapped = self
            .acme
            .compare_and_swap(key.as_bytes(), expected.map(bytes_of), new.map(bytes_of))?
            .is_ok();
        if swapped {
            self.durable().await?;
        }
        Ok(swapped)
    }

    pub(super) async fn consume_acme_nonce(
        &self,
        nonce: &[u8],
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let fresh = self
            .acme_nonces
            .compare_and_swap(
                nonce,
                None as Option<&[u8]>,
                Some(&expires_at.to_be_bytes()[..]),
            )?
            .is_ok();
        if fresh {
            // A consumption lost in a crash would let the nonce be replayed
            // until it expires.
            self.durable().await?;
        }
        Ok(fresh)
    }

    /// Reads every object and nonce: both trees hold only what is live
    /// for hours or days, and the daemon purges them every few minutes.
    /// Blocking (the walk): the caller runs it on the blocking pool and
    /// makes the deletions durable.
    pub(super) fn purge_expired_acme(&self, now: i64) -> Result<usize, StoreError> {
        let mut purged = 0;
        for item in self.acme.iter() {
            let (key, value) = item?;
            if object_of(&value)?.expires_at.is_some_and(|at| at < now) {
                // Only if unchanged since read: a write in between keeps it.
                purged += usize::from(
                    self.acme
                        .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)?
                        .is_ok(),
                );
            }
        }
        for item in self.acme_nonces.iter() {
            let (key, value) = item?;
            if expiry_of(&value)? < now {
                self.acme_nonces.remove(&key)?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

fn bytes_of(object: &AcmeObject) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(EXPIRY_LEN + object.data.len());
    bytes.extend_from_slice(&object.expires_at.unwrap_or(i64::MAX).to_be_bytes());
    bytes.extend_from_slice(&object.data);
    bytes
}

/// Checks a stored object's form (backups and restores use it too).
pub(super) fn object_of(bytes: &[u8]) -> Result<AcmeObject, StoreError> {
    let (expiry, data) = bytes
        .split_at_checked(EXPIRY_LEN)
        .ok_or_else(|| StoreError::Corrupt("an ACME object shorter than its expiry".into()))?;
    let expires_at = expiry_of(expiry)?;
    Ok(AcmeObject {
        expires_at: (expires_at != i64::MAX).then_some(expires_at),
        data: data.to_vec(),
    })
}

fn expiry_of(bytes: &[u8]) -> Result<i64, StoreError> {
    <[u8; EXPIRY_LEN]>::try_from(bytes)
        .map(i64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("an ACME expiry".into()))
}
