//! Listing certificates a page at a time: the query, the page, and the
//! cursor that says where the next page starts.
//!
//! Pages go newest first through the issuance-time order (`issued_at`, then
//! serial), which every backend keeps as an index, so a page costs reads in
//! proportion to its size, never to the store's. A listing of every service
//! by expiry (good, expired, or expiring within a window) goes instead
//! through the expiry order (`not_after`, then serial), latest expiry first,
//! which every backend also keeps (for the retention purge): the window of
//! expiries it asks for is a range of that index, so its pages cost what
//! they return too (`CertificateQuery::expiry_walk`). The cursor is a
//! position in one of the two orders; clients see it only as an opaque
//! token (`to_token`) and hand it back, and it is parsed at the edge
//! (`from_token`) like any other input.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{CertificateState, IssuanceRecord};
use crate::identity::{Serial, ServiceName};

/// A position in the issuance-time or the expiry order: a page continues
/// with the records strictly below it (`(at, serial)` below this one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertificateCursor {
    pub order: ListingOrder,
    /// `issued_at` or `not_after`, as `order` says.
    pub at: i64,
    pub serial: Serial,
}

/// The order a listing walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListingOrder {
    /// By issuance time, newest first.
    Issued,
    /// By expiry, latest first.
    Expiry,
}

/// The token's first byte: its format and order, so a later certd can
/// change the form and still tell an old token from a malformed one.
const TOKEN_ISSUED: u8 = 1;
const TOKEN_EXPIRY: u8 = 2;

/// Why a page token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "page token {0:?} is not one certd handed out: pass the next_page_token of a previous answer unchanged, or none for the first page"
)]
pub struct PageTokenError(pub String);

impl CertificateCursor {
    /// The position of `record` in the issuance-time order.
    pub fn of(record: &IssuanceRecord) -> Self {
        CertificateCursor::in_order(ListingOrder::Issued, record)
    }

    /// The position of `record` in `order`.
    pub fn in_order(order: ListingOrder, record: &IssuanceRecord) -> Self {
        CertificateCursor {
            order,
            at: match order {
                ListingOrder::Issued => record.issued_at,
                ListingOrder::Expiry => record.not_after,
            },
            serial: record.serial.clone(),
        }
    }

    /// The opaque token clients carry: base64url of the version (which
    /// says the order), the time (8 bytes, big-endian) and the serial's
    /// bytes.
    pub fn to_token(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + 8 + self.serial.as_bytes().len());
        bytes.push(match self.order {
            ListingOrder::Issued => TOKEN_ISSUED,
            ListingOrder::Expiry => TOKEN_EXPIRY,
        });
        bytes.extend_from_slice(&self.at.to_be_bytes());
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
        let order = match version {
            TOKEN_ISSUED => ListingOrder::Issued,
            TOKEN_EXPIRY => ListingOrder::Expiry,
            _ => return Err(refused()),
        };
        if rest.len() < 8 {
            return Err(refused());
        }
        let (time, serial) = rest.split_at(8);
        let at = i64::from_be_bytes(time.try_into().map_err(|_| refused())?);
        // Only serials in canonical form: what a record's position holds.
        let serial = Serial::from_der_integer(serial)
            .filter(|parsed| parsed.as_bytes() == serial)
            .ok_or_else(refused)?;
        Ok(CertificateCursor { order, at, serial })
    }
}

