//! CA rotation without downtime, as operators and relying parties see it:
//! `certd ca rotate-intermediate` beside a running daemon under load, and
//! OpenSSL checking certificates from before and after it (chains, CRLs
//! from the URLs in the leaves and `/crls.pem`, OCSP).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::in_process::InProcess;
use common::{Daemon, Identity, http, openssl, stderr, stdout};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The value of the first line of `openssl x509 -text` starting with
/// `prefix` (after trimming).
fn x509_field(certificate: &str, prefix: &str) -> String {
    let (_, text) = openssl(&["x509", "-noout", "-text", "-in", certificate]);
    text.lines()
        .find_map(|line| line.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {certificate}: {text}"))
        .to_owned()
}

/// The CRL distribution point of a certificate.
fn crl_url(certificate: &str) -> String {
    format!("http{}", x509_field(certificate, "URI:http"))
}

/// How often certd looks for a prepared intermediate (`server.rs`).
const ROTATION_POLL: Duration = Duration::from_secs(5);

/// Has the daemon look now (SIGHUP) and waits until it signs with new
/// intermediates for the `rotations`th time.
fn wait_for_rotation(daemon: &Daemon, rotations: usize) {
    daemon.reload();
    daemon.wait_for_signer_changes(rotations, || daemon.log_text());
}

/// The intermediate rotates under load: no request fails, certificates
/// from before and after both verify (with whole-chain CRL checks), both
/// get OCSP answers from the URL in the leaf, and a revoked certificate of
/// the previous intermediate is reported by its CRL and its OCSP answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_intermediate_rotates_under_load_and_both_generations_verify() {
    let daemon = InProcess::start().await;
    let dir = daemon.tmp.path().to_owned();
    let old_intermediate =
        std::fs::read_to_string(daemon.data_dir.join("intermediate.pem")).unwrap();
    let before = daemon.bootstrap("payments").await;
    let issued_before = daemon.certificate_count();

    let bench = {
        let (data_dir, server) = (daemon.data_dir.clone(), daemon.grpc.clone());
        std::thread::spawn(move || {
            common::run_cli(
                &data_dir,
                &[
                    "bench",
                    "issue",
                    "--server",
                    &server,
                    "--concurrency",
                    "8",
                    "--duration",
                    "5s",
                    "--json",
                    // The store holds the test's own entries.
                    "--allow-store-in-use",
                ],
            )
        })
    };
    // Under load: once the bench has had some certificates issued.
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.certificate_count() < issued_before + 16 {
        assert!(Instant::now() < deadline, "the bench issued nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = daemon.cli(&["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("prepared the next intermediate"),
        "{}",
        stdout(&output)
    );
    daemon.advance(ROTATION_POLL);
    daemon.signer_changes(1).await;
    let output = bench.join().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(summary["ok"].as_u64().unwrap() > 0, "{summary}");

    // The files: the next one promoted, the old one kept as the previous.
    let new_intermediate =
        std::fs::read_to_string(daemon.data_dir.join("intermediate.pem")).unwrap();
    assert_ne!(new_intermediate, old_intermediate);
    assert_eq!(
        std::fs::read_to_string(daemon.data_dir.join("intermediate-previous.pem")).unwrap(),
        old_intermediate
    );
    assert!(!daemon.data_dir.join("intermediate-next.pem").exists());
    assert!(!daemon.data_dir.join("intermediate-next.key").exists());
    use std::os::unix::fs::PermissionsExt;
    for key in ["intermediate.key", "intermediate-previous.key"] {
        let mode = std::fs::metadata(daemon.data_dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    let after = daemon.bootstrap("orders").await;
    assert_eq!(
        common::pem_certs(&after.chain_pem)[1].to_vec(),
        common::pem_certs(&new_intermediate)[0].to_vec(),
        "new certificates are signed by the new intermediate"
    );
    assert_eq!(
        common::pem_certs(&before.chain_pem)[1].to_vec(),
        common::pem_certs(&old_intermediate)[0].to_vec()
    );

    // `/intermediate.pem` has both; with it and `/crls.pem` (the root's
    // CRL and one per intermediate) OpenSSL checks both whole chains.
    let intermediates = http(
        "GET",
        &format!("{}/intermediate.pem", daemon.http),
        &[],
        b"",
    );
    let intermediates = String::from_utf8(intermediates.body).unwrap();
    assert_eq!(common::pem_certs(&intermediates).len(), 2);
    let intermediates =
        common::write_file(&dir.join("intermediates.pem"), intermediates.as_bytes());
    let bundle = daemon.data_dir.join("bundle.pem");
    let verify = |leaf: &str| {
        let crls = http("GET", &format!("{}/crls.pem", daemon.http), &[], b"");
        assert_eq!(crls.status, 200);
        let crls_text = String::from_utf8(crls.body.clone()).unwrap();
        assert_eq!(
            crls_text.matches("BEGIN X509 CRL").count(),
            3,
            "{crls_text}"
        );
        let crls = common::write_file(&dir.join("crls.pem"), &crls.body);
        common::openssl_verify_with_crls(bundle.to_str().unwrap(), &intermediates, &crls, leaf)
    };
    let before_leaf = common::write_file(
        &dir.join("before.pem"),
        before.issued.certificate_pem.as_bytes(),
    );
    let after_leaf = common::write_file(
        &dir.join("after.pem"),
        after.issued.certificate_pem.as_bytes(),
    );
    for leaf in [&before_leaf, &after_leaf] {
        let (ok, text) = verify(leaf);
        assert!(ok && text.contains(": OK"), "{leaf}: {text}");
    }

    // Each leaf names its own intermediate's CRL and certificate, and the
    // OCSP responder answers for both, each signed by its issuer.
    let old_file = common::write_file(
        &dir.join("old-intermediate.pem"),
        old_intermediate.as_bytes(),
    );
    let new_file = common::write_file(
        &dir.join("new-intermediate.pem"),
        new_intermediate.as_bytes(),
    );
    let ocsp = |leaf: &str, issuer: &str| {
        let url = x509_field(leaf, "OCSP - URI:");
        common::openssl_ocsp(issuer, leaf, &url, bundle.to_str().unwrap())
    };
    for (leaf, issuer, issuer_pem) in [
        (&before_leaf, &old_file, &old_intermediate),
        (&after_leaf, &new_file, &new_intermediate),
    ] {
        let (ok, text) = ocsp(leaf, issuer);
        assert!(
            ok && text.contains("Response verify OK") && text.contains(": good"),
            "{leaf}: {text}"
        );
        let fetched = http("GET", &x509_field(leaf, "CA Issuers - URI:"), &[], b"");
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.body, common::pem_certs(issuer_pem)[0].to_vec());
        let crl = http("GET", &crl_url(leaf), &[], b"");
        assert_eq!(crl.status, 200, "{leaf}");
        let crl_file = common::write_file(&dir.join("leaf.crl"), &crl.body);
        let (ok, text) = openssl(&[
            "crl", "-inform", "DER", "-in", &crl_file, "-CAfile", issuer, "-noout",
        ]);
        assert!(ok && text.contains("verify OK"), "{leaf}: {text}");
    }

    // Revoking a certificate of the previous intermediate: its CRL lists
    // it, its OCSP answer says so, and the whole-chain check fails.
    let output = daemon.cli(&[
        "revoke",
        &before.issued.serial,
        "--reason",
        "key-compromise",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (ok, text) = ocsp(&before_leaf, &old_file);
    assert!(ok && text.contains(": revoked"), "{text}");
    let (ok, text) = verify(&before_leaf);
    assert!(!ok && text.contains("error 23"), "{text}");
    let (ok, text) = verify(&after_leaf);
    assert!(ok, "{text}");
    let crl = http("GET", &crl_url(&before_leaf), &[], b"");
    let crl_file = common::write_file(&dir.join("previous.crl"), &crl.body);
    let (_, text) = openssl(&["crl", "-inform", "DER", "-in", &crl_file, "-noout", "-text"]);
    assert!(
        text.to_uppercase()
            .contains(&before.issued.serial.to_uppercase()),
        "{text}"
    );

    // Renewing a certificate of the previous intermediate gives one of the
    // new intermediate.
    let renewed = daemon.renew(Some(&after)).await.unwrap();
    assert_eq!(
        common::pem_certs(&renewed.chain_pem)[1].to_vec(),
        common::pem_certs(&new_intermediate)[0].to_vec()
    );

    // A second rotation waits until the previous intermediate's
    // certificates have expired: refused with the time, nothing written.
    let again = daemon.cli(&["ca", "rotate-intermediate"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("rotate again after"),
        "{}",
        stderr(&again)
    );
    assert!(!daemon.data_dir.join("intermediate-next.pem").exists());
}

/// A next intermediate copied in while certd is down is promoted at its
/// next start, and one that does not chain to the bundle is refused and
/// logged while certd keeps signing with the current one.
#[tokio::test]
async fn a_rotation_prepared_elsewhere_is_picked_up_and_a_bad_one_refused() {
    let mut daemon = Daemon::start();
    // Another CA's next intermediate: not signed by our root.
    let other = tempfile::tempdir().unwrap();
    let output = common::run_cli(other.path(), &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = common::run_cli(other.path(), &["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    for file in ["intermediate-next.key", "intermediate-next.pem"] {
        std::fs::copy(other.path().join(file), daemon.data_dir.join(file)).unwrap();
    }
    daemon.reload();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log_text().contains("cannot rotate the intermediate") {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        daemon
            .log_text()
            .contains("not signed by any certificate in"),
        "{}",
        daemon.log_text()
    );
    let current = std::fs::read_to_string(daemon.data_dir.join("intermediate.pem")).unwrap();
    let issued = daemon.bootstrap("billing").await;
    assert_eq!(
        common::pem_certs(&issued.chain_pem)[1].to_vec(),
        common::pem_certs(&current)[0].to_vec()
    );
    for file in ["intermediate-next.key", "intermediate-next.pem"] {
        std::fs::remove_file(daemon.data_dir.join(file)).unwrap();
    }

    // Prepared while certd is down: promoted at the start.
    daemon.kill();
    let output = common::run_cli(&daemon.data_dir, &["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let next = std::fs::read_to_string(daemon.data_dir.join("intermediate-next.pem")).unwrap();
    daemon.restart_on_same_port();
    let issued = daemon.bootstrap("billing").await;
    assert_eq!(
        common::pem_certs(&issued.chain_pem)[1].to_vec(),
        common::pem_certs(&next)[0].to_vec()
    );
}

/// Renews `identity` with a fresh key: the new certificate and the trust
/// bundle that comes with it, as a workload's rotation does.
async fn renew(daemon: &Daemon, identity: &Identity) -> Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = common::csr_for(&key, None, vec![]);
    let issued = daemon
        .client(Some(identity))
        .await
        .renew(csr)
        .await
        .expect("renew");
    Identity::new(key, issued)
}

/// A mutual TLS handshake between two workloads, each trusting only the
/// bundle it was last given: `Err` says which side refused.
async fn handshake(server: &Identity, client: &Identity) -> Result<(), String> {
    use rustls::pki_types::ServerName;
    let roots = |identity: &Identity| common::roots(&identity.issued.trust_bundle_pem);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(server),
        common::provider(),
    )
    .build()
    .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(common::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain(), server.private_key())
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(common::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(client))
        .with_client_auth_cert(client.chain(), client.private_key())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_config));
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from(format!(
        "{}.certd.internal",
        server.issued.spiffe_id.rsplit('/').next().unwrap()
    ))
    .unwrap();
    let client_side = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config))
        .connect(name, tcp)
        .await;
    let client_side = match client_side {
        Ok(mut tls) => {
            // TLS 1.3: the server's verdict on the client's certificate
            // arrives after the client's handshake ends; a round trip
            // brings it.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tls.write_all(b"ping").await;
            let mut byte = [0u8; 1];
            let _ = tls.read(&mut byte).await;
            Ok(())
        }
        Err(error) => Err(format!("client refused: {error}")),
    };
    let server_side = serving
        .await
        .unwrap()
        .map_err(|error| format!("server refused: {error}"));
    client_side.and(server_side)
}

/// Both directions between two workloads.
async fn peers_handshake(a: &Identity, b: &Identity, when: &str) {
    handshake(a, b)
        .await
        .unwrap_or_else(|e| panic!("{when}, b to a: {e}"));
    handshake(b, a)
        .await
        .unwrap_or_else(|e| panic!("{when}, a to b: {e}"));
}

/// Root rotation as workloads live it: each holds only the bundle it was
/// last given and refreshes it when it renews. Through the next root's
/// propagation, the switch of the intermediate to it, and the old root's
/// retirement, every handshake between them succeeds, and whole-chain
/// checkers find a CRL for each intermediate.
#[tokio::test]
async fn workloads_that_refresh_their_bundle_keep_handshaking_through_a_root_rotation() {
    let mut daemon = Daemon::start();
    let dir = daemon.tmp.path().to_owned();
    let old_root = std::fs::read_to_string(daemon.data_dir.join("root.pem")).unwrap();
    let a = daemon.bootstrap("payments").await;
    let b = daemon.bootstrap("orders").await;
    assert_eq!(common::pem_certs(&a.issued.trust_bundle_pem).len(), 1);
    peers_handshake(&a, &b, "before").await;

    // The next root is handed out at once; nothing is signed under it
    // during the propagation window.
    let output = daemon.cli(&["ca", "rotate-root", "--propagation", "3s"]);
    assert!(output.status.success(), "{}", stderr(&output));

    // A relying party's `crl sync` with the old bundle keeps working: it
    // leaves out the CRL of the root it does not trust yet; with the new
    // bundle it writes that one too; with another CA's bundle it writes
    // nothing.
    let crl_sync = |bundle_pem: &str, out: &str| {
        let bundle = common::write_file(&dir.join(format!("{out}.bundle")), bundle_pem.as_bytes());
        let out = dir.join(out);
        let output = daemon.cli(&[
            "crl",
            "sync",
            "--http",
            &daemon.http,
            "--out",
            out.to_str().unwrap(),
            "--ca-bundle",
            &bundle,
        ]);
        let written = std::fs::read_to_string(&out).unwrap_or_default();
        (output, written.matches("BEGIN X509 CRL").count())
    };
    let (output, crls) = crl_sync(&a.issued.trust_bundle_pem, "old-bundle-crls.pem");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(crls, 2, "the root's and the intermediate's");
    let (output, crls) = crl_sync(&daemon.bundle_pem(), "new-bundle-crls.pem");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(crls, 3, "both roots' and the intermediate's");
    let other = tempfile::tempdir().unwrap();
    let made = common::run_cli(other.path(), &["init"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let foreign = std::fs::read_to_string(other.path().join("bundle.pem")).unwrap();
    let (output, crls) = crl_sync(&foreign, "foreign-crls.pem");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("none of certd's CRLs"),
        "{}",
        stderr(&output)
    );
    assert_eq!(crls, 0);

    let a = renew(&daemon, &a).await;
    assert_eq!(common::pem_certs(&a.issued.trust_bundle_pem).len(), 2);
    peers_handshake(&a, &b, "b with the old bundle, a with both").await;
    let b = renew(&daemon, &b).await;
    peers_handshake(&a, &b, "both bundles").await;

    // After the window, the next intermediate is signed under the next
    // root; certificates from it and from the old chain meet.
    let output = daemon.cli_ahead(Duration::from_secs(3), &["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let next_root = std::fs::read_to_string(daemon.data_dir.join("root-next.pem")).unwrap();
    let (_, next_subject) = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
        "-in",
        daemon.data_dir.join("root-next.pem").to_str().unwrap(),
    ]);
    let next_subject = next_subject
        .trim()
        .trim_start_matches("subject=")
        .to_owned();
    assert!(
        stdout(&output).contains("certd root CA"),
        "{}",
        stdout(&output)
    );
    wait_for_rotation(&daemon, 1);
    let b = renew(&daemon, &b).await;
    peers_handshake(&a, &b, "a on the old chain, b on the new").await;

    // OpenSSL checks the new chain whole: the next root's CRL covers the
    // new intermediate, found where the intermediate says.
    let intermediates = http(
        "GET",
        &format!("{}/intermediate.pem", daemon.http),
        &[],
        b"",
    );
    let intermediates = common::write_file(&dir.join("intermediates.pem"), &intermediates.body);
    let crls = http("GET", &format!("{}/crls.pem", daemon.http), &[], b"");
    let crls_text = String::from_utf8(crls.body.clone()).unwrap();
    assert_eq!(
        crls_text.matches("BEGIN X509 CRL").count(),
        4,
        "two roots, two intermediates"
    );
    let crls = common::write_file(&dir.join("crls.pem"), &crls.body);
    let leaf = common::write_file(&dir.join("b.pem"), b.issued.certificate_pem.as_bytes());
    let bundle = common::write_file(
        &dir.join("bundle.pem"),
        b.issued.trust_bundle_pem.as_bytes(),
    );
    let (ok, text) = common::openssl_verify_with_crls(&bundle, &intermediates, &crls, &leaf);
    assert!(ok && text.contains(": OK"), "{text}");
    let new_intermediate = daemon.data_dir.join("intermediate.pem");
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-issuer",
        "-nameopt",
        "RFC2253",
        "-in",
        new_intermediate.to_str().unwrap(),
    ]);
    assert_eq!(text.trim().trim_start_matches("issuer="), next_subject);
    let root_crl = http(
        "GET",
        &crl_url(new_intermediate.to_str().unwrap()),
        &[],
        b"",
    );
    assert_eq!(root_crl.status, 200);
    let root_crl = common::write_file(&dir.join("next-root.crl"), &root_crl.body);
    let next_root_file = common::write_file(&dir.join("next-root.pem"), next_root.as_bytes());
    let (ok, text) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        &root_crl,
        "-CAfile",
        &next_root_file,
        "-noout",
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");
    let fetched = http(
        "GET",
        &x509_field(new_intermediate.to_str().unwrap(), "CA Issuers - URI:"),
        &[],
        b"",
    );
    assert_eq!(fetched.body, common::pem_certs(&next_root)[0].to_vec());

    // Retiring the old root waits until nothing signed under it lives.
    let refused = daemon.cli(&["ca", "retire-root"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("retire it after that"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(common::pem_certs(&daemon.bundle_pem()).len(), 2);
    // Here every workload has renewed onto the new chain; --force.
    let a_on_the_old_chain = a;
    let a = renew(&daemon, &a_on_the_old_chain).await;
    peers_handshake(&a, &b, "both on the new chain").await;
    let output = daemon.cli(&["ca", "retire-root", "--force"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("bundle.pem holds 1 root"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        std::fs::read_to_string(daemon.data_dir.join("root-retired.pem")).unwrap(),
        old_root
    );
    assert!(!daemon.data_dir.join("root-next.pem").exists());

    // certd hands out the new bundle alone, serves the new root, and its
    // own certificate chains to it; workloads renewing get the new bundle
    // and keep handshaking.
    let served = http("GET", &format!("{}/bundle.pem", daemon.http), &[], b"");
    assert_eq!(
        common::pem_certs(&String::from_utf8(served.body).unwrap()).len(),
        1
    );
    let root_cer = http("GET", &format!("{}/root.cer", daemon.http), &[], b"");
    assert_eq!(root_cer.body, common::pem_certs(&next_root)[0].to_vec());
    let a = renew(&daemon, &a).await;
    assert_eq!(
        common::pem_certs(&a.issued.trust_bundle_pem)[0].to_vec(),
        common::pem_certs(&next_root)[0].to_vec()
    );
    assert_eq!(common::pem_certs(&a.issued.trust_bundle_pem).len(), 1);
    peers_handshake(&a, &b, "a with the new bundle only, b with both").await;
    // What the handshakes prove: a certificate under the retired root is
    // refused by a peer that refreshed its bundle.
    let refused = handshake(&a, &a_on_the_old_chain).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("server refused")),
        "{refused:?}"
    );
    let b = renew(&daemon, &b).await;
    peers_handshake(&a, &b, "after the retirement").await;

    // A restart finds the same: the previous intermediate, under the
    // retired root, still answers for its certificates.
    daemon.restart_on_same_port();
    let intermediates = http(
        "GET",
        &format!("{}/intermediate.pem", daemon.http),
        &[],
        b"",
    );
    assert_eq!(
        common::pem_certs(&String::from_utf8(intermediates.body).unwrap()).len(),
        2
    );
    let b = renew(&daemon, &b).await;
    peers_handshake(&a, &b, "after a restart").await;
}

/// A relying party that polls `/crls.pem`, `/bundle.pem` and `/crls.pem`
/// again, over and over, and notes every root of the bundle for which
/// neither CRL answer held a CRL: the root's files are written so that a
/// root's CRL is in place before the root enters the bundle and leaves it
/// only after the root has.
struct BundleAndCrlPoller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl BundleAndCrlPoller {
    fn start(http_base: &str) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let base = http_base.to_owned();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut polls, mut missing) = (0, Vec::new());
            let get = |path: &str| {
                let response = http("GET", &format!("{base}{path}"), &[], b"");
                assert_eq!(response.status, 200, "{path}");
                response.body
            };
            while !stopped.load(Ordering::SeqCst) {
                let before = crl_issuers(&get("/crls.pem"));
                let bundle = String::from_utf8(get("/bundle.pem")).unwrap();
                let after = crl_issuers(&get("/crls.pem"));
                for root in common::pem_certs(&bundle) {
                    let (_, root) = X509Certificate::from_der(&root).unwrap();
                    let subject = root.subject().as_raw().to_vec();
                    if !before.contains(&subject) && !after.contains(&subject) {
                        missing.push(root.subject().to_string());
                    }
                }
                polls += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (polls, missing)
        });
        BundleAndCrlPoller { stop, thread }
    }

    /// How many times it polled, and each root found without a CRL.
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The issuer (DER name) of every CRL in a PEM document.
fn crl_issuers(pem: &[u8]) -> Vec<Vec<u8>> {
    use x509_parser::revocation_list::CertificateRevocationList;
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|block| block.unwrap())
        .filter(|block| block.label == "X509 CRL")
        .map(|block| {
            let (_, crl) = CertificateRevocationList::from_der(&block.contents).unwrap();
            crl.issuer().as_raw().to_vec()
        })
        .collect()
}

/// Makes the previous intermediate's certificates expired, as they are a
/// day later, so that the intermediate may rotate again now.
fn expire_previous_intermediate(data_dir: &Path) {
    let path = data_dir.join("intermediate-previous.toml");
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let state: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| {
            if line.starts_with("certificates_expire_by") {
                format!("certificates_expire_by = {past}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&path, state).unwrap();
}

/// Gives `path` the modification time of `like`: as if both were written
/// in the same clock tick, as `root.crl` and `root-next.crl`, signed
/// together, often are.
fn same_mtime(path: &Path, like: &Path) {
    let modified = std::fs::metadata(like).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// `openssl crl` checking a DER CRL's signature against `issuer_pem`.
fn crl_signed_by(crl_der: &[u8], issuer_pem: &str, dir: &Path, name: &str) -> (bool, String) {
    let crl = common::write_file(&dir.join(format!("{name}.crl")), crl_der);
    let issuer = common::write_file(&dir.join(format!("{name}-issuer.pem")), issuer_pem);
    let (ok, text) = openssl(&[
        "crl", "-inform", "DER", "-in", &crl, "-CAfile", &issuer, "-noout",
    ]);
    (ok && text.contains("verify OK"), text)
}

/// Retiring the old root never leaves relying parties without a CRL, and
/// needs no restart: after each `certd ca retire-root`, `/root.crl` is the
/// new root's, the CRL distribution point of the intermediate signed under
/// it answers with a CRL that root signed, and `openssl verify
/// -crl_check_all` with `/crls.pem` accepts a leaf of the new chain; all
/// along, a relying party polling `/bundle.pem` and `/crls.pem` finds a CRL
/// for every root of the bundle; and `certd crl sync` writes the new root's
/// CRL, but nothing for a bundle whose root has no CRL any more. In each
/// cycle `root-next.crl` has the modification time of the `root.crl` the
/// daemon last read, as when both are signed in the same clock tick, which
/// a reload by mtime misses.
#[tokio::test(flavor = "multi_thread")]
async fn retiring_the_root_never_leaves_relying_parties_without_a_crl() {
    let daemon = InProcess::start().await;
    let dir = daemon.tmp.path().to_owned();
    let data_dir = daemon.data_dir.clone();
    let get = |path: &str| {
        let response = http("GET", &format!("{}{path}", daemon.http), &[], b"");
        (response.status, response.body)
    };
    let poller = BundleAndCrlPoller::start(&daemon.http);
    for cycle in 1..=3 {
        let output = daemon.cli(&["ca", "rotate-root", "--propagation", "1s"]);
        assert!(output.status.success(), "{}", stderr(&output));
        // The daemon reads both root CRLs, and the retirement will rename
        // one over the other with the same modification time.
        assert_eq!(get("/crls.pem").0, 200);
        same_mtime(&data_dir.join("root-next.crl"), &data_dir.join("root.crl"));
        if cycle > 1 {
            expire_previous_intermediate(&data_dir);
        }
        // Past the propagation window.
        let output = daemon.cli_ahead(Duration::from_secs(1), &["ca", "rotate-intermediate"]);
        assert!(output.status.success(), "{}", stderr(&output));
        daemon.advance(ROTATION_POLL);
        daemon.signer_changes(cycle).await;
        let next_root = std::fs::read_to_string(data_dir.join("root-next.pem")).unwrap();
        let bundle_with_both_roots = get("/bundle.pem").1;
        let output = daemon.cli(&["ca", "retire-root", "--force"]);
        assert!(output.status.success(), "{}", stderr(&output));

        let (status, root_crl) = get("/root.crl");
        assert_eq!(status, 200, "cycle {cycle}");
        let (ok, text) = crl_signed_by(&root_crl, &next_root, &dir, "root");
        assert!(ok, "cycle {cycle}: /root.crl is not the new root's: {text}");
        let intermediate = data_dir.join("intermediate.pem");
        let distribution_point = crl_url(intermediate.to_str().unwrap());
        let response = http("GET", &distribution_point, &[], b"");
        assert_eq!(
            response.status,
            200,
            "cycle {cycle}: {distribution_point}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let (ok, text) = crl_signed_by(&response.body, &next_root, &dir, "distribution-point");
        assert!(ok, "cycle {cycle}: {distribution_point}: {text}");

        let leaf = daemon.bootstrap(&format!("cycle-{cycle}")).await;
        let leaf = common::write_file(
            &dir.join("leaf.pem"),
            leaf.issued.certificate_pem.as_bytes(),
        );
        let bundle = common::write_file(&dir.join("served-bundle.pem"), get("/bundle.pem").1);
        let intermediates =
            common::write_file(&dir.join("intermediates.pem"), get("/intermediate.pem").1);
        let crls = common::write_file(&dir.join("crls.pem"), get("/crls.pem").1);
        let (ok, text) = common::openssl_verify_with_crls(&bundle, &intermediates, &crls, &leaf);
        assert!(ok && text.contains(": OK"), "cycle {cycle}: {text}");

        // `certd crl sync` with the bundle served now writes the new root's
        // CRL; with the bundle from before, whose old root has no CRL any
        // more, it writes nothing, keeps the file and says why.
        let synced = dir.join("synced-crls.pem");
        let crl_sync = |bundle: &str| {
            daemon.cli(&[
                "crl",
                "sync",
                "--http",
                &daemon.http,
                "--out",
                synced.to_str().unwrap(),
                "--ca-bundle",
                bundle,
            ])
        };
        let output = crl_sync(&bundle);
        assert!(output.status.success(), "{}", stderr(&output));
        let written = std::fs::read(&synced).unwrap();
        let new_root = common::pem_certs(&next_root).remove(0);
        let (_, new_root) = X509Certificate::from_der(&new_root).unwrap();
        assert!(crl_issuers(&written).contains(&new_root.subject().as_raw().to_vec()));
        let old_bundle = common::write_file(&dir.join("old-bundle.pem"), &bundle_with_both_roots);
        let output = crl_sync(&old_bundle);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("a root in --ca-bundle; not writing the CRLs"),
            "{}",
            stderr(&output)
        );
        assert_eq!(std::fs::read(&synced).unwrap(), written);
    }
    let (polls, missing) = poller.stop();
    assert!(polls > 10, "{polls}");
    assert!(
        missing.is_empty(),
        "roots served in the bundle without a CRL: {missing:?}"
    );
}

/// With `[ca] auto_rotate_intermediate` (and the root key beside it), certd
/// rotates the intermediate by itself at two thirds of its life, and the
/// next one keeps the lifetime chosen at `certd init`.
#[tokio::test(flavor = "multi_thread")]
async fn certd_rotates_the_intermediate_by_itself_when_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let output = common::run_cli(&data_dir, &["init", "--intermediate-lifetime", "30s"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = std::fs::read_to_string(data_dir.join("intermediate.pem")).unwrap();
    let daemon = InProcess::start_in(tmp, data_dir, "[ca]\nauto_rotate_intermediate = true").await;
    // Not yet: more than a third of its 30 s is left.
    assert!(!daemon.authority.ca().rotation_due(daemon.authority.now()));
    assert_eq!(
        daemon.authority.ca().signer_changes().borrow().generation,
        0
    );
    // Two thirds of its life have passed: certd prepares the next
    // intermediate and promotes it by itself.
    daemon.advance(Duration::from_secs(20));
    daemon.signer_changes(1).await;
    let second = std::fs::read_to_string(daemon.data_dir.join("intermediate.pem")).unwrap();
    assert_ne!(second, first);
    let (_, first_cert) = x509_parser::pem::parse_x509_pem(first.as_bytes()).unwrap();
    let (_, second_cert) = x509_parser::pem::parse_x509_pem(second.as_bytes()).unwrap();
    let life = |pem: &x509_parser::pem::Pem| {
        let cert = pem.parse_x509().unwrap();
        cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
    };
    assert_eq!(life(&second_cert), life(&first_cert));
    let issued = daemon.bootstrap("billing").await;
    assert_eq!(
        common::pem_certs(&issued.chain_pem)[1].to_vec(),
        common::pem_certs(&second)[0].to_vec()
    );
    daemon.shutdown().await;
}

/// Waits until `log()` holds `text` `times` times: for a test of what the
/// log says.
fn wait_for_log(log: impl Fn() -> String, text: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while log().matches(text).count() < times {
        assert!(Instant::now() < deadline, "no {text:?} in time:\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the agent's `/metrics` says it holds `svids` X.509-SVIDs.
fn wait_for_agent_svids(agent: &common::agent::Agent, svids: usize) {
    let url = agent
        .metrics_url
        .as_deref()
        .expect("started with --metrics-addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = String::from_utf8(http("GET", &format!("{url}/metrics"), &[], b"").body)
            .unwrap_or_default();
        let held = text
            .lines()
            .find_map(|line| line.strip_prefix("certd_agent_svids "))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0);
        if held >= svids as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent holds {held} SVIDs, not {svids}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the bundle the agent keeps holds `roots` roots.
fn wait_for_agent_bundle(agent: &common::agent::Agent, roots: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = agent.data_dir.join("bundle.pem");
    while common::pem_certs(&std::fs::read_to_string(&path).unwrap_or_default()).len() < roots {
        assert!(
            Instant::now() < deadline,
            "the agent's bundle never held {roots} roots:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until certd's own TLS certificate verifies against `root_pem`
/// alone, as a client sees it (openssl s_client).
fn wait_for_serving_chain(daemon: &Daemon, root_pem: &str) {
    let root = common::write_file(
        &daemon.tmp.path().join("serving-root.pem"),
        root_pem.as_bytes(),
    );
    let address = daemon.grpc.trim_start_matches("https://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (verified, text) = openssl(&[
            "s_client",
            "-connect",
            &address,
            "-CAfile",
            &root,
            "-verify_return_error",
        ]);
        if verified {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "certd's certificate never chained to the next root:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node agent started with the old bundle keeps reaching certd through
/// a root rotation, once certd's own certificate chains to the new root:
/// it trusts the bundle certd sends it (and keeps it for its next start),
/// and new workloads on its node still get their SVIDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_keeps_reaching_certd_through_a_root_rotation() {
    use common::agent::Agent;
    let daemon = Daemon::start();
    let agent = Agent::start_registered(&daemon, "node-1", &["--metrics-addr", "127.0.0.1:0"]);
    let parent = "spiffe://certd.internal/agent/node-1";
    daemon.entry("before", &["unix:uid:4241"], &["--parent", parent]);
    wait_for_agent_svids(&agent, 1);

    let output = daemon.cli(&["ca", "rotate-root", "--propagation", "1s"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // The agent takes the bundle with both roots from certd.
    wait_for_agent_bundle(&agent, 2);
    // Past the propagation window.
    let output = daemon.cli_ahead(Duration::from_secs(1), &["ca", "rotate-intermediate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    wait_for_rotation(&daemon, 1);
    // certd's own certificate now chains to the next root only.
    let next_root = std::fs::read_to_string(daemon.data_dir.join("root-next.pem")).unwrap();
    wait_for_serving_chain(&daemon, &next_root);

    daemon.entry("after", &["unix:uid:4242"], &["--parent", parent]);
    wait_for_agent_svids(&agent, 2);
    let kept = std::fs::read_to_string(agent.data_dir.join("bundle.pem")).unwrap();
    assert_eq!(
        common::pem_certs(&kept)
            .iter()
            .map(|c| c.to_vec())
            .collect::<Vec<_>>(),
        common::pem_certs(&daemon.bundle_pem())
            .iter()
            .map(|c| c.to_vec())
            .collect::<Vec<_>>()
    );
}

/// Without `[ca] auto_rotate_intermediate`, certd warns from 30 days
/// before the intermediate ends and says what to run.
#[test]
fn certd_warns_about_an_intermediate_near_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let output = common::run_cli(&data_dir, &["init", "--intermediate-lifetime", "20d"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let daemon = Daemon::start_in(tmp, data_dir, &[]);
    wait_for_log(
        || daemon.log_text(),
        "a CA certificate expires within 30 days; run `certd ca rotate-intermediate` where the root key is",
        1,
    );
    assert!(!daemon.log_text().contains("has lived two thirds"));
    for refused in [
        &["init", "--intermediate-lifetime", "10s"][..],
        &["init", "--intermediate-lifetime", "6y"],
    ] {
        let other = tempfile::tempdir().unwrap();
        let output = common::run_cli(other.path(), refused);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("must be between 30s and 5y"),
            "{}",
            stderr(&output)
        );
    }
}
