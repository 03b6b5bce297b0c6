//! OAuth 2.0 Token Exchange (RFC 8693) on a subject's behalf: the caller,
//! authenticated as at the token endpoint, is the actor; it trades a token
//! it received (a user's token from a trusted subject issuer, or a token
//! certd issued for the caller) for one towards the next hop, naming the
//! subject as `sub`, its original issuer as `subject_issuer`, and the chain
//! of actors in `act` (the current actor outermost, §4.1).
//!
//! The subject token must be for the actor: a user token names an audience
//! its issuer's section accepts; a certd token names the actor (its SPIFFE
//! ID or service). Every earlier actor of the chain must still be
//! registered, and its certificate, when it authenticated with one, must
//! not be revoked. `policy::delegations` decides audience, scopes and chain
//! length; the new token lives no longer than the subject's. Every exchange
//! is audited with subject, actor chain, audience, scopes and rule. The
//! form is `api::oauth`'s; this module never sees HTTP.

use super::access_tokens::{AccessToken, Client, ClientProof, Explanation, TokenError};
use super::{Authority, Caller};
use crate::identity::{Serial, SpiffeId};
use crate::jwt::{self, AccessTokenClaims, OnBehalfOf, TokenKind};
use crate::model::AuditEvent;
use crate::policy::delegations::{self, ExchangeAsk};
use crate::policy::grants::{Rule, TokenCaller};
use crate::subject_issuers::token_scopes;

/// `subject_token_type` of a JWT (a user's token from an identity provider).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// `subject_token_type` (and the issued type) of an access token.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `subject_token_type` of an OpenID Connect ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The `grant_type` of a token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A checked exchange request (the form parsed by `api::oauth`). Its
/// `Debug` leaves the tokens out.
#[derive(Clone)]
pub struct ExchangeRequest<'a> {
    pub proof: ClientProof<'a>,
    pub client_id: Option<&'a str>,
    pub subject_token: &'a str,
    pub subject_token_type: &'a str,
    /// A JWT-SVID of the actor itself, if sent (the caller is the actor).
    pub actor_token: Option<&'a str>,
    pub audience: &'a str,
    /// Checked, sorted and distinct.
    pub scopes: Vec<String>,
    /// `issued_token_type` of the answer.
    pub issued_token_type: &'static str,
}

impl std::fmt::Debug for ExchangeRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("subject_token_type", &self.subject_token_type)
            .field("actor_token", &self.actor_token.map(|_| "…"))
            .field("audience", &self.audience)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The subject a subject token speaks for, and the chain so far.
#[derive(Debug, Clone)]
struct SubjectToken {
    subject: String,
    issuer: String,
    expires_at: i64,
    scopes: Vec<String>,
    carried: serde_json::Map<String, serde_json::Value>,
    /// `act` of the subject token, if any: the actors before this one.
    act: Option<serde_json::Value>,
}

/// One actor of an `act` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Actor {
    spiffe_id: SpiffeId,
    /// The certificate it authenticated with, when it did.
    serial: Option<Serial>,
}

/// The claim of an `act` member naming the actor's certificate serial
/// (hex): so that a revoked actor certificate ends the chain.
const ACTOR_SERIAL_CLAIM: &str = "cert_serial";

