//! The certificate authority: its keys and certificates on disk, and the one
//! place where certificates are signed.
//!
//! `ca` owns the issuance profile. It takes only validated inputs (a
//! `ValidatedCsr`, a `WorkloadIdentity`, a `Serial`) and decides every field
//! of the certificate itself. It does no network I/O and never touches the
//! store: recording an issuance is the authority's job.
//!
//! Its own crate (`certd-ca`, named `certd::ca` by the rest) above
//! `certd-core` only: the compiler refuses it the store, the servers and the
//! CLI, and it is the only crate that knows PKCS#11 (cryptoki).

pub mod bundle;
pub mod crl;
pub mod crl_shards;
pub mod csr;
mod files;
mod init;
pub mod intermediate;
pub(crate) mod key_file;
pub mod key_store;
pub mod next_root;
mod profile;
mod reason;
pub mod replica;
pub mod root_crl;
pub mod rotation;
mod watched;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::KeyPair;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

pub use files::{CaFiles, CaMetadata, INTERMEDIATE_LIFETIME, InitOptions, KeyType};
pub use init::init;
pub use intermediate::{Intermediate, Signers};
pub use key_file::KeyPassphrase;
pub use key_store::{
    IntermediateKey, KeyRecord, KeySecrets, KeyStore, Pkcs11KeyRef, Pkcs11Pin, Slot,
};
pub use profile::{CLOCK_SKEW_ALLOWANCE, WorkloadProfile};
pub use reason::{RevocationReason, reason_name};

use certd_core::clock::{SharedClock, SystemClock};
use certd_core::identity::{OperatorIdentity, Serial, TrustDomain, WorkloadIdentity};
use csr::ValidatedCsr;

/// Why the CA could not be created, loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("a CA already exists in {0}; refusing to overwrite it")]
    AlreadyExists(String),
    #[error("no CA in {0}; run `certd init` first")]
    Missing(String),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("PKCS#11 token {token:?}: {reason}")]
    Token { token: String, reason: String },
    #[error("the intermediate CA expired at {not_after}; certd cannot issue until it is replaced")]
    IntermediateExpired { not_after: i64 },
    #[error("{0}")]
    RotationRefused(String),
    #[error("signing failed")]
    Signing(#[from] rcgen::Error),
}

impl CaError {
    pub fn kind(&self) -> certd_core::ErrorKind {
        match self {
            CaError::IntermediateExpired { .. } | CaError::RotationRefused(_) => {
                certd_core::ErrorKind::FailedPrecondition
            }
            CaError::AlreadyExists(_)
            | CaError::Missing(_)
            | CaError::Io { .. }
            | CaError::Invalid { .. }
            | CaError::Token { .. }
            | CaError::Signing(_) => certd_core::ErrorKind::Internal,
        }
    }
}

/// A certificate just signed, with the facts the store records about it.
#[derive(Debug, Clone)]
pub struct SignedCertificate {
    pub serial: Serial,
    pub der: CertificateDer<'static>,
    pub not_before: i64,
    pub not_after: i64,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub sha256_fingerprint: [u8; 32],
    /// The intermediate that signed it.
    pub signer: Arc<Intermediate>,
}

impl SignedCertificate {
    pub fn pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    /// The certificate followed by the intermediate that signed it, PEM:
    /// what a TLS peer presents.
    pub fn chain_pem(&self) -> String {
        let mut chain = self.pem();
        chain.push_str(self.signer.pem());
        chain
    }
}

/// Where relying parties find revocation information and the issuer, all
/// under one HTTP base URL. Every workload certificate carries all three: a
/// CRL distribution point, and in its AIA an OCSP URL and a CA Issuers URL.
/// The CRL and the issuer are named by the signing intermediate's key id,
/// so that certificates signed before a rotation still find theirs. With
/// `crl_shards` above 1 the CRL a leaf names is its shard's
/// (`crl_shards::shard_url`), not the whole CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationUrls {
    base: String,
    crl_shards: crl_shards::ShardCount,
}

/// The URLs one intermediate's certificates carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerUrls {
    pub crl: String,
    pub ocsp: String,
    pub ca_issuers: String,
}

impl RevocationUrls {
    /// Under `base` (an http:// or https:// URL, checked by the caller),
    /// leaves naming the whole CRL.
    pub fn new(base: &str) -> Self {
        RevocationUrls {
            base: base.trim_end_matches('/').to_owned(),
            crl_shards: crl_shards::ShardCount::WHOLE,
        }
    }

