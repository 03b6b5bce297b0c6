//! The PostgreSQL backend: one database shared by several certd replicas.
//!
//! The only code that knows PostgreSQL. Records are kept as the shared
//! codec's bytes (`store::codec`) beside the columns that queries select
//! and order by. Every write is one transaction, committed before the call
//! returns (PostgreSQL's own group commit shares WAL flushes between
//! concurrent transactions, so certd adds none). Guarantees across replicas
//! come from the database: a join token is consumed by `DELETE` (one
//! transaction deletes the row, the others find none), serials are a
//! primary key, the CRL number is one counter row incremented in place.
//!
//! **Changes.** Writes other replicas must see (entries, revocations) send
//! a notification on the channel `certd_changes` in the same transaction,
//! so it is delivered only if the write commits. `listen` forwards other
//! replicas' notifications to the change feed, and after losing its
//! connection (when notifications may have been missed) tells the feed to
//! reload everything.
//!
//! **Faults.** The pool reconnects by itself; a call that cannot reach the
//! database fails with `Unavailable`, and `fault()` reports it until a call
//! succeeds again.

mod acme;
mod backend;
mod federation;
mod listen;
mod retention;
mod schema;
pub mod scratch;

pub(crate) use backend::PgBackend;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::codec as record;
use super::marks::StoreMarks;
use super::{
    AuditEntry, BackupSummary, Change, ChangeFeed, EntryRecord, FederationRecord, ForeignBundle,
    IssuanceRecord, JoinTokenRecord, PolicyRecord, Revocation, RevokeOutcome, RevokedEntry,
    SignedCrl, Storage, StoreError, Successor, TokenHash,
};
use certd_core::identity::{Serial, ServiceName, TrustDomain};

/// Connections each replica keeps at most.
const POOL_SIZE: usize = 32;
/// How long a call waits for a connection (from the pool, or a new one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one store call (a statement, a transaction) may wait on the
/// database; see `PgStore::within`.
const STATEMENT_DEADLINE: Duration = Duration::from_secs(5);
/// The notification channel.
const CHANNEL: &str = "certd_changes";
/// Row of `counters` holding the last CRL number handed out.
const CRL_NUMBER: &str = "crl-number";
/// Row of `meta` holding the store id.
const STORE_ID: &str = "store-id";

/// A connection pool on one PostgreSQL database, and the listener that
/// follows other replicas' changes.
#[derive(Debug)]
pub struct PgStore {
    pool: Pool,
    location: String,
    changes: ChangeFeed,
    /// Names this process in the notifications it sends, so the listener
    /// skips its own.
    origin: String,
    faulted: AtomicBool,
    fault: Mutex<Option<String>>,
    /// Set when a call ran out of `STATEMENT_DEADLINE` (the database hangs):
    /// calls then fail at once instead of each waiting out the deadline,
    /// until the readiness probe (which does not wait on this) gets an
    /// answer.
    hung: AtomicBool,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// How to reach the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// `postgresql://user:password@host:port/dbname?sslmode=…`, or a Unix
    /// socket directory as `host`.
    pub url: String,
    /// PEM roots that sign the server's certificate; the Mozilla roots when
    /// `None`. TLS is used as `sslmode` in the URL says.
    pub ca_file: Option<std::path::PathBuf>,
}

/// What `certd db backup` and `restore` say about a PostgreSQL store.
pub const BACKUP_WITH_POSTGRESQL: &str = "certd backs up and restores only its sled store; this certd keeps its records in PostgreSQL: back it up with PostgreSQL's own tools (pg_dump, or base backups with WAL archiving) and restore with pg_restore";

