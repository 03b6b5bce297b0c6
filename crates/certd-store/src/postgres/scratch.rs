//! A throwaway PostgreSQL server for tests and benchmarks, started from
//! the PostgreSQL binaries installed on the machine: `initdb` and
//! `postgres` in a temporary directory, reachable only on a Unix socket
//! there, stopped and deleted when dropped.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as
//! `nobody` (through `setpriv`). A small shell watches a pipe from this
//! process and stops the server and deletes its directory when the pipe
//! closes, so no server outlives the test process, however it ends. Where PostgreSQL is not installed, tests
//! skip with one loud line, unless `CERTD_REQUIRE_POSTGRES` is set (as
//! `.ci/run` does): then they fail.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PgSettings;

/// The user that owns and runs the server when certd's tests run as root.
const UNPRIVILEGED_ID: u32 = 65534;
/// The port number, which only names the socket file in the directory.
const PORT: u16 = 5432;
/// How long the server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running scratch server; stopped and deleted on drop.
#[derive(Debug)]
pub struct ScratchServer {
    root: PathBuf,
    bin: PathBuf,
    /// Run as `nobody`, because the tests run as root.
    unprivileged: bool,
    /// The watchdog shell; its stdin is the pipe from this process.
    child: Option<Child>,
    /// With TLS: the TCP port on 127.0.0.1 it also listens on.
    tls_port: Option<u16>,
}

/// Runs postgres with the arguments given until stdin closes, then stops
/// it (fast shutdown) and deletes `$CERTD_SCRATCH_ROOT`, unless a `keep`
/// file there says the server is only being restarted.
const WATCHDOG: &str = r#"pg="$1"; shift
"$pg" "$@" &
pid=$!
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
[ -e "$CERTD_SCRATCH_ROOT/keep" ] || rm -rf "$CERTD_SCRATCH_ROOT""#;

impl ScratchServer {
    /// Starts a server. `durable: false` turns fsync off, for tests that do
    /// not crash the database itself; benchmarks want `true`.
    pub fn start(durable: bool) -> Result<Self, String> {
        Self::start_with(durable, None)
    }

    /// Starts a server that also listens on TCP on 127.0.0.1 with TLS,
    /// presenting `certificate_pem` (its chain) and `key_pem`; see
    /// `tls_url`.
    pub fn start_with_tls(certificate_pem: &str, key_pem: &str) -> Result<Self, String> {
        Self::start_with(false, Some((certificate_pem, key_pem)))
    }

    fn start_with(durable: bool, tls: Option<(&str, &str)>) -> Result<Self, String> {
        let bin = binaries().ok_or("PostgreSQL is not installed (no initdb found)")?;
        let mut random = [0u8; 8];
        certd_core::fsutil::fill_random(&mut random);
        let root = std::env::temp_dir().join(format!("certd-pg-{}", hex::encode(random)));
        std::fs::create_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let unprivileged = std::fs::metadata(&root).map_err(|e| e.to_string())?.uid() == 0;
        if unprivileged {
            std::os::unix::fs::chown(&root, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))
                .map_err(|e| format!("chown {}: {e}", root.display()))?;
        }
        let mut server = ScratchServer {
            root,
            bin,
            unprivileged,
            child: None,
            tls_port: None,
        };
        run(
            "initdb",
            server
                .command("initdb")
                .arg("-D")
                .arg(server.root.join("data"))
                .args(["-U", "certd", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        )?;
        if let Some((certificate, key)) = tls {
            server.install_tls(certificate, key)?;
        }
        server.restart(durable)?;
        Ok(server)
    }

    /// A server for a test, or `None` (after one loud line) where
    /// PostgreSQL is not installed and `CERTD_REQUIRE_POSTGRES` is unset.
    pub fn start_for_tests() -> Option<Self> {
        match Self::start(false) {
            Ok(server) => Some(server),
            Err(reason) if std::env::var_os("CERTD_REQUIRE_POSTGRES").is_some() => {
                panic!("CERTD_REQUIRE_POSTGRES is set, but PostgreSQL cannot start: {reason}")
            }
            Err(reason) => {
                eprintln!("SKIPPED: a PostgreSQL test, because PostgreSQL cannot start: {reason}");
                None
            }
        }
    }

    /// A new, empty database of its own, on one server that the whole test
    /// process shares (started at the first call, stopped when the process
    /// ends): for tests that need a fresh database but never stop, freeze
    /// or restart its server, at the cost of a `createdb` instead of an
    /// `initdb` and a server start. `None` as for `start_for_tests`.
    pub fn fresh_database_for_tests() -> Option<PgSettings> {
        static SHARED: std::sync::OnceLock<Option<std::sync::Mutex<ScratchServer>>> =
            std::sync::OnceLock::new();
        let server = SHARED
            .get_or_init(|| Self::start_for_tests().map(std::sync::Mutex::new))
            .as_ref()?
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match server.create_database() {
            Ok(settings) => Some(settings),
            Err(reason) => panic!("cannot create a test database: {reason}"),
        }
    }

    /// Creates a database with a random name; how to reach it.
    fn create_database(&self) -> Result<PgSettings, String> {
        let mut random = [0u8; 8];
        certd_core::fsutil::fill_random(&mut random);
        let name = format!("test_{}", hex::encode(random));
        run(
            "createdb",
            self.command("createdb").arg("-h").arg(&self.root).args([
                "-p",
                &self.port().to_string(),
                "-U",
                "certd",
                &name,
            ]),
        )?;
        Ok(PgSettings {
            url: self
                .url()
                .replace("dbname=postgres", &format!("dbname={name}")),
            ca_file: None,
        })
    }

    /// How to reach it.
    pub fn settings(&self) -> PgSettings {
        PgSettings {
            url: self.url(),
            ca_file: None,
        }
    }

    /// Its URL over TCP with TLS required (`start_with_tls` only); the
    /// server's certificate must name `localhost`.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("postgresql://certd@localhost:{port}/postgres?sslmode=require"))
    }

