//! Operator commands: `init`, `token create`, `issue`, `list`, `show`,
//! `revoke`, `audit`, `operator issue`.
//!
//! They go through the running daemon's admin socket; `issue`, `list` and
//! `show` can instead open the data directory directly with `--offline` when
//! no daemon runs (CI).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{DataDirArg, JsonArg, UsageError, duration, format_time};
use certd::api::client::{AdminClient, AuditLine, IssuedCertificate, RevokeSummary};
use certd::authority::{
    Authority, Caller, CertificateSummary, CrlWait, Listing, ListingRequest, RevokeTarget,
    TokenFor, TokensToRevoke,
};
use certd::ca::RevocationReason;
use certd::ca::{self, InitOptions, KeyType};
use certd::clock::unix_seconds;
use certd::config::ConfigFile;
use certd::daemon::Daemon;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("for").required(true).args(["entry", "service"]))]
pub struct TokenCreateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Registration entry the tokens are for (its selectors must all be
    /// token:<label>).
    #[arg(long)]
    entry: Option<String>,
    /// Instead of --entry: the one entry of this service a token can satisfy.
    #[arg(long)]
    service: Option<String>,
    /// Lifetime of the token (default 1h).
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// Create this many tokens, one per line.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// One JSON object: `tokens`, `expires_at` (Unix seconds) and the
    /// `entry` they are for.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Only this service's tokens.
    #[arg(long)]
    service: Option<String>,
    /// A JSON array: `id`, `entry_id`, `service`, `selectors`, `created_at`
    /// and `expires_at` (Unix seconds).
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Ids from `certd token list` (or from the audit of their creation).
    #[arg(conflicts_with = "service", required_unless_present = "service")]
    ids: Vec<String>,
    /// Instead of ids: every unused token of this service.
    #[arg(long)]
    service: Option<String>,
    /// A JSON array of the tokens revoked.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Service to issue for.
    #[arg(long)]
    service: String,
    /// Directory to write key.pem, cert.pem and bundle.pem to.
    #[arg(long)]
    out: PathBuf,
    /// Lifetime of the certificate (default 24h).
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// Sign with the data directory's CA directly, without a daemon.
    #[arg(long)]
    offline: bool,
    /// Issue although no registration entry names the service (an ad-hoc CI name); without
    /// it, a service nobody registered (a typo) is refused.
    #[arg(long)]
    unregistered: bool,
    /// Let the certificate renew (`certd renew`); by default it does not, since it belongs to
    /// no entry and nothing else would ever end it.
    #[arg(long)]
    renewable: bool,
    /// With --offline: configuration file for lifetimes.
    #[arg(long, env = "CERTD_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Only this service's certificates.
    #[arg(long)]
    service: Option<String>,
    /// At most this many, the most recently issued that match the filters
    /// below; with --all, how many to ask for at a time.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Only certificates in this state: good, revoked or expired.
    #[arg(long, value_parser = ["good", "revoked", "expired"])]
    status: Option<String>,
    /// Only unexpired certificates that expire within this long (e.g. 2h):
    /// what is about to lapse if nothing renews it.
    #[arg(long, value_parser = duration)]
    expiring_within: Option<Duration>,
    /// Continue where a previous `certd list` stopped: the token it printed
    /// on its `more:` line (with the same filters).
    #[arg(long)]
    page_token: Option<String>,
    /// Every certificate that matches, page by page, however many (held in
    /// this command's memory to be printed in order).
    #[arg(long)]
    all: bool,
    /// One JSON array instead of a table (the `more:` line stays on
    /// stderr).
    #[arg(long)]
    pub(super) json: bool,
    /// Read the data directory directly, without a daemon.
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Serial number in hex; any case, colons allowed.
    serial: String,
    /// JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Read the data directory directly, without a daemon.
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["serial", "service", "lineage"]))]
pub struct RevokeArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Serial number in hex; any case, colons allowed.
    serial: Option<String>,
    /// Revoke every unexpired certificate of this service instead.
    #[arg(long)]
    service: Option<String>,
    /// Revoke every unexpired certificate of this serial's chain of renewals
    /// instead: those it was renewed from and those renewed from it (a key
    /// that may have been copied).
    #[arg(long, value_name = "SERIAL")]
    lineage: Option<String>,
    /// RFC 5280 reason: unspecified, key-compromise, affiliation-changed, superseded,
    /// cessation-of-operation or certificate-hold.
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    reason: RevocationReason,
    /// One JSON object: `certificates` (serial, service, revoked_at in Unix
    /// seconds, reason, newly_revoked) and `crl_number`.
    #[arg(long)]
    pub(super) json: bool,
    /// Answer once the revocation is durable and OCSP says revoked, without
    /// waiting for the CRL that lists it (certd builds it in the
    /// background, within about one CRL build time); `crl_number` is then 0.
    /// For revoking many certificates one by one.
    #[arg(long)]
    no_wait_crl: bool,
    /// Revoke in the data directory directly, with certd stopped (when it
    /// cannot start, or its host is being recovered); it publishes the CRL
    /// listing it when it next starts.
    #[arg(long)]
    offline: bool,
    /// With --offline: configuration file (its database and lifetimes).
    #[arg(long, env = "CERTD_CONFIG", requires = "offline")]
    config: Option<PathBuf>,
}