impl PgStore {
    /// Connects, applies the schema migrations, and starts the listener.
    pub async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            settings.url.parse().map_err(|error| StoreError::Opening {
                path: "the database URL".into(),
                source: Box::new(error),
            })?;
        let location = describe(&config);
        let tls = tls(settings.ca_file.as_deref(), &location)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| StoreError::Opening {
                path: location.clone(),
                source: Box::new(error),
            })?;
        let mut client = pool.get().await.map_err(|error| StoreError::Open {
            path: location.clone(),
            reason: match pool_error(&error) {
                StoreError::Unavailable(reason) | StoreError::Backend(reason) => reason,
                other => other.to_string(),
            },
        })?;
        schema::migrate(&mut client, &location).await?;
        retention::index_by_expiry_once(&mut client).await?;
        drop(client);
        let mut origin = [0u8; 8];
        certd_core::fsutil::fill_random(&mut origin);
        let origin = hex::encode(origin);
        let changes = ChangeFeed::default();
        let listener = tokio::spawn(listen::follow(config, tls, origin.clone(), changes.clone()));
        Ok(PgStore {
            pool,
            location,
            changes,
            origin,
            faulted: AtomicBool::new(false),
            hung: AtomicBool::new(false),
            fault: Mutex::new(None),
            listener,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.hung.load(Ordering::Relaxed) {
            return self.watch(Err(StoreError::Unavailable(format!(
                "the database did not answer within {} s; waiting for it to answer again",
                STATEMENT_DEADLINE.as_secs()
            ))));
        }
        self.pooled().await
    }

    /// A connection from the pool, whether or not the database hangs.
    async fn pooled(&self) -> Result<deadpool_postgres::Object, StoreError> {
        match self.pool.get().await {
            Ok(client) => Ok(client),
            Err(error) => self.watch(Err(pool_error(&error))),
        }
    }

    /// Passes `result` on, keeping `fault()` current: set by a failure to
    /// reach the database, cleared by any call that succeeds.
    fn watch<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Err(error) if error.is_storage_fault() => {
                let mut fault = match self.fault.lock() {
                    Ok(fault) => fault,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if fault.is_none() {
                    tracing::error!(error = %certd_core::error_kind::with_causes(&error), database = %self.location, "cannot reach the database; requests get UNAVAILABLE until it answers");
                }
                *fault = Some(error.to_string());
                self.faulted.store(true, Ordering::Relaxed);
            }
            Ok(_) if self.faulted.load(Ordering::Relaxed) => {
                self.faulted.store(false, Ordering::Relaxed);
                self.hung.store(false, Ordering::Relaxed);
                match self.fault.lock() {
                    Ok(mut fault) => *fault = None,
                    Err(poisoned) => *poisoned.into_inner() = None,
                }
                tracing::info!(database = %self.location, "the database answers again");
            }
            _ => {}
        }
        result
    }

    /// `work` on a database connection, given at most `STATEMENT_DEADLINE`:
    /// a database that hangs (frozen, or a network partition that drops
    /// packets) makes the call UNAVAILABLE and the daemon not ready,
    /// instead of holding the caller past its own deadline. A write cut off
    /// here may still commit when the database wakes up; nothing was
    /// answered for it, so at worst a serial or a join token is spent.
    async fn within<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(STATEMENT_DEADLINE, work).await {
            Ok(result) => result,
            Err(_) => {
                self.hung.store(true, Ordering::Relaxed);
                Err(StoreError::Unavailable(format!(
                    "the database did not answer within {} s",
                    STATEMENT_DEADLINE.as_secs()
                )))
            }
        }
    }

    fn notification(&self, change: &Change) -> Option<String> {
        listen::encode(&self.origin, change)
    }
}

/// The URL without its password, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("postgres");
    format!("postgresql://{host}:{port}/{database}")
}

