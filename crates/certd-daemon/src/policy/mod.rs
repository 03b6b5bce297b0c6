//! Policy: whether an attested identity may have what its request asks for.
//!
//! The identity decides the certificate's names; policy only checks that the
//! CSR asks for nothing beyond them and for no CA powers, and that a
//! requested lifetime is within bounds. Pure functions: no I/O, no store.
//! `grants` holds the token policy: which caller may have which audience
//! and scopes; `delegations` decides token exchanges on a subject's behalf;
//! `operator_roles` which admin RPC an operator may call.

pub mod delegations;
pub mod grants;
pub mod operator_roles;

use std::time::Duration;

use crate::ca::csr::{RequestedName, ValidatedCsr};
use crate::identity::{OperatorIdentity, WorkloadIdentity};

/// Why policy refused. Every variant maps to `PERMISSION_DENIED`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("CSR asks for {name}, which identity {identity} may not have (allowed: {allowed})")]
    NameNotAllowed {
        name: String,
        identity: String,
        allowed: String,
    },
    #[error(
        "CSR asks for CA powers (CA:TRUE, keyCertSign or cRLSign); certd only issues end-entity certificates"
    )]
    CaRequested,
    #[error(
        "requested lifetime {} exceeds the maximum of {} (`{setting}` in certd.toml)",
        humantime::format_duration(*.requested),
        humantime::format_duration(*.maximum)
    )]
    TtlTooLong {
        requested: Duration,
        maximum: Duration,
        /// The configuration field that sets the maximum.
        setting: &'static str,
    },
    /// An operator's role does not allow the admin RPC it called.
    #[error(transparent)]
    Role(#[from] operator_roles::RoleRefusal),
    #[error("the token endpoint would refuse this request ({error})")]
    TokenRefused { error: String },
}

impl PolicyError {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            // A lifetime is part of the request, not of who may have it.
            PolicyError::TtlTooLong { .. } => crate::ErrorKind::InvalidInput,
            PolicyError::NameNotAllowed { .. }
            | PolicyError::CaRequested
            | PolicyError::Role(_)
            | PolicyError::TokenRefused { .. } => crate::ErrorKind::PermissionDenied,
        }
    }
}

