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
    /// A delayed flush recorded for this shard, not yet due at the records seen so far.
    flush_pending_unix: Option<u64>,
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
                let mut item_bits = 0;
                if item.stale {
                    item_bits |= ITEM_BIT_STALE;
                }
                if item.key_binary {
                    item_bits |= ITEM_BIT_KEY_BINARY;
                }
                let r = ItemRecord {
                    key,
                    client_flags: item.client_flags,
                    item_bits,
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

    /// Applies one record. Item and delete records reach only the shard that owns their key
    /// now (the caller routes them by `key_hash`); a flush applies to the shard that recorded
    /// it, or, when the shard count has changed since, to every shard.
    pub fn replay_record(&mut self, d: &Decoded<'_>, key_hash: u64, st: &mut Replay) {
        let now = st.now;
        let now_unix = self.epoch.to_unix(now);
        if let Some(at) = st.flush_pending_unix {
            if d.time_unix >= at && !matches!(d.record, Record::Flush(_)) {
                // The delayed flush took effect before this record was made.
                self.store.flush_all(now, now);
                st.flush_pending_unix = None;
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
                let mine = f.shard_count != st.shard_count || f.shard == st.me;
                if !mine {
                    return;
                }
                st.applied += 1;
                if f.at_unix > d.time_unix {
                    st.flush_pending_unix = Some(f.at_unix);
                } else {
                    st.flush_pending_unix = None;
                    self.store.flush_all(now, now);
                }
            }
        }
    }

    /// Ends a replay: a delayed flush still pending is scheduled (or applied, if due), cas
    /// values from now on are above every replayed one, and the counters replay moved are
    /// zeroed.
    pub fn replay_finish(&mut self, st: &Replay) {
        let now = st.now;
        if let Some(at) = st.flush_pending_unix {
            let at = self.epoch.from_unix(i64::try_from(at).unwrap_or(i64::MAX));
            self.store.flush_all(at.max(now), now);
        }
        self.store.advance_cas_past(st.cas_max);
        self.store.reset_stats();
    }
}
