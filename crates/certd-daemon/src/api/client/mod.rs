//! gRPC clients for the CLI (and for anything else that acts as a workload
//! or an operator): the workload API over TLS, the admin API over the local
//! socket. They speak in certd's own types, so callers never see tonic.
//!
//! This file holds what both share and the workload client; the admin
//! client is in `admin`.

mod acme;
mod admin;
mod https;
pub mod identity_dir;
mod oauth;
pub use acme::{AcmeAccountKey, AcmeClient};
pub use oauth::TokenEndpointClient;

pub use admin::{
    AcmeAccountView, AcmeEabView, AcmeOrderView, AcmePolicyView, AdminClient, AuditLine,
    CreatedTokens, EntrySummary, FederationView, ForeignBundleView, RevokeSummary, RevokedSummary,
};

use std::time::Duration;

use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::proto;
use super::proto::certificate_authority_client::CertificateAuthorityClient;
use crate::ErrorKind;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer the workload client reads: a certificate chain and bundle.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to certd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach certd at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    /// The request went out and no answer came within the client's
    /// deadline: certd may still be carrying it out (a revocation of
    /// many certificates ends on its own task, audited).
    #[error(
        "certd at {target} did not answer within {} s; it may still be carrying out the request: `certd audit` shows what it did",
        after.as_secs()
    )]
    TimedOut { target: String, after: Duration },
    #[error("certd refused ({kind}): {message}")]
    Refused { kind: ErrorKind, message: String },
    /// `reason` says why, and what to check.
    #[error("cannot verify that {target} is certd: {reason}")]
    Untrusted { target: String, reason: String },
    #[error("{0}")]
    Setup(String),
    /// What the client was given (a URL, a certificate, a key) cannot be
    /// used; `what` names it, the source says why.
    #[error("{what}")]
    Invalid {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClientError {
    /// The one classification (`crate::ErrorKind`) of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Unreachable { .. } | ClientError::TimedOut { .. } => {
                ErrorKind::Unavailable
            }
            ClientError::Untrusted { .. } => ErrorKind::Untrusted,
            ClientError::Refused { kind, .. } => *kind,
            ClientError::Setup(_) | ClientError::Invalid { .. } => ErrorKind::InvalidInput,
        }
    }

    /// `what` cannot be used, because of `source`.
    pub(crate) fn invalid(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ClientError::Invalid {
            what: what.into(),
            source: source.into(),
        }
    }
}

pub(crate) fn refused(target: &str, status: Status) -> ClientError {
    // A status that wraps an error never reached certd's handlers: the
    // connection or the TLS session failed (a rejected client certificate
    // shows up here, as a TLS alert).
    if std::error::Error::source(&status).is_some() {
        if timed_out(&status) {
            return ClientError::TimedOut {
                target: target.to_owned(),
                after: REQUEST_TIMEOUT,
            };
        }
        return unreachable_or_untrusted(target, &status, describe_status(&status));
    }
    ClientError::Refused {
        kind: super::kind_of(status.code()),
        message: status.message().to_owned(),
    }
}

/// `error` and the errors it names as its source, outermost first.
pub(super) fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |current| current.source())
}

/// Whether the client's own deadline (`REQUEST_TIMEOUT`) ended the call.
fn timed_out(status: &Status) -> bool {
    causes(status).any(|cause| cause.is::<tonic::TimeoutExpired>())
}

/// A transport failure: `Untrusted` when TLS shows the server is not the
/// certd the bundle vouches for (or no TLS server at all), else
/// `Unreachable`. Decided by rustls's typed error in the chain.
fn unreachable_or_untrusted(
    target: &str,
    error: &(dyn std::error::Error + 'static),
    reason: String,
) -> ClientError {
    match untrusted_because(error) {
        Some(why) => ClientError::Untrusted {
            target: target.to_owned(),
            reason: why,
        },
        None => ClientError::Unreachable {
            target: target.to_owned(),
            reason,
        },
    }
}

fn untrusted_because(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        // io::Error hides the error it wraps from `source()`.
        let tls = current.downcast_ref::<rustls::Error>().or_else(|| {
            current
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        const CHECK: &str = "check --ca-bundle and that the URL is certd's gRPC port";
        match tls {
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                },
            )) => {
                // The bundle trusts it; the name dialled is not one of its.
                // Its SPIFFE ID (for federation peers) is no name to dial.
                let names: Vec<String> = presented
                    .iter()
                    .map(|name| plain_name(name))
                    .filter(|name| !name.starts_with("spiffe://"))
                    .collect();
                return Some(format!(
                    "its certificate is not valid for {:?}, only for {}: dial it by one of those names, or add this one to certd's `server_names` (certd.toml, or `certd serve --server-name`) and restart certd",
                    expected.to_str(),
                    names.join(", ")
                ));
            }
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) => {
                return Some("its certificate is not valid for the name dialled: dial it by a name in certd's `server_names`, or add this one (certd.toml, or `certd serve --server-name`) and restart certd".into());
            }
            Some(rustls::Error::InvalidCertificate(why)) => {
                return Some(format!(
                    "its certificate is not trusted by this bundle ({why}); {CHECK}"
                ));
            }
            Some(
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. },
            ) => return Some(format!("it does not speak TLS; {CHECK}")),
            _ => {}
        }
        cause = current.source();
    }
    None
}

