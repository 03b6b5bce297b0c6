//! JSON Web Signatures as ACME uses them (RFC 8555 §6.2, RFC 7515): the
//! flattened JSON serialization, a protected header with `alg`, `nonce`,
//! `url` and exactly one of `jwk` and `kid`, and the account keys certd
//! accepts (ES256, ES384, RS256 with at least 2048 bits, EdDSA on
//! Ed25519), verified with *ring*. Also JWK thumbprints (RFC 7638), which
//! key authorizations and the account-key index are made of.
//!
//! Everything here comes from the network: every failure is a
//! [`Problem`], never a panic.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::problem::{Problem, ProblemType};

/// The `alg` values certd accepts for account keys, as the directory and
/// `badSignatureAlgorithm` problems name them.
pub const ACCOUNT_KEY_ALGORITHMS: [&str; 4] = ["ES256", "ES384", "RS256", "EdDSA"];

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// A JWS as received: its parts, still encoded where the signature covers
/// them, and the protected header read.
#[derive(Debug, Clone)]
pub struct Jws {
    protected_b64: String,
    payload_b64: String,
    signature: Vec<u8>,
    pub header: ProtectedHeader,
    /// The payload, decoded; empty for POST-as-GET.
    pub payload: Vec<u8>,
}

/// The protected header's members certd reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ProtectedHeader {
    pub alg: String,
    pub nonce: Option<String>,
    pub url: Option<String>,
    pub jwk: Option<serde_json::Value>,
    pub kid: Option<String>,
    /// Extensions the signer says must be understood (RFC 7515 §4.1.11):
    /// certd understands none, so any is refused.
    pub crit: Option<serde_json::Value>,
}

/// The flattened serialization; anything else (the general one's
/// `signatures`, an unprotected `header`) is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

impl Jws {
    /// Parses a request body. Checks form only; [`Jws::verify`] checks the
    /// signature.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        let flattened: Flattened = serde_json::from_slice(body).map_err(|error| {
            Problem::malformed(format!(
                "the body is not a JWS in flattened JSON form: {error}"
            ))
        })?;
        let protected = decode("protected", &flattened.protected)?;
        let header: ProtectedHeader = serde_json::from_slice(&protected)
            .map_err(|error| Problem::malformed(format!("the protected header: {error}")))?;
        if header.crit.is_some() {
            return Err(Problem::malformed(
                "the protected header has crit: certd understands no JWS extension (RFC 7515 §4.1.11)",
            ));
        }
        let payload = decode("payload", &flattened.payload)?;
        let signature = decode("signature", &flattened.signature)?;
        Ok(Jws {
            protected_b64: flattened.protected,
            payload_b64: flattened.payload,
            signature,
            header,
            payload,
        })
    }

    /// Which key signed it: the embedded `jwk` (new accounts, revocation by
    /// the certificate's key) or an account's URL (`kid`); exactly one.
    pub fn key_ref(&self) -> Result<KeyRef, Problem> {
        match (&self.header.jwk, &self.header.kid) {
            (Some(jwk), None) => Ok(KeyRef::Jwk(Jwk::from_value(jwk)?)),
            (None, Some(kid)) => Ok(KeyRef::Kid(kid.clone())),
            (Some(_), Some(_)) => Err(Problem::malformed(
                "the protected header has both jwk and kid; it must have exactly one",
            )),
            (None, None) => Err(Problem::malformed(
                "the protected header has neither jwk nor kid; it must have exactly one",
            )),
        }
    }

    /// Verifies the signature with `key`, which must be of `alg`'s kind.
    pub fn verify(&self, key: &Jwk) -> Result<(), Problem> {
        key.verify(&self.header.alg, &self.signing_input(), &self.signature)
    }

    /// Verifies an HMAC-SHA256 (`HS256`) signature: external account
    /// binding's inner JWS.
    pub fn verify_hs256(&self, key: &[u8]) -> Result<(), Problem> {
        if self.header.alg != "HS256" {
            return Err(Problem::new(
                ProblemType::BadSignatureAlgorithm,
                format!(
                    "the external account binding is signed with {:?}; certd accepts HS256",
                    self.header.alg
                ),
            ));
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        ring::hmac::verify(&key, &self.signing_input(), &self.signature).map_err(|_| {
            Problem::unauthorized("the external account binding's MAC does not verify")
        })
    }

    /// `payload` parsed as JSON of type `T`; a POST-as-GET (empty payload)
    /// is refused as malformed.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Problem> {
        serde_json::from_slice(&self.payload)
            .map_err(|error| Problem::malformed(format!("the payload: {error}")))
    }

    /// Whether this is a POST-as-GET (RFC 8555 §6.3): an empty payload.
    pub fn is_post_as_get(&self) -> bool {
        self.payload_b64.is_empty()
    }

    /// The payload exactly as sent (base64url), for comparisons the RFC
    /// makes on it (EAB: the payload is the outer JWS's key).
    pub fn payload_b64(&self) -> &str {
        &self.payload_b64
    }

    fn signing_input(&self) -> Vec<u8> {
        format!("{}.{}", self.protected_b64, self.payload_b64).into_bytes()
    }
}

