//! One kept-alive HTTP/1.1 connection over TLS to one of certd's HTTPS
//! endpoints (the token endpoint, ACME), trusting the CA bundle and, if
//! given, presenting a client certificate: what the token endpoint and
//! ACME clients share.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::{ClientError, TlsClientSettings};
use crate::crypto::provider;

/// Connects to the host of `url` (`https://host:port/…`; `what` names it
/// in errors); returns the request sender and the parsed URL.
pub(super) async fn connect(
    url: &str,
    what: &str,
    tls: &TlsClientSettings,
) -> Result<(SendRequest<Full<Bytes>>, http::Uri), ClientError> {
    let setup = |reason: String| ClientError::Setup(reason);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ClientError::invalid(format!("{what} {url:?}"), e))?;
    let (Some("https"), Some(authority), Some(host)) =
        (uri.scheme_str(), uri.authority(), uri.host())
    else {
        return Err(setup(format!("{what} {url:?} must be an https:// URL")));
    };
    let authority = authority.as_str();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::invalid(format!("{host:?} is not a server name"), e))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut tls.ca_bundle_pem.as_bytes()).flatten() {
        roots
            .add(certificate)
            .map_err(|e| ClientError::invalid("CA bundle", e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.identity {
        Some((chain_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| ClientError::invalid("certificate", e))?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
                .map_err(|e| ClientError::invalid("key", e))?
                .ok_or_else(|| setup("the key file holds no private key".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::invalid("client certificate", e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let unreachable = |reason: String| ClientError::Unreachable {
        target: url.to_owned(),
        reason,
    };
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| ClientError::Untrusted {
            target: url.to_owned(),
            reason: e.to_string(),
        })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    // Drives the connection; ends when the sender is dropped.
    tokio::spawn(connection);
    Ok((sender, uri))
}

/// Sends `request` on the connection once it is ready; a connection that
/// fails or closes is `Unreachable`, naming `target`.
pub(super) async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
    target: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let unreachable = |error: hyper::Error| ClientError::Unreachable {
        target: target.to_owned(),
        reason: error.to_string(),
    };
    sender.ready().await.map_err(unreachable)?;
    sender.send_request(request).await.map_err(unreachable)
}
