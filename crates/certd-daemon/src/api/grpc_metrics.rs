//! A tower layer around the gRPC servers: how long each call takes, by
//! method, and how many are being answered (`metrics`). Method names come
//! from a fixed list, so a client calling made-up paths cannot add series.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::{self, MethodLabels};

/// Every method certd serves; anything else is counted as "other".
const METHODS: &[&str] = &[
    "Issue",
    "Renew",
    "GetTrustBundle",
    "GetStatus",
    "GetCrl",
    "ListAgentEntries",
    "IssueForAgent",
    "MintJwtSvid",
    "MintJwtSvidForAgent",
    "CreateJoinToken",
    "IssueForCi",
    "ListCertificates",
    "GetCertificate",
    "Revoke",
    "IssueOperatorCertificate",
    "ListAudit",
    "CreateEntry",
    "UpdateEntry",
    "DeleteEntry",
    "ListEntries",
    "Backup",
    "GetPolicy",
    "ReplacePolicy",
    "ExplainPolicy",
    "Check",
    "Watch",
];

fn method_of(path: &str) -> &'static str {
    method_among(path, METHODS)
}

/// The method a gRPC request path names, if it is one of `known`, else
/// "other": a label value from a fixed set, whatever a client sends.
pub(crate) fn method_among(path: &str, known: &[&'static str]) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    known
        .iter()
        .find(|method| **method == name)
        .copied()
        .unwrap_or("other")
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
}

/// Counts a call in flight until dropped, and its duration then.
struct InFlight {
    method: &'static str,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let metrics = metrics::get();
        metrics.grpc_in_flight.dec();
        metrics
            .grpc_duration
            .get_or_create(&MethodLabels {
                method: self.method.to_owned(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        metrics::get().grpc_in_flight.inc();
        let in_flight = InFlight {
            method: method_of(request.uri().path()),
            started: Instant::now(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        assert_eq!(method_of("/certd.v1.CertificateAuthority/Issue"), "Issue");
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_of("/certd.v1.Admin/Made-Up-1234"), "other");
        assert_eq!(method_of(""), "other");
    }
}
