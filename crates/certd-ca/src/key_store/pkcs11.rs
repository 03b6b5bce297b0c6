//! The intermediate CA key in a PKCS#11 token (an HSM, a cloud HSM's
//! PKCS#11 library, or SoftHSM2): generated inside the token by `certd init
//! --pkcs11-module …`, marked sensitive and not extractable, so the private
//! key never exists outside it; certd only asks the token to sign.
//!
//! Owns the PKCS#11 library, the login and a pool of sessions (a PKCS#11
//! session runs one operation at a time, so concurrent signers each take
//! their own, up to a cap a token can bear; a signature is made off the
//! async runtime's worker). It must not touch the data directory or the store: where
//! the key is recorded (`ca.toml`) is `files`' business.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeType, KeyType as Pkcs11KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

// `Slot` is PKCS#11's (where a token sits); the CA's is `IntermediateSlot`.
use super::{
    Generated, IntermediateKey, KeyRecord, KeySecrets, KeyStore, Slot as IntermediateSlot,
    no_record,
};
use crate::files::deployment_id;
use crate::{CaError, KeyType};
use certd_core::DataDir;

/// Where the intermediate key is: recorded in `ca.toml` at `certd init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pkcs11KeyRef {
    /// The token vendor's PKCS#11 library.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The key objects' label (`CKA_LABEL`), the same on both halves.
    pub key_label: String,
}

impl Pkcs11KeyRef {
    /// Checks the labels (a token label is at most 32 bytes in PKCS#11)
    /// and records the library's absolute path.
    pub fn new(module: &Path, token_label: &str, key_label: &str) -> Result<Self, String> {
        let printable = |label: &str| !label.is_empty() && !label.chars().any(char::is_control);
        if !printable(token_label) || token_label.len() > 32 {
            return Err(format!(
                "PKCS#11 token label {token_label:?} must be 1 to 32 bytes without control characters"
            ));
        }
        if !printable(key_label) || key_label.len() > 64 {
            return Err(format!(
                "PKCS#11 key label {key_label:?} must be 1 to 64 bytes without control characters"
            ));
        }
        let module = std::path::absolute(module)
            .map_err(|e| format!("PKCS#11 module {}: {e}", module.display()))?;
        if !module.is_file() {
            return Err(format!(
                "PKCS#11 module {} is not a file; give the token's PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so)",
                module.display()
            ));
        }
        Ok(Pkcs11KeyRef {
            module,
            token_label: token_label.to_owned(),
            key_label: key_label.to_owned(),
        })
    }
}

/// The user PIN of the token, read from a file (`CERTD_PKCS11_PIN_FILE`
/// or `[ca] pkcs11_pin_file`), held zeroized and never logged.
#[derive(Clone)]
pub struct Pkcs11Pin(Zeroizing<String>);

impl std::fmt::Debug for Pkcs11Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkcs11Pin(..)")
    }
}

impl Pkcs11Pin {
    /// The first line of `path`, which must not be empty.
    pub fn from_file(path: &Path) -> Result<Self, CaError> {
        crate::key_file::first_line_of(path, "PKCS#11 PIN").map(Pkcs11Pin)
    }

    fn auth(&self) -> AuthPin {
        AuthPin::from(self.0.as_str())
    }
}

/// `key_ref` in words, for logs and errors.
pub(super) fn describe(key_ref: &Pkcs11KeyRef) -> String {
    format!(
        "PKCS#11 token {:?}, key {:?}",
        key_ref.token_label, key_ref.key_label
    )
}

/// The keys of a CA whose intermediates' keys are made in one PKCS#11
/// token, each under a label of its own. Never deletes a key from the
/// token: a retired one is left for the operator to remove.
pub(super) struct Pkcs11KeyStore {
    /// The current key (at `certd init`, the one to make): the token,
    /// and the label the next key's is made from.
    current: Pkcs11KeyRef,
}

