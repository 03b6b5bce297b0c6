//! Storage faults against the real daemon: a disk that stops taking
//! writes (a file-size limit set on the running daemon, which the kernel
//! enforces exactly as it does a full disk: a write that would grow a file
//! fails), then recovery without a restart; and crashes (SIGKILL) under
//! concurrent load, again and again.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certd::ErrorKind;
use certd::api::client::ClientError;
use common::{Daemon, csr_for, http, stderr};

/// Limits how large the daemon may grow any file (`None`: no limit), as
/// `prlimit --fsize` does.
fn limit_file_size(daemon: &Daemon, bytes: Option<u64>) {
    let limit = bytes.unwrap_or(rlimit::INFINITY);
    rlimit::prlimit(
        i32::try_from(daemon.pid()).unwrap(),
        rlimit::Resource::FSIZE,
        Some((limit, rlimit::INFINITY)),
        None,
    )
    .expect("prlimit");
}

async fn issue(daemon: &Daemon, token: &str) -> Result<String, ClientError> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut client = daemon.try_client(None).await?;
    client
        .issue(csr_for(&key, None, vec![]), token)
        .await
        .map(|issued| issued.serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_is_unavailable_then_recovers_without_restart_and_keeps_tokens() {
    let daemon = Arc::new(Daemon::start());
    daemon.entry("billing", &["token:billing"], &[]);
    let tokens = daemon.tokens("billing", 300);

    // The disk fills: no file may grow more than 64 KiB past the database.
    let database = daemon.data_dir.join("db").join("db");
    let size = std::fs::metadata(&database).unwrap().len();
    limit_file_size(&daemon, Some(size + 64 * 1024));

    // Readiness is sampled throughout.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let saw_not_ready = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (daemon, stop, saw) = (daemon.clone(), stop_sampling.clone(), saw_not_ready.clone());
        move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ready = http("GET", &format!("{}/readyz", daemon.http), &[], b"");
                if ready.status == 503 {
                    saw.store(true, Ordering::Relaxed);
                }
                seen.push((
                    ready.status,
                    String::from_utf8_lossy(&ready.body).into_owned(),
                ));
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        }
    });

    // Sixteen workloads bootstrap with their tokens while the disk is full.
    let queue = Arc::new(Mutex::new(tokens));
    let issued = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (daemon, queue, issued, failed) = (
            daemon.clone(),
            queue.clone(),
            issued.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(token) = queue.lock().unwrap().pop() else {
                    return;
                };
                match issue(&daemon, &token).await {
                    Ok(serial) => issued.lock().unwrap().push(serial),
                    Err(error) => failed.lock().unwrap().push((token, error)),
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    // The disk is still full: readiness must say so, if it has not yet.
    let started = Instant::now();
    while !saw_not_ready.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_sampling.store(true, Ordering::Relaxed);
    let readiness = sampler.join().unwrap();

    let failed = std::mem::take(&mut *failed.lock().unwrap());
    assert!(!failed.is_empty(), "the full disk refused nothing");
    for (_, error) in &failed {
        match error {
            ClientError::Refused { kind, .. } => assert_eq!(
                *kind,
                ErrorKind::Unavailable,
                "a storage failure must read as UNAVAILABLE: {error:?}"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(
        readiness
            .iter()
            .any(|(status, body)| *status == 503 && body.contains("file too large")),
        "readiness never reported the fault: {:?}",
        readiness
            .iter()
            .map(|(status, _)| status)
            .collect::<HashSet<_>>()
    );
    // The gRPC health service says so too.
    let started = Instant::now();
    let mut health = daemon.client(None).await;
    while health.health("").await.ok().as_deref() != Some("NOT_SERVING") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gRPC health service never said NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Operators' reads and writes meanwhile are answered or refused as
    // unavailable (exit 3), never as an internal error.
    for command in [
        vec!["list"],
        vec!["token", "create", "--service", "billing"],
    ] {
        let output = daemon.cli(&command);
        assert!(
            matches!(output.status.code(), Some(0 | 3)),
            "{command:?} during the fault: {:?} {}",
            output.status,
            stderr(&output)
        );
    }

    // Space is freed. certd recovers by itself, without a restart.
    limit_file_size(&daemon, None);
    let started = Instant::now();
    loop {
        let ready = http("GET", &format!("{}/readyz", daemon.http), &[], b"");
        if ready.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready 30 s after space was freed: {}",
            String::from_utf8_lossy(&ready.body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every token whose request was refused "retry later" still works.
    let mut issued = std::mem::take(&mut *issued.lock().unwrap());
    for (token, _) in &failed {
        let serial = issue(&daemon, token)
            .await
            .unwrap_or_else(|error| panic!("a retried token was refused: {error:?}"));
        issued.push(serial);
    }
    // And every certificate a workload received is in the store.
    let recorded = daemon.recorded_serials();
    for serial in &issued {
        assert!(
            recorded.contains(serial),
            "{serial} was returned but not recorded"
        );
    }
    let log = daemon.log_text();
    assert!(log.contains("storage fault"), "{log}");
    assert!(log.contains("database reopened"), "{log}");
}

/// Kills certd with SIGKILL under concurrent load, eight times, restarting
/// it each time: every certificate a workload received is in the store, and
/// no serial appears twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_kills_under_load_lose_no_returned_certificate() {
    let mut daemon = Daemon::start();
    daemon.entry("billing", &["token:billing"], &[]);
    let mut returned = Vec::new();
    for round in 0..8u64 {
        let daemon_now = Arc::new(daemon);
        let queue = Arc::new(Mutex::new(daemon_now.tokens("billing", 400)));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for _ in 0..16 {
            let (daemon, queue, issued) = (daemon_now.clone(), queue.clone(), issued.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let Some(token) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    match issue(&daemon, &token).await {
                        Ok(serial) => issued.lock().unwrap().push(serial),
                        // Killed: this worker's connection is gone.
                        Err(ClientError::Unreachable { .. }) => return,
                        Err(_) => {}
                    }
                }
            }));
        }
        // Kill at a different moment of the load each round, once it runs.
        let started = Instant::now();
        while issued.lock().unwrap().len() < 5 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: no load"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20 + 70 * round)).await;
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &daemon_now.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        for worker in workers {
            worker.await.unwrap();
        }
        let mut killed = Arc::into_inner(daemon_now).expect("the workers are done");
        killed.kill();
        returned.extend(std::mem::take(&mut *issued.lock().unwrap()));
        let tmp = std::mem::replace(&mut killed.tmp, tempfile::tempdir().unwrap());
        daemon = Daemon::start_in(tmp, killed.data_dir.clone(), &[]);
    }
    let recorded = daemon.listed_serials();
    let unique: HashSet<&str> = recorded.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), recorded.len(), "a serial is recorded twice");
    for serial in &returned {
        assert!(
            unique.contains(serial.as_str()),
            "{serial} was returned, then lost in a crash"
        );
    }
    let returned_unique: HashSet<&String> = returned.iter().collect();
    assert_eq!(
        returned_unique.len(),
        returned.len(),
        "a serial was returned twice"
    );
}