impl Authority {
    /// Exchanges a subject token for an access token on its behalf, for
    /// the client `request` authenticates (the actor), asked from `peer`.
    pub async fn exchange(
        &self,
        peer: &Caller,
        request: &ExchangeRequest<'_>,
    ) -> Result<AccessToken, TokenError> {
        let mut client = None;
        let mut rules = Vec::new();
        let mut subject = None;
        let outcome = async {
            let _admission = self.limits.admit().map_err(crate::Error::from)?;
            let now = self.now();
            let actor = self
                .authenticate_client(request.proof, request.client_id, now)
                .await?;
            client = Some(actor.clone());
            // What refuses before the policy is named in the audit too.
            if let Some(actor_token) = request.actor_token {
                rules = vec![Rule::Check("actor token")];
                // RFC 8693 §2.2.2: an unacceptable actor token is
                // `invalid_request`, whatever is wrong with it.
                let proven = self
                    .authenticate_client(ClientProof::Assertion(actor_token), None, now)
                    .await
                    .map_err(|error| match error {
                        TokenError::Failed(fault) => TokenError::Failed(fault),
                        other => TokenError::UnacceptableToken(format!("actor_token: {other}")),
                    })?;
                if proven.spiffe_id != actor.spiffe_id {
                    return Err(TokenError::UnacceptableToken(format!(
                        "actor_token names {}, not the authenticated client {}: the client is the actor",
                        proven.spiffe_id, actor.spiffe_id
                    )));
                }
            }
            rules = vec![Rule::Check("audience")];
            self.refuse_own_audience(request.audience)?;
            rules = vec![Rule::Check("subject token")];
            let proven = self.subject_token(request, &actor, now)?;
            subject = Some(proven.clone());
            if proven.expires_at <= now {
                // Within the issuer's clock skew, but nothing left to give.
                return Err(TokenError::UnacceptableToken(
                    "the subject token has expired".into(),
                ));
            }
            rules = vec![Rule::Check("actor chain")];
            let earlier = actors(proven.act.as_ref())?;
            self.check_actors(&earlier).await?;
            rules = vec![Rule::Check("subject workload")];
            self.check_subject_workload(&proven.issuer, &proven.subject)?;
            rules.clear();
            let caller = TokenCaller {
                spiffe_id: &actor.spiffe_id,
                service: &actor.service,
                entries: Vec::new(),
            };
            let grant = delegations::decide_exchange(
                &self.policy.current(),
                &caller,
                &ExchangeAsk {
                    subject_issuer: &proven.issuer,
                    chain: earlier.len() + 1,
                    audience: request.audience,
                    scopes: &request.scopes,
                    subject_scopes: &proven.scopes,
                },
            )
            .inspect_err(|refusal| rules = refusal.rules())?;
            rules.clone_from(&grant.rules);
            let mut act = serde_json::json!({ "sub": actor.spiffe_id.as_str() });
            if let Some(serial) = &actor.serial {
                act[ACTOR_SERIAL_CLAIM] = serial.to_hex().into();
            }
            if let Some(earlier) = &proven.act {
                act["act"] = earlier.clone();
            }
            let ttl = i64::try_from(self.jwt_settings.default_ttl.as_secs()).unwrap_or(300);
            let claims = AccessTokenClaims {
                issuer: self.issuer.url.clone(),
                client: actor.spiffe_id.clone(),
                audience: request.audience.to_owned(),
                scopes: grant.scopes.clone(),
                certificate_thumbprint: actor.thumbprint.clone(),
                token_id: hex::encode(Serial::generate().as_bytes()),
                on_behalf_of: Some(OnBehalfOf {
                    subject: proven.subject.clone(),
                    subject_issuer: proven.issuer.clone(),
                    act,
                    carried: proven.carried.clone(),
                    expires_at: proven.expires_at,
                }),
            };
            let minted = jwt::mint_access_token(&self.jwt_keys, &claims, now, ttl)
                .map_err(crate::Error::from)?;
            if minted.token.len() > jwt::MAX_TOKEN_BYTES {
                rules = vec![Rule::Check("token size")];
                // Nobody could verify it, certd included.
                return Err(TokenError::UnacceptableToken(format!(
                    "the exchanged token would be longer than {} bytes: the subject's carried claims are too large",
                    jwt::MAX_TOKEN_BYTES
                )));
            }
            Ok(AccessToken {
                token: minted.token,
                expires_in: minted.expires_at - now,
                scopes: grant.scopes,
                certificate_bound: actor.thumbprint.is_some(),
            })
        }
        .await;
        self.audit_exchange(
            peer,
            client.as_ref(),
            subject.as_ref(),
            request,
            &rules,
            &outcome,
        )
        .await;
        outcome
    }

    /// The subject `request.subject_token` speaks for: a user token of a
    /// trusted subject issuer, or a token certd issued for the actor.
    fn subject_token(
        &self,
        request: &ExchangeRequest<'_>,
        actor: &Client,
        now: i64,
    ) -> Result<SubjectToken, TokenError> {
        let token = request.subject_token;
        let names = [actor.spiffe_id.as_str(), actor.service.as_str()];
        if self.subject_issuers.claims_issuer(token).is_some() {
            let subject = self
                .subject_issuers
                .verify(token, &names, now)
                .map_err(|error| TokenError::UnacceptableToken(error.to_string()))?;
            return Ok(SubjectToken {
                subject: subject.subject,
                issuer: subject.issuer,
                expires_at: subject.expires_at,
                scopes: subject.scopes,
                carried: subject.carried,
                act: None,
            });
        }
        // certd's own: an access token (this one's or a client's own), or
        // a JWT-SVID, for the actor.
        let keys = self.jwt_key_set();
        let for_actor = |kind| jwt::verify_for_any_at(token, kind, &names, &keys, now);
        let (kind, verified) = match for_actor(TokenKind::AccessToken) {
            Ok(verified) => (TokenKind::AccessToken, verified),
            Err(jwt::JwtError::Type { .. }) => (
                TokenKind::JwtSvid,
                for_actor(TokenKind::JwtSvid).map_err(refused_subject)?,
            ),
            Err(error) => return Err(refused_subject(error)),
        };
        let text = |name: &str| verified.claims.get(name).and_then(|v| v.as_str());
        if kind == TokenKind::AccessToken && text("iss") != Some(self.issuer.url.as_str()) {
            return Err(TokenError::UnacceptableToken(
                "the subject token was not issued by this certd's issuer".into(),
            ));
        }
        let issuer = text("subject_issuer")
            .unwrap_or(self.issuer.url.as_str())
            .to_owned();
        if issuer != self.issuer.url && !self.subject_issuers.trusts(&issuer) {
            // The operator stopped trusting the user's identity provider:
            // its users' chains end at the next hop.
            return Err(TokenError::UnacceptableToken(format!(
                "the subject's issuer {issuer} is no longer a trusted subject issuer"
            )));
        }
        let carried = self
            .subject_issuers
            .carried_claims(&issuer)
            .iter()
            .filter_map(|name| Some((name.clone(), verified.claims.get(name)?.clone())))
            .collect();
        // A client's own token, or a JWT-SVID, has no `act`: its subject
        // is the workload itself, and the chain starts here.
        let act = verified.claims.get("act").cloned();
        Ok(SubjectToken {
            subject: verified.subject.clone(),
            issuer,
            expires_at: verified.expires_at,
            scopes: if kind == TokenKind::AccessToken {
                token_scopes(&verified.claims)
            } else {
                Vec::new()
            },
            carried,
            act,
        })
    }

