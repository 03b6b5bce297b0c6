//! Operators on the admin API over mTLS: a listed operator certificate may
//! use it from the network; anyone else is refused, and the audit says who.

mod common;

use certd::ErrorKind;
use certd::api::client::{AdminClient, ClientError, TlsClientSettings};
use certd::authority::TokenFor;
use common::{Daemon, stderr, stdout};

fn daemon_with_admins() -> Daemon {
    daemon_with_config("admins = [\"spiffe://certd.internal/operator/alice\"]\n")
}

/// A daemon started with this certd.toml.
fn daemon_with_config(text: &str) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(&config, text).unwrap();
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

/// The operators of the role table: one per role, and one nobody listed.
const ROLE_CONFIG: &str = r#"admins = ["spiffe://certd.internal/operator/alice"]

[[operators]]
id = "spiffe://certd.internal/operator/ci"
roles = ["issuer"]
services = ["billing"]
max_certificate_ttl = "30d"

[[operators]]
id = "spiffe://certd.internal/operator/oncall"
roles = ["revoker"]

[[operators]]
id = "spiffe://certd.internal/operator/audit"
roles = ["auditor"]
"#;

/// An admin client over mTLS with the operator certificate in `dir`.
async fn remote_client(daemon: &Daemon, dir: &std::path::Path) -> AdminClient {
    let tls = TlsClientSettings {
        ca_bundle_pem: daemon.bundle_pem(),
        identity: Some((
            std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
            std::fs::read_to_string(dir.join("key.pem")).unwrap().into(),
        )),
    };
    AdminClient::connect_remote(&daemon.grpc, &tls)
        .await
        .unwrap()
}

/// Every admin RPC, called with a request that succeeds for whoever may
/// make it. `Ok(())`, or the refusal's kind and message.
async fn call(
    rpc: &str,
    client: &mut AdminClient,
    admin: &mut AdminClient,
) -> Result<(), (ErrorKind, String)> {
    use certd::registry::EntrySpec;
    let refusal = |error: ClientError| match error {
        ClientError::Refused { kind, message } => (kind, message),
        other => panic!("{rpc}: not a refusal: {other:?}"),
    };
    let spec = |service: &str| EntrySpec {
        service: service.into(),
        selectors: vec![format!("token:{service}")],
        spiffe_id: None,
        dns_names: vec![],
        ttl: None,
        parent: None,
        agent: false,
        jwt_audiences: vec![],
        federates_with: vec![],
    };
    let csr = || common::csr_for(&rcgen::KeyPair::generate().unwrap(), None, vec![]);
    // What the call acts on is made fresh by the admin, so every row starts
    // from the same state.
    let fresh_serial = async |admin: &mut AdminClient| {
        admin
            .issue("billing", csr(), None, Default::default())
            .await
            .unwrap()
            .serial
    };
    match rpc {
        "Backup" => client.backup(&mut Vec::new()).await.map(drop),
        "CreateJoinToken" => client
            .create_join_tokens(&TokenFor::Service("billing".into()), None, 1)
            .await
            .map(drop),
        "IssueForCi" => client
            .issue("billing", csr(), None, Default::default())
            .await
            .map(drop),
        "ListCertificates" => client.list(None, 10).await.map(drop),
        "GetCertificate" => {
            let serial = fresh_serial(admin).await;
            client.show(&serial).await.map(drop)
        }
        "Revoke" => {
            let serial = fresh_serial(admin).await;
            client
                .revoke_serial(&serial, certd::ca::RevocationReason::Superseded)
                .await
                .map(drop)
        }
        "ListAudit" => client.audit(0, 10).await.map(drop),
        "IssueOperatorCertificate" => client.issue_operator("eve", csr(), None).await.map(drop),
        "CreateEntry" => client.create_entry(&spec("web")).await.map(drop),
        "UpdateEntry" => {
            let entry = admin.create_entry(&spec("update-me")).await.unwrap();
            let mut changed = spec("update-me");
            changed.dns_names = vec!["update-me.example.com".into()];
            let result = client.update_entry(&entry.id, &changed).await.map(drop);
            admin.delete_entry(&entry.id).await.unwrap();
            result
        }
        "DeleteEntry" => {
            let entry = admin.create_entry(&spec("delete-me")).await.unwrap();
            let result = client.delete_entry(&entry.id).await.map(drop);
            if result.is_err() {
                admin.delete_entry(&entry.id).await.unwrap();
            }
            result
        }
        "ListEntries" => client.entries(None).await.map(drop),
        "GetPolicy" => client.policy().await.map(drop),
        "ReplacePolicy" => client.replace_policy(String::new(), None).await.map(drop),
        "ExplainPolicy" => client
            .explain_policy("billing", "https://api.example.com", &[], None)
            .await
            .map(drop),
        "ListJoinTokens" => client.join_tokens(None).await.map(drop),
        "RevokeJoinTokens" => {
            let created = admin
                .create_join_tokens(&TokenFor::Service("billing".into()), None, 1)
                .await
                .unwrap();
            assert_eq!(created.tokens.len(), 1);
            client
                .revoke_join_tokens(&certd::authority::TokensToRevoke::Service("billing".into()))
                .await
                .map(drop)
        }
        "AddFederation" => {
            let result = client.add_federation(&federation_spec()).await.map(drop);
            if result.is_ok() {
                admin.remove_federation(PARTNER).await.unwrap();
            }
            result
        }
        "RemoveFederation" => {
            admin.add_federation(&federation_spec()).await.unwrap();
            let result = client.remove_federation(PARTNER).await.map(drop);
            if result.is_err() {
                admin.remove_federation(PARTNER).await.unwrap();
            }
            result
        }
        "ListFederations" => client.federations(None).await.map(drop),
        "CreateAcmeEab" => {
            let entry = billing_entry(admin).await;
            client.create_acme_eab(&entry, None).await.map(drop)
        }
        "SetAcmePolicy" => {
            let entry = billing_entry(admin).await;
            client.set_acme_policy(&entry, &[], false).await.map(drop)
        }
        "GetAcmePolicy" => {
            let entry = billing_entry(admin).await;
            client.acme_policy(&entry).await.map(drop)
        }
        "ListAcmeAccounts" => client.acme_accounts().await.map(drop),
        // No account exists: past the role check, it is not found.
        "DeactivateAcmeAccount" => client
            .deactivate_acme_account("no-such-account")
            .await
            .map(drop),
        "ListAcmeOrders" => client.acme_orders(None).await.map(drop),
        other => panic!("no call for {other}"),
    }
    .map_err(refusal)
}

