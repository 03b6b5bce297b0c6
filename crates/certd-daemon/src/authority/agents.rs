//! Node agents: which callers are agents, which entries each may obtain,
//! and issuance for those entries.
//!
//! An agent proves itself with its current certificate (mTLS), which must
//! be one certd recorded for an `--agent` entry that still exists, unrevoked
//! and unexpired. It may then obtain certificates for the entries parented
//! to its own SPIFFE ID, and for no other: the entry, not the agent, says
//! which node it belongs to. Matching a workload to an entry happens in the
//! agent, from the kernel's word; certd audits each issuance with the
//! agent's identity and the entry's selectors.

use super::{Authority, Caller, IssuanceEvent, Issued, audit_issuance};
use crate::Result;
use crate::attest::{RenewalEvidence, kind};
use crate::ca::csr::ValidatedCsr;
use crate::identity::SpiffeId;
use crate::model::AuditEvent;
use crate::registry::RegistryError;
use crate::selector::Selector;
use crate::store::{EntryRecord, IssuanceRecord, Proof};

/// How a refusal names a presented certificate: its SPIFFE ID.
pub(super) fn identity_of(record: &IssuanceRecord) -> String {
    record
        .uris
        .first()
        .cloned()
        .unwrap_or_else(|| format!("service {}", record.service))
}

impl Authority {
    /// The node agent presenting `client_leaf` (DER, from the mTLS
    /// handshake): its SPIFFE ID, from its entry.
    pub async fn agent_of(&self, client_leaf: Option<&[u8]>) -> Result<SpiffeId> {
        let (current, entry) = self.presented(client_leaf).await?;
        match entry {
            Some(entry) if entry.is_agent() => Ok(entry.spiffe_id),
            _ => Err(RegistryError::NotAnAgent {
                identity: identity_of(&current),
            }
            .into()),
        }
    }

    /// The record of the client certificate presented over mTLS (checked
    /// as for renewal: recorded, unrevoked, unexpired) and the entry it was
    /// issued for, if it was issued for one that still exists.
    pub(super) async fn presented(
        &self,
        client_leaf: Option<&[u8]>,
    ) -> Result<(IssuanceRecord, Option<EntryRecord>)> {
        let now = self.now();
        let current = RenewalEvidence::check(client_leaf, self.store.as_ref(), now)
            .await?
            .current;
        let entry = current
            .attestation
            .entry_id()
            .and_then(|id| self.registry.get(id));
        Ok((current, entry))
    }

    /// Entry `entry_id`, if it is parented to `agent`; the same refusal
    /// whether it exists or not, so an agent learns nothing of others'.
    pub(super) fn entry_of_agent(&self, agent: &SpiffeId, entry_id: &str) -> Result<EntryRecord> {
        self.registry
            .get(entry_id)
            .filter(|entry| entry.parent.as_ref() == Some(agent))
            .ok_or_else(|| {
                RegistryError::NotParentedTo {
                    id: entry_id.to_owned(),
                    agent: agent.to_string(),
                }
                .into()
            })
    }

    /// The entries parented to the agent presenting `client_leaf`.
    pub async fn agent_entries(
        &self,
        client_leaf: Option<&[u8]>,
    ) -> Result<(SpiffeId, Vec<EntryRecord>)> {
        let _admission = self.limits.admit()?;
        let agent = self.agent_of(client_leaf).await?;
        let entries = self.registry.parented_to(&agent);
        Ok((agent, entries))
    }

    /// A certificate for entry `entry_id`, asked for by the agent
    /// presenting `client_leaf`; refused unless the entry is parented to
    /// that agent. Audited with the agent as the caller.
    pub async fn issue_for_agent(
        &self,
        peer: &Caller,
        client_leaf: Option<&[u8]>,
        entry_id: &str,
        csr_der: &[u8],
    ) -> Result<Issued> {
        let mut caller = peer.clone();
        let mut selectors = Vec::new();
        let outcome = self
            .issue_for_agent_inner(client_leaf, entry_id, csr_der, &mut caller, &mut selectors)
            .await;
        audit_issuance(
            self.store.as_ref(),
            self.now(),
            IssuanceEvent::new(AuditEvent::Issue, &caller, kind::AGENT, selectors),
            &outcome,
        )
        .await;
        outcome
    }

    async fn issue_for_agent_inner(
        &self,
        client_leaf: Option<&[u8]>,
        entry_id: &str,
        csr_der: &[u8],
        caller: &mut Caller,
        selectors: &mut Vec<Selector>,
    ) -> Result<Issued> {
        let admitted = self.admit_issuance()?;
        let agent = self.agent_of(client_leaf).await?;
        *caller = Caller(format!("{agent} ({caller})"));
        let entry = self.entry_of_agent(&agent, entry_id)?;
        selectors.clone_from(&entry.selectors);
        let csr = ValidatedCsr::from_der(csr_der)?;
        let proof = Proof::Attested {
            kind: kind::AGENT.to_owned(),
            detail: agent.into_string(),
        };
        let request = self.request_for_entry(&entry, proof);
        self.issue(&csr, request, admitted.announced).await
    }
}
