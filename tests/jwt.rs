//! JWT-SVIDs end to end: minted over mTLS by `certd jwt mint`, verified by
//! a standard JWT library (`jsonwebtoken`) against `/jwks.json` and by
//! `certd jwt verify`; least-privilege audiences; the SPIFFE bundle; key
//! rotation.

mod common;

use std::path::Path;
use std::time::Duration;

use common::in_process::InProcess;
use common::outside::{node_script, node_with, python_with, said_ok, script};
use common::{Daemon, Served, http, stderr, stdout};

const TRUST_DOMAIN: &str = "certd.internal";

/// A workload identity for `service` (an entry with `audiences`) in a
/// directory, as `certd request` writes it.
fn workload(daemon: &Served, service: &str, audiences: &[&str]) -> std::path::PathBuf {
    let mut extra = Vec::new();
    for audience in audiences {
        extra.extend(["--jwt-audience", audience]);
    }
    daemon.entry(service, &[&format!("token:{service}")], &extra);
    let token = daemon.token(service);
    let dir = daemon.tmp.path().join(service);
    let output = daemon.cli(&[
        "request",
        "--server",
        &daemon.grpc,
        "--ca-bundle",
        daemon.data_dir.join("bundle.pem").to_str().unwrap(),
        "--token",
        &token,
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    dir
}

fn mint(daemon: &Served, dir: &Path, audiences: &[&str], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["jwt", "mint", "--server", &daemon.grpc, "--dir"];
    args.push(dir.to_str().unwrap());
    for audience in audiences {
        args.extend(["--audience", audience]);
    }
    args.extend(extra);
    daemon.cli(&args)
}

fn minted(daemon: &Served, dir: &Path, audiences: &[&str]) -> String {
    let output = mint(daemon, dir, audiences, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

fn verify(daemon: &Served, token: &str, audience: &str) -> std::process::Output {
    daemon.cli(&[
        "jwt",
        "verify",
        token,
        "--audience",
        audience,
        "--jwks-url",
        &format!("{}/jwks.json", daemon.http),
    ])
}

/// Verifies with `jsonwebtoken` alone, as a service without certd's code
/// would: the key chosen by `kid` from `/jwks.json`.
fn verify_with_a_standard_library(
    daemon: &Served,
    token: &str,
    audience: &str,
) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&http("GET", &format!("{}/jwks.json", daemon.http), &[], b"").body)
            .unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    let kid = header.kid.expect("a kid");
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    // The algorithm is the key's, as published, never the token's word.
    let algorithm = jwk.common.key_algorithm.expect("the key names its alg");
    let algorithm: jsonwebtoken::Algorithm = algorithm.to_string().parse()?;
    let mut validation = jsonwebtoken::Validation::new(algorithm);
    validation.set_audience(&[audience]);
    Ok(jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)?.claims)
}

#[test]
fn tokens_are_minted_only_for_allowed_audiences_and_verify_anywhere() {
    let daemon = Daemon::start();
    let payments = format!("spiffe://{TRUST_DOMAIN}/svc/payments");
    let dir = workload(&daemon, "billing", &[&payments, "gateway"]);

    let token = minted(&daemon, &dir, &[&payments, "gateway"]);
    let claims = verify_with_a_standard_library(&daemon, &token, &payments).unwrap();
    assert_eq!(
        claims["sub"],
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 300, "five minutes by default");

    let output = verify(&daemon, &token, "gateway");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with(&format!("valid: spiffe://{TRUST_DOMAIN}/svc/billing until")),
        "{}",
        stdout(&output)
    );
    // Another audience: refused by both verifiers, exit 4 from the CLI.
    assert!(verify_with_a_standard_library(&daemon, &token, "other").is_err());
    let output = verify(&daemon, &token, "other");
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not for audience"),
        "{}",
        stderr(&output)
    );

    // Least privilege: an audience the entry does not allow is refused,
    // named, and audited; an entry without audiences gets no token at all.
    let output = mint(
        &daemon,
        &dir,
        &["gateway", "spiffe://certd.internal/svc/hr"],
        &[],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("\"spiffe://certd.internal/svc/hr\" is not allowed"),
        "{}",
        stderr(&output)
    );
    let quiet = workload(&daemon, "reports", &[]);
    let output = mint(&daemon, &quiet, &["gateway"], &[]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let output = mint(&daemon, &dir, &["gateway"], &["--ttl", "2h"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("jwt.max_ttl"),
        "{}",
        stderr(&output)
    );
    let audit = stdout(&daemon.cli(&["audit", "--json"]));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    let refusals = entries
        .iter()
        .filter(|e| e["event"] == "mint-jwt" && e["allowed"] == false)
        .count();
    assert!(refusals >= 3, "{audit}");
    assert!(audit.contains("svc/hr"), "{audit}");
    // Each names the rule that decided, as `certd policy explain` would.
    assert!(
        entries.iter().any(|e| e["event"] == "mint-jwt"
            && e["allowed"] == true
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("(--jwt-audience)"))),
        "{audit}"
    );
    assert!(
        entries.iter().any(|e| e["event"] == "mint-jwt"
            && e["allowed"] == false
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("rule default deny"))),
        "{audit}"
    );

    // A revoked certificate mints nothing.
    let serial = stdout(&daemon.cli(&["list", "--service", "billing", "--json"]));
    let serial: serde_json::Value = serde_json::from_str(&serial).unwrap();
    let serial = serial[0]["serial"].as_str().unwrap().to_owned();
    assert!(daemon.cli(&["revoke", &serial]).status.success());
    let output = mint(&daemon, &dir, &["gateway"], &[]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("revoked"), "{}", stderr(&output));
}

