//! Root rotation, where the root keys are: `certd ca rotate-root` makes the
//! next root and adds it to `bundle.pem` at once, so that it reaches every
//! workload (`ca::bundle`) long before anything is signed under it; after
//! the propagation window `certd ca rotate-intermediate` signs the next
//! intermediate under it (`ca::rotation`); `certd ca retire-root` then
//! makes it the root and drops the old one from the bundle, once nothing
//! signed under the old one lives.
//!
//! Owns `root-next.pem`, `root-next.key` (0600, encrypted like `root.key`
//! when a passphrase is given), `root-next.toml` (the propagation window)
//! and `root-retired.pem`; `retire` replaces `root.{pem,key,crl}` and
//! `bundle.pem`. Never touches the store.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::KeyPair;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::{self, CaFiles, ROOT_LIFETIME, io_error};
use super::{CaError, KeyPassphrase};
use certd_core::clock::unix_seconds;
use certd_core::fsutil::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};

/// How long, by default, the next root is only distributed before anything
/// is signed under it: longer than the default longest certificate
/// lifetime (24 h) plus one renewal, so that every workload that renews
/// has fetched a bundle with it.
pub const DEFAULT_PROPAGATION: Duration = Duration::from_secs(48 * 3600);

/// What was prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRoot {
    pub subject: String,
    pub not_after: i64,
    /// Roots in `bundle.pem` now.
    pub roots_in_bundle: usize,
    /// From when intermediates may be signed under it.
    pub usable_after: i64,
}

/// Makes the next root in `dir`, signs its CRL, and adds it to the bundle;
/// nothing is signed under it for `propagation`. Refuses when the root key
/// is not here (this runs where it is kept) or a next root is already
/// prepared.
pub fn prepare(
    dir: &Path,
    passphrase: Option<&KeyPassphrase>,
    propagation: Duration,
    now: SystemTime,
) -> Result<NextRoot, CaError> {
    let ca_files = CaFiles::new(dir);
    let data_dir = certd_core::DataDir::new(dir);
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
    let added_at = unix_seconds(now);
    let state = files::NextRootState {
        added_at,
        usable_after: added_at
            .saturating_add(i64::try_from(propagation.as_secs()).unwrap_or(i64::MAX)),
    };
    files::write_state(&data_dir.next_root_state(), &state)?;
    // Its CRL (`root-next.crl`), for the intermediates it will sign.
    super::root_crl::sign(
        dir,
        passphrase,
        super::root_crl::DEFAULT_ROOT_CRL_VALIDITY,
        now,
    )?;
    // Last: from here on certd hands the new root out.
    fsutil::replace_file(&ca_files.bundle, bundle.as_bytes(), PUBLIC_FILE_MODE)
        .map_err(io_error("write", &ca_files.bundle))?;
    Ok(NextRoot {
        subject,
        not_after: unix_seconds(now) + ROOT_LIFETIME.as_secs() as i64,
        roots_in_bundle,
        usable_after: state.usable_after,
    })
}

/// What `retire` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The subject of the root dropped from the bundle.
    pub retired: String,
    /// The subject of the root now.
    pub root: String,
    pub roots_in_bundle: usize,
}

