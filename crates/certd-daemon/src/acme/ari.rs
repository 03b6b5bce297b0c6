//! ACME Renewal Information (RFC 9773): when a client should renew.
//!
//! A certificate is named by its certID, base64url of its authority key
//! identifier's keyIdentifier, a period, and base64url of its serial's DER
//! integer bytes. The suggested window lies around the middle of its
//! lifetime; it moves to now (a window ending now, which clients read as
//! "renew at once") when the certificate is revoked, when the intermediate
//! that signed it is no longer the current one, or when the root it chains
//! to has left the trust bundle.

use super::jws::{b64, unb64};
use super::problem::Problem;
use crate::identity::Serial;

/// How long clients should wait before asking again (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u64 = 6 * 3600;

/// A parsed certID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    pub key_identifier: Vec<u8>,
    pub serial: Serial,
}

impl CertId {
    pub fn parse(text: &str) -> Result<Self, Problem> {
        let (aki, serial) = text.split_once('.').ok_or_else(|| {
            Problem::malformed("a certID is base64url(keyIdentifier) \".\" base64url(serial)")
        })?;
        let key_identifier = unb64("the certID's keyIdentifier", aki)?;
        let serial_bytes = unb64("the certID's serial", serial)?;
        if key_identifier.is_empty() {
            return Err(Problem::malformed("the certID's keyIdentifier is empty"));
        }
        let serial = Serial::from_der_integer(&serial_bytes)
            .ok_or_else(|| Problem::malformed("the certID's serial is not a serial number"))?;
        Ok(CertId {
            key_identifier,
            serial,
        })
    }

    /// The certID of a certificate signed by the key `key_identifier`.
    pub fn of(key_identifier: &[u8], serial: &Serial) -> String {
        let mut integer = serial.as_bytes().to_vec();
        if integer.first().is_some_and(|b| b & 0x80 != 0) {
            integer.insert(0, 0);
        }
        format!("{}.{}", b64(key_identifier), b64(&integer))
    }
}

/// Why a certificate should be replaced at once, if it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewNow {
    Revoked,
    IntermediateReplaced,
    RootRetired,
}

/// The suggested renewal window, Unix seconds: `[start, end)`.
pub fn window(
    not_before: i64,
    not_after: i64,
    now: i64,
    renew_now: Option<RenewNow>,
) -> (i64, i64) {
    if renew_now.is_some() {
        // A window that ends now: renew at once, whatever the lifetime.
        return (now.saturating_sub(60), now);
    }
    let lifetime = not_after.saturating_sub(not_before).max(1);
    // Between 5/12 and 7/12 of the lifetime: around the middle, wide
    // enough that a fleet's renewals spread out.
    let start = not_before + lifetime * 5 / 12;
    let end = not_before + lifetime * 7 / 12;
    (start, end.max(start + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_around_the_middle_of_the_lifetime() {
        // A 24 h certificate: from hour 10 to hour 14.
        assert_eq!(window(0, 86_400, 5, None), (36_000, 50_400));
        // Moved to now when it must be replaced.
        for reason in [
            RenewNow::Revoked,
            RenewNow::IntermediateReplaced,
            RenewNow::RootRetired,
        ] {
            assert_eq!(window(0, 86_400, 500, Some(reason)), (440, 500));
        }
    }

    #[test]
    fn cert_ids_read_back_and_refuse_garbage() {
        let serial: Serial = "8f01".parse().unwrap();
        let id = CertId::of(&[1, 2, 3], &serial);
        // The serial's DER integer keeps its sign byte.
        assert_eq!(id, "AQID.AI8B");
        let parsed = CertId::parse(&id).unwrap();
        assert_eq!(parsed.key_identifier, [1, 2, 3]);
        assert_eq!(parsed.serial, serial);
        for bad in ["", "AQID", "AQID.", ".AI8B", "AQID.!!", "AQID.gAE"] {
            assert!(CertId::parse(bad).is_err(), "{bad}");
        }
    }
}