/// A name as rustls lists a certificate's (`DnsName("localhost")`,
/// `IpAddress(V4(…))`), as a person writes it.
fn plain_name(listed: &str) -> String {
    let mut name = listed;
    // Peel `Kind(…)` wrappers.
    while let Some(open) = name.find('(')
        && name.ends_with(')')
        && name[..open].chars().all(|c| c.is_ascii_alphanumeric())
    {
        name = &name[open + 1..name.len() - 1];
    }
    let name = name.trim_matches('"');
    // An IPv4 address may come as its four numbers: `[127, 0, 0, 1]`.
    match name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .map(|n| {
            n.split(", ")
                .map(str::parse::<u8>)
                .collect::<Result<Vec<_>, _>>()
        }) {
        Some(Ok(octets)) if octets.len() == 4 => octets
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join("."),
        _ => name.to_owned(),
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
    /// The bundles of the foreign trust domains its entry federates with.
    pub federated_bundles: Vec<FederatedBundle>,
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
            federated_bundles: response
                .federated_bundles
                .into_iter()
                .map(FederatedBundle::from)
                .collect(),
        }
    }
}

impl From<proto::FederatedBundle> for FederatedBundle {
    fn from(bundle: proto::FederatedBundle) -> Self {
        FederatedBundle {
            trust_domain: bundle.trust_domain,
            roots_der: bundle.roots_der,
            jwt_keys_jwks: bundle.jwt_keys_jwks,
        }
    }
}

/// What `ListAgentEntries` tells a node agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntries {
    pub entries: Vec<AgentEntry>,
    pub trust_bundle_pem: String,
    pub trust_domain: String,
    /// The JWT keys verifiers need now, as a JWKS document.
    pub jwt_keys_jwks: Vec<u8>,
    /// The bundles of the foreign trust domains the entries federate with.
    pub federated_bundles: Vec<FederatedBundle>,
}

/// A foreign trust domain's bundle, as certd hands it to its agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedBundle {
    pub trust_domain: String,
    /// Root certificates, DER, concatenated.
    pub roots_der: Vec<u8>,
    /// Its JWT-SVID keys, a JWKS document.
    pub jwt_keys_jwks: Vec<u8>,
}

/// A JWT-SVID as certd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    pub token: String,
    pub spiffe_id: String,
    pub expires_at: i64,
}

impl From<proto::JwtSvid> for MintedToken {
    fn from(svid: proto::JwtSvid) -> Self {
        MintedToken {
            token: svid.token,
            spiffe_id: svid.spiffe_id,
            expires_at: svid.expires_at_unix,
        }
    }
}

