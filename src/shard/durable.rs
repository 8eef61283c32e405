//! A shard's side of the durability log: recording what each mutation left behind, and
//! replaying records into the store at startup.
//!
//! Recording is by outcome, not by command: after any command that may change a key (every
//! storage command, delete, incr/decr, touch, gat, `ms`, `md`, `ma`, `mg` with `T` or `N`, the
//! binary equivalents) the shard looks the key up and records its item as it now is, or that
//! it has none. With cas on, a command that changed nothing (a failed `add`, a `delete` of a
//! missing key) is recognised by the key's unchanged cas and expiry and records nothing.
//! Replaying a record is therefore idempotent, and a key's records come in its shard's order.
//! Evictions, expiry and the crawler are not recorded: replay may bring back an evicted item
//! (its last written value) and skips expired ones.

use super::Shard;
use crate::clock::Instant32;
use crate::durability::record::{
    self, Decoded, FlushRecord, ItemRecord, Record, ITEM_BIT_KEY_BINARY, ITEM_BIT_STALE,
};
use crate::router::{key_hash, shard_of};
use crate::storage::{ClassSet, WalkCursor};

/// Keys a routed flush removes per step of its walk (replay only).
const ROUTED_FLUSH_KEYS_PER_STEP: usize = 1024;

/// The records a shard has made and not yet handed to the log thread.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Encoded records, in the order they were made.
    pub staged: Vec<u8>,
    /// How many records this shard has made; the number of the last one (from 1).
    pub seq: u64,
}

/// Where a replay stands, for one shard.
#[derive(Debug)]
pub struct Replay {
    /// This shard and the shard count now.
    pub me: u16,
    pub shard_count: u16,
    pub now: Instant32,
    /// A delayed flush recorded for this shard, not yet due at the records seen so far, and
    /// (when the shard count changed since) the shard and shard count it was recorded by.
    flush_pending_unix: Option<u64>,
    flush_pending_routed: Option<(u16, u16)>,
    /// The largest cas in the records applied.
    cas_max: u64,
    pub applied: u64,
    pub expired: u64,
    pub refused: u64,
}

impl Replay {
    pub fn new(me: u16, shard_count: u16, now: Instant32) -> Replay {
        Replay {
            me,
            shard_count,
            now,
            flush_pending_unix: None,
            flush_pending_routed: None,
            cas_max: 0,
            applied: 0,
            expired: 0,
            refused: 0,
        }
    }
}

impl Shard {
    /// Starts recording mutations (`--log-dir`).
    pub fn enable_recording(&mut self) {
        self.recorder = Some(Box::default());
    }

    /// The records made and not yet handed over (`None`: not recording).
    pub fn recorder(&self) -> Option<&Recorder> {
        self.recorder.as_deref()
    }

    /// The same, to hand them over.
    pub fn recorder_mut(&mut self) -> Option<&mut Recorder> {
        self.recorder.as_deref_mut()
    }

    /// The number of the last record made (0: none, or not recording).
    #[inline]
    pub fn log_seq(&self) -> u64 {
        self.recorder.as_ref().map_or(0, |r| r.seq)
    }

    /// Runs a command that may change `key` and records the key's state after it, if it
    /// changed (see the module docs). Without a log, just runs it.
    #[inline]
    pub(crate) fn logged<R>(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        run: impl FnOnce(&mut Shard) -> R,
    ) -> R {
        if self.recorder.is_none() || key.is_empty() {
            return run(self);
        }
        let before = self
            .store
            .cas_enabled()
            .then(|| self.store.fingerprint(key, key_hash, now));
        let result = run(self);
        if let Some(before) = before {
            if self.store.fingerprint(key, key_hash, now) == before {
                return result;
            }
        }
        self.record_key(key, key_hash, now);
        result
    }

    /// Records the key's item as it is now, or its absence.
    fn record_key(&mut self, key: &[u8], key_hash: u64, now: Instant32) {
        let epoch = self.epoch;
        let Some(rec) = self.recorder.as_deref_mut() else {
            return;
        };
        let time_unix = epoch.to_unix(now);
        match self.store.peek_item(key, key_hash, now) {
            Some(item) => {
                let r = ItemRecord {
                    key,
                    client_flags: item.client_flags,
                    item_bits: item_bits(item.stale, item.key_binary),
                    expires_unix: item.expires_at.map_or(0, |at| epoch.to_unix(at)),
                    cas: item.cas,
                    value: item.value,
                };
                record::encode_item(&mut rec.staged, &r, time_unix);
            }
            None => record::encode_delete(&mut rec.staged, key, time_unix),
        }
        rec.seq += 1;
    }

