//! Operator roles: which admin RPC an operator may call.
//!
//! Owns the table of admin action × role and the operators' grants read
//! from `certd.toml` (`admins` and `[[operators]]`). Pure: it neither reads
//! certificates (attest does) nor writes the audit (the authority does);
//! it only answers "may this operator do this".
//!
//! The roles, from most to least powerful:
//! - `admin`: everything, as every listed operator could before roles.
//! - `revoker`: revoke certificates and unused join tokens, and read the
//!   certificates it must find first.
//! - `issuer`: issue certificates (`certd issue`) for the services it is
//!   granted, nothing else: the CI pipeline's role.
//! - `auditor`: read-only: certificates, entries, policy and the audit log.
//!
//! The local admin socket is the daemon's own user and is always `admin`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::identity::ServiceName;

/// One operator role (`roles = [...]` in `[[operators]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperatorRole {
    Admin,
    Issuer,
    Revoker,
    Auditor,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 4] = [
        OperatorRole::Admin,
        OperatorRole::Issuer,
        OperatorRole::Revoker,
        OperatorRole::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OperatorRole::Admin => "admin",
            OperatorRole::Issuer => "issuer",
            OperatorRole::Revoker => "revoker",
            OperatorRole::Auditor => "auditor",
        }
    }
}

impl fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OperatorRole {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OperatorRole::ALL
            .into_iter()
            .find(|role| role.name() == text)
            .ok_or_else(|| {
                format!("{text:?} is not a role; the roles are admin, issuer, revoker and auditor")
            })
    }
}

/// What an admin RPC does, as far as roles are concerned: one variant per
/// RPC of `certd.v1.Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction<'a> {
    Backup,
    CreateJoinToken,
    /// `IssueForCi`, for this service.
    IssueCertificate {
        service: &'a str,
    },
    ListCertificates,
    GetCertificate,
    Revoke,
    ListAudit,
    IssueOperatorCertificate,
    CreateEntry,
    UpdateEntry,
    DeleteEntry,
    ListEntries,
    GetPolicy,
    ReplacePolicy,
    ExplainPolicy,
    ListJoinTokens,
    RevokeJoinTokens,
    AddFederation,
    RemoveFederation,
    ListFederations,
    CreateAcmeEab,
    SetAcmePolicy,
    GetAcmePolicy,
    ListAcmeAccounts,
    DeactivateAcmeAccount,
    ListAcmeOrders,
}

