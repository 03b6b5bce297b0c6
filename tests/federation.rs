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

/// `certd federation add|list|show|remove`: a relationship is checked
/// (refusals with their reasons and exit codes, audited), kept across a
/// restart with the bundle it started from, listed and shown, removed once;
/// every change is audited with the operator.
#[test]
fn relationships_are_added_listed_kept_and_removed_and_audited() {
    let mut daemon = Daemon::start();
    // The peer's bundle, as `https_spiffe` needs one to start from: here
    // another certd's bundle.pem.
    let peer = Daemon::start();
    let peer_bundle = peer.data_dir.join("bundle.pem");
    let peer_bundle = peer_bundle.to_str().unwrap();
    let refused = |daemon: &Daemon, args: &[&str], code: i32, says: &str| {
        let output = daemon.cli(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            common::stderr(&output)
        );
        assert!(
            common::stderr(&output).contains(says),
            "{}",
            common::stderr(&output)
        );
    };
    let spiffe = [
        "federation",
        "add",
        "partner.example",
        "--bundle-endpoint",
        "https://bundle.partner.example:8443/bundle.spiffe",
        "--profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        "spiffe://partner.example/certd/server",
    ];
    refused(&daemon, &spiffe, 2, "needs --trust-bundle-file");
    refused(
        &daemon,
        &[
            "federation",
            "add",
            TRUST_DOMAIN,
            "--bundle-endpoint",
            "https://x.example/b",
            "--profile",
            "https_web",
        ],
        2,
        "certd's own trust domain",
    );
    refused(
        &daemon,
        &[
            "federation",
            "add",
            "web.example",
            "--bundle-endpoint",
            "http://x.example/b",
            "--profile",
            "https_web",
        ],
        2,
        "not https://",
    );
    // The peer's roots name its trust domain (certd.internal), not the one
    // claimed: refused as another trust domain's bundle.
    let mut with_bundle = spiffe.to_vec();
    with_bundle.extend(["--trust-bundle-file", peer_bundle]);
    refused(
        &daemon,
        &with_bundle,
        2,
        "names trust domain certd.internal, not partner.example",
    );

    let partner = tempfile::tempdir().unwrap();
    let partner_dir = partner.path().join("ca");
    let output = common::run_cli(&partner_dir, &["init", "--trust-domain", "partner.example"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let partner_bundle = partner_dir.join("bundle.pem");
    let mut added = spiffe.to_vec();
    added.extend(["--trust-bundle-file", partner_bundle.to_str().unwrap()]);
    let output = daemon.cli(&added);
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert_eq!(
        common::stdout(&output).trim(),
        "federating with partner.example (https_spiffe at https://bundle.partner.example:8443/bundle.spiffe); starting from its bundle of sequence 0"
    );
    refused(&daemon, &added, 4, "exists already");
    let output = daemon.cli(&[
        "federation",
        "add",
        "web.example",
        "--bundle-endpoint",
        "https://web.example/.well-known/spiffe-bundle",
        "--profile",
        "https_web",
    ]);
    assert!(output.status.success(), "{}", common::stderr(&output));

    daemon.restart_on_same_port();
    let listed = common::stdout(&daemon.cli(&["federation", "list"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[1].starts_with("partner.example") && lines[1].contains("https_spiffe"),
        "{listed}"
    );
    assert!(
        lines[2].starts_with("web.example") && lines[2].contains("(none yet)"),
        "{listed}"
    );
    let shown = common::stdout(&daemon.cli(&["federation", "show", "partner.example"]));
    assert!(
        shown.contains("endpoint id:      spiffe://partner.example/certd/server"),
        "{shown}"
    );
    assert!(
        shown.contains("bundle:           sequence 0, 1 root(s), 0 JWT key(s)"),
        "{shown}"
    );
    let json: serde_json::Value = serde_json::from_str(&common::stdout(&daemon.cli(&[
        "federation",
        "show",
        "partner.example",
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["profile"], "https_spiffe");
    refused(
        &daemon,
        &["federation", "show", "nobody.example"],
        5,
        "no federation relationship with nobody.example",
    );

    let output = daemon.cli(&["federation", "remove", "web.example"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert!(common::stdout(&output).starts_with("removed the federation with web.example"));
    refused(
        &daemon,
        &["federation", "remove", "web.example"],
        5,
        "no federation relationship",
    );

    let audit = common::stdout(&daemon.cli(&["audit", "--json"]));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    let events: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| {
            entry["event"]
                .as_str()
                .is_some_and(|e| e.ends_with("-federation"))
        })
        .collect();
    let summary: Vec<(&str, bool)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("add-federation", false),
            ("add-federation", false),
            ("add-federation", false),
            ("add-federation", false),
            ("add-federation", true),
            ("add-federation", false),
            ("add-federation", true),
            ("remove-federation", true),
            ("remove-federation", false),
        ],
        "{audit}"
    );
}
