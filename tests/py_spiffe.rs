//! Python clients as judges: py-spiffe (PyPI `spiffe`, with `spiffe-tls`) on
//! the real `certd agent`'s Workload API socket, configured by
//! `SPIFFE_ENDPOINT_SOCKET` alone, and a plain grpcio client on the daemon's
//! TCP gRPC API with stubs generated from `proto/certd` at test time. The
//! Python side is in `tests/python/`; each script prints one line per fact
//! and `ok`, or `FAILED <step>: <why>` and exits 1.
//!
//! Without those Python packages the tests print a skip line, unless `CI` or
//! `CERTD_REQUIRE_PYTHON_CLIENTS` is set (as `.ci/run` does): then they fail.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::agent::Agent;
use common::outside::{python_with, script, script_path};
use common::{Daemon, stderr, stdout};
use sha2::Digest;

const TRUST_DOMAIN: &str = "certd.internal";

/// py-spiffe's `WorkloadApiClient`, with nothing but `SPIFFE_ENDPOINT_SOCKET`
/// in its environment, gets its X.509-SVID and the trust domain's bundle (the
/// daemon's root), a JWT-SVID for an audience its entry allows and a
/// `PERMISSION_DENIED` for one it does not, the JWT keys (which verify that
/// token by themselves), and the agent's validation of the token.
#[test]
fn py_spiffe_fetches_and_validates_through_the_agent() {
    let Some(python) = python_with(&["spiffe"]) else {
        return;
    };
    let daemon = Daemon::start();
    let (uid, _) = my_ids();
    let parent = agent_id("node-1");
    let payments = svc_id("payments");
    daemon.entry(
        "billing",
        &[&format!("unix:uid:{uid}")],
        &[
            "--parent",
            &parent,
            "--jwt-audience",
            "gateway",
            "--jwt-audience",
            &payments,
        ],
    );
    let agent = Agent::start(&daemon, "node-1");

    let output = script(&python, "workload_api.py")
        .args([TRUST_DOMAIN, "gateway", "hr"])
        .env("SPIFFE_ENDPOINT_SOCKET", endpoint(&agent))
        .output()
        .expect("run python3");
    let billing = svc_id("billing");
    assert_lines(
        &output,
        &agent,
        &[
            format!("x509-svid {billing}"),
            "x509-svid-chain-length 2".into(),
            format!("x509-bundle {TRUST_DOMAIN} {}", root_fingerprints(&daemon)),
            "x509-svid-verified".into(),
            format!("jwt-svid {billing} aud=gateway"),
            "jwt-svid-refused hr PERMISSION_DENIED".into(),
            format!("jwt-bundle {TRUST_DOMAIN} {}", jwks_key_ids(&daemon)),
            format!("jwt-svid-verified-locally {billing}"),
            format!("jwt-svid-validated {billing} aud=gateway"),
            "jwt-svid-validation-refused hr INVALID_ARGUMENT".into(),
            "ok".into(),
        ],
    );
    // Malformed protobuf is the caller's fault (INVALID_ARGUMENT naming the
    // message), not certd's (INTERNAL, as tonic's codec says).
    assert!(
        stdout(&output).lines().any(|line| line
            .starts_with("malformed-request INVALID_ARGUMENT: malformed JwtsvidRequest message: ")),
        "the malformed request was not INVALID_ARGUMENT:\n{}",
        stdout(&output)
    );
}

