//! Renewal lineage: each certificate renews once, so a copied key stops at
//! the next renewal.
//!
//! Every renewal links the certificate presented (the predecessor) to the
//! one issued for it (its successor), in the store, with a compare-and-swap
//! so that of two renewals racing, one wins. A certificate may renew when:
//! - it is its own predecessor's current successor (or has no recorded
//!   predecessor): one superseded by another renewal of its predecessor
//!   cannot; and
//! - it has no successor, or one never presented. A successor counts as
//!   presented once it has itself renewed: that proves its holder got it.
//!   A renewal whose answer was lost in transit therefore gets back in by
//!   renewing again; the unused successor is revoked (`superseded`), so at
//!   most one live successor exists per certificate.
//!
//! A certificate whose successor was revoked cannot renew either: revoking
//! the newest certificate cuts the lineage there.
//!
//! A refusal is `PERMISSION_DENIED` naming the successor, audited with the
//! renewal, logged and counted as a possible stolen key.
//!
//! This module decides and records lineage; signing, recording the new
//! certificate and revoking stay with the rest of `authority`.

use super::{Authority, Caller};
use crate::attest::AttestError;
use crate::ca::RevocationReason;
use crate::identity::Serial;
use crate::store::{IssuanceRecord, Successor};
use crate::{Error, Result};

/// What a renewal of `predecessor` may replace: the successor it saw, which
/// must still be the successor when the new certificate is linked.
#[derive(Debug, Clone)]
pub(super) struct LineageClaim {
    pub predecessor: Serial,
    pub expected: Option<Successor>,
}

/// The most certificates one `revoke --lineage` follows in each direction:
/// far more renewals than a year of hourly ones, and a bound on a loop a
/// damaged store could make.
const MAX_LINEAGE: usize = 100_000;

impl Authority {
    /// Checks that `current` may renew, records that it was presented, and
    /// returns what the new certificate will replace.
    pub(super) async fn lineage_claim(&self, current: &IssuanceRecord) -> Result<LineageClaim> {
        let store = self.store.as_ref();
        if let Some(predecessor) = &current.renewed_from {
            let mut seen = store.successor(predecessor).await?;
            loop {
                match seen {
                    // Renewed before lineage was recorded.
                    None => break,
                    Some(ref link) if link.serial != current.serial => {
                        return Err(self.possible_stolen_key(AttestError::Superseded {
                            serial: current.serial.to_hex(),
                            predecessor: predecessor.to_hex(),
                            successor: link.serial.to_hex(),
                        }));
                    }
                    Some(ref link) if link.presented => break,
                    Some(ref link) => {
                        let presented = Successor {
                            serial: current.serial.clone(),
                            presented: true,
                        };
                        if store
                            .swap_successor(predecessor, Some(link), &presented)
                            .await?
                        {
                            break;
                        }
                        // Someone else moved it meanwhile: decide again.
                        seen = store.successor(predecessor).await?;
                    }
                }
            }
        }
        let expected = store.successor(&current.serial).await?;
        if let Some(successor) = &expected {
            if successor.presented {
                return Err(self.possible_stolen_key(AttestError::AlreadyRenewed {
                    serial: current.serial.to_hex(),
                    successor: successor.serial.to_hex(),
                }));
            }
            // An operator who revokes the newest certificate cuts the
            // lineage there: its predecessor must not grow a new branch.
            if let Some(record) = store.certificate(&successor.serial).await?
                && record.revocation.is_some()
            {
                return Err(self.possible_stolen_key(AttestError::SuccessorRevoked {
                    serial: current.serial.to_hex(),
                    successor: successor.serial.to_hex(),
                }));
            }
        }
        Ok(LineageClaim {
            predecessor: current.serial.clone(),
            expected,
        })
    }

    /// Links `claim`'s predecessor to `new`, unless another renewal moved
    /// it since the claim was made.
    pub(super) async fn link_successor(
        &self,
        claim: &mut LineageClaim,
        new: &Serial,
    ) -> Result<()> {
        let link = Successor {
            serial: new.clone(),
            presented: false,
        };
        if !self
            .store
            .swap_successor(&claim.predecessor, claim.expected.as_ref(), &link)
            .await?
        {
            return Err(AttestError::RenewalRaced {
                serial: claim.predecessor.to_hex(),
            }
            .into());
        }
        claim.expected = Some(link);
        Ok(())
    }

