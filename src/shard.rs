//! Glue between the protocol and one shard's store: executes a parsed request and composes its
//! reply straight into an output buffer (one copy of a value: slab -> reply bytes).
//!
//! Requests reach here already routed: every key handed to a [`Shard`] is owned by it. Commands
//! that concern the whole server (`stats`, `flush_all`, `version`, ...) are split or answered by
//! the runtime; this module supplies each shard's part of them.

pub mod binary;
pub mod durable;

use crate::clock::{self, Epoch, Instant32};
use crate::prefix_stats::PrefixStats;
use crate::protocol::{compose, GetVerb, Request, StoreVerb};
use crate::router::ShardId;
use crate::storage::{
    ArithOutcome, EvictedItem, Store, StoreConfig, StoreError, StoreMode, StoreOutcome,
};
use crate::watch::{watch_kinds, EventLog, Eviction, GetStatus, StoreStatus};

/// One shard: the store it owns plus what it needs to answer requests.
pub struct Shard {
    pub id: ShardId,
    store: Store,
    epoch: Epoch,
    /// `stats detail` counters for this shard's keys.
    pub prefix_stats: PrefixStats,
    /// Stores refused because the item could not fit (memcached's `store_too_large`).
    pub store_too_large: u64,
    /// Stores refused for want of memory (memcached's `store_no_memory`).
    pub store_no_memory: u64,
    /// `me` commands run on this shard's keys (memcached's `cmd_meta`).
    pub cmd_meta: u64,
    /// Events for `watch` (nothing is logged while its mask is 0).
    pub log: EventLog,
    /// Scratch for evictions taken from the store.
    evicted: Vec<EvictedItem>,
    /// `--log-dir`: the records of this shard's mutations (`None`: no log).
    recorder: Option<Box<durable::Recorder>>,
}

/// The slab class id clients see for a store class (memcached's ids start at 1).
fn class_id(slab_class: u8) -> u16 {
    u16::from(slab_class) + 1
}

/// memcached's `item_store` `ttl`: the expiry minus now, as an unsigned 32-bit difference.
fn ttl_field(expires_at: Option<Instant32>, now: Instant32) -> u32 {
    expires_at.map_or(0, |at| at.0.wrapping_sub(now.0))
}

/// memcached's `cmd` name of a storage command.
pub fn store_cmd_name(verb: StoreVerb) -> &'static str {
    match verb {
        StoreVerb::Add => "add",
        StoreVerb::Set => "set",
        StoreVerb::Replace => "replace",
        StoreVerb::Append => "append",
        StoreVerb::Prepend => "prepend",
        StoreVerb::Cas => "cas",
    }
}

/// Writes a retrieval hit's `VALUE` block (`compose::value`'s bytes) for
/// [`Shard::exec_get_key_to`].
pub trait ValueOut {
    /// Appends the block to `out`, or sends what of it it can elsewhere first and appends the
    /// rest: either way the client receives exactly `compose::value`'s bytes, in order.
    fn value(
        &mut self,
        out: &mut Vec<u8>,
        key: &[u8],
        client_flags: u32,
        data: &[u8],
        cas: Option<u64>,
    );
}

/// Copies every block into the reply buffer.
pub struct CopyValue;

impl ValueOut for CopyValue {
    #[inline(always)]
    fn value(
        &mut self,
        out: &mut Vec<u8>,
        key: &[u8],
        client_flags: u32,
        data: &[u8],
        cas: Option<u64>,
    ) {
        compose::value(out, key, client_flags, data, cas);
    }
}

impl Shard {
    /// See [`Store::prefetch_bucket`].
    pub fn prefetch_bucket(&self, key_hash: u64) {
        self.store.prefetch_bucket(key_hash);
    }

    /// See [`Store::prefetch_items`].
    pub fn prefetch_items(&self, key_hash: u64) {
        self.store.prefetch_items(key_hash);
    }

