//! Intermediate rotation, on disk: `certd ca rotate-intermediate` prepares
//! the next intermediate where the root key is (`prepare`); the daemon
//! promotes it when it sees it (`promote_pending`), at start or while
//! running, and then signs with it (`CertificateAuthority::reload_signers`).
//!
//! Owns `intermediate-next.{pem,key}` (for a key in a PKCS#11 token,
//! `intermediate-next.toml` names the key made there instead) and
//! `intermediate-previous.{pem,key,toml}`, and replaces
//! `intermediate.{pem,key}` (or rewrites `ca.toml` to name the token key).
//! The previous intermediate is kept until the last certificate it signed
//! has expired, so its CRL and OCSP answers outlive it; there is one such
//! slot, so a second rotation waits until it is free. Never deletes a key
//! from a token, and never touches the store.
//!
//! Crash safety: `intermediate-next.pem` is written last by `prepare` and
//! removed last by `promote_pending`, so its presence means "a rotation is
//! pending or half done", and `promote_pending` finishes one from any step.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::{self, CaFiles, io_error};
use super::key_store::{self, KeyRecord, Slot};
use super::{CLOCK_SKEW_ALLOWANCE, CaError, KeySecrets};
use certd_core::DataDir;
use certd_core::clock::unix_seconds;
use certd_core::fsutil::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};

/// What `intermediate-previous.toml` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PreviousState {
    /// Which intermediate this is about: its subject key identifier, hex.
    pub key_id: String,
    /// When it stopped signing certificates (Unix seconds).
    pub retired_at: i64,
    /// When the last certificate it signed expires: until then certd
    /// answers OCSP and serves a CRL for it.
    pub certificates_expire_by: i64,
    /// Where its key is, if its store keeps it outside the data directory
    /// (else `intermediate-previous.key`). Named for the first such store.
    #[serde(
        rename = "pkcs11_key",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<KeyRecord>,
}

/// `intermediate-next.toml`: where the next intermediate's key is, for a
/// CA whose key store keeps keys outside the data directory (a PKCS#11
/// token). Named for the first such store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NextKeyRecord {
    #[serde(rename = "pkcs11_key")]
    key: KeyRecord,
}

/// What `prepare` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextIntermediate {
    pub subject: String,
    pub not_after: i64,
    /// The subject of the root that signed it.
    pub root: String,
    /// When a next root is prepared but still propagating (so this one is
    /// signed by the current root): the end of its window.
    pub next_root_usable_after: Option<i64>,
}

/// What `promote_pending` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub subject: String,
    /// Until when the intermediate it replaced is kept for OCSP and CRLs.
    pub previous_until: i64,
}

/// The previous intermediate's state, if there is one.
pub(crate) fn previous_state(dir: &Path) -> Result<Option<PreviousState>, CaError> {
    files::read_state(&DataDir::new(dir).previous_intermediate_state())
}

/// Whether an intermediate valid from `not_before` to `not_after` is due
/// for rotation at `now`: two thirds of its life (counted from its
/// issuance, after the backdating of `not_before`) have passed.
pub fn rotation_due(not_before: i64, not_after: i64, now: i64) -> bool {
    let issued = not_before.saturating_add(CLOCK_SKEW_ALLOWANCE.as_secs() as i64);
    let life = not_after.saturating_sub(issued);
    now >= issued.saturating_add(life / 3 * 2)
}

/// The lifetime of an intermediate valid from `not_before` to `not_after`,
/// as it was chosen (without the backdating).
fn lifetime_of(not_before: i64, not_after: i64) -> Duration {
    let issued = not_before.saturating_add(CLOCK_SKEW_ALLOWANCE.as_secs() as i64);
    Duration::from_secs(u64::try_from(not_after.saturating_sub(issued)).unwrap_or(0))
}

/// Whether the intermediate of `dir` may rotate at `now`, and why not.
fn check_rotation_allowed(dir: &Path, now: i64) -> Result<(), CaError> {
    let data_dir = DataDir::new(dir);
    if data_dir.next_intermediate_cert().exists() {
        return Err(CaError::RotationRefused(format!(
            "a next intermediate is already prepared ({}); the daemon promotes it when it runs",
            data_dir.next_intermediate_cert().display()
        )));
    }
    if let Some(state) = previous_state(dir)?
        && state.certificates_expire_by > now
    {
        return Err(CaError::RotationRefused(format!(
            "the previous intermediate still answers for certificates that live until {}; rotate again after that",
            format_time(state.certificates_expire_by)
        )));
    }
    Ok(())
}

