//! The agent's side of talking to certd: its own node identity (bootstrap
//! once, then renewal at half-life) and the sync loop that keeps an SVID
//! ready for every entry parented to it.
//!
//! Owns the node identity files in the agent's data directory and is the
//! only writer of the `cache`. When certd cannot be reached it keeps
//! everything it has (SVIDs stay served until they expire), logs how long
//! the earliest one has left, and retries with backoff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::cache::{Cache, ServedEntry, Snapshot, Svid};
use crate::api::client::{
    AgentEntries, ClientError, IssuedCertificate, TlsClientSettings, WorkloadClient, identity_dir,
};
use crate::clock::{Clock, SharedClock, unix_seconds};
use crate::selector::Selector;

/// Longest wait between failed syncs.
const LONGEST_RETRY: Duration = Duration::from_secs(30);

/// How the agent proves itself the first time.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    JoinToken(Zeroizing<String>),
    /// A Kubernetes projected service-account token, read when needed.
    KubernetesTokenFile(PathBuf),
}

/// Why the agent could not sync or start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "{dir} holds no current agent certificate and no --token or --k8s-token-file was given; create a join token for the agent's entry (certd token create --entry ID) and pass it"
    )]
    NoIdentity { dir: String },
    /// A file or socket of the agent's could not be used.
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate a key")]
    Key(#[source] rcgen::Error),
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the Workload API server failed")]
    Server(#[source] tonic::transport::Error),
    /// What the agent holds or was given is not what it needs; the
    /// message says what, and what to do.
    #[error("{0}")]
    Files(String),
}

impl AgentError {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            AgentError::Client(error) => error.kind(),
            AgentError::NoIdentity { .. } => crate::ErrorKind::InvalidInput,
            AgentError::Io { .. }
            | AgentError::Key(_)
            | AgentError::Metrics { .. }
            | AgentError::Server(_)
            | AgentError::Files(_) => crate::ErrorKind::Internal,
        }
    }
}

/// The agent's own certificate, as held in memory.
struct NodeIdentity {
    chain_pem: String,
    key_pem: Zeroizing<String>,
    spiffe_id: String,
    not_after: i64,
    renew_at: i64,
}

/// Talks to certd for the agent.
pub(crate) struct Syncer {
    server: String,
    ca_bundle_pem: String,
    data_dir: PathBuf,
    node: NodeIdentity,
    cache: Cache,
    sync_interval: Duration,
    /// What the Workload API uses to ask certd for JWT-SVIDs; the syncer
    /// gives it each renewed node identity.
    certd: Certd,
    clock: SharedClock,
}

/// certd as the Workload API reaches it, for JWT-SVIDs (minted on demand,
/// remembered until half their lifetime).
#[derive(Clone)]
pub(crate) struct Certd {
    server: String,
    /// The roots certd's own certificate is checked against: shared with
    /// the syncer, which replaces them when certd's bundle changes.
    ca_bundle_pem: Arc<std::sync::RwLock<String>>,
    /// Chain and key PEM of the node identity.
    identity: Arc<std::sync::RwLock<(String, Zeroizing<String>)>>,
    /// By entry and audiences: a token and when to stop reusing it (half
    /// its lifetime).
    minted: Arc<std::sync::Mutex<RememberedTokens>>,
    clock: SharedClock,
}

type RememberedTokens = BTreeMap<(String, Vec<String>), (crate::api::client::MintedToken, i64)>;

/// Most JWT-SVIDs remembered.
const MAX_REMEMBERED_TOKENS: usize = 4096;

