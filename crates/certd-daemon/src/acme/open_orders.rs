//! Which of an account's orders are open (pending, ready or processing, and
//! unexpired), so that newOrder's cap (`MAX_OPEN_ORDERS_PER_ACCOUNT`) reads
//! about the cap's worth of objects instead of every order the account made.
//!
//! Each open order has a marker, `open-order/<account>/<order>`, made
//! *before* the order (so a crash leaves a marker without an order, never
//! an open order without a marker) and removed when the order closes. The
//! markers are a hint that may only over-count, and the count re-derives
//! them: a marker past its order's expiry is dropped as it is read; when the
//! live markers reach the cap, each is checked against its order and those
//! of orders closed, missing (after `MARKER_GRACE_SECONDS`, the time an
//! order takes to be written after its marker) or unreadable are dropped
//! and the markers read again, until those read all stand. Each order is
//! read once per count and each stale marker is removed for good, so a
//! count costs the cap's worth of markers and orders (a few rounds of
//! markers where many stale ones had piled up), never the account's
//! history. Markers are ACME objects like the orders, compared and swapped
//! in the store, so replicas share them.
//!
//! An account whose orders predate the markers gets them once, at its
//! first newOrder (`open-orders-indexed/<account>` records that it did).

use serde::{Deserialize, Serialize};

use super::problem::Problem;
use super::records::{self, OrderRecord, Status};
use super::server::KEEP_AFTER_EXPIRY_SECONDS;
use crate::store::Storage;

/// How long a marker may go without its order before it counts as the
/// trace of a newOrder cut short rather than one still being written.
const MARKER_GRACE_SECONDS: i64 = 60;

/// Markers read at a time.
const MARKERS_PER_READ: usize = 128;

/// `open-order/<account>/<order>`
fn marker_key(account: &str, order: &str) -> String {
    format!("open-order/{account}/{order}")
}

fn markers_of(account: &str) -> String {
    format!("open-order/{account}/")
}

/// `open-orders-indexed/<account>`: its orders from before the markers
/// have theirs.
fn indexed_key(account: &str) -> String {
    format!("open-orders-indexed/{account}")
}

/// What a marker holds: enough to drop it without reading its order once
/// the order has expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    /// The order's expiry.
    expires_at: i64,
    /// When the marker was made.
    created_at: i64,
}

/// Whether `order` counts against the cap at `now`.
pub fn is_open(order: &OrderRecord, now: i64) -> bool {
    matches!(
        order.status,
        Status::Pending | Status::Ready | Status::Processing
    ) && order.expires_at >= now
}

/// Marks order `order` of `account`, expiring at `expires_at`, open: before
/// the order is written.
pub async fn opening(
    store: &dyn Storage,
    account: &str,
    order: &str,
    expires_at: i64,
    now: i64,
) -> Result<(), Problem> {
    let marker = Marker {
        expires_at,
        created_at: now,
    };
    records::create(
        store,
        &marker_key(account, order),
        &marker,
        Some(expires_at + KEEP_AFTER_EXPIRY_SECONDS),
    )
    .await?;
    Ok(())
}

/// Forgets the marker of an order that closed (valid, invalid), after the
/// order's change was made: a failure here is logged, not answered, since
/// the change stands and a marker left behind (as after a crash) is dropped
/// by the next count that needs it gone.
pub async fn closed(store: &dyn Storage, account: &str, order: &str) {
    let key = marker_key(account, order);
    let removed = match records::load::<Marker>(store, &key).await {
        Ok(Some(marker)) => records::remove(store, &key, &marker).await.map(drop),
        Ok(None) => Ok(()),
        Err(problem) => Err(problem),
    };
    if let Err(problem) = removed {
        tracing::warn!(account, order, error = %problem.detail, "could not drop an open-order marker; the next count at the cap will");
    }
}

/// How many of `account`'s orders are open at `now`, counted exactly up to
/// `cap` (beyond it, some number at least `cap`).
pub async fn count(
    store: &dyn Storage,
    account: &str,
    now: i64,
    cap: usize,
) -> Result<usize, Problem> {
    index_once(store, account, now).await?;
    // Markers checked against their orders and found standing, so that a
    // second round does not read their orders again.
    let mut standing = std::collections::HashSet::new();
    loop {
        let live = live_markers(store, account, now, cap).await?;
        if live.len() < cap {
            return Ok(live.len());
        }
        // At the cap by the markers: check them against their orders,
        // dropping those that no longer stand for an open order. Markers
        // beyond the ones read may stand too, so after dropping any the
        // markers are read again, until those read all stand.
        let mut dropped = false;
        for (key, marker) in &live {
            if standing.contains(key) {
                continue;
            }
            let order_id = key.rsplit('/').next().unwrap_or_default();
            let order =
                records::load::<OrderRecord>(store, &records::order_key(account, order_id)).await?;
            let stands = match &order {
                Some(order) => is_open(&order.value, now),
                None => marker.value.created_at > now - MARKER_GRACE_SECONDS,
            };
            if stands {
                standing.insert(key.clone());
            } else {
                records::remove(store, key, marker).await?;
                dropped = true;
            }
        }
        if !dropped {
            return Ok(live.len());
        }
    }
}

/// Up to `cap` + 1 markers of orders not yet expired, in key order; expired
/// ones met on the way are removed.
async fn live_markers(
    store: &dyn Storage,
    account: &str,
    now: i64,
    cap: usize,
) -> Result<Vec<(String, records::Stored<Marker>)>, Problem> {
    let prefix = markers_of(account);
    let mut live = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page =
            records::page::<Marker>(store, &prefix, after.as_deref(), MARKERS_PER_READ).await?;
        let last = page.len() < MARKERS_PER_READ;
        for (key, marker) in page {
            after = Some(key.clone());
            if marker.value.expires_at < now {
                records::remove(store, &key, &marker).await?;
            } else {
                live.push((key, marker));
                if live.len() > cap {
                    return Ok(live);
                }
            }
        }
        if last {
            return Ok(live);
        }
    }
}

/// Gives the open orders an account made before markers existed theirs,
/// once: the one time an account's whole order history is read.
async fn index_once(store: &dyn Storage, account: &str, now: i64) -> Result<(), Problem> {
    let flag = indexed_key(account);
    if records::load::<bool>(store, &flag).await?.is_some() {
        return Ok(());
    }
    let orders: Vec<records::Stored<OrderRecord>> =
        records::list(store, &format!("order/{account}/")).await?;
    for order in orders.iter().filter(|order| is_open(&order.value, now)) {
        // Already marked (another replica indexing at once) is as good.
        opening(store, account, &order.value.id, order.value.expires_at, now).await?;
    }
    records::create(store, &flag, &true, None).await?;
    Ok(())
}
