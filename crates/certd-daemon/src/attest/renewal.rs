//! Certificate attestation, for renewal and for operators on the admin API:
//! the caller's current certificate, already verified by the TLS handshake
//! against certd's root, is matched to its issuance record. The identity
//! comes from that record, not from the certificate's text, so only
//! certificates certd itself recorded count.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::{AttestError, AttestFailure as Error};
use crate::identity::Serial;
use crate::model::kind;
use crate::store::{Attestation, IssuanceRecord, Proof, Storage};

/// The result of checking a renewal: the record of the certificate the
/// caller presented.
#[derive(Debug)]
pub struct RenewalEvidence {
    pub current: IssuanceRecord,
}

impl RenewalEvidence {
    /// Checks the caller's leaf certificate (DER) at time `now`. A
    /// certificate issued over ACME is refused: it names only the DNS names
    /// an ACME order proved, so renewing it here would widen it to all of
    /// its entry's names, and it would outlive its account's deactivation.
    /// Every caller that takes a presented certificate as a workload's
    /// credential (renewal, agents, JWT-SVIDs, the token endpoint's mTLS
    /// client authentication) comes through here.
    pub async fn check(
        client_leaf: Option<&[u8]>,
        store: &dyn Storage,
        now: i64,
    ) -> Result<Self, Error> {
        let record =
            current_record(client_leaf, store, now, AttestError::NoClientCertificate).await?;
        let refuse =
            |reason: &str| Err(AttestError::UnknownClientCertificate(reason.into()).into());
        match record.attestation {
            Attestation::ServingCertificate => refuse("it is certd's own serving certificate"),
            Attestation::Operator { .. } => {
                refuse("it is an operator certificate, not a workload's")
            }
            Attestation::Registered {
                proof: Proof::Attested { kind: attestor, .. },
                ..
            } if attestor == kind::ACME => Err(AttestError::IssuedOverAcme {
                serial: record.serial.to_hex(),
            }
            .into()),
            _ => Ok(RenewalEvidence { current: record }),
        }
    }
}

/// What a client certificate presented to the admin API turned out to be.
#[derive(Debug)]
pub enum AdminCaller {
    /// A current operator certificate certd issued, with its SPIFFE ID.
    Operator { spiffe_id: String },
    /// A valid certificate certd issued, but not an operator's (a workload's).
    NotOperator { spiffe_id: String },
}

impl AdminCaller {
    /// Checks the leaf certificate of an mTLS caller of the admin API.
    pub async fn check(
        client_leaf: Option<&[u8]>,
        store: &dyn Storage,
        now: i64,
    ) -> Result<Self, Error> {
        let record =
            current_record(client_leaf, store, now, AttestError::NoOperatorCertificate).await?;
        let spiffe_id = record
            .uris
            .first()
            .cloned()
            .unwrap_or_else(|| format!("serial {}", record.serial));
        Ok(match record.attestation {
            Attestation::Operator { .. } => AdminCaller::Operator { spiffe_id },
            _ => AdminCaller::NotOperator { spiffe_id },
        })
    }
}

/// The issuance record of a client certificate: it must be one certd
/// recorded (byte for byte), unrevoked and unexpired at `now`.
async fn current_record(
    client_leaf: Option<&[u8]>,
    store: &dyn Storage,
    now: i64,
    missing: AttestError,
) -> Result<IssuanceRecord, Error> {
    let Some(der) = client_leaf else {
        return Err(missing.into());
    };
    let unknown = |reason: &str| Err(AttestError::UnknownClientCertificate(reason.into()).into());
    let Ok((_, certificate)) = X509Certificate::from_der(der) else {
        return unknown("it does not parse");
    };
    let Some(serial) = Serial::from_der_integer(certificate.raw_serial()) else {
        return unknown("its serial is not one certd issues");
    };
    let Some(record) = store.certificate(&serial).await? else {
        return unknown("no issuance record for its serial");
    };
    if record.der != der {
        return unknown("it differs from the recorded certificate");
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
    Ok(record)
}
