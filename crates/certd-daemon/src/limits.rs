//! Admission limits on issuance: a global and a per-service rate (token
//! buckets) and a cap on requests in flight.
//!
//! `limits` only decides "now, or retry after this long"; `authority` asks it
//! before doing any expensive work, and `api` turns a refusal into
//! `RESOURCE_EXHAUSTED` with a retry hint. No I/O.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::identity::ServiceName;

/// Requests in flight when the configuration says nothing.
pub(crate) const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Largest gRPC message certd accepts when the configuration says nothing.
/// A CSR may be 16 KiB; the margin lets an oversized CSR reach the CSR check
/// and get a precise error.
pub(crate) const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The smallest allowed message cap: below this a legitimate RSA 4096 CSR
/// would not fit.
pub(crate) const MIN_MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Buckets kept per keyed rate (services, addresses, accounts) before idle
/// (full) ones are forgotten.
const MAX_TRACKED_KEYS: usize = 10_000;

/// A rate: `per_second` on average, up to `burst` at once. Zero disables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate {
        per_second: 0.0,
        burst: 0.0,
    };

    /// `count` a minute, all of them at once if they come so: the
    /// "N per minute" of a documented limit. Zero disables.
    pub fn per_minute(count: u32) -> Rate {
        Rate {
            per_second: f64::from(count) / 60.0,
            burst: f64::from(count),
        }
    }

    fn enabled(&self) -> bool {
        self.per_second > 0.0
    }
}

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSettings {
    pub global_issuance: Rate,
    pub service_issuance: Rate,
    pub max_concurrent_requests: usize,
    /// Largest gRPC request message, in bytes.
    pub max_request_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            global_issuance: Rate::UNLIMITED,
            service_issuance: Rate::UNLIMITED,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("certd's issuance rate limit is reached; retry after {} ms", retry_after.as_millis())]
    GlobalRate { retry_after: Duration },
    #[error("the issuance rate limit of service {service} is reached; retry after {} ms", retry_after.as_millis())]
    ServiceRate {
        service: String,
        retry_after: Duration,
    },
    #[error("too many requests in flight; retry after {} ms", retry_after.as_millis())]
    TooManyRequests { retry_after: Duration },
}

impl LimitError {
    pub fn retry_after(&self) -> Duration {
        match self {
            LimitError::GlobalRate { retry_after }
            | LimitError::ServiceRate { retry_after, .. }
            | LimitError::TooManyRequests { retry_after } => *retry_after,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: rate.burst.max(1.0),
            updated: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst.max(1.0));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }
}

/// Shared admission state.
#[derive(Debug)]
pub struct Limits {
    settings: LimitSettings,
    global: Mutex<Bucket>,
    services: KeyedRate<ServiceName>,
    in_flight: Arc<Semaphore>,
}

/// Held while a request runs; dropping it frees the slot.
#[derive(Debug)]
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Limits {
            global: Mutex::new(Bucket::full(settings.global_issuance, Instant::now())),
            services: KeyedRate::new(settings.service_issuance),
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests.max(1))),
            settings,
        }
    }

    /// A slot for one request, or a refusal if all are taken.
    pub fn admit(&self) -> Result<Admission, LimitError> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map(Admission)
            .map_err(|_| LimitError::TooManyRequests {
                retry_after: Duration::from_millis(100),
            })
    }

    /// Counts one issuance against the global rate.
    pub fn issuance(&self) -> Result<(), LimitError> {
        let rate = self.settings.global_issuance;
        if !rate.enabled() {
            return Ok(());
        }
        let mut bucket = self.global.lock().unwrap_or_else(|p| p.into_inner());
        bucket
            .take(rate, Instant::now())
            .map_err(|retry_after| LimitError::GlobalRate { retry_after })
    }

    /// Counts one issuance against `service`'s rate.
    pub fn service_issuance(&self, service: &ServiceName) -> Result<(), LimitError> {
        self.services
            .take(service, Instant::now())
            .map_err(|retry_after| LimitError::ServiceRate {
                service: service.to_string(),
                retry_after,
            })
    }
}

/// One rate per key (a service, a source address, an ACME account), each
/// key with its own bucket. Memory is bounded: past `MAX_TRACKED_KEYS`
/// keys, the buckets that have refilled (their keys idle) are forgotten.
#[derive(Debug)]
pub struct KeyedRate<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    pub fn new(rate: Rate) -> Self {
        KeyedRate {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event of `key` at `now`, or says how long until one is
    /// allowed.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        if !rate.enabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, bucket| {
                let idle = now.saturating_duration_since(bucket.updated).as_secs_f64();
                bucket.tokens + idle * rate.per_second < rate.burst.max(1.0)
            });
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: Rate, service: Rate, concurrent: usize) -> Limits {
        Limits::new(LimitSettings {
            global_issuance: global,
            service_issuance: service,
            max_concurrent_requests: concurrent,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        })
    }

    #[test]
    fn a_bucket_allows_its_burst_then_names_the_wait() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let start = Instant::now();
        let mut bucket = Bucket::full(rate, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(rate, start), Ok(()));
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(
            bucket.take(rate, start + Duration::from_millis(500)),
            Ok(())
        );
    }

    #[test]
    fn services_are_limited_separately() {
        let limits = limits(
            Rate::UNLIMITED,
            Rate {
                per_second: 1.0,
                burst: 1.0,
            },
            8,
        );
        let billing = "billing".parse().unwrap();
        let payments = "payments".parse().unwrap();
        assert!(limits.service_issuance(&billing).is_ok());
        let refused = limits.service_issuance(&billing).unwrap_err();
        assert!(
            matches!(refused, LimitError::ServiceRate { ref service, .. } if service == "billing")
        );
        assert!(refused.retry_after() > Duration::ZERO);
        assert!(limits.service_issuance(&payments).is_ok());
        assert!(limits.issuance().is_ok(), "the global limit is off");
    }

    #[test]
    fn a_keyed_rate_per_minute_counts_each_key_alone() {
        let accounts = KeyedRate::new(Rate::per_minute(2));
        let start = Instant::now();
        assert_eq!(accounts.take(&"a", start), Ok(()));
        assert_eq!(accounts.take(&"a", start), Ok(()));
        let wait = accounts.take(&"a", start).unwrap_err();
        assert!((wait.as_secs_f64() - 30.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(accounts.take(&"b", start), Ok(()));
        assert_eq!(accounts.take(&"a", start + Duration::from_secs(30)), Ok(()));
        let unlimited = KeyedRate::new(Rate::per_minute(0));
        for _ in 0..100 {
            assert_eq!(unlimited.take(&"a", start), Ok(()));
        }
    }

    #[test]
    fn in_flight_requests_are_capped() {
        let limits = limits(Rate::UNLIMITED, Rate::UNLIMITED, 2);
        let first = limits.admit().unwrap();
        let _second = limits.admit().unwrap();
        assert!(matches!(
            limits.admit(),
            Err(LimitError::TooManyRequests { .. })
        ));
        drop(first);
        assert!(limits.admit().is_ok());
    }
}
