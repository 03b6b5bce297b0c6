//! What `certd bench` may do to the store of the daemon it loads: the check
//! before a run (a store that holds anything but bench's own things is
//! refused unless `--allow-store-in-use`), the ledger of what the run
//! creates, and the cleanup after it.
//!
//! Cleanup deactivates the ACME accounts the run made, revokes its unused
//! join tokens, deletes the entries it created and removes the
//! token-policy rules it added. The certificate
//! records stay: certd never deletes a record (they are its history), and
//! revoking them would only grow the CRL; their keys lived only in the
//! bench's memory.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use certd::api::client::{AdminClient, ClientError};
use certd::authority::TokensToRevoke;

use super::BenchError;
use super::{BENCH_AGENT, BENCH_DELEGATION, BENCH_JWT_SERVICE, BENCH_SELF_GRANT, BENCH_SERVICE};

/// The services bench registers entries for; certificates and entries of
/// these are its own.
const BENCH_SERVICES: [&str; 3] = [BENCH_SERVICE, BENCH_JWT_SERVICE, BENCH_AGENT];
/// The token-policy rules bench adds (`token-exchange`).
const BENCH_RULES: [&str; 2] = [BENCH_SELF_GRANT, BENCH_DELEGATION];
/// How many of the newest certificate records the check reads: a bound, so
/// that a store of millions of records is never scanned.
const CERTIFICATES_CHECKED: u32 = 1000;
/// Token ids per revocation request: 54 KB, under the 64 KiB the daemon
/// takes in one request.
const REVOKE_BATCH: usize = 3_000;
/// Names listed per kind of thing found, in the refusal.
const NAMES_SHOWN: usize = 5;
/// Tries of the policy change, which fails if another change came first.
const POLICY_TRIES: u32 = 3;

/// What the store held before the run, and so what cleanup may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUse {
    /// Nothing but bench's own things (a fresh data directory, or one only
    /// bench has loaded): cleanup removes every bench entry, unused bench
    /// token and bench policy rule, this run's and any an interrupted run
    /// left behind.
    BenchOnly,
    /// Someone else's things too, loaded anyway (`--allow-store-in-use`):
    /// cleanup removes exactly what this run created, so an operator's
    /// entry that happens to be named `certd-bench` stays.
    Shared,
}

/// Reads the store through the admin socket: its entries, its newest
/// certificate records and its token policy. `Ok(BenchOnly)` if they are
/// all bench's (or certd's own serving certificates); otherwise a refusal
/// naming what was found, unless `allow_in_use`.
pub async fn check_store(
    admin: &mut AdminClient,
    allow_in_use: bool,
) -> Result<StoreUse, BenchError> {
    let found = foreign_things(admin).await?;
    if found.is_empty() {
        Ok(StoreUse::BenchOnly)
    } else if allow_in_use {
        Ok(StoreUse::Shared)
    } else {
        Err(BenchError::StoreInUse(found.join("; ")))
    }
}

/// What in the store is not bench's, one phrase per kind.
async fn foreign_things(admin: &mut AdminClient) -> Result<Vec<String>, BenchError> {
    let is_bench = |service: &str| BENCH_SERVICES.contains(&service);
    let mut found = Vec::new();
    let entries: BTreeSet<String> = admin
        .entries(None)
        .await?
        .into_iter()
        .filter(|entry| !is_bench(&entry.service))
        .map(|entry| entry.service)
        .collect();
    if !entries.is_empty() {
        found.push(format!("entries of {}", names(entries)));
    }
    // certd's serving certificates are in every store, bench's or not.
    let certificates: BTreeSet<String> = admin
        .list(None, CERTIFICATES_CHECKED)
        .await?
        .into_iter()
        .filter(|record| !is_bench(&record.service) && record.attestation != "serving-certificate")
        .map(|record| record.service)
        .collect();
    if !certificates.is_empty() {
        found.push(format!("certificates of {}", names(certificates)));
    }
    let (_, policy) = admin.policy().await?;
    let rules: BTreeSet<String> = certd::policy::grants::rule_names(&policy)
        .map_err(|e| BenchError::Prepare(format!("reading the token policy: {e}")))?
        .into_iter()
        .filter(|name| !BENCH_RULES.contains(&name.as_str()))
        .collect();
    if !rules.is_empty() {
        found.push(format!("token-policy rules {}", names(rules)));
    }
    Ok(found)
}

