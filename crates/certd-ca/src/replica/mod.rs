//! Replicas' copies of the CA's files: `certd replica export` packages,
//! where the CA lives, every file a serving certd reads from its data
//! directory (`export`); `certd replica import` sets a replica's data
//! directory up from a package, or brings a replica of the same CA up to
//! date after a rotation (`import`).
//!
//! An update is written in an order a running certd follows, as it follows
//! a rotation: within a group (the current, the previous, the next
//! intermediate) keys and state come before the certificate, and a group is
//! written only when its certificate differs; `intermediate.pem` changing is
//! what makes the daemon reload its signers (`reload_signers`, every 5 s),
//! and a next intermediate is promoted by it (`rotation::promote_pending`).
//! A bundle that adds roots is written before the intermediates, one that
//! drops roots after them. Root keys are included only when asked for, and
//! never removed from a replica. The store marks travel as a file (a new
//! replica gets the package's; an existing one keeps its own, which know at
//! least as much); they are never read here. Never touches the store: which
//! database a replica uses is the CLI's business (`config::DatabaseFile`).

mod import;
pub mod package;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

pub use import::import;
pub use package::{FileKind, MAX_PACKAGE_BYTES, Package};

use super::files::{self, CaFiles, io_error};
use super::key_store::{self, Slot};
use super::{CaError, CaMetadata};
use certd_core::DataDir;

/// Why a package could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{path} is not a usable certd replica package: {reason}")]
    Package { path: String, reason: String },
    #[error("{dir} holds another CA ({reason}); refusing to overwrite it")]
    AnotherCa { dir: String, reason: String },
    #[error(
        "the package is older than the CA files in {dir} ({reason}); export it again where the CA lives"
    )]
    Older { dir: String, reason: String },
    #[error("{0}")]
    Incomplete(String),
    #[error(transparent)]
    Ca(#[from] CaError),
}

impl ReplicaError {
    pub fn kind(&self) -> certd_core::ErrorKind {
        use certd_core::ErrorKind;
        match self {
            ReplicaError::Package { .. } => ErrorKind::InvalidInput,
            ReplicaError::AnotherCa { .. } => ErrorKind::AlreadyExists,
            ReplicaError::Older { .. } | ReplicaError::Incomplete(_) => {
                ErrorKind::FailedPrecondition
            }
            ReplicaError::Ca(error) => error.kind(),
        }
    }
}

/// What `export` made.
#[derive(Debug)]
pub struct Exported {
    pub package: Package,
    /// What stayed behind, and why.
    pub left_out: Vec<String>,
    /// What each replica needs besides the package.
    pub notes: Vec<String>,
}

/// What `import` did.
#[derive(Debug, Default)]
pub struct Imported {
    /// The data directory held no CA before.
    pub fresh: bool,
    pub trust_domain: String,
    /// The files written, in order.
    pub written: Vec<String>,
    /// Files removed (a next intermediate or next root the package no
    /// longer has).
    pub removed: Vec<String>,
    /// What the operator should know: what a running certd does now, and
    /// when it must be restarted.
    pub notes: Vec<String>,
}

