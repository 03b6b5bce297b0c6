//! PKCS#10 certification requests, parsed and checked once.
//!
//! A `ValidatedCsr` proves that the request is well formed, that its
//! signature verifies with its own key (proof of possession), and that the key
//! is of a kind certd accepts. It also lists what the request *asks for*
//! (names, CA powers) so that policy can refuse it; nothing it asks for is
//! ever copied into a certificate.

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

/// The largest CSR certd reads. Real CSRs are well under 2 KiB, even RSA 4096.
pub(crate) const MAX_CSR_LEN: usize = 16 * 1024;

/// RSA modulus sizes certd accepts, in bits.
pub(crate) const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// Why a CSR was refused before any policy was consulted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("CSR is empty")]
    Empty,
    #[error("CSR is {len} bytes, over the limit of {MAX_CSR_LEN}")]
    TooLarge { len: usize },
    #[error("CSR is not a DER-encoded PKCS#10 request: {0}")]
    Malformed(String),
    #[error("CSR has {0} bytes of trailing data")]
    TrailingData(usize),
    #[error("CSR signature does not verify with its public key")]
    BadSignature,
    #[error("CSR is signed with SHA-1, which certd does not accept")]
    WeakSignatureAlgorithm,
    #[error("CSR key type is not accepted ({0}); use ECDSA P-256/P-384, Ed25519 or RSA 2048-4096")]
    UnsupportedKey(String),
}

/// The kind of key a CSR carries, which decides the key usage bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa { bits: usize },
}

/// A name a CSR asks for, in the subject or the subjectAltName extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestedName {
    CommonName(String),
    Dns(String),
    Uri(String),
    /// IP addresses, e-mail addresses and every other kind of name: certd
    /// never grants them to workloads, so they only need to be named.
    Other(String),
}

impl std::fmt::Display for RequestedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestedName::CommonName(name) => write!(f, "CN={name}"),
            RequestedName::Dns(name) => write!(f, "DNS:{name}"),
            RequestedName::Uri(name) => write!(f, "URI:{name}"),
            RequestedName::Other(name) => f.write_str(name),
        }
    }
}

/// A subject public key certd accepts: its kind and its raw bits.
#[derive(Debug, Clone)]
pub struct SubjectPublicKey {
    kind: SubjectKeyKind,
    bits: Vec<u8>,
}

impl rcgen::PublicKeyData for SubjectPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// The algorithm whose identifier rcgen writes into the certificate's
    /// subjectPublicKeyInfo. For RSA every PKCS#1 variant writes the same
    /// rsaEncryption identifier.
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.kind {
            SubjectKeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            SubjectKeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            SubjectKeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            SubjectKeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// A CSR whose signature verified and whose key is acceptable.
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    public_key: SubjectPublicKey,
    key_kind: SubjectKeyKind,
    requested_names: Vec<RequestedName>,
    requests_ca: bool,
}

impl ValidatedCsr {
    /// Parses and checks a DER CSR. Never panics, whatever the bytes.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        if der.is_empty() {
            return Err(CsrError::Empty);
        }
        if der.len() > MAX_CSR_LEN {
            return Err(CsrError::TooLarge { len: der.len() });
        }
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::TrailingData(rest.len()));
        }
        let algorithm = &csr.signature_algorithm.algorithm;
        if *algorithm == OID_PKCS1_SHA1WITHRSA || *algorithm == OID_SHA1_WITH_RSA {
            return Err(CsrError::WeakSignatureAlgorithm);
        }
        let key_kind = subject_key_kind(&csr)?;
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let public_key = SubjectPublicKey {
            kind: key_kind,
            bits: csr
                .certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .to_vec(),
        };
        let (requested_names, requests_ca) = requested_names_and_powers(&csr)?;
        Ok(ValidatedCsr {
            public_key,
            key_kind,
            requested_names,
            requests_ca,
        })
    }

    pub fn public_key(&self) -> &SubjectPublicKey {
        &self.public_key
    }

    pub fn key_kind(&self) -> SubjectKeyKind {
        self.key_kind
    }

    /// Every name the request asks for, subject CN included.
    pub fn requested_names(&self) -> &[RequestedName] {
        &self.requested_names
    }

    /// Whether the request asks to be a CA (basicConstraints CA:TRUE, or the
    /// keyCertSign or cRLSign key usages).
    pub fn requests_ca(&self) -> bool {
        self.requests_ca
    }
}

fn subject_key_kind(csr: &X509CertificationRequest<'_>) -> Result<SubjectKeyKind, CsrError> {
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::UnsupportedKey("EC key without a named curve".into()))?;
        if curve == OID_EC_P256 {
            Ok(SubjectKeyKind::EcdsaP256)
        } else if curve == OID_NIST_EC_P384 {
            Ok(SubjectKeyKind::EcdsaP384)
        } else {
            Err(CsrError::UnsupportedKey(format!("EC curve {curve}")))
        }
    } else if *algorithm == OID_SIG_ED25519 {
        Ok(SubjectKeyKind::Ed25519)
    } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let bits = rsa_modulus_bits(&spki.subject_public_key.data)
            .ok_or_else(|| CsrError::UnsupportedKey("unreadable RSA key".into()))?;
        if RSA_BITS.contains(&bits) {
            Ok(SubjectKeyKind::Rsa { bits })
        } else {
            Err(CsrError::UnsupportedKey(format!("RSA {bits} bits")))
        }
    } else {
        Err(CsrError::UnsupportedKey(format!("algorithm {algorithm}")))
    }
}