/// Two Python workloads on one node (same uid, different gids, so the agent
/// attests them as different entries) set up mutual TLS with nothing but an
/// `X509Source` each (spiffe-tls `listen` and `dial`), each accepting only
/// the other's SPIFFE ID, and each sees the other's ID.
#[test]
fn two_py_spiffe_workloads_talk_mutual_tls() {
    let Some(python) = python_with(&["spiffe", "spiffetls"]) else {
        return;
    };
    let daemon = Daemon::start();
    let (uid, gid) = my_ids();
    let other_gid = if gid == 65534 { 65533 } else { 65534 };
    let parent = agent_id("node-1");
    for (service, gid) in [("billing", gid), ("payments", other_gid)] {
        let selectors = [format!("unix:uid:{uid}"), format!("unix:gid:{gid}")];
        let selectors: Vec<&str> = selectors.iter().map(String::as_str).collect();
        daemon.entry(service, &selectors, &["--parent", &parent]);
    }
    let agent = Agent::start(&daemon, "node-1");
    let (billing, payments) = (svc_id("billing"), svc_id("payments"));

    // The server is this test's uid and gid: billing.
    let mut server = script(&python, "mtls_peer.py")
        .args(["server", &payments])
        .env("SPIFFE_ENDPOINT_SOCKET", endpoint(&agent))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut server_out = BufReader::new(server.stdout.take().expect("stdout"));
    let mut server_text = String::new();
    let port = loop {
        let mut line = String::new();
        server_out.read_line(&mut line).expect("read the server");
        server_text.push_str(&line);
        if let Some(port) = line.trim().strip_prefix("listening ") {
            break port.to_owned();
        }
        if line.is_empty() {
            let status = server.wait().expect("wait for the server");
            let mut errors = String::new();
            let _ = server
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut errors);
            panic!(
                "the py-spiffe server never listened ({status}):\n{server_text}{errors}\n\
                 agent log:\n{}",
                agent.log_text()
            );
        }
    };

    // The client runs with another gid (setpriv): payments.
    let client = Command::new(on_path("setpriv"))
        .args(["--regid", &other_gid.to_string(), "--clear-groups", "--"])
        .arg(&python)
        .arg("-B")
        .arg(script_path("mtls_peer.py"))
        .args(["client", &port, &billing])
        .env_clear()
        .env("SPIFFE_ENDPOINT_SOCKET", endpoint(&agent))
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)");
    server_out
        .read_to_string(&mut server_text)
        .expect("read the server");
    let mut server_errors = String::new();
    let _ = server
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut server_errors);
    let server_status = server.wait().expect("wait for the server");
    let server_output = Output {
        status: server_status,
        stdout: server_text.into_bytes(),
        stderr: server_errors.into_bytes(),
    };

    assert_lines(
        &client,
        &agent,
        &[
            format!("client is {payments}"),
            format!("client saw {billing}"),
            format!("client got hello {payments}, this is {billing}"),
            "ok".into(),
        ],
    );
    assert_lines(
        &server_output,
        &agent,
        &[
            format!("server is {billing}"),
            format!("server saw {payments}"),
            format!("server got hello from {payments}"),
            "ok".into(),
        ],
    );
}