/// Packages the CA files of `dir` that a serving certd reads: everything
/// but the root keys (unless `include_root_key`) and the database, with
/// the store marks (which name the replicas' database, or let replicas of
/// a CA that has used none take a new one together).
/// The files are read until two reads agree, so that a rotation promoted
/// meanwhile is not caught half done.
pub fn export(dir: &Path, include_root_key: bool, now: i64) -> Result<Exported, ReplicaError> {
    let ca_files = CaFiles::new(dir);
    if !ca_files.metadata.exists() {
        return Err(CaError::Missing(dir.display().to_string()).into());
    }
    let read_all = || -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, CaError> {
        let mut files = BTreeMap::new();
        for (name, kind) in package::catalogue() {
            if kind == FileKind::RootKey && !include_root_key {
                continue;
            }
            if let Some(bytes) = read_if_there(&dir.join(&name))? {
                files.insert(name, bytes);
            }
        }
        Ok(files)
    };
    let same = |a: &BTreeMap<String, Zeroizing<Vec<u8>>>,
                b: &BTreeMap<String, Zeroizing<Vec<u8>>>| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|((n1, v1), (n2, v2))| n1 == n2 && v1.as_slice() == v2.as_slice())
    };
    let mut files = read_all()?;
    let mut settled = false;
    for _ in 0..3 {
        let again = read_all()?;
        settled = same(&files, &again);
        files = again;
        if settled {
            break;
        }
    }
    if !settled {
        return Err(ReplicaError::Incomplete(format!(
            "the CA files in {} kept changing while they were read (a rotation?); export again",
            dir.display()
        )));
    }
    let metadata = ca_files.read_metadata()?;
    let names = Names::new();
    let mut required = vec![
        &names.root_cert,
        &names.bundle,
        &names.intermediate_cert,
        &names.jwt_master_key,
        &names.store_marks,
    ];
    let store = key_store::of(metadata.intermediate_key.as_ref());
    if store.key_file(Slot::Current, &DataDir::new(dir)).is_some() {
        required.push(&names.intermediate_key);
    }
    for name in required {
        if !files.contains_key(name) {
            let hint = if *name == names.jwt_master_key {
                ": certd serve creates it at its first start; start it once on this directory, then export again"
            } else if *name == names.store_marks {
                ", which tells replicas which database is this CA's (see `certd serve --danger-accept-unmarked-store`)"
            } else {
                ""
            };
            return Err(ReplicaError::Incomplete(format!(
                "{} has no {name}{hint}",
                dir.display()
            )));
        }
    }

    let mut left_out = Vec::new();
    for (name, kind) in package::catalogue() {
        if kind == FileKind::RootKey && !files.contains_key(&name) && dir.join(&name).exists() {
            left_out.push(format!(
                "{name}: the root key stays here (--include-root-key includes it)"
            ));
        }
    }
    left_out.push("the database and database.toml: replicas share the database".into());
    let mut notes = Vec::new();
    if !files.contains_key(&names.root_crl) {
        notes.push(format!(
            "{} has no {}: /root.crl and /crls.pem answer 503 until one is signed (`certd ca sign-root-crl` where the root key is) and imported",
            dir.display(),
            names.root_crl
        ));
    }
    let encrypted = files.iter().any(|(name, bytes)| {
        package::kind_of(name) != Some(FileKind::Public)
            && String::from_utf8_lossy(bytes).contains("ENCRYPTED PRIVATE KEY")
    });
    if encrypted {
        notes.push("the keys are encrypted: every replica needs the passphrase file too (CERTD_KEY_PASSPHRASE_FILE, or [ca] key_passphrase_file)".into());
    }
    if let Some(needs) = store.replica_needs() {
        notes.push(needs);
    }
    let package = Package::new(metadata.trust_domain.to_string(), now, files);
    check(&package)?;
    Ok(Exported {
        package,
        left_out,
        notes,
    })
}

