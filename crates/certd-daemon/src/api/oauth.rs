//! The OAuth 2.0 token endpoint, `POST /oauth/token` (client credentials,
//! and token exchange, RFC 8693), and token
//! introspection (RFC 7662), `POST /oauth/introspect`, served over HTTP/1.1
//! and HTTP/2 on the TLS listener beside gRPC, so the client certificate
//! of the handshake authenticates the client (RFC 8705).
//!
//! Owns the wire: the form (RFC 6749 §4.4.2: `application/x-www-form-
//! urlencoded`, each parameter at most once, §3.2), the JSON answer (§5.1,
//! `Cache-Control: no-store`) and the error document (§5.2) whose `error`
//! comes from `TokenError::oauth_error`. What is granted is
//! `authority`'s. The body is capped before it is read; nothing from the
//! request is echoed back unchecked.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::authority::{
    Authority, Caller, ClientProof, ExchangeRequest, JWT_BEARER_ASSERTION, JWT_SPIFFE_ASSERTION,
    TOKEN_EXCHANGE_GRANT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, TokenError,
    TokenRequest,
};
use crate::policy::grants;

/// Largest form accepted: a client assertion (at most 8 KiB) and change.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Most parameters one form may carry.
const MAX_PARAMETERS: usize = 32;

/// The token endpoint's routes, merged into the TLS listener's router.
pub(crate) fn router(authority: Authority) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/introspect", post(introspect))
        .with_state(authority)
}

async fn token(State(authority): State<Authority>, request: Request) -> Response {
    match read_form(request).await {
        Ok((peer, leaf, form)) => match answer(&authority, &peer, leaf.as_deref(), &form).await {
            Ok(response) => response,
            Err(error) => refusal(&error),
        },
        Err(response) => response,
    }
}

async fn introspect(State(authority): State<Authority>, request: Request) -> Response {
    match read_form(request).await {
        Ok((peer, leaf, form)) => {
            match introspection(&authority, &peer, leaf.as_deref(), &form).await {
                Ok(response) => response,
                Err(error) => refusal(&error),
            }
        }
        Err(response) => response,
    }
}

/// What both endpoints read first: who is calling (the peer, and the client
/// certificate of the handshake) and the form; or the refusal to answer.
async fn read_form(
    request: Request,
) -> Result<(Caller, Option<Vec<u8>>, HashMap<String, String>), Response> {
    let connection = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .cloned();
    let peer = match connection.as_ref().and_then(|c| c.get_ref().remote_addr()) {
        Some(address) => Caller(format!("peer {address}")),
        None => Caller("peer unknown".into()),
    };
    let leaf: Option<Vec<u8>> = connection
        .as_ref()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|chain| chain.first().map(|leaf| leaf.to_vec()));
    // RFC 6749 §2.3: one way to authenticate; a client that tries HTTP
    // authentication (a secret, with Basic) is answered in its scheme.
    let http_scheme = request.headers().get(header::AUTHORIZATION).map(|value| {
        value
            .to_str()
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(32)
            .collect::<String>()
    });
    let form_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES).await else {
        return Err(refusal(&TokenError::InvalidRequest(format!(
            "the request is larger than {MAX_FORM_BYTES} bytes"
        ))));
    };
    // Checked once the body is read: an HTTP/2 client still sending it
    // would otherwise see its stream reset instead of the answer.
    if form_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(refusal(&TokenError::InvalidRequest(
            "the request must be a form (Content-Type: application/x-www-form-urlencoded)".into(),
        )));
    }
    let form =
        parse_form(&body).map_err(|message| refusal(&TokenError::InvalidRequest(message)))?;
    if let Some(scheme) = http_scheme {
        let mut response = refusal(&TokenError::InvalidClient(
            "certd has no client secrets and takes no Authorization header: present your certd certificate in the TLS handshake or a JWT-SVID as client_assertion".into(),
        ));
        if let Ok(challenge) = HeaderValue::from_str(&format!("{scheme} realm=\"certd\"")) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        return Err(response);
    }
    Ok((peer, leaf, form))
}

