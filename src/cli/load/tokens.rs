//! Join tokens for an `issue` run, made while it runs: the store holds a
//! few seconds' worth ahead of the callers, never the whole run's.
//!
//! Why not all up front: certd keys a join token by the SHA-256 of its
//! secret, so consuming one touches a random leaf of the token tree. A
//! run's worth made before the clock started (20,000 a second of run, so
//! 200,000 for 10 s, most never used) outgrew sled's page cache, so
//! issuances read token leaves back from disk, and the daemon held the
//! tree: its peak RSS over a 10-s run was 280 MB against 144 MB now, its
//! issuance rate a few percent lower (docs/PERFORMANCE.md, "Join tokens
//! made as the run goes"). That measured the bench's backlog, not
//! issuance. Making them during the run counts their making (5–8 µs of
//! daemon CPU a token) in the daemon's CPU per issuance, which is fair:
//! every join-token issuance needs its token made.
//!
//! One task refills ([`TokenSupply::refill`]) when the tokens ready fall
//! below [`LOW_WATER`]; callers take them in order ([`TokenSupply::take`])
//! and wait, inside their measured request, only if the refill falls
//! behind.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use super::BenchError;

/// Below this many tokens ready, the refill makes another batch: at
/// 20,000 issuances a second it is a second ahead, and with what a batch
/// adds the token tree stays a few MB, well inside sled's cache.
pub(super) const LOW_WATER: usize = 20_000;
/// Tokens made per admin call during the run.
pub(super) const REFILL_BATCH: u32 = 10_000;
/// Tokens made before the clock starts (or the run's count, if fewer).
pub(super) const INITIAL: u64 = LOW_WATER as u64 + REFILL_BATCH as u64;
/// How often a caller waiting for a token looks whether the run stopped.
const STOP_CHECK_EVERY: Duration = Duration::from_millis(100);

/// The tokens made and not yet taken, and what is still to be made.
pub(super) struct TokenSupply {
    state: Mutex<Supply>,
    /// Tokens were added, or no more will come.
    made: Notify,
    /// The tokens ready fell below `LOW_WATER`, or the run ended.
    wanted: Notify,
}

struct Supply {
    ready: VecDeque<String>,
    /// Tokens still to make; `None`: until the run ends.
    to_make: Option<u64>,
    /// Set once no more will be made, saying why a caller finding none
    /// ready gets none.
    ended: Option<String>,
}

impl TokenSupply {
    /// `made`: the tokens made before the clock starts; `to_make`: how
    /// many more the run needs (`None`: as many as it takes).
    pub fn new(made: Vec<String>, to_make: Option<u64>) -> Self {
        TokenSupply {
            state: Mutex::new(Supply {
                ready: made.into(),
                to_make,
                ended: None,
            }),
            made: Notify::new(),
            wanted: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Supply> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next token, waiting for the refill if none is ready; an error
    /// once none is ready and none will come, or once `stopped` says so
    /// while waiting (Ctrl-C, the run's end).
    pub async fn take(&self, stopped: impl Fn() -> bool) -> Result<String, String> {
        loop {
            let made = self.made.notified();
            tokio::pin!(made);
            // Registered before looking, so a batch added between the look
            // and the wait still wakes this caller.
            made.as_mut().enable();
            {
                let mut supply = self.lock();
                if let Some(token) = supply.ready.pop_front() {
                    if supply.ready.len() < LOW_WATER {
                        self.wanted.notify_one();
                    }
                    return Ok(token);
                }
                if let Some(why) = &supply.ended {
                    return Err(why.clone());
                }
            }
            if tokio::time::timeout(STOP_CHECK_EVERY, made).await.is_err() && stopped() {
                return Err("the run stopped while waiting for a join token".into());
            }
        }
    }

    /// Makes tokens with `make` (one admin call for at most the count it
    /// is given) whenever fewer than `LOW_WATER` are ready, until `end` is
    /// called or nothing is left to make. A failure ends the supply with
    /// it (callers that find none ready then fail saying so) and is
    /// returned.
    pub async fn refill<F, Fut>(&self, mut make: F) -> Result<(), BenchError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Vec<String>, BenchError>>,
    {
        loop {
            let wanted = self.wanted.notified();
            tokio::pin!(wanted);
            wanted.as_mut().enable();
            let next = {
                let supply = self.lock();
                if supply.ended.is_some() {
                    return Ok(());
                }
                match supply.to_make {
                    Some(0) => Next::Done,
                    _ if supply.ready.len() >= LOW_WATER => Next::Wait,
                    Some(left) => {
                        Next::Make(u32::try_from(left).unwrap_or(u32::MAX).min(REFILL_BATCH))
                    }
                    None => Next::Make(REFILL_BATCH),
                }
            };
            let batch = match next {
                Next::Make(batch) => batch,
                Next::Wait => {
                    wanted.await;
                    continue;
                }
                Next::Done => {
                    self.end("ran out of join tokens: the run's count were all taken".into());
                    return Ok(());
                }
            };
            match make(batch).await {
                Ok(tokens) => {
                    let mut supply = self.lock();
                    if let Some(left) = supply.to_make.as_mut() {
                        *left = left.saturating_sub(tokens.len() as u64);
                    }
                    supply.ready.extend(tokens);
                    drop(supply);
                    self.made.notify_waiters();
                }
                Err(error) => {
                    self.end(format!("making join tokens during the run failed: {error}"));
                    return Err(error);
                }
            }
        }
    }

    /// No more tokens will be made (the run is over, or the refill
    /// failed): the refill returns and callers finding none ready fail
    /// with `why`. The first reason given is kept.
    pub fn end(&self, why: String) {
        self.lock().ended.get_or_insert(why);
        self.made.notify_waiters();
        self.wanted.notify_one();
    }

    /// Ends the supply when dropped, however the callers' side of the run
    /// ends (a caller's task may panic), so that the refill returns.
    pub fn ends_when_dropped(&self) -> EndsWhenDropped<'_> {
        EndsWhenDropped(self)
    }
}

/// See [`TokenSupply::ends_when_dropped`].
pub(super) struct EndsWhenDropped<'a>(&'a TokenSupply);