impl Pkcs11KeyStore {
    pub(super) fn new(current: Pkcs11KeyRef) -> Self {
        Pkcs11KeyStore { current }
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn describe(&self) -> String {
        describe(&self.current)
    }

    fn generate(
        &self,
        slot: IntermediateSlot,
        _data_dir: &DataDir,
        key_type: KeyType,
        secrets: &KeySecrets,
    ) -> Result<Generated, CaError> {
        let key_ref = match slot {
            IntermediateSlot::Current => self.current.clone(),
            IntermediateSlot::Next | IntermediateSlot::Previous => Pkcs11KeyRef {
                key_label: next_key_label(&self.current.key_label),
                ..self.current.clone()
            },
        };
        let pin = secrets.pkcs11_pin.as_ref().ok_or_else(|| match slot {
            IntermediateSlot::Current => in_token(
                &key_ref,
                "give its PIN in a file: --pkcs11-pin-file FILE".into(),
            ),
            IntermediateSlot::Next | IntermediateSlot::Previous => CaError::RotationRefused(format!(
                "the intermediate key is in PKCS#11 token {:?}, where the next one is made too; give its PIN in a file: --pkcs11-pin-file FILE (or CERTD_PKCS11_PIN_FILE)",
                self.current.token_label
            )),
        })?;
        // Made in the token; only its public half comes out.
        let key = Pkcs11Key::generate(&key_ref, pin, key_type)?;
        Ok(Generated {
            key: IntermediateKey::new(key),
            record: Some(KeyRecord::Pkcs11(key_ref)),
        })
    }

    fn open(
        &self,
        slot: IntermediateSlot,
        record: Option<&KeyRecord>,
        data_dir: &DataDir,
        key_type: KeyType,
        secrets: &KeySecrets,
    ) -> Result<IntermediateKey, CaError> {
        let Some(KeyRecord::Pkcs11(key_ref)) = record else {
            return Err(no_record(slot, data_dir, "the PKCS#11 token"));
        };
        let pin = secrets.pkcs11_pin.as_ref().ok_or_else(|| CaError::Invalid {
            path: slot.state_file(data_dir).display().to_string(),
            reason: format!(
                "the intermediate key is in PKCS#11 token {:?}; give its PIN in a file: CERTD_PKCS11_PIN_FILE=FILE (or [ca] pkcs11_pin_file in certd.toml)",
                key_ref.token_label
            ),
        })?;
        Ok(IntermediateKey::new(Pkcs11Key::open(
            key_ref, pin, key_type,
        )?))
    }

    fn key_file(&self, _slot: IntermediateSlot, _data_dir: &DataDir) -> Option<PathBuf> {
        None
    }

    fn replica_needs(&self) -> Option<String> {
        Some(format!(
            "the intermediate key is in PKCS#11 token {:?} (library {}): every replica needs that token and its PIN (CERTD_PKCS11_PIN_FILE, or [ca] pkcs11_pin_file)",
            self.current.token_label,
            self.current.module.display()
        ))
    }
}

/// The label of the next key in a token: the current one's, with a new
/// 8-hex-digit generation suffix in place of the old one.
fn next_key_label(current: &str) -> String {
    let base = match current.rsplit_once('-') {
        Some((base, suffix))
            if suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            base
        }
        _ => current,
    };
    format!("{base}-{}", deployment_id())
}

/// A signing key in a token, usable by rcgen as an issuer's key.
pub(crate) struct Pkcs11Key {
    key_ref: Pkcs11KeyRef,
    algorithm: &'static rcgen::SignatureAlgorithm,
    /// The public key as X.509 wants it (the EC point), for rcgen.
    public_key: Vec<u8>,
    context: Pkcs11,
    slot: Slot,
    /// Looked up again after a new login: a token that was reset may hand
    /// out new object handles.
    private_key: std::sync::RwLock<ObjectHandle>,
    /// Kept (zeroized on drop) to log in again when a token forgets the
    /// login: an HSM restarted, a network HSM reconnected.
    pin: Pkcs11Pin,
    sessions: SessionPool,
}

/// Most sessions certd opens on a token: tokens allow only so many (small
/// hardware HSMs 16 or fewer per application), and past this a signer
/// waits for a free one rather than failing.
const MAX_SESSIONS: usize = 16;
/// How long a signer waits for a free session before the request fails.
const SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Logged-in sessions: a PKCS#11 session runs one operation at a time, so
/// each concurrent signer takes its own, up to `MAX_SESSIONS`.
struct SessionPool {
    state: Mutex<PoolState>,
    freed: std::sync::Condvar,
}

