//! The domain model: what certd decides about and keeps, in types that
//! are valid by construction.
//!
//! Names (`ServiceName`, `TrustDomain`, `Serial`, `WorkloadIdentity`) live
//! in `identity`, selectors in `selector`; this module holds the
//! records built from them: issuance records, revocations, join tokens,
//! registration entries and audit entries. They carry no serde derives:
//! how a backend encodes them is that backend's private business (the sled
//! codec in `store::codec`), so no on-disk format leaks into the
//! domain and no domain change silently changes a format.

mod federation;
mod listing;
mod records;

pub use federation::{EndpointProfile, FederationRecord, ForeignBundle};
pub use listing::{
    CertificateCursor, CertificatePage, CertificateQuery, ExpiryRange, ListingOrder, PageTokenError,
};

pub use records::{
    Attestation, AuditEntry, AuditEvent, CertificateState, DelegationRecord, EntryRecord,
    GrantCaller, GrantRecord, IssuanceRecord, JoinTokenRecord, PolicyRecord, Proof, Revocation,
    RevokeOutcome, RevokedEntry, SignedCrl, Successor, TokenHash, kind,
};
