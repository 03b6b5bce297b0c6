//! The JWT-SVID signing keys: one key per epoch of `rotation`, of the
//! configured algorithm (ES256 on P-256 by default, ES384 on P-384, or
//! RS256 with RSA-2048), derived from the CA's JWT master secret.
//!
//! Why derived: every replica of certd must sign with, and publish, the
//! same keys, without a private key ever entering the shared database. Each
//! replica holds the master secret (`DATA_DIR/jwt-master.key`, 0600,
//! copied with the CA's other files) and computes key *e* from
//! HMAC-SHA256 of the master secret over a label naming the algorithm and
//! the epoch:
//!
//! - ES256: the first counter *n* whose tag of
//!   `"certd jwt-svid ES256 epoch <e> #<n>"` is a valid P-256 scalar;
//! - ES384: the same with `ES384` and HMAC-SHA384 (48 bytes, a P-384
//!   scalar);
//! - RS256: each prime is the smallest prime, at or above a 1024-bit
//!   candidate, that is not 1 modulo 65537. The candidate is the tags of
//!   `"certd jwt-svid RS256 epoch <e> prime <p|q> block <0..3>"` joined,
//!   with its top two bits and its low bit set. Any correct primality test
//!   finds the same prime, so the keys do not depend on a library's key
//!   generator.
//!
//! So the schedule needs no state and no coordination:
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
use p256::elliptic_curve;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use zeroize::Zeroizing;

use crate::fsutil;

/// A JWT-SVID signing algorithm (`[jwt] algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    /// ECDSA on P-256 with SHA-256: small keys and tokens, fast.
    #[default]
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key, for verifiers
    /// that know only RSA.
    Rs256,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 3] = [Self::Es256, Self::Es384, Self::Rs256];

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Rs256 => "RS256",
        }
    }

    pub fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::Es384 => jsonwebtoken::Algorithm::ES384,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl std::fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
            .ok_or_else(|| format!("{name:?} is not one of ES256, ES384, RS256"))
    }
}

/// The public half of a key, as a JWK carries it (base64url fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyParams {
    /// `kty: EC`: the curve's JWK name and the point's coordinates.
    Ec {
        crv: &'static str,
        x: String,
        y: String,
    },
    /// `kty: RSA`: modulus and public exponent.
    Rsa { n: String, e: String },
}

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

/// One epoch's key: its id, its signing half and its public half.
pub struct JwtKey {
    pub kid: String,
    pub epoch: u64,
    pub algorithm: JwtAlgorithm,
    /// DER for `jsonwebtoken`'s signer: PKCS#8 (EC) or PKCS#1 (RSA).
    private_der: Zeroizing<Vec<u8>>,
    pub public: PublicKeyParams,
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
        match self.algorithm {
            JwtAlgorithm::Rs256 => jsonwebtoken::EncodingKey::from_rsa_der(&self.private_der),
            JwtAlgorithm::Es256 | JwtAlgorithm::Es384 => {
                jsonwebtoken::EncodingKey::from_ec_der(&self.private_der)
            }
        }
    }
}

/// The master secret and the keys derived from it so far.
pub struct JwtKeys {
    master: Zeroizing<[u8; MASTER_LEN]>,
    pub schedule: KeySchedule,
    pub algorithm: JwtAlgorithm,
    derived: Mutex<BTreeMap<u64, Arc<JwtKey>>>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("schedule", &self.schedule)
            .field("algorithm", &self.algorithm)
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
    pub fn load_or_create(
        path: &Path,
        schedule: KeySchedule,
        algorithm: JwtAlgorithm,
    ) -> Result<Self, KeyFileError> {
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
        Ok(Self::from_master(master, schedule, algorithm))
    }

    pub fn from_master(
        master: Zeroizing<[u8; MASTER_LEN]>,
        schedule: KeySchedule,
        algorithm: JwtAlgorithm,
    ) -> Self {
        JwtKeys {
            master,
            schedule,
            algorithm,
            derived: Mutex::new(BTreeMap::new()),
        }
    }

    fn epoch_at(&self, unix: i64) -> u64 {
        let rotation = self.schedule.rotation.as_secs().max(1);
        u64::try_from(unix).unwrap_or(0) / rotation
    }

