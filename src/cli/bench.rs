//! `certd bench`: load a running certd and report throughput and latency.
//!
//! A run adds entries, join tokens and certificate records to the store of
//! the certd it loads, so it first checks that the store holds nothing but
//! bench's own things (`--allow-store-in-use` overrides), and afterwards,
//! whether the run succeeded, failed or was interrupted with Ctrl-C, removes
//! what it created but the certificate records (`load::cleanup`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use super::load::{self, BenchError, BenchOptions, Ledger, Limit, Operation, Progress, StoreUse};
use super::{DataDirArg, UsageError, duration};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to load: `issue` (bootstrap with join tokens), `renew` (over
    /// mTLS), `ocsp` (cached OCSP answers over HTTP), `crl` (CRL downloads),
    /// `agent-issue` (a node agent's `IssueForAgent`) or `workload-api` (a
    /// new connection to an agent's socket and its first `FetchX509SVID`
    /// answer; this process's uid needs an entry on that agent) or
    /// `jwt-mint` (`MintJwtSvid` over mTLS) or `token-endpoint` (`POST
    /// /oauth/token`, client credentials with the certificate, one HTTP/1.1
    /// connection per caller) or `token-exchange` (the same endpoint, RFC
    /// 8693: each caller trades a token of its own for one towards the
    /// bench audience; adds the grant `certd-bench-self` and the delegation
    /// `certd-bench-exchange` to the token policy on first use) or `acme`
    /// (an ACME order to its certificate: newOrder, http-01 answered by
    /// bench, finalize, download; one account, made with an EAB key of a
    /// bench entry) or `revoke` (`Revoke` over the admin socket, one
    /// certificate each; the --count certificates, 10,000 by default, are
    /// issued first and not timed; without --wait-crl each answers once
    /// durable, and the report says how soon after the last one the CRL
    /// listed them all) or `cfssl-sign` (another CA for comparison: CFSSL's
    /// `POST /api/v1/cfssl/sign` at --http, default http://127.0.0.1:8888,
    /// with the CSRs `issue` sends; see scripts/compare-cfssl.sh).
    #[arg(value_enum)]
    operation: BenchOperation,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// certd's gRPC URL.
    #[arg(long, env = "CERTD_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// certd's HTTP base URL (for `ocsp` and `crl`); default: from the
    /// certificate's OCSP URL, or http://127.0.0.1:8080. With
    /// `cfssl-sign`: CFSSL's base URL.
    #[arg(long)]
    http: Option<String>,
    /// PEM roots to trust for certd; default DATA_DIR/bundle.pem.
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Concurrent callers, each with its own connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Run for this long (default 10s).
    #[arg(long, value_parser = duration, conflicts_with = "count")]
    duration: Option<Duration>,
    /// Stop after this many requests instead.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    count: Option<u64>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub(super) json: bool,
    /// With `issue`: attest every request with the Kubernetes service-account
    /// token in this file instead of one join token each.
    #[arg(long)]
    k8s_token_file: Option<PathBuf>,
    /// With `workload-api`: the agent's socket.
    #[arg(long, default_value = "/run/certd/agent.sock")]
    socket: PathBuf,
    /// Load a certd whose store holds entries, certificates or token-policy
    /// rules of others (by default refused: bench adds to the store it
    /// loads). Cleanup then removes only what this run created.
    #[arg(long)]
    allow_store_in_use: bool,
    /// With `acme`: `http-01` (bench answers each order's challenge on
    /// 127.0.0.1:--acme-http-port; the certd under test needs `[acme.testing]
    /// http_port` set to it and `resolve_all_to = "127.0.0.1"`) or `none`
    /// (the bench entry's ACME policy waives challenges).
    #[arg(long, value_enum, default_value_t = AcmeChallengesArg::Http01)]
    acme_challenges: AcmeChallengesArg,
    /// With `acme --acme-challenges http-01`: the loopback port bench
    /// answers http-01 on.
    #[arg(long, default_value_t = load::DEFAULT_HTTP01_PORT)]
    acme_http_port: u16,
    /// With `revoke`: each revocation waits until the CRL lists it (what
    /// `certd revoke` does by default) instead of answering once durable.
    #[arg(long)]
    wait_crl: bool,
    /// Run an operator's full pass over the store beside the load's second
    /// half, again and again until the run ends: `backup` (a backup
    /// streamed over the admin socket and dropped) or `list` (every
    /// certificate, a page of 1,000 at a time, as `certd list --all`). The
    /// report sets the rate and latency during the passes beside those
    /// before. Needs --duration.
    #[arg(long, value_enum, conflicts_with = "count")]
    alongside: Option<AlongsideArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AlongsideArg {
    Backup,
    List,
}

/// Revocations `certd bench revoke` makes without --count: the issue's
/// target run.
const DEFAULT_REVOCATIONS: u64 = 10_000;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AcmeChallengesArg {
    #[value(name = "http-01")]
    Http01,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchOperation {
    Issue,
    Renew,
    Ocsp,
    Crl,
    AgentIssue,
    WorkloadApi,
    JwtMint,
    TokenEndpoint,
    TokenExchange,
    Acme,
    Revoke,
    CfsslSign,
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let bundle_path = args
        .ca_bundle
        .clone()
        .unwrap_or_else(|| args.data_dir.dir().bundle());
    // CFSSL's sign API is plain HTTP: no certd, so no bundle to read.
    let ca_bundle_pem = match args.operation {
        BenchOperation::CfsslSign => String::new(),
        _ => super::workload::read(&bundle_path)?,
    };
    let limit = match (args.count, args.duration) {
        (Some(count), _) => Limit::Count(count),
        // What it revokes is issued first: a count, not a duration.
        (None, None) if matches!(args.operation, BenchOperation::Revoke) => {
            Limit::Count(DEFAULT_REVOCATIONS)
        }
        (None, Some(duration)) => Limit::Duration(duration),
        (None, None) => Limit::Duration(Duration::from_secs(10)),
    };
    if args.alongside.is_some() && matches!(args.operation, BenchOperation::Revoke) {
        return Err(UsageError(
            "--alongside needs a run of a duration; `revoke` runs a count".into(),
        )
        .into());
    }
    let kubernetes_token = match (&args.k8s_token_file, args.operation) {
        (None, _) => None,
        (Some(path), BenchOperation::Issue) => Some(super::workload::read(path)?.trim().to_owned()),
        (Some(_), _) => {
            return Err(UsageError("--k8s-token-file goes with `issue` only".into()).into());
        }
    };
    let options = BenchOptions {
        operation: match args.operation {
            BenchOperation::Issue if kubernetes_token.is_some() => Operation::IssueKubernetes,
            BenchOperation::Issue => Operation::Issue,
            BenchOperation::Renew => Operation::Renew,
            BenchOperation::Ocsp => Operation::Ocsp,
            BenchOperation::Crl => Operation::Crl,
            BenchOperation::AgentIssue => Operation::AgentIssue,
            BenchOperation::WorkloadApi => Operation::WorkloadApi,
            BenchOperation::JwtMint => Operation::JwtMint,
            BenchOperation::TokenEndpoint => Operation::TokenEndpoint,
            BenchOperation::TokenExchange => Operation::TokenExchange,
            BenchOperation::Acme => Operation::Acme,
            BenchOperation::Revoke => Operation::Revoke,
            BenchOperation::CfsslSign => Operation::CfsslSign,
        },
        server: args.server,
        http: args.http,
        ca_bundle_pem,
        admin_socket: args.data_dir.dir().admin_socket(),
        concurrency: usize::try_from(args.concurrency).map_err(|e| UsageError(e.to_string()))?,
        limit,
        kubernetes_token,
        socket: Some(args.socket),
        acme_challenges: match args.acme_challenges {
            AcmeChallengesArg::Http01 => load::AcmeChallenges::Http01 {
                http_port: args.acme_http_port,
            },
            AcmeChallengesArg::None => load::AcmeChallenges::None,
        },
        wait_crl: args.wait_crl,
        alongside: args.alongside.map(|pass| match pass {
            AlongsideArg::Backup => load::Alongside::Backup,
            AlongsideArg::List => load::Alongside::List,
        }),
    };
    // Checked before anything is created; a refusal leaves the store as
    // it was.
    let store_use = if options.operation.writes_to_store() {
        let mut admin = certd::api::client::AdminClient::connect(&options.admin_socket)
            .await
            .map_err(BenchError::from)?;
        Some(load::check_store(&mut admin, args.allow_store_in_use).await?)
    } else {
        None
    };
    eprintln!(
        "preparing {:?} with {} callers…",
        options.operation, options.concurrency
    );
    let progress = Arc::new(Progress::default());
    // The mode matters only to the cleanup, which follows only a check.
    let ledger = Arc::new(Ledger::new(store_use.unwrap_or(StoreUse::Shared)));
    let display = tokio::spawn(show_progress(progress.clone()));
    let report = run_until_interrupted(&options, &progress, &ledger).await;
    display.abort();
    let cleaned = match store_use {
        Some(_) => Some(load::clean_up(&options.admin_socket, &ledger).await),
        None => None,
    };
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            match cleaned {
                Some(Ok(cleaned)) => println!("{cleaned}"),
                Some(Err(cleanup)) => eprintln!("certd: error: {:#}", left_behind(cleanup)),
                None => {}
            }
            return Err(error.into());
        }
    };
    print_report(
        &report,
        cleaned.as_ref().and_then(|c| c.as_ref().ok()),
        args.json,
    )?;
    if let Some(Err(cleanup)) = cleaned {
        return Err(left_behind(cleanup));
    }
    if progress.stop.load(Ordering::Relaxed) {
        return Err(BenchError::Interrupted.into());
    }
    if report.ok == 0 {
        return Err(UsageError(format!(
            "no request succeeded: {}",
            report.first_error.as_deref().unwrap_or("unknown error")
        ))
        .into());
    }
    Ok(())
}