fn tls(ca_file: Option<&std::path::Path>, location: &str) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|error| StoreError::Open {
                path: location.to_owned(),
                reason: format!("cannot read {}: {error}", path.display()),
            })?;
            for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
                let certificate = certificate.map_err(|error| StoreError::Open {
                    path: location.to_owned(),
                    reason: format!("{}: {error}", path.display()),
                })?;
                roots.add(certificate).map_err(|error| StoreError::Open {
                    path: location.to_owned(),
                    reason: format!("{}: {error}", path.display()),
                })?;
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(certd_core::crypto::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::Opening {
            path: location.to_owned(),
            source: Box::new(error),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Tells the other replicas of a change (`listen`) from inside the
/// transaction that makes it, so they hear of it only if it commits.
async fn notify_in(
    transaction: &tokio_postgres::Transaction<'_>,
    notification: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(payload) = notification {
        transaction
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// A database error: the server or the connection failing, or a conflict
/// worth retrying (`Unavailable`), or the server refusing the statement
/// (`Backend`, a bug).
fn db_error(error: tokio_postgres::Error) -> StoreError {
    classify(&error, "the database connection failed")
}

fn pool_error(error: &deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => {
            classify(error, "cannot connect to the database")
        }
        other => StoreError::Unavailable(format!(
            "cannot connect to the database: {}",
            certd_core::error_kind::with_causes(other)
        )),
    }
}

fn classify(error: &tokio_postgres::Error, unreachable: &str) -> StoreError {
    let Some(db) = error.as_db_error() else {
        // With its causes: "error performing TLS handshake" alone would not
        // say that the certificate's issuer is unknown.
        let message = certd_core::error_kind::with_causes(error);
        // tokio-postgres names no error kinds; these two are certd's own
        // mistakes about column types, not the database failing.
        if message.starts_with("error serializing") || message.starts_with("error deserializing") {
            return StoreError::Backend(message);
        }
        return StoreError::Unavailable(format!("{unreachable}: {message}"));
    };
    let code = db.code().code();
    let message = format!("{code}: {}", db.message());
    // SQLSTATE classes: 08 connection exception, 40 transaction rollback
    // (serialization failure, deadlock), 53 insufficient resources, 57
    // operator intervention (shutdown), 58 system error.
    if ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
    {
        StoreError::Unavailable(format!("the database failed: {message}"))
    } else {
        StoreError::Backend(message)
    }
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[async_trait]
impl Storage for PgStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    /// One statement, its own transaction, committed durably before it
    /// answers: delete the token (none deleted: `TokenAlreadyUsed`) and
    /// insert the record unless its serial exists (`SerialTaken`, the token
    /// left as it was). PostgreSQL shares WAL flushes between concurrent
    /// commits by itself: the announcement is held to the end, unused.
    async fn record_announced_issuance(
        &self,
        issued: &IssuanceRecord,
        token: Option<&TokenHash>,
        _announced: crate::WriteComing,
    ) -> Result<(), StoreError> {
        let encoded = record::encode(issued)?;
        let client = self.client().await?;
        let result = self
            .within(async {
                let (serial, service, revoked) = (
                    issued.serial.as_bytes(),
                    issued.service.as_str(),
                    issued.revocation.is_some(),
                );
                let hash = token.map(TokenHash::as_slice);
                // One statement, so one round trip and its own transaction:
                // the token's row is deleted and the record inserted only if
                // that deletion found it. A taken serial is a unique
                // violation, which undoes the whole statement, the deletion
                // with it.
                let statement = match hash {
                    Some(_) => client.prepare_cached(
                        "WITH consumed AS (DELETE FROM join_tokens WHERE hash = $7 RETURNING 1)
                         INSERT INTO certificates
                             (serial, service, issued_at, revoked, record, not_after)
                         SELECT $1::bytea, $2::text, $3::bigint, $4::boolean, $5::bytea, $6::bigint
                         WHERE EXISTS (SELECT 1 FROM consumed)",
                    ),
                    None => client.prepare_cached(
                        "INSERT INTO certificates
                             (serial, service, issued_at, revoked, record, not_after)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    ),
                }
                .await
                .map_err(db_error)?;
                let mut parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                    &serial,
                    &service,
                    &issued.issued_at,
                    &revoked,
                    &encoded,
                    &issued.not_after,
                ];
                if let Some(hash) = &hash {
                    parameters.push(hash);
                }
                let started = std::time::Instant::now();
                let inserted = client.execute(&statement, &parameters).await;
                crate::metrics::commit_took(started.elapsed());
                match inserted {
                    Ok(0) => Err(StoreError::TokenAlreadyUsed),
                    Ok(_) => Ok(()),
                    Err(error)
                        if error.code()
                            == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        Err(StoreError::SerialTaken(issued.serial.clone()))
                    }
                    Err(error) => Err(db_error(error)),
                }
            })
            .await;
        self.watch(result)
    }

    async fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        let mut client = self.client().await?;
        let notification = self.notification(&Change::Revoked {
            serial: serial.clone(),
        });
        let result = self
            .within(async {
                let transaction = client.transaction().await.map_err(db_error)?;
                let Some(row) = transaction
                    .query_opt(
                        "SELECT record FROM certificates WHERE serial = $1 FOR UPDATE",
                        &[&serial.as_bytes()],
                    )
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(None);
                };
                let mut revoked: IssuanceRecord = record::decode(row.get::<_, &[u8]>(0))?;
                if revoked.revocation.is_some() {
                    return Ok(Some(RevokeOutcome::AlreadyRevoked(revoked)));
                }
                revoked.revocation = Some(revocation);
                let entry = RevokedEntry {
                    serial: revoked.serial.clone(),
                    revocation,
                    not_after: revoked.not_after,
                };
                transaction
                    .execute(
                        "UPDATE certificates SET record = $2, revoked = true WHERE serial = $1",
                        &[&serial.as_bytes(), &record::encode(&revoked)?],
                    )
                    .await
                    .map_err(db_error)?;
                transaction
                    .execute(
                        "INSERT INTO revocations (serial, not_after, entry) VALUES ($1, $2, $3)
                     ON CONFLICT (serial) DO UPDATE SET not_after = $2, entry = $3",
                        &[
                            &serial.as_bytes(),
                            &entry.not_after,
                            &record::encode(&entry)?,
                        ],
                    )
                    .await
                    .map_err(db_error)?;
                notify_in(&transaction, notification.as_deref()).await?;
                transaction.commit().await.map_err(db_error)?;
                Ok(Some(RevokeOutcome::Revoked(revoked)))
            })
            .await;
        self.watch(result)
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        self.record(
            "SELECT record FROM certificates WHERE serial = $1",
            &[&serial.as_bytes()],
        )
        .await
    }

    async fn serial_exists(&self, serial: &Serial) -> Result<bool, StoreError> {
        self.number(
            "SELECT count(*) FROM certificates WHERE serial = $1",
            &[&serial.as_bytes()],
        )
        .await
        .map(|found| found > 0)
    }

    async fn certificates(
        &self,
        service: Option<&ServiceName>,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        match service {
            None => {
                self.records("SELECT record FROM certificates ORDER BY serial", &[])
                    .await
            }
            Some(service) => {
                self.records(
                    "SELECT record FROM certificates WHERE service = $1 ORDER BY serial",
                    &[&service.as_str()],
                )
                .await
            }
        }
    }

    async fn newest_certificates(
        &self,
        service: Option<&ServiceName>,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match service {
            None => {
                self.records(
                    "SELECT record FROM certificates
                     ORDER BY issued_at DESC, serial DESC LIMIT $1",
                    &[&limit],
                )
                .await
            }
            Some(service) => {
                self.records(
                    "SELECT record FROM certificates WHERE service = $1
                     ORDER BY issued_at DESC, serial DESC LIMIT $2",
                    &[&service.as_str(), &limit],
                )
                .await
            }
        }
    }

    /// Keyset pagination on the `(issued_at, serial)` and `(service,
    /// issued_at, serial)` indexes, or their partial twins over revoked
    /// rows (migration 9); one row more than asked tells whether anything
    /// is left. A row is its own record, so nothing is skipped.
    async fn certificates_before(
        &self,
        index: crate::TimeIndex<'_>,
        before: Option<&crate::CertificateCursor>,
        limit: usize,
    ) -> Result<crate::CertificateWindow, StoreError> {
        let rows = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        if let Some(range) = index.expiry {
            return self
                .certificates_by_expiry_before(range, before, rows, limit)
                .await;
        }
        let service = index.service.map(ServiceName::as_str);
        let mut parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        let mut conditions = Vec::new();
        if let Some(service) = &service {
            parameters.push(service);
            conditions.push(format!("service = ${}", parameters.len()));
        }
        let serial = before.map(|cursor| cursor.serial.as_bytes());
        if let (Some(cursor), Some(serial)) = (before, &serial) {
            parameters.push(&cursor.at);
            parameters.push(serial);
            conditions.push(format!(
                "(issued_at, serial) < (${}, ${})",
                parameters.len() - 1,
                parameters.len()
            ));
        }
        if index.revoked_only {
            conditions.push("revoked".to_owned());
        }
        parameters.push(&rows);
        // One of eight statements, each prepared once per connection.
        let sql = format!(
            "SELECT record FROM certificates {} ORDER BY issued_at DESC, serial DESC LIMIT ${}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            },
            parameters.len()
        );
        let mut records: Vec<IssuanceRecord> = self.records(&sql, &parameters).await?;
        let more = records.len() > limit;
        records.truncate(limit);
        Ok(crate::CertificateWindow {
            examined: records.len(),
            scanned_to: records.last().map(crate::CertificateCursor::of),
            records,
            more,
        })
    }

    async fn record_count(&self) -> Result<u64, StoreError> {
        self.number("SELECT count(*) FROM certificates", &[]).await
    }

    async fn revoked_unexpired(&self, now: i64) -> Result<Vec<RevokedEntry>, StoreError> {
        self.records(
            "SELECT entry FROM revocations WHERE not_after >= $1 ORDER BY serial",
            &[&now],
        )
        .await
    }

    async fn prune_expired_revocations(&self, now: i64) -> Result<usize, StoreError> {
        self.execute("DELETE FROM revocations WHERE not_after < $1", &[&now])
            .await
    }

    async fn next_crl_number(&self) -> Result<u64, StoreError> {
        self.number(
            "INSERT INTO counters (name, value) VALUES ($1, 1)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1
             RETURNING value",
            &[&CRL_NUMBER],
        )
        .await
    }

    /// Keeps the newest few CRLs and tells the other replicas.
    async fn publish_crl(&self, crl: &SignedCrl) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let number = i64::try_from(crl.number).unwrap_or(i64::MAX);
        let entries = i64::try_from(crl.entries).unwrap_or(i64::MAX);
        let notification = self.notification(&Change::CrlPublished { number: crl.number });
        let result = self
            .within(async {
                let transaction = client.transaction().await.map_err(db_error)?;
                transaction
                    .execute(
                        "INSERT INTO crls (number, this_update, next_update, entries, der)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (number) DO NOTHING",
                        &[
                            &number,
                            &crl.this_update,
                            &crl.next_update,
                            &entries,
                            &crl.der,
                        ],
                    )
                    .await
                    .map_err(db_error)?;
                transaction
                    .execute(
                        "DELETE FROM crls WHERE number < $1::bigint - 10",
                        &[&number],
                    )
                    .await
                    .map_err(db_error)?;
                notify_in(&transaction, notification.as_deref()).await?;
                transaction.commit().await.map_err(db_error)
            })
            .await;
        self.watch(result)
    }

    async fn newest_crl(&self) -> Result<Option<SignedCrl>, StoreError> {
        let client = self.client().await?;
        let result = self
            .within(async {
                client
                    .query_opt(
                        "SELECT number, this_update, next_update, entries, der FROM crls
                         ORDER BY number DESC LIMIT 1",
                        &[],
                    )
                    .await
                    .map_err(db_error)
            })
            .await
            .map(|row| {
                row.map(|row| SignedCrl {
                    number: u64_of(row.get(0)),
                    this_update: row.get(1),
                    next_update: row.get(2),
                    entries: u64_of(row.get(3)),
                    der: row.get(4),
                })
            });
        self.watch(result)
    }

    async fn insert_join_tokens(
        &self,
        tokens: &[(TokenHash, JoinTokenRecord)],
    ) -> Result<(), StoreError> {
        let mut hashes = Vec::with_capacity(tokens.len());
        let mut expiries = Vec::with_capacity(tokens.len());
        let mut values = Vec::with_capacity(tokens.len());
        for (hash, token) in tokens {
            hashes.push(hash.to_vec());
            expiries.push(token.expires_at);
            values.push(record::encode(token)?);
        }
        self.execute(
            "INSERT INTO join_tokens (hash, expires_at, token)
             SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bytea[])",
            &[&hashes, &expiries, &values],
        )
        .await
        .map(drop)
    }

    async fn join_token(&self, hash: &TokenHash) -> Result<Option<JoinTokenRecord>, StoreError> {
        self.record(
            "SELECT token FROM join_tokens WHERE hash = $1",
            &[&hash.as_slice()],
        )
        .await
    }

    async fn join_tokens(&self) -> Result<Vec<(TokenHash, JoinTokenRecord)>, StoreError> {
        let client = self.client().await?;
        let result = client
            .query("SELECT hash, token FROM join_tokens ORDER BY hash", &[])
            .await
            .map_err(db_error)
            .and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        let hash = TokenHash::try_from(row.get::<_, &[u8]>(0))
                            .map_err(|_| StoreError::Corrupt("join token hash".into()))?;
                        Ok((hash, record::decode(row.get::<_, &[u8]>(1))?))
                    })
                    .collect()
            });
        self.watch(result)
    }

    async fn raise_crl_number(&self, at_least: u64) -> Result<(), StoreError> {
        let at_least = i64::try_from(at_least).unwrap_or(i64::MAX);
        self.execute(
            "INSERT INTO counters (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, $2)",
            &[&CRL_NUMBER, &at_least],
        )
        .await
        .map(drop)
    }

    async fn join_token_count(&self) -> Result<u64, StoreError> {
        self.number("SELECT count(*) FROM join_tokens", &[]).await
    }

    async fn purge_expired_tokens(&self, now: i64) -> Result<usize, StoreError> {
        self.execute("DELETE FROM join_tokens WHERE expires_at < $1", &[&now])
            .await
    }

    async fn remove_join_tokens(&self, hashes: &[TokenHash]) -> Result<usize, StoreError> {
        let hashes: Vec<&[u8]> = hashes.iter().map(|hash| hash.as_slice()).collect();
        self.execute(
            "DELETE FROM join_tokens WHERE hash = ANY($1::bytea[])",
            &[&hashes],
        )
        .await
    }

    async fn insert_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        self.write_entry(
            "INSERT INTO entries (id, entry) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            entry,
        )
        .await
    }

    async fn replace_entry(&self, entry: &EntryRecord) -> Result<bool, StoreError> {
        self.write_entry("UPDATE entries SET entry = $2 WHERE id = $1", entry)
            .await
    }

    async fn remove_entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        let mut client = self.client().await?;
        let notification = self.notification(&Change::Entry { id: id.to_owned() });
        let result = self
            .within(async {
                let transaction = client.transaction().await.map_err(db_error)?;
                let Some(row) = transaction
                    .query_opt("DELETE FROM entries WHERE id = $1 RETURNING entry", &[&id])
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(None);
                };
                let removed: EntryRecord = record::decode(row.get::<_, &[u8]>(0))?;
                notify_in(&transaction, notification.as_deref()).await?;
                transaction.commit().await.map_err(db_error)?;
                Ok(Some(removed))
            })
            .await;
        self.watch(result)
    }

    async fn entry(&self, id: &str) -> Result<Option<EntryRecord>, StoreError> {
        self.record("SELECT entry FROM entries WHERE id = $1", &[&id])
            .await
    }

    async fn entries(&self) -> Result<Vec<EntryRecord>, StoreError> {
        self.records("SELECT entry FROM entries ORDER BY id", &[])
            .await
    }

    async fn policy(&self) -> Result<Option<PolicyRecord>, StoreError> {
        self.record("SELECT policy FROM policy WHERE id = 1", &[])
            .await
    }

    async fn insert_federation(&self, federation: &FederationRecord) -> Result<bool, StoreError> {
        self.insert_federation_row(federation).await
    }

    async fn remove_federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        self.remove_federation_row(trust_domain).await
    }

    async fn federation(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        self.record(
            "SELECT federation FROM federations WHERE trust_domain = $1",
            &[&trust_domain.as_str()],
        )
        .await
    }

    async fn federations(&self) -> Result<Vec<FederationRecord>, StoreError> {
        self.records(
            "SELECT federation FROM federations ORDER BY trust_domain",
            &[],
        )
        .await
    }

    async fn accept_foreign_bundle(
        &self,
        trust_domain: &TrustDomain,
        bundle: &ForeignBundle,
    ) -> Result<bool, StoreError> {
        self.accept_foreign_bundle_row(trust_domain, bundle).await
    }

    async fn bundle_sequence(&self, digest: &[u8; 32], at_least: u64) -> Result<u64, StoreError> {
        self.bundle_sequence_row(digest, at_least).await
    }

    async fn stored_bundle_sequence(&self) -> Result<u64, StoreError> {
        self.number(
            "SELECT COALESCE((SELECT sequence FROM bundle_sequence WHERE id = 1), 0)",
            &[],
        )
        .await
    }

    /// One conditional statement, so of two replicas replacing one version
    /// exactly one changes a row: the first policy is inserted only if
    /// there is none, a later one updates only the version it replaces.
    async fn replace_policy(
        &self,
        expected: u64,
        policy: &PolicyRecord,
    ) -> Result<bool, StoreError> {
        if policy.version <= expected {
            return Ok(false);
        }
        let encoded = record::encode(policy)?;
        let version = i64::try_from(policy.version)
            .map_err(|_| StoreError::Corrupt("policy version".into()))?;
        let expected =
            i64::try_from(expected).map_err(|_| StoreError::Corrupt("policy version".into()))?;
        let change = Change::Policy {
            version: policy.version,
        };
        if expected == 0 {
            self.write_announced(
                "INSERT INTO policy (id, version, policy) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&version, &encoded],
                &change,
            )
            .await
        } else {
            self.write_announced(
                "UPDATE policy SET version = $1, policy = $2 WHERE id = 1 AND version = $3",
                &[&version, &encoded, &expected],
                &change,
            )
            .await
        }
    }

    /// Committed without waiting for the WAL flush (`synchronous_commit`
    /// off for this transaction only): the trait asks an audit entry to be
    /// durable with the next durable write, which every later commit on the
    /// database provides, and PostgreSQL's WAL writer flushes it within
    /// 200 ms regardless. The decision it describes was committed before.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let encoded = record::encode(entry)?;
        let client = self.client().await?;
        let result = self
            .within(async {
                let insert = client
                    .prepare_cached("INSERT INTO audit (at, entry) VALUES ($1, $2)")
                    .await
                    .map_err(db_error)?;
                // The transaction's four messages go out at once (tokio-postgres
                // sends each request when its future is first polled, and
                // `join!` polls in order): one round trip, where `transaction()`
                // would wait for BEGIN and for COMMIT apart. The server runs
                // them in order even if this future is dropped, so the
                // connection goes back to the pool outside a transaction. A
                // failed insert makes the COMMIT a rollback.
                let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                    [&entry.at, &encoded];
                let (begun, inserted, committed) = tokio::join!(
                    client.batch_execute("BEGIN; SET LOCAL synchronous_commit TO OFF"),
                    client.execute(&insert, &parameters),
                    client.batch_execute("COMMIT"),
                );
                begun.map_err(db_error)?;
                inserted.map_err(db_error)?;
                committed.map_err(db_error)
            })
            .await;
        self.watch(result)
    }

    async fn audit_since(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.records(
            "SELECT entry FROM (
                 SELECT sequence, entry FROM audit WHERE at >= $1
                 ORDER BY sequence DESC LIMIT $2
             ) newest ORDER BY sequence",
            &[&since, &limit],
        )
        .await
    }

    /// Every write was committed before its call returned.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backup(&self, _out: &mut dyn std::io::Write) -> Result<BackupSummary, StoreError> {
        Err(StoreError::NotOnThisBackend(BACKUP_WITH_POSTGRESQL.into()))
    }

    async fn marks(&self) -> Result<StoreMarks, StoreError> {
        let client = self.client().await?;
        let result = self
            .within(async {
                let store_id = client
                    .query_opt("SELECT value FROM meta WHERE key = $1", &[&STORE_ID])
                    .await
                    .map_err(db_error)?
                    .map(|row| row.get::<_, String>(0));
                let crl_number = client
                    .query_opt("SELECT value FROM counters WHERE name = $1", &[&CRL_NUMBER])
                    .await
                    .map_err(db_error)?
                    .map_or(0, |row| u64_of(row.get(0)));
                // One statement, so one snapshot: a purge committing between
                // two reads would count its rows as present and purged both.
                let counts = client
                    .query_one(
                        "SELECT count(*), count(*) FILTER (WHERE revoked),
                             COALESCE((SELECT value FROM counters WHERE name = $1), 0),
                             COALESCE((SELECT value FROM counters WHERE name = $2), 0)
                         FROM certificates",
                        &[&retention::PURGED_RECORDS, &retention::PURGED_REVOCATIONS],
                    )
                    .await
                    .map_err(db_error)?;
                let (purged_records, purged_revocations) =
                    (u64_of(counts.get(2)), u64_of(counts.get(3)));
                Ok(StoreMarks {
                    store_id,
                    crl_number,
                    // Ever recorded and revoked: a purge is no rollback.
                    records: Some(u64_of(counts.get(0)) + purged_records),
                    purged_records,
                    has_records: u64_of(counts.get(0)) > 0,
                    revocations: u64_of(counts.get(1)) + purged_revocations,
                })
            })
            .await;
        self.watch(result)
    }

    async fn set_store_id(&self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&STORE_ID, &id],
        )
        .await
        .map(drop)
    }

    async fn successor(&self, predecessor: &Serial) -> Result<Option<Successor>, StoreError> {
        let client = self.client().await?;
        let result = self
            .within(async {
                let statement = client
                    .prepare_cached(
                        "SELECT successor, presented FROM successors WHERE predecessor = $1",
                    )
                    .await
                    .map_err(db_error)?;
                let row = client
                    .query_opt(&statement, &[&predecessor.as_bytes()])
                    .await
                    .map_err(db_error)?;
                Ok(row.map(|row| Successor {
                    serial: Serial::from_stored(row.get::<_, Vec<u8>>(0)),
                    presented: row.get(1),
                }))
            })
            .await;
        self.watch(result)
    }

    async fn swap_successor(
        &self,
        predecessor: &Serial,
        expected: Option<&Successor>,
        new: &Successor,
    ) -> Result<bool, StoreError> {
        let (predecessor, serial) = (predecessor.as_bytes(), new.serial.as_bytes());
        let changed = match expected {
            None => {
                self.execute(
                    "INSERT INTO successors (predecessor, successor, presented)
                     VALUES ($1, $2, $3) ON CONFLICT (predecessor) DO NOTHING",
                    &[&predecessor, &serial, &new.presented],
                )
                .await?
            }
            Some(expected) => {
                self.execute(
                    "UPDATE successors SET successor = $2, presented = $3
                     WHERE predecessor = $1 AND successor = $4 AND presented = $5",
                    &[
                        &predecessor,
                        &serial,
                        &new.presented,
                        &expected.serial.as_bytes(),
                        &expected.presented,
                    ],
                )
                .await?
            }
        };
        Ok(changed == 1)
    }

    async fn successors(&self) -> Result<Vec<(Serial, Successor)>, StoreError> {
        let client = self.client().await?;
        let result = client
            .query(
                "SELECT predecessor, successor, presented FROM successors ORDER BY predecessor",
                &[],
            )
            .await
            .map_err(db_error)
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        (
                            Serial::from_stored(row.get::<_, Vec<u8>>(0)),
                            Successor {
                                serial: Serial::from_stored(row.get::<_, Vec<u8>>(1)),
                                presented: row.get(2),
                            },
                        )
                    })
                    .collect()
            });
        self.watch(result)
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let client = self.pooled().await?;
        let result = self
            .within(async { client.simple_query("SELECT 1").await.map_err(db_error) })
            .await
            .map(drop);
        self.watch(result)
    }

    fn fault(&self) -> Option<String> {
        if !self.faulted.load(Ordering::Relaxed) {
            return None;
        }
        match self.fault.lock() {
            Ok(fault) => fault.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn acme_object(&self, key: &str) -> Result<Option<super::AcmeObject>, StoreError> {
        self.acme_object_row(key).await
    }

    async fn acme_objects(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, super::AcmeObject)>, StoreError> {
        self.acme_object_rows(prefix).await
    }

    async fn acme_objects_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, super::AcmeObject)>, StoreError> {
        self.acme_object_page_rows(prefix, after, limit).await
    }

    async fn swap_acme_object(
        &self,
        key: &str,
        expected: Option<&super::AcmeObject>,
        new: Option<&super::AcmeObject>,
    ) -> Result<bool, StoreError> {
        self.swap_acme_row(key, expected, new).await
    }

    async fn consume_acme_nonce(&self, nonce: &[u8], expires_at: i64) -> Result<bool, StoreError> {
        self.consume_acme_nonce_row(nonce, expires_at).await
    }

    async fn purge_expired_acme(&self, now: i64) -> Result<usize, StoreError> {
        self.purge_expired_acme_rows(now).await
    }

    async fn purge_expired_certificates(
        &self,
        purge: &super::CertificatePurge,
    ) -> Result<super::PurgeReport, StoreError> {
        self.purge_certificate_rows(purge).await
    }

    async fn carry_purged(&self, records: u64, revocations: u64) -> Result<(), StoreError> {
        self.add_purged(records, revocations).await
    }

    async fn purge_audit(&self, before: i64, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.execute(
            "DELETE FROM audit WHERE sequence IN (
                 SELECT sequence FROM audit WHERE at < $1 ORDER BY at LIMIT $2
             )",
            &[&before, &limit],
        )
        .await
    }
}

