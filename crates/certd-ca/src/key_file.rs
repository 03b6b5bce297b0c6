//! The CA's private key files: plain PKCS#8 PEM (0600), or encrypted at
//! rest (`certd init --encrypt-key`): PKCS#8 `ENCRYPTED PRIVATE KEY`,
//! PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, which OpenSSL reads as well
//! (`openssl pkey -in intermediate.key`).
//!
//! The passphrase comes from a file (`CERTD_KEY_PASSPHRASE_FILE`, or
//! `[ca] key_passphrase_file`), never from an argument, so it stays out of
//! the process list; it is held zeroized and never logged.

use std::path::Path;

use pkcs8::EncryptedPrivateKeyInfo;
use rcgen::KeyPair;
use zeroize::Zeroizing;

use super::CaError;

/// PBKDF2-HMAC-SHA256 rounds (OWASP's 2023 advice). PBKDF2 rather than
/// scrypt because OpenSSL refuses scrypt at the parameters that make it
/// worth using (its default memory limit).
const PBKDF2_ITERATIONS: u32 = 600_000;

/// The PEM label of an encrypted PKCS#8 key.
const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// A passphrase that protects the CA's keys, and the PBKDF2 rounds that
/// keys encrypted with it get.
#[derive(Clone)]
pub struct KeyPassphrase {
    secret: Zeroizing<String>,
    rounds: u32,
}

impl std::fmt::Debug for KeyPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPassphrase(..)")
    }
}

impl KeyPassphrase {
    /// The first line of `path`, which must not be empty.
    pub fn from_file(path: &Path) -> Result<Self, CaError> {
        first_line_of(path, "key passphrase").map(|secret| KeyPassphrase {
            secret,
            rounds: PBKDF2_ITERATIONS,
        })
    }

    /// The same passphrase, encrypting with 1,000 rounds: for unit tests,
    /// where 600,000 cost seconds per key. Reading takes the rounds from
    /// the file, so keys written so read back as any other.
    #[cfg(test)]
    pub(crate) fn cheap_for_tests(mut self) -> Self {
        self.rounds = 1_000;
        self
    }

    fn bytes(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

/// The first line of the secret file `path` (a passphrase, a PIN),
/// zeroized; an empty one is refused.
pub(super) fn first_line_of(path: &Path, what: &str) -> Result<Zeroizing<String>, CaError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| CaError::Io {
        action: "read a secret from",
        path: path.display().to_string(),
        source,
    })?);
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(CaError::Invalid {
            path: path.display().to_string(),
            reason: format!("the {what} file is empty"),
        });
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// The key file's text: plain PEM, or encrypted with `passphrase`.
pub fn encode(
    key: &KeyPair,
    passphrase: Option<&KeyPassphrase>,
) -> Result<Zeroizing<String>, CaError> {
    let Some(passphrase) = passphrase else {
        return Ok(Zeroizing::new(key.serialize_pem()));
    };
    let der = Zeroizing::new(key.serialize_der());
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| CaError::Invalid {
        path: "the new key".into(),
        reason: format!("not PKCS#8: {e}"),
    })?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    certd_core::fsutil::fill_random(&mut salt);
    certd_core::fsutil::fill_random(&mut iv);
    let parameters =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(passphrase.rounds, &salt, &iv)
            .map_err(|e| CaError::Invalid {
                path: "the new key".into(),
                reason: format!("cannot set up its encryption: {e}"),
            })?;
    let encrypted = info
        .encrypt_with_params(parameters, passphrase.bytes())
        .map_err(|e| CaError::Invalid {
            path: "the new key".into(),
            reason: format!("cannot encrypt it: {e}"),
        })?;
    let pem = encrypted
        .to_pem(ENCRYPTED_LABEL, pkcs8::LineEnding::LF)
        .map_err(|e| CaError::Invalid {
            path: "the new key".into(),
            reason: format!("cannot encode it: {e}"),
        })?;
    Ok(Zeroizing::new(pem.to_string()))
}

/// Reads the key at `path`, decrypting it with `passphrase` if it is
/// encrypted; the error says which is missing or wrong.
pub fn decode(
    path: &Path,
    text: &str,
    passphrase: Option<&KeyPassphrase>,
) -> Result<KeyPair, CaError> {
    let invalid = |reason: String| CaError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    if !text.contains(&format!("-----BEGIN {ENCRYPTED_LABEL}-----")) {
        return KeyPair::from_pem(text).map_err(|e| invalid(e.to_string()));
    }
    let Some(passphrase) = passphrase else {
        return Err(invalid(
            "the key is encrypted; give its passphrase in a file: CERTD_KEY_PASSPHRASE_FILE=FILE (or [ca] key_passphrase_file in certd.toml)".into(),
        ));
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| invalid(format!("not PEM: {e}")))?;
    let info = EncryptedPrivateKeyInfo::try_from(pem.contents.as_slice())
        .map_err(|e| invalid(format!("not an encrypted PKCS#8 key: {e}")))?;
    let der = info
        .decrypt(passphrase.bytes())
        .map_err(|_| invalid("cannot decrypt the key: wrong passphrase?".into()))?;
    KeyPair::try_from(der.as_bytes()).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_key_needs_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "correct horse\n").unwrap();
        let passphrase = KeyPassphrase::from_file(&file).unwrap().cheap_for_tests();
        let key = KeyPair::generate().unwrap();
        let text = encode(&key, Some(&passphrase)).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let path = dir.path().join("intermediate.key");
        let back = decode(&path, &text, Some(&passphrase)).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());

        let missing = decode(&path, &text, None).unwrap_err().to_string();
        assert!(missing.contains("CERTD_KEY_PASSPHRASE_FILE"), "{missing}");
        std::fs::write(&file, "wrong\n").unwrap();
        let wrong = KeyPassphrase::from_file(&file).unwrap().cheap_for_tests();
        let refused = decode(&path, &text, Some(&wrong)).unwrap_err().to_string();
        assert!(refused.contains("wrong passphrase"), "{refused}");
        std::fs::write(&file, "").unwrap();
        assert!(KeyPassphrase::from_file(&file).is_err());
        // A plain key reads with or without a passphrase.
        let plain = encode(&key, None).unwrap();
        assert!(decode(&path, &plain, Some(&passphrase)).is_ok());
    }

    /// Keys are written with OWASP's 600,000 rounds: only unit tests
    /// lower it.
    #[test]
    fn keys_are_encrypted_with_600_000_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "correct horse\n").unwrap();
        let passphrase = KeyPassphrase::from_file(&file).unwrap();
        assert_eq!(passphrase.rounds, 600_000);
        assert_eq!(passphrase.cheap_for_tests().rounds, 1_000);
    }
}
