//! The SPIFFE Workload API (`SpiffeWorkloadAPI`, the standard's
//! workload.proto) on the agent's Unix socket.
//!
//! Every call must carry the header `workload.spiffe.io: true` (else
//! `InvalidArgument`). The caller is attested by the kernel (`peer`) once
//! per call; X.509 streams send the full state at once and again whenever
//! the cache publishes a change the caller would see. A caller matching no
//! entry gets `PermissionDenied`. JWT-SVIDs are asked of certd for the
//! caller's entry (certd checks the audiences) and remembered until half
//! their life; JWT bundles and validation use the keys in the cache. This
//! module only reads the cache. Every refusal is a `Refusal`, classified
//! once (`Refusal::kind`); its status code comes from that kind alone, as
//! certd's own API's do (`api::code_of`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::cache::{Cache, Grant, Snapshot};
use super::peer::{self, ExecutableHashes, PeerCredentials};
use super::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use super::proto::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};
use super::sync::{AgentError, Certd};
use crate::ErrorKind;
use crate::registry::describe;
use crate::selector::Selector;

/// The header every Workload API call must carry, so that a browser or an
/// SSRF-prone proxy pointed at the socket cannot call it.
const SECURITY_HEADER: &str = "workload.spiffe.io";

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Why a workload gets no SVID, token or bundle; the message is the
/// workload's to read.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(
        "security header missing from request: every Workload API call must carry `{SECURITY_HEADER}: true`"
    )]
    NoSecurityHeader,
    #[error(transparent)]
    Peer(#[from] peer::PeerError),
    #[error("the agent has not received the trust bundle yet; retry")]
    NoBundleYet,
    #[error("the agent has not received the JWT keys yet; retry")]
    NoJwtKeysYet,
    #[error("a JWT-SVID needs at least one audience")]
    NoAudience,
    #[error("give the token (svid) and the audience to check it for")]
    NothingToValidate,
    /// An audience that is not one, or a token that does not verify.
    #[error(transparent)]
    Jwt(crate::jwt::JwtError),
    #[error("the caller holds {holds}, not {asked}")]
    NotTheCallers { holds: String, asked: String },
    #[error(
        "the token is of trust domain {trust_domain}, which the caller's entry does not federate with (or whose bundle this agent does not hold yet)"
    )]
    NotFederated { trust_domain: String },
    #[error(
        "the caller's selectors [{selectors}] match {count} entries ({entries}); an operator must narrow them"
    )]
    Ambiguous {
        selectors: String,
        count: usize,
        entries: String,
    },
    #[error(
        "the SVID of entry {entry} is not ready yet (certd not reached since it appeared); retry"
    )]
    Pending { entry: String },
    #[error("no registration entry on this agent matches the caller's selectors [{selectors}]")]
    NoEntry { selectors: String },
    #[error("cannot encode the JWT keys")]
    Encoding(#[source] serde_json::Error),
    /// certd's answer, passed on with its own kind (a disallowed audience
    /// stays `PermissionDenied`); certd unreachable is `Unavailable`.
    #[error(transparent)]
    Certd(AgentError),
}

impl Refusal {
    fn kind(&self) -> ErrorKind {
        match self {
            Refusal::NoSecurityHeader
            | Refusal::NoAudience
            | Refusal::NothingToValidate
            | Refusal::NotFederated { .. }
            | Refusal::Jwt(_) => ErrorKind::InvalidInput,
            Refusal::Peer(_)
            | Refusal::NotTheCallers { .. }
            | Refusal::Ambiguous { .. }
            | Refusal::NoEntry { .. } => ErrorKind::PermissionDenied,
            Refusal::NoBundleYet | Refusal::NoJwtKeysYet | Refusal::Pending { .. } => {
                ErrorKind::Unavailable
            }
            Refusal::Encoding(_) => ErrorKind::Internal,
            Refusal::Certd(error) => error.kind(),
        }
    }

