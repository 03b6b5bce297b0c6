//! `certd bench … --alongside backup|list`: the load's second half runs
//! beside an operator's full pass over the store, repeated until the run
//! ends: a backup streamed over the admin socket into nothing, or `certd
//! list --all`'s walk through every certificate a page at a time. The
//! report sets the rate and latency of the requests that started during
//! the passes beside those of the first half, so that one run says what a
//! pass costs the load (issue 29: issuance keeps at least 80% of its rate).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use certd::api::client::AdminClient;
use certd::authority::ListingRequest;

use super::{BenchError, percentile};

/// The full pass run beside the load's second half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Alongside {
    /// `certd db backup`: the whole store streamed over the admin socket.
    Backup,
    /// `certd list --all`: every certificate, newest first, 1,000 a page.
    List,
}

/// Certificates a page of the `list` pass asks for (`certd list --all`'s).
const LIST_PAGE: usize = 1000;

/// What the passes did, and the load before and during them.
#[derive(Debug, Clone, Serialize)]
pub struct AlongsideReport {
    pub pass: Alongside,
    /// Passes that ran to their end before the run did.
    pub passes_completed: u64,
    /// Seconds the first completed pass took.
    pub first_pass_seconds: Option<f64>,
    /// Bytes (backup) or certificates (list) of the first completed pass.
    pub first_pass_size: Option<u64>,
    /// Requests started before the passes began.
    pub before: Phase,
    /// Requests started while passes ran.
    pub during: Phase,
    /// `during.rate / before.rate`.
    pub rate_ratio: f64,
}

/// One half of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub ok: u64,
    pub seconds: f64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Phase {
    fn of(mut latencies: Vec<u32>, seconds: f64) -> Phase {
        latencies.sort_unstable();
        Phase {
            ok: latencies.len() as u64,
            seconds,
            rate: latencies.len() as f64 / seconds.max(f64::EPSILON),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: latencies.last().map_or(0.0, |m| *m as f64 / 1000.0),
        }
    }
}

/// Shared with the workers: whether a pass is under way, so each request
/// knows which half it belongs to.
#[derive(Debug, Default)]
pub struct PassState {
    pub running: AtomicBool,
}

/// The passes' own tally, kept by the task that runs them.
#[derive(Debug, Default)]
struct Tally {
    /// When the first pass began.
    began: std::sync::OnceLock<Instant>,
    completed: AtomicU64,
    first_seconds_micros: AtomicU64,
    first_size: AtomicU64,
}

/// Runs passes from `started + duration / 2` until `deadline`, one after
/// another.
pub struct Passes {
    task: tokio::task::JoinHandle<Result<(), BenchError>>,
    tally: Arc<Tally>,
    pass: Alongside,
}

impl Passes {
    pub fn start(
        pass: Alongside,
        admin_socket: &Path,
        state: Arc<PassState>,
        started: Instant,
        deadline: Instant,
    ) -> Passes {
        let tally = Arc::new(Tally::default());
        let half = started + (deadline - started) / 2;
        let task = tokio::spawn(run_passes(
            pass,
            admin_socket.to_owned(),
            state,
            tally.clone(),
            half,
            deadline,
        ));
        Passes { task, tally, pass }
    }

    /// Stops the pass under way once one has completed (the load has
    /// ended: what it does now costs nobody; until one completes the report
    /// could not say how long a pass takes, so the first is awaited), then
    /// splits the load's latencies (`(micros, started during a pass)`) into
    /// the two halves. A pass that failed fails the run.
    pub async fn report(
        mut self,
        latencies: Vec<(u32, bool)>,
        run_started: Instant,
        run_ended: Instant,
    ) -> Result<AlongsideReport, BenchError> {
        let mut outcome = None;
        if self.tally.began.get().is_some() && self.tally.completed.load(Ordering::Relaxed) == 0 {
            eprintln!("waiting for the first {:?} pass to end…", self.pass);
            while self.tally.completed.load(Ordering::Relaxed) == 0 {
                tokio::select! {
                    result = &mut self.task => {
                        outcome = Some(result);
                        break;
                    }
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
        }
        if outcome.is_none() {
            if self.task.is_finished() {
                outcome = Some((&mut self.task).await);
            } else {
                self.task.abort();
            }
        }
        if let Some(result) = outcome {
            result.map_err(|e| {
                BenchError::Prepare(format!("the {:?} passes stopped: {e}", self.pass))
            })??;
        }
        let began = *self.tally.began.get().ok_or_else(|| {
            BenchError::Prepare(format!(
                "the run ended before its {:?} passes began: give it a longer --duration",
                self.pass
            ))
        })?;
        let (during, before): (Vec<_>, Vec<_>) =
            latencies.into_iter().partition(|(_, during)| *during);
        let strip = |phase: Vec<(u32, bool)>| phase.into_iter().map(|(micros, _)| micros).collect();
        let before = Phase::of(strip(before), (began - run_started).as_secs_f64());
        let during = Phase::of(
            strip(during),
            run_ended.saturating_duration_since(began).as_secs_f64(),
        );
        let completed = self.tally.completed.load(Ordering::Acquire);
        let first = |value: &AtomicU64| (completed > 0).then(|| value.load(Ordering::Relaxed));
        Ok(AlongsideReport {
            pass: self.pass,
            passes_completed: completed,
            first_pass_seconds: first(&self.tally.first_seconds_micros)
                .map(|micros| micros as f64 / 1e6),
            first_pass_size: first(&self.tally.first_size),
            rate_ratio: during.rate / before.rate.max(f64::EPSILON),
            before,
            during,
        })
    }
}

async fn run_passes(
    pass: Alongside,
    admin_socket: PathBuf,
    state: Arc<PassState>,
    tally: Arc<Tally>,
    half: Instant,
    deadline: Instant,
) -> Result<(), BenchError> {
    // Connected before the load's first half ends, so that connecting is
    // not counted as the pass's.
    let mut admin = AdminClient::connect(&admin_socket).await?;
    tokio::time::sleep_until(half.into()).await;
    let began = Instant::now();
    if began >= deadline {
        return Ok(());
    }
    let _ = tally.began.set(began);
    state.running.store(true, Ordering::Relaxed);
    // The first pass runs to its end even past the deadline (the report
    // waits for it); later ones start only before the deadline.
    while tally.completed.load(Ordering::Relaxed) == 0 || Instant::now() < deadline {
        let pass_started = Instant::now();
        let size = match pass {
            Alongside::Backup => admin.backup(&mut std::io::sink()).await?,
            Alongside::List => list_all(&mut admin).await?,
        };
        if tally.completed.load(Ordering::Acquire) == 0 {
            let micros = u64::try_from(pass_started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tally.first_seconds_micros.store(micros, Ordering::Relaxed);
            tally.first_size.store(size, Ordering::Relaxed);
        }
        // Released after the first pass's figures: a report that sees a
        // completed pass sees them.
        tally.completed.fetch_add(1, Ordering::Release);
    }
    Ok(())
}

/// Walks every certificate page by page, as `certd list --all` does;
/// returns how many it saw.
async fn list_all(admin: &mut AdminClient) -> Result<u64, BenchError> {
    let mut request = ListingRequest {
        limit: LIST_PAGE,
        ..ListingRequest::default()
    };
    let mut seen = 0u64;
    loop {
        let page = admin.list_page(&request).await?;
        seen += page.certificates.len() as u64;
        match page.next_page_token {
            Some(token) => request.page_token = Some(token),
            None => return Ok(seen),
        }
    }
}
