//! The token policy: which caller may get access tokens for which audience,
//! carrying which scopes; its file format (`certd policy check|apply`:
//! `[[grant]]` tables, and the `[[delegation]]` tables `delegations`
//! decides on), and the decision the token endpoint and `certd policy
//! explain` share.
//!
//! Default deny. A caller reaches an audience through a grant naming its
//! service or SPIFFE ID, or through its registration entry's
//! `--jwt-audience` (an audience-only grant: no scopes). A token carries
//! only scopes both asked for and granted; asking for one not granted
//! refuses the whole request, naming it. Pure: no I/O, no store.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::identity::{ServiceName, SpiffeId, TrustDomain};
use crate::model::{DelegationRecord, GrantCaller, GrantRecord, PolicyRecord};

/// Most grants (and delegations) one policy may hold.
pub const MAX_GRANTS: usize = 10_000;
/// Most actors a delegation may allow in a token's `act` chain: a bound
/// on the size of every token.
pub const MAX_CHAIN: u8 = 8;
/// Most subject issuers one delegation may name.
const MAX_SUBJECT_ISSUERS: usize = 16;
/// Most scopes one grant, or one request, may name.
pub const MAX_SCOPES: usize = 64;
/// Longest scope.
pub const MAX_SCOPE_LEN: usize = 128;
/// Longest grant name.
const MAX_NAME_LEN: usize = 64;

/// Why a policy file is not a valid policy. Names the grant and field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyFileError {
    #[error("the policy file is not valid TOML: {0}")]
    Syntax(String),
    #[error("grant {grant:?}: {message}")]
    Grant { grant: String, message: String },
    #[error("delegation {delegation:?}: {message}")]
    Delegation { delegation: String, message: String },
    #[error("the policy holds {0} grants and delegations; at most {MAX_GRANTS} are allowed")]
    TooManyGrants(usize),
}

impl PolicyFileError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

/// Another change to the policy came first (`certd policy apply
/// --expected-version`, or a race lost three times).
#[derive(Debug, thiserror::Error)]
#[error(
    "the token policy changed meanwhile (expected version {expected}, now {current}): export it again, reapply your change, and retry"
)]
pub struct PolicyConflict {
    pub expected: u64,
    pub current: u64,
}

impl PolicyConflict {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::FailedPrecondition
    }
}

/// The policy file: `[[grant]]` and `[[delegation]]` tables.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default, rename = "grant")]
    grants: Vec<GrantFile>,
    #[serde(default, rename = "delegation", skip_serializing_if = "Vec::is_empty")]
    delegations: Vec<DelegationFile>,
}

/// A `[[delegation]]` table: `from` may exchange tokens of subjects of
/// `on_behalf_of` (issuer URLs) for tokens for `to`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegationFile {
    name: String,
    /// The actor: a service name or SPIFFE ID.
    from: String,
    /// The issuers (`iss`) of the subjects it may act for.
    on_behalf_of: Vec<String>,
    to: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// Most actors the new token's `act` chain may name (default 1: only
    /// the first hop after the subject's own token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_chain: Option<u8>,
}

/// What a policy file holds, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    pub grants: Vec<GrantRecord>,
    pub delegations: Vec<DelegationRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    /// Unique; audits and `policy explain` name the rule by it.
    name: String,
    /// A service name (every entry of the service) or a SPIFFE ID.
    from: String,
    /// The audience: the service the token is for.
    to: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Parses and checks a policy file. SPIFFE IDs must be in `trust_domain`.