    /// The port: it names the Unix socket file, and with TLS it is also
    /// the TCP port.
    fn port(&self) -> u16 {
        self.tls_port.unwrap_or(PORT)
    }

    /// Writes the TLS files PostgreSQL insists on owning (key 0600) and
    /// picks a free port.
    fn install_tls(&mut self, certificate: &str, key: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for (name, contents, mode) in [
            ("server.crt", certificate, 0o644),
            ("server.key", key, 0o600),
        ] {
            let path = self.root.join(name);
            std::fs::write(&path, contents).map_err(|e| format!("{name}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{name}: {e}"))?;
            if self.unprivileged {
                std::os::unix::fs::chown(&path, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))
                    .map_err(|e| format!("{name}: {e}"))?;
            }
        }
        let free = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        self.tls_port = Some(free.local_addr().map_err(|e| e.to_string())?.port());
        Ok(())
    }

    /// Its URL (a Unix socket, no TLS).
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=certd dbname=postgres sslmode=disable",
            self.root.display(),
            self.port()
        )
    }

    /// Stops the server (fast shutdown), keeping its data for `restart`,
    /// and waits for it.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            let _ = std::fs::write(self.root.join("keep"), b"");
        }
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Closing the pipe tells the watchdog to stop the server.
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the server and every backend process (SIGSTOP): a database
    /// that hangs rather than fails, as a stalled host or a partition that
    /// drops packets looks. `thaw` undoes it.
    pub fn freeze(&self) -> Result<(), String> {
        self.signal_all("-STOP")
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) -> Result<(), String> {
        self.signal_all("-CONT")
    }

    /// Sends `signal` to the postmaster and its children (the backends).
    fn signal_all(&self, signal: &str) -> Result<(), String> {
        let pid_file = self.root.join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let postmaster = text.lines().next().unwrap_or_default().trim().to_owned();
        let mut pids = vec![postmaster.clone()];
        for entry in std::fs::read_dir("/proc")
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let parent = status
                .lines()
                .find_map(|line| line.strip_prefix("PPid:"))
                .map(str::trim);
            if parent == Some(postmaster.as_str()) {
                pids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let status = Command::new("kill")
            .arg(signal)
            .args(&pids)
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill {signal} {pids:?} failed"));
        }
        Ok(())
    }

    /// Starts the server (again, after `stop`) on its data.
    pub fn restart(&mut self, durable: bool) -> Result<(), String> {
        self.stop();
        let _ = std::fs::remove_file(self.root.join("keep"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("postgres.log"))
            .map_err(|e| e.to_string())?;
        let fsync = if durable { "on" } else { "off" };
        let mut network = vec!["-c".to_owned(), "listen_addresses=".to_owned()];
        let port = self.port();
        if self.tls_port.is_some() {
            network = [
                "listen_addresses=127.0.0.1".to_owned(),
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", self.root.join("server.crt").display()),
                format!("ssl_key_file={}", self.root.join("server.key").display()),
            ]
            .into_iter()
            .flat_map(|setting| ["-c".to_owned(), setting])
            .collect();
        }
        let child = self
            .command("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("certd-scratch-postgres")
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.root.join("data"))
            .arg("-k")
            .arg(&self.root)
            .args(["-p", &port.to_string()])
            .args(&network)
            .args(["-c", &format!("fsync={fsync}")])
            .args(["-c", "max_connections=300"])
            .env("CERTD_SCRATCH_ROOT", &self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    /// `program` (from the PostgreSQL binaries, unless it is `sh`), as the
    /// server's user.
    fn command(&self, program: &str) -> Command {
        let program = if program == "sh" {
            PathBuf::from("sh")
        } else {
            self.bin.join(program)
        };
        let mut command = if self.unprivileged {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={UNPRIVILEGED_ID}"))
                .arg(format!("--regid={UNPRIVILEGED_ID}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            command
        } else {
            Command::new(program)
        };
        command.env("LC_ALL", "C").stdin(Stdio::null());
        command
    }

    fn wait_until_ready(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.root)
                .args(["-p", &self.port().to_string(), "-U", "certd", "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let log =
                    std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not start: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        self.shut_down();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The directory of the installed PostgreSQL binaries: `CERTD_POSTGRES_BIN`,
/// else the newest `/usr/lib/postgresql/<version>/bin` (Debian), else the
/// directory of `initdb` on the PATH.
fn binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CERTD_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
    })
}

/// Runs one of PostgreSQL's tools; its standard error if it fails.
fn run(tool: &str, command: &mut std::process::Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{tool}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
