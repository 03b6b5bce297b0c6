//! `certd entry create|update|list|delete`: registration entries, through the admin
//! API of the running daemon (local socket or mTLS).

use std::time::Duration;

use clap::Args;

use super::admin::AdminTarget;
use super::{DataDirArg, duration, format_time};
use certd::api::client::EntrySummary;
use certd::registry::EntrySpec;

#[derive(Debug, Args)]
pub struct EntryCreateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Service the identity belongs to (the certificate's CN); with
    /// --agent, the node agent's name.
    #[arg(long, visible_alias = "name")]
    service: String,
    #[command(flatten)]
    pub(super) content: EntryContent,
}

#[derive(Debug, Args)]
pub struct EntryUpdateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The entry's id. Only what the flags name changes; its service, and
    /// whatever no flag names, stay.
    id: String,
    #[command(flatten)]
    pub(super) changes: EntryChanges,
}

/// What `entry update` changes: each flag replaces that part of the entry;
/// a part no flag names stays as it is.
#[derive(Debug, Args)]
pub(super) struct EntryChanges {
    /// The selectors, all of them (repeat): they replace the entry's.
    #[arg(long = "selector")]
    selectors: Vec<String>,
    /// The SPIFFE ID to issue.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// The extra DNS names, all of them (repeat): they replace the entry's.
    #[arg(long = "dns", conflicts_with = "no_dns")]
    dns_names: Vec<String>,
    /// Remove the extra DNS names (the default name stays).
    #[arg(long)]
    no_dns: bool,
    /// Certificate lifetime.
    #[arg(long, value_parser = duration, conflicts_with = "default_ttl")]
    ttl: Option<Duration>,
    /// Go back to the configured default lifetime.
    #[arg(long)]
    default_ttl: bool,
    /// Issue only through this node agent.
    #[arg(long, conflicts_with = "no_parent")]
    parent: Option<String>,
    /// Issue without a node agent again.
    #[arg(long)]
    no_parent: bool,
    /// The JWT-SVID audiences, all of them (repeat): they replace the entry's.
    #[arg(long = "jwt-audience", conflicts_with = "no_jwt_audiences")]
    jwt_audiences: Vec<String>,
    /// Remove every JWT-SVID audience (no tokens).
    #[arg(long)]
    no_jwt_audiences: bool,
    /// The foreign trust domains it federates with, all of them (repeat):
    /// they replace the entry's.
    #[arg(long = "federates-with", conflicts_with = "no_federates_with")]
    federates_with: Vec<String>,
    /// Federate with no foreign trust domain any more.
    #[arg(long)]
    no_federates_with: bool,
    /// Print the entry as JSON instead of its id.
    #[arg(long)]
    pub(super) json: bool,
}

impl EntryChanges {
    /// `current` with these changes (an entry with nothing in it when there
    /// is none: certd then refuses the update as for an unknown id, and
    /// audits it); `None` if they name no change.
    fn apply(self, current: Option<&EntrySummary>) -> Option<EntrySpec> {
        let nothing = EntrySummary::default();
        let found = current.is_some();
        let current = current.unwrap_or(&nothing);
        let named = !self.selectors.is_empty()
            || self.spiffe_id.is_some()
            || !self.dns_names.is_empty()
            || self.no_dns
            || self.ttl.is_some()
            || self.default_ttl
            || self.parent.is_some()
            || self.no_parent
            || !self.jwt_audiences.is_empty()
            || self.no_jwt_audiences
            || !self.federates_with.is_empty()
            || self.no_federates_with;
        if !named {
            return None;
        }
        let replaced = |given: Vec<String>, clear: bool, kept: &[String]| match (given, clear) {
            (_, true) => Vec::new(),
            (given, false) if !given.is_empty() => given,
            _ => kept.to_vec(),
        };
        Some(EntrySpec {
            service: String::new(),
            selectors: replaced(self.selectors, false, &current.selectors),
            // An agent's entry names no SPIFFE ID or DNS names of its own.
            spiffe_id: self
                .spiffe_id
                .or_else(|| (found && !current.agent).then(|| current.spiffe_id.clone())),
            dns_names: if current.agent && self.dns_names.is_empty() {
                Vec::new()
            } else {
                replaced(self.dns_names, self.no_dns, &current.dns_names)
            },
            ttl: match (self.ttl, self.default_ttl) {
                (_, true) => None,
                (Some(ttl), false) => Some(ttl),
                (None, false) => current.ttl_seconds.map(Duration::from_secs),
            },
            parent: match (self.parent, self.no_parent) {
                (_, true) => None,
                (Some(parent), false) => Some(parent),
                (None, false) => current.parent_id.clone(),
            },
            agent: current.agent,
            jwt_audiences: replaced(
                self.jwt_audiences,
                self.no_jwt_audiences,
                &current.jwt_audiences,
            ),
            federates_with: replaced(
                self.federates_with,
                self.no_federates_with,
                &current.federates_with,
            ),
        })
    }
}

