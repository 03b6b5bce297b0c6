//! Authorizations and challenges (RFC 8555 §7.5): reading and
//! deactivating an authorization, answering a challenge, and validating it
//! in the background through `challenge::validate`.
//!
//! A validation runs in a task of the replica that was asked; if that
//! replica stops meanwhile, the challenge would stay `processing` until
//! its authorization expires (a day). So whoever reads an authorization
//! whose validation has been `processing` for longer than a validation can
//! take (twice the validation timeout) runs it again.

use std::time::Duration;

use serde::Deserialize;

use super::challenge::{self, ChallengeType};
use super::jws::Jwk;
use super::problem::{Problem, ProblemType};
use super::records::{self, AuthzRecord, ChallengeRecord, Status, Stored};
use super::server::{AcmeServer, Answer, KeyMode, RETRY_AFTER_SECONDS, SWAP_ATTEMPTS, Signed};
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
            let authz = self
                .resume_interrupted(&verified.key, &key, current)
                .await?;
            let now = self.authority.now();
            let mut answer = Answer::json(200, authz_json(&base, &authz, now))
                .at(format!("{base}/authz/{account}/{authz_id}"));
            if authz.status == Status::Pending {
                answer.retry_after = Some(RETRY_AFTER_SECONDS);
            }
            return Ok(answer);
        }
        let update: AuthzUpdate = verified.jws.json()?;
        if update.status.as_deref() != Some("deactivated") {
            return Err(Problem::malformed(
                "an authorization's status may only be set to \"deactivated\"",
            ));
        }
        if !may_deactivate(current.value.status) {
            return Err(Problem::malformed(format!(
                "the authorization is {}: only a pending or valid one may be deactivated",
                current.value.status.as_str()
            )));
        }
        let mut authz = current.value.clone();
        authz.status = Status::Deactivated;
        if !records::replace(store, &key, &current, &authz, current.expires_at()).await? {
            return Err(Problem::malformed(
                "the authorization changed meanwhile; try again",
            ));
        }
        Ok(
            Answer::json(200, authz_json(&base, &authz, self.authority.now()))
                .at(format!("{base}/authz/{account}/{authz_id}")),
        )
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
            if matches!(challenge.status, Status::Pending | Status::Processing) {
                answer.retry_after = Some(RETRY_AFTER_SECONDS);
            }
            Ok(answer)
        };
        for _ in 0..SWAP_ATTEMPTS {
            let current = records::load::<AuthzRecord>(store, &key)
                .await?
                .ok_or_else(|| Problem::not_found("challenge"))?;
            let startable = may_start(&current.value, kind, self.authority.now());
            if verified.jws.is_post_as_get() || !startable {
                let authz = self
                    .resume_interrupted(&verified.key, &key, current)
                    .await?;
                return answer(&authz);
            }
            let mut authz = current.value.clone();
            let Some(challenge) = authz.challenges.iter_mut().find(|c| c.kind == kind) else {
                return Err(Problem::not_found("challenge"));
            };
            challenge.status = Status::Processing;
            challenge.processing_since = Some(self.authority.now());
            let Some(challenge_type) = challenge.kind() else {
                return Err(Problem::not_found("challenge"));
            };
            let token = challenge.token.clone();
            if records::replace(store, &key, &current, &authz, current.expires_at()).await? {
                self.start_validation(&authz, challenge_type, &token, &verified.key);
                return answer(&authz);
            }
        }
        Err(Problem::internal(&"the authorization kept changing"))
    }

    /// Validates a challenge of `authz` in the background, for the account
    /// whose key is `account_key`.
    fn start_validation(
        &self,
        authz: &AuthzRecord,
        kind: ChallengeType,
        token: &str,
        account_key: &Jwk,
    ) {
        let key_authorization = format!("{token}.{}", account_key.thumbprint());
        let server = self.clone();
        let (account, authz_id) = (authz.account.clone(), authz.id.clone());
        let (identifier, token) = (authz.identifier.clone(), token.to_owned());
        tokio::spawn(async move {
            server
                .validate(
                    &account,
                    &authz_id,
                    kind,
                    &identifier,
                    &token,
                    &key_authorization,
                )
                .await;
        });
    }

    /// Runs again the validations of `current` (stored under `key`) that
    /// were cut short, and returns the authorization as it now stands.
    /// Only the reader whose compare-and-swap of the new start time wins
    /// runs them, so two replicas polling at once do not both.
    async fn resume_interrupted(
        &self,
        account_key: &Jwk,
        key: &str,
        current: Stored<AuthzRecord>,
    ) -> Result<AuthzRecord, Problem> {
        let now = self.authority.now();
        let timeout = self.authority.acme_state().settings.validation().timeout;
        if !current
            .value
            .challenges
            .iter()
            .any(|challenge| interrupted(challenge, now, timeout))
        {
            return Ok(current.value);
        }
        let mut authz = current.value.clone();
        let mut resumed = Vec::new();
        for challenge in &mut authz.challenges {
            if interrupted(challenge, now, timeout)
                && let Some(kind) = challenge.kind()
            {
                challenge.processing_since = Some(now);
                resumed.push((kind, challenge.token.clone()));
            }
        }
        let store = self.authority.store();
        if !records::replace(store, key, &current, &authz, current.expires_at()).await? {
            // Someone else changed it (and resumed it, or recorded an
            // outcome): answer with what is there now.
            return Ok(records::load::<AuthzRecord>(store, key)
                .await?
                .map_or(authz, |stored| stored.value));
        }
        for (kind, token) in resumed {
            tracing::warn!(
                challenge = kind.as_str(),
                identifier = authz.identifier,
                account = authz.account,
                "an ACME challenge's validation was cut short (certd stopped?); running it again"
            );
            self.start_validation(&authz, kind, &token, account_key);
        }
        Ok(authz)
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
        let state = self.authority.acme_state();
        let settings = state.settings.validation();
        // A turn among the replica's validations; the semaphore is never
        // closed, so acquiring fails only if it were.
        let Ok(_turn) = state.validations.clone().acquire_owned().await else {
            return;
        };
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
            let settled = match &outcome {
                Ok(()) => {
                    challenge.processing_since = None;
                    challenge.status = Status::Valid;
                    challenge.validated_at = Some(self.authority.now());
                    Status::Valid
                }
                Err(error) => {
                    let problem_type = ProblemType::from_name(error.problem_type())
                        .unwrap_or(ProblemType::IncorrectResponse);
                    challenge.processing_since = None;
                    challenge.status = Status::Invalid;
                    challenge.error =
                        Some(Problem::new(problem_type, error.to_string()).document());
                    Status::Invalid
                }
            };
            settle(&mut authz, settled);
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

/// Whether challenge `kind` of `authz` may start validating at `now`: the
/// authorization is pending and unexpired, that challenge pending, and no
/// other challenge of it processing (one validation at a time decides it).
fn may_start(authz: &AuthzRecord, kind: &str, now: i64) -> bool {
    authz.status == Status::Pending
        && authz.expires_at >= now
        && authz
            .challenges
            .iter()
            .any(|c| c.kind == kind && c.status == Status::Pending)
        && !authz
            .challenges
            .iter()
            .any(|c| c.status == Status::Processing)
}

/// A validation's outcome decides the authorization only while it is
/// still pending: one deactivated (or decided) meanwhile stays as it is.
fn settle(authz: &mut AuthzRecord, outcome: Status) {
    if authz.status == Status::Pending {
        authz.status = outcome;
    }
}

/// RFC 8555 §7.5.2: a client deactivates a pending or valid authorization;
/// an invalid, expired or deactivated one stays as it is.
fn may_deactivate(status: Status) -> bool {
    matches!(status, Status::Pending | Status::Valid)
}

/// Whether a challenge's validation was cut short: it has been
/// `processing` for more than twice the validation `timeout` (every
/// attempt ends within one), or since before certd noted when it started.
pub(super) fn interrupted(challenge: &ChallengeRecord, now: i64, timeout: Duration) -> bool {
    let limit = i64::try_from(timeout.as_secs().max(1))
        .unwrap_or(i64::MAX)
        .saturating_mul(2);
    challenge.status == Status::Processing
        && challenge
            .processing_since
            .is_none_or(|since| now.saturating_sub(since) > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(status: Status, processing_since: Option<i64>) -> ChallengeRecord {
        ChallengeRecord {
            kind: "http-01".into(),
            token: "token".into(),
            status,
            validated_at: None,
            error: None,
            processing_since,
        }
    }

    /// Only a validation `processing` for more than twice the timeout (10 s
    /// here), or for an unknown time, counts as cut short.
    #[test]
    fn a_validation_is_cut_short_past_twice_its_timeout() {
        let timeout = Duration::from_secs(10);
        let check = |status, since, now, expected: bool| {
            assert_eq!(
                interrupted(&challenge(status, since), now, timeout),
                expected,
                "{status:?} since {since:?} at {now}"
            );
        };
        check(Status::Processing, Some(1_000), 1_000, false);
        check(Status::Processing, Some(1_000), 1_020, false);
        check(Status::Processing, Some(1_000), 1_021, true);
        check(Status::Processing, None, 1_000, true);
        // A clock that went back is not a reason to run it again.
        check(Status::Processing, Some(1_000), 900, false);
        for settled in [Status::Pending, Status::Valid, Status::Invalid] {
            check(settled, Some(1_000), 100_000, false);
            check(settled, None, 100_000, false);
        }
    }

    fn authz(status: Status, challenges: Vec<ChallengeRecord>) -> AuthzRecord {
        AuthzRecord {
            id: "z".into(),
            account: "a".into(),
            identifier: "web.example.test".into(),
            status,
            expires_at: 100,
            challenges,
        }
    }

    fn of_kind(kind: &str, status: Status) -> ChallengeRecord {
        ChallengeRecord {
            kind: kind.into(),
            ..challenge(status, None)
        }
    }

    /// A challenge starts only on a pending, unexpired authorization whose
    /// challenges are not already being validated.
    #[test]
    fn a_challenge_starts_only_while_its_authorization_is_open() {
        use Status::{Deactivated, Invalid, Pending, Processing, Valid};
        let pending = |others| {
            authz(
                Pending,
                vec![of_kind("http-01", Pending), of_kind("dns-01", others)],
            )
        };
        assert!(may_start(&pending(Pending), "http-01", 50));
        assert!(!may_start(&pending(Pending), "http-01", 101), "expired");
        assert!(
            !may_start(&pending(Pending), "tls-alpn-01", 50),
            "not offered"
        );
        assert!(
            !may_start(&pending(Processing), "http-01", 50),
            "one at a time"
        );
        for status in [Valid, Invalid, Deactivated] {
            let decided = authz(status, vec![of_kind("http-01", Pending)]);
            assert!(!may_start(&decided, "http-01", 50), "{status:?}");
        }
    }

    /// A validation's outcome moves only a pending authorization, and only
    /// a pending or valid one may be deactivated.
    #[test]
    fn outcomes_and_deactivation_follow_the_state_machine() {
        use Status::{Deactivated, Invalid, Pending, Valid};
        for (before, outcome, after) in [
            (Pending, Valid, Valid),
            (Pending, Invalid, Invalid),
            (Deactivated, Valid, Deactivated),
            (Deactivated, Invalid, Deactivated),
            (Invalid, Valid, Invalid),
        ] {
            let mut record = authz(before, Vec::new());
            settle(&mut record, outcome);
            assert_eq!(record.status, after, "{before:?} + {outcome:?}");
        }
        assert!(may_deactivate(Pending) && may_deactivate(Valid));
        for status in [Invalid, Deactivated] {
            assert!(!may_deactivate(status), "{status:?}");
        }
    }
}
