//! Revocation (RFC 8555 §7.6), by the ordering account, by an account
//! that proved control of all the certificate's names, or by the
//! certificate's own key, and renewal information (RFC 9773).

use serde::Deserialize;
use serde_json::json;

use super::jws::unb64;
use super::problem::{Problem, ProblemType};
use super::records::{self, AuthzRecord, Status, Stored};
use super::server::{AcmeServer, Answer, Body, KeyMode, Signed, ordered_by, problem_of_issuance};
use super::views::rfc3339;
use crate::authority::Caller;
use crate::ca::RevocationReason;
use crate::identity::Serial;

#[derive(Deserialize)]
struct Revoke {
    certificate: String,
    /// Any integer: one out of u8's range is a bad reason, not a malformed
    /// request.
    reason: Option<i64>,
}

impl AcmeServer {
    /// Whether `account` holds, for every one of `names`, a valid and
    /// unexpired authorization proven by a challenge (RFC 8555 §7.6: such
    /// an account may revoke another's certificate for those names). An
    /// authorization made valid by `--without-challenges` proves no
    /// control of a name, so it does not count.
    async fn controls_all(&self, account: &str, names: &[String]) -> Result<bool, Problem> {
        let now = self.authority.now();
        let authorizations: Vec<Stored<AuthzRecord>> =
            records::list(self.authority.store(), &format!("authz/{account}/")).await?;
        let proven: Vec<&str> = authorizations
            .iter()
            .map(|stored| &stored.value)
            .filter(|authz| {
                authz.status == Status::Valid
                    && authz.expires_at >= now
                    && authz
                        .challenges
                        .iter()
                        .any(|challenge| challenge.status == Status::Valid)
            })
            .map(|authz| authz.identifier.as_str())
            .collect();
        Ok(!names.is_empty()
            && names
                .iter()
                .all(|name| proven.iter().any(|p| p.eq_ignore_ascii_case(name))))
    }

    /// `POST /acme/revoke-cert`: by the account that ordered it, or signed
    /// with the certificate's own key.
    pub async fn revoke_cert(&self, request: Signed) -> Result<Answer, Problem> {
        let peer = request.peer.clone();
        let verified = self.verify(request, KeyMode::Either).await?;
        let payload: Revoke = verified.jws.json()?;
        let der = unb64("the certificate", &payload.certificate)?;
        let (_, certificate) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| Problem::malformed("the certificate does not parse"))?;
        let not_ours = || Problem::unauthorized("certd did not issue this certificate");
        let serial = Serial::from_der_integer(certificate.raw_serial()).ok_or_else(not_ours)?;
        let record = self
            .authority
            .store()
            .certificate(&serial)
            .await?
            .filter(|record| record.der == der)
            .ok_or_else(not_ours)?;
        let caller = match &verified.account {
            Some(account) => {
                let ordered = ordered_by(&record.attestation);
                if ordered != Some(account.value.id.as_str())
                    && !(ordered.is_some()
                        && self
                            .controls_all(&account.value.id, &record.dns_names)
                            .await?)
                {
                    return Err(Problem::unauthorized(
                        "this account neither ordered this certificate nor holds valid authorizations, proven by a challenge, for all of its names",
                    ));
                }
                Self::caller(&account.value.id, &peer)
            }
            None => {
                if !verified.key.is_key_of(certificate.public_key()) {
                    return Err(Problem::unauthorized(
                        "the request is signed neither by an account nor by the certificate's key",
                    ));
                }
                Caller(format!("acme certificate key ({peer})"))
            }
        };
        let reason = match payload.reason {
            None => RevocationReason::Unspecified,
            Some(code) => u8::try_from(code)
                .ok()
                .and_then(RevocationReason::from_code)
                .filter(|reason| *reason != RevocationReason::CertificateHold)
                .ok_or_else(|| {
                    Problem::new(
                        ProblemType::BadRevocationReason,
                        format!(
                            "reason {code} is not one certd takes (0 unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded, 5 cessationOfOperation)"
                        ),
                    )
                })?,
        };
        if record.revocation.is_some() {
            return Err(Problem::new(
                ProblemType::AlreadyRevoked,
                "the certificate is already revoked",
            ));
        }
        self.authority
            .revoke(&caller, &serial.to_hex(), reason)
            .await
            .map_err(|error| problem_of_issuance(&error))?;
        Ok(Answer {
            status: 200,
            body: Body::Empty,
            location: None,
            up: None,
            next: None,
            retry_after: None,
        })
    }

    /// `GET /acme/renewal-info/{certID}` (RFC 9773).
    pub async fn renewal_info(&self, cert_id: &str) -> Result<Answer, Problem> {
        let cert_id = super::ari::CertId::parse(cert_id)?;
        let record = self
            .authority
            .store()
            .certificate(&cert_id.serial)
            .await?
            .filter(|record| {
                crate::ca::authority_key_id(&record.der).as_deref()
                    == Some(cert_id.key_identifier.as_slice())
            })
            .ok_or_else(|| Problem::not_found("certificate"))?;
        let ca = self.authority.ca();
        let signers = ca.signers();
        let renew_now = if record.revocation.is_some() {
            Some(super::ari::RenewNow::Revoked)
        } else {
            match signers.signer_of(&record.der) {
                None => Some(super::ari::RenewNow::IntermediateReplaced),
                Some(signer) if signer.key_id() != signers.current.key_id() => {
                    Some(super::ari::RenewNow::IntermediateReplaced)
                }
                Some(signer) => {
                    let bundle = ca.trust_bundle();
                    let root = signer.root_der().as_ref();
                    (!bundle.roots_der.iter().any(|der| der.as_slice() == root))
                        .then_some(super::ari::RenewNow::RootRetired)
                }
            }
        };
        let (start, end) = super::ari::window(
            record.not_before,
            record.not_after,
            self.authority.now(),
            renew_now,
        );
        let mut answer = Answer::json(
            200,
            json!({
                "suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)},
            }),
        );
        answer.retry_after = Some(super::ari::RETRY_AFTER_SECONDS);
        Ok(answer)
    }
}
