//! Federation between trust domains: certd's SPIFFE bundle endpoint as a
//! peer trust domain fetches it (over TLS, authenticated by certd's SPIFFE
//! ID, parsed by an outside JOSE library), its sequence across changes
//! and restarts, and its refresh hint.

mod common;

use std::time::Duration;

use common::in_process::InProcess;
use common::outside::{python_with, said_ok, script};
use common::{Daemon, http};

const TRUST_DOMAIN: &str = "certd.internal";

/// The bundle's `spiffe_sequence` on the plain-HTTP listener.
fn sequence(http_base: &str) -> u64 {
    let answer = http("GET", &format!("{http_base}/bundle.spiffe"), &[], b"");
    assert_eq!(answer.status, 200);
    let bundle: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    bundle["spiffe_sequence"].as_u64().unwrap()
}

/// The bundle endpoint on certd's TLS port is an `https_spiffe` endpoint
/// (SPIFFE Federation): a peer holding certd's bundle authenticates it by
/// the SPIFFE ID `spiffe://<td>/certd/server` with Python's `ssl`, and
/// joserfc, an independent JOSE library, imports the document, whose
/// `x509-svid` keys are each their `x5c` certificate's key and whose `x5c`
/// certificates are bundle.pem's roots. Both paths of the standard serve it.
#[test]
fn the_bundle_endpoint_serves_over_tls_as_certd_server_and_parses_with_joserfc() {
    let Some(python) = python_with(&["joserfc", "cryptography"]) else {
        return;
    };
    let daemon = Daemon::start();
    let bundle_pem = daemon.data_dir.join("bundle.pem");
    let tls = daemon.grpc.replace("https://", "");
    let expected_id = format!("spiffe://{TRUST_DOMAIN}/certd/server");
    for path in ["/bundle.spiffe", "/.well-known/spiffe-bundle"] {
        let output = script(&python, "federation_bundle.py")
            .args([
                &format!("https://{tls}{path}"),
                bundle_pem.to_str().unwrap(),
                &expected_id,
            ])
            .output()
            .unwrap();
        let summary = said_ok(&output);
        assert_eq!(summary["x509_keys"], 1, "{path}: one root");
        assert!(summary["jwt_keys"].as_u64().unwrap() >= 1, "{path}");
        assert_eq!(
            summary["spiffe_sequence"].as_u64().unwrap(),
            sequence(&daemon.http),
            "{path}: the TLS and the plain endpoint serve one bundle"
        );
    }
    // A peer pinning another SPIFFE ID refuses the endpoint.
    let output = script(&python, "federation_bundle.py")
        .args([
            &format!("https://{tls}/bundle.spiffe"),
            bundle_pem.to_str().unwrap(),
            &format!("spiffe://{TRUST_DOMAIN}/svc/billing"),
        ])
        .output()
        .unwrap();
    let said = common::stdout(&output);
    assert!(said.starts_with("FAILED spiffe-id"), "{said}");
}

/// `spiffe_sequence` is the store's: one content keeps its number, a JWT
/// key change raises it, and after a restart (with the clock back, so the
/// bundle's content is an earlier one again) it still never goes back.
/// `[federation] bundle_refresh_hint` sets `spiffe_refresh_hint`.
#[tokio::test(flavor = "multi_thread")]
async fn the_bundle_sequence_grows_with_every_change_and_never_goes_back_across_restarts() {
    let kept = tempfile::tempdir().unwrap();
    let data_dir = kept.path().join("ca");
    let config = "[jwt]\nkey_rotation = \"6s\"\npublish_ahead = \"2s\"\ndefault_ttl = \"3s\"\nmax_ttl = \"4s\"\n\
                  [federation]\nbundle_refresh_hint = \"2s\"\n";
    let daemon = InProcess::start_in(tempfile::tempdir().unwrap(), data_dir.clone(), config).await;
    let http_base = daemon.http.clone();
    let fetch = move || {
        let http_base = http_base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let answer = http("GET", &format!("{http_base}/bundle.spiffe"), &[], b"");
                serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap()
            })
            .await
            .unwrap()
        }
    };
    let first = fetch().await;
    assert_eq!(first["spiffe_refresh_hint"], 2);
    let first = first["spiffe_sequence"].as_u64().unwrap();
    assert_eq!(fetch().await["spiffe_sequence"], first, "unchanged content");
    daemon.advance(Duration::from_secs(6));
    let rotated = fetch().await["spiffe_sequence"].as_u64().unwrap();
    assert!(rotated > first, "a new JWT key: {rotated} after {first}");
    daemon.shutdown().await;

    let daemon = InProcess::start_in(tempfile::tempdir().unwrap(), data_dir, config).await;
    let http_base = daemon.http.clone();
    let restarted = tokio::task::spawn_blocking(move || sequence(&http_base))
        .await
        .unwrap();
    assert!(
        restarted > rotated,
        "after a restart the earlier keys are served again under a new number: {restarted} after {rotated}"
    );
    daemon.shutdown().await;
}

/// A refresh hint longer than JWT keys are published ahead is refused at
/// start, naming the field.
#[test]
fn a_refresh_hint_longer_than_publish_ahead_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        "[jwt]\npublish_ahead = \"10m\"\n[federation]\nbundle_refresh_hint = \"1h\"\n",
    )
    .unwrap();
    let output = common::serve_command(&tmp.path().join("ca"))
        .args(["--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = common::stderr(&output);
    assert!(said.contains("federation.bundle_refresh_hint"), "{said}");
}
