//! The JWT-SVID signing keys: one ES256 (P-256) key per epoch of
//! `rotation`, derived from the CA's JWT master secret.
//!
//! Why derived: every replica of certd must sign with, and publish, the
//! same keys, without a private key ever entering the shared database. Each
//! replica holds the master secret (`DATA_DIR/jwt-master.key`, 0600,
//! copied with the CA's other files) and computes key *e* as
//! `HMAC-SHA256(master, "certd jwt-svid ES256 epoch <e> #<n>")`, taking the
//! first counter *n* whose output is a valid P-256 scalar. So the schedule
//! needs no state and no coordination:
//!
//! - key *e* signs from `e·rotation` until `(e+1)·rotation`;
//! - it is published `publish_ahead` before it signs (verifiers fetch it
//!   before they meet a token it signed) and until `max_ttl` after it
//!   stopped signing (the last token it signed has expired by then).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use zeroize::Zeroizing;

use crate::fsutil;

/// Length of the master secret.
const MASTER_LEN: usize = 32;

/// When keys sign and how long they stay published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySchedule {
    /// How long each key signs.
    pub rotation: Duration,
    /// How long before it signs a key is published.
    pub publish_ahead: Duration,
    /// The longest lifetime of a token: how long a key stays published
    /// after it stopped signing.
    pub max_ttl: Duration,
}

/// One epoch's key: its id, its signing half and its public point.
pub struct JwtKey {
    pub kid: String,
    pub epoch: u64,
    /// PKCS#8 DER, for `jsonwebtoken`'s signer.
    pkcs8: Zeroizing<Vec<u8>>,
    /// The public point's coordinates, base64url (JWK `x` and `y`).
    pub x: String,
    pub y: String,
}

impl std::fmt::Debug for JwtKey {
    /// Never the private half.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    pub fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8)
    }
}

/// The master secret and the keys derived from it so far.
pub struct JwtKeys {
    master: Zeroizing<[u8; MASTER_LEN]>,
    pub schedule: KeySchedule,
    derived: Mutex<BTreeMap<u64, Arc<JwtKey>>>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// Why the master secret could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("JWT master secret {path}: {reason}")]
pub struct KeyFileError {
    pub path: String,
    pub reason: String,
}

impl JwtKeys {
    /// Loads `path`, creating it (0600, 32 random bytes as hex) if it does
    /// not exist: at `certd init`, or at the first start of a data
    /// directory made before JWT-SVIDs.
    pub fn load_or_create(path: &Path, schedule: KeySchedule) -> Result<Self, KeyFileError> {
        let error = |reason: String| KeyFileError {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            let mut secret = Zeroizing::new([0u8; MASTER_LEN]);
            fsutil::fill_random(secret.as_mut());
            let text = Zeroizing::new(hex::encode(secret.as_ref()));
            match fsutil::create_new_file(path, text.as_bytes(), fsutil::SECRET_FILE_MODE) {
                Ok(()) => {}
                // Another process (a replica's first start) made it first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(error(format!("cannot create it: {e}"))),
            }
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?,
        );
        let mut master = Zeroizing::new([0u8; MASTER_LEN]);
        hex::decode_to_slice(text.trim(), master.as_mut())
            .map_err(|_| error(format!("must hold {MASTER_LEN} bytes as hex")))?;
        Ok(Self::from_master(master, schedule))
    }

    pub fn from_master(master: Zeroizing<[u8; MASTER_LEN]>, schedule: KeySchedule) -> Self {
        JwtKeys {
            master,
            schedule,
            derived: Mutex::new(BTreeMap::new()),
        }
    }

    fn epoch_at(&self, unix: i64) -> u64 {
        let rotation = self.schedule.rotation.as_secs().max(1);
        u64::try_from(unix).unwrap_or(0) / rotation
    }

    /// The key that signs at `unix`.
    pub fn signing_key(&self, unix: i64) -> Arc<JwtKey> {
        self.key(self.epoch_at(unix))
    }

    /// Every key a verifier needs at `unix`, oldest first: those signing
    /// now or within `publish_ahead`, and those that stopped less than
    /// `max_ttl` ago.
    pub fn published(&self, unix: i64) -> Vec<Arc<JwtKey>> {
        let ahead = secs(self.schedule.publish_ahead);
        let behind = secs(self.schedule.max_ttl);
        let first = self.epoch_at(unix.saturating_sub(behind));
        let last = self.epoch_at(unix.saturating_add(ahead));
        (first..=last).map(|epoch| self.key(epoch)).collect()
    }

