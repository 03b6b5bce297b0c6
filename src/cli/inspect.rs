//! `certd inspect FILE` and `certd completion SHELL`: small helpers for
//! people at a shell.

use std::path::PathBuf;

use clap::Args;
use x509_parser::extensions::GeneralName;

use super::{DataDirArg, format_time};
use certd::api::client::{AdminClient, ClientError, TlsClientSettings, WorkloadClient};
use certd::clock::unix_seconds;
use certd::revocation::ocsp::OcspStatus;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A certificate, PEM (the first one in the file) or DER.
    file: PathBuf,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Ask this certd's gRPC URL for the status. Without it, the status is
    /// asked of the OCSP responder the certificate names (its answer checked
    /// against the issuer in the file and the trust bundle), else of the
    /// certd running here over its admin socket.
    #[arg(long, env = "CERTD_SERVER")]
    server: Option<String>,
    /// PEM roots to trust (for --server, and for the issuer of an OCSP
    /// answer); default: bundle.pem beside FILE, else DATA_DIR/bundle.pem.
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Do not ask certd for the status.
    #[arg(long)]
    offline: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    pub(super) json: bool,
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
    /// Whom the status was asked of, if anyone answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_from: Option<String>,
}

pub async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| super::UsageError(format!("cannot read {}: {e}", args.file.display())))?;
    // The leaf, and the rest of the chain when the file holds one (as
    // certd's cert.pem does): the issuer an OCSP answer is checked against.
    let pems: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .map_while(Result::ok)
        .map(|pem| pem.contents)
        .collect();
    let (der, chain) = match pems.split_first() {
        Some((leaf, rest)) => (leaf.clone(), rest.to_vec()),
        None => (bytes, Vec::new()),
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
    let (status, verdict, status_from) = if args.offline {
        ("not asked (--offline)".to_owned(), Ok(()), None)
    } else {
        status_of(&args, &certificate, &chain).await
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
        status_from,
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
    match &inspected.status_from {
        Some(source) => println!("status:     {} (from {source})", inspected.status),
        None => println!("status:     {}", inspected.status),
    }
    verdict
}

/// A certificate's status, as the source asked reported it.
enum Reported {
    Good,
    Revoked(String),
    Unknown,
}

/// The status certd reports, or why there is none; and the verdict the
/// exit code gives: revoked exits 4, unknown to the certd asked exits 5,
/// certd not asked or not answering exits as that failure does (a script
/// must never read "could not tell" as "good").
async fn status_of(
    args: &InspectArgs,
    certificate: &x509_parser::certificate::X509Certificate<'_>,
    chain: &[Vec<u8>],
) -> (String, Result<(), anyhow::Error>, Option<String>) {
    let serial = hex::encode(certificate.raw_serial());
    let asked = match (&args.server, ocsp_url(certificate), chain.first()) {
        (Some(server), _, _) => from_server(args, server, &serial)
            .await
            .map(|reported| (reported, format!("the certd at {server}"))),
        (None, Some(url), Some(issuer)) => from_ocsp(args, certificate, issuer, &url)
            .await
            .map(|reported| (reported, format!("the OCSP responder at {url}"))),
        (None, _, _) if args.data_dir.dir().admin_socket().exists() => from_socket(args, &serial)
            .await
            .map(|reported| (reported, "the certd running here".to_owned())),
        (None, url, _) => {
            let why = if url.is_none() {
                "it names no OCSP responder"
            } else {
                "the file holds no issuer to check an OCSP answer against (give the chain, as certd's cert.pem has it)"
            };
            Err(super::UsageError(format!(
                "cannot ask for the status: {why}, and no certd runs here (no {}): give --server URL, or --offline",
                args.data_dir.dir().admin_socket().display()
            ))
            .into())
        }
    };
    let not_good =
        |kind, message: String| Err(anyhow::Error::from(ClientError::Refused { kind, message }));
    match asked {
        Ok((Reported::Good, source)) => ("good".to_owned(), Ok(()), Some(source)),
        Ok((Reported::Revoked(status), source)) => {
            let verdict = not_good(
                certd::ErrorKind::PermissionDenied,
                format!("certificate {serial} is {status}"),
            );
            (status, verdict, Some(source))
        }
        Ok((Reported::Unknown, source)) => (
            "unknown to this certd (not issued by it)".to_owned(),
            not_good(
                certd::ErrorKind::NotFound,
                format!(
                    "certificate {serial} is unknown to {source}: was it issued by another CA? (--server, --ca-bundle)"
                ),
            ),
            Some(source),
        ),
        Err(error) => (format!("not known: {error}"), Err(error), None),
    }
}

/// The trust bundle: --ca-bundle; else, for the certificate's own issuer,
/// bundle.pem beside the file (as certd writes an identity); else the data
/// directory's.
fn bundle_path(args: &InspectArgs, for_the_file: bool) -> PathBuf {
    if let Some(bundle) = &args.ca_bundle {
        return bundle.clone();
    }
    let beside = args
        .file
        .parent()
        .map(|dir| dir.join("bundle.pem"))
        .filter(|path| for_the_file && path.exists());
    beside.unwrap_or_else(|| args.data_dir.dir().bundle())
}

fn read_bundle(args: &InspectArgs, for_the_file: bool) -> anyhow::Result<String> {
    let bundle = bundle_path(args, for_the_file);
    std::fs::read_to_string(&bundle).map_err(|_| {
        super::UsageError(format!(
            "not asked: no CA bundle at {} (give --ca-bundle, or --offline)",
            bundle.display()
        ))
        .into()
    })
}

/// Asks a certd's gRPC API (`GetStatus`).
async fn from_server(args: &InspectArgs, server: &str, serial: &str) -> anyhow::Result<Reported> {
    let tls = TlsClientSettings {
        ca_bundle_pem: read_bundle(args, false)?,
        identity: None,
    };
    let answer = WorkloadClient::connect(server, &tls)
        .await?
        .status(serial)
        .await?;
    Ok(match answer.status {
        "revoked" => Reported::Revoked(format!(
            "revoked at {} ({})",
            format_time(answer.revoked_at),
            answer.revocation_reason
        )),
        "unknown" => Reported::Unknown,
        _ => Reported::Good,
    })
}

/// Asks the certd running here, over its admin socket.
async fn from_socket(args: &InspectArgs, serial: &str) -> anyhow::Result<Reported> {
    let mut admin = AdminClient::connect(&args.data_dir.dir().admin_socket()).await?;
    match admin.show(serial).await {
        Ok(summary) if summary.status == "revoked" => Ok(Reported::Revoked("revoked".into())),
        Ok(_) => Ok(Reported::Good),
        Err(ClientError::Refused {
            kind: certd::ErrorKind::NotFound,
            ..
        }) => Ok(Reported::Unknown),
        Err(error) => Err(error.into()),
    }
}

/// Asks the OCSP responder the certificate names, as a relying party
/// does, and believes the answer only when the issuer in the file chains
/// to the trust bundle and signed it.
async fn from_ocsp(
    args: &InspectArgs,
    certificate: &x509_parser::certificate::X509Certificate<'_>,
    issuer_der: &[u8],
    url: &str,
) -> anyhow::Result<Reported> {
    use x509_parser::prelude::FromDer;
    let refuse = |message: String| anyhow::Error::from(super::UsageError(message));
    let (_, issuer) =
        x509_parser::certificate::X509Certificate::from_der(issuer_der).map_err(|e| {
            refuse(format!(
                "the issuer certificate in the file does not parse: {e}"
            ))
        })?;
    if certificate
        .verify_signature(Some(issuer.public_key()))
        .is_err()
    {
        return Err(refuse(
            "the second certificate in the file did not sign the first: it is not its chain".into(),
        ));
    }
    let bundle = read_bundle(args, true)?;
    let anchored = x509_parser::pem::Pem::iter_from_buffer(bundle.as_bytes())
        .map_while(Result::ok)
        .any(|root| {
            root.contents == issuer_der
                || root
                    .parse_x509()
                    .is_ok_and(|root| issuer.verify_signature(Some(root.public_key())).is_ok())
        });
    if !anchored {
        return Err(refuse(format!(
            "the certificate's issuer does not chain to the trust bundle {}: its OCSP answer proves nothing",
            bundle_path(args, true).display()
        )));
    }
    let mut pem = String::new();
    for der in [certificate.as_raw(), issuer_der] {
        pem.push_str(&certd::ca::pem_encode("CERTIFICATE", der));
    }
    let (request, _) = certd::revocation::ocsp::request_for(&pem, None).map_err(refuse)?;
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        refuse(format!(
            "the OCSP URL {url} is not http://, which OCSP uses; give --server URL"
        ))
    })?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut connection = super::load::HttpConnection::connect(&format!("http://{host}"))
        .await
        .map_err(|e| refuse(format!("cannot reach the OCSP responder at {url}: {e}")))?;
    let (status, body) = connection
        .request("POST", path, Some(("application/ocsp-request", &request)))
        .await
        .map_err(|e| refuse(format!("the OCSP responder at {url} did not answer: {e}")))?;
    if status != 200 {
        return Err(refuse(format!(
            "the OCSP responder at {url} answered HTTP {status}"
        )));
    }
    let now = unix_seconds(super::now());
    match certd::revocation::ocsp::read_response(&body, certificate.raw_serial(), issuer_der, now)
        .map_err(|e| refuse(format!("{url}: {e}")))?
    {
        OcspStatus::Good => Ok(Reported::Good),
        OcspStatus::Unknown => Ok(Reported::Unknown),
        OcspStatus::Revoked { at, reason } => Ok(Reported::Revoked(format!(
            "revoked at {} ({})",
            format_time(at),
            reason.as_deref().unwrap_or("unspecified")
        ))),
    }
}

/// The certificate's OCSP URL (its Authority Information Access).
fn ocsp_url(certificate: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    certificate
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) => {
                aia.accessdescs.iter().find_map(|access| {
                    let is_ocsp = access.access_method
                        == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
                    match &access.access_location {
                        GeneralName::URI(uri) if is_ocsp => Some((*uri).to_owned()),
                        _ => None,
                    }
                })
            }
            _ => None,
        })
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
