//! certd's cryptography choice in one place: the rustls crypto provider
//! (*ring*) that its TLS endpoints use, whether certd serves (`api::tls`)
//! or connects (the PostgreSQL store, the Kubernetes JWKS fetch); the gRPC
//! clients get *ring* through tonic's `tls-ring` feature. Nothing else
//! lives here.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider certd uses everywhere (*ring*).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
