//! Fetching an issuer's JWKS over HTTPS, for issuers that publish their keys
//! (a Kubernetes API server's `/openid/v1/jwks`, a managed cluster's public
//! OIDC issuer, an identity provider's `jwks_uri`). Only `https://` URLs;
//! the server is verified against the configured CA file, or the Mozilla
//! roots when none is given. The answer is capped in size and time, and a
//! bearer token (for a server that wants one) is read fresh from its file
//! on every fetch. Turning the body into keys is `files::jwks_keys`'s job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use zeroize::Zeroizing;

use super::KeyFileError;

/// Largest JWKS certd reads; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one fetch (connect, TLS, request, answer) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to fetch a JWKS, and how to trust the server.
#[derive(Clone)]
pub(crate) struct JwksUrl {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: Arc<rustls::ClientConfig>,
    bearer_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwksUrl({})", self.url)
    }
}

impl JwksUrl {
    /// Checks the URL and reads the CA file; fetches nothing yet.
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        bearer_token_file: Option<PathBuf>,
    ) -> Result<Self, KeyFileError> {
        let invalid = |message: &str| KeyFileError::Fetch {
            url: url.to_owned(),
            message: message.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid("only https:// URLs are fetched"));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        // An IPv6 literal comes bracketed; the TLS name and socket want it bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let roots = match ca_file {
            Some(path) => roots_from_file(path)?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let tls = rustls::ClientConfig::builder_with_provider(crate::crypto::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(JwksUrl {
            url: url.to_owned(),
            port: uri.port_u16().unwrap_or(443),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            host,
            tls: Arc::new(tls),
            bearer_token_file,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The body of a `200 OK` answer to `GET url`.
    pub async fn fetch(&self) -> Result<Bytes, KeyFileError> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch_once()).await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!("no answer within {FETCH_TIMEOUT:?}"))),
        }
    }

    async fn fetch_once(&self) -> Result<Bytes, KeyFileError> {
        let request = self.request()?;
        crate::https_get::get(
            &self.host,
            self.port,
            self.tls.clone(),
            request,
            MAX_JWKS_BYTES,
        )
        .await
        .map_err(|message| self.error(message))
    }

    fn request(&self) -> Result<hyper::Request<Empty<Bytes>>, KeyFileError> {
        let mut request = hyper::Request::get(self.path.as_str())
            .header(
                hyper::header::HOST,
                crate::https_get::host_header(&self.host, self.port),
            )
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(path) = &self.bearer_token_file {
            let token = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                KeyFileError::Read {
                    path: path.display().to_string(),
                    source,
                }
            })?);
            request = request.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        request
            .body(Empty::new())
            .map_err(|e| self.error(format!("cannot build the request: {e}")))
    }

    fn error(&self, message: String) -> KeyFileError {
        KeyFileError::Fetch {
            url: self.url.clone(),
            message,
        }
    }
}

fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, KeyFileError> {
    let invalid = |message: String| KeyFileError::Invalid {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
        let certificate = certificate.map_err(|e| invalid(format!("bad PEM: {e}")))?;
        roots
            .add(certificate)
            .map_err(|e| invalid(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate in it".into()));
    }
    Ok(roots)
}
