//! The workload API against a real daemon: bootstrap, renewal, and every
//! refusal with its exact status and no trace in the store.

mod common;

use certd::ErrorKind;
use certd::api::client::ClientError;
use common::in_process::InProcess;
use common::{Daemon, Identity, Served, csr_for, refusal};
use rcgen::{BasicConstraints, IsCa, KeyPair, SanType};

/// A workload bootstrapped with a join token gets a 24-hour certificate whose
/// names come from the token's service, with the chain and the bundle.
#[tokio::test]
async fn bootstrap_issues_a_certificate_for_the_tokens_service() {
    let daemon = Daemon::start();
    let identity = daemon.bootstrap("billing").await;
    let issued = &identity.issued;
    assert_eq!(issued.spiffe_id, "spiffe://certd.internal/svc/billing");
    assert_eq!(identity.chain().len(), 2, "leaf then intermediate");
    assert_eq!(issued.trust_bundle_pem, daemon.bundle_pem());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (issued.not_after - now - 24 * 3600).abs() <= 5,
        "24 hours of validity"
    );

    let chain = identity.chain();
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        [
            "DNSName(billing.certd.internal)",
            "URI(spiffe://certd.internal/svc/billing)"
        ]
    );
    assert_eq!(
        daemon.certificate_count(),
        2,
        "the serving certificate and this one"
    );
}

/// Renewal over mTLS issues a new certificate with the same identity for a
/// new key, and records which certificate it renewed.
#[tokio::test]
async fn renewal_over_mtls_keeps_the_identity() {
    let daemon = Daemon::start();
    let first = daemon.bootstrap("billing").await;
    let new_key = KeyPair::generate().unwrap();
    let renewed = daemon
        .client(Some(&first))
        .await
        .renew(csr_for(&new_key, None, vec![]))
        .await
        .expect("renew");
    assert_eq!(renewed.spiffe_id, first.issued.spiffe_id);
    assert_ne!(renewed.serial, first.issued.serial);
    let renewed = Identity::new(new_key, renewed);
    let chain = renewed.chain();
    let reference = rcgen_spki_cert(&renewed.key);
    assert_eq!(
        x509_parser::parse_x509_certificate(&chain[0])
            .unwrap()
            .1
            .public_key()
            .raw,
        x509_parser::parse_x509_certificate(&reference)
            .unwrap()
            .1
            .public_key()
            .raw,
        "the new certificate carries the new key"
    );

    let output = daemon.cli(&["show", "--json", &renewed.issued.serial]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["renewed_from"], first.issued.serial.as_str());
    assert_eq!(shown["attestation"], "renewal");

    // The renewed certificate can itself renew.
    let again = daemon.renew(Some(&renewed)).await;
    assert!(again.is_ok(), "{again:?}");
}

fn rcgen_spki_cert(key: &KeyPair) -> Vec<u8> {
    rcgen::CertificateParams::default()
        .self_signed(key)
        .unwrap()
        .der()
        .to_vec()
}

/// Renewal without a client certificate is UNAUTHENTICATED.
#[tokio::test]
async fn renewal_without_a_client_certificate_is_unauthenticated() {
    let daemon = Daemon::start();
    assert_renewal_unauthenticated(&daemon, None, "client certificate").await;
}

/// Renews as `identity`; expects UNAUTHENTICATED saying `says`, and nothing
/// issued.
async fn assert_renewal_unauthenticated(daemon: &Served, identity: Option<&Identity>, says: &str) {
    let before = daemon.certificate_count();
    let (kind, message) = refusal(daemon.renew(identity).await);
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(message.contains(says), "{message}");
    assert_eq!(daemon.certificate_count(), before);
}

