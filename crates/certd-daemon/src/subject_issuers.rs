//! The outside identity providers whose users' tokens certd accepts as
//! subject tokens in a token exchange (RFC 8693): `[[token_exchange.
//! subject_issuer]]` sections, checked, and the verification of their
//! tokens: signature by the issuer's published keys (`jwks`), `iss`, one
//! of the accepted audiences, an allowed algorithm, `exp`/`nbf` against
//! the injected clock with the configured skew, and a subject. Owns which
//! claims are carried over (an allow-list per issuer, never certd's own
//! claims). Decides nothing about who may act for whom (`policy`), and
//! never sees HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::jwks::{IssuerKeys, JwksUrlSettings, KeyFileError, KeySources};

/// Longest subject token read.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest subject (`sub`) carried.
const MAX_SUBJECT_LEN: usize = 255;
/// Most claims one issuer may carry over.
const MAX_CARRIED_CLAIMS: usize = 16;
/// How often a JWKS URL is fetched again by default.
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Clock difference allowed on `exp` and `nbf` by default.
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// One `[[token_exchange.subject_issuer]]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectIssuerSection {
    /// The `iss` of the users' tokens.
    pub issuer: Option<String>,
    /// Audiences whose user tokens may be exchanged: the services that
    /// receive users' tokens (the gateway). A token must name the caller
    /// that exchanges it, and that name must be one of these.
    pub audiences: Option<Vec<String>>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub jwks_url_ca_file: Option<PathBuf>,
    pub jwks_refresh: Option<String>,
    /// "ES256", "RS256" (default: both).
    pub algorithms: Option<Vec<String>>,
    pub clock_skew: Option<String>,
    /// Claims of the user token copied into exchanged tokens (besides
    /// `sub`): e.g. "email", "groups".
    pub claims: Option<Vec<String>>,
}

/// A trusted subject issuer, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectIssuerSettings {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySources,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    pub claims: Vec<String>,
}

/// Why a subject issuer's section is not valid: the field and why.
#[derive(Debug, thiserror::Error)]
#[error("token_exchange.subject_issuer[{index}].{field}: {message}")]
pub struct SectionError {
    pub index: usize,
    pub field: &'static str,
    pub message: String,
}

