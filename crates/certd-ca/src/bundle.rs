//! The trust bundle as certd distributes it: every root in `bundle.pem`.
//!
//! `bundle.pem` starts as the root alone (`certd init`). An operator, or
//! `certd ca rotate-root`, adds roots to it ahead of their use, so that
//! workloads trust a new root before anything is signed under it; certd
//! then hands out the whole file (in every issuance answer, renewal,
//! `GetTrustBundle`, `/bundle.pem`, the SPIFFE bundle and through agents to
//! the Workload API). The daemon reads the file again when it changes, and
//! accepts it only if every block is a CA certificate, each self-signed,
//! and the CA's own root is among them; otherwise it logs why and keeps the
//! last good bundle. Never writes the file.

use std::path::PathBuf;
use std::sync::Arc;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::pem_encode;

/// The roots workloads are told to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    /// Each root, DER, in the file's order.
    pub roots_der: Vec<Vec<u8>>,
    /// The same, PEM, as written to workloads.
    pub pem: String,
}

impl TrustBundle {
    /// Parses and checks a bundle: only self-signed CA certificates, one of
    /// them `required_root`.
    pub fn parse(text: &str, required_root: &[u8]) -> Result<Self, String> {
        let mut roots_der = Vec::new();
        let mut reader = text.as_bytes();
        for block in rustls_pemfile::certs(&mut reader) {
            let der = block.map_err(|_| "not PEM".to_owned())?;
            let (_, certificate) = X509Certificate::from_der(&der)
                .map_err(|e| format!("a certificate does not parse: {e}"))?;
            let is_ca = certificate
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|constraints| constraints.value.ca);
            let self_signed = certificate.subject() == certificate.issuer()
                && certificate.verify_signature(None).is_ok();
            if !is_ca || !self_signed {
                return Err(format!(
                    "{} is not a self-signed CA certificate (a root)",
                    certificate.subject()
                ));
            }
            roots_der.push(der.to_vec());
        }
        if !roots_der.iter().any(|der| der == required_root) {
            return Err("it does not hold the CA's own root (root.pem); workloads would stop trusting certd".into());
        }
        let pem = roots_der
            .iter()
            .map(|der| pem_encode("CERTIFICATE", der))
            .collect();
        Ok(TrustBundle { roots_der, pem })
    }
}

/// `bundle.pem`, read again whenever it changes (see `watched`).
#[derive(Debug)]
pub(crate) struct TrustBundleFile {
    file: super::watched::WatchedFile<TrustBundle>,
}

impl TrustBundleFile {
    /// Starts from `initial` (read and checked at load).
    pub fn new(path: PathBuf, initial: TrustBundle) -> Self {
        TrustBundleFile {
            file: super::watched::WatchedFile::new(path, "the trust bundle", Some(initial)),
        }
    }

    /// The bundle now; a changed file is accepted only if it holds
    /// `required_root` (the root of the intermediate signing now).
    pub fn current(&self, required_root: &[u8]) -> Arc<TrustBundle> {
        let bundle = self.file.current(|bytes| {
            let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_owned())?;
            TrustBundle::parse(text, required_root)
        });
        // There was a good one at load, and a good one is never dropped.
        bundle.unwrap_or_else(|| {
            Arc::new(TrustBundle {
                roots_der: Vec::new(),
                pem: String::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(name: &str) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.self_signed(&key).unwrap()
    }

    #[test]
    fn only_roots_and_only_with_the_cas_own() {
        let (ours, next) = (root("ours"), root("next"));
        let both = format!("{}{}", ours.pem(), next.pem());
        let bundle = TrustBundle::parse(&both, ours.der()).unwrap();
        assert_eq!(bundle.roots_der.len(), 2);
        assert_eq!(bundle.pem, both);

        let without = TrustBundle::parse(&next.pem(), ours.der()).unwrap_err();
        assert!(without.contains("own root"), "{without}");
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["leaf.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let with_leaf = format!("{}{}", ours.pem(), leaf.pem());
        let refused = TrustBundle::parse(&with_leaf, ours.der()).unwrap_err();
        assert!(refused.contains("not a self-signed CA"), "{refused}");
        assert!(TrustBundle::parse("garbage", ours.der()).is_err());
    }
}
