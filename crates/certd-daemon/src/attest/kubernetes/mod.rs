//! Kubernetes projected service-account tokens: a JWT signed by the
//! cluster's service-account issuer, proving the pod's namespace, service
//! account and (when present) pod name and uid and node name.
//!
//! The keys come from a JWKS file (what the issuer publishes at
//! `/openid/v1/jwks`), PEM public keys (the API server's
//! `--service-account-key-file`) and/or a JWKS URL (`jwks_url`). Files are
//! re-read when they change and the URL is fetched again periodically and
//! when a token names an unknown key id, so a key rotation needs no restart
//! (`crate::jwks`, which this attestor's `maintain` task drives). Only RS256
//! and ES256 are accepted: a token naming any other algorithm (`none`,
//! HS256) is refused before any key is tried.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::AttestError;

mod config;

pub(crate) use config::CONFIGURABLE;
#[cfg(test)]
pub(crate) use config::DEFAULT_JWKS_REFRESH;
pub use config::DEFAULT_KUBERNETES_AUDIENCE;

use crate::identity::is_dns_name;
use crate::jwks::{IssuerKeys, KeySources};
use crate::selector::{Selector, SelectorKind};
// Moved to `crate::jwks`; kept here under the names callers have used.
pub use crate::jwks::{JwksUrlSettings, KeyFileError};

/// `k8s:ns:<namespace>`, `k8s:sa:<service account>`, `k8s:pod-name:<name>`,
/// `k8s:pod-uid:<uid>` and `k8s:node-name:<name>`: what a projected
/// service-account token proves.
pub static SELECTORS: SelectorKind = SelectorKind {
    name: "k8s",
    check: k8s_selector,
    proven_by_agent: false,
};

/// The part after `k8s:`; `Ok(false)` when the key is known but the value
/// is not.
fn k8s_selector(rest: &str) -> Result<bool, String> {
    let (key, value) = rest.split_once(':').unwrap_or((rest, ""));
    match key {
        // Kubernetes object names are lower-case RFC 1123 subdomains.
        "ns" | "sa" | "pod-name" | "node-name" => Ok(is_dns_name(value)),
        "pod-uid" => Ok(!value.is_empty()
            && value.len() <= 64
            && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')),
        _ => Err(format!(
            "selector k8s:{rest} has unknown key {key:?}; known: k8s:ns, k8s:sa, k8s:pod-name, k8s:pod-uid, k8s:node-name"
        )),
    }
}

/// Longest token certd reads; real ones are about 1 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Names the cluster's issuer in the key log lines.
const ISSUER_LABEL: &str = "Kubernetes issuer";

/// The Kubernetes attestor's section of the configuration, checked
/// (`config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must include (default `certd`).
    pub audience: String,
    pub jwks_file: Option<PathBuf>,
    pub public_key_files: Vec<PathBuf>,
    /// Allowance for clock differences when checking `exp` and `nbf`.
    pub clock_skew: Duration,
    /// Where to fetch the issuer's JWKS, if anywhere.
    pub jwks_url: Option<JwksUrlSettings>,
}

/// What a verified token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesEvidence {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    pub selectors: Vec<Selector>,
}

/// Verifies projected service-account tokens against the configured keys.
#[derive(Debug)]
pub struct KubernetesAttestor {
    settings: KubernetesSettings,
    /// The issuer's keys, from the key sources in `settings`.
    keys: IssuerKeys,
}

/// The claims certd reads; the rest are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: ObjectRef,
    pod: Option<ObjectRef>,
    /// Set by Kubernetes 1.30 and later for tokens bound to a pod.
    node: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    name: String,
    uid: Option<String>,
}

impl KubernetesAttestor {
    /// Reads the key files; fails if none holds a usable key and there is
    /// no JWKS URL to fetch keys from (`refresh_from_url`, `keep_fresh`).
    pub fn load(settings: KubernetesSettings) -> Result<Self, KeyFileError> {
        let sources = KeySources {
            jwks_file: settings.jwks_file.clone(),
            public_key_files: settings.public_key_files.clone(),
            jwks_url: settings.jwks_url.clone(),
        };
        let keys = IssuerKeys::load(sources, ISSUER_LABEL.to_owned())?;
        Ok(KubernetesAttestor { settings, keys })
    }