    /// Records this shard's `flush_all` (effective at `at`), one of `shard_count` shards.
    pub fn record_flush(&mut self, at: Instant32, now: Instant32, shard_count: u16) {
        let epoch = self.epoch;
        let me = self.id.0;
        let Some(rec) = self.recorder.as_deref_mut() else {
            return;
        };
        let flush = FlushRecord {
            at_unix: epoch.to_unix(at.max(now)),
            shard: me,
            shard_count,
        };
        record::encode_flush(&mut rec.staged, &flush, epoch.to_unix(now));
        rec.seq += 1;
    }

    /// Applies `d` if it is this shard's: a flush (whose reach [`Shard::replay_record`]
    /// decides), or an item or delete whose key routes here under the shard count now. Every
    /// shard reads the whole file and keeps its own records.
    pub fn replay_if_mine(&mut self, d: &Decoded<'_>, st: &mut Replay) {
        let hash = match d.record {
            Record::Flush(_) => 0,
            _ => match d.record.key() {
                Some(key) => key_hash(key),
                None => return,
            },
        };
        if matches!(d.record, Record::Flush(_)) || shard_of(hash, st.shard_count).0 == st.me {
            self.replay_record(d, hash, st);
        }
    }

    /// Applies one record. Item and delete records reach only the shard that owns their key
    /// now (the caller routes them by `key_hash`); a flush applies to the shard that recorded
    /// it, or, when the shard count has changed since, to the keys that routed to that shard
    /// under the shard count then, in every shard.
    pub fn replay_record(&mut self, d: &Decoded<'_>, key_hash: u64, st: &mut Replay) {
        let now = st.now;
        let now_unix = self.epoch.to_unix(now);
        if let Some(at) = st.flush_pending_unix {
            if d.time_unix >= at && matches!(d.record, Record::Item(_) | Record::Delete { .. }) {
                // The delayed flush took effect before this record was made.
                st.flush_pending_unix = None;
                self.replay_flush_now(st.flush_pending_routed.take(), now);
            }
        }
        match d.record {
            Record::Item(item) => {
                st.applied += 1;
                st.cas_max = st.cas_max.max(item.cas);
                if item.expires_unix != 0 && item.expires_unix <= now_unix {
                    // Dead now: whatever the key held before is gone too.
                    st.expired += 1;
                    self.store.forget(item.key, key_hash, now);
                    return;
                }
                let expires_at = (item.expires_unix != 0).then(|| {
                    self.epoch
                        .from_unix(i64::try_from(item.expires_unix).unwrap_or(i64::MAX))
                });
                let restored = self.store.restore(
                    item.key,
                    key_hash,
                    item.client_flags,
                    expires_at,
                    item.cas,
                    item.item_bits & ITEM_BIT_STALE != 0,
                    item.item_bits & ITEM_BIT_KEY_BINARY != 0,
                    item.value,
                    now,
                );
                if restored.is_err() {
                    st.refused += 1;
                    self.store.forget(item.key, key_hash, now);
                }
            }
            Record::Delete { key } => {
                st.applied += 1;
                self.store.forget(key, key_hash, now);
            }
            Record::Flush(f) => {
                // With the shard count unchanged, the flushing shard's keys are this shard's;
                // otherwise, they are the keys that routed to it then, wherever they are now.
                let routed = (f.shard_count != st.shard_count).then_some((f.shard, f.shard_count));
                if routed.is_none() && f.shard != st.me {
                    return;
                }
                st.applied += 1;
                if f.at_unix > d.time_unix {
                    st.flush_pending_unix = Some(f.at_unix);
                    st.flush_pending_routed = routed;
                } else {
                    st.flush_pending_unix = None;
                    st.flush_pending_routed = None;
                    self.replay_flush_now(routed, now);
                }
            }
            Record::SnapshotEnd { .. } => {}
        }
    }

