//! Unused join tokens as operators see them: listed (never their secrets,
//! which certd does not keep) and revoked before anyone uses them.
//! Creating them is `registration`'s; consuming them is issuance's.

use std::collections::HashMap;

use super::{Authority, Caller};
use crate::audit::{self, Decision};
use crate::identity::ServiceName;
use crate::model::AuditEvent;
use crate::selector::Selector;
use crate::store::{JoinTokenRecord, TokenHash};
use crate::{Error, Result};

/// One unused join token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinTokenView {
    /// The first 8 bytes of its hash in hex: the id the audit names.
    pub id: String,
    /// The entry it bootstraps, if an entry still has its selectors.
    pub entry_id: Option<String>,
    pub service: Option<String>,
    pub selectors: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Which unused tokens to revoke.
#[derive(Debug, Clone)]
pub enum TokensToRevoke {
    /// These ids, all of which must be unused tokens.
    Ids(Vec<String>),
    /// Every unused token of this service.
    Service(String),
}

/// The id of a token with this hash (as `JoinToken::id` names it).
fn id_of(hash: &TokenHash) -> String {
    hex::encode(&hash[..8])
}

impl Authority {
    /// The unused join tokens, oldest first, optionally one service's.
    pub async fn join_tokens(&self, service: Option<&str>) -> Result<Vec<JoinTokenView>> {
        let service = service.map(str::parse::<ServiceName>).transpose()?;
        Ok(self
            .unused_tokens(service.as_ref())
            .await?
            .into_iter()
            .map(|(_, view)| view)
            .collect())
    }

    async fn unused_tokens(
        &self,
        service: Option<&ServiceName>,
    ) -> Result<Vec<(TokenHash, JoinTokenView)>> {
        // The entry a token bootstraps is the one with its selectors.
        let entries: HashMap<Vec<Selector>, (String, String)> = self
            .registry
            .list(None)
            .into_iter()
            .map(|entry| {
                (
                    entry.selectors.clone(),
                    (entry.id.clone(), entry.service.to_string()),
                )
            })
            .collect();
        let mut tokens: Vec<(TokenHash, JoinTokenView)> = self
            .store
            .join_tokens()
            .await?
            .into_iter()
            .map(|(hash, record): (TokenHash, JoinTokenRecord)| {
                let entry = entries.get(&record.selectors);
                let view = JoinTokenView {
                    id: id_of(&hash),
                    entry_id: entry.map(|(id, _)| id.clone()),
                    service: entry.map(|(_, service)| service.clone()),
                    selectors: record.selectors.iter().map(Selector::to_string).collect(),
                    created_at: record.created_at,
                    expires_at: record.expires_at,
                };
                (hash, view)
            })
            .filter(|(_, view)| {
                service.is_none_or(|wanted| view.service.as_deref() == Some(wanted.as_str()))
            })
            .collect();
        tokens.sort_by(|(_, a), (_, b)| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }

    /// Revokes unused join tokens: durable when this returns, so none of
    /// them bootstraps anything afterwards. Ids that are not unused tokens
    /// are refused (`NotFound`), revoking none. Audited either way.
    pub async fn revoke_join_tokens(
        &self,
        caller: &Caller,
        which: &TokensToRevoke,
    ) -> Result<Vec<JoinTokenView>> {
        let outcome = self.revoke_join_tokens_inner(which).await;
        let (service, what) = match which {
            TokensToRevoke::Ids(ids) => (None, format!("ids {}", ids.join(", "))),
            TokensToRevoke::Service(service) => {
                (Some(service.clone()), format!("service {service}"))
            }
        };
        let decision = match &outcome {
            Ok(revoked) => Decision {
                event: AuditEvent::RevokeJoinToken,
                allowed: true,
                caller: &caller.0,
                service,
                reason: Some(format!(
                    "{} unused token(s) of {what} revoked{}",
                    revoked.len(),
                    if revoked.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": {}",
                            revoked
                                .iter()
                                .map(|token| token.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )),
                ..Decision::default()
            },
            Err(error) => Decision {
                event: AuditEvent::RevokeJoinToken,
                allowed: false,
                caller: &caller.0,
                service,
                reason: Some(format!("{what}: {error}")),
                refusal: Some(error.kind()),
                ..Decision::default()
            },
        };
        audit::record(self.store.as_ref(), self.now(), decision).await;
        outcome
    }

    async fn revoke_join_tokens_inner(&self, which: &TokensToRevoke) -> Result<Vec<JoinTokenView>> {
        let chosen: Vec<(TokenHash, JoinTokenView)> = match which {
            TokensToRevoke::Service(service) => {
                let service: ServiceName = service.parse()?;
                self.unused_tokens(Some(&service)).await?
            }
            TokensToRevoke::Ids(ids) => {
                if ids.is_empty() {
                    return Err(Error::InvalidArgument(
                        "name the tokens to revoke (their ids, from `certd token list`) or a service"
                            .into(),
                    ));
                }
                let mut by_id: HashMap<String, (TokenHash, JoinTokenView)> = self
                    .unused_tokens(None)
                    .await?
                    .into_iter()
                    .map(|(hash, view)| (view.id.clone(), (hash, view)))
                    .collect();
                let mut chosen = Vec::with_capacity(ids.len());
                for id in ids {
                    let id = id.trim().to_ascii_lowercase();
                    match by_id.remove(&id) {
                        Some(token) => chosen.push(token),
                        None => {
                            return Err(Error::NotFound(format!(
                                "join token {id} is not an unused token (already used, expired, revoked, or never made): nothing was revoked"
                            )));
                        }
                    }
                }
                chosen
            }
        };
        let hashes: Vec<TokenHash> = chosen.iter().map(|(hash, _)| *hash).collect();
        self.store.remove_join_tokens(&hashes).await?;
        Ok(chosen.into_iter().map(|(_, view)| view).collect())
    }
}
