//! The intermediate CA key in a PKCS#11 token: SoftHSM2, a real software
//! token, set up per test in a temporary directory. `certd init
//! --pkcs11-module` generates the key there; the daemon signs workload
//! certificates, its own TLS certificate, CRLs and OCSP answers with it,
//! which OpenSSL checks; without the PIN, or with a wrong one, it refuses
//! to start and says why.
//!
//! SoftHSM2 comes from the Debian package `softhsm2` (`.ci/run` installs
//! it). Without it these tests skip with one loud line, unless
//! `CERTD_REQUIRE_SOFTHSM` is set (as in CI), where they fail.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::softhsm::{SoftHsm, TOKEN, softhsm};
use common::{Daemon, openssl, stderr};

const CERTD: &str = env!("CARGO_BIN_EXE_certd");
/// `certd init` with the intermediate key generated in the token.
fn init(hsm: &SoftHsm, data_dir: &Path, token: &str, extra: &[&str]) -> std::process::Output {
    Command::new(CERTD)
        .arg("init")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--pkcs11-module")
        .arg(&hsm.module)
        .args(["--pkcs11-token", token, "--pkcs11-pin-file"])
        .arg(&hsm.pin_file)
        .args(extra)
        .env("SOFTHSM2_CONF", &hsm.config)
        .env_remove("CERTD_PKCS11_PIN_FILE")
        .output()
        .unwrap()
}

/// `certd serve` that must fail: its exit status and what it said.
fn serve_fails(hsm: &SoftHsm, data_dir: &Path, pin_file: Option<&Path>) -> String {
    let mut command = common::serve_command(data_dir);
    command
        .env("SOFTHSM2_CONF", &hsm.config)
        .env_remove("CERTD_PKCS11_PIN_FILE")
        .stderr(Stdio::piped());
    if let Some(pin_file) = pin_file {
        command.env("CERTD_PKCS11_PIN_FILE", pin_file);
    }
    let output = command.output().unwrap();
    assert!(
        !output.status.success(),
        "serve started: {}",
        stderr(&output)
    );
    let text = stderr(&output);
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    text
}

/// The boolean attributes of the one private key in the token store under
/// `dir`, as `softhsm2-dump-file` shows them.
fn private_key_attributes(dir: &Path) -> std::collections::HashMap<String, String> {
    let mut found = Vec::new();
    for token in std::fs::read_dir(dir.join("tokens")).unwrap() {
        for object in std::fs::read_dir(token.unwrap().path()).unwrap() {
            let object = object.unwrap().path();
            if object.extension().is_none_or(|e| e != "object")
                || object.file_name().is_some_and(|n| n == "token.object")
            {
                continue;
            }
            let output = Command::new("softhsm2-dump-file")
                .arg(&object)
                .output()
                .unwrap();
            let dump = String::from_utf8_lossy(&output.stdout).into_owned();
            if dump.contains("CKO_PRIVATE_KEY") {
                found.push(dump);
            }
        }
    }
    assert_eq!(found.len(), 1, "one private key in the token");
    // Each attribute: its name, then its type, then its value, on three
    // lines whose last word is what matters.
    let lines: Vec<&str> = found[0].lines().collect();
    let mut attributes = std::collections::HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line
            .split_whitespace()
            .last()
            .filter(|w| w.starts_with("CKA_"))
        else {
            continue;
        };
        let is_boolean = lines
            .get(i + 1)
            .is_some_and(|l| l.ends_with("boolean attribute"));
        let value = lines.get(i + 2).and_then(|l| l.split_whitespace().last());
        if let (true, Some(value)) = (is_boolean, value) {
            attributes.insert(name.to_owned(), value.to_owned());
        }
    }
    attributes
}

