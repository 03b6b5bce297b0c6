//! `certd ca rotate-root`, its first half: the next root, made where the
//! root keys are and added to `bundle.pem` at once, so that it reaches
//! every workload (`ca::bundle`) long before anything is signed under it.
//!
//! Owns `root-next.pem` and `root-next.key` (0600, encrypted like
//! `root.key` when a passphrase is given). Signing an intermediate under
//! the next root, and retiring the old one, are not built yet. Never
//! touches the store.

use std::path::Path;
use std::time::SystemTime;

use rcgen::KeyPair;

use super::files::{self, CaFiles, ROOT_LIFETIME, io_error};
use super::{CaError, KeyPassphrase, unix_seconds};
use crate::fsutil::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};

/// What was prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRoot {
    pub subject: String,
    pub not_after: i64,
    /// Roots in `bundle.pem` now.
    pub roots_in_bundle: usize,
}

/// Makes the next root in `dir` and adds it to the bundle. Refuses when
/// the root key is not here (this runs where it is kept) or a next root is
/// already prepared.
pub fn prepare(dir: &Path, passphrase: Option<&KeyPassphrase>) -> Result<NextRoot, CaError> {
    let ca_files = CaFiles::new(dir);
    let data_dir = crate::DataDir::new(dir);
    if !ca_files.metadata.exists() {
        return Err(CaError::Missing(dir.display().to_string()));
    }
    // The current root key must open here: the next one is kept the same way.
    files::root_key(
        &ca_files,
        passphrase,
        "prepare the next root where the root key is kept",
    )?;
    if data_dir.next_root_cert().exists() || data_dir.next_root_key().exists() {
        return Err(CaError::AlreadyExists(format!(
            "a next root ({}); it is already in the bundle",
            data_dir.next_root_cert().display()
        )));
    }
    let metadata = ca_files.read_metadata()?;
    let now = SystemTime::now();
    let key = KeyPair::generate_for(metadata.key_type.algorithm())?;
    let subject = format!("certd root CA {}", files::deployment_id());
    let params = files::ca_params(&metadata.trust_domain, &subject, None, now, ROOT_LIFETIME);
    let certificate = params.self_signed(&key)?;
    let mut bundle = files::read_to_string(&ca_files.bundle)?;
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(&certificate.pem());
    let roots_in_bundle = {
        let mut reader = bundle.as_bytes();
        rustls_pemfile::certs(&mut reader).count()
    };
    files::write_new(
        &data_dir.next_root_key(),
        super::key_file::encode(&key, passphrase)?.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    files::write_new(
        &data_dir.next_root_cert(),
        certificate.pem().as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    // Last: from here on certd hands the new root out.
    fsutil::replace_file(&ca_files.bundle, bundle.as_bytes(), PUBLIC_FILE_MODE)
        .map_err(io_error("write", &ca_files.bundle))?;
    Ok(NextRoot {
        subject,
        not_after: unix_seconds(now) + ROOT_LIFETIME.as_secs() as i64,
        roots_in_bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_ca(dir: &Path, passphrase: Option<KeyPassphrase>) {
        super::super::init(
            dir,
            &super::super::InitOptions {
                trust_domain: "certd.internal".parse().unwrap(),
                key_type: super::super::KeyType::EcdsaP256,
                key_passphrase: passphrase,
                pkcs11: None,
                public_base_url: "http://127.0.0.1:8080".into(),
            },
        )
        .unwrap();
    }

    #[test]
    fn the_next_root_is_kept_like_the_root_and_needs_the_root_key_here() {
        let dir = tempfile::tempdir().unwrap();
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "correct horse\n").unwrap();
        let passphrase = KeyPassphrase::from_file(&pass_file).unwrap();
        let ca = dir.path().join("ca");
        new_ca(&ca, Some(passphrase.clone()));
        let data_dir = crate::DataDir::new(&ca);

        // The root key is encrypted: without the passphrase, nothing changes.
        assert!(prepare(&ca, None).is_err());
        assert!(!data_dir.next_root_cert().exists());
        let next = prepare(&ca, Some(&passphrase)).unwrap();
        assert_eq!(next.roots_in_bundle, 2);
        let key = std::fs::read_to_string(data_dir.next_root_key()).unwrap();
        assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        // The loaded CA hands out both roots.
        let loaded = super::super::CertificateAuthority::load_with(
            &ca,
            &super::super::KeySecrets {
                passphrase: Some(passphrase.clone()),
                pkcs11_pin: None,
            },
        )
        .unwrap();
        assert_eq!(loaded.trust_bundle().roots_der.len(), 2);

        std::fs::remove_file(data_dir.root_key()).unwrap();
        std::fs::remove_file(data_dir.next_root_key()).unwrap();
        std::fs::remove_file(data_dir.next_root_cert()).unwrap();
        let error = prepare(&ca, Some(&passphrase)).unwrap_err();
        assert!(
            error.to_string().contains("where the root key is kept"),
            "{error}"
        );
    }
}
