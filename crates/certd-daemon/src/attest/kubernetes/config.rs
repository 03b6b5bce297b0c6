//! The Kubernetes attestor's configuration section: `[attestors.kubernetes]`,
//! or `[kubernetes]` as configurations have always written it. What serde
//! reads, its check, and its registration as a configurable attestor.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{JwksUrlSettings, KubernetesAttestor, KubernetesSettings};
use crate::attest::configured::{Configurable, SectionError, Settings};
use crate::attest::{Attestor, kind};
use crate::jwks::check_jwks_url;

/// Audience a service-account token must carry unless configured otherwise.
pub const DEFAULT_KUBERNETES_AUDIENCE: &str = "certd";
/// How often a JWKS URL is fetched again by default.
pub(crate) const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Clock difference allowed on a token's exp and nbf by default.
pub(crate) const DEFAULT_KUBERNETES_CLOCK_SKEW: Duration = Duration::from_secs(30);

pub(crate) static CONFIGURABLE: Configurable = Configurable {
    kind: kind::KUBERNETES,
    top_level_section: Some("kubernetes"),
    accepts: "Kubernetes service-account tokens",
    proves: "k8s",
    configure,
};

/// The section as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubernetesSection {
    /// The `iss` of the cluster's tokens, e.g.
    /// "https://kubernetes.default.svc.cluster.local".
    issuer: Option<String>,
    /// The audience tokens must be minted for (default "certd").
    audience: Option<String>,
    /// The issuer's JWKS (`kubectl get --raw /openid/v1/jwks`).
    jwks_file: Option<PathBuf>,
    /// PEM public keys (the API server's --service-account-key-file).
    public_key_files: Option<Vec<PathBuf>>,
    /// Fetch the issuer's JWKS from this https:// URL too.
    jwks_url: Option<String>,
    /// PEM roots for the JWKS URL's server (default: the Mozilla roots).
    jwks_url_ca_file: Option<PathBuf>,
    /// A file with a bearer token to send to the JWKS URL.
    jwks_url_token_file: Option<PathBuf>,
    /// How often the JWKS URL is fetched again (default "5m").
    jwks_refresh: Option<String>,
    /// Allowance for clock differences on exp and nbf (default "30s").
    clock_skew: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> SectionError {
    SectionError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn configure(
    section: toml::Table,
    base_dir: Option<&Path>,
) -> Result<Box<dyn Settings>, SectionError> {
    // The path names the key of a wrong value (`issuer: invalid type …`).
    let section: KubernetesSection = serde_path_to_error::deserialize(toml::Value::Table(section))
        .map_err(|error| {
            let field = error.path().to_string();
            let field = if field == "." { String::new() } else { field };
            invalid(&field, error.inner().message().to_owned())
        })?;
    Ok(Box::new(check(&section, base_dir)?))
}

fn check(
    section: &KubernetesSection,
    base_dir: Option<&Path>,
) -> Result<KubernetesSettings, SectionError> {
    let issuer = section.issuer.clone().unwrap_or_default();
    if issuer.is_empty() || !issuer.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "issuer",
            "must be the issuer (iss) of the cluster's service-account tokens",
        ));
    }
    let audience = section
        .audience
        .clone()
        .unwrap_or_else(|| DEFAULT_KUBERNETES_AUDIENCE.to_owned());
    if audience.is_empty() || !audience.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "audience",
            "must be a non-empty string without spaces",
        ));
    }
    let resolve = |path: &PathBuf| match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.clone(),
    };
    let jwks_file = section.jwks_file.as_ref().map(resolve);
    let public_key_files: Vec<PathBuf> = section
        .public_key_files
        .iter()
        .flatten()
        .map(resolve)
        .collect();
    let jwks_url = match &section.jwks_url {
        None => None,
        Some(url) => Some(JwksUrlSettings {
            url: check_jwks_url(url).map_err(|message| invalid("jwks_url", message))?,
            ca_file: section.jwks_url_ca_file.as_ref().map(resolve),
            token_file: section.jwks_url_token_file.as_ref().map(resolve),
            refresh: match &section.jwks_refresh {
                None => DEFAULT_JWKS_REFRESH,
                Some(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                    invalid(
                        "jwks_refresh",
                        format!("{text:?} is not a duration like 30m, 1h or 24h ({e})"),
                    )
                })?,
            },
        }),
    };
    if jwks_file.is_none() && public_key_files.is_empty() && jwks_url.is_none() {
        return Err(invalid(
            "jwks_file",
            "set jwks_file, public_key_files or jwks_url: certd needs the issuer's public keys",
        ));
    }
    if let Some(url) = &jwks_url
        && !(Duration::from_secs(30)..=Duration::from_secs(24 * 3600)).contains(&url.refresh)
    {
        return Err(invalid("jwks_refresh", "must be between 30s and 24h"));
    }
    let clock_skew = match &section.clock_skew {
        None => DEFAULT_KUBERNETES_CLOCK_SKEW,
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| invalid("clock_skew", format!("{text:?}: {e}")))?,
    };
    if clock_skew > Duration::from_secs(300) {
        return Err(invalid("clock_skew", "must be at most 5m"));
    }
    Ok(KubernetesSettings {
        issuer,
        audience,
        jwks_file,
        public_key_files,
        clock_skew,
        jwks_url,
    })
}

impl Settings for KubernetesSettings {
    fn start(&self) -> Result<Arc<dyn Attestor>, String> {
        KubernetesAttestor::load(self.clone())
            .map(|attestor| Arc::new(attestor) as Arc<dyn Attestor>)
            .map_err(|error| error.to_string())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn same_as(&self, other: &dyn Settings) -> bool {
        other.as_any().downcast_ref::<Self>() == Some(self)
    }
}