fn parse_reason(value: &str) -> Result<RevocationReason, String> {
    value.parse()
}

pub async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let target = match (&args.serial, &args.service, &args.lineage) {
        (Some(serial), _, _) => RevokeTarget::Serial(serial.clone()),
        (None, Some(service), _) => RevokeTarget::Service(service.clone()),
        (None, None, Some(serial)) => RevokeTarget::Lineage(serial.clone()),
        (None, None, None) => {
            return Err(UsageError("name a serial, --service or --lineage".into()).into());
        }
    };
    let wait = if args.no_wait_crl {
        CrlWait::No
    } else {
        CrlWait::UntilListed
    };
    let result = if args.offline {
        let authority = offline_authority(&args.data_dir, args.config.as_deref()).await?;
        let caller = Caller(format!("offline-cli uid={}", current_uid()));
        RevokeSummary::from(
            authority
                .revoke_target(&caller, &target, args.reason, wait)
                .await?,
        )
    } else {
        let mut client = args.target.connect(&args.data_dir).await?;
        client.revoke(&target, args.reason, wait).await?
    };
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    for revoked in &result.certificates {
        let verb = if revoked.newly_revoked {
            "revoked"
        } else {
            "already revoked"
        };
        println!(
            "{verb} {} ({}) at {} reason {}",
            revoked.serial,
            revoked.service,
            format_time(revoked.revoked_at),
            revoked.reason
        );
    }
    match wait {
        CrlWait::UntilListed => println!("published CRL number {}", result.crl_number),
        CrlWait::No => println!(
            "not waiting for the CRL: OCSP answers revoked now, the next CRL certd builds lists it"
        ),
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Only entries since this long ago (e.g. 1h) or this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// At most this many entries, the most recent; the filters below apply
    /// to these.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Only this event (repeat for several), e.g. issue, revoke,
    /// mint-access-token, exchange-token.
    #[arg(long = "event", value_parser = parse_event)]
    events: Vec<String>,
    /// Only decisions about this service.
    #[arg(long)]
    service: Option<String>,
    /// Only refusals.
    #[arg(long)]
    denied: bool,
    /// One JSON array instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Read the data directory directly, without a daemon.
    #[arg(long)]
    offline: bool,
}

