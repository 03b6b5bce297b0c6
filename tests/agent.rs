//! The node agent end to end: the real daemon and the real `certd agent` on
//! loopback, with unmodified SPIFFE clients (the `spiffe` crate) on the
//! agent's socket in a temp dir, attested by the kernel as this test
//! process (its uid).

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certd::api::client::{TlsClientSettings, WorkloadClient};
use common::agent::{Agent, InProcessAgent, raw_client, raw_client_when_admitted};
use common::{Daemon, provider, stderr, stdout};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use spiffe::{WorkloadApiClient, X509Source};
use x509_parser::prelude::{FromDer, X509Certificate};

const TRUST_DOMAIN: &str = "certd.internal";

fn agent_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/agent/{name}")
}

/// A workload entry for this process's uid, parented to agent `node`.
fn workload_entry(daemon: &Daemon, service: &str, node: &str, extra: &[&str]) -> String {
    let uid = format!("unix:uid:{}", common::current_uid());
    let parent = agent_id(node);
    let mut args = vec!["--parent", parent.as_str()];
    args.extend(extra);
    daemon.entry(service, &[&uid], &args)
}

/// The serial and notAfter of a DER certificate.
fn serial_and_expiry(der: &[u8]) -> (String, i64) {
    let (_, certificate) = X509Certificate::from_der(der).unwrap();
    (
        certificate.raw_serial_as_string(),
        certificate.validity().not_after.timestamp(),
    )
}

/// A client of certd presenting `identity` (chain and key, PEM).
async fn client_as(daemon: &Daemon, identity: (String, String)) -> WorkloadClient {
    let tls = TlsClientSettings {
        ca_bundle_pem: daemon.bundle_pem(),
        identity: Some((identity.0, identity.1.into())),
    };
    WorkloadClient::connect(&daemon.grpc, &tls).await.unwrap()
}

fn fresh_csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    common::csr_for(&key, None, Vec::new())
}

fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn source(endpoint: String) -> X509Source {
    tokio::time::timeout(
        Duration::from_secs(20),
        X509Source::builder().endpoint(endpoint).build(),
    )
    .await
    .expect("the X509Source synced in time")
    .expect("an X509Source from the agent")
}

/// A TLS handshake in which both sides use only what the Workload API
/// gave them: their SVID and the bundle.
async fn mutual_tls_handshake(
    server: &spiffe::X509Svid,
    client: &spiffe::X509Svid,
    bundle: &[CertificateDer<'static>],
) {
    let chain = |svid: &spiffe::X509Svid| -> Vec<CertificateDer<'static>> {
        svid.cert_chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_ref().to_vec()))
            .collect()
    };
    let key = |svid: &spiffe::X509Svid| -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            svid.private_key().as_ref().to_vec(),
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for root in bundle {
        roots.add(root.clone()).unwrap();
    }
    let roots = Arc::new(roots);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(server), key(server))
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain(client), key(client))
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor
            .accept(tcp)
            .await
            .expect("server side of the handshake");
        let (_, session) = tls.get_ref();
        session.peer_certificates().map(|c| c.len())
    });
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from(format!("billing.{TRUST_DOMAIN}")).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(client_config))
        .connect(name, tcp)
        .await
        .expect("client side of the handshake");
    assert!(
        serving.await.unwrap().is_some(),
        "the server saw the client's SVID"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_spiffe_client_gets_its_svid_and_it_rotates_on_the_stream() {
    let daemon = Daemon::start();
    // Registered before the agent starts, so its first sync serves it.
    workload_entry(&daemon, "billing", "node-1", &["--ttl", "20s"]);
    // In this process, on a clock the test moves.
    let agent = InProcessAgent::start(&daemon, "node-1").await;

    let source = source(agent.endpoint()).await;
    let mut updates = source.updated();
    let svid = source.svid().expect("an SVID");
    assert_eq!(
        svid.spiffe_id().to_string(),
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    assert_eq!(svid.cert_chain().len(), 2, "leaf and intermediate");
    let bundles = source.bundle_set().expect("bundles");
    let trust_domain = spiffe::TrustDomain::new(TRUST_DOMAIN).unwrap();
    let bundle: Vec<CertificateDer<'static>> = bundles
        .get(&trust_domain)
        .expect("the trust domain's bundle")
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_ref().to_vec()))
        .collect();
    assert_eq!(bundle, common::pem_certs(&daemon.bundle_pem()));

    // Two workloads (both this process) using only what the API gave.
    let other = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap()
        .fetch_x509_svid()
        .await
        .unwrap();
    mutual_tls_handshake(&svid, &other, &bundle).await;

    // Rotation: the same stream delivers a new SVID before the old one
    // expires, without the client reconnecting. Past half its life on the
    // agent's clock, the SVID is due.
    let (first_serial, first_not_after) = serial_and_expiry(svid.leaf().as_ref());
    // Not before half its life: a few syncs (one a second) pass with no
    // new SVID.
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), updates.changed())
            .await
            .is_err(),
        "renewed before half its life"
    );
    agent.advance(Duration::from_secs(11));
    tokio::time::timeout(Duration::from_secs(20), updates.changed())
        .await
        .expect("a rotation within 20 s")
        .unwrap();
    let rotated = source.svid().unwrap();
    let (serial, _) = serial_and_expiry(rotated.leaf().as_ref());
    assert_ne!(serial, first_serial);
    assert!(
        unix_now() < first_not_after,
        "rotated before the old SVID expired"
    );
    assert_eq!(rotated.spiffe_id(), svid.spiffe_id());

    // certd recorded it, issued through the agent and audited as the agent.
    let audit = stdout(&daemon.cli(&["audit", "--json"]));
    assert!(
        audit.contains(&agent_id("node-1")) && audit.contains("\"attestation\":\"agent\""),
        "{audit}"
    );
}

