//! The issuance profiles: exactly which fields and extensions each kind of
//! certificate gets. Nothing here reads a CSR's extensions.

use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::CaError;
use super::csr::SubjectKeyKind;
use crate::identity::{Serial, WorkloadIdentity};

/// How far notBefore is backdated, so that a peer whose clock is slightly
/// behind still accepts a certificate issued a moment ago.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

/// The validity window of a certificate, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// The workload profile: CN and SANs from the identity only, CA:FALSE
/// (critical), digitalSignature (critical; keyEncipherment too for RSA),
/// serverAuth + clientAuth, SKI and AKI.
pub fn workload(
    identity: &WorkloadIdentity,
    key_kind: SubjectKeyKind,
    serial: &Serial,
    validity: &Validity,
) -> CertificateParams {
    let mut params = end_entity(serial, validity);
    params
        .distinguished_name
        .push(DnType::CommonName, identity.service.as_str());
    params.subject_alt_names = vec![dns_san(identity.dns_name()), uri_san(identity.spiffe_id())];
    if matches!(key_kind, SubjectKeyKind::Rsa { .. }) {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params
}

/// The profile of certd's own TLS serving certificate: the configured names
/// (IP addresses where they parse as such), otherwise as a workload.
pub fn server(
    names: &[String],
    serial: &Serial,
    validity: &Validity,
) -> Result<CertificateParams, CaError> {
    let mut params = end_entity(serial, validity);
    let first = names.first().map(String::as_str).unwrap_or("certd");
    params.distinguished_name.push(DnType::CommonName, first);
    for name in names {
        let san = match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(|_| CaError::Invalid {
                path: "server name".into(),
                reason: format!("{name:?} is not a DNS name or IP address"),
            })?),
        };
        params.subject_alt_names.push(san);
    }
    Ok(params)
}

/// The DNS names and URIs a profile puts in the subjectAltName.
pub fn names_of(params: &CertificateParams) -> (Vec<String>, Vec<String>) {
    let mut dns_names = Vec::new();
    let mut uris = Vec::new();
    for san in &params.subject_alt_names {
        match san {
            SanType::DnsName(name) => dns_names.push(name.as_str().to_owned()),
            SanType::URI(uri) => uris.push(uri.as_str().to_owned()),
            SanType::IpAddress(ip) => dns_names.push(ip.to_string()),
            _ => {}
        }
    }
    (dns_names, uris)
}

fn end_entity(serial: &Serial, validity: &Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = timestamp(validity.not_before);
    params.not_after = timestamp(validity.not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

pub(super) fn timestamp(unix_seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn dns_san(name: String) -> SanType {
    // Identity names are built from validated labels, which are IA5.
    SanType::DnsName(
        name.try_into()
            .expect("validated DNS names are IA5 strings"),
    )
}

fn uri_san(uri: String) -> SanType {
    SanType::URI(
        uri.try_into()
            .expect("SPIFFE IDs built from validated labels are IA5 strings"),
    )
}
