//! The background CRL publisher: one task per `Revocations` that rebuilds
//! the CRL after revocations, off the request path, and tells the callers
//! who wait for a CRL listing their revocation when one is published.
//!
//! A revocation is recorded durably and noted (`note_revocation`: its
//! sequence number, its OCSP answers dropped, the publisher woken) before
//! its request answers. The publisher then builds: a build covers every
//! revocation noted before it started (`refresh_crl` reads the sequence
//! before the store), and revocations noted while it runs wake it for the
//! next one, so N revocations arriving together cost far fewer than N
//! builds, and a revocation is listed within two build times of being
//! noted (the build under way, then its own). Callers who want the old
//! contract — "answered means the CRL lists it" — await the publisher's
//! progress (`wait_for_crl`), a `watch` of the sequence covered; they never
//! build in their own task.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::{PublishedCrl, Result, RevocationError, Revocations};

/// How long the publisher waits before retrying a failed build, at first;
/// it doubles up to `MAX_RETRY_DELAY` while builds keep failing. Real time,
/// not the daemon's clock: it paces retries, it dates nothing.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// What the builds have done, as waiters see it.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    /// The highest revocation sequence number a published CRL covers.
    covered: u64,
    /// The latest failed build, with the sequence number it would have
    /// covered: its waiters are told rather than left waiting.
    failed: Option<Failure>,
}

#[derive(Debug, Clone)]
struct Failure {
    covering: u64,
    kind: crate::ErrorKind,
    message: Arc<str>,
}

impl Revocations {
    /// Starts the background publisher (once; later calls do nothing). It
    /// stops when the `Revocations` is dropped. Needs a Tokio runtime.
    pub fn start_publisher(self: &Arc<Self>) {
        if self.publisher_started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(publish_when_woken(Arc::downgrade(self), self.wake.clone()));
    }

    /// Waits until a published CRL lists the revocation numbered `sequence`
    /// (`note_revocation`), and returns that CRL (or a newer one). The build
    /// is the background publisher's; without one (`start_publisher` never
    /// called) it is done here.
    pub async fn wait_for_crl(&self, sequence: u64) -> Result<Arc<PublishedCrl>> {
        if !self.publisher_started.load(Ordering::SeqCst) {
            return self.refresh_crl().await;
        }
        let mut progress = self.progress.subscribe();
        // A wake costs nothing when the publisher already knows.
        self.wake.notify_one();
        let outcome = progress
            .wait_for(|progress| {
                progress.covered >= sequence
                    || progress
                        .failed
                        .as_ref()
                        .is_some_and(|failed| failed.covering >= sequence)
            })
            .await
            .map(|progress| progress.clone());
        match outcome {
            Ok(progress) if progress.covered >= sequence => {
                let published = self.published.read().unwrap_or_else(|p| p.into_inner());
                published
                    .clone()
                    .ok_or_else(|| RevocationError::NotPublished {
                        kind: crate::ErrorKind::Internal,
                        message: "no CRL is served".into(),
                    })
            }
            Ok(Progress {
                failed: Some(failed),
                ..
            }) => Err(RevocationError::NotPublished {
                kind: failed.kind,
                message: failed.message,
            }),
            // The sender lives in `self`: it cannot have gone.
            _ => Err(RevocationError::NotPublished {
                kind: crate::ErrorKind::Internal,
                message: "the CRL publisher stopped".into(),
            }),
        }
    }

    /// Whether a revocation was noted that the published CRL does not yet
    /// list.
    fn behind(&self) -> bool {
        self.progress.borrow().covered < self.revocations_seen.load(Ordering::SeqCst)
    }

    /// Records that a published CRL covers revocations up to `covering`,
    /// waking its waiters.
    pub(super) fn covered(&self, covering: u64) {
        self.progress.send_modify(|progress| {
            progress.covered = progress.covered.max(covering);
        });
    }

    /// Records that the build covering up to `covering` failed, waking its
    /// waiters with the error.
    pub(super) fn build_failed(&self, covering: u64, error: &RevocationError) {
        let failure = Failure {
            covering,
            kind: error.kind(),
            message: crate::error_kind::with_causes(error).to_string().into(),
        };
        self.progress.send_modify(|progress| {
            progress.failed = Some(failure);
        });
    }
}