/// RFC 7662: whether `token` is an active access token for the caller, and
/// its claims if so. A token for another audience, or of a client no
/// longer registered, is inactive: the answer tells nothing more.
async fn introspection(
    authority: &Authority,
    peer: &Caller,
    leaf: Option<&[u8]>,
    form: &HashMap<String, String>,
) -> Result<Response, TokenError> {
    let proof = client_proof(form, leaf)?;
    let token = form
        .get("token")
        .ok_or_else(|| TokenError::InvalidRequest("token is missing".into()))?;
    let client_id = form.get("client_id").map(String::as_str);
    let answer = authority.introspect(peer, proof, client_id, token).await?;
    Ok(json(StatusCode::OK, &answer))
}

async fn answer(
    authority: &Authority,
    peer: &Caller,
    leaf: Option<&[u8]>,
    form: &HashMap<String, String>,
) -> Result<Response, TokenError> {
    let parameter = |name: &str| form.get(name).map(String::as_str);
    let exchange = match parameter("grant_type") {
        Some("client_credentials") => false,
        Some(TOKEN_EXCHANGE_GRANT) => true,
        Some(other) => {
            return Err(TokenError::UnsupportedGrantType(
                other.chars().take(128).collect(),
            ));
        }
        None => return Err(TokenError::InvalidRequest("grant_type is missing".into())),
    };
    let proof = client_proof(form, leaf)?;
    let audience = audience(form)?;
    let scopes = match parameter("scope") {
        Some(scope) => grants::parse_scope_parameter(scope)
            .map_err(|message| TokenError::InvalidRequest(format!("scope: {message}")))?,
        None => Vec::new(),
    };
    let (token, issued_token_type) = if exchange {
        let request = exchange_request(form, proof, audience, scopes)?;
        (
            authority.exchange(peer, &request).await?,
            Some(request.issued_token_type),
        )
    } else {
        let request = TokenRequest {
            proof,
            client_id: parameter("client_id"),
            audience,
            scopes,
        };
        (authority.token(peer, &request).await?, None)
    };
    let mut body = serde_json::json!({
        "access_token": token.token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
    });
    if let Some(issued_token_type) = issued_token_type {
        // RFC 8693 §2.2.1.
        body["issued_token_type"] = issued_token_type.into();
    }
    if !token.scopes.is_empty() {
        body["scope"] = token.scopes.join(" ").into();
    }
    Ok(json(StatusCode::OK, &body))
}

/// The token's audience: `audience` or `resource` (one), checked.
fn audience(form: &HashMap<String, String>) -> Result<&str, TokenError> {
    let parameter = |name: &str| form.get(name).map(String::as_str);
    let audience = match (parameter("audience"), parameter("resource")) {
        (Some(audience), None) | (None, Some(audience)) => audience,
        (Some(_), Some(_)) => {
            return Err(TokenError::InvalidRequest(
                "give the token's audience once, as audience or resource".into(),
            ));
        }
        (None, None) => {
            return Err(TokenError::InvalidRequest(
                "audience is missing: name the service the token is for (audience or resource)"
                    .into(),
            ));
        }
    };
    crate::jwt::check_audience(audience).map_err(TokenError::InvalidRequest)?;
    if parameter("resource").is_some() && !is_absolute_uri(audience) {
        // RFC 8707 §2: a resource is an absolute URI; `audience` takes any name.
        return Err(TokenError::InvalidTarget(format!(
            "resource {audience:?} is not an absolute URI; name a service by `audience` instead"
        )));
    }
    Ok(audience)
}

