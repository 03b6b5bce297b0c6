//! Durable storage: what certd must not lose, behind one trait.
//!
//! [`Storage`] is the seam between certd's decisions and the database that
//! keeps them. It speaks domain types (`model`) and [`StoreError`] only; no
//! backend type crosses it. `authority`, `registry`, `revocation`, `audit`
//! and `attest` name only the trait. The sled backend ([`sled::SledStore`],
//! in `DATA_DIR/db`) is the one implementation today and privately owns its
//! on-disk codec, its group commit and its fsync.
//!
//! Every write that returns `Ok` is durable, except `append_audit`, which
//! becomes durable with the next durable write (see its documentation).
//!
//! **The change feed.** Processes keep caches of what the store holds (the
//! registry's entry index, the OCSP answers, the published CRL). Their own
//! writes update them directly; a write made by *another process* on the
//! same database reaches them through [`Storage::changes`]. sled's database
//! is locked to one process, so its feed carries only `Reopened` (after a
//! storage fault); a shared backend (PostgreSQL) announces other replicas'
//! writes there. A receiver that falls behind is told so (`Lagged`) and
//! must resync in full.

pub mod backend;
mod codec;
pub mod copy;
pub mod listing;
pub mod marks;
pub mod metrics;
pub mod postgres;
pub mod progress;
pub mod sled;
#[cfg(test)]
mod suite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use backend::{Backend, Checked, StoreSettings};
pub use listing::{CertificateWindow, FILTERED_SCAN_PER_PAGE, TimeIndex};

use certd_core::identity::{Serial, ServiceName, TrustDomain};
pub use certd_core::model::{
    Attestation, AuditEntry, AuditEvent, CertificateCursor, CertificatePage, CertificateQuery,
    CertificateState, DelegationRecord, EndpointProfile, EntryRecord, ExpiryRange,
    FederationRecord, ForeignBundle, GrantCaller, GrantRecord, IssuanceRecord, JoinTokenRecord,
    ListingOrder, PolicyRecord, Proof, Revocation, RevokeOutcome, RevokedEntry, SignedCrl,
    Successor, TokenHash,
};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the database {0} is in use by another process: a running `certd serve` (commands without --offline reach it through its admin socket)"
    )]
    Locked(String),
    #[error("cannot open the database {path}: {reason}")]
    Open { path: String, reason: String },
    /// As `Open`, where another error is the reason (a file that cannot be
    /// read, a URL that does not parse).
    #[error("cannot open the database {path}")]
    Opening {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the database {path} is damaged ({reason}); see `certd db check`, and restore a backup with `certd db restore`"
    )]
    Damaged { path: String, reason: String },
    #[error(
        "the database {path} holds less than this CA recorded: {shortfalls}. It is damaged or an older copy, and certd will not serve from it; see `certd db check`, and restore a backup with `certd db restore`"
    )]
    BehindMarks { path: String, shortfalls: String },
    #[error(
        "{marks} is missing, so certd cannot tell whether the database {path} is this CA's and is not behind what the CA published (an older copy would answer revoked certificates as good). Restore {marks} from a backup of the data directory, or, only if you know this database is the CA's latest, start once with `certd serve --danger-accept-unmarked-store` (audited)"
    )]
    Unmarked { path: String, marks: String },
    #[error("database error: {0}")]
    Backend(String),
    #[error("cannot make the write durable: {}", describe_io(.0))]
    Durability(Arc<std::io::Error>),
    /// The storage cannot be used now (a full disk, a failing device); the
    /// backend recovers by itself once it can (see `Storage::fault`).
    #[error("the database is unavailable ({0}); certd keeps trying and resumes by itself")]
    Unavailable(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the join token was already used")]
    TokenAlreadyUsed,
    #[error("serial {0} is already recorded")]
    SerialTaken(Serial),
    /// What was asked is not something this backend does (a certd backup
    /// of a PostgreSQL store); the message says what to use instead.
    #[error("{0}")]
    NotOnThisBackend(String),
}

