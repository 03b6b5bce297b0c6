//! Prometheus metrics, served on `GET /metrics` (OpenMetrics text).
//!
//! Owns the process's one registry (`metrics::get()`): counters and
//! histograms are fed where the event happens (`audit::record` for every
//! decision, `api::grpc_metrics` around every gRPC call, the sled group
//! commit and the PostgreSQL issuance transaction, the OCSP responder,
//! revocations); gauges that describe state (CRL, CA expiry, JWT keys) are
//! set from the authority at scrape time, so they are never stale; each
//! service's newest certificate is kept by `service_expiry`, fed by the
//! authority as it issues and revokes; `process` reads the standard process
//! metrics from `/proc` at scrape time. Label values come from fixed sets
//! (event names, error kinds, method names, revocation reasons), never from
//! callers, so a client cannot grow the series count; the one label that
//! grows with the deployment, `service`, is bounded by `service_expiry`.
//!
//! Every name is `certd_`-prefixed and says its unit, except the process
//! metrics, which keep the names every exporter gives them.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod process;
mod service_expiry;

pub use process::ProcessSample;
pub use service_expiry::{
    FORGET_EXPIRED_AFTER, KEPT_PER_SERVICE, MAX_SERVICES, ServiceExpiries, TrackedCertificate,
};

/// One decision's labels: what, attested how, and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The audit event: issue, renew, mint-jwt, revoke, …
    pub event: String,
    /// join-token, kubernetes, renewal, agent, admin, jwt-svid, or none.
    pub attestation: String,
    /// allowed or refused.
    pub outcome: String,
    /// For a refusal, its error kind (invalid_input, permission_denied, …);
    /// "none" when allowed.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The gRPC method, e.g. Issue; "other" for a path certd does not serve.
    pub method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// cache or signed.
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// root or intermediate.
    pub certificate: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// An RFC 5280 reason as operators spell it (key-compromise, …).
    pub reason: String,
}

/// A federated trust domain: as many as operators added relationships.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrustDomainLabels {
    pub trust_domain: String,
}

/// An ACME order's step: created, valid (a certificate issued) or invalid.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeOrderLabels {
    pub outcome: String,
}

/// An ACME challenge validated: its type and whether it passed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeChallengeLabels {
    /// http-01, tls-alpn-01 or dns-01.
    pub challenge: String,
    /// valid or invalid.
    pub outcome: String,
}

/// An ACME refusal, by its problem type (badNonce, malformed, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeProblemLabels {
    pub problem: String,
}

/// What the retention purge deleted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurgeLabels {
    /// certificate (a record), lineage (a renewal link) or audit (an entry).
    pub kind: String,
}

