//! The ACME protocol (RFC 8555 §7): each resource's decision, given a
//! request the HTTP front door (`api::acme`) has read. Every signed request
//! is checked here in one order (nonce form, `url`, key, signature, nonce
//! consumed) before any resource is touched; answers are [`Answer`]s and
//! refusals [`Problem`]s, which the front door writes out.
//!
//! State lives in the store's ACME object table (`records`); every change
//! is a compare-and-swap against what was read, so two replicas on one
//! database never both finalize an order or use an EAB key twice.
//!
//! This file holds what every resource shares (the request and answer
//! types, the check of a signed request, the directory); the resources
//! are in `accounts`, `orders`, `authorizations` and `revocation`, the
//! JSON they answer with in `views`.

use serde_json::{Value, json};

use super::jws::{Jwk, Jws, KeyRef, b64};
use super::problem::{Problem, ProblemType};
use super::records::{self, AccountRecord, AccountStatus, Stored};
use crate::authority::{Authority, Caller};
use crate::store::{Attestation, Proof};

/// How long an order (and its authorizations) may take to become valid.
pub const ORDER_LIFETIME_SECONDS: i64 = 24 * 3600;
/// How long a finished order is kept after its certificate expires (for
/// downloads and listings), before the purge forgets it.
pub(super) const KEEP_AFTER_EXPIRY_SECONDS: i64 = 24 * 3600;
/// Most identifiers one order may name.
pub(super) const MAX_IDENTIFIERS: usize = 100;
/// Most contact URLs an account may list, and their longest.
pub(super) const MAX_CONTACTS: usize = 10;
pub(super) const MAX_CONTACT_LEN: usize = 256;
/// How long a finalization may stay processing before it counts as
/// abandoned (its replica stopped mid-issuance) and the order turns
/// invalid with serverInternal. Issuance takes milliseconds; this leaves
/// room for a slow key store.
pub const PROCESSING_STALE_SECONDS: i64 = 10 * 60;
/// The `Retry-After` (seconds) of answers that are not final yet: pending
/// or processing authorizations, challenges and orders.
pub(super) const RETRY_AFTER_SECONDS: u64 = 2;
/// How long finalize waits for issuance before answering `processing`
/// (the issuance goes on in its own task either way).
pub(super) const FINALIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Orders one account may have open (pending, ready or processing) at
/// once; more are refused with rateLimited until some finish or expire.
pub const MAX_OPEN_ORDERS_PER_ACCOUNT: usize = 100;
/// Orders listed in one page of an account's order list.
pub(super) const ORDERS_PER_PAGE: usize = 100;
/// Challenge validations running at once on a replica: each is outbound
/// connections and DNS queries, which a flood of accounts must not
/// multiply without bound. More wait for a turn.
pub const MAX_CONCURRENT_VALIDATIONS: usize = 64;
/// Attempts at a compare-and-swap lost to a concurrent writer.
pub(super) const SWAP_ATTEMPTS: usize = 5;

/// A POST to an ACME resource, as the front door read it.
#[derive(Debug)]
pub struct Signed {
    /// `https://<host>/acme`, from the request's Host, which every URL
    /// certd hands out and checks is built on.
    pub base: String,
    /// The URL the request was made to (what `url` must be).
    pub url: String,
    pub jws: Jws,
    /// The peer, for the audit.
    pub peer: Caller,
    /// The peer's address, for the rate limit of new accounts.
    pub peer_ip: Option<std::net::IpAddr>,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Body,
    pub location: Option<String>,
    /// `Link: <…>;rel="up"` (a challenge's authorization).
    pub up: Option<String>,
    /// `Link: <…>;rel="next"` (the next page of a list, RFC 8555 §7.1.2.1).
    pub next: Option<String>,
    pub retry_after: Option<u64>,
}

#[derive(Debug)]
pub enum Body {
    Json(Value),
    /// `application/pem-certificate-chain`
    PemChain(String),
    Empty,
}

