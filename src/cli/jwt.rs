//! `certd jwt mint` and `certd jwt verify`: JWT-SVIDs for shells and
//! services without a SPIFFE library.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::duration;
use super::workload::read;
use certd::api::client::{TlsClientSettings, WorkloadClient};
use certd::jwt::{JwkSet, JwtError};

#[derive(Debug, Args)]
pub struct MintArgs {
    /// certd's gRPC URL.
    #[arg(long, env = "CERTD_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// PEM roots to trust for certd; default DIR/bundle.pem.
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Directory holding the workload's key.pem and cert.pem (as `certd request` wrote them).
    #[arg(long)]
    dir: PathBuf,
    /// An audience for the token; repeat for several. Each must be allowed by the workload's
    /// registration entry (`--jwt-audience`).
    #[arg(long = "audience", required = true)]
    audiences: Vec<String>,
    /// Lifetime (default: the configured one, 5m); at most jwt.max_ttl.
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// One JSON object: `token`, `spiffe_id` and `expires_at` (Unix seconds).
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token, or `-` to read it from standard input (arguments are visible in the
    /// process list).
    token: String,
    /// The audience the verifier is: the token must name it.
    #[arg(long)]
    audience: String,
    /// Where the trust domain's JWT keys are (certd's /jwks.json, or a SPIFFE bundle).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/jwks.json",
        conflicts_with = "jwks_file"
    )]
    jwks_url: String,
    /// A JWKS (or SPIFFE bundle) file instead of the URL.
    #[arg(long)]
    jwks_file: Option<PathBuf>,
    /// The issuer the token must name (`iss`), e.g. certd's public base URL.
    #[arg(long)]
    issuer: Option<String>,
    /// The token must be an access token from the token endpoint (`typ: at+jwt`) rather than
    /// a JWT-SVID: neither is ever taken for the other.
    #[arg(long)]
    access_token: bool,
    /// A scope the access token must grant; repeat for several.
    #[arg(long = "scope", requires = "access_token")]
    scopes: Vec<String>,
    /// The client certificate (PEM) the caller presented: the access token must be bound to
    /// it (RFC 8705 cnf.x5t#S256).
    #[arg(long, value_name = "CERT_PEM", requires = "access_token")]
    bound_to: Option<PathBuf>,
    /// One JSON object: `spiffe_id`, `subject`, `expires_at` (Unix seconds), `audiences` and
    /// every claim (`claims`).
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

pub async fn mint(args: MintArgs) -> anyhow::Result<()> {
    let bundle = args
        .ca_bundle
        .clone()
        .unwrap_or_else(|| args.dir.join("bundle.pem"));
    let key = zeroize::Zeroizing::new(read(&args.dir.join("key.pem"))?);
    let tls = TlsClientSettings {
        ca_bundle_pem: read(&bundle)?,
        identity: Some((read(&args.dir.join("cert.pem"))?, key)),
    };
    let mut client = WorkloadClient::connect(&args.server, &tls).await?;
    let minted = client.mint_jwt(&args.audiences, args.ttl).await?;
    let json = serde_json::json!({
        "token": minted.token,
        "spiffe_id": minted.spiffe_id,
        "expires_at": minted.expires_at,
    });
    args.output.print(&json, || {
        // The token alone on stdout, so scripts can capture it.
        println!("{}", minted.token);
        Ok(())
    })
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let token = if args.token == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(certd::jwt::MAX_TOKEN_BYTES as u64 + 1)
            .read_to_string(&mut text)?;
        text.trim().to_owned()
    } else {
        args.token.clone()
    };
    let jwks = match &args.jwks_file {
        Some(path) => std::fs::read(path)
            .map_err(|e| super::UsageError(format!("cannot read {}: {e}", path.display())))?,
        None => fetch(&args.jwks_url).await?,
    };
    let keys = JwkSet::parse(&jwks).map_err(super::UsageError)?;
    let kind = if args.access_token {
        certd::jwt::TokenKind::AccessToken
    } else {
        certd::jwt::TokenKind::JwtSvid
    };
    let verified = certd::jwt::verify_kind_at(
        &token,
        kind,
        &args.audience,
        &keys,
        certd::clock::unix_seconds(super::now()),
    )
    .map_err(Invalid)?;
    let bound_to = match &args.bound_to {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| super::UsageError(format!("cannot read {}: {e}", path.display())))?;
            let leaf = certd::jwt::first_certificate_der(&pem).ok_or_else(|| {
                super::UsageError(format!("{} holds no PEM certificate", path.display()))
            })?;
            Some(leaf)
        }
    };
    verified
        .check(&certd::jwt::Required {
            issuer: args.issuer.as_deref(),
            scopes: &args.scopes,
            bound_to: bound_to.as_deref(),
        })
        .map_err(Invalid)?;
    if args.output.json {
        let json = serde_json::json!({
            "spiffe_id": verified.spiffe_id.to_string(),
            "subject": verified.subject,
            "expires_at": verified.expires_at,
            "audiences": verified.audiences,
            "claims": verified.claims,
        });
        println!("{json}");
    } else if !verified.claims.contains_key("act") {
        println!(
            "valid: {} until {}",
            verified.spiffe_id,
            super::format_time(verified.expires_at)
        );
    } else {
        // Exchanged on a subject's behalf: the user, and who acts for it.
        println!(
            "valid: {} through {} until {}",
            verified.subject,
            verified.spiffe_id,
            super::format_time(verified.expires_at)
        );
    }
    Ok(())
}

/// A token that does not verify: refused (exit 4), with the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct Invalid(pub JwtError);

async fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    if !url.starts_with("http://") {
        return Err(super::UsageError(format!(
            "--jwks-url {url:?} must be an http:// URL (certd's HTTP port), or use --jwks-file"
        ))
        .into());
    }
    Ok(super::http_get(url).await?)
}
