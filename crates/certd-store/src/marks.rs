//! High-water marks: what the database is known to have held, kept in a
//! small file beside the CA files, so that a database that is missing,
//! damaged or an old copy is refused instead of served.
//!
//! Owns `DATA_DIR/store-marks.toml` and [`Marked`], the `Storage` wrapper
//! that keeps it: the store's id, the last CRL number handed out, and at
//! least how many certificates were recorded and revoked. sled recovers
//! whatever prefix of its log survives, so a truncated log opens as an
//! emptier database, with revocations gone (revoked certificates would
//! answer "good") and the CRL number back at a lower value. Those numbers
//! only ever grow in a healthy store, so a store holding fewer than the
//! marks is damaged or replaced, and certd says so and stops.
//!
//! **Purging is not a rollback.** The retention purge deletes old records,
//! so what a store holds goes down. The counts compared are therefore what
//! the store has *ever* recorded and revoked: each backend keeps counters
//! of the records (and revoked records) it purged, written atomically with
//! the deletions (sled: one transaction; PostgreSQL: one transaction on a
//! `counters` row), and reports present + purged. A real rollback (a
//! truncated sled log, an older backup or dump, another CA's database)
//! loses the deletions and their counters together, or never had them, so
//! it still falls short. sled's cheap check, that the newest serial the
//! marks name is still there, holds because the purge never deletes the
//! serials the marks name (`Marked` passes them as `keep`); a backend that
//! counts its records (PostgreSQL, where another replica's purge keeps only
//! that replica's serials) is checked by its count, and by the newest
//! serial only until `MIN_RETENTION_SECS` after that certificate expired,
//! before which no purge may delete it. A store from before the counters
//! has none: it has purged nothing, so zero is right.
//!
//! When it is written: the CRL number and the revocation count before the
//! call that changed them returns (they matter most; concurrent calls
//! share one write, made on the blocking pool: `update_durably`); the
//! certificate count every `RECORDS_WRITE_EVERY` issuances or
//! `RECORDS_WRITE_INTERVAL`, in the background, and at `flush` (shutdown).
//! It is a lower bound, so lagging is safe; a failed write is logged and
//! retried with the next change. No write holds the state's lock, which
//! every issuance takes: a slow `fsync` delays the file, not issuance. It must not decide anything else: the store stays the
//! source of truth.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{
    AuditEntry, CertificatePurge, Change, EntryRecord, IssuanceRecord, JoinTokenRecord,
    PurgeReport, Revocation, RevokeOutcome, RevokedEntry, SharedStorage, Storage, StoreError,
    Successor, TokenHash,
};
use certd_core::identity::{Serial, ServiceName};

/// How far another replica's clock may run ahead of this one's for the
/// newest-serial check on PostgreSQL (`MarksFile::newest_cannot_be_purged`):
/// its purge could delete a record that much earlier by this clock.
const CLOCK_MARGIN_SECS: i64 = 300;

/// Issuances between two writes of the certificate count, at most.
const RECORDS_WRITE_EVERY: u64 = 1000;
/// Time between two writes of the certificate count, at most, while
/// certificates are being issued.
const RECORDS_WRITE_INTERVAL: Duration = Duration::from_secs(30);

/// What to do when the marks file is missing beside a CA. `certd init`
/// writes one, so a CA without it lost it (or predates marks): certd cannot
/// tell an older copy or another CA's database from the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmarked {
    /// Refuse to open the store (the default).
    Refuse,
    /// Take the store as it is and write new marks from it: the operator's
    /// explicit, audited `--danger-accept-unmarked-store`.
    Accept,
}

/// The CA a store serves, as the id a new store is given: derived from the
/// CA's root, so that replicas of one CA started together on a new
/// database (each with the marks `certd init` wrote) recognise the store
/// the first of them claimed, and one of another CA refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaIdentity(String);

impl CaIdentity {
    /// From the DER of the root the CA signs under now.
    pub fn of_root(root_der: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(root_der);
        CaIdentity(format!("ca-{}", hex::encode(&digest[..16])))
    }

    /// From the CA's root certificate file (`root.pem`), for commands that
    /// check a store without loading the CA.
    pub fn of_root_file(path: &Path) -> Result<Self, StoreError> {
        let unreadable = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| unreadable("it holds no certificate".into()))?;
        Ok(Self::of_root(&der))
    }

    /// The store id a new store of this CA gets.
    pub fn store_id(&self) -> &str {
        &self.0
    }
}

/// What a store holds now, as its backend reports it (`Storage::marks`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreMarks {
    /// Chosen once for a new store; `None` for a store that never had one
    /// (new, emptied, or written by a certd before marks existed).
    pub store_id: Option<String>,
    /// The last CRL number handed out (0: none yet).
    pub crl_number: u64,
    /// Issuance records ever recorded: those present plus those purged;
    /// `None` from a backend that would have to read every record to count
    /// them (sled), whose check relies on `MarksFile::newest_serial`
    /// instead.
    pub records: Option<u64>,
    /// Records the retention purge deleted, counted in the same atomic
    /// step as each deletion; added to a count of the records present
    /// where `records` is `None`.
    pub purged_records: u64,
    /// Whether it holds any issuance record at all.
    pub has_records: bool,
    /// Records ever revoked, purged ones included.
    pub revocations: u64,
}

