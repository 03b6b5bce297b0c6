//! Federation relationships (table `federations`) and the sequence of
//! certd's own bundle (table `bundle_sequence`), on PostgreSQL.

use super::{PgStore, db_error, notify_in, record};
use crate::{Change, FederationRecord, ForeignBundle, StoreError};
use certd_core::identity::TrustDomain;

impl PgStore {
    pub(super) async fn insert_federation_row(
        &self,
        federation: &FederationRecord,
    ) -> Result<bool, StoreError> {
        let encoded = record::encode(federation)?;
        let change = Change::Federation {
            trust_domain: federation.trust_domain.to_string(),
        };
        self.write_announced(
            "INSERT INTO federations (trust_domain, federation) VALUES ($1, $2)
             ON CONFLICT (trust_domain) DO NOTHING",
            &[&federation.trust_domain.as_str(), &encoded],
            &change,
        )
        .await
    }

    pub(super) async fn remove_federation_row(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        let mut client = self.client().await?;
        let notification = self.notification(&Change::Federation {
            trust_domain: trust_domain.to_string(),
        });
        let result = self
            .within(async {
                let transaction = client.transaction().await.map_err(db_error)?;
                let Some(row) = transaction
                    .query_opt(
                        "DELETE FROM federations WHERE trust_domain = $1 RETURNING federation",
                        &[&trust_domain.as_str()],
                    )
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(None);
                };
                let removed: FederationRecord = record::decode(row.get::<_, &[u8]>(0))?;
                notify_in(&transaction, notification.as_deref()).await?;
                transaction.commit().await.map_err(db_error)?;
                Ok(Some(removed))
            })
            .await;
        self.watch(result)
    }

    /// The row is locked for the comparison, so of two replicas storing
    /// bundles at once the one with the higher sequence stays.
    pub(super) async fn accept_foreign_bundle_row(
        &self,
        trust_domain: &TrustDomain,
        bundle: &ForeignBundle,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let notification = self.notification(&Change::Federation {
            trust_domain: trust_domain.to_string(),
        });
        let result = self
            .within(async {
                let transaction = client.transaction().await.map_err(db_error)?;
                let Some(row) = transaction
                    .query_opt(
                        "SELECT federation FROM federations WHERE trust_domain = $1 FOR UPDATE",
                        &[&trust_domain.as_str()],
                    )
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(false);
                };
                let mut federation: FederationRecord = record::decode(row.get::<_, &[u8]>(0))?;
                if federation
                    .bundle
                    .as_ref()
                    .is_some_and(|held| held.sequence >= bundle.sequence)
                {
                    return Ok(false);
                }
                federation.bundle = Some(bundle.clone());
                let encoded = record::encode(&federation)?;
                transaction
                    .execute(
                        "UPDATE federations SET federation = $2 WHERE trust_domain = $1",
                        &[&trust_domain.as_str(), &encoded],
                    )
                    .await
                    .map_err(db_error)?;
                notify_in(&transaction, notification.as_deref()).await?;
                transaction.commit().await.map_err(db_error)?;
                Ok(true)
            })
            .await;
        self.watch(result)
    }

    /// One statement: the row lock of the upsert orders replicas.
    pub(super) async fn bundle_sequence_row(
        &self,
        digest: &[u8; 32],
        at_least: u64,
    ) -> Result<u64, StoreError> {
        let at_least = i64::try_from(at_least).unwrap_or(i64::MAX);
        let digest = digest.as_slice();
        self.number(
            "INSERT INTO bundle_sequence (id, sequence, digest) VALUES (1, GREATEST(1, $2::bigint), $1)
                 ON CONFLICT (id) DO UPDATE SET
                     sequence = CASE WHEN bundle_sequence.digest = $1
                         THEN GREATEST(bundle_sequence.sequence, $2)
                         ELSE GREATEST(bundle_sequence.sequence + 1, $2) END,
                     digest = $1
                 RETURNING sequence",
            &[&digest, &at_least],
        )
        .await
    }
}
