//! Each relationship's fetch state in this process: when its bundle was
//! last fetched, the last failure, and when to try next (the bundle's
//! refresh hint after a success, an exponential backoff after failures).
//! Shared by the refresh task (the writer), `/readyz`, the metrics and
//! `certd federation show`. Forgotten at restart: the bundle itself is in
//! the store.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Refresh hint used when a bundle gives none.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Shortest wait between fetches, whatever the hint says.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest wait between fetches, whatever the hint says.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// Longest wait after failures (they double it from 1 s).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What this process knows of one relationship's fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchState {
    /// Unix seconds of the last fetch that brought a good bundle (newer or
    /// unchanged).
    pub last_success_at: Option<i64>,
    /// Why the last fetch failed, if it did.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Unix seconds of the next fetch.
    pub next_attempt_at: i64,
    /// The sequence of the bundle held in the store, and when it was
    /// accepted, as last read; `None`: none held. Kept here so that
    /// `/readyz` and the metrics never wait on the database.
    pub held: Option<(u64, i64)>,
}

/// Every relationship's `FetchState`, by trust domain.
#[derive(Debug, Default)]
pub struct FederationStatus {
    states: Mutex<BTreeMap<String, FetchState>>,
}

impl FederationStatus {
    /// A copy of every state.
    pub fn snapshot(&self) -> BTreeMap<String, FetchState> {
        self.lock().clone()
    }

    pub fn get(&self, trust_domain: &str) -> Option<FetchState> {
        self.lock().get(trust_domain).cloned()
    }

    /// Whether `trust_domain` is due at `now` (a relationship never tried is).
    pub fn due(&self, trust_domain: &str, now: i64) -> bool {
        self.lock()
            .get(trust_domain)
            .is_none_or(|state| state.next_attempt_at <= now)
    }

    /// The earliest next attempt, if any relationship is known.
    pub fn next_attempt(&self) -> Option<i64> {
        self.lock()
            .values()
            .map(|state| state.next_attempt_at)
            .min()
    }

    /// Notes the bundle the store holds for `trust_domain` (its sequence
    /// and acceptance time), or that it holds none.
    pub fn note_held(&self, trust_domain: &str, held: Option<(u64, i64)>) {
        self.lock().entry(trust_domain.to_owned()).or_default().held = held;
    }

    /// Keeps only the relationships that still exist.
    pub fn retain(&self, existing: &[String]) {
        self.lock()
            .retain(|trust_domain, _| existing.contains(trust_domain));
    }

    /// A fetch brought a good bundle whose hint is `refresh_hint` seconds.
    pub fn succeeded(&self, trust_domain: &str, now: i64, refresh_hint: Option<u64>) {
        let wait = refresh_hint
            .map_or(DEFAULT_REFRESH, Duration::from_secs)
            .clamp(MIN_REFRESH, MAX_REFRESH);
        let mut states = self.lock();
        let state = states.entry(trust_domain.to_owned()).or_default();
        state.last_success_at = Some(now);
        state.last_error = None;
        state.consecutive_failures = 0;
        state.next_attempt_at = now.saturating_add(seconds(wait));
    }

    /// A fetch failed (the endpoint, or the bundle it gave, refused).
    pub fn failed(&self, trust_domain: &str, now: i64, error: String) {
        let mut states = self.lock();
        let state = states.entry(trust_domain.to_owned()).or_default();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.last_error = Some(error);
        state.next_attempt_at = now.saturating_add(seconds(backoff(state.consecutive_failures)));
    }

    /// Fetch `trust_domain` at the next look (its relationship changed).
    pub fn fetch_soon(&self, trust_domain: &str) {
        if let Some(state) = self.lock().get_mut(trust_domain) {
            state.next_attempt_at = i64::MIN;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FetchState>> {
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// 1 s after the first failure, doubling, at most `MAX_BACKOFF`.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_waits_for_the_bounded_hint_and_failures_back_off() {
        let status = FederationStatus::default();
        assert!(status.due("partner.example", 0), "never tried");
        status.succeeded("partner.example", 100, Some(0));
        assert_eq!(status.get("partner.example").unwrap().next_attempt_at, 101);
        status.succeeded("partner.example", 100, Some(86_400));
        assert_eq!(status.get("partner.example").unwrap().next_attempt_at, 3700);
        status.succeeded("partner.example", 100, None);
        assert_eq!(status.get("partner.example").unwrap().next_attempt_at, 400);
        let waits: Vec<i64> = (0..12)
            .map(|_| {
                status.failed("partner.example", 1000, "down".into());
                status.get("partner.example").unwrap().next_attempt_at - 1000
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        let state = status.get("partner.example").unwrap();
        assert_eq!(state.last_success_at, Some(100), "the last success is kept");
        assert_eq!(state.last_error.as_deref(), Some("down"));
        assert!(!status.due("partner.example", 1001));
        status.fetch_soon("partner.example");
        assert!(status.due("partner.example", 1001));
        status.retain(&[]);
        assert_eq!(status.next_attempt(), None);
    }
}
