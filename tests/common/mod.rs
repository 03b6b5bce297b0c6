//! The test harness: starts the real `certd` binary on loopback with
//! ephemeral ports in a temporary data directory, and acts as workloads and
//! operators do.

#![allow(dead_code)]

pub mod acme;
pub mod acme_clients;
pub mod agent;
pub mod bind;
pub mod docs;
pub mod haproxy;
pub mod in_process;
pub mod k8s_issuer;
pub mod outside;
pub mod softhsm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use certd::api::client::{IssuedCertificate, TlsClientSettings, WorkloadClient};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

pub const CERTD: &str = env!("CARGO_BIN_EXE_certd");

/// A running daemon, the real binary; killed when dropped. What a client
/// does with it is `Served`'s.
pub struct Daemon {
    child: Option<Child>,
    served: Served,
    pub log: PathBuf,
    /// `https://ADDR` of the bundle endpoint's own listener, when
    /// `[federation] bundle_endpoint_addr` is configured.
    pub bundle_endpoint: Option<String>,
}

/// A certd that serves, however it runs (a process, `Daemon`, or in this
/// process, `in_process::InProcess`): where it is, and what workloads and
/// operators do with it.
pub struct Served {
    pub tmp: TempDir,
    pub data_dir: PathBuf,
    pub grpc: String,
    pub http: String,
}

impl std::ops::Deref for Daemon {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Served {
        &mut self.served
    }
}

impl Daemon {
    /// Starts `certd serve` in a fresh temporary data directory.
    pub fn start() -> Daemon {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("ca");
        Self::start_in(tmp, data_dir, &[])
    }

    /// Starts `certd serve` on an existing data directory, with extra args.
    pub fn start_in(tmp: TempDir, data_dir: PathBuf, extra: &[&str]) -> Daemon {
        Self::start_with_env(tmp, data_dir, extra, &[])
    }

