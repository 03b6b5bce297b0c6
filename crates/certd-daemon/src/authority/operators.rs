//! Operators: who may use the admin API over mTLS, and their certificates.

use std::time::Duration;

use super::{Authority, Caller, IssuanceEvent, Issued, RecordedAs, audit_issuance};
use crate::attest::AdminCaller;
use crate::audit::{self, Decision};
use crate::ca::csr::ValidatedCsr;
use crate::identity::OperatorIdentity;
use crate::model::AuditEvent;
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
        let summary = self.store.backup(out)?;
        tracing::info!(
            caller = %caller.0,
            records = summary.records,
            revocations = summary.revocations,
            "backup taken"
        );
        Ok(summary)
    }

    /// Decides whether an mTLS caller of the admin API may use it: only a
    /// current operator certificate certd issued, for an operator listed in
    /// `admins`. Refusals are audited with who tried.
    pub async fn authorize_admin(&self, peer: &str, client_leaf: Option<&[u8]>) -> Result<Caller> {
        let outcome = match AdminCaller::check(client_leaf, self.store.as_ref(), self.now()).await {
            Ok(AdminCaller::Operator { spiffe_id }) if self.admins.contains(&spiffe_id) => {
                Ok(Caller(spiffe_id))
            }
            Ok(AdminCaller::Operator { spiffe_id } | AdminCaller::NotOperator { spiffe_id }) => {
                Err((
                    spiffe_id.clone(),
                    PolicyError::NotAnAdmin { spiffe_id }.into(),
                ))
            }
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
                reason: Some(error.to_string()),
                refusal: Some(error.kind()),
                ..Decision::default()
            },
        )
        .await;
        Err(error)
    }

    /// Issues an operator certificate (`certd operator issue`): the admin
    /// API over mTLS accepts it when its SPIFFE ID is listed in `admins`.
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
        policy::check_ttl(
            ttl,
            self.lifetimes.max_cert_ttl,
            policy::CERTIFICATE_MAX_TTL,
        )?;
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
        )
        .await
    }
}