    /// Whether keys come from a JWKS URL, which `keep_fresh` must fetch.
    pub fn fetches_keys(&self) -> bool {
        self.keys.fetches_keys()
    }

    /// Fetches the JWKS URL once and uses its keys; on failure the keys
    /// fetched before stay in use. Returns how many keys it holds.
    pub async fn refresh_from_url(&self) -> Result<usize, KeyFileError> {
        self.keys.refresh_from_url().await
    }

    /// Keeps the keys of the JWKS URL fresh until `stopped`: fetched again
    /// every `refresh`, after a failure every 10 s, and soon after a token
    /// names an unknown key id (how a rotation first shows).
    pub async fn keep_fresh(&self, stopped: impl Future<Output = ()>) {
        self.keys.keep_fresh(stopped).await;
    }

    /// Verifies `token` and returns the selectors it proves.
    pub fn verify(&self, token: &str) -> Result<KubernetesEvidence, AttestError> {
        let refuse = |reason: &str| Err(AttestError::KubernetesToken(reason.to_owned()));
        if token.len() > MAX_TOKEN_BYTES {
            return refuse("it is longer than 16 KiB");
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return refuse("it is not a JWT signed with RS256 or ES256");
        };
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return refuse("it is signed with an algorithm other than RS256 or ES256");
        }
        let candidates = self.keys.candidates(header.alg, header.kid.as_deref());
        let validation = self.validation(header.alg);
        let mut outcome = refuse("no trusted key verifies its signature");
        for key in &candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return evidence(data.claims),
                // Another key of the set may have signed it.
                Err(error) if *error.kind() == ErrorKind::InvalidSignature => {}
                Err(error) => {
                    outcome = Err(AttestError::KubernetesToken(describe(error.kind())));
                    break;
                }
            }
        }
        outcome
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.settings.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation
    }
}

/// Turns verified claims into selectors. The subject must agree with the
/// Kubernetes claims, as the API server always makes it.
fn evidence(claims: Claims) -> Result<KubernetesEvidence, AttestError> {
    let refuse = |reason: &str| Err(AttestError::KubernetesToken(reason.to_owned()));
    let Some(kubernetes) = claims.kubernetes else {
        return refuse(
            "it has no kubernetes.io claim: only projected service-account tokens are accepted",
        );
    };
    let namespace = &kubernetes.namespace;
    let account = &kubernetes.serviceaccount.name;
    if claims.sub != format!("system:serviceaccount:{namespace}:{account}") {
        return refuse("its subject does not match its namespace and service account");
    }
    let invalid = |_: String| {
        AttestError::KubernetesToken("it names an invalid namespace, service account or pod".into())
    };
    let k8s = |key: &str, value: &str| {
        Selector::of_kind(&SELECTORS, format_args!("{key}:{value}")).map_err(invalid)
    };
    let mut selectors = vec![k8s("ns", namespace)?, k8s("sa", account)?];
    if let Some(pod) = &kubernetes.pod {
        selectors.push(k8s("pod-name", &pod.name)?);
        if let Some(uid) = &pod.uid {
            selectors.push(k8s("pod-uid", uid)?);
        }
    }
    if let Some(node) = &kubernetes.node {
        selectors.push(k8s("node-name", &node.name)?);
    }
    Ok(KubernetesEvidence {
        subject: claims.sub,
        selectors,
    })
}

/// Why a token whose signature verified was still refused.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "it has expired".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidIssuer => "it was issued by an issuer certd does not trust".into(),
        ErrorKind::InvalidAudience => "its audience does not include certd's".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        ErrorKind::InvalidAlgorithm => "its algorithm does not match the key".into(),
        _ => "its claims are malformed".into(),
    }
}

