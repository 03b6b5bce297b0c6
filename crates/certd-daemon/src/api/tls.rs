//! TLS for the gRPC listener: the server configuration, certd's rotating
//! serving certificate, and the stream of accepted TLS connections.
//!
//! Client certificates are requested but optional, so one port serves
//! bootstrap (no certificate yet) and renewal (certificate required by the
//! RPC). A presented certificate must chain to a root of the trust bundle
//! as it is now (`bundle.pem`, which changes during a root rotation) with
//! valid signatures, or the handshake fails. One thing is deliberately left to the
//! RPC: expiry. A client whose certificate merely expired gets a clear
//! `UNAUTHENTICATED` from `Renew` naming the expiry, rather than a TLS alert
//! that most clients report as a broken pipe; `attest` refuses it all the
//! same.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::connections::{Admission, Tracked};
use crate::crypto::provider;

/// A handshake that has not finished by then is dropped, so slow or idle
/// clients cannot hold connection slots.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more wait in the kernel's accept queue.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The serving certificate, swapped in place when it is renewed.
#[derive(Debug)]
pub struct ServingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCertificate {
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key_pkcs8: Vec<u8>,
    ) -> Result<Self, TlsSetupError> {
        Ok(ServingCertificate {
            current: RwLock::new(certified_key(chain, key_pkcs8)?),
        })
    }

    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key_pkcs8: Vec<u8>,
    ) -> Result<(), TlsSetupError> {
        let next = certified_key(chain, key_pkcs8)?;
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(current.clone())
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider())?))
}

/// The rustls configuration of the gRPC listener: client certificates are
/// verified against `ca`'s trust bundle.
pub fn server_config(
    ca: Arc<crate::ca::CertificateAuthority>,
    serving: Arc<ServingCertificate>,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let bundle = ca.trust_bundle();
    let webpki = webpki_verifier(&bundle)?;
    let verifier = Arc::new(ExpiryReportingVerifier {
        ca,
        current: RwLock::new((bundle, webpki)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    // gRPC needs HTTP/2; OAuth clients of the token endpoint
    // (`api::oauth`) mostly speak HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The WebPKI verifier (client certificate optional) for these roots.
fn webpki_verifier(
    bundle: &crate::ca::bundle::TrustBundle,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for root in &bundle.roots_der {
        roots.add(CertificateDer::from(root.clone()))?;
    }
    Ok(
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()?,
    )
}

/// The WebPKI client verifier over the trust bundle as it is now (rebuilt
/// when the bundle changes), except that a chain which fails *only*
/// because the leaf has expired is accepted, so the RPC can refuse it with a
/// clear message. The chain is then verified again at the leaf's notAfter,
/// so every signature, name and usage check still applies.
struct ExpiryReportingVerifier {
    ca: Arc<crate::ca::CertificateAuthority>,
    /// The bundle the verifier was built from, and the verifier.
    current: RwLock<(
        Arc<crate::ca::bundle::TrustBundle>,
        Arc<dyn ClientCertVerifier>,
    )>,
}

impl std::fmt::Debug for ExpiryReportingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiryReportingVerifier")
            .finish_non_exhaustive()
    }
}

impl ExpiryReportingVerifier {
    /// The WebPKI verifier last built, without looking at the bundle: for
    /// the handshake's signature checks, which follow `verify_client_cert`
    /// (the one that does).
    fn last(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// The WebPKI verifier for the bundle now.
    fn webpki(&self) -> Arc<dyn ClientCertVerifier> {
        let bundle = self.ca.trust_bundle();
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&current.0, &bundle) {
                return current.1.clone();
            }
        }
        match webpki_verifier(&bundle) {
            Ok(webpki) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (bundle, webpki.clone());
                webpki
            }
            Err(error) => {
                // Checked when the bundle was read: cannot happen; keep
                // the last verifier.
                tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot verify against the new trust bundle");
                self.last()
            }
        }
    }
}

impl ClientCertVerifier for ExpiryReportingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Bootstrap comes without a certificate.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional, and the roots change; clients send the one
        // certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let webpki = self.webpki();
        match webpki.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                let not_after = leaf_not_after(end_entity).ok_or(
                    rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
                )?;
                webpki.verify_client_cert(end_entity, intermediates, not_after)
            }
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.last().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.last().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.last().supported_verify_schemes()
    }
}

/// The leaf's notAfter as a `UnixTime`, the last moment it was valid.
fn leaf_not_after(leaf: &CertificateDer<'_>) -> Option<UnixTime> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, certificate) = X509Certificate::from_der(leaf).ok()?;
    let seconds = u64::try_from(certificate.validity().not_after.timestamp()).ok()?;
    Some(UnixTime::since_unix_epoch(Duration::from_secs(seconds)))
}

/// Accepts TCP connections that `admission` lets in and completes their TLS
/// handshakes concurrently, yielding finished TLS streams. A failed or slow
/// handshake is logged and dropped; it never stalls the others.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    admission: Admission,
) -> ReceiverStream<io::Result<TlsStream<Tracked<TcpStream>>>> {
    let (ready, stream) = mpsc::channel(MAX_PENDING_HANDSHAKES);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = super::connections::accept(&listener).await;
            let _ = tcp.set_nodelay(true);
            let Some(tcp) = admission.admit(tcp, peer) else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handshake_done = ready.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = handshake_done.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, error = %crate::error_kind::with_causes(&error), "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            if ready.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(stream)
}
