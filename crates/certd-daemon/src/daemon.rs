//! Building a daemon from its configuration: the one place that wires
//! the CA, the store, the attestors and the listeners together.
//!
//! `certd serve`, the offline CLI commands, benchmarks and tests that want
//! an in-process certd all go through [`Daemon`]; none wires the parts
//! itself. It owns start-up order (TCP listeners, then CA, then store, then
//! the admin socket, then
//! authority) and nothing that happens after start-up: serving is
//! `server::run`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::authority::Authority;
use crate::ca::{self, CaFiles, CertificateAuthority, InitOptions, KeyType};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, revocation_urls};
pub use crate::server::Reload;
pub use crate::server::ServeError;
use crate::server::{self, Listeners, TcpListeners};
use crate::{DataDir, Error};

/// A daemon to be: a data directory and a validated configuration.
#[derive(Debug, Clone)]
pub struct Daemon {
    data_dir: DataDir,
    config: Config,
    /// What serving does when the CA's store marks are missing.
    unmarked: crate::store::marks::Unmarked,
    /// The time of day for the whole daemon.
    clock: SharedClock,
    /// Whether a data directory that does not exist may be created, with
    /// a CA made with the defaults.
    create_missing_data_dir: bool,
}

impl Daemon {
    pub fn new(data_dir: DataDir, config: Config) -> Self {
        Daemon {
            data_dir,
            config,
            unmarked: crate::store::marks::Unmarked::Refuse,
            clock: SystemClock::shared(),
            create_missing_data_dir: true,
        }
    }

    /// Whether a data directory that does not exist may be created (with a
    /// CA made with the defaults); `false`: serving it is refused, naming
    /// `certd init`. `certd serve` allows it for the quick start's default
    /// directory only, so a mistyped `--data-dir` never makes a new root.
    /// An existing directory without a CA still gets one made.
    pub fn create_missing_data_dir(mut self, allowed: bool) -> Self {
        self.create_missing_data_dir = allowed;
        self
    }