/// Makes the next intermediate in `dir`, signed by the root, or by the next
/// root once its propagation window has passed (`next_root`); the running
/// daemon (or the next start) promotes it. Runs where the root key is.
/// Where the intermediate key is in a PKCS#11 token, the next key is made
/// there too, under a label of its own. Refuses when a next one is pending,
/// or the previous one still answers for live certificates.
pub fn prepare(
    dir: &Path,
    secrets: &KeySecrets,
    now: SystemTime,
) -> Result<NextIntermediate, CaError> {
    let passphrase = secrets.passphrase.as_ref();
    let ca_files = CaFiles::new(dir);
    if !ca_files.metadata.exists() {
        return Err(CaError::Missing(dir.display().to_string()));
    }
    let metadata = ca_files.read_metadata()?;
    check_rotation_allowed(dir, unix_seconds(now))?;
    let root_key = files::root_key(
        &ca_files,
        passphrase,
        "rotate the intermediate where the root key is kept, then copy intermediate-next.pem and intermediate-next.key into the daemon's data directory",
    )?;
    let data_dir = DataDir::new(dir);
    let next_root = files::next_root_state(dir)?.filter(|_| data_dir.next_root_cert().exists());
    let under_next_root = next_root.is_some_and(|state| unix_seconds(now) >= state.usable_after);
    let (root_path, root_key) = if under_next_root {
        let key = files::key_at(&data_dir.next_root_key(), passphrase)?;
        (data_dir.next_root_cert(), key)
    } else {
        (ca_files.root_cert.clone(), root_key)
    };
    let root_der = files::read_single_cert(&root_path)?;
    let root = parse(&root_path, &root_der)?;
    let root_key_id = hex::encode(files::certificate_facts(&root_path, &root_der)?.key_id);
    let current_der = files::read_single_cert(&ca_files.intermediate_cert)?;
    let current = parse(&ca_files.intermediate_cert, &current_der)?;

    let subject = format!("certd intermediate CA {}", files::deployment_id());
    let root_ends = root.validity().not_after.timestamp();
    // The lifetime of the one it replaces, within what is left of the root.
    let current_lifetime = lifetime_of(
        current.validity().not_before.timestamp(),
        current.validity().not_after.timestamp(),
    );
    let lifetime = Duration::from_secs(
        u64::try_from(root_ends - unix_seconds(now))
            .unwrap_or(0)
            .min(current_lifetime.as_secs()),
    );
    let mut params = files::ca_params(&metadata.trust_domain, &subject, Some(0), now, lifetime);
    // Where relying parties find the signing root's CRL and the root, under
    // the same base URL as the intermediate it replaces, named by the root's
    // key id so that they stay right when the next root becomes the root.
    if let Some(base) = base_url_of(&current) {
        files::point_to_root(
            &mut params,
            format!("{base}/crl/{root_key_id}"),
            &format!("{base}/root/{root_key_id}.cer"),
        );
    }
    let root_issuer =
        rcgen::Issuer::from_ca_cert_der(&root_der, root_key).map_err(|e| CaError::Invalid {
            path: root_path.display().to_string(),
            reason: e.to_string(),
        })?;
    let generated = key_store::of(metadata.intermediate_key.as_ref()).generate(
        Slot::Next,
        &data_dir,
        metadata.key_type,
        secrets,
    )?;
    let certificate = params.signed_by(&generated.key, &root_issuer)?;
    if let Some(key) = generated.record {
        files::write_state(&data_dir.next_intermediate_state(), &NextKeyRecord { key })?;
    }
    // Last: its presence says the next intermediate is complete.
    fsutil::replace_file(
        &data_dir.next_intermediate_cert(),
        certificate.pem().as_bytes(),
        PUBLIC_FILE_MODE,
    )
    .map_err(io_error("write", &data_dir.next_intermediate_cert()))?;
    Ok(NextIntermediate {
        subject,
        not_after: unix_seconds(now) + lifetime.as_secs() as i64,
        root: root.subject().to_string(),
        next_root_usable_after: next_root
            .filter(|_| !under_next_root)
            .map(|state| state.usable_after),
    })
}

