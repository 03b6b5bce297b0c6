//! The agent's Prometheus metrics and health, served on `--metrics-addr`
//! (`GET /metrics`, `/healthz`, `/readyz`); nothing is served without it.
//!
//! Owns the agent process's one registry (`agent::metrics::get()`).
//! Counters are fed where the event happens: the Workload API layer below
//! (calls by method and gRPC code), the listener (connections open and
//! refused by cap), `sync` (rounds by outcome, the node identity's expiry,
//! the last good round). What describes the cache (entries, SVIDs, the
//! earliest SVID expiry) is read from the current snapshot at scrape time,
//! so it is never stale. Labels come from fixed sets (method names, gRPC
//! codes, cap names), never from callers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::AtomicI64;
use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::cache::Cache;
use crate::clock::SharedClock;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The Workload API method; "other" for anything else.
    pub method: String,
    /// The call's gRPC status: ok, permission_denied, invalid_argument, …
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabels {
    /// max_connections or max_per_uid.
    pub cap: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// ok or failed.
    pub outcome: String,
}

/// Every metric the agent exports.
pub struct AgentMetrics {
    registry: Registry,
    pub calls: Family<CallLabels, Counter>,
    pub connections_open: Gauge,
    pub connections_refused: Family<CapLabels, Counter>,
    pub syncs: Family<OutcomeLabels, Counter>,
    /// Unix seconds; 0 until known.
    pub identity_not_after: Gauge<i64, AtomicI64>,
    pub last_good_sync: Gauge<i64, AtomicI64>,
    // Set at scrape time from the cache.
    entries: Gauge,
    svids: Gauge,
    earliest_svid_expiry: Gauge<i64, AtomicI64>,
    identity_expiry: Gauge<i64, AtomicI64>,
    since_good_sync: Gauge<i64, AtomicI64>,
}

/// The agent's metrics.
pub fn get() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(AgentMetrics::new)
}

impl AgentMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("certd_agent");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "workload_api_calls",
            "Workload API calls answered, by method and gRPC status",
            calls.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "workload_api_connections",
            "Workload API connections open now",
            connections_open.clone(),
        );
        let connections_refused = Family::<CapLabels, Counter>::default();
        registry.register(
            "workload_api_connections_refused",
            "Workload API connections closed at once because a cap was reached, by cap",
            connections_refused.clone(),
        );
        let syncs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "syncs",
            "Rounds of fetching entries, bundle and due SVIDs from certd, by outcome",
            syncs.clone(),
        );
        let entries = Gauge::default();
        registry.register(
            "entries",
            "Registration entries parented to this agent",
            entries.clone(),
        );
        let svids = Gauge::default();
        registry.register("svids", "X.509-SVIDs held for workloads", svids.clone());
        let earliest_svid_expiry = Gauge::default();
        registry.register(
            "svid_earliest_expiry_seconds",
            "Seconds until the first held X.509-SVID expires (negative: expired; absent before the first)",
            earliest_svid_expiry.clone(),
        );
        let identity_expiry = Gauge::default();
        registry.register(
            "identity_expiry_seconds",
            "Seconds until the agent's own certificate expires (negative: expired)",
            identity_expiry.clone(),
        );
        let since_good_sync = Gauge::default();
        registry.register(
            "seconds_since_last_sync",
            "Seconds since the last round that reached certd",
            since_good_sync.clone(),
        );
        AgentMetrics {
            registry,
            calls,
            connections_open,
            connections_refused,
            syncs,
            identity_not_after: Gauge::default(),
            last_good_sync: Gauge::default(),
            entries,
            svids,
            earliest_svid_expiry,
            identity_expiry,
            since_good_sync,
        }
    }

    /// A sync round ended at `now` (Unix seconds), `ok` or not.
    pub fn sync(&self, ok: bool, now: i64) {
        let outcome = if ok { "ok" } else { "failed" };
        self.syncs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        if ok {
            self.last_good_sync.set(now);
        }
    }

    pub fn refused(&self, cap: &str) {
        self.connections_refused
            .get_or_create(&CapLabels {
                cap: cap.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text, with the cache's figures as of now.
    pub fn encode(&self, cache: &Cache, now: i64) -> String {
        let snapshot = cache.current();
        self.entries.set(snapshot.entries.len() as i64);
        self.svids.set(snapshot.svids.len() as i64);
        if let Some(earliest) = snapshot.svids.values().map(|svid| svid.not_after).min() {
            self.earliest_svid_expiry.set(earliest - now);
        }
        self.identity_expiry
            .set(self.identity_not_after.get() - now);
        let last = self.last_good_sync.get();
        self.since_good_sync
            .set(if last == 0 { -1 } else { now - last });
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Ready when workloads can be answered: the trust bundle is held and
    /// the agent's own certificate has not expired.
    fn ready(&self, cache: &Cache, now: i64) -> Result<(), &'static str> {
        if cache.current().bundle_der.is_empty() {
            return Err("no trust bundle from certd yet");
        }
        if self.identity_not_after.get() <= now {
            return Err("the agent's certificate has expired");
        }
        Ok(())
    }
}

/// Binds `addr` and serves the metrics and health endpoints on it until
/// the task is dropped; answers the bound address.
pub async fn serve(
    addr: SocketAddr,
    cache: Cache,
    clock: SharedClock,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::http::StatusCode;
    use axum::routing::get as route_get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let metrics_cache = cache.clone();
    let metrics_clock = clock.clone();
    let router = axum::Router::new()
        .route(
            "/metrics",
            route_get(move || {
                let text = get().encode(&metrics_cache, metrics_clock.unix_now());
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", route_get(|| async { "ok\n" }))
        .route(
            "/readyz",
            route_get(move || {
                let ready = get().ready(&cache, clock.unix_now());
                async move {
                    match ready {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}\n"),
                        ),
                    }
                }
            }),
        );
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(error = %crate::error_kind::with_causes(&error), "agent metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

/// Every method the Workload API has; anything else is "other".
const METHODS: &[&str] = &[
    "FetchX509SVID",
    "FetchX509Bundles",
    "FetchJWTSVID",
    "FetchJWTBundles",
    "ValidateJWTSVID",
];

/// A tower layer counting every Workload API call by method and the gRPC
/// status it was answered with (the status in the response headers; none
/// there means the call was answered, or its stream started).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallsLayer;

impl<S> tower::Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Calls { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Calls<S> {
    inner: S,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for Calls<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let method = crate::api::grpc_metrics::method_among(request.uri().path(), METHODS);
        let answered = self.inner.call(request);
        Box::pin(async move {
            let response = answered.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            get()
                .calls
                .get_or_create(&CallLabels {
                    method: method.to_owned(),
                    code: code_name(code).to_owned(),
                })
                .inc();
            Ok(response)
        })
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        Code::Unauthenticated => "unauthenticated",
        Code::Internal => "internal",
        _ => "other",
    }
}
