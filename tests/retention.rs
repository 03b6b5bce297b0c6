//! Retention: the daemon's background purge deletes certificate records
//! and audit entries past their retention, on the daemon's own clock,
//! counts them in `certd_store_purged_total`, answers OCSP `unknown` for a
//! purged serial, and the purged store is served again after a restart
//! (its marks do not take the purge for a rollback).

mod common;

use std::time::Duration;

use common::http;
use common::in_process::InProcess;
use x509_cert::der::Decode;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse};

const RETENTION: &str = "[retention]\ncertificates = \"1h\"\naudit = \"1h\"\n";

/// OCSP's answer for the leaf of `chain_pem`, as a relying party asks.
fn ocsp_status(daemon: &InProcess, chain_pem: &str) -> CertStatus {
    let (request, _) = certd::revocation::ocsp::request_for(chain_pem, None).unwrap();
    let response = http(
        "POST",
        &format!("{}/ocsp", daemon.http),
        &[("Content-Type", "application/ocsp-request")],
        &request,
    );
    assert_eq!(response.status, 200);
    let response = OcspResponse::from_der(&response.body).unwrap();
    let basic =
        BasicOcspResponse::from_der(response.response_bytes.unwrap().response.as_bytes()).unwrap();
    basic.tbs_response_data.responses[0].cert_status
}

/// Certificates issued, expired and past their retention are purged by
/// the background task once the clock moves past it (all but the newest
/// record, which the marks name); a revoked one goes too once expired.
/// OCSP then answers `unknown` for them, old audit entries are gone, the
/// purge is counted, and a restart serves the purged store.
#[tokio::test(flavor = "multi_thread")]
async fn the_purge_deletes_records_past_retention_and_the_store_is_served_again() {
    // The only daemon in this test binary: the metrics are its own.
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ca");
    let daemon = InProcess::start_in(tmp, data_dir.clone(), RETENTION).await;
    let mut admin =
        certd::api::client::AdminClient::connect(&certd::DataDir::new(&data_dir).admin_socket())
            .await
            .unwrap();
    let options = certd::authority::OperatorIssue {
        unregistered: true,
        renewable: false,
    };
    let intermediate =
        std::fs::read_to_string(certd::DataDir::new(&data_dir).intermediate_cert()).unwrap();
    let mut issued = Vec::new();
    for _ in 0..20 {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = common::csr_for(&key, None, vec![]);
        let summary = admin
            .issue("billing", csr, Some(Duration::from_secs(3600)), options)
            .await
            .unwrap();
        issued.push(summary);
    }
    admin
        .revoke_serial(
            &issued[3].serial,
            certd::ca::RevocationReason::KeyCompromise,
        )
        .await
        .unwrap();
    let purged_series = "certd_store_purged_total{kind=\"certificate\"}";
    assert_eq!(daemon.metric(purged_series), Some(0.0));

    // Past expiry (1h) and retention (1h), and the purge's next pass.
    daemon.advance(Duration::from_secs(3 * 3600));
    // The pass purges certificates, then audit entries (the issuances'
    // and the revocation's, older than an hour now).
    let audit_series = "certd_store_purged_total{kind=\"audit\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while daemon.metric(purged_series).unwrap_or(0.0) < 19.0
        || daemon.metric(audit_series).unwrap_or(0.0) < 20.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not purged in time: {:?} certificates, {:?} audit entries",
            daemon.metric(purged_series),
            daemon.metric(audit_series)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = daemon.recorded_serials();
    let left = issued
        .iter()
        .filter(|summary| listed.contains(&summary.serial))
        .count();
    assert!(
        left <= 1,
        "{left} of the expired certificates are still listed"
    );
    let revoked_chain = format!("{}{intermediate}", issued[3].certificate_pem);
    assert!(
        matches!(ocsp_status(&daemon, &revoked_chain), CertStatus::Unknown(_)),
        "a purged serial answers unknown"
    );

    // The purged store is this CA's, not a rollback: it is served again.
    let daemon = daemon.restart(RETENTION).await;
    let listed = daemon.recorded_serials();
    assert_eq!(
        issued
            .iter()
            .filter(|summary| listed.contains(&summary.serial))
            .count(),
        left,
        "nothing purged came back"
    );
    daemon.shutdown().await;
}