    /// A secret for another use than JWT-SVIDs (ACME nonces, EAB keys),
    /// the same on every replica: HMAC-SHA256 of the master secret over
    /// `label`, which names the use so no two uses share a key.
    pub fn derived_secret(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.master.as_ref());
        let tag = ring::hmac::sign(&key, label.as_bytes());
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(tag.as_ref());
        secret
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
    /// now are ever asked for; old ones are forgotten). An RS256 key takes
    /// tens of milliseconds to derive; the daemon derives the published
    /// keys at start, and each later key is first asked for by `/jwks.json`
    /// or a mint `publish_ahead` before it signs.
    fn key(&self, epoch: u64) -> Arc<JwtKey> {
        let mut derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = derived.get(&epoch) {
            return key.clone();
        }
        let key = Arc::new(derive(&self.master, self.algorithm, epoch));
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
fn derive(master: &[u8; MASTER_LEN], algorithm: JwtAlgorithm, epoch: u64) -> JwtKey {
    let (private_der, public, fingerprinted) = match algorithm {
        JwtAlgorithm::Es256 => {
            let secret: p256::SecretKey =
                ec_scalar(master, ring::hmac::HMAC_SHA256, "ES256", epoch);
            let point = secret.public_key().to_encoded_point(false);
            let der = secret.to_pkcs8_der().map(|der| der.as_bytes().to_vec());
            let public = ec_params("P-256", point.x(), point.y());
            (der.unwrap_or_default(), public, point.as_bytes().to_vec())
        }
        JwtAlgorithm::Es384 => {
            let secret: p384::SecretKey =
                ec_scalar(master, ring::hmac::HMAC_SHA384, "ES384", epoch);
            let point = secret.public_key().to_encoded_point(false);
            let der = secret.to_pkcs8_der().map(|der| der.as_bytes().to_vec());
            let public = ec_params("P-384", point.x(), point.y());
            (der.unwrap_or_default(), public, point.as_bytes().to_vec())
        }
        JwtAlgorithm::Rs256 => rsa_key(master, epoch),
    };
    // The kid: the first 12 bytes of SHA-256 of the public key (the SEC1
    // uncompressed point, or the RSA modulus), base64url.
    let digest = ring::digest::digest(&ring::digest::SHA256, &fingerprinted);
    JwtKey {
        kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]),
        epoch,
        algorithm,
        private_der: Zeroizing::new(private_der),
        public,
    }
}

/// An EC secret scalar: the first counter whose HMAC tag is one (fails only
/// for zero or a value not below the group order: about once in 2^32).
fn ec_scalar<C>(
    master: &[u8; MASTER_LEN],
    hmac: ring::hmac::Algorithm,
    name: &str,
    epoch: u64,
) -> elliptic_curve::SecretKey<C>
where
    C: elliptic_curve::Curve,
{
    let mac_key = ring::hmac::Key::new(hmac, master);
    let mut counter = 0u32;
    loop {
        let label = format!("certd jwt-svid {name} epoch {epoch} #{counter}");
        let tag = ring::hmac::sign(&mac_key, label.as_bytes());
        if let Ok(secret) = elliptic_curve::SecretKey::<C>::from_slice(tag.as_ref()) {
            return secret;
        }
        counter += 1;
    }
}

fn ec_params<B: AsRef<[u8]>>(crv: &'static str, x: Option<&B>, y: Option<&B>) -> PublicKeyParams {
    let coordinate = |bytes: Option<&B>| {
        bytes
            .map(|b| URL_SAFE_NO_PAD.encode(b.as_ref()))
            .unwrap_or_default()
    };
    PublicKeyParams::Ec {
        crv,
        x: coordinate(x),
        y: coordinate(y),
    }
}

/// The RSA public exponent.
const RSA_EXPONENT: u32 = 65537;

/// An RSA-2048 key from the master secret: PKCS#1 DER, its public half and
/// its modulus.
fn rsa_key(master: &[u8; MASTER_LEN], epoch: u64) -> (Vec<u8>, PublicKeyParams, Vec<u8>) {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let exponent = rsa::BigUint::from(RSA_EXPONENT);
    let p = rsa_prime(master, epoch, "p");
    let q = rsa_prime(master, epoch, "q");
    // p == q, or a key `rsa` refuses, would need two colliding 1024-bit
    // HMAC outputs: not a case to handle beyond not panicking.
    let Ok(key) = rsa::RsaPrivateKey::from_p_q(p, q, exponent) else {
        let public = PublicKeyParams::Rsa {
            n: String::new(),
            e: String::new(),
        };
        return (Vec::new(), public, Vec::new());
    };
    let der = key
        .to_pkcs1_der()
        .map(|der| der.as_bytes().to_vec())
        .unwrap_or_default();
    let modulus = key.n().to_bytes_be();
    let public = PublicKeyParams::Rsa {
        n: URL_SAFE_NO_PAD.encode(&modulus),
        e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    };
    (der, public, modulus)
}

