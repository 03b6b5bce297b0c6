//! The public keys of an outside JWT issuer (a Kubernetes cluster's
//! service-account issuer, an OAuth subject issuer), for verifying the
//! tokens it signs.
//!
//! Owns where the keys come from and keeping them current: a JWKS file and
//! PEM public keys, re-read when they change (`files`), and a JWKS `https://`
//! URL, fetched again periodically and soon after a token names an unknown
//! key id (`fetch`), so a key rotation needs no restart. [`IssuerKeys`]
//! holds one issuer's keys and hands out the [`candidates`] for a token's
//! header. Only RS256 and ES256 keys are kept.
//!
//! Must not touch: the tokens themselves (algorithm allow-lists, signature
//! checks, iss/aud/exp and other claims are the caller's, e.g.
//! `attest::kubernetes`), certd's own signing keys (`jwt`), the store, and
//! configuration parsing (callers build [`KeySources`] from their section).
//!
//! [`candidates`]: IssuerKeys::candidates

pub(crate) mod fetch;
mod files;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};

use fetch::JwksUrl;
use files::{KeySet, jwks_keys, read_keys};

/// How often, at most, key files are checked for changes.
pub(crate) const KEY_RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How soon a failed fetch of the JWKS URL is retried.
pub(crate) const FETCH_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Least time between two fetches of the JWKS URL prompted by unknown key
/// ids, so that tokens with made-up ids cannot make certd hammer the issuer.
pub(crate) const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Why the key files or the JWKS URL could not be used.
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

/// Where an issuer's keys come from; at least one source must give keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySources {
    /// A JWKS file (what an issuer publishes at its `jwks_uri`).
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys or certificates.
    pub public_key_files: Vec<PathBuf>,
    /// Where to fetch the issuer's JWKS, if anywhere.
    pub jwks_url: Option<JwksUrlSettings>,
}

/// The issuer's JWKS over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrlSettings {
    /// An `https://` URL.
    pub url: String,
    /// PEM roots to verify the server with; `None` for the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token to send, re-read on every fetch.
    pub token_file: Option<PathBuf>,
    /// How often the keys are fetched again.
    pub refresh: Duration,
}

/// Checks a configured JWKS URL: keys fetched over plain HTTP could be
/// swapped by anyone on the path, so only `https://` URLs with a host are
/// accepted. Returns the URL, or why it is refused.
pub fn check_jwks_url(url: &str) -> Result<String, String> {
    let valid = url.strip_prefix("https://").is_some_and(|rest| {
        !rest.is_empty() && !rest.starts_with('/') && rest.bytes().all(|b| b.is_ascii_graphic())
    });
    if valid {
        Ok(url.to_owned())
    } else {
        Err(format!("{url:?} is not an https:// URL"))
    }
}

/// One public key of the issuer.
#[derive(Clone)]
pub struct VerificationKey {
    /// The JWKS `kid`; `None` for PEM keys and JWKs without one.
    pub kid: Option<String>,
    /// RS256 or ES256.
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerificationKey({:?}, {:?})", self.kid, self.algorithm)
    }
}

/// One issuer's keys: those of its key files, re-read when they change, and
/// those last fetched from its JWKS URL.
#[derive(Debug)]
pub struct IssuerKeys {
    sources: KeySources,
    /// Names the issuer in log lines.
    label: String,
    files: Mutex<KeySet>,
    /// The JWKS URL, and the keys last fetched from it.
    url: Option<JwksUrl>,
    fetched: Mutex<Arc<Vec<VerificationKey>>>,
    /// Woken when a token names a key id no key has: the issuer may have
    /// rotated its keys.
    unknown_key_id: tokio::sync::Notify,
    /// `MIN_REFETCH_INTERVAL`, shortened by tests.
    min_refetch_interval: Duration,
}

