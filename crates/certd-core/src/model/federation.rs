//! Federation relationships: another trust domain whose bundle certd
//! fetches from its bundle endpoint, and the last good bundle it got.

use crate::identity::{SpiffeId, TrustDomain};

/// How certd authenticates a foreign bundle endpoint (the SPIFFE
/// Federation standard's endpoint profiles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
    /// `https_web`: the server's certificate is checked as a browser would,
    /// against Web PKI roots, or against `ca_pem` when the operator gave
    /// the CA that issued it.
    HttpsWeb { ca_pem: Option<String> },
    /// `https_spiffe`: the server presents an X509-SVID of the foreign
    /// trust domain with `endpoint_id`, checked against the bundle certd
    /// already holds for that domain (so each new bundle is authenticated
    /// by the previous one).
    HttpsSpiffe { endpoint_id: SpiffeId },
}

impl EndpointProfile {
    /// The profile's name in the standard (`https_web`, `https_spiffe`).
    pub fn name(&self) -> &'static str {
        match self {
            EndpointProfile::HttpsWeb { .. } => "https_web",
            EndpointProfile::HttpsSpiffe { .. } => "https_spiffe",
        }
    }
}

/// A foreign trust domain's bundle as certd last accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignBundle {
    /// Its `spiffe_sequence` (0 when it carried none).
    pub sequence: u64,
    /// Its `spiffe_refresh_hint` in seconds, if it carried one.
    pub refresh_hint: Option<u64>,
    /// The document as served (a JWKS), kept whole so that what certd
    /// hands its workloads is exactly what the peer published.
    pub json: String,
    /// When certd accepted it (Unix seconds).
    pub accepted_at: i64,
}

/// One federation relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRecord {
    pub trust_domain: TrustDomain,
    /// The `https://` URL of the foreign bundle endpoint.
    pub bundle_endpoint_url: String,
    pub profile: EndpointProfile,
    pub created_at: i64,
    /// Who added it (an operator, or `local admin socket`).
    pub created_by: String,
    /// The last good bundle; `None` until the first fetch succeeds (an
    /// `https_spiffe` relationship starts with the bundle the operator gave).
    pub bundle: Option<ForeignBundle>,
}
