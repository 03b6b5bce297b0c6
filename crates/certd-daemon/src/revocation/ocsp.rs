//! The OCSP responder's protocol work (RFC 6960): parse a request, answer
//! each CertID from the store, sign a BasicOCSPResponse with the CA's key.
//!
//! Every failure becomes an OCSP error status, never a panic: a request that
//! does not parse is `malformedRequest`, a CertID of an issuer certd does not
//! know (or hashed with an algorithm it does not support) is `unauthorized`.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use crate::ca::{Intermediate, KeyType};
use crate::identity::Serial;

/// The largest OCSP request certd reads. Real ones are under 200 bytes.
pub(crate) const MAX_OCSP_REQUEST_LEN: usize = 8 * 1024;
/// The longest nonce echoed (RFC 8954 allows 1 to 32 octets).
const MAX_NONCE_LEN: usize = 32;

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_PKIX_OCSP_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The status of one certificate, as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KnownStatus {
    Good,
    Revoked { at: i64, reason_code: u8 },
    Unknown,
}

/// A parsed request: the serials asked about and the nonce to echo. A
/// serial certd could never have issued (negative, zero, over 20 bytes) is
/// `None`: still a fair question about this issuer, answered "unknown".
#[derive(Debug, Clone)]
pub(crate) struct ParsedRequest {
    /// Which of the issuers given to `parse_request` every CertID names.
    pub issuer: usize,
    pub queries: Vec<(CertId, Option<Serial>)>,
    pub nonce: Option<Extension>,
}

/// What an intermediate's identity hashes to, under each supported
/// algorithm.
#[derive(Debug, Clone)]
pub(crate) struct IssuerHashes {
    sha1_name: Vec<u8>,
    sha1_key: Vec<u8>,
    sha256_name: Vec<u8>,
    sha256_key: Vec<u8>,
}

impl IssuerHashes {
    pub fn new(intermediate: &Intermediate) -> Self {
        let name = intermediate.subject_der();
        let key = intermediate.public_key_bits();
        IssuerHashes {
            sha1_name: Sha1::digest(name).to_vec(),
            sha1_key: Sha1::digest(key).to_vec(),
            sha256_name: Sha256::digest(name).to_vec(),
            sha256_key: Sha256::digest(key).to_vec(),
        }
    }

    fn matches(&self, id: &CertId) -> bool {
        let (name, key) = if id.hash_algorithm.oid == ID_SHA1 {
            (&self.sha1_name, &self.sha1_key)
        } else if id.hash_algorithm.oid == ID_SHA256 {
            (&self.sha256_name, &self.sha256_key)
        } else {
            return false;
        };
        id.issuer_name_hash.as_bytes() == name.as_slice()
            && id.issuer_key_hash.as_bytes() == key.as_slice()
    }

    /// The responder ID: SHA-1 of the signing key (RFC 6960 4.2.1).
    fn key_hash(&self) -> &[u8] {
        &self.sha1_key
    }
}

/// Whether a CertID is hashed with SHA-256 (else SHA-1).
pub(crate) fn is_sha256(id: &CertId) -> bool {
    id.hash_algorithm.oid == ID_SHA256
}

/// Parses a DER OCSP request and checks that certd may answer every
/// CertID in it: each names one of `issuers`, all the same one (the answer
/// is signed by that issuer). Returns the OCSP status to send when it may
/// not.
pub(crate) fn parse_request(
    der: &[u8],
    issuers: &[IssuerHashes],
) -> Result<ParsedRequest, OcspResponseStatus> {
    if der.is_empty() || der.len() > MAX_OCSP_REQUEST_LEN {
        return Err(OcspResponseStatus::MalformedRequest);
    }
    let request = OcspRequest::from_der(der).map_err(|_| OcspResponseStatus::MalformedRequest)?;
    let list = &request.tbs_request.request_list;
    if list.is_empty() {
        return Err(OcspResponseStatus::MalformedRequest);
    }
    let mut issuer = None;
    let mut queries = Vec::with_capacity(list.len());
    for single in list {
        let named = issuers
            .iter()
            .position(|hashes| hashes.matches(&single.req_cert))
            .ok_or(OcspResponseStatus::Unauthorized)?;
        if *issuer.get_or_insert(named) != named {
            return Err(OcspResponseStatus::Unauthorized);
        }
        let serial = Serial::from_der_integer(single.req_cert.serial_number.as_bytes());
        queries.push((single.req_cert.clone(), serial));
    }
    let nonce = match &request.tbs_request.request_extensions {
        Some(extensions) => nonce_of(extensions)?,
        None => None,
    };
    Ok(ParsedRequest {
        issuer: issuer.unwrap_or(0),
        queries,
        nonce,
    })
}

fn nonce_of(extensions: &[Extension]) -> Result<Option<Extension>, OcspResponseStatus> {
    let Some(nonce) = extensions.iter().find(|e| e.extn_id == ID_PKIX_OCSP_NONCE) else {
        return Ok(None);
    };
    // The nonce's value is itself an OCTET STRING (RFC 8954); bound it so a
    // client cannot make certd sign arbitrary amounts of data.
    let inner = OctetString::from_der(nonce.extn_value.as_bytes())
        .map_err(|_| OcspResponseStatus::MalformedRequest)?;
    if inner.as_bytes().is_empty() || inner.as_bytes().len() > MAX_NONCE_LEN {
        return Err(OcspResponseStatus::MalformedRequest);
    }
    Ok(Some(Extension {
        extn_id: ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: nonce.extn_value.clone(),
    }))
}

