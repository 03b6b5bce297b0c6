//! Which order replaces a certificate (ARI `replaces`, RFC 9773 §5): a
//! claim, `replaced-by/<account>/<certID>` → the order's id, made by
//! compare-and-swap before the order is written. Of two newOrders replacing
//! one certificate, on any replicas, one claim wins; and the check reads one
//! claim and one order instead of every order the account made.
//!
//! A claim stands while its order is live (not invalid), or, if the order
//! is missing, for `CLAIM_GRACE_SECONDS` (the time an order takes to be
//! written after its claim); otherwise it is stale and the next order
//! takes it over. A claim is kept until a day after the replaced
//! certificate expires. An account whose orders predate the claims gets
//! them once, at its first order that replaces something
//! (`replaced-indexed/<account>` records that it did).

use serde::{Deserialize, Serialize};

use super::problem::{Problem, ProblemType};
use super::records::{self, OrderRecord, Status};
use super::server::SWAP_ATTEMPTS;
use crate::store::Storage;

/// How long a claim may go without its order before it counts as the trace
/// of a newOrder cut short rather than one still being written.
const CLAIM_GRACE_SECONDS: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    /// The id of the order that replaces the certificate.
    order: String,
    created_at: i64,
}

fn claim_key(account: &str, cert_id: &str) -> String {
    format!("replaced-by/{account}/{cert_id}")
}

fn indexed_key(account: &str) -> String {
    format!("replaced-indexed/{account}")
}

/// Claims certificate `cert_id` of `account` for order `order` (not yet
/// written), kept until `keep_until`; `alreadyReplaced` naming the order if
/// a live order replaces it already.
pub async fn claim(
    store: &dyn Storage,
    account: &str,
    cert_id: &str,
    order: &str,
    now: i64,
    keep_until: i64,
) -> Result<(), Problem> {
    index_once(store, account).await?;
    let key = claim_key(account, cert_id);
    let claim = Claim {
        order: order.to_owned(),
        created_at: now,
    };
    for _ in 0..SWAP_ATTEMPTS {
        let current = records::load::<Claim>(store, &key).await?;
        if let Some(current) = &current {
            let other = &current.value.order;
            let order =
                records::load::<OrderRecord>(store, &records::order_key(account, other)).await?;
            let stands = match order {
                Some(order) => order.value.status != Status::Invalid,
                None => current.value.created_at > now - CLAIM_GRACE_SECONDS,
            };
            if stands {
                return Err(Problem::new(
                    ProblemType::AlreadyReplaced,
                    format!("order {other} replaces {cert_id} already"),
                ));
            }
        }
        let claimed = match &current {
            None => records::create(store, &key, &claim, Some(keep_until)).await?,
            Some(stale) => records::replace(store, &key, stale, &claim, Some(keep_until)).await?,
        };
        if claimed {
            return Ok(());
        }
    }
    Err(Problem::internal(
        &"the claim on a replaced certificate kept changing",
    ))
}

/// Gives the live orders that replace something, made before the claims,
/// their claims, once: the one time the account's order history is read
/// for it.
async fn index_once(store: &dyn Storage, account: &str) -> Result<(), Problem> {
    let flag = indexed_key(account);
    if records::load::<bool>(store, &flag).await?.is_some() {
        return Ok(());
    }
    let orders: Vec<records::Stored<OrderRecord>> =
        records::list(store, &format!("order/{account}/")).await?;
    for order in &orders {
        let (Some(cert_id), false) = (&order.value.replaces, order.value.status == Status::Invalid)
        else {
            continue;
        };
        let claim = Claim {
            order: order.value.id.clone(),
            created_at: order.value.created_at,
        };
        // Kept as long as the order is: what the full read used to see.
        records::create(
            store,
            &claim_key(account, cert_id),
            &claim,
            order.expires_at(),
        )
        .await?;
    }
    records::create(store, &flag, &true, None).await?;
    Ok(())
}
