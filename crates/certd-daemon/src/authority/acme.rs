//! What the ACME server asks of the authority: the entry an account
//! issues as, issuance for it (through the same policy, signing, durable
//! record, audit and metrics as every other issuance), and the audit of
//! ACME's own decisions (EAB keys, accounts, policies).

use super::{Authority, Caller, IssuanceEvent, Issued, audit_issuance};
use crate::Result;
use crate::audit::{self, Decision};
use crate::ca::csr::ValidatedCsr;
use crate::identity::DnsName;
use crate::model::AuditEvent;
use crate::registry::RegistryError;
use crate::store::{EntryRecord, Proof};

/// The ACME server's settings and keys, shared by every replica that
/// holds the same master secret.
#[derive(Debug)]
pub struct AcmeState {
    pub settings: crate::acme::AcmeSettings,
    pub nonces: crate::acme::nonce::NonceKey,
    pub eab: crate::acme::eab::EabKeys,
    pub limits: crate::acme::rate_limits::AcmeLimits,
}

impl Authority {
    /// The ACME server's settings and keys.
    pub fn acme_state(&self) -> &AcmeState {
        &self.acme
    }

    /// Registration entry `id`, if it exists.
    pub fn entry(&self, id: &str) -> Option<EntryRecord> {
        self.registry.get(id)
    }

    /// The first entry (by id) whose DNS names include every one of
    /// `names`: what an account without EAB issues as.
    pub fn entry_naming(&self, names: &[String]) -> Option<EntryRecord> {
        self.registry.list(None).into_iter().find(|entry| {
            !entry.is_agent()
                && entry.parent.is_none()
                && names.iter().all(|name| {
                    entry
                        .dns_names
                        .iter()
                        .any(|dns| dns.as_str().eq_ignore_ascii_case(name))
                })
        })
    }

    /// A certificate for an ACME order: entry `entry_id`'s identity with
    /// only the ordered `names`, its lifetime, recorded as attested by ACME
    /// account `account`. Audited as every issuance is.
    pub async fn issue_for_acme(
        &self,
        caller: &Caller,
        account: &str,
        entry_id: &str,
        names: &[String],
        csr_der: &[u8],
    ) -> Result<Issued> {
        let mut selectors = Vec::new();
        let outcome = self
            .issue_for_acme_inner(account, entry_id, names, csr_der, &mut selectors)
            .await;
        audit_issuance(
            self.store.as_ref(),
            self.now(),
            IssuanceEvent::new(
                AuditEvent::Issue,
                caller,
                crate::model::kind::ACME,
                selectors,
            ),
            &outcome,
        )
        .await;
        outcome
    }

    async fn issue_for_acme_inner(
        &self,
        account: &str,
        entry_id: &str,
        names: &[String],
        csr_der: &[u8],
        selectors: &mut Vec<crate::selector::Selector>,
    ) -> Result<Issued> {
        let _admission = self.limits.admit()?;
        self.limits.issuance()?;
        let entry = self
            .registry
            .get(entry_id)
            .ok_or_else(|| RegistryError::EntryDeleted {
                id: entry_id.to_owned(),
            })?;
        selectors.clone_from(&entry.selectors);
        let csr = ValidatedCsr::from_der(csr_der)?;
        let proof = Proof::Attested {
            kind: crate::model::kind::ACME.to_owned(),
            detail: account.to_owned(),
        };
        let mut request = self.request_for_entry(&entry, proof);
        // Only the names ordered (each one of the entry's, checked when
        // the order was made).
        request.identity.dns_names = names
            .iter()
            .map(|name| name.parse::<DnsName>())
            .collect::<std::result::Result<_, _>>()?;
        // ACME clients renew the names they read from the CN and the SANs.
        request.subject = crate::ca::SubjectName::FirstDnsName;
        self.issue(&csr, request).await
    }

    /// Audits one of ACME's own decisions (not issuance, which
    /// `issue_for_acme` audits).
    pub async fn audit_acme(
        &self,
        event: AuditEvent,
        caller: &Caller,
        detail: String,
        service: Option<String>,
    ) {
        audit::record(
            self.store.as_ref(),
            self.now(),
            Decision {
                event,
                allowed: true,
                caller: &caller.0,
                attestation: None,
                service,
                serial: None,
                reason: Some(detail),
                selectors: Vec::new(),
                refusal: None,
            },
        )
        .await;
    }
}
