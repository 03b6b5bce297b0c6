//! `certd.v1.Admin`: operator RPCs, served on the local admin socket.
//!
//! Who may call them: on the local admin socket, whoever can connect (it
//! lives in the private data directory and is mode 0600, so only the
//! daemon's user and root), as admin; over mTLS on the gRPC port, an
//! operator certificate whose roles allow the RPC (`policy::operator_roles`).

use std::time::Duration;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::client::AuditLine;
use super::convert::{entry_to_proto, federation_to_proto, summary_to_proto};
use super::proto;
use super::proto::admin_server::Admin;
use super::status;
use crate::authority::{
    Authority, Caller, CrlWait, ListingRequest, RevokeTarget, TokenFor, TokensToRevoke,
};
use crate::ca::{RevocationReason, reason_name};
use crate::policy::operator_roles::AdminAction;
use crate::registry::EntrySpec;

pub(crate) struct AdminApi {
    authority: Authority,
    access: AdminAccess,
}

/// How callers reach this instance of the admin API, which decides how
/// they are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAccess {
    /// The 0600 Unix socket: whoever can connect is an operator.
    LocalSocket,
    /// The gRPC port: only an operator certificate listed in `admins`.
    Mtls,
}

impl AdminApi {
    pub fn new(authority: Authority, access: AdminAccess) -> Self {
        AdminApi { authority, access }
    }

    /// Who is calling, or the refusal if they may not.
    #[allow(clippy::result_large_err)]
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        action: &AdminAction<'_>,
    ) -> Result<Caller, Status> {
        match self.access {
            // The socket is the daemon's own user: the admin role.
            AdminAccess::LocalSocket => Ok(socket_caller(request)),
            AdminAccess::Mtls => {
                let peer = request.remote_addr().map_or_else(
                    || "peer unknown".to_owned(),
                    |address| format!("peer {address}"),
                );
                let certificates = request.peer_certs();
                let leaf = certificates.as_ref().and_then(|chain| chain.first());
                self.authority
                    .authorize_admin(&peer, leaf.map(|c| c.as_ref()), action)
                    .await
                    .map_err(|e| status(&e))
            }
        }
    }

    /// The answer of the calls that return one certificate's record.
    #[allow(clippy::result_large_err)]
    fn record(
        &self,
        record: crate::Result<crate::store::IssuanceRecord>,
    ) -> Result<Response<proto::CertificateRecord>, Status> {
        let record = record.map_err(|e| status(&e))?;
        let now = self.authority.now();
        Ok(Response::new(summary_to_proto(
            self.authority.summary(&record, now),
        )))
    }
}

fn socket_caller<T>(request: &Request<T>) -> Caller {
    let uid = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid().to_string())
        .unwrap_or_else(|| "unknown".into());
    Caller(format!("admin-socket uid={uid}"))
}

/// Records listed when the caller asks for no particular number.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// Most records one listing returns (about 300 bytes each on the wire).
const MAX_LIST_LIMIT: usize = 100_000;
/// Audit entries returned when the caller asks for no particular number.
const DEFAULT_AUDIT_LIMIT: usize = 1000;
/// Most audit entries one call returns.
const MAX_AUDIT_LIMIT: usize = 100_000;

/// An entry as asked for on the wire; absent content is an empty one,
/// which validation refuses (an entry needs a selector).
fn entry_spec(service: String, content: Option<proto::EntryContent>) -> EntrySpec {
    let content = content.unwrap_or_default();
    EntrySpec {
        service,
        selectors: content.selectors,
        spiffe_id: (!content.spiffe_id.is_empty()).then_some(content.spiffe_id),
        dns_names: content.dns_names,
        ttl: ttl(content.ttl_seconds),
        parent: (!content.parent_id.is_empty()).then_some(content.parent_id),
        agent: content.agent,
        jwt_audiences: content.jwt_audiences,
        federates_with: content.federates_with,
    }
}

