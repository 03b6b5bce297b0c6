//! Machine-readable output: `--json` on the commands that print data (one
//! JSON object or array on stdout, times in Unix seconds), failures as one
//! JSON object on stderr with the usual exit code, typed fields in JSON
//! logs, and the progress of the long database commands on stderr.

mod common;

use std::path::Path;
use std::process::Output;

use common::{Daemon, run_cli, stderr};
use serde_json::Value;

/// The one JSON document on stdout, checked to be all there is.
fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one JSON document ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A Unix time in seconds, as every time field in certd's JSON is.
fn assert_unix_seconds(value: &Value, what: &str) {
    let seconds = value
        .as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {value}"));
    assert!(
        (1_700_000_000..4_000_000_000).contains(&seconds),
        "{what} is not Unix seconds: {seconds}"
    );
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The workload, operator, policy and CA commands print one parseable
/// JSON object with the documented fields, and nothing else on stdout.
#[test]
fn data_commands_print_one_json_object() {
    let daemon = Daemon::start();
    let entry = json(&daemon.cli(&[
        "entry",
        "create",
        "--service",
        "billing",
        "--selector",
        "token:billing",
        "--json",
    ]));
    let entry_id = entry["id"].as_str().expect("entry id").to_owned();
    assert_unix_seconds(&entry["created_at"], "entry created_at");

    let token = daemon.token("billing");
    let dir = daemon.tmp.path().join("billing");
    let bundle = daemon.data_dir.join("bundle.pem");
    let requested = json(&daemon.cli(&[
        "request",
        "--server",
        &daemon.grpc,
        "--ca-bundle",
        path(&bundle),
        "--token",
        &token,
        "--out",
        path(&dir),
        "--json",
    ]));
    assert!(
        requested["spiffe_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("spiffe://"))
    );
    assert!(requested["serial"].is_string());
    assert_unix_seconds(&requested["not_after"], "request not_after");
    assert_eq!(requested["dir"], path(&dir));

    let renewed = json(&daemon.cli(&[
        "renew",
        "--dir",
        path(&dir),
        "--server",
        &daemon.grpc,
        "--json",
    ]));
    assert_ne!(renewed["serial"], requested["serial"]);
    let not_due = json(&daemon.cli(&[
        "renew",
        "--dir",
        path(&dir),
        "--server",
        &daemon.grpc,
        "--if-needed",
        "--json",
    ]));
    assert_eq!(not_due["renewed"], false);
    assert_unix_seconds(&not_due["renews_after"], "renews_after");

    let ci = daemon.tmp.path().join("ci");
    let issued = json(&daemon.ci_issue("ci-job", &ci, &["--json"]));
    assert_unix_seconds(&issued["not_after"], "issue not_after");
    let operator = daemon.tmp.path().join("alice");
    let issued = json(&daemon.cli(&[
        "operator",
        "issue",
        "--name",
        "alice",
        "--out",
        path(&operator),
        "--json",
    ]));
    assert!(
        issued["spiffe_id"]
            .as_str()
            .unwrap()
            .ends_with("/operator/alice")
    );

    let policy = daemon.tmp.path().join("policy.toml");
    std::fs::write(&policy, "").unwrap();
    let checked = json(&daemon.cli(&["policy", "check", path(&policy), "--json"]));
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["grants"], 0);
    let granted = json(&daemon.cli(&[
        "policy",
        "grant",
        "billing-ledger",
        "--from",
        "billing",
        "--to",
        "ledger",
        "--json",
    ]));
    assert_eq!(granted["grants"], 1);
    let shown = json(&daemon.cli(&["policy", "show", "--json"]));
    assert_eq!(shown["version"], granted["version"]);
    assert!(shown["policy"].as_str().unwrap().contains("billing-ledger"));
    let revoked = json(&daemon.cli(&["policy", "revoke", "billing-ledger", "--json"]));
    assert_eq!(revoked["grants"], 0);

    let crl = json(&daemon.cli(&["ca", "sign-root-crl", "--json"]));
    assert!(crl["number"].as_u64().is_some());
    assert_unix_seconds(&crl["this_update"], "this_update");
    assert_unix_seconds(&crl["next_update"], "next_update");

    let package = daemon.tmp.path().join("replica.tar");
    let exported = json(&daemon.cli(&["replica", "export", "--out", path(&package), "--json"]));
    assert!(exported["files"].as_array().is_some_and(|files| {
        files.iter().any(|file| file["secret"] == true)
            && files.iter().any(|file| file["name"] == "bundle.pem")
    }));

    let deleted = json(&daemon.cli(&["entry", "delete", &entry_id, "--json"]));
    assert_eq!(deleted["id"], entry_id.as_str());
}

/// A failing command with `--json` prints one JSON error object on stderr
/// (and nothing on stdout), with the exit code it has without `--json`.
#[test]
fn failures_with_json_are_one_error_object() {
    let daemon = Daemon::start();
    for (args, code, kind) in [
        (vec!["show", "0a0b0c", "--json"], 5, "not_found"),
        (vec!["show", "not-hex", "--json"], 2, "invalid_input"),
        (
            vec!["db", "restore", "/nonexistent/backup", "--json"],
            3,
            "unavailable",
        ),
        (
            vec![
                "request",
                "--ca-bundle",
                "/nonexistent/bundle.pem",
                "--token",
                "unused",
                "--out",
                "/nonexistent/out",
                "--json",
            ],
            1,
            "other",
        ),
    ] {
        let output = daemon.cli(&args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            output.stdout.is_empty(),
            "{args:?}: stdout holds {:?}",
            output.stdout
        );
        let error: Value = serde_json::from_str(stderr(&output).trim()).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stderr is not one JSON object ({e}): {}",
                stderr(&output)
            )
        });
        assert_eq!(error["error"]["exit_code"], code, "{args:?}");
        assert_eq!(error["error"]["kind"], kind, "{args:?}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        // Without --json, the same failure is the usual line.
        let text = daemon.cli(&args[..args.len() - 1]);
        assert_eq!(text.status.code(), Some(code));
        assert!(
            stderr(&text).starts_with("certd: error: "),
            "{}",
            stderr(&text)
        );
    }
}