#[async_trait::async_trait]
impl super::Attestor for KubernetesAttestor {
    fn kind(&self) -> &'static str {
        super::kind::KUBERNETES
    }

    fn proves(&self) -> &'static SelectorKind {
        &SELECTORS
    }

    async fn attest(
        &self,
        evidence: &[u8],
        _store: &dyn crate::store::Storage,
        _now: i64,
    ) -> Result<super::Proven, super::AttestFailure> {
        let token = std::str::from_utf8(evidence)
            .map_err(|_| AttestError::KubernetesToken("the token is not UTF-8 text".into()))?;
        let evidence = self.verify(token)?;
        Ok(super::Proven {
            selectors: evidence.selectors,
            proof: crate::model::Proof::Attested {
                kind: super::kind::KUBERNETES.into(),
                detail: evidence.subject,
            },
            consumes: None,
        })
    }

    /// Fetches the JWKS URL once before serving, so that service-account
    /// tokens are accepted from the first request. A failure is logged, not
    /// fatal: join tokens and renewals need no Kubernetes keys, and
    /// `maintain` retries.
    async fn prepare(&self) {
        if !self.fetches_keys() {
            return;
        }
        match self.refresh_from_url().await {
            Ok(keys) => tracing::info!(keys, "fetched the Kubernetes issuer's JWKS"),
            Err(error) => tracing::error!(
                error = %crate::error_kind::with_causes(&error),
                "cannot fetch the Kubernetes issuer's JWKS; service-account tokens signed with its keys are refused until it is fetched"
            ),
        }
    }

    async fn maintain(&self, stopped: super::Stopped) {
        self.keep_fresh(stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::jwks::KEY_RECHECK_INTERVAL;
    use crate::jwks::fetch::JwksUrl;
    use crate::k8s_issuer::*;

    /// A cluster issuer: an ES256 key published in a JWKS file and the RSA
    /// fixture as a PEM key file.
    struct Cluster {
        dir: tempfile::TempDir,
        ec: rcgen::KeyPair,
    }

    impl Cluster {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let cluster = Cluster {
                ec: rcgen::KeyPair::generate().unwrap(),
                dir,
            };
            cluster.publish(&[&cluster.ec]);
            std::fs::write(cluster.dir.path().join("sa.pub"), RSA_PUBLIC).unwrap();
            cluster
        }

        fn publish(&self, keys: &[&rcgen::KeyPair]) {
            std::fs::write(self.dir.path().join("jwks.json"), jwks(keys)).unwrap();
        }

        fn attestor(&self) -> KubernetesAttestor {
            KubernetesAttestor::load(KubernetesSettings {
                issuer: ISSUER.into(),
                audience: "certd".into(),
                jwks_file: Some(self.dir.path().join("jwks.json")),
                public_key_files: vec![self.dir.path().join("sa.pub")],
                clock_skew: Duration::from_secs(30),
                jwks_url: None,
            })
            .unwrap()
        }
    }

    fn refusal(attestor: &KubernetesAttestor, token: &str) -> String {
        match attestor.verify(token) {
            Err(AttestError::KubernetesToken(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn es256_from_the_jwks_and_rs256_from_a_pem_key_are_accepted() {
        let cluster = Cluster::new();
        let attestor = cluster.attestor();
        let evidence = attestor.verify(&es256(&cluster.ec, &claims())).unwrap();
        assert_eq!(evidence.subject, "system:serviceaccount:payments:billing");
        let selectors: Vec<&str> = evidence.selectors.iter().map(Selector::as_str).collect();
        assert_eq!(
            selectors,
            [
                "k8s:ns:payments",
                "k8s:sa:billing",
                "k8s:pod-name:billing-7d9f",
                "k8s:pod-uid:0b1c2d3e-aaaa-bbbb-cccc-1234567890ab",
                "k8s:node-name:node-1.example"
            ]
        );
        let mut without_pod = claims();
        let kubernetes = without_pod["kubernetes.io"].as_object_mut().unwrap();
        kubernetes.remove("pod");
        kubernetes.remove("node");
        let evidence = attestor.verify(&rs256(&without_pod)).unwrap();
        assert_eq!(evidence.selectors.len(), 2);
    }

    #[test]
    fn each_way_a_token_can_be_wrong_is_refused_with_its_reason() {
        let cluster = Cluster::new();
        let attestor = cluster.attestor();
        let stranger = rcgen::KeyPair::generate().unwrap();
        let mut forged = Header::new(Algorithm::ES256);
        forged.kid = Some(kid(&cluster.ec));
        let forged = jsonwebtoken::encode(
            &forged,
            &claims(),
            &EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        )
        .unwrap();
        let signed = es256(&cluster.ec, &claims());
        let payload = signed.split('.').nth(1).unwrap();
        let unsigned = format!(
            "{}.{payload}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)
        );
        let mut legacy = claims();
        legacy.as_object_mut().unwrap().remove("kubernetes.io");
        for (token, says) in [
            (forged, "no trusted key verifies its signature"),
            (es256(&stranger, &claims()), "no trusted key"),
            (
                es256(&cluster.ec, &with(claims(), "iss", json!("https://evil"))),
                "issuer",
            ),
            (
                es256(&cluster.ec, &with(claims(), "aud", json!(["vault"]))),
                "audience",
            ),
            (
                es256(&cluster.ec, &with(claims(), "exp", json!(now() - 120))),
                "expired",
            ),
            (
                es256(&cluster.ec, &with(claims(), "nbf", json!(now() + 120))),
                "not valid yet",
            ),
            (
                rs256(&with(
                    claims(),
                    "sub",
                    json!("system:serviceaccount:payments:admin"),
                )),
                "subject does not match",
            ),
            (rs256(&legacy), "no kubernetes.io claim"),
            (hs256, "algorithm other than RS256 or ES256"),
            (unsigned, "not a JWT"),
            ("garbage".to_owned(), "not a JWT"),
            ("x".repeat(20_000), "longer than 16 KiB"),
        ] {
            let reason = refusal(&attestor, &token);
            assert!(reason.contains(says), "{says:?} not in {reason:?}");
        }
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(refusal(&attestor, &rs256(&no_exp)).contains("no exp claim"));
    }

    #[test]
    fn truncated_and_mutated_tokens_are_refused_without_panicking() {
        let cluster = Cluster::new();
        let attestor = cluster.attestor();
        let token = rs256(&claims());
        for end in 0..token.len() {
            assert!(
                attestor.verify(&token[..end]).is_err(),
                "truncated at {end}"
            );
        }
        let bytes = token.as_bytes();
        for position in 0..bytes.len() {
            for replacement in [b'A', b'.', b'_', b'='] {
                if bytes[position] == replacement {
                    continue;
                }
                let mut mutated = bytes.to_vec();
                mutated[position] = replacement;
                let mutated = String::from_utf8(mutated).unwrap();
                // Base64 padding bits may change without changing the bytes;
                // any other change must be refused.
                if let Ok(evidence) = attestor.verify(&mutated) {
                    assert_eq!(evidence, attestor.verify(&token).unwrap());
                }
            }
        }
    }

    #[test]
    fn clock_skew_is_allowed_on_exp_and_nbf() {
        let cluster = Cluster::new();
        let attestor = cluster.attestor();
        let expired_a_moment_ago = with(claims(), "exp", json!(now() - 10));
        assert!(
            attestor
                .verify(&es256(&cluster.ec, &expired_a_moment_ago))
                .is_ok()
        );
        let valid_in_a_moment = with(claims(), "nbf", json!(now() + 10));
        assert!(
            attestor
                .verify(&es256(&cluster.ec, &valid_in_a_moment))
                .is_ok()
        );
    }

    #[test]
    fn rotated_keys_are_picked_up_and_a_broken_file_keeps_the_old_ones() {
        let cluster = Cluster::new();
        let attestor = cluster.attestor();
        let next = rcgen::KeyPair::generate().unwrap();
        assert!(attestor.verify(&es256(&next, &claims())).is_err());
        cluster.publish(&[&cluster.ec, &next]);
        std::thread::sleep(KEY_RECHECK_INTERVAL + Duration::from_millis(100));
        assert!(attestor.verify(&es256(&next, &claims())).is_ok());

        std::fs::write(cluster.dir.path().join("jwks.json"), "{ not json").unwrap();
        std::thread::sleep(KEY_RECHECK_INTERVAL + Duration::from_millis(100));
        assert!(attestor.verify(&es256(&next, &claims())).is_ok());
    }

    #[test]
    fn key_files_without_usable_keys_are_refused_at_load() {
        let cluster = Cluster::new();
        std::fs::write(cluster.dir.path().join("jwks.json"), r#"{"keys":[]}"#).unwrap();
        let settings = |public_key_files| KubernetesSettings {
            issuer: ISSUER.into(),
            audience: "certd".into(),
            jwks_file: Some(cluster.dir.path().join("jwks.json")),
            public_key_files,
            clock_skew: Duration::ZERO,
            jwks_url: None,
        };
        assert!(matches!(
            KubernetesAttestor::load(settings(vec![])),
            Err(KeyFileError::NoKeys)
        ));
        std::fs::write(cluster.dir.path().join("bad.pub"), "hello").unwrap();
        assert!(matches!(
            KubernetesAttestor::load(settings(vec![cluster.dir.path().join("bad.pub")])),
            Err(KeyFileError::Invalid { .. })
        ));
        assert!(matches!(
            KubernetesAttestor::load(settings(vec![cluster.dir.path().join("missing.pub")])),
            Err(KeyFileError::Read { .. })
        ));
    }

    fn url_attestor(server: &JwksServer, token_file: Option<PathBuf>) -> KubernetesAttestor {
        KubernetesAttestor::load(KubernetesSettings {
            issuer: ISSUER.into(),
            audience: "certd".into(),
            jwks_file: None,
            public_key_files: vec![],
            clock_skew: Duration::from_secs(30),
            jwks_url: Some(JwksUrlSettings {
                url: server.url.clone(),
                ca_file: Some(server.ca_file.clone()),
                token_file,
                refresh: Duration::from_secs(300),
            }),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn keys_are_fetched_from_a_jwks_url_with_a_bearer_token() {
        let cluster = Cluster::new();
        let server = JwksServer::start(cluster.dir.path()).await;
        server.serve(200, jwks(&[&cluster.ec]));
        let token_file = cluster.dir.path().join("reader-token");
        std::fs::write(&token_file, "reader-secret\n").unwrap();
        let attestor = url_attestor(&server, Some(token_file));
        let token = es256(&cluster.ec, &claims());
        assert!(attestor.verify(&token).is_err(), "no keys before the fetch");
        assert_eq!(attestor.refresh_from_url().await.unwrap(), 1);
        assert!(attestor.verify(&token).is_ok());
        assert_eq!(
            *server.authorizations.lock().unwrap(),
            ["Bearer reader-secret"]
        );

        // A failed or empty fetch keeps the keys fetched before.
        for (status, body) in [
            (500, "oops".to_owned()),
            (200, "{ not json".to_owned()),
            (200, r#"{"keys":[]}"#.to_owned()),
        ] {
            server.serve(status, body);
            assert!(attestor.refresh_from_url().await.is_err());
            assert!(attestor.verify(&token).is_ok());
        }
    }

    #[tokio::test]
    async fn an_unknown_key_id_prompts_a_fetch_that_finds_a_rotated_key() {
        let cluster = Cluster::new();
        let server = JwksServer::start(cluster.dir.path()).await;
        server.serve(200, jwks(&[&cluster.ec]));
        let mut attestor = url_attestor(&server, None);
        attestor
            .keys
            .set_min_refetch_interval(Duration::from_millis(300));
        let attestor = Arc::new(attestor);
        attestor.refresh_from_url().await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let refresher = tokio::spawn({
            let attestor = attestor.clone();
            async move {
                attestor
                    .keep_fresh(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        let rotated = rcgen::KeyPair::generate().unwrap();
        server.serve(200, jwks(&[&rotated]));
        let token = es256(&rotated, &claims());
        assert!(attestor.verify(&token).is_err(), "not fetched yet");
        // The unknown kid woke the refresher, which fetches again once the
        // minimum interval since its last fetch has passed.
        let mut accepted = false;
        for _ in 0..100 {
            if attestor.verify(&token).is_ok() {
                accepted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(accepted, "the rotated key was fetched");
        let _ = stop.send(());
        refresher.await.unwrap();
    }

    #[test]
    fn a_jwks_url_must_be_https_with_readable_roots() {
        for (url, ca_file, says) in [
            ("http://issuer/jwks", None, "only https"),
            ("not a url", None, "not a URL"),
            (
                "https://issuer/jwks",
                Some("/nonexistent/ca.pem"),
                "cannot read",
            ),
        ] {
            let error = JwksUrl::new(url, ca_file.map(std::path::Path::new), None).unwrap_err();
            assert!(error.to_string().contains(says), "{url}: {error}");
        }
        assert!(JwksUrl::new("https://oidc.example/keys", None, None).is_ok());
    }
}
