//! JWT-SVIDs: short-lived signed tokens naming a workload's SPIFFE ID, for
//! hops where mTLS cannot reach (through an L7 load balancer, a queue, a
//! gateway), and the key sets verifiers fetch.
//!
//! Owns the token format (the SPIFFE JWT-SVID standard: compact JWS, header
//! `alg`, `kid`, `typ: JWT`; claims `sub`, `aud`, `exp`, `iat`, and `iss`
//! naming the issuer, which the standard allows and JWT middleware expects),
//! minting, verification, and the JSON of `/jwks.json`, the SPIFFE bundle
//! and OpenID Connect discovery. Keys come from `keys`. It decides nothing about *who* may get a
//! token for *which* audience: that is `authority`'s, from the entry. No
//! store, no network.

mod keys;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

pub use keys::{JwtAlgorithm, JwtKey, JwtKeys, KeyFileError, KeySchedule, PublicKeyParams};

use crate::identity::SpiffeId;

/// Longest token accepted for verification.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most audiences one token may name.
pub(crate) const MAX_AUDIENCES: usize = 16;
/// Longest audience.
pub(crate) const MAX_AUDIENCE_LEN: usize = 256;

/// Why a token is not valid, or could not be made. The message says which
/// check failed; it never includes the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's algorithm {0:?} is not accepted (only ES256, ES384 and RS256)")]
    Algorithm(String),
    #[error("the token's algorithm {alg} does not match its key {kid:?}")]
    AlgorithmMismatch { alg: String, kid: String },
    #[error(
        "the token's type {found:?} is not {expected} (a JWT-SVID is JWT, an access token at+jwt)"
    )]
    Type {
        found: String,
        expected: &'static str,
    },
    #[error("the token has no key id (kid)")]
    NoKeyId,
    #[error("the token's key {0:?} is not one of the trust domain's current JWT keys")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not for audience {0:?}")]
    WrongAudience(String),
    #[error("the token's subject {0:?} is not a SPIFFE ID")]
    BadSubject(String),
    #[error("{0}")]
    InvalidAudience(String),
    #[error("the token's issuer is {found:?}, not {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("the token does not grant scope {0:?}")]
    MissingScope(String),
    #[error("the token is not bound to a client certificate (no cnf.x5t#S256)")]
    NotBound,
    #[error("the token is bound to another client certificate")]
    BoundToAnotherCertificate,
}

impl JwtError {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            JwtError::InvalidAudience(_) => crate::ErrorKind::InvalidInput,
            _ => crate::ErrorKind::Unauthenticated,
        }
    }
}

/// Checks audiences a caller asks a token for: 1 to 16, each 1 to 256
/// printable ASCII characters without spaces.
pub(crate) fn check_audiences(audiences: &[String]) -> Result<(), JwtError> {
    if audiences.is_empty() || audiences.len() > MAX_AUDIENCES {
        return Err(JwtError::InvalidAudience(format!(
            "a token needs 1 to {MAX_AUDIENCES} audiences, got {}",
            audiences.len()
        )));
    }
    for audience in audiences {
        check_audience(audience).map_err(JwtError::InvalidAudience)?;
    }
    Ok(())
}

/// One audience: printable ASCII, no spaces, 1 to 256 characters.
pub(crate) fn check_audience(audience: &str) -> Result<(), String> {
    if audience.is_empty()
        || audience.len() > MAX_AUDIENCE_LEN
        || !audience.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "audience {:?} must be 1 to {MAX_AUDIENCE_LEN} printable characters without spaces",
            audience.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
}

/// Who signs certd's tokens, as relying parties name it: the `iss` of every
/// token, and where its keys are published. `{url}/.well-known/openid-configuration`
/// must reach certd's HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// `[jwt] issuer`, or else the public base URL.
    pub url: String,
    /// `/jwks.json` under the public base URL.
    pub jwks_uri: String,
    /// The OAuth token endpoint, on the TLS listener.
    pub token_endpoint: String,
}

impl Issuer {
    /// Token introspection (RFC 7662): the token endpoint's last path
    /// segment replaced by `introspect`.
    pub fn introspection_endpoint(&self) -> String {
        match self.token_endpoint.rsplit_once('/') {
            Some((base, _)) if base.contains("://") && base.len() > "https://".len() => {
                format!("{base}/introspect")
            }
            _ => format!("{}/introspect", self.token_endpoint),
        }
    }
}

/// The OpenID Connect discovery document (OpenID Connect Discovery 1.0
/// §3) of certd as a token issuer: what JWT middleware pointed at the
/// issuer reads to find the keys and check `iss` (PyJWT, `jose`, Kubernetes
/// serves the same set). certd signs tokens for services, not ID tokens for
/// users, so it is not a full OpenID provider: there is no
/// `authorization_endpoint`, and the algorithms listed are those of its
/// keys (RS256 only where configured), not OIDC's mandatory RS256.
/// `response_types_supported` and `subject_types_supported` say the least
/// the document's readers expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    pub response_types_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    pub claims_supported: Vec<&'static str>,
    pub token_endpoint: String,
    pub grant_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    /// The algorithms of client assertions (JWT-SVIDs): certd's keys'.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    /// RFC 7662 introspection, authenticated as the token endpoint is.
    pub introspection_endpoint: String,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    /// RFC 8705 §3.3: access tokens are bound to the client certificate.
    pub tls_client_certificate_bound_access_tokens: bool,
    /// Where the token endpoint checks client certificates (RFC 8705 §5):
    /// the same, since it is served on the TLS listener.
    pub mtls_endpoint_aliases: MtlsAliases,
}

