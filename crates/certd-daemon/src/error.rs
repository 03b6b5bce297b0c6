//! The crate's error and its one classification.
//!
//! `Error` has one variant per module error, so callers can match on the
//! kind of failure. Every error reports an [`ErrorKind`] exactly once (each
//! module error classifies its own variants in a `kind` method); the gRPC
//! status (`api::status`), the CLI's exit code (`cli::exit_code`) and the
//! client's reading of a status (`api::client`) are each a mapping of that
//! kind, never of message text.

use crate::attest::{AttestError, AttestFailure};
use crate::ca::CaError;
use crate::ca::csr::CsrError;
use crate::config::ConfigError;
use crate::error_kind::ErrorKind;
use crate::identity::NameError;
use crate::limits::LimitError;
use crate::policy::PolicyError;
use crate::registry::RegistryError;
use crate::revocation::RevocationError;
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
    /// A listing's page token is not one certd handed out.
    #[error(transparent)]
    PageToken(#[from] crate::model::PageTokenError),
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
    /// A CRL could not be built, published or read.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// A replica package could not be made or used.
    #[error(transparent)]
    Replica(#[from] crate::ca::replica::ReplicaError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Jwt(#[from] crate::jwt::JwtError),
    #[error(transparent)]
    JwtKeyFile(#[from] crate::jwt::KeyFileError),
    /// A token policy file is not valid.
    #[error(transparent)]
    PolicyFile(#[from] crate::policy::grants::PolicyFileError),
    /// The token policy changed since the caller read it.
    #[error(transparent)]
    PolicyConflict(#[from] crate::policy::grants::PolicyConflict),
    /// A federation relationship or a foreign bundle was refused.
    #[error(transparent)]
    Federation(#[from] crate::federation::FederationError),
    /// An operator's ACME request (`certd acme …`) was refused.
    #[error(transparent)]
    Acme(#[from] crate::acme::admin::AcmeAdminError),
}

impl From<AttestFailure> for Error {
    fn from(failure: AttestFailure) -> Self {
        match failure {
            AttestFailure::Refused(error) => Error::Attest(error),
            AttestFailure::Store(error) => Error::Store(error),
        }
    }
}

impl Error {
    /// This error's one classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Csr(_) | Error::Name(_) | Error::InvalidArgument(_) | Error::PageToken(_) => {
                ErrorKind::InvalidInput
            }
            Error::Attest(error) => error.kind(),
            Error::Acme(error) => error.kind(),
            Error::Policy(error) => error.kind(),
            Error::Registry(error) => error.kind(),
            Error::Limit(_) => ErrorKind::Exhausted,
            Error::PolicyFile(error) => error.kind(),
            Error::PolicyConflict(error) => error.kind(),
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Store(error) => error.kind(),
            Error::Ca(error) => error.kind(),
            Error::Revocation(error) => error.kind(),
            Error::Replica(error) => error.kind(),
            Error::Config(_) => ErrorKind::InvalidInput,
            Error::Jwt(error) => error.kind(),
            Error::JwtKeyFile(_) => ErrorKind::Internal,
            Error::Federation(error) => error.kind(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