/// The size of an RSA modulus in bits, from an RSAPublicKey structure.
fn rsa_modulus_bits(rsa_public_key: &[u8]) -> Option<usize> {
    let (_, key) = x509_parser::public_key::RSAPublicKey::from_der(rsa_public_key).ok()?;
    let start = key.modulus.iter().position(|b| *b != 0)?;
    let modulus = &key.modulus[start..];
    Some(modulus.len() * 8 - modulus[0].leading_zeros() as usize)
}

fn requested_names_and_powers(
    csr: &X509CertificationRequest<'_>,
) -> Result<(Vec<RequestedName>, bool), CsrError> {
    let mut names = Vec::new();
    for common_name in csr.certification_request_info.subject.iter_common_name() {
        let value = common_name
            .as_str()
            .map_err(|_| CsrError::Malformed("subject CN is not a string".into()))?;
        names.push(RequestedName::CommonName(value.to_owned()));
    }
    let mut requests_ca = false;
    for extension in csr.requested_extensions().into_iter().flatten() {
        match extension {
            ParsedExtension::SubjectAlternativeName(san) => {
                names.extend(san.general_names.iter().map(requested_name));
            }
            ParsedExtension::BasicConstraints(constraints) => requests_ca |= constraints.ca,
            ParsedExtension::KeyUsage(usage) => {
                requests_ca |= usage.key_cert_sign() || usage.crl_sign();
            }
            ParsedExtension::UnsupportedExtension { .. } => {}
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::Malformed(format!(
                    "requested extension does not parse: {error}"
                )));
            }
            // Every other requested extension is ignored: the CA decides the
            // profile, so asking changes nothing.
            _ => {}
        }
    }
    Ok((names, requests_ca))
}

fn requested_name(name: &GeneralName<'_>) -> RequestedName {
    match name {
        GeneralName::DNSName(dns) => RequestedName::Dns((*dns).to_owned()),
        GeneralName::URI(uri) => RequestedName::Uri((*uri).to_owned()),
        GeneralName::IPAddress(bytes) => RequestedName::Other(format!("IP:{}", hex::encode(bytes))),
        GeneralName::RFC822Name(mail) => RequestedName::Other(format!("email:{mail}")),
        other => RequestedName::Other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
        PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    };

    use super::*;

    fn csr_der(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn params_with(names: &[&str], cn: Option<&str>) -> CertificateParams {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params
    }

    #[test]
    fn accepts_each_supported_key_type() {
        for (alg, kind) in [
            (&PKCS_ECDSA_P256_SHA256, SubjectKeyKind::EcdsaP256),
            (&PKCS_ECDSA_P384_SHA384, SubjectKeyKind::EcdsaP384),
            (&PKCS_ED25519, SubjectKeyKind::Ed25519),
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let csr = ValidatedCsr::from_der(&csr_der(&params_with(&[], None), &key)).unwrap();
            assert_eq!(csr.key_kind(), kind);
            assert!(csr.requested_names().is_empty());
        }
    }

    #[test]
    fn lists_requested_names() {
        let key = KeyPair::generate().unwrap();
        let params = params_with(&["a.example", "10.0.0.1"], Some("billing"));
        let csr = ValidatedCsr::from_der(&csr_der(&params, &key)).unwrap();
        let names: Vec<String> = csr
            .requested_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["CN=billing", "DNS:a.example", "IP:0a000001"]);
        assert!(!csr.requests_ca());
    }

    #[test]
    fn notices_requests_for_ca_powers() {
        let key = KeyPair::generate().unwrap();
        let mut params = params_with(&[], None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = ValidatedCsr::from_der(&csr_der(&params, &key)).unwrap();
        assert!(csr.requests_ca());
    }

    fn check_refused(der: &[u8], expected: CsrError) {
        assert_eq!(ValidatedCsr::from_der(der).unwrap_err(), expected);
    }

    #[test]
    fn refuses_bad_input_without_panicking() {
        let key = KeyPair::generate().unwrap();
        let good = csr_der(&params_with(&[], Some("billing")), &key);

        check_refused(&[], CsrError::Empty);
        check_refused(
            &vec![0x30; MAX_CSR_LEN + 1],
            CsrError::TooLarge {
                len: MAX_CSR_LEN + 1,
            },
        );
        let mut trailing = good.clone();
        trailing.push(0);
        check_refused(&trailing, CsrError::TrailingData(1));
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        check_refused(&tampered, CsrError::BadSignature);

        for len in 0..good.len() {
            assert!(ValidatedCsr::from_der(&good[..len]).is_err());
        }
        for byte in 0..=255u8 {
            let mut mutated = good.clone();
            mutated[good.len() / 2] = byte;
            let _ = ValidatedCsr::from_der(&mutated);
        }
    }
}