/// Promotes a pending next intermediate in `dir`, if there is one: the
/// current one becomes the previous one (kept until `longest_lifetime`
/// from now, when the last certificate it signed has expired) and the next
/// one becomes current. Checks the next one first (its key, its root in
/// the bundle); on any error the files are left as they were found.
pub fn promote_pending(
    dir: &Path,
    secrets: &KeySecrets,
    longest_lifetime: Duration,
    now: i64,
) -> Result<Option<Promoted>, CaError> {
    let data_dir = DataDir::new(dir);
    let ca_files = CaFiles::new(dir);
    let next_cert = data_dir.next_intermediate_cert();
    if !next_cert.exists() {
        return Ok(None);
    }
    let next_der = files::read_single_cert(&next_cert)?;
    let mut metadata = ca_files.read_metadata()?;
    let store = key_store::of(metadata.intermediate_key.as_ref());
    let next_key = match store.key_file(Slot::Next, &data_dir) {
        Some(path) if path.exists() => NextKey::File(path),
        // Cut short between the two renames: the current key file is the
        // next key already, which loading the CA checks against the
        // certificate.
        Some(_) => NextKey::InPlace,
        // Kept outside the data directory: intermediate-next.toml says where.
        None => match files::read_state::<NextKeyRecord>(&data_dir.next_intermediate_state())? {
            Some(next) => NextKey::Recorded(next.key),
            None => {
                return Err(CaError::RotationRefused(format!(
                    "{} is pending, but no intermediate-next.toml says where its key is; copy it in beside it",
                    next_cert.display()
                )));
            }
        },
    };
    if !matches!(next_key, NextKey::InPlace) {
        let current_der = files::read_single_cert(&ca_files.intermediate_cert)?;
        let current = parse(&ca_files.intermediate_cert, &current_der)?;
        // Copied in again after its promotion (a deployment that copies
        // the files at every start): nothing to do.
        if next_der == current_der {
            remove_next(&data_dir)?;
            return Ok(None);
        }
        // An older one (a stale copy, the previous one) would roll the CA
        // back.
        let next_not_before = parse(&next_cert, &next_der)?
            .validity()
            .not_before
            .timestamp();
        let is_previous = files::read_single_cert(&data_dir.previous_intermediate_cert())
            .is_ok_and(|previous| previous == next_der);
        if is_previous || next_not_before < current.validity().not_before.timestamp() {
            return Err(CaError::RotationRefused(format!(
                "{} is older than the current intermediate; remove intermediate-next.* (a stale copy?)",
                next_cert.display()
            )));
        }
        let record = match &next_key {
            NextKey::Recorded(record) => Some(record),
            _ => None,
        };
        let key = store.open(Slot::Next, record, &data_dir, metadata.key_type, secrets)?;
        let key_path = store
            .key_file(Slot::Next, &data_dir)
            .unwrap_or_else(|| data_dir.next_intermediate_state());
        files::check_signing_material(&next_cert, &key_path, &ca_files.bundle, &next_der, &key)?;
        let current_key_id = hex::encode(
            files::certificate_facts(&ca_files.intermediate_cert, &current_der)?.key_id,
        );
        let state = previous_state(dir)?;
        // A promotion cut short after the copy finds it made: the state,
        // written last, is about the current intermediate.
        let copied = state
            .as_ref()
            .is_some_and(|state| state.key_id == current_key_id);
        if !copied {
            if let Some(state) = state
                && state.certificates_expire_by > now
            {
                return Err(CaError::RotationRefused(format!(
                    "{} waits: the previous intermediate still answers for certificates that live until {}",
                    next_cert.display(),
                    format_time(state.certificates_expire_by)
                )));
            }
            if let (Some(current), Some(previous)) = (
                store.key_file(Slot::Current, &data_dir),
                store.key_file(Slot::Previous, &data_dir),
            ) {
                copy(&current, &previous, SECRET_FILE_MODE)?;
            }
            copy(
                &ca_files.intermediate_cert,
                &data_dir.previous_intermediate_cert(),
                PUBLIC_FILE_MODE,
            )?;
            let state = PreviousState {
                key_id: current_key_id,
                retired_at: now,
                certificates_expire_by: now
                    .saturating_add(i64::try_from(longest_lifetime.as_secs()).unwrap_or(i64::MAX))
                    .min(current.validity().not_after.timestamp()),
                key: metadata.intermediate_key.clone(),
            };
            // Last: it marks the copy complete.
            files::write_state(&data_dir.previous_intermediate_state(), &state)?;
        }
        match next_key {
            NextKey::File(path) => rename(&path, &ca_files.intermediate_key)?,
            NextKey::Recorded(record) => {
                // ca.toml names the key loading the CA uses.
                metadata.intermediate_key = Some(record);
                files::write_state(&ca_files.metadata, &metadata)?;
            }
            NextKey::InPlace => {}
        }
    }
    rename(&next_cert, &ca_files.intermediate_cert)?;
    remove_if_there(&data_dir.next_intermediate_state())?;
    fsutil::sync_dir(dir).map_err(io_error("sync", dir))?;
    let next = parse(&ca_files.intermediate_cert, &next_der)?;
    Ok(Some(Promoted {
        subject: next.subject().to_string(),
        previous_until: previous_state(dir)?.map_or(0, |state| state.certificates_expire_by),
    }))
}

