//! `certd ca …`: what is done where the root key is (sign the root's CRL,
//! revoke an intermediate), and `certd crl sync`, which keeps a relying
//! party's CRL file fresh.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use certd::ca::RevocationReason;
use certd::ca::root_crl::{self, RootCrlFacts};
use certd::identity::Serial;

use super::{DataDirArg, JsonArg, UsageError, duration, format_time};

#[derive(Debug, Args)]
pub struct SignRootCrlArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// How long the root CRL is valid; sign a new one well before it ends (the daemon warns
    /// 30 days ahead).
    #[arg(long, value_parser = duration, default_value = "180d")]
    validity: Duration,
    /// File whose first line is the root key's passphrase, if it is encrypted.
    #[arg(long, env = "CERTD_KEY_PASSPHRASE_FILE")]
    key_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct RevokeIntermediateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The intermediate's serial number in hex (`openssl x509 -serial -noout -in
    /// intermediate.pem`); any case, colons allowed.
    serial: String,
    /// RFC 5280 reason: unspecified, key-compromise, affiliation-changed, superseded,
    /// cessation-of-operation or certificate-hold.
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    reason: RevocationReason,
    /// How long the new root CRL is valid.
    #[arg(long, value_parser = duration, default_value = "180d")]
    validity: Duration,
    /// File whose first line is the root key's passphrase, if it is encrypted.
    #[arg(long, env = "CERTD_KEY_PASSPHRASE_FILE")]
    key_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct RotateRootArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// File whose first line is the root key's passphrase, if it is encrypted (the next root
    /// key is encrypted with it too).
    #[arg(long, env = "CERTD_KEY_PASSPHRASE_FILE")]
    key_passphrase_file: Option<PathBuf>,
    /// How long the next root is only handed out before `certd ca rotate-intermediate` signs
    /// under it: longer than the longest certificate lifetime plus one renewal, so that every
    /// workload has fetched it. Default: 48h (`ca::next_root::DEFAULT_PROPAGATION`).
    #[arg(long, value_parser = duration)]
    propagation: Option<Duration>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct RotateIntermediateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// File whose first line is the root key's passphrase, if it is encrypted (the next
    /// intermediate key is encrypted with it too).
    #[arg(long, env = "CERTD_KEY_PASSPHRASE_FILE")]
    key_passphrase_file: Option<PathBuf>,
    /// File whose first line is the user PIN of the PKCS#11 token, when the intermediate key
    /// is in one (the next key is made there too).
    #[arg(long, env = "CERTD_PKCS11_PIN_FILE")]
    pkcs11_pin_file: Option<PathBuf>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

/// `certd ca rotate-intermediate`: the next intermediate, for the daemon
/// to promote.
pub fn rotate_intermediate(args: RotateIntermediateArgs) -> anyhow::Result<()> {
    let secrets = certd::ca::KeySecrets {
        passphrase: passphrase(args.key_passphrase_file.as_deref())?,
        pkcs11_pin: args
            .pkcs11_pin_file
            .as_deref()
            .map(certd::ca::Pkcs11Pin::from_file)
            .transpose()
            .map_err(certd::Error::from)?,
    };
    let next = certd::ca::rotation::prepare(&args.data_dir.data_dir, &secrets, super::now())
        .map_err(certd::Error::from)?;
    let json = serde_json::json!({
        "subject": next.subject,
        "root": next.root,
        "not_after": next.not_after,
        "next_root_usable_after": next.next_root_usable_after,
    });
    args.output.print(&json, || {
        println!(
            "prepared the next intermediate \"{}\" signed by \"{}\" (valid until {}): a running certd signs with it within seconds, or else at its next start",
            next.subject,
            next.root,
            format_time(next.not_after)
        );
        if let Some(usable_after) = next.next_root_usable_after {
            println!(
                "the next root is still propagating, so this intermediate is signed by the current root; from {} the next rotation signs under the next root",
                format_time(usable_after)
            );
        }
        Ok(())
    })
}

