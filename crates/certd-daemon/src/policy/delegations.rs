//! The delegation policy (RFC 8693 token exchange): which actor may trade
//! a subject's token for one towards which audience, for subjects of which
//! issuers, carrying which scopes, and how long the chain of actors may
//! grow. The `[[delegation]]` tables themselves are read by `grants` (one
//! policy file); this module decides. Pure: no I/O, no store, no tokens.
//!
//! Default deny. A new token carries only scopes asked for that both a
//! matching delegation and the subject's own token allow: an actor never
//! gets more than the user had, nor more than the operator granted it.

use std::collections::BTreeSet;

use crate::model::{GrantCaller, PolicyRecord};

use super::grants::{Rule, TokenCaller, TokenGrant, rules_list};

/// An exchange as the policy sees it.
#[derive(Debug, Clone)]
pub struct ExchangeAsk<'a> {
    /// The issuer of the subject's original token.
    pub subject_issuer: &'a str,
    /// How many actors the new token's `act` chain would name, the caller
    /// included.
    pub chain: usize,
    pub audience: &'a str,
    /// Asked for: checked, sorted and distinct.
    pub scopes: &'a [String],
    /// What the subject token carries.
    pub subject_scopes: &'a [String],
}

/// Why the delegation policy refused. Names what was refused and the rule,
/// never a token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DelegationRefusal {
    #[error(
        "no delegation lets {caller} act for subjects of {subject_issuer} (default deny); an operator grants it with a [[delegation]] in the token policy"
    )]
    NotADelegate {
        caller: String,
        subject_issuer: String,
    },
    #[error(
        "no delegation lets {caller} act for subjects of {subject_issuer} towards audience {audience:?} (default deny)"
    )]
    NoDelegationTo {
        caller: String,
        subject_issuer: String,
        audience: String,
    },
    #[error(
        "the chain of actors would be {chain} long; {} allow(s) at most {max}", rules_list(.rules)
    )]
    ChainTooLong {
        chain: usize,
        max: u8,
        rules: Vec<Rule>,
    },
    #[error("{caller} may not have scope(s) {} at {audience:?} for this subject: {why} (by {})", .refused.join(" "), rules_list(.rules))]
    ScopeNotAllowed {
        caller: String,
        audience: String,
        refused: Vec<String>,
        why: String,
        rules: Vec<Rule>,
    },
}

impl DelegationRefusal {
    /// The rules that decided: the delegations that reached the audience,
    /// or default deny.
    pub fn rules(&self) -> Vec<Rule> {
        match self {
            DelegationRefusal::NotADelegate { .. } | DelegationRefusal::NoDelegationTo { .. } => {
                vec![Rule::DefaultDeny]
            }
            DelegationRefusal::ChainTooLong { rules, .. }
            | DelegationRefusal::ScopeNotAllowed { rules, .. } => rules.clone(),
        }
    }

    /// The RFC 6749 §5.2 / RFC 8693 §2.2.2 error code.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            DelegationRefusal::NotADelegate { .. } => "unauthorized_client",
            DelegationRefusal::NoDelegationTo { .. } => "invalid_target",
            // RFC 8693 §2.2.2: a subject token unacceptable by policy.
            DelegationRefusal::ChainTooLong { .. } => "invalid_request",
            DelegationRefusal::ScopeNotAllowed { .. } => "invalid_scope",
        }
    }

    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::PermissionDenied
    }
}

/// Decides an exchange by `caller` (the actor). The scopes of the grant
/// are those asked; the rules those that allowed them (every delegation
/// that reached the audience, when none is asked).
pub fn decide_exchange(
    policy: &PolicyRecord,
    caller: &TokenCaller<'_>,
    ask: &ExchangeAsk<'_>,
) -> Result<TokenGrant, DelegationRefusal> {
    let names_caller = |actor: &GrantCaller| match actor {
        GrantCaller::Service(service) => service == caller.service,
        GrantCaller::SpiffeId(id) => id == caller.spiffe_id,
    };
    let for_subject: Vec<_> = policy
        .delegations
        .iter()
        .filter(|d| names_caller(&d.actor))
        .filter(|d| d.subject_issuers.iter().any(|i| i == ask.subject_issuer))
        .collect();
    if for_subject.is_empty() {
        return Err(DelegationRefusal::NotADelegate {
            caller: caller.spiffe_id.to_string(),
            subject_issuer: ask.subject_issuer.to_owned(),
        });
    }
    let reaching: Vec<_> = for_subject
        .into_iter()
        .filter(|d| d.audience == ask.audience)
        .collect();
    if reaching.is_empty() {
        return Err(DelegationRefusal::NoDelegationTo {
            caller: caller.spiffe_id.to_string(),
            subject_issuer: ask.subject_issuer.to_owned(),
            audience: ask.audience.to_owned(),
        });
    }
    let deep_enough: Vec<_> = reaching
        .iter()
        .filter(|d| usize::from(d.max_chain) >= ask.chain)
        .copied()
        .collect();
    if deep_enough.is_empty() {
        return Err(DelegationRefusal::ChainTooLong {
            chain: ask.chain,
            max: reaching.iter().map(|d| d.max_chain).max().unwrap_or(0),
            rules: reaching
                .iter()
                .map(|d| Rule::Delegation(d.name.clone()))
                .collect(),
        });
    }
    let allowed: BTreeSet<&String> = deep_enough.iter().flat_map(|d| &d.scopes).collect();
    let subject: BTreeSet<&String> = ask.subject_scopes.iter().collect();
    let beyond_policy: Vec<String> = ask
        .scopes
        .iter()
        .filter(|s| !allowed.contains(s))
        .cloned()
        .collect();
    let beyond_subject: Vec<String> = ask
        .scopes
        .iter()
        .filter(|s| !subject.contains(s))
        .cloned()
        .collect();
    let all_rules = || -> Vec<Rule> {
        deep_enough
            .iter()
            .map(|d| Rule::Delegation(d.name.clone()))
            .collect()
    };
    let refuse = |refused: Vec<String>, why: String| DelegationRefusal::ScopeNotAllowed {
        caller: caller.spiffe_id.to_string(),
        audience: ask.audience.to_owned(),
        refused,
        why,
        rules: all_rules(),
    };
    if !beyond_policy.is_empty() {
        return Err(refuse(
            beyond_policy,
            format!(
                "the delegation allows {}",
                listed(allowed.iter().map(|s| s.as_str()))
            ),
        ));
    }
    if !beyond_subject.is_empty() {
        return Err(refuse(
            beyond_subject,
            format!(
                "the subject token carries {}",
                listed(subject.iter().map(|s| s.as_str()))
            ),
        ));
    }
    let rules = if ask.scopes.is_empty() {
        all_rules()
    } else {
        deep_enough
            .iter()
            .filter(|d| d.scopes.iter().any(|s| ask.scopes.contains(s)))
            .map(|d| Rule::Delegation(d.name.clone()))
            .collect()
    };
    Ok(TokenGrant {
        scopes: ask.scopes.to_vec(),
        rules,
    })
}