impl Certd {
    /// A JWT-SVID for entry `entry_id` and `audiences` (sorted), from
    /// memory while the one held is in the first half of its life.
    pub async fn jwt_svid(
        &self,
        entry_id: &str,
        audiences: &[String],
    ) -> Result<crate::api::client::MintedToken, AgentError> {
        let mut key_audiences = audiences.to_vec();
        key_audiences.sort();
        key_audiences.dedup();
        let key = (entry_id.to_owned(), key_audiences);
        let now = self.clock.unix_now();
        if let Some((held, reuse_until)) = self.remembered().get(&key)
            && now < *reuse_until
        {
            return Ok(held.clone());
        }
        let (chain, private_key) = {
            let identity = self.identity.read().unwrap_or_else(|p| p.into_inner());
            (identity.0.clone(), identity.1.clone())
        };
        let tls = TlsClientSettings {
            ca_bundle_pem: self
                .ca_bundle_pem
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            identity: Some((chain, private_key)),
        };
        let minted = WorkloadClient::connect(&self.server, &tls)
            .await?
            .mint_jwt_for_agent(entry_id, &key.1, None)
            .await?;
        let mut remembered = self.remembered();
        if remembered.len() >= MAX_REMEMBERED_TOKENS {
            remembered.retain(|_, (_, reuse_until)| *reuse_until > now);
            if remembered.len() >= MAX_REMEMBERED_TOKENS {
                remembered.clear();
            }
        }
        remembered.insert(key, (minted.clone(), half_life(now, minted.expires_at)));
        Ok(minted)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, RememberedTokens> {
        self.minted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_identity(&self, node: &NodeIdentity) {
        super::metrics::get().identity_not_after.set(node.not_after);
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) =
            (node.chain_pem.clone(), node.key_pem.clone());
    }
}

impl Syncer {
    /// Loads the node identity from `data_dir`, or bootstraps one with
    /// `bootstrap` when there is none (or it expired).
    pub async fn start(
        server: String,
        ca_bundle_pem: String,
        data_dir: PathBuf,
        bootstrap: Option<Bootstrap>,
        cache: Cache,
        sync_interval: Duration,
        clock: SharedClock,
    ) -> Result<Self, AgentError> {
        let node = match load_node_identity(&data_dir, clock.unix_now())? {
            Some(node) => node,
            None => {
                let Some(bootstrap) = bootstrap else {
                    return Err(AgentError::NoIdentity {
                        dir: data_dir.display().to_string(),
                    });
                };
                bootstrap_node(
                    &server,
                    &ca_bundle_pem,
                    &data_dir,
                    &bootstrap,
                    clock.as_ref(),
                )
                .await?
            }
        };
        tracing::info!(agent = %node.spiffe_id, not_after = node.not_after, "agent identity ready");
        // The bundle certd gave last (kept beside the identity) as well as
        // the one configured: after a root rotation, certd's certificate
        // chains only to the new root, which the configured file may lack.
        let ca_bundle_pem = match std::fs::read_to_string(data_dir.join("bundle.pem")) {
            Ok(kept) if !pem_to_der(&kept).is_empty() => format!("{ca_bundle_pem}\n{kept}"),
            _ => ca_bundle_pem,
        };
        super::metrics::get().identity_not_after.set(node.not_after);
        let certd = Certd {
            server: server.clone(),
            ca_bundle_pem: Arc::new(std::sync::RwLock::new(ca_bundle_pem.clone())),
            identity: Arc::new(std::sync::RwLock::new((
                node.chain_pem.clone(),
                node.key_pem.clone(),
            ))),
            minted: Arc::default(),
            clock: clock.clone(),
        };
        Ok(Syncer {
            server,
            ca_bundle_pem,
            data_dir,
            node,
            cache,
            sync_interval,
            certd,
            clock,
        })
    }

    pub fn spiffe_id(&self) -> &str {
        &self.node.spiffe_id
    }

    /// certd for the Workload API's JWT-SVIDs.
    pub fn certd(&self) -> Certd {
        self.certd.clone()
    }

    /// Syncs until the task is dropped: at every interval, sooner when an
    /// SVID is due, with backoff after failures.
    pub async fn run(mut self) {
        let mut retry = Duration::from_secs(1);
        loop {
            let wait = match self.sync_once().await {
                Ok(()) => {
                    retry = Duration::from_secs(1);
                    self.next_wait()
                }
                Err(error) => {
                    self.log_failure(&error);
                    let wait = retry;
                    retry = (retry * 2).min(LONGEST_RETRY.max(self.sync_interval));
                    wait.min(self.next_wait().max(Duration::from_secs(1)))
                }
            };
            // A renewal falls due by the time of day; certd is asked again
            // at least every interval of real time.
            self.clock.tick(wait).await;
        }
    }