/// While certd is down the agent serves the SVIDs it holds and says it
/// cannot sync; once certd is back, it renews them when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_its_cache_while_certd_is_down_and_recovers() {
    let mut daemon = Daemon::start();
    // Long enough to outlive the outage on the agent's moved clock.
    workload_entry(&daemon, "billing", "node-1", &["--ttl", "60s"]);
    let agent = Agent::start_registered(&daemon, "node-1", &["--metrics-addr", "127.0.0.1:0"]);
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let before = client.fetch_x509_svid().await.unwrap();

    daemon.terminate();
    // Until the agent has tried certd and failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while agent
        .metric("certd_agent_syncs_total{outcome=\"failed\"}")
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed sync:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = client
        .fetch_x509_svid()
        .await
        .expect("served from the cache");
    assert_eq!(during.leaf().as_ref(), before.leaf().as_ref());
    assert!(agent.logged_soon("cannot sync with certd"));

    daemon.restart_on_same_port();
    // Past half the SVID's life on the agent's clock: it is due.
    agent.advance(Duration::from_secs(31));
    let (serial, _) = serial_and_expiry(before.leaf().as_ref());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = client.fetch_x509_svid().await.unwrap();
        if serial_and_expiry(now.leaf().as_ref()).0 != serial {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new SVID after certd came back:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_and_agents_get_only_what_is_theirs() {
    let daemon = Daemon::start();
    // On node A, only another uid is registered; on node B, this one.
    // (Registered before the agents start, so their first sync has them.)
    daemon.entry(
        "other",
        &["unix:uid:4242"],
        &["--parent", &agent_id("node-a")],
    );
    let on_b = workload_entry(&daemon, "billing", "node-b", &[]);
    let node_a = Agent::start(&daemon, "node-a");
    let node_b = Agent::start(&daemon, "node-b");

    // A uid with no entry on its node gets PermissionDenied.
    let on_a = WorkloadApiClient::connect_to(node_a.endpoint())
        .await
        .unwrap();
    match on_a.fetch_x509_svid().await {
        Err(spiffe::WorkloadApiError::PermissionDenied(message)) => {
            assert!(message.contains("no registration entry"), "{message}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }

    // Without the security header: InvalidArgument.
    let mut raw = raw_client(&node_b.socket).await;
    let status = raw
        .fetch_x509svid(certd::agent::proto::X509svidRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("workload.spiffe.io"));
    // With it, node B answers: a JWT-SVID for an audience the entry does
    // not allow is refused by certd, and the refusal passed on.
    let mut request = tonic::Request::new(certd::agent::proto::JwtsvidRequest {
        audience: vec!["x".into()],
        spiffe_id: String::new(),
    });
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let status = raw.fetch_jwtsvid(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("is not allowed"), "{status:?}");

    // Agent A, with its own certificate, asks certd for B's entry: refused.
    let mut client_a = client_as(&daemon, node_a.identity()).await;
    let csr = fresh_csr();
    let (kind, message) = common::refusal(client_a.issue_for_agent(&on_b, csr).await);
    assert_eq!(kind, certd::ErrorKind::PermissionDenied);
    assert!(message.contains("not parented to agent"), "{message}");
    // And sees only its own entries.
    let listed = client_a.agent_entries().await.unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].selectors, ["unix:uid:4242"]);

    // A workload's SVID cannot renew behind its agent's back.
    let billing = WorkloadApiClient::connect_to(node_b.endpoint())
        .await
        .unwrap()
        .fetch_x509_svid()
        .await
        .unwrap();
    let billing_identity = (
        billing
            .cert_chain()
            .iter()
            .map(|c| to_pem("CERTIFICATE", c.as_ref()))
            .collect::<String>(),
        to_pem("PRIVATE KEY", billing.private_key().as_ref()),
    );
    let mut client_billing = client_as(&daemon, billing_identity).await;
    let (kind, message) = common::refusal(client_billing.renew(fresh_csr()).await);
    assert_eq!(kind, certd::ErrorKind::PermissionDenied);
    assert!(message.contains("issued through node agent"), "{message}");

    // An ordinary workload certificate is not an agent's.
    let workload = daemon.bootstrap("payments").await;
    let (kind, _) = common::refusal(daemon.client(Some(&workload)).await.agent_entries().await);
    assert_eq!(kind, certd::ErrorKind::PermissionDenied);

    // Deleting the entry stops its SVID at the next sync: the open stream
    // ends with PermissionDenied.
    let stream_client = WorkloadApiClient::connect_to(node_b.endpoint())
        .await
        .unwrap();
    let mut stream = stream_client.stream_x509_svids().await.unwrap();
    use tokio_stream::StreamExt;
    assert!(stream.next().await.unwrap().is_ok());
    let output = daemon.cli(&["entry", "delete", &on_b]);
    assert!(output.status.success(), "{}", stderr(&output));
    let ended = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("the stream heard of the deletion");
    assert!(
        matches!(
            ended,
            Some(Err(spiffe::WorkloadApiError::PermissionDenied(_)))
        ),
        "{ended:?}"
    );

    // A revoked agent certificate gets nothing from certd.
    let agent_leaf = common::pem_certs(&node_a.identity().0).remove(0);
    let (serial, _) = serial_and_expiry(&agent_leaf);
    let output = daemon.cli(&["revoke", &serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (kind, message) = common::refusal(client_a.agent_entries().await);
    assert_eq!(kind, certd::ErrorKind::Unauthenticated, "{message}");
    assert!(message.contains("revoked"), "{message}");
}

#[test]
fn entries_for_agents_and_through_agents_are_checked() {
    let daemon = Daemon::start();
    let refused = |args: &[&str], says: &str| {
        let mut all = vec!["entry", "create"];
        all.extend(args);
        let output = daemon.cli(&all);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{all:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{all:?}: {}",
            stderr(&output)
        );
    };
    refused(
        &["--service", "web", "--selector", "unix:uid:1000"],
        "proven only by a node agent",
    );
    refused(
        &[
            "--service",
            "web",
            "--selector",
            "token:web",
            "--parent",
            &agent_id("node-1"),
        ],
        "only unix: selectors",
    );
    refused(
        &[
            "--service",
            "web",
            "--selector",
            "unix:uid:1",
            "--parent",
            "spiffe://certd.internal/svc/web",
        ],
        "not a node agent's SPIFFE ID",
    );
    refused(
        &[
            "--service",
            "web",
            "--selector",
            "token:web",
            "--spiffe-id",
            &agent_id("web"),
        ],
        "only node agents' entries",
    );
    // The same selectors under two agents are two workloads.
    for node in ["node-1", "node-2"] {
        daemon.entry("web", &["unix:uid:1000"], &["--parent", &agent_id(node)]);
    }
    let listed = stdout(&daemon.cli(&["entry", "list", "--json"]));
    assert!(
        listed.contains(&format!("\"parent_id\":\"{}\"", agent_id("node-2"))),
        "{listed}"
    );
    let agent = daemon.entry("node-1", &["token:node-1"], &["--agent"]);
    let listed = stdout(&daemon.cli(&["entry", "list", "--json"]));
    assert!(
        listed.contains(&format!("\"spiffe_id\":\"{}\"", agent_id("node-1"))),
        "{listed}"
    );
    assert!(listed.contains(&agent));
}

/// `certd svid fetch` as this test's user, into the daemon's temp dir.
fn svid_fetch(daemon: &Daemon, agent: &Agent) -> std::process::Output {
    let out = daemon.tmp.path().join("svid");
    daemon.cli(&[
        "svid",
        "fetch",
        "--socket",
        agent.socket.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

/// `certd svid fetch` as user `nobody` (through `setpriv`), on `socket`.
fn fetch_as_nobody(socket: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        .arg(common::CERTD)
        .args(["svid", "fetch", "--socket"])
        .arg(socket)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run setpriv (util-linux)")
}

/// Opens the directories on the way to `path` to every user (the test's
/// temp dirs are 0700), as /run/certd is on a real node.
fn open_path_to(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for dir in path.ancestors().skip(1) {
        if dir.starts_with(std::env::temp_dir()) && dir != std::env::temp_dir() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_huge_messages_and_vanishing_workloads_leave_other_users_served() {
    let daemon = Daemon::start();
    workload_entry(&daemon, "billing", "node-1", &[]);
    daemon.entry(
        "reports",
        &["unix:uid:65534"],
        &["--parent", &agent_id("node-1")],
    );
    let agent = Agent::start_registered(
        &daemon,
        "node-1",
        &[
            "--max-connections-per-uid",
            "8",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    open_path_to(&agent.socket);
    let out = daemon.tmp.path().join("nobody-svid");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    // This uid opens far more connections than its share and sends nothing.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(
            tokio::net::UnixStream::connect(&agent.socket)
                .await
                .unwrap(),
        );
    }
    // Until the agent has refused one of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while agent
        .metric("certd_agent_workload_api_connections_refused_total{cap=\"max_per_uid\"}")
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(agent.logged_soon("connection cap reached"));
    // Another user is still served, by the kernel's word alone.
    let output = fetch_as_nobody(&agent.socket, &out);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&format!("spiffe://{TRUST_DOMAIN}/svc/reports")),
        "{}",
        stdout(&output)
    );
    let key_mode = std::fs::metadata(out.join("svid.key"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    let (verified, text) = common::openssl(&[
        "verify",
        "-CAfile",
        out.join("bundle.pem").to_str().unwrap(),
        "-untrusted",
        out.join("svid.pem").to_str().unwrap(),
        out.join("svid.pem").to_str().unwrap(),
    ]);
    assert!(verified, "{text}");

    // Workloads that vanish mid-call, and one that sends a huge message.
    drop(flood);
    for _ in 0..50 {
        let mut raw = raw_client_when_admitted(&agent.socket).await;
        let call = tokio::spawn(async move {
            let mut request = tonic::Request::new(certd::agent::proto::X509svidRequest {});
            request
                .metadata_mut()
                .insert("workload.spiffe.io", "true".parse().unwrap());
            raw.fetch_x509svid(request).await.map(|_| ())
        });
        call.abort();
    }
    // Retried while the agent refuses connections at the cap (a refused
    // connection is closed before any answer: a transport error).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let mut raw = raw_client_when_admitted(&agent.socket).await;
        let mut huge = tonic::Request::new(certd::agent::proto::JwtsvidRequest {
            audience: vec!["a".repeat(1024 * 1024)],
            spiffe_id: String::new(),
        });
        huge.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        let status = raw.fetch_jwtsvid(huge).await.unwrap_err();
        let refused_at_cap = std::error::Error::source(&status).is_some();
        if !refused_at_cap || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    // After all that, this uid is served again (once the agent has seen
    // its closed connections go), and the agent stayed small.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let svid = loop {
        let fetched = match WorkloadApiClient::connect_to(agent.endpoint()).await {
            Ok(client) => client.fetch_x509_svid().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match fetched {
            Ok(svid) => break svid,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "not served after the flood: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        svid.spiffe_id().to_string(),
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rss_kib < 256 * 1024, "agent RSS {rss_kib} KiB");
}

/// `certd bench workload-api` measures the agent's first answers as real
/// workloads see them, and checks every one.
#[test]
fn bench_measures_the_workload_api() {
    let daemon = Daemon::start();
    workload_entry(&daemon, "billing", "node-1", &[]);
    let agent = Agent::start(&daemon, "node-1");
    let output = daemon.cli(&[
        "bench",
        "workload-api",
        "--socket",
        agent.socket.to_str().unwrap(),
        "--concurrency",
        "4",
        "--count",
        "40",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["op"], "workload-api");
    assert_eq!(summary["ok"], 40, "{text}");
    assert_eq!(summary["errors"], 0, "{text}");
    assert!(summary["p99_ms"].as_f64().unwrap() > 0.0, "{text}");
}

/// An entry may require the workload's executable, by path and by content
/// (SHA-256), besides its uid; another executable of the same uid is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_can_require_the_executable_path_and_hash() {
    use sha2::Digest;
    let daemon = Daemon::start();
    let me = std::env::current_exe().unwrap();
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&me).unwrap()));
    let uid = format!("unix:uid:{}", common::current_uid());
    let path = format!("unix:path:{}", me.display());
    let hash = format!("unix:sha256:{digest}");
    let parent = agent_id("node-1");
    daemon.entry("billing", &[&uid, &path, &hash], &["--parent", &parent]);
    let agent = Agent::start(&daemon, "node-1");

    let svid = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap()
        .fetch_x509_svid()
        .await
        .expect("this executable matches");
    assert_eq!(
        svid.spiffe_id().to_string(),
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    // The certd binary, run as the same uid, is another executable.
    let output = svid_fetch(&daemon, &agent);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no registration entry"),
        "{}",
        stderr(&output)
    );
}

/// What the SPIFFE standard promises a workload: `SPIFFE_ENDPOINT_SOCKET`
/// and nothing else. The test binary runs itself as the workload, with only
/// that variable set, and an unmodified `X509Source::new()`.
#[test]
fn spiffe_endpoint_socket_alone_is_enough() {
    let daemon = Daemon::start();
    workload_entry(&daemon, "billing", "node-1", &[]);
    let agent = Agent::start(&daemon, "node-1");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "workload_from_the_environment",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env_clear()
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!("workload got spiffe://{TRUST_DOMAIN}/svc/billing")),
        "{text}"
    );
}

#[tokio::test]
#[ignore = "the workload that spiffe_endpoint_socket_alone_is_enough runs, with the agent's socket in its environment"]
async fn workload_from_the_environment() {
    let source = X509Source::new()
        .await
        .expect("an X509Source from SPIFFE_ENDPOINT_SOCKET");
    let svid = source.svid().expect("an SVID");
    println!("workload got {}", svid.spiffe_id());
}

/// JWT-SVIDs through the agent: an unmodified `JwtSource` fetches one, a
/// standard JWT library verifies it against certd's `/jwks.json`, and the
/// agent's `ValidateJWTSVID` accepts it for its audience only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_jwt_svids_their_keys_and_validation() {
    let daemon = Daemon::start();
    workload_entry(&daemon, "billing", "node-1", &["--jwt-audience", "gateway"]);
    let agent = Agent::start(&daemon, "node-1");

    let source = tokio::time::timeout(
        Duration::from_secs(20),
        spiffe::JwtSource::builder()
            .endpoint(agent.endpoint())
            .build(),
    )
    .await
    .expect("the JwtSource synced in time")
    .expect("a JwtSource from the agent");
    let svid = source
        .fetch_jwt_svid(["gateway"])
        .await
        .expect("a JWT-SVID");
    assert_eq!(
        svid.spiffe_id().to_string(),
        format!("spiffe://{TRUST_DOMAIN}/svc/billing")
    );
    let token = svid.token().to_owned();
    // The JwtSource holds the trust domain's JWT keys, from the agent.
    let trust_domain = spiffe::TrustDomain::new(TRUST_DOMAIN).unwrap();
    assert!(source.try_bundle_for_trust_domain(&trust_domain).is_some());

    // A standard library, with only /jwks.json.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(
        &common::http("GET", &format!("{}/jwks.json", daemon.http), &[], b"").body,
    )
    .unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["gateway"]);
    jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();

    // The agent validates for the right audience, and refuses any other.
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let validated = client.validate_jwt_token("gateway", &token).await.unwrap();
    assert_eq!(validated.spiffe_id(), svid.spiffe_id());
    assert!(client.validate_jwt_token("payments", &token).await.is_err());
    assert!(
        client
            .validate_jwt_token("gateway", "not.a.token")
            .await
            .is_err()
    );
    // An audience the entry does not allow: refused.
    assert!(source.fetch_jwt_svid(["payments"]).await.is_err());
    let audit = stdout(&daemon.cli(&["audit", "--json"]));
    assert!(audit.contains("\"event\":\"mint-jwt\""), "{audit}");
    assert!(audit.contains(&agent_id("node-1")), "{audit}");
}

/// The agent attests itself with a Kubernetes service-account token
/// (`--k8s-token-file`) as well as with a join token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_bootstraps_with_a_kubernetes_token() {
    use common::k8s_issuer::{ISSUER, claims, es256, jwks};
    let tmp = tempfile::tempdir().unwrap();
    let issuer_key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(tmp.path().join("jwks.json"), jwks(&[&issuer_key])).unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        format!("[kubernetes]\nissuer = \"{ISSUER}\"\njwks_file = \"jwks.json\"\n"),
    )
    .unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, es256(&issuer_key, &claims())).unwrap();
    let data_dir = tmp.path().join("ca");
    let daemon = Daemon::start_in(tmp, data_dir, &["--config", config.to_str().unwrap()]);
    // The node's pod runs as payments/billing in the test cluster's claims.
    daemon.entry(
        "node-1",
        &["k8s:ns:payments", "k8s:sa:billing"],
        &["--agent"],
    );
    workload_entry(&daemon, "reports", "node-1", &[]);
    let agent = Agent::start_with(
        &daemon,
        "node-1",
        None,
        &["--k8s-token-file", token_file.to_str().unwrap()],
    );
    let svid = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap()
        .fetch_x509_svid()
        .await
        .expect("an SVID through an agent attested by Kubernetes");
    assert_eq!(
        svid.spiffe_id().to_string(),
        format!("spiffe://{TRUST_DOMAIN}/svc/reports")
    );
    let (chain, _) = agent.identity();
    let agent_leaf = common::pem_certs(&chain).remove(0);
    let (_, certificate) = X509Certificate::from_der(&agent_leaf).unwrap();
    let uris: Vec<String> = certificate
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert!(
        uris.iter().any(|u| u.contains(&agent_id("node-1"))),
        "{uris:?}"
    );
}

