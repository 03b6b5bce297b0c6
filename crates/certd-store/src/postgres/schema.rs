//! The PostgreSQL schema and its versioned migrations.
//!
//! Each migration runs once, in its own transaction, in order; the version
//! reached is kept in `certd_schema`. Replicas starting together serialise
//! on an advisory lock, so a migration never runs twice. A database whose
//! schema is newer than this build knows is refused: an older certd must
//! not write records a newer one reads differently.

use tokio_postgres::Client;

use super::{PgStore, db_error};
use crate::StoreError;

/// The migrations, in order; the schema version is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the records, as the shared codec's bytes beside the columns that
    // queries select and order by.
    "CREATE TABLE certificates (
        serial bytea PRIMARY KEY,
        service text NOT NULL,
        issued_at bigint NOT NULL,
        revoked boolean NOT NULL DEFAULT false,
        record bytea NOT NULL
    );
    CREATE INDEX certificates_by_service ON certificates (service, serial);
    CREATE INDEX certificates_by_issue ON certificates (issued_at, serial);
    CREATE TABLE revocations (
        serial bytea PRIMARY KEY REFERENCES certificates (serial),
        not_after bigint NOT NULL,
        entry bytea NOT NULL
    );
    CREATE TABLE join_tokens (
        hash bytea PRIMARY KEY,
        expires_at bigint NOT NULL,
        token bytea NOT NULL
    );
    CREATE TABLE entries (
        id text PRIMARY KEY,
        entry bytea NOT NULL
    );
    CREATE TABLE audit (
        sequence bigserial PRIMARY KEY,
        at bigint NOT NULL,
        entry bytea NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (at);
    CREATE TABLE counters (
        name text PRIMARY KEY,
        value bigint NOT NULL
    );
    CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL
    );",
    // 2: CRLs one replica signs and the others serve.
    "CREATE TABLE crls (
        number bigint PRIMARY KEY,
        this_update bigint NOT NULL,
        next_update bigint NOT NULL,
        entries bigint NOT NULL,
        der bytea NOT NULL
    );",
    // 3: renewal lineage, one row per renewed certificate.
    "CREATE TABLE successors (
        predecessor bytea PRIMARY KEY,
        successor bytea NOT NULL,
        presented boolean NOT NULL
    );",
    // 4: the token policy, one row replaced whole.
    "CREATE TABLE policy (
        id smallint PRIMARY KEY CHECK (id = 1),
        version bigint NOT NULL,
        policy bytea NOT NULL
    );",
    // 5: a service's newest certificates read from an index in time order,
    // not sorted from all of that service's records (`certd list --service`).
    "CREATE INDEX certificates_by_service_issue ON certificates (service, issued_at, serial);",
    // 6: federation relationships, and the sequence of certd's own bundle.
    "CREATE TABLE federations (
        trust_domain text PRIMARY KEY,
        federation bytea NOT NULL
    );
    CREATE TABLE bundle_sequence (
        id smallint PRIMARY KEY CHECK (id = 1),
        sequence bigint NOT NULL,
        digest bytea NOT NULL
    );",
    // 7: ACME objects (accounts, orders, authorizations, EAB keys) as the
    // daemon encodes them, and the nonces consumed, until they expire.
    "CREATE TABLE acme_objects (
        key text PRIMARY KEY,
        expires_at bigint,
        data bytea NOT NULL
    );
    CREATE INDEX acme_objects_by_expiry ON acme_objects (expires_at);
    CREATE TABLE acme_nonces (
        nonce bytea PRIMARY KEY,
        expires_at bigint NOT NULL
    );
    CREATE INDEX acme_nonces_by_expiry ON acme_nonces (expires_at);",
    // 8: listing ACME objects by key prefix (an account's orders) as a
    // range in byte order: the primary key's index follows the database's
    // collation, which a prefix range cannot rely on.
    "CREATE INDEX acme_objects_by_key ON acme_objects (key COLLATE \"C\");",
    // 9: revoked certificates a page at a time in time order, overall and
    // per service (`certd list --status revoked`), without reading the
    // unrevoked ones.
    "CREATE INDEX certificates_revoked_by_issue ON certificates (issued_at, serial)
         WHERE revoked;
     CREATE INDEX certificates_revoked_by_service_issue ON certificates
         (service, issued_at, serial) WHERE revoked;",
    // 10: the retention purge finds the oldest expired records from an
    // index by expiry. Records written before it are given their expiry
    // once, at open, from their codec bytes (`retention`).
    "ALTER TABLE certificates ADD COLUMN not_after bigint;
    CREATE INDEX certificates_by_expiry ON certificates (not_after, serial);",
];

/// Key of the advisory lock replicas take around migrations.
const MIGRATION_LOCK: i64 = 0x6365_7274_6400_0001;

/// Brings the schema up to date, or refuses a newer one.
///
/// Every statement runs under the lock, creating `certd_schema` too: two
/// `CREATE TABLE IF NOT EXISTS` running at once both see no table, and the
/// second fails on the catalogue's unique index (`23505` on
/// `pg_type_typname_nsp_index`), which killed one of two replicas started
/// together on a fresh database. A replica that waited finds the schema
/// current and starts normally.
pub(super) async fn migrate(client: &mut Client, location: &str) -> Result<u32, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    let outcome = match client
        .batch_execute("CREATE TABLE IF NOT EXISTS certd_schema (version integer NOT NULL);")
        .await
    {
        Ok(()) => apply(client, location).await,
        Err(error) => Err(db_error(error)),
    };
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error);
    let version = outcome?;
    unlocked?;
    Ok(version)
}

async fn apply(client: &mut Client, location: &str) -> Result<u32, StoreError> {
    let current: i32 = client
        .query_opt("SELECT version FROM certd_schema", &[])
        .await
        .map_err(db_error)?
        .map_or(0, |row| row.get(0));
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if current > known {
        return Err(StoreError::Open {
            path: location.to_owned(),
            reason: format!(
                "its schema is version {current}, newer than this certd knows ({known}); upgrade certd"
            ),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        let transaction = client.transaction().await.map_err(db_error)?;
        transaction
            .batch_execute(migration)
            .await
            .map_err(db_error)?;
        transaction
            .execute("DELETE FROM certd_schema", &[])
            .await
            .map_err(db_error)?;
        transaction
            .execute(
                "INSERT INTO certd_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(db_error)?;
        transaction.commit().await.map_err(db_error)?;
        tracing::info!(version, database = location, "applied a schema migration");
    }
    Ok(u32::try_from(known).unwrap_or(0))
}

impl PgStore {
    /// The schema version this build writes.
    pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
}
