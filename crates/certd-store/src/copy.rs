//! Copying one store into another (`certd db copy`): how a deployment moves
//! from sled to PostgreSQL. Backend-neutral: it reads and writes only
//! through `Storage`.
//!
//! Everything is copied: entries, unused join tokens, every issuance
//! record (revocations re-applied with their original time and reason, so
//! the target's revocation index is built the target's way), the audit
//! trail in order, the CRL number (the target continues after it) and,
//! last, the store id, which marks the copy complete. Then the counts are
//! compared. `progress` counts each stage as it goes.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::progress::Progress;
use super::{IssuanceRecord, SharedStorage, StoreError};

/// How many records are written at once.
const CONCURRENT_WRITES: usize = 32;

/// What was copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySummary {
    pub records: u64,
    pub revocations: u64,
    pub entries: u64,
    pub join_tokens: u64,
    pub audit_entries: u64,
    pub crl_number: u64,
}

/// Copies `from` into `to`, which must be empty, and checks the counts.
pub async fn copy(
    from: SharedStorage,
    to: SharedStorage,
    progress: Arc<Progress>,
) -> Result<CopySummary, StoreError> {
    let target = to.marks().await?;
    if target.has_records || target.store_id.is_some() {
        return Err(StoreError::Open {
            path: to.location(),
            reason: "it already holds certificates; copy only into a new, empty database".into(),
        });
    }
    let source = from.marks().await?;
    let source_records = from.record_count().await?;

    let entries = from.entries().await?;
    progress.stage("entries copied", Some(entries.len() as u64));
    for entry in &entries {
        to.insert_entry(entry).await?;
        progress.advance(1);
    }
    let policy = from.policy().await?;
    if let Some(policy) = &policy {
        // The version is kept, so replicas never see it go back.
        if !to.replace_policy(0, policy).await? {
            return Err(StoreError::Backend(
                "the target already holds a token policy; copy only into a new, empty database"
                    .into(),
            ));
        }
    }
    for federation in from.federations().await? {
        to.insert_federation(&federation).await?;
    }
    // ACME accounts, orders and EAB keys; consumed nonces are not copied
    // (they expire within the hour, and a copy is made with certd stopped).
    for (key, object) in from.acme_objects("").await? {
        to.swap_acme_object(&key, None, Some(&object)).await?;
    }
    // The bundle's sequence goes on from the copied one: a digest of no
    // content makes the first answer from the copy a change, so numbered
    // above it.
    let bundle_sequence = from.stored_bundle_sequence().await?;
    if bundle_sequence > 0 {
        to.bundle_sequence(&[0; 32], bundle_sequence).await?;
    }
    let tokens = from.join_tokens().await?;
    to.insert_join_tokens(&tokens).await?;

    let records = from.certificates(None).await?;
    progress.stage("certificates copied", Some(records.len() as u64));
    let mut revoked = Vec::new();
    let mut writes = JoinSet::new();
    for chunk in records.chunks(records.len().div_ceil(CONCURRENT_WRITES).max(1)) {
        let (to, chunk, progress) = (to.clone(), chunk.to_vec(), progress.clone());
        writes.spawn(async move {
            for record in chunk {
                // Revocations are applied afterwards, through `revoke`.
                let unrevoked = IssuanceRecord {
                    revocation: None,
                    ..record
                };
                to.record_issuance(&unrevoked, None).await?;
                progress.advance(1);
            }
            Ok::<(), StoreError>(())
        });
    }
    while let Some(written) = writes.join_next().await {
        written.map_err(|error| StoreError::Backend(format!("a copy task failed: {error}")))??;
    }
    progress.stage(
        "revocations copied",
        Some(records.iter().filter(|r| r.revocation.is_some()).count() as u64),
    );
    for record in &records {
        if let Some(revocation) = record.revocation {
            to.revoke(&record.serial, revocation).await?;
            revoked.push(record.serial.clone());
            progress.advance(1);
        }
    }

    // Renewal lineage, so a certificate superseded before the copy cannot
    // renew after it.
    for (predecessor, successor) in from.successors().await? {
        to.swap_successor(&predecessor, None, &successor).await?;
    }

    let audit = from.audit_since(i64::MIN, usize::MAX).await?;
    progress.stage("audit entries copied", Some(audit.len() as u64));
    for entry in &audit {
        to.append_audit(entry).await?;
        progress.advance(1);
    }
    // What the source purged, it had recorded: the copy carries the
    // counts on, so it meets the same marks (`store::marks`).
    let purged_revocations = source.revocations.saturating_sub(revoked.len() as u64);
    if source.purged_records > 0 || purged_revocations > 0 {
        to.carry_purged(source.purged_records, purged_revocations)
            .await?;
    }
    to.raise_crl_number(source.crl_number).await?;
    if let Some(store_id) = &source.store_id {
        to.set_store_id(store_id).await?;
    }
    to.flush().await?;

    let copied = to.marks().await?;
    let summary = CopySummary {
        records: to.record_count().await?,
        revocations: copied.revocations,
        entries: to.entries().await?.len() as u64,
        join_tokens: to.join_token_count().await?,
        audit_entries: to.audit_since(i64::MIN, usize::MAX).await?.len() as u64,
        crl_number: copied.crl_number,
    };
    let expected = CopySummary {
        records: source_records,
        revocations: source.revocations,
        entries: entries.len() as u64,
        join_tokens: tokens.len() as u64,
        audit_entries: audit.len() as u64,
        crl_number: source.crl_number,
    };
    if summary.records != expected.records
        || summary.revocations != expected.revocations
        || summary.entries != expected.entries
        || summary.join_tokens != expected.join_tokens
        || summary.audit_entries != expected.audit_entries
        || summary.crl_number < expected.crl_number
        || revoked.len() as u64 + purged_revocations != expected.revocations
    {
        return Err(StoreError::Backend(format!(
            "the copy does not match its source: copied {summary:?}, expected {expected:?}"
        )));
    }
    Ok(summary)
}
