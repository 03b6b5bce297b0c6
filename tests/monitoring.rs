//! The monitoring shipped in `deploy/`: the Prometheus alert rules pass
//! promtool's own unit tests, and every metric they and the Grafana
//! dashboard name is one a running certd exports, so no rule can watch a
//! metric that does not exist.
//!
//! promtool comes from the Debian package `prometheus` (`.ci/run` installs
//! it). Without it the promtool steps are skipped with one loud line, unless
//! `CERTD_REQUIRE_PROMTOOL` is set (as in CI), where the test fails.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::in_process::InProcess;
use common::{Daemon, Served, http, serial_in, stderr, stdout};

const RULES: &str = "deploy/prometheus/certd-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/certd-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/certd-dashboard.json";
/// The operator's guide to them, whose commands the tests run.
const GUIDE: &str = "docs/operations/monitoring-alerts.md";
/// Where the guide's commands find certd (its `deploy/certd.toml` address).
const GUIDE_METRICS_URL: &str = "http://127.0.0.1:8080";

/// The alert rules are valid, and each alert fires on the series of its
/// unit test and stays quiet on the healthy series beside them: the
/// promtool commands of the operator's guide, run as it shows them.
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let commands: Vec<String> = guide_commands()
        .into_iter()
        .filter(|command| command.starts_with("promtool "))
        .collect();
    for expected in [
        format!("promtool check rules {RULES}"),
        format!("promtool test rules {RULE_TESTS}"),
    ] {
        assert!(commands.contains(&expected), "{GUIDE} shows {expected:?}");
    }
    if !promtool_available() {
        return;
    }
    for command in commands {
        let output = shell(&command);
        assert!(
            output.status.success(),
            "{command}:\n{}{}",
            stdout(&output),
            stderr(&output)
        );
    }
}

/// Every alert carries a severity and says what happened and what to do.
#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook() {
    let alerts = alert_rules();
    assert!(alerts.len() >= 10, "{} alerts", alerts.len());
    for rule in alerts {
        let name = rule["alert"].as_str().expect("alert name");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| !text.trim().is_empty()),
                "{name} has no {annotation}"
            );
        }
    }
}

