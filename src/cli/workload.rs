//! `certd request`, and what the workload's side of the CLI shares (`renew`
//! too): keys are made here and never leave the machine; only CSRs are
//! sent.

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
        required_unless_present_any = ["k8s_token_file", "evidence"],
        conflicts_with_all = ["k8s_token_file", "evidence"]
    )]
    token: Option<String>,
    /// Instead of a join token: a file holding a Kubernetes projected
    /// service-account token (read fresh on every run, as kubelet rotates it).
    #[arg(long, env = "CERTD_K8S_TOKEN_FILE", conflicts_with = "evidence")]
    k8s_token_file: Option<PathBuf>,
    /// Instead: evidence for any attestor certd runs, as KIND=FILE (e.g.
    /// join-token=/run/secrets/certd-token); the file's bytes are sent as
    /// they are, read fresh on every run.
    #[arg(long, value_name = "KIND=FILE")]
    evidence: Option<String>,
    /// Directory to write key.pem, cert.pem and bundle.pem to.
    #[arg(long)]
    out: PathBuf,
    /// Replace the identity already in --out (by default refused: renew it
    /// with `certd renew --dir` instead).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

pub async fn request(args: RequestArgs) -> anyhow::Result<()> {
    // Before the token is spent: an identity in --out is not overwritten
    // by accident (a second bootstrap into the wrong directory).
    let held: Vec<&str> = ["cert.pem", "key.pem"]
        .into_iter()
        .filter(|file| args.out.join(file).exists())
        .collect();
    if !held.is_empty() && !args.force {
        return Err(super::Refusal {
            kind: certd::ErrorKind::AlreadyExists,
            message: format!(
                "{} already holds an identity ({}): renew it with `certd renew --dir {}`, or pass --force to replace it",
                args.out.display(),
                held.join(", "),
                args.out.display()
            ),
        }
        .into());
    }
    let ca_bundle_pem = read(&args.ca_bundle)?;
    let (key, csr_der) = new_key_and_csr()?;
    let tls = TlsClientSettings {
        ca_bundle_pem,
        identity: None,
    };
    // Checked before connecting: a malformed KIND=FILE is a usage error.
    let evidence = args.evidence.as_deref().map(evidence_of).transpose()?;
    let mut client = WorkloadClient::connect(&args.server, &tls).await?;
    let issued = match (&args.token, &args.k8s_token_file, evidence) {
        (Some(token), _, _) => client.issue(csr_der, token).await?,
        (None, None, Some((kind, mut bytes))) => {
            // Moved into the request, not copied.
            let bytes = std::mem::take(&mut *bytes);
            client.issue_with_evidence(csr_der, &kind, bytes).await?
        }
        (None, Some(path), _) => {
            let token = zeroize::Zeroizing::new(read(path)?);
            client
                .issue_with_kubernetes_token(csr_der, token.trim())
                .await?
        }
        (None, None, None) => {
            return Err(super::UsageError(
                "give --token, --k8s-token-file or --evidence KIND=FILE".into(),
            )
            .into());
        }
    };
    write_identity(&args.out, &key, &issued)?;
    report(&issued, &args.out, args.output)
}

/// `KIND=FILE` of `--evidence`: the attestor's kind, checked as the server
/// checks it, and the file's bytes (evidence is a secret: never logged).
fn evidence_of(value: &str) -> anyhow::Result<(String, zeroize::Zeroizing<Vec<u8>>)> {
    let usage = |reason: String| super::UsageError(format!("--evidence {value:?}: {reason}"));
    let (kind, path) = value
        .split_once('=')
        .filter(|(_, path)| !path.is_empty())
        .ok_or_else(|| usage("give KIND=FILE, e.g. join-token=/run/secrets/certd-token".into()))?;
    let kind = certd::attest::parse_kind(kind).map_err(|error| usage(error.to_string()))?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    Ok((kind.to_owned(), zeroize::Zeroizing::new(bytes)))
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

/// What a command that wrote an identity into `dir` prints: its SPIFFE
/// ID, serial and expiry, as text or JSON.
pub(super) fn report(
    issued: &IssuedCertificate,
    dir: &Path,
    output: super::JsonArg,
) -> anyhow::Result<()> {
    let written = Written {
        spiffe_id: &issued.spiffe_id,
        serial: &issued.serial,
        not_after: issued.not_after,
        dir,
    };
    output.print(&written, || {
        println!(
            "issued {} serial {} until {} in {}",
            issued.spiffe_id,
            issued.serial,
            super::format_time(issued.not_after),
            dir.display()
        );
        Ok(())
    })
}

/// An identity written into a directory, as `--json` prints it.
#[derive(serde::Serialize)]
struct Written<'a> {
    spiffe_id: &'a str,
    serial: &'a str,
    not_after: i64,
    dir: &'a Path,
}

pub(super) fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
