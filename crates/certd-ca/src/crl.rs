//! Signing a CRL with an intermediate from the revocation index
//! (`revocation` decides when and publishes it), and reading a signed one
//! back; the dating and encoding rules the root's CRL (`root_crl`) shares.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

use super::{CLOCK_SKEW_ALLOWANCE, CaError, Intermediate};
use certd_core::model::RevokedEntry;

/// Builds an X.509 v2 CRL listing `entries`, with the given CRL number and
/// validity, signed by `signer`. The authority key identifier is the
/// signer's subject key identifier.
pub fn build<'a>(
    signer: &Intermediate,
    entries: impl IntoIterator<Item = &'a RevokedEntry>,
    number: u64,
    this_update: i64,
    next_update: i64,
) -> Result<Vec<u8>, CaError> {
    build_scoped(signer, entries, number, this_update, next_update, None)
}

/// Builds one shard of a partitioned CRL (`crl_shards`): as `build`, with a
/// critical Issuing Distribution Point (RFC 5280 section 5.2.5) naming
/// `url`, the URL the shard's leaves carry in their CRL distribution point,
/// and saying the CRL covers end-entity certificates only. A relying party
/// that finds it for a certificate naming another URL (another shard, or
/// the whole CRL) must not take it as that certificate's CRL: OpenSSL
/// refuses such a certificate ("different CRL scope"), so a shard can never
/// vouch for a serial listed in a different one.
pub fn build_shard<'a>(
    signer: &Intermediate,
    entries: impl IntoIterator<Item = &'a RevokedEntry>,
    number: u64,
    this_update: i64,
    next_update: i64,
    url: &str,
) -> Result<Vec<u8>, CaError> {
    let scope = rcgen::CrlIssuingDistributionPoint {
        distribution_point: rcgen::CrlDistributionPoint {
            uris: vec![url.to_owned()],
        },
        scope: Some(rcgen::CrlScope::UserCertsOnly),
    };
    build_scoped(
        signer,
        entries,
        number,
        this_update,
        next_update,
        Some(scope),
    )
}

fn build_scoped<'a>(
    signer: &Intermediate,
    entries: impl IntoIterator<Item = &'a RevokedEntry>,
    number: u64,
    this_update: i64,
    next_update: i64,
    issuing_distribution_point: Option<rcgen::CrlIssuingDistributionPoint>,
) -> Result<Vec<u8>, CaError> {
    let revoked_certs = entries
        .into_iter()
        .map(|entry| RevokedCertParams {
            serial_number: SerialNumber::from_slice(entry.serial.as_bytes()),
            revocation_time: timestamp(entry.revocation.revoked_at),
            reason_code: reason(entry.revocation.reason_code),
            invalidity_date: None,
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: timestamp(this_update),
        next_update: timestamp(next_update),
        crl_number: SerialNumber::from_slice(&minimal_be(number)),
        issuing_distribution_point,
        revoked_certs,
        key_identifier_method: KeyIdMethod::PreSpecified(signer.key_id().to_vec()),
    };
    signer.sign_crl(&params)
}

/// The rcgen reason for an RFC 5280 code.
pub(crate) fn reason(code: u8) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    Some(match code {
        1 => R::KeyCompromise,
        3 => R::AffiliationChanged,
        4 => R::Superseded,
        5 => R::CessationOfOperation,
        6 => R::CertificateHold,
        _ => R::Unspecified,
    })
}

/// The thisUpdate of a CRL signed at `signed_at` (Unix seconds), for every
/// CRL certd signs (the intermediates' and the roots'): backdated like a
/// certificate's notBefore (`CLOCK_SKEW_ALLOWANCE`), so that a relying
/// party whose clock lags a little accepts a CRL signed a moment ago instead
/// of refusing every client ("CRL is not yet valid"). The nextUpdate is
/// still measured from `signed_at`: a CRL is valid no longer than before.
pub fn this_update(signed_at: i64) -> i64 {
    signed_at.saturating_sub(CLOCK_SKEW_ALLOWANCE.as_secs() as i64)
}

/// When a CRL another replica signed was signed, from what it says
/// (`this_update` undone). Never after `now`, nor after the middle of its
/// validity, so that a refresh timed from it comes before its nextUpdate
/// even for a CRL from a certd that did not backdate thisUpdate (taken
/// then for up to a minute younger than it is).
pub fn signed_at(this_update: i64, next_update: i64, now: i64) -> i64 {
    let middle = this_update.saturating_add(next_update.saturating_sub(this_update) / 2);
    this_update
        .saturating_add(CLOCK_SKEW_ALLOWANCE.as_secs() as i64)
        .min(now)
        .min(middle)
}

fn timestamp(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Big-endian bytes of `value` without leading zeros (at least one byte).
pub(crate) fn minimal_be(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    bytes[start..].to_vec()
}

/// The entries a DER CRL lists, in its order, as `build` was given them:
/// serial, revocation time and reason code (0 where it names none). Their
/// certificates' expiry is not in a CRL: `not_after` is `i64::MAX`. For a
/// replica that adopts another's CRL and signs the shards of exactly that
/// list (`crl_shards`), so that every replica's shards with one number say
/// the same.
pub fn entries_of(der: &[u8]) -> Result<Vec<RevokedEntry>, CaError> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer};
    let invalid = |reason: String| CaError::Invalid {
        path: "a CRL another replica published".into(),
        reason,
    };
    let (_, crl) = CertificateRevocationList::from_der(der)
        .map_err(|error| invalid(format!("it does not parse: {error}")))?;
    crl.iter_revoked_certificates()
        .map(|revoked| {
            let serial = certd_core::identity::Serial::from_der_integer(revoked.raw_serial())
                .ok_or_else(|| invalid("a serial is not a positive integer".into()))?;
            let reason_code = revoked.reason_code().map_or(0, |(_, reason)| reason.0);
            Ok(RevokedEntry {
                serial,
                revocation: certd_core::model::Revocation {
                    revoked_at: revoked.revocation_date.timestamp(),
                    reason_code,
                },
                not_after: i64::MAX,
            })
        })
        .collect()
}

/// The authority key identifier of a DER CRL: which intermediate signed it.
pub fn signer_key_id(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer};
    let (_, crl) = CertificateRevocationList::from_der(der).ok()?;
    crl.extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_update_is_backdated_and_the_signing_found_again() {
        let (day, minute) = (86_400, 60);
        assert_eq!(this_update(10_000), 10_000 - minute);
        // (thisUpdate, nextUpdate, now) → when it was signed.
        let check = |this_update, next_update, now, signed| {
            assert_eq!(
                signed_at(this_update, next_update, now),
                signed,
                "{this_update} {next_update} {now}"
            );
        };
        check(10_000 - minute, 10_000 + day, 10_005, 10_000);
        // Never after now (another replica's clock ahead of this one's).
        check(10_000 - minute, 10_000 + day, 9_990, 9_990);
        // Not backdated, the shortest validity: at most its middle.
        check(10_000, 10_000 + minute, 20_000, 10_000 + minute / 2);
    }
}
