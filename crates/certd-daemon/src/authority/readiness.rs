//! Whether certd can issue now: the store answers, and answers in time, and
//! the intermediate has not expired.
//!
//! A store that fails says so at once (`Storage::fault`). A store that
//! hangs (PostgreSQL frozen, a partition that drops packets) fails nothing,
//! so a probe runs every `PROBE_INTERVAL` and readiness turns false as soon
//! as one has been waiting longer than `PROBE_DEADLINE`, not when it ends.
//! This module owns that verdict; it never changes the store.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::Storage;

/// How often the store is probed.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe may wait before certd says it is not ready.
pub(crate) const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// The latest probe of the store, shared by the prober and readiness. Only
/// hangs are its business: a store that fails says so itself.
#[derive(Debug, Default)]
pub(crate) struct StoreProbe {
    state: Mutex<ProbeState>,
}

#[derive(Debug, Default)]
struct ProbeState {
    /// When the probe now waiting started.
    in_flight_since: Option<Instant>,
    /// Why the last finished probe failed: it ran out of its deadline.
    failed: Option<String>,
}

impl StoreProbe {
    /// Probes `store` once, recording when it started and how it ended.
    pub async fn run(&self, store: &dyn Storage) {
        self.lock().in_flight_since = Some(Instant::now());
        let outcome = tokio::time::timeout(PROBE_DEADLINE, store.probe()).await;
        let mut state = self.lock();
        state.in_flight_since = None;
        state.failed = match outcome {
            // A probe that failed rather than hung made the store faulted
            // (`Storage::fault`), which the next call that succeeds clears:
            // readiness follows that, not this probe's stale answer.
            Ok(_) => None,
            Err(_) => Some(format!(
                "the store did not answer a probe within {} s",
                PROBE_DEADLINE.as_secs()
            )),
        };
    }

    /// `Err` with the reason while the last probe failed or the current one
    /// has waited past the deadline.
    pub fn verdict(&self, now: Instant) -> Result<(), String> {
        let state = self.lock();
        if let Some(since) = state.in_flight_since {
            let waited = now.saturating_duration_since(since);
            if waited > PROBE_DEADLINE {
                return Err(format!(
                    "the store has not answered for {} s",
                    waited.as_secs()
                ));
            }
        }
        match &state.failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_waiting_past_the_deadline_is_not_ready_before_it_ends() {
        let probe = StoreProbe::default();
        let start = Instant::now();
        assert_eq!(probe.verdict(start), Ok(()));
        probe.lock().in_flight_since = Some(start);
        assert_eq!(probe.verdict(start + Duration::from_secs(1)), Ok(()));
        let late = probe.verdict(start + PROBE_DEADLINE + Duration::from_secs(1));
        assert_eq!(late, Err("the store has not answered for 3 s".into()));
    }

    #[test]
    fn a_probe_that_timed_out_is_not_ready_until_one_answers() {
        let probe = StoreProbe::default();
        probe.lock().failed = Some("the store did not answer a probe within 2 s".into());
        assert_eq!(
            probe.verdict(Instant::now()),
            Err("the store did not answer a probe within 2 s".into())
        );
        probe.lock().failed = None;
        assert_eq!(probe.verdict(Instant::now()), Ok(()));
    }
}