/// `certd serve` on `data_dir`, its certd.toml naming the token's PIN file.
fn serve_with_pin(hsm: &SoftHsm, tmp: tempfile::TempDir, data_dir: &Path) -> Daemon {
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        format!("[ca]\npkcs11_pin_file = {:?}\n", path(&hsm.pin_file)),
    )
    .unwrap();
    Daemon::start_with_env(
        tmp,
        data_dir.to_owned(),
        &["--config", path(&config)],
        &hsm.env(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn a_p256_intermediate_key_lives_in_the_token_and_signs_what_openssl_checks() {
    key_in_the_token_signs_what_openssl_checks("ecdsa-p256").await;
}

#[tokio::test]
async fn a_p384_intermediate_key_lives_in_the_token_and_signs_what_openssl_checks() {
    key_in_the_token_signs_what_openssl_checks("ecdsa-p384").await;
}

async fn key_in_the_token_signs_what_openssl_checks(key_type: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = softhsm(tmp.path()) else {
        return;
    };
    let data_dir = tmp.path().join("ca");
    let output = init(&hsm, &data_dir, TOKEN, &["--key-type", key_type]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !data_dir.join("intermediate.key").exists(),
        "no key file: the key is in the token"
    );
    let metadata = std::fs::read_to_string(data_dir.join("ca.toml")).unwrap();
    assert!(metadata.contains("token_label = \"certd\""), "{metadata}");
    assert!(metadata.contains(key_type), "{metadata}");

    // The private key is sensitive and cannot be exported: the token's
    // own dump tool reads its attributes.
    let private_key = private_key_attributes(tmp.path());
    assert_eq!(
        private_key.get("CKA_SENSITIVE").map(String::as_str),
        Some("TRUE")
    );
    assert_eq!(
        private_key.get("CKA_EXTRACTABLE").map(String::as_str),
        Some("FALSE")
    );
    assert_eq!(
        private_key.get("CKA_SIGN").map(String::as_str),
        Some("TRUE")
    );

    let daemon = serve_with_pin(&hsm, tmp, &data_dir);
    // The log says where the key is (its writer may lag the ready line).
    let started = std::time::Instant::now();
    while !daemon.log_text().contains("intermediate_key=PKCS#11 token") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{}",
            daemon.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The daemon's own TLS certificate was signed in the token: this
    // handshake verifies it against the bundle.
    let billing = daemon.bootstrap("billing").await;
    let dir = daemon.tmp.path();
    let chain = dir.join("billing.pem");
    std::fs::write(&chain, &billing.chain_pem).unwrap();
    let bundle = data_dir.join("bundle.pem");
    let intermediate = data_dir.join("intermediate.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        path(&bundle),
        "-untrusted",
        path(&intermediate),
        path(&chain),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");

    // OCSP answers are signed in the token too.
    let (ok, text) = common::openssl_ocsp(
        path(&intermediate),
        path(&chain),
        &format!("{}/ocsp", daemon.http),
        path(&bundle),
    );
    assert!(
        ok && text.contains("Response verify OK") && text.contains(": good"),
        "{text}"
    );
    // More concurrent signers than the token gets sessions (16): they
    // wait their turn, and every request is answered.
    let output = daemon.cli(&[
        "bench",
        "issue",
        "--server",
        &daemon.grpc,
        "--concurrency",
        "40",
        "--count",
        "400",
        "--json",
        // The store holds the test's own entries.
        "--allow-store-in-use",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = common::stdout(&output);
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], 400, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");

    // And the CRL.
    let crl = common::http("GET", &format!("{}/crl", daemon.http), &[], b"");
    assert_eq!(crl.status, 200);
    let crl_file = dir.join("crl.der");
    std::fs::write(&crl_file, &crl.body).unwrap();
    let (ok, text) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        path(&crl_file),
        "-CAfile",
        path(&intermediate),
        "-noout",
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");
}

#[test]
fn serve_refuses_without_the_pin_or_with_a_wrong_one_and_init_refuses_what_it_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = softhsm(tmp.path()) else {
        return;
    };
    let data_dir = tmp.path().join("ca");
    let output = init(&hsm, &data_dir, TOKEN, &[]);
    assert!(output.status.success(), "{}", stderr(&output));

    let text = serve_fails(&hsm, &data_dir, None);
    assert!(text.contains("CERTD_PKCS11_PIN_FILE"), "{text}");
    let wrong = tmp.path().join("wrong-pin");
    std::fs::write(&wrong, "0000\n").unwrap();
    let text = serve_fails(&hsm, &data_dir, Some(&wrong));
    assert!(text.contains("the PIN is wrong"), "{text}");

    // A second CA cannot take the same key label, and nothing is written.
    let second = tmp.path().join("second");
    let output = init(&hsm, &second, TOKEN, &[]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains("already holds objects labelled"), "{text}");
    assert!(!second.join("ca.toml").exists());
    // Another label is fine.
    let output = init(&hsm, &second, TOKEN, &["--pkcs11-key-label", "second-ca"]);
    assert!(output.status.success(), "{}", stderr(&output));

    for (token, extra, expected) in [
        (
            TOKEN,
            &["--key-type", "ed25519"][..],
            "Ed25519 CA keys cannot be kept in a PKCS#11 token",
        ),
        ("no-such-token", &[][..], "has no token with this label"),
    ] {
        let dir = tmp.path().join("refused");
        let output = init(&hsm, &dir, token, extra);
        assert!(!output.status.success(), "{extra:?}");
        let text = stderr(&output);
        assert!(text.contains(expected), "{extra:?}: {text}");
        assert!(!dir.join("ca.toml").exists());
    }
}

/// An intermediate whose key is in the token rotates like one in a file:
/// the next key is made in the token under a label of its own, the running
/// daemon promotes it (ca.toml then names it), signs with it, and the
/// previous key, still in the token, keeps answering OCSP for the
/// certificates it signed.
#[tokio::test]
async fn an_intermediate_in_the_token_rotates_and_the_previous_key_keeps_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = softhsm(tmp.path()) else {
        return;
    };
    let data_dir = tmp.path().join("ca");
    let output = init(&hsm, &data_dir, TOKEN, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let daemon = serve_with_pin(&hsm, tmp, &data_dir);
    let before = daemon.bootstrap("billing").await;
    let old_intermediate = std::fs::read_to_string(data_dir.join("intermediate.pem")).unwrap();

    // Without the PIN, nothing is made.
    let rotate = |pin: bool| {
        let mut command = Command::new(CERTD);
        command
            .args(["ca", "rotate-intermediate", "--data-dir", path(&data_dir)])
            .env("SOFTHSM2_CONF", &hsm.config)
            .env_remove("CERTD_PKCS11_PIN_FILE");
        if pin {
            command.arg("--pkcs11-pin-file").arg(&hsm.pin_file);
        }
        command.output().unwrap()
    };
    let refused = rotate(false);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("give its PIN"),
        "{}",
        stderr(&refused)
    );
    assert!(!data_dir.join("intermediate-next.pem").exists());
    let output = rotate(true);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !data_dir.join("intermediate-next.key").exists(),
        "no key file"
    );

    // SIGHUP: certd looks for the prepared intermediate now, not at its
    // next poll.
    daemon.reload();
    daemon.wait_for_signer_changes(1, || daemon.log_text());
    assert!(
        daemon.logged_soon("now signing with a new set of intermediates"),
        "{}",
        daemon.log_text()
    );
    let metadata = std::fs::read_to_string(data_dir.join("ca.toml")).unwrap();
    assert!(
        metadata.contains("key_label = \"certd-intermediate-"),
        "ca.toml names the new key: {metadata}"
    );
    let new_intermediate = std::fs::read_to_string(data_dir.join("intermediate.pem")).unwrap();
    assert_ne!(new_intermediate, old_intermediate);
    let after = daemon.bootstrap("orders").await;
    assert_eq!(
        common::pem_certs(&after.chain_pem)[1].to_vec(),
        common::pem_certs(&new_intermediate)[0].to_vec()
    );

    // OpenSSL checks each certificate's OCSP answer, signed in the token
    // by its own intermediate.
    let dir = daemon.tmp.path().to_owned();
    let bundle = data_dir.join("bundle.pem");
    for (name, identity, issuer) in [
        ("before", &before, &old_intermediate),
        ("after", &after, &new_intermediate),
    ] {
        let leaf = common::write_file(&dir.join(format!("{name}.pem")), &identity.chain_pem);
        let issuer = common::write_file(&dir.join(format!("{name}-issuer.pem")), issuer);
        let (ok, text) = common::openssl_ocsp(
            &issuer,
            &leaf,
            &format!("{}/ocsp", daemon.http),
            path(&bundle),
        );
        assert!(
            ok && text.contains("Response verify OK") && text.contains(": good"),
            "{name}: {text}"
        );
    }
}
