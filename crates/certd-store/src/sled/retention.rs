//! The retention purge on sled: old records and audit entries deleted in
//! bounded steps, found through the expiry index and the audit log's
//! append order, never by reading every record.
//!
//! A step deletes a record with every entry that names it (the indexes by
//! service, time, service and time, and expiry; the revocation index; the
//! lineage links whose both ends are then gone) and adds to the purged
//! counters in `meta`, all in one transaction: sled recovers a prefix of
//! its log, so a crash keeps either the record or its deletion counted,
//! never a record gone uncounted (which `store::marks` would take for a
//! rollback).

use std::ops::Bound;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    Open, PURGED_RECORDS_KEY, PURGED_REVOCATIONS_KEY, TIME_KEY_LEN, record, service_index_key,
    service_time_index_key, successor_of, time_index_key, time_key,
};
use crate::{AuditEntry, CertificatePurge, PurgeCursor, PurgeReport, StoreError};
use certd_core::identity::Serial;

/// Records deleted per sled transaction. A transaction holds sled's global
/// write lock while it applies, so every other write waits: small ones
/// keep that wait short (docs/PERFORMANCE.md, "Retention": 32 halved the
/// issuances' p99 under a purge against 250).
const RECORDS_PER_TRANSACTION: usize = 32;

impl Open {
    /// One step of `Storage::purge_expired_certificates`, in transactions
    /// of `RECORDS_PER_TRANSACTION`. Blocking.
    pub(super) fn purge_expired_certificates(
        &self,
        purge: &CertificatePurge,
    ) -> Result<PurgeReport, StoreError> {
        let candidates = self.expired_candidates(purge)?;
        let mut report = PurgeReport::default();
        for chunk in candidates.chunks(RECORDS_PER_TRANSACTION) {
            let done = self.purge_chunk(purge, chunk)?;
            report.purged += done.purged;
            report.purged_revoked += done.purged_revoked;
            report.links_purged += done.links_purged;
            report.kept += done.kept;
        }
        report.next = match candidates.last() {
            Some((not_after, serial)) if candidates.len() >= purge.limit => Some(PurgeCursor {
                not_after: *not_after,
                serial: serial.clone(),
            }),
            _ => None,
        };
        Ok(report)
    }

    /// Deletes what may go of `candidates` in one transaction.
    fn purge_chunk(
        &self,
        purge: &CertificatePurge,
        candidates: &[(i64, Serial)],
    ) -> Result<PurgeReport, StoreError> {
        let trees = (
            &self.certificates,
            &self.certificates_by_service,
            &self.certificates_by_time,
            &self.certificates_by_service_time,
            &self.certificates_by_expiry,
            &self.revoked_by_time,
            &self.revoked_by_service_time,
            &self.revocations,
            &self.successors,
            &self.meta,
        );
        let outcome = trees.transaction(
            |(
                certificates,
                by_service,
                by_time,
                by_service_time,
                by_expiry,
                revoked_by_time,
                revoked_by_service_time,
                revocations,
                successors,
                meta,
            )| {
                let abort = ConflictableTransactionError::Abort;
                // Counted afresh on each attempt: sled may run this again.
                let mut report = PurgeReport::default();
                for (not_after, serial) in candidates {
                    let expiry_key = time_index_key(*not_after, serial);
                    if purge.keep.contains(serial) {
                        report.kept += 1;
                        continue;
                    }
                    let Some(bytes) = certificates.get(serial.as_bytes())? else {
                        // An index key whose record never landed (a write
                        // cut short): nothing else names it.
                        by_expiry.remove(expiry_key)?;
                        continue;
                    };
                    let issued = self.read_certificate(&bytes).map_err(abort)?;
                    if issued.not_after >= purge.expired_before {
                        report.kept += 1;
                        continue;
                    }
                    // A lineage is purged oldest first (see the trait).
                    if let Some(predecessor) = &issued.renewed_from
                        && certificates.get(predecessor.as_bytes())?.is_some()
                    {
                        report.kept += 1;
                        continue;
                    }
                    certificates.remove(serial.as_bytes())?;
                    // Only records written before this index was retired have one.
                    by_service.remove(service_index_key(&issued.service, serial))?;
                    by_time.remove(time_index_key(issued.issued_at, serial))?;
                    by_service_time.remove(service_time_index_key(
                        &issued.service,
                        issued.issued_at,
                        serial,
                    ))?;
                    by_expiry.remove(expiry_key)?;
                    if issued.revocation.is_some() {
                        revoked_by_time.remove(time_index_key(issued.issued_at, serial))?;
                        revoked_by_service_time.remove(service_time_index_key(
                            &issued.service,
                            issued.issued_at,
                            serial,
                        ))?;
                    }
                    revocations.remove(serial.as_bytes())?;
                    report.purged += 1;
                    report.purged_revoked += usize::from(issued.revocation.is_some());
                    // Its own link (to its successor), and its predecessor's
                    // (to it): each goes once both of its ends are gone.
                    for key in [Some(serial), issued.renewed_from.as_ref()]
                        .into_iter()
                        .flatten()
                    {
                        let Some(link) = successors.get(key.as_bytes())? else {
                            continue;
                        };
                        let link = successor_of(&link).map_err(abort)?;
                        if certificates.get(key.as_bytes())?.is_none()
                            && certificates.get(link.serial.as_bytes())?.is_none()
                        {
                            successors.remove(key.as_bytes())?;
                            report.links_purged += 1;
                        }
                    }
                }
                for (key, added) in [
                    (PURGED_RECORDS_KEY, report.purged),
                    (PURGED_REVOCATIONS_KEY, report.purged_revoked),
                ] {
                    if added == 0 {
                        continue;
                    }
                    let count = meta
                        .get(key)?
                        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
                        .map_or(0, u64::from_be_bytes);
                    meta.insert(key, &(count + added as u64).to_be_bytes())?;
                }
                Ok(report)
            },
        );
        match outcome {
            Ok(report) => Ok(report),
            Err(TransactionError::Abort(error)) => Err(error),
            Err(TransactionError::Storage(error)) => Err(error.into()),
        }
    }

