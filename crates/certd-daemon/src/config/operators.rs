//! `admins` and `[[operators]]`: who may use the admin API over mTLS, and
//! with which roles. Checked here, decided by `policy::operator_roles`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::file::OperatorSection;
use super::{ConfigError, invalid, parse_duration};
use crate::identity::SpiffeId;
use crate::policy::operator_roles::{OperatorGrant, OperatorRole, OperatorRoles};

/// The longest operator certificate `max_certificate_ttl` may allow: a
/// scoped CI identity may outlive a day, not a quarter.
pub const MAX_SCOPED_OPERATOR_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Checks `admins` and `[[operators]]` and builds the role table.
pub(super) fn validate(
    admins: &[String],
    operators: &[OperatorSection],
) -> Result<OperatorRoles, ConfigError> {
    for admin in admins {
        if admin.parse::<SpiffeId>().is_err() {
            return Err(invalid(
                "admins",
                format!("{admin:?} is not a SPIFFE ID like spiffe://certd.internal/operator/alice"),
            ));
        }
    }
    let mut seen: BTreeSet<&str> = admins.iter().map(String::as_str).collect();
    let mut grants = Vec::with_capacity(operators.len());
    for (index, section) in operators.iter().enumerate() {
        let field = |name: &str| format!("operators[{index}].{name}");
        let refuse = |name: &str, message: String| ConfigError::Invalid {
            field: field(name).into(),
            message,
        };
        let id = section
            .id
            .as_deref()
            .ok_or_else(|| refuse("id", "is required (the operator's SPIFFE ID)".into()))?;
        let is_operator_id = id
            .parse::<SpiffeId>()
            .is_ok_and(|parsed| parsed.path().starts_with("operator/"));
        if !is_operator_id {
            return Err(refuse(
                "id",
                format!(
                    "{id:?} is not an operator's SPIFFE ID like spiffe://certd.internal/operator/ci"
                ),
            ));
        }
        if !seen.insert(id) {
            return Err(refuse(
                "id",
                format!(
                    "{id} is named twice (in `admins` or another `[[operators]]`): give it one entry with all its roles"
                ),
            ));
        }
        let roles = section
            .roles
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|role| role.parse::<OperatorRole>())
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|message| refuse("roles", message))?;
        if roles.is_empty() {
            return Err(refuse(
                "roles",
                "name at least one of admin, issuer, revoker, auditor".into(),
            ));
        }
        let services = section
            .services
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|service| {
                service
                    .parse()
                    .map_err(|error| refuse("services", format!("{service:?}: {error}")))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let issues_for_some =
            roles.contains(&OperatorRole::Issuer) && !roles.contains(&OperatorRole::Admin);
        if issues_for_some && services.is_empty() {
            return Err(refuse(
                "services",
                "an issuer needs the services it may issue for, e.g. services = [\"billing\"]"
                    .into(),
            ));
        }
        if !issues_for_some && !services.is_empty() {
            return Err(refuse(
                "services",
                "only an issuer (without admin) is limited to services; remove `services` or add the role issuer".into(),
            ));
        }
        let max_certificate_ttl = match &section.max_certificate_ttl {
            None => None,
            Some(text) => {
                let ttl = parse_duration(text)
                    .map_err(|message| refuse("max_certificate_ttl", message))?;
                if roles.contains(&OperatorRole::Admin) || roles.contains(&OperatorRole::Revoker) {
                    return Err(refuse(
                        "max_certificate_ttl",
                        "only an issuer or auditor may hold a longer-lived certificate; an operator who can revoke or administer renews within issuance.max_ttl".into(),
                    ));
                }
                if ttl > MAX_SCOPED_OPERATOR_TTL {
                    return Err(refuse(
                        "max_certificate_ttl",
                        format!(
                            "{} is longer than the most certd allows, 90d",
                            humantime::format_duration(ttl)
                        ),
                    ));
                }
                Some(ttl)
            }
        };
        grants.push((
            id.to_owned(),
            OperatorGrant {
                roles,
                services,
                max_certificate_ttl,
            },
        ));
    }
    Ok(OperatorRoles::new(admins.iter().cloned(), grants))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::operator_roles::AdminAction;

    fn section(id: &str, roles: &[&str], services: &[&str], ttl: Option<&str>) -> OperatorSection {
        OperatorSection {
            id: Some(id.into()),
            roles: Some(roles.iter().map(|r| r.to_string()).collect()),
            services: Some(services.iter().map(|s| s.to_string()).collect()),
            max_certificate_ttl: ttl.map(str::to_owned),
        }
    }

    const CI: &str = "spiffe://certd.internal/operator/ci";

    fn refusal(sections: &[OperatorSection]) -> String {
        validate(&[], sections).unwrap_err().to_string()
    }

    #[test]
    fn a_scoped_issuer_is_read_whole() {
        let roles = validate(
            &["spiffe://certd.internal/operator/alice".into()],
            &[section(CI, &["issuer"], &["billing"], Some("30d"))],
        )
        .unwrap();
        let grant = roles.grant(CI).unwrap();
        assert_eq!(
            grant.max_certificate_ttl,
            Some(Duration::from_secs(30 * 86400))
        );
        assert!(
            roles
                .permits(CI, &AdminAction::IssueCertificate { service: "billing" })
                .is_ok()
        );
        assert!(
            roles
                .permits(
                    "spiffe://certd.internal/operator/alice",
                    &AdminAction::Backup
                )
                .is_ok()
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_field() {
        let cases = [
            (
                section("spiffe://certd.internal/web", &["auditor"], &[], None),
                "operators[0].id",
            ),
            (section(CI, &["root"], &[], None), "operators[0].roles"),
            (section(CI, &[], &[], None), "operators[0].roles"),
            (section(CI, &["issuer"], &[], None), "operators[0].services"),
            (
                section(CI, &["auditor"], &["billing"], None),
                "operators[0].services",
            ),
            (
                section(CI, &["issuer"], &["Billing!"], None),
                "operators[0].services",
            ),
            (
                section(CI, &["revoker"], &[], Some("30d")),
                "operators[0].max_certificate_ttl",
            ),
            (
                section(CI, &["issuer"], &["billing"], Some("365d")),
                "operators[0].max_certificate_ttl",
            ),
        ];
        for (section, field) in cases {
            let message = refusal(&[section]);
            assert!(message.contains(field), "{message}");
        }
        let twice = refusal(&[
            section(CI, &["auditor"], &[], None),
            section(CI, &["revoker"], &[], None),
        ]);
        assert!(twice.contains("named twice"), "{twice}");
        let message = validate(&["alice".into()], &[]).unwrap_err().to_string();
        assert!(message.contains("admins"), "{message}");
    }
}