/// One 1024-bit prime of an RS256 key (see the module comment).
fn rsa_prime(master: &[u8; MASTER_LEN], epoch: u64, which: &str) -> rsa::BigUint {
    let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, master);
    let mut candidate_bytes = Zeroizing::new(Vec::with_capacity(128));
    for block in 0..4 {
        let label = format!("certd jwt-svid RS256 epoch {epoch} prime {which} block {block}");
        candidate_bytes.extend_from_slice(ring::hmac::sign(&mac_key, label.as_bytes()).as_ref());
    }
    candidate_bytes[0] |= 0xc0;
    candidate_bytes[127] |= 1;
    let mut candidate = rsa::BigUint::from_bytes_be(&candidate_bytes);
    let two = rsa::BigUint::from(2u32);
    let exponent = rsa::BigUint::from(RSA_EXPONENT);
    let one = rsa::BigUint::from(1u32);
    loop {
        if &candidate % &exponent != one && num_bigint_dig::prime::probably_prime(&candidate, 20) {
            return candidate;
        }
        candidate += &two;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> KeySchedule {
        KeySchedule {
            rotation: Duration::from_secs(100),
            publish_ahead: Duration::from_secs(10),
            max_ttl: Duration::from_secs(30),
        }
    }

    fn keys() -> JwtKeys {
        JwtKeys::from_master(
            Zeroizing::new([7; MASTER_LEN]),
            schedule(),
            JwtAlgorithm::Es256,
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
        assert_eq!(a.signing_key(5).public, b.signing_key(5).public);
        assert_ne!(a.signing_key(5).kid, a.signing_key(105).kid);
        let other = JwtKeys::from_master(
            Zeroizing::new([8; MASTER_LEN]),
            a.schedule,
            JwtAlgorithm::Es256,
        );
        assert_ne!(other.signing_key(5).kid, a.signing_key(5).kid);
    }

    /// The keys a replica derives must never change with a library
    /// upgrade: these are the first epoch's keys of master `[7; 32]`,
    /// pinned. All three were checked against an independent
    /// implementation of the module comment's scheme (Python, with its
    /// `cryptography` package for the curves), and the ES256 one is what
    /// certd derived before ES384 and RS256 existed.
    #[test]
    fn derived_keys_are_pinned_for_every_algorithm() {
        let key = |algorithm| {
            JwtKeys::from_master(Zeroizing::new([7; MASTER_LEN]), schedule(), algorithm)
                .signing_key(5)
        };
        let es256 = key(JwtAlgorithm::Es256);
        let es384 = key(JwtAlgorithm::Es384);
        let rs256 = key(JwtAlgorithm::Rs256);
        let pinned: Vec<&str> = vec![&es256.kid, &es384.kid, &rs256.kid]
            .into_iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            pinned,
            ["P6PheZMsWPrZUvAs", "quX3-aMNAcr5Imc9", "2IocRsEL-jhAETLQ"]
        );
        match &es384.public {
            PublicKeyParams::Ec { crv, x, .. } => {
                assert_eq!(*crv, "P-384");
                assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 48);
            }
            other => panic!("{other:?}"),
        }
        match &rs256.public {
            PublicKeyParams::Rsa { n, e } => {
                assert_eq!(URL_SAFE_NO_PAD.decode(n).unwrap().len(), 256, "2048 bits");
                assert_eq!(e, "AQAB");
            }
            other => panic!("{other:?}"),
        }
        // Every key signs what its own public half verifies.
        for key in [es256, es384, rs256] {
            let signature =
                jsonwebtoken::crypto::sign(b"m", &key.encoding_key(), key.algorithm.jsonwebtoken())
                    .unwrap();
            let decoding = match &key.public {
                PublicKeyParams::Ec { x, y, .. } => {
                    jsonwebtoken::DecodingKey::from_ec_components(x, y).unwrap()
                }
                PublicKeyParams::Rsa { n, e } => {
                    jsonwebtoken::DecodingKey::from_rsa_components(n, e).unwrap()
                }
            };
            assert!(
                jsonwebtoken::crypto::verify(
                    &signature,
                    b"m",
                    &decoding,
                    key.algorithm.jsonwebtoken()
                )
                .unwrap(),
                "{}",
                key.algorithm
            );
        }
    }

    #[test]
    fn the_master_secret_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-master.key");
        let schedule = keys().schedule;
        let es256 = JwtAlgorithm::Es256;
        let first = JwtKeys::load_or_create(&path, schedule, es256).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = JwtKeys::load_or_create(&path, schedule, es256).unwrap();
        assert_eq!(first.signing_key(0).kid, again.signing_key(0).kid);
        std::fs::write(&path, "not hex").unwrap();
        let error = JwtKeys::load_or_create(&path, schedule, es256).unwrap_err();
        assert!(error.to_string().contains("32 bytes as hex"), "{error}");
    }
}
