//! What attestation adds to an issuance: matching proven selectors against
//! many registration entries, and verifying a Kubernetes service-account
//! token (ES256 and RS256).

mod common;
#[path = "../tests/common/k8s_issuer.rs"]
mod k8s_issuer;

use std::time::Duration;

use certd::attest::{KubernetesAttestor, KubernetesSettings};
use certd::registry::{EntryBounds, EntrySpec, Registry};
use certd::selector::Selector;
use criterion::{Criterion, criterion_group, criterion_main};

fn match_among_entries(c: &mut Criterion) {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let registry = runtime
        .block_on(Registry::load(certd::store::open(dir.path()).unwrap()))
        .unwrap();
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
        .map(|s| certd::attest::parse_selector(s).unwrap())
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
    std::fs::write(dir.path().join("jwks.json"), k8s_issuer::jwks(&[&ec])).unwrap();
    std::fs::write(dir.path().join("sa.pub"), k8s_issuer::RSA_PUBLIC).unwrap();
    let attestor = KubernetesAttestor::load(KubernetesSettings {
        issuer: k8s_issuer::ISSUER.into(),
        audience: "certd".into(),
        jwks_file: Some(dir.path().join("jwks.json")),
        public_key_files: vec![dir.path().join("sa.pub")],
        clock_skew: Duration::from_secs(30),
        jwks_url: None,
    })
    .unwrap();
    let claims = k8s_issuer::claims();
    let es256 = k8s_issuer::es256(&ec, &claims);
    let rs256 = k8s_issuer::rs256(&claims);
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
