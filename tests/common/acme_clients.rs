//! ACME clients nobody here wrote (lego, certbot, Caddy) against the real
//! daemon: a certd whose `[acme.testing]` settings point http-01 and
//! tls-alpn-01 at the ports the client listens on and every name at
//! 127.0.0.1 (as Let's Encrypt's Pebble does for its clients' tests), an
//! entry for `web.acme.test`, EAB keys for it, and the checks a relying
//! party makes of what the client got. A missing client is a skip line,
//! unless `CI` or `CERTD_REQUIRE_ACME_CLIENTS` is set (as `.ci/run` does):
//! then the test fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Daemon, openssl, stderr, stdout};

/// The name every test orders: `.test` is reserved (RFC 2606), so it can
/// never be anyone's real name, and `[acme.testing] resolve_all_to` sends
/// it to 127.0.0.1.
pub const NAME: &str = "web.acme.test";

/// The contact lego insists on (it refuses to run without `--email`).
pub const CONTACT: &str = "ops@example.org";

/// A certd serving ACME, with the test-only validation settings pointed at
/// this machine.
pub struct AcmeCa {
    pub daemon: Daemon,
    /// Where certd connects for http-01 (`[acme.testing] http_port`): the
    /// client's challenge responder listens here.
    pub http_port: u16,
    /// Where certd connects for tls-alpn-01 (`[acme.testing] tls_alpn_port`).
    pub tls_alpn_port: u16,
}

/// What the CA's config says beyond the defaults.
#[derive(Default)]
pub struct AcmeSettings {
    /// `[acme.testing] dns_server`: the DNS server certd asks (a test's BIND).
    pub dns_server: Option<SocketAddr>,
}

impl AcmeCa {
    /// Starts certd with `[acme]` on and its `[acme.testing]` settings
    /// pointing at two fresh loopback ports.
    pub fn start(settings: AcmeSettings) -> AcmeCa {
        let http_port = super::free_port_below_ephemeral_range();
        let tls_alpn_port = super::free_port_below_ephemeral_range();
        let dns_server = settings
            .dns_server
            .map(|address| format!("dns_server = \"{address}\"\n"))
            .unwrap_or_default();
        let config = format!(
            "[acme]\nenabled = true\n\n[acme.testing]\nhttp_port = {http_port}\n\
             tls_alpn_port = {tls_alpn_port}\nresolve_all_to = \"127.0.0.1\"\n{dns_server}"
        );
        let tmp = tempfile::tempdir().expect("temp dir");
        let config_path = tmp.path().join("certd.toml");
        std::fs::write(&config_path, config).expect("write certd.toml");
        let data_dir = tmp.path().join("ca");
        let config_path = config_path.display().to_string();
        let daemon = Daemon::start_in(tmp, data_dir, &["--config", &config_path]);
        AcmeCa {
            daemon,
            http_port,
            tls_alpn_port,
        }
    }

    /// `https://127.0.0.1:PORT/acme/directory`, on certd's TLS port.
    pub fn directory(&self) -> String {
        format!("{}/acme/directory", self.daemon.grpc)
    }

    /// The roots a client must trust to reach certd and to verify what it
    /// issues.
    pub fn bundle(&self) -> PathBuf {
        self.daemon.data_dir.join("bundle.pem")
    }