/// RFC 8705 §5 `mtls_endpoint_aliases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MtlsAliases {
    pub token_endpoint: String,
    pub introspection_endpoint: String,
}

impl Issuer {
    /// Whether the issuer names no host a relying party can reach (the
    /// HTTP listener's wildcard address stood in for a public base URL).
    pub fn names_no_reachable_host(&self) -> bool {
        ["://0.0.0.0", "://[::]"]
            .iter()
            .any(|wildcard| self.url.contains(wildcard) || self.jwks_uri.contains(wildcard))
    }
}

impl Discovery {
    /// The document for `issuer`, listing the algorithms of the keys
    /// published at `now`.
    pub fn of(issuer: &Issuer, keys: &JwtKeys, now: i64) -> Self {
        let mut algorithms: Vec<&'static str> = Vec::new();
        for key in keys.published(now) {
            if !algorithms.contains(&key.algorithm.name()) {
                algorithms.push(key.algorithm.name());
            }
        }
        Discovery {
            issuer: issuer.url.clone(),
            jwks_uri: issuer.jwks_uri.clone(),
            response_types_supported: vec!["id_token"],
            subject_types_supported: vec!["public"],
            id_token_signing_alg_values_supported: algorithms.clone(),
            claims_supported: vec![
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "jti",
                "client_id",
                "scope",
                "cnf",
                "act",
                "subject_issuer",
            ],
            token_endpoint: issuer.token_endpoint.clone(),
            grant_types_supported: vec![
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ],
            // RFC 7591 §2 allows an absolute URI for a method not
            // registered yet: the SPIFFE draft's JWT-SVID assertion.
            token_endpoint_auth_methods_supported: vec![
                "tls_client_auth",
                "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
            ],
            token_endpoint_auth_signing_alg_values_supported: algorithms.clone(),
            introspection_endpoint: issuer.introspection_endpoint(),
            introspection_endpoint_auth_methods_supported: vec![
                "tls_client_auth",
                "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
            ],
            tls_client_certificate_bound_access_tokens: true,
            mtls_endpoint_aliases: MtlsAliases {
                token_endpoint: issuer.token_endpoint.clone(),
                introspection_endpoint: issuer.introspection_endpoint(),
            },
        }
    }
}

/// Which of certd's two kinds of token, told apart by the header's `typ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A JWT-SVID: an identity (`typ: JWT`; `JOSE` or none accepted).
    JwtSvid,
    /// An access token from the token endpoint: what its scopes allow at
    /// its audience (`typ: at+jwt`, RFC 9068).
    AccessToken,
}

impl TokenKind {
    fn typ(self) -> &'static str {
        match self {
            TokenKind::JwtSvid => "JWT",
            TokenKind::AccessToken => "at+jwt",
        }
    }

    /// Whether a header's `typ` (if any) is this kind's.
    fn is(self, typ: Option<&str>) -> bool {
        match self {
            TokenKind::JwtSvid => matches!(typ, None | Some("JWT" | "JOSE")),
            TokenKind::AccessToken => typ.is_some_and(|t| {
                t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
            }),
        }
    }
}

/// What a relying party requires of a verified token besides its
/// signature, audience and times.
#[derive(Debug, Clone, Copy, Default)]
pub struct Required<'a> {
    /// `iss` must be this.
    pub issuer: Option<&'a str>,
    /// Each must be in `scope`.
    pub scopes: &'a [String],
    /// The client certificate (DER) the caller presented: the token must
    /// be bound to it (RFC 8705 `cnf.x5t#S256`).
    pub bound_to: Option<&'a [u8]>,
}

impl VerifiedJwt {
    /// Checks the token against what the relying party requires.
    pub fn check(&self, required: &Required<'_>) -> Result<(), JwtError> {
        let text = |name: &str| self.claims.get(name).and_then(|v| v.as_str());
        if let Some(expected) = required.issuer {
            let found = text("iss").unwrap_or_default();
            if found != expected {
                return Err(JwtError::WrongIssuer {
                    expected: expected.to_owned(),
                    found: found.chars().take(256).collect(),
                });
            }
        }
        let granted: Vec<&str> = text("scope")
            .unwrap_or_default()
            .split(' ')
            .filter(|scope| !scope.is_empty())
            .collect();
        if let Some(missing) = required
            .scopes
            .iter()
            .find(|scope| scope.is_empty() || !granted.contains(&scope.as_str()))
        {
            return Err(JwtError::MissingScope(missing.clone()));
        }
        if let Some(certificate) = required.bound_to {
            let bound = self
                .claims
                .get("cnf")
                .and_then(|cnf| cnf.get("x5t#S256"))
                .and_then(|v| v.as_str())
                .ok_or(JwtError::NotBound)?;
            if bound != certificate_thumbprint(certificate) {
                return Err(JwtError::BoundToAnotherCertificate);
            }
        }
        Ok(())
    }
}

/// A minted token and when it expires.
#[derive(Debug, Clone)]
pub struct MintedJwt {
    pub token: String,
    pub expires_at: i64,
}

/// Signs a JWT-SVID for `subject` and `audiences` (checked by the caller),
/// valid from `now` for `ttl_seconds`, naming `issuer` as `iss` if given.
pub fn mint(
    keys: &JwtKeys,
    issuer: Option<&str>,
    subject: &SpiffeId,
    audiences: &[String],
    now: i64,
    ttl_seconds: i64,
) -> Result<MintedJwt, JwtError> {
    let claims = Claims {
        iss: issuer.map(str::to_owned),
        sub: subject.as_str().to_owned(),
        aud: audiences.to_vec(),
        exp: now + ttl_seconds,
        iat: now,
    };
    Ok(MintedJwt {
        token: sign(keys, now, TokenKind::JwtSvid, &claims)?,
        expires_at: claims.exp,
    })
}

