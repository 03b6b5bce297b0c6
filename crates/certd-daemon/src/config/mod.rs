//! The daemon's configuration: `certd.toml`, command-line overrides, and the
//! documented defaults.
//!
//! Loading is two steps: serde reads the file into `ConfigFile` (every field
//! optional, unknown fields refused), then `ConfigFile::validate` produces a
//! `Config` whose errors name the field. Validation never mutates the file's
//! values; defaults are filled in only where a field is absent.
//!
//! `file` holds the file's format; this module the validated settings,
//! their defaults and the checks between the two.

mod file;
mod operators;

pub use file::{
    AcmeSection, ConfigFile, ConnectionsSection, DatabaseFile, FederationSection, IssuanceSection,
    JoinTokenSection, JwtSection, LimitsSection, RevocationSection, StoreSection,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::connections::ConnectionSettings;
use crate::attest::ConfiguredAttestors;
use crate::attest::configured::CONFIGURABLE;
use crate::ca::RevocationUrls;
use crate::ca::crl_shards::{MAX_CRL_SHARDS, ShardCount};
use crate::identity::DnsName;
use crate::limits::{
    DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_REQUEST_BYTES, LimitSettings,
    MIN_MAX_REQUEST_BYTES, Rate,
};
use crate::policy::operator_roles::OperatorRoles;
use crate::revocation::{
    DEFAULT_CRL_REFRESH, DEFAULT_CRL_VALIDITY, DEFAULT_OCSP_VALIDITY, RevocationSettings,
};
use crate::store::StoreSettings;

/// Lifetime of workload certificates when the caller asks for none.
pub(crate) const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest workload certificate certd issues unless configured otherwise.
pub(crate) const DEFAULT_MAX_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of a join token when the operator asks for none.
pub(crate) const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest join token certd creates unless configured otherwise.
pub(crate) const DEFAULT_MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// No setting may make a workload certificate live longer than this.
pub(crate) const CERT_TTL_CEILING: Duration = Duration::from_secs(365 * 24 * 3600);
pub(crate) const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:8443";
pub(crate) const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];
/// Data directory when neither `--data-dir` nor `CERTD_DATA_DIR` is given.
pub const DEFAULT_DATA_DIR: &str = "ca-data";

/// A configuration value that is missing, malformed or out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("config field `{field}`: {message}")]
    Invalid {
        field: std::borrow::Cow<'static, str>,
        message: String,
    },
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub server_names: Vec<String>,
    pub lifetimes: Lifetimes,
    /// `None`: derived from the HTTP listener's bound address.
    pub public_base_url: Option<String>,
    pub revocation: RevocationSettings,
    pub limits: LimitSettings,
    pub connections: ConnectionSettings,
    pub store: StoreSettings,
    /// `[store] backup_rate`: how fast a backup may stream; `None`: unpaced.
    pub backup_rate: Option<crate::pace::ByteRate>,
    /// `[store] list_rate`: how fast listing pages may read records;
    /// `None`: unpaced.
    pub list_rate: Option<crate::pace::RecordRate>,
    /// Who may use the admin API over mTLS, with which roles (`admins` and
    /// `[[operators]]`).
    pub operators: OperatorRoles,
    /// The configured attestors' settings (`[attestors.<kind>]`).
    pub attestors: ConfiguredAttestors,
    pub jwt: JwtSettings,
    pub federation: FederationSettings,
    /// The outside issuers whose users' tokens a token exchange accepts.
    pub subject_issuers: Vec<crate::subject_issuers::SubjectIssuerSettings>,
    /// The passphrase file of encrypted CA keys, if any.
    pub key_passphrase_file: Option<PathBuf>,
    /// The PIN file of the PKCS#11 token holding the intermediate key.
    pub pkcs11_pin_file: Option<PathBuf>,
    /// `[ca] auto_rotate_intermediate`: the daemon rotates the intermediate
    /// at two thirds of its life with the root key beside it.
    pub auto_rotate_intermediate: bool,
    /// The ACME server (`[acme]`).
    pub acme: crate::acme::AcmeSettings,
    /// How long expired records are kept (`[retention]`).
    pub retention: crate::retention::RetentionSettings,
}

/// JWT-SVID lifetimes, the signing keys' schedule and the issuer (`[jwt]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub key_rotation: Duration,
    pub publish_ahead: Duration,
    pub algorithm: crate::jwt::JwtAlgorithm,
    /// `None`: the public base URL.
    pub issuer: Option<String>,
    /// Where OAuth clients reach the token endpoint; `None`:
    /// `https://<first server name>:<gRPC port>/oauth/token`.
    pub token_endpoint: Option<String>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            default_ttl: Duration::from_secs(5 * 60),
            max_ttl: Duration::from_secs(3600),
            key_rotation: Duration::from_secs(24 * 3600),
            publish_ahead: Duration::from_secs(3600),
            algorithm: crate::jwt::JwtAlgorithm::Es256,
            issuer: None,
            token_endpoint: None,
        }
    }
}

/// Federation with other trust domains (`[federation]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FederationSettings {
    /// The bundle's `spiffe_refresh_hint`; `None`: half of
    /// `[jwt] publish_ahead`, so a peer sees a new JWT key before it signs.
    pub bundle_refresh_hint: Option<Duration>,
    /// A TLS listener of its own for the bundle endpoint, if configured.
    pub bundle_endpoint: Option<BundleEndpointSettings>,
}

/// The bundle endpoint's own listener (`[federation] bundle_endpoint_addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointSettings {
    pub address: SocketAddr,
    /// The operator's certificate chain and key files (PEM), for the
    /// `https_web` profile; `None`: certd's serving certificate
    /// (`https_spiffe`).
    pub certificate: Option<(PathBuf, PathBuf)>,
}

impl FederationSettings {
    /// The `spiffe_refresh_hint` certd's bundle carries, in seconds.
    pub fn refresh_hint(&self, jwt: &JwtSettings) -> Duration {
        self.bundle_refresh_hint
            .unwrap_or(jwt.publish_ahead / 2)
            .max(Duration::from_secs(1))
    }
}

impl JwtSettings {
    pub fn schedule(&self) -> crate::jwt::KeySchedule {
        crate::jwt::KeySchedule {
            rotation: self.key_rotation,
            publish_ahead: self.publish_ahead,
            max_ttl: self.max_ttl,
        }
    }
}

