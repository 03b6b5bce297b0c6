//! The daemon: binds nothing itself, but runs every server and background
//! task on the listeners it is given until `shutdown` completes, so tests
//! can start it on ephemeral ports (mini-redis' `server::run`).
//!
//! Owns: the gRPC server over TLS (with the standard health service), the
//! admin server on the Unix socket, the HTTP server, the serving
//! certificate's rotation, the CRL's refresh, the purge of expired join
//! tokens, the change-feed follower and its minutely catch-up, and the
//! health reporter. Background tasks stop with the servers.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::api::admin::{AdminAccess, AdminApi};
use crate::api::connections::{self, Admission, ConnectionSettings};
use crate::api::proto::admin_server::AdminServer;
use crate::api::proto::certificate_authority_server::CertificateAuthorityServer;
use crate::api::{self, tls, workload::WorkloadApi};
use crate::authority::Authority;
use crate::config::Config;
use crate::fsutil;

/// Lifetime of certd's own serving certificate; it is renewed at half-life.
pub(crate) const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often expired join tokens and revocation entries are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// Longest time one RPC may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness is checked for the gRPC health service.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the caches are compared with the store, the change feed's
/// fallback (see `catch_up_periodically`).
const CATCH_UP_INTERVAL: Duration = Duration::from_secs(60);
/// How soon a failed background renewal (serving certificate, CRL) retries.
const RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutdown waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the daemon looks for a rotated intermediate in its data
/// directory (a few file stats).
const ROTATION_POLL: Duration = Duration::from_secs(5);
/// Added to the longest lifetime when the previous intermediate's last
/// certificate expires: signatures taken just before a rotation was seen.
const ROTATION_MARGIN: Duration = Duration::from_secs(60);

/// How long a certificate signed now may live at most: until then, the
/// intermediate that signed it keeps answering for it after a rotation.
pub(crate) fn longest_certificate_lifetime(config: &Config) -> Duration {
    config.lifetimes.max_cert_ttl.max(SERVING_CERT_TTL) + ROTATION_MARGIN
}
/// Concurrent RPCs on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {what} on {address}")]
    Bind {
        what: &'static str,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another certd is already serving on {0}")]
    AlreadyRunning(String),
    /// `--data-dir` names no directory, and this one may not be made.
    #[error(
        "data directory {0} does not exist: make a CA there with `certd init --data-dir {0}` (or create the directory to have certd serve make one with the defaults); is the path mistyped?"
    )]
    NoDataDirectory(String),
    #[error(transparent)]
    Certd(#[from] crate::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("serving certificate key")]
    Key(#[from] rcgen::Error),
    #[error("{what} server failed: {reason}")]
    Server { what: &'static str, reason: String },
}

impl ServeError {
    /// The one classification (`crate::ErrorKind`) of this failure.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            ServeError::Certd(error) => error.kind(),
            ServeError::NoDataDirectory(_) => crate::ErrorKind::NotFound,
            ServeError::Bind { .. }
            | ServeError::AlreadyRunning(_)
            | ServeError::Tls(_)
            | ServeError::Key(_)
            | ServeError::Server { .. } => crate::ErrorKind::Internal,
        }
    }
}

/// The sockets the daemon serves on.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub admin: UnixListener,
    pub admin_path: PathBuf,
    /// The bundle endpoint's own TLS listener, if configured.
    pub bundle: Option<TcpListener>,
}

/// The TCP listeners, bound before anything is written to the data
/// directory, so a busy port fails start-up before it creates a CA.
#[derive(Debug)]
pub(crate) struct TcpListeners {
    grpc: TcpListener,
    http: TcpListener,
    bundle: Option<TcpListener>,
}

impl TcpListeners {
    /// The HTTP listener's bound address (its port, when 0 was asked).
    pub fn http_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.http.local_addr()
    }

    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let bundle = match &config.federation.bundle_endpoint {
            Some(endpoint) => Some(bind_tcp("bundle endpoint", endpoint.address).await?),
            None => None,
        };
        Ok(TcpListeners {
            grpc: bind_tcp("gRPC", config.grpc_addr).await?,
            http: bind_tcp("HTTP", config.http_addr).await?,
            bundle,
        })
    }

    /// Adds `DATA_DIR/admin.sock` (mode 0600): bound once the database is
    /// held, so a second `serve` on the same directory never touches the
    /// first one's socket.
    pub async fn with_admin_socket(
        self,
        data_dir: &crate::DataDir,
    ) -> Result<Listeners, ServeError> {
        let admin_path = data_dir.admin_socket();
        let admin = bind_admin_socket(&admin_path).await?;
        Ok(Listeners {
            grpc: self.grpc,
            http: self.http,
            admin,
            admin_path,
            bundle: self.bundle,
        })
    }
}

