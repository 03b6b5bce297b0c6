//! ACME (RFC 8555): ACME clients (certbot, lego, Caddy, cert-manager) get
//! certd's certificates for the DNS names of the registration entry their
//! account is bound to.
//!
//! `challenge` proves control of a name (http-01, tls-alpn-01, dns-01) by
//! connecting to it; it knows nothing of accounts, orders or the store.

pub mod challenge;