/// A certificate certd issued that has expired cannot renew: the caller
/// gets UNAUTHENTICATED naming the expiry, and nothing is issued.
#[tokio::test(flavor = "multi_thread")]
async fn renewal_with_an_expired_certificate_is_unauthenticated() {
    let daemon = InProcess::start().await;
    let out = daemon.tmp.path().join("short");
    let output = daemon.ci_issue("billing", &out, &["--ttl", "1s"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let expired = Identity {
        key: KeyPair::from_pem(&std::fs::read_to_string(out.join("key.pem")).unwrap()).unwrap(),
        key_pem: std::fs::read_to_string(out.join("key.pem")).unwrap(),
        chain_pem: std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        issued: placeholder_issued(),
    };
    daemon.advance(std::time::Duration::from_millis(2100));
    assert_renewal_unauthenticated(&daemon, Some(&expired), "expired").await;
}

/// A certificate signed by certd's intermediate but never recorded (a
/// forgery made with a stolen key, say) cannot renew either.
#[tokio::test]
async fn renewal_with_an_unrecorded_certificate_is_unauthenticated() {
    let daemon = Daemon::start();
    let key_pem = std::fs::read_to_string(daemon.data_dir.join("intermediate.key")).unwrap();
    let cert_pem = std::fs::read_to_string(daemon.data_dir.join("intermediate.pem")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem).unwrap()).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["billing.certd.internal".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let forged = Identity {
        key_pem: key.serialize_pem(),
        key,
        chain_pem: format!("{}{}", cert.pem(), cert_pem),
        issued: placeholder_issued(),
    };
    assert_renewal_unauthenticated(&daemon, Some(&forged), "no issuance record").await;
}

fn placeholder_issued() -> certd::api::client::IssuedCertificate {
    certd::api::client::IssuedCertificate {
        serial: String::new(),
        certificate_pem: String::new(),
        chain_pem: String::new(),
        trust_bundle_pem: String::new(),
        not_after: 0,
        spiffe_id: String::new(),
        federated_bundles: Vec::new(),
    }
}

/// Each kind of bad request gets its exact status code, and none of them
/// writes anything: the certificate count is unchanged and the token they
/// carried still works afterwards.
#[tokio::test]
async fn refusals_have_exact_codes_and_change_nothing() {
    let daemon = Daemon::start();
    let token = daemon.token("billing");
    let before = daemon.certificate_count();
    let mut client = daemon.client(None).await;
    let key = KeyPair::generate().unwrap();
    let good_csr = csr_for(&key, Some("billing"), vec![]);

    let mut bad_signature = good_csr.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 0x01;
    let (kind, message) = refusal(client.issue(bad_signature, &token).await);
    assert_eq!(kind, ErrorKind::InvalidInput);
    assert!(message.contains("signature"), "{message}");

    let (kind, message) = refusal(client.issue(vec![0x30, 0x03, 0x02, 0x01], &token).await);
    assert_eq!(kind, ErrorKind::InvalidInput);
    assert!(message.contains("PKCS#10"), "{message}");

    let oversized = csr_for(
        &key,
        None,
        vec![SanType::DnsName("a".repeat(17 * 1024).try_into().unwrap())],
    );
    let (kind, message) = refusal(client.issue(oversized, &token).await);
    assert_eq!(kind, ErrorKind::InvalidInput);
    assert!(message.contains("limit"), "{message}");

    let other_service = csr_for(
        &key,
        None,
        vec![SanType::DnsName(
            "payments.certd.internal".try_into().unwrap(),
        )],
    );
    let (kind, message) = refusal(client.issue(other_service, &token).await);
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(message.contains("DNS:payments.certd.internal"), "{message}");

    let other_cn = csr_for(&key, Some("payments"), vec![]);
    let (kind, message) = refusal(client.issue(other_cn, &token).await);
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(message.contains("CN=payments"), "{message}");

    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_csr = ca_params.serialize_request(&key).unwrap().der().to_vec();
    let (kind, message) = refusal(client.issue(ca_csr, &token).await);
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(message.contains("CA"), "{message}");

    let (kind, _) = refusal(
        client
            .issue(good_csr.clone(), "certd-jt-notarealtoken")
            .await,
    );
    assert_eq!(kind, ErrorKind::Unauthenticated);
    let (kind, _) = refusal(client.issue(good_csr.clone(), "").await);
    assert_eq!(kind, ErrorKind::Unauthenticated);

    assert_eq!(
        daemon.certificate_count(),
        before,
        "no refusal wrote a certificate"
    );

    // The token survived every refusal, works once, and then never again.
    client
        .issue(good_csr.clone(), &token)
        .await
        .expect("the untouched token works");
    let (kind, message) = refusal(client.issue(good_csr, &token).await);
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(message.contains("already used"), "{message}");
    assert_eq!(daemon.certificate_count(), before + 1);
}

/// An expired join token is UNAUTHENTICATED and issues nothing.
#[tokio::test(flavor = "multi_thread")]
async fn expired_join_token_is_unauthenticated() {
    let daemon = InProcess::start().await;
    daemon.entry("billing", &["token:billing"], &[]);
    let output = daemon.cli(&["token", "create", "--service", "billing", "--ttl", "1s"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let token = common::stdout(&output).trim().to_owned();
    let before = daemon.certificate_count();
    daemon.advance(std::time::Duration::from_millis(2100));
    let key = KeyPair::generate().unwrap();
    let (kind, message) = refusal(
        daemon
            .client(None)
            .await
            .issue(csr_for(&key, None, vec![]), &token)
            .await,
    );
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(message.contains("expired"), "{message}");
    assert_eq!(daemon.certificate_count(), before);
}

/// Many concurrent requests with one token: exactly one certificate.
#[tokio::test]
async fn concurrent_requests_with_one_token_issue_exactly_one_certificate() {
    let daemon = Daemon::start();
    let token = daemon.token("billing");
    let before = daemon.certificate_count();
    let mut attempts = Vec::new();
    for _ in 0..16 {
        let mut client = daemon.client(None).await;
        let token = token.clone();
        attempts.push(tokio::spawn(async move {
            let key = KeyPair::generate().unwrap();
            client.issue(csr_for(&key, None, vec![]), &token).await
        }));
    }
    let mut issued = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => issued += 1,
            Err(error) => assert!(
                matches!(
                    error,
                    ClientError::Refused {
                        kind: ErrorKind::Unauthenticated,
                        ..
                    }
                ),
                "{error}"
            ),
        }
    }
    assert_eq!(issued, 1);
    assert_eq!(daemon.certificate_count(), before + 1);
}

/// Every CSR key type certd accepts gets a certificate; RSA keys also get
/// keyEncipherment.
#[tokio::test]
async fn each_accepted_key_type_is_issued() {
    let daemon = Daemon::start();
    for algorithm in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let key = KeyPair::generate_for(algorithm).unwrap();
        let token = daemon.token("billing");
        let result = daemon
            .client(None)
            .await
            .issue(csr_for(&key, None, vec![]), &token)
            .await;
        assert!(result.is_ok(), "{algorithm:?}: {result:?}");
    }
}

/// GetTrustBundle and GetStatus answer without a client certificate.
#[tokio::test]
async fn trust_bundle_and_status_are_public() {
    let daemon = Daemon::start();
    let identity = daemon.bootstrap("billing").await;
    let mut client = daemon.client(None).await;
    let (bundle, trust_domain) = client.trust_bundle().await.unwrap();
    assert_eq!(bundle, daemon.bundle_pem());
    assert_eq!(trust_domain, "certd.internal");
    let serial = identity.issued.serial.to_uppercase();
    assert_eq!(client.status(&serial).await.unwrap().status, "good");
    assert_eq!(client.status("0123abcd").await.unwrap().status, "unknown");
    let (kind, _) = refusal(client.status("not hex").await);
    assert_eq!(kind, ErrorKind::InvalidInput);
}

/// Per-service rate limits refuse with RESOURCE_EXHAUSTED and a retry hint,
/// write nothing, leave the token usable, and do not touch other services.
#[tokio::test]
async fn per_service_rate_limits_refuse_with_a_retry_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        "[limits]\nservice_issuance_rate = 0.1\nservice_issuance_burst = 2\n",
    )
    .unwrap();
    let data_dir = tmp.path().join("ca");
    let config = config.to_str().unwrap().to_owned();
    let daemon = Daemon::start_in(tmp, data_dir, &["--config", &config]);
    daemon.bootstrap("billing").await;
    daemon.bootstrap("billing").await;
    let token = daemon.token("billing");
    let before = daemon.certificate_count();
    let key = KeyPair::generate().unwrap();
    let (kind, message) = refusal(
        daemon
            .client(None)
            .await
            .issue(csr_for(&key, None, vec![]), &token)
            .await,
    );
    assert_eq!(kind, ErrorKind::Exhausted);
    assert!(
        message.contains("service billing") && message.contains("retry after"),
        "{message}"
    );
    assert_eq!(
        daemon.certificate_count(),
        before,
        "a refusal writes nothing"
    );
    daemon.bootstrap("payments").await;
    assert!(
        daemon.log_text().contains("rate limit"),
        "the refusal is audited"
    );
}

