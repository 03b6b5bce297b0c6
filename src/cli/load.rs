//! The load generator behind `certd bench`: drives a running certd as many
//! concurrent workloads would, and measures throughput and latency.
//!
//! Everything a request needs is prepared before the clock starts (join
//! tokens through the admin socket — for `issue`, a few seconds' worth, the
//! rest made as the run goes, see `tokens` —, keys and CSRs generated once and
//! reused, mTLS identities for renewal, one OCSP request), so the loader
//! spends its CPU on the protocol, not on set-up. Every response is checked;
//! a failed or wrong answer counts as an error, never as a success.
//!
//! What a run creates in the store is written down in a [`Ledger`] as it is
//! created, for the cleanup after it (`cleanup`).

mod acme;
mod alongside;
mod cleanup;
mod prepare;
mod revoke;
mod tokens;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use certd::api::client::{
    AdminClient, ClientError, TlsClientSettings, TokenEndpointClient, WorkloadClient,
};
use certd::authority::{CrlWait, RevokeTarget};
use certd::ca::RevocationReason;

pub use acme::{AcmeChallenges, DEFAULT_HTTP01_PORT};
pub use alongside::{Alongside, AlongsideReport};
pub use cleanup::{Cleaned, Ledger, StoreUse, check_store, clean_up};
use prepare::Prepare;
pub use revoke::CrlAfterRun;

/// Service name the load tool issues for.
pub const BENCH_SERVICE: &str = "certd-bench";
/// Join tokens created per admin call while preparing.
const TOKEN_BATCH: u32 = 50_000;
/// Distinct keys (and CSRs) the loader cycles through.
const CSR_POOL: usize = 256;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Issue,
    /// `Issue` attested by a Kubernetes service-account token.
    #[serde(rename = "issue-kubernetes")]
    IssueKubernetes,
    Renew,
    Ocsp,
    Crl,
    /// `IssueForAgent`: a node agent's issuance for an entry parented to it.
    #[serde(rename = "agent-issue")]
    AgentIssue,
    /// A fresh connection to an agent's Workload API and its first
    /// `FetchX509SVID` answer.
    #[serde(rename = "workload-api")]
    WorkloadApi,
    /// `MintJwtSvid` over mTLS, for an audience the entry allows.
    #[serde(rename = "jwt-mint")]
    JwtMint,
    /// `POST /oauth/token` (client credentials, tls_client_auth) for the
    /// same entry and audience as `jwt-mint`: an audience-only grant.
    #[serde(rename = "token-endpoint")]
    TokenEndpoint,
    /// `POST /oauth/token`, token exchange (RFC 8693): the bench client
    /// trades a token of its own for one towards the bench audience, by the
    /// delegation `certd-bench-exchange` (added to the policy on first use).
    #[serde(rename = "token-exchange")]
    TokenExchange,
    /// An ACME order through to its certificate: newOrder, its http-01
    /// challenge (or none), finalize and download, for one shared account.
    Acme,
    /// `Revoke` over the admin socket, one certificate per request (issued
    /// before the clock starts).
    Revoke,
    /// CFSSL's `POST /api/v1/cfssl/sign`, for the side-by-side comparison
    /// (`scripts/compare-cfssl.sh`): the same CSR pool and harness as
    /// `issue`, against another CA.
    #[serde(rename = "cfssl-sign")]
    CfsslSign,
}

impl Operation {
    /// Whether a run adds to the store (entries, join tokens, certificate
    /// records, policy rules), and so checks it first and cleans up after.
    /// `crl` only reads; `workload-api` talks to an agent and `cfssl-sign`
    /// to CFSSL, not to certd.
    pub fn writes_to_store(self) -> bool {
        !matches!(
            self,
            Operation::Crl | Operation::WorkloadApi | Operation::CfsslSign
        )
    }
}

/// Service (and entry) the `jwt-mint` load mints for, and its audience.
const BENCH_JWT_SERVICE: &str = "certd-bench-jwt";
const BENCH_JWT_AUDIENCE: &str = "certd-bench";

/// How long a `token-exchange` caller exchanges one subject token.
const SUBJECT_TOKEN_REFRESH: Duration = Duration::from_secs(60);
/// The grant and delegation the `token-exchange` load adds to the policy.
const BENCH_SELF_GRANT: &str = "certd-bench-self";
const BENCH_DELEGATION: &str = "certd-bench-exchange";

