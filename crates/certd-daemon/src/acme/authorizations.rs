//! Authorizations and challenges (RFC 8555 §7.5): reading and
//! deactivating an authorization, answering a challenge, and validating it
//! in the background through `challenge::validate`.

use serde::Deserialize;

use super::challenge::{self, ChallengeType};
use super::problem::{Problem, ProblemType};
use super::records::{self, AuthzRecord, Status};
use super::server::{AcmeServer, Answer, KeyMode, SWAP_ATTEMPTS, Signed};
use super::views::{authz_json, challenge_json};

#[derive(Deserialize)]
struct AuthzUpdate {
    status: Option<String>,
}

impl AcmeServer {
    /// `POST /acme/authz/{account}/{authz}`: read, or deactivate.
    pub async fn authz(
        &self,
        request: Signed,
        account: &str,
        authz_id: &str,
    ) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account, "authorization")?;
        let store = self.authority.store();
        let key = records::authz_key(account, authz_id);
        let current = records::load::<AuthzRecord>(store, &key)
            .await?
            .ok_or_else(|| Problem::not_found("authorization"))?;
        if verified.jws.is_post_as_get() {
            return Ok(Answer::json(200, authz_json(&base, &current.value))
                .at(format!("{base}/authz/{account}/{authz_id}")));
        }
        let update: AuthzUpdate = verified.jws.json()?;
        if update.status.as_deref() != Some("deactivated") {
            return Err(Problem::malformed(
                "an authorization's status may only be set to \"deactivated\"",
            ));
        }
        let mut authz = current.value.clone();
        authz.status = Status::Deactivated;
        if !records::replace(store, &key, &current, &authz, current.expires_at()).await? {
            return Err(Problem::malformed(
                "the authorization changed meanwhile; try again",
            ));
        }
        Ok(Answer::json(200, authz_json(&base, &authz))
            .at(format!("{base}/authz/{account}/{authz_id}")))
    }

    /// `POST /acme/chall/{account}/{authz}/{type}`: read (POST-as-GET) or
    /// answer (`{}`), which starts validation in the background; the
    /// client polls the authorization.
    pub async fn challenge(
        &self,
        request: Signed,
        account: &str,
        authz_id: &str,
        kind: &str,
    ) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account, "challenge")?;
        let store = self.authority.store();
        let key = records::authz_key(account, authz_id);
        let authz_url = format!("{base}/authz/{account}/{authz_id}");
        let answer = |authz: &AuthzRecord| -> Result<Answer, Problem> {
            let challenge = authz
                .challenges
                .iter()
                .find(|challenge| challenge.kind == kind)
                .ok_or_else(|| Problem::not_found("challenge"))?;
            let mut answer = Answer::json(200, challenge_json(&base, authz, challenge));
            answer.up = Some(authz_url.clone());
            Ok(answer)
        };
        for _ in 0..SWAP_ATTEMPTS {
            let current = records::load::<AuthzRecord>(store, &key)
                .await?
                .ok_or_else(|| Problem::not_found("challenge"))?;
            let pending = current.value.status == Status::Pending
                && current.value.expires_at >= self.authority.now()
                && current
                    .value
                    .challenges
                    .iter()
                    .any(|c| c.kind == kind && c.status == Status::Pending);
            if verified.jws.is_post_as_get() || !pending {
                return answer(&current.value);
            }
            let mut authz = current.value.clone();
            let Some(challenge) = authz.challenges.iter_mut().find(|c| c.kind == kind) else {
                return Err(Problem::not_found("challenge"));
            };
            challenge.status = Status::Processing;
            let token = challenge.token.clone();
            if records::replace(store, &key, &current, &authz, current.expires_at()).await? {
                let Some(challenge_type) = ChallengeType::parse(kind) else {
                    return Err(Problem::not_found("challenge"));
                };
                let key_authorization = format!("{token}.{}", verified.key.thumbprint());
                let server = self.clone();
                let (account, authz_id) = (account.to_owned(), authz_id.to_owned());
                let identifier = authz.identifier.clone();
                tokio::spawn(async move {
                    server
                        .validate(
                            &account,
                            &authz_id,
                            challenge_type,
                            &identifier,
                            &token,
                            &key_authorization,
                        )
                        .await;
                });
                return answer(&authz);
            }
        }
        Err(Problem::internal(&"the authorization kept changing"))
    }

    /// Validates a challenge and records the outcome on the challenge and
    /// its authorization.
    async fn validate(
        &self,
        account: &str,
        authz_id: &str,
        kind: ChallengeType,
        identifier: &str,
        token: &str,
        key_authorization: &str,
    ) {
        let settings = self.authority.acme_state().settings.validation();
        let outcome =
            challenge::validate(&settings, kind, identifier, token, key_authorization).await;
        crate::metrics::get()
            .acme_challenges
            .get_or_create(&crate::metrics::AcmeChallengeLabels {
                challenge: kind.as_str().to_owned(),
                outcome: if outcome.is_ok() { "valid" } else { "invalid" }.to_owned(),
            })
            .inc();
        if let Err(error) = &outcome {
            tracing::info!(%error, challenge = kind.as_str(), identifier, account, "ACME challenge failed");
        }
        let store = self.authority.store();
        let key = records::authz_key(account, authz_id);
        for _ in 0..SWAP_ATTEMPTS {
            let current = match records::load::<AuthzRecord>(store, &key).await {
                Ok(Some(current)) => current,
                Ok(None) => return,
                Err(problem) => {
                    tracing::warn!(%problem, "cannot record an ACME challenge's outcome");
                    return;
                }
            };
            let mut authz = current.value.clone();
            let Some(challenge) = authz
                .challenges
                .iter_mut()
                .find(|c| c.kind == kind.as_str() && c.status == Status::Processing)
            else {
                return;
            };
            match &outcome {
                Ok(()) => {
                    challenge.status = Status::Valid;
                    challenge.validated_at = Some(self.authority.now());
                    authz.status = Status::Valid;
                }
                Err(error) => {
                    let problem_type = ProblemType::from_name(error.problem_type())
                        .unwrap_or(ProblemType::IncorrectResponse);
                    challenge.status = Status::Invalid;
                    challenge.error =
                        Some(Problem::new(problem_type, error.to_string()).document());
                    authz.status = Status::Invalid;
                }
            }
            match records::replace(store, &key, &current, &authz, current.expires_at()).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(problem) => {
                    tracing::warn!(%problem, "cannot record an ACME challenge's outcome");
                    return;
                }
            }
        }
    }
}
