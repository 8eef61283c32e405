//! Store operations for memcached's meta protocol: lookups that report an item's metadata without
//! side effects, vivify-on-miss, invalidation (stale items) and win tokens, compare-and-swap for
//! every storage mode, and counters exactly as memcached 1.6.18 counts meta commands.
//!
//! The stale and token-sent marks live in the item's last_access word (see [`super::item`]); a
//! newly stored item starts with both clear, so any successful store ends a stale period.

use super::item::{ItemMut, ItemRef, STALE, TOKEN_SENT};
use super::{ArithOutcome, ItemView, Store, StoreError, StoreMode, StoreOutcome, Unlink};
use crate::clock::Instant32;

/// An item's metadata at one moment (the value is read separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaSnapshot {
    /// 0 when cas is disabled.
    pub cas: u64,
    pub client_flags: u32,
    pub expires_at: Option<Instant32>,
    pub last_access: Instant32,
    pub fetched: bool,
    pub stale: bool,
    pub token_sent: bool,
    /// The key was stored base64-encoded (`ms ... b`).
    pub key_binary: bool,
    pub value_len: usize,
    pub slab_class: u8,
    /// Header, key and value bytes.
    pub total_bytes: usize,
    /// `mg ... N`: the item was created by this lookup.
    pub created: bool,
}

/// How `md` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaDeleteOutcome {
    Deleted,
    /// `I`: marked stale, token cleared, new cas.
    Invalidated,
    /// `C` did not match.
    Exists,
    NotFound,
}

/// How `ma` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaArithOutcome {
    /// The new value; `created` when `N` made the item (its value is the initial value);
    /// `replaced` when the result outgrew the old value and a new item replaced it.
    Value {
        value: u64,
        created: bool,
        replaced: bool,
    },
    NotFound,
    /// `C` did not match.
    Exists,
    NonNumeric,
    OutOfMemory,
}

/// `ms` arguments beyond the classic ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaStoreArgs {
    pub mode: StoreMode,
    /// `C`: for set and replace this makes a cas store; append/prepend compare when nonzero.
    pub cas_expected: Option<u64>,
    /// `I` with `C`: a cas older than the item's stores the value as stale.
    pub invalidate: bool,
    /// `b`: remember the key was base64.
    pub key_binary: bool,
}

impl Store {
    fn snapshot(&self, slot_loc: super::slab::Loc, created: bool) -> MetaSnapshot {
        let item = ItemRef::new(self.slabs.chunk(slot_loc));
        MetaSnapshot {
            cas: self.cas_of(item.seq()),
            client_flags: item.client_flags(),
            expires_at: item.expires_at(),
            last_access: item.last_access(),
            fetched: item.is_fetched(),
            stale: item.is_stale(),
            token_sent: item.token_sent(),
            key_binary: item.key_binary(),
            value_len: item.value_len(),
            slab_class: self.slabs.class_of(slot_loc),
            total_bytes: item.total_bytes(),
            created,
        }
    }

    /// The live item's metadata, without counters, bump or any change (`me`, and the first step
    /// of `mg`). A dead item is reclaimed on the way; `get_expired`/`get_flushed` count when
    /// `counts_miss_reason`.
    pub fn meta_peek(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        counts_miss_reason: bool,
    ) -> Option<MetaSnapshot> {
        self.tick(now);
        match self.find_live(key, key_hash, now) {
            Ok(slot) => Some(self.snapshot(slot.loc, false)),
            Err(miss) => {
                if counts_miss_reason {
                    self.count_miss_reason(miss);
                }
                None
            }
        }
    }

    /// `mg <key> N<ttl>` on a miss: links an empty item with no client flags. Counts as no
    /// storage command (memcached links it directly).
    pub fn meta_vivify(
        &mut self,
        key: &[u8],
        key_hash: u64,
        expires_at: Option<Instant32>,
        now: Instant32,
    ) -> Option<MetaSnapshot> {
        let cmd_set = self.counters.cmd_set;
        let stored = self.store(StoreMode::Add, key, key_hash, 0, expires_at, b"", now);
        self.counters.cmd_set = cmd_set;
        if stored != Ok(StoreOutcome::Stored) {
            return None;
        }
        let slot = self.lookup(key, key_hash)?;
        Some(self.snapshot(slot.loc, true))
    }

