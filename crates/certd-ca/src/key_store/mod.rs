//! Where the intermediates' signing keys live: the key-store seam.
//!
//! A [`KeyStore`] makes and opens the key of each intermediate slot (the
//! current one, the next one a rotation prepared, the previous one still
//! answering for its certificates). Init, load, rotation, promotion and
//! replica packaging ask the store and never branch on which one it is:
//! key files in the data directory (plain or encrypted; `file`) or a
//! PKCS#11 token (`pkcs11`).
//!
//! A store that keeps a key outside the data directory says where in a
//! [`KeyRecord`], which the caller writes into the slot's state file
//! (`ca.toml`, `intermediate-next.toml`, `intermediate-previous.toml`);
//! a store whose key is a file in the slot needs none. Records are
//! untagged, so each store's record keeps the shape it was first written
//! in and adding a store changes no state file.
//!
//! Owns the signing key type ([`IntermediateKey`]) and the secrets that
//! unlock keys ([`KeySecrets`]). Must not touch the store or the network
//! (a store's own library, such as the PKCS#11 module, aside), nor decide
//! which files a rotation writes: that is `rotation`'s.
//!
//! Adding a key store (a cloud KMS, Vault transit): its own file here
//! implementing `KeyStore`, its record as a variant of `KeyRecord`, and one
//! arm in [`of`].

mod file;
pub(super) mod pkcs11;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CaError, KeyPassphrase, KeyType};
use certd_core::DataDir;

pub use pkcs11::{Pkcs11KeyRef, Pkcs11Pin};

/// One of the intermediates a CA keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The one that signs: `intermediate.*`, named by `ca.toml`.
    Current,
    /// Prepared by a rotation, not yet signing: `intermediate-next.*`.
    Next,
    /// Retired by a rotation, answering for its certificates until they
    /// expire: `intermediate-previous.*`.
    Previous,
}

impl Slot {
    /// The slot's key file in `data_dir`, for stores that keep one.
    pub fn key_file(self, data_dir: &DataDir) -> PathBuf {
        match self {
            Slot::Current => data_dir.intermediate_key(),
            Slot::Next => data_dir.next_intermediate_key(),
            Slot::Previous => data_dir.previous_intermediate_key(),
        }
    }

    /// The slot's state file, which holds its `KeyRecord` if it has one.
    pub fn state_file(self, data_dir: &DataDir) -> PathBuf {
        match self {
            Slot::Current => data_dir.ca_metadata(),
            Slot::Next => data_dir.next_intermediate_state(),
            Slot::Previous => data_dir.previous_intermediate_state(),
        }
    }
}

/// Where a key outside the data directory is, as its store recorded it.
/// Untagged: each variant is told apart by its fields, so the state files
/// keep the shape certd has always written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum KeyRecord {
    /// A key pair in a PKCS#11 token.
    Pkcs11(Pkcs11KeyRef),
}

impl<'de> Deserialize<'de> for KeyRecord {
    /// With one store that records keys, a record is that store's: a
    /// malformed one is refused with its own error (``missing field
    /// `key_label` ``), not serde's "did not match any variant". A second
    /// such store tells the two apart here, by their fields.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Pkcs11KeyRef::deserialize(deserializer).map(KeyRecord::Pkcs11)
    }
}

impl KeyRecord {
    /// Where the key is, in words, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            KeyRecord::Pkcs11(key_ref) => pkcs11::describe(key_ref),
        }
    }
}

/// The secrets that unlock the intermediate's key, whichever store keeps
/// it: the passphrase of an encrypted key file, or the PIN of the PKCS#11
/// token holding it.
#[derive(Debug, Clone, Default)]
pub struct KeySecrets {
    pub passphrase: Option<KeyPassphrase>,
    pub pkcs11_pin: Option<Pkcs11Pin>,
}

/// The intermediate's signing key, wherever it is kept: a key file (plain
/// or encrypted; the key is then in memory) or a PKCS#11 token (the key
/// never leaves it). Everything that signs goes through rcgen's
/// `SigningKey`.
pub struct IntermediateKey(Box<dyn rcgen::SigningKey + Send + Sync>);

impl IntermediateKey {
    fn new(key: impl rcgen::SigningKey + Send + Sync + 'static) -> Self {
        IntermediateKey(Box::new(key))
    }
}

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

