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
    /// Serve Prometheus metrics (`/metrics`) and health (`/healthz`, `/readyz`) over HTTP on
    /// this address, e.g. 127.0.0.1:9091; off by default.
    #[arg(long, env = "CERTD_AGENT_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// The issuer ValidateJWTSVID requires as `iss` (certd's `[jwt] issuer`, by default its
    /// public base URL); any when not given.
    #[arg(long)]
    jwt_issuer: Option<String>,
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
        metrics_addr: args.metrics_addr,
        clock: super::clock::clock(),
        jwt_issuer: args.jwt_issuer,
    };
    let socket = args.socket;
    let ready = move |metrics: Option<std::net::SocketAddr>| {
        // One machine-readable line on stdout, for scripts and tests.
        match metrics {
            Some(addr) => println!(
                "certd agent ready socket={} metrics=http://{addr}",
                socket.display()
            ),
            None => println!("certd agent ready socket={}", socket.display()),
        }
    };
    certd::agent::run(settings, super::serve::shutdown_signal()?, ready).await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct SvidFetchArgs {
    /// The agent's Workload API socket.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET", default_value = "/run/certd/agent.sock", value_parser = socket_path)]
    socket: PathBuf,
    /// Directory to write svid.pem (leaf then intermediate), svid.key (0600) and bundle.pem to.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

/// A socket path, or a `unix:` URL as SPIFFE_ENDPOINT_SOCKET holds it:
/// `unix:///path` or `unix:/path` (the SPIFFE Workload Endpoint standard
/// allows both; py-spiffe writes the second).
fn socket_path(value: &str) -> Result<PathBuf, String> {
    let path = value
        .strip_prefix("unix://")
        .or_else(|| value.strip_prefix("unix:"))
        .unwrap_or(value);
    if !path.starts_with('/') {
        return Err(format!(
            "{value:?} is not a socket path or a unix:///path URL"
        ));
    }
    Ok(PathBuf::from(path))
}

/// `certd svid fetch`: this process's X.509-SVID from the local agent,
/// written as PEM files.
pub async fn svid_fetch(args: SvidFetchArgs) -> anyhow::Result<()> {
    use certd::fsutil::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
    let svid = certd::agent::client::fetch_x509_svid(&args.socket).await?;
    let pem = |label: &str, ders: &[Vec<u8>]| -> String {
        ders.iter()
            .map(|der| pem_block(label, der))
            .collect::<String>()
    };
    let key = zeroize::Zeroizing::new(pem_block("PRIVATE KEY", &svid.key_pkcs8_der));
    fsutil::create_private_dir(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let files = [
        ("svid.key", key.as_bytes().to_vec(), SECRET_FILE_MODE),
        (
            "svid.pem",
            pem("CERTIFICATE", &svid.chain_der).into_bytes(),
            PUBLIC_FILE_MODE,
        ),
        (
            "bundle.pem",
            pem("CERTIFICATE", &svid.bundle_der).into_bytes(),
            PUBLIC_FILE_MODE,
        ),
    ];
    for (name, contents, mode) in files {
        let path = args.out.join(name);
        fsutil::replace_file(&path, &contents, mode)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let fetched = serde_json::json!({ "spiffe_id": svid.spiffe_id, "dir": args.out });
    args.output.print(&fetched, || {
        println!("fetched {} into {}", svid.spiffe_id, args.out.display());
        Ok(())
    })
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_a_path_or_either_unix_url_form() {
        for value in [
            "/run/certd/agent.sock",
            "unix:///run/certd/agent.sock",
            "unix:/run/certd/agent.sock",
        ] {
            assert_eq!(
                socket_path(value).unwrap(),
                PathBuf::from("/run/certd/agent.sock"),
                "{value}"
            );
        }
        for bad in ["agent.sock", "unix:agent.sock", "tcp://127.0.0.1:1", ""] {
            assert!(socket_path(bad).is_err(), "{bad}");
        }
    }
}
