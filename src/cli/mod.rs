//! The command line: one binary for the daemon, operators, workloads and CI.
//!
//! `cli` is the only module that knows clap. It turns arguments into calls
//! on the library and maps every failure to one line and an exit code, in
//! `exit_code`.

mod acme;
mod admin;
mod agent;
mod bench;
mod ca;
mod clock;
mod db;
mod entry;
mod federation;
mod inspect;
mod jwt;
mod load;
mod policy;
mod progress;
mod renew;
mod replica;
mod serve;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use certd::ErrorKind;
use certd::api::client::ClientError;
use certd::ca::KeyType;

/// Exit codes, documented in docs/reference/exit-codes.md.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const INVALID_INPUT: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const REFUSED: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const UNTRUSTED: u8 = 6;
}

#[derive(Debug, Parser)]
#[command(
    name = "certd",
    version,
    about = "An internal certificate authority daemon: short-lived X.509 identities for workloads"
)]
pub struct Cli {
    /// Log format of the daemon and the CLI (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CERTD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--json`, for a command whose output is data: one JSON document on
/// stdout instead of text, its times in Unix seconds (docs/reference/commands.md).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct JsonArg {
    /// Print one JSON object instead of text (times in Unix seconds); a failure is one JSON
    /// object on stderr.
    #[arg(long)]
    pub json: bool,
}

