//! What operators do with ACME (`certd acme …`, through admin RPCs): make
//! EAB keys for entries, set an entry's ACME policy, list and deactivate
//! accounts, list orders. Each change is audited.

use std::time::Duration;

use super::challenge::ChallengeType;
use super::eab;
use super::jws::b64;
use super::problem::Problem;
use super::records::{self, AccountRecord, AccountStatus, EabRecord, EntryPolicy, OrderRecord};
use crate::authority::{Authority, Caller};
use crate::model::AuditEvent;

/// Why an operator's ACME request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AcmeAdminError {
    #[error("no registration entry {0}")]
    NoEntry(String),
    #[error("no ACME account {0}")]
    NoAccount(String),
    #[error("--ttl must be between 1s and {max}", max = humantime::format_duration(eab::MAX_EAB_TTL))]
    BadTtl,
    #[error("unknown challenge type {0:?}; the types are http-01, tls-alpn-01 and dns-01")]
    BadChallenge(String),
    #[error("give at least one challenge type, or --without-challenges")]
    NoChallenges,
    #[error("{0}")]
    NotForAcme(String),
    #[error(
        "page token {0:?} is not one certd handed out for this listing: pass the next_page_token of the previous page unchanged, with the same --account"
    )]
    BadPageToken(String),
    #[error("{0}")]
    Store(Problem),
}

impl AcmeAdminError {
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            Self::NoEntry(_) | Self::NoAccount(_) => ErrorKind::NotFound,
            Self::BadTtl
            | Self::BadChallenge(_)
            | Self::NoChallenges
            | Self::NotForAcme(_)
            | Self::BadPageToken(_) => ErrorKind::InvalidInput,
            Self::Store(_) => ErrorKind::Internal,
        }
    }
}

impl From<Problem> for AcmeAdminError {
    fn from(problem: Problem) -> Self {
        AcmeAdminError::Store(problem)
    }
}

/// A new EAB key, as `certd acme eab create` prints it. The HMAC key is
/// shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedEab {
    pub key_id: String,
    pub hmac_key: String,
    pub entry: String,
    pub expires_at: i64,
}

/// An account as `certd acme account list` shows it.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub id: String,
    pub status: String,
    pub entry: Option<String>,
    pub contact: Vec<String>,
    pub created_at: i64,
    pub key_thumbprint: String,
}

/// An order as `certd acme order list` shows it.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub id: String,
    pub account: String,
    pub entry: String,
    pub status: String,
    pub identifiers: Vec<String>,
    pub expires_at: i64,
    pub certificate: Option<String>,
    pub created_at: i64,
}

/// `certd acme eab create --entry <id> [--ttl]`
pub async fn create_eab(
    authority: &Authority,
    caller: &Caller,
    entry: &str,
    ttl: Option<Duration>,
) -> Result<CreatedEab, AcmeAdminError> {
    let ttl = ttl.unwrap_or(eab::DEFAULT_EAB_TTL);
    if ttl < Duration::from_secs(1) || ttl > eab::MAX_EAB_TTL {
        return Err(AcmeAdminError::BadTtl);
    }
    let entry_record = authority
        .entry(entry)
        .ok_or_else(|| AcmeAdminError::NoEntry(entry.to_owned()))?;
    // An account bound to an agent's entry would get certificates that act
    // as the agent; one parented to an agent is the agent's to renew.
    authority
        .acme_entry(entry, &[])
        .map_err(|error| AcmeAdminError::NotForAcme(error.to_string()))?;
    let key_id = authority.acme_state().eab.new_key_id();
    let expires_at = authority.now() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let record = EabRecord {
        key_id: key_id.clone(),
        entry: entry.to_owned(),
        expires_at,
        used: false,
        created_by: caller.0.clone(),
    };
    records::create(
        authority.store(),
        &records::eab_key(&key_id),
        &record,
        Some(expires_at),
    )
    .await?;
    authority
        .audit_acme(
            AuditEvent::CreateAcmeEab,
            caller,
            format!("EAB key {key_id} for entry {entry}, until {expires_at}"),
            Some(entry_record.service.to_string()),
        )
        .await;
    let hmac_key = b64(&authority.acme_state().eab.hmac_key(&key_id));
    Ok(CreatedEab {
        key_id,
        hmac_key,
        entry: entry.to_owned(),
        expires_at,
    })
}

