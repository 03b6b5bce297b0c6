//! The CA's files in the data directory (`certd init`, in `init`, creates
//! them), and the helpers that read and write them.
//!
//! Layout: `root.pem`, `root.key`, `intermediate.pem`, `intermediate.key`,
//! `bundle.pem` (the trust bundle: the root) and `ca.toml` (metadata, written
//! last so that its presence means the CA is complete). Keys are created 0600.
//! With a PKCS#11 token there is no `intermediate.key`: `ca.toml` names the
//! token and key instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::profile::timestamp;
use super::{CLOCK_SKEW_ALLOWANCE, CaError};
use certd_core::clock::unix_seconds;
use certd_core::fsutil::{self, PUBLIC_FILE_MODE};
use certd_core::identity::TrustDomain;

/// Lifetime of the self-signed root.
pub(crate) const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of the intermediate that signs workloads; rotations
/// keep the lifetime of the intermediate they replace.
pub const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The algorithm of the CA's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyType {
    pub(super) fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// What `ca.toml` records: facts fixed when the CA was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMetadata {
    pub trust_domain: TrustDomain,
    pub key_type: KeyType,
    pub created_at: i64,
    /// Where the intermediate key is if its store keeps it outside the data
    /// directory; `None`: in `intermediate.key`. The key in the file is
    /// named for the first such store, PKCS#11, and holds any store's
    /// record.
    #[serde(
        rename = "intermediate_key_pkcs11",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub intermediate_key: Option<super::KeyRecord>,
}

/// Options of `certd init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub trust_domain: TrustDomain,
    pub key_type: KeyType,
    /// The passphrase to encrypt the root key and a key file at rest with
    /// (`certd init --encrypt-key`), and the secrets of the key store the
    /// intermediate key is made in (a PKCS#11 token's PIN).
    pub secrets: super::KeySecrets,
    /// Where to make the intermediate key, when not in `intermediate.key`
    /// (a key in a PKCS#11 token: `certd init --pkcs11-module …`).
    pub intermediate_key_in: Option<super::KeyRecord>,
    /// The HTTP base URL relying parties reach certd at: the intermediate
    /// names the root's CRL and certificate under it.
    pub public_base_url: String,
    /// How long the intermediate lives (`INTERMEDIATE_LIFETIME` unless
    /// chosen), capped by the root's lifetime.
    pub intermediate_lifetime: Duration,
}

#[cfg(test)]
impl InitOptions {
    /// What the unit tests make CAs with: trust domain certd.internal,
    /// ECDSA P-256, the default intermediate lifetime.
    pub(crate) fn for_tests(
        public_base_url: &str,
        key_passphrase: Option<super::KeyPassphrase>,
    ) -> Self {
        InitOptions {
            trust_domain: "certd.internal".parse().expect("a trust domain"),
            key_type: KeyType::EcdsaP256,
            secrets: super::KeySecrets {
                passphrase: key_passphrase,
                pkcs11_pin: None,
            },
            intermediate_key_in: None,
            public_base_url: public_base_url.to_owned(),
            intermediate_lifetime: INTERMEDIATE_LIFETIME,
        }
    }
}

/// Paths of the CA's files in one data directory.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub dir: PathBuf,
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub intermediate_cert: PathBuf,
    pub intermediate_key: PathBuf,
    pub bundle: PathBuf,
    pub metadata: PathBuf,
}

impl CaFiles {
    pub fn new(dir: &Path) -> Self {
        let data_dir = certd_core::DataDir::new(dir);
        CaFiles {
            dir: dir.to_owned(),
            root_cert: data_dir.root_cert(),
            root_key: data_dir.root_key(),
            intermediate_cert: data_dir.intermediate_cert(),
            intermediate_key: data_dir.intermediate_key(),
            bundle: data_dir.bundle(),
            metadata: data_dir.ca_metadata(),
        }
    }

