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
    content: EntryContent,
}

#[derive(Debug, Args)]
pub struct EntryUpdateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The entry's id. Its service stays; everything else becomes what the
    /// flags say, with the defaults for what they leave out.
    id: String,
    #[command(flatten)]
    content: EntryContent,
}

/// What an entry grants, besides its service: as `create` and `update`
/// take it.
#[derive(Debug, Args)]
struct EntryContent {
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
    /// Print the entry as JSON instead of its id.
    #[arg(long)]
    json: bool,
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
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct EntryDeleteArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The entry's id, as `certd entry list` shows it.
    id: String,
}

pub async fn create(args: EntryCreateArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let json = args.content.json;
    let entry = client
        .create_entry(&args.content.spec(args.service))
        .await?;
    print_entry(&entry, json)
}

pub async fn update(args: EntryUpdateArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let json = args.content.json;
    let entry = client
        .update_entry(&args.id, &args.content.spec(String::new()))
        .await?;
    print_entry(&entry, json)
}

fn print_entry(entry: &EntrySummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(entry)?);
    } else {
        // The id alone, so scripts can capture it.
        println!("{}", entry.id);
    }
    Ok(())
}

pub async fn list(args: EntryListArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let entries = client.entries(args.service.as_deref()).await?;
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
    }
    Ok(())
}

pub async fn delete(args: EntryDeleteArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let entry = client.delete_entry(&args.id).await?;
    println!(
        "deleted entry {} ({}, created {} by {}); its certificates can no longer renew",
        entry.id,
        entry.service,
        format_time(entry.created_at),
        entry.created_by
    );
    Ok(())
}

fn ttl_text(entry: &EntrySummary) -> String {
    entry.ttl_seconds.map_or("default".to_owned(), |seconds| {
        humantime::format_duration(Duration::from_secs(seconds)).to_string()
    })
}
