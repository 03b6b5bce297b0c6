//! certd served in the test's own process, through the library's daemon
//! builder, on a `ManualClock`: for tests about time (expiry, rotation,
//! refresh) that move the clock instead of sleeping, and that wait on the
//! daemon's own events instead of its log. Tests about processes (signals,
//! crashes, the CLI, the README) use `Daemon`, the real binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certd::api::client::{AdminClient, TlsClientSettings, WorkloadClient};
use certd::authority::{Authority, TokenFor};
use certd::clock::ManualClock;
use certd::config::ConfigFile;
use certd::daemon::{Daemon, RunningDaemon};
use certd::registry::EntrySpec;
use tempfile::TempDir;

use super::{Identity, csr_for, database_url};

/// A daemon serving in this process; stopped when dropped.
pub struct InProcess {
    pub tmp: TempDir,
    pub data_dir: PathBuf,
    pub grpc: String,
    pub http: String,
    pub admin_socket: PathBuf,
    /// The daemon's clock: `clock.advance(…)` moves its time of day.
    pub clock: Arc<ManualClock>,
    /// The daemon's authority, to wait on its events.
    pub authority: Authority,
    running: Option<RunningDaemon>,
}

impl InProcess {
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
        let admin_socket = bound.admin_socket();
        let authority = bound.authority().clone();
        let mut running = bound.spawn();
        running.ready().await.expect("the in-process certd serves");
        InProcess {
            tmp,
            data_dir,
            grpc,
            http,
            admin_socket,
            clock,
            authority,
            running: Some(running),
        }
    }

    pub fn bundle_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("bundle.pem")).expect("bundle.pem")
    }

    /// Bootstraps a workload for `service`: an entry and a join token made
    /// over the admin socket, then `Issue` over gRPC.
    pub async fn bootstrap(&self, service: &str) -> Identity {
        let mut admin = AdminClient::connect(&self.admin_socket)
            .await
            .expect("admin socket");
        let spec = EntrySpec {
            service: service.into(),
            selectors: vec![format!("token:{service}")],
            ..EntrySpec::default()
        };
        let entry = admin.create_entry(&spec).await.expect("create entry");
        let tokens = admin
            .create_join_tokens(&TokenFor::Entry(entry.id), None, 1)
            .await
            .expect("join token");
        let key = rcgen::KeyPair::generate().expect("key");
        let tls = TlsClientSettings {
            ca_bundle_pem: self.bundle_pem(),
            identity: None,
        };
        let issued = WorkloadClient::connect(&self.grpc, &tls)
            .await
            .expect("connect to certd")
            .issue(csr_for(&key, None, vec![]), &tokens.tokens[0])
            .await
            .expect("issue");
        Identity::new(key, issued)
    }

    /// Waits until the CA has changed its signing intermediates `times`
    /// times since start (a rotation promoted, or the previous one gone).
    pub async fn signer_changes(&self, times: u64) {
        let mut changes = self.authority.ca().signer_changes();
        tokio::time::timeout(
            Duration::from_secs(30),
            changes.wait_for(|generation| *generation >= times),
        )
        .await
        .expect("the signers change in time")
        .expect("the CA is alive");
    }

    /// Stops it and waits until it has.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("a clean shutdown");
        }
    }
}
