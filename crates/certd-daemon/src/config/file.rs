//! `certd.toml`'s format: what serde reads, every field optional and
//! unknown fields refused. Nothing here checks a value; `ConfigFile::validate`
//! (in the parent module) does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `certd.toml` as written by the operator.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub grpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub server_names: Option<Vec<String>>,
    /// Base URL at which relying parties reach the HTTP listener; the CRL
    /// distribution point and OCSP URL in certificates are built from it.
    pub public_base_url: Option<String>,
    pub issuance: Option<IssuanceSection>,
    pub join_tokens: Option<JoinTokenSection>,
    pub revocation: Option<RevocationSection>,
    pub limits: Option<LimitsSection>,
    pub connections: Option<ConnectionsSection>,
    pub store: Option<StoreSection>,
    /// SPIFFE IDs of operators who may call the admin API over mTLS on the
    /// gRPC port, e.g. "spiffe://certd.internal/operator/alice".
    pub admins: Option<Vec<String>>,
    /// Operators with roles other than admin (`[[operators]]`).
    pub operators: Option<Vec<OperatorSection>>,
    /// Accept Kubernetes projected service-account tokens in `Issue`: the
    /// Kubernetes attestor's section under the name configurations have
    /// always used (the same as `[attestors.kubernetes]`).
    pub kubernetes: Option<toml::Table>,
    /// Each configurable attestor's section, by kind (`[attestors.kubernetes]`);
    /// the attestor reads and checks it (`attest::configured`).
    pub attestors: Option<std::collections::BTreeMap<String, toml::Table>>,
    /// JWT-SVIDs: lifetimes and key rotation.
    pub jwt: Option<JwtSection>,
    /// Federation with other trust domains (`[federation]`).
    pub federation: Option<FederationSection>,
    /// OAuth token exchange (RFC 8693): the trusted subject issuers.
    pub token_exchange: Option<TokenExchangeSection>,
    /// The CA's keys.
    pub ca: Option<CaSection>,
    /// The ACME server (RFC 8555).
    pub acme: Option<AcmeSection>,
    /// How long expired certificate records and audit entries are kept.
    pub retention: Option<RetentionSection>,
    /// Directory relative paths in the file are resolved against: the
    /// file's own directory.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// Admission limits; every rate is per second, and 0 (the default) turns
/// that limit off.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Issuances (Issue and Renew) per second across all callers.
    pub issuance_rate: Option<f64>,
    /// How many may come at once before the rate applies.
    pub issuance_burst: Option<f64>,
    /// Issuances per second for any one service.
    pub service_issuance_rate: Option<f64>,
    pub service_issuance_burst: Option<f64>,
    /// Issue and Renew requests in flight at once; more are refused.
    pub max_concurrent_requests: Option<usize>,
    /// Largest gRPC request message in bytes (default 65536).
    pub max_request_bytes: Option<usize>,
}

/// Where certd keeps its records: sled in the data directory unless `url`
/// names a PostgreSQL database.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `postgresql://user:password@host:port/dbname?sslmode=require`, shared
    /// by every replica (`--database-url`, `CERTD_DATABASE_URL`).
    pub url: Option<String>,
    /// PEM roots for the database server's certificate (default: the
    /// Mozilla roots). Relative to this file.
    pub ca_file: Option<PathBuf>,
    /// How fast a backup taken while certd serves may read the store, e.g.
    /// "16MiB/s" (the default), or "off".
    pub backup_rate: Option<String>,
    /// How many certificate records per second listing pages may read, all
    /// callers together, e.g. "16000/s" (the default), or "off".
    pub list_rate: Option<String>,
}

/// Connection caps and timeouts of the gRPC and HTTP listeners.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsSection {
    /// Open connections on each TCP listener (default: sized from the
    /// file-descriptor limit).
    pub max_per_listener: Option<usize>,
    /// Open connections from one client address (IPv6: one /64) on each
    /// listener (default 256).
    pub max_per_client: Option<usize>,
    /// Close a connection after this long without a byte either way
    /// (default "2m").
    pub idle_timeout: Option<String>,
    /// Close an HTTP connection whose request headers have not all arrived
    /// after this long (default "10s").
    pub header_read_timeout: Option<String>,
}