    /// A scratch directory of this test.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.daemon.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        dir
    }

    /// The entry ACME accounts of the `web` service are bound to: the
    /// names its certificates may carry are `web.acme.test`.
    pub fn web_entry(&self) -> String {
        self.daemon
            .entry("web", &["token:web-acme"], &["--dns", NAME])
    }

    /// A fresh EAB key for `entry` (`certd acme eab create --json`).
    pub fn eab(&self, entry: &str) -> Eab {
        let output = self
            .daemon
            .cli(&["acme", "eab", "create", "--entry", entry, "--json"]);
        assert!(
            output.status.success(),
            "acme eab create failed: {}",
            stderr(&output)
        );
        let created: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("acme eab create --json: {error}: {}", stdout(&output)));
        assert_eq!(created["entry"], entry, "{created}");
        let field = |name: &str| {
            created[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {created}"))
                .to_owned()
        };
        Eab {
            key_id: field("key_id"),
            hmac_key: field("hmac_key"),
        }
    }

    /// What `certd list --json` says of `serial`.
    pub fn listed(&self, serial: &str) -> serde_json::Value {
        let output = self.daemon.cli(&["list", "--json", "--limit", "100000"]);
        assert!(output.status.success(), "list failed: {}", stderr(&output));
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        list.as_array()
            .expect("an array")
            .iter()
            .find(|certificate| certificate["serial"] == serial)
            .cloned()
            .unwrap_or_else(|| panic!("{serial} is not in certd list: {list}"))
    }

    /// Checks what a client got, as a relying party would: `chain` (a PEM
    /// file, leaf first, then the intermediate) verifies against certd's
    /// bundle, names `web.acme.test`, and is recorded against `entry` as
    /// the `web` service; returns its serial (lowercase hex, as certd lists
    /// it).
    pub fn check_issued(&self, chain: &Path, entry: &str) -> String {
        let chain = chain.to_str().expect("UTF-8 path");
        let bundle = self.bundle();
        // openssl verifies the first certificate of the file (the leaf),
        // taking intermediates from the chain the client was served.
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            bundle.to_str().expect("UTF-8 path"),
            "-untrusted",
            chain,
            chain,
        ]);
        assert!(
            ok && text.contains(": OK"),
            "the chain does not verify: {text}"
        );
        let (ok, names) = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", chain]);
        assert!(ok && names.contains(&format!("DNS:{NAME}")), "{names}");
        assert!(
            names.contains("URI:spiffe://certd.internal/svc/web"),
            "issued as the entry's identity: {names}"
        );
        let serial = serial_of(chain);
        let listed = self.listed(&serial);
        assert_eq!(listed["service"], "web", "{listed}");
        assert_eq!(listed["entry_id"], entry, "{listed}");
        assert_eq!(listed["status"], "good", "{listed}");
        assert!(
            listed["dns_names"]
                .as_array()
                .is_some_and(|names| names.iter().any(|name| name == NAME)),
            "{listed}"
        );
        serial
    }
}

/// The subject CN of the first certificate in `chain`, if any, is one of
/// its DNS names: ACME clients read a certificate's names from its CN and
/// SANs (lego renews for them), and CAs put the first ordered name there
/// (RFC 8555 §7.4 leaves the subject to the CA; the CA/Browser Forum's
/// rules ask that a CN repeat a SAN).
pub fn assert_common_name_is_a_dns_name(chain: &Path) {
    let chain = chain.to_str().expect("UTF-8 path");
    let (ok, names) = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", chain]);
    assert!(ok, "{names}");
    let (ok, subject) = openssl(&[
        "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", chain,
    ]);
    assert!(ok, "{subject}");
    if let Some(common_name) = subject
        .trim()
        .trim_start_matches("subject=")
        .split(',')
        .find_map(|part| part.strip_prefix("CN="))
    {
        let dns_name = format!("DNS:{common_name}");
        assert!(
            names.split([',', '\n']).any(|name| name.trim() == dns_name),
            "the subject's CN {common_name:?} is none of the certificate's DNS names: {names}"
        );
    }
}

