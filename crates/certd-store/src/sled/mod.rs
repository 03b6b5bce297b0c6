//! The sled backend: one embedded database under `DATA_DIR/db`.
//!
//! The only code that knows sled. It owns the on-disk format (`codec`, its
//! certificate records packed against dictionaries by `packing`), the
//! group commit that makes writes durable (`commit`), the tree layout
//! below, and recovery from storage faults (`recovery`). sled locks its
//! database to one process, so nothing else writes it; the change feed
//! carries only `Change::Reopened`.
//!
//! **Storage faults.** sled answers every operation after its first I/O
//! error (a full disk, a file-size limit, a failing device) with that same
//! error, even once the cause is gone. So the first such error marks the
//! store faulted: every call then fails at once with `Unavailable` naming
//! the cause, and a recovery thread closes the database and reopens it
//! (sled replays its log, keeping exactly what was made durable) until a
//! probe write is durable again. Join tokens consumed by issuances that
//! failed this way are put back before the store is used again, so
//! "retry later" stays true.

mod acme;
mod backend;
mod backup;
mod commit;
mod federation;
mod packing;
mod recovery;
mod retention;
mod space;

pub(crate) use backend::SledBackend;

pub use backup::{RestoreFloor, restore, verify as verify_backup};
pub use space::{Space, TreeSpace, space};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::broadcast;

use super::codec as record;
use super::marks::StoreMarks;
use super::{
    AuditEntry, CertificateCursor, CertificateWindow, Change, ChangeFeed, EntryRecord, ExpiryRange,
    FederationRecord, ForeignBundle, IssuanceRecord, JoinTokenRecord, ListingOrder, PolicyRecord,
    Revocation, RevokeOutcome, RevokedEntry, Storage, StoreError, Successor, TimeIndex, TokenHash,
};
use certd_core::identity::{Serial, ServiceName, TrustDomain};
use commit::GroupCommit;
use packing::Packing;

/// Issuance records by serial.
const CERTIFICATES_TREE: &str = "certificates";
/// Index: `service/serial` → empty. No longer written: the by-service-time
/// index names the same records (one tree write fewer per issuance, see
/// docs/PERFORMANCE.md, "Retention"). Stores written before keep their
/// entries until the purge deletes them with their records.
const CERTIFICATES_BY_SERVICE_TREE: &str = "certificates-by-service";
/// The dictionaries the `certificates` tree's records are packed against
/// (`packing`): id → the record that started it. Not in backups: a backup
/// holds records unpacked, and a restore packs them again.
const CERTIFICATE_DICTIONARIES_TREE: &str = "certificate-dictionaries";
/// Join tokens by SHA-256 of the token.
const JOIN_TOKENS_TREE: &str = "join-tokens";
/// Index of certificates by issuance time (`time_key ‖ serial` → empty), so
/// the newest N are read in O(N), never by scanning every record.
const CERTIFICATES_BY_TIME_TREE: &str = "certificates-by-time";
/// The same, per service (`service/ ‖ time_key ‖ serial` → empty).
const CERTIFICATES_BY_SERVICE_TIME_TREE: &str = "certificates-by-service-time";
/// The time index of revoked certificates only (`time_key ‖ serial` →
/// empty), written in the revocation's transaction, so a page of revoked
/// certificates reads no unrevoked one.
const REVOKED_BY_TIME_TREE: &str = "certificates-revoked-by-time";
/// The same, per service (`service/ ‖ time_key ‖ serial` → empty).
const REVOKED_BY_SERVICE_TIME_TREE: &str = "certificates-revoked-by-service-time";
/// Index of certificates by expiry (`time_key(not_after) ‖ serial` →
/// empty), so the retention purge finds the oldest expired records in
/// O(batch), never by reading every record.
const CERTIFICATES_BY_EXPIRY_TREE: &str = "certificates-by-expiry";
/// Index of revoked certificates by serial, for building CRLs without
/// reading every record.
const REVOCATIONS_TREE: &str = "revocations";
/// Registration entries by id.
const ENTRIES_TREE: &str = "entries";
/// Audit entries by a monotonic sequence number; only ever appended to.
const AUDIT_TREE: &str = "audit";
/// Counters and other single values.
const META_TREE: &str = "meta";
/// Renewal lineage: predecessor serial → `[presented]` + successor serial.
const SUCCESSORS_TREE: &str = "successors";
/// Key in `meta` of the last CRL number handed out (u64, big-endian).
const CRL_NUMBER_KEY: &[u8] = b"crl-number";
/// Key in `meta` of how many certificates were ever revoked (u64,
/// big-endian), for `store::marks`.
const REVOCATION_COUNT_KEY: &[u8] = b"revocation-count";
/// Key in `meta` of the token policy (`PolicyRecord`).
pub(super) const POLICY_KEY: &[u8] = b"policy";
/// Federation relationships by trust domain.
pub(super) const FEDERATIONS_TREE: &str = "federations";
/// ACME objects (accounts, orders, authorizations, EAB keys) by key; see
/// `acme` for the value's form.
pub(super) const ACME_TREE: &str = "acme";
/// Consumed ACME nonces → their expiry. Not backed up: a nonce outlives
/// no restart of consequence (they expire within the hour).
const ACME_NONCES_TREE: &str = "acme-nonces";
/// Key in `meta` of certd's own bundle's `spiffe_sequence` (u64,
/// big-endian) and the SHA-256 of the content it was given to.
pub(super) const BUNDLE_SEQUENCE_KEY: &[u8] = b"bundle-sequence";
/// Key in `meta` of the store's id (hex), chosen once (`store::marks`).
const STORE_ID_KEY: &[u8] = b"store-id";
/// Key in `meta` that recovery writes to prove the disk takes writes again.
const PROBE_KEY: &[u8] = b"probe";
/// Set once the time indexes hold every record: a store written before
/// them is indexed once, when it is opened.
const TIME_INDEXES_KEY: &[u8] = b"index:certificates-by-time:1";
/// Set once the revoked time indexes hold every revoked record: a store
/// written before them is indexed once, when it is opened.
const REVOKED_INDEXES_KEY: &[u8] = b"index:certificates-revoked-by-time:1";
/// Set once the expiry index holds every record (as `TIME_INDEXES_KEY`).
const EXPIRY_INDEX_KEY: &[u8] = b"index:certificates-by-expiry:1";
/// Keys in `meta` of how many records, and how many revoked records, the
/// retention purge deleted (u64, big-endian), written in the transaction
/// that deletes them, for `store::marks`.
const PURGED_RECORDS_KEY: &[u8] = b"purged-records";
const PURGED_REVOCATIONS_KEY: &[u8] = b"purged-revocations";

/// sled's page cache. Its default (1 GiB) would let a busy daemon grow far
/// past its memory budget. Serials lead with the issuance second, so new
/// records and their index entries land at the right edge of each tree and
/// the retention purge works at the left edge: the working set is a few
/// pages per tree, whatever the store holds. sled counts a page's encoded
/// bytes, and its in-memory nodes take more than that: the store bench
/// (docs/PERFORMANCE.md, "Retention"), alternated runs of 300,000
/// issuances under the purge, held 205–239 MB of RSS at 64 MiB and
/// 140–175 MB at 16 MiB, with no more CPU (24 s a run at 16 MiB, 26–31 s
/// at 64) and no worse p99; once records were packed, 1M issuances held
/// 120–138 MB over the last 500,000 at 8 MiB against 132–153 MB at 16,
/// and the daemon issued as fast ("Packed certificate records"). Listing
/// one service's records reads them from across the tree, so it misses
/// the cache more often; listings are paced far below what that costs.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Join tokens written to one sled batch when many are made at once
/// (`Open::insert_join_tokens_blocking`). sled applies a batch under its
/// global write lock, which every other write (an issuance's record, from
/// an async worker) waits for: at 1,000 a batch held it for milliseconds,
/// ten times in a row for 10,000 tokens (docs/PERFORMANCE.md, "Join
/// tokens made in bulk beside issuance").
const JOIN_TOKENS_PER_BATCH: usize = 64;

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(io) => StoreError::Unavailable(super::describe_io(&io)),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Handle to the database. Cheap to clone; clones share one database, and
/// one recovery when it faults.
#[derive(Debug, Clone)]
pub(crate) struct SledStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    /// The open database; `None` while faulted and not yet reopened.
    open: RwLock<Option<Arc<Open>>>,
    /// Why the store is faulted; `None` while healthy.
    fault: Mutex<Option<String>>,
    /// Join tokens consumed by issuances that failed on a storage fault,
    /// to be put back when the store is reopened.
    tokens_to_restore: Mutex<Vec<(TokenHash, sled::IVec)>>,
    changes: ChangeFeed,
}