/// Which key a JWS names.
#[derive(Debug, Clone)]
pub enum KeyRef {
    Jwk(Jwk),
    Kid(String),
}

/// A public key certd accepts for an account, checked once: the members a
/// thumbprint is made of, as the client sent them (base64url).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum Jwk {
    #[serde(rename = "EC")]
    Ec { crv: String, x: String, y: String },
    #[serde(rename = "RSA")]
    Rsa { n: String, e: String },
    #[serde(rename = "OKP")]
    Okp { crv: String, x: String },
}

impl Jwk {
    /// Reads a JWK, ignoring members a thumbprint does not cover (`kid`,
    /// `use`, `alg`), and checks its key.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, Problem> {
        let text = |name: &str| -> Result<String, Problem> {
            value
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad_key(format!("the JWK has no {name:?} string")))
        };
        let jwk = match text("kty")?.as_str() {
            "EC" => Jwk::Ec {
                crv: text("crv")?,
                x: text("x")?,
                y: text("y")?,
            },
            "RSA" => Jwk::Rsa {
                n: text("n")?,
                e: text("e")?,
            },
            "OKP" => Jwk::Okp {
                crv: text("crv")?,
                x: text("x")?,
            },
            other => {
                return Err(bad_key(format!(
                    "a JWK of type {other:?}; certd accepts EC (P-256, P-384), RSA (2048 bits or more) and OKP (Ed25519)"
                )));
            }
        };
        jwk.check()?;
        Ok(jwk)
    }

    /// Checks the key's form: a known curve, coordinates of its length, an
    /// RSA modulus of at least 2048 bits.
    fn check(&self) -> Result<(), Problem> {
        match self {
            Jwk::Ec { crv, x, y } => {
                let len = match crv.as_str() {
                    "P-256" => 32,
                    "P-384" => 48,
                    other => return Err(bad_key(format!("an EC key on curve {other:?}"))),
                };
                if key_bytes("x", x)?.len() != len || key_bytes("y", y)?.len() != len {
                    return Err(bad_key(format!("{crv} coordinates must be {len} bytes")));
                }
            }
            Jwk::Rsa { n, e } => {
                let modulus = key_bytes("n", n)?;
                // RFC 7518 §6.3.1: the shortest encoding. With leading
                // zeros allowed, one key would have many JWKs, and as many
                // thumbprints (and accounts).
                if modulus.first() == Some(&0) || key_bytes("e", e)?.first() == Some(&0) {
                    return Err(bad_key(
                        "an RSA key whose n or e has leading zero bytes (RFC 7518 §6.3.1)".into(),
                    ));
                }
                let modulus = modulus.as_slice();
                if modulus.len() < MIN_RSA_MODULUS_BYTES {
                    return Err(bad_key(format!(
                        "an RSA key of {} bits; certd accepts 2048 bits or more",
                        modulus.len() * 8
                    )));
                }
                if key_bytes("e", e)?.is_empty() {
                    return Err(bad_key("an RSA key without an exponent".into()));
                }
            }
            Jwk::Okp { crv, x } => {
                if crv != "Ed25519" {
                    return Err(bad_key(format!(
                        "an OKP key on curve {crv:?}; certd accepts Ed25519"
                    )));
                }
                if key_bytes("x", x)?.len() != 32 {
                    return Err(bad_key("an Ed25519 key must be 32 bytes".into()));
                }
            }
        }
        Ok(())
    }

    /// The JWK thumbprint (RFC 7638): SHA-256 of the required members in
    /// lexicographic order without whitespace, base64url.
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            Jwk::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            Jwk::Okp { crv, x } => format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The JWK as JSON (the outer key an EAB's payload must equal).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Whether this is the public key of a certificate's
    /// subjectPublicKeyInfo (`spki`, DER): revocation signed by the
    /// certificate's own key.
    pub fn is_key_of(&self, spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> bool {
        use x509_parser::public_key::PublicKey;
        let bits = &spki.subject_public_key.data;
        match (self, spki.parsed()) {
            (Jwk::Ec { x, y, .. }, Ok(PublicKey::EC(_))) => {
                let (Ok(x), Ok(y)) = (key_bytes("x", x), key_bytes("y", y)) else {
                    return false;
                };
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                bits.as_ref() == point.as_slice()
            }
            (Jwk::Rsa { n, e }, Ok(PublicKey::RSA(rsa))) => {
                let (Ok(n), Ok(e)) = (key_bytes("n", n), key_bytes("e", e)) else {
                    return false;
                };
                strip_leading_zeros(&n) == strip_leading_zeros(rsa.modulus)
                    && strip_leading_zeros(&e) == strip_leading_zeros(rsa.exponent)
            }
            (Jwk::Okp { x, .. }, _) => {
                spki.algorithm.algorithm.to_id_string() == "1.3.101.112"
                    && key_bytes("x", x).is_ok_and(|x| bits.as_ref() == x.as_slice())
            }
            _ => false,
        }
    }

    /// Verifies `signature` over `message` with this key under `alg`.
    fn verify(&self, alg: &str, message: &[u8], signature: &[u8]) -> Result<(), Problem> {
        use ring::signature::{
            ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256,
            RsaPublicKeyComponents, UnparsedPublicKey,
        };
        if !ACCOUNT_KEY_ALGORITHMS.contains(&alg) {
            return Err(Problem::new(
                ProblemType::BadSignatureAlgorithm,
                format!(
                    "the JWS is signed with {alg:?}; certd accepts {}",
                    ACCOUNT_KEY_ALGORITHMS.join(", ")
                ),
            ));
        }
        let mismatch = || {
            Problem::new(
                ProblemType::BadSignatureAlgorithm,
                format!("alg {alg} does not go with the account key's type"),
            )
        };
        let verified = match (self, alg) {
            (Jwk::Ec { crv, x, y }, "ES256" | "ES384") => {
                let algorithm = match (crv.as_str(), alg) {
                    ("P-256", "ES256") => &ECDSA_P256_SHA256_FIXED,
                    ("P-384", "ES384") => &ECDSA_P384_SHA384_FIXED,
                    _ => return Err(mismatch()),
                };
                let mut point = vec![0x04];
                point.extend_from_slice(&key_bytes("x", x)?);
                point.extend_from_slice(&key_bytes("y", y)?);
                UnparsedPublicKey::new(algorithm, point).verify(message, signature)
            }
            (Jwk::Rsa { n, e }, "RS256") => RsaPublicKeyComponents {
                n: key_bytes("n", n)?,
                e: key_bytes("e", e)?,
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature),
            (Jwk::Okp { x, .. }, "EdDSA") => {
                UnparsedPublicKey::new(&ED25519, key_bytes("x", x)?).verify(message, signature)
            }
            _ => return Err(mismatch()),
        };
        verified.map_err(|_| Problem::malformed("the JWS signature does not verify"))
    }
}

fn bad_key(detail: String) -> Problem {
    Problem::new(ProblemType::BadPublicKey, detail)
}

fn key_bytes(member: &str, value: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| bad_key(format!("the JWK's {member:?} is not base64url")))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Decodes a base64url part of a JWS (no padding, as RFC 7515 requires).
fn decode(part: &str, value: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| Problem::malformed(format!("the JWS {part} is not base64url")))
}