/// The agent's `--metrics-addr`: Prometheus metrics that count what the
/// Workload API answered and describe the cache, and health endpoints for
/// a DaemonSet's probes.
#[test]
fn the_agent_serves_metrics_and_health() {
    let daemon = Daemon::start();
    workload_entry(&daemon, "billing", "node-1", &[]);
    let agent = Agent::start_registered(&daemon, "node-1", &["--metrics-addr", "127.0.0.1:0"]);
    let metrics = agent
        .metrics_url
        .clone()
        .expect("the ready line names the metrics URL");

    let output = svid_fetch(&daemon, &agent);
    assert!(output.status.success(), "{}", stderr(&output));
    // Another user has no entry: refused.
    open_path_to(&agent.socket);
    let refused = fetch_as_nobody(&agent.socket, &daemon.tmp.path().join("nobody"));
    assert!(!refused.status.success());

    let scrape = common::http("GET", &format!("{metrics}/metrics"), &[], b"");
    assert_eq!(scrape.status, 200);
    let text = String::from_utf8_lossy(&scrape.body).into_owned();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("certd_agent_workload_api_calls_total{method=\"FetchX509SVID\",code=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(
            "certd_agent_workload_api_calls_total{method=\"FetchX509SVID\",code=\"permission_denied\"}"
        ),
        1.0
    );
    assert_eq!(value("certd_agent_entries"), 1.0);
    assert_eq!(value("certd_agent_svids"), 1.0);
    assert!(value("certd_agent_syncs_total{outcome=\"ok\"}") >= 1.0);
    // Both certificates are fresh: most of a day left.
    assert!(value("certd_agent_identity_expiry_seconds") > 20.0 * 3600.0);
    assert!(value("certd_agent_svid_earliest_expiry_seconds") > 20.0 * 3600.0);
    assert!((0.0..60.0).contains(&value("certd_agent_seconds_since_last_sync")));
    assert!(text.ends_with("# EOF\n"));

    for path in ["/healthz", "/readyz"] {
        let answer = common::http("GET", &format!("{metrics}{path}"), &[], b"");
        assert_eq!(answer.status, 200, "{path}");
    }
}
