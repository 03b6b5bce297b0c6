//! The OAuth token endpoint and the token policy, end to end, with token
//! exchange on a user's behalf (RFC 8693) and introspection: clients
//! authenticate with their certd certificate (curl, authlib) or a JWT-SVID
//! assertion, never a secret; tokens carry only granted scopes and are
//! bound to the certificate; every refusal has its RFC 6749 error, is
//! audited with the deciding rule, and `certd policy explain` says the same.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::in_process::InProcess;
use common::outside::{node_script, node_with, python_with, said_ok, script};
use common::{Served, http, stderr, stdout, write_file};
use sha2::Digest;

const TRUST_DOMAIN: &str = "certd.internal";

const POLICY: &str = r#"
[[grant]]
name = "billing-invoices"
from = "billing"
to = "invoices"
scopes = ["invoices:create", "invoices:read"]
"#;

/// A workload identity for `service` (an entry with `extra` flags) in a
/// directory: cert.pem, key.pem, bundle.pem.
fn workload(daemon: &Served, service: &str, extra: &[&str]) -> PathBuf {
    daemon.entry(service, &[&format!("token:{service}")], extra);
    let token = daemon.token(service);
    let dir = daemon.tmp.path().join(service);
    let output = daemon.request(&token, &dir);
    assert!(output.status.success(), "{}", stderr(&output));
    dir
}

fn token_url(daemon: &Served) -> String {
    format!("{}/oauth/token", daemon.grpc)
}

/// POSTs `form` to the token endpoint with curl, presenting the identity
/// in `dir` when given; returns the HTTP status and the JSON answer.
fn post(daemon: &Served, dir: Option<&Path>, form: &[&str]) -> (u16, serde_json::Value) {
    post_to(daemon, "token", dir, form)
}

/// POSTs `form` to the token endpoint as `post` does: it must answer 200;
/// returns the answer.
fn granted(daemon: &Served, dir: Option<&Path>, form: &[&str]) -> serde_json::Value {
    let (status, answer) = post(daemon, dir, form);
    assert_eq!(status, 200, "{answer}");
    answer
}