    /// Tell the time by `clock` instead of the system's (tests move a
    /// `ManualClock` to reach expiries and rotations at once).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Serve from a database even though the CA's store marks are missing
    /// (`--danger-accept-unmarked-store`): new marks are written from it,
    /// and the start is audited.
    pub fn accept_unmarked_store(mut self) -> Self {
        self.unmarked = crate::store::marks::Unmarked::Accept;
        self
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The authority over the data directory, without listeners, for
    /// commands run while no daemon serves it. Fails with
    /// `StoreError::Locked` if a daemon holds the database. Offline
    /// commands issue for operators and read records; they never check a
    /// service-account token, so the issuer's keys are not loaded (nor
    /// fetched) and cannot make them fail.
    pub async fn offline(&self) -> Result<Authority, Error> {
        let mut ca = CertificateAuthority::open(
            self.data_dir.root(),
            &self.key_secrets()?,
            self.clock.clone(),
        )?;
        ca.set_revocation_urls(self.revocation_urls(self.config.http_addr));
        let store = crate::store::open_checked(
            &self.data_dir,
            &self.config.store,
            crate::store::marks::Unmarked::Refuse,
            &crate::store::marks::CaIdentity::of_root_file(&self.data_dir.root_cert())?,
            ca.now(),
        )
        .await?;
        let mut settings = self.config.authority_settings(
            &self.public_base_url(self.config.http_addr),
            self.config.grpc_addr.port(),
        );
        settings.attestors = crate::attest::ConfiguredAttestors::default();
        // Listings are paced to leave a serving certd's issuance its rate;
        // offline nothing else runs (`certd list --all --offline`).
        settings.list_rate = None;
        let jwt_keys = self.jwt_keys()?;
        Authority::new(Arc::new(ca), store, settings, jwt_keys).await
    }

    /// The passphrase of encrypted CA keys, from its file, if configured.
    fn key_passphrase(&self) -> Result<Option<crate::ca::KeyPassphrase>, Error> {
        Ok(self
            .config
            .key_passphrase_file
            .as_deref()
            .map(crate::ca::KeyPassphrase::from_file)
            .transpose()?)
    }

    /// What unlocks the intermediate key: the passphrase and the PKCS#11
    /// PIN, each from its file if configured.
    fn key_secrets(&self) -> Result<crate::ca::KeySecrets, Error> {
        Ok(crate::ca::KeySecrets {
            passphrase: self.key_passphrase()?,
            pkcs11_pin: self
                .config
                .pkcs11_pin_file
                .as_deref()
                .map(crate::ca::Pkcs11Pin::from_file)
                .transpose()?,
        })
    }

    /// The JWT-SVID keys, from the data directory's master secret (created
    /// on the first start of a data directory made before JWT-SVIDs).
    fn jwt_keys(&self) -> Result<Arc<crate::jwt::JwtKeys>, Error> {
        let keys = crate::jwt::JwtKeys::load_or_create(
            &self.data_dir.jwt_master_key(),
            self.config.jwt.schedule(),
            self.config.jwt.algorithm,
        )?;
        Ok(Arc::new(keys))
    }

    /// Creates a CA with the defaults if the data directory has none (with
    /// a warning: `certd init` is how to choose), then binds the listeners
    /// and builds the authority. Nothing is served yet.
    pub async fn bind(self) -> Result<BoundDaemon, ServeError> {
        let dir = self.data_dir.root();
        let tcp = TcpListeners::bind(&self.config).await?;
        if !CaFiles::new(dir).exists() {
            if !self.create_missing_data_dir && !dir.exists() {
                return Err(ServeError::NoDataDirectory(dir.display().to_string()));
            }
            tracing::warn!(
                data_dir = %dir.display(),
                "no CA in the data directory: creating one with the defaults (trust domain certd.internal, ECDSA P-256); run `certd init` first to choose"
            );
            let options = InitOptions {
                trust_domain: "certd.internal".parse().map_err(Error::from)?,
                key_type: KeyType::EcdsaP256,
                // A configured passphrase encrypts the keys made here too.
                secrets: ca::KeySecrets {
                    passphrase: self.key_passphrase()?,
                    pkcs11_pin: None,
                },
                intermediate_key_in: None,
                public_base_url: self
                    .public_base_url(tcp.http_addr().unwrap_or(self.config.http_addr)),
                intermediate_lifetime: ca::INTERMEDIATE_LIFETIME,
            };
            ca::init(dir, &options, self.clock.now()).map_err(Error::from)?;
            crate::store::marks::MarksFile::for_new_ca()
                .write(&self.data_dir.store_marks())
                .map_err(|error| {
                    Error::from(crate::store::StoreError::Opening {
                        path: self.data_dir.store_marks().display().to_string(),
                        source: Box::new(error),
                    })
                })?;
        }
        // The data directory holds the CA's keys: private, whoever made it.
        match crate::fsutil::narrow_to_private(dir) {
            Ok(true) => tracing::warn!(
                data_dir = %dir.display(),
                "the data directory was readable by others; made it 0700"
            ),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(error = %crate::error_kind::with_causes(&error), data_dir = %dir.display(), "cannot make the data directory private")
            }
        }
        // An intermediate rotated while certd was down takes effect now.
        let secrets = self.key_secrets()?;
        match ca::rotation::promote_pending(
            dir,
            &secrets,
            crate::server::longest_certificate_lifetime(&self.config),
            self.clock.unix_now(),
        ) {
            Ok(Some(promoted)) => tracing::info!(
                subject = %promoted.subject,
                "promoted the next intermediate prepared while certd was down"
            ),
            Ok(None) => {}
            Err(error) => tracing::error!(
                error = %crate::error_kind::with_causes(&error),
                "cannot promote the next intermediate; signing with the current one"
            ),
        }
        let mut ca =
            CertificateAuthority::open(dir, &secrets, self.clock.clone()).map_err(Error::from)?;
        // The database before the admin socket: a second `serve` on the
        // same directory stops here, before it touches the first one's.
        let ca_identity = crate::store::marks::CaIdentity::of_root_file(&self.data_dir.root_cert())
            .map_err(Error::from)?;
        let store = crate::store::open_checked(
            &self.data_dir,
            &self.config.store,
            self.unmarked,
            &ca_identity,
            ca.now(),
        )
        .await
        .map_err(Error::from)?;
        if self.unmarked == crate::store::marks::Unmarked::Accept {
            crate::audit::record(
                store.as_ref(),
                ca.now(),
                crate::audit::Decision {
                    event: crate::model::AuditEvent::AcceptUnmarkedStore,
                    allowed: true,
                    caller: "certd serve --danger-accept-unmarked-store",
                    reason: Some(format!(
                        "served {} without checking it against the CA's store marks",
                        store.location()
                    )),
                    ..crate::audit::Decision::default()
                },
            )
            .await;
        }
        let listeners = tcp.with_admin_socket(&self.data_dir).await?;
        let grpc_addr = local_addr(&listeners.grpc, "gRPC")?;
        let http_addr = local_addr(&listeners.http, "HTTP")?;
        let bundle_endpoint_addr = listeners
            .bundle
            .as_ref()
            .map(|listener| local_addr(listener, "bundle endpoint"))
            .transpose()?;
        ca.set_revocation_urls(self.revocation_urls(http_addr));
        let jwt_keys = self.jwt_keys()?;
        // Derived now, before serving (an RS256 key takes a while), and only
        // here: offline commands rarely need a key at all.
        jwt_keys.published(ca.now());
        let settings = self
            .config
            .authority_settings(&self.public_base_url(http_addr), grpc_addr.port());
        if settings.issuer.names_no_reachable_host() {
            tracing::warn!(
                issuer = %settings.issuer.url,
                jwks_uri = %settings.issuer.jwks_uri,
                "tokens name an issuer no relying party can reach (the HTTP listener's wildcard address): set public_base_url or [jwt] issuer"
            );
        }
        let authority = Authority::new(Arc::new(ca), store, settings, jwt_keys).await?;
        Ok(BoundDaemon {
            authority,
            reload: Reload::default(),
            config: self.config,
            listeners,
            grpc_addr,
            http_addr,
            bundle_endpoint_addr,
        })
    }

