//! Recovery from storage faults: close the faulted database, reopen it,
//! put back the join tokens that failed issuances consumed, and prove with
//! a durable probe write that the disk takes writes again.
//!
//! Runs on its own thread, started by the first fault, so the store heals
//! even when no request comes to trigger it. It holds the store weakly and
//! ends when the store is dropped.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::{Open, PROBE_KEY, Shared};
use crate::{Change, StoreError, TokenHash};

/// First wait before reopening; it doubles up to `LONGEST_WAIT`.
const FIRST_WAIT: Duration = Duration::from_millis(200);
const LONGEST_WAIT: Duration = Duration::from_secs(5);
/// How long reopening waits for calls still using the faulted database.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks the store faulted by `error` and starts recovery, unless it is
/// faulted already.
pub(super) fn fault(shared: &Arc<Shared>, error: &StoreError) {
    {
        let mut fault = match shared.fault.lock() {
            Ok(fault) => fault,
            Err(poisoned) => poisoned.into_inner(),
        };
        if fault.is_some() {
            return;
        }
        *fault = Some(error.to_string());
    }
    tracing::error!(
        error = %certd_core::error_kind::with_causes(&error),
        path = %shared.path.display(),
        "storage fault: refusing requests with UNAVAILABLE until the database can be reopened"
    );
    let store = Arc::downgrade(shared);
    if let Err(spawn_error) = thread::Builder::new()
        .name("certd-store-recovery".into())
        .spawn(move || recover(&store))
    {
        tracing::error!(%spawn_error, "cannot start storage recovery; restart certd");
    }
}

/// Remembers a join token that an issuance consumed before failing on a
/// storage fault, to be put back by the next reopen.
pub(super) fn restore_later(shared: &Shared, token: TokenHash, value: sled::IVec) {
    let mut tokens = match shared.tokens_to_restore.lock() {
        Ok(tokens) => tokens,
        Err(poisoned) => poisoned.into_inner(),
    };
    tokens.push((token, value));
}

fn recover(store: &Weak<Shared>) {
    let mut wait = FIRST_WAIT;
    let mut last_error = String::new();
    loop {
        thread::sleep(wait);
        let Some(shared) = store.upgrade() else {
            return;
        };
        match reopen(&shared) {
            Ok(restored_tokens) => {
                match shared.fault.lock() {
                    Ok(mut fault) => *fault = None,
                    Err(poisoned) => *poisoned.into_inner() = None,
                }
                tracing::info!(
                    path = %shared.path.display(),
                    restored_tokens,
                    "database reopened after a storage fault; serving again"
                );
                shared.changes.announce(Change::Reopened);
                return;
            }
            Err(error) => {
                let error = certd_core::error_kind::with_causes(&error);
                if error != last_error {
                    tracing::warn!(%error, "the database is still unavailable; retrying");
                    last_error = error;
                }
                wait = (wait * 2).min(LONGEST_WAIT);
            }
        }
    }
}

/// Closes the faulted database and opens it again; returns how many join
/// tokens were put back.
fn reopen(shared: &Shared) -> Result<usize, StoreError> {
    let faulted = match shared.open.write() {
        Ok(mut open) => open.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(faulted) = faulted {
        close(faulted);
    }
    let open = Open::at(&shared.path)?;
    let tokens = match shared.tokens_to_restore.lock() {
        Ok(tokens) => tokens.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    for (token, value) in &tokens {
        // Absent: its consumption reached the disk before the fault.
        // Present: it never did, and there is nothing to do.
        let _ = open.join_tokens.compare_and_swap(
            token.as_slice(),
            None as Option<&[u8]>,
            Some(value.clone()),
        )?;
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    open.meta.insert(PROBE_KEY, &now.to_be_bytes())?;
    open.durable_blocking()?;
    match shared.tokens_to_restore.lock() {
        Ok(mut pending) => pending.retain(|token| !tokens.contains(token)),
        Err(poisoned) => poisoned
            .into_inner()
            .retain(|token| !tokens.contains(token)),
    }
    match shared.open.write() {
        Ok(mut slot) => *slot = Some(Arc::new(open)),
        Err(poisoned) => *poisoned.into_inner() = Some(Arc::new(open)),
    }
    Ok(tokens.len())
}

/// Drops the last handle to a faulted database once the calls still using
/// it have let go, so that sled releases its lock and files. A call that
/// holds on longer is left to drop it; reopening then fails with `Locked`
/// and is retried.
fn close(mut faulted: Arc<Open>) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match Arc::try_unwrap(faulted) {
            Ok(open) => {
                drop(open);
                return;
            }
            Err(still_shared) if Instant::now() < deadline => {
                faulted = still_shared;
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return,
        }
    }
}