/// POSTs `form` to `/oauth/{endpoint}` with curl, as `post` does.
fn post_to(
    daemon: &Served,
    endpoint: &str,
    dir: Option<&Path>,
    form: &[&str],
) -> (u16, serde_json::Value) {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--cacert",
        daemon.data_dir.join("bundle.pem").to_str().unwrap(),
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(dir) = dir {
        command.args([
            "--cert",
            dir.join("cert.pem").to_str().unwrap(),
            "--key",
            dir.join("key.pem").to_str().unwrap(),
        ]);
    }
    for field in form {
        command.args(["--data", field]);
    }
    if form.is_empty() {
        // Still a form, with nothing in it.
        command.args(["--data", ""]);
    }
    command.arg(format!("{}/oauth/{endpoint}", daemon.grpc));
    let output = command.output().expect("curl runs");
    let said = stdout(&output);
    let (body, status) = said.rsplit_once('\n').unwrap_or(("", ""));
    let status: u16 = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{said}{}", stderr(&output)));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

/// The issuer metadata certd serves at `path`.
fn metadata(daemon: &Served, path: &str) -> serde_json::Value {
    serde_json::from_slice(&http("GET", &format!("{}{path}", daemon.http), &[], b"").body).unwrap()
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn apply_policy(daemon: &Served, text: &str) {
    let file = daemon.tmp.path().join("policy.toml");
    write_file(&file, text);
    let check = daemon.cli(&["policy", "check", file.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    let applied = daemon.cli(&["policy", "apply", file.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
}

/// `certd policy explain` as JSON, and its exit code.
fn explain(daemon: &Served, from: &str, to: &str, scopes: &[&str]) -> (serde_json::Value, i32) {
    let mut args = vec!["policy", "explain", "--json", "--from", from, "--to", to];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let output = daemon.cli(&args);
    let answer = serde_json::from_str(stdout(&output).trim())
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&output), stderr(&output)));
    (answer, output.status.code().unwrap_or(-1))
}

fn audit_reasons(daemon: &Served) -> Vec<serde_json::Value> {
    let output = daemon.cli(&["audit", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    entries
        .into_iter()
        .filter(|e| e["event"] == "mint-access-token")
        .collect()
}

/// Granted scopes are issued, bound to the certificate; an ungranted
/// scope, an unknown audience and a caller with no grant are refused with
/// RFC 6749 / RFC 8707 codes, audited with the deciding rule, and `policy
/// explain` answers each the same way.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_issues_only_what_the_policy_grants() {
    let daemon = InProcess::start().await;
    let billing = workload(&daemon, "billing", &["--jwt-audience", "reports"]);
    let orders = workload(&daemon, "orders", &[]);
    apply_policy(&daemon, POLICY);

    // Discovery names the endpoint and how clients authenticate.
    let metadata: serde_json::Value = metadata(&daemon, "/.well-known/oauth-authorization-server");
    assert_eq!(metadata["grant_types_supported"][0], "client_credentials");
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);
    assert!(
        metadata["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/token")
    );

    let answer = granted(
        &daemon,
        Some(&billing),
        &[
            "grant_type=client_credentials",
            "audience=invoices",
            "scope=invoices:create",
        ],
    );
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["scope"], "invoices:create");
    let claims = claims_of(answer["access_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"],
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    assert_eq!(claims["aud"][0], "invoices");
    assert_eq!(claims["iss"], daemon.http.as_str());
    assert_eq!(claims["scope"], "invoices:create");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 32));
    let leaf =
        common::pem_certs(&std::fs::read_to_string(billing.join("cert.pem")).unwrap()).remove(0);
    let thumbprint =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&leaf));
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint);
    // A relying party checks issuer, scope and binding with `certd jwt verify`.
    let access_token = answer["access_token"].as_str().unwrap().to_owned();
    let jwks = format!("{}/jwks.json", daemon.http);
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "jwt",
            "verify",
            &access_token,
            "--audience",
            "invoices",
            "--jwks-url",
            &jwks,
        ];
        args.extend(extra);
        daemon.cli(&args)
    };
    // Never taken for a JWT-SVID (an identity) by a JWT-SVID verifier.
    let as_svid = verify(&[]);
    assert_eq!(as_svid.status.code(), Some(4));
    assert!(stderr(&as_svid).contains("at+jwt"), "{}", stderr(&as_svid));
    let billing_cert = billing.join("cert.pem");
    let orders_cert = orders.join("cert.pem");
    let accepted = verify(&[
        "--access-token",
        "--issuer",
        &daemon.http,
        "--scope",
        "invoices:create",
        "--bound-to",
        billing_cert.to_str().unwrap(),
    ]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    for (extra, why) in [
        (vec!["--issuer", "https://elsewhere.example"], "issuer"),
        (
            vec!["--scope", "invoices:read"],
            "does not grant scope \"invoices:read\"",
        ),
        (
            vec!["--bound-to", orders_cert.to_str().unwrap()],
            "bound to another client certificate",
        ),
    ] {
        let mut extra = extra;
        extra.insert(0, "--access-token");
        let refused = verify(&extra);
        assert_eq!(refused.status.code(), Some(4), "{extra:?}");
        assert!(stderr(&refused).contains(why), "{}", stderr(&refused));
    }

    let (explained, code) = explain(&daemon, "billing", "invoices", &["invoices:create"]);
    assert_eq!((explained["allowed"].as_bool(), code), (Some(true), 0));
    assert_eq!(explained["rules"][0], "grant billing-invoices");

    // The entry's --jwt-audience grants that audience alone.
    let answer = granted(
        &daemon,
        Some(&billing),
        &["grant_type=client_credentials", "audience=reports"],
    );
    assert!(answer.get("scope").is_none());
    // An access token is no client assertion, and certd itself is no
    // audience: neither turns one authentication into lasting tokens.
    assertion_refused(&daemon, answer["access_token"].as_str().unwrap(), "not JWT");
    let endpoint = self::metadata(&daemon, "/.well-known/openid-configuration")["token_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    for own in [endpoint.as_str(), daemon.http.as_str()] {
        let (status, answer) = post(
            &daemon,
            Some(&billing),
            &["grant_type=client_credentials", &format!("audience={own}")],
        );
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_target")),
            "{answer}"
        );
        let (explained, code) = explain(&daemon, "billing", own, &[]);
        assert_eq!(
            (explained["error"].as_str(), code),
            (Some("invalid_target"), 4)
        );
    }

    // Refusals, each with its code, its rule, and the same explanation.
    for (dir, from, audience, scope, error, rule) in [
        (
            &billing,
            "billing",
            "invoices",
            "invoices:create payroll:read",
            "invalid_scope",
            "grant billing-invoices",
        ),
        (
            &billing,
            "billing",
            "payroll",
            "",
            "invalid_target",
            "default deny",
        ),
        (
            &orders,
            "orders",
            "invoices",
            "",
            "invalid_target",
            "default deny",
        ),
    ] {
        let mut form = vec![
            "grant_type=client_credentials".to_owned(),
            format!("audience={audience}"),
        ];
        if !scope.is_empty() {
            form.push(format!("scope={scope}"));
        }
        let form: Vec<&str> = form.iter().map(String::as_str).collect();
        let (status, answer) = post(&daemon, Some(dir), &form);
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(error)),
            "{answer}"
        );
        let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
        let (explained, code) = explain(&daemon, from, audience, &scopes);
        assert_eq!(explained["allowed"], false);
        assert_eq!(explained["error"], error);
        assert_eq!(explained["rules"][0], rule);
        assert_eq!(
            code, 4,
            "explain exits 4 (refused) when the endpoint would refuse"
        );
        if error == "invalid_scope" {
            let description = answer["error_description"].as_str().unwrap();
            assert!(description.contains("payroll:read"), "{description}");
        }
    }
    let audited = audit_reasons(&daemon);
    let refused: Vec<&serde_json::Value> =
        audited.iter().filter(|e| e["allowed"] == false).collect();
    // The access token tried as an assertion, the two own audiences, and
    // the three above.
    assert_eq!(refused.len(), 6, "{audited:?}");
    assert!(
        refused.iter().any(|e| e["reason"].as_str().is_some_and(
            |r| r.contains("invalid_scope") && r.contains("rule grant billing-invoices")
        )),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rule default deny"))),
        "{refused:?}"
    );

    // A revoked caller gets nothing.
    let serial = stdout(&daemon.cli(&["list", "--service", "billing", "--json"]));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&serial).unwrap();
    let serial = listed[0]["serial"].as_str().unwrap().to_owned();
    let revoked = daemon.cli(&["revoke", &serial]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let (status, answer) = post(
        &daemon,
        Some(&billing),
        &["grant_type=client_credentials", "audience=invoices"],
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client")),
        "{answer}"
    );
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{answer}"
    );
}

