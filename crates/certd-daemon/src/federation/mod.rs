//! Federation with other trust domains (the SPIFFE Federation standard):
//! what a relationship is (`FederationSpec`, checked into a
//! `FederationRecord`), and what a foreign bundle must be to be accepted
//! (`bundle`). No store access and no audit: the authority decides and
//! records (`authority::federation`).

pub mod bundle;
pub mod fetch;
pub mod status;

use crate::identity::{SpiffeId, TrustDomain};
use crate::model::{EndpointProfile, FederationRecord, ForeignBundle};

pub use bundle::{ParsedBundle, parse_bundle, parse_trust_bundle_file};

/// Why a relationship or a foreign bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    #[error("{0:?} is not a trust domain (a DNS name such as partner.example)")]
    BadTrustDomain(String),
    #[error("{0} is certd's own trust domain: federate with other trust domains only")]
    OwnTrustDomain(String),
    #[error("bundle endpoint URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{0:?} is not a bundle endpoint profile: https_web or https_spiffe")]
    BadProfile(String),
    #[error(
        "the https_spiffe profile needs --endpoint-spiffe-id, the SPIFFE ID the bundle endpoint's server presents"
    )]
    MissingEndpointId,
    #[error("--endpoint-spiffe-id {id}: {reason}")]
    BadEndpointId { id: String, reason: String },
    #[error(
        "the https_spiffe profile needs --trust-bundle-file: the bundle that authenticates the endpoint's first answer (the peer's bundle.pem, or its SPIFFE bundle)"
    )]
    MissingTrustBundle,
    #[error("{0} takes only the https_spiffe profile")]
    OnlyForSpiffeProfile(&'static str),
    #[error("the endpoint CA: {0}")]
    BadEndpointCa(String),
    #[error("the bundle of {trust_domain} is malformed: {reason}")]
    Malformed {
        trust_domain: String,
        reason: String,
    },
    #[error("the bundle names trust domain {found}, not {trust_domain}")]
    WrongTrustDomain { trust_domain: String, found: String },
    #[error("no federation relationship with {0}")]
    NotFound(String),
    #[error("a federation relationship with {0} exists already; remove it first")]
    AlreadyExists(String),
}

impl FederationError {
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            FederationError::NotFound(_) => ErrorKind::NotFound,
            FederationError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// A relationship as an operator asks for it (`certd federation add`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationSpec {
    pub trust_domain: String,
    pub bundle_endpoint_url: String,
    /// `https_web` or `https_spiffe`.
    pub profile: String,
    /// `https_spiffe`: the SPIFFE ID the endpoint's server presents.
    pub endpoint_spiffe_id: Option<String>,
    /// `https_web`: the CA certificates (PEM) that issued the endpoint's
    /// certificate, when it is not a Web PKI one.
    pub endpoint_ca_pem: Option<String>,
    /// The foreign trust domain's bundle to start from: a SPIFFE bundle
    /// (JSON) or its roots (PEM). Needed for `https_spiffe`.
    pub trust_bundle: Option<String>,
}

/// Longest bundle endpoint URL accepted.
const MAX_URL_LEN: usize = 2048;