impl Answer {
    pub(super) fn json(status: u16, body: serde_json::Value) -> Self {
        Answer {
            status,
            body: Body::Json(body),
            location: None,
            up: None,
            next: None,
            retry_after: None,
        }
    }

    pub(super) fn at(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }
}

/// Which key a resource wants its requests signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyMode {
    /// An embedded `jwk` (newAccount).
    Jwk,
    /// An account's URL (`kid`).
    Kid,
    /// Either (revokeCert: the account, or the certificate's own key).
    Either,
}

/// A request whose signature and nonce checked out.
pub(super) struct Verified {
    pub(super) jws: Jws,
    pub(super) key: Jwk,
    pub(super) account: Option<Stored<AccountRecord>>,
}

impl Verified {
    /// The account that signed (for `KeyMode::Kid`).
    pub(super) fn account(&self) -> Result<&AccountRecord, Problem> {
        self.account
            .as_ref()
            .map(|stored| &stored.value)
            .ok_or_else(|| Problem::malformed("this request must be signed by an account (kid)"))
    }
}

/// The ACME server: cheap to clone, one per request.
#[derive(Debug, Clone)]
pub struct AcmeServer {
    pub(super) authority: Authority,
}

impl AcmeServer {
    pub fn new(authority: Authority) -> Self {
        AcmeServer { authority }
    }

    pub fn enabled(&self) -> bool {
        self.authority.acme_state().settings.enabled
    }

    /// A fresh nonce (`Replay-Nonce` of every answer).
    pub fn nonce(&self) -> String {
        self.authority
            .acme_state()
            .nonces
            .mint(self.authority.now())
    }

    /// Counts a refusal by its problem type.
    pub fn count_problem(problem: &Problem) {
        crate::metrics::get()
            .acme_problems
            .get_or_create(&crate::metrics::AcmeProblemLabels {
                problem: problem.kind.name().to_owned(),
            })
            .inc();
    }

    /// `GET /acme/directory`
    pub fn directory(&self, base: &str) -> Answer {
        let settings = &self.authority.acme_state().settings;
        Answer::json(
            200,
            json!({
                "newNonce": format!("{base}/new-nonce"),
                "newAccount": format!("{base}/new-account"),
                "newOrder": format!("{base}/new-order"),
                "revokeCert": format!("{base}/revoke-cert"),
                "keyChange": format!("{base}/key-change"),
                "renewalInfo": format!("{base}/renewal-info"),
                "meta": {
                    "externalAccountRequired": !settings.accounts_without_eab,
                },
            }),
        )
    }

    /// Checks a signed request in the one order every resource shares.
    pub(super) async fn verify(&self, request: Signed, mode: KeyMode) -> Result<Verified, Problem> {
        let Signed { base, url, jws, .. } = request;
        let state = self.authority.acme_state();
        let now = self.authority.now();
        let nonce = jws
            .header
            .nonce
            .as_deref()
            .ok_or_else(|| Problem::new(ProblemType::BadNonce, "the request has no nonce"))?;
        let nonce = state.nonces.check(nonce, now)?;
        match jws.header.url.as_deref() {
            Some(signed) if signed == url => {}
            Some(signed) => {
                return Err(Problem::unauthorized(format!(
                    "the request was signed for {signed}, but made to {url}"
                )));
            }
            None => return Err(Problem::malformed("the protected header has no url")),
        }
        let (key, account) = match (jws.key_ref()?, mode) {
            (KeyRef::Jwk(key), KeyMode::Jwk | KeyMode::Either) => (key, None),
            (KeyRef::Kid(kid), KeyMode::Kid | KeyMode::Either) => {
                let account = self.account_of_kid(&base, &kid).await?;
                if account.value.status != AccountStatus::Valid {
                    return Err(Problem::unauthorized(format!(
                        "account {} is deactivated",
                        account.value.id
                    )));
                }
                (account.value.key.clone(), Some(account))
            }
            (KeyRef::Jwk(_), KeyMode::Kid) => {
                return Err(Problem::malformed(
                    "this request must name its account (kid), not embed a key (jwk)",
                ));
            }
            (KeyRef::Kid(_), KeyMode::Jwk) => {
                return Err(Problem::malformed(
                    "this request must embed its key (jwk), not name an account (kid)",
                ));
            }
        };
        jws.verify(&key)?;
        if !self
            .authority
            .store()
            .consume_acme_nonce(&nonce.bytes, nonce.expires_at)
            .await?
        {
            return Err(Problem::new(
                ProblemType::BadNonce,
                "the nonce was already used; use the one from the last answer",
            ));
        }
        Ok(Verified { jws, key, account })
    }

