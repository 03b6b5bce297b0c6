//! The files a workload keeps its identity in: `key.pem` (0600), `cert.pem`
//! (leaf then intermediate) and `bundle.pem` (the roots). Shared by
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
    Ok(())
}