/// Bad input gets RFC 6749's error and changes nothing: no client
/// authentication, a secret, a duplicated parameter, an unknown grant, a
/// body over the cap, a hostile assertion, and a policy file that is not
/// valid (the one in force stays).
#[tokio::test(flavor = "multi_thread")]
async fn bad_token_requests_get_the_rfc_error_and_change_nothing() {
    let daemon = InProcess::start().await;
    let billing = workload(&daemon, "billing", &[]);
    apply_policy(&daemon, POLICY);
    let huge = format!("scope={}", "a".repeat(20_000));
    let forged = format!(
        "client_assertion={}.{}.AAAA",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"spiffe://certd.internal/svc/billing"}"#)
    );
    let cases: Vec<(Option<&Path>, Vec<&str>, u16, &str)> = vec![
        (
            None,
            vec!["grant_type=client_credentials", "audience=invoices"],
            401,
            "invalid_client",
        ),
        (
            None,
            vec![
                "grant_type=client_credentials",
                "audience=invoices",
                "client_id=x",
                "client_secret=y",
            ],
            401,
            "invalid_client",
        ),
        (
            Some(&billing),
            vec![
                "grant_type=client_credentials",
                "audience=invoices",
                "audience=payroll",
            ],
            400,
            "invalid_request",
        ),
        (
            Some(&billing),
            vec!["grant_type=password", "audience=invoices"],
            400,
            "unsupported_grant_type",
        ),
        (
            Some(&billing),
            vec!["audience=invoices"],
            400,
            "invalid_request",
        ),
        (
            Some(&billing),
            vec!["grant_type=client_credentials"],
            400,
            "invalid_request",
        ),
        (
            Some(&billing),
            vec!["grant_type=client_credentials", "audience=invoices", &huge],
            400,
            "invalid_request",
        ),
        (
            None,
            vec![
                "grant_type=client_credentials",
                "audience=invoices",
                "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
                &forged,
            ],
            401,
            "invalid_client",
        ),
    ];
    let cases: Vec<(Option<&Path>, Vec<&str>, u16, &str)> = cases
        .into_iter()
        .chain([
            // RFC 8707: a resource is an absolute URI.
            (
                Some(billing.as_path()),
                vec!["grant_type=client_credentials", "resource=invoices"],
                400,
                "invalid_target",
            ),
            // RFC 6749 §3.1: a parameter without a value is omitted.
            (
                Some(billing.as_path()),
                vec!["grant_type=client_credentials", "audience="],
                400,
                "invalid_request",
            ),
        ])
        .collect();
    for (dir, form, status, error) in cases {
        let (got, answer) = post(&daemon, dir, &form);
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(error)),
            "{form:?}: {answer}"
        );
    }
    // A client secret over HTTP Basic: 401 in the scheme the client used.
    let output = Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--cacert",
            daemon.data_dir.join("bundle.pem").to_str().unwrap(),
        ])
        .args([
            "-u",
            "billing:secret",
            "--data",
            "grant_type=client_credentials",
        ])
        .args(["--data", "audience=invoices", &token_url(&daemon)])
        .output()
        .unwrap();
    let answer = stdout(&output);
    assert!(
        answer.starts_with("HTTP/2 401") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"certd\""),
        "{answer}"
    );
    assert!(answer.contains("invalid_client"), "{answer}");
    // Not a form at all.
    let output = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            daemon.data_dir.join("bundle.pem").to_str().unwrap(),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data",
            "{}",
            &token_url(&daemon),
        ])
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&output), stderr(&output)));
    assert_eq!(answer["error"], "invalid_request");
    assert!(
        audit_reasons(&daemon).iter().all(|e| e["allowed"] == false),
        "nothing was granted"
    );

    // A policy file that is not valid is refused and the policy stays.
    let bad = daemon.tmp.path().join("bad.toml");
    write_file(
        &bad,
        "[[grant]]\nname = \"x\"\nfrom = \"billing\"\nto = \"has space\"\n",
    );
    let check = daemon.cli(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("grant \"x\": to: audience"),
        "{}",
        stderr(&check)
    );
    let apply = daemon.cli(&["policy", "apply", bad.to_str().unwrap()]);
    assert_eq!(apply.status.code(), Some(2), "{}", stderr(&apply));
    let shown = stdout(&daemon.cli(&["policy", "show"]));
    assert!(
        shown.contains("version 1") && shown.contains("billing-invoices"),
        "{shown}"
    );
    // A stale --expected-version never overwrites a newer policy.
    let file = daemon.tmp.path().join("policy.toml");
    let stale = daemon.cli(&[
        "policy",
        "apply",
        file.to_str().unwrap(),
        "--expected-version",
        "0",
    ]);
    assert_ne!(stale.status.code(), Some(0));
    assert!(
        stderr(&stale).contains("changed meanwhile"),
        "{}",
        stderr(&stale)
    );

    // One grant at a time: added, enforced, removed; removing it twice is
    // NOT_FOUND (exit 5).
    let granted = daemon.cli(&[
        "policy",
        "grant",
        "billing-payroll",
        "--from",
        "billing",
        "--to",
        "payroll",
        "--scope",
        "payroll:read",
    ]);
    assert!(granted.status.success(), "{}", stderr(&granted));
    assert!(
        stdout(&granted).contains("policy version 2, 2 grant(s)"),
        "{}",
        stdout(&granted)
    );
    let (explained, _) = explain(&daemon, "billing", "payroll", &["payroll:read"]);
    assert_eq!(explained["rules"][0], "grant billing-payroll");
    let (status, _) = post(
        &daemon,
        Some(&billing),
        &[
            "grant_type=client_credentials",
            "audience=payroll",
            "scope=payroll:read",
        ],
    );
    assert_eq!(status, 200);
    let bad_grant = daemon.cli(&["policy", "grant", "x", "--from", "billing", "--to", "a b"]);
    assert_eq!(bad_grant.status.code(), Some(2), "{}", stderr(&bad_grant));
    let revoked = daemon.cli(&["policy", "revoke", "billing-payroll"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let (explained, code) = explain(&daemon, "billing", "payroll", &[]);
    assert_eq!(
        (explained["rules"][0].as_str(), code),
        (Some("default deny"), 4)
    );
    let again = daemon.cli(&["policy", "revoke", "billing-payroll"]);
    assert_eq!(again.status.code(), Some(5), "{}", stderr(&again));
}

/// A caller behind a TLS-terminating proxy authenticates with a JWT-SVID
/// as client assertion (no certificate on the connection): the token is
/// issued, not certificate-bound; an assertion for another audience, or
/// expired, is refused with invalid_client.
#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_svid_client_assertion_authenticates_the_client() {
    let daemon = InProcess::start().await;
    let metadata: serde_json::Value = metadata(&daemon, "/.well-known/openid-configuration");
    let endpoint = metadata["token_endpoint"].as_str().unwrap().to_owned();
    let billing = workload(
        &daemon,
        "billing",
        &["--jwt-audience", &endpoint, "--jwt-audience", "elsewhere"],
    );
    apply_policy(&daemon, POLICY);
    let mint = |audience: &str, ttl: &str| {
        let output = daemon.cli(&[
            "jwt",
            "mint",
            "--server",
            &daemon.grpc,
            "--dir",
            billing.to_str().unwrap(),
            "--audience",
            audience,
            "--ttl",
            ttl,
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).trim().to_owned()
    };
    let assertion = mint(&endpoint, "5m");
    for assertion_type in [
        "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    ] {
        assertion_accepted(&daemon, assertion_type, &assertion, "invoices:read");
    }
    // One meant for another service too would let it act as the client.
    let output = daemon.cli(&[
        "jwt",
        "mint",
        "--server",
        &daemon.grpc,
        "--dir",
        billing.to_str().unwrap(),
        "--audience",
        &endpoint,
        "--audience",
        "elsewhere",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assertion_refused(&daemon, stdout(&output).trim(), "exactly one audience");
    let elsewhere = mint("elsewhere", "5m");
    assertion_refused(&daemon, &elsewhere, "not for this token endpoint");
    // Expired: the daemon's clock moves past the assertion's lifetime.
    daemon.advance(std::time::Duration::from_secs(600));
    assertion_refused(&daemon, &assertion, "expired");
}

/// Posts `assertion` (of `assertion_type`) for an invoices token with
/// `scope`: billing's token must come back, not certificate-bound.
fn assertion_accepted(daemon: &Served, assertion_type: &str, assertion: &str, scope: &str) {
    let answer = granted(
        daemon,
        None,
        &[
            "grant_type=client_credentials",
            "audience=invoices",
            &format!("scope={scope}"),
            &format!("client_assertion_type={assertion_type}"),
            &format!("client_assertion={assertion}"),
        ],
    );
    let claims = claims_of(answer["access_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"],
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    assert_eq!(claims["scope"], scope);
    assert!(claims.get("cnf").is_none(), "not bound: no certificate");
}

/// Posts `assertion` as a jwt-spiffe client assertion: it must be refused
/// with `invalid_client`, saying `why`.
fn assertion_refused(daemon: &Served, assertion: &str, why: &str) {
    let (status, answer) = post(
        daemon,
        None,
        &[
            "grant_type=client_credentials",
            "audience=invoices",
            "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
            &format!("client_assertion={assertion}"),
        ],
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client")),
        "{answer}"
    );
    let description = answer["error_description"].as_str().unwrap();
    assert!(description.contains(why), "{description}");
}

/// Has an outside OAuth client (`client`, given issuer, CA bundle,
/// certificate, key, client id, audience and scope) get a token for
/// billing with the certificate alone and verify it: it must say `ok` and
/// the claims, with billing as `sub` and the scope granted.
async fn an_outside_oauth_client_gets_a_token(client: std::process::Command, scope: &str) {
    let mut client = client;
    let daemon = InProcess::start().await;
    let billing = workload(&daemon, "billing", &[]);
    apply_policy(&daemon, POLICY);
    let billing_id = format!("spiffe://{TRUST_DOMAIN}/svc/billing");
    let output = client
        .args([
            daemon.http.as_str(),
            daemon.data_dir.join("bundle.pem").to_str().unwrap(),
            billing.join("cert.pem").to_str().unwrap(),
            billing.join("key.pem").to_str().unwrap(),
            &billing_id,
            "invoices",
            scope,
        ])
        .output()
        .unwrap();
    let claims = said_ok(&output);
    assert_eq!(claims["sub"], billing_id);
    assert_eq!(claims["scope"], scope);
}

/// authlib runs the client-credentials flow with the client certificate
/// and no secret, finding the endpoint through RFC 8414 metadata; PyJWT
/// verifies iss, aud, exp, scope and cnf from the discovered keys.
#[tokio::test(flavor = "multi_thread")]
async fn authlib_gets_a_certificate_bound_token_that_pyjwt_verifies() {
    let Some(python) = python_with(&["authlib", "requests", "jwt", "cryptography"]) else {
        return;
    };
    an_outside_oauth_client_gets_a_token(
        script(&python, "oauth_client.py"),
        "invoices:create invoices:read",
    )
    .await;
}

/// Node's openid-client discovers certd and runs the client-credentials
/// flow with tls_client_auth (the certificate through undici, no secret);
/// jose's jwtVerify accepts the token with the issuer and audience.
#[tokio::test(flavor = "multi_thread")]
async fn node_openid_client_gets_a_token_that_jose_verifies() {
    let Some(node) = node_with("openid-client") else {
        return;
    };
    an_outside_oauth_client_gets_a_token(node_script(&node, "oauth_client.mjs"), "invoices:read")
        .await;
}

/// A workload on a node asks its agent's Workload API (`FetchJWTSVID`) for
/// a JWT-SVID for the token endpoint, and authenticates with it as client
/// assertion.
#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_svid_from_the_node_agent_is_a_client_assertion() {
    use std::os::unix::fs::MetadataExt;
    let daemon = InProcess::start().await;
    let metadata: serde_json::Value = metadata(&daemon, "/.well-known/openid-configuration");
    let endpoint = metadata["token_endpoint"].as_str().unwrap().to_owned();
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    daemon.entry(
        "billing",
        &[&format!("unix:uid:{uid}")],
        &[
            "--parent",
            &format!("spiffe://{TRUST_DOMAIN}/agent/node-1"),
            "--jwt-audience",
            &endpoint,
        ],
    );
    apply_policy(&daemon, POLICY);
    let agent = common::agent::InProcessAgent::start(&daemon, "node-1").await;
    let mut workload_api = common::agent::raw_client(&agent.socket).await;
    let mut request = tonic::Request::new(certd::agent::proto::JwtsvidRequest {
        audience: vec![endpoint.clone()],
        spiffe_id: String::new(),
    });
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let svids = workload_api
        .fetch_jwtsvid(request)
        .await
        .unwrap()
        .into_inner();
    let assertion = &svids.svids[0].svid;
    assertion_accepted(
        &daemon,
        "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
        assertion,
        "invoices:create",
    );
}

/// RFC 7662: the service a token is for asks certd whether it is active:
/// yes with its claims while it is valid and its client registered; no for
/// a token meant for another service, after it expired, or once its
/// client's entry is gone; a caller that does not authenticate gets
/// `invalid_client`.
#[tokio::test(flavor = "multi_thread")]
async fn introspection_answers_the_service_a_token_is_for() {
    let daemon = InProcess::start().await;
    let billing = workload(&daemon, "billing", &[]);
    let invoices = workload(&daemon, "invoices", &[]);
    let orders = workload(&daemon, "orders", &[]);
    apply_policy(&daemon, POLICY);
    let discovered = metadata(&daemon, "/.well-known/oauth-authorization-server");
    assert!(
        discovered["introspection_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/introspect")
    );
    let answer = granted(
        &daemon,
        Some(&billing),
        &[
            "grant_type=client_credentials",
            "audience=invoices",
            "scope=invoices:create",
        ],
    );
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let introspect = |dir: Option<&Path>, token: &str| {
        post_to(
            &daemon,
            "introspect",
            dir,
            &[&format!("token={token}"), "token_type_hint=access_token"],
        )
    };

    let (status, active) = introspect(Some(&invoices), &token);
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["active"], true);
    assert_eq!(
        active["sub"],
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    assert_eq!(active["scope"], "invoices:create");
    assert_eq!(active["token_type"], "Bearer");
    assert!(active["cnf"]["x5t#S256"].is_string());

    // authlib, as a Python service would ask (when its clients are installed).
    if let Some(python) = python_with(&["authlib", "requests"]) {
        let invoices_id = format!("spiffe://{TRUST_DOMAIN}/svc/invoices");
        let output = script(&python, "oauth_introspect.py")
            .args([
                daemon.http.as_str(),
                daemon.data_dir.join("bundle.pem").to_str().unwrap(),
                invoices.join("cert.pem").to_str().unwrap(),
                invoices.join("key.pem").to_str().unwrap(),
                &invoices_id,
                &token,
            ])
            .output()
            .unwrap();
        let answer = said_ok(&output);
        assert_eq!(answer["active"], true);
        assert_eq!(answer["scope"], "invoices:create");
    }

    // Not the service it is for, not a token at all: inactive, nothing more.
    for (dir, token) in [(&orders, token.as_str()), (&invoices, "not-a-token")] {
        let (status, answer) = introspect(Some(dir), token);
        assert_eq!(
            (status, answer.clone()),
            (200, serde_json::json!({"active": false}))
        );
    }
    // No client authentication: refused.
    let (status, answer) = introspect(None, &token);
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, answer) = post_to(&daemon, "introspect", Some(&invoices), &[]);
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // Inactive once it has expired: the daemon's clock moves past it.
    daemon.advance(std::time::Duration::from_secs(600));
    let (_, answer) = introspect(Some(&invoices), &token);
    assert_eq!(answer, serde_json::json!({"active": false}));

    // A fresh token is active, until billing's entry is gone.
    let answer = granted(
        &daemon,
        Some(&billing),
        &["grant_type=client_credentials", "audience=invoices"],
    );
    let fresh = answer["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(Some(&invoices), &fresh).1["active"], true);
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&daemon.cli(&["entry", "list", "--json"]))).unwrap();
    let entry = entries.iter().find(|e| e["service"] == "billing").unwrap();
    let deleted = daemon.cli(&["entry", "delete", entry["id"].as_str().unwrap()]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let (_, answer) = introspect(Some(&invoices), &fresh);
    assert_eq!(answer, serde_json::json!({"active": false}));
    let audited = stdout(&daemon.cli(&["audit", "--json"]));
    assert!(audited.contains("introspect-token"), "{audited}");
}

/// The identity provider of the token-exchange tests: its issuer, and
/// the delegations of the gateway → orders → payments → ledger chain.
const IDP: &str = "https://idp.test";

const DELEGATIONS: &str = r#"
[[delegation]]
name = "orders-for-users"
from = "orders"
on_behalf_of = ["https://idp.test"]
to = "payments"
scopes = ["payments:charge", "payments:refund", "ledger:write"]

[[delegation]]
name = "payments-for-users"
from = "payments"
on_behalf_of = ["https://idp.test"]
to = "ledger"
scopes = ["ledger:write"]
max_chain = 2

[[delegation]]
name = "ledger-for-users"
from = "ledger"
on_behalf_of = ["https://idp.test"]
to = "reports"
max_chain = 2
"#;

/// certd with the test identity provider as a trusted subject issuer, its
/// JWKS served over HTTPS (`by_url`) or read from a file; orders, payments
/// and ledger registered; the delegations applied. Returns the daemon,
/// the provider's key, and the three workloads' directories.
async fn exchanging_daemon(
    by_url: bool,
) -> (
    InProcess,
    rcgen::KeyPair,
    Option<common::k8s_issuer::JwksServer>,
    [PathBuf; 3],
) {
    use common::k8s_issuer::{JwksServer, jwks};
    let tmp = tempfile::tempdir().unwrap();
    let idp_key = rcgen::KeyPair::generate().unwrap();
    let (keys, server) = if by_url {
        let server = JwksServer::start(tmp.path()).await;
        server.serve(200, jwks(&[&idp_key]));
        let keys = format!(
            "jwks_url = \"{}\"\njwks_url_ca_file = \"{}\"",
            server.url,
            server.ca_file.display()
        );
        (keys, Some(server))
    } else {
        let file = tmp.path().join("idp-jwks.json");
        write_file(&file, jwks(&[&idp_key]));
        (format!("jwks_file = \"{}\"", file.display()), None)
    };
    let config = format!(
        "[[token_exchange.subject_issuer]]\nissuer = \"{IDP}\"\n{keys}\naudiences = [\"orders\", \"billing\", \"gateway\"]\nclaims = [\"email\", \"groups\"]\n"
    );
    let data_dir = tmp.path().join("ca");
    let daemon = InProcess::start_in(tmp, data_dir, &config).await;
    let dirs = ["orders", "payments", "ledger"].map(|service| workload(&daemon, service, &[]));
    apply_policy(&daemon, DELEGATIONS);
    (daemon, idp_key, server, dirs)
}

/// A user token from the test identity provider for orders (where the
/// user signed in).
fn user_token(key: &rcgen::KeyPair, changes: &[(&str, serde_json::Value)]) -> String {
    let now = common::k8s_issuer::now();
    let mut claims = serde_json::json!({
        "iss": IDP, "sub": "alice", "aud": "orders", "iat": now, "exp": now + 600,
        "scope": "payments:charge ledger:write", "email": "alice@example.com",
        "groups": ["buyers"], "role": "admin",
    });
    for (field, value) in changes {
        claims[*field] = value.clone();
    }
    common::k8s_issuer::es256(key, &claims)
}

/// The form of an exchange of `subject_token` for `audience`.
fn exchange_form(
    subject_token: &str,
    token_type: &str,
    audience: &str,
    scope: &str,
) -> Vec<String> {
    let mut form = vec![
        "grant_type=urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        format!("subject_token={subject_token}"),
        format!("subject_token_type=urn:ietf:params:oauth:token-type:{token_type}"),
        format!("audience={audience}"),
    ];
    if !scope.is_empty() {
        form.push(format!("scope={scope}"));
    }
    form
}

fn exchange(
    daemon: &Served,
    dir: &Path,
    subject_token: &str,
    token_type: &str,
    audience: &str,
    scope: &str,
) -> (u16, serde_json::Value) {
    let form = exchange_form(subject_token, token_type, audience, scope);
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    post(daemon, Some(dir), &form)
}

fn id_of(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/svc/{service}")
}

/// A user's token, exchanged by orders for payments and by payments for
/// ledger (curl): `sub` stays the user, `act` nests the chain, scopes
/// narrow, lifetimes never exceed the user's; each way to get it wrong is
/// refused with RFC 8693's error and audited with the deciding rule, a
/// revoked actor ends the chain and makes introspection inactive, and
/// `policy explain --on-behalf-of` says the same.
#[tokio::test(flavor = "multi_thread")]
async fn token_exchange_carries_the_user_and_the_chain_and_refuses_the_rest() {
    let (daemon, idp_key, _, [orders, payments, ledger]) = exchanging_daemon(false).await;
    let metadata = metadata(&daemon, "/.well-known/oauth-authorization-server");
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&"urn:ietf:params:oauth:grant-type:token-exchange".into())
    );
    let user = user_token(&idp_key, &[]);
    let user_exp = claims_of(&user)["exp"].as_i64().unwrap();

    // Scopes only narrow along the chain: what payments will pass on to
    // ledger must be in the token it gets.
    let (status, answer) = exchange(
        &daemon,
        &orders,
        &user,
        "jwt",
        "payments",
        "payments:charge ledger:write",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(answer["scope"], "ledger:write payments:charge");
    let for_payments = answer["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&for_payments);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["subject_issuer"], IDP);
    assert_eq!(claims["client_id"], id_of("orders"));
    assert_eq!(claims["act"]["sub"], id_of("orders"));
    assert!(claims["act"].get("act").is_none());
    assert_eq!(claims["aud"][0], "payments");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"][0], "buyers");
    assert!(claims.get("role").is_none(), "not on the allow-list");
    assert!(claims["exp"].as_i64().unwrap() <= user_exp);

    let (status, answer) = exchange(
        &daemon,
        &payments,
        &for_payments,
        "access_token",
        "ledger",
        "ledger:write",
    );
    assert_eq!(status, 200, "{answer}");
    let for_ledger = answer["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&for_ledger);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["subject_issuer"], IDP);
    assert_eq!(claims["act"]["sub"], id_of("payments"));
    assert_eq!(claims["act"]["act"]["sub"], id_of("orders"));
    assert_eq!(claims["scope"], "ledger:write");
    assert_eq!(claims["email"], "alice@example.com");
    // The relying party checks it with `certd jwt verify`.
    let verified = daemon.cli(&[
        "jwt",
        "verify",
        &for_ledger,
        "--audience",
        "ledger",
        "--jwks-url",
        &format!("{}/jwks.json", daemon.http),
        "--access-token",
        "--scope",
        "ledger:write",
    ]);
    assert!(
        stdout(&verified).starts_with(&format!("valid: alice through {}", id_of("payments"))),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );

    // Refused, each with its RFC error.
    let refused = |dir: &Path, token: &str, kind: &str, audience: &str, scope: &str| {
        let (status, answer) = exchange(&daemon, dir, token, kind, audience, scope);
        assert_eq!(status, 400, "{answer}");
        (
            answer["error"].as_str().unwrap().to_owned(),
            answer["error_description"].as_str().unwrap().to_owned(),
        )
    };
    // A user token meant for another service (orders, or the gateway) is
    // not the caller's to exchange, even where a delegation would allow it.
    let (error, why) = refused(&ledger, &user, "jwt", "reports", "");
    assert_eq!(error, "invalid_request", "{why}");
    assert!(why.contains("not for the caller"), "{why}");
    let for_gateway = user_token(&idp_key, &[("aud", "gateway".into())]);
    let (error, _) = refused(&orders, &for_gateway, "jwt", "payments", "");
    assert_eq!(error, "invalid_request");
    // An actor without delegation rights.
    let billing = workload(&daemon, "billing", &[]);
    let for_billing = user_token(&idp_key, &[("aud", "billing".into())]);
    let (error, why) = refused(&billing, &for_billing, "jwt", "payments", "");
    assert_eq!(error, "unauthorized_client", "{why}");
    // An audience outside policy.
    let (error, why) = refused(&orders, &user, "jwt", "ledger", "");
    assert_eq!(error, "invalid_target", "{why}");
    // A scope beyond the user's, and one beyond the actor's.
    let (error, why) = refused(&orders, &user, "jwt", "payments", "payments:refund");
    assert_eq!(error, "invalid_scope", "{why}");
    assert!(why.contains("the subject token carries"), "{why}");
    let (error, why) = refused(&orders, &user, "jwt", "payments", "payments:admin");
    assert_eq!(error, "invalid_scope", "{why}");
    assert!(why.contains("the delegation allows"), "{why}");
    // Untrusted: signed by another key; expired; from another issuer.
    let stranger = rcgen::KeyPair::generate().unwrap();
    let forged = common::k8s_issuer::es256(&stranger, &claims_of(&user));
    let (error, why) = refused(&orders, &forged, "jwt", "payments", "");
    assert_eq!(error, "invalid_request", "{why}");
    let now = common::k8s_issuer::now();
    let expired = user_token(&idp_key, &[("exp", (now - 120).into())]);
    let (error, why) = refused(&orders, &expired, "jwt", "payments", "");
    assert_eq!(
        (error.as_str(), why.contains("expired")),
        ("invalid_request", true),
        "{why}"
    );
    let elsewhere = user_token(&idp_key, &[("iss", "https://evil.test".into())]);
    let (error, _) = refused(&orders, &elsewhere, "jwt", "payments", "");
    assert_eq!(error, "invalid_request");
    // A user who claims a workload's SPIFFE ID as subject.
    let impostor = user_token(&idp_key, &[("sub", id_of("payroll").into())]);
    let (error, why) = refused(&orders, &impostor, "jwt", "payments", "");
    assert_eq!(error, "invalid_request", "{why}");
    assert!(why.contains("SPIFFE ID"), "{why}");
    // A token meant for another service is not orders' to exchange.
    let (error, why) = refused(&orders, &for_payments, "access_token", "payments", "");
    assert_eq!(error, "invalid_request", "{why}");
    // A chain deeper than allowed: ledger may act at depth 2, not 3.
    let (error, why) = refused(&ledger, &for_ledger, "access_token", "reports", "");
    assert_eq!(error, "invalid_request", "{why}");
    assert!(why.contains("would be 3 long"), "{why}");

    // Introspection: active for the service it is for, until an actor's
    // certificate is revoked mid-chain.
    let introspect = |dir: &Path, token: &str| {
        post_to(
            &daemon,
            "introspect",
            Some(dir),
            &[&format!("token={token}")],
        )
    };
    let (status, active) = introspect(&ledger, &for_ledger);
    assert_eq!((status, &active["active"]), (200, &true.into()), "{active}");
    assert_eq!(active["act"]["act"]["sub"], id_of("orders"));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(&daemon.cli(&[
        "list",
        "--service",
        "orders",
        "--json",
    ])))
    .unwrap();
    let revoked = daemon.cli(&["revoke", listed[0]["serial"].as_str().unwrap()]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let (_, inactive) = introspect(&ledger, &for_ledger);
    assert_eq!(inactive, serde_json::json!({"active": false}));
    let (error, why) = refused(&payments, &for_payments, "access_token", "ledger", "");
    assert_eq!(error, "invalid_request", "{why}");
    assert!(why.contains("revoked"), "{why}");

    // Every exchange is audited with subject, actors, audience, scopes and rule.
    let output = daemon.cli(&["audit", "--json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let exchanges: Vec<&str> = entries
        .iter()
        .filter(|e| e["event"] == "exchange-token")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    let audited = |needles: &[&str]| {
        assert!(
            exchanges
                .iter()
                .any(|r| needles.iter().all(|n| r.contains(n))),
            "no exchange audit with {needles:?}: {exchanges:#?}"
        );
    };
    audited(&[
        "subject \"alice\" of https://idp.test",
        &format!("actors [{} <- {}]", id_of("payments"), id_of("orders")),
        "audience \"ledger\"",
        "granted [ledger:write]",
        "rule delegation payments-for-users",
    ]);
    audited(&["unauthorized_client", "rule default deny"]);
    audited(&["invalid_scope", "rule delegation orders-for-users"]);
    audited(&["would be 3 long", "rule delegation ledger-for-users"]);
    audited(&["has expired", "rule check subject token"]);
    audited(&["not for the caller", "rule check subject token"]);
    audited(&["revoked", "rule check actor chain"]);

    // `policy explain` answers exchanges the same way.
    let explain_exchange = |from: &str, to: &str, chain: &str, scopes: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--json",
            "--from",
            from,
            "--to",
            to,
            "--on-behalf-of",
            IDP,
            "--chain",
            chain,
        ];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        let output = daemon.cli(&args);
        let answer: serde_json::Value = serde_json::from_str(stdout(&output).trim())
            .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&output), stderr(&output)));
        (answer, output.status.code().unwrap_or(-1))
    };
    let (answer, code) = explain_exchange("payments", "ledger", "2", &["ledger:write"]);
    assert_eq!(
        (answer["allowed"].as_bool(), code),
        (Some(true), 0),
        "{answer}"
    );
    assert_eq!(answer["rules"][0], "delegation payments-for-users");
    let (answer, code) = explain_exchange("ledger", "reports", "3", &[]);
    assert_eq!(
        (answer["error"].as_str(), code),
        (Some("invalid_request"), 4),
        "{answer}"
    );
    let (answer, _) = explain_exchange("billing", "payments", "1", &[]);
    assert_eq!(answer["error"], "unauthorized_client");
}

