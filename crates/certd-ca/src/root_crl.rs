//! The CA level's CRL, signed by the root: it lists revoked intermediates,
//! so that relying parties that check every certificate of a chain
//! (nginx `ssl_crl`, HAProxy `crl-file`, `openssl verify -crl_check_all`)
//! find a CRL for the intermediate too.
//!
//! Owns `root.crl` (DER, what the daemon serves) and `root-crl.toml` (its
//! number and the revoked intermediates, so that the next signing lists them
//! again); while a next root is prepared (`next_root`), also
//! `root-next.crl`: the same list and number, signed by the next root, for
//! intermediates signed under it. Only code that holds the root key writes them: `certd init`,
//! `certd ca sign-root-crl` and `certd ca revoke-intermediate`, run where
//! the root key is; the daemon only reads `root.crl` (and notices when the
//! file changes). Never touches the store.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};

use super::files::{self, CaFiles, io_error};
use super::{CaError, KeyPassphrase};
use crate::RevocationReason;
use certd_core::clock::unix_seconds;
use certd_core::fsutil::{self, PUBLIC_FILE_MODE};
use certd_core::identity::Serial;

/// Default validity of the root's CRL: long, since it is signed by hand
/// where the root key is kept; the daemon warns 30 days before it ends.
pub(crate) const DEFAULT_ROOT_CRL_VALIDITY: Duration = Duration::from_secs(180 * 24 * 3600);
/// How long before its nextUpdate the daemon starts warning.
pub const ROOT_CRL_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// `root-crl.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootCrlState {
    /// The number of the last CRL signed.
    pub number: u64,
    #[serde(default)]
    pub revoked: Vec<RevokedIntermediate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RevokedIntermediate {
    #[serde(with = "serial_hex")]
    pub serial: Serial,
    pub revoked_at: i64,
    pub reason: String,
}

/// What a signed root CRL says, for the CLI's answer and the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCrlFacts {
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
    pub revoked: usize,
}

/// Signs a new root CRL from the state in `dir` with the root key (plain,
/// or decrypted with `passphrase`), valid for `validity` from now (its
/// thisUpdate backdated, `crl::this_update`), and writes it.
pub fn sign(
    dir: &Path,
    passphrase: Option<&KeyPassphrase>,
    validity: Duration,
    now: SystemTime,
) -> Result<RootCrlFacts, CaError> {
    let data_dir = certd_core::DataDir::new(dir);
    let state = read_state(&data_dir.root_crl_state())?;
    sign_with(dir, passphrase, validity, state, now)
}

/// Adds `serial` (an intermediate this root signed) to the root CRL and
/// signs it again.
pub fn revoke_intermediate(
    dir: &Path,
    passphrase: Option<&KeyPassphrase>,
    serial: Serial,
    reason: RevocationReason,
    validity: Duration,
    now: SystemTime,
) -> Result<RootCrlFacts, CaError> {
    let data_dir = certd_core::DataDir::new(dir);
    let mut state = read_state(&data_dir.root_crl_state())?;
    if !state.revoked.iter().any(|r| r.serial == serial) {
        state.revoked.push(RevokedIntermediate {
            serial,
            revoked_at: unix_seconds(now),
            reason: reason.name().to_owned(),
        });
    }
    sign_with(dir, passphrase, validity, state, now)
}

/// Signs the first root CRL at `certd init`, with the root key in hand.
pub(super) fn sign_first(
    dir: &Path,
    root_der: &[u8],
    root_key: &KeyPair,
    now: SystemTime,
) -> Result<RootCrlFacts, CaError> {
    write_signed(
        dir,
        root_der,
        root_key,
        DEFAULT_ROOT_CRL_VALIDITY,
        RootCrlState::default(),
        now,
    )
}

