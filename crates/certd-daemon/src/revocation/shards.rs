//! Partitioned CRLs (`revocation.crl_shards`): each build splits the
//! revoked serials into shards (`ca::crl_shards` says which serial goes
//! where) and signs each shard with the whole CRL's number and validity and
//! an Issuing Distribution Point naming its URL, for every shard count in
//! use or retired and every intermediate in use. The shards live in the
//! `PublishedCrl` beside the whole CRL, so they share its build, its
//! coalescing and its staleness bound.
//!
//! Replicas share only the whole CRL through the store; a replica that
//! adopts another's signs the shards of exactly its list, with its number
//! and validity (`Revocations::adopt_newest_crl`), so every replica's shards
//! of one number say the same.

use crate::ca::crl_shards::ShardCount;
use crate::ca::{CaError, Intermediate, RevocationUrls, Signers, crl};
use crate::store::RevokedEntry;

/// The shards of one partition of the CRL, signed by one intermediate:
/// shard `i` (DER, with a critical Issuing Distribution Point naming its
/// URL) lists the revoked serials whose value modulo `count` is `i`.
#[derive(Debug)]
pub struct ShardSet {
    pub count: ShardCount,
    pub signer_key_id: Vec<u8>,
    /// By index, `count` of them.
    pub der: Vec<Vec<u8>>,
}

/// Every shard set a build publishes: for each intermediate in use, each
/// shard count in `counts`. None without `urls` (a CA no HTTP listener
/// serves), since then no leaf names a shard.
pub(super) fn build_all(
    signers: &Signers,
    urls: Option<&RevocationUrls>,
    counts: &[ShardCount],
    entries: &[RevokedEntry],
    dating: (u64, i64, i64),
) -> Result<Vec<ShardSet>, CaError> {
    let Some(urls) = urls else {
        return Ok(Vec::new());
    };
    let mut sets = Vec::new();
    for signer in signers.all() {
        for &count in counts {
            sets.push(build_shards(signer, urls, count, entries, dating)?);
        }
    }
    Ok(sets)
}

