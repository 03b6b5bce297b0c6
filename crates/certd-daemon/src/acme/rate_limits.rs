//! ACME's own rate limits, like Let's Encrypt's (Boulder): new accounts
//! per source address and new orders per account, refused with
//! `rateLimited` (HTTP 429) and a `Retry-After`. They keep one client
//! from filling the store with accounts and orders; issuance itself is
//! limited further by `[limits]`, as every issuance is.
//!
//! Each replica counts what it serves (the buckets are in memory, like
//! `[limits]`'); behind a load balancer the source address is the
//! balancer's unless it passes the connection through.

use std::net::IpAddr;
use std::time::Instant;

use super::AcmeSettings;
use super::problem::Problem;
use crate::limits::{KeyedRate, Rate};

#[derive(Debug)]
pub struct AcmeLimits {
    accounts_per_ip: KeyedRate<IpAddr>,
    orders_per_account: KeyedRate<String>,
}

impl AcmeLimits {
    pub fn new(settings: &AcmeSettings) -> Self {
        AcmeLimits {
            accounts_per_ip: KeyedRate::new(Rate::per_minute(
                settings.new_accounts_per_minute_per_ip,
            )),
            orders_per_account: KeyedRate::new(Rate::per_minute(
                settings.new_orders_per_minute_per_account,
            )),
        }
    }

    /// Counts a new account from `peer` (not counted when unknown: only a
    /// connection without an address, which the TLS listener never has).
    pub fn new_account(&self, peer: Option<IpAddr>) -> Result<(), Problem> {
        let Some(peer) = peer else {
            return Ok(());
        };
        self.accounts_per_ip
            .take(&peer, Instant::now())
            .map_err(|wait| {
                Problem::rate_limited(
                    format!(
                        "too many new accounts from {peer}; retry after {} s ([acme] new_accounts_per_minute_per_ip)",
                        wait.as_secs_f64().ceil()
                    ),
                    wait,
                )
            })
    }

    /// Counts a new order of `account`.
    pub fn new_order(&self, account: &str) -> Result<(), Problem> {
        self.orders_per_account
            .take(&account.to_owned(), Instant::now())
            .map_err(|wait| {
                Problem::rate_limited(
                    format!(
                        "too many new orders for account {account}; retry after {} s ([acme] new_orders_per_minute_per_account)",
                        wait.as_secs_f64().ceil()
                    ),
                    wait,
                )
            })
    }
}
