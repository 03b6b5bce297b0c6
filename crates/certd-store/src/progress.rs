//! How far a long store operation has got (`certd db copy`, `db restore`,
//! the check of a `db backup`): counters the operation advances and the
//! command reads a few times a second to show. The store only counts; it
//! never prints, and never waits for whoever reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The stage an operation is in and how many of its items are done.
#[derive(Debug, Default)]
pub struct Progress {
    stage: Mutex<&'static str>,
    done: AtomicU64,
    /// Zero while the total is unknown.
    total: AtomicU64,
}

/// What a reader sees of a [`Progress`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// What is being counted, e.g. "certificates copied"; empty before the
    /// operation starts its first stage.
    pub stage: &'static str,
    pub done: u64,
    /// `None` where the operation cannot know it in advance.
    pub total: Option<u64>,
}

impl Progress {
    /// Starts counting `stage` from zero, out of `total` where known.
    pub fn stage(&self, stage: &'static str, total: Option<u64>) {
        // Zero first, so a reader never sees the new stage with the old
        // stage's count.
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        match self.stage.lock() {
            Ok(mut current) => *current = stage,
            Err(poisoned) => *poisoned.into_inner() = stage,
        }
    }

    /// Counts `items` more done in the current stage.
    pub fn advance(&self, items: u64) {
        self.done.fetch_add(items, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let stage = match self.stage.lock() {
            Ok(stage) => *stage,
            Err(poisoned) => *poisoned.into_inner(),
        };
        let total = self.total.load(Ordering::Relaxed);
        ProgressSnapshot {
            stage,
            done: self.done.load(Ordering::Relaxed),
            total: (total > 0).then_some(total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new stage starts from zero with its own total.
    #[test]
    fn stages_count_from_zero() {
        let progress = Progress::default();
        assert_eq!(progress.snapshot().stage, "");
        progress.stage("certificates copied", Some(3));
        progress.advance(2);
        assert_eq!(
            progress.snapshot(),
            ProgressSnapshot {
                stage: "certificates copied",
                done: 2,
                total: Some(3)
            }
        );
        progress.stage("audit entries copied", None);
        progress.advance(1);
        assert_eq!(
            progress.snapshot(),
            ProgressSnapshot {
                stage: "audit entries copied",
                done: 1,
                total: None
            }
        );
    }
}
