//! Orders (RFC 8555 §7.4): new orders for names of the account's entry,
//! their state machine, finalization through the authority (once, even
//! across replicas), the certificate chain, and an account's order list.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

use super::challenge::ChallengeType;
use super::jws::unb64;
use super::open_orders;
use super::problem::{Problem, ProblemType};
use super::records::{
    self, AccountRecord, AuthzRecord, ChallengeRecord, EntryPolicy, OrderRecord, Status, Stored,
};
use super::replacements;
use super::server::{
    AcmeServer, Answer, Body, FINALIZE_WAIT, KEEP_AFTER_EXPIRY_SECONDS, KeyMode, MAX_IDENTIFIERS,
    MAX_OPEN_ORDERS_PER_ACCOUNT, ORDER_LIFETIME_SECONDS, ORDERS_PER_PAGE, PROCESSING_STALE_SECONDS,
    RETRY_AFTER_SECONDS, SWAP_ATTEMPTS, Signed, ordered_by, problem_of_entry, problem_of_issuance,
    random_id, random_token,
};
use super::views::order_json;

use crate::authority::{AcmeIssuance, Caller};
use crate::ca::csr::{RequestedName, ValidatedCsr};
use crate::identity::Serial;

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

impl AcmeServer {
    /// `POST /acme/new-order`
    pub async fn new_order(&self, request: Signed) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        self.authority.acme_state().limits.new_order(&account.id)?;
        let payload: NewOrder = verified.jws.json()?;
        if payload.not_before.is_some() || payload.not_after.is_some() {
            return Err(Problem::malformed(
                "certd decides a certificate's lifetime (the entry's); leave notBefore and notAfter out",
            ));
        }
        let identifiers = checked_identifiers(&payload.identifiers)?;
        self.check_open_orders(&account.id).await?;
        let (entry, challenges_required) = match &account.entry {
            Some(entry_id) => {
                let entry = self
                    .authority
                    .acme_entry(entry_id, &identifiers)
                    .map_err(|error| problem_of_entry(&error))?;
                (entry, false)
            }
            // Turning `accounts_without_eab` off also stops the accounts
            // made while it was on.
            None if !self.authority.acme_state().settings.accounts_without_eab => {
                return Err(Problem::new(
                    ProblemType::ExternalAccountRequired,
                    "this account was made without external account binding, which certd no longer accepts ([acme] accounts_without_eab is off); make an account with an EAB key",
                ));
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
        let order_id = random_id();
        if let Some(replaces) = &payload.replaces {
            self.check_replaces(&account, replaces, &identifiers, &order_id)
                .await?;
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
                            processing_since: None,
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
        // The marker first: a crash between the two leaves a marker the
        // count drops, never an open order the count misses.
        open_orders::opening(store, &account.id, &order_id, expires_at, now).await?;
        let order = OrderRecord {
            id: order_id,
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
            processing_since: None,
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

    /// An account may have `MAX_OPEN_ORDERS_PER_ACCOUNT` orders open at
    /// once: each holds authorizations and, once answered, validations.
    /// Counted from the open-order markers (`open_orders`), so the cost is
    /// the cap's, not the account's history.
    async fn check_open_orders(&self, account: &str) -> Result<(), Problem> {
        let now = self.authority.now();
        let open = open_orders::count(
            self.authority.store(),
            account,
            now,
            MAX_OPEN_ORDERS_PER_ACCOUNT,
        )
        .await?;
        if open >= MAX_OPEN_ORDERS_PER_ACCOUNT {
            let mut problem = Problem::new(
                ProblemType::RateLimited,
                format!(
                    "the account has {open} open orders, the most certd allows ({MAX_OPEN_ORDERS_PER_ACCOUNT}); finish or let some expire first"
                ),
            );
            problem.retry_after = Some(60);
            return Err(problem);
        }
        Ok(())
    }

    /// Authorizations made valid without a challenge (the entry's policy
    /// said `--without-challenges` when the order was made) count only
    /// while the policy still says so.
    async fn check_still_without_challenges(&self, order: &OrderRecord) -> Result<(), Problem> {
        if self.policy(&order.entry).await?.without_challenges {
            return Ok(());
        }
        let store = self.authority.store();
        for authz in &order.authorizations {
            let authz =
                records::load::<AuthzRecord>(store, &records::authz_key(&order.account, authz))
                    .await?;
            if authz.is_some_and(|authz| authz.value.challenges.is_empty()) {
                return Err(Problem::unauthorized(format!(
                    "entry {}'s ACME policy now requires challenges; make a new order",
                    order.entry
                )));
            }
        }
        Ok(())
    }

    /// A `replaces` certID (RFC 9773 §5) must name a certificate this
    /// account was issued, sharing a name with the new order, and that no
    /// other live (not invalid) order replaces already.
    async fn check_replaces(
        &self,
        account: &AccountRecord,
        replaces: &str,
        identifiers: &[String],
        order_id: &str,
    ) -> Result<(), Problem> {
        let cert_id = super::ari::CertId::parse(replaces)?;
        let record = self.authority.store().certificate(&cert_id.serial).await?;
        let Some(record) =
            record.filter(|record| ordered_by(&record.attestation) == Some(account.id.as_str()))
        else {
            return Err(Problem::malformed(format!(
                "replaces names {replaces}, which is not a certificate of this account"
            )));
        };
        if !record
            .dns_names
            .iter()
            .any(|name| identifiers.iter().any(|i| i.eq_ignore_ascii_case(name)))
        {
            return Err(Problem::malformed(format!(
                "replaces names {replaces}, which shares no name with this order"
            )));
        }
        // Claimed for this order (not yet written) unless a live order
        // replaces it already; kept until a day after it expires.
        replacements::claim(
            self.authority.store(),
            &account.id,
            replaces,
            order_id,
            self.authority.now(),
            record.not_after + KEEP_AFTER_EXPIRY_SECONDS,
        )
        .await
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
        let mut answer = Answer::json(200, order_json(&base, &order.value))
            .at(format!("{base}/order/{account}/{order_id}"));
        if order.value.status == Status::Processing {
            answer.retry_after = Some(RETRY_AFTER_SECONDS);
        }
        Ok(answer)
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
            let mut statuses = Vec::new();
            if current.value.status == Status::Pending {
                for authz in &current.value.authorizations {
                    let authz =
                        records::load::<AuthzRecord>(store, &records::authz_key(account, authz))
                            .await?;
                    statuses.push(authz.map_or(Status::Invalid, |a| a.value.status));
                }
            }
            let mut order = current.value.clone();
            if let Some((status, error)) = next_status(&order, self.authority.now(), &statuses) {
                order.status = status;
                order.error = error.map(|problem| problem.document());
            }
            if order == current.value {
                return Ok(current);
            }
            order.processing_since = None;
            if records::replace(store, &key, &current, &order, current.expires_at()).await? {
                // Counted once the change is made: a lost swap is retried.
                if order.status == Status::Invalid {
                    count_order("invalid");
                }
                if !open_orders::is_open(&order, self.authority.now()) {
                    open_orders::closed(store, account, order_id).await;
                }
                return records::load(store, &key)
                    .await?
                    .ok_or_else(|| Problem::not_found("order"));
            }
        }
        Err(Problem::internal(&"the order kept changing"))
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
        self.check_still_without_challenges(&ready.value).await?;
        let payload: Finalize = verified.jws.json()?;
        let csr_der = unb64("the CSR", &payload.csr)?;
        check_csr_names(&csr_der, &ready.value.identifiers)?;
        check_csr_key(&csr_der, &verified.key)?;
        let store = self.authority.store();
        let key = records::order_key(account_id, order_id);
        let mut order = ready.value.clone();
        order.status = Status::Processing;
        order.processing_since = Some(self.authority.now());
        // One finalization, even with two replicas: only one swap from
        // ready wins.
        if !records::replace(store, &key, &ready, &order, ready.expires_at()).await? {
            return Err(Problem::new(
                ProblemType::OrderNotReady,
                "the order is being finalized by another request",
            ));
        }
        // Issuance runs in a task of its own, which always writes the
        // outcome: this request may be dropped (the client disconnects,
        // a timeout), and an order left processing would never finish.
        let server = self.clone();
        let caller = Self::caller(account_id, &peer);
        let bound = verified.account()?.entry.is_some();
        let issuing =
            tokio::spawn(async move { server.issue_order(caller, bound, key, csr_der).await });
        let location = format!("{base}/order/{account_id}/{order_id}");
        match tokio::time::timeout(FINALIZE_WAIT, issuing).await {
            Ok(Ok(finished)) => Ok(Answer::json(200, order_json(&base, &finished?)).at(location)),
            Ok(Err(panicked)) => Err(Problem::internal(&panicked)),
            // Still issuing: the client polls the order.
            Err(_) => {
                let mut answer = Answer::json(200, order_json(&base, &order)).at(location);
                answer.retry_after = Some(RETRY_AFTER_SECONDS);
                Ok(answer)
            }
        }
    }

    /// Issues the certificate of the processing order at `key` and writes
    /// the outcome: valid with its certificate; back to ready when the
    /// failure was certd's own or a rate limit (the client may finalize
    /// again); invalid otherwise.
    async fn issue_order(
        self,
        caller: Caller,
        bound: bool,
        key: String,
        csr_der: Vec<u8>,
    ) -> Result<OrderRecord, Problem> {
        let store = self.authority.store();
        let processing = records::load::<OrderRecord>(store, &key)
            .await?
            .ok_or_else(|| Problem::not_found("order"))?;
        let order = &processing.value;
        let issued = self
            .authority
            .issue_for_acme(
                &caller,
                &AcmeIssuance {
                    account: &order.account,
                    bound,
                    entry: &order.entry,
                    names: &order.identifiers,
                },
                &csr_der,
            )
            .await;
        let mut finished = processing.value.clone();
        finished.processing_since = None;
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
                let mut problem = problem_of_issuance(&error);
                finished.status = status_after_failure(&problem);
                if finished.status == Status::Invalid {
                    finished.error = Some(problem.document());
                    count_order("invalid");
                }
                if problem.kind == ProblemType::RateLimited {
                    problem.retry_after = problem.retry_after.or(Some(RETRY_AFTER_SECONDS));
                }
                (Err(problem), processing.expires_at())
            }
        };
        if !records::replace(store, &key, &processing, &finished, expires_at).await? {
            return Err(Problem::internal(
                &"the order changed while it was processing",
            ));
        }
        if !open_orders::is_open(&finished, self.authority.now()) {
            open_orders::closed(store, &finished.account, &finished.id).await;
        }
        outcome.map(|()| finished)
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
            next: None,
            retry_after: None,
        })
    }

    /// `POST /acme/account/{account}/orders` (POST-as-GET): a page of
    /// `ORDERS_PER_PAGE` order URLs, in the order of their ids, from after
    /// `?cursor=` (the last id of the page before), and `Link: rel="next"`
    /// to the next page, if any. A cursor of ids, not of positions, keeps
    /// pages stable while orders are added. The orders are read a page at a
    /// time from the cursor on; invalid ones are not listed, and a page
    /// reads at most `ORDER_LIST_SCAN` orders, so an account with a long
    /// run of them gets a shorter page (possibly empty) with its next link.
    pub async fn orders(&self, request: Signed, account: &str) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let cursor = cursor_of(&request.url)?.map(str::to_owned);
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account, "account")?;
        let store = self.authority.store();
        let prefix = format!("order/{account}/");
        let mut listed: Vec<String> = Vec::new();
        let mut examined = 0;
        let mut last_examined = cursor;
        let next = 'walk: loop {
            let after = last_examined.as_ref().map(|id| format!("{prefix}{id}"));
            let read: Vec<(String, Stored<OrderRecord>)> =
                records::page(store, &prefix, after.as_deref(), ORDERS_PER_PAGE + 1).await?;
            let end = read.len() <= ORDERS_PER_PAGE;
            for (key, order) in read {
                let id = key.strip_prefix(&prefix).unwrap_or_default().to_owned();
                if order.value.status != Status::Invalid {
                    if listed.len() == ORDERS_PER_PAGE {
                        // One more to list: the page is full.
                        break 'walk listed.last().cloned();
                    }
                    listed.push(id.clone());
                }
                examined += 1;
                last_examined = Some(id);
            }
            if end {
                break None;
            }
            if examined >= ORDER_LIST_SCAN {
                break last_examined;
            }
        };
        let urls: Vec<String> = listed
            .iter()
            .map(|id| format!("{base}/order/{account}/{id}"))
            .collect();
        let mut answer = Answer::json(200, json!({ "orders": urls }));
        if let Some(next) = next {
            answer.next = Some(format!("{base}/account/{account}/orders?cursor={next}"));
        }
        Ok(answer)
    }
}

