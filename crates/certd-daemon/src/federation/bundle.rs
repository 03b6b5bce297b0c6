//! What a foreign bundle must be to be accepted: a SPIFFE bundle (the
//! SPIFFE Trust Domain and Bundle standard, a JWKS) of bounded size whose
//! `x509-svid` keys each carry one CA certificate in `x5c` (none naming
//! another trust domain) and whose `jwt-svid` keys carry a `kid`; keys of
//! another `use` are ignored, as the standard asks. Read as hostile input:
//! it comes from another organisation's server.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::FederationError;
use crate::identity::TrustDomain;
use crate::model::ForeignBundle;

/// Largest bundle document accepted; real ones are a few KiB.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Most keys one bundle may hold.
const MAX_KEYS: usize = 1000;

/// A bundle that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBundle {
    /// The X.509 roots (DER), in the document's order.
    pub roots_der: Vec<Vec<u8>>,
    /// The JWT-SVID keys, as the document has them.
    pub jwt_keys: Vec<serde_json::Value>,
    /// `spiffe_sequence`; 0 when absent.
    pub sequence: u64,
    pub refresh_hint: Option<u64>,
    /// The document, as given.
    pub json: String,
}

impl ParsedBundle {
    pub fn into_foreign(self, accepted_at: i64) -> ForeignBundle {
        ForeignBundle {
            sequence: self.sequence,
            refresh_hint: self.refresh_hint,
            json: self.json,
            accepted_at,
        }
    }
}

/// Checks `bytes` as `trust_domain`'s SPIFFE bundle.
pub fn parse_bundle(
    bytes: &[u8],
    trust_domain: &TrustDomain,
) -> Result<ParsedBundle, FederationError> {
    let malformed = |reason: String| FederationError::Malformed {
        trust_domain: trust_domain.to_string(),
        reason,
    };
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(malformed(format!(
            "{} bytes, more than {MAX_BUNDLE_BYTES}",
            bytes.len()
        )));
    }
    let json = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8".into()))?;
    let document: serde_json::Value =
        serde_json::from_str(json).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let object = document
        .as_object()
        .ok_or_else(|| malformed("not a JSON object".into()))?;
    let keys = object
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| malformed("no \"keys\" array".into()))?;
    if keys.len() > MAX_KEYS {
        return Err(malformed(format!("more than {MAX_KEYS} keys")));
    }
    let optional_number = |name: &str| match object.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| malformed(format!("{name} is not a non-negative integer"))),
    };
    let sequence = optional_number("spiffe_sequence")?.unwrap_or(0);
    let refresh_hint = optional_number("spiffe_refresh_hint")?;
    let mut roots_der = Vec::new();
    let mut jwt_keys = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let at = |reason: &str| malformed(format!("key {index}: {reason}"));
        let key_object = key.as_object().ok_or_else(|| at("not an object"))?;
        if !key_object
            .get("kty")
            .is_some_and(serde_json::Value::is_string)
        {
            return Err(at("no kty"));
        }
        match key_object.get("use").and_then(serde_json::Value::as_str) {
            Some("x509-svid") => {
                let chain = key_object
                    .get("x5c")
                    .and_then(serde_json::Value::as_array)
                    .filter(|chain| chain.len() == 1)
                    .ok_or_else(|| at("an x509-svid key needs exactly one x5c certificate"))?;
                let der = chain[0]
                    .as_str()
                    .and_then(|text| STANDARD.decode(text).ok())
                    .ok_or_else(|| at("x5c is not base64"))?;
                check_root(&der, trust_domain).map_err(|error| match error {
                    RootProblem::Malformed(reason) => at(&reason),
                    RootProblem::OtherTrustDomain(found) => FederationError::WrongTrustDomain {
                        trust_domain: trust_domain.to_string(),
                        found,
                    },
                })?;
                roots_der.push(der);
            }
            Some("jwt-svid") => {
                if key_object
                    .get("kid")
                    .and_then(serde_json::Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(at("a jwt-svid key needs a kid"));
                }
                jwt_keys.push(key.clone());
            }
            // The standard: entries of a use one does not know are ignored.
            _ => {}
        }
    }
    if roots_der.is_empty() && jwt_keys.is_empty() {
        return Err(malformed("no x509-svid or jwt-svid key".into()));
    }
    Ok(ParsedBundle {
        roots_der,
        jwt_keys,
        sequence,
        refresh_hint,
        json: json.to_owned(),
    })
}

/// A bundle an operator gives (`--trust-bundle-file`): a SPIFFE bundle
/// (JSON), or the roots as PEM certificates (a peer's `bundle.pem`), which
/// become a bundle of sequence 0 so the first fetched one replaces it.
pub fn parse_trust_bundle_file(
    text: &str,
    trust_domain: &TrustDomain,
) -> Result<ParsedBundle, FederationError> {
    if text.trim_start().starts_with('{') {
        return parse_bundle(text.as_bytes(), trust_domain);
    }
    let malformed = |reason: String| FederationError::Malformed {
        trust_domain: trust_domain.to_string(),
        reason,
    };
    let roots = pem_certificates(text).map_err(malformed)?;
    let keys: Vec<serde_json::Value> = roots
        .iter()
        .map(|der| {
            crate::jwt::x509_svid_key(der)
                .ok_or_else(|| malformed("a root's key is neither ECDSA nor Ed25519".into()))
        })
        .collect::<Result<_, _>>()?;
    let document = serde_json::json!({ "keys": keys, "spiffe_sequence": 0 });
    parse_bundle(document.to_string().as_bytes(), trust_domain)
}

