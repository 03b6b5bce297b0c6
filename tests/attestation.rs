//! Attestation and registration entries, end to end: Kubernetes
//! service-account tokens (made here with the test's own issuer keys, no
//! cluster needed), join tokens for entries, selector matching, and entry
//! changes taking effect without a restart.

mod common;

use base64::Engine;
use certd::ErrorKind;
use certd::api::client::IssuedCertificate;
use common::k8s_issuer::{ISSUER, JwksServer, RSA_PUBLIC, claims, es256, jwks, now, rs256, with};
use common::{Daemon, Identity, csr_for, refusal, stderr, stdout};
use rcgen::{KeyPair, SanType};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A daemon that trusts a test cluster's service-account issuer: an ES256
/// key in a JWKS file and the RSA fixture as a PEM key.
struct Cluster {
    daemon: Daemon,
    issuer_key: KeyPair,
}

impl Cluster {
    fn start() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let issuer_key = KeyPair::generate().unwrap();
        std::fs::write(tmp.path().join("jwks.json"), jwks(&[&issuer_key])).unwrap();
        std::fs::write(tmp.path().join("sa.pub"), RSA_PUBLIC).unwrap();
        let config = tmp.path().join("certd.toml");
        std::fs::write(
            &config,
            format!(
                "[kubernetes]\nissuer = \"{ISSUER}\"\njwks_file = \"jwks.json\"\npublic_key_files = [\"sa.pub\"]\n"
            ),
        )
        .unwrap();
        let data_dir = tmp.path().join("ca");
        let config = config.to_str().unwrap().to_owned();
        let daemon = Daemon::start_in(tmp, data_dir, &["--config", &config]);
        Cluster { daemon, issuer_key }
    }

    /// The entry for the test pod's namespace and service account, with
    /// `extra` arguments to `certd entry create`.
    fn billing_entry(&self, extra: &[&str]) -> String {
        self.daemon
            .entry("billing", &["k8s:ns:payments", "k8s:sa:billing"], extra)
    }

    /// A projected token for pod `billing-7d9f` of service account
    /// `payments/billing`, with `changes` applied to its claims.
    fn token(&self, changes: &[(&str, Value)]) -> String {
        let claims = changes.iter().fold(claims(), |claims, (field, value)| {
            with(claims, field, value.clone())
        });
        es256(&self.issuer_key, &claims)
    }

    async fn issue(
        &self,
        token: &str,
        csr: Vec<u8>,
    ) -> Result<IssuedCertificate, certd::api::client::ClientError> {
        self.daemon
            .client(None)
            .await
            .issue_with_kubernetes_token(csr, token)
            .await
    }
}

fn blank_csr() -> Vec<u8> {
    csr_for(&KeyPair::generate().unwrap(), None, vec![])
}

