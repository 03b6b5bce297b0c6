//! What an entry may grant: the operator's request (`EntrySpec`), checked
//! against certd's bounds into a `ValidEntry`, and the identity an entry
//! gives a certificate. Pure: no store, no index.

use std::collections::BTreeSet;
use std::time::Duration;

use super::RegistryError;
use crate::attest::proven_by_agent;
use crate::identity::{DnsName, ServiceName, SpiffeId, TrustDomain, WorkloadIdentity};
use crate::selector::Selector;
use crate::store::EntryRecord;

/// Most selectors one entry may require.
pub const MAX_SELECTORS: usize = 16;
/// Most extra DNS names one entry may grant.
pub const MAX_DNS_NAMES: usize = 32;

/// What an operator asks for in `certd entry create`.
#[derive(Debug, Clone, Default)]
pub struct EntrySpec {
    pub service: String,
    pub selectors: Vec<String>,
    /// `None` for `spiffe://<trust-domain>/svc/<service>`.
    pub spiffe_id: Option<String>,
    /// DNS names beyond the default `<service>.<trust-domain>`.
    pub dns_names: Vec<String>,
    /// `None` for the configured default certificate lifetime.
    pub ttl: Option<Duration>,
    /// The node agent (its SPIFFE ID) the entry is issued through; its
    /// selectors are then `unix:` ones, which that agent proves.
    pub parent: Option<String>,
    /// The entry is a node agent's: `spiffe://<td>/agent/<service>`, with
    /// no DNS names, attested directly (join or Kubernetes token).
    pub agent: bool,
    /// Audiences its JWT-SVIDs may name (least privilege: none, no tokens).
    pub jwt_audiences: Vec<String>,
    /// Foreign trust domains its workloads trust (federation).
    pub federates_with: Vec<String>,
}

/// What an entry may not grant, whoever creates it.
#[derive(Debug, Clone)]
pub struct EntryBounds {
    pub trust_domain: TrustDomain,
    pub max_ttl: Duration,
    /// certd's own TLS names: a workload holding one could pose as certd.
    pub reserved_dns_names: Vec<String>,
}

/// The validated content of a new entry (everything but id and creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEntry {
    pub service: ServiceName,
    pub spiffe_id: SpiffeId,
    pub dns_names: Vec<DnsName>,
    pub ttl_seconds: Option<u64>,
    pub selectors: Vec<Selector>,
    pub parent: Option<SpiffeId>,
    pub jwt_audiences: Vec<String>,
    pub federates_with: Vec<TrustDomain>,
}

