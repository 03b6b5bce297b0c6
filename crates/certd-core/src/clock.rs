//! Time, from one injected source: the [`Clock`] that the authority, the CA,
//! revocation, JWT minting, the agent and the daemon's timed tasks read
//! instead of `SystemTime::now()`.
//!
//! Production runs on [`SystemClock`]. Tests run a daemon on a
//! [`ManualClock`] and move it forward to reach an expiry, a rotation or a
//! refresh at once, instead of sleeping on the real clock.
//!
//! What stays on the real clock, on purpose: deadlines and hang detection
//! (`tokio::time`, `Instant`: monotonic, about elapsed work, not the time
//! of day), and the agent's comparison of a process's start time with the
//! kernel's (`agent::peer`: both sides are the kernel's clock). Nothing
//! here touches the store, the network or any other module.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// Seconds since the Unix epoch, the unit every record, certificate fact
/// and token claim is kept in; times before it count as 0.
pub fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A future that a [`Clock`] completes.
pub type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the time of day comes from.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> SystemTime;

    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Wait;

    /// Completes once `duration` has passed on the real clock, or sooner if
    /// this clock moves by `duration` first: the period of a task that
    /// polls something outside (files another process writes) and also
    /// acts on the time of day (a rotation falling due).
    fn tick(&self, duration: Duration) -> Wait {
        self.sleep(duration)
    }

    /// [`Clock::now`] in Unix seconds.
    fn unix_now(&self) -> i64 {
        unix_seconds(self.now())
    }
}

/// A shared clock, as the parts of a daemon hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Wait {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]), for
/// tests. It starts at the real time of its creation, so that certificates
/// it dates are valid for outside verifiers too (within the CA's
/// backdating of notBefore).
#[derive(Debug)]
pub struct ManualClock {
    /// The time now; its receivers are the sleepers.
    now: watch::Sender<SystemTime>,
}

impl ManualClock {
    /// A manual clock set to the real time now.
    pub fn starting_now() -> Arc<Self> {
        Self::starting_at(SystemTime::now())
    }

    /// A manual clock set to `start`.
    pub fn starting_at(start: SystemTime) -> Arc<Self> {
        Arc::new(ManualClock {
            now: watch::Sender::new(start),
        })
    }

    /// Moves the clock forward by `by`, waking whoever waits on it.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }

    /// Completes once this clock reads `at` or later.
    fn until(&self, at: SystemTime) -> Wait {
        let mut moved = self.now.subscribe();
        Box::pin(async move {
            // `wait_for` checks the current value first; an error means the
            // clock is gone, and then it never moves again.
            if moved.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.borrow()
    }

    fn sleep(&self, duration: Duration) -> Wait {
        self.until(self.now() + duration)
    }

    fn tick(&self, duration: Duration) -> Wait {
        let moved = self.sleep(duration);
        Box::pin(async move {
            tokio::select! {
                () = moved => {}
                () = tokio::time::sleep(duration) => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_counts_from_the_epoch() {
        assert_eq!(unix_seconds(SystemTime::UNIX_EPOCH), 0);
        assert_eq!(
            unix_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(90)),
            90
        );
        assert_eq!(
            unix_seconds(SystemTime::UNIX_EPOCH - Duration::from_secs(90)),
            0,
            "before the epoch counts as 0"
        );
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_it_reaches_their_time() {
        let clock = ManualClock::starting_at(SystemTime::UNIX_EPOCH);
        let sleeping = tokio::spawn(clock.sleep(Duration::from_secs(60)));
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!sleeping.is_finished(), "59 s of 60 have passed");
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeping)
            .await
            .expect("the sleeper wakes when the clock reaches its time")
            .unwrap();
        assert_eq!(clock.unix_now(), 60);
    }

    #[tokio::test]
    async fn a_manual_clock_that_has_passed_the_time_does_not_wait() {
        let clock = ManualClock::starting_now();
        tokio::time::timeout(Duration::from_secs(5), clock.sleep(Duration::ZERO))
            .await
            .expect("nothing to wait for");
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_clock_ticks_on_real_time_too() {
        let clock = ManualClock::starting_now();
        let start = clock.now();
        clock.tick(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), start, "real time passed, not the clock's");
    }
}
