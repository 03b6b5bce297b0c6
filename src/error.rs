//! The crate's error: one variant per module error, so callers can match on
//! the kind of failure. `api` maps it to gRPC status codes and `cli` to exit
//! codes, each in one place.

use crate::attest::AttestError;
use crate::ca::CaError;
use crate::ca::csr::CsrError;
use crate::config::ConfigError;
use crate::identity::NameError;
use crate::limits::LimitError;
use crate::policy::PolicyError;
use crate::registry::RegistryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CSR is malformed or its key is not acceptable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// A name or serial given by the caller is not valid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Another argument given by the caller is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller has not proven an identity.
    #[error(transparent)]
    Attest(#[from] AttestError),
    /// The caller's identity may not have what it asked for.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A registration entry is invalid, or no single entry matched.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A rate or concurrency limit refused the request for now.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// What the caller named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