#[test]
fn the_key_sets_are_cacheable_and_the_spiffe_bundle_holds_the_roots() {
    let daemon = Daemon::start();
    let jwks_url = format!("{}/jwks.json", daemon.http);
    let first = http("GET", &jwks_url, &[], b"");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/json"));
    let etag = first.header("etag").expect("an ETag").to_owned();
    let again = http("GET", &jwks_url, &[("If-None-Match", &etag)], b"");
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    for path in ["/bundle.spiffe", "/.well-known/spiffe-bundle"] {
        let answer = http("GET", &format!("{}{path}", daemon.http), &[], b"");
        assert_eq!(answer.status, 200, "{path}");
        let bundle: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert!(bundle["spiffe_sequence"].as_u64().unwrap() >= 1);
        assert!(bundle["spiffe_refresh_hint"].as_u64().unwrap() >= 1);
        let keys = bundle["keys"].as_array().unwrap();
        use base64::Engine;
        let roots: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| k["use"] == "x509-svid")
            .map(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(k["x5c"][0].as_str().unwrap())
                    .unwrap()
            })
            .collect();
        let bundle_pem: Vec<Vec<u8>> = common::pem_certs(&daemon.bundle_pem())
            .into_iter()
            .map(|c| c.to_vec())
            .collect();
        assert_eq!(roots, bundle_pem, "{path}: the x509 keys are bundle.pem");
        let jwt_kids: Vec<&str> = keys
            .iter()
            .filter(|k| k["use"] == "jwt-svid")
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        let jwks: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        let published: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(jwt_kids, published, "{path}: the jwt keys are /jwks.json's");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_key_rotation_old_tokens_verify_until_they_expire_and_new_ones_use_the_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let daemon = InProcess::start_in(
        tmp,
        data_dir,
        "[jwt]\nkey_rotation = \"6s\"\npublish_ahead = \"2s\"\ndefault_ttl = \"20s\"\nmax_ttl = \"30s\"\n",
    )
    .await;
    let dir = workload(&daemon, "billing", &["gateway"]);
    let old = minted(&daemon, &dir, &["gateway"]);
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    // The key's time is up on the daemon's clock; the next mint uses the
    // next key.
    daemon.advance(Duration::from_secs(6));
    let new = minted(&daemon, &dir, &["gateway"]);
    assert_ne!(
        jsonwebtoken::decode_header(&new).unwrap().kid.unwrap(),
        old_kid,
        "no rotation"
    );
    for token in [&old, &new] {
        let output = verify(&daemon, token, "gateway");
        assert!(output.status.success(), "{}", stderr(&output));
        verify_with_a_standard_library(&daemon, token, "gateway").unwrap();
    }
}

#[test]
fn es384_and_rs256_keys_sign_when_configured_and_verify_with_a_standard_library() {
    for (algorithm, kty) in [("ES384", "EC"), ("RS256", "RSA")] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("ca");
        let config = tmp.path().join("certd.toml");
        std::fs::write(&config, format!("[jwt]\nalgorithm = \"{algorithm}\"\n")).unwrap();
        let daemon = Daemon::start_in(tmp, data_dir, &["--config", config.to_str().unwrap()]);
        let dir = workload(&daemon, "billing", &["gateway"]);
        let token = minted(&daemon, &dir, &["gateway"]);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), algorithm);
        let claims = verify_with_a_standard_library(&daemon, &token, "gateway").unwrap();
        assert_eq!(
            claims["sub"],
            format!("spiffe://{TRUST_DOMAIN}/svc/billing")
        );
        let output = verify(&daemon, &token, "gateway");
        assert!(output.status.success(), "{algorithm}: {}", stderr(&output));
        let output = verify(&daemon, &token, "other");
        assert_eq!(output.status.code(), Some(4), "{algorithm}: wrong audience");
        // The SPIFFE bundle carries the same keys for JWT-SVIDs.
        let bundle: serde_json::Value = serde_json::from_slice(
            &http("GET", &format!("{}/bundle.spiffe", daemon.http), &[], b"").body,
        )
        .unwrap();
        let jwt_keys: Vec<&serde_json::Value> = bundle["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|key| key["use"] == "jwt-svid")
            .collect();
        assert!(!jwt_keys.is_empty());
        assert!(jwt_keys.iter().all(|key| key["kty"] == kty), "{bundle}");
    }
}