/// A real certd, after an issuance and a revocation, exports every metric
/// the alert rules and the dashboard name, in a form promtool accepts; a
/// service's expiry is its newest certificate's notAfter, a service whose
/// only certificate was revoked has none, and the figures survive a
/// restart (loaded from the store, not kept only in memory).
#[test]
fn a_running_certd_exports_every_metric_the_rules_and_dashboard_name() {
    let mut daemon = Daemon::start();
    let payments = daemon.tmp.path().join("payments");
    let issued = daemon.request(&daemon.token("payments"), &payments);
    assert!(issued.status.success(), "{}", stderr(&issued));
    let billing = daemon.tmp.path().join("billing");
    let issued = daemon.request(&daemon.token("billing"), &billing);
    assert!(issued.status.success(), "{}", stderr(&issued));
    let revoked = daemon.cli(&["revoke", &serial_in(&billing)]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));

    let text = scrape(&daemon);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics unless asked");
    // promtool reads the older Prometheus text format, served when asked for.
    let answer = http(
        "GET",
        &format!("{}/metrics", daemon.http),
        &[("Accept", "text/plain; version=0.0.4")],
        b"",
    );
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let prometheus_text = String::from_utf8(answer.body).expect("UTF-8 metrics");
    assert_eq!(
        exported_names(&prometheus_text),
        exported_names(&text),
        "both formats name the same metrics"
    );
    if promtool_available() {
        // The guide's check of a running certd, on this one's port.
        for command in guide_commands()
            .iter()
            .filter(|command| command.contains(GUIDE_METRICS_URL))
        {
            let command = command.replace(GUIDE_METRICS_URL, &daemon.http);
            let checked = shell(&command);
            assert!(
                checked.status.success(),
                "{command}:\n{}{}\n{prometheus_text}",
                stdout(&checked),
                stderr(&checked)
            );
        }
    }
    let exported = exported_names(&text);
    let mut used = BTreeSet::new();
    for rule in alert_rules() {
        used.extend(metric_names(rule["expr"].as_str().expect("expr")));
    }
    let rule_names = used.len();
    for expr in dashboard_queries() {
        used.extend(metric_names(&expr));
    }
    assert!(
        rule_names >= 8 && used.len() > rule_names,
        "rules name {rule_names} metrics, with the dashboard {}: {used:?}",
        used.len()
    );
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named in {RULES} or {DASHBOARD} but not exported: {missing:?}\n{text}"
    );

    let payments_expiry = not_after_in(&payments);
    assert_eq!(service_expiry(&text, "payments"), Some(payments_expiry));
    assert_eq!(service_expiry(&text, "billing"), None, "{text}");
    // certd's own serving certificate is watched as service certd.
    assert!(service_expiry(&text, "certd").is_some(), "{text}");
    assert_eq!(
        value(
            &text,
            "certd_certificates_revoked_total{reason=\"unspecified\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "certd_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "{text}"
    );
    let started = value(&text, "process_start_time_seconds").expect("process start time");
    assert!((started - unix_now()).abs() < 300.0, "started at {started}");
    assert!(value(&text, "process_open_fds").is_some_and(|open| open > 3.0));
    assert!(value(&text, "certd_crl_expiry_seconds").is_some_and(|left| left > 0.0));

    // A restart loads each service's newest certificate from the store.
    daemon.restart_on_same_port();
    let text = wait_for(&daemon, |text| service_expiry(text, "payments").is_some());
    assert_eq!(service_expiry(&text, "payments"), Some(payments_expiry));
    assert_eq!(service_expiry(&text, "billing"), None, "{text}");
}

/// A service's expiry is that of its newest certificate still valid:
/// revoking the newer ones falls back to an older one (looked up in the
/// store once the few kept in memory are all revoked). One-off `certd
/// issue` certificates, which nobody renews, are not watched.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_newest_certificates_falls_back_to_the_newest_still_valid() {
    // In this process, on a clock the test moves. Metrics are
    // process-wide; this is the only certd run in this test binary, so
    // what it exports is this daemon's alone.
    let daemon = InProcess::start().await;
    daemon.entry("orders", &["token:orders"], &[]);
    let issue = |name: &str, ttl: &str| {
        let dir = daemon.tmp.path().join(name);
        let output = daemon.cli(&[
            "issue",
            "--service",
            "orders",
            "--renewable",
            "--ttl",
            ttl,
            "--out",
            dir.to_str().expect("UTF-8 path"),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        dir
    };
    let oldest = issue("oldest", "10h");
    // Issued a second later, the others are newer (issuance times are in
    // seconds): more of them than certd keeps in memory per service.
    daemon.advance(std::time::Duration::from_secs(1));
    let newer: Vec<PathBuf> = (1..=4)
        .map(|hours| issue(&format!("newer-{hours}"), &format!("{hours}h")))
        .collect();
    let text = scrape(&daemon);
    let shown = service_expiry(&text, "orders").expect("orders watched");
    assert!(
        newer.iter().any(|dir| not_after_in(dir) == shown),
        "the newest is one of the four issued last"
    );
    for dir in &newer {
        let revoked = daemon.cli(&["revoke", &serial_in(dir)]);
        assert!(revoked.status.success(), "{}", stderr(&revoked));
    }
    let expected = not_after_in(&oldest);
    let text = wait_for(&daemon, |text| {
        service_expiry(text, "orders") == Some(expected)
    });
    assert_eq!(
        value(
            &text,
            "certd_certificates_revoked_total{reason=\"unspecified\"}"
        ),
        Some(4.0)
    );

    let one_off = daemon.tmp.path().join("one-off");
    let issued = daemon.ci_issue("ci-job", &one_off, &[]);
    assert!(issued.status.success(), "{}", stderr(&issued));
    assert_eq!(service_expiry(&scrape(&daemon), "ci-job"), None);
}

/// Whether promtool is installed; if not, one `SKIPPED:` line, unless
/// `CERTD_REQUIRE_PROMTOOL` is set, where the test fails.
fn promtool_available() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason = "promtool is not installed (apt-get install prometheus; .ci/run does)";
        assert!(
            std::env::var_os("CERTD_REQUIRE_PROMTOOL").is_none(),
            "CERTD_REQUIRE_PROMTOOL is set, but {reason}"
        );
        eprintln!("SKIPPED: the promtool checks: {reason}");
    }
    found
}

