//! The store's write path through the `Storage` trait: recording an
//! issuance with a flush per record, and with many writers sharing flushes
//! (group commit).

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certd::identity::{Serial, WorkloadIdentity};

// The daemon's allocator (src/main.rs), so the RSS printed here is what
// the daemon's store would hold, not glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use certd::store::{
    Attestation, CertificateQuery, CertificateState, IssuanceRecord, SharedStorage,
};
use criterion::{Criterion, criterion_group};

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
    // Its store takes minutes to fill: not for the retention run.
    if std::env::args().any(|arg| arg.contains("store_retention")) {
        return;
    }
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

/// Steady load under retention (issue 29), on sled: `CERTD_BENCH_ISSUANCES`
/// issuances (1M by default) by 64 writers, one simulated second apart,
/// each certificate living `lifetime` and its record kept `retention` past
/// expiry, while a purge task runs passes of 1,000-record steps on the
/// simulated clock, as the daemon does. Every 100,000 issuances it prints
/// the records held, the database's bytes on disk and per record held, the
/// process's RSS, and the p99 and longest `record_issuance` of those
/// 100,000 (each waits for its durable flush, shared by the writers); at
/// the end, where the bytes go (`store::sled::space`). Its last column is
/// the part of the RSS in transparent huge pages: none, as in the daemon,
/// unless `CERTD_BENCH_THP=on` leaves them on.
///
/// Each record is what the daemon records: a P-256 SVID signed by a fresh
/// CA for one of 1,000 services, under a time-ordered serial
/// (`Serial::generate_time_ordered`, as `Authority` makes them).
/// `CERTD_BENCH_RECORD=synthetic` records the earlier runs' stand-in
/// instead (650 bytes of 0x30 for the DER, a constant fingerprint, random
/// serials), to compare with them. `CERTD_BENCH_PURGE=off` runs without
/// the purge; `CERTD_BENCH_RATE=N` holds the writers to N issuances a
/// second of the real clock (sled cleans its log in the background within
/// a time budget, so how fast records come changes what its files hold).
/// Not a criterion measurement, and run only when asked for:
/// `cargo bench --bench store -- store_retention`.
fn store_retention(_: &mut Criterion) {
    if !std::env::args().any(|arg| arg.contains("store_retention")) {
        return;
    }
    use std::sync::atomic::{AtomicI64, Ordering};
    let issuances: i64 = std::env::var("CERTD_BENCH_ISSUANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // Lifetime + retention = 200,000 simulated seconds: what 1M
    // issuances a day hold with a 1-day lifetime and 7-day retention,
    // scaled by 1/40 so the steady state is reached within the run.
    let (lifetime, retention) = (50_000i64, 150_000i64);
    let synthetic = std::env::var("CERTD_BENCH_RECORD").as_deref() == Ok("synthetic");
    // Issuances per second of the real clock, all writers together; none:
    // as fast as they go.
    let rate: Option<f64> = std::env::var("CERTD_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::new(&dir.path().join("ca")));
    let db = dir.path().join("db");
    let runtime = common::runtime();
    let store = certd::store::open(&db).unwrap();
    let clock = Arc::new(AtomicI64::new(0));
    let purged = Arc::new(AtomicI64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(
        std::env::var("CERTD_BENCH_PURGE").as_deref() == Ok("off"),
    ));
    eprintln!(
        "issued,held,disk_bytes,bytes_per_held_record,rss_bytes,elapsed_s,p99_ms,max_ms,anon_huge_bytes"
    );
    let started = std::time::Instant::now();
    let run_started = tokio::time::Instant::now();
    runtime.block_on(async {
        let purge = {
            let (store, clock, purged, done) =
                (store.clone(), clock.clone(), purged.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let mut step = certd::store::CertificatePurge {
                        expired_before: clock.load(Ordering::Relaxed) - retention,
                        limit: 1000,
                        after: None,
                        keep: Vec::new(),
                    };
                    loop {
                        let report = store.purge_expired_certificates(&step).await.unwrap();
                        purged.fetch_add(report.purged as i64, Ordering::Relaxed);
                        let Some(next) = report.next else { break };
                        step.after = Some(next);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            })
        };
        let sample = 100_000;
        for chunk in 0..(issuances + sample - 1) / sample {
            let first = chunk * sample;
            let last = (first + sample).min(issuances);
            let mut writers = Vec::new();
            for writer in 0..64 {
                let (store, clock, signer) = (store.clone(), clock.clone(), signer.clone());
                writers.push(tokio::spawn(async move {
                    let mut took = Vec::new();
                    for second in (first + writer..last).step_by(64) {
                        let service = (second % 1000) as usize;
                        let mut issued = if synthetic {
                            let mut issued = record();
                            issued.service = format!("svc-{service}").parse().unwrap();
                            issued
                        } else {
                            signer.record(service, second)
                        };
                        issued.issued_at = second;
                        issued.not_before = second;
                        issued.not_after = second + lifetime;
                        if let Some(rate) = rate {
                            let due = Duration::from_secs_f64(second as f64 / rate);
                            tokio::time::sleep_until(run_started + due).await;
                        }
                        let started = std::time::Instant::now();
                        store.record_issuance(&issued, None).await.unwrap();
                        took.push(started.elapsed());
                        clock.fetch_max(second, Ordering::Relaxed);
                    }
                    took
                }));
            }
            let mut took = Vec::new();
            for writer in writers {
                took.extend(writer.await.unwrap());
            }
            took.sort_unstable();
            let p99 = took[took.len() * 99 / 100].as_secs_f64() * 1000.0;
            let longest = took.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            let held = last - purged.load(Ordering::Relaxed);
            let disk = disk_bytes(&db);
            eprintln!(
                "{last},{held},{disk},{},{},{:.0},{p99:.1},{longest:.1},{}",
                disk / held.max(1) as u64,
                resident_bytes("Rss:"),
                started.elapsed().as_secs_f64(),
                resident_bytes("AnonHugePages:"),
            );
        }
        done.store(true, Ordering::Relaxed);
        purge.await.unwrap();
    });
    drop(store);
    print_space(&db);
}

/// Signs the records of `store_retention` as the daemon does.
struct Signer {
    ca: Arc<certd::ca::CertificateAuthority>,
    /// One key per service, as workloads have their own: records packed
    /// against a dictionary (`store::sled::packing`) must not share the key
    /// with it more often than real ones do.
    csrs: Vec<certd::ca::csr::ValidatedCsr>,
    identities: Vec<WorkloadIdentity>,
}

impl Signer {
    fn new(dir: &std::path::Path) -> Self {
        let trust_domain = "certd.internal".parse().unwrap();
        Signer {
            ca: common::new_ca(dir),
            csrs: (0..1000)
                .map(|_| certd::ca::csr::ValidatedCsr::from_der(&common::csr_der()).unwrap())
                .collect(),
            identities: (0..1000)
                .map(|n| {
                    WorkloadIdentity::for_service(
                        &trust_domain,
                        format!("svc-{n}").parse().unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// The record of a certificate for service `service` issued at the
    /// simulated `second` (the DER carries the real clock's validity: the
    /// CA signs nothing dated before itself).
    fn record(&self, service: usize, second: i64) -> IssuanceRecord {
        let identity = &self.identities[service];
        let signed = self
            .ca
            .sign_workload(
                &self.csrs[service],
                identity,
                certd::ca::WorkloadProfile::Spiffe,
                Serial::generate_time_ordered(second),
                Duration::from_secs(86_400),
                SystemTime::now(),
            )
            .unwrap();
        IssuanceRecord {
            serial: signed.serial,
            service: identity.service.clone(),
            dns_names: signed.dns_names,
            uris: signed.uris,
            not_before: signed.not_before,
            not_after: signed.not_after,
            issued_at: second,
            sha256_fingerprint: signed.sha256_fingerprint,
            der: signed.der.to_vec(),
            attestation: Attestation::Renewal,
            renewed_from: None,
            revocation: None,
        }
    }
}

/// Where the bytes of the database in `db` go: per tree, its entries and
/// their keys' and values' bytes, against the files' size.
fn print_space(db: &std::path::Path) {
    let space = certd::store::sled::space(db).unwrap();
    let disk = disk_bytes(db);
    eprintln!("tree,entries,key_bytes,value_bytes,bytes_per_entry");
    for tree in space.trees.iter().filter(|t| t.entries > 0) {
        eprintln!(
            "{},{},{},{},{}",
            tree.name,
            tree.entries,
            tree.key_bytes,
            tree.value_bytes,
            (tree.key_bytes + tree.value_bytes) / tree.entries
        );
    }
    eprintln!(
        "logical_bytes,{},size_on_disk,{},allocated_on_disk,{disk}",
        space.logical_bytes(),
        space.size_on_disk
    );
}

/// Bytes the files under `dir` take on disk (allocated blocks).
fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let metadata = entry.metadata().unwrap();
        total += if metadata.is_dir() {
            disk_bytes(&entry.path())
        } else {
            metadata.blocks() * 512
        };
    }
    total
}

/// One line of this process's `/proc/self/smaps_rollup`, in bytes: `Rss:`
/// (the resident set) or `AnonHugePages:` (the part of it in transparent
/// huge pages, which the kernel makes resident 2 MiB at a time however
/// little of them the allocator uses).
fn resident_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

criterion_group!(benches, store_insert, store_at_scale, store_retention);

/// `criterion_main!`, after turning transparent huge pages off as the
/// daemon does first thing (src/main.rs): pages the kernel has already made
/// huge stay huge, so it must come before the first thread or store.
/// `CERTD_BENCH_THP=on` leaves them on, as the daemon ran before.
fn main() {
    if std::env::var("CERTD_BENCH_THP").as_deref() != Ok("on") {
        rustix::thread::disable_transparent_huge_pages(true).unwrap();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
