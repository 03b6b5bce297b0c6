//! `certd.v1.CertificateAuthority`: the workload-facing RPCs.

use tonic::{Request, Response, Status};

use super::proto::certificate_authority_server::CertificateAuthority;
use super::proto::{self, issue_request};
use super::status;
use crate::attest::{AttestError, kind, parse_kind};
use crate::authority::{Authority, Caller, Issued};
use crate::store::CertificateState;

pub struct WorkloadApi {
    authority: Authority,
}

impl WorkloadApi {
    pub fn new(authority: Authority) -> Self {
        WorkloadApi { authority }
    }

    /// The answer to an issuance: the certificate, the trust bundle and the
    /// foreign bundles its entry federates with.
    async fn response(&self, issued: Issued) -> Result<proto::IssueResponse, Status> {
        let federated_bundles = self
            .authority
            .federated_bundles_of(&issued.record)
            .await
            .map_err(|e| status(&e))?
            .into_iter()
            .map(federated_bundle_to_proto)
            .collect();
        Ok(proto::IssueResponse {
            federated_bundles,
            serial: issued.record.serial.to_hex(),
            certificate_pem: issued.certificate_pem,
            chain_pem: issued.chain_pem,
            trust_bundle_pem: self.authority.ca().trust_bundle_pem(),
            not_after_unix: issued.record.not_after,
            spiffe_id: issued.record.uris.first().cloned().unwrap_or_default(),
        })
    }
}

/// A foreign bundle on the wire: roots as concatenated DER, JWT keys as a
/// JWKS document.
fn federated_bundle_to_proto(
    (trust_domain, bundle): (
        crate::identity::TrustDomain,
        crate::federation::ParsedBundle,
    ),
) -> proto::FederatedBundle {
    proto::FederatedBundle {
        trust_domain: trust_domain.to_string(),
        roots_der: bundle.roots_der.concat(),
        jwt_keys_jwks: serde_json::to_vec(&serde_json::json!({ "keys": bundle.jwt_keys }))
            .unwrap_or_default(),
    }
}

fn ttl(seconds: u64) -> Option<std::time::Duration> {
    (seconds > 0).then(|| std::time::Duration::from_secs(seconds))
}

fn jwt_svid(minted: crate::authority::MintedFor) -> proto::JwtSvid {
    proto::JwtSvid {
        token: minted.jwt.token,
        spiffe_id: minted.spiffe_id,
        expires_at_unix: minted.jwt.expires_at,
    }
}

/// The caller's TLS client certificate (the leaf, DER), if it presented
/// one: what renewal, agents and JWT-SVIDs authenticate with.
fn client_leaf<T>(request: &Request<T>) -> Option<Vec<u8>> {
    request
        .peer_certs()
        .and_then(|chain| chain.first().map(|leaf| leaf.to_vec()))
}

fn caller<T>(request: &Request<T>) -> Caller {
    match request.remote_addr() {
        Some(address) => Caller(format!("peer {address}")),
        None => Caller("peer unknown".into()),
    }
}

/// The attestor kind and evidence of a request's attestation: the one
/// place that maps the wire's forms onto an attestor. The named fields are
/// the generic form's kinds `join-token` and `kubernetes`; a generic kind
/// is checked for form here, and whether an attestor of that kind runs is
/// `Attestors::get`'s answer.
fn evidence_of(attestation: issue_request::Attestation) -> Result<(String, Vec<u8>), AttestError> {
    match attestation {
        issue_request::Attestation::JoinToken(token) => {
            Ok((kind::JOIN_TOKEN.to_owned(), token.into_bytes()))
        }
        issue_request::Attestation::KubernetesToken(token) => {
            Ok((kind::KUBERNETES.to_owned(), token.into_bytes()))
        }
        issue_request::Attestation::Evidence(evidence) => {
            Ok((parse_kind(&evidence.kind)?.to_owned(), evidence.data))
        }
    }
}

#[tonic::async_trait]
impl CertificateAuthority for WorkloadApi {
    async fn issue(
        &self,
        request: Request<proto::IssueRequest>,
    ) -> Result<Response<proto::IssueResponse>, Status> {
        let caller = caller(&request);
        let message = request.into_inner();
        let issued = match message.attestation {
            Some(attestation) => match evidence_of(attestation) {
                Ok((kind, evidence)) => {
                    self.authority
                        .issue_attested(&caller, &kind, &message.csr_der, &evidence)
                        .await
                }
                Err(refused) => Err(refused.into()),
            },
            None => Err(AttestError::Missing.into()),
        }
        .map_err(|e| status(&e))?;
        Ok(Response::new(self.response(issued).await?))
    }

