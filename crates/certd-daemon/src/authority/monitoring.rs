//! What the authority tells `metrics`: the gauges that describe state (CRL,
//! CA expiry, JWT keys), set when `/metrics` is scraped, and each service's
//! newest certificate (`metrics::ServiceExpiries`), kept as this process
//! issues and revokes, so that a scrape never reads the store.
//!
//! Which certificates a service's expiry alert watches: those somebody
//! renews, that is every certificate but operators' (`certd operator issue`)
//! and one-off `certd issue` ones without `--renewable`, and only while the
//! entry it was issued for exists (deleting an entry stops renewals).
//!
//! How the tracker stays true: one load from the store when the daemon
//! starts (the services named by registration entries, and certd's own),
//! then every issuance and revocation of this process, entries deleted
//! here or elsewhere (`Change::Entry`, and every resync and minute's
//! catch-up), revocations elsewhere (`Change::Revoked`).
//! Issuances by another replica do not reach this one's tracker: scrape
//! every replica, and the alert takes the newest per service across them.

use super::Authority;
use super::revoke::Revoked;
use crate::identity::{Serial, ServiceName};
use crate::metrics::{self, KEPT_PER_SERVICE, TrackedCertificate};
use crate::store::{Attestation, IssuanceRecord, StoreError};

/// How many of a service's newest records one look-up reads, to find
/// `KEPT_PER_SERVICE` that count (some may be revoked or operators').
const LOOKUP_PER_SERVICE: usize = 4 * KEPT_PER_SERVICE;

/// The service of certd's own serving certificate, which no entry names.
const SERVING_SERVICE: &str = "certd";

impl Authority {
    /// Sets the metrics that describe state (CRL, CA expiry, JWT keys), for
    /// a scrape of `/metrics`, and forgets services long expired.
    pub async fn update_metrics(&self) {
        let metrics = metrics::get();
        let now = self.now();
        self.update_federation_metrics();
        if let Ok(crl) = self.revocations.current_crl().await {
            metrics
                .crl_number
                .set(i64::try_from(crl.number).unwrap_or(i64::MAX));
            metrics.crl_age.set(now - crl.signed_at);
            metrics.crl_expiry.set(crl.next_update - now);
        }
        for (certificate, not_after) in [
            ("intermediate", self.ca.intermediate_not_after()),
            ("root", self.ca.root_not_after()),
        ] {
            metrics
                .ca_expiry
                .get_or_create(&metrics::CertificateLabels {
                    certificate: certificate.to_owned(),
                })
                .set(not_after - now);
        }
        metrics
            .ca_signers_generation
            .set(i64::try_from(self.ca.signers().generation).unwrap_or(i64::MAX));
        if let Some(root_crl) = self.ca.root_crl() {
            metrics
                .root_crl_expiry
                .set(root_crl.facts.next_update - now);
        }
        let published = self.jwt_keys.published(now).len();
        metrics
            .jwt_keys
            .set(i64::try_from(published).unwrap_or(i64::MAX));
        metrics.service_expiries.forget_expired(now);
    }

    /// Loads each service's newest certificates from the store, once, when
    /// the daemon starts: the services registration entries name, and
    /// certd's own. Returns how many services have one. Runs beside
    /// serving; issuances meanwhile are merged, never overwritten.
    pub async fn load_service_expiries(&self) -> Result<usize, StoreError> {
        let mut services = self.registry.services();
        if let Ok(serving) = SERVING_SERVICE.parse() {
            services.insert(serving);
        }
        for service in &services {
            self.look_up_service_expiry(service).await?;
            // sled reads block their thread: let requests through between
            // services.
            tokio::task::yield_now().await;
        }
        Ok(metrics::get().service_expiries.newest().len())
    }

    /// Counts a certificate this process just issued.
    pub(super) fn track_issuance(&self, record: &IssuanceRecord) {
        if let Some(certificate) = tracked(record) {
            metrics::get()
                .service_expiries
                .learn(&record.service, [certificate]);
        }
    }

    /// Counts the certificates a revocation request revoked, and forgets
    /// them as their services' newest; a service left with none known is
    /// looked up in the store in the background, so the answer does not
    /// wait for that.
    pub(super) fn track_revocations(&self, certificates: &[Revoked]) {
        let metrics = metrics::get();
        let mut emptied = std::collections::BTreeSet::new();
        for revoked in certificates.iter().filter(|c| c.newly_revoked) {
            let record = &revoked.record;
            let code = record.revocation.as_ref().map_or(0, |r| r.reason_code);
            metrics.revocation(crate::ca::reason_name(code));
            if metrics
                .service_expiries
                .revoked(&record.service, &record.serial)
            {
                emptied.insert(record.service.clone());
            }
        }
        self.look_up_in_background(emptied);
    }

    /// Another process revoked `serial`.
    pub(super) async fn track_revocation_elsewhere(&self, serial: &Serial) {
        let Ok(Some(record)) = self.store.certificate(serial).await else {
            return;
        };
        if metrics::get()
            .service_expiries
            .revoked(&record.service, serial)
        {
            self.look_up_in_background([record.service]);
        }
    }

    /// Entry `id` was deleted or changed (here or elsewhere): certificates
    /// issued for it stop counting unless it still issues for their
    /// service.
    pub(super) fn track_entry_change(&self, id: &str) {
        metrics::get()
            .service_expiries
            .entry_changed(id, self.registry.service_of(id).as_ref());
    }

    /// Every entry was reloaded.
    pub(super) fn track_entries_reloaded(&self) {
        metrics::get()
            .service_expiries
            .entries_reloaded(|id| self.registry.service_of(id));
    }

    fn look_up_in_background(&self, services: impl IntoIterator<Item = ServiceName>) {
        for service in services {
            let authority = self.clone();
            tokio::spawn(async move {
                if let Err(error) = authority.look_up_service_expiry(&service).await {
                    tracing::warn!(%service, error = %crate::error_kind::with_causes(&error), "cannot look up the service's newest certificate for its expiry metric");
                }
            });
        }
    }

    /// Reads `service`'s newest records and keeps those that count.
    async fn look_up_service_expiry(&self, service: &ServiceName) -> Result<(), StoreError> {
        let records = self
            .store
            .newest_certificates(Some(service), LOOKUP_PER_SERVICE)
            .await?;
        metrics::get().service_expiries.learn(
            service,
            records
                .iter()
                .filter(|record| {
                    record
                        .attestation
                        .entry_id()
                        .is_none_or(|id| self.registry.service_of(id).as_ref() == Some(service))
                })
                .filter_map(tracked),
        );
        Ok(())
    }
}

/// A record as its service's expiry alert watches it; `None` for one that
/// is revoked, or that nobody is expected to renew.
fn tracked(record: &IssuanceRecord) -> Option<TrackedCertificate> {
    let renewed = match &record.attestation {
        Attestation::Operator { .. } => false,
        Attestation::Admin { renewable, .. } => *renewable,
        Attestation::JoinToken { .. }
        | Attestation::Renewal
        | Attestation::ServingCertificate
        | Attestation::Registered { .. } => true,
    };
    (renewed && record.revocation.is_none()).then(|| TrackedCertificate {
        serial: record.serial.clone(),
        issued_at: record.issued_at,
        not_after: record.not_after,
        entry_id: record.attestation.entry_id().map(str::to_owned),
    })
}