/// Most orders one page of an account's order list reads (invalid ones,
/// which are not listed, included).
const ORDER_LIST_SCAN: usize = 10 * ORDERS_PER_PAGE;

/// The `cursor` of an order list's URL, if any.
fn cursor_of(url: &str) -> Result<Option<&str>, Problem> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(None);
    };
    query
        .strip_prefix("cursor=")
        .filter(|cursor| {
            !cursor.is_empty()
                && cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(Some)
        .ok_or_else(|| {
            Problem::malformed(format!("{query:?}: an order list takes ?cursor=ID only"))
        })
}

/// The order state machine (RFC 8555 §7.1.6) where time and
/// authorizations move it: a pending or ready order past its expiry turns
/// invalid; a pending one turns ready when every authorization (whose
/// `authz_statuses` are given for a pending order) is valid, and invalid
/// when one failed; a processing one abandoned for
/// `PROCESSING_STALE_SECONDS` (its replica stopped mid-issuance) turns
/// invalid with serverInternal. `None`: it stays as it is. Finalization
/// moves it from ready to processing to valid, invalid or back to ready
/// (`issue_order`).
fn next_status(
    order: &OrderRecord,
    now: i64,
    authz_statuses: &[Status],
) -> Option<(Status, Option<Problem>)> {
    match order.status {
        Status::Pending | Status::Ready if now > order.expires_at => Some((
            Status::Invalid,
            Some(Problem::malformed("the order expired")),
        )),
        Status::Pending if authz_statuses.iter().all(|s| *s == Status::Valid) => {
            Some((Status::Ready, None))
        }
        Status::Pending
            if authz_statuses
                .iter()
                .any(|s| matches!(s, Status::Invalid | Status::Deactivated)) =>
        {
            Some((
                Status::Invalid,
                Some(Problem::unauthorized(
                    "an authorization of the order failed",
                )),
            ))
        }
        Status::Processing
            if order
                .processing_since
                .is_none_or(|since| now > since + PROCESSING_STALE_SECONDS) =>
        {
            Some((
                Status::Invalid,
                Some(Problem::new(
                    ProblemType::ServerInternal,
                    "the certificate's issuance was abandoned (certd stopped while it was processing); make a new order",
                )),
            ))
        }
        _ => None,
    }
}

/// Where a failed issuance leaves its order: ready again when the failure
/// was certd's own or a rate limit, which the same finalization may pass
/// later; invalid when the request itself was refused.
fn status_after_failure(problem: &Problem) -> Status {
    match problem.kind {
        ProblemType::RateLimited | ProblemType::ServerInternal => Status::Ready,
        _ => Status::Invalid,
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

/// The certificate's key must not be the account key: one key for both
/// would let whoever holds the server's TLS key act as the account (and
/// RFC 8555 §11.1 asks servers to refuse it).
fn check_csr_key(csr_der: &[u8], account_key: &super::jws::Jwk) -> Result<(), Problem> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|_| Problem::new(ProblemType::BadCsr, "the CSR does not parse"))?;
    if account_key.is_key_of(&csr.certification_request_info.subject_pki) {
        return Err(Problem::new(
            ProblemType::BadCsr,
            "the CSR's key is the account key; use another key for the certificate",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_moves_with_its_authorizations_and_its_expiry() {
        use Status::{Deactivated, Invalid, Pending, Processing, Ready, Valid};
        let check = |status, now, authz: &[Status], expected: Option<Status>| {
            let order = OrderRecord {
                id: "o".into(),
                account: "a".into(),
                entry: "e".into(),
                status,
                expires_at: 100,
                identifiers: Vec::new(),
                authorizations: Vec::new(),
                error: None,
                certificate: None,
                replaces: None,
                created_at: 0,
                processing_since: Some(50),
            };
            let next = next_status(&order, now, authz).map(|(status, _)| status);
            assert_eq!(next, expected, "{status:?} at {now} with {authz:?}");
        };
        check(Pending, 50, &[Valid, Pending], None);
        check(Pending, 50, &[Valid, Valid], Some(Ready));
        check(Pending, 50, &[Valid, Invalid], Some(Invalid));
        check(Pending, 50, &[Deactivated], Some(Invalid));
        check(Pending, 101, &[Valid], Some(Invalid));
        check(Ready, 101, &[], Some(Invalid));
        check(Ready, 50, &[], None);
        // Processing is left to the issuance, expiry or not, until it is
        // abandoned.
        check(Processing, 101, &[], None);
        check(Processing, 50 + PROCESSING_STALE_SECONDS, &[], None);
        check(
            Processing,
            51 + PROCESSING_STALE_SECONDS,
            &[],
            Some(Invalid),
        );
        check(Valid, 101, &[], None);
        check(Invalid, 50, &[], None);
    }

    #[test]
    fn a_failure_of_certds_own_or_a_rate_limit_leaves_the_order_ready() {
        let after = |kind| status_after_failure(&Problem::new(kind, "x"));
        assert_eq!(after(ProblemType::RateLimited), Status::Ready);
        assert_eq!(after(ProblemType::ServerInternal), Status::Ready);
        assert_eq!(after(ProblemType::BadCsr), Status::Invalid);
        assert_eq!(after(ProblemType::Unauthorized), Status::Invalid);
        assert_eq!(after(ProblemType::RejectedIdentifier), Status::Invalid);
    }

    fn identifiers(values: &[(&str, &str)]) -> Vec<Identifier> {
        values
            .iter()
            .map(|(kind, value)| Identifier {
                kind: (*kind).to_owned(),
                value: (*value).to_owned(),
            })
            .collect()
    }

    #[test]
    fn identifiers_are_dns_names_kept_lower_case_sorted_and_once() {
        let kept = checked_identifiers(&identifiers(&[
            ("dns", "WWW.example.test"),
            ("dns", "api.example.test"),
            ("dns", "www.example.test"),
        ]))
        .unwrap();
        assert_eq!(kept, ["api.example.test", "www.example.test"]);
        let refused =
            |values: &[(&str, &str)]| checked_identifiers(&identifiers(values)).unwrap_err().kind;
        assert_eq!(refused(&[]), ProblemType::Malformed);
        assert_eq!(
            refused(&[("ip", "127.0.0.1")]),
            ProblemType::UnsupportedIdentifier
        );
        assert_eq!(
            refused(&[("dns", "not a name")]),
            ProblemType::RejectedIdentifier
        );
    }

    /// A CSR for the account's own key is refused; another key passes.
    #[test]
    fn a_csr_may_not_use_the_account_key() {
        let jwk_of = |key: &rcgen::KeyPair| {
            let point = key.public_key_raw();
            let b64 = |bytes: &[u8]| super::super::jws::b64(bytes);
            super::super::jws::Jwk::from_value(&json!({
                "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }))
            .unwrap()
        };
        let csr_of = |key: &rcgen::KeyPair| {
            rcgen::CertificateParams::new(vec!["a.example.test".to_owned()])
                .unwrap()
                .serialize_request(key)
                .unwrap()
                .der()
                .to_vec()
        };
        let account = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let refused = check_csr_key(&csr_of(&account), &jwk_of(&account)).unwrap_err();
        assert_eq!(refused.kind, ProblemType::BadCsr);
        assert!(check_csr_key(&csr_of(&other), &jwk_of(&account)).is_ok());
    }

    #[test]
    fn a_csr_must_name_exactly_the_orders_identifiers() {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = |cn: Option<&str>, names: &[&str]| {
            let mut params = rcgen::CertificateParams::new(
                names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
            )
            .unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            if let Some(cn) = cn {
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, cn);
            }
            params.serialize_request(&key).unwrap().der().to_vec()
        };
        let ordered = ["a.example.test".to_owned(), "b.example.test".to_owned()];
        assert!(
            check_csr_names(&csr(None, &["b.example.test", "A.example.test"]), &ordered).is_ok()
        );
        assert!(
            check_csr_names(
                &csr(
                    Some("a.example.test"),
                    &["a.example.test", "b.example.test"]
                ),
                &ordered
            )
            .is_ok()
        );
        for (cn, names) in [
            (None, &["a.example.test"][..]),
            (
                None,
                &["a.example.test", "b.example.test", "c.example.test"][..],
            ),
            (Some("other"), &["a.example.test", "b.example.test"][..]),
        ] {
            let problem = check_csr_names(&csr(cn, names), &ordered).unwrap_err();
            assert_eq!(problem.kind, ProblemType::BadCsr, "{cn:?} {names:?}");
        }
        assert_eq!(
            check_csr_names(b"not a CSR", &ordered).unwrap_err().kind,
            ProblemType::BadCsr
        );
    }
}