/// Checks the sections; `base_dir` resolves relative paths.
pub fn settings(
    sections: &[SubjectIssuerSection],
    base_dir: Option<&Path>,
) -> Result<Vec<SubjectIssuerSettings>, SectionError> {
    let mut checked: Vec<SubjectIssuerSettings> = Vec::with_capacity(sections.len());
    for (index, section) in sections.iter().enumerate() {
        let invalid = |field: &'static str, message: String| SectionError {
            index,
            field,
            message,
        };
        let issuer = section.issuer.clone().unwrap_or_default();
        crate::policy::grants::check_issuer(&issuer).map_err(|m| invalid("issuer", m))?;
        if checked.iter().any(|other| other.issuer == issuer) {
            return Err(invalid("issuer", format!("{issuer} is configured twice")));
        }
        let audiences = section.audiences.clone().unwrap_or_default();
        if audiences.is_empty() {
            return Err(invalid(
                "audiences",
                "name the audiences a user token must carry one of (the gateway, or certd)".into(),
            ));
        }
        for audience in &audiences {
            crate::jwt::check_audience(audience).map_err(|m| invalid("audiences", m))?;
        }
        let resolve = |path: &PathBuf| match base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.clone(),
        };
        let jwks_url = match &section.jwks_url {
            None => None,
            Some(url) => Some(JwksUrlSettings {
                url: crate::jwks::check_jwks_url(url).map_err(|m| invalid("jwks_url", m))?,
                ca_file: section.jwks_url_ca_file.as_ref().map(resolve),
                token_file: None,
                refresh: match &section.jwks_refresh {
                    None => DEFAULT_JWKS_REFRESH,
                    Some(text) => humantime::parse_duration(text.trim())
                        .ok()
                        .filter(|d| {
                            (Duration::from_secs(30)..=Duration::from_secs(24 * 3600)).contains(d)
                        })
                        .ok_or_else(|| {
                            invalid(
                                "jwks_refresh",
                                format!("{text:?} is not a duration between 30s and 24h"),
                            )
                        })?,
                },
            }),
        };
        let jwks_file = section.jwks_file.as_ref().map(resolve);
        if jwks_file.is_none() && jwks_url.is_none() {
            return Err(invalid(
                "jwks_file",
                "set jwks_file or jwks_url: certd needs the issuer's public keys".into(),
            ));
        }
        let algorithms = match &section.algorithms {
            None => vec![Algorithm::ES256, Algorithm::RS256],
            Some(names) if names.is_empty() => {
                return Err(invalid("algorithms", "name at least one".into()));
            }
            Some(names) => names
                .iter()
                .map(|name| match name.as_str() {
                    "ES256" => Ok(Algorithm::ES256),
                    "RS256" => Ok(Algorithm::RS256),
                    other => Err(invalid(
                        "algorithms",
                        format!("{other:?} is not supported: ES256 or RS256"),
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        let clock_skew = match &section.clock_skew {
            None => DEFAULT_CLOCK_SKEW,
            Some(text) => humantime::parse_duration(text.trim())
                .ok()
                .filter(|d| *d <= Duration::from_secs(300))
                .ok_or_else(|| {
                    invalid(
                        "clock_skew",
                        format!("{text:?} is not a duration of at most 5m"),
                    )
                })?,
        };
        let claims = section.claims.clone().unwrap_or_default();
        if claims.len() > MAX_CARRIED_CLAIMS {
            return Err(invalid(
                "claims",
                format!("at most {MAX_CARRIED_CLAIMS} claims are carried over"),
            ));
        }
        for claim in &claims {
            if crate::jwt::ACCESS_TOKEN_CLAIMS.contains(&claim.as_str()) {
                return Err(invalid(
                    "claims",
                    format!("{claim:?} is set by certd itself and never carried over"),
                ));
            }
            if claim.is_empty()
                || claim.len() > 64
                || !claim
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
            {
                return Err(invalid("claims", format!("{claim:?} is not a claim name")));
            }
        }
        checked.push(SubjectIssuerSettings {
            issuer,
            audiences,
            keys: KeySources {
                jwks_file,
                public_key_files: Vec::new(),
                jwks_url,
            },
            algorithms,
            clock_skew,
            claims,
        });
    }
    Ok(checked)
}

/// Why a subject token was refused. Never quotes the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubjectTokenError {
    #[error("the subject token is not a JWT: {0}")]
    Malformed(String),
    #[error("the subject token's issuer {0:?} is not a trusted subject issuer")]
    UntrustedIssuer(String),
    #[error("the subject token is signed with {0}, which its issuer is not trusted with")]
    Algorithm(String),
    #[error("no key of {0} verifies the subject token's signature")]
    BadSignature(String),
    #[error("the subject token has expired")]
    Expired,
    #[error("the subject token is not valid yet (nbf)")]
    NotYetValid,
    #[error(
        "the subject token is not for the caller: its audience must name the caller (its service or SPIFFE ID), and be one of those accepted from {0}"
    )]
    WrongAudience(String),
    #[error(
        "the subject token's subject looks like a SPIFFE ID: an outside issuer's user is never a workload of this trust domain"
    )]
    SpiffeSubject,
    #[error("the subject token has no usable {0} claim")]
    MissingClaim(&'static str),
}

/// A user the subject token proved.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub issuer: String,
    pub subject: String,
    pub expires_at: i64,
    /// `scope` (space-separated) or `scp`: sorted, distinct.
    pub scopes: Vec<String>,
    /// The allow-listed claims it carries.
    pub carried: serde_json::Map<String, serde_json::Value>,
}

/// The trusted subject issuers, with their keys.
#[derive(Debug, Clone, Default)]
pub struct SubjectIssuers {
    issuers: Arc<Vec<TrustedIssuer>>,
}

#[derive(Debug)]
struct TrustedIssuer {
    settings: SubjectIssuerSettings,
    keys: Arc<IssuerKeys>,
}