async fn bind_tcp(
    what: &'static str,
    address: std::net::SocketAddr,
) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind {
            what,
            address: address.to_string(),
            source,
        })
}

async fn bind_admin_socket(path: &Path) -> Result<UnixListener, ServeError> {
    let bind_error = |source| ServeError::Bind {
        what: "admin socket",
        address: path.display().to_string(),
        source,
    };
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::AlreadyRunning(path.display().to_string()));
        }
        // A socket left behind by a daemon that died: nobody listens on it.
        std::fs::remove_file(path).map_err(bind_error)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    // The data directory is 0700, so nobody else could reach the socket in
    // the moment before this narrows it further.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(fsutil::SECRET_FILE_MODE),
    )
    .map_err(bind_error)?;
    Ok(listener)
}

/// Asks a serving certd to look at its data directory now rather than at
/// its next poll: a prepared intermediate is promoted at once (`certd
/// serve` does this on SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct Reload(Arc<tokio::sync::Notify>);

impl Reload {
    /// Look now (or, if a look is under way, once more right after it).
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// Runs certd until `shutdown` completes, then stops every server gracefully.
/// `ready` is called once everything is set up, just before serving.
pub async fn run(
    authority: Authority,
    config: &Config,
    listeners: Listeners,
    reload: Reload,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let serving = Arc::new(issue_serving_certificate(&authority, &config.server_names).await?);
    let tls_config = Arc::new(tls::server_config(authority.ca_handle(), serving.clone())?);
    // Publish a CRL before answering anything, so the first request for it
    // finds one and the CRL number moves forward at every start.
    authority
        .revocations()
        .refresh_crl()
        .await
        .map_err(crate::Error::from)?;
    for attestor in authority.attestors().iter() {
        attestor.prepare().await;
    }
    authority.subject_issuers().prepare().await;
    if config.acme.enabled && config.acme.testing.is_some() {
        tracing::warn!(
            "[acme.testing] is set: ACME challenges connect where the test settings say, loopback included; never use this in production"
        );
    }
    ready();
    let max_request_bytes = config.limits.max_request_bytes;
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };

    let workload = CertificateAuthorityServer::new(WorkloadApi::new(authority.clone()))
        .max_decoding_message_size(max_request_bytes);
    // Operators with a certificate listed in `admins` reach the admin API on
    // the same TLS port; everyone else is refused by `AdminAccess::Mtls`.
    let remote_admin = AdminServer::new(AdminApi::new(authority.clone(), AdminAccess::Mtls))
        .max_decoding_message_size(max_request_bytes);
    let (grpc_admission, http_admission) = admissions(&config.connections);
    let (health, health_service) = tonic_health::server::health_reporter();
    // The OAuth token endpoint shares the TLS port, its certificate and its
    // client-certificate check; HTTP/1.1 is accepted for it. So does the
    // SPIFFE bundle endpoint (federation's `https_spiffe` profile).
    let tls_routes = tonic::service::Routes::new(health_service)
        .add_service(workload)
        .add_service(remote_admin)
        .into_axum_router()
        .merge(api::oauth::router(authority.clone()))
        .merge(api::acme::router(authority.clone()))
        .merge(api::http::bundle_endpoint_router(authority.clone()));
    let grpc = Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .accept_http1(true)
        .layer(api::grpc_metrics::GrpcMetricsLayer)
        .add_routes(tonic::service::Routes::from(tls_routes))
        .serve_with_incoming_shutdown(
            tls::incoming(listeners.grpc, tls_config, grpc_admission),
            until_stopped(),
        );