/// The SAN DNS names and URIs, and the lifetime in seconds, of a leaf.
fn names_and_lifetime(issued: &IssuedCertificate) -> (Vec<String>, Vec<String>, i64) {
    let der = &common::pem_certs(&issued.certificate_pem)[0];
    let (_, certificate) = X509Certificate::from_der(der).unwrap();
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    let san = certificate.subject_alternative_name().unwrap().unwrap();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(name) => dns.push(name.to_string()),
            GeneralName::URI(uri) => uris.push(uri.to_string()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    let validity = certificate.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    (dns, uris, lifetime)
}

fn audit(daemon: &Daemon) -> Vec<Value> {
    let output = daemon.cli(&["audit", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A pod's service-account token gets exactly the names, SPIFFE ID and
/// lifetime of the entry its namespace and service account match, with
/// ES256 (JWKS) and RS256 (PEM key) alike; the audit shows the selectors.
#[tokio::test]
async fn a_kubernetes_token_gets_the_names_of_its_entry() {
    let cluster = Cluster::start();
    let daemon = &cluster.daemon;
    cluster.billing_entry(&[
        "--dns",
        "billing.payments.svc.cluster.local",
        "--spiffe-id",
        "spiffe://certd.internal/ns/payments/sa/billing",
        "--ttl",
        "1h",
    ]);
    let issued = cluster
        .issue(&cluster.token(&[]), blank_csr())
        .await
        .unwrap();
    let (dns, uris, lifetime) = names_and_lifetime(&issued);
    assert_eq!(
        dns,
        [
            "billing.certd.internal",
            "billing.payments.svc.cluster.local"
        ]
    );
    assert_eq!(uris, ["spiffe://certd.internal/ns/payments/sa/billing"]);
    assert_eq!(issued.spiffe_id, uris[0]);
    assert_eq!(lifetime, 3600 + 60, "the entry's TTL plus the backdating");

    let issued = cluster.issue(&rs256(&claims()), blank_csr()).await;
    assert!(issued.is_ok(), "{issued:?}");

    // The command line, as an init container runs it.
    let token_file = daemon.tmp.path().join("k8s-token");
    std::fs::write(&token_file, format!("{}\n", cluster.token(&[]))).unwrap();
    let out = daemon.tmp.path().join("pod-identity");
    let output = daemon.cli(&[
        "request",
        "--server",
        &daemon.grpc,
        "--ca-bundle",
        daemon.data_dir.join("bundle.pem").to_str().unwrap(),
        "--k8s-token-file",
        token_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("spiffe://certd.internal/ns/payments/sa/billing"));
    assert!(out.join("key.pem").exists() && out.join("cert.pem").exists());

    // The load tool can drive this path too: one token for every request.
    let output = daemon.cli(&[
        "bench",
        "issue",
        "--server",
        &daemon.grpc,
        "--k8s-token-file",
        token_file.to_str().unwrap(),
        "--concurrency",
        "2",
        "--count",
        "10",
        "--json",
        // The entry it issues for is the operator's.
        "--allow-store-in-use",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: Value = serde_json::from_str(stdout(&output).lines().last().unwrap()).unwrap();
    assert_eq!(summary["op"], "issue-kubernetes");
    assert_eq!(
        (summary["ok"].as_u64(), summary["errors"].as_u64()),
        (Some(10), Some(0))
    );

    let trail = audit(daemon);
    let created = trail
        .iter()
        .find(|e| e["event"] == "create-entry")
        .expect("entry creation is audited");
    assert_eq!(
        created["selectors"],
        json!(["k8s:ns:payments", "k8s:sa:billing"])
    );
    let issues: Vec<&Value> = trail
        .iter()
        .filter(|e| e["event"] == "issue" && e["attestation"] == "kubernetes")
        .collect();
    assert_eq!(issues.len(), 13);
    assert_eq!(issues[0]["allowed"], true);
    assert!(
        issues[0]["selectors"]
            .as_array()
            .unwrap()
            .contains(&json!("k8s:pod-name:billing-7d9f")),
        "{issues:?}"
    );
    assert!(issues[0]["reason"].as_str().unwrap().starts_with("entry "));
}

/// A token with a wrong signature, issuer or audience, or an expired one,
/// is UNAUTHENTICATED, says why, and issues nothing.
#[tokio::test]
async fn each_bad_kubernetes_token_is_unauthenticated_and_changes_nothing() {
    let cluster = Cluster::start();
    let daemon = &cluster.daemon;
    cluster.billing_entry(&[]);
    let good = cluster.token(&[]);
    let forged = {
        let (body, _) = good.rsplit_once('.').unwrap();
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64]);
        format!("{body}.{signature}")
    };
    let before = daemon.certificate_count();
    for (token, says) in [
        (forged, "no trusted key verifies its signature"),
        (
            cluster.token(&[("iss", json!("https://other-cluster"))]),
            "issuer certd does not trust",
        ),
        (
            cluster.token(&[("aud", json!(["https://kubernetes.default.svc"]))]),
            "audience",
        ),
        (cluster.token(&[("exp", json!(now() - 300))]), "expired"),
    ] {
        let (kind, message) = refusal(cluster.issue(&token, blank_csr()).await);
        assert_eq!(kind, ErrorKind::Unauthenticated, "{message}");
        assert!(message.contains(says), "{says:?} not in {message:?}");
    }
    assert_eq!(daemon.certificate_count(), before);
    let refusals = audit(daemon)
        .into_iter()
        .filter(|e| e["event"] == "issue" && e["allowed"] == false)
        .count();
    assert_eq!(refusals, 4);
    let log = daemon.log_text();
    assert!(!log.contains(&good), "a token must never be logged");
}

/// Proven selectors must cover exactly one entry's full set: none and two
/// are PERMISSION_DENIED with the reason; fixing the entries works at once,
/// without a restart.
#[tokio::test]
async fn selectors_must_match_exactly_one_entry() {
    let cluster = Cluster::start();
    let daemon = &cluster.daemon;
    let before = daemon.certificate_count();
    daemon.entry("reports", &["k8s:ns:payments", "k8s:sa:reports"], &[]);
    let (kind, message) = refusal(cluster.issue(&cluster.token(&[]), blank_csr()).await);
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(
        message.contains("no registration entry matches the proven selectors"),
        "{message}"
    );
    assert!(message.contains("k8s:sa:billing"), "{message}");

    let namespace_wide = daemon.entry("payments", &["k8s:ns:payments"], &[]);
    let billing = daemon.entry("billing", &["k8s:sa:billing"], &[]);
    let (kind, message) = refusal(cluster.issue(&cluster.token(&[]), blank_csr()).await);
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(
        message.contains("match 2 registration entries"),
        "{message}"
    );
    assert!(message.contains(&namespace_wide) && message.contains(&billing));
    assert_eq!(daemon.certificate_count(), before);

    let output = daemon.cli(&["entry", "delete", &namespace_wide]);
    assert!(output.status.success(), "{}", stderr(&output));
    let issued = cluster
        .issue(&cluster.token(&[]), blank_csr())
        .await
        .unwrap();
    assert_eq!(issued.spiffe_id, "spiffe://certd.internal/svc/billing");
}

/// A CSR may ask for the entry's extra DNS name, but for nothing outside
/// the entry.
#[tokio::test]
async fn a_csr_asking_for_names_outside_the_entry_is_refused() {
    let cluster = Cluster::start();
    cluster.billing_entry(&["--dns", "billing.payments.svc.cluster.local"]);
    let key = KeyPair::generate().unwrap();
    let outside = csr_for(
        &key,
        None,
        vec![SanType::DnsName(
            "orders.payments.svc.cluster.local".try_into().unwrap(),
        )],
    );
    let (kind, message) = refusal(cluster.issue(&cluster.token(&[]), outside).await);
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(
        message.contains("orders.payments.svc.cluster.local"),
        "{message}"
    );
    let inside = csr_for(
        &key,
        Some("billing"),
        vec![SanType::DnsName(
            "billing.payments.svc.cluster.local".try_into().unwrap(),
        )],
    );
    assert!(cluster.issue(&cluster.token(&[]), inside).await.is_ok());
}

/// Deleting an entry stops new certificates for it (outstanding join
/// tokens included) and renewals of the certificates issued for it.
#[tokio::test]
async fn deleting_an_entry_stops_issuance_and_renewal() {
    let daemon = Daemon::start();
    let workload = daemon.bootstrap("billing").await;
    let spare_token = daemon.token("billing");
    let key = KeyPair::generate().unwrap();
    let renewed = daemon
        .client(Some(&workload))
        .await
        .renew(csr_for(&key, None, vec![]))
        .await
        .expect("renewal while the entry exists");
    let renewed = Identity::new(key, renewed);

    let output = daemon.cli(&["entry", "list", "--service", "billing", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let entries: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(entries.len(), 1);
    let id = entries[0]["id"].as_str().unwrap();
    let output = daemon.cli(&["entry", "delete", id]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("can no longer renew"));

    let before = daemon.certificate_count();
    for identity in [&workload, &renewed] {
        let (kind, message) = refusal(daemon.renew(Some(identity)).await);
        assert_eq!(kind, ErrorKind::PermissionDenied);
        assert!(message.contains("has been deleted"), "{message}");
    }
    let (kind, message) = refusal(
        daemon
            .client(None)
            .await
            .issue(blank_csr(), &spare_token)
            .await,
    );
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(message.contains("token:billing"), "{message}");
    assert_eq!(daemon.certificate_count(), before);
    let trail = audit(&daemon);
    let deletions = trail
        .iter()
        .filter(|e| e["event"] == "delete-entry" && e["allowed"] == true)
        .count();
    assert_eq!(deletions, 1);
    let refused_renewal = trail
        .iter()
        .find(|e| e["event"] == "renew" && e["allowed"] == false)
        .expect("the refused renewal is audited");
    assert_eq!(refused_renewal["service"], "billing");
    let reason = refused_renewal["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("presented certificate {}", workload.issued.serial)),
        "{reason}"
    );
}

/// Updating an entry applies to the next request, and a certificate issued
/// for it renews with the entry's new names.
#[tokio::test]
async fn an_updated_entry_gives_its_new_names_at_renewal() {
    let daemon = Daemon::start();
    let workload = daemon.bootstrap("billing").await;
    let output = daemon.cli(&["entry", "list", "--json"]);
    let entries: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let id = entries[0]["id"].as_str().unwrap().to_owned();
    let output = daemon.cli(&[
        "entry",
        "update",
        &id,
        "--selector",
        "token:billing",
        "--dns",
        "billing.example.com",
        "--ttl",
        "2h",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), id);

    let renewed = daemon.renew(Some(&workload)).await.unwrap();
    let (dns, uris, lifetime) = names_and_lifetime(&renewed);
    assert_eq!(dns, ["billing.certd.internal", "billing.example.com"]);
    assert_eq!(uris, ["spiffe://certd.internal/svc/billing"]);
    assert_eq!(lifetime, 2 * 3600 + 60);

    // Only what a flag names changes, and certd says what did.
    let output = daemon.cli(&["entry", "update", &id, "--ttl", "3h"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), id);
    assert_eq!(stderr(&output).trim(), format!("entry {id}: ttl: 2h -> 3h"));
    let output = daemon.cli(&["entry", "list", "--json"]);
    let entries: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(entries[0]["ttl_seconds"], 3 * 3600);
    assert_eq!(
        entries[0]["dns_names"],
        serde_json::json!(["billing.certd.internal", "billing.example.com"]),
        "kept"
    );
    assert_eq!(
        entries[0]["selectors"],
        serde_json::json!(["token:billing"])
    );
    let output = daemon.cli(&["entry", "update", &id, "--no-dns", "--default-ttl"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("ttl: 3h -> default"),
        "{}",
        stderr(&output)
    );
    let output = daemon.cli(&["entry", "update", &id]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("name what to change"),
        "{}",
        stderr(&output)
    );

    let output = daemon.cli(&[
        "entry",
        "update",
        "0000000000000000",
        "--selector",
        "token:x",
    ]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let updates = audit(&daemon)
        .into_iter()
        .filter(|e| e["event"] == "update-entry")
        .map(|e| e["allowed"].as_bool().unwrap())
        .collect::<Vec<_>>();
    // The first update, the two that changed parts, and the unknown id.
    assert_eq!(updates, [true, true, true, false]);
}

/// The entry commands check what they are given: one line, exit code.
#[test]
fn entry_commands_refuse_bad_input_with_one_line_and_an_exit_code() {
    let daemon = Daemon::start();
    let pods = daemon.entry("billing", &["k8s:ns:payments"], &[]);
    // `entry create --service billing` followed by these arguments.
    let create = |rest: &[&'static str]| {
        let mut args = vec!["entry", "create", "--service", "billing"];
        args.extend_from_slice(rest);
        args
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            create(&["--selector", "unix:uid:1000"]),
            2,
            "proven only by a node agent",
        ),
        (
            create(&["--selector", "k8s:ns:payments"]),
            4,
            "already has exactly these selectors",
        ),
        (
            create(&[
                "--selector",
                "token:b",
                "--spiffe-id",
                "spiffe://certd.internal/operator/mallory",
            ]),
            2,
            "/operator/",
        ),
        (
            create(&["--selector", "token:b", "--dns", "localhost"]),
            2,
            "pose as certd",
        ),
        (
            create(&["--selector", "token:b", "--ttl", "30d"]),
            2,
            "exceeds the maximum",
        ),
        (vec!["entry", "delete", "0000000000000000"], 5, "not found"),
        (vec!["token", "create", "--entry", &pods], 2, "cannot prove"),
        (
            vec!["token", "create", "--service", "orders"],
            5,
            "certd entry create",
        ),
    ];
    for (args, code, says) in cases {
        let output = daemon.cli(&args);
        let error = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {error}");
        assert!(error.contains(says), "{args:?}: {error}");
        assert_eq!(error.trim().lines().count(), 1, "{args:?}: {error}");
    }
    let output = daemon.cli(&["entry", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listing = stdout(&output);
    assert!(
        listing.contains(&pods) && listing.contains("k8s:ns:payments"),
        "{listing}"
    );
}

/// With `jwks_url`, the daemon fetches the issuer's keys over HTTPS (with
/// the configured roots and bearer token) before it serves, so the first
/// service-account token is accepted.
// Multi-threaded: the JWKS server must answer while the test blocks on
// starting the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_fetches_the_issuers_keys_from_a_jwks_url() {
    let tmp = tempfile::tempdir().unwrap();
    let server = JwksServer::start(tmp.path()).await;
    let issuer_key = KeyPair::generate().unwrap();
    server.serve(200, jwks(&[&issuer_key]));
    std::fs::write(tmp.path().join("reader-token"), "reader-secret").unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        format!(
            "[kubernetes]\nissuer = \"{ISSUER}\"\njwks_url = \"{}\"\njwks_url_ca_file = \"ca.pem\"\njwks_url_token_file = \"reader-token\"\n",
            server.url
        ),
    )
    .unwrap();
    let data_dir = tmp.path().join("ca");
    let config = config.to_str().unwrap().to_owned();
    let cluster = Cluster {
        daemon: Daemon::start_in(tmp, data_dir, &["--config", &config]),
        issuer_key,
    };
    cluster.billing_entry(&[]);
    let issued = cluster.issue(&cluster.token(&[]), blank_csr()).await;
    assert!(issued.is_ok(), "{issued:?}");
    assert_eq!(
        *server.authorizations.lock().unwrap(),
        ["Bearer reader-secret"]
    );
    assert!(!cluster.daemon.log_text().contains("reader-secret"));
}

/// Offline CI issuance never checks a service-account token, so it neither
/// loads nor needs the issuer's keys: an unreadable key file does not stop it.
#[test]
fn offline_issuance_does_not_load_the_kubernetes_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let output = common::run_cli(&data_dir, &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        format!("[kubernetes]\nissuer = \"{ISSUER}\"\njwks_file = \"missing.json\"\n"),
    )
    .unwrap();
    let out = tmp.path().join("ci");
    let output = common::run_cli(
        &data_dir,
        &[
            "issue",
            "--unregistered",
            "--offline",
            "--config",
            config.to_str().unwrap(),
            "--service",
            "ci-test",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(out.join("cert.pem").exists());
}

/// Without a [kubernetes] section, service-account tokens are refused with
/// a message that says so.
#[tokio::test]
async fn kubernetes_tokens_need_the_attestor_configured() {
    let daemon = Daemon::start();
    let (kind, message) = refusal(
        daemon
            .client(None)
            .await
            .issue_with_kubernetes_token(blank_csr(), &rs256(&claims()))
            .await,
    );
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(message.contains("[kubernetes]"), "{message}");
}
