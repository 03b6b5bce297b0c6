//! The wire: gRPC (tonic) services, the plain HTTP endpoints, TLS, and the
//! gRPC clients the CLI uses.
//!
//! `api` is the only module that knows tonic and prost. Handlers are thin:
//! decode the wire message, call the `Authority`, encode the answer, and map
//! errors to a `Status` in exactly one place (`status`). It never signs or
//! writes the store itself.

pub mod admin;
pub mod client;
pub mod http;
pub mod tls;
pub mod workload;

use tonic::{Code, Status};

use crate::Error;
use crate::policy::PolicyError;
use crate::store::StoreError;

/// Generated protobuf and gRPC code for `proto/certd/v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("certd.v1");
}

/// Largest gRPC message certd accepts. A CSR may be 16 KiB; the margin lets
/// an oversized CSR reach the CSR check and get a precise error.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The one mapping from certd's errors to gRPC status codes. Internal
/// failures get a generic message; their details go to the log only.
pub fn status(error: &Error) -> Status {
    let code = match error {
        Error::Csr(_) | Error::Name(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::Policy(PolicyError::TtlTooLong { .. }) => Code::InvalidArgument,
        Error::Attest(_) => Code::Unauthenticated,
        Error::Policy(_) => Code::PermissionDenied,
        Error::NotFound(_) => Code::NotFound,
        Error::Store(StoreError::Durability(_) | StoreError::Locked(_)) => Code::Unavailable,
        Error::Ca(crate::ca::CaError::IntermediateExpired { .. }) => Code::FailedPrecondition,
        Error::Store(_) | Error::Ca(_) | Error::Config(_) => Code::Internal,
    };
    if code == Code::Internal || code == Code::Unavailable {
        tracing::error!(error = %error, "request failed");
        let message = if code == Code::Unavailable {
            "certd cannot store the result right now; retry later"
        } else {
            "internal error; see the certd log"
        };
        return Status::new(code, message);
    }
    Status::new(code, error.to_string())
}