struct PoolState {
    /// Open and not in use now.
    idle: Vec<Session>,
    /// Open in all, in use or idle.
    open: usize,
}

impl SessionPool {
    fn new(first: Session) -> Self {
        SessionPool {
            state: Mutex::new(PoolState {
                idle: vec![first],
                open: 1,
            }),
            freed: std::sync::Condvar::new(),
        }
    }

    /// An idle session, a new one from `open_new` while under the cap, or
    /// the next one given back, waiting at most `SESSION_WAIT`.
    fn take(
        &self,
        open_new: impl Fn() -> cryptoki::error::Result<Session>,
    ) -> Result<Session, String> {
        let deadline = std::time::Instant::now() + SESSION_WAIT;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(session);
            }
            if state.open < MAX_SESSIONS {
                state.open += 1;
                drop(state);
                return open_new().map_err(|error| {
                    self.discard();
                    format!("cannot open a session: {error}")
                });
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "all {MAX_SESSIONS} sessions stayed busy for {}s",
                    SESSION_WAIT.as_secs()
                ));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn give_back(&self, session: Session) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .idle
            .push(session);
        self.freed.notify_one();
    }

    /// Closes every idle session (from before a lost login) and keeps
    /// `session`, just logged in, instead.
    fn replace_idle(&self, session: Session) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let closed = state.idle.len();
        state.idle.clear();
        state.open = state.open.saturating_sub(closed) + 1;
        state.idle.push(session);
        drop(state);
        self.freed.notify_all();
    }

    /// A session that failed is dropped (closed), and its place freed.
    fn discard(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.freed.notify_one();
    }
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("key", &self.key_ref)
            .finish_non_exhaustive()
    }
}

/// The libraries loaded so far, by path. A PKCS#11 library is initialized
/// once per process and finalized when its last handle goes; keeping one
/// handle here means loading the CA twice (the daemon checks it before it
/// binds) never finalizes the library under a key in use.
static LIBRARIES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

fn library(module: &Path) -> Result<Pkcs11, CaError> {
    let mut loaded = LIBRARIES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, context)) = loaded.iter().find(|(path, _)| path == module) {
        return Ok(context.clone());
    }
    let failed = |reason: String| CaError::Invalid {
        path: module.display().to_string(),
        reason,
    };
    let context = Pkcs11::new(module)
        .map_err(|e| failed(format!("cannot load this PKCS#11 library: {e}")))?;
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| failed(format!("the PKCS#11 library did not initialize: {e}")))?;
    loaded.push((module.to_owned(), context.clone()));
    Ok(context)
}

/// What went wrong talking to the token, as one line naming it.
fn token_error(key_ref: &Pkcs11KeyRef, doing: &str, error: cryptoki::error::Error) -> CaError {
    use cryptoki::error::{Error, RvError};
    let reason = match &error {
        Error::Pkcs11(RvError::PinIncorrect, _) => {
            format!("{doing}: the PIN is wrong; check the PIN file")
        }
        Error::Pkcs11(RvError::PinLocked, _) => {
            format!("{doing}: the PIN is locked; unlock it with the token's tools")
        }
        Error::Pkcs11(code, _) => format!("{doing} ({code:?})"),
        other => format!("{doing}: {other}"),
    };
    in_token(key_ref, reason)
}

fn in_token(key_ref: &Pkcs11KeyRef, reason: String) -> CaError {
    CaError::Token {
        token: key_ref.token_label.clone(),
        reason,
    }
}

/// The curve's OID as `CKA_EC_PARAMS` wants it (DER), and the length of
/// an uncompressed point on it.
fn curve(
    key_type: KeyType,
) -> Result<(&'static [u8], usize, &'static rcgen::SignatureAlgorithm), String> {
    match key_type {
        KeyType::EcdsaP256 => Ok((
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            65,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )),
        KeyType::EcdsaP384 => Ok((
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            97,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        )),
        KeyType::Ed25519 => Err(
            "Ed25519 CA keys cannot be kept in a PKCS#11 token yet; use --key-type ecdsa-p256 or ecdsa-p384".into(),
        ),
    }
}

