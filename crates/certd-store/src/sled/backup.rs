//! Backups of the sled database, taken while it serves, and restores.
//!
//! A backup is one file: a header line, then the records of each tree as
//! framed key/value pairs, a summary, and a SHA-256 of everything before
//! it. Certificate records are written unpacked (the codec's bytes, as
//! every other value), so a backup needs none of the store's dictionaries
//! and a restore packs them again. Each record is copied atomically; the indexes (by service, revoked)
//! are not copied but rebuilt from the records on restore, so a backup
//! taken during writes never holds an index that disagrees with its
//! records. Certificates are copied before join tokens: an issuance removes
//! its token before it writes its record, so no backup holds both a
//! certificate and the token that paid for it.
//!
//! A restore verifies the whole file before it writes anything, builds the
//! new database beside the old one, and swaps them; the old one is kept.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::progress::Progress;

use super::{
    ACME_TREE, AUDIT_TREE, BUNDLE_SEQUENCE_KEY, CERTIFICATES_TREE, CRL_NUMBER_KEY, ENTRIES_TREE,
    FEDERATIONS_TREE, JOIN_TOKENS_TREE, META_TREE, Open, POLICY_KEY, PURGED_RECORDS_KEY,
    PURGED_REVOCATIONS_KEY, REVOCATION_COUNT_KEY, STORE_ID_KEY, SUCCESSORS_TREE, successor_of,
};
use crate::codec as record;
use crate::{
    AuditEntry, BackupSummary, EntryRecord, IssuanceRecord, JoinTokenRecord, PolicyRecord,
    RevokedEntry, StoreError,
};

const MAGIC: &[u8] = b"certd-backup 1 sled\n";
const TREE: u8 = b'T';
const PAIR: u8 = b'P';
const END: u8 = b'E';
/// Longest key or value a backup may hold; records are far smaller.
const MAX_FIELD: u32 = 16 * 1024 * 1024;

/// The trees a backup holds, in the order it holds them (see the module
/// documentation for why certificates come before join tokens).
const TREES: [&str; 8] = [
    CERTIFICATES_TREE,
    SUCCESSORS_TREE,
    JOIN_TOKENS_TREE,
    ENTRIES_TREE,
    FEDERATIONS_TREE,
    ACME_TREE,
    AUDIT_TREE,
    META_TREE,
];

/// Writes a backup of `open` to `out`.
pub(super) fn export(open: &Open, out: &mut dyn Write) -> Result<BackupSummary, StoreError> {
    let mut out = Hashing::new(BufWriter::with_capacity(64 * 1024, out));
    let io =
        |error: std::io::Error| StoreError::Backend(format!("cannot write the backup: {error}"));
    out.write_all(MAGIC).map_err(io)?;
    let mut summary = BackupSummary::default();
    for name in TREES {
        let tree = open.db.open_tree(name)?;
        out.write_all(&[TREE, u8::try_from(name.len()).unwrap_or(u8::MAX)])
            .map_err(io)?;
        out.write_all(name.as_bytes()).map_err(io)?;
        for item in tree.iter() {
            let (key, stored) = item?;
            // Records leave packed against the store's dictionaries, which
            // a backup does not hold: it holds the codec's bytes.
            let value = if name == CERTIFICATES_TREE {
                open.packing.unpack(&stored)?.into_owned().into()
            } else {
                stored
            };
            count(&mut summary, name, &key, &value)?;
            out.write_all(&[PAIR]).map_err(io)?;
            write_field(&mut out, &key).map_err(io)?;
            write_field(&mut out, &value).map_err(io)?;
        }
    }
    out.write_all(&[END]).map_err(io)?;
    let digest = out.hasher.clone().finalize();
    out.inner.write_all(&digest).map_err(io)?;
    out.inner.flush().map_err(io)?;
    Ok(summary)
}

