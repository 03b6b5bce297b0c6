//! The data directory: the one place that names its files.
//!
//! Everything certd keeps on one node lives under one directory (0700): the
//! CA's certificates and keys, the database, and the admin socket. Nothing
//! else in certd spells a file name of it.

use std::path::{Path, PathBuf};

/// A data directory and the name of everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root CA certificate (PEM).
    pub fn root_cert(&self) -> PathBuf {
        self.root.join("root.pem")
    }

    /// The root CA key (PKCS#8 PEM, 0600); `certd serve` never reads it.
    pub fn root_key(&self) -> PathBuf {
        self.root.join("root.key")
    }

    /// The next root (PEM), made by `certd ca rotate-root` and already in
    /// the bundle; nothing is signed under it yet.
    pub fn next_root_cert(&self) -> PathBuf {
        self.root.join("root-next.pem")
    }

    /// The next root's key (PKCS#8 PEM, 0600, encrypted like root.key).
    pub fn next_root_key(&self) -> PathBuf {
        self.root.join("root-next.key")
    }

    /// The next root's CRL (DER): `root.crl`'s list, signed by the next
    /// root, for intermediates signed under it (`ca::root_crl`).
    pub fn next_root_crl(&self) -> PathBuf {
        self.root.join("root-next.crl")
    }

    /// When the next root was added to the bundle and when the propagation
    /// window ends (`ca::next_root`).
    pub fn next_root_state(&self) -> PathBuf {
        self.root.join("root-next.toml")
    }

    /// The root retired by `certd ca retire-root` (PEM), kept for the record.
    pub fn retired_root_cert(&self) -> PathBuf {
        self.root.join("root-retired.pem")
    }

    /// The intermediate CA certificate (PEM), which signs workloads.
    pub fn intermediate_cert(&self) -> PathBuf {
        self.root.join("intermediate.pem")
    }

    /// The intermediate CA key (PKCS#8 PEM, 0600).
    pub fn intermediate_key(&self) -> PathBuf {
        self.root.join("intermediate.key")
    }

    /// The next intermediate (PEM), made by `certd ca rotate-intermediate`:
    /// the daemon promotes it to `intermediate.pem` when it sees it
    /// (`ca::rotation`). Its presence means the next key is complete.
    pub fn next_intermediate_cert(&self) -> PathBuf {
        self.root.join("intermediate-next.pem")
    }

    /// The next intermediate's key (PKCS#8 PEM, 0600).
    pub fn next_intermediate_key(&self) -> PathBuf {
        self.root.join("intermediate-next.key")
    }

    /// For a CA whose intermediate key is in a PKCS#11 token: where the next
    /// intermediate's key is in the token (`ca::rotation`).
    pub fn next_intermediate_state(&self) -> PathBuf {
        self.root.join("intermediate-next.toml")
    }

    /// The intermediate that signed before the last rotation (PEM): kept
    /// for OCSP and its CRL until the last certificate it signed expires.
    pub fn previous_intermediate_cert(&self) -> PathBuf {
        self.root.join("intermediate-previous.pem")
    }

    /// The previous intermediate's key (PKCS#8 PEM, 0600): signs its CRL
    /// and OCSP answers, never a certificate.
    pub fn previous_intermediate_key(&self) -> PathBuf {
        self.root.join("intermediate-previous.key")
    }

    /// When the previous intermediate stopped signing and when the last
    /// certificate it signed expires (`ca::rotation`).
    pub fn previous_intermediate_state(&self) -> PathBuf {
        self.root.join("intermediate-previous.toml")
    }

    /// The root's CRL (DER), covering the intermediates: made by `certd
    /// init` and `certd ca sign-root-crl`, where the root key is.
    pub fn root_crl(&self) -> PathBuf {
        self.root.join("root.crl")
    }

    /// What the root's CRL says and its number (`ca::root_crl`).
    pub fn root_crl_state(&self) -> PathBuf {
        self.root.join("root-crl.toml")
    }

    /// The trust bundle workloads verify against (the root).
    pub fn bundle(&self) -> PathBuf {
        self.root.join("bundle.pem")
    }

    /// What `certd init` chose (trust domain, key type); written last.
    pub fn ca_metadata(&self) -> PathBuf {
        self.root.join("ca.toml")
    }

    /// The sled database directory.
    pub fn database(&self) -> PathBuf {
        self.root.join("db")
    }

    /// The database this data directory's certd uses when nothing else
    /// names one (`config::DatabaseFile`, written by `certd replica
    /// import`; 0600).
    pub fn database_settings(&self) -> PathBuf {
        self.root.join("database.toml")
    }

    /// What the database is known to have held (`store::marks`), kept
    /// beside the CA files so that it outlives a damaged database.
    pub fn store_marks(&self) -> PathBuf {
        self.root.join("store-marks.toml")
    }

    /// The secret JWT-SVID signing keys are derived from (0600).
    pub fn jwt_master_key(&self) -> PathBuf {
        self.root.join("jwt-master.key")
    }

    /// The admin API's Unix socket (0600), present while `certd serve` runs.
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }
}