pub fn parse_policy(
    text: &str,
    trust_domain: &TrustDomain,
) -> Result<PolicyRules, PolicyFileError> {
    let file = policy_file(text)?;
    let count = file.grants.len() + file.delegations.len();
    if count > MAX_GRANTS {
        return Err(PolicyFileError::TooManyGrants(count));
    }
    let mut names = BTreeSet::new();
    let mut rules = PolicyRules::default();
    for grant in file.grants {
        let invalid = |message: String| PolicyFileError::Grant {
            grant: grant.name.chars().take(MAX_NAME_LEN).collect(),
            message,
        };
        let (caller, scopes) = checked_rule(
            RuleFields {
                name: &grant.name,
                from: &grant.from,
                to: &grant.to,
                scopes: &grant.scopes,
            },
            &mut names,
            "another grant has this name",
            trust_domain,
        )
        .map_err(invalid)?;
        rules.grants.push(GrantRecord {
            name: grant.name,
            caller,
            audience: grant.to,
            scopes,
        });
    }
    for delegation in file.delegations {
        let invalid = |message: String| PolicyFileError::Delegation {
            delegation: delegation.name.chars().take(MAX_NAME_LEN).collect(),
            message,
        };
        let (actor, scopes) = checked_rule(
            RuleFields {
                name: &delegation.name,
                from: &delegation.from,
                to: &delegation.to,
                scopes: &delegation.scopes,
            },
            &mut names,
            "another grant or delegation has this name",
            trust_domain,
        )
        .map_err(invalid)?;
        let subject_issuers: BTreeSet<String> = delegation.on_behalf_of.iter().cloned().collect();
        if subject_issuers.is_empty() || subject_issuers.len() > MAX_SUBJECT_ISSUERS {
            return Err(invalid(format!(
                "on_behalf_of must name 1 to {MAX_SUBJECT_ISSUERS} subject issuers (the iss of the users' tokens, or certd's own issuer)"
            )));
        }
        for issuer in &subject_issuers {
            check_issuer(issuer).map_err(|m| invalid(format!("on_behalf_of: {m}")))?;
        }
        let max_chain = delegation.max_chain.unwrap_or(1);
        if !(1..=MAX_CHAIN).contains(&max_chain) {
            return Err(invalid(format!("max_chain must be 1 to {MAX_CHAIN}")));
        }
        rules.delegations.push(DelegationRecord {
            name: delegation.name,
            actor,
            subject_issuers: subject_issuers.into_iter().collect(),
            audience: delegation.to,
            scopes,
            max_chain,
        });
    }
    Ok(rules)
}

/// What grants and delegations both name.
struct RuleFields<'a> {
    name: &'a str,
    from: &'a str,
    to: &'a str,
    scopes: &'a [String],
}

/// Checks what a grant and a delegation both name: a name unique among
/// `names` (else `taken`), a caller in `trust_domain`, an audience and
/// scopes; the caller, and the scopes sorted and distinct.
fn checked_rule(
    rule: RuleFields<'_>,
    names: &mut BTreeSet<String>,
    taken: &str,
    trust_domain: &TrustDomain,
) -> Result<(GrantCaller, Vec<String>), String> {
    check_name(rule.name)?;
    if !names.insert(rule.name.to_owned()) {
        return Err(taken.to_owned());
    }
    let caller = parse_caller(rule.from, trust_domain).map_err(|m| format!("from: {m}"))?;
    crate::jwt::check_audience(rule.to).map_err(|m| format!("to: {m}"))?;
    let scopes = check_scopes(rule.scopes).map_err(|m| format!("scopes: {m}"))?;
    Ok((caller, scopes))
}

/// A subject issuer as tokens name it: an `http(s)://` URL.
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let valid = (issuer.starts_with("https://") || issuer.starts_with("http://"))
        && issuer.len() <= 512
        && issuer.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not an issuer URL (https://…)",
            issuer.chars().take(64).collect::<String>()
        ))
    }
}

/// The policy as a file `parse_policy` reads back to the same grants.
pub fn render_policy(policy: &PolicyRecord) -> String {
    let file = PolicyFile {
        grants: policy
            .grants
            .iter()
            .map(|grant| GrantFile {
                name: grant.name.clone(),
                from: grant.caller.to_string(),
                to: grant.audience.clone(),
                scopes: grant.scopes.clone(),
            })
            .collect(),
        delegations: policy
            .delegations
            .iter()
            .map(|delegation| DelegationFile {
                name: delegation.name.clone(),
                from: delegation.actor.to_string(),
                on_behalf_of: delegation.subject_issuers.clone(),
                to: delegation.audience.clone(),
                scopes: delegation.scopes.clone(),
                max_chain: Some(delegation.max_chain),
            })
            .collect(),
    };
    let body = toml::to_string_pretty(&file).unwrap_or_default();
    format!(
        "# certd token policy, version {} (changed by {} at {}).\n# Check with `certd policy check FILE`; apply with `certd policy apply FILE`.\n\n{body}",
        policy.version, policy.changed_by, policy.changed_at
    )
}