impl PurgeLabels {
    pub const KINDS: [&'static str; 3] = ["certificate", "lineage", "audit"];

    pub fn of(kind: &str) -> Self {
        PurgeLabels {
            kind: kind.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The content type of [`Metrics::encode`].
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::encode_prometheus_text`].
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric certd exports.
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub grpc_duration: Family<MethodLabels, Histogram>,
    pub grpc_in_flight: Gauge,
    pub ocsp_answers: Family<SourceLabels, Counter>,
    pub crl_number: Gauge,
    pub crl_age: Gauge,
    pub crl_expiry: Gauge<i64, AtomicI64>,
    /// CRLs this process built, and how long each build took (read the
    /// revoked entries, take a number, sign, publish).
    pub crl_build_duration: Histogram,
    pub ca_expiry: Family<CertificateLabels, Gauge<i64, AtomicI64>>,
    pub jwt_keys: Gauge,
    pub root_crl_expiry: Gauge<i64, AtomicI64>,
    pub possible_stolen_keys: Counter,
    pub ca_signers_generation: Gauge<i64, AtomicI64>,
    pub revocations: Family<ReasonLabels, Counter>,
    pub store_purged: Family<PurgeLabels, Counter>,
    pub service_expiries: Arc<ServiceExpiries>,
    pub federation_sequence: Family<TrustDomainLabels, Gauge<i64, AtomicI64>>,
    pub federation_age: Family<TrustDomainLabels, Gauge<i64, AtomicI64>>,
    pub federation_failures: Family<TrustDomainLabels, Gauge<i64, AtomicI64>>,
    pub acme_orders: Family<AcmeOrderLabels, Counter>,
    pub acme_challenges: Family<AcmeChallengeLabels, Counter>,
    pub acme_problems: Family<AcmeProblemLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The process's metrics, created on first use.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    fn new() -> Self {
        let mut root = Registry::default();
        // Named as every exporter names them, so dashboards for any
        // process work (no `certd_` prefix).
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("certd");
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; the version of certd running, as a label",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Issuance, renewal, JWT-SVID, revocation and admin decisions, by event, attestation, outcome and refusal kind",
            decisions.clone(),
        );
        let grpc_duration = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call, by method",
            grpc_duration.clone(),
        );
        let grpc_in_flight = Gauge::default();
        registry.register(
            "grpc_requests_in_flight",
            "gRPC calls being answered now",
            grpc_in_flight.clone(),
        );
        // The store observes its own commits; this registry only names them.
        let store_commit = certd_store::metrics::commit_duration();
        registry.register(
            "store_commit_duration_seconds",
            "Time to make a write durable (sled: one group flush; PostgreSQL: one issuance transaction)",
            store_commit,
        );
        let ocsp_answers = Family::<SourceLabels, Counter>::default();
        registry.register(
            "ocsp_responses",
            "OCSP answers given, from the cache or signed for the request",
            ocsp_answers.clone(),
        );
        let crl_number = Gauge::default();
        registry.register(
            "crl_number",
            "Number of the CRL served now",
            crl_number.clone(),
        );
        let crl_age = Gauge::default();
        registry.register(
            "crl_age_seconds",
            "Seconds since the CRL served now was signed (its thisUpdate is backdated a minute)",
            crl_age.clone(),
        );
        let crl_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "crl_expiry_seconds",
            "Seconds until the CRL served now passes its nextUpdate (negative: relying parties that check CRLs refuse every certificate)",
            crl_expiry.clone(),
        );
        let crl_build_duration = latency_histogram();
        registry.register(
            "crl_build_duration_seconds",
            "Time to build and publish one CRL (read the revoked entries, take a number, sign, share); its _count is the CRLs this process built",
            crl_build_duration.clone(),
        );
        let ca_expiry = Family::<CertificateLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "ca_certificate_expiry_seconds",
            "Seconds until the root or the intermediate certificate expires (negative: expired)",
            ca_expiry.clone(),
        );
        let ca_signers_generation = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "ca_signers_generation",
            "Times the daemon has changed the intermediates it signs with since it started (a rotation promoted, or the previous intermediate dropped)",
            ca_signers_generation.clone(),
        );
        let jwt_keys = Gauge::default();
        registry.register(
            "jwt_keys_published",
            "JWT-SVID keys published now (/jwks.json)",
            jwt_keys.clone(),
        );
        let root_crl_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "root_crl_expiry_seconds",
            "Seconds until the root's CRL (root.crl, covering the intermediates) passes its nextUpdate (negative: expired)",
            root_crl_expiry.clone(),
        );
        let possible_stolen_keys = Counter::default();
        registry.register(
            "possible_stolen_keys",
            "Renewals refused because the certificate was already renewed or superseded: its key may have been copied",
            possible_stolen_keys.clone(),
        );
        let revocations = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "certificates_revoked",
            "Certificates this process revoked (not counting those already revoked), by reason",
            revocations.clone(),
        );
        // Series of fixed label sets start at zero, so that they are there
        // (and `rate` works) before the first event.
        for source in ["cache", "signed"] {
            let _ = ocsp_answers.get_or_create(&SourceLabels {
                source: source.to_owned(),
            });
        }
        for reason in crate::ca::RevocationReason::ALL {
            let _ = revocations.get_or_create(&ReasonLabels {
                reason: reason.name().to_owned(),
            });
        }
        let store_purged = Family::<PurgeLabels, Counter>::default();
        registry.register(
            "store_purged",
            "Records the retention purge deleted: certificate records, renewal lineage links and audit entries ([retention])",
            store_purged.clone(),
        );
        for kind in PurgeLabels::KINDS {
            let _ = store_purged.get_or_create(&PurgeLabels::of(kind));
        }
        let acme_orders = Family::<AcmeOrderLabels, Counter>::default();
        registry.register(
            "acme_orders",
            "ACME orders created, and those that ended valid (a certificate issued) or invalid",
            acme_orders.clone(),
        );
        let acme_challenges = Family::<AcmeChallengeLabels, Counter>::default();
        registry.register(
            "acme_challenges",
            "ACME challenges validated, by type and outcome",
            acme_challenges.clone(),
        );
        let acme_problems = Family::<AcmeProblemLabels, Counter>::default();
        registry.register(
            "acme_problems",
            "ACME requests refused, by problem type",
            acme_problems.clone(),
        );
        for outcome in ["created", "valid", "invalid"] {
            let _ = acme_orders.get_or_create(&AcmeOrderLabels {
                outcome: outcome.to_owned(),
            });
        }
        let federation_sequence = Family::<TrustDomainLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "federation_bundle_sequence",
            "spiffe_sequence of the bundle held for each federated trust domain (-1: none yet)",
            federation_sequence.clone(),
        );
        let federation_age = Family::<TrustDomainLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "federation_bundle_age_seconds",
            "Seconds since the bundle held for each federated trust domain was last fetched good by this process (else since it was accepted; -1: none yet)",
            federation_age.clone(),
        );
        let federation_failures = Family::<TrustDomainLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "federation_fetch_failures",
            "Fetches of each federated trust domain's bundle that failed in a row (0: the last one succeeded)",
            federation_failures.clone(),
        );
        let service_expiries = Arc::new(ServiceExpiries::default());
        registry.register_collector(Box::new(service_expiries.clone()));
        Metrics {
            acme_orders,
            acme_challenges,
            acme_problems,
            federation_sequence,
            federation_age,
            federation_failures,
            registry: root,
            crl_expiry,
            crl_build_duration,
            revocations,
            store_purged,
            service_expiries,
            possible_stolen_keys,
            root_crl_expiry,
            ca_signers_generation,
            decisions,
            grpc_duration,
            grpc_in_flight,
            ocsp_answers,
            crl_number,
            crl_age,
            ca_expiry,
            jwt_keys,
        }
    }

    /// Counts one audited decision.
    pub fn decision(
        &self,
        event: &str,
        attestation: Option<&str>,
        refusal: Option<crate::ErrorKind>,
    ) {
        let labels = DecisionLabels {
            event: event.to_owned(),
            attestation: attestation.unwrap_or("none").to_owned(),
            outcome: if refusal.is_some() {
                "refused"
            } else {
                "allowed"
            }
            .to_owned(),
            reason: refusal.map_or("none", |kind| kind.name()).to_owned(),
        };
        self.decisions.get_or_create(&labels).inc();
    }

    /// Counts one certificate newly revoked, with its reason's name.
    pub fn revocation(&self, reason: &str) {
        self.revocations
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one CRL built, and how long it took.
    pub fn crl_built(&self, took: std::time::Duration) {
        self.crl_build_duration.observe(took.as_secs_f64());
    }

    pub fn ocsp_answer(&self, from_cache: bool) {
        let source = if from_cache { "cache" } else { "signed" };
        self.ocsp_answers
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text format (0.0.4) of every metric, for clients that
    /// ask for it (promtool).
    pub fn encode_prometheus_text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_counted_by_bounded_labels_and_encoded() {
        let metrics = Metrics::new();
        metrics.decision("issue", Some("join-token"), None);
        metrics.decision("issue", Some("join-token"), None);
        metrics.decision(
            "mint-jwt",
            Some("jwt-svid"),
            Some(crate::ErrorKind::PermissionDenied),
        );
        metrics.ocsp_answer(true);
        let text = metrics.encode();
        assert!(text.contains(
            "certd_decisions_total{event=\"issue\",attestation=\"join-token\",outcome=\"allowed\",reason=\"none\"} 2"
        ), "{text}");
        assert!(text.contains("reason=\"permission_denied\"} 1"), "{text}");
        assert!(
            text.contains("certd_ocsp_responses_total{source=\"cache\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn build_info_revocations_and_process_metrics_are_exported() {
        let metrics = Metrics::new();
        metrics.revocation("key-compromise");
        let text = metrics.encode();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("certd_build_info{{version=\"{version}\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains("certd_certificates_revoked_total{reason=\"key-compromise\"} 1\n"),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|line| line.starts_with(name)),
                "{name}: {text}"
            );
        }
    }
}