/// The CA's keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// File whose first line is the passphrase of encrypted CA keys
    /// (`certd init --encrypt-key`); relative to this file. Default: the
    /// environment variable CERTD_KEY_PASSPHRASE_FILE.
    pub key_passphrase_file: Option<PathBuf>,
    /// File whose first line is the user PIN of the PKCS#11 token holding
    /// the intermediate key (`certd init --pkcs11-module`); relative to this
    /// file. Default: the environment variable CERTD_PKCS11_PIN_FILE.
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Whether the daemon rotates the intermediate by itself at two thirds
    /// of its life, signing the next one with the root key in its data
    /// directory. Off by default: it means the root key lives beside the
    /// daemon.
    pub auto_rotate_intermediate: Option<bool>,
}

/// `[token_exchange]`: `[[token_exchange.subject_issuer]]` tables, each
/// checked by `subject_issuers::settings`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeSection {
    #[serde(default, rename = "subject_issuer")]
    pub subject_issuers: Vec<crate::subject_issuers::SubjectIssuerSection>,
}

/// The ACME server (`[acme]`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    /// Whether `/acme/` is served (default true: EAB is required, so
    /// nothing is open by it).
    pub enabled: Option<bool>,
    /// Whether accounts may be made without external account binding.
    pub accounts_without_eab: Option<bool>,
    /// New accounts one source address may make a minute (0: no limit).
    pub new_accounts_per_minute_per_ip: Option<u32>,
    /// New orders one account may make a minute (0: no limit).
    pub new_orders_per_minute_per_account: Option<u32>,
    /// Test-only overrides of where challenges connect.
    pub testing: Option<AcmeTestingSection>,
}

/// `[acme.testing]`: TEST-ONLY, like Pebble's.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeTestingSection {
    /// http-01 connects here instead of 80.
    pub http_port: Option<u16>,
    /// tls-alpn-01 connects here instead of 443.
    pub tls_alpn_port: Option<u16>,
    /// Every name resolves to this address, and loopback is allowed.
    pub resolve_all_to: Option<String>,
    /// The DNS server asked instead of the system's ("127.0.0.1:5353").
    pub dns_server: Option<String>,
}

/// Federation: what certd's own bundle endpoint tells its peers.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// `spiffe_refresh_hint` of certd's bundle: how often peers should
    /// fetch it again (default: half of `[jwt] publish_ahead`).
    pub bundle_refresh_hint: Option<String>,
    /// A TLS listener of its own for the bundle endpoint (e.g.
    /// "0.0.0.0:8444"); none: the bundle is served on the TLS port only.
    pub bundle_endpoint_addr: Option<String>,
    /// The `https_web` certificate chain (PEM) that listener presents; with
    /// `bundle_endpoint_key_file`. None: certd's serving certificate.
    pub bundle_endpoint_certificate_file: Option<PathBuf>,
    pub bundle_endpoint_key_file: Option<PathBuf>,
}

/// JWT-SVIDs.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// Lifetime of a token when the caller asks for none (default "5m").
    pub default_ttl: Option<String>,
    /// Longest lifetime a caller may ask for (default "1h").
    pub max_ttl: Option<String>,
    /// How long each signing key signs before the next takes over
    /// (default "24h").
    pub key_rotation: Option<String>,
    /// How long before it signs a new key is published (default "1h").
    pub publish_ahead: Option<String>,
    /// The signing algorithm: "ES256" (default), "ES384" or "RS256".
    pub algorithm: Option<String>,
    /// The `iss` of every token, an http(s) URL at which
    /// `/.well-known/openid-configuration` reaches certd (default: the
    /// public base URL).
    pub issuer: Option<String>,
    /// The token endpoint's https URL as OAuth clients reach it (default:
    /// `https://<first server name>:<gRPC port>/oauth/token`).
    pub token_endpoint: Option<String>,
}