    fn log_failure(&self, error: &AgentError) {
        let now = self.clock.unix_now();
        let earliest = self
            .cache
            .current()
            .svids
            .values()
            .map(|svid| svid.not_after)
            .min();
        tracing::warn!(
            error = %crate::error_kind::with_causes(&error),
            agent_certificate_left_s = self.node.not_after - now,
            earliest_svid_left_s = earliest.map(|t| t - now),
            "cannot sync with certd; serving what is cached"
        );
    }

    /// Until the next sync: the interval, or sooner when an SVID or the
    /// node identity is due for renewal.
    fn next_wait(&self) -> Duration {
        let now = self.clock.unix_now();
        let snapshot = self.cache.current();
        let due = snapshot
            .svids
            .values()
            .map(|svid| svid.renew_at)
            .chain([self.node.renew_at])
            .min()
            .unwrap_or(i64::MAX);
        let until_due = Duration::from_secs(u64::try_from(due - now).unwrap_or(0));
        self.sync_interval
            .min(until_due)
            .max(Duration::from_millis(200))
    }

    /// One round (see `round`), counted in the metrics.
    pub async fn sync_once(&mut self) -> Result<(), AgentError> {
        let result = self.round().await;
        super::metrics::get().sync(result.is_ok(), self.clock.unix_now());
        result
    }

    /// One round: renew the node identity if due, fetch the entries and
    /// bundle, get an SVID for every entry lacking a fresh one, publish.
    async fn round(&mut self) -> Result<(), AgentError> {
        let now = self.clock.unix_now();
        if now >= self.node.renew_at {
            self.renew_node().await?;
        }
        let mut client = self.connect().await?;
        let listed = client.agent_entries().await?;
        self.adopt_bundle(&listed.trust_bundle_pem);
        let previous = self.cache.current();
        let entries = served_entries(&listed);
        let mut svids: BTreeMap<String, Svid> = previous
            .svids
            .iter()
            .filter(|(id, svid)| {
                entries
                    .iter()
                    .any(|e| &e.id == *id && e.spiffe_id == svid.spiffe_id)
            })
            .map(|(id, svid)| (id.clone(), svid.clone()))
            .collect();
        let mut failure = None;
        for entry in &entries {
            let fresh = svids.get(&entry.id).is_some_and(|svid| now < svid.renew_at);
            if fresh {
                continue;
            }
            match issue_svid(&mut client, &entry.id, self.clock.unix_now()).await {
                Ok(svid) => {
                    tracing::info!(entry = %entry.id, spiffe_id = %svid.spiffe_id, serial = %svid.serial, "SVID ready");
                    svids.insert(entry.id.clone(), svid);
                }
                // Keep what is held; the next round tries again.
                Err(error) => failure = Some(error),
            }
        }
        let jwt_keys = crate::jwt::JwkSet::parse(&listed.jwt_keys_jwks).unwrap_or_else(|error| {
            tracing::warn!(%error, "certd sent no usable JWT keys; keeping the previous ones");
            previous.jwt_keys.clone()
        });
        let snapshot = Snapshot {
            trust_domain: listed.trust_domain.clone(),
            bundle_der: pem_to_der(&listed.trust_bundle_pem),
            entries,
            svids,
            jwt_keys,
            federated: foreign_bundles(&listed),
        };
        if changed(&previous, &snapshot) {
            self.cache.publish(snapshot);
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Trusts certd's bundle, as it just sent it over a connection verified
    /// with the bundle held, for reaching certd from now on, and keeps it
    /// in the data directory for the next start: a root rotation then
    /// never cuts the agent off.
    fn adopt_bundle(&mut self, bundle_pem: &str) {
        if pem_to_der(bundle_pem).is_empty() {
            return;
        }
        if bundle_pem != self.ca_bundle_pem {
            self.ca_bundle_pem = bundle_pem.to_owned();
            *self
                .certd
                .ca_bundle_pem
                .write()
                .unwrap_or_else(|p| p.into_inner()) = bundle_pem.to_owned();
        }
        let path = self.data_dir.join("bundle.pem");
        if std::fs::read_to_string(&path).is_ok_and(|kept| kept == bundle_pem) {
            return;
        }
        match crate::fsutil::replace_file(
            &path,
            bundle_pem.as_bytes(),
            crate::fsutil::PUBLIC_FILE_MODE,
        ) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "certd's trust bundle changed; reaching certd with it from now on")
            }
            Err(error) => {
                tracing::warn!(error = %crate::error_kind::with_causes(&error), path = %path.display(), "cannot keep certd's new trust bundle; reaching certd with it until the next start")
            }
        }
    }

