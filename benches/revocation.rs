//! Revocation: signing CRLs of 10k, 100k and 1M entries, and answering
//! OCSP from the cache and from scratch.

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

criterion_group!(benches, crl_generation, ocsp_answers);
criterion_main!(benches);