    /// Leaves signed from now on name their shard of `count`.
    pub fn with_crl_shards(self, count: crl_shards::ShardCount) -> Self {
        RevocationUrls {
            crl_shards: count,
            ..self
        }
    }

    /// The URLs of the intermediate whose key id is `key_id_hex`; the CRL
    /// is the whole one.
    pub fn of(&self, key_id_hex: &str) -> IssuerUrls {
        let base = &self.base;
        IssuerUrls {
            crl: format!("{base}/crl/{key_id_hex}"),
            ocsp: format!("{base}/ocsp"),
            ca_issuers: format!("{base}/intermediate/{key_id_hex}.cer"),
        }
    }

    /// The URLs the leaf with `serial` carries: its shard's CRL when the
    /// CRL is partitioned.
    pub fn of_leaf(&self, key_id_hex: &str, serial: &Serial) -> IssuerUrls {
        let mut urls = self.of(key_id_hex);
        if self.crl_shards.is_sharded() {
            let index = self.crl_shards.shard_of(serial);
            urls.crl = self.shard_url(key_id_hex, self.crl_shards, index);
        }
        urls
    }

    /// The URL of one shard, as the shard's Issuing Distribution Point and
    /// its leaves' CRL distribution point name it.
    pub fn shard_url(&self, key_id_hex: &str, count: crl_shards::ShardCount, index: u16) -> String {
        crl_shards::shard_url(&self.base, key_id_hex, count, index)
    }
}