/// `[retention]`: durations like "30d", or "off" (or "0") to keep for good.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// How long a certificate's record is kept after it expires (default
    /// "30d").
    pub certificates: Option<String>,
    /// How long an audit entry is kept (default "365d").
    pub audit: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSection {
    /// How long a CRL is valid (its nextUpdate), default "24h".
    pub crl_validity: Option<String>,
    /// How often a new CRL is signed even when nothing was revoked (default
    /// "1h"; at most half of crl_validity). Every revocation signs one at once.
    pub crl_refresh: Option<String>,
    /// How long an OCSP answer is valid (its nextUpdate).
    pub ocsp_validity: Option<String>,
    /// How many shards each intermediate's leaf CRL is split into (1 to
    /// 1024, default 1: none). Above 1, every leaf signed from then on names
    /// its shard's URL; the whole CRL is still published.
    pub crl_shards: Option<u64>,
    /// Shard counts leaves were issued with before `crl_shards` changed:
    /// their shards stay published until those leaves expire.
    pub crl_retired_shards: Option<Vec<u64>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceSection {
    /// e.g. "24h".
    pub default_ttl: Option<String>,
    pub max_ttl: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenSection {
    pub default_ttl: Option<String>,
    pub max_ttl: Option<String>,
}

impl ConfigFile {
    /// Reads `path`; an absent `path` means an empty file (all defaults).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut file = Self::parse(&text, path)?;
        file.base_dir = path.parent().map(Path::to_path_buf);
        Ok(file)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    /// Takes the database from the data directory's `database.toml`
    /// (`certd replica import` writes it) when this file names none: the
    /// command line, the environment and `[store] url` come first. A
    /// `[store] ca_file` given here stays; the data directory's file
    /// supplies only what is missing.
    pub fn use_data_dir_database(&mut self, data_dir: &crate::DataDir) -> Result<(), ConfigError> {
        if self.store.as_ref().is_some_and(|store| store.url.is_some()) {
            return Ok(());
        }
        let Some(database) = DatabaseFile::read(&data_dir.database_settings())? else {
            return Ok(());
        };
        let store = self.store.get_or_insert_with(Default::default);
        store.url = Some(database.url);
        if store.ca_file.is_none() {
            // Relative to the data directory, made absolute because
            // `validate` resolves relative paths against this file's own
            // directory.
            store.ca_file = database.ca_file.map(|file| {
                let file = data_dir.root().join(file);
                std::path::absolute(&file).unwrap_or(file)
            });
        }
        Ok(())
    }
}

/// `DATA_DIR/database.toml` (0600: the URL may hold a password): the
/// database this data directory's certd keeps its records in, for a replica
/// set up with `certd replica import`. `--database-url`,
/// `CERTD_DATABASE_URL` and certd.toml's `[store] url` take precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    /// `postgresql://…`, as `[store] url`.
    pub url: String,
    /// PEM roots for the database server's certificate, as `[store]
    /// ca_file`; relative to the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

const DATABASE_FILE_HEADER: &str = "# certd: the database this data directory's certd keeps its records in (written by\n\
# `certd replica import`). --database-url, CERTD_DATABASE_URL and [store] url in certd.toml\n\
# take precedence.\n";

impl DatabaseFile {
    /// Reads the file; `None` if there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string().trim().replace('\n', " "),
            })
    }

    /// Replaces the file atomically, 0600 from its first byte.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let body = toml::to_string(self).map_err(std::io::Error::other)?;
        crate::fsutil::replace_file(
            path,
            format!("{DATABASE_FILE_HEADER}{body}").as_bytes(),
            crate::fsutil::SECRET_FILE_MODE,
        )
    }
}

impl ConfigFile {
    /// An attestor's section written at the top level, under the name
    /// configurations used before `[attestors]` (`[kubernetes]`).
    pub(super) fn top_level_attestor_section(&self, name: &str) -> Option<toml::Table> {
        match name {
            "kubernetes" => self.kubernetes.clone(),
            _ => None,
        }
    }
}

/// One `[[operators]]` table: an operator and the roles it holds.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSection {
    /// The operator certificate's SPIFFE ID,
    /// e.g. "spiffe://certd.internal/operator/ci".
    pub id: Option<String>,
    /// admin, issuer, revoker, auditor.
    pub roles: Option<Vec<String>>,
    /// The services an issuer may issue for.
    pub services: Option<Vec<String>>,
    /// The longest operator certificate it may hold, e.g. "30d"; only for
    /// operators that can neither revoke nor administer.
    pub max_certificate_ttl: Option<String>,
}
