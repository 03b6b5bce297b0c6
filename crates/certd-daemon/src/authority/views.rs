//! What operators see of issuance records (`certd list`, `certd show`).

use super::Authority;
use crate::identity::{Serial, ServiceName};
use crate::store::IssuanceRecord;
use crate::{Error, Result};

/// An issuance record as operators see it (`certd list`, `certd show`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertificateSummary {
    pub serial: String,
    pub service: String,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    pub sha256_fingerprint: String,
    pub attestation: String,
    /// The registration entry it was issued for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    pub renewed_from: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate_pem: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub chain_pem: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trust_bundle_pem: String,
}

impl Authority {
    /// The record of one certificate.
    pub async fn certificate(&self, serial: &str) -> Result<IssuanceRecord> {
        let serial: Serial = serial.parse()?;
        self.store
            .certificate(&serial)
            .await?
            .ok_or_else(|| Error::NotFound(format!("certificate {serial}")))
    }

    /// The `limit` most recently issued certificates, or one service's, as
    /// listings show them: without PEMs, which are for `certificate`.
    pub async fn listing(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CertificateSummary>> {
        let service = service.map(str::parse::<ServiceName>).transpose()?;
        let now = self.now();
        let records = self
            .store
            .newest_certificates(service.as_ref(), limit)
            .await?;
        Ok(records
            .iter()
            .map(|record| {
                let mut summary = self.summary(record, now);
                summary.certificate_pem.clear();
                summary.chain_pem.clear();
                summary.trust_bundle_pem.clear();
                summary
            })
            .collect())
    }

    /// What operators see of a record: its facts, status at `now`, and PEMs.
    pub fn summary(&self, record: &IssuanceRecord, now: i64) -> CertificateSummary {
        let certificate_pem = crate::ca::pem_encode("CERTIFICATE", &record.der);
        let chain_pem = self.ca.chain_pem_of(&record.der);
        CertificateSummary {
            serial: record.serial.to_hex(),
            service: record.service.to_string(),
            dns_names: record.dns_names.clone(),
            uris: record.uris.clone(),
            not_before: record.not_before,
            not_after: record.not_after,
            issued_at: record.issued_at,
            sha256_fingerprint: hex::encode(record.sha256_fingerprint),
            attestation: record.attestation.kind().to_owned(),
            entry_id: record.attestation.entry_id().map(str::to_owned),
            renewed_from: record.renewed_from.as_ref().map(Serial::to_hex),
            status: record.state(now).as_str().to_owned(),
            certificate_pem,
            chain_pem,
            trust_bundle_pem: self.ca.trust_bundle_pem(),
        }
    }
}