impl AdminAction<'_> {
    /// The RPC's name, as the audit and refusals say it.
    pub fn rpc(&self) -> &'static str {
        match self {
            AdminAction::Backup => "Backup",
            AdminAction::CreateJoinToken => "CreateJoinToken",
            AdminAction::IssueCertificate { .. } => "IssueForCi",
            AdminAction::ListCertificates => "ListCertificates",
            AdminAction::GetCertificate => "GetCertificate",
            AdminAction::Revoke => "Revoke",
            AdminAction::ListAudit => "ListAudit",
            AdminAction::IssueOperatorCertificate => "IssueOperatorCertificate",
            AdminAction::CreateEntry => "CreateEntry",
            AdminAction::UpdateEntry => "UpdateEntry",
            AdminAction::DeleteEntry => "DeleteEntry",
            AdminAction::ListEntries => "ListEntries",
            AdminAction::GetPolicy => "GetPolicy",
            AdminAction::ReplacePolicy => "ReplacePolicy",
            AdminAction::ExplainPolicy => "ExplainPolicy",
            AdminAction::ListJoinTokens => "ListJoinTokens",
            AdminAction::RevokeJoinTokens => "RevokeJoinTokens",
            AdminAction::AddFederation => "AddFederation",
            AdminAction::RemoveFederation => "RemoveFederation",
            AdminAction::ListFederations => "ListFederations",
            AdminAction::CreateAcmeEab => "CreateAcmeEab",
            AdminAction::SetAcmePolicy => "SetAcmePolicy",
            AdminAction::GetAcmePolicy => "GetAcmePolicy",
            AdminAction::ListAcmeAccounts => "ListAcmeAccounts",
            AdminAction::DeactivateAcmeAccount => "DeactivateAcmeAccount",
            AdminAction::ListAcmeOrders => "ListAcmeOrders",
        }
    }

    /// The roles that may take this action (an issuer only for its own
    /// services, which `OperatorGrant::permits` checks).
    pub fn roles(&self) -> &'static [OperatorRole] {
        use OperatorRole::{Admin, Auditor, Issuer, Revoker};
        match self {
            AdminAction::IssueCertificate { .. } => &[Admin, Issuer],
            // Revoking takes powers away; it never hands any out.
            // Deactivating an ACME account takes its powers away too.
            AdminAction::Revoke
            | AdminAction::RevokeJoinTokens
            | AdminAction::DeactivateAcmeAccount => &[Admin, Revoker],
            AdminAction::ListCertificates | AdminAction::GetCertificate => {
                &[Admin, Revoker, Auditor]
            }
            AdminAction::ListAudit
            | AdminAction::ListEntries
            | AdminAction::GetPolicy
            | AdminAction::ExplainPolicy
            | AdminAction::ListJoinTokens
            | AdminAction::ListFederations
            | AdminAction::GetAcmePolicy
            | AdminAction::ListAcmeAccounts
            | AdminAction::ListAcmeOrders => &[Admin, Auditor],
            // Each of these hands out or changes who is who (join tokens,
            // entries, policy, operators) or copies every record (backup).
            AdminAction::Backup
            | AdminAction::CreateJoinToken
            | AdminAction::IssueOperatorCertificate
            | AdminAction::CreateEntry
            | AdminAction::UpdateEntry
            | AdminAction::DeleteEntry
            | AdminAction::ReplacePolicy
            // Which foreign trust domains workloads may trust.
            | AdminAction::AddFederation
            | AdminAction::RemoveFederation
            // An EAB key hands out an entry's names; the policy decides
            // whether they must be proven.
            | AdminAction::CreateAcmeEab
            | AdminAction::SetAcmePolicy => &[Admin],
        }
    }
}

/// Why an operator's call was refused (`PERMISSION_DENIED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefusal {
    #[error(
        "{spiffe_id} may not call the admin API: it is not an operator in `admins` or `[[operators]]` of certd.toml"
    )]
    NotAnOperator { spiffe_id: String },
    #[error(
        "{spiffe_id} may not call {rpc}: it needs the role {needed} (it has {has}; roles are set in `[[operators]]` of certd.toml)"
    )]
    RoleMissing {
        spiffe_id: String,
        rpc: &'static str,
        needed: String,
        has: String,
    },
    #[error(
        "{spiffe_id} may issue only for {allowed}, not for {service:?} (`services` of its `[[operators]]` entry)"
    )]
    ServiceNotGranted {
        spiffe_id: String,
        service: String,
        allowed: String,
    },
}

/// What one operator may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorGrant {
    pub roles: BTreeSet<OperatorRole>,
    /// The services an issuer may issue for (empty for other roles).
    pub services: BTreeSet<ServiceName>,
    /// The longest operator certificate this operator may hold; `None`:
    /// `issuance.max_ttl`, like every certificate.
    pub max_certificate_ttl: Option<Duration>,
}

impl OperatorGrant {
    fn admin() -> Self {
        OperatorGrant {
            roles: BTreeSet::from([OperatorRole::Admin]),
            services: BTreeSet::new(),
            max_certificate_ttl: None,
        }
    }