    let admin = AdminServer::new(AdminApi::new(authority.clone(), AdminAccess::LocalSocket))
        .max_decoding_message_size(max_request_bytes);
    let admin = Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .layer(api::grpc_metrics::GrpcMetricsLayer)
        .add_service(admin)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listeners.admin), until_stopped());

    let http = async {
        api::http::serve(
            listeners.http,
            api::http::router(authority.clone()),
            http_admission,
            config.connections.header_read_timeout,
            until_stopped(),
        )
        .await;
        Ok::<(), std::convert::Infallible>(())
    };

    // The bundle endpoint's own listener: the operator's certificate
    // (https_web), or certd's serving certificate (https_spiffe).
    let bundle_endpoint = match (listeners.bundle, &config.federation.bundle_endpoint) {
        (Some(listener), Some(settings)) => {
            let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match &settings.certificate
            {
                Some((certificate, key)) => Arc::new(
                    api::bundle_endpoint::OperatorCertificate::load(certificate, key).map_err(
                        |reason| ServeError::Server {
                            what: "bundle endpoint",
                            reason,
                        },
                    )?,
                ),
                None => serving.clone(),
            };
            Some(tokio::spawn(api::bundle_endpoint::serve(
                listener,
                api::http::bundle_endpoint_router(authority.clone()),
                resolver,
                Admission::new("bundle endpoint", &config.connections, 256),
                config.connections.header_read_timeout,
                until_stopped(),
            )))
        }
        _ => None,
    };

    // Told when the intermediates change, so certd's own certificate
    // chains to the new one (and, after a root rotation, the new root).
    let renew_serving = Arc::new(tokio::sync::Notify::new());
    let rotation = tokio::spawn(rotate_serving_certificate(
        authority.clone(),
        config.server_names.clone(),
        serving,
        renew_serving.clone(),
        until_stopped(),
    ));
    let purge = tokio::spawn(purge_expired(
        authority.clone(),
        config.retention,
        until_stopped(),
    ));
    let crl = tokio::spawn(refresh_crl(authority.clone(), until_stopped()));
    let ca_expiry = tokio::spawn(watch_ca_expiry(authority.clone(), until_stopped()));
    let intermediates = tokio::spawn(watch_intermediates(
        authority.clone(),
        config.auto_rotate_intermediate,
        longest_certificate_lifetime(config),
        renew_serving,
        reload,
        until_stopped(),
    ));
    let changes = tokio::spawn({
        let authority = authority.clone();
        crate::authority::follow(
            authority.store().changes(),
            until_stopped(),
            move |update| {
                let authority = authority.clone();
                async move { authority.apply_change(update).await }
            },
        )
    });
    let catch_up = tokio::spawn(catch_up_periodically(authority.clone(), until_stopped()));
    let service_expiries = tokio::spawn(load_service_expiries(authority.clone(), until_stopped()));
    let health = tokio::spawn(report_health(authority.clone(), health, until_stopped()));
    let probe = tokio::spawn(probe_store(authority.clone(), until_stopped()));
    let federation = tokio::spawn(refresh_federations(authority.clone(), until_stopped()));
    let attestor_upkeep: Vec<_> = authority
        .attestors()
        .iter()
        .map(|attestor| {
            let (attestor, stopped) = (attestor.clone(), Box::pin(until_stopped()));
            tokio::spawn(async move { attestor.maintain(stopped).await })
        })
        .chain(
            authority
                .subject_issuers()
                .fetched_keys()
                .into_iter()
                .map(|keys| {
                    let stopped = until_stopped();
                    tokio::spawn(async move { keys.keep_fresh(stopped).await })
                }),
        )
        .collect();

    let servers = async {
        let (grpc, admin, http) = tokio::join!(grpc, admin, http);
        grpc.map_err(|e| server_error("gRPC", &e))?;
        admin.map_err(|e| server_error("admin", &e))?;
        http.map_err(|e| server_error("HTTP", &e))
    };
    tokio::pin!(servers);
    let result = tokio::select! {
        // The servers only end by themselves on an error.
        result = &mut servers => result,
        () = shutdown => {
            tracing::info!("shutting down");
            let _ = stop.send(true);
            // In-flight requests finish; a client that keeps its connection
            // open past the grace period does not keep certd alive.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut servers).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("connections still open after the grace period; closing them");
                    Ok(())
                }
            }
        }
    };
    let _ = stop.send(true);
    if !authority
        .finish_requests_run_to_completion(SHUTDOWN_GRACE)
        .await
    {
        tracing::warn!(
            "a revocation whose caller went away was still running after the grace period; \
             what it revoked is durable, its audit entries may be missing"
        );
    }
    let _ = tokio::join!(
        rotation,
        purge,
        crl,
        ca_expiry,
        intermediates,
        changes,
        catch_up,
        health,
        probe,
        service_expiries,
        federation
    );
    for task in attestor_upkeep {
        let _ = task.await;
    }
    if let Some(task) = bundle_endpoint {
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&listeners.admin_path);
    authority
        .store()
        .flush()
        .await
        .map_err(crate::Error::from)?;
    result
}

