//! Partitioned CRLs end to end (`[revocation] crl_shards`), judged by
//! OpenSSL: each leaf names its shard in its CRL distribution point, the
//! shard lists the revoked serials that fall in it and no others under a
//! critical Issuing Distribution Point naming that URL, and a relying party
//! that loads only the shard a leaf names refuses a revoked leaf, accepts a
//! good one, and takes no shard for another shard's leaf; nginx, checking
//! whole chains with `/crls.pem`, keeps working with such leaves.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use certd::config::ConfigFile;
use common::acme_clients::{Background, wait_until};
use common::{Daemon, crl_distribution_point, http, nginx_available, openssl, stderr};

/// `certd serve` with `[revocation] crl_shards = shards`.
fn start(shards: u16) -> Daemon {
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = common::write_file(
        &tmp.path().join("certd.toml"),
        format!("[revocation]\ncrl_shards = {shards}\n"),
    );
    let data_dir = tmp.path().join("ca");
    Daemon::start_in(tmp, data_dir, &["--config", &config])
}

/// A workload of `service`: its serial and the path of its certificate.
async fn workload(daemon: &Daemon, service: &str) -> (String, String) {
    let identity = daemon.bootstrap(service).await;
    let leaf = common::write_file(
        &daemon.tmp.path().join(format!("{service}.pem")),
        identity.issued.certificate_pem.as_bytes(),
    );
    (identity.issued.serial, leaf)
}

/// GETs `url` (a CRL, PEM) and writes it to `name` in the test's directory.
fn fetch_pem(daemon: &Daemon, url: &str, name: &str) -> String {
    let response = http("GET", url, &[], b"");
    assert_eq!(
        response.status,
        200,
        "{url}: {}",
        String::from_utf8_lossy(&response.body)
    );
    common::write_file(&daemon.tmp.path().join(name), &response.body)
}

/// The serials the PEM CRL at `path` lists (lower-case hex), and its text.
fn listed(path: &str) -> (Vec<String>, String) {
    let (ok, text) = openssl(&["crl", "-in", path, "-noout", "-text"]);
    assert!(ok, "{text}");
    let serials = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Serial Number: "))
        .map(str::to_lowercase)
        .collect();
    (serials, text)
}

/// `openssl verify` of `leaf` with `crl_file` as its only CRLs:
/// `-crl_check` (the leaf's) or `-crl_check_all` (every certificate's).
fn verify(daemon: &Daemon, check: &str, crl_file: &str, leaf: &str) -> (bool, String) {
    let bundle = daemon.data_dir.join("bundle.pem");
    let intermediate = daemon.data_dir.join("intermediate.pem");
    openssl(&[
        "verify",
        check,
        "-CAfile",
        bundle.to_str().unwrap(),
        "-untrusted",
        intermediate.to_str().unwrap(),
        "-CRLfile",
        crl_file,
        leaf,
    ])
}

/// A hex serial modulo `count`, as certd picks the shard.
fn shard_of(serial_hex: &str, count: u32) -> u32 {
    serial_hex
        .chars()
        .map(|digit| digit.to_digit(16).expect("hex serial"))
        .fold(0, |remainder, digit| (remainder * 16 + digit) % count)
}