    /// A caller that gets no SVID: no single entry, or its SVID is not
    /// there yet.
    fn of_grant(refusal: Grant<'_>, selectors: &[Selector]) -> Self {
        match refusal {
            Grant::Ambiguous { entries } => Refusal::Ambiguous {
                selectors: describe(selectors),
                count: entries.len(),
                entries: entries.join(", "),
            },
            Grant::Pending { entry } => Refusal::Pending {
                entry: entry.to_string(),
            },
            Grant::NoEntry | Grant::Svid(_) => Refusal::NoEntry {
                selectors: describe(selectors),
            },
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        Status::new(
            crate::api::code_of(refusal.kind()),
            crate::error_kind::with_causes(&refusal),
        )
    }
}

pub(crate) struct WorkloadApiService {
    cache: Cache,
    hashes: ExecutableHashes,
    certd: Certd,
    clock: crate::clock::SharedClock,
    /// The `iss` `ValidateJWTSVID` requires, when configured.
    jwt_issuer: Option<String>,
}

impl WorkloadApiService {
    pub fn new(
        cache: Cache,
        certd: Certd,
        clock: crate::clock::SharedClock,
        jwt_issuer: Option<String>,
    ) -> Self {
        WorkloadApiService {
            cache,
            hashes: ExecutableHashes::default(),
            certd,
            clock,
            jwt_issuer,
        }
    }

    /// A bundle stream (X.509 or JWT) for an attested caller with an entry.
    /// The bundle is public, but only callers with an entry get it, as in
    /// SPIRE: the socket is no oracle for strangers. The first answer's
    /// refusal is the call's status.
    fn bundle_stream<R, T>(
        &self,
        request: &Request<R>,
        answer: fn(&Snapshot, &[Selector]) -> Result<T, Refusal>,
    ) -> Result<Streamed<T>, Status>
    where
        T: PartialEq + Clone + Send + 'static,
    {
        let (selectors, _who) = self.attest(request)?;
        let snapshot = self.cache.current();
        snapshot
            .entry_for(&selectors)
            .map_err(|refusal| Refusal::of_grant(refusal, &selectors))?;
        answer(&snapshot, &selectors)?;
        Ok(follow(&self.cache, move |snapshot| {
            answer(snapshot, &selectors)
        }))
    }

    /// Checks the security header and attests the caller: its selectors.
    fn attest<T>(&self, request: &Request<T>) -> Result<(Vec<Selector>, String), Refusal> {
        // Executables are hashed only when some entry asks for a hash.
        let wants_hash = self.cache.current().wants_executable_hash();
        attest(request, wants_hash.then_some(&self.hashes))
    }
}

fn attest<T>(
    request: &Request<T>,
    hashes: Option<&ExecutableHashes>,
) -> Result<(Vec<Selector>, String), Refusal> {
    let header = request.metadata().get(SECURITY_HEADER);
    if header.and_then(|value| value.to_str().ok()) != Some("true") {
        return Err(Refusal::NoSecurityHeader);
    }
    let credentials = request
        .extensions()
        .get::<PeerCredentials>()
        .copied()
        .ok_or(peer::PeerError::NoCredentials)?;
    let selectors = peer::selectors_of(&credentials, hashes)?;
    let who = match credentials.pid {
        Some(pid) => format!("pid {pid} uid {}", credentials.uid),
        None => format!("uid {}", credentials.uid),
    };
    Ok((selectors, who))
}

/// The X.509-SVID answer for `selectors`, or why there is none.
fn svid_response(snapshot: &Snapshot, selectors: &[Selector]) -> Result<X509svidResponse, Refusal> {
    match snapshot.grant(selectors) {
        Grant::Svid(svid) => Ok(X509svidResponse {
            // Only the trust domains the caller's entry federates with.
            federated_bundles: snapshot
                .entry_for(selectors)
                .map(|entry| {
                    snapshot
                        .federated_for(entry)
                        .map(|(domain, bundle)| (domain.clone(), bundle.roots_der.concat()))
                        .collect()
                })
                .unwrap_or_default(),
            svids: vec![X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.chain_der.concat(),
                x509_svid_key: svid.key_pkcs8.to_vec(),
                bundle: snapshot.bundle_bytes(),
                hint: String::new(),
            }],
            crl: Vec::new(),
        }),
        refusal => Err(Refusal::of_grant(refusal, selectors)),
    }
}