impl SubjectIssuers {
    /// Reads each issuer's key files (a URL is fetched by `prepare`).
    pub fn load(settings: &[SubjectIssuerSettings]) -> Result<Self, KeyFileError> {
        let issuers = settings
            .iter()
            .map(|settings| {
                Ok(TrustedIssuer {
                    keys: Arc::new(IssuerKeys::load(
                        settings.keys.clone(),
                        format!("subject issuer {}", settings.issuer),
                    )?),
                    settings: settings.clone(),
                })
            })
            .collect::<Result<Vec<_>, KeyFileError>>()?;
        Ok(SubjectIssuers {
            issuers: Arc::new(issuers),
        })
    }

    /// Whether `issuer` is trusted.
    pub fn trusts(&self, issuer: &str) -> bool {
        self.issuer(issuer).is_some()
    }

    fn issuer(&self, issuer: &str) -> Option<&TrustedIssuer> {
        self.issuers.iter().find(|i| i.settings.issuer == issuer)
    }

    /// The claims carried over from `issuer`'s tokens.
    pub fn carried_claims(&self, issuer: &str) -> &[String] {
        self.issuer(issuer)
            .map_or(&[], |issuer| issuer.settings.claims.as_slice())
    }

    /// Fetches each issuer's JWKS URL once before serving; a failure is
    /// logged, and retried by `maintain`.
    pub async fn prepare(&self) {
        for issuer in self.issuers.iter().filter(|i| i.keys.fetches_keys()) {
            match issuer.keys.refresh_from_url().await {
                Ok(keys) => {
                    tracing::info!(keys, issuer = %issuer.settings.issuer, "fetched a subject issuer's JWKS");
                }
                Err(error) => tracing::error!(
                    error = %crate::error_kind::with_causes(&error),
                    "cannot fetch a subject issuer's JWKS; its users' tokens are refused until it is fetched"
                ),
            }
        }
    }

    /// The keys fetched from a JWKS URL, each to be kept fresh by a task
    /// of its own (`IssuerKeys::keep_fresh`).
    pub fn fetched_keys(&self) -> Vec<Arc<IssuerKeys>> {
        self.issuers
            .iter()
            .filter(|issuer| issuer.keys.fetches_keys())
            .map(|issuer| issuer.keys.clone())
            .collect()
    }

    /// Whether `token` names a trusted issuer as `iss` (unverified): the
    /// token is then theirs to verify, not certd's.
    pub fn claims_issuer(&self, token: &str) -> Option<String> {
        let claims = unverified_claims(token).ok()?;
        let issuer = claims.get("iss")?.as_str()?;
        self.trusts(issuer).then(|| issuer.to_owned())
    }

