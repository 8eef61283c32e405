//! Glue between the protocol and one shard's store: executes a parsed request and composes its
//! reply straight into an output buffer (one copy of a value: slab -> reply bytes).
//!
//! Requests reach here already routed: every key handed to a [`Shard`] is owned by it. Commands
//! that concern the whole server (`stats`, `flush_all`, `version`, ...) are split or answered by
//! the runtime; this module supplies each shard's part of them.

pub mod binary;

use crate::clock::{self, Epoch, Instant32};
use crate::prefix_stats::PrefixStats;
use crate::protocol::{compose, GetVerb, Request, StoreVerb};
use crate::router::ShardId;
use crate::storage::{ArithOutcome, Store, StoreConfig, StoreError, StoreMode, StoreOutcome};

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
        }
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
        let item = if verb.touches() {
            self.store.touch(key, key_hash, touch_to, now)
        } else {
            self.store.get(key, key_hash, now)
        };
        if self.prefix_stats.enabled {
            self.prefix_stats.record_get(key, item.is_some());
        }
        if let Some(item) = item {
            let cas = verb.with_cas().then_some(item.cas);
            compose::value(out, item.key, item.client_flags, item.value, cas);
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
        if self.prefix_stats.enabled {
            match *req {
                Request::Store { key, .. } | Request::TooLarge { key, .. } => {
                    self.prefix_stats.record_set(key)
                }
                Request::Delete { key, .. } => self.prefix_stats.record_delete(key),
                _ => {}
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