/// certd's own bundle and those of the foreign trust domains the caller's
/// entry federates with.
fn bundles_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
) -> Result<X509BundlesResponse, Refusal> {
    if snapshot.bundle_der.is_empty() {
        return Err(Refusal::NoBundleYet);
    }
    let mut bundles = HashMap::from([(snapshot.trust_domain.clone(), snapshot.bundle_bytes())]);
    if let Ok(entry) = snapshot.entry_for(selectors) {
        bundles.extend(
            snapshot
                .federated_for(entry)
                .map(|(domain, bundle)| (domain.clone(), bundle.roots_der.concat())),
        );
    }
    Ok(X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    })
}

/// A stream that sends `answer(snapshot)` now and after every published
/// change that alters it, until the caller leaves. An error is sent once
/// and ends the stream.
fn follow<T>(
    cache: &Cache,
    answer: impl Fn(&Snapshot) -> Result<T, Refusal> + Send + 'static,
) -> Streamed<T>
where
    T: PartialEq + Clone + Send + 'static,
{
    // One answer in flight: a slow reader holds at most that much memory.
    let (sender, receiver) = mpsc::channel(1);
    let mut snapshots = cache.subscribe();
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            let snapshot: Arc<Snapshot> = snapshots.borrow_and_update().clone();
            match answer(&snapshot) {
                Ok(current) => {
                    if last.as_ref() != Some(&current) {
                        last = Some(current.clone());
                        if sender.send(Ok(current)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(refusal) => {
                    let _ = sender.send(Err(refusal.into())).await;
                    return;
                }
            }
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApiService {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let (selectors, who) = self.attest(&request)?;
        // Answer the first message's refusal as the call's status, as
        // SPIFFE clients expect, and log every decision.
        let first = svid_response(&self.cache.current(), &selectors);
        match &first {
            Ok(response) => tracing::info!(
                caller = %who,
                selectors = ?selectors,
                spiffe_id = %response.svids[0].spiffe_id,
                "workload API: X.509-SVID granted"
            ),
            Err(refusal) => tracing::info!(
                caller = %who,
                selectors = ?selectors,
                reason = %refusal,
                "workload API: X.509-SVID refused"
            ),
        }
        first?;
        Ok(Response::new(follow(&self.cache, move |snapshot| {
            svid_response(snapshot, &selectors)
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Ok(Response::new(
            self.bundle_stream(&request, bundles_response)?,
        ))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let (selectors, who) = self.attest(&request)?;
        let message = request.into_inner();
        if message.audience.is_empty() {
            return Err(Refusal::NoAudience.into());
        }
        crate::jwt::check_audiences(&message.audience).map_err(Refusal::Jwt)?;
        let snapshot = self.cache.current();
        let entry = snapshot
            .entry_for(&selectors)
            .map_err(|refusal| Refusal::of_grant(refusal, &selectors))?;
        if !message.spiffe_id.is_empty() && message.spiffe_id != entry.spiffe_id {
            return Err(Refusal::NotTheCallers {
                holds: entry.spiffe_id.clone(),
                asked: message.spiffe_id,
            }
            .into());
        }
        let outcome = self.certd.jwt_svid(&entry.id, &message.audience).await;
        tracing::info!(
            caller = %who,
            selectors = ?selectors,
            audiences = ?message.audience,
            granted = outcome.is_ok(),
            "workload API: JWT-SVID"
        );
        let minted = outcome.map_err(Refusal::Certd)?;
        Ok(Response::new(JwtsvidResponse {
            svids: vec![super::proto::Jwtsvid {
                spiffe_id: minted.spiffe_id,
                svid: minted.token,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Ok(Response::new(
            self.bundle_stream(&request, jwt_bundles_response)?,
        ))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let (selectors, _who) = self.attest(&request)?;
        let message = request.into_inner();
        if message.audience.is_empty() || message.svid.is_empty() {
            return Err(Refusal::NothingToValidate.into());
        }
        let snapshot = self.cache.current();
        // A token names its trust domain in `sub`, before anything is
        // verified: certd's own is checked with certd's keys; another one
        // only with that domain's keys, and only for a caller whose entry
        // federates with it, so no peer can sign for a domain it is not.
        let foreign = crate::jwt::claimed_trust_domain(&message.svid)
            .filter(|domain| *domain != snapshot.trust_domain);
        let keys = match &foreign {
            None => snapshot.jwt_keys.clone(),
            Some(domain) => {
                let entry = snapshot
                    .entry_for(&selectors)
                    .map_err(|refusal| Refusal::of_grant(refusal, &selectors))?;
                snapshot
                    .federated_for(entry)
                    .find(|(federated, _)| *federated == domain)
                    .map(|(_, bundle)| bundle.jwt_keys.clone())
                    .ok_or_else(|| Refusal::NotFederated {
                        trust_domain: domain.chars().take(253).collect(),
                    })?
            }
        };
        let verified = crate::jwt::verify_at(
            &message.svid,
            &message.audience,
            &keys,
            self.clock.unix_now(),
        )
        .map_err(Refusal::Jwt)?;
        match &foreign {
            // certd's own tokens carry its issuer, when one is required.
            None => verified
                .check(&crate::jwt::Required {
                    issuer: self.jwt_issuer.as_deref(),
                    ..crate::jwt::Required::default()
                })
                .map_err(Refusal::Jwt)?,
            Some(domain) if verified.spiffe_id.trust_domain() != domain => {
                return Err(Refusal::NotFederated {
                    trust_domain: verified.spiffe_id.trust_domain().to_owned(),
                }
                .into());
            }
            Some(_) => {}
        }
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: verified.spiffe_id.into_string(),
            claims: Some(to_struct(verified.claims)),
        }))
    }
}

/// certd's own JWT keys and those of the foreign trust domains the
/// caller's entry federates with.
fn jwt_bundles_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
) -> Result<JwtBundlesResponse, Refusal> {
    if snapshot.jwt_keys.keys.is_empty() {
        return Err(Refusal::NoJwtKeysYet);
    }
    let jwks = serde_json::to_vec(&snapshot.jwt_keys).map_err(Refusal::Encoding)?;
    let mut bundles = HashMap::from([(snapshot.trust_domain.clone(), jwks)]);
    if let Ok(entry) = snapshot.entry_for(selectors) {
        for (domain, bundle) in snapshot.federated_for(entry) {
            bundles.insert(
                domain.clone(),
                serde_json::to_vec(&bundle.jwt_keys).map_err(Refusal::Encoding)?,
            );
        }
    }
    Ok(JwtBundlesResponse { bundles })
}

/// JSON claims as a protobuf `Struct`.
fn to_struct(claims: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: claims
            .into_iter()
            .map(|(name, value)| (name, to_value(value)))
            .collect(),
    }
}

fn to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// The codes SPIFFE clients act on (retry on `Unavailable`, give up on
    /// `PermissionDenied`), each from the refusal's one classification.
    #[test]
    fn each_refusal_gets_the_code_of_its_kind() {
        let code = |refusal: Refusal| Status::from(refusal).code();
        assert_eq!(code(Refusal::NoSecurityHeader), Code::InvalidArgument);
        assert_eq!(code(Refusal::NoAudience), Code::InvalidArgument);
        assert_eq!(code(Refusal::NothingToValidate), Code::InvalidArgument);
        assert_eq!(
            code(Refusal::Peer(peer::PeerError::NoCredentials)),
            Code::PermissionDenied
        );
        let no_entry = Refusal::NoEntry {
            selectors: "unix:uid:1000".into(),
        };
        assert_eq!(
            no_entry.to_string(),
            "no registration entry on this agent matches the caller's selectors [unix:uid:1000]"
        );
        assert_eq!(code(no_entry), Code::PermissionDenied);
        assert_eq!(code(Refusal::NoBundleYet), Code::Unavailable);
        assert_eq!(code(Refusal::NoJwtKeysYet), Code::Unavailable);
        assert_eq!(
            code(Refusal::Pending { entry: "e1".into() }),
            Code::Unavailable
        );
    }
}
