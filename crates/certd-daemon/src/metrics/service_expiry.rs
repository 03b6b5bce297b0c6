//! The newest certificate of each service, kept in memory so that a scrape
//! of `/metrics` can say when every service's certificate expires without
//! reading the store: `certd_service_certificate_expiry_timestamp_seconds`
//! and `certd_service_certificate_issued_timestamp_seconds`, one series per
//! service. An alert fires when a service's newest certificate nears its end:
//! nobody renewed it.
//!
//! The authority feeds it (`authority::monitoring`): once from the store at
//! start, then with every certificate this process issues, every revocation
//! and every registration entry deleted. It decides which
//! certificates count (not operators' nor one-off `certd issue` ones); this
//! module only keeps the newest few per service and bounds the whole.
//!
//! Bounds, so a scrape stays cheap and memory flat however large the store:
//! at most [`MAX_SERVICES`] series pairs, [`KEPT_PER_SERVICE`] certificates
//! per service (about 100 bytes each: 10,000 services take about 4 MB), and
//! a service whose newest certificate expired more than
//! [`FORGET_EXPIRED_AFTER`] ago is forgotten. When full, a new service
//! displaces the one whose newest certificate expires first, if the new
//! one's expires later.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::identity::{Serial, ServiceName};

/// The most services tracked at once, so the series count is bounded.
pub const MAX_SERVICES: usize = 10_000;
/// Certificates kept per service: revoking the newest falls back to the
/// next without asking the store.
pub const KEPT_PER_SERVICE: usize = 4;
/// How long after its newest certificate expired a service is still shown
/// (and its alert still fires): a week, then it is taken for retired.
pub const FORGET_EXPIRED_AFTER: i64 = 7 * 24 * 3600;

/// One certificate of a service, as far as its expiry alert cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedCertificate {
    pub serial: Serial,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The registration entry it was issued for: once that entry is deleted
    /// the certificate cannot renew, so it no longer counts.
    pub entry_id: Option<String>,
}

/// The newest certificates of each service (newest first), bounded.
#[derive(Debug, Default)]
pub struct ServiceExpiries {
    services: Mutex<BTreeMap<ServiceName, Vec<TrackedCertificate>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

impl ServiceExpiries {
    /// Takes `certificates` of `service` into account: those newer than the
    /// ones kept replace the oldest.
    pub fn learn(
        &self,
        service: &ServiceName,
        certificates: impl IntoIterator<Item = TrackedCertificate>,
    ) {
        let certificates: Vec<TrackedCertificate> = certificates.into_iter().collect();
        let Some(latest_expiry) = certificates.iter().map(|c| c.not_after).max() else {
            return;
        };
        let mut services = self.lock();
        if !services.contains_key(service) && services.len() >= MAX_SERVICES {
            let first_to_expire = services
                .iter()
                .filter_map(|(name, kept)| Some((kept.first()?.not_after, name)))
                .min()
                .map(|(not_after, name)| (not_after, name.clone()));
            match first_to_expire {
                Some((not_after, displaced)) if not_after < latest_expiry => {
                    tracing::warn!(
                        limit = MAX_SERVICES,
                        %displaced,
                        added = %service,
                        "too many services for the certificate expiry metric; dropping the one whose certificate expires first"
                    );
                    services.remove(&displaced);
                }
                _ => return,
            }
        }
        let kept = services.entry(service.clone()).or_default();
        for certificate in certificates {
            if !kept.iter().any(|k| k.serial == certificate.serial) {
                kept.push(certificate);
            }
        }
        kept.sort_by(|a, b| (b.issued_at, &b.serial).cmp(&(a.issued_at, &a.serial)));
        kept.truncate(KEPT_PER_SERVICE);
    }

    /// Forgets a revoked certificate. True when it was the last one kept for
    /// its service: the store may still hold older valid ones, which the
    /// caller may look up and `learn`.
    pub fn revoked(&self, service: &ServiceName, serial: &Serial) -> bool {
        let mut services = self.lock();
        let Some(kept) = services.get_mut(service) else {
            return false;
        };
        let before = kept.len();
        kept.retain(|certificate| &certificate.serial != serial);
        if kept.len() == before || !kept.is_empty() {
            return false;
        }
        services.remove(service);
        true
    }

    /// Entry `entry_id` now issues for `service`, or (`None`) no longer
    /// exists: certificates issued for it under any other service can no
    /// longer renew, so they stop counting.
    pub fn entry_changed(&self, entry_id: &str, service: Option<&ServiceName>) {
        self.retain(|kept_for, entry| entry != entry_id || Some(kept_for) == service);
    }

