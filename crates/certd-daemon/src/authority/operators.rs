//! Operators: who may use the admin API over mTLS, and their certificates.

use std::time::Duration;

use super::{Authority, Caller, IssuanceEvent, Issued, RecordedAs, audit_issuance};
use crate::attest::AdminCaller;
use crate::audit::{self, Decision};
use crate::ca::csr::ValidatedCsr;
use crate::identity::OperatorIdentity;
use crate::model::AuditEvent;
use crate::policy::operator_roles::{AdminAction, RoleRefusal};
use crate::policy::{self, PolicyError};
use crate::store::Attestation;
use crate::{Error, Result};

impl Authority {
    /// Writes a backup of the store to `out` for an operator and logs who
    /// took it. Blocking (see `Storage::backup`).
    pub fn backup(
        &self,
        caller: &Caller,
        out: &mut dyn std::io::Write,
    ) -> Result<crate::store::BackupSummary> {
        // Paced: a backup reads the whole store while certd serves
        // (crate::pace). Runs on the blocking pool (its caller's duty).
        let started = std::time::Instant::now();
        // A storage fault's recovery waits for every holder of the database
        // to let go: a backup that would otherwise stream on for minutes
        // stops at the fault instead.
        let store = self.store.clone();
        let mut paced = crate::pace::PacedWriter::new(out, self.backup_rate)
            .stopping_when(move || store.fault());
        let summary = self.store.backup(&mut paced)?;
        tracing::info!(
            caller = %caller.0,
            records = summary.records,
            revocations = summary.revocations,
            seconds = started.elapsed().as_secs_f64(),
            rate = %self.backup_rate.map_or_else(|| "unpaced".to_owned(), |rate| rate.to_string()),
            "backup taken"
        );
        Ok(summary)
    }

    /// Decides whether an mTLS caller of the admin API may take `action`:
    /// only with a current operator certificate certd issued, for an
    /// operator in `admins` or `[[operators]]` whose roles allow the action.
    /// Refusals are audited with who tried and what they asked for.
    pub async fn authorize_admin(
        &self,
        peer: &str,
        client_leaf: Option<&[u8]>,
        action: &AdminAction<'_>,
    ) -> Result<Caller> {
        let outcome = match AdminCaller::check(client_leaf, self.store.as_ref(), self.now()).await {
            Ok(AdminCaller::Operator { spiffe_id }) => {
                match self.operators.permits(&spiffe_id, action) {
                    Ok(()) => Ok(Caller(spiffe_id)),
                    Err(refusal) => Err((spiffe_id, PolicyError::from(refusal).into())),
                }
            }
            Ok(AdminCaller::NotOperator { spiffe_id }) => Err((
                spiffe_id.clone(),
                PolicyError::from(RoleRefusal::NotAnOperator { spiffe_id }).into(),
            )),
            Err(error) => Err((peer.to_owned(), error.into())),
        };
        let (who, error): (String, Error) = match outcome {
            Ok(caller) => return Ok(caller),
            Err(refused) => refused,
        };
        audit::record(
            self.store.as_ref(),
            self.now(),
            Decision {
                event: AuditEvent::AdminAccess,
                allowed: false,
                caller: &who,
                service: match action {
                    AdminAction::IssueCertificate { service } => Some((*service).to_owned()),
                    _ => None,
                },
                reason: Some(error.to_string()),
                refusal: Some(error.kind()),
                ..Decision::default()
            },
        )
        .await;
        Err(error)
    }

    /// Issues an operator certificate (`certd operator issue`): the admin
    /// API over mTLS accepts it for what its operator's roles allow.
    pub async fn issue_operator_certificate(
        &self,
        caller: &Caller,
        name: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Issued> {
        let outcome = self
            .issue_operator_certificate_inner(caller, name, csr_der, ttl)
            .await;
        audit_issuance(
            self.store.as_ref(),
            self.now(),
            IssuanceEvent::new(AuditEvent::IssueOperator, caller, "admin", Vec::new()),
            &outcome,
        )
        .await;
        outcome
    }

    async fn issue_operator_certificate_inner(
        &self,
        caller: &Caller,
        name: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Issued> {
        let operator = OperatorIdentity {
            trust_domain: self.ca.trust_domain().clone(),
            name: name.parse()?,
        };
        let csr = ValidatedCsr::from_der(csr_der)?;
        policy::check_operator_csr(&csr, &operator)?;
        let ttl = ttl.unwrap_or(self.lifetimes.default_cert_ttl);
        // A scoped operator (issuer or auditor) may be granted a longer
        // life than workloads get: `max_certificate_ttl` of its entry.
        let scoped_maximum = self
            .operators
            .grant(&operator.spiffe_id())
            .and_then(|grant| grant.max_certificate_ttl);
        match scoped_maximum {
            Some(maximum) => {
                policy::check_ttl(ttl, maximum, policy::OPERATOR_CERTIFICATE_MAX_TTL)?;
            }
            None => policy::check_ttl(
                ttl,
                self.lifetimes.max_cert_ttl,
                policy::CERTIFICATE_MAX_TTL,
            )?,
        }
        let recorded_as = RecordedAs {
            service: operator.name.clone(),
            attestation: Attestation::Operator {
                caller: caller.0.clone(),
            },
            renewed_from: None,
            token: None,
            lineage: None,
        };
        self.sign_and_record(
            |serial, now| self.ca.sign_operator(&csr, &operator, serial, ttl, now),
            recorded_as,
            crate::store::WriteComing::default(),
        )
        .await
    }
}
