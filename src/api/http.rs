//! Plain HTTP, for what is public or signed: `/healthz` now; the CRL and
//! OCSP responder live here too.

use axum::Router;
use axum::routing::get;

/// The HTTP routes.
pub fn router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok\n"
}
