//! Plain HTTP, for what is public or signed: `/healthz` (liveness),
//! `/readyz` (readiness), the current intermediate's CRL (`/crl`,
//! `/crl.pem`) and each intermediate's by key id (`/crl/{key-id}`, where
//! leaves' CRL distribution point names it; or, with `crl_shards`, one
//! shard of it, `/crl/{key-id}/shards/{count}/{index}`), the OCSP responder (`POST /ocsp`, `GET /ocsp/{request}`),
//! `/metrics` (Prometheus), the issuer's metadata (`/.well-known/openid-configuration`,
//! `/.well-known/oauth-authorization-server`), and the keys verifiers need: `/jwks.json` (JWT-SVID keys) and the SPIFFE
//! trust bundle (`/bundle.spiffe`, `/.well-known/spiffe-bundle`). For relying parties that
//! check whole chains: the trust bundle (`/bundle.pem`), the CA certificates (`/intermediate.pem`,
//! and DER at `/intermediate.cer`, `/intermediate/{key-id}.cer` and `/root.cer`, where
//! certificates' CA Issuers URLs point),
//! the root's CRL (`/root.crl`) and every CRL a whole-chain checker needs (`/crls.pem`).
//!
//! Nothing here trusts the client: connections are capped and closed when
//! idle (`connections`), headers must arrive within the header-read
//! timeout, bodies are size-capped before they are read, and OCSP failures
//! are OCSP error responses, never a 500.

use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use tokio::net::TcpListener;

use super::connections::Admission;

use crate::authority::Authority;
use crate::revocation::ocsp::MAX_OCSP_REQUEST_LEN;
use crate::revocation::{OcspAnswer, PublishedCrl};

const CRL_DER: &str = "application/pkix-crl";
const OCSP_RESPONSE: &str = "application/ocsp-response";

/// Serves `router` on `listener` (HTTP/1.1) until `stopped` completes, then
/// lets open requests finish. Each connection must be let in by
/// `admission`, and a request whose headers take longer than
/// `header_read_timeout` is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    admission: Admission,
    header_read_timeout: Duration,
    stopped: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => break,
            accepted = super::connections::accept(&listener) => accepted,
        };
        let Some(tcp) = admission.admit(tcp, peer) else {
            continue;
        };
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, error = %crate::error_kind::with_causes(&error), "HTTP connection ended");
            }
        });
    }
    graceful.shutdown().await;
}

/// The HTTP routes.
pub(crate) fn router(authority: Authority) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/crl", get(crl_der))
        .route("/crl.pem", get(crl_pem))
        .route("/crl/{key_id}", get(crl_of))
        .route("/crl/{key_id}/shards/{count}/{file}", get(crl_shard))
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .route("/metrics", get(metrics))
        .route("/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        // RFC 8414: the same metadata, where OAuth clients look.
        .route(
            "/.well-known/oauth-authorization-server",
            get(openid_configuration),
        )
        .route("/bundle.spiffe", get(spiffe_bundle))
        .route("/bundle.pem", get(bundle_pem))
        .route("/intermediate.pem", get(intermediate_pem))
        .route("/intermediate.cer", get(intermediate_der))
        .route("/intermediate/{file}", get(intermediate_by_key_id))
        .route("/root.cer", get(root_der))
        .route("/root/{file}", get(root_by_key_id))
        .route("/root.crl", get(root_crl))
        .route("/crls.pem", get(crls_pem))
        .route("/.well-known/spiffe-bundle", get(spiffe_bundle))
        .layer(DefaultBodyLimit::max(MAX_OCSP_REQUEST_LEN))
        .with_state(authority)
}

