//! dns-01 (RFC 8555 §8.4): one of the TXT records at
//! `_acme-challenge.<domain>` must be base64url(SHA-256(key authorization)),
//! as the configured DNS servers (or the system's) answer.

use hickory_resolver::proto::rr::{RData, RecordType};

use super::dns::{self, LookupFailure};
use super::{ChallengeError, ValidationSettings, excerpt, sha256_base64url};

/// How many of the records found a message quotes.
const QUOTED_RECORDS: usize = 3;

pub(super) async fn validate(
    settings: &ValidationSettings,
    domain: &str,
    key_authorization: &str,
) -> Result<(), ChallengeError> {
    let name = format!("_acme-challenge.{domain}");
    let servers = dns::servers(settings);
    let resolver = dns::resolver(settings)?;
    let lookup = match resolver.lookup(dns::absolute(&name), RecordType::TXT).await {
        Ok(lookup) => lookup,
        Err(err) => {
            return Err(match LookupFailure::from(err) {
                LookupFailure::NoSuchName => ChallengeError::IncorrectResponse(format!(
                    "no TXT record at {name}: the name does not exist (NXDOMAIN from {servers})"
                )),
                LookupFailure::NoRecords => ChallengeError::IncorrectResponse(format!(
                    "no TXT record at {name} (asked {servers})"
                )),
                LookupFailure::Failed(why) => ChallengeError::Dns(format!(
                    "could not look up the TXT records at {name} (asked {servers}): {why}"
                )),
            });
        }
    };
    // A TXT record is one or more strings of at most 255 bytes; a longer
    // value is their concatenation (RFC 7208 §3.3 does the same).
    let values: Vec<Vec<u8>> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(txt.txt_data.concat()),
            _ => None,
        })
        .collect();
    let expected = sha256_base64url(key_authorization);
    if values.iter().any(|value| value == expected.as_bytes()) {
        return Ok(());
    }
    if values.is_empty() {
        return Err(ChallengeError::IncorrectResponse(format!(
            "no TXT record at {name} (asked {servers})"
        )));
    }
    let mut found: Vec<String> = values
        .iter()
        .take(QUOTED_RECORDS)
        .map(|value| excerpt(value))
        .collect();
    if values.len() > QUOTED_RECORDS {
        found.push(format!("and {} more", values.len() - QUOTED_RECORDS));
    }
    Err(ChallengeError::IncorrectResponse(format!(
        "the TXT records at {name} are {}; none is \"{expected}\", base64url(SHA-256(key authorization))",
        found.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::bind::{self, Bind};
    use super::*;

    const KEY_AUTHORIZATION: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";

    fn settings(bind: &Bind) -> ValidationSettings {
        ValidationSettings {
            dns_servers: vec![bind.addr()],
            timeout: Duration::from_secs(5),
            ..ValidationSettings::default()
        }
    }

    /// The right record passes, also beside other TXT records at the name
    /// (two orders for the same name, or leftovers).
    #[tokio::test]
    async fn the_right_txt_record_passes() {
        let Some(bind) = bind::bind("acme.test") else {
            return;
        };
        let name = "_acme-challenge.right.acme.test";
        bind.add_txt(name, "a leftover from another order").unwrap();
        bind.add_txt(name, &sha256_base64url(KEY_AUTHORIZATION))
            .unwrap();
        validate(&settings(&bind), "right.acme.test", KEY_AUTHORIZATION)
            .await
            .unwrap_or_else(|err| panic!("{err}\n{}", bind.log()));
    }

    /// A record of another key authorization fails, quoting what was found
    /// and what was expected.
    #[tokio::test]
    async fn a_wrong_txt_record_fails() {
        let Some(bind) = bind::bind("acme.test") else {
            return;
        };
        let wrong = sha256_base64url("another.key-authorization");
        bind.add_txt("_acme-challenge.wrong.acme.test", &wrong)
            .unwrap();
        let err = validate(&settings(&bind), "wrong.acme.test", KEY_AUTHORIZATION)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "the TXT records at _acme-challenge.wrong.acme.test are \"{wrong}\"; none is \"{}\", \
                 base64url(SHA-256(key authorization))",
                sha256_base64url(KEY_AUTHORIZATION)
            )
        );
    }

    /// No record: the name does not exist (NXDOMAIN), or exists with other
    /// types only; both say which name was asked of which server.
    #[tokio::test]
    async fn no_txt_record_fails() {
        let Some(bind) = bind::bind("acme.test") else {
            return;
        };
        let settings = settings(&bind);
        let err = validate(&settings, "none.acme.test", KEY_AUTHORIZATION)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "no TXT record at _acme-challenge.none.acme.test: the name does not exist \
                 (NXDOMAIN from {})",
                bind.addr()
            )
        );

        bind.add_a(
            "_acme-challenge.other.acme.test",
            "192.0.2.9".parse().unwrap(),
        )
        .unwrap();
        let err = validate(&settings, "other.acme.test", KEY_AUTHORIZATION)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "no TXT record at _acme-challenge.other.acme.test (asked {})",
                bind.addr()
            )
        );
    }

    /// A server that refuses to answer (BIND is not authoritative for the
    /// name and does not recurse) is a DNS problem, not a wrong answer.
    #[tokio::test]
    async fn a_refusing_server_is_a_dns_problem() {
        let Some(bind) = bind::bind("acme.test") else {
            return;
        };
        let err = validate(&settings(&bind), "www.elsewhere.test", KEY_AUTHORIZATION)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "dns", "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "could not look up the TXT records at _acme-challenge.www.elsewhere.test \
                 (asked {}): ",
                bind.addr()
            )),
            "{err}"
        );
    }

    /// No DNS server where one is configured: a DNS problem naming the
    /// server, within the attempt's time.
    #[tokio::test]
    async fn an_unreachable_server_is_a_dns_problem() {
        // A UDP port nobody listens on (the socket is closed again).
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let settings = ValidationSettings {
            dns_servers: vec![closed],
            timeout: Duration::from_secs(2),
            ..ValidationSettings::default()
        };
        let started = std::time::Instant::now();
        let err = super::super::validate(
            &settings,
            super::super::ChallengeType::Dns01,
            "www.example.test",
            "t",
            KEY_AUTHORIZATION,
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(err.problem_type(), "dns", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "could not look up the TXT records at _acme-challenge.www.example.test \
                 (asked {closed}): request timed out"
            )
        );
    }
}
