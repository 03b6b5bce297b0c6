//! Renewal lineage: a certificate renews once, so a copied key stops at the
//! next renewal; a lost renewal answer can be retried; `revoke --lineage`
//! ends a whole chain of renewals. Real daemon, the `certd` CLI as
//! workloads and operators use it.

mod common;

use std::path::Path;

use certd::ErrorKind;
use common::{Daemon, Identity, csr_for, refusal, serial_in, stderr, stdout};
use serde_json::Value;

/// `certd request` into `dir` with a fresh join token for billing.
fn request(daemon: &Daemon, dir: &Path) {
    let output = daemon.request(&daemon.token("billing"), dir);
    assert!(output.status.success(), "{}", stderr(&output));
}

fn renew(daemon: &Daemon, dir: &Path) -> std::process::Output {
    daemon.renew_dir(dir)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn show(daemon: &Daemon, serial: &str) -> Value {
    let output = daemon.cli(&["show", "--json", serial]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn revoked(daemon: &Daemon, serial: &str) -> bool {
    show(daemon, serial)["status"] == "revoked"
}

fn audit(daemon: &Daemon) -> Vec<Value> {
    let output = daemon.cli(&["audit", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn possible_stolen_keys(daemon: &Daemon) -> u64 {
    let metrics = common::http("GET", &format!("{}/metrics", daemon.http), &[], b"");
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|line| line.strip_prefix("certd_possible_stolen_keys_total "))
        .expect("the possible-stolen-keys counter is exported")
        .trim()
        .parse()
        .unwrap()
}

/// The finding: copy a workload's directory, let the workload renew, and
/// the copy renewed too, any number of times. Now the copy is refused with
/// PERMISSION_DENIED naming the successor (exit 4), audited and counted,
/// once the workload has used its successor; and revoking the newest
/// certificate of a lineage stops its older copies.
#[test]
fn a_copied_key_stops_at_the_next_renewal() {
    let daemon = Daemon::start();
    let workload = daemon.tmp.path().join("billing");
    let copy = daemon.tmp.path().join("stolen");
    request(&daemon, &workload);
    copy_dir(&workload, &copy);
    let first = serial_in(&workload);

    assert!(renew(&daemon, &workload).status.success());
    let second = serial_in(&workload);
    assert!(renew(&daemon, &workload).status.success());
    let third = serial_in(&workload);

    let before = possible_stolen_keys(&daemon);
    let refused = renew(&daemon, &copy);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains("permission denied") || message.contains("refused"),
        "{message}"
    );
    assert!(
        message.contains(&format!("already renewed as {second}")),
        "the refusal names the successor: {message}"
    );
    assert_eq!(serial_in(&copy), first, "the copy's files are untouched");
    assert_eq!(possible_stolen_keys(&daemon), before + 1);
    let refusal = audit(&daemon)
        .into_iter()
        .find(|e| e["event"] == "renew" && e["allowed"] == false)
        .expect("the refused renewal is audited");
    assert!(
        refusal["reason"].as_str().unwrap().contains(&second),
        "{refusal}"
    );

    // The workload itself goes on renewing.
    assert!(renew(&daemon, &workload).status.success());
    assert_ne!(serial_in(&workload), third);

    assert_eq!(show(&daemon, &second)["renewed_from"], first.as_str());
    assert_eq!(show(&daemon, &third)["renewed_from"], second.as_str());

    // Revoking the newest certificate cuts the lineage: its predecessor,
    // never presented again, cannot grow a new branch.
    let fresh = daemon.tmp.path().join("fresh");
    let fresh_copy = daemon.tmp.path().join("fresh-copy");
    request(&daemon, &fresh);
    copy_dir(&fresh, &fresh_copy);
    assert!(renew(&daemon, &fresh).status.success());
    let renewed = serial_in(&fresh);
    let output = daemon.cli(&["revoke", &renewed, "--reason", "key-compromise"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let refused = renew(&daemon, &fresh_copy);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(&format!("renewed as {renewed}, which is revoked")),
        "{}",
        stderr(&refused)
    );
}

/// A renewal whose answer never arrived: the workload still holds the old
/// certificate and renews again. That works, the unused certificate is
/// revoked as superseded (so one live successor remains), and it can
/// renew no more.
#[tokio::test]
async fn a_lost_renewal_answer_can_be_retried_and_leaves_one_live_successor() {
    let daemon = Daemon::start();
    let workload = daemon.bootstrap("billing").await;
    let lost_key = rcgen::KeyPair::generate().unwrap();
    let lost = daemon
        .client(Some(&workload))
        .await
        .renew(csr_for(&lost_key, None, vec![]))
        .await
        .expect("first renewal");
    let lost = Identity::new(lost_key, lost);

    let retried_key = rcgen::KeyPair::generate().unwrap();
    let retried = daemon
        .client(Some(&workload))
        .await
        .renew(csr_for(&retried_key, None, vec![]))
        .await
        .expect("the retry after a lost answer");
    let retried = Identity::new(retried_key, retried);
    assert!(
        revoked(&daemon, &lost.issued.serial),
        "the unused successor is revoked"
    );
    let retirement = audit(&daemon)
        .into_iter()
        .find(|e| e["event"] == "revoke" && e["serial"] == lost.issued.serial.as_str())
        .expect("the retirement is audited");
    assert!(
        retirement["reason"]
            .as_str()
            .unwrap()
            .contains("superseded"),
        "{retirement}"
    );
    assert!(!revoked(&daemon, &retried.issued.serial));

    // The superseded certificate cannot renew.
    let (kind, message) = refusal(daemon.renew(Some(&lost)).await);
    assert_eq!(kind, ErrorKind::Unauthenticated, "{message}");
    assert!(message.contains("revoked"), "{message}");

    // The retried one renews, and from then on the original cannot.
    daemon
        .renew(Some(&retried))
        .await
        .expect("the successor renews");
    let (kind, message) = refusal(daemon.renew(Some(&workload)).await);
    assert_eq!(kind, ErrorKind::PermissionDenied, "{message}");
    assert!(message.contains(&retried.issued.serial), "{message}");
}

/// Many renewals of one certificate at once (a copied key racing the
/// workload): whatever each is told, one live successor remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_renewals_of_one_certificate_leave_one_live_successor() {
    let daemon = std::sync::Arc::new(Daemon::start());
    let workload = std::sync::Arc::new(daemon.bootstrap("billing").await);
    let mut racers = Vec::new();
    for _ in 0..8 {
        let (daemon, workload) = (daemon.clone(), workload.clone());
        racers.push(tokio::spawn(
            async move { daemon.renew(Some(&workload)).await },
        ));
    }
    let mut issued = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            Ok(certificate) => issued.push(certificate.serial),
            Err(certd::api::client::ClientError::Refused { kind, message }) => {
                assert_eq!(kind, ErrorKind::PermissionDenied, "{message}");
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(!issued.is_empty(), "no renewal succeeded");
    let live: Vec<_> = issued.iter().filter(|s| !revoked(&daemon, s)).collect();
    assert_eq!(live.len(), 1, "live successors among {issued:?}: {live:?}");
}

/// `certd revoke --lineage SERIAL` revokes every unexpired certificate of
/// the chain of renewals SERIAL belongs to, whichever link is named; the
/// CRL lists them all.
#[test]
fn revoke_lineage_ends_the_whole_chain() {
    let daemon = Daemon::start();
    let workload = daemon.tmp.path().join("billing");
    let other = daemon.tmp.path().join("other");
    request(&daemon, &workload);
    request(&daemon, &other);
    let mut chain = vec![serial_in(&workload)];
    for _ in 0..3 {
        assert!(renew(&daemon, &workload).status.success());
        chain.push(serial_in(&workload));
    }
    let output = daemon.cli(&[
        "revoke",
        "--lineage",
        &chain[1],
        "--reason",
        "key-compromise",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    for serial in &chain {
        assert!(
            revoked(&daemon, serial),
            "{serial} of the lineage not revoked"
        );
        assert!(
            printed.contains(serial.as_str()),
            "{serial} not reported:\n{printed}"
        );
    }
    assert!(
        !revoked(&daemon, &serial_in(&other)),
        "another lineage was revoked"
    );
    let refused = renew(&daemon, &workload);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));

    let output = daemon.cli(&["revoke", "--lineage", "00AB"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let output = daemon.cli(&["revoke", "--lineage", &chain[0], "--service", "billing"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
