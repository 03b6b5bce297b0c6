//! The CPU cost of one issuance, piece by piece: CSR parse + signature
//! check, and signing a certificate.

mod common;

use std::time::{Duration, SystemTime};

use certd::ca::csr::ValidatedCsr;
use certd::identity::{Serial, WorkloadIdentity};
use criterion::{Criterion, criterion_group, criterion_main};

fn csr_parse_and_verify(c: &mut Criterion) {
    let der = common::csr_der();
    c.bench_function("csr_parse_and_verify_p256", |b| {
        b.iter(|| ValidatedCsr::from_der(std::hint::black_box(&der)).unwrap())
    });
}

fn sign_certificate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::new_ca(dir.path());
    let csr = ValidatedCsr::from_der(&common::csr_der()).unwrap();
    let identity = WorkloadIdentity {
        trust_domain: "certd.internal".parse().unwrap(),
        service: "billing".parse().unwrap(),
    };
    c.bench_function("sign_workload_certificate_p256", |b| {
        b.iter(|| {
            ca.sign_workload(
                &csr,
                &identity,
                Serial::generate(),
                Duration::from_secs(86_400),
                SystemTime::now(),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, csr_parse_and_verify, sign_certificate);
criterion_main!(benches);