/// Reads the package at `path` (at most `MAX_PACKAGE_BYTES`) and checks
/// that it holds a whole CA: its metadata, root, bundle, intermediate (and
/// key, unless in a token) and JWT master secret, each certificate one
/// that parses, and the intermediate signed by a root of the bundle.
pub fn read_package(path: &Path) -> Result<Package, ReplicaError> {
    use std::io::Read;
    let refused = |reason: String| ReplicaError::Package {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(io_error("read", path))?;
    let mut bytes = Vec::new();
    file.take(MAX_PACKAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    let package = Package::read_tar(&bytes).map_err(refused)?;
    check(&package).map_err(|error| match error {
        ReplicaError::Incomplete(reason) => refused(reason),
        other => other,
    })?;
    Ok(package)
}

/// The names of the files `import` treats specially.
struct Names {
    ca_metadata: String,
    root_cert: String,
    root_crl: String,
    root_crl_state: String,
    bundle: String,
    next_root_cert: String,
    next_root_crl: String,
    next_root_state: String,
    retired_root_cert: String,
    intermediate_cert: String,
    intermediate_key: String,
    previous_cert: String,
    previous_key: String,
    previous_state: String,
    next_cert: String,
    next_key: String,
    next_state: String,
    jwt_master_key: String,
    store_marks: String,
}

impl Names {
    fn new() -> Self {
        let dir = DataDir::new("");
        let name = |path: std::path::PathBuf| path.display().to_string();
        Names {
            ca_metadata: name(dir.ca_metadata()),
            root_cert: name(dir.root_cert()),
            root_crl: name(dir.root_crl()),
            root_crl_state: name(dir.root_crl_state()),
            bundle: name(dir.bundle()),
            next_root_cert: name(dir.next_root_cert()),
            next_root_crl: name(dir.next_root_crl()),
            next_root_state: name(dir.next_root_state()),
            retired_root_cert: name(dir.retired_root_cert()),
            intermediate_cert: name(dir.intermediate_cert()),
            intermediate_key: name(dir.intermediate_key()),
            previous_cert: name(dir.previous_intermediate_cert()),
            previous_key: name(dir.previous_intermediate_key()),
            previous_state: name(dir.previous_intermediate_state()),
            next_cert: name(dir.next_intermediate_cert()),
            next_key: name(dir.next_intermediate_key()),
            next_state: name(dir.next_intermediate_state()),
            jwt_master_key: name(dir.jwt_master_key()),
            store_marks: name(dir.store_marks()),
        }
    }
}

/// Checks that `package` holds a whole CA (see `read_package`).
fn check(package: &Package) -> Result<(), ReplicaError> {
    let names = Names::new();
    let missing = |name: &str| ReplicaError::Incomplete(format!("it has no {name}"));
    let metadata = metadata_of(package)?;
    if metadata.trust_domain.to_string() != package.manifest.trust_domain {
        return Err(ReplicaError::Incomplete(format!(
            "its manifest says trust domain {}, its ca.toml {}",
            package.manifest.trust_domain, metadata.trust_domain
        )));
    }
    for name in [&names.jwt_master_key, &names.bundle, &names.store_marks] {
        package.file(name).ok_or_else(|| missing(name))?;
    }
    // The current key's file, named as in a package (relative), if its
    // store keeps one.
    let store = key_store::of(metadata.intermediate_key.as_ref());
    if let Some(key_file) = store.key_file(Slot::Current, &DataDir::new("")) {
        let name = key_file.display().to_string();
        package.file(&name).ok_or_else(|| missing(&name))?;
    }
    let root = cert_of(package, &names.root_cert)?.ok_or_else(|| missing(&names.root_cert))?;
    let intermediate = cert_of(package, &names.intermediate_cert)?
        .ok_or_else(|| missing(&names.intermediate_cert))?;
    for name in [
        &names.next_root_cert,
        &names.retired_root_cert,
        &names.previous_cert,
        &names.next_cert,
    ] {
        cert_of(package, name)?;
    }
    let bundle = std::str::from_utf8(package.file(&names.bundle).unwrap_or_default())
        .map_err(|_| ReplicaError::Incomplete(format!("{} is not text", names.bundle)))?;
    let bundle = super::bundle::TrustBundle::parse(bundle, &root)
        .map_err(|reason| ReplicaError::Incomplete(format!("{}: {reason}", names.bundle)))?;
    if !bundle
        .roots_der
        .iter()
        .any(|root| files::signed_by(&intermediate, root))
    {
        return Err(ReplicaError::Incomplete(format!(
            "its {} is not signed by a root in its {}",
            names.intermediate_cert, names.bundle
        )));
    }
    Ok(())
}

fn metadata_of(package: &Package) -> Result<CaMetadata, ReplicaError> {
    let name = Names::new().ca_metadata;
    let text = package
        .file(&name)
        .ok_or_else(|| ReplicaError::Incomplete(format!("it has no {name}")))?;
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| toml::from_str(text).ok())
        .ok_or_else(|| ReplicaError::Incomplete(format!("its {name} does not parse")))
}

/// The one certificate in the package's file `name` (DER), if it holds
/// that file.
fn cert_of(package: &Package, name: &str) -> Result<Option<CertificateDer<'static>>, ReplicaError> {
    let Some(bytes) = package.file(name) else {
        return Ok(None);
    };
    single_cert(bytes)
        .map(Some)
        .ok_or_else(|| ReplicaError::Incomplete(format!("its {name} holds no certificate")))
}

fn single_cert(pem: &[u8]) -> Option<CertificateDer<'static>> {
    let mut reader = pem;
    let der = rustls_pemfile::certs(&mut reader).next()?.ok()?;
    X509Certificate::from_der(&der).ok()?;
    Some(der)
}

fn not_before(der: &[u8]) -> i64 {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert.validity().not_before.timestamp())
        .unwrap_or(i64::MIN)
}

fn read_if_there(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, CaError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("read", path)(error)),
    }
}