/// Signs `claims` with the key that signs at `now`: compact JWS, header
/// `alg`, `kid` and `typ` (`kind`'s).
fn sign(
    keys: &JwtKeys,
    now: i64,
    kind: TokenKind,
    claims: &impl Serialize,
) -> Result<String, JwtError> {
    let key = keys.signing_key(now);
    let mut header = jsonwebtoken::Header::new(key.algorithm.jsonwebtoken());
    header.kid = Some(key.kid.clone());
    header.typ = Some(kind.typ().into());
    jsonwebtoken::encode(&header, claims, &key.encoding_key())
        .map_err(|e| JwtError::Malformed(format!("cannot sign: {e}")))
}

/// What the token endpoint puts in an access token besides the times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenClaims {
    pub issuer: String,
    /// The client: its SPIFFE ID, as `client_id` (and `sub`, unless the
    /// token is on a subject's behalf).
    pub client: SpiffeId,
    pub audience: String,
    /// Sorted, distinct; the `scope` claim (space-separated) when any.
    pub scopes: Vec<String>,
    /// base64url SHA-256 of the client certificate (RFC 8705 §3.1
    /// `cnf.x5t#S256`) when the client authenticated with it.
    pub certificate_thumbprint: Option<String>,
    /// Unique per token (`jti`).
    pub token_id: String,
    /// Set for a token exchanged on a subject's behalf (RFC 8693).
    pub on_behalf_of: Option<OnBehalfOf>,
}

/// The subject an exchanged token speaks for, and who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBehalfOf {
    /// `sub`: the subject token's subject.
    pub subject: String,
    /// `subject_issuer`: the issuer of the subject's original token.
    pub subject_issuer: String,
    /// `act` (RFC 8693 §4.1): the current actor outermost.
    pub act: serde_json::Value,
    /// The subject's claims carried over (the issuer's allow-list); never
    /// one of the claims above.
    pub carried: serde_json::Map<String, serde_json::Value>,
    /// The token expires no later than this (the subject token's `exp`).
    pub expires_at: i64,
}

/// The claims certd sets itself in an access token, and those relying
/// parties read as authority: never carried over from a subject token.
pub const ACCESS_TOKEN_CLAIMS: [&str; 16] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "scp",
    "cnf",
    "act",
    "may_act",
    "subject_issuer",
    "azp",
    "typ",
];

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: [&'a str; 1],
    exp: i64,
    iat: i64,
    jti: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a serde_json::Value>,
    #[serde(flatten)]
    carried: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
struct Confirmation<'a> {
    #[serde(rename = "x5t#S256")]
    x5t_s256: &'a str,
}

/// Signs an access token (RFC 9068: `typ: at+jwt`, so that no JWT-SVID
/// verifier takes it for an identity, nor the token endpoint for a client
/// assertion): `sub` the client's SPIFFE ID or the subject it acts for,
/// the same keys, plus `jti`, `client_id`, `scope` and, when
/// certificate-bound, `cnf`; valid from `now` for `ttl_seconds`, or until
/// the subject's token expires if sooner.
pub fn mint_access_token(
    keys: &JwtKeys,
    claims: &AccessTokenClaims,
    now: i64,
    ttl_seconds: i64,
) -> Result<MintedJwt, JwtError> {
    let delegated = claims.on_behalf_of.as_ref();
    let exp = match delegated {
        Some(on_behalf_of) => (now + ttl_seconds).min(on_behalf_of.expires_at),
        None => now + ttl_seconds,
    };
    if let Some(on_behalf_of) = delegated
        && let Some(name) = on_behalf_of
            .carried
            .keys()
            .find(|name| ACCESS_TOKEN_CLAIMS.contains(&name.as_str()))
    {
        return Err(JwtError::Malformed(format!(
            "claim {name:?} is certd's own, never carried over"
        )));
    }
    let body = AccessClaims {
        iss: &claims.issuer,
        sub: delegated.map_or(claims.client.as_str(), |d| d.subject.as_str()),
        aud: [&claims.audience],
        exp,
        iat: now,
        jti: &claims.token_id,
        client_id: claims.client.as_str(),
        scope: (!claims.scopes.is_empty()).then(|| claims.scopes.join(" ")),
        cnf: claims
            .certificate_thumbprint
            .as_deref()
            .map(|x5t_s256| Confirmation { x5t_s256 }),
        subject_issuer: delegated.map(|d| d.subject_issuer.as_str()),
        act: delegated.map(|d| &d.act),
        carried: delegated.map(|d| &d.carried),
    };
    Ok(MintedJwt {
        token: sign(keys, now, TokenKind::AccessToken, &body)?,
        expires_at: body.exp,
    })
}

/// The RFC 8705 thumbprint of a certificate: base64url (no padding) of the
/// SHA-256 of its DER.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
}

/// The first certificate (DER) of a PEM file: the client certificate a
/// token's binding is checked against.
pub fn first_certificate_der(pem: &[u8]) -> Option<Vec<u8>> {
    let mut reader = pem;
    rustls_pemfile::certs(&mut reader)
        .next()
        .and_then(Result::ok)
        .map(|der| der.to_vec())
}

