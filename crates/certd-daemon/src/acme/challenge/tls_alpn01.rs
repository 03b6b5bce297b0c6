//! tls-alpn-01 (RFC 8737): a TLS handshake with SNI `<domain>` and ALPN
//! `acme-tls/1`, whose certificate must name only `<domain>` and carry the
//! critical acmeIdentifier extension holding SHA-256 of the key
//! authorization. The certificate is self-signed by design: it is read,
//! never trusted; the handshake's signature still proves the server holds
//! its key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{ChallengeError, ValidationSettings, address};

/// The ALPN protocol of RFC 8737 §6.2.
pub(super) const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier (RFC 8737 §6.1).
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

pub(super) async fn validate(
    settings: &ValidationSettings,
    domain: &str,
    key_authorization: &str,
) -> Result<(), ChallengeError> {
    let server_name = ServerName::try_from(domain.to_owned()).map_err(|err| {
        ChallengeError::Tls(format!(
            "{domain} cannot be sent as a TLS server name: {err}"
        ))
    })?;
    let (stream, addr) = address::connect(settings, domain, settings.tls_alpn_port).await?;
    let at = format!("{domain} ({addr})");
    let tls = TlsConnector::from(Arc::new(client_config(ACME_TLS_1)?))
        .connect(server_name, stream)
        .await
        .map_err(|err| ChallengeError::Tls(format!("the TLS handshake with {at} failed: {err}")))?;
    let (_, connection) = tls.get_ref();
    if connection.alpn_protocol() != Some(ACME_TLS_1) {
        return Err(ChallengeError::Tls(format!(
            "{at} did not select the ALPN protocol acme-tls/1 (it selected {})",
            connection
                .alpn_protocol()
                .map(super::excerpt)
                .unwrap_or_else(|| "none".to_owned())
        )));
    }
    let certificate = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| ChallengeError::Tls(format!("{at} sent no certificate")))?;
    check_certificate(certificate, domain, key_authorization)
        .map_err(|why| ChallengeError::IncorrectResponse(format!("the certificate of {at} {why}")))
}

/// Why the certificate does not prove control of `domain` for
/// `key_authorization` (the end of a sentence starting "the certificate").
fn check_certificate(der: &[u8], domain: &str, key_authorization: &str) -> Result<(), String> {
    let (_, certificate) =
        X509Certificate::from_der(der).map_err(|err| format!("cannot be read: {err}"))?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|err| format!("has an unreadable subjectAltName: {err}"))?
        .map(|extension| extension.value.general_names.as_slice())
        .unwrap_or_default();
    match names {
        [GeneralName::DNSName(name)] if name.eq_ignore_ascii_case(domain) => {}
        [] => return Err("has no subjectAltName".to_owned()),
        names => {
            let names: Vec<String> = names.iter().map(ToString::to_string).collect();
            return Err(format!(
                "must name exactly one DNS name, {domain}, in its subjectAltName; it names {}",
                names.join(", ")
            ));
        }
    }
    let identifiers: Vec<_> = certificate
        .extensions()
        .iter()
        .filter(|extension| extension.oid.to_id_string() == ACME_IDENTIFIER_OID)
        .collect();
    let [identifier] = identifiers.as_slice() else {
        return Err(format!(
            "must carry one acmeIdentifier extension ({ACME_IDENTIFIER_OID}); it carries {}",
            identifiers.len()
        ));
    };
    if !identifier.critical {
        return Err("has an acmeIdentifier extension not marked critical".to_owned());
    }
    // The value is the DER of an OCTET STRING of 32 bytes: tag 4, length 32.
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(&Sha256::digest(key_authorization));
    if identifier.value != expected.as_slice() {
        return Err(
            "has an acmeIdentifier that is not SHA-256 of the key authorization".to_owned(),
        );
    }
    Ok(())
}