    /// Whether any CA file is present (a complete CA or the remains of one).
    pub fn exists(&self) -> bool {
        [
            &self.root_cert,
            &self.root_key,
            &self.intermediate_cert,
            &self.intermediate_key,
            &self.metadata,
        ]
        .iter()
        .any(|path| path.exists())
    }

    pub fn read_metadata(&self) -> Result<CaMetadata, CaError> {
        let text = read_to_string(&self.metadata)?;
        toml::from_str(&text).map_err(|e| CaError::Invalid {
            path: self.metadata.display().to_string(),
            reason: e.message().to_owned(),
        })
    }
}

/// `root-next.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NextRootState {
    /// When it was added to the bundle.
    pub added_at: i64,
    /// The end of the propagation window: `certd ca rotate-intermediate`
    /// signs under it from then on.
    pub usable_after: i64,
}

/// The prepared next root's state, if one is prepared.
pub fn next_root_state(dir: &Path) -> Result<Option<NextRootState>, CaError> {
    read_state(&certd_core::DataDir::new(dir).next_root_state())
}

/// A short random id for a CA's name: tells deployments (and generations
/// of roots) of one trust domain apart.
pub(super) fn deployment_id() -> String {
    hex::encode(
        certd_core::identity::Serial::generate()
            .as_bytes()
            .get(..4)
            .unwrap_or_default(),
    )
}

pub(super) fn ca_params(
    trust_domain: &TrustDomain,
    common_name: &str,
    path_len: Option<u8>,
    now: SystemTime,
    lifetime: Duration,
) -> CertificateParams {
    let now = unix_seconds(now);
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain.as_str());
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    // The X509-SVID standard's SHOULD: a CA certificate names its trust
    // domain as a URI SAN.
    if let Ok(uri) = format!("spiffe://{}", trust_domain.as_str()).try_into() {
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    }
    let serial = certd_core::identity::Serial::generate();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = timestamp(now - CLOCK_SKEW_ALLOWANCE.as_secs() as i64);
    params.not_after = timestamp(now + lifetime.as_secs() as i64);
    params.is_ca = IsCa::Ca(match path_len {
        Some(len) => BasicConstraints::Constrained(len),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = path_len.is_some();
    params
}

/// Names in an intermediate where a whole-chain checker finds the root's
/// CRL (covering the intermediate) and the root itself.
pub(super) fn point_to_root(params: &mut CertificateParams, crl_url: String, root_url: &str) {
    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec![crl_url],
    }];
    params
        .custom_extensions
        .push(super::profile::authority_info_access(None, root_url));
}

pub(super) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    fsutil::create_new_file(path, contents, mode).map_err(io_error("create", path))
}

pub(super) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> CaError {
    let path = path.display().to_string();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

pub(super) fn read_to_string(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(io_error("read", path))
}

/// A TOML state file (`root-crl.toml`, `root-next.toml`,
/// `intermediate-previous.toml`); `None` if there is none.
pub(super) fn read_state<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, CaError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| CaError::Invalid {
                path: path.display().to_string(),
                reason: e.message().to_owned(),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("read", path)(error)),
    }
}