    async fn connect(&self) -> Result<WorkloadClient, AgentError> {
        let tls = TlsClientSettings {
            ca_bundle_pem: self.ca_bundle_pem.clone(),
            identity: Some((self.node.chain_pem.clone(), self.node.key_pem.clone())),
        };
        Ok(WorkloadClient::connect(&self.server, &tls).await?)
    }

    async fn renew_node(&mut self) -> Result<(), AgentError> {
        let (key, csr_der) = key_and_csr()?;
        let issued = self.connect().await?.renew(csr_der).await?;
        write_files(&self.data_dir, &key, &issued)?;
        self.node = node_identity(&issued, &key, self.clock.unix_now())?;
        self.certd.set_identity(&self.node);
        tracing::info!(agent = %self.node.spiffe_id, serial = %issued.serial, "agent certificate renewed");
        Ok(())
    }
}

/// The entries as served: selectors parsed (an entry with a selector this
/// agent does not understand is skipped, never half-matched).
fn served_entries(listed: &AgentEntries) -> Vec<ServedEntry> {
    listed
        .entries
        .iter()
        .filter_map(|entry| {
            let selectors: Result<Vec<Selector>, String> = entry
                .selectors
                .iter()
                .map(|s| crate::attest::parse_selector(s))
                .collect();
            match selectors {
                Ok(mut selectors) => {
                    selectors.sort();
                    Some(ServedEntry {
                        id: entry.id.clone(),
                        spiffe_id: entry.spiffe_id.clone(),
                        selectors,
                        federates_with: entry.federates_with.clone(),
                    })
                }
                Err(error) => {
                    tracing::warn!(entry = %entry.id, %error, "entry skipped");
                    None
                }
            }
        })
        .collect()
}

/// The foreign bundles certd sent, by trust domain: roots split into
/// certificates, JWT keys parsed (a bundle whose roots do not parse is
/// left out, never half-served).
fn foreign_bundles(listed: &AgentEntries) -> BTreeMap<String, super::cache::ForeignBundle> {
    listed
        .federated_bundles
        .iter()
        .filter_map(|bundle| {
            let roots_der = match crate::federation::bundle::split_certificates(&bundle.roots_der) {
                Some(roots) => roots,
                None => {
                    tracing::warn!(trust_domain = %bundle.trust_domain, "certd sent a foreign bundle whose roots do not parse; left out");
                    return None;
                }
            };
            let jwt_keys = crate::jwt::JwkSet::parse(&bundle.jwt_keys_jwks).unwrap_or_default();
            Some((
                bundle.trust_domain.clone(),
                super::cache::ForeignBundle {
                    roots_der,
                    jwt_keys,
                },
            ))
        })
        .collect()
}

/// Whether a workload would see a difference.
fn changed(old: &Snapshot, new: &Snapshot) -> bool {
    old.federated != new.federated
        || old.trust_domain != new.trust_domain
        || old.bundle_der != new.bundle_der
        || old.jwt_keys != new.jwt_keys
        || old.entries != new.entries
        || old.svids.len() != new.svids.len()
        || old
            .svids
            .iter()
            .zip(&new.svids)
            .any(|((a_id, a), (b_id, b))| a_id != b_id || a.serial != b.serial)
}

async fn issue_svid(
    client: &mut WorkloadClient,
    entry_id: &str,
    now: i64,
) -> Result<Svid, AgentError> {
    let (key, csr_der) = key_and_csr()?;
    let issued = client.issue_for_agent(entry_id, csr_der).await?;
    Ok(Svid {
        spiffe_id: issued.spiffe_id.clone(),
        chain_der: pem_to_der(&issued.chain_pem),
        key_pkcs8: Arc::new(Zeroizing::new(key.serialize_der())),
        serial: issued.serial.clone(),
        not_after: issued.not_after,
        renew_at: half_life(now, issued.not_after),
    })
}