/// A public JWT key as verifiers hold it (from `/jwks.json`): an EC key
/// (`crv`, `x`, `y`) or an RSA key (`n`, `e`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl PublicJwk {
    pub fn of(key: &JwtKey, key_use: &str) -> Self {
        let mut jwk = PublicJwk {
            kty: String::new(),
            kid: key.kid.clone(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            alg: (key_use == "sig").then(|| key.algorithm.name().into()),
            key_use: Some(key_use.into()),
        };
        match &key.public {
            PublicKeyParams::Ec { crv, x, y } => {
                jwk.kty = "EC".into();
                jwk.crv = Some((*crv).into());
                jwk.x = Some(x.clone());
                jwk.y = Some(y.clone());
            }
            PublicKeyParams::Rsa { n, e } => {
                jwk.kty = "RSA".into();
                jwk.n = Some(n.clone());
                jwk.e = Some(e.clone());
            }
        }
        jwk
    }

    /// The algorithm this key verifies, if certd accepts it: ES256 for a
    /// P-256 key, ES384 for P-384, RS256 for RSA. A token's `alg` must be
    /// this one (no algorithm confusion), and a key's own `alg`, if given,
    /// must agree.
    fn algorithm(&self) -> Option<JwtAlgorithm> {
        let algorithm = match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some("P-256")) if self.x.is_some() && self.y.is_some() => JwtAlgorithm::Es256,
            ("EC", Some("P-384")) if self.x.is_some() && self.y.is_some() => JwtAlgorithm::Es384,
            ("RSA", _) if self.n.is_some() && self.e.is_some() => JwtAlgorithm::Rs256,
            _ => return None,
        };
        match self.alg.as_deref() {
            Some(alg) if alg != algorithm.name() => None,
            _ => Some(algorithm),
        }
    }

    fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, jsonwebtoken::errors::Error> {
        match (&self.x, &self.y, &self.n, &self.e) {
            (Some(x), Some(y), _, _) => jsonwebtoken::DecodingKey::from_ec_components(x, y),
            (_, _, Some(n), Some(e)) => jsonwebtoken::DecodingKey::from_rsa_components(n, e),
            _ => Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into()),
        }
    }
}

/// A JWKS document: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<PublicJwk>,
}

impl JwkSet {
    /// The keys published at `now`, as `/jwks.json` serves them.
    pub fn published(keys: &JwtKeys, now: i64) -> Self {
        JwkSet {
            keys: keys
                .published(now)
                .iter()
                .map(|key| PublicJwk::of(key, "sig"))
                .collect(),
        }
    }

    /// Parses a JWKS, keeping the keys with a `kid` that verify an
    /// algorithm certd accepts (others cannot verify a JWT-SVID it
    /// accepts).
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct AnyKeys {
            keys: Vec<serde_json::Value>,
        }
        let any: AnyKeys =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        Ok(JwkSet {
            keys: any
                .keys
                .into_iter()
                .filter_map(|key| serde_json::from_value::<PublicJwk>(key).ok())
                .filter(|key| key.algorithm().is_some())
                // A SPIFFE bundle (federation) also holds its X.509 roots
                // (`use: x509-svid`): never a key for a token.
                .filter(|key| {
                    key.key_use
                        .as_deref()
                        .is_none_or(|usage| matches!(usage, "sig" | "jwt-svid"))
                })
                .collect(),
        })
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    /// The workload the token identifies: a JWT-SVID's `sub`, an access
    /// token's `client_id`.
    pub spiffe_id: SpiffeId,
    /// `sub`: the SPIFFE ID of a JWT-SVID or of a client's own access
    /// token; the subject (a user) of a token exchanged on its behalf.
    pub subject: String,
    pub expires_at: i64,
    pub audiences: Vec<String>,
    /// Every claim, for the Workload API's `ValidateJWTSVID` answer.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Verifies `token` for `audience` against `keys` at the system clock's
/// time (for a caller without a clock of its own; certd's parts call
/// `verify_at` with theirs):
/// size, form, ES256, ES384 or RS256 only, a known `kid` whose key is of
/// the token's algorithm, the signature, `exp` (no leeway:
/// tokens are minutes long), `nbf` if present, `aud` holding `audience`,
/// and `sub` a SPIFFE ID.
pub fn verify(token: &str, audience: &str, keys: &JwkSet) -> Result<VerifiedJwt, JwtError> {
    verify_at(
        token,
        audience,
        keys,
        crate::clock::Clock::unix_now(&crate::clock::SystemClock),
    )
}

/// `verify`, with the times checked against `now` (Unix seconds).
pub fn verify_at(
    token: &str,
    audience: &str,
    keys: &JwkSet,
    now: i64,
) -> Result<VerifiedJwt, JwtError> {
    verify_kind_at(token, TokenKind::JwtSvid, audience, keys, now)
}

/// `verify_at` for a token of `kind`: an access token is never a JWT-SVID,
/// nor the reverse.
pub fn verify_kind_at(
    token: &str,
    kind: TokenKind,
    audience: &str,
    keys: &JwkSet,
    now: i64,
) -> Result<VerifiedJwt, JwtError> {
    verify_for_any_at(token, kind, &[audience], keys, now)
}

/// `verify_kind_at` for a token whose `aud` must hold one of `audiences`
/// (a service's name and its SPIFFE ID, say): one signature check.
pub fn verify_for_any_at(
    token: &str,
    kind: TokenKind,
    audiences: &[&str],
    keys: &JwkSet,
    now: i64,
) -> Result<VerifiedJwt, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    // Checked by hand first, so that `alg: none` or HS256 is named as
    // such rather than reported as whatever the library trips on.
    let header = raw_header(token)?;
    let algorithm = header
        .get("alg")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let algorithm: JwtAlgorithm = algorithm
        .parse()
        .map_err(|_| JwtError::Algorithm(algorithm.chars().take(16).collect()))?;
    let typ = header
        .get("typ")
        .map(|t| t.as_str().unwrap_or("(not a string)"));
    if !kind.is(typ) {
        return Err(JwtError::Type {
            found: typ.unwrap_or("(none)").chars().take(32).collect(),
            expected: kind.typ(),
        });
    }
    let kid = header
        .get("kid")
        .and_then(|v| v.as_str())
        .ok_or(JwtError::NoKeyId)?;
    let key = keys
        .keys
        .iter()
        .find(|key| key.kid == kid)
        .ok_or_else(|| JwtError::UnknownKey(kid.chars().take(64).collect()))?;
    if key.algorithm() != Some(algorithm) {
        return Err(JwtError::AlgorithmMismatch {
            alg: algorithm.name().into(),
            kid: kid.chars().take(64).collect(),
        });
    }
    let decoding = key
        .decoding_key()
        .map_err(|e| JwtError::Malformed(format!("the key {kid:?} is not usable: {e}")))?;
    let mut validation = jsonwebtoken::Validation::new(algorithm.jsonwebtoken());
    validation.leeway = 0;
    // Times are checked below, against the injected clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        token,
        &decoding,
        &validation,
    )
    .map_err(|error| {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidAudience => JwtError::WrongAudience(audiences.join(" or ")),
            other => JwtError::Malformed(format!("{other:?}")),
        }
    })?;
    let claims = data.claims;
    let subject = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    // A JWT-SVID's subject is the workload; an access token names its
    // client apart, as `client_id`, since its subject may be a user.
    let workload = match kind {
        TokenKind::JwtSvid => subject,
        TokenKind::AccessToken => {
            if subject.is_empty() {
                return Err(JwtError::BadSubject(String::new()));
            }
            claims
                .get("client_id")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        }
    };
    let spiffe_id: SpiffeId = workload
        .parse()
        .map_err(|_| JwtError::BadSubject(workload.chars().take(128).collect()))?;
    let subject = subject.to_owned();
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        Some(serde_json::Value::Array(many)) => many
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let expires_at = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| JwtError::Malformed("exp is not a number".into()))?;
    if expires_at <= now {
        return Err(JwtError::Expired);
    }
    if let Some(not_before) = claims.get("nbf") {
        match not_before.as_i64() {
            Some(not_before) if not_before <= now => {}
            Some(_) => return Err(JwtError::NotYetValid),
            None => return Err(JwtError::Malformed("nbf is not a number".into())),
        }
    }
    Ok(VerifiedJwt {
        spiffe_id,
        subject,
        expires_at,
        audiences,
        claims,
    })
}

