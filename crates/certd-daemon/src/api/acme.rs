//! The ACME front door (RFC 8555) under `/acme/` on the TLS port, beside
//! gRPC and the OAuth endpoints.
//!
//! Owns the wire: the routes, the request size limit (64 KiB, refused with
//! 413 before the body is read further), the `application/jose+json`
//! content type, the headers every answer carries (`Replay-Nonce`,
//! `Link: <directory>;rel="index"`, `Cache-Control: no-store`) and the
//! problem documents (`application/problem+json`). Every decision is
//! `acme::AcmeServer`'s; URLs are built from the Host the client asked for,
//! so the `url` it signs is the one it used.

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::acme::jws::Jws;
use crate::acme::server::{Answer, Body, Signed};
use crate::acme::{AcmeServer, Problem};
use crate::authority::{Authority, Caller};

/// Largest request body accepted; an ACME request (a CSR, a key change) is
/// a few KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The ACME routes, merged into the TLS listener's router. Served only
/// when `[acme] enabled` (the default).
pub(crate) fn router(authority: Authority) -> Router {
    let server = AcmeServer::new(authority);
    if !server.enabled() {
        return Router::new();
    }
    Router::new()
        .route("/acme/directory", get(directory))
        .route("/acme/new-nonce", get(new_nonce).head(new_nonce))
        .route("/acme/new-account", post(new_account))
        .route("/acme/new-order", post(new_order))
        .route("/acme/revoke-cert", post(revoke_cert))
        .route("/acme/key-change", post(key_change))
        .route("/acme/renewal-info/{cert_id}", get(renewal_info))
        .route("/acme/account/{account}", post(account))
        .route("/acme/account/{account}/orders", post(orders))
        .route("/acme/order/{account}/{order}", post(order))
        .route("/acme/order/{account}/{order}/finalize", post(finalize))
        .route("/acme/authz/{account}/{authz}", post(authz))
        .route("/acme/chall/{account}/{authz}/{kind}", post(challenge))
        .route("/acme/cert/{account}/{order}", post(certificate))
        .with_state(server)
}

/// `https://<host>/acme`, from the Host header (HTTP/1.1) or the
/// authority (HTTP/2).
fn base_of(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<String, Problem> {
    let host = uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|host| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .ok_or_else(|| Problem::malformed("the request has no usable Host header"))?;
    Ok(format!("https://{host}/acme"))
}

async fn directory(State(server): State<AcmeServer>, request: Request) -> Response {
    match base_of(request.headers(), request.uri()) {
        Ok(base) => {
            let answer = server.directory(&base);
            respond(&server, &base, Ok(answer))
        }
        Err(problem) => respond(&server, "", Err(problem)),
    }
}

/// HEAD: 200; GET: 204 (RFC 8555 §7.2). Both carry a fresh nonce.
async fn new_nonce(State(server): State<AcmeServer>, request: Request) -> Response {
    let base = base_of(request.headers(), request.uri()).unwrap_or_default();
    let status = if request.method() == Method::HEAD {
        200
    } else {
        204
    };
    respond(
        &server,
        &base,
        Ok(Answer {
            status,
            body: Body::Empty,
            location: None,
            up: None,
            next: None,
            retry_after: None,
        }),
    )
}

async fn renewal_info(
    State(server): State<AcmeServer>,
    Path(cert_id): Path<String>,
    request: Request,
) -> Response {
    let base = base_of(request.headers(), request.uri()).unwrap_or_default();
    let answer = server.renewal_info(&cert_id).await;
    respond(&server, &base, answer)
}

/// Reads a signed request: the size limit, the content type, the JWS.
async fn signed(request: Request) -> Result<Signed, (String, Problem)> {
    let base = base_of(request.headers(), request.uri()).map_err(|p| (String::new(), p))?;
    let fail = |problem: Problem| (base.clone(), problem);
    // The query too: a page of a list (`?cursor=`) is its own URL.
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path(), |path| path.as_str());
    let url = format!("{}{}", base.trim_end_matches("/acme"), path);
    let peer_address = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|connection| connection.get_ref().remote_addr());
    let peer = peer_address.map_or_else(
        || Caller("peer unknown".into()),
        |address| Caller(format!("peer {address}")),
    );
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    // A body declared larger than certd would even drain is refused unread.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > DRAIN_BYTES) {
        return Err(fail(too_large()));
    }
    let body = read_body(request.into_body()).await.map_err(fail)?;
    if content_type.as_deref() != Some("application/jose+json") {
        return Err(fail(
            Problem::malformed("ACME requests must be sent as Content-Type: application/jose+json")
                .with_status(415),
        ));
    }
    let jws = Jws::parse(&body).map_err(fail)?;
    Ok(Signed {
        base,
        url,
        jws,
        peer,
        peer_ip: peer_address.map(|address| address.ip()),
    })
}