/// Checks a CSR against the identity it will be issued for.
pub(crate) fn check_csr(
    csr: &ValidatedCsr,
    identity: &WorkloadIdentity,
) -> Result<(), PolicyError> {
    if csr.requests_ca() {
        return Err(PolicyError::CaRequested);
    }
    let spiffe_id = &identity.spiffe_id;
    let is_dns_name = |name: &str| {
        identity
            .dns_names
            .iter()
            .any(|d| d.as_str().eq_ignore_ascii_case(name))
    };
    for requested in csr.requested_names() {
        let allowed = match requested {
            RequestedName::CommonName(cn) => {
                cn == identity.service.as_str() || is_dns_name(cn) || cn == spiffe_id.as_str()
            }
            RequestedName::Dns(dns) => is_dns_name(dns),
            RequestedName::Uri(uri) => uri == spiffe_id.as_str(),
            RequestedName::Other(_) => false,
        };
        if !allowed {
            let dns: Vec<String> = identity
                .dns_names
                .iter()
                .map(|d| format!("DNS:{d}"))
                .collect();
            return Err(PolicyError::NameNotAllowed {
                name: requested.to_string(),
                identity: spiffe_id.to_string(),
                allowed: format!(
                    "CN={}, {}, URI:{spiffe_id}",
                    identity.service,
                    dns.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Checks a CSR for an operator certificate: no CA powers, and no name but
/// the operator's SPIFFE ID (or its name as CN).
pub(crate) fn check_operator_csr(
    csr: &ValidatedCsr,
    operator: &OperatorIdentity,
) -> Result<(), PolicyError> {
    if csr.requests_ca() {
        return Err(PolicyError::CaRequested);
    }
    let spiffe_id = operator.spiffe_id();
    for requested in csr.requested_names() {
        let allowed = match requested {
            RequestedName::CommonName(cn) => cn == operator.name.as_str() || *cn == spiffe_id,
            RequestedName::Uri(uri) => *uri == spiffe_id,
            RequestedName::Dns(_) | RequestedName::Other(_) => false,
        };
        if !allowed {
            return Err(PolicyError::NameNotAllowed {
                name: requested.to_string(),
                identity: spiffe_id.to_string(),
                allowed: format!("URI:{spiffe_id}"),
            });
        }
    }
    Ok(())
}

/// The configuration field of the certificate lifetime's maximum.
pub(crate) const CERTIFICATE_MAX_TTL: &str = "issuance.max_ttl";
/// The configuration field of a scoped operator certificate's maximum.
pub(crate) const OPERATOR_CERTIFICATE_MAX_TTL: &str = "operators.max_certificate_ttl";
/// The configuration field of the join token lifetime's maximum.
pub(crate) const JOIN_TOKEN_MAX_TTL: &str = "join_tokens.max_ttl";

/// Checks a requested lifetime against the maximum that `setting` (a
/// configuration field, named in the refusal) sets.
pub(crate) fn check_ttl(
    requested: Duration,
    maximum: Duration,
    setting: &'static str,
) -> Result<(), PolicyError> {
    if requested > maximum {
        return Err(PolicyError::TtlTooLong {
            requested,
            maximum,
            setting,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;

    fn identity() -> WorkloadIdentity {
        WorkloadIdentity::for_service(
            &"certd.internal".parse().unwrap(),
            "billing".parse().unwrap(),
        )
    }

    fn csr_asking(cn: Option<&str>, sans: Vec<SanType>) -> ValidatedCsr {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        ValidatedCsr::from_der(&der).unwrap()
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    fn uri(name: &str) -> SanType {
        SanType::URI(name.try_into().unwrap())
    }

    fn check(cn: Option<&str>, sans: Vec<SanType>, refused_name: Option<&str>) {
        let result = check_csr(&csr_asking(cn, sans), &identity());
        match refused_name {
            None => assert_eq!(result, Ok(())),
            Some(expected) => match result {
                Err(PolicyError::NameNotAllowed { name, .. }) => assert_eq!(name, expected),
                other => panic!("expected {expected} to be refused, got {other:?}"),
            },
        }
    }

    #[test]
    fn names_of_the_identity_are_allowed() {
        check(None, vec![], None);
        check(Some("billing"), vec![], None);
        check(
            Some("billing"),
            vec![
                dns("billing.certd.internal"),
                uri("spiffe://certd.internal/svc/billing"),
            ],
            None,
        );
        check(None, vec![dns("BILLING.certd.internal")], None);
    }

    #[test]
    fn any_other_name_is_refused_by_name() {
        check(Some("payments"), vec![], Some("CN=payments"));
        check(
            None,
            vec![dns("payments.certd.internal")],
            Some("DNS:payments.certd.internal"),
        );
        check(
            None,
            vec![dns("billing.other.internal")],
            Some("DNS:billing.other.internal"),
        );
        check(
            None,
            vec![uri("spiffe://certd.internal/svc/payments")],
            Some("URI:spiffe://certd.internal/svc/payments"),
        );
        check(
            None,
            vec![SanType::IpAddress([10, 0, 0, 1].into())],
            Some("IP:0a000001"),
        );
    }

    #[test]
    fn an_entrys_extra_names_and_spiffe_id_are_allowed_and_nothing_else() {
        let identity = WorkloadIdentity {
            service: "billing".parse().unwrap(),
            spiffe_id: "spiffe://certd.internal/ns/payments/sa/billing"
                .parse()
                .unwrap(),
            dns_names: vec![
                "billing.certd.internal".parse().unwrap(),
                "billing.payments.svc.cluster.local".parse().unwrap(),
            ],
        };
        let check = |sans: Vec<SanType>| check_csr(&csr_asking(None, sans), &identity);
        assert_eq!(
            check(vec![
                dns("billing.payments.svc.cluster.local"),
                uri("spiffe://certd.internal/ns/payments/sa/billing"),
            ]),
            Ok(())
        );
        for refused in [
            dns("orders.payments.svc.cluster.local"),
            uri("spiffe://certd.internal/svc/billing"),
        ] {
            assert!(matches!(
                check(vec![refused]),
                Err(PolicyError::NameNotAllowed { .. })
            ));
        }
    }

    #[test]
    fn ttl_is_bounded() {
        let day = Duration::from_secs(86_400);
        assert_eq!(check_ttl(day, day, CERTIFICATE_MAX_TTL), Ok(()));
        assert!(check_ttl(day * 2, day, CERTIFICATE_MAX_TTL).is_err());
    }
}