/// The marks file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarksFile {
    pub store_id: String,
    pub crl_number: u64,
    pub records: u64,
    pub revocations: u64,
    /// The serial (hex) of the newest certificate recorded when the marks
    /// were written. sled recovers a prefix of its log, so a store that
    /// still holds it holds every record written before it: a check that
    /// costs one lookup, not a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_serial: Option<String>,
    /// That certificate's expiry (Unix seconds). Until `MIN_RETENTION_SECS`
    /// after it no purge may delete the record, so a store that counts its
    /// records (PostgreSQL, where the count alone could hide a promoted
    /// standby that lost its last seconds while other replicas issued more)
    /// is also asked for the serial until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_not_after: Option<i64>,
}

const MARKS_HEADER: &str = "# certd: what the database is known to have held. certd refuses a database that holds\n\
# less. Do not edit; `certd db restore` rewrites it.\n";

impl MarksFile {
    /// The marks of a CA that has never used a database: `certd init`
    /// writes them, so that a CA whose marks later go missing is noticed.
    /// The first store opened with them must be new and empty; it is given
    /// its id then.
    pub fn for_new_ca() -> Self {
        MarksFile {
            store_id: String::new(),
            crl_number: 0,
            records: 0,
            revocations: 0,
            newest_serial: None,
            newest_not_after: None,
        }
    }

    /// Whether no purge can have deleted the newest certificate's record
    /// by `now`: it expired less than `MIN_RETENTION_SECS` ago, or not yet,
    /// less `CLOCK_MARGIN_SECS` for a replica whose clock runs ahead.
    fn newest_cannot_be_purged(&self, now: i64) -> bool {
        self.newest_not_after.is_some_and(|not_after| {
            now < not_after
                .saturating_add(super::MIN_RETENTION_SECS)
                .saturating_sub(CLOCK_MARGIN_SECS)
        })
    }

    /// Reads the marks file; `None` if there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(marks_error(path, &error.to_string())),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|error| marks_error(path, &error.to_string()))
    }

    /// Replaces the marks file atomically and durably.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let body = toml::to_string(self).map_err(std::io::Error::other)?;
        certd_core::fsutil::replace_file(
            path,
            format!("{MARKS_HEADER}{body}").as_bytes(),
            certd_core::fsutil::PUBLIC_FILE_MODE,
        )
    }

    /// How `found` falls short of these marks, one phrase per shortfall;
    /// empty when it does not. `newest_present`: whether the store holds
    /// `newest_serial` (`None`: not looked up, or no such serial).
    ///
    /// `ca_store_id`: the id this CA gives a new store (`CaIdentity`), which
    /// marks of a CA that has used no database accept; `None`: none.
    pub fn shortfalls(
        &self,
        found: &StoreMarks,
        newest_present: Option<bool>,
        ca_store_id: Option<&str>,
    ) -> Vec<String> {
        let mut shortfalls = Vec::new();
        if self.store_id.is_empty() {
            // A new CA: a database with a history is someone else's,
            // unless a replica of this CA claimed it first (its id says so).
            let ours = ca_store_id.is_some() && found.store_id.as_deref() == ca_store_id;
            if !ours && (found.store_id.is_some() || found.has_records || found.crl_number > 0) {
                shortfalls.push(format!(
                    "this CA has never used a database, but this one already holds {} (CRL number {}): it belongs to another CA",
                    found
                        .store_id
                        .as_deref()
                        .map_or_else(|| "certificates".to_owned(), |id| format!("store id {id}")),
                    found.crl_number
                ));
            }
            return shortfalls;
        }
        match &found.store_id {
            None if !found.has_records => {
                return vec![format!(
                    "it is missing or empty, but this CA recorded {} certificates and CRL number {} in it",
                    self.records, self.crl_number
                )];
            }
            None => shortfalls.push("it has lost its store id".into()),
            Some(id) if *id != self.store_id => shortfalls.push(format!(
                "it is another database (store id {id}, this CA's is {})",
                self.store_id
            )),
            Some(_) => {}
        }
        if let Some(records) = found.records
            && records < self.records
        {
            shortfalls.push(format!(
                "{records} certificates where there were at least {}",
                self.records
            ));
        }
        if newest_present == Some(false) {
            shortfalls.push(format!(
                "the newest certificate it had recorded ({}) is gone, and whatever came after it",
                self.newest_serial.as_deref().unwrap_or_default()
            ));
        }
        if found.revocations < self.revocations {
            shortfalls.push(format!(
                "{} revoked certificates where there were {}: revoked certificates would answer good",
                found.revocations, self.revocations
            ));
        }
        if found.crl_number < self.crl_number {
            shortfalls.push(format!(
                "CRL number {} where {} was already published",
                found.crl_number, self.crl_number
            ));
        }
        shortfalls
    }
}