impl EntrySpec {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self, bounds: &EntryBounds) -> Result<ValidEntry, RegistryError> {
        let service: ServiceName = self.service.parse()?;
        let invalid = |message: String| RegistryError::InvalidEntry(message);
        let selectors = self
            .selectors
            .iter()
            .map(|s| crate::attest::parse_selector(s).map_err(invalid))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if selectors.is_empty() || selectors.len() > MAX_SELECTORS {
            return Err(invalid(format!(
                "an entry needs 1 to {MAX_SELECTORS} selectors, got {}",
                selectors.len()
            )));
        }
        let parent = match &self.parent {
            None => None,
            Some(id) => Some(check_parent(id, &bounds.trust_domain).map_err(invalid)?),
        };
        check_selector_kinds(&selectors, parent.as_ref()).map_err(invalid)?;
        let jwt_audiences = check_jwt_audiences(&self.jwt_audiences).map_err(invalid)?;
        let federates_with =
            check_federates_with(&self.federates_with, &bounds.trust_domain).map_err(invalid)?;
        if self.agent {
            if !federates_with.is_empty() {
                return Err(invalid(
                    "an agent's entry federates with nothing: its workloads' entries say which trust domains they trust".into(),
                ));
            }
            if !jwt_audiences.is_empty() {
                return Err(invalid(
                    "an agent's entry grants no JWT audiences: agents fetch tokens for their workloads' entries".into(),
                ));
            }
            return self.validate_agent(bounds, service, selectors);
        }
        let default = WorkloadIdentity::for_service(&bounds.trust_domain, service.clone());
        let spiffe_id = match &self.spiffe_id {
            None => default.spiffe_id,
            Some(id) => check_spiffe_id(id, &bounds.trust_domain, &service).map_err(invalid)?,
        };
        let mut dns_names = default.dns_names;
        for name in &self.dns_names {
            let name = check_dns_name(name, bounds).map_err(invalid)?;
            if !dns_names.contains(&name) {
                dns_names.push(name);
            }
        }
        if dns_names.len() > MAX_DNS_NAMES + 1 {
            return Err(invalid(format!(
                "an entry may add at most {MAX_DNS_NAMES} DNS names"
            )));
        }
        if let Some(ttl) = self.ttl {
            crate::policy::check_ttl(ttl, bounds.max_ttl, crate::policy::CERTIFICATE_MAX_TTL)?;
        }
        Ok(ValidEntry {
            service,
            spiffe_id,
            dns_names,
            ttl_seconds: self.ttl.map(|ttl| ttl.as_secs()),
            selectors: selectors.into_iter().collect(),
            parent,
            jwt_audiences,
            federates_with,
        })
    }

    /// A node agent's entry: its SPIFFE ID is `/agent/<name>` and it gets
    /// no DNS name, so an agent can never pose as a service.
    fn validate_agent(
        &self,
        bounds: &EntryBounds,
        name: ServiceName,
        selectors: BTreeSet<Selector>,
    ) -> Result<ValidEntry, RegistryError> {
        let invalid = |message: &str| RegistryError::InvalidEntry(message.to_owned());
        if self.parent.is_some() {
            return Err(invalid(
                "an agent's entry cannot have a parent: agents attest directly",
            ));
        }
        if self.spiffe_id.is_some() || !self.dns_names.is_empty() {
            return Err(invalid(
                "an agent's entry takes no SPIFFE ID or DNS names: it is spiffe://<trust-domain>/agent/<name>",
            ));
        }
        if let Some(ttl) = self.ttl {
            crate::policy::check_ttl(ttl, bounds.max_ttl, crate::policy::CERTIFICATE_MAX_TTL)?;
        }
        let identity = WorkloadIdentity::for_agent(&bounds.trust_domain, name);
        Ok(ValidEntry {
            service: identity.service,
            spiffe_id: identity.spiffe_id,
            dns_names: identity.dns_names,
            ttl_seconds: self.ttl.map(|ttl| ttl.as_secs()),
            selectors: selectors.into_iter().collect(),
            parent: None,
            jwt_audiences: Vec::new(),
            federates_with: Vec::new(),
        })
    }
}

/// Most foreign trust domains one entry may federate with.
pub(crate) const MAX_FEDERATES_WITH: usize = 16;

/// The trust domains, each checked, never certd's own, sorted, without
/// duplicates. A domain without a relationship (yet) is allowed: its bundle
/// is handed out once one is added.
fn check_federates_with(domains: &[String], own: &TrustDomain) -> Result<Vec<TrustDomain>, String> {
    let mut checked = BTreeSet::new();
    for domain in domains {
        let parsed: TrustDomain = domain.parse().map_err(|_| {
            format!("--federates-with {domain:?} is not a trust domain (a DNS name such as partner.example)")
        })?;
        if &parsed == own {
            return Err(format!(
                "--federates-with {domain}: that is certd's own trust domain, which every entry trusts"
            ));
        }
        checked.insert(parsed.to_string());
    }
    if checked.len() > MAX_FEDERATES_WITH {
        return Err(format!(
            "an entry may federate with at most {MAX_FEDERATES_WITH} trust domains"
        ));
    }
    Ok(checked
        .into_iter()
        .filter_map(|domain| domain.parse().ok())
        .collect())
}

/// Most JWT audiences one entry may allow.
pub(crate) const MAX_JWT_AUDIENCES: usize = 32;

/// The audiences, each checked, without duplicates, in the order given.
fn check_jwt_audiences(audiences: &[String]) -> Result<Vec<String>, String> {
    let mut checked: Vec<String> = Vec::new();
    for audience in audiences {
        crate::jwt::check_audience(audience)?;
        if !checked.contains(audience) {
            checked.push(audience.clone());
        }
    }
    if checked.len() > MAX_JWT_AUDIENCES {
        return Err(format!(
            "an entry may allow at most {MAX_JWT_AUDIENCES} JWT audiences"
        ));
    }
    Ok(checked)
}

