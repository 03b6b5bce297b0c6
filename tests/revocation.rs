//! Revocation end to end: `certd revoke`, the CRL and the OCSP responder, as
//! relying parties (rustls, OpenSSL, raw HTTP) see them.

mod common;

use std::sync::Arc;

use certd::ErrorKind;
use certd::api::client::ClientError;
use common::in_process::InProcess;
use common::{
    Daemon, Identity, Served, csr_for, http, openssl, pem_certs, provider, roots, stderr, stdout,
};
use rustls::pki_types::{CertificateRevocationListDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::der::{Decode, Encode};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request, TbsRequest, Version,
};

/// A server that requires client certificates and checks them against `crl`.
fn crl_checking_server(
    identity: &Identity,
    bundle: &str,
    crl: Vec<u8>,
) -> Arc<rustls::ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(bundle), provider())
        .with_crls(vec![CertificateRevocationListDer::from(crl)])
        .only_check_end_entity_revocation()
        .build()
        .unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain(), identity.private_key())
            .unwrap(),
    )
}

/// One mTLS exchange; Ok if both sides completed it.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: &Identity,
    bundle: &str,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(bundle))
        .with_client_auth_cert(client.chain(), client.private_key())
        .unwrap();
    let client_side = async {
        let tcp = TcpStream::connect(address).await.unwrap();
        let name = ServerName::try_from("billing.certd.internal").unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    let server_result = server_side.await.unwrap();
    client_result_then_server(client_side, server_result)
}

fn client_result_then_server(
    client: Result<(), String>,
    server: Result<(), String>,
) -> Result<(), String> {
    server?;
    client
}