/// Builds a successful response, signed by `signer`, whose hashes are
/// `issuer`.
pub(crate) fn build_response(
    signer: &Intermediate,
    issuer: &IssuerHashes,
    answers: &[(CertId, KnownStatus)],
    nonce: Option<Extension>,
    this_update: i64,
    next_update: i64,
) -> Result<Vec<u8>, BuildError> {
    let responses = answers
        .iter()
        .map(|(id, status)| {
            Ok(SingleResponse {
                cert_id: id.clone(),
                cert_status: cert_status(*status)?,
                this_update: time(this_update)?,
                next_update: Some(time(next_update)?),
                single_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(issuer.key_hash())?),
        produced_at: time(this_update)?,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let tbs = data.to_der()?;
    let signature = signer.sign_bytes(&tbs)?;
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: signature_algorithm(signer.key_type()),
        signature: BitString::from_bytes(&signature)?,
        certs: None,
    };
    let response = OcspResponse::successful(basic)?;
    Ok(response.to_der()?)
}

/// Why certd could not build an OCSP response: its own failure, logged
/// and answered `internalError`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("time {0} is before 1970")]
    BeforeEpoch(i64),
    #[error("cannot encode the response")]
    Encoding(#[from] x509_cert::der::Error),
    #[error("cannot sign the response")]
    Signing(#[from] crate::ca::CaError),
}

/// An unsigned error response (RFC 6960 2.3).
pub(crate) fn error_response(status: OcspResponseStatus) -> Vec<u8> {
    let response = OcspResponse {
        response_status: status,
        response_bytes: None,
    };
    // Encoding an enum and nothing else cannot fail; fall back to the
    // fixed bytes of internalError just in case.
    response
        .to_der()
        .unwrap_or_else(|_| vec![0x30, 0x03, 0x0a, 0x01, 0x02])
}

fn cert_status(status: KnownStatus) -> Result<CertStatus, BuildError> {
    Ok(match status {
        KnownStatus::Good => CertStatus::Good(Null),
        KnownStatus::Unknown => CertStatus::Unknown(Null),
        KnownStatus::Revoked { at, reason_code } => CertStatus::Revoked(RevokedInfo {
            revocation_time: time(at)?,
            revocation_reason: crl_reason(reason_code),
        }),
    })
}

fn crl_reason(code: u8) -> Option<CrlReason> {
    Some(match code {
        1 => CrlReason::KeyCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        _ => CrlReason::Unspecified,
    })
}

fn time(unix: i64) -> Result<OcspGeneralizedTime, BuildError> {
    let seconds = u64::try_from(unix).map_err(|_| BuildError::BeforeEpoch(unix))?;
    let time = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(seconds))?;
    Ok(OcspGeneralizedTime(time))
}

fn signature_algorithm(key_type: KeyType) -> AlgorithmIdentifierOwned {
    let oid = match key_type {
        KeyType::EcdsaP256 => ECDSA_WITH_SHA256,
        KeyType::EcdsaP384 => ECDSA_WITH_SHA384,
        KeyType::Ed25519 => ED25519,
    };
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}
/// What a relying party sends: an OCSP request (SHA-1 CertID; without a nonce, the cacheable kind most
/// relying parties send) for the leaf of `chain_pem`, and the leaf's OCSP URL.
pub fn request_for(chain_pem: &str, nonce: Option<&[u8]>) -> Result<(Vec<u8>, String), String> {
    use sha1::{Digest, Sha1};
    use x509_cert::der::Encode;
    use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
    use x509_parser::prelude::{FromDer, X509Certificate};

    let prepare = |e: &dyn std::fmt::Display| e.to_string();
    let mut reader = chain_pem.as_bytes();
    let chain: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|e| prepare(&e))?;
    let [leaf, issuer, ..] = chain.as_slice() else {
        return Err("the chain has no intermediate".into());
    };
    let (_, leaf) = X509Certificate::from_der(leaf).map_err(|e| prepare(&e))?;
    let (_, issuer) = X509Certificate::from_der(issuer).map_err(|e| prepare(&e))?;
    let ocsp_url = leaf
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) => aia
                .accessdescs
                .iter()
                .find_map(|access| match &access.access_location {
                    x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                }),
            _ => None,
        })
        .unwrap_or_default();
    let octets = |bytes: Vec<u8>| OctetString::new(bytes).map_err(|e| prepare(&e));
    let cert_id = x509_ocsp::CertId {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
            parameters: None,
        },
        issuer_name_hash: octets(Sha1::digest(issuer.subject().as_raw()).to_vec())?,
        issuer_key_hash: octets(
            Sha1::digest(&issuer.public_key().subject_public_key.data).to_vec(),
        )?,
        serial_number: x509_cert::serial_number::SerialNumber::new(leaf.raw_serial())
            .map_err(|e| prepare(&e))?,
    };
    let request = x509_ocsp::OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: x509_ocsp::Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions: nonce
                .map(|nonce| -> Result<_, String> {
                    Ok(vec![x509_cert::ext::Extension {
                        extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2"),
                        critical: false,
                        extn_value: octets(
                            octets(nonce.to_vec())?.to_der().map_err(|e| prepare(&e))?,
                        )?,
                    }])
                })
                .transpose()?,
        },
        optional_signature: None,
    };
    Ok((request.to_der().map_err(|e| prepare(&e))?, ocsp_url))
}

