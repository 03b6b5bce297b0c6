//! Two certd replicas sharing one CA and one PostgreSQL database: what is
//! written through one is seen through the other, and a join token raced
//! on both yields one certificate. Against a real PostgreSQL server (see
//! `store::postgres::scratch`); skipped with one loud line where
//! PostgreSQL is not installed, failed instead in CI.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certd::store::postgres::scratch::ScratchServer;
use common::{Daemon, Identity, acme, csr_for, http, stderr, stdout, use_database};
use x509_cert::der::Decode;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};

/// How long a change may take to reach the other replica in these tests.
/// The measured time is printed; docs/ARCHITECTURE.md states the bound.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(5);

/// Replica A with a new CA, replica B set up from A's package with `certd
/// replica export` and `certd replica import`, both on the scratch
/// server's database (B finds it in its data directory's database.toml).
fn replicas() -> Option<(Daemon, Daemon, ScratchServer)> {
    let server = ScratchServer::start_for_tests()?;
    let url = server.url();
    let tmp_a = tempfile::tempdir().unwrap();
    let dir_a = tmp_a.path().join("ca");
    use_database(&dir_a, &url);
    let a = Daemon::start_in(tmp_a, dir_a, &[]);
    let tmp_b = tempfile::tempdir().unwrap();
    let dir_b = tmp_b.path().join("ca");
    set_up_replica(&a.data_dir, &dir_b, &url);
    let b = Daemon::start_in(tmp_b, dir_b, &[]);
    Some((a, b, server))
}

/// What an operator does for a replica: `certd replica export` where the
/// CA lives, `certd replica import` on the replica (a new one, or one to
/// bring up to date after a rotation). Returns what import said.
fn set_up_replica(primary: &Path, replica: &Path, url: &str) -> String {
    import_package(&export_package(primary), replica, url)
}