/// Half-way from `received_at` to `not_after`.
fn half_life(received_at: i64, not_after: i64) -> i64 {
    received_at + (not_after - received_at).max(0) / 2
}

fn key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), AgentError> {
    identity_dir::new_key_and_csr().map_err(AgentError::Key)
}

fn pem_to_der(pem: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect()
}

async fn bootstrap_node(
    server: &str,
    ca_bundle_pem: &str,
    data_dir: &Path,
    bootstrap: &Bootstrap,
    clock: &dyn Clock,
) -> Result<NodeIdentity, AgentError> {
    let (key, csr_der) = key_and_csr()?;
    let tls = TlsClientSettings {
        ca_bundle_pem: ca_bundle_pem.to_owned(),
        identity: None,
    };
    let mut client = WorkloadClient::connect(server, &tls).await?;
    let issued = match bootstrap {
        Bootstrap::JoinToken(token) => client.issue(csr_der, token).await?,
        Bootstrap::KubernetesTokenFile(path) => {
            let token =
                Zeroizing::new(
                    std::fs::read_to_string(path).map_err(|source| AgentError::Io {
                        action: "read",
                        path: path.display().to_string(),
                        source,
                    })?,
                );
            client
                .issue_with_kubernetes_token(csr_der, token.trim())
                .await?
        }
    };
    if !issued.spiffe_id.contains("/agent/") {
        return Err(AgentError::Files(format!(
            "certd issued {} for this token, which is not a node agent's identity; create the entry with --agent",
            issued.spiffe_id
        )));
    }
    write_files(data_dir, &key, &issued)?;
    node_identity(&issued, &key, clock.unix_now())
}

fn write_files(
    dir: &Path,
    key: &rcgen::KeyPair,
    issued: &IssuedCertificate,
) -> Result<(), AgentError> {
    identity_dir::write_identity(dir, key, issued).map_err(|(path, source)| AgentError::Io {
        action: "write",
        path: path.display().to_string(),
        source,
    })
}

fn node_identity(
    issued: &IssuedCertificate,
    key: &rcgen::KeyPair,
    now: i64,
) -> Result<NodeIdentity, AgentError> {
    Ok(NodeIdentity {
        chain_pem: issued.chain_pem.clone(),
        key_pem: Zeroizing::new(key.serialize_pem()),
        spiffe_id: issued.spiffe_id.clone(),
        not_after: issued.not_after,
        renew_at: half_life(now, issued.not_after),
    })
}

/// The node identity kept in `dir`, if it holds one that has not expired.
/// Its renewal is due half-way from when cert.pem was written.
fn load_node_identity(dir: &Path, now: i64) -> Result<Option<NodeIdentity>, AgentError> {
    let cert_path = dir.join("cert.pem");
    let Ok(chain_pem) = std::fs::read_to_string(&cert_path) else {
        return Ok(None);
    };
    let unreadable = |what: String| AgentError::Files(format!("{}: {what}", cert_path.display()));
    let key_pem = Zeroizing::new(
        std::fs::read_to_string(dir.join("key.pem"))
            .map_err(|e| unreadable(format!("its key.pem cannot be read: {e}")))?,
    );
    let der = pem_to_der(&chain_pem)
        .into_iter()
        .next()
        .ok_or_else(|| unreadable("holds no certificate".into()))?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| unreadable(format!("is not a certificate: {e}")))?;
    let not_after = certificate.validity().not_after.timestamp();
    let spiffe_id = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
        })
        .unwrap_or_default();
    if now >= not_after {
        tracing::warn!(path = %cert_path.display(), "the agent certificate expired; bootstrapping again");
        return Ok(None);
    }
    let written = std::fs::metadata(&cert_path)
        .and_then(|meta| meta.modified())
        .map(unix_seconds)
        .unwrap_or(now)
        .min(now);
    Ok(Some(NodeIdentity {
        chain_pem,
        key_pem,
        spiffe_id,
        not_after,
        renew_at: half_life(written, not_after),
    }))
}