impl Config {
    /// What the authority needs of the configuration, with relying parties
    /// reaching the HTTP listener at `public_base_url` and the TLS
    /// listener (gRPC and the token endpoint) on port `tls_port`.
    pub fn authority_settings(&self, public_base_url: &str, tls_port: u16) -> AuthoritySettings {
        let token_endpoint = self.jwt.token_endpoint.clone().unwrap_or_else(|| {
            let host = self
                .server_names
                .first()
                .map_or("localhost", String::as_str);
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            format!("https://{host}:{tls_port}/oauth/token")
        });
        AuthoritySettings {
            issuer: crate::jwt::Issuer {
                url: self
                    .jwt
                    .issuer
                    .clone()
                    .unwrap_or_else(|| public_base_url.to_owned()),
                jwks_uri: format!("{public_base_url}/jwks.json"),
                token_endpoint,
            },
            lifetimes: self.lifetimes,
            revocation: self.revocation.clone(),
            limits: self.limits,
            operators: self.operators.clone(),
            server_names: self.server_names.clone(),
            attestors: self.attestors.clone(),
            jwt: self.jwt.clone(),
            federation: self.federation.clone(),
            subject_issuers: self.subject_issuers.clone(),
            acme: self.acme.clone(),
            backup_rate: self.backup_rate,
            list_rate: self.list_rate,
        }
    }
}

/// The settings the `Authority` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthoritySettings {
    pub lifetimes: Lifetimes,
    pub revocation: RevocationSettings,
    pub limits: LimitSettings,
    /// Operators allowed on the admin API over mTLS, and their roles.
    pub operators: OperatorRoles,
    /// certd's own TLS names, which no registration entry may grant.
    pub server_names: Vec<String>,
    /// The configured attestors (join tokens need none).
    pub attestors: ConfiguredAttestors,
    pub jwt: JwtSettings,
    pub federation: FederationSettings,
    /// Trusted subject issuers of token exchange.
    pub subject_issuers: Vec<crate::subject_issuers::SubjectIssuerSettings>,
    /// The `iss` of certd's tokens and where its keys are published.
    pub issuer: crate::jwt::Issuer,
    /// The ACME server (`[acme]`).
    pub acme: crate::acme::AcmeSettings,
    /// How fast a backup may stream (`[store] backup_rate`).
    pub backup_rate: Option<crate::pace::ByteRate>,
    /// How fast listing pages may read records (`[store] list_rate`).
    pub list_rate: Option<crate::pace::RecordRate>,
}

/// Lifetimes of what certd hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub default_cert_ttl: Duration,
    pub max_cert_ttl: Duration,
    pub default_join_token_ttl: Duration,
    pub max_join_token_ttl: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            default_cert_ttl: DEFAULT_CERT_TTL,
            max_cert_ttl: DEFAULT_MAX_CERT_TTL,
            default_join_token_ttl: DEFAULT_JOIN_TOKEN_TTL,
            max_join_token_ttl: DEFAULT_MAX_JOIN_TOKEN_TTL,
        }
    }
}

impl ConfigFile {
    /// Checks every value and fills in defaults for absent ones.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let issuance = self.issuance.clone().unwrap_or_default();
        let tokens = self.join_tokens.clone().unwrap_or_default();
        let lifetimes = Lifetimes {
            default_cert_ttl: duration(
                "issuance.default_ttl",
                &issuance.default_ttl,
                DEFAULT_CERT_TTL,
            )?,
            max_cert_ttl: duration("issuance.max_ttl", &issuance.max_ttl, DEFAULT_MAX_CERT_TTL)?,
            default_join_token_ttl: duration(
                "join_tokens.default_ttl",
                &tokens.default_ttl,
                DEFAULT_JOIN_TOKEN_TTL,
            )?,
            max_join_token_ttl: duration(
                "join_tokens.max_ttl",
                &tokens.max_ttl,
                DEFAULT_MAX_JOIN_TOKEN_TTL,
            )?,
        };
        if lifetimes.max_cert_ttl > CERT_TTL_CEILING {
            return Err(invalid(
                "issuance.max_ttl",
                format!(
                    "must be at most {}",
                    humantime::format_duration(CERT_TTL_CEILING)
                ),
            ));
        }
        if lifetimes.default_cert_ttl > lifetimes.max_cert_ttl {
            return Err(invalid(
                "issuance.default_ttl",
                "must not exceed issuance.max_ttl".into(),
            ));
        }
        if lifetimes.default_join_token_ttl > lifetimes.max_join_token_ttl {
            return Err(invalid(
                "join_tokens.default_ttl",
                "must not exceed join_tokens.max_ttl".into(),
            ));
        }
        let server_names = match &self.server_names {
            Some(names) => names.clone(),
            None => DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect(),
        };
        if server_names.is_empty() {
            return Err(invalid(
                "server_names",
                "must name at least one DNS name or IP address".into(),
            ));
        }
        for name in &server_names {
            validate_server_name(name)?;
        }
        let revocation_section = self.revocation.clone().unwrap_or_default();
        let revocation = RevocationSettings {
            crl_validity: duration(
                "revocation.crl_validity",
                &revocation_section.crl_validity,
                DEFAULT_CRL_VALIDITY,
            )?,
            ocsp_validity: duration(
                "revocation.ocsp_validity",
                &revocation_section.ocsp_validity,
                DEFAULT_OCSP_VALIDITY,
            )?,
            crl_refresh: duration(
                "revocation.crl_refresh",
                &revocation_section.crl_refresh,
                DEFAULT_CRL_REFRESH,
            )?,
            crl_shards: shard_count("revocation.crl_shards", revocation_section.crl_shards)?,
            crl_retired_shards: retired_shard_counts(&revocation_section)?,
        };
        for (field, value) in [
            ("revocation.crl_validity", revocation.crl_validity),
            ("revocation.ocsp_validity", revocation.ocsp_validity),
        ] {
            if value < Duration::from_secs(60) || value > Duration::from_secs(7 * 24 * 3600) {
                return Err(invalid(field, "must be between 1m and 7d".into()));
            }
        }
        if revocation.crl_refresh < Duration::from_secs(30) {
            return Err(invalid(
                "revocation.crl_refresh",
                "must be at least 30s".into(),
            ));
        }
        // A refresh longer than half the validity would leave relying
        // parties a CRL with less than half its life: clamp, not refuse, so
        // a short crl_validity alone still works.
        let revocation = RevocationSettings {
            crl_refresh: revocation.crl_refresh.min(revocation.crl_validity / 2),
            ..revocation
        };
        let public_base_url = match &self.public_base_url {
            None => None,
            Some(url) => Some(validate_base_url("public_base_url", url)?),
        };
        let limits = validate_limits(&self.limits.clone().unwrap_or_default())?;
        let connections = validate_connections(&self.connections.clone().unwrap_or_default())?;
        let store = validate_store(
            &self.store.clone().unwrap_or_default(),
            self.base_dir.as_deref(),
        )?;
        let operators = operators::validate(
            self.admins.as_deref().unwrap_or_default(),
            self.operators.as_deref().unwrap_or_default(),
        )?;
        let attestors = self.validate_attestors()?;
        let jwt = validate_jwt(&self.jwt.clone().unwrap_or_default())?;
        let federation = validate_federation(
            &self.federation.clone().unwrap_or_default(),
            &jwt,
            self.base_dir.as_deref(),
        )?;
        // Secret files: from `[ca]` (relative to the config file), else from
        // the environment.
        let secret_file = |field: Option<&PathBuf>, variable: &str| match field {
            Some(file) => Some(
                self.base_dir
                    .as_deref()
                    .map_or_else(|| file.clone(), |base| base.join(file)),
            ),
            None => std::env::var_os(variable)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from),
        };
        let ca = self.ca.clone().unwrap_or_default();
        let key_passphrase_file =
            secret_file(ca.key_passphrase_file.as_ref(), "CERTD_KEY_PASSPHRASE_FILE");
        let pkcs11_pin_file = secret_file(ca.pkcs11_pin_file.as_ref(), "CERTD_PKCS11_PIN_FILE");
        let subject_issuers = crate::subject_issuers::settings(
            &self
                .token_exchange
                .as_ref()
                .map(|section| section.subject_issuers.clone())
                .unwrap_or_default(),
            self.base_dir.as_deref(),
        )
        .map_err(|error| ConfigError::Invalid {
            field: format!(
                "token_exchange.subject_issuer[{}].{}",
                error.index, error.field
            )
            .into(),
            message: error.message,
        })?;
        let acme = validate_acme(&self.acme.clone().unwrap_or_default())?;
        let retention_section = self.retention.clone().unwrap_or_default();
        let retention = crate::retention::RetentionSettings {
            certificates: retention(
                "retention.certificates",
                &retention_section.certificates,
                crate::retention::DEFAULT_CERTIFICATE_RETENTION,
            )?,
            audit: retention(
                "retention.audit",
                &retention_section.audit,
                crate::retention::DEFAULT_AUDIT_RETENTION,
            )?,
        };
        let backup_rate = match &self.store.as_ref().and_then(|s| s.backup_rate.clone()) {
            None => Some(crate::pace::DEFAULT_BACKUP_RATE),
            Some(text) => crate::pace::ByteRate::parse(text)
                .map_err(|message| invalid("store.backup_rate", message))?,
        };
        let list_rate = match &self.store.as_ref().and_then(|s| s.list_rate.clone()) {
            None => Some(crate::pace::DEFAULT_LIST_RATE),
            Some(text) => crate::pace::RecordRate::parse(text)
                .map_err(|message| invalid("store.list_rate", message))?,
        };
        Ok(Config {
            acme,
            retention,
            backup_rate,
            list_rate,
            subject_issuers,
            auto_rotate_intermediate: ca.auto_rotate_intermediate.unwrap_or(false),
            key_passphrase_file,
            pkcs11_pin_file,
            jwt,
            federation,
            attestors,
            operators,
            limits,
            connections,
            store,
            public_base_url,
            revocation,
            grpc_addr: address(
                "grpc_addr",
                self.grpc_addr.as_deref().unwrap_or(DEFAULT_GRPC_ADDR),
            )?,
            http_addr: address(
                "http_addr",
                self.http_addr.as_deref().unwrap_or(DEFAULT_HTTP_ADDR),
            )?,
            server_names,
            lifetimes,
        })
    }
}

