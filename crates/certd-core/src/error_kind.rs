//! The one classification every error reports (`ErrorKind`), and how an
//! error reads on one line with its causes. It sits below every module:
//! module errors classify themselves here, and `error::Error` gathers them
//! above. It names no module.

/// What kind of failure an error is, whoever reports it: the one
/// classification behind gRPC status codes, exit codes and the client's
/// reading of a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request, a name, a CSR or a setting is not valid.
    InvalidInput,
    /// The caller has not proven an identity.
    Unauthenticated,
    /// The caller's identity may not have what it asked for.
    PermissionDenied,
    /// What the caller named does not exist.
    NotFound,
    /// What was to be created exists already.
    AlreadyExists,
    /// A rate or concurrency limit refused the request for now.
    Exhausted,
    /// certd (or its store) cannot do it now; retrying later may succeed.
    Unavailable,
    /// The CA is not in a state to do it (its intermediate expired).
    FailedPrecondition,
    /// A fault inside certd; details are in its log.
    Internal,
    /// The client could not verify that it reached certd: the server's
    /// certificate is not trusted by the bundle given, or the address does
    /// not speak TLS. Only clients report it; retrying will not help.
    Untrusted,
}

impl ErrorKind {
    /// A stable snake_case name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Exhausted => "exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::Internal => "internal",
            ErrorKind::Untrusted => "untrusted",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid argument",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Exhausted => "resource exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Internal => "error",
            ErrorKind::Untrusted => "not verified",
        })
    }
}

/// An error and its chain of causes on one line, for the log.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
