//! What the ACME server keeps, in the store's generic ACME object table:
//! accounts (and an index by key thumbprint), orders, authorizations, EAB
//! keys and each entry's ACME policy, each a JSON document under a key
//! whose first part names its kind. The store compares and keeps the bytes;
//! their format is this module's, and only grows fields with defaults.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::challenge::ChallengeType;
use super::jws::Jwk;
use super::problem::{Problem, ProblemDocument};
use crate::store::{AcmeObject, Storage};

/// `account/<id>`
pub fn account_key(id: &str) -> String {
    format!("account/{id}")
}
/// `account-key/<thumbprint>` → the account id holding that key.
pub fn account_by_key(thumbprint: &str) -> String {
    format!("account-key/{thumbprint}")
}
/// `order/<account>/<order>`
pub fn order_key(account: &str, order: &str) -> String {
    format!("order/{account}/{order}")
}
/// `authz/<account>/<authz>`
pub fn authz_key(account: &str, authz: &str) -> String {
    format!("authz/{account}/{authz}")
}
/// `eab/<key id>`
pub fn eab_key(key_id: &str) -> String {
    format!("eab/{key_id}")
}
/// `policy/<entry id>`
pub fn policy_key(entry: &str) -> String {
    format!("policy/{entry}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Valid,
    Deactivated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub key: Jwk,
    pub contact: Vec<String>,
    pub status: AccountStatus,
    /// The registration entry an EAB bound it to; `None` for an account
    /// made without one (`accounts_without_eab`).
    pub entry: Option<String>,
    pub eab_key_id: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
    Deactivated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ready => "ready",
            Status::Processing => "processing",
            Status::Valid => "valid",
            Status::Invalid => "invalid",
            Status::Deactivated => "deactivated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: String,
    pub account: String,
    /// The entry it issues as.
    pub entry: String,
    pub status: Status,
    pub expires_at: i64,
    /// DNS names, lower case, sorted, without duplicates.
    pub identifiers: Vec<String>,
    pub authorizations: Vec<String>,
    pub error: Option<ProblemDocument>,
    /// The serial (hex) of the certificate issued for it.
    pub certificate: Option<String>,
    /// The ARI certID of the certificate it replaces (RFC 9773).
    pub replaces: Option<String>,
    pub created_at: i64,
    /// When finalization moved it to processing (absent in records made
    /// before certd kept it): a processing order older than
    /// `PROCESSING_STALE_SECONDS` was abandoned (the replica issuing it
    /// stopped) and turns invalid.
    #[serde(default)]
    pub processing_since: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRecord {
    pub id: String,
    pub account: String,
    pub identifier: String,
    pub status: Status,
    pub expires_at: i64,
    pub challenges: Vec<ChallengeRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// `http-01`, `tls-alpn-01`, `dns-01`.
    pub kind: String,
    pub token: String,
    pub status: Status,
    pub validated_at: Option<i64>,
    pub error: Option<ProblemDocument>,
    /// When its validation (last) started, while it is `processing`: a
    /// validation that has taken far longer than it can was cut short (the
    /// replica that ran it stopped) and is run again. Absent in records
    /// written before certd kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_since: Option<i64>,
}

impl ChallengeRecord {
    pub fn kind(&self) -> Option<ChallengeType> {
        ChallengeType::parse(&self.kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EabRecord {
    pub key_id: String,
    pub entry: String,
    pub expires_at: i64,
    pub used: bool,
    pub created_by: String,
}

/// An entry's ACME policy (`certd acme policy set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPolicy {
    /// The challenge types offered, by name.
    pub challenges: Vec<String>,
    /// An EAB-bound account of this entry gets its authorizations valid at
    /// once.
    pub without_challenges: bool,
}

impl Default for EntryPolicy {
    fn default() -> Self {
        EntryPolicy {
            challenges: ChallengeType::ALL
                .iter()
                .map(|kind| kind.as_str().to_owned())
                .collect(),
            without_challenges: false,
        }
    }
}

/// A record read from the store, with the bytes it was read as, so that
/// replacing it is a compare-and-swap against exactly what was read.
#[derive(Debug, Clone)]
pub struct Stored<T> {
    pub value: T,
    raw: AcmeObject,
}

/// Reads the record under `key`.
pub async fn load<T: DeserializeOwned>(
    store: &dyn Storage,
    key: &str,
) -> Result<Option<Stored<T>>, Problem> {
    let Some(raw) = store.acme_object(key).await? else {
        return Ok(None);
    };
    let value = serde_json::from_slice(&raw.data)
        .map_err(|error| Problem::internal(&format!("ACME record {key}: {error}")))?;
    Ok(Some(Stored { value, raw }))
}

/// Every record whose key starts with `prefix`, in key order.
pub async fn list<T: DeserializeOwned>(
    store: &dyn Storage,
    prefix: &str,
) -> Result<Vec<Stored<T>>, Problem> {
    store
        .acme_objects(prefix)
        .await?
        .into_iter()
        .map(|(key, raw)| {
            let value = serde_json::from_slice(&raw.data)
                .map_err(|error| Problem::internal(&format!("ACME record {key}: {error}")))?;
            Ok(Stored { value, raw })
        })
        .collect()
}

/// At most `limit` records whose key starts with `prefix`, after the key
/// `after` (from the first when `None`), in key order, with their keys.
pub async fn page<T: DeserializeOwned>(
    store: &dyn Storage,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Stored<T>)>, Problem> {
    store
        .acme_objects_page(prefix, after, limit)
        .await?
        .into_iter()
        .map(|(key, raw)| {
            let value = serde_json::from_slice(&raw.data)
                .map_err(|error| Problem::internal(&format!("ACME record {key}: {error}")))?;
            Ok((key, Stored { value, raw }))
        })
        .collect()
}

/// Stores a new record; `false` if the key is taken.
pub async fn create<T: Serialize>(
    store: &dyn Storage,
    key: &str,
    value: &T,
    expires_at: Option<i64>,
) -> Result<bool, Problem> {
    let object = object_of(value, expires_at)?;
    Ok(store.swap_acme_object(key, None, Some(&object)).await?)
}

/// Replaces `current` with `value`; `false` if it changed since it was read.
pub async fn replace<T: Serialize>(
    store: &dyn Storage,
    key: &str,
    current: &Stored<T>,
    value: &T,
    expires_at: Option<i64>,
) -> Result<bool, Problem> {
    let object = object_of(value, expires_at)?;
    Ok(store
        .swap_acme_object(key, Some(&current.raw), Some(&object))
        .await?)
}

/// Removes `current`; `false` if it changed since it was read.
pub async fn remove<T>(
    store: &dyn Storage,
    key: &str,
    current: &Stored<T>,
) -> Result<bool, Problem> {
    Ok(store
        .swap_acme_object(key, Some(&current.raw), None)
        .await?)
}

impl<T> Stored<T> {
    /// When the store may forget it, as it was stored.
    pub fn expires_at(&self) -> Option<i64> {
        self.raw.expires_at
    }
}

fn object_of<T: Serialize>(value: &T, expires_at: Option<i64>) -> Result<AcmeObject, Problem> {
    Ok(AcmeObject {
        expires_at,
        data: serde_json::to_vec(value).map_err(|error| Problem::internal(&error))?,
    })
}