impl FederationSpec {
    /// The relationship this spec asks for, created at `now` by
    /// `created_by`, or why not.
    pub fn validate(
        &self,
        own: &TrustDomain,
        now: i64,
        created_by: &str,
    ) -> Result<FederationRecord, FederationError> {
        let trust_domain: TrustDomain = self
            .trust_domain
            .parse()
            .map_err(|_| FederationError::BadTrustDomain(self.trust_domain.clone()))?;
        if &trust_domain == own {
            return Err(FederationError::OwnTrustDomain(own.to_string()));
        }
        check_url(&self.bundle_endpoint_url)?;
        let profile = match self.profile.as_str() {
            "https_web" => {
                if self.endpoint_spiffe_id.is_some() {
                    return Err(FederationError::OnlyForSpiffeProfile(
                        "--endpoint-spiffe-id",
                    ));
                }
                let ca_pem = self
                    .endpoint_ca_pem
                    .as_deref()
                    .map(|pem| {
                        let certificates = bundle::pem_certificates(pem)
                            .map_err(FederationError::BadEndpointCa)?;
                        if certificates.is_empty() {
                            return Err(FederationError::BadEndpointCa(
                                "no PEM certificate in it".into(),
                            ));
                        }
                        Ok(pem.to_owned())
                    })
                    .transpose()?;
                EndpointProfile::HttpsWeb { ca_pem }
            }
            "https_spiffe" => {
                if self.endpoint_ca_pem.is_some() {
                    return Err(FederationError::BadEndpointCa(
                        "https_spiffe endpoints are authenticated by the trust bundle, not a CA file"
                            .into(),
                    ));
                }
                let id = self
                    .endpoint_spiffe_id
                    .as_deref()
                    .ok_or(FederationError::MissingEndpointId)?;
                let endpoint_id: SpiffeId =
                    id.parse().map_err(|_| FederationError::BadEndpointId {
                        id: id.to_owned(),
                        reason: "not a SPIFFE ID".into(),
                    })?;
                // Its bundle would be another trust domain's, which this
                // relationship does not hold.
                if endpoint_id.trust_domain() != trust_domain.as_str() {
                    return Err(FederationError::BadEndpointId {
                        id: id.to_owned(),
                        reason: format!("not in the trust domain {trust_domain}"),
                    });
                }
                if self.trust_bundle.is_none() {
                    return Err(FederationError::MissingTrustBundle);
                }
                EndpointProfile::HttpsSpiffe { endpoint_id }
            }
            other => return Err(FederationError::BadProfile(other.to_owned())),
        };
        let bundle = self
            .trust_bundle
            .as_deref()
            .map(|text| -> Result<ForeignBundle, FederationError> {
                let parsed = parse_trust_bundle_file(text, &trust_domain)?;
                Ok(parsed.into_foreign(now))
            })
            .transpose()?;
        Ok(FederationRecord {
            trust_domain,
            bundle_endpoint_url: self.bundle_endpoint_url.clone(),
            profile,
            created_at: now,
            created_by: created_by.to_owned(),
            bundle,
        })
    }
}

/// An `https://` URL with a host, at most 2 KiB, without user info or a
/// fragment.
fn check_url(url: &str) -> Result<(), FederationError> {
    let bad = |reason: &str| FederationError::BadUrl {
        url: url.chars().take(128).collect(),
        reason: reason.to_owned(),
    };
    if url.len() > MAX_URL_LEN {
        return Err(bad("longer than 2048 bytes"));
    }
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "not https://: both profiles of the standard are served over TLS",
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("user information is not allowed"));
    }
    if url.contains('#') {
        return Err(bad("a fragment is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> TrustDomain {
        "certd.internal".parse().unwrap()
    }

    fn spec() -> FederationSpec {
        FederationSpec {
            trust_domain: "partner.example".into(),
            bundle_endpoint_url: "https://bundle.partner.example/bundle.spiffe".into(),
            profile: "https_web".into(),
            ..FederationSpec::default()
        }
    }

    #[test]
    fn a_spec_is_refused_with_the_reason() {
        let check = |change: &dyn Fn(&mut FederationSpec), says: &str| {
            let mut spec = spec();
            change(&mut spec);
            let error = spec.validate(&own(), 1, "test").unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        };
        check(
            &|s| s.trust_domain = "Not A Domain".into(),
            "not a trust domain",
        );
        check(
            &|s| s.trust_domain = "certd.internal".into(),
            "own trust domain",
        );
        check(
            &|s| s.bundle_endpoint_url = "http://partner.example/b".into(),
            "not https://",
        );
        check(
            &|s| s.bundle_endpoint_url = "https://u:p@partner.example/b".into(),
            "user information",
        );
        check(
            &|s| s.profile = "https".into(),
            "not a bundle endpoint profile",
        );
        check(
            &|s| s.endpoint_ca_pem = Some("garbage".into()),
            "no PEM certificate",
        );
        check(
            &|s| s.endpoint_spiffe_id = Some("spiffe://partner.example/x".into()),
            "only the https_spiffe",
        );
        check(
            &|s| s.profile = "https_spiffe".into(),
            "--endpoint-spiffe-id",
        );
        check(
            &|s| {
                s.profile = "https_spiffe".into();
                s.endpoint_spiffe_id = Some("spiffe://elsewhere.example/spire/server".into());
            },
            "not in the trust domain partner.example",
        );
        check(
            &|s| {
                s.profile = "https_spiffe".into();
                s.endpoint_spiffe_id = Some("spiffe://partner.example/spire/server".into());
            },
            "--trust-bundle-file",
        );
        check(&|s| s.trust_bundle = Some("{}".into()), "malformed");
    }

    #[test]
    fn a_web_spec_becomes_a_relationship_without_a_bundle_yet() {
        let record = spec().validate(&own(), 7, "operator alice").unwrap();
        assert_eq!(record.trust_domain.as_str(), "partner.example");
        assert_eq!(record.profile, EndpointProfile::HttpsWeb { ca_pem: None });
        assert_eq!(
            (record.created_at, record.created_by.as_str()),
            (7, "operator alice")
        );
        assert_eq!(record.bundle, None);
    }
}
