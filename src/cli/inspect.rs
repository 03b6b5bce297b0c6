//! `certd inspect FILE` and `certd completion SHELL`: small helpers for
//! people at a shell.

use std::path::PathBuf;

use clap::Args;
use x509_parser::extensions::GeneralName;

use super::{DataDirArg, format_time};
use certd::api::client::{ClientError, TlsClientSettings, WorkloadClient};
use certd::clock::unix_seconds;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A certificate, PEM (the first one in the file) or DER.
    file: PathBuf,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// certd's gRPC URL, asked for the certificate's status.
    #[arg(long, env = "CERTD_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// PEM roots to trust for certd; default DATA_DIR/bundle.pem.
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Do not ask certd for the status.
    #[arg(long)]
    offline: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What `inspect` shows.
#[derive(Debug, serde::Serialize)]
struct Inspected {
    serial: String,
    subject: String,
    issuer: String,
    spiffe_id: Option<String>,
    dns_names: Vec<String>,
    not_before: i64,
    not_after: i64,
    expires_in_seconds: i64,
    is_ca: bool,
    /// "good", "revoked", "unknown", or why it was not asked.
    status: String,
}

pub async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| super::UsageError(format!("cannot read {}: {e}", args.file.display())))?;
    let der = match x509_parser::pem::parse_x509_pem(&bytes) {
        Ok((_, pem)) => pem.contents,
        Err(_) => bytes,
    };
    let (_, certificate) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
        super::UsageError(format!(
            "{} is not an X.509 certificate (PEM or DER): {e}",
            args.file.display()
        ))
    })?;
    let mut spiffe_id = None;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                    spiffe_id = Some((*uri).to_owned())
                }
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    let serial = hex::encode(certificate.raw_serial());
    let not_after = certificate.validity().not_after.timestamp();
    let (status, verdict) = if args.offline {
        ("not asked (--offline)".to_owned(), Ok(()))
    } else {
        status_from_certd(&args, &serial).await
    };
    let inspected = Inspected {
        subject: certificate.subject().to_string(),
        issuer: certificate.issuer().to_string(),
        spiffe_id,
        dns_names,
        not_before: certificate.validity().not_before.timestamp(),
        not_after,
        expires_in_seconds: not_after - unix_seconds(super::now()),
        is_ca: certificate.is_ca(),
        serial,
        status,
    };
    if args.json {
        println!("{}", serde_json::to_string(&inspected)?);
        return verdict;
    }
    println!("serial:     {}", inspected.serial);
    println!("subject:    {}", inspected.subject);
    println!("issuer:     {}", inspected.issuer);
    println!(
        "spiffe id:  {}",
        inspected.spiffe_id.as_deref().unwrap_or("(none)")
    );
    println!("dns names:  {}", inspected.dns_names.join(" "));
    println!("valid from: {}", format_time(inspected.not_before));
    let left = inspected.expires_in_seconds;
    let when = if left > 0 {
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(left as u64))
        )
    } else {
        "expired".to_owned()
    };
    println!("valid to:   {} ({when})", format_time(inspected.not_after));
    if inspected.is_ca {
        println!("ca:         yes");
    }
    println!("status:     {}", inspected.status);
    verdict
}

/// The status certd reports, or why there is none; and the verdict the
/// exit code gives: revoked exits 4, unknown to the certd asked exits 5,
/// certd not asked or not answering exits as that failure does (a script
/// must never read "could not tell" as "good").
async fn status_from_certd(
    args: &InspectArgs,
    serial: &str,
) -> (String, Result<(), anyhow::Error>) {
    let bundle = args
        .ca_bundle
        .clone()
        .unwrap_or_else(|| args.data_dir.dir().bundle());
    let Ok(ca_bundle_pem) = std::fs::read_to_string(&bundle) else {
        let why = format!(
            "not asked: no CA bundle at {} (give --ca-bundle, or --offline)",
            bundle.display()
        );
        return (why.clone(), Err(super::UsageError(why).into()));
    };
    let tls = TlsClientSettings {
        ca_bundle_pem,
        identity: None,
    };
    let answer = match WorkloadClient::connect(&args.server, &tls).await {
        Ok(mut client) => client.status(serial).await,
        Err(error) => Err(error),
    };
    let not_good =
        |kind, message: String| Err(anyhow::Error::from(ClientError::Refused { kind, message }));
    match answer {
        Ok(answer) if answer.status == "revoked" => {
            let status = format!(
                "revoked at {} ({})",
                format_time(answer.revoked_at),
                answer.revocation_reason
            );
            let verdict = not_good(
                certd::ErrorKind::PermissionDenied,
                format!("certificate {serial} is {status}"),
            );
            (status, verdict)
        }
        Ok(answer) if answer.status == "unknown" => (
            "unknown to this certd (not issued by it)".to_owned(),
            not_good(
                certd::ErrorKind::NotFound,
                format!(
                    "certificate {serial} is unknown to the certd at {}: was it issued by another CA? (--server, --ca-bundle)",
                    args.server
                ),
            ),
        ),
        Ok(answer) => (answer.status.to_owned(), Ok(())),
        Err(error) => (format!("not known: {error}"), Err(error.into())),
    }
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Prints the shell's completion script for certd, e.g.
/// `certd completion bash > /etc/bash_completion.d/certd`.
pub fn completion(args: CompletionArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "certd", &mut std::io::stdout());
    Ok(())
}