    /// The end of an `mg` on a live item: the new expiry (`T`, or `N` on a created item), the
    /// win token, the LRU bump (unless `u`) and the counters (touch counters when `touched`,
    /// else get counters). Returns the view for the value.
    #[allow(clippy::too_many_arguments)]
    pub fn meta_get_finish(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        new_expiry: Option<Option<Instant32>>,
        touched: bool,
        send_token: bool,
        bump: bool,
    ) -> Option<ItemView<'_>> {
        let mut slot = self.lookup(key, key_hash)?;
        if let Some(expires_at) = new_expiry {
            // Without memory for a layout with an expiry field the item keeps its old expiry
            // (the reply header is already composed, so the item must still be served).
            match self.set_expiry(slot, key_hash, expires_at, now) {
                Some(loc) => slot.loc = loc,
                None => slot = self.lookup(key, key_hash)?,
            }
        }
        if send_token {
            let bits = ItemRef::new(self.slabs.chunk(slot.loc)).meta_bits() | TOKEN_SENT;
            ItemMut::new(self.slabs.chunk_mut(slot.loc)).set_meta_bits(bits);
        }
        let class_counters = self.class_counters_of(slot.loc);
        if touched {
            class_counters.touch_hits += 1;
            self.counters.cmd_touch += 1;
            self.counters.touch_hits += 1;
        } else {
            class_counters.get_hits += 1;
            self.counters.cmd_get += 1;
            self.counters.get_hits += 1;
        }
        if bump {
            return Some(self.access(slot.loc, now));
        }
        Some(self.view_of(slot.loc))
    }

    /// An LRU bump that marks the item fetched, counting nothing (an `mg` that fails after its
    /// lookup).
    pub fn meta_bump(&mut self, key: &[u8], key_hash: u64, now: Instant32) {
        if let Some(slot) = self.lookup(key, key_hash) {
            self.access(slot.loc, now);
        }
    }

    /// An `mg` miss counts a get miss, even with `T`: memcached 1.6.18 decides on touch
    /// counters only while printing a hit.
    pub fn meta_get_miss(&mut self) {
        self.counters.cmd_get += 1;
        self.counters.get_misses += 1;
    }

    /// Sets a live item's expiry without counting anything (`ma` with `T`/`N`).
    pub fn meta_set_expiry(
        &mut self,
        key: &[u8],
        key_hash: u64,
        expires_at: Option<Instant32>,
        now: Instant32,
    ) -> bool {
        match self.lookup(key, key_hash) {
            Some(slot) => self.set_expiry(slot, key_hash, expires_at, now).is_some(),
            None => false,
        }
    }

    /// The item's expiry set in place, or the item moved to a layout with an expiry field.
    fn set_expiry(
        &mut self,
        slot: super::table::SlotRef,
        key_hash: u64,
        expires_at: Option<Instant32>,
        now: Instant32,
    ) -> Option<super::slab::Loc> {
        if ItemMut::new(self.slabs.chunk_mut(slot.loc)).set_expires_at(expires_at) {
            return Some(slot.loc);
        }
        self.relocate_with_expiry(slot, key_hash, expires_at, now)
    }

    fn view_of(&self, loc: super::slab::Loc) -> ItemView<'_> {
        let item = ItemRef::new(self.slabs.chunk(loc));
        ItemView {
            key: item.key(),
            value: item.value(),
            client_flags: item.client_flags(),
            cas: self.cas_of(item.seq()),
            expires_at: item.expires_at(),
            last_access: item.last_access(),
            slab_class: self.slabs.class_of(loc),
            fetched: item.is_fetched(),
        }
    }

    /// `md`: delete, or with `invalidate` mark stale (clearing the token, new cas, optional new
    /// expiry). `C` must match. Counts `delete_hits` for a delete and `delete_misses` for a miss
    /// or a cas mismatch; an invalidation counts nothing (as memcached).
    pub fn meta_delete(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        cas_expected: Option<u64>,
        invalidate: Option<Option<Option<Instant32>>>,
    ) -> MetaDeleteOutcome {
        self.tick(now);
        let Ok(slot) = self.find_live(key, key_hash, now) else {
            self.counters.delete_misses += 1;
            return MetaDeleteOutcome::NotFound;
        };
        let cas = self.cas_of(ItemRef::new(self.slabs.chunk(slot.loc)).seq());
        if cas_expected.is_some_and(|expected| expected != cas) {
            self.counters.delete_misses += 1;
            return MetaDeleteOutcome::Exists;
        }
        let Some(new_expiry) = invalidate else {
            self.counters.delete_hits += 1;
            self.class_counters_of(slot.loc).delete_hits += 1;
            self.unlink(slot, Unlink::Delete);
            return MetaDeleteOutcome::Deleted;
        };
        let mut loc = slot.loc;
        if let Some(expires_at) = new_expiry {
            match self.set_expiry(slot, key_hash, expires_at, now) {
                Some(moved) => loc = moved,
                None => return MetaDeleteOutcome::NotFound,
            }
        }
        let seq = self.next_seq();
        let old = ItemRef::new(self.slabs.chunk(loc));
        let (bits, old_seq, total) = (old.meta_bits(), old.seq(), old.total_bytes());
        let mut item = ItemMut::new(self.slabs.chunk_mut(loc));
        item.set_seq(seq);
        item.set_meta_bits((bits | STALE) & !TOKEN_SENT);
        self.sizes_restamped(old_seq, seq, total);
        MetaDeleteOutcome::Invalidated
    }

    /// `ms`: every mode, with `C` and `I`. Returns the outcome and the stored item's cas (0 when
    /// nothing was stored).
    #[allow(clippy::too_many_arguments)]
    pub fn meta_store(
        &mut self,
        args: MetaStoreArgs,
        key: &[u8],
        key_hash: u64,
        client_flags: u32,
        expires_at: Option<Instant32>,
        value: &[u8],
        now: Instant32,
    ) -> Result<(StoreOutcome, u64), StoreError> {
        self.tick(now);
        let mut mode = args.mode;
        match (mode, args.cas_expected) {
            (StoreMode::Set | StoreMode::Replace, Some(expected)) => {
                mode = StoreMode::Cas(expected);
                // memcached never stores stale under a zero cas (`C0 I` is a plain mismatch).
                if args.invalidate && expected != 0 {
                    if let Ok(slot) = self.find_live(key, key_hash, now) {
                        let item = ItemRef::new(self.slabs.chunk(slot.loc));
                        if expected < self.cas_of(item.seq()) {
                            // Store as stale: keep the old expiry, stale mark and token.
                            let expires_at = item.expires_at();
                            let carry_bits = STALE | (item.meta_bits() & TOKEN_SENT);
                            self.counters.cas_hits += 1;
                            let result = self.store(
                                StoreMode::Set,
                                key,
                                key_hash,
                                client_flags,
                                expires_at,
                                value,
                                now,
                            );
                            return self.after_store(key, key_hash, args, result, carry_bits);
                        }
                    }
                }
            }
            (StoreMode::Append | StoreMode::Prepend, Some(expected)) if expected != 0 => {
                if let Ok(slot) = self.find_live(key, key_hash, now) {
                    let cas = self.cas_of(ItemRef::new(self.slabs.chunk(slot.loc)).seq());
                    if cas != expected {
                        self.counters.cmd_set += 1;
                        return Ok((StoreOutcome::Exists, 0));
                    }
                }
            }
            _ => {}
        }
        let result = self.store(mode, key, key_hash, client_flags, expires_at, value, now);
        self.after_store(key, key_hash, args, result, 0)
    }

    fn after_store(
        &mut self,
        key: &[u8],
        key_hash: u64,
        args: MetaStoreArgs,
        result: Result<StoreOutcome, StoreError>,
        carry_bits: u32,
    ) -> Result<(StoreOutcome, u64), StoreError> {
        let outcome = result?;
        if outcome != StoreOutcome::Stored {
            return Ok((outcome, 0));
        }
        let Some(slot) = self.lookup(key, key_hash) else {
            return Ok((outcome, 0));
        };
        let mut item = ItemMut::new(self.slabs.chunk_mut(slot.loc));
        // memcached builds an appended or prepended item afresh, without the binary-key mark.
        let fresh = !matches!(args.mode, StoreMode::Append | StoreMode::Prepend);
        if args.key_binary && fresh {
            item.set_key_binary();
        }
        if carry_bits != 0 {
            item.set_meta_bits(carry_bits);
        }
        let cas = self.cas_of(ItemRef::new(self.slabs.chunk(slot.loc)).seq());
        Ok((outcome, cas))
    }

    /// `ma`: incr/decr with an optional `C` check, or with `vivify` (initial value, expiry)
    /// create the item on a miss. Counters as memcached: hits and misses as incr/decr, nothing
    /// for a vivified item or a cas mismatch.
    // One call per `ma`, like `Store::store` for the storage commands.
    #[allow(clippy::too_many_arguments)]
    pub fn meta_arith(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        incr: bool,
        delta: u64,
        cas_expected: Option<u64>,
        vivify: Option<(u64, Option<Instant32>)>,
    ) -> MetaArithOutcome {
        self.tick(now);
        let mut old_len = 0;
        let mut fetched = false;
        if let Ok(slot) = self.find_live(key, key_hash, now) {
            let item = ItemRef::new(self.slabs.chunk(slot.loc));
            (old_len, fetched) = (item.value_len(), item.is_fetched());
            // memcached refuses an empty value before it compares the cas.
            if old_len == 0 {
                return MetaArithOutcome::NonNumeric;
            }
            let cas = self.cas_of(item.seq());
            if cas_expected.is_some_and(|expected| expected != 0 && expected != cas) {
                return MetaArithOutcome::Exists;
            }
        }
        let saved = (self.counters.incr_misses, self.counters.decr_misses);
        match self.arith(key, key_hash, incr, delta, now) {
            ArithOutcome::Value(value) => {
                // memcached's incr does not fetch the item (the classic path here does).
                if let (false, Some(slot)) = (fetched, self.lookup(key, key_hash)) {
                    ItemMut::new(self.slabs.chunk_mut(slot.loc)).clear_fetched();
                }
                MetaArithOutcome::Value {
                    value,
                    created: false,
                    replaced: decimal_len(value) > old_len,
                }
            }
            ArithOutcome::NonNumeric => MetaArithOutcome::NonNumeric,
            ArithOutcome::NotFound => {
                let Some((initial, expires_at)) = vivify else {
                    return MetaArithOutcome::NotFound;
                };
                (self.counters.incr_misses, self.counters.decr_misses) = saved;
                let digits = initial.to_string();
                let cmd_set = self.counters.cmd_set;
                let stored = self.store(
                    StoreMode::Add,
                    key,
                    key_hash,
                    0,
                    expires_at,
                    digits.as_bytes(),
                    now,
                );
                self.counters.cmd_set = cmd_set;
                match stored {
                    Ok(StoreOutcome::Stored) => MetaArithOutcome::Value {
                        value: initial,
                        created: true,
                        replaced: false,
                    },
                    _ => MetaArithOutcome::OutOfMemory,
                }
            }
        }
    }
}

