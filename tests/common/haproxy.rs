//! HAProxy as a relying party, configured as docs/guides/relying-parties.md
//! says (`bind … ssl crt … ca-file … verify required crl-file …`) and run as
//! Debian's `haproxy.service` runs it: in master-worker mode, where a reload
//! (`systemctl reload haproxy`) checks the configuration and sends SIGUSR2
//! to the master, which starts a worker that reads every file again. Here it
//! is an ordinary foreground process in a test's directory, on a loopback
//! port, with no chroot, user or files outside that directory.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::acme_clients::{Background, wait_until};

/// A running HAProxy (its master process; the worker exits with it), killed
/// when dropped.
pub struct Haproxy {
    process: Background,
    pub port: u16,
    config: String,
    pid_file: PathBuf,
    master_socket: PathBuf,
}

/// What `curl` made of one request through HAProxy.
pub struct CurlAnswer {
    /// Whether curl exited 0.
    pub ok: bool,
    /// The HTTP status, `000` when there was no response.
    pub status: String,
    pub body: String,
    pub stderr: String,
}

impl Haproxy {
    /// Starts HAProxy in `dir` with the guide's `bind` line on a free
    /// loopback port: `crt` (the server's chain and key, one PEM file),
    /// `ca-file` (the roots clients must chain to), `crl-file` (the file
    /// `certd crl sync --out` writes). It answers every verified client
    /// itself (`http-request return`), so no backend is needed; returns once
    /// a worker serves.
    pub fn start(dir: &Path, crt: &str, ca_file: &str, crl_file: &str) -> Haproxy {
        let port = super::free_port_below_ephemeral_range();
        let config = super::write_file(
            &dir.join("haproxy.cfg"),
            format!(
                "defaults\n    mode http\n    timeout connect 5s\n    timeout client 10s\n    \
                 timeout server 10s\n\nfrontend web\n    bind 127.0.0.1:{port} ssl crt {crt} \
                 ca-file {ca_file} verify required crl-file {crl_file}\n    \
                 http-request return status 200 content-type text/plain \
                 lf-string \"verified %[ssl_c_s_dn]\\n\"\n"
            ),
        );
        let pid_file = dir.join("haproxy.pid");
        let master_socket = dir.join("haproxy-master.sock");
        // Debian's unit runs `-Ws` (master-worker, telling systemd when it is
        // ready); `-W -db` is the same without systemd, in the foreground.
        let process = Background::spawn(
            Command::new("haproxy")
                .args(["-W", "-db", "-f", &config, "-p"])
                .arg(&pid_file)
                .arg("-S")
                .arg(&master_socket),
            dir.join("haproxy.out"),
        );
        let log = process.log.clone();
        let mut haproxy = Haproxy {
            process,
            port,
            config,
            pid_file,
            master_socket,
        };
        // The master forks a worker only once the configuration loaded and
        // the port is bound (by HAProxy, not by whatever else might have
        // taken it since it was picked).
        wait_until(
            Duration::from_secs(20),
            || {
                assert!(
                    !haproxy.process.exited(),
                    "HAProxy exited: {}",
                    haproxy.process.log_text()
                );
                haproxy.show_proc().is_some_and(|processes| {
                    processes
                        .lines()
                        .any(|line| line.split_whitespace().nth(1) == Some("worker"))
                })
            },
            || {
                format!(
                    "HAProxy has no worker: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        );
        haproxy
    }

    /// What Debian's `haproxy.service` runs for `systemctl reload haproxy`
    /// (its two `ExecReload` lines), for `certd crl sync --exec`: check the
    /// configuration, then SIGUSR2 to the master. A configuration that does
    /// not load fails the command, and so the sync.
    pub fn reload_command(&self) -> String {
        format!(
            "haproxy -W -f {config} -c -q && kill -USR2 \"$(cat {pid_file})\"",
            config = self.config,
            pid_file = self.pid_file.display()
        )
    }

    /// Waits until the master has done its `reloads`-th reload and no
    /// worker from before it remains: from then on every connection meets a
    /// worker that read the CRL file after the reload. (The old worker stops
    /// only once the new one serves, and the master lists it as an old
    /// worker until it has exited.)
    pub fn wait_for_reload(&self, reloads: u32) {
        wait_until(
            Duration::from_secs(30),
            || {
                let Some(processes) = self.show_proc() else {
                    // The master re-executes itself on a reload: its
                    // socket is briefly gone.
                    return false;
                };
                let master = processes
                    .lines()
                    .find(|line| line.split_whitespace().nth(1) == Some("master"));
                let failed = master.is_some_and(|line| !line.contains("[failed: 0]"));
                assert!(
                    !failed,
                    "HAProxy failed to reload:\n{processes}\n{}",
                    self.process.log_text()
                );
                let done = master
                    .and_then(|line| line.split_whitespace().nth(2))
                    .and_then(|count| count.parse::<u32>().ok())
                    .is_some_and(|count| count >= reloads);
                done && !processes.contains("# old workers")
            },
            || {
                format!(
                    "HAProxy's reload {reloads} did not finish:\n{}\n{}",
                    self.show_proc().unwrap_or_default(),
                    self.process.log_text()
                )
            },
        );
    }

    /// The master's `show proc` (its CLI on the `-S` socket): the master
    /// with its reload count, the workers, and the old workers still
    /// finishing; `None` while the socket does not answer.
    fn show_proc(&self) -> Option<String> {
        let mut socket = UnixStream::connect(&self.master_socket).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        socket.write_all(b"show proc\n").ok()?;
        // The CLI answers and closes only once the client has finished
        // sending.
        socket.shutdown(std::net::Shutdown::Write).ok()?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// `curl` over mTLS to HAProxy as `web.certd.internal` (the server
    /// certificate's name), with the client's `chain` (leaf then
    /// intermediate, as certd writes `cert.pem`) and `key`, trusting
    /// `ca_file`.
    pub fn curl(&self, ca_file: &str, chain: &str, key: &str) -> CurlAnswer {
        let port = self.port;
        let output = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
            .args(["--cacert", ca_file, "--cert", chain, "--key", key])
            .args(["--resolve", &format!("web.certd.internal:{port}:127.0.0.1")])
            .arg(format!("https://web.certd.internal:{port}/"))
            .output()
            .expect("run curl");
        let printed = super::stdout(&output);
        let (body, status) = printed.rsplit_once('\n').unwrap_or(("", &printed));
        CurlAnswer {
            ok: output.status.success(),
            status: status.to_owned(),
            body: body.to_owned(),
            stderr: super::stderr(&output),
        }
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}
