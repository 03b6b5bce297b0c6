//! What attestation adds to an issuance: matching proven selectors against
//! many registration entries, and verifying a Kubernetes service-account
//! token (ES256 and RS256).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use certd::attest::{KubernetesAttestor, KubernetesSettings};
use certd::registry::{EntryBounds, EntrySpec, Registry, Selector};
use certd::store::Store;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn match_among_entries(c: &mut Criterion) {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::load(Store::open(dir.path()).unwrap()).unwrap();
    let bounds = EntryBounds {
        trust_domain: "certd.internal".parse().unwrap(),
        max_ttl: Duration::from_secs(86_400),
        reserved_dns_names: vec![],
    };
    let mut group = c.benchmark_group("resolve_entry");
    let mut created = 0;
    for total in [100, 10_000] {
        runtime.block_on(async {
            for i in created..total {
                let spec = EntrySpec {
                    service: format!("svc-{i}"),
                    selectors: vec![format!("k8s:ns:ns-{}", i % 100), format!("k8s:sa:sa-{i}")],
                    ..EntrySpec::default()
                };
                let entry = spec.validate(&bounds).unwrap();
                registry.create(entry, 0, "bench").await.unwrap();
            }
        });
        created = total;
        let proven: Vec<Selector> = [
            "k8s:ns:ns-42",
            "k8s:sa:sa-42",
            "k8s:pod-name:svc-42-7d9f",
            "k8s:pod-uid:0b1c2d3e",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        group.bench_function(format!("{total}_entries"), |b| {
            b.iter(|| registry.resolve(&proven).unwrap())
        });
    }
    group.finish();
    // An operator's change: durable write plus a new snapshot of all entries.
    let mut next = created;
    c.bench_function("create_entry_among_10000", |b| {
        b.iter(|| {
            next += 1;
            let spec = EntrySpec {
                service: format!("svc-{next}"),
                selectors: vec![format!("k8s:sa:sa-{next}")],
                ..EntrySpec::default()
            };
            let entry = spec.validate(&bounds).unwrap();
            runtime
                .block_on(registry.create(entry, 0, "bench"))
                .unwrap()
        })
    });
}

fn verify_kubernetes_tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ec = rcgen::KeyPair::generate().unwrap();
    let raw = ec.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    }]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(
        dir.path().join("sa.pub"),
        include_str!("../tests/fixtures/k8s-issuer-rsa.pub"),
    )
    .unwrap();
    let attestor = KubernetesAttestor::load(KubernetesSettings {
        issuer: ISSUER.into(),
        audience: "certd".into(),
        jwks_file: Some(dir.path().join("jwks.json")),
        public_key_files: vec![dir.path().join("sa.pub")],
        clock_skew: Duration::from_secs(30),
        jwks_url: None,
    })
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISSUER, "aud": ["certd"], "sub": "system:serviceaccount:payments:billing",
        "iat": now, "exp": now + 3600,
        "kubernetes.io": { "namespace": "payments", "serviceaccount": { "name": "billing" } },
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let es256 = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let rs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(include_bytes!("../tests/fixtures/k8s-issuer-rsa.key")).unwrap(),
    )
    .unwrap();
    c.bench_function("verify_k8s_token_es256", |b| {
        b.iter(|| attestor.verify(&es256).unwrap())
    });
    c.bench_function("verify_k8s_token_rs256", |b| {
        b.iter(|| attestor.verify(&rs256).unwrap())
    });
}

criterion_group!(
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = match_among_entries, verify_kubernetes_tokens
);
criterion_main!(benches);