/// The serial (lowercase hex) of the first certificate in the PEM file
/// `path`.
pub fn serial_of(path: &str) -> String {
    let (ok, text) = openssl(&["x509", "-noout", "-serial", "-in", path]);
    assert!(ok, "{text}");
    text.trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// An EAB key as `certd acme eab create` prints it.
#[derive(Debug, Clone)]
pub struct Eab {
    pub key_id: String,
    /// base64url, no padding, as RFC 8555 clients take it.
    pub hmac_key: String,
}

/// The outside ACME clients.
#[derive(Debug, Clone, Copy)]
pub enum Client {
    Lego,
    Certbot,
    Caddy,
}

impl Client {
    fn program(self) -> &'static str {
        match self {
            Client::Lego => "lego",
            Client::Certbot => "certbot",
            Client::Caddy => "caddy",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Client::Lego => "apt-get install lego",
            Client::Certbot => "python3 -m pip install certbot==5.8.0",
            Client::Caddy => "apt-get install caddy",
        }
    }

    /// Whether the client runs here; missing: `false` after a skip line, or
    /// a panic under `CI` or `CERTD_REQUIRE_ACME_CLIENTS`.
    pub fn available(self) -> bool {
        let version = match self {
            Client::Caddy => "version",
            Client::Lego | Client::Certbot => "--version",
        };
        let problem = match Command::new(self.program())
            .arg(version)
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) if output.status.success() => return true,
            Ok(output) => format!("`{} {version}` failed: {}", self.program(), stderr(&output)),
            Err(error) => format!("{} does not run: {error}", self.program()),
        };
        require_or_skip(&format!("{problem} (install it: {})", self.install_hint()));
        false
    }
}

/// BIND's `named`, for dns-01: whether it is installed (else as
/// `Client::available`).
pub fn named_available() -> bool {
    let found = Command::new("named")
        .arg("-v")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        require_or_skip("BIND's named is not installed (apt-get install bind9 bind9-utils)");
    }
    found
}

fn require_or_skip(problem: &str) {
    let required = ["CI", "CERTD_REQUIRE_ACME_CLIENTS"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    assert!(
        !required,
        "the ACME clients are required here (CI or CERTD_REQUIRE_ACME_CLIENTS is set) but {problem}"
    );
    eprintln!("skipping: {problem}");
}

/// lego with its account and certificates in `path`, trusting certd's
/// bundle, talking to `ca`'s directory.
pub fn lego(ca: &AcmeCa, path: &Path) -> Command {
    let mut command = Command::new("lego");
    command
        .env("LEGO_CA_CERTIFICATES", ca.bundle())
        .args([
            "--server",
            &ca.directory(),
            "--accept-tos",
            "--email",
            CONTACT,
        ])
        .arg("--path")
        .arg(path)
        .args(["--domains", NAME])
        .stdin(Stdio::null());
    command
}

/// `--eab --kid K --hmac H`.
pub fn eab_args(eab: &Eab) -> [&str; 5] {
    ["--eab", "--kid", &eab.key_id, "--hmac", &eab.hmac_key]
}

/// The chain lego wrote for `web.acme.test` under `path` (leaf, then the
/// issuer: lego bundles them by default).
pub fn lego_chain(path: &Path) -> PathBuf {
    path.join("certificates").join(format!("{NAME}.crt"))
}

/// Runs `command`, failing the test with what it printed unless it succeeds.
pub fn succeeds(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    output
}

/// certbot with its config, work and log directories under `dir`, trusting
/// certd's bundle (`REQUESTS_CA_BUNDLE`), never asking anything.
pub fn certbot(ca: &AcmeCa, dir: &Path, subcommand: &str) -> Command {
    let mut command = Command::new("certbot");
    command
        .arg(subcommand)
        .env("REQUESTS_CA_BUNDLE", ca.bundle())
        .args(["--server", &ca.directory(), "--non-interactive"])
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--work-dir")
        .arg(dir.join("work"))
        .arg("--logs-dir")
        .arg(dir.join("logs"))
        .stdin(Stdio::null());
    command
}

/// A process killed when dropped (Caddy, BIND), with its output in a file.
pub struct Background {
    child: Child,
    pub log: PathBuf,
}

impl Background {
    pub fn spawn(command: &mut Command, log: PathBuf) -> Background {
        let file = std::fs::File::create(&log).expect("a log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("{command:?}: {error}"));
        Background { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited (and so will never become ready).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ready` every 200 ms until it holds; fails with `context()` after
/// `limit`.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "not ready after {limit:?}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