/// An audit event's name, as `certd audit` prints it.
fn parse_event(value: &str) -> Result<String, String> {
    certd::model::AuditEvent::from_name(value)
        .map(|event| event.as_str().to_owned())
        .ok_or_else(|| {
            let known: Vec<&str> = certd::model::AuditEvent::ALL
                .iter()
                .map(|event| event.as_str())
                .collect();
            format!("not an audit event; one of: {}", known.join(", "))
        })
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let since = match &args.since {
        None => 0,
        Some(text) => parse_since(text)?,
    };
    let lines = if args.offline {
        let authority = offline_authority(&args.data_dir, None).await?;
        authority
            .store()
            .audit_since(since, args.limit as usize)
            .await
            .map_err(certd::Error::from)?
            .into_iter()
            .map(AuditLine::from)
            .collect()
    } else {
        let mut client = args.target.connect(&args.data_dir).await?;
        client.audit(since, args.limit).await?
    };
    let lines: Vec<AuditLine> = lines
        .into_iter()
        .filter(|line| args.events.is_empty() || args.events.contains(&line.event))
        .filter(|line| args.service.as_ref().is_none_or(|s| &line.service == s))
        .filter(|line| !args.denied || !line.allowed)
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&lines)?);
        return Ok(());
    }
    for line in &lines {
        let decision = if line.allowed { "allow" } else { "deny" };
        let mut text = format!(
            "{} {decision} {} by {}",
            format_time(line.at),
            line.event,
            line.caller
        );
        for (label, value) in [
            ("attestation", &line.attestation),
            ("service", &line.service),
            ("serial", &line.serial),
        ] {
            if !value.is_empty() {
                text.push_str(&format!(" {label}={value}"));
            }
        }
        if !line.selectors.is_empty() {
            text.push_str(&format!(" selectors=[{}]", line.selectors.join(",")));
        }
        if !line.reason.is_empty() {
            text.push_str(&format!(": {}", line.reason));
        }
        println!("{text}");
    }
    Ok(())
}

/// `1h` (that long ago) or an RFC 3339 time, as Unix seconds.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(ago) = certd::config::parse_duration(text) {
        let now = unix_seconds(super::now());
        return Ok(now - i64::try_from(ago.as_secs()).unwrap_or(i64::MAX / 2));
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        UsageError(format!(
            "--since {text:?} is neither a duration like 1h nor an RFC 3339 time"
        ))
    })?;
    Ok(unix_seconds(time))
}

pub fn init(
    dir: &Path,
    trust_domain: &str,
    key_type: KeyType,
    key_passphrase_file: Option<&Path>,
    pkcs11: &super::Pkcs11InitArgs,
    public_base_url: &str,
    intermediate_lifetime: std::time::Duration,
) -> anyhow::Result<InitReport> {
    if intermediate_lifetime < std::time::Duration::from_secs(30)
        || intermediate_lifetime > std::time::Duration::from_secs(5 * 365 * 24 * 3600)
    {
        return Err(super::UsageError(format!(
            "--intermediate-lifetime {} must be between 30s and 5y",
            humantime::format_duration(intermediate_lifetime)
        ))
        .into());
    }
    let public_base_url =
        certd::config::check_base_url(public_base_url).map_err(certd::Error::InvalidArgument)?;
    let key_passphrase = key_passphrase_file
        .map(certd::ca::KeyPassphrase::from_file)
        .transpose()
        .map_err(certd::Error::from)?;
    // The intermediate key in a PKCS#11 token, with the PIN to make it.
    let (intermediate_key_in, pkcs11_pin) = match (
        &pkcs11.pkcs11_module,
        &pkcs11.pkcs11_token,
        &pkcs11.pkcs11_pin_file,
    ) {
        (Some(module), Some(token), Some(pin_file)) => {
            let key_ref = certd::ca::Pkcs11KeyRef::new(module, token, &pkcs11.pkcs11_key_label)
                .map_err(certd::Error::InvalidArgument)?;
            let pin = certd::ca::Pkcs11Pin::from_file(pin_file).map_err(certd::Error::from)?;
            (Some(certd::ca::KeyRecord::Pkcs11(key_ref)), Some(pin))
        }
        _ => (None, None),
    };
    let options = InitOptions {
        trust_domain: trust_domain.parse().map_err(certd::Error::from)?,
        key_type,
        secrets: certd::ca::KeySecrets {
            passphrase: key_passphrase,
            pkcs11_pin,
        },
        intermediate_key_in,
        public_base_url,
        intermediate_lifetime,
    };
    let metadata = ca::init(dir, &options, super::now()).map_err(certd::Error::from)?;
    // The CA's store marks, before any database: a CA whose marks later go
    // missing is refused rather than served from whatever database it finds.
    let marks_path = certd::DataDir::new(dir).store_marks();
    certd::store::marks::MarksFile::for_new_ca()
        .write(&marks_path)
        .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", marks_path.display()))?;
    // The JWT-SVID master secret, beside the CA keys (see certd::jwt).
    certd::jwt::JwtKeys::load_or_create(
        &certd::DataDir::new(dir).jwt_master_key(),
        certd::config::JwtSettings::default().schedule(),
        certd::config::JwtSettings::default().algorithm,
    )
    .map_err(certd::Error::from)?;
    Ok(InitReport {
        trust_domain: metadata.trust_domain.to_string(),
        data_dir: dir.to_owned(),
        bundle: certd::DataDir::new(dir).bundle(),
    })
}

