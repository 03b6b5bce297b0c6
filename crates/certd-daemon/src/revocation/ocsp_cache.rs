//! The OCSP answer cache's entries: keyed by serial, so that a revocation
//! drops its serial's answers in one removal (`note_revocation`), then by
//! the question asked about that serial.

use std::sync::atomic::Ordering;

use super::{OcspAnswer, Revocations, ocsp};
use crate::identity::Serial;

/// Serials whose OCSP answers are cached, at most; past that the cache
/// starts over.
const OCSP_CACHE_CAPACITY: usize = 100_000;

#[derive(Debug)]
pub(super) struct CachedOcsp {
    /// Which question about the serial it answers (`OcspQuestion`).
    pub question: OcspQuestion,
    pub answer: OcspAnswer,
    /// Rebuild after this moment (half the validity), so a served answer
    /// always has at least half its validity left.
    pub refresh_at: i64,
}

/// Which of the few questions about one serial an OCSP answer answers: the
/// CertID's hash algorithm and the issuer's place in `Signers`. A serial
/// has at most four (two algorithms, two intermediates); the cache is
/// emptied when the signers change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OcspQuestion {
    sha256: bool,
    issuer: usize,
}

impl OcspQuestion {
    pub fn new(id: &x509_ocsp::CertId, issuer: usize) -> Self {
        OcspQuestion {
            sha256: ocsp::is_sha256(id),
            issuer,
        }
    }
}

impl Revocations {
    pub(super) fn cached_ocsp(
        &self,
        serial: &Serial,
        question: OcspQuestion,
        now: i64,
    ) -> Option<OcspAnswer> {
        let cache = self.ocsp_cache.read().unwrap_or_else(|p| p.into_inner());
        let cached = cache
            .get(serial)?
            .iter()
            .find(|cached| cached.question == question)?;
        (now < cached.refresh_at).then(|| cached.answer.clone())
    }

    pub(super) fn cache_ocsp(&self, serial: Serial, cached: CachedOcsp, generation: u64) {
        let mut cache = self.ocsp_cache.write().unwrap_or_else(|p| p.into_inner());
        if self.revocations_seen.load(Ordering::SeqCst) != generation {
            return;
        }
        if cache.len() >= OCSP_CACHE_CAPACITY && !cache.contains_key(&serial) {
            cache.clear();
        }
        let answers = cache.entry(serial).or_default();
        answers.retain(|old| old.question != cached.question);
        answers.push(cached);
    }
}