/// Resolves the data directory: the flag, else `CERTD_DATA_DIR` (clap reads
/// it), else `ca-data`.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// Parses a human duration such as `90s`, `1h` or `24h`; must be positive.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration like 30m, 1h or 24h ({e})"))?;
    if parsed.is_zero() {
        return Err(format!("{value:?} must be longer than zero"));
    }
    Ok(parsed)
}

fn duration(
    field: &'static str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|message| invalid(field, message)),
    }
}

/// A retention: a duration of at least `MIN_RETENTION`, or "off" (or "0")
/// for none (kept for good).
fn retention(
    field: &'static str,
    value: &Option<String>,
    default: Duration,
) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = value else {
        return Ok(Some(default));
    };
    if matches!(text.trim(), "off" | "0") {
        return Ok(None);
    }
    let parsed = parse_duration(text).map_err(|message| invalid(field, message))?;
    if parsed < crate::retention::MIN_RETENTION {
        return Err(invalid(
            field,
            format!("{text:?} is shorter than 1h; say \"off\" to keep records for good"),
        ));
    }
    Ok(Some(parsed))
}

fn address(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            field,
            format!("{value:?} is not an address like 127.0.0.1:8443"),
        )
    })
}

fn validate_limits(section: &LimitsSection) -> Result<LimitSettings, ConfigError> {
    let rate = |rate_field: &'static str,
                rate: Option<f64>,
                burst_field: &'static str,
                burst: Option<f64>| {
        let per_second = non_negative(rate_field, rate.unwrap_or(0.0))?;
        let burst = non_negative(burst_field, burst.unwrap_or(per_second))?;
        if per_second > 0.0 && burst < 1.0 {
            return Err(invalid(
                burst_field,
                "must be at least 1 when the rate is on".into(),
            ));
        }
        Ok(Rate { per_second, burst })
    };
    let max_concurrent_requests = section
        .max_concurrent_requests
        .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS);
    if max_concurrent_requests == 0 {
        return Err(invalid(
            "limits.max_concurrent_requests",
            "must be at least 1".into(),
        ));
    }
    let max_request_bytes = section
        .max_request_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
    if !(MIN_MAX_REQUEST_BYTES..=16 * 1024 * 1024).contains(&max_request_bytes) {
        return Err(invalid(
            "limits.max_request_bytes",
            format!("must be between {MIN_MAX_REQUEST_BYTES} and 16777216"),
        ));
    }
    Ok(LimitSettings {
        max_request_bytes,
        global_issuance: rate(
            "limits.issuance_rate",
            section.issuance_rate,
            "limits.issuance_burst",
            section.issuance_burst,
        )?,
        service_issuance: rate(
            "limits.service_issuance_rate",
            section.service_issuance_rate,
            "limits.service_issuance_burst",
            section.service_issuance_burst,
        )?,
        max_concurrent_requests,
    })
}

