//! `certd serve`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::DataDir;
use crate::authority::Authority;
use crate::ca::{self, CaFiles, CertificateAuthority, InitOptions, KeyType};
use crate::config::{ConfigFile, revocation_urls};
use crate::server::{self, Listeners};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data_dir: DataDir,
    /// Configuration file (see deploy/certd.toml); flags override it.
    #[arg(long, env = "CERTD_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the gRPC (TLS) listener.
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Address of the plain HTTP listener (health, and later CRL and OCSP).
    #[arg(long)]
    http_addr: Option<String>,
    /// Name in certd's own serving certificate (repeatable; DNS name or IP).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut file = ConfigFile::load(args.config.as_deref())?;
    if args.grpc_addr.is_some() {
        file.grpc_addr = args.grpc_addr;
    }
    if args.http_addr.is_some() {
        file.http_addr = args.http_addr;
    }
    if !args.server_names.is_empty() {
        file.server_names = Some(args.server_names);
    }
    let config = file.validate()?;
    let dir = args.data_dir.data_dir;

    if !CaFiles::new(&dir).exists() {
        tracing::warn!(
            data_dir = %dir.display(),
            "no CA in the data directory: creating one with the defaults (trust domain certd.internal, ECDSA P-256); run `certd init` first to choose"
        );
        let options = InitOptions {
            trust_domain: "certd.internal".parse().map_err(crate::Error::from)?,
            key_type: KeyType::EcdsaP256,
        };
        ca::init(&dir, &options).map_err(crate::Error::from)?;
    }
    let mut ca = CertificateAuthority::load(&dir).map_err(crate::Error::from)?;
    let store = crate::store::open(&dir.join("db")).map_err(crate::Error::from)?;
    let listeners = Listeners::bind(&config, &dir).await?;
    let grpc = listeners
        .grpc
        .local_addr()
        .context("gRPC listener address")?;
    let http = listeners
        .http
        .local_addr()
        .context("HTTP listener address")?;
    let public_base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{http}"));
    ca.set_revocation_urls(revocation_urls(&public_base_url));
    let authority = Authority::new(Arc::new(ca), store, config.authority_settings()).await?;
    let admin = listeners.admin_path.clone();
    let trust_domain = authority.ca().trust_domain().clone();
    let ready = move || {
        tracing::info!(%grpc, %http, admin = %admin.display(), %trust_domain, "certd ready");
        // One machine-readable line on stdout, for scripts and tests that
        // start certd on ephemeral ports.
        println!(
            "certd ready grpc=https://{grpc} http=http://{http} admin={}",
            admin.display()
        );
    };
    server::run(authority, &config, listeners, shutdown_signal()?, ready).await?;
    Ok(())
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed
/// now, before certd reports ready, so no early signal is missed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
