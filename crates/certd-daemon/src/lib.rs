//! certd: an internal certificate authority daemon.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and how a request flows
//! through them.

#![forbid(unsafe_code)]

pub mod acme;
pub mod agent;
pub mod api;
pub mod attest;
pub mod audit;
pub mod authority;
pub mod config;
pub mod daemon;
mod error;
pub mod federation;
mod https_get;
pub mod jwks;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod pace;
pub mod policy;
pub mod registry;
pub mod retention;
pub mod revocation;
mod server;
pub mod subject_issuers;

// A test identity provider (keys, JWKS, tokens, an HTTPS JWKS server): the
// same file the integration tests use, for the Kubernetes attestor's and
// the subject issuers' unit tests.
#[cfg(test)]
#[path = "../../../tests/common/k8s_issuer.rs"]
mod k8s_issuer;

// The bottom layer, its own crate (crates/certd-core), under the paths the
// rest of certd has always named it by.
pub use certd_core::{
    DataDir, ErrorKind, clock, crypto, data_dir, error_kind, fsutil, identity, model, selector,
};
pub use error::{Error, Result};
// Storage, its own crate (crates/certd-store): the records and the backends.
pub use certd_store as store;
// The CA, its own crate (crates/certd-ca): keys, profiles, signing, rotation.
pub use certd_ca as ca;
