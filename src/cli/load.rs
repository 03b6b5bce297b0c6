//! The load generator behind `certd bench`: drives a running certd as many
//! concurrent workloads would, and measures throughput and latency.
//!
//! Everything a request needs is prepared before the clock starts (join
//! tokens in bulk through the admin socket, keys and CSRs generated once and
//! reused, mTLS identities for renewal, one OCSP request), so the loader
//! spends its CPU on the protocol, not on set-up. Every response is checked;
//! a failed or wrong answer counts as an error, never as a success.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
use certd::authority::TokenFor;
use certd::registry::EntrySpec;

/// Service name the load tool issues for.
pub const BENCH_SERVICE: &str = "certd-bench";
/// Join tokens created per admin call while preparing.
const TOKEN_BATCH: u32 = 50_000;
/// Distinct keys (and CSRs) the loader cycles through.
const CSR_POOL: usize = 256;
/// In duration mode, tokens prepared per second of run time, and the cap.
const TOKENS_PER_SECOND: u64 = 20_000;
const MAX_PREPARED_TOKENS: u64 = 1_000_000;

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
}

/// Counters shared with the progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("preparing the run: {0}")]
    Prepare(String),
}

impl BenchError {
    /// The one classification (`certd::ErrorKind`) of this failure: a
    /// client error keeps its own, so `certd bench` exits as `certd list`
    /// does when certd cannot be reached.
    pub fn kind(&self) -> certd::ErrorKind {
        match self {
            BenchError::Client(error) => error.kind(),
            BenchError::Prepare(_) => certd::ErrorKind::Internal,
        }
    }
}

/// What each request of the run sends.
enum Workload {
    Issue {
        tokens: Arc<Vec<String>>,
        next_token: Arc<AtomicUsize>,
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
}

/// Prepares, then runs the load until the limit, then reports.
pub async fn run(
    options: &BenchOptions,
    progress: Arc<Progress>,
) -> Result<BenchReport, BenchError> {
    let workload = prepare(options).await?;
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
    let mut workers = Vec::new();
    for (index, connection) in connections.into_iter().enumerate() {
        let worker = Worker {
            index,
            workload: workload.clone(),
            connection,
            remaining: remaining.clone(),
            deadline,
            progress: progress.clone(),
            first_error: first_error.clone(),
        };
        workers.push(tokio::spawn(worker.run()));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(
            worker
                .await
                .map_err(|e| BenchError::Prepare(e.to_string()))?,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ok = progress.ok.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
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
    })
}

fn percentile(sorted_micros: &[u32], quantile: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_micros.len() as f64 - 1.0) * quantile).round() as usize;
    sorted_micros[rank.min(sorted_micros.len() - 1)] as f64 / 1000.0
}