/// Prometheus metrics. State gauges are read now. OpenMetrics text, unless
/// the client asks for the older Prometheus text format (`Accept:
/// text/plain` without OpenMetrics, as promtool and Prometheus before 2.5
/// read it).
async fn metrics(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    authority.update_metrics().await;
    let metrics = crate::metrics::get();
    let (content_type, text) = if wants_prometheus_text(&headers) {
        (
            crate::metrics::PROMETHEUS_TEXT,
            metrics.encode_prometheus_text(),
        )
    } else {
        (crate::metrics::OPENMETRICS_TEXT, metrics.encode())
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// Whether `Accept` names the Prometheus text format and not OpenMetrics.
fn wants_prometheus_text(headers: &HeaderMap) -> bool {
    let accepted = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|media| media.split(';').next().unwrap_or_default().trim())
        .collect::<Vec<_>>();
    accepted.contains(&"text/plain") && !accepted.contains(&"application/openmetrics-text")
}

/// The JWT-SVID keys as a JWKS.
async fn jwks(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    let body = serde_json::to_vec(&authority.jwt_key_set()).unwrap_or_default();
    cacheable(&headers, body, 60, JSON)
}

/// OpenID Connect discovery: the issuer and where its keys are, so that JWT
/// middleware pointed at the issuer (`{issuer}/.well-known/openid-configuration`)
/// verifies certd's tokens.
async fn openid_configuration(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    let body = serde_json::to_vec(&authority.openid_configuration()).unwrap_or_default();
    cacheable(&headers, body, 300, JSON)
}

/// The trust bundle, as `ca-data/bundle.pem` holds it.
async fn bundle_pem(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    let body = authority.ca().trust_bundle_pem().into_bytes();
    cacheable(&headers, body, 300, PEM)
}

/// The intermediates, PEM: the current one, then the previous one while
/// certificates it signed live (what `-untrusted` or a chain file takes).
async fn intermediate_pem(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    let body: String = authority
        .ca()
        .signers()
        .all()
        .map(|signer| signer.pem())
        .collect();
    cacheable(&headers, body.into_bytes(), 300, PEM)
}

/// The current intermediate, DER.
async fn intermediate_der(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    let body = authority.ca().intermediate_der().to_vec();
    cacheable(&headers, body, 300, CERTIFICATE_DER)
}

/// One intermediate by key id, DER (`/intermediate/{key-id}.cer`): where
/// leaves' AIA CA Issuers URL points (RFC 5280 asks for a single DER
/// certificate there), valid across rotations.
async fn intermediate_by_key_id(
    State(authority): State<Authority>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let signers = authority.ca().signers();
    let signer = key_id_of_cer(&file).and_then(|key_id| signers.by_key_id(&key_id));
    match signer {
        Some(signer) => cacheable(&headers, signer.der().to_vec(), 300, CERTIFICATE_DER),
        None => no_such_intermediate(),
    }
}

/// The key id a `{key-id}.cer` file name names.
fn key_id_of_cer(file: &str) -> Option<Vec<u8>> {
    hex::decode(file.strip_suffix(".cer")?).ok()
}

fn no_such_intermediate() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no intermediate in use has this key id\n",
    )
        .into_response()
}

/// The root, DER: where the intermediate's AIA CA Issuers URL points.
async fn root_der(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    let body = authority.ca().root_der().to_vec();
    cacheable(&headers, body, 300, CERTIFICATE_DER)
}

/// A root of the trust bundle by key id, DER (`/root/{key-id}.cer`): where
/// the AIA CA Issuers URL of intermediates made by rotation points.
async fn root_by_key_id(
    State(authority): State<Authority>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let bundle = authority.ca().trust_bundle();
    let root = key_id_of_cer(&file).and_then(|key_id| {
        bundle
            .roots_der
            .iter()
            .find(|root| crate::ca::subject_key_id(root).as_deref() == Some(&key_id[..]))
    });
    match root {
        Some(root) => cacheable(&headers, root.clone(), 300, CERTIFICATE_DER),
        None => (
            StatusCode::NOT_FOUND,
            "no root in the bundle has this key id\n",
        )
            .into_response(),
    }
}

/// The root's CRL, DER, as the intermediate's CRL distribution point names
/// it.
async fn root_crl(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    match authority.ca().root_crl() {
        Some(crl) => cacheable(&headers, crl.der.clone(), 300, CRL_DER),
        None => no_root_crl(),
    }
}

/// Every CRL a whole-chain checker needs, PEM, concatenated: the root's
/// (covering the intermediates; and the next root's while one is prepared)
/// and each intermediate's (covering leaves).
/// What nginx `ssl_crl`, HAProxy `crl-file` and `openssl verify
/// -crl_check_all -CRLfile` take. With `crl_shards` it still carries the
/// whole CRLs, not the shards: a CRL without an Issuing Distribution Point
/// covers every leaf, whatever shard it names (and leaves from before the
/// switch name the whole CRL), while the shards would list every entry a
/// second time.
async fn crls_pem(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    let roots = authority.ca().root_crls();
    if roots.is_empty() {
        return no_root_crl();
    }
    let intermediate = match current_crl(&authority).await {
        Ok(crl) => crl,
        Err(unavailable) => return unavailable,
    };
    let mut body: String = roots
        .iter()
        .map(|root| crate::ca::pem_encode("X509 CRL", &root.der))
        .collect();
    body.push_str(&intermediate.all_pem());
    // Cached no longer than the intermediate's CRL is fresh.
    let max_age = (intermediate.next_update - authority.now()).clamp(0, 300);
    cacheable(&headers, body.into_bytes(), max_age as u64, PEM)
}

