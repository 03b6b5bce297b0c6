//! Revocation: the published CRLs and the OCSP responder, both kept current
//! with the store.
//!
//! Each intermediate in use (`ca::Signers`: the current one, and the
//! previous one while certificates it signed live) signs its own CRL, all
//! with the same number and entries, and answers OCSP for its own
//! certificates. A rotation (a new `Signers` generation) makes the
//! published CRLs and cached OCSP answers stale at once.
//!
//! `revocation` owns what relying parties see: a signed CRL, rebuilt off
//! the request path by one background publisher (`publisher`) after
//! revocations — every revocation noted before a build starts is in that
//! build, those noted during it in the next, so a burst of revocations
//! costs a few builds, not one each — and again every `crl_refresh` (at
//! most half its validity) so it is never stale; and OCSP answers, cached
//! per serial and dropped from the cache (in O(1)) when that serial's
//! status changes or its answer nears its nextUpdate. It reads the store
//! and signs through `ca`; recording a revocation is `authority`'s job.

pub mod ocsp;
mod ocsp_cache;
mod publisher;
mod shards;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::ca::crl_shards::ShardCount;
use crate::ca::{CaError, CertificateAuthority, crl, pem_encode};
use crate::identity::Serial;
use crate::store::{CertificateState, SharedStorage, StoreError};
use ocsp::{IssuerHashes, KnownStatus};
use ocsp_cache::{CachedOcsp, OcspQuestion};
pub use shards::ShardSet;

/// Why a CRL could not be built, published or read, or a status looked up.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The blocking task that signs the CRLs stopped before it finished.
    #[error("the CRL signing task stopped")]
    SigningStopped(#[source] tokio::task::JoinError),
    /// The task a revocation request runs on (so that it ends, audited,
    /// even if its caller goes away) stopped before it finished.
    #[error("the revocation's task stopped before it finished")]
    RequestStopped(#[source] tokio::task::JoinError),
    /// The background publisher's build that would have listed a
    /// revocation failed (the revocation itself is durable; the publisher
    /// retries).
    #[error("the CRL listing it could not be published: {message}")]
    NotPublished {
        kind: crate::ErrorKind,
        message: Arc<str>,
    },
}

impl RevocationError {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            RevocationError::Store(error) => error.kind(),
            RevocationError::Ca(error) => error.kind(),
            RevocationError::SigningStopped(_) | RevocationError::RequestStopped(_) => {
                crate::ErrorKind::Internal
            }
            RevocationError::NotPublished { kind, .. } => *kind,
        }
    }
}

type Result<T, E = RevocationError> = std::result::Result<T, E>;

/// Default validity of a CRL: its nextUpdate is this long after it is
/// signed (its thisUpdate is backdated a minute, `crl::this_update`). Long,
/// so that a relying party that loads the CRL from a file and misses
/// refreshes keeps working for a day (see `DEFAULT_CRL_REFRESH`).
pub(crate) const DEFAULT_CRL_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How often a CRL is signed anew even when nothing was revoked: a relying
/// party that fetches hourly gets one with at least 23 of its 24 hours
/// left, and survives 23 failed fetches in a row.
pub(crate) const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(3600);
/// Default validity of an OCSP answer.
pub(crate) const DEFAULT_OCSP_VALIDITY: Duration = Duration::from_secs(3600);

/// How long what `revocation` publishes stays valid, and how the leaves'
/// CRL is partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    pub crl_validity: Duration,
    pub ocsp_validity: Duration,
    /// At most half of `crl_validity`.
    pub crl_refresh: Duration,
    /// How many shards each intermediate's leaf CRL is split into besides
    /// the whole CRL (`crl_shards`); 1: none.
    pub crl_shards: ShardCount,
    /// Shard counts used before, still named by certificates that have not
    /// expired: their shards are built and served too. Never `crl_shards`,
    /// never 1, no repeats (the configuration checks it).
    pub crl_retired_shards: Vec<ShardCount>,
}

impl RevocationSettings {
    /// Every partition a build makes shards for: the current count first.
    fn shard_counts(&self) -> impl Iterator<Item = ShardCount> + '_ {
        std::iter::once(self.crl_shards)
            .chain(self.crl_retired_shards.iter().copied())
            .filter(|count| count.is_sharded())
    }
}

