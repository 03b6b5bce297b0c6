//! Names that make up a workload identity: the trust domain, service names,
//! SPIFFE IDs and certificate serial numbers.
//!
//! Every type here is parsed once at the edge and can then be trusted: a
//! `ServiceName` is always a valid RFC 1123 label, a `Serial` is always in its
//! canonical form. This module does no I/O and knows nothing of X.509.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name or serial given from outside was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "service name {0:?} is not an RFC 1123 label (1-63 of a-z, 0-9 and '-', not starting or ending with '-')"
    )]
    InvalidServiceName(String),
    #[error(
        "trust domain {0:?} is not a valid DNS name (lower-case labels of a-z, 0-9 and '-', separated by dots)"
    )]
    InvalidTrustDomain(String),
    #[error("serial {0:?} is not a hex serial number of 1 to 20 bytes")]
    InvalidSerial(String),
    #[error(
        "DNS name {0:?} is not a host name (labels of a-z, 0-9 and '-'; no wildcards or IP addresses)"
    )]
    InvalidDnsName(String),
    #[error(
        "SPIFFE ID {0:?} is not spiffe://<trust-domain>/<path> with path segments of letters, digits, '.', '-' and '_' (none empty, '.' or '..')"
    )]
    InvalidSpiffeId(String),
}

/// The trust domain: the DNS suffix of every workload name and the authority
/// part of every SPIFFE ID this CA issues.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of certd's own serving certificate in this trust
    /// domain, which a federating peer pins for the `https_spiffe` bundle
    /// endpoint profile. No entry may name a path under `/certd/`.
    pub fn certd_server_id(&self) -> SpiffeId {
        SpiffeId(format!("spiffe://{}/{CERTD_SERVER_PATH}", self.0))
    }
}

/// The path of certd's own SPIFFE ID (`TrustDomain::certd_server_id`).
pub const CERTD_SERVER_PATH: &str = "certd/server";

impl FromStr for TrustDomain {
    type Err = NameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if is_dns_name(value) {
            Ok(TrustDomain(value.to_owned()))
        } else {
            Err(NameError::InvalidTrustDomain(value.to_owned()))
        }
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<TrustDomain> for String {
    fn from(value: TrustDomain) -> Self {
        value.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service name: one lower-case RFC 1123 label such as `billing`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name certd stored after parsing it: trusted, not parsed again.
    /// Only for storage backends reading back what they wrote (`store::codec`):
    /// nothing else may skip the parse.
    #[doc(hidden)]
    pub fn from_stored(value: String) -> Self {
        ServiceName(value)
    }
}

impl FromStr for ServiceName {
    type Err = NameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if is_rfc1123_label(value) {
            Ok(ServiceName(value.to_owned()))
        } else {
            Err(NameError::InvalidServiceName(value.to_owned()))
        }
    }
}

impl TryFrom<String> for ServiceName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ServiceName> for String {
    fn from(value: ServiceName) -> Self {
        value.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity a workload certificate asserts: its service (the CN), its
/// SPIFFE ID (the SAN URI) and its DNS names (SAN DNS names).
///
/// It decides every name in the certificate, so that names can never come
/// from the CSR. It comes from a registration entry, or for certificates
/// issued without one (operators' `certd issue`) from the service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentity {
    pub service: ServiceName,
    pub spiffe_id: SpiffeId,
    /// Never empty; the first is `<service>.<trust-domain>`.
    pub dns_names: Vec<DnsName>,
}

impl WorkloadIdentity {
    /// The default identity of a service: DNS name
    /// `<service>.<trust-domain>` and SPIFFE ID
    /// `spiffe://<trust-domain>/svc/<service>`.
    pub fn for_service(trust_domain: &TrustDomain, service: ServiceName) -> Self {
        WorkloadIdentity {
            // A label, a dot and a DNS name make a DNS name.
            dns_names: vec![DnsName(format!("{service}.{trust_domain}"))],
            spiffe_id: SpiffeId(format!("spiffe://{trust_domain}/svc/{service}")),
            service,
        }
    }