    /// The first `purge.limit` keys of the expiry index after `purge.after`
    /// and before `purge.expired_before`, as (not_after, serial).
    fn expired_candidates(
        &self,
        purge: &CertificatePurge,
    ) -> Result<Vec<(i64, Serial)>, StoreError> {
        let from = match &purge.after {
            Some(cursor) => Bound::Excluded(time_index_key(cursor.not_after, &cursor.serial)),
            None => Bound::Unbounded,
        };
        let until = Bound::Excluded(time_key(purge.expired_before).to_vec());
        let mut candidates = Vec::with_capacity(purge.limit.min(4096));
        for item in self
            .certificates_by_expiry
            .range::<Vec<u8>, _>((from, until))
            .take(purge.limit)
        {
            let (key, _) = item?;
            let (time, serial) = key.split_at(TIME_KEY_LEN.min(key.len()));
            let time = <[u8; TIME_KEY_LEN]>::try_from(time)
                .map_err(|_| StoreError::Corrupt("certificate expiry index".into()))?;
            if serial.is_empty() {
                return Err(StoreError::Corrupt("certificate expiry index".into()));
            }
            candidates.push((time_of(time), Serial::from_stored(serial.to_vec())));
        }
        Ok(candidates)
    }

    /// `Storage::purge_audit`. Blocking. The log is in append order, which
    /// is time order but for clocks a little apart: the step stops at the
    /// first entry not old enough, and a slightly older one after it goes
    /// with a later step.
    pub(super) fn purge_audit(&self, before: i64, limit: usize) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut purged = 0;
        for item in self.audit.iter().take(limit) {
            let (key, value) = item?;
            let entry: AuditEntry = record::decode(&value)?;
            if entry.at >= before {
                break;
            }
            batch.remove(key);
            purged += 1;
        }
        if purged > 0 {
            self.audit.apply_batch(batch)?;
        }
        Ok(purged)
    }
}

/// The time a `time_key` encodes.
fn time_of(key: [u8; TIME_KEY_LEN]) -> i64 {
    (u64::from_be_bytes(key) ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time keys decode to the times they encode, across the sign.
    #[test]
    fn time_keys_round_trip() {
        for time in [i64::MIN, -1, 0, 1, 1_700_000_000, i64::MAX] {
            assert_eq!(time_of(time_key(time)), time);
        }
    }

    /// Bytes the database's files take on disk (allocated blocks, so a
    /// file with holes counts what it holds).
    fn disk_bytes(dir: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        for entry in walk(dir) {
            total += entry.blocks() * 512;
        }
        total
    }

    fn walk(dir: &std::path::Path) -> Vec<std::fs::Metadata> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                found.extend(walk(&entry.path()));
            } else {
                found.push(metadata);
            }
        }
        found
    }

    /// Steady load with retention, on a clock the test moves: issuing in
    /// rounds while the purge runs keeps the records held at lifetime +
    /// retention's worth, and the files stop growing once it is reached
    /// (sled reuses the space of what was deleted).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_under_steady_load_with_retention_stays_bounded() {
        const ROUND: i64 = 400;
        const LIFETIME: i64 = 3 * ROUND;
        const RETENTION: i64 = 2 * ROUND;
        let dir = tempfile::tempdir().unwrap();
        let store: crate::SharedStorage =
            std::sync::Arc::new(crate::sled::SledStore::open(dir.path()).unwrap());
        let (mut held, mut sizes) = (0i64, Vec::new());
        for round in 0..36 {
            // One simulated second per issuance.
            let now = round * ROUND;
            let mut writers = Vec::new();
            for writer in 0..16 {
                let store = store.clone();
                writers.push(tokio::spawn(async move {
                    for index in (writer..ROUND).step_by(16) {
                        let mut issued = crate::suite::record("billing");
                        issued.issued_at = now + index;
                        issued.not_before = now + index;
                        issued.not_after = now + index + LIFETIME;
                        issued.der = vec![0x30; 650];
                        store.record_issuance(&issued, None).await.unwrap();
                    }
                }));
            }
            for writer in writers {
                writer.await.unwrap();
            }
            held += ROUND;
            let mut purge = CertificatePurge {
                expired_before: now + ROUND - RETENTION,
                limit: 100,
                ..CertificatePurge::default()
            };
            loop {
                let step = store.purge_expired_certificates(&purge).await.unwrap();
                held -= step.purged as i64;
                let Some(next) = step.next else { break };
                purge.after = Some(next);
            }
            store.flush().await.unwrap();
            sizes.push(disk_bytes(dir.path()));
            // At most lifetime + retention + one round's worth is held.
            assert!(
                held <= LIFETIME + RETENTION + ROUND,
                "round {round}: {held} held"
            );
        }
        assert_eq!(store.record_count().await.unwrap() as i64, held);
        // Held records stop growing at round 6, the files some rounds
        // later (sled's segments fill, then their space is reused; its
        // cleaner runs in the background, so the size swings by a few
        // segments). Bounded: the last third takes at most half again the
        // room of rounds 8 to 18, where a store without the purge would
        // have doubled by then (it grows by about a segment a round).
        eprintln!("disk bytes per round: {sizes:?}");
        let early = sizes[8..=18].iter().copied().max().unwrap_or_default();
        let late = sizes[24..].iter().copied().max().unwrap_or_default();
        assert!(
            late <= early + early / 2,
            "the store kept growing: {sizes:?}"
        );
    }
}
