//! The replica package's format: a tar archive (ustar) holding
//! `certd-replica.toml` first (the format version, the trust domain, and
//! every other file's SHA-256), then the CA's files under their names in
//! the data directory, flat, keys with mode 0600 and the rest 0644. `tar
//! tvf replica.tar` lists it.
//!
//! A package is read as hostile input: at most `MAX_PACKAGE_BYTES` in all
//! and `MAX_FILE_BYTES` a file; only regular files, only the names in the
//! catalogue (so no path leads out of the data directory), each once; and
//! every file listed in the manifest with its hash, nothing unlisted.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use certd_core::DataDir;
use certd_core::fsutil::{PUBLIC_FILE_MODE, SECRET_FILE_MODE};

/// The manifest's name in the archive.
pub(crate) const MANIFEST: &str = "certd-replica.toml";
/// The version of this format, in the manifest.
pub const FORMAT_VERSION: u32 = 1;
/// The largest file a package may hold: CA files are a few KiB.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;
/// The largest package.
pub const MAX_PACKAGE_BYTES: u64 = 16 << 20;

/// What a file in a package is, which decides its mode and whether
/// `export` includes it by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Certificates, CRLs and state files: 0644.
    Public,
    /// Intermediate keys and the JWT master secret: 0600.
    Secret,
    /// The root's keys (0600): only with `--include-root-key`.
    RootKey,
}

impl FileKind {
    pub fn mode(self) -> u32 {
        match self {
            FileKind::Public => PUBLIC_FILE_MODE,
            FileKind::Secret | FileKind::RootKey => SECRET_FILE_MODE,
        }
    }
}

/// Every file a package may hold, by its name in the data directory, in
/// the order `export` writes them.
pub fn catalogue() -> Vec<(String, FileKind)> {
    let names = DataDir::new("");
    let name = |path: std::path::PathBuf| {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            // Every DataDir path is the root joined with a file name.
            .expect("a data directory file has a name")
    };
    use FileKind::{Public, RootKey, Secret};
    vec![
        (name(names.ca_metadata()), Public),
        (name(names.root_cert()), Public),
        (name(names.root_key()), RootKey),
        (name(names.root_crl()), Public),
        (name(names.root_crl_state()), Public),
        (name(names.bundle()), Public),
        (name(names.next_root_cert()), Public),
        (name(names.next_root_key()), RootKey),
        (name(names.next_root_crl()), Public),
        (name(names.next_root_state()), Public),
        (name(names.retired_root_cert()), Public),
        (name(names.intermediate_cert()), Public),
        (name(names.intermediate_key()), Secret),
        (name(names.previous_intermediate_cert()), Public),
        (name(names.previous_intermediate_key()), Secret),
        (name(names.previous_intermediate_state()), Public),
        (name(names.next_intermediate_cert()), Public),
        (name(names.next_intermediate_key()), Secret),
        (name(names.next_intermediate_state()), Public),
        (name(names.jwt_master_key()), Secret),
        // Which database is this CA's, and at least what it held: a
        // replica refuses another database, or an older copy.
        (name(names.store_marks()), Public),
    ]
}

/// The kind of the file named `name`, if a package may hold it.
pub fn kind_of(name: &str) -> Option<FileKind> {
    catalogue()
        .into_iter()
        .find(|(known, _)| known == name)
        .map(|(_, kind)| kind)
}

/// `certd-replica.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The trust domain of the CA (from its `ca.toml`).
    pub trust_domain: String,
    /// When the package was made (Unix seconds).
    pub created_at: i64,
    /// Every other file in the package, with its SHA-256 (hex).
    pub files: BTreeMap<String, String>,
}

/// A package in memory: the CA's files by name. Keys are zeroized when it
/// is dropped.
#[derive(Debug)]
pub struct Package {
    pub manifest: Manifest,
    files: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl Package {
    /// A package of `files` (names from the catalogue).
    pub fn new(
        trust_domain: String,
        created_at: i64,
        files: BTreeMap<String, Zeroizing<Vec<u8>>>,
    ) -> Self {
        let hashes = files
            .iter()
            .map(|(name, bytes)| (name.clone(), sha256_hex(bytes)))
            .collect();
        Package {
            manifest: Manifest {
                format: FORMAT_VERSION,
                trust_domain,
                created_at,
                files: hashes,
            },
            files,
        }
    }

    /// The file named `name`, if the package holds it.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|bytes| bytes.as_slice())
    }

    /// Every file, in the catalogue's order.
    pub fn files(&self) -> impl Iterator<Item = (&str, FileKind, &[u8])> {
        catalogue().into_iter().filter_map(|(name, kind)| {
            self.files
                .get_key_value(name.as_str())
                .map(|(name, bytes)| (name.as_str(), kind, bytes.as_slice()))
        })
    }

