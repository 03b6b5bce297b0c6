//! `certd replica export|import`: what a replica on the shared PostgreSQL
//! database needs of the CA, packaged where the CA lives and set up (or
//! brought up to date after a rotation) on each replica.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{DataDirArg, JsonArg, UsageError};
use certd::ca::CaFiles;
use certd::ca::replica::{self, FileKind};
use certd::config::DatabaseFile;
use certd::store::StoreSettings;

#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    /// Where the CA lives: write what a replica's data directory needs (the CA's certificates,
    /// CRLs and rotation state, the intermediate keys, the JWT master secret and the store
    /// marks; not the root key unless --include-root-key) into one file (0600), a tar archive.
    Export(ExportArgs),
    /// On a replica: set the data directory up from a package (0700, keys 0600) and record the
    /// database URL in it, or bring it up to date with a newer package (after a rotation); a
    /// running certd there picks the new files up.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The package to write (replaced if it exists), e.g. replica.tar.
    #[arg(long)]
    out: PathBuf,
    /// Include the root key (root.key, and root-next.key during a root rotation): only for a
    /// second place that signs root CRLs and rotates; replicas never need it.
    #[arg(long)]
    include_root_key: bool,
    #[command(flatten)]
    output: JsonArg,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A package written by `certd replica export`.
    package: PathBuf,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The PostgreSQL database the replicas share, postgresql://…, recorded in the data
    /// directory's database.toml (0600), where certd serve finds it. Needed for a new replica.
    #[arg(long, env = "CERTD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PEM roots for the database server's certificate (default: the Mozilla roots), recorded
    /// with the URL.
    #[arg(long, requires = "database_url")]
    database_ca_file: Option<PathBuf>,
    #[command(flatten)]
    output: JsonArg,
}

impl ReplicaCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            ReplicaCommand::Export(args) => args.output.json,
            ReplicaCommand::Import(args) => args.output.json,
        }
    }
}

pub fn run(command: ReplicaCommand) -> anyhow::Result<()> {
    match command {
        ReplicaCommand::Export(args) => export(&args),
        ReplicaCommand::Import(args) => import(args),
    }
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.dir();
    let now = certd::clock::unix_seconds(super::now());
    let exported =
        replica::export(dir.root(), args.include_root_key, now).map_err(certd::Error::from)?;
    let mut bytes = Vec::new();
    exported
        .package
        .write_tar(&mut bytes)
        .context("cannot make the package")?;
    certd::fsutil::replace_file(&args.out, &bytes, certd::fsutil::SECRET_FILE_MODE)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if args.output.json {
        let files: Vec<serde_json::Value> = exported
            .package
            .files()
            .map(|(name, kind, _)| {
                let secret = matches!(kind, FileKind::Secret | FileKind::RootKey);
                serde_json::json!({ "name": name, "secret": secret })
            })
            .collect();
        let json = serde_json::json!({
            "package": args.out,
            "trust_domain": exported.package.manifest.trust_domain,
            "files": files,
            "left_out": exported.left_out,
            "notes": exported.notes,
        });
        println!("{json}");
        return Ok(());
    }
    let listed: Vec<String> = exported
        .package
        .files()
        .map(|(name, kind, _)| match kind {
            FileKind::Public => name.to_owned(),
            FileKind::Secret | FileKind::RootKey => format!("{name} (0600)"),
        })
        .collect();
    println!(
        "wrote {} (0600) for trust domain {}: {}",
        args.out.display(),
        exported.package.manifest.trust_domain,
        listed.join(", ")
    );
    for left_out in &exported.left_out {
        println!("not included: {left_out}");
    }
    for note in &exported.notes {
        println!("note: {note}");
    }
    Ok(())
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.dir();
    if let Some(url) = &args.database_url {
        StoreSettings::new(Some(url), None)
            .map_err(|message| UsageError(format!("the database URL {message}")))?;
    }
    let fresh = !CaFiles::new(dir.root()).exists();
    if fresh && args.database_url.is_none() {
        return Err(UsageError(format!(
            "{} holds no CA yet: a new replica needs the database the replicas share, --database-url postgresql://… (or CERTD_DATABASE_URL)",
            dir.root().display()
        ))
        .into());
    }
    let package = replica::read_package(&args.package).map_err(certd::Error::from)?;
    let imported = replica::import(dir.root(), &package).map_err(certd::Error::from)?;
    let database = args.database_url.map(|url| DatabaseFile {
        url,
        ca_file: args
            .database_ca_file
            .map(|file| std::path::absolute(&file).unwrap_or(file)),
    });
    if let Some(database) = &database {
        let path = dir.database_settings();
        let unchanged = DatabaseFile::read(&path).is_ok_and(|here| here.as_ref() == Some(database));
        if !unchanged {
            database
                .write(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if args.output.json {
        let json = serde_json::json!({
            "fresh": imported.fresh,
            "trust_domain": imported.trust_domain,
            "data_dir": dir.root(),
            "package": args.package,
            "written": imported.written,
            "removed": imported.removed,
            "database_settings": database.is_some().then(|| dir.database_settings()),
            "notes": imported.notes,
        });
        println!("{json}");
        return Ok(());
    }
    let written = if imported.written.is_empty() {
        "nothing changed".to_owned()
    } else {
        format!("wrote {}", imported.written.join(", "))
    };
    let removed = if imported.removed.is_empty() {
        String::new()
    } else {
        format!("; removed {}", imported.removed.join(", "))
    };
    if imported.fresh {
        println!(
            "set up a replica of trust domain {} in {} (0700, keys 0600) from {}: {written}",
            imported.trust_domain,
            dir.root().display(),
            args.package.display()
        );
    } else {
        println!(
            "updated the replica of trust domain {} in {} from {}: {written}{removed}",
            imported.trust_domain,
            dir.root().display(),
            args.package.display()
        );
    }
    if database.is_some() {
        println!(
            "the database URL is in {} (0600), where certd serve finds it",
            dir.database_settings().display()
        );
    }
    for note in &imported.notes {
        println!("note: {note}");
    }
    Ok(())
}
