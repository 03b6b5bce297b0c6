//! Starts the real `certd agent` next to a test daemon, and talks to its
//! Workload API socket as workloads do.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{CERTD, Daemon, Served, stderr, stdout};

/// A running agent; killed when dropped.
pub struct Agent {
    child: Option<Child>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// `http://ADDR` of `/metrics`, when started with `--metrics-addr`.
    pub metrics_url: Option<String>,
    /// How far ahead of the system's clock the agent's runs
    /// (`CERTD_TEST_CLOCK_FILE`; missing until `advance` writes it).
    clock_file: PathBuf,
}

impl Agent {
    /// Registers node agent `name` (`token:<name>`), makes a join token for
    /// it and starts `certd agent` with it, syncing every second.
    pub fn start(daemon: &Daemon, name: &str) -> Agent {
        Self::start_registered(daemon, name, &[])
    }

    /// As `start`, with extra arguments for `certd agent`.
    pub fn start_registered(daemon: &Daemon, name: &str, extra: &[&str]) -> Agent {
        let entry = daemon.entry(name, &[&format!("token:{name}")], &["--agent"]);
        let output = daemon.cli(&["token", "create", "--entry", &entry]);
        assert!(output.status.success(), "{}", stderr(&output));
        let token = stdout(&output).trim().to_owned();
        Self::start_with(daemon, name, Some(&token), extra)
    }