/// `certd ca rotate-root`: the next root, added to the bundle.
pub fn rotate_root(args: RotateRootArgs) -> anyhow::Result<()> {
    let passphrase = passphrase(args.key_passphrase_file.as_deref())?;
    let next = certd::ca::next_root::prepare(
        &args.data_dir.data_dir,
        passphrase.as_ref(),
        args.propagation
            .unwrap_or(certd::ca::next_root::DEFAULT_PROPAGATION),
        super::now(),
    )
    .map_err(certd::Error::from)?;
    let json = serde_json::json!({
        "subject": next.subject,
        "not_after": next.not_after,
        "roots_in_bundle": next.roots_in_bundle,
        "usable_after": next.usable_after,
    });
    args.output.print(&json, || {
        println!(
            "prepared the next root \"{}\" (valid until {}): bundle.pem now holds {} roots, which certd hands out from now on; from {} `certd ca rotate-intermediate` signs under it",
            next.subject,
            format_time(next.not_after),
            next.roots_in_bundle,
            format_time(next.usable_after)
        );
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct RetireRootArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Retire even while certificates signed under the old root may live; peers that refresh
    /// their bundle stop trusting those at once.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

/// `certd ca retire-root`: the next root becomes the root; the old one
/// leaves the bundle.
pub fn retire_root(args: RetireRootArgs) -> anyhow::Result<()> {
    let retired = certd::ca::next_root::retire(
        &args.data_dir.data_dir,
        args.force,
        certd::clock::unix_seconds(super::now()),
    )
    .map_err(certd::Error::from)?;
    let json = serde_json::json!({
        "retired": retired.retired,
        "root": retired.root,
        "roots_in_bundle": retired.roots_in_bundle,
    });
    args.output.print(&json, || {
        println!(
            "retired the root \"{}\" (kept as root-retired.pem): the root is now \"{}\", and bundle.pem holds {} root(s), which certd hands out from now on",
            retired.retired, retired.root, retired.roots_in_bundle
        );
        Ok(())
    })
}

fn parse_reason(value: &str) -> Result<RevocationReason, String> {
    value.parse()
}

fn passphrase(file: Option<&std::path::Path>) -> anyhow::Result<Option<certd::ca::KeyPassphrase>> {
    Ok(file
        .map(certd::ca::KeyPassphrase::from_file)
        .transpose()
        .map_err(certd::Error::from)?)
}

fn check_validity(validity: Duration) -> anyhow::Result<()> {
    if validity < Duration::from_secs(24 * 3600)
        || validity > Duration::from_secs(5 * 365 * 24 * 3600)
    {
        return Err(UsageError(format!(
            "--validity {} must be between 1d and 5y",
            humantime::format_duration(validity)
        ))
        .into());
    }
    Ok(())
}

fn report(facts: &RootCrlFacts, dir: &std::path::Path, output: JsonArg) -> anyhow::Result<()> {
    let file = certd::DataDir::new(dir).root_crl();
    let json = serde_json::json!({
        "number": facts.number,
        "revoked": facts.revoked,
        "this_update": facts.this_update,
        "next_update": facts.next_update,
        "file": file,
    });
    output.print(&json, || {
        println!(
            "signed root CRL number {} listing {} revoked intermediate(s), valid until {}: {}",
            facts.number,
            facts.revoked,
            format_time(facts.next_update),
            file.display()
        );
        Ok(())
    })
}

/// `certd ca sign-root-crl`.
pub fn sign_root_crl(args: SignRootCrlArgs) -> anyhow::Result<()> {
    check_validity(args.validity)?;
    let passphrase = passphrase(args.key_passphrase_file.as_deref())?;
    let facts = root_crl::sign(
        &args.data_dir.data_dir,
        passphrase.as_ref(),
        args.validity,
        super::now(),
    )
    .map_err(certd::Error::from)?;
    report(&facts, &args.data_dir.data_dir, args.output)
}

/// `certd ca revoke-intermediate`.
pub fn revoke_intermediate(args: RevokeIntermediateArgs) -> anyhow::Result<()> {
    check_validity(args.validity)?;
    let serial: Serial = args.serial.parse().map_err(certd::Error::from)?;
    let passphrase = passphrase(args.key_passphrase_file.as_deref())?;
    let facts = root_crl::revoke_intermediate(
        &args.data_dir.data_dir,
        passphrase.as_ref(),
        serial,
        args.reason,
        args.validity,
        super::now(),
    )
    .map_err(certd::Error::from)?;
    report(&facts, &args.data_dir.data_dir, args.output)
}

#[derive(Debug, Args)]
pub struct CrlSyncArgs {
    /// certd's HTTP base URL, e.g. http://certd.internal:8080; `/crls.pem` (every CRL a
    /// whole-chain checker needs) is fetched from it.
    #[arg(long)]
    http: String,
    /// The file to keep fresh (replaced atomically, 0644).
    #[arg(long)]
    out: PathBuf,
    /// Keep running, fetching this often; without it, fetch once.
    #[arg(long, value_parser = duration)]
    pub(super) every: Option<Duration>,
    /// Run this with `sh -c` after the file changed (e.g. `nginx -s reload`); not when it is
    /// unchanged.
    #[arg(long)]
    exec: Option<String>,
    /// Check every CRL's signature against these roots (PEM; certd's bundle.pem) and the
    /// intermediate certd serves, before anything is written; CRLs that lack one of these
    /// roots' are not written (the file is kept, and the command fails).
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
}

/// `certd crl sync`.
pub async fn crl_sync(args: CrlSyncArgs) -> anyhow::Result<()> {
    let base = certd::config::check_base_url(&args.http)
        .map_err(|message| UsageError(format!("--http: {message}")))?;
    if !base.starts_with("http://") {
        return Err(UsageError(format!(
            "--http {base:?} must be an http:// URL (certd's HTTP port)"
        ))
        .into());
    }
    if let Some(every) = args.every
        && every < Duration::from_secs(10)
    {
        return Err(UsageError("--every must be at least 10s".into()).into());
    }
    let roots = match &args.ca_bundle {
        Some(path) => Some(super::workload::read(path)?),
        None => None,
    };
    let Some(every) = args.every else {
        return sync_once(&base, &args, roots.as_deref()).await.map(|_| ());
    };
    loop {
        if let Err(error) = sync_once(&base, &args, roots.as_deref()).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "CRL sync failed; keeping the file as it is"
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// One round: fetch, check, and replace the file and run the hook only if
/// the content changed. Answers whether it changed.
async fn sync_once(
    base: &str,
    args: &CrlSyncArgs,
    roots_pem: Option<&str>,
) -> anyhow::Result<bool> {
    let mut body = super::http_get(&format!("{base}/crls.pem")).await?;
    let mut crls = check_crls(&body)?;
    if let Some(roots_pem) = roots_pem {
        let intermediate = super::http_get(&format!("{base}/intermediate.pem")).await?;
        crls = verify_crls(&crls, roots_pem, &intermediate)?;
        body = crls
            .iter()
            .map(|der| certd::ca::pem_encode("X509 CRL", der))
            .collect::<String>()
            .into_bytes();
    }
    let current = std::fs::read(&args.out).ok();
    if current.as_deref() == Some(body.as_slice()) {
        tracing::debug!(file = %args.out.display(), "CRLs unchanged");
        return Ok(false);
    }
    if let Some(current) = current {
        refuse_rollback(&current, &crls)?;
    }
    certd::fsutil::replace_file(&args.out, &body, certd::fsutil::PUBLIC_FILE_MODE)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
    tracing::info!(file = %args.out.display(), crls = crls.len(), "CRLs updated");
    if let Some(command) = &args.exec {
        let status = tokio::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .await;
        match status {
            Ok(status) if status.success() => tracing::info!(%command, "reload command ran"),
            Ok(status) => tracing::warn!(%command, %status, "reload command failed"),
            Err(error) => {
                tracing::warn!(%command, error = %certd::error_kind::with_causes(&error), "cannot run the reload command")
            }
        }
    }
    Ok(true)
}

/// The DER of every CRL in a PEM document, each parsed and still valid.
fn check_crls(pem: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;
    let now = certd::clock::unix_seconds(super::now());
    let mut crls = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| anyhow::anyhow!("the CRLs are not PEM: {e}"))?;
        if block.label != "X509 CRL" {
            continue;
        }
        let (_, crl) = CertificateRevocationList::from_der(&block.contents)
            .map_err(|e| anyhow::anyhow!("a CRL does not parse: {e}"))?;
        if crl
            .next_update()
            .is_some_and(|next| next.timestamp() <= now)
        {
            anyhow::bail!(
                "certd served a CRL that has expired (nextUpdate passed); not writing it"
            );
        }
        crls.push(block.contents);
    }
    if crls.is_empty() {
        anyhow::bail!("certd's /crls.pem holds no CRL");
    }
    Ok(crls)
}

/// A CRL whose number is lower than the same issuer's in the file now is
/// an old one replayed (or a server restored from an old backup): refused,
/// so the file never goes back in time.
fn refuse_rollback(current_pem: &[u8], fetched: &[Vec<u8>]) -> anyhow::Result<()> {
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;
    let numbered = |der: &[u8]| -> Option<(Vec<u8>, x509_parser::num_bigint::BigUint)> {
        let (_, crl) = CertificateRevocationList::from_der(der).ok()?;
        Some((crl.issuer().as_raw().to_vec(), crl.crl_number()?.clone()))
    };
    let held: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(current_pem)
        .filter_map(Result::ok)
        .filter(|block| block.label == "X509 CRL")
        .filter_map(|block| numbered(&block.contents))
        .collect();
    for (issuer, number) in fetched.iter().filter_map(|der| numbered(der)) {
        if let Some((_, held_number)) = held.iter().find(|(held_issuer, _)| *held_issuer == issuer)
            && number < *held_number
        {
            anyhow::bail!(
                "certd served CRL number {number}, older than number {held_number} in the file; not writing it"
            );
        }
    }
    Ok(())
}

/// The CRLs of the bundle's CAs: each must be signed by a root of the
/// bundle or by an intermediate certd serves, itself signed by such a root,
/// and every root of the bundle must have one. A CRL of a CA the bundle
/// does not know (the next root's, while a root
/// rotation propagates to a relying party that has not fetched the new
/// bundle yet) is left out: that party trusts nothing under it. A CRL that
/// names a known CA but whose signature fails is refused.
fn verify_crls(
    crls: &[Vec<u8>],
    roots_pem: &str,
    intermediate_pem: &[u8],
) -> anyhow::Result<Vec<Vec<u8>>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::revocation_list::CertificateRevocationList;
    let certificates = |pem: &[u8]| -> Vec<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(pem)
            .filter_map(Result::ok)
            .filter(|block| block.label == "CERTIFICATE")
            .map(|block| block.contents)
            .collect()
    };
    let roots = certificates(roots_pem.as_bytes());
    let roots: Vec<X509Certificate> = roots
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    if roots.is_empty() {
        anyhow::bail!("--ca-bundle holds no certificate");
    }
    let intermediates = certificates(intermediate_pem);
    let intermediates: Vec<X509Certificate> = intermediates
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .filter(|intermediate| {
            roots.iter().any(|root| {
                intermediate
                    .verify_signature(Some(root.public_key()))
                    .is_ok()
            })
        })
        .collect();
    let mut kept = Vec::new();
    // Which of the bundle's roots a kept CRL is of.
    let mut root_has_crl = vec![false; roots.len()];
    for der in crls {
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| anyhow::anyhow!("a CRL does not parse: {e}"))?;
        let named: Vec<_> = roots
            .iter()
            .chain(intermediates.iter())
            .filter(|issuer| issuer.subject() == crl.issuer())
            .collect();
        if named.is_empty() {
            tracing::warn!(
                issuer = %crl.issuer(),
                "leaving out the CRL of a CA the trust bundle does not hold (refresh --ca-bundle from /bundle.pem)"
            );
            continue;
        }
        if !named
            .iter()
            .any(|issuer| crl.verify_signature(issuer.public_key()).is_ok())
        {
            anyhow::bail!(
                "the CRL of {} is not signed by the trust bundle's CAs; not writing it",
                crl.issuer()
            );
        }
        for (root, has_crl) in roots.iter().zip(root_has_crl.iter_mut()) {
            if root.subject() == crl.issuer() && crl.verify_signature(root.public_key()).is_ok() {
                *has_crl = true;
            }
        }
        kept.push(der.clone());
    }
    if kept.is_empty() {
        anyhow::bail!("none of certd's CRLs is of a CA in --ca-bundle; not writing them");
    }
    // A whole-chain checker refuses every certificate under a root whose
    // CRL it lacks: better the file as it is than one without it.
    if let Some((root, _)) = roots
        .iter()
        .zip(&root_has_crl)
        .find(|(_, has_crl)| !**has_crl)
    {
        anyhow::bail!(
            "certd's /crls.pem has no CRL of {}, a root in --ca-bundle; not writing the CRLs (if that root was retired, refresh --ca-bundle from /bundle.pem)",
            root.subject()
        );
    }
    Ok(kept)
}