    fn permits(&self, spiffe_id: &str, action: &AdminAction<'_>) -> Result<(), RoleRefusal> {
        let needed = action.roles();
        if !needed.iter().any(|role| self.roles.contains(role)) {
            return Err(RoleRefusal::RoleMissing {
                spiffe_id: spiffe_id.to_owned(),
                rpc: action.rpc(),
                needed: names(needed.iter().copied(), " or "),
                has: names(self.roles.iter().copied(), ", "),
            });
        }
        if let AdminAction::IssueCertificate { service } = action
            && !self.roles.contains(&OperatorRole::Admin)
            && !self.services.iter().any(|s| s.as_str() == *service)
        {
            return Err(RoleRefusal::ServiceNotGranted {
                spiffe_id: spiffe_id.to_owned(),
                service: (*service).to_owned(),
                allowed: self
                    .services
                    .iter()
                    .map(ServiceName::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(())
    }
}

fn names(roles: impl Iterator<Item = OperatorRole>, separator: &str) -> String {
    roles
        .map(OperatorRole::name)
        .collect::<Vec<_>>()
        .join(separator)
}

/// Every operator's grant, by SPIFFE ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorRoles {
    by_id: BTreeMap<String, OperatorGrant>,
}

impl OperatorRoles {
    /// From the validated configuration: `admins` are operators with the
    /// role admin; `[[operators]]` add the others. An ID in both is a
    /// configuration error caught by validation, not here.
    pub fn new(
        admins: impl IntoIterator<Item = String>,
        operators: impl IntoIterator<Item = (String, OperatorGrant)>,
    ) -> Self {
        let mut by_id: BTreeMap<String, OperatorGrant> = admins
            .into_iter()
            .map(|id| (id, OperatorGrant::admin()))
            .collect();
        by_id.extend(operators);
        OperatorRoles { by_id }
    }

    pub fn grant(&self, spiffe_id: &str) -> Option<&OperatorGrant> {
        self.by_id.get(spiffe_id)
    }

    /// Whether the operator `spiffe_id` may take `action`.
    pub fn permits(&self, spiffe_id: &str, action: &AdminAction<'_>) -> Result<(), RoleRefusal> {
        match self.by_id.get(spiffe_id) {
            None => Err(RoleRefusal::NotAnOperator {
                spiffe_id: spiffe_id.to_owned(),
            }),
            Some(grant) => grant.permits(spiffe_id, action),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "spiffe://certd.internal/operator/alice";
    const CI: &str = "spiffe://certd.internal/operator/ci";

    fn roles(of: &[OperatorRole], services: &[&str]) -> OperatorRoles {
        let grant = OperatorGrant {
            roles: of.iter().copied().collect(),
            services: services.iter().map(|s| s.parse().unwrap()).collect(),
            max_certificate_ttl: None,
        };
        OperatorRoles::new([], [(CI.to_owned(), grant)])
    }

    #[test]
    fn admins_may_do_everything_and_strangers_nothing() {
        let table = OperatorRoles::new([ALICE.to_owned()], []);
        for action in [
            AdminAction::Backup,
            AdminAction::IssueCertificate { service: "any" },
            AdminAction::ReplacePolicy,
        ] {
            assert_eq!(table.permits(ALICE, &action), Ok(()));
            assert!(matches!(
                table.permits(CI, &action),
                Err(RoleRefusal::NotAnOperator { .. })
            ));
        }
    }

    #[test]
    fn an_issuer_issues_only_for_its_services() {
        let table = roles(&[OperatorRole::Issuer], &["billing"]);
        let billing = AdminAction::IssueCertificate { service: "billing" };
        assert_eq!(table.permits(CI, &billing), Ok(()));
        let refused = table
            .permits(CI, &AdminAction::IssueCertificate { service: "web" })
            .unwrap_err();
        assert!(
            refused.to_string().contains("only for billing"),
            "{refused}"
        );
        let refused = table.permits(CI, &AdminAction::Revoke).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "spiffe://certd.internal/operator/ci may not call Revoke: it needs the role admin or revoker (it has issuer; roles are set in `[[operators]]` of certd.toml)"
        );
    }

    #[test]
    fn roles_add_up() {
        let table = roles(&[OperatorRole::Revoker, OperatorRole::Auditor], &[]);
        assert_eq!(table.permits(CI, &AdminAction::Revoke), Ok(()));
        assert_eq!(table.permits(CI, &AdminAction::ListAudit), Ok(()));
        assert!(table.permits(CI, &AdminAction::CreateEntry).is_err());
    }

    #[test]
    fn role_names_parse_and_others_are_refused() {
        for role in OperatorRole::ALL {
            assert_eq!(role.name().parse::<OperatorRole>(), Ok(role));
        }
        assert!("root".parse::<OperatorRole>().is_err());
        assert!("Admin".parse::<OperatorRole>().is_err());
    }
}