/// base64url without padding, as every ACME field is written.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads base64url (a CSR, a certificate); `what` names it in the refusal.
pub fn unb64(what: &str, value: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| Problem::malformed(format!("{what} is not base64url")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    /// A client's account key (P-256) and how it signs, for tests.
    pub(crate) struct TestKey {
        pub signing: EcdsaKeyPair,
        pub jwk: serde_json::Value,
    }

    impl TestKey {
        pub(crate) fn new() -> Self {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let signing =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            let point = signing.public_key().as_ref().to_vec();
            let jwk = serde_json::json!({
                "kty": "EC",
                "crv": "P-256",
                "x": b64(&point[1..33]),
                "y": b64(&point[33..]),
            });
            TestKey { signing, jwk }
        }

        /// A flattened JWS of `payload` (`None`: POST-as-GET) with
        /// `header` (alg is added).
        pub(crate) fn sign(&self, mut header: serde_json::Value, payload: Option<&str>) -> String {
            header["alg"] = "ES256".into();
            let protected = b64(header.to_string().as_bytes());
            let payload = payload.map(|p| b64(p.as_bytes())).unwrap_or_default();
            let rng = ring::rand::SystemRandom::new();
            let signature = self
                .signing
                .sign(&rng, format!("{protected}.{payload}").as_bytes())
                .unwrap();
            serde_json::json!({
                "protected": protected,
                "payload": payload,
                "signature": b64(signature.as_ref()),
            })
            .to_string()
        }
    }

    fn check(body: &str, expected: Result<(), ProblemType>) {
        let outcome = Jws::parse(body.as_bytes()).and_then(|jws| match jws.key_ref()? {
            KeyRef::Jwk(key) => jws.verify(&key),
            KeyRef::Kid(_) => Ok(()),
        });
        assert_eq!(outcome.map_err(|problem| problem.kind), expected, "{body}");
    }

    #[test]
    fn a_signed_request_verifies_and_a_tampered_one_does_not() {
        let key = TestKey::new();
        let body = key.sign(
            serde_json::json!({"jwk": key.jwk, "nonce": "n", "url": "https://x/acme/new-account"}),
            Some("{}"),
        );
        check(&body, Ok(()));
        let mut tampered: serde_json::Value = serde_json::from_str(&body).unwrap();
        tampered["payload"] = b64(b"{\"a\":1}").into();
        check(&tampered.to_string(), Err(ProblemType::Malformed));
    }

    #[test]
    fn refusals_name_their_problem_type() {
        let key = TestKey::new();
        check("not json", Err(ProblemType::Malformed));
        check(
            r#"{"protected":"e30","payload":"","signature":"","header":{}}"#,
            Err(ProblemType::Malformed),
        );
        // Both jwk and kid.
        let both = key.sign(serde_json::json!({"jwk": key.jwk, "kid": "k"}), None);
        check(&both, Err(ProblemType::Malformed));
        // Neither.
        check(
            &key.sign(serde_json::json!({}), None),
            Err(ProblemType::Malformed),
        );
        // An algorithm certd does not take.
        let mut header: serde_json::Value = serde_json::json!({"jwk": key.jwk});
        header["alg"] = "HS256".into();
        let protected = b64(header.to_string().as_bytes());
        let body = format!(r#"{{"protected":"{protected}","payload":"","signature":"AAAA"}}"#);
        check(&body, Err(ProblemType::BadSignatureAlgorithm));
        // A key certd does not take.
        let small_rsa =
            serde_json::json!({"jwk": {"kty": "RSA", "n": b64(&[0xc1; 128]), "e": "AQAB"}});
        check(&key.sign(small_rsa, None), Err(ProblemType::BadPublicKey));
        // One key, one JWK: no leading zeros in n or e.
        let padded = [&[0u8][..], &[0xc1; 256]].concat();
        let zero_n = serde_json::json!({"jwk": {"kty": "RSA", "n": b64(&padded), "e": "AQAB"}});
        check(&key.sign(zero_n, None), Err(ProblemType::BadPublicKey));
        let zero_e =
            serde_json::json!({"jwk": {"kty": "RSA", "n": b64(&[0xc1; 256]), "e": "AAEAAQ"}});
        check(&key.sign(zero_e, None), Err(ProblemType::BadPublicKey));
        // An extension it must understand.
        let crit = serde_json::json!({"jwk": key.jwk, "crit": ["b64"], "b64": false});
        check(&key.sign(crit, None), Err(ProblemType::Malformed));
        let curve = serde_json::json!({"jwk": {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}});
        check(&key.sign(curve, None), Err(ProblemType::BadPublicKey));
    }

    #[test]
    fn thumbprints_match_rfc_7638s_example() {
        // RFC 7638 §3.1.
        let jwk = Jwk::from_value(&serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn hs256_verifies_with_the_key_only() {
        let key = b"0123456789abcdef0123456789abcdef";
        let protected = b64(br#"{"alg":"HS256","kid":"k","url":"u"}"#);
        let payload = b64(b"{}");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            format!("{protected}.{payload}").as_bytes(),
        );
        let body = format!(
            r#"{{"protected":"{protected}","payload":"{payload}","signature":"{}"}}"#,
            b64(tag.as_ref())
        );
        let jws = Jws::parse(body.as_bytes()).unwrap();
        assert!(jws.verify_hs256(key).is_ok());
        assert_eq!(
            jws.verify_hs256(b"another key").unwrap_err().kind,
            ProblemType::Unauthorized
        );
    }
}