/// `text` (a policy file) with grant `name` added, or replaced if it is
/// there, for `certd policy grant`. Only the file's shape is read here: the
/// daemon checks the result as any policy it is given.
pub fn set_grant(
    text: &str,
    name: &str,
    from: &str,
    to: &str,
    scopes: &[String],
) -> Result<String, PolicyFileError> {
    let mut file = policy_file(text)?;
    let grant = GrantFile {
        name: name.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        scopes: scopes.to_vec(),
    };
    match file.grants.iter_mut().find(|g| g.name == name) {
        Some(existing) => *existing = grant,
        None => file.grants.push(grant),
    }
    Ok(toml::to_string_pretty(&file).unwrap_or_default())
}

/// `text` (a policy file) with delegation `name` added, or replaced if it
/// is there; as `set_grant`, only the file's shape is read here.
pub fn set_delegation(
    text: &str,
    name: &str,
    from: &str,
    on_behalf_of: &[String],
    to: &str,
    scopes: &[String],
) -> Result<String, PolicyFileError> {
    let mut file = policy_file(text)?;
    let delegation = DelegationFile {
        name: name.to_owned(),
        from: from.to_owned(),
        on_behalf_of: on_behalf_of.to_vec(),
        to: to.to_owned(),
        scopes: scopes.to_vec(),
        max_chain: None,
    };
    match file.delegations.iter_mut().find(|d| d.name == name) {
        Some(existing) => *existing = delegation,
        None => file.delegations.push(delegation),
    }
    Ok(toml::to_string_pretty(&file).unwrap_or_default())
}

/// `text` without the grant or delegation `name`, for `certd policy
/// revoke`; `None` if it has neither.
pub fn remove_grant(text: &str, name: &str) -> Result<Option<String>, PolicyFileError> {
    let mut file = policy_file(text)?;
    let before = file.grants.len() + file.delegations.len();
    file.grants.retain(|g| g.name != name);
    file.delegations.retain(|d| d.name != name);
    let after = file.grants.len() + file.delegations.len();
    Ok((after < before).then(|| toml::to_string_pretty(&file).unwrap_or_default()))
}

/// The names of the grants and delegations in `text` (a policy file), in
/// file order: what `certd bench` reads to tell its own rules from an
/// operator's. Only the file's shape is read, as in `set_grant`.
pub fn rule_names(text: &str) -> Result<Vec<String>, PolicyFileError> {
    let file = policy_file(text)?;
    Ok(file
        .grants
        .into_iter()
        .map(|grant| grant.name)
        .chain(
            file.delegations
                .into_iter()
                .map(|delegation| delegation.name),
        )
        .collect())
}

fn policy_file(text: &str) -> Result<PolicyFile, PolicyFileError> {
    toml::from_str(text).map_err(|e| PolicyFileError::Syntax(e.message().to_owned()))
}

/// A grant's caller: a SPIFFE ID in the trust domain, or a service name.
pub fn parse_caller(value: &str, trust_domain: &TrustDomain) -> Result<GrantCaller, String> {
    if value.starts_with("spiffe://") {
        let id: SpiffeId = value.parse().map_err(|e| format!("{e}"))?;
        if id.trust_domain() != trust_domain.as_str() {
            return Err(format!(
                "{id} is not in this CA's trust domain {trust_domain}"
            ));
        }
        Ok(GrantCaller::SpiffeId(id))
    } else {
        value
            .parse::<ServiceName>()
            .map(GrantCaller::Service)
            .map_err(|e| format!("{value:?} is neither a SPIFFE ID nor a service name: {e}"))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(format!(
            "a grant's name must be 1 to {MAX_NAME_LEN} letters, digits, '-', '_', '.' or ':'"
        ));
    }
    Ok(())
}