/// A key made in a slot, with the record of where it is (`None` when the
/// slot's key file is where).
pub struct Generated {
    pub key: IntermediateKey,
    pub record: Option<KeyRecord>,
}

/// Where one CA keeps its intermediates' keys.
pub trait KeyStore: Send + Sync {
    /// Where keys are kept, in words, for logs: `key file`, or the token
    /// and the current key's label.
    fn describe(&self) -> String;

    /// Makes a new key for `slot`, refusing to overwrite one, and returns
    /// it with the record to write into the slot's state.
    fn generate(
        &self,
        slot: Slot,
        data_dir: &DataDir,
        key_type: KeyType,
        secrets: &KeySecrets,
    ) -> Result<Generated, CaError>;

    /// Opens the key of `slot`, which `record` (from the slot's state file)
    /// names.
    fn open(
        &self,
        slot: Slot,
        record: Option<&KeyRecord>,
        data_dir: &DataDir,
        key_type: KeyType,
        secrets: &KeySecrets,
    ) -> Result<IntermediateKey, CaError>;

    /// The file in the data directory that holds the key of `slot`, if
    /// this store keeps keys there: what rotation copies and renames
    /// between slots, and what replica packages carry.
    fn key_file(&self, slot: Slot, data_dir: &DataDir) -> Option<PathBuf>;

    /// What every replica needs besides the data directory's files, if
    /// anything, in words.
    fn replica_needs(&self) -> Option<String>;
}

/// The store of a CA whose current key's record is `record` (`None`: key
/// files). Every intermediate of a CA lives in the store it was created in.
/// The one place that names each store.
pub fn of(record: Option<&KeyRecord>) -> Box<dyn KeyStore> {
    match record {
        None => Box::new(file::FileKeyStore),
        Some(KeyRecord::Pkcs11(current)) => Box::new(pkcs11::Pkcs11KeyStore::new(current.clone())),
    }
}

/// What `open` says when a slot whose key is outside the data directory
/// has no record of where.
fn no_record(slot: Slot, data_dir: &DataDir, store: &str) -> CaError {
    CaError::Invalid {
        path: slot.state_file(data_dir).display().to_string(),
        reason: format!("it does not say where the intermediate's key is in {store}"),
    }
}

/// `path` for an error message.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state files a previous build wrote decode to the same records,
    /// and encode back to the same text.
    #[test]
    fn records_keep_the_shape_certd_has_always_written() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct State {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pkcs11_key: Option<KeyRecord>,
        }
        let written = "[pkcs11_key]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"certd\"\nkey_label = \"certd-intermediate-0a1b2c3d\"\n";
        let state: State = toml::from_str(written).unwrap();
        let Some(KeyRecord::Pkcs11(key_ref)) = &state.pkcs11_key else {
            panic!("a PKCS#11 record: {state:?}");
        };
        assert_eq!(key_ref.token_label, "certd");
        assert_eq!(key_ref.key_label, "certd-intermediate-0a1b2c3d");
        assert_eq!(toml::to_string(&state).unwrap(), written);
        // ca.toml as `certd init --pkcs11-module …` has always written it.
        let ca_toml = "trust_domain = \"certd.internal\"\nkey_type = \"ecdsa-p256\"\ncreated_at = 1700000000\n\n[intermediate_key_pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"certd\"\nkey_label = \"certd-intermediate\"\n";
        let metadata: crate::CaMetadata = toml::from_str(ca_toml).unwrap();
        assert!(matches!(
            &metadata.intermediate_key,
            Some(KeyRecord::Pkcs11(key_ref)) if key_ref.key_label == "certd-intermediate"
        ));
        assert_eq!(toml::to_string(&metadata).unwrap(), ca_toml);
        assert_eq!(
            of(metadata.intermediate_key.as_ref()).describe(),
            "PKCS#11 token \"certd\", key \"certd-intermediate\""
        );
        assert_eq!(of(None).describe(), "key file");

        let malformed =
            toml::from_str::<State>("[pkcs11_key]\nmodule = \"/m.so\"\ntoken_label = \"t\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            malformed.contains("missing field `key_label`"),
            "{malformed}"
        );

        let none: State = toml::from_str("").unwrap();
        assert_eq!(none.pkcs11_key, None);
        assert_eq!(toml::to_string(&none).unwrap(), "");
    }
}
