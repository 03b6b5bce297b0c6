//! The store's write path through the `Storage` trait: recording an
//! issuance with a flush per record, and with many writers sharing flushes
//! (group commit).

mod common;

use certd::identity::Serial;
use std::sync::Arc;

use certd::store::{
    Attestation, CertificateQuery, CertificateState, IssuanceRecord, SharedStorage,
};
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
    let store = certd::store::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("store_record_issuance");
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
/// long it takes to open, to list one service's certificates, to list the
/// newest (from the time indexes) and to read every record.
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
        let store = certd::store::open(&db).unwrap();
        let started = std::time::Instant::now();
        runtime.block_on(fill(&store, records, services));
        eprintln!("wrote {records} records in {:.1?}", started.elapsed());
    }
    let mut group = c.benchmark_group(format!("store_{records}_records"));
    group.sample_size(10);
    group.bench_function("open", |b| {
        b.iter(|| drop(certd::store::open(&db).unwrap()))
    });
    let store = certd::store::open(&db).unwrap();
    let service = "svc-7".parse().unwrap();
    let runtime = common::runtime();
    group.bench_function("list_one_service", |b| {
        b.iter(|| {
            let listed = runtime
                .block_on(store.certificates(Some(&service)))
                .unwrap();
            assert_eq!(listed.len(), records / services);
        })
    });
    // `certd list --limit N`: read from the time indexes, O(N) whatever the
    // store holds; beside it, a pass over every record (what a listing
    // cost before the indexes).
    group.bench_function("newest_1", |b| {
        b.iter(|| {
            let listed = runtime
                .block_on(store.newest_certificates(None, 1))
                .unwrap();
            assert_eq!(listed.len(), 1);
        })
    });
    group.bench_function("newest_100_of_one_service", |b| {
        b.iter(|| {
            let listed = runtime
                .block_on(store.newest_certificates(Some(&service), 100))
                .unwrap();
            assert_eq!(listed.len(), 100.min(records / services));
        })
    });
    // `certd list --limit 100 [--page-token T]`: a page after a cursor
    // from the time index; with `--status good`, a bounded walk that the
    // index does not answer (every record here is good, so it stops at
    // the page).
    let first = runtime
        .block_on(store.certificate_page(&CertificateQuery::newest(100, 0)))
        .unwrap();
    group.bench_function("page_100_after_a_cursor", |b| {
        let mut query = CertificateQuery::newest(100, 0);
        query.after = first.next.clone();
        b.iter(|| {
            let page = runtime.block_on(store.certificate_page(&query)).unwrap();
            assert_eq!(page.records.len(), 100.min(records.saturating_sub(100)));
        })
    });
    group.bench_function("page_100_good", |b| {
        let mut query = CertificateQuery::newest(100, 0);
        query.state = Some(CertificateState::Good);
        b.iter(|| {
            let page = runtime.block_on(store.certificate_page(&query)).unwrap();
            assert!(page.records.len() <= 100);
        })
    });
    group.bench_function("every_record", |b| {
        b.iter(|| {
            let listed = runtime.block_on(store.certificates(None)).unwrap();
            assert_eq!(listed.len(), records);
        })
    });
    group.finish();
}

/// Writes `records` records spread over `services` services, 64 writers
/// sharing flushes.
async fn fill(store: &SharedStorage, records: usize, services: usize) {
    let writers = 64;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            for index in (writer..records).step_by(writers) {
                let mut record = record();
                record.service = format!("svc-{}", index % services).parse().unwrap();
                store.record_issuance(&record, None).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

criterion_group!(benches, store_insert, store_at_scale);
criterion_main!(benches);