fn find_slot(context: &Pkcs11, key_ref: &Pkcs11KeyRef) -> Result<Slot, CaError> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| token_error(key_ref, "cannot list the library's tokens", e))?;
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|e| token_error(key_ref, "cannot read a token's label", e))?;
        if info.label().trim_end() == key_ref.token_label {
            return Ok(slot);
        }
    }
    Err(in_token(
        key_ref,
        format!(
            "{} has no token with this label; initialize one with the token's tools (softhsm2-util --init-token --free --label {:?})",
            key_ref.module.display(),
            key_ref.token_label
        ),
    ))
}

fn login(
    context: &Pkcs11,
    slot: Slot,
    key_ref: &Pkcs11KeyRef,
    pin: &Pkcs11Pin,
    read_write: bool,
) -> Result<Session, CaError> {
    let session = if read_write {
        context.open_rw_session(slot)
    } else {
        context.open_ro_session(slot)
    }
    .map_err(|e| token_error(key_ref, "cannot open a session", e))?;
    match session.login(UserType::User, Some(&pin.auth())) {
        Ok(()) => Ok(session),
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(session)
        }
        Err(e) => Err(token_error(key_ref, "cannot log in", e)),
    }
}

fn label_template(class: ObjectClass, key_ref: &Pkcs11KeyRef) -> Vec<Attribute> {
    vec![
        Attribute::Class(class),
        Attribute::Label(key_ref.key_label.as_bytes().to_vec()),
    ]
}