/// The expiries (`not_after`, inclusive at both ends) a listing by expiry
/// walks, latest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryRange {
    pub from: i64,
    pub to: i64,
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

    /// The expiries this query walks through the expiry order, or `None`
    /// if it goes through the issuance-time order. A listing of every
    /// service by a state that depends on `now` or by an expiry window is
    /// a range of the expiry order: expired is `not_after` before `now`,
    /// good and expiring-within `not_after` from `now` on (revoked
    /// certificates in the range are skipped by `matches`, and are few).
    /// One service's certificates, and revoked ones, have time indexes of
    /// their own, which answer them better.
    pub fn expiry_walk(&self) -> Option<ExpiryRange> {
        if self.service.is_some() {
            return None;
        }
        let to = self.expiring_by.unwrap_or(i64::MAX);
        match (self.state, self.expiring_by) {
            (Some(CertificateState::Revoked), _) => None,
            (Some(CertificateState::Expired), by) => Some(ExpiryRange {
                from: i64::MIN,
                // Expired and expiring-within exclude each other: an empty
                // range, walked at no cost.
                to: if by.is_some() {
                    i64::MIN
                } else {
                    self.now.saturating_sub(1)
                },
            }),
            (Some(CertificateState::Good), _) | (None, Some(_)) => {
                Some(ExpiryRange { from: self.now, to })
            }
            (None, None) => None,
        }
    }

    /// The order this query's pages go in, which its cursor must be of.
    pub fn order(&self) -> ListingOrder {
        match self.expiry_walk() {
            Some(_) => ListingOrder::Expiry,
            None => ListingOrder::Issued,
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
    /// How many index entries the page examined to find its records (more
    /// than it returned where a filter left some out): what reading it
    /// cost, which listings are paced by.
    pub examined: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: &str, expected: Result<(i64, &str), ()>) {
        let parsed = CertificateCursor::from_token(token)
            .map(|cursor| (cursor.at, cursor.serial.to_hex()))
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
            for order in [ListingOrder::Issued, ListingOrder::Expiry] {
                let cursor = CertificateCursor {
                    order,
                    at,
                    serial: serial.parse().unwrap(),
                };
                assert_eq!(
                    CertificateCursor::from_token(&cursor.to_token()),
                    Ok(cursor.clone())
                );
                check(&cursor.to_token(), Ok((at, serial)));
            }
        }
        let token = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        check("", Err(()));
        check("not base64!", Err(()));
        check("AQ==", Err(()));
        // Wrong version, no serial, a leading zero, a negative serial.
        check(&token(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 5]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 5]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0x80]), Err(()));
        check(&token(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 5]), Ok((1, "05")));
        check(&token(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 5]), Ok((1, "05")));
    }

    /// Listings of every service by expiry state or window walk a range
    /// of the expiry order; by service, revoked, or nothing, the issuance
    /// order.
    #[test]
    fn expiry_states_and_windows_of_every_service_walk_the_expiry_order() {
        let now = 1_000;
        let query = |service: Option<&str>, state, expiring_by| CertificateQuery {
            service: service.map(|s| s.parse().unwrap()),
            state,
            expiring_by,
            now,
            after: None,
            limit: 10,
        };
        let range = |from, to| Some(ExpiryRange { from, to });
        use CertificateState::*;
        assert_eq!(
            query(None, Some(Expired), None).expiry_walk(),
            range(i64::MIN, 999)
        );
        assert_eq!(
            query(None, Some(Good), None).expiry_walk(),
            range(1_000, i64::MAX)
        );
        assert_eq!(
            query(None, None, Some(4_600)).expiry_walk(),
            range(1_000, 4_600)
        );
        assert_eq!(
            query(None, Some(Good), Some(4_600)).expiry_walk(),
            range(1_000, 4_600)
        );
        assert_eq!(
            query(None, Some(Expired), Some(4_600)).expiry_walk(),
            range(i64::MIN, i64::MIN)
        );
        assert_eq!(query(None, Some(Revoked), None).expiry_walk(), None);
        assert_eq!(query(None, None, None).expiry_walk(), None);
        assert_eq!(
            query(Some("billing"), Some(Expired), None).expiry_walk(),
            None
        );
        assert_eq!(
            query(None, Some(Expired), None).order(),
            ListingOrder::Expiry
        );
        assert_eq!(query(None, None, None).order(), ListingOrder::Issued);
    }
}