async fn prepare(options: &BenchOptions) -> Result<Workload, BenchError> {
    let csrs = Arc::new(csr_pool()?);
    match options.operation {
        Operation::Issue => {
            let wanted = match options.limit {
                Limit::Count(count) => count,
                Limit::Duration(duration) => {
                    (duration.as_secs().max(1) * TOKENS_PER_SECOND).min(MAX_PREPARED_TOKENS)
                }
            };
            let tokens = create_tokens(options, wanted).await?;
            Ok(Workload::Issue {
                tokens: Arc::new(tokens),
                next_token: Arc::new(AtomicUsize::new(0)),
                csrs,
            })
        }
        Operation::IssueKubernetes => {
            let token = options.kubernetes_token.clone().ok_or_else(|| {
                BenchError::Prepare("a Kubernetes service-account token is needed".into())
            })?;
            Ok(Workload::IssueKubernetes { token, csrs })
        }
        Operation::Renew => {
            let tokens = create_tokens(options, options.concurrency as u64).await?;
            let mut identities = Vec::with_capacity(tokens.len());
            let mut client = WorkloadClient::connect(&options.server, &anonymous(options)).await?;
            for token in tokens {
                let (key, csr) = key_and_csr()?;
                let issued = client.issue(csr, &token).await?;
                identities.push(TlsClientSettings {
                    ca_bundle_pem: options.ca_bundle_pem.clone(),
                    identity: Some((
                        issued.chain_pem,
                        zeroize::Zeroizing::new(key.serialize_pem()),
                    )),
                });
            }
            let keyed_csrs = (0..CSR_POOL)
                .map(|_| key_and_csr().map(|(key, csr)| (key.serialize_pem(), csr)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Workload::Renew {
                identities,
                keyed_csrs: Arc::new(keyed_csrs),
            })
        }
        Operation::Ocsp => {
            let token = create_tokens(options, 1).await?;
            let mut client = WorkloadClient::connect(&options.server, &anonymous(options)).await?;
            let issued = client.issue(csrs[0].clone(), &token[0]).await?;
            let (request, ocsp_url) = certd::revocation::ocsp::request_for(&issued.chain_pem, None)
                .map_err(BenchError::Prepare)?;
            let http = match &options.http {
                Some(http) => http.clone(),
                None => ocsp_url
                    .strip_suffix("/ocsp")
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        BenchError::Prepare("the certificate has no OCSP URL; pass --http".into())
                    })?,
            };
            Ok(Workload::Ocsp {
                http,
                request: Arc::new(request),
            })
        }
        Operation::Crl => Ok(Workload::Crl {
            http: options
                .http
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
        }),
        Operation::AgentIssue => {
            let (agent, entry_id) = bench_agent(options).await?;
            Ok(Workload::AgentIssue {
                agent,
                entry_id,
                csrs,
            })
        }
        Operation::JwtMint => Ok(Workload::JwtMint {
            identity: bench_jwt_identity(options).await?,
        }),
        Operation::TokenEndpoint => Ok(Workload::TokenEndpoint {
            identity: bench_jwt_identity(options).await?,
            endpoint: format!("{}/oauth/token", options.server.trim_end_matches('/')),
        }),
        Operation::TokenExchange => {
            let identity = bench_jwt_identity(options).await?;
            let endpoint = format!("{}/oauth/token", options.server.trim_end_matches('/'));
            bench_delegation(options, &identity, &endpoint).await?;
            Ok(Workload::TokenExchange { identity, endpoint })
        }
        Operation::WorkloadApi => Ok(Workload::SpiffeApi {
            socket: options.socket.clone().ok_or_else(|| {
                BenchError::Prepare("`workload-api` needs the agent's --socket".into())
            })?,
        }),
    }
}

/// A workload identity whose entry allows the bench audience (entry
/// created on first use).
async fn bench_jwt_identity(options: &BenchOptions) -> Result<TlsClientSettings, BenchError> {
    let mut admin = AdminClient::connect(&options.admin_socket).await?;
    let existing = admin.entries(Some(BENCH_JWT_SERVICE)).await?;
    let entry = match existing.into_iter().next() {
        Some(entry) => entry,
        None => {
            let spec = EntrySpec {
                service: BENCH_JWT_SERVICE.to_owned(),
                selectors: vec![format!("token:{BENCH_JWT_SERVICE}")],
                jwt_audiences: vec![BENCH_JWT_AUDIENCE.to_owned()],
                ..EntrySpec::default()
            };
            admin.create_entry(&spec).await?
        }
    };
    bootstrap(options, &mut admin, entry.id).await
}

/// A fresh identity for entry `entry_id` (a join token made for it,
/// exchanged at once), as mTLS client settings.
async fn bootstrap(
    options: &BenchOptions,
    admin: &mut AdminClient,
    entry_id: String,
) -> Result<TlsClientSettings, BenchError> {
    let token = admin
        .create_join_tokens(&TokenFor::Entry(entry_id), None, 1)
        .await?
        .tokens
        .pop()
        .ok_or_else(|| BenchError::Prepare("no join token was created".into()))?;
    let (key, csr) = key_and_csr()?;
    let mut client = WorkloadClient::connect(&options.server, &anonymous(options)).await?;
    let issued = client.issue(csr, &token).await?;
    Ok(TlsClientSettings {
        ca_bundle_pem: options.ca_bundle_pem.clone(),
        identity: Some((
            issued.chain_pem,
            zeroize::Zeroizing::new(key.serialize_pem()),
        )),
    })
}