fn sign_with(
    dir: &Path,
    passphrase: Option<&KeyPassphrase>,
    validity: Duration,
    state: RootCrlState,
    now: SystemTime,
) -> Result<RootCrlFacts, CaError> {
    let ca_files = CaFiles::new(dir);
    if !ca_files.metadata.exists() {
        return Err(CaError::Missing(dir.display().to_string()));
    }
    let root_key = files::root_key(
        &ca_files,
        passphrase,
        "run this where the root key is kept, then copy root.crl and root-crl.toml to the daemon's data directory",
    )?;
    let root_der = files::read_single_cert(&ca_files.root_cert)?;
    let data_dir = certd_core::DataDir::new(dir);
    let next = if data_dir.next_root_cert().exists() {
        let next_der = files::read_single_cert(&data_dir.next_root_cert())?;
        let next_key = files::key_at(&data_dir.next_root_key(), passphrase)?;
        Some((next_der, next_key))
    } else {
        None
    };
    let facts = write_signed(dir, &root_der, &root_key, validity, state.clone(), now)?;
    if let Some((next_der, next_key)) = next {
        // The same number: `write_signed` numbers from the state it is given.
        sign_crl(
            &data_dir.next_root_cert(),
            &data_dir.next_root_crl(),
            &next_der,
            &next_key,
            facts.this_update,
            facts.next_update,
            facts.number,
            &state.revoked,
        )?;
    }
    Ok(facts)
}

fn write_signed(
    dir: &Path,
    root_der: &[u8],
    root_key: &KeyPair,
    validity: Duration,
    mut state: RootCrlState,
    now: SystemTime,
) -> Result<RootCrlFacts, CaError> {
    let data_dir = certd_core::DataDir::new(dir);
    state.number += 1;
    let now = unix_seconds(now);
    // Valid for `validity` from now, and from a minute ago for relying
    // parties whose clocks lag.
    let this_update = crate::crl::this_update(now);
    let next_update = now.saturating_add(i64::try_from(validity.as_secs()).unwrap_or(i64::MAX));
    // The state first: a CRL on disk never has a number the state lacks.
    files::write_state(&data_dir.root_crl_state(), &state)?;
    sign_crl(
        &data_dir.root_cert(),
        &data_dir.root_crl(),
        root_der,
        root_key,
        this_update,
        next_update,
        state.number,
        &state.revoked,
    )?;
    Ok(RootCrlFacts {
        number: state.number,
        this_update,
        next_update,
        revoked: state.revoked.len(),
    })
}

