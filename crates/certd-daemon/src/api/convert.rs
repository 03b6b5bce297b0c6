//! Server-side conversions from certd's types to the wire: what the admin
//! API answers. (Clients convert the other way, in `client`.)

use super::client::AuditLine;
use super::proto;
use crate::authority::CertificateSummary;
use crate::identity::DnsName;
use crate::selector::Selector;
use crate::store::{AuditEntry, EndpointProfile, EntryRecord, FederationRecord};

/// The wire form of a federation relationship.
pub(super) fn federation_to_proto(
    record: FederationRecord,
    fetches: Option<crate::federation::status::FetchState>,
) -> proto::Federation {
    let fetches = fetches.unwrap_or_default();
    let (endpoint_spiffe_id, endpoint_ca_given) = match &record.profile {
        EndpointProfile::HttpsSpiffe { endpoint_id } => (endpoint_id.to_string(), false),
        EndpointProfile::HttpsWeb { ca_pem } => (String::new(), ca_pem.is_some()),
    };
    proto::Federation {
        trust_domain: record.trust_domain.to_string(),
        profile: record.profile.name().to_owned(),
        bundle_endpoint_url: record.bundle_endpoint_url,
        endpoint_spiffe_id,
        endpoint_ca_given,
        created_at: record.created_at,
        created_by: record.created_by,
        bundle: record.bundle.map(|bundle| proto::ForeignBundle {
            sequence: bundle.sequence,
            refresh_hint_seconds: bundle.refresh_hint.unwrap_or(0),
            accepted_at: bundle.accepted_at,
            json: bundle.json,
        }),
        last_fetched_at: fetches.last_success_at.unwrap_or(0),
        consecutive_failures: fetches.consecutive_failures,
        last_error: fetches.last_error.unwrap_or_default(),
    }
}

/// The wire form of an entry.
pub(super) fn entry_to_proto(entry: EntryRecord) -> proto::Entry {
    proto::Entry {
        agent: entry.is_agent(),
        jwt_audiences: entry.jwt_audiences,
        parent_id: entry
            .parent
            .map(crate::identity::SpiffeId::into_string)
            .unwrap_or_default(),
        id: entry.id,
        service: entry.service.to_string(),
        spiffe_id: entry.spiffe_id.into_string(),
        dns_names: entry
            .dns_names
            .into_iter()
            .map(DnsName::into_string)
            .collect(),
        ttl_seconds: entry.ttl_seconds.unwrap_or(0),
        selectors: entry
            .selectors
            .into_iter()
            .map(Selector::into_string)
            .collect(),
        created_at_unix: entry.created_at,
        created_by: entry.created_by,
        warnings: Vec::new(),
        federates_with: entry.federates_with.into_iter().map(String::from).collect(),
    }
}

impl From<AuditEntry> for AuditLine {
    fn from(entry: AuditEntry) -> Self {
        AuditLine {
            at: entry.at,
            event: entry.event.as_str().to_owned(),
            allowed: entry.allowed,
            caller: entry.caller,
            attestation: entry.attestation.unwrap_or_default(),
            service: entry.service.unwrap_or_default(),
            serial: entry.serial.unwrap_or_default(),
            reason: entry.reason.unwrap_or_default(),
            selectors: entry
                .selectors
                .into_iter()
                .map(Selector::into_string)
                .collect(),
        }
    }
}

/// The wire form of an audit entry.
impl From<AuditLine> for proto::AuditEntry {
    fn from(line: AuditLine) -> Self {
        proto::AuditEntry {
            at_unix: line.at,
            event: line.event,
            allowed: line.allowed,
            caller: line.caller,
            attestation: line.attestation,
            service: line.service,
            serial: line.serial,
            reason: line.reason,
            selectors: line.selectors,
        }
    }
}

/// The wire form of a summary.
pub(super) fn summary_to_proto(summary: CertificateSummary) -> proto::CertificateRecord {
    proto::CertificateRecord {
        serial: summary.serial,
        service: summary.service,
        dns_names: summary.dns_names,
        uris: summary.uris,
        not_before_unix: summary.not_before,
        not_after_unix: summary.not_after,
        issued_at_unix: summary.issued_at,
        sha256_fingerprint: summary.sha256_fingerprint,
        attestation: summary.attestation,
        entry_id: summary.entry_id.unwrap_or_default(),
        renewed_from: summary.renewed_from.unwrap_or_default(),
        status: summary.status,
        certificate_pem: summary.certificate_pem,
        chain_pem: summary.chain_pem,
        trust_bundle_pem: summary.trust_bundle_pem,
    }
}