/// What changed between `before` and `after`, one line each.
fn changes(before: &EntrySummary, after: &EntrySummary) -> Vec<String> {
    let listed = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items.join(" ")
        }
    };
    let mut lines = Vec::new();
    let mut compare = |what: &str, old: String, new: String| {
        if old != new {
            lines.push(format!("{what}: {old} -> {new}"));
        }
    };
    compare(
        "selectors",
        listed(&before.selectors),
        listed(&after.selectors),
    );
    compare(
        "spiffe id",
        before.spiffe_id.clone(),
        after.spiffe_id.clone(),
    );
    compare(
        "dns names",
        listed(&before.dns_names),
        listed(&after.dns_names),
    );
    compare("ttl", ttl_text(before), ttl_text(after));
    compare(
        "parent",
        before.parent_id.clone().unwrap_or_else(|| "(none)".into()),
        after.parent_id.clone().unwrap_or_else(|| "(none)".into()),
    );
    compare(
        "jwt audiences",
        listed(&before.jwt_audiences),
        listed(&after.jwt_audiences),
    );
    compare(
        "federates with",
        listed(&before.federates_with),
        listed(&after.federates_with),
    );
    lines
}

/// What an entry grants, besides its service: as `create` and `update`
/// take it.
#[derive(Debug, Args)]
pub(super) struct EntryContent {
    /// A selector the workload must prove, e.g. k8s:ns:payments,
    /// k8s:sa:billing or token:billing-vm. Repeat for several; all must hold.
    #[arg(long = "selector", required = true)]
    selectors: Vec<String>,
    /// SPIFFE ID to issue (default spiffe://<trust-domain>/svc/<service>).
    #[arg(long)]
    spiffe_id: Option<String>,
    /// An extra DNS name for the certificate; repeat for several.
    #[arg(long = "dns")]
    dns_names: Vec<String>,
    /// Certificate lifetime (default: the configured one); at most the maximum.
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// Issue only through this node agent, e.g. spiffe://<trust-domain>/agent/node-1;
    /// the selectors are then unix: ones (unix:uid:N, unix:gid:N, unix:user:NAME,
    /// unix:group:NAME, unix:path:/abs/path, unix:sha256:HEX), proven by the kernel.
    #[arg(long)]
    parent: Option<String>,
    /// The entry is a node agent's: spiffe://<trust-domain>/agent/<name>, for
    /// `certd agent` attesting with a join or Kubernetes token.
    #[arg(long, conflicts_with_all = ["parent", "spiffe_id", "dns_names"])]
    agent: bool,
    /// An audience JWT-SVIDs for this entry may name, e.g. spiffe://<trust-domain>/svc/payments
    /// or a plain string; repeat for several. None: no JWT-SVIDs (least privilege).
    #[arg(long = "jwt-audience")]
    jwt_audiences: Vec<String>,
    /// A foreign trust domain its workloads trust, e.g. partner.example: the
    /// node agent hands them that domain's bundle (`certd federation add`);
    /// repeat for several.
    #[arg(long = "federates-with")]
    federates_with: Vec<String>,
    /// Print the entry as JSON instead of its id.
    #[arg(long)]
    pub(super) json: bool,
}

impl EntryContent {
    fn spec(self, service: String) -> EntrySpec {
        EntrySpec {
            service,
            selectors: self.selectors,
            spiffe_id: self.spiffe_id,
            dns_names: self.dns_names,
            ttl: self.ttl,
            parent: self.parent,
            agent: self.agent,
            jwt_audiences: self.jwt_audiences,
            federates_with: self.federates_with,
        }
    }
}

#[derive(Debug, Args)]
pub struct EntryListArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Only this service's entries.
    #[arg(long)]
    service: Option<String>,
    /// Only entries with this selector (repeat: all of them).
    #[arg(long = "selector")]
    selectors: Vec<String>,
    /// Only entries issued through this node agent (its SPIFFE ID).
    #[arg(long)]
    parent: Option<String>,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub struct EntryShowArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The entry's id, as `certd entry list` shows it.
    id: String,
    /// The entry as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub struct EntryDeleteArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The entry's id, as `certd entry list` shows it.
    id: String,
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

pub async fn create(args: EntryCreateArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let json = args.content.json;
    let entry = client
        .create_entry(&args.content.spec(args.service))
        .await?;
    print_entry(&entry, json)
}

