//! Operators on the admin API over mTLS: a listed operator certificate may
//! use it from the network; anyone else is refused, and the audit says who.

mod common;

use certd::ErrorKind;
use certd::api::client::{AdminClient, ClientError, TlsClientSettings};
use certd::authority::TokenFor;
use common::{Daemon, stderr, stdout};

fn daemon_with_admins() -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        "admins = [\"spiffe://certd.internal/operator/alice\"]\n",
    )
    .unwrap();
    let data_dir = tmp.path().join("ca");
    let config = config.to_str().unwrap().to_owned();
    Daemon::start_in(tmp, data_dir, &["--config", &config])
}

fn operator(daemon: &Daemon, name: &str) -> std::path::PathBuf {
    let out = daemon.tmp.path().join(name);
    let output = daemon.cli(&[
        "operator",
        "issue",
        "--name",
        name,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("spiffe://certd.internal/operator/{name}")));
    out
}

/// Runs an admin command against the daemon's gRPC port with the
/// certificate in `dir`.
fn remote(daemon: &Daemon, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    all.extend_from_slice(&[
        "--server",
        &daemon.grpc,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    // No socket to fall back on: the data directory is somewhere else.
    let elsewhere = daemon.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(
        daemon.data_dir.join("bundle.pem"),
        elsewhere.join("bundle.pem"),
    )
    .unwrap();
    common::run_cli(&elsewhere, &all)
}

/// A listed operator creates a join token over mTLS, and it works.
#[tokio::test]
async fn a_listed_operator_uses_the_admin_api_over_mtls() {
    let daemon = daemon_with_admins();
    let alice = operator(&daemon, "alice");
    let output = remote(
        &daemon,
        &alice,
        &[
            "entry",
            "create",
            "--service",
            "billing",
            "--selector",
            "token:billing",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let output = remote(
        &daemon,
        &alice,
        &["token", "create", "--service", "billing"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let token = stdout(&output).trim().to_owned();
    let key = rcgen::KeyPair::generate().unwrap();
    let issued = daemon
        .client(None)
        .await
        .issue(common::csr_for(&key, None, vec![]), &token)
        .await;
    assert!(issued.is_ok(), "{issued:?}");
    let output = remote(&daemon, &alice, &["list", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// An unlisted operator, a workload and a revoked operator are refused with
/// PERMISSION_DENIED or UNAUTHENTICATED, and the audit names who tried.
#[tokio::test]
async fn everyone_else_is_refused_and_audited() {
    let daemon = daemon_with_admins();
    let alice = operator(&daemon, "alice");
    let bob = operator(&daemon, "bob");
    let output = remote(&daemon, &bob, &["token", "create", "--service", "billing"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("permission denied"),
        "{}",
        stderr(&output)
    );

    let workload = daemon.tmp.path().join("billing");
    let output = daemon.ci_issue("billing", &workload, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = remote(&daemon, &workload, &["revoke", "--service", "billing"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let audit = stdout(&daemon.cli(&["audit"]));
    assert!(
        audit.contains("deny admin-access by spiffe://certd.internal/svc/billing"),
        "the audit names the workload that tried: {audit}"
    );
    assert!(
        audit.contains("deny admin-access by spiffe://certd.internal/operator/bob"),
        "{audit}"
    );

    let status = daemon.cli(&["list", "--service", "billing", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        listed[0]["status"], "good",
        "the refused revocation changed nothing"
    );

    let tls = TlsClientSettings {
        ca_bundle_pem: daemon.bundle_pem(),
        identity: None,
    };
    let mut anonymous = AdminClient::connect_remote(&daemon.grpc, &tls)
        .await
        .unwrap();
    match anonymous
        .create_join_tokens(&TokenFor::Service("billing".into()), None, 1)
        .await
    {
        Err(ClientError::Refused { kind, message }) => {
            assert_eq!(kind, ErrorKind::Unauthenticated);
            assert!(
                message.contains("needs an operator certificate"),
                "the refusal says what the admin API needs: {message}"
            );
        }
        other => panic!("no client certificate must be refused: {other:?}"),
    }

    let serial = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-serial",
            "-in",
            alice.join("cert.pem").to_str().unwrap(),
        ])
        .output()
        .map(|o| stdout(&o).trim().trim_start_matches("serial=").to_owned());
    if let Ok(serial) = serial
        && !serial.is_empty()
    {
        let output = daemon.cli(&["revoke", &serial]);
        assert!(output.status.success(), "{}", stderr(&output));
        let output = remote(&daemon, &alice, &["list"]);
        assert_eq!(
            output.status.code(),
            Some(4),
            "a revoked operator is refused: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("revoked"), "{}", stderr(&output));
    }
}

/// An operator certificate is not a workload identity: it cannot renew.
#[tokio::test]
async fn an_operator_certificate_cannot_renew_as_a_workload() {
    let daemon = daemon_with_admins();
    let alice = operator(&daemon, "alice");
    let output = daemon.cli(&[
        "renew",
        "--server",
        &daemon.grpc,
        "--dir",
        alice.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("operator certificate"),
        "{}",
        stderr(&output)
    );
}

/// `GET /metrics` on the real daemon: Prometheus text that counts
/// decisions by outcome and refusal kind, times gRPC calls and store
/// commits, and reports the CRL, the CA's expiry and the JWT keys.
#[tokio::test]
async fn metrics_describe_what_the_daemon_did() {
    let daemon = common::Daemon::start();
    let identity = daemon.bootstrap("billing").await;
    let mut client = daemon.client(Some(&identity)).await;
    let key = rcgen::KeyPair::generate().unwrap();
    client
        .renew(common::csr_for(&key, None, vec![]))
        .await
        .unwrap();
    // A refused join token.
    let refused = daemon
        .client(None)
        .await
        .issue(common::csr_for(&key, None, vec![]), "cdt_notatoken")
        .await;
    assert!(refused.is_err());

    let answer = common::http("GET", &format!("{}/metrics", daemon.http), &[], b"");
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text"))
    );
    let text = String::from_utf8(answer.body).unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(
            "certd_decisions_total{event=\"issue\",attestation=\"join-token\",outcome=\"allowed\",reason=\"none\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            "certd_decisions_total{event=\"renew\",attestation=\"renewal\",outcome=\"allowed\",reason=\"none\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            "certd_decisions_total{event=\"issue\",attestation=\"join-token\",outcome=\"refused\",reason=\"unauthenticated\"}"
        ),
        1.0
    );
    assert!(value("certd_grpc_request_duration_seconds_count{method=\"Issue\"}") >= 2.0);
    assert!(value("certd_store_commit_duration_seconds_count") >= 1.0);
    assert!(value("certd_crl_number") >= 1.0);
    // No rotation since it started.
    assert_eq!(value("certd_ca_signers_generation"), 0.0);
    assert!(
        value("certd_ca_certificate_expiry_seconds{certificate=\"intermediate\"}")
            > 300.0 * 86_400.0
    );
    assert!(
        value("certd_ca_certificate_expiry_seconds{certificate=\"root\"}") > 9.0 * 365.0 * 86_400.0
    );
    assert!(value("certd_jwt_keys_published") >= 1.0);
    assert!(text.contains("certd_grpc_requests_in_flight"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}
