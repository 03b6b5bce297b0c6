//! One page of certificates (`Storage::certificate_page`), walked the same
//! way on every backend over what each keeps: the issuance-time index,
//! overall and per service, and the expiry index
//! (`Storage::certificates_before`).
//!
//! **Cost.** The service and the revoked state are answered by the indexes
//! themselves (each backend keeps the time order of every certificate and
//! of the revoked ones, overall and per service), and so are the good and
//! expired states and the expiry window of every service's certificates
//! (a range of the expiry index: `CertificateQuery::expiry_walk`, skipping
//! only the revoked ones in it), so a page of `n` costs about `n` index
//! entries and `n` record reads, whatever the store holds. One service's
//! certificates by such a state or window are filtered from that
//! service's time index, which reads records it does not return; such a
//! page, like any page that filters, examines at most
//! [`FILTERED_SCAN_PER_PAGE`] index entries (or `limit`, if more) and then
//! stops, returning what matched so far and a cursor to continue from. A
//! page shorter than asked with a cursor is therefore not the end; only a
//! page without a cursor is. No call reads the whole store, so no listing
//! can stall a serving thread.

use certd_core::identity::ServiceName;
use certd_core::model::{
    CertificateCursor, CertificatePage, CertificateQuery, CertificateState, ExpiryRange,
};

use crate::{IssuanceRecord, Storage, StoreError};

/// How many index entries one filtered page may examine before it returns
/// with a cursor: enough for a page of matches when a tenth of the records
/// match, and a bound of a few milliseconds' reading when none do.
pub const FILTERED_SCAN_PER_PAGE: usize = 10_000;

/// How many entries a filtered walk asks the backend for at a time: fewer
/// round trips than asking for the matches still missing one by one.
const FILTERED_CHUNK: usize = 256;

/// The fewest entries an expiry walk asks for at a time, once revoked
/// entries it skips leave a page short.
const EXPIRY_CHUNK_FLOOR: usize = 64;

/// Which index a walk reads: an issuance-time index, or a range of the
/// expiry index.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeIndex<'a> {
    /// One service's certificates; `None`: every service's.
    pub service: Option<&'a ServiceName>,
    /// Only revoked certificates (an index of its own, written with the
    /// revocation).
    pub revoked_only: bool,
    /// The expiry index within these expiries, latest first, instead
    /// (every service's, revoked or not; cursors in the expiry order).
    pub expiry: Option<ExpiryRange>,
}

/// A stretch of the issuance-time index, newest first, as a backend reads
/// it for `certificate_page`.
#[derive(Debug, Clone, Default)]
pub struct CertificateWindow {
    /// The records of the entries examined (an entry whose record is
    /// missing, a write cut short by a crash, is examined and skipped).
    pub records: Vec<IssuanceRecord>,
    /// How many index entries were examined.
    pub examined: usize,
    /// The position of the last entry examined; `None` if none was.
    pub scanned_to: Option<CertificateCursor>,
    /// Whether the index holds entries older than `scanned_to`.
    pub more: bool,
}

/// `Storage::certificate_page`, over the backend's `certificates_before`.
pub(crate) async fn page<S: Storage + ?Sized>(
    store: &S,
    query: &CertificateQuery,
) -> Result<CertificatePage, StoreError> {
    page_within(store, query, FILTERED_SCAN_PER_PAGE).await
}

/// One page, a filtered one examining at most `budget` index entries (or
/// `query.limit`, if more), saying how many it examined
/// (`CertificatePage::examined`), so the behaviour suite can hold every
/// backend to the bound.
pub(crate) async fn page_within<S: Storage + ?Sized>(
    store: &S,
    query: &CertificateQuery,
    budget: usize,
) -> Result<CertificatePage, StoreError> {
    let limit = query.limit;
    if limit == 0 {
        return Ok(CertificatePage::default());
    }
    let expiry = query.expiry_walk();
    let order = query.order();
    if query
        .after
        .as_ref()
        .is_some_and(|after| after.order != order)
    {
        // The edge refuses such a token (`PageTokenError`); reaching here
        // is a caller's bug, not a client's.
        return Err(StoreError::Backend(
            "a page cursor of another listing order".into(),
        ));
    }
    let index = TimeIndex {
        service: query.service.as_ref(),
        revoked_only: query.state == Some(CertificateState::Revoked),
        expiry,
    };
    // What the index does not answer is filtered here, within the budget
    // (in an expiry walk, only the revoked certificates in its range).
    let filtered = query.expiring_by.is_some()
        || matches!(
            query.state,
            Some(CertificateState::Good | CertificateState::Expired)
        );
    let budget = if filtered {
        budget.max(limit)
    } else {
        usize::MAX
    };
    let mut position = query.after.clone();
    let mut records = Vec::with_capacity(limit.min(4096));
    let mut examined = 0usize;
    loop {
        let wanted = limit - records.len();
        let chunk = match (filtered, expiry) {
            // An expiry walk skips only the revoked certificates in its
            // range: first read what the page wants; if revoked ones left
            // it short, at least a few dozen at a time (where a mass
            // revocation clusters them) rather than one round trip each.
            (true, Some(_)) if examined == 0 => wanted.min(budget),
            (true, Some(_)) => wanted.max(EXPIRY_CHUNK_FLOOR).min(budget - examined),
            (true, None) => wanted.max(FILTERED_CHUNK).min(budget - examined),
            (false, _) => wanted,
        };
        let window = store
            .certificates_before(index, position.as_ref(), chunk)
            .await?;
        examined = examined.saturating_add(window.examined);
        let mut left = window.records.into_iter();
        for record in left.by_ref() {
            if query.matches(&record) {
                records.push(record);
                if records.len() == limit {
                    break;
                }
            }
        }
        let next = if records.len() == limit && left.len() > 0 {
            // Full with records of this window still unread: the next page
            // starts right after the last one returned.
            records
                .last()
                .map(|record| CertificateCursor::in_order(order, record))
        } else if !window.more {
            None
        } else if records.len() == limit || examined >= budget || window.scanned_to.is_none() {
            window.scanned_to
        } else {
            position = window.scanned_to;
            continue;
        };
        return Ok(CertificatePage {
            records,
            next,
            examined,
        });
    }
}