/// Where a pending next intermediate's key is.
enum NextKey {
    /// `intermediate-next.key`, renamed over `intermediate.key`.
    File(std::path::PathBuf),
    /// Outside the data directory (in a PKCS#11 token), where
    /// `intermediate-next.toml` says; `ca.toml` is rewritten to name it.
    Recorded(KeyRecord),
    /// In place already (a promotion cut short between its renames).
    InPlace,
}

/// Removes the next intermediate's files.
fn remove_next(data_dir: &DataDir) -> Result<(), CaError> {
    for path in [
        data_dir.next_intermediate_key(),
        data_dir.next_intermediate_state(),
        data_dir.next_intermediate_cert(),
    ] {
        remove_if_there(&path)?;
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), CaError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// The base URL of certd's HTTP endpoints an intermediate names: its CRL
/// distribution point (`{base}/root.crl` or `{base}/crl/{id}`) without the
/// path certd gave it.
fn base_url_of(intermediate: &X509Certificate) -> Option<String> {
    let (points, _) = root_urls_of(intermediate);
    let point = points.first()?;
    let (base, _) = point.rsplit_once('/')?;
    Some(base.strip_suffix("/crl").unwrap_or(base).to_owned())
}

/// The root CRL distribution points and the root's CA Issuers URL that an
/// intermediate carries.
fn root_urls_of(intermediate: &X509Certificate) -> (Vec<String>, Option<String>) {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let mut crl_points = Vec::new();
    let mut ca_issuers = None;
    for extension in intermediate.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::CRLDistributionPoints(points) => {
                for point in points.points.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &point.distribution_point
                    {
                        crl_points.extend(names.iter().filter_map(|name| match name {
                            GeneralName::URI(url) => Some((*url).to_owned()),
                            _ => None,
                        }));
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                ca_issuers = aia.accessdescs.iter().find_map(|access| {
                    match (
                        &access.access_location,
                        access.access_method.to_id_string().as_str(),
                    ) {
                        (GeneralName::URI(url), "1.3.6.1.5.5.7.48.2") => Some((*url).to_owned()),
                        _ => None,
                    }
                });
            }
            _ => {}
        }
    }
    (crl_points, ca_issuers)
}

/// A Unix time as RFC 3339, for messages.
pub fn format_time(unix: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

fn parse<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, certificate)| certificate)
        .map_err(|e| CaError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), CaError> {
    let contents = zeroize::Zeroizing::new(std::fs::read(from).map_err(io_error("read", from))?);
    write(to, &contents, mode)
}

fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    fsutil::replace_file(path, contents, mode).map_err(io_error("write", path))
}

fn rename(from: &Path, to: &Path) -> Result<(), CaError> {
    std::fs::rename(from, to).map_err(io_error("rename", from))
}

#[cfg(test)]
mod tests {
    use super::super::{CertificateAuthority, InitOptions, init};
    use super::*;

    const DAY: i64 = 86_400;

    fn new_ca(dir: &Path) {
        init(
            dir,
            &InitOptions::for_tests("http://ca.example:8080", None),
            SystemTime::now(),
        )
        .unwrap();
    }

    fn now() -> i64 {
        unix_seconds(SystemTime::now())
    }

    #[test]
    fn rotation_is_due_at_two_thirds_of_the_life() {
        let backdated = -(CLOCK_SKEW_ALLOWANCE.as_secs() as i64);
        assert!(!rotation_due(backdated, 300 * DAY, 199 * DAY));
        assert!(rotation_due(backdated, 300 * DAY, 200 * DAY));
        assert!(rotation_due(backdated, 300 * DAY, 400 * DAY));
        assert_eq!(lifetime_of(backdated, 30), Duration::from_secs(30));
    }