/// One scope: RFC 6749 §3.3 `scope-token` characters, 1 to 128 of them.
fn check_scope(scope: &str) -> Result<(), String> {
    let allowed = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    if scope.is_empty() || scope.len() > MAX_SCOPE_LEN || !scope.bytes().all(allowed) {
        return Err(format!(
            "scope {:?} must be 1 to {MAX_SCOPE_LEN} printable characters without spaces, '\"' or '\\'",
            scope.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

/// Checked scopes, sorted and without duplicates.
pub fn check_scopes(scopes: &[String]) -> Result<Vec<String>, String> {
    for scope in scopes {
        check_scope(scope)?;
    }
    let distinct: BTreeSet<&String> = scopes.iter().collect();
    if distinct.len() > MAX_SCOPES {
        return Err(format!(
            "at most {MAX_SCOPES} scopes, got {}",
            distinct.len()
        ));
    }
    Ok(distinct.into_iter().cloned().collect())
}

/// The `scope` parameter of a token request: space-separated scopes.
pub fn parse_scope_parameter(value: &str) -> Result<Vec<String>, String> {
    let scopes: Vec<String> = value
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    check_scopes(&scopes)
}

/// Who asks for a token, as the policy sees it.
#[derive(Debug, Clone)]
pub struct TokenCaller<'a> {
    pub spiffe_id: &'a SpiffeId,
    pub service: &'a ServiceName,
    /// The caller's registration entries: (id, `--jwt-audience`s).
    pub entries: Vec<(&'a str, &'a [String])>,
}

/// The rule that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A grant of the policy, by name.
    Grant(String),
    /// A delegation of the policy, by name.
    Delegation(String),
    /// A check before the policy (a token exchange's subject token, its
    /// actor chain…), by what it checks.
    Check(&'static str),
    /// A registration entry's `--jwt-audience`: the audience alone.
    EntryAudience(String),
    /// Nothing grants the caller this audience.
    DefaultDeny,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Grant(name) => write!(f, "grant {name}"),
            Rule::Delegation(name) => write!(f, "delegation {name}"),
            Rule::Check(what) => write!(f, "check {what}"),
            Rule::EntryAudience(entry) => write!(f, "entry {entry} (--jwt-audience)"),
            Rule::DefaultDeny => f.write_str("default deny"),
        }
    }
}

/// Why the policy refused. The message names what was refused and what
/// is granted, never a token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenRefusal {
    #[error(
        "no grant lets {caller} call audience {audience:?} (default deny); an operator grants it with `certd policy apply`"
    )]
    NoGrant { caller: String, audience: String },
    #[error("{caller} may not have scope(s) {} at {audience:?}; granted there: {} (by {})", .refused.join(" "), granted_list(.granted), rules_list(.rules))]
    ScopeNotGranted {
        caller: String,
        audience: String,
        refused: Vec<String>,
        granted: Vec<String>,
        rules: Vec<Rule>,
    },
}

fn granted_list(granted: &[String]) -> String {
    if granted.is_empty() {
        "the audience alone, no scopes".into()
    } else {
        granted.join(" ")
    }
}

/// The rules, named as audits name them, comma-separated.
pub(crate) fn rules_list(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(Rule::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl TokenRefusal {
    /// The rules that decided: the grants that reached the audience, or
    /// default deny.
    pub fn rules(&self) -> Vec<Rule> {
        match self {
            TokenRefusal::NoGrant { .. } => vec![Rule::DefaultDeny],
            TokenRefusal::ScopeNotGranted { rules, .. } => rules.clone(),
        }
    }

    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::PermissionDenied
    }
}

/// What the policy grants: the scopes for the token, and the rules that
/// granted them (every rule that reached the audience, when none is asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub scopes: Vec<String>,
    pub rules: Vec<Rule>,
}