/// A grpcio client, with stubs generated from `proto/certd` by
/// `grpc_tools.protoc` and TLS trusting only the bundle, bootstraps with a
/// join token (its own key and CSR), renews over mTLS with what it got, and
/// gets `UNAUTHENTICATED` for the used token and for a renewal without a
/// certificate, as docs/reference/grpc-api.md's status codes say; and bootstraps with a
/// token in the generic attestation form (`evidence`: kind and bytes).
#[test]
fn a_grpcio_client_issues_renews_and_is_refused_with_the_documented_codes() {
    let Some(python) = python_with(&["grpc", "grpc_tools", "cryptography"]) else {
        return;
    };
    let daemon = Daemon::start();
    let token = daemon.token("billing");
    let generic_token = daemon.token("billing");
    let stubs = daemon.tmp.path().join("python-stubs");
    generate_stubs(&python, &stubs);

    let output = script(&python, "grpc_api.py")
        .arg(&stubs)
        .arg(daemon.grpc.trim_start_matches("https://"))
        .arg(daemon.data_dir.join("bundle.pem"))
        .arg(&token)
        .arg(&generic_token)
        .output()
        .expect("run python3");
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "the grpcio client failed:\n{text}");
    let billing = svc_id("billing");
    let serial_after = |prefix: &str| -> String {
        stdout(&output)
            .lines()
            .find_map(|line| line.strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no line {prefix:?}:\n{text}"))
    };
    let issued = serial_after(&format!("issued {billing} serial "));
    let renewed = serial_after(&format!("renewed {billing} serial "));
    let generic = serial_after(&format!("issued-generic {billing} serial "));
    assert_ne!(issued, renewed, "renewal is a new certificate");
    let recorded = daemon.recorded_serials();
    assert!(recorded.contains(&issued), "{issued} not in {recorded:?}");
    assert!(recorded.contains(&renewed), "{renewed} not in {recorded:?}");
    assert!(recorded.contains(&generic), "{generic} not in {recorded:?}");
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        format!("trust-bundle {TRUST_DOMAIN} {}", root_fingerprints(&daemon)),
        format!("status {issued} STATUS_GOOD"),
        "refused no-certificate-renewal UNAUTHENTICATED".into(),
        "ok".into(),
    ];
    for line in &expected {
        assert!(lines.contains(&line.as_str()), "no line {line:?}:\n{text}");
    }
    assert!(
        lines.iter().any(|line| {
            line.starts_with("refused used-token UNAUTHENTICATED: ") && line.contains("join token")
        }),
        "the used token was not refused as UNAUTHENTICATED:\n{text}"
    );
    // A client nobody here wrote sees the lineage refusal: the first
    // certificate, renewed and its successor used, cannot renew again.
    assert!(
        lines.iter().any(
            |line| line.starts_with("refused second-renewal PERMISSION_DENIED: ")
                && line.contains(&format!("already renewed as {renewed}"))
        ),
        "the superseded certificate was not refused naming its successor:\n{text}"
    );
    // The generic form's refusals, as docs/reference/grpc-api.md's codes say.
    assert!(
        lines.iter().any(
            |line| line.starts_with("refused unknown-kind UNAUTHENTICATED: ")
                && line.contains("does not accept tpm attestation")
        ),
        "a kind no attestor has was not UNAUTHENTICATED:\n{text}"
    );
    assert!(
        lines.iter().any(
            |line| line.starts_with("refused malformed-kind INVALID_ARGUMENT: ")
                && line.contains("is not a kind")
        ),
        "a malformed kind was not INVALID_ARGUMENT:\n{text}"
    );
    assert!(
        lines.iter().any(|line| line
            .starts_with("malformed-request INVALID_ARGUMENT: malformed IssueRequest message: ")),
        "the malformed Issue was not INVALID_ARGUMENT:\n{text}"
    );
}

/// An operator whose only role is `issuer` for `billing`, on the admin API
/// over mTLS with grpcio (C-core): it issues for billing and is refused
/// PERMISSION_DENIED, with certd's words, for another service and for an
/// RPC its role lacks.
#[test]
fn a_grpcio_operator_gets_only_what_its_role_allows() {
    let Some(python) = python_with(&["grpc", "grpc_tools", "cryptography"]) else {
        return;
    };
    let (daemon, ci) = daemon_with_operator("roles = [\"issuer\"]\nservices = [\"billing\"]\n");
    daemon.entry("billing", &["token:billing"], &[]);
    let output = operator_script(&python, &daemon, &ci, "operator_roles.py")
        .output()
        .expect("run python3");
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        output.status.success(),
        "the grpcio operator failed:\n{text}"
    );
    assert!(text.contains("issued billing serial "), "{text}");
    assert!(
        text.contains(
            "refused issue for web: spiffe://certd.internal/operator/ci may issue only for billing"
        ),
        "{text}"
    );
    assert!(
        text.contains("refused list audit: spiffe://certd.internal/operator/ci may not call ListAudit: it needs the role admin or auditor"),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("ok"), "{text}");
}