    /// Refuses a chain one of whose actors is no longer registered, or
    /// whose certificate was revoked since it acted.
    async fn check_actors(&self, actors: &[Actor]) -> Result<(), TokenError> {
        for actor in actors {
            if !self.is_registered(&actor.spiffe_id) {
                return Err(TokenError::UnacceptableToken(format!(
                    "actor {} of the subject token's chain is no longer registered",
                    actor.spiffe_id
                )));
            }
            if let Some(serial) = &actor.serial {
                let record = self
                    .store
                    .certificate(serial)
                    .await
                    .map_err(crate::Error::from)?;
                if record.as_ref().is_none_or(|r| r.revocation.is_some()) {
                    return Err(TokenError::UnacceptableToken(format!(
                        "the certificate {} actor {} acted with is revoked",
                        serial.to_hex(),
                        actor.spiffe_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// `certd policy explain --on-behalf-of ISSUER`: what a token exchange
    /// by `from` for a subject of `subject_issuer`, with a chain of
    /// `chain` actors (`from` included), towards `audience` with `scopes`
    /// would be answered, if the subject token carries those scopes.
    pub fn explain_exchange(
        &self,
        from: &str,
        subject_issuer: &str,
        chain: usize,
        audience: &str,
        scopes: &[String],
    ) -> crate::Result<Explanation> {
        let (entries, scopes) = match self.explained_caller(from, audience, scopes)? {
            Ok(explained) => explained,
            Err(refused) => return Ok(refused),
        };
        if subject_issuer != self.issuer.url && !self.subject_issuers.trusts(subject_issuer) {
            return Ok(Explanation::refused(
                "invalid_request",
                format!(
                    "{subject_issuer} is not a trusted subject issuer (certd.toml [[token_exchange.subject_issuer]]) nor certd's own issuer {}",
                    self.issuer.url
                ),
            ));
        }
        let first = &entries[0];
        let caller = TokenCaller {
            spiffe_id: &first.spiffe_id,
            service: &first.service,
            entries: Vec::new(),
        };
        let ask = ExchangeAsk {
            subject_issuer,
            chain: chain.max(1),
            audience,
            scopes: &scopes,
            subject_scopes: &scopes,
        };
        Ok(
            match delegations::decide_exchange(&self.policy.current(), &caller, &ask) {
                Ok(grant) => Explanation::granted(
                    grant,
                    &format!(
                        "{} may exchange a token of a subject of {subject_issuer} for {audience:?}",
                        first.spiffe_id
                    ),
                    " (if the subject token carries them)",
                ),
                Err(refusal) => Explanation::denied(
                    refusal.oauth_error(),
                    refusal.to_string(),
                    &refusal.rules(),
                ),
            },
        )
    }

    /// A subject certd itself vouched for (a workload, by its SPIFFE ID)
    /// must still be registered.
    fn check_subject_workload(&self, issuer: &str, subject: &str) -> Result<(), TokenError> {
        if issuer != self.issuer.url {
            return Ok(());
        }
        let registered = subject
            .parse::<SpiffeId>()
            .is_ok_and(|id| self.is_registered(&id));
        if registered {
            Ok(())
        } else {
            Err(TokenError::UnacceptableToken(format!(
                "the subject {subject} is no longer registered"
            )))
        }
    }

    /// Whether a verified access token exchanged on a subject's behalf
    /// still stands, for introspection: its subject's issuer still trusted
    /// (or certd, with the subject workload still registered), and every
    /// actor of its chain still registered with an unrevoked certificate.
    /// A token of a client's own stands as its client does.
    pub(super) async fn exchanged_token_stands(&self, verified: &jwt::VerifiedJwt) -> bool {
        let Some(issuer) = verified
            .claims
            .get("subject_issuer")
            .and_then(|v| v.as_str())
        else {
            return true;
        };
        let issuer_trusted = issuer == self.issuer.url || self.subject_issuers.trusts(issuer);
        issuer_trusted
            && self
                .check_subject_workload(issuer, &verified.subject)
                .is_ok()
            && match actors(verified.claims.get("act")) {
                Ok(actors) => self.check_actors(&actors).await.is_ok(),
                Err(_) => false,
            }
    }

    async fn audit_exchange(
        &self,
        peer: &Caller,
        client: Option<&Client>,
        subject: Option<&SubjectToken>,
        request: &ExchangeRequest<'_>,
        rules: &[Rule],
        outcome: &Result<AccessToken, TokenError>,
    ) {
        let mut reason = match subject {
            Some(subject) => {
                let chain = actors(subject.act.as_ref()).unwrap_or_default();
                let mut names: Vec<String> = client
                    .map(|c| c.spiffe_id.to_string())
                    .into_iter()
                    .collect();
                names.extend(chain.iter().map(|a| a.spiffe_id.to_string()));
                format!(
                    "subject {:?} of {}; actors [{}]",
                    subject.subject,
                    subject.issuer,
                    names.join(" <- ")
                )
            }
            None => "subject not proven".to_owned(),
        };
        reason.push_str(&format!(
            "; audience {:?}; scopes asked [{}]",
            request.audience,
            request.scopes.join(" ")
        ));
        self.audit_token_decision(
            AuditEvent::ExchangeToken,
            peer,
            client,
            reason,
            rules,
            outcome,
        )
        .await;
    }
}

fn refused_subject(error: jwt::JwtError) -> TokenError {
    TokenError::UnacceptableToken(match error {
        jwt::JwtError::WrongAudience(_) => {
            "the subject token is not for the authenticated client: its audience must name the client (its service or SPIFFE ID)".into()
        }
        other => format!("the subject token: {other}"),
    })
}

/// The actors of an `act` chain, outermost first; at most
/// `MAX_CHAIN` deep, each naming a SPIFFE ID.
fn actors(act: Option<&serde_json::Value>) -> Result<Vec<Actor>, TokenError> {
    let mut chain = Vec::new();
    let mut next = act;
    while let Some(member) = next {
        if chain.len() == usize::from(crate::policy::grants::MAX_CHAIN) {
            return Err(TokenError::UnacceptableToken(
                "the subject token's act chain is deeper than any policy allows".into(),
            ));
        }
        let spiffe_id = member
            .get("sub")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<SpiffeId>().ok())
            .ok_or_else(|| {
                TokenError::UnacceptableToken(
                    "an act member of the subject token names no SPIFFE ID".into(),
                )
            })?;
        let serial = match member.get(ACTOR_SERIAL_CLAIM) {
            None => None,
            Some(value) => Some(
                value
                    .as_str()
                    .and_then(|s| s.parse::<Serial>().ok())
                    .ok_or_else(|| {
                        TokenError::UnacceptableToken(
                            "an act member names a malformed serial".into(),
                        )
                    })?,
            ),
        };
        chain.push(Actor { spiffe_id, serial });
        next = member.get("act");
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_act_chain_is_read_outermost_first_and_bounded() {
        let act = serde_json::json!({
            "sub": "spiffe://certd.internal/svc/payments", "cert_serial": "0a0b",
            "act": { "sub": "spiffe://certd.internal/svc/orders" },
        });
        let chain = actors(Some(&act)).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(
            chain[0].spiffe_id.as_str(),
            "spiffe://certd.internal/svc/payments"
        );
        assert_eq!(
            chain[0].serial.as_ref().map(Serial::to_hex).as_deref(),
            Some("0a0b")
        );
        assert_eq!(chain[1].serial, None);
        assert!(actors(Some(&serde_json::json!({ "sub": "alice" }))).is_err());
        let mut deep = serde_json::json!({ "sub": "spiffe://certd.internal/svc/a" });
        for _ in 0..20 {
            deep = serde_json::json!({ "sub": "spiffe://certd.internal/svc/a", "act": deep });
        }
        assert!(actors(Some(&deep)).is_err());
        assert_eq!(actors(None).unwrap(), Vec::new());
    }
}