    /// The CRL and OCSP URLs certificates carry: under `public_base_url`,
    /// or else under the HTTP listener's address.
    fn revocation_urls(&self, http_addr: SocketAddr) -> crate::ca::RevocationUrls {
        revocation_urls(&self.public_base_url(http_addr))
            .with_crl_shards(self.config.revocation.crl_shards)
    }

    /// Where relying parties reach the HTTP listener: `public_base_url`, or
    /// the listener's own address.
    fn public_base_url(&self, http_addr: SocketAddr) -> String {
        self.config
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{http_addr}"))
    }
}

fn local_addr(
    listener: &tokio::net::TcpListener,
    what: &'static str,
) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Bind {
        what,
        address: "its bound address".into(),
        source,
    })
}

/// A daemon whose listeners are bound (their ports known) but not serving.
#[derive(Debug)]
pub struct BoundDaemon {
    authority: Authority,
    reload: Reload,
    config: Config,
    listeners: Listeners,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    bundle_endpoint_addr: Option<SocketAddr>,
}

impl BoundDaemon {
    /// The bundle endpoint's own listener, if configured.
    pub fn bundle_endpoint_addr(&self) -> Option<SocketAddr> {
        self.bundle_endpoint_addr
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.listeners.admin_path.clone()
    }

    /// What makes the daemon look at its data directory now (SIGHUP).
    pub fn reload_handle(&self) -> Reload {
        self.reload.clone()
    }

    /// Serves until `shutdown` completes; `ready` is called once everything
    /// is set up, just before serving.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        ready: impl FnOnce(),
    ) -> Result<(), ServeError> {
        server::run(
            self.authority,
            &self.config,
            self.listeners,
            self.reload,
            shutdown,
            ready,
        )
        .await
    }

    /// Serves on a task of its own; the handle stops it.
    pub fn spawn(self) -> RunningDaemon {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(
            async move {
                let _ = stopped.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ));
        RunningDaemon {
            stop: Some(stop),
            ready: Some(ready),
            task,
        }
    }
}

/// A daemon serving in this process.
#[derive(Debug)]
pub struct RunningDaemon {
    stop: Option<oneshot::Sender<()>>,
    ready: Option<oneshot::Receiver<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningDaemon {
    /// Waits until it serves; `Err` if it failed to start.
    pub async fn ready(&mut self) -> Result<(), ServeError> {
        if let Some(ready) = self.ready.take()
            && ready.await.is_err()
        {
            // `ready` was dropped unsent: start-up failed; say why.
            return self.wait().await;
        }
        Ok(())
    }

    /// Stops it gracefully and waits until it has (the store flushed, the
    /// admin socket removed).
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    async fn wait(&mut self) -> Result<(), ServeError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Server {
                what: "daemon",
                reason: join.to_string(),
            }),
        }
    }
}
