//! `certd db check|backup|restore`: the database's health, and getting it
//! back when the disk lost it.
//!
//! `backup` goes through the running daemon's admin socket (or `--server`)
//! and needs no pause in service; with `--offline` it reads the data
//! directory itself. `check` and `restore` need the database to themselves,
//! so certd must be stopped. On PostgreSQL (`--database-url`, `[store] url`
//! or the data directory's `database.toml`), `check` compares the shared
//! database with this data directory's marks while the replicas serve, and
//! `backup` and `restore` refuse, naming PostgreSQL's own tools.
//!
//! Each prints a report, or one JSON object with `--json`; `backup`,
//! `restore` and `copy` show their progress on stderr (`progress`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::admin::AdminTarget;
use super::progress::{self, ProgressArg};
use super::{DataDirArg, JsonArg};
use certd::config::ConfigFile;
use certd::store::Storage;
use certd::store::StoreSettings;
use certd::store::marks::MarksFile;
use certd::store::progress::Progress;
use certd::store::{self, StoreError};

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check the database (sled: certd stopped): it opens, every record reads back (PostgreSQL:
    /// its entries), and it holds at least what the marks beside the CA files say. Exits 1 if not.
    Check(CheckArgs),
    /// Write a backup of the sled database to FILE (0600), from the running certd without pausing
    /// it, or with --offline from the data directory. On PostgreSQL, use pg_dump.
    Backup(BackupArgs),
    /// Replace the sled database with a backup (certd stopped). The old database is kept beside
    /// it; the CRL number carries on from the last one published. On PostgreSQL, use pg_restore.
    Restore(RestoreArgs),
    /// Copy the sled database into an empty PostgreSQL database (certd stopped), then compare
    /// the counts; afterwards run certd with --database-url.
    Copy(CopyArgs),
    /// Apply the PostgreSQL schema migrations (certd also applies them at start) and print the
    /// schema version.
    Migrate(MigrateArgs),
}

impl DbCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            DbCommand::Check(args) => args.output.json,
            DbCommand::Backup(args) => args.output.json,
            DbCommand::Restore(args) => args.output.json,
            DbCommand::Copy(args) => args.output.json,
            DbCommand::Migrate(args) => args.output.json,
        }
    }
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The PostgreSQL database to copy into: postgresql://…
    #[arg(long, env = "CERTD_DATABASE_URL", hide_env_values = true)]
    to: String,
    /// PEM roots for the database server's certificate (default: the Mozilla roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[command(flatten)]
    output: JsonArg,
    #[command(flatten)]
    progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database: postgresql://…
    #[arg(long, env = "CERTD_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// PEM roots for the database server's certificate (default: the Mozilla roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[command(flatten)]
    output: JsonArg,
}

/// Which database a command works on, as `certd serve` would choose it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// certd's configuration file, for its [store] section.
    #[arg(long, env = "CERTD_CONFIG")]
    config: Option<PathBuf>,
    /// The PostgreSQL database, postgresql://…; default: [store] url in the configuration, then
    /// the data directory's database.toml, else sled in the data directory.
    #[arg(long, env = "CERTD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl StoreArgs {
    fn settings(&self, data_dir: &DataDirArg) -> anyhow::Result<StoreSettings> {
        let mut file = ConfigFile::load(self.config.as_deref())?;
        super::use_database(&mut file, self.database_url.clone(), &data_dir.dir())?;
        Ok(file.validate()?.store)
    }

    /// Refuses a command that backs up to or restores from a file where
    /// the database is not backed up that way, naming what to use instead.
    fn require_file_backups(&self, data_dir: &DataDirArg) -> anyhow::Result<()> {
        Ok(self.settings(data_dir)?.backend().file_backups()?)
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    output: JsonArg,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    target: AdminTarget,
    /// Where to write the backup; it must not exist yet.
    file: PathBuf,
    /// Read the data directory directly, without a daemon.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    output: JsonArg,
    #[command(flatten)]
    progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// A file written by `certd db backup`.
    file: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    output: JsonArg,
    #[command(flatten)]
    progress: ProgressArg,
}

pub async fn run(command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Check(args) => check(&args).await,
        DbCommand::Backup(args) => backup(args).await,
        DbCommand::Restore(args) => restore(&args).await,
        DbCommand::Copy(args) => copy(args).await,
        DbCommand::Migrate(args) => migrate(args).await,
    }
}