/// The loaded, ready-to-sign CA: the intermediates' keys and the chain.
///
/// Everything is parsed once at load, so that signing does no file I/O and
/// no re-parsing on the hot path. The intermediates (`Signers`) are
/// replaced whole when `reload_signers` finds a rotation on disk; every
/// signature takes one snapshot of them.
pub struct CertificateAuthority {
    metadata: CaMetadata,
    files: CaFiles,
    /// Kept to open the keys of intermediates that rotate in.
    secrets: KeySecrets,
    /// The intermediates in use, replaced whole on a change; receivers
    /// (`signer_changes`) wait on it.
    signers: tokio::sync::watch::Sender<Arc<Signers>>,
    trust_bundle: bundle::TrustBundleFile,
    revocation_urls: Option<RevocationUrls>,
    root_crl: root_crl::RootCrlFile,
    /// The next root's CRL, while a next root is prepared.
    next_root_crl: root_crl::RootCrlFile,
    /// The time of day for everything the CA dates or checks, and for the
    /// parts of the daemon built over it.
    clock: SharedClock,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key stays out of every debug print.
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.metadata.trust_domain)
            .field("signers", &self.signers())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from a data directory. Needs the intermediate's key, but
    /// not the root's: an operator may keep the root key offline.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        Self::load_with(dir, &KeySecrets::default())
    }

    /// As `load`, unlocking the intermediate keys with `secrets`.
    pub fn load_with(dir: &Path, secrets: &KeySecrets) -> Result<Self, CaError> {
        Self::open(dir, secrets, SystemClock::shared())
    }

    /// As `load_with`, telling the time by `clock`.
    pub fn open(dir: &Path, secrets: &KeySecrets, clock: SharedClock) -> Result<Self, CaError> {
        let files = CaFiles::new(dir);
        if !files.exists() {
            return Err(CaError::Missing(dir.display().to_string()));
        }
        let metadata = files.read_metadata()?;
        // `root.pem` must be there, though the roots served come from the
        // bundle and the intermediates.
        files::read_single_cert(&files.root_cert)?;
        let current = load_current(&files, &metadata, secrets)?;
        // The bundle must hold the current intermediate's root, as every
        // later read of it requires: that is `root.pem`, except in the
        // moment of `certd ca retire-root` that drops the old root from the
        // bundle before the next root's files replace the root's.
        let bundle_text = files::read_to_string(&files.bundle)?;
        let initial_bundle =
            bundle::TrustBundle::parse(&bundle_text, current.root_der()).map_err(|reason| {
                CaError::Invalid {
                    path: files.bundle.display().to_string(),
                    reason,
                }
            })?;
        let trust_bundle = bundle::TrustBundleFile::new(files.bundle.clone(), initial_bundle);
        let (previous, previous_until) =
            load_previous(dir, secrets, metadata.key_type, clock.unix_now())?;
        Ok(CertificateAuthority {
            signers: tokio::sync::watch::Sender::new(Arc::new(Signers {
                current: Arc::new(current),
                previous: previous.map(Arc::new),
                previous_until,
                generation: 0,
            })),
            metadata,
            files,
            secrets: secrets.clone(),
            trust_bundle,
            revocation_urls: None,
            root_crl: root_crl::RootCrlFile::new(certd_core::DataDir::new(dir).root_crl()),
            next_root_crl: root_crl::RootCrlFile::new(
                certd_core::DataDir::new(dir).next_root_crl(),
            ),
            clock,
        })
    }

    /// The clock the CA tells the time by.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The time now, in Unix seconds, by the CA's clock.
    pub fn now(&self) -> i64 {
        self.clock.unix_now()
    }

    /// The intermediates in use now.
    pub fn signers(&self) -> Arc<Signers> {
        self.signers.borrow().clone()
    }

    /// The signers as they change (their `generation`: 0 at load, one more
    /// at each change), to wait for a rotation.
    pub fn signer_changes(&self) -> tokio::sync::watch::Receiver<Arc<Signers>> {
        self.signers.subscribe()
    }

    /// The intermediate that signs new certificates.
    pub fn current(&self) -> Arc<Intermediate> {
        self.signers().current.clone()
    }

    /// Reads the intermediates again from the data directory when the
    /// current one changed (after `rotation::promote_pending`), or when the
    /// previous one's certificates have all expired, which drops it.
    /// Returns whether anything changed. On error nothing changes.
    pub fn reload_signers(&self) -> Result<bool, CaError> {
        let now = self.now();
        let loaded = self.signers();
        let current_der = files::read_single_cert(&self.files.intermediate_cert)?;
        let current_changed = current_der != *loaded.current.der();
        // A previous intermediate comes only with a new current one, and
        // leaves when the last certificate it signed has expired.
        let previous_ended = loaded.previous.is_some() && now >= loaded.previous_until;
        if !current_changed && !previous_ended {
            return Ok(false);
        }
        let current = if current_changed {
            // A rotation in a token names the new key in ca.toml.
            let metadata = self.files.read_metadata()?;
            Arc::new(load_current(&self.files, &metadata, &self.secrets)?)
        } else {
            loaded.current.clone()
        };
        let (previous, previous_until) =
            load_previous(&self.files.dir, &self.secrets, self.metadata.key_type, now)?;
        let signers = Arc::new(Signers {
            current,
            previous: previous.map(Arc::new),
            previous_until,
            generation: loaded.generation + 1,
        });
        self.signers.send_replace(signers);
        Ok(true)
    }

    /// Promotes a next intermediate prepared in the data directory, if
    /// there is one (`rotation::promote_pending`); `reload_signers` then
    /// signs with it.
    pub fn promote_pending(
        &self,
        longest_lifetime: Duration,
    ) -> Result<Option<rotation::Promoted>, CaError> {
        rotation::promote_pending(&self.files.dir, &self.secrets, longest_lifetime, self.now())
    }

    /// Whether the daemon may rotate the intermediate by itself now: two
    /// thirds of its life have passed and the root key is beside it.
    pub fn rotation_due(&self, now: i64) -> bool {
        let current = self.current();
        self.files.root_key.exists()
            && rotation::rotation_due(current.not_before(), current.not_after(), now)
    }

    /// Prepares the next intermediate with the root key in the data
    /// directory (`rotation::prepare`), for `[ca] auto_rotate_intermediate`.
    pub fn prepare_rotation(&self) -> Result<rotation::NextIntermediate, CaError> {
        rotation::prepare(&self.files.dir, &self.secrets, self.clock.now())
    }

    /// The root's CRL (covering the intermediates), as its file says now.
    pub fn root_crl(&self) -> Option<std::sync::Arc<root_crl::LoadedRootCrl>> {
        self.root_crl.current()
    }

    /// Every root CRL: the root's, then the next root's while one is
    /// prepared (its file exists).
    pub fn root_crls(&self) -> Vec<std::sync::Arc<root_crl::LoadedRootCrl>> {
        // The next root's first: `certd ca retire-root` renames
        // `root-next.crl` over `root.crl`, and read in this order the next
        // root's CRL is found in one file or the other, whenever the rename
        // falls.
        let next = certd_core::DataDir::new(&self.files.dir)
            .next_root_crl()
            .exists()
            .then(|| self.next_root_crl.current())
            .flatten();
        let root = self.root_crl();
        let mut crls: Vec<_> = root.into_iter().collect();
        crls.extend(next.filter(|next| crls.iter().all(|root| root.der != next.der)));
        crls
    }

    /// Puts URLs under this base in every workload certificate signed from
    /// now on.
    pub fn set_revocation_urls(&mut self, urls: RevocationUrls) {
        self.revocation_urls = Some(urls);
    }

    /// Where relying parties find revocation information, if set.
    pub fn revocation_urls(&self) -> Option<&RevocationUrls> {
        self.revocation_urls.as_ref()
    }

    pub fn key_type(&self) -> KeyType {
        self.metadata.key_type
    }

    /// Where the intermediate key is kept, in words, for logs.
    pub fn key_store(&self) -> String {
        key_store::of(self.metadata.intermediate_key.as_ref()).describe()
    }

    /// When the current intermediate expires (Unix seconds): after it,
    /// certd can sign nothing.
    pub fn intermediate_not_after(&self) -> i64 {
        self.current().not_after()
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.metadata.trust_domain
    }

    /// The roots workloads should trust now: `bundle.pem` (see `bundle`),
    /// which must hold the root of the current intermediate.
    pub fn trust_bundle(&self) -> std::sync::Arc<bundle::TrustBundle> {
        self.trust_bundle.current(self.current().root_der())
    }

    /// The roots workloads should trust, PEM.
    pub fn trust_bundle_pem(&self) -> String {
        self.trust_bundle().pem.clone()
    }

    /// The root that signed the current intermediate.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.current().root_der().clone()
    }

    /// When the root expires (Unix seconds); 0 if it cannot be read, which
    /// loading the CA already refused.
    pub fn root_not_after(&self) -> i64 {
        x509_parser::parse_x509_certificate(&self.root_der())
            .map_or(0, |(_, root)| root.validity().not_after.timestamp())
    }

    /// The current intermediate, DER.
    pub fn intermediate_der(&self) -> CertificateDer<'static> {
        self.current().der().clone()
    }

    /// The intermediate that signed `certificate`: the current or the
    /// previous one (the current one if it is neither).
    pub fn signer_of(&self, certificate: &[u8]) -> Arc<Intermediate> {
        let signers = self.signers();
        signers
            .signer_of(certificate)
            .unwrap_or(&signers.current)
            .clone()
    }

    /// `certificate` followed by the intermediate that signed it, PEM: what
    /// a TLS peer presents.
    pub fn chain_pem_of(&self, certificate: &[u8]) -> String {
        let mut chain = pem_encode("CERTIFICATE", certificate);
        chain.push_str(self.signer_of(certificate).pem());
        chain
    }

    /// Signs a workload certificate for `identity` with the CSR's key.
    ///
    /// The profile is fixed here; see `profile::workload`. `ttl` is clamped
    /// so the certificate never outlives the intermediate.
    pub fn sign_workload(
        &self,
        csr: &ValidatedCsr,
        identity: &WorkloadIdentity,
        profile: WorkloadProfile,
        serial: Serial,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<SignedCertificate, CaError> {
        let signer = self.current();
        let validity = validity(&signer, ttl, now)?;
        let urls = self
            .revocation_urls
            .as_ref()
            .map(|urls| urls.of_leaf(&signer.key_id_hex(), &serial));
        let params = profile::workload(
            identity,
            profile,
            csr.key_kind(),
            &serial,
            &validity,
            urls.as_ref(),
        );
        sign(signer, params, csr.public_key(), serial, validity)
    }

    /// Signs an operator certificate (admin API access over mTLS).
    pub fn sign_operator(
        &self,
        csr: &ValidatedCsr,
        identity: &OperatorIdentity,
        serial: Serial,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<SignedCertificate, CaError> {
        let signer = self.current();
        let validity = validity(&signer, ttl, now)?;
        let params = profile::operator(identity, &serial, &validity);
        sign(signer, params, csr.public_key(), serial, validity)
    }

    /// Signs the daemon's own TLS serving certificate for `names` (DNS names
    /// or IP addresses).
    pub fn sign_server(
        &self,
        key: &KeyPair,
        names: &[String],
        serial: Serial,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<SignedCertificate, CaError> {
        let signer = self.current();
        let validity = validity(&signer, ttl, now)?;
        let spiffe_id = self.metadata.trust_domain.certd_server_id();
        let params = profile::server(names, &spiffe_id, &serial, &validity)?;
        sign(signer, params, key, serial, validity)
    }
}

/// The current intermediate, from `intermediate.pem` and its key.
fn load_current(
    files: &CaFiles,
    metadata: &CaMetadata,
    secrets: &KeySecrets,
) -> Result<Intermediate, CaError> {
    let record = metadata.intermediate_key.as_ref();
    let key = key_store::of(record).open(
        Slot::Current,
        record,
        &certd_core::DataDir::new(&files.dir),
        metadata.key_type,
        secrets,
    )?;
    Intermediate::load(
        &files.intermediate_cert,
        &files.intermediate_key,
        key,
        &files.bundle,
        metadata.key_type,
    )
}

/// The previous intermediate and until when it is kept, if its
/// certificates may still live at `now`.
fn load_previous(
    dir: &Path,
    secrets: &KeySecrets,
    key_type: KeyType,
    now: i64,
) -> Result<(Option<Intermediate>, i64), CaError> {
    let Some(state) = rotation::previous_state(dir)? else {
        return Ok((None, 0));
    };
    if state.certificates_expire_by <= now {
        return Ok((None, 0));
    }
    let data_dir = certd_core::DataDir::new(dir);
    let key_path = data_dir.previous_intermediate_key();
    let cert_path = data_dir.previous_intermediate_cert();
    let record = state.key.as_ref();
    let load = |roots: &Path| {
        let key =
            key_store::of(record).open(Slot::Previous, record, &data_dir, key_type, secrets)?;
        Intermediate::load(&cert_path, &key_path, key, roots, key_type)
    };
    // Its root may have been retired (`certd ca retire-root --force`) while
    // it still answers for its certificates.
    let retired_root = data_dir.retired_root_cert();
    let previous = match load(&data_dir.bundle()) {
        Err(CaError::Invalid { .. }) if retired_root.exists() => load(&retired_root)?,
        loaded => loaded?,
    };
    if previous.key_id_hex() != state.key_id {
        return Err(CaError::Invalid {
            path: data_dir.previous_intermediate_state().display().to_string(),
            reason: format!(
                "it is about intermediate {}, but {} is {}; restore the files of one rotation",
                state.key_id,
                cert_path.display(),
                previous.key_id_hex()
            ),
        });
    }
    Ok((Some(previous), state.certificates_expire_by))
}

fn validity(
    signer: &Intermediate,
    ttl: Duration,
    now: SystemTime,
) -> Result<profile::Validity, CaError> {
    let now = certd_core::clock::unix_seconds(now);
    if now >= signer.not_after() {
        return Err(CaError::IntermediateExpired {
            not_after: signer.not_after(),
        });
    }
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    Ok(profile::Validity {
        not_before: now - CLOCK_SKEW_ALLOWANCE.as_secs() as i64,
        not_after: now.saturating_add(ttl).min(signer.not_after()),
    })
}

fn sign(
    signer: Arc<Intermediate>,
    params: rcgen::CertificateParams,
    public_key: &impl rcgen::PublicKeyData,
    serial: Serial,
    validity: profile::Validity,
) -> Result<SignedCertificate, CaError> {
    let certificate = params.signed_by(public_key, signer.issuer())?;
    let der = certificate.der().clone();
    let (dns_names, uris) = profile::names_of(&params);
    Ok(SignedCertificate {
        serial,
        sha256_fingerprint: Sha256::digest(&der).into(),
        der,
        not_before: validity.not_before,
        not_after: validity.not_after,
        dns_names,
        uris,
        signer,
    })
}

/// The subject key identifier of a DER certificate, if it has one.
pub fn subject_key_id(der: &[u8]) -> Option<Vec<u8>> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    certificate
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(id.0.to_vec())
            }
            _ => None,
        })
}

