//! Issuance records as format version 5 writes them: without what the
//! certificate's own DER already says.
//!
//! A record kept its serial, its SAN's DNS names and URIs and its SHA-256
//! fingerprint beside the DER they come from: about 120 of a record's
//! ~900 bytes, written once per issuance and held for the whole retention
//! (docs/PERFORMANCE.md, "Retention"). Version 5 leaves each of them out
//! when, and only when, reading the DER gives exactly the same value back,
//! and reads it from the DER again when the record is decoded. A record
//! whose fields do not match its DER (none certd signs; a record made by
//! hand, a DER no parser reads) keeps them, so every record decodes to what
//! was encoded.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{DiskAttestation, DiskRevocation};
use crate::StoreError;
use certd_core::identity::{Serial, ServiceName};
use certd_core::model::IssuanceRecord;

/// Field order is the format. `None` in a field marked so means "what the
/// DER says".
#[derive(Serialize, Deserialize)]
pub(crate) struct DiskIssuanceRecordV5 {
    /// `None`: the DER's serial number (its content octets).
    serial: Option<Vec<u8>>,
    service: String,
    /// `None`: the DNS names of the DER's subjectAltName, in its order.
    dns_names: Option<Vec<String>>,
    /// `None`: the URIs of the DER's subjectAltName, in its order.
    uris: Option<Vec<String>>,
    not_before: i64,
    not_after: i64,
    issued_at: i64,
    /// `None`: SHA-256 of `der`.
    sha256_fingerprint: Option<[u8; 32]>,
    der: Vec<u8>,
    attestation: DiskAttestation,
    renewed_from: Option<Vec<u8>>,
    revocation: Option<DiskRevocation>,
}

/// What a certificate's DER says of the fields version 5 may leave out.
struct DerSays {
    serial: Vec<u8>,
    dns_names: Vec<String>,
    uris: Vec<String>,
}

impl DerSays {
    /// `None` when `der` is not a certificate x509-parser reads whole (a
    /// record then keeps every field).
    fn read(der: &[u8]) -> Option<DerSays> {
        let (rest, certificate) = X509Certificate::from_der(der).ok()?;
        if !rest.is_empty() {
            return None;
        }
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        // A certificate without the extension names nothing; one with it
        // twice is not read (the record keeps its own lists).
        if let Some(san) = certificate.subject_alternative_name().ok()? {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(name) => dns_names.push((*name).to_owned()),
                    GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                    _ => {}
                }
            }
        }
        Some(DerSays {
            serial: certificate.tbs_certificate.raw_serial().to_vec(),
            dns_names,
            uris,
        })
    }
}

fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

impl From<IssuanceRecord> for DiskIssuanceRecordV5 {
    fn from(record: IssuanceRecord) -> Self {
        let said = DerSays::read(&record.der);
        let serial = match &said {
            Some(said) if said.serial == record.serial.as_bytes() => None,
            _ => Some(record.serial.as_bytes().to_vec()),
        };
        let dns_names = match &said {
            Some(said) if said.dns_names == record.dns_names => None,
            _ => Some(record.dns_names),
        };
        let uris = match &said {
            Some(said) if said.uris == record.uris => None,
            _ => Some(record.uris),
        };
        let sha256_fingerprint =
            Some(record.sha256_fingerprint).filter(|f| *f != fingerprint(&record.der));
        DiskIssuanceRecordV5 {
            serial,
            service: record.service.into(),
            dns_names,
            uris,
            not_before: record.not_before,
            not_after: record.not_after,
            issued_at: record.issued_at,
            sha256_fingerprint,
            der: record.der,
            attestation: record.attestation.into(),
            renewed_from: record.renewed_from.map(|s| s.as_bytes().to_vec()),
            revocation: record.revocation.map(Into::into),
        }
    }
}

impl TryFrom<DiskIssuanceRecordV5> for IssuanceRecord {
    type Error = StoreError;