/// `db backup`, `db restore` and `db check` print JSON; `--progress` shows
/// progress lines on stderr and changes nothing in the result.
#[test]
fn database_commands_print_json_and_show_progress() {
    let mut daemon = Daemon::start();
    for service in ["billing", "ledger", "search"] {
        let out = daemon.tmp.path().join(service);
        let output = daemon.ci_issue(service, &out, &[]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let quiet_file = daemon.tmp.path().join("quiet.backup");
    let quiet = json(&daemon.cli(&["db", "backup", path(&quiet_file), "--json"]));
    let backup = daemon.tmp.path().join("db.backup");
    let output = daemon.cli(&["db", "backup", path(&backup), "--json", "--progress"]);
    let backed_up = json(&output);
    assert!(
        stderr(&output)
            .lines()
            .any(|line| line.starts_with("certd: ") && line.contains("records checked")),
        "no progress: {}",
        stderr(&output)
    );
    // The three certificates, and any the daemon recorded for itself.
    let records = backed_up["records"].as_u64().expect("records");
    assert!(records >= 3, "{backed_up}");
    for field in [
        "records",
        "revocations",
        "entries",
        "join_tokens",
        "audit_entries",
        "crl_number",
    ] {
        assert_eq!(backed_up[field], quiet[field], "{field}");
    }
    assert_eq!(backed_up["file"], path(&backup));
    assert!(daemon.terminate().success());

    let output = run_cli(
        &daemon.data_dir,
        &["db", "restore", path(&backup), "--json", "--progress"],
    );
    let restored = json(&output);
    assert!(
        stderr(&output)
            .lines()
            .any(|line| line.starts_with("certd: ") && line.contains("records restored")),
        "no progress: {}",
        stderr(&output)
    );
    assert_eq!(restored["restored"]["records"], records);
    assert_eq!(restored["missing_records"], 0);
    assert!(restored["next_crl_number"].as_u64().is_some());

    let checked = json(&run_cli(&daemon.data_dir, &["db", "check", "--json"]));
    assert_eq!(checked["ok"], true);
    assert!(
        checked["holds"]
            .as_str()
            .unwrap()
            .contains(&format!("{records} certificates")),
        "{checked}"
    );
    // Without --progress and off a terminal, stderr stays empty.
    let output = run_cli(
        &daemon.data_dir,
        &[
            "db",
            "backup",
            "--offline",
            path(&daemon.tmp.path().join("third")),
            "--json",
        ],
    );
    json(&output);
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

/// With `--log-format json`, every log line is a JSON object whose fields
/// keep their types: the audit's selectors an array, numbers numbers; and
/// no join token reaches the log.
#[test]
fn json_logs_have_typed_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let daemon = Daemon::start_with_env(
        tmp,
        data_dir,
        &[],
        &[("CERTD_LOG_FORMAT", Path::new("json"))],
    );
    let token = daemon.token("billing");
    let output = daemon.request(&token, &daemon.tmp.path().join("billing"));
    assert!(output.status.success(), "{}", stderr(&output));
    let output = daemon.request(&token, &daemon.tmp.path().join("again"));
    assert_eq!(output.status.code(), Some(4), "a used token is refused");

    // The CLI logs the same way: `crl sync` reports how many CRLs it wrote.
    let crls = daemon.tmp.path().join("crls.pem");
    let output = common::cli_command(
        &daemon.data_dir,
        &["crl", "sync", "--http", &daemon.http, "--out", path(&crls)],
    )
    .env("CERTD_LOG_FORMAT", "json")
    .env("CERTD_LOG", "info")
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    // The daemon's log is written by a background thread: wait for the
    // audit of the refusal, the last thing it did.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !daemon.log_text().contains("\"decision\":\"deny\"")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut lines: Vec<Value> = Vec::new();
    let log = daemon.log_text() + &stderr(&output);
    for line in log.lines() {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(
            parsed["timestamp"].is_string() && parsed["level"].is_string(),
            "{line}"
        );
        assert!(parsed["fields"].is_object(), "{line}");
        lines.push(parsed);
    }
    let audit: Vec<&Value> = lines
        .iter()
        .filter(|line| line["target"] == "certd::audit" && line["fields"]["event"] == "issue")
        .collect();
    assert!(!audit.is_empty(), "no audit line for the issuance: {log}");
    let granted = audit
        .iter()
        .find(|line| line["fields"]["decision"] == "allow")
        .expect("the issuance was audited");
    assert_eq!(
        granted["fields"]["selectors"],
        serde_json::json!(["token:billing"]),
        "{granted}"
    );
    let updated = lines
        .iter()
        .find(|line| line["fields"]["message"] == "CRLs updated")
        .expect("crl sync logged its update");
    assert!(updated["fields"]["crls"].is_u64(), "{updated}");
    // No secret reaches the log: the join token appears nowhere.
    assert!(!log.contains(&token));
}
