//! What the ACME server asks of the authority: the entry an account
//! issues as, issuance for it (through the same policy, signing, durable
//! record, audit and metrics as every other issuance), and the audit of
//! ACME's own decisions (EAB keys, accounts, policies).

use super::{Authority, Caller, IssuanceEvent, Issued, audit_issuance};
use crate::Result;
use crate::audit::{self, Decision};
use crate::ca::WorkloadProfile;
use crate::ca::csr::ValidatedCsr;
use crate::identity::DnsName;
use crate::model::AuditEvent;
use crate::registry::RegistryError;
use crate::store::{EntryRecord, Proof};

/// What an ACME order asks to be issued.
#[derive(Debug, Clone, Copy)]
pub struct AcmeIssuance<'a> {
    /// The ordering account's id.
    pub account: &'a str,
    /// Whether the account is bound to its entry (by EAB); an account
    /// without one proved control of the names by challenges only.
    pub bound: bool,
    /// The entry the order issues as.
    pub entry: &'a str,
    /// The order's DNS names (lower case, sorted).
    pub names: &'a [String],
}

/// The ACME server's settings and keys, shared by every replica that
/// holds the same master secret.
#[derive(Debug)]
pub struct AcmeState {
    pub settings: crate::acme::AcmeSettings,
    pub nonces: crate::acme::nonce::NonceKey,
    pub eab: crate::acme::eab::EabKeys,
    pub limits: crate::acme::rate_limits::AcmeLimits,
    /// Turns for challenge validations (`MAX_CONCURRENT_VALIDATIONS`).
    pub validations: std::sync::Arc<tokio::sync::Semaphore>,
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
            acme_refusal(entry).is_none() && names.iter().all(|name| names_dns(entry, name))
        })
    }

    /// Entry `entry_id` if ACME may issue for it, with every one of
    /// `names`: checked when an EAB key is made, when an order is made and
    /// again at finalization, since the entry may have changed between.
    pub fn acme_entry(&self, entry_id: &str, names: &[String]) -> Result<EntryRecord> {
        let entry = self
            .registry
            .get(entry_id)
            .ok_or_else(|| RegistryError::EntryDeleted {
                id: entry_id.to_owned(),
            })?;
        if let Some(why) = acme_refusal(&entry) {
            return Err(RegistryError::NotForAcme {
                id: entry_id.to_owned(),
                why,
            }
            .into());
        }
        if let Some(name) = names.iter().find(|name| !names_dns(&entry, name)) {
            return Err(RegistryError::NotAnEntryName {
                name: name.clone(),
                id: entry_id.to_owned(),
            }
            .into());
        }
        Ok(entry)
    }

    /// A certificate for an ACME order: entry `order.entry`'s identity
    /// with only the ordered names, its lifetime, recorded as attested by
    /// ACME account `order.account`. Audited as every issuance is.
    pub async fn issue_for_acme(
        &self,
        caller: &Caller,
        order: &AcmeIssuance<'_>,
        csr_der: &[u8],
    ) -> Result<Issued> {
        let mut selectors = Vec::new();
        let outcome = self
            .issue_for_acme_inner(order, csr_der, &mut selectors)
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
        order: &AcmeIssuance<'_>,
        csr_der: &[u8],
        selectors: &mut Vec<crate::selector::Selector>,
    ) -> Result<Issued> {
        let admitted = self.admit_issuance()?;
        let entry = self.acme_entry(order.entry, order.names)?;
        // An account without an entry of its own issues as the first entry
        // naming the order's names; if that changed since the order was
        // made (an entry added or edited), the order's entry is no longer
        // the one these names give.
        if !order.bound
            && self.entry_naming(order.names).map(|named| named.id) != Some(entry.id.clone())
        {
            return Err(RegistryError::NotForAcme {
                id: entry.id.clone(),
                why: "is no longer the first entry naming the order's names",
            }
            .into());
        }
        selectors.clone_from(&entry.selectors);
        let csr = ValidatedCsr::from_der(csr_der)?;
        let proof = Proof::Attested {
            kind: crate::model::kind::ACME.to_owned(),
            detail: order.account.to_owned(),
        };
        let mut request = self.request_for_entry(&entry, proof);
        // Only the names ordered (each one of the entry's, checked above).
        request.identity.dns_names = order
            .names
            .iter()
            .map(|name| name.parse::<DnsName>())
            .collect::<std::result::Result<_, _>>()?;
        // An account bound by EAB was vouched for by an operator, so its
        // certificates carry the entry's SPIFFE ID; one without proved only
        // control of DNS names, so it gets a web PKI server certificate.
        request.profile = if order.bound {
            WorkloadProfile::AcmeBound
        } else {
            WorkloadProfile::AcmeUnbound
        };
        self.issue(&csr, request, admitted.announced).await
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

/// Why ACME may not issue for `entry`, if it may not: an agent's identity
/// would let an ACME certificate act as the agent, and an entry parented
/// to an agent is the agent's to renew.
fn acme_refusal(entry: &EntryRecord) -> Option<&'static str> {
    if entry.is_agent() {
        Some("is a node agent's")
    } else if entry.parent.is_some() {
        Some("is parented to a node agent")
    } else {
        None
    }
}

/// Whether `name` is one of `entry`'s DNS names.
fn names_dns(entry: &EntryRecord, name: &str) -> bool {
    entry
        .dns_names
        .iter()
        .any(|dns| dns.as_str().eq_ignore_ascii_case(name))
}