fn validate_store(
    section: &StoreSection,
    base_dir: Option<&Path>,
) -> Result<StoreSettings, ConfigError> {
    let Some(url) = &section.url else {
        if section.ca_file.is_some() {
            return Err(invalid(
                "store.ca_file",
                "needs store.url (a PostgreSQL database)".into(),
            ));
        }
        return Ok(StoreSettings::default());
    };
    let ca_file = section
        .ca_file
        .as_ref()
        .map(|file| base_dir.map_or_else(|| file.clone(), |base| base.join(file)));
    StoreSettings::new(Some(url), ca_file).map_err(|message| invalid("store.url", message))
}

fn validate_jwt(section: &JwtSection) -> Result<JwtSettings, ConfigError> {
    let defaults = JwtSettings::default();
    let settings = JwtSettings {
        default_ttl: duration(
            "jwt.default_ttl",
            &section.default_ttl,
            defaults.default_ttl,
        )?,
        max_ttl: duration("jwt.max_ttl", &section.max_ttl, defaults.max_ttl)?,
        key_rotation: duration(
            "jwt.key_rotation",
            &section.key_rotation,
            defaults.key_rotation,
        )?,
        publish_ahead: duration(
            "jwt.publish_ahead",
            &section.publish_ahead,
            defaults.publish_ahead,
        )?,
        algorithm: match &section.algorithm {
            None => defaults.algorithm,
            Some(name) => name
                .parse()
                .map_err(|message| invalid("jwt.algorithm", message))?,
        },
        issuer: section
            .issuer
            .as_deref()
            .map(|url| validate_base_url("jwt.issuer", url))
            .transpose()?,
        token_endpoint: section
            .token_endpoint
            .as_deref()
            .map(|url| {
                if !url.starts_with("https://") {
                    return Err(invalid(
                        "jwt.token_endpoint",
                        format!(
                            "{url:?} is not an https:// URL: the token endpoint is served over TLS"
                        ),
                    ));
                }
                validate_base_url("jwt.token_endpoint", url)
            })
            .transpose()?,
    };
    if settings.max_ttl > Duration::from_secs(24 * 3600) {
        return Err(invalid(
            "jwt.max_ttl",
            "must be at most 24h: JWT-SVIDs are bearer tokens, and cannot be revoked".into(),
        ));
    }
    if settings.default_ttl > settings.max_ttl {
        return Err(invalid(
            "jwt.default_ttl",
            format!(
                "must not exceed jwt.max_ttl ({})",
                humantime::format_duration(settings.max_ttl)
            ),
        ));
    }
    if settings.key_rotation < Duration::from_secs(5)
        || settings.publish_ahead >= settings.key_rotation
    {
        return Err(invalid(
            "jwt.publish_ahead",
            "must be shorter than jwt.key_rotation (at least 5s), so each key is published before it signs".into(),
        ));
    }
    Ok(settings)
}

fn validate_acme(section: &AcmeSection) -> Result<crate::acme::AcmeSettings, ConfigError> {
    let testing = match &section.testing {
        None => None,
        Some(testing) => Some(crate::acme::AcmeTesting {
            http_port: testing.http_port,
            tls_alpn_port: testing.tls_alpn_port,
            resolve_all_to: testing
                .resolve_all_to
                .as_deref()
                .map(|text| {
                    text.parse().map_err(|_| {
                        invalid(
                            "acme.testing.resolve_all_to",
                            format!("{text:?} is not an IP address"),
                        )
                    })
                })
                .transpose()?,
            dns_server: testing
                .dns_server
                .as_deref()
                .map(|text| address("acme.testing.dns_server", text))
                .transpose()?,
        }),
    };
    Ok(crate::acme::AcmeSettings {
        enabled: section.enabled.unwrap_or(true),
        accounts_without_eab: section.accounts_without_eab.unwrap_or(false),
        testing,
        new_accounts_per_minute_per_ip: section
            .new_accounts_per_minute_per_ip
            .unwrap_or(crate::acme::DEFAULT_NEW_ACCOUNTS_PER_MINUTE_PER_IP),
        new_orders_per_minute_per_account: section
            .new_orders_per_minute_per_account
            .unwrap_or(crate::acme::DEFAULT_NEW_ORDERS_PER_MINUTE_PER_ACCOUNT),
    })
}

fn validate_federation(
    section: &FederationSection,
    jwt: &JwtSettings,
    base_dir: Option<&Path>,
) -> Result<FederationSettings, ConfigError> {
    let relative = |file: &PathBuf| base_dir.map_or_else(|| file.clone(), |base| base.join(file));
    let certificate = match (
        &section.bundle_endpoint_certificate_file,
        &section.bundle_endpoint_key_file,
    ) {
        (Some(certificate), Some(key)) => Some((relative(certificate), relative(key))),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                "federation.bundle_endpoint_key_file",
                "give both bundle_endpoint_certificate_file and bundle_endpoint_key_file, or neither".into(),
            ));
        }
    };
    let bundle_endpoint = match &section.bundle_endpoint_addr {
        Some(text) => Some(BundleEndpointSettings {
            address: address("federation.bundle_endpoint_addr", text)?,
            certificate,
        }),
        None if certificate.is_some() => {
            return Err(invalid(
                "federation.bundle_endpoint_addr",
                "the bundle endpoint's certificate needs a listener: set bundle_endpoint_addr"
                    .into(),
            ));
        }
        None => None,
    };
    let Some(text) = &section.bundle_refresh_hint else {
        return Ok(FederationSettings {
            bundle_refresh_hint: None,
            bundle_endpoint,
        });
    };
    let hint = parse_duration(text)
        .map_err(|message| invalid("federation.bundle_refresh_hint", message))?;
    // A peer that waits longer than a JWT key is published ahead could
    // meet a token signed by a key it has not fetched yet.
    if hint < Duration::from_secs(1) || hint > jwt.publish_ahead {
        return Err(invalid(
            "federation.bundle_refresh_hint",
            format!(
                "must be between 1s and jwt.publish_ahead ({}), so peers fetch each new JWT key before it signs",
                humantime::format_duration(jwt.publish_ahead)
            ),
        ));
    }
    Ok(FederationSettings {
        bundle_refresh_hint: Some(hint),
        bundle_endpoint,
    })
}

