//! Progress of the commands that can take long on a large store (`db
//! backup`, `db restore`, `db copy`), on stderr: at a terminal, or
//! wherever with `--progress`; never on stdout, which holds the report (or
//! the `--json` object). At most two lines a second, each only when
//! something moved, and the last count when the command ends.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::JsonArg;
use certd::store::progress::{Progress, ProgressSnapshot};

/// How often the progress line may change: often enough to see it move,
/// rarely enough not to flood a log.
const INTERVAL: Duration = Duration::from_millis(500);

/// `--progress`, for the commands that can take long on a large store.
#[derive(Debug, Args, Clone, Copy)]
pub struct ProgressArg {
    /// Show progress on stderr (records done, of how many where known) even where stderr is
    /// not a terminal; at a terminal it shows anyway, unless --json.
    #[arg(long)]
    pub progress: bool,
}

/// Progress being shown; `stop` prints the last count and ends it.
pub struct Shown {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts showing `progress` if asked to (`--progress`) or if stderr is a
/// person's terminal, unless the output is `--json` (a program reads it,
/// and may read stderr for the error object).
pub fn show(progress: &Arc<Progress>, asked: ProgressArg, output: JsonArg) -> Shown {
    let wanted = asked.progress || (!output.json && std::io::stderr().is_terminal());
    if !wanted {
        return Shown {
            stop: None,
            task: None,
        };
    }
    let (stop, mut stopped) = oneshot::channel();
    let progress = progress.clone();
    let task = tokio::spawn(async move {
        let mut shown: Option<ProgressSnapshot> = None;
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let last = tokio::select! {
                _ = &mut stopped => true,
                _ = ticks.tick() => false,
            };
            let now = progress.snapshot();
            if !now.stage.is_empty() && shown != Some(now) {
                eprintln!("{}", line(&now));
                shown = Some(now);
            }
            if last {
                break;
            }
        }
    });
    Shown {
        stop: Some(stop),
        task: Some(task),
    }
}

impl Shown {
    /// Prints the last count (if it changed) and stops.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// `certd: 1200 of 5000 certificates copied (24%)`, or without a total
/// `certd: 3145728 bytes written`.
fn line(progress: &ProgressSnapshot) -> String {
    match progress.total {
        Some(total) => format!(
            "certd: {} of {total} {} ({}%)",
            progress.done,
            progress.stage,
            progress.done.saturating_mul(100) / total.max(1)
        ),
        None => format!("certd: {} {}", progress.done, progress.stage),
    }
}

/// A writer that counts the bytes through it as progress.
pub struct Counting<W> {
    pub inner: W,
    pub progress: Arc<Progress>,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.progress.advance(written as u64);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stage: &'static str, done: u64, total: Option<u64>, expected: &str) {
        let snapshot = ProgressSnapshot { stage, done, total };
        assert_eq!(line(&snapshot), expected);
    }

    /// A line says how many of how many, and the share where the total is known.
    #[test]
    fn lines() {
        check(
            "certificates copied",
            1200,
            Some(5000),
            "certd: 1200 of 5000 certificates copied (24%)",
        );
        check("bytes written", 42, None, "certd: 42 bytes written");
        check(
            "records restored",
            3,
            Some(3),
            "certd: 3 of 3 records restored (100%)",
        );
    }
}
