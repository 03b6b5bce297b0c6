//! The Kubernetes issuer's keys: read from JWKS and PEM files (re-read
//! when they change) and fetched from a JWKS URL (kept fresh in the
//! background). Token checks live in the parent module.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{
    FETCH_RETRY_INTERVAL, KEY_RECHECK_INTERVAL, KubernetesAttestor, KubernetesSettings, lock,
};

/// Why the key files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot fetch the JWKS from {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("no RS256 or ES256 public key found in the configured key files")]
    NoKeys,
}

#[derive(Debug)]
pub(super) struct KeySet {
    keys: Arc<Vec<VerificationKey>>,
    /// Modification time and length of each key file when it was read.
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked_at: Instant,
}

pub(super) struct VerificationKey {
    pub(super) kid: Option<String>,
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerificationKey({:?}, {:?})", self.kid, self.algorithm)
    }
}

fn key_files(settings: &KubernetesSettings) -> impl Iterator<Item = &PathBuf> {
    settings.jwks_file.iter().chain(&settings.public_key_files)
}

pub(super) fn key_file_stamps(settings: &KubernetesSettings) -> Vec<Option<(SystemTime, u64)>> {
    key_files(settings)
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

pub(super) fn read_keys(settings: &KubernetesSettings) -> Result<KeySet, KeyFileError> {
    // Stamps first: a file changing while it is read is read again later.
    let stamps = key_file_stamps(settings);
    let mut keys = Vec::new();
    if let Some(path) = &settings.jwks_file {
        keys.extend(jwks_keys(&read_file(path)?, &path.display().to_string())?);
    }
    for path in &settings.public_key_files {
        keys.push(pem_key(path)?);
    }
    if keys.is_empty() && settings.jwks_url.is_none() {
        return Err(KeyFileError::NoKeys);
    }
    Ok(KeySet {
        keys: Arc::new(keys),
        stamps,
        checked_at: Instant::now(),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The signature keys of a JWKS (from `origin`, a file or URL): RSA keys
/// for RS256, P-256 keys for ES256. Encryption keys and keys for other
/// algorithms are skipped.
pub(super) fn jwks_keys(json: &[u8], origin: &str) -> Result<Vec<VerificationKey>, KeyFileError> {
    let invalid = |message: String| KeyFileError::Invalid {
        path: origin.to_owned(),
        message,
    };
    let set: JwkSet =
        serde_json::from_slice(json).map_err(|e| invalid(format!("not a JWKS: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            invalid(format!(
                "key {}: {e}",
                jwk.common.key_id.as_deref().unwrap_or("without kid")
            ))
        })?;
        keys.push(VerificationKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    Ok(keys)
}

/// A PEM public key (or certificate): RSA for RS256, otherwise EC for ES256.
fn pem_key(path: &Path) -> Result<VerificationKey, KeyFileError> {
    let pem = read_file(path)?;
    let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, key)
    } else {
        return Err(KeyFileError::Invalid {
            path: path.display().to_string(),
            message: "not a PEM RSA or EC public key".into(),
        });
    };
    Ok(VerificationKey {
        kid: None,
        algorithm,
        key,
    })
}

impl KubernetesAttestor {
    /// Whether keys come from a JWKS URL, which `keep_fresh` must fetch.
    pub fn fetches_keys(&self) -> bool {
        self.source.is_some()
    }

    /// Fetches the JWKS URL once and uses its keys; on failure the keys
    /// fetched before stay in use. Returns how many keys it holds.
    pub async fn refresh_from_url(&self) -> Result<usize, KeyFileError> {
        let Some(source) = &self.source else {
            return Ok(0);
        };
        let body = source.fetch().await?;
        let keys = jwks_keys(&body, source.url())?;
        if keys.is_empty() {
            return Err(KeyFileError::Fetch {
                url: source.url().to_owned(),
                message: "its JWKS holds no RS256 or ES256 signature key".into(),
            });
        }
        let count = keys.len();
        *lock(&self.fetched) = Arc::new(keys);
        Ok(count)
    }

    /// Keeps the keys of the JWKS URL fresh until `stopped`: fetched again
    /// every `refresh`, after a failure every 10 s, and soon after a token
    /// names an unknown key id (how a rotation first shows).
    pub async fn keep_fresh(&self, stopped: impl Future<Output = ()>) {
        let Some(url) = &self.settings.jwks_url else {
            return;
        };
        tokio::pin!(stopped);
        let mut fetched_at = Instant::now();
        let mut wait = if lock(&self.fetched).is_empty() {
            FETCH_RETRY_INTERVAL
        } else {
            url.refresh
        };
        loop {
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(wait) => {}
                () = self.unknown_key_id.notified() => {
                    let soonest = self.min_refetch_interval.saturating_sub(fetched_at.elapsed());
                    tokio::select! {
                        () = &mut stopped => return,
                        () = tokio::time::sleep(soonest) => {}
                    }
                }
            }
            fetched_at = Instant::now();
            wait = match self.refresh_from_url().await {
                Ok(keys) => {
                    tracing::debug!(keys, url = %url.url, "fetched the Kubernetes issuer's JWKS");
                    url.refresh
                }
                Err(error) => {
                    tracing::warn!(%error, "keeping the Kubernetes issuer keys fetched before");
                    FETCH_RETRY_INTERVAL
                }
            };
        }
    }

    /// The keys, re-read first if a key file changed. A key file that
    /// became unreadable or invalid leaves the last good keys in use.
    pub(super) fn current_keys(&self) -> Arc<Vec<VerificationKey>> {
        let mut key_set = lock(&self.keys);
        if key_set.checked_at.elapsed() >= KEY_RECHECK_INTERVAL {
            key_set.checked_at = Instant::now();
            let stamps = key_file_stamps(&self.settings);
            if stamps != key_set.stamps {
                match read_keys(&self.settings) {
                    Ok(fresh) => {
                        tracing::info!(keys = fresh.keys.len(), "reloaded Kubernetes issuer keys");
                        *key_set = fresh;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot reload Kubernetes issuer keys; keeping the previous ones");
                        key_set.stamps = stamps;
                    }
                }
            }
        }
        key_set.keys.clone()
    }
}
