//! Connection floods and slow clients against the real daemon: idle and
//! half-sent connections are closed after their timeouts, the per-client
//! cap refuses a flood from one address with a log line, and Issue, the
//! HTTP endpoints and the admin socket keep answering throughout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Daemon, http, stderr};

/// Short timeouts, to see them act.
const TIMEOUTS: &str = r#"
[connections]
idle_timeout = "2s"
header_read_timeout = "1s"
"#;

/// A small per-client cap, and the default (long) idle timeout, so the
/// connections under the cap stay open.
const CAP: &str = r#"
[connections]
max_per_client = 20
"#;

fn start(config_text: &str) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(&config, config_text).unwrap();
    let data_dir = tmp.path().join("ca");
    let config = config.display().to_string();
    Daemon::start_in(tmp, data_dir, &["--config", &config])
}

/// The daemon's gRPC and HTTP listeners as `host:port`.
fn addresses(daemon: &Daemon) -> (String, String) {
    let grpc = daemon.grpc.trim_start_matches("https://").to_owned();
    let http = daemon.http.trim_start_matches("http://").to_owned();
    (grpc, http)
}

/// A TCP connection to `address` from the loopback address `from`, so one
/// test can play several clients.
fn connect_from(from: &str, address: &str) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let address: SocketAddr = address.parse().unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&local.into())?;
    socket.connect(&address.into())?;
    Ok(socket.into())
}

/// Waits up to `limit` for the server to close `stream`; returns whether it
/// did (EOF or reset), sending nothing meanwhile.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(limit.min(Duration::from_millis(200))))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return true,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_sent_connections_are_closed_and_service_goes_on() {
    let daemon = start(TIMEOUTS);
    let (grpc_addr, http_addr) = addresses(&daemon);

    // An idle TCP connection on the TLS port that never says hello.
    let mut silent_grpc = connect_from("127.0.0.3", &grpc_addr).unwrap();
    // A keep-alive HTTP connection that asked once and then went quiet.
    let mut keep_alive = connect_from("127.0.0.3", &http_addr).unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: certd\r\n\r\n")
        .unwrap();
    // A request whose headers never finish (slowloris).
    let mut half_sent = connect_from("127.0.0.3", &http_addr).unwrap();
    half_sent
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: cer")
        .unwrap();

    // While they hang, a workload is still served.
    let identity = daemon.bootstrap("billing").await;
    assert!(!identity.chain_pem.is_empty());

    assert!(
        closed_within(&mut half_sent, Duration::from_secs(10)),
        "half-sent headers were not cut off"
    );
    assert!(
        closed_within(&mut silent_grpc, Duration::from_secs(10)),
        "an idle TLS connection stayed open"
    );
    // The keep-alive connection got its answer, then was closed when idle.
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(10)),
        "an idle keep-alive connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_one_client_is_capped_and_others_are_served() {
    let daemon = start(CAP);
    let (grpc_addr, http_addr) = addresses(&daemon);

    // 60 connections to each port from one address; the cap is 20.
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(connect_from("127.0.0.2", &grpc_addr).unwrap());
        flood.push(connect_from("127.0.0.2", &http_addr).unwrap());
    }
    // The daemon accepts and closes those past the cap at once.
    let mut open = flood;
    let mut closed = 0;
    let started = Instant::now();
    while closed < 80 && started.elapsed() < Duration::from_secs(20) {
        let mut still_open = Vec::new();
        for mut stream in open {
            if closed_within(&mut stream, Duration::from_millis(5)) {
                closed += 1;
            } else {
                still_open.push(stream);
            }
        }
        open = still_open;
    }
    assert_eq!(closed, 80, "of 120 connections, those over the cap");
    // The 40 under the cap stay open.
    let closed_later = open
        .iter_mut()
        .map(|stream| closed_within(stream, Duration::from_millis(20)))
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed_later, 0);

    // Everyone else is served while the flood holds its 40 connections:
    // a workload over gRPC, a relying party over HTTP, an operator on the
    // admin socket.
    let identity = daemon.bootstrap("billing").await;
    assert!(!identity.chain_pem.is_empty());
    let health = http("GET", &format!("{}/healthz", daemon.http), &[], b"");
    assert_eq!(health.status, 200);
    let list = daemon.cli(&["list"]);
    assert!(list.status.success(), "{}", stderr(&list));

    let log = daemon.log_text();
    assert!(
        log.contains("connection cap reached (connections.max_per_client = 20)"),
        "no log line for the cap: {log}"
    );
    assert!(log.contains("127.0.0.2"), "the log names the client: {log}");
}

#[test]
fn connection_settings_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("certd.toml");
    std::fs::write(&config, "[connections]\nmax_per_client = 0\n").unwrap();
    let output = std::process::Command::new(common::CERTD)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("ca"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("config field `connections.max_per_client`: must be at least 1"),
        "{}",
        stderr(&output)
    );
}