impl Pkcs11Key {
    /// Generates the intermediate's key pair in the token: private half
    /// sensitive, not extractable, able only to sign. Refuses if the token
    /// already holds a key with this label.
    pub fn generate(
        key_ref: &Pkcs11KeyRef,
        pin: &Pkcs11Pin,
        key_type: KeyType,
    ) -> Result<Self, CaError> {
        let (params, _, _) = curve(key_type).map_err(|reason| in_token(key_ref, reason))?;
        let context = library(&key_ref.module)?;
        let slot = find_slot(&context, key_ref)?;
        let session = login(&context, slot, key_ref, pin, true)?;
        let existing = session
            .find_objects(&[Attribute::Label(key_ref.key_label.as_bytes().to_vec())])
            .map_err(|e| token_error(key_ref, "cannot search the token", e))?;
        if !existing.is_empty() {
            return Err(in_token(
                key_ref,
                format!(
                    "it already holds objects labelled {:?}; choose another --pkcs11-key-label, or delete them if no CA uses them",
                    key_ref.key_label
                ),
            ));
        }
        let label = key_ref.key_label.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Label(label),
        ];
        session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| token_error(key_ref, "cannot generate the key pair", e))?;
        drop(session);
        Self::open(key_ref, pin, key_type)
    }

    /// Opens the key `key_ref` names, logging in with `pin`.
    pub fn open(
        key_ref: &Pkcs11KeyRef,
        pin: &Pkcs11Pin,
        key_type: KeyType,
    ) -> Result<Self, CaError> {
        let in_token = |reason: String| in_token(key_ref, reason);
        let (_, point_len, algorithm) = curve(key_type).map_err(in_token)?;
        let context = library(&key_ref.module)?;
        let slot = find_slot(&context, key_ref)?;
        let session = login(&context, slot, key_ref, pin, false)?;
        let one = |class: ObjectClass| -> Result<ObjectHandle, CaError> {
            let found = session
                .find_objects(&label_template(class, key_ref))
                .map_err(|e| token_error(key_ref, "cannot search the token", e))?;
            match found.as_slice() {
                [one] => Ok(*one),
                [] => Err(in_token(format!(
                    "no {class} labelled {:?}",
                    key_ref.key_label
                ))),
                _ => Err(in_token(format!(
                    "several {class}s labelled {:?}; certd needs exactly one",
                    key_ref.key_label
                ))),
            }
        };
        let private_key = one(ObjectClass::PRIVATE_KEY)?;
        let public_handle = one(ObjectClass::PUBLIC_KEY)?;
        let attributes = session
            .get_attributes(
                public_handle,
                &[AttributeType::EcPoint, AttributeType::KeyType],
            )
            .map_err(|e| token_error(key_ref, "cannot read the public key", e))?;
        let mut point = None;
        for attribute in attributes {
            match attribute {
                Attribute::EcPoint(bytes) => point = Some(bytes),
                Attribute::KeyType(kind) if kind != Pkcs11KeyType::EC => {
                    return Err(in_token(format!(
                        "the key {:?} is not an EC key",
                        key_ref.key_label
                    )));
                }
                _ => {}
            }
        }
        let public_key = point
            .and_then(|bytes| unwrap_ec_point(&bytes, point_len))
            .ok_or_else(|| {
                in_token(format!(
                    "the key {:?} is not on the CA's curve ({key_type:?})",
                    key_ref.key_label
                ))
            })?;
        Ok(Pkcs11Key {
            key_ref: key_ref.clone(),
            algorithm,
            public_key,
            context,
            slot,
            private_key: std::sync::RwLock::new(private_key),
            pin: pin.clone(),
            sessions: SessionPool::new(session),
        })
    }

    /// Signs `digest` with a session from the pool. When the token has
    /// forgotten the login or the key's handle (it was reset), logs in
    /// again, finds the key again, and tries once more.
    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let failed = |error: &dyn std::error::Error| {
            tracing::error!(token = %self.key_ref.token_label, error = %certd_core::error_kind::with_causes(&error), "the PKCS#11 token did not sign");
            rcgen::Error::RemoteKeyError
        };
        match self.try_sign(digest) {
            Ok(raw) => Ok(raw),
            Err(SignFailure::Token(error)) if lost_login(&error) => {
                tracing::warn!(token = %self.key_ref.token_label, error = %certd_core::error_kind::with_causes(&error), "the PKCS#11 token lost the login; logging in again");
                self.log_in_again().map_err(|e| failed(&e))?;
                self.try_sign(digest).map_err(|e| failed(&e))
            }
            Err(error) => Err(failed(&error)),
        }
    }

    fn try_sign(&self, digest: &[u8]) -> Result<Vec<u8>, SignFailure> {
        // Sessions opened after the login share it.
        let session = self
            .sessions
            .take(|| self.context.open_ro_session(self.slot))
            .map_err(SignFailure::Pool)?;
        let key = *self.private_key.read().unwrap_or_else(|p| p.into_inner());
        match session.sign(&Mechanism::Ecdsa, key, digest) {
            Ok(raw) => {
                self.sessions.give_back(session);
                Ok(raw)
            }
            Err(error) => {
                drop(session);
                self.sessions.discard();
                Err(SignFailure::Token(error))
            }
        }
    }

    /// A new login on a fresh session, the key looked up again, and the
    /// idle sessions (from before) closed.
    fn log_in_again(&self) -> Result<(), CaError> {
        let session = login(&self.context, self.slot, &self.key_ref, &self.pin, false)?;
        let found = session
            .find_objects(&label_template(ObjectClass::PRIVATE_KEY, &self.key_ref))
            .map_err(|e| token_error(&self.key_ref, "cannot search the token", e))?;
        let [key] = found.as_slice() else {
            return Err(in_token(
                &self.key_ref,
                format!(
                    "after logging in again, {} private keys are labelled {:?}",
                    found.len(),
                    self.key_ref.key_label
                ),
            ));
        };
        *self.private_key.write().unwrap_or_else(|p| p.into_inner()) = *key;
        self.sessions.replace_idle(session);
        Ok(())
    }
}

/// Why a signature was not made.
#[derive(Debug, thiserror::Error)]
enum SignFailure {
    /// No session could be had.
    #[error("{0}")]
    Pool(String),
    #[error(transparent)]
    Token(cryptoki::error::Error),
}

