//! Which database keeps certd's records, chosen by its URL.
//!
//! Each backend registers once in [`BACKENDS`] and says which URLs it
//! claims (by scheme); no URL means the default, sled in the data
//! directory. [`StoreSettings`] is a URL a backend has checked, so the
//! daemon, the configuration and `certd db` open, migrate, check, back up
//! and restore through [`Backend`] and never name a backend.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use certd_core::DataDir;

use crate::progress::Progress;
use crate::{RestoreReport, SharedStorage, StoreError};

/// Every backend certd can keep its records in. Adding one is one line
/// here and its own module.
static BACKENDS: &[&dyn Backend] = &[&crate::sled::SledBackend, &crate::postgres::PgBackend];

/// The backend for a data directory without a database URL.
fn default_backend() -> &'static dyn Backend {
    &crate::sled::SledBackend
}

/// A kind of database, and what certd can do with one beyond [`Storage`]
/// (`crate::Storage`).
#[async_trait]
pub trait Backend: Sync {
    /// How messages name it: `sled`, `PostgreSQL`.
    fn name(&self) -> &'static str;

    /// Whether `url` names a database of this kind (by its scheme).
    fn claims(&self, url: &str) -> bool;

    /// A URL of this kind, for the message that refuses one nobody claims
    /// ("a PostgreSQL URL like postgresql://…"); `None` for a backend
    /// reached without one.
    fn example(&self) -> Option<&'static str>;

    /// Checks a URL this backend claimed; the message says what is wrong,
    /// never a password.
    fn check_url(&self, url: &str) -> Result<(), String>;

    /// Opens the database, applying its schema migrations, without
    /// checking it against the data directory's marks (`open_checked`
    /// does that).
    async fn open(
        &self,
        settings: &StoreSettings,
        data_dir: &DataDir,
    ) -> Result<SharedStorage, StoreError>;

    /// `certd db migrate`: brings the schema up to date and says where it
    /// is now.
    async fn migrate(&self, settings: &StoreSettings) -> Result<String, StoreError>;

    /// Where the database is, if that can be said before opening it
    /// (`certd db check` prints it first, so that a database that does not
    /// open still shows which one it was).
    fn location_before_opening(
        &self,
        settings: &StoreSettings,
        data_dir: &DataDir,
    ) -> Option<String> {
        let _ = (settings, data_dir);
        None
    }

    /// `certd db check`: opens a database that must exist already and
    /// reads back what it holds; [`Checked`] says what was found.
    async fn check(
        &self,
        settings: &StoreSettings,
        data_dir: &DataDir,
    ) -> Result<Checked, StoreError>;

    /// Whether certd backs this database up to a file and restores it from
    /// one (`certd db backup --offline`, `certd db restore`); if not, the
    /// refusal names the database's own tools.
    fn file_backups(&self) -> Result<(), StoreError>;

    /// `certd db restore`: replaces the data directory's database with a
    /// backup file (certd stopped), then rewrites the marks to match;
    /// `progress` counts the records checked, then restored.
    fn restore(
        &self,
        data_dir: &DataDir,
        backup: &Path,
        progress: &Progress,
    ) -> Result<RestoreReport, StoreError> {
        let _ = (data_dir, backup, progress);
        self.file_backups()?;
        Err(StoreError::NotOnThisBackend(format!(
            "certd cannot restore a {} database",
            self.name()
        )))
    }
}

/// What `certd db check` found, before comparing with the marks.
pub struct Checked {
    pub store: SharedStorage,
    /// Where the database is, and its schema where it has one.
    pub location: String,
    /// What it holds, read back.
    pub holds: String,
    /// The last word: how the database's own storage is checked and
    /// backed up, where that is not certd's job.
    pub note: Option<&'static str>,
}

/// Where certd keeps its records: a database URL a backend has checked
/// (none: sled in the data directory), and the roots for the database
/// server's certificate.
#[derive(Clone)]
pub struct StoreSettings {
    backend: &'static dyn Backend,
    url: Option<String>,
    ca_file: Option<PathBuf>,
}

impl StoreSettings {
    /// Chooses the backend that claims `url` and has it checked; the
    /// message says what is wrong, never a password.
    pub fn new(url: Option<&str>, ca_file: Option<PathBuf>) -> Result<Self, String> {
        let backend = match url {
            None => default_backend(),
            Some(url) => {
                let backend = BACKENDS
                    .iter()
                    .copied()
                    .find(|backend| backend.claims(url))
                    .ok_or_else(|| {
                        let examples: Vec<_> =
                            BACKENDS.iter().filter_map(|b| b.example()).collect();
                        format!("must be {}", examples.join(" or "))
                    })?;
                backend.check_url(url)?;
                backend
            }
        };
        Ok(StoreSettings {
            backend,
            url: url.map(str::to_owned),
            ca_file,
        })
    }

    pub fn backend(&self) -> &'static dyn Backend {
        self.backend
    }

    /// The database's URL (it may hold a password: never log it).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// PEM roots for the database server's certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Opens the database without checking it against the marks.
    pub async fn open(&self, data_dir: &DataDir) -> Result<SharedStorage, StoreError> {
        self.backend.open(self, data_dir).await
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            backend: default_backend(),
            url: None,
            ca_file: None,
        }
    }
}

impl PartialEq for StoreSettings {
    fn eq(&self, other: &Self) -> bool {
        self.backend.name() == other.backend.name()
            && self.url == other.url
            && self.ca_file == other.ca_file
    }
}

impl Eq for StoreSettings {}

// The URL may carry a password.
impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("backend", &self.backend.name())
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_chooses_the_backend() {
        assert_eq!(StoreSettings::default().backend().name(), "sled");
        let postgres = StoreSettings::new(Some("postgresql://certd@db.internal/certd"), None);
        assert_eq!(postgres.unwrap().backend().name(), "PostgreSQL");
        let keywords = StoreSettings::new(Some("host=/run/postgresql dbname=certd"), None);
        assert_eq!(keywords.unwrap().backend().name(), "PostgreSQL");
    }

    #[test]
    fn a_url_nobody_claims_is_refused_naming_what_would_do() {
        // Not PostgreSQL's, although its query has a `=`.
        let refused =
            StoreSettings::new(Some("mysql://certd@db/certd?ssl-mode=required"), None).unwrap_err();
        assert_eq!(
            refused,
            "must be a PostgreSQL URL like postgresql://certd@db.internal/certd"
        );
    }

    #[test]
    fn debug_never_shows_the_url() {
        let settings =
            StoreSettings::new(Some("postgresql://certd:hunter2@db.internal/certd"), None).unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("PostgreSQL"), "{shown}");
    }
}