/// Makes the next root the root and drops the old one from the bundle
/// (kept as `root-retired.pem`): the bundle first, then the next root's
/// files renamed over the root's. Refuses unless the intermediate is signed
/// under the next root already, and, without `force`, while certificates
/// signed under the old root may live (the previous intermediate's).
pub fn retire(dir: &Path, force: bool, now: i64) -> Result<Retired, CaError> {
    let ca_files = CaFiles::new(dir);
    let data_dir = certd_core::DataDir::new(dir);
    if !ca_files.metadata.exists() {
        return Err(CaError::Missing(dir.display().to_string()));
    }
    if !data_dir.next_root_cert().exists() {
        return Err(CaError::RotationRefused(
            "no next root is prepared; run `certd ca rotate-root` first".into(),
        ));
    }
    if data_dir.next_intermediate_cert().exists() {
        return Err(CaError::RotationRefused(format!(
            "a next intermediate is pending ({}); let certd promote it first",
            data_dir.next_intermediate_cert().display()
        )));
    }
    let old_root = files::read_single_cert(&ca_files.root_cert)?;
    let next_root = files::read_single_cert(&data_dir.next_root_cert())?;
    let intermediate = files::read_single_cert(&ca_files.intermediate_cert)?;
    if !files::signed_by(&intermediate, &next_root) {
        let after = files::next_root_state(dir)?.map_or(now, |state| state.usable_after);
        return Err(CaError::RotationRefused(format!(
            "the intermediate is still signed by the old root; from {} run `certd ca rotate-intermediate`, which signs the next one under the next root, then retire the old root",
            super::rotation::format_time(after)
        )));
    }
    if let Some(previous) = super::rotation::previous_state(dir)?
        && previous.certificates_expire_by > now
        && !force
    {
        let previous_der = files::read_single_cert(&data_dir.previous_intermediate_cert())?;
        if files::signed_by(&previous_der, &old_root) {
            return Err(CaError::RotationRefused(format!(
                "certificates signed under the old root live until {}; retire it after that (--force drops them now: peers that refresh their bundle stop trusting them)",
                super::rotation::format_time(previous.certificates_expire_by)
            )));
        }
    }
    let bundle_text = files::read_to_string(&ca_files.bundle)?;
    let mut reader = bundle_text.as_bytes();
    let kept: Vec<_> = rustls_pemfile::certs(&mut reader)
        .filter_map(Result::ok)
        .filter(|root| root.as_ref() != old_root.as_ref())
        .collect();
    let bundle: String = kept
        .iter()
        .map(|root| super::pem_encode("CERTIFICATE", root))
        .collect();
    let subject = |der: &[u8]| {
        X509Certificate::from_der(der)
            .map_or_else(|_| String::new(), |(_, c)| c.subject().to_string())
    };
    fsutil::replace_file(
        &data_dir.retired_root_cert(),
        super::pem_encode("CERTIFICATE", &old_root).as_bytes(),
        PUBLIC_FILE_MODE,
    )
    .map_err(io_error("write", &data_dir.retired_root_cert()))?;
    // The old root leaves the bundle first, while its CRL is still
    // `root.crl` and the next root's `root-next.crl`: a relying party
    // never finds a root in the bundle without its CRL. The daemon accepts
    // this bundle, which holds the current intermediate's root; run again
    // after an interruption here, `retire` finishes.
    fsutil::replace_file(&ca_files.bundle, bundle.as_bytes(), PUBLIC_FILE_MODE)
        .map_err(io_error("write", &ca_files.bundle))?;
    let rename = |from: std::path::PathBuf, to: &Path| {
        std::fs::rename(&from, to).map_err(io_error("rename", &from))
    };
    rename(data_dir.next_root_key(), &ca_files.root_key)?;
    rename(data_dir.next_root_crl(), &data_dir.root_crl())?;
    rename(data_dir.next_root_cert(), &ca_files.root_cert)?;
    std::fs::remove_file(data_dir.next_root_state())
        .map_err(io_error("remove", &data_dir.next_root_state()))?;
    fsutil::sync_dir(dir).map_err(io_error("sync", dir))?;
    Ok(Retired {
        retired: subject(&old_root),
        root: subject(&next_root),
        roots_in_bundle: kept.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_ca(dir: &Path, passphrase: Option<KeyPassphrase>) {
        super::super::init(
            dir,
            &super::super::InitOptions::for_tests("http://127.0.0.1:8080", passphrase),
            SystemTime::now(),
        )
        .unwrap();
    }

    #[test]
    fn the_next_root_is_kept_like_the_root_and_needs_the_root_key_here() {
        let dir = tempfile::tempdir().unwrap();
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "correct horse\n").unwrap();
        let passphrase = KeyPassphrase::from_file(&pass_file)
            .unwrap()
            .cheap_for_tests();
        let ca = dir.path().join("ca");
        new_ca(&ca, Some(passphrase.clone()));
        let data_dir = certd_core::DataDir::new(&ca);

        // The root key is encrypted: without the passphrase, nothing changes.
        assert!(prepare(&ca, None, DEFAULT_PROPAGATION, SystemTime::now()).is_err());
        assert!(!data_dir.next_root_cert().exists());
        let next = prepare(
            &ca,
            Some(&passphrase),
            DEFAULT_PROPAGATION,
            SystemTime::now(),
        )
        .unwrap();
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
        let error = prepare(
            &ca,
            Some(&passphrase),
            DEFAULT_PROPAGATION,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("where the root key is kept"),
            "{error}"
        );
    }

    /// The whole root rotation on disk: during the propagation window an
    /// intermediate rotation stays under the old root; after it, the next
    /// intermediate is signed by the next root; retiring waits for that and
    /// for the old root's certificates, then leaves a CA that loads.
    #[test]
    fn the_next_root_signs_after_its_window_and_the_old_one_retires() {
        use super::super::rotation;
        let dir = tempfile::tempdir().unwrap();
        new_ca(dir.path(), None);
        let data_dir = certd_core::DataDir::new(dir.path());
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        prepare(dir.path(), None, hour, now).unwrap();
        let old_root = files::read_single_cert(&data_dir.root_cert()).unwrap();
        let next_root = files::read_single_cert(&data_dir.next_root_cert()).unwrap();
        assert!(data_dir.next_root_crl().exists());

        let within =
            rotation::prepare(dir.path(), &super::super::KeySecrets::default(), now).unwrap();
        assert!(within.next_root_usable_after.is_some());
        let next = files::read_single_cert(&data_dir.next_intermediate_cert()).unwrap();
        assert!(files::signed_by(&next, &old_root));
        std::fs::remove_file(data_dir.next_intermediate_cert()).unwrap();
        std::fs::remove_file(data_dir.next_intermediate_key()).unwrap();
        let refused = retire(dir.path(), false, unix_seconds(now)).unwrap_err();
        assert!(
            refused.to_string().contains("still signed by the old root"),
            "{refused}"
        );

        let after = now + 2 * hour;
        let switched =
            rotation::prepare(dir.path(), &super::super::KeySecrets::default(), after).unwrap();
        assert_eq!(switched.next_root_usable_after, None);
        let next = files::read_single_cert(&data_dir.next_intermediate_cert()).unwrap();
        assert!(files::signed_by(&next, &next_root));
        let refused = retire(dir.path(), false, unix_seconds(after)).unwrap_err();
        assert!(refused.to_string().contains("pending"), "{refused}");
        rotation::promote_pending(
            dir.path(),
            &super::super::KeySecrets::default(),
            Duration::from_secs(86_400),
            unix_seconds(after),
        )
        .unwrap();
        let refused = retire(dir.path(), false, unix_seconds(after)).unwrap_err();
        assert!(
            refused.to_string().contains("retire it after that"),
            "{refused}"
        );

        // Interrupted just after the old root is kept aside and dropped
        // from the bundle: the CA loads, and retiring again finishes.
        fsutil::replace_file(
            &data_dir.retired_root_cert(),
            super::super::pem_encode("CERTIFICATE", &old_root).as_bytes(),
            PUBLIC_FILE_MODE,
        )
        .unwrap();
        fsutil::replace_file(
            &data_dir.bundle(),
            super::super::pem_encode("CERTIFICATE", &next_root).as_bytes(),
            PUBLIC_FILE_MODE,
        )
        .unwrap();
        let loaded = super::super::CertificateAuthority::load(dir.path()).unwrap();
        assert_eq!(loaded.trust_bundle().roots_der, [next_root.to_vec()]);
        let retired = retire(dir.path(), true, unix_seconds(after)).unwrap();
        assert_eq!(retired.roots_in_bundle, 1);
        assert_eq!(
            files::read_single_cert(&data_dir.root_cert()).unwrap(),
            next_root
        );
        assert!(!data_dir.next_root_cert().exists() && !data_dir.next_root_state().exists());
        let loaded = super::super::CertificateAuthority::load(dir.path()).unwrap();
        assert_eq!(loaded.root_der(), next_root);
        assert_eq!(loaded.trust_bundle().roots_der, [next_root.to_vec()]);
        // The root CRL is the new root's now.
        let crl = std::fs::read(data_dir.root_crl()).unwrap();
        assert_eq!(
            crate::crl::signer_key_id(&crl),
            super::super::subject_key_id(&next_root)
        );
    }
}
