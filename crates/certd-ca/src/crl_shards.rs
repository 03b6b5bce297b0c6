//! Partitioned CRLs: which shard a certificate's revocation is listed in,
//! and the URL that names that shard.
//!
//! With `count` shards, a leaf with serial `s` is listed in shard
//! `s mod count` (the serial read as an unsigned big-endian integer; certd's
//! serials are random, so shards are even). The choice needs no stored
//! state: the serial and the count decide it, and both are in the
//! certificate (the count in its CRL distribution point URL,
//! `{base}/crl/{key-id}/shards/{count}/{index}`). Putting the count in the
//! URL is what lets an operator change it: certificates issued before keep
//! naming the old count's shard, which certd keeps publishing while it is
//! listed in `crl_retired_shards`, and a serial is in the same shard of a
//! given count for ever.
//!
//! Boulder (Let's Encrypt) picks a shard from the serial's random low bytes
//! too, but records the index with the revocation; certd derives it again
//! at every build instead.

use certd_core::identity::Serial;

/// The most shards a CRL may be split into: at 1M revocations, 1,024
/// shards are about 50 KB each, smaller than anyone needs.
pub const MAX_CRL_SHARDS: u16 = 1024;

/// How many shards one intermediate's leaf CRL is split into: 1 (the
/// whole CRL, no shards) to `MAX_CRL_SHARDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardCount(u16);

impl ShardCount {
    /// No partition: leaves name the whole CRL, as before shards existed.
    pub const WHOLE: ShardCount = ShardCount(1);

    /// `count` if it is between 1 and `MAX_CRL_SHARDS`.
    pub fn new(count: u64) -> Option<ShardCount> {
        u16::try_from(count)
            .ok()
            .filter(|count| (1..=MAX_CRL_SHARDS).contains(count))
            .map(ShardCount)
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// Whether leaves name a shard rather than the whole CRL.
    pub fn is_sharded(self) -> bool {
        self.0 > 1
    }

    /// The shard that lists `serial`: its value modulo the count.
    pub fn shard_of(self, serial: &Serial) -> u16 {
        shard_of_bytes(self.0, serial.as_bytes())
    }

    /// `entries` split into their shards, in order (index 0 first); each
    /// shard keeps the entries' order.
    pub fn partition<'a, T>(
        self,
        entries: impl IntoIterator<Item = &'a T>,
        serial: impl Fn(&T) -> &Serial,
    ) -> Vec<Vec<&'a T>> {
        let mut shards: Vec<Vec<&T>> = (0..self.0).map(|_| Vec::new()).collect();
        for entry in entries {
            let index = usize::from(self.shard_of(serial(entry)));
            // `shard_of` is below the count, the length of `shards`.
            shards[index].push(entry);
        }
        shards
    }
}

impl std::fmt::Display for ShardCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The URL of shard `index` of `count` of the intermediate whose key id is
/// `key_id_hex`, under `base`: what a leaf's CRL distribution point and the
/// shard's Issuing Distribution Point both name, byte for byte.
pub fn shard_url(base: &str, key_id_hex: &str, count: ShardCount, index: u16) -> String {
    format!("{base}/crl/{key_id_hex}/shards/{count}/{index}")
}

/// A big-endian unsigned integer modulo `count`, a byte at a time.
fn shard_of_bytes(count: u16, bytes: &[u8]) -> u16 {
    let count = u32::from(count);
    let remainder = bytes.iter().fold(0u32, |remainder, byte| {
        (remainder * 256 + u32::from(*byte)) % count
    });
    // Below `count`, itself a u16.
    remainder as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_the_serial_modulo_the_count() {
        let check = |count: u16, serial_hex: &str, expected: u16| {
            let serial: Serial = serial_hex.parse().unwrap();
            let count = ShardCount::new(u64::from(count)).unwrap();
            assert_eq!(
                count.shard_of(&serial),
                expected,
                "{serial_hex} mod {count}"
            );
        };
        check(1, "7f3a", 0);
        check(16, "7f3a", 0xa);
        check(64, "7f3a", 0x3a);
        check(10, "01", 1);
        // 0x0100 = 256 = 25 * 10 + 6.
        check(10, "0100", 6);
        // A 20-byte serial: the remainder of the whole number, as Python's
        // int(serial, 16) % count says.
        check(1000, "4cbd5b2cf1a6e0b6dd2d5a4b0c8e7f6a1b2c3d4e", 406);
        check(1024, "4cbd5b2cf1a6e0b6dd2d5a4b0c8e7f6a1b2c3d4e", 0x14e);
    }

    #[test]
    fn counts_outside_one_to_the_maximum_are_refused() {
        assert_eq!(ShardCount::new(0), None);
        assert_eq!(ShardCount::new(1), Some(ShardCount::WHOLE));
        assert!(!ShardCount::WHOLE.is_sharded());
        assert_eq!(ShardCount::new(1024).map(ShardCount::get), Some(1024));
        assert_eq!(ShardCount::new(1025), None);
        assert_eq!(ShardCount::new(u64::from(u16::MAX) + 2), None);
    }

    /// Random serials spread evenly, and every serial lands in exactly one
    /// shard: the one `shard_of` names.
    #[test]
    fn a_partition_puts_each_serial_in_its_shard_only() {
        let count = ShardCount::new(16).unwrap();
        let serials: Vec<Serial> = (0..16_000).map(|_| Serial::generate()).collect();
        let shards = count.partition(&serials, |serial| serial);
        assert_eq!(shards.len(), 16);
        assert_eq!(shards.iter().map(Vec::len).sum::<usize>(), serials.len());
        for (index, shard) in shards.iter().enumerate() {
            assert!(
                shard
                    .iter()
                    .all(|serial| usize::from(count.shard_of(serial)) == index)
            );
            // 1,000 expected; six standard deviations (~31 each) either way.
            assert!(
                (800..1200).contains(&shard.len()),
                "shard {index}: {}",
                shard.len()
            );
        }
    }

    #[test]
    fn the_url_names_the_count_and_the_index() {
        assert_eq!(
            shard_url(
                "https://ca.example",
                "ab01",
                ShardCount::new(64).unwrap(),
                7
            ),
            "https://ca.example/crl/ab01/shards/64/7"
        );
    }
}
