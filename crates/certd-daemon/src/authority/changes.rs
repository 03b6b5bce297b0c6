//! Keeping this process's caches true when another process writes the
//! store: the registry's entry index, the OCSP answers and the CRL.
//!
//! The store's change feed (`Storage::changes`) names each change made
//! elsewhere; [`follow`] hands each to [`Authority::apply_change`] as an
//! `Update::Changed`, and a feed that fell behind as `Update::Resync`,
//! which reloads everything.
//! This process's own writes update the caches directly and never pass
//! through here.

use crate::revocation::RevocationError;
use std::future::Future;

use tokio::sync::broadcast::{self, error::RecvError};

use super::Authority;
use crate::store::{Change, StoreError};

/// How long a replica waits for the CRL of another replica's revocation
/// before building one itself.
const CRL_FROM_ELSEWHERE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the follower hands on: one change, or "reload everything".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Changed(Change),
    /// The feed dropped changes this receiver had not read yet.
    Resync,
}

/// Reads `changes` until `stopped` completes or the feed closes, calling
/// `apply` for each. A failed `apply` is logged and followed by a resync,
/// so a cache never stays behind a change it could not apply.
pub async fn follow<F, Fut>(
    mut changes: broadcast::Receiver<Change>,
    stopped: impl Future<Output = ()>,
    mut apply: F,
) where
    F: FnMut(Update) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    tokio::pin!(stopped);
    loop {
        let update = tokio::select! {
            () = &mut stopped => return,
            received = changes.recv() => match received {
                Ok(change) => Update::Changed(change),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the store's change feed fell behind; reloading caches");
                    Update::Resync
                }
                Err(RecvError::Closed) => return,
            },
        };
        if let Err(error) = apply(update).await {
            tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot apply a change made by another process; reloading caches");
            if let Err(error) = apply(Update::Resync).await {
                tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot reload caches from the store");
            }
        }
    }
}

