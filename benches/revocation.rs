//! Revocation: signing CRLs of 10k, 100k and 1M entries; building and
//! publishing one from a store of 10k and 100k revocations, as the
//! background publisher does (read the entries, take a number, sign both
//! encodings); answering OCSP from the cache and from scratch.

mod common;

use std::time::{Duration, SystemTime};

use certd::ca::csr::ValidatedCsr;
use certd::clock::unix_seconds;
use certd::identity::{Serial, WorkloadIdentity};
use certd::revocation::{RevocationSettings, Revocations};
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

criterion_group!(benches, crl_generation, crl_build_from_store, ocsp_answers);
criterion_main!(benches);