    /// Writes the package as a tar archive.
    pub fn write_tar(&self, out: impl Write) -> std::io::Result<()> {
        let manifest = toml::to_string(&self.manifest).map_err(std::io::Error::other)?;
        let mtime = u64::try_from(self.manifest.created_at).unwrap_or(0);
        let mut builder = tar::Builder::new(out);
        let mut append = |name: &str, mode: u32, bytes: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(&mut header, name, bytes)
        };
        append(MANIFEST, PUBLIC_FILE_MODE, manifest.as_bytes())?;
        for (name, kind, bytes) in self.files() {
            append(name, kind.mode(), bytes)?;
        }
        builder.into_inner()?.flush()
    }

    /// Reads a package written by `write_tar`, checking everything a
    /// hostile one could get wrong; the reason when it is not acceptable.
    pub fn read_tar(bytes: &[u8]) -> Result<Package, String> {
        if bytes.len() as u64 > MAX_PACKAGE_BYTES {
            return Err(format!("it is larger than {MAX_PACKAGE_BYTES} bytes"));
        }
        let mut manifest = None;
        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(bytes);
        let entries = archive
            .entries()
            .map_err(|error| format!("not a tar archive: {error}"))?;
        for entry in entries {
            let entry = entry.map_err(|error| format!("not a tar archive: {error}"))?;
            let name = entry
                .path()
                .map_err(|error| format!("a file name is not valid: {error}"))?
                .to_str()
                .ok_or("a file name is not UTF-8")?
                .to_owned();
            if name != MANIFEST && kind_of(&name).is_none() {
                return Err(format!("{name:?} is not a file a replica package holds"));
            }
            if !entry.header().entry_type().is_file() {
                return Err(format!("{name:?} is not a regular file"));
            }
            let size = entry
                .header()
                .size()
                .map_err(|error| format!("{name:?}: {error}"))?;
            if size > MAX_FILE_BYTES {
                return Err(format!("{name:?} is larger than {MAX_FILE_BYTES} bytes"));
            }
            let mut contents = Zeroizing::new(Vec::with_capacity(size as usize));
            entry
                .take(MAX_FILE_BYTES)
                .read_to_end(&mut contents)
                .map_err(|error| format!("{name:?} cannot be read: {error}"))?;
            if name == MANIFEST {
                if manifest.is_some() {
                    return Err(format!("{MANIFEST} is there twice"));
                }
                let text = std::str::from_utf8(&contents)
                    .map_err(|_| format!("{MANIFEST} is not text"))?;
                let parsed: Manifest = toml::from_str(text).map_err(|error| {
                    format!(
                        "{MANIFEST}: {}",
                        error.to_string().trim().replace('\n', " ")
                    )
                })?;
                manifest = Some(parsed);
            } else if files.insert(name.clone(), contents).is_some() {
                return Err(format!("{name:?} is there twice"));
            }
        }
        let manifest = manifest.ok_or(format!("it has no {MANIFEST}"))?;
        if manifest.format != FORMAT_VERSION {
            return Err(format!(
                "format {} is not one this certd reads ({FORMAT_VERSION}); export it again with this version",
                manifest.format
            ));
        }
        for (name, hash) in &manifest.files {
            let bytes = files
                .get(name)
                .ok_or_else(|| format!("{name} is listed but missing: the package is cut short"))?;
            if sha256_hex(bytes) != *hash {
                return Err(format!("{name} does not match its SHA-256 in {MANIFEST}"));
            }
        }
        if let Some(unlisted) = files
            .keys()
            .find(|name| !manifest.files.contains_key(*name))
        {
            return Err(format!("{unlisted} is not listed in {MANIFEST}"));
        }
        Ok(Package { manifest, files })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> Package {
        let mut files = BTreeMap::new();
        files.insert("root.pem".to_owned(), Zeroizing::new(b"root".to_vec()));
        files.insert(
            "intermediate.key".to_owned(),
            Zeroizing::new(b"key".to_vec()),
        );
        Package::new("certd.internal".into(), 1_700_000_000, files)
    }

    fn tar_of(package: &Package) -> Vec<u8> {
        let mut bytes = Vec::new();
        package.write_tar(&mut bytes).unwrap();
        bytes
    }

    /// A tar archive of raw entries: (name, entry type, contents), with
    /// the name written into the header as is.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, entry_type, contents) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*entry_type);
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            // Bypasses `set_path`'s own refusal of `..`, as a hostile
            // archive would.
            let field = &mut header.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            if *entry_type == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *contents).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn manifest_for(files: &[(&str, &[u8])]) -> String {
        let hashes = files
            .iter()
            .map(|(name, bytes)| (name.to_string(), sha256_hex(bytes)))
            .collect();
        toml::to_string(&Manifest {
            format: FORMAT_VERSION,
            trust_domain: "certd.internal".into(),
            created_at: 0,
            files: hashes,
        })
        .unwrap()
    }

    /// `input` is refused with a reason containing `expected`.
    fn check(input: &[u8], expected: &str) {
        match Package::read_tar(input) {
            Ok(_) => panic!("accepted; expected a refusal naming {expected:?}"),
            Err(reason) => assert!(
                reason.contains(expected),
                "{reason:?}, expected {expected:?}"
            ),
        }
    }

    #[test]
    fn a_package_reads_back_as_written_with_modes_by_kind() {
        let bytes = tar_of(&package());
        let read = Package::read_tar(&bytes).unwrap();
        assert_eq!(read.manifest, package().manifest);
        assert_eq!(read.file("root.pem"), Some(&b"root"[..]));
        assert_eq!(read.file("intermediate.key"), Some(&b"key"[..]));
        let mut archive = tar::Archive::new(bytes.as_slice());
        let modes: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.path().unwrap().display().to_string();
                (name, entry.header().mode().unwrap())
            })
            .collect();
        assert_eq!(
            modes,
            [
                (MANIFEST.to_owned(), 0o644),
                ("root.pem".to_owned(), 0o644),
                ("intermediate.key".to_owned(), 0o600),
            ]
        );
    }

    #[test]
    fn hostile_packages_are_refused() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let manifest = manifest_for(&[("root.pem", b"root")]);
        let manifest = manifest.as_bytes();
        check(b"not a tar archive at all, just text", "not a tar archive");
        check(
            &raw_tar(&[
                (MANIFEST, Regular, manifest),
                ("../root.pem", Regular, b"root"),
            ]),
            "\"../root.pem\" is not a file a replica package holds",
        );
        check(
            &raw_tar(&[
                (MANIFEST, Regular, manifest),
                ("/etc/cron.d/x", Regular, b"x"),
            ]),
            "is not a file a replica package holds",
        );
        check(
            &raw_tar(&[
                (MANIFEST, Regular, manifest),
                ("ca/root.pem", Regular, b"root"),
            ]),
            "is not a file a replica package holds",
        );
        check(
            &raw_tar(&[(MANIFEST, Regular, manifest), ("db", Regular, b"x")]),
            "\"db\" is not a file a replica package holds",
        );
        check(
            &raw_tar(&[(MANIFEST, Regular, manifest), ("root.pem", Symlink, b"")]),
            "\"root.pem\" is not a regular file",
        );
        check(
            &raw_tar(&[(MANIFEST, Regular, manifest), ("root.pem", Directory, b"")]),
            "not a regular file",
        );
        check(
            &raw_tar(&[
                (MANIFEST, Regular, manifest),
                ("root.pem", Regular, b"root"),
                ("root.pem", Regular, b"root"),
            ]),
            "\"root.pem\" is there twice",
        );
        check(
            &raw_tar(&[("root.pem", Regular, b"root")]),
            "it has no certd-replica.toml",
        );
        check(
            &raw_tar(&[
                (MANIFEST, Regular, manifest),
                ("root.pem", Regular, b"toor"),
            ]),
            "root.pem does not match its SHA-256",
        );
        check(
            &raw_tar(&[(MANIFEST, Regular, manifest)]),
            "root.pem is listed but missing",
        );
        check(
            &raw_tar(&[
                (MANIFEST, Regular, manifest),
                ("root.pem", Regular, b"root"),
                ("bundle.pem", Regular, b"extra"),
            ]),
            "bundle.pem is not listed",
        );
        let future = manifest_for(&[]).replace("format = 1", "format = 2");
        check(
            &raw_tar(&[(MANIFEST, Regular, future.as_bytes())]),
            "format 2 is not one this certd reads",
        );
        let big = vec![b'x'; MAX_FILE_BYTES as usize + 1];
        check(
            &raw_tar(&[(MANIFEST, Regular, manifest), ("root.pem", Regular, &big)]),
            "\"root.pem\" is larger than",
        );
        check(
            &vec![0u8; MAX_PACKAGE_BYTES as usize + 1],
            "larger than 16777216 bytes",
        );
        // Cut short: within a file, or after one (tar blocks are 512 bytes:
        // the manifest's header and text, root.pem's header and text).
        let whole = tar_of(&package());
        check(&whole[..1536], "not a tar archive: unexpected EOF");
        check(&whole[..2048], "intermediate.key is listed but missing");
    }
}
