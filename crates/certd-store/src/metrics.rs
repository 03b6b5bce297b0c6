//! What the store measures of itself. The daemon's metrics registry, which
//! this crate does not know, registers these series under its own names;
//! the store only observes.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

// 100 µs to about 13 s, the daemon's latency buckets.
static COMMIT_DURATION: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18)));

/// Time to make a write durable (sled: one group flush; PostgreSQL: one
/// issuance transaction), for a registry to expose.
pub fn commit_duration() -> Histogram {
    COMMIT_DURATION.clone()
}

pub(crate) fn commit_took(took: Duration) {
    COMMIT_DURATION.observe(took.as_secs_f64());
}
