//! Listing certificates a page at a time: the query, the page, and the
//! cursor that says where the next page starts.
//!
//! Pages go newest first through the issuance-time order (`issued_at`, then
//! serial), which every backend keeps as an index, so a page costs reads in
//! proportion to its size, never to the store's. The cursor is a position in
//! that order; clients see it only as an opaque token (`to_token`) and hand
//! it back, and it is parsed at the edge (`from_token`) like any other input.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{CertificateState, IssuanceRecord};
use crate::identity::{Serial, ServiceName};

/// A position in the issuance-time order: a page continues with the records
/// strictly older than it (`(issued_at, serial)` below this one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertificateCursor {
    pub issued_at: i64,
    pub serial: Serial,
}

/// The token's first byte: its format, so a later certd can change the form
/// and still tell an old token from a malformed one.
const TOKEN_VERSION: u8 = 1;

/// Why a page token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "page token {0:?} is not one certd handed out: pass the next_page_token of a previous answer unchanged, or none for the first page"
)]
pub struct PageTokenError(pub String);

impl CertificateCursor {
    /// The position of `record`.
    pub fn of(record: &IssuanceRecord) -> Self {
        CertificateCursor {
            issued_at: record.issued_at,
            serial: record.serial.clone(),
        }
    }

    /// The opaque token clients carry: base64url of the version, the time
    /// (8 bytes, big-endian) and the serial's bytes.
    pub fn to_token(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + 8 + self.serial.as_bytes().len());
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(&self.issued_at.to_be_bytes());
        bytes.extend_from_slice(self.serial.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a token `to_token` made; anything else is refused, naming it.
    pub fn from_token(token: &str) -> Result<Self, PageTokenError> {
        let refused = || PageTokenError(token.chars().take(64).collect());
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| refused())?;
        let (&version, rest) = bytes.split_first().ok_or_else(refused)?;
        if version != TOKEN_VERSION || rest.len() < 8 {
            return Err(refused());
        }
        let (time, serial) = rest.split_at(8);
        let issued_at = i64::from_be_bytes(time.try_into().map_err(|_| refused())?);
        // Only serials in canonical form: what a record's position holds.
        let serial = Serial::from_der_integer(serial)
            .filter(|parsed| parsed.as_bytes() == serial)
            .ok_or_else(refused)?;
        Ok(CertificateCursor { issued_at, serial })
    }
}

/// One page of `Storage::certificate_page`: what to list, and where.
#[derive(Debug, Clone)]
pub struct CertificateQuery {
    /// Only this service's certificates.
    pub service: Option<ServiceName>,
    /// Only certificates in this state at `now`.
    pub state: Option<CertificateState>,
    /// Only certificates unexpired at `now` whose notAfter is at or before
    /// this (Unix seconds): what lapses soon if nothing renews it (revoked
    /// ones included, as `certd list --expiring-within` always listed them).
    pub expiring_by: Option<i64>,
    /// The moment `state` and `expiring_by` are judged at.
    pub now: i64,
    /// Continue after this position; `None` for the newest.
    pub after: Option<CertificateCursor>,
    /// At most this many records.
    pub limit: usize,
}

impl CertificateQuery {
    /// The newest `limit` certificates, of every service and state.
    pub fn newest(limit: usize, now: i64) -> Self {
        CertificateQuery {
            service: None,
            state: None,
            expiring_by: None,
            now,
            after: None,
            limit,
        }
    }

    /// Whether `record` is one this query lists (its service is the
    /// index's business).
    pub fn matches(&self, record: &IssuanceRecord) -> bool {
        let in_state = self
            .state
            .is_none_or(|state| record.state(self.now) == state);
        let expiring = self
            .expiring_by
            .is_none_or(|by| record.not_after >= self.now && record.not_after <= by);
        in_state && expiring
    }
}

/// One page, newest first, and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificatePage {
    pub records: Vec<IssuanceRecord>,
    /// `None` when nothing older is left to look at. A page shorter than the
    /// limit with a cursor is not the end: the walk stopped at its budget.
    pub next: Option<CertificateCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: &str, expected: Result<(i64, &str), ()>) {
        let parsed = CertificateCursor::from_token(token)
            .map(|cursor| (cursor.issued_at, cursor.serial.to_hex()))
            .map_err(|_| ());
        assert_eq!(
            parsed,
            expected.map(|(at, serial)| (at, serial.to_owned())),
            "{token}"
        );
    }

    /// Tokens made by `to_token` parse back to their position; anything
    /// else is refused.
    #[test]
    fn page_tokens_round_trip_and_refuse_what_certd_did_not_make() {
        for (at, serial) in [
            (0, "01"),
            (-5, "7f"),
            (i64::MAX, "40aa"),
            (1_700_000_000, "4102030405060708090a0b0c0d0e0f1011121314"),
        ] {
            let cursor = CertificateCursor {
                issued_at: at,
                serial: serial.parse().unwrap(),
            };
            check(&cursor.to_token(), Ok((at, serial)));
        }
        let token = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        check("", Err(()));
        check("not base64!", Err(()));
        check("AQ==", Err(()));
        // Wrong version, no serial, a leading zero, a negative serial.
        check(&token(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 5]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 5]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0x80]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 5]), Ok((1, "05")));
    }
}
