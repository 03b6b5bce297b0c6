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

/// The two halves of the CSR check, to see which bounds it: DER parsing, and
/// the ECDSA signature verification alone (ring, as x509-parser calls it).
fn csr_parse_and_verify_parts(c: &mut Criterion) {
    use x509_parser::prelude::{FromDer, X509CertificationRequest};
    let der = common::csr_der();
    c.bench_function("csr_parse_only", |b| {
        b.iter(|| X509CertificationRequest::from_der(std::hint::black_box(&der)).unwrap())
    });
    let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
    let key = csr
        .certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec();
    let message = csr.certification_request_info.raw.to_vec();
    let signature = csr.signature_value.data.to_vec();
    c.bench_function("ecdsa_p256_verify_only", |b| {
        b.iter(|| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &key)
                .verify(&message, &signature)
                .unwrap()
        })
    });
}

fn sign_certificate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::new_ca(dir.path());
    let csr = ValidatedCsr::from_der(&common::csr_der()).unwrap();
    let identity = WorkloadIdentity::for_service(
        &"certd.internal".parse().unwrap(),
        "billing".parse().unwrap(),
    );
    c.bench_function("sign_workload_certificate_p256", |b| {
        b.iter(|| {
            ca.sign_workload(
                &csr,
                &identity,
                certd::ca::WorkloadProfile::Spiffe,
                Serial::generate(),
                Duration::from_secs(86_400),
                SystemTime::now(),
            )
            .unwrap()
        })
    });
}

criterion_group!(
    benches,
    csr_parse_and_verify,
    csr_parse_and_verify_parts,
    sign_certificate
);
criterion_main!(benches);