fn decimal_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 10 {
        value /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::START;
    use crate::storage::StoreConfig;

    fn hash(key: &[u8]) -> u64 {
        key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn store() -> Store {
        Store::new(StoreConfig {
            memory_bytes_max: 64 * 1024,
            page_size: 16 * 1024,
            slab_growth_factor: 1.25,
            item_size_max: 16 * 1024,
            cas_enabled: true,
            key_hash: hash,
            large_pages: false,
            chunk_bytes_smallest: crate::storage::slab::CHUNK_BYTES_SMALLEST,
            fine_class_bytes_max: crate::storage::slab::FINE_CLASS_BYTES_MAX,
            growth_steps: 1,
            evictions_enabled: true,
        })
    }

    fn set(store: &mut Store, key: &[u8], value: &[u8], expires_at: Option<Instant32>) -> u64 {
        let args = MetaStoreArgs {
            mode: StoreMode::Set,
            cas_expected: None,
            invalidate: false,
            key_binary: false,
        };
        let (outcome, cas) = store
            .meta_store(args, key, hash(key), 0, expires_at, value, START)
            .unwrap();
        assert_eq!(outcome, StoreOutcome::Stored);
        cas
    }

    #[test]
    fn invalidate_marks_stale_and_a_matching_cas_store_clears_it() {
        let mut s = store();
        let now = START;
        let cas = set(&mut s, b"k", b"v1", None);
        // md I T30 on an item without an expiry field relocates it; the marks survive.
        let expires_at = Some(now.plus(30));
        let outcome = s.meta_delete(b"k", hash(b"k"), now, None, Some(Some(expires_at)));
        assert_eq!(outcome, MetaDeleteOutcome::Invalidated);
        s.check_invariants();
        let snap = s.meta_peek(b"k", hash(b"k"), now, false).unwrap();
        assert!(snap.stale && !snap.token_sent);
        assert!(snap.cas > cas, "invalidation gives a new cas");
        assert_eq!(snap.expires_at, expires_at);
        // the first reader takes the token
        s.meta_get_finish(b"k", hash(b"k"), now, None, false, true, true);
        let snap = s.meta_peek(b"k", hash(b"k"), now, false).unwrap();
        assert!(snap.stale && snap.token_sent && snap.fetched);
        // a touch that relocates keeps the marks
        s.meta_get_finish(b"k", hash(b"k"), now, Some(None), true, false, true);
        s.check_invariants();
        let peek = s.meta_peek(b"k", hash(b"k"), now, false).unwrap();
        assert!(peek.stale && peek.token_sent);
        // an older cas with I stores the value, still stale, with the old expiry
        let args = MetaStoreArgs {
            mode: StoreMode::Set,
            cas_expected: Some(1),
            invalidate: true,
            key_binary: false,
        };
        let (outcome, _) = s
            .meta_store(args, b"k", hash(b"k"), 0, Some(now.plus(99)), b"old", now)
            .unwrap();
        assert_eq!(outcome, StoreOutcome::Stored);
        let again = s.meta_peek(b"k", hash(b"k"), now, false).unwrap();
        assert!(again.stale && again.token_sent);
        assert_eq!(again.expires_at, None);
        // the current cas replaces it and ends the stale period
        let args = MetaStoreArgs {
            cas_expected: Some(again.cas),
            invalidate: false,
            ..args
        };
        let (outcome, new_cas) = s
            .meta_store(args, b"k", hash(b"k"), 0, None, b"v2", now)
            .unwrap();
        assert_eq!(outcome, StoreOutcome::Stored);
        let fresh = s.meta_peek(b"k", hash(b"k"), now, false).unwrap();
        assert!(!fresh.stale && !fresh.token_sent);
        assert_eq!(fresh.cas, new_cas);
        s.check_invariants();
    }

    #[test]
    fn vivify_and_arith_count_like_memcached() {
        let mut s = store();
        let now = START;
        let snap = s.meta_vivify(b"v", hash(b"v"), None, now).unwrap();
        assert!(snap.created);
        assert_eq!(snap.value_len, 0);
        assert_eq!(
            s.meta_arith(b"v", hash(b"v"), now, true, 1, None, None),
            MetaArithOutcome::NonNumeric
        );
        let outcome = s.meta_arith(b"n", hash(b"n"), now, true, 1, None, Some((9, None)));
        assert_eq!(
            outcome,
            MetaArithOutcome::Value {
                value: 9,
                created: true,
                replaced: false
            }
        );
        let outcome = s.meta_arith(b"n", hash(b"n"), now, true, 1, None, None);
        assert_eq!(
            outcome,
            MetaArithOutcome::Value {
                value: 10,
                created: false,
                replaced: true
            }
        );
        assert!(!s.meta_peek(b"n", hash(b"n"), now, false).unwrap().fetched);
        assert_eq!(
            s.meta_arith(b"n", hash(b"n"), now, true, 1, Some(12345), None),
            MetaArithOutcome::Exists
        );
        let stats = s.stats();
        assert_eq!(
            (stats.cmd_set, stats.incr_hits, stats.incr_misses),
            (0, 1, 0)
        );
        s.check_invariants();
    }
}
