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
use crate::registry::RegistryError;
use crate::store::StoreError;

/// Generated protobuf and gRPC code for `proto/certd/v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("certd.v1");
}

/// The one mapping from certd's errors to gRPC status codes. Internal
/// failures get a generic message; their details go to the log only.
pub fn status(error: &Error) -> Status {
    let code = match error {
        Error::Csr(_) | Error::Name(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::Policy(PolicyError::TtlTooLong { .. }) => Code::InvalidArgument,
        Error::Attest(_) => Code::Unauthenticated,
        Error::Policy(_) => Code::PermissionDenied,
        Error::Registry(RegistryError::InvalidEntry(_) | RegistryError::NotATokenEntry { .. }) => {
            Code::InvalidArgument
        }
        Error::Registry(RegistryError::DuplicateSelectors { .. }) => Code::AlreadyExists,
        Error::Registry(
            RegistryError::NoMatchingEntry { .. }
            | RegistryError::AmbiguousEntries { .. }
            | RegistryError::EntryDeleted { .. },
        ) => Code::PermissionDenied,
        Error::NotFound(_) => Code::NotFound,
        Error::Limit(_) => Code::ResourceExhausted,
        Error::Store(StoreError::Durability(_) | StoreError::Locked(_)) => Code::Unavailable,
        Error::Ca(crate::ca::CaError::IntermediateExpired { .. }) => Code::FailedPrecondition,
        Error::Store(_) | Error::Ca(_) | Error::Config(_) => Code::Internal,
    };
    if code == Code::Internal || code == Code::Unavailable {
        tracing::error!(error = %with_causes(error), "request failed");
        let message = if code == Code::Unavailable {
            "certd cannot store the result right now; retry later"
        } else {
            "internal error; see the certd log"
        };
        return Status::new(code, message);
    }
    let mut status = Status::new(code, error.to_string());
    if let Error::Limit(limit) = error
        && let Ok(value) = limit.retry_after().as_millis().to_string().parse()
    {
        // The retry hint, machine-readable; the message says it in words.
        status.metadata_mut().insert(RETRY_AFTER_MS, value);
    }
    status
}

/// An error and its chain of causes on one line, for the log.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Metadata key of the retry hint on `RESOURCE_EXHAUSTED`.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limits::LimitError;

    #[test]
    fn limits_map_to_resource_exhausted_with_a_retry_hint() {
        let error = Error::Limit(LimitError::GlobalRate {
            retry_after: Duration::from_millis(250),
        });
        let status = status(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get(RETRY_AFTER_MS).unwrap(), "250");
        assert!(status.message().contains("retry after 250 ms"));
    }

    #[test]
    fn internal_errors_keep_their_details_off_the_wire() {
        let status = status(&Error::Store(StoreError::Corrupt("secret detail".into())));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret detail"));
    }
}
