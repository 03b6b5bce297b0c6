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
//! module only reads the cache.

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
use crate::registry::describe;
use crate::selector::Selector;

/// The header every Workload API call must carry, so that a browser or an
/// SSRF-prone proxy pointed at the socket cannot call it.
const SECURITY_HEADER: &str = "workload.spiffe.io";

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct WorkloadApiService {
    cache: Cache,
    hashes: ExecutableHashes,
    certd: Certd,
}

impl WorkloadApiService {
    pub fn new(cache: Cache, certd: Certd) -> Self {
        WorkloadApiService {
            cache,
            hashes: ExecutableHashes::default(),
            certd,
        }
    }

    /// A bundle stream (X.509 or JWT) for an attested caller with an entry.
    /// The bundle is public, but only callers with an entry get it, as in
    /// SPIRE: the socket is no oracle for strangers. The first answer's
    /// refusal is the call's status.
    fn bundle_stream<R, T>(
        &self,
        request: &Request<R>,
        answer: fn(&Snapshot) -> Result<T, Status>,
    ) -> Result<Streamed<T>, Status>
    where
        T: PartialEq + Clone + Send + 'static,
    {
        let (selectors, _who) = self.attest(request)?;
        let snapshot = self.cache.current();
        snapshot
            .entry_for(&selectors)
            .map_err(|refusal| refusal_status(refusal, &selectors))?;
        answer(&snapshot)?;
        Ok(follow(&self.cache, answer))
    }

    /// Checks the security header and attests the caller: its selectors.
    fn attest<T>(&self, request: &Request<T>) -> Result<(Vec<Selector>, String), Status> {
        // Executables are hashed only when some entry asks for a hash.
        let wants_hash = self.cache.current().wants_executable_hash();
        attest(request, wants_hash.then_some(&self.hashes))
    }
}

fn attest<T>(
    request: &Request<T>,
    hashes: Option<&ExecutableHashes>,
) -> Result<(Vec<Selector>, String), Status> {
    let header = request.metadata().get(SECURITY_HEADER);
    if header.and_then(|value| value.to_str().ok()) != Some("true") {
        return Err(Status::invalid_argument(format!(
            "security header missing from request: every Workload API call must carry `{SECURITY_HEADER}: true`"
        )));
    }
    let credentials = request
        .extensions()
        .get::<PeerCredentials>()
        .copied()
        .ok_or_else(|| Status::permission_denied(peer::PeerError::NoCredentials.to_string()))?;
    let selectors = peer::selectors_of(&credentials, hashes)
        .map_err(|e| Status::permission_denied(e.to_string()))?;
    let who = match credentials.pid {
        Some(pid) => format!("pid {pid} uid {}", credentials.uid),
        None => format!("uid {}", credentials.uid),
    };
    Ok((selectors, who))
}

/// The X.509-SVID answer for `selectors`, or why there is none.
fn svid_response(snapshot: &Snapshot, selectors: &[Selector]) -> Result<X509svidResponse, Status> {
    match snapshot.grant(selectors) {
        Grant::Svid(svid) => Ok(X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.chain_der.concat(),
                x509_svid_key: svid.key_pkcs8.to_vec(),
                bundle: snapshot.bundle_bytes(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        }),
        refusal => Err(refusal_status(refusal, selectors)),
    }
}

fn bundles_response(snapshot: &Snapshot) -> Result<X509BundlesResponse, Status> {
    if snapshot.bundle_der.is_empty() {
        return Err(Status::unavailable(
            "the agent has not received the trust bundle yet; retry",
        ));
    }
    Ok(X509BundlesResponse {
        crl: Vec::new(),
        bundles: HashMap::from([(snapshot.trust_domain.clone(), snapshot.bundle_bytes())]),
    })
}

/// A stream that sends `answer(snapshot)` now and after every published
/// change that alters it, until the caller leaves. An error is sent once
/// and ends the stream.
fn follow<T>(
    cache: &Cache,
    answer: impl Fn(&Snapshot) -> Result<T, Status> + Send + 'static,
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
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
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
                selectors = %describe(&selectors),
                spiffe_id = %response.svids[0].spiffe_id,
                "workload API: X.509-SVID granted"
            ),
            Err(status) => tracing::info!(
                caller = %who,
                selectors = %describe(&selectors),
                reason = %status.message(),
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
            return Err(Status::invalid_argument(
                "a JWT-SVID needs at least one audience",
            ));
        }
        crate::jwt::check_audiences(&message.audience)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let snapshot = self.cache.current();
        let entry = snapshot
            .entry_for(&selectors)
            .map_err(|refusal| refusal_status(refusal, &selectors))?;
        if !message.spiffe_id.is_empty() && message.spiffe_id != entry.spiffe_id {
            return Err(Status::permission_denied(format!(
                "the caller holds {}, not {}",
                entry.spiffe_id, message.spiffe_id
            )));
        }
        let outcome = self.certd.jwt_svid(&entry.id, &message.audience).await;
        tracing::info!(
            caller = %who,
            selectors = %describe(&selectors),
            audiences = %message.audience.join(" "),
            granted = outcome.is_ok(),
            "workload API: JWT-SVID"
        );
        let minted = outcome.map_err(|error| agent_error_status(&error))?;
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
        self.attest(&request)?;
        let message = request.into_inner();
        if message.audience.is_empty() || message.svid.is_empty() {
            return Err(Status::invalid_argument(
                "give the token (svid) and the audience to check it for",
            ));
        }
        let keys = self.cache.current().jwt_keys.clone();
        let verified = crate::jwt::verify(&message.svid, &message.audience, &keys)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: verified.spiffe_id.into_string(),
            claims: Some(to_struct(verified.claims)),
        }))
    }
}

fn jwt_bundles_response(snapshot: &Snapshot) -> Result<JwtBundlesResponse, Status> {
    if snapshot.jwt_keys.keys.is_empty() {
        return Err(Status::unavailable(
            "the agent has not received the JWT keys yet; retry",
        ));
    }
    let jwks =
        serde_json::to_vec(&snapshot.jwt_keys).map_err(|e| Status::internal(e.to_string()))?;
    Ok(JwtBundlesResponse {
        bundles: HashMap::from([(snapshot.trust_domain.clone(), jwks)]),
    })
}

/// The status for a caller that gets no SVID: no single entry, or its SVID
/// is not there yet.
fn refusal_status(refusal: Grant<'_>, selectors: &[Selector]) -> Status {
    match refusal {
        Grant::Ambiguous { entries } => Status::permission_denied(format!(
            "the caller's selectors [{}] match {} entries ({}); an operator must narrow them",
            describe(selectors),
            entries.len(),
            entries.join(", ")
        )),
        Grant::Pending { entry } => Status::unavailable(format!(
            "the SVID of entry {entry} is not ready yet (certd not reached since it appeared); retry"
        )),
        Grant::NoEntry | Grant::Svid(_) => Status::permission_denied(format!(
            "no registration entry on this agent matches the caller's selectors [{}]",
            describe(selectors)
        )),
    }
}

/// certd's answer passed on with its own code (a disallowed audience stays
/// `PermissionDenied`); certd unreachable is `Unavailable`.
fn agent_error_status(error: &AgentError) -> Status {
    Status::new(crate::api::code_of(error.kind()), error.to_string())
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