/// What `certd init` made.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub trust_domain: String,
    pub data_dir: PathBuf,
    /// The trust bundle workloads and relying parties need.
    pub bundle: PathBuf,
}

pub async fn token_create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let target = match (args.entry, args.service) {
        (Some(id), _) => TokenFor::Entry(id),
        (None, Some(service)) => TokenFor::Service(service),
        (None, None) => return Err(UsageError("name --entry or --service".into()).into()),
    };
    let created = client
        .create_join_tokens(&target, args.ttl, args.count)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string(&created)?);
        return Ok(());
    }
    for token in created.tokens {
        println!("{token}");
    }
    Ok(())
}

pub async fn token_list(args: TokenListArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let tokens = client.join_tokens(args.service.as_deref()).await?;
    print_tokens(&tokens, args.json)
}

pub async fn token_revoke(args: TokenRevokeArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let which = match args.service {
        Some(service) => TokensToRevoke::Service(service),
        None => TokensToRevoke::Ids(args.ids),
    };
    let revoked = client.revoke_join_tokens(&which).await?;
    if !args.json {
        eprintln!("revoked {} unused join token(s)", revoked.len());
    }
    print_tokens(&revoked, args.json)
}

/// One line per token (id, service, expiry, selectors), or a JSON array.
fn print_tokens(tokens: &[certd::authority::JoinTokenView], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(tokens)?);
        return Ok(());
    }
    for token in tokens {
        println!(
            "{}  {}  expires {}  {}",
            token.id,
            token.service.as_deref().unwrap_or("(no entry)"),
            format_time(token.expires_at),
            token.selectors.join(",")
        );
    }
    Ok(())
}