/// `entries` split into `count` shards, each signed by `signer` with the
/// CRL's number and validity (`dating`) and an Issuing Distribution Point
/// naming the URL its leaves carry.
fn build_shards(
    signer: &Intermediate,
    urls: &RevocationUrls,
    count: ShardCount,
    entries: &[RevokedEntry],
    (number, this_update, next_update): (u64, i64, i64),
) -> Result<ShardSet, CaError> {
    let key_id_hex = signer.key_id_hex();
    let der = count
        .partition(entries, |entry| &entry.serial)
        .into_iter()
        .zip(0..count.get())
        .map(|(listed, index)| {
            let url = urls.shard_url(&key_id_hex, count, index);
            crl::build_shard(signer, listed, number, this_update, next_update, &url)
        })
        .collect::<Result<_, _>>()?;
    Ok(ShardSet {
        count,
        signer_key_id: signer.key_id().to_vec(),
        der,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    use x509_parser::prelude::{CertificateRevocationList, FromDer};

    use super::*;
    use crate::ca::{CertificateAuthority, InitOptions, KeyType};
    use crate::identity::Serial;
    use crate::revocation::{PublishedCrl, RevocationSettings, Revocations};
    use crate::store::SharedStorage;

    const BASE: &str = "http://127.0.0.1:8080";

    /// A CA whose leaves name shards of `count` under `BASE`, and a sled
    /// store, in `dir`.
    fn ca_and_store(
        dir: &std::path::Path,
        count: ShardCount,
    ) -> (Arc<CertificateAuthority>, SharedStorage) {
        let options = InitOptions {
            trust_domain: "certd.internal".parse().unwrap(),
            key_type: KeyType::EcdsaP256,
            secrets: Default::default(),
            intermediate_key_in: None,
            public_base_url: BASE.into(),
            intermediate_lifetime: crate::ca::INTERMEDIATE_LIFETIME,
        };
        let ca_dir = dir.join("ca");
        crate::ca::init(&ca_dir, &options, SystemTime::now()).unwrap();
        let mut ca = CertificateAuthority::load(&ca_dir).unwrap();
        ca.set_revocation_urls(RevocationUrls::new(BASE).with_crl_shards(count));
        let store = crate::store::open(&dir.join("db")).unwrap();
        (Arc::new(ca), store)
    }

    fn settings(count: u64, retired: &[u64]) -> RevocationSettings {
        RevocationSettings {
            crl_shards: ShardCount::new(count).unwrap(),
            crl_retired_shards: retired
                .iter()
                .map(|count| ShardCount::new(*count).unwrap())
                .collect(),
            ..Default::default()
        }
    }

    /// Records and revokes `count` certificates; returns their serials.
    async fn revoke(store: &SharedStorage, count: usize) -> Vec<Serial> {
        let mut serials = Vec::new();
        for _ in 0..count {
            serials.push(super::super::publisher::tests::revoke_one(store).await);
        }
        serials
    }

    /// What a CRL says: its number, the serials it lists, and its Issuing
    /// Distribution Point (critical?, URIs, only user certificates?).
    struct Read {
        number: u64,
        serials: Vec<Vec<u8>>,
        idp: Option<(bool, Vec<String>, bool)>,
    }

    fn read(der: &[u8]) -> Read {
        let (_, crl) = CertificateRevocationList::from_der(der).unwrap();
        let number = crl
            .crl_number()
            .unwrap()
            .to_u64_digits()
            .first()
            .copied()
            .unwrap_or(0);
        let serials = crl
            .iter_revoked_certificates()
            .map(|entry| entry.raw_serial().to_vec())
            .collect();
        let idp = crl.extensions().iter().find_map(|extension| {
            let ParsedExtension::IssuingDistributionPoint(idp) = extension.parsed_extension()
            else {
                return None;
            };
            let uris = match &idp.distribution_point {
                Some(DistributionPointName::FullName(names)) => names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::URI(uri) => Some((*uri).to_owned()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((extension.critical, uris, idp.only_contains_user_certs))
        });
        Read {
            number,
            serials,
            idp,
        }
    }

    fn key_id_hex(crl: &PublishedCrl) -> String {
        hex::encode(&crl.signer_key_id)
    }

    /// Each shard lists exactly the revoked serials that fall in it, with
    /// the whole CRL's number and a critical IDP naming the URL its leaves
    /// carry; the whole CRL lists them all and names no IDP; a retired
    /// count's shards are built beside the current one's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_shard_lists_its_serials_under_an_idp_naming_its_url() {
        let dir = tempfile::tempdir().unwrap();
        let four = ShardCount::new(4).unwrap();
        let (ca, store) = ca_and_store(dir.path(), four);
        let revocations = Revocations::new(ca, store.clone(), settings(4, &[2]));
        let serials = revoke(&store, 40).await;
        let crl = revocations.refresh_crl().await.unwrap();

        let whole = read(&crl.der);
        assert_eq!(whole.serials.len(), serials.len());
        assert!(whole.idp.is_none(), "the whole CRL has no IDP");
        let counts: Vec<u16> = crl.shards.iter().map(|set| set.count.get()).collect();
        assert_eq!(counts, [4, 2], "the count in use, then the retired one");
        for set in &crl.shards {
            assert_eq!(set.der.len(), usize::from(set.count.get()));
            let mut listed = 0;
            for index in 0..set.count.get() {
                let der = crl
                    .shard(&crl.signer_key_id, set.count.get(), index)
                    .unwrap();
                let shard = read(der);
                assert_eq!(shard.number, crl.number);
                let url = format!(
                    "{BASE}/crl/{}/shards/{}/{index}",
                    key_id_hex(&crl),
                    set.count
                );
                assert_eq!(shard.idp, Some((true, vec![url], true)));
                let expected: Vec<Vec<u8>> = serials
                    .iter()
                    .filter(|serial| set.count.shard_of(serial) == index)
                    .map(|serial| serial.as_bytes().to_vec())
                    .collect();
                let mut got = shard.serials.clone();
                got.sort();
                let mut expected_sorted = expected.clone();
                expected_sorted.sort();
                assert_eq!(got, expected_sorted, "shard {index} of {}", set.count);
                listed += shard.serials.len();
            }
            assert_eq!(listed, serials.len(), "every serial in one shard");
        }
        assert!(crl.shard(&crl.signer_key_id, 4, 4).is_none());
        assert!(crl.shard(&crl.signer_key_id, 3, 0).is_none());
        assert!(crl.shard(b"another", 4, 0).is_none());
    }

    /// A replica that adopts another's whole CRL signs the shards of its
    /// list (`crl::entries_of`) with its dating: each shard lists what the
    /// publishing replica's shard of that number lists, in the same order,
    /// with the same number, validity and IDP, only signed again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shards_signed_from_an_adopted_crl_list_what_the_publishers_do() {
        let dir = tempfile::tempdir().unwrap();
        let four = ShardCount::new(4).unwrap();
        let (ca, store) = ca_and_store(dir.path(), four);
        let revocations = Revocations::new(ca.clone(), store.clone(), settings(4, &[]));
        revoke(&store, 25).await;
        let published = revocations.refresh_crl().await.unwrap();

        let entries = crl::entries_of(&published.der).unwrap();
        assert_eq!(entries.len(), 25);
        let dating = (
            published.number,
            published.this_update,
            published.next_update,
        );
        let again = build_all(
            &ca.signers(),
            ca.revocation_urls(),
            &[four],
            &entries,
            dating,
        )
        .unwrap();
        assert_eq!(again.len(), 1);
        for (index, der) in again[0].der.iter().enumerate() {
            let ours = read(der);
            let theirs = read(&published.shards[0].der[index]);
            assert_eq!(ours.number, theirs.number);
            assert_eq!(ours.serials, theirs.serials, "shard {index}");
            assert_eq!(ours.idp, theirs.idp);
            let (_, ours) = CertificateRevocationList::from_der(der).unwrap();
            let (_, theirs) =
                CertificateRevocationList::from_der(&published.shards[0].der[index]).unwrap();
            assert_eq!(ours.last_update(), theirs.last_update());
            assert_eq!(ours.next_update(), theirs.next_update());
            let reasons = |crl: &CertificateRevocationList| {
                crl.iter_revoked_certificates()
                    .map(|entry| (entry.revocation_date, entry.reason_code()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(reasons(&ours), reasons(&theirs));
        }
        assert!(crl::entries_of(b"not a CRL").is_err());
    }

    /// Without shards nothing changes: the build makes the whole CRL only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_shard_means_the_whole_crl_only() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, store) = ca_and_store(dir.path(), ShardCount::WHOLE);
        let revocations = Revocations::new(ca, store.clone(), RevocationSettings::default());
        revoke(&store, 3).await;
        let crl = revocations.refresh_crl().await.unwrap();
        assert!(crl.shards.is_empty());
        assert_eq!(read(&crl.der).serials.len(), 3);
    }
}
