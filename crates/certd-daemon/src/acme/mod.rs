//! ACME (RFC 8555): ACME clients (certbot, lego, Caddy, cert-manager) get
//! certd's certificates for the DNS names of the registration entry their
//! account is bound to.
//!
//! - `challenge` proves control of a name (http-01, tls-alpn-01, dns-01) by
//!   connecting to it; it knows nothing of accounts, orders or the store.
//! - `jws` reads and verifies requests (RFC 7515, 7638); `nonce` makes and
//!   checks replay nonces; `eab` derives and checks external account
//!   binding keys; `ari` names certificates and suggests renewal windows
//!   (RFC 9773); `problem` is every refusal.
//! - `records` is what is kept (accounts, orders, authorizations, EAB keys,
//!   entry policies) in the store's ACME object table.
//! - `server` is the protocol: each resource's decision, given a verified
//!   request; `admin` is what operators do (`certd acme …`).
//!
//! `api::acme` is the HTTP front door; it alone knows axum.

mod accounts;
pub mod admin;
pub mod ari;
mod authorizations;
pub mod challenge;
pub mod eab;
pub mod jws;
pub mod nonce;
mod open_orders;
mod orders;
pub mod problem;
pub mod rate_limits;
pub mod records;
mod replacements;
mod revocation;
pub mod server;
mod views;

use std::net::{IpAddr, SocketAddr};

pub use problem::{Problem, ProblemType};
pub use server::AcmeServer;

/// New accounts one source address may make a minute (`[acme]
/// new_accounts_per_minute_per_ip`), on each replica.
pub const DEFAULT_NEW_ACCOUNTS_PER_MINUTE_PER_IP: u32 = 10;
/// New orders one account may make a minute (`[acme]
/// new_orders_per_minute_per_account`), on each replica.
pub const DEFAULT_NEW_ORDERS_PER_MINUTE_PER_ACCOUNT: u32 = 300;

/// The label nonce keys are derived from the CA's master secret under.
pub const NONCE_SECRET_LABEL: &str = "certd acme nonce";

/// `[acme]` of certd.toml, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// Whether the `/acme/` routes are served.
    pub enabled: bool,
    /// Whether accounts may be made without EAB (they then order names of
    /// any entry, always proving control by a challenge).
    pub accounts_without_eab: bool,
    /// `[acme.testing]`: test-only overrides of where challenges connect.
    pub testing: Option<AcmeTesting>,
    /// New accounts a source address may make a minute; 0: no limit.
    pub new_accounts_per_minute_per_ip: u32,
    /// New orders an account may make a minute; 0: no limit.
    pub new_orders_per_minute_per_account: u32,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        AcmeSettings {
            enabled: true,
            accounts_without_eab: false,
            testing: None,
            new_accounts_per_minute_per_ip: DEFAULT_NEW_ACCOUNTS_PER_MINUTE_PER_IP,
            new_orders_per_minute_per_account: DEFAULT_NEW_ORDERS_PER_MINUTE_PER_ACCOUNT,
        }
    }
}

/// `[acme.testing]`: like Pebble's, for tests only; certd warns at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcmeTesting {
    pub http_port: Option<u16>,
    pub tls_alpn_port: Option<u16>,
    pub resolve_all_to: Option<IpAddr>,
    pub dns_server: Option<SocketAddr>,
}

impl AcmeSettings {
    /// How the validators reach the names they check.
    pub fn validation(&self) -> challenge::ValidationSettings {
        let mut settings = challenge::ValidationSettings::default();
        if let Some(testing) = &self.testing {
            if let Some(port) = testing.http_port {
                settings.http_port = port;
            }
            if let Some(port) = testing.tls_alpn_port {
                settings.tls_alpn_port = port;
            }
            settings.resolve_all_to = testing.resolve_all_to;
            settings.dns_servers = testing.dns_server.into_iter().collect();
        }
        settings
    }
}
