//! The ACME protocol (RFC 8555 §7): each resource's decision, given a
//! request the HTTP front door (`api::acme`) has read. Every signed request
//! is checked here in one order (nonce form, `url`, key, signature, nonce
//! consumed) before any resource is touched; answers are [`Answer`]s and
//! refusals [`Problem`]s, which the front door writes out.
//!
//! State lives in the store's ACME object table (`records`); every change
//! is a compare-and-swap against what was read, so two replicas on one
//! database never both finalize an order or use an EAB key twice.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};

use super::challenge::{self, ChallengeType};
use super::eab;
use super::jws::{Jwk, Jws, KeyRef, b64, unb64};
use super::problem::{Problem, ProblemType};
use super::records::{
    self, AccountRecord, AccountStatus, AuthzRecord, ChallengeRecord, EabRecord, EntryPolicy,
    OrderRecord, Status, Stored,
};
use crate::authority::{Authority, Caller};
use crate::ca::RevocationReason;
use crate::ca::csr::{RequestedName, ValidatedCsr};
use crate::identity::Serial;
use crate::model::AuditEvent;
use crate::store::{Attestation, Proof};

/// How long an order (and its authorizations) may take to become valid.
pub const ORDER_LIFETIME_SECONDS: i64 = 24 * 3600;
/// How long a finished order is kept after its certificate expires (for
/// downloads and listings), before the purge forgets it.
const KEEP_AFTER_EXPIRY_SECONDS: i64 = 24 * 3600;
/// Most identifiers one order may name.
const MAX_IDENTIFIERS: usize = 100;
/// Most contact URLs an account may list, and their longest.
const MAX_CONTACTS: usize = 10;
const MAX_CONTACT_LEN: usize = 256;
/// Attempts at a compare-and-swap lost to a concurrent writer.
const SWAP_ATTEMPTS: usize = 5;

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
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Body,
    pub location: Option<String>,
    /// `Link: <…>;rel="up"` (a challenge's authorization).
    pub up: Option<String>,
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
    fn json(status: u16, body: Value) -> Self {
        Answer {
            status,
            body: Body::Json(body),
            location: None,
            up: None,
            retry_after: None,
        }
    }

    fn at(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }
}

/// Which key a resource wants its requests signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyMode {
    /// An embedded `jwk` (newAccount).
    Jwk,
    /// An account's URL (`kid`).
    Kid,
    /// Either (revokeCert: the account, or the certificate's own key).
    Either,
}

/// A request whose signature and nonce checked out.
struct Verified {
    jws: Jws,
    key: Jwk,
    account: Option<Stored<AccountRecord>>,
}

impl Verified {
    /// The account that signed (for `KeyMode::Kid`).
    fn account(&self) -> Result<&AccountRecord, Problem> {
        self.account
            .as_ref()
            .map(|stored| &stored.value)
            .ok_or_else(|| Problem::malformed("this request must be signed by an account (kid)"))
    }
}