    /// Starts `certd agent` for `name` (its data directory under the
    /// daemon's temp dir), with a join token if given, and extra arguments.
    pub fn start_with(daemon: &Daemon, name: &str, token: Option<&str>, extra: &[&str]) -> Agent {
        let dir = daemon.tmp.path().join(format!("agent-{name}"));
        let socket = dir.join("agent.sock");
        let data_dir = dir.join("data");
        let log = dir.join("agent.log");
        let clock_file = dir.join("clock-ahead");
        std::fs::create_dir_all(&dir).expect("agent dir");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(CERTD);
        command
            .args(["agent", "--server", &daemon.grpc, "--ca-bundle"])
            .arg(daemon.data_dir.join("bundle.pem"))
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--sync-interval", "1s"])
            .args(extra)
            .env("CERTD_LOG", "info")
            .env("CERTD_TEST_CLOCK_FILE", &clock_file)
            .env_remove("CERTD_JOIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        if let Some(token) = token {
            command.env("CERTD_JOIN_TOKEN", token);
        }
        let mut child = command.spawn().expect("spawn certd agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read ready line");
        assert!(
            line.starts_with("certd agent ready"),
            "the agent did not start: {line:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let metrics_url = line
            .split_whitespace()
            .find_map(|part| part.strip_prefix("metrics="))
            .map(str::to_owned);
        Agent {
            child: Some(child),
            socket,
            data_dir,
            log,
            metrics_url,
            clock_file,
        }
    }

    /// Moves the agent's clock ahead by `by` (a debug build of certd reads
    /// it from `CERTD_TEST_CLOCK_FILE`): renewals that fall due run at
    /// once, instead of the test sleeping until they do.
    pub fn advance(&self, by: std::time::Duration) {
        let ahead = std::fs::read_to_string(&self.clock_file)
            .ok()
            .and_then(|text| text.trim().strip_suffix("ms")?.parse::<u64>().ok())
            .unwrap_or(0);
        let ahead = ahead + u64::try_from(by.as_millis()).expect("a test's step");
        // Renamed into place, so the agent never reads half a number.
        let written = self.clock_file.with_extension("new");
        std::fs::write(&written, format!("{ahead}ms")).expect("write the clock file");
        std::fs::rename(&written, &self.clock_file).expect("move the clock");
    }

    /// The value of one series on the agent's `/metrics` (started with
    /// `--metrics-addr`), if it is there.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let url = self
            .metrics_url
            .as_deref()
            .expect("started with --metrics-addr");
        let answer = super::http("GET", &format!("{url}/metrics"), &[], b"");
        let text = String::from_utf8(answer.body).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    /// The Workload API address, as SPIFFE_ENDPOINT_SOCKET takes it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log holds `text` within a few seconds: for a line about
    /// an event the test has already seen counted in the metrics, which
    /// the log writer, a background thread, may not have written yet.
    pub fn logged_soon(&self, text: &str) -> bool {
        super::logged_soon(&self.log, text)
    }

    /// The agent's own certificate chain and key (PEM), for acting as it.
    pub fn identity(&self) -> (String, String) {
        let read = |name: &str| std::fs::read_to_string(self.data_dir.join(name)).expect(name);
        (read("cert.pem"), read("key.pem"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw Workload API client on `socket` (our own generated stubs), for
/// what an unmodified SPIFFE client never sends (e.g. no security header).
pub async fn raw_client(
    socket: &std::path::Path,
) -> certd::agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient<
    tonic::transport::Channel,
> {
    try_raw_client(socket)
        .await
        .expect("connect to the agent socket")
}

/// As `raw_client`, retrying for up to 10 s while the agent refuses the
/// connection (its per-uid cap is full until closed connections are
/// noticed).
pub async fn raw_client_when_admitted(
    socket: &std::path::Path,
) -> certd::agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient<
    tonic::transport::Channel,
> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match try_raw_client(socket).await {
            Ok(client) => return client,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the agent never admitted a connection: {error}"),
        }
    }
}

async fn try_raw_client(
    socket: &std::path::Path,
) -> Result<
    certd::agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient<
        tonic::transport::Channel,
    >,
    tonic::transport::Error,
> {
    let socket = socket.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://agent.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(certd::agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel))
}

/// `certd agent` run in the test's own process through the library, on a
/// `ManualClock`: for tests about its timing (an SVID's renewal at half its
/// life) that move its clock instead of waiting. Stopped when dropped.
pub struct InProcessAgent {
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    clock: std::sync::Arc<certd::clock::ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl InProcessAgent {
    /// Registers node agent `name` (`token:<name>`), makes a join token for
    /// it and runs the agent with it, syncing every second.
    pub async fn start(daemon: &Served, name: &str) -> InProcessAgent {
        let entry = daemon.entry(name, &[&format!("token:{name}")], &["--agent"]);
        let output = daemon.cli(&["token", "create", "--entry", &entry]);
        assert!(output.status.success(), "{}", stderr(&output));
        let token = stdout(&output).trim().to_owned();
        let dir = daemon.tmp.path().join(format!("agent-{name}"));
        std::fs::create_dir_all(&dir).expect("agent dir");
        let clock = certd::clock::ManualClock::starting_now();
        let settings = certd::agent::AgentSettings {
            server: daemon.grpc.clone(),
            ca_bundle_pem: daemon.bundle_pem(),
            bootstrap: Some(certd::agent::Bootstrap::JoinToken(zeroize::Zeroizing::new(
                token,
            ))),
            data_dir: dir.join("data"),
            socket: dir.join("agent.sock"),
            sync_interval: std::time::Duration::from_secs(1),
            socket_limits: certd::agent::SocketLimits::default(),
            metrics_addr: None,
            clock: clock.clone(),
            jwt_issuer: Some(daemon.http.clone()),
        };
        let (socket, data_dir) = (settings.socket.clone(), settings.data_dir.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Ready, or why it stopped before: whichever comes first.
        let (ready, started) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let ready = std::sync::Arc::new(std::sync::Mutex::new(Some(ready)));
        let on_ready = ready.clone();
        tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            let ran = certd::agent::run(settings, stopped, move |_| {
                if let Some(ready) = on_ready.lock().unwrap().take() {
                    let _ = ready.send(Ok(()));
                }
            })
            .await;
            if let (Err(error), Some(ready)) = (ran, ready.lock().unwrap().take()) {
                let _ = ready.send(Err(error.to_string()));
            }
        });
        started
            .await
            .expect("the in-process agent reports")
            .unwrap_or_else(|error| panic!("the in-process agent did not start: {error}"));
        InProcessAgent {
            socket,
            data_dir,
            clock,
            stop: Some(stop),
        }
    }

    /// The Workload API address, as SPIFFE_ENDPOINT_SOCKET takes it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Moves the agent's clock by `by`: renewals that fall due run at once.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