/// Checks `store` against `recorded`; one phrase per shortfall. `full`
/// counts every record even where the backend would not (`certd db
/// check`); otherwise the newest serial stands in for the count.
pub async fn shortfalls(
    store: &dyn Storage,
    recorded: &MarksFile,
    full: bool,
    ca: Option<&CaIdentity>,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let mut found = store.marks().await?;
    // A backend that counts its records (PostgreSQL) is checked by the
    // count, and by the newest serial this process's marks name only while
    // no purge may have deleted it: another replica's purge keeps only the
    // serials its own marks name.
    let counts_itself = found.records.is_some();
    let ask_for_newest = !counts_itself || recorded.newest_cannot_be_purged(now);
    if full && found.records.is_none() {
        found.records = Some(store.record_count().await? + found.purged_records);
    }
    let newest_present = match recorded
        .newest_serial
        .as_deref()
        .and_then(|hex| hex.parse::<Serial>().ok())
    {
        Some(serial) if found.store_id.is_some() && ask_for_newest => {
            Some(store.serial_exists(&serial).await?)
        }
        _ => None,
    };
    Ok(recorded.shortfalls(&found, newest_present, ca.map(CaIdentity::store_id)))
}

/// The first marks of a store: one full count, never again; a store
/// without an id gets one.
async fn first_marks(inner: &dyn Storage, ca: &CaIdentity) -> Result<MarksFile, StoreError> {
    let found = inner.marks().await?;
    let records = match found.records {
        Some(records) => records,
        None => inner.record_count().await? + found.purged_records,
    };
    let store_id = match found.store_id {
        Some(id) => id,
        None => {
            inner.set_store_id(ca.store_id()).await?;
            ca.store_id().to_owned()
        }
    };
    Ok(MarksFile {
        store_id,
        crl_number: found.crl_number,
        records,
        revocations: found.revocations,
        newest_serial: None,
        newest_not_after: None,
    })
}

/// Removes `.store-marks.toml.*.tmp` files a crash left behind mid-write
/// (`fsutil::replace_file` names its temporaries so).
fn remove_leftover_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in listing.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with(&prefix) && file_name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a marks file a crash left half-written")
                }
                Err(error) => {
                    tracing::warn!(error = %certd_core::error_kind::with_causes(&error), file = %entry.path().display(), "cannot remove a leftover temporary marks file")
                }
            }
        }
    }
}

fn marks_error(path: &Path, reason: &str) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason: format!("cannot read the store's marks: {reason}"),
    }
}

/// A store checked against its marks file, which it keeps up to date.
#[derive(Debug)]
pub(crate) struct Marked {
    inner: SharedStorage,
    path: PathBuf,
    /// Shared with the blocking tasks that write the file; held only for
    /// moments, never across a write (every issuance takes it).
    state: Arc<Mutex<MarksState>>,
    /// Held by the blocking task writing the file, so that writes happen
    /// one at a time, each of a snapshot no older than the one before: the
    /// file only grows.
    file: Arc<Mutex<()>>,
    /// Held by the one caller writing for everyone waiting
    /// (`update_durably`).
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct MarksState {
    current: MarksFile,
    written: Option<MarksFile>,
    written_at: Instant,
    /// The snapshot being written now: the purge keeps the serial it names.
    in_flight: Option<MarksFile>,
    /// A background write (`update`) is queued and has not yet taken its
    /// snapshot: a later change rides on it instead of queueing another.
    queued: bool,
}

impl Marked {
    /// Checks `inner` against the marks at `path` and wraps it. A store
    /// that holds less than the marks is refused with `BehindMarks`; a
    /// store without marks yet (new, or from an older certd) is given a
    /// store id and marks.
    pub async fn open(
        inner: SharedStorage,
        path: &Path,
        unmarked: Unmarked,
        ca: &CaIdentity,
        now: i64,
    ) -> Result<Self, StoreError> {
        remove_leftover_temporaries(path);
        let recorded = MarksFile::read(path)?;
        let current = match recorded {
            Some(recorded) if recorded.store_id.is_empty() => {
                let shortfalls =
                    shortfalls(inner.as_ref(), &recorded, false, Some(ca), now).await?;
                if !shortfalls.is_empty() {
                    return Err(StoreError::BehindMarks {
                        path: inner.location(),
                        shortfalls: shortfalls.join("; "),
                    });
                }
                first_marks(inner.as_ref(), ca).await?
            }
            Some(recorded) => {
                let shortfalls =
                    shortfalls(inner.as_ref(), &recorded, false, Some(ca), now).await?;
                if !shortfalls.is_empty() {
                    return Err(StoreError::BehindMarks {
                        path: inner.location(),
                        shortfalls: shortfalls.join("; "),
                    });
                }
                let found = inner.marks().await?;
                MarksFile {
                    store_id: recorded.store_id,
                    crl_number: found.crl_number,
                    records: found.records.unwrap_or(recorded.records),
                    revocations: found.revocations,
                    newest_serial: recorded.newest_serial,
                    newest_not_after: recorded.newest_not_after,
                }
            }
            None if unmarked == Unmarked::Refuse => {
                return Err(StoreError::Unmarked {
                    path: inner.location(),
                    marks: path.display().to_string(),
                });
            }
            None => {
                tracing::warn!(
                    database = %inner.location(),
                    marks = %path.display(),
                    "--danger-accept-unmarked-store: taking the database as it is and writing new marks from it"
                );
                first_marks(inner.as_ref(), ca).await?
            }
        };
        let marked = Marked {
            inner,
            path: path.to_owned(),
            state: Arc::new(Mutex::new(MarksState {
                current,
                written: None,
                written_at: Instant::now(),
                in_flight: None,
                queued: false,
            })),
            file: Arc::default(),
            writing: tokio::sync::Mutex::new(()),
        };
        marked.write_now().await;
        Ok(marked)
    }

