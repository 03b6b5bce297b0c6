//! The files a workload keeps its identity in: `key.pem` (0600), `cert.pem`
//! (leaf then intermediate), `bundle.pem` (the roots) and, for an entry
//! that federates, `federated-bundles.pem` (the foreign trust domains'
//! roots). Shared by
//! `certd request`, `certd renew` and the node agent's own identity. Keys
//! are made here and never leave the machine; only CSRs are sent.

use std::path::Path;

use crate::fsutil::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};

use super::IssuedCertificate;

/// A fresh P-256 key and a CSR for it that asks for no names: the identity
/// is decided by certd from the attestation.
pub fn new_key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// Writes key.pem (0600), cert.pem (leaf then intermediate) and bundle.pem.
/// Each file is replaced atomically, so a reader never sees half a file; a
/// crash in the instant between two renames can pair a new key with the old
/// certificate, which a new `certd request` repairs. The error names the
/// file.
pub fn write_identity(
    dir: &Path,
    key: &rcgen::KeyPair,
    issued: &IssuedCertificate,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    fsutil::create_private_dir(dir).map_err(|e| (dir.to_owned(), e))?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let files: [(&str, &[u8], u32); 3] = [
        ("key.pem", key_pem.as_bytes(), SECRET_FILE_MODE),
        ("cert.pem", issued.chain_pem.as_bytes(), PUBLIC_FILE_MODE),
        (
            "bundle.pem",
            issued.trust_bundle_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        ),
    ];
    for (name, contents, mode) in files {
        let path = dir.join(name);
        fsutil::replace_file(&path, contents, mode).map_err(|e| (path, e))?;
    }
    write_federated_bundles(dir, issued)
}

/// The file of the foreign trust domains' roots, beside bundle.pem.
pub const FEDERATED_BUNDLES_FILE: &str = "federated-bundles.pem";

/// Writes `federated-bundles.pem`: for each foreign trust domain the entry
/// federates with, a `# spiffe://<trust domain>` line and its roots (PEM
/// readers skip the text between certificates). Without any, the file is
/// removed, so a workload stops trusting a domain its entry no longer
/// federates with.
fn write_federated_bundles(
    dir: &Path,
    issued: &IssuedCertificate,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let path = dir.join(FEDERATED_BUNDLES_FILE);
    if issued.federated_bundles.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err((path, error)),
            _ => Ok(()),
        };
    }
    let mut text = String::new();
    for bundle in &issued.federated_bundles {
        let Some(roots) = crate::federation::bundle::split_certificates(&bundle.roots_der) else {
            continue;
        };
        text.push_str(&format!("# spiffe://{}\n", bundle.trust_domain));
        text.push_str(&crate::federation::bundle::certificates_pem(&roots));
    }
    fsutil::replace_file(&path, text.as_bytes(), PUBLIC_FILE_MODE).map_err(|e| (path, e))
}
