//! The intermediates the CA signs with: one loaded intermediate (its key,
//! its certificate and the facts OCSP and CRLs need), and `Signers`, the
//! set in use now: the current intermediate, which signs every new
//! certificate, and the previous one, which signs only CRLs and OCSP
//! answers for the certificates it signed, for as long as they live.
//!
//! Loaded from files only (`ca::rotation` writes them); never writes.

use std::path::Path;
use std::sync::Arc;

use rcgen::Issuer;
use rustls::pki_types::CertificateDer;

use super::{CaError, IntermediateKey, KeyType, files, pem_encode};

/// One intermediate, ready to sign.
pub struct Intermediate {
    issuer: Issuer<'static, IntermediateKey>,
    der: CertificateDer<'static>,
    pem: String,
    not_before: i64,
    not_after: i64,
    /// DER of the subject Name and the bits of the public key: what OCSP
    /// CertIDs hash.
    subject_der: Vec<u8>,
    public_key_bits: Vec<u8>,
    key_id: Vec<u8>,
    key_type: KeyType,
    /// The root of the bundle that signed it.
    root_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Intermediate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key stays out of every debug print.
        f.debug_struct("Intermediate")
            .field("key_id", &self.key_id_hex())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Intermediate {
    /// The intermediate in `cert_path` with `key`, checked to fit together
    /// and to chain to a root of `bundle_path` before anything is signed.
    pub(super) fn load(
        cert_path: &Path,
        key_path: &Path,
        key: IntermediateKey,
        bundle_path: &Path,
        key_type: KeyType,
    ) -> Result<Self, CaError> {
        let der = files::read_single_cert(cert_path)?;
        let root_der = files::check_signing_material(cert_path, key_path, bundle_path, &der, &key)?;
        let facts = files::certificate_facts(cert_path, &der)?;
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| CaError::Invalid {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Intermediate {
            issuer,
            pem: pem_encode("CERTIFICATE", &der),
            der,
            not_before: facts.not_before,
            not_after: facts.not_after,
            subject_der: facts.subject_der,
            public_key_bits: facts.public_key_bits,
            key_id: facts.key_id,
            key_type,
            root_der,
        })
    }

    /// The root that signed it.
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    pub(super) fn issuer(&self) -> &Issuer<'static, IntermediateKey> {
        &self.issuer
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// After this (Unix seconds) it signs nothing.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// DER of the subject Name.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The subjectPublicKey bits (without the BIT STRING header), as
    /// OCSP's issuerKeyHash hashes them.
    pub fn public_key_bits(&self) -> &[u8] {
        &self.public_key_bits
    }

    /// The subject key identifier: the AKI of what it signs.
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// The key identifier in hex: names this intermediate in URLs
    /// (`/crl/<id>`, `/intermediate/<id>.cer`) and logs.
    pub fn key_id_hex(&self) -> String {
        hex::encode(&self.key_id)
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Signs a CRL.
    pub fn sign_crl(
        &self,
        params: &rcgen::CertificateRevocationListParams,
    ) -> Result<Vec<u8>, CaError> {
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }

    /// Signs arbitrary bytes (an OCSP ResponseData); ECDSA signatures are
    /// DER-encoded, as X.509 wants them.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        use rcgen::SigningKey;
        Ok(self.issuer.key().sign(message)?)
    }
}

/// The intermediates in use now. Replaced whole when one rotates, so a
/// reader always sees a consistent pair.
#[derive(Debug)]
pub struct Signers {
    /// Signs every new certificate.
    pub current: Arc<Intermediate>,
    /// Signed before the last rotation; kept until `previous_until`, when
    /// the last certificate it signed has expired.
    pub previous: Option<Arc<Intermediate>>,
    pub previous_until: i64,
    /// Counts replacements, so that caches of what the intermediates signed
    /// (CRLs, OCSP answers) notice one.
    pub generation: u64,
}

impl Signers {
    /// The current intermediate, then the previous one, if any.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Intermediate>> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }

    /// The intermediate whose subject key identifier is `key_id`.
    pub fn by_key_id(&self, key_id: &[u8]) -> Option<&Arc<Intermediate>> {
        self.all().find(|signer| signer.key_id() == key_id)
    }

    /// The intermediate that signed `certificate` (by its AKI), if it is
    /// one of these.
    pub fn signer_of(&self, certificate: &[u8]) -> Option<&Arc<Intermediate>> {
        self.by_key_id(&super::authority_key_id(certificate)?)
    }
}