/// An auditor on the admin API over mTLS with grpcio pages
/// `ListCertificates` three at a time with the tokens certd hands out:
/// every certificate exactly once, newest first; the good ones by expiry,
/// latest first (their TTLs make that another order than issuance), the
/// revoked one only among the revoked; and a token of one order given to a
/// listing of the other, or a malformed one, is `INVALID_ARGUMENT` in
/// certd's words, as docs/reference/grpc-api.md says.
#[test]
fn a_grpcio_auditor_pages_certificates_by_issuance_and_by_expiry() {
    let Some(python) = python_with(&["grpc", "grpc_tools", "cryptography"]) else {
        return;
    };
    let (daemon, ci) = daemon_with_operator("roles = [\"auditor\"]\n");
    // Issued in this order, expiring in another: hours of TTL.
    let ttl_hours = [3, 7, 1, 5, 2, 6, 4];
    let mut issued: Vec<(String, u32)> = Vec::new();
    for (index, hours) in ttl_hours.into_iter().enumerate() {
        let out = daemon.tmp.path().join(format!("billing-{index}"));
        let output = daemon.ci_issue("billing", &out, &["--ttl", &format!("{hours}h")]);
        assert!(output.status.success(), "issue: {}", stderr(&output));
        issued.push((common::serial_in(&out), hours));
    }
    let revoked = issued[3].0.clone();
    let output = daemon.cli(&["revoke", &revoked]);
    assert!(output.status.success(), "revoke: {}", stderr(&output));
    // The operator's certificate (8 hours) and certd's own serving
    // certificate (24 hours), as it presents it, are records too.
    let operator = (common::serial_in(&ci), 8);
    let serving = common::presented_leaf(&daemon.grpc, &daemon.data_dir.join("bundle.pem"));
    let (_, serving) = x509_parser::parse_x509_certificate(&serving).expect("a certificate");
    let serving = (hex::encode(serving.raw_serial()), 24);
    let mut good: Vec<&(String, u32)> = [&serving, &operator]
        .into_iter()
        .chain(&issued)
        .filter(|(serial, _)| *serial != revoked)
        .collect();
    good.sort_by_key(|(_, hours)| std::cmp::Reverse(*hours));
    let expected: String = [&serving, &operator]
        .into_iter()
        .chain(&issued)
        .map(|(serial, _)| format!("all {serial}\n"))
        .chain(good.iter().map(|(serial, _)| format!("good {serial}\n")))
        .chain([format!("revoked {revoked}\n")])
        .collect();
    let expected_file = daemon.tmp.path().join("expected-listing.txt");
    std::fs::write(&expected_file, expected).expect("write the expected listing");

    let output = operator_script(&python, &daemon, &ci, "list_pages.py")
        .arg(&expected_file)
        .output()
        .expect("run python3");
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        output.status.success(),
        "the grpcio auditor failed:\n{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    for line in [
        "all: 9 certificates in 3 pages of at most 3",
        "good: 8 certificates in 3 pages of at most 3",
        "revoked: 1 certificates in 1 pages of at most 3",
        &format!("revoked: {revoked}"),
    ] {
        assert!(lines.contains(&line), "no line {line:?}:\n{text}");
    }
    let mixed = "INVALID_ARGUMENT: page token \"";
    for refusal in ["issued-token-by-expiry", "expiry-token-by-issuance"] {
        assert!(
            lines.iter().any(|line| {
                line.starts_with(&format!("refused {refusal} {mixed}"))
                    && line.ends_with("belongs to a listing with other filters: pass it with the filters of the listing that returned it")
            }),
            "{refusal} was not refused naming the mix:\n{text}"
        );
    }
    assert!(
        lines.contains(&"refused malformed-token INVALID_ARGUMENT: page token \"not-a-token\" is not one certd handed out: pass the next_page_token of a previous answer unchanged, or none for the first page"),
        "the malformed token was not refused naming it:\n{text}"
    );
    assert_eq!(lines.last(), Some(&"ok"), "{text}");
}

