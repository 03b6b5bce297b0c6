//! The audit trail: one entry per decision (issue, renew, revoke, token
//! creation, entry changes, and every refusal), written both to the
//! structured log (target `certd::audit`) and to the store's append-only
//! audit tree, which `certd audit` reads back.
//!
//! Entries name the caller, the attestation, the selectors it proved, the
//! service, the serial and the outcome or the reason for a refusal. They never hold a token or a key:
//! tokens appear only as their hash-derived id.

use std::time::SystemTime;

use crate::ca::unix_seconds;
use crate::store::{AuditEntry, Store};

/// Target of audit events in the structured log.
pub const AUDIT_TARGET: &str = "certd::audit";

/// One decision to audit.
#[derive(Debug, Clone, Default)]
pub struct Decision<'a> {
    pub event: &'a str,
    pub allowed: bool,
    pub caller: &'a str,
    pub attestation: Option<&'a str>,
    pub service: Option<String>,
    pub serial: Option<String>,
    pub reason: Option<String>,
    /// The selectors the caller proved, if its attestation proves any.
    pub selectors: Vec<String>,
}

/// Logs the decision and appends it to the audit tree. A failure to append
/// is logged, never turned into a failure of the decision itself, which has
/// already been made (and, for issuance, recorded durably).
pub fn record(store: &Store, decision: Decision<'_>) {
    if decision.allowed {
        tracing::info!(
            target: AUDIT_TARGET,
            event = decision.event,
            decision = "allow",
            caller = decision.caller,
            attestation = decision.attestation,
            service = decision.service.as_deref(),
            serial = decision.serial.as_deref(),
            selectors = ?decision.selectors,
            detail = decision.reason.as_deref(),
        );
    } else {
        tracing::warn!(
            target: AUDIT_TARGET,
            event = decision.event,
            decision = "deny",
            caller = decision.caller,
            attestation = decision.attestation,
            service = decision.service.as_deref(),
            serial = decision.serial.as_deref(),
            selectors = ?decision.selectors,
            reason = decision.reason.as_deref(),
        );
    }
    let entry = AuditEntry {
        at: unix_seconds(SystemTime::now()),
        event: decision.event.to_owned(),
        allowed: decision.allowed,
        caller: decision.caller.to_owned(),
        attestation: decision.attestation.map(str::to_owned),
        service: decision.service,
        serial: decision.serial,
        reason: decision.reason,
        selectors: decision.selectors,
    };
    if let Err(error) = store.append_audit(&entry) {
        tracing::error!(%error, "cannot append to the audit tree");
    }
}
