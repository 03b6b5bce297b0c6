//! The sled backend as `certd` chooses it: the default, in the data
//! directory, for a configuration without a database URL; and what
//! `certd db` does with it (check, back up to a file, restore).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use certd_core::DataDir;

use super::{RestoreFloor, SledStore, verify_backup};
use crate::backend::{Backend, Checked, StoreSettings};
use crate::progress::Progress;
use crate::{RestoreReport, SharedStorage, StoreError};

pub(crate) struct SledBackend;

#[async_trait]
impl Backend for SledBackend {
    fn name(&self) -> &'static str {
        "sled"
    }

    // sled is chosen by having no URL.
    fn claims(&self, _url: &str) -> bool {
        false
    }

    fn example(&self) -> Option<&'static str> {
        None
    }

    fn check_url(&self, _url: &str) -> Result<(), String> {
        Err("sled needs no URL: leave it out".into())
    }

    async fn open(
        &self,
        _settings: &StoreSettings,
        data_dir: &DataDir,
    ) -> Result<SharedStorage, StoreError> {
        Ok(Arc::new(SledStore::open(&data_dir.database())?))
    }

    async fn migrate(&self, _settings: &StoreSettings) -> Result<String, StoreError> {
        Ok("sled needs no migration: certd reads every earlier format of its records".into())
    }

    fn location_before_opening(
        &self,
        _settings: &StoreSettings,
        data_dir: &DataDir,
    ) -> Option<String> {
        Some(data_dir.database().display().to_string())
    }

    async fn check(
        &self,
        _settings: &StoreSettings,
        data_dir: &DataDir,
    ) -> Result<Checked, StoreError> {
        let database = data_dir.database();
        // Opening would make an empty one.
        if !database.join("db").exists() {
            return Err(StoreError::BehindMarks {
                path: database.display().to_string(),
                shortfalls: "it does not exist".into(),
            });
        }
        let store: SharedStorage = Arc::new(SledStore::open(&database)?);
        // Reading every record back is what a backup does; into nowhere.
        let contents = tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.backup(&mut std::io::sink())
        })
        .await
        .map_err(|error| StoreError::Open {
            path: database.display().to_string(),
            reason: format!("the check stopped: {error}"),
        })??;
        Ok(Checked {
            store,
            location: database.display().to_string(),
            holds: format!("{contents}; every record reads back"),
            note: None,
        })
    }

    fn file_backups(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn restore(
        &self,
        data_dir: &DataDir,
        backup: &Path,
        progress: &Progress,
    ) -> Result<RestoreReport, StoreError> {
        restore(data_dir, backup, progress)
    }
}

/// Replaces the data directory's database with a backup (certd must not be
/// serving it), then rewrites the marks to match: the store id and CRL
/// number carry on, the counts become the backup's.
fn restore(
    data_dir: &DataDir,
    backup: &Path,
    progress: &Progress,
) -> Result<RestoreReport, StoreError> {
    let marks_path = data_dir.store_marks();
    let previous_marks = crate::marks::MarksFile::read(&marks_path)?;
    // A daemon holding the database must be stopped first; a damaged
    // database (the usual reason to restore) need not open.
    if let Err(locked @ StoreError::Locked(_)) = SledStore::open(&data_dir.database()) {
        return Err(locked);
    }
    let contents = verify_backup(backup, progress)?;
    if let (Some(marks), Some(backup_id)) = (&previous_marks, &contents.store_id)
        && !marks.store_id.is_empty()
        && *backup_id != marks.store_id
    {
        return Err(StoreError::Damaged {
            path: backup.display().to_string(),
            reason: format!(
                "it is a backup of another database (store id {backup_id}; this CA's is {})",
                marks.store_id
            ),
        });
    }
    // The CA's store id carries on; a backup from before store ids gets
    // one now, so that marks and store agree.
    let store_id = previous_marks
        .as_ref()
        .map(|m| m.store_id.clone())
        .or_else(|| contents.store_id.clone())
        .unwrap_or_else(|| {
            let mut id = [0u8; 16];
            certd_core::fsutil::fill_random(&mut id);
            hex::encode(id)
        });
    let floor = RestoreFloor {
        store_id: Some(store_id.clone()),
        crl_number: previous_marks.as_ref().map_or(0, |m| m.crl_number),
    };
    let (restored, replaced) = super::restore(&data_dir.database(), backup, &floor, progress)?;
    let crl_number = restored.crl_number.max(floor.crl_number);
    let marks = crate::marks::MarksFile {
        store_id,
        crl_number,
        records: restored.records + restored.purged_records,
        revocations: restored.revocations + restored.purged_revocations,
        // Unknown until the next issuance; the counts above stand in.
        newest_serial: None,
        newest_not_after: None,
    };
    marks.write(&marks_path).map_err(|error| StoreError::Open {
        path: marks_path.display().to_string(),
        reason: format!("cannot write the store's marks: {error}"),
    })?;
    Ok(RestoreReport {
        restored,
        crl_number,
        replaced,
        previous_marks,
    })
}