/// proto3's empty string, which stands for "not given".
fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// Sends what it is given as backup chunks; from a blocking thread.
struct ChunkSender(tokio::sync::mpsc::Sender<Result<proto::BackupChunk, Status>>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let chunk = proto::BackupChunk { data: buf.to_vec() };
        self.0
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    type BackupStream = tokio_stream::wrappers::ReceiverStream<Result<proto::BackupChunk, Status>>;

    async fn backup(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let caller = self.authorize(&request, &AdminAction::Backup).await?;
        let (chunks, stream) = tokio::sync::mpsc::channel(16);
        let authority = self.authority.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkSender(chunks.clone());
            if let Err(error) = authority.backup(&caller, &mut out) {
                tracing::warn!(error = %crate::error_kind::with_causes(&error), "backup failed");
                let _ = chunks.blocking_send(Err(status(&error)));
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            stream,
        )))
    }

    async fn create_join_token(
        &self,
        request: Request<proto::CreateJoinTokenRequest>,
    ) -> Result<Response<proto::CreateJoinTokenResponse>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::CreateJoinToken)
            .await?;
        let message = request.into_inner();
        let count = usize::try_from(message.count.max(1)).unwrap_or(usize::MAX);
        use proto::create_join_token_request::Target;
        let target = match message.target {
            Some(Target::EntryId(id)) => TokenFor::Entry(id),
            Some(Target::Service(service)) => TokenFor::Service(service),
            None => {
                return Err(status(&crate::Error::InvalidArgument(
                    "name the registration entry (or service) the tokens are for".into(),
                )));
            }
        };
        let created = self
            .authority
            .create_join_tokens(&caller, &target, ttl(message.ttl_seconds), count)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(proto::CreateJoinTokenResponse {
            tokens: created
                .tokens
                .iter()
                .map(|t| t.expose_secret().to_owned())
                .collect(),
            expires_at_unix: created.expires_at,
            entry: Some(entry_to_proto(created.entry)),
        }))
    }

    async fn issue_for_ci(
        &self,
        request: Request<proto::IssueForCiRequest>,
    ) -> Result<Response<proto::CertificateRecord>, Status> {
        let caller = self
            .authorize(
                &request,
                &AdminAction::IssueCertificate {
                    service: &request.get_ref().service,
                },
            )
            .await?;
        let message = request.into_inner();
        let issued = self
            .authority
            .issue_for_operator(
                &caller,
                &message.service,
                &message.csr_der,
                ttl(message.ttl_seconds),
                crate::authority::OperatorIssue {
                    unregistered: message.unregistered,
                    renewable: message.renewable,
                },
            )
            .await;
        self.record(issued.map(|issued| issued.record))
    }

    async fn list_certificates(
        &self,
        request: Request<proto::ListCertificatesRequest>,
    ) -> Result<Response<proto::ListCertificatesResponse>, Status> {
        self.authorize(&request, &AdminAction::ListCertificates)
            .await?;
        let message = request.into_inner();
        let limit = match message.limit {
            0 => DEFAULT_LIST_LIMIT,
            limit => (limit as usize).min(MAX_LIST_LIMIT),
        };
        let listing = ListingRequest {
            service: non_empty(message.service),
            status: non_empty(message.status),
            expiring_within: (message.expiring_within_seconds > 0)
                .then(|| Duration::from_secs(message.expiring_within_seconds)),
            page_token: non_empty(message.page_token),
            limit,
        };
        let listing = self
            .authority
            .listing(&listing)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(proto::ListCertificatesResponse {
            certificates: listing
                .certificates
                .into_iter()
                .map(summary_to_proto)
                .collect(),
            next_page_token: listing.next_page_token.unwrap_or_default(),
        }))
    }

    async fn revoke(
        &self,
        request: Request<proto::RevokeRequest>,
    ) -> Result<Response<proto::RevokeResponse>, Status> {
        let caller = self.authorize(&request, &AdminAction::Revoke).await?;
        let message = request.into_inner();
        let reason = if message.reason.is_empty() {
            RevocationReason::Unspecified
        } else {
            message
                .reason
                .parse()
                .map_err(|e: String| status(&crate::Error::InvalidArgument(e)))?
        };
        let target = match message.target {
            Some(proto::revoke_request::Target::Serial(serial)) => RevokeTarget::Serial(serial),
            Some(proto::revoke_request::Target::Service(service)) => RevokeTarget::Service(service),
            Some(proto::revoke_request::Target::Lineage(serial)) => RevokeTarget::Lineage(serial),
            None => {
                return Err(status(&crate::Error::InvalidArgument(
                    "name a serial or a service to revoke".into(),
                )));
            }
        };
        let wait = if message.no_wait_for_crl {
            CrlWait::No
        } else {
            CrlWait::UntilListed
        };
        // On a task of its own, so that it runs to its end (and its audit
        // entries) even if the caller goes away meanwhile: dropped halfway,
        // a service's revocation would leave some certificates revoked and
        // none of them audited.
        let authority = self.authority.clone();
        let result = self
            .authority
            .run_to_completion(async move {
                authority
                    .revoke_target(&caller, &target, reason, wait)
                    .await
            })
            .await
            .map_err(|error| {
                status(&crate::Error::Revocation(
                    crate::revocation::RevocationError::RequestStopped(error),
                ))
            })?
            .map_err(|e| status(&e))?;
        let certificates = result
            .certificates
            .iter()
            .map(|revoked| {
                let revocation = revoked
                    .record
                    .revocation
                    .unwrap_or(crate::store::Revocation {
                        revoked_at: 0,
                        reason_code: 0,
                    });
                proto::RevokedCertificate {
                    serial: revoked.record.serial.to_hex(),
                    service: revoked.record.service.to_string(),
                    revoked_at_unix: revocation.revoked_at,
                    reason: reason_name(revocation.reason_code).to_owned(),
                    newly_revoked: revoked.newly_revoked,
                }
            })
            .collect();
        Ok(Response::new(proto::RevokeResponse {
            certificates,
            crl_number: result.crl_number,
        }))
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        self.authorize(&request, &AdminAction::ListAudit).await?;
        let message = request.into_inner();
        let limit = if message.limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            message.limit as usize
        };
        let entries = self
            .authority
            .store()
            .audit_since(message.since_unix, limit.min(MAX_AUDIT_LIMIT))
            .await
            .map_err(|e| status(&e.into()))?
            .into_iter()
            .map(|entry| AuditLine::from(entry).into())
            .collect();
        Ok(Response::new(proto::ListAuditResponse { entries }))
    }

    async fn issue_operator_certificate(
        &self,
        request: Request<proto::IssueOperatorCertificateRequest>,
    ) -> Result<Response<proto::CertificateRecord>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::IssueOperatorCertificate)
            .await?;
        let message = request.into_inner();
        let issued = self
            .authority
            .issue_operator_certificate(
                &caller,
                &message.name,
                &message.csr_der,
                ttl(message.ttl_seconds),
            )
            .await;
        self.record(issued.map(|issued| issued.record))
    }

    async fn get_certificate(
        &self,
        request: Request<proto::GetCertificateRequest>,
    ) -> Result<Response<proto::CertificateRecord>, Status> {
        self.authorize(&request, &AdminAction::GetCertificate)
            .await?;
        self.record(self.authority.certificate(&request.get_ref().serial).await)
    }

    async fn create_entry(
        &self,
        request: Request<proto::CreateEntryRequest>,
    ) -> Result<Response<proto::Entry>, Status> {
        let caller = self.authorize(&request, &AdminAction::CreateEntry).await?;
        let message = request.into_inner();
        let spec = entry_spec(message.service, message.content);
        let entry = self
            .authority
            .create_entry(&caller, &spec)
            .await
            .map_err(|e| status(&e))?;
        let warnings = self.authority.entry_warnings(&entry);
        Ok(Response::new(proto::Entry {
            warnings,
            ..entry_to_proto(entry)
        }))
    }

    async fn update_entry(
        &self,
        request: Request<proto::UpdateEntryRequest>,
    ) -> Result<Response<proto::Entry>, Status> {
        let caller = self.authorize(&request, &AdminAction::UpdateEntry).await?;
        let message = request.into_inner();
        // No service: the entry keeps its own.
        let spec = entry_spec(String::new(), message.content);
        let entry = self
            .authority
            .update_entry(&caller, &message.id, &spec)
            .await
            .map_err(|e| status(&e))?;
        let warnings = self.authority.entry_warnings(&entry);
        Ok(Response::new(proto::Entry {
            warnings,
            ..entry_to_proto(entry)
        }))
    }

    async fn delete_entry(
        &self,
        request: Request<proto::DeleteEntryRequest>,
    ) -> Result<Response<proto::Entry>, Status> {
        let caller = self.authorize(&request, &AdminAction::DeleteEntry).await?;
        let entry = self
            .authority
            .delete_entry(&caller, &request.get_ref().id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(entry_to_proto(entry)))
    }

    async fn get_policy(
        &self,
        request: Request<proto::GetPolicyRequest>,
    ) -> Result<Response<proto::Policy>, Status> {
        self.authorize(&request, &AdminAction::GetPolicy).await?;
        let policy = self
            .authority
            .stored_token_policy()
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(policy_to_proto(&policy)))
    }

    async fn replace_policy(
        &self,
        request: Request<proto::ReplacePolicyRequest>,
    ) -> Result<Response<proto::Policy>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::ReplacePolicy)
            .await?;
        let request = request.into_inner();
        let policy = self
            .authority
            .replace_token_policy(&caller, request.expected_version, &request.text)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(policy_to_proto(&policy)))
    }

    async fn explain_policy(
        &self,
        request: Request<proto::ExplainPolicyRequest>,
    ) -> Result<Response<proto::ExplainPolicyResponse>, Status> {
        self.authorize(&request, &AdminAction::ExplainPolicy)
            .await?;
        let request = request.into_inner();
        let explanation = if request.on_behalf_of.is_empty() {
            self.authority
                .explain(&request.from, &request.audience, &request.scopes)
        } else {
            self.authority.explain_exchange(
                &request.from,
                &request.on_behalf_of,
                usize::try_from(request.chain).unwrap_or(usize::MAX),
                &request.audience,
                &request.scopes,
            )
        }
        .map_err(|e| status(&e))?;
        Ok(Response::new(proto::ExplainPolicyResponse {
            allowed: explanation.allowed,
            scopes: explanation.scopes,
            rules: explanation.rules,
            error: explanation.error,
            message: explanation.message,
        }))
    }

    async fn list_join_tokens(
        &self,
        request: Request<proto::ListJoinTokensRequest>,
    ) -> Result<Response<proto::ListJoinTokensResponse>, Status> {
        self.authorize(&request, &AdminAction::ListJoinTokens)
            .await?;
        let service = &request.get_ref().service;
        let tokens = self
            .authority
            .join_tokens((!service.is_empty()).then_some(service.as_str()))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(join_tokens_to_proto(tokens)))
    }

    async fn revoke_join_tokens(
        &self,
        request: Request<proto::RevokeJoinTokensRequest>,
    ) -> Result<Response<proto::ListJoinTokensResponse>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::RevokeJoinTokens)
            .await?;
        let message = request.into_inner();
        let which = match (message.ids.is_empty(), message.service.is_empty()) {
            (false, true) => TokensToRevoke::Ids(message.ids),
            (true, false) => TokensToRevoke::Service(message.service),
            _ => {
                return Err(status(&crate::Error::InvalidArgument(
                    "name the tokens to revoke by id, or a service, not both".into(),
                )));
            }
        };
        let revoked = self
            .authority
            .revoke_join_tokens(&caller, &which)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(join_tokens_to_proto(revoked)))
    }

    async fn list_entries(
        &self,
        request: Request<proto::ListEntriesRequest>,
    ) -> Result<Response<proto::ListEntriesResponse>, Status> {
        self.authorize(&request, &AdminAction::ListEntries).await?;
        let service = &request.get_ref().service;
        let entries = self
            .authority
            .entries((!service.is_empty()).then_some(service.as_str()))
            .map_err(|e| status(&e))?
            .into_iter()
            .map(entry_to_proto)
            .collect();
        Ok(Response::new(proto::ListEntriesResponse { entries }))
    }

    async fn add_federation(
        &self,
        request: Request<proto::AddFederationRequest>,
    ) -> Result<Response<proto::Federation>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::AddFederation)
            .await?;
        let request = request.into_inner();
        let given = |text: String| (!text.is_empty()).then_some(text);
        let spec = crate::federation::FederationSpec {
            trust_domain: request.trust_domain,
            bundle_endpoint_url: request.bundle_endpoint_url,
            profile: request.profile,
            endpoint_spiffe_id: given(request.endpoint_spiffe_id),
            endpoint_ca_pem: given(request.endpoint_ca_pem),
            trust_bundle: given(request.trust_bundle),
        };
        let record = self
            .authority
            .add_federation(&caller, &spec)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(federation_to_proto(record, None)))
    }

    async fn remove_federation(
        &self,
        request: Request<proto::RemoveFederationRequest>,
    ) -> Result<Response<proto::Federation>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::RemoveFederation)
            .await?;
        let record = self
            .authority
            .remove_federation(&caller, &request.get_ref().trust_domain)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(federation_to_proto(record, None)))
    }

    async fn list_federations(
        &self,
        request: Request<proto::ListFederationsRequest>,
    ) -> Result<Response<proto::ListFederationsResponse>, Status> {
        self.authorize(&request, &AdminAction::ListFederations)
            .await?;
        let trust_domain = &request.get_ref().trust_domain;
        let federations = self
            .authority
            .federations((!trust_domain.is_empty()).then_some(trust_domain.as_str()))
            .await
            .map_err(|e| status(&e))?
            .into_iter()
            .map(|record| {
                let fetches = self
                    .authority
                    .federation_status()
                    .get(record.trust_domain.as_str());
                federation_to_proto(record, fetches)
            })
            .collect();
        Ok(Response::new(proto::ListFederationsResponse {
            federations,
        }))
    }

    async fn create_acme_eab(
        &self,
        request: Request<proto::CreateAcmeEabRequest>,
    ) -> Result<Response<proto::AcmeEab>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::CreateAcmeEab)
            .await?;
        super::admin_acme::create_eab(&self.authority, &caller, request.into_inner()).await
    }

    async fn set_acme_policy(
        &self,
        request: Request<proto::SetAcmePolicyRequest>,
    ) -> Result<Response<proto::AcmePolicy>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::SetAcmePolicy)
            .await?;
        super::admin_acme::set_policy(&self.authority, &caller, request.into_inner()).await
    }

    async fn get_acme_policy(
        &self,
        request: Request<proto::GetAcmePolicyRequest>,
    ) -> Result<Response<proto::AcmePolicy>, Status> {
        self.authorize(&request, &AdminAction::GetAcmePolicy)
            .await?;
        super::admin_acme::policy(&self.authority, request.into_inner()).await
    }

    async fn list_acme_accounts(
        &self,
        request: Request<proto::ListAcmeAccountsRequest>,
    ) -> Result<Response<proto::ListAcmeAccountsResponse>, Status> {
        self.authorize(&request, &AdminAction::ListAcmeAccounts)
            .await?;
        super::admin_acme::accounts(&self.authority).await
    }

    async fn deactivate_acme_account(
        &self,
        request: Request<proto::DeactivateAcmeAccountRequest>,
    ) -> Result<Response<proto::AcmeAccount>, Status> {
        let caller = self
            .authorize(&request, &AdminAction::DeactivateAcmeAccount)
            .await?;
        super::admin_acme::deactivate_account(&self.authority, &caller, request.into_inner()).await
    }

    async fn list_acme_orders(
        &self,
        request: Request<proto::ListAcmeOrdersRequest>,
    ) -> Result<Response<proto::ListAcmeOrdersResponse>, Status> {
        self.authorize(&request, &AdminAction::ListAcmeOrders)
            .await?;
        super::admin_acme::orders(&self.authority, request.into_inner()).await
    }
}

fn join_tokens_to_proto(
    tokens: Vec<crate::authority::JoinTokenView>,
) -> proto::ListJoinTokensResponse {
    proto::ListJoinTokensResponse {
        tokens: tokens
            .into_iter()
            .map(|token| proto::JoinTokenInfo {
                id: token.id,
                entry_id: token.entry_id.unwrap_or_default(),
                service: token.service.unwrap_or_default(),
                selectors: token.selectors,
                created_at_unix: token.created_at,
                expires_at_unix: token.expires_at,
            })
            .collect(),
    }
}

fn policy_to_proto(policy: &crate::model::PolicyRecord) -> proto::Policy {
    proto::Policy {
        version: policy.version,
        text: crate::policy::grants::render_policy(policy),
        grants: u32::try_from(policy.grants.len()).unwrap_or(u32::MAX),
    }
}
