//! The store's write path: recording an issuance without waiting for
//! durability, with a flush per record, and with many writers sharing
//! flushes (group commit).

mod common;

use certd::identity::Serial;
use certd::store::{Attestation, IssuanceRecord, Store};
use criterion::{Criterion, criterion_group, criterion_main};

fn record() -> IssuanceRecord {
    IssuanceRecord {
        serial: Serial::generate(),
        service: "billing".parse().unwrap(),
        dns_names: vec!["billing.certd.internal".into()],
        uris: vec!["spiffe://certd.internal/svc/billing".into()],
        not_before: 1_700_000_000,
        not_after: 1_700_086_400,
        issued_at: 1_700_000_060,
        sha256_fingerprint: [7; 32],
        // A P-256 workload certificate is about 650 bytes.
        der: vec![0x30; 650],
        attestation: Attestation::Renewal,
        renewed_from: None,
        revocation: None,
    }
}

fn store_insert(c: &mut Criterion) {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("store_record_issuance");
    group.bench_function("no_flush", |b| {
        b.iter(|| store.write_issuance(&record(), None).unwrap())
    });
    group.bench_function("flush_each", |b| {
        b.iter(|| {
            runtime
                .block_on(store.record_issuance(&record(), None))
                .unwrap()
        })
    });
    group.bench_function("group_commit_64_writers", |b| {
        b.iter_custom(|iterations| {
            let started = std::time::Instant::now();
            runtime.block_on(async {
                let per_writer = iterations.div_ceil(64);
                let mut writers = Vec::new();
                for _ in 0..64 {
                    let store = store.clone();
                    writers.push(tokio::spawn(async move {
                        for _ in 0..per_writer {
                            store.record_issuance(&record(), None).await.unwrap();
                        }
                    }));
                }
                for writer in writers {
                    writer.await.unwrap();
                }
            });
            started
                .elapsed()
                .mul_f64(iterations as f64 / (iterations.div_ceil(64) * 64) as f64)
        })
    });
    group.finish();
}

/// A store of many records (1M by default; `CERTD_BENCH_RECORDS` to change,
/// `CERTD_BENCH_DATA_DIR` to keep it, with a CA, for `certd serve`): how
/// long it takes to open, and to list one service's certificates.
fn store_at_scale(c: &mut Criterion) {
    let records: usize = std::env::var("CERTD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let services = 1_000;
    let kept = std::env::var_os("CERTD_BENCH_DATA_DIR").map(std::path::PathBuf::from);
    let temporary = tempfile::tempdir().unwrap();
    let data_dir = kept.unwrap_or_else(|| temporary.path().to_owned());
    let db = data_dir.join("db");
    if !db.exists() {
        common::new_ca(&data_dir);
        let runtime = common::runtime();
        let store = Store::open(&db).unwrap();
        let started = std::time::Instant::now();
        for index in 0..records {
            let mut record = record();
            record.service = format!("svc-{}", index % services).parse().unwrap();
            store.write_issuance(&record, None).unwrap();
        }
        runtime.block_on(store.durable()).unwrap();
        eprintln!("wrote {records} records in {:.1?}", started.elapsed());
    }
    let mut group = c.benchmark_group(format!("store_{records}_records"));
    group.sample_size(10);
    group.bench_function("open", |b| b.iter(|| drop(Store::open(&db).unwrap())));
    let store = Store::open(&db).unwrap();
    let service = "svc-7".parse().unwrap();
    group.bench_function("list_one_service", |b| {
        b.iter(|| {
            let listed = store.certificates(Some(&service)).unwrap();
            assert_eq!(listed.len(), records / services);
        })
    });
    group.finish();
}

criterion_group!(benches, store_insert, store_at_scale);
criterion_main!(benches);