/// Node agent the `agent-issue` load acts as.
const BENCH_AGENT: &str = "certd-bench-agent";

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Duration(Duration),
    Count(u64),
}

/// A load run's settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub operation: Operation,
    /// gRPC URL (`https://…`).
    pub server: String,
    /// HTTP base URL for `ocsp` and `crl`; `None`: the OCSP URL in an issued
    /// certificate (its `/ocsp` stripped).
    pub http: Option<String>,
    pub ca_bundle_pem: String,
    pub admin_socket: PathBuf,
    pub concurrency: usize,
    pub limit: Limit,
    /// For `IssueKubernetes`: the service-account token every request
    /// presents (such tokens are valid until they expire, not once).
    pub kubernetes_token: Option<String>,
    /// For `WorkloadApi`: the agent's socket.
    pub socket: Option<PathBuf>,
    /// For `Acme`: how orders are authorized.
    pub acme_challenges: AcmeChallenges,
    /// For `Revoke`: whether each revocation waits for the CRL listing it.
    pub wait_crl: bool,
    /// A full pass over the store run beside the load's second half.
    pub alongside: Option<Alongside>,
}

/// The result, printed as text and as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub op: Operation,
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub concurrency: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// For `revoke`: whether each revocation waited for the CRL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_crl: Option<bool>,
    /// For `revoke`: the CRL that listed every revocation of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl: Option<CrlAfterRun>,
    /// With `--alongside`: the load before and during the passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alongside: Option<AlongsideReport>,
}

/// Counters shared with the progress display, and the stop the Ctrl-C
/// handler raises.
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    /// Set: the callers stop after the request in flight, and preparation
    /// after the batch in flight.
    pub stop: AtomicBool,
}

impl Progress {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("preparing the run: {0}")]
    Prepare(String),
    #[error(
        "refusing to load a store that is in use ({0}): bench adds entries, join tokens and certificate records to the store of the certd it loads; point it at a certd of its own (a fresh `certd serve` data directory), or pass --allow-store-in-use to load this one anyway (bench then removes only what it created)"
    )]
    StoreInUse(String),
    #[error("interrupted before the run finished")]
    Interrupted,
}

impl BenchError {
    /// The one classification (`certd::ErrorKind`) of this failure: a
    /// client error keeps its own, so `certd bench` exits as `certd list`
    /// does when certd cannot be reached.
    pub fn kind(&self) -> certd::ErrorKind {
        match self {
            BenchError::Client(error) => error.kind(),
            BenchError::Prepare(_) | BenchError::Interrupted => certd::ErrorKind::Internal,
            BenchError::StoreInUse(_) => certd::ErrorKind::PermissionDenied,
        }
    }
}

/// What each request of the run sends.
enum Workload {
    Issue {
        tokens: Arc<tokens::TokenSupply>,
        csrs: Arc<Vec<Vec<u8>>>,
    },
    IssueKubernetes {
        token: String,
        csrs: Arc<Vec<Vec<u8>>>,
    },
    /// Each worker renews the certificate its previous renewal returned
    /// (a certificate renews once), over a new connection presenting it.
    Renew {
        identities: Vec<TlsClientSettings>,
        /// Keys (PEM) and CSRs for them.
        keyed_csrs: Arc<Vec<(String, Vec<u8>)>>,
    },
    Ocsp {
        http: String,
        request: Arc<Vec<u8>>,
    },
    Crl {
        http: String,
    },
    /// JSON sign requests, one per CSR of the pool.
    CfsslSign {
        http: String,
        requests: Arc<Vec<Vec<u8>>>,
    },
    AgentIssue {
        agent: TlsClientSettings,
        entry_id: String,
        csrs: Arc<Vec<Vec<u8>>>,
    },
    SpiffeApi {
        socket: PathBuf,
    },
    JwtMint {
        identity: TlsClientSettings,
    },
    TokenEndpoint {
        identity: TlsClientSettings,
        endpoint: String,
    },
    TokenExchange {
        identity: TlsClientSettings,
        endpoint: String,
    },
    Acme {
        key: Arc<certd::api::client::AcmeAccountKey>,
        /// The account's URL.
        kid: String,
        directory: String,
        names: Vec<String>,
        csrs: Arc<Vec<Vec<u8>>>,
        /// Answers http-01 until the run's workload is dropped.
        _responder: Option<acme::Http01Responder>,
    },
    Revoke {
        /// Hex serials of the certificates issued to revoke.
        serials: Arc<Vec<String>>,
        next: Arc<AtomicUsize>,
        wait_crl: bool,
        /// certd's HTTP base URL, for the CRL after the run.
        http: String,
    },
}

