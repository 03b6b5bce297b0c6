//! gRPC clients for the CLI (and for anything else that acts as a workload
//! or an operator): the workload API over TLS, the admin API over the local
//! socket. They speak in certd's own types, so callers never see tonic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::proto;
use super::proto::admin_client::AdminClient as AdminRpc;
use super::proto::certificate_authority_client::CertificateAuthorityClient;
use crate::ErrorKind;
use crate::authority::{CertificateSummary, TokenFor};
use crate::identity::DnsName;
use crate::registry::EntrySpec;
use crate::registry::Selector;
use crate::revocation::RevocationReason;
use crate::store::EntryRecord;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer the workload client reads: a certificate chain and bundle.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to certd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach certd at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("certd refused ({kind}): {message}")]
    Refused { kind: ErrorKind, message: String },
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// The one classification (`crate::ErrorKind`) of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Unreachable { .. } => ErrorKind::Unavailable,
            ClientError::Refused { kind, .. } => *kind,
            ClientError::Setup(_) => ErrorKind::InvalidInput,
        }
    }
}

fn refused(target: &str, status: Status) -> ClientError {
    // A status that wraps an error never reached certd's handlers: the
    // connection or the TLS session failed (a rejected client certificate
    // shows up here, as a TLS alert).
    if std::error::Error::source(&status).is_some() {
        return ClientError::Unreachable {
            target: target.to_owned(),
            reason: describe_status(&status),
        };
    }
    ClientError::Refused {
        kind: super::kind_of(status.code()),
        message: status.message().to_owned(),
    }
}

/// A transport failure's message plus its innermost cause, which is where
/// TLS alerts such as "certificate expired" are found.
fn describe_status(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    if let Some(cause) = innermost
        && !text.contains(&cause)
    {
        text.push_str(": ");
        text.push_str(&cause);
    }
    text
}

/// A certificate as the workload API returns it.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub serial: String,
    pub certificate_pem: String,
    pub chain_pem: String,
    pub trust_bundle_pem: String,
    pub not_after: i64,
    pub spiffe_id: String,
}

impl From<proto::IssueResponse> for IssuedCertificate {
    fn from(response: proto::IssueResponse) -> Self {
        IssuedCertificate {
            serial: response.serial,
            certificate_pem: response.certificate_pem,
            chain_pem: response.chain_pem,
            trust_bundle_pem: response.trust_bundle_pem,
            not_after: response.not_after_unix,
            spiffe_id: response.spiffe_id,
        }
    }
}

/// A certificate's status from `GetStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAnswer {
    /// "good", "revoked" or "unknown".
    pub status: &'static str,
    pub revoked_at: i64,
    pub revocation_reason: String,
}

/// TLS client material for the workload API.
#[derive(Debug, Clone)]
pub struct TlsClientSettings {
    /// PEM roots to trust for the server.
    pub ca_bundle_pem: String,
    /// PEM chain and key to present (for renewal), if any.
    pub identity: Option<(String, String)>,
}

/// Client of `certd.v1.CertificateAuthority`.
pub struct WorkloadClient {
    target: String,
    rpc: CertificateAuthorityClient<Channel>,
    channel: Channel,
}