/// A certificate's status as a verified OCSP answer gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspStatus {
    Good,
    /// Revoked at (Unix seconds), with the reason's RFC 5280 name.
    Revoked {
        at: i64,
        reason: Option<String>,
    },
    Unknown,
}

/// What a relying party checks of an OCSP answer (RFC 6960 §3.2) for the
/// leaf whose serial is `serial_der` (its raw DER integer bytes), issued by
/// `issuer_der`: it parses, is successful, is signed by the issuer (or by
/// a responder certificate the issuer signed for OCSP signing), answers
/// for that serial and that issuer, and is current at `now` (Unix seconds).
pub fn read_response(
    der: &[u8],
    serial_der: &[u8],
    issuer_der: &[u8],
    now: i64,
) -> Result<OcspStatus, String> {
    use sha1::{Digest, Sha1};
    use x509_cert::der::{Decode, Encode};
    use x509_parser::prelude::{FromDer, X509Certificate};

    let response = x509_ocsp::OcspResponse::from_der(der)
        .map_err(|e| format!("the OCSP answer does not parse: {e}"))?;
    if response.response_status != x509_ocsp::OcspResponseStatus::Successful {
        return Err(format!(
            "the OCSP responder answered {:?}",
            response.response_status
        ));
    }
    let bytes = response
        .response_bytes
        .ok_or("the OCSP answer is successful but empty")?;
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("the OCSP answer's basic response does not parse: {e}"))?;
    let (_, issuer) = X509Certificate::from_der(issuer_der)
        .map_err(|e| format!("the issuer certificate does not parse: {e}"))?;

    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| e.to_string())?;
    let algorithm = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| e.to_string())?;
    let (_, algorithm) = x509_parser::x509::AlgorithmIdentifier::from_der(&algorithm)
        .map_err(|e| format!("the OCSP signature algorithm does not parse: {e}"))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or("the OCSP signature is not whole bytes")?;
    let signature = x509_parser::asn1_rs::BitString::new(0, signature);
    let signed_by = |key: &x509_parser::x509::SubjectPublicKeyInfo<'_>| {
        x509_parser::verify::verify_signature(key, &algorithm, &signature, &tbs).is_ok()
    };
    let by_issuer = signed_by(issuer.public_key());
    let by_delegate = || {
        basic.certs.iter().flatten().any(|responder| {
            let Ok(responder) = responder.to_der() else {
                return false;
            };
            let Ok((_, responder)) = X509Certificate::from_der(&responder) else {
                return false;
            };
            let for_ocsp = responder
                .extended_key_usage()
                .ok()
                .flatten()
                .is_some_and(|eku| eku.value.ocsp_signing);
            for_ocsp
                && responder
                    .verify_signature(Some(issuer.public_key()))
                    .is_ok()
                && responder.validity().is_valid()
                && signed_by(responder.public_key())
        })
    };
    if !by_issuer && !by_delegate() {
        return Err(
            "the OCSP answer is not signed by the certificate's issuer: do not trust it".into(),
        );
    }

    let name_hash = Sha1::digest(issuer.subject().as_raw());
    let key_hash = Sha1::digest(&issuer.public_key().subject_public_key.data);
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|single| {
            single.cert_id.serial_number.as_bytes() == serial_der
                && single.cert_id.issuer_name_hash.as_bytes() == name_hash.as_slice()
                && single.cert_id.issuer_key_hash.as_bytes() == key_hash.as_slice()
        })
        .ok_or("the OCSP answer is about another certificate")?;
    let seconds = |time: &x509_ocsp::OcspGeneralizedTime| {
        i64::try_from(time.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    // The same leeway relying parties give for clocks a little apart.
    const SKEW: i64 = 300;
    if seconds(&single.this_update) > now + SKEW {
        return Err("the OCSP answer is from the future: check the clocks".into());
    }
    if let Some(next_update) = &single.next_update
        && seconds(next_update) + SKEW < now
    {
        return Err("the OCSP answer is stale (past its nextUpdate)".into());
    }
    Ok(match &single.cert_status {
        x509_ocsp::CertStatus::Good(_) => OcspStatus::Good,
        x509_ocsp::CertStatus::Unknown(_) => OcspStatus::Unknown,
        x509_ocsp::CertStatus::Revoked(info) => OcspStatus::Revoked {
            at: seconds(&info.revocation_time),
            reason: info
                .revocation_reason
                .map(|reason| crate::ca::reason_name(reason as u8).to_owned()),
        },
    })
}