/// `a, b, c`, or `a, b, c, d, e, 3 more`.
fn names(all: BTreeSet<String>) -> String {
    let count = all.len();
    let mut shown: Vec<String> = all.into_iter().take(NAMES_SHOWN).collect();
    if count > NAMES_SHOWN {
        shown.push(format!("{} more", count - NAMES_SHOWN));
    }
    shown.join(", ")
}

/// What a run created, as it creates it, so that cleanup (after success,
/// failure or Ctrl-C) touches only that in a shared store.
#[derive(Debug)]
pub struct Ledger {
    store_use: StoreUse,
    created: Mutex<Created>,
    certificates: AtomicU64,
}

#[derive(Debug, Default)]
struct Created {
    /// Entry ids, in creation order.
    entries: Vec<String>,
    /// Ids of join tokens (as `certd token list` shows them); kept only in
    /// a shared store, where tokens are revoked by id.
    tokens: BTreeSet<String>,
    /// Policy rules this run added (absent before it).
    rules: Vec<&'static str>,
    /// ACME accounts this run made (`acme`), by id.
    acme_accounts: Vec<String>,
}

impl Ledger {
    pub fn new(store_use: StoreUse) -> Self {
        Ledger {
            store_use,
            created: Mutex::default(),
            certificates: AtomicU64::new(0),
        }
    }

    pub fn entry_created(&self, id: &str) {
        self.created().entries.push(id.to_owned());
    }

    /// Remembers join tokens by id (never their secrets) in a shared store;
    /// in a bench-only one, cleanup revokes every bench token anyway.
    pub fn tokens_created(&self, secrets: &[String]) {
        if self.store_use == StoreUse::BenchOnly {
            return;
        }
        let ids: Vec<String> = secrets
            .iter()
            // A token the daemon just made always parses; one that did not
            // could not be revoked by id either.
            .filter_map(|secret| certd::attest::JoinToken::from_presented(secret).ok())
            .map(|token| token.id())
            .collect();
        self.created().tokens.extend(ids);
    }

    pub fn rule_added(&self, name: &'static str) {
        self.created().rules.push(name);
    }

    pub fn acme_account_created(&self, id: &str) {
        self.created().acme_accounts.push(id.to_owned());
    }

    pub fn certificate_issued(&self) {
        self.certificates.fetch_add(1, Ordering::Relaxed);
    }

    fn created(&self) -> MutexGuard<'_, Created> {
        // The ledger only grows; what a panicking writer left is still true.
        self.created.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What cleanup removed, and the records it kept: the one line `certd
/// bench` ends with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cleaned {
    pub tokens: usize,
    pub entries: usize,
    pub rules: usize,
    /// ACME accounts deactivated (their orders and authorizations expire
    /// with them; certd purges them).
    pub acme_accounts: usize,
    pub certificates: u64,
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cleaned up: revoked {}, deleted {}, removed {}{}; kept the records of the {} issued (the retention purge deletes them once expired; revoking them would only grow the CRL), whose keys lived only in this process and are gone",
            quantity(
                self.tokens as u64,
                "unused join token",
                "unused join tokens"
            ),
            quantity(self.entries as u64, "entry", "entries"),
            quantity(self.rules as u64, "token-policy rule", "token-policy rules"),
            if self.acme_accounts == 0 {
                String::new()
            } else {
                format!(
                    ", deactivated {}",
                    quantity(self.acme_accounts as u64, "ACME account", "ACME accounts")
                )
            },
            quantity(self.certificates, "certificate", "certificates"),
        )
    }
}

