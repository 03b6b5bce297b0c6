//! Renewal attestation: the caller's current certificate, already verified
//! by the TLS handshake against certd's root, is matched to its issuance
//! record. The identity comes from that record, not from the certificate's
//! text, so only certificates certd itself recorded for a workload count.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::AttestError;
use crate::Error;
use crate::identity::Serial;
use crate::store::{Attestation, IssuanceRecord, Store};

/// The result of checking a renewal: the record of the certificate the
/// caller presented.
#[derive(Debug)]
pub struct RenewalEvidence {
    pub current: IssuanceRecord,
}

impl RenewalEvidence {
    /// Checks the caller's leaf certificate (DER) at time `now`.
    pub fn check(client_leaf: Option<&[u8]>, store: &Store, now: i64) -> Result<Self, Error> {
        let Some(der) = client_leaf else {
            return Err(AttestError::NoClientCertificate.into());
        };
        let unknown =
            |reason: &str| Err(AttestError::UnknownClientCertificate(reason.into()).into());
        let Ok((_, certificate)) = X509Certificate::from_der(der) else {
            return unknown("it does not parse");
        };
        let Some(serial) = Serial::from_der_integer(certificate.raw_serial()) else {
            return unknown("its serial is not one certd issues");
        };
        let Some(record) = store.certificate(&serial)? else {
            return unknown("no issuance record for its serial");
        };
        if record.der != der {
            return unknown("it differs from the recorded certificate");
        }
        if matches!(record.attestation, Attestation::ServingCertificate) {
            return unknown("it is certd's own serving certificate");
        }
        if record.revocation.is_some() {
            return Err(AttestError::RevokedClientCertificate {
                serial: serial.to_hex(),
            }
            .into());
        }
        if now > record.not_after {
            return Err(AttestError::ExpiredClientCertificate {
                serial: serial.to_hex(),
                not_after: record.not_after,
            }
            .into());
        }
        Ok(RenewalEvidence { current: record })
    }
}