/// The intermediate's current CRL, or the 503 to answer when none can be
/// published now.
async fn current_crl(authority: &Authority) -> Result<std::sync::Arc<PublishedCrl>, Response> {
    authority
        .revocations()
        .current_crl()
        .await
        .map_err(|error| {
            tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot publish a CRL");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "CRL temporarily unavailable\n",
            )
                .into_response()
        })
}

fn no_root_crl() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "no root CRL: run `certd ca sign-root-crl` where the root key is, and put root.crl in the data directory\n",
    )
        .into_response()
}

/// The SPIFFE bundle endpoint's routes, which the TLS listener serves too:
/// there, certd's serving certificate (an X509-SVID with
/// `spiffe://<trust-domain>/certd/server`) makes it an `https_spiffe`
/// endpoint, and an `https_web` one for peers that trust its CA.
pub(crate) fn bundle_endpoint_router(authority: Authority) -> Router {
    Router::new()
        .route("/bundle.spiffe", get(spiffe_bundle))
        .route("/.well-known/spiffe-bundle", get(spiffe_bundle))
        .with_state(authority)
}

/// The SPIFFE trust bundle (roots and JWT keys), for verifiers and for
/// other trust domains' federation.
pub(crate) async fn spiffe_bundle(
    State(authority): State<Authority>,
    headers: HeaderMap,
) -> Response {
    let bundle = match authority.spiffe_bundle().await {
        Ok(bundle) => bundle,
        Err(error) => {
            tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot serve the SPIFFE bundle");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the bundle's sequence cannot be read from the database now; try again\n",
            )
                .into_response();
        }
    };
    let max_age = bundle["spiffe_refresh_hint"].as_u64().unwrap_or(60);
    let body = serde_json::to_vec(&bundle).unwrap_or_default();
    cacheable(&headers, body, max_age, JSON)
}

const JSON: &str = "application/json";
const PEM: &str = "application/x-pem-file";
const CERTIFICATE_DER: &str = "application/pkix-cert";

/// A public answer with a strong ETag (its SHA-256): `304 Not Modified`
/// when the client already holds it.
fn cacheable(
    request: &HeaderMap,
    body: Vec<u8>,
    max_age: u64,
    content_type: &'static str,
) -> Response {
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let etag = format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    );
    let cache_control = format!("public, max-age={max_age}");
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let headers = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, cache_control),
        (header::CONTENT_TYPE, content_type.to_owned()),
    ];
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, body).into_response()
}

/// Liveness: the process answers. It stays ok through a storage fault,
/// because certd recovers from one by itself and a restart would not help.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: whether certd can issue now (`Authority::readiness`). 503
/// with the reason while it cannot, so load balancers send workloads
/// elsewhere.
/// Readiness, then one line per federation relationship: a foreign
/// bundle endpoint that is down does not make certd unready (it issues as
/// before, keeping the bundle it holds), but says so here.
async fn readyz(State(authority): State<Authority>) -> Response {
    let (status, mut body) = match authority.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    };
    if status == StatusCode::OK {
        for relationship in authority.federation_health() {
            body.push_str(&relationship.line());
            body.push('\n');
        }
    }
    (status, body).into_response()
}

async fn crl_der(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    crl_response(&authority, &headers, CRL_DER, |crl| Some(crl.der.clone())).await
}

async fn crl_pem(State(authority): State<Authority>, headers: HeaderMap) -> Response {
    crl_response(&authority, &headers, PEM, |crl| {
        Some(crl.pem.clone().into_bytes())
    })
    .await
}

/// The CRL of one CA by its key id, DER: an intermediate in use (where
/// leaves' CRL distribution point points) or a root (where rotated
/// intermediates' points).
async fn crl_of(
    State(authority): State<Authority>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(key_id) = hex::decode(&key_id).ok() else {
        return no_such_intermediate();
    };
    let root_crl = authority
        .ca()
        .root_crls()
        .into_iter()
        .find(|root| crate::ca::crl::signer_key_id(&root.der).as_deref() == Some(&key_id[..]));
    if let Some(root_crl) = root_crl {
        return cacheable(&headers, root_crl.der.clone(), 300, CRL_DER);
    }
    crl_response(&authority, &headers, CRL_DER, |crl| {
        crl.signed_by(&key_id).map(|(der, _)| der.to_vec())
    })
    .await
}