impl StoreError {
    pub fn kind(&self) -> certd_core::ErrorKind {
        use certd_core::ErrorKind;
        match self {
            // Both pass: the disk recovers, the other process exits.
            StoreError::Durability(_) | StoreError::Unavailable(_) | StoreError::Locked(_) => {
                ErrorKind::Unavailable
            }
            StoreError::Open { .. }
            | StoreError::Opening { .. }
            | StoreError::Damaged { .. }
            | StoreError::BehindMarks { .. }
            | StoreError::Unmarked { .. }
            | StoreError::Backend(_)
            | StoreError::Corrupt(_)
            | StoreError::TokenAlreadyUsed
            | StoreError::SerialTaken(_) => ErrorKind::Internal,
            StoreError::NotOnThisBackend(_) => ErrorKind::FailedPrecondition,
        }
    }
}

impl StoreError {
    /// Whether this is the storage itself failing (as opposed to a refused
    /// or unreadable value), which the backend must recover from.
    pub fn is_storage_fault(&self) -> bool {
        matches!(self, StoreError::Durability(_) | StoreError::Unavailable(_))
    }
}

/// An I/O error as "File too large (os error 27)". sled passes some on
/// wrapped in a custom error whose text is the original's debug form;
/// those are described by their kind ("file too large").
fn describe_io(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None if error.to_string().starts_with("Os {") => error.kind().to_string(),
        None => error.to_string(),
    }
}

/// A write another process made, announced on the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Registration entry `id` was created, replaced or deleted.
    Entry { id: String },
    /// The token policy was replaced by version `version`.
    Policy { version: u64 },
    /// Certificate `serial` was revoked.
    Revoked { serial: Serial },
    /// The federation relationship with `trust_domain` was added, removed,
    /// or given a newer foreign bundle.
    Federation { trust_domain: String },
    /// The backend reopened its storage after a fault: writes that failed
    /// may or may not have reached it, so every cache must reload.
    Reopened,
    /// Another process published CRL `number` (`Storage::newest_crl`).
    CrlPublished { number: u64 },
    /// Changes by other processes may have been missed (the backend lost
    /// its feed for a while): every cache must reload.
    Missed,
}

/// The sending end of a change feed, held by a backend.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: broadcast::Sender<Change>,
}

/// How many changes a slow receiver may fall behind before it must resync.
const CHANGE_FEED_CAPACITY: usize = 1024;

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed {
            sender: broadcast::channel(CHANGE_FEED_CAPACITY).0,
        }
    }
}

impl ChangeFeed {
    /// Announces a change made elsewhere; nobody listening is fine.
    pub fn announce(&self, change: Change) {
        let _ = self.sender.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// A durable write on its way ([`Storage::write_coming`]): counted by the
/// store that gave it until it is dropped. Dropped at once it announces
/// nothing.
#[must_use = "the announcement ends when this is dropped"]
#[derive(Debug, Default)]
pub struct WriteComing(Option<Arc<AtomicUsize>>);

impl WriteComing {
    /// Counts one more write coming in `counter`, until dropped.
    pub(crate) fn counted_in(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, AtomicOrdering::AcqRel);
        WriteComing(Some(counter.clone()))
    }
}

impl Drop for WriteComing {
    fn drop(&mut self) {
        if let Some(counter) = &self.0 {
            counter.fetch_sub(1, AtomicOrdering::AcqRel);
        }
    }
}

/// Everything certd keeps durably. Implementations must be safe to share
/// between tasks; every method is a complete operation (no handles to
/// partial state cross the trait).
#[async_trait]
pub trait Storage: std::fmt::Debug + Send + Sync + 'static {
    /// Where the data lives, for messages.
    fn location(&self) -> String;

    /// Records an issuance and returns once it is durable: consumes `token`
    /// when given (exactly one of several concurrent calls with one token
    /// succeeds; the others get `TokenAlreadyUsed`), reserves the serial
    /// (`SerialTaken` if it is recorded already, and then nothing changed)
    /// and writes the record with its indexes. `announced`: the write's
    /// announcement ([`Storage::write_coming`]; a default one announces
    /// nothing), which ends as soon as the write waits for durability (a
    /// backend that keeps no groups may hold it until it returns).
    async fn record_announced_issuance(
        &self,
        record: &IssuanceRecord,
        token: Option<&TokenHash>,
        announced: WriteComing,
    ) -> Result<(), StoreError>;

    /// [`Storage::record_announced_issuance`] of a write nobody announced.
    async fn record_issuance(
        &self,
        record: &IssuanceRecord,
        token: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        self.record_announced_issuance(record, token, WriteComing::default())
            .await
    }

