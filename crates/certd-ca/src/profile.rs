//! The issuance profiles: exactly which fields and extensions each kind of
//! certificate gets. Nothing here reads a CSR's extensions.

use std::time::Duration;

use rcgen::{
    CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::csr::SubjectKeyKind;
use super::{CaError, IssuerUrls};
use certd_core::identity::{OperatorIdentity, Serial, SpiffeId, WorkloadIdentity};

/// How far notBefore is backdated, so that a peer whose clock is slightly
/// behind still accepts a certificate issued a moment ago.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

/// The validity window of a certificate, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// Which workload certificate: the CA decides, from how the identity was
/// proven. The CN, the SANs and the EKU follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkloadProfile {
    /// An SVID: the service's name as the CN (what certd's own clients,
    /// agents and SPIFFE peers have always been given), the DNS names and
    /// the SPIFFE ID, serverAuth + clientAuth.
    #[default]
    Spiffe,
    /// For an ACME account bound to its entry by EAB (an operator vouched
    /// for it): the entry's SPIFFE ID as well, but the first DNS name as
    /// the CN: web PKI practice (the CN repeats a SAN), and lego and
    /// certbot renew by ordering the names they read from the CN and the
    /// SANs, so a CN that is no DNS name of the order would make every
    /// renewal refused.
    AcmeBound,
    /// For an ACME account without an entry binding, which proved control
    /// of DNS names and nothing else: a web PKI certificate, DNS SANs only
    /// (no SPIFFE ID, so it is not the entry's workload identity), the
    /// first as the CN, serverAuth only (it authenticates no client).
    AcmeUnbound,
}

/// The workload profile: CN and SANs from the identity only (which of them,
/// see [`WorkloadProfile`]), CA:FALSE (critical), digitalSignature
/// (critical; keyEncipherment too for RSA), serverAuth + clientAuth
/// (serverAuth only for `AcmeUnbound`), SKI and AKI.
pub fn workload(
    identity: &WorkloadIdentity,
    profile: WorkloadProfile,
    key_kind: SubjectKeyKind,
    serial: &Serial,
    validity: &Validity,
    revocation_urls: Option<&IssuerUrls>,
) -> CertificateParams {
    let mut params = end_entity(serial, validity);
    if let Some(urls) = revocation_urls {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![urls.crl.clone()],
        }];
        params
            .custom_extensions
            .push(authority_info_access(Some(&urls.ocsp), &urls.ca_issuers));
    }
    let common_name = match (profile, identity.dns_names.first()) {
        (WorkloadProfile::AcmeBound | WorkloadProfile::AcmeUnbound, Some(first)) => first.as_str(),
        _ => identity.service.as_str(),
    };
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let spiffe_id = match profile {
        WorkloadProfile::Spiffe | WorkloadProfile::AcmeBound => {
            Some(uri_san(identity.spiffe_id.as_str().to_owned()))
        }
        WorkloadProfile::AcmeUnbound => None,
    };
    params.subject_alt_names = identity
        .dns_names
        .iter()
        .map(|name| dns_san(name.as_str().to_owned()))
        .chain(spiffe_id)
        .collect();
    if profile == WorkloadProfile::AcmeUnbound {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    }
    if matches!(key_kind, SubjectKeyKind::Rsa { .. }) {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params
}

/// The operator profile: the operator's SPIFFE ID as the only SAN, and
/// serverAuth + clientAuth, as the X509-SVID standard asks of an SVID with
/// an EKU. (It names an operator under `/operator/`, which no workload
/// trusts as a server, so serverAuth grants nothing in practice.)
pub fn operator(
    identity: &OperatorIdentity,
    serial: &Serial,
    validity: &Validity,
) -> CertificateParams {
    let mut params = end_entity(serial, validity);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("operator {}", identity.name));
    params.subject_alt_names = vec![uri_san(identity.spiffe_id())];
    params
}

/// The profile of certd's own TLS serving certificate: the configured names
/// (IP addresses where they parse as such) and certd's own SPIFFE ID (so the
/// certificate is an X509-SVID, what an `https_spiffe` federation peer
/// authenticates the bundle endpoint by), otherwise as a workload.
pub fn server(
    names: &[String],
    spiffe_id: &SpiffeId,
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
    params
        .subject_alt_names
        .push(uri_san(spiffe_id.as_str().to_owned()));
    Ok(params)
}

/// The DNS names and URIs a profile puts in the subjectAltName.
pub(crate) fn names_of(params: &CertificateParams) -> (Vec<String>, Vec<String>) {
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

/// id-pe-authorityInfoAccess.
const AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
/// DER of the OID id-ad-ocsp (1.3.6.1.5.5.7.48.1).
const ID_AD_OCSP_DER: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
/// DER of the OID id-ad-caIssuers (1.3.6.1.5.5.7.48.2).
const ID_AD_CA_ISSUERS_DER: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];

/// The AIA extension (RFC 5280 4.2.2.1): an OCSP access description if
/// given, and a CA Issuers one. rcgen has no builder for it, so its few
/// bytes of DER are written here.
pub(super) fn authority_info_access(ocsp: Option<&str>, ca_issuers: &str) -> CustomExtension {
    let description = |method: &[u8], url: &str| {
        let location = der_tlv(0x86, url.as_bytes()); // [6] IMPLICIT IA5String
        der_tlv(0x30, &[method, &location].concat())
    };
    let mut descriptions = Vec::new();
    if let Some(url) = ocsp {
        descriptions.extend(description(ID_AD_OCSP_DER, url));
    }
    descriptions.extend(description(ID_AD_CA_ISSUERS_DER, ca_issuers));
    CustomExtension::from_oid_content(AUTHORITY_INFO_ACCESS, der_tlv(0x30, &descriptions))
}

/// One DER tag-length-value.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

pub(super) fn timestamp(unix_seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn dns_san(name: String) -> SanType {
    // Only `DnsName`s and certd's own validated server names come here:
    // ASCII by construction, so IA5.
    SanType::DnsName(
        name.try_into()
            .expect("validated DNS names are IA5 strings"),
    )
}

fn uri_san(uri: String) -> SanType {
    SanType::URI(
        uri.try_into()
            .expect("`SpiffeId`s are ASCII by construction, so IA5 strings"),
    )
}