    /// Applies `change` to the marks and, if it asks to (or they were
    /// never written), has them written on the blocking pool; returns at
    /// once. The certificate count is a lower bound, so a write that lags
    /// is safe, and no issuance waits for a file write.
    fn update(&self, change: impl FnOnce(&mut MarksState) -> bool) {
        let mut state = lock(&self.state);
        let write_due = change(&mut state);
        if !(write_due || state.written.is_none())
            || state.written.as_ref() == Some(&state.current)
            || state.queued
        {
            return;
        }
        state.queued = true;
        drop(state);
        let (state, file, path) = (self.state.clone(), self.file.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || write_snapshot(&state, &file, &path));
    }

    /// Writes the current marks and returns once they are written (or the
    /// write failed, which is logged and retried by the next change).
    async fn write_now(&self) {
        let (state, file, path) = (self.state.clone(), self.file.clone(), self.path.clone());
        let _ = tokio::task::spawn_blocking(move || write_snapshot(&state, &file, &path)).await;
    }

    /// Applies `change` to the CRL number or the revocation count and
    /// returns once marks at least that high are written. A caller that
    /// finds a write under way waits for it, then finds its own change
    /// written by the next one, which it or another waiter makes: a burst
    /// of revocations costs a few writes (two `fsync`s each), not one each.
    /// The write runs on the blocking pool, off the async workers.
    async fn update_durably(&self, change: impl FnOnce(&mut MarksFile)) {
        let wanted = {
            let mut state = lock(&self.state);
            change(&mut state.current);
            state.current.clone()
        };
        let _writer = self.writing.lock().await;
        let written = |state: &MarksState| {
            state.written.as_ref().is_some_and(|written| {
                written.crl_number >= wanted.crl_number && written.revocations >= wanted.revocations
            })
        };
        if written(&lock(&self.state)) {
            return;
        }
        self.write_now().await;
    }
}

fn lock(state: &Mutex<MarksState>) -> MutexGuard<'_, MarksState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes a snapshot of the current marks, on the blocking pool; logs a
/// failure, which the next change retries. The snapshot is taken under
/// `file`, so writes follow one another in the order of their snapshots,
/// and the state is locked only to take it and to note it written.
fn write_snapshot(state: &Mutex<MarksState>, file: &Mutex<()>, path: &Path) {
    let _file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let snapshot = {
        let mut state = lock(state);
        state.queued = false;
        if state.written.as_ref() == Some(&state.current) {
            return;
        }
        state.in_flight = Some(state.current.clone());
        state.current.clone()
    };
    let result = snapshot.write(path);
    let mut state = lock(state);
    state.in_flight = None;
    match result {
        Ok(()) => {
            state.written = Some(snapshot);
            state.written_at = Instant::now();
        }
        Err(error) => tracing::warn!(
            error = %certd_core::error_kind::with_causes(&error),
            path = %path.display(),
            "cannot write the store's marks; retrying with the next change"
        ),
    }
}

#[async_trait]
impl Storage for Marked {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn record_announced_issuance(
        &self,
        record: &IssuanceRecord,
        token: Option<&TokenHash>,
        announced: crate::WriteComing,
    ) -> Result<(), StoreError> {
        self.inner
            .record_announced_issuance(record, token, announced)
            .await?;
        self.update(|state| {
            state.current.records += 1;
            state.current.newest_serial = Some(record.serial.to_hex());
            state.current.newest_not_after = Some(record.not_after);
            let written = state.written.as_ref().map_or(0, |w| w.records);
            state.current.records - written >= RECORDS_WRITE_EVERY
                || state.written_at.elapsed() >= RECORDS_WRITE_INTERVAL
        });
        Ok(())
    }

    async fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        let outcome = self.inner.revoke(serial, revocation).await?;
        if matches!(outcome, Some(RevokeOutcome::Revoked(_))) {
            self.update_durably(|current| current.revocations += 1)
                .await;
        }
        Ok(outcome)
    }

    async fn next_crl_number(&self) -> Result<u64, StoreError> {
        let number = self.inner.next_crl_number().await?;
        self.update_durably(|current| current.crl_number = current.crl_number.max(number))
            .await;
        Ok(number)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await?;
        self.write_now().await;
        Ok(())
    }

    fn backup(&self, out: &mut dyn std::io::Write) -> Result<super::BackupSummary, StoreError> {
        self.inner.backup(out)
    }

    async fn marks(&self) -> Result<StoreMarks, StoreError> {
        self.inner.marks().await
    }

    async fn set_store_id(&self, id: &str) -> Result<(), StoreError> {
        self.inner.set_store_id(id).await
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        self.inner.certificate(serial).await
    }

    async fn serial_exists(&self, serial: &Serial) -> Result<bool, StoreError> {
        self.inner.serial_exists(serial).await
    }

