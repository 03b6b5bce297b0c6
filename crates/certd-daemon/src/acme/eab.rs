//! External account binding (RFC 8555 §7.3.4), bound to a registration
//! entry.
//!
//! `certd acme eab create` makes a key id (random) and hands out its HMAC
//! key, which is derived from the CA's replica-shared secret and the key
//! id, so the store never holds it: only the key id, the entry, the expiry
//! and whether it was used ([`EabRecord`]). A new account presents an
//! inner JWS signed with the HMAC key over its own account key; the key id
//! is then used up and the account bound to the entry.

use zeroize::Zeroizing;

use super::jws::{Jwk, Jws, b64};
use super::problem::{Problem, ProblemType};
use super::records::EabRecord;

/// The label the EAB secret is derived from the CA's master secret under.
pub const EAB_SECRET_LABEL: &str = "certd acme eab";
/// Default and longest lifetime of an EAB key.
pub const DEFAULT_EAB_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
pub const MAX_EAB_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Derives HMAC keys from key ids.
pub struct EabKeys(ring::hmac::Key);

impl std::fmt::Debug for EabKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EabKeys")
    }
}

impl EabKeys {
    pub fn new(secret: &[u8]) -> Self {
        EabKeys(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// A new random key id (128 bits, base64url) whose id and HMAC key
    /// (base64url) both do not start with `-`: operators pass them on
    /// command lines (`certbot --eab-kid K --eab-hmac-key H`), where a
    /// leading `-` reads as an option (one value in 64 would).
    pub fn new_key_id(&self) -> String {
        loop {
            let mut random = [0u8; 16];
            crate::fsutil::fill_random(&mut random);
            let key_id = b64(&random);
            if !key_id.starts_with('-') && !b64(&self.hmac_key(&key_id)).starts_with('-') {
                return key_id;
            }
        }
    }

    /// The HMAC key of `key_id` (32 bytes), the same on every replica.
    pub fn hmac_key(&self, key_id: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            ring::hmac::sign(&self.0, key_id.as_bytes())
                .as_ref()
                .to_vec(),
        )
    }

    /// Checks a new account's `externalAccountBinding` (a JWS in flattened
    /// form): HS256 under the HMAC key of its `kid`, `url` the newAccount
    /// URL, no nonce, payload the account's key. Returns the key id; the
    /// caller checks its record (unused, unexpired) and uses it up.
    pub fn check_binding(
        &self,
        binding: &serde_json::Value,
        new_account_url: &str,
        account_key: &Jwk,
    ) -> Result<String, Problem> {
        let inner = Jws::parse(binding.to_string().as_bytes()).map_err(|problem| {
            Problem::malformed(format!("the external account binding: {}", problem.detail))
        })?;
        let key_id = inner.header.kid.clone().ok_or_else(|| {
            Problem::malformed("the external account binding has no kid (the EAB key id)")
        })?;
        if inner.header.nonce.is_some() || inner.header.jwk.is_some() {
            return Err(Problem::malformed(
                "the external account binding's header may not carry a nonce or a jwk",
            ));
        }
        if inner.header.url.as_deref() != Some(new_account_url) {
            return Err(Problem::unauthorized(format!(
                "the external account binding's url must be {new_account_url}"
            )));
        }
        let payload: serde_json::Value = inner.json()?;
        if Jwk::from_value(&payload).ok().as_ref() != Some(account_key) {
            return Err(Problem::unauthorized(
                "the external account binding does not bind the key that signed the request",
            ));
        }
        inner.verify_hs256(&self.hmac_key(&key_id))?;
        Ok(key_id)
    }
}

/// Whether an EAB key may bind a new account at `now`.
pub fn usable(record: Option<&EabRecord>, key_id: &str, now: i64) -> Result<(), Problem> {
    let refused = |why: &str| {
        Problem::new(
            ProblemType::Unauthorized,
            format!("external account binding key {key_id} {why}"),
        )
    };
    match record {
        None => Err(refused("is unknown")),
        Some(record) if record.used => Err(refused("was already used")),
        Some(record) if record.expires_at < now => Err(refused("has expired")),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::jws::tests::TestKey;

    /// Key ids and HMAC keys go on command lines: none starts with `-`.
    #[test]
    fn key_ids_and_hmac_keys_never_start_with_a_dash() {
        let keys = EabKeys::new(&[7u8; 32]);
        for _ in 0..2_000 {
            let key_id = keys.new_key_id();
            assert!(!key_id.starts_with('-'), "{key_id}");
            assert_eq!(key_id.len(), 22);
            let hmac_key = b64(&keys.hmac_key(&key_id));
            assert!(!hmac_key.starts_with('-'), "{hmac_key}");
        }
    }

    fn binding(
        hmac: &[u8],
        kid: &str,
        url: &str,
        payload: &serde_json::Value,
    ) -> serde_json::Value {
        let protected = b64(serde_json::json!({"alg": "HS256", "kid": kid, "url": url})
            .to_string()
            .as_bytes());
        let payload = b64(payload.to_string().as_bytes());
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hmac),
            format!("{protected}.{payload}").as_bytes(),
        );
        serde_json::json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())})
    }

    #[test]
    fn a_binding_verifies_only_with_its_key_url_and_account_key() {
        let keys = EabKeys::new(b"secret");
        let account = TestKey::new();
        let jwk = Jwk::from_value(&account.jwk).unwrap();
        let url = "https://ca/acme/new-account";
        let hmac = keys.hmac_key("kid1");
        let good = binding(&hmac, "kid1", url, &account.jwk);
        assert_eq!(keys.check_binding(&good, url, &jwk).unwrap(), "kid1");

        let kind = |binding: &serde_json::Value, url: &str, key: &Jwk| {
            keys.check_binding(binding, url, key).unwrap_err().kind
        };
        // Another key id's HMAC key.
        let wrong_mac = binding(&keys.hmac_key("kid2"), "kid1", url, &account.jwk);
        assert_eq!(kind(&wrong_mac, url, &jwk), ProblemType::Unauthorized);
        // Another URL.
        let elsewhere = binding(&hmac, "kid1", "https://ca/acme/other", &account.jwk);
        assert_eq!(kind(&elsewhere, url, &jwk), ProblemType::Unauthorized);
        // Binding another account key.
        let other = Jwk::from_value(&TestKey::new().jwk).unwrap();
        assert_eq!(kind(&good, url, &other), ProblemType::Unauthorized);
        // Not a JWS.
        assert_eq!(
            kind(&serde_json::json!("x"), url, &jwk),
            ProblemType::Malformed
        );
    }

    #[test]
    fn a_key_is_usable_once_and_until_it_expires() {
        let record = |used, expires_at| EabRecord {
            key_id: "k".into(),
            entry: "e".into(),
            expires_at,
            used,
            created_by: "test".into(),
        };
        assert!(usable(Some(&record(false, 100)), "k", 100).is_ok());
        assert!(
            usable(Some(&record(true, 100)), "k", 50)
                .unwrap_err()
                .detail
                .contains("already used")
        );
        assert!(
            usable(Some(&record(false, 100)), "k", 101)
                .unwrap_err()
                .detail
                .contains("expired")
        );
        assert!(usable(None, "k", 1).unwrap_err().detail.contains("unknown"));
    }
}
