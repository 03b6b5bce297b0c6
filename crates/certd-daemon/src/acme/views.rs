//! The JSON the ACME resources answer with (RFC 8555 §7.1).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::records::{
    AccountRecord, AccountStatus, AuthzRecord, ChallengeRecord, OrderRecord, Status,
};

/// RFC 3339 time, as ACME writes `expires` and windows.
pub fn rfc3339(unix: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

pub(super) fn account_json(base: &str, account: &AccountRecord) -> Value {
    json!({
        "status": match account.status {
            AccountStatus::Valid => "valid",
            AccountStatus::Deactivated => "deactivated",
        },
        "contact": account.contact,
        "orders": format!("{base}/account/{}/orders", account.id),
    })
}

pub(super) fn order_json(base: &str, order: &OrderRecord) -> Value {
    let account = &order.account;
    let mut body = json!({
        "status": order.status.as_str(),
        "expires": rfc3339(order.expires_at),
        "identifiers": order
            .identifiers
            .iter()
            .map(|name| json!({"type": "dns", "value": name}))
            .collect::<Vec<_>>(),
        "authorizations": order
            .authorizations
            .iter()
            .map(|authz| format!("{base}/authz/{account}/{authz}"))
            .collect::<Vec<_>>(),
        "finalize": format!("{base}/order/{account}/{}/finalize", order.id),
    });
    if order.certificate.is_some() {
        body["certificate"] = format!("{base}/cert/{account}/{}", order.id).into();
    }
    if let Some(error) = &order.error {
        body["error"] = serde_json::to_value(error).unwrap_or_default();
    }
    if let Some(replaces) = &order.replaces {
        body["replaces"] = replaces.clone().into();
    }
    body
}

/// An authorization as answered at `now`: a pending or valid one past its
/// `expires` shows `expired` (RFC 8555 §7.1.6), without being rewritten.
pub(super) fn authz_json(base: &str, authz: &AuthzRecord, now: i64) -> Value {
    let status = match authz.status {
        Status::Pending | Status::Valid if now > authz.expires_at => "expired",
        other => other.as_str(),
    };
    json!({
        "identifier": {"type": "dns", "value": authz.identifier},
        "status": status,
        "expires": rfc3339(authz.expires_at),
        "challenges": authz
            .challenges
            .iter()
            .map(|challenge| challenge_json(base, authz, challenge))
            .collect::<Vec<_>>(),
    })
}

pub(super) fn challenge_json(
    base: &str,
    authz: &AuthzRecord,
    challenge: &ChallengeRecord,
) -> Value {
    let mut body = json!({
        "type": challenge.kind,
        "url": format!("{base}/chall/{}/{}/{}", authz.account, authz.id, challenge.kind),
        "token": challenge.token,
        "status": challenge.status.as_str(),
    });
    if let Some(validated) = challenge.validated_at {
        body["validated"] = rfc3339(validated).into();
    }
    if let Some(error) = &challenge.error {
        body["error"] = serde_json::to_value(error).unwrap_or_default();
    }
    body
}