    async fn certificates(
        &self,
        service: Option<&ServiceName>,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        self.inner.certificates(service).await
    }

    async fn newest_certificates(
        &self,
        service: Option<&ServiceName>,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        self.inner.newest_certificates(service, limit).await
    }

    async fn certificates_before(
        &self,
        index: crate::TimeIndex<'_>,
        before: Option<&crate::CertificateCursor>,
        limit: usize,
    ) -> Result<crate::CertificateWindow, StoreError> {
        self.inner.certificates_before(index, before, limit).await
    }

    async fn certificate_page(
        &self,
        query: &crate::CertificateQuery,
    ) -> Result<crate::CertificatePage, StoreError> {
        self.inner.certificate_page(query).await
    }

    async fn record_count(&self) -> Result<u64, StoreError> {
        self.inner.record_count().await
    }

    async fn revoked_unexpired(&self, now: i64) -> Result<Vec<RevokedEntry>, StoreError> {
        self.inner.revoked_unexpired(now).await
    }

    async fn prune_expired_revocations(&self, now: i64) -> Result<usize, StoreError> {
        self.inner.prune_expired_revocations(now).await
    }

    async fn join_tokens(&self) -> Result<Vec<(TokenHash, JoinTokenRecord)>, StoreError> {
        self.inner.join_tokens().await
    }

    async fn raise_crl_number(&self, at_least: u64) -> Result<(), StoreError> {
        self.inner.raise_crl_number(at_least).await?;
        self.update_durably(|current| current.crl_number = current.crl_number.max(at_least))
            .await;
        Ok(())
    }

    async fn publish_crl(&self, crl: &super::SignedCrl) -> Result<(), StoreError> {
        self.inner.publish_crl(crl).await
    }

    async fn newest_crl(&self) -> Result<Option<super::SignedCrl>, StoreError> {
        self.inner.newest_crl().await
    }

    async fn insert_join_tokens(
        &self,
        tokens: &[(TokenHash, JoinTokenRecord)],
    ) -> Result<(), StoreError> {
        self.inner.insert_join_tokens(tokens).await
    }

    async fn join_token(&self, hash: &TokenHash) -> Result<Option<JoinTokenRecord>, StoreError> {
        self.inner.join_token(hash).await
    }

    async fn join_token_count(&self) -> Result<u64, StoreError> {
        self.inner.join_token_count().await
    }

    async fn purge_expired_tokens(&self, now: i64) -> Result<usize, StoreError> {
        self.inner.purge_expired_tokens(now).await
    }

    async fn remove_join_tokens(&self, hashes: &[TokenHash]) -> Result<usize, StoreError> {
        self.inner.remove_join_tokens(hashes).await
    }

