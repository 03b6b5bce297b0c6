//! Revocation: recording it durably, so that OCSP answers it at once, and
//! (unless the caller says not to) waiting for the background publisher's
//! CRL that lists it before answering (`revocation::publisher`).

use futures_util::{StreamExt, TryStreamExt, stream};

use super::{Authority, Caller};
use crate::audit::{self, Decision};
use crate::ca::RevocationReason;
use crate::identity::{Serial, ServiceName};
use crate::model::AuditEvent;
use crate::revocation::Revocations;
use crate::store::{IssuanceRecord, Revocation, RevokeOutcome, Storage};
use crate::{Error, Result};

/// Revocations of one request (a service's or a lineage's certificates)
/// in flight at once. Each is durable before it counts, and one at a time
/// each waited for a flush of its own: a service's 30,000 certificates
/// took longer than the client's 30 s. In flight together, they share the
/// group commit's flushes (docs/PERFORMANCE.md, "Revoking a service's
/// certificates").
const REVOCATIONS_IN_FLIGHT: usize = 64;

/// What a revocation did, for one certificate.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub record: IssuanceRecord,
    pub newly_revoked: bool,
}

/// The result of a revocation request: the certificates and the number of
/// the CRL that lists them.
#[derive(Debug, Clone)]
pub struct RevocationResult {
    pub certificates: Vec<Revoked>,
    /// 0 when the request did not wait for the CRL (`CrlWait::No`).
    pub crl_number: u64,
}

/// What a revocation request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One certificate, by serial (hex).
    Serial(String),
    /// Every unexpired certificate of a service.
    Service(String),
    /// Every unexpired certificate of a serial's chain of renewals.
    Lineage(String),
}

/// Whether a revocation answers only once a published CRL lists it.
/// Either way it answers only once it is durable and OCSP says revoked;
/// the CRL lists it within the bound `revocation::publisher` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlWait {
    /// Wait for the CRL (the default, and what `certd revoke` does): after
    /// the answer, a relying party that fetches the CRL sees it.
    #[default]
    UntilListed,
    /// Answer without waiting: for bulk revocations, which would otherwise
    /// wait a build each for little.
    No,
}

impl Authority {
    /// The CRL and OCSP publisher.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Revokes one certificate by serial. Idempotent: revoking again keeps
    /// the first time and reason. Returns once the revocation is durable and
    /// the published CRL lists it.
    pub async fn revoke(
        &self,
        caller: &Caller,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let target = RevokeTarget::Serial(serial.to_owned());
        self.revoke_target(caller, &target, reason, CrlWait::UntilListed)
            .await
    }

    /// Revokes every unexpired certificate of `service`.
    pub async fn revoke_service(
        &self,
        caller: &Caller,
        service: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let target = RevokeTarget::Service(service.to_owned());
        self.revoke_target(caller, &target, reason, CrlWait::UntilListed)
            .await
    }

    /// Revokes every unexpired certificate of `serial`'s chain of renewals
    /// (`lineage`): for a key that may have been copied, whichever
    /// certificate of the chain the copy holds now.
    pub async fn revoke_lineage(
        &self,
        caller: &Caller,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let target = RevokeTarget::Lineage(serial.to_owned());
        self.revoke_target(caller, &target, reason, CrlWait::UntilListed)
            .await
    }

    /// Revokes what `target` names; answers once that is durable (and OCSP
    /// says so) and, with `CrlWait::UntilListed`, once a published CRL
    /// lists it. Audited either way.
    pub async fn revoke_target(
        &self,
        caller: &Caller,
        target: &RevokeTarget,
        reason: RevocationReason,
        wait: CrlWait,
    ) -> Result<RevocationResult> {
        let (outcome, audited) = match target {
            RevokeTarget::Serial(serial) => (
                match self.revoke_serial(serial, reason).await {
                    Ok(revoked) => self.publish(vec![revoked], wait).await,
                    Err(error) => Err(error),
                },
                serial.clone(),
            ),
            RevokeTarget::Service(service) => (
                self.revoke_service_inner(service, reason, wait).await,
                format!("service {service}"),
            ),
            RevokeTarget::Lineage(serial) => (
                self.revoke_lineage_inner(serial, reason, wait).await,
                format!("lineage {serial}"),
            ),
        };
        audit_revocation(
            self.store.as_ref(),
            self.now(),
            caller,
            &audited,
            reason,
            &outcome,
        )
        .await;
        outcome
    }

    async fn revoke_lineage_inner(
        &self,
        serial: &str,
        reason: RevocationReason,
        wait: CrlWait,
    ) -> Result<RevocationResult> {
        let serial: Serial = serial.parse()?;
        let unexpired = self
            .lineage_of(&serial)
            .await?
            .into_iter()
            .filter(|record| self.unexpired(record));
        let revoked = self.revoke_all(unexpired, reason).await?;
        if revoked.is_empty() {
            return Err(Error::NotFound(format!(
                "unexpired certificate in the lineage of {serial}"
            )));
        }
        self.publish(revoked, wait).await
    }

