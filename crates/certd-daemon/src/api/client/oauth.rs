//! A client of certd's OAuth token endpoint: one kept-alive HTTP/1.1
//! connection over TLS, authenticated by the workload's certificate
//! (`tls_client_auth`), as an OAuth library would use it. For `certd
//! bench token-endpoint` and `token-exchange`; services use their own
//! OAuth library.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{ClientError, TlsClientSettings};

/// Largest answer read: a token and its metadata.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct TokenEndpointClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
    path: String,
    target: String,
}

impl TokenEndpointClient {
    /// Connects to `token_endpoint` (`https://host:port/path`) presenting
    /// `tls`'s identity.
    pub async fn connect(
        token_endpoint: &str,
        tls: &TlsClientSettings,
    ) -> Result<Self, ClientError> {
        let (sender, uri) = super::https::connect(token_endpoint, "token endpoint", tls).await?;
        Ok(TokenEndpointClient {
            sender,
            authority: uri
                .authority()
                .map(|authority| authority.as_str().to_owned())
                .unwrap_or_default(),
            path: uri.path().to_owned(),
            target: token_endpoint.to_owned(),
        })
    }

    /// A client-credentials grant for `audience` and `scopes`: the access
    /// token, or the endpoint's refusal.
    pub async fn client_credentials(
        &mut self,
        audience: &str,
        scopes: &[String],
    ) -> Result<String, ClientError> {
        self.post(&[("grant_type", "client_credentials")], audience, scopes)
            .await
    }

    /// A token exchange (RFC 8693) of `subject_token` (a token certd
    /// issued, `access_token` type) for `audience` and `scopes`, this
    /// client acting.
    pub async fn exchange(
        &mut self,
        subject_token: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<String, ClientError> {
        self.post(
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", subject_token),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
            ],
            audience,
            scopes,
        )
        .await
    }

    /// Posts a grant (`grant`, then `audience` and `scopes`): the access
    /// token, or the endpoint's refusal.
    async fn post(
        &mut self,
        grant: &[(&str, &str)],
        audience: &str,
        scopes: &[String],
    ) -> Result<String, ClientError> {
        // Built before any await: the serializer is not `Send`.
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(grant);
            form.append_pair("audience", audience);
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
            form.finish()
        };
        let request = hyper::Request::post(&self.path)
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let response = super::https::send(&mut self.sender, request, &self.target).await?;
        let unreachable = |reason: String| ClientError::Unreachable {
            target: self.target.clone(),
            reason,
        };
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| unreachable(format!("the answer is not JSON: {e}")))?;
        match answer.get("access_token").and_then(|t| t.as_str()) {
            Some(token) if status.is_success() => Ok(token.to_owned()),
            _ => Err(ClientError::Refused {
                kind: if status == hyper::StatusCode::UNAUTHORIZED {
                    crate::ErrorKind::Unauthenticated
                } else {
                    crate::ErrorKind::PermissionDenied
                },
                message: format!(
                    "{}: {}",
                    answer["error"].as_str().unwrap_or("error"),
                    answer["error_description"].as_str().unwrap_or_default()
                ),
            }),
        }
    }
}