/// `certd replica import` of `package` into `replica`; what it said.
fn import_package(package: &Path, replica: &Path, url: &str) -> String {
    let output = certd(&[
        "replica",
        "import",
        package.to_str().unwrap(),
        "--data-dir",
        replica.to_str().unwrap(),
        "--database-url",
        url,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

/// `certd replica export` of `primary`'s data directory, beside it.
fn export_package(primary: &Path) -> PathBuf {
    let package = primary.with_file_name("replica.tar");
    let output = certd(&[
        "replica",
        "export",
        "--data-dir",
        primary.to_str().unwrap(),
        "--out",
        package.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    package
}

/// The certd CLI with nothing from the environment choosing its data
/// directory or database.
fn certd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::CERTD)
        .args(args)
        .env_remove("CERTD_DATA_DIR")
        .env_remove("CERTD_DATABASE_URL")
        .env_remove("CERTD_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Waits until `replica` signs with a new set of intermediates.
async fn promoted(replica: &Daemon) {
    replica.reload();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.metric("certd_ca_signers_generation").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "{}", replica.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it holds; returns how long that took.
async fn within_limit(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            let took = started.elapsed();
            eprintln!("{what}: seen by the other replica after {took:?}");
            return took;
        }
        assert!(
            started.elapsed() < PROPAGATION_LIMIT,
            "{what}: not seen by the other replica within {PROPAGATION_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ocsp_status(replica: &Daemon, chain_pem: &str) -> CertStatus {
    let (request, _) = certd::revocation::ocsp::request_for(chain_pem, None).unwrap();
    let response = http(
        "POST",
        &format!("{}/ocsp", replica.http),
        &[("Content-Type", "application/ocsp-request")],
        &request,
    );
    assert_eq!(response.status, 200);
    let response = OcspResponse::from_der(&response.body).unwrap();
    // A replica that lacks the intermediate answers `unauthorized`.
    assert_eq!(
        response.response_status,
        OcspResponseStatus::Successful,
        "{}",
        replica.http
    );
    let bytes = response.response_bytes.unwrap();
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    basic.tbs_response_data.responses[0].cert_status
}

fn crl_lists(replica: &Daemon, serial: &str) -> bool {
    let crl = http("GET", &format!("{}/crl", replica.http), &[], b"");
    assert_eq!(crl.status, 200);
    let (_, crl) = x509_parser::parse_x509_crl(&crl.body).unwrap();
    crl.iter_revoked_certificates()
        .any(|revoked| hex::encode(revoked.raw_serial()) == serial)
}

/// The CRL number of a DER CRL, and whether it lists `serial` (hex).
fn crl_number_and_lists(der: &[u8], serial: &str) -> (u64, bool) {
    let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
    let number = crl
        .crl_number()
        .and_then(|number| number.to_u64_digits().first().copied())
        .unwrap_or(0);
    let lists = crl
        .iter_revoked_certificates()
        .any(|revoked| hex::encode(revoked.raw_serial()) == serial);
    (number, lists)
}

/// With `crl_shards`, a revocation through A reaches the shard B serves:
/// B adopts A's whole CRL (the database holds no shards) and signs the
/// shards of exactly its list with its number, so B's shard for the serial
/// lists it under a number A published (or a later one B built), never one
/// only B has.
#[tokio::test(flavor = "multi_thread")]
async fn with_crl_shards_a_replica_signs_the_shards_of_the_others_crl() {
    let Some(server) = ScratchServer::start_for_tests() else {
        return;
    };
    let url = server.url();
    let sharded =
        |tmp: &Path| common::write_file(&tmp.join("certd.toml"), "[revocation]\ncrl_shards = 4\n");
    let tmp_a = tempfile::tempdir().unwrap();
    let dir_a = tmp_a.path().join("ca");
    use_database(&dir_a, &url);
    let config_a = sharded(tmp_a.path());
    let a = Daemon::start_in(tmp_a, dir_a, &["--config", &config_a]);
    let tmp_b = tempfile::tempdir().unwrap();
    let dir_b = tmp_b.path().join("ca");
    set_up_replica(&a.data_dir, &dir_b, &url);
    let config_b = sharded(tmp_b.path());
    let b = Daemon::start_in(tmp_b, dir_b, &["--config", &config_b]);

    let identity = a.bootstrap("billing").await;
    let (_, leaf) =
        x509_parser::pem::parse_x509_pem(identity.issued.certificate_pem.as_bytes()).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    let crl_path = leaf
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::CRLDistributionPoints(points) => points
                .points
                .iter()
                .find_map(|point| match &point.distribution_point {
                    Some(x509_parser::extensions::DistributionPointName::FullName(names)) => {
                        names.iter().find_map(|name| match name {
                            x509_parser::extensions::GeneralName::URI(uri) => {
                                uri.strip_prefix(a.http.as_str()).map(str::to_owned)
                            }
                            _ => None,
                        })
                    }
                    _ => None,
                }),
            _ => None,
        })
        .expect("a CRL distribution point under A's URL");
    assert!(crl_path.contains("/shards/4/"), "{crl_path}");

    let serial = identity.issued.serial.clone();
    let output = a.cli(&["revoke", &serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (a_number, a_lists) = crl_number_and_lists(
        &http("GET", &format!("{}/crl", a.http), &[], b"").body,
        &serial,
    );
    assert!(a_lists);
    let mut b_number = 0;
    within_limit("a revocation in B's shard", async || {
        let shard = http("GET", &format!("{}{crl_path}", b.http), &[], b"");
        assert_eq!(shard.status, 200, "{crl_path}");
        let (number, lists) = crl_number_and_lists(&shard.body, &serial);
        b_number = number;
        lists
    })
    .await;
    assert!(
        b_number >= a_number,
        "B's shard {b_number}, A's CRL {a_number}"
    );
    let (b_whole, b_lists) = crl_number_and_lists(
        &http("GET", &format!("{}/crl", b.http), &[], b"").body,
        &serial,
    );
    assert!(b_lists && b_whole >= b_number, "B's whole CRL {b_whole}");
    // Every CRL B serves was shared (adopted from A, or built by B and
    // published): A comes to serve B's number too, so the two do not stay
    // apart and a relying party going from one to the other does not see
    // the number go back for long.
    within_limit("A serving B's CRL number", async || {
        let (a_now, _) = crl_number_and_lists(
            &http("GET", &format!("{}/crl", a.http), &[], b"").body,
            &serial,
        );
        a_now >= b_number
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_one_database_agree() {
    let Some((a, b, _server)) = replicas() else {
        return;
    };

    // An entry created through B is usable through A.
    b.entry("billing", &["token:billing"], &[]);
    let mut token = String::new();
    within_limit("a new entry", async || {
        let output = a.cli(&["token", "create", "--service", "billing"]);
        token = stdout(&output).trim().to_owned();
        output.status.success()
    })
    .await;

    // A token policy applied through A is enforced by B: B's token
    // endpoint (asked through `policy explain`) grants the new scope, and
    // the new delegation of a token exchange on behalf of B's own subjects
    // (B's issuer: the replicas here have no shared `[jwt] issuer`).
    let explain = |replica: &Daemon, exchange: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--from",
            "billing",
            "--to",
            "invoices",
            "--scope",
            "invoices:read",
        ];
        args.extend(exchange);
        replica.cli(&args).status.code()
    };
    let on_behalf = ["--on-behalf-of", b.http.as_str(), "--chain", "2"];
    assert_eq!(explain(&b, &[]), Some(4), "default deny before the policy");
    assert_eq!(
        explain(&b, &on_behalf),
        Some(4),
        "no delegation before the policy"
    );
    let policy = a.tmp.path().join("policy.toml");
    common::write_file(
        &policy,
        format!(
            "[[grant]]\nname = \"billing-invoices\"\nfrom = \"billing\"\nto = \"invoices\"\nscopes = [\"invoices:read\"]\n\n[[delegation]]\nname = \"billing-for-b\"\nfrom = \"billing\"\non_behalf_of = [\"{}\"]\nto = \"invoices\"\nscopes = [\"invoices:read\"]\nmax_chain = 2\n",
            b.http
        ),
    );
    let output = a.cli(&["policy", "apply", policy.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    within_limit("a token policy", async || {
        explain(&b, &[]) == Some(0) && explain(&b, &on_behalf) == Some(0)
    })
    .await;

    // Issued through A, renewed through B.
    let key = rcgen::KeyPair::generate().unwrap();
    let issued = a
        .client(None)
        .await
        .issue(csr_for(&key, None, vec![]), &token)
        .await
        .expect("issue on A");
    let identity = Identity::new(key, issued);
    let renewed = b.renew(Some(&identity)).await.expect("renew on B");
    assert_eq!(renewed.spiffe_id, identity.issued.spiffe_id);
    let listed = b.recorded_serials();
    assert!(listed.contains(&identity.issued.serial));
    assert!(listed.contains(&renewed.serial));

    // B has answered OCSP for it (and cached the answer) before A revokes.
    assert!(matches!(
        ocsp_status(&b, &identity.chain_pem),
        CertStatus::Good(_)
    ));
    let output = a.cli(&[
        "revoke",
        &identity.issued.serial,
        "--reason",
        "key-compromise",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    within_limit("a revocation in OCSP", async || {
        matches!(ocsp_status(&b, &identity.chain_pem), CertStatus::Revoked(_))
    })
    .await;
    within_limit("a revocation in the CRL", async || {
        crl_lists(&b, &identity.issued.serial)
    })
    .await;
    // B serves the CRL A signed, rather than signing its own.
    let (_, on_a) = a.client(None).await.crl().await.unwrap();
    let (_, on_b) = b.client(None).await.crl().await.unwrap();
    assert_eq!(on_a, on_b, "both replicas serve CRL number {on_a}");
    // And B refuses to renew the revoked certificate.
    let (kind, _) = common::refusal(b.renew(Some(&identity)).await);
    assert_eq!(kind, certd::ErrorKind::Unauthenticated);

    // An entry deleted through A stops matching on B.
    let entries = b.cli(&["entry", "list", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&entries.stdout).unwrap();
    let id = entries[0]["id"].as_str().unwrap().to_owned();
    let output = a.cli(&["entry", "delete", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    within_limit("a deleted entry", async || {
        b.cli(&["token", "create", "--service", "billing"])
            .status
            .code()
            == Some(5)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_raced_on_two_replicas_yields_one_certificate() {
    let Some((a, b, _server)) = replicas() else {
        return;
    };
    a.entry("payments", &["token:payments"], &[]);
    let output = a.cli(&["token", "create", "--service", "payments", "--count", "20"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let tokens: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut races = Vec::new();
    for token in tokens {
        for replica in [a.clone(), b.clone()] {
            let token = token.clone();
            races.push(tokio::spawn(async move {
                let key = rcgen::KeyPair::generate().unwrap();
                let outcome = replica
                    .client(None)
                    .await
                    .issue(csr_for(&key, None, vec![]), &token)
                    .await;
                (token, outcome)
            }));
        }
    }
    let mut won = std::collections::HashMap::<String, usize>::new();
    for race in races {
        let (token, outcome) = race.await.unwrap();
        match outcome {
            Ok(_) => *won.entry(token).or_default() += 1,
            Err(error) => {
                let (kind, message) = common::refusal(Err::<(), _>(error));
                assert_eq!(kind, certd::ErrorKind::Unauthenticated, "{message}");
                won.entry(token).or_default();
            }
        }
    }
    assert_eq!(won.len(), 20);
    for (token, wins) in won {
        assert_eq!(wins, 1, "token {token} issued {wins} certificates");
    }
}

/// ACME through two replicas behind one name, as a load balancer sends
/// an ACME client's requests anywhere: an EAB key made on A opens an
/// account through B, a nonce A gave is good at B and then spent at A too
/// (badNonce), an order made through A is finalized through B and its
/// certificate downloaded through A; a finalize raced on both replicas
/// issues one certificate, and finalizing again answers orderNotReady.
#[tokio::test(flavor = "multi_thread")]
async fn acme_through_two_replicas_issues_each_order_once() {
    let Some((a, b, _server)) = replicas() else {
        return;
    };
    let entry = a.entry("web", &["token:web"], &["--dns", "web.example.test"]);
    let set = a.cli(&["acme", "policy", "set", &entry, "--without-challenges"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let (key_id, hmac) = acme::eab(&a, &entry);

    // The directory (and so every URL) is A's; B answers for it.
    let mut client = acme::Client::new(&a);
    client.through(Some(&b));
    let binding = client.binding(&key_id, &hmac);
    let mut made = client.new_account(Some(binding.clone()));
    let started = Instant::now();
    while made.status != 201 && started.elapsed() < PROPAGATION_LIMIT {
        // B may not know the entry yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
        made = client.new_account(Some(binding.clone()));
    }
    assert_eq!(made.status, 201, "{made:?}");

    // A nonce from A, spent at B, is refused at A.
    client.through(None);
    let nonce = client.new_nonce();
    let account_url = client.kid.clone().unwrap();
    let body = client.sign(client.header_with(&account_url, &nonce), None);
    client.through(Some(&b));
    let read = client.send(&account_url, &body);
    assert_eq!(read.status, 200, "A's nonce is good at B: {read:?}");
    client.through(None);
    let replayed = client.send(&account_url, &body);
    assert_eq!(replayed.problem(), "badNonce", "{replayed:?}");

    // Ordered through A, finalized through B, downloaded through A.
    let order = client.new_order(&["web.example.test"]);
    assert_eq!(order.status, 201, "{order:?}");
    assert_eq!(order.json()["status"], "ready", "{order:?}");
    let order_url = order.header("location").unwrap().to_owned();
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let (_key, request) = acme::csr(&["web.example.test"]);
    let payload = serde_json::json!({ "csr": request }).to_string();
    client.through(Some(&b));
    let finalized = client.post(&finalize, Some(&payload));
    assert_eq!(finalized.status, 200, "{finalized:?}");
    client.through(None);
    let certificate_url = client.post(&order_url, None).json()["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let chain = client.post(&certificate_url, None);
    assert_eq!(chain.status, 200, "{chain:?}");
    assert_eq!(chain.body.matches("BEGIN CERTIFICATE").count(), 2);
    let again = client.post(&finalize, Some(&payload));
    assert_eq!(again.problem(), "orderNotReady", "{again:?}");

    // A second order finalized on both replicas at once: one wins.
    let order = client.new_order(&["web.example.test"]);
    let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
    let bodies: Vec<(acme::Client, String)> = [Some(&*b), None]
        .into_iter()
        .map(|replica| {
            let mut racer = acme::Client::new(&a);
            racer.kid = client.kid.clone();
            racer.through(replica);
            let nonce = racer.new_nonce();
            // Signed by the account's key: the racers share it.
            let body = client.sign(racer.header_with(&finalize, &nonce), Some(&payload));
            (racer, body)
        })
        .collect();
    let races: Vec<_> = bodies
        .into_iter()
        .map(|(racer, body)| {
            let finalize = finalize.clone();
            std::thread::spawn(move || racer.curl("POST", &finalize, Some(&body)))
        })
        .collect();
    let outcomes: Vec<acme::Reply> = races.into_iter().map(|race| race.join().unwrap()).collect();
    let won: Vec<&acme::Reply> = outcomes
        .iter()
        .filter(|reply| reply.status == 200)
        .collect();
    assert_eq!(won.len(), 1, "one finalize issues: {outcomes:?}");
    let lost = outcomes.iter().find(|reply| reply.status != 200).unwrap();
    assert_eq!(lost.problem(), "orderNotReady", "{lost:?}");
    let listed = a.cli(&["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let from_acme = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|certificate| {
            certificate["attestation"]
                .as_str()
                .is_some_and(|attestation| attestation.contains("acme"))
        })
        .count();
    assert_eq!(from_acme, 2, "two orders, two certificates: {listed}");
}

/// The database stops under load and comes back: meanwhile requests get
/// UNAVAILABLE and readiness says why; afterwards certd serves again by
/// itself, and every certificate a workload received is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_stopped_and_restarted_under_load() {
    let Some(mut server) = ScratchServer::start_for_tests() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    use_database(&dir, &server.url());
    let daemon = Arc::new(Daemon::start_in(tmp, dir, &[]));
    daemon.entry("billing", &["token:billing"], &[]);
    let output = daemon.cli(&["token", "create", "--service", "billing", "--count", "300"]);
    let tokens: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    let queue = Arc::new(std::sync::Mutex::new(tokens));
    let issued = Arc::new(std::sync::Mutex::new(Vec::new()));
    let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (daemon, queue, issued, refused) = (
            daemon.clone(),
            queue.clone(),
            issued.clone(),
            refused.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(token) = queue.lock().unwrap().pop() else {
                    return;
                };
                let key = rcgen::KeyPair::generate().unwrap();
                match daemon
                    .client(None)
                    .await
                    .issue(csr_for(&key, None, vec![]), &token)
                    .await
                {
                    Ok(certificate) => issued.lock().unwrap().push(certificate.serial),
                    Err(error) => refused.lock().unwrap().push((token, error)),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    while issued.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop();
    let started = Instant::now();
    let mut saw_not_ready = false;
    while started.elapsed() < Duration::from_secs(10) && !saw_not_ready {
        let ready = http("GET", &format!("{}/readyz", daemon.http), &[], b"");
        saw_not_ready = ready.status == 503;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_not_ready, "readiness never reported the lost database");
    // The database stays down until the workers have had issuances refused.
    let started = Instant::now();
    while refused.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no issuance was refused while the database was down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.restart(false).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }

    let refused = std::mem::take(&mut *refused.lock().unwrap());
    assert!(
        !refused.is_empty(),
        "nothing was refused while the database was down"
    );
    for (_, error) in &refused {
        let certd::api::client::ClientError::Refused { kind, message } = error else {
            panic!("expected a refusal, got {error:?}");
        };
        assert_eq!(*kind, certd::ErrorKind::Unavailable, "{message}");
    }
    // Serving again without a restart: a refused token works now (the
    // transaction that would have consumed it never committed).
    let (token, _) = &refused[0];
    let key = rcgen::KeyPair::generate().unwrap();
    let mut client = daemon.client(None).await;
    let mut retried = None;
    let started = Instant::now();
    while retried.is_none() {
        match client.issue(csr_for(&key, None, vec![]), token).await {
            Ok(certificate) => retried = Some(certificate.serial),
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(15), "{error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let ready = http("GET", &format!("{}/readyz", daemon.http), &[], b"");
    assert_eq!(ready.status, 200);
    let recorded = daemon.recorded_serials();
    for serial in issued.lock().unwrap().iter().chain(retried.iter()) {
        assert!(
            recorded.contains(serial),
            "{serial} returned but not recorded"
        );
    }
}

/// A database that hangs rather than fails (every PostgreSQL process
/// frozen with SIGSTOP, as a stalled host or a partition that drops packets
/// looks): `/readyz` turns 503 within about 3 s, and a call fails fast with
/// UNAVAILABLE instead of waiting on the database past the caller's
/// deadline; once the database runs again certd is ready by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_database_makes_certd_not_ready_and_calls_fail_fast() {
    let Some(server) = ScratchServer::start_for_tests() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    use_database(&dir, &server.url());
    let daemon = Daemon::start_in(tmp, dir, &[]);
    daemon.entry("billing", &["token:billing"], &[]);
    let token = daemon.token("billing");
    let readyz = format!("{}/readyz", daemon.http);
    assert_eq!(http("GET", &readyz, &[], b"").status, 200);
    let mut client = daemon.client(None).await;

    server.freeze().unwrap();
    let frozen = Instant::now();
    let not_ready = loop {
        let ready = http("GET", &readyz, &[], b"");
        if ready.status == 503 {
            break ready;
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(4),
            "still ready {:?} after the database froze",
            frozen.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("not ready {:?} after the freeze", frozen.elapsed());
    let reason = String::from_utf8_lossy(&not_ready.body).into_owned();
    assert!(reason.contains("store"), "{reason}");

    let key = rcgen::KeyPair::generate().unwrap();
    let called = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        client.issue(csr_for(&key, None, vec![]), &token),
    )
    .await
    .expect("Issue waited on the frozen database for 20 s");
    let took = called.elapsed();
    server.thaw().unwrap();
    let (kind, message) = common::refusal(outcome);
    assert_eq!(kind, certd::ErrorKind::Unavailable, "{message}");
    assert!(
        took < Duration::from_secs(12),
        "Issue took {took:?} to fail"
    );
    eprintln!("Issue refused after {took:?}: {message}");

    let thawed = Instant::now();
    while http("GET", &readyz, &[], b"").status != 200 {
        assert!(
            thawed.elapsed() < Duration::from_secs(15),
            "not ready again after the database thawed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let certificate = client
        .issue(csr_for(&key, None, vec![]), &daemon.token("billing"))
        .await
        .expect("issues again after the thaw");
    assert!(daemon.recorded_serials().contains(&certificate.serial));
}

/// `certd db copy` moves a sled store into PostgreSQL: afterwards certd
/// serves the same records, revocations, entries, tokens and CRL numbers
/// from it.
#[tokio::test(flavor = "multi_thread")]
async fn a_sled_store_is_copied_to_postgresql_and_served_from_it() {
    let Some(server) = ScratchServer::start_for_tests() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let mut on_sled = Daemon::start_in(tmp, dir, &[]);
    assert!(
        common::database_url(&on_sled.data_dir).is_none(),
        "starts on sled"
    );
    let kept = on_sled.bootstrap("billing").await;
    let revoked = on_sled.bootstrap("billing").await;
    let output = on_sled.cli(&["revoke", &revoked.issued.serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    on_sled.entry("payments", &["token:payments"], &[]);
    let unused = on_sled.token("payments");
    let (_, last_crl_number) = on_sled.client(None).await.crl().await.unwrap();
    let bundle_sequence = |daemon: &Daemon| {
        let answer = http("GET", &format!("{}/bundle.spiffe", daemon.http), &[], b"");
        let bundle: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        bundle["spiffe_sequence"].as_u64().unwrap()
    };
    let last_bundle_sequence = bundle_sequence(&on_sled);
    assert!(on_sled.terminate().success());

    let copy = |url: &str| common::run_cli(&on_sled.data_dir, &["db", "copy", "--to", url]);
    let output = copy(&server.url());
    assert!(output.status.success(), "{}", stderr(&output));
    let said = stdout(&output);
    assert!(
        said.contains("(1 revoked), 2 entries, 1 join tokens"),
        "{said}"
    );
    assert!(said.contains("the counts match"), "{said}");
    let output = copy(&server.url());
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("copy only into a new, empty database"),
        "{}",
        stderr(&output)
    );
    // With --json, the same refusal is one JSON object on stderr.
    let output = common::run_cli(
        &on_sled.data_dir,
        &["db", "copy", "--to", &server.url(), "--json", "--progress"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let refused: serde_json::Value = serde_json::from_str(stderr(&output).trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", stderr(&output)));
    assert_eq!(refused["error"]["exit_code"], 1);
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("copy only into a new, empty database")),
        "{refused}"
    );

    use_database(&on_sled.data_dir, &server.url());
    let tmp = std::mem::replace(&mut on_sled.tmp, tempfile::tempdir().unwrap());
    let on_postgres = Daemon::start_in(tmp, on_sled.data_dir.clone(), &[]);
    let recorded = on_postgres.recorded_serials();
    assert!(recorded.contains(&kept.issued.serial));
    assert!(recorded.contains(&revoked.issued.serial));
    let mut client = on_postgres.client(None).await;
    let status = client.status(&revoked.issued.serial).await.unwrap();
    assert_eq!(status.status, "revoked");
    let (_, crl_number) = client.crl().await.unwrap();
    assert!(
        crl_number > last_crl_number,
        "{crl_number} after {last_crl_number}"
    );
    assert!(crl_lists(&on_postgres, &revoked.issued.serial));
    // The bundle's sequence goes on from the copied one, never below it.
    let copied_bundle_sequence = bundle_sequence(&on_postgres);
    assert!(
        copied_bundle_sequence > last_bundle_sequence,
        "{copied_bundle_sequence} after {last_bundle_sequence}"
    );
    // The unused join token still works, once.
    let key = rcgen::KeyPair::generate().unwrap();
    client
        .issue(csr_for(&key, None, vec![]), &unused)
        .await
        .expect("the copied token works");
    let renewed = on_postgres.renew(Some(&kept)).await.expect("renews");
    assert_eq!(renewed.spiffe_id, kept.issued.spiffe_id);
}

/// The change feed's fallback: with nothing following the feed, a replica
/// learns another's entry and revocation from `Authority::catch_up`, which
/// certd runs every minute.
#[tokio::test(flavor = "multi_thread")]
async fn catching_up_finds_what_the_feed_did_not_bring() {
    use certd::authority::{Caller, TokenFor};
    use certd::registry::EntrySpec;
    let Some(server) = ScratchServer::start_for_tests() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a").join("ca"), tmp.path().join("b"));
    let output = certd(&["init", "--data-dir", dir_a.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Both replicas start from the marks `certd init` wrote (a CA that has
    // used no database yet), which the package carries: the second
    // recognises the store the first claimed as its CA's.
    set_up_replica(&dir_a, &dir_b, &server.url());
    let config = certd::config::ConfigFile::parse(
        &format!("[store]\nurl = {:?}\n", server.url()),
        Path::new("certd.toml"),
    )
    .and_then(|file| file.validate())
    .unwrap();
    let open = async |dir: &Path| {
        certd::daemon::Daemon::new(certd::DataDir::new(dir), config.clone())
            .offline()
            .await
            .unwrap()
    };
    let (a, b) = (open(&dir_a).await, open(&dir_b).await);
    let operator = Caller("test".into());
    let mut known_revoked = None;
    b.catch_up(&mut known_revoked).await.unwrap();

    let spec = EntrySpec {
        service: "billing".into(),
        selectors: vec!["token:billing".into()],
        ..EntrySpec::default()
    };
    a.create_entry(&operator, &spec).await.unwrap();
    let for_billing = TokenFor::Service("billing".into());
    let unknown = b.create_join_tokens(&operator, &for_billing, None, 1).await;
    assert!(unknown.is_err(), "B's index has not heard of the entry yet");

    let key = rcgen::KeyPair::generate().unwrap();
    let issued = a
        .issue_for_operator(
            &operator,
            "billing",
            &csr_for(&key, None, vec![]),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    let (request, _) = certd::revocation::ocsp::request_for(&issued.chain_pem, None).unwrap();
    let status = async |replica: &certd::authority::Authority| {
        let answer = replica.revocations().ocsp(&request).await;
        let response = OcspResponse::from_der(&answer.der).unwrap();
        let bytes = response.response_bytes.unwrap();
        let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
        basic.tbs_response_data.responses[0].cert_status
    };
    assert!(
        matches!(status(&b).await, CertStatus::Good(_)),
        "and B caches it"
    );
    a.revoke(
        &operator,
        &issued.record.serial.to_hex(),
        certd::ca::RevocationReason::KeyCompromise,
    )
    .await
    .unwrap();
    assert!(matches!(status(&b).await, CertStatus::Good(_)), "B's cache");

    b.catch_up(&mut known_revoked).await.unwrap();
    b.create_join_tokens(&operator, &for_billing, None, 1)
        .await
        .expect("B knows the entry now");
    assert!(matches!(status(&b).await, CertStatus::Revoked(_)));
    assert_eq!(
        b.revocations().crl_number(),
        a.revocations().crl_number(),
        "B serves the CRL A published"
    );
}

/// TLS to the database is rustls, and it verifies the server: certd runs
/// on a PostgreSQL that requires TLS when `[store] ca_file` names the CA
/// that signed the server's certificate, and refuses to start, naming the
/// reason, when it does not.
#[tokio::test(flavor = "multi_thread")]
async fn tls_to_the_database_is_verified() {
    // A database CA and a server certificate for localhost.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let Some(database) =
        (match ScratchServer::start_with_tls(&server.pem(), &server_key.serialize_pem()) {
            Ok(database) => Some(database),
            Err(reason) if std::env::var_os("CERTD_REQUIRE_POSTGRES").is_some() => {
                panic!("CERTD_REQUIRE_POSTGRES is set, but PostgreSQL cannot start: {reason}")
            }
            Err(reason) => {
                eprintln!("SKIPPED: a PostgreSQL test, because PostgreSQL cannot start: {reason}");
                None
            }
        })
    else {
        return;
    };
    let url = database.tls_url().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("database-ca.pem"), ca.pem()).unwrap();
    let other_ca_key = rcgen::KeyPair::generate().unwrap();
    let other_ca = ca_params.self_signed(&other_ca_key).unwrap();
    std::fs::write(tmp.path().join("other-ca.pem"), other_ca.pem()).unwrap();
    for (name, ca_file) in [("right", "database-ca.pem"), ("wrong", "other-ca.pem")] {
        std::fs::write(
            tmp.path().join(format!("{name}.toml")),
            format!("[store]\nurl = {url:?}\nca_file = {ca_file:?}\n"),
        )
        .unwrap();
    }

    // The wrong roots: refused before serving, with the reason.
    let data_dir = tmp.path().join("ca");
    let output = common::serve_command(&data_dir)
        .arg("--config")
        .arg(tmp.path().join("wrong.toml"))
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let said = stderr(&output);
    assert!(
        said.contains("cannot open the database") && said.contains("invalid peer certificate"),
        "{said}"
    );

    // The right ones: it serves, and issues.
    let config = tmp.path().join("right.toml").display().to_string();
    let tmp_daemon = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(tmp_daemon, data_dir, &["--config", &config]);
    daemon.entry("billing", &["token:billing"], &[]);
    let identity = daemon.bootstrap("billing").await;
    assert!(daemon.recorded_serials().contains(&identity.issued.serial));
}

/// The intermediate rotates on two replicas: prepared where the root key
/// is (A's data directory), promoted by A, and brought to B by exporting
/// A's files again and importing them into B while it runs. Both then sign
/// with the new intermediate, and both keep answering for certificates of
/// the previous one, including a revocation made through the other replica.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_rotate_the_intermediate_together() {
    let Some((a, b, server)) = replicas() else {
        return;
    };
    let before = a.bootstrap("billing").await;
    let old_intermediate = std::fs::read_to_string(a.data_dir.join("intermediate.pem")).unwrap();

    let output = a.cli(&["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    promoted(&a).await;
    let said = set_up_replica(&a.data_dir, &b.data_dir, &server.url());
    assert!(said.contains("updated the replica"), "{said}");
    promoted(&b).await;
    let new_intermediate = std::fs::read_to_string(a.data_dir.join("intermediate.pem")).unwrap();
    assert_ne!(new_intermediate, old_intermediate);
    let issuer_of = |chain_pem: &str| common::pem_certs(chain_pem)[1].to_vec();
    let on_b = b.bootstrap("orders").await;
    assert_eq!(
        issuer_of(&on_b.chain_pem),
        common::pem_certs(&new_intermediate)[0].to_vec()
    );
    let renewed = a.renew(Some(&before)).await.expect("renew on A");
    assert_eq!(
        issuer_of(&renewed.chain_pem),
        common::pem_certs(&new_intermediate)[0].to_vec()
    );
    assert_eq!(
        issuer_of(&before.chain_pem),
        common::pem_certs(&old_intermediate)[0].to_vec()
    );

    // Both answer for the previous intermediate's certificate; a revocation
    // through A reaches B's answer and B's CRL for that intermediate.
    for replica in [&a, &b] {
        assert!(matches!(
            ocsp_status(replica, &before.chain_pem),
            CertStatus::Good(_)
        ));
        assert!(matches!(
            ocsp_status(replica, &on_b.chain_pem),
            CertStatus::Good(_)
        ));
    }
    let output = a.cli(&["revoke", &before.issued.serial, "--reason", "superseded"]);
    assert!(output.status.success(), "{}", stderr(&output));
    within_limit(
        "a revocation of the previous intermediate's certificate in OCSP",
        async || matches!(ocsp_status(&b, &before.chain_pem), CertStatus::Revoked(_)),
    )
    .await;
    let old_key_id =
        hex::encode(certd::ca::subject_key_id(&common::pem_certs(&old_intermediate)[0]).unwrap());
    within_limit(
        "a revocation in the previous intermediate's CRL",
        async || {
            let crl = http("GET", &format!("{}/crl/{old_key_id}", b.http), &[], b"");
            assert_eq!(crl.status, 200);
            let (_, crl) = x509_parser::parse_x509_crl(&crl.body).unwrap();
            crl.iter_revoked_certificates()
                .any(|revoked| hex::encode(revoked.raw_serial()) == before.issued.serial)
        },
    )
    .await;
}

/// A replica set up with `certd replica export|import` serves what the
/// primary serves after an intermediate rotation where the CA lives: the
/// root's CRL (`/root.crl`, and `/crls.pem` with the CRLs of both
/// intermediates), OCSP answers for the previous intermediate's
/// certificates (not `unauthorized`), and their chain in `certd show
/// --json`. Checked on a replica brought up to date by importing again
/// while it runs (B) and on one set up after the rotation (C); neither
/// holds the root key, and the keys and the database URL are 0600 in a
/// 0700 directory.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_set_up_with_the_commands_serve_all_the_primary_serves_after_a_rotation() {
    let Some((a, b, server)) = replicas() else {
        return;
    };
    let before = a.bootstrap("billing").await;
    let intermediate_of = |dir: &Path| {
        common::pem_certs(&std::fs::read_to_string(dir.join("intermediate.pem")).unwrap())[0]
            .to_vec()
    };
    let old_intermediate = intermediate_of(&a.data_dir);
    let output = a.cli(&["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    promoted(&a).await;
    let new_intermediate = intermediate_of(&a.data_dir);

    let said = set_up_replica(&a.data_dir, &b.data_dir, &server.url());
    assert!(said.contains("intermediate-previous.pem"), "{said}");
    promoted(&b).await;
    let tmp_c = tempfile::tempdir().unwrap();
    let dir_c = tmp_c.path().join("ca");
    let said = set_up_replica(&a.data_dir, &dir_c, &server.url());
    assert!(
        said.contains("set up a replica of trust domain certd.internal"),
        "{said}"
    );
    let c = Daemon::start_in(tmp_c, dir_c, &[]);

    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for replica in [&b, &c] {
        let root_crl = http("GET", &format!("{}/root.crl", replica.http), &[], b"");
        assert_eq!(
            root_crl.status,
            200,
            "{}",
            String::from_utf8_lossy(&root_crl.body)
        );
        let crls = http("GET", &format!("{}/crls.pem", replica.http), &[], b"");
        assert_eq!(crls.status, 200, "{}", String::from_utf8_lossy(&crls.body));
        let crls = String::from_utf8(crls.body).unwrap();
        assert_eq!(
            crls.matches("-----BEGIN X509 CRL-----").count(),
            3,
            "the root's and both intermediates' CRLs: {crls}"
        );

        assert!(matches!(
            ocsp_status(replica, &before.chain_pem),
            CertStatus::Good(_)
        ));
        let output = replica.cli(&["show", &before.issued.serial, "--json"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let chain = common::pem_certs(shown["chain_pem"].as_str().unwrap());
        assert_eq!(chain.len(), 2);
        assert_eq!(
            chain[1].to_vec(),
            old_intermediate,
            "the chain names the previous intermediate"
        );

        let issued = replica.bootstrap("orders").await;
        assert_eq!(
            common::pem_certs(&issued.chain_pem)[1].to_vec(),
            new_intermediate
        );
        let dir = &replica.data_dir;
        assert!(!dir.join("root.key").exists(), "{dir:?}");
        assert_eq!(mode(dir), 0o700);
        for secret in [
            "intermediate.key",
            "intermediate-previous.key",
            "jwt-master.key",
            "database.toml",
        ] {
            assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
        }
        assert_eq!(intermediate_of(dir), new_intermediate);
    }
}

/// On PostgreSQL, `certd db backup` (through the daemon or `--offline`)
/// and `db restore` say to use PostgreSQL's own tools, with exit code 1
/// (failed precondition), instead of "internal error"; `db check` checks
/// the shared database against the data directory's marks while the
/// replicas serve, and names a shortfall.
#[tokio::test(flavor = "multi_thread")]
async fn db_commands_on_postgresql_say_what_to_use_or_check_the_shared_database() {
    let Some((a, b, server)) = replicas() else {
        return;
    };
    a.bootstrap("billing").await;
    let backup = b.tmp.path().join("certd.backup");
    let backup_arg = backup.to_str().unwrap();
    for args in [
        vec!["db", "backup", backup_arg],
        vec!["db", "backup", backup_arg, "--offline"],
        vec!["db", "restore", backup_arg],
    ] {
        let output = b.cli(&args);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("PostgreSQL's own tools (pg_dump") && !said.contains("internal error"),
            "{args:?}: {said}"
        );
        assert!(!backup.exists() && !backup.with_extension("backup.partial").exists());
    }

    for replica in [&a, &b] {
        let output = replica.cli(&["db", "check"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let said = stdout(&output);
        assert!(said.contains("(PostgreSQL, schema version"), "{said}");
        assert!(
            said.contains(" certificates (0 revoked), 1 entries"),
            "{said}"
        );
        assert!(
            said.contains("\nok; PostgreSQL checks its own storage"),
            "{said}"
        );
    }

    // A data directory of the CA whose marks say more than the database
    // holds.
    let elsewhere = tempfile::tempdir().unwrap();
    let marks = std::fs::read_to_string(b.data_dir.join("store-marks.toml")).unwrap();
    let marks: String = marks
        .lines()
        .map(|line| {
            if line.starts_with("crl_number") {
                "crl_number = 1000000\n".to_owned()
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(elsewhere.path().join("store-marks.toml"), marks).unwrap();
    std::fs::copy(
        b.data_dir.join("root.pem"),
        elsewhere.path().join("root.pem"),
    )
    .unwrap();
    let dir = elsewhere.path().to_str().unwrap();
    let output = certd(&[
        "db",
        "check",
        "--data-dir",
        dir,
        "--database-url",
        &server.url(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("where 1000000 was already published"),
        "{}",
        stderr(&output)
    );
}

/// The package carries the store marks that name the replicas' database:
/// a replica set up from it but pointed at another database (here another
/// CA's, already in use) refuses to serve from it, in one line.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_pointed_at_another_database_refuses_it() {
    let Some((a, _b, _server)) = replicas() else {
        return;
    };
    let Some(other) = ScratchServer::start_for_tests() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("ca");
    use_database(&elsewhere, &other.url());
    drop(Daemon::start_in(tmp, elsewhere, &[]));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    set_up_replica(&a.data_dir, &dir, &other.url());
    let output = common::serve_command(&dir).output().unwrap();
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("it is another database (store id"), "{said}");
}

/// Federation on replicas of one database: both serve certd's bundle with
/// one `spiffe_sequence` (stored, so they number one content alike); a
/// relationship added through one replica is listed, with its bundle,
/// through the other; removed through the other, it is gone from both.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_federation_relationships_and_the_bundle_sequence() {
    let Some((a, b, _server)) = replicas() else {
        return;
    };
    let sequence = |replica: &Daemon| {
        let answer = http("GET", &format!("{}/bundle.spiffe", replica.http), &[], b"");
        let bundle: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        bundle["spiffe_sequence"].as_u64().unwrap()
    };
    assert_eq!(sequence(&a), sequence(&b), "one number for one bundle");

    let partner = tempfile::tempdir().unwrap();
    let partner_dir = partner.path().join("ca");
    let output = common::run_cli(&partner_dir, &["init", "--trust-domain", "partner.example"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = a.cli(&[
        "federation",
        "add",
        "partner.example",
        "--bundle-endpoint",
        "https://127.0.0.1:1/bundle.spiffe",
        "--profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        "spiffe://partner.example/certd/server",
        "--trust-bundle-file",
        partner_dir.join("bundle.pem").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&b.cli(&[
        "federation",
        "show",
        "partner.example",
        "--json",
    ])))
    .unwrap();
    assert_eq!(shown["profile"], "https_spiffe");
    assert_eq!(shown["bundle"]["sequence"], 0);
    let output = b.cli(&["federation", "remove", "partner.example"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = a.cli(&["federation", "show", "partner.example"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
}