/// A parent must be a node agent of this trust domain.
fn check_parent(id: &str, trust_domain: &TrustDomain) -> Result<SpiffeId, String> {
    let prefix = format!("spiffe://{trust_domain}/agent/");
    let is_agent = id
        .strip_prefix(&prefix)
        .is_some_and(|name| name.parse::<ServiceName>().is_ok());
    match id.parse::<SpiffeId>() {
        Ok(parsed) if is_agent => Ok(parsed),
        _ => Err(format!(
            "parent {id:?} is not a node agent's SPIFFE ID: it must be {prefix}<name>"
        )),
    }
}

/// `unix:` selectors are the kernel's word, which only a node agent
/// gives: they belong to entries with a parent, and only they do.
fn check_selector_kinds(
    selectors: &BTreeSet<Selector>,
    parent: Option<&SpiffeId>,
) -> Result<(), String> {
    match parent {
        None => match selectors.iter().find(|s| proven_by_agent(s)) {
            Some(selector) => Err(format!(
                "selector {selector} is proven only by a node agent; give the entry --parent spiffe://<trust-domain>/agent/<node>"
            )),
            None => Ok(()),
        },
        Some(parent) => match selectors.iter().find(|s| !proven_by_agent(s)) {
            Some(selector) => Err(format!(
                "entry parented to {parent} can require only unix: selectors (what the agent proves); {selector} is not one"
            )),
            None => Ok(()),
        },
    }
}

/// A SPIFFE ID in this trust domain, outside the paths certd reserves.
fn check_spiffe_id(
    id: &str,
    trust_domain: &TrustDomain,
    service: &ServiceName,
) -> Result<SpiffeId, String> {
    let prefix = format!("spiffe://{trust_domain}/");
    let Some(path) = id.strip_prefix(&prefix) else {
        return Err(format!(
            "SPIFFE ID {id:?} must start with {prefix:?}: certd issues only in its own trust domain"
        ));
    };
    let Ok(parsed) = id.parse::<SpiffeId>() else {
        return Err(format!(
            "SPIFFE ID {id:?} has an invalid path: segments of letters, digits, '.', '-' and '_', none empty, '.' or '..'"
        ));
    };
    let first = path.split('/').next().unwrap_or_default();
    if first == "operator" {
        return Err(format!(
            "SPIFFE ID {id:?} is under /operator/, which only operator certificates may carry"
        ));
    }
    if first == "agent" {
        return Err(format!(
            "SPIFFE ID {id:?} is under /agent/, which only node agents' entries (--agent) may carry"
        ));
    }
    if first == "certd" {
        // Federation peers pin certd's own ID (`/certd/server`) to
        // authenticate its bundle endpoint: no workload may carry it.
        return Err(format!(
            "SPIFFE ID {id:?} is under /certd/, which only certd's own serving certificate carries"
        ));
    }
    if first == "svc" && path != format!("svc/{service}") {
        return Err(format!(
            "SPIFFE ID {id:?} is under /svc/ but is not /svc/{service}: /svc/<name> belongs to service <name>"
        ));
    }
    Ok(parsed)
}

/// A DNS name an entry may grant: a plain host name, lower-cased, no
/// wildcard, no IP address, none of certd's own names.
fn check_dns_name(name: &str, bounds: &EntryBounds) -> Result<DnsName, String> {
    let Ok(name) = name.parse::<DnsName>() else {
        return Err(format!(
            "DNS name {:?} is not a host name (labels of a-z, 0-9 and '-'; no wildcards or IP addresses)",
            name.to_ascii_lowercase()
        ));
    };
    if bounds
        .reserved_dns_names
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name.as_str()))
    {
        return Err(format!(
            "DNS name {name:?} is one of certd's own server names; a workload holding it could pose as certd"
        ));
    }
    Ok(name)
}

/// The identity a certificate for `entry` carries.
pub fn identity_of(entry: &EntryRecord) -> WorkloadIdentity {
    WorkloadIdentity {
        service: entry.service.clone(),
        spiffe_id: entry.spiffe_id.clone(),
        dns_names: entry.dns_names.clone(),
    }
}

