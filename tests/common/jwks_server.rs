//! An HTTPS server playing a Kubernetes issuer's JWKS endpoint, for the
//! JWKS URL tests. Shared by the unit tests (`src/attest/kubernetes.rs`
//! includes this file) and the integration tests, so it uses only crates
//! both have.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An HTTPS server playing the issuer's JWKS endpoint: it answers every
/// request with the current `answer`, and notes the Authorization
/// headers it was sent. Its certificate chains to `ca.pem` in `dir`.
pub struct JwksServer {
    pub url: String,
    pub ca_file: PathBuf,
    answer: Arc<Mutex<(u16, String)>>,
    pub authorizations: Arc<Mutex<Vec<String>>>,
}

impl JwksServer {
    pub async fn start(dir: &Path) -> JwksServer {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &Issuer::new(ca_params, ca_key))
            .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}/openid/v1/jwks",
            listener.local_addr().unwrap().port()
        );
        let answer = Arc::new(Mutex::new((200, String::new())));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let (served, seen) = (answer.clone(), authorizations.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                if let Some(line) = request
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                {
                    seen.lock().unwrap().push(line[14..].trim().to_owned());
                }
                let (status, body) = served.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        JwksServer {
            url,
            ca_file,
            answer,
            authorizations,
        }
    }

    pub fn serve(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }
}
