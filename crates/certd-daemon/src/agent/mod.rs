//! The node agent (`certd agent`): runs on each node, holds a node identity
//! (`spiffe://<td>/agent/<name>`), keeps an X.509-SVID ready for every
//! entry parented to it, and serves them to local workloads over the SPIFFE
//! Workload API, attesting each caller by the kernel's word.
//!
//! Parts: `sync` talks to certd (node identity, entries, SVIDs) and is the
//! only writer of `cache`; `workload_api` answers workloads from `cache`;
//! `peer` turns a connection's kernel credentials into selectors;
//! `listener` owns the socket and its connection caps; `client` is the
//! workload's side, for `certd svid fetch`. The agent never
//! opens certd's database: everything comes over mTLS from certd, which
//! decides which entries the agent may serve.

mod authority;
mod cache;
pub mod client;
mod listener;
pub mod metrics;
mod peer;
mod sync;
mod workload_api;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use cache::{Cache, Snapshot};
pub use listener::SocketLimits;
pub use peer::{PeerCredentials, PeerError, selectors_of};
pub use sync::{AgentError, Bootstrap};

/// The generated SPIFFE Workload API (its proto has no package).
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("_");
}

/// What `certd agent` was told.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// certd's gRPC URL.
    pub server: String,
    /// The roots to trust for certd, PEM.
    pub ca_bundle_pem: String,
    /// For the first start (or after the node identity expired).
    pub bootstrap: Option<Bootstrap>,
    /// Holds the node identity (key.pem 0600, cert.pem, bundle.pem).
    pub data_dir: PathBuf,
    /// The Workload API socket.
    pub socket: PathBuf,
    /// How often to ask certd for the entries (and sooner when an SVID is
    /// due).
    pub sync_interval: Duration,
    pub socket_limits: SocketLimits,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None`: not at
    /// all.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The time of day (renewals fall due by it).
    pub clock: crate::clock::SharedClock,
    /// The issuer `ValidateJWTSVID` requires as `iss`; `None`: any.
    pub jwt_issuer: Option<String>,
}

/// Largest Workload API request read (they are all tiny).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Runs the agent until `shutdown` completes. Fails at start if it has no
/// identity and cannot get one, or cannot bind its socket or its metrics
/// address; after that, failures to reach certd are retried and never end
/// it. `ready` gets the bound metrics address, if any.
pub async fn run(
    settings: AgentSettings,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Option<std::net::SocketAddr>),
) -> Result<(), AgentError> {
    let cache = Cache::default();
    let mut syncer = sync::Syncer::start(
        settings.server,
        settings.ca_bundle_pem,
        settings.data_dir,
        settings.bootstrap,
        cache.clone(),
        settings.sync_interval,
        settings.clock.clone(),
    )
    .await?;
    // One round before serving, so that the first workload finds its SVID;
    // if certd cannot be reached, serve anyway and keep trying.
    if let Err(error) = syncer.sync_once().await {
        tracing::warn!(error = %crate::error_kind::with_causes(&error), "first sync with certd failed; retrying while serving");
    }
    let listener = listener::bind(&settings.socket).map_err(|source| AgentError::Io {
        action: "listen on",
        path: settings.socket.display().to_string(),
        source,
    })?;
    tracing::info!(socket = %settings.socket.display(), agent = %syncer.spiffe_id(), "serving the SPIFFE Workload API");
    let metrics = match settings.metrics_addr {
        Some(addr) => Some(
            metrics::serve(addr, cache.clone(), settings.clock.clone())
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let certd = syncer.certd();
    let syncing = tokio::spawn(syncer.run());
    let service = proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(
        workload_api::WorkloadApiService::new(
            cache,
            certd,
            settings.clock.clone(),
            settings.jwt_issuer,
        ),
    )
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    ready(metrics.as_ref().map(|(addr, _)| *addr));
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(16))
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .layer(metrics::CallsLayer)
        .add_service(service)
        .serve_with_incoming_shutdown(
            listener::incoming(listener, settings.socket_limits),
            shutdown,
        )
        .await;
    syncing.abort();
    if let Some((_, task)) = metrics {
        task.abort();
    }
    let _ = std::fs::remove_file(&settings.socket);
    served.map_err(AgentError::Server)
}