    async fn revoke_service_inner(
        &self,
        service: &str,
        reason: RevocationReason,
        wait: CrlWait,
    ) -> Result<RevocationResult> {
        let service: ServiceName = service.parse()?;
        let now = self.now();
        let unexpired = self
            .store
            .certificates(Some(&service))
            .await?
            .into_iter()
            .filter(|record| record.not_after >= now);
        let revoked = self.revoke_all(unexpired, reason).await?;
        if revoked.is_empty() {
            return Err(Error::NotFound(format!(
                "unexpired certificate of service {service}"
            )));
        }
        self.publish(revoked, wait).await
    }

    /// Revokes `records`, up to `REVOCATIONS_IN_FLIGHT` at once, and
    /// returns what each revocation did, in their order. The first failure
    /// ends it (those already revoked stay revoked, as one at a time).
    async fn revoke_all(
        &self,
        records: impl Iterator<Item = IssuanceRecord>,
        reason: RevocationReason,
    ) -> Result<Vec<Revoked>> {
        stream::iter(records.map(|record| record.serial.to_hex()))
            .map(|serial| async move { self.revoke_serial(&serial, reason).await })
            .buffered(REVOCATIONS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Revokes one certificate durably and notes it: from here OCSP says
    /// revoked, and the publisher is building a CRL that lists it.
    async fn revoke_serial(&self, serial: &str, reason: RevocationReason) -> Result<Revoked> {
        let serial: Serial = serial.parse()?;
        let revocation = Revocation {
            revoked_at: self.now(),
            reason_code: reason.code(),
        };
        let outcome = self
            .store
            .revoke(&serial, revocation)
            .await?
            .ok_or_else(|| Error::NotFound(format!("certificate {serial}")))?;
        // Noted either way: an earlier revocation of this serial (a request
        // still writing its marks, or another replica's whose change has not
        // arrived) may not be noted yet, and this answer says OCSP and the
        // CRL it names list it. A needless note costs one cache removal and
        // at most one shared CRL build.
        self.revocations.note_revocation(&serial);
        Ok(match outcome {
            RevokeOutcome::Revoked(record) => Revoked {
                record,
                newly_revoked: true,
            },
            RevokeOutcome::AlreadyRevoked(record) => Revoked {
                record,
                newly_revoked: false,
            },
        })
    }

    /// Answers for `certificates`, revoked and noted: with
    /// `CrlWait::UntilListed`, once the publisher's CRL covers every
    /// revocation noted so far (theirs included; an earlier one's for those
    /// already revoked, which an earlier request may not have waited for).
    async fn publish(&self, certificates: Vec<Revoked>, wait: CrlWait) -> Result<RevocationResult> {
        self.track_revocations(&certificates);
        let crl_number = match wait {
            CrlWait::UntilListed => {
                let noted = self.revocations.noted();
                let crl = if noted == 0 {
                    // Nothing revoked since the start: the CRL served lists
                    // what the store held then.
                    self.revocations.current_crl().await?
                } else {
                    self.revocations.wait_for_crl(noted).await?
                };
                crl.number
            }
            CrlWait::No => 0,
        };
        Ok(RevocationResult {
            certificates,
            crl_number,
        })
    }
}

/// One audit entry per certificate a revocation request touched, or one
/// for its refusal.
async fn audit_revocation(
    store: &dyn Storage,
    at: i64,
    caller: &Caller,
    target: &str,
    reason: RevocationReason,
    outcome: &Result<RevocationResult>,
) {
    match outcome {
        Ok(result) => {
            for revoked in &result.certificates {
                let state = if revoked.newly_revoked {
                    "revoked"
                } else {
                    "already revoked"
                };
                audit::record(
                    store,
                    at,
                    Decision {
                        event: AuditEvent::Revoke,
                        allowed: true,
                        caller: &caller.0,
                        service: Some(revoked.record.service.to_string()),
                        serial: Some(revoked.record.serial.to_hex()),
                        reason: Some(format!("{state}: {reason}; CRL {}", result.crl_number)),
                        ..Decision::default()
                    },
                )
                .await;
            }
        }
        Err(error) => {
            audit::record(
                store,
                at,
                Decision {
                    event: AuditEvent::Revoke,
                    allowed: false,
                    caller: &caller.0,
                    serial: Some(target.to_owned()),
                    reason: Some(format!("{error} (asked reason: {reason})")),
                    refusal: Some(error.kind()),
                    ..Decision::default()
                },
            )
            .await
        }
    }
}
