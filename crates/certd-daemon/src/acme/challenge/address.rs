//! Where certd may connect to validate a name: resolution (A, AAAA, or the
//! test-only `resolve_all_to`), the address policy (see the module above for
//! the list), and a connection to the first allowed address that accepts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::dns::{self, LookupFailure};
use super::{ChallengeError, ValidationSettings};

/// Cloud metadata services, which hand out the machine's credentials to
/// whoever asks from inside: AWS/GCP/Azure/Oracle (IPv4), AWS (IPv6),
/// Alibaba Cloud.
const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// Why certd must not connect to `ip`, or `None` when it may.
/// `allow_loopback` is the test-only `resolve_all_to`'s.
pub(super) fn refusal(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    // ::ffff:169.254.169.254 reaches 169.254.169.254, and so does
    // 64:ff9b::a9fe:a9fe through a NAT64 gateway: judge what they carry.
    let ip = match ip.to_canonical() {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        canonical => canonical,
    };
    if METADATA.contains(&ip) {
        return Some("a cloud metadata address");
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_unspecified() || v4.octets()[0] == 0 {
                Some("an unspecified address")
            } else if v4.is_broadcast() {
                Some("the broadcast address")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if v4.is_loopback() && !allow_loopback {
                Some("a loopback address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unicast_link_local() {
                Some("a link-local address")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if v6.is_loopback() && !allow_loopback {
                Some("a loopback address")
            } else {
                None
            }
        }
    }
}

/// The addresses `domain` resolves to, in the order they are tried.
pub(super) async fn resolve(
    settings: &ValidationSettings,
    domain: &str,
) -> Result<Vec<IpAddr>, ChallengeError> {
    if let Some(ip) = settings.resolve_all_to {
        return Ok(vec![ip]);
    }
    let resolver = dns::resolver(settings)?;
    match resolver.lookup_ip(dns::absolute(domain)).await {
        Ok(lookup) => {
            let ips: Vec<IpAddr> = lookup.iter().collect();
            if ips.is_empty() {
                Err(no_address(settings, domain))
            } else {
                Ok(ips)
            }
        }
        Err(err) => Err(match LookupFailure::from(err) {
            LookupFailure::NoSuchName => ChallengeError::Dns(format!(
                "{domain} does not exist (NXDOMAIN from {})",
                dns::servers(settings)
            )),
            LookupFailure::NoRecords => no_address(settings, domain),
            LookupFailure::Failed(why) => ChallengeError::Dns(format!(
                "could not resolve {domain} (asked {}): {why}",
                dns::servers(settings)
            )),
        }),
    }
}

/// A connection to `domain`'s first allowed address that accepts one on
/// `port`, and that address.
pub(super) async fn connect(
    settings: &ValidationSettings,
    domain: &str,
    port: u16,
) -> Result<(TcpStream, SocketAddr), ChallengeError> {
    let deadline = Instant::now() + settings.timeout;
    let resolved = resolve(settings, domain).await?;
    let allow_loopback = settings.resolve_all_to.is_some();
    let mut refused = Vec::new();
    let mut allowed = Vec::new();
    for ip in resolved {
        match refusal(ip, allow_loopback) {
            Some(why) => refused.push(format!("{ip} ({why})")),
            None => allowed.push(SocketAddr::new(ip, port)),
        }
    }
    if allowed.is_empty() {
        return Err(ChallengeError::Forbidden(format!(
            "certd does not connect to {domain}: it resolves to {}",
            refused.join(", ")
        )));
    }
    let mut failures = Vec::new();
    let count = allowed.len();
    for (tried, addr) in allowed.into_iter().enumerate() {
        // An address that never answers must leave time for the next ones.
        let share = deadline.saturating_duration_since(Instant::now()) / (count - tried) as u32;
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(err)) => failures.push(format!("{addr}: {err}")),
            Err(_elapsed) => failures.push(format!(
                "{addr}: no answer within {}",
                humantime::format_duration(share)
            )),
        }
    }
    let mut message = format!("could not connect to {domain}: {}", failures.join("; "));
    if !refused.is_empty() {
        message.push_str(&format!(
            " (not tried, as certd does not connect there: {})",
            refused.join(", ")
        ));
    }
    Err(ChallengeError::Connection(message))
}