fn validate_connections(section: &ConnectionsSection) -> Result<ConnectionSettings, ConfigError> {
    let defaults = ConnectionSettings::default();
    let at_least_one = |field: &'static str, value: Option<usize>| match value {
        Some(0) => Err(invalid(field, "must be at least 1".into())),
        _ => Ok(value),
    };
    let settings = ConnectionSettings {
        max_per_listener: at_least_one("connections.max_per_listener", section.max_per_listener)?,
        max_per_client: at_least_one("connections.max_per_client", section.max_per_client)?
            .unwrap_or(defaults.max_per_client),
        idle_timeout: duration(
            "connections.idle_timeout",
            &section.idle_timeout,
            defaults.idle_timeout,
        )?,
        header_read_timeout: duration(
            "connections.header_read_timeout",
            &section.header_read_timeout,
            defaults.header_read_timeout,
        )?,
    };
    // Shorter, and ordinary round trips on a busy host would be cut off.
    if settings.idle_timeout < Duration::from_secs(1) {
        return Err(invalid(
            "connections.idle_timeout",
            "must be at least 1s".into(),
        ));
    }
    Ok(settings)
}

fn non_negative(field: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{value} is not a number of zero or more"),
        ))
    }
}

/// Where relying parties fetch revocation information, for a base URL.
pub fn revocation_urls(base: &str) -> RevocationUrls {
    RevocationUrls::new(base)
}

/// Checks an `http://` or `https://` base URL (no query, no fragment) and
/// drops a trailing slash; the error says what is wrong with it.
pub fn check_base_url(url: &str) -> Result<String, String> {
    validate_base_url("public_base_url", url)
        .map_err(|_| format!("{url:?} is not an http:// or https:// URL without query or fragment"))
}

fn validate_base_url(field: &'static str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let valid = rest.is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    });
    if valid {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(
            field,
            format!("{url:?} is not an http:// or https:// URL without query or fragment"),
        ))
    }
}

/// A name in certd's own serving certificate: an IP address, or a host
/// name as workloads' names are (`identity::DnsName`, any case).
fn validate_server_name(name: &str) -> Result<(), ConfigError> {
    if name.parse::<std::net::IpAddr>().is_ok() || name.parse::<DnsName>().is_ok() {
        Ok(())
    } else {
        Err(invalid(
            "server_names",
            format!("{name:?} is not a DNS name or IP address"),
        ))
    }
}

/// A CRL shard count: 1 (none, the default) to `MAX_CRL_SHARDS`.
fn shard_count(field: &'static str, value: Option<u64>) -> Result<ShardCount, ConfigError> {
    match value {
        None => Ok(ShardCount::WHOLE),
        Some(count) => ShardCount::new(count).ok_or_else(|| {
            invalid(
                field,
                format!("{count} is not a shard count from 1 to {MAX_CRL_SHARDS}"),
            )
        }),
    }
}

/// The retired shard counts: each a count that was `crl_shards` (so above
/// 1), not the current one, none twice, and a few at most: every build
/// signs every count's shards again.
fn retired_shard_counts(section: &file::RevocationSection) -> Result<Vec<ShardCount>, ConfigError> {
    const FIELD: &str = "revocation.crl_retired_shards";
    const MAX_RETIRED: usize = 8;
    let current = shard_count("revocation.crl_shards", section.crl_shards)?;
    let listed = section.crl_retired_shards.clone().unwrap_or_default();
    if listed.len() > MAX_RETIRED {
        return Err(invalid(
            FIELD,
            format!("lists {} counts; at most {MAX_RETIRED}", listed.len()),
        ));
    }
    let mut retired = Vec::with_capacity(listed.len());
    for value in listed {
        let count = shard_count(FIELD, Some(value))?;
        if !count.is_sharded() {
            return Err(invalid(
                FIELD,
                "1 is the whole CRL, always published".into(),
            ));
        }
        if count == current {
            return Err(invalid(
                FIELD,
                format!("{count} is crl_shards, the count in use"),
            ));
        }
        if retired.contains(&count) {
            return Err(invalid(FIELD, format!("{count} is listed twice")));
        }
        retired.push(count);
    }
    Ok(retired)
}

fn invalid(field: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message,
    }
}