fn database(url: &str, ca_file: Option<PathBuf>) -> anyhow::Result<StoreSettings> {
    StoreSettings::new(Some(url), ca_file)
        .map_err(|message| super::UsageError(format!("the database URL {message}")).into())
}

async fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.dir();
    let target = database(&args.to, args.ca_file)?.open(&data_dir).await?;
    let location = target.location();
    let source = StoreSettings::default().open(&data_dir).await?;
    let progress = Arc::new(Progress::default());
    let shown = progress::show(&progress, args.progress, args.output);
    let copied = store::copy::copy(source, target, progress.clone()).await;
    shown.stop().await;
    let copied = copied?;
    let json = serde_json::json!({
        "records": copied.records,
        "revocations": copied.revocations,
        "entries": copied.entries,
        "join_tokens": copied.join_tokens,
        "audit_entries": copied.audit_entries,
        "crl_number": copied.crl_number,
        "to": location,
    });
    args.output.print(&json, || {
        println!(
            "copied {} certificates ({} revoked), {} entries, {} join tokens, {} audit entries and CRL number {} to {location}; the counts match",
            copied.records,
            copied.revocations,
            copied.entries,
            copied.join_tokens,
            copied.audit_entries,
            copied.crl_number
        );
        Ok(())
    })
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let settings = database(&args.database_url, args.ca_file)?;
    let message = settings.backend().migrate(&settings).await?;
    let json = serde_json::json!({
        "backend": settings.backend().name(),
        "schema_version": certd::store::postgres::PgStore::SCHEMA_VERSION,
        "message": message,
    });
    args.output.print(&json, || {
        println!("{message}");
        Ok(())
    })
}

/// `db check`: sled with certd stopped; a shared database (PostgreSQL)
/// while the replicas serve, its storage being the database's own to check.
async fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.dir();
    let settings = args.store.settings(&args.data_dir)?;
    let backend = settings.backend();
    // Where it is and what the marks say come first where they can (sled):
    // a database that does not open still shows which one it was. With
    // --json, nothing is printed but the one object, at the end (a failure
    // is the error object alone).
    let text = !args.output.json;
    let early = backend.location_before_opening(&settings, &data_dir);
    let early_marks = match &early {
        Some(location) => {
            if text {
                println!("database:   {location}");
            }
            Some(read_marks(&data_dir, text)?)
        }
        None => None,
    };
    let checked = backend.check(&settings, &data_dir).await?;
    let marks = match early_marks {
        Some(marks) => marks,
        None => {
            if text {
                println!("database:   {}", checked.location);
            }
            read_marks(&data_dir, text)?
        }
    };
    if text {
        println!("holds:      {}", checked.holds);
    }
    compare_with_marks(&data_dir, checked.store.as_ref(), marks.as_ref()).await?;
    let json = serde_json::json!({
        "ok": true,
        "database": checked.location,
        "holds": checked.holds,
        "marks": marks,
        "note": checked.note,
    });
    args.output.print(&json, || {
        match checked.note {
            Some(note) => println!("ok; {note}"),
            None => println!("ok"),
        }
        Ok(())
    })
}

/// The data directory's marks, printed as a line when `print`.
fn read_marks(data_dir: &certd::DataDir, print: bool) -> anyhow::Result<Option<MarksFile>> {
    let marks = MarksFile::read(&data_dir.store_marks())?;
    if !print {
        return Ok(marks);
    }
    match &marks {
        Some(marks) => println!(
            "marks:      store {}, at least {} certificates, {} revoked, CRL number {}",
            marks.store_id, marks.records, marks.revocations, marks.crl_number
        ),
        None => println!("marks:      none yet (written when certd first serves)"),
    }
    Ok(marks)
}

/// Fails naming every shortfall of `store` against `marks`.
async fn compare_with_marks(
    data_dir: &certd::DataDir,
    store: &dyn Storage,
    marks: Option<&MarksFile>,
) -> anyhow::Result<()> {
    let Some(marks) = marks else {
        return Ok(());
    };
    // Only the marks of a CA that has used no database need to know which
    // CA this is (its first store's id derives from the root).
    let ca = if marks.store_id.is_empty() {
        Some(certd::store::marks::CaIdentity::of_root_file(
            &data_dir.root_cert(),
        )?)
    } else {
        None
    };
    let now = super::clock::clock().unix_now();
    let shortfalls = certd::store::marks::shortfalls(store, marks, true, ca.as_ref(), now).await?;
    if !shortfalls.is_empty() {
        return Err(StoreError::BehindMarks {
            path: store.location(),
            shortfalls: shortfalls.join("; "),
        }
        .into());
    }
    Ok(())
}

