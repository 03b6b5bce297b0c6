//! Two workloads with certificates from certd complete a real mTLS exchange
//! using only what certd gave them; a peer from another CA is rejected.
//! certd serves in the test's process: what is tested is the wire.

mod common;

use std::sync::Arc;

use common::in_process::InProcess;
use common::{Identity, provider, roots};
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A server that requires a client certificate chaining to `bundle_pem`.
fn server_config(identity: &Identity, bundle_pem: &str) -> Arc<rustls::ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(bundle_pem), provider())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain(), identity.private_key())
        .unwrap();
    Arc::new(config)
}

fn client_config(identity: &Identity, bundle_pem: &str) -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(bundle_pem))
        .with_client_auth_cert(identity.chain(), identity.private_key())
        .unwrap();
    Arc::new(config)
}

/// Runs one exchange: the client sends "ping", the server answers with the
/// SPIFFE ID it saw in the client's certificate.
async fn exchange(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&peer).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let uri = san
            .general_names
            .iter()
            .find_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
            .unwrap();
        tls.write_all(uri.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let client_result = async {
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(answer)
    }
    .await;
    let server_result = server_task.await.unwrap();
    server_result?;
    client_result
}

/// Billing serves, payments connects: each verifies the other with only
/// certd's bundle, and the server sees the client's SPIFFE ID.
#[tokio::test(flavor = "multi_thread")]
async fn two_workloads_complete_an_mtls_exchange() {
    let daemon = InProcess::start().await;
    let billing = daemon.bootstrap("billing").await;
    let payments = daemon.bootstrap("payments").await;
    let bundle = daemon.bundle_pem();
    let seen = exchange(
        server_config(&billing, &bundle),
        client_config(&payments, &bundle),
        "billing.certd.internal",
    )
    .await
    .expect("mTLS exchange");
    assert_eq!(seen, "spiffe://certd.internal/svc/payments");
}

/// The client checks the server's name: billing's certificate does not pass
/// for payments.
#[tokio::test(flavor = "multi_thread")]
async fn a_workload_cannot_pose_as_another_service() {
    let daemon = InProcess::start().await;
    let billing = daemon.bootstrap("billing").await;
    let payments = daemon.bootstrap("payments").await;
    let bundle = daemon.bundle_pem();
    let result = exchange(
        server_config(&billing, &bundle),
        client_config(&payments, &bundle),
        "payments.certd.internal",
    )
    .await;
    assert!(result.is_err(), "name mismatch must fail: {result:?}");
}

/// A peer whose certificate comes from another certd (another CA) is
/// rejected by the server, and cannot renew at certd either.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_from_another_ca_is_rejected() {
    let daemon = InProcess::start().await;
    let other = InProcess::start().await;
    let billing = daemon.bootstrap("billing").await;
    let intruder = other.bootstrap("payments").await;
    let bundle = daemon.bundle_pem();
    let result = exchange(
        server_config(&billing, &bundle),
        client_config(&intruder, &other.bundle_pem()),
        "billing.certd.internal",
    )
    .await;
    let error = result.expect_err("a foreign client certificate must be refused");
    assert!(
        error.contains("UnknownIssuer") || error.contains("unknown") || error.contains("alert"),
        "{error}"
    );

    let renewal = match daemon.try_client(Some(&intruder)).await {
        Err(error) => Err(error),
        Ok(mut client) => {
            let key = rcgen::KeyPair::generate().unwrap();
            client.renew(common::csr_for(&key, None, vec![])).await
        }
    };
    assert!(
        renewal.is_err(),
        "a foreign certificate cannot renew: {renewal:?}"
    );
}
