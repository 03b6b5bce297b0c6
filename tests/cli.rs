//! The `certd` command line as operators, workloads and CI use it, against
//! a real daemon; and what OpenSSL thinks of the certificates.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use x509_parser::prelude::FromDer;

use common::{Daemon, openssl, run_cli, serial_in, stderr, stdout};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn request(daemon: &Daemon, token: &str, out: &Path) -> std::process::Output {
    daemon.request(token, out)
}

/// `certd token create` prints only the token, so `T=$(...)` works.
#[test]
fn token_create_prints_only_the_token() {
    let daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    let output = daemon.cli(&["token", "create", "--service", "billing", "--ttl", "10m"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1);
    assert!(text.trim().starts_with("certd-jt-"), "{text}");
    assert!(
        !daemon.log_text().contains(text.trim()),
        "the token must never be logged"
    );
}

/// `certd request` writes key.pem (0600), cert.pem (leaf, intermediate) and
/// bundle.pem; OpenSSL verifies the chain and shows the issuance profile.
#[test]
fn request_writes_files_that_openssl_accepts() {
    let daemon = Daemon::start();
    let out = daemon.tmp.path().join("billing");
    let output = request(&daemon, &daemon.token("billing"), &out);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("spiffe://certd.internal/svc/billing"));
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    assert_eq!(
        common::pem_certs(&std::fs::read_to_string(out.join("cert.pem")).unwrap()).len(),
        2
    );
    assert_eq!(
        std::fs::read_to_string(out.join("bundle.pem")).unwrap(),
        daemon.bundle_pem()
    );

    if !common::openssl_available() {
        eprintln!("openssl not installed: skipping the OpenSSL checks");
        return;
    }
    let cert = out.join("cert.pem");
    let bundle = out.join("bundle.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        bundle.to_str().unwrap(),
        "-untrusted",
        cert.to_str().unwrap(),
        "-purpose",
        "sslclient",
        cert.to_str().unwrap(),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    for expected in [
        "Subject: CN = billing",
        "Issuer: O = certd.internal, CN = certd intermediate CA",
        "DNS:billing.certd.internal, URI:spiffe://certd.internal/svc/billing",
        "X509v3 Basic Constraints: critical\n                CA:FALSE",
        "X509v3 Key Usage: critical\n                Digital Signature\n",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let (ok, serial) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"]);
    assert!(ok);
    let hex = serial.trim().trim_start_matches("serial=");
    assert_eq!(hex.len(), 40, "a 20-byte serial: {hex}");

    let intermediate = daemon.data_dir.join("intermediate.pem");
    let (_, text) = openssl(&[
        "x509",
        "-in",
        intermediate.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
}

/// `certd renew` replaces the files with a new key and certificate for the
/// same identity.
#[test]
fn renew_replaces_key_and_certificate() {
    let daemon = Daemon::start();
    let dir = daemon.tmp.path().join("billing");
    assert!(
        request(&daemon, &daemon.token("billing"), &dir)
            .status
            .success()
    );
    let old_key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let old_cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let output = daemon.cli(&[
        "renew",
        "--server",
        &daemon.grpc,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(
        std::fs::read_to_string(dir.join("key.pem")).unwrap(),
        old_key
    );
    assert_ne!(
        std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        old_cert
    );
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    assert!(stdout(&output).contains("spiffe://certd.internal/svc/billing"));
}

/// `certd renew --if-needed` leaves a fresh certificate alone; `certd renew
/// --daemon` renews a 6-second identity whenever it is due, again and
/// again, runs its hook after each renewal, keeps the files through an
/// outage while it retries, and stops on SIGTERM. The renewers run with
/// their clock past the renewal point of every certificate they get
/// (`CERTD_TEST_CLOCK_AHEAD`), so none waits for one to fall due.
#[test]
fn the_renewal_daemon_keeps_a_short_lived_identity_fresh() {
    let mut daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &["--ttl", "6s"]);
    let dir = daemon.tmp.path().join("billing");
    let output = request(&daemon, &daemon.token("billing"), &dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = serial_in(&dir);

    let dir_arg = dir.to_str().unwrap();
    let output = daemon.cli(&[
        "renew",
        "--if-needed",
        "--server",
        &daemon.grpc,
        "--dir",
        dir_arg,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("not due"),
        "{}",
        stdout(&output)
    );
    assert_eq!(serial_in(&dir), first);

    let marker = daemon.tmp.path().join("renewed");
    let server = daemon.grpc.clone();
    // Every certificate is due when it arrives: half of 6 s, at most 10%
    // later, has passed on this clock.
    let renewer = |log: &Path| {
        std::process::Command::new(common::CERTD)
            .args(["renew", "--daemon", "--server", &server, "--dir", dir_arg])
            .arg("--exec")
            .arg(format!("echo renewed >> {}", marker.display()))
            .env("CERTD_LOG", "info")
            .env("CERTD_TEST_CLOCK_AHEAD", "5s")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let log = daemon.tmp.path().join("renew.log");
    let mut renewing = renewer(&log);
    let started = std::time::Instant::now();
    let mut serials = std::collections::HashSet::from([first.clone()]);
    while serials.len() < 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "not renewed twice: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        serials.insert(serial_in(&dir));
    }
    // The hook runs just after the files are replaced: give the second
    // run the moment it needs.
    let started = std::time::Instant::now();
    let hooks = loop {
        let hooks = std::fs::read_to_string(&marker).unwrap_or_default();
        if hooks.lines().count() >= 2 || started.elapsed() > std::time::Duration::from_secs(10) {
            break hooks;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(hooks.lines().count() >= 2, "the hook ran {hooks:?}");
    // Always due, it renews back to back; it still stops on SIGTERM,
    // between two renewals. Its outage behaviour is shown by a second one
    // started into the outage, whose files no renewal of this one can be
    // still writing.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &renewing.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        renewing.wait().unwrap().success(),
        "SIGTERM stops a renewer that is always due"
    );

    // certd goes away: the renewer keeps the current files and retries.
    daemon.kill();
    let kept = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let log = daemon.tmp.path().join("renew-outage.log");
    let mut renewer = renewer(&log);
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("renewal failed")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no failure logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(dir.join("cert.pem")).unwrap(), kept);
    assert!(dir.join("key.pem").exists());

    let status = std::process::Command::new("kill")
        .args(["-TERM", &renewer.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        renewer.wait().unwrap().success(),
        "SIGTERM stops it cleanly"
    );
}

/// Between renewals, `renew --daemon` checks certd's trust bundle and
/// replaces a bundle.pem that differs from it, then runs the hook: how a
/// new root reaches software that reads files.
#[test]
fn the_renewal_daemon_refreshes_a_changed_trust_bundle() {
    let daemon = Daemon::start();
    let dir = daemon.tmp.path().join("billing");
    let output = request(&daemon, &daemon.token("billing"), &dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let bundle = dir.join("bundle.pem");
    // What this workload holds differs from what certd now publishes (as
    // after a root was added or dropped); it still verifies certd.
    let stale = format!("{0}{0}", daemon.bundle_pem());
    std::fs::write(&bundle, &stale).unwrap();
    let first = serial_in(&dir);

    let marker = daemon.tmp.path().join("hooked");
    let mut renewer = std::process::Command::new(common::CERTD)
        .args([
            "renew",
            "--daemon",
            "--bundle-refresh",
            "1s",
            "--server",
            &daemon.grpc,
            "--dir",
        ])
        .arg(&dir)
        .arg("--exec")
        .arg(format!("echo hook >> {}", marker.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&bundle).unwrap() != daemon.bundle_pem() || !marker.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "bundle.pem was not refreshed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(serial_in(&dir), first, "a bundle change is not a renewal");
    let _ = renewer.kill();
    let _ = renewer.wait();
}

/// A data directory that already exists readable by others (as `mkdir`
/// or a git checkout leaves it) is made 0700 by `init`, and by `serve`.
#[test]
fn an_existing_data_directory_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = run_cli(&data_dir, &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(mode(&data_dir), 0o700);

    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start_in(tmp, data_dir.clone(), &[]);
    assert_eq!(mode(&daemon.data_dir), 0o700);
    assert!(daemon.log_text().contains("made it 0700"));
}

/// `serve --data-dir` naming a directory that does not exist (a typo, say)
/// is refused with one line naming `certd init`, and creates nothing: only
/// the quick start's default directory is made from nothing.
#[test]
fn serve_refuses_a_data_directory_that_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("ca-dtaa");
    let output = std::process::Command::new(common::CERTD)
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&typo)
        .env_remove("CERTD_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let said = stderr(&output);
    assert_eq!(
        said.lines()
            .filter(|l| l.starts_with("certd: error:"))
            .count(),
        1,
        "{said}"
    );
    assert!(
        said.contains("does not exist") && said.contains("certd init --data-dir"),
        "{said}"
    );
    assert!(!typo.exists(), "a CA was made in a mistyped directory");
}

/// A renewal whose hook fails says so and exits non-zero (the certificate
/// is renewed all the same); a signal no hook sends is refused before
/// anything is renewed.
#[test]
fn a_failing_renewal_hook_fails_the_command() {
    let daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    let token = daemon.token("billing");
    let dir = daemon.tmp.path().join("billing");
    let output = daemon.request(&token, &dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let renew = |extra: &[&str]| {
        let mut args = vec![
            "renew",
            "--server",
            &daemon.grpc,
            "--dir",
            dir.to_str().unwrap(),
        ];
        args.extend(extra);
        daemon.cli(&args)
    };
    let before = std::fs::read(dir.join("cert.pem")).unwrap();
    let output = renew(&["--signal", "/nonexistent.pid:BOGUS"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("HUP, USR1"), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.join("cert.pem")).unwrap(),
        before,
        "renewed anyway"
    );

    let output = renew(&["--exec", "exit 3"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let said = stderr(&output);
    assert!(
        said.contains("renewed, but the renewal hook failed"),
        "{said}"
    );
    let renewed = std::fs::read(dir.join("cert.pem")).unwrap();
    assert_ne!(renewed, before, "the certificate is renewed all the same");

    let output = renew(&[
        "--signal",
        &format!("{}:HUP", dir.join("none.pid").display()),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no process id in"),
        "{}",
        stderr(&output)
    );
    let output = renew(&["--exec", "true"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// Output into a pipe whose reader has gone (`| head -1`) ends the
/// command quietly with the status of a tool killed by SIGPIPE (141), not
/// a panic (101).
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let daemon = Daemon::start();
    let data_dir = daemon.data_dir.to_str().unwrap();
    for args in [
        vec!["audit", "--json", "--data-dir", data_dir],
        vec!["completion", "bash"],
    ] {
        let mut child = std::process::Command::new(common::CERTD)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes before certd has started, let alone printed.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert!(
            !stderr(&output).contains("panicked"),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(
            output.status.code(),
            Some(141),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

/// The daemon runs with transparent huge pages off (src/main.rs), so its
/// heap is resident 4 KiB at a time, not 2 MiB wherever the allocator
/// keeps a few blocks: the kernel reports the process's flag as
/// `THP_enabled: 0`, whatever the host's THP setting.
#[test]
fn the_daemon_keeps_its_heap_out_of_transparent_huge_pages() {
    let daemon = Daemon::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let thp_enabled = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp_enabled, Some("0"), "{status}");
}

/// A one-shot command reports by its output: its log shows warnings and
/// errors only (no INFO audit lines), unless CERTD_LOG asks for more.
#[test]
fn one_shot_commands_log_only_warnings_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let issue = |out: &str, log: Option<&str>| {
        let path = tmp.path().join(out);
        let mut command = common::cli_command(
            &data_dir,
            &[
                "issue",
                "--offline",
                "--unregistered",
                "--service",
                out,
                "--out",
                path.to_str().unwrap(),
            ],
        );
        command.env_remove("CERTD_LOG");
        if let Some(level) = log {
            command.env("CERTD_LOG", level);
        }
        command.output().unwrap()
    };
    let output = run_cli(&data_dir, &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let quiet = issue("quiet", None);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("INFO"), "{}", stderr(&quiet));
    assert!(
        stdout(&quiet).starts_with("issued spiffe://"),
        "{}",
        stdout(&quiet)
    );
    let told = issue("told", Some("info"));
    assert!(stderr(&told).contains("INFO"), "{}", stderr(&told));
}

/// Commands that print data print it as JSON with `--json`: token create
/// and revoke, times in Unix seconds as everywhere in certd's JSON.
#[test]
fn token_create_and_revoke_print_json() {
    let daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    let output = daemon.cli(&[
        "token",
        "create",
        "--service",
        "billing",
        "--count",
        "2",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["tokens"].as_array().unwrap().len(), 2);
    assert!(created["expires_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(created["entry"]["service"], "billing");
    let token = created["tokens"][0].as_str().unwrap();
    let dir = daemon.tmp.path().join("billing");
    let output = daemon.request(token, &dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = daemon.cli(&["revoke", "--service", "billing", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let revoked: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(revoked["certificates"][0]["service"], "billing");
    assert_eq!(revoked["certificates"][0]["newly_revoked"], true);
    assert!(revoked["certificates"][0]["revoked_at"].as_i64().is_some());
    assert!(revoked["crl_number"].as_u64().unwrap() >= 1);
}

/// `request --out` a directory that already holds an identity is refused
/// before the token is spent (exit 4, naming renew and --force); --force
/// replaces it.
#[test]
fn request_does_not_overwrite_an_identity_unless_forced() {
    let daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    let dir = daemon.tmp.path().join("billing");
    let output = daemon.request(&daemon.token("billing"), &dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let before = std::fs::read(dir.join("cert.pem")).unwrap();
    let token = daemon.token("billing");
    let output = daemon.request(&token, &dir);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let said = stderr(&output);
    assert!(
        said.contains("already holds an identity") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(std::fs::read(dir.join("cert.pem")).unwrap(), before);
    // The token was not spent: --force uses it.
    let bundle = daemon.data_dir.join("bundle.pem");
    let output = daemon.cli(&[
        "request",
        "--server",
        &daemon.grpc,
        "--ca-bundle",
        bundle.to_str().unwrap(),
        "--token",
        &token,
        "--out",
        dir.to_str().unwrap(),
        "--force",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(std::fs::read(dir.join("cert.pem")).unwrap(), before);
}

/// `entry show` prints one entry whole, as text or JSON; an unknown id
/// exits 5.
#[test]
fn entry_show_prints_one_entry() {
    let daemon = Daemon::start();
    let id = daemon.entry(
        "billing",
        &["token:billing"],
        &["--ttl", "2h", "--jwt-audience", "gateway"],
    );
    let output = daemon.cli(&["entry", "show", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for line in [
        format!("id:            {id}"),
        "spiffe id:     spiffe://certd.internal/svc/billing".to_owned(),
        "selectors:     token:billing".to_owned(),
        "ttl:           2h".to_owned(),
        "jwt audiences: gateway".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} in {text}");
    }
    let output = daemon.cli(&["entry", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["ttl_seconds"], 7200);
    let output = daemon.cli(&["entry", "show", "0000000000000000"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));

    // Filters: entry list by selector; audit by event, service, refusals.
    daemon.entry("orders", &["token:orders"], &[]);
    let output = daemon.cli(&["entry", "list", "--selector", "token:orders", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["service"], "orders");
    let audit = |args: &[&str]| {
        let mut all = vec!["audit", "--json"];
        all.extend(args);
        let output = daemon.cli(&all);
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout).unwrap()
    };
    let created = audit(&["--event", "create-entry"]);
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|e| e["event"] == "create-entry"));
    assert_eq!(
        audit(&["--event", "create-entry", "--service", "orders"]).len(),
        1
    );
    assert!(audit(&["--denied"]).iter().all(|e| e["allowed"] == false));
    let output = daemon.cli(&["audit", "--event", "nonsense"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// A `CERTD_LOG` that is not a log filter (a misspelt level, a bad module
/// level) is refused with one line and exit 2, never silently replaced.
#[test]
fn a_bad_certd_log_is_refused() {
    for bad in ["verbose", "info,sled=lots"] {
        let output = std::process::Command::new(common::CERTD)
            .args(["completion", "bash"])
            .env("CERTD_LOG", bad)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", stderr(&output));
        assert!(
            stderr(&output).starts_with("certd: error: CERTD_LOG="),
            "{}",
            stderr(&output)
        );
    }
    for good in ["debug", "info,sled=debug", "WARN", ""] {
        let output = std::process::Command::new(common::CERTD)
            .args(["completion", "bash"])
            .env("CERTD_LOG", good)
            .output()
            .unwrap();
        assert!(output.status.success(), "{good}: {}", stderr(&output));
    }
}

/// `serve` on a port already taken fails with one line naming it, before
/// it creates a CA or a database.
#[test]
fn serve_on_a_busy_port_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let output = std::process::Command::new(common::CERTD)
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            &address,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("cannot bind gRPC on {address}")),
        "{}",
        stderr(&output)
    );
    assert!(
        !data_dir.exists(),
        "a CA was created before the bind failed"
    );
}

/// A client that cannot verify it reached certd says so, with its own exit
/// code (6), instead of "cannot reach, retry": a bundle from another CA,
/// or the HTTP port given as the gRPC one.
#[test]
fn an_unverifiable_server_is_not_reported_as_unreachable() {
    let daemon = Daemon::start();
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca");
    let output = run_cli(&other_ca, &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let token = daemon.token("billing");
    let out = daemon.tmp.path().join("w");
    let http_as_grpc = daemon.http.replace("http://", "https://");
    for (server, bundle, expected) in [
        (
            daemon.grpc.as_str(),
            other_ca.join("bundle.pem"),
            "its certificate is not trusted by this bundle",
        ),
        (
            http_as_grpc.as_str(),
            daemon.data_dir.join("bundle.pem"),
            "it does not speak TLS",
        ),
    ] {
        let output = daemon.cli(&[
            "request",
            "--server",
            server,
            "--ca-bundle",
            bundle.to_str().unwrap(),
            "--token",
            &token,
            "--out",
            out.to_str().unwrap(),
        ]);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(6), "{said}");
        assert!(said.contains(expected), "{said}");
        assert!(said.contains("check --ca-bundle"), "{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
    }
    assert!(!out.exists());

    // Dialled by a name its certificate lacks: which names it has, and
    // the setting that adds one; never Rust's debug output.
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let localhost_only = Daemon::start_in(tmp, data_dir, &["--server-name", "localhost"]);
    let output = localhost_only.cli(&[
        "request",
        "--server",
        &localhost_only.grpc,
        "--ca-bundle",
        localhost_only.data_dir.join("bundle.pem").to_str().unwrap(),
        "--token",
        &localhost_only.token("billing"),
        "--out",
        out.to_str().unwrap(),
    ]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(6), "{said}");
    assert!(said.contains("only for localhost:"), "{said}");
    assert!(said.contains("server_names"), "{said}");
    assert!(!said.contains("Context {"), "no debug output: {said}");
    assert_eq!(said.lines().count(), 1, "{said}");
}

/// `certd request --evidence KIND=FILE` sends any attestor's evidence in
/// the wire's generic form: a join token this way gets its identity once;
/// a kind this certd does not run is refused by the server (exit 4), and a
/// malformed one before anything is sent (exit 2). Nothing is written on a
/// refusal.
#[test]
fn request_sends_any_attestors_evidence() {
    let daemon = Daemon::start();
    let token = daemon.token("billing");
    let evidence = daemon.tmp.path().join("evidence");
    std::fs::write(&evidence, &token).unwrap();
    let out = daemon.tmp.path().join("w");
    let request = |kind: &str| {
        daemon.cli(&[
            "request",
            "--server",
            &daemon.grpc,
            "--ca-bundle",
            daemon.data_dir.join("bundle.pem").to_str().unwrap(),
            "--evidence",
            &format!("{kind}={}", evidence.display()),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    for (kind, code, says) in [
        ("tpm", 4, "this certd does not accept tpm attestation"),
        ("Join_Token", 2, "is not a kind"),
    ] {
        let output = request(kind);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{kind}: {said}");
        assert!(said.contains(says), "{kind}: {said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(!out.exists());
    }
    let output = request("join-token");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("spiffe://certd.internal/svc/billing"),
        "{}",
        stdout(&output)
    );
    assert!(out.join("key.pem").exists() && out.join("cert.pem").exists());
    // The token was used: the same evidence again is refused.
    std::fs::remove_dir_all(&out).unwrap();
    let output = request("join-token");
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("join token is not valid"),
        "{}",
        stderr(&output)
    );
}

/// Logs written to a file (not a terminal) carry no colour codes, and the
/// CLI's one error line has none either.
#[test]
fn logs_to_files_are_plain_text() {
    let daemon = Daemon::start();
    daemon.token("billing");
    let log = daemon.log_text();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in {log:?}");
    let output = daemon.cli(&["show", "00"]);
    assert!(!output.status.success());
    assert!(!stderr(&output).contains('\u{1b}'), "{:?}", stderr(&output));
}

/// `certd issue` refuses a service no entry names (a typo would mint an
/// identity nobody registered) unless `--unregistered`; its certificates do
/// not renew unless issued `--renewable`, and then keep renewing.
#[test]
fn issue_refuses_typos_and_its_certificates_renew_only_if_renewable() {
    let daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    let out = |name: &str| daemon.tmp.path().join(name);
    let output = daemon.cli(&[
        "issue",
        "--service",
        "biling",
        "--out",
        out("typo").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--unregistered"),
        "{}",
        stderr(&output)
    );
    assert!(!out("typo").exists());

    let renew = |dir: &Path| {
        daemon.cli(&[
            "renew",
            "--server",
            &daemon.grpc,
            "--dir",
            dir.to_str().unwrap(),
        ])
    };
    let output = daemon.cli(&[
        "issue",
        "--service",
        "billing",
        "--out",
        out("plain").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = renew(&out("plain"));
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("without --renewable"),
        "{}",
        stderr(&output)
    );

    let output = daemon.cli(&[
        "issue",
        "--service",
        "billing",
        "--renewable",
        "--out",
        out("renewable").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = serial_in(&out("renewable"));
    for _ in 0..2 {
        let output = renew(&out("renewable"));
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert_ne!(serial_in(&out("renewable")), first);
}

/// CI: `certd issue` through the daemon, and `--offline` without one; with
/// a daemon running, `--offline` says to use the socket instead.
#[test]
fn issue_for_ci_online_and_offline() {
    let mut daemon = Daemon::start();
    let online = daemon.tmp.path().join("online");
    let output = daemon.ci_issue("ci-test", &online, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(mode(&online.join("key.pem")), 0o600);

    // sled is locked to the serving daemon, so an offline command is told
    // to go through it. (A PostgreSQL store is shared: offline commands are
    // one more writer, like a replica.)
    if common::database_url(&daemon.data_dir).is_none() {
        let blocked = daemon.tmp.path().join("blocked");
        let output = daemon.ci_issue("ci-test", &blocked, &["--offline"]);
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("drop --offline"),
            "{}",
            stderr(&output)
        );
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
        assert!(!blocked.exists());
    }

    daemon.terminate();
    let offline = daemon.tmp.path().join("offline");
    let output = daemon.ci_issue("ci-test", &offline, &["--offline", "--ttl", "1h"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = daemon.cli(&["list", "--offline", "--service", "ci-test", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "both CI certificates are recorded"
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|c| c["attestation"] == "admin")
    );
}

/// `certd list` filters by service; `certd show` takes a serial in any case,
/// with colons, and prints the record.
#[test]
fn list_and_show() {
    let daemon = Daemon::start();
    let out = daemon.tmp.path().join("w");
    assert!(
        request(&daemon, &daemon.token("billing"), &out)
            .status
            .success()
    );
    assert!(
        request(
            &daemon,
            &daemon.token("payments"),
            &daemon.tmp.path().join("w2")
        )
        .status
        .success()
    );

    let output = daemon.cli(&["list", "--service", "billing", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "good");
    let serial = list[0]["serial"].as_str().unwrap().to_owned();

    let newest = daemon.cli(&["list", "--limit", "1", "--json"]);
    let newest: serde_json::Value = serde_json::from_slice(&newest.stdout).unwrap();
    assert_eq!(newest.as_array().unwrap().len(), 1);

    let table = stdout(&daemon.cli(&["list"]));
    assert!(
        table.contains("billing") && table.contains("payments") && table.contains("SERIAL"),
        "{table}"
    );

    let spelled: String = serial
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let output = daemon.cli(&["show", &spelled]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&serial) && text.contains("join-token") && text.contains("BEGIN CERTIFICATE"),
        "{text}"
    );
}

/// Bad input: one clear line on stderr and the documented exit code.
#[test]
fn bad_input_gets_one_line_and_an_exit_code() {
    let daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    let out = daemon.tmp.path().join("w");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["token", "create", "--service", "Bad_Name"],
            2,
            "RFC 1123",
        ),
        (
            vec!["token", "create", "--service", "billing", "--ttl", "30d"],
            2,
            "requested lifetime 30days exceeds the maximum of 7days (`join_tokens.max_ttl` in certd.toml)",
        ),
        (vec!["show", "0123abcd"], 5, "not found"),
        (
            vec!["renew", "--dir", "/nonexistent/identity"],
            2,
            "get one first with `certd request --out /nonexistent/identity`",
        ),
        (
            vec!["renew", "--daemon", "--dir", "/nonexistent/identity"],
            2,
            "holds no certificate (cert.pem) to renew",
        ),
        (vec!["show", "zz"], 2, "not a hex serial"),
        (
            vec![
                "issue",
                "--unregistered",
                "--service",
                "billing",
                "--ttl",
                "48h",
                "--out",
                out.to_str().unwrap(),
            ],
            2,
            "exceeds the maximum",
        ),
    ];
    for (args, code, message) in cases {
        let output = daemon.cli(&args);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(message), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
    }
    let output = request(&daemon, "certd-jt-wrong", &out);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("unauthenticated"));
    assert!(!out.exists(), "a refused request writes no files");

    let output = daemon.cli(&[
        "request",
        "--server",
        &daemon.grpc,
        "--ca-bundle",
        "/dev/null",
        "--token",
        "certd-jt-x",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no PEM certificate"),
        "{}",
        stderr(&output)
    );
    let output = daemon.cli(&["serve", "--config", "/nonexistent/certd.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(
        stderr(&output).matches("No such file").count(),
        1,
        "each cause once: {}",
        stderr(&output)
    );

    let nowhere = tempfile::tempdir().unwrap();
    let output = run_cli(nowhere.path(), &["token", "create", "--service", "billing"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is `certd serve` running"),
        "{}",
        stderr(&output)
    );

    // The load tool classifies errors as every other command does.
    let bundle = daemon.data_dir.join("bundle.pem");
    let output = run_cli(
        nowhere.path(),
        &[
            "bench",
            "issue",
            "--count",
            "1",
            "--ca-bundle",
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

/// `certd init` makes a CA with the chosen trust domain and key type, keys
/// 0600 in a 0700 directory, and refuses to overwrite it.
#[test]
fn init_creates_a_private_ca_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let output = run_cli(
        &dir,
        &[
            "init",
            "--trust-domain",
            "prod.example",
            "--key-type",
            "ed25519",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("root.key")), 0o600);
    assert_eq!(mode(&dir.join("intermediate.key")), 0o600);
    let root_key = std::fs::read(dir.join("root.key")).unwrap();

    let output = run_cli(&dir, &["init"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refusing to overwrite"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(dir.join("root.key")).unwrap(), root_key);

    let output = run_cli(&dir, &["init", "--trust-domain", "Not A Domain"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    let daemon = Daemon::start_in(tmp, dir, &[]);
    let out = daemon.tmp.path().join("w");
    assert!(
        request(&daemon, &daemon.token("billing"), &out)
            .status
            .success()
    );
    let chain = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    let (_, cert) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap();
    let cert = cert.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert!(format!("{san:?}").contains("spiffe://prod.example/svc/billing"));
}

/// `certd replica export` leaves the root key behind unless asked, and
/// says what it wrote and what it left; the package is 0600. `certd
/// replica import` sets a new data directory up (0700, keys 0600, the
/// database URL in database.toml, 0600, no root key) and refuses, in one
/// line with the documented exit code: a new replica without a database
/// URL (2), a URL that is not PostgreSQL's (2), a directory holding another
/// CA (4), and a package with a path that leads out of the data directory
/// (2, nothing written).
#[test]
fn replica_export_and_import_and_what_they_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, other, replica) = (
        tmp.path().join("primary"),
        tmp.path().join("other"),
        tmp.path().join("replica"),
    );
    for dir in [&primary, &other] {
        let output = run_cli(dir, &["init"]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let package = tmp.path().join("replica.tar");
    let package_arg = package.to_str().unwrap();
    let output = run_cli(&primary, &["replica", "export", "--out", package_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    let said = stdout(&output);
    for expected in [
        "(0600) for trust domain certd.internal: ca.toml, root.pem, root.crl",
        "intermediate.key (0600)",
        "jwt-master.key (0600), store-marks.toml",
        "not included: root.key: the root key stays here (--include-root-key includes it)",
    ] {
        assert!(said.contains(expected), "{expected:?} in {said}");
    }
    assert_eq!(mode(&package), 0o600);

    let url = "postgresql://certd@127.0.0.1:9/certd";
    // Run without CERTD_DATABASE_URL even in CI's PostgreSQL pass (where
    // `run_cli` sets it): these cases are about what the command is given.
    let import = |dir: &Path, package: &str, extra: &[&str]| {
        std::process::Command::new(common::CERTD)
            .args(["replica", "import", package, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env_remove("CERTD_DATABASE_URL")
            .env_remove("CERTD_DATA_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run certd")
    };
    let cases: Vec<(&Path, Vec<&str>, i32, &str)> = vec![
        (
            &replica,
            vec![],
            2,
            "a new replica needs the database the replicas share, --database-url",
        ),
        (
            &replica,
            vec!["--database-url", "mysql://db/certd"],
            2,
            "the database URL must be a PostgreSQL URL",
        ),
        (
            &other,
            vec!["--database-url", url],
            4,
            "holds another CA (its root \"O=certd.internal, CN=certd root CA",
        ),
    ];
    for (dir, extra, code, expected) in cases {
        let output = import(dir, package_arg, &extra);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{extra:?}: {said}");
        assert!(said.contains(expected), "{expected:?} in {said}");
        assert_eq!(said.lines().count(), 1, "{said}");
    }
    assert!(!replica.exists());

    // A package whose file would land outside the data directory.
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.as_old_mut().name[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    let mut hostile = tar::Builder::new(Vec::new());
    hostile.append(&header, &b"evil"[..]).unwrap();
    let hostile_path = tmp.path().join("hostile.tar");
    std::fs::write(&hostile_path, hostile.into_inner().unwrap()).unwrap();
    let output = import(
        &replica,
        hostile_path.to_str().unwrap(),
        &["--database-url", url],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("\"../escape\" is not a file a replica package holds"),
        "{}",
        stderr(&output)
    );
    assert!(!tmp.path().join("escape").exists() && !replica.exists());

    let output = import(&replica, package_arg, &["--database-url", url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("set up a replica of trust domain certd.internal"));
    assert_eq!(mode(&replica), 0o700);
    for secret in ["intermediate.key", "jwt-master.key", "database.toml"] {
        assert_eq!(mode(&replica.join(secret)), 0o600, "{secret}");
    }
    assert!(!replica.join("root.key").exists());
    let database = std::fs::read_to_string(replica.join("database.toml")).unwrap();
    assert!(database.contains(url), "{database}");
    let output = import(&replica, package_arg, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("nothing changed"),
        "{}",
        stdout(&output)
    );
}

/// Every command answers `--help`.
#[test]
fn every_command_has_help() {
    let tmp = tempfile::tempdir().unwrap();
    for command in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["serve", "--help"],
        vec!["token", "create", "--help"],
        vec!["request", "--help"],
        vec!["renew", "--help"],
        vec!["issue", "--help"],
        vec!["list", "--help"],
        vec!["show", "--help"],
        vec!["db", "check", "--help"],
        vec!["db", "backup", "--help"],
        vec!["db", "restore", "--help"],
        vec!["db", "copy", "--help"],
        vec!["db", "migrate", "--help"],
        vec!["replica", "export", "--help"],
        vec!["replica", "import", "--help"],
    ] {
        let output = run_cli(tmp.path(), &command);
        assert!(output.status.success(), "{command:?}");
        assert!(stdout(&output).contains("Usage:"), "{command:?}");
    }
    let revoke = stdout(&run_cli(tmp.path(), &["revoke", "--help"]));
    assert!(
        revoke.contains("key-compromise") && revoke.contains("cessation-of-operation"),
        "revoke --help lists the reasons: {revoke}"
    );
}

/// A crash right after answering loses nothing: every certificate a client
/// received is in the store after SIGKILL and restart, and serials are
/// never reused.
#[test]
fn a_crash_loses_no_issued_certificate() {
    let mut daemon = Daemon::start();
    let mut serials = Vec::new();
    for index in 0..5 {
        let out = daemon.tmp.path().join(format!("w{index}"));
        let output = request(&daemon, &daemon.token("billing"), &out);
        assert!(output.status.success(), "{}", stderr(&output));
        let cert = std::fs::read_to_string(out.join("cert.pem")).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        serials.push(hex::encode(pem.parse_x509().unwrap().raw_serial()));
    }
    daemon.kill();

    let output = run_cli(
        &daemon.data_dir,
        &["list", "--offline", "--service", "billing", "--json"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let recorded: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    for serial in &serials {
        assert!(
            recorded.contains(&serial.as_str()),
            "{serial} lost in the crash"
        );
    }
    let tmp = std::mem::replace(&mut daemon.tmp, tempfile::tempdir().unwrap());
    let restarted = Daemon::start_in(tmp, daemon.data_dir.clone(), &[]);
    let out = restarted.tmp.path().join("after");
    assert!(
        request(&restarted, &restarted.token("billing"), &out)
            .status
            .success()
    );
    let output = restarted.cli(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut all: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "no serial is reused");
}

/// SIGTERM stops the daemon cleanly: exit 0 and the admin socket removed.
#[test]
fn sigterm_shuts_down_cleanly() {
    let mut daemon = Daemon::start();
    let socket = daemon.data_dir.join("admin.sock");
    assert!(socket.exists());
    assert_eq!(mode(&socket), 0o600);
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
    assert!(!socket.exists());
}

/// `/healthz` answers over plain HTTP.
#[test]
fn healthz_answers() {
    use std::io::{Read, Write};
    let daemon = Daemon::start();
    let address = daemon.http.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: certd\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");
}

/// The audit log has one event per decision, naming the caller, and never
/// the token.
#[test]
fn audit_log_records_decisions_without_secrets() {
    let daemon = Daemon::start();
    let token = daemon.token("billing");
    let out = daemon.tmp.path().join("w");
    assert!(request(&daemon, &token, &out).status.success());
    // The token again, for another directory: certd refuses it (used).
    let again = daemon.tmp.path().join("w2");
    assert!(!request(&daemon, &token, &again).status.success());
    let log = daemon.log_text();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("certd::audit")).collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("create-join-token") && l.contains("allow")),
        "{log}"
    );
    assert!(
        audit.iter().any(|l| l.contains("\"issue\"")
            && l.contains("allow")
            && l.contains("peer 127.0.0.1")),
        "{log}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"issue\"") && l.contains("deny") && l.contains("already used")),
        "{log}"
    );
    assert!(!log.contains(&token), "the token must never be logged");

    // The same decisions are in the store's audit trail, in order, and
    // survive in `certd audit`; the token is not there either.
    let output = daemon.cli(&["audit", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains(&token), "the token must never be audited");
    let entries: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries: Vec<(String, bool)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("create-join-token".to_owned(), true),
        ("issue".to_owned(), true),
        ("issue".to_owned(), false),
    ];
    assert!(entries.ends_with(&expected), "{entries:?}");
    let refusal = stdout(&daemon.cli(&["audit", "--since", "1h"]));
    assert!(
        refusal
            .lines()
            .last()
            .unwrap()
            .contains("deny issue by peer 127.0.0.1"),
        "{refusal}"
    );
    assert!(refusal.contains("already used"), "{refusal}");
    let future = stdout(&daemon.cli(&["audit", "--since", "2999-01-01T00:00:00Z"]));
    assert!(future.is_empty(), "{future}");
    let output = daemon.cli(&["audit", "--since", "yesterday-ish"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// CSRs made by OpenSSL are accepted (RSA 2048 gets keyEncipherment) and a
/// weak RSA 1024 key is refused with INVALID_ARGUMENT.
#[tokio::test]
async fn openssl_made_csrs_interoperate() {
    if !common::openssl_available() {
        eprintln!("openssl not installed: skipping");
        return;
    }
    let daemon = Daemon::start();
    let dir = daemon.tmp.path();
    let mut client = daemon.client(None).await;
    for (bits, accepted) in [("2048", true), ("1024", false)] {
        let key = dir.join(format!("rsa{bits}.key"));
        let csr = dir.join(format!("rsa{bits}.csr"));
        let (ok, text) = openssl(&[
            "req",
            "-new",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-subj",
            "/CN=billing",
            "-outform",
            "DER",
            "-out",
            csr.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        let result = client
            .issue(std::fs::read(&csr).unwrap(), &daemon.token("billing"))
            .await;
        if accepted {
            let issued = result.expect("RSA 2048 is accepted");
            let certs = common::pem_certs(&issued.chain_pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
            assert!(cert.key_usage().unwrap().unwrap().value.key_encipherment());
            let csr_der = std::fs::read(&csr).unwrap();
            let (_, request) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
                    .unwrap();
            assert_eq!(
                cert.public_key().raw,
                request.certification_request_info.subject_pki.raw,
                "the certificate carries exactly the CSR's key"
            );
        } else {
            match result {
                Err(certd::api::client::ClientError::Refused { kind, message }) => {
                    assert_eq!(kind, certd::ErrorKind::InvalidInput);
                    assert!(message.contains("RSA 1024"), "{message}");
                }
                other => panic!("RSA 1024 must be refused: {other:?}"),
            }
        }
    }
}

/// `certd bench` drives every operation against a real daemon, checks every
/// answer and ends with one JSON summary line.
#[test]
fn bench_reports_each_operation() {
    let daemon = Daemon::start();
    for operation in [
        "issue",
        "renew",
        "ocsp",
        "crl",
        "agent-issue",
        "jwt-mint",
        "token-endpoint",
        "token-exchange",
    ] {
        let output = daemon.cli(&[
            "bench",
            operation,
            "--server",
            &daemon.grpc,
            "--http",
            &daemon.http,
            "--concurrency",
            "4",
            "--count",
            "40",
            "--json",
        ]);
        assert!(output.status.success(), "{operation}: {}", stderr(&output));
        let text = stdout(&output);
        let summary: serde_json::Value =
            serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(summary["op"], operation);
        assert_eq!(summary["ok"], 40, "{text}");
        assert_eq!(summary["errors"], 0, "{text}");
        for field in ["seconds", "rate", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(summary[field].as_f64().unwrap() > 0.0, "{field} in {text}");
        }
    }
    // `token-exchange` added what it needs to the token policy, once, and
    // its cleanup took it away again (tests/bench.rs has the rest).
    let policy = stdout(&daemon.cli(&["policy", "show"]));
    assert!(!policy.contains("certd-bench-exchange"), "{policy}");
    assert!(policy.contains("version 2 "), "{policy}");
}

/// `certd serve` refuses a data directory whose intermediate certificate
/// does not belong with its key and root (say, restored from another
/// deployment): one line naming the file and the reason, a failure exit, and
/// never a "ready" line.
#[test]
fn serve_refuses_a_mismatched_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let theirs = tmp.path().join("theirs");
    for dir in [&ours, &theirs] {
        let output = run_cli(dir, &["init"]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    std::fs::copy(
        theirs.join("intermediate.pem"),
        ours.join("intermediate.pem"),
    )
    .unwrap();
    let mut child = common::serve_command(&ours)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("certd serve started with a mismatched intermediate");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        !stdout(&output).contains("certd ready"),
        "{}",
        stdout(&output)
    );
    let error = stderr(&output);
    let error_line = error
        .lines()
        .find(|line| line.starts_with("certd: error:"))
        .unwrap_or_else(|| panic!("{error}"));
    assert!(
        error_line.contains("intermediate.key") && error_line.contains("public keys differ"),
        "{error_line}"
    );
}

/// `certd inspect` shows a certificate as certd sees it, status included;
/// `certd completion` prints a shell's completion script.
#[test]
fn inspect_shows_identity_and_status_and_completion_prints_a_script() {
    let daemon = Daemon::start();
    let dir = daemon.tmp.path().join("ci");
    let output = daemon.ci_issue("ci-test", &dir, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let cert = dir.join("cert.pem");
    let inspect = |expected_exit: i32| {
        let output = daemon.cli(&[
            "inspect",
            cert.to_str().unwrap(),
            "--server",
            &daemon.grpc,
            "--json",
        ]);
        assert_eq!(
            output.status.code(),
            Some(expected_exit),
            "{}",
            stderr(&output)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let shown = inspect(0);
    assert_eq!(shown["spiffe_id"], "spiffe://certd.internal/svc/ci-test");
    assert_eq!(shown["dns_names"][0], "ci-test.certd.internal");
    assert_eq!(shown["status"], "good");
    assert!(shown["expires_in_seconds"].as_i64().unwrap() > 23 * 3600);
    assert_eq!(shown["serial"].as_str().unwrap(), serial_in(&dir));
    assert!(daemon.cli(&["revoke", &serial_in(&dir)]).status.success());
    // Revoked: still shown, and exit 4, so a script never reads it as good.
    assert!(
        inspect(4)["status"]
            .as_str()
            .unwrap()
            .starts_with("revoked")
    );
    // Asked of another certd, which never issued it: unknown, exit 5.
    let other = Daemon::start();
    let output = other.cli(&["inspect", cert.to_str().unwrap(), "--server", &other.grpc]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("unknown to this certd"),
        "{}",
        stdout(&output)
    );

    let text = daemon.cli(&["inspect", cert.to_str().unwrap(), "--offline"]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(stdout(&text).contains("spiffe id:  spiffe://certd.internal/svc/ci-test"));
    let junk = daemon.tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let output = daemon.cli(&["inspect", junk.to_str().unwrap(), "--offline"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("not an X.509 certificate"));

    let output = daemon.cli(&["completion", "bash"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("complete -F"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("inspect"));
}

/// Without --server, `certd inspect` asks the OCSP responder the
/// certificate names, believing the answer only when the issuer in the
/// file chains to the bundle beside it and signed it; for a bare leaf it
/// asks the certd running here over its admin socket; with neither it
/// says what to give. Revoked exits 4 either way.
#[test]
fn inspect_asks_the_certificates_own_responder_or_the_local_certd() {
    let daemon = Daemon::start();
    let dir = daemon.tmp.path().join("ci");
    assert!(daemon.ci_issue("ci-test", &dir, &[]).status.success());
    let cert = dir.join("cert.pem");
    // A shell elsewhere: no data directory, so no admin socket to ask.
    let elsewhere = daemon.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let inspect = |data_dir: &std::path::Path, file: &std::path::Path, exit: i32| {
        let output = common::run_cli(data_dir, &["inspect", file.to_str().unwrap(), "--json"]);
        assert_eq!(output.status.code(), Some(exit), "{}", stderr(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let shown = inspect(&elsewhere, &cert, 0);
    assert_eq!(shown["status"], "good");
    assert!(
        shown["status_from"]
            .as_str()
            .unwrap()
            .starts_with("the OCSP responder at http://"),
        "{shown}"
    );
    // The leaf alone: no issuer to check an OCSP answer against.
    let leaf = daemon.tmp.path().join("leaf.pem");
    let pem = std::fs::read_to_string(&cert).unwrap();
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    std::fs::write(&leaf, &pem[..end]).unwrap();
    let shown = inspect(&daemon.data_dir, &leaf, 0);
    assert_eq!(shown["status_from"], "the certd running here", "{shown}");
    let output = common::run_cli(&elsewhere, &["inspect", leaf.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no certd runs here") && stderr(&output).contains("--server"),
        "{}",
        stderr(&output)
    );

    assert!(
        daemon
            .cli(&["revoke", &serial_in(&dir), "--reason", "key-compromise"])
            .status
            .success()
    );
    let shown = inspect(&elsewhere, &cert, 4);
    assert!(
        shown["status"].as_str().unwrap().starts_with("revoked at")
            && shown["status"].as_str().unwrap().contains("key-compromise"),
        "{shown}"
    );
    assert_eq!(inspect(&daemon.data_dir, &leaf, 4)["status"], "revoked");

    // A chain that is not the certificate's own proves nothing.
    let other = Daemon::start();
    let other_dir = other.tmp.path().join("ci");
    assert!(other.ci_issue("ci-test", &other_dir, &[]).status.success());
    let other_pem = std::fs::read_to_string(other_dir.join("cert.pem")).unwrap();
    let forged = daemon.tmp.path().join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::write(
        forged.join("cert.pem"),
        format!(
            "{}{}",
            &pem[..end],
            &other_pem[other_pem.find("-----END CERTIFICATE-----").unwrap()
                + "-----END CERTIFICATE-----\n".len()..]
        ),
    )
    .unwrap();
    std::fs::copy(dir.join("bundle.pem"), forged.join("bundle.pem")).unwrap();
    let output = common::run_cli(
        &elsewhere,
        &["inspect", forged.join("cert.pem").to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("did not sign the first"),
        "{}",
        stderr(&output)
    );
    // The right chain, but a bundle of another CA: not believed.
    std::fs::copy(&cert, forged.join("cert.pem")).unwrap();
    std::fs::copy(other_dir.join("bundle.pem"), forged.join("bundle.pem")).unwrap();
    let output = common::run_cli(
        &elsewhere,
        &["inspect", forged.join("cert.pem").to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("does not chain to the trust bundle"),
        "{}",
        stderr(&output)
    );
}

/// `certd init --encrypt-key` keeps the CA keys encrypted at rest (PKCS#8,
/// which OpenSSL reads with the passphrase); `certd serve` without the
/// passphrase, or with a wrong one, refuses in one line; with it, certd
/// issues as usual.
#[test]
fn encrypted_ca_keys_need_their_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let passphrase = tmp.path().join("passphrase");
    std::fs::write(&passphrase, "correct horse battery staple\n").unwrap();
    let output = std::process::Command::new(common::CERTD)
        .args(["init", "--encrypt-key", "--data-dir"])
        .arg(&dir)
        .env("CERTD_KEY_PASSPHRASE_FILE", &passphrase)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    for key in ["root.key", "intermediate.key"] {
        let text = std::fs::read_to_string(dir.join(key)).unwrap();
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{key}"
        );
        assert_eq!(mode(&dir.join(key)), 0o600);
        if common::openssl_available() {
            let (ok, text) = common::openssl(&[
                "pkey",
                "-in",
                dir.join(key).to_str().unwrap(),
                "-passin",
                &format!("file:{}", passphrase.display()),
                "-noout",
            ]);
            assert!(ok, "OpenSSL reads {key} with the passphrase: {text}");
        }
    }

    let serve = |passphrase_file: Option<&Path>| {
        let mut command = common::serve_command(&dir);
        command
            .stdout(std::process::Stdio::null())
            .env_remove("CERTD_KEY_PASSPHRASE_FILE");
        if let Some(file) = passphrase_file {
            command.env("CERTD_KEY_PASSPHRASE_FILE", file);
        }
        command.output().unwrap()
    };
    let output = serve(None);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("CERTD_KEY_PASSPHRASE_FILE"),
        "{}",
        stderr(&output)
    );
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let output = serve(Some(&wrong));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("wrong passphrase"),
        "{}",
        stderr(&output)
    );

    let config = tmp.path().join("certd.toml");
    std::fs::write(&config, "[ca]\nkey_passphrase_file = \"passphrase\"\n").unwrap();
    let daemon = Daemon::start_in(tmp, dir, &["--config", config.to_str().unwrap()]);
    let out = daemon.tmp.path().join("billing");
    let output = request(&daemon, &daemon.token("billing"), &out);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// Unused join tokens are listed (ids, never secrets) and revoked by id or
/// by service; a revoked token bootstraps nothing; an id that is not an
/// unused token is refused, revoking none; each revocation is audited.
#[test]
fn unused_join_tokens_are_listed_and_revoked() {
    let daemon = Daemon::start();
    let billing = daemon.token("billing");
    let web = daemon.token("web");
    let output = daemon.cli(&["token", "create", "--service", "billing"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listed = daemon.cli(&["token", "list", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let tokens: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert!(
        !stdout(&listed).contains(&billing) && !stdout(&listed).contains("cdt_"),
        "a listing never shows a secret"
    );
    let billing_ids: Vec<String> = tokens
        .iter()
        .filter(|t| t["service"] == "billing")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(billing_ids.len(), 2);
    let text = stdout(&daemon.cli(&["token", "list", "--service", "web"]));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("  web  expires "), "{text}");

    // An id that is not an unused token: refused, and nothing revoked.
    let output = daemon.cli(&["token", "revoke", &billing_ids[0], "00000000deadbeef"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("00000000deadbeef is not an unused token"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(
            &daemon.cli(&["token", "list", "--json"]).stdout
        )
        .unwrap()
        .len(),
        3
    );

    // Both billing tokens revoked by id: neither bootstraps anything.
    let output = daemon.cli(&["token", "revoke", &billing_ids[0], &billing_ids[1]]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("revoked 2 unused join token(s)"),
        "{}",
        stderr(&output)
    );
    let out = daemon.tmp.path().join("billing");
    let output = daemon.request(&billing, &out);
    assert!(!output.status.success(), "a revoked token must not work");
    assert!(!out.join("cert.pem").exists());

    // By service, as JSON.
    let output = daemon.cli(&["token", "revoke", "--service", "web", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let revoked: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["service"], "web");
    assert!(
        !daemon
            .request(&web, &daemon.tmp.path().join("web"))
            .status
            .success()
    );
    assert_eq!(stdout(&daemon.cli(&["token", "list"])), "");

    let audit = stdout(&daemon.cli(&["audit", "--event", "revoke-join-token"]));
    assert_eq!(
        audit.lines().count(),
        3,
        "two revocations and one refusal: {audit}"
    );
    assert!(audit.contains(&billing_ids[0]), "{audit}");
}

/// An entry nothing here could ever use is accepted (replicas may differ,
/// agents may come later) but warned about on stderr, naming what is
/// missing: a `k8s:` selector without the Kubernetes attestor, a parent no
/// agent entry names. Once the agent's entry exists, the warning is gone.
#[test]
fn entries_nothing_here_can_use_are_warned_about() {
    let daemon = Daemon::start();
    let output = daemon.cli(&[
        "entry",
        "create",
        "--service",
        "payments",
        "--selector",
        "k8s:ns:payments",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("certd: warning: entry ")
            && stderr(&output).contains("no attestor of this certd proves k8s:ns:payments ([attestors.kubernetes] is not in certd.toml)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        stdout(&output).lines().count(),
        1,
        "stdout keeps only the id"
    );

    let output = daemon.cli(&[
        "entry",
        "create",
        "--service",
        "web",
        "--selector",
        "unix:uid:1000",
        "--parent",
        "spiffe://certd.internal/agent/node-1",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let entry: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let warning = entry["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("spiffe://certd.internal/agent/node-1 is no node agent's entry yet"),
        "{warning}"
    );
    assert!(stderr(&output).contains(warning), "{}", stderr(&output));

    let output = daemon.cli(&[
        "entry",
        "create",
        "--agent",
        "--service",
        "node-1",
        "--selector",
        "token:node-1",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    let id = entry["id"].as_str().unwrap();
    let output = daemon.cli(&["entry", "update", id, "--selector", "unix:uid:1001"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
}

/// `certd list` filters the listed certificates by state and by how soon
/// they expire: what an operator asks before an outage.
#[test]
fn list_filters_by_status_and_expiry() {
    let daemon = Daemon::start();
    let short = daemon.tmp.path().join("short");
    assert!(
        daemon
            .ci_issue("short", &short, &["--ttl", "1h"])
            .status
            .success()
    );
    let long = daemon.tmp.path().join("long");
    assert!(daemon.ci_issue("long", &long, &[]).status.success());
    let gone = daemon.tmp.path().join("gone");
    assert!(daemon.ci_issue("gone", &gone, &[]).status.success());
    assert!(daemon.cli(&["revoke", &serial_in(&gone)]).status.success());
    let services = |args: &[&str]| {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        let output = daemon.cli(&all);
        assert!(output.status.success(), "{}", stderr(&output));
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        let mut names: Vec<String> = listed
            .iter()
            .map(|c| c["service"].as_str().unwrap().to_owned())
            .filter(|service| service != "certd")
            .collect();
        names.sort();
        names
    };
    assert_eq!(services(&["--status", "revoked"]), ["gone"]);
    assert_eq!(services(&["--status", "good"]), ["long", "short"]);
    assert_eq!(services(&["--expiring-within", "2h"]), ["short"]);
    assert_eq!(
        services(&["--expiring-within", "2h", "--status", "revoked"]),
        Vec::<String>::new()
    );
    let output = daemon.cli(&["list", "--status", "bogus"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// `certd list` goes back page by page: each page prints the command for
/// the next on one `more:` line (stderr, so stdout stays the table or the
/// JSON array), following them lists every certificate exactly once,
/// `--all` walks them all at once, and a token certd did not hand out is
/// refused in one line with exit code 2 (invalid input).
#[test]
fn list_pages_through_every_certificate_with_its_token() {
    let daemon = Daemon::start();
    for service in ["alpha", "beta", "gamma"] {
        let dir = daemon.tmp.path().join(service);
        assert!(daemon.ci_issue(service, &dir, &[]).status.success());
    }
    let serials = |output: &std::process::Output| -> Vec<String> {
        assert!(output.status.success(), "{}", stderr(output));
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        listed
            .iter()
            .map(|c| c["serial"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut everything = serials(&daemon.cli(&["list", "--json"]));
    assert!(everything.len() >= 3, "{everything:?}");
    everything.sort();

    let mut paged = Vec::new();
    let mut args: Vec<String> = ["list", "--limit", "1", "--json"]
        .map(String::from)
        .to_vec();
    for _ in 0..everything.len() + 1 {
        let borrowed: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = daemon.cli(&borrowed);
        let page = serials(&output);
        assert_eq!(page.len(), 1, "{page:?}");
        paged.extend(page);
        let more = stderr(&output);
        let Some(next) = more.trim().strip_prefix("more: certd ") else {
            assert_eq!(more.trim(), "", "no more line on the last page");
            break;
        };
        assert!(!next.contains('\n'), "one line: {more}");
        assert!(
            next.starts_with("list --limit 1 --json --page-token "),
            "{next}"
        );
        args = next.split(' ').map(String::from).collect();
    }
    paged.sort();
    assert_eq!(paged, everything, "each certificate once");

    // --all asks a page at a time and prints them all.
    let mut all = serials(&daemon.cli(&["list", "--all", "--limit", "1", "--json"]));
    all.sort();
    assert_eq!(all, everything);

    // A filtered page lists what matches, and --limit counts matches.
    let output = daemon.cli(&["list", "--service", "beta", "--limit", "5", "--json"]);
    assert_eq!(serials(&output).len(), 1);
    assert_eq!(stderr(&output), "");

    // Every service's good certificates go by expiry, a page at a time
    // (none is revoked or expired here: all of them, each once); a token
    // of the issuance order is refused with those filters, naming it.
    let mut good = serials(&daemon.cli(&[
        "list", "--status", "good", "--all", "--limit", "1", "--json",
    ]));
    good.sort();
    assert_eq!(good, everything);
    let first = daemon.cli(&["list", "--limit", "1"]);
    let token = stderr(&first).trim().rsplit(' ').next().unwrap().to_owned();
    let output = daemon.cli(&["list", "--status", "good", "--page-token", &token]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("belongs to a listing with other filters"),
        "{}",
        stderr(&output)
    );

    // Garbage, too short, a version certd never made, and an expiry-order
    // token (version 2) given to a listing by issuance time.
    for token in ["not-a-token", "AQ", "AwAAAAAAAAAAAQ", "AgAAAAAAAAAAAQ"] {
        let output = daemon.cli(&["list", "--page-token", token]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        let line = stderr(&output);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.starts_with("certd: error:") && line.contains("page token"),
            "{line}"
        );
    }
}

/// `certd revoke --offline` revokes in the data directory with certd
/// stopped (refused while it holds a sled store); the restarted certd
/// knows it revoked, and the audit says who revoked it.
#[test]
fn revoke_offline_with_certd_stopped() {
    let mut daemon = Daemon::start();
    let dir = daemon.tmp.path().join("billing");
    assert!(daemon.ci_issue("billing", &dir, &[]).status.success());
    let serial = serial_in(&dir);
    if common::database_url(&daemon.data_dir).is_none() {
        let output = daemon.cli(&["revoke", "--offline", &serial]);
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("drop --offline"),
            "{}",
            stderr(&output)
        );
    }
    daemon.terminate();
    let output = daemon.cli(&["revoke", "--offline", &serial, "--reason", "key-compromise"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&format!("revoked {serial} (billing)"))
            && stdout(&output).contains("reason key-compromise"),
        "{}",
        stdout(&output)
    );
    daemon.restart_on_same_port();
    let output = daemon.cli(&["show", &serial, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["status"], "revoked");
    let output = daemon.cli(&[
        "inspect",
        dir.join("cert.pem").to_str().unwrap(),
        "--server",
        &daemon.grpc,
    ]);
    assert_eq!(
        output.status.code(),
        Some(4),
        "certd says revoked: {}",
        stdout(&output)
    );
    let audit = stdout(&daemon.cli(&["audit", "--event", "revoke"]));
    assert!(audit.contains("offline-cli uid="), "{audit}");
}