/// TLS 1.2 and 1.3 with ring, ALPN `alpn` only (`acme-tls/1`; `http/1.1`
/// for http-01's redirects to https), any certificate.
pub(super) fn client_config(alpn: &[u8]) -> Result<ClientConfig, ChallengeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = ReadCertificateOnly {
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| ChallengeError::Tls(format!("cannot set up TLS: {err}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Accepts any certificate (tls-alpn-01's is self-signed, and what it says
/// is checked afterwards) but verifies the handshake's signature with its
/// public key, so the server must hold the certificate's key. The key is
/// taken from the certificate by x509-parser, not webpki: webpki refuses
/// any certificate with a critical extension it does not know, and the
/// critical acmeIdentifier is exactly what tls-alpn-01 sends.
#[derive(Debug)]
struct ReadCertificateOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ReadCertificateOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // As rustls' own verify_tls12_signature: any algorithm of the scheme.
        let algorithms = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algorithms)| *algorithms)
            .ok_or(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
        let spki = public_key(cert)?;
        let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| bad_encoding())?;
        if algorithms.iter().any(|algorithm| {
            key.verify_signature(*algorithm, message, dss.signature())
                .is_ok()
        }) {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature,
            ))
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &public_key(cert)?,
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificate's SubjectPublicKeyInfo.
fn public_key(
    cert: &CertificateDer<'_>,
) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    let (_, certificate) = X509Certificate::from_der(cert).map_err(|_| bad_encoding())?;
    Ok(SubjectPublicKeyInfoDer::from(
        certificate.tbs_certificate.subject_pki.raw.to_vec(),
    ))
}

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use rcgen::{CertificateParams, CustomExtension, KeyPair};
    use rustls::ServerConfig;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::sign::{CertifiedKey, SingleCertAndKey};
    use tokio::io::AsyncWriteExt;
    use tokio_rustls::TlsAcceptor;

    use super::*;

    const DOMAIN: &str = "www.example.test";
    const KEY_AUTHORIZATION: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";

    /// What the test server presents.
    struct Presented {
        names: Vec<String>,
        extension: Option<CustomExtension>,
        alpn: bool,
        tls12_only: bool,
    }

    impl Presented {
        /// RFC 8737's answer for `key_authorization`, as an ACME client makes it.
        fn answer(key_authorization: &str) -> Self {
            Self {
                names: vec![DOMAIN.to_owned()],
                extension: Some(CustomExtension::new_acme_identifier(&Sha256::digest(
                    key_authorization,
                ))),
                alpn: true,
                tls12_only: false,
            }
        }
    }

    /// A rustls server on 127.0.0.1 presenting an rcgen-made certificate;
    /// returns its port.
    async fn serve(presented: Presented) -> u16 {
        let mut params = CertificateParams::new(presented.names).unwrap();
        params.custom_extensions.extend(presented.extension);
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if presented.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        // Not with_single_cert: it parses the certificate with webpki, which
        // refuses the critical acmeIdentifier extension it does not know.
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .unwrap();
        let certified = CertifiedKey::new(vec![certificate.der().clone()], signing_key);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        if presented.alpn {
            config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
        }
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    async fn check(presented: Presented) -> Result<(), ChallengeError> {
        let port = serve(presented).await;
        let settings = ValidationSettings {
            tls_alpn_port: port,
            resolve_all_to: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            timeout: Duration::from_secs(5),
            ..ValidationSettings::default()
        };
        validate(&settings, DOMAIN, KEY_AUTHORIZATION).await
    }

    #[track_caller]
    fn assert_fails(result: Result<(), ChallengeError>, problem: &str, message_end: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.problem_type(), problem, "{err}");
        assert!(err.to_string().ends_with(message_end), "{err}");
    }

    /// The right certificate passes, over TLS 1.3 and over TLS 1.2.
    #[tokio::test]
    async fn the_right_certificate_passes() {
        check(Presented::answer(KEY_AUTHORIZATION)).await.unwrap();
        check(Presented {
            tls12_only: true,
            ..Presented::answer(KEY_AUTHORIZATION)
        })
        .await
        .unwrap();
        // The name is compared without regard to case.
        check(Presented {
            names: vec![DOMAIN.to_ascii_uppercase()],
            ..Presented::answer(KEY_AUTHORIZATION)
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_wrong_digest_fails() {
        assert_fails(
            check(Presented::answer("another.key-authorization")).await,
            "incorrectResponse",
            "has an acmeIdentifier that is not SHA-256 of the key authorization",
        );
    }

    #[tokio::test]
    async fn a_non_critical_extension_fails() {
        let mut content = vec![0x04, 0x20];
        content.extend_from_slice(&Sha256::digest(KEY_AUTHORIZATION));
        // from_oid_content makes a non-critical extension.
        let extension = CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 31], content);
        assert_fails(
            check(Presented {
                extension: Some(extension),
                ..Presented::answer(KEY_AUTHORIZATION)
            })
            .await,
            "incorrectResponse",
            "has an acmeIdentifier extension not marked critical",
        );
    }

    #[tokio::test]
    async fn a_missing_extension_fails() {
        assert_fails(
            check(Presented {
                extension: None,
                ..Presented::answer(KEY_AUTHORIZATION)
            })
            .await,
            "incorrectResponse",
            "must carry one acmeIdentifier extension (1.3.6.1.5.5.7.1.31); it carries 0",
        );
    }

    #[tokio::test]
    async fn an_extra_or_other_name_fails() {
        assert_fails(
            check(Presented {
                names: vec![DOMAIN.to_owned(), "other.example.test".to_owned()],
                ..Presented::answer(KEY_AUTHORIZATION)
            })
            .await,
            "incorrectResponse",
            "must name exactly one DNS name, www.example.test, in its subjectAltName; \
             it names DNSName(www.example.test), DNSName(other.example.test)",
        );
        assert_fails(
            check(Presented {
                names: vec!["other.example.test".to_owned()],
                ..Presented::answer(KEY_AUTHORIZATION)
            })
            .await,
            "incorrectResponse",
            "it names DNSName(other.example.test)",
        );
    }

    /// A server that does not speak acme-tls/1 (an ordinary HTTPS server)
    /// fails as a TLS problem.
    #[tokio::test]
    async fn no_alpn_fails() {
        assert_fails(
            check(Presented {
                alpn: false,
                ..Presented::answer(KEY_AUTHORIZATION)
            })
            .await,
            "tls",
            "did not select the ALPN protocol acme-tls/1 (it selected none)",
        );
    }

    /// Something that is not TLS at all: a TLS problem naming the address.
    #[tokio::test]
    async fn a_server_that_is_not_tls_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let settings = ValidationSettings {
            tls_alpn_port: port,
            resolve_all_to: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            timeout: Duration::from_secs(5),
            ..ValidationSettings::default()
        };
        let err = validate(&settings, DOMAIN, KEY_AUTHORIZATION)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "tls", "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "the TLS handshake with www.example.test (127.0.0.1:{port}) failed: "
            )),
            "{err}"
        );
    }
}
