//! A Workload API client over the agent's Unix socket, for `certd svid
//! fetch`: what a workload that cannot link a SPIFFE library does (like
//! `spire-agent api fetch x509`).

use std::path::{Path, PathBuf};

use tonic::transport::{Channel, Endpoint};

use super::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use super::proto::{X509svid, X509svidRequest};
use crate::api::client::ClientError;

/// One X.509-SVID as the Workload API gave it: DER throughout.
#[derive(Debug, Clone)]
pub struct FetchedSvid {
    pub spiffe_id: String,
    /// Leaf first.
    pub chain_der: Vec<Vec<u8>>,
    pub key_pkcs8_der: zeroize::Zeroizing<Vec<u8>>,
    pub bundle_der: Vec<Vec<u8>>,
}

/// Fetches the caller's X.509-SVID (the first message of the stream).
pub async fn fetch_x509_svid(socket: &Path) -> Result<FetchedSvid, ClientError> {
    let target = format!("unix://{}", socket.display());
    let channel = connect(socket.to_owned())
        .await
        .map_err(|e| ClientError::Unreachable {
            target: target.clone(),
            reason: e.to_string(),
        })?;
    let mut request = tonic::Request::new(X509svidRequest {});
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = SpiffeWorkloadApiClient::new(channel)
        .fetch_x509svid(request)
        .await
        .map_err(|status| crate::api::client::refused(&target, status))?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|status| crate::api::client::refused(&target, status))?
        .ok_or_else(|| ClientError::Unreachable {
            target: target.clone(),
            reason: "the stream ended before any SVID".into(),
        })?;
    let Some(svid) = first.svids.into_iter().next() else {
        return Err(ClientError::Unreachable {
            target,
            reason: "the answer held no SVID".into(),
        });
    };
    parse(svid).map_err(|reason| ClientError::Unreachable { target, reason })
}

fn parse(svid: X509svid) -> Result<FetchedSvid, String> {
    Ok(FetchedSvid {
        spiffe_id: svid.spiffe_id,
        chain_der: split_der(&svid.x509_svid)?,
        key_pkcs8_der: zeroize::Zeroizing::new(svid.x509_svid_key),
        bundle_der: split_der(&svid.bundle)?,
    })
}

/// Splits concatenated DER certificates.
fn split_der(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut certificates = Vec::new();
    while !bytes.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(bytes)
            .map_err(|e| format!("the answer holds a malformed certificate: {e}"))?;
        let used = bytes.len() - rest.len();
        certificates.push(bytes[..used].to_vec());
        bytes = rest;
    }
    Ok(certificates)
}

async fn connect(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://agent.invalid")
        .connect_timeout(crate::api::client::CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}