/// One entry a node agent serves: its workloads must prove every selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    pub id: String,
    pub spiffe_id: String,
    pub selectors: Vec<String>,
    /// The foreign trust domains its workloads trust.
    pub federates_with: Vec<String>,
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
    /// PEM chain and key to present (for renewal), if any; the key is
    /// zeroized when the settings are dropped.
    pub identity: Option<(String, zeroize::Zeroizing<String>)>,
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
            .map_err(|e| ClientError::invalid(format!("server URL {server:?} is not valid"), e))?;
        if !server.starts_with("https://") {
            return Err(ClientError::Setup(format!(
                "server URL {server:?} must start with https://"
            )));
        }
        let channel = endpoint
            .tls_config(tls_config)
            .map_err(|e| ClientError::invalid("TLS setup failed", e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| unreachable_or_untrusted(server, &e, error_chain(&e)))?;
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

    /// Bootstrap with any attestor's evidence, in the wire's generic form:
    /// its kind and its bytes (how an attestor added later is reached).
    pub async fn issue_with_evidence(
        &mut self,
        csr_der: Vec<u8>,
        kind: &str,
        evidence: Vec<u8>,
    ) -> Result<IssuedCertificate, ClientError> {
        self.issue_attested(
            csr_der,
            proto::issue_request::Attestation::Evidence(proto::AttestationEvidence {
                kind: kind.to_owned(),
                data: evidence,
            }),
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

    /// For a node agent (this client presents its certificate): the
    /// entries parented to it, and the trust bundle.
    pub async fn agent_entries(&mut self) -> Result<AgentEntries, ClientError> {
        let response = self
            .rpc
            .list_agent_entries(proto::ListAgentEntriesRequest {})
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(AgentEntries {
            entries: response
                .entries
                .into_iter()
                .map(|entry| AgentEntry {
                    id: entry.id,
                    spiffe_id: entry.spiffe_id,
                    selectors: entry.selectors,
                    federates_with: entry.federates_with,
                })
                .collect(),
            trust_bundle_pem: response.trust_bundle_pem,
            trust_domain: response.trust_domain,
            jwt_keys_jwks: response.jwt_keys_jwks,
            federated_bundles: response
                .federated_bundles
                .into_iter()
                .map(FederatedBundle::from)
                .collect(),
        })
    }

    /// A JWT-SVID for the identity this client presents.
    pub async fn mint_jwt(
        &mut self,
        audiences: &[String],
        ttl: Option<Duration>,
    ) -> Result<MintedToken, ClientError> {
        let response = self
            .rpc
            .mint_jwt_svid(proto::MintJwtSvidRequest {
                audiences: audiences.to_vec(),
                ttl_seconds: ttl.map_or(0, |t| t.as_secs()),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// For a node agent: a JWT-SVID for one entry parented to it.
    pub async fn mint_jwt_for_agent(
        &mut self,
        entry_id: &str,
        audiences: &[String],
        ttl: Option<Duration>,
    ) -> Result<MintedToken, ClientError> {
        let response = self
            .rpc
            .mint_jwt_svid_for_agent(proto::MintJwtSvidForAgentRequest {
                entry_id: entry_id.to_owned(),
                audiences: audiences.to_vec(),
                ttl_seconds: ttl.map_or(0, |t| t.as_secs()),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().into())
    }

    /// For a node agent: a certificate for one entry parented to it.
    pub async fn issue_for_agent(
        &mut self,
        entry_id: &str,
        csr_der: Vec<u8>,
    ) -> Result<IssuedCertificate, ClientError> {
        let response = self
            .rpc
            .issue_for_agent(proto::IssueForAgentRequest {
                entry_id: entry_id.to_owned(),
                csr_der,
            })
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

impl WorkloadClient {
    /// The standard gRPC health check of `service` ("" for the whole
    /// server): `SERVING`, `NOT_SERVING` or `SERVICE_UNKNOWN`.
    pub async fn health(&mut self, service: &str) -> Result<String, ClientError> {
        use tonic_health::pb::health_client::HealthClient;
        let response = HealthClient::new(self.channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response.into_inner().status().as_str_name().to_owned())
    }

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

pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::{ClientError, REQUEST_TIMEOUT, plain_name, refused};
    use crate::ErrorKind;

    #[test]
    fn a_call_past_the_deadline_says_certd_may_still_be_at_work() {
        let status = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let error = refused("/tmp/certd/admin.sock", status);
        assert!(
            matches!(&error, ClientError::TimedOut { after, .. } if *after == REQUEST_TIMEOUT),
            "{error:?}"
        );
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        let message = error.to_string();
        assert!(message.contains("did not answer within 30 s"), "{message}");
        assert!(message.contains("certd audit"), "{message}");
        // A transport failure of another kind is still "cannot reach".
        let status = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        let error = refused("/tmp/certd/admin.sock", status);
        assert!(
            matches!(error, ClientError::Unreachable { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn listed_names_read_as_written() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(
            plain_name("IpAddress(V4(Ipv4Addr([127, 0, 0, 1])))"),
            "127.0.0.1"
        );
        assert_eq!(plain_name("certd.internal"), "certd.internal");
        assert_eq!(plain_name("(("), "((");
    }
}