pub async fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let (key, csr_der) = super::workload::new_key_and_csr()?;
    let options = certd::authority::OperatorIssue {
        unregistered: args.unregistered,
        renewable: args.renewable,
    };
    let summary = if args.offline {
        let authority = offline_authority(&args.data_dir, args.config.as_deref()).await?;
        let caller = Caller(format!("offline-cli uid={}", current_uid()));
        let issued = authority
            .issue_for_operator(&caller, &args.service, &csr_der, args.ttl, options)
            .await?;
        authority.summary(&issued.record, unix_seconds(super::now()))
    } else {
        let mut client = args.target.connect(&args.data_dir).await?;
        client
            .issue(&args.service, csr_der, args.ttl, options)
            .await?
    };
    write_summary(&args.out, &key, &summary, args.output)
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut lister = if args.offline {
        Lister::Offline(offline_authority(&args.data_dir, None).await?)
    } else {
        Lister::Online(args.target.connect(&args.data_dir).await?)
    };
    let mut request = ListingRequest {
        service: args.service.clone(),
        status: args.status.clone(),
        expiring_within: args.expiring_within,
        page_token: args.page_token.clone(),
        limit: args.limit as usize,
    };
    // A filtered page may come back short after a bounded walk: ask again
    // until `--limit` certificates match, or (with --all) until the end.
    let wanted = args.limit as usize;
    let mut certificates = Vec::new();
    loop {
        if !args.all {
            request.limit = wanted - certificates.len();
        }
        let page = lister.page(&request).await?;
        certificates.extend(page.certificates);
        request.page_token = page.next_page_token;
        if request.page_token.is_none() || (!args.all && certificates.len() >= wanted) {
            break;
        }
    }
    certificates.sort_by(|a, b| (a.issued_at, &a.serial).cmp(&(b.issued_at, &b.serial)));
    if let Some(token) = &request.page_token {
        // On stderr, so that stdout stays the table or the JSON array it
        // always was; the line is the command that lists the next page.
        eprintln!("more: {}", next_page_command(&args, token));
    }
    if args.json {
        println!("{}", serde_json::to_string(&certificates)?);
        return Ok(());
    }
    println!(
        "{:<40}  {:<20}  {:<8}  {:<20}  ATTESTATION",
        "SERIAL", "SERVICE", "STATUS", "NOT AFTER"
    );
    for certificate in &certificates {
        println!(
            "{:<40}  {:<20}  {:<8}  {:<20}  {}",
            certificate.serial,
            certificate.service,
            certificate.status,
            format_time(certificate.not_after),
            certificate.attestation
        );
    }
    Ok(())
}

/// Where `certd list` reads: the daemon, or the data directory offline.
enum Lister {
    Online(AdminClient),
    Offline(Authority),
}

impl Lister {
    async fn page(&mut self, request: &ListingRequest) -> anyhow::Result<Listing> {
        Ok(match self {
            Lister::Online(client) => client.list_page(request).await?,
            Lister::Offline(authority) => authority.listing(request).await?,
        })
    }
}

/// The `certd list` command line that lists the page after this one.
fn next_page_command(args: &ListArgs, token: &str) -> String {
    let mut command = vec!["certd list".to_owned()];
    if let Some(service) = &args.service {
        command.push(format!("--service {service}"));
    }
    if let Some(status) = &args.status {
        command.push(format!("--status {status}"));
    }
    if let Some(window) = args.expiring_within {
        command.push(format!("--expiring-within {}s", window.as_secs()));
    }
    command.push(format!("--limit {}", args.limit));
    if args.json {
        command.push("--json".into());
    }
    if args.offline {
        command.push("--offline".into());
    }
    command.push(format!("--page-token {token}"));
    command.join(" ")
}

