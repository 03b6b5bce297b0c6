//! The SPIFFE bundle endpoint on a TLS listener of its own
//! (`[federation] bundle_endpoint_addr`): only `/bundle.spiffe` and
//! `/.well-known/spiffe-bundle`, over HTTP/1.1, with the operator's
//! certificate (the `https_web` profile: a Web PKI certificate, say from
//! ACME) or certd's serving certificate (`https_spiffe`). The operator's
//! files are read again when they change (a renewal replaces them), at
//! most every second; a pair that does not load keeps the previous one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

use super::connections::Admission;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are looked at, at most.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The operator's certificate chain and key (PEM files).
#[derive(Debug)]
pub struct OperatorCertificate {
    certificate: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    current: Arc<CertifiedKey>,
    /// The files' (length, modification time) when last read.
    seen: Option<(u64, SystemTime, u64, SystemTime)>,
    checked: Instant,
}

impl OperatorCertificate {
    /// Reads both files; the error names the one that is wrong.
    pub fn load(certificate: &Path, key: &Path) -> Result<Self, String> {
        let current = read_pair(certificate, key)?;
        Ok(OperatorCertificate {
            certificate: certificate.to_owned(),
            key: key.to_owned(),
            state: Mutex::new(Loaded {
                current,
                seen: fingerprint(certificate, key),
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked.elapsed() >= RECHECK_INTERVAL {
            state.checked = Instant::now();
            let seen = fingerprint(&self.certificate, &self.key);
            if seen != state.seen {
                match read_pair(&self.certificate, &self.key) {
                    Ok(next) => {
                        tracing::info!(certificate = %self.certificate.display(), "the bundle endpoint's certificate changed; serving the new one");
                        state.current = next;
                        state.seen = seen;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot load the bundle endpoint's new certificate; keeping the previous one");
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for OperatorCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn fingerprint(certificate: &Path, key: &Path) -> Option<(u64, SystemTime, u64, SystemTime)> {
    let of = |path: &Path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.len(), metadata.modified().ok()?))
    };
    let (certificate_len, certificate_time) = of(certificate)?;
    let (key_len, key_time) = of(key)?;
    Some((certificate_len, certificate_time, key_len, key_time))
}

fn read_pair(certificate: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let chain_pem = read(certificate)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|error| format!("{}: bad PEM: {error}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", certificate.display()));
    }
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|error| format!("{}: bad PEM: {error}", key.display()))?
        .ok_or_else(|| format!("{}: no private key in it", key.display()))?;
    CertifiedKey::from_der(chain, private, &crate::crypto::provider())
        .map(Arc::new)
        .map_err(|error| {
            format!(
                "{} and {} do not make a usable pair: {error}",
                certificate.display(),
                key.display()
            )
        })
}

/// Serves `router` over TLS (HTTP/1.1 only) on `listener` with the
/// certificate `resolver` gives, until `stopped` completes. Connections
/// are let in by `admission`; the handshake and the request headers are
/// each bounded in time.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    resolver: Arc<dyn ResolvesServerCert>,
    admission: Admission,
    header_read_timeout: Duration,
    stopped: impl std::future::Future<Output = ()>,
) {
    let config = match rustls::ServerConfig::builder_with_provider(crate::crypto::provider())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => {
            let mut config = builder.with_no_client_auth().with_cert_resolver(resolver);
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        }
        Err(error) => {
            tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot configure TLS for the bundle endpoint");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => break,
            accepted = super::connections::accept(&listener) => accepted,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(tcp) = admission.admit(tcp, peer) else {
            continue;
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, error = %crate::error_kind::with_causes(&error), "bundle endpoint: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            if let Err(error) = http
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                .await
            {
                tracing::debug!(%peer, error = %crate::error_kind::with_causes(&error), "bundle endpoint connection ended");
            }
        });
    }
    // Bundle requests are small and idempotent: open ones are cut off.
    connections.shutdown().await;
}
