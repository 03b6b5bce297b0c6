//! `certd agent`: the node agent. It attests itself once (join or
//! Kubernetes token), then serves the SPIFFE Workload API on a Unix socket
//! to the workloads of its node (see `certd::agent`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::duration;
use certd::agent::{AgentSettings, Bootstrap, SocketLimits};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// certd's gRPC URL.
    #[arg(long, env = "CERTD_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// PEM file of the roots to trust for certd (its bundle.pem).
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: PathBuf,
    /// A one-time join token for the agent's entry (`certd entry create --agent`),
    /// needed only when DATA_DIR holds no current agent certificate. Prefer the
    /// environment variable: arguments are visible in the process list.
    #[arg(
        long,
        env = "CERTD_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "k8s_token_file"
    )]
    token: Option<String>,
    /// Instead of a join token: a file holding a Kubernetes projected
    /// service-account token.
    #[arg(long, env = "CERTD_K8S_TOKEN_FILE")]
    k8s_token_file: Option<PathBuf>,
    /// The Workload API socket; workloads set
    /// SPIFFE_ENDPOINT_SOCKET=unix://<this path>.
    #[arg(long, default_value = "/run/certd/agent.sock")]
    socket: PathBuf,
    /// Where the agent keeps its own key (0600) and certificate.
    #[arg(
        long,
        env = "CERTD_AGENT_DATA_DIR",
        default_value = "/var/lib/certd-agent"
    )]
    data_dir: PathBuf,
    /// How often to ask certd for this agent's entries (SVIDs due for
    /// renewal are fetched as soon as they are due).
    #[arg(long, value_parser = duration, default_value = "5s")]
    sync_interval: Duration,
    /// Most open Workload API connections from one uid.
    #[arg(long, default_value_t = SocketLimits::default().max_per_uid)]
    max_connections_per_uid: usize,
}

pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let ca_bundle_pem = super::workload::read(&args.ca_bundle)?;
    let bootstrap = match (args.token, args.k8s_token_file) {
        (Some(token), _) => Some(Bootstrap::JoinToken(zeroize::Zeroizing::new(token))),
        (None, Some(path)) => Some(Bootstrap::KubernetesTokenFile(path)),
        (None, None) => None,
    };
    if args.sync_interval < Duration::from_millis(200) {
        return Err(super::UsageError("--sync-interval must be at least 200ms".into()).into());
    }
    let settings = AgentSettings {
        server: args.server,
        ca_bundle_pem,
        bootstrap,
        data_dir: args.data_dir,
        socket: args.socket.clone(),
        sync_interval: args.sync_interval,
        socket_limits: SocketLimits {
            max_per_uid: args.max_connections_per_uid.max(1),
            ..SocketLimits::default()
        },
    };
    let socket = args.socket;
    let ready = move || {
        // One machine-readable line on stdout, for scripts and tests.
        println!("certd agent ready socket={}", socket.display());
    };
    certd::agent::run(settings, super::serve::shutdown_signal()?, ready).await?;
    Ok(())
}
