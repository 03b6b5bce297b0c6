//! One bounded `GET` over HTTPS, as certd's outbound fetchers make it
//! (JWKS for the Kubernetes attestor and subject issuers, foreign SPIFFE
//! bundles for federation): HTTP/1.1 with hyper over rustls, the body of a
//! `200 OK` only, at most `limit` bytes. Owns the connection and nothing
//! else: the caller chooses the server's verification (its rustls config),
//! builds the request, bounds the time and words the error.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The `Host` header for `host` on `port` (the port only when not 443).
pub(crate) fn host_header(host: &str, port: u16) -> String {
    if port == 443 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// Sends `request` to `host:port` over TLS verified by `tls`; the body of a
/// `200 OK` answer, at most `limit` bytes, or what went wrong, in words.
pub(crate) async fn get(
    host: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    request: hyper::Request<Empty<Bytes>>,
    limit: usize,
) -> Result<Bytes, String> {
    let failed = |what: &str, error: &dyn std::fmt::Display| format!("{what}: {error}");
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| failed("cannot connect", &e))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| failed("bad host", &e))?;
    let tls = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| failed("TLS", &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| failed("HTTP", &e))?;
    let connection = tokio::spawn(connection);
    let outcome = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("HTTP", &e))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| failed(&format!("reading the answer (at most {})", size(limit)), &e))
    }
    .await;
    connection.abort();
    outcome
}

/// A byte count as a person reads a limit: `1 MiB`, `64 KiB`, `100 bytes`.
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_and_hosts_read_as_people_write_them() {
        assert_eq!(super::size(1024 * 1024), "1 MiB");
        assert_eq!(super::size(64 * 1024), "64 KiB");
        assert_eq!(super::size(100), "100 bytes");
        assert_eq!(super::host_header("ca.example", 443), "ca.example");
        assert_eq!(super::host_header("ca.example", 8443), "ca.example:8443");
    }
}