impl Default for RevocationSettings {
    fn default() -> Self {
        RevocationSettings {
            crl_validity: DEFAULT_CRL_VALIDITY,
            ocsp_validity: DEFAULT_OCSP_VALIDITY,
            crl_refresh: DEFAULT_CRL_REFRESH,
            crl_shards: ShardCount::WHOLE,
            crl_retired_shards: Vec::new(),
        }
    }
}

/// A signed CRL as served: the current intermediate's (`der`, `pem`), and
/// the previous intermediate's, if one is kept.
#[derive(Debug)]
pub struct PublishedCrl {
    pub der: Vec<u8>,
    pub pem: String,
    pub number: u64,
    /// What the CRL says: its thisUpdate is backdated (`crl::this_update`).
    pub this_update: i64,
    pub next_update: i64,
    /// When it was signed (Unix seconds): its refresh is timed from here.
    pub signed_at: i64,
    pub entries: usize,
    /// The key id of the intermediate that signed `der`.
    pub signer_key_id: Vec<u8>,
    /// The same list, signed by the previous intermediate.
    pub previous: Option<PreviousCrl>,
    /// The same list split into shards (`crl_shards`), for each shard count
    /// configured and each intermediate in use; empty when not sharded.
    /// Same number and validity as the whole CRL: one build makes them all.
    pub shards: Vec<ShardSet>,
    /// The `Signers` generation it was signed under.
    generation: u64,
}

/// The previous intermediate's CRL.
#[derive(Debug)]
pub struct PreviousCrl {
    pub signer_key_id: Vec<u8>,
    pub der: Vec<u8>,
    pub pem: String,
}

impl PublishedCrl {
    fn signed(&self) -> crate::model::SignedCrl {
        crate::model::SignedCrl {
            number: self.number,
            this_update: self.this_update,
            next_update: self.next_update,
            entries: u64::try_from(self.entries).unwrap_or(u64::MAX),
            der: self.der.clone(),
        }
    }

    /// A strong validator for HTTP caching: the CRL number identifies the
    /// content.
    pub fn etag(&self) -> String {
        format!("\"crl-{}\"", self.number)
    }

    /// The CRL signed by the intermediate whose key id is `key_id`.
    pub fn signed_by(&self, key_id: &[u8]) -> Option<(&[u8], &str)> {
        if self.signer_key_id == key_id {
            return Some((&self.der, &self.pem));
        }
        self.previous
            .as_ref()
            .filter(|previous| previous.signer_key_id == key_id)
            .map(|previous| (previous.der.as_slice(), previous.pem.as_str()))
    }

    /// Shard `index` of `count` signed by the intermediate whose key id is
    /// `key_id`, DER; `None` if no such shard is published (a count neither
    /// configured nor retired, an index past it, another intermediate).
    pub fn shard(&self, key_id: &[u8], count: u16, index: u16) -> Option<&[u8]> {
        self.shards
            .iter()
            .find(|set| set.count.get() == count && set.signer_key_id == key_id)
            .and_then(|set| set.der.get(usize::from(index)))
            .map(Vec::as_slice)
    }

    /// Every CRL, PEM: the current intermediate's, then the previous one's.
    pub fn all_pem(&self) -> String {
        let mut pem = self.pem.clone();
        if let Some(previous) = &self.previous {
            pem.push_str(&previous.pem);
        }
        pem
    }
}

/// Records a build's progress (`Revocations::covered`) when dropped: at
/// the end of `build_and_serve`, or where its future is dropped first.
struct CoveredOnDrop<'a> {
    revocations: &'a Revocations,
    covering: u64,
}

impl Drop for CoveredOnDrop<'_> {
    fn drop(&mut self) {
        self.revocations.covered(self.covering);
    }
}

/// An OCSP answer ready to send.
#[derive(Debug, Clone)]
pub struct OcspAnswer {
    pub der: Arc<Vec<u8>>,
    /// For successful answers, when the client should ask again.
    pub next_update: Option<i64>,
    pub this_update: Option<i64>,
}