fn quantity(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Removes what the run left in the store: deactivates its ACME accounts,
/// revokes its unused join tokens (a token outlives its entry, keyed by
/// the selectors), deletes its entries, then removes its policy rules.
pub async fn clean_up(admin_socket: &Path, ledger: &Ledger) -> Result<Cleaned, BenchError> {
    let mut admin = AdminClient::connect(admin_socket).await?;
    let (entries, tokens, rules, acme_accounts) = {
        let created = ledger.created();
        (
            created.entries.clone(),
            created.tokens.clone(),
            created.rules.clone(),
            created.acme_accounts.clone(),
        )
    };
    let mut cleaned = Cleaned {
        certificates: ledger.certificates.load(Ordering::Relaxed),
        ..Cleaned::default()
    };
    // Before its entry goes: an account bound to a deleted entry can do
    // nothing, but would still be listed as valid.
    for id in &acme_accounts {
        admin.deactivate_acme_account(id).await?;
        cleaned.acme_accounts += 1;
    }
    match ledger.store_use {
        StoreUse::BenchOnly => {
            let mut leftover: Vec<_> = admin
                .entries(None)
                .await?
                .into_iter()
                .filter(|entry| BENCH_SERVICES.contains(&entry.service.as_str()))
                .collect();
            let services: BTreeSet<String> = leftover.iter().map(|e| e.service.clone()).collect();
            for service in services {
                cleaned.tokens += admin
                    .revoke_join_tokens(&TokensToRevoke::Service(service))
                    .await?
                    .len();
            }
            // Workloads before the agents they are parented to.
            leftover.sort_by_key(|entry| entry.agent);
            for entry in leftover {
                delete_entry(&mut admin, &entry.id, &mut cleaned).await?;
            }
            cleaned.rules = remove_rules(&mut admin, &BENCH_RULES).await?;
        }
        StoreUse::Shared => {
            cleaned.tokens = revoke_tokens(&mut admin, &entries, &tokens).await?;
            for id in entries.iter().rev() {
                delete_entry(&mut admin, id, &mut cleaned).await?;
            }
            cleaned.rules = remove_rules(&mut admin, &rules).await?;
        }
    }
    Ok(cleaned)
}

async fn delete_entry(
    admin: &mut AdminClient,
    id: &str,
    cleaned: &mut Cleaned,
) -> Result<(), BenchError> {
    match admin.delete_entry(id).await {
        Ok(_) => cleaned.entries += 1,
        // Someone deleted it already: what cleanup wanted.
        Err(error) if error.kind() == certd::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// Revokes this run's unused tokens in a shared store. A bench service all
/// of whose entries this run created has no tokens but bench's: they go in
/// one request. Otherwise those of `ids` still unused (the others were used,
/// or expired) are revoked by id, in batches; each batch costs the daemon a
/// pass over every unused token, and it refuses one naming a token that is
/// not unused.
async fn revoke_tokens(
    admin: &mut AdminClient,
    created_entries: &[String],
    ids: &BTreeSet<String>,
) -> Result<usize, BenchError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let entries = admin.entries(None).await?;
    let mut revoked = 0;
    for service in BENCH_SERVICES {
        let of_service: Vec<_> = entries.iter().filter(|e| e.service == service).collect();
        // No entry, no token of the service: tokens are the entry's.
        if of_service.is_empty() {
            continue;
        }
        if of_service
            .iter()
            .all(|entry| created_entries.contains(&entry.id))
        {
            revoked += admin
                .revoke_join_tokens(&TokensToRevoke::Service(service.to_owned()))
                .await?
                .len();
            continue;
        }
        let unused: Vec<String> = admin
            .join_tokens(Some(service))
            .await?
            .into_iter()
            .map(|token| token.id)
            .filter(|id| ids.contains(id))
            .collect();
        for batch in unused.chunks(REVOKE_BATCH) {
            revoked += admin
                .revoke_join_tokens(&TokensToRevoke::Ids(batch.to_vec()))
                .await?
                .len();
        }
    }
    Ok(revoked)
}

/// Removes the rules `names` from the token policy, if it holds them;
/// returns how many it removed. Retried when another change came first.
async fn remove_rules(admin: &mut AdminClient, names: &[&str]) -> Result<usize, BenchError> {
    if names.is_empty() {
        return Ok(0);
    }
    let mut tries = 0;
    loop {
        let (version, mut text) = admin.policy().await?;
        let mut removed = 0;
        for name in names {
            if let Some(without) = certd::policy::grants::remove_grant(&text, name)
                .map_err(|e| BenchError::Prepare(format!("reading the token policy: {e}")))?
            {
                text = without;
                removed += 1;
            }
        }
        if removed == 0 {
            return Ok(0);
        }
        tries += 1;
        match admin.replace_policy(text, Some(version)).await {
            Ok(_) => return Ok(removed),
            Err(error) if tries < POLICY_TRIES && is_conflict(&error) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

fn is_conflict(error: &ClientError) -> bool {
    error.kind() == certd::ErrorKind::FailedPrecondition
}
