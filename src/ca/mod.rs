//! The certificate authority: its keys and certificates on disk, and the one
//! place where certificates are signed.
//!
//! `ca` owns the issuance profile. It takes only validated inputs (a
//! `ValidatedCsr`, a `WorkloadIdentity`, a `Serial`) and decides every field
//! of the certificate itself. It does no network I/O and never touches the
//! store: recording an issuance is the authority's job.

pub mod bundle;
pub mod csr;
mod files;
pub mod key_file;
pub mod next_root;
mod pkcs11;
mod profile;
pub mod root_crl;
mod watched;

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use files::{CaFiles, CaMetadata, InitOptions, KeyType, init};
pub use key_file::KeyPassphrase;
pub use pkcs11::{Pkcs11KeyRef, Pkcs11Pin};
pub use profile::CLOCK_SKEW_ALLOWANCE;

use crate::identity::{OperatorIdentity, Serial, TrustDomain, WorkloadIdentity};
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
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

impl CaError {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            CaError::IntermediateExpired { .. } => crate::ErrorKind::FailedPrecondition,
            CaError::AlreadyExists(_)
            | CaError::Missing(_)
            | CaError::Io { .. }
            | CaError::Invalid { .. }
            | CaError::Token { .. }
            | CaError::Signing(_) => crate::ErrorKind::Internal,
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
}

impl SignedCertificate {
    pub fn pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }
}

/// Where relying parties find revocation information and the issuer.
/// Every workload certificate carries all three: a CRL distribution point,
/// and in its AIA an OCSP URL and a CA Issuers URL (the intermediate, DER),
/// so that a relying party holding only the root can build the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationUrls {
    pub crl: String,
    pub ocsp: String,
    pub ca_issuers: String,
}

/// The secrets that unlock the intermediate's key, whichever way it is
/// kept: the passphrase of an encrypted key file, or the PIN of the
/// PKCS#11 token holding it.
#[derive(Debug, Clone, Default)]
pub struct KeySecrets {
    pub passphrase: Option<KeyPassphrase>,
    pub pkcs11_pin: Option<Pkcs11Pin>,
}

/// The intermediate's signing key, wherever it is kept: a key file (plain
/// or encrypted; the key is then in memory) or a PKCS#11 token (the key
/// never leaves it). The seam between signing and key storage: everything
/// that signs goes through rcgen's `SigningKey`.
pub struct IntermediateKey(Box<dyn rcgen::SigningKey + Send + Sync>);

impl rcgen::PublicKeyData for IntermediateKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl rcgen::SigningKey for IntermediateKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(message)
    }
}

impl IntermediateKey {
    /// The key `metadata` says the CA has: in its PKCS#11 token, or in
    /// `files.intermediate_key`.
    fn load(files: &CaFiles, metadata: &CaMetadata, secrets: &KeySecrets) -> Result<Self, CaError> {
        if let Some(key_ref) = &metadata.intermediate_key_pkcs11 {
            let pin = secrets.pkcs11_pin.as_ref().ok_or_else(|| CaError::Invalid {
                path: files.metadata.display().to_string(),
                reason: format!(
                    "the intermediate key is in PKCS#11 token {:?}; give its PIN in a file: CERTD_PKCS11_PIN_FILE=FILE (or [ca] pkcs11_pin_file in certd.toml)",
                    key_ref.token_label
                ),
            })?;
            let key = pkcs11::Pkcs11Key::open(key_ref, pin, metadata.key_type)?;
            return Ok(IntermediateKey(Box::new(key)));
        }
        let key_pem = Zeroizing::new(files::read_to_string(&files.intermediate_key)?);
        let key = key_file::decode(
            &files.intermediate_key,
            &key_pem,
            secrets.passphrase.as_ref(),
        )?;
        Ok(IntermediateKey(Box::new(key)))
    }
}

