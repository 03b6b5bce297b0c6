//! Revocation: recording it durably, so that OCSP answers it at once, and
//! (unless the caller says not to) waiting for the background publisher's
//! CRL that lists it before answering (`revocation::publisher`).

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{StreamExt, stream};

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
/// each waited for a flush of its own: a service's 20,000 certificates
/// took longer than the client's 30 s. In flight together, they share
/// sled's group commit's flushes (docs/PERFORMANCE.md, "Revoking a
/// service's certificates"). Half the PostgreSQL backend's connection
/// pool, so that issuance keeps connections while a service is revoked
/// (8 took 2.5 times as long on sled as 64).
const REVOCATIONS_IN_FLIGHT: usize = 16;

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
    /// lists it. Audited either way: every certificate it revoked gets its
    /// entry, even when the request fails afterwards (a later certificate's
    /// revocation or the CRL's publication), and a failure one more.
    pub async fn revoke_target(
        &self,
        caller: &Caller,
        target: &RevokeTarget,
        reason: RevocationReason,
        wait: CrlWait,
    ) -> Result<RevocationResult> {
        let (revoked, failure, audited) = match target {
            RevokeTarget::Serial(serial) => match self.revoke_serial(serial, reason).await {
                Ok(revoked) => (vec![revoked], None, serial.clone()),
                Err(error) => (Vec::new(), Some(error), serial.clone()),
            },
            RevokeTarget::Service(service) => {
                let found = self.unexpired_of_service(service).await;
                let (revoked, failure) = self.revoke_found(found, reason).await;
                (revoked, failure, format!("service {service}"))
            }
            RevokeTarget::Lineage(serial) => {
                let found = self.unexpired_in_lineage(serial).await;
                let (revoked, failure) = self.revoke_found(found, reason).await;
                (revoked, failure, format!("lineage {serial}"))
            }
        };
        self.track_revocations(&revoked);
        let crl_number = match failure {
            Some(error) => Err(error),
            None => self.publish(wait).await,
        };
        audit_revocation(
            self.store.as_ref(),
            self.now(),
            caller,
            &audited,
            reason,
            &revoked,
            &crl_number,
        )
        .await;
        crl_number.map(|crl_number| RevocationResult {
            certificates: revoked,
            crl_number,
        })
    }

    /// The unexpired certificates of `serial`'s chain of renewals, and what
    /// to call them when there are none.
    async fn unexpired_in_lineage(&self, serial: &str) -> Result<(Vec<IssuanceRecord>, String)> {
        let serial: Serial = serial.parse()?;
        let unexpired = self
            .lineage_of(&serial)
            .await?
            .into_iter()
            .filter(|record| self.unexpired(record))
            .collect();
        Ok((
            unexpired,
            format!("unexpired certificate in the lineage of {serial}"),
        ))
    }

    /// The unexpired certificates of `service`, and what to call them when
    /// there are none.
    async fn unexpired_of_service(&self, service: &str) -> Result<(Vec<IssuanceRecord>, String)> {
        let service: ServiceName = service.parse()?;
        let now = self.now();
        let unexpired = self
            .store
            .certificates(Some(&service))
            .await?
            .into_iter()
            .filter(|record| record.not_after >= now)
            .collect();
        Ok((
            unexpired,
            format!("unexpired certificate of service {service}"),
        ))
    }

    /// Revokes the certificates `found` (`revoke_all`): those revoked, and
    /// the failure that ended it early, if any, or `NotFound` (named as
    /// `found` says) when there were none.
    async fn revoke_found(
        &self,
        found: Result<(Vec<IssuanceRecord>, String)>,
        reason: RevocationReason,
    ) -> (Vec<Revoked>, Option<Error>) {
        let (records, none) = match found {
            Ok(found) => found,
            Err(error) => return (Vec::new(), Some(error)),
        };
        if records.is_empty() {
            return (Vec::new(), Some(Error::NotFound(none)));
        }
        self.revoke_all(records.into_iter(), reason).await
    }

    /// Revokes `records`, up to `REVOCATIONS_IN_FLIGHT` at once: what each
    /// revocation did, in their order, and the first failure, if any. A
    /// failure starts no further revocation but lets those in flight end,
    /// so that every certificate the store marked revoked is noted (OCSP
    /// says so) and returned, to be audited.
    async fn revoke_all(
        &self,
        records: impl Iterator<Item = IssuanceRecord> + Send,
        reason: RevocationReason,
    ) -> (Vec<Revoked>, Option<Error>) {
        let failed = AtomicBool::new(false);
        let serials = records
            .map(|record| record.serial.to_hex())
            .take_while(|_| !failed.load(Ordering::Relaxed));
        let mut revocations = std::pin::pin!(
            stream::iter(serials)
                .map(|serial| async move { self.revoke_serial(&serial, reason).await })
                .buffered(REVOCATIONS_IN_FLIGHT)
        );
        let mut revoked = Vec::new();
        let mut failure = None;
        while let Some(outcome) = revocations.next().await {
            match outcome {
                Ok(done) => revoked.push(done),
                Err(error) => {
                    failed.store(true, Ordering::Relaxed);
                    failure.get_or_insert(error);
                }
            }
        }
        (revoked, failure)
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

    /// The number of a CRL that lists every revocation noted so far (this
    /// request's, and an earlier one's for certificates already revoked,
    /// which that request may not have waited for), once the publisher has
    /// one, with `CrlWait::UntilListed`; 0 with `CrlWait::No`.
    async fn publish(&self, wait: CrlWait) -> Result<u64> {
        match wait {
            CrlWait::UntilListed => {
                let noted = self.revocations.noted();
                let crl = if noted == 0 {
                    // Nothing revoked since the start: the CRL served lists
                    // what the store held then.
                    self.revocations.current_crl().await?
                } else {
                    self.revocations.wait_for_crl(noted).await?
                };
                Ok(crl.number)
            }
            CrlWait::No => Ok(0),
        }
    }
}

/// One audit entry per certificate a revocation request revoked (or found
/// revoked), whatever came after, and one for its failure, if it failed.
async fn audit_revocation(
    store: &dyn Storage,
    at: i64,
    caller: &Caller,
    target: &str,
    reason: RevocationReason,
    revoked: &[Revoked],
    crl_number: &Result<u64>,
) {
    for certificate in revoked {
        let state = if certificate.newly_revoked {
            "revoked"
        } else {
            "already revoked"
        };
        let listed = match crl_number {
            Ok(number) => format!("CRL {number}"),
            Err(_) => "the request failed afterwards".to_owned(),
        };
        audit::record(
            store,
            at,
            Decision {
                event: AuditEvent::Revoke,
                allowed: true,
                caller: &caller.0,
                service: Some(certificate.record.service.to_string()),
                serial: Some(certificate.record.serial.to_hex()),
                reason: Some(format!("{state}: {reason}; {listed}")),
                ..Decision::default()
            },
        )
        .await;
    }
    match crl_number {
        Ok(_) => {}
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
