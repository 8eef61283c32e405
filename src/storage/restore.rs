//! What the durability log needs from a store: a side-effect-free read of an item's full
//! state (to record it), and storing an item back exactly as recorded (replay).

use super::item::{ItemMut, ItemRef, STALE};
use super::meta::MetaSnapshot;
use super::{Store, StoreError, StoreMode, StoreOutcome};
use crate::clock::Instant32;

/// An item's state as the log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedItem<'a> {
    pub client_flags: u32,
    pub expires_at: Option<Instant32>,
    /// 0 when cas is disabled.
    pub cas: u64,
    pub stale: bool,
    pub key_binary: bool,
    pub value: &'a [u8],
}

/// What tells two states of one key apart: `None` when the key has no live item.
pub type Fingerprint = Option<(u64, Option<Instant32>, bool)>;

impl Store {
    /// The live item's state, counting nothing and changing nothing (a dead item is reclaimed
    /// on the way, as any lookup does).
    pub fn peek_item(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
    ) -> Option<LoggedItem<'_>> {
        self.tick(now);
        let slot = self.find_live(key, key_hash, now).ok()?;
        let item = ItemRef::new(self.slabs.chunk(slot.loc));
        Some(LoggedItem {
            client_flags: item.client_flags(),
            expires_at: item.expires_at(),
            cas: self.cas_of(item.seq()),
            stale: item.is_stale(),
            key_binary: item.key_binary(),
            value: item.value(),
        })
    }

    /// The key's cas, expiry and stale mark; with cas on, every change of value, client flags
    /// or key mark gives the item a new cas, so equal fingerprints mean an unchanged item.
    /// Only meaningful with cas on (see [`Store::cas_enabled`]).
    pub fn fingerprint(&mut self, key: &[u8], key_hash: u64, now: Instant32) -> Fingerprint {
        let s: MetaSnapshot = self.meta_peek(key, key_hash, now, false)?;
        Some((s.cas, s.expires_at, s.stale))
    }

    /// Whether items get cas values.
    pub fn cas_enabled(&self) -> bool {
        self.cfg.cas_enabled
    }

    /// Replay: stores the item as recorded. It keeps its cas when that value belongs to this
    /// shard's cas sequence and is not below the last flush's threshold (always so when the
    /// log was written with the same shard count); otherwise it gets the next cas. Counts as a `set` (the
    /// caller zeroes the counters once replay is done).
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &mut self,
        key: &[u8],
        key_hash: u64,
        client_flags: u32,
        expires_at: Option<Instant32>,
        cas: u64,
        stale: bool,
        key_binary: bool,
        value: &[u8],
        now: Instant32,
    ) -> Result<(), StoreError> {
        // The store takes one sequence number: make it the recorded one. Sequence numbers
        // below the next one are fine (a record follows every earlier record of its shard,
        // so only a flush's threshold must not be undercut); the next one stays above every
        // sequence number given out.
        let seq_next = self.seq_next;
        let recorded = self
            .seq_of_cas(cas)
            .filter(|&seq| seq >= self.oldest_live_seq);
        if let Some(seq) = recorded {
            self.seq_next = seq;
        }
        let result = self.store(
            StoreMode::Set,
            key,
            key_hash,
            client_flags,
            expires_at,
            value,
            now,
        );
        if let Some(seq) = recorded {
            self.seq_next = seq_next.max(seq + 1);
        }
        let stored = result?;
        debug_assert_eq!(stored, StoreOutcome::Stored);
        if stale || key_binary {
            if let Some(slot) = self.lookup(key, key_hash) {
                let mut item = ItemMut::new(self.slabs.chunk_mut(slot.loc));
                if stale {
                    item.set_meta_bits(STALE);
                }
                if key_binary {
                    item.set_key_binary();
                }
            }
        }
        Ok(())
    }

    /// Replay's end: cas values handed out from now on are above `cas` (so a cas a client
    /// kept from before the restart never matches a different item).
    pub fn advance_cas_past(&mut self, cas: u64) {
        if !self.cfg.cas_enabled {
            return;
        }
        // cas_of(seq) = (seq - 1) * stride + offset + 1 > cas
        let k = cas.saturating_sub(self.cas_offset + 1) / self.cas_stride + 1;
        let seq = k + 1;
        if seq > self.seq_next {
            self.seq_next = seq;
        }
        debug_assert!(self.cas_of(self.seq_next) > cas);
    }

    /// The store sequence whose cas is `cas`, if `cas` is one of this shard's values.
    fn seq_of_cas(&self, cas: u64) -> Option<u64> {
        if !self.cfg.cas_enabled || cas <= self.cas_offset {
            return None;
        }
        let k = cas - self.cas_offset - 1;
        (k % self.cas_stride == 0).then_some(k / self.cas_stride + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreConfig;
    use super::*;

    fn hash(key: &[u8]) -> u64 {
        key.iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
    }

    fn small_store() -> Store {
        Store::new(StoreConfig {
            memory_bytes_max: 4 << 20,
            page_size: 1 << 20,
            slab_growth_factor: 1.25,
            item_size_max: 1 << 20,
            cas_enabled: true,
            key_hash: hash,
            large_pages: false,
            chunk_bytes_smallest: crate::storage::slab::CHUNK_BYTES_SMALLEST,
            fine_class_bytes_max: crate::storage::slab::FINE_CLASS_BYTES_MAX,
            growth_steps: 1,
            evictions_enabled: true,
        })
    }

    #[test]
    fn restore_keeps_cas_flags_expiry_and_marks() {
        let mut s = small_store();
        let now = Instant32(10);
        s.restore(
            b"k",
            hash(b"k"),
            7,
            Some(Instant32(99)),
            42,
            true,
            true,
            b"v",
            now,
        )
        .unwrap();
        let item = s.peek_item(b"k", hash(b"k"), now).unwrap();
        assert_eq!(item.cas, 42);
        assert_eq!(item.client_flags, 7);
        assert_eq!(item.expires_at, Some(Instant32(99)));
        assert!(item.stale && item.key_binary);
        assert_eq!(item.value, b"v");
        // A lower cas is kept too; the next cas stays above both.
        s.restore(b"j", hash(b"j"), 0, None, 5, false, false, b"w", now)
            .unwrap();
        assert_eq!(s.peek_item(b"j", hash(b"j"), now).unwrap().cas, 5);
        s.store(StoreMode::Set, b"q", hash(b"q"), 0, None, b"x", now)
            .unwrap();
        assert_eq!(s.peek_item(b"q", hash(b"q"), now).unwrap().cas, 43);
        // Below a flush's threshold a recorded cas would read as flushed: a new one is given.
        s.flush_all(now, now);
        s.restore(b"r", hash(b"r"), 0, None, 7, false, false, b"w", now)
            .unwrap();
        assert_eq!(s.peek_item(b"r", hash(b"r"), now).unwrap().cas, 45);
        s.advance_cas_past(1000);
        s.store(StoreMode::Set, b"n", hash(b"n"), 0, None, b"x", now)
            .unwrap();
        assert_eq!(s.peek_item(b"n", hash(b"n"), now).unwrap().cas, 1001);
    }

    #[test]
    fn cas_values_of_other_shards_are_not_taken() {
        let mut s = small_store();
        s.set_cas_shard(1, 2); // cas 2, 4, 6, ...
        let now = Instant32(10);
        s.restore(b"k", hash(b"k"), 0, None, 7, false, false, b"v", now)
            .unwrap();
        assert_eq!(s.peek_item(b"k", hash(b"k"), now).unwrap().cas, 2);
        s.restore(b"k", hash(b"k"), 0, None, 10, false, false, b"v", now)
            .unwrap();
        assert_eq!(s.peek_item(b"k", hash(b"k"), now).unwrap().cas, 10);
        s.advance_cas_past(11);
        s.store(StoreMode::Set, b"n", hash(b"n"), 0, None, b"x", now)
            .unwrap();
        assert_eq!(s.peek_item(b"n", hash(b"n"), now).unwrap().cas, 12);
    }

    #[test]
    fn fingerprints_change_with_every_mutation() {
        let mut s = small_store();
        let now = Instant32(10);
        assert_eq!(s.fingerprint(b"k", hash(b"k"), now), None);
        s.store(StoreMode::Set, b"k", hash(b"k"), 0, None, b"1", now)
            .unwrap();
        let a = s.fingerprint(b"k", hash(b"k"), now);
        s.touch(b"k", hash(b"k"), Some(Instant32(50)), now);
        let b = s.fingerprint(b"k", hash(b"k"), now);
        s.arith(b"k", hash(b"k"), true, 1, now);
        let c = s.fingerprint(b"k", hash(b"k"), now);
        assert!(a != b && b != c && a != c);
        assert_eq!(
            s.store(StoreMode::Add, b"k", hash(b"k"), 0, None, b"1", now),
            Ok(StoreOutcome::NotStored)
        );
        assert_eq!(s.fingerprint(b"k", hash(b"k"), now), c);
    }
}
