//! `certd policy show|check|apply|explain`: the token policy (which caller
//! may get tokens for which audience and scopes), as a file operators keep
//! in Git. `check` needs no daemon; the others go through the admin API of
//! the running daemon (local socket or mTLS).

use std::path::PathBuf;

use clap::Args;

use super::admin::AdminTarget;
use super::{DataDirArg, JsonArg};
use certd::ca::CaFiles;

#[derive(Debug, Args)]
pub struct PolicyShowArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// One JSON object: `version` and `policy` (the policy file's text).
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The policy file.
    file: PathBuf,
    /// The trust domain SPIFFE IDs in the file must be in (default: the
    /// CA's, from the data directory).
    #[arg(long)]
    trust_domain: Option<String>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct PolicyApplyArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The policy file; it replaces the whole policy.
    file: PathBuf,
    /// Apply only if the policy in force is this version (as `policy show`
    /// printed it), so a concurrent change is never overwritten.
    #[arg(long)]
    expected_version: Option<u64>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct PolicyGrantArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The grant's name; a grant of that name is replaced.
    name: String,
    #[command(flatten)]
    grant: CallerAudienceScopes,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

/// Who calls which audience with which scopes: what a grant gives (none:
/// the audience alone), or what `explain` asks for.
#[derive(Debug, Args)]
struct CallerAudienceScopes {
    /// The caller: a service name or SPIFFE ID.
    #[arg(long)]
    from: String,
    /// The audience: the service the token is for.
    #[arg(long)]
    to: String,
    /// A scope; repeat for several.
    #[arg(long = "scope")]
    scopes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PolicyRevokeArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The grant's or delegation's name, as `policy show` prints it.
    name: String,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct PolicyExplainArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    asked: CallerAudienceScopes,
    /// Explain a token exchange on behalf of a subject of this issuer (the
    /// `iss` of the user's token, or certd's own issuer), not client
    /// credentials.
    #[arg(long, value_name = "ISSUER")]
    on_behalf_of: Option<String>,
    /// With --on-behalf-of: how many actors the new token's `act` chain
    /// would name, the caller included (1: the first hop).
    #[arg(long, default_value_t = 1, requires = "on_behalf_of")]
    chain: u32,
    /// Print the answer as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// Prints the policy in force as a policy file.
pub async fn show(args: PolicyShowArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let (version, text) = client.policy().await?;
    let shown = serde_json::json!({ "version": version, "policy": text });
    args.output.print(&shown, || {
        print!("{text}");
        Ok(())
    })
}

/// Checks a policy file without applying it.
pub fn check(args: PolicyCheckArgs) -> anyhow::Result<()> {
    let trust_domain = match args.trust_domain {
        Some(trust_domain) => trust_domain.parse().map_err(certd::Error::from)?,
        None => {
            CaFiles::new(&args.data_dir.data_dir)
                .read_metadata()
                .map_err(certd::Error::from)?
                .trust_domain
        }
    };
    let text = read_policy(&args.file)?;
    let rules =
        certd::policy::grants::parse_policy(&text, &trust_domain).map_err(certd::Error::from)?;
    let checked = serde_json::json!({
        "file": args.file,
        "valid": true,
        "grants": rules.grants.len(),
        "delegations": rules.delegations.len(),
        "trust_domain": trust_domain.to_string(),
    });
    args.output.print(&checked, || {
        println!(
            "{}: a valid policy with {} grant(s) and {} delegation(s) for trust domain {trust_domain}",
            args.file.display(),
            rules.grants.len(),
            rules.delegations.len()
        );
        Ok(())
    })
}

/// Replaces the policy with a file.
pub async fn apply(args: PolicyApplyArgs) -> anyhow::Result<()> {
    let text = read_policy(&args.file)?;
    let mut client = args.target.connect(&args.data_dir).await?;
    let (version, grants) = client.replace_policy(text, args.expected_version).await?;
    let applied = serde_json::json!({ "file": args.file, "version": version, "grants": grants });
    args.output.print(&applied, || {
        println!(
            "applied {}: policy version {version}, {grants} grant(s)",
            args.file.display()
        );
        Ok(())
    })
}

/// Adds or replaces one grant: the policy in force, changed by `edit`, is
/// applied only if nobody changed it meanwhile (tried again, up to three
/// times, if someone did).
async fn edit_policy(
    data_dir: &DataDirArg,
    target: &AdminTarget,
    edit: impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<(u64, u32)> {
    let mut client = target.connect(data_dir).await?;
    let mut attempts = 0;
    loop {
        let (version, text) = client.policy().await?;
        let changed = edit(&text)?;
        match client.replace_policy(changed, Some(version)).await {
            Err(certd::api::client::ClientError::Refused {
                kind: certd::ErrorKind::FailedPrecondition,
                ..
            }) if attempts < 2 => attempts += 1,
            outcome => return Ok(outcome?),
        }
    }
}

/// `certd policy grant NAME --from … --to … [--scope …]`.
pub async fn grant(args: PolicyGrantArgs) -> anyhow::Result<()> {
    let (version, grants) = edit_policy(&args.data_dir, &args.target, |text| {
        Ok(certd::policy::grants::set_grant(
            text,
            &args.name,
            &args.grant.from,
            &args.grant.to,
            &args.grant.scopes,
        )
        .map_err(certd::Error::from)?)
    })
    .await?;
    let granted = serde_json::json!({ "name": args.name, "version": version, "grants": grants });
    args.output.print(&granted, || {
        println!(
            "granted {}: policy version {version}, {grants} grant(s)",
            args.name
        );
        Ok(())
    })
}

/// `certd policy revoke NAME`: removes the grant or delegation NAME; exit 5
/// if there is neither.
pub async fn revoke(args: PolicyRevokeArgs) -> anyhow::Result<()> {
    let (version, grants) = edit_policy(&args.data_dir, &args.target, |text| {
        certd::policy::grants::remove_grant(text, &args.name)
            .map_err(certd::Error::from)?
            .ok_or_else(|| {
                certd::Error::NotFound(format!("grant or delegation {:?}", args.name)).into()
            })
    })
    .await?;
    let revoked = serde_json::json!({ "name": args.name, "version": version, "grants": grants });
    args.output.print(&revoked, || {
        println!(
            "revoked {}: policy version {version}, {grants} grant(s)",
            args.name
        );
        Ok(())
    })
}

/// What the token endpoint would answer, and the rule that decides. Exits
/// 4 (refused) when it would refuse.
pub async fn explain(args: PolicyExplainArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let answer = client
        .explain_policy(
            &args.asked.from,
            &args.asked.to,
            &args.asked.scopes,
            args.on_behalf_of
                .as_deref()
                .map(|issuer| (issuer, args.chain)),
        )
        .await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "allowed": answer.allowed,
                "scopes": answer.scopes,
                "rules": answer.rules,
                "error": answer.error,
                "message": answer.message,
            })
        );
    } else if answer.allowed {
        println!("allowed: {}", answer.message);
    } else {
        println!("refused ({}): {}", answer.error, answer.message);
    }
    if answer.allowed {
        Ok(())
    } else {
        Err(
            certd::Error::from(certd::policy::PolicyError::TokenRefused {
                error: answer.error,
            })
            .into(),
        )
    }
}

fn read_policy(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|error| {
        certd::Error::InvalidArgument(format!("cannot read {}: {error}", path.display())).into()
    })
}
