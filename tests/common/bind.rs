//! A real DNS server for the ACME tests: BIND 9's `named`, started on a
//! loopback port in a temporary directory, authoritative for one zone that
//! accepts RFC 2136 updates signed with a TSIG key (so lego's `rfc2136`
//! provider can publish its dns-01 TXT records there, and the tests can add
//! records with `nsupdate`).
//!
//! BIND comes from the Debian packages `bind9` (`named`) and
//! `bind9-dnsutils` (`nsupdate`); `.ci/run` installs them. Without them the
//! tests skip with one loud line, unless `CERTD_REQUIRE_BIND` is set (as in
//! CI), where they fail.
//!
//! Shared by the unit tests of `certd::acme::challenge` (which include this
//! file) and the integration tests, so it uses only std, `tempfile` and
//! `base64`, which both have.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

/// Where Debian installs the server; `PATH` is searched too.
pub const NAMED: &str = "/usr/sbin/named";
pub const NSUPDATE: &str = "/usr/bin/nsupdate";
/// How long `named` may take to load its zone and answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// A port picked as free may be taken by the time `named` binds it.
const START_ATTEMPTS: usize = 5;

/// A running `named`, killed on drop.
pub struct Bind {
    child: Child,
    addr: SocketAddr,
    zone: String,
    tsig_secret: String,
    log: PathBuf,
    // Last: named's files go after named does.
    dir: tempfile::TempDir,
}

/// A started BIND for `zone`, or `None` (after one loud line) when BIND is
/// not installed and `CERTD_REQUIRE_BIND` is unset. Panics when BIND is
/// installed but does not start: that is a failure, not a skip.
pub fn bind(zone: &str) -> Option<Bind> {
    let Some(named) = find(NAMED, "named") else {
        skip_or_fail("BIND's named is not installed (apt-get install bind9; .ci/run does)");
        return None;
    };
    if find(NSUPDATE, "nsupdate").is_none() {
        skip_or_fail(
            "BIND's nsupdate is not installed (apt-get install bind9-dnsutils; .ci/run does)",
        );
        return None;
    }
    match Bind::start_with(&named, zone) {
        Ok(bind) => Some(bind),
        Err(err) => panic!("BIND did not start for zone {zone}: {err}"),
    }
}