/// Grants the bench client tokens for itself (its subject tokens) and the
/// right to exchange them towards the bench audience on its own behalf:
/// the grant `certd-bench-self` and the delegation `certd-bench-exchange`,
/// added to the token policy unless it has them.
async fn bench_delegation(
    options: &BenchOptions,
    identity: &TlsClientSettings,
    endpoint: &str,
) -> Result<(), BenchError> {
    // certd's issuer, as its tokens name it.
    let mut client = TokenEndpointClient::connect(endpoint, identity).await?;
    let token = client.client_credentials(BENCH_JWT_AUDIENCE, &[]).await?;
    let issuer = token_claim(&token, "iss")
        .ok_or_else(|| BenchError::Prepare("the bench token names no issuer".into()))?;
    let mut admin = AdminClient::connect(&options.admin_socket).await?;
    let (version, text) = admin.policy().await?;
    let file =
        |error: certd::policy::grants::PolicyFileError| BenchError::Prepare(error.to_string());
    let with_grant = certd::policy::grants::set_grant(
        &text,
        BENCH_SELF_GRANT,
        BENCH_JWT_SERVICE,
        BENCH_JWT_SERVICE,
        &[],
    )
    .map_err(file)?;
    let wanted = certd::policy::grants::set_delegation(
        &with_grant,
        BENCH_DELEGATION,
        BENCH_JWT_SERVICE,
        &[issuer],
        BENCH_JWT_AUDIENCE,
        &[],
    )
    .map_err(file)?;
    // Applied only when one of them is missing: a bench run changes the
    // policy once.
    let has = |name: &str| text.contains(&format!("name = \"{name}\""));
    let unchanged = has(BENCH_SELF_GRANT) && has(BENCH_DELEGATION);
    if !unchanged {
        admin.replace_policy(wanted, Some(version)).await?;
    }
    Ok(())
}

