//! `certd request` and `certd renew`: the workload's side. Keys are made
//! here and never leave the machine; only CSRs are sent.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use certd::api::client::{IssuedCertificate, TlsClientSettings, WorkloadClient, identity_dir};

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// certd's gRPC URL.
    #[arg(long, env = "CERTD_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// PEM file of the roots to trust for certd (its bundle.pem).
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: PathBuf,
    /// The one-time join token (prefer the environment variable: arguments
    /// are visible in the process list).
    #[arg(
        long,
        env = "CERTD_JOIN_TOKEN",
        hide_env_values = true,
        required_unless_present = "k8s_token_file",
        conflicts_with = "k8s_token_file"
    )]
    token: Option<String>,
    /// Instead of a join token: a file holding a Kubernetes projected
    /// service-account token (read fresh on every run, as kubelet rotates it).
    #[arg(long, env = "CERTD_K8S_TOKEN_FILE")]
    k8s_token_file: Option<PathBuf>,
    /// Directory to write key.pem, cert.pem and bundle.pem to.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("mode").args(["daemon", "if_needed"]))]
pub struct RenewArgs {
    /// certd's gRPC URL.
    #[arg(long, env = "CERTD_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// PEM file of the roots to trust for certd; default DIR/bundle.pem.
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Directory holding the current key.pem and cert.pem; they are replaced.
    #[arg(long)]
    pub(super) dir: PathBuf,
    /// Keep running: renew at half the certificate's validity (±10%), retry failures with
    /// backoff, never remove a valid certificate; stop on SIGTERM.
    #[arg(long)]
    daemon: bool,
    /// Renew once, only if past half the certificate's validity (for cron and timers).
    #[arg(long)]
    if_needed: bool,
    /// After each renewal, run this shell command (e.g. "systemctl reload nginx").
    #[arg(long)]
    exec: Option<String>,
    /// After each renewal, send a signal to the process in a pid file, e.g. /run/nginx.pid:HUP.
    #[arg(long, value_parser = super::renew::parse_signal)]
    signal: Option<(PathBuf, String)>,
    /// With --daemon: how often to check certd's trust bundle between renewals; a changed
    /// bundle replaces DIR/bundle.pem and runs the hook.
    #[arg(long, value_parser = super::duration, default_value = "5m")]
    pub(super) bundle_refresh: std::time::Duration,
}

pub async fn request(args: RequestArgs) -> anyhow::Result<()> {
    let ca_bundle_pem = read(&args.ca_bundle)?;
    let (key, csr_der) = new_key_and_csr()?;
    let tls = TlsClientSettings {
        ca_bundle_pem,
        identity: None,
    };
    let mut client = WorkloadClient::connect(&args.server, &tls).await?;
    let issued = match (&args.token, &args.k8s_token_file) {
        (Some(token), _) => client.issue(csr_der, token).await?,
        (None, Some(path)) => {
            let token = zeroize::Zeroizing::new(read(path)?);
            client
                .issue_with_kubernetes_token(csr_der, token.trim())
                .await?
        }
        (None, None) => {
            return Err(super::UsageError("give --token or --k8s-token-file".into()).into());
        }
    };
    write_identity(&args.out, &key, &issued)?;
    report(&issued, &args.out);
    Ok(())
}

pub async fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let hooks = super::renew::Hooks {
        exec: args.exec.clone(),
        signal: args.signal.clone(),
    };
    if args.daemon {
        return super::renew::daemon(args, hooks).await;
    }
    if args.if_needed {
        return super::renew::if_needed(args, &hooks).await;
    }
    renew_once(&args).await?;
    if hooks.exec.is_some() || hooks.signal.is_some() {
        super::renew::run_hooks(&hooks).await;
    }
    Ok(())
}

/// Renews the identity in `args.dir` once, replacing its files.
pub(super) async fn renew_once(args: &RenewArgs) -> anyhow::Result<()> {
    if !args.dir.join("cert.pem").exists() {
        return Err(nothing_to_renew(&args.dir));
    }
    let (key, csr_der) = new_key_and_csr()?;
    let mut client = client_for_renewal(args).await?;
    let issued = client.renew(csr_der).await?;
    write_identity(&args.dir, &key, &issued)?;
    report(&issued, &args.dir);
    Ok(())
}

/// A client presenting the identity in `args.dir`, trusting `--ca-bundle`
/// or DIR/bundle.pem.
pub(super) async fn client_for_renewal(args: &RenewArgs) -> anyhow::Result<WorkloadClient> {
    let bundle_path = args
        .ca_bundle
        .clone()
        .unwrap_or_else(|| args.dir.join("bundle.pem"));
    let ca_bundle_pem = read(&bundle_path)?;
    let chain = read(&args.dir.join("cert.pem"))?;
    let current_key = zeroize::Zeroizing::new(read(&args.dir.join("key.pem"))?);
    let tls = TlsClientSettings {
        ca_bundle_pem,
        identity: Some((chain, current_key)),
    };
    Ok(WorkloadClient::connect(&args.server, &tls).await?)
}

/// The error for a directory without an identity: what to run first.
pub(super) fn nothing_to_renew(dir: &Path) -> anyhow::Error {
    super::UsageError(format!(
        "{} holds no certificate (cert.pem) to renew; get one first with `certd request --out {}`",
        dir.display(),
        dir.display()
    ))
    .into()
}

/// A fresh key and a CSR for it (see `identity_dir::new_key_and_csr`).
pub(super) fn new_key_and_csr() -> anyhow::Result<(rcgen::KeyPair, Vec<u8>)> {
    identity_dir::new_key_and_csr().context("cannot generate a key and its CSR")
}

/// Writes key.pem, cert.pem and bundle.pem (see `identity_dir::write_identity`).
pub(super) fn write_identity(
    dir: &Path,
    key: &rcgen::KeyPair,
    issued: &IssuedCertificate,
) -> anyhow::Result<()> {
    identity_dir::write_identity(dir, key, issued)
        .map_err(|(path, error)| anyhow::anyhow!("cannot write {}: {error}", path.display()))
}

fn report(issued: &IssuedCertificate, dir: &Path) {
    println!(
        "issued {} serial {} until {} in {}",
        issued.spiffe_id,
        issued.serial,
        super::format_time(issued.not_after),
        dir.display()
    );
}

pub(super) fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
