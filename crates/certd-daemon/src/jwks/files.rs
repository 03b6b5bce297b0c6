//! Reading an issuer's keys from files: a JWKS file and PEM public keys (or
//! certificates), and the stamps (modification time, length) that tell the
//! parent module when they changed and must be read again. Also turns a
//! JWKS body, read from a file or fetched (`fetch`), into keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{KeyFileError, KeySources, VerificationKey};

/// A key file's modification time and length when it was read; `None` when
/// it could not be looked at.
pub(super) type Stamp = Option<(SystemTime, u64)>;

/// The keys read from the key files, and when.
#[derive(Debug)]
pub(super) struct KeySet {
    pub(super) keys: Arc<Vec<VerificationKey>>,
    /// The stamp of each key file when it was read.
    pub(super) stamps: Vec<Stamp>,
    pub(super) checked_at: Instant,
}

fn key_files(sources: &KeySources) -> impl Iterator<Item = &PathBuf> {
    sources.jwks_file.iter().chain(&sources.public_key_files)
}

/// The stamp of each key file, in the order `read_keys` reads them.
pub(super) fn stamps(sources: &KeySources) -> Vec<Stamp> {
    key_files(sources)
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

/// Reads every key file. Fails on the first unreadable or invalid one, and
/// when none holds a usable key unless a JWKS URL may supply them later.
pub(super) fn read_keys(sources: &KeySources) -> Result<KeySet, KeyFileError> {
    // Stamps first: a file changing while it is read is read again later.
    let stamps = stamps(sources);
    let mut keys = Vec::new();
    if let Some(path) = &sources.jwks_file {
        keys.extend(jwks_keys(&read_file(path)?, &path.display().to_string())?);
    }
    for path in &sources.public_key_files {
        keys.push(pem_key(path)?);
    }
    if keys.is_empty() && sources.jwks_url.is_none() {
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
pub(super) fn pem_key(path: &Path) -> Result<VerificationKey, KeyFileError> {
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