/// The RFC 8693 §2.1 parameters of an exchange.
fn exchange_request<'a>(
    form: &'a HashMap<String, String>,
    proof: ClientProof<'a>,
    audience: &'a str,
    scopes: Vec<String>,
) -> Result<ExchangeRequest<'a>, TokenError> {
    let parameter = |name: &str| form.get(name).map(String::as_str);
    let shown = |value: &str| value.chars().take(128).collect::<String>();
    let subject_token = parameter("subject_token")
        .ok_or_else(|| TokenError::InvalidRequest("subject_token is missing".into()))?;
    let subject_token_type = match parameter("subject_token_type") {
        Some(kind @ (TOKEN_TYPE_JWT | TOKEN_TYPE_ACCESS_TOKEN | TOKEN_TYPE_ID_TOKEN)) => kind,
        Some(other) => {
            return Err(TokenError::InvalidRequest(format!(
                "subject_token_type {:?} is not supported: certd exchanges JWTs ({TOKEN_TYPE_JWT}, {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_ID_TOKEN})",
                shown(other)
            )));
        }
        None => {
            return Err(TokenError::InvalidRequest(
                "subject_token_type is missing".into(),
            ));
        }
    };
    let actor_token = match (parameter("actor_token"), parameter("actor_token_type")) {
        (None, None) => None,
        (Some(token), Some(TOKEN_TYPE_JWT)) => Some(token),
        (Some(_), Some(other)) => {
            return Err(TokenError::InvalidRequest(format!(
                "actor_token_type {:?} is not supported: an actor token is the actor's JWT-SVID ({TOKEN_TYPE_JWT})",
                shown(other)
            )));
        }
        _ => {
            return Err(TokenError::InvalidRequest(
                "actor_token and actor_token_type go together".into(),
            ));
        }
    };
    let issued_token_type = match parameter("requested_token_type") {
        None | Some(TOKEN_TYPE_ACCESS_TOKEN) => TOKEN_TYPE_ACCESS_TOKEN,
        Some(TOKEN_TYPE_JWT) => TOKEN_TYPE_JWT,
        Some(other) => {
            return Err(TokenError::InvalidRequest(format!(
                "requested_token_type {:?} is not supported: certd issues {TOKEN_TYPE_ACCESS_TOKEN} (a JWT)",
                shown(other)
            )));
        }
    };
    Ok(ExchangeRequest {
        proof,
        client_id: parameter("client_id"),
        subject_token,
        subject_token_type,
        actor_token,
        audience,
        scopes,
        issued_token_type,
    })
}

/// How the client authenticates: its certificate, or a JWT-SVID assertion;
/// never a secret, never both.
fn client_proof<'a>(
    form: &'a HashMap<String, String>,
    leaf: Option<&'a [u8]>,
) -> Result<ClientProof<'a>, TokenError> {
    let parameter = |name: &str| form.get(name).map(String::as_str);
    if parameter("client_secret").is_some() {
        return Err(TokenError::InvalidClient(
            "certd has no client secrets: authenticate with your certificate or a JWT-SVID".into(),
        ));
    }
    let proof = match (
        parameter("client_assertion_type"),
        parameter("client_assertion"),
    ) {
        (Some(JWT_SPIFFE_ASSERTION | JWT_BEARER_ASSERTION), Some(assertion)) => {
            if leaf.is_some() {
                // RFC 6749 §2.3: one authentication method per request.
                return Err(TokenError::InvalidRequest(
                    "the client authenticated twice, with its TLS certificate and a client assertion; use one".into(),
                ));
            }
            ClientProof::Assertion(assertion)
        }
        (Some(other), Some(_)) => {
            return Err(TokenError::InvalidClient(format!(
                "client_assertion_type {:?} is not supported: use {JWT_SPIFFE_ASSERTION} or {JWT_BEARER_ASSERTION} with a JWT-SVID",
                other.chars().take(128).collect::<String>()
            )));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(TokenError::InvalidRequest(
                "client_assertion and client_assertion_type go together".into(),
            ));
        }
        (None, None) => match leaf {
            Some(leaf) => ClientProof::Certificate(leaf),
            None => {
                return Err(TokenError::InvalidClient(
                    "no client authentication: present your certd certificate in the TLS handshake (tls_client_auth) or a JWT-SVID as client_assertion; certd has no client secrets".into(),
                ));
            }
        },
    };
    Ok(proof)
}

