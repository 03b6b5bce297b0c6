//! `import`: a replica's data directory set up from a package, or brought
//! up to date after a rotation, in the order the module's documentation
//! gives.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::package::{self, FileKind, Package};
use super::{
    Imported, Names, ReplicaError, cert_of, metadata_of, not_before, read_if_there, single_cert,
};
use crate::CaError;
use crate::files::{self, CaFiles, io_error};
use certd_core::fsutil;

/// Sets `dir` up as a replica from `package`, or, where `dir` holds the
/// same CA already, brings it up to date; refuses a directory holding
/// another CA, and a package older than what `dir` holds.
pub fn import(dir: &Path, package: &Package) -> Result<Imported, ReplicaError> {
    let mut imported = Imported {
        trust_domain: package.manifest.trust_domain.clone(),
        ..Imported::default()
    };
    let ca_files = CaFiles::new(dir);
    // A first import cut short before its last file, ca.toml: finish it.
    let unfinished = !ca_files.metadata.exists()
        && read_if_there(&ca_files.root_cert)?
            .as_deref()
            .map(Vec::as_slice)
            == package.file(&Names::new().root_cert);
    if !ca_files.exists() || unfinished {
        imported.fresh = true;
        fresh(dir, package, &mut imported)?;
    } else {
        same_ca(dir, package)?;
        update(dir, package, &mut imported)?;
    }
    fsutil::sync_dir(dir).map_err(io_error("sync", dir))?;
    Ok(imported)
}

/// Writes and removes files in `dir`, recording what it did.
struct Writer<'a> {
    dir: &'a Path,
    package: &'a Package,
    imported: &'a mut Imported,
}

impl Writer<'_> {
    /// Writes the package's `name` unless `dir` holds the same bytes;
    /// whether it wrote.
    fn write(&mut self, name: &str) -> Result<bool, CaError> {
        let (Some(bytes), Some(kind)) = (self.package.file(name), package::kind_of(name)) else {
            return Ok(false);
        };
        let path = self.dir.join(name);
        if read_if_there(&path)?.is_some_and(|here| here.as_slice() == bytes) {
            return Ok(false);
        }
        fsutil::replace_file(&path, bytes, kind.mode()).map_err(io_error("write", &path))?;
        self.imported.written.push(name.to_owned());
        Ok(true)
    }

    fn remove(&mut self, name: &str) -> Result<(), CaError> {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.imported.removed.push(name.to_owned());
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("remove", &path)(error)),
        }
    }

    /// Whether `dir`'s `name` differs from the package's (absent in the
    /// package: no).
    fn differs(&self, name: &str) -> Result<bool, CaError> {
        let Some(bytes) = self.package.file(name) else {
            return Ok(false);
        };
        Ok(read_if_there(&self.dir.join(name))?.is_none_or(|here| here.as_slice() != bytes))
    }
}

/// A data directory without a CA: every file of the package, `ca.toml`
/// last (its presence says the CA is complete), in a 0700 directory.
fn fresh(dir: &Path, package: &Package, imported: &mut Imported) -> Result<(), CaError> {
    fsutil::create_private_dir(dir).map_err(io_error("create", dir))?;
    fsutil::narrow_to_private(dir).map_err(io_error("protect", dir))?;
    let names = Names::new();
    let mut writer = Writer {
        dir,
        package,
        imported,
    };
    for (name, kind) in package::catalogue() {
        if name == names.ca_metadata {
            continue;
        }
        if package.file(&name).is_some() {
            writer.write(&name)?;
        } else if kind != FileKind::RootKey {
            // Left over from something else: it would be taken for this CA's.
            writer.remove(&name)?;
        }
    }
    writer.write(&names.ca_metadata)?;
    Ok(())
}

/// Refuses `dir` unless it holds the package's CA: the same trust domain,
/// and its root one of the package's (its root, next or retired root, or a
/// root of its bundle).
fn same_ca(dir: &Path, package: &Package) -> Result<(), ReplicaError> {
    let another = |reason: String| ReplicaError::AnotherCa {
        dir: dir.display().to_string(),
        reason,
    };
    let names = Names::new();
    let here = CaFiles::new(dir)
        .read_metadata()
        .map_err(|error| another(format!("its CA files cannot be read: {error}")))?;
    let theirs = metadata_of(package)?;
    if here.trust_domain != theirs.trust_domain {
        return Err(another(format!(
            "trust domain {}, the package's is {}",
            here.trust_domain, theirs.trust_domain
        )));
    }
    let root = files::read_single_cert(&dir.join(&names.root_cert))
        .map_err(|error| another(format!("its root cannot be read: {error}")))?;
    let mut known = Vec::new();
    for name in [
        &names.root_cert,
        &names.next_root_cert,
        &names.retired_root_cert,
        &names.bundle,
    ] {
        let mut reader = package.file(name).unwrap_or_default();
        known.extend(rustls_pemfile::certs(&mut reader).filter_map(Result::ok));
    }
    if !known.contains(&root) {
        let subject = X509Certificate::from_der(&root)
            .map(|(_, cert)| cert.subject().to_string())
            .unwrap_or_default();
        return Err(another(format!(
            "its root \"{subject}\" is none of the package's"
        )));
    }
    Ok(())
}