impl IssuerKeys {
    /// Reads the key files and checks the JWKS URL (fetching nothing yet);
    /// fails if no key file holds a usable key and there is no JWKS URL to
    /// fetch keys from (`refresh_from_url`, `keep_fresh`). `label` names the
    /// issuer in log lines, e.g. "Kubernetes issuer" or "subject issuer
    /// https://idp.example".
    pub fn load(sources: KeySources, label: String) -> Result<Self, KeyFileError> {
        let files = read_keys(&sources)?;
        let url = sources
            .jwks_url
            .as_ref()
            .map(|url| JwksUrl::new(&url.url, url.ca_file.as_deref(), url.token_file.clone()))
            .transpose()?;
        Ok(IssuerKeys {
            sources,
            label,
            files: Mutex::new(files),
            url,
            fetched: Mutex::new(Arc::new(Vec::new())),
            unknown_key_id: tokio::sync::Notify::new(),
            min_refetch_interval: MIN_REFETCH_INTERVAL,
        })
    }

    /// Whether keys come from a JWKS URL, which `keep_fresh` must fetch.
    pub fn fetches_keys(&self) -> bool {
        self.url.is_some()
    }

    /// Fetches the JWKS URL once and uses its keys; on failure the keys
    /// fetched before stay in use. Returns how many keys it holds.
    pub async fn refresh_from_url(&self) -> Result<usize, KeyFileError> {
        let Some(url) = &self.url else {
            return Ok(0);
        };
        let body = url.fetch().await?;
        let keys = jwks_keys(&body, url.url())?;
        if keys.is_empty() {
            return Err(KeyFileError::Fetch {
                url: url.url().to_owned(),
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
        let Some(url) = &self.sources.jwks_url else {
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
                    tracing::debug!(keys, url = %url.url, "fetched the {}'s JWKS", self.label);
                    url.refresh
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_kind::with_causes(&error), "keeping the {} keys fetched before", self.label);
                    FETCH_RETRY_INTERVAL
                }
            };
        }
    }

    /// Keys that may have signed a token whose header names `algorithm`
    /// and `kid`: those of the same algorithm, and of the same kid when both
    /// the token and the key have one. A kid no key has wakes `keep_fresh`
    /// (the issuer may have rotated its keys). The caller checks that
    /// `algorithm` is one it accepts before asking.
    pub fn candidates(&self, algorithm: Algorithm, kid: Option<&str>) -> Vec<VerificationKey> {
        let (from_files, fetched) = (self.current_keys(), lock(&self.fetched).clone());
        let keys = from_files.iter().chain(fetched.iter());
        if let Some(kid) = kid
            && self.url.is_some()
            && !keys.clone().any(|key| key.kid.as_deref() == Some(kid))
        {
            self.unknown_key_id.notify_one();
        }
        keys.filter(|key| key.algorithm == algorithm)
            .filter(|key| match (kid, &key.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .cloned()
            .collect()
    }

    /// Shortens `MIN_REFETCH_INTERVAL`, so tests need not wait 10 s.
    #[cfg(test)]
    pub(crate) fn set_min_refetch_interval(&mut self, interval: Duration) {
        self.min_refetch_interval = interval;
    }

    /// The keys of the key files, re-read first if one changed. A key file
    /// that became unreadable or invalid leaves the last good keys in use.
    fn current_keys(&self) -> Arc<Vec<VerificationKey>> {
        let mut key_set = lock(&self.files);
        if key_set.checked_at.elapsed() >= KEY_RECHECK_INTERVAL {
            key_set.checked_at = Instant::now();
            let stamps = files::stamps(&self.sources);
            if stamps != key_set.stamps {
                match read_keys(&self.sources) {
                    Ok(fresh) => {
                        tracing::info!(keys = fresh.keys.len(), "reloaded {} keys", self.label);
                        *key_set = fresh;
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = %crate::error_kind::with_causes(&error),
                            "cannot reload {} keys; keeping the previous ones",
                            self.label
                        );
                        key_set.stamps = stamps;
                    }
                }
            }
        }
        key_set.keys.clone()
    }
}

/// A mutex's value even if a thread panicked holding it: every value kept
/// here is replaced whole, never left half-written.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