    /// Node agent `name`'s identity: SPIFFE ID
    /// `spiffe://<trust-domain>/agent/<name>` and no DNS name, so that an
    /// agent can never pose as a service.
    pub fn for_agent(trust_domain: &TrustDomain, name: ServiceName) -> Self {
        WorkloadIdentity {
            dns_names: Vec::new(),
            // A service name is one path segment.
            spiffe_id: SpiffeId(format!("spiffe://{trust_domain}/agent/{name}")),
            service: name,
        }
    }
}

/// A DNS name a certificate may carry: a lower-case host name (RFC 1123
/// labels separated by dots, at most 253 characters), hence ASCII. No
/// wildcards, no IP addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// A name certd stored after parsing it: trusted, not parsed again.
    /// Only for storage backends reading back what they wrote (`store::codec`):
    /// nothing else may skip the parse.
    #[doc(hidden)]
    pub fn from_stored(value: String) -> Self {
        DnsName(value)
    }
}

impl FromStr for DnsName {
    type Err = NameError;

    /// Accepts upper case and lowers it, as DNS compares without case.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let name = value.to_ascii_lowercase();
        if is_dns_name(&name) && name.parse::<std::net::IpAddr>().is_err() {
            Ok(DnsName(name))
        } else {
            Err(NameError::InvalidDnsName(value.to_owned()))
        }
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for DnsName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for DnsName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Longest SPIFFE ID certd accepts.
const MAX_SPIFFE_ID_LEN: usize = 2048;

/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`, the trust domain a DNS
/// name and each path segment of letters, digits, '.', '-' and '_' (none
/// empty, '.' or '..'), hence ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

impl SpiffeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The path after the trust domain, without its leading '/'.
    pub fn path(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        rest.split_once('/').map_or("", |(_, path)| path)
    }

    pub fn trust_domain(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        rest.split_once('/').map_or(rest, |(domain, _)| domain)
    }

    /// An ID certd stored after parsing it: trusted, not parsed again.
    /// Only for storage backends reading back what they wrote (`store::codec`):
    /// nothing else may skip the parse.
    #[doc(hidden)]
    pub fn from_stored(value: String) -> Self {
        SpiffeId(value)
    }
}

impl FromStr for SpiffeId {
    type Err = NameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || NameError::InvalidSpiffeId(value.to_owned());
        let rest = value.strip_prefix("spiffe://").ok_or_else(invalid)?;
        let (domain, path) = rest.split_once('/').ok_or_else(invalid)?;
        let path_valid = path.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
        if value.len() <= MAX_SPIFFE_ID_LEN && is_dns_name(domain) && path_valid {
            Ok(SpiffeId(value.to_owned()))
        } else {
            Err(invalid())
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for SpiffeId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for SpiffeId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// An operator's identity: `spiffe://<trust-domain>/operator/<name>`, where
/// the name is an RFC 1123 label like a service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorIdentity {
    pub trust_domain: TrustDomain,
    pub name: ServiceName,
}

impl OperatorIdentity {
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{}/operator/{}", self.trust_domain, self.name)
    }
}

/// A certificate serial number in canonical form: big-endian bytes without
/// leading zeros, at most 20 bytes (RFC 5280 section 4.1.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Serial(Vec<u8>);

/// Length of the serials certd generates: 20 bytes with the top bit clear
/// (positive) and the next bit set (so no leading zero shortens them), which
/// leaves 158 random bits.
pub(crate) const GENERATED_SERIAL_LEN: usize = 20;
/// In a time-ordered serial, where the random bytes start (after the 0x40
/// byte and five bytes of time).
const TIME_ORDERED_RANDOM_FROM: usize = 6;
/// The largest time five bytes hold (the year 36812).
const TIME_ORDERED_MAX_SECONDS: u64 = (1 << 40) - 1;

