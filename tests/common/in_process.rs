//! certd served in the test's own process, through the library's daemon
//! builder, on a `ManualClock`: for tests about time (expiry, rotation,
//! refresh) that move the clock instead of sleeping, and that wait on the
//! daemon's own events instead of its log. Tests about processes (signals,
//! crashes, the CLI, the docs' commands) use `Daemon`, the real binary.
//!
//! Its tests run on tokio's multi-threaded runtime: the daemon serves on
//! the workers while the test blocks its own thread (on a CLI command that
//! asks the daemon, say).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certd::authority::Authority;
use certd::clock::ManualClock;
use certd::config::ConfigFile;
use certd::daemon::{Daemon, RunningDaemon};
use tempfile::TempDir;

use super::{Served, database_url};

/// A daemon serving in this process; what a client does with it is
/// `Served`'s.
pub struct InProcess {
    served: Served,
    /// The daemon's clock (`advance` moves it).
    clock: Arc<ManualClock>,
    /// The daemon's authority, to wait on its events.
    pub authority: Authority,
    running: Option<RunningDaemon>,
}

impl InProcess {
    /// Serves a fresh data directory (a CA made with the defaults).
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("ca");
        Self::start_in(tmp, data_dir, "").await
    }

    /// Serves `data_dir` (a CA is made with the defaults if it has none)
    /// with the settings of `config` (certd.toml's text), on ephemeral
    /// loopback ports and, when the tests run on PostgreSQL, on a scratch
    /// database of its own.
    pub async fn start_in(tmp: TempDir, data_dir: PathBuf, config: &str) -> Self {
        let mut text =
            format!("grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n{config}\n");
        if let Some(url) = database_url(&data_dir) {
            text.push_str(&format!("[store]\nurl = \"{url}\"\n"));
        }
        let config = ConfigFile::parse(&text, Path::new("certd.toml"))
            .and_then(|file| file.validate())
            .expect("a valid test configuration");
        let clock = ManualClock::starting_now();
        let bound = Daemon::new(certd::DataDir::new(&data_dir), config)
            .with_clock(clock.clone())
            .bind()
            .await
            .expect("bind an in-process certd");
        let grpc = format!("https://{}", bound.grpc_addr());
        let http = format!("http://{}", bound.http_addr());
        let authority = bound.authority().clone();
        let mut running = bound.spawn();
        running.ready().await.expect("the in-process certd serves");
        InProcess {
            served: Served {
                tmp,
                data_dir,
                grpc,
                http,
            },
            clock,
            authority,
            running: Some(running),
        }
    }

    /// Moves the daemon's clock by `by`: its timed tasks (rotation, CRL
    /// refresh, renewal of its serving certificate) run at once if due.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Waits until the CA has changed its signing intermediates `times`
    /// times since start (a rotation promoted, or the previous one gone).
    pub async fn signer_changes(&self, times: u64) {
        let mut changes = self.authority.ca().signer_changes();
        tokio::time::timeout(
            Duration::from_secs(30),
            changes.wait_for(|signers| signers.generation >= times),
        )
        .await
        .expect("the signers change in time")
        .expect("the CA is alive");
    }

    /// Stops it and serves the same data directory (and database) again
    /// with the settings of `config`.
    pub async fn restart(mut self, config: &str) -> Self {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("a clean shutdown");
        }
        // The authority holds the store open (sled locks it): let it go.
        let InProcess {
            served, authority, ..
        } = self;
        drop(authority);
        let Served { tmp, data_dir, .. } = served;
        Self::start_in(tmp, data_dir, config).await
    }

    /// Stops it and waits until it has.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("a clean shutdown");
        }
    }
}

impl std::ops::Deref for InProcess {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}