    fn try_from(disk: DiskIssuanceRecordV5) -> Result<Self, StoreError> {
        let left_out = disk.serial.is_none() || disk.dns_names.is_none() || disk.uris.is_none();
        let said = if left_out {
            // Encoding left a field out only after reading it from this
            // very DER, so failing now means the bytes changed on disk.
            Some(DerSays::read(&disk.der).ok_or_else(|| {
                StoreError::Corrupt(
                    "an issuance record's certificate no longer parses (format 5)".into(),
                )
            })?)
        } else {
            None
        };
        let (serial, dns_names, uris) = match said {
            Some(said) => (
                disk.serial.unwrap_or(said.serial),
                disk.dns_names.unwrap_or(said.dns_names),
                disk.uris.unwrap_or(said.uris),
            ),
            None => (
                disk.serial.unwrap_or_default(),
                disk.dns_names.unwrap_or_default(),
                disk.uris.unwrap_or_default(),
            ),
        };
        let sha256_fingerprint = disk
            .sha256_fingerprint
            .unwrap_or_else(|| fingerprint(&disk.der));
        Ok(IssuanceRecord {
            serial: Serial::from_stored(serial),
            service: ServiceName::from_stored(disk.service),
            dns_names,
            uris,
            not_before: disk.not_before,
            not_after: disk.not_after,
            issued_at: disk.issued_at,
            sha256_fingerprint,
            der: disk.der,
            attestation: disk.attestation.into(),
            renewed_from: disk.renewed_from.map(Serial::from_stored),
            revocation: disk.revocation.map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{DiskIssuanceRecord, FORMAT_VERSION, decode, encode};
    use certd_core::model::Attestation;

    /// A certificate as certd signs them (a time-ordered serial, the
    /// service's DNS name and SPIFFE ID in its SAN) and its record.
    fn signed_record() -> IssuanceRecord {
        let serial = Serial::generate_time_ordered(1_800_000_000);
        let key = rcgen::KeyPair::generate().expect("a P-256 key");
        let mut params = rcgen::CertificateParams::new(vec!["billing.certd.internal".to_owned()])
            .expect("a DNS name");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://certd.internal/svc/billing"
                .try_into()
                .expect("an IA5 URI"),
        ));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
        let der = params.self_signed(&key).expect("signed").der().to_vec();
        IssuanceRecord {
            serial,
            service: "billing".parse().expect("a service name"),
            dns_names: vec!["billing.certd.internal".into()],
            uris: vec!["spiffe://certd.internal/svc/billing".into()],
            not_before: 1_800_000_000,
            not_after: 1_800_086_400,
            issued_at: 1_800_000_060,
            sha256_fingerprint: fingerprint(&der),
            der,
            attestation: Attestation::Renewal,
            renewed_from: None,
            revocation: None,
        }
    }

    fn version_2(record: &IssuanceRecord) -> Vec<u8> {
        let disk = DiskIssuanceRecord::from(record.clone());
        [
            vec![FORMAT_VERSION],
            postcard::to_stdvec(&disk).expect("encoded"),
        ]
        .concat()
    }

    /// A record of a certificate certd signed leaves its serial, SAN and
    /// fingerprint to the DER, and reads back whole; the same record as
    /// version 2 wrote it reads the same.
    #[test]
    fn a_signed_record_leaves_out_what_its_der_says_and_reads_back_whole() {
        let record = signed_record();
        let bytes = encode(&record).expect("encoded");
        assert_eq!(bytes[0], 5);
        let old = version_2(&record);
        // 20 + 1 (serial), 22 + 2 and 35 + 2 (the lists), 32 (fingerprint);
        // each left-out field costs one byte of `None`.
        let saved = (21 + 24 + 37 + 32) - 4;
        assert_eq!(old.len() - bytes.len(), saved);
        assert_eq!(decode::<IssuanceRecord>(&bytes).expect("decoded"), record);
        assert_eq!(decode::<IssuanceRecord>(&old).expect("decoded"), record);
    }

    /// A field that differs from what the DER says is kept, so a record
    /// always reads back as it was written.
    #[test]
    fn a_field_its_der_does_not_say_is_kept() {
        let signed = signed_record();
        let mut cases = Vec::new();
        let mut other_names = signed.clone();
        other_names.dns_names = vec!["other.example".into()];
        cases.push(other_names);
        let mut no_uris = signed.clone();
        no_uris.uris.clear();
        cases.push(no_uris);
        let mut other_fingerprint = signed.clone();
        other_fingerprint.sha256_fingerprint = [9; 32];
        cases.push(other_fingerprint);
        let mut other_serial = signed.clone();
        other_serial.serial = Serial::generate();
        cases.push(other_serial);
        let mut not_a_certificate = signed;
        not_a_certificate.der.push(0);
        cases.push(not_a_certificate);
        for record in cases {
            let bytes = encode(&record).expect("encoded");
            assert_eq!(decode::<IssuanceRecord>(&bytes).expect("decoded"), record);
        }
    }

    /// A record whose fields were left to its DER, with the DER damaged
    /// since, is reported corrupt rather than read with empty fields.
    #[test]
    fn a_damaged_der_is_corrupt_when_fields_were_left_to_it() {
        let record = signed_record();
        let mut disk = DiskIssuanceRecordV5::from(record);
        assert!(disk.serial.is_none() && disk.dns_names.is_none() && disk.uris.is_none());
        disk.der.truncate(10);
        let bytes = [vec![5], postcard::to_stdvec(&disk).expect("encoded")].concat();
        assert!(matches!(
            decode::<IssuanceRecord>(&bytes),
            Err(StoreError::Corrupt(message)) if message.contains("no longer parses")
        ));
    }
}