impl JsonArg {
    /// Prints `value` as one line of JSON when `--json` was given, else
    /// runs `text`, which prints it for a person.
    pub fn print(
        self,
        value: &impl serde::Serialize,
        text: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(value)?);
            Ok(())
        } else {
            text()
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct DataDirArg {
    /// The CA's data directory.
    #[arg(long, env = "CERTD_DATA_DIR", default_value = certd::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl DataDirArg {
    pub fn dir(&self) -> certd::DataDir {
        certd::DataDir::new(&self.data_dir)
    }
}

/// `certd init`'s choice of a PKCS#11 token for the intermediate key.
#[derive(Debug, clap::Args)]
pub struct Pkcs11InitArgs {
    /// Generate the intermediate key in a PKCS#11 token, through this library (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so); the key never leaves the token.
    #[arg(long, requires_all = ["pkcs11_token", "pkcs11_pin_file"])]
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the token to generate the key in.
    #[arg(long, requires = "pkcs11_module")]
    pub pkcs11_token: Option<String>,
    /// Label of the key pair to generate (it must not exist yet).
    #[arg(long, default_value = "certd-intermediate", requires = "pkcs11_module")]
    pub pkcs11_key_label: String,
    /// File whose first line is the token's user PIN; `certd serve` needs it too.
    #[arg(long, env = "CERTD_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new CA (root and intermediate) in the data directory.
    Init {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Trust domain of every identity this CA issues.
        #[arg(long, default_value = "certd.internal")]
        trust_domain: String,
        /// Algorithm of the CA's keys.
        #[arg(long, value_enum, default_value_t = KeyTypeArg::EcdsaP256)]
        key_type: KeyTypeArg,
        /// Encrypt the root and intermediate keys at rest (PKCS#8, PBKDF2 and AES-256) with the
        /// passphrase in --key-passphrase-file; `certd serve` then needs the same file.
        #[arg(long, requires = "key_passphrase_file")]
        encrypt_key: bool,
        /// File whose first line is the key passphrase.
        #[arg(long, env = "CERTD_KEY_PASSPHRASE_FILE")]
        key_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        pkcs11: Pkcs11InitArgs,
        /// The HTTP base URL relying parties reach certd at (as `public_base_url`): the
        /// intermediate certificate names the root's CRL and certificate under it.
        #[arg(
            long,
            env = "CERTD_PUBLIC_BASE_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        public_base_url: String,
        /// How long the intermediate lives; rotations keep it. Between 30s and 5y.
        #[arg(long, value_parser = duration, default_value = "365d")]
        intermediate_lifetime: std::time::Duration,
        #[command(flatten)]
        output: JsonArg,
    },
    /// Run the daemon (creates a CA with the defaults if there is none).
    Serve(serve::ServeArgs),
    /// Manage join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Registration entries: which identity a workload proving some selectors gets.
    Entry {
        #[command(subcommand)]
        command: EntryCommand,
    },
    /// Federation with other trust domains: whose SPIFFE bundles certd fetches.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// The ACME server: EAB keys for entries, their ACME policy, accounts and orders.
    Acme {
        #[command(subcommand)]
        command: acme::AcmeCommand,
    },
    /// Workload: get a first certificate with a join token or a Kubernetes service-account token.
    Request(workload::RequestArgs),
    /// Workload: renew the certificate in a directory over mTLS, with a fresh key (once, when
    /// due with --if-needed, or continuously with --daemon).
    Renew(renew::RenewArgs),
    /// Node agent: serve the SPIFFE Workload API on a Unix socket to this node's workloads,
    /// attested by the kernel (uid, gid, executable), with SVIDs kept fresh.
    Agent(agent::AgentArgs),
    /// Workload: fetch this process's X.509-SVID from the local agent's Workload API into PEM
    /// files (for software that reads files; SPIFFE libraries talk to the socket themselves).
    Svid {
        #[command(subcommand)]
        command: SvidCommand,
    },
    /// Show a certificate as certd sees it: identity, validity, and its status from certd.
    Inspect(inspect::InspectArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(inspect::CompletionArgs),
    /// The token policy: which caller may get access tokens from the token endpoint for which
    /// audience and scopes (default deny). Kept as a file: show, check, apply, explain.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// JWT-SVIDs: mint one with a workload's certificate, or verify one against the trust
    /// domain's keys.
    Jwt {
        #[command(subcommand)]
        command: JwtCommand,
    },
    /// CI: issue a certificate for a service straight into a directory.
    Issue(admin::IssueArgs),
    /// List issued certificates.
    List(admin::ListArgs),
    /// Show one certificate by serial (hex, any case, colons allowed).
    Show(admin::ShowArgs),
    /// Revoke a certificate by serial, or every certificate of a service.
    Revoke(admin::RevokeArgs),
    /// Operator certificates for the admin API over mTLS.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Show the audit trail: every decision, newest last.
    Audit(admin::AuditArgs),
    /// Load a running certd and report throughput and latency.
    Bench(bench::BenchArgs),
    /// The CA level, where the root key is: sign the root's CRL, revoke an intermediate.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// CRLs for relying parties: keep a CRL file fresh.
    Crl {
        #[command(subcommand)]
        command: CrlCommand,
    },
    /// The database: check it, back it up, restore it.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Replicas on one PostgreSQL database: package the CA files a replica needs where the CA
    /// lives, and set a replica up (or bring it up to date after a rotation) from the package.
    Replica {
        #[command(subcommand)]
        command: replica::ReplicaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create one-time join tokens for a registration entry; prints only the tokens, one per line.
    Create(admin::TokenCreateArgs),
    /// List the unused join tokens (ids, never secrets: certd keeps none), oldest first.
    List(admin::TokenListArgs),
    /// Revoke unused join tokens by id, or every one of a service; none can be used afterwards.
    Revoke(admin::TokenRevokeArgs),
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Create an entry; prints its id.
    Create(entry::EntryCreateArgs),
    /// Change what the flags name of an entry (its selectors, SPIFFE ID, DNS names, TTL,
    /// parent, JWT audiences); the rest stays. Its certificates get the new names when
    /// they renew.
    Update(entry::EntryUpdateArgs),
    /// List entries.
    List(entry::EntryListArgs),
    /// Show one entry: everything it grants, who made it and when.
    Show(entry::EntryShowArgs),
    /// Delete an entry: no new certificates for it, and its certificates stop renewing.
    Delete(entry::EntryDeleteArgs),
}

#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Add a relationship with another trust domain: certd fetches its bundle from its
    /// bundle endpoint.
    Add(federation::FederationAddArgs),
    /// List the relationships, with the sequence and age of each bundle held.
    List(federation::FederationListArgs),
    /// Show one relationship and the bundle held.
    Show(federation::FederationShowArgs),
    /// Remove a relationship: its bundle is no longer fetched nor handed out.
    Remove(federation::FederationRemoveArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy in force as a policy file (TOML `[[grant]]` and `[[delegation]]`
    /// tables).
    Show(policy::PolicyShowArgs),
    /// Check a policy file without applying it (no daemon needed); exit 2 if it is not valid.
    Check(policy::PolicyCheckArgs),
    /// Replace the whole policy with a file; nothing changes if it is not valid.
    Apply(policy::PolicyApplyArgs),
    /// Add one grant, or replace the grant of that name.
    Grant(policy::PolicyGrantArgs),
    /// Remove one grant by name; exit 5 if there is none.
    Revoke(policy::PolicyRevokeArgs),
    /// What the token endpoint would answer a caller asking for an audience and scopes, and the
    /// rule that decides; exit 4 if it would refuse.
    Explain(policy::PolicyExplainArgs),
}

#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Print a JWT-SVID for the workload identity in --dir (mTLS with its certificate).
    Mint(jwt::MintArgs),
    /// Check a JWT-SVID for an audience; prints its SPIFFE ID and expiry, exit 4 if invalid.
    Verify(jwt::VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Sign a new root CRL (root.crl, covering the intermediates) with the root key in the
    /// data directory; the daemon serves the new file at once.
    SignRootCrl(ca::SignRootCrlArgs),
    /// Put an intermediate on the root CRL and sign it again.
    RevokeIntermediate(ca::RevokeIntermediateArgs),
    /// Prepare the next root (root-next.pem, root-next.key) and add it to bundle.pem, so
    /// that workloads trust it long before anything is signed under it.
    RotateRoot(ca::RotateRootArgs),
    /// Prepare the next intermediate (intermediate-next.pem, intermediate-next.key), signed by
    /// the root key in the data directory; a running certd signs with it within seconds and
    /// keeps answering for the previous one until its certificates have expired.
    RotateIntermediate(ca::RotateIntermediateArgs),
    /// Make the next root the root and drop the old one from bundle.pem, once the
    /// intermediate is signed under the next root and nothing signed under the old one lives.
    RetireRoot(ca::RetireRootArgs),
}

impl Command {
    /// Whether `--json` was given: the command prints one JSON document on
    /// stdout, and a failure as one JSON object on stderr (`main`).
    pub fn json(&self) -> bool {
        match self {
            Command::Init { output, .. } => output.json,
            Command::Token { command } => match command {
                TokenCommand::Create(args) => args.json,
                TokenCommand::List(args) => args.json,
                TokenCommand::Revoke(args) => args.json,
            },
            Command::Entry { command } => match command {
                EntryCommand::Create(args) => args.content.json,
                EntryCommand::Update(args) => args.changes.json,
                EntryCommand::List(args) => args.json,
                EntryCommand::Show(args) => args.json,
                EntryCommand::Delete(args) => args.output.json,
            },
            Command::Acme { command } => command.json(),
            Command::Federation { command } => match command {
                FederationCommand::Add(args) => args.output.json,
                FederationCommand::List(args) => args.output.json,
                FederationCommand::Show(args) => args.output.json,
                FederationCommand::Remove(args) => args.output.json,
            },
            Command::Request(args) => args.output.json,
            Command::Renew(args) => args.output.json,
            Command::Svid {
                command: SvidCommand::Fetch(args),
            } => args.output.json,
            Command::Inspect(args) => args.json,
            Command::Policy { command } => match command {
                PolicyCommand::Show(args) => args.output.json,
                PolicyCommand::Check(args) => args.output.json,
                PolicyCommand::Apply(args) => args.output.json,
                PolicyCommand::Grant(args) => args.output.json,
                PolicyCommand::Revoke(args) => args.output.json,
                PolicyCommand::Explain(args) => args.json,
            },
            Command::Jwt { command } => match command {
                JwtCommand::Mint(args) => args.output.json,
                JwtCommand::Verify(args) => args.output.json,
            },
            Command::Issue(args) => args.output.json,
            Command::List(args) => args.json,
            Command::Show(args) => args.json,
            Command::Revoke(args) => args.json,
            Command::Operator {
                command: OperatorCommand::Issue(args),
            } => args.output.json,
            Command::Audit(args) => args.json,
            Command::Bench(args) => args.json,
            Command::Ca { command } => match command {
                CaCommand::SignRootCrl(args) => args.output.json,
                CaCommand::RevokeIntermediate(args) => args.output.json,
                CaCommand::RotateRoot(args) => args.output.json,
                CaCommand::RotateIntermediate(args) => args.output.json,
                CaCommand::RetireRoot(args) => args.output.json,
            },
            Command::Db { command } => command.json(),
            Command::Replica { command } => command.json(),
            Command::Serve(_)
            | Command::Agent(_)
            | Command::Completion(_)
            | Command::Crl { .. } => false,
        }
    }

    /// Whether the command keeps running (a daemon, a loop, a load): its
    /// log is its report, at `info`. One-shot commands report by their
    /// output and exit code, and log only warnings and errors by default.
    pub fn keeps_running(&self) -> bool {
        match self {
            Command::Serve(_) | Command::Agent(_) | Command::Bench(_) => true,
            Command::Renew(args) => args.daemon,
            Command::Crl {
                command: CrlCommand::Sync(args),
            } => args.every.is_some(),
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CrlCommand {
    /// Fetch certd's /crls.pem into a file when it changes, and run a reload command then;
    /// keeps the file as it is while certd cannot be reached.
    Sync(ca::CrlSyncArgs),
}

#[derive(Debug, Subcommand)]
pub enum SvidCommand {
    Fetch(agent::SvidFetchArgs),
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Issue an operator certificate (spiffe://<trust-domain>/operator/<name>).
    Issue(admin::OperatorIssueArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyTypeArg {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl From<KeyTypeArg> for KeyType {
    fn from(value: KeyTypeArg) -> Self {
        match value {
            KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
            KeyTypeArg::EcdsaP384 => KeyType::EcdsaP384,
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            data_dir,
            trust_domain,
            key_type,
            encrypt_key,
            key_passphrase_file,
            pkcs11,
            public_base_url,
            intermediate_lifetime,
            output,
        } => {
            let created = admin::init(
                &data_dir.data_dir,
                &trust_domain,
                key_type.into(),
                key_passphrase_file.as_deref().filter(|_| encrypt_key),
                &pkcs11,
                &public_base_url,
                intermediate_lifetime,
            )?;
            output.print(&created, || {
                println!(
                    "created a CA for trust domain {} in {}; trust bundle: {}",
                    created.trust_domain,
                    created.data_dir.display(),
                    created.bundle.display()
                );
                Ok(())
            })
        }
        Command::Serve(args) => serve::serve(args).await,
        Command::Token { command } => match command {
            TokenCommand::Create(args) => admin::token_create(args).await,
            TokenCommand::List(args) => admin::token_list(args).await,
            TokenCommand::Revoke(args) => admin::token_revoke(args).await,
        },
        Command::Acme { command } => acme::run(command).await,
        Command::Federation { command } => match command {
            FederationCommand::Add(args) => federation::add(args).await,
            FederationCommand::List(args) => federation::list(args).await,
            FederationCommand::Show(args) => federation::show(args).await,
            FederationCommand::Remove(args) => federation::remove(args).await,
        },
        Command::Entry { command } => match command {
            EntryCommand::Create(args) => entry::create(args).await,
            EntryCommand::Update(args) => entry::update(args).await,
            EntryCommand::List(args) => entry::list(args).await,
            EntryCommand::Show(args) => entry::show(args).await,
            EntryCommand::Delete(args) => entry::delete(args).await,
        },
        Command::Request(args) => workload::request(args).await,
        Command::Renew(args) => renew::renew(args).await,
        Command::Agent(args) => agent::agent(args).await,
        Command::Svid {
            command: SvidCommand::Fetch(args),
        } => agent::svid_fetch(args).await,
        Command::Inspect(args) => inspect::inspect(args).await,
        Command::Completion(args) => inspect::completion(args),
        Command::Policy { command } => match command {
            PolicyCommand::Show(args) => policy::show(args).await,
            PolicyCommand::Check(args) => policy::check(args),
            PolicyCommand::Apply(args) => policy::apply(args).await,
            PolicyCommand::Grant(args) => policy::grant(args).await,
            PolicyCommand::Revoke(args) => policy::revoke(args).await,
            PolicyCommand::Explain(args) => policy::explain(args).await,
        },
        Command::Jwt { command } => match command {
            JwtCommand::Mint(args) => jwt::mint(args).await,
            JwtCommand::Verify(args) => jwt::verify(args).await,
        },
        Command::Issue(args) => admin::issue(args).await,
        Command::List(args) => admin::list(args).await,
        Command::Show(args) => admin::show(args).await,
        Command::Revoke(args) => admin::revoke(args).await,
        Command::Bench(args) => bench::bench(args).await,
        Command::Audit(args) => admin::audit(args).await,
        Command::Db { command } => db::run(command).await,
        Command::Replica { command } => replica::run(command),
        Command::Ca {
            command: CaCommand::SignRootCrl(args),
        } => ca::sign_root_crl(args),
        Command::Ca {
            command: CaCommand::RevokeIntermediate(args),
        } => ca::revoke_intermediate(args),
        Command::Ca {
            command: CaCommand::RotateRoot(args),
        } => ca::rotate_root(args),
        Command::Ca {
            command: CaCommand::RotateIntermediate(args),
        } => ca::rotate_intermediate(args),
        Command::Ca {
            command: CaCommand::RetireRoot(args),
        } => ca::retire_root(args),
        Command::Crl {
            command: CrlCommand::Sync(args),
        } => ca::crl_sync(args).await,
        Command::Operator {
            command: OperatorCommand::Issue(args),
        } => admin::operator_issue(args).await,
    }
}

/// The time of day for commands that act on it (rotation windows,
/// expiries, renewal): the system's. In debug builds, which only tests run,
/// `CERTD_TEST_CLOCK_AHEAD` (a duration, `3s`) sets it that far ahead, so a
/// test steps past a propagation window instead of sleeping through it;
/// release builds have no such knob.
pub fn now() -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    #[cfg(debug_assertions)]
    if let Some(ahead) = std::env::var("CERTD_TEST_CLOCK_AHEAD")
        .ok()
        .and_then(|ahead| humantime::parse_duration(&ahead).ok())
    {
        return now + ahead;
    }
    now
}

/// The database a command uses: `--database-url` or `CERTD_DATABASE_URL`,
/// over `[store] url`, over the data directory's `database.toml` (written
/// by `certd replica import`); sled in the data directory if none names one.
pub fn use_database(
    file: &mut certd::config::ConfigFile,
    url: Option<String>,
    data_dir: &certd::DataDir,
) -> Result<(), certd::config::ConfigError> {
    if let Some(url) = url {
        file.store.get_or_insert_with(Default::default).url = Some(url);
    }
    file.use_data_dir_database(data_dir)
}

/// The one mapping from failures to exit codes.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error_kind(error).map_or(exit::FAILURE, exit_code_of)
}

/// The kind of a failure, if it is one certd classifies (`None`: exit 1).
pub fn error_kind(error: &anyhow::Error) -> Option<ErrorKind> {
    error.chain().find_map(kind_of)
}

/// The exit code of each kind of error, as docs/reference/exit-codes.md documents them.
pub fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => exit::INVALID_INPUT,
        ErrorKind::Unauthenticated | ErrorKind::PermissionDenied | ErrorKind::AlreadyExists => {
            exit::REFUSED
        }
        ErrorKind::NotFound => exit::NOT_FOUND,
        ErrorKind::Exhausted | ErrorKind::Unavailable => exit::UNREACHABLE,
        ErrorKind::FailedPrecondition | ErrorKind::Internal => exit::FAILURE,
        ErrorKind::Untrusted => exit::UNTRUSTED,
    }
}

/// The classification of one error in a chain, if it is one of certd's.
fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if let Some(client) = cause.downcast_ref::<ClientError>() {
        return Some(client.kind());
    }
    if cause.downcast_ref::<jwt::Invalid>().is_some() {
        return Some(ErrorKind::Unauthenticated);
    }
    if let Some(agent) = cause.downcast_ref::<certd::agent::AgentError>() {
        return Some(agent.kind());
    }
    if let Some(serve) = cause.downcast_ref::<certd::daemon::ServeError>() {
        return Some(serve.kind());
    }
    if let Some(refusal) = cause.downcast_ref::<Refusal>() {
        return Some(refusal.kind);
    }
    if let Some(bench) = cause.downcast_ref::<load::BenchError>() {
        return Some(bench.kind());
    }
    if let Some(certd) = cause.downcast_ref::<certd::Error>() {
        return Some(certd.kind());
    }
    // Offline database commands meet the store's own errors (a database
    // held by a running certd is `Unavailable`: exit 3).
    if let Some(store) = cause.downcast_ref::<certd::store::StoreError>() {
        return Some(store.kind());
    }
    if cause.downcast_ref::<certd::config::ConfigError>().is_some()
        || cause.downcast_ref::<UsageError>().is_some()
    {
        return Some(ErrorKind::InvalidInput);
    }
    None
}

/// A command-line value that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The CLI itself refuses, before asking certd: `kind` gives the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
}

/// GETs an `http://` URL (certd's HTTP port): the body of a 200 answer;
/// anything else is "cannot reach" (exit 3), naming the URL.
pub(crate) async fn http_get(url: &str) -> Result<Vec<u8>, certd::api::client::ClientError> {
    let unreachable = |reason: String| certd::api::client::ClientError::Unreachable {
        target: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| unreachable("not an http:// URL".into()))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut connection = load::HttpConnection::connect(&format!("http://{host}"))
        .await
        .map_err(unreachable)?;
    let (status, body) = connection
        .request("GET", &format!("/{path}"), None)
        .await
        .map_err(unreachable)?;
    if status != 200 {
        return Err(unreachable(format!("HTTP {status}")));
    }
    Ok(body)
}

/// clap value parser for durations such as `1h`.
fn duration(value: &str) -> Result<Duration, String> {
    certd::config::parse_duration(value)
}

/// A Unix time as RFC 3339, for humans.
fn format_time(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}