/// Selectors as one line, for messages and the audit log.
pub fn describe(selectors: &[Selector]) -> String {
    selectors
        .iter()
        .map(Selector::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn bounds() -> EntryBounds {
        EntryBounds {
            trust_domain: "certd.internal".parse().unwrap(),
            max_ttl: Duration::from_secs(24 * 3600),
            reserved_dns_names: vec!["localhost".into()],
        }
    }

    pub(crate) fn spec(service: &str, selectors: &[&str]) -> EntrySpec {
        EntrySpec {
            service: service.into(),
            selectors: selectors.iter().map(|s| s.to_string()).collect(),
            ..EntrySpec::default()
        }
    }

    pub(crate) fn selectors(values: &[&str]) -> Vec<Selector> {
        values
            .iter()
            .map(|s| crate::attest::parse_selector(s).unwrap())
            .collect()
    }

    #[test]
    fn an_entry_gets_default_names_plus_its_own() {
        let mut spec = spec(
            "billing",
            &["k8s:sa:billing", "k8s:ns:payments", "k8s:ns:payments"],
        );
        spec.dns_names = vec![
            "Billing.Payments.svc.cluster.local".into(),
            "billing.certd.internal".into(),
        ];
        spec.ttl = Some(Duration::from_secs(3600));
        let entry = spec.validate(&bounds()).unwrap();
        assert_eq!(entry.spiffe_id, "spiffe://certd.internal/svc/billing");
        assert_eq!(
            entry.dns_names,
            [
                "billing.certd.internal",
                "billing.payments.svc.cluster.local"
            ]
        );
        assert_eq!(
            entry.selectors,
            selectors(&["k8s:ns:payments", "k8s:sa:billing"])
        );
        assert_eq!(entry.ttl_seconds, Some(3600));
    }

    #[test]
    fn entries_that_would_grant_too_much_are_refused() {
        let check = |change: &dyn Fn(&mut EntrySpec), says: &str| {
            let mut spec = spec("billing", &["token:b"]);
            change(&mut spec);
            let error = spec.validate(&bounds()).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        };
        check(&|s| s.selectors.clear(), "1 to 16 selectors");
        check(&|s| s.service = "Billing".into(), "RFC 1123");
        check(
            &|s| s.spiffe_id = Some("spiffe://other.org/svc/billing".into()),
            "own trust domain",
        );
        check(
            &|s| s.spiffe_id = Some("spiffe://certd.internal/operator/alice".into()),
            "/operator/",
        );
        check(
            &|s| s.spiffe_id = Some("spiffe://certd.internal/certd/server".into()),
            "/certd/",
        );
        check(
            &|s| s.federates_with = vec!["certd.internal".into()],
            "certd's own trust domain",
        );
        check(
            &|s| s.federates_with = vec!["Not A Domain".into()],
            "is not a trust domain",
        );
        check(
            &|s| s.spiffe_id = Some("spiffe://certd.internal/svc/payments".into()),
            "belongs to service",
        );
        check(
            &|s| s.spiffe_id = Some("spiffe://certd.internal/a//b".into()),
            "invalid path",
        );
        check(
            &|s| s.dns_names = vec!["*.example.com".into()],
            "no wildcards",
        );
        check(&|s| s.dns_names = vec!["10.0.0.1".into()], "IP addresses");
        check(&|s| s.dns_names = vec!["LOCALHOST".into()], "pose as certd");
        check(
            &|s| s.ttl = Some(Duration::from_secs(48 * 3600)),
            "exceeds the maximum",
        );
        check(
            &|s| s.dns_names = (0..40).map(|i| format!("n{i}.example.com")).collect(),
            "at most 32",
        );
    }

    #[test]
    fn a_custom_spiffe_id_is_kept() {
        let mut spec = spec("billing", &["token:b"]);
        spec.spiffe_id = Some("spiffe://certd.internal/ns/payments/sa/billing".into());
        assert_eq!(
            spec.validate(&bounds()).unwrap().spiffe_id,
            "spiffe://certd.internal/ns/payments/sa/billing"
        );
    }
}