/// Prepares, then runs the load until the limit (or the stop), then
/// reports. What it creates in the store goes into `ledger`.
pub async fn run(
    options: &BenchOptions,
    progress: Arc<Progress>,
    ledger: Arc<Ledger>,
) -> Result<BenchReport, BenchError> {
    let prepare = Prepare {
        options,
        ledger: &ledger,
        progress: &progress,
    };
    let workload = prepare.workload().await?;
    let connections = connect_all(options, &workload).await?;
    let remaining = Arc::new(AtomicU64::new(match options.limit {
        Limit::Count(count) => count,
        Limit::Duration(_) => u64::MAX,
    }));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = match options.limit {
        Limit::Duration(duration) => Some(started + duration),
        Limit::Count(_) => None,
    };
    let workload = Arc::new(workload);
    let pass_state = Arc::new(alongside::PassState::default());
    let passes = match (options.alongside, deadline) {
        (Some(pass), Some(deadline)) => Some(alongside::Passes::start(
            pass,
            &options.admin_socket,
            pass_state.clone(),
            started,
            deadline,
        )),
        (Some(_), None) => {
            return Err(BenchError::Prepare(
                "--alongside needs a --duration: its passes run in the second half".into(),
            ));
        }
        (None, _) => None,
    };
    let mut workers = Vec::new();
    for (index, connection) in connections.into_iter().enumerate() {
        let worker = Worker {
            index,
            workload: workload.clone(),
            connection,
            remaining: remaining.clone(),
            deadline,
            progress: progress.clone(),
            ledger: ledger.clone(),
            first_error: first_error.clone(),
            passes: pass_state.clone(),
        };
        workers.push(tokio::spawn(worker.run()));
    }
    let callers = async {
        // However this ends, the refill below learns that it may stop.
        let _ends_supply = match &*workload {
            Workload::Issue { tokens, .. } => Some(tokens.ends_when_dropped()),
            _ => None,
        };
        let mut tagged = Vec::new();
        for worker in workers {
            tagged.extend(
                worker
                    .await
                    .map_err(|e| BenchError::Prepare(e.to_string()))?,
            );
        }
        Ok::<_, BenchError>(tagged)
    };
    let refill = async {
        match &*workload {
            Workload::Issue { tokens, .. } => prepare.refill_tokens(tokens).await,
            _ => Ok(()),
        }
    };
    let (tagged, refilled) = tokio::join!(callers, refill);
    let tagged = tagged?;
    // A refill that failed ended the supply (callers that then found no
    // token counted errors saying why); the report names it.
    if let Err(error) = refilled
        && let Ok(mut first) = first_error.lock()
        && first.is_none()
    {
        *first = Some(format!("making join tokens during the run failed: {error}"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let last_answer = Instant::now();
    let mut latencies: Vec<u32> = tagged.iter().map(|(micros, _)| *micros).collect();
    latencies.sort_unstable();
    let alongside = match passes {
        Some(passes) => Some(passes.report(tagged, started, last_answer).await?),
        None => None,
    };
    let ok = progress.ok.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
    // Only a run whose every revocation succeeded knows what the CRL must
    // list.
    let (wait_crl, crl) = match &*workload {
        Workload::Revoke {
            serials,
            next,
            wait_crl,
            http,
        } => {
            let revoked = next.load(Ordering::Relaxed).min(serials.len());
            let crl = if errors == 0 && !progress.stopped() {
                Some(revoke::crl_after_run(http, &serials[..revoked], last_answer).await?)
            } else {
                None
            };
            (Some(*wait_crl), crl)
        }
        _ => (None, None),
    };
    let first_error = first_error.lock().map(|e| e.clone()).unwrap_or(None);
    Ok(BenchReport {
        op: options.operation,
        ok,
        errors,
        seconds,
        rate: ok as f64 / seconds.max(f64::EPSILON),
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |m| *m as f64 / 1000.0),
        concurrency: options.concurrency,
        first_error,
        wait_crl,
        crl,
        alongside,
    })
}

fn percentile(sorted_micros: &[u32], quantile: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_micros.len() as f64 - 1.0) * quantile).round() as usize;
    sorted_micros[rank.min(sorted_micros.len() - 1)] as f64 / 1000.0
}

fn anonymous(options: &BenchOptions) -> TlsClientSettings {
    TlsClientSettings {
        ca_bundle_pem: options.ca_bundle_pem.clone(),
        identity: None,
    }
}

