//! Fetching a foreign bundle from its bundle endpoint (SPIFFE Federation
//! §5): `GET` over TLS, capped in size (`bundle::MAX_BUNDLE_BYTES`) and
//! time (`FETCH_TIMEOUT`). The server is authenticated per the
//! relationship's profile: `https_web` as a browser would (the Web PKI
//! roots, or the CA the operator gave, and the URL's host name);
//! `https_spiffe` by a chain to the roots of the bundle held for that trust
//! domain and the SPIFFE ID pinned, never a host name (`SpiffeVerifier`).
//! What the body must be is `bundle`'s business.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::bundle::{self, MAX_BUNDLE_BYTES};
use crate::identity::SpiffeId;
use crate::model::{EndpointProfile, FederationRecord};

/// How long one fetch (connect, TLS, request, answer) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed: said in `/readyz`, `federation show` and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// A bundle endpoint, ready to fetch from.
#[derive(Clone)]
pub struct BundleEndpoint {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for BundleEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BundleEndpoint({})", self.url)
    }
}

impl BundleEndpoint {
    /// The endpoint of `relationship`, authenticated as its profile says
    /// (for `https_spiffe`, with the bundle it holds now).
    pub fn of(relationship: &FederationRecord) -> Result<Self, FetchError> {
        let url = &relationship.bundle_endpoint_url;
        let invalid = |message: &str| FetchError(format!("{url}: {message}"));
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid("only https:// URLs are fetched"));
        }
        let host = uri
            .host()
            .ok_or_else(|| invalid("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let provider = crate::crypto::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e.to_string()))?;
        let tls = match &relationship.profile {
            EndpointProfile::HttpsWeb { ca_pem } => {
                let mut roots = rustls::RootCertStore::empty();
                match ca_pem {
                    Some(pem) => {
                        for der in bundle::pem_certificates(pem).map_err(|e| invalid(&e))? {
                            roots
                                .add(CertificateDer::from(der))
                                .map_err(|e| invalid(&format!("the endpoint CA: {e}")))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            EndpointProfile::HttpsSpiffe { endpoint_id } => {
                let roots = relationship
                    .bundle
                    .as_ref()
                    .map(|held| {
                        bundle::parse_bundle(held.json.as_bytes(), &relationship.trust_domain)
                            .map(|parsed| parsed.roots_der)
                            .map_err(|e| invalid(&format!("the bundle held: {e}")))
                    })
                    .transpose()?
                    .unwrap_or_default();
                if roots.is_empty() {
                    return Err(invalid(
                        "no X.509 root held for the trust domain to authenticate the endpoint with",
                    ));
                }
                let verifier = SpiffeVerifier {
                    roots,
                    endpoint_id: endpoint_id.clone(),
                    provider,
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth()
            }
        };
        Ok(BundleEndpoint {
            url: url.clone(),
            port: uri.port_u16().unwrap_or(443),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            host,
            tls: Arc::new(tls),
        })
    }

    /// The body of a `200 OK` answer to `GET url`, at most 1 MiB.
    pub async fn fetch(&self) -> Result<Bytes, FetchError> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch_once()).await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!("no answer within {FETCH_TIMEOUT:?}"))),
        }
    }

    async fn fetch_once(&self) -> Result<Bytes, FetchError> {
        let request = hyper::Request::get(self.path.as_str())
            .header(
                hyper::header::HOST,
                crate::https_get::host_header(&self.host, self.port),
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.error(format!("cannot build the request: {e}")))?;
        crate::https_get::get(
            &self.host,
            self.port,
            self.tls.clone(),
            request,
            MAX_BUNDLE_BYTES,
        )
        .await
        .map_err(|message| self.error(message))
    }

    fn error(&self, message: String) -> FetchError {
        FetchError(format!("{}: {message}", self.url))
    }
}

/// The `https_spiffe` check: the server's chain leads to a root of the
/// foreign trust domain's bundle, for server authentication, and its leaf
/// carries exactly the pinned SPIFFE ID. The host name plays no part.
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Vec<Vec<u8>>,
    endpoint_id: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bad = |error: webpki::Error| rustls::Error::General(format!("{error:?}"));
        let root_ders: Vec<CertificateDer<'_>> = self
            .roots
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        let anchors = root_ders
            .iter()
            .map(webpki::anchor_from_trusted_cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let certificate = webpki::EndEntityCert::try_from(end_entity).map_err(bad)?;
        certificate
            .verify_for_usage(
                self.provider.signature_verification_algorithms.all,
                &anchors,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(|error| {
                rustls::Error::General(format!(
                    "the endpoint's certificate does not chain to the trust domain's bundle: {error:?}"
                ))
            })?;
        let presented = spiffe_ids_of(end_entity.as_ref());
        if presented.len() != 1 || presented[0] != self.endpoint_id.as_str() {
            return Err(rustls::Error::General(format!(
                "the endpoint presented {}, not {}",
                if presented.is_empty() {
                    "no SPIFFE ID".to_owned()
                } else {
                    presented.join(", ")
                },
                self.endpoint_id
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The `spiffe://` URI SANs of a certificate.
fn spiffe_ids_of(der: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(names)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                Some((*uri).to_owned())
            }
            _ => None,
        })
        .collect()
}