impl ConfigFile {
    /// Hands each attestor's section to the attestor that claims it:
    /// `[attestors.<kind>]`, or its top-level name (`[kubernetes]`), not
    /// both. A kind no attestor claims is refused, naming those there are.
    fn validate_attestors(&self) -> Result<ConfiguredAttestors, ConfigError> {
        let mut sections = self.attestors.clone().unwrap_or_default();
        if let Some(unknown) = sections
            .keys()
            .find(|kind| !CONFIGURABLE.iter().any(|c| c.kind == kind.as_str()))
        {
            let known: Vec<_> = CONFIGURABLE.iter().map(|c| c.kind).collect();
            return Err(ConfigError::Invalid {
                field: format!("attestors.{unknown}").into(),
                message: format!(
                    "no attestor of this kind takes a section (those that do: {}; join tokens need none)",
                    known.join(", ")
                ),
            });
        }
        let mut configured = ConfiguredAttestors::default();
        for attestor in CONFIGURABLE {
            let nested = sections.remove(attestor.kind);
            let top_level = attestor
                .top_level_section
                .and_then(|name| self.top_level_attestor_section(name));
            let (section, written_as) = match (nested, top_level) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Invalid {
                        field: format!("attestors.{}", attestor.kind).into(),
                        message: format!(
                            "configure it once: [attestors.{}] or [{}], not both",
                            attestor.kind,
                            attestor.section()
                        ),
                    });
                }
                (Some(section), None) => (section, format!("attestors.{}", attestor.kind)),
                (None, Some(section)) => (section, attestor.section()),
                (None, None) => continue,
            };
            let settings =
                (attestor.configure)(section, self.base_dir.as_deref()).map_err(|error| {
                    ConfigError::Invalid {
                        field: if error.field.is_empty() {
                            written_as.clone().into()
                        } else {
                            format!("{written_as}.{}", error.field).into()
                        },
                        message: error.message,
                    }
                })?;
            configured.insert(attestor.kind, written_as, settings);
        }
        Ok(configured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::KubernetesSettings;
    use crate::attest::kubernetes::DEFAULT_JWKS_REFRESH;

    /// The Kubernetes attestor's settings, if configured.
    fn kubernetes_of(config: &Config) -> Option<KubernetesSettings> {
        let settings = config.attestors.get("kubernetes")?;
        settings
            .as_any()
            .downcast_ref::<KubernetesSettings>()
            .cloned()
    }

    fn check(text: &str, expected_error: Option<&str>) -> Option<Config> {
        let result = ConfigFile::parse(text, Path::new("certd.toml")).and_then(|f| f.validate());
        match (result, expected_error) {
            (Ok(config), None) => Some(config),
            (Err(error), Some(expected)) => {
                assert!(
                    error.to_string().contains(expected),
                    "{error} lacks {expected:?}"
                );
                None
            }
            (result, expected) => panic!("{text:?}: got {result:?}, expected error {expected:?}"),
        }
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = check("", None).unwrap();
        assert_eq!(config.grpc_addr, DEFAULT_GRPC_ADDR.parse().unwrap());
        assert_eq!(config.lifetimes, Lifetimes::default());
        assert_eq!(config.server_names, ["localhost", "127.0.0.1"]);
        // The root key beside the daemon is an explicit choice.
        assert!(!config.auto_rotate_intermediate);
        let config = check("[ca]\nauto_rotate_intermediate = true", None).unwrap();
        assert!(config.auto_rotate_intermediate);
        check(
            "[ca]\nauto_rotate_intermediate = \"yes\"",
            Some("invalid type"),
        );
    }

    #[test]
    fn the_replicas_manifest_carries_a_valid_config() {
        let manifest = include_str!("../../../../deploy/kubernetes/replicas.yaml");
        let embedded: String = manifest
            .lines()
            .skip_while(|line| !line.trim_end().ends_with("certd.toml: |"))
            .skip(1)
            .take_while(|line| line.starts_with("    ") || line.trim().is_empty())
            .map(|line| format!("{}\n", line.get(4..).unwrap_or("")))
            .collect();
        let config = check(&embedded, None).unwrap();
        assert_eq!(config.grpc_addr.to_string(), "0.0.0.0:8443");
        assert!(
            config
                .server_names
                .contains(&"certd.certd-system.svc".to_owned())
        );
        // The database URL comes from the environment, not the file.
        assert_eq!(config.store, StoreSettings::default());
    }

    #[test]
    fn the_acme_section_is_read_and_its_test_overrides_checked() {
        let defaults = check("", None).unwrap().acme;
        assert!(defaults.enabled && !defaults.accounts_without_eab);
        assert_eq!(defaults.testing, None);
        let config = check(
            "[acme]\naccounts_without_eab = true\nnew_accounts_per_minute_per_ip = 0\nnew_orders_per_minute_per_account = 20\n[acme.testing]\nhttp_port = 5002\ntls_alpn_port = 5001\nresolve_all_to = \"127.0.0.1\"\ndns_server = \"127.0.0.1:5353\"\n",
            None,
        )
        .unwrap();
        assert!(config.acme.accounts_without_eab);
        assert_eq!(config.acme.new_accounts_per_minute_per_ip, 0);
        assert_eq!(config.acme.new_orders_per_minute_per_account, 20);
        assert_eq!(defaults.new_accounts_per_minute_per_ip, 10);
        assert_eq!(defaults.new_orders_per_minute_per_account, 300);
        let validation = config.acme.validation();
        assert_eq!(validation.http_port, 5002);
        assert_eq!(validation.tls_alpn_port, 5001);
        assert_eq!(
            validation.resolve_all_to,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(validation.dns_servers, ["127.0.0.1:5353".parse().unwrap()]);
        // Without the section, the real ports and the system's resolver.
        assert_eq!(defaults.validation().http_port, 80);
        check(
            "[acme.testing]\nresolve_all_to = \"localhost\"",
            Some("acme.testing.resolve_all_to"),
        );
        check(
            "[acme.testing]\ndns_server = \"127.0.0.1\"",
            Some("acme.testing.dns_server"),
        );
        check("[acme]\nopen = true", Some("unknown field"));
    }

    #[test]
    fn store_urls_are_checked() {
        let config = check(
            "[store]\nurl = \"postgresql://certd@db.internal/certd?sslmode=require\"",
            None,
        )
        .unwrap();
        assert_eq!(config.store.backend().name(), "PostgreSQL");
        check(
            "[store]\nurl = \"mysql://db.internal/certd\"",
            Some("store.url"),
        );
        check("[store]\nca_file = \"db.pem\"", Some("store.ca_file"));
        check("[jwt]\nmax_ttl = \"48h\"", Some("jwt.max_ttl"));
        check("[jwt]\ndefault_ttl = \"2h\"", Some("jwt.default_ttl"));
        check(
            "[jwt]\nkey_rotation = \"1h\"\npublish_ahead = \"1h\"",
            Some("jwt.publish_ahead"),
        );
        check("[jwt]\nkey_rotation = \"often\"", Some("jwt.key_rotation"));
        check("[jwt]\nalgorithm = \"HS256\"", Some("jwt.algorithm"));
        check("[jwt]\nalgorithm = \"es256\"", Some("jwt.algorithm"));
    }

    #[test]
    fn the_shipped_example_is_valid_and_states_the_defaults() {
        let example = include_str!("../../../../deploy/certd.toml");
        assert_eq!(check(example, None), check("", None));
        // Its commented-out Kubernetes section is valid too, once uncommented.
        let kubernetes: String = example
            .lines()
            .skip_while(|line| !line.starts_with("# [kubernetes]"))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with('[') || line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let config = check(&kubernetes, None).unwrap();
        assert_eq!(kubernetes_of(&config).unwrap().audience, "certd");
    }

    #[test]
    fn values_are_read() {
        let config = check(
            "grpc_addr = \"0.0.0.0:9443\"\nserver_names = [\"certd.example\"]\n[issuance]\ndefault_ttl = \"1h\"\nmax_ttl = \"48h\"\n",
            None,
        )
        .unwrap();
        assert_eq!(config.lifetimes.default_cert_ttl, Duration::from_secs(3600));
        assert_eq!(
            config.lifetimes.max_cert_ttl,
            Duration::from_secs(48 * 3600)
        );
        assert_eq!(config.server_names, ["certd.example"]);
        let config = check(
            "public_base_url = \"https://ca.example/\"\n[revocation]\ncrl_validity = \"2h\"",
            None,
        )
        .unwrap();
        assert_eq!(
            config.public_base_url.as_deref(),
            Some("https://ca.example")
        );
        assert_eq!(config.revocation.crl_validity, Duration::from_secs(7200));
        assert_eq!(
            revocation_urls("https://ca.example").of("ab").ocsp,
            "https://ca.example/ocsp"
        );
        let config = check(
            "[limits]\nservice_issuance_rate = 5.0\nmax_concurrent_requests = 10",
            None,
        )
        .unwrap();
        assert_eq!(
            config.limits.service_issuance,
            Rate {
                per_second: 5.0,
                burst: 5.0
            }
        );
        assert_eq!(config.limits.global_issuance, Rate::UNLIMITED);
        assert_eq!(config.limits.max_concurrent_requests, 10);
    }

    /// `[retention]`: documented defaults, "off" or "0" keeps for good, and
    /// a bad or too short value names its field.
    #[test]
    fn retention_has_defaults_and_can_be_turned_off() {
        use crate::retention::{DEFAULT_AUDIT_RETENTION, DEFAULT_CERTIFICATE_RETENTION};
        let defaults = check("", None).unwrap();
        assert_eq!(
            defaults.retention.certificates,
            Some(DEFAULT_CERTIFICATE_RETENTION)
        );
        assert_eq!(defaults.retention.audit, Some(DEFAULT_AUDIT_RETENTION));
        let set = check("[retention]\ncertificates = \"7d\"\naudit = \"off\"", None).unwrap();
        assert_eq!(
            set.retention.certificates,
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        assert_eq!(set.retention.audit, None);
        let forever = check("[retention]\ncertificates = \"0\"", None).unwrap();
        assert_eq!(forever.retention.certificates, None);
        check(
            "[retention]\ncertificates = \"10m\"",
            Some("retention.certificates"),
        );
        check("[retention]\naudit = \"a while\"", Some("retention.audit"));
        check("[retention]\nrecords = \"7d\"", Some("unknown field"));
    }

    /// `[store] backup_rate`: paced by default, a rate or "off".
    #[test]
    fn backups_are_paced_unless_turned_off() {
        let defaults = check("", None).unwrap();
        assert_eq!(defaults.backup_rate, Some(crate::pace::DEFAULT_BACKUP_RATE));
        let set = check("[store]\nbackup_rate = \"16MiB/s\"", None).unwrap();
        assert_eq!(
            set.backup_rate.map(crate::pace::ByteRate::bytes_per_second),
            Some(16 * 1024 * 1024)
        );
        assert_eq!(
            check("[store]\nbackup_rate = \"off\"", None)
                .unwrap()
                .backup_rate,
            None
        );
        check("[store]\nbackup_rate = \"fast\"", Some("store.backup_rate"));
        check(
            "[store]\nbackup_rate = \"1KiB/s\"",
            Some("store.backup_rate"),
        );
    }

    /// `[store] list_rate`: listings paced by default, a rate or "off".
    #[test]
    fn listings_are_paced_unless_turned_off() {
        let defaults = check("", None).unwrap();
        assert_eq!(defaults.list_rate, Some(crate::pace::DEFAULT_LIST_RATE));
        let rate_of = |config: &Config| config.list_rate.map(crate::pace::RecordRate::per_second);
        let set = check("[store]\nlist_rate = \"4000/s\"", None).unwrap();
        assert_eq!(rate_of(&set), Some(4000));
        assert_eq!(
            rate_of(&check("[store]\nlist_rate = \"off\"", None).unwrap()),
            None
        );
        check("[store]\nlist_rate = \"fast\"", Some("store.list_rate"));
        check("[store]\nlist_rate = \"5/s\"", Some("store.list_rate"));
    }

    #[test]
    fn bad_values_name_their_field() {
        check("grpc_addr = \"nowhere\"", Some("grpc_addr"));
        check(
            "[issuance]\ndefault_ttl = \"soon\"",
            Some("issuance.default_ttl"),
        );
        check(
            "[issuance]\ndefault_ttl = \"0s\"",
            Some("issuance.default_ttl"),
        );
        check(
            "[issuance]\ndefault_ttl = \"48h\"",
            Some("issuance.default_ttl"),
        );
        check("[issuance]\nmax_ttl = \"400d\"", Some("issuance.max_ttl"));
        check("server_names = []", Some("server_names"));
        check("server_names = [\"a b\"]", Some("server_names"));
        // The same host-name rule as workloads' names, any case, or an IP.
        check("server_names = [\"-bad.example\"]", Some("server_names"));
        check("server_names = [\"*.example\"]", Some("server_names"));
        check(
            "server_names = [\"Certd.Example\", \"10.0.0.1\", \"::1\"]",
            None,
        );
        check("colour = \"blue\"", Some("unknown field"));
        check("public_base_url = \"ftp://x\"", Some("public_base_url"));
        check(
            "[revocation]\ncrl_validity = \"1s\"",
            Some("revocation.crl_validity"),
        );
        check(
            "[revocation]\ncrl_refresh = \"10s\"",
            Some("revocation.crl_refresh"),
        );
        check(
            "[revocation]\ncrl_shards = 0",
            Some("revocation.crl_shards"),
        );
        check(
            "[revocation]\ncrl_shards = 1025",
            Some("revocation.crl_shards"),
        );
        check(
            "[revocation]\ncrl_shards = 64\ncrl_retired_shards = [64]",
            Some("revocation.crl_retired_shards"),
        );
        check(
            "[revocation]\ncrl_shards = 64\ncrl_retired_shards = [16, 16]",
            Some("revocation.crl_retired_shards"),
        );
        check(
            "[revocation]\ncrl_retired_shards = [1]",
            Some("revocation.crl_retired_shards"),
        );
        check(
            "[revocation]\ncrl_retired_shards = [2, 3, 4, 5, 6, 7, 8, 9, 10]",
            Some("revocation.crl_retired_shards"),
        );
        let sharded = check(
            "[revocation]\ncrl_shards = 64\ncrl_retired_shards = [16]",
            None,
        )
        .unwrap();
        assert_eq!(sharded.revocation.crl_shards.get(), 64);
        assert_eq!(
            sharded.revocation.crl_retired_shards,
            [ShardCount::new(16).unwrap()]
        );
        // A refresh past half the validity is brought back to half.
        let config = check(
            "[revocation]\ncrl_validity = \"1h\"\ncrl_refresh = \"2h\"",
            None,
        )
        .unwrap();
        assert_eq!(config.revocation.crl_refresh, Duration::from_secs(1800));
        let defaults = check("", None).unwrap();
        assert_eq!(
            defaults.revocation.crl_validity,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(defaults.revocation.crl_refresh, Duration::from_secs(3600));
        // One whole CRL unless configured, as before shards existed.
        assert_eq!(defaults.revocation.crl_shards, ShardCount::WHOLE);
        assert!(defaults.revocation.crl_retired_shards.is_empty());
        check(
            "[limits]\nissuance_rate = -1.0",
            Some("limits.issuance_rate"),
        );
        check(
            "[limits]\nservice_issuance_rate = 5.0\nservice_issuance_burst = 0.5",
            Some("limits.service_issuance_burst"),
        );
        check(
            "[limits]\nmax_concurrent_requests = 0",
            Some("limits.max_concurrent_requests"),
        );
        check("admins = [\"alice\"]", Some("admins"));
        check(
            "[limits]\nmax_request_bytes = 100",
            Some("limits.max_request_bytes"),
        );
        check("admins = [\"spiffe://certd.internal\"]", Some("admins"));
        // The same SPIFFE ID rule as everywhere else in certd.
        check(
            "admins = [\"spiffe://certd.internal/operator/../root\"]",
            Some("admins"),
        );
        let config = check(
            "admins = [\"spiffe://certd.internal/operator/alice\"]",
            None,
        )
        .unwrap();
        assert!(
            config
                .operators
                .permits(
                    "spiffe://certd.internal/operator/alice",
                    &crate::policy::operator_roles::AdminAction::Backup
                )
                .is_ok()
        );
        let config = check(
            "[[operators]]\nid = \"spiffe://certd.internal/operator/ci\"\nroles = [\"issuer\"]\nservices = [\"billing\"]\nmax_certificate_ttl = \"30d\"",
            None,
        )
        .unwrap();
        assert!(
            config
                .operators
                .grant("spiffe://certd.internal/operator/ci")
                .is_some()
        );
        check(
            "[[operators]]\nid = \"spiffe://certd.internal/operator/ci\"\nroles = [\"issuer\"]",
            Some("operators[0].services"),
        );
        check("[[operators]]\nname = \"ci\"", Some("unknown field"));
    }

    #[test]
    fn the_issuer_is_a_checked_url_or_the_public_base_url() {
        let config = check("[jwt]\nissuer = \"https://certd.example.com/\"", None).unwrap();
        assert_eq!(
            config.jwt.issuer.as_deref(),
            Some("https://certd.example.com")
        );
        let issuer = config
            .authority_settings("http://10.0.0.1:8080", 8443)
            .issuer;
        assert_eq!(issuer.url, "https://certd.example.com");
        assert_eq!(issuer.jwks_uri, "http://10.0.0.1:8080/jwks.json");
        assert_eq!(issuer.token_endpoint, "https://localhost:8443/oauth/token");
        let default = check("", None)
            .unwrap()
            .authority_settings("http://10.0.0.1:8080", 8443);
        assert_eq!(default.issuer.url, "http://10.0.0.1:8080");
        let configured = check(
            "server_names = [\"::1\"]\n[jwt]\ntoken_endpoint = \"https://ca.example/oauth/token\"",
            None,
        )
        .unwrap();
        assert_eq!(
            configured
                .authority_settings("http://x", 1)
                .issuer
                .token_endpoint,
            "https://ca.example/oauth/token"
        );
        let ipv6 = check("server_names = [\"::1\"]", None).unwrap();
        assert_eq!(
            ipv6.authority_settings("http://x", 9).issuer.token_endpoint,
            "https://[::1]:9/oauth/token"
        );
        check(
            "[jwt]\ntoken_endpoint = \"http://ca.example/oauth/token\"",
            Some("jwt.token_endpoint"),
        );
        for bad in [
            "ftp://certd.example",
            "https://certd.example?x=1",
            "certd.example",
            "https://",
        ] {
            check(&format!("[jwt]\nissuer = \"{bad}\""), Some("jwt.issuer"));
        }
    }

    #[test]
    fn attestor_sections_live_under_attestors_and_kubernetes_keeps_its_old_name() {
        let nested = check(
            "[attestors.kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"",
            None,
        )
        .unwrap();
        let top_level = check(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"",
            None,
        )
        .unwrap();
        assert_eq!(nested.attestors, top_level.attestors);
        assert_eq!(kubernetes_of(&nested).unwrap().issuer, "https://k8s");
        // Errors name the section as it was written.
        check(
            "[attestors.kubernetes]\njwks_file = \"k.json\"",
            Some("attestors.kubernetes.issuer"),
        );
        check(
            "[attestors.kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"\nisuer = \"typo\"",
            Some("`attestors.kubernetes.isuer`: unknown field `isuer`, expected one of `issuer`"),
        );
        check(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"\n[attestors.kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"",
            Some("not both"),
        );
        // A wrong value is named by its key.
        check(
            "[kubernetes]\nissuer = 5\njwks_file = \"k.json\"",
            Some("`kubernetes.issuer`: invalid type: integer `5`"),
        );
        check(
            "[attestors.tpm]\nca = \"x\"",
            Some(
                "`attestors.tpm`: no attestor of this kind takes a section (those that do: kubernetes",
            ),
        );
        // Attestors whose settings differ are different configurations.
        let other = check(
            "[kubernetes]\nissuer = \"https://other\"\njwks_file = \"k.json\"",
            None,
        )
        .unwrap();
        assert_ne!(other.attestors, top_level.attestors);
        assert_ne!(check("", None).unwrap().attestors, top_level.attestors);
    }

    #[test]
    fn the_kubernetes_section_is_checked_and_paths_resolved() {
        check(
            "[kubernetes]\njwks_file = \"k.json\"",
            Some("kubernetes.issuer"),
        );
        check(
            "[kubernetes]\nissuer = \"https://k8s\"",
            Some("kubernetes.jwks_file"),
        );
        check(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"\nclock_skew = \"1h\"",
            Some("kubernetes.clock_skew"),
        );
        check(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"\naudience = \"\"",
            Some("kubernetes.audience"),
        );
        check(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_url = \"http://k8s/openid/v1/jwks\"",
            Some("kubernetes.jwks_url"),
        );
        check(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_url = \"https://k8s/keys\"\njwks_refresh = \"1s\"",
            Some("kubernetes.jwks_refresh"),
        );
        let url_only = check(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_url = \"https://k8s/keys\"",
            None,
        )
        .unwrap();
        let url = kubernetes_of(&url_only).unwrap().jwks_url.unwrap();
        assert_eq!(
            (url.url.as_str(), url.refresh),
            ("https://k8s/keys", DEFAULT_JWKS_REFRESH)
        );
        let mut file = ConfigFile::parse(
            "[kubernetes]\nissuer = \"https://k8s\"\njwks_file = \"k.json\"\npublic_key_files = [\"/abs/sa.pub\"]",
            Path::new("certd.toml"),
        )
        .unwrap();
        file.base_dir = Some(PathBuf::from("/etc/certd"));
        let kubernetes = kubernetes_of(&file.validate().unwrap()).unwrap();
        assert_eq!(
            kubernetes.jwks_file,
            Some(PathBuf::from("/etc/certd/k.json"))
        );
        assert_eq!(kubernetes.public_key_files, [PathBuf::from("/abs/sa.pub")]);
        assert_eq!(kubernetes.audience, "certd");
        assert_eq!(kubernetes.clock_skew, Duration::from_secs(30));
        assert!(kubernetes_of(&check("", None).unwrap()).is_none());
    }
}