impl Bind {
    /// Starts `named` authoritative for `zone` (e.g. `acme.test`) on
    /// 127.0.0.1 at a free port, and returns once it answers for the zone.
    /// `NotFound` when `named` is not installed.
    pub fn start(zone: &str) -> io::Result<Bind> {
        let named = find(NAMED, "named").ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "BIND's named is not installed")
        })?;
        Self::start_with(&named, zone)
    }

    fn start_with(named: &Path, zone: &str) -> io::Result<Bind> {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(named, &zone) {
                Ok(bind) => return Ok(bind),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("BIND was never started")))
    }

    fn start_once(named: &Path, zone: &str) -> io::Result<Bind> {
        let dir = tempfile::Builder::new().prefix("certd-bind-").tempdir()?;
        let port = free_port()?;
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        let tsig_secret = base64::engine::general_purpose::STANDARD.encode(secret);
        let conf = dir.path().join("named.conf");
        std::fs::write(&conf, named_conf(dir.path(), port, zone, &tsig_secret))?;
        std::fs::write(dir.path().join("zone.db"), zone_file(zone))?;
        let log = dir.path().join("named.log");
        let log_file = std::fs::File::create(&log)?;
        // -g: foreground, logging to stderr, as the user running the test;
        // -n 1: one worker thread is plenty, and the machine is shared.
        let child = Command::new(named)
            .arg("-g")
            .args(["-n", "1"])
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let mut bind = Bind {
            child,
            addr,
            zone: zone.to_owned(),
            tsig_secret,
            log,
            dir,
        };
        bind.wait_until_answering()?;
        Ok(bind)
    }

    /// 127.0.0.1 and the port `named` listens on (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The zone, without a trailing dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn tsig_key_name(&self) -> &str {
        "certd-test-key"
    }

    /// As BIND and nsupdate name it; lego (miekg/dns) wants it as a domain
    /// name, with a trailing dot: see `lego_rfc2136_env`.
    pub fn tsig_algorithm(&self) -> &str {
        "hmac-sha256"
    }

    /// The environment lego's `rfc2136` DNS provider reads to publish its
    /// dns-01 records here. (lego also checks that the record is visible
    /// before asking for validation: point its `--dns.resolvers` at
    /// `addr()` too.)
    pub fn lego_rfc2136_env(&self) -> [(&'static str, String); 4] {
        [
            ("RFC2136_NAMESERVER", self.addr.to_string()),
            ("RFC2136_TSIG_KEY", self.tsig_key_name().to_owned()),
            (
                "RFC2136_TSIG_ALGORITHM",
                format!("{}.", self.tsig_algorithm()),
            ),
            ("RFC2136_TSIG_SECRET", self.tsig_secret.clone()),
        ]
    }

    /// The TSIG key, base64 (as `named.conf`, `nsupdate -y` and lego's
    /// `RFC2136_TSIG_SECRET` take it).
    pub fn tsig_secret(&self) -> &str {
        &self.tsig_secret
    }

    /// Adds a TXT record (`name` is absolute, with or without the trailing dot).
    pub fn add_txt(&self, name: &str, value: &str) -> io::Result<()> {
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        self.update(&format!(
            "update add {} 60 TXT \"{quoted}\"",
            absolute(name)
        ))
    }

    /// Adds an A (IPv4) or AAAA (IPv6) record.
    pub fn add_a(&self, name: &str, ip: IpAddr) -> io::Result<()> {
        let kind = if ip.is_ipv4() { "A" } else { "AAAA" };
        self.update(&format!("update add {} 60 {kind} {ip}", absolute(name)))
    }

    /// Removes every record of `name`.
    pub fn delete(&self, name: &str) -> io::Result<()> {
        self.update(&format!("update delete {}", absolute(name)))
    }

    /// What `named` logged so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One signed RFC 2136 update through `nsupdate`, as a DNS client sends it.
    fn update(&self, command: &str) -> io::Result<()> {
        let mut child = Command::new(find(NSUPDATE, "nsupdate").unwrap_or(NSUPDATE.into()))
            .arg("-y")
            .arg(format!(
                "{}:{}:{}",
                self.tsig_algorithm(),
                self.tsig_key_name(),
                self.tsig_secret
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // check-names no: `_acme-challenge.…` is no host name, and a test
        // may want an A record there (the server's zone allows it too).
        let script = format!(
            "server {} {}\nzone {}.\ncheck-names no\n{command}\nsend\n",
            self.addr.ip(),
            self.addr.port(),
            self.zone
        );
        child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("nsupdate has no stdin"))?
            .write_all(script.as_bytes())?;
        let output = child.wait_with_output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "nsupdate `{command}` failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Polls with a real query (SOA of the zone) until `named` answers
    /// NOERROR, which it does only once the zone is loaded.
    fn wait_until_answering(&mut self) -> io::Result<()> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let query = soa_query(&self.zone);
        let started = Instant::now();
        let mut answer = [0u8; 512];
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "named exited ({status}):\n{}",
                    self.log()
                )));
            }
            // Refused (nothing listening yet) and timeouts just mean "not yet".
            if socket.send_to(&query, self.addr).is_ok()
                && let Ok((len, from)) = socket.recv_from(&mut answer)
                && from == self.addr
                && is_noerror_answer(&answer[..len], &query)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "named did not answer on {} within {START_TIMEOUT:?}:\n{}",
                self.addr,
                self.log()
            ),
        ))
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip_or_fail(reason: &str) {
    if std::env::var_os("CERTD_REQUIRE_BIND").is_some() {
        panic!("CERTD_REQUIRE_BIND is set, but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// `path` if it exists, else `name` found on `PATH`.
fn find(path: &str, name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    if path.is_file() {
        return Some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking.
fn free_port() -> io::Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP on 127.0.0.1",
    ))
}

fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn named_conf(dir: &Path, port: u16, zone: &str, tsig_secret: &str) -> String {
    let dir = dir.display();
    // Every file named writes goes in the temporary directory; no rndc
    // channel (controls {}), no recursion, IPv4 loopback only.
    format!(
        r#"options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "certd-test-key" {{
    algorithm hmac-sha256;
    secret "{tsig_secret}";
}};
zone "{zone}" {{
    type primary;
    file "{dir}/zone.db";
    allow-update {{ key "certd-test-key"; }};
    check-names ignore;
}};
"#
    )
}

fn zone_file(zone: &str) -> String {
    format!(
        "$TTL 60\n\
         @ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 60\n\
         @ IN NS ns.{zone}.\n\
         ns IN A 127.0.0.1\n"
    )
}

/// A DNS query (RFC 1035 §4.1) for the SOA record of `zone`, by hand: the
/// harness needs no DNS library of its own.
fn soa_query(zone: &str) -> Vec<u8> {
    // ID 0xce7d, no flags (no recursion wanted), one question.
    let mut query = vec![0xce, 0x7d, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in zone.split('.').filter(|label| !label.is_empty()) {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    // The root label, QTYPE SOA (6), QCLASS IN (1).
    query.extend_from_slice(&[0, 0, 6, 0, 1]);
    query
}

fn is_noerror_answer(answer: &[u8], query: &[u8]) -> bool {
    answer.len() >= 12
        && answer[..2] == query[..2]
        // QR set (a response) and RCODE 0 (NOERROR).
        && answer[2] & 0x80 != 0
        && answer[3] & 0x0f == 0
        // At least one answer record (the SOA).
        && u16::from_be_bytes([answer[6], answer[7]]) > 0
}