/// Whether `error` says the token forgot the login, the session or the
/// key's handle: what a new login cures.
fn lost_login(error: &cryptoki::error::Error) -> bool {
    use cryptoki::error::{Error, RvError};
    matches!(
        error,
        Error::Pkcs11(
            RvError::UserNotLoggedIn
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

/// `CKA_EC_POINT` is the point wrapped in a DER OCTET STRING (PKCS#11
/// 2.40); some tokens give it bare. Either way, the bare uncompressed point
/// of `len` bytes.
fn unwrap_ec_point(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    let point = match bytes {
        [0x04, n, rest @ ..] if usize::from(*n) == len && rest.len() == len => rest,
        [0x04, 0x81, n, rest @ ..] if usize::from(*n) == len && rest.len() == len => rest,
        bare if bare.len() == len => bare,
        _ => return None,
    };
    (point.first() == Some(&0x04)).then(|| point.to_vec())
}

impl rcgen::PublicKeyData for Pkcs11Key {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for Pkcs11Key {
    /// Hashes `message` here and has the token sign the digest (raw
    /// `CKM_ECDSA`, which every token offers), then encodes `r ‖ s` as the
    /// DER `ECDSA-Sig-Value` X.509 wants.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = if self.public_key.len() == 97 {
            ring::digest::digest(&ring::digest::SHA384, message)
        } else {
            ring::digest::digest(&ring::digest::SHA256, message)
        };
        // A token may take milliseconds: on the daemon's runtime, its
        // worker thread is handed over while this waits.
        let sign = || self.sign_digest(digest.as_ref());
        let raw = match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(sign)?
            }
            _ => sign()?,
        };
        ecdsa_der(&raw).ok_or(rcgen::Error::RemoteKeyError)
    }
}

/// `r ‖ s` (two equal halves) as DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let integer = |value: &[u8]| {
        let trimmed: &[u8] = {
            let start = value
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(value.len() - 1);
            &value[start..]
        };
        let mut out = vec![0x02];
        let pad = trimmed.first().is_some_and(|b| b & 0x80 != 0);
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    };
    let body = [integer(r), integer(s)].concat();
    let mut der = vec![0x30];
    if body.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(body.len() as u8);
    der.extend(body);
    Some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        // r with its high bit set gains a zero byte; s with leading zeros
        // loses them.
        let mut raw = vec![0x80; 32];
        raw.extend([0u8; 31]);
        raw.push(0x05);
        let der = ecdsa_der(&raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 3, 0x02, 33]);
        assert_eq!(der[4], 0);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 0x05]);
        // The longest P-384 signature still has a one-byte length.
        let der = ecdsa_der(&[0xff; 96]).unwrap();
        assert_eq!(&der[..5], &[0x30, 2 * (2 + 49), 0x02, 49, 0]);
        for bad in [&[][..], &[1, 2, 3][..], &[1; 200][..]] {
            assert!(ecdsa_der(bad).is_none());
        }
    }

    #[test]
    fn ec_points_are_taken_bare_or_der_wrapped() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(unwrap_ec_point(&point, 65), Some(point.clone()));
        assert_eq!(unwrap_ec_point(&wrapped, 65), Some(point.clone()));
        let mut p384 = vec![0x04];
        p384.extend([9u8; 96]);
        let mut wrapped = vec![0x04, 97];
        wrapped.extend(&p384);
        assert_eq!(unwrap_ec_point(&wrapped, 97), Some(p384));
        assert_eq!(unwrap_ec_point(&point, 97), None, "another curve");
        assert_eq!(unwrap_ec_point(&point[..40], 65), None);
        let mut compressed = point.clone();
        compressed[0] = 0x02;
        assert_eq!(unwrap_ec_point(&compressed, 65), None);
    }

    #[test]
    fn each_key_in_a_token_gets_a_label_of_its_own() {
        let first = next_key_label("certd-intermediate");
        assert!(
            first.starts_with("certd-intermediate-") && first.len() == 27,
            "{first}"
        );
        let second = next_key_label(&first);
        assert!(
            second.starts_with("certd-intermediate-") && second.len() == 27,
            "{second}"
        );
        assert_ne!(first, second);
        assert!(next_key_label("hsm-key-x").starts_with("hsm-key-x-"));
    }

    #[test]
    fn labels_and_modules_are_checked() {
        let module = Path::new("/bin/sh");
        assert!(Pkcs11KeyRef::new(module, "certd", "certd-intermediate").is_ok());
        assert!(Pkcs11KeyRef::new(module, &"x".repeat(33), "k").is_err());
        assert!(Pkcs11KeyRef::new(module, "", "k").is_err());
        assert!(Pkcs11KeyRef::new(module, "t", "a\nb").is_err());
        let error = Pkcs11KeyRef::new(Path::new("/no/such.so"), "t", "k").unwrap_err();
        assert!(error.contains("is not a file"), "{error}");
    }
}
