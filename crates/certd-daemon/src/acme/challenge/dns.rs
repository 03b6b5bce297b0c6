//! The DNS resolver challenge validation asks: the configured servers, or
//! the system's. One per validation, so every attempt asks afresh and a
//! record the client just published is not hidden behind a cached answer.

use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ServerOrderingStrategy,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::{ChallengeError, ValidationSettings};

/// A resolver for `settings`: its `dns_servers` (UDP, then TCP for
/// truncated answers) in the given order, or `/etc/resolv.conf`'s.
pub(super) fn resolver(settings: &ValidationSettings) -> Result<TokioResolver, ChallengeError> {
    let mut builder = if settings.dns_servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|err| {
            ChallengeError::Dns(format!(
                "cannot read the system's resolver configuration: {err}"
            ))
        })?
    } else {
        let servers = settings
            .dns_servers
            .iter()
            .map(|server| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut connection| {
                        connection.port = server.port();
                        connection
                    })
                    .collect();
                NameServerConfig::new(server.ip(), true, connections)
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    // Two tries (hickory's `attempts` counts the retries) of a quarter of
    // the attempt's time each: a server that never answers is reported as
    // such, naming it, well before validate's own limit, which bounds the
    // whole.
    options.timeout = (settings.timeout / 4).max(Duration::from_millis(1));
    options.attempts = 1;
    // DNS only: a name means what the network's DNS says, not what a file
    // on certd's machine says.
    options.use_hosts_file = ResolveHosts::Never;
    // IPv4 first: on internal networks it is the address most likely
    // routed; IPv6 is tried next when both exist.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    options.try_tcp_on_error = true;
    builder.build().map_err(|err| {
        ChallengeError::Dns(format!(
            "cannot set up the DNS resolver ({}): {err}",
            servers(settings)
        ))
    })
}

/// Which servers were asked, for messages: `127.0.0.1:5353` or `the system's resolvers`.
pub(super) fn servers(settings: &ValidationSettings) -> String {
    if settings.dns_servers.is_empty() {
        "the system's resolvers".to_owned()
    } else {
        settings
            .dns_servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How a lookup ended without records.
pub(super) enum LookupFailure {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// The name exists, without records of the type asked.
    NoRecords,
    /// The servers failed (SERVFAIL, REFUSED, no answer): nothing was learnt.
    Failed(String),
}

impl From<NetError> for LookupFailure {
    fn from(err: NetError) -> Self {
        if err.is_nx_domain() {
            Self::NoSuchName
        } else if err.is_no_records_found() {
            Self::NoRecords
        } else {
            Self::Failed(err.to_string())
        }
    }
}

/// `name` fully qualified, so that no search domain of resolv.conf is
/// appended to it.
pub(super) fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// Without configured servers the system's are used; their list is
    /// what messages name.
    #[test]
    fn the_servers_asked() {
        let system = ValidationSettings::default();
        assert_eq!(servers(&system), "the system's resolvers");
        let configured = ValidationSettings {
            dns_servers: vec![
                SocketAddr::from(([10, 0, 0, 53], 53)),
                SocketAddr::from(([127, 0, 0, 1], 5353)),
            ],
            ..ValidationSettings::default()
        };
        assert_eq!(servers(&configured), "10.0.0.53:53, 127.0.0.1:5353");
    }

    /// A resolver is built from `/etc/resolv.conf` where the machine has one
    /// (every machine these tests run on), and from configured servers.
    #[tokio::test]
    async fn resolvers_are_built_from_the_system_or_the_settings() {
        if std::path::Path::new("/etc/resolv.conf").exists() {
            resolver(&ValidationSettings::default()).unwrap();
        }
        resolver(&ValidationSettings {
            dns_servers: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            ..ValidationSettings::default()
        })
        .unwrap();
    }
}
