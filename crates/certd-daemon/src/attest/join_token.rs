//! One-time join tokens: random secrets bound to a service, stored only as
//! their SHA-256.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{AttestError, AttestFailure as Error};
use crate::model::Proof;
use crate::selector::SelectorKind;
use crate::store::{JoinTokenRecord, Storage, TokenHash};

/// Every token starts with this, so a leaked one is easy to recognise (and
/// to scan for in logs and repositories).
pub const JOIN_TOKEN_PREFIX: &str = "certd-jt-";
/// `token:<label>`: what a join token proves, the labels its entry names
/// (1 to 128 letters, digits, '.', '_' and '-').
pub static SELECTORS: SelectorKind = SelectorKind {
    name: "token",
    check: |label| {
        Ok(!label.is_empty()
            && label.len() <= 128
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    },
    proven_by_agent: false,
};
/// Random bytes in a token: 256 bits.
const TOKEN_SECRET_LEN: usize = 32;
/// Longest string that could be a token; longer input is refused unhashed.
const MAX_TOKEN_LEN: usize = 128;

/// A join token's secret value, zeroed when dropped and never logged, and
/// its hash, computed once: the store key, the consumed token and the
/// audit id all derive from it.
pub struct JoinToken {
    secret: Zeroizing<String>,
    hash: TokenHash,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<secret>)")
    }
}

impl JoinToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        use base64::Engine;
        let mut secret = Zeroizing::new([0u8; TOKEN_SECRET_LEN]);
        crate::fsutil::fill_random(secret.as_mut_slice());
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_slice());
        Self::new(Zeroizing::new(format!("{JOIN_TOKEN_PREFIX}{encoded}")))
    }

    fn new(secret: Zeroizing<String>) -> Self {
        let hash = Sha256::digest(secret.as_bytes()).into();
        JoinToken { secret, hash }
    }

    /// Wraps a token received from a caller.
    pub fn from_presented(value: &str) -> Result<Self, AttestError> {
        let plausible = value.len() <= MAX_TOKEN_LEN
            && value.starts_with(JOIN_TOKEN_PREFIX)
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if plausible {
            Ok(Self::new(Zeroizing::new(value.to_owned())))
        } else {
            Err(AttestError::InvalidJoinToken)
        }
    }

    /// The secret, to hand to the operator exactly once.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// What the store keys the token by.
    pub fn hash(&self) -> TokenHash {
        self.hash
    }

    /// A non-secret name for audit logs: the first 8 bytes of the hash.
    pub fn id(&self) -> String {
        hex::encode(&self.hash()[..8])
    }

    /// Checks the token against the store without consuming it.
    pub async fn verify(&self, store: &dyn Storage, now: i64) -> Result<JoinTokenRecord, Error> {
        let record = store
            .join_token(&self.hash())
            .await?
            .ok_or(AttestError::InvalidJoinToken)?;
        if record.expires_at <= now {
            return Err(AttestError::ExpiredJoinToken {
                expired_at: record.expires_at,
            }
            .into());
        }
        Ok(record)
    }
}

/// Bootstrap with a one-time join token: proves the `token:` selectors of
/// the entry the token was made for, and is consumed with the record.
#[derive(Debug, Default)]
pub struct JoinTokenAttestor;

#[async_trait::async_trait]
impl super::Attestor for JoinTokenAttestor {
    fn kind(&self) -> &'static str {
        super::kind::JOIN_TOKEN
    }

    fn proves(&self) -> &'static SelectorKind {
        &SELECTORS
    }

    async fn attest(
        &self,
        evidence: &[u8],
        store: &dyn Storage,
        now: i64,
    ) -> Result<super::Proven, Error> {
        let evidence = std::str::from_utf8(evidence).map_err(|_| AttestError::InvalidJoinToken)?;
        let token = JoinToken::from_presented(evidence)?;
        let claim = token.verify(store, now).await?;
        Ok(super::Proven {
            selectors: claim.selectors,
            proof: Proof::Attested {
                kind: super::kind::JOIN_TOKEN.into(),
                detail: token.id(),
            },
            consumes: Some(token.hash()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_accepted_back_and_distinct() {
        let token = JoinToken::generate();
        let again = JoinToken::from_presented(token.expose_secret()).unwrap();
        assert_eq!(token.hash(), again.hash());
        assert_ne!(token.hash(), JoinToken::generate().hash());
        assert_eq!(token.id().len(), 16);
        assert!(!format!("{token:?}").contains(&token.expose_secret()[JOIN_TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn implausible_tokens_are_refused_before_any_lookup() {
        for value in [
            "",
            "abc",
            "certd-jt-a b",
            "certd-jt-é",
            &format!("certd-jt-{}", "a".repeat(200)),
        ] {
            assert_eq!(
                JoinToken::from_presented(value).unwrap_err(),
                AttestError::InvalidJoinToken,
                "{value:?}"
            );
        }
    }
}
