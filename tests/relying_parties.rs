//! Relying parties nobody here wrote, checking whole chains: `openssl
//! verify -crl_check_all` with the CRLs from `/crls.pem` (the root's CRL,
//! covering the intermediate, and the intermediate's, covering leaves), an
//! OCSP check through the URL in the leaf itself, the CA certificates over
//! HTTP where certificates' AIA points, `certd crl sync` keeping a relying
//! party's CRL file fresh, and HAProxy configured as the guide says,
//! reloaded by that sync.

mod common;

use std::path::Path;

use common::{Daemon, http, openssl, stderr, stdout};

/// `openssl verify -crl_check_all` of `chain` (leaf, intermediate) against
/// the bundle, with the CRLs certd serves now.
fn verify_with_crls(daemon: &Daemon, chain: &str) -> (bool, String) {
    let dir = daemon.tmp.path();
    let crls = http("GET", &format!("{}/crls.pem", daemon.http), &[], b"");
    assert_eq!(crls.status, 200, "{}", String::from_utf8_lossy(&crls.body));
    let crls = common::write_file(&dir.join("crls.pem"), &crls.body);
    let intermediate = daemon.data_dir.join("intermediate.pem");
    let bundle = daemon.data_dir.join("bundle.pem");
    common::openssl_verify_with_crls(
        bundle.to_str().unwrap(),
        intermediate.to_str().unwrap(),
        &crls,
        chain,
    )
}

/// A workload of `service`, and the path of its certificate, written for
/// OpenSSL.
async fn workload(daemon: &Daemon, service: &str) -> (common::Identity, String) {
    let identity = daemon.bootstrap(service).await;
    let leaf = common::write_file(
        &daemon.tmp.path().join(format!("{service}.pem")),
        identity.issued.certificate_pem.as_bytes(),
    );
    (identity, leaf)
}