/// One worker's connection.
enum Connection {
    Grpc(WorkloadClient),
    Token(TokenEndpointClient),
    /// The token endpoint, and the subject token exchanged, fetched again
    /// every minute so that a long run never exchanges an expired one.
    Exchange {
        client: TokenEndpointClient,
        subject: String,
        fetched_at: Instant,
    },
    Http(HttpConnection),
    Acme(certd::api::client::AcmeClient),
    Admin(AdminClient),
    /// A new connection per request (the Workload API's first answer).
    PerRequest,
    /// A new connection per renewal, presenting the certificate the last
    /// renewal returned.
    Renewing {
        server: String,
        current: TlsClientSettings,
    },
}

async fn connect_all(
    options: &BenchOptions,
    workload: &Workload,
) -> Result<Vec<Connection>, BenchError> {
    let mut connections = Vec::with_capacity(options.concurrency);
    for index in 0..options.concurrency {
        let connection = match workload {
            Workload::Issue { .. } | Workload::IssueKubernetes { .. } => Connection::Grpc(
                WorkloadClient::connect(&options.server, &anonymous(options)).await?,
            ),
            Workload::Renew { identities, .. } => Connection::Renewing {
                server: options.server.clone(),
                current: identities[index % identities.len()].clone(),
            },
            Workload::AgentIssue { agent, .. } => {
                Connection::Grpc(WorkloadClient::connect(&options.server, agent).await?)
            }
            Workload::SpiffeApi { .. } => Connection::PerRequest,
            Workload::JwtMint { identity } => {
                Connection::Grpc(WorkloadClient::connect(&options.server, identity).await?)
            }
            Workload::TokenEndpoint { identity, endpoint } => {
                Connection::Token(TokenEndpointClient::connect(endpoint, identity).await?)
            }
            Workload::TokenExchange { identity, endpoint } => {
                let mut client = TokenEndpointClient::connect(endpoint, identity).await?;
                let subject = client.client_credentials(BENCH_JWT_SERVICE, &[]).await?;
                Connection::Exchange {
                    client,
                    subject,
                    fetched_at: Instant::now(),
                }
            }
            Workload::Acme {
                key,
                kid,
                directory,
                ..
            } => {
                Connection::Acme(acme::connect(directory, &options.ca_bundle_pem, key, kid).await?)
            }
            Workload::Revoke { .. } => {
                Connection::Admin(AdminClient::connect(&options.admin_socket).await?)
            }
            Workload::Ocsp { http, .. }
            | Workload::Crl { http }
            | Workload::CfsslSign { http, .. } => Connection::Http(
                HttpConnection::connect(http)
                    .await
                    .map_err(|e| BenchError::Prepare(format!("cannot connect to {http}: {e}")))?,
            ),
        };
        connections.push(connection);
    }
    Ok(connections)
}

struct Worker {
    index: usize,
    workload: Arc<Workload>,
    connection: Connection,
    remaining: Arc<AtomicU64>,
    deadline: Option<Instant>,
    progress: Arc<Progress>,
    ledger: Arc<Ledger>,
    first_error: Arc<Mutex<Option<String>>>,
    /// Whether a pass (`--alongside`) is under way.
    passes: Arc<alongside::PassState>,
}

