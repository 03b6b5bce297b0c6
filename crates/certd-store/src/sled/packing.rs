//! Certificate records as the `certificates` tree stores them: packed with
//! LZ4 against a dictionary, the record that started it.
//!
//! Owns the `certificate-dictionaries` tree and the packed form of a value.
//! Of a record it reads only who signed its certificate (the codec's bytes
//! in, the same bytes out), and it touches no other tree.
//!
//! Why: two certificates one CA signed share most of their bytes (the
//! issuer's name, its key identifier and the CRL and AIA URLs that name it,
//! the extensions, the trust domain); only the key, the signature, the
//! serial, the times and the names differ. sled writes each record's bytes
//! about three times over (its log's fragments and leaf rewrites, see
//! docs/PERFORMANCE.md, "Retention"), so what a record leaves out is saved
//! on disk three times. LZ4 against another record of the same CA takes a
//! record of 593 bytes to ~316 (measured: docs/PERFORMANCE.md, "Packed
//! certificate records") in under 2 µs; sled's own compression (zstd over
//! every log message) cost half an issuance's CPU.
//!
//! A stored value is either the codec's bytes unchanged (their first byte is
//! a format version, never `PACKED`) or `PACKED` ‖ the dictionary's id ‖
//! the length of the codec's bytes (both postcard varints) ‖ the LZ4 block.
//! A dictionary is the codec's bytes of the first record an issuer's key
//! signed (the certificate's authority key identifier, or its issuer's name
//! where it has none), stored with that issuer under its id (`u32`, big
//! endian, from 0). It is never changed or deleted, so every record packed
//! against it reads back for as long as the store lives; a store holds at
//! most `MAX_DICTIONARIES` of them, all in memory: one per intermediate key
//! that ever signed. A record whose issuer has none starts one (if it is no
//! longer than `MAX_DICTIONARY`), inserted before the record itself: sled
//! recovers a prefix of its log, so no crash leaves a record whose
//! dictionary is missing. The retention purge does not delete dictionaries:
//! the first record of each issuer stays in the store, as a dictionary, for
//! the store's life (it may be a record whose write was then refused).
//!
//! A dictionary that cannot be read is left out when the store opens (and
//! logged): only the records packed against it fail to read, as `Corrupt`,
//! as a damaged record would; the rest of the store opens and serves.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::StoreError;

/// The first byte of a packed value. The codec's first byte is its format
/// version (1 to 5 today), which never reaches this value.
const PACKED: u8 = 0xFF;
/// The most dictionaries a store holds: one per intermediate key that
/// signed, so years of daily rotations. Past it, a new issuer's records are
/// stored as they are (correct, only larger).
const MAX_DICTIONARIES: usize = 4096;
/// Values shorter than this are not worth a dictionary.
const WORTH_PACKING: usize = 128;
/// The longest record that may start a dictionary (certd's are ~600
/// bytes): every record of its issuer is packed against all of it, and it
/// stays in memory.
const MAX_DICTIONARY: usize = 4 * 1024;
/// The longest record a packed value may claim to unpack to (unpacking
/// allocates it first); records are far smaller.
const MAX_UNPACKED: u32 = 1024 * 1024;

/// The dictionaries of one open database.
#[derive(Debug)]
pub(super) struct Packing {
    tree: sled::Tree,
    dictionaries: RwLock<Dictionaries>,
    /// Held while a dictionary is started, so two writers of a new issuer's
    /// first records start one between them.
    starting: Mutex<()>,
}

/// A dictionary's id and bytes.
type Dictionary = (u32, Arc<[u8]>);

#[derive(Debug, Default)]
struct Dictionaries {
    /// By id; `None` for one that could not be read when the store opened.
    bytes: Vec<Option<Arc<[u8]>>>,
    /// The id of each issuer's dictionary.
    by_issuer: HashMap<Vec<u8>, u32>,
}

/// A dictionary as its tree stores it. Field order is the format.
#[derive(Serialize, Deserialize)]
struct StoredDictionary {
    issuer: Vec<u8>,
    dictionary: Vec<u8>,
}

