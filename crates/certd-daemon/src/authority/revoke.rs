//! Revocation: recording it durably and publishing the CRL that lists it
//! before answering.

use super::{Authority, Caller};
use crate::audit::{self, Decision};
use crate::ca::RevocationReason;
use crate::identity::{Serial, ServiceName};
use crate::model::AuditEvent;
use crate::revocation::Revocations;
use crate::store::{IssuanceRecord, Revocation, RevokeOutcome, Storage};
use crate::{Error, Result};

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
    pub crl_number: u64,
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
        let outcome = match self.revoke_serial(serial, reason).await {
            Ok(revoked) => self.publish(vec![revoked]).await,
            Err(error) => Err(error),
        };
        audit_revocation(
            self.store.as_ref(),
            self.now(),
            caller,
            serial,
            reason,
            &outcome,
        )
        .await;
        outcome
    }

    /// Revokes every unexpired certificate of `service`.
    pub async fn revoke_service(
        &self,
        caller: &Caller,
        service: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let outcome = self.revoke_service_inner(service, reason).await;
        audit_revocation(
            self.store.as_ref(),
            self.now(),
            caller,
            &format!("service {service}"),
            reason,
            &outcome,
        )
        .await;
        outcome
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
        let outcome = self.revoke_lineage_inner(serial, reason).await;
        audit_revocation(
            self.store.as_ref(),
            self.now(),
            caller,
            &format!("lineage {serial}"),
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
    ) -> Result<RevocationResult> {
        let serial: Serial = serial.parse()?;
        let mut revoked = Vec::new();
        for record in self.lineage_of(&serial).await? {
            if self.unexpired(&record) {
                revoked.push(self.revoke_serial(&record.serial.to_hex(), reason).await?);
            }
        }
        if revoked.is_empty() {
            return Err(Error::NotFound(format!(
                "unexpired certificate in the lineage of {serial}"
            )));
        }
        self.publish(revoked).await
    }

    async fn revoke_service_inner(
        &self,
        service: &str,
        reason: RevocationReason,
    ) -> Result<RevocationResult> {
        let service: ServiceName = service.parse()?;
        let now = self.now();
        let mut revoked = Vec::new();
        for record in self.store.certificates(Some(&service)).await? {
            if record.not_after >= now {
                revoked.push(self.revoke_serial(&record.serial.to_hex(), reason).await?);
            }
        }
        if revoked.is_empty() {
            return Err(Error::NotFound(format!(
                "unexpired certificate of service {service}"
            )));
        }
        self.publish(revoked).await
    }

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

    async fn publish(&self, certificates: Vec<Revoked>) -> Result<RevocationResult> {
        self.track_revocations(&certificates);
        let crl = if certificates.iter().any(|c| c.newly_revoked) {
            self.revocations.refresh_crl().await?
        } else {
            self.revocations.current_crl().await?
        };
        Ok(RevocationResult {
            certificates,
            crl_number: crl.number,
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