/// One statement's parameters.
type Parameters<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// Reads and single statements, each on a pooled connection with a
/// statement prepared once per connection, its failure watched.
impl PgStore {
    /// `certificates_before` for a listing by expiry: up to `limit` records
    /// whose expiry is within `range` and below `before`, latest expiry
    /// first, from the expiry index (migration 10). Rows an older replica
    /// wrote without `not_after` are indexed at the next start.
    async fn certificates_by_expiry_before(
        &self,
        range: crate::ExpiryRange,
        before: Option<&crate::CertificateCursor>,
        rows: i64,
        limit: usize,
    ) -> Result<crate::CertificateWindow, StoreError> {
        let mut records: Vec<IssuanceRecord> = match before {
            None => {
                self.records(
                    "SELECT record FROM certificates WHERE not_after >= $1 AND not_after <= $2 \
                     ORDER BY not_after DESC, serial DESC LIMIT $3",
                    &[&range.from, &range.to, &rows],
                )
                .await?
            }
            Some(cursor) => {
                self.records(
                    "SELECT record FROM certificates WHERE not_after >= $1 AND not_after <= $2 \
                     AND (not_after, serial) < ($3, $4) \
                     ORDER BY not_after DESC, serial DESC LIMIT $5",
                    &[
                        &range.from,
                        &range.to,
                        &cursor.at,
                        &cursor.serial.as_bytes(),
                        &rows,
                    ],
                )
                .await?
            }
        };
        let more = records.len() > limit;
        records.truncate(limit);
        Ok(crate::CertificateWindow {
            examined: records.len(),
            scanned_to: records.last().map(|record| {
                crate::CertificateCursor::in_order(crate::ListingOrder::Expiry, record)
            }),
            records,
            more,
        })
    }

