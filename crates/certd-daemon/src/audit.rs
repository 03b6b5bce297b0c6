//! The audit trail: one entry per decision (issue, renew, revoke, token
//! creation, entry changes, and every refusal), written both to the
//! structured log (target `certd::audit`) and to the store's append-only
//! audit tree, which `certd audit` reads back.
//!
//! Entries name the caller, the attestation, the selectors it proved, the
//! service, the serial and the outcome or the reason for a refusal. They never hold a token or a key:
//! tokens appear only as their hash-derived id.

use crate::selector::Selector;
use crate::store::{AuditEntry, AuditEvent, Storage};

/// Target of audit events in the structured log.
pub(crate) const AUDIT_TARGET: &str = "certd::audit";

/// One decision to audit.
#[derive(Debug, Clone, Default)]
pub struct Decision<'a> {
    pub event: AuditEvent,
    pub allowed: bool,
    pub caller: &'a str,
    pub attestation: Option<&'a str>,
    pub service: Option<String>,
    pub serial: Option<String>,
    pub reason: Option<String>,
    /// The selectors the caller proved, if its attestation proves any.
    pub selectors: Vec<Selector>,
    /// For a refusal, its kind (for metrics; the reason says more).
    pub refusal: Option<crate::ErrorKind>,
}

/// One structured log event for a decision: `$level` and `$verdict` say
/// allow or deny, `$why` names what its reason is (a detail or the refusal).
macro_rules! log_decision {
    ($level:ident, $verdict:literal, $why:ident, $decision:expr) => {
        tracing::$level!(
            target: AUDIT_TARGET,
            event = $decision.event.as_str(),
            decision = $verdict,
            caller = $decision.caller,
            attestation = $decision.attestation,
            service = $decision.service.as_deref(),
            serial = $decision.serial.as_deref(),
            selectors = ?$decision.selectors,
            $why = $decision.reason.as_deref(),
        )
    };
}

/// Logs the decision and appends it to the audit tree, dated `at`. A failure to append
/// is logged, never turned into a failure of the decision itself, which has
/// already been made (and, for issuance, recorded durably).
pub async fn record(store: &dyn Storage, at: i64, decision: Decision<'_>) {
    let refusal = match (decision.allowed, decision.refusal) {
        (true, _) => None,
        (false, kind) => Some(kind.unwrap_or(crate::ErrorKind::PermissionDenied)),
    };
    crate::metrics::get().decision(decision.event.as_str(), decision.attestation, refusal);
    if decision.allowed {
        log_decision!(info, "allow", detail, decision);
    } else {
        log_decision!(warn, "deny", reason, decision);
    }
    let entry = AuditEntry {
        at,
        event: decision.event,
        allowed: decision.allowed,
        caller: decision.caller.to_owned(),
        attestation: decision.attestation.map(str::to_owned),
        service: decision.service,
        serial: decision.serial,
        reason: decision.reason,
        selectors: decision.selectors,
    };
    if let Err(error) = store.append_audit(&entry).await {
        tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot append to the audit tree");
    }
}