async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    if args.offline {
        args.store.require_file_backups(&args.data_dir)?;
    }
    if args.file.exists() {
        return Err(super::UsageError(format!(
            "{} exists already; name a new file",
            args.file.display()
        ))
        .into());
    }
    let partial = partial_path(&args.file);
    let mut out = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut out, certd::fsutil::SECRET_FILE_MODE);
    let file = out
        .write(true)
        .create_new(true)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let progress = Arc::new(Progress::default());
    progress.stage("bytes written", None);
    let shown = progress::show(&progress, args.progress, args.output);
    let mut file = progress::Counting {
        inner: file,
        progress: progress.clone(),
    };
    let written = if args.offline {
        let store = args
            .store
            .settings(&args.data_dir)?
            .open(&args.data_dir.dir())
            .await?;
        tokio::task::spawn_blocking(move || store.backup(&mut file).map(|_| file))
            .await
            .context("the backup stopped")?
            .map_err(anyhow::Error::from)
    } else {
        match args.target.connect(&args.data_dir).await {
            Ok(mut client) => client
                .backup(&mut file)
                .await
                .map(|_| file)
                .map_err(anyhow::Error::from),
            Err(error) => Err(error),
        }
    };
    let finished = written.and_then(|file| {
        file.inner.sync_all().context("cannot write the backup")?;
        // What arrived is checked as a restore would check it.
        let summary = store::sled::verify_backup(&partial, &progress)?;
        std::fs::rename(&partial, &args.file).context("cannot name the backup")?;
        Ok(summary)
    });
    shown.stop().await;
    match finished {
        Ok(summary) => {
            let mut json = summary_json(&summary);
            json["file"] = serde_json::json!(args.file);
            args.output.print(&json, || {
                println!("backed up {} to {}", summary, args.file.display());
                Ok(())
            })
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// What a backup holds, as `--json` prints it.
fn summary_json(summary: &store::BackupSummary) -> serde_json::Value {
    serde_json::json!({
        "records": summary.records,
        "revocations": summary.revocations,
        "entries": summary.entries,
        "join_tokens": summary.join_tokens,
        "audit_entries": summary.audit_entries,
        "crl_number": summary.crl_number,
        "policy_version": summary.policy_version,
        "store_id": summary.store_id,
    })
}

async fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let settings = args.store.settings(&args.data_dir)?;
    settings.backend().file_backups()?;
    let data_dir = args.data_dir.dir();
    let file = args.file.clone();
    let progress = Arc::new(Progress::default());
    let shown = progress::show(&progress, args.progress, args.output);
    let restoring = progress.clone();
    let report = tokio::task::spawn_blocking(move || {
        settings.backend().restore(&data_dir, &file, &restoring)
    })
    .await;
    shown.stop().await;
    let report = report
        .context("the restore stopped")?
        .map_err(|error| match error {
            StoreError::Locked(_) => anyhow::Error::from(error)
                .context("certd is serving this data directory: stop it before restoring"),
            other => other.into(),
        })?;
    // What the CA had recorded that the backup lacks: made after it.
    let (missing_records, missing_revocations) = match &report.previous_marks {
        Some(previous) => (
            // Purged records were in the store, not lost by the restore.
            previous
                .records
                .saturating_sub(report.restored.records + report.restored.purged_records),
            previous
                .revocations
                .saturating_sub(report.restored.revocations + report.restored.purged_revocations),
        ),
        None => (0, 0),
    };
    if args.output.json {
        let json = serde_json::json!({
            "restored": summary_json(&report.restored),
            "file": args.file,
            "next_crl_number": report.crl_number + 1,
            "replaced": report.replaced,
            "missing_records": missing_records,
            "missing_revocations": missing_revocations,
        });
        println!("{json}");
        return Ok(());
    }
    println!(
        "restored {} from {}; the next CRL number is {}",
        report.restored,
        args.file.display(),
        report.crl_number + 1
    );
    if let Some(replaced) = &report.replaced {
        println!("the replaced database is kept at {}", replaced.display());
    }
    if let Some(previous) = &report.previous_marks
        && (missing_records > 0 || missing_revocations > 0)
    {
        println!(
            "warning: the CA had recorded at least {} certificates and {} revocations; {missing_records} certificates and {missing_revocations} revocations made after this backup are not in it. Revoke again what you revoked since the backup.",
            previous.records, previous.revocations
        );
    }
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}