/// How much of an oversized body is read and dropped before the refusal:
/// an HTTP/2 client still sending would otherwise see its stream reset
/// instead of the 413. Beyond this the stream is reset anyway.
const DRAIN_BYTES: usize = 1024 * 1024;

/// The body, at most `MAX_REQUEST_BYTES`; a larger one is refused with 413
/// (malformed) once read, or once `DRAIN_BYTES` of it were.
async fn read_body(mut body: AxumBody) -> Result<Vec<u8>, Problem> {
    use http_body_util::BodyExt;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            Problem::malformed(format!("the request body could not be read: {error}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= MAX_REQUEST_BYTES {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_BYTES {
            break;
        }
    }
    if seen > MAX_REQUEST_BYTES {
        return Err(too_large());
    }
    Ok(kept)
}

fn too_large() -> Problem {
    Problem::malformed(format!(
        "the request is larger than {} KiB",
        MAX_REQUEST_BYTES / 1024
    ))
    .with_status(413)
}

/// Reads the request, runs `decide` on it, answers.
macro_rules! signed_route {
    ($name:ident, |$server:ident, $request:ident $(, $param:ident: $ty:ty)*| $decide:expr) => {
        async fn $name(
            State($server): State<AcmeServer>,
            $(Path($param): Path<$ty>,)*
            request: Request,
        ) -> Response {
            match signed(request).await {
                Ok($request) => {
                    let base = $request.base.clone();
                    let answer = $decide;
                    respond(&$server, &base, answer)
                }
                Err((base, problem)) => respond(&$server, &base, Err(problem)),
            }
        }
    };
}

signed_route!(new_account, |server, request| server
    .new_account(request)
    .await);
signed_route!(new_order, |server, request| server.new_order(request).await);
signed_route!(revoke_cert, |server, request| server
    .revoke_cert(request)
    .await);
signed_route!(key_change, |server, request| server
    .key_change(request)
    .await);
signed_route!(account, |server, request, account: String| server
    .account(request, &account)
    .await);
signed_route!(orders, |server, request, account: String| server
    .orders(request, &account)
    .await);
signed_route!(order, |server, request, ids: (String, String)| server
    .order(request, &ids.0, &ids.1)
    .await);
signed_route!(finalize, |server, request, ids: (String, String)| server
    .finalize(request, &ids.0, &ids.1)
    .await);
signed_route!(authz, |server, request, ids: (String, String)| server
    .authz(request, &ids.0, &ids.1)
    .await);
signed_route!(
    challenge,
    |server, request, ids: (String, String, String)| server
        .challenge(request, &ids.0, &ids.1, &ids.2)
        .await
);
signed_route!(certificate, |server, request, ids: (String, String)| server
    .certificate(request, &ids.0, &ids.1)
    .await);

/// Writes an answer or a problem with the headers every ACME answer has.
fn respond(server: &AcmeServer, base: &str, answer: Result<Answer, Problem>) -> Response {
    let mut response = match answer {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            let mut response = match answer.body {
                Body::Json(value) => (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    value.to_string(),
                )
                    .into_response(),
                Body::PemChain(pem) => (
                    status,
                    [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
                    pem,
                )
                    .into_response(),
                Body::Empty => (status, AxumBody::empty()).into_response(),
            };
            let headers = response.headers_mut();
            if let Some(location) = answer.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                headers.insert(header::LOCATION, location);
            }
            if let Some(up) = answer
                .up
                .and_then(|up| HeaderValue::from_str(&format!("<{up}>;rel=\"up\"")).ok())
            {
                headers.append(header::LINK, up);
            }
            if let Some(next) = answer
                .next
                .and_then(|next| HeaderValue::from_str(&format!("<{next}>;rel=\"next\"")).ok())
            {
                headers.append(header::LINK, next);
            }
            if let Some(seconds) = answer.retry_after {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Err(problem) => {
            AcmeServer::count_problem(&problem);
            let status = StatusCode::from_u16(problem.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let body = serde_json::to_string(&problem.document()).unwrap_or_default();
            let mut response = (
                status,
                [(header::CONTENT_TYPE, "application/problem+json")],
                body,
            )
                .into_response();
            if let Some(location) = problem
                .location
                .and_then(|location| HeaderValue::from_str(&location).ok())
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            if let Some(seconds) = problem.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    };
    let headers = response.headers_mut();
    if let Ok(nonce) = HeaderValue::from_str(&server.nonce()) {
        headers.insert("replay-nonce", nonce);
    }
    if !base.is_empty()
        && let Ok(index) = HeaderValue::from_str(&format!("<{base}/directory>;rel=\"index\""))
    {
        headers.append(header::LINK, index);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