/// A claim of a token, read without verifying it (the bench's own).
fn token_claim(token: &str, name: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// The bench's node agent: its entry (created on first use), a fresh
/// certificate for it, and a workload entry parented to it.
async fn bench_agent(options: &BenchOptions) -> Result<(TlsClientSettings, String), BenchError> {
    let mut admin = AdminClient::connect(&options.admin_socket).await?;
    let agent_selector = format!("token:{BENCH_AGENT}");
    let existing = admin.entries(Some(BENCH_AGENT)).await?;
    let agent_entry = match existing.iter().find(|e| e.agent) {
        Some(entry) => entry.clone(),
        None => {
            let spec = EntrySpec {
                service: BENCH_AGENT.to_owned(),
                selectors: vec![agent_selector],
                agent: true,
                ..EntrySpec::default()
            };
            admin.create_entry(&spec).await?
        }
    };
    let agent = bootstrap(options, &mut admin, agent_entry.id.clone()).await?;
    let workload_selector = format!("unix:user:{BENCH_SERVICE}");
    let existing = admin.entries(Some(BENCH_SERVICE)).await?;
    let entry_id = match existing
        .iter()
        .find(|e| e.parent_id.as_deref() == Some(agent_entry.spiffe_id.as_str()))
    {
        Some(entry) => entry.id.clone(),
        None => {
            let spec = EntrySpec {
                service: BENCH_SERVICE.to_owned(),
                selectors: vec![workload_selector],
                parent: Some(agent_entry.spiffe_id.clone()),
                ..EntrySpec::default()
            };
            admin.create_entry(&spec).await?.id
        }
    };
    Ok((agent, entry_id))
}

fn anonymous(options: &BenchOptions) -> TlsClientSettings {
    TlsClientSettings {
        ca_bundle_pem: options.ca_bundle_pem.clone(),
        identity: None,
    }
}

async fn create_tokens(options: &BenchOptions, count: u64) -> Result<Vec<String>, BenchError> {
    let mut admin = AdminClient::connect(&options.admin_socket).await?;
    let entry = bench_entry(&mut admin).await?;
    let mut tokens = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut left = count;
    while left > 0 {
        let batch = u32::try_from(left.min(u64::from(TOKEN_BATCH))).unwrap_or(TOKEN_BATCH);
        let created = admin
            .create_join_tokens(&entry, Some(Duration::from_secs(3600)), batch)
            .await?;
        tokens.extend(created.tokens);
        left -= u64::from(batch);
    }
    Ok(tokens)
}

/// The registration entry bench tokens are made for: the bench service's
/// `token:` entry, created on first use.
async fn bench_entry(admin: &mut AdminClient) -> Result<TokenFor, BenchError> {
    let selector = format!("token:{BENCH_SERVICE}");
    let existing = admin.entries(Some(BENCH_SERVICE)).await?;
    if let Some(entry) = existing.iter().find(|e| e.selectors == [selector.clone()]) {
        return Ok(TokenFor::Entry(entry.id.clone()));
    }
    let spec = EntrySpec {
        service: BENCH_SERVICE.to_owned(),
        selectors: vec![selector],
        ..EntrySpec::default()
    };
    Ok(TokenFor::Entry(admin.create_entry(&spec).await?.id))
}

fn key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), BenchError> {
    let key = rcgen::KeyPair::generate().map_err(|e| BenchError::Prepare(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| BenchError::Prepare(e.to_string()))?;
    Ok((key, csr.der().to_vec()))
}

fn csr_pool() -> Result<Vec<Vec<u8>>, BenchError> {
    (0..CSR_POOL)
        .map(|_| key_and_csr().map(|(_, csr)| csr))
        .collect()
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
            Workload::Ocsp { http, .. } | Workload::Crl { http } => Connection::Http(
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
    first_error: Arc<Mutex<Option<String>>>,
}

impl Worker {
    async fn run(mut self) -> Vec<u32> {
        let mut latencies = Vec::new();
        let mut round = self.index;
        loop {
            if self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
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
            let outcome = self.one_request(round).await;
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            round = round.wrapping_add(1);
            match outcome {
                Ok(()) => {
                    latencies.push(micros);
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
            (
                Workload::Issue {
                    tokens,
                    next_token,
                    csrs,
                },
                Connection::Grpc(client),
            ) => {
                let index = next_token.fetch_add(1, Ordering::Relaxed);
                let token = tokens
                    .get(index)
                    .ok_or("ran out of prepared join tokens; use --count")?;
                let issued = client
                    .issue(csrs[round % csrs.len()].clone(), token)
                    .await
                    .map_err(|e| e.to_string())?;
                check_issued(&issued)
            }
            (Workload::IssueKubernetes { token, csrs }, Connection::Grpc(client)) => {
                let issued = client
                    .issue_with_kubernetes_token(csrs[round % csrs.len()].clone(), token)
                    .await
                    .map_err(|e| e.to_string())?;
                check_issued(&issued)
            }
            (Workload::Renew { keyed_csrs, .. }, Connection::Renewing { server, current }) => {
                let (key_pem, csr) = &keyed_csrs[round % keyed_csrs.len()];
                let mut client = WorkloadClient::connect(server, current)
                    .await
                    .map_err(|e| e.to_string())?;
                let issued = client.renew(csr.clone()).await.map_err(|e| e.to_string())?;
                check_issued(&issued)?;
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
            (Workload::AgentIssue { entry_id, csrs, .. }, Connection::Grpc(client)) => {
                let issued = client
                    .issue_for_agent(entry_id, csrs[round % csrs.len()].clone())
                    .await
                    .map_err(|e| e.to_string())?;
                check_issued(&issued)
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
            _ => Err("connection does not match the operation".into()),
        }
    }
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