/// The connection caps of the gRPC and HTTP listeners. Unless configured,
/// each listener may use half of the descriptors left after a reserve, so
/// a flood on both still leaves the admin socket and the database room.
fn admissions(settings: &ConnectionSettings) -> (Admission, Admission) {
    let descriptors = connections::raise_descriptor_limit();
    let budget = connections::default_max_per_listener(descriptors);
    let max_per_listener = settings.max_per_listener.unwrap_or(budget);
    if max_per_listener > budget {
        tracing::warn!(
            max_per_listener,
            descriptors,
            "connections.max_per_listener exceeds what the file-descriptor limit leaves for each listener; a flood could starve the admin socket"
        );
    }
    (
        Admission::new("gRPC", settings, max_per_listener),
        Admission::new("HTTP", settings, max_per_listener),
    )
}

fn server_error(what: &'static str, error: &dyn std::fmt::Display) -> ServeError {
    ServeError::Server {
        what,
        reason: error.to_string(),
    }
}

async fn issue_serving_certificate(
    authority: &Authority,
    names: &[String],
) -> Result<tls::ServingCertificate, ServeError> {
    let (chain, key) = new_serving_material(authority, names).await?;
    Ok(tls::ServingCertificate::new(chain, key)?)
}

async fn new_serving_material(
    authority: &Authority,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), ServeError> {
    let key = rcgen::KeyPair::generate()?;
    let issued = authority
        .issue_serving_certificate(&key, names, SERVING_CERT_TTL)
        .await?;
    let chain = vec![
        CertificateDer::from(issued.record.der.clone()),
        authority.ca().signer_of(&issued.record.der).der().clone(),
    ];
    Ok((chain, key.serialize_der()))
}

async fn rotate_serving_certificate(
    authority: Authority,
    names: Vec<String>,
    serving: Arc<tls::ServingCertificate>,
    renew_now: Arc<tokio::sync::Notify>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut wait = SERVING_CERT_TTL / 2;
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = authority.clock().sleep(wait) => {}
            () = renew_now.notified() => {}
        }
        let renewed = match new_serving_material(&authority, &names).await {
            Ok((chain, key)) => serving.replace(chain, key).map_err(ServeError::from),
            Err(error) => Err(error),
        };
        wait = match renewed {
            Ok(()) => {
                tracing::info!("serving certificate renewed");
                SERVING_CERT_TTL / 2
            }
            Err(error) => {
                // Half the lifetime is left: retry soon rather than at the
                // next half-life, when the certificate would have expired.
                tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot renew the serving certificate; retrying in a minute");
                RETRY_INTERVAL
            }
        };
    }
}

/// Rebuilds the CRL every `crl_refresh` (at most half its validity), so
/// the one served always has most of its validity left even when nothing
/// is revoked. Replicas on
/// one database wake a few random seconds apart, so the first signs and
/// the others serve its CRL (`current_crl` adopts it) instead of each
/// signing one.
async fn refresh_crl(authority: Authority, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        let now = authority.now();
        // Up to a tenth of the refresh interval (at most 25 s).
        let spread = (authority.revocations().settings().crl_refresh.as_secs() / 10).clamp(1, 25);
        let mut random = [0u8; 1];
        fsutil::fill_random(&mut random);
        let jitter = i64::from(random[0]) % i64::try_from(spread).unwrap_or(1);
        let wait = authority
            .revocations()
            .crl_refresh_at()
            .map_or(0, |at| (at - now).max(0) + jitter);
        tokio::select! {
            () = &mut stopped => return,
            () = authority.clock().sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(0))) => {}
        }
        if let Err(error) = authority.revocations().current_crl().await {
            tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot refresh the CRL; retrying in a minute");
            tokio::select! {
                () = &mut stopped => return,
                () = authority.clock().sleep(RETRY_INTERVAL) => {}
            }
        }
    }
}