impl WorkloadClient {
    /// Connects to `server` (an `https://host:port` URL).
    pub async fn connect(server: &str, tls: &TlsClientSettings) -> Result<Self, ClientError> {
        let mut bundle = tls.ca_bundle_pem.as_bytes();
        if !rustls_pemfile::certs(&mut bundle).any(|cert| cert.is_ok()) {
            return Err(ClientError::Setup(
                "the CA bundle holds no PEM certificate".into(),
            ));
        }
        let mut tls_config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_bundle_pem));
        if let Some((chain, key)) = &tls.identity {
            tls_config = tls_config.identity(Identity::from_pem(chain, key));
        }
        let endpoint = Endpoint::from_shared(server.to_owned())
            .map_err(|e| ClientError::Setup(format!("server URL {server:?} is not valid: {e}")))?;
        if !server.starts_with("https://") {
            return Err(ClientError::Setup(format!(
                "server URL {server:?} must start with https://"
            )));
        }
        let channel = endpoint
            .tls_config(tls_config)
            .map_err(|e| ClientError::Setup(format!("TLS setup failed: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| ClientError::Unreachable {
                target: server.to_owned(),
                reason: error_chain(&e),
            })?;
        Ok(WorkloadClient {
            target: server.to_owned(),
            channel: channel.clone(),
            rpc: CertificateAuthorityClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
        })
    }

    /// Bootstrap with a join token.
    pub async fn issue(
        &mut self,
        csr_der: Vec<u8>,
        join_token: &str,
    ) -> Result<IssuedCertificate, ClientError> {
        self.issue_attested(
            csr_der,
            proto::issue_request::Attestation::JoinToken(join_token.to_owned()),
        )
        .await
    }

    /// Bootstrap with a Kubernetes projected service-account token.
    pub async fn issue_with_kubernetes_token(
        &mut self,
        csr_der: Vec<u8>,
        token: &str,
    ) -> Result<IssuedCertificate, ClientError> {
        self.issue_attested(
            csr_der,
            proto::issue_request::Attestation::KubernetesToken(token.to_owned()),
        )
        .await
    }

    async fn issue_attested(
        &mut self,
        csr_der: Vec<u8>,
        attestation: proto::issue_request::Attestation,
    ) -> Result<IssuedCertificate, ClientError> {
        let request = proto::IssueRequest {
            csr_der,
            attestation: Some(attestation),
        };
        let response = self
            .rpc
            .issue(request)
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// Renew with the certificate this client presents.
    pub async fn renew(&mut self, csr_der: Vec<u8>) -> Result<IssuedCertificate, ClientError> {
        let response = self
            .rpc
            .renew(proto::RenewRequest { csr_der })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// The trust bundle PEM and trust domain.
    pub async fn trust_bundle(&mut self) -> Result<(String, String), ClientError> {
        let response = self
            .rpc
            .get_trust_bundle(proto::GetTrustBundleRequest {})
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok((response.trust_bundle_pem, response.trust_domain))
    }

    /// The status of a serial.
    pub async fn status(&mut self, serial: &str) -> Result<StatusAnswer, ClientError> {
        let response = self
            .rpc
            .get_status(proto::GetStatusRequest {
                serial: serial.to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        let status = match response.status() {
            proto::Status::Good => "good",
            proto::Status::Revoked => "revoked",
            proto::Status::Unknown | proto::Status::Unspecified => "unknown",
        };
        Ok(StatusAnswer {
            status,
            revoked_at: response.revoked_at_unix,
            revocation_reason: response.revocation_reason,
        })
    }
}

/// Client of `certd.v1.Admin` over the daemon's admin socket.
pub struct AdminClient {
    target: String,
    rpc: AdminRpc<Channel>,
}

impl AdminClient {
    /// Connects to the admin socket at `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let target = socket.display().to_string();
        let path: PathBuf = socket.to_owned();
        // The URI is required by the HTTP/2 layer but unused: the connector
        // always dials the socket.
        let channel =
            Endpoint::from_static("http://certd.admin")
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|e| ClientError::Unreachable {
                    target: target.clone(),
                    reason: format!(
                        "{} (is `certd serve` running with this data directory?)",
                        error_chain(&e)
                    ),
                })?;
        Ok(AdminClient {
            target,
            rpc: AdminRpc::new(channel).max_decoding_message_size(64 * 1024 * 1024),
        })
    }

    /// Connects to a remote certd's admin API over mTLS at `server`,
    /// presenting an operator certificate.
    pub async fn connect_remote(
        server: &str,
        tls: &TlsClientSettings,
    ) -> Result<Self, ClientError> {
        let workload = WorkloadClient::connect(server, tls).await?;
        Ok(AdminClient {
            target: server.to_owned(),
            rpc: AdminRpc::new(workload.channel).max_decoding_message_size(64 * 1024 * 1024),
        })
    }

    /// Has the daemon sign an operator certificate for `name`.
    pub async fn issue_operator(
        &mut self,
        name: &str,
        csr_der: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<CertificateSummary, ClientError> {
        let response = self
            .rpc
            .issue_operator_certificate(proto::IssueOperatorCertificateRequest {
                name: name.to_owned(),
                csr_der,
                ttl_seconds: ttl.map_or(0, |d| d.as_secs()),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(summary_from_proto(response.into_inner()))
    }

    /// Creates `count` join tokens for an entry; returns the secrets,
    /// their expiry and the entry.
    pub async fn create_join_tokens(
        &mut self,
        target: &TokenFor,
        ttl: Option<Duration>,
        count: u32,
    ) -> Result<CreatedTokens, ClientError> {
        use proto::create_join_token_request::Target;
        let target = match target {
            TokenFor::Entry(id) => Target::EntryId(id.clone()),
            TokenFor::Service(service) => Target::Service(service.clone()),
        };
        let response = self
            .rpc
            .create_join_token(proto::CreateJoinTokenRequest {
                target: Some(target),
                ttl_seconds: ttl.map_or(0, |d| d.as_secs()),
                count,
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(CreatedTokens {
            tokens: response.tokens,
            expires_at: response.expires_at_unix,
            entry: response.entry.map(EntrySummary::from).unwrap_or_default(),
        })
    }

    /// Creates a registration entry.
    pub async fn create_entry(&mut self, spec: &EntrySpec) -> Result<EntrySummary, ClientError> {
        let response = self
            .rpc
            .create_entry(proto::CreateEntryRequest {
                service: spec.service.clone(),
                content: Some(entry_content(spec)),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// Replaces entry `id`'s content with `spec` (whose service is ignored:
    /// an entry's service cannot change).
    pub async fn update_entry(
        &mut self,
        id: &str,
        spec: &EntrySpec,
    ) -> Result<EntrySummary, ClientError> {
        let response = self
            .rpc
            .update_entry(proto::UpdateEntryRequest {
                id: id.to_owned(),
                content: Some(entry_content(spec)),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// Deletes a registration entry; returns what it was.
    pub async fn delete_entry(&mut self, id: &str) -> Result<EntrySummary, ClientError> {
        let response = self
            .rpc
            .delete_entry(proto::DeleteEntryRequest { id: id.to_owned() })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// Every registration entry, or one service's.
    pub async fn entries(
        &mut self,
        service: Option<&str>,
    ) -> Result<Vec<EntrySummary>, ClientError> {
        let response = self
            .rpc
            .list_entries(proto::ListEntriesRequest {
                service: service.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response
            .into_inner()
            .entries
            .into_iter()
            .map(EntrySummary::from)
            .collect())
    }

    /// Has the daemon sign `csr_der` for `service`.
    pub async fn issue(
        &mut self,
        service: &str,
        csr_der: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<CertificateSummary, ClientError> {
        let response = self
            .rpc
            .issue_for_ci(proto::IssueForCiRequest {
                service: service.to_owned(),
                csr_der,
                ttl_seconds: ttl.map_or(0, |d| d.as_secs()),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(summary_from_proto(response.into_inner()))
    }

    /// The `limit` most recently issued records, or one service's.
    pub async fn list(
        &mut self,
        service: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CertificateSummary>, ClientError> {
        let response = self
            .rpc
            .list_certificates(proto::ListCertificatesRequest {
                service: service.unwrap_or_default().to_owned(),
                limit,
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response
            .into_inner()
            .certificates
            .into_iter()
            .map(summary_from_proto)
            .collect())
    }

    pub async fn show(&mut self, serial: &str) -> Result<CertificateSummary, ClientError> {
        let response = self
            .rpc
            .get_certificate(proto::GetCertificateRequest {
                serial: serial.to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(summary_from_proto(response.into_inner()))
    }
}

/// What a revocation did, as the admin API reports it.
#[derive(Debug, Clone)]
pub struct RevokedSummary {
    pub serial: String,
    pub service: String,
    pub revoked_at: i64,
    pub reason: String,
    pub newly_revoked: bool,
}

#[derive(Debug, Clone)]
pub struct RevokeSummary {
    pub certificates: Vec<RevokedSummary>,
    pub crl_number: u64,
}

impl AdminClient {
    /// Revokes one certificate.
    pub async fn revoke_serial(
        &mut self,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevokeSummary, ClientError> {
        self.revoke(
            proto::revoke_request::Target::Serial(serial.to_owned()),
            reason,
        )
        .await
    }

    /// Revokes every unexpired certificate of a service.
    pub async fn revoke_service(
        &mut self,
        service: &str,
        reason: RevocationReason,
    ) -> Result<RevokeSummary, ClientError> {
        self.revoke(
            proto::revoke_request::Target::Service(service.to_owned()),
            reason,
        )
        .await
    }

    async fn revoke(
        &mut self,
        target: proto::revoke_request::Target,
        reason: RevocationReason,
    ) -> Result<RevokeSummary, ClientError> {
        let response = self
            .rpc
            .revoke(proto::RevokeRequest {
                target: Some(target),
                reason: reason.name().to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(RevokeSummary {
            certificates: response
                .certificates
                .into_iter()
                .map(|c| RevokedSummary {
                    serial: c.serial,
                    service: c.service,
                    revoked_at: c.revoked_at_unix,
                    reason: c.reason,
                    newly_revoked: c.newly_revoked,
                })
                .collect(),
            crl_number: response.crl_number,
        })
    }
}

/// Join tokens as the admin API returns them.
#[derive(Debug, Clone)]
pub struct CreatedTokens {
    pub tokens: Vec<String>,
    pub expires_at: i64,
    pub entry: EntrySummary,
}

/// A registration entry as the admin API returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EntrySummary {
    pub id: String,
    pub service: String,
    pub spiffe_id: String,
    pub dns_names: Vec<String>,
    /// Seconds; `None` for the configured default.
    pub ttl_seconds: Option<u64>,
    pub selectors: Vec<String>,
    pub created_at: i64,
    pub created_by: String,
}

impl From<proto::Entry> for EntrySummary {
    fn from(entry: proto::Entry) -> Self {
        EntrySummary {
            id: entry.id,
            service: entry.service,
            spiffe_id: entry.spiffe_id,
            dns_names: entry.dns_names,
            ttl_seconds: (entry.ttl_seconds > 0).then_some(entry.ttl_seconds),
            selectors: entry.selectors,
            created_at: entry.created_at_unix,
            created_by: entry.created_by,
        }
    }
}

/// The wire form of what an entry grants.
fn entry_content(spec: &EntrySpec) -> proto::EntryContent {
    proto::EntryContent {
        selectors: spec.selectors.clone(),
        spiffe_id: spec.spiffe_id.clone().unwrap_or_default(),
        dns_names: spec.dns_names.clone(),
        ttl_seconds: spec.ttl.map_or(0, |d| d.as_secs()),
    }
}

/// The wire form of an entry.
pub(super) fn entry_to_proto(entry: EntryRecord) -> proto::Entry {
    proto::Entry {
        id: entry.id,
        service: entry.service.to_string(),
        spiffe_id: entry.spiffe_id.into_string(),
        dns_names: entry
            .dns_names
            .into_iter()
            .map(DnsName::into_string)
            .collect(),
        ttl_seconds: entry.ttl_seconds.unwrap_or(0),
        selectors: entry
            .selectors
            .into_iter()
            .map(Selector::into_string)
            .collect(),
        created_at_unix: entry.created_at,
        created_by: entry.created_by,
    }
}

/// One audit entry, as the admin API returns it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditLine {
    pub at: i64,
    pub event: String,
    pub allowed: bool,
    pub caller: String,
    pub attestation: String,
    pub service: String,
    pub serial: String,
    pub reason: String,
    pub selectors: Vec<String>,
}

impl From<crate::store::AuditEntry> for AuditLine {
    fn from(entry: crate::store::AuditEntry) -> Self {
        AuditLine {
            at: entry.at,
            event: entry.event,
            allowed: entry.allowed,
            caller: entry.caller,
            attestation: entry.attestation.unwrap_or_default(),
            service: entry.service.unwrap_or_default(),
            serial: entry.serial.unwrap_or_default(),
            reason: entry.reason.unwrap_or_default(),
            selectors: entry
                .selectors
                .into_iter()
                .map(Selector::into_string)
                .collect(),
        }
    }
}

impl From<proto::AuditEntry> for AuditLine {
    fn from(entry: proto::AuditEntry) -> Self {
        AuditLine {
            at: entry.at_unix,
            event: entry.event,
            allowed: entry.allowed,
            caller: entry.caller,
            attestation: entry.attestation,
            service: entry.service,
            serial: entry.serial,
            reason: entry.reason,
            selectors: entry.selectors,
        }
    }
}

/// The wire form of an audit entry.
impl From<AuditLine> for proto::AuditEntry {
    fn from(line: AuditLine) -> Self {
        proto::AuditEntry {
            at_unix: line.at,
            event: line.event,
            allowed: line.allowed,
            caller: line.caller,
            attestation: line.attestation,
            service: line.service,
            serial: line.serial,
            reason: line.reason,
            selectors: line.selectors,
        }
    }
}

impl AdminClient {
    /// Audit entries at or after `since` (Unix seconds), at most `limit`.
    pub async fn audit(&mut self, since: i64, limit: u32) -> Result<Vec<AuditLine>, ClientError> {
        let response = self
            .rpc
            .list_audit(proto::ListAuditRequest {
                since_unix: since,
                limit,
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(response.entries.into_iter().map(AuditLine::from).collect())
    }
}

impl WorkloadClient {
    /// The current CRL (DER) and its number.
    pub async fn crl(&mut self) -> Result<(Vec<u8>, u64), ClientError> {
        let response = self
            .rpc
            .get_crl(proto::GetCrlRequest {})
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok((response.crl_der, response.crl_number))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn summary_from_proto(record: proto::CertificateRecord) -> CertificateSummary {
    CertificateSummary {
        serial: record.serial,
        service: record.service,
        dns_names: record.dns_names,
        uris: record.uris,
        not_before: record.not_before_unix,
        not_after: record.not_after_unix,
        issued_at: record.issued_at_unix,
        sha256_fingerprint: record.sha256_fingerprint,
        attestation: record.attestation,
        entry_id: (!record.entry_id.is_empty()).then_some(record.entry_id),
        renewed_from: (!record.renewed_from.is_empty()).then_some(record.renewed_from),
        status: record.status,
        certificate_pem: record.certificate_pem,
        chain_pem: record.chain_pem,
        trust_bundle_pem: record.trust_bundle_pem,
    }
}

/// The wire form of a summary.
pub(super) fn summary_to_proto(summary: CertificateSummary) -> proto::CertificateRecord {
    proto::CertificateRecord {
        serial: summary.serial,
        service: summary.service,
        dns_names: summary.dns_names,
        uris: summary.uris,
        not_before_unix: summary.not_before,
        not_after_unix: summary.not_after,
        issued_at_unix: summary.issued_at,
        sha256_fingerprint: summary.sha256_fingerprint,
        attestation: summary.attestation,
        entry_id: summary.entry_id.unwrap_or_default(),
        renewed_from: summary.renewed_from.unwrap_or_default(),
        status: summary.status,
        certificate_pem: summary.certificate_pem,
        chain_pem: summary.chain_pem,
        trust_bundle_pem: summary.trust_bundle_pem,
    }
}