    async fn account_of_kid(
        &self,
        base: &str,
        kid: &str,
    ) -> Result<Stored<AccountRecord>, Problem> {
        let unknown = || {
            Problem::new(
                ProblemType::AccountDoesNotExist,
                format!("no account {kid}"),
            )
        };
        let id = kid
            .strip_prefix(&format!("{base}/account/"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(unknown)?;
        records::load(self.authority.store(), &records::account_key(id))
            .await?
            .ok_or_else(unknown)
    }

    /// Requires the account that signed to be `account` (the one in the
    /// resource's path). Another account's resource is answered as one that
    /// does not exist.
    pub(super) fn own<'a>(
        verified: &'a Verified,
        account: &str,
        what: &str,
    ) -> Result<&'a AccountRecord, Problem> {
        let signer = verified.account()?;
        if signer.id != account {
            return Err(Problem::not_found(what));
        }
        Ok(signer)
    }

    pub(super) fn caller(account: &str, peer: &Caller) -> Caller {
        Caller(format!("acme account {account} ({peer})"))
    }
}

/// The account that ordered a certificate, if ACME issued it.
pub(super) fn ordered_by(attestation: &Attestation) -> Option<&str> {
    match attestation {
        Attestation::Registered {
            proof: Proof::Attested { kind, detail },
            ..
        } if kind == crate::model::kind::ACME => Some(detail),
        _ => None,
    }
}

/// How a failed issuance or revocation reads to the ACME client.
pub(super) fn problem_of_issuance(error: &crate::Error) -> Problem {
    use crate::ErrorKind;
    use crate::registry::RegistryError;
    if let crate::Error::Registry(
        RegistryError::NotForAcme { .. }
        | RegistryError::NotAnEntryName { .. }
        | RegistryError::EntryDeleted { .. },
    ) = error
    {
        return problem_of_entry(error);
    }
    match error.kind() {
        ErrorKind::InvalidInput => Problem::new(ProblemType::BadCsr, error.to_string()),
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated | ErrorKind::NotFound => {
            Problem::unauthorized(error.to_string())
        }
        ErrorKind::Exhausted => Problem::new(ProblemType::RateLimited, error.to_string()),
        _ => Problem::internal(error),
    }
}

/// The problem of an order's entry refused by `Authority::acme_entry`:
/// names it may not have are `rejectedIdentifier`, an entry gone is
/// `unauthorized`.
pub(super) fn problem_of_entry(error: &crate::Error) -> Problem {
    use crate::registry::RegistryError;
    match error {
        crate::Error::Registry(
            RegistryError::NotForAcme { .. } | RegistryError::NotAnEntryName { .. },
        ) => Problem::new(ProblemType::RejectedIdentifier, error.to_string()),
        crate::Error::Registry(RegistryError::EntryDeleted { .. }) => {
            Problem::unauthorized(error.to_string())
        }
        other => Problem::internal(other),
    }
}

pub(super) fn random_id() -> String {
    let mut bytes = [0u8; 12];
    crate::fsutil::fill_random(&mut bytes);
    b64(&bytes)
}

/// A challenge token: 128 bits or more of entropy (RFC 8555 §8.3).
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    crate::fsutil::fill_random(&mut bytes);
    b64(&bytes)
}