/// Brings a replica of the package's CA up to date (see the module's
/// documentation for the order).
fn update(dir: &Path, package: &Package, imported: &mut Imported) -> Result<(), ReplicaError> {
    let names = Names::new();
    let mirror = mirror_intermediates(dir, package)?;
    let bundle_first = adds_roots(dir, package)?;
    let mut writer = Writer {
        dir,
        package,
        imported,
    };
    let mut notes = Vec::new();
    // The replica's own marks know at least as much as the package's.
    if !dir.join(&names.store_marks).exists() {
        writer.write(&names.store_marks)?;
    }
    let had_jwt_key = dir.join(&names.jwt_master_key).exists();
    if writer.write(&names.jwt_master_key)? && had_jwt_key {
        notes.push(format!(
            "{} was another secret, so this replica's JWT-SVIDs did not verify against the others' keys: restart certd on {}",
            names.jwt_master_key,
            dir.display()
        ));
    }
    for (name, kind) in package::catalogue() {
        if kind == FileKind::RootKey {
            writer.write(&name)?;
        }
    }
    for name in [
        &names.retired_root_cert,
        &names.next_root_cert,
        &names.next_root_crl,
        &names.next_root_state,
        &names.root_cert,
        &names.root_crl_state,
    ] {
        writer.write(name)?;
    }
    if bundle_first {
        writer.write(&names.bundle)?;
    }
    let mut current_changed = false;
    if mirror {
        // A next intermediate pending here that the package does not hold
        // would be promoted over what is written now.
        if dir.join(&names.next_cert).exists()
            && (package.file(&names.next_cert).is_none() || writer.differs(&names.next_cert)?)
        {
            // The certificate first: without it nothing is pending.
            for name in [&names.next_cert, &names.next_key, &names.next_state] {
                writer.remove(name)?;
            }
        }
        let previous_missing_state = package.file(&names.previous_state).is_some()
            && !dir.join(&names.previous_state).exists();
        if writer.differs(&names.previous_cert)? || previous_missing_state {
            for name in [
                &names.previous_key,
                &names.previous_cert,
                &names.previous_state,
            ] {
                writer.write(name)?;
            }
            if !writer.differs(&names.intermediate_cert)? {
                notes.push(format!(
                    "restart certd on {}: a running certd loads the previous intermediate only with a new current one, and until then answers `unauthorized` for its certificates",
                    dir.display()
                ));
            }
        }
        if writer.differs(&names.intermediate_cert)? {
            writer.write(&names.intermediate_key)?;
            // A key in a token: ca.toml names it.
            writer.write(&names.ca_metadata)?;
            writer.write(&names.intermediate_cert)?;
            current_changed = true;
            notes.push(format!(
                "a running certd on {} signs with the new intermediate within 5 seconds, and keeps answering for the previous one's certificates",
                dir.display()
            ));
        }
        if writer.differs(&names.next_cert)? {
            for name in [&names.next_key, &names.next_state, &names.next_cert] {
                writer.write(name)?;
            }
            notes.push(format!(
                "a running certd on {} promotes the next intermediate within 5 seconds (else at its next start)",
                dir.display()
            ));
        }
    }
    writer.write(&names.root_crl)?;
    if !bundle_first && writer.write(&names.bundle)? && current_changed {
        notes.push(format!(
            "the new {} drops the root the replaced intermediate was signed under: if certd on {} logs that it refused it, restart certd there",
            names.bundle,
            dir.display()
        ));
    }
    // After a root was retired, its next root's files are gone.
    for name in [
        &names.next_root_cert,
        &names.next_root_crl,
        &names.next_root_state,
    ] {
        if package.file(name).is_none() {
            writer.remove(name)?;
        }
    }
    imported.notes.extend(notes);
    Ok(())
}

/// Whether to make `dir`'s intermediates the package's: not when the
/// package is the one whose next intermediate this replica has promoted
/// already (exported where the CA lives before anything promoted it there);
/// refused when the package's newest intermediate is older than the one
/// `dir` signs with.
fn mirror_intermediates(dir: &Path, package: &Package) -> Result<bool, ReplicaError> {
    let names = Names::new();
    let Some(here) = read_if_there(&dir.join(&names.intermediate_cert))?
        .as_deref()
        .and_then(|pem| single_cert(pem))
    else {
        // Missing or unreadable here: the package's repairs it.
        return Ok(true);
    };
    let current = cert_of(package, &names.intermediate_cert)?;
    let next = cert_of(package, &names.next_cert)?;
    if current.as_ref() == Some(&here) {
        return Ok(true);
    }
    if next.as_ref() == Some(&here) {
        return Ok(false);
    }
    let Some(newest) = next.or(current) else {
        return Ok(true);
    };
    let previous_here = read_if_there(&dir.join(&names.previous_cert))?
        .as_deref()
        .and_then(|pem| single_cert(pem));
    if previous_here.as_ref() == Some(&newest) || not_before(&newest) < not_before(&here) {
        return Err(ReplicaError::Older {
            dir: dir.display().to_string(),
            reason: "its newest intermediate was made before the one this replica signs with"
                .into(),
        });
    }
    Ok(true)
}

/// Whether the package's bundle holds every root of `dir`'s.
fn adds_roots(dir: &Path, package: &Package) -> Result<bool, CaError> {
    let name = Names::new().bundle;
    let here = read_if_there(&dir.join(&name))?.unwrap_or_default();
    let theirs = package.file(&name).unwrap_or_default();
    let roots = |mut pem: &[u8]| -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut pem)
            .filter_map(Result::ok)
            .collect()
    };
    let theirs = roots(theirs);
    Ok(roots(&here).iter().all(|root| theirs.contains(root)))
}
