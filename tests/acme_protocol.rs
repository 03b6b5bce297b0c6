//! certd's ACME server (RFC 8555) driven by hand-built JWS requests sent
//! with curl, against a daemon serving in this process: every refusal
//! answers with its problem type, and a certificate ordered by an account
//! bound to an entry by EAB (with `--without-challenges`) chains to
//! bundle.pem, is listed by `certd list` and can be revoked; its renewal
//! window (ARI) moves to now once `certd revoke` revokes it, once the
//! intermediate that signed it is rotated away, and once its root leaves
//! the bundle.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use certd::api::client::{TlsClientSettings, WorkloadClient};
use common::acme::{Client, Reply, account, b64, csr, eab};
use common::in_process::InProcess;
use common::{stderr, stdout};

/// A daemon with entry `web` (DNS name web.example.test) whose EAB-bound
/// accounts need no challenges; returns it with the entry's id.
async fn acme_daemon() -> (InProcess, String) {
    let daemon = InProcess::start().await;
    let entry = daemon.entry(
        "web",
        &["token:web"],
        &["--dns", "web.example.test", "--dns", "www.example.test"],
    );
    let set = daemon.cli(&["acme", "policy", "set", &entry, "--without-challenges"]);
    assert!(set.status.success(), "{}", stderr(&set));
    (daemon, entry)
}

/// Every refusal answers with the problem type RFC 8555 names for it, and
/// changes nothing: a replayed nonce (badNonce, with a fresh nonce), a bad
/// signature, a `url` that is not where the request went, an account
/// without EAB, with a wrong or used EAB key, a name outside the entry, an
/// oversized request and finalizing an order that is not ready.
#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_answers_with_its_problem_type() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = Client::new(&daemon);
    assert_eq!(client.directory["meta"]["externalAccountRequired"], true);

    // No EAB.
    let refused = client.new_account(None);
    assert_eq!(refused.problem(), "externalAccountRequired", "{refused:?}");
    assert_eq!(refused.status, 400);

    // A replayed nonce: the whole request sent twice.
    let header = client.header(&client.url("newAccount"));
    let body = client.sign(header, Some("{}"));
    let url = client.url("newAccount");
    let first = client.send(&url, &body);
    assert_eq!(first.problem(), "externalAccountRequired");
    let replayed = client.send(&url, &body);
    assert_eq!(replayed.problem(), "badNonce", "{replayed:?}");
    assert!(replayed.header("replay-nonce").is_some());

    // A bad signature: another key signed it.
    let header = client.header(&url);
    let mut forged: Value = serde_json::from_str(&client.sign(header, Some("{}"))).unwrap();
    forged["signature"] = b64(&[7; 64]).into();
    let refused = client.send(&url, &forged.to_string());
    assert_eq!(refused.problem(), "malformed", "{refused:?}");
    assert!(
        refused.body.contains("signature does not verify"),
        "{refused:?}"
    );

    // Signed for another URL.
    let header = client.header(&client.url("newOrder"));
    let body = client.sign(header, Some("{}"));
    let refused = client.send(&url, &body);
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");
    assert_eq!(refused.status, 403);

    // An EAB MAC made with the wrong key, then an unknown key id.
    let (kid, hmac) = eab(&daemon, &entry);
    let wrong = client.binding(&kid, &b64(&[1; 32]));
    assert_eq!(client.new_account(Some(wrong)).problem(), "unauthorized");
    let unknown = client.binding("no-such-key", &hmac);
    let refused = client.new_account(Some(unknown));
    assert_eq!(refused.problem(), "unauthorized");
    assert!(refused.body.contains("does not verify"), "{refused:?}");

    // The right binding makes the account; the key then cannot bind another.
    let good = client.binding(&kid, &hmac);
    let made = client.new_account(Some(good));
    assert_eq!(made.status, 201, "{made:?}");
    let mut second = Client::new(&daemon);
    let reused = second.binding(&kid, &hmac);
    let refused = second.new_account(Some(reused));
    assert_eq!(refused.problem(), "unauthorized");
    assert!(refused.body.contains("already used"), "{refused:?}");

    // The same key again is the same account (200, its URL).
    client.kid = None;
    let again = client.new_account(Some(client.binding(&kid, &hmac)));
    assert_eq!(again.status, 200, "{again:?}");
    client.kid = again.header("location").map(str::to_owned);
    assert_eq!(client.kid, made.header("location").map(str::to_owned));

    // A name the entry does not have.
    let refused = client.new_order(&["web.example.test", "mail.example.test"]);
    assert_eq!(refused.problem(), "rejectedIdentifier", "{refused:?}");
    assert!(refused.body.contains("mail.example.test"), "{refused:?}");
    // Not a DNS identifier.
    let url = client.url("newOrder");
    let refused = client.post(
        &url,
        Some(r#"{"identifiers":[{"type":"ip","value":"127.0.0.1"}]}"#),
    );
    assert_eq!(refused.problem(), "unsupportedIdentifier", "{refused:?}");

    // Oversized: 413, malformed, with a nonce.
    let huge = "x".repeat(70 * 1024);
    let refused = client.post(&url, Some(&huge));
    assert_eq!(refused.status, 413, "{refused:?}");
    assert_eq!(refused.problem(), "malformed");

    // Finalizing an order that is not ready: a pending one (challenges
    // required, the policy reset).
    let reset = daemon.cli(&["acme", "policy", "set", &entry]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    let order = client.new_order(&["web.example.test"]);
    assert_eq!(order.status, 201, "{order:?}");
    assert_eq!(order.json()["status"], "pending");
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["web.example.test"]);
    let refused = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(refused.problem(), "orderNotReady", "{refused:?}");
    assert_eq!(refused.status, 403);
    // Its authorization offers the three challenges.
    let authz_url = order.json()["authorizations"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let authz = client.post(&authz_url, None).json();
    let kinds: Vec<&str> = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|challenge| challenge["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["http-01", "tls-alpn-01", "dns-01"]);

    // Another account cannot read this one's order.
    let mut stranger = account(&daemon, &entry);
    let order_url = order.header("location").unwrap().to_owned();
    let refused = stranger.post(&order_url, None);
    assert_eq!(refused.status, 404, "{refused:?}");

    // Each refusal is counted by its problem type.
    assert!(
        daemon
            .metric("certd_acme_problems_total{problem=\"badNonce\"}")
            .is_some_and(|count| count >= 1.0)
    );
    daemon.shutdown().await;
}

/// The happy path with `--without-challenges`: the order is ready at once;
/// finalize issues the entry's identity with the ordered names, the chain
/// verifies against bundle.pem, `certd list` shows it attested by ACME, a
/// second finalize is refused, and the ordering account revokes it (a
/// second revocation: alreadyRevoked).
#[tokio::test(flavor = "multi_thread")]
async fn an_eab_account_gets_a_certificate_that_is_recorded_and_revocable() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let order = client.new_order(&["web.example.test"]);
    assert_eq!(order.status, 201, "{order:?}");
    let order_url = order.header("location").unwrap().to_owned();
    assert_eq!(order.json()["status"], "ready", "{order:?}");

    // A CSR naming something else is refused; the order stays ready.
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_, wrong) = csr(&["www.example.test"]);
    let refused = client.post(&finalize, Some(&json!({ "csr": wrong }).to_string()));
    assert_eq!(refused.problem(), "badCSR", "{refused:?}");

    let (_key, request) = csr(&["web.example.test"]);
    let finalized = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(finalized.status, 200, "{finalized:?}");
    assert_eq!(finalized.json()["status"], "valid");
    let again = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(
        again.problem(),
        "orderNotReady",
        "finalized once: {again:?}"
    );

    let certificate_url = client.post(&order_url, None).json()["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let download = client.post(&certificate_url, None);
    assert_eq!(download.status, 200, "{download:?}");
    assert_eq!(
        download.header("content-type"),
        Some("application/pem-certificate-chain")
    );
    let chain = download.body.clone();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");

    // The chain verifies against bundle.pem, for the ordered name.
    let dir = daemon.tmp.path();
    let (leaf, intermediate) = chain
        .split_once("-----END CERTIFICATE-----\n")
        .map(|(leaf, rest)| {
            (
                format!("{leaf}-----END CERTIFICATE-----\n"),
                rest.to_owned(),
            )
        })
        .unwrap();
    std::fs::write(dir.join("leaf.pem"), &leaf).unwrap();
    std::fs::write(dir.join("intermediate.pem"), &intermediate).unwrap();
    let verified = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(daemon.data_dir.join("bundle.pem"))
        .arg("-untrusted")
        .arg(dir.join("intermediate.pem"))
        .args(["-verify_hostname", "web.example.test"])
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    let der = rustls_pemfile::certs(&mut leaf.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = hex::encode(parsed.raw_serial());
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            x509_parser::extensions::GeneralName::URI(uri) => format!("URI:{uri}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "DNS:web.example.test",
            "URI:spiffe://certd.internal/svc/web"
        ]
    );
    let lifetime =
        parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
    assert!((86_000..=86_500).contains(&lifetime), "24 h: {lifetime}");

    // Recorded like every issuance.
    let listed = stdout(&daemon.cli(&["list"]));
    let line = listed
        .lines()
        .find(|line| line.starts_with(&serial))
        .unwrap_or_else(|| panic!("{serial} in {listed}"));
    assert!(
        line.contains("web") && line.contains("good") && line.contains("acme"),
        "{line}"
    );
    let orders: Value =
        serde_json::from_str(&stdout(&daemon.cli(&["acme", "order", "list", "--json"]))).unwrap();
    assert_eq!(orders[0]["certificate"], serial.as_str());
    assert_eq!(orders[0]["status"], "valid");
    let accounts: Value =
        serde_json::from_str(&stdout(&daemon.cli(&["acme", "account", "list", "--json"]))).unwrap();
    assert_eq!(accounts[0]["entry"], entry.as_str());

    // Revoked by the account that ordered it, with a reason checked.
    let revoke_url = client.url("revokeCert");
    let refused = client.post(
        &revoke_url,
        Some(&json!({"certificate": b64(&der), "reason": 7}).to_string()),
    );
    assert_eq!(refused.problem(), "badRevocationReason", "{refused:?}");
    for reason in [300, -1] {
        let refused = client.post(
            &revoke_url,
            Some(&json!({"certificate": b64(&der), "reason": reason}).to_string()),
        );
        assert_eq!(refused.problem(), "badRevocationReason", "{refused:?}");
    }
    let mut stranger = account(&daemon, &entry);
    let refused = stranger.post(
        &revoke_url,
        Some(&json!({"certificate": b64(&der)}).to_string()),
    );
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");
    let revoked = client.post(
        &revoke_url,
        Some(&json!({"certificate": b64(&der), "reason": 4}).to_string()),
    );
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let listed = stdout(&daemon.cli(&["list"]));
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&serial) && line.contains("revoked")),
        "{listed}"
    );
    let again = client.post(
        &revoke_url,
        Some(&json!({"certificate": b64(&der)}).to_string()),
    );
    assert_eq!(again.problem(), "alreadyRevoked", "{again:?}");

    // The operator deactivates the account: it can do nothing more.
    let account_id = client
        .kid
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let deactivated = daemon.cli(&["acme", "account", "deactivate", &account_id]);
    assert!(deactivated.status.success(), "{}", stderr(&deactivated));
    let refused = client.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");
    daemon.shutdown().await;
}