    /// A replayed flush taking effect: all of this store, or (`routed`: the shard and shard
    /// count that recorded it, when the count has changed) only the items whose keys routed
    /// to that shard then. The latter walks the store in steps of a bounded number of keys.
    fn replay_flush_now(&mut self, routed: Option<(u16, u16)>, now: Instant32) {
        let Some((shard, shard_count)) = routed else {
            self.store.flush_all(now, now);
            return;
        };
        let mut cursor = Some(WalkCursor::START);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        while let Some(from) = cursor {
            keys.clear();
            cursor =
                self.store
                    .for_each_live_item_from(ClassSet::ALL, from, usize::MAX, now, |item| {
                        if shard_of(key_hash(item.key), shard_count).0 == shard {
                            keys.push(item.key.to_vec());
                        }
                        keys.len() < ROUTED_FLUSH_KEYS_PER_STEP
                    });
            for key in &keys {
                self.store.forget(key, key_hash(key), now);
            }
        }
    }

    /// Starts this shard's part of a snapshot: encodes a delayed flush not yet due (the only
    /// state beside the items that replay needs) into `out`; returns the records encoded.
    pub fn snapshot_begin(&mut self, shard_count: u16, now: Instant32, out: &mut Vec<u8>) -> u64 {
        let Some(at) = self.store.flush_pending().filter(|&at| at > now) else {
            return 0;
        };
        let flush = FlushRecord {
            at_unix: self.epoch.to_unix(at),
            shard: self.id.0,
            shard_count,
        };
        record::encode_flush(out, &flush, self.epoch.to_unix(now));
        1
    }

    /// Encodes the live items from `from` on as item records into `out`, until `out` holds
    /// `bytes_max` bytes (one item may overshoot) or `chunks_max` chunks were looked at.
    /// Returns where to go on (`None`: the walk is over) and the records encoded. An item
    /// changed between slices may be encoded old, new, or not at all (see [`WalkCursor`]):
    /// its change's record follows the snapshot's start in the log.
    pub fn snapshot_slice(
        &self,
        from: WalkCursor,
        now: Instant32,
        bytes_max: usize,
        chunks_max: usize,
        out: &mut Vec<u8>,
    ) -> (Option<WalkCursor>, u64) {
        let epoch = self.epoch;
        let time_unix = epoch.to_unix(now);
        let mut records = 0;
        let next =
            self.store
                .for_each_live_item_from(ClassSet::ALL, from, chunks_max, now, |item| {
                    let r = ItemRecord {
                        key: item.key,
                        client_flags: item.client_flags,
                        item_bits: item_bits(item.stale, item.key_binary),
                        expires_unix: item.expires_at.map_or(0, |at| epoch.to_unix(at)),
                        cas: item.cas,
                        value: item.value,
                    };
                    record::encode_item(out, &r, time_unix);
                    records += 1;
                    out.len() < bytes_max
                });
        (next, records)
    }

    /// Ends a replay: a delayed flush still pending is scheduled (or applied, if due), cas
    /// values from now on are above every replayed one, and the counters replay moved are
    /// zeroed.
    pub fn replay_finish(&mut self, st: &Replay) {
        let now = st.now;
        if let Some(at) = st.flush_pending_unix {
            let at = self.epoch.from_unix(i64::try_from(at).unwrap_or(i64::MAX));
            if at <= now {
                self.replay_flush_now(st.flush_pending_routed, now);
            } else {
                // Still ahead: the store schedules it for every key it holds (for a flush
                // recorded under another shard count, more keys than that shard owned).
                self.store.flush_all(at, now);
            }
        }
        self.store.advance_cas_past(st.cas_max);
        self.store.reset_stats();
    }
}

