//! `certd acme eab create | policy set|show | account list|deactivate |
//! order list`: the ACME server's operator side, through the admin API of
//! the running daemon (local socket or mTLS).

use std::time::Duration;

use clap::{Args, Subcommand};

use super::admin::AdminTarget;
use super::{DataDirArg, JsonArg, format_time};

#[derive(Debug, Subcommand)]
pub enum AcmeCommand {
    /// External account binding keys: what an ACME client needs to make an account bound to
    /// an entry.
    Eab {
        #[command(subcommand)]
        command: EabCommand,
    },
    /// An entry's ACME policy: which challenges its accounts are offered.
    Policy {
        #[command(subcommand)]
        command: AcmePolicyCommand,
    },
    /// ACME accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// ACME orders.
    Order {
        #[command(subcommand)]
        command: OrderCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EabCommand {
    /// Make a key id and HMAC key for an entry: an account made with them may order only
    /// the entry's DNS names. Usable once, until --ttl passes.
    Create(EabCreateArgs),
}

#[derive(Debug, Subcommand)]
pub enum AcmePolicyCommand {
    /// Set which challenges an entry's accounts are offered, or that its EAB-bound accounts
    /// need none (--without-challenges).
    Set(PolicySetArgs),
    /// Show an entry's ACME policy.
    Show(PolicyShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// List the ACME accounts.
    List(AccountListArgs),
    /// Deactivate an account: it can do nothing more (its certificates stay valid until
    /// revoked).
    Deactivate(AccountDeactivateArgs),
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// List ACME orders, every account's or one's.
    List(OrderListArgs),
}

#[derive(Debug, Args)]
pub struct EabCreateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The registration entry the account will be bound to.
    #[arg(long)]
    entry: String,
    /// How long the key may be used (at most 7d).
    #[arg(long, value_parser = super::duration, default_value = "1h")]
    ttl: Duration,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The registration entry.
    entry: String,
    /// The challenge types offered, comma-separated (default: all three).
    #[arg(long, value_delimiter = ',', value_parser = ["http-01", "tls-alpn-01", "dns-01"])]
    challenges: Vec<String>,
    /// An EAB-bound account of this entry gets its authorizations valid at once.
    #[arg(long)]
    without_challenges: bool,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct PolicyShowArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The registration entry.
    entry: String,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct AccountListArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct AccountDeactivateArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// The account's id (`certd acme account list`). It is a base64url
    /// JWK thumbprint, so it may begin with `-`.
    #[arg(allow_hyphen_values = true)]
    account: String,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

#[derive(Debug, Args)]
pub struct OrderListArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Only this account's orders (an id may begin with `-`).
    #[arg(long, allow_hyphen_values = true)]
    account: Option<String>,
    #[command(flatten)]
    pub(super) output: JsonArg,
}

impl AcmeCommand {
    pub fn json(&self) -> bool {
        match self {
            AcmeCommand::Eab {
                command: EabCommand::Create(args),
            } => args.output.json,
            AcmeCommand::Policy { command } => match command {
                AcmePolicyCommand::Set(args) => args.output.json,
                AcmePolicyCommand::Show(args) => args.output.json,
            },
            AcmeCommand::Account { command } => match command {
                AccountCommand::List(args) => args.output.json,
                AccountCommand::Deactivate(args) => args.output.json,
            },
            AcmeCommand::Order {
                command: OrderCommand::List(args),
            } => args.output.json,
        }
    }
}

pub async fn run(command: AcmeCommand) -> anyhow::Result<()> {
    match command {
        AcmeCommand::Eab {
            command: EabCommand::Create(args),
        } => eab_create(args).await,
        AcmeCommand::Policy { command } => match command {
            AcmePolicyCommand::Set(args) => policy_set(args).await,
            AcmePolicyCommand::Show(args) => policy_show(args).await,
        },
        AcmeCommand::Account { command } => match command {
            AccountCommand::List(args) => account_list(args).await,
            AccountCommand::Deactivate(args) => account_deactivate(args).await,
        },
        AcmeCommand::Order {
            command: OrderCommand::List(args),
        } => order_list(args).await,
    }
}

async fn eab_create(args: EabCreateArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let eab = client.create_acme_eab(&args.entry, Some(args.ttl)).await?;
    args.output.print(&eab, || {
        println!("key id: {}", eab.key_id);
        println!("hmac key: {}", eab.hmac_key);
        Ok(())
    })
}

async fn policy_set(args: PolicySetArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let policy = client
        .set_acme_policy(&args.entry, &args.challenges, args.without_challenges)
        .await?;
    args.output.print(&policy, || {
        print_policy(&policy);
        Ok(())
    })
}

async fn policy_show(args: PolicyShowArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let policy = client.acme_policy(&args.entry).await?;
    args.output.print(&policy, || {
        print_policy(&policy);
        Ok(())
    })
}

fn print_policy(policy: &certd::api::client::AcmePolicyView) {
    println!("entry:               {}", policy.entry);
    println!("challenges:          {}", policy.challenges.join(", "));
    println!(
        "without challenges:  {}",
        if policy.without_challenges {
            "yes (its EAB-bound accounts' authorizations are valid at once)"
        } else {
            "no"
        }
    );
}

async fn account_list(args: AccountListArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let accounts = client.acme_accounts().await?;
    if args.output.json {
        println!("{}", serde_json::to_string(&accounts)?);
        return Ok(());
    }
    println!(
        "{:<18}  {:<12}  {:<24}  {:<20}  CONTACT",
        "ID", "STATUS", "ENTRY", "CREATED"
    );
    for account in &accounts {
        println!(
            "{:<18}  {:<12}  {:<24}  {:<20}  {}",
            account.id,
            account.status,
            account.entry.as_deref().unwrap_or("(no EAB)"),
            format_time(account.created_at),
            account.contact.join(", ")
        );
    }
    Ok(())
}

async fn account_deactivate(args: AccountDeactivateArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let account = client.deactivate_acme_account(&args.account).await?;
    args.output.print(&account, || {
        println!(
            "deactivated ACME account {}; its certificates stay valid until revoked",
            account.id
        );
        Ok(())
    })
}

async fn order_list(args: OrderListArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect(&args.data_dir).await?;
    let orders = client.acme_orders(args.account.as_deref()).await?;
    if args.output.json {
        println!("{}", serde_json::to_string(&orders)?);
        return Ok(());
    }
    println!(
        "{:<18}  {:<18}  {:<10}  {:<42}  NAMES",
        "ORDER", "ACCOUNT", "STATUS", "CERTIFICATE"
    );
    for order in &orders {
        println!(
            "{:<18}  {:<18}  {:<10}  {:<42}  {}",
            order.id,
            order.account,
            order.status,
            order.certificate.as_deref().unwrap_or("-"),
            order.identifiers.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{AccountDeactivateArgs, OrderListArgs};

    #[derive(Parser)]
    struct Deactivate {
        #[command(flatten)]
        args: AccountDeactivateArgs,
    }

    #[derive(Parser)]
    struct Orders {
        #[command(flatten)]
        args: OrderListArgs,
    }

    /// An account id is a base64url JWK thumbprint: one in 64 begins with
    /// `-`, which must reach the command as the id, not as an option.
    #[test]
    fn account_ids_that_begin_with_a_hyphen_are_ids() {
        let parsed = Deactivate::try_parse_from(["deactivate", "-Q3xYz_AbC"]).unwrap();
        assert_eq!(parsed.args.account, "-Q3xYz_AbC");
        let parsed = Orders::try_parse_from(["list", "--account", "-Q3xYz_AbC"]).unwrap();
        assert_eq!(parsed.args.account.as_deref(), Some("-Q3xYz_AbC"));
    }
}
