//! JWT-SVIDs: who may get one, for which audiences, and for how long.
//!
//! Least privilege, beyond SPIRE (which signs for any audience a workload
//! names): a token is minted only for audiences the caller's registration
//! entry allows (`--jwt-audience`); an entry with none allows no tokens.
//! A workload asks with its current certificate over mTLS; a node agent
//! asks for an entry parented to it. Every decision is audited with the
//! audiences asked for.

use std::time::Duration;

use super::{Authority, Caller};
use crate::Result;
use crate::audit::{self, Decision};
use crate::jwt::{self, JwkSet, JwtError, MintedJwt};
use crate::model::AuditEvent;
use crate::registry::{RegistryError, describe};
use crate::store::EntryRecord;

/// A minted token and whose it is.
#[derive(Debug, Clone)]
pub struct MintedFor {
    pub jwt: MintedJwt,
    pub spiffe_id: String,
}

impl Authority {
    /// The JWT keys verifiers need now (`/jwks.json`).
    pub fn jwt_key_set(&self) -> JwkSet {
        JwkSet::published(&self.jwt_keys, self.now())
    }

    /// The OpenID Connect discovery document of certd as a token issuer.
    pub fn openid_configuration(&self) -> jwt::Discovery {
        jwt::Discovery::of(&self.issuer, &self.jwt_keys, self.now())
    }

    /// A token for the workload presenting `client_leaf`.
    pub async fn mint_jwt(
        &self,
        peer: &Caller,
        client_leaf: Option<&[u8]>,
        audiences: &[String],
        ttl: Option<Duration>,
    ) -> Result<MintedFor> {
        let mut entry_seen = None;
        let outcome = async {
            let _admission = self.limits.admit()?;
            let now = self.now();
            let (current, entry) = self.presented(client_leaf).await?;
            let entry = entry.ok_or_else(|| RegistryError::NoJwtAudiences {
                identity: super::agents::identity_of(&current),
            })?;
            if let Some(agent) = &entry.parent {
                return Err(RegistryError::IssuedThroughAgent {
                    agent: agent.to_string(),
                }
                .into());
            }
            entry_seen = Some(entry.clone());
            self.mint_for_entry(&entry, audiences, ttl, now)
        }
        .await;
        self.audit_mint(peer, entry_seen.as_ref(), audiences, &outcome)
            .await;
        outcome
    }

    /// A token for entry `entry_id`, asked for by the agent presenting
    /// `client_leaf`, on behalf of a workload it attested.
    pub async fn mint_jwt_for_agent(
        &self,
        peer: &Caller,
        client_leaf: Option<&[u8]>,
        entry_id: &str,
        audiences: &[String],
        ttl: Option<Duration>,
    ) -> Result<MintedFor> {
        let mut caller = peer.clone();
        let mut entry_seen = None;
        let outcome = async {
            let _admission = self.limits.admit()?;
            let agent = self.agent_of(client_leaf).await?;
            caller = Caller(format!("{agent} ({peer})"));
            let entry = self.entry_of_agent(&agent, entry_id)?;
            entry_seen = Some(entry.clone());
            self.mint_for_entry(&entry, audiences, ttl, self.now())
        }
        .await;
        self.audit_mint(&caller, entry_seen.as_ref(), audiences, &outcome)
            .await;
        outcome
    }

    fn mint_for_entry(
        &self,
        entry: &EntryRecord,
        audiences: &[String],
        ttl: Option<Duration>,
        now: i64,
    ) -> Result<MintedFor> {
        jwt::check_audiences(audiences)?;
        if let Some(denied) = audiences
            .iter()
            .find(|audience| !entry.jwt_audiences.contains(audience))
        {
            return Err(RegistryError::AudienceNotAllowed {
                audience: denied.clone(),
                entry: entry.id.clone(),
                allowed: entry.jwt_audiences.join(", "),
            }
            .into());
        }
        let ttl = ttl.unwrap_or(self.jwt_settings.default_ttl);
        crate::policy::check_ttl(ttl, self.jwt_settings.max_ttl, "jwt.max_ttl")?;
        let seconds = i64::try_from(ttl.as_secs())
            .map_err(|_| JwtError::InvalidAudience("lifetime too long".into()))?;
        let jwt = jwt::mint(
            &self.jwt_keys,
            Some(&self.issuer.url),
            &entry.spiffe_id,
            audiences,
            now,
            seconds,
        )?;
        Ok(MintedFor {
            jwt,
            spiffe_id: entry.spiffe_id.to_string(),
        })
    }

    async fn audit_mint(
        &self,
        caller: &Caller,
        entry: Option<&EntryRecord>,
        audiences: &[String],
        outcome: &Result<MintedFor>,
    ) {
        let shown: Vec<String> = audiences
            .iter()
            .take(jwt::MAX_AUDIENCES)
            .map(|a| a.chars().take(jwt::MAX_AUDIENCE_LEN).collect())
            .collect();
        let mut reason = format!("audiences [{}]", shown.join(", "));
        match outcome {
            Ok(minted) => reason.push_str(&format!("; expires {}", minted.jwt.expires_at)),
            Err(error) => reason.push_str(&format!(": {error}")),
        }
        if let Some(entry) = entry {
            reason.push_str(&format!(
                "; entry {} ({})",
                entry.id,
                describe(&entry.selectors)
            ));
            // The rule that decided, named as `certd policy explain` names it.
            let rule = match outcome {
                Ok(_) => Some(crate::policy::grants::Rule::EntryAudience(entry.id.clone())),
                Err(crate::Error::Registry(RegistryError::AudienceNotAllowed { .. })) => {
                    Some(crate::policy::grants::Rule::DefaultDeny)
                }
                Err(_) => None,
            };
            if let Some(rule) = rule {
                reason.push_str(&format!("; rule {rule}"));
            }
        }
        audit::record(
            self.store.as_ref(),
            self.now(),
            Decision {
                event: AuditEvent::MintJwt,
                allowed: outcome.is_ok(),
                caller: &caller.0,
                attestation: Some("jwt-svid"),
                service: entry.map(|e| e.service.to_string()),
                serial: None,
                reason: Some(reason),
                selectors: entry.map(|e| e.selectors.clone()).unwrap_or_default(),
                refusal: outcome.as_ref().err().map(crate::Error::kind),
            },
        )
        .await;
    }
}