    async fn insert_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        self.inner.insert_entry(entry).await
    }

    async fn replace_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        self.inner.replace_entry(entry).await
    }

    async fn remove_entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        self.inner.remove_entry(id).await
    }

    async fn entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        self.inner.entry(id).await
    }

    async fn entries(&self) -> Result<Vec<EntryRecord>, StoreError> {
        self.inner.entries().await
    }

    async fn policy(&self) -> Result<Option<crate::PolicyRecord>, StoreError> {
        self.inner.policy().await
    }

    async fn replace_policy(
        &self,
        expected: u64,
        policy: &crate::PolicyRecord,
    ) -> Result<bool, StoreError> {
        self.inner.replace_policy(expected, policy).await
    }

    async fn insert_federation(
        &self,
        record: &crate::FederationRecord,
    ) -> Result<bool, StoreError> {
        self.inner.insert_federation(record).await
    }

    async fn remove_federation(
        &self,
        trust_domain: &certd_core::identity::TrustDomain,
    ) -> Result<Option<crate::FederationRecord>, StoreError> {
        self.inner.remove_federation(trust_domain).await
    }

    async fn federation(
        &self,
        trust_domain: &certd_core::identity::TrustDomain,
    ) -> Result<Option<crate::FederationRecord>, StoreError> {
        self.inner.federation(trust_domain).await
    }

    async fn federations(&self) -> Result<Vec<crate::FederationRecord>, StoreError> {
        self.inner.federations().await
    }

    async fn accept_foreign_bundle(
        &self,
        trust_domain: &certd_core::identity::TrustDomain,
        bundle: &crate::ForeignBundle,
    ) -> Result<bool, StoreError> {
        self.inner.accept_foreign_bundle(trust_domain, bundle).await
    }

    async fn bundle_sequence(&self, digest: &[u8; 32], at_least: u64) -> Result<u64, StoreError> {
        self.inner.bundle_sequence(digest, at_least).await
    }

    async fn stored_bundle_sequence(&self) -> Result<u64, StoreError> {
        self.inner.stored_bundle_sequence().await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.inner.append_audit(entry).await
    }

    async fn audit_since(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_since(since, limit).await
    }

    fn fault(&self) -> Option<String> {
        self.inner.fault()
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.inner.probe().await
    }

    async fn successor(&self, predecessor: &Serial) -> Result<Option<Successor>, StoreError> {
        self.inner.successor(predecessor).await
    }

    async fn swap_successor(
        &self,
        predecessor: &Serial,
        expected: Option<&Successor>,
        new: &Successor,
    ) -> Result<bool, StoreError> {
        self.inner.swap_successor(predecessor, expected, new).await
    }

    async fn successors(&self) -> Result<Vec<(Serial, Successor)>, StoreError> {
        self.inner.successors().await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes()
    }

    fn shared_with_other_processes(&self) -> bool {
        self.inner.shared_with_other_processes()
    }

    fn write_coming(&self) -> crate::WriteComing {
        self.inner.write_coming()
    }

    async fn acme_object(&self, key: &str) -> Result<Option<crate::AcmeObject>, StoreError> {
        self.inner.acme_object(key).await
    }

    async fn acme_objects(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, crate::AcmeObject)>, StoreError> {
        self.inner.acme_objects(prefix).await
    }

    async fn acme_objects_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, crate::AcmeObject)>, StoreError> {
        self.inner.acme_objects_page(prefix, after, limit).await
    }

    async fn swap_acme_object(
        &self,
        key: &str,
        expected: Option<&crate::AcmeObject>,
        new: Option<&crate::AcmeObject>,
    ) -> Result<bool, StoreError> {
        self.inner.swap_acme_object(key, expected, new).await
    }

    async fn consume_acme_nonce(&self, nonce: &[u8], expires_at: i64) -> Result<bool, StoreError> {
        self.inner.consume_acme_nonce(nonce, expires_at).await
    }

    async fn purge_expired_acme(&self, now: i64) -> Result<usize, StoreError> {
        self.inner.purge_expired_acme(now).await
    }

    /// Keeps the newest serial the marks name, on disk, being written and
    /// about to be written, so that sled's check (`newest_serial` still present) holds
    /// after any purge.
    async fn purge_expired_certificates(
        &self,
        purge: &CertificatePurge,
    ) -> Result<PurgeReport, StoreError> {
        let mut purge = purge.clone();
        {
            let state = match self.state.lock() {
                Ok(state) => state,
                Err(poisoned) => poisoned.into_inner(),
            };
            let named = [
                state.current.newest_serial.as_deref(),
                state
                    .written
                    .as_ref()
                    .and_then(|w| w.newest_serial.as_deref()),
                state
                    .in_flight
                    .as_ref()
                    .and_then(|w| w.newest_serial.as_deref()),
            ];
            purge.keep.extend(
                named
                    .into_iter()
                    .flatten()
                    .filter_map(|hex| hex.parse::<Serial>().ok()),
            );
        }
        self.inner.purge_expired_certificates(&purge).await
    }

    async fn purge_audit(&self, before: i64, limit: usize) -> Result<usize, StoreError> {
        self.inner.purge_audit(before, limit).await
    }

    async fn carry_purged(&self, records: u64, revocations: u64) -> Result<(), StoreError> {
        self.inner.carry_purged(records, revocations).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> MarksFile {
        MarksFile {
            store_id: "a1".into(),
            crl_number: 21,
            records: 1597,
            revocations: 20,
            newest_serial: Some("4a5b".into()),
            newest_not_after: Some(1_700_086_400),
        }
    }

    #[test]
    fn a_store_holding_at_least_the_marks_passes() {
        let found = StoreMarks {
            store_id: Some("a1".into()),
            crl_number: 22,
            records: Some(1600),
            purged_records: 0,
            has_records: true,
            revocations: 20,
        };
        assert!(
            marks()
                .shortfalls(&found, Some(true), Some("ca-test"))
                .is_empty()
        );
        let uncounted = StoreMarks {
            records: None,
            ..found
        };
        assert!(
            marks()
                .shortfalls(&uncounted, Some(true), Some("ca-test"))
                .is_empty()
        );
    }

    #[test]
    fn every_shortfall_is_named() {
        let truncated = StoreMarks {
            store_id: Some("a1".into()),
            crl_number: 2,
            records: Some(1200),
            purged_records: 0,
            has_records: true,
            revocations: 0,
        };
        let shortfalls = marks()
            .shortfalls(&truncated, Some(false), Some("ca-test"))
            .join("; ");
        assert!(shortfalls.contains("1200 certificates where there were at least 1597"));
        assert!(shortfalls.contains("the newest certificate it had recorded (4a5b) is gone"));
        assert!(shortfalls.contains("0 revoked certificates where there were 20"));
        assert!(shortfalls.contains("CRL number 2 where 21 was already published"));

        let deleted = StoreMarks::default();
        assert!(
            marks()
                .shortfalls(&deleted, None, Some("ca-test"))
                .join("; ")
                .starts_with("it is missing or empty")
        );
        let other = StoreMarks {
            store_id: Some("b2".into()),
            ..truncated
        };
        assert!(marks().shortfalls(&other, None, Some("ca-test"))[0].contains("another database"));
    }

    /// Concurrent revocations each return only once the marks file on disk
    /// counts them, and share writes; the CRL numbers too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_revocations_are_in_the_marks_before_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store-marks.toml");
        let inner = crate::open(&dir.path().join("db")).unwrap();
        let ca = CaIdentity("ca-test".into());
        let store: SharedStorage = Arc::new(
            Marked::open(inner, &path, Unmarked::Accept, &ca, NOW)
                .await
                .unwrap(),
        );
        let mut serials = Vec::new();
        for _ in 0..50 {
            let record = crate::suite::record("billing");
            store.record_issuance(&record, None).await.unwrap();
            serials.push(record.serial);
        }
        let revocation = Revocation {
            revoked_at: 150,
            reason_code: 1,
        };
        // Every revocation that has returned is counted in the file: read
        // how many have, then the file, which only grows.
        let returned = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let revokers: Vec<_> = serials
            .into_iter()
            .map(|serial| {
                let (store, path, returned) = (store.clone(), path.clone(), returned.clone());
                tokio::spawn(async move {
                    store.revoke(&serial, revocation).await.unwrap().unwrap();
                    returned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let known = returned.load(std::sync::atomic::Ordering::SeqCst);
                    let counted = MarksFile::read(&path).unwrap().unwrap().revocations;
                    assert!(counted >= known, "{counted} counted, {known} returned");
                })
            })
            .collect();
        for revoker in revokers {
            revoker.await.unwrap();
        }
        assert_eq!(MarksFile::read(&path).unwrap().unwrap().revocations, 50);
        let number = store.next_crl_number().await.unwrap();
        assert_eq!(MarksFile::read(&path).unwrap().unwrap().crl_number, number);
    }

    /// A store that purged records is counted as present + purged: not
    /// short of marks that counted them when they were recorded.
    #[test]
    fn purged_records_count_as_recorded() {
        let purged = StoreMarks {
            store_id: Some("a1".into()),
            crl_number: 21,
            records: Some(1597),
            purged_records: 1500,
            has_records: true,
            revocations: 20,
        };
        assert!(
            marks()
                .shortfalls(&purged, Some(true), Some("ca-test"))
                .is_empty()
        );
    }

    fn issued(not_after: i64) -> crate::IssuanceRecord {
        crate::IssuanceRecord {
            serial: Serial::generate(),
            service: "billing".parse().unwrap(),
            dns_names: vec![],
            uris: vec![],
            not_before: not_after - 10,
            not_after,
            issued_at: not_after - 10,
            sha256_fingerprint: [7; 32],
            der: vec![1, 2, 3],
            attestation: crate::Attestation::Renewal,
            renewed_from: None,
            revocation: None,
        }
    }

    async fn open_marked(db: &Path, marks: &Path) -> Result<Marked, StoreError> {
        let inner: SharedStorage = std::sync::Arc::new(crate::sled::SledStore::open(db)?);
        Marked::open(
            inner,
            marks,
            Unmarked::Refuse,
            &CaIdentity::of_root(b"test"),
            NOW,
        )
        .await
    }

    /// The tests' clock: after every record they make has expired and
    /// could have been purged (their expiries are in the hundreds).
    const NOW: i64 = 100_000;

    /// A sled store whose expired records were purged reopens against its
    /// marks, and `db check`'s full count agrees (the newest record the
    /// marks name was kept, though expired too); an older copy of it
    /// restored under the newer marks is still refused.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_purge_is_not_a_rollback_but_an_older_copy_still_is() {
        let dir = tempfile::tempdir().unwrap();
        let (db, marks_path, backup) = (
            dir.path().join("db"),
            dir.path().join("store-marks.toml"),
            dir.path().join("backup"),
        );
        MarksFile::for_new_ca().write(&marks_path).unwrap();
        let store = open_marked(&db, &marks_path).await.unwrap();
        for index in 0..50 {
            store
                .record_issuance(&issued(100 + index), None)
                .await
                .unwrap();
            if index == 24 {
                // Blocking, as the daemon's backups are.
                tokio::task::block_in_place(|| {
                    let mut out = std::fs::File::create(&backup).unwrap();
                    store.backup(&mut out).unwrap();
                });
            }
        }
        let mut purge = CertificatePurge {
            expired_before: 1000,
            limit: 10,
            ..CertificatePurge::default()
        };
        let (mut purged, mut kept) = (0, 0);
        loop {
            let step = store.purge_expired_certificates(&purge).await.unwrap();
            (purged, kept) = (purged + step.purged, kept + step.kept);
            let Some(next) = step.next else { break };
            purge.after = Some(next);
        }
        assert_eq!((purged, kept), (49, 1));
        store.flush().await.unwrap();
        drop(store);

        let reopened = open_marked(&db, &marks_path).await.unwrap();
        let recorded = MarksFile::read(&marks_path).unwrap().unwrap();
        assert_eq!(recorded.records, 50);
        assert_eq!(
            shortfalls(&reopened, &recorded, true, None, NOW)
                .await
                .unwrap(),
            Vec::<String>::new()
        );
        drop(reopened);

        // The copy from before the purge, with half the records.
        let older = dir.path().join("older");
        tokio::task::block_in_place(|| {
            crate::sled::restore(
                &older,
                &backup,
                &crate::sled::RestoreFloor::default(),
                &crate::progress::Progress::default(),
            )
            .unwrap()
        });
        let Err(StoreError::BehindMarks { shortfalls, .. }) =
            open_marked(&older, &marks_path).await
        else {
            panic!("an older copy was served after a purge");
        };
        assert!(
            shortfalls.contains("the newest certificate it had recorded"),
            "{shortfalls}"
        );
        let inner = crate::sled::SledStore::open(&older).unwrap();
        let full = super::shortfalls(&inner, &recorded, true, None, NOW)
            .await
            .unwrap()
            .join("; ");
        assert!(
            full.contains("25 certificates where there were at least 50"),
            "{full}"
        );
    }

    /// A copy (`certd db copy`) of a store that purged records, revoked
    /// ones among them, carries the purged counts, so it meets the marks
    /// the source met.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_copy_of_a_purged_store_meets_the_same_marks() {
        let dir = tempfile::tempdir().unwrap();
        let marks_path = dir.path().join("store-marks.toml");
        MarksFile::for_new_ca().write(&marks_path).unwrap();
        let source = open_marked(&dir.path().join("db"), &marks_path)
            .await
            .unwrap();
        let records: Vec<_> = (0..10).map(|index| issued(100 + index)).collect();
        for record in &records {
            source.record_issuance(record, None).await.unwrap();
        }
        let revocation = crate::Revocation {
            revoked_at: 95,
            reason_code: 1,
        };
        for record in &records[..2] {
            source.revoke(&record.serial, revocation).await.unwrap();
        }
        let purge = CertificatePurge {
            expired_before: 106,
            limit: 100,
            ..CertificatePurge::default()
        };
        let report = source.purge_expired_certificates(&purge).await.unwrap();
        assert_eq!((report.purged, report.purged_revoked), (6, 2));
        source.flush().await.unwrap();
        let recorded = MarksFile::read(&marks_path).unwrap().unwrap();
        let source: SharedStorage = std::sync::Arc::new(source);

        let target: SharedStorage =
            std::sync::Arc::new(crate::sled::SledStore::open(&dir.path().join("copy")).unwrap());
        let copied = crate::copy::copy(
            source,
            target.clone(),
            std::sync::Arc::new(crate::progress::Progress::default()),
        )
        .await
        .unwrap();
        assert_eq!(copied.records, 4);
        assert_eq!(
            super::shortfalls(target.as_ref(), &recorded, true, None, NOW)
                .await
                .unwrap(),
            Vec::<String>::new()
        );
        let found = target.marks().await.unwrap();
        assert_eq!((found.purged_records, found.revocations), (6, 2));
    }

    /// PostgreSQL counts its records, and another replica's purge may
    /// delete the newest serial this process's marks name, so the count is
    /// compared; but while that serial's certificate expired less than
    /// `MIN_RETENTION_SECS` ago no purge can have deleted it, and a database
    /// that lost it (a standby promoted without its last seconds) is
    /// refused even when other replicas' issuances make up the count.
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_that_lost_the_newest_record_is_refused_until_it_could_be_purged() {
        use crate::postgres::{PgStore, scratch::ScratchServer};
        let Some(settings) = ScratchServer::fresh_database_for_tests() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let marks_path = dir.path().join("store-marks.toml");
        MarksFile::for_new_ca().write(&marks_path).unwrap();
        let ca = CaIdentity::of_root(b"test");
        let open = |now: i64| {
            let (settings, marks_path, ca) = (settings.clone(), marks_path.clone(), ca.clone());
            async move {
                let inner: SharedStorage = std::sync::Arc::new(PgStore::open(&settings).await?);
                Marked::open(inner, &marks_path, Unmarked::Refuse, &ca, now).await
            }
        };
        let now = 1_000_000;
        let store = open(now).await.unwrap();
        let mut records: Vec<_> = (0..3).map(|_| issued(now + 86_400)).collect();
        for record in &records {
            store.record_issuance(record, None).await.unwrap();
        }
        store.flush().await.unwrap();
        drop(store);
        let newest = records.pop().unwrap();
        let recorded = MarksFile::read(&marks_path).unwrap().unwrap();
        assert_eq!(recorded.newest_not_after, Some(newest.not_after));

        // The newest record is lost; another replica issues two more.
        let (client, connection) = tokio_postgres::connect(&settings.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let deleted = client
            .execute(
                "DELETE FROM certificates WHERE serial = $1",
                &[&newest.serial.as_bytes()],
            )
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        let other_replica = PgStore::open(&settings).await.unwrap();
        for _ in 0..2 {
            other_replica
                .record_issuance(&issued(now + 86_400), None)
                .await
                .unwrap();
        }

        let Err(StoreError::BehindMarks { shortfalls, .. }) = open(now).await else {
            panic!("a database without the newest record was served");
        };
        assert!(
            shortfalls.contains("the newest certificate it had recorded"),
            "{shortfalls}"
        );
        // Near an hour after that certificate expired a purge may have
        // taken it (by a clock a little ahead): the count alone decides,
        // and it is met.
        let later = newest.not_after + crate::MIN_RETENTION_SECS - CLOCK_MARGIN_SECS;
        open(later).await.unwrap();
    }

    #[test]
    fn the_marks_file_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store-marks.toml");
        assert_eq!(MarksFile::read(&path).unwrap(), None);
        marks().write(&path).unwrap();
        assert_eq!(MarksFile::read(&path).unwrap(), Some(marks()));
        std::fs::write(&path, "records = \"many\"").unwrap();
        assert!(MarksFile::read(&path).is_err());
    }
}