pub async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let summary = if args.offline {
        let authority = offline_authority(&args.data_dir, None).await?;
        let record = authority.certificate(&args.serial).await?;
        authority.summary(&record, unix_seconds(super::now()))
    } else {
        let mut client = args.target.connect(&args.data_dir).await?;
        client.show(&args.serial).await?
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

fn print_summary(summary: &CertificateSummary) {
    println!("serial:       {}", summary.serial);
    println!("service:      {}", summary.service);
    println!("status:       {}", summary.status);
    println!("dns names:    {}", summary.dns_names.join(", "));
    println!("uris:         {}", summary.uris.join(", "));
    println!("not before:   {}", format_time(summary.not_before));
    println!("not after:    {}", format_time(summary.not_after));
    println!("issued at:    {}", format_time(summary.issued_at));
    println!("attestation:  {}", summary.attestation);
    if let Some(entry_id) = &summary.entry_id {
        println!("entry:        {entry_id}");
    }
    if let Some(renewed_from) = &summary.renewed_from {
        println!("renewed from: {renewed_from}");
    }
    println!("sha256:       {}", summary.sha256_fingerprint);
    print!("{}", summary.certificate_pem);
}

/// Where an admin command goes: the local socket of the data directory, or
/// a remote certd over mTLS with an operator certificate.
#[derive(Debug, Args, Clone)]
pub struct AdminTarget {
    /// Use the admin API of the certd at this gRPC URL, over mTLS, instead
    /// of the local admin socket.
    #[arg(long = "server", env = "CERTD_ADMIN_SERVER")]
    server: Option<String>,
    /// With --server: the operator certificate chain (PEM).
    #[arg(long, env = "CERTD_ADMIN_CERT", requires = "server")]
    cert: Option<PathBuf>,
    /// With --server: the operator's private key (PEM).
    #[arg(long, env = "CERTD_ADMIN_KEY", requires = "server")]
    key: Option<PathBuf>,
    /// With --server: roots to trust for certd; default DATA_DIR/bundle.pem.
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
}

impl AdminTarget {
    pub(super) async fn connect(&self, data_dir: &DataDirArg) -> anyhow::Result<AdminClient> {
        let Some(server) = &self.server else {
            return Ok(AdminClient::connect(&data_dir.dir().admin_socket()).await?);
        };
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Err(UsageError(
                "--server needs --cert and --key (an operator certificate)".into(),
            )
            .into());
        };
        let bundle = self
            .ca_bundle
            .clone()
            .unwrap_or_else(|| data_dir.dir().bundle());
        let tls = certd::api::client::TlsClientSettings {
            ca_bundle_pem: super::workload::read(&bundle)?,
            identity: Some((
                super::workload::read(cert)?,
                zeroize::Zeroizing::new(super::workload::read(key)?),
            )),
        };
        Ok(AdminClient::connect_remote(server, &tls).await?)
    }
}

#[derive(Debug, Args)]
pub struct OperatorIssueArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The operator's name: the certificate is for spiffe://<trust-domain>/operator/<name>.
    #[arg(long)]
    name: String,
    /// Directory to write key.pem, cert.pem and bundle.pem to.
    #[arg(long)]
    out: PathBuf,
    /// Lifetime of the certificate (default 24h).
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

pub async fn operator_issue(args: OperatorIssueArgs) -> anyhow::Result<()> {
    let (key, csr_der) = super::workload::new_key_and_csr()?;
    let mut client = args.target.connect(&args.data_dir).await?;
    let summary = client.issue_operator(&args.name, csr_der, args.ttl).await?;
    write_summary(&args.out, &key, &summary, args.output)
}

/// Writes the key and a certificate the admin API returned into `dir`.
fn write_summary(
    dir: &Path,
    key: &rcgen::KeyPair,
    summary: &CertificateSummary,
    output: JsonArg,
) -> anyhow::Result<()> {
    let issued = IssuedCertificate {
        serial: summary.serial.clone(),
        certificate_pem: summary.certificate_pem.clone(),
        chain_pem: summary.chain_pem.clone(),
        trust_bundle_pem: summary.trust_bundle_pem.clone(),
        not_after: summary.not_after,
        spiffe_id: summary.uris.first().cloned().unwrap_or_default(),
        // `certd issue` names no entry, so no federation.
        federated_bundles: Vec::new(),
    };
    super::workload::write_identity(dir, key, &issued)?;
    super::workload::report(&issued, dir, output)
}

/// The authority over the data directory itself, for when no daemon runs.
/// Fails clearly if a daemon holds the database.
async fn offline_authority(
    data_dir: &DataDirArg,
    config: Option<&Path>,
) -> anyhow::Result<Authority> {
    let mut file = ConfigFile::load(config)?;
    super::use_database(
        &mut file,
        std::env::var("CERTD_DATABASE_URL").ok(),
        &data_dir.dir(),
    )?;
    let config = file.validate()?;
    Daemon::new(data_dir.dir(), config)
        .offline()
        .await
        .map_err(|error| match error {
            certd::Error::Store(certd::store::StoreError::Locked(_)) => anyhow::Error::new(error)
                .context(UsageError(
                    "certd serve is running on this data directory; drop --offline to go through its admin socket".into(),
                )),
            other => other.into(),
        })
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the process's effective user.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}