/// A request larger than `limits.max_request_bytes` is refused before it is
/// decoded, and nothing is written.
#[tokio::test]
async fn requests_over_the_configured_size_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(&config, "[limits]\nmax_request_bytes = 8192\n").unwrap();
    let data_dir = tmp.path().join("ca");
    let config = config.to_str().unwrap().to_owned();
    let daemon = Daemon::start_in(tmp, data_dir, &["--config", &config]);
    let token = daemon.token("billing");
    let before = daemon.certificate_count();
    let key = KeyPair::generate().unwrap();
    let large = csr_for(
        &key,
        None,
        vec![SanType::DnsName("a".repeat(10 * 1024).try_into().unwrap())],
    );
    let (kind, message) = refusal(daemon.client(None).await.issue(large, &token).await);
    assert_eq!(kind, ErrorKind::InvalidInput, "{message}");
    assert!(
        message.contains("too large") || message.contains("length"),
        "{message}"
    );
    assert_eq!(daemon.certificate_count(), before);
    let small = csr_for(&key, None, vec![]);
    assert!(
        daemon.client(None).await.issue(small, &token).await.is_ok(),
        "the token is still good"
    );
}

/// The standard gRPC health service answers on the TLS port, for the whole
/// server and for the CA service, and refuses to guess about others.
#[tokio::test]
async fn the_grpc_health_service_reports_serving() {
    let daemon = Daemon::start();
    let mut client = daemon.client(None).await;
    // The reporter sets the status within its first second.
    let started = std::time::Instant::now();
    while client.health("").await.ok().as_deref() != Some("SERVING") {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        client
            .health("certd.v1.CertificateAuthority")
            .await
            .unwrap(),
        "SERVING"
    );
    let (kind, _) = common::refusal(client.health("no.such.Service").await);
    assert_eq!(kind, certd::ErrorKind::NotFound);
}

