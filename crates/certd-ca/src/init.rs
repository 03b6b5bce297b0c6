//! `certd init`: a new CA in a data directory, its root and intermediate,
//! their keys (0600, encrypted when asked, or the intermediate's in a
//! PKCS#11 token), the bundle, the root's first CRL, and `ca.toml` last, so
//! that its presence means the CA is complete.

use std::path::Path;
use std::time::SystemTime;

use rcgen::KeyPair;

use super::CaError;
use super::files::{
    CaFiles, CaMetadata, InitOptions, ROOT_LIFETIME, ca_params, deployment_id, io_error,
    point_to_root, write_new,
};
use super::key_store::{self, Slot};
use certd_core::clock::unix_seconds;
use certd_core::fsutil::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};

/// Creates a new CA in `dir`: a self-signed root and an intermediate
/// (pathLen 0) signed by it. Refuses if any CA file is already there.
pub fn init(dir: &Path, options: &InitOptions, now: SystemTime) -> Result<CaMetadata, CaError> {
    let files = CaFiles::new(dir);
    fsutil::create_private_dir(dir).map_err(io_error("create", dir))?;
    fsutil::narrow_to_private(dir).map_err(io_error("make private", dir))?;
    if files.exists() {
        return Err(CaError::AlreadyExists(dir.display().to_string()));
    }
    let algorithm = options.key_type.algorithm();

    let root_key = KeyPair::generate_for(algorithm)?;
    // One short random id per deployment in both CAs' names, so that two
    // deployments of one trust domain are told apart (and a foreign
    // certificate fails as "unknown issuer", not "bad signature").
    let deployment = deployment_id();
    let root_params = ca_params(
        &options.trust_domain,
        &format!("certd root CA {deployment}"),
        None,
        now,
        ROOT_LIFETIME,
    );
    let root_cert = root_params.self_signed(&root_key)?;

    let mut intermediate_params = ca_params(
        &options.trust_domain,
        &format!("certd intermediate CA {deployment}"),
        Some(0),
        now,
        options.intermediate_lifetime.min(ROOT_LIFETIME),
    );
    let base = options.public_base_url.trim_end_matches('/');
    point_to_root(
        &mut intermediate_params,
        format!("{base}/root.crl"),
        &format!("{base}/root.cer"),
    );
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let data_dir = certd_core::DataDir::new(dir);
    let store = key_store::of(options.intermediate_key_in.as_ref());
    let intermediate =
        store.generate(Slot::Current, &data_dir, options.key_type, &options.secrets)?;
    let intermediate_cert = match intermediate_params.signed_by(&intermediate.key, &root_issuer) {
        Ok(certificate) => certificate,
        Err(error) => {
            // A key file left behind would make the directory look like a
            // CA, and a second `certd init` refuse.
            if let Some(key_file) = store.key_file(Slot::Current, &data_dir) {
                let _ = std::fs::remove_file(key_file);
            }
            return Err(error.into());
        }
    };

    let metadata = CaMetadata {
        trust_domain: options.trust_domain.clone(),
        key_type: options.key_type,
        created_at: unix_seconds(now),
        intermediate_key: intermediate.record,
    };
    let metadata_text = toml::to_string(&metadata).map_err(|e| CaError::Invalid {
        path: files.metadata.display().to_string(),
        reason: e.to_string(),
    })?;

    write_new(
        &files.root_key,
        super::key_file::encode(root_issuer.key(), options.secrets.passphrase.as_ref())?.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    write_new(
        &files.root_cert,
        root_cert.pem().as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    write_new(
        &files.intermediate_cert,
        intermediate_cert.pem().as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    fsutil::replace_file(&files.bundle, root_cert.pem().as_bytes(), PUBLIC_FILE_MODE)
        .map_err(io_error("write", &files.bundle))?;
    super::root_crl::sign_first(dir, root_cert.der(), root_issuer.key(), now)?;
    write_new(&files.metadata, metadata_text.as_bytes(), PUBLIC_FILE_MODE)?;
    fsutil::sync_dir(dir).map_err(io_error("sync", dir))?;
    Ok(metadata)
}