    /// Revokes one certificate and returns once that is durable; `None` if
    /// the serial is unknown. Revoking twice keeps the first time and reason.
    async fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
    ) -> Result<Option<RevokeOutcome>, StoreError>;

    async fn certificate(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError>;

    /// Whether a serial is already recorded.
    async fn serial_exists(&self, serial: &Serial) -> Result<bool, StoreError>;

    /// Every record, or those of one service, in serial order.
    async fn certificates(
        &self,
        service: Option<&ServiceName>,
    ) -> Result<Vec<IssuanceRecord>, StoreError>;

    /// The `limit` most recently issued records, or one service's, newest
    /// first. Memory stays bounded by `limit` however large the store.
    async fn newest_certificates(
        &self,
        service: Option<&ServiceName>,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError>;

    /// Up to `limit` entries of an issuance-time index (overall or one
    /// service's, of every certificate or of the revoked ones) strictly
    /// older than `before` (from the newest when `None`), newest first,
    /// with their records: O(`limit`) reads however large the store. The
    /// building block of `certificate_page`.
    async fn certificates_before(
        &self,
        index: TimeIndex<'_>,
        before: Option<&CertificateCursor>,
        limit: usize,
    ) -> Result<CertificateWindow, StoreError>;

    /// One page of certificates, newest first, after `query.after`: at most
    /// `query.limit` of them, and the cursor of the next page (`None` at the
    /// end). Bounded work per page whatever the filters: see `listing`.
    async fn certificate_page(
        &self,
        query: &CertificateQuery,
    ) -> Result<CertificatePage, StoreError> {
        listing::page(self, query).await
    }

    /// How many issuance records exist.
    async fn record_count(&self) -> Result<u64, StoreError>;

    /// Revoked certificates that have not yet expired at `now`: what a CRL
    /// lists.
    async fn revoked_unexpired(&self, now: i64) -> Result<Vec<RevokedEntry>, StoreError>;

    /// Forgets revocations of certificates expired before `now` (their
    /// records stay); returns how many.
    async fn prune_expired_revocations(&self, now: i64) -> Result<usize, StoreError>;

    /// The next CRL number: strictly greater than every number handed out
    /// before, across restarts and crashes (it is durable when returned).
    async fn next_crl_number(&self) -> Result<u64, StoreError>;

    /// Makes the next CRL number greater than `at_least`, durably (for a
    /// copied or restored store, whose CRLs must continue the old numbers).
    async fn raise_crl_number(&self, at_least: u64) -> Result<(), StoreError>;

    /// Shares a CRL this process signed with the other processes on the
    /// same database, which serve the newest one (`newest_crl`) instead of
    /// building their own. A single-process backend (sled) keeps nothing.
    async fn publish_crl(&self, crl: &SignedCrl) -> Result<(), StoreError>;

    /// The newest CRL any process published; `None` if none (always, on a
    /// single-process backend).
    async fn newest_crl(&self) -> Result<Option<SignedCrl>, StoreError>;

    /// Stores new join tokens and returns once they are all durable. Not
    /// atomic: after a failure some may be stored, which nobody was given
    /// and which expire as any other.
    async fn insert_join_tokens(
        &self,
        tokens: &[(TokenHash, JoinTokenRecord)],
    ) -> Result<(), StoreError>;

    async fn join_token(&self, hash: &TokenHash) -> Result<Option<JoinTokenRecord>, StoreError>;

    /// Every unused join token (their hashes: the tokens themselves are
    /// never stored), for copying a store.
    async fn join_tokens(&self) -> Result<Vec<(TokenHash, JoinTokenRecord)>, StoreError>;

    /// How many unused join tokens exist.
    async fn join_token_count(&self) -> Result<u64, StoreError>;

    /// Deletes tokens that expired before `now`; returns how many.
    async fn purge_expired_tokens(&self, now: i64) -> Result<usize, StoreError>;

    /// Deletes these unused tokens (an operator revoking them) and returns
    /// once that is durable: how many there were. A token used or deleted
    /// meanwhile is not counted; it can never be used after this returns.
    async fn remove_join_tokens(&self, hashes: &[TokenHash]) -> Result<usize, StoreError>;

    /// Stores a new registration entry and returns once it is durable;
    /// `false` (and nothing written) if its id is taken.
    async fn insert_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError>;

    /// Replaces an existing registration entry (same id) and returns once
    /// that is durable; `false` (and nothing written) if there is none.
    async fn replace_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError>;

    /// Deletes a registration entry and returns it once that is durable;
    /// `None` if there is no such entry.
    async fn remove_entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError>;

    async fn entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError>;

    /// Every registration entry, in id order.
    async fn entries(&self) -> Result<Vec<EntryRecord>, StoreError>;

    /// The token policy; `None` if none was ever stored.
    async fn policy(&self) -> Result<Option<PolicyRecord>, StoreError>;

    /// Stores `policy` and returns once it is durable, if the stored one's
    /// version (0 for none) is `expected` and `policy.version` is greater;
    /// `false` (and nothing written) if another change came first.
    async fn replace_policy(
        &self,
        expected: u64,
        policy: &PolicyRecord,
    ) -> Result<bool, StoreError>;

    /// Stores a new federation relationship and returns once it is
    /// durable; `false` (and nothing written) if its trust domain has one.
    async fn insert_federation(&self, record: &FederationRecord) -> Result<bool, StoreError>;

    /// Deletes the relationship with `trust_domain` and returns it once
    /// that is durable; `None` if there is none.
    async fn remove_federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError>;

    async fn federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError>;

    /// Every federation relationship, in trust-domain order.
    async fn federations(&self) -> Result<Vec<FederationRecord>, StoreError>;

    /// Makes `bundle` the relationship's bundle and returns once that is
    /// durable, if the relationship exists and holds no bundle or one with
    /// a lower sequence (atomically against other replicas, so a bundle
    /// never goes backwards); whether it was stored.
    async fn accept_foreign_bundle(
        &self,
        trust_domain: &TrustDomain,
        bundle: &ForeignBundle,
    ) -> Result<bool, StoreError>;

    /// The `spiffe_sequence` of certd's own bundle, whose content has the
    /// SHA-256 `digest`: the stored sequence if it was stored with this
    /// digest, else one more than the stored one; at least `at_least`
    /// either way. Stored with the digest, durably, before it returns, and
    /// atomically against other replicas, so the sequence never goes back
    /// across restarts and replicas.
    async fn bundle_sequence(&self, digest: &[u8; 32], at_least: u64) -> Result<u64, StoreError>;

    /// The last `spiffe_sequence` stored for certd's own bundle; 0 if none
    /// (for `db copy`, which must carry it on).
    async fn stored_bundle_sequence(&self) -> Result<u64, StoreError>;

    /// Appends an audit entry. It need not be durable on return: it becomes
    /// durable with the next durable write (or the backend's own periodic
    /// flush); the decision it describes was made durable before, where
    /// that matters.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Audit entries at or after `since` (Unix seconds), oldest first; at
    /// most the last `limit` of them.
    async fn audit_since(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Waits until every write made so far is on stable storage.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Writes a backup of the store to `out`, consistent record by record
    /// while the store keeps serving. Blocking: call it from a blocking
    /// thread (`spawn_blocking`), never from the async runtime's.
    fn backup(&self, out: &mut dyn std::io::Write) -> Result<BackupSummary, StoreError>;

    /// What the store holds now, for the high-water marks (`marks`).
    async fn marks(&self) -> Result<marks::StoreMarks, StoreError>;

    /// Gives a store without one its id, durably; a store that has one
    /// keeps it.
    async fn set_store_id(&self, id: &str) -> Result<(), StoreError>;

    /// Why the storage cannot be used right now (it failed and is
    /// recovering), or `None` when it can. Every call fails with
    /// `Unavailable` meanwhile; readiness reports this.
    fn fault(&self) -> Option<String>;

    /// The certificate that renewing `predecessor` produced, if it was
    /// renewed (since lineage was recorded).
    async fn successor(&self, predecessor: &Serial) -> Result<Option<Successor>, StoreError>;

    /// Sets `predecessor`'s successor to `new` if it is `expected` now
    /// (`None`: it has none), atomically against other callers and
    /// replicas; whether it was set. Durable with the next durable write
    /// (the issuance it precedes).
    async fn swap_successor(
        &self,
        predecessor: &Serial,
        expected: Option<&Successor>,
        new: &Successor,
    ) -> Result<bool, StoreError>;

    /// Every lineage link, for `db copy`.
    async fn successors(&self) -> Result<Vec<(Serial, Successor)>, StoreError>;

    /// Asks the backend to answer now (PostgreSQL: a round trip). Readiness
    /// runs it every second and reports a probe that has not answered
    /// within its deadline, so a database that hangs, rather than fails,
    /// makes certd not ready (`authority::readiness`).
    async fn probe(&self) -> Result<(), StoreError>;

    /// Writes made by other processes; see the module documentation.
    fn changes(&self) -> broadcast::Receiver<Change>;

    /// Says that this process will soon ask this store for a durable write
    /// (an issuance was admitted and will record its certificate): the
    /// announcement lasts until it is handed to
    /// [`Storage::record_announced_issuance`], which ends it once the write
    /// waits for durability, or until it is dropped (the issuance was
    /// refused). A store that makes writes durable in groups may hold a
    /// group open a moment for the writes announced, so that they share
    /// one flush (sled: `sled::commit`); others ignore it.
    fn write_coming(&self) -> WriteComing {
        WriteComing::default()
    }

    /// Whether other processes may write this store (replicas sharing a
    /// database). When not, nothing can change it behind this process's
    /// back, and the periodic comparison of its caches with the store (a
    /// read of every unexpired revocation) is skipped.
    fn shared_with_other_processes(&self) -> bool {
        true
    }

    /// The ACME object stored under `key` (`account/…`, `order/…`), if any.
    async fn acme_object(&self, key: &str) -> Result<Option<AcmeObject>, StoreError>;

    /// Every ACME object whose key starts with `prefix`, in key order.
    async fn acme_objects(&self, prefix: &str) -> Result<Vec<(String, AcmeObject)>, StoreError>;

    /// At most `limit` ACME objects whose key starts with `prefix` and
    /// comes after `after` (from the first when `None`), in key order:
    /// O(`limit`) reads however many the prefix holds (an account's orders
    /// page by page, its open orders counted up to the cap).
    async fn acme_objects_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, AcmeObject)>, StoreError>;

    /// Replaces the object under `key` with `new` (`None` removes it) if
    /// what is stored now is `expected` (`None`: nothing), atomically
    /// against other callers and replicas, and returns once that is
    /// durable; `false` (and nothing written) if another write came first.
    /// This is how an order is finalized once even with two replicas.
    async fn swap_acme_object(
        &self,
        key: &str,
        expected: Option<&AcmeObject>,
        new: Option<&AcmeObject>,
    ) -> Result<bool, StoreError>;

    /// Consumes an ACME nonce: `true` the first time it is presented (it
    /// is then kept until `expires_at`, durably), `false` ever after, on
    /// every replica.
    async fn consume_acme_nonce(&self, nonce: &[u8], expires_at: i64) -> Result<bool, StoreError>;

    /// Deletes ACME objects and consumed nonces that expired before `now`;
    /// returns how many.
    async fn purge_expired_acme(&self, now: i64) -> Result<usize, StoreError>;

    /// One bounded step of the retention purge: deletes the records (and
    /// every index entry, revocation entry and lineage link of theirs) of
    /// certificates that expired before `purge.expired_before`, examining
    /// at most `purge.limit` of them in expiry order from `purge.after`,
    /// found through an index by expiry (never by reading every record).
    /// Kept whatever their age: the serials in `purge.keep` (the marks'
    /// newest record), and a certificate whose predecessor (the one it
    /// renewed) is still recorded, so a lineage is purged oldest first and
    /// `revoke --lineage` from any recorded certificate walks back through
    /// every one still recorded. Each step is atomic with the store's
    /// purged counters (`marks::StoreMarks::purged_records`), so a purge is
    /// never mistaken for a rollback.
    async fn purge_expired_certificates(
        &self,
        purge: &CertificatePurge,
    ) -> Result<PurgeReport, StoreError>;

    /// Deletes at most `limit` audit entries recorded before `before` (Unix
    /// seconds), oldest first; returns how many.
    async fn purge_audit(&self, before: i64, limit: usize) -> Result<usize, StoreError>;

    /// Adds to the purged counts (and so to what the store ever recorded
    /// and revoked) durably: for a copy (`certd db copy`) of a store that
    /// had purged records, so the copy meets the same marks.
    async fn carry_purged(&self, records: u64, revocations: u64) -> Result<(), StoreError>;
}

/// The shortest time past its expiry that a certificate's record is kept
/// (the daemon refuses a shorter `[retention] certificates`). The marks
/// check leans on it: a record whose certificate expired less than this ago
/// cannot have been purged, so its absence is a rollback.
pub const MIN_RETENTION_SECS: i64 = 3600;

/// One step of the retention purge (`Storage::purge_expired_certificates`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificatePurge {
    /// Records of certificates whose `not_after` is before this (Unix
    /// seconds) may be deleted: the clock minus the retention, which is at
    /// least `MIN_RETENTION_SECS`.
    pub expired_before: i64,
    /// The most records one step examines (deleted or kept).
    pub limit: usize,
    /// Where the previous step of this pass stopped (`PurgeReport::next`);
    /// `None`: from the earliest expiry.
    pub after: Option<PurgeCursor>,
    /// Serials never deleted.
    pub keep: Vec<Serial>,
}

