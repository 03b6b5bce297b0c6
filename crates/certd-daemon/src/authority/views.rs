//! What operators see of issuance records (`certd list`, `certd show`).

use std::time::Duration;

use super::Authority;
use crate::identity::{Serial, ServiceName};
use crate::model::{CertificateCursor, CertificateQuery, CertificateState};
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

/// What a listing asks for, as a caller sends it: `Authority::listing`
/// parses each field, naming the one that is wrong.
#[derive(Debug, Clone, Default)]
pub struct ListingRequest {
    /// Only this service's certificates.
    pub service: Option<String>,
    /// Only certificates in this state: `good`, `revoked` or `expired`.
    pub status: Option<String>,
    /// Only unexpired certificates expiring within this long.
    pub expiring_within: Option<Duration>,
    /// The `next_page_token` of the previous page; `None` for the newest.
    pub page_token: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl ListingRequest {
    /// The store's query, judged at `now`.
    fn query(&self, now: i64) -> Result<CertificateQuery> {
        let service = self
            .service
            .as_deref()
            .map(str::parse::<ServiceName>)
            .transpose()?;
        let state = match self.status.as_deref() {
            None => None,
            Some("good") => Some(CertificateState::Good),
            Some("revoked") => Some(CertificateState::Revoked),
            Some("expired") => Some(CertificateState::Expired),
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "status {other:?} is not good, revoked or expired"
                )));
            }
        };
        let expiring_by = self
            .expiring_within
            .map(|window| now.saturating_add(i64::try_from(window.as_secs()).unwrap_or(i64::MAX)));
        let after = self
            .page_token
            .as_deref()
            .map(CertificateCursor::from_token)
            .transpose()?;
        let query = CertificateQuery {
            service,
            state,
            expiring_by,
            now,
            after,
            limit: self.limit,
        };
        if let Some(after) = &query.after
            && after.order != query.order()
        {
            // A token of a listing by expiry handed to one by issuance time
            // (or back): a position in the other order means nothing here.
            return Err(Error::InvalidArgument(format!(
                "page token {:?} belongs to a listing with other filters: pass it with the filters of the listing that returned it",
                self.page_token.as_deref().unwrap_or_default()
            )));
        }
        Ok(query)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Newest first.
    pub certificates: Vec<CertificateSummary>,
    /// Where the next page starts; `None` when nothing older is left. A
    /// page with fewer certificates than asked may still have one (a
    /// filtered page stops after a bounded walk).
    pub next_page_token: Option<String>,
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

    /// One page of certificates as listings show them (without PEMs, which
    /// are for `certificate`), newest first, and the token of the next
    /// page. Bounded work whatever the store holds (`store::listing`), and
    /// paced (`[store] list_rate`, `pace::ListingBudget`): pages take turns,
    /// each reads at most 10 s of the rate (a larger one is answered short,
    /// with a token) and waits, holding its turn, until the index entries
    /// the store examined for it are within the rate, so a walk of every certificate leaves issuance
    /// its rate.
    pub async fn listing(&self, request: &ListingRequest) -> Result<Listing> {
        let Some(budget) = &self.listing_budget else {
            return Ok(self.listing_page(request).await?.0);
        };
        let mut turn = budget.turn().await;
        let paced = ListingRequest {
            limit: request.limit.min(budget.largest_page()),
            ..request.clone()
        };
        let (listing, examined) = self.listing_page(&paced).await?;
        let wait = turn.charge(examined, std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(listing)
    }

    /// One page, and how many index entries the store examined for it.
    async fn listing_page(&self, request: &ListingRequest) -> Result<(Listing, usize)> {
        let now = self.now();
        let query = request.query(now)?;
        let page = self.store.certificate_page(&query).await?;
        let next_page_token = page.next.as_ref().map(CertificateCursor::to_token);
        let certificates = page
            .records
            .into_iter()
            .map(|record| listed(record, now))
            .collect();
        Ok((
            Listing {
                certificates,
                next_page_token,
            },
            page.examined,
        ))
    }

    /// What operators see of a record: its facts, status at `now`, and PEMs.
    pub fn summary(&self, record: &IssuanceRecord, now: i64) -> CertificateSummary {
        CertificateSummary {
            certificate_pem: crate::ca::pem_encode("CERTIFICATE", &record.der),
            chain_pem: self.ca.chain_pem_of(&record.der),
            trust_bundle_pem: self.ca.trust_bundle_pem(),
            ..listed(record.clone(), now)
        }
    }
}

/// What a listing shows of a record: its facts and status at `now`, moved
/// out of the record, and no PEMs (a page of thousands would encode each
/// certificate, its chain and the trust bundle only to drop them).
fn listed(record: IssuanceRecord, now: i64) -> CertificateSummary {
    let status = record.state(now).as_str().to_owned();
    CertificateSummary {
        serial: record.serial.to_hex(),
        service: record.service.to_string(),
        dns_names: record.dns_names,
        uris: record.uris,
        not_before: record.not_before,
        not_after: record.not_after,
        issued_at: record.issued_at,
        sha256_fingerprint: hex::encode(record.sha256_fingerprint),
        attestation: record.attestation.kind().to_owned(),
        entry_id: record.attestation.entry_id().map(str::to_owned),
        renewed_from: record.renewed_from.as_ref().map(Serial::to_hex),
        status,
        certificate_pem: String::new(),
        chain_pem: String::new(),
        trust_bundle_pem: String::new(),
    }
}