/// The ACME server: cheap to clone, one per request.
#[derive(Debug, Clone)]
pub struct AcmeServer {
    authority: Authority,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAccount {
    contact: Option<Vec<String>>,
    #[serde(default)]
    only_return_existing: bool,
    external_account_binding: Option<Value>,
}

#[derive(Deserialize)]
struct AccountUpdate {
    contact: Option<Vec<String>>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChange {
    account: String,
    old_key: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    identifiers: Vec<Identifier>,
    not_before: Option<Value>,
    not_after: Option<Value>,
    replaces: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Deserialize)]
struct Finalize {
    csr: String,
}

#[derive(Deserialize)]
struct Revoke {
    certificate: String,
    reason: Option<u8>,
}

#[derive(Deserialize)]
struct AuthzUpdate {
    status: Option<String>,
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
    async fn verify(&self, request: Signed, mode: KeyMode) -> Result<Verified, Problem> {
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
    fn own<'a>(
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

    fn caller(account: &str, peer: &Caller) -> Caller {
        Caller(format!("acme account {account} ({peer})"))
    }

    /// `POST /acme/new-account`
    pub async fn new_account(&self, request: Signed) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let peer = request.peer.clone();
        let verified = self.verify(request, KeyMode::Jwk).await?;
        let payload: NewAccount = verified.jws.json()?;
        let store = self.authority.store();
        let thumbprint = verified.key.thumbprint();
        if let Some(existing) = self.account_with_key(&thumbprint).await? {
            return Ok(Answer::json(200, account_json(&base, &existing))
                .at(format!("{base}/account/{}", existing.id)));
        }
        if payload.only_return_existing {
            return Err(Problem::new(
                ProblemType::AccountDoesNotExist,
                "no account has this key",
            ));
        }
        let contact = checked_contacts(payload.contact.unwrap_or_default())?;
        let now = self.authority.now();
        let state = self.authority.acme_state();
        let (entry, eab_key_id) = match &payload.external_account_binding {
            Some(binding) => {
                let key_id = state.eab.check_binding(
                    binding,
                    &format!("{base}/new-account"),
                    &verified.key,
                )?;
                let entry = self.use_eab_key(&key_id, now).await?;
                (Some(entry), Some(key_id))
            }
            None if state.settings.accounts_without_eab => (None, None),
            None => {
                return Err(Problem::new(
                    ProblemType::ExternalAccountRequired,
                    "this certd requires external account binding: ask its operator for a key (`certd acme eab create --entry <entry>`)",
                ));
            }
        };
        let account = AccountRecord {
            id: random_id(),
            key: verified.key.clone(),
            contact,
            status: AccountStatus::Valid,
            entry: entry.clone(),
            eab_key_id,
            created_at: now,
        };
        // The key's index first: of two requests with one key, one account.
        if !records::create(
            store,
            &records::account_by_key(&thumbprint),
            &account.id,
            None,
        )
        .await?
        {
            let existing = self
                .account_with_key(&thumbprint)
                .await?
                .ok_or_else(|| Problem::internal(&"an account key index without its account"))?;
            return Ok(Answer::json(200, account_json(&base, &existing))
                .at(format!("{base}/account/{}", existing.id)));
        }
        records::create(store, &records::account_key(&account.id), &account, None).await?;
        self.authority
            .audit_acme(
                AuditEvent::CreateAcmeAccount,
                &Self::caller(&account.id, &peer),
                format!(
                    "account {}{}",
                    account.id,
                    entry
                        .as_deref()
                        .map(|entry| format!(" bound to entry {entry}"))
                        .unwrap_or_else(|| " without external account binding".into())
                ),
                None,
            )
            .await;
        Ok(Answer::json(201, account_json(&base, &account))
            .at(format!("{base}/account/{}", account.id)))
    }

    async fn account_with_key(&self, thumbprint: &str) -> Result<Option<AccountRecord>, Problem> {
        let store = self.authority.store();
        let Some(id) = records::load::<String>(store, &records::account_by_key(thumbprint)).await?
        else {
            return Ok(None);
        };
        Ok(
            records::load::<AccountRecord>(store, &records::account_key(&id.value))
                .await?
                .map(|stored| stored.value),
        )
    }

    /// Uses up EAB key `key_id` (once, even across replicas); the entry it
    /// binds to.
    async fn use_eab_key(&self, key_id: &str, now: i64) -> Result<String, Problem> {
        let store = self.authority.store();
        let key = records::eab_key(key_id);
        let stored = records::load::<EabRecord>(store, &key).await?;
        eab::usable(stored.as_ref().map(|stored| &stored.value), key_id, now)?;
        let Some(stored) = stored else {
            return Err(Problem::unauthorized(format!(
                "external account binding key {key_id} is unknown"
            )));
        };
        if self.authority.entry(&stored.value.entry).is_none() {
            return Err(Problem::unauthorized(format!(
                "external account binding key {key_id} is for entry {}, which no longer exists",
                stored.value.entry
            )));
        }
        let used = EabRecord {
            used: true,
            ..stored.value.clone()
        };
        if !records::replace(store, &key, &stored, &used, stored.expires_at()).await? {
            return Err(Problem::unauthorized(format!(
                "external account binding key {key_id} was already used"
            )));
        }
        Ok(stored.value.entry)
    }