/// The loaded, ready-to-sign CA: the intermediate's key and the chain.
///
/// Everything is parsed once at load, so that signing does no file I/O and
/// no re-parsing on the hot path.
pub struct CertificateAuthority {
    metadata: CaMetadata,
    issuer: Issuer<'static, IntermediateKey>,
    intermediate_der: CertificateDer<'static>,
    intermediate_pem: String,
    intermediate_not_after: i64,
    trust_bundle: bundle::TrustBundleFile,
    root_der: CertificateDer<'static>,
    /// DER of the intermediate's subject Name and the bits of its public
    /// key: what OCSP CertIDs hash.
    intermediate_subject_der: Vec<u8>,
    intermediate_public_key_bits: Vec<u8>,
    intermediate_key_id: Vec<u8>,
    revocation_urls: Option<RevocationUrls>,
    root_crl: root_crl::RootCrlFile,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key stays out of every debug print.
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.metadata.trust_domain)
            .field("intermediate_not_after", &self.intermediate_not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from a data directory. Needs the intermediate's key, but
    /// not the root's: an operator may keep the root key offline.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        Self::load_with(dir, &KeySecrets::default())
    }

    /// As `load`, unlocking the intermediate key with `secrets`.
    pub fn load_with(dir: &Path, secrets: &KeySecrets) -> Result<Self, CaError> {
        let files = CaFiles::new(dir);
        if !files.exists() {
            return Err(CaError::Missing(dir.display().to_string()));
        }
        let metadata = files.read_metadata()?;
        let root_der = files::read_single_cert(&files.root_cert)?;
        let bundle_text = files::read_to_string(&files.bundle)?;
        let initial_bundle =
            bundle::TrustBundle::parse(&bundle_text, &root_der).map_err(|reason| {
                CaError::Invalid {
                    path: files.bundle.display().to_string(),
                    reason,
                }
            })?;
        let trust_bundle =
            bundle::TrustBundleFile::new(files.bundle.clone(), root_der.to_vec(), initial_bundle);
        let intermediate_der = files::read_single_cert(&files.intermediate_cert)?;
        let key = IntermediateKey::load(&files, &metadata, secrets)?;
        files::check_signing_material(&files, &intermediate_der, &key)?;
        let facts = files::certificate_facts(&files.intermediate_cert, &intermediate_der)?;
        let issuer =
            Issuer::from_ca_cert_der(&intermediate_der, key).map_err(|e| CaError::Invalid {
                path: files.intermediate_cert.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(CertificateAuthority {
            metadata,
            issuer,
            intermediate_pem: pem_encode("CERTIFICATE", &intermediate_der),
            intermediate_der,
            intermediate_not_after: facts.not_after,
            trust_bundle,
            root_der,
            intermediate_subject_der: facts.subject_der,
            intermediate_public_key_bits: facts.public_key_bits,
            intermediate_key_id: facts.key_id,
            revocation_urls: None,
            root_crl: root_crl::RootCrlFile::new(crate::DataDir::new(dir).root_crl()),
        })
    }

    /// The root's CRL (covering the intermediates), as its file says now.
    pub fn root_crl(&self) -> Option<std::sync::Arc<root_crl::LoadedRootCrl>> {
        self.root_crl.current()
    }

    /// Puts these URLs in every workload certificate signed from now on.
    pub fn set_revocation_urls(&mut self, urls: RevocationUrls) {
        self.revocation_urls = Some(urls);
    }

    pub fn key_type(&self) -> KeyType {
        self.metadata.key_type
    }

    /// Where the intermediate key is kept, in words, for logs.
    pub fn key_store(&self) -> String {
        match &self.metadata.intermediate_key_pkcs11 {
            Some(key_ref) => format!(
                "PKCS#11 token {:?}, key {:?}",
                key_ref.token_label, key_ref.key_label
            ),
            None => "key file".into(),
        }
    }

    /// DER of the intermediate's subject Name.
    pub fn intermediate_subject_der(&self) -> &[u8] {
        &self.intermediate_subject_der
    }

    /// The intermediate's subjectPublicKey bits (without the BIT STRING
    /// header), as OCSP's issuerKeyHash hashes them.
    pub fn intermediate_public_key_bits(&self) -> &[u8] {
        &self.intermediate_public_key_bits
    }

    /// The intermediate's subject key identifier: the AKI of its CRLs.
    pub fn intermediate_key_id(&self) -> &[u8] {
        &self.intermediate_key_id
    }

    /// Signs a CRL with the intermediate.
    pub fn sign_crl(
        &self,
        params: &rcgen::CertificateRevocationListParams,
    ) -> Result<Vec<u8>, CaError> {
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }

    /// Signs arbitrary bytes (an OCSP ResponseData) with the intermediate
    /// key; ECDSA signatures are DER-encoded, as X.509 wants them.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        use rcgen::SigningKey;
        Ok(self.issuer.key().sign(message)?)
    }

    /// When the intermediate expires (Unix seconds): after it, certd can
    /// sign nothing.
    pub fn intermediate_not_after(&self) -> i64 {
        self.intermediate_not_after
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.metadata.trust_domain
    }

    /// The roots workloads should trust now: `bundle.pem` (see `bundle`).
    pub fn trust_bundle(&self) -> std::sync::Arc<bundle::TrustBundle> {
        self.trust_bundle.current()
    }

    /// The roots workloads should trust, PEM.
    pub fn trust_bundle_pem(&self) -> String {
        self.trust_bundle().pem.clone()
    }

    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    /// When the root expires (Unix seconds); 0 if it cannot be read, which
    /// loading the CA already refused.
    pub fn root_not_after(&self) -> i64 {
        x509_parser::parse_x509_certificate(&self.root_der)
            .map_or(0, |(_, root)| root.validity().not_after.timestamp())
    }

    pub fn intermediate_der(&self) -> &CertificateDer<'static> {
        &self.intermediate_der
    }

    /// The leaf followed by the intermediate, PEM: what a TLS peer presents.
    pub fn chain_pem(&self, leaf: &SignedCertificate) -> String {
        let mut chain = leaf.pem();
        chain.push_str(&self.intermediate_pem);
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
        serial: Serial,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<SignedCertificate, CaError> {
        let validity = self.validity(ttl, now)?;
        let params = profile::workload(
            identity,
            csr.key_kind(),
            &serial,
            &validity,
            self.revocation_urls.as_ref(),
        );
        self.sign(params, csr.public_key(), serial, validity)
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
        let validity = self.validity(ttl, now)?;
        let params = profile::operator(identity, &serial, &validity);
        self.sign(params, csr.public_key(), serial, validity)
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
        let validity = self.validity(ttl, now)?;
        let params = profile::server(names, &serial, &validity)?;
        self.sign(params, key, serial, validity)
    }

    fn validity(&self, ttl: Duration, now: SystemTime) -> Result<profile::Validity, CaError> {
        let now = unix_seconds(now);
        if now >= self.intermediate_not_after {
            return Err(CaError::IntermediateExpired {
                not_after: self.intermediate_not_after,
            });
        }
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Ok(profile::Validity {
            not_before: now - CLOCK_SKEW_ALLOWANCE.as_secs() as i64,
            not_after: now.saturating_add(ttl).min(self.intermediate_not_after),
        })
    }

    fn sign(
        &self,
        params: rcgen::CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        serial: Serial,
        validity: profile::Validity,
    ) -> Result<SignedCertificate, CaError> {
        let certificate = params.signed_by(public_key, &self.issuer)?;
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
        })
    }
}

