//! The admin API's client: operators over the local socket or mTLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{
    CONNECT_TIMEOUT, ClientError, REQUEST_TIMEOUT, TlsClientSettings, WorkloadClient, error_chain,
    refused,
};
use crate::api::proto;
use crate::api::proto::admin_client::AdminClient as AdminRpc;
use crate::authority::{
    CertificateSummary, CrlWait, Listing, ListingRequest, RevokeTarget, TokenFor,
};
use crate::ca::RevocationReason;
use crate::registry::EntrySpec;

mod acme;

pub use acme::{AcmeAccountView, AcmeEabView, AcmeOrderView, AcmePolicyView};

/// Client of `certd.v1.Admin` over the daemon's admin socket.
pub struct AdminClient {
    target: String,
    rpc: AdminRpc<Channel>,
}

/// Whether connecting failed because this user may not use the socket.
fn denied(error: &(dyn std::error::Error + 'static)) -> bool {
    super::causes(error).any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    })
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
                    reason: if denied(&e) {
                        // The daemon runs; this user may not talk to it.
                        format!(
                            "{}: the admin socket belongs to the user certd serves as; run the command as that user (e.g. `sudo -u certd certd …`), or as an operator over mTLS (--server, --cert, --key)",
                            error_chain(&e)
                        )
                    } else {
                        format!(
                            "{} (is `certd serve` running with this data directory?)",
                            error_chain(&e)
                        )
                    },
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

    /// Streams a backup of the daemon's database into `out`; returns how
    /// many bytes it wrote. The backup ends with its own checksum, which
    /// the caller should verify (`store::sled::verify_backup`).
    pub async fn backup(
        &mut self,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ClientError> {
        let mut chunks = self
            .rpc
            .backup(proto::BackupRequest {})
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        let mut written = 0u64;
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|s| refused(&self.target, s))?
        {
            out.write_all(&chunk.data)
                .map_err(|e| ClientError::invalid("cannot write the backup", e))?;
            written += chunk.data.len() as u64;
        }
        Ok(written)
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

    /// The unused join tokens, optionally one service's.
    pub async fn join_tokens(
        &mut self,
        service: Option<&str>,
    ) -> Result<Vec<crate::authority::JoinTokenView>, ClientError> {
        let response = self
            .rpc
            .list_join_tokens(proto::ListJoinTokensRequest {
                service: service.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(join_tokens_from_proto(response))
    }

    /// Revokes unused join tokens; returns those revoked.
    pub async fn revoke_join_tokens(
        &mut self,
        which: &crate::authority::TokensToRevoke,
    ) -> Result<Vec<crate::authority::JoinTokenView>, ClientError> {
        use crate::authority::TokensToRevoke;
        let request = match which {
            TokensToRevoke::Ids(ids) => proto::RevokeJoinTokensRequest {
                ids: ids.clone(),
                service: String::new(),
            },
            TokensToRevoke::Service(service) => proto::RevokeJoinTokensRequest {
                ids: Vec::new(),
                service: service.clone(),
            },
        };
        let response = self
            .rpc
            .revoke_join_tokens(request)
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(join_tokens_from_proto(response))
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

    /// Adds a federation relationship (`certd federation add`).
    pub async fn add_federation(
        &mut self,
        spec: &crate::federation::FederationSpec,
    ) -> Result<FederationView, ClientError> {
        let response = self
            .rpc
            .add_federation(proto::AddFederationRequest {
                trust_domain: spec.trust_domain.clone(),
                bundle_endpoint_url: spec.bundle_endpoint_url.clone(),
                profile: spec.profile.clone(),
                endpoint_spiffe_id: spec.endpoint_spiffe_id.clone().unwrap_or_default(),
                endpoint_ca_pem: spec.endpoint_ca_pem.clone().unwrap_or_default(),
                trust_bundle: spec.trust_bundle.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// Removes the relationship with `trust_domain`.
    pub async fn remove_federation(
        &mut self,
        trust_domain: &str,
    ) -> Result<FederationView, ClientError> {
        let response = self
            .rpc
            .remove_federation(proto::RemoveFederationRequest {
                trust_domain: trust_domain.to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// Every federation relationship, or the one with `trust_domain`.
    pub async fn federations(
        &mut self,
        trust_domain: Option<&str>,
    ) -> Result<Vec<FederationView>, ClientError> {
        let response = self
            .rpc
            .list_federations(proto::ListFederationsRequest {
                trust_domain: trust_domain.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response
            .into_inner()
            .federations
            .into_iter()
            .map(FederationView::from)
            .collect())
    }

    /// The token policy: its version and policy file.
    pub async fn policy(&mut self) -> Result<(u64, String), ClientError> {
        let policy = self
            .rpc
            .get_policy(proto::GetPolicyRequest {})
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok((policy.version, policy.text))
    }

    /// Replaces the token policy with the policy file `text`; returns the
    /// new version and how many grants it holds.
    pub async fn replace_policy(
        &mut self,
        text: String,
        expected_version: Option<u64>,
    ) -> Result<(u64, u32), ClientError> {
        let policy = self
            .rpc
            .replace_policy(proto::ReplacePolicyRequest {
                text,
                expected_version,
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok((policy.version, policy.grants))
    }

    /// What the token endpoint would answer `from` asking for `audience`
    /// and `scopes`: with client credentials, or, given `exchange` (the
    /// subject issuer and the chain's length), in a token exchange.
    pub async fn explain_policy(
        &mut self,
        from: &str,
        audience: &str,
        scopes: &[String],
        exchange: Option<(&str, u32)>,
    ) -> Result<proto::ExplainPolicyResponse, ClientError> {
        let (on_behalf_of, chain) = exchange.unwrap_or_default();
        Ok(self
            .rpc
            .explain_policy(proto::ExplainPolicyRequest {
                from: from.to_owned(),
                audience: audience.to_owned(),
                scopes: scopes.to_vec(),
                on_behalf_of: on_behalf_of.to_owned(),
                chain,
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner())
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
        options: crate::authority::OperatorIssue,
    ) -> Result<CertificateSummary, ClientError> {
        let response = self
            .rpc
            .issue_for_ci(proto::IssueForCiRequest {
                service: service.to_owned(),
                csr_der,
                ttl_seconds: ttl.map_or(0, |d| d.as_secs()),
                unregistered: options.unregistered,
                renewable: options.renewable,
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
        let request = ListingRequest {
            service: service.map(str::to_owned),
            limit: limit as usize,
            ..ListingRequest::default()
        };
        Ok(self.list_page(&request).await?.certificates)
    }

    /// One page of certificates, newest first, and the next page's token.
    pub async fn list_page(&mut self, request: &ListingRequest) -> Result<Listing, ClientError> {
        let response = self
            .rpc
            .list_certificates(proto::ListCertificatesRequest {
                service: request.service.clone().unwrap_or_default(),
                limit: u32::try_from(request.limit).unwrap_or(u32::MAX),
                status: request.status.clone().unwrap_or_default(),
                expiring_within_seconds: request.expiring_within.map_or(0, |d| d.as_secs()),
                page_token: request.page_token.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(Listing {
            certificates: response
                .certificates
                .into_iter()
                .map(summary_from_proto)
                .collect(),
            next_page_token: (!response.next_page_token.is_empty())
                .then_some(response.next_page_token),
        })
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

impl AdminClient {
    /// Revokes one certificate; answers once the CRL lists it.
    pub async fn revoke_serial(
        &mut self,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevokeSummary, ClientError> {
        let target = RevokeTarget::Serial(serial.to_owned());
        self.revoke(&target, reason, CrlWait::UntilListed).await
    }

    /// Revokes every unexpired certificate of a service.
    pub async fn revoke_service(
        &mut self,
        service: &str,
        reason: RevocationReason,
    ) -> Result<RevokeSummary, ClientError> {
        let target = RevokeTarget::Service(service.to_owned());
        self.revoke(&target, reason, CrlWait::UntilListed).await
    }

    /// Revokes every unexpired certificate of a serial's chain of renewals.
    pub async fn revoke_lineage(
        &mut self,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevokeSummary, ClientError> {
        let target = RevokeTarget::Lineage(serial.to_owned());
        self.revoke(&target, reason, CrlWait::UntilListed).await
    }

    /// Revokes what `target` names; with `CrlWait::No` the answer comes
    /// once the revocation is durable, with `crl_number` 0.
    pub async fn revoke(
        &mut self,
        target: &RevokeTarget,
        reason: RevocationReason,
        wait: CrlWait,
    ) -> Result<RevokeSummary, ClientError> {
        let target = match target.clone() {
            RevokeTarget::Serial(serial) => proto::revoke_request::Target::Serial(serial),
            RevokeTarget::Service(service) => proto::revoke_request::Target::Service(service),
            RevokeTarget::Lineage(serial) => proto::revoke_request::Target::Lineage(serial),
        };
        let response = self
            .rpc
            .revoke(proto::RevokeRequest {
                target: Some(target),
                reason: reason.name().to_owned(),
                no_wait_for_crl: wait == CrlWait::No,
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

/// What a revocation did, as the admin API reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevokedSummary {
    pub serial: String,
    pub service: String,
    pub revoked_at: i64,
    pub reason: String,
    pub newly_revoked: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RevokeSummary {
    pub certificates: Vec<RevokedSummary>,
    pub crl_number: u64,
}

/// What the authority itself answers (`revoke --offline`), in the form the
/// admin API gives it.
impl From<crate::authority::RevocationResult> for RevokeSummary {
    fn from(result: crate::authority::RevocationResult) -> Self {
        RevokeSummary {
            certificates: result
                .certificates
                .into_iter()
                .map(|revoked| {
                    let revocation =
                        revoked
                            .record
                            .revocation
                            .unwrap_or(crate::store::Revocation {
                                revoked_at: 0,
                                reason_code: 0,
                            });
                    RevokedSummary {
                        serial: revoked.record.serial.to_hex(),
                        service: revoked.record.service.to_string(),
                        revoked_at: revocation.revoked_at,
                        reason: crate::ca::reason_name(revocation.reason_code).to_owned(),
                        newly_revoked: revoked.newly_revoked,
                    }
                })
                .collect(),
            crl_number: result.crl_number,
        }
    }
}

/// Join tokens as the admin API returns them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedTokens {
    pub tokens: Vec<String>,
    pub expires_at: i64,
    pub entry: EntrySummary,
}

/// A federation relationship as the admin API returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FederationView {
    pub trust_domain: String,
    pub bundle_endpoint_url: String,
    /// `https_web` or `https_spiffe`.
    pub profile: String,
    /// `https_spiffe`: the SPIFFE ID the endpoint presents.
    pub endpoint_spiffe_id: Option<String>,
    /// `https_web`: whether the operator gave the endpoint's CA.
    pub endpoint_ca_given: bool,
    pub created_at: i64,
    pub created_by: String,
    /// The last good bundle, if any yet.
    pub bundle: Option<ForeignBundleView>,
    /// The daemon's last good fetch since it started, if any.
    pub last_fetched_at: Option<i64>,
    /// Fetches that failed in a row, and the last one's reason.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

/// A foreign trust domain's bundle as certd last accepted it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForeignBundleView {
    pub sequence: u64,
    pub refresh_hint_seconds: Option<u64>,
    pub accepted_at: i64,
    /// The document, as the peer served it.
    pub json: String,
}

impl From<proto::Federation> for FederationView {
    fn from(federation: proto::Federation) -> Self {
        FederationView {
            trust_domain: federation.trust_domain,
            bundle_endpoint_url: federation.bundle_endpoint_url,
            profile: federation.profile,
            endpoint_spiffe_id: (!federation.endpoint_spiffe_id.is_empty())
                .then_some(federation.endpoint_spiffe_id),
            endpoint_ca_given: federation.endpoint_ca_given,
            created_at: federation.created_at,
            created_by: federation.created_by,
            bundle: federation.bundle.map(|bundle| ForeignBundleView {
                sequence: bundle.sequence,
                refresh_hint_seconds: (bundle.refresh_hint_seconds > 0)
                    .then_some(bundle.refresh_hint_seconds),
                accepted_at: bundle.accepted_at,
                json: bundle.json,
            }),
            last_fetched_at: (federation.last_fetched_at > 0).then_some(federation.last_fetched_at),
            consecutive_failures: federation.consecutive_failures,
            last_error: (!federation.last_error.is_empty()).then_some(federation.last_error),
        }
    }
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
    /// The node agent it is issued through, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// A node agent's own entry.
    pub agent: bool,
    /// The audiences its JWT-SVIDs may name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_audiences: Vec<String>,
    /// The foreign trust domains its workloads trust.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub federates_with: Vec<String>,
    /// After a create or update: what may keep it from ever being used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
            parent_id: (!entry.parent_id.is_empty()).then_some(entry.parent_id),
            agent: entry.agent,
            jwt_audiences: entry.jwt_audiences,
            federates_with: entry.federates_with,
            warnings: entry.warnings,
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
        parent_id: spec.parent.clone().unwrap_or_default(),
        agent: spec.agent,
        jwt_audiences: spec.jwt_audiences.clone(),
        federates_with: spec.federates_with.clone(),
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

fn join_tokens_from_proto(
    response: proto::ListJoinTokensResponse,
) -> Vec<crate::authority::JoinTokenView> {
    response
        .tokens
        .into_iter()
        .map(|token| crate::authority::JoinTokenView {
            id: token.id,
            entry_id: (!token.entry_id.is_empty()).then_some(token.entry_id),
            service: (!token.service.is_empty()).then_some(token.service),
            selectors: token.selectors,
            created_at: token.created_at_unix,
            expires_at: token.expires_at_unix,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user who may not use the socket is told whose it is, not asked
    /// whether certd runs (tests run as root, which no socket refuses).
    #[test]
    fn a_denied_connection_is_told_apart_from_a_missing_daemon() {
        #[derive(Debug, thiserror::Error)]
        #[error("connecting failed")]
        struct Wrapper(#[source] std::io::Error);
        let denied_error = Wrapper(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(denied(&denied_error));
        let missing = Wrapper(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!denied(&missing));
    }
}