impl Drop for Revocations {
    /// Wakes the publisher so that it sees it is no longer needed and ends.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// The publisher's loop: holds the `Revocations` only while building, so
/// that dropping the daemon's last handle ends it.
async fn publish_when_woken(revocations: Weak<Revocations>, wake: Arc<Notify>) {
    let mut retry_delay = FIRST_RETRY_DELAY;
    loop {
        // `notify_one` keeps a permit when nobody waits: a revocation noted
        // between the check below and the wait still wakes this loop.
        let Some(strong) = revocations.upgrade() else {
            return;
        };
        if !strong.behind() {
            drop(strong);
            wake.notified().await;
            continue;
        }
        match strong.refresh_crl().await {
            Ok(_) => retry_delay = FIRST_RETRY_DELAY,
            Err(error) => {
                drop(strong);
                tracing::error!(error = %crate::error_kind::with_causes(&error), retry_in_s = retry_delay.as_secs(), "cannot publish a CRL listing the latest revocations");
                tokio::time::sleep(retry_delay).await;
                retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::ca::{CertificateAuthority, InitOptions, KeyType};
    use crate::identity::Serial;
    use crate::store::{Attestation, IssuanceRecord, Revocation, SharedStorage};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SharedStorage,
        revocations: Arc<Revocations>,
    }

    /// A CA and a sled store in a temporary directory, and their
    /// `Revocations` with its publisher running.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            trust_domain: "certd.internal".parse().unwrap(),
            key_type: KeyType::EcdsaP256,
            secrets: Default::default(),
            intermediate_key_in: None,
            public_base_url: "http://127.0.0.1:8080".into(),
            intermediate_lifetime: crate::ca::INTERMEDIATE_LIFETIME,
        };
        let ca_dir = dir.path().join("ca");
        crate::ca::init(&ca_dir, &options, SystemTime::now()).unwrap();
        let ca = Arc::new(CertificateAuthority::load(&ca_dir).unwrap());
        let store = crate::store::open(&dir.path().join("db")).unwrap();
        let revocations = Arc::new(Revocations::new(ca, store.clone(), Default::default()));
        revocations.start_publisher();
        Fixture {
            _dir: dir,
            store,
            revocations,
        }
    }

    /// Records a certificate and revokes it in the store, as `authority`
    /// does before noting it; returns its serial. Shared with the shards'
    /// tests.
    pub(in crate::revocation) async fn revoke_one(store: &SharedStorage) -> Serial {
        let serial = Serial::generate();
        let now = crate::clock::unix_seconds(SystemTime::now());
        let record = IssuanceRecord {
            serial: serial.clone(),
            service: "billing".parse().unwrap(),
            dns_names: Vec::new(),
            uris: Vec::new(),
            not_before: now,
            not_after: now + 3600,
            issued_at: now,
            sha256_fingerprint: [0; 32],
            der: Vec::new(),
            attestation: Attestation::Renewal,
            renewed_from: None,
            revocation: None,
        };
        store.record_issuance(&record, None).await.unwrap();
        let revocation = Revocation {
            revoked_at: now,
            reason_code: 1,
        };
        store.revoke(&serial, revocation).await.unwrap().unwrap();
        serial
    }

    fn lists(crl: &PublishedCrl, serial: &Serial) -> bool {
        use x509_parser::prelude::{CertificateRevocationList, FromDer};
        let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
        parsed
            .iter_revoked_certificates()
            .any(|entry| entry.raw_serial() == serial.as_bytes())
    }

    /// Many revocations noted together cost far fewer builds than
    /// revocations, and every waiter is woken by a CRL that lists its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_revocations_share_builds_and_every_waiter_is_woken() {
        let fixture = fixture();
        let first = fixture.revocations.refresh_crl().await.unwrap();
        let builds_before = fixture.revocations.crl_builds();
        let revocations = 200;
        // Durable first, then noted together, as concurrent requests do.
        let mut serials = Vec::new();
        for _ in 0..revocations {
            serials.push(revoke_one(&fixture.store).await);
        }
        let mut waiters = Vec::new();
        for serial in serials {
            let sequence = fixture.revocations.note_revocation(&serial);
            let publisher = fixture.revocations.clone();
            waiters.push(tokio::spawn(async move {
                let crl = publisher.wait_for_crl(sequence).await.unwrap();
                (serial, crl)
            }));
        }
        for waiter in waiters {
            let (serial, crl) = waiter.await.unwrap();
            assert!(lists(&crl, &serial), "CRL {} lacks {serial}", crl.number);
            assert!(crl.number > first.number);
        }
        let builds = fixture.revocations.crl_builds() - builds_before;
        assert!(
            (1..revocations / 4).contains(&builds),
            "{builds} builds for {revocations} revocations"
        );
    }

    /// A revocation noted while a build is under way is not in that build
    /// (it read the store before) but in the next one, which comes without
    /// anyone asking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_noted_during_a_build_is_covered_by_the_next() {
        let fixture = fixture();
        // Hold the build lock as a build under way does.
        let building = fixture.revocations.rebuild.lock().await;
        let serial = revoke_one(&fixture.store).await;
        let sequence = fixture.revocations.note_revocation(&serial);
        let mut progress = fixture.revocations.progress.subscribe();
        assert!(progress.borrow_and_update().covered < sequence);
        drop(building);
        let covered = progress
            .wait_for(|progress| progress.covered >= sequence)
            .await
            .unwrap()
            .covered;
        assert!(covered >= sequence);
        let crl = fixture.revocations.current_crl().await.unwrap();
        assert!(lists(&crl, &serial));
        // Nothing new since: the publisher goes back to sleep.
        let builds = fixture.revocations.crl_builds();
        tokio::task::yield_now().await;
        assert!(!fixture.revocations.behind());
        assert_eq!(fixture.revocations.crl_builds(), builds);
    }
}