    /// `POST /acme/account/{account}`: read, update contacts, deactivate.
    pub async fn account(&self, request: Signed, account_id: &str) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let peer = request.peer.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account_id, "account")?;
        if verified.jws.is_post_as_get() {
            let account = verified.account()?;
            return Ok(Answer::json(200, account_json(&base, account))
                .at(format!("{base}/account/{account_id}")));
        }
        let update: AccountUpdate = verified.jws.json()?;
        let deactivate = match update.status.as_deref() {
            None => false,
            Some("deactivated") => true,
            Some(other) => {
                return Err(Problem::malformed(format!(
                    "an account's status may only be set to \"deactivated\", not {other:?}"
                )));
            }
        };
        let contact = update.contact.map(checked_contacts).transpose()?;
        let store = self.authority.store();
        let key = records::account_key(account_id);
        for _ in 0..SWAP_ATTEMPTS {
            let current = records::load::<AccountRecord>(store, &key)
                .await?
                .ok_or_else(|| Problem::not_found("account"))?;
            let mut account = current.value.clone();
            if let Some(contact) = &contact {
                account.contact.clone_from(contact);
            }
            if deactivate {
                account.status = AccountStatus::Deactivated;
            }
            if records::replace(store, &key, &current, &account, None).await? {
                if deactivate {
                    self.authority
                        .audit_acme(
                            AuditEvent::DeactivateAcmeAccount,
                            &Self::caller(account_id, &peer),
                            format!("account {account_id} deactivated by its holder"),
                            None,
                        )
                        .await;
                }
                return Ok(Answer::json(200, account_json(&base, &account))
                    .at(format!("{base}/account/{account_id}")));
            }
        }
        Err(Problem::internal(&"the account kept changing"))
    }

    /// `POST /acme/key-change` (RFC 8555 §7.3.5).
    pub async fn key_change(&self, request: Signed) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let url = request.url.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        let inner = Jws::parse(&verified.jws.payload)?;
        let KeyRef::Jwk(new_key) = inner.key_ref()? else {
            return Err(Problem::malformed(
                "the inner JWS must embed the new key (jwk)",
            ));
        };
        if inner.header.url.as_deref() != Some(url.as_str()) {
            return Err(Problem::malformed(
                "the inner JWS's url must be the outer one's",
            ));
        }
        if inner.header.nonce.is_some() {
            return Err(Problem::malformed("the inner JWS may not carry a nonce"));
        }
        inner.verify(&new_key)?;
        let change: KeyChange = inner.json()?;
        let account_url = format!("{base}/account/{}", account.id);
        if change.account != account_url {
            return Err(Problem::unauthorized(format!(
                "the key change names account {}, but was signed by {account_url}",
                change.account
            )));
        }
        if Jwk::from_value(&change.old_key).ok().as_ref() != Some(&account.key) {
            return Err(Problem::unauthorized(
                "oldKey is not the account's current key",
            ));
        }
        let store = self.authority.store();
        let new_thumbprint = new_key.thumbprint();
        if let Some(holder) = self.account_with_key(&new_thumbprint).await? {
            return Err(
                Problem::malformed("another account already has the new key")
                    .with_status(409)
                    .with_location(format!("{base}/account/{}", holder.id)),
            );
        }
        if !records::create(
            store,
            &records::account_by_key(&new_thumbprint),
            &account.id,
            None,
        )
        .await?
        {
            return Err(
                Problem::malformed("another account already has the new key").with_status(409),
            );
        }
        let key = records::account_key(&account.id);
        let current = verified
            .account
            .as_ref()
            .ok_or_else(|| Problem::internal(&"a verified kid request without its account"))?;
        let updated = AccountRecord {
            key: new_key,
            ..account.clone()
        };
        if !records::replace(store, &key, current, &updated, None).await? {
            // Undo the index: the account changed meanwhile.
            if let Some(index) =
                records::load::<String>(store, &records::account_by_key(&new_thumbprint)).await?
            {
                records::remove(store, &records::account_by_key(&new_thumbprint), &index).await?;
            }
            return Err(Problem::malformed(
                "the account changed while its key was being changed; try again",
            )
            .with_status(409));
        }
        let old_index = records::account_by_key(&account.key.thumbprint());
        if let Some(index) = records::load::<String>(store, &old_index).await? {
            records::remove(store, &old_index, &index).await?;
        }
        Ok(Answer::json(200, account_json(&base, &updated)).at(account_url))
    }

    /// `POST /acme/new-order`
    pub async fn new_order(&self, request: Signed) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        let payload: NewOrder = verified.jws.json()?;
        if payload.not_before.is_some() || payload.not_after.is_some() {
            return Err(Problem::malformed(
                "certd decides a certificate's lifetime (the entry's); leave notBefore and notAfter out",
            ));
        }
        let identifiers = checked_identifiers(&payload.identifiers)?;
        let (entry, challenges_required) = match &account.entry {
            Some(entry_id) => {
                let entry = self.authority.entry(entry_id).ok_or_else(|| {
                    Problem::unauthorized(format!(
                        "the account is bound to entry {entry_id}, which no longer exists"
                    ))
                })?;
                for name in &identifiers {
                    if !entry
                        .dns_names
                        .iter()
                        .any(|dns| dns.as_str().eq_ignore_ascii_case(name))
                    {
                        let names: Vec<&str> =
                            entry.dns_names.iter().map(|dns| dns.as_str()).collect();
                        return Err(Problem::new(
                            ProblemType::RejectedIdentifier,
                            format!(
                                "{name} is not a DNS name of entry {entry_id} (its names: {})",
                                names.join(", ")
                            ),
                        ));
                    }
                }
                (entry, false)
            }
            None => {
                let entry = self.authority.entry_naming(&identifiers).ok_or_else(|| {
                    Problem::new(
                        ProblemType::RejectedIdentifier,
                        format!(
                            "no registration entry names all of {}",
                            identifiers.join(", ")
                        ),
                    )
                })?;
                (entry, true)
            }
        };
        if let Some(replaces) = &payload.replaces {
            self.check_replaces(&account, replaces).await?;
        }
        let policy = self.policy(&entry.id).await?;
        let valid_at_once = !challenges_required && policy.without_challenges;
        let kinds: Vec<ChallengeType> = policy
            .challenges
            .iter()
            .filter_map(|name| ChallengeType::parse(name))
            .collect();
        let now = self.authority.now();
        let expires_at = now + ORDER_LIFETIME_SECONDS;
        let store = self.authority.store();
        let mut authorizations = Vec::new();
        for name in &identifiers {
            let authz = AuthzRecord {
                id: random_id(),
                account: account.id.clone(),
                identifier: name.clone(),
                status: if valid_at_once {
                    Status::Valid
                } else {
                    Status::Pending
                },
                expires_at,
                challenges: if valid_at_once {
                    Vec::new()
                } else {
                    kinds
                        .iter()
                        .map(|kind| ChallengeRecord {
                            kind: kind.as_str().to_owned(),
                            token: random_token(),
                            status: Status::Pending,
                            validated_at: None,
                            error: None,
                        })
                        .collect()
                },
            };
            records::create(
                store,
                &records::authz_key(&account.id, &authz.id),
                &authz,
                Some(expires_at + KEEP_AFTER_EXPIRY_SECONDS),
            )
            .await?;
            authorizations.push(authz.id);
        }
        let order = OrderRecord {
            id: random_id(),
            account: account.id.clone(),
            entry: entry.id.clone(),
            status: if valid_at_once {
                Status::Ready
            } else {
                Status::Pending
            },
            expires_at,
            identifiers,
            authorizations,
            error: None,
            certificate: None,
            replaces: payload.replaces,
            created_at: now,
        };
        records::create(
            store,
            &records::order_key(&account.id, &order.id),
            &order,
            Some(expires_at + KEEP_AFTER_EXPIRY_SECONDS),
        )
        .await?;
        count_order("created");
        Ok(Answer::json(201, order_json(&base, &order))
            .at(format!("{base}/order/{}/{}", account.id, order.id)))
    }

    /// A `replaces` certID must name a certificate this account was issued.
    async fn check_replaces(&self, account: &AccountRecord, replaces: &str) -> Result<(), Problem> {
        let cert_id = super::ari::CertId::parse(replaces)?;
        let record = self.authority.store().certificate(&cert_id.serial).await?;
        match record {
            Some(record) if ordered_by(&record.attestation) == Some(account.id.as_str()) => Ok(()),
            _ => Err(Problem::malformed(format!(
                "replaces names {replaces}, which is not a certificate of this account"
            ))),
        }
    }

    /// Entry `entry`'s ACME policy (the default if none was set).
    pub async fn policy(&self, entry: &str) -> Result<EntryPolicy, Problem> {
        Ok(
            records::load::<EntryPolicy>(self.authority.store(), &records::policy_key(entry))
                .await?
                .map(|stored| stored.value)
                .unwrap_or_default(),
        )
    }

    /// `POST /acme/order/{account}/{order}` (POST-as-GET).
    pub async fn order(
        &self,
        request: Signed,
        account: &str,
        order_id: &str,
    ) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account, "order")?;
        let order = self.current_order(account, order_id).await?;
        Ok(Answer::json(200, order_json(&base, &order.value))
            .at(format!("{base}/order/{account}/{order_id}")))
    }

    /// The order with its status brought up to date from its
    /// authorizations and its expiry (RFC 8555 §7.1.6).
    async fn current_order(
        &self,
        account: &str,
        order_id: &str,
    ) -> Result<Stored<OrderRecord>, Problem> {
        let store = self.authority.store();
        let key = records::order_key(account, order_id);
        for _ in 0..SWAP_ATTEMPTS {
            let current = records::load::<OrderRecord>(store, &key)
                .await?
                .ok_or_else(|| Problem::not_found("order"))?;
            let now = self.authority.now();
            let mut order = current.value.clone();
            match order.status {
                Status::Pending | Status::Ready if now > order.expires_at => {
                    order.status = Status::Invalid;
                    order.error = Some(Problem::malformed("the order expired").document());
                }
                Status::Pending => {
                    let mut statuses = Vec::new();
                    for authz in &order.authorizations {
                        let authz = records::load::<AuthzRecord>(
                            store,
                            &records::authz_key(account, authz),
                        )
                        .await?;
                        statuses.push(authz.map_or(Status::Invalid, |a| a.value.status));
                    }
                    if statuses.iter().all(|status| *status == Status::Valid) {
                        order.status = Status::Ready;
                    } else if statuses
                        .iter()
                        .any(|status| matches!(status, Status::Invalid | Status::Deactivated))
                    {
                        order.status = Status::Invalid;
                        order.error = Some(
                            Problem::unauthorized("an authorization of the order failed")
                                .document(),
                        );
                    }
                }
                _ => {}
            }
            if order == current.value {
                return Ok(current);
            }
            if order.status == Status::Invalid {
                count_order("invalid");
            }
            if records::replace(store, &key, &current, &order, current.expires_at()).await? {
                return Ok(records::load(store, &key)
                    .await?
                    .ok_or_else(|| Problem::not_found("order"))?);
            }
        }
        Err(Problem::internal(&"the order kept changing"))
    }

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
            return Ok(
                Answer::json(200, authz_json(&base, &current.value, &verified.key))
                    .at(format!("{base}/authz/{account}/{authz_id}")),
            );
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
        Ok(Answer::json(200, authz_json(&base, &authz, &verified.key))
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
            let mut answer =
                Answer::json(200, challenge_json(&base, authz, challenge, &verified.key));
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

    /// `POST /acme/order/{account}/{order}/finalize`
    pub async fn finalize(
        &self,
        request: Signed,
        account_id: &str,
        order_id: &str,
    ) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let peer = request.peer.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account_id, "order")?;
        let ready = self.current_order(account_id, order_id).await?;
        if ready.value.status != Status::Ready {
            return Err(Problem::new(
                ProblemType::OrderNotReady,
                format!(
                    "the order is {}, not ready: {}",
                    ready.value.status.as_str(),
                    match ready.value.status {
                        Status::Pending => "complete its authorizations first",
                        Status::Processing | Status::Valid => "it was finalized already",
                        _ => "make a new order",
                    }
                ),
            ));
        }
        let payload: Finalize = verified.jws.json()?;
        let csr_der = unb64("the CSR", &payload.csr)?;
        check_csr_names(&csr_der, &ready.value.identifiers)?;
        let store = self.authority.store();
        let key = records::order_key(account_id, order_id);
        let mut order = ready.value.clone();
        order.status = Status::Processing;
        // One finalization, even with two replicas: only one swap from
        // ready wins.
        if !records::replace(store, &key, &ready, &order, ready.expires_at()).await? {
            return Err(Problem::new(
                ProblemType::OrderNotReady,
                "the order is being finalized by another request",
            ));
        }
        let issued = self
            .authority
            .issue_for_acme(
                &Self::caller(account_id, &peer),
                account_id,
                &order.entry,
                &order.identifiers,
                &csr_der,
            )
            .await;
        let processing = records::load::<OrderRecord>(store, &key)
            .await?
            .ok_or_else(|| Problem::not_found("order"))?;
        let mut finished = processing.value.clone();
        let (outcome, expires_at) = match issued {
            Ok(issued) => {
                finished.status = Status::Valid;
                finished.certificate = Some(issued.record.serial.to_hex());
                count_order("valid");
                (
                    Ok(()),
                    Some(issued.record.not_after + KEEP_AFTER_EXPIRY_SECONDS),
                )
            }
            Err(error) => {
                let problem = problem_of_issuance(&error);
                finished.status = Status::Invalid;
                finished.error = Some(problem.document());
                count_order("invalid");
                (Err(problem), processing.expires_at())
            }
        };
        if !records::replace(store, &key, &processing, &finished, expires_at).await? {
            return Err(Problem::internal(
                &"the order changed while it was processing",
            ));
        }
        outcome?;
        Ok(Answer::json(200, order_json(&base, &finished))
            .at(format!("{base}/order/{account_id}/{order_id}")))
    }

    /// `POST /acme/cert/{account}/{order}` (POST-as-GET): the chain.
    pub async fn certificate(
        &self,
        request: Signed,
        account: &str,
        order_id: &str,
    ) -> Result<Answer, Problem> {
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account, "certificate")?;
        let order = self.current_order(account, order_id).await?;
        let serial: Serial = order
            .value
            .certificate
            .as_deref()
            .and_then(|serial| serial.parse().ok())
            .ok_or_else(|| Problem::not_found("certificate"))?;
        let record = self
            .authority
            .store()
            .certificate(&serial)
            .await?
            .ok_or_else(|| Problem::not_found("certificate"))?;
        Ok(Answer {
            status: 200,
            body: Body::PemChain(self.authority.ca().chain_pem_of(&record.der)),
            location: None,
            up: None,
            retry_after: None,
        })
    }

    /// `POST /acme/account/{account}/orders` (POST-as-GET).
    pub async fn orders(&self, request: Signed, account: &str) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account, "account")?;
        let orders: Vec<Stored<OrderRecord>> =
            records::list(self.authority.store(), &format!("order/{account}/")).await?;
        let urls: Vec<String> = orders
            .iter()
            .filter(|order| order.value.status != Status::Invalid)
            .map(|order| format!("{base}/order/{account}/{}", order.value.id))
            .collect();
        Ok(Answer::json(200, json!({ "orders": urls })))
    }

    /// `POST /acme/revoke-cert`: by the account that ordered it, or signed
    /// with the certificate's own key.
    pub async fn revoke_cert(&self, request: Signed) -> Result<Answer, Problem> {
        let peer = request.peer.clone();
        let verified = self.verify(request, KeyMode::Either).await?;
        let payload: Revoke = verified.jws.json()?;
        let der = unb64("the certificate", &payload.certificate)?;
        let (_, certificate) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| Problem::malformed("the certificate does not parse"))?;
        let not_ours = || Problem::unauthorized("certd did not issue this certificate");
        let serial = Serial::from_der_integer(certificate.raw_serial()).ok_or_else(not_ours)?;
        let record = self
            .authority
            .store()
            .certificate(&serial)
            .await?
            .filter(|record| record.der == der)
            .ok_or_else(not_ours)?;
        let caller = match &verified.account {
            Some(account) => {
                if ordered_by(&record.attestation) != Some(account.value.id.as_str()) {
                    return Err(Problem::unauthorized(
                        "this account did not order this certificate",
                    ));
                }
                Self::caller(&account.value.id, &peer)
            }
            None => {
                if !verified.key.is_key_of(certificate.public_key()) {
                    return Err(Problem::unauthorized(
                        "the request is signed neither by an account nor by the certificate's key",
                    ));
                }
                Caller(format!("acme certificate key ({peer})"))
            }
        };
        let reason = match payload.reason {
            None => RevocationReason::Unspecified,
            Some(code) => RevocationReason::from_code(code)
                .filter(|reason| *reason != RevocationReason::CertificateHold)
                .ok_or_else(|| {
                    Problem::new(
                        ProblemType::BadRevocationReason,
                        format!(
                            "reason {code} is not one certd takes (0 unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded, 5 cessationOfOperation)"
                        ),
                    )
                })?,
        };
        if record.revocation.is_some() {
            return Err(Problem::new(
                ProblemType::AlreadyRevoked,
                "the certificate is already revoked",
            ));
        }
        self.authority
            .revoke(&caller, &serial.to_hex(), reason)
            .await
            .map_err(|error| problem_of_issuance(&error))?;
        Ok(Answer {
            status: 200,
            body: Body::Empty,
            location: None,
            up: None,
            retry_after: None,
        })
    }

    /// `GET /acme/renewal-info/{certID}` (RFC 9773).
    pub async fn renewal_info(&self, cert_id: &str) -> Result<Answer, Problem> {
        let cert_id = super::ari::CertId::parse(cert_id)?;
        let record = self
            .authority
            .store()
            .certificate(&cert_id.serial)
            .await?
            .filter(|record| {
                super::ari::authority_key_id(&record.der).as_deref()
                    == Some(cert_id.key_identifier.as_slice())
            })
            .ok_or_else(|| Problem::not_found("certificate"))?;
        let ca = self.authority.ca();
        let signers = ca.signers();
        let renew_now = if record.revocation.is_some() {
            Some(super::ari::RenewNow::Revoked)
        } else {
            match signers.signer_of(&record.der) {
                None => Some(super::ari::RenewNow::IntermediateReplaced),
                Some(signer) if signer.key_id() != signers.current.key_id() => {
                    Some(super::ari::RenewNow::IntermediateReplaced)
                }
                Some(signer) => {
                    let bundle = ca.trust_bundle();
                    let root = signer.root_der().as_ref();
                    (!bundle.roots_der.iter().any(|der| der.as_slice() == root))
                        .then_some(super::ari::RenewNow::RootRetired)
                }
            }
        };
        let (start, end) = super::ari::window(
            record.not_before,
            record.not_after,
            self.authority.now(),
            renew_now,
        );
        let mut answer = Answer::json(
            200,
            json!({
                "suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)},
            }),
        );
        answer.retry_after = Some(super::ari::RETRY_AFTER_SECONDS);
        Ok(answer)
    }
}