/// The authority key identifier (its keyIdentifier) of a DER certificate:
/// which CA key signed it.
pub fn authority_key_id(der: &[u8]) -> Option<Vec<u8>> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    certificate
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

/// PEM text for one DER object.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    fn new_ca(dir: &Path) -> CertificateAuthority {
        init(
            dir,
            &InitOptions::for_tests("http://127.0.0.1:8080", None),
            SystemTime::now(),
        )
        .unwrap();
        CertificateAuthority::load(dir).unwrap()
    }

    fn csr(key: &KeyPair) -> ValidatedCsr {
        let der = CertificateParams::default()
            .serialize_request(key)
            .unwrap()
            .der()
            .to_vec();
        ValidatedCsr::from_der(&der).unwrap()
    }

    fn identity() -> WorkloadIdentity {
        WorkloadIdentity::for_service(
            &"certd.internal".parse().unwrap(),
            "billing".parse().unwrap(),
        )
    }

    /// A signing failure names rcgen's error once, as its cause: printed
    /// with its causes (the log, the CLI), it reads as one sentence.
    #[test]
    fn a_signing_failure_names_its_cause_once() {
        let cause = rcgen::Error::RemoteKeyError.to_string();
        let error = CaError::Signing(rcgen::Error::RemoteKeyError);
        assert_eq!(
            certd_core::error_kind::with_causes(&error),
            format!("signing failed: {cause}")
        );
    }

    #[test]
    fn workload_certificates_follow_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = new_ca(dir.path());
        ca.set_revocation_urls(RevocationUrls::new("http://ca.example:8080/"));
        let key_id = ca.current().key_id_hex();
        let now = SystemTime::now();
        let serial = Serial::generate();
        let signed = ca
            .sign_workload(
                &csr(&KeyPair::generate().unwrap()),
                &identity(),
                WorkloadProfile::Spiffe,
                serial.clone(),
                Duration::from_secs(3600),
                now,
            )
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&signed.der).unwrap();
        assert_eq!(cert.raw_serial(), serial.as_bytes());
        assert_eq!(signed.not_after - signed.not_before, 3600 + 60);
        let constraints = cert.basic_constraints().unwrap().unwrap();
        assert!(constraints.critical && !constraints.value.ca);
        let usage = cert.key_usage().unwrap().unwrap();
        assert!(
            usage.critical && usage.value.digital_signature() && !usage.value.key_encipherment()
        );
        let extended = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(extended.server_auth && extended.client_auth && extended.other.is_empty());
        assert_eq!(signed.dns_names, ["billing.certd.internal"]);
        assert_eq!(signed.uris, ["spiffe://certd.internal/svc/billing"]);
        let issuer = cert.issuer().to_string();
        assert!(
            issuer.starts_with("O=certd.internal, CN=certd intermediate CA "),
            "{issuer}"
        );
        assert_eq!(
            access_urls(&cert),
            [
                ("ocsp", "http://ca.example:8080/ocsp".to_owned()),
                (
                    "ca-issuers",
                    format!("http://ca.example:8080/intermediate/{key_id}.cer")
                ),
            ]
        );
    }

    /// A leaf names the whole CRL by default, and its shard's URL, with
    /// the count and the index the serial picks, when the CRL is split.
    #[test]
    fn a_leaf_names_its_shard_in_its_crl_distribution_point() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = new_ca(dir.path());
        let key_id = ca.current().key_id_hex();
        let sign = |ca: &CertificateAuthority, serial: &Serial| {
            let signed = ca
                .sign_workload(
                    &csr(&KeyPair::generate().unwrap()),
                    &identity(),
                    WorkloadProfile::Spiffe,
                    serial.clone(),
                    Duration::from_secs(3600),
                    SystemTime::now(),
                )
                .unwrap();
            crl_distribution_points(&signed.der)
        };
        let serial: Serial = "4cbd5b2cf1a6e0b6dd2d5a4b0c8e7f6a1b2c3d4e".parse().unwrap();
        ca.set_revocation_urls(RevocationUrls::new("http://ca.example:8080/"));
        assert_eq!(
            sign(&ca, &serial),
            [format!("http://ca.example:8080/crl/{key_id}")]
        );
        let sixty_four = crl_shards::ShardCount::new(64).unwrap();
        ca.set_revocation_urls(
            RevocationUrls::new("http://ca.example:8080/").with_crl_shards(sixty_four),
        );
        // 0x…4e mod 64 = 0x0e.
        assert_eq!(
            sign(&ca, &serial),
            [format!("http://ca.example:8080/crl/{key_id}/shards/64/14")]
        );
    }

    /// The URIs of the CRL distribution points of a DER certificate.
    fn crl_distribution_points(der: &[u8]) -> Vec<String> {
        use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        cert.extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(points) => Some(points),
                _ => None,
            })
            .flat_map(|points| points.points.iter())
            .filter_map(|point| match &point.distribution_point {
                Some(DistributionPointName::FullName(names)) => Some(names),
                _ => None,
            })
            .flatten()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect()
    }

    /// The AIA of `cert`: (method, URL) pairs.
    fn access_urls(cert: &X509Certificate) -> Vec<(&'static str, String)> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        cert.extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityInfoAccess(aia) => Some(aia),
                _ => None,
            })
            .flat_map(|aia| aia.accessdescs.iter())
            .filter_map(|access| {
                let method = match access.access_method.to_id_string().as_str() {
                    "1.3.6.1.5.5.7.48.1" => "ocsp",
                    "1.3.6.1.5.5.7.48.2" => "ca-issuers",
                    _ => return None,
                };
                match &access.access_location {
                    GeneralName::URI(url) => Some((method, (*url).to_owned())),
                    _ => None,
                }
            })
            .collect()
    }

    /// The X509-SVID details of the CA certificates, and where the
    /// intermediate says a whole-chain checker finds what covers it.
    #[test]
    fn the_cas_name_their_trust_domain_deployment_and_the_roots_crl() {
        use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (new_ca(one.path()), new_ca(two.path()));
        let (a_der, b_der) = (a.intermediate_der(), b.intermediate_der());
        let (_, intermediate) = X509Certificate::from_der(&a_der).unwrap();
        let a_root = a.root_der();
        let (_, root) = X509Certificate::from_der(&a_root).unwrap();
        for cert in [&intermediate, &root] {
            let san = cert.subject_alternative_name().unwrap().unwrap().value;
            assert_eq!(
                san.general_names,
                [GeneralName::URI("spiffe://certd.internal")]
            );
        }
        let (_, other) = X509Certificate::from_der(&b_der).unwrap();
        assert_ne!(
            intermediate.subject().to_string(),
            other.subject().to_string(),
            "two deployments of one trust domain have different CA names"
        );
        assert_eq!(
            access_urls(&intermediate),
            [("ca-issuers", "http://127.0.0.1:8080/root.cer".to_owned())]
        );
        let points: Vec<String> = intermediate
            .extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(points) => Some(points),
                _ => None,
            })
            .flat_map(|points| points.points.iter())
            .filter_map(|point| match &point.distribution_point {
                Some(DistributionPointName::FullName(names)) => names.first().cloned(),
                _ => None,
            })
            .filter_map(|name| match name {
                GeneralName::URI(url) => Some(url.to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(points, ["http://127.0.0.1:8080/root.crl"]);
    }

    #[test]
    fn the_certificate_carries_exactly_the_csrs_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca(dir.path());
        for algorithm in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = KeyPair::generate_for(algorithm).unwrap();
            let signed = ca
                .sign_workload(
                    &csr(&key),
                    &identity(),
                    WorkloadProfile::Spiffe,
                    Serial::generate(),
                    Duration::from_secs(60),
                    SystemTime::now(),
                )
                .unwrap();
            let (_, cert) = X509Certificate::from_der(&signed.der).unwrap();
            assert_eq!(
                cert.public_key().raw,
                key.subject_public_key_info().as_slice(),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn the_subject_cn_is_the_service_or_for_acme_the_first_dns_name() {
        let validity = profile::Validity {
            not_before: 0,
            not_after: 60,
        };
        let common_name = |subject| {
            let params = profile::workload(
                &identity(),
                subject,
                csr::SubjectKeyKind::EcdsaP256,
                &Serial::generate(),
                &validity,
                None,
            );
            match params.distinguished_name.get(&rcgen::DnType::CommonName) {
                Some(rcgen::DnValue::Utf8String(name)) => name.clone(),
                other => panic!("CN: {other:?}"),
            }
        };
        let identity = identity();
        assert_eq!(
            common_name(WorkloadProfile::Spiffe),
            identity.service.as_str()
        );
        assert_eq!(
            common_name(WorkloadProfile::AcmeBound),
            identity.dns_names[0].as_str()
        );
        assert_eq!(
            common_name(WorkloadProfile::AcmeUnbound),
            identity.dns_names[0].as_str()
        );
    }

    /// Only an ACME account without an entry binding gets a web PKI
    /// certificate: DNS names only, serverAuth only.
    #[test]
    fn acme_without_binding_gets_no_spiffe_id_and_no_client_auth() {
        let validity = profile::Validity {
            not_before: 0,
            not_after: 60,
        };
        let sans_and_ekus = |profile| {
            let params = profile::workload(
                &identity(),
                profile,
                csr::SubjectKeyKind::EcdsaP256,
                &Serial::generate(),
                &validity,
                None,
            );
            let uris = params
                .subject_alt_names
                .iter()
                .filter(|san| matches!(san, rcgen::SanType::URI(_)))
                .count();
            (uris, params.extended_key_usages)
        };
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        for profile in [WorkloadProfile::Spiffe, WorkloadProfile::AcmeBound] {
            assert_eq!(sans_and_ekus(profile), (1, vec![ServerAuth, ClientAuth]));
        }
        assert_eq!(
            sans_and_ekus(WorkloadProfile::AcmeUnbound),
            (0, vec![ServerAuth])
        );
    }

    #[test]
    fn rsa_keys_also_get_key_encipherment() {
        let validity = profile::Validity {
            not_before: 0,
            not_after: 60,
        };
        let rsa = profile::workload(
            &identity(),
            WorkloadProfile::Spiffe,
            csr::SubjectKeyKind::Rsa { bits: 2048 },
            &Serial::generate(),
            &validity,
            None,
        );
        assert!(
            rsa.key_usages
                .contains(&rcgen::KeyUsagePurpose::KeyEncipherment)
        );
        let ec = profile::workload(
            &identity(),
            WorkloadProfile::Spiffe,
            csr::SubjectKeyKind::EcdsaP256,
            &Serial::generate(),
            &validity,
            None,
        );
        assert_eq!(ec.key_usages, [rcgen::KeyUsagePurpose::DigitalSignature]);
    }

    #[test]
    fn certificates_never_outlive_the_intermediate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca(dir.path());
        let key = KeyPair::generate().unwrap();
        let near_the_end = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(ca.intermediate_not_after() - 100).unwrap());
        let signed = ca
            .sign_workload(
                &csr(&key),
                &identity(),
                WorkloadProfile::Spiffe,
                Serial::generate(),
                Duration::from_secs(86_400),
                near_the_end,
            )
            .unwrap();
        assert_eq!(signed.not_after, ca.intermediate_not_after());
        let after = near_the_end + Duration::from_secs(200);
        let refused = ca.sign_workload(
            &csr(&key),
            &identity(),
            WorkloadProfile::Spiffe,
            Serial::generate(),
            Duration::from_secs(60),
            after,
        );
        assert!(
            matches!(refused, Err(CaError::IntermediateExpired { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn loading_needs_no_root_key_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CertificateAuthority::load(dir.path());
        assert!(matches!(missing, Err(CaError::Missing(_))), "{missing:?}");
        new_ca(dir.path());
        std::fs::remove_file(dir.path().join("root.key")).unwrap();
        assert!(CertificateAuthority::load(dir.path()).is_ok());
        std::fs::write(dir.path().join("intermediate.key"), "not a key").unwrap();
        let broken = CertificateAuthority::load(dir.path());
        assert!(matches!(broken, Err(CaError::Invalid { .. })), "{broken:?}");
    }

    /// A key that is not the certificate's, or an intermediate from another
    /// CA, is refused at load with the file and the reason, before anything
    /// is signed.
    #[test]
    fn mismatched_signing_material_is_refused_at_load() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        new_ca(ours.path());
        new_ca(theirs.path());
        let copy = |name: &str| {
            std::fs::copy(theirs.path().join(name), ours.path().join(name)).unwrap();
        };
        let reason = |dir: &Path| match CertificateAuthority::load(dir) {
            Err(CaError::Invalid { path, reason }) => format!("{path}: {reason}"),
            other => panic!("{other:?}"),
        };

        copy("intermediate.pem");
        let message = reason(ours.path());
        assert!(
            message.contains("intermediate.key") && message.contains("public keys differ"),
            "{message}"
        );

        copy("intermediate.key");
        let message = reason(ours.path());
        assert!(
            message.contains("intermediate.pem")
                && message.contains("not signed by any certificate in"),
            "{message}"
        );

        copy("bundle.pem");
        copy("root.pem");
        assert!(
            CertificateAuthority::load(ours.path()).is_ok(),
            "a consistent set loads"
        );
    }
}