/// Writes a TOML state file atomically (0644).
pub(super) fn write_state<T: Serialize>(path: &Path, state: &T) -> Result<(), CaError> {
    let text = toml::to_string(state).map_err(|e| CaError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    fsutil::replace_file(path, text.as_bytes(), PUBLIC_FILE_MODE).map_err(io_error("write", path))
}

/// The root key, for work done where it is kept (signing the root's CRL,
/// preparing the next root); `where_to` completes "the root key is not
/// here; …" with what to do instead.
pub(super) fn root_key(
    files: &CaFiles,
    passphrase: Option<&super::KeyPassphrase>,
    where_to: &str,
) -> Result<KeyPair, CaError> {
    if !files.root_key.exists() {
        return Err(CaError::Invalid {
            path: files.root_key.display().to_string(),
            reason: format!("the root key is not here; {where_to}"),
        });
    }
    key_at(&files.root_key, passphrase)
}

/// The key file at `path`, decrypted with `passphrase` if it is encrypted.
pub(super) fn key_at(
    path: &Path,
    passphrase: Option<&super::KeyPassphrase>,
) -> Result<KeyPair, CaError> {
    let key_pem = zeroize::Zeroizing::new(read_to_string(path)?);
    super::key_file::decode(path, &key_pem, passphrase)
}

/// Reads a PEM file holding exactly one certificate.
pub(crate) fn read_single_cert(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    let text = read_to_string(path)?;
    let invalid = |reason: &str| CaError::Invalid {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let mut reader = text.as_bytes();
    let mut certs = rustls_pemfile::certs(&mut reader);
    let cert = certs
        .next()
        .ok_or_else(|| invalid("no certificate"))?
        .map_err(|_| invalid("not PEM"))?;
    Ok(cert)
}

/// Checks that the signing material fits together before anything is
/// signed with it: the intermediate key belongs to the intermediate
/// certificate, and the intermediate is signed by a certificate of the trust
/// bundle workloads verify against, which is returned. A mismatch (a file restored from another
/// deployment, a half-finished rotation) would otherwise start a daemon
/// whose every handshake and certificate fails.
pub(super) fn check_signing_material(
    cert_path: &Path,
    key_path: &Path,
    bundle_path: &Path,
    intermediate_der: &[u8],
    key: &impl rcgen::PublicKeyData,
) -> Result<CertificateDer<'static>, CaError> {
    let (_, intermediate) =
        X509Certificate::from_der(intermediate_der).map_err(|e| CaError::Invalid {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    if key.der_bytes() != intermediate.public_key().subject_public_key.data.as_ref() {
        return Err(CaError::Invalid {
            path: key_path.display().to_string(),
            reason: format!(
                "this key does not belong to {} (their public keys differ); put back the key and certificate that were made together",
                cert_path.display()
            ),
        });
    }
    let bundle = read_to_string(bundle_path)?;
    let mut reader = bundle.as_bytes();
    let signing_root = rustls_pemfile::certs(&mut reader)
        .filter_map(Result::ok)
        .find(|root| signed_by(intermediate_der, root));
    let Some(signing_root) = signing_root else {
        return Err(CaError::Invalid {
            path: cert_path.display().to_string(),
            reason: format!(
                "it is not signed by any certificate in {}, so nothing it signs would verify; restore the matching root and bundle or run `certd init` in a new directory",
                bundle_path.display()
            ),
        });
    };
    Ok(signing_root)
}

/// Whether `certificate` (DER) is signed by `issuer` (DER): names chain and
/// the signature verifies.
pub(super) fn signed_by(certificate: &[u8], issuer: &[u8]) -> bool {
    let (Ok((_, certificate)), Ok((_, issuer))) = (
        X509Certificate::from_der(certificate),
        X509Certificate::from_der(issuer),
    ) else {
        return false;
    };
    certificate.issuer().as_raw() == issuer.subject().as_raw()
        && certificate
            .verify_signature(Some(issuer.public_key()))
            .is_ok()
}

/// What the CA needs to know of its intermediate besides the DER.
pub(super) struct CertificateFacts {
    pub not_before: i64,
    pub not_after: i64,
    pub subject_der: Vec<u8>,
    pub public_key_bits: Vec<u8>,
    pub key_id: Vec<u8>,
}

pub(super) fn certificate_facts(path: &Path, der: &[u8]) -> Result<CertificateFacts, CaError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CaError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let key_id = super::subject_key_id(der).ok_or_else(|| CaError::Invalid {
        path: path.display().to_string(),
        reason: "the intermediate has no subject key identifier".into(),
    })?;
    Ok(CertificateFacts {
        key_id,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject_der: cert.subject().as_raw().to_vec(),
        public_key_bits: cert.public_key().subject_public_key.data.to_vec(),
    })
}