    /// Prepare, promote, reload: the loaded CA signs with the new
    /// intermediate and keeps the old one until its certificates expire;
    /// a second rotation waits for that.
    #[test]
    fn a_prepared_intermediate_is_promoted_and_the_previous_kept() {
        let dir = tempfile::tempdir().unwrap();
        new_ca(dir.path());
        let ca = CertificateAuthority::load(dir.path()).unwrap();
        let old = ca.current();
        assert_eq!(
            promote_pending(dir.path(), &KeySecrets::default(), Duration::ZERO, now()).unwrap(),
            None
        );

        let next = prepare(dir.path(), &KeySecrets::default(), SystemTime::now()).unwrap();
        assert!(next.root.contains("certd root CA"), "{next:?}");
        let again = prepare(dir.path(), &KeySecrets::default(), SystemTime::now()).unwrap_err();
        assert!(again.to_string().contains("already prepared"), "{again}");
        // Nothing changes until the daemon promotes it.
        assert!(!ca.reload_signers().unwrap());

        let promoted = promote_pending(
            dir.path(),
            &KeySecrets::default(),
            Duration::from_secs(DAY as u64),
            now(),
        )
        .unwrap()
        .unwrap();
        assert!(promoted.previous_until > now() + DAY - 10);
        assert!(ca.reload_signers().unwrap());
        // The same files copied in again (a deployment copying them at
        // every start) change nothing; an older intermediate is refused.
        let data_dir = DataDir::new(dir.path());
        std::fs::copy(
            data_dir.intermediate_cert(),
            data_dir.next_intermediate_cert(),
        )
        .unwrap();
        std::fs::copy(
            data_dir.intermediate_key(),
            data_dir.next_intermediate_key(),
        )
        .unwrap();
        assert_eq!(
            promote_pending(dir.path(), &KeySecrets::default(), Duration::ZERO, now()).unwrap(),
            None
        );
        assert!(!data_dir.next_intermediate_cert().exists());
        std::fs::copy(
            data_dir.previous_intermediate_cert(),
            data_dir.next_intermediate_cert(),
        )
        .unwrap();
        std::fs::copy(
            data_dir.previous_intermediate_key(),
            data_dir.next_intermediate_key(),
        )
        .unwrap();
        let stale =
            promote_pending(dir.path(), &KeySecrets::default(), Duration::ZERO, now()).unwrap_err();
        assert!(
            stale.to_string().contains("older than the current"),
            "{stale}"
        );
        std::fs::remove_file(data_dir.next_intermediate_cert()).unwrap();
        std::fs::remove_file(data_dir.next_intermediate_key()).unwrap();
        assert!(!ca.reload_signers().unwrap());
        let signers = ca.signers();
        assert_ne!(signers.current.key_id(), old.key_id());
        assert_eq!(signers.previous.as_ref().unwrap().der(), old.der());
        assert_eq!(signers.generation, 1);
        let (_, new) = X509Certificate::from_der(signers.current.der()).unwrap();
        let root_der = std::fs::read_to_string(DataDir::new(dir.path()).root_cert()).unwrap();
        let root_der = rustls_pemfile::certs(&mut root_der.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let root_key_id = hex::encode(
            files::certificate_facts(Path::new("root.pem"), &root_der)
                .unwrap()
                .key_id,
        );
        assert_eq!(
            root_urls_of(&new),
            (
                vec![format!("http://ca.example:8080/crl/{root_key_id}")],
                Some(format!("http://ca.example:8080/root/{root_key_id}.cer"))
            )
        );
        assert_eq!(base_url_of(&new).as_deref(), Some("http://ca.example:8080"));
        // A fresh load sees the same.
        let reloaded = CertificateAuthority::load(dir.path()).unwrap();
        assert_eq!(reloaded.current().der(), signers.current.der());
        assert!(reloaded.signers().previous.is_some());

        let refused = prepare(dir.path(), &KeySecrets::default(), SystemTime::now()).unwrap_err();
        assert!(
            matches!(&refused, CaError::RotationRefused(m) if m.contains("rotate again after")),
            "{refused}"
        );
        // Once the old certificates have expired, the slot is free.
        let later = SystemTime::now() + Duration::from_secs(2 * DAY as u64);
        prepare(dir.path(), &KeySecrets::default(), later).unwrap();
    }

    /// The previous intermediate leaves once the last certificate it
    /// signed has expired, in the running CA and at the next load.
    #[test]
    fn the_previous_intermediate_leaves_when_its_certificates_have_expired() {
        let dir = tempfile::tempdir().unwrap();
        new_ca(dir.path());
        use certd_core::clock::Clock;
        let clock = certd_core::clock::ManualClock::starting_now();
        let load = || {
            CertificateAuthority::open(dir.path(), &KeySecrets::default(), clock.clone()).unwrap()
        };
        let ca = load();
        prepare(dir.path(), &KeySecrets::default(), clock.now()).unwrap();
        promote_pending(
            dir.path(),
            &KeySecrets::default(),
            Duration::from_secs(1),
            ca.now(),
        )
        .unwrap()
        .unwrap();
        assert!(ca.reload_signers().unwrap());
        assert!(ca.signers().previous.is_some());
        assert!(load().signers().previous.is_some());
        clock.advance(Duration::from_millis(2100));
        assert!(ca.reload_signers().unwrap());
        let signers = ca.signers();
        assert!(signers.previous.is_none());
        assert_eq!(signers.generation, 2);
        assert!(!ca.reload_signers().unwrap());
        assert!(load().signers().previous.is_none());
    }

    /// A promotion cut short at any step is finished by the next one.
    #[test]
    fn a_promotion_cut_short_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        new_ca(dir.path());
        let data_dir = DataDir::new(dir.path());
        let old = std::fs::read(data_dir.intermediate_cert()).unwrap();
        prepare(dir.path(), &KeySecrets::default(), SystemTime::now()).unwrap();
        let next = std::fs::read(data_dir.next_intermediate_cert()).unwrap();
        // Cut short between the key's rename and the certificate's.
        copy(
            &data_dir.intermediate_cert(),
            &data_dir.previous_intermediate_cert(),
            PUBLIC_FILE_MODE,
        )
        .unwrap();
        copy(
            &data_dir.intermediate_key(),
            &data_dir.previous_intermediate_key(),
            SECRET_FILE_MODE,
        )
        .unwrap();
        let old_key_id = CertificateAuthority::load(dir.path())
            .unwrap()
            .current()
            .key_id_hex();
        write(
            &data_dir.previous_intermediate_state(),
            format!(
                "key_id = \"{old_key_id}\"\nretired_at = {0}\ncertificates_expire_by = {0}\n",
                now() + DAY
            )
            .as_bytes(),
            PUBLIC_FILE_MODE,
        )
        .unwrap();
        rename(
            &data_dir.next_intermediate_key(),
            &data_dir.intermediate_key(),
        )
        .unwrap();
        assert!(CertificateAuthority::load(dir.path()).is_err());

        promote_pending(dir.path(), &KeySecrets::default(), Duration::ZERO, now())
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(data_dir.intermediate_cert()).unwrap(), next);
        assert_eq!(
            std::fs::read(data_dir.previous_intermediate_cert()).unwrap(),
            old
        );
        assert!(!data_dir.next_intermediate_cert().exists());
        CertificateAuthority::load(dir.path()).unwrap();
    }

    /// A next intermediate that is not signed by a root of the bundle, or
    /// whose key is not its own, is refused and nothing moves.
    #[test]
    fn a_bad_next_intermediate_is_refused_and_nothing_moves() {
        let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        new_ca(ours.path());
        new_ca(theirs.path());
        prepare(theirs.path(), &KeySecrets::default(), SystemTime::now()).unwrap();
        let (ours_dir, theirs_dir) = (DataDir::new(ours.path()), DataDir::new(theirs.path()));
        for (from, to) in [
            (
                theirs_dir.next_intermediate_cert(),
                ours_dir.next_intermediate_cert(),
            ),
            (
                theirs_dir.next_intermediate_key(),
                ours_dir.next_intermediate_key(),
            ),
        ] {
            std::fs::copy(from, to).unwrap();
        }
        let before = std::fs::read(ours_dir.intermediate_cert()).unwrap();
        let error = promote_pending(ours.path(), &KeySecrets::default(), Duration::ZERO, now())
            .unwrap_err();
        assert!(
            error.to_string().contains("not signed by any certificate"),
            "{error}"
        );
        assert_eq!(std::fs::read(ours_dir.intermediate_cert()).unwrap(), before);
        assert!(!ours_dir.previous_intermediate_cert().exists());
    }
}
