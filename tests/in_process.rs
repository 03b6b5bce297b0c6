//! certd as a library: the daemon builder serves a real daemon in this
//! process, on ephemeral loopback ports, with a handle that stops it.

mod common;

use std::path::Path;

use certd::DataDir;
use certd::api::client::{AdminClient, TlsClientSettings, WorkloadClient};
use certd::authority::TokenFor;
use certd::config::ConfigFile;
use certd::daemon::Daemon;
use certd::registry::EntrySpec;

/// The builder's daemon issues a certificate to a workload holding a join
/// token made through its admin socket, and its shutdown handle stops it
/// cleanly: the admin socket is gone and the database can be opened again.
#[tokio::test]
async fn an_in_process_daemon_issues_and_shuts_down() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = DataDir::new(tmp.path().join("ca"));
    let config = ConfigFile::parse(
        "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n",
        Path::new("certd.toml"),
    )
    .and_then(|file| file.validate())
    .unwrap();
    let bound = Daemon::new(data_dir.clone(), config.clone())
        .bind()
        .await
        .unwrap();
    let grpc = format!("https://{}", bound.grpc_addr());
    let admin_socket = bound.admin_socket();
    assert_eq!(admin_socket, data_dir.admin_socket());
    let mut running = bound.spawn();
    running.ready().await.unwrap();

    let mut admin = AdminClient::connect(&admin_socket).await.unwrap();
    let spec = EntrySpec {
        service: "billing".into(),
        selectors: vec!["token:billing".into()],
        ..EntrySpec::default()
    };
    let entry = admin.create_entry(&spec).await.unwrap();
    let tokens = admin
        .create_join_tokens(&TokenFor::Entry(entry.id), None, 1)
        .await
        .unwrap();
    let tls = TlsClientSettings {
        ca_bundle_pem: std::fs::read_to_string(data_dir.bundle()).unwrap(),
        identity: None,
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let issued = WorkloadClient::connect(&grpc, &tls)
        .await
        .unwrap()
        .issue(common::csr_for(&key, None, vec![]), &tokens.tokens[0])
        .await
        .unwrap();
    assert_eq!(issued.spiffe_id, "spiffe://certd.internal/svc/billing");

    running.shutdown().await.unwrap();
    assert!(!admin_socket.exists(), "the admin socket is removed");
    let offline = Daemon::new(data_dir, config).offline().await.unwrap();
    let record = offline.certificate(&issued.serial).await.unwrap();
    assert_eq!(record.service.as_str(), "billing", "the record is durable");
}