/// OpenID Connect discovery at `/.well-known/openid-configuration` names
/// the issuer every token carries as `iss` (by default the public base URL)
/// and where its keys are; a configured `[jwt] issuer` replaces it.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_names_the_issuer_every_token_carries() {
    let daemon = InProcess::start().await;
    let answer = http(
        "GET",
        &format!("{}/.well-known/openid-configuration", daemon.http),
        &[],
        b"",
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert!(answer.header("cache-control").is_some());
    let config: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(config["issuer"], daemon.http.as_str());
    assert_eq!(config["jwks_uri"], format!("{}/jwks.json", daemon.http));
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    assert_eq!(
        config["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    assert_eq!(
        config["subject_types_supported"],
        serde_json::json!(["public"])
    );
    let dir = workload(&daemon, "billing", &["gateway"]);
    let token = minted(&daemon, &dir, &["gateway"]);
    let claims = verify_with_a_standard_library(&daemon, &token, "gateway").unwrap();
    assert_eq!(claims["iss"], daemon.http.as_str());
    // certd's own verifier takes it as before.
    let output = verify(&daemon, &token, "gateway");
    assert!(output.status.success(), "{}", stderr(&output));

    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let configured = InProcess::start_in(
        tmp,
        data_dir,
        "[jwt]\nissuer = \"https://certd.example.com/\"\n",
    )
    .await;
    let config: serde_json::Value = serde_json::from_slice(
        &http(
            "GET",
            &format!("{}/.well-known/openid-configuration", configured.http),
            &[],
            b"",
        )
        .body,
    )
    .unwrap();
    assert_eq!(config["issuer"], "https://certd.example.com");
    assert_eq!(config["jwks_uri"], format!("{}/jwks.json", configured.http));
    let dir = workload(&configured, "billing", &["gateway"]);
    let token = minted(&configured, &dir, &["gateway"]);
    let claims = verify_with_a_standard_library(&configured, &token, "gateway").unwrap();
    assert_eq!(claims["iss"], "https://certd.example.com");
}

/// Has an outside verifier (`verifier(issuer, token, audience)`) check a
/// fresh token of billing's for `gateway`: it must say `ok` and the claims,
/// with certd as `iss` and billing as `sub`.
async fn an_outside_verifier_accepts(
    verifier: impl FnOnce(&str, &str, &str) -> std::process::Command,
) {
    let daemon = InProcess::start().await;
    let dir = workload(&daemon, "billing", &["gateway"]);
    let token = minted(&daemon, &dir, &["gateway"]);
    let output = verifier(&daemon.http, &token, "gateway").output().unwrap();
    let claims = said_ok(&output);
    assert_eq!(claims["iss"], daemon.http.as_str());
    assert_eq!(
        claims["sub"],
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
}

/// PyJWT, as a Python service uses it: discovery from the issuer, the key
/// from the discovered `jwks_uri` (`PyJWKClient`), then `iss`, `aud` and
/// `exp`; another issuer or audience is refused.
#[tokio::test(flavor = "multi_thread")]
async fn pyjwt_verifies_a_token_through_discovery() {
    let Some(python) = python_with(&["jwt", "cryptography"]) else {
        return;
    };
    an_outside_verifier_accepts(|issuer, token, audience| {
        let mut command = script(&python, "oidc_verify.py");
        command.args([issuer, token, audience]);
        command
    })
    .await;
}

/// Node's `jose`, as an express service uses it: discovery, then
/// `jwtVerify` with the issuer and audience against the discovered keys;
/// another issuer or audience is refused.
#[tokio::test(flavor = "multi_thread")]
async fn node_jose_verifies_a_token_with_its_issuer_and_audience() {
    let Some(node) = node_with("jose") else {
        return;
    };
    an_outside_verifier_accepts(|issuer, token, audience| {
        let mut command = node_script(&node, "verify.mjs");
        command.args([issuer, token, audience]);
        command
    })
    .await;
}
