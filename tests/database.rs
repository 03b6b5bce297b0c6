//! A damaged, deleted or replaced database is refused, never served; a
//! backup taken while certd serves restores it, and the CRL number never
//! goes down. Against the real daemon and CLI.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Daemon, run_cli, serve_command, stderr, stdout};

/// A daemon that has issued 200 certificates and revoked 4 of them, and
/// published CRLs; returns it with the serials it issued and revoked.
async fn busy_daemon() -> (Daemon, Vec<String>, Vec<String>) {
    let daemon = Daemon::start();
    let mut serials = Vec::new();
    // As `certd issue --unregistered` asks, over the admin socket.
    let mut admin = certd::api::client::AdminClient::connect(
        &certd::DataDir::new(&daemon.data_dir).admin_socket(),
    )
    .await
    .unwrap();
    let options = certd::authority::OperatorIssue {
        unregistered: true,
        renewable: false,
    };
    for index in 0..200 {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = common::csr_for(&key, None, vec![]);
        let issued = admin.issue("billing", csr, None, options).await.unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.certificate_pem.as_bytes()).unwrap();
        serials.push(hex::encode(pem.parse_x509().unwrap().raw_serial()));
        if index == 100 {
            // Spread the database over more of the log.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
    let revoked: Vec<String> = serials.iter().step_by(60).cloned().collect();
    for serial in &revoked {
        let output = daemon.cli(&["revoke", serial, "--reason", "key-compromise"]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    (daemon, serials, revoked)
}

/// What `certd serve` on `data_dir` did: refused with its stderr, or
/// started (and was stopped again).
enum Start {
    Refused { code: Option<i32>, stderr: String },
    Served,
}

fn try_serve(data_dir: &Path) -> Start {
    try_serve_with(data_dir, &[])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn listed(data_dir: &Path) -> Vec<serde_json::Value> {
    let output = run_cli(
        data_dir,
        &["list", "--offline", "--json", "--limit", "100000"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_and_deleted_databases_are_refused_without_a_panic() {
    let (mut daemon, serials, revoked) = busy_daemon().await;
    assert!(daemon.terminate().success());
    let database = daemon.data_dir.join("db").join("db");
    let size = std::fs::metadata(&database).unwrap().len();

    let mut refused = 0;
    for percent in [5, 20, 40, 60, 80, 95] {
        let copy = daemon.tmp.path().join(format!("truncated-{percent}"));
        copy_dir(&daemon.data_dir, &copy);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.join("db").join("db"))
            .unwrap();
        file.set_len(size * percent / 100).unwrap();
        drop(file);
        match try_serve(&copy) {
            Start::Refused { code, stderr: said } => {
                refused += 1;
                assert_eq!(code, Some(1), "truncated at {percent}%: {said}");
                assert!(!said.contains("panicked"), "{said}");
                let message = said.trim().lines().last().unwrap_or_default();
                assert!(
                    message.contains("is damaged") || message.contains("holds less than this CA"),
                    "truncated at {percent}%: {said}"
                );
                assert!(message.contains("certd db restore"), "{message}");
                // The offline commands refuse it the same way, and
                // `db check` reports it and exits 1.
                let list = run_cli(&copy, &["list", "--offline"]);
                assert_eq!(list.status.code(), Some(1), "{}", stderr(&list));
                assert!(!stderr(&list).contains("panicked"));
                let check = run_cli(&copy, &["db", "check"]);
                assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
            }
            Start::Served => {
                // Only a truncation that lost nothing may be served.
                let records = listed(&copy);
                let present: HashSet<&str> = records
                    .iter()
                    .filter_map(|r| r["serial"].as_str())
                    .collect();
                for serial in &serials {
                    assert!(
                        present.contains(serial.as_str()),
                        "{percent}%: {serial} lost"
                    );
                }
                for record in &records {
                    let serial = record["serial"].as_str().unwrap().to_owned();
                    if revoked.contains(&serial) {
                        assert_eq!(record["status"], "revoked", "{percent}%: {serial}");
                    }
                }
            }
        }
    }
    assert!(refused >= 3, "only {refused} of 6 truncations were refused");

    // A deleted database is refused too, naming what the CA had recorded.
    std::fs::remove_dir_all(daemon.data_dir.join("db")).unwrap();
    match try_serve(&daemon.data_dir) {
        Start::Refused { code, stderr } => {
            assert_eq!(code, Some(1), "{stderr}");
            assert!(
                stderr.contains("it is missing or empty, but this CA recorded 20")
                    && stderr.contains("certd db restore"),
                "{stderr}"
            );
        }
        Start::Served => panic!("certd served an empty database in place of a lost one"),
    }
}

async fn issue_with(
    daemon: &Daemon,
    token: &str,
) -> Result<String, certd::api::client::ClientError> {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = common::csr_for(&key, None, vec![]);
    daemon
        .client(None)
        .await
        .issue(csr, token)
        .await
        .map(|issued| issued.serial)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_serving_restores_a_lost_database() {
    let daemon = Daemon::start();
    let kept = daemon.bootstrap("billing").await;
    let revoked_before = daemon.bootstrap("billing").await;
    let output = daemon.cli(&["revoke", &revoked_before.issued.serial]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Workloads keep bootstrapping while the backup is taken.
    let tokens = daemon.cli(&["token", "create", "--service", "billing", "--count", "40"]);
    let tokens: Vec<String> = stdout(&tokens).lines().map(str::to_owned).collect();
    let daemon = std::sync::Arc::new(daemon);
    let load = tokio::spawn({
        let daemon = daemon.clone();
        async move {
            let mut issued = Vec::new();
            for token in tokens {
                let serial = issue_with(&daemon, &token)
                    .await
                    .expect("issue during backup");
                issued.push((token, serial));
            }
            issued
        }
    });
    let backup = daemon.tmp.path().join("certd.backup");
    let output = daemon.cli(&["db", "backup", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("(1 revoked)"),
        "{}",
        stdout(&output)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "a backup holds the audit trail: 0600");
    let issued_around_backup = load.await.unwrap();

    // After the backup: one more certificate, one more revocation.
    let after = daemon.bootstrap("billing").await;
    let output = daemon.cli(&["revoke", &kept.issued.serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (_, last_crl_number) = daemon.client(None).await.crl().await.unwrap();
    let mut daemon = std::sync::Arc::into_inner(daemon).expect("one owner");
    assert!(daemon.terminate().success());

    // Restoring or checking while certd serves is refused: the database
    // is held, exit 3 as documented.
    let running = Daemon::start_in(tempfile::tempdir().unwrap(), daemon.data_dir.clone(), &[]);
    let output = run_cli(
        &daemon.data_dir,
        &["db", "restore", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("stop it before restoring"),
        "{}",
        stderr(&output)
    );
    let output = run_cli(&daemon.data_dir, &["db", "check"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("in use by another process"),
        "{}",
        stderr(&output)
    );
    drop(running);

    // The disk loses the database; the backup brings it back.
    std::fs::remove_dir_all(daemon.data_dir.join("db")).unwrap();
    let output = run_cli(
        &daemon.data_dir,
        &["db", "restore", backup.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let said = stdout(&output);
    assert!(said.contains("restored"), "{said}");
    assert!(
        said.contains("1 revocations made after this backup are not in it"),
        "the operator is told what the backup lacks: {said}"
    );
    let output = run_cli(&daemon.data_dir, &["db", "check"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );

    let tmp = std::mem::replace(&mut daemon.tmp, tempfile::tempdir().unwrap());
    let restored = Daemon::start_in(tmp, daemon.data_dir.clone(), &[]);
    let recorded = restored.recorded_serials();
    assert!(recorded.contains(&kept.issued.serial));
    assert!(recorded.contains(&revoked_before.issued.serial));
    assert!(
        !recorded.contains(&after.issued.serial),
        "issued after the backup"
    );
    let mut client = restored.client(None).await;
    let status = client.status(&revoked_before.issued.serial).await.unwrap();
    assert_eq!(
        status.status, "revoked",
        "a revocation in the backup survives"
    );
    let (_, crl_number) = client.crl().await.unwrap();
    assert!(
        crl_number > last_crl_number,
        "the CRL number went from {last_crl_number} down to {crl_number}"
    );
    // No token both paid for a certificate in the backup and works again.
    for (token, serial) in &issued_around_backup {
        if recorded.contains(serial) {
            let (kind, _) = common::refusal(issue_with(&restored, token).await);
            assert_eq!(kind, certd::ErrorKind::Unauthenticated, "{serial}");
        }
    }
}

/// A backup of another CA's database is refused before anything changes.
#[test]
fn a_backup_of_another_ca_is_refused() {
    let mut ours = Daemon::start();
    let theirs = Daemon::start();
    let backup = theirs.tmp.path().join("theirs.backup");
    let output = theirs.cli(&["db", "backup", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(ours.terminate().success());
    let output = run_cli(&ours.data_dir, &["db", "restore", backup.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("it is a backup of another database"),
        "{}",
        stderr(&output)
    );
    let output = run_cli(&ours.data_dir, &["db", "check"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// `try_serve` with extra arguments.
fn try_serve_with(data_dir: &Path, extra: &[&str]) -> Start {
    let mut child = serve_command(data_dir)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn certd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.starts_with("certd ready") {
        let _ = child.kill();
        let _ = child.wait();
        return Start::Served;
    }
    let output = child.wait_with_output().unwrap();
    Start::Refused {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn refused(start: Start, what: &str) -> String {
    match start {
        Start::Refused { code, stderr } => {
            assert_eq!(code, Some(1), "{what}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
            stderr
        }
        Start::Served => panic!("{what}: certd served"),
    }
}

/// Without its marks file, a CA that has issued is no longer served from
/// whatever database it finds: an older copy of the database (which served
/// revoked certificates as good and a lower CRL number) and a deleted one
/// (which came back empty with CRL number 2) are refused with one line
/// that says what to do; the explicit, danger-named override serves and is
/// audited; temporary marks files a crash left are removed at start.
#[tokio::test(flavor = "multi_thread")]
async fn a_ca_without_its_marks_refuses_an_older_or_missing_database() {
    let daemon = Daemon::start();
    for index in 0..5 {
        let output = daemon.ci_issue("billing", &daemon.tmp.path().join(format!("a{index}")), &[]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let mut daemon = daemon;
    assert!(daemon.terminate().success());
    let old_copy = daemon.tmp.path().join("old-db");
    copy_dir(&daemon.data_dir.join("db"), &old_copy);
    let mut daemon = Daemon::start_in(tempfile::tempdir().unwrap(), daemon.data_dir.clone(), &[]);
    let out = daemon.tmp.path().join("revoked");
    assert!(daemon.ci_issue("billing", &out, &[]).status.success());
    let cert = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
    let serial = hex::encode(pem.parse_x509().unwrap().raw_serial());
    let output = daemon.cli(&["revoke", &serial, "--reason", "key-compromise"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(daemon.terminate().success());
    let dir = daemon.data_dir.clone();

    // The older copy, marks gone too (as an operator restoring a disk
    // image without the CA files' latest state would have it).
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    copy_dir(&old_copy, &dir.join("db"));
    std::fs::remove_file(dir.join("store-marks.toml")).unwrap();
    std::fs::write(dir.join(".store-marks.toml.0123456789abcdef.tmp"), b"half").unwrap();
    let said = refused(try_serve(&dir), "an older copy without marks");
    let error = said
        .lines()
        .find(|line| line.starts_with("certd: error: "))
        .unwrap_or_else(|| panic!("no error line: {said}"));
    assert!(error.contains("store-marks.toml is missing"), "{error}");
    assert!(error.contains("--danger-accept-unmarked-store"), "{error}");
    assert!(
        !dir.join(".store-marks.toml.0123456789abcdef.tmp").exists(),
        "a leftover temporary marks file is removed at start"
    );
    // The offline commands refuse it the same way.
    let list = run_cli(&dir, &["list", "--offline"]);
    assert_eq!(list.status.code(), Some(1), "{}", stderr(&list));
    assert!(stderr(&list).contains("store-marks.toml is missing"));

    // A deleted database without marks: refused too, not served empty.
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    let said = refused(try_serve(&dir), "a deleted database without marks");
    assert!(said.contains("store-marks.toml is missing"), "{said}");
    assert!(
        !dir.join("store-marks.toml").exists(),
        "nothing was written"
    );

    // The override: served, with new marks and an audit entry.
    std::fs::remove_dir_all(dir.join("db")).ok();
    copy_dir(&old_copy, &dir.join("db"));
    assert!(matches!(
        try_serve_with(&dir, &["--danger-accept-unmarked-store"]),
        Start::Served
    ));
    assert!(dir.join("store-marks.toml").exists());
    let audit = run_cli(&dir, &["audit", "--offline", "--json"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
    let trail: Vec<serde_json::Value> = serde_json::from_slice(&audit.stdout).unwrap();
    assert!(
        trail.iter().any(|e| e["event"] == "accept-unmarked-store"),
        "the override is audited"
    );
}

/// A new CA (`certd init` writes its marks) pointed at a database that
/// already holds another CA's certificates refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_ca_refuses_another_cas_database() {
    let mut other = Daemon::start();
    assert!(
        other
            .ci_issue("billing", &other.tmp.path().join("a"), &[])
            .status
            .success()
    );
    assert!(other.terminate().success());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new-ca");
    let output = common::run_cli(&dir, &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        dir.join("store-marks.toml").exists(),
        "init writes the marks"
    );
    copy_dir(&other.data_dir.join("db"), &dir.join("db"));
    let said = refused(try_serve(&dir), "another CA's database");
    assert!(said.contains("belongs to another CA"), "{said}");
}
