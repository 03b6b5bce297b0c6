//! Keys as files in the data directory: `intermediate.key`,
//! `intermediate-next.key` and `intermediate-previous.key`, 0600, PKCS#8
//! PEM, encrypted with the passphrase when the CA was made with one
//! (`key_file`). The slot's file is the record of where its key is.

use rcgen::KeyPair;
use zeroize::Zeroizing;

use super::{Generated, IntermediateKey, KeyRecord, KeySecrets, KeyStore, Slot, shown};
use crate::files::{self, io_error};
use crate::{CaError, KeyType, key_file};
use certd_core::DataDir;
use certd_core::fsutil::{self, SECRET_FILE_MODE};

pub(super) struct FileKeyStore;

impl KeyStore for FileKeyStore {
    fn describe(&self) -> String {
        "key file".into()
    }

    fn generate(
        &self,
        slot: Slot,
        data_dir: &DataDir,
        key_type: KeyType,
        secrets: &KeySecrets,
    ) -> Result<Generated, CaError> {
        let key = KeyPair::generate_for(key_type.algorithm())?;
        let pem = key_file::encode(&key, secrets.passphrase.as_ref())?;
        let path = slot.key_file(data_dir);
        match slot {
            // A new CA never replaces a key that is there.
            Slot::Current => files::write_new(&path, pem.as_bytes(), SECRET_FILE_MODE)?,
            // A rotation prepared again replaces the unused next key.
            Slot::Next | Slot::Previous => {
                fsutil::replace_file(&path, pem.as_bytes(), SECRET_FILE_MODE)
                    .map_err(io_error("write", &path))?
            }
        }
        Ok(Generated {
            key: IntermediateKey::new(key),
            record: None,
        })
    }

    fn open(
        &self,
        slot: Slot,
        record: Option<&KeyRecord>,
        data_dir: &DataDir,
        _key_type: KeyType,
        secrets: &KeySecrets,
    ) -> Result<IntermediateKey, CaError> {
        if let Some(record) = record {
            return Err(CaError::Invalid {
                path: shown(&slot.state_file(data_dir)),
                reason: format!(
                    "it says the intermediate's key is in {}, but this CA keeps its keys in files",
                    record.describe()
                ),
            });
        }
        let path = slot.key_file(data_dir);
        let key_pem = Zeroizing::new(files::read_to_string(&path)?);
        let key = key_file::decode(&path, &key_pem, secrets.passphrase.as_ref())?;
        Ok(IntermediateKey::new(key))
    }

    fn key_file(&self, slot: Slot, data_dir: &DataDir) -> Option<std::path::PathBuf> {
        Some(slot.key_file(data_dir))
    }

    fn replica_needs(&self) -> Option<String> {
        None
    }
}