/// A position in the expiry order: the last record a purge step examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCursor {
    pub not_after: i64,
    pub serial: Serial,
}

/// What one purge step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Records deleted.
    pub purged: usize,
    /// Of them, revoked ones.
    pub purged_revoked: usize,
    /// Lineage links deleted (both of their ends were gone).
    pub links_purged: usize,
    /// Records old enough but kept (see `Storage::purge_expired_certificates`).
    pub kept: usize,
    /// Where the next step continues; `None` when no record that expired
    /// before `expired_before` remains after this step's.
    pub next: Option<PurgeCursor>,
}

/// One ACME object (an account, an order, an authorization, an EAB key's
/// record): bytes the daemon's `acme` module encodes and the store keeps
/// as they are, and when it may be purged. The store knows nothing of
/// ACME; it compares, keeps and forgets these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeObject {
    /// Unix seconds after which it may be purged; `None`: kept for good
    /// (accounts).
    pub expires_at: Option<i64>,
    pub data: Vec<u8>,
}

/// What a backup holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSummary {
    pub records: u64,
    pub revocations: u64,
    pub join_tokens: u64,
    pub entries: u64,
    pub audit_entries: u64,
    /// Records, and revoked records, the retention purge had deleted: with
    /// `records` and `revocations`, what the store had ever recorded.
    pub purged_records: u64,
    pub purged_revocations: u64,
    /// The last CRL number handed out when the backup was taken.
    pub crl_number: u64,
    pub store_id: Option<String>,
    /// The token policy's version; 0 for none.
    pub policy_version: u64,
}