/// Signs a root CRL with this root (`root_der`, `root_key`) and writes it
/// to `crl_path`.
#[allow(clippy::too_many_arguments)]
fn sign_crl(
    root_path: &Path,
    crl_path: &Path,
    root_der: &[u8],
    root_key: &KeyPair,
    this_update: i64,
    next_update: i64,
    number: u64,
    revoked: &[RevokedIntermediate],
) -> Result<(), CaError> {
    let facts = files::certificate_facts(root_path, root_der)?;
    let issuer =
        rcgen::Issuer::from_ca_cert_der(&root_der.to_vec().into(), root_key).map_err(|e| {
            CaError::Invalid {
                path: root_path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
    let params = CertificateRevocationListParams {
        this_update: super::profile::timestamp(this_update),
        next_update: super::profile::timestamp(next_update),
        crl_number: SerialNumber::from_slice(&crate::crl::minimal_be(number)),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|revoked| RevokedCertParams {
                serial_number: SerialNumber::from_slice(revoked.serial.as_bytes()),
                revocation_time: super::profile::timestamp(revoked.revoked_at),
                reason_code: crate::crl::reason(
                    revoked
                        .reason
                        .parse::<RevocationReason>()
                        .map_or(0, RevocationReason::code),
                ),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::PreSpecified(facts.key_id),
    };
    let der = params.signed_by(&issuer)?.der().to_vec();
    fsutil::replace_file(crl_path, &der, PUBLIC_FILE_MODE).map_err(io_error("write", crl_path))
}

fn read_state(path: &Path) -> Result<RootCrlState, CaError> {
    Ok(files::read_state(path)?.unwrap_or_default())
}

/// Reads a root CRL's facts from its DER: what the daemon serves and warns
/// about.
pub(crate) fn facts_of(der: &[u8]) -> Option<RootCrlFacts> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).ok()?;
    Some(RootCrlFacts {
        number: crl
            .crl_number()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update()?.timestamp(),
        revoked: crl.iter_revoked_certificates().count(),
    })
}

/// A serial as its hex in `root-crl.toml`, for people reading the file.
mod serial_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use certd_core::identity::Serial;

    pub fn serialize<S: Serializer>(serial: &Serial, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&serial.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Serial, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The root CRL as the daemon serves it: `root.crl`, read again when the
/// file changes (a `certd ca sign-root-crl` run beside the daemon, or a
/// copy from where the root key is; see `watched`).
#[derive(Debug)]
pub(crate) struct RootCrlFile(super::watched::WatchedFile<LoadedRootCrl>);

/// A root CRL read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRootCrl {
    pub der: Vec<u8>,
    pub facts: RootCrlFacts,
}

impl RootCrlFile {
    pub fn new(path: std::path::PathBuf) -> Self {
        RootCrlFile(super::watched::WatchedFile::new(path, "the root CRL", None))
    }

    /// The current root CRL; `None` if there has never been a good one.
    pub fn current(&self) -> Option<std::sync::Arc<LoadedRootCrl>> {
        self.0.current(|der| {
            let facts = facts_of(der).ok_or("not a CRL")?;
            Ok(LoadedRootCrl {
                der: der.to_vec(),
                facts,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_ca(dir: &Path) {
        super::super::init(
            dir,
            &super::super::InitOptions::for_tests("http://127.0.0.1:8080", None),
            SystemTime::now(),
        )
        .unwrap();
    }

    #[test]
    fn init_signs_the_first_and_each_signing_numbers_up_and_keeps_the_revoked() {
        let dir = tempfile::tempdir().unwrap();
        new_ca(dir.path());
        let data_dir = certd_core::DataDir::new(dir.path());
        let file = RootCrlFile::new(data_dir.root_crl());
        let first = file.current().unwrap();
        assert_eq!((first.facts.number, first.facts.revoked), (1, 0));
        assert!(first.facts.next_update - first.facts.this_update >= 179 * 24 * 3600);

        let serial = Serial::generate();
        let week = Duration::from_secs(7 * 24 * 3600);
        let facts = revoke_intermediate(
            dir.path(),
            None,
            serial.clone(),
            RevocationReason::KeyCompromise,
            week,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!((facts.number, facts.revoked), (2, 1));
        // Revoking again changes nothing but the number.
        let facts = revoke_intermediate(
            dir.path(),
            None,
            serial.clone(),
            RevocationReason::Superseded,
            week,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!((facts.number, facts.revoked), (3, 1));
        let facts = sign(dir.path(), None, week, SystemTime::now()).unwrap();
        assert_eq!((facts.number, facts.revoked), (4, 1));
        // Valid for a week from the signing, and from a minute before it
        // for relying parties whose clocks lag.
        assert_eq!(
            facts.next_update - facts.this_update,
            (week + crate::CLOCK_SKEW_ALLOWANCE).as_secs() as i64
        );
        assert!(facts.this_update <= unix_seconds(SystemTime::now()) - 60);
        // The file the daemon reads follows, and the state is readable.
        let current = file.current().unwrap();
        assert_eq!(current.facts, facts);
        let state = std::fs::read_to_string(data_dir.root_crl_state()).unwrap();
        assert!(state.contains(&serial.to_hex()), "{state}");
        assert!(state.contains("key-compromise"), "{state}");
    }

    #[test]
    fn a_bad_file_keeps_the_last_good_crl_and_no_root_key_is_said_plainly() {
        let dir = tempfile::tempdir().unwrap();
        new_ca(dir.path());
        let data_dir = certd_core::DataDir::new(dir.path());
        let file = RootCrlFile::new(data_dir.root_crl());
        let good = file.current().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(data_dir.root_crl(), b"not a CRL").unwrap();
        assert_eq!(file.current().unwrap(), good);

        std::fs::remove_file(data_dir.root_key()).unwrap();
        let error = sign(
            dir.path(),
            None,
            DEFAULT_ROOT_CRL_VALIDITY,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("where the root key is kept"),
            "{error}"
        );
        let missing = RootCrlFile::new(dir.path().join("nothing.crl"));
        assert!(missing.current().is_none());
    }
}