fn revoke(daemon: &Served, args: &[&str]) -> String {
    let mut all = vec!["revoke"];
    all.extend_from_slice(args);
    let output = daemon.cli(&all);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

/// After `certd revoke`, a server that reloads the CRL refuses the revoked
/// workload's handshake while another workload still gets through.
#[tokio::test(flavor = "multi_thread")]
async fn a_crl_checking_server_refuses_a_revoked_workload() {
    let daemon = InProcess::start().await;
    let billing = daemon.bootstrap("billing").await;
    let payments = daemon.bootstrap("payments").await;
    let orders = daemon.bootstrap("orders").await;
    let bundle = daemon.bundle_pem();

    let crl = http("GET", &format!("{}/crl", daemon.http), &[], b"").body;
    let server = crl_checking_server(&billing, &bundle, crl);
    handshake(server.clone(), &payments, &bundle)
        .await
        .expect("payments before revocation");
    handshake(server, &orders, &bundle)
        .await
        .expect("orders before revocation");

    let output = revoke(
        &daemon,
        &[&payments.issued.serial, "--reason", "key-compromise"],
    );
    assert!(
        output.contains("revoked") && output.contains("key-compromise"),
        "{output}"
    );

    let (crl, _) = daemon.client(None).await.crl().await.unwrap();
    let server = crl_checking_server(&billing, &bundle, crl);
    let refused = handshake(server.clone(), &payments, &bundle).await;
    let error = refused.expect_err("the revoked workload must be refused");
    assert!(
        error.contains("Revoked") || error.contains("revoked") || error.contains("alert"),
        "{error}"
    );
    handshake(server, &orders, &bundle)
        .await
        .expect("orders after revocation");
}

/// Revocation is idempotent, keeps the first time and reason, reaches
/// GetStatus, blocks renewal; unknown serials are NOT_FOUND.
#[tokio::test(flavor = "multi_thread")]
async fn revocation_is_idempotent_visible_and_final() {
    let daemon = InProcess::start().await;
    let payments = daemon.bootstrap("payments").await;
    let serial = payments.issued.serial.clone();
    revoke(&daemon, &[&serial, "--reason", "superseded"]);
    let again = revoke(
        &daemon,
        &[&serial.to_uppercase(), "--reason", "key-compromise"],
    );
    assert!(
        again.contains("already revoked") && again.contains("superseded"),
        "{again}"
    );

    let status = daemon.client(None).await.status(&serial).await.unwrap();
    assert_eq!(status.status, "revoked");
    assert_eq!(status.revocation_reason, "superseded");
    assert!(status.revoked_at > 0);

    let renewal = daemon.renew(Some(&payments)).await;
    match renewal {
        Err(ClientError::Refused { kind, message }) => {
            assert_eq!(kind, ErrorKind::Unauthenticated);
            assert!(message.contains("revoked"), "{message}");
        }
        other => panic!("a revoked certificate must not renew: {other:?}"),
    }

    let output = daemon.cli(&["revoke", "0123abcd"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(stderr(&output).contains("not found"));
    let output = daemon.cli(&["revoke", &serial, "--reason", "because"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = daemon.cli(&["revoke"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// The serials a DER CRL lists, as hex.
fn crl_serials(der: &[u8]) -> Vec<String> {
    let (_, parsed) = x509_parser::parse_x509_crl(der).unwrap();
    parsed
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect()
}

/// A revocation answers revoked over OCSP at once, even where a good answer
/// was cached; `certd revoke` (waiting, the default) returns once the
/// served CRL lists it; with `--no-wait-crl` it returns CRL number 0 and the
/// background publisher's next CRL lists it without anyone asking.
#[tokio::test(flavor = "multi_thread")]
async fn revocations_reach_ocsp_at_once_and_the_crl_with_or_without_waiting() {
    let daemon = InProcess::start().await;
    let intermediate = std::fs::read_to_string(daemon.data_dir.join("intermediate.pem")).unwrap();
    let waited = daemon.bootstrap("payments").await.issued.serial;
    let not_waited = daemon.bootstrap("orders").await.issued.serial;
    // Nonce-free questions, the cacheable kind: asked once before, their
    // good answers sit in the OCSP cache.
    let question = |serial: &str| ocsp_request(&intermediate, &hex::decode(serial).unwrap(), None);
    for serial in [&waited, &not_waited] {
        let (status, _) = single_status(&ocsp_post(&daemon, &question(serial)));
        assert!(matches!(status, CertStatus::Good(_)), "{status:?}");
    }
    let builds_before = daemon.authority.revocations().crl_builds();

    let output = revoke(&daemon, &[&waited, "--json"]);
    let answer: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    let crl_number = answer["crl_number"].as_u64().unwrap();
    assert!(crl_number > 0, "{output}");
    let (status, _) = single_status(&ocsp_post(&daemon, &question(&waited)));
    assert!(matches!(status, CertStatus::Revoked(_)), "{status:?}");
    let crl = http("GET", &format!("{}/crl", daemon.http), &[], b"").body;
    assert!(crl_serials(&crl).contains(&waited));

    let output = revoke(&daemon, &[&not_waited, "--no-wait-crl", "--json"]);
    let answer: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    assert_eq!(answer["crl_number"], 0, "{output}");
    assert_eq!(answer["certificates"][0]["newly_revoked"], true, "{output}");
    let (status, _) = single_status(&ocsp_post(&daemon, &question(&not_waited)));
    assert!(matches!(status, CertStatus::Revoked(_)), "{status:?}");
    let text = revoke(&daemon, &[&not_waited, "--no-wait-crl"]);
    assert!(text.contains("not waiting for the CRL"), "{text}");
    // Built in the background, nobody asking: the CRL served moves past the
    // one the waiting revocation named without any call that builds or
    // wakes the publisher (`wait_for_crl` and `GET /crl` would). Polled, a
    // bounded wait on the event, not a sleep standing in for it.
    let revocations = daemon.authority.revocations();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while revocations.crl_number() <= crl_number {
        assert!(
            std::time::Instant::now() < deadline,
            "the publisher built no CRL after a revocation that did not wait"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let crl = http("GET", &format!("{}/crl", daemon.http), &[], b"").body;
    let listed = crl_serials(&crl);
    assert!(
        listed.contains(&waited) && listed.contains(&not_waited),
        "{listed:?}"
    );
    assert!(revocations.crl_builds() >= builds_before + 2);
}

/// `certd revoke --service` revokes every unexpired certificate of it.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_service_revokes_all_its_certificates() {
    let daemon = InProcess::start().await;
    let first = daemon.bootstrap("payments").await;
    let second = daemon.bootstrap("payments").await;
    let other = daemon.bootstrap("billing").await;
    let output = revoke(
        &daemon,
        &[
            "--service",
            "payments",
            "--reason",
            "cessation-of-operation",
        ],
    );
    assert_eq!(
        output.lines().filter(|l| l.starts_with("revoked")).count(),
        2,
        "{output}"
    );
    let mut client = daemon.client(None).await;
    assert_eq!(
        client.status(&first.issued.serial).await.unwrap().status,
        "revoked"
    );
    assert_eq!(
        client.status(&second.issued.serial).await.unwrap().status,
        "revoked"
    );
    assert_eq!(
        client.status(&other.issued.serial).await.unwrap().status,
        "good"
    );
    let output = daemon.cli(&["revoke", "--service", "nobody"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
}

/// A service with more certificates than one request revokes at once
/// (they go in flight together, sharing flushes): every one is revoked,
/// listed in serial order, audited, and in the CRL the answer names; one
/// revoked before is reported as such and keeps its first revocation.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_service_of_many_certificates_revokes_and_audits_each() {
    const COUNT: usize = 150;
    let daemon = InProcess::start().await;
    let serials = issue_many(&daemon, "fleet", COUNT).await;
    let mut client = daemon.client(None).await;
    let other = daemon.bootstrap("billing").await;
    revoke(&daemon, &["--reason", "key-compromise", &serials[7]]);

    let output = revoke(&daemon, &["--service", "fleet", "--json"]);
    let answer: serde_json::Value = serde_json::from_str(&output).unwrap();
    let listed: Vec<&serde_json::Value> =
        answer["certificates"].as_array().unwrap().iter().collect();
    let listed_serials: Vec<String> = listed
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_lowercase())
        .collect();
    let mut expected = serials.clone();
    expected.sort();
    assert_eq!(
        listed_serials, expected,
        "every certificate, in serial order"
    );
    for certificate in &listed {
        let serial = certificate["serial"].as_str().unwrap().to_lowercase();
        let earlier = serial == serials[7];
        assert_eq!(certificate["newly_revoked"], !earlier, "{certificate}");
        let reason = if earlier {
            "key-compromise"
        } else {
            "unspecified"
        };
        assert_eq!(certificate["reason"], reason, "{certificate}");
    }
    for serial in &serials {
        assert_eq!(client.status(serial).await.unwrap().status, "revoked");
    }
    assert_eq!(
        client.status(&other.issued.serial).await.unwrap().status,
        "good"
    );
    let (crl, number) = client.crl().await.unwrap();
    assert!(number >= answer["crl_number"].as_u64().unwrap());
    let in_crl = crl_serials(&crl);
    assert!(
        serials.iter().all(|serial| in_crl.contains(serial)),
        "the CRL lists them all"
    );
    // One entry per certificate, and one for the earlier revocation.
    let mut audited = audited_revocations(&daemon, "fleet");
    assert_eq!(audited.len(), COUNT + 1);
    audited.sort();
    audited.dedup();
    assert_eq!(audited, expected, "each certificate audited");
}

/// Issues `count` certificates of `service` (an entry for its join tokens
/// is made first); their serials, in the order issued.
async fn issue_many(daemon: &Served, service: &str, count: usize) -> Vec<String> {
    daemon.entry(service, &[&format!("token:{service}")], &[]);
    let mut client = daemon.client(None).await;
    let mut serials = Vec::new();
    for token in &daemon.tokens(service, count) {
        let key = rcgen::KeyPair::generate().unwrap();
        let issued = client
            .issue(csr_for(&key, None, vec![]), token)
            .await
            .unwrap();
        serials.push(issued.serial);
    }
    assert_eq!(serials.len(), count);
    serials
}

/// The serials of `service`'s certificates the audit says a revocation
/// request revoked.
fn audited_revocations(daemon: &Served, service: &str) -> Vec<String> {
    let audit = daemon.cli(&["audit", "--event", "revoke", "--json", "--limit", "100000"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout(&audit)).unwrap();
    entries
        .iter()
        .filter(|entry| entry["service"] == service && entry["allowed"] == true)
        .map(|entry| entry["serial"].as_str().unwrap_or_default().to_lowercase())
        .collect()
}

/// A caller that goes away while its service's certificates are being
/// revoked does not cut the revocation short: every certificate ends
/// revoked and audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_revocation_ends_and_is_audited_when_its_caller_goes_away() {
    const COUNT: usize = 150;
    let daemon = InProcess::start().await;
    let mut serials = issue_many(&daemon, "fleet", COUNT).await;
    serials.sort();
    let mut admin = certd::api::client::AdminClient::connect(&daemon.data_dir.join("admin.sock"))
        .await
        .unwrap();
    let mut client = daemon.client(None).await;
    let fleet = certd::authority::RevokeTarget::Service("fleet".into());
    {
        let revoking = admin.revoke(
            &fleet,
            certd::ca::RevocationReason::Unspecified,
            certd::authority::CrlWait::UntilListed,
        );
        tokio::pin!(revoking);
        // The caller leaves as soon as the first certificate (the lowest
        // serial) is revoked, while the others are still to come; should
        // the whole request end first, it is simply answered.
        loop {
            tokio::select! {
                answer = &mut revoking => {
                    assert_eq!(answer.unwrap().certificates.len(), COUNT);
                    break;
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
            }
            if client.status(&serials[0]).await.unwrap().status == "revoked" {
                break;
            }
        }
    }
    drop(admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut audited = audited_revocations(&daemon, "fleet");
        audited.sort();
        if audited == serials {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 60 s the audit holds {} of {COUNT} revocations",
            audited.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for serial in &serials {
        assert_eq!(client.status(serial).await.unwrap().status, "revoked");
    }
}

/// The CRL number only grows, across revocations and restarts, and
/// revocations survive a restart.
// Multi-threaded: the gRPC client's connection must keep being served while
// the test thread waits for the daemon to exit.
#[tokio::test(flavor = "multi_thread")]
async fn crl_numbers_increase_across_restarts_and_revocations_survive() {
    let mut daemon = Daemon::start();
    let payments = daemon.bootstrap("payments").await;
    let (_, first) = daemon.client(None).await.crl().await.unwrap();
    revoke(&daemon, &[&payments.issued.serial]);
    let (_, second) = daemon.client(None).await.crl().await.unwrap();
    assert!(second > first, "{second} > {first}");
    daemon.terminate();

    let tmp = std::mem::replace(&mut daemon.tmp, tempfile::tempdir().unwrap());
    let restarted = Daemon::start_in(tmp, daemon.data_dir.clone(), &[]);
    let (crl, third) = restarted.client(None).await.crl().await.unwrap();
    assert!(third > second, "{third} > {second}");
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(listed, std::slice::from_ref(&payments.issued.serial));
    let status = restarted
        .client(None)
        .await
        .status(&payments.issued.serial)
        .await
        .unwrap();
    assert_eq!(status.status, "revoked");
}

/// The CRL is served as DER and PEM with caching headers, and a matching
/// If-None-Match gets 304.
#[tokio::test(flavor = "multi_thread")]
async fn crl_is_served_with_caching_headers() {
    let daemon = InProcess::start().await;
    let response = http("GET", &format!("{}/crl", daemon.http), &[], b"");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/pkix-crl")
    );
    let etag = response.header("etag").unwrap().to_owned();
    assert!(response.header("last-modified").is_some());
    let cache_control = response.header("cache-control").unwrap();
    let max_age: i64 = cache_control
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&max_age), "{cache_control}");

    let again = http(
        "GET",
        &format!("{}/crl", daemon.http),
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let pem = http("GET", &format!("{}/crl.pem", daemon.http), &[], b"");
    assert_eq!(pem.status, 200);
    assert!(
        String::from_utf8(pem.body)
            .unwrap()
            .starts_with("-----BEGIN X509 CRL-----")
    );
}

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

/// An OCSP request for `serial` under the issuer in `issuer_pem`, with an
/// optional nonce.
fn ocsp_request(issuer_pem: &str, serial: &[u8], nonce: Option<&[u8]>) -> Vec<u8> {
    let issuer = &pem_certs(issuer_pem)[0];
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer).unwrap();
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA1,
            parameters: None,
        },
        issuer_name_hash: OctetString::new(Sha1::digest(issuer.subject().as_raw()).to_vec())
            .unwrap(),
        issuer_key_hash: OctetString::new(
            Sha1::digest(&issuer.public_key().subject_public_key.data).to_vec(),
        )
        .unwrap(),
        serial_number: SerialNumber::new(serial).unwrap(),
    };
    let request_extensions = nonce.map(|nonce| {
        vec![x509_cert::ext::Extension {
            extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2"),
            critical: false,
            extn_value: OctetString::new(OctetString::new(nonce).unwrap().to_der().unwrap())
                .unwrap(),
        }]
    });
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions,
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap()
}

fn ocsp_post(daemon: &Served, body: &[u8]) -> OcspResponse {
    let response = http(
        "POST",
        &format!("{}/ocsp", daemon.http),
        &[("Content-Type", "application/ocsp-request")],
        body,
    );
    assert_eq!(
        response.status, 200,
        "OCSP errors travel inside a 200 response"
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/ocsp-response")
    );
    OcspResponse::from_der(&response.body).expect("a DER OCSP response")
}

fn single_status(response: &OcspResponse) -> (CertStatus, Option<Vec<u8>>) {
    assert_eq!(response.response_status, OcspResponseStatus::Successful);
    let bytes = response.response_bytes.as_ref().unwrap();
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    let nonce = basic.nonce().map(|n| n.0.as_bytes().to_vec());
    (basic.tbs_response_data.responses[0].cert_status, nonce)
}

/// Bad OCSP requests get the right OCSP error status, never a 500 or a
/// dropped connection; good ones answer good, revoked or unknown and echo a
/// nonce.
#[tokio::test(flavor = "multi_thread")]
async fn ocsp_answers_and_refuses_precisely() {
    let daemon = InProcess::start().await;
    let other = InProcess::start().await;
    let payments = daemon.bootstrap("payments").await;
    let intermediate = std::fs::read_to_string(daemon.data_dir.join("intermediate.pem")).unwrap();
    let serial = hex::decode(&payments.issued.serial).unwrap();

    let good = ocsp_request(&intermediate, &serial, Some(b"0123456789abcdef"));
    for malformed in [
        Vec::new(),
        good[..good.len() / 2].to_vec(),
        b"\x30\x82\xff\xffgarbage".to_vec(),
        vec![0x42; 300],
    ] {
        assert_eq!(
            ocsp_post(&daemon, &malformed).response_status,
            OcspResponseStatus::MalformedRequest
        );
    }
    let other_intermediate =
        std::fs::read_to_string(other.data_dir.join("intermediate.pem")).unwrap();
    let foreign = ocsp_request(&other_intermediate, &serial, None);
    assert_eq!(
        ocsp_post(&daemon, &foreign).response_status,
        OcspResponseStatus::Unauthorized
    );
    let oversized = http(
        "POST",
        &format!("{}/ocsp", daemon.http),
        &[],
        &vec![0x30; 64 * 1024],
    );
    assert_eq!(oversized.status, 413);

    let (status, nonce) = single_status(&ocsp_post(&daemon, &good));
    assert!(matches!(status, CertStatus::Good(_)), "{status:?}");
    assert_eq!(nonce.as_deref(), Some(b"0123456789abcdef".as_slice()));
    let (status, _) = single_status(&ocsp_post(
        &daemon,
        &ocsp_request(&intermediate, &[0x01, 0x02], None),
    ));
    assert!(matches!(status, CertStatus::Unknown(_)), "{status:?}");

    // GET, base64 in the path, answered from the cache once built.
    use base64::Engine;
    let plain = ocsp_request(&intermediate, &serial, None);
    let path = base64::engine::general_purpose::STANDARD.encode(&plain);
    let get = http("GET", &format!("{}/ocsp/{path}", daemon.http), &[], b"");
    assert_eq!(get.status, 200);
    assert!(get.header("cache-control").unwrap().contains("max-age="));
    let (status, _) = single_status(&OcspResponse::from_der(&get.body).unwrap());
    assert!(matches!(status, CertStatus::Good(_)));
    let garbage = http(
        "GET",
        &format!("{}/ocsp/!!notbase64!!", daemon.http),
        &[],
        b"",
    );
    assert_eq!(
        OcspResponse::from_der(&garbage.body)
            .unwrap()
            .response_status,
        OcspResponseStatus::MalformedRequest
    );

    // Revocation replaces the cached answer at once.
    revoke(
        &daemon,
        &[&payments.issued.serial, "--reason", "key-compromise"],
    );
    let get = http("GET", &format!("{}/ocsp/{path}", daemon.http), &[], b"");
    match single_status(&OcspResponse::from_der(&get.body).unwrap()).0 {
        CertStatus::Revoked(info) => {
            assert_eq!(
                info.revocation_reason,
                Some(x509_cert::ext::pkix::CrlReason::KeyCompromise)
            );
        }
        other => panic!("expected revoked, got {other:?}"),
    }
}

/// OpenSSL verifies the CRL's signature, says revoked / OK with
/// `verify -crl_check`, and its OCSP client reports good, then revoked with
/// the reason, verifying the response signature.
#[tokio::test(flavor = "multi_thread")]
async fn openssl_checks_the_crl_and_the_ocsp_responder() {
    if !common::openssl_available() {
        eprintln!("openssl not installed: skipping");
        return;
    }
    let daemon = InProcess::start().await;
    let payments = daemon.bootstrap("payments").await;
    let orders = daemon.bootstrap("orders").await;
    let dir = daemon.tmp.path();
    let bundle = daemon
        .data_dir
        .join("bundle.pem")
        .to_str()
        .unwrap()
        .to_owned();
    let intermediate = daemon
        .data_dir
        .join("intermediate.pem")
        .to_str()
        .unwrap()
        .to_owned();
    let payments_chain = common::write_file(&dir.join("payments.pem"), &payments.chain_pem);
    let orders_chain = common::write_file(&dir.join("orders.pem"), &orders.chain_pem);
    let ocsp_url = format!("{}/ocsp", daemon.http);

    let ocsp = |cert: &str| {
        openssl(&[
            "ocsp",
            "-issuer",
            &intermediate,
            "-cert",
            cert,
            "-url",
            &ocsp_url,
            "-CAfile",
            &bundle,
        ])
    };
    let (ok, text) = ocsp(&payments_chain);
    assert!(
        ok && text.contains("Response verify OK") && text.contains(": good"),
        "{text}"
    );

    revoke(
        &daemon,
        &[&payments.issued.serial, "--reason", "key-compromise"],
    );

    let (ok, text) = ocsp(&payments_chain);
    assert!(
        ok && text.contains("Response verify OK") && text.contains(": revoked"),
        "{text}"
    );
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    let (_, text) = ocsp(&orders_chain);
    assert!(text.contains(": good"), "{text}");

    let crl = http("GET", &format!("{}/crl.pem", daemon.http), &[], b"").body;
    let crl = common::write_file(&dir.join("crl.pem"), crl);
    let chain_file = common::write_file(
        &dir.join("ca-chain.pem"),
        format!(
            "{}{}",
            std::fs::read_to_string(&intermediate).unwrap(),
            daemon.bundle_pem()
        ),
    );
    let (ok, text) = openssl(&["crl", "-in", &crl, "-CAfile", &chain_file, "-noout"]);
    assert!(ok && text.contains("verify OK"), "{text}");

    let verify = |cert: &str| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            &bundle,
            "-untrusted",
            cert,
            "-CRLfile",
            &crl,
            cert,
        ])
    };
    let (ok, text) = verify(&payments_chain);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = verify(&orders_chain);
    assert!(ok && text.contains(": OK"), "{text}");
}