/// The id of the `billing` entry the role table's daemon has.
async fn billing_entry(admin: &mut AdminClient) -> String {
    admin.entries(Some("billing")).await.unwrap()[0].id.clone()
}

/// The table of admin RPC × role (docs/operations/operators.md says the
/// same): each operator is allowed exactly what its role allows, and every
/// other RPC is refused with PERMISSION_DENIED, naming the role it needs,
/// and audited.
#[tokio::test]
async fn every_rpc_is_allowed_to_exactly_the_roles_the_table_names() {
    let daemon = daemon_with_config(ROLE_CONFIG);
    daemon.entry("billing", &["token:billing"], &[]);
    let socket = daemon.data_dir.join("admin.sock");
    let mut admin = AdminClient::connect(&socket).await.unwrap();

    // RPC, then whether admin, issuer, revoker, auditor and an unlisted
    // operator may call it.
    let table: [(&str, [bool; 5]); 26] = [
        ("Backup", [true, false, false, false, false]),
        ("CreateJoinToken", [true, false, false, false, false]),
        ("IssueForCi", [true, true, false, false, false]),
        ("ListCertificates", [true, false, true, true, false]),
        ("GetCertificate", [true, false, true, true, false]),
        ("Revoke", [true, false, true, false, false]),
        ("ListAudit", [true, false, false, true, false]),
        (
            "IssueOperatorCertificate",
            [true, false, false, false, false],
        ),
        ("CreateEntry", [true, false, false, false, false]),
        ("UpdateEntry", [true, false, false, false, false]),
        ("DeleteEntry", [true, false, false, false, false]),
        ("ListEntries", [true, false, false, true, false]),
        ("GetPolicy", [true, false, false, true, false]),
        ("ReplacePolicy", [true, false, false, false, false]),
        ("ExplainPolicy", [true, false, false, true, false]),
        ("ListJoinTokens", [true, false, false, true, false]),
        ("RevokeJoinTokens", [true, false, true, false, false]),
        ("AddFederation", [true, false, false, false, false]),
        ("RemoveFederation", [true, false, false, false, false]),
        ("ListFederations", [true, false, false, true, false]),
        ("CreateAcmeEab", [true, false, false, false, false]),
        ("SetAcmePolicy", [true, false, false, false, false]),
        ("GetAcmePolicy", [true, false, false, true, false]),
        ("ListAcmeAccounts", [true, false, false, true, false]),
        ("DeactivateAcmeAccount", [true, false, true, false, false]),
        ("ListAcmeOrders", [true, false, false, true, false]),
    ];
    let on_postgres = common::database_url(&daemon.data_dir).is_some();
    let operators = ["alice", "ci", "oncall", "audit", "mallory"];
    let mut clients = Vec::new();
    for name in operators {
        clients.push(remote_client(&daemon, &operator(&daemon, name)).await);
    }
    for (rpc, allowed) in table {
        for (index, client) in clients.iter_mut().enumerate() {
            let who = operators[index];
            match (call(rpc, client, &mut admin).await, allowed[index]) {
                (Ok(()), true) => {}
                // Past the role check, a PostgreSQL store is backed up with
                // PostgreSQL's tools, and certd says so.
                (Err((ErrorKind::FailedPrecondition, message)), true)
                    if rpc == "Backup" && on_postgres =>
                {
                    assert!(message.contains("pg_dump"), "{message}");
                }
                // Past the role check, an account that does not exist.
                (Err((ErrorKind::NotFound, message)), true) if rpc == "DeactivateAcmeAccount" => {
                    assert!(message.contains("no ACME account"), "{message}");
                }
                (Err((kind, message)), false) => {
                    assert_eq!(kind, ErrorKind::PermissionDenied, "{who} {rpc}: {message}");
                    let says_why = if who == "mallory" {
                        message.contains("not an operator in `admins` or `[[operators]]`")
                    } else {
                        message.contains(&format!("may not call {rpc}: it needs the role"))
                    };
                    assert!(says_why, "{who} {rpc}: {message}");
                }
                (outcome, allowed) => {
                    panic!("{who} calling {rpc}: {outcome:?}, but the table says allowed={allowed}")
                }
            }
        }
    }

    // Every refusal is audited, naming who and what it needed.
    let audit = stdout(&daemon.cli(&["audit", "--event", "admin-access", "--denied"]));
    let refusals = table
        .iter()
        .flat_map(|(_, allowed)| allowed)
        .filter(|allowed| !**allowed)
        .count();
    assert_eq!(audit.lines().count(), refusals, "{audit}");
    assert!(
        audit.contains("deny admin-access by spiffe://certd.internal/operator/audit")
            && audit.contains("may not call Revoke: it needs the role admin or revoker"),
        "{audit}"
    );
}