impl std::fmt::Display for BackupSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} certificates ({} revoked), {} entries, {} join tokens, {} audit entries",
            self.records, self.revocations, self.entries, self.join_tokens, self.audit_entries
        )
    }
}

/// What `restore` did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub restored: BackupSummary,
    /// The CRL number the restored store continues after: never below the
    /// last one published, whatever the backup's age.
    pub crl_number: u64,
    /// Where the database it replaced was kept, if there was one.
    pub replaced: Option<PathBuf>,
    /// The marks from before the restore: what the CA had recorded.
    pub previous_marks: Option<marks::MarksFile>,
}

/// The storage certd runs on, shared by every part of the daemon.
pub type SharedStorage = Arc<dyn Storage>;

/// Opens the default backend: sled in `dir` (`DATA_DIR/db`). Fails with
/// `Locked` if another process has it open. Nothing is checked against the
/// data directory's marks: daemons and commands use [`open_checked`].
pub fn open(dir: &Path) -> Result<SharedStorage, StoreError> {
    Ok(Arc::new(sled::SledStore::open(dir)?))
}

/// Opens the configured database (`backend`: sled in the data directory,
/// or the one its URL names), refuses it if it holds less than the marks beside the CA
/// files say it did (`BehindMarks`) or sled cannot recover it (`Damaged`),
/// and keeps the marks up to date from then on.
pub async fn open_checked(
    data_dir: &certd_core::DataDir,
    settings: &StoreSettings,
    unmarked: marks::Unmarked,
    ca: &marks::CaIdentity,
    now: i64,
) -> Result<SharedStorage, StoreError> {
    let backend = settings.open(data_dir).await?;
    Ok(Arc::new(
        marks::Marked::open(backend, &data_dir.store_marks(), unmarked, ca, now).await?,
    ))
}
