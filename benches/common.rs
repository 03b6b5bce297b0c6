//! Fixtures shared by the benchmarks: a fresh CA in a temporary directory
//! and CSRs made the way workloads make them.

#![allow(dead_code)]

use std::sync::Arc;

use certd::ca::{CertificateAuthority, InitOptions, KeyType};

pub fn new_ca(dir: &std::path::Path) -> Arc<CertificateAuthority> {
    let options = InitOptions {
        trust_domain: "certd.internal".parse().unwrap(),
        key_type: KeyType::EcdsaP256,
        secrets: Default::default(),
        intermediate_key_in: None,
        public_base_url: "http://127.0.0.1:8080".into(),
        intermediate_lifetime: certd::ca::INTERMEDIATE_LIFETIME,
    };
    certd::ca::init(dir, &options, std::time::SystemTime::now()).unwrap();
    Arc::new(CertificateAuthority::load(dir).unwrap())
}

/// A fresh CA whose leaves carry URLs under `urls` (as a serving daemon's
/// do), so that its CRL shards name theirs.
pub fn new_ca_serving(
    dir: &std::path::Path,
    urls: certd::ca::RevocationUrls,
) -> Arc<CertificateAuthority> {
    drop(new_ca(dir));
    let mut ca = CertificateAuthority::load(dir).unwrap();
    ca.set_revocation_urls(urls);
    Arc::new(ca)
}

pub fn csr_der() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(&key).unwrap().der().to_vec()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}
