//! Replay nonces (RFC 8555 §6.5): self-authenticating, so any replica
//! accepts any replica's, and single-use through the store.
//!
//! A nonce is base64url of its issue time (Unix seconds, 8 bytes
//! big-endian), 16 random bytes and an HMAC-SHA256 of both under a key
//! derived from the CA's replica-shared secret. Checking it needs no
//! state: a forged or expired nonce is refused before the store is asked;
//! one that passes is consumed there (`Storage::consume_acme_nonce`), once.

use super::jws::b64;
use super::problem::{Problem, ProblemType};

/// How long a nonce may be used after it was handed out.
pub const NONCE_LIFETIME_SECONDS: i64 = 3600;
/// How long past their expiry used nonces (and other ACME records) are
/// kept before the purge: room for replicas' clocks to differ.
pub const PURGE_MARGIN_SECONDS: i64 = 300;

const TIME_LEN: usize = 8;
const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 32;

/// The key nonces are made and checked with.
pub struct NonceKey(ring::hmac::Key);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey")
    }
}

/// A nonce that passed its check: what the store consumes, and until when
/// it must remember it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedNonce {
    pub bytes: Vec<u8>,
    pub expires_at: i64,
}

impl NonceKey {
    pub fn new(secret: &[u8]) -> Self {
        NonceKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// A fresh nonce, issued at `now`.
    pub fn mint(&self, now: i64) -> String {
        let mut body = Vec::with_capacity(TIME_LEN + RANDOM_LEN + TAG_LEN);
        body.extend_from_slice(&now.to_be_bytes());
        let mut random = [0u8; RANDOM_LEN];
        crate::fsutil::fill_random(&mut random);
        body.extend_from_slice(&random);
        let tag = ring::hmac::sign(&self.0, &body);
        body.extend_from_slice(tag.as_ref());
        b64(&body)
    }

    /// Checks a nonce's form, MAC and age (not whether it was used).
    pub fn check(&self, nonce: &str, now: i64) -> Result<CheckedNonce, Problem> {
        let bad = |why: &str| Problem::new(ProblemType::BadNonce, format!("the nonce {why}"));
        let bytes = super::jws::unb64("the nonce", nonce).map_err(|_| bad("is not base64url"))?;
        if bytes.len() != TIME_LEN + RANDOM_LEN + TAG_LEN {
            return Err(bad("is not one certd handed out"));
        }
        let (body, tag) = bytes.split_at(TIME_LEN + RANDOM_LEN);
        ring::hmac::verify(&self.0, body, tag).map_err(|_| bad("is not one certd handed out"))?;
        let issued_at = <[u8; TIME_LEN]>::try_from(&body[..TIME_LEN])
            .map(i64::from_be_bytes)
            .map_err(|_| bad("is not one certd handed out"))?;
        let expires_at = issued_at.saturating_add(NONCE_LIFETIME_SECONDS);
        if now > expires_at {
            return Err(bad("has expired; ask for a new one"));
        }
        Ok(CheckedNonce {
            bytes: body.to_vec(),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &NonceKey, nonce: &str, now: i64, expected: Result<(), &str>) {
        let outcome = key.check(nonce, now).map(drop).map_err(|problem| {
            assert_eq!(problem.kind, ProblemType::BadNonce);
            problem.detail
        });
        match (outcome, expected) {
            (Ok(()), Ok(())) => {}
            (Err(detail), Err(expected)) => assert!(detail.contains(expected), "{detail}"),
            (outcome, expected) => panic!("{nonce}: {outcome:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn a_nonce_checks_on_every_replica_until_it_expires() {
        let key = NonceKey::new(b"shared secret");
        let replica = NonceKey::new(b"shared secret");
        let nonce = key.mint(1000);
        check(&replica, &nonce, 1000, Ok(()));
        check(&replica, &nonce, 1000 + NONCE_LIFETIME_SECONDS, Ok(()));
        check(
            &replica,
            &nonce,
            1001 + NONCE_LIFETIME_SECONDS,
            Err("expired"),
        );
        assert_ne!(key.mint(1000), nonce, "nonces are random");
    }

    #[test]
    fn forged_and_foreign_nonces_are_refused() {
        let key = NonceKey::new(b"shared secret");
        let other = NonceKey::new(b"another CA");
        check(
            &key,
            &other.mint(1000),
            1000,
            Err("not one certd handed out"),
        );
        check(&key, "c2hvcnQ", 1000, Err("not one certd handed out"));
        check(&key, "not base64!", 1000, Err("not base64url"));
        let mut bytes = super::super::jws::unb64("n", &key.mint(1000)).unwrap();
        bytes[3] ^= 1;
        check(&key, &b64(&bytes), 1000, Err("not one certd handed out"));
    }
}
