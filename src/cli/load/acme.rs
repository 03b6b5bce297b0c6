//! `certd bench acme`: one ACME account (bound by EAB to a bench entry)
//! shared by every caller, each caller ordering on its own connection:
//! newOrder, its http-01 challenge (answered by this process on a
//! loopback port, which the certd under test must be configured to
//! validate against: `[acme.testing]`), finalize, download.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use certd::api::client::{AcmeAccountKey, AcmeClient, AdminClient};
use certd::registry::EntrySpec;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::prepare::Prepare;
use super::{BENCH_SERVICE, BenchError, CSR_POOL, Workload};

/// The DNS name bench orders, on its own entry.
pub(super) const BENCH_ACME_NAME: &str = "acme.certd-bench.test";
/// The selector of that entry (never presented: the entry exists for its
/// name, which ACME accounts bound to it may order).
const BENCH_ACME_SELECTOR: &str = "token:certd-bench-acme";
/// Where bench answers http-01 when not told otherwise (Pebble's port).
pub const DEFAULT_HTTP01_PORT: u16 = 5002;

/// How the bench's orders are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenges {
    /// Each order's http-01 challenge, answered by bench on `http_port`.
    Http01 { http_port: u16 },
    /// None: the entry's policy lets its EAB accounts skip challenges
    /// (`--without-challenges`).
    None,
}

/// Answers http-01 for the bench account while it lives; stops when
/// dropped.
pub(super) struct Http01Responder(tokio::task::JoinHandle<()>);

impl Drop for Http01Responder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Http01Responder {
    /// Serves `/.well-known/acme-challenge/TOKEN` on 127.0.0.1:`port`
    /// with `TOKEN.thumbprint`: the key authorization of every challenge
    /// of the account whose key has that thumbprint, so no token needs to
    /// be handed over.
    async fn start(port: u16, thumbprint: String) -> Result<Self, BenchError> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
            BenchError::Prepare(format!(
                "cannot listen on 127.0.0.1:{port} to answer http-01 challenges: {e} (choose another with --acme-http-port, and the same [acme.testing] http_port in the certd under test)"
            ))
        })?;
        let thumbprint = Arc::new(thumbprint);
        Ok(Http01Responder(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let thumbprint = thumbprint.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let thumbprint = thumbprint.clone();
                        async move { Ok::<_, Infallible>(key_authorization(&request, &thumbprint)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })))
    }
}

fn key_authorization<B>(
    request: &hyper::Request<B>,
    thumbprint: &str,
) -> hyper::Response<Full<Bytes>> {
    let token = request
        .uri()
        .path()
        .strip_prefix("/.well-known/acme-challenge/")
        .filter(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let mut response = hyper::Response::new(Full::new(Bytes::from(match token {
        Some(token) => format!("{token}.{thumbprint}"),
        None => String::new(),
    })));
    if token.is_none() {
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
    }
    response
}

impl Prepare<'_> {
    /// The bench entry with its ACME policy, an EAB key, the account, the
    /// http-01 responder and one order through all of it, before the
    /// clock starts: a certd that cannot validate fails here, saying what
    /// it needs.
    pub(super) async fn acme(&self, challenges: AcmeChallenges) -> Result<Workload, BenchError> {
        let options = self.options;
        let mut admin = AdminClient::connect(&options.admin_socket).await?;
        let spec = EntrySpec {
            service: BENCH_SERVICE.to_owned(),
            selectors: vec![BENCH_ACME_SELECTOR.to_owned()],
            dns_names: vec![BENCH_ACME_NAME.to_owned()],
            ..EntrySpec::default()
        };
        let entry = self
            .entry(&mut admin, spec, |entry| {
                entry.selectors == [BENCH_ACME_SELECTOR]
                    && entry.dns_names.iter().any(|name| name == BENCH_ACME_NAME)
            })
            .await?;
        admin
            .set_acme_policy(
                &entry.id,
                &["http-01".to_owned()],
                challenges == AcmeChallenges::None,
            )
            .await?;
        let eab = admin.create_acme_eab(&entry.id, None).await?;
        let key = Arc::new(AcmeAccountKey::generate()?);
        let responder = match challenges {
            AcmeChallenges::Http01 { http_port } => {
                Some(Http01Responder::start(http_port, key.thumbprint().to_owned()).await?)
            }
            AcmeChallenges::None => None,
        };
        let directory = format!("{}/acme/directory", options.server.trim_end_matches('/'));
        let mut client =
            AcmeClient::connect(&directory, &options.ca_bundle_pem, key.clone()).await?;
        let kid = client.new_account(&eab.key_id, &eab.hmac_key).await?;
        if let Some(id) = kid.rsplit('/').next() {
            self.ledger.acme_account_created(id);
        }
        let names = vec![BENCH_ACME_NAME.to_owned()];
        let csrs = (0..CSR_POOL)
            .map(|_| acme_csr())
            .collect::<Result<Vec<_>, _>>()?;
        let first = client.order_certificate(&names, &csrs[0]).await;
        match first {
            Ok(_) => self.ledger.certificate_issued(),
            Err(error) => {
                let error = error.to_string();
                let hint = match challenges {
                    AcmeChallenges::Http01 { http_port } if error.contains("http-01") => format!(
                        "; bench answers http-01 on 127.0.0.1:{http_port}, so the certd it loads needs `[acme.testing] http_port = {http_port}` and `resolve_all_to = \"127.0.0.1\"` (or run `--acme-challenges none`)"
                    ),
                    _ if error.contains("rateLimited") => "; every caller orders for one account: `[acme] new_orders_per_minute_per_account = 0` in the certd it loads lifts that limit".to_owned(),
                    _ => String::new(),
                };
                return Err(BenchError::Prepare(format!(
                    "a first ACME order failed: {error}{hint}"
                )));
            }
        }
        Ok(Workload::Acme {
            key,
            kid,
            directory,
            names,
            csrs: Arc::new(csrs),
            _responder: responder,
        })
    }
}

/// A CSR (DER) for the bench name, with a fresh key.
fn acme_csr() -> Result<Vec<u8>, BenchError> {
    let key = rcgen::KeyPair::generate().map_err(|e| BenchError::Prepare(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![BENCH_ACME_NAME.to_owned()])
        .map_err(|e| BenchError::Prepare(e.to_string()))?;
    // rcgen's default subject names a CN the order does not.
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| BenchError::Prepare(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// Connects a caller, acting for the bench account.
pub(super) async fn connect(
    directory: &str,
    ca_bundle_pem: &str,
    key: &Arc<AcmeAccountKey>,
    kid: &str,
) -> Result<AcmeClient, BenchError> {
    Ok(AcmeClient::connect(directory, ca_bundle_pem, key.clone())
        .await?
        .with_account(kid.to_owned()))
}