/// A daemon whose `[[operators]]` has `ci`
/// (`spiffe://certd.internal/operator/ci`) with `grants` (its roles and
/// scope, as TOML lines), and the directory of `ci`'s operator
/// certificate and key (8 hours), issued with `certd operator issue`.
fn daemon_with_operator(grants: &str) -> (Daemon, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        format!("[[operators]]\nid = \"spiffe://certd.internal/operator/ci\"\n{grants}"),
    )
    .unwrap();
    let data_dir = tmp.path().join("ca");
    let config = config.to_str().unwrap().to_owned();
    let daemon = Daemon::start_in(tmp, data_dir, &["--config", &config]);
    let ci = daemon.tmp.path().join("ci");
    let output = daemon.cli(&[
        "operator",
        "issue",
        "--name",
        "ci",
        "--ttl",
        "8h",
        "--out",
        ci.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    (daemon, ci)
}

/// `python tests/python/NAME STUB_DIR ADDRESS BUNDLE_PEM CERT_PEM KEY_PEM`:
/// an operator script with fresh stubs, on the daemon's gRPC port over
/// mTLS with the certificate in `operator_dir`.
fn operator_script(python: &Path, daemon: &Daemon, operator_dir: &Path, name: &str) -> Command {
    let stubs = daemon.tmp.path().join("python-stubs");
    generate_stubs(python, &stubs);
    let mut command = script(python, name);
    command
        .arg(&stubs)
        .arg(daemon.grpc.trim_start_matches("https://"))
        .arg(daemon.data_dir.join("bundle.pem"))
        .arg(operator_dir.join("cert.pem"))
        .arg(operator_dir.join("key.pem"));
    command
}

/// Python stubs for every proto file of `proto/certd`, into `out`.
fn generate_stubs(python: &Path, out: &Path) {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let protos: Vec<PathBuf> = std::fs::read_dir(include.join("certd/v1"))
        .expect("proto/certd/v1")
        .map(|entry| entry.expect("a proto file").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    assert!(!protos.is_empty(), "no proto files in proto/certd/v1");
    std::fs::create_dir_all(out).expect("stub dir");
    let output = Command::new(python)
        .args(["-B", "-m", "grpc_tools.protoc", "-I"])
        .arg(&include)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&protos)
        .env_clear()
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        output.status.success(),
        "grpc_tools.protoc failed: {}{}",
        stdout(&output),
        stderr(&output)
    );
}

/// Asserts that a script succeeded and printed each of `expected` as a line
/// of its own; shows everything it printed, and the agent's log, if not.
fn assert_lines(output: &Output, agent: &Agent, expected: &[String]) {
    let text = format!("{}{}", stdout(output), stderr(output));
    let context = || format!("{text}\nagent log:\n{}", agent.log_text());
    assert!(
        output.status.success(),
        "the Python workload failed ({}):\n{}",
        output.status,
        context()
    );
    let printed = stdout(output);
    let lines: Vec<&str> = printed.lines().collect();
    for line in expected {
        assert!(
            lines.contains(&line.as_str()),
            "no line {line:?}:\n{}",
            context()
        );
    }
}

/// The agent's socket as `SPIFFE_ENDPOINT_SOCKET` says it: `unix:/path`.
fn endpoint(agent: &Agent) -> String {
    format!("unix:{}", agent.socket.display())
}

/// SHA-256 of each root in the daemon's bundle.pem, sorted, comma-separated.
fn root_fingerprints(daemon: &Daemon) -> String {
    let mut fingerprints: Vec<String> = common::pem_certs(&daemon.bundle_pem())
        .iter()
        .map(|root| hex::encode(sha2::Sha256::digest(root.as_ref())))
        .collect();
    fingerprints.sort();
    fingerprints.join(",")
}

/// The key ids of the daemon's `/jwks.json`, sorted, comma-separated.
fn jwks_key_ids(daemon: &Daemon) -> String {
    let response = common::http("GET", &format!("{}/jwks.json", daemon.http), &[], b"");
    assert_eq!(response.status, 200);
    let jwks: serde_json::Value = serde_json::from_slice(&response.body).expect("JWKS");
    let mut ids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect();
    ids.sort();
    ids.join(",")
}

/// This process's real uid and gid.
fn my_ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let first = |field: &str| -> u32 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
    };
    (first("Uid:"), first("Gid:"))
}

/// `name` found on PATH (the scripts' environment is empty, so it is looked
/// up here).
fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

fn agent_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/agent/{name}")
}

fn svc_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/svc/{service}")
}