/// The summary line, the first error, the cleanup line and, last, the
/// JSON object.
fn print_report(
    report: &load::BenchReport,
    cleaned: Option<&load::Cleaned>,
    json: bool,
) -> anyhow::Result<()> {
    println!(
        "{:?}: {} ok, {} errors in {:.2}s = {:.0}/s with {} callers; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.op,
        report.ok,
        report.errors,
        report.seconds,
        report.rate,
        report.concurrency,
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.max_ms
    );
    if let Some(error) = &report.first_error {
        println!("first error: {error}");
    }
    if let Some(crl) = &report.crl {
        println!(
            "CRL number {} lists every revocation ({} entries, {} bytes DER) {:.0} ms after the last answer",
            crl.number, crl.entries, crl.der_bytes, crl.listed_all_after_ms
        );
    }
    if let Some(alongside) = &report.alongside {
        let size = match (alongside.pass, alongside.first_pass_size) {
            (_, None) => "none completed".to_owned(),
            (load::Alongside::Backup, Some(bytes)) => format!("{bytes} bytes"),
            (load::Alongside::List, Some(count)) => format!("{count} certificates"),
        };
        println!(
            "alongside {:?}: {} passes completed (the first: {}, {:.2}s); before: {:.0}/s, p99 {:.2} ms, max {:.2} ms; during: {:.0}/s, p99 {:.2} ms, max {:.2} ms; rate during/before {:.0}%",
            alongside.pass,
            alongside.passes_completed,
            size,
            alongside.first_pass_seconds.unwrap_or(0.0),
            alongside.before.rate,
            alongside.before.p99_ms,
            alongside.before.max_ms,
            alongside.during.rate,
            alongside.during.p99_ms,
            alongside.during.max_ms,
            alongside.rate_ratio * 100.0
        );
    }
    if let Some(cleaned) = cleaned {
        println!("{cleaned}");
    }
    if json {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(())
}

/// A failed cleanup, saying where to look for what stayed.
fn left_behind(error: BenchError) -> anyhow::Error {
    anyhow::Error::from(error).context(
        "cleaning up after the run failed; what bench created may remain: see `certd entry list --service certd-bench`, `certd token list` and `certd policy show`",
    )
}

/// Runs the load; the first Ctrl-C stops the callers (and preparation)
/// so that the report and the cleanup still come, a second one gives up
/// waiting for them.
async fn run_until_interrupted(
    options: &BenchOptions,
    progress: &Arc<Progress>,
    ledger: &Arc<Ledger>,
) -> Result<load::BenchReport, BenchError> {
    let run = load::run(options, progress.clone(), ledger.clone());
    tokio::pin!(run);
    tokio::select! {
        report = &mut run => return report,
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "interrupted: stopping the callers, then cleaning up (Ctrl-C again not to wait for them)"
    );
    progress.stop.store(true, Ordering::Relaxed);
    tokio::select! {
        report = &mut run => report,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    }
}

/// One line a second on stderr while the run lasts.
async fn show_progress(progress: Arc<Progress>) {
    let started = Instant::now();
    let mut last = 0;
    // Preparation is not measured: wait for the first answer.
    while progress.ok.load(Ordering::Relaxed) + progress.errors.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let ok = progress.ok.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        eprintln!(
            "  {:>5.1}s  {ok:>9} ok  {errors:>6} errors  {:>8}/s",
            started.elapsed().as_secs_f64(),
            ok - last
        );
        last = ok;
    }
}