/// The wire's generic attestation (a kind and its bytes) reaches the same
/// attestors as the named fields: a join token as kind `join-token` issues
/// once; a kind no attestor here has is UNAUTHENTICATED naming it; a kind
/// that is not one is INVALID_ARGUMENT; none of them issues anything else.
#[tokio::test(flavor = "multi_thread")]
async fn generic_attestation_evidence_reaches_the_attestor_of_its_kind() {
    let daemon = InProcess::start().await;
    let token = daemon.token("billing");
    let before = daemon.certificate_count();
    let key = KeyPair::generate().unwrap();
    let issued = daemon
        .client(None)
        .await
        .issue_with_evidence(
            csr_for(&key, None, vec![]),
            "join-token",
            token.clone().into_bytes(),
        )
        .await
        .expect("a join token in the generic form");
    assert_eq!(issued.spiffe_id, "spiffe://certd.internal/svc/billing");
    assert_eq!(daemon.certificate_count(), before + 1);

    let (kind, message) = refusal(
        daemon
            .client(None)
            .await
            .issue_with_evidence(
                csr_for(&key, None, vec![]),
                "join-token",
                token.into_bytes(),
            )
            .await,
    );
    assert_eq!(kind, ErrorKind::Unauthenticated, "used once: {message}");
    let (kind, message) = refusal(
        daemon
            .client(None)
            .await
            .issue_with_evidence(csr_for(&key, None, vec![]), "tpm", b"quote".to_vec())
            .await,
    );
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(
        message.contains("does not accept tpm attestation"),
        "{message}"
    );
    let (kind, message) = refusal(
        daemon
            .client(None)
            .await
            .issue_with_evidence(csr_for(&key, None, vec![]), "K8S Token", Vec::new())
            .await,
    );
    assert_eq!(kind, ErrorKind::InvalidInput);
    assert!(message.contains("is not a kind"), "{message}");
    let (kind, _) = refusal(
        daemon
            .client(None)
            .await
            .issue_with_evidence(csr_for(&key, None, vec![]), "join-token", vec![0xff, 0xfe])
            .await,
    );
    assert_eq!(
        kind,
        ErrorKind::Unauthenticated,
        "evidence that is not UTF-8"
    );
    assert_eq!(daemon.certificate_count(), before + 1);
    // The kinds a caller names never become metric labels: a kind this
    // certd does not run is counted as "unknown".
    let metrics = format!("{}/metrics", daemon.http);
    let answer = tokio::task::spawn_blocking(move || common::http("GET", &metrics, &[], b""))
        .await
        .unwrap();
    let text = String::from_utf8(answer.body).unwrap();
    assert!(!text.contains("attestation=\"tpm\""), "{text}");
    assert!(text.contains("attestation=\"unknown\""), "{text}");
}