/// `certd acme policy set <entry> [--challenges …] [--without-challenges]`
pub async fn set_policy(
    authority: &Authority,
    caller: &Caller,
    entry: &str,
    challenges: &[String],
    without_challenges: bool,
) -> Result<EntryPolicy, AcmeAdminError> {
    let entry_record = authority
        .entry(entry)
        .ok_or_else(|| AcmeAdminError::NoEntry(entry.to_owned()))?;
    let mut kinds = Vec::new();
    for name in challenges {
        let kind =
            ChallengeType::parse(name).ok_or_else(|| AcmeAdminError::BadChallenge(name.clone()))?;
        if !kinds.contains(&kind.as_str().to_owned()) {
            kinds.push(kind.as_str().to_owned());
        }
    }
    let policy = EntryPolicy {
        challenges: if challenges.is_empty() {
            EntryPolicy::default().challenges
        } else {
            kinds
        },
        without_challenges,
    };
    let store = authority.store();
    let key = records::policy_key(entry);
    loop {
        let current = records::load::<EntryPolicy>(store, &key).await?;
        let written = match &current {
            Some(current) => records::replace(store, &key, current, &policy, None).await?,
            None => records::create(store, &key, &policy, None).await?,
        };
        if written {
            break;
        }
    }
    authority
        .audit_acme(
            AuditEvent::SetAcmePolicy,
            caller,
            format!(
                "entry {entry}: challenges {}{}",
                policy.challenges.join(","),
                if without_challenges {
                    ", without challenges for its EAB accounts"
                } else {
                    ""
                }
            ),
            Some(entry_record.service.to_string()),
        )
        .await;
    Ok(policy)
}

/// `certd acme policy show <entry>`
pub async fn policy(authority: &Authority, entry: &str) -> Result<EntryPolicy, AcmeAdminError> {
    if authority.entry(entry).is_none() {
        return Err(AcmeAdminError::NoEntry(entry.to_owned()));
    }
    Ok(super::AcmeServer::new(authority.clone())
        .policy(entry)
        .await?)
}

/// `certd acme account list`
pub async fn accounts(authority: &Authority) -> Result<Vec<AccountView>, AcmeAdminError> {
    let accounts: Vec<records::Stored<AccountRecord>> =
        records::list(authority.store(), "account/").await?;
    Ok(accounts
        .into_iter()
        .map(|stored| {
            let account = stored.value;
            AccountView {
                key_thumbprint: account.key.thumbprint(),
                id: account.id,
                status: match account.status {
                    AccountStatus::Valid => "valid",
                    AccountStatus::Deactivated => "deactivated",
                }
                .to_owned(),
                entry: account.entry,
                contact: account.contact,
                created_at: account.created_at,
            }
        })
        .collect())
}

/// `certd acme account deactivate <id>`: the account can do nothing more
/// (its certificates stay valid until revoked).
pub async fn deactivate_account(
    authority: &Authority,
    caller: &Caller,
    id: &str,
) -> Result<AccountView, AcmeAdminError> {
    let store = authority.store();
    let key = records::account_key(id);
    loop {
        let current = records::load::<AccountRecord>(store, &key)
            .await?
            .ok_or_else(|| AcmeAdminError::NoAccount(id.to_owned()))?;
        let account = AccountRecord {
            status: AccountStatus::Deactivated,
            ..current.value.clone()
        };
        if records::replace(store, &key, &current, &account, None).await? {
            break;
        }
    }
    authority
        .audit_acme(
            AuditEvent::DeactivateAcmeAccount,
            caller,
            format!("account {id} deactivated by an operator"),
            None,
        )
        .await;
    accounts(authority)
        .await?
        .into_iter()
        .find(|account| account.id == id)
        .ok_or_else(|| AcmeAdminError::NoAccount(id.to_owned()))
}

/// One page of `certd acme order list`: the orders, in key order (account,
/// then id), and the token of the next page.
#[derive(Debug, Clone, Default)]
pub struct OrdersPage {
    pub orders: Vec<OrderView>,
    /// `None` when no order is left.
    pub next_page_token: Option<String>,
}

/// `certd acme order list [--account <id>]`: at most `limit` orders after
/// `page_token` (the last key of the page before, as an opaque base64url
/// token), read from there, so a page costs `limit` reads however many
/// orders are kept.
pub async fn orders(
    authority: &Authority,
    account: Option<&str>,
    page_token: Option<&str>,
    limit: usize,
) -> Result<OrdersPage, AcmeAdminError> {
    let prefix = match account {
        Some(account) => format!("order/{account}/"),
        None => "order/".to_owned(),
    };
    let after = page_token
        .map(|token| {
            super::jws::unb64("page token", token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .filter(|key| key.starts_with(&prefix))
                .ok_or_else(|| AcmeAdminError::BadPageToken(token.chars().take(64).collect()))
        })
        .transpose()?;
    // One more than the page, to tell whether another page follows.
    let mut read: Vec<(String, records::Stored<OrderRecord>)> = records::page(
        authority.store(),
        &prefix,
        after.as_deref(),
        limit.saturating_add(1),
    )
    .await?;
    let more = read.len() > limit;
    read.truncate(limit);
    let next_page_token = more
        .then(|| read.last().map(|(key, _)| b64(key.as_bytes())))
        .flatten();
    let orders = read
        .into_iter()
        .map(|(_, stored)| stored)
        .map(|stored| {
            let order = stored.value;
            OrderView {
                id: order.id,
                account: order.account,
                entry: order.entry,
                status: order.status.as_str().to_owned(),
                identifiers: order.identifiers,
                expires_at: order.expires_at,
                certificate: order.certificate,
                created_at: order.created_at,
            }
        })
        .collect();
    Ok(OrdersPage {
        orders,
        next_page_token,
    })
}