    /// After every entry was reloaded: keeps only certificates whose entry
    /// still exists and still issues for their service (`service_of` an
    /// entry id).
    pub fn entries_reloaded(&self, service_of: impl Fn(&str) -> Option<ServiceName>) {
        self.retain(|kept_for, entry| service_of(entry).as_ref() == Some(kept_for));
    }

    /// Forgets services whose newest certificate expired more than
    /// [`FORGET_EXPIRED_AFTER`] before `now`.
    pub fn forget_expired(&self, now: i64) {
        self.lock().retain(|_, kept| {
            kept.first()
                .is_some_and(|newest| newest.not_after.saturating_add(FORGET_EXPIRED_AFTER) >= now)
        });
    }

    /// Each service's newest certificate, by service name.
    pub fn newest(&self) -> Vec<(ServiceName, TrackedCertificate)> {
        self.lock()
            .iter()
            .filter_map(|(service, kept)| Some((service.clone(), kept.first()?.clone())))
            .collect()
    }

    /// Keeps the certificates issued for an entry for which `keep(service,
    /// entry id)` holds (and every one issued without an entry).
    fn retain(&self, keep: impl Fn(&ServiceName, &str) -> bool) {
        self.lock().retain(|service, kept| {
            kept.retain(|certificate| {
                certificate
                    .entry_id
                    .as_deref()
                    .is_none_or(|entry| keep(service, entry))
            });
            !kept.is_empty()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServiceName, Vec<TrackedCertificate>>> {
        // The map is consistent after every statement, so a panic elsewhere
        // while holding the lock leaves nothing half done.
        self.services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for ServiceExpiries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let newest = self.newest();
        for (name, help, value) in [
            (
                "service_certificate_expiry_timestamp_seconds",
                "When the newest unrevoked certificate of each service expires (Unix seconds): it was not renewed if that is near",
                (|c: &TrackedCertificate| c.not_after) as fn(&TrackedCertificate) -> i64,
            ),
            (
                "service_certificate_issued_timestamp_seconds",
                "When the newest unrevoked certificate of each service was issued (Unix seconds)",
                |c: &TrackedCertificate| c.issued_at,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (service, certificate) in &newest {
                let labels = ServiceLabels {
                    service: service.as_str().to_owned(),
                };
                ConstGauge::new(value(certificate)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceName {
        name.parse().unwrap()
    }

    /// A certificate issued at `issued_at` for a day, for entry `entry`.
    fn certificate(serial: u8, issued_at: i64, entry: Option<&str>) -> TrackedCertificate {
        TrackedCertificate {
            serial: Serial::from_stored(vec![serial]),
            issued_at,
            not_after: issued_at + 86_400,
            entry_id: entry.map(str::to_owned),
        }
    }

    /// The newest serial of each service, as the metric shows it.
    fn shown(expiries: &ServiceExpiries) -> Vec<(String, u8)> {
        expiries
            .newest()
            .into_iter()
            .map(|(service, c)| (service.to_string(), c.serial.as_bytes()[0]))
            .collect()
    }

    #[test]
    fn the_newest_certificate_is_shown_and_an_older_one_never_replaces_it() {
        let expiries = ServiceExpiries::default();
        expiries.learn(&service("billing"), [certificate(1, 100, Some("e1"))]);
        expiries.learn(&service("billing"), [certificate(2, 200, Some("e1"))]);
        // The start-up load may bring an older one after a newer issuance.
        expiries.learn(&service("billing"), [certificate(3, 150, Some("e1"))]);
        expiries.learn(&service("payments"), [certificate(4, 50, None)]);
        assert_eq!(
            shown(&expiries),
            [("billing".into(), 2), ("payments".into(), 4)]
        );
        let (_, newest) = &expiries.newest()[0];
        assert_eq!((newest.issued_at, newest.not_after), (200, 200 + 86_400));
    }

    #[test]
    fn revoking_the_newest_falls_back_to_the_next_and_the_last_asks_the_store() {
        let expiries = ServiceExpiries::default();
        let billing = service("billing");
        for (serial, at) in [(1, 100), (2, 200), (3, 300)] {
            expiries.learn(&billing, [certificate(serial, at, Some("e1"))]);
        }
        let serial = |n: u8| Serial::from_stored(vec![n]);
        assert!(!expiries.revoked(&billing, &serial(3)));
        assert_eq!(shown(&expiries), [("billing".into(), 2)]);
        // A serial not kept (older, or another service's) changes nothing.
        assert!(!expiries.revoked(&billing, &serial(9)));
        assert!(!expiries.revoked(&service("payments"), &serial(2)));
        assert!(!expiries.revoked(&billing, &serial(1)));
        // The last one kept: the caller should look in the store.
        assert!(expiries.revoked(&billing, &serial(2)));
        assert_eq!(shown(&expiries), []);
        assert!(!expiries.revoked(&billing, &serial(2)));
    }

    #[test]
    fn only_the_newest_few_are_kept_per_service() {
        let expiries = ServiceExpiries::default();
        let billing = service("billing");
        expiries.learn(
            &billing,
            (1..=10).map(|n| certificate(n, i64::from(n) * 100, None)),
        );
        let kept = expiries.lock()[&billing].len();
        assert_eq!(kept, KEPT_PER_SERVICE);
        assert_eq!(shown(&expiries), [("billing".into(), 10)]);
    }

    #[test]
    fn a_deleted_or_moved_entry_stops_counting_its_certificates() {
        let expiries = ServiceExpiries::default();
        let (billing, payments) = (service("billing"), service("payments"));
        expiries.learn(&billing, [certificate(1, 100, Some("e1"))]);
        expiries.learn(&billing, [certificate(2, 200, Some("e2"))]);
        expiries.learn(&payments, [certificate(3, 100, Some("e3"))]);
        expiries.learn(&payments, [certificate(4, 50, None)]);
        // e2 deleted: billing falls back to e1's certificate.
        expiries.entry_changed("e2", None);
        assert_eq!(
            shown(&expiries),
            [("billing".into(), 1), ("payments".into(), 3)]
        );
        // e1 still issues for billing: kept.
        expiries.entry_changed("e1", Some(&billing));
        // e1 now issues for payments: billing's certificate can no longer
        // renew as billing, and billing has nothing left.
        expiries.entry_changed("e1", Some(&payments));
        assert_eq!(shown(&expiries), [("payments".into(), 3)]);
        // Everything reloaded, e3 gone: the certificate without an entry stays.
        expiries.entries_reloaded(|_| None);
        assert_eq!(shown(&expiries), [("payments".into(), 4)]);
    }

    #[test]
    fn a_service_long_expired_is_forgotten() {
        let expiries = ServiceExpiries::default();
        expiries.learn(&service("old"), [certificate(1, 0, None)]);
        expiries.learn(&service("new"), [certificate(2, 1_000_000, None)]);
        let old_expired = 86_400;
        expiries.forget_expired(old_expired + FORGET_EXPIRED_AFTER);
        assert_eq!(shown(&expiries).len(), 2, "a week after: still shown");
        expiries.forget_expired(old_expired + FORGET_EXPIRED_AFTER + 1);
        assert_eq!(shown(&expiries), [("new".into(), 2)]);
    }

    #[test]
    fn when_full_a_new_service_displaces_the_one_expiring_first() {
        let expiries = ServiceExpiries::default();
        for n in 0..MAX_SERVICES {
            let at = 1_000 + i64::try_from(n).unwrap();
            expiries.learn(&service(&format!("s{n}")), [certificate(1, at, None)]);
        }
        // Expiring before every one kept: not taken.
        expiries.learn(&service("older"), [certificate(2, 10, None)]);
        assert_eq!(expiries.newest().len(), MAX_SERVICES);
        assert!(!expiries.lock().contains_key(&service("older")));
        // Expiring later: displaces s0, the first to expire.
        expiries.learn(&service("newer"), [certificate(3, 1_000_000, None)]);
        let services = expiries.lock();
        assert_eq!(services.len(), MAX_SERVICES);
        assert!(services.contains_key(&service("newer")));
        assert!(!services.contains_key(&service("s0")));
        assert!(services.contains_key(&service("s1")));
    }

    #[test]
    fn each_service_is_one_series_of_each_gauge() {
        let mut registry = prometheus_client::registry::Registry::default();
        let expiries = std::sync::Arc::new(ServiceExpiries::default());
        registry
            .sub_registry_with_prefix("certd")
            .register_collector(Box::new(expiries.clone()));
        expiries.learn(&service("billing"), [certificate(1, 100, None)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "certd_service_certificate_expiry_timestamp_seconds{service=\"billing\"} 86500\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "certd_service_certificate_issued_timestamp_seconds{service=\"billing\"} 100\n"
            ),
            "{text}"
        );
    }
}