/// authlib (orders) and requests (payments) run the exchanges against a
/// provider whose JWKS certd fetches over HTTPS; PyJWT checks `sub`, the
/// nested `act`, `aud`, scope narrowing and `exp`; Node's jose verifies
/// the same tokens with issuer and audience.
#[tokio::test(flavor = "multi_thread")]
async fn outside_clients_exchange_tokens_and_verify_the_chain() {
    let Some(python) = python_with(&["authlib", "requests", "jwt", "cryptography"]) else {
        return;
    };
    let (daemon, idp_key, _server, [orders, payments, _]) = exchanging_daemon(true).await;
    let user = user_token(&idp_key, &[]);
    let output = script(&python, "token_exchange.py")
        .args([
            daemon.http.as_str(),
            daemon.data_dir.join("bundle.pem").to_str().unwrap(),
            orders.to_str().unwrap(),
            payments.to_str().unwrap(),
            &user,
            IDP,
        ])
        .output()
        .unwrap();
    let answer = said_ok(&output);
    assert_eq!(answer["orders"], id_of("orders"));
    let Some(node) = node_with("jose") else {
        return;
    };
    for (token, audience, chain) in [
        (&answer["payments_token"], "payments", vec![id_of("orders")]),
        (
            &answer["ledger_token"],
            "ledger",
            vec![id_of("payments"), id_of("orders")],
        ),
    ] {
        let output = node_script(&node, "token_exchange.mjs")
            .args([
                daemon.http.as_str(),
                token.as_str().unwrap(),
                audience,
                "alice",
                &serde_json::to_string(&chain).unwrap(),
            ])
            .output()
            .unwrap();
        let verified = said_ok(&output);
        assert_eq!(verified["sub"], "alice");
        assert_eq!(verified["act"], serde_json::json!(chain));
    }
}