/// With four shards: a leaf names the shard its serial picks; once it is
/// revoked, its shard lists it and another shard does not; OpenSSL with
/// the revoked leaf's shard refuses it (error 23), with another leaf's
/// shard accepts that leaf, finds the other shard out of scope for the
/// revoked leaf (error 44, "different CRL scope": its IDP names another
/// URL), and with the root's
/// CRL beside the shard checks the whole chain the same way. Counts and
/// indexes certd does not publish are 404.
#[tokio::test]
async fn openssl_checks_each_leaf_against_the_shard_it_names() {
    let daemon = start(4);
    let (revoked_serial, revoked_leaf) = workload(&daemon, "payments").await;
    let revoked_url = crl_distribution_point(&revoked_leaf);
    let prefix = format!("{}/crl/", daemon.http);
    let index = revoked_url
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once("/shards/4/"))
        .map(|(_, index)| index.to_owned())
        .unwrap_or_else(|| panic!("not a shard of 4 under {prefix}: {revoked_url}"));
    assert_eq!(index, shard_of(&revoked_serial, 4).to_string());

    // Another leaf in another shard (each new one has a 3 in 4 chance).
    let mut other = None;
    for attempt in 0..24 {
        let (serial, leaf) = workload(&daemon, &format!("orders{attempt}")).await;
        let url = crl_distribution_point(&leaf);
        if url != revoked_url {
            other = Some((serial, leaf, url));
            break;
        }
    }
    let (other_serial, other_leaf, other_url) = other.expect("a leaf in another shard");

    let output = daemon.cli(&["revoke", &revoked_serial, "--reason", "key-compromise"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let revoked_shard = fetch_pem(&daemon, &format!("{revoked_url}.pem"), "revoked-shard.pem");
    let other_shard = fetch_pem(&daemon, &format!("{other_url}.pem"), "other-shard.pem");
    let (serials, text) = listed(&revoked_shard);
    assert_eq!(serials, [revoked_serial.to_lowercase()], "{text}");
    assert!(
        text.contains("X509v3 Issuing Distribution Point: critical"),
        "{text}"
    );
    assert!(text.contains(&format!("URI:{revoked_url}")), "{text}");
    assert!(text.contains("Only User Certificates"), "{text}");
    let (serials, text) = listed(&other_shard);
    assert!(serials.is_empty(), "the other shard lists nothing: {text}");
    assert!(text.contains(&format!("URI:{other_url}")), "{text}");
    // The whole CRL lists it too, without an IDP, for relying parties
    // that load it.
    let whole = fetch_pem(&daemon, &format!("{}/crl.pem", daemon.http), "whole.pem");
    let (serials, text) = listed(&whole);
    assert_eq!(serials, [revoked_serial.to_lowercase()], "{text}");
    assert!(!text.contains("Issuing Distribution Point"), "{text}");
    // The DER form, where the CRL distribution point points.
    let der = http("GET", &revoked_url, &[], b"");
    assert_eq!(der.status, 200);
    assert_eq!(der.header("content-type"), Some("application/pkix-crl"));

    let (ok, text) = verify(&daemon, "-crl_check", &revoked_shard, &revoked_leaf);
    assert!(!ok && text.contains("error 23"), "revoked: {text}");
    let (ok, text) = verify(&daemon, "-crl_check", &other_shard, &other_leaf);
    assert!(ok && text.contains(": OK"), "{other_serial} passes: {text}");
    let (ok, text) = verify(&daemon, "-crl_check", &other_shard, &revoked_leaf);
    assert!(
        !ok && text.contains("error 44") && text.contains("different CRL scope"),
        "another shard is not the revoked leaf's CRL: {text}"
    );

    // The whole chain: the root's CRL (covering the intermediate) and the
    // leaf's shard.
    let root_der = common::write_file(
        &daemon.tmp.path().join("root.crl"),
        http("GET", &format!("{}/root.crl", daemon.http), &[], b"").body,
    );
    let root_pem = daemon.tmp.path().join("root-crl.pem");
    let (ok, text) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        &root_der,
        "-out",
        root_pem.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let chain_crls = |shard: &str, name: &str| {
        let mut both = std::fs::read(&root_pem).unwrap();
        both.extend(std::fs::read(shard).unwrap());
        common::write_file(&daemon.tmp.path().join(name), both)
    };
    let (ok, text) = verify(
        &daemon,
        "-crl_check_all",
        &chain_crls(&other_shard, "chain-other.pem"),
        &other_leaf,
    );
    assert!(ok, "whole chain, good leaf: {text}");
    let (ok, text) = verify(
        &daemon,
        "-crl_check_all",
        &chain_crls(&revoked_shard, "chain-revoked.pem"),
        &revoked_leaf,
    );
    assert!(
        !ok && text.contains("error 23"),
        "whole chain, revoked: {text}"
    );

    // Only what is published: the count in use (and retired ones), indexes
    // below it, the intermediate's key id.
    let (base, _) = revoked_url.rsplit_once("/4/").unwrap();
    for url in [
        format!("{base}/4/4"),
        format!("{base}/3/0"),
        format!("{base}/4/x"),
        format!("{}/crl/00/shards/4/0", daemon.http),
    ] {
        assert_eq!(http("GET", &url, &[], b"").status, 404, "{url}");
    }
}

/// Changing the count keeps old leaves covered: a leaf issued with 4
/// shards still finds its shard after a restart with 16 shards and 4
/// retired, while new leaves name a shard of 16.
#[tokio::test]
async fn a_retired_count_keeps_its_shards_published() {
    let daemon = start(4);
    let (serial, leaf) = workload(&daemon, "payments").await;
    let old_url = crl_distribution_point(&leaf);
    let config = common::write_file(
        &daemon.tmp.path().join("certd.toml"),
        "[revocation]\ncrl_shards = 16\ncrl_retired_shards = [4]\n",
    );
    let daemon = restart(daemon, &config);
    let (_, new_leaf) = workload(&daemon, "orders").await;
    let new_url = crl_distribution_point(&new_leaf);
    assert!(new_url.contains("/shards/16/"), "{new_url}");

    let output = daemon.cli(&["revoke", &serial, "--reason", "superseded"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // The old leaf's URL still names the old HTTP port; the path is what
    // certd serves.
    let path = old_url.splitn(4, '/').nth(3).expect("a path");
    let shard = fetch_pem(&daemon, &format!("{}/{path}.pem", daemon.http), "old.pem");
    let (serials, text) = listed(&shard);
    assert_eq!(serials, [serial.to_lowercase()], "{text}");
}

/// Stops `daemon` (SIGTERM) and serves its data directory again with
/// `config`, in the same temporary directory.
fn restart(mut daemon: Daemon, config: &str) -> Daemon {
    daemon.terminate();
    let tmp = std::mem::replace(&mut daemon.tmp, tempfile::tempdir().expect("temp dir"));
    Daemon::start_in(tmp, daemon.data_dir.clone(), &["--config", config])
}

/// The guide's `crl_shards` settings are valid configuration, and say
/// what the guide says they do.
#[test]
fn the_guides_shard_settings_are_valid() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guides/relying-parties.md"),
    )
    .expect("the relying parties guide");
    let blocks: Vec<String> = common::docs::fenced_blocks(&guide, "toml")
        .into_iter()
        .filter(|block| block.contains("crl_shards"))
        .collect();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    let counts: Vec<(u16, Vec<u16>)> = blocks
        .iter()
        .map(|block| {
            let config = ConfigFile::parse(block, Path::new("certd.toml"))
                .and_then(|file| file.validate())
                .unwrap_or_else(|error| panic!("{block}: {error}"));
            (
                config.revocation.crl_shards.get(),
                config
                    .revocation
                    .crl_retired_shards
                    .iter()
                    .map(|count| count.get())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(counts, [(64, vec![]), (128, vec![64])]);
}

/// nginx itself as the whole-chain checker (`ssl_verify_client on`,
/// `ssl_crl` with `/crls.pem`, which still carries the whole CRLs), with
/// leaves that name their shards: it takes a client before `certd revoke`,
/// and with the CRL file fetched again it refuses that client while
/// another one still gets through.
#[tokio::test]
async fn nginx_checks_whole_chains_of_leaves_that_name_shards() {
    if !nginx_available() {
        return;
    }
    let daemon = start(4);
    let dir = daemon.tmp.path().join("nginx");
    std::fs::create_dir_all(&dir).expect("nginx directory");
    let write_identity = |name: &str, identity: &common::Identity| {
        let chain = common::write_file(&dir.join(format!("{name}.pem")), &identity.chain_pem);
        let key = common::write_file(&dir.join(format!("{name}.key")), &identity.key_pem);
        (chain, key)
    };
    // The server's certificate is a workload's too (it has serverAuth).
    let (server_chain, server_key) = write_identity("web", &daemon.bootstrap("web").await);
    let payments = daemon.bootstrap("payments").await;
    let client = write_identity("payments", &payments);
    let other = write_identity("orders", &daemon.bootstrap("orders").await);
    let crls = dir.join("crls.pem");
    let fetch_crls = || {
        let fetched = http("GET", &format!("{}/crls.pem", daemon.http), &[], b"");
        assert_eq!(fetched.status, 200);
        std::fs::write(&crls, &fetched.body).expect("write crls.pem");
    };
    fetch_crls();
    let port = common::free_port_below_ephemeral_range();
    // One process (no master and workers), so that stopping it is one kill.
    let conf = format!(
        "master_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\n\
         events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n\
         server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name web.certd.internal;\n\
         ssl_certificate {server_chain};\n    ssl_certificate_key {server_key};\n\
         ssl_client_certificate {bundle};\n    ssl_verify_client on;\n    ssl_verify_depth 2;\n\
         ssl_crl {crls};\n    location / {{ return 200 \"verified $ssl_client_s_dn\\n\"; }}\n  }}\n}}\n",
        dir = dir.display(),
        bundle = daemon.data_dir.join("bundle.pem").display(),
        crls = crls.display(),
    );
    let conf_path = common::write_file(&dir.join("nginx.conf"), conf);
    let start_nginx = || {
        let nginx = Background::spawn(
            Command::new("nginx")
                .arg("-p")
                .arg(&dir)
                .args(["-c", &conf_path, "-g", "daemon off;"]),
            dir.join("nginx.out"),
        );
        wait_until(
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || format!("nginx did not listen: {}", nginx.log_text()),
        );
        nginx
    };
    let curl = |(chain, key): &(String, String)| {
        let output = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
            .args([
                "--cacert",
                daemon.data_dir.join("bundle.pem").to_str().unwrap(),
            ])
            .args(["--cert", chain, "--key", key])
            .args(["--resolve", &format!("web.certd.internal:{port}:127.0.0.1")])
            .arg(format!("https://web.certd.internal:{port}/"))
            .output()
            .expect("run curl");
        common::stdout(&output)
    };

    let nginx = start_nginx();
    let before = curl(&client);
    assert!(
        before.ends_with("\n200") && before.contains("CN=payments"),
        "before the revocation nginx takes the client: {before}"
    );
    drop(nginx);

    let output = daemon.cli(&["revoke", &payments.issued.serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    fetch_crls();
    let _nginx = start_nginx();
    let after = curl(&client);
    assert!(
        after.ends_with("\n400"),
        "after certd revoke nginx refuses it: {after}"
    );
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    assert!(log.contains("certificate revoked"), "nginx's log: {log}");
    let other_answer = curl(&other);
    assert!(
        other_answer.ends_with("\n200") && other_answer.contains("CN=orders"),
        "another client still gets through: {other_answer}"
    );
}