    async fn renew(
        &self,
        request: Request<proto::RenewRequest>,
    ) -> Result<Response<proto::IssueResponse>, Status> {
        let caller = caller(&request);
        let client_leaf = client_leaf(&request);
        let issued = self
            .authority
            .renew(&caller, &request.get_ref().csr_der, client_leaf.as_deref())
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(self.response(issued).await?))
    }

    async fn list_agent_entries(
        &self,
        request: Request<proto::ListAgentEntriesRequest>,
    ) -> Result<Response<proto::ListAgentEntriesResponse>, Status> {
        let client_leaf = client_leaf(&request);
        let (_agent, entries) = self
            .authority
            .agent_entries(client_leaf.as_deref())
            .await
            .map_err(|e| status(&e))?;
        let ca = self.authority.ca();
        let federated_bundles = self
            .authority
            .federated_bundles(&entries)
            .await
            .map_err(|e| status(&e))?
            .into_iter()
            .map(federated_bundle_to_proto)
            .collect();
        Ok(Response::new(proto::ListAgentEntriesResponse {
            federated_bundles,
            entries: entries
                .into_iter()
                .map(|entry| proto::AgentEntry {
                    id: entry.id,
                    spiffe_id: entry.spiffe_id.into_string(),
                    selectors: entry
                        .selectors
                        .into_iter()
                        .map(crate::selector::Selector::into_string)
                        .collect(),
                    federates_with: entry.federates_with.into_iter().map(String::from).collect(),
                })
                .collect(),
            trust_bundle_pem: ca.trust_bundle_pem(),
            trust_domain: ca.trust_domain().to_string(),
            jwt_keys_jwks: serde_json::to_vec(&self.authority.jwt_key_set()).unwrap_or_default(),
        }))
    }

    async fn mint_jwt_svid(
        &self,
        request: Request<proto::MintJwtSvidRequest>,
    ) -> Result<Response<proto::JwtSvid>, Status> {
        let caller = caller(&request);
        let client_leaf = client_leaf(&request);
        let message = request.get_ref();
        let minted = self
            .authority
            .mint_jwt(
                &caller,
                client_leaf.as_deref(),
                &message.audiences,
                ttl(message.ttl_seconds),
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(jwt_svid(minted)))
    }

    async fn mint_jwt_svid_for_agent(
        &self,
        request: Request<proto::MintJwtSvidForAgentRequest>,
    ) -> Result<Response<proto::JwtSvid>, Status> {
        let caller = caller(&request);
        let client_leaf = client_leaf(&request);
        let message = request.get_ref();
        let minted = self
            .authority
            .mint_jwt_for_agent(
                &caller,
                client_leaf.as_deref(),
                &message.entry_id,
                &message.audiences,
                ttl(message.ttl_seconds),
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(jwt_svid(minted)))
    }

    async fn issue_for_agent(
        &self,
        request: Request<proto::IssueForAgentRequest>,
    ) -> Result<Response<proto::IssueResponse>, Status> {
        let caller = caller(&request);
        let client_leaf = client_leaf(&request);
        let message = request.get_ref();
        let issued = self
            .authority
            .issue_for_agent(
                &caller,
                client_leaf.as_deref(),
                &message.entry_id,
                &message.csr_der,
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(self.response(issued).await?))
    }

    async fn get_trust_bundle(
        &self,
        _request: Request<proto::GetTrustBundleRequest>,
    ) -> Result<Response<proto::TrustBundle>, Status> {
        let ca = self.authority.ca();
        Ok(Response::new(proto::TrustBundle {
            trust_bundle_pem: ca.trust_bundle_pem(),
            trust_domain: ca.trust_domain().to_string(),
        }))
    }

    async fn get_crl(
        &self,
        _request: Request<proto::GetCrlRequest>,
    ) -> Result<Response<proto::Crl>, Status> {
        let crl = self
            .authority
            .revocations()
            .current_crl()
            .await
            .map_err(|e| status(&e.into()))?;
        Ok(Response::new(proto::Crl {
            crl_der: crl.der.clone(),
            crl_number: crl.number,
            this_update_unix: crl.this_update,
            next_update_unix: crl.next_update,
        }))
    }

    async fn get_status(
        &self,
        request: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::CertificateStatus>, Status> {
        let serial = &request.get_ref().serial;
        let record = match self.authority.certificate(serial).await {
            Ok(record) => Some(record),
            Err(crate::Error::NotFound(_)) => None,
            Err(error) => return Err(status(&error)),
        };
        let now = self.authority.now();
        let answer = match record {
            None => proto::CertificateStatus {
                serial: serial.clone(),
                status: proto::Status::Unknown.into(),
                ..Default::default()
            },
            Some(record) => {
                let state = match record.state(now) {
                    CertificateState::Revoked => proto::Status::Revoked,
                    // An expired certificate is still known: its status is
                    // good unless revoked, as in OCSP (RFC 6960 2.2).
                    CertificateState::Good | CertificateState::Expired => proto::Status::Good,
                };
                proto::CertificateStatus {
                    serial: record.serial.to_hex(),
                    status: state.into(),
                    not_before_unix: record.not_before,
                    not_after_unix: record.not_after,
                    revoked_at_unix: record.revocation.as_ref().map_or(0, |r| r.revoked_at),
                    revocation_reason: record
                        .revocation
                        .as_ref()
                        .map(|r| crate::ca::reason_name(r.reason_code).to_owned())
                        .unwrap_or_default(),
                }
            }
        };
        Ok(Response::new(answer))
    }
}