fn no_address(settings: &ValidationSettings, domain: &str) -> ChallengeError {
    ChallengeError::Dns(format!(
        "{domain} has no A or AAAA record (asked {})",
        dns::servers(settings)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `check(address, allow_loopback, expected refusal)` per rule.
    #[test]
    fn the_address_policy() {
        #[track_caller]
        fn check(ip: &str, allow_loopback: bool, expected: Option<&str>) {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(refusal(ip, allow_loopback), expected, "{ip}");
        }
        let metadata = Some("a cloud metadata address");
        check("169.254.169.254", false, metadata);
        check("169.254.169.254", true, metadata);
        check("::ffff:169.254.169.254", false, metadata);
        check("64:ff9b::a9fe:a9fe", false, metadata);
        check("64:ff9b::7f00:1", false, Some("a loopback address"));
        check("64:ff9b::a00:1", false, None);
        check("fd00:ec2::254", false, metadata);
        check("100.100.100.200", false, metadata);
        check("169.254.1.1", false, Some("a link-local address"));
        check("fe80::1", false, Some("a link-local address"));
        check("fe80::1", true, Some("a link-local address"));
        check("127.0.0.1", false, Some("a loopback address"));
        check("127.8.9.10", false, Some("a loopback address"));
        check("::1", false, Some("a loopback address"));
        check("::ffff:127.0.0.1", false, Some("a loopback address"));
        check("0.0.0.0", false, Some("an unspecified address"));
        check("0.1.2.3", false, Some("an unspecified address"));
        check("::", false, Some("an unspecified address"));
        check("255.255.255.255", false, Some("the broadcast address"));
        check("224.0.0.1", false, Some("a multicast address"));
        check("ff02::1", false, Some("a multicast address"));
        // The test-only override lets loopback through, nothing else.
        check("127.0.0.1", true, None);
        check("::1", true, None);
        // An internal CA's names live in private ranges.
        check("10.1.2.3", false, None);
        check("172.16.0.1", false, None);
        check("192.168.1.1", false, None);
        check("fd12:3456::1", false, None);
        check("100.64.0.1", false, None);
        check("192.0.2.2", false, None);
        check("2001:db8::1", false, None);
    }

    /// `resolve_all_to` pointing at a metadata address is still refused,
    /// with the address and the reason in the message.
    #[tokio::test]
    async fn a_refused_address_is_named_in_a_rejected_identifier_problem() {
        for (ip, why) in [
            ("169.254.169.254", "a cloud metadata address"),
            ("fe80::1", "a link-local address"),
        ] {
            let settings = ValidationSettings {
                resolve_all_to: Some(ip.parse().unwrap()),
                ..ValidationSettings::default()
            };
            let err = connect(&settings, "www.example.test", 80)
                .await
                .unwrap_err();
            assert_eq!(err.problem_type(), "rejectedIdentifier");
            assert_eq!(
                err.to_string(),
                format!("certd does not connect to www.example.test: it resolves to {ip} ({why})")
            );
        }
    }

    /// With the override, loopback is allowed and connected to; a closed
    /// port is a connection problem naming the address.
    #[tokio::test]
    async fn the_override_connects_to_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let settings = ValidationSettings {
            resolve_all_to: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ..ValidationSettings::default()
        };
        let (_stream, addr) = connect(&settings, "www.example.test", port).await.unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
        // A port bound but not listening refuses connections, and, unlike
        // a port let go, cannot be taken by a test running beside this one.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(listener);
        let err = connect(&settings, "www.example.test", port)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "connection");
        assert!(
            err.to_string().starts_with(&format!(
                "could not connect to www.example.test: 127.0.0.1:{port}: "
            )),
            "{err}"
        );
    }
}