/// Whether `value` is an absolute URI: a scheme (RFC 3986 §3.1) and `:`.
fn is_absolute_uri(value: &str) -> bool {
    value.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// The form's parameters, each at most once (RFC 6749 §3.2); one without
/// a value counts as omitted (§3.1).
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut form = HashMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if value.is_empty() {
            continue;
        }
        if form.len() == MAX_PARAMETERS {
            return Err(format!(
                "the form has more than {MAX_PARAMETERS} parameters"
            ));
        }
        let shown: String = name.chars().take(64).collect();
        if form.insert(name.into_owned(), value.into_owned()).is_some() {
            return Err(format!("parameter {shown:?} is given more than once"));
        }
    }
    Ok(form)
}

/// The RFC 6749 §5.2 error document for `error`.
fn refusal(error: &TokenError) -> Response {
    let code = error.oauth_error();
    let status = match code {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let described = match code {
        // Details of a fault go to the log only, as for gRPC (`api::status`).
        "server_error" | "temporarily_unavailable" => {
            tracing::error!(error = %crate::error_kind::with_causes(&error), "token request failed");
            if code == "server_error" {
                "internal error; see the certd log".to_owned()
            } else {
                "certd cannot answer right now; retry later".to_owned()
            }
        }
        _ => description(error),
    };
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": described }),
    )
}

/// RFC 6749 §5.2 allows only printable ASCII other than '"' and '\' in
/// `error_description`.
fn description(error: &TokenError) -> String {
    error
        .to_string()
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, Body::from(body.to_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_given_twice_or_too_many_is_refused() {
        let form = parse_form(b"grant_type=client_credentials&scope=a+b&audience=x").unwrap();
        assert_eq!(form["scope"], "a b");
        let twice = parse_form(b"scope=a&scope=b").unwrap_err();
        assert!(
            twice.contains("\"scope\" is given more than once"),
            "{twice}"
        );
        let many: Vec<String> = (0..=MAX_PARAMETERS).map(|i| format!("p{i}=1")).collect();
        assert!(parse_form(many.join("&").as_bytes()).is_err());
        // Not UTF-8, or not a form at all: still parameters, never a panic.
        assert!(parse_form(&[0xff, b'=', 0xfe]).is_ok());
        // Without a value, as if omitted.
        assert!(
            !parse_form(b"client_id=&scope=a")
                .unwrap()
                .contains_key("client_id")
        );
    }

    #[test]
    fn hostile_forms_never_panic() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..5000 {
            let body: Vec<u8> = (0..round % 400)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Mostly the form's own symbols, so parsing goes deep.
                    b"=&%+aZ09\xff\x00"[(seed >> 33) as usize % 10]
                })
                .collect();
            if let Ok(form) = parse_form(&body) {
                for value in form.values() {
                    let _ = is_absolute_uri(value);
                    let _ = description(&TokenError::InvalidRequest(value.clone()));
                }
            }
        }
    }

    #[test]
    fn a_resource_is_an_absolute_uri() {
        assert!(is_absolute_uri("https://invoices.example/api"));
        assert!(is_absolute_uri("spiffe://certd.internal/svc/invoices"));
        assert!(!is_absolute_uri("invoices"));
        assert!(!is_absolute_uri("1http://x"));
        assert!(!is_absolute_uri("https:"));
    }

    #[test]
    fn an_error_description_holds_only_the_characters_rfc_6749_allows() {
        let error = TokenError::InvalidRequest("bad \"x\" \\ é\n".into());
        assert_eq!(description(&error), "bad 'x' / ??");
    }
}
