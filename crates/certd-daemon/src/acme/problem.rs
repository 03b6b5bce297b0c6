//! ACME problem documents (RFC 8555 §6.7, RFC 7807): every refusal of the
//! ACME server is one [`Problem`], whose [`ProblemType`] says what kind of
//! refusal it is. `api::acme` turns it into an `application/problem+json`
//! answer; nothing else picks a status code.

use serde::{Deserialize, Serialize};

/// The ACME error types certd answers with (`urn:ietf:params:acme:error:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemType {
    BadNonce,
    Malformed,
    Unauthorized,
    AccountDoesNotExist,
    ExternalAccountRequired,
    RejectedIdentifier,
    UnsupportedIdentifier,
    BadSignatureAlgorithm,
    BadPublicKey,
    BadCsr,
    OrderNotReady,
    BadRevocationReason,
    AlreadyRevoked,
    Connection,
    Dns,
    Tls,
    IncorrectResponse,
    RateLimited,
    ServerInternal,
    UnsupportedContact,
    InvalidContact,
    /// RFC 9773 §5: another order replaces that certificate already.
    AlreadyReplaced,
}

impl ProblemType {
    pub const ALL: [ProblemType; 22] = [
        Self::BadNonce,
        Self::Malformed,
        Self::Unauthorized,
        Self::AccountDoesNotExist,
        Self::ExternalAccountRequired,
        Self::RejectedIdentifier,
        Self::UnsupportedIdentifier,
        Self::BadSignatureAlgorithm,
        Self::BadPublicKey,
        Self::BadCsr,
        Self::OrderNotReady,
        Self::BadRevocationReason,
        Self::AlreadyRevoked,
        Self::Connection,
        Self::Dns,
        Self::Tls,
        Self::IncorrectResponse,
        Self::RateLimited,
        Self::ServerInternal,
        Self::UnsupportedContact,
        Self::InvalidContact,
        Self::AlreadyReplaced,
    ];

    /// The last part of the URN (`badNonce`); also the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadNonce => "badNonce",
            Self::Malformed => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::AccountDoesNotExist => "accountDoesNotExist",
            Self::ExternalAccountRequired => "externalAccountRequired",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::UnsupportedIdentifier => "unsupportedIdentifier",
            Self::BadSignatureAlgorithm => "badSignatureAlgorithm",
            Self::BadPublicKey => "badPublicKey",
            Self::BadCsr => "badCSR",
            Self::OrderNotReady => "orderNotReady",
            Self::BadRevocationReason => "badRevocationReason",
            Self::AlreadyRevoked => "alreadyRevoked",
            Self::Connection => "connection",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::IncorrectResponse => "incorrectResponse",
            Self::RateLimited => "rateLimited",
            Self::ServerInternal => "serverInternal",
            Self::UnsupportedContact => "unsupportedContact",
            Self::InvalidContact => "invalidContact",
            Self::AlreadyReplaced => "alreadyReplaced",
        }
    }

    /// The full type URN.
    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.name())
    }

    /// The last part of a URN certd wrote, back (challenge errors the
    /// validators classify).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The HTTP status of a refusal of this type.
    pub fn status(self) -> u16 {
        match self {
            Self::Unauthorized | Self::OrderNotReady => 403,
            Self::RateLimited => 429,
            Self::AlreadyReplaced => 409,
            Self::ServerInternal => 500,
            _ => 400,
        }
    }
}

/// One refusal: its type and a sentence for the operator of the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Problem {
    pub kind: ProblemType,
    pub detail: String,
    /// The HTTP status, when it differs from the type's (413 for an
    /// oversized request, 404 for an unknown resource).
    pub status: Option<u16>,
    /// `Location` of the answer (the account that holds a key already).
    pub location: Option<String>,
    /// `Retry-After`, seconds (a rate limit's wait).
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            status: None,
            location: None,
            retry_after: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// A resource that does not exist (or is not the caller's, which is
    /// answered the same, so no account learns of another's).
    pub fn not_found(what: &str) -> Self {
        Problem {
            status: Some(404),
            ..Self::malformed(format!("no such {what}"))
        }
    }

    /// A failure of certd's own; the cause goes to the log, not the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "ACME request failed");
        Self::new(
            ProblemType::ServerInternal,
            "certd could not answer; the cause is in its log",
        )
    }

    pub fn with_status(self, status: u16) -> Self {
        Problem {
            status: Some(status),
            ..self
        }
    }

    pub fn with_location(self, location: String) -> Self {
        Problem {
            location: Some(location),
            ..self
        }
    }

    /// A refusal by a rate limit, to be retried after `wait`.
    pub fn rate_limited(detail: impl Into<String>, wait: std::time::Duration) -> Self {
        Problem {
            // Whole seconds, never 0: a client told 0 would retry at once.
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..Self::new(ProblemType::RateLimited, detail)
        }
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.kind.status())
    }

    /// The stored and served form (`error` of a challenge or an order).
    pub fn document(&self) -> ProblemDocument {
        ProblemDocument {
            kind: self.kind.urn(),
            detail: self.detail.clone(),
            status: self.status(),
            // RFC 8555 §6.2: the algorithms the server takes.
            algorithms: (self.kind == ProblemType::BadSignatureAlgorithm).then(|| {
                super::jws::ACCOUNT_KEY_ALGORITHMS
                    .iter()
                    .map(|alg| (*alg).to_owned())
                    .collect()
            }),
        }
    }
}

/// The JSON of a problem (RFC 7807).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDocument {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
    pub status: u16,
    /// With `badSignatureAlgorithm`: the `alg` values certd accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
}

impl From<crate::store::StoreError> for Problem {
    fn from(error: crate::store::StoreError) -> Self {
        Problem::internal(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_from_its_name() {
        for kind in ProblemType::ALL {
            assert_eq!(ProblemType::from_name(kind.name()), Some(kind));
            assert!(kind.urn().starts_with("urn:ietf:params:acme:error:"));
        }
    }

    #[test]
    fn statuses_follow_the_rfc_examples() {
        assert_eq!(Problem::unauthorized("x").status(), 403);
        assert_eq!(Problem::malformed("x").status(), 400);
        assert_eq!(Problem::not_found("order").status(), 404);
        assert_eq!(Problem::malformed("x").with_status(413).status(), 413);
        assert_eq!(Problem::new(ProblemType::ServerInternal, "x").status(), 500);
    }
}