/// An issuer issues for the services it is granted and no other, and may
/// hold an operator certificate longer than a day (its
/// `max_certificate_ttl`); an admin may not.
#[tokio::test]
async fn a_ci_issuer_is_scoped_to_its_services_and_may_live_longer() {
    let daemon = daemon_with_config(ROLE_CONFIG);
    daemon.entry("billing", &["token:billing"], &[]);
    let ci = daemon.tmp.path().join("ci");
    let output = daemon.cli(&[
        "operator",
        "issue",
        "--name",
        "ci",
        "--ttl",
        "30d",
        "--out",
        ci.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (_, not_after) = common::openssl(&[
        "x509",
        "-noout",
        "-enddate",
        "-in",
        ci.join("cert.pem").to_str().unwrap(),
    ]);
    let days = {
        let text = not_after.trim().trim_start_matches("notAfter=");
        let output = std::process::Command::new("date")
            .args(["-d", text, "+%s"])
            .output()
            .unwrap();
        let end: i64 = stdout(&output).trim().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        (end - now) / 86400
    };
    assert!(
        days >= 29,
        "the CI identity lives 30 days (or until the intermediate ends): {days}"
    );
    let output = daemon.cli(&[
        "operator",
        "issue",
        "--name",
        "alice",
        "--ttl",
        "30d",
        "--out",
        daemon.tmp.path().join("alice").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("issuance.max_ttl"),
        "{}",
        stderr(&output)
    );
    let output = daemon.cli(&[
        "operator",
        "issue",
        "--name",
        "ci",
        "--ttl",
        "60d",
        "--out",
        daemon.tmp.path().join("ci2").to_str().unwrap(),
    ]);
    assert!(
        stderr(&output).contains("operators.max_certificate_ttl"),
        "{}",
        stderr(&output)
    );

    // As a CI job runs it: `certd issue` over mTLS with the CI identity.
    let out = daemon.tmp.path().join("billing");
    let output = remote(
        &daemon,
        &ci,
        &[
            "issue",
            "--service",
            "billing",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(out.join("cert.pem").exists());
    let out = daemon.tmp.path().join("payments");
    let output = remote(
        &daemon,
        &ci,
        &[
            "issue",
            "--unregistered",
            "--service",
            "payments",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("may issue only for billing"),
        "{}",
        stderr(&output)
    );
    assert!(!out.join("cert.pem").exists(), "nothing was written");
}

/// The trust domain the federation rows add and remove.
const PARTNER: &str = "partner.example";

fn federation_spec() -> certd::federation::FederationSpec {
    certd::federation::FederationSpec {
        trust_domain: PARTNER.into(),
        bundle_endpoint_url: "https://bundle.partner.example/bundle.spiffe".into(),
        profile: "https_web".into(),
        ..Default::default()
    }
}
