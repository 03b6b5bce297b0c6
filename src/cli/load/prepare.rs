//! Everything a run needs before the clock starts: join tokens in bulk
//! (for `issue`, the first few seconds' worth: `tokens`),
//! keys and CSRs, identities for mTLS, the bench's entries and policy
//! rules. Each thing it creates in the store goes into the run's ledger
//! as soon as certd has created it, so that cleanup finds it even when
//! preparation fails half-way.

use std::sync::Arc;
use std::time::Duration;

use certd::api::client::{AdminClient, TlsClientSettings, TokenEndpointClient, WorkloadClient};
use certd::authority::TokenFor;
use certd::registry::EntrySpec;

use super::tokens::{self, TokenSupply};
use super::{
    BENCH_AGENT, BENCH_DELEGATION, BENCH_JWT_AUDIENCE, BENCH_JWT_SERVICE, BENCH_SELF_GRANT,
    BENCH_SERVICE, BenchError, BenchOptions, CSR_POOL, Ledger, Limit, Operation, Progress,
    TOKEN_BATCH, Workload, anonymous,
};

/// A run's preparation: its settings, and where it writes down what it
/// creates.
pub(super) struct Prepare<'a> {
    pub options: &'a BenchOptions,
    pub ledger: &'a Ledger,
    pub progress: &'a Progress,
}