/// ARI (RFC 9773): a certificate's window lies around the middle of its
/// lifetime, and moves to now once `certd revoke` revokes it.
#[tokio::test(flavor = "multi_thread")]
async fn the_renewal_window_moves_to_now_after_certd_revoke() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    // The CSR may list the names in another order than the order.
    let order = client.new_order(&["web.example.test", "www.example.test"]);
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["www.example.test", "web.example.test"]);
    let finalized = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(finalized.status, 200, "{finalized:?}");
    let order_url = order.header("location").unwrap().to_owned();
    let certificate_url = client.post(&order_url, None).json()["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let chain = client.post(&certificate_url, None).body;
    let renewal = Renewal::of(&client, &chain);
    renewal.around_the_middle(&client);

    let revoked = daemon.cli(&["revoke", &renewal.serial, "--reason", "key-compromise"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    renewal.now(&client, &daemon);

    // An unknown certificate of the same intermediate: 404.
    let (aki, _) = renewal
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split_once('.')
        .unwrap();
    let unknown = client.curl(
        "GET",
        &format!("{}/{aki}.{}", client.url("renewalInfo"), b64(&[0x11; 20])),
        None,
    );
    assert_eq!(unknown.status, 404, "{unknown:?}");
    daemon.shutdown().await;
}

/// ARI (RFC 9773): the window of a certificate of the intermediate
/// rotated away from moves to now once the next one is promoted; a
/// certificate of the new intermediate keeps its window around the middle.
#[tokio::test(flavor = "multi_thread")]
async fn the_renewal_window_moves_to_now_after_an_intermediate_rotation() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let chain = client.certificate_for(&["web.example.test"]);
    let before = Renewal::of(&client, &chain);
    before.around_the_middle(&client);

    let output = daemon.cli(&["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    daemon.advance(ROTATION_POLL);
    daemon.signer_changes(1).await;
    before.now(&client, &daemon);
    let chain = client.certificate_for(&["web.example.test"]);
    let after = Renewal::of(&client, &chain);
    assert_ne!(after.url, before.url);
    after.around_the_middle(&client);
    daemon.shutdown().await;
}

/// ARI: through a root rotation, a certificate under the old root is to
/// be renewed at once when the intermediate moves to the new root, and
/// still after `certd ca retire-root` takes the old root out of the
/// bundle; one under the new root keeps its window.
#[tokio::test(flavor = "multi_thread")]
async fn the_renewal_window_moves_to_now_when_the_root_leaves_the_bundle() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let chain = client.certificate_for(&["web.example.test"]);
    let old = Renewal::of(&client, &chain);
    let output = daemon.cli(&["ca", "rotate-root", "--propagation", "1s"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Still signed under the old root: nothing to do yet.
    old.around_the_middle(&client);

    let output = daemon.cli_ahead(Duration::from_secs(1), &["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    daemon.advance(ROTATION_POLL);
    daemon.signer_changes(1).await;
    let chain = client.certificate_for(&["web.example.test"]);
    let new = Renewal::of(&client, &chain);
    new.around_the_middle(&client);
    old.now(&client, &daemon);

    let output = daemon.cli(&["ca", "retire-root", "--force"]);
    assert!(output.status.success(), "{}", stderr(&output));
    old.now(&client, &daemon);
    new.around_the_middle(&client);
    daemon.shutdown().await;
}

/// A challenge whose validation was cut short (the replica running it
/// stopped: here its record is left `processing` as such a replica leaves
/// it) is not left `processing` until its authorization expires: once it
/// has been so for longer than twice the validation timeout, the next poll
/// runs it again, and with nothing answering on the http-01 port the
/// challenge ends `invalid` (connection).
#[tokio::test(flavor = "multi_thread")]
async fn a_validation_cut_short_is_run_again_when_polled() {
    use certd::acme::records::{self, AuthzRecord, Status};
    // A port nothing listens on: http-01 is refused there.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let config = format!("[acme.testing]\nhttp_port = {port}\nresolve_all_to = \"127.0.0.1\"\n");
    let daemon = InProcess::start_in(tmp, data_dir, &config).await;
    let entry = daemon.entry("web", &["token:web"], &["--dns", "web.example.test"]);
    let mut client = account(&daemon, &entry);
    let order = client.new_order(&["web.example.test"]);
    assert_eq!(order.json()["status"], "pending", "{order:?}");
    let authz_url = order.json()["authorizations"][0]
        .as_str()
        .unwrap()
        .to_owned();

    // What a replica that stopped mid-validation leaves behind.
    let last = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    let key = records::authz_key(&last(client.kid.as_deref().unwrap()), &last(&authz_url));
    let store = daemon.authority.store();
    let stored = records::load::<AuthzRecord>(store, &key)
        .await
        .unwrap()
        .unwrap();
    let mut authz = stored.value.clone();
    let http01 = authz
        .challenges
        .iter_mut()
        .find(|challenge| challenge.kind == "http-01")
        .unwrap();
    http01.status = Status::Processing;
    http01.processing_since = Some(daemon.authority.now());
    assert!(
        records::replace(store, &key, &stored, &authz, stored.expires_at())
            .await
            .unwrap()
    );
    let http01_of = |authz: &Value| {
        authz["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|challenge| challenge["type"] == "http-01")
            .unwrap()
            .clone()
    };
    // Within the time a validation may take, it is left to run.
    daemon.advance(Duration::from_secs(15));
    let polled = client.post(&authz_url, None).json();
    assert_eq!(http01_of(&polled)["status"], "processing", "{polled}");

    // Past twice the 10 s timeout, the next poll runs it again.
    daemon.advance(Duration::from_secs(10));
    let mut polled = Value::Null;
    for _ in 0..100 {
        polled = client.post(&authz_url, None).json();
        if polled["status"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(polled["status"], "invalid", "{polled}");
    let http01 = http01_of(&polled);
    assert_eq!(http01["status"], "invalid", "{polled}");
    assert_eq!(
        http01["error"]["type"], "urn:ietf:params:acme:error:connection",
        "{polled}"
    );
    daemon.shutdown().await;
}

/// ACME's own rate limits: past `new_accounts_per_minute_per_ip` new
/// accounts from one address, and `new_orders_per_minute_per_account`
/// orders of one account, certd answers `rateLimited` (HTTP 429) with a
/// `Retry-After`, counted per address and before the EAB key is spent.
#[tokio::test(flavor = "multi_thread")]
async fn new_accounts_and_orders_past_their_rate_are_refused_as_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let config =
        "[acme]\nnew_accounts_per_minute_per_ip = 2\nnew_orders_per_minute_per_account = 3\n";
    let daemon = InProcess::start_in(tmp, data_dir, config).await;
    let entry = daemon.entry("web", &["token:web"], &["--dns", "web.example.test"]);
    let mut first = account(&daemon, &entry);
    let _second = account(&daemon, &entry);
    let mut third = Client::new(&daemon);
    let (key_id, hmac) = eab(&daemon, &entry);
    let refused = third.new_account(Some(third.binding(&key_id, &hmac)));
    assert_eq!(refused.problem(), "rateLimited", "{refused:?}");
    assert_eq!(refused.status, 429);
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "one account every 30 s: {wait}");
    assert!(
        refused.body.contains("new_accounts_per_minute_per_ip"),
        "{refused:?}"
    );
    // Counted by address, and before the EAB key is spent: from another
    // loopback address the same key opens the account.
    third.source = Some("127.0.0.2".into());
    third.nonce = None;
    let made = third.new_account(Some(third.binding(&key_id, &hmac)));
    assert_eq!(made.status, 201, "{made:?}");

    for _ in 0..3 {
        let order = first.new_order(&["web.example.test"]);
        assert_eq!(order.status, 201, "{order:?}");
    }
    let refused = first.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "rateLimited", "{refused:?}");
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    assert!(
        refused.body.contains("new_orders_per_minute_per_account"),
        "{refused:?}"
    );
    assert!(
        daemon
            .metric("certd_acme_problems_total{problem=\"rateLimited\"}")
            .is_some_and(|count| count >= 2.0)
    );
    daemon.shutdown().await;
}

/// pkilint's RFC 5280 linter (`lint_pkix_cert`, PyPI `pkilint`, an outside
/// judge) finds no error (ERROR or FATAL) in an ACME-issued leaf, its
/// intermediate or the root, but for its known false positive on SPIFFE
/// IDs (`PKILINT_KNOWN`). Its warnings are printed, not judged.
#[tokio::test(flavor = "multi_thread")]
async fn pkilint_finds_no_error_in_an_acme_chain() {
    let Some(python) = common::outside::python_with(&["pkilint"]) else {
        return;
    };
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let chain = client.certificate_for(&["web.example.test"]);
    let bundle = std::fs::read_to_string(daemon.data_dir.join("bundle.pem")).unwrap();
    let pems = |text: &str| -> Vec<String> {
        text.split_inclusive("-----END CERTIFICATE-----")
            .filter(|part| part.contains("BEGIN CERTIFICATE"))
            .map(|part| format!("{}\n", part.trim_start()))
            .collect()
    };
    let chain = pems(&chain);
    assert_eq!(chain.len(), 2, "{chain:?}");
    let certificates = [
        ("leaf", chain[0].clone()),
        ("intermediate", chain[1].clone()),
        ("root", pems(&bundle)[0].clone()),
    ];
    let mut known = 0;
    let mut errors = Vec::new();
    for (name, pem) in certificates {
        let path = daemon.tmp.path().join(format!("{name}.pem"));
        std::fs::write(&path, pem).unwrap();
        let output = Command::new(&python)
            .args(["-B", "-m", "pkilint.bin.lint_pkix_cert", "lint"])
            .args(["--severity", "WARNING", "--format", "JSON"])
            .arg(&path)
            .env_clear()
            .output()
            .unwrap();
        let report: Value = serde_json::from_str(&stdout(&output))
            .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&output), stderr(&output)));
        for result in report["results"].as_array().unwrap() {
            let validator = result["validator"].as_str().unwrap_or_default();
            for finding in result["finding_descriptions"].as_array().unwrap() {
                let line = format!("{name}: {validator} {finding} at {}", result["node_path"]);
                match finding["severity"].as_str() {
                    Some("WARNING") => eprintln!("pkilint warning: {line}"),
                    _ if is_known_pkilint_false_positive(validator, finding) => known += 1,
                    _ => errors.push(line),
                }
            }
        }
    }
    assert!(errors.is_empty(), "pkilint errors: {errors:#?}");
    // The SPIFFE ID of each of the three.
    assert_eq!(known, 3, "the known false positive, once per certificate");
    daemon.shutdown().await;
}

/// pkilint's one known false positive on certd's certificates: its
/// `GeneralNameUriSyntaxValidator` checks URI SANs with the `validators`
/// package's URL syntax, which knows only web schemes, so it reports every
/// SPIFFE ID (`spiffe://certd.internal/svc/web`, RFC 3986-valid, and what
/// the SPIFFE X.509-SVID standard requires) as `pkix.invalid_uri_syntax`,
/// "Invalid URI syntax".
const PKILINT_KNOWN: (&str, &str, &str) = (
    "GeneralNameUriSyntaxValidator",
    "pkix.invalid_uri_syntax",
    "Invalid URI syntax: \"spiffe://",
);

fn is_known_pkilint_false_positive(validator: &str, finding: &Value) -> bool {
    let (known_validator, code, message) = PKILINT_KNOWN;
    validator == known_validator
        && finding["code"] == code
        && finding["message"]
            .as_str()
            .is_some_and(|text| text.starts_with(message))
}

/// How often certd looks for a prepared intermediate (as in
/// tests/rotation.rs).
const ROTATION_POLL: Duration = Duration::from_secs(5);

/// A certificate's `renewalInfo` URL, its serial (hex) and the middle of
/// its lifetime.
struct Renewal {
    url: String,
    serial: String,
    middle: i64,
}

impl Renewal {
    /// For the leaf of a PEM chain.
    fn of(client: &Client, chain: &str) -> Renewal {
        let der = rustls_pemfile::certs(&mut chain.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let aki = parsed
            .extensions()
            .iter()
            .find_map(|extension| match extension.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        let cert_id = format!("{}.{}", b64(&aki), b64(parsed.raw_serial()));
        let validity = parsed.validity();
        Renewal {
            url: format!("{}/{cert_id}", client.url("renewalInfo")),
            serial: hex::encode(parsed.raw_serial()),
            middle: (validity.not_before.timestamp() + validity.not_after.timestamp()) / 2,
        }
    }

    /// The suggested window, Unix seconds.
    fn window(&self, client: &Client) -> (i64, i64) {
        let reply = client.curl("GET", &self.url, None);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.header("retry-after").is_some(), "{reply:?}");
        let times = reply.json()["suggestedWindow"].clone();
        let at = |field: &str| {
            humantime::parse_rfc3339(times[field].as_str().unwrap())
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        (at("start"), at("end"))
    }

    fn around_the_middle(&self, client: &Client) {
        let (start, end) = self.window(client);
        let middle = self.middle;
        assert!(start < middle && middle < end, "{start} {middle} {end}");
    }

    /// A window that has ended by the daemon's now: renew at once.
    fn now(&self, client: &Client, daemon: &InProcess) {
        let (start, end) = self.window(client);
        let now = daemon.authority.now();
        assert!(
            end <= now && start < end,
            "renew now: {start} {end} (now {now})"
        );
    }
}

/// With `accounts_without_eab`, an account made without EAB orders the
/// names of an entry but must prove them, even where the entry's policy
/// waives challenges for its EAB accounts: a challenge nobody answers
/// fails as `connection` in the challenge's `error`, and the order turns
/// invalid. The account then changes its key (RFC 8555 §7.3.5): the old
/// key no longer signs for it, the new one does.
#[tokio::test(flavor = "multi_thread")]
async fn accounts_without_eab_prove_control_and_can_change_their_key() {
    // A port nothing listens on: http-01 is refused there.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let config = format!(
        "[acme]\naccounts_without_eab = true\n[acme.testing]\nhttp_port = {port}\nresolve_all_to = \"127.0.0.1\"\n"
    );
    let daemon = InProcess::start_in(tmp, data_dir, &config).await;
    let entry = daemon.entry("web", &["token:web"], &["--dns", "web.example.test"]);
    let set = daemon.cli(&["acme", "policy", "set", &entry, "--without-challenges"]);
    assert!(set.status.success(), "{}", stderr(&set));

    let mut client = Client::new(&daemon);
    assert_eq!(client.directory["meta"]["externalAccountRequired"], false);
    let made = client.new_account(None);
    assert_eq!(made.status, 201, "{made:?}");
    let refused = client.new_order(&["elsewhere.example.test"]);
    assert_eq!(refused.problem(), "rejectedIdentifier", "{refused:?}");
    let order = client.new_order(&["web.example.test"]);
    assert_eq!(
        order.json()["status"],
        "pending",
        "challenges required: {order:?}"
    );
    let order_url = order.header("location").unwrap().to_owned();
    let authz_url = order.json()["authorizations"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let authz = client.post(&authz_url, None).json();
    let http01 = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|challenge| challenge["type"] == "http-01")
        .unwrap()
        .clone();
    let challenge_url = http01["url"].as_str().unwrap().to_owned();
    let answered = client.post(&challenge_url, Some("{}"));
    assert_eq!(answered.status, 200, "{answered:?}");
    assert!(
        answered
            .all("link")
            .contains(&format!("<{authz_url}>;rel=\"up\"").as_str()),
        "{answered:?}"
    );
    // The client polls until validation ends.
    let mut authz = Value::Null;
    for _ in 0..100 {
        authz = client.post(&authz_url, None).json();
        if authz["status"] != "pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(authz["status"], "invalid", "{authz}");
    let failed = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|challenge| challenge["type"] == "http-01")
        .unwrap();
    assert_eq!(failed["status"], "invalid", "{authz}");
    assert_eq!(
        failed["error"]["type"], "urn:ietf:params:acme:error:connection",
        "{authz}"
    );
    assert_eq!(client.post(&order_url, None).json()["status"], "invalid");
    assert!(
        daemon
            .metric("certd_acme_challenges_total{challenge=\"http-01\",outcome=\"invalid\"}")
            .is_some_and(|count| count >= 1.0)
    );

    // Key change: the inner JWS, signed by the new key, names the account
    // and its old key.
    let account_url = client.kid.clone().unwrap();
    let old_jwk = client.jwk.clone();
    let replacement = Client::new(&daemon);
    let key_change = client.url("keyChange");
    let inner = replacement.sign(
        json!({"jwk": replacement.jwk, "url": key_change}),
        Some(&json!({"account": account_url, "oldKey": old_jwk}).to_string()),
    );
    let changed = client.post(&key_change, Some(&inner));
    assert_eq!(changed.status, 200, "{changed:?}");
    // The old key no longer signs for the account.
    let refused = client.post(&account_url, None);
    assert_eq!(refused.problem(), "malformed", "{refused:?}");
    // The new key does, and finds the account by key.
    let mut renewed = replacement;
    renewed.kid = Some(account_url.clone());
    let read = renewed.post(&account_url, None);
    assert_eq!(read.status, 200, "{read:?}");
    renewed.kid = None;
    let found = renewed.post(
        &renewed.url("newAccount"),
        Some(r#"{"onlyReturnExisting":true}"#),
    );
    assert_eq!(found.header("location"), Some(account_url.as_str()));
    // The holder deactivates it.
    renewed.kid = Some(account_url.clone());
    let deactivated = renewed.post(&account_url, Some(r#"{"status":"deactivated"}"#));
    assert_eq!(
        deactivated.json()["status"],
        "deactivated",
        "{deactivated:?}"
    );
    let refused = renewed.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");
    daemon.shutdown().await;
}

/// A certificate issued over ACME is no workload credential to the rest
/// of certd: gRPC Renew over mTLS with it is refused (it would widen it to
/// every name of the entry and outlive the account), and no EAB key is
/// made for an agent's entry or for an entry parented to an agent.
#[tokio::test(flavor = "multi_thread")]
async fn acme_certificates_renew_over_acme_only() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let (chain, key) = client.certificate_and_key_for(&["web.example.test"]);
    let tls = TlsClientSettings {
        ca_bundle_pem: daemon.bundle_pem(),
        identity: Some((chain, key.serialize_pem().into())),
    };
    let mut workload = WorkloadClient::connect(&daemon.grpc, &tls).await.unwrap();
    let csr = common::csr_for(&rcgen::KeyPair::generate().unwrap(), None, vec![]);
    let refused = workload.renew(csr).await.unwrap_err().to_string();
    assert!(
        refused.contains("certificates issued over ACME renew over ACME"),
        "{refused}"
    );

    let agent = daemon.entry("node", &["token:node"], &["--agent"]);
    let parented = daemon.entry(
        "app",
        &["unix:uid:4242"],
        &[
            "--parent",
            "spiffe://certd.internal/agent/node",
            "--dns",
            "app.example.test",
        ],
    );
    for (entry, why) in [
        (&agent, "is a node agent's"),
        (&parented, "is parented to a node agent"),
    ] {
        let refused = daemon.cli(&["acme", "eab", "create", "--entry", entry]);
        assert!(!refused.status.success(), "{entry}");
        assert!(stderr(&refused).contains(why), "{}", stderr(&refused));
    }
    daemon.shutdown().await;
}

/// Answers every HTTP request on `listener` with `body`'s current text:
/// the http-01 responder of a test, which sets the key authorization.
fn http01_responder(listener: tokio::net::TcpListener, body: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let text = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
}

/// A daemon accepting accounts without EAB whose http-01 validations go
/// to a responder of the test; returns it with the entry of
/// web.example.test and the responder's body.
async fn daemon_without_eab() -> (InProcess, String, Arc<Mutex<String>>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = Arc::new(Mutex::new(String::new()));
    http01_responder(listener, body.clone());
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let config = format!(
        "[acme]\naccounts_without_eab = true\n[acme.testing]\nhttp_port = {port}\nresolve_all_to = \"127.0.0.1\"\n"
    );
    let daemon = InProcess::start_in(tmp, data_dir, &config).await;
    let entry = daemon.entry(
        "web",
        &["token:web"],
        &["--dns", "web.example.test", "--dns", "www.example.test"],
    );
    (daemon, entry, body, config)
}

/// Orders `names` as `client` and passes each authorization's http-01
/// challenge through the responder's `body`; the order's URL once ready.
async fn ready_order(client: &mut Client, body: &Mutex<String>, names: &[&str]) -> Reply {
    let order = client.new_order(names);
    assert_eq!(order.status, 201, "{order:?}");
    for authz_url in order.json()["authorizations"].as_array().unwrap() {
        let authz_url = authz_url.as_str().unwrap();
        let authz = client.post(authz_url, None).json();
        let http01 = authz["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|challenge| challenge["type"] == "http-01")
            .unwrap()
            .clone();
        *body.lock().unwrap() = format!(
            "{}.{}",
            http01["token"].as_str().unwrap(),
            client.thumbprint()
        );
        let answered = client.post(http01["url"].as_str().unwrap(), Some("{}"));
        assert_eq!(answered.status, 200, "{answered:?}");
        let mut status = Value::Null;
        for _ in 0..100 {
            status = client.post(authz_url, None).json()["status"].clone();
            if status != "pending" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, "valid", "{authz_url}");
    }
    let order_url = order.header("location").unwrap().to_owned();
    let ready = client.post(&order_url, None);
    assert_eq!(ready.json()["status"], "ready", "{ready:?}");
    ready
}

/// An account without EAB, having proved control of a DNS name, gets a
/// web PKI certificate: DNS names only (no SPIFFE ID: it is not the
/// entry's workload identity) and serverAuth only.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_without_eab_gets_a_web_pki_certificate() {
    let (daemon, _entry, body, _) = daemon_without_eab().await;
    let mut client = Client::new(&daemon);
    assert_eq!(client.new_account(None).status, 201);
    let order = ready_order(&mut client, &body, &["web.example.test"]).await;
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["web.example.test"]);
    let finalized = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(finalized.json()["status"], "valid", "{finalized:?}");
    let certificate_url = finalized.json()["certificate"].as_str().unwrap().to_owned();
    let chain = client.post(&certificate_url, None).body;
    let der = rustls_pemfile::certs(&mut chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect();
    assert_eq!(names, [r#"DNSName("web.example.test")"#]);
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth, "{eku:?}");
    daemon.shutdown().await;
}

/// Turning `accounts_without_eab` off stops the accounts made while it was
/// on: their next order is refused with externalAccountRequired.
#[tokio::test(flavor = "multi_thread")]
async fn accounts_without_eab_stop_when_the_setting_is_turned_off() {
    let (daemon, _entry, _body, config) = daemon_without_eab().await;
    let mut client = Client::new(&daemon);
    assert_eq!(client.new_account(None).status, 201);
    let order = client.new_order(&["web.example.test"]);
    assert_eq!(order.status, 201, "{order:?}");
    let daemon = daemon
        .restart(&config.replace(
            "accounts_without_eab = true",
            "accounts_without_eab = false",
        ))
        .await;
    // The restarted daemon listens on another port; the account's URLs
    // still name the first.
    client.through(Some(&daemon));
    client.nonce = None;
    let refused = client.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "externalAccountRequired", "{refused:?}");
    daemon.shutdown().await;
}

/// An order's names are checked again at finalization: once they are no
/// longer its entry's (the entry was edited), finalize is refused with
/// rejectedIdentifier, and nothing is issued.
#[tokio::test(flavor = "multi_thread")]
async fn finalize_checks_the_names_against_the_entry_again() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let order = client.new_order(&["web.example.test"]);
    assert_eq!(order.json()["status"], "ready", "{order:?}");
    let updated = daemon.cli(&["entry", "update", &entry, "--dns", "www.example.test"]);
    assert!(updated.status.success(), "{}", stderr(&updated));
    let before = daemon.certificate_count();
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["web.example.test"]);
    let refused = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(refused.problem(), "rejectedIdentifier", "{refused:?}");
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("web.example.test is not a DNS name of registration entry"),
        "{refused:?}"
    );
    assert_eq!(daemon.certificate_count(), before);

    // Authorizations made valid without challenges count only while the
    // entry's policy still says so.
    let order = client.new_order(&["www.example.test"]);
    assert_eq!(order.json()["status"], "ready", "{order:?}");
    let set = daemon.cli(&["acme", "policy", "set", &entry, "--challenges", "http-01"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["www.example.test"]);
    let refused = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");
    assert_eq!(daemon.certificate_count(), before);
    daemon.shutdown().await;
}

/// An order left processing (the replica finalizing it stopped before it
/// wrote the outcome) is polled with a Retry-After while it may still
/// finish, and turns invalid with serverInternal once it is stale.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_abandoned_while_processing_turns_invalid() {
    use certd::acme::records::{self, OrderRecord, Status};
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let order = client.new_order(&["web.example.test"]);
    let order_url = order.header("location").unwrap().to_owned();
    let last = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    let key = records::order_key(&last(client.kid.as_deref().unwrap()), &last(&order_url));
    let store = daemon.authority.store();
    let stored = records::load::<OrderRecord>(store, &key)
        .await
        .unwrap()
        .unwrap();
    let mut processing = stored.value.clone();
    processing.status = Status::Processing;
    processing.processing_since = Some(daemon.authority.now());
    assert!(
        records::replace(store, &key, &stored, &processing, stored.expires_at())
            .await
            .unwrap()
    );
    daemon.advance(Duration::from_secs(60));
    let polled = client.post(&order_url, None);
    assert_eq!(polled.json()["status"], "processing", "{polled:?}");
    assert_eq!(polled.header("retry-after"), Some("2"), "{polled:?}");

    daemon.advance(Duration::from_secs(10 * 60));
    let polled = client.post(&order_url, None).json();
    assert_eq!(polled["status"], "invalid", "{polled}");
    assert_eq!(
        polled["error"]["type"], "urn:ietf:params:acme:error:serverInternal",
        "{polled}"
    );
    daemon.shutdown().await;
}

/// The authorization state machine (RFC 8555 §7.1.6, §7.5.2): a pending
/// authorization is polled with a Retry-After; it is deactivated once (a
/// second deactivation is malformed), a challenge of a deactivated one
/// does not start, and one past its `expires` shows `expired`.
#[tokio::test(flavor = "multi_thread")]
async fn authorizations_follow_their_state_machine() {
    let daemon = InProcess::start().await;
    let entry = daemon.entry(
        "web",
        &["token:web"],
        &["--dns", "web.example.test", "--dns", "www.example.test"],
    );
    let mut client = account(&daemon, &entry);
    let order = client.new_order(&["web.example.test", "www.example.test"]);
    assert_eq!(order.json()["status"], "pending", "{order:?}");
    let urls: Vec<String> = order.json()["authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|url| url.as_str().unwrap().to_owned())
        .collect();
    let polled = client.post(&urls[0], None);
    assert_eq!(polled.json()["status"], "pending", "{polled:?}");
    assert_eq!(polled.header("retry-after"), Some("2"), "{polled:?}");

    let deactivate = json!({"status": "deactivated"}).to_string();
    let deactivated = client.post(&urls[0], Some(&deactivate));
    assert_eq!(
        deactivated.json()["status"],
        "deactivated",
        "{deactivated:?}"
    );
    let again = client.post(&urls[0], Some(&deactivate));
    assert_eq!(again.problem(), "malformed", "{again:?}");
    let challenge_url = deactivated.json()["challenges"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let answered = client.post(&challenge_url, Some("{}"));
    assert_eq!(
        answered.json()["status"],
        "pending",
        "not started: {answered:?}"
    );

    // Past its expiry (set in the store: a day of the daemon's clock
    // would outdate its serving certificate for curl).
    use certd::acme::records::{self, AuthzRecord};
    let last = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    let key = records::authz_key(&last(client.kid.as_deref().unwrap()), &last(&urls[1]));
    let store = daemon.authority.store();
    let stored = records::load::<AuthzRecord>(store, &key)
        .await
        .unwrap()
        .unwrap();
    let mut expired = stored.value.clone();
    expired.expires_at = daemon.authority.now() - 1;
    assert!(
        records::replace(store, &key, &stored, &expired, stored.expires_at())
            .await
            .unwrap()
    );
    let polled = client.post(&urls[1], None);
    assert_eq!(polled.json()["status"], "expired", "{polled:?}");
    daemon.shutdown().await;
}

/// An account may have 100 orders open at once (the next is rateLimited,
/// with a Retry-After), and its order list comes in pages of 100 linked
/// by `Link: rel="next"` (RFC 8555 §7.1.2.1).
#[tokio::test(flavor = "multi_thread")]
async fn open_orders_are_capped_and_the_order_list_is_paginated() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let mut first = None;
    for _ in 0..100 {
        let order = client.new_order(&["web.example.test"]);
        assert_eq!(order.status, 201, "{order:?}");
        first.get_or_insert(order);
    }
    let refused = client.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "rateLimited", "{refused:?}");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");

    // One finishes: there is room for another.
    let first = first.unwrap();
    let finalize = first.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["web.example.test"]);
    let finalized = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(finalized.json()["status"], "valid", "{finalized:?}");
    assert_eq!(client.new_order(&["web.example.test"]).status, 201);

    let account_url = client.kid.clone().unwrap();
    let orders_url = client.post(&account_url, None).json()["orders"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = client.post(&orders_url, None);
    assert_eq!(page.json()["orders"].as_array().unwrap().len(), 100);
    let next = page
        .all("link")
        .iter()
        .find_map(|link| link.strip_suffix(";rel=\"next\""))
        .map(|link| link.trim_matches(['<', '>']).to_owned())
        .unwrap_or_else(|| panic!("a next page: {page:?}"));
    let rest = client.post(&next, None);
    let rest_orders = rest.json()["orders"].as_array().unwrap().clone();
    assert_eq!(rest_orders.len(), 1, "{rest:?}");
    assert!(
        !page.json()["orders"]
            .as_array()
            .unwrap()
            .contains(&rest_orders[0])
    );
    assert!(
        !rest
            .all("link")
            .iter()
            .any(|link| link.contains("rel=\"next\"")),
        "{rest:?}"
    );

    // Operators page through them too (`certd acme order list` asks a
    // page at a time): every order once, and a token certd did not hand
    // out is invalid input.
    let mut admin = certd::api::client::AdminClient::connect(&daemon.data_dir.join("admin.sock"))
        .await
        .unwrap();
    let (mut listed, mut token) = (Vec::new(), None);
    loop {
        let (page, next) = admin
            .acme_orders_page(None, token.as_deref(), 40)
            .await
            .unwrap();
        assert!(page.len() <= 40);
        listed.extend(page.into_iter().map(|order| order.id));
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((listed.len(), unique.len()), (101, 101));
    assert_eq!(admin.acme_orders(None).await.unwrap().len(), 101);
    let refused = admin
        .acme_orders_page(None, Some("bm90LWFuLW9yZGVy"), 40)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), certd::ErrorKind::InvalidInput, "{refused}");
    assert!(refused.to_string().contains("page token"), "{refused}");
    daemon.shutdown().await;
}

/// The open-order cap counts markers that can drift (a crash between a
/// marker and its order, a close whose marker removal was lost, a store
/// from before the markers), and the count re-derives them: a marker whose
/// order closed or never came is dropped at the cap, and an account whose
/// markers are gone is indexed again from its orders.
#[tokio::test(flavor = "multi_thread")]
async fn open_order_markers_that_drift_are_re_derived() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let account_id = client
        .kid
        .clone()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut first = None;
    for _ in 0..100 {
        let order = client.new_order(&["web.example.test"]);
        assert_eq!(order.status, 201, "{order:?}");
        first.get_or_insert(order);
    }
    let store = daemon.authority.store();
    let marker = |created_at: i64| certd::store::AcmeObject {
        expires_at: None,
        data: json!({ "expires_at": i64::MAX, "created_at": created_at })
            .to_string()
            .into_bytes(),
    };
    let markers = || async {
        store
            .acme_objects(&format!("open-order/{account_id}/"))
            .await
            .unwrap()
    };
    assert_eq!(markers().await.len(), 100);

    // One order finishes, but its marker is put back (as if its removal
    // was lost), and a newOrder cut short left a marker without an order.
    let first = first.unwrap();
    let first_id = first
        .header("location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let finalize = first.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["web.example.test"]);
    let finalized = client.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    assert_eq!(finalized.json()["status"], "valid", "{finalized:?}");
    for order in [first_id.as_str(), "never-written"] {
        let key = format!("open-order/{account_id}/{order}");
        assert!(
            store
                .swap_acme_object(&key, None, Some(&marker(0)))
                .await
                .unwrap()
        );
    }
    assert_eq!(markers().await.len(), 101);
    // 99 orders are open: one more may be made, and the stale markers go.
    assert_eq!(client.new_order(&["web.example.test"]).status, 201);
    assert_eq!(markers().await.len(), 100);
    let refused = client.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "rateLimited", "{refused:?}");

    // Many stale markers sorting before the live ones ('-' before any id
    // certd makes) hide no open order: the count reads on past them.
    for stale in 0..60 {
        let key = format!("open-order/{account_id}/-stale-{stale:02}");
        assert!(
            store
                .swap_acme_object(&key, None, Some(&marker(0)))
                .await
                .unwrap()
        );
    }
    let refused = client.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "rateLimited", "{refused:?}");
    assert_eq!(markers().await.len(), 100);

    // Every marker lost, as in a store from before them: the account is
    // indexed again from its orders, and the cap still holds.
    for (key, object) in markers().await {
        assert!(
            store
                .swap_acme_object(&key, Some(&object), None)
                .await
                .unwrap()
        );
    }
    let flag = format!("open-orders-indexed/{account_id}");
    let indexed = store.acme_object(&flag).await.unwrap().unwrap();
    assert!(
        store
            .swap_acme_object(&flag, Some(&indexed), None)
            .await
            .unwrap()
    );
    let refused = client.new_order(&["web.example.test"]);
    assert_eq!(refused.problem(), "rateLimited", "{refused:?}");
    assert_eq!(markers().await.len(), 100);
    daemon.shutdown().await;
}