/// Whether the run stopped (Ctrl-C, a fatal error) or reached its
/// deadline: a caller starts no more requests, and stops waiting for one's
/// join token.
fn run_is_over(progress: &Progress, deadline: Option<Instant>) -> bool {
    progress.stopped() || deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

impl Worker {
    /// Each successful request's latency, and whether it started while a
    /// pass (`--alongside`) ran.
    async fn run(mut self) -> Vec<(u32, bool)> {
        let mut latencies = Vec::new();
        let mut round = self.index;
        loop {
            if run_is_over(&self.progress, self.deadline) {
                break;
            }
            if self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_err()
            {
                break;
            }
            let started = Instant::now();
            let during_pass = self.passes.running.load(Ordering::Relaxed);
            let outcome = self.one_request(round).await;
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            round = round.wrapping_add(1);
            match outcome {
                Ok(()) => {
                    latencies.push((micros, during_pass));
                    self.progress.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.progress.errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = self.first_error.lock()
                        && first.is_none()
                    {
                        *first = Some(error);
                    }
                }
            }
        }
        latencies
    }

    async fn one_request(&mut self, round: usize) -> Result<(), String> {
        match (&*self.workload, &mut self.connection) {
            (Workload::Issue { tokens, csrs }, Connection::Grpc(client)) => {
                let (progress, deadline) = (&self.progress, self.deadline);
                let token = tokens.take(|| run_is_over(progress, deadline)).await?;
                let issued = client
                    .issue(csrs[round % csrs.len()].clone(), &token)
                    .await
                    .map_err(|e| e.to_string())?;
                counted(&self.ledger, &issued)
            }
            (Workload::IssueKubernetes { token, csrs }, Connection::Grpc(client)) => {
                let issued = client
                    .issue_with_kubernetes_token(csrs[round % csrs.len()].clone(), token)
                    .await
                    .map_err(|e| e.to_string())?;
                counted(&self.ledger, &issued)
            }
            (Workload::Renew { keyed_csrs, .. }, Connection::Renewing { server, current }) => {
                let (key_pem, csr) = &keyed_csrs[round % keyed_csrs.len()];
                let mut client = WorkloadClient::connect(server, current)
                    .await
                    .map_err(|e| e.to_string())?;
                let issued = client.renew(csr.clone()).await.map_err(|e| e.to_string())?;
                counted(&self.ledger, &issued)?;
                current.identity = Some((issued.chain_pem, key_pem.clone().into()));
                Ok(())
            }
            (Workload::Ocsp { request, .. }, Connection::Http(http)) => {
                let (status, body) = http
                    .request("POST", "/ocsp", Some(("application/ocsp-request", request)))
                    .await
                    .map_err(|e| e.to_string())?;
                check_ocsp(status, &body)
            }
            (Workload::Crl { .. }, Connection::Http(http)) => {
                let (status, body) = http
                    .request("GET", "/crl", None)
                    .await
                    .map_err(|e| e.to_string())?;
                if status == 200 && body.first() == Some(&0x30) {
                    Ok(())
                } else {
                    Err(format!("CRL answer: HTTP {status}, {} bytes", body.len()))
                }
            }
            (Workload::CfsslSign { requests, .. }, Connection::Http(http)) => {
                let request = &requests[round % requests.len()];
                let (status, body) = http
                    .request(
                        "POST",
                        "/api/v1/cfssl/sign",
                        Some(("application/json", request)),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                check_cfssl_signed(status, &body)
            }
            (Workload::AgentIssue { entry_id, csrs, .. }, Connection::Grpc(client)) => {
                let issued = client
                    .issue_for_agent(entry_id, csrs[round % csrs.len()].clone())
                    .await
                    .map_err(|e| e.to_string())?;
                counted(&self.ledger, &issued)
            }
            (Workload::SpiffeApi { socket }, Connection::PerRequest) => {
                let svid = certd::agent::client::fetch_x509_svid(socket)
                    .await
                    .map_err(|e| e.to_string())?;
                if svid.spiffe_id.starts_with("spiffe://") && svid.chain_der.len() == 2 {
                    Ok(())
                } else {
                    Err(format!("unexpected SVID answer for {:?}", svid.spiffe_id))
                }
            }
            (Workload::JwtMint { .. }, Connection::Grpc(client)) => {
                let minted = client
                    .mint_jwt(&[BENCH_JWT_AUDIENCE.to_owned()], None)
                    .await
                    .map_err(|e| e.to_string())?;
                if minted.token.split('.').count() == 3
                    && minted.spiffe_id.ends_with(BENCH_JWT_SERVICE)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "unexpected JWT-SVID answer for {:?}",
                        minted.spiffe_id
                    ))
                }
            }
            (Workload::TokenEndpoint { .. }, Connection::Token(client)) => {
                let token = client
                    .client_credentials(BENCH_JWT_AUDIENCE, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                if token.split('.').count() == 3 {
                    Ok(())
                } else {
                    Err("unexpected token endpoint answer".into())
                }
            }
            (
                Workload::TokenExchange { .. },
                Connection::Exchange {
                    client,
                    subject,
                    fetched_at,
                },
            ) => {
                if fetched_at.elapsed() > SUBJECT_TOKEN_REFRESH {
                    *subject = client
                        .client_credentials(BENCH_JWT_SERVICE, &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    *fetched_at = Instant::now();
                }
                let token = client
                    .exchange(subject, BENCH_JWT_AUDIENCE, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                if token.split('.').count() == 3 {
                    Ok(())
                } else {
                    Err("unexpected token exchange answer".into())
                }
            }
            (Workload::Acme { names, csrs, .. }, Connection::Acme(client)) => {
                let chain = client
                    .order_certificate(names, &csrs[round % csrs.len()])
                    .await
                    .map_err(|e| e.to_string())?;
                self.ledger.certificate_issued();
                if chain.matches("BEGIN CERTIFICATE").count() == 2 {
                    Ok(())
                } else {
                    Err("the ACME certificate download is not a chain of two".into())
                }
            }
            (
                Workload::Revoke {
                    serials,
                    next,
                    wait_crl,
                    ..
                },
                Connection::Admin(client),
            ) => {
                let serial = serials
                    .get(next.fetch_add(1, Ordering::Relaxed))
                    .ok_or("ran out of certificates to revoke")?;
                let wait = if *wait_crl {
                    CrlWait::UntilListed
                } else {
                    CrlWait::No
                };
                let target = RevokeTarget::Serial(serial.clone());
                let revoked = client
                    .revoke(&target, RevocationReason::Superseded, wait)
                    .await
                    .map_err(|e| e.to_string())?;
                let listed = (revoked.crl_number > 0) == *wait_crl;
                match revoked.certificates.as_slice() {
                    [one] if one.newly_revoked && listed => Ok(()),
                    _ => Err(format!(
                        "unexpected revocation answer for {serial}: {} certificates, CRL {}",
                        revoked.certificates.len(),
                        revoked.crl_number
                    )),
                }
            }
            _ => Err("connection does not match the operation".into()),
        }
    }
}

/// Counts a certificate certd issued (its record stays in the store,
/// right or wrong), then checks it.
fn counted(ledger: &Ledger, issued: &certd::api::client::IssuedCertificate) -> Result<(), String> {
    ledger.certificate_issued();
    check_issued(issued)
}

fn check_issued(issued: &certd::api::client::IssuedCertificate) -> Result<(), String> {
    if issued.serial.len() == 40 && issued.chain_pem.matches("BEGIN CERTIFICATE").count() == 2 {
        Ok(())
    } else {
        Err(format!(
            "unexpected certificate answer for serial {:?}",
            issued.serial
        ))
    }
}

/// CFSSL's answer: `{"success": true, "result": {"certificate": PEM}}`.
fn check_cfssl_signed(status: u16, body: &[u8]) -> Result<(), String> {
    let answer: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("CFSSL answer (HTTP {status}) is not JSON: {e}"))?;
    let certificate = answer["result"]["certificate"].as_str().unwrap_or_default();
    if status == 200
        && answer["success"] == serde_json::Value::Bool(true)
        && certificate.starts_with("-----BEGIN CERTIFICATE-----")
    {
        Ok(())
    } else {
        Err(format!("CFSSL answer: HTTP {status}, {}", answer["errors"]))
    }
}

fn check_ocsp(status: u16, body: &[u8]) -> Result<(), String> {
    use x509_cert::der::Decode;
    if status != 200 {
        return Err(format!("OCSP answer: HTTP {status}"));
    }
    let response = x509_ocsp::OcspResponse::from_der(body)
        .map_err(|e| format!("OCSP answer does not parse: {e}"))?;
    let bytes = response
        .response_bytes
        .ok_or_else(|| format!("OCSP status {:?}", response.response_status))?;
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| e.to_string())?;
    match basic
        .tbs_response_data
        .responses
        .first()
        .map(|r| r.cert_status)
    {
        Some(x509_ocsp::CertStatus::Good(_)) => Ok(()),
        other => Err(format!("OCSP certificate status {other:?}, expected good")),
    }
}

/// A keep-alive HTTP/1.1 connection: enough of a client for two fixed
/// requests, with nothing between the loader and the socket.
/// One keep-alive HTTP/1.1 connection (hyper), for OCSP and CRL loads.
pub(super) struct HttpConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl HttpConnection {
    pub(super) async fn connect(base_url: &str) -> Result<Self, String> {
        let host = base_url
            .strip_prefix("http://")
            .ok_or("only http:// URLs")?
            .trim_end_matches('/')
            .to_owned();
        let stream = TcpStream::connect(&host).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Drives the connection; ends when the sender is dropped.
        tokio::spawn(connection);
        Ok(HttpConnection { sender, host })
    }

    pub(super) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if let Some((content_type, _)) = body {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        let payload = body.map_or_else(Bytes::new, |(_, bytes)| Bytes::copy_from_slice(bytes));
        let request = request
            .body(Full::new(payload))
            .map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body.to_vec()))
    }
}
