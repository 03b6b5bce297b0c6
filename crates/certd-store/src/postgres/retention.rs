//! The retention purge on PostgreSQL: old records deleted in bounded steps,
//! found through the `certificates_by_expiry` index, each step one
//! transaction with the purged counters (`counters` rows), so that
//! `store::marks` counts present + purged and a purge is never taken for a
//! rollback.

use std::collections::HashSet;

use tokio_postgres::Client;

use super::{PgStore, db_error};
use crate::codec as record;
use crate::{CertificatePurge, IssuanceRecord, PurgeCursor, PurgeReport, StoreError};
use certd_core::identity::Serial;

/// Rows of `counters` holding how many records, and revoked records, the
/// purge deleted.
pub(super) const PURGED_RECORDS: &str = "purged-records";
pub(super) const PURGED_REVOCATIONS: &str = "purged-revocations";

/// Records given their expiry per transaction when indexing an older store.
const INDEX_BATCH: i64 = 1000;

/// Gives records written before migration 10 their `not_after`, from their
/// codec bytes; a store without such records costs one indexed query.
pub(super) async fn index_by_expiry_once(client: &mut Client) -> Result<(), StoreError> {
    loop {
        let rows = client
            .query(
                "SELECT serial, record FROM certificates WHERE not_after IS NULL LIMIT $1",
                &[&INDEX_BATCH],
            )
            .await
            .map_err(db_error)?;
        if rows.is_empty() {
            return Ok(());
        }
        let transaction = client.transaction().await.map_err(db_error)?;
        for row in &rows {
            let issued: IssuanceRecord = record::decode(row.get::<_, &[u8]>(1))?;
            transaction
                .execute(
                    "UPDATE certificates SET not_after = $2 WHERE serial = $1",
                    &[&row.get::<_, &[u8]>(0), &issued.not_after],
                )
                .await
                .map_err(db_error)?;
        }
        transaction.commit().await.map_err(db_error)?;
    }
}

impl PgStore {
    /// `Storage::carry_purged`: one statement per counter.
    pub(super) async fn add_purged(
        &self,
        records: u64,
        revocations: u64,
    ) -> Result<(), StoreError> {
        for (name, added) in [(PURGED_RECORDS, records), (PURGED_REVOCATIONS, revocations)] {
            let added = i64::try_from(added).unwrap_or(i64::MAX);
            self.execute(
                "INSERT INTO counters (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + $2",
                &[&name, &added],
            )
            .await?;
        }
        Ok(())
    }

    /// `Storage::purge_expired_certificates`: one transaction. The rows are
    /// locked `SKIP LOCKED`, so replicas purging at once take different
    /// rows instead of waiting on each other.
    pub(super) async fn purge_certificate_rows(
        &self,
        purge: &CertificatePurge,
    ) -> Result<PurgeReport, StoreError> {
        let mut client = self.client().await?;
        let result = self
            .within(async {
                let transaction = client.transaction().await.map_err(db_error)?;
                let (after_time, after_serial) = match &purge.after {
                    Some(cursor) => (cursor.not_after, cursor.serial.as_bytes().to_vec()),
                    None => (i64::MIN, Vec::new()),
                };
                let limit = i64::try_from(purge.limit).unwrap_or(i64::MAX);
                let rows = transaction
                    .query(
                        "SELECT serial, not_after, record FROM certificates
                         WHERE not_after < $1 AND (not_after, serial) > ($2, $3)
                         ORDER BY not_after, serial LIMIT $4
                         FOR UPDATE SKIP LOCKED",
                        &[&purge.expired_before, &after_time, &after_serial, &limit],
                    )
                    .await
                    .map_err(db_error)?;
                let mut report = PurgeReport::default();
                if let Some(last) = rows.last()
                    && rows.len() >= purge.limit
                {
                    report.next = Some(PurgeCursor {
                        not_after: last.get(1),
                        serial: Serial::from_stored(last.get::<_, &[u8]>(0).to_vec()),
                    });
                }
                let candidates = rows
                    .iter()
                    .map(|row| record::decode(row.get::<_, &[u8]>(2)))
                    .collect::<Result<Vec<IssuanceRecord>, _>>()?;
                let predecessors: Vec<&[u8]> = candidates
                    .iter()
                    .filter_map(|issued| issued.renewed_from.as_ref().map(Serial::as_bytes))
                    .collect();
                let present: HashSet<Vec<u8>> = transaction
                    .query(
                        "SELECT serial FROM certificates WHERE serial = ANY($1::bytea[])",
                        &[&predecessors],
                    )
                    .await
                    .map_err(db_error)?
                    .iter()
                    .map(|row| row.get::<_, &[u8]>(0).to_vec())
                    .collect();
                // In expiry order, so a predecessor deleted in this step
                // no longer holds back its successor.
                let mut doomed: Vec<&[u8]> = Vec::new();
                let mut doomed_set: HashSet<&[u8]> = HashSet::new();
                let mut link_keys: Vec<&[u8]> = Vec::new();
                for issued in &candidates {
                    let held_back = issued.renewed_from.as_ref().is_some_and(|predecessor| {
                        present.contains(predecessor.as_bytes())
                            && !doomed_set.contains(predecessor.as_bytes())
                    });
                    if held_back || purge.keep.contains(&issued.serial) {
                        report.kept += 1;
                        continue;
                    }
                    doomed.push(issued.serial.as_bytes());
                    doomed_set.insert(issued.serial.as_bytes());
                    link_keys.push(issued.serial.as_bytes());
                    if let Some(predecessor) = &issued.renewed_from {
                        link_keys.push(predecessor.as_bytes());
                    }
                    report.purged_revoked += usize::from(issued.revocation.is_some());
                }
                report.purged = doomed.len();
                if doomed.is_empty() {
                    transaction.commit().await.map_err(db_error)?;
                    return Ok(report);
                }
                transaction
                    .execute(
                        "DELETE FROM revocations WHERE serial = ANY($1::bytea[])",
                        &[&doomed],
                    )
                    .await
                    .map_err(db_error)?;
                transaction
                    .execute(
                        "DELETE FROM certificates WHERE serial = ANY($1::bytea[])",
                        &[&doomed],
                    )
                    .await
                    .map_err(db_error)?;
                // A link goes once both of its ends are gone: this step's
                // records' own links, and their predecessors' (to them).
                let links = transaction
                    .execute(
                        "DELETE FROM successors s WHERE s.predecessor = ANY($1::bytea[])
                         AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = s.predecessor)
                         AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = s.successor)",
                        &[&link_keys],
                    )
                    .await
                    .map_err(db_error)?;
                report.links_purged = usize::try_from(links).unwrap_or(usize::MAX);
                for (name, added) in [
                    (PURGED_RECORDS, report.purged),
                    (PURGED_REVOCATIONS, report.purged_revoked),
                ] {
                    let added = i64::try_from(added).unwrap_or(i64::MAX);
                    transaction
                        .execute(
                            "INSERT INTO counters (name, value) VALUES ($1, $2)
                             ON CONFLICT (name) DO UPDATE SET value = counters.value + $2",
                            &[&name, &added],
                        )
                        .await
                        .map_err(db_error)?;
                }
                transaction.commit().await.map_err(db_error)?;
                Ok(report)
            })
            .await;
        self.watch(result)
    }
}
