//! `certd serve`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::DataDirArg;
use certd::config::ConfigFile;
use certd::daemon::Daemon;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Configuration file (see deploy/certd.toml); flags override it.
    #[arg(long, env = "CERTD_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the gRPC (TLS) listener (given twice, the last wins).
    #[arg(long, overrides_with = "grpc_addr")]
    grpc_addr: Option<String>,
    /// Address of the plain HTTP listener: health, CRL and OCSP (given twice, the last wins).
    #[arg(long, overrides_with = "http_addr")]
    http_addr: Option<String>,
    /// Name in certd's own serving certificate (repeatable; DNS name or IP).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// PostgreSQL database shared by replicas, postgresql://…; default: sled in the data
    /// directory.
    #[arg(long, env = "CERTD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Serve even though the CA's store-marks.toml is missing: certd then cannot tell an
    /// older copy or another CA's database from the right one. Writes new marks from the
    /// database and audits the start. Only when you know the database is the CA's latest.
    #[arg(long)]
    danger_accept_unmarked_store: bool,
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
    super::use_database(&mut file, args.database_url, &args.data_dir.dir())?;
    let config = file.validate()?;
    let file_size_limit = survive_file_size_limit()?;
    // Only the quick start's directory is made from nothing: a mistyped
    // --data-dir must not silently become a new root CA.
    let quick_start =
        args.data_dir.data_dir == std::path::Path::new(certd::config::DEFAULT_DATA_DIR);
    let mut daemon = Daemon::new(args.data_dir.dir(), config).create_missing_data_dir(quick_start);
    if args.danger_accept_unmarked_store {
        daemon = daemon.accept_unmarked_store();
    }
    let daemon = daemon.bind().await?;
    let (grpc, http, admin) = (
        daemon.grpc_addr(),
        daemon.http_addr(),
        daemon.admin_socket(),
    );
    let bundle_endpoint = daemon
        .bundle_endpoint_addr()
        .map(|address| format!(" bundle=https://{address}"))
        .unwrap_or_default();
    let trust_domain = daemon.authority().ca().trust_domain().clone();
    let key_store = daemon.authority().ca().key_store();
    let ready = move || {
        tracing::info!(%grpc, %http, admin = %admin.display(), %trust_domain, intermediate_key = %key_store, "certd ready");
        // One machine-readable line on stdout, for scripts and tests that
        // start certd on ephemeral ports.
        println!(
            "certd ready grpc=https://{grpc} http=http://{http} admin={}{bundle_endpoint}",
            admin.display()
        );
    };
    let reload = daemon.reload_handle();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    // SIGHUP (`systemctl reload certd`): look at the data directory now.
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: looking for a prepared intermediate now");
            reload.now();
        }
    });
    daemon.run(shutdown_signal()?, ready).await?;
    drop(file_size_limit);
    Ok(())
}

/// Handles SIGXFSZ, so that a write past a file-size limit (systemd's
/// `LimitFSIZE=`, `ulimit -f`) fails with EFBIG, which the store treats
/// like a full disk and recovers from, instead of killing certd. The
/// handler lives as long as the returned value.
fn survive_file_size_limit() -> anyhow::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    const SIGXFSZ: i32 = 25;
    signal(SignalKind::from_raw(SIGXFSZ)).context("cannot handle SIGXFSZ")
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed
/// now, before certd reports ready, so no early signal is missed.
pub(super) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
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
