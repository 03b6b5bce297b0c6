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

/// Polls `check` every 200 ms for up to 30 s; `what` says what was awaited.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `certd federation show TD --json` on `daemon`.
fn shown(daemon: &Daemon, trust_domain: &str) -> serde_json::Value {
    let output = daemon.cli(&["federation", "show", trust_domain, "--json"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    serde_json::from_str(&common::stdout(&output)).unwrap()
}

/// How many keys of `use` the bundle held in `shown` has.
fn keys_of(shown: &serde_json::Value, usage: &str) -> usize {
    let document: serde_json::Value =
        serde_json::from_str(shown["bundle"]["json"].as_str().unwrap_or("{}")).unwrap();
    document["keys"].as_array().map_or(0, |keys| {
        keys.iter().filter(|key| key["use"] == usage).count()
    })
}

/// A second certd deployment in trust domain `partner.example`, whose
/// bundle says to fetch it again every second.
fn partner_certd() -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let output = common::run_cli(&data_dir, &["init", "--trust-domain", "partner.example"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let config = tmp.path().join("certd.toml");
    std::fs::write(&config, "[federation]\nbundle_refresh_hint = \"1s\"\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    Daemon::start_in(tmp, data_dir, &["--config", &config])
}

/// Two certd deployments federate over `https_spiffe`: an endpoint that
/// presents another SPIFFE ID than the one pinned is refused and reported;
/// with the right one, the peer's bundle is fetched (audited, in `/readyz`,
/// the metrics and `federation show`), a root rotation at the peer reaches
/// this certd through the refresh hint, without restarts (the new bundle
/// authenticated by the one held), and while the peer is down the last
/// good bundle stays, reported as failing.
#[test]
fn a_peer_bundle_is_fetched_over_https_spiffe_follows_its_root_rotation_and_outlives_its_outage() {
    let mut partner = partner_certd();
    let daemon = Daemon::start();
    let endpoint = format!("{}/bundle.spiffe", partner.grpc);
    let partner_bundle = partner.data_dir.join("bundle.pem");
    let add = |endpoint_id: &str| {
        let output = daemon.cli(&[
            "federation",
            "add",
            "partner.example",
            "--bundle-endpoint",
            &endpoint,
            "--profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            endpoint_id,
            "--trust-bundle-file",
            partner_bundle.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", common::stderr(&output));
    };

    add("spiffe://partner.example/spire/server");
    let error = wait_for("the wrong SPIFFE ID to be refused", || {
        shown(&daemon, "partner.example")["last_error"]
            .as_str()
            .map(str::to_owned)
    });
    assert!(
        error.contains(
            "presented spiffe://partner.example/certd/server, not spiffe://partner.example/spire/server"
        ),
        "{error}"
    );
    assert_eq!(shown(&daemon, "partner.example")["bundle"]["sequence"], 0);
    let output = daemon.cli(&["federation", "remove", "partner.example"]);
    assert!(output.status.success(), "{}", common::stderr(&output));

    add("spiffe://partner.example/certd/server");
    let served = sequence(&partner.http);
    wait_for("the peer's bundle", || {
        let shown = shown(&daemon, "partner.example");
        (shown["bundle"]["sequence"] == served && shown["last_error"].is_null()).then_some(())
    });
    let held = shown(&daemon, "partner.example");
    assert_eq!(keys_of(&held, "x509-svid"), 1);
    assert!(keys_of(&held, "jwt-svid") >= 1);
    assert_eq!(held["bundle"]["refresh_hint_seconds"], 1);
    let ready = http("GET", &format!("{}/readyz", daemon.http), &[], b"");
    let ready = String::from_utf8(ready.body).unwrap();
    assert!(
        ready.starts_with(&format!(
            "ready\nfederation partner.example: ok, bundle sequence {served}, "
        )),
        "{ready}"
    );
    assert_eq!(
        daemon.metric("certd_federation_bundle_sequence{trust_domain=\"partner.example\"}"),
        Some(served as f64)
    );
    assert_eq!(
        daemon.metric("certd_federation_fetch_failures{trust_domain=\"partner.example\"}"),
        Some(0.0)
    );
    let audit = common::stdout(&daemon.cli(&["audit", "--event", "accept-foreign-bundle"]));
    assert!(
        audit.contains(&format!("partner.example: sequence 0 -> {served}")),
        "{audit}"
    );

    // `certd request` for an entry that federates writes the peer's roots
    // beside bundle.pem; for one that does not, nothing.
    daemon.entry(
        "web",
        &["token:web"],
        &["--federates-with", "partner.example"],
    );
    let web = daemon.tmp.path().join("web");
    let output = daemon.request(&daemon.token("web"), &web);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let federated = std::fs::read_to_string(web.join("federated-bundles.pem")).unwrap();
    assert!(
        federated.starts_with("# spiffe://partner.example\n"),
        "{federated}"
    );
    assert_eq!(
        common::pem_certs(&federated),
        common::pem_certs(&partner.bundle_pem()),
        "the peer's roots"
    );
    let alone = daemon.tmp.path().join("alone");
    let output = daemon.request(&daemon.token("alone"), &alone);
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert!(alone.join("bundle.pem").exists());
    assert!(!alone.join("federated-bundles.pem").exists());

    // The peer rotates its root: its bundle gains the next root.
    let output = partner.cli(&["ca", "rotate-root", "--propagation", "1h"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let rotated = wait_for("the peer to serve its next root", || {
        let now = sequence(&partner.http);
        (now > served).then_some(now)
    });
    wait_for("the rotated bundle here", || {
        let shown = shown(&daemon, "partner.example");
        (keys_of(&shown, "x509-svid") == 2 && shown["bundle"]["sequence"].as_u64() >= Some(rotated))
            .then_some(())
    });
    // A renewal writes the peer's roots as certd holds them now.
    let output = daemon.renew_dir(&web);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let federated = std::fs::read_to_string(web.join("federated-bundles.pem")).unwrap();
    assert_eq!(common::pem_certs(&federated).len(), 2, "{federated}");

    // The peer goes down: the bundle held stays, and the failure is told.
    partner.kill();
    let ready = wait_for("the outage to be reported", || {
        let ready = http("GET", &format!("{}/readyz", daemon.http), &[], b"");
        let ready = String::from_utf8(ready.body).unwrap();
        ready
            .contains("federation partner.example: failing")
            .then_some(ready)
    });
    assert!(
        ready.starts_with("ready\n"),
        "a peer's outage does not make certd unready: {ready}"
    );
    assert!(ready.contains("cannot connect"), "{ready}");
    let held = shown(&daemon, "partner.example");
    assert_eq!(keys_of(&held, "x509-svid"), 2, "the last good bundle stays");
    assert!(held["consecutive_failures"].as_u64() >= Some(1));
}

/// A CA certificate of trust domain `domain` (its SPIFFE ID as URI SAN),
/// as a bundle key with `x5c`.
fn root_key_of(domain: &str) -> serde_json::Value {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{domain}").try_into().unwrap(),
    )];
    let root = params.self_signed(&key).unwrap();
    let point = key.public_key_raw();
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "x509-svid",
        "x": url.encode(&point[1..33]), "y": url.encode(&point[33..65]),
        "x5c": [base64::engine::general_purpose::STANDARD.encode(root.der())],
    })
}

fn bundle_document(root: &serde_json::Value, sequence: u64) -> String {
    serde_json::json!({"keys": [root], "spiffe_sequence": sequence, "spiffe_refresh_hint": 1})
        .to_string()
}

/// An `https_web` endpoint (a server with a certificate of the CA the
/// operator gave) whose answers the test sets: a bundle is accepted; one
/// with a lower sequence, garbage, one whose root names another trust
/// domain and an error status are each refused and reported, the good
/// bundle staying; a higher sequence is accepted again.
#[tokio::test(flavor = "multi_thread")]
async fn bad_bundles_from_an_https_web_endpoint_are_refused_and_the_good_one_stays() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = common::k8s_issuer::JwksServer::start(dir.path()).await;
    let root = root_key_of("partner.example");
    endpoint.serve(200, bundle_document(&root, 5));
    let output = daemon.cli(&[
        "federation",
        "add",
        "partner.example",
        "--bundle-endpoint",
        &endpoint.url,
        "--profile",
        "https_web",
        "--endpoint-ca-file",
        endpoint.ca_file.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let daemon = std::sync::Arc::new(daemon);
    let until_error = |says: &'static str| {
        let daemon = daemon.clone();
        tokio::task::spawn_blocking(move || {
            wait_for(says, || {
                let shown = shown(&daemon, "partner.example");
                let error = shown["last_error"].as_str()?.to_owned();
                assert_eq!(shown["bundle"]["sequence"], 5, "the good bundle stays");
                error.contains(says).then_some(())
            })
        })
    };
    let until_sequence = |sequence: u64| {
        let daemon = daemon.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("a bundle accepted", || {
                let shown = shown(&daemon, "partner.example");
                (shown["bundle"]["sequence"] == sequence && shown["last_error"].is_null())
                    .then_some(())
            })
        })
    };
    until_sequence(5).await.unwrap();

    endpoint.serve(200, bundle_document(&root, 3));
    until_error("sequence went backwards: 3 after 5")
        .await
        .unwrap();
    endpoint.serve(200, "<html>maintenance</html>".into());
    until_error("not JSON").await.unwrap();
    endpoint.serve(200, bundle_document(&root_key_of("elsewhere.example"), 9));
    until_error("names trust domain elsewhere.example, not partner.example")
        .await
        .unwrap();
    endpoint.serve(503, String::new());
    until_error("answered 503").await.unwrap();
    endpoint.serve(200, bundle_document(&root, 7));
    until_sequence(7).await.unwrap();
}

/// This process's uid, which both agents prove for the workloads here.
fn my_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap()
}

/// The trust domains whose X.509 bundles `agent` hands the workload here,
/// as the Rust `spiffe` crate's X509Context (FetchX509SVID) and
/// FetchX509Bundles, and the JWT bundles (FetchJWTBundles), sorted.
/// `None` while the agent has no entry for it yet.
async fn domains_served(
    agent: &common::agent::Agent,
) -> Option<(Vec<String>, Vec<String>, Vec<String>)> {
    let client = spiffe::WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .ok()?;
    let names = |domains: Vec<String>| {
        let mut domains = domains;
        domains.sort();
        domains
    };
    let context = client.fetch_x509_context().await.ok()?;
    let in_context = context
        .bundle_set()
        .iter()
        .map(|(domain, _)| domain.to_string())
        .collect();
    let bundles = client
        .fetch_x509_bundles()
        .await
        .ok()?
        .iter()
        .map(|(domain, _)| domain.to_string())
        .collect();
    let jwt = client
        .fetch_jwt_bundles()
        .await
        .ok()?
        .iter()
        .map(|(domain, _)| domain.to_string())
        .collect();
    Some((names(in_context), names(bundles), names(jwt)))
}

/// Runs `mtls_peer.py server PEER` on `server_agent` and `mtls_peer.py
/// client PORT PEER` on `client_agent`: their outputs.
fn py_spiffe_mtls(
    python: &std::path::Path,
    server_agent: &common::agent::Agent,
    server_peer: &str,
    client_agent: &common::agent::Agent,
    client_peer: &str,
) -> (String, String) {
    use std::io::{BufRead, Read};
    let mut server = script(python, "mtls_peer.py")
        .args(["server", server_peer])
        .env("SPIFFE_ENDPOINT_SOCKET", server_agent.endpoint())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server_out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut server_text = String::new();
    let port = loop {
        let mut line = String::new();
        server_out.read_line(&mut line).unwrap();
        server_text.push_str(&line);
        if let Some(port) = line.trim().strip_prefix("listening ") {
            break port.to_owned();
        }
        assert!(
            !line.is_empty(),
            "the py-spiffe server never listened:\n{server_text}"
        );
    };
    let client = script(python, "mtls_peer.py")
        .args(["client", &port, client_peer])
        .env("SPIFFE_ENDPOINT_SOCKET", client_agent.endpoint())
        .output()
        .unwrap();
    server_out.read_to_string(&mut server_text).unwrap();
    let _ = server.wait();
    (
        server_text,
        format!("{}{}", common::stdout(&client), common::stderr(&client)),
    )
}

/// Two certd deployments of different trust domains federate both ways,
/// one per profile (certd.internal fetches partner.example over
/// `https_spiffe`, partner.example fetches certd.internal over
/// `https_web` with certd.internal's CA), and each has a node agent. A
/// py-spiffe workload of each (X509Source through spiffe-tls, as
/// `tests/py_spiffe.rs` runs them) completes mutual TLS with the other and
/// sees its SPIFFE ID; each agent hands the other trust domain's bundle
/// (X.509 and JWT) only to the entry that federates with it. Once the
/// server's entry stops federating, the handshake fails.
#[tokio::test(flavor = "multi_thread")]
async fn py_spiffe_workloads_of_two_trust_domains_complete_mtls_through_federation() {
    let Some(python) = python_with(&["spiffe", "spiffetls", "cryptography"]) else {
        return;
    };
    let partner = partner_certd();
    let daemon = Daemon::start();
    let uid = format!("unix:uid:{}", my_uid());
    let billing = format!("spiffe://{TRUST_DOMAIN}/svc/billing");
    let payments = "spiffe://partner.example/svc/payments".to_owned();

    // certd.internal -> partner.example: https_spiffe.
    let output = daemon.cli(&[
        "federation",
        "add",
        "partner.example",
        "--bundle-endpoint",
        &format!("{}/bundle.spiffe", partner.grpc),
        "--profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        "spiffe://partner.example/certd/server",
        "--trust-bundle-file",
        partner.data_dir.join("bundle.pem").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    // partner.example -> certd.internal: https_web, with certd.internal's
    // CA for the TLS port's certificate.
    let output = partner.cli(&[
        "federation",
        "add",
        TRUST_DOMAIN,
        "--bundle-endpoint",
        &format!("{}/.well-known/spiffe-bundle", daemon.grpc),
        "--profile",
        "https_web",
        "--endpoint-ca-file",
        daemon.data_dir.join("bundle.pem").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", common::stderr(&output));

    let agent = common::agent::Agent::start(&daemon, "node-a");
    let partner_agent = common::agent::Agent::start(&partner, "node-b");
    daemon.entry(
        "billing",
        &[&uid],
        &[
            "--parent",
            &format!("spiffe://{TRUST_DOMAIN}/agent/node-a"),
            "--federates-with",
            "partner.example",
        ],
    );
    let payments_entry = partner.entry(
        "payments",
        &[&uid],
        &[
            "--parent",
            "spiffe://partner.example/agent/node-b",
            "--federates-with",
            TRUST_DOMAIN,
            "--jwt-audience",
            &billing,
        ],
    );
    let both = vec![TRUST_DOMAIN.to_owned(), "partner.example".to_owned()];
    for served in [&agent, &partner_agent] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let served_now = domains_served(served).await;
            if served_now == Some((both.clone(), both.clone(), both.clone())) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent never served both trust domains: {served_now:?}\n{}",
                served.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The Python programs block; the agents' streams run on other workers.
    let (server, client) = tokio::task::block_in_place(|| {
        py_spiffe_mtls(&python, &partner_agent, &billing, &agent, &payments)
    });
    assert!(
        server.contains(&format!("server is {payments}")),
        "{server}\n{client}"
    );
    assert!(
        server.contains(&format!("server saw {billing}")),
        "{server}\n{client}"
    );
    assert!(server.trim_end().ends_with("ok"), "{server}\n{client}");
    assert!(
        client.contains(&format!("client saw {payments}")),
        "{client}"
    );
    assert!(
        client.contains(&format!("client got hello {billing}, this is {payments}")),
        "{client}"
    );

    // A JWT-SVID minted in partner.example (through its agent) validates
    // through certd.internal's agent for the entry that federates with
    // partner.example, and a tampered one does not.
    let token = spiffe::WorkloadApiClient::connect_to(partner_agent.endpoint())
        .await
        .unwrap()
        .fetch_jwt_token([billing.as_str()], None)
        .await
        .unwrap();
    let validator = spiffe::WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let validated = validator
        .validate_jwt_token(&billing, &token)
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), payments);
    let refused = validator
        .validate_jwt_token("spiffe://certd.internal/svc/other", &token)
        .await;
    assert!(refused.is_err(), "another audience: {refused:?}");
    // `certd jwt verify` checks it with the partner's bundle as certd holds
    // it (a SPIFFE bundle: its X.509 roots are never token keys).
    let held = daemon.data_dir.join("partner-bundle.json");
    std::fs::write(
        &held,
        shown(&daemon, "partner.example")["bundle"]["json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let output = daemon.cli(&[
        "jwt",
        "verify",
        &token,
        "--audience",
        &billing,
        "--jwks-file",
        held.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert!(
        common::stdout(&output).starts_with(&format!("valid: {payments} until ")),
        "{}",
        common::stdout(&output)
    );

    // The partner's entry stops federating: its agent no longer hands it
    // certd.internal's bundle, and the handshake fails.
    let output = partner.cli(&["entry", "update", &payments_entry, "--no-federates-with"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while domains_served(&partner_agent)
        .await
        .is_none_or(|(in_context, _, _)| in_context != ["partner.example"])
    {
        assert!(std::time::Instant::now() < deadline, "the bundle stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (server, client) = tokio::task::block_in_place(|| {
        py_spiffe_mtls(&python, &partner_agent, &billing, &agent, &payments)
    });
    assert!(!server.contains("server saw"), "{server}\n{client}");
    assert!(server.contains("FAILED"), "{server}\n{client}");

    // The partner rotates its root: certd.internal fetches its next bundle
    // on the hint, and the agent hands the workload both roots, without a
    // restart of anything.
    let output = partner.cli(&["ca", "rotate-root", "--propagation", "1h"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let partner_domain = spiffe::TrustDomain::new("partner.example").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let roots = validator
            .fetch_x509_context()
            .await
            .ok()
            .and_then(|context| context.bundle_set().get(&partner_domain))
            .map_or(0, |bundle| bundle.authorities().len());
        if roots == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workload never got the partner's next root ({roots} roots)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // certd.internal's entry stops federating: the partner's token no
    // longer validates through its agent, and says why.
    let billing_entry =
        common::stdout(&daemon.cli(&["entry", "list", "--service", "billing", "--json"]));
    let billing_entry: serde_json::Value = serde_json::from_str(&billing_entry).unwrap();
    let output = daemon.cli(&[
        "entry",
        "update",
        billing_entry[0]["id"].as_str().unwrap(),
        "--no-federates-with",
    ]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while domains_served(&agent)
        .await
        .is_none_or(|(in_context, _, _)| in_context != [TRUST_DOMAIN])
    {
        assert!(std::time::Instant::now() < deadline, "the bundle stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = validator
        .validate_jwt_token(&billing, &token)
        .await
        .expect_err("a token of a trust domain the entry does not federate with");
    assert!(refused.is_invalid_argument(), "{refused:?}");
    assert!(
        format!("{refused:?}")
            .contains("partner.example, which the caller's entry does not federate with"),
        "{refused:?}"
    );
}

/// The bundle endpoint on a listener of its own with the operator's
/// certificate (`https_web`): a CA the peer is told of issued it for
/// 127.0.0.1. A second certd fetches the bundle from there as an
/// `https_web` peer (its host name checked), and the endpoint picks up a
/// renewed certificate without a restart. Misconfigurations are refused at
/// start, naming the field.
#[test]
fn an_operator_certificate_serves_the_bundle_endpoint_as_https_web() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let tmp = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let web_ca = tmp.path().join("web-ca.pem");
    std::fs::write(&web_ca, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let files = tmp.path().to_owned();
    let issue = |serial: u64| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.serial_number = Some(serial.into());
        let leaf = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(files.join("endpoint.pem"), leaf.pem()).unwrap();
        std::fs::write(files.join("endpoint.key"), key.serialize_pem()).unwrap();
        leaf.der().to_vec()
    };
    issue(1);
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        "[federation]\nbundle_endpoint_addr = \"127.0.0.1:0\"\n\
         bundle_endpoint_certificate_file = \"endpoint.pem\"\nbundle_endpoint_key_file = \"endpoint.key\"\n",
    )
    .unwrap();
    let refused = |text: &str, field: &str| {
        let bad = tmp.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let output = common::serve_command(&tmp.path().join("unused"))
            .args(["--config", bad.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let said = common::stderr(&output);
        assert!(said.contains(field), "{said}");
    };
    refused(
        "[federation]\nbundle_endpoint_addr = \"127.0.0.1:0\"\nbundle_endpoint_key_file = \"endpoint.key\"\n",
        "federation.bundle_endpoint_key_file",
    );
    refused(
        "[federation]\nbundle_endpoint_certificate_file = \"endpoint.pem\"\nbundle_endpoint_key_file = \"endpoint.key\"\n",
        "federation.bundle_endpoint_addr",
    );
    let partner_dir = tmp.path().join("ca");
    let output = common::run_cli(&partner_dir, &["init", "--trust-domain", "partner.example"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let config = config.to_str().unwrap().to_owned();
    let tmp_path = tmp.path().to_owned();
    let partner = Daemon::start_in(tmp, partner_dir, &["--config", &config]);
    let endpoint = partner
        .bundle_endpoint
        .clone()
        .expect("the ready line names the bundle endpoint");

    let daemon = Daemon::start();
    let output = daemon.cli(&[
        "federation",
        "add",
        "partner.example",
        "--bundle-endpoint",
        &format!("{endpoint}/bundle.spiffe"),
        "--profile",
        "https_web",
        "--endpoint-ca-file",
        tmp_path.join("web-ca.pem").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let served = sequence(&partner.http);
    wait_for("the bundle over https_web", || {
        let shown = shown(&daemon, "partner.example");
        (shown["bundle"]["sequence"] == served && shown["last_error"].is_null()).then_some(())
    });

    // A renewed certificate is served without a restart.
    let renewed = issue(2);
    let presented = wait_for("the renewed certificate", || {
        let presented = common::presented_leaf(&endpoint, &tmp_path.join("web-ca.pem"));
        (presented == renewed).then_some(presented)
    });
    assert_eq!(presented, renewed);
}
