//! `certd bench revoke`: certificates issued first (with join tokens, by
//! `--concurrency` callers, not measured), then revoked one each per
//! request over the admin socket, each caller on its own connection; at
//! the end, how long after the last answer the served CRL listed them all,
//! and its number and size.
//!
//! By default a revocation does not wait for the CRL (`--no-wait-crl`, what
//! bulk revocations use); `--wait-crl` measures the default of `certd
//! revoke`, an answer only once the CRL lists it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde::Serialize;

use certd::api::client::WorkloadClient;

use super::prepare::Prepare;
use super::{BenchError, HttpConnection, Workload, anonymous};

/// How long the run waits, after its last revocation, for a CRL listing
/// them all before it reports that none came.
const CRL_WAIT_LIMIT: Duration = Duration::from_secs(120);
/// How often it fetches the CRL meanwhile.
const CRL_POLL: Duration = Duration::from_millis(20);

/// The CRL after a revocation run.
#[derive(Debug, Clone, Serialize)]
pub struct CrlAfterRun {
    /// Milliseconds from the last revocation's answer to the first CRL
    /// fetched that lists every certificate the run revoked (0 when the
    /// first fetch did: a run that waited for the CRL).
    pub listed_all_after_ms: f64,
    pub number: u64,
    pub entries: usize,
    pub der_bytes: usize,
}

impl Prepare<'_> {
    /// Issues `count` certificates to revoke, `--concurrency` at a time.
    pub(super) async fn revoke(&self, count: u64, wait_crl: bool) -> Result<Workload, BenchError> {
        let options = self.options;
        let tokens = self.create_tokens(count).await?;
        let csrs = Arc::new(super::prepare::csr_pool()?);
        let callers = options.concurrency.min(tokens.len()).max(1);
        let share = tokens.len().div_ceil(callers);
        let mut issuers = Vec::new();
        for (index, tokens) in tokens.chunks(share).enumerate() {
            let (tokens, csrs) = (tokens.to_vec(), csrs.clone());
            let mut client = WorkloadClient::connect(&options.server, &anonymous(options)).await?;
            issuers.push(tokio::spawn(async move {
                let mut issued = Vec::with_capacity(tokens.len());
                for (round, token) in tokens.iter().enumerate() {
                    let csr = csrs[(index + round) % csrs.len()].clone();
                    issued.push(client.issue(csr, token).await?);
                }
                Ok::<_, BenchError>(issued)
            }));
        }
        let mut serials = Vec::new();
        let mut ocsp_url = String::new();
        for issuer in issuers {
            let issued = issuer
                .await
                .map_err(|e| BenchError::Prepare(e.to_string()))??;
            for certificate in issued {
                self.ledger.certificate_issued();
                if ocsp_url.is_empty() {
                    ocsp_url = certd::revocation::ocsp::request_for(&certificate.chain_pem, None)
                        .map_err(BenchError::Prepare)?
                        .1;
                }
                serials.push(certificate.serial);
            }
            if self.progress.stopped() {
                return Err(BenchError::Interrupted);
            }
        }
        let http = super::prepare::http_base(options, &ocsp_url)?;
        Ok(Workload::Revoke {
            serials: Arc::new(serials),
            next: Arc::new(AtomicUsize::new(0)),
            wait_crl,
            http,
        })
    }
}

/// Fetches the CRL until it lists every one of `serials` (hex), timing how
/// long after `last_answer` that was.
pub(super) async fn crl_after_run(
    http: &str,
    serials: &[String],
    last_answer: Instant,
) -> Result<CrlAfterRun, BenchError> {
    let wanted: HashSet<Vec<u8>> = serials
        .iter()
        .filter_map(|serial| hex::decode(serial).ok())
        .collect();
    let mut connection = HttpConnection::connect(http)
        .await
        .map_err(|e| BenchError::Prepare(format!("cannot connect to {http}: {e}")))?;
    loop {
        let (status, der) = connection
            .request("GET", "/crl", None)
            .await
            .map_err(|e| BenchError::Prepare(format!("fetching the CRL: {e}")))?;
        let fetched = last_answer.elapsed();
        if status != 200 {
            return Err(BenchError::Prepare(format!(
                "the CRL answer is HTTP {status}"
            )));
        }
        let (number, listed) = read_crl(&der)?;
        if wanted.iter().all(|serial| listed.contains(serial)) {
            return Ok(CrlAfterRun {
                listed_all_after_ms: fetched.as_secs_f64() * 1000.0,
                number,
                entries: listed.len(),
                der_bytes: der.len(),
            });
        }
        if fetched > CRL_WAIT_LIMIT {
            return Err(BenchError::Prepare(format!(
                "no CRL listed every revoked certificate within {}s of the last revocation",
                CRL_WAIT_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(CRL_POLL).await;
    }
}

/// A DER CRL's number and the serials it lists.
fn read_crl(der: &[u8]) -> Result<(u64, HashSet<Vec<u8>>), BenchError> {
    let (_, crl) = x509_parser::parse_x509_crl(der)
        .map_err(|e| BenchError::Prepare(format!("the CRL does not parse: {e}")))?;
    let number = crl
        .crl_number()
        .and_then(|number| u64::try_from(number).ok())
        .unwrap_or(0);
    let listed = crl
        .iter_revoked_certificates()
        .map(|entry| entry.raw_serial().to_vec())
        .collect();
    Ok((number, listed))
}