    /// How many times the published set has changed by `unix` (a key added
    /// or retired): grows with every change, and is the same on every
    /// replica. The SPIFFE bundle's `spiffe_sequence`.
    pub fn sequence(&self, unix: i64) -> u64 {
        let added = self.epoch_at(unix.saturating_add(secs(self.schedule.publish_ahead))) + 1;
        let retired = self.epoch_at(unix.saturating_sub(secs(self.schedule.max_ttl)));
        added + retired
    }

    /// Key `epoch`, derived once and then remembered (only the keys near
    /// now are ever asked for; old ones are forgotten).
    fn key(&self, epoch: u64) -> Arc<JwtKey> {
        let mut derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = derived.get(&epoch) {
            return key.clone();
        }
        let key = Arc::new(derive(&self.master, epoch));
        derived.insert(epoch, key.clone());
        while derived.len() > 16 {
            derived.pop_first();
        }
        key
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Key `epoch` from the master secret (see the module comment).
fn derive(master: &[u8; MASTER_LEN], epoch: u64) -> JwtKey {
    let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, master);
    let mut counter = 0u32;
    let secret = loop {
        let tag = ring::hmac::sign(
            &mac_key,
            format!("certd jwt-svid ES256 epoch {epoch} #{counter}").as_bytes(),
        );
        // Fails only for zero or a value not below the group order: about
        // once in 2^32 epochs.
        if let Ok(secret) = p256::SecretKey::from_slice(tag.as_ref()) {
            break secret;
        }
        counter += 1;
    };
    let pkcs8 = Zeroizing::new(
        secret
            .to_pkcs8_der()
            .map(|der| der.as_bytes().to_vec())
            .unwrap_or_default(),
    );
    let point = secret.public_key().to_encoded_point(false);
    let coordinate = |bytes: Option<&p256::FieldBytes>| {
        bytes.map(|b| URL_SAFE_NO_PAD.encode(b)).unwrap_or_default()
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, point.as_bytes());
    JwtKey {
        kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]),
        epoch,
        pkcs8,
        x: coordinate(point.x()),
        y: coordinate(point.y()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::from_master(
            Zeroizing::new([7; MASTER_LEN]),
            KeySchedule {
                rotation: Duration::from_secs(100),
                publish_ahead: Duration::from_secs(10),
                max_ttl: Duration::from_secs(30),
            },
        )
    }

    #[test]
    fn keys_rotate_on_schedule_published_ahead_and_kept_until_their_tokens_expire() {
        let keys = keys();
        let kids =
            |unix: i64| -> Vec<u64> { keys.published(unix).iter().map(|k| k.epoch).collect() };
        assert_eq!(keys.signing_key(150).epoch, 1);
        assert_eq!(kids(150), [1]);
        // 10 s before epoch 2 signs, it is published.
        assert_eq!(kids(190), [1, 2]);
        assert_eq!(keys.signing_key(199).epoch, 1);
        assert_eq!(keys.signing_key(200).epoch, 2);
        // Epoch 1 stays until its last token (signed at 199, max 30 s) expired.
        assert_eq!(kids(229), [1, 2]);
        assert_eq!(kids(231), [2]);
        // The sequence grows at every change and only then.
        assert!(keys.sequence(150) < keys.sequence(190));
        assert!(keys.sequence(190) < keys.sequence(231));
        assert_eq!(keys.sequence(150), keys.sequence(160));
    }

    #[test]
    fn every_replica_derives_the_same_keys_and_epochs_differ() {
        let (a, b) = (keys(), keys());
        assert_eq!(a.signing_key(5).kid, b.signing_key(5).kid);
        assert_eq!(a.signing_key(5).x, b.signing_key(5).x);
        assert_ne!(a.signing_key(5).kid, a.signing_key(105).kid);
        let other = JwtKeys::from_master(Zeroizing::new([8; MASTER_LEN]), a.schedule);
        assert_ne!(other.signing_key(5).kid, a.signing_key(5).kid);
    }

    #[test]
    fn the_master_secret_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-master.key");
        let schedule = keys().schedule;
        let first = JwtKeys::load_or_create(&path, schedule).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = JwtKeys::load_or_create(&path, schedule).unwrap();
        assert_eq!(first.signing_key(0).kid, again.signing_key(0).kid);
        std::fs::write(&path, "not hex").unwrap();
        let error = JwtKeys::load_or_create(&path, schedule).unwrap_err();
        assert!(error.to_string().contains("32 bytes as hex"), "{error}");
    }
}