/// The trust domain a JWT-SVID's `sub` names, read without verifying
/// anything: only to choose which trust domain's keys to verify it with.
/// `None` if the token has no SPIFFE ID there.
pub fn claimed_trust_domain(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    let subject: SpiffeId = claims.get("sub")?.as_str()?.parse().ok()?;
    Some(subject.trust_domain().to_owned())
}

/// The token's header as JSON, without trusting anything in it.
fn raw_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "not three dot-separated parts (compact JWS)".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed("the header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object".into()))
}

/// The keys of this trust domain's SPIFFE trust bundle (the SPIFFE Trust
/// Domain and Bundle standard): the X.509 roots (`use: x509-svid`, with
/// `x5c`) and the published JWT keys (`use: jwt-svid`); and the lowest
/// `spiffe_sequence` the bundle may carry now, which grows with every JWT
/// key change and every root added (the bundle's stored sequence,
/// `Storage::bundle_sequence`, never goes below it, so a bundle served
/// before the sequence was stored is never followed by a lower one).
pub(crate) fn spiffe_bundle_keys(
    roots_der: &[&[u8]],
    keys: &JwtKeys,
    now: i64,
) -> (Vec<serde_json::Value>, u64) {
    let mut entries: Vec<serde_json::Value> = roots_der
        .iter()
        .filter_map(|der| x509_svid_key(der))
        .collect();
    entries.extend(keys.published(now).iter().map(|key| {
        serde_json::to_value(PublicJwk::of(key, "jwt-svid")).unwrap_or(serde_json::Value::Null)
    }));
    let added_roots = u64::try_from(roots_der.len().saturating_sub(1)).unwrap_or(0);
    (entries, keys.sequence(now) + added_roots)
}

/// The bundle document: `keys`, `spiffe_sequence`, `spiffe_refresh_hint`.
pub(crate) fn spiffe_bundle_json(
    keys: Vec<serde_json::Value>,
    sequence: u64,
    refresh_hint_seconds: u64,
) -> serde_json::Value {
    serde_json::json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint_seconds,
    })
}