/// The CRL and OCSP publisher.
pub struct Revocations {
    ca: Arc<CertificateAuthority>,
    store: SharedStorage,
    settings: RevocationSettings,
    published: RwLock<Option<Arc<PublishedCrl>>>,
    /// The revocation sequence number the published CRL covers; held while
    /// rebuilding, so concurrent requests for a new CRL share one build.
    rebuild: tokio::sync::Mutex<u64>,
    /// Held while adopting another replica's CRL with shards (which signs
    /// them): one adoption at a time, the others then find it done.
    adopting: tokio::sync::Mutex<()>,
    /// Bumped after every durable revocation: its sequence number.
    revocations_seen: AtomicU64,
    /// What the builds have covered, for callers waiting for a CRL that
    /// lists their revocation (`wait_for_crl`).
    progress: tokio::sync::watch::Sender<publisher::Progress>,
    /// Wakes the background publisher (`start_publisher`).
    wake: Arc<tokio::sync::Notify>,
    /// Whether a background publisher runs; without one (a bare
    /// `Revocations`, as benchmarks make) waiting builds in place.
    publisher_started: std::sync::atomic::AtomicBool,
    /// CRLs built by this process, counted for tests and the metric.
    builds: AtomicU64,
    /// Cached OCSP answers by serial, so that a revocation drops its
    /// serial's answers without looking at the others.
    ocsp_cache: RwLock<HashMap<Serial, Vec<CachedOcsp>>>,
    /// The `Signers` generation the OCSP cache holds answers of.
    ocsp_generation: AtomicU64,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Revocations {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        store: SharedStorage,
        settings: RevocationSettings,
    ) -> Self {
        Revocations {
            ocsp_generation: AtomicU64::new(ca.signers().generation),
            ca,
            store,
            settings,
            published: RwLock::new(None),
            rebuild: tokio::sync::Mutex::new(0),
            adopting: tokio::sync::Mutex::new(()),
            revocations_seen: AtomicU64::new(0),
            progress: tokio::sync::watch::Sender::new(publisher::Progress::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            publisher_started: std::sync::atomic::AtomicBool::new(false),
            builds: AtomicU64::new(0),
            ocsp_cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &RevocationSettings {
        &self.settings
    }

    /// The CRL to serve: the published one while it has more than half its
    /// validity left, else a fresh one.
    pub async fn current_crl(&self) -> Result<Arc<PublishedCrl>> {
        let now = self.ca.now();
        if let Some(published) = self.published_if_fresh(now) {
            return Ok(published);
        }
        // Another replica may have refreshed it already: serve that one
        // rather than sign another.
        if let Err(error) = self.adopt_newest_crl().await {
            tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot read the CRLs other replicas published");
        }
        if let Some(published) = self.published_if_fresh(now)
            && *self.rebuild.lock().await >= self.revocations_seen.load(Ordering::SeqCst)
        {
            return Ok(published);
        }
        self.refresh_crl().await
    }

    /// Tells the publisher that `serial` was revoked (durably): its cached
    /// OCSP answers are dropped, so OCSP says revoked from now on, and the
    /// background publisher is woken to build a CRL listing it. Returns the
    /// revocation's sequence number, for `wait_for_crl`.
    pub fn note_revocation(&self, serial: &Serial) -> u64 {
        let sequence = self.revocations_seen.fetch_add(1, Ordering::SeqCst) + 1;
        self.ocsp_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(serial);
        self.wake.notify_one();
        sequence
    }

    /// Tells the publisher that another process revoked `serial`: its
    /// cached OCSP answers are dropped, and the next CRL built here lists it,
    /// but nothing is built now: the process that revoked publishes the CRL
    /// (`authority::changes` builds one only if that does not come).
    pub fn note_revocation_elsewhere(&self, serial: &Serial) {
        self.revocations_seen.fetch_add(1, Ordering::SeqCst);
        self.ocsp_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(serial);
    }

    /// The sequence number of the latest revocation noted: a CRL covering
    /// it lists every revocation this process knows of.
    pub fn noted(&self) -> u64 {
        self.revocations_seen.load(Ordering::SeqCst)
    }

    /// CRLs this process has built (each one signed by every intermediate
    /// in use).
    pub fn crl_builds(&self) -> u64 {
        self.builds.load(Ordering::SeqCst)
    }

    /// Drops every cached OCSP answer, for a cache that may have missed
    /// revocations made by another process.
    pub fn forget_cached_answers(&self) {
        self.revocations_seen.fetch_add(1, Ordering::SeqCst);
        self.ocsp_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Publishes a CRL that includes every revocation noted before this
    /// call. Concurrent callers share one build.
    pub async fn refresh_crl(&self) -> Result<Arc<PublishedCrl>> {
        let wanted = self.revocations_seen.load(Ordering::SeqCst);
        let mut covered = self.rebuild.lock().await;
        let now = self.ca.now();
        if *covered >= wanted
            && let Some(published) = self.published_if_fresh(now)
        {
            // Progress may lag the rebuild mark if an earlier call was
            // dropped between the two: catch it up, or waiters would wait on.
            self.covered(*covered);
            return Ok(published);
        }
        self.build_and_serve(&mut covered, now).await
    }

    /// Builds a CRL (and its shards) under the rebuild lock (`covered`),
    /// serves it, shares it through the store, and tells the waiters.
    async fn build_and_serve(&self, covered: &mut u64, now: i64) -> Result<Arc<PublishedCrl>> {
        // Every revocation noted up to here is durable in the store, so
        // the entries read next list it; later ones wait for the next build.
        let covering = self.revocations_seen.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        let published = match self.build_crl(now).await {
            Ok(published) => Arc::new(published),
            Err(error) => {
                self.build_failed(covering, &error);
                return Err(error);
            }
        };
        let took = started.elapsed();
        self.builds.fetch_add(1, Ordering::SeqCst);
        crate::metrics::get().crl_built(took);
        tracing::info!(
            number = published.number,
            entries = published.entries,
            shard_sets = published.shards.len(),
            took_ms = took.as_millis() as u64,
            "published a new CRL"
        );
        self.serve_if_newer(published.clone());
        *covered = covering;
        // Waiters are told once the CRL is shared, so that a revocation
        // that returns has its CRL in the store for the other replicas to
        // serve; and also if this call is dropped before that (an HTTP
        // client that hangs up): the CRL served already lists everything up
        // to `covering`, and waiters must not wait on.
        let progress = CoveredOnDrop {
            revocations: self,
            covering,
        };
        // Other processes on the same database serve it instead of building
        // their own. A failure costs them a build, not correctness.
        if let Err(error) = self.store.publish_crl(&published.signed()).await {
            tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot share the new CRL with other replicas");
        }
        drop(progress);
        Ok(published)
    }

    /// Serves the newest CRL another process published, if it is newer than
    /// the one served; returns whether it was.
    ///
    /// Only a CRL signed by this replica's current intermediate, while no
    /// previous one is kept, is adopted: around a rotation each replica
    /// signs its own (with the shared number), since the store holds one
    /// issuer's CRL. With shards (`crl_shards`), which the store does not
    /// hold, this replica signs the shards of exactly the adopted CRL's list
    /// with its number and validity: every replica's shard of one number
    /// lists the same serials, and none serves a number another replica's
    /// CRL lacks (so a relying party behind a load balancer never sees the
    /// number go back from one replica to the next).
    pub async fn adopt_newest_crl(&self) -> Result<bool> {
        let Some(signed) = self.store.newest_crl().await? else {
            return Ok(false);
        };
        let signers = self.ca.signers();
        let signer_key_id = crl::signer_key_id(&signed.der).unwrap_or_default();
        if signers.previous.is_some() || signer_key_id != signers.current.key_id() {
            return Ok(false);
        }
        if signed.number <= self.crl_number() {
            return Ok(false);
        }
        let shard_counts: Vec<ShardCount> = self.settings.shard_counts().collect();
        // Signing shards takes a while: one adoption at a time, and one
        // that waited finds the number served already (requests for a stale
        // CRL arriving together sign once).
        let _adopting = if shard_counts.is_empty() {
            None
        } else {
            let guard = self.adopting.lock().await;
            if signed.number <= self.crl_number() {
                return Ok(false);
            }
            Some(guard)
        };
        let shards = if shard_counts.is_empty() {
            Vec::new()
        } else {
            let (der, urls, signers) = (
                signed.der.clone(),
                self.ca.revocation_urls().cloned(),
                signers.clone(),
            );
            let dating = (signed.number, signed.this_update, signed.next_update);
            // Parsing and signing a large list takes a while.
            tokio::task::spawn_blocking(move || {
                let entries = crl::entries_of(&der)?;
                shards::build_all(&signers, urls.as_ref(), &shard_counts, &entries, dating)
            })
            .await
            .map_err(RevocationError::SigningStopped)??
        };
        let now = self.ca.now();
        let adopted = Arc::new(PublishedCrl {
            pem: pem_encode("X509 CRL", &signed.der),
            number: signed.number,
            this_update: signed.this_update,
            next_update: signed.next_update,
            signed_at: crl::signed_at(signed.this_update, signed.next_update, now),
            entries: usize::try_from(signed.entries).unwrap_or(usize::MAX),
            der: signed.der,
            signer_key_id,
            previous: None,
            shards,
            generation: signers.generation,
        });
        let number = adopted.number;
        let newer = self.serve_if_newer(adopted);
        if newer {
            tracing::info!(number, "serving a CRL another replica published");
        }
        Ok(newer)
    }

    /// The number of the CRL served; 0 before the first.
    /// Whether the CRL is split into shards (`crl_shards`, current or
    /// retired), which adopting another replica's CRL signs.
    pub fn signs_shards(&self) -> bool {
        self.settings.shard_counts().next().is_some()
    }

    pub fn crl_number(&self) -> u64 {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |published| published.number)
    }

    /// Serves `crl` unless a CRL with a higher number is served already, so
    /// the number a relying party sees never goes down.
    fn serve_if_newer(&self, crl: Arc<PublishedCrl>) -> bool {
        let mut published = self.published.write().unwrap_or_else(|p| p.into_inner());
        if published
            .as_ref()
            .is_some_and(|current| current.number >= crl.number)
        {
            return false;
        }
        *published = Some(crl);
        true
    }

    async fn build_crl(&self, now: i64) -> Result<PublishedCrl> {
        // The number first, then the entries: a replica that takes a higher
        // number after this one reads the store later, so its CRL lists at
        // least what this one does (a CRL with a higher number never lacks
        // an entry of a lower one, though a replica adopts the newest).
        let number = self.store.next_crl_number().await?;
        let entries = self.store.revoked_unexpired(now).await?;
        // Valid for `crl_validity` from now, and from a minute ago for
        // relying parties whose clocks lag.
        let this_update = crl::this_update(now);
        let next_update = now + duration_seconds(self.settings.crl_validity);
        let signers = self.ca.signers();
        let count = entries.len();
        let shard_counts: Vec<ShardCount> = self.settings.shard_counts().collect();
        let urls = self.ca.revocation_urls().cloned();
        // Signing a large CRL takes a while: keep it off the async workers.
        let (der, previous, shards, signers) = tokio::task::spawn_blocking(move || {
            let dating = (number, this_update, next_update);
            std::thread::scope(|scope| {
                // The shards list the same entries again: signed on a thread
                // of their own, they cost the build little more wall time
                // than the whole CRL alone where a second core is free.
                let shards = scope.spawn(|| {
                    shards::build_all(&signers, urls.as_ref(), &shard_counts, &entries, dating)
                });
                let der = crl::build(&signers.current, &entries, number, this_update, next_update)?;
                let previous = signers
                    .previous
                    .as_ref()
                    .map(|previous| {
                        crl::build(previous, &entries, number, this_update, next_update).map(
                            |der| PreviousCrl {
                                signer_key_id: previous.key_id().to_vec(),
                                pem: pem_encode("X509 CRL", &der),
                                der,
                            },
                        )
                    })
                    .transpose()?;
                // A panic there is one here, which the blocking task reports
                // (`SigningStopped`).
                let shards = shards
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                Ok::<_, CaError>((der, previous, shards))
            })
            .map(|(der, previous, shards)| (der, previous, shards, signers))
        })
        .await
        .map_err(RevocationError::SigningStopped)??;
        Ok(PublishedCrl {
            pem: pem_encode("X509 CRL", &der),
            der,
            number,
            this_update,
            next_update,
            signed_at: now,
            entries: count,
            signer_key_id: signers.current.key_id().to_vec(),
            previous,
            shards,
            generation: signers.generation,
        })
    }

    fn published_if_fresh(&self, now: i64) -> Option<Arc<PublishedCrl>> {
        let published = self
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        // After a rotation, what the old signers signed is stale at once.
        let same_signers = published.generation == self.ca.signers().generation;
        (same_signers && now < self.refresh_at(&published)).then_some(published)
    }

    /// When `published` is replaced: `crl_refresh` after it was signed, and
    /// never later than half the life it had then. Timed from the signing,
    /// not from the backdated thisUpdate, which would make the shortest
    /// validity (1 minute) stale as soon as it is signed.
    fn refresh_at(&self, published: &PublishedCrl) -> i64 {
        let half_life = (published.next_update - published.signed_at) / 2;
        let refresh = duration_seconds(self.settings.crl_refresh);
        published.signed_at + half_life.min(refresh)
    }

    /// When the published CRL should be rebuilt; `None` if there is none.
    pub fn crl_refresh_at(&self) -> Option<i64> {
        let published = self
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some(self.refresh_at(&published))
    }

    /// Answers a DER OCSP request. Never fails: errors become OCSP error
    /// statuses.
    pub async fn ocsp(&self, request: &[u8]) -> OcspAnswer {
        let now = self.ca.now();
        let signers = self.ca.signers();
        self.forget_answers_of_old_signers(signers.generation);
        let hashes: Vec<IssuerHashes> = signers
            .all()
            .map(|signer| IssuerHashes::new(signer))
            .collect();
        let parsed = match ocsp::parse_request(request, &hashes) {
            Ok(parsed) => parsed,
            Err(status) => return error_answer(status),
        };
        let (Some(signer), Some(issuer_hashes)) =
            (signers.all().nth(parsed.issuer), hashes.get(parsed.issuer))
        else {
            return error_answer(x509_ocsp::OcspResponseStatus::InternalError);
        };
        // Only single, nonce-free questions are cacheable: a nonce must be
        // echoed, so its answer is unique.
        let cache_key = match (&parsed.queries[..], &parsed.nonce) {
            ([(id, Some(serial))], None) => {
                Some((serial.clone(), OcspQuestion::new(id, parsed.issuer)))
            }
            _ => None,
        };
        if let Some((serial, question)) = &cache_key
            && let Some(answer) = self.cached_ocsp(serial, *question, now)
        {
            crate::metrics::get().ocsp_answer(true);
            return answer;
        }
        crate::metrics::get().ocsp_answer(false);
        // Read before the status lookup: if a revocation lands meanwhile, the
        // answer built here may be stale and must not be cached.
        let generation = self.revocations_seen.load(Ordering::SeqCst);
        let mut answers = Vec::with_capacity(parsed.queries.len());
        for (id, serial) in &parsed.queries {
            match self.known_status(serial.as_ref(), now).await {
                Ok(status) => answers.push((id.clone(), status)),
                Err(error) => {
                    tracing::error!(error = %crate::error_kind::with_causes(&error), "OCSP status lookup failed");
                    return error_answer(x509_ocsp::OcspResponseStatus::TryLater);
                }
            }
        }
        let next_update = now + duration_seconds(self.settings.ocsp_validity);
        let der = match ocsp::build_response(
            signer,
            issuer_hashes,
            &answers,
            parsed.nonce,
            now,
            next_update,
        ) {
            Ok(der) => der,
            Err(error) => {
                tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot build an OCSP response");
                return error_answer(x509_ocsp::OcspResponseStatus::InternalError);
            }
        };
        let answer = OcspAnswer {
            der: Arc::new(der),
            next_update: Some(next_update),
            this_update: Some(now),
        };
        if let Some((serial, question)) = cache_key {
            let refresh_at = now + duration_seconds(self.settings.ocsp_validity) / 2;
            let cached = CachedOcsp {
                question,
                answer: answer.clone(),
                refresh_at,
            };
            self.cache_ocsp(serial, cached, generation);
        }
        answer
    }

    async fn known_status(&self, serial: Option<&Serial>, now: i64) -> Result<KnownStatus> {
        let Some(serial) = serial else {
            return Ok(KnownStatus::Unknown);
        };
        Ok(match self.store.certificate(serial).await? {
            None => KnownStatus::Unknown,
            Some(record) => match (record.state(now), record.revocation) {
                (CertificateState::Revoked, Some(revocation)) => KnownStatus::Revoked {
                    at: revocation.revoked_at,
                    reason_code: revocation.reason_code,
                },
                _ => KnownStatus::Good,
            },
        })
    }

    /// Empties the OCSP cache if it holds answers of other signers than
    /// `generation`'s.
    fn forget_answers_of_old_signers(&self, generation: u64) {
        if self.ocsp_generation.swap(generation, Ordering::SeqCst) != generation {
            self.forget_cached_answers();
        }
    }
}

fn error_answer(status: x509_ocsp::OcspResponseStatus) -> OcspAnswer {
    OcspAnswer {
        der: Arc::new(ocsp::error_response(status)),
        next_update: None,
        this_update: None,
    }
}

fn duration_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 4)
}