    /// Verifies a user token of a trusted issuer at `now`, for the caller
    /// known by `caller_names` (its SPIFFE ID and service): its audience
    /// must name the caller and be one the issuer's section accepts.
    pub fn verify(
        &self,
        token: &str,
        caller_names: &[&str],
        now: i64,
    ) -> Result<Subject, SubjectTokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(SubjectTokenError::Malformed("longer than 16 KiB".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| SubjectTokenError::Malformed("no valid JWS header".into()))?;
        let claimed = unverified_claims(token)?;
        let issuer_name = claimed
            .get("iss")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let issuer = self.issuer(issuer_name).ok_or_else(|| {
            SubjectTokenError::UntrustedIssuer(issuer_name.chars().take(128).collect())
        })?;
        let settings = &issuer.settings;
        if !settings.algorithms.contains(&header.alg) {
            return Err(SubjectTokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        // Times are checked below, against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let mut verified = None;
        for key in issuer.keys.candidates(header.alg, header.kid.as_deref()) {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                Err(error)
                    if *error.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {}
                Err(error) => {
                    return Err(SubjectTokenError::Malformed(format!("{:?}", error.kind())));
                }
            }
        }
        let claims =
            verified.ok_or_else(|| SubjectTokenError::BadSignature(settings.issuer.clone()))?;
        subject_of(settings, claims, caller_names, now)
    }
}

/// The checked subject of verified `claims`.
fn subject_of(
    settings: &SubjectIssuerSettings,
    claims: serde_json::Map<String, serde_json::Value>,
    caller_names: &[&str],
    now: i64,
) -> Result<Subject, SubjectTokenError> {
    let skew = i64::try_from(settings.clock_skew.as_secs()).unwrap_or(0);
    let expires_at = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or(SubjectTokenError::MissingClaim("exp"))?;
    if expires_at.saturating_add(skew) <= now {
        return Err(SubjectTokenError::Expired);
    }
    if let Some(not_before) = claims.get("nbf") {
        match not_before.as_i64() {
            Some(not_before) if not_before.saturating_sub(skew) <= now => {}
            Some(_) => return Err(SubjectTokenError::NotYetValid),
            None => return Err(SubjectTokenError::MissingClaim("nbf")),
        }
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(serde_json::Value::String(one)) => vec![one.as_str()],
        Some(serde_json::Value::Array(many)) => many.iter().filter_map(|a| a.as_str()).collect(),
        _ => Vec::new(),
    };
    // A token meant for another service is not this caller's to exchange.
    let for_caller = |audience: &&str| {
        caller_names.contains(audience) && settings.audiences.iter().any(|a| a == audience)
    };
    if !audiences.iter().any(for_caller) {
        return Err(SubjectTokenError::WrongAudience(settings.issuer.clone()));
    }
    let subject = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .filter(|s| {
            !s.is_empty() && s.len() <= MAX_SUBJECT_LEN && s.chars().all(|c| !c.is_control())
        })
        .ok_or(SubjectTokenError::MissingClaim("sub"))?
        .to_owned();
    // Else a user could pass for a workload wherever `sub` is read alone.
    if subject
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
    {
        return Err(SubjectTokenError::SpiffeSubject);
    }
    let scopes = token_scopes(&claims);
    let carried = settings
        .claims
        .iter()
        .filter_map(|name| Some((name.clone(), claims.get(name)?.clone())))
        .collect();
    Ok(Subject {
        issuer: settings.issuer.clone(),
        subject,
        // A token is never carried past its own end, skew or not.
        expires_at,
        scopes,
        carried,
    })
}

/// A token's scopes: `scope` (RFC 8693 §4.2, space-separated) or `scp`
/// (a list, as some identity providers write it); sorted, distinct; any
/// that is not a valid scope token is dropped.
pub fn token_scopes(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let listed: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(scopes)), _) => {
            scopes.split(' ').map(str::to_owned).collect()
        }
        (_, Some(serde_json::Value::Array(scopes))) => scopes
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        (_, Some(serde_json::Value::String(scopes))) => {
            scopes.split(' ').map(str::to_owned).collect()
        }
        _ => Vec::new(),
    };
    let valid: std::collections::BTreeSet<String> = listed
        .into_iter()
        .filter(|s| crate::policy::grants::check_scopes(std::slice::from_ref(s)).is_ok())
        .collect();
    valid.into_iter().collect()
}