/// Tallies one pair into `summary`, decoding it, so a backup never holds a
/// record certd could not read back.
fn count(
    summary: &mut BackupSummary,
    tree: &str,
    key: &[u8],
    value: &[u8],
) -> Result<(), StoreError> {
    match tree {
        CERTIFICATES_TREE => {
            let record: IssuanceRecord = record::decode(value)?;
            summary.records += 1;
            summary.revocations += u64::from(record.revocation.is_some());
        }
        SUCCESSORS_TREE => {
            successor_of(value)?;
        }
        JOIN_TOKENS_TREE => {
            let _: JoinTokenRecord = record::decode(value)?;
            summary.join_tokens += 1;
        }
        ENTRIES_TREE => {
            let _: EntryRecord = record::decode(value)?;
            summary.entries += 1;
        }
        AUDIT_TREE => {
            let _: AuditEntry = record::decode(value)?;
            summary.audit_entries += 1;
        }
        ACME_TREE => {
            super::acme::object_of(value)?;
        }
        _ if key == CRL_NUMBER_KEY => {
            summary.crl_number = <[u8; 8]>::try_from(value)
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("CRL number".into()))?;
        }
        _ if key == PURGED_RECORDS_KEY || key == PURGED_REVOCATIONS_KEY => {
            let count = <[u8; 8]>::try_from(value)
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("purged count".into()))?;
            if key == PURGED_RECORDS_KEY {
                summary.purged_records = count;
            } else {
                summary.purged_revocations = count;
            }
        }
        _ if key == POLICY_KEY => {
            let policy: PolicyRecord = record::decode(value)?;
            summary.policy_version = policy.version;
        }
        _ if key == STORE_ID_KEY => {
            summary.store_id = Some(
                String::from_utf8(value.to_vec())
                    .map_err(|_| StoreError::Corrupt("store id".into()))?,
            );
        }
        _ => {}
    }
    Ok(())
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("a record is larger than 4 GiB"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a restore must not go below: the data directory's marks.
#[derive(Debug, Clone, Default)]
pub struct RestoreFloor {
    /// The store id to keep; the backup's when `None`.
    pub store_id: Option<String>,
    /// The last CRL number published, which the restored store continues
    /// after even when the backup is older.
    pub crl_number: u64,
}

/// Replaces the database in `dir` with the backup at `backup`. The backup
/// is verified first; the new database is built in `dir` + `.restoring`,
/// then the old one (if any) is renamed to `dir` + `.replaced-<time>`, which
/// is returned, and the new one takes its place.
pub fn restore(
    dir: &Path,
    backup: &Path,
    floor: &RestoreFloor,
    progress: &Progress,
) -> Result<(BackupSummary, Option<PathBuf>), StoreError> {
    let summary = verify(backup, progress)?;
    let building = sibling(dir, "restoring");
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| file_error(&building, &e))?;
    }
    let open = Open::at(&building)?;
    progress.stage("records restored", Some(records_in(&summary)));
    import(&open, backup, &summary, floor, progress)?;
    open.durable_blocking()?;
    drop(open);
    let replaced = if dir.exists() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let replaced = sibling(dir, &format!("replaced-{now}"));
        std::fs::rename(dir, &replaced).map_err(|e| file_error(dir, &e))?;
        Some(replaced)
    } else {
        None
    };
    std::fs::rename(&building, dir).map_err(|e| file_error(dir, &e))?;
    certd_core::fsutil::sync_dir(certd_core::fsutil::parent_dir(dir))
        .map_err(|e| file_error(dir, &e))?;
    Ok((summary, replaced))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn file_error(path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// Reads a whole backup, checking its framing, every record and its
/// checksum; returns what it holds. `progress` counts the records read
/// (their total is only known at the end).
pub fn verify(backup: &Path, progress: &Progress) -> Result<BackupSummary, StoreError> {
    let mut summary = BackupSummary::default();
    progress.stage("records checked", None);
    read_pairs(backup, |tree, key, value| {
        count(&mut summary, tree, key, value)?;
        progress.advance(u64::from(counted(tree)));
        Ok(())
    })?;
    Ok(summary)
}

/// The records a summary counts, which progress counts too: certificates,
/// join tokens, entries and audit entries.
fn records_in(summary: &BackupSummary) -> u64 {
    summary.records + summary.join_tokens + summary.entries + summary.audit_entries
}

/// Whether a pair of `tree` is one of the records `records_in` counts.
fn counted(tree: &str) -> bool {
    matches!(
        tree,
        CERTIFICATES_TREE | JOIN_TOKENS_TREE | ENTRIES_TREE | AUDIT_TREE
    )
}

fn import(
    open: &Open,
    backup: &Path,
    summary: &BackupSummary,
    floor: &RestoreFloor,
    progress: &Progress,
) -> Result<(), StoreError> {
    read_pairs(backup, |tree, key, value| {
        progress.advance(u64::from(counted(tree)));
        match tree {
            CERTIFICATES_TREE => {
                let issued: IssuanceRecord = record::decode(value)?;
                let packed = open.packing.pack(value.to_vec(), &issued.der, true)?;
                open.certificates.insert(key, packed)?;
                open.index_by_time(&issued)?;
                open.index_revoked(&issued)?;
                open.index_by_expiry(&issued)?;
                if let Some(revocation) = issued.revocation {
                    let entry = RevokedEntry {
                        serial: issued.serial.clone(),
                        revocation,
                        not_after: issued.not_after,
                    };
                    open.revocations.insert(key, record::encode(&entry)?)?;
                }
            }
            SUCCESSORS_TREE => {
                open.successors.insert(key, value)?;
            }
            JOIN_TOKENS_TREE => {
                open.join_tokens.insert(key, value)?;
            }
            ENTRIES_TREE => {
                open.entries.insert(key, value)?;
            }
            FEDERATIONS_TREE => {
                open.federations.insert(key, value)?;
            }
            ACME_TREE => {
                open.acme.insert(key, value)?;
            }
            // The bundle's sequence goes on from the backup's; the daemon
            // raises it further at its first answer if the bundle changed.
            // The purged counts carry on, so that the restored store's
            // present + purged records match what the backup's held.
            META_TREE
                if key == POLICY_KEY
                    || key == BUNDLE_SEQUENCE_KEY
                    || key == PURGED_RECORDS_KEY
                    || key == PURGED_REVOCATIONS_KEY =>
            {
                open.meta.insert(key, value)?;
            }
            AUDIT_TREE => {
                // New sequence numbers, in the same order: the new database
                // hands out ids from zero.
                let sequence = open.db.generate_id()?;
                open.audit.insert(sequence.to_be_bytes(), value)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    let store_id = floor.store_id.clone().or_else(|| summary.store_id.clone());
    if let Some(store_id) = store_id {
        open.meta.insert(STORE_ID_KEY, store_id.as_bytes())?;
    }
    let crl_number = summary.crl_number.max(floor.crl_number);
    open.meta
        .insert(CRL_NUMBER_KEY, &crl_number.to_be_bytes())?;
    let revocations = summary.revocations + summary.purged_revocations;
    open.meta
        .insert(REVOCATION_COUNT_KEY, &revocations.to_be_bytes())?;
    Ok(())
}

/// Calls `each(tree, key, value)` for every pair in the backup, after
/// checking the framing; fails if the checksum does not match.
fn read_pairs(
    backup: &Path,
    mut each: impl FnMut(&str, &[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::Damaged {
        path: backup.display().to_string(),
        reason: format!("not a usable certd backup: {reason}"),
    };
    let file = File::open(backup).map_err(|e| file_error(backup, &e))?;
    let mut input = HashingReader {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
    };
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| invalid("too short".into()))?;
    if magic != MAGIC {
        return Err(invalid(
            "it does not start with the certd backup header".into(),
        ));
    }
    let mut tree = String::new();
    loop {
        let mut tag = [0u8; 1];
        input
            .read_exact(&mut tag)
            .map_err(|_| invalid("it ends early (truncated?)".into()))?;
        match tag[0] {
            TREE => {
                let mut len = [0u8; 1];
                input
                    .read_exact(&mut len)
                    .map_err(|_| invalid("it ends early (truncated?)".into()))?;
                let mut name = vec![0u8; usize::from(len[0])];
                input
                    .read_exact(&mut name)
                    .map_err(|_| invalid("it ends early (truncated?)".into()))?;
                tree = String::from_utf8(name).map_err(|_| invalid("a bad tree name".into()))?;
                if !TREES.contains(&tree.as_str()) {
                    return Err(invalid(format!("an unknown tree {tree:?}")));
                }
            }
            PAIR => {
                if tree.is_empty() {
                    return Err(invalid("a record outside any tree".into()));
                }
                let key = read_field(&mut input).map_err(invalid)?;
                let value = read_field(&mut input).map_err(invalid)?;
                each(&tree, &key, &value)?;
            }
            END => break,
            other => return Err(invalid(format!("an unknown frame {other:#04x}"))),
        }
    }
    let expected = input.hasher.clone().finalize();
    let mut digest = [0u8; 32];
    input
        .inner
        .read_exact(&mut digest)
        .map_err(|_| invalid("its checksum is missing (truncated?)".into()))?;
    if digest[..] != expected[..] {
        return Err(invalid("its checksum does not match (damaged?)".into()));
    }
    if input.inner.read(&mut [0u8; 1]).map_or(true, |n| n != 0) {
        return Err(invalid("it has bytes after its checksum".into()));
    }
    Ok(())
}

fn read_field(input: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|_| "it ends early (truncated?)".to_owned())?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FIELD {
        return Err(format!("a field of {len} bytes"));
    }
    let mut field = vec![0u8; len as usize];
    input
        .read_exact(&mut field)
        .map_err(|_| "it ends early (truncated?)".to_owned())?;
    Ok(field)
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}