    /// After a renewal's record is written: whether its predecessor still
    /// names it as successor. Another renewal of the same predecessor may
    /// have replaced the link between `link_successor` and the record; its
    /// `retire_if_replaced` then found no record to revoke (this one
    /// was not written yet), so this renewal revokes its own certificate as
    /// superseded, hands nothing out and reports the race. The store is
    /// linearizable, so one of the two always sees the other: either the
    /// other renewal's revocation finds this record, or this check finds
    /// the link moved.
    pub(super) async fn confirm_successor(&self, claim: &LineageClaim, new: &Serial) -> Result<()> {
        let linked = self.store.successor(&claim.predecessor).await?;
        if linked.as_ref().is_some_and(|link| link.serial == *new) {
            return Ok(());
        }
        let caller = Caller(format!(
            "certd (a renewal of {} that lost a race)",
            claim.predecessor.to_hex()
        ));
        if let Err(error) = self
            .revoke(&caller, &new.to_hex(), RevocationReason::Superseded)
            .await
        {
            tracing::error!(
                serial = %new.to_hex(),
                error = %crate::error_kind::with_causes(&error),
                "cannot revoke the certificate of a renewal that lost a race; it was never handed out and can no longer renew"
            );
        }
        Err(AttestError::RenewalRaced {
            serial: claim.predecessor.to_hex(),
        }
        .into())
    }

    /// After a renewal that meant to replace `replaced`, a successor of
    /// `predecessor` never presented: if the link has moved away from it
    /// (this renewal or a racing one moved it), revokes it as superseded,
    /// so that one live successor remains. A failure is logged: the
    /// superseded certificate can renew no more in any case (it is no
    /// longer its predecessor's successor).
    pub(super) async fn retire_if_replaced(&self, predecessor: &Serial, replaced: &Successor) {
        let linked = match self.store.successor(predecessor).await {
            Ok(linked) => linked,
            Err(error) => {
                tracing::error!(
                    serial = %replaced.serial.to_hex(),
                    error = %crate::error_kind::with_causes(&error),
                    "cannot tell whether a renewed certificate was superseded; it can no longer renew if it was"
                );
                return;
            }
        };
        let Some(by) = linked.map(|link| link.serial) else {
            return;
        };
        if by == replaced.serial {
            return;
        }
        let caller = Caller(format!("certd (renewal as {})", by.to_hex()));
        let serial = replaced.serial.to_hex();
        match self
            .revoke(&caller, &serial, RevocationReason::Superseded)
            .await
        {
            Ok(_) => tracing::info!(
                serial,
                successor = %by.to_hex(),
                "revoked a renewed certificate that was never used: its predecessor renewed again (a lost answer, or a copied key)"
            ),
            // A renewal cut off between linking and recording: nothing was
            // issued under that serial.
            Err(Error::NotFound(_)) => {}
            Err(error) => tracing::error!(
                serial,
                error = %crate::error_kind::with_causes(&error),
                "cannot revoke a superseded certificate; it can no longer renew, but stays valid until it expires or is revoked"
            ),
        }
    }

    fn possible_stolen_key(&self, refusal: AttestError) -> Error {
        tracing::warn!(%refusal, "renewal refused: possible stolen key");
        crate::metrics::get().possible_stolen_keys.inc();
        refusal.into()
    }

    /// Every certificate of `serial`'s chain of renewals: back through the
    /// certificates it was renewed from, forward through their successors.
    pub(super) async fn lineage_of(&self, serial: &Serial) -> Result<Vec<IssuanceRecord>> {
        let store = self.store.as_ref();
        let Some(start) = store.certificate(serial).await? else {
            return Err(Error::NotFound(format!("certificate {serial}")));
        };
        let mut chain = vec![start.clone()];
        let mut earlier = start.renewed_from.clone();
        while let Some(serial) = earlier {
            if chain.len() >= MAX_LINEAGE {
                break;
            }
            let Some(record) = store.certificate(&serial).await? else {
                break;
            };
            earlier = record.renewed_from.clone();
            chain.push(record);
        }
        let mut later = store.successor(&start.serial).await?;
        while let Some(link) = later {
            if chain.len() >= 2 * MAX_LINEAGE || chain.iter().any(|r| r.serial == link.serial) {
                break;
            }
            if let Some(record) = store.certificate(&link.serial).await? {
                chain.push(record);
            }
            later = store.successor(&link.serial).await?;
        }
        Ok(chain)
    }

    /// Whether `record` has not expired yet.
    pub(super) fn unexpired(&self, record: &IssuanceRecord) -> bool {
        record.not_after >= self.now()
    }
}