/// The payload of a compact JWS, not verified: only to find which
/// issuer's keys verify it.
fn unverified_claims(
    token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, SubjectTokenError> {
    use base64::Engine;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| SubjectTokenError::Malformed("not a compact JWS".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| SubjectTokenError::Malformed("its payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| SubjectTokenError::Malformed("its payload is not a JSON object".into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::k8s_issuer::{es256, jwks, now};

    const IDP: &str = "https://idp.example";
    /// The caller's names: the gateway's SPIFFE ID and service.
    const GATEWAY: [&str; 2] = ["spiffe://certd.internal/svc/gateway", "gateway"];

    struct Idp {
        dir: tempfile::TempDir,
        key: rcgen::KeyPair,
        issuers: SubjectIssuers,
    }

    fn idp(claims: &[&str]) -> Idp {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwks(&[&key])).unwrap();
        let section = SubjectIssuerSection {
            issuer: Some(IDP.into()),
            audiences: Some(vec!["gateway".into()]),
            jwks_file: Some("jwks.json".into()),
            claims: Some(claims.iter().map(|c| (*c).to_owned()).collect()),
            ..SubjectIssuerSection::default()
        };
        let checked = settings(&[section], Some(dir.path())).unwrap();
        let issuers = SubjectIssuers::load(&checked).unwrap();
        Idp { dir, key, issuers }
    }

    fn user() -> serde_json::Value {
        json!({
            "iss": IDP, "sub": "alice", "aud": "gateway", "exp": now() + 600, "iat": now(),
            "scope": "payments:charge orders:read", "email": "alice@example.com",
            "groups": ["buyers"], "role": "admin",
        })
    }

    #[test]
    fn a_user_token_of_a_trusted_issuer_gives_its_subject_scopes_and_allowed_claims() {
        let idp = idp(&["email", "groups"]);
        let token = es256(&idp.key, &user());
        assert_eq!(idp.issuers.claims_issuer(&token).as_deref(), Some(IDP));
        let subject = idp.issuers.verify(&token, &GATEWAY, now()).unwrap();
        assert_eq!(subject.subject, "alice");
        assert_eq!(subject.scopes, ["orders:read", "payments:charge"]);
        assert_eq!(subject.carried["email"], "alice@example.com");
        assert!(!subject.carried.contains_key("role"), "not allow-listed");
        assert!(idp.dir.path().exists());
    }

    #[test]
    fn each_way_a_user_token_can_be_wrong_is_refused() {
        let idp = idp(&[]);
        let with = |field: &str, value: serde_json::Value| {
            let mut claims = user();
            claims[field] = value;
            es256(&idp.key, &claims)
        };
        let refused = |token: &str| idp.issuers.verify(token, &GATEWAY, now()).unwrap_err();
        assert_eq!(
            refused(&with("exp", json!(now() - 60))),
            SubjectTokenError::Expired
        );
        assert!(matches!(
            refused(&with("aud", json!("payments"))),
            SubjectTokenError::WrongAudience(_)
        ));
        assert!(matches!(
            refused(&with("iss", json!("https://evil.example"))),
            SubjectTokenError::UntrustedIssuer(_)
        ));
        let stranger = rcgen::KeyPair::generate().unwrap();
        assert!(matches!(
            refused(&es256(&stranger, &user())),
            SubjectTokenError::BadSignature(_)
        ));
        assert!(matches!(
            refused("not.a.token"),
            SubjectTokenError::Malformed(_)
        ));
        assert!(matches!(
            refused(&with("sub", json!(""))),
            SubjectTokenError::MissingClaim("sub")
        ));
        assert_eq!(
            refused(&with("sub", json!("SPIFFE://certd.internal/svc/payroll"))),
            SubjectTokenError::SpiffeSubject
        );
        // Meant for the gateway: not for orders to exchange, even if
        // orders were an accepted audience.
        let token = es256(&idp.key, &user());
        assert!(matches!(
            idp.issuers.verify(
                &token,
                &["spiffe://certd.internal/svc/orders", "orders"],
                now()
            ),
            Err(SubjectTokenError::WrongAudience(_))
        ));
        // Times at the edges of i64 never overflow.
        assert!(matches!(
            refused(&with("exp", json!(i64::MIN))),
            SubjectTokenError::Expired | SubjectTokenError::Malformed(_)
        ));
        assert_eq!(
            refused(&with("nbf", json!(i64::MAX))),
            SubjectTokenError::NotYetValid
        );
        assert!(
            idp.issuers
                .verify(&with("exp", json!(i64::MAX)), &GATEWAY, now())
                .is_ok()
        );
    }

    #[test]
    fn a_section_that_would_carry_certds_own_claims_is_refused() {
        let section = SubjectIssuerSection {
            issuer: Some(IDP.into()),
            audiences: Some(vec!["gateway".into()]),
            jwks_file: Some("jwks.json".into()),
            claims: Some(vec!["act".into()]),
            ..SubjectIssuerSection::default()
        };
        let error = settings(&[section], None).unwrap_err().to_string();
        assert!(error.contains("claims: \"act\" is set by certd"), "{error}");
        let no_keys = SubjectIssuerSection {
            issuer: Some(IDP.into()),
            audiences: Some(vec!["gateway".into()]),
            ..SubjectIssuerSection::default()
        };
        assert!(settings(&[no_keys], None).is_err());
    }

    #[test]
    fn hostile_subject_tokens_never_panic() {
        let idp = idp(&["email"]);
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        for round in 0..2000 {
            let text: String = (0..round % 300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b"eyJ.-_AZaz09="[(seed >> 33) as usize % 13])
                })
                .collect();
            let _ = idp.issuers.verify(&text, &GATEWAY, now());
            let _ = idp.issuers.claims_issuer(&text);
        }
    }
}
