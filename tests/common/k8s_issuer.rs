//! A test Kubernetes service-account issuer: its keys as a JWKS, tokens as
//! the API server mints them, and an HTTPS server for its JWKS endpoint.
//! Shared by the unit tests (`crates/certd-daemon/src/attest/kubernetes/mod.rs` includes this
//! file), the integration tests and the benchmarks, so it uses only crates
//! all of them have.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A throwaway RSA key (see tests/fixtures/README.md): rcgen cannot make one.
pub const RSA_KEY: &str = include_str!("../fixtures/k8s-issuer-rsa.key");
pub const RSA_PUBLIC: &str = include_str!("../fixtures/k8s-issuer-rsa.pub");

/// The key id an EC key is published under.
pub fn kid(key: &rcgen::KeyPair) -> String {
    hex::encode(&key.public_key_raw()[1..9])
}

/// A P-256 key as a JWK, as `/openid/v1/jwks` lists it.
pub fn jwk(key: &rcgen::KeyPair) -> Value {
    let raw = key.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid(key),
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    })
}

/// A JWKS document with these keys.
pub fn jwks(keys: &[&rcgen::KeyPair]) -> String {
    json!({ "keys": keys.iter().map(|k| jwk(k)).collect::<Vec<_>>() }).to_string()
}

pub fn now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_secs()).unwrap()
}

/// Claims as the API server writes them for the projected token of pod
/// `billing-7d9f` (service account `payments/billing`) on `node-1.example`.
pub fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": ["certd"], "sub": "system:serviceaccount:payments:billing",
        "iat": now(), "nbf": now(), "exp": now() + 600,
        "kubernetes.io": {
            "namespace": "payments",
            "serviceaccount": { "name": "billing", "uid": "3f0a" },
            "pod": { "name": "billing-7d9f", "uid": "0b1c2d3e-aaaa-bbbb-cccc-1234567890ab" },
            "node": { "name": "node-1.example", "uid": "77aa" },
        },
    })
}

/// `claims` with one field replaced.
pub fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

/// A token signed ES256 with `key`, naming its key id.
pub fn es256(key: &rcgen::KeyPair, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid(key));
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &signing).unwrap()
}

/// A token signed RS256 with the RSA fixture, naming no key id (as an API
/// server configured with PEM keys signs).
pub fn rs256(claims: &Value) -> String {
    let signing = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &signing).unwrap()
}

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