    /// As `start_in`, with extra environment variables for the daemon.
    pub fn start_with_env(
        tmp: TempDir,
        data_dir: PathBuf,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Daemon {
        let log = tmp.path().join(format!("certd-{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = serve_command(&data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn certd");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    panic!(
                        "certd did not become ready: {line:?}\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                })
        };
        let grpc = field("grpc");
        let http = field("http");
        let bundle_endpoint = line
            .split_whitespace()
            .find_map(|part| part.strip_prefix("bundle="))
            .map(str::to_owned);
        Daemon {
            bundle_endpoint,
            child: Some(child),
            served: Served {
                tmp,
                data_dir,
                grpc,
                http,
            },
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log holds `text` within a few seconds: for a line about
    /// an event the test has already seen happen (a metric, an answer),
    /// which the log writer, a background thread, may not have written yet.
    pub fn logged_soon(&self, text: &str) -> bool {
        logged_soon(&self.log, text)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Served {
    pub fn bundle_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("bundle.pem")).expect("bundle.pem")
    }

    /// Runs the certd CLI against this daemon's data directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&self.data_dir, args)
    }

    /// The value of one series on `/metrics` (`name` with its labels, as
    /// the exposition writes it), if it is there.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let answer = http("GET", &format!("{}/metrics", self.http), &[], b"");
        let text = String::from_utf8(answer.body).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    /// Waits until the daemon has changed its signing intermediates `times`
    /// times since it started (`certd_ca_signers_generation`); `context`
    /// (its log, say) is shown if it never does.
    pub fn wait_for_signer_changes(&self, times: usize, context: impl Fn() -> String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.metric("certd_ca_signers_generation").unwrap_or(0.0) < times as f64 {
            assert!(
                std::time::Instant::now() < deadline,
                "the signers did not change {times} times:\n{}",
                context()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs the CLI with its clock `ahead` of the real one, to step past a
    /// window (a root's propagation) instead of sleeping through it.
    pub fn cli_ahead(&self, ahead: std::time::Duration, args: &[&str]) -> Output {
        // Only a debug build of certd reads CERTD_TEST_CLOCK_AHEAD.
        #[cfg(not(debug_assertions))]
        panic!("cli_ahead needs a debug build of certd (cargo test without --release)");
        #[cfg(debug_assertions)]
        cli_command(&self.data_dir, args)
            .env("CERTD_TEST_CLOCK_AHEAD", format!("{}ms", ahead.as_millis()))
            .output()
            .expect("run certd")
    }

    /// Creates a registration entry through the CLI; returns its id.
    pub fn entry(&self, service: &str, selectors: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["entry", "create", "--service", service];
        for selector in selectors {
            args.extend(["--selector", selector]);
        }
        args.extend(extra);
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "entry create failed: {}",
            stderr(&output)
        );
        stdout(&output).trim().to_owned()
    }

    /// Creates a join token through the CLI, as an operator would: for the
    /// service's `token:<service>` entry, which is created if there is none.
    /// `certd issue --unregistered --service SERVICE --out OUT` and
    /// `extra`, as a CI job runs it.
    pub fn ci_issue(&self, service: &str, out: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["issue", "--unregistered", "--service", service, "--out"];
        args.push(out.to_str().expect("utf-8 path"));
        args.extend(extra);
        self.cli(&args)
    }

    /// `count` join tokens from one `certd token create --count`, for the
    /// service's one token entry (which must exist).
    pub fn tokens(&self, service: &str, count: usize) -> Vec<String> {
        let output = self.cli(&[
            "token",
            "create",
            "--service",
            service,
            "--count",
            &count.to_string(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).lines().map(str::to_owned).collect()
    }

    pub fn token(&self, service: &str) -> String {
        let create = || self.cli(&["token", "create", "--service", service]);
        let mut output = create();
        if output.status.code() == Some(5) {
            // No entry for the service yet: register it first, as an
            // operator would.
            self.entry(service, &[&format!("token:{service}")], &[]);
            output = create();
        }
        assert!(
            output.status.success(),
            "token create failed: {}",
            stderr(&output)
        );
        String::from_utf8(output.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }

    /// `certd request` with `token` into `out`, as a workload does.
    pub fn request(&self, token: &str, out: &Path) -> Output {
        let bundle = self.data_dir.join("bundle.pem");
        self.cli(&[
            "request",
            "--server",
            &self.grpc,
            "--ca-bundle",
            bundle.to_str().unwrap(),
            "--token",
            token,
            "--out",
            out.to_str().unwrap(),
        ])
    }

    /// `certd renew --dir DIR`, as a workload does.
    pub fn renew_dir(&self, dir: &Path) -> Output {
        self.cli(&[
            "renew",
            "--server",
            &self.grpc,
            "--dir",
            dir.to_str().unwrap(),
        ])
    }

    /// A client of the workload API, optionally presenting a certificate.
    pub async fn client(&self, identity: Option<&Identity>) -> WorkloadClient {
        self.try_client(identity).await.expect("connect to certd")
    }

    pub async fn try_client(
        &self,
        identity: Option<&Identity>,
    ) -> Result<WorkloadClient, certd::api::client::ClientError> {
        let tls = TlsClientSettings {
            ca_bundle_pem: self.bundle_pem(),
            identity: identity.map(|id| (id.chain_pem.clone(), id.key_pem.clone().into())),
        };
        WorkloadClient::connect(&self.grpc, &tls).await
    }

    /// Bootstraps a workload for `service` with a fresh token.
    pub async fn bootstrap(&self, service: &str) -> Identity {
        let token = self.token(service);
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = csr_for(&key, None, vec![]);
        let issued = self
            .client(None)
            .await
            .issue(csr, &token)
            .await
            .expect("issue");
        Identity::new(key, issued)
    }

    /// Renews as `identity` (or presenting no certificate) with a CSR for a
    /// fresh key, as `certd renew` does.
    pub async fn renew(
        &self,
        identity: Option<&Identity>,
    ) -> Result<IssuedCertificate, certd::api::client::ClientError> {
        let csr = csr_for(&rcgen::KeyPair::generate().expect("key"), None, vec![]);
        self.client(identity).await.renew(csr).await
    }

    /// Number of certificates recorded (through the admin API).
    pub fn certificate_count(&self) -> usize {
        let output = self.cli(&["list", "--json"]);
        assert!(output.status.success(), "list failed: {}", stderr(&output));
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        list.as_array().expect("array").len()
    }

    /// Serials of every certificate in the store (through the admin API).
    pub fn recorded_serials(&self) -> std::collections::HashSet<String> {
        self.listed_serials().into_iter().collect()
    }

    /// Every serial the store lists, in its order, duplicates kept (so a
    /// test can check there are none).
    pub fn listed_serials(&self) -> Vec<String> {
        let output = self.cli(&["list", "--json", "--limit", "100000"]);
        assert!(output.status.success(), "list failed: {}", stderr(&output));
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        list.as_array()
            .expect("array")
            .iter()
            .map(|c| c["serial"].as_str().expect("serial").to_owned())
            .collect()
    }
}

impl Daemon {
    /// Sends SIGHUP: certd looks for a prepared intermediate now instead
    /// of at its next poll.
    pub fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Kills the daemon at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM, if it runs, and starts it again on the
    /// same data directory and gRPC port, as an operator restarting certd
    /// would.
    pub fn restart_on_same_port(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        let tmp = std::mem::replace(&mut self.tmp, tempfile::tempdir().expect("temp dir"));
        let address = self.grpc.trim_start_matches("https://").to_owned();
        let restarted = Daemon::start_in(tmp, self.data_dir.clone(), &["--grpc-addr", &address]);
        *self = restarted;
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        child.wait().expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the log file at `log` holds `text` within 5 s (see
/// `Daemon::logged_soon`).
pub fn logged_soon(log: &Path, text: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

pub fn run_cli(data_dir: &Path, args: &[&str]) -> Output {
    cli_command(data_dir, args).output().expect("run certd")
}

/// The CLI on `data_dir`, as `run_cli` runs it.
pub fn cli_command(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(CERTD);
    command
        .args(args)
        .env("CERTD_DATA_DIR", data_dir)
        .env_remove("CERTD_JOIN_TOKEN")
        .env_remove("CERTD_DATABASE_URL")
        .stdin(Stdio::null());
    if let Some(url) = database_url(data_dir) {
        command.env("CERTD_DATABASE_URL", url);
    }
    command
}

/// The PostgreSQL database of `data_dir`'s certd: the one given to
/// `use_database`, else none where the data directory names its own
/// (`database.toml`), else, when the tests run on PostgreSQL
/// (`CERTD_TEST_STORE=postgres`, as `.ci/run` does for a second pass over
/// the daemon tests), a fresh database of its own on the test process's
/// scratch server, made on first use and kept across restarts of its daemon
/// until the test process ends; `None` on sled, the default.
pub fn database_url(data_dir: &Path) -> Option<String> {
    use certd::store::postgres::scratch::ScratchServer;
    let mut databases = databases();
    if let Some(url) = databases.urls.get(data_dir) {
        return Some(url.clone());
    }
    // A data directory that names its own database (`certd replica
    // import`) runs on that one.
    if certd::DataDir::new(data_dir).database_settings().exists() {
        return None;
    }
    if std::env::var("CERTD_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    let url = ScratchServer::fresh_database_for_tests()
        .unwrap_or_else(|| panic!("CERTD_TEST_STORE=postgres, but PostgreSQL cannot start"))
        .url;
    databases.urls.insert(data_dir.to_owned(), url.clone());
    Some(url)
}

/// Runs `data_dir`'s certd (and CLI) on the PostgreSQL database at `url`.
pub fn use_database(data_dir: &Path, url: &str) {
    databases().urls.insert(data_dir.to_owned(), url.to_owned());
}

#[derive(Default)]
struct Databases {
    urls: std::collections::HashMap<PathBuf, String>,
}

fn databases() -> std::sync::MutexGuard<'static, Databases> {
    static DATABASES: std::sync::OnceLock<std::sync::Mutex<Databases>> = std::sync::OnceLock::new();
    DATABASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `certd serve` on `data_dir` with both listeners on ephemeral loopback
/// ports, stdout piped (its ready line), stdin closed. The directory is
/// made (0700) if it does not exist: certd makes a CA only in a directory
/// that exists, or the quick start's default.
pub fn serve_command(data_dir: &Path) -> Command {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir);
    let mut command = Command::new(CERTD);
    command
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("CERTD_LOG", "info")
        .env_remove("CERTD_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(url) = database_url(data_dir) {
        command.args(["--database-url", &url]);
    }
    command
}

/// The kind and message of a refusal; panics on anything else.
pub fn refusal<T: std::fmt::Debug>(
    result: Result<T, certd::api::client::ClientError>,
) -> (certd::ErrorKind, String) {
    match result {
        Err(certd::api::client::ClientError::Refused { kind, message }) => (kind, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A workload's key and the certificate certd gave it.
pub struct Identity {
    pub key: rcgen::KeyPair,
    pub key_pem: String,
    pub chain_pem: String,
    pub issued: IssuedCertificate,
}

impl Identity {
    pub fn new(key: rcgen::KeyPair, issued: IssuedCertificate) -> Self {
        Identity {
            key_pem: key.serialize_pem(),
            chain_pem: issued.chain_pem.clone(),
            key,
            issued,
        }
    }

    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        pem_certs(&self.chain_pem)
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

/// `openssl ocsp` asking `url` about `certificate` (a file), issued by
/// `issuer` (a file), checking the answer against `ca_file`: whether it
/// ran cleanly, and what it printed.
pub fn openssl_ocsp(issuer: &str, certificate: &str, url: &str, ca_file: &str) -> (bool, String) {
    openssl(&[
        "ocsp",
        "-issuer",
        issuer,
        "-cert",
        certificate,
        "-url",
        url,
        "-CAfile",
        ca_file,
    ])
}

/// `openssl verify -crl_check_all` of `leaf` (a file) against the roots in
/// `ca_file`, with the intermediates in `untrusted` and the CRLs in
/// `crl_file`: a whole-chain check, as nginx or HAProxy make it.
pub fn openssl_verify_with_crls(
    ca_file: &str,
    untrusted: &str,
    crl_file: &str,
    leaf: &str,
) -> (bool, String) {
    openssl(&[
        "verify",
        "-crl_check_all",
        "-CAfile",
        ca_file,
        "-untrusted",
        untrusted,
        "-CRLfile",
        crl_file,
        leaf,
    ])
}

/// Writes `contents` to `path`; returns the path as a string, for the
/// command lines of tools like `openssl`.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> String {
    std::fs::write(path, contents).expect("write a test file");
    path.to_str().expect("UTF-8 path").to_owned()
}

pub fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    let mut reader = pem.as_bytes();
    rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// A CSR for `key` with an optional CN and the given SANs.
pub fn csr_for(
    key: &rcgen::KeyPair,
    common_name: Option<&str>,
    sans: Vec<rcgen::SanType>,
) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    params.subject_alt_names = sans;
    params.serialize_request(key).expect("CSR").der().to_vec()
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An HTTP/1.1 response: status, lower-case headers, body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection), so tests see
/// exactly what certd sends.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (address, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Runs `openssl` with `args`: whether it succeeded, and stdout then stderr.
pub fn openssl(args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    (
        output.status.success(),
        format!("{}{}", stdout(&output), stderr(&output)),
    )
}

/// The URI of the CRL distribution point of the certificate at `leaf`
/// (a PEM file), as OpenSSL reads it.
pub fn crl_distribution_point(leaf: &str) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "crlDistributionPoints",
        "-in",
        leaf,
    ]);
    assert!(ok, "{text}");
    text.lines()
        .find_map(|line| line.trim().strip_prefix("URI:"))
        .unwrap_or_else(|| panic!("no CRL distribution point URI: {text}"))
        .to_owned()
}

/// Whether nginx runs here; missing: `false` after a skip line, or a panic
/// where the outside clients are required (CI).
pub fn nginx_available() -> bool {
    if Command::new("nginx").arg("-v").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CERTD_REQUIRE_ACME_CLIENTS").is_none()
            && std::env::var_os("CI").is_none(),
        "nginx is required here: apt-get install nginx"
    );
    eprintln!("skipped: nginx is not installed (apt-get install nginx)");
    false
}

/// Whether HAProxy runs here; missing: `false` after a skip line, or a
/// panic where it is required (CI).
pub fn haproxy_available() -> bool {
    if Command::new("haproxy").arg("-v").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CERTD_REQUIRE_HAPROXY").is_none() && std::env::var_os("CI").is_none(),
        "HAProxy is required here (CI or CERTD_REQUIRE_HAPROXY is set): apt-get install haproxy, as .ci/run does"
    );
    eprintln!("skipped: HAProxy is not installed (apt-get install haproxy)");
    false
}

/// A rustls root store holding the certificates of `bundle_pem`.
pub fn roots(bundle_pem: &str) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(bundle_pem) {
        roots.add(cert).expect("a root certificate");
    }
    Arc::new(roots)
}

/// The leaf certificate the TLS server at `https://ADDR` presents, checked
/// against `ca` for the name 127.0.0.1.
pub fn presented_leaf(endpoint: &str, ca: &Path) -> Vec<u8> {
    let address = endpoint.trim_start_matches("https://").to_owned();
    let roots = roots(&std::fs::read_to_string(ca).unwrap());
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).unwrap();
    }
    connection.peer_certificates().unwrap()[0].to_vec()
}

/// The serial (lowercase hex) of the certificate in `dir/cert.pem`.
pub fn serial_in(dir: &Path) -> String {
    let cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
    hex::encode(pem.parse_x509().unwrap().raw_serial())
}

/// This process's real uid, from /proc.
pub fn current_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("uid in /proc/self/status")
}

/// A port free now and outside the kernel's ephemeral range, for an outside
/// server (`openssl s_server`, an ACME client's challenge responder) to bind
/// a moment later: a port taken from that range (by binding port 0) can
/// meanwhile become the local port of some outgoing connection, and the
/// bind then fails. Never the same port twice in one test process, so
/// tests running side by side do not pick the same one.
pub fn free_port_below_ephemeral_range() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    // Spread by process id, so concurrent test processes start in
    // different places.
    let low = 20_000.min(ephemeral_start.saturating_sub(1000));
    let span = ephemeral_start.saturating_sub(low).max(1);
    let start = low + (std::process::id() % u32::from(span)) as u16;
    let port = (0..span)
        .map(|offset| low + (start - low + offset) % span)
        .find(|port| {
            !handed_out.contains(port) && std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok()
        })
        .expect("a free port below the ephemeral range");
    handed_out.push(port);
    port
}