    /// The records `sql` selects, one per row as codec bytes in its first
    /// column.
    async fn records<T: record::Stored>(
        &self,
        sql: &str,
        parameters: &Parameters<'_>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        let result = self
            .within(async {
                let statement = client.prepare_cached(sql).await.map_err(db_error)?;
                let rows = client
                    .query(&statement, parameters)
                    .await
                    .map_err(db_error)?;
                rows.iter()
                    .map(|row| record::decode(row.get::<_, &[u8]>(0)))
                    .collect()
            })
            .await;
        self.watch(result)
    }

    /// The one record `sql` selects by key, if any.
    async fn record<T: record::Stored>(
        &self,
        sql: &str,
        parameters: &Parameters<'_>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.records(sql, parameters).await?.into_iter().next())
    }

    /// The number `sql` selects (a `count(*)`, a counter).
    async fn number(&self, sql: &str, parameters: &Parameters<'_>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let result = self
            .within(async {
                let statement = client.prepare_cached(sql).await.map_err(db_error)?;
                let row = client
                    .query_one(&statement, parameters)
                    .await
                    .map_err(db_error)?;
                Ok(u64_of(row.get(0)))
            })
            .await;
        self.watch(result)
    }

    /// Runs `sql` on its own; how many rows it changed.
    async fn execute(&self, sql: &str, parameters: &Parameters<'_>) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let result = self
            .within(async {
                let statement = client.prepare_cached(sql).await.map_err(db_error)?;
                let changed = client
                    .execute(&statement, parameters)
                    .await
                    .map_err(db_error)?;
                Ok(usize::try_from(changed).unwrap_or(usize::MAX))
            })
            .await;
        self.watch(result)
    }

