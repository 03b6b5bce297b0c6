//! ACME objects (table `acme_objects`) and consumed ACME nonces (table
//! `acme_nonces`), on PostgreSQL. Replicas share them: an order is
//! finalized by one replica only, and a nonce is consumed once across all.

use super::{PgStore, db_error};
use crate::{AcmeObject, StoreError};

impl PgStore {
    pub(super) async fn acme_object_row(
        &self,
        key: &str,
    ) -> Result<Option<AcmeObject>, StoreError> {
        Ok(self
            .acme_rows(
                "SELECT key, expires_at, data FROM acme_objects WHERE key = $1",
                &[&key],
            )
            .await?
            .into_iter()
            .next()
            .map(|(_, object)| object))
    }

    /// A key range rather than `LIKE` (which would read `%` and `_` in the
    /// prefix as patterns) or `left(key, length(prefix))` (which no index
    /// answers, so every listing read the whole table).
    pub(super) async fn acme_object_rows(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, AcmeObject)>, StoreError> {
        self.acme_rows(
            // A range in byte order (collation "C", as migration 8's index
            // is), which the index answers: every key starting with $1
            // lies between $1 and $1 followed by the last code point.
            "SELECT key, expires_at, data FROM acme_objects
             WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $1 || chr(1114111)
             ORDER BY key COLLATE \"C\"",
            &[&prefix],
        )
        .await
    }

    /// The same range, starting after `after`, `limit` rows at most: the
    /// index is entered at `after`, so earlier keys are never read.
    pub(super) async fn acme_object_page_rows(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, AcmeObject)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match after {
            None => {
                self.acme_rows(
                    "SELECT key, expires_at, data FROM acme_objects
                     WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $1 || chr(1114111)
                     ORDER BY key COLLATE \"C\" LIMIT $2",
                    &[&prefix, &limit],
                )
                .await
            }
            Some(after) => {
                self.acme_rows(
                    "SELECT key, expires_at, data FROM acme_objects
                     WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" > $2
                       AND key COLLATE \"C\" < $1 || chr(1114111)
                     ORDER BY key COLLATE \"C\" LIMIT $3",
                    &[&prefix, &after, &limit],
                )
                .await
            }
        }
    }

    async fn acme_rows(
        &self,
        sql: &str,
        parameters: &super::Parameters<'_>,
    ) -> Result<Vec<(String, AcmeObject)>, StoreError> {
        let client = self.client().await?;
        let result = self
            .within(async {
                let statement = client.prepare_cached(sql).await.map_err(db_error)?;
                let rows = client
                    .query(&statement, parameters)
                    .await
                    .map_err(db_error)?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let object = AcmeObject {
                            expires_at: row.get(1),
                            data: row.get(2),
                        };
                        (row.get(0), object)
                    })
                    .collect())
            })
            .await;
        self.watch(result)
    }

    /// One conditional statement: PostgreSQL's row lock makes the
    /// comparison and the write one step against other replicas.
    pub(super) async fn swap_acme_row(
        &self,
        key: &str,
        expected: Option<&AcmeObject>,
        new: Option<&AcmeObject>,
    ) -> Result<bool, StoreError> {
        let changed = match (expected, new) {
            (None, None) => {
                return Ok(self.acme_object_row(key).await?.is_none());
            }
            (None, Some(new)) => {
                self.execute(
                    "INSERT INTO acme_objects (key, expires_at, data) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key, &new.expires_at, &new.data],
                )
                .await?
            }
            (Some(expected), Some(new)) => {
                self.execute(
                    "UPDATE acme_objects SET expires_at = $4, data = $5
                     WHERE key = $1 AND expires_at IS NOT DISTINCT FROM $2 AND data = $3",
                    &[
                        &key,
                        &expected.expires_at,
                        &expected.data,
                        &new.expires_at,
                        &new.data,
                    ],
                )
                .await?
            }
            (Some(expected), None) => {
                self.execute(
                    "DELETE FROM acme_objects
                     WHERE key = $1 AND expires_at IS NOT DISTINCT FROM $2 AND data = $3",
                    &[&key, &expected.expires_at, &expected.data],
                )
                .await?
            }
        };
        Ok(changed == 1)
    }

    pub(super) async fn consume_acme_nonce_row(
        &self,
        nonce: &[u8],
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO acme_nonces (nonce, expires_at) VALUES ($1, $2)
                 ON CONFLICT (nonce) DO NOTHING",
                &[&nonce, &expires_at],
            )
            .await?;
        Ok(inserted == 1)
    }

    pub(super) async fn purge_expired_acme_rows(&self, now: i64) -> Result<usize, StoreError> {
        let purged = self
            .number(
                "WITH objects AS (DELETE FROM acme_objects WHERE expires_at < $1 RETURNING 1),
                      nonces AS (DELETE FROM acme_nonces WHERE expires_at < $1 RETURNING 1)
                 SELECT (SELECT count(*) FROM objects) + (SELECT count(*) FROM nonces)",
                &[&now],
            )
            .await?;
        Ok(usize::try_from(purged).unwrap_or(usize::MAX))
    }
}