/// The account that ordered a certificate, if ACME issued it.
fn ordered_by(attestation: &Attestation) -> Option<&str> {
    match attestation {
        Attestation::Registered {
            proof: Proof::Attested { kind, detail },
            ..
        } if kind == crate::model::kind::ACME => Some(detail),
        _ => None,
    }
}

/// How a failed issuance or revocation reads to the ACME client.
fn problem_of_issuance(error: &crate::Error) -> Problem {
    use crate::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidInput => Problem::new(ProblemType::BadCsr, error.to_string()),
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated | ErrorKind::NotFound => {
            Problem::unauthorized(error.to_string())
        }
        ErrorKind::Exhausted => Problem::new(ProblemType::RateLimited, error.to_string()),
        _ => Problem::internal(error),
    }
}

fn count_order(outcome: &str) {
    crate::metrics::get()
        .acme_orders
        .get_or_create(&crate::metrics::AcmeOrderLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// The CSR's names must be exactly the order's (a CN, if any, one of them),
/// and it may ask for nothing else; its key and signature are checked by
/// `ValidatedCsr`.
fn check_csr_names(csr_der: &[u8], identifiers: &[String]) -> Result<(), Problem> {
    let csr = ValidatedCsr::from_der(csr_der)
        .map_err(|error| Problem::new(ProblemType::BadCsr, error.to_string()))?;
    let ordered: BTreeSet<String> = identifiers.iter().cloned().collect();
    let mut requested = BTreeSet::new();
    for name in csr.requested_names() {
        match name {
            RequestedName::Dns(dns) => {
                requested.insert(dns.to_ascii_lowercase());
            }
            RequestedName::CommonName(cn) if ordered.contains(&cn.to_ascii_lowercase()) => {}
            other => {
                return Err(Problem::new(
                    ProblemType::BadCsr,
                    format!("the CSR asks for {other}, which the order does not name"),
                ));
            }
        }
    }
    if requested != ordered {
        return Err(Problem::new(
            ProblemType::BadCsr,
            format!(
                "the CSR must name exactly the order's identifiers ({}); it names {}",
                identifiers.join(", "),
                requested.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

/// Identifiers as certd keeps them: DNS names, lower case, sorted, each
/// once.
fn checked_identifiers(identifiers: &[Identifier]) -> Result<Vec<String>, Problem> {
    if identifiers.is_empty() {
        return Err(Problem::malformed(
            "an order must name at least one identifier",
        ));
    }
    if identifiers.len() > MAX_IDENTIFIERS {
        return Err(Problem::malformed(format!(
            "an order may name at most {MAX_IDENTIFIERS} identifiers"
        )));
    }
    let mut names = BTreeSet::new();
    for identifier in identifiers {
        if identifier.kind != "dns" {
            return Err(Problem::new(
                ProblemType::UnsupportedIdentifier,
                format!(
                    "identifiers of type {:?}: certd issues for DNS names only",
                    identifier.kind
                ),
            ));
        }
        let name = identifier.value.to_ascii_lowercase();
        if name.parse::<crate::identity::DnsName>().is_err() {
            return Err(Problem::new(
                ProblemType::RejectedIdentifier,
                format!("{:?} is not a DNS name certd issues for", identifier.value),
            ));
        }
        names.insert(name);
    }
    Ok(names.into_iter().collect())
}

fn checked_contacts(contact: Vec<String>) -> Result<Vec<String>, Problem> {
    if contact.len() > MAX_CONTACTS
        || contact
            .iter()
            .any(|c| c.len() > MAX_CONTACT_LEN || !c.starts_with("mailto:"))
    {
        return Err(Problem::new(
            ProblemType::Malformed,
            format!("contacts must be at most {MAX_CONTACTS} mailto: URLs"),
        ));
    }
    Ok(contact)
}

fn random_id() -> String {
    let mut bytes = [0u8; 12];
    crate::fsutil::fill_random(&mut bytes);
    b64(&bytes)
}

/// A challenge token: 128 bits or more of entropy (RFC 8555 §8.3).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    crate::fsutil::fill_random(&mut bytes);
    b64(&bytes)
}

/// RFC 3339 time, as ACME writes `expires` and windows.
pub fn rfc3339(unix: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

fn account_json(base: &str, account: &AccountRecord) -> Value {
    json!({
        "status": match account.status {
            AccountStatus::Valid => "valid",
            AccountStatus::Deactivated => "deactivated",
        },
        "contact": account.contact,
        "orders": format!("{base}/account/{}/orders", account.id),
    })
}

fn order_json(base: &str, order: &OrderRecord) -> Value {
    let account = &order.account;
    let mut body = json!({
        "status": order.status.as_str(),
        "expires": rfc3339(order.expires_at),
        "identifiers": order
            .identifiers
            .iter()
            .map(|name| json!({"type": "dns", "value": name}))
            .collect::<Vec<_>>(),
        "authorizations": order
            .authorizations
            .iter()
            .map(|authz| format!("{base}/authz/{account}/{authz}"))
            .collect::<Vec<_>>(),
        "finalize": format!("{base}/order/{account}/{}/finalize", order.id),
    });
    if order.certificate.is_some() {
        body["certificate"] = format!("{base}/cert/{account}/{}", order.id).into();
    }
    if let Some(error) = &order.error {
        body["error"] = serde_json::to_value(error).unwrap_or_default();
    }
    if let Some(replaces) = &order.replaces {
        body["replaces"] = replaces.clone().into();
    }
    body
}

fn authz_json(base: &str, authz: &AuthzRecord, key: &Jwk) -> Value {
    json!({
        "identifier": {"type": "dns", "value": authz.identifier},
        "status": authz.status.as_str(),
        "expires": rfc3339(authz.expires_at),
        "challenges": authz
            .challenges
            .iter()
            .map(|challenge| challenge_json(base, authz, challenge, key))
            .collect::<Vec<_>>(),
    })
}

fn challenge_json(
    base: &str,
    authz: &AuthzRecord,
    challenge: &ChallengeRecord,
    _key: &Jwk,
) -> Value {
    let mut body = json!({
        "type": challenge.kind,
        "url": format!("{base}/chall/{}/{}/{}", authz.account, authz.id, challenge.kind),
        "token": challenge.token,
        "status": challenge.status.as_str(),
    });
    if let Some(validated) = challenge.validated_at {
        body["validated"] = rfc3339(validated).into();
    }
    if let Some(error) = &challenge.error {
        body["error"] = serde_json::to_value(error).unwrap_or_default();
    }
    body
}
