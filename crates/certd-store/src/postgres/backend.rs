//! The PostgreSQL backend as `certd` chooses it: by a `postgresql://` URL
//! (or a `key=value` connection string), and what `certd db` does with it
//! (migrate, check while the replicas serve; backups are PostgreSQL's own).

use std::sync::Arc;

use async_trait::async_trait;
use certd_core::DataDir;

use super::{BACKUP_WITH_POSTGRESQL, PgSettings, PgStore};
use crate::backend::{Backend, Checked, StoreSettings};
use crate::{SharedStorage, Storage, StoreError};

pub(crate) struct PgBackend;

impl PgBackend {
    fn settings(settings: &StoreSettings) -> Result<PgSettings, StoreError> {
        let url = settings.url().ok_or_else(|| StoreError::Open {
            path: "PostgreSQL".into(),
            reason: "no database URL was given".into(),
        })?;
        Ok(PgSettings {
            url: url.to_owned(),
            ca_file: settings.ca_file().map(ToOwned::to_owned),
        })
    }
}

#[async_trait]
impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    /// A URL by its scheme; a string without one as libpq's `key=value`
    /// form, so that another backend's URL with a query is never taken.
    fn claims(&self, url: &str) -> bool {
        match url.split_once("://") {
            Some((scheme, _)) => scheme == "postgresql" || scheme == "postgres",
            None => url.contains('='),
        }
    }

    fn example(&self) -> Option<&'static str> {
        Some("a PostgreSQL URL like postgresql://certd@db.internal/certd")
    }

    fn check_url(&self, url: &str) -> Result<(), String> {
        url.parse::<tokio_postgres::Config>()
            .map(drop)
            .map_err(|error| format!("is not a PostgreSQL connection string: {error}"))
    }

    async fn open(
        &self,
        settings: &StoreSettings,
        _data_dir: &DataDir,
    ) -> Result<SharedStorage, StoreError> {
        Ok(Arc::new(PgStore::open(&Self::settings(settings)?).await?))
    }

    async fn migrate(&self, settings: &StoreSettings) -> Result<String, StoreError> {
        // Opening applies pending migrations, as any certd start does.
        let store = PgStore::open(&Self::settings(settings)?).await?;
        Ok(format!(
            "{} is at schema version {}",
            store.location(),
            PgStore::SCHEMA_VERSION
        ))
    }

    /// The replicas keep serving meanwhile: the database answers at a
    /// schema this certd knows and its entries read back. The storage
    /// itself is PostgreSQL's to check.
    async fn check(
        &self,
        settings: &StoreSettings,
        _data_dir: &DataDir,
    ) -> Result<Checked, StoreError> {
        let store = PgStore::open(&Self::settings(settings)?).await?;
        let location = format!(
            "{} (PostgreSQL, schema version {})",
            store.location(),
            PgStore::SCHEMA_VERSION
        );
        let found = store.marks().await?;
        let entries = store.entries().await?.len();
        let tokens = store.join_token_count().await?;
        let holds = format!(
            "store {}, {} certificates ({} revoked), {entries} entries, {tokens} join tokens, CRL number {}; every entry reads back",
            found.store_id.as_deref().unwrap_or("without an id yet"),
            found.records.unwrap_or_default(),
            found.revocations,
            found.crl_number
        );
        Ok(Checked {
            store: Arc::new(store),
            location,
            holds,
            note: Some(
                "PostgreSQL checks its own storage (pg_amcheck, data checksums), and pg_dump backs it up",
            ),
        })
    }

    fn file_backups(&self) -> Result<(), StoreError> {
        Err(StoreError::NotOnThisBackend(BACKUP_WITH_POSTGRESQL.into()))
    }
}
