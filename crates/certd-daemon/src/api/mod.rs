//! The wire: gRPC (tonic) services, the plain HTTP endpoints, the OAuth
//! token endpoint, TLS, and the gRPC clients the CLI uses.
//!
//! `api` is the only module that knows tonic and prost. Handlers are thin:
//! decode the wire message, call the `Authority`, encode the answer, and map
//! errors to a `Status` in exactly one place (`status`). It never signs or
//! writes the store itself.

pub mod acme;
pub mod admin;
mod admin_acme;
pub mod bundle_endpoint;
pub mod client;
pub mod codec;
pub mod connections;
mod convert;
pub(crate) mod grpc_metrics;
pub mod http;
pub mod oauth;
pub mod tls;
pub mod workload;

use tonic::{Code, Status};

use crate::error_kind::with_causes;
use crate::{Error, ErrorKind};

/// Generated protobuf and gRPC code for `proto/certd/v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("certd.v1");
}

/// The gRPC status code of each kind of error.
pub(crate) fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidInput => Code::InvalidArgument,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Internal => Code::Internal,
        // Never a server's answer: a client's own conclusion.
        ErrorKind::Untrusted => Code::Unauthenticated,
    }
}

/// The reverse of `code_of`, for clients reading a status: the code alone
/// decides, never the message.
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        // tonic answers OUT_OF_RANGE for a message over the size cap.
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidInput,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::ResourceExhausted => ErrorKind::Exhausted,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    }
}

/// The one mapping from certd's errors to gRPC statuses. Internal
/// failures get a generic message; their details go to the log only.
pub fn status(error: &Error) -> Status {
    let kind = error.kind();
    let code = code_of(kind);
    if matches!(kind, ErrorKind::Internal | ErrorKind::Unavailable) {
        tracing::error!(error = %with_causes(error), "request failed");
        let message = if kind == ErrorKind::Unavailable {
            "certd cannot store the result right now; retry later"
        } else {
            "internal error; see the certd log"
        };
        return Status::new(code, message);
    }
    // The caller's to read, with the causes a typed error carries.
    let mut status = Status::new(code, with_causes(error));
    if let Error::Limit(limit) = error
        && let Ok(value) = limit.retry_after().as_millis().to_string().parse()
    {
        // The retry hint, machine-readable; the message says it in words.
        status.metadata_mut().insert(RETRY_AFTER_MS, value);
    }
    status
}

/// Metadata key of the retry hint on `RESOURCE_EXHAUSTED`.
pub(crate) const RETRY_AFTER_MS: &str = "retry-after-ms";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limits::LimitError;
    use crate::store::StoreError;

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
    fn every_kind_survives_the_round_trip_through_a_status_code() {
        use ErrorKind::*;
        for kind in [
            InvalidInput,
            Unauthenticated,
            PermissionDenied,
            NotFound,
            AlreadyExists,
            Exhausted,
            Unavailable,
            FailedPrecondition,
            Internal,
        ] {
            assert_eq!(kind_of(code_of(kind)), kind);
        }
    }

    /// A refusal the caller may read carries the causes of a typed error
    /// (its `#[source]` chain), once each.
    #[test]
    fn a_refusal_names_its_causes() {
        let error = Error::Config(crate::config::ConfigError::Read {
            path: "policy.toml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
        let status = status(&error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "cannot read policy.toml: no such file");
    }

    #[test]
    fn internal_errors_keep_their_details_off_the_wire() {
        let status = status(&Error::Store(StoreError::Corrupt("secret detail".into())));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret detail"));
    }
}