impl Prepare<'_> {
    pub async fn workload(&self) -> Result<Workload, BenchError> {
        let options = self.options;
        let csrs = Arc::new(csr_pool()?);
        match options.operation {
            Operation::Issue => {
                // A few seconds' worth now, the rest as the run goes
                // (`tokens`).
                let (now, later) = match options.limit {
                    Limit::Count(count) => {
                        let now = count.min(tokens::INITIAL);
                        (now, Some(count - now))
                    }
                    Limit::Duration(_) => (tokens::INITIAL, None),
                };
                let made = self.create_tokens(now).await?;
                Ok(Workload::Issue {
                    tokens: Arc::new(TokenSupply::new(made, later)),
                    csrs,
                })
            }
            Operation::IssueKubernetes => {
                let token = options.kubernetes_token.clone().ok_or_else(|| {
                    BenchError::Prepare("a Kubernetes service-account token is needed".into())
                })?;
                Ok(Workload::IssueKubernetes { token, csrs })
            }
            Operation::Renew => {
                let tokens = self.create_tokens(options.concurrency as u64).await?;
                let mut identities = Vec::with_capacity(tokens.len());
                let mut client =
                    WorkloadClient::connect(&options.server, &anonymous(options)).await?;
                for token in tokens {
                    if self.progress.stopped() {
                        return Err(BenchError::Interrupted);
                    }
                    let (key, csr) = key_and_csr()?;
                    let issued = client.issue(csr, &token).await?;
                    self.ledger.certificate_issued();
                    identities.push(TlsClientSettings {
                        ca_bundle_pem: options.ca_bundle_pem.clone(),
                        identity: Some((
                            issued.chain_pem,
                            zeroize::Zeroizing::new(key.serialize_pem()),
                        )),
                    });
                }
                let keyed_csrs = (0..CSR_POOL)
                    .map(|_| key_and_csr().map(|(key, csr)| (key.serialize_pem(), csr)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Workload::Renew {
                    identities,
                    keyed_csrs: Arc::new(keyed_csrs),
                })
            }
            Operation::Ocsp => {
                let token = self.create_tokens(1).await?;
                let mut client =
                    WorkloadClient::connect(&options.server, &anonymous(options)).await?;
                let issued = client.issue(csrs[0].clone(), &token[0]).await?;
                self.ledger.certificate_issued();
                let (request, ocsp_url) =
                    certd::revocation::ocsp::request_for(&issued.chain_pem, None)
                        .map_err(BenchError::Prepare)?;
                let http = http_base(options, &ocsp_url)?;
                Ok(Workload::Ocsp {
                    http,
                    request: Arc::new(request),
                })
            }
            Operation::Crl => Ok(Workload::Crl {
                http: options
                    .http
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            }),
            Operation::CfsslSign => Ok(Workload::CfsslSign {
                http: options
                    .http
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:8888".into()),
                requests: Arc::new(
                    csrs.iter()
                        .map(|csr| {
                            serde_json::json!({
                                "certificate_request": certd::ca::pem_encode("CERTIFICATE REQUEST", csr),
                            })
                            .to_string()
                            .into_bytes()
                        })
                        .collect(),
                ),
            }),
            Operation::AgentIssue => {
                let (agent, entry_id) = self.bench_agent().await?;
                Ok(Workload::AgentIssue {
                    agent,
                    entry_id,
                    csrs,
                })
            }
            Operation::Acme => self.acme(options.acme_challenges).await,
            Operation::Revoke => match options.limit {
                Limit::Count(count) => self.revoke(count, options.wait_crl).await,
                Limit::Duration(_) => Err(BenchError::Prepare(
                    "`revoke` needs --count: the certificates it revokes are issued first".into(),
                )),
            },
            Operation::JwtMint => Ok(Workload::JwtMint {
                identity: self.bench_jwt_identity().await?,
            }),
            Operation::TokenEndpoint => Ok(Workload::TokenEndpoint {
                identity: self.bench_jwt_identity().await?,
                endpoint: format!("{}/oauth/token", options.server.trim_end_matches('/')),
            }),
            Operation::TokenExchange => {
                let identity = self.bench_jwt_identity().await?;
                let endpoint = format!("{}/oauth/token", options.server.trim_end_matches('/'));
                self.bench_delegation(&identity, &endpoint).await?;
                Ok(Workload::TokenExchange { identity, endpoint })
            }
            Operation::WorkloadApi => Ok(Workload::SpiffeApi {
                socket: options.socket.clone().ok_or_else(|| {
                    BenchError::Prepare("`workload-api` needs the agent's --socket".into())
                })?,
            }),
        }
    }

    /// An entry of `spec`'s service that `matches`, or a new one made from
    /// `spec` (written down in the ledger: only those are this run's in a
    /// shared store).
    pub(super) async fn entry(
        &self,
        admin: &mut AdminClient,
        spec: EntrySpec,
        matches: impl Fn(&certd::api::client::EntrySummary) -> bool,
    ) -> Result<certd::api::client::EntrySummary, BenchError> {
        let existing = admin.entries(Some(&spec.service)).await?;
        if let Some(entry) = existing.into_iter().find(matches) {
            return Ok(entry);
        }
        let entry = admin.create_entry(&spec).await?;
        self.ledger.entry_created(&entry.id);
        Ok(entry)
    }

    /// A workload identity whose entry allows the bench audience.
    async fn bench_jwt_identity(&self) -> Result<TlsClientSettings, BenchError> {
        let mut admin = AdminClient::connect(&self.options.admin_socket).await?;
        let spec = EntrySpec {
            service: BENCH_JWT_SERVICE.to_owned(),
            selectors: vec![format!("token:{BENCH_JWT_SERVICE}")],
            jwt_audiences: vec![BENCH_JWT_AUDIENCE.to_owned()],
            ..EntrySpec::default()
        };
        let entry = self.entry(&mut admin, spec, |_| true).await?;
        self.bootstrap(&mut admin, entry.id).await
    }

    /// A fresh identity for entry `entry_id` (a join token made for it,
    /// exchanged at once), as mTLS client settings.
    async fn bootstrap(
        &self,
        admin: &mut AdminClient,
        entry_id: String,
    ) -> Result<TlsClientSettings, BenchError> {
        let options = self.options;
        let mut created = admin
            .create_join_tokens(&TokenFor::Entry(entry_id), None, 1)
            .await?;
        self.ledger.tokens_created(&created.tokens);
        let token = created
            .tokens
            .pop()
            .ok_or_else(|| BenchError::Prepare("no join token was created".into()))?;
        let (key, csr) = key_and_csr()?;
        let mut client = WorkloadClient::connect(&options.server, &anonymous(options)).await?;
        let issued = client.issue(csr, &token).await?;
        self.ledger.certificate_issued();
        Ok(TlsClientSettings {
            ca_bundle_pem: options.ca_bundle_pem.clone(),
            identity: Some((
                issued.chain_pem,
                zeroize::Zeroizing::new(key.serialize_pem()),
            )),
        })
    }

    /// Grants the bench client tokens for itself (its subject tokens) and
    /// the right to exchange them towards the bench audience on its own
    /// behalf: the grant `certd-bench-self` and the delegation
    /// `certd-bench-exchange`, added to the token policy unless it has them
    /// (and removed by the cleanup).
    async fn bench_delegation(
        &self,
        identity: &TlsClientSettings,
        endpoint: &str,
    ) -> Result<(), BenchError> {
        use certd::policy::grants;
        // certd's issuer, as its tokens name it.
        let mut client = TokenEndpointClient::connect(endpoint, identity).await?;
        let token = client.client_credentials(BENCH_JWT_AUDIENCE, &[]).await?;
        let issuer = token_claim(&token, "iss")
            .ok_or_else(|| BenchError::Prepare("the bench token names no issuer".into()))?;
        let mut admin = AdminClient::connect(&self.options.admin_socket).await?;
        let (version, text) = admin.policy().await?;
        let file = |error: grants::PolicyFileError| BenchError::Prepare(error.to_string());
        let present = grants::rule_names(&text).map_err(file)?;
        let missing: Vec<&'static str> = [BENCH_SELF_GRANT, BENCH_DELEGATION]
            .into_iter()
            .filter(|name| !present.iter().any(|p| p == name))
            .collect();
        // Applied only when one of them is missing: a bench run changes the
        // policy once.
        if missing.is_empty() {
            return Ok(());
        }
        let with_grant = grants::set_grant(
            &text,
            BENCH_SELF_GRANT,
            BENCH_JWT_SERVICE,
            BENCH_JWT_SERVICE,
            &[],
        )
        .map_err(file)?;
        let wanted = grants::set_delegation(
            &with_grant,
            BENCH_DELEGATION,
            BENCH_JWT_SERVICE,
            &[issuer],
            BENCH_JWT_AUDIENCE,
            &[],
        )
        .map_err(file)?;
        admin.replace_policy(wanted, Some(version)).await?;
        for name in missing {
            self.ledger.rule_added(name);
        }
        Ok(())
    }

    /// The bench's node agent: its entry, a fresh certificate for it, and
    /// a workload entry parented to it.
    async fn bench_agent(&self) -> Result<(TlsClientSettings, String), BenchError> {
        let mut admin = AdminClient::connect(&self.options.admin_socket).await?;
        let spec = EntrySpec {
            service: BENCH_AGENT.to_owned(),
            selectors: vec![format!("token:{BENCH_AGENT}")],
            agent: true,
            ..EntrySpec::default()
        };
        let agent_entry = self.entry(&mut admin, spec, |e| e.agent).await?;
        let agent = self.bootstrap(&mut admin, agent_entry.id.clone()).await?;
        let spec = EntrySpec {
            service: BENCH_SERVICE.to_owned(),
            selectors: vec![format!("unix:user:{BENCH_SERVICE}")],
            parent: Some(agent_entry.spiffe_id.clone()),
            ..EntrySpec::default()
        };
        let parent = Some(agent_entry.spiffe_id.as_str());
        let entry = self
            .entry(&mut admin, spec, |e| e.parent_id.as_deref() == parent)
            .await?;
        Ok((agent, entry.id))
    }

    /// Makes join tokens for the bench entry during an `issue` run, each
    /// batch as `supply` asks, until the run ends.
    /// Connects on the first batch: a counted run that made every token
    /// before the clock needs none. A failure, connecting or making, ends
    /// the supply (`TokenSupply::refill`).
    pub(super) async fn refill_tokens(&self, supply: &TokenSupply) -> Result<(), BenchError> {
        let connection = tokio::sync::Mutex::new(None::<(AdminClient, TokenFor)>);
        supply
            .refill(|count| {
                let connection = &connection;
                async move {
                    let mut connection = connection.lock().await;
                    let (admin, entry) = match &mut *connection {
                        Some(connected) => connected,
                        empty => {
                            let mut admin =
                                AdminClient::connect(&self.options.admin_socket).await?;
                            let entry = self.bench_entry(&mut admin).await?;
                            empty.insert((admin, entry))
                        }
                    };
                    let created = admin
                        .create_join_tokens(entry, Some(Duration::from_secs(3600)), count)
                        .await?;
                    self.ledger.tokens_created(&created.tokens);
                    Ok(created.tokens)
                }
            })
            .await
    }

    /// `count` join tokens for the bench entry, in batches; stops between
    /// batches when the run is interrupted.
    pub(super) async fn create_tokens(&self, count: u64) -> Result<Vec<String>, BenchError> {
        let mut admin = AdminClient::connect(&self.options.admin_socket).await?;
        let entry = self.bench_entry(&mut admin).await?;
        let mut tokens = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut left = count;
        while left > 0 {
            if self.progress.stopped() {
                return Err(BenchError::Interrupted);
            }
            let batch = u32::try_from(left.min(u64::from(TOKEN_BATCH))).unwrap_or(TOKEN_BATCH);
            let created = admin
                .create_join_tokens(&entry, Some(Duration::from_secs(3600)), batch)
                .await?;
            self.ledger.tokens_created(&created.tokens);
            tokens.extend(created.tokens);
            left -= u64::from(batch);
        }
        Ok(tokens)
    }

    /// The registration entry bench tokens are made for: the bench
    /// service's `token:` entry.
    async fn bench_entry(&self, admin: &mut AdminClient) -> Result<TokenFor, BenchError> {
        let selector = format!("token:{BENCH_SERVICE}");
        let spec = EntrySpec {
            service: BENCH_SERVICE.to_owned(),
            selectors: vec![selector.clone()],
            ..EntrySpec::default()
        };
        let entry = self
            .entry(admin, spec, |e| e.selectors == [selector.clone()])
            .await?;
        Ok(TokenFor::Entry(entry.id))
    }
}

/// A claim of a token, read without verifying it (the bench's own).
fn token_claim(token: &str, name: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

fn key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), BenchError> {
    let key = rcgen::KeyPair::generate().map_err(|e| BenchError::Prepare(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| BenchError::Prepare(e.to_string()))?;
    Ok((key, csr.der().to_vec()))
}

pub(super) fn csr_pool() -> Result<Vec<Vec<u8>>, BenchError> {
    (0..CSR_POOL)
        .map(|_| key_and_csr().map(|(_, csr)| csr))
        .collect()
}

/// certd's HTTP base URL for a run: `--http`, else the OCSP URL the
/// certificates carry without its `/ocsp`.
pub(super) fn http_base(options: &BenchOptions, ocsp_url: &str) -> Result<String, BenchError> {
    match &options.http {
        Some(http) => Ok(http.clone()),
        None => ocsp_url
            .strip_suffix("/ocsp")
            .map(str::to_owned)
            .ok_or_else(|| {
                BenchError::Prepare("the certificates have no OCSP URL; pass --http".into())
            }),
    }
}