/// Picks up intermediate rotations without a restart: every few seconds,
/// promotes a next intermediate found in the data directory (`certd ca
/// rotate-intermediate`, or made here when `auto_rotate` is on and two
/// thirds of the current one's life have passed), signs with it from then
/// on, and publishes CRLs signed by both. Each failure is logged once, not
/// every round.
async fn watch_intermediates(
    authority: Authority,
    auto_rotate: bool,
    longest_lifetime: Duration,
    renew_serving: Arc<tokio::sync::Notify>,
    reload: Reload,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut last_error = String::new();
    loop {
        let ca = authority.ca();
        let now = authority.now();
        let mut round = Ok(());
        if auto_rotate && ca.rotation_due(now) {
            round = ca.prepare_rotation().map(|next| {
                tracing::info!(
                    subject = %next.subject,
                    "the intermediate has lived two thirds of its life: prepared the next one"
                );
            });
        }
        let round = round
            .and_then(|()| ca.promote_pending(longest_lifetime))
            .and_then(|promoted| {
                if let Some(promoted) = &promoted {
                    tracing::info!(
                        subject = %promoted.subject,
                        previous_until = promoted.previous_until,
                        "promoted the next intermediate; the previous one answers OCSP and signs its CRL until its certificates have expired"
                    );
                }
                ca.reload_signers()
            });
        match round {
            Ok(true) => {
                let signers = ca.signers();
                tracing::info!(
                    key_id = %signers.current.key_id_hex(),
                    previous = signers.previous.as_ref().map(|previous| previous.key_id_hex()),
                    "now signing with a new set of intermediates"
                );
                if let Err(error) = authority.revocations().refresh_crl().await {
                    tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot publish the CRLs of the new intermediates");
                }
                renew_serving.notify_one();
                last_error.clear();
            }
            Ok(false) => last_error.clear(),
            Err(error) => {
                let message = error.to_string();
                if message != last_error {
                    tracing::error!(error = %crate::error_kind::with_causes(&error), "cannot rotate the intermediate; still signing with the current one");
                    last_error = message;
                }
            }
        }
        tokio::select! {
            () = &mut stopped => return,
            // Files that another process writes are polled on the real
            // clock; a jump of the daemon's clock is looked at at once.
            () = authority.clock().tick(ROTATION_POLL) => {}
            () = reload.0.notified() => {}
        }
    }
}

/// Loads each service's newest certificate for the expiry metric, once,
/// beside serving: a large store delays the metric, never a request.
async fn load_service_expiries(authority: Authority, stopped: impl Future<Output = ()>) {
    tokio::select! {
        () = stopped => {}
        loaded = authority.load_service_expiries() => match loaded {
            Ok(services) => tracing::debug!(services, "loaded the services' newest certificates"),
            Err(error) => tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot load the services' newest certificates; their expiry metric starts with the next issuance"),
        },
    }
}