/// Concatenated DER certificates (as the Workload API and certd's agents
/// carry roots), one by one; `None` if any does not parse.
pub fn split_certificates(mut der: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut certificates = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).ok()?;
        let length = der.len() - rest.len();
        certificates.push(der.get(..length)?.to_vec());
        der = rest;
    }
    Some(certificates)
}

/// Certificates (DER) as PEM.
pub fn certificates_pem(certificates: &[Vec<u8>]) -> String {
    let mut pem = String::new();
    for der in certificates {
        let body = STANDARD.encode(der);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// The certificates (DER) of a PEM text; an error for bad PEM.
pub(crate) fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|certificate| {
            certificate
                .map(|der| der.to_vec())
                .map_err(|e| format!("bad PEM: {e}"))
        })
        .collect()
}

enum RootProblem {
    Malformed(String),
    OtherTrustDomain(String),
}

/// A root must be a CA certificate; a SPIFFE ID it carries (SPIFFE CAs name
/// their trust domain) must be of `trust_domain`.
fn check_root(der: &[u8], trust_domain: &TrustDomain) -> Result<(), RootProblem> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| RootProblem::Malformed("x5c is not an X.509 certificate".into()))?;
    if !certificate.is_ca() {
        return Err(RootProblem::Malformed(
            "an x509-svid key's certificate is not a CA".into(),
        ));
    }
    if let Ok(Some(names)) = certificate.subject_alternative_name() {
        for name in &names.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && let Some(rest) = uri.strip_prefix("spiffe://")
            {
                let found = rest.split('/').next().unwrap_or_default();
                if found != trust_domain.as_str() {
                    return Err(RootProblem::OtherTrustDomain(found.to_owned()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner() -> TrustDomain {
        "partner.example".parse().unwrap()
    }

    /// A self-signed CA certificate naming `spiffe://<domain>`.
    fn root_of(domain: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.subject_alt_names = vec![rcgen::SanType::URI(
            format!("spiffe://{domain}").try_into().unwrap(),
        )];
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn bundle_of(root: &[u8], sequence: u64) -> String {
        let mut key = crate::jwt::x509_svid_key(root).unwrap();
        key["x5c"] = serde_json::json!([STANDARD.encode(root)]);
        serde_json::json!({
            "keys": [key, {"kty": "EC", "crv": "P-256", "use": "jwt-svid", "kid": "k1", "x": "AA", "y": "AA"},
                     {"kty": "EC", "use": "enc"}],
            "spiffe_sequence": sequence,
            "spiffe_refresh_hint": 60,
        })
        .to_string()
    }

    #[test]
    fn a_bundle_is_read_with_its_roots_keys_sequence_and_hint() {
        let root = root_of("partner.example");
        let parsed = parse_bundle(bundle_of(&root, 9).as_bytes(), &partner()).unwrap();
        assert_eq!(parsed.roots_der, vec![root]);
        assert_eq!(parsed.jwt_keys.len(), 1, "the enc key is ignored");
        assert_eq!((parsed.sequence, parsed.refresh_hint), (9, Some(60)));
    }

    #[test]
    fn a_bad_bundle_is_refused_with_the_reason() {
        let check = |bytes: &[u8], says: &str| {
            let error = parse_bundle(bytes, &partner()).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        };
        check(b"garbage", "not JSON");
        check(b"[]", "not a JSON object");
        check(br#"{"keys": 1}"#, "no \"keys\" array");
        check(br#"{"keys": []}"#, "no x509-svid or jwt-svid key");
        check(br#"{"keys": [{"use": "jwt-svid"}]}"#, "no kty");
        check(
            br#"{"keys": [{"kty": "EC", "use": "jwt-svid"}]}"#,
            "needs a kid",
        );
        check(
            br#"{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": []}]}"#,
            "exactly one x5c",
        );
        check(
            br#"{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["AAAA"]}]}"#,
            "not an X.509",
        );
        check(
            br#"{"keys": [{"kty":"EC","use":"jwt-svid","kid":"a"}], "spiffe_sequence": -1}"#,
            "spiffe_sequence is not",
        );
        check(&vec![b' '; MAX_BUNDLE_BYTES + 1], "more than");
        let other = bundle_of(&root_of("elsewhere.example"), 1);
        check(
            other.as_bytes(),
            "names trust domain elsewhere.example, not partner.example",
        );
    }

    #[test]
    fn concatenated_roots_split_and_become_pem_again() {
        let (first, second) = (root_of("partner.example"), root_of("partner.example"));
        let joined = [first.clone(), second.clone()].concat();
        let split = split_certificates(&joined).unwrap();
        assert_eq!(split, vec![first, second]);
        assert_eq!(pem_certificates(&certificates_pem(&split)).unwrap(), split);
        assert_eq!(split_certificates(b"garbage"), None);
    }

    #[test]
    fn pem_roots_become_a_bundle_of_sequence_zero() {
        let root = root_of("partner.example");
        let body = STANDARD.encode(&root);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        let parsed = parse_trust_bundle_file(&pem, &partner()).unwrap();
        assert_eq!(parsed.roots_der, vec![root]);
        assert_eq!(parsed.sequence, 0);
    }
}
