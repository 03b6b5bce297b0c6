//! Revocation: signing CRLs of 10k, 100k and 1M entries; building and
//! publishing one from a store of 10k and 100k revocations, as the
//! background publisher does (read the entries, take a number, sign both
//! encodings); the same with the CRL split into 16 and 64 shards, at
//! `CERTD_BENCH_SHARD_REVOCATIONS` revocations (default 100,000;
//! docs/PERFORMANCE.md reports 1,000,000), printing the sizes; answering
//! OCSP from the cache and from scratch.

mod common;

use std::time::{Duration, SystemTime};

use certd::ca::RevocationUrls;
use certd::ca::crl_shards::ShardCount;
use certd::ca::csr::ValidatedCsr;
use certd::clock::unix_seconds;
use certd::identity::{Serial, WorkloadIdentity};
use certd::revocation::{PublishedCrl, RevocationSettings, Revocations};
use certd::store::{Attestation, IssuanceRecord, Revocation, RevokedEntry};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn crl_generation(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::new_ca(dir.path());
    let now = unix_seconds(SystemTime::now());
    let mut group = c.benchmark_group("crl_sign");
    group.sample_size(10);
    for entries in [10_000usize, 100_000, 1_000_000] {
        let revoked: Vec<RevokedEntry> = (0..entries)
            .map(|_| RevokedEntry {
                serial: Serial::generate(),
                revocation: Revocation {
                    revoked_at: now,
                    reason_code: 1,
                },
                not_after: now + 86_400,
            })
            .collect();
        group.bench_with_input(
            BenchmarkId::from_parameter(entries),
            &revoked,
            |b, revoked| {
                b.iter(|| {
                    certd::ca::crl::build(&ca.current(), revoked, 7, now, now + 3600).unwrap()
                })
            },
        );
    }
    group.finish();
}