/// Decides a request of `caller` for a token for `audience` carrying
/// `scopes` (checked, sorted, distinct).
pub fn decide(
    policy: &PolicyRecord,
    caller: &TokenCaller<'_>,
    audience: &str,
    scopes: &[String],
) -> Result<TokenGrant, TokenRefusal> {
    let mut rules = Vec::new();
    let mut granted = BTreeSet::new();
    for grant in &policy.grants {
        let names_caller = match &grant.caller {
            GrantCaller::Service(service) => service == caller.service,
            GrantCaller::SpiffeId(id) => id == caller.spiffe_id,
        };
        if names_caller && grant.audience == audience {
            rules.push(Rule::Grant(grant.name.clone()));
            granted.extend(grant.scopes.iter().cloned());
        }
    }
    for (entry, audiences) in &caller.entries {
        if audiences.iter().any(|a| a == audience) {
            rules.push(Rule::EntryAudience((*entry).to_owned()));
        }
    }
    if rules.is_empty() {
        return Err(TokenRefusal::NoGrant {
            caller: caller.spiffe_id.to_string(),
            audience: audience.to_owned(),
        });
    }
    let refused: Vec<String> = scopes
        .iter()
        .filter(|scope| !granted.contains(*scope))
        .cloned()
        .collect();
    if !refused.is_empty() {
        return Err(TokenRefusal::ScopeNotGranted {
            caller: caller.spiffe_id.to_string(),
            audience: audience.to_owned(),
            refused,
            granted: granted.into_iter().collect(),
            rules,
        });
    }
    // The rules that granted what was asked: those holding an asked scope,
    // or, for the audience alone, every rule that reached it.
    let deciding: Vec<Rule> = if scopes.is_empty() {
        rules
    } else {
        rules
            .into_iter()
            .filter(|rule| match rule {
                Rule::Grant(name) => policy
                    .grants
                    .iter()
                    .any(|g| &g.name == name && g.scopes.iter().any(|s| scopes.contains(s))),
                _ => false,
            })
            .collect()
    };
    Ok(TokenGrant {
        scopes: scopes.to_vec(),
        rules: deciding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_domain() -> TrustDomain {
        "certd.internal".parse().unwrap()
    }

    const POLICY: &str = r#"
[[grant]]
name = "billing-invoices"
from = "billing"
to = "invoices"
scopes = ["invoices:read", "invoices:create", "invoices:read"]

[[grant]]
name = "gateway-orders"
from = "spiffe://certd.internal/svc/gateway"
to = "orders"
"#;

    fn policy() -> PolicyRecord {
        PolicyRecord {
            version: 3,
            grants: parse_policy(POLICY, &trust_domain()).unwrap().grants,
            delegations: Vec::new(),
            changed_at: 1,
            changed_by: "test".into(),
        }
    }

    fn decide_for(
        service: &str,
        audiences: &[String],
        audience: &str,
        scopes: &[&str],
    ) -> Result<TokenGrant, TokenRefusal> {
        let service: ServiceName = service.parse().unwrap();
        let id: SpiffeId = format!("spiffe://certd.internal/svc/{service}")
            .parse()
            .unwrap();
        let caller = TokenCaller {
            spiffe_id: &id,
            service: &service,
            entries: vec![("e1", audiences)],
        };
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        decide(&policy(), &caller, audience, &scopes)
    }

    #[test]
    fn a_policy_file_parses_renders_and_reads_back_the_same() {
        let policy = policy();
        assert_eq!(
            policy.grants[0].scopes,
            ["invoices:create", "invoices:read"],
            "sorted, without duplicates"
        );
        assert!(matches!(policy.grants[1].caller, GrantCaller::SpiffeId(_)));
        let rendered = render_policy(&policy);
        assert_eq!(
            parse_policy(&rendered, &trust_domain()).unwrap().grants,
            policy.grants
        );
    }

    #[test]
    fn a_bad_policy_file_is_refused_naming_the_grant_and_field() {
        let check = |text: &str, expected: &str| {
            let error = parse_policy(text, &trust_domain()).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        };
        check(
            "[[grant]]\nname = \"a\"\nfrom = \"billing\"\n",
            "missing field `to`",
        );
        check(
            "[[grant]]\nname = \"a\"\nfrom = \"billing\"\nto = \"x\"\nscope = []\n",
            "unknown field `scope`",
        );
        check(
            "[[grant]]\nname = \"a b\"\nfrom = \"billing\"\nto = \"x\"\n",
            "\"a b\": a grant's name",
        );
        check(
            "[[grant]]\nname = \"a\"\nfrom = \"billing\"\nto = \"x\"\n[[grant]]\nname = \"a\"\nfrom = \"orders\"\nto = \"y\"\n",
            "another grant has this name",
        );
        check(
            "[[grant]]\nname = \"a\"\nfrom = \"spiffe://other.example/svc/x\"\nto = \"x\"\n",
            "from: spiffe://other.example/svc/x is not in this CA's trust domain",
        );
        check(
            "[[grant]]\nname = \"a\"\nfrom = \"Bad Name\"\nto = \"x\"\n",
            "from: \"Bad Name\" is neither",
        );
        check(
            "[[grant]]\nname = \"a\"\nfrom = \"billing\"\nto = \"has space\"\n",
            "to: audience",
        );
        check(
            "[[grant]]\nname = \"a\"\nfrom = \"billing\"\nto = \"x\"\nscopes = [\"a\\\\b\"]\n",
            "scopes: scope",
        );
        check("grant = 5", "invalid type");
    }

    #[test]
    fn delegations_parse_render_and_survive_editing_the_grants() {
        let text = format!(
            "{POLICY}\n[[delegation]]\nname = \"orders-for-users\"\nfrom = \"orders\"\non_behalf_of = [\"https://idp.example\", \"https://idp.example\"]\nto = \"payments\"\nscopes = [\"payments:charge\"]\n"
        );
        let rules = parse_policy(&text, &trust_domain()).unwrap();
        let delegation = &rules.delegations[0];
        assert_eq!(delegation.subject_issuers, ["https://idp.example"]);
        assert_eq!(delegation.max_chain, 1, "the first hop only, by default");
        let policy = PolicyRecord {
            grants: rules.grants.clone(),
            delegations: rules.delegations.clone(),
            ..PolicyRecord::default()
        };
        assert_eq!(
            parse_policy(&render_policy(&policy), &trust_domain()),
            Ok(rules.clone())
        );
        let edited = set_grant(&text, "hr-payroll", "hr", "payroll", &[]).unwrap();
        assert_eq!(
            parse_policy(&edited, &trust_domain()).unwrap().delegations,
            rules.delegations
        );
        let revoked = remove_grant(&edited, "orders-for-users").unwrap().unwrap();
        let left = parse_policy(&revoked, &trust_domain()).unwrap();
        assert!(left.delegations.is_empty());
        assert_eq!(left.grants.len(), 3);
        let refused = |extra: &str, expected: &str| {
            let text = format!(
                "[[delegation]]\nname = \"d\"\nfrom = \"orders\"\nto = \"payments\"\n{extra}"
            );
            let error = parse_policy(&text, &trust_domain())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        };
        refused("", "missing field `on_behalf_of`");
        refused(
            "on_behalf_of = []",
            "delegation \"d\": on_behalf_of must name",
        );
        refused("on_behalf_of = [\"idp\"]", "is not an issuer URL");
        refused(
            "on_behalf_of = [\"https://idp.example\"]\nmax_chain = 9",
            "max_chain must be 1 to 8",
        );
        refused(
            "on_behalf_of = [\"https://idp.example\"]\n[[grant]]\nname = \"d\"\nfrom = \"x\"\nto = \"y\"",
            "another grant or delegation has this name",
        );
    }

    #[test]
    fn one_grant_is_added_replaced_or_removed_and_the_rest_kept() {
        let scopes = vec!["payroll:read".to_owned()];
        let added = set_grant(POLICY, "hr-payroll", "hr", "payroll", &scopes).unwrap();
        let grants = parse_policy(&added, &trust_domain()).unwrap().grants;
        assert_eq!(grants.len(), 3);
        assert_eq!(grants[2].scopes, scopes);
        let replaced = set_grant(&added, "hr-payroll", "hr", "payroll", &[]).unwrap();
        let grants = parse_policy(&replaced, &trust_domain()).unwrap().grants;
        assert_eq!(grants.len(), 3);
        assert!(grants[2].scopes.is_empty());
        let removed = remove_grant(&replaced, "billing-invoices")
            .unwrap()
            .unwrap();
        let names: Vec<String> = parse_policy(&removed, &trust_domain())
            .unwrap()
            .grants
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["gateway-orders", "hr-payroll"]);
        assert_eq!(rule_names(&removed).unwrap(), names);
        let issuers = ["https://idp.example".to_owned()];
        let delegated = set_delegation(&removed, "hr-on-behalf", "hr", &issuers, "payroll", &[]);
        assert_eq!(
            rule_names(&delegated.unwrap()).unwrap(),
            ["gateway-orders", "hr-payroll", "hr-on-behalf"]
        );
        assert_eq!(remove_grant(&removed, "billing-invoices").unwrap(), None);
        assert_eq!(
            set_grant("", "a", "b", "c", &[]).map(|t| t.contains("[[grant]]")),
            Ok(true)
        );
    }

    #[test]
    fn only_granted_scopes_are_issued_and_default_is_deny() {
        let granted = decide_for("billing", &[], "invoices", &["invoices:create"]).unwrap();
        assert_eq!(granted.scopes, ["invoices:create"]);
        assert_eq!(granted.rules, [Rule::Grant("billing-invoices".into())]);

        let refused = decide_for(
            "billing",
            &[],
            "invoices",
            &["invoices:create", "payroll:read"],
        )
        .unwrap_err();
        assert!(
            matches!(&refused, TokenRefusal::ScopeNotGranted { refused, .. } if refused == &["payroll:read"])
        );
        let message = refused.to_string();
        assert!(
            message.contains("may not have scope(s) payroll:read"),
            "{message}"
        );
        assert!(message.contains("by grant billing-invoices"), "{message}");

        let unknown = decide_for("billing", &[], "payroll", &[]).unwrap_err();
        assert_eq!(unknown.rules(), [Rule::DefaultDeny]);
        assert!(unknown.to_string().contains("default deny"));

        let nobody = decide_for("orders", &[], "invoices", &[]).unwrap_err();
        assert!(matches!(nobody, TokenRefusal::NoGrant { .. }));
    }

    #[test]
    fn an_entry_audience_grants_the_audience_alone() {
        let audiences = vec!["reports".to_owned()];
        let granted = decide_for("orders", &audiences, "reports", &[]).unwrap();
        assert!(granted.scopes.is_empty());
        assert_eq!(granted.rules, [Rule::EntryAudience("e1".into())]);
        let refused = decide_for("orders", &audiences, "reports", &["reports:write"]).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("the audience alone, no scopes")
        );
        // A grant by SPIFFE ID reaches only that ID.
        assert!(decide_for("gateway", &[], "orders", &[]).is_ok());
        assert!(decide_for("billing", &[], "orders", &[]).is_err());
    }

    /// A small deterministic generator (xorshift), so a failure repeats.
    fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn hostile_policy_files_and_scopes_are_refused_without_panicking() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"[]=\"\\\n #:/.,{}grantnamefromtoscopes0123456789\xff\x00";
        for round in 0..3000 {
            let length = round % 300;
            let noise = bytes(&mut seed, length);
            // Raw bytes, and text built from the file format's own symbols.
            let raw = String::from_utf8_lossy(&noise).into_owned();
            let shaped: String = noise
                .iter()
                .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
                .collect();
            for text in [&raw, &shaped, &format!("[[grant]]\n{shaped}")] {
                let _ = parse_policy(text, &trust_domain());
                let _ = parse_scope_parameter(text);
                let _ = set_grant(text, "n", "billing", "x", &[]);
                let _ = remove_grant(text, "n");
            }
        }
    }

    #[test]
    fn the_scope_parameter_is_space_separated_and_checked() {
        assert_eq!(parse_scope_parameter("b a  b").unwrap(), ["a", "b"]);
        assert!(parse_scope_parameter("a\"b").is_err());
        assert!(
            parse_scope_parameter(&"x ".repeat(MAX_SCOPES + 1)).is_ok(),
            "duplicates collapse"
        );
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert!(parse_scope_parameter(&many.join(" ")).is_err());
    }
}
