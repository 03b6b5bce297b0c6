//! Retention: how long expired certificate records and audit entries are
//! kept (`[retention]`), and the background purge that deletes older ones.
//!
//! Owns [`RetentionSettings`] and [`purge`], which the daemon's purge task
//! runs every `PURGE_INTERVAL` (`server`). A pass deletes in steps of
//! [`PURGE_BATCH`] records through the store's expiry index, pausing
//! between steps so issuance is never starved; the store runs each step
//! off the async workers (sled's calls block) and decides what must stay
//! (`Storage::purge_expired_certificates`: the marks' newest record, a
//! renewal whose predecessor is still recorded). Time comes from the
//! authority's clock, so a test moves it instead of waiting.
//!
//! A certificate only becomes purgeable once it has expired and its
//! retention has passed, so nothing a CRL lists (revoked and unexpired) or
//! OCSP must answer `revoked` for is ever purged; OCSP answers `unknown`
//! for a serial purged long after it expired (RFC 6960 §2.2 allows it).

use std::time::Duration;

use crate::authority::Authority;
use crate::metrics::PurgeLabels;
use crate::store::CertificatePurge;

/// How long a certificate's record is kept after the certificate expires
/// by default: a month of `certd list`, `revoke --lineage` and audit
/// cross-references past expiry, long enough for an incident found late.
pub const DEFAULT_CERTIFICATE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long audit entries are kept by default: a year, what audit regimes
/// commonly ask of access logs.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest retention accepted: shorter is a typo, not a policy.
pub const MIN_RETENTION: Duration = Duration::from_secs(crate::store::MIN_RETENTION_SECS as u64);
/// Records (or audit entries) one purge step examines at most.
pub const PURGE_BATCH: usize = 1000;
/// The pause between two steps of a pass, on the real clock: pacing, so
/// that issuance gets the store between steps.
const PURGE_PAUSE: Duration = Duration::from_millis(20);

/// `[retention]`: how long records are kept; `None` keeps them for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// After a certificate expires, how long its record is kept.
    pub certificates: Option<Duration>,
    /// How long an audit entry is kept.
    pub audit: Option<Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            certificates: Some(DEFAULT_CERTIFICATE_RETENTION),
            audit: Some(DEFAULT_AUDIT_RETENTION),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub certificates: usize,
    pub lineage_links: usize,
    pub audit_entries: usize,
}

/// Runs one purge pass as `settings` say, to its end (or the first
/// failure, logged: the next pass tries again). Counted in
/// `certd_store_purged_total` and logged when it deleted anything.
pub async fn purge(authority: &Authority, settings: &RetentionSettings) -> Purged {
    let now = authority.now();
    let mut purged = Purged::default();
    let metrics = crate::metrics::get();
    if let Some(retention) = settings.certificates {
        let mut step = CertificatePurge {
            expired_before: now.saturating_sub(seconds(retention)),
            limit: PURGE_BATCH,
            after: None,
            keep: Vec::new(),
        };
        loop {
            match authority.store().purge_expired_certificates(&step).await {
                Ok(report) => {
                    purged.certificates += report.purged;
                    purged.lineage_links += report.links_purged;
                    metrics
                        .store_purged
                        .get_or_create(&PurgeLabels::of("certificate"))
                        .inc_by(report.purged as u64);
                    metrics
                        .store_purged
                        .get_or_create(&PurgeLabels::of("lineage"))
                        .inc_by(report.links_purged as u64);
                    let Some(next) = report.next else { break };
                    step.after = Some(next);
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot purge expired certificate records; trying again at the next pass");
                    break;
                }
            }
            tokio::time::sleep(PURGE_PAUSE).await;
        }
    }
    if let Some(retention) = settings.audit {
        let before = now.saturating_sub(seconds(retention));
        loop {
            match authority.store().purge_audit(before, PURGE_BATCH).await {
                Ok(deleted) => {
                    purged.audit_entries += deleted;
                    metrics
                        .store_purged
                        .get_or_create(&PurgeLabels::of("audit"))
                        .inc_by(deleted as u64);
                    if deleted < PURGE_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot purge old audit entries; trying again at the next pass");
                    break;
                }
            }
            tokio::time::sleep(PURGE_PAUSE).await;
        }
    }
    if purged != Purged::default() {
        tracing::info!(
            certificates = purged.certificates,
            lineage_links = purged.lineage_links,
            audit_entries = purged.audit_entries,
            "purged records past their retention"
        );
    }
    purged
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