/// The shell commands of the operator's guide, one per line; each is run by
/// a test here.
fn guide_commands() -> Vec<String> {
    let guide = std::fs::read_to_string(repository().join(GUIDE)).expect(GUIDE);
    let mut commands = Vec::new();
    let mut in_shell = false;
    for line in guide.lines() {
        match line.trim() {
            "```sh" => in_shell = true,
            "```" => in_shell = false,
            command if in_shell && !command.is_empty() => commands.push(command.to_owned()),
            _ => {}
        }
    }
    for command in &commands {
        assert!(
            command.starts_with("promtool ") || command.contains(GUIDE_METRICS_URL),
            "{GUIDE}: no test here runs {command:?}"
        );
    }
    commands
}

/// Runs `command` with bash in the repository's root; a pipeline fails if
/// any of its commands does.
fn shell(command: &str) -> Output {
    Command::new("bash")
        .args(["-c", &format!("set -o pipefail; {command}")])
        .current_dir(repository())
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every rule of the alert rules file.
fn alert_rules() -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(repository().join(RULES)).expect(RULES);
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("rules YAML");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules").clone())
        .collect()
}

/// Every query of the dashboard: its panels' targets and its variables.
/// Also checks the shape Grafana needs to import it.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repository().join(DASHBOARD)).expect(DASHBOARD);
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    for field in ["title", "uid"] {
        assert!(dashboard[field].is_string(), "dashboard {field}");
    }
    assert!(dashboard["schemaVersion"].is_u64());
    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        for field in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][field].is_u64(), "panel {id} gridPos");
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for target in targets {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

/// The metric names a PromQL expression uses: certd's own and the process
/// metrics (`up` is Prometheus's, not certd's).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("certd_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The sample names a scrape declares (in either text format), with the
/// suffixes of its types
/// (`_total` of a counter, `_bucket`, `_sum`, `_count` of a histogram), so
/// a family with no sample yet still counts as exported.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
            // OpenMetrics names a counter's family without `_total`, the
            // Prometheus text format with it.
            let name = match kind {
                "counter" => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            names.insert(name.to_owned());
        }
    }
    names
}

fn scrape(daemon: &Served) -> String {
    let answer = http("GET", &format!("{}/metrics", daemon.http), &[], b"");
    assert_eq!(answer.status, 200);
    String::from_utf8(answer.body).expect("UTF-8 metrics")
}

/// Scrapes until `ready` holds of the text (the start-up load runs beside
/// serving).
fn wait_for(daemon: &Served, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = scrape(daemon);
        if ready(&text) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "never ready:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The value of one series (name and labels as the exposition writes them).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

fn service_expiry(text: &str, service: &str) -> Option<i64> {
    value(
        text,
        &format!("certd_service_certificate_expiry_timestamp_seconds{{service=\"{service}\"}}"),
    )
    .map(|seconds| seconds as i64)
}

/// notAfter of `dir/cert.pem`, in Unix seconds.
fn not_after_in(dir: &Path) -> i64 {
    let pem = std::fs::read_to_string(dir.join("cert.pem")).expect("cert.pem");
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    let certificate = pem.parse_x509().expect("certificate");
    certificate.validity().not_after.timestamp()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}