/// A root certificate as a JWK with `use: x509-svid` and its `x5c`.
pub(crate) fn x509_svid_key(der: &[u8]) -> Option<serde_json::Value> {
    use x509_parser::public_key::PublicKey;
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let spki = certificate.public_key();
    let x5c = STANDARD.encode(der);
    match spki.parsed().ok()? {
        PublicKey::EC(point) => {
            let bytes = point.data();
            let coordinate_len = (bytes.len().checked_sub(1)?) / 2;
            let crv = match coordinate_len {
                32 => "P-256",
                48 => "P-384",
                _ => return None,
            };
            let (x, y) = bytes.get(1..)?.split_at(coordinate_len);
            Some(serde_json::json!({
                "kty": "EC", "crv": crv, "use": "x509-svid",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                "x5c": [x5c],
            }))
        }
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => Some(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "use": "x509-svid",
            "x": URL_SAFE_NO_PAD.encode(spki.subject_public_key.data.as_ref()),
            "x5c": [x5c],
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn schedule() -> KeySchedule {
        KeySchedule {
            rotation: Duration::from_secs(3600),
            publish_ahead: Duration::from_secs(60),
            max_ttl: Duration::from_secs(600),
        }
    }

    fn keys() -> JwtKeys {
        keys_of(JwtAlgorithm::Es256)
    }

    fn keys_of(algorithm: JwtAlgorithm) -> JwtKeys {
        JwtKeys::from_master(zeroize::Zeroizing::new([3; 32]), schedule(), algorithm)
    }

    fn now() -> i64 {
        crate::clock::unix_seconds(std::time::SystemTime::now())
    }

    fn subject() -> SpiffeId {
        "spiffe://certd.internal/svc/billing".parse().unwrap()
    }

    const ISSUER: &str = "https://certd.example";

    fn minted(audiences: &[&str], ttl: i64) -> String {
        let audiences: Vec<String> = audiences.iter().map(|a| a.to_string()).collect();
        mint(&keys(), Some(ISSUER), &subject(), &audiences, now(), ttl)
            .unwrap()
            .token
    }

    /// A token with this header and these claims, signed by the current key.
    fn forged(header: serde_json::Value, claims: serde_json::Value) -> String {
        let encode = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!("{}.{}", encode(&header), encode(&claims));
        let key = keys().signing_key(now());
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &key.encoding_key(),
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap();
        format!("{signing_input}.{signature}")
    }

    #[test]
    fn a_minted_token_is_a_jwt_svid_and_verifies() {
        let keys = keys();
        let token = minted(&["spiffe://certd.internal/svc/payments", "gateway"], 300);
        let header = raw_header(&token).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], keys.signing_key(now()).kid.as_str());
        let set = JwkSet::published(&keys, now());
        let verified = verify(&token, "gateway", &set).unwrap();
        assert_eq!(verified.spiffe_id, subject());
        let mut names: Vec<&String> = verified.claims.keys().collect();
        names.sort();
        assert_eq!(names, ["aud", "exp", "iat", "iss", "sub"], "nothing else");
        assert_eq!(verified.claims["iss"], ISSUER);
        assert!(verified.expires_at > now());
    }

    #[test]
    fn introspection_sits_beside_the_token_endpoint() {
        let issuer = |token_endpoint: &str| Issuer {
            url: ISSUER.into(),
            jwks_uri: format!("{ISSUER}/jwks.json"),
            token_endpoint: token_endpoint.into(),
        };
        for (token, introspect) in [
            (
                "https://localhost:8443/oauth/token",
                "https://localhost:8443/oauth/introspect",
            ),
            ("https://ca.example/token", "https://ca.example/introspect"),
            ("https://ca.example", "https://ca.example/introspect"),
        ] {
            assert_eq!(issuer(token).introspection_endpoint(), introspect);
        }
    }

    #[test]
    fn an_access_token_carries_its_scopes_and_binding_and_requirements_are_checked() {
        let keys = keys();
        let certificate = b"a client certificate's DER";
        let claims = AccessTokenClaims {
            issuer: ISSUER.into(),
            client: subject(),
            audience: "invoices".into(),
            scopes: vec!["invoices:create".into(), "invoices:read".into()],
            certificate_thumbprint: Some(certificate_thumbprint(certificate)),
            token_id: "0123".into(),
            on_behalf_of: None,
        };
        let access = mint_access_token(&keys, &claims, now(), 60).unwrap();
        assert_eq!(raw_header(&access.token).unwrap()["typ"], "at+jwt");
        let set = JwkSet::published(&keys, now());
        // An access token is no JWT-SVID, and a JWT-SVID no access token.
        assert!(matches!(
            verify_at(&access.token, "invoices", &set, now()),
            Err(JwtError::Type { .. })
        ));
        assert!(matches!(
            verify_kind_at(
                &minted(&["invoices"], 60),
                TokenKind::AccessToken,
                "invoices",
                &set,
                now()
            ),
            Err(JwtError::Type { .. })
        ));
        let verified = verify_kind_at(
            &access.token,
            TokenKind::AccessToken,
            "invoices",
            &set,
            now(),
        )
        .unwrap();
        assert_eq!(verified.claims["scope"], "invoices:create invoices:read");
        assert_eq!(verified.claims["client_id"], subject().as_str());
        assert_eq!(verified.claims["jti"], "0123");
        let scopes = ["invoices:read".to_owned()];
        let all = Required {
            issuer: Some(ISSUER),
            scopes: &scopes,
            bound_to: Some(certificate),
        };
        assert_eq!(verified.check(&all), Ok(()));
        let other_issuer = Required {
            issuer: Some("https://elsewhere"),
            ..Required::default()
        };
        assert!(matches!(
            verified.check(&other_issuer),
            Err(JwtError::WrongIssuer { .. })
        ));
        assert_eq!(verified.subject, subject().as_str());

        // On a user's behalf: `sub` is the user, `client_id` the actor, the
        // chain in `act`, and it ends no later than the user's token.
        let mut carried = serde_json::Map::new();
        carried.insert("email".into(), "alice@example.com".into());
        let exchanged = AccessTokenClaims {
            on_behalf_of: Some(OnBehalfOf {
                subject: "alice".into(),
                subject_issuer: "https://idp.example".into(),
                act: serde_json::json!({ "sub": subject().as_str() }),
                carried: carried.clone(),
                expires_at: now() + 30,
            }),
            ..claims.clone()
        };
        let on_behalf = mint_access_token(&keys, &exchanged, now(), 60).unwrap();
        assert_eq!(on_behalf.expires_at, now() + 30);
        let verified = verify_kind_at(
            &on_behalf.token,
            TokenKind::AccessToken,
            "invoices",
            &set,
            now(),
        )
        .unwrap();
        assert_eq!(
            (verified.subject.as_str(), &verified.spiffe_id),
            ("alice", &subject())
        );
        assert_eq!(verified.claims["act"]["sub"], subject().as_str());
        assert_eq!(verified.claims["subject_issuer"], "https://idp.example");
        assert_eq!(verified.claims["email"], "alice@example.com");
        carried.insert("scope".into(), "admin".into());
        let smuggled = AccessTokenClaims {
            on_behalf_of: Some(OnBehalfOf {
                carried,
                ..exchanged.on_behalf_of.clone().unwrap()
            }),
            ..claims.clone()
        };
        assert!(mint_access_token(&keys, &smuggled, now(), 60).is_err());

        let payroll = ["payroll:read".to_owned()];
        let missing = Required {
            scopes: &payroll,
            ..Required::default()
        };
        assert_eq!(
            verified.check(&missing),
            Err(JwtError::MissingScope("payroll:read".into()))
        );
        let another = Required {
            bound_to: Some(b"another certificate"),
            ..Required::default()
        };
        assert_eq!(
            verified.check(&another),
            Err(JwtError::BoundToAnotherCertificate)
        );
        let empty = [String::new()];
        let empty_scope = Required {
            scopes: &empty,
            ..Required::default()
        };
        assert!(
            verified.check(&empty_scope).is_err(),
            "an empty scope is never granted"
        );
        // A JWT-SVID is bound to nothing; expiry follows the given clock.
        let svid = minted(&["invoices"], 60);
        let plain = verify_at(&svid, "invoices", &set, now()).unwrap();
        let bound = Required {
            bound_to: Some(certificate),
            ..Required::default()
        };
        assert_eq!(plain.check(&bound), Err(JwtError::NotBound));
        assert_eq!(
            verify_at(&svid, "invoices", &set, now() + 60).unwrap_err(),
            JwtError::Expired
        );
    }

    #[test]
    fn es384_and_rs256_tokens_verify_and_no_key_verifies_another_algorithm() {
        let audiences = ["gateway".to_string()];
        let es256 = keys_of(JwtAlgorithm::Es256);
        let mut all = JwkSet::published(&es256, now());
        for algorithm in [JwtAlgorithm::Es384, JwtAlgorithm::Rs256] {
            let keys = keys_of(algorithm);
            let token = mint(&keys, Some(ISSUER), &subject(), &audiences, now(), 300)
                .unwrap()
                .token;
            assert_eq!(raw_header(&token).unwrap()["alg"], algorithm.name());
            let set = JwkSet::published(&keys, now());
            let published = &set.keys[0];
            assert_eq!(published.alg.as_deref(), Some(algorithm.name()));
            // Through JSON, as a verifier fetches it.
            let parsed = JwkSet::parse(&serde_json::to_vec(&set).unwrap()).unwrap();
            assert_eq!(parsed, set);
            let verified = verify(&token, "gateway", &parsed).unwrap();
            assert_eq!(verified.spiffe_id, subject());
            // An ES256 key set does not know this token's key.
            assert!(matches!(
                verify(&token, "gateway", &JwkSet::published(&es256, now())),
                Err(JwtError::UnknownKey(_))
            ));
            all.keys.extend(set.keys);
        }
        // A token whose header names another algorithm than its key's is
        // refused before its signature is looked at.
        let rsa_kid = keys_of(JwtAlgorithm::Rs256).signing_key(now()).kid.clone();
        let es256_key = es256.signing_key(now());
        let claims = serde_json::json!({
            "sub": subject().as_str(), "aud": ["gateway"], "exp": now() + 300
        });
        let header = serde_json::json!({"alg": "ES256", "kid": rsa_kid, "typ": "JWT"});
        let encode = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", encode(&header), encode(&claims));
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &es256_key.encoding_key(),
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap();
        assert!(matches!(
            verify(&format!("{input}.{signature}"), "gateway", &all),
            Err(JwtError::AlgorithmMismatch { .. })
        ));
        // RS512 and PS256 are not among certd's algorithms.
        for alg in ["RS512", "PS256", "ES512", "EdDSA"] {
            let header = serde_json::json!({"alg": alg, "kid": rsa_kid, "typ": "JWT"});
            let token = format!("{}.{}.sig", encode(&header), encode(&claims));
            assert!(
                matches!(verify(&token, "gateway", &all), Err(JwtError::Algorithm(_))),
                "{alg}"
            );
        }
        // A published key whose `alg` contradicts its type is dropped.
        let mut liar = all.keys[0].clone();
        liar.alg = Some("RS256".into());
        let json = serde_json::json!({ "keys": [liar] }).to_string();
        assert!(JwkSet::parse(json.as_bytes()).unwrap().keys.is_empty());
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        let set = JwkSet::published(&keys(), now());
        let kid = keys().signing_key(now()).kid.clone();
        let good_claims = serde_json::json!({
            "sub": "spiffe://certd.internal/svc/billing", "aud": ["gateway"],
            "exp": now() + 300, "iat": now()
        });
        let header = |alg: &str| serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "none", "kid": kid}).to_string()),
            URL_SAFE_NO_PAD.encode(good_claims.to_string())
        );
        let hs256 = jsonwebtoken::encode(
            &jsonwebtoken::Header {
                kid: Some(kid.clone()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
            },
            &good_claims,
            &jsonwebtoken::EncodingKey::from_secret(kid.as_bytes()),
        )
        .unwrap();
        let other_keys = JwtKeys::from_master(
            zeroize::Zeroizing::new([4; 32]),
            schedule(),
            JwtAlgorithm::Es256,
        );
        let unknown_key = mint(
            &other_keys,
            Some(ISSUER),
            &subject(),
            &["gateway".to_string()],
            now(),
            300,
        )
        .unwrap()
        .token;
        let mut tampered = minted(&["gateway"], 300);
        tampered.truncate(tampered.len() - 4);
        tampered.push_str("AAAA");
        let cases: Vec<(String, JwtError)> = vec![
            ("x".repeat(MAX_TOKEN_BYTES + 1), JwtError::TooLarge),
            ("not-a-token".into(), JwtError::Malformed(String::new())),
            ("%%%.a.b".into(), JwtError::Malformed(String::new())),
            (unsigned, JwtError::Algorithm("none".into())),
            (hs256, JwtError::Algorithm("HS256".into())),
            (unknown_key, JwtError::UnknownKey(String::new())),
            (tampered, JwtError::BadSignature),
            (minted(&["gateway"], -10), JwtError::Expired),
            (
                minted(&["other"], 300),
                JwtError::WrongAudience("gateway".into()),
            ),
            (
                forged(
                    header("ES256"),
                    serde_json::json!({"sub": "spiffe://certd.internal/svc/billing", "aud": ["gateway"], "exp": now() + 300, "nbf": now() + 100}),
                ),
                JwtError::NotYetValid,
            ),
            (
                forged(
                    header("ES256"),
                    serde_json::json!({"sub": "billing", "aud": ["gateway"], "exp": now() + 300}),
                ),
                JwtError::BadSubject("billing".into()),
            ),
            (
                forged(
                    serde_json::json!({"alg": "ES256", "typ": "JWT"}),
                    good_claims.clone(),
                ),
                JwtError::NoKeyId,
            ),
            (
                forged(
                    serde_json::json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"}),
                    good_claims.clone(),
                ),
                JwtError::Type {
                    found: "at+jwt".into(),
                    expected: "JWT",
                },
            ),
            (
                forged(
                    header("ES256"),
                    serde_json::json!({"sub": "spiffe://certd.internal/svc/billing", "aud": ["gateway"]}),
                ),
                JwtError::Malformed(String::new()),
            ),
        ];
        for (token, expected) in cases {
            let error = verify(&token, "gateway", &set).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&error),
                std::mem::discriminant(&expected),
                "{token:.60}: {error}"
            );
        }
        // The forged helper signs correctly: a forged good token verifies.
        assert!(verify(&forged(header("ES256"), good_claims), "gateway", &set).is_ok());
    }

    #[test]
    fn audiences_are_checked() {
        assert!(check_audiences(&["spiffe://td/svc/a".into(), "plain".into()]).is_ok());
        for bad in [
            vec![],
            vec!["a b".to_string()],
            vec![String::new()],
            vec!["x".repeat(300)],
        ] {
            assert!(check_audiences(&bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
        assert!(check_audiences(&many).is_err());
    }

    /// The trust domain a token claims is read from `sub` alone, before
    /// any check; anything that is not a SPIFFE ID there claims none.
    #[test]
    fn the_claimed_trust_domain_is_the_subjects() {
        assert_eq!(
            claimed_trust_domain(&minted(&["gateway"], 60)).as_deref(),
            Some("certd.internal")
        );
        let encode = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let with_subject = |sub: serde_json::Value| {
            format!(
                "{}.{}.sig",
                encode(serde_json::json!({"alg": "ES256"})),
                encode(serde_json::json!({ "sub": sub }))
            )
        };
        assert_eq!(
            claimed_trust_domain(&with_subject("spiffe://partner.example/svc/x".into())).as_deref(),
            Some("partner.example")
        );
        for sub in [serde_json::json!("billing"), serde_json::json!(7)] {
            assert_eq!(claimed_trust_domain(&with_subject(sub)), None);
        }
        assert_eq!(claimed_trust_domain("garbage"), None);
    }

    /// A SPIFFE bundle read as a key set gives its JWT keys only: its X.509
    /// roots never verify a token, even with a `kid`.
    #[test]
    fn a_spiffe_bundle_as_a_key_set_holds_only_its_jwt_keys() {
        let mut keys = JwkSet::published(&keys(), now());
        let jwt = serde_json::to_value(&keys.keys[0]).unwrap();
        let mut root = jwt.clone();
        root["use"] = "x509-svid".into();
        root["kid"] = "root".into();
        let mut svid_key = jwt.clone();
        svid_key["use"] = "jwt-svid".into();
        let document = serde_json::json!({"keys": [root, svid_key, jwt]});
        let parsed = JwkSet::parse(document.to_string().as_bytes()).unwrap();
        keys.keys.truncate(1);
        assert_eq!(parsed.keys.len(), 2);
        assert!(parsed.keys.iter().all(|key| key.kid == keys.keys[0].kid));
    }

    #[test]
    fn the_spiffe_bundle_holds_the_roots_and_the_jwt_keys() {
        let key = rcgen::KeyPair::generate().unwrap();
        let root = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (entries, floor) = spiffe_bundle_keys(&[root.der().as_ref()], &keys(), now());
        let bundle = spiffe_bundle_json(entries, floor, 300);
        let entries = bundle["keys"].as_array().unwrap();
        assert_eq!(entries[0]["use"], "x509-svid");
        assert_eq!(entries[0]["crv"], "P-256");
        assert_eq!(
            STANDARD
                .decode(entries[0]["x5c"][0].as_str().unwrap())
                .unwrap(),
            root.der().to_vec()
        );
        assert!(
            entries[1..]
                .iter()
                .all(|k| k["use"] == "jwt-svid" && k["kid"].is_string())
        );
        assert_eq!(bundle["spiffe_refresh_hint"], 300);
        assert!(bundle["spiffe_sequence"].as_u64().unwrap() > 0);
    }
}