    pub fn new(id: ShardId, cfg: StoreConfig, epoch: Epoch) -> Shard {
        Shard {
            id,
            store: Store::new(cfg),
            epoch,
            prefix_stats: PrefixStats::default(),
            store_too_large: 0,
            store_no_memory: 0,
            cmd_meta: 0,
            log: EventLog::default(),
            evicted: Vec::new(),
            recorder: None,
        }
    }

    /// A shard with `memory_bytes_max` of item memory in 1 MiB pages and the server's key hash,
    /// for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(memory_bytes_max: usize) -> Shard {
        let cfg = StoreConfig {
            memory_bytes_max,
            page_size: 1 << 20,
            slab_growth_factor: 1.25,
            item_size_max: 1 << 20,
            cas_enabled: true,
            key_hash: crate::router::key_hash,
            large_pages: false,
            chunk_bytes_smallest: crate::storage::slab::CHUNK_BYTES_SMALLEST,
            fine_class_bytes_max: crate::storage::slab::FINE_CLASS_BYTES_MAX,
            growth_steps: 1,
            evictions_enabled: true,
        };
        let epoch = Epoch {
            started_unix: 1_700_000_000,
        };
        Shard::new(ShardId(0), cfg, epoch)
    }

    /// Sets which event kinds some watcher wants (once per loop turn).
    pub fn set_watch_mask(&mut self, mask: u16) {
        if mask != self.log.mask {
            self.log.mask = mask;
            self.store
                .set_eviction_log(mask & watch_kinds::EVICTIONS != 0);
        }
    }

    /// `watch fetchers`: the `item_get` line of a lookup that a command other than a retrieval
    /// makes (memcached logs every lookup, a storage command's own included).
    pub fn log_lookup(&mut self, key: &[u8], key_hash: u64, now: Instant32) {
        match self.store.peek_summary(key, key_hash, now) {
            Some(s) => {
                self.log
                    .item_get(key, GetStatus::Found, class_id(s.slab_class), s.value_len)
            }
            None => self.log.item_get(key, GetStatus::NotFound, 0, 0),
        }
    }

    /// `watch evictions`: lines for the items the store evicted since last asked.
    pub fn log_evictions(&mut self, now: Instant32) {
        if !self.log.wants(watch_kinds::EVICTIONS) {
            return;
        }
        self.store.take_evicted(&mut self.evicted);
        for ev in self.evicted.drain(..) {
            let ttl_secs = ev
                .expires_at
                .map_or(-1, |at| i64::from(at.0) - i64::from(now.0));
            self.log.eviction(&Eviction {
                key: &ev.key,
                fetched: ev.fetched,
                ttl_secs,
                idle_secs: now.since(ev.last_access),
                class_id: class_id(ev.slab_class),
                value_len: ev.value_len,
            });
        }
    }

    /// `watch mutations`: the `item_store` line of a storage command's outcome.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn log_store(
        &mut self,
        verb: StoreVerb,
        key: &[u8],
        key_hash: u64,
        client_flags: u32,
        expires_at: Option<Instant32>,
        value_len: usize,
        result: Result<StoreOutcome, StoreError>,
        now: Instant32,
    ) {
        self.log_evictions(now);
        if !self.log.wants(watch_kinds::MUTATIONS) {
            return;
        }
        let cmd = store_cmd_name(verb);
        let status = match result {
            Ok(StoreOutcome::Stored) => StoreStatus::Stored,
            Ok(StoreOutcome::NotStored) => StoreStatus::NotStored,
            Ok(StoreOutcome::Exists) => StoreStatus::Exists,
            Ok(StoreOutcome::NotFound) => StoreStatus::NotFound,
            Err(StoreError::TooLarge) => StoreStatus::TooLarge,
            Err(StoreError::OutOfMemory) => StoreStatus::NoMemory,
        };
        // A stored item is shown as stored (append and prepend keep the old expiry and grow
        // the value); anything else as the item the command would have stored. A refused
        // allocation shows no item, as memcached logs it.
        let stored = match result {
            Ok(StoreOutcome::Stored) => self.store.peek_summary(key, key_hash, now),
            _ => None,
        };
        let (ttl, class, size) = match (stored, result) {
            (Some(s), _) => (
                ttl_field(s.expires_at, now),
                class_id(s.slab_class),
                s.value_len,
            ),
            (None, Err(_)) => (0, 0, 0),
            (None, Ok(_)) => {
                let class = self
                    .store
                    .class_for(key.len(), value_len, client_flags, expires_at);
                (ttl_field(expires_at, now), class_id(class), value_len)
            }
        };
        self.log.item_store(key, status, cmd, ttl, class, size);
    }

    /// Counts a refused store, as memcached does whatever the protocol (noreply included).
    pub fn count_store_error(&mut self, e: StoreError) {
        match e {
            StoreError::TooLarge => self.store_too_large += 1,
            StoreError::OutOfMemory => self.store_no_memory += 1,
        }
    }

    /// Zeroes this shard's own counters (the store's are reset separately).
    pub fn reset_counters(&mut self) {
        self.store_too_large = 0;
        self.store_no_memory = 0;
        self.cmd_meta = 0;
    }

    /// The store, for stats and maintenance.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, mutably (crawler, flush, stats reset).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Converts a client exptime at `now`.
    pub fn expires_at(&self, exptime: i64, now: Instant32) -> Option<Instant32> {
        clock::expires_at(exptime, now, &self.epoch)
    }

    /// One key of a retrieval command: appends its `VALUE` block on a hit, nothing on a miss.
    pub fn exec_get_key(
        &mut self,
        verb: GetVerb,
        touch_to: Option<Instant32>,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
    ) {
        self.exec_get_key_to(verb, touch_to, key, key_hash, now, out, &mut CopyValue);
    }

    /// [`Shard::exec_get_key`], with the `VALUE` block of a hit written by `values` (which
    /// may send a large one to the client straight from the item instead of copying it).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn exec_get_key_to(
        &mut self,
        verb: GetVerb,
        touch_to: Option<Instant32>,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
        values: &mut impl ValueOut,
    ) {
        if verb.touches() && self.recorder.is_some() {
            self.logged(key, key_hash, now, |s| {
                s.exec_get_key_unlogged(verb, touch_to, key, key_hash, now, out, values)
            });
            return;
        }
        self.exec_get_key_unlogged(verb, touch_to, key, key_hash, now, out, values);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn exec_get_key_unlogged(
        &mut self,
        verb: GetVerb,
        touch_to: Option<Instant32>,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
        values: &mut impl ValueOut,
    ) {
        let item = if verb.touches() {
            self.store.touch(key, key_hash, touch_to, now)
        } else {
            self.store.get(key, key_hash, now)
        };
        if self.prefix_stats.enabled {
            self.prefix_stats.record_get(key, item.is_some());
        }
        if self.log.wants(watch_kinds::FETCHERS) {
            match &item {
                Some(i) => {
                    self.log
                        .item_get(key, GetStatus::Found, class_id(i.slab_class), i.value.len())
                }
                None => self.log.item_get(key, GetStatus::NotFound, 0, 0),
            }
        }
        if let Some(item) = item {
            let cas = verb.with_cas().then_some(item.cas);
            values.value(out, item.key, item.client_flags, item.value, cas);
        }
    }

    /// Executes a single-key request (`Request::key()` is `Some`) and appends its reply.
    pub fn exec_keyed(
        &mut self,
        req: &Request<'_>,
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
    ) {
        // Every request that reaches here may change its key.
        if let (Some(_), Some(key)) = (&self.recorder, req.key()) {
            self.logged(key, key_hash, now, |s| {
                s.exec_keyed_unlogged(req, key_hash, now, out)
            });
            return;
        }
        self.exec_keyed_unlogged(req, key_hash, now, out);
    }

    fn exec_keyed_unlogged(
        &mut self,
        req: &Request<'_>,
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
    ) {
        if self.prefix_stats.enabled {
            match *req {
                Request::Store { key, .. } | Request::TooLarge { key, .. } => {
                    self.prefix_stats.record_set(key)
                }
                Request::Delete { key, .. } => self.prefix_stats.record_delete(key),
                _ => {}
            }
        }
        if self.log.wants(watch_kinds::FETCHERS) {
            if let Some(key) = req.key() {
                if !matches!(req, Request::TooLarge { .. }) {
                    self.log_lookup(key, key_hash, now);
                }
            }
        }
        match *req {
            Request::Store {
                verb,
                key,
                client_flags,
                exptime,
                value,
                cas_expected,
                noreply,
            } => {
                let mode = match verb {
                    StoreVerb::Set => StoreMode::Set,
                    StoreVerb::Add => StoreMode::Add,
                    StoreVerb::Replace => StoreMode::Replace,
                    StoreVerb::Append => StoreMode::Append,
                    StoreVerb::Prepend => StoreMode::Prepend,
                    StoreVerb::Cas => StoreMode::Cas(cas_expected),
                };
                let expires_at = self.expires_at(exptime, now);
                let result =
                    self.store
                        .store(mode, key, key_hash, client_flags, expires_at, value, now);
                if let Err(e) = result {
                    self.count_store_error(e);
                }
                if self.log.mask != 0 {
                    self.log_store(
                        verb,
                        key,
                        key_hash,
                        client_flags,
                        expires_at,
                        value.len(),
                        result,
                        now,
                    );
                }
                let reply: &[u8] = match result {
                    Ok(StoreOutcome::Stored) => compose::STORED,
                    Ok(StoreOutcome::NotStored) => compose::NOT_STORED,
                    Ok(StoreOutcome::Exists) => compose::EXISTS,
                    Ok(StoreOutcome::NotFound) => compose::NOT_FOUND,
                    Err(StoreError::TooLarge) => compose::SERVER_ERROR_TOO_LARGE,
                    Err(StoreError::OutOfMemory) => compose::SERVER_ERROR_OUT_OF_MEMORY,
                };
                if !noreply {
                    out.extend_from_slice(reply);
                }
            }
            Request::TooLarge {
                verb, key, noreply, ..
            } => {
                // memcached removes the old item so a failed set never leaves stale data.
                if verb == StoreVerb::Set {
                    self.store.forget(key, key_hash, now);
                }
                self.count_store_error(StoreError::TooLarge);
                if self.log.wants(watch_kinds::MUTATIONS) {
                    let status = StoreStatus::TooLarge;
                    self.log
                        .item_store(key, status, store_cmd_name(verb), 0, 0, 0);
                }
                if !noreply {
                    out.extend_from_slice(compose::SERVER_ERROR_TOO_LARGE);
                }
            }
            Request::Delete { key, noreply } => {
                let reply: &[u8] = if self.store.delete(key, key_hash, now) {
                    compose::DELETED
                } else {
                    compose::NOT_FOUND
                };
                if !noreply {
                    out.extend_from_slice(reply);
                }
            }
            Request::Arith {
                incr,
                key,
                delta,
                noreply,
            } => {
                let outcome = self.store.arith(key, key_hash, incr, delta, now);
                if noreply {
                    return;
                }
                match outcome {
                    ArithOutcome::Value(v) => compose::number(out, v),
                    ArithOutcome::NotFound => out.extend_from_slice(compose::NOT_FOUND),
                    ArithOutcome::NonNumeric => {
                        out.extend_from_slice(compose::CLIENT_ERROR_NON_NUMERIC)
                    }
                }
            }
            Request::Touch {
                key,
                exptime,
                noreply,
            } => {
                let expires_at = self.expires_at(exptime, now);
                let hit = self.store.touch(key, key_hash, expires_at, now).is_some();
                if !noreply {
                    out.extend_from_slice(if hit {
                        compose::TOUCHED
                    } else {
                        compose::NOT_FOUND
                    });
                }
            }
            _ => debug_assert!(false, "exec_keyed called with an unkeyed request"),
        }
    }
}