impl Serial {
    /// A fresh random serial from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; GENERATED_SERIAL_LEN];
        crate::fsutil::fill_random(&mut bytes);
        bytes[0] = (bytes[0] & 0x7f) | 0x40;
        Serial(bytes.to_vec())
    }

    /// A fresh serial for a certificate issued at `unix_seconds`: the byte
    /// 0x40 (positive, full length), the time as 40 bits big-endian, then
    /// 112 bits from the CSPRNG (the CA/Browser Forum asks for at least 64).
    ///
    /// Why the time first: stores keep records in serial order, so random
    /// serials scatter every insert over the whole tree, and once the store
    /// outgrows its cache each issuance reads and rewrites a cold page
    /// (sled's page cache, PostgreSQL's B-tree). Serials that grow with
    /// time put the inserts at the tree's edge, which stays in memory,
    /// however large the store. The time is no secret: it is the
    /// certificate's notBefore, give or take the backdating.
    pub fn generate_time_ordered(unix_seconds: i64) -> Self {
        let mut bytes = [0u8; GENERATED_SERIAL_LEN];
        crate::fsutil::fill_random(&mut bytes[TIME_ORDERED_RANDOM_FROM..]);
        bytes[0] = 0x40;
        let seconds = u64::try_from(unix_seconds)
            .unwrap_or(0)
            .min(TIME_ORDERED_MAX_SECONDS);
        bytes[1..TIME_ORDERED_RANDOM_FROM].copy_from_slice(&seconds.to_be_bytes()[3..]);
        Serial(bytes.to_vec())
    }

    /// From the bytes of a DER INTEGER; `None` if it is empty, too long or
    /// negative.
    pub fn from_der_integer(bytes: &[u8]) -> Option<Self> {
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            return None;
        }
        Self::from_unsigned(bytes)
    }

    fn from_unsigned(bytes: &[u8]) -> Option<Self> {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let trimmed = &bytes[start..];
        if trimmed.is_empty() || trimmed.len() > 20 {
            return None;
        }
        Some(Serial(trimmed.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A serial certd stored in canonical form: trusted, not parsed again.
    /// Only for storage backends reading back what they wrote (`store::codec`):
    /// nothing else may skip the parse.
    #[doc(hidden)]
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Serial(bytes)
    }

    /// Lower-case hex without separators, the form certd prints.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl FromStr for Serial {
    type Err = NameError;

    /// Accepts hex in either case, with or without colons, as printed by
    /// certd or by `openssl x509 -serial`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || NameError::InvalidSerial(value.to_owned());
        let mut digits: String = value.trim().chars().filter(|c| *c != ':').collect();
        if digits.len() % 2 == 1 {
            digits.insert(0, '0');
        }
        let bytes = hex::decode(&digits).map_err(|_| invalid())?;
        Serial::from_unsigned(&bytes).ok_or_else(invalid)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A lower-case DNS name (RFC 1123 labels separated by dots, at most 253
/// characters), such as a trust domain, a Kubernetes object name or a SAN.
pub fn is_dns_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(is_rfc1123_label)
}

fn is_rfc1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_service(input: &str, valid: bool) {
        assert_eq!(input.parse::<ServiceName>().is_ok(), valid, "{input:?}");
    }

    #[test]
    fn service_names_are_rfc1123_labels() {
        check_service("billing", true);
        check_service("a", true);
        check_service("web-1", true);
        check_service(&"a".repeat(63), true);
        check_service("", false);
        check_service(&"a".repeat(64), false);
        check_service("-web", false);
        check_service("web-", false);
        check_service("Web", false);
        check_service("web.prod", false);
        check_service("web_1", false);
        check_service("wéb", false);
    }

    #[test]
    fn trust_domains_are_dns_names() {
        assert!("certd.internal".parse::<TrustDomain>().is_ok());
        assert!("example".parse::<TrustDomain>().is_ok());
        assert!("".parse::<TrustDomain>().is_err());
        assert!("a..b".parse::<TrustDomain>().is_err());
        assert!("a/b".parse::<TrustDomain>().is_err());
        assert!("A.b".parse::<TrustDomain>().is_err());
    }

    fn check_serial(input: &str, expected: Option<&str>) {
        let parsed = input.parse::<Serial>().ok().map(|s| s.to_hex());
        assert_eq!(parsed.as_deref(), expected, "{input:?}");
    }

    #[test]
    fn serials_parse_in_every_common_spelling() {
        check_serial("4a0b", Some("4a0b"));
        check_serial("4A:0B", Some("4a0b"));
        check_serial("00:4a:0b", Some("4a0b"));
        check_serial("a0b", Some("0a0b"));
        check_serial("", None);
        check_serial("00", None);
        check_serial("xyz", None);
        check_serial(&"11".repeat(21), None);
    }

    #[test]
    fn time_ordered_serials_grow_with_time_and_keep_112_random_bits() {
        let earlier = Serial::generate_time_ordered(1_800_000_000);
        let same_second = Serial::generate_time_ordered(1_800_000_000);
        let later = Serial::generate_time_ordered(1_800_000_001);
        for serial in [&earlier, &same_second, &later] {
            assert_eq!(serial.as_bytes().len(), GENERATED_SERIAL_LEN);
            assert_eq!(serial.as_bytes()[0], 0x40);
            assert_eq!(
                Serial::from_der_integer(serial.as_bytes()).as_ref(),
                Some(serial)
            );
        }
        assert_eq!(
            &earlier.as_bytes()[1..6],
            &1_800_000_000u64.to_be_bytes()[3..]
        );
        assert_ne!(
            earlier, same_second,
            "the random part differs within a second"
        );
        assert!(earlier < later && same_second < later);
        // Times outside five bytes are clamped, never wrapped or negative.
        assert_eq!(&Serial::generate_time_ordered(-5).as_bytes()[1..6], &[0; 5]);
        assert_eq!(
            &Serial::generate_time_ordered(i64::MAX).as_bytes()[1..6],
            &[0xff; 5]
        );
    }

    #[test]
    fn generated_serials_are_positive_full_length_and_distinct() {
        let a = Serial::generate();
        let b = Serial::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), GENERATED_SERIAL_LEN);
        assert_eq!(a.as_bytes()[0] & 0xc0, 0x40);
        assert_eq!(Serial::from_der_integer(a.as_bytes()), Some(a));
    }

    #[test]
    fn spiffe_ids_and_dns_names_parse_only_when_valid() {
        let id: SpiffeId = "spiffe://certd.internal/ns/a/sa/b".parse().unwrap();
        assert_eq!(id.trust_domain(), "certd.internal");
        assert_eq!(id.path(), "ns/a/sa/b");
        for bad in [
            "",
            "spiffe://certd.internal",
            "spiffe://certd.internal/",
            "spiffe://certd.internal/a//b",
            "spiffe://certd.internal/a/../b",
            "spiffe://Bad_Domain/a",
            "https://certd.internal/a",
            "spiffe://certd.internal/é",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad:?}");
        }
        assert_eq!("Web.Example".parse::<DnsName>().unwrap(), "web.example");
        for bad in [
            "",
            "*.example",
            "10.0.0.1",
            "a..b",
            "a_b.example",
            "ünï.example",
        ] {
            assert!(bad.parse::<DnsName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_service_has_default_names_in_the_trust_domain() {
        let td: TrustDomain = "certd.internal".parse().unwrap();
        let identity = WorkloadIdentity::for_service(&td, "billing".parse().unwrap());
        assert_eq!(identity.spiffe_id, "spiffe://certd.internal/svc/billing");
        assert_eq!(identity.dns_names, ["billing.certd.internal"]);
    }
}
