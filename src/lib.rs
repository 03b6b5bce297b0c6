//! certd: an internal certificate authority daemon.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and how a request flows
//! through them.

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod attest;
pub mod audit;
pub mod authority;
pub mod ca;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod daemon;
mod data_dir;
mod error;
mod error_kind;
pub mod fsutil;
pub mod identity;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod registry;
pub mod revocation;
pub mod selector;
mod server;
pub mod store;

pub use data_dir::DataDir;
pub use error::{Error, Result};
pub use error_kind::ErrorKind;