/// One shard of an intermediate's CRL (`revocation.crl_shards`), where
/// leaves' CRL distribution point names it: `{index}` (DER) or
/// `{index}.pem`. Served for the shard count in use and the retired ones;
/// 404 for any other, or an index past the count.
async fn crl_shard(
    State(authority): State<Authority>,
    Path((key_id, count, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (index, content_type) = match file.strip_suffix(".pem") {
        Some(index) => (index, PEM),
        None => (file.as_str(), CRL_DER),
    };
    let (Ok(key_id), Ok(count), Ok(index)) = (
        hex::decode(&key_id),
        count.parse::<u16>(),
        index.parse::<u16>(),
    ) else {
        return no_such_shard();
    };
    let response = crl_response(&authority, &headers, content_type, |crl| {
        let der = crl.shard(&key_id, count, index)?;
        Some(if content_type == PEM {
            crate::ca::pem_encode("X509 CRL", der).into_bytes()
        } else {
            der.to_vec()
        })
    })
    .await;
    if response.status() == StatusCode::NOT_FOUND {
        return no_such_shard();
    }
    response
}

fn no_such_shard() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such CRL shard: the intermediate's key id, a shard count in use or retired (revocation.crl_shards, crl_retired_shards) and an index below it\n",
    )
        .into_response()
}

async fn crl_response(
    authority: &Authority,
    headers: &HeaderMap,
    content_type: &'static str,
    body: impl Fn(&PublishedCrl) -> Option<Vec<u8>>,
) -> Response {
    let crl = match current_crl(authority).await {
        Ok(crl) => crl,
        Err(unavailable) => return unavailable,
    };
    let Some(body) = body(&crl) else {
        return no_such_intermediate();
    };
    let etag = crl.etag();
    // Cached until certd signs the next one (not until nextUpdate): a
    // cache must not hide the hourly CRL, let alone one after a revocation.
    let replaced_at = authority
        .revocations()
        .crl_refresh_at()
        .map_or(crl.next_update, |at| at.min(crl.next_update));
    // Last-Modified: when it was signed (its thisUpdate is backdated).
    let mut response_headers = caching_headers(crl.signed_at, replaced_at, authority.now());
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    if not_modified {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (StatusCode::OK, response_headers, body).into_response()
}

async fn ocsp_post(State(authority): State<Authority>, body: Bytes) -> Response {
    let answer = authority.revocations().ocsp(&body).await;
    // RFC 5019: responses to POST are not cached by intermediaries.
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    ocsp_response(answer, headers)
}

async fn ocsp_get(State(authority): State<Authority>, Path(encoded): Path<String>) -> Response {
    // Base64 of a request at most MAX_OCSP_REQUEST_LEN long.
    if encoded.len() > MAX_OCSP_REQUEST_LEN * 4 / 3 + 4 {
        return ocsp_response(authority.revocations().ocsp(&[]).await, HeaderMap::new());
    }
    let request = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded.trim()))
        .unwrap_or_default();
    let answer = authority.revocations().ocsp(&request).await;
    let headers = match (answer.this_update, answer.next_update) {
        (Some(this_update), Some(next_update)) => {
            caching_headers(this_update, next_update, authority.now())
        }
        _ => HeaderMap::new(),
    };
    ocsp_response(answer, headers)
}

fn ocsp_response(answer: OcspAnswer, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(OCSP_RESPONSE),
    );
    (StatusCode::OK, headers, answer.der.as_ref().clone()).into_response()
}

/// Last-Modified and a Cache-Control max-age that ends at nextUpdate.
fn caching_headers(modified_at: i64, next_update: i64, now: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let max_age = (next_update - now).max(0);
    if let Ok(value) = HeaderValue::from_str(&format!(
        "public, max-age={max_age}, no-transform, must-revalidate"
    )) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    let last_modified = UNIX_EPOCH + Duration::from_secs(u64::try_from(modified_at).unwrap_or(0));
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(last_modified)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(accept: &[&str], prometheus_text: bool) {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(header::ACCEPT, value.parse().unwrap());
        }
        assert_eq!(
            wants_prometheus_text(&headers),
            prometheus_text,
            "{accept:?}"
        );
    }

    #[test]
    fn metrics_are_openmetrics_unless_only_the_older_text_format_is_asked_for() {
        check(&[], false);
        check(&["*/*"], false);
        check(&["text/plain; version=0.0.4"], true);
        check(&["text/plain;version=0.0.4;q=0.5,*/*;q=0.1"], true);
        check(&["text/html", "text/plain"], true);
        // What Prometheus sends: OpenMetrics first, the text format after.
        check(
            &[
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ],
            false,
        );
    }
}