/// One open database and its trees.
#[derive(Debug)]
struct Open {
    db: sled::Db,
    audit: sled::Tree,
    certificates: sled::Tree,
    /// What the `certificates` tree's values are packed against.
    packing: Packing,
    certificates_by_service: sled::Tree,
    certificates_by_time: sled::Tree,
    certificates_by_service_time: sled::Tree,
    revoked_by_time: sled::Tree,
    revoked_by_service_time: sled::Tree,
    certificates_by_expiry: sled::Tree,
    join_tokens: sled::Tree,
    entries: sled::Tree,
    revocations: sled::Tree,
    meta: sled::Tree,
    successors: sled::Tree,
    federations: sled::Tree,
    acme: sled::Tree,
    acme_nonces: sled::Tree,
    commit: GroupCommit,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`. Fails with `Locked` if
    /// another process has it open.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open = Open::at(dir)?;
        Ok(SledStore {
            shared: Arc::new(Shared {
                path: dir.to_owned(),
                open: RwLock::new(Some(Arc::new(open))),
                fault: Mutex::new(None),
                tokens_to_restore: Mutex::new(Vec::new()),
                changes: ChangeFeed::default(),
            }),
        })
    }

    /// The open database, or `Unavailable` with the fault's cause while it
    /// is being recovered.
    fn current(&self) -> Result<Arc<Open>, StoreError> {
        let open = match self.shared.open.read() {
            Ok(open) => open.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        open.ok_or_else(|| StoreError::Unavailable(self.shared.fault_reason()))
    }

    /// Runs `read` on the blocking pool: a read that walks a whole tree
    /// (every revocation, token, entry, a service's records, a listing
    /// page), or a write of many keys (join tokens made in bulk), must not
    /// hold an async worker, or every issuance queued on
    /// that worker waits behind it (ARCHITECTURE.md, "No request waits
    /// behind a scan").
    async fn off_worker<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Open) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let open = self.current()?;
        let result = tokio::task::spawn_blocking(move || read(&open))
            .await
            .unwrap_or_else(|error| {
                Err(StoreError::Backend(format!(
                    "a read on the blocking pool stopped: {error}"
                )))
            });
        self.watch(result)
    }

    /// Passes `result` on; a storage fault in it starts recovery first.
    fn watch<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &result
            && error.is_storage_fault()
        {
            recovery::fault(&self.shared, error);
        }
        result
    }
}

impl Shared {
    fn fault_reason(&self) -> String {
        let fault = match self.fault.lock() {
            Ok(fault) => fault.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        fault.unwrap_or_else(|| "the database is being reopened".into())
    }
}

impl Open {
    /// Opens (or creates) the database in `dir`, recovering sled's log.
    fn at(dir: &Path) -> Result<Self, StoreError> {
        let cannot_open = |source: std::io::Error| StoreError::Opening {
            path: dir.display().to_string(),
            source: Box::new(source),
        };
        certd_core::fsutil::create_private_dir(dir).map_err(cannot_open)?;
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
        let db = without_panicking(|| config.open())
            .map_err(|reason| StoreError::Damaged {
                path: dir.display().to_string(),
                reason,
            })?
            .map_err(|source| opening_failed(dir, source))?;
        let data_file = File::open(dir.join("db")).map_err(cannot_open)?;
        let commit = GroupCommit::start(db.clone(), data_file).map_err(cannot_open)?;
        let open = Open {
            certificates: db
                .open_tree(CERTIFICATES_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            packing: db
                .open_tree(CERTIFICATE_DICTIONARIES_TREE)
                .map_err(|e| opening_failed(dir, e))
                .and_then(|tree| {
                    Packing::open(tree).map_err(|e| StoreError::Open {
                        path: dir.display().to_string(),
                        reason: format!("reading the certificate dictionaries: {e}"),
                    })
                })?,
            certificates_by_time: db
                .open_tree(CERTIFICATES_BY_TIME_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            certificates_by_service_time: db
                .open_tree(CERTIFICATES_BY_SERVICE_TIME_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            certificates_by_service: db
                .open_tree(CERTIFICATES_BY_SERVICE_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            revoked_by_time: db
                .open_tree(REVOKED_BY_TIME_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            revoked_by_service_time: db
                .open_tree(REVOKED_BY_SERVICE_TIME_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            certificates_by_expiry: db
                .open_tree(CERTIFICATES_BY_EXPIRY_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            join_tokens: db
                .open_tree(JOIN_TOKENS_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            entries: db
                .open_tree(ENTRIES_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            revocations: db
                .open_tree(REVOCATIONS_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            meta: db
                .open_tree(META_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            audit: db
                .open_tree(AUDIT_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            successors: db
                .open_tree(SUCCESSORS_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            federations: db
                .open_tree(FEDERATIONS_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            acme: db
                .open_tree(ACME_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            acme_nonces: db
                .open_tree(ACME_NONCES_TREE)
                .map_err(|e| opening_failed(dir, e))?,
            db,
            commit,
        };
        open.index_by_time_once().map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            reason: format!("indexing certificates by time: {e}"),
        })?;
        open.index_by_expiry_once().map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            reason: format!("indexing certificates by expiry: {e}"),
        })?;
        Ok(open)
    }

    /// Indexes every record by time (and the revoked ones in the revoked
    /// time indexes), once, for a store written before those indexes (at
    /// open, before anything is served); a store that has them is not read.
    fn index_by_time_once(&self) -> Result<(), StoreError> {
        let by_time = self.meta.contains_key(TIME_INDEXES_KEY)?;
        let revoked = self.meta.contains_key(REVOKED_INDEXES_KEY)?;
        if by_time && revoked {
            return Ok(());
        }
        for item in self.certificates.iter() {
            let (_, value) = item?;
            let record = self.read_certificate(&value)?;
            if !by_time {
                self.index_by_time(&record)?;
            }
            self.index_revoked(&record)?;
        }
        self.meta.insert(TIME_INDEXES_KEY, &[])?;
        self.meta.insert(REVOKED_INDEXES_KEY, &[])?;
        self.db.flush()?;
        Ok(())
    }

    /// Adds `record`, if it is revoked, to the revoked time indexes.
    fn index_revoked(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        if record.revocation.is_some() {
            self.revoked_by_time
                .insert(time_index_key(record.issued_at, &record.serial), &[])?;
            self.revoked_by_service_time.insert(
                service_time_index_key(&record.service, record.issued_at, &record.serial),
                &[],
            )?;
        }
        Ok(())
    }

    /// Indexes every record by expiry, once, for a store written before
    /// the expiry index (at open, before anything is served).
    fn index_by_expiry_once(&self) -> Result<(), StoreError> {
        if self.meta.contains_key(EXPIRY_INDEX_KEY)? {
            return Ok(());
        }
        for item in self.certificates.iter() {
            let (_, value) = item?;
            let record = self.read_certificate(&value)?;
            self.index_by_expiry(&record)?;
        }
        self.meta.insert(EXPIRY_INDEX_KEY, &[])?;
        self.db.flush()?;
        Ok(())
    }

    /// Adds `record` to the expiry index; whether the key was new.
    fn index_by_expiry(&self, record: &IssuanceRecord) -> Result<bool, StoreError> {
        Ok(self
            .certificates_by_expiry
            .insert(time_index_key(record.not_after, &record.serial), &[])?
            .is_none())
    }

    /// Adds `record` to the time indexes; whether each key was new.
    fn index_by_time(&self, record: &IssuanceRecord) -> Result<[bool; 2], StoreError> {
        let by_time = self
            .certificates_by_time
            .insert(time_index_key(record.issued_at, &record.serial), &[])?
            .is_none();
        let by_service_time = self
            .certificates_by_service_time
            .insert(
                service_time_index_key(&record.service, record.issued_at, &record.serial),
                &[],
            )?
            .is_none();
        Ok([by_time, by_service_time])
    }

    /// The `certificates` tree's value of `record`: the codec's bytes,
    /// packed (`packing`).
    fn stored_certificate(&self, record: &IssuanceRecord) -> Result<Vec<u8>, StoreError> {
        self.packing
            .pack(record::encode(record)?, &record.der, true)
    }

    /// The record a value of the `certificates` tree holds.
    fn read_certificate(&self, stored: &[u8]) -> Result<IssuanceRecord, StoreError> {
        record::decode(&self.packing.unpack(stored)?)
    }

    /// The write of `record_issuance` without waiting for durability; the
    /// caller must `durable().await` before the certificate leaves certd.
    /// `consumed` receives the token's stored value while this call holds it
    /// consumed, so a caller whose write then fails can put it back.
    ///
    /// Three atomic steps, in an order chosen so that a crash after any of
    /// them (sled recovers a prefix of its log) loses no issued certificate
    /// and reuses no serial: consume the token (exactly one caller can), add
    /// the index entries (readers skip an entry without a record), then
    /// insert the record only if its serial is free. They are not one
    /// sled transaction because sled's transactions cost several times more
    /// (see docs/PERFORMANCE.md); the worst a crash between steps can do is
    /// consume a token whose certificate was never returned. Before them,
    /// packing the record may start its issuer's dictionary (`packing`):
    /// a crash after that leaves a dictionary no record names yet, which
    /// the issuer's next record uses.
    fn write_issuance(
        &self,
        record: &IssuanceRecord,
        token: Option<&TokenHash>,
        consumed: &mut Option<sled::IVec>,
    ) -> Result<(), StoreError> {
        let value = self.stored_certificate(record)?;
        if let Some(token) = token {
            match self.join_tokens.remove(token.as_slice())? {
                Some(value) => *consumed = Some(value),
                None => return Err(StoreError::TokenAlreadyUsed),
            }
        }
        let [by_time_is_new, by_service_time_is_new] = self.index_by_time(record)?;
        let by_expiry_is_new = self.index_by_expiry(record)?;
        let inserted = self.certificates.compare_and_swap(
            record.serial.as_bytes(),
            None as Option<&[u8]>,
            Some(value),
        )?;
        if inserted.is_err() {
            // Undo what this call did, so a refused write changes nothing.
            if by_time_is_new {
                self.certificates_by_time
                    .remove(time_index_key(record.issued_at, &record.serial))?;
            }
            if by_expiry_is_new {
                self.certificates_by_expiry
                    .remove(time_index_key(record.not_after, &record.serial))?;
            }
            if by_service_time_is_new {
                self.certificates_by_service_time
                    .remove(service_time_index_key(
                        &record.service,
                        record.issued_at,
                        &record.serial,
                    ))?;
            }
            if let (Some(token), Some(value)) = (token, consumed.take()) {
                self.join_tokens.insert(token.as_slice(), value)?;
            }
            return Err(StoreError::SerialTaken(record.serial.clone()));
        }
        Ok(())
    }

    /// What the store holds now. Revocations are a count kept in `meta` by
    /// `revoke` (the revocation index forgets expired certificates, so its
    /// size would go down); a store from before the count is counted once.
    fn marks(&self) -> Result<StoreMarks, StoreError> {
        let store_id = match self.meta.get(STORE_ID_KEY)? {
            Some(bytes) => Some(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| StoreError::Corrupt("store id".into()))?,
            ),
            None => None,
        };
        let crl_number = self
            .meta
            .get(CRL_NUMBER_KEY)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let revocations = match self
            .meta
            .get(REVOCATION_COUNT_KEY)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
        {
            Some(count) => u64::from_be_bytes(count),
            None => {
                // A store from before the count: count once, then keep it.
                let mut revocations = 0u64;
                for item in self.certificates.iter() {
                    let (_, value) = item?;
                    let record = self.read_certificate(&value)?;
                    revocations += u64::from(record.revocation.is_some());
                }
                self.meta
                    .compare_and_swap(
                        REVOCATION_COUNT_KEY,
                        None as Option<&[u8]>,
                        Some(&revocations.to_be_bytes()[..]),
                    )?
                    .map_err(|_| StoreError::Corrupt("revocation count".into()))?;
                revocations
            }
        };
        Ok(StoreMarks {
            store_id,
            crl_number,
            // Counting would read every record; `newest_serial` checks.
            records: None,
            purged_records: meta_count(&self.meta, PURGED_RECORDS_KEY)?,
            has_records: !self.certificates.is_empty(),
            revocations,
        })
    }

    /// Waits until every write made so far is on stable storage.
    async fn durable(&self) -> Result<(), StoreError> {
        self.commit.durable().await.map_err(StoreError::Durability)
    }

    /// `durable` for a write announced with `write_coming`: the
    /// announcement ends once the request is queued.
    async fn durable_announced(&self, announced: super::WriteComing) -> Result<(), StoreError> {
        self.commit
            .durable_announced(announced)
            .await
            .map_err(StoreError::Durability)
    }

    /// `durable`, for a thread outside the runtime.
    fn durable_blocking(&self) -> Result<(), StoreError> {
        self.commit
            .durable_blocking()
            .map_err(StoreError::Durability)
    }

    /// Revokes one certificate and returns once that is durable; `None` if
    /// the serial is unknown. Revoking twice keeps the first time and reason.
    async fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        let key = serial.as_bytes();
        let outcome = (
            &self.certificates,
            &self.revocations,
            &self.meta,
            &self.revoked_by_time,
            &self.revoked_by_service_time,
        )
            .transaction(
                |(certificates, revocations, meta, revoked_by_time, revoked_by_service_time)| {
                    let Some(bytes) = certificates.get(key)? else {
                        return Ok(None);
                    };
                    let mut record = self
                        .read_certificate(&bytes)
                        .map_err(ConflictableTransactionError::Abort)?;
                    if record.revocation.is_some() {
                        return Ok(Some(RevokeOutcome::AlreadyRevoked(record)));
                    }
                    record.revocation = Some(revocation);
                    let entry = RevokedEntry {
                        serial: record.serial.clone(),
                        revocation,
                        not_after: record.not_after,
                    };
                    // No dictionary is started inside the transaction (its
                    // insert would be outside it): a record whose issuer
                    // has none (one written before packing, or past the
                    // bound) is stored as it is, as it was.
                    let encoded = record::encode(&record)
                        .and_then(|encoded| self.packing.pack(encoded, &record.der, false))
                        .map_err(ConflictableTransactionError::Abort)?;
                    let encoded_entry =
                        record::encode(&entry).map_err(ConflictableTransactionError::Abort)?;
                    certificates.insert(key, encoded)?;
                    revocations.insert(key, encoded_entry)?;
                    revoked_by_time
                        .insert(time_index_key(record.issued_at, &record.serial), &[])?;
                    revoked_by_service_time.insert(
                        service_time_index_key(&record.service, record.issued_at, &record.serial),
                        &[],
                    )?;
                    // Counted only once the count exists (`marks` creates it).
                    if let Some(count) = meta.get(REVOCATION_COUNT_KEY)? {
                        let count = <[u8; 8]>::try_from(count.as_ref())
                            .map(u64::from_be_bytes)
                            .unwrap_or(0);
                        meta.insert(REVOCATION_COUNT_KEY, &(count + 1).to_be_bytes())?;
                    }
                    Ok(Some(RevokeOutcome::Revoked(record)))
                },
            );
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(TransactionError::Abort(error)) => return Err(error),
            Err(TransactionError::Storage(error)) => return Err(error.into()),
        };
        // Already revoked too: the revocation found may be another
        // request's that is not yet durable (a retried `revoke --service`
        // beside the first), and this answer says it is.
        if outcome.is_some() {
            self.durable().await?;
        }
        Ok(outcome)
    }

    /// Revoked certificates that have not yet expired at `now`: what a CRL
    /// lists. Entries of expired certificates are skipped.
    fn revoked_unexpired(&self, now: i64) -> Result<Vec<RevokedEntry>, StoreError> {
        let mut entries = Vec::new();
        for item in self.revocations.iter() {
            let (_, value) = item?;
            let entry: RevokedEntry = record::decode(&value)?;
            if entry.not_after >= now {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// Deletes revocation index entries of certificates expired before
    /// `now` (the records themselves stay); returns how many.
    fn prune_expired_revocations(&self, now: i64) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for item in self.revocations.iter() {
            let (key, value) = item?;
            let entry: RevokedEntry = record::decode(&value)?;
            if entry.not_after < now {
                self.revocations.remove(key)?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// The next CRL number: strictly greater than every number handed out
    /// before, across restarts and crashes (it is durable when returned).
    async fn next_crl_number(&self) -> Result<u64, StoreError> {
        let updated = self.meta.update_and_fetch(CRL_NUMBER_KEY, |old| {
            let last = old
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map_or(0, u64::from_be_bytes);
            Some(last.saturating_add(1).to_be_bytes().to_vec())
        })?;
        let number = updated
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::Corrupt("CRL number".into()))?;
        self.durable().await?;
        Ok(number)
    }

    /// Appends an audit entry. It becomes durable with the next flush (the
    /// next issuance's group commit, or sled's own within half a second);
    /// the decision it describes was made durable before, where that matters.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let sequence = self.db.generate_id()?;
        self.audit
            .insert(sequence.to_be_bytes(), record::encode(entry)?)?;
        Ok(())
    }

    /// Audit entries at or after `since` (Unix seconds), oldest first; at
    /// most the last `limit` of them.
    fn audit_since(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        // Newest first, in append order, so `limit` entries cost O(limit)
        // reads. Append order is time order but for clocks a little apart
        // (replicas, a CLI's own clock): an entry older than `since` ends
        // the walk only once it is older by more than that slack.
        const CLOCK_SLACK: i64 = 300;
        let mut newest_first = Vec::new();
        for item in self.audit.iter().rev() {
            if newest_first.len() >= limit {
                break;
            }
            let (_, value) = item?;
            let entry: AuditEntry = record::decode(&value)?;
            if entry.at >= since {
                newest_first.push(entry);
            } else if entry.at < since.saturating_sub(CLOCK_SLACK) {
                break;
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Whether a serial is already recorded.
    async fn serial_exists(&self, serial: &Serial) -> Result<bool, StoreError> {
        Ok(self.certificates.contains_key(serial.as_bytes())?)
    }

    fn successor(&self, predecessor: &Serial) -> Result<Option<Successor>, StoreError> {
        self.successors
            .get(predecessor.as_bytes())?
            .map(|bytes| successor_of(&bytes))
            .transpose()
    }

    fn swap_successor(
        &self,
        predecessor: &Serial,
        expected: Option<&Successor>,
        new: &Successor,
    ) -> Result<bool, StoreError> {
        let swapped = self.successors.compare_and_swap(
            predecessor.as_bytes(),
            expected.map(successor_bytes),
            Some(successor_bytes(new)),
        )?;
        Ok(swapped.is_ok())
    }

    fn all_successors(&self) -> Result<Vec<(Serial, Successor)>, StoreError> {
        self.successors
            .iter()
            .map(|item| {
                let (key, value) = item?;
                Ok((Serial::from_stored(key.to_vec()), successor_of(&value)?))
            })
            .collect()
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        self.certificates
            .get(serial.as_bytes())?
            .map(|bytes| self.read_certificate(&bytes))
            .transpose()
    }

    /// Every record, or those of one service, in serial order.
    fn certificates(
        &self,
        service: Option<&ServiceName>,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        let Some(service) = service else {
            return self
                .certificates
                .iter()
                .map(|entry| self.read_certificate(&entry?.1))
                .collect();
        };
        // The by-service-time index holds every record of the service (a
        // store written before it is indexed once, when opened), in time
        // order; sorted back into serial order, as the whole store lists.
        let prefix = service_prefix(service);
        let skip = prefix.len() + TIME_KEY_LEN;
        let mut records = Vec::new();
        for entry in self.certificates_by_service_time.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let serial = key.get(skip..).unwrap_or_default();
            if let Some(bytes) = self.certificates.get(serial)? {
                records.push(self.read_certificate(&bytes)?);
            }
        }
        records.sort_by(|a, b| a.serial.as_bytes().cmp(b.serial.as_bytes()));
        Ok(records)
    }

    /// The `limit` most recently issued records, or one service's, newest
    /// first. Memory stays bounded by `limit` however large the store.
    async fn newest_certificates(
        &self,
        service: Option<&ServiceName>,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        // Newest first from the time index: O(limit) reads, whatever the
        // store holds. An index key whose record is missing (a write cut
        // short before its record landed) is skipped.
        let (keys, skip) = match service {
            None => (self.certificates_by_time.iter(), TIME_KEY_LEN),
            Some(service) => {
                let prefix = service_prefix(service);
                let skip = prefix.len() + TIME_KEY_LEN;
                (self.certificates_by_service_time.scan_prefix(prefix), skip)
            }
        };
        let mut records = Vec::with_capacity(limit.min(4096));
        for key in keys.rev() {
            if records.len() >= limit {
                break;
            }
            let (key, _) = key?;
            let serial = key.get(skip..).unwrap_or_default();
            if let Some(bytes) = self.certificates.get(serial)? {
                records.push(self.read_certificate(&bytes)?);
            }
        }
        Ok(records)
    }

    /// Up to `limit` time-index entries older than `before`, newest first,
    /// with their records (see `Storage::certificates_before`). One more key
    /// is read, without its record, to tell whether anything is left.
    fn certificates_before(
        &self,
        index: TimeIndex<'_>,
        before: Option<&CertificateCursor>,
        limit: usize,
    ) -> Result<CertificateWindow, StoreError> {
        if let Some(range) = index.expiry {
            return self.certificates_by_expiry_before(range, before, limit);
        }
        let (tree, prefix) = match (index.service, index.revoked_only) {
            (None, false) => (&self.certificates_by_time, Vec::new()),
            (None, true) => (&self.revoked_by_time, Vec::new()),
            (Some(service), false) => (&self.certificates_by_service_time, service_prefix(service)),
            (Some(service), true) => (&self.revoked_by_service_time, service_prefix(service)),
        };
        let keys = match before {
            None => tree.scan_prefix(&prefix),
            Some(cursor) => {
                let mut upper = prefix.clone();
                upper.extend_from_slice(&time_index_key(cursor.at, &cursor.serial));
                tree.range(prefix.clone()..upper)
            }
        };
        let mut window = CertificateWindow::default();
        for key in keys.rev() {
            let (key, _) = key?;
            if window.examined == limit {
                window.more = true;
                break;
            }
            window.examined += 1;
            let position = position_of(
                ListingOrder::Issued,
                key.get(prefix.len()..).unwrap_or_default(),
            )?;
            if let Some(bytes) = self.certificates.get(position.serial.as_bytes())? {
                window.records.push(self.read_certificate(&bytes)?);
            }
            window.scanned_to = Some(position);
        }
        Ok(window)
    }

    /// Up to `limit` expiry-index entries within `range` and below
    /// `before`, latest expiry first, and their records: `certificates_before`
    /// for a listing by expiry.
    fn certificates_by_expiry_before(
        &self,
        range: ExpiryRange,
        before: Option<&CertificateCursor>,
        limit: usize,
    ) -> Result<CertificateWindow, StoreError> {
        let lower = time_key(range.from).to_vec();
        let upper = match before {
            Some(cursor) if cursor.at <= range.to => time_index_key(cursor.at, &cursor.serial),
            // Every key at `range.to` sorts below the next second's.
            _ => match range.to.checked_add(1) {
                Some(next) => time_key(next).to_vec(),
                None => vec![0xff; TIME_KEY_LEN + 1],
            },
        };
        let mut window = CertificateWindow::default();
        if lower >= upper {
            return Ok(window);
        }
        for key in self.certificates_by_expiry.range(lower..upper).rev() {
            let (key, _) = key?;
            if window.examined == limit {
                window.more = true;
                break;
            }
            window.examined += 1;
            let position = position_of(ListingOrder::Expiry, &key)?;
            if let Some(bytes) = self.certificates.get(position.serial.as_bytes())? {
                window.records.push(self.read_certificate(&bytes)?);
            }
            window.scanned_to = Some(position);
        }
        Ok(window)
    }

    /// Stores new join tokens, each hash with the encoded record at its
    /// index in `records`, at most `JOIN_TOKENS_PER_BATCH` to a sled batch. One batch of a whole
    /// request (up to 100,000) kept every node version it replaced until it
    /// ended: the daemon's memory peaked at about 1 GB while a bench made
    /// its 200,000 tokens (docs/PERFORMANCE.md, "Daemon").
    /// Nothing needs the request to be one batch: a token is of use only
    /// once its creator is given it, after all are durable, and those a
    /// crash or a fault leaves stored unseen just expire. Blocking: for the
    /// blocking pool (`SledStore::off_worker`).
    fn insert_join_tokens_blocking(
        &self,
        keys: &[(TokenHash, usize)],
        records: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        for chunk in keys.chunks(JOIN_TOKENS_PER_BATCH) {
            let mut batch = sled::Batch::default();
            for (hash, record_index) in chunk {
                let value = records
                    .get(*record_index)
                    .ok_or_else(|| StoreError::Backend("a join token without its record".into()))?;
                batch.insert(hash.as_slice(), value.as_slice());
            }
            self.join_tokens.apply_batch(batch)?;
            // Bulk token making is an operator's batch: a hint to the
            // scheduler to run the issuances waiting for this core first
            // (measured: it does, docs/PERFORMANCE.md); an idle core it
            // keeps.
            std::thread::yield_now();
        }
        Ok(())
    }

    async fn join_token(&self, hash: &TokenHash) -> Result<Option<JoinTokenRecord>, StoreError> {
        self.join_tokens
            .get(hash.as_slice())?
            .map(|bytes| record::decode(&bytes))
            .transpose()
    }

    /// Deletes these tokens, each only if it is still there (a token taken
    /// by an issuance meanwhile is that issuance's); returns how many.
    /// Blocking, for the blocking pool: an operator's revocation of a
    /// service's tokens may name 100,000, which on an async worker held it
    /// for most of a second (docs/PERFORMANCE.md, "Join tokens made in
    /// bulk beside issuance"). One `remove` each (no sled batch: it would
    /// hold the global write lock), yielding the core after every
    /// `JOIN_TOKENS_PER_BATCH`, as `insert_join_tokens_blocking` does.
    fn remove_join_tokens_blocking(&self, hashes: &[TokenHash]) -> Result<usize, StoreError> {
        let mut removed = 0;
        for chunk in hashes.chunks(JOIN_TOKENS_PER_BATCH) {
            for hash in chunk {
                if self.join_tokens.remove(hash.as_slice())?.is_some() {
                    removed += 1;
                }
            }
            std::thread::yield_now();
        }
        Ok(removed)
    }

    /// Deletes tokens that expired before `now`; returns how many.
    fn purge_expired_tokens(&self, now: i64) -> Result<usize, StoreError> {
        let mut purged = 0;
        for entry in self.join_tokens.iter() {
            let (key, value) = entry?;
            let token: JoinTokenRecord = record::decode(&value)?;
            if token.expires_at < now
                && self
                    .join_tokens
                    .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)?
                    .is_ok()
            {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Stores a new registration entry and returns once it is durable;
    /// `false` (and nothing written) if its id is taken.
    async fn insert_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        let inserted = self
            .entries
            .compare_and_swap(
                entry.id.as_bytes(),
                None as Option<&[u8]>,
                Some(record::encode(entry)?),
            )?
            .is_ok();
        if inserted {
            self.durable().await?;
        }
        Ok(inserted)
    }

    /// Replaces an existing registration entry (same id) and returns once
    /// that is durable; `false` (and nothing written) if there is none.
    async fn replace_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        let key = entry.id.as_bytes();
        let Some(current) = self.entries.get(key)? else {
            return Ok(false);
        };
        let replaced = self
            .entries
            .compare_and_swap(key, Some(current), Some(record::encode(entry)?))?
            .is_ok();
        if replaced {
            self.durable().await?;
        }
        Ok(replaced)
    }

    /// Deletes a registration entry and returns it once that is durable;
    /// `None` if there is no such entry.
    async fn remove_entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        let Some(bytes) = self.entries.remove(id.as_bytes())? else {
            return Ok(None);
        };
        self.durable().await?;
        record::decode(&bytes).map(Some)
    }

    /// Every registration entry, in id order.
    fn entries(&self) -> Result<Vec<EntryRecord>, StoreError> {
        self.entries
            .iter()
            .map(|item| record::decode(&item?.1))
            .collect()
    }

    /// How many issuance records exist.
    fn record_count(&self) -> Result<u64, StoreError> {
        Ok(self.certificates.len() as u64)
    }

    /// How many join tokens exist (unused, used ones are deleted).
    fn join_token_count(&self) -> Result<u64, StoreError> {
        Ok(self.join_tokens.len() as u64)
    }

    async fn entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        self.entries
            .get(id.as_bytes())?
            .map(|bytes| record::decode(&bytes))
            .transpose()
    }

    async fn policy(&self) -> Result<Option<PolicyRecord>, StoreError> {
        self.meta
            .get(POLICY_KEY)?
            .map(|bytes| record::decode(&bytes))
            .transpose()
    }

    /// Compare-and-swap on the stored bytes, so of two concurrent
    /// replacements of one version exactly one is stored.
    async fn replace_policy(
        &self,
        expected: u64,
        policy: &PolicyRecord,
    ) -> Result<bool, StoreError> {
        let current = self.meta.get(POLICY_KEY)?;
        let current_version = match &current {
            Some(bytes) => record::decode::<PolicyRecord>(bytes)?.version,
            None => 0,
        };
        if current_version != expected || policy.version <= expected {
            return Ok(false);
        }
        let replaced = self
            .meta
            .compare_and_swap(POLICY_KEY, current, Some(record::encode(policy)?))?
            .is_ok();
        if replaced {
            self.durable().await?;
        }
        Ok(replaced)
    }
}

/// Every call goes to the open database through `current()`, and its
/// result through `watch`, which starts recovery on a storage fault.
#[async_trait]
impl Storage for SledStore {
    fn location(&self) -> String {
        self.shared.path.display().to_string()
    }

    /// Records an issuance, consuming `token` first when given (see
    /// `Open::write_issuance`), and returns once the record is durable.
    /// Exactly one of several concurrent calls with one token succeeds. A
    /// token consumed by a call that fails on a storage fault is put back
    /// when the store is reopened.
    async fn record_announced_issuance(
        &self,
        record: &IssuanceRecord,
        token: Option<&TokenHash>,
        announced: super::WriteComing,
    ) -> Result<(), StoreError> {
        let open = self.current()?;
        let mut consumed = None;
        let result = match open.write_issuance(record, token, &mut consumed) {
            Ok(()) => open.durable_announced(announced).await,
            Err(error) => Err(error),
        };
        if let (Err(error), Some(token), Some(value)) = (&result, token, consumed)
            && error.is_storage_fault()
        {
            recovery::restore_later(&self.shared, *token, value);
        }
        self.watch(result)
    }

    async fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        let open = self.current()?;
        self.watch(open.revoke(serial, revocation).await)
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.certificate(serial).await)
    }

    async fn successor(&self, predecessor: &Serial) -> Result<Option<Successor>, StoreError> {
        let open = self.current()?;
        self.watch(open.successor(predecessor))
    }

    async fn swap_successor(
        &self,
        predecessor: &Serial,
        expected: Option<&Successor>,
        new: &Successor,
    ) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.swap_successor(predecessor, expected, new))
    }

    async fn successors(&self) -> Result<Vec<(Serial, Successor)>, StoreError> {
        self.off_worker(|open| open.all_successors()).await
    }

    async fn serial_exists(&self, serial: &Serial) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.serial_exists(serial).await)
    }

    async fn certificates(
        &self,
        service: Option<&ServiceName>,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        let service = service.cloned();
        self.off_worker(move |open| open.certificates(service.as_ref()))
            .await
    }

    async fn newest_certificates(
        &self,
        service: Option<&ServiceName>,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.newest_certificates(service, limit).await)
    }

    async fn certificates_before(
        &self,
        index: TimeIndex<'_>,
        before: Option<&CertificateCursor>,
        limit: usize,
    ) -> Result<CertificateWindow, StoreError> {
        // A page may read up to `FILTERED_SCAN_PER_PAGE` index entries and
        // their records.
        let (service, revoked_only, expiry, before) = (
            index.service.cloned(),
            index.revoked_only,
            index.expiry,
            before.cloned(),
        );
        self.off_worker(move |open| {
            let index = TimeIndex {
                service: service.as_ref(),
                revoked_only,
                expiry,
            };
            open.certificates_before(index, before.as_ref(), limit)
        })
        .await
    }

    async fn record_count(&self) -> Result<u64, StoreError> {
        self.off_worker(|open| open.record_count()).await
    }

    async fn revoked_unexpired(&self, now: i64) -> Result<Vec<RevokedEntry>, StoreError> {
        self.off_worker(move |open| open.revoked_unexpired(now))
            .await
    }

    async fn prune_expired_revocations(&self, now: i64) -> Result<usize, StoreError> {
        self.off_worker(move |open| open.prune_expired_revocations(now))
            .await
    }

    async fn next_crl_number(&self) -> Result<u64, StoreError> {
        let open = self.current()?;
        self.watch(open.next_crl_number().await)
    }

    async fn join_tokens(&self) -> Result<Vec<(TokenHash, JoinTokenRecord)>, StoreError> {
        self.off_worker(|open| {
            open.join_tokens
                .iter()
                .map(|item| {
                    let (key, value) = item?;
                    let hash = TokenHash::try_from(key.as_ref())
                        .map_err(|_| StoreError::Corrupt("join token hash".into()))?;
                    Ok((hash, record::decode(&value)?))
                })
                .collect()
        })
        .await
    }

    async fn raise_crl_number(&self, at_least: u64) -> Result<(), StoreError> {
        let open = self.current()?;
        let result = match open.meta.update_and_fetch(CRL_NUMBER_KEY, |old| {
            let last = old
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map_or(0, u64::from_be_bytes);
            Some(last.max(at_least).to_be_bytes().to_vec())
        }) {
            Ok(_) => open.durable().await,
            Err(error) => Err(error.into()),
        };
        self.watch(result)
    }

    /// One process owns a sled database: there is nobody to share with.
    async fn publish_crl(&self, _crl: &super::SignedCrl) -> Result<(), StoreError> {
        Ok(())
    }

    async fn newest_crl(&self) -> Result<Option<super::SignedCrl>, StoreError> {
        Ok(None)
    }

    async fn insert_join_tokens(
        &self,
        tokens: &[(TokenHash, JoinTokenRecord)],
    ) -> Result<(), StoreError> {
        // Tokens made together share one record: it is encoded once, so
        // what runs on the async worker for a bulk request is a comparison
        // and a copy of the hash per token, not an encoding.
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut keys = Vec::with_capacity(tokens.len());
        let mut previous: Option<&JoinTokenRecord> = None;
        for (hash, token) in tokens {
            if previous != Some(token) {
                records.push(record::encode(token)?);
                previous = Some(token);
            }
            keys.push((*hash, records.len() - 1));
        }
        // Written and made durable on the one database: were a fault to
        // reopen the store between the two, the tokens must not be counted
        // durable by the flush of another.
        self.off_worker(move |open| {
            open.insert_join_tokens_blocking(&keys, &records)?;
            open.durable_blocking()
        })
        .await
    }

    async fn join_token(&self, hash: &TokenHash) -> Result<Option<JoinTokenRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.join_token(hash).await)
    }

    async fn join_token_count(&self) -> Result<u64, StoreError> {
        self.off_worker(|open| open.join_token_count()).await
    }

    async fn purge_expired_tokens(&self, now: i64) -> Result<usize, StoreError> {
        self.off_worker(move |open| open.purge_expired_tokens(now))
            .await
    }

    async fn remove_join_tokens(&self, hashes: &[TokenHash]) -> Result<usize, StoreError> {
        let hashes = hashes.to_vec();
        // Removed and made durable on the one database, as in
        // `insert_join_tokens`.
        self.off_worker(move |open| {
            let removed = open.remove_join_tokens_blocking(&hashes)?;
            open.durable_blocking()?;
            Ok(removed)
        })
        .await
    }

    async fn insert_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.insert_entry(entry).await)
    }

    async fn replace_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.replace_entry(entry).await)
    }

    async fn remove_entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.remove_entry(id).await)
    }

    async fn entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.entry(id).await)
    }

    async fn entries(&self) -> Result<Vec<EntryRecord>, StoreError> {
        self.off_worker(|open| open.entries()).await
    }

    async fn policy(&self) -> Result<Option<PolicyRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.policy().await)
    }

    async fn replace_policy(
        &self,
        expected: u64,
        policy: &PolicyRecord,
    ) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.replace_policy(expected, policy).await)
    }

    async fn insert_federation(&self, federation: &FederationRecord) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.insert_federation(federation).await)
    }

    async fn remove_federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.remove_federation(trust_domain).await)
    }

    async fn federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        let open = self.current()?;
        self.watch(open.federation(trust_domain))
    }

    async fn federations(&self) -> Result<Vec<FederationRecord>, StoreError> {
        self.off_worker(|open| open.federations()).await
    }

    async fn accept_foreign_bundle(
        &self,
        trust_domain: &TrustDomain,
        bundle: &ForeignBundle,
    ) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.accept_foreign_bundle(trust_domain, bundle).await)
    }

    async fn bundle_sequence(&self, digest: &[u8; 32], at_least: u64) -> Result<u64, StoreError> {
        let open = self.current()?;
        self.watch(open.bundle_sequence(digest, at_least).await)
    }

    async fn stored_bundle_sequence(&self) -> Result<u64, StoreError> {
        let open = self.current()?;
        self.watch(open.stored_bundle_sequence())
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let open = self.current()?;
        self.watch(open.append_audit(entry).await)
    }

    async fn audit_since(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.off_worker(move |open| open.audit_since(since, limit))
            .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let open = self.current()?;
        self.watch(open.durable().await)
    }

    fn backup(&self, out: &mut dyn std::io::Write) -> Result<super::BackupSummary, StoreError> {
        let open = self.current()?;
        self.watch(backup::export(&open, out))
    }

    async fn marks(&self) -> Result<StoreMarks, StoreError> {
        let open = self.current()?;
        self.watch(open.marks())
    }

    async fn set_store_id(&self, id: &str) -> Result<(), StoreError> {
        let open = self.current()?;
        let result = match open.meta.compare_and_swap(
            STORE_ID_KEY,
            None as Option<&[u8]>,
            Some(id.as_bytes()),
        ) {
            Ok(_) => open.durable().await,
            Err(error) => Err(error.into()),
        };
        self.watch(result)
    }

    /// sled runs in this process: a failing disk shows as a fault
    /// (`fault`), and there is no server to hang.
    async fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn fault(&self) -> Option<String> {
        match self.shared.fault.lock() {
            Ok(fault) => fault.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// sled's files are locked by the one process that opened them.
    fn shared_with_other_processes(&self) -> bool {
        false
    }

    /// Counted by the open database's group commit (`commit`), which waits
    /// a moment for the writes announced and not yet queued before it
    /// flushes.
    fn write_coming(&self) -> super::WriteComing {
        self.current()
            .map(|open| open.commit.write_coming())
            .unwrap_or_default()
    }

    async fn acme_object(&self, key: &str) -> Result<Option<super::AcmeObject>, StoreError> {
        let open = self.current()?;
        self.watch(open.acme_object(key))
    }

    async fn acme_objects(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, super::AcmeObject)>, StoreError> {
        let prefix = prefix.to_owned();
        self.off_worker(move |open| open.acme_objects(&prefix))
            .await
    }

    async fn acme_objects_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, super::AcmeObject)>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.off_worker(move |open| open.acme_objects_page(&prefix, after.as_deref(), limit))
            .await
    }

    async fn swap_acme_object(
        &self,
        key: &str,
        expected: Option<&super::AcmeObject>,
        new: Option<&super::AcmeObject>,
    ) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.swap_acme_object(key, expected, new).await)
    }

    async fn consume_acme_nonce(&self, nonce: &[u8], expires_at: i64) -> Result<bool, StoreError> {
        let open = self.current()?;
        self.watch(open.consume_acme_nonce(nonce, expires_at).await)
    }

    async fn purge_expired_acme(&self, now: i64) -> Result<usize, StoreError> {
        let purged = self
            .off_worker(move |open| open.purge_expired_acme(now))
            .await?;
        if purged > 0 {
            let open = self.current()?;
            self.watch(open.durable().await)?;
        }
        Ok(purged)
    }

    /// On a blocking thread: sled's calls block, and a step deletes up to
    /// `purge.limit` records in one transaction.
    async fn purge_expired_certificates(
        &self,
        purge: &super::CertificatePurge,
    ) -> Result<super::PurgeReport, StoreError> {
        let open = self.current()?;
        let purge = purge.clone();
        let result = tokio::task::spawn_blocking(move || open.purge_expired_certificates(&purge))
            .await
            .unwrap_or_else(|error| {
                Err(StoreError::Backend(format!("the purge stopped: {error}")))
            });
        self.watch(result)
    }

    /// The revocation count is what `marks` reports as ever revoked, so
    /// purged revocations are added to it too.
    async fn carry_purged(&self, records: u64, revocations: u64) -> Result<(), StoreError> {
        let open = self.current()?;
        let mut result = Ok(());
        for (key, added) in [
            (PURGED_RECORDS_KEY, records),
            (PURGED_REVOCATIONS_KEY, revocations),
            (REVOCATION_COUNT_KEY, revocations),
        ] {
            if let Err(error) = open.meta.update_and_fetch(key, |old| {
                let count = old
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                    .map_or(0, u64::from_be_bytes);
                Some((count + added).to_be_bytes().to_vec())
            }) {
                result = Err(error.into());
                break;
            }
        }
        if result.is_ok() {
            result = open.durable().await;
        }
        self.watch(result)
    }

    async fn purge_audit(&self, before: i64, limit: usize) -> Result<usize, StoreError> {
        let open = self.current()?;
        let result = tokio::task::spawn_blocking(move || open.purge_audit(before, limit))
            .await
            .unwrap_or_else(|error| {
                Err(StoreError::Backend(format!("the purge stopped: {error}")))
            });
        self.watch(result)
    }
}

/// A u64 counter kept in `meta` (big-endian); 0 if absent.
fn meta_count(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    Ok(meta
        .get(key)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

fn service_prefix(service: &ServiceName) -> Vec<u8> {
    let mut key = Vec::with_capacity(service.as_str().len() + 1 + 20);
    key.extend_from_slice(service.as_str().as_bytes());
    // '/' cannot appear in a service name, so `billing/` never matches `billing-2/`.
    key.push(b'/');
    key
}

/// Length of a time key.
const TIME_KEY_LEN: usize = 8;

/// `issued_at` as 8 bytes that sort as the times do (the sign bit flipped,
/// big-endian), so index keys iterate in time order.
fn time_key(issued_at: i64) -> [u8; TIME_KEY_LEN] {
    ((issued_at as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_index_key(issued_at: i64, serial: &Serial) -> Vec<u8> {
    let mut key = Vec::with_capacity(TIME_KEY_LEN + 20);
    key.extend_from_slice(&time_key(issued_at));
    key.extend_from_slice(serial.as_bytes());
    key
}

/// The position a time-index or expiry-index key (without its service
/// prefix) names, in `order`.
fn position_of(order: ListingOrder, key: &[u8]) -> Result<CertificateCursor, StoreError> {
    match key.split_first_chunk::<TIME_KEY_LEN>() {
        Some((time, serial)) if !serial.is_empty() => Ok(CertificateCursor {
            order,
            at: (u64::from_be_bytes(*time) ^ (1 << 63)) as i64,
            serial: Serial::from_stored(serial.to_vec()),
        }),
        _ => Err(StoreError::Corrupt("certificate time index key".into())),
    }
}

fn service_time_index_key(service: &ServiceName, issued_at: i64, serial: &Serial) -> Vec<u8> {
    let mut key = service_prefix(service);
    key.extend_from_slice(&time_key(issued_at));
    key.extend_from_slice(serial.as_bytes());
    key
}

fn service_index_key(service: &ServiceName, serial: &Serial) -> Vec<u8> {
    let mut key = service_prefix(service);
    key.extend_from_slice(serial.as_bytes());
    key
}

/// Runs `open`, turning a panic into an error: sled 0.34 panics instead of
/// failing on some damaged logs ("tried to serialize Uninitialized" after a
/// truncation). The panic message is kept for the error and not printed.
fn without_panicking<T>(open: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_panic_hook();
    QUIET_PANICS.with(|quiet| quiet.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
    QUIET_PANICS.with(|quiet| quiet.set(false));
    outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("sled could not recover its log: {message}")
    })
}

thread_local! {
    /// Set while this thread runs `without_panicking`.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the process's panic hook once so that it stays silent for panics
/// that `without_panicking` catches, and only for those.
fn install_quiet_panic_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

fn is_lock_error(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("lock"))
}

/// Why sled could not open the database in `dir`, in the words every other
/// refusal of a damaged database uses: sled's own errors carry a debug
/// backtrace (`backtrace ()`) that means nothing to an operator.
fn opening_failed(dir: &Path, source: sled::Error) -> StoreError {
    let damaged = |reason: &str| StoreError::Damaged {
        path: dir.display().to_string(),
        reason: reason.into(),
    };
    match source {
        source if is_lock_error(&source) => StoreError::Locked(dir.display().to_string()),
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => {
            damaged("sled found corrupted data in its log")
        }
        sled::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            damaged("sled cannot read its log")
        }
        sled::Error::Io(io) => StoreError::Open {
            path: dir.display().to_string(),
            reason: super::describe_io(&io),
        },
        sled::Error::Unsupported(_) | sled::Error::CollectionNotFound(_) => {
            damaged("sled does not recognise its files")
        }
    }
}

/// A lineage link as the successors tree keeps it: one byte, 1 when the
/// successor was presented, then the successor's serial.
fn successor_bytes(successor: &Successor) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + successor.serial.as_bytes().len());
    bytes.push(u8::from(successor.presented));
    bytes.extend_from_slice(successor.serial.as_bytes());
    bytes
}

fn successor_of(bytes: &[u8]) -> Result<Successor, StoreError> {
    match bytes.split_first() {
        Some((&flag, serial)) if flag <= 1 && !serial.is_empty() => Ok(Successor {
            serial: Serial::from_stored(serial.to_vec()),
            presented: flag == 1,
        }),
        _ => Err(StoreError::Corrupt("renewal lineage entry".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{self, Backend};

    /// A database that cannot be opened carries the I/O error as its
    /// cause, named once when printed with its causes.
    #[test]
    fn a_database_that_cannot_be_made_names_the_io_error_as_its_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "not a directory").unwrap();
        let dir = file.join("db");
        let Err(error) = SledStore::open(&dir) else {
            panic!("opened a database under a file");
        };
        let cause = std::error::Error::source(&error).expect("a cause");
        assert!(
            cause.downcast_ref::<std::io::Error>().is_some(),
            "{cause:?}"
        );
        assert_eq!(
            certd_core::error_kind::with_causes(&error),
            format!("cannot open the database {}: {cause}", dir.display())
        );
    }

    /// An intermediate as certd's sign: its leaves name its key
    /// identifier. For the tests of this backend and of `packing`.
    pub(super) struct TestIssuer {
        key: rcgen::KeyPair,
        certificate: rcgen::Certificate,
    }

    impl TestIssuer {
        pub(super) fn new(name: &str) -> TestIssuer {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
            let certificate = params.self_signed(&key).unwrap();
            TestIssuer { key, certificate }
        }

        /// The record of a leaf for service `svc-{n}`, with a key of its
        /// own, as `Authority` records them: a time-ordered serial, the
        /// SAN's DNS name and SPIFFE ID, the DER.
        pub(super) fn record(&self, n: u32) -> IssuanceRecord {
            use sha2::Digest;
            let service = format!("svc-{n}");
            let dns = format!("{service}.certd.internal");
            let uri = format!("spiffe://certd.internal/svc/{service}");
            let second = 1_800_000_000 + i64::from(n);
            let serial = Serial::generate_time_ordered(second);
            let mut params = rcgen::CertificateParams::new(vec![dns.clone()]).unwrap();
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.clone().try_into().unwrap()));
            params.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
            params.use_authority_key_identifier_extension = true;
            let issuer =
                rcgen::Issuer::from_ca_cert_der(self.certificate.der(), &self.key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
            IssuanceRecord {
                serial,
                service: service.parse().unwrap(),
                dns_names: vec![dns],
                uris: vec![uri],
                not_before: 1_800_000_000,
                not_after: 1_800_086_400,
                issued_at: second,
                sha256_fingerprint: sha2::Sha256::digest(&der).into(),
                der,
                attestation: certd_core::model::Attestation::Renewal,
                renewed_from: None,
                revocation: None,
            }
        }
    }

    /// Records of signed certificates are stored packed against their
    /// issuer's dictionary (smaller than the codec's bytes), and read back
    /// whole: by serial, listed whole and by service and newest first,
    /// revoked (still packed), reopened, and through a backup (which holds
    /// them unpacked) restored into a new store. (The purge's and the index
    /// rebuilds' reads go through the same `read_certificate`.)
    #[tokio::test]
    async fn signed_records_are_stored_packed_and_read_back_whole_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TestIssuer::new("certd intermediate CA");
        let mut records: Vec<_> = (0..12).map(|n| issuer.record(n)).collect();
        {
            let store = SledStore::open(&dir.path().join("db")).unwrap();
            for record in &records {
                store.record_issuance(record, None).await.unwrap();
            }
            let open = store.current().unwrap();
            for record in &records {
                let stored = open
                    .certificates
                    .get(record.serial.as_bytes())
                    .unwrap()
                    .unwrap();
                let encoded = record::encode(record).unwrap();
                assert_eq!(stored[0], 0xFF, "packed");
                assert!(
                    stored.len() < encoded.len(),
                    "{} of {}",
                    stored.len(),
                    encoded.len()
                );
            }
            assert_eq!(
                open.db
                    .open_tree(CERTIFICATE_DICTIONARIES_TREE)
                    .unwrap()
                    .len(),
                1
            );
            let revocation = Revocation {
                revoked_at: 1_800_000_100,
                reason_code: 1,
            };
            let revoked = &mut records[3];
            assert!(matches!(
                store.revoke(&revoked.serial, revocation).await.unwrap(),
                Some(RevokeOutcome::Revoked(_))
            ));
            revoked.revocation = Some(revocation);
            let stored = open
                .certificates
                .get(revoked.serial.as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(stored[0], 0xFF, "still packed once revoked");
        }
        let store = retrying_locked(|| SledStore::open(&dir.path().join("db")));
        for record in &records {
            assert_eq!(
                store.certificate(&record.serial).await.unwrap().as_ref(),
                Some(record)
            );
        }
        assert_eq!(store.certificates(None).await.unwrap(), records);
        assert_eq!(
            store.certificates(Some(&records[3].service)).await.unwrap(),
            vec![records[3].clone()]
        );
        let mut newest_first = records.clone();
        newest_first.reverse();
        assert_eq!(
            store.newest_certificates(None, 100).await.unwrap(),
            newest_first
        );

        let (summary, restored) = backed_up_and_restored(store, dir.path()).await;
        assert_eq!(summary.records, 12);
        assert_eq!(summary.revocations, 1);
        for record in &records {
            assert_eq!(
                restored.certificate(&record.serial).await.unwrap().as_ref(),
                Some(record)
            );
            let stored = restored
                .current()
                .unwrap()
                .certificates
                .get(record.serial.as_bytes());
            assert_eq!(stored.unwrap().unwrap()[0], 0xFF, "packed again on restore");
        }
    }

    /// `store` backed up to `dir/backup` and restored into `dir/restored`:
    /// the backup's summary and the restored store. Backup and restore
    /// block, so they run off the runtime, as the daemon runs them.
    async fn backed_up_and_restored(
        store: SledStore,
        dir: &Path,
    ) -> (crate::BackupSummary, SledStore) {
        let (file, into) = (dir.join("backup"), dir.join("restored"));
        let restored_dir = into.clone();
        let summary = tokio::task::spawn_blocking(move || {
            let mut out = std::fs::File::create(&file).unwrap();
            let summary = store.backup(&mut out).unwrap();
            let floor = backup::RestoreFloor {
                store_id: None,
                crl_number: 0,
            };
            restore(&into, &file, &floor, &crate::progress::Progress::default()).unwrap();
            summary
        })
        .await
        .unwrap();
        (summary, SledStore::open(&restored_dir).unwrap())
    }

    /// What `open` gives, retried while it finds the database `Locked`
    /// (for up to 5 s): sled's I/O threads may hold a dropped handle's
    /// file lock a moment longer, as recovery allows for.
    pub(super) fn retrying_locked<T>(mut open: impl FnMut() -> Result<T, StoreError>) -> T {
        let started = std::time::Instant::now();
        loop {
            match open() {
                Err(StoreError::Locked(_))
                    if started.elapsed() < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                opened => return opened.unwrap_or_else(|e| panic!("cannot reopen: {e}")),
            }
        }
    }

    /// A sled store in a temporary directory, reopened on the same files.
    struct Sled(tempfile::TempDir);

    #[async_trait]
    impl Backend for Sled {
        /// Reopens in the same process: `retrying_locked`.
        async fn open(&self) -> crate::SharedStorage {
            std::sync::Arc::new(retrying_locked(|| SledStore::open(self.0.path())))
        }
    }

    fn sled() -> Option<Sled> {
        Some(Sled(tempfile::tempdir().unwrap()))
    }

    crate::storage_behaviour_suite!(sled);

    /// A backup and restore, and a copy into another store, carry the ACME
    /// objects; consumed nonces are not carried (they expire within the
    /// hour).
    #[tokio::test]
    async fn backups_and_copies_carry_acme_objects() {
        let dir = tempfile::tempdir().unwrap();
        let account = crate::AcmeObject {
            expires_at: None,
            data: b"{\"id\":\"a\"}".to_vec(),
        };
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        assert!(
            store
                .swap_acme_object("account/a", None, Some(&account))
                .await
                .unwrap()
        );
        assert!(store.consume_acme_nonce(b"nonce", i64::MAX).await.unwrap());
        let (_, restored) = backed_up_and_restored(store, dir.path()).await;
        assert_eq!(
            restored.acme_object("account/a").await.unwrap(),
            Some(account.clone())
        );
        assert!(
            restored
                .consume_acme_nonce(b"nonce", i64::MAX)
                .await
                .unwrap()
        );

        let copied: crate::SharedStorage =
            std::sync::Arc::new(SledStore::open(&dir.path().join("copy")).unwrap());
        crate::copy::copy(
            std::sync::Arc::new(restored),
            copied.clone(),
            std::sync::Arc::new(crate::progress::Progress::default()),
        )
        .await
        .unwrap();
        assert_eq!(
            copied.acme_objects("").await.unwrap(),
            [("account/a".to_owned(), account)]
        );
    }

    /// On a store far larger than a page, a page filtered by what no index
    /// answers stops after `FILTERED_SCAN_PER_PAGE` entries with a cursor
    /// (here nothing matches: the walk would otherwise read everything),
    /// and the pages still end; an unfiltered page of 10 examines 10.
    #[tokio::test]
    async fn a_filtered_page_of_a_large_store_stops_at_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let records = crate::FILTERED_SCAN_PER_PAGE * 2 + 500;
        {
            let open = Open::at(dir.path()).unwrap();
            for at in 0..records {
                let mut record = suite::record("bulk");
                record.issued_at = at as i64;
                record.not_after = 1_000_000;
                open.write_issuance(&record, None, &mut None).unwrap();
            }
            open.db.flush().unwrap();
        }
        let store = Sled(dir).open().await;
        let page = crate::listing::page_within(&*store, &crate::CertificateQuery::newest(10, 0), 1)
            .await
            .unwrap();
        let examined = page.examined;
        assert_eq!((page.records.len(), examined), (10, 10));

        // None is revoked: the revoked index answers at once.
        let mut revoked = crate::CertificateQuery::newest(10, 0);
        revoked.state = Some(crate::CertificateState::Revoked);
        let page = crate::listing::page_within(&*store, &revoked, 1)
            .await
            .unwrap();
        let examined = page.examined;
        assert_eq!((page, examined), (crate::CertificatePage::default(), 0));

        // None has expired at 0: the expiry index says so at once.
        let mut expired = crate::CertificateQuery::newest(10, 0);
        expired.state = Some(crate::CertificateState::Expired);
        let page = crate::listing::page_within(&*store, &expired, 1)
            .await
            .unwrap();
        let examined = page.examined;
        assert_eq!((page, examined), (crate::CertificatePage::default(), 0));

        // One service's: no index says so, the pages walk the service's
        // time index, each stopping at its budget.
        expired.service = Some("bulk".parse().unwrap());
        let mut pages = 0;
        loop {
            let page =
                crate::listing::page_within(&*store, &expired, crate::FILTERED_SCAN_PER_PAGE)
                    .await
                    .unwrap();
            let examined = page.examined;
            pages += 1;
            assert!(page.records.is_empty());
            assert!(examined <= crate::FILTERED_SCAN_PER_PAGE, "{examined}");
            match page.next {
                Some(next) => expired.after = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
    }

    /// A store written before the expiry index is indexed when it is
    /// opened, so the retention purge finds its old records.
    #[tokio::test]
    async fn a_store_from_before_the_expiry_index_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = suite::record("a");
        old.not_after = 300;
        {
            let open = Open::at(dir.path()).unwrap();
            open.write_issuance(&old, None, &mut None).unwrap();
            // As a certd from before the expiry index left it.
            open.certificates_by_expiry.clear().unwrap();
            open.meta.remove(EXPIRY_INDEX_KEY).unwrap();
            open.db.flush().unwrap();
        }
        let store = Sled(dir).open().await;
        let purge = crate::CertificatePurge {
            expired_before: 1000,
            limit: 10,
            ..crate::CertificatePurge::default()
        };
        let report = store.purge_expired_certificates(&purge).await.unwrap();
        assert_eq!(report.purged, 1);
        assert_eq!(store.certificate(&old.serial).await.unwrap(), None);
    }

    /// The by-service index is no longer written: a service's records are
    /// listed from the by-service-time index, in serial order as before,
    /// and the entries a store written earlier still holds go with their
    /// records when they are purged.
    #[test]
    fn the_retired_by_service_index_is_neither_written_nor_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let open = Open::at(dir.path()).unwrap();
        let mut written = Vec::new();
        for at in [30, 10, 20] {
            let mut record = suite::record("a");
            record.issued_at = at;
            record.not_after = 100;
            open.write_issuance(&record, None, &mut None).unwrap();
            written.push(record);
        }
        assert!(open.certificates_by_service.is_empty());
        // As a certd from before left them.
        for record in &written {
            open.certificates_by_service
                .insert(service_index_key(&record.service, &record.serial), &[])
                .unwrap();
        }
        let a: ServiceName = "a".parse().unwrap();
        let mut serials: Vec<Serial> = written.iter().map(|r| r.serial.clone()).collect();
        serials.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        let listed: Vec<Serial> = open
            .certificates(Some(&a))
            .unwrap()
            .into_iter()
            .map(|r| r.serial)
            .collect();
        assert_eq!(listed, serials);
        let purge = crate::CertificatePurge {
            expired_before: 1000,
            limit: 10,
            ..crate::CertificatePurge::default()
        };
        let report = open.purge_expired_certificates(&purge).unwrap();
        assert_eq!(report.purged, 3);
        assert!(open.certificates_by_service.is_empty());
    }

    /// A store written before the time indexes is indexed when it is
    /// opened, and then lists its newest records from the index.
    #[tokio::test]
    async fn a_store_from_before_the_time_indexes_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        {
            let open = Open::at(dir.path()).unwrap();
            for (service, at) in [("a", 10), ("b", 30), ("a", 20), ("b", 40)] {
                let mut record = suite::record(service);
                record.issued_at = at;
                open.write_issuance(&record, None, &mut None).unwrap();
                written.push(record);
            }
            let revocation = crate::Revocation {
                revoked_at: 50,
                reason_code: 1,
            };
            open.revoke(&written[2].serial, revocation).await.unwrap();
            // As a certd from before the indexes left it.
            open.certificates_by_time.clear().unwrap();
            open.certificates_by_service_time.clear().unwrap();
            open.revoked_by_time.clear().unwrap();
            open.revoked_by_service_time.clear().unwrap();
            open.meta.remove(TIME_INDEXES_KEY).unwrap();
            open.meta.remove(REVOKED_INDEXES_KEY).unwrap();
            open.db.flush().unwrap();
        }
        let store = Sled(dir).open().await;
        let times = |records: Vec<IssuanceRecord>| -> Vec<i64> {
            records.iter().map(|r| r.issued_at).collect()
        };
        let a: ServiceName = "a".parse().unwrap();
        assert_eq!(
            times(store.newest_certificates(None, 3).await.unwrap()),
            [40, 30, 20]
        );
        assert_eq!(
            times(store.newest_certificates(Some(&a), 10).await.unwrap()),
            [20, 10]
        );
        let mut revoked = crate::CertificateQuery::newest(10, 0);
        revoked.state = Some(crate::CertificateState::Revoked);
        let page = crate::listing::page_within(&*store, &revoked, 1)
            .await
            .unwrap();
        let examined = page.examined;
        assert_eq!((times(page.records), examined), (vec![20], 1));
        // Negative and huge times sort as times do.
        assert!(time_key(-1) < time_key(0) && time_key(0) < time_key(i64::MAX));
    }
}