/// An item record's bits: stale (`md ... I`), key stored base64 (`ms ... b`).
fn item_bits(stale: bool, key_binary: bool) -> u8 {
    let mut bits = 0;
    if stale {
        bits |= ITEM_BIT_STALE;
    }
    if key_binary {
        bits |= ITEM_BIT_KEY_BINARY;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Request, StoreVerb};

    fn shard() -> Shard {
        let mut s = Shard::for_tests(64 << 20);
        s.enable_recording();
        s
    }

    /// A fixed-seed xorshift64 generator.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// One random mutation (set of values across several slab classes, delete, or rarely a
    /// flush), recorded as the runtime records it.
    fn mutate(s: &mut Shard, rng: &mut Rng, now: Instant32) {
        let key = format!("key-{}", rng.below(40));
        let mut out = Vec::new();
        match rng.below(20) {
            0 => {
                s.store_mut().flush_all(now, now);
                s.record_flush(now, now, 1);
            }
            1..=5 => {
                let req = Request::Delete {
                    key: key.as_bytes(),
                    noreply: false,
                };
                s.exec_keyed(&req, key_hash(key.as_bytes()), now, &mut out);
            }
            _ => {
                let len = [1, 30, 200, 900, 3000][rng.below(5) as usize];
                let value = vec![b'a' + rng.below(26) as u8; len];
                let req = Request::Store {
                    verb: StoreVerb::Set,
                    key: key.as_bytes(),
                    client_flags: rng.below(1000) as u32,
                    exptime: 0,
                    value: &value,
                    cas_expected: 0,
                    noreply: false,
                };
                s.exec_keyed(&req, key_hash(key.as_bytes()), now, &mut out);
            }
        }
    }

    /// Every key's item as (client flags, value), or `None`.
    fn state(s: &mut Shard, now: Instant32) -> Vec<Option<(u32, Vec<u8>)>> {
        (0..40)
            .map(|i| {
                let key = format!("key-{i}");
                s.store_mut()
                    .peek_item(key.as_bytes(), key_hash(key.as_bytes()), now)
                    .map(|item| (item.client_flags, item.value.to_vec()))
            })
            .collect()
    }

    fn replay_bytes(s: &mut Shard, bytes: &[u8], st: &mut Replay) {
        let mut at = 0;
        while let Some((d, len)) = record::decode(&bytes[at..]) {
            let hash = d.record.key().map_or(0, key_hash);
            s.replay_record(&d, hash, st);
            at += len;
        }
        assert_eq!(at, bytes.len(), "every record decodes");
    }

    /// A snapshot walked in small slices while mutations go on, then the records made from
    /// the walk's start on, replay to exactly the state the shard ended in (whatever the
    /// interleaving: an item changed during the walk is in the snapshot old, new or not at
    /// all, and its change's record follows).
    #[test]
    fn a_snapshot_taken_while_mutating_plus_the_log_after_it_replays_the_final_state() {
        let now = Instant32(100);
        for seed in 1..=60u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut s = shard();
            for _ in 0..300 {
                mutate(&mut s, &mut rng, now);
            }
            // The rotation: records made from here on are in the new segment.
            s.recorder_mut().unwrap().staged.clear();
            let mut snapshot = Vec::new();
            s.snapshot_begin(1, now, &mut snapshot);
            let mut cursor = Some(WalkCursor::START);
            let mut turns = 0;
            while let Some(from) = cursor {
                for _ in 0..rng.below(4) {
                    mutate(&mut s, &mut rng, now);
                }
                let chunks = 1 + rng.below(6) as usize;
                cursor = s.snapshot_slice(from, now, 4096, chunks, &mut snapshot).0;
                turns += 1;
                assert!(turns < 100_000, "seed {seed}: the walk ends");
            }
            for _ in 0..rng.below(20) {
                mutate(&mut s, &mut rng, now);
            }
            let tail = std::mem::take(&mut s.recorder_mut().unwrap().staged);
            let expected = state(&mut s, now);
            let mut restored = shard();
            let mut st = Replay::new(0, 1, now);
            replay_bytes(&mut restored, &snapshot, &mut st);
            replay_bytes(&mut restored, &tail, &mut st);
            restored.replay_finish(&st);
            assert_eq!(state(&mut restored, now), expected, "seed {seed}");
        }
    }

    /// A flush recorded by shard 1 of 2, replayed into a single shard, removes the keys that
    /// shard owned and keeps the others.
    #[test]
    fn a_routed_flush_removes_only_the_flushing_shards_keys() {
        let now = Instant32(100);
        let mut s = shard();
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let mut log = Vec::new();
        for k in &keys {
            let item = ItemRecord {
                key: k.as_bytes(),
                client_flags: 0,
                item_bits: 0,
                expires_unix: 0,
                cas: 0,
                value: b"v",
            };
            record::encode_item(&mut log, &item, 1);
        }
        let flush = FlushRecord {
            at_unix: 1,
            shard: 1,
            shard_count: 2,
        };
        record::encode_flush(&mut log, &flush, 1);
        let mut st = Replay::new(0, 1, now);
        replay_bytes(&mut s, &log, &mut st);
        s.replay_finish(&st);
        for k in &keys {
            let h = key_hash(k.as_bytes());
            let present = s.store_mut().peek_item(k.as_bytes(), h, now).is_some();
            assert_eq!(present, shard_of(h, 2).0 == 0, "{k}");
        }
    }
}