#[tokio::test]
async fn openssl_checks_whole_chains_with_the_crls_certd_serves() {
    let daemon = Daemon::start();
    let (payments, payments_leaf) = workload(&daemon, "payments").await;
    let (_, orders_leaf) = workload(&daemon, "orders").await;

    let (ok, text) = verify_with_crls(&daemon, &payments_leaf);
    assert!(ok && text.contains(": OK"), "a valid leaf passes: {text}");

    let output = daemon.cli(&[
        "revoke",
        &payments.issued.serial,
        "--reason",
        "key-compromise",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (ok, text) = verify_with_crls(&daemon, &payments_leaf);
    assert!(!ok && text.contains("error 23"), "a revoked leaf: {text}");
    let (ok, text) = verify_with_crls(&daemon, &orders_leaf);
    assert!(ok, "others still pass: {text}");

    // Revoking the intermediate (where the root key is: here, the data
    // directory) puts it on the root CRL, which the daemon serves at once.
    let serial = intermediate_serial(&daemon);
    let output = daemon.cli(&[
        "ca",
        "revoke-intermediate",
        &serial,
        "--reason",
        "key-compromise",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("listing 1 revoked intermediate"),
        "{}",
        stdout(&output)
    );
    let (ok, text) = verify_with_crls(&daemon, &orders_leaf);
    assert!(
        !ok && text.contains("error 23 at 1 depth"),
        "the revoked intermediate fails every chain: {text}"
    );
}

/// With the leaves' CRL split into shards (`crl_shards = 4`, each leaf
/// naming its shard), `/crls.pem` still carries the root's CRL and each
/// intermediate's whole CRL (no Issuing Distribution Point, so in scope for
/// every leaf whatever shard it names): a whole-chain check as nginx
/// `ssl_crl` and HAProxy `crl-file` make it refuses the revoked leaf and
/// passes the others. (`tests/crl_shards.rs` checks leaves against their
/// shards.)
#[tokio::test]
async fn whole_chain_checks_keep_working_with_crl_shards() {
    let daemon = start_with_crl_shards(4);
    let (payments, payments_leaf) = workload(&daemon, "payments").await;
    let (_, orders_leaf) = workload(&daemon, "orders").await;
    let distribution_point = common::crl_distribution_point(&payments_leaf);
    assert!(
        distribution_point.contains("/shards/4/"),
        "the leaf names a shard: {distribution_point}"
    );

    let output = daemon.cli(&["revoke", &payments.issued.serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (ok, text) = verify_with_crls(&daemon, &payments_leaf);
    assert!(!ok && text.contains("error 23"), "a revoked leaf: {text}");
    let (ok, text) = verify_with_crls(&daemon, &orders_leaf);
    assert!(ok && text.contains(": OK"), "others still pass: {text}");
}

/// The serial of the daemon's intermediate, as OpenSSL prints it (hex).
fn intermediate_serial(daemon: &Daemon) -> String {
    let (ok, serial) = openssl(&[
        "x509",
        "-noout",
        "-serial",
        "-in",
        daemon.data_dir.join("intermediate.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{serial}");
    serial.trim().trim_start_matches("serial=").to_owned()
}

/// `certd serve` with `[revocation] crl_shards = shards`.
fn start_with_crl_shards(shards: u16) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::write_file(
        &tmp.path().join("certd.toml"),
        format!("[revocation]\ncrl_shards = {shards}\n"),
    );
    let data_dir = tmp.path().join("ca");
    Daemon::start_in(tmp, data_dir, &["--config", &config])
}

/// HAProxy with the guide's `bind … ca-file … verify required crl-file`
/// line, its CRL file written by `certd crl sync --out` and reloaded by
/// the sync's `--exec` as `systemctl reload haproxy` does: it admits a
/// client with a certd certificate (presenting its chain, as `cert.pem`
/// holds it), and once that certificate is revoked and the sync has run
/// again, refuses it at the TLS handshake (alert "certificate revoked")
/// while another client still gets through; and once the intermediate is
/// revoked on the root's CRL, the next sync makes it refuse that other
/// client too (the whole chain is checked).
#[tokio::test]
async fn haproxy_refuses_a_revoked_client_once_crl_sync_reloads_it() {
    if !common::haproxy_available() {
        return;
    }
    haproxy_checks_whole_chains(&Daemon::start(), false).await;
}

/// The same with `crl_shards = 4`: the clients' leaves name their shards
/// (the other client's another shard than the revoked one's), and HAProxy,
/// given `/crls.pem` (the root's CRL and the intermediate's whole CRL),
/// still refuses the revoked leaf, admits the other, and refuses both once
/// the intermediate is revoked.
#[tokio::test]
async fn haproxy_checks_whole_chains_of_leaves_that_name_shards() {
    if !common::haproxy_available() {
        return;
    }
    haproxy_checks_whole_chains(&start_with_crl_shards(4), true).await;
}

/// The HAProxy tests' steps; with `shards`, the other client is one whose
/// leaf names another shard than the revoked client's.
async fn haproxy_checks_whole_chains(daemon: &Daemon, shards: bool) {
    let dir = daemon.tmp.path().join("haproxy");
    std::fs::create_dir_all(&dir).expect("HAProxy's directory");
    let bundle = daemon.data_dir.join("bundle.pem");
    let bundle = bundle.to_str().unwrap();
    // A client's files as `certd request` writes them: `cert.pem` (leaf
    // and intermediate) and `key.pem`.
    let write_identity = |name: &str, identity: &common::Identity| {
        let chain = common::write_file(&dir.join(format!("{name}-cert.pem")), &identity.chain_pem);
        let key = common::write_file(&dir.join(format!("{name}-key.pem")), &identity.key_pem);
        (chain, key)
    };
    // HAProxy's `crt`: the server's chain and key in one file (a workload
    // certificate has serverAuth too).
    let web = daemon.bootstrap("web").await;
    let server_pem = common::write_file(
        &dir.join("server.pem"),
        format!("{}{}", web.chain_pem, web.key_pem),
    );
    let (payments, payments_leaf) = workload(daemon, "payments").await;
    let payments_url = common::crl_distribution_point(&payments_leaf);
    assert_eq!(
        payments_url.contains("/shards/4/"),
        shards,
        "the leaf's CRL distribution point: {payments_url}"
    );
    // Without shards every leaf names the same CRL; with four, each new
    // leaf has a 3 in 4 chance of naming another shard.
    let mut other = None;
    for attempt in 0..24 {
        let name = format!("orders{attempt}");
        let (identity, leaf) = workload(daemon, &name).await;
        if !shards || common::crl_distribution_point(&leaf) != payments_url {
            other = Some((name, identity));
            break;
        }
    }
    let (other_name, other) = other.expect("a leaf in another shard");
    let payments_serial = payments.issued.serial.clone();
    let payments = write_identity("payments", &payments);
    let other = write_identity(&other_name, &other);

    let crls = dir.join("certd-crls.pem");
    let sync = |exec: Option<&str>| {
        let mut args = vec![
            "crl",
            "sync",
            "--http",
            &daemon.http,
            "--out",
            crls.to_str().unwrap(),
            "--ca-bundle",
            bundle,
        ];
        if let Some(command) = exec {
            args.extend(["--exec", command]);
        }
        let output = daemon.cli(&args);
        assert!(output.status.success(), "{}", stderr(&output));
    };
    // The first file, before HAProxy starts (which refuses to start
    // without it).
    sync(None);
    let haproxy =
        common::haproxy::Haproxy::start(&dir, &server_pem, bundle, crls.to_str().unwrap());
    let before = haproxy.curl(bundle, &payments.0, &payments.1);
    assert!(
        before.ok && before.status == "200" && before.body.contains("CN=payments"),
        "before the revocation HAProxy takes the client: {} {} {}",
        before.status,
        before.body,
        before.stderr
    );

    let output = daemon.cli(&["revoke", &payments_serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    sync(Some(&haproxy.reload_command()));
    haproxy.wait_for_reload(1);
    let after = haproxy.curl(bundle, &payments.0, &payments.1);
    assert!(
        !after.ok && after.status == "000" && after.stderr.contains("alert certificate revoked"),
        "after certd revoke and the sync HAProxy refuses the client at the handshake: {} {} {}\n{}",
        after.status,
        after.body,
        after.stderr,
        haproxy.log_text()
    );
    let other_answer = haproxy.curl(bundle, &other.0, &other.1);
    assert!(
        other_answer.ok
            && other_answer.status == "200"
            && other_answer.body.contains(&format!("CN={other_name}")),
        "another client still gets through: {} {} {}",
        other_answer.status,
        other_answer.body,
        other_answer.stderr
    );

    // The whole chain: with the intermediate revoked on the root's CRL
    // (the root key is in the data directory here), the next sync's reload
    // makes HAProxy refuse every client under it.
    let output = daemon.cli(&["ca", "revoke-intermediate", &intermediate_serial(daemon)]);
    assert!(output.status.success(), "{}", stderr(&output));
    sync(Some(&haproxy.reload_command()));
    haproxy.wait_for_reload(2);
    let other_answer = haproxy.curl(bundle, &other.0, &other.1);
    assert!(
        !other_answer.ok
            && other_answer.status == "000"
            && other_answer.stderr.contains("alert certificate revoked"),
        "with its intermediate revoked HAProxy refuses the other client too: {} {} {}",
        other_answer.status,
        other_answer.body,
        other_answer.stderr
    );
}

/// Unix seconds now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `openssl verify` of `leaf` as a relying party whose clock says `at`,
/// with the CRLs certd serves now (`-crl_check`: the leaf's; or with
/// `all_crls`, `-crl_check_all`: every certificate's of the chain).
fn verify_at(daemon: &Daemon, leaf: &str, at: i64, all_crls: bool) -> (bool, String) {
    let dir = daemon.tmp.path();
    let crls = http("GET", &format!("{}/crls.pem", daemon.http), &[], b"");
    assert_eq!(crls.status, 200, "{}", String::from_utf8_lossy(&crls.body));
    let crls = common::write_file(&dir.join("crls-now.pem"), &crls.body);
    let bundle = daemon.data_dir.join("bundle.pem");
    let intermediate = daemon.data_dir.join("intermediate.pem");
    openssl(&[
        "verify",
        if all_crls {
            "-crl_check_all"
        } else {
            "-crl_check"
        },
        "-attime",
        &at.to_string(),
        "-CAfile",
        bundle.to_str().unwrap(),
        "-untrusted",
        intermediate.to_str().unwrap(),
        "-CRLfile",
        &crls,
        leaf,
    ])
}

/// The thisUpdate and nextUpdate of every CRL in `/crls.pem`, by issuer.
fn crl_validities(daemon: &Daemon) -> Vec<(String, i64, i64)> {
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;
    let crls = http("GET", &format!("{}/crls.pem", daemon.http), &[], b"");
    x509_parser::pem::Pem::iter_from_buffer(&crls.body)
        .map(|block| {
            let block = block.unwrap();
            let (_, crl) = CertificateRevocationList::from_der(&block.contents).unwrap();
            (
                crl.issuer().to_string(),
                crl.last_update().timestamp(),
                crl.next_update().unwrap().timestamp(),
            )
        })
        .collect()
}

/// A relying party whose clock lags 30 s, loading the CRLs just after a
/// revocation, reports the certificate revoked (error 23) instead of
/// refusing every client with "CRL is not yet valid": every CRL certd
/// signs, an intermediate's and the root's, has its thisUpdate backdated
/// like a certificate's notBefore, while its nextUpdate stays the full
/// validity (24 hours, the root's 180 days) after the signing.
#[tokio::test]
async fn a_relying_party_whose_clock_lags_finds_a_crl_signed_just_now_valid() {
    let daemon = Daemon::start();
    let (payments, payments_leaf) = workload(&daemon, "payments").await;
    let (_, orders_leaf) = workload(&daemon, "orders").await;
    let (day, root_crl_validity) = (24 * 3600, 180 * 24 * 3600);

    let before = unix_now();
    let output = daemon.cli(&["revoke", &payments.issued.serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (ok, text) = verify_at(&daemon, &payments_leaf, unix_now() - 30, false);
    assert!(
        !ok && text.contains("error 23 at 0 depth") && !text.contains("not yet valid"),
        "the revoked leaf, 30 s behind: {text}"
    );
    let (ok, text) = verify_at(&daemon, &orders_leaf, unix_now() - 30, false);
    assert!(ok, "another leaf, 30 s behind: {text}");
    let after = unix_now();
    let validities = crl_validities(&daemon);
    let intermediate_crl = validities
        .iter()
        .find(|(issuer, _, _)| issuer.contains("intermediate"))
        .unwrap();
    let (_, this_update, next_update) = intermediate_crl;
    assert!(*this_update <= after - 60, "{intermediate_crl:?}");
    assert!(
        (before + day..=after + day).contains(next_update),
        "{intermediate_crl:?}"
    );

    // An intermediate revoked on the root CRL: the same for the root's.
    let serial = intermediate_serial(&daemon);
    let before = unix_now();
    let output = daemon.cli(&["ca", "revoke-intermediate", &serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (ok, text) = verify_at(&daemon, &orders_leaf, unix_now() - 30, true);
    assert!(
        !ok && text.contains("error 23 at 1 depth") && !text.contains("not yet valid"),
        "the revoked intermediate, 30 s behind: {text}"
    );
    let after = unix_now();
    let validities = crl_validities(&daemon);
    let root_crl = validities
        .iter()
        .find(|(issuer, _, _)| issuer.contains("root"))
        .unwrap();
    let (_, this_update, next_update) = root_crl;
    assert!(*this_update <= after - 60, "{root_crl:?}");
    assert!(
        (before + root_crl_validity..=after + root_crl_validity).contains(next_update),
        "{root_crl:?}"
    );
}

#[tokio::test]
async fn relying_parties_find_the_issuers_and_the_responder_from_the_certificates() {
    let daemon = Daemon::start();
    let dir = daemon.tmp.path().to_owned();
    let billing = daemon.bootstrap("billing").await;
    let leaf = common::write_file(
        &dir.join("leaf.pem"),
        billing.issued.certificate_pem.as_bytes(),
    );

    // The OCSP responder, from the URL in the leaf itself.
    let (ok, url) = openssl(&["x509", "-noout", "-ocsp_uri", "-in", &leaf]);
    assert!(ok, "{url}");
    let intermediate = daemon.data_dir.join("intermediate.pem");
    let bundle = daemon.data_dir.join("bundle.pem");
    let (ok, text) = common::openssl_ocsp(
        intermediate.to_str().unwrap(),
        &leaf,
        url.trim(),
        bundle.to_str().unwrap(),
    );
    assert!(
        ok && text.contains("Response verify OK") && text.contains(": good"),
        "{text}"
    );

    // The CA Issuers URLs: the leaf's serves the intermediate (DER), the
    // intermediate's the root; the bundle over HTTP is the file's.
    let ca_issuers = |certificate: &str| -> String {
        let (_, text) = openssl(&["x509", "-noout", "-text", "-in", certificate]);
        text.lines()
            .find_map(|line| line.trim().strip_prefix("CA Issuers - URI:"))
            .unwrap_or_else(|| panic!("no CA Issuers URL in {certificate}: {text}"))
            .to_owned()
    };
    let pem_of = |path: &Path| std::fs::read_to_string(path).unwrap();
    let der_of = |pem: &str| common::pem_certs(pem)[0].to_vec();
    let fetched = http("GET", &ca_issuers(&leaf), &[], b"");
    assert_eq!(
        fetched.header("content-type"),
        Some("application/pkix-cert")
    );
    assert_eq!(fetched.body, der_of(&pem_of(&intermediate)));
    let fetched = http("GET", &ca_issuers(intermediate.to_str().unwrap()), &[], b"");
    assert_eq!(
        fetched.body,
        der_of(&pem_of(&daemon.data_dir.join("root.pem")))
    );
    let served = http("GET", &format!("{}/bundle.pem", daemon.http), &[], b"");
    assert_eq!(served.body, pem_of(&bundle).into_bytes());
    let etag = served.header("etag").unwrap().to_owned();
    let again = http(
        "GET",
        &format!("{}/bundle.pem", daemon.http),
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    let served = http(
        "GET",
        &format!("{}/intermediate.pem", daemon.http),
        &[],
        b"",
    );
    assert_eq!(served.body, pem_of(&intermediate).into_bytes());

    // The intermediate's CRL distribution point is the root CRL certd
    // serves, and it verifies against the root.
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        intermediate.to_str().unwrap(),
    ]);
    let root_crl_url = text
        .lines()
        .skip_while(|line| !line.contains("CRL Distribution Points"))
        .find_map(|line| line.trim().strip_prefix("URI:"))
        .expect("a CRL distribution point")
        .to_owned();
    let root_crl = http("GET", &root_crl_url, &[], b"");
    assert_eq!(root_crl.status, 200);
    let root_crl_file = common::write_file(&dir.join("root.crl"), &root_crl.body);
    let (ok, text) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        &root_crl_file,
        "-CAfile",
        bundle.to_str().unwrap(),
        "-noout",
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");
}

#[test]
fn crl_sync_replaces_the_file_only_on_change_and_keeps_it_while_certd_is_down() {
    let mut daemon = Daemon::start();
    let dir = daemon.tmp.path().to_owned();
    let out = dir.join("nginx-crls.pem");
    let hook_runs = dir.join("hook-runs");
    let hook = format!("echo run >> {}", hook_runs.display());
    let bundle = daemon.data_dir.join("bundle.pem");
    let sync = |daemon: &Daemon| {
        daemon.cli(&[
            "crl",
            "sync",
            "--http",
            &daemon.http,
            "--out",
            out.to_str().unwrap(),
            "--exec",
            &hook,
            "--ca-bundle",
            bundle.to_str().unwrap(),
        ])
    };
    let runs = || {
        std::fs::read_to_string(&hook_runs)
            .unwrap_or_default()
            .lines()
            .count()
    };

    let output = sync(&daemon);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = std::fs::read(&out).unwrap();
    assert_eq!(
        first
            .windows(15)
            .filter(|w| w == b"BEGIN X509 CRL-")
            .count(),
        2,
        "the root's and the intermediate's"
    );
    assert_eq!(runs(), 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // Unchanged: no write, no hook.
    let output = sync(&daemon);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(runs(), 1);

    // New CRLs (here a new root CRL, signed beside the daemon): written
    // again, hook again.
    let first_root_crl = std::fs::read(daemon.data_dir.join("root.crl")).unwrap();
    let output = daemon.cli(&["ca", "sign-root-crl"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = sync(&daemon);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(runs(), 2);
    let second = std::fs::read(&out).unwrap();
    assert_ne!(first, second);

    // An older CRL served again (a restored backup, or a replay on the
    // way) is refused: the file never goes back in time.
    std::fs::write(daemon.data_dir.join("root.crl"), &first_root_crl).unwrap();
    let output = sync(&daemon);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("older than number 2"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&out).unwrap(), second);
    assert_eq!(runs(), 2);

    // certd down: exit 3 ("cannot reach"), and the file stays as it was.
    daemon.kill();
    let output = sync(&daemon);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(std::fs::read(&out).unwrap(), second);
    assert_eq!(runs(), 2);
    // No temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".nginx-crls"))
        .collect();
    assert!(leftovers.is_empty());
}

/// The first half of a root rotation: a new root added to `bundle.pem`
/// (made where the root keys are) reaches every workload through certd,
/// without a restart, before anything is signed under it. A file that
/// would drop the CA's own root is refused and the last good bundle kept.
#[tokio::test]
async fn a_root_added_to_the_bundle_reaches_workloads_without_a_restart() {
    let daemon = Daemon::start();
    let before = daemon.bootstrap("billing").await;
    assert_eq!(common::pem_certs(&before.issued.trust_bundle_pem).len(), 1);
    let spiffe = |daemon: &Daemon| -> serde_json::Value {
        let body = http("GET", &format!("{}/bundle.spiffe", daemon.http), &[], b"").body;
        serde_json::from_slice(&body).unwrap()
    };
    let x509_keys = |bundle: &serde_json::Value| {
        bundle["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|key| key["use"] == "x509-svid")
            .count()
    };
    let sequence_before = spiffe(&daemon)["spiffe_sequence"].as_u64().unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "certd root CA next");
    let next_root = params.self_signed(&key).unwrap();
    let bundle_path = daemon.data_dir.join("bundle.pem");
    let old_bundle = std::fs::read_to_string(&bundle_path).unwrap();
    let both = format!("{old_bundle}{}", next_root.pem());
    std::fs::write(&bundle_path, &both).unwrap();

    let after = daemon.bootstrap("orders").await;
    assert_eq!(after.issued.trust_bundle_pem, both);
    let served = http("GET", &format!("{}/bundle.pem", daemon.http), &[], b"");
    assert_eq!(served.body, both.as_bytes());
    let bundle = spiffe(&daemon);
    assert_eq!(x509_keys(&bundle), 2);
    assert!(bundle["spiffe_sequence"].as_u64().unwrap() > sequence_before);
    // The old workload gets it at its next renewal.
    let renewed = daemon.renew(Some(&before)).await.unwrap();
    assert_eq!(renewed.trust_bundle_pem, both);

    // A bundle without the CA's own root would cut every workload off.
    // (Of another size, so certd sees the file change whatever its mtime.)
    std::fs::write(&bundle_path, next_root.pem()).unwrap();
    let served = http("GET", &format!("{}/bundle.pem", daemon.http), &[], b"");
    assert_eq!(served.body, both.as_bytes(), "the last good bundle");
    // Its log line (the log writer may lag a moment).
    let started = std::time::Instant::now();
    while !daemon
        .log_text()
        .contains("the trust bundle file is not acceptable")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{}",
            daemon.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `certd ca rotate-root` prepares the next root beside the running
/// daemon; certd hands it out with the old one at once, and a second
/// rotation is refused while one is prepared.
#[tokio::test]
async fn rotate_root_prepares_the_next_root_and_certd_hands_it_out() {
    let daemon = Daemon::start();
    let output = daemon.cli(&["ca", "rotate-root"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("bundle.pem now holds 2 roots"),
        "{}",
        stdout(&output)
    );
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(daemon.data_dir.join("root-next.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let next_root = std::fs::read_to_string(daemon.data_dir.join("root-next.pem")).unwrap();
    let served = http("GET", &format!("{}/bundle.pem", daemon.http), &[], b"");
    let served = String::from_utf8(served.body).unwrap();
    let roots = common::pem_certs(&served);
    assert_eq!(roots.len(), 2);
    assert_eq!(roots[1].to_vec(), common::pem_certs(&next_root)[0].to_vec());
    let (_, old_subject) = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-in",
        daemon.data_dir.join("root.pem").to_str().unwrap(),
    ]);
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName,basicConstraints",
        "-in",
        daemon.data_dir.join("root-next.pem").to_str().unwrap(),
    ]);
    assert!(
        text.contains("certd root CA") && !text.contains(old_subject.trim()),
        "{text}"
    );
    assert!(
        text.contains("URI:spiffe://certd.internal") && text.contains("CA:TRUE"),
        "{text}"
    );

    // Workloads get both, and what the old root signed still verifies.
    let billing = daemon.bootstrap("billing").await;
    assert_eq!(common::pem_certs(&billing.issued.trust_bundle_pem).len(), 2);
    let dir = daemon.tmp.path();
    let chain = common::write_file(&dir.join("billing.pem"), billing.chain_pem.as_bytes());
    let bundle = common::write_file(
        &dir.join("both.pem"),
        billing.issued.trust_bundle_pem.as_bytes(),
    );
    let intermediate = daemon.data_dir.join("intermediate.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &bundle,
        "-untrusted",
        intermediate.to_str().unwrap(),
        &chain,
    ]);
    assert!(ok && text.contains(": OK"), "{text}");

    let again = daemon.cli(&["ca", "rotate-root"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let served = http("GET", &format!("{}/bundle.pem", daemon.http), &[], b"");
    assert_eq!(
        common::pem_certs(&String::from_utf8(served.body).unwrap()).len(),
        2
    );
}
