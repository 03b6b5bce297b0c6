//! `certd bench` and the store it loads: it refuses a store in use unless
//! told otherwise, and whether its run succeeds or is interrupted, it
//! leaves behind nothing but the records of the certificates it issued.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use serde_json::Value;

use common::{Daemon, cli_command, stderr, stdout};

/// The daemon's answer to `args` (a listing with `--json`), parsed.
fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let output = daemon.cli(args);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn entries(daemon: &Daemon) -> Vec<(String, String)> {
    json(daemon, &["entry", "list", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["service"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn unused_tokens(daemon: &Daemon) -> Vec<String> {
    json(daemon, &["token", "list", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn certificates_of(daemon: &Daemon, service: &str) -> usize {
    json(daemon, &["list", "--service", service, "--json"])
        .as_array()
        .expect("array")
        .len()
}

/// `certd bench OPERATION` against `daemon`, with `extra` arguments.
fn bench(daemon: &Daemon, operation: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "bench",
        operation,
        "--server",
        &daemon.grpc,
        "--http",
        &daemon.http,
        "--concurrency",
        "2",
    ];
    args.extend(extra);
    daemon.cli(&args)
}

/// The line bench ends its text report with.
fn cleanup_line(text: &str) -> &str {
    text.lines()
        .find(|line| line.starts_with("cleaned up: "))
        .unwrap_or_else(|| panic!("no cleanup line in {text}"))
}

/// On a fresh `certd serve` data directory bench runs without a flag, and
/// afterwards the store holds no entry, no unused join token and no policy
/// rule of its: only the records of the certificates it issued, which it
/// counts in its last line.
#[test]
fn bench_removes_what_it_created_and_keeps_the_certificate_records() {
    let daemon = Daemon::start();

    let output = bench(&daemon, "issue", &["--count", "20", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        cleanup_line(&text),
        "cleaned up: revoked 0 unused join tokens, deleted 1 entry, removed 0 token-policy rules; kept the records of the 20 certificates issued (the retention purge deletes them once expired; revoking them would only grow the CRL), whose keys lived only in this process and are gone"
    );
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        (summary["ok"].as_u64(), summary["errors"].as_u64()),
        (Some(20), Some(0))
    );

    // An agent and a workload entry parented to it; a grant and a delegation.
    let output = bench(&daemon, "agent-issue", &["--count", "10"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        cleanup_line(&stdout(&output)).contains("deleted 2 entries"),
        "{}",
        stdout(&output)
    );
    let output = bench(&daemon, "token-exchange", &["--count", "10"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        cleanup_line(&stdout(&output)).contains("removed 2 token-policy rules"),
        "{}",
        stdout(&output)
    );

    assert_eq!(entries(&daemon), Vec::<(String, String)>::new());
    assert_eq!(unused_tokens(&daemon), Vec::<String>::new());
    let policy = stdout(&daemon.cli(&["policy", "show"]));
    assert!(
        !policy.contains("[[grant]]") && !policy.contains("[[delegation]]"),
        "{policy}"
    );
    // The records stay, unrevoked: 20 issued, 10 through the agent; the
    // agent's own certificate and the token client's.
    assert_eq!(certificates_of(&daemon, "certd-bench"), 30);
    assert_eq!(certificates_of(&daemon, "certd-bench-agent"), 1);
    assert_eq!(certificates_of(&daemon, "certd-bench-jwt"), 1);
    let revoked = json(&daemon, &["list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "good")
        .count();
    assert_eq!(revoked, 0);
}

/// A store with an operator's things is refused (exit 4, one line naming
/// them and the flag), and left as it was; with `--allow-store-in-use` the
/// run goes ahead and removes exactly what it created: an operator's entry
/// that bench would use (named `certd-bench`, with its selector) and the
/// operator's unused token for it stay.
#[test]
fn bench_refuses_a_store_in_use_and_with_the_flag_touches_only_its_own() {
    let daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    daemon.entry("certd-bench", &["token:certd-bench"], &[]);
    let output = daemon.cli(&["token", "create", "--service", "certd-bench"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = daemon.cli(&[
        "policy", "grant", "gateway", "--from", "billing", "--to", "orders",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let entries_before = entries(&daemon);
    let tokens_before = unused_tokens(&daemon);
    assert_eq!(tokens_before.len(), 1);

    for operation in ["issue", "token-exchange"] {
        let output = bench(&daemon, operation, &["--count", "5"]);
        assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
        let message = stderr(&output);
        assert_eq!(message.matches("certd: error:").count(), 1, "{message}");
        for expected in [
            "refusing to load a store that is in use (entries of billing; token-policy rules gateway)",
            "--allow-store-in-use",
        ] {
            assert!(message.contains(expected), "{expected} in {message}");
        }
    }
    assert_eq!(entries(&daemon), entries_before);
    assert_eq!(unused_tokens(&daemon), tokens_before);
    assert_eq!(certificates_of(&daemon, "certd-bench"), 0);

    // A run by time makes 30,000 tokens before the clock starts and 10,000
    // more whenever fewer than 20,000 are left: what it did not use is
    // revoked (never more than 30,000), and no more.
    let output = bench(
        &daemon,
        "issue",
        &["--duration", "1s", "--allow-store-in-use", "--json"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let issued = summary["ok"].as_u64().unwrap();
    assert!(issued > 0, "{text}");
    let revoked: u64 = cleanup_line(&text)
        .strip_prefix("cleaned up: revoked ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of revoked tokens in {text}"));
    let made = revoked + issued;
    assert!(
        made >= 30_000 && (made - 30_000).is_multiple_of(10_000) && revoked <= 30_000,
        "made {made} (revoked {revoked} + issued {issued}): {text}"
    );
    assert!(
        cleanup_line(&text).starts_with(&format!(
            "cleaned up: revoked {revoked} unused join tokens, deleted 0 entries, removed 0 token-policy rules; kept the records of the {issued} certificates issued"
        )),
        "{text}"
    );
    let output = bench(
        &daemon,
        "token-exchange",
        &["--count", "5", "--allow-store-in-use"],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    assert_eq!(entries(&daemon), entries_before);
    assert_eq!(unused_tokens(&daemon), tokens_before);
    let policy = stdout(&daemon.cli(&["policy", "show"]));
    assert!(policy.contains("name = \"gateway\""), "{policy}");
    assert!(!policy.contains("certd-bench"), "{policy}");
    assert_eq!(certificates_of(&daemon, "certd-bench"), issued as usize);
}

/// Ctrl-C stops the callers; bench still reports what was done, revokes the
/// tokens it had prepared but not used and deletes its entry, then exits
/// with a failure.
#[test]
fn an_interrupted_bench_still_cleans_up() {
    let daemon = Daemon::start();
    let mut child = cli_command(
        &daemon.data_dir,
        &[
            "bench",
            "issue",
            "--server",
            &daemon.grpc,
            "--concurrency",
            "1",
            "--count",
            "20000",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn certd bench");
    let mut progress = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The first progress line comes a second into the run.
    loop {
        let mut line = String::new();
        let read = progress.read_line(&mut line).unwrap();
        assert!(
            read > 0,
            "bench ended before its first progress line: {seen}"
        );
        seen.push_str(&line);
        if line.contains(" ok ") {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    progress.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();

    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(
        seen.contains("certd: error: interrupted before the run finished"),
        "{seen}"
    );
    let issued = text
        .split(": ")
        .nth(1)
        .and_then(|counts| counts.split(' ').next())
        .and_then(|ok| ok.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no summary in {text}"));
    assert!(issued > 0 && issued < 20_000, "{text}");
    assert!(
        cleanup_line(&text).starts_with(&format!(
            "cleaned up: revoked {} unused join tokens, deleted 1 entry, removed 0 token-policy rules; kept the records of the {issued} certificates issued",
            20_000 - issued
        )),
        "{text}"
    );
    assert_eq!(entries(&daemon), Vec::<(String, String)>::new());
    assert_eq!(unused_tokens(&daemon), Vec::<String>::new());
    assert_eq!(certificates_of(&daemon, "certd-bench"), issued as usize);
}

/// `certd bench acme` against a certd set up for it (`[acme.testing]`
/// sends http-01 to bench's port; no limit on one account's orders):
/// bench makes its entry, EAB key and account, and each order goes
/// through its http-01 challenge (or none, with `--acme-challenges none`),
/// finalize and download. Afterwards its entry is gone and its account
/// deactivated; the certificate records stay. A bench answering on
/// another port than the certd validates against fails before the run,
/// saying what the certd needs, and still cleans up.
#[test]
fn bench_acme_orders_through_http01_and_cleans_up() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port().to_string();
    drop(unused);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(
        &config,
        format!(
            "[acme]\nnew_orders_per_minute_per_account = 0\n[acme.testing]\nhttp_port = {port}\nresolve_all_to = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    let data_dir = tmp.path().join("ca");
    let config = config.to_str().unwrap().to_owned();
    let daemon = Daemon::start_in(tmp, data_dir, &["--config", &config]);

    let output = bench(
        &daemon,
        "acme",
        &["--count", "6", "--json", "--acme-http-port", &port],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    // The six measured, and the first order made before the clock started.
    assert_eq!(
        cleanup_line(&text),
        "cleaned up: revoked 0 unused join tokens, deleted 1 entry, removed 0 token-policy rules, deactivated 1 ACME account; kept the records of the 7 certificates issued (the retention purge deletes them once expired; revoking them would only grow the CRL), whose keys lived only in this process and are gone"
    );
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["op"], "acme");
    assert_eq!(
        (summary["ok"].as_u64(), summary["errors"].as_u64()),
        (Some(6), Some(0)),
        "{summary}"
    );
    assert!(
        daemon
            .metric("certd_acme_challenges_total{challenge=\"http-01\",outcome=\"valid\"}")
            .is_some_and(|count| count >= 7.0),
        "every order proved its name by http-01"
    );

    let output = bench(
        &daemon,
        "acme",
        &["--count", "4", "--acme-challenges", "none"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        cleanup_line(&stdout(&output))
            .contains("deactivated 1 ACME account; kept the records of the 5 certificates"),
        "{}",
        stdout(&output)
    );

    // Answering elsewhere than the certd validates: refused before the
    // run, with what to set.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = elsewhere.local_addr().unwrap().port().to_string();
    drop(elsewhere);
    let output = bench(
        &daemon,
        "acme",
        &["--count", "1", "--acme-http-port", &other_port],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("[acme.testing] http_port = {other_port}")),
        "{}",
        stderr(&output)
    );

    assert_eq!(entries(&daemon), Vec::<(String, String)>::new());
    let accounts = json(&daemon, &["acme", "account", "list", "--json"]);
    let accounts = accounts.as_array().unwrap();
    assert!(!accounts.is_empty());
    assert!(
        accounts
            .iter()
            .all(|account| account["status"] == "deactivated"),
        "{accounts:?}"
    );
    assert_eq!(certificates_of(&daemon, "certd-bench"), 12);
}

/// `certd bench revoke` issues its certificates first, then revokes each
/// once: without waiting for the CRL (the default) every answer names CRL
/// 0, and the report gives the first CRL that lists them all; with
/// `--wait-crl` every answer waits for it. Either way every certificate
/// it issued ends revoked, and the CRL the report names lists them.
#[test]
fn bench_revoke_revokes_what_it_issued_and_reports_the_crl_listing_them() {
    let daemon = Daemon::start();
    for (count, extra, total) in [("12", None, 12), ("8", Some("--wait-crl"), 20)] {
        let mut args = vec!["--count", count, "--json"];
        args.extend(extra);
        let output = bench(&daemon, "revoke", &args);
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stdout(&output);
        let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(summary["op"], "revoke", "{text}");
        assert_eq!(summary["errors"], 0, "{text}");
        assert_eq!(summary["wait_crl"], extra.is_some(), "{text}");
        assert_eq!(summary["crl"]["entries"], total, "{text}");
        assert!(summary["crl"]["number"].as_u64().unwrap() > 0, "{text}");
        assert!(text.contains("lists every revocation"), "{text}");
    }
    let revoked = json(&daemon, &["list", "--service", "certd-bench", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "revoked")
        .count();
    assert_eq!(revoked, 20);
    let output = bench(&daemon, "revoke", &["--duration", "1s"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("needs --count"),
        "{}",
        stderr(&output)
    );
}

/// Records the store of a stopped certd holds beside bench's own: enough
/// that a full pass over them is long (issue 29 asks for a store of at least
/// 200,000). Written straight into its database (sled, or PostgreSQL in
/// CI's second pass), 64 writers at once, as `benches/store.rs` fills its
/// store; unexpired, so the retention purge leaves them alone.
fn seed_store(data_dir: &std::path::Path, records: usize) {
    use certd::identity::Serial;
    use certd::store::{Attestation, IssuanceRecord, StoreSettings};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings = match common::database_url(data_dir) {
        Some(url) => StoreSettings::new(Some(&url), None).expect("database URL"),
        None => StoreSettings::default(),
    };
    let store = runtime
        .block_on(settings.open(&certd::DataDir::new(data_dir)))
        .expect("the stopped certd's store");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    runtime.block_on(async {
        let writers = 64;
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for index in (writer..records).step_by(writers) {
                    let service = format!("seeded-{}", index % 500);
                    let record = IssuanceRecord {
                        serial: Serial::generate(),
                        dns_names: vec![format!("{service}.certd.internal")],
                        uris: vec![format!("spiffe://certd.internal/svc/{service}")],
                        service: service.parse().expect("service name"),
                        not_before: now - 60,
                        not_after: now + 86_400,
                        issued_at: now - 60,
                        sha256_fingerprint: [7; 32],
                        // The size of a P-256 workload certificate.
                        der: vec![0x30; 650],
                        attestation: Attestation::Renewal,
                        renewed_from: None,
                        revocation: None,
                    };
                    store
                        .record_issuance(&record, None)
                        .await
                        .expect("recorded");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
    });
}

/// `--alongside backup|list` against a store of 200,000 records: the
/// second half of the run repeats the pass (a whole backup streamed over
/// the admin socket; every certificate paged through), issuance goes on
/// meanwhile without an error, and the report sets the two halves side by
/// side. How much of its rate issuance keeps is a measurement, not a test
/// (docs/PERFORMANCE.md, "Issuance beside full passes"): here the passes
/// must complete and issuance must continue during them. On PostgreSQL,
/// whose backups are its own tools', the backup pass is refused, saying so.
#[test]
fn bench_alongside_full_passes_over_a_large_store_reports_both_halves() {
    const SEEDED: usize = 200_000;
    let mut daemon = Daemon::start();
    daemon.terminate();
    seed_store(&daemon.data_dir, SEEDED);
    daemon.restart_on_same_port();

    let on_postgres = common::database_url(&daemon.data_dir).is_some();
    let passes: &[(&str, &str)] = if on_postgres {
        let output = bench(
            &daemon,
            "issue",
            &[
                "--duration",
                "4s",
                "--alongside",
                "backup",
                "--allow-store-in-use",
            ],
        );
        assert!(!output.status.success());
        assert!(stderr(&output).contains("pg_dump"), "{}", stderr(&output));
        &[("list", "8s")]
    } else {
        &[("backup", "8s"), ("list", "8s")]
    };
    for &(pass, duration) in passes {
        let output = bench(
            &daemon,
            "issue",
            &[
                "--duration",
                duration,
                "--alongside",
                pass,
                "--allow-store-in-use",
                "--json",
            ],
        );
        assert!(output.status.success(), "{pass}: {}", stderr(&output));
        let text = stdout(&output);
        let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(summary["errors"], 0, "{text}");
        let alongside = &summary["alongside"];
        assert_eq!(alongside["pass"], pass, "{text}");
        assert!(
            alongside["passes_completed"].as_u64().unwrap() >= 1,
            "no {pass} completed: {text}"
        );
        let size = alongside["first_pass_size"].as_u64().unwrap();
        match pass {
            // Every seeded record is in the backup, 650 bytes of DER each.
            "backup" => assert!(size > SEEDED as u64 * 650, "{text}"),
            _ => assert!(size >= SEEDED as u64, "{text}"),
        }
        for phase in ["before", "during"] {
            assert!(
                alongside[phase]["ok"].as_u64().unwrap() > 0,
                "no issuance {phase} the {pass}: {text}"
            );
        }
        assert_eq!(
            alongside["before"]["ok"].as_u64().unwrap()
                + alongside["during"]["ok"].as_u64().unwrap(),
            summary["ok"].as_u64().unwrap(),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "alongside {}",
                if pass == "backup" { "Backup" } else { "List" }
            )),
            "{text}"
        );
    }
    let output = bench(&daemon, "issue", &["--count", "5", "--alongside", "backup"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--count"), "{}", stderr(&output));
    // `revoke` runs a count: refused before it issues anything.
    let output = bench(&daemon, "revoke", &["--alongside", "backup"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("runs a count"),
        "{}",
        stderr(&output)
    );
}

/// Four consecutive free loopback ports (the scripts take a base and up to
/// three after it); probed, so another process may still take one before
/// the script binds it. Each call of this test process starts its search
/// in a range of its own: the script tests run at the same time, and two
/// probes a moment apart would find the same free base.
fn free_port_base() -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 8;
    let start = 20_000 + call * 5_000;
    (start..start + 5_000)
        .step_by(97)
        .find(|base| {
            (0..4).all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
        })
        .expect("four free consecutive ports")
}

/// Whether this run is CI's pass over PostgreSQL (`CERTD_TEST_STORE`):
/// the scripts make certd data directories of their own on sled, so that
/// pass would only run them again.
fn a_pass_over_another_store() -> bool {
    let other = std::env::var_os("CERTD_TEST_STORE").is_some();
    if other {
        eprintln!("skipped: the script's certd keeps its own sled store; the sled pass runs it");
    }
    other
}

/// A script of `scripts/`, as docs/PERFORMANCE.md runs it, with
/// `settings` to make it brief: pinned where two CPUs are, its work kept in
/// `work`, on free ports. What it printed, and its last line's JSON.
fn run_script(script: &str, work: &std::path::Path, settings: &[(&str, &str)]) -> (String, Value) {
    let pin = if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        "1"
    } else {
        "0"
    };
    let output = std::process::Command::new(script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CERTD_BIN", env!("CARGO_BIN_EXE_certd"))
        .envs(settings.iter().copied())
        .env("PIN", pin)
        .env("JSON", "1")
        .env("WORK_DIR", work)
        .env("PORT_BASE", free_port_base().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {script}: {error}"));
    let said = stdout(&output);
    assert!(output.status.success(), "{said}{}", stderr(&output));
    let report = serde_json::from_str(said.lines().last().expect("a JSON line")).expect("JSON");
    (said, report)
}

/// `scripts/perf-matrix.sh`, as docs/PERFORMANCE.md runs it, briefly: every
/// operation it names loaded without an error at each number of callers,
/// in order, with the daemon's CPU per request, and the table it documents.
#[test]
fn the_performance_matrix_script_runs_as_documented() {
    if a_pass_over_another_store() {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let (said, report) = run_script(
        "scripts/perf-matrix.sh",
        work.path(),
        // Five seconds: the CPU is read between progress lines, and a
        // loaded CI machine may print only two of a 3-second run's.
        &[("DURATION", "5s"), ("CALLERS", "2")],
    );
    assert!(
        said.contains(
            "| operation | callers | requests/s | p50 ms | p99 ms | max ms | daemon CPU µs/request |"
        ),
        "{said}"
    );
    if report["pinned"] == true {
        assert!(
            said.lines()
                .any(|line| line.starts_with("Runs of 5s, daemon on CPU ")
                    && line.contains(", loader on CPU ")),
            "{said}"
        );
    }
    let runs = report["runs"].as_array().expect("runs");
    let done: Vec<(&str, u64)> = runs
        .iter()
        .map(|run| {
            (
                run["op"].as_str().unwrap(),
                run["concurrency"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, u64)> = [
        "issue",
        "renew",
        "ocsp",
        "crl",
        "jwt-mint",
        "token-endpoint",
        "token-exchange",
    ]
    .into_iter()
    .map(|op| (op, 2))
    .collect();
    assert_eq!(done, expected);
    for run in runs {
        assert_eq!(run["errors"], 0, "{run}");
        assert!(run["ok"].as_u64().unwrap() > 0, "{run}");
        assert!(
            run["server_cpu_us_per_request"].as_f64().unwrap() > 0.0
                && ["progress", "whole run"].contains(&run["cpu_window"].as_str().unwrap()),
            "{run}"
        );
    }
}

/// A pinned run takes the first two CPUs the script may use, not CPUs 0
/// and 1 (a container's cpuset may hold neither): limited to one CPU, the
/// script refuses, naming it and PIN=0, before it starts anything.
#[test]
fn the_scripts_pin_to_the_cpus_they_may_use() {
    if a_pass_over_another_store() {
        return;
    }
    let allowed = std::process::Command::new("python3")
        .args(["-c", "import os; print(max(os.sched_getaffinity(0)))"])
        .output()
        .expect("run python3");
    let cpu = stdout(&allowed).trim().to_owned();
    assert!(cpu.parse::<u32>().is_ok(), "{cpu}");
    let work = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new("taskset")
        .args(["-c", &cpu, "scripts/perf-matrix.sh"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CERTD_BIN", env!("CARGO_BIN_EXE_certd"))
        .env("PIN", "1")
        .env("WORK_DIR", work.path())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/perf-matrix.sh");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output).trim(),
        format!(
            "perf-matrix: PIN=1 needs two CPUs (the server on one, the loader on another) but this process may use only CPU {cpu}; run with PIN=0"
        )
    );
    assert!(
        std::fs::read_dir(work.path()).unwrap().next().is_none(),
        "nothing started"
    );
}

/// `scripts/compare-cfssl.sh`, as docs/PERFORMANCE.md runs it, briefly:
/// certd and CFSSL (with and without its SQLite certdb) each loaded by
/// `certd bench` without an error, every CFSSL certificate stored in the
/// certdb, and the table and JSON it documents printed.
#[test]
fn the_cfssl_comparison_script_runs_as_documented() {
    if a_pass_over_another_store() {
        return;
    }
    let problem = match std::process::Command::new("cfssl").arg("version").output() {
        Ok(output) if output.status.success() => None,
        Ok(_) => Some("cfssl does not run".to_owned()),
        Err(error) => Some(format!("cfssl is not installed ({error})")),
    };
    if let Some(problem) = problem {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("CERTD_REQUIRE_CFSSL").is_none(),
            "CFSSL is required here (CI or CERTD_REQUIRE_CFSSL is set) but {problem}; install it as .ci/run does (apt-get install golang-cfssl)"
        );
        eprintln!("skipping: {problem}");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let (said, report) = run_script(
        "scripts/compare-cfssl.sh",
        work.path(),
        // Five seconds, as for the matrix: the CPU is read between
        // progress lines.
        &[("ROUNDS", "1"), ("DURATION", "5s"), ("CONCURRENCY", "4")],
    );
    assert!(
        said.contains(
            "| signer | requests/s | p50 ms | p99 ms | signer CPU µs/request | certd ÷ this |"
        ),
        "{said}"
    );
    let runs = report["runs"].as_array().expect("runs");
    let signers: Vec<&str> = runs
        .iter()
        .map(|run| run["signer"].as_str().unwrap())
        .collect();
    assert_eq!(signers, ["certd", "cfssl", "cfssl-sqlite"]);
    for run in runs {
        assert_eq!(run["errors"], 0, "{run}");
        assert!(run["ok"].as_u64().unwrap() > 0, "{run}");
        assert!(
            run["signer_cpu_us_per_request"].as_f64().unwrap() > 0.0,
            "{run}"
        );
    }
    let stored = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from certificates').fetchone()[0])")
        .arg(work.path().join("cfssl/certs.db"))
        .output()
        .expect("python3");
    let stored: u64 = stdout(&stored).trim().parse().expect("a count");
    assert_eq!(
        stored,
        runs[2]["ok"].as_u64().unwrap(),
        "every certificate CFSSL signed with its certdb is stored there"
    );
}