/// An account key's index left without its account (a write that failed
/// half-way) blocks nothing: the key makes a new account, with an EAB key
/// spent once; and a deactivated account's key is refused
/// (unauthorized), not answered with the account.
#[tokio::test(flavor = "multi_thread")]
async fn account_keys_are_indexed_after_their_account() {
    use certd::acme::records;
    let (daemon, entry) = acme_daemon().await;
    let mut client = Client::new(&daemon);
    let store = daemon.authority.store();
    assert!(
        records::create(
            store,
            &records::account_by_key(&client.thumbprint()),
            &"no-such-account".to_owned(),
            None,
        )
        .await
        .unwrap()
    );
    let (kid, hmac) = eab(&daemon, &entry);
    let binding = client.binding(&kid, &hmac);
    let made = client.new_account(Some(binding.clone()));
    assert_eq!(made.status, 201, "{made:?}");
    // The EAB key was spent on it.
    let mut other = Client::new(&daemon);
    let binding = other.binding(&kid, &hmac);
    let refused = other.new_account(Some(binding));
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");

    let account_url = client.kid.clone().unwrap();
    // certbot sends the status it read back with an update.
    let updated = client.post(
        &account_url,
        Some(r#"{"status":"valid","contact":["mailto:new@example.test"]}"#),
    );
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.json()["contact"][0], "mailto:new@example.test");
    let refused = client.post(&account_url, Some(r#"{"contact":["tel:+15551234"]}"#));
    assert_eq!(refused.problem(), "unsupportedContact", "{refused:?}");
    let deactivated = client.post(&account_url, Some(r#"{"status":"deactivated"}"#));
    assert_eq!(
        deactivated.json()["status"],
        "deactivated",
        "{deactivated:?}"
    );
    client.kid = None;
    let refused = client.new_account(None);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");
    daemon.shutdown().await;
}

/// RFC 8555 §7.6: an account that proved control of all of a
/// certificate's names by a challenge may revoke it, though another
/// account ordered it; an account without such authorizations may not.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_proved_control_of_the_names_may_revoke() {
    let (daemon, _entry, body, _) = daemon_without_eab().await;
    let mut owner = Client::new(&daemon);
    assert_eq!(owner.new_account(None).status, 201);
    let order = ready_order(&mut owner, &body, &["web.example.test"]).await;
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = csr(&["web.example.test"]);
    let finalized = owner.post(&finalize, Some(&json!({ "csr": request }).to_string()));
    let certificate_url = finalized.json()["certificate"].as_str().unwrap().to_owned();
    let chain = owner.post(&certificate_url, None).body;
    let der = rustls_pemfile::certs(&mut chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let revoke = json!({"certificate": b64(&der)}).to_string();

    let mut stranger = Client::new(&daemon);
    assert_eq!(stranger.new_account(None).status, 201);
    let revoke_url = stranger.url("revokeCert");
    let refused = stranger.post(&revoke_url, Some(&revoke));
    assert_eq!(refused.problem(), "unauthorized", "{refused:?}");

    let mut controller = Client::new(&daemon);
    assert_eq!(controller.new_account(None).status, 201);
    ready_order(&mut controller, &body, &["web.example.test"]).await;
    let revoked = controller.post(&revoke_url, Some(&revoke));
    assert_eq!(revoked.status, 200, "{revoked:?}");
    daemon.shutdown().await;
}

/// ARI `replaces` (RFC 9773 §5): the replaced certificate must share a
/// name with the new order, and once a live order replaces it, another
/// is refused with alreadyReplaced (409).
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_replaced_by_one_live_order() {
    let (daemon, entry) = acme_daemon().await;
    let mut client = account(&daemon, &entry);
    let chain = client.certificate_for(&["web.example.test"]);
    let cert_id = Renewal::of(&client, &chain)
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let order = |client: &mut Client, name: &str| {
        let url = client.url("newOrder");
        client.post(
            &url,
            Some(
                &json!({"identifiers": [{"type": "dns", "value": name}], "replaces": cert_id})
                    .to_string(),
            ),
        )
    };
    let refused = order(&mut client, "www.example.test");
    assert_eq!(refused.problem(), "malformed", "{refused:?}");
    assert!(refused.body.contains("shares no name"), "{refused:?}");
    let replacing = order(&mut client, "web.example.test");
    assert_eq!(replacing.status, 201, "{replacing:?}");
    let again = order(&mut client, "web.example.test");
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.problem(), "alreadyReplaced", "{again:?}");

    // The claim is one object, not a read of every order: a claim whose
    // order never came (a newOrder cut short) is taken over...
    let store = daemon.authority.store();
    let account_id = client
        .kid
        .clone()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let key = format!("replaced-by/{account_id}/{cert_id}");
    let claimed = store.acme_object(&key).await.unwrap().expect("a claim");
    let cut_short = certd::store::AcmeObject {
        data: br#"{"order":"never-written","created_at":0}"#.to_vec(),
        ..claimed.clone()
    };
    assert!(
        store
            .swap_acme_object(&key, Some(&claimed), Some(&cut_short))
            .await
            .unwrap()
    );
    let taken_over = order(&mut client, "web.example.test");
    assert_eq!(taken_over.status, 201, "{taken_over:?}");
    assert_eq!(order(&mut client, "web.example.test").status, 409);
    // ...and claims lost, as in a store from before them, are made again
    // from the account's orders, once.
    let claimed = store.acme_object(&key).await.unwrap().expect("a claim");
    assert!(
        store
            .swap_acme_object(&key, Some(&claimed), None)
            .await
            .unwrap()
    );
    let flag = format!("replaced-indexed/{account_id}");
    let indexed = store.acme_object(&flag).await.unwrap().expect("indexed");
    assert!(
        store
            .swap_acme_object(&flag, Some(&indexed), None)
            .await
            .unwrap()
    );
    let again = order(&mut client, "web.example.test");
    assert_eq!(again.problem(), "alreadyReplaced", "{again:?}");
    daemon.shutdown().await;
}