/// `certd entry update ID …`: changes what the flags name, keeps the rest,
/// and says on stderr what changed (stdout keeps the id, for scripts).
pub async fn update(args: EntryUpdateArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let json = args.changes.json;
    let current = client
        .entries(None)
        .await?
        .into_iter()
        .find(|entry| entry.id == args.id);
    let spec = args.changes.apply(current.as_ref()).ok_or_else(|| {
        super::UsageError(
            "name what to change: --selector, --spiffe-id, --dns/--no-dns, --ttl/--default-ttl, --parent/--no-parent or --jwt-audience/--no-jwt-audiences".into(),
        )
    })?;
    // Unknown, certd refuses it (exit 5) and audits the attempt.
    let entry = client.update_entry(&args.id, &spec).await?;
    let Some(current) = current else {
        return print_entry(&entry, json);
    };
    let changed = changes(&current, &entry);
    if changed.is_empty() {
        eprintln!("entry {}: nothing changed", entry.id);
    }
    for line in changed {
        eprintln!("entry {}: {line}", entry.id);
    }
    print_entry(&entry, json)
}

fn print_entry(entry: &EntrySummary, json: bool) -> anyhow::Result<()> {
    // On stderr, so stdout keeps the id (or the JSON, which carries them).
    for warning in &entry.warnings {
        eprintln!("certd: warning: entry {}: {warning}", entry.id);
    }
    if json {
        println!("{}", serde_json::to_string(entry)?);
    } else {
        // The id alone, so scripts can capture it.
        println!("{}", entry.id);
    }
    Ok(())
}

/// `certd entry show ID`: one entry, whole; exit 5 if there is none.
pub async fn show(args: EntryShowArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let entry = client
        .entries(None)
        .await?
        .into_iter()
        .find(|entry| entry.id == args.id)
        .ok_or_else(|| super::Refusal {
            kind: certd::ErrorKind::NotFound,
            message: format!(
                "no entry {:?}: `certd entry list` shows the ids",
                args.id.chars().take(64).collect::<String>()
            ),
        })?;
    if args.json {
        println!("{}", serde_json::to_string(&entry)?);
        return Ok(());
    }
    let listed = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items.join(" ")
        }
    };
    println!("id:            {}", entry.id);
    println!("service:       {}", entry.service);
    println!("spiffe id:     {}", entry.spiffe_id);
    println!("selectors:     {}", listed(&entry.selectors));
    println!("dns names:     {}", listed(&entry.dns_names));
    println!("ttl:           {}", ttl_text(&entry));
    if entry.agent {
        println!("agent:         yes (a node agent's own entry)");
    }
    println!(
        "parent:        {}",
        entry
            .parent_id
            .as_deref()
            .unwrap_or("(none: attested directly)")
    );
    println!("jwt audiences: {}", listed(&entry.jwt_audiences));
    if !entry.federates_with.is_empty() {
        println!("federates with: {}", entry.federates_with.join(" "));
    }
    println!(
        "created:       {} by {}",
        format_time(entry.created_at),
        entry.created_by
    );
    Ok(())
}

pub async fn list(args: EntryListArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let entries: Vec<EntrySummary> = client
        .entries(args.service.as_deref())
        .await?
        .into_iter()
        .filter(|entry| args.selectors.iter().all(|s| entry.selectors.contains(s)))
        .filter(|entry| {
            args.parent
                .as_ref()
                .is_none_or(|parent| entry.parent_id.as_ref() == Some(parent))
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&entries)?);
        return Ok(());
    }
    println!(
        "{:<16}  {:<20}  {:<8}  {:<40}  SELECTORS",
        "ID", "SERVICE", "TTL", "SPIFFE ID"
    );
    for entry in &entries {
        println!(
            "{:<16}  {:<20}  {:<8}  {:<40}  {}",
            entry.id,
            entry.service,
            ttl_text(entry),
            entry.spiffe_id,
            entry.selectors.join(" ")
        );
        if entry.dns_names.len() > 1 {
            println!("{:<16}  dns: {}", "", entry.dns_names.join(" "));
        }
        if let Some(parent) = &entry.parent_id {
            println!("{:<16}  through agent: {parent}", "");
        }
        if !entry.jwt_audiences.is_empty() {
            println!(
                "{:<16}  jwt audiences: {}",
                "",
                entry.jwt_audiences.join(" ")
            );
        }
        if !entry.federates_with.is_empty() {
            println!(
                "{:<16}  federates with: {}",
                "",
                entry.federates_with.join(" ")
            );
        }
    }
    Ok(())
}

pub async fn delete(args: EntryDeleteArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let entry = client.delete_entry(&args.id).await?;
    args.output.print(&entry, || {
        println!(
            "deleted entry {} ({}, created {} by {}); its certificates can no longer renew",
            entry.id,
            entry.service,
            format_time(entry.created_at),
            entry.created_by
        );
        Ok(())
    })
}

fn ttl_text(entry: &EntrySummary) -> String {
    entry.ttl_seconds.map_or("default".to_owned(), |seconds| {
        humantime::format_duration(Duration::from_secs(seconds)).to_string()
    })
}