fn listed<'a>(scopes: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = scopes.collect();
    if list.is_empty() {
        "no scopes".into()
    } else {
        list.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{ServiceName, SpiffeId};
    use crate::policy::grants::parse_policy;

    const POLICY: &str = r#"
[[delegation]]
name = "orders-for-users"
from = "orders"
on_behalf_of = ["https://idp.example"]
to = "payments"
scopes = ["payments:charge", "payments:refund"]

[[delegation]]
name = "payments-for-users"
from = "spiffe://certd.internal/svc/payments"
on_behalf_of = ["https://idp.example"]
to = "ledger"
scopes = ["ledger:write"]
max_chain = 2
"#;

    fn policy() -> PolicyRecord {
        let rules = parse_policy(POLICY, &"certd.internal".parse().unwrap()).unwrap();
        PolicyRecord {
            version: 1,
            grants: rules.grants,
            delegations: rules.delegations,
            ..PolicyRecord::default()
        }
    }

    fn decide(
        service: &str,
        issuer: &str,
        chain: usize,
        audience: &str,
        scopes: &[&str],
        subject_scopes: &[&str],
    ) -> Result<TokenGrant, DelegationRefusal> {
        let service: ServiceName = service.parse().unwrap();
        let id: SpiffeId = format!("spiffe://certd.internal/svc/{service}")
            .parse()
            .unwrap();
        let caller = TokenCaller {
            spiffe_id: &id,
            service: &service,
            entries: Vec::new(),
        };
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (scopes, subject_scopes) = (owned(scopes), owned(subject_scopes));
        decide_exchange(
            &policy(),
            &caller,
            &ExchangeAsk {
                subject_issuer: issuer,
                chain,
                audience,
                scopes: &scopes,
                subject_scopes: &subject_scopes,
            },
        )
    }

    const IDP: &str = "https://idp.example";

    #[test]
    fn scopes_are_at_most_what_both_the_subject_and_the_delegation_allow() {
        let all = ["payments:charge", "payments:refund", "orders:read"];
        let granted = decide("orders", IDP, 1, "payments", &["payments:charge"], &all).unwrap();
        assert_eq!(granted.scopes, ["payments:charge"]);
        assert_eq!(granted.rules, [Rule::Delegation("orders-for-users".into())]);

        let beyond_user = decide(
            "orders",
            IDP,
            1,
            "payments",
            &["payments:refund"],
            &["payments:charge"],
        )
        .unwrap_err();
        assert_eq!(beyond_user.oauth_error(), "invalid_scope");
        assert!(
            beyond_user
                .to_string()
                .contains("the subject token carries payments:charge"),
            "{beyond_user}"
        );
        let beyond_policy =
            decide("orders", IDP, 1, "payments", &["orders:read"], &all).unwrap_err();
        assert!(
            beyond_policy
                .to_string()
                .contains("the delegation allows payments:charge payments:refund"),
            "{beyond_policy}"
        );
        assert_eq!(
            beyond_policy.rules(),
            [Rule::Delegation("orders-for-users".into())]
        );
    }

    #[test]
    fn default_deny_names_the_actor_issuer_and_audience() {
        let stranger = decide("billing", IDP, 1, "payments", &[], &[]).unwrap_err();
        assert_eq!(stranger.oauth_error(), "unauthorized_client");
        assert_eq!(stranger.rules(), [Rule::DefaultDeny]);
        let other_issuer =
            decide("orders", "https://other.example", 1, "payments", &[], &[]).unwrap_err();
        assert_eq!(other_issuer.oauth_error(), "unauthorized_client");
        let other_audience = decide("orders", IDP, 1, "ledger", &[], &[]).unwrap_err();
        assert_eq!(other_audience.oauth_error(), "invalid_target");
    }

    #[test]
    fn a_chain_longer_than_allowed_is_refused() {
        assert!(
            decide(
                "payments",
                IDP,
                2,
                "ledger",
                &["ledger:write"],
                &["ledger:write"]
            )
            .is_ok()
        );
        let deep = decide("payments", IDP, 3, "ledger", &[], &[]).unwrap_err();
        assert_eq!(deep.oauth_error(), "invalid_request");
        assert!(deep.to_string().contains("would be 3 long"), "{deep}");
        let first_hop_only = decide("orders", IDP, 2, "payments", &[], &[]).unwrap_err();
        assert!(matches!(
            first_hop_only,
            DelegationRefusal::ChainTooLong { max: 1, .. }
        ));
    }
}
