//! `certd federation add|list|show|remove`: relationships with other trust
//! domains, through the admin API of the running daemon (local socket or
//! mTLS).

use std::path::PathBuf;

use clap::Args;

use super::admin::AdminTarget;
use super::{DataDirArg, Refusal, format_time};
use certd::api::client::FederationView;
use certd::federation::FederationSpec;

#[derive(Debug, Args)]
pub struct FederationAddArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The foreign trust domain (partner.example).
    trust_domain: String,
    /// The https:// URL of its SPIFFE bundle endpoint.
    #[arg(long)]
    bundle_endpoint: String,
    /// How the endpoint is authenticated: https_web (a Web PKI certificate,
    /// or one issued by --endpoint-ca-file) or https_spiffe (an X509-SVID
    /// with --endpoint-spiffe-id, checked against the bundle held).
    #[arg(long, value_parser = ["https_web", "https_spiffe"])]
    profile: String,
    /// https_spiffe: the SPIFFE ID the endpoint's server presents.
    #[arg(long)]
    endpoint_spiffe_id: Option<String>,
    /// https_spiffe (needed) or https_web: the foreign bundle to start from,
    /// a SPIFFE bundle (JSON) or its roots (PEM, the peer's bundle.pem).
    #[arg(long)]
    trust_bundle_file: Option<PathBuf>,
    /// https_web: the CA certificates (PEM) that issued the endpoint's
    /// certificate, when it is not a Web PKI one.
    #[arg(long)]
    endpoint_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

#[derive(Debug, Args)]
pub struct FederationListArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

#[derive(Debug, Args)]
pub struct FederationShowArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The foreign trust domain.
    trust_domain: String,
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

#[derive(Debug, Args)]
pub struct FederationRemoveArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The foreign trust domain.
    trust_domain: String,
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

/// A file the operator names, read whole (a bundle or CA certificates are
/// small; 1 MiB is refused as a mistake).
fn read_small_file(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    let refusal = |message: String| Refusal {
        kind: certd::ErrorKind::InvalidInput,
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| refusal(format!("cannot read {what} {}: {e}", path.display())))?;
    if text.len() > certd::federation::bundle::MAX_BUNDLE_BYTES {
        return Err(refusal(format!("{what} {} is larger than 1 MiB", path.display())).into());
    }
    Ok(text)
}

pub async fn add(args: FederationAddArgs) -> anyhow::Result<()> {
    let spec = FederationSpec {
        trust_domain: args.trust_domain,
        bundle_endpoint_url: args.bundle_endpoint,
        profile: args.profile,
        endpoint_spiffe_id: args.endpoint_spiffe_id,
        endpoint_ca_pem: args
            .endpoint_ca_file
            .as_ref()
            .map(|path| read_small_file(path, "the endpoint CA file"))
            .transpose()?,
        trust_bundle: args
            .trust_bundle_file
            .as_ref()
            .map(|path| read_small_file(path, "the trust bundle file"))
            .transpose()?,
    };
    let mut client = args.target.connect(&args.data_dir).await?;
    let federation = client.add_federation(&spec).await?;
    args.output.print(&federation, || {
        println!(
            "federating with {} ({} at {}){}",
            federation.trust_domain,
            federation.profile,
            federation.bundle_endpoint_url,
            match &federation.bundle {
                Some(bundle) => {
                    format!("; starting from its bundle of sequence {}", bundle.sequence)
                }
                None => "; its bundle is fetched next".to_owned(),
            }
        );
        Ok(())
    })
}

pub async fn list(args: FederationListArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let federations = client.federations(None).await?;
    if args.output.json {
        println!("{}", serde_json::to_string(&federations)?);
        return Ok(());
    }
    println!(
        "{:<28}  {:<12}  {:<10}  {:<20}  BUNDLE ENDPOINT",
        "TRUST DOMAIN", "PROFILE", "SEQUENCE", "BUNDLE ACCEPTED"
    );
    for federation in &federations {
        let (sequence, accepted) = match &federation.bundle {
            Some(bundle) => (bundle.sequence.to_string(), format_time(bundle.accepted_at)),
            None => ("-".to_owned(), "(none yet)".to_owned()),
        };
        println!(
            "{:<28}  {:<12}  {:<10}  {:<20}  {}",
            federation.trust_domain,
            federation.profile,
            sequence,
            accepted,
            federation.bundle_endpoint_url
        );
    }
    Ok(())
}

pub async fn show(args: FederationShowArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let federation = client
        .federations(Some(&args.trust_domain))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Refusal {
            kind: certd::ErrorKind::NotFound,
            message: format!("no federation relationship with {}", args.trust_domain),
        })?;
    args.output.print(&federation, || {
        print_federation(&federation);
        Ok(())
    })
}

fn print_federation(federation: &FederationView) {
    println!("trust domain:     {}", federation.trust_domain);
    println!("bundle endpoint:  {}", federation.bundle_endpoint_url);
    println!("profile:          {}", federation.profile);
    if let Some(id) = &federation.endpoint_spiffe_id {
        println!("endpoint id:      {id}");
    }
    if federation.endpoint_ca_given {
        println!("endpoint CA:      given (not the Web PKI roots)");
    }
    println!(
        "created:          {} by {}",
        format_time(federation.created_at),
        federation.created_by
    );
    match &federation.bundle {
        None => println!("bundle:           (none yet)"),
        Some(bundle) => {
            let document: serde_json::Value =
                serde_json::from_str(&bundle.json).unwrap_or_default();
            let count = |usage: &str| {
                document["keys"].as_array().map_or(0, |keys| {
                    keys.iter().filter(|key| key["use"] == usage).count()
                })
            };
            println!(
                "bundle:           sequence {}, {} root(s), {} JWT key(s), accepted {}",
                bundle.sequence,
                count("x509-svid"),
                count("jwt-svid"),
                format_time(bundle.accepted_at)
            );
            if let Some(hint) = bundle.refresh_hint_seconds {
                println!("refresh hint:     {hint}s");
            }
        }
    }
    if let Some(at) = federation.last_fetched_at {
        println!("last fetched:     {}", format_time(at));
    }
    if let Some(error) = &federation.last_error {
        println!(
            "failing:          {} fetch(es) in a row: {error}",
            federation.consecutive_failures
        );
    }
}

pub async fn remove(args: FederationRemoveArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let federation = client.remove_federation(&args.trust_domain).await?;
    args.output.print(&federation, || {
        println!(
            "removed the federation with {} (added {} by {}); its bundle is no longer fetched",
            federation.trust_domain,
            format_time(federation.created_at),
            federation.created_by
        );
        Ok(())
    })
}