impl Packing {
    /// Loads every dictionary of `tree`. One that cannot be read is left
    /// out, with a warning: the records packed against it read as corrupt.
    pub(super) fn open(tree: sled::Tree) -> Result<Self, StoreError> {
        let mut dictionaries = Dictionaries::default();
        for item in tree.iter() {
            let (key, value) = item?;
            let id = <[u8; 4]>::try_from(key.as_ref()).map(u32::from_be_bytes);
            let Some((id, index)) = id
                .ok()
                .and_then(|id| Some((id, usize::try_from(id).ok()?)))
                .filter(|(_, index)| *index < MAX_DICTIONARIES)
            else {
                let key = hex::encode(&key);
                tracing::warn!(
                    %key,
                    "a certificate dictionary under a key that is not an id; left out"
                );
                continue;
            };
            // The slot is kept even when its dictionary cannot be read, so
            // that no new dictionary ever takes an id records already name.
            if dictionaries.bytes.len() <= index {
                dictionaries.bytes.resize(index + 1, None);
            }
            let stored: StoredDictionary = match postcard::from_bytes(&value) {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(
                        id,
                        %error,
                        "a certificate dictionary cannot be read; its records will read as corrupt"
                    );
                    continue;
                }
            };
            dictionaries.bytes[index] = Some(Arc::from(stored.dictionary));
            dictionaries.by_issuer.insert(stored.issuer, id);
        }
        Ok(Packing {
            tree,
            dictionaries: RwLock::new(dictionaries),
            starting: Mutex::new(()),
        })
    }

    /// How many dictionaries the store holds.
    #[cfg(test)]
    fn dictionaries(&self) -> usize {
        self.read().bytes.len()
    }

    /// The stored form of `encoded` (a record as the codec wrote it), whose
    /// certificate is `der`: packed against its issuer's dictionary. With
    /// `may_start`, an issuer without one starts it (an insert into the
    /// dictionaries' tree); without it (inside a transaction over other
    /// trees) such a record is stored as it is.
    pub(super) fn pack(
        &self,
        encoded: Vec<u8>,
        der: &[u8],
        may_start: bool,
    ) -> Result<Vec<u8>, StoreError> {
        if encoded.len() < WORTH_PACKING || u32::try_from(encoded.len()).is_err() {
            return Ok(encoded);
        }
        let Some(issuer) = issuer_of(der) else {
            return Ok(encoded);
        };
        let found = self.dictionary_of(&issuer);
        let (id, dictionary) = match found {
            Some(found) => found,
            None if may_start => match self.start(&issuer, &encoded)? {
                Some(started) => started,
                None => return Ok(encoded),
            },
            None => return Ok(encoded),
        };
        let packed = packed_against(&encoded, id, &dictionary)?;
        Ok(if packed.len() < encoded.len() {
            packed
        } else {
            encoded
        })
    }

    /// The codec's bytes of a stored value.
    pub(super) fn unpack<'a>(&self, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
        let Some((&PACKED, rest)) = stored.split_first() else {
            return Ok(Cow::Borrowed(stored));
        };
        let corrupt =
            |what: String| StoreError::Corrupt(format!("a packed certificate record {what}"));
        let ((id, length), block) = postcard::take_from_bytes::<(u32, u32)>(rest)
            .map_err(|e| corrupt(format!("has no readable header: {e}")))?;
        if length > MAX_UNPACKED {
            return Err(corrupt(format!("claims {length} bytes")));
        }
        let dictionary = usize::try_from(id)
            .ok()
            .and_then(|index| self.read().bytes.get(index).cloned().flatten())
            .ok_or_else(|| {
                corrupt(format!(
                    "names dictionary {id}, which the store does not hold"
                ))
            })?;
        let expected = usize::try_from(length).map_err(|_| corrupt("is too long".into()))?;
        let unpacked = lz4_flex::block::decompress_with_dict(block, expected, &dictionary)
            .map_err(|e| corrupt(format!("does not unpack: {e}")))?;
        if unpacked.len() != expected {
            return Err(corrupt(format!(
                "unpacks to {} bytes, not the {expected} it claims",
                unpacked.len()
            )));
        }
        Ok(Cow::Owned(unpacked))
    }

    fn dictionary_of(&self, issuer: &[u8]) -> Option<Dictionary> {
        let dictionaries = self.read();
        let id = *dictionaries.by_issuer.get(issuer)?;
        let bytes = dictionaries
            .bytes
            .get(usize::try_from(id).ok()?)?
            .as_ref()?;
        Some((id, bytes.clone()))
    }

    /// Starts `issuer`'s dictionary with `encoded`, unless another writer
    /// just did, the store holds `MAX_DICTIONARIES`, or `encoded` is longer
    /// than `MAX_DICTIONARY`.
    fn start(&self, issuer: &[u8], encoded: &[u8]) -> Result<Option<Dictionary>, StoreError> {
        let _starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = self.dictionary_of(issuer) {
            return Ok(Some(found));
        }
        let count = self.read().bytes.len();
        if count >= MAX_DICTIONARIES || encoded.len() > MAX_DICTIONARY {
            return Ok(None);
        }
        let id = u32::try_from(count)
            .map_err(|_| StoreError::Backend("too many certificate dictionaries".into()))?;
        let stored = StoredDictionary {
            issuer: issuer.to_vec(),
            dictionary: encoded.to_vec(),
        };
        let value = postcard::to_stdvec(&stored).map_err(|e| {
            StoreError::Backend(format!("cannot encode a certificate dictionary: {e}"))
        })?;
        self.tree.insert(id.to_be_bytes(), value)?;
        let dictionary: Arc<[u8]> = Arc::from(stored.dictionary);
        let mut dictionaries = self.dictionaries.write().unwrap_or_else(|p| p.into_inner());
        dictionaries.bytes.push(Some(dictionary.clone()));
        dictionaries.by_issuer.insert(stored.issuer, id);
        Ok(Some((id, dictionary)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Dictionaries> {
        self.dictionaries.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who signed `der`, as a dictionary's issuer: its authority key
/// identifier, or else its issuer's name; `None` when x509-parser does not
/// read it (such a record is stored as it is).
fn issuer_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let key_id =
        certificate
            .extensions()
            .iter()
            .find_map(|extension| match extension.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            });
    Some(match key_id {
        Some(id) => [b"k".as_slice(), &id].concat(),
        None => [b"n".as_slice(), certificate.issuer().as_raw()].concat(),
    })
}

/// The packed value of `encoded` against dictionary `id`.
fn packed_against(encoded: &[u8], id: u32, dictionary: &[u8]) -> Result<Vec<u8>, StoreError> {
    let cannot = |what: String| StoreError::Backend(format!("cannot pack a record: {what}"));
    let length = u32::try_from(encoded.len()).map_err(|_| cannot("longer than 4 GiB".into()))?;
    let mut packed = vec![PACKED];
    packed.extend(postcard::to_stdvec(&(id, length)).map_err(|e| cannot(e.to_string()))?);
    packed.extend(lz4_flex::block::compress_with_dict(encoded, dictionary));
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sled::tests::TestIssuer;

    /// An issuer whose leaves these tests pack.
    struct Issuer(TestIssuer);

    impl Issuer {
        fn new(name: &str) -> Issuer {
            Issuer(TestIssuer::new(name))
        }

        /// A leaf's record for service `n`, as the codec writes it, and
        /// its DER.
        fn record(&self, n: u32) -> (Vec<u8>, Vec<u8>) {
            let record = self.0.record(n);
            (crate::codec::encode(&record).expect("encoded"), record.der)
        }
    }

    fn packing() -> (tempfile::TempDir, sled::Db, Packing) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = sled::open(dir.path()).expect("sled opens");
        let packing = Packing::open(db.open_tree("d").expect("a tree")).expect("no dictionaries");
        (dir, db, packing)
    }

    /// Records of one issuer share one dictionary, are stored in 60% of
    /// their bytes or less (these leaves carry fewer extensions than
    /// certd's, which pack to ~53%), and read back exactly; a second issuer starts a
    /// second dictionary, and both read back after the database is reopened.
    #[test]
    fn records_of_one_issuer_share_a_dictionary_and_read_back_exactly() {
        let (dir, db, packing) = packing();
        let first = Issuer::new("certd intermediate CA 1");
        let mut stored = Vec::new();
        for n in 0..20 {
            let (record, der) = first.record(n);
            let packed = packing.pack(record.clone(), &der, true).expect("packed");
            if n > 0 {
                assert!(
                    packed.len() * 5 <= record.len() * 3,
                    "{} of {}",
                    packed.len(),
                    record.len()
                );
            }
            stored.push((record, packed));
        }
        assert_eq!(packing.dictionaries(), 1);
        let second = Issuer::new("certd intermediate CA 2");
        for n in 0..3 {
            let (record, der) = second.record(n);
            let packed = packing.pack(record.clone(), &der, true).expect("packed");
            stored.push((record, packed));
        }
        assert_eq!(packing.dictionaries(), 2);
        for (record, packed) in &stored {
            assert_eq!(
                packing.unpack(packed).expect("unpacked").as_ref(),
                &record[..]
            );
        }
        drop(packing);
        db.flush().expect("flushed");
        drop(db);
        let db = sled::open(dir.path()).expect("sled opens again");
        let reopened = Packing::open(db.open_tree("d").expect("a tree")).expect("loaded");
        assert_eq!(reopened.dictionaries(), 2);
        for (record, packed) in &stored {
            assert_eq!(
                reopened.unpack(packed).expect("unpacked").as_ref(),
                &record[..]
            );
        }
    }

    /// Within a transaction no dictionary is started: a record of a new
    /// issuer is stored as it is, and reads back; once its issuer has a
    /// dictionary, it is packed there too.
    #[test]
    fn a_record_that_may_not_start_a_dictionary_is_stored_as_it_is() {
        let (_dir, _db, packing) = packing();
        let issuer = Issuer::new("certd intermediate CA");
        let (record, der) = issuer.record(0);
        let stored = packing.pack(record.clone(), &der, false).expect("stored");
        assert_eq!(stored, record);
        assert_eq!(packing.dictionaries(), 0);
        let (other, other_der) = issuer.record(1);
        packing.pack(other, &other_der, true).expect("started");
        let packed = packing.pack(record.clone(), &der, false).expect("packed");
        assert!(packed.len() < record.len());
        assert_eq!(packing.unpack(&packed).expect("read").as_ref(), &record[..]);
    }

    /// Short values, records whose DER x509-parser does not read, and the
    /// codec's bytes of earlier stores are stored and read as they are.
    #[test]
    fn values_that_are_not_packed_read_as_they_are() {
        let (_dir, _db, packing) = packing();
        let short = vec![5, 1, 2, 3];
        assert_eq!(packing.pack(short.clone(), &[], true).expect("kept"), short);
        let (record, mut der) = Issuer::new("CA").record(0);
        der.truncate(100);
        assert_eq!(
            packing.pack(record.clone(), &der, true).expect("kept"),
            record
        );
        assert_eq!(packing.dictionaries(), 0);
        assert!(matches!(packing.unpack(&record), Ok(Cow::Borrowed(b)) if b == &record[..]));
    }

    /// Damaged packed values whose damage the packing can see are reported
    /// corrupt, never a panic: an unknown dictionary, a truncated block, a
    /// length that lies, a header that does not parse. (A flipped literal
    /// byte unpacks to other bytes of the right length: LZ4 blocks carry no
    /// checksum; sled's log checks each message's CRC.)
    #[test]
    fn a_damaged_packed_value_is_corrupt() {
        let (_dir, _db, packing) = packing();
        let issuer = Issuer::new("CA");
        let (first, der) = issuer.record(0);
        packing.pack(first, &der, true).expect("started");
        let (record, der) = issuer.record(1);
        let packed = packing.pack(record.clone(), &der, true).expect("packed");
        let header = |id: u32, length: u32| {
            [
                vec![PACKED],
                postcard::to_stdvec(&(id, length)).expect("a header"),
            ]
            .concat()
        };
        let length = u32::try_from(record.len()).expect("short");
        let block = &packed[header(0, length).len()..];
        let mut cases: Vec<Vec<u8>> = vec![
            [header(9, length), block.to_vec()].concat(),
            packed[..packed.len() - 5].to_vec(),
            vec![PACKED],
            vec![PACKED, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ];
        for lie in [length - 1, length + 1, MAX_UNPACKED + 1] {
            cases.push([header(0, lie), block.to_vec()].concat());
        }
        for case in cases {
            assert!(
                matches!(packing.unpack(&case), Err(StoreError::Corrupt(_))),
                "{case:?}"
            );
        }
    }

    /// A dictionary that cannot be read does not keep the store from
    /// opening: its records read as corrupt, other issuers' records read,
    /// and a new issuer's dictionary does not take its id.
    #[test]
    fn an_unreadable_dictionary_fails_only_its_own_records() {
        let (_dir, _db, packing) = packing();
        let (first, second) = (Issuer::new("CA 1"), Issuer::new("CA 2"));
        let (record_1, der_1) = first.record(0);
        let packed_1 = packing.pack(record_1, &der_1, true).expect("packed");
        let (record_2, der_2) = second.record(0);
        let packed_2 = packing
            .pack(record_2.clone(), &der_2, true)
            .expect("packed");
        packing
            .tree
            .insert(0u32.to_be_bytes(), &[0xFF][..])
            .expect("damaged");
        packing
            .tree
            .insert(b"not an id", &[1][..])
            .expect("inserted");
        let packing = Packing::open(packing.tree.clone()).expect("opens");
        assert!(matches!(
            packing.unpack(&packed_1),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            packing.unpack(&packed_2).expect("read").as_ref(),
            &record_2[..]
        );
        let third = Issuer::new("CA 3");
        let (record_3, der_3) = third.record(0);
        let packed_3 = packing
            .pack(record_3.clone(), &der_3, true)
            .expect("packed");
        assert_eq!(packing.dictionaries(), 3);
        assert!(matches!(
            packing.unpack(&packed_1),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            packing.unpack(&packed_3).expect("read").as_ref(),
            &record_3[..]
        );
    }

    /// Writers of a new issuer's first records at once start one
    /// dictionary between them.
    #[test]
    fn concurrent_first_records_of_an_issuer_start_one_dictionary() {
        let (_dir, _db, packing) = packing();
        let issuer = Issuer::new("CA");
        let records: Vec<_> = (0..8).map(|n| issuer.record(n)).collect();
        let stored: Vec<_> = std::thread::scope(|scope| {
            let writers: Vec<_> = records
                .iter()
                .map(|(record, der)| {
                    let packing = &packing;
                    scope.spawn(move || packing.pack(record.clone(), der, true).expect("packed"))
                })
                .collect();
            writers
                .into_iter()
                .map(|w| w.join().expect("joined"))
                .collect()
        });
        assert_eq!(packing.dictionaries(), 1);
        for ((record, _), stored) in records.iter().zip(&stored) {
            assert_eq!(packing.unpack(stored).expect("read").as_ref(), &record[..]);
        }
    }

    /// The dictionaries are bounded: past `MAX_DICTIONARIES`, a new
    /// issuer's record is stored without starting one.
    #[test]
    fn no_more_than_the_bound_of_dictionaries_is_started() {
        let (_dir, _db, packing) = packing();
        for n in 0..MAX_DICTIONARIES {
            let id = u32::try_from(n).expect("small");
            let stored = StoredDictionary {
                issuer: id.to_be_bytes().to_vec(),
                dictionary: vec![5],
            };
            let value = postcard::to_stdvec(&stored).expect("encoded");
            packing
                .tree
                .insert(id.to_be_bytes(), value)
                .expect("inserted");
        }
        let packing = Packing::open(packing.tree.clone()).expect("loaded");
        assert_eq!(packing.dictionaries(), MAX_DICTIONARIES);
        let (record, der) = Issuer::new("CA").record(0);
        let stored = packing.pack(record.clone(), &der, true).expect("stored");
        assert_eq!(stored, record);
        assert_eq!(packing.dictionaries(), MAX_DICTIONARIES);
    }
}