/// Seconds since the Unix epoch; times before it count as 0.
pub fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
        let options = InitOptions {
            trust_domain: "certd.internal".parse().unwrap(),
            key_type: KeyType::EcdsaP256,
            key_passphrase: None,
            pkcs11: None,
            public_base_url: "http://127.0.0.1:8080".into(),
        };
        init(dir, &options).unwrap();
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

    #[test]
    fn workload_certificates_follow_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = new_ca(dir.path());
        ca.set_revocation_urls(RevocationUrls {
            crl: "http://ca.example:8080/crl".into(),
            ocsp: "http://ca.example:8080/ocsp".into(),
            ca_issuers: "http://ca.example:8080/intermediate.cer".into(),
        });
        let now = SystemTime::now();
        let serial = Serial::generate();
        let signed = ca
            .sign_workload(
                &csr(&KeyPair::generate().unwrap()),
                &identity(),
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
                    "http://ca.example:8080/intermediate.cer".to_owned()
                ),
            ]
        );
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
        let (_, intermediate) = X509Certificate::from_der(a.intermediate_der()).unwrap();
        let (_, root) = X509Certificate::from_der(a.root_der()).unwrap();
        for cert in [&intermediate, &root] {
            let san = cert.subject_alternative_name().unwrap().unwrap().value;
            assert_eq!(
                san.general_names,
                [GeneralName::URI("spiffe://certd.internal")]
            );
        }
        let (_, other) = X509Certificate::from_der(b.intermediate_der()).unwrap();
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
    fn rsa_keys_also_get_key_encipherment() {
        let validity = profile::Validity {
            not_before: 0,
            not_after: 60,
        };
        let rsa = profile::workload(
            &identity(),
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
            + Duration::from_secs(u64::try_from(ca.intermediate_not_after - 100).unwrap());
        let signed = ca
            .sign_workload(
                &csr(&key),
                &identity(),
                Serial::generate(),
                Duration::from_secs(86_400),
                near_the_end,
            )
            .unwrap();
        assert_eq!(signed.not_after, ca.intermediate_not_after);
        let after = near_the_end + Duration::from_secs(200);
        let refused = ca.sign_workload(
            &csr(&key),
            &identity(),
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