impl Authority {
    /// Brings the caches up to date with one change or, for `Resync`, with
    /// everything the store holds.
    pub async fn apply_change(&self, update: Update) -> Result<(), StoreError> {
        match update {
            Update::Changed(Change::Entry { id }) => {
                self.registry.entry_changed(&id).await?;
                self.track_entry_change(&id);
                Ok(())
            }
            Update::Changed(Change::Policy { .. }) => self.reload_policy().await,
            // Relationships are read from the store whenever used; the
            // refresh task looks again at once.
            Update::Changed(Change::Federation { trust_domain }) => {
                self.federation_touched(&trust_domain);
                Ok(())
            }
            Update::Changed(Change::Revoked { serial }) => {
                // The replica that revoked publishes a CRL with it and says
                // so (`CrlPublished`); build one here only if that does not
                // come, e.g. because that replica died meanwhile.
                self.revocations.note_revocation_elsewhere(&serial);
                self.track_revocation_elsewhere(&serial).await;
                let (authority, serving) = (self.clone(), self.revocations.crl_number());
                tokio::spawn(async move {
                    tokio::time::sleep(CRL_FROM_ELSEWHERE_WAIT).await;
                    if authority.revocations.crl_number() <= serving
                        && let Err(error) = authority.publish_crl().await
                    {
                        tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot publish a CRL after another replica's revocation");
                    }
                });
                Ok(())
            }
            // With shards, adopting signs them (seconds at a million
            // revocations): in a task of its own, so that the changes queued
            // behind it (revocations elsewhere, whose OCSP answers must drop
            // at once) are not held up. Adoptions are one at a time.
            Update::Changed(Change::CrlPublished { .. }) if self.revocations.signs_shards() => {
                let authority = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = authority.revocations.adopt_newest_crl().await {
                        tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot serve the CRL another replica published");
                    }
                });
                Ok(())
            }
            Update::Changed(Change::CrlPublished { .. }) => self
                .revocations
                .adopt_newest_crl()
                .await
                .map(drop)
                .map_err(|error| match error {
                    RevocationError::Store(error) => error,
                    other => crate::store::StoreError::Backend(other.to_string()),
                }),
            Update::Resync | Update::Changed(Change::Reopened | Change::Missed) => {
                self.registry.resync().await?;
                self.track_entries_reloaded();
                self.reload_policy().await?;
                self.revocations.forget_cached_answers();
                self.publish_crl().await
            }
        }
    }

    /// The periodic fallback for a change feed that lost something without
    /// noticing: reloads the entries, drops the OCSP answers of serials
    /// revoked since the last call (`known_revoked` carries them between
    /// calls; `None` before the first), and serves a newer CRL if another
    /// process published one (both only where other processes write the
    /// store, `Storage::shared_with_other_processes`). Cheap enough to run every minute: the
    /// entries and the unexpired revocations, no signing (but for the
    /// shards of an adopted CRL, with `crl_shards`, one adoption at a time).
    pub async fn catch_up(
        &self,
        known_revoked: &mut Option<std::collections::HashSet<crate::identity::Serial>>,
    ) -> Result<(), StoreError> {
        self.registry.resync().await?;
        self.track_entries_reloaded();
        self.reload_policy().await?;
        // Revocations this process did not make come only from other
        // processes; a store that is this process's alone (sled) has none,
        // and reading every unexpired revocation a minute would be for
        // nothing.
        if !self.store.shared_with_other_processes() {
            return Ok(());
        }
        let now = self.now();
        let revoked = self.store.revoked_unexpired(now).await?;
        let mut current = std::collections::HashSet::with_capacity(revoked.len());
        for entry in revoked {
            if known_revoked
                .as_ref()
                .is_some_and(|known| !known.contains(&entry.serial))
            {
                self.revocations.note_revocation_elsewhere(&entry.serial);
            }
            current.insert(entry.serial);
        }
        *known_revoked = Some(current);
        match self.revocations.adopt_newest_crl().await {
            Ok(_) => Ok(()),
            Err(RevocationError::Store(error)) => Err(error),
            Err(error) => Err(StoreError::Backend(error.to_string())),
        }
    }

    async fn publish_crl(&self) -> Result<(), StoreError> {
        match self.revocations.refresh_crl().await {
            Ok(_) => Ok(()),
            Err(RevocationError::Store(error)) => Err(error),
            // Signing trouble is not the feed's: the periodic refresh retries.
            Err(error) => {
                tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot publish a CRL after a revocation elsewhere");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::ChangeFeed;

    fn change(id: &str) -> Change {
        Change::Entry { id: id.into() }
    }

    #[tokio::test]
    async fn every_change_is_applied_in_order_and_a_lag_becomes_a_resync() {
        let feed = ChangeFeed::default();
        let receiver = feed.subscribe();
        // More than the feed holds: the receiver lags and must resync.
        for n in 0..1030 {
            feed.announce(change(&n.to_string()));
        }
        feed.announce(change("last"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let follower = tokio::spawn({
            let seen = seen.clone();
            follow(
                receiver,
                async move {
                    let _ = stopped.await;
                },
                move |update| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(update);
                        Ok(())
                    }
                },
            )
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !seen
                .lock()
                .unwrap()
                .contains(&Update::Changed(change("last")))
            {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let _ = stop.send(());
        follower.await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], Update::Resync, "{:?}", &seen[..3]);
        assert_eq!(seen.last(), Some(&Update::Changed(change("last"))));
    }

    #[tokio::test]
    async fn a_failed_change_is_followed_by_a_resync() {
        let feed = ChangeFeed::default();
        let receiver = feed.subscribe();
        feed.announce(change("broken"));
        drop(feed);
        let seen = Arc::new(Mutex::new(Vec::new()));
        follow(receiver, std::future::pending(), {
            let seen = seen.clone();
            move |update| {
                let seen = seen.clone();
                async move {
                    let fail = update == Update::Changed(change("broken"));
                    seen.lock().unwrap().push(update);
                    if fail {
                        Err(StoreError::Backend("down".into()))
                    } else {
                        Ok(())
                    }
                }
            }
        })
        .await;
        assert_eq!(
            *seen.lock().unwrap(),
            [Update::Changed(change("broken")), Update::Resync]
        );
    }
}