/// Warns, at start and every hour, about what only an operator can renew:
/// the root's CRL missing or near its nextUpdate (only a command run where
/// the root key is signs one, and once it expires every whole-chain checker
/// refuses every client), and the intermediate or root certificate within
/// 30 days of its end (with what to run).
async fn watch_ca_expiry(authority: Authority, stopped: impl Future<Output = ()>) {
    use crate::ca::root_crl::ROOT_CRL_WARNING;
    let warning = ROOT_CRL_WARNING.as_secs() as i64;
    tokio::pin!(stopped);
    loop {
        let now = authority.now();
        match authority.ca().root_crl() {
            None => tracing::warn!(
                "no root CRL (root.crl): relying parties that check whole chains (nginx ssl_crl, HAProxy crl-file) refuse every client; run `certd ca sign-root-crl` where the root key is"
            ),
            Some(crl) if crl.facts.next_update <= now => tracing::error!(
                next_update = crl.facts.next_update,
                "the root CRL has expired: whole-chain checkers refuse every client; run `certd ca sign-root-crl` where the root key is"
            ),
            Some(crl) if crl.facts.next_update - now < warning => tracing::warn!(
                next_update = crl.facts.next_update,
                days_left = (crl.facts.next_update - now) / 86_400,
                "the root CRL expires soon; run `certd ca sign-root-crl` where the root key is"
            ),
            Some(_) => {}
        }
        for (certificate, not_after, what_to_do) in [
            (
                "intermediate",
                authority.ca().intermediate_not_after(),
                "run `certd ca rotate-intermediate` where the root key is (or set [ca] auto_rotate_intermediate)",
            ),
            (
                "root",
                authority.ca().root_not_after(),
                "run `certd ca rotate-root` where the root key is, and follow the root rotation in docs/operations/ca-rotation.md",
            ),
        ] {
            if not_after - now < warning {
                tracing::warn!(
                    certificate,
                    not_after,
                    days_left = (not_after - now) / 86_400,
                    "a CA certificate expires within 30 days; {what_to_do}"
                );
            }
        }
        tokio::select! {
            () = &mut stopped => return,
            () = authority.clock().sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Keeps the standard gRPC health service (`grpc.health.v1.Health`) true
/// to `Authority::readiness`, for the whole server ("") and for
/// `certd.v1.CertificateAuthority`, checking every `HEALTH_INTERVAL`.
async fn report_health(
    authority: Authority,
    reporter: tonic_health::server::HealthReporter,
    stopped: impl Future<Output = ()>,
) {
    use tonic_health::ServingStatus;
    tokio::pin!(stopped);
    let mut reported = None;
    loop {
        let readiness = authority.readiness();
        let status = match &readiness {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if reported != Some(status) {
            for service in ["", "certd.v1.CertificateAuthority"] {
                reporter.set_service_status(service, status).await;
            }
            if let Err(reason) = &readiness {
                tracing::warn!(%reason, "not ready: the health service says NOT_SERVING");
            } else if reported.is_some() {
                tracing::info!("ready again: the health service says SERVING");
            }
            reported = Some(status);
        }
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}

/// Probes the store every `PROBE_INTERVAL`, so that readiness notices a
/// store that hangs (`authority::readiness`).
async fn probe_store(authority: Authority, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = authority.probe_store() => {}
        }
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(crate::authority::readiness::PROBE_INTERVAL) => {}
        }
    }
}

/// How long the federation refresh task waits at most before it reads the
/// relationships again (another replica may have added one while the feed
/// was down).
const FEDERATION_LOOK_INTERVAL: Duration = Duration::from_secs(5);

/// Fetches each federation relationship's bundle when it is due (its
/// refresh hint, or its backoff after failures), and at once when a
/// relationship is added. A fetch in flight is bounded (`FETCH_TIMEOUT`),
/// so shutdown never waits long for one.
async fn refresh_federations(authority: Authority, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = authority.refresh_due_federations() => {}
        }
        let wait = authority.next_federation_refresh(FEDERATION_LOOK_INTERVAL);
        tokio::select! {
            () = &mut stopped => return,
            () = authority.clock().tick(wait) => {}
            () = authority.federation_changed() => {}
        }
    }
}

/// The change feed's fallback: every `CATCH_UP_INTERVAL`, brings the caches
/// up to what the store holds (`Authority::catch_up`), in case another
/// process's change was lost without the feed noticing.
async fn catch_up_periodically(authority: Authority, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    let mut known_revoked = None;
    loop {
        if let Err(error) = authority.catch_up(&mut known_revoked).await {
            tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot compare the caches with the store; retrying later");
        }
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(CATCH_UP_INTERVAL) => {}
        }
    }
}

/// Deletes expired join tokens, ACME orders, authorizations and nonces,
/// and drops expired certificates from the revocation index, so none grows
/// without bound.
async fn purge_expired(
    authority: Authority,
    retention: crate::retention::RetentionSettings,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = authority.clock().sleep(PURGE_INTERVAL) => {}
        }
        let now = authority.now();
        match authority.store().purge_expired_tokens(now).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted expired join tokens"),
            Err(error) => {
                tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot purge expired join tokens")
            }
        }
        if let Err(error) = authority.store().prune_expired_revocations(now).await {
            tracing::warn!(error = %crate::error_kind::with_causes(&error), "cannot prune the revocation index");
        }
        // Kept a while past their expiry: a replica whose clock is behind
        // still takes a nonce this one thinks expired, so its record of
        // being used must outlive that.
        let margin = crate::acme::nonce::PURGE_MARGIN_SECONDS;
        match authority
            .store()
            .purge_expired_acme(now.saturating_sub(margin))
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted expired ACME orders and nonces"),
            Err(error) => tracing::warn!(%error, "cannot purge expired ACME state"),
        }
        // A pass may take a while on a large backlog: stopping cuts it
        // between steps (each step is atomic).
        tokio::select! {
            () = &mut stopped => return,
            _ = crate::retention::purge(&authority, &retention) => {}
        }
    }
}