    /// Inserts or replaces an entry with `statement` (`$1` id, `$2` bytes)
    /// and tells the other replicas, in one transaction; whether a row
    /// changed.
    async fn write_entry(&self, statement: &str, entry: &EntryRecord) -> Result<bool, StoreError> {
        let encoded = record::encode(entry)?;
        let change = Change::Entry {
            id: entry.id.clone(),
        };
        self.write_announced(statement, &[&entry.id, &encoded], &change)
            .await
    }

    /// Runs one conditional write (`statement`) in a transaction and, if it
    /// changed a row, tells other replicas of `change` in the same commit;
    /// `false` (and nothing written) if it changed none.
    async fn write_announced(
        &self,
        statement: &str,
        parameters: &Parameters<'_>,
        change: &Change,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let notification = self.notification(change);
        let result = self
            .within(async {
                let transaction = client.transaction().await.map_err(db_error)?;
                let written = transaction
                    .execute(statement, parameters)
                    .await
                    .map_err(db_error)?;
                if written == 0 {
                    return Ok(false);
                }
                notify_in(&transaction, notification.as_deref()).await?;
                transaction.commit().await.map_err(db_error)?;
                Ok(true)
            })
            .await;
        self.watch(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{self, Backend};
    use std::sync::Arc;

    /// A fresh database on the test process's scratch PostgreSQL server;
    /// each `open` is a new pool on it (a restart).
    struct Postgres(PgSettings);

    #[async_trait]
    impl Backend for Postgres {
        async fn open(&self) -> crate::SharedStorage {
            Arc::new(PgStore::open(&self.0).await.unwrap())
        }
    }

    fn postgres() -> Option<Postgres> {
        scratch::ScratchServer::fresh_database_for_tests().map(Postgres)
    }

    crate::storage_behaviour_suite!(postgres);

    /// Replicas started at the same instant on a fresh database (the first
    /// start of the Kubernetes replica set) all start: the migration,
    /// creating its version table included, runs once, under the lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_started_together_on_a_fresh_database_all_start() {
        for round in 0..5 {
            let Some(settings) = scratch::ScratchServer::fresh_database_for_tests() else {
                return;
            };
            let barrier = Arc::new(tokio::sync::Barrier::new(4));
            let starts: Vec<_> = (0..4)
                .map(|_| {
                    let settings = settings.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        PgStore::open(&settings).await.map(|_| ())
                    })
                })
                .collect();
            for start in starts {
                let started = start.await.unwrap();
                assert!(started.is_ok(), "round {round}: {}", started.unwrap_err());
            }
            let (client, connection) =
                tokio_postgres::connect(&settings.url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let versions = client
                .query("SELECT version FROM certd_schema", &[])
                .await
                .unwrap();
            assert_eq!(versions.len(), 1, "round {round}: one version row");
            let version: i32 = versions[0].get(0);
            assert_eq!(version as usize, PgStore::SCHEMA_VERSION);
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let Some(settings) = scratch::ScratchServer::fresh_database_for_tests() else {
            return;
        };
        drop(PgStore::open(&settings).await.unwrap());
        let (client, connection) = tokio_postgres::connect(&settings.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .execute("UPDATE certd_schema SET version = version + 1", &[])
            .await
            .unwrap();
        let error = PgStore::open(&settings).await.unwrap_err();
        assert!(
            error.to_string().contains("newer than this certd knows"),
            "{error}"
        );
    }

    /// Records written before the expiry column (migration 10) are given
    /// their expiry at the next open, so the retention purge finds them.
    #[tokio::test]
    async fn records_from_before_the_expiry_index_are_indexed_at_open() {
        let Some(settings) = scratch::ScratchServer::fresh_database_for_tests() else {
            return;
        };
        let store = PgStore::open(&settings).await.unwrap();
        let mut old = suite::record("billing");
        old.not_after = 300;
        store.record_issuance(&old, None).await.unwrap();
        drop(store);
        let (client, connection) = tokio_postgres::connect(&settings.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // As a certd from before migration 10 left it.
        client
            .execute("UPDATE certificates SET not_after = NULL", &[])
            .await
            .unwrap();
        let store = PgStore::open(&settings).await.unwrap();
        let purge = crate::CertificatePurge {
            expired_before: 1000,
            limit: 10,
            ..crate::CertificatePurge::default()
        };
        let report = store.purge_expired_certificates(&purge).await.unwrap();
        assert_eq!(report.purged, 1);
        assert_eq!(store.certificate(&old.serial).await.unwrap(), None);
    }
}