/// A sled store holding `count` revoked, unexpired certificates, written
/// 256 at a time so that group commit keeps the set-up short.
fn store_with_revocations(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    count: usize,
    now: i64,
) -> certd::store::SharedStorage {
    let store = certd::store::open(dir).unwrap();
    runtime.block_on(async {
        let mut writers = Vec::new();
        for _ in 0..256 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for _ in 0..count / 256 {
                    let serial = Serial::generate();
                    let record = IssuanceRecord {
                        serial: serial.clone(),
                        service: "billing".parse().unwrap(),
                        dns_names: vec!["billing.certd.internal".into()],
                        uris: vec!["spiffe://certd.internal/svc/billing".into()],
                        not_before: now,
                        not_after: now + 86_400,
                        issued_at: now,
                        sha256_fingerprint: [7; 32],
                        der: vec![0; 600],
                        attestation: Attestation::Renewal,
                        renewed_from: None,
                        revocation: None,
                    };
                    store.record_issuance(&record, None).await.unwrap();
                    let revocation = Revocation {
                        revoked_at: now,
                        reason_code: 1,
                    };
                    store.revoke(&serial, revocation).await.unwrap().unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });
    store
}

fn crl_build_from_store(c: &mut Criterion) {
    let runtime = common::runtime();
    let now = unix_seconds(SystemTime::now());
    let mut group = c.benchmark_group("crl_build_from_store");
    group.sample_size(10);
    for entries in [10_000usize, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let ca = common::new_ca(&dir.path().join("ca"));
        let store = store_with_revocations(&runtime, &dir.path().join("db"), entries, now);
        let revocations = Revocations::new(ca, store, RevocationSettings::default());
        group.bench_function(BenchmarkId::from_parameter(entries), |b| {
            b.iter(|| {
                // Something new to list: otherwise the published CRL is
                // served as it is.
                revocations.forget_cached_answers();
                let crl = runtime.block_on(revocations.refresh_crl()).unwrap();
                assert_eq!(crl.entries, entries / 256 * 256);
            })
        });
    }
    group.finish();
}

/// The publisher's build (the whole CRL and every shard, as `refresh_crl`
/// makes them) from one store of revocations, whole only and split into 16
/// and 64 shards, and one shard of 64 signed alone; prints each layout's
/// sizes. The store is filled once (`store_with_revocations`, straight into
/// sled), with `CERTD_BENCH_SHARD_REVOCATIONS` entries.
fn crl_shards(c: &mut Criterion) {
    let entries: usize = std::env::var("CERTD_BENCH_SHARD_REVOCATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let runtime = common::runtime();
    let now = unix_seconds(SystemTime::now());
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let store = store_with_revocations(&runtime, &dir.path().join("db"), entries, now);
    println!(
        "crl_shards: {} revocations stored in {:.1} s",
        entries / 256 * 256,
        started.elapsed().as_secs_f64()
    );
    let base = "http://certd.example:8080";
    let mut group = c.benchmark_group(format!("crl_shards_{entries}"));
    group.sample_size(10);
    let mut sixty_four_ca = None;
    for shards in [1u64, 16, 64] {
        let count = ShardCount::new(shards).unwrap();
        let ca = common::new_ca_serving(
            &dir.path().join(format!("ca-{shards}")),
            RevocationUrls::new(base).with_crl_shards(count),
        );
        let settings = RevocationSettings {
            crl_shards: count,
            ..RevocationSettings::default()
        };
        let revocations = Revocations::new(ca.clone(), store.clone(), settings);
        let started = std::time::Instant::now();
        let crl = runtime.block_on(revocations.refresh_crl()).unwrap();
        print_sizes(shards, &crl, started.elapsed());
        group.bench_function(BenchmarkId::new("build", shards), |b| {
            b.iter(|| {
                // Something new to list: otherwise the published CRL is
                // served as it is.
                revocations.forget_cached_answers();
                runtime.block_on(revocations.refresh_crl()).unwrap()
            })
        });
        if shards == 64 {
            sixty_four_ca = Some(ca);
        }
    }
    // One shard on its own: what a relying party's shard costs to sign.
    let ca = sixty_four_ca.unwrap();
    let revoked = runtime.block_on(store.revoked_unexpired(now)).unwrap();
    let count = ShardCount::new(64).unwrap();
    let first = count
        .partition(&revoked, |entry| &entry.serial)
        .swap_remove(0);
    let url = format!("{base}/crl/{}/shards/64/0", ca.current().key_id_hex());
    group.bench_function("sign_one_shard_of_64", |b| {
        b.iter(|| {
            certd::ca::crl::build_shard(
                &ca.current(),
                first.iter().copied(),
                7,
                now,
                now + 3600,
                &url,
            )
            .unwrap()
        })
    });
    group.finish();
}

/// One line per layout: the whole CRL's size and the shards' (DER).
fn print_sizes(shards: u64, crl: &PublishedCrl, first_build: Duration) {
    let sizes: Vec<usize> = crl
        .shards
        .iter()
        .flat_map(|set| set.der.iter().map(Vec::len))
        .collect();
    let shard_text = match (sizes.iter().min(), sizes.iter().max()) {
        (Some(min), Some(max)) => format!(
            "; {} shards: min {min} B, mean {} B, max {max} B, total {} B",
            sizes.len(),
            sizes.iter().sum::<usize>() / sizes.len(),
            sizes.iter().sum::<usize>()
        ),
        _ => String::new(),
    };
    println!(
        "crl_shards: {} entries, crl_shards = {shards}: whole CRL {} B (PEM {} B){shard_text}; first build {:.2} s",
        crl.entries,
        crl.der.len(),
        crl.pem.len(),
        first_build.as_secs_f64()
    );
}

fn ocsp_answers(c: &mut Criterion) {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let ca = common::new_ca(dir.path());
    let store = certd::store::open(&dir.path().join("db")).unwrap();
    let identity = WorkloadIdentity::for_service(
        &"certd.internal".parse().unwrap(),
        "billing".parse().unwrap(),
    );
    let csr = ValidatedCsr::from_der(&common::csr_der()).unwrap();
    let signed = ca
        .sign_workload(
            &csr,
            &identity,
            certd::ca::WorkloadProfile::Spiffe,
            Serial::generate(),
            Duration::from_secs(86_400),
            SystemTime::now(),
        )
        .unwrap();
    let record = IssuanceRecord {
        serial: signed.serial.clone(),
        service: identity.service.clone(),
        dns_names: signed.dns_names.clone(),
        uris: signed.uris.clone(),
        not_before: signed.not_before,
        not_after: signed.not_after,
        issued_at: signed.not_before,
        sha256_fingerprint: signed.sha256_fingerprint,
        der: signed.der.to_vec(),
        attestation: Attestation::Renewal,
        renewed_from: None,
        revocation: None,
    };
    runtime
        .block_on(store.record_issuance(&record, None))
        .unwrap();
    let chain = signed.chain_pem();
    let revocations = Revocations::new(ca.clone(), store, RevocationSettings::default());
    let (cacheable, _) = certd::revocation::ocsp::request_for(&chain, None).unwrap();
    let (with_nonce, _) =
        certd::revocation::ocsp::request_for(&chain, Some(b"0123456789abcdef")).unwrap();

    let mut group = c.benchmark_group("ocsp_answer");
    group.bench_function("cached", |b| {
        b.iter(|| runtime.block_on(revocations.ocsp(&cacheable)))
    });
    group.bench_function("uncached_signed", |b| {
        b.iter(|| runtime.block_on(revocations.ocsp(&with_nonce)))
    });
    group.finish();
}

criterion_group!(
    benches,
    crl_generation,
    crl_build_from_store,
    crl_shards,
    ocsp_answers
);
criterion_main!(benches);