impl Drop for EndsWhenDropped<'_> {
    fn drop(&mut self) {
        self.0.end("the run is over".into());
    }
}

/// What the refill does next.
enum Next {
    Make(u32),
    Wait,
    Done,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn tokens(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| format!("t{n}")).collect()
    }

    #[tokio::test]
    async fn callers_take_tokens_in_order_and_the_refill_tops_them_up_below_low_water() {
        let supply = Arc::new(TokenSupply::new(tokens(0..LOW_WATER), None));
        let batches = Arc::new(AtomicU32::new(0));
        let refill = tokio::spawn({
            let (supply, batches) = (supply.clone(), batches.clone());
            async move {
                let next = AtomicU32::new(0);
                supply
                    .refill(|count| {
                        batches.fetch_add(1, Ordering::SeqCst);
                        let first = next.fetch_add(count, Ordering::SeqCst) as usize + LOW_WATER;
                        async move { Ok(tokens(first..first + count as usize)) }
                    })
                    .await
            }
        });
        // Taking the first leaves fewer than LOW_WATER: one batch is made.
        assert_eq!(supply.take(|| false).await.unwrap(), "t0");
        // Every token of the first set and the batch, in order, none twice.
        for n in 1..LOW_WATER + REFILL_BATCH as usize {
            assert_eq!(supply.take(|| false).await.unwrap(), format!("t{n}"));
        }
        assert!(batches.load(Ordering::SeqCst) >= 1);
        supply.end("the run is over".into());
        refill.await.unwrap().unwrap();
        // What is left is still handed out; then the reason.
        while let Ok(token) = supply.try_take_for_test() {
            assert!(token.starts_with('t'));
        }
        assert_eq!(supply.take(|| false).await.unwrap_err(), "the run is over");
    }

    #[tokio::test]
    async fn a_counted_run_makes_exactly_its_count_then_says_it_ran_out() {
        let supply = TokenSupply::new(tokens(0..3), Some(5));
        let made = AtomicU32::new(0);
        let refill = supply.refill(|count| {
            made.fetch_add(count, Ordering::SeqCst);
            async move { Ok(tokens(100..100 + count as usize)) }
        });
        let takes = async {
            let mut taken = Vec::new();
            while let Ok(token) = supply.take(|| false).await {
                taken.push(token);
            }
            taken
        };
        let (refilled, taken) = tokio::join!(refill, takes);
        refilled.unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 5);
        assert_eq!(taken.len(), 8);
        assert_eq!(
            supply.take(|| false).await.unwrap_err(),
            "ran out of join tokens: the run's count were all taken"
        );
    }

    #[tokio::test]
    async fn a_caller_waiting_for_a_token_gives_up_once_the_run_stops() {
        let supply = TokenSupply::new(Vec::new(), None);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.store(true, Ordering::SeqCst);
        };
        let (taken, ()) = tokio::join!(supply.take(|| stop.load(Ordering::SeqCst)), stopping);
        assert_eq!(
            taken.unwrap_err(),
            "the run stopped while waiting for a join token"
        );
    }

    #[tokio::test]
    async fn a_refill_returns_once_the_callers_side_is_dropped() {
        let supply = TokenSupply::new(tokens(0..LOW_WATER), None);
        let callers = async {
            let _ends = supply.ends_when_dropped();
        };
        let refill = supply.refill(|_| async { Ok(Vec::new()) });
        let (refilled, ()) = tokio::join!(refill, callers);
        refilled.unwrap();
        assert_eq!(supply.try_take_for_test().unwrap(), "t0");
    }

    #[tokio::test]
    async fn a_failed_refill_ends_the_supply_and_waiting_callers_learn_why() {
        let supply = TokenSupply::new(Vec::new(), None);
        let refill = supply.refill(|_| async {
            Err::<Vec<String>, _>(BenchError::Prepare("the admin socket is gone".into()))
        });
        let (refilled, taken) = tokio::join!(refill, supply.take(|| false));
        assert!(refilled.is_err());
        let why = taken.unwrap_err();
        assert!(
            why.starts_with("making join tokens during the run failed:")
                && why.contains("the admin socket is gone"),
            "{why}"
        );
    }

    impl TokenSupply {
        fn try_take_for_test(&self) -> Result<String, ()> {
            self.lock().ready.pop_front().ok_or(())
        }
    }
}
