//! The per-shard storage engine: slab allocator, compact items, hash table, CLOCK eviction,
//! lazy expiry plus a budgeted crawler, flush, and memcached's counters.
//!
//! PURE and synchronous: one [`Store`] per shard, `&mut self`, `now` passed in, no clocks,
//! threads, files or sockets, and nothing from `protocol`, `router` or `runtime`. The caller
//! computes `key_hash` once (the server's `key_hash`) and passes it with every key;
//! [`StoreConfig::key_hash`] is the same function, used to re-hash keys when a page is emptied or
//! the table migrates.
//!
//! Modules: [`item`] (header layout), [`slab`] (classes, pages, free lists), [`table`] (hash
//! table), `lru` (CLOCK eviction and page rebalancing), `crawler` (budgeted reclaim), [`stats`].
//!
//! Invariants (walked by [`Store::check_invariants`]): every table slot points at a LINKED chunk
//! whose key hashes to that slot and appears once; every carved chunk is LINKED or on its page's
//! free list; `curr_items`/`bytes`/per-class gauges equal what the walk counts; page units never
//! exceed the budget.
//!
//! Semantics are memcached 1.6's. An item is dead when `clock::is_dead(expires_at, now)` or when
//! it was stored before the last flush: flushes compare the per-shard store sequence (each item's
//! `seq`, which is also its cas), so a set in the same second right after a flush survives.

pub mod admin;
mod crawler;
pub mod item;
mod lru;
pub mod meta;
pub mod pagemem;
pub mod restore;
mod sizes;
pub mod slab;
pub mod stats;
pub mod table;

pub use admin::{ItemMeta, PageSink, PageSource, Reassigned, WalkCursor};
pub use crawler::ClassSet;
pub use stats::{ClassCounters, ClassStats, StoreStats};

use crate::clock::{is_dead, Instant32};
use item::{ItemMut, ItemRef, Layout, NewItem};
use slab::{Loc, Slabs};
use table::{SlotRef, Table, MIGRATE_BUCKETS_PER_STEP};

/// How much of an item [`Store::prefetch_items`] warms: header, key and the start of the value.
const ITEM_PREFETCH_BYTES: usize = 192;

/// A shard's storage settings.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// This shard's share of `-m`: item memory, in whole pages.
    pub memory_bytes_max: usize,
    /// Page size (1 MiB by default); also the largest normal chunk.
    pub page_size: usize,
    /// `-f`: chunk size growth above the fine-grained small classes.
    pub slab_growth_factor: f64,
    /// `-I`: the largest value, in bytes.
    pub item_size_max: usize,
    /// `-C` turns this off; then every cas reads 0.
    pub cas_enabled: bool,
    /// The server's key hash.
    pub key_hash: fn(&[u8]) -> u64,
    /// `-L`: back pages with transparent huge pages (see `pagemem`).
    pub large_pages: bool,
    /// `-n`: the smallest chunk in bytes ([`slab::CHUNK_BYTES_SMALLEST`] by default).
    pub chunk_bytes_smallest: usize,
    /// Chunk sizes step by 8 bytes below this size, then grow by `slab_growth_factor`
    /// ([`slab::FINE_CLASS_BYTES_MAX`]; 0: they grow by the factor from the smallest chunk).
    pub fine_class_bytes_max: usize,
    /// Classes per growth factor above the fine steps: 1 (each class `slab_growth_factor`
    /// above the one below), or more for finer classes (see [`slab::class_sizes`]).
    pub growth_steps: u32,
    /// `-M` turns this off: making room may reclaim dead items and move empty pages, never
    /// evict a live item; a store that finds no room fails with [`StoreError::OutOfMemory`].
    pub evictions_enabled: bool,
}

/// The storage commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// Carries `cas_expected`.
    Cas(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The value exceeds `item_size_max`.
    TooLarge,
    /// Nothing could be evicted to make room (or the item needs more than the shard's memory).
    OutOfMemory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOutcome {
    Value(u64),
    NotFound,
    NonNumeric,
}

/// A live item, borrowed from its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemView<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub client_flags: u32,
    /// 0 when cas is disabled.
    pub cas: u64,
    pub expires_at: Option<Instant32>,
    /// The access before this one (store or read).
    pub last_access: Instant32,
    pub slab_class: u8,
    /// Whether the item had been read before this access.
    pub fetched: bool,
}

/// Why a lookup found nothing live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    Absent,
    Expired,
    Flushed,
}

/// Why an item leaves the table (decides the counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unlink {
    Delete,
    Replaced,
    Evicted,
    /// Evicted because its page moved to another class (not the class's own pressure).
    EvictedByPageMove,
    Reclaimed,
    CrawlerReclaimed,
}

/// One shard's items.
pub struct Store {
    cfg: StoreConfig,
    slabs: Slabs,
    table: Table,
    /// Counters (gauges are computed in [`Store::stats`]).
    counters: StoreStats,
    class_counters: Vec<ClassCounters>,
    /// Evictions per class since it last gained a page (decayed on every page move).
    evictions_window: Vec<u64>,
    /// Per class: how long its evicted items had gone unread, in seconds, smoothed over its
    /// recent evictions (3/4 old, 1/4 new), and when it last evicted.
    eviction_age: Vec<u32>,
    last_eviction: Vec<Option<Instant32>>,
    /// Per class: when an item of its size was last stored.
    last_store: Vec<Option<Instant32>>,
    curr_items: u64,
    bytes: u64,
    /// The next store sequence (and cas); starts at 1.
    seq_next: u64,
    /// Items with `seq` below this were flushed.
    oldest_live_seq: u64,
    /// Without cas (`-C`): memcached's `oldest_live`, the second of the last client
    /// `flush_all` (see [`Store::set_oldest_live`]).
    oldest_live: Option<Instant32>,
    flush_pending: Option<Instant32>,
    /// An item that eviction and page moves must not touch during one operation.
    pinned: Option<Loc>,
    crawl_cursor: crawler::Cursor,
    /// An `lru_crawler crawl` pass asked for and not finished.
    crawl_pass: bool,
    /// The classes the requested pass sweeps (every class otherwise).
    crawl_classes: crawler::ClassSet,
    /// `slabs automove` mode (0, 1 or 2; see `lru`).
    automove: u8,
    /// Cas values step by the shard count from the shard's index (see `cas_of`).
    cas_stride: u64,
    cas_offset: u64,
    scratch: Vec<u8>,
    /// The latest `now` any call passed in (for `stats`, which takes no `now`).
    now_latest: Instant32,
    /// `stats sizes`, when tracking is on.
    sizes: Option<sizes::SizeHistogram>,
    /// Evictions recorded for the `watch` log while switched on ([`Store::set_eviction_log`]),
    /// at most [`EVICTED_LOG_MAX`] until taken.
    evicted_log: Option<Vec<EvictedItem>>,
}

/// Most evictions [`Store::take_evicted`] holds between two takes (more are not recorded).
pub const EVICTED_LOG_MAX: usize = 256;

/// An evicted item, as recorded for the `watch` log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvictedItem {
    pub key: Vec<u8>,
    pub fetched: bool,
    pub expires_at: Option<Instant32>,
    pub last_access: Instant32,
    pub slab_class: u8,
    pub value_len: usize,
}

/// A live item's class, value length and expiry (for the `watch` log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemSummary {
    pub slab_class: u8,
    pub value_len: usize,
    pub expires_at: Option<Instant32>,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Store {
        assert!(cfg.page_size >= 1024, "page_size below 1 KiB");
        let slabs = Slabs::with_classes(
            cfg.page_size,
            cfg.slab_growth_factor,
            cfg.chunk_bytes_smallest,
            cfg.fine_class_bytes_max,
            cfg.growth_steps,
            cfg.memory_bytes_max,
        )
        .with_large_pages(cfg.large_pages);
        let class_count = slabs.classes.len();
        Store {
            cfg,
            slabs,
            table: Table::new(),
            counters: StoreStats::default(),
            class_counters: vec![ClassCounters::default(); class_count],
            evictions_window: vec![0; class_count],
            eviction_age: vec![0; class_count],
            last_eviction: vec![None; class_count],
            last_store: vec![None; class_count],
            curr_items: 0,
            bytes: 0,
            seq_next: 1,
            oldest_live_seq: 0,
            oldest_live: None,
            flush_pending: None,
            pinned: None,
            crawl_cursor: crawler::Cursor::default(),
            crawl_pass: false,
            crawl_classes: crawler::ClassSet::ALL,
            automove: 1,
            cas_stride: 1,
            cas_offset: 0,
            scratch: Vec::new(),
            now_latest: Instant32(0),
            sizes: None,
            evicted_log: None,
        }
    }

    /// The slab class chunk sizes (the huge class reads 0).
    pub fn class_chunk_sizes(&self) -> Vec<usize> {
        self.slabs
            .classes
            .iter()
            .map(|class| class.chunk_size)
            .collect()
    }

    /// The class an item of this size goes to.
    pub fn class_for(
        &self,
        key_len: usize,
        value_len: usize,
        client_flags: u32,
        expires_at: Option<Instant32>,
    ) -> u8 {
        let layout = Layout::new(key_len, value_len, client_flags, expires_at);
        self.slabs.class_for(layout.total_bytes())
    }

    /// Switches recording of evictions for the `watch` log (off: nothing recorded or held).
    pub fn set_eviction_log(&mut self, on: bool) {
        if on != self.evicted_log.is_some() {
            self.evicted_log = on.then(Vec::new);
        }
    }

    /// The evictions recorded since the last take, oldest first.
    pub fn take_evicted(&mut self, into: &mut Vec<EvictedItem>) {
        if let Some(log) = &mut self.evicted_log {
            into.append(log);
        }
    }

    /// The live item's class, value length and expiry, without counters or a bump (a dead
    /// item is reclaimed on the way, as any lookup does).
    pub fn peek_summary(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
    ) -> Option<ItemSummary> {
        self.tick(now);
        let slot = self.find_live(key, key_hash, now).ok()?;
        let item = ItemRef::new(self.slabs.chunk(slot.loc));
        Some(ItemSummary {
            slab_class: self.slabs.class_of(slot.loc),
            value_len: item.value().len(),
            expires_at: item.expires_at(),
        })
    }

    /// Memory the store holds: page bytes plus hash table bytes.
    pub fn memory_bytes(&self) -> usize {
        self.slabs.page_bytes() + self.table.bytes()
    }

    /// Looks a key up; a hit marks it fetched and referenced.
    pub fn get(&mut self, key: &[u8], key_hash: u64, now: Instant32) -> Option<ItemView<'_>> {
        self.tick(now);
        self.counters.cmd_get += 1;
        match self.find_live(key, key_hash, now) {
            Ok(slot) => {
                self.counters.get_hits += 1;
                self.class_counters_of(slot.loc).get_hits += 1;
                Some(self.access(slot.loc, now))
            }
            Err(miss) => {
                self.counters.get_misses += 1;
                self.count_miss_reason(miss);
                None
            }
        }
    }

    /// Sets a live item's expiry (touch, gat). Counts `cmd_touch` and `touch_hits`/`touch_misses`.
    pub fn touch(
        &mut self,
        key: &[u8],
        key_hash: u64,
        expires_at: Option<Instant32>,
        now: Instant32,
    ) -> Option<ItemView<'_>> {
        self.tick(now);
        self.counters.cmd_touch += 1;
        let Ok(slot) = self.find_live(key, key_hash, now) else {
            self.counters.touch_misses += 1;
            return None;
        };
        let mut loc = slot.loc;
        if !ItemMut::new(self.slabs.chunk_mut(loc)).set_expires_at(expires_at) {
            // The compact layout has no expiry field: move the item to a layout with one.
            match self.relocate_with_expiry(slot, key_hash, expires_at, now) {
                Some(new_loc) => loc = new_loc,
                None => {
                    self.counters.touch_misses += 1;
                    return None;
                }
            }
        }
        self.counters.touch_hits += 1;
        self.class_counters_of(loc).touch_hits += 1;
        Some(self.access(loc, now))
    }

    /// set/add/replace/append/prepend/cas. Counts `cmd_set` and the cas counters.
    // The signature is the shard's API (one call per storage command).
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        key_hash: u64,
        client_flags: u32,
        expires_at: Option<Instant32>,
        value: &[u8],
        now: Instant32,
    ) -> Result<StoreOutcome, StoreError> {
        self.tick(now);
        self.counters.cmd_set += 1;
        assert!((1..=250).contains(&key.len()), "key length out of range");
        if value.len() > self.cfg.item_size_max {
            self.drop_stale_on_failed_set(mode, key, key_hash);
            return Err(StoreError::TooLarge);
        }
        // Per class, a storage command counts where its data goes (as memcached counts it once
        // the item for the data is allocated, whatever the outcome).
        let class = self.class_for(key.len(), value.len(), client_flags, expires_at);
        self.class_counters[usize::from(class)].cmd_set += 1;
        let existing = self.find_live(key, key_hash, now).ok();
        if let Some(outcome) = self.store_precondition(mode, existing, now) {
            return Ok(outcome);
        }
        let mut client_flags = client_flags;
        let mut expires_at = expires_at;
        // Append/prepend keep the old flags and expiry; the old value is copied aside because
        // allocation may move memory around (the old item itself is pinned).
        let mut old_value = std::mem::take(&mut self.scratch);
        old_value.clear();
        if let (StoreMode::Append | StoreMode::Prepend, Some(slot)) = (mode, existing) {
            let old = ItemRef::new(self.slabs.chunk(slot.loc));
            client_flags = old.client_flags();
            expires_at = old.expires_at();
            old_value.extend_from_slice(old.value());
        }
        let value_parts: [&[u8]; 2] = match mode {
            StoreMode::Append => [&old_value, value],
            StoreMode::Prepend => [value, &old_value],
            _ => [value, &[]],
        };
        let value_len = value_parts[0].len() + value_parts[1].len();
        let layout = Layout::new(key.len(), value_len, client_flags, expires_at);
        let allocated = if value_len > self.cfg.item_size_max {
            Err(StoreError::TooLarge)
        } else {
            self.alloc_for(
                layout,
                existing.map(|slot| slot.loc),
                mode == StoreMode::Set,
                now,
            )
        };
        let loc = match allocated {
            Ok(loc) => loc,
            Err(error) => {
                self.scratch = old_value;
                self.drop_stale_on_failed_set(mode, key, key_hash);
                return Err(error);
            }
        };
        let seq = self.next_seq();
        let new = NewItem {
            key,
            client_flags,
            expires_at,
            seq,
            now,
            value_parts,
        };
        item::write(self.slabs.chunk_mut(loc), &new);
        self.scratch = old_value;
        self.link(key, key_hash, loc, true);
        if let StoreMode::Cas(_) = mode {
            self.counters.cas_hits += 1;
            self.class_counters_of(loc).cas_hits += 1;
        }
        Ok(StoreOutcome::Stored)
    }

    /// memcached unlinks the old item when a plain set fails, so stale data does not linger.
    fn drop_stale_on_failed_set(&mut self, mode: StoreMode, key: &[u8], key_hash: u64) {
        if mode == StoreMode::Set {
            if let Some(slot) = self.lookup(key, key_hash) {
                self.unlink(slot, Unlink::Delete);
            }
        }
    }

    /// The outcome when the mode's precondition fails (None: go ahead and store).
    fn store_precondition(
        &mut self,
        mode: StoreMode,
        existing: Option<SlotRef>,
        now: Instant32,
    ) -> Option<StoreOutcome> {
        match (mode, existing) {
            (StoreMode::Set, _) | (StoreMode::Add, None) => None,
            (StoreMode::Add, Some(slot)) => {
                // memcached bumps an item that an add found present.
                ItemMut::new(self.slabs.chunk_mut(slot.loc)).bump(now);
                Some(StoreOutcome::NotStored)
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                Some(StoreOutcome::NotStored)
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, Some(_)) => None,
            (StoreMode::Cas(_), None) => {
                self.counters.cas_misses += 1;
                Some(StoreOutcome::NotFound)
            }
            (StoreMode::Cas(cas_expected), Some(slot)) => {
                let cas = self.cas_of(ItemRef::new(self.slabs.chunk(slot.loc)).seq());
                if cas == cas_expected {
                    None
                } else {
                    self.counters.cas_badval += 1;
                    self.class_counters_of(slot.loc).cas_badval += 1;
                    Some(StoreOutcome::Exists)
                }
            }
        }
    }

    /// Removes a live item.
    pub fn delete(&mut self, key: &[u8], key_hash: u64, now: Instant32) -> bool {
        self.tick(now);
        match self.find_live(key, key_hash, now) {
            Ok(slot) => {
                self.counters.delete_hits += 1;
                self.class_counters_of(slot.loc).delete_hits += 1;
                self.unlink(slot, Unlink::Delete);
                true
            }
            Err(_) => {
                self.counters.delete_misses += 1;
                false
            }
        }
    }

    /// incr/decr: incr wraps at 2^64, decr floors at 0. As memcached, a result no longer than
    /// the old value is written in place padded with spaces ("10" decr 1 reads "9 "); a longer
    /// one makes a new item. Either way the item gets a new cas and keeps flags and expiry.
    pub fn arith(
        &mut self,
        key: &[u8],
        key_hash: u64,
        incr: bool,
        delta: u64,
        now: Instant32,
    ) -> ArithOutcome {
        self.tick(now);
        let Ok(slot) = self.find_live(key, key_hash, now) else {
            if incr {
                self.counters.incr_misses += 1;
            } else {
                self.counters.decr_misses += 1;
            }
            return ArithOutcome::NotFound;
        };
        let old = ItemRef::new(self.slabs.chunk(slot.loc));
        let Some(number) = parse_decimal(old.value()) else {
            return ArithOutcome::NonNumeric;
        };
        let result = if incr {
            number.wrapping_add(delta)
        } else {
            number.saturating_sub(delta)
        };
        let class_counters = &mut self.class_counters[usize::from(self.slabs.class_of(slot.loc))];
        if incr {
            class_counters.incr_hits += 1;
            self.counters.incr_hits += 1;
        } else {
            class_counters.decr_hits += 1;
            self.counters.decr_hits += 1;
        }
        let digits = result.to_string();
        if digits.len() <= old.value_len() {
            let (old_seq, total) = (old.seq(), old.total_bytes());
            let seq = self.next_seq();
            let mut item = ItemMut::new(self.slabs.chunk_mut(slot.loc));
            let value = item.value_mut();
            value.fill(b' ');
            value[..digits.len()].copy_from_slice(digits.as_bytes());
            item.set_seq(seq);
            item.touch_access(now);
            self.sizes_restamped(old_seq, seq, total);
            return ArithOutcome::Value(result);
        }
        let (client_flags, expires_at) = (old.client_flags(), old.expires_at());
        let layout = Layout::new(key.len(), digits.len(), client_flags, expires_at);
        let Ok(loc) = self.alloc_for(layout, Some(slot.loc), false, now) else {
            // Only possible when the old item pins the last evictable chunk.
            return ArithOutcome::NotFound;
        };
        let seq = self.next_seq();
        let new = NewItem {
            key,
            client_flags,
            expires_at,
            seq,
            now,
            value_parts: [digits.as_bytes(), &[]],
        };
        item::write(self.slabs.chunk_mut(loc), &new);
        self.link(key, key_hash, loc, true);
        ArithOutcome::Value(result)
    }

    /// Sizes the empty hash table for `items` keys before a bulk restore (see
    /// [`table::Table::reserve`]).
    pub fn reserve_items(&mut self, items: usize) {
        self.table.reserve(items);
    }

    /// Sizes the empty hash table to at least `slots` home slots (see
    /// [`table::Table::reserve_slots`]); false when that memory cannot be had.
    pub fn reserve_hash_slots(&mut self, slots: usize) -> bool {
        self.table.reserve_slots(slots)
    }

    /// Home slots of the hash table (`hash_power_level` counts them over every shard).
    pub fn hash_slots(&self) -> usize {
        self.table.home_slots()
    }

    /// The time of a delayed `flush_all` not yet due (a snapshot records it).
    pub fn flush_pending(&self) -> Option<Instant32> {
        self.flush_pending
    }

    /// `flush_all`: at or before `now` flushes now, else when `now` first reaches `at`.
    pub fn flush_all(&mut self, at: Instant32, now: Instant32) {
        // An earlier delayed flush that is due applies before this one replaces it.
        self.tick(now);
        if at <= now {
            self.flush_pending = None;
            // memcached takes a cas id for an immediate flush (not for a delayed one), so the
            // cas values of later stores stay the ones memcached would give.
            self.oldest_live_seq = self.next_seq();
        } else {
            self.flush_pending = Some(at);
        }
        self.tick(now);
    }

    /// A client's `flush_all` effective at `at`, as memcached without cas (`-C`) also
    /// applies it: with no cas to mark the cliff, memcached flushes by time alone (its
    /// `oldest_live`), so once `now` reaches `at`, every item last stored or bumped at or
    /// before that second is flushed, including one stored after the flush within that
    /// second. With cas this does nothing: the sequence cliff of [`Store::flush_all`] is
    /// exact, as memcached's cas cliff is. A later flush replaces the time, as in memcached.
    /// Not logged: a replay applies only the sequence cliff.
    pub fn set_oldest_live(&mut self, at: Instant32) {
        if !self.cfg.cas_enabled {
            self.oldest_live = Some(at);
        }
    }

    /// The cas of the key's live item, counting nothing (the binary protocol checks a request's
    /// cas before delete, incr/decr and append/prepend, and returns the new cas after a store).
    pub fn peek_cas(&mut self, key: &[u8], key_hash: u64, now: Instant32) -> Option<u64> {
        self.tick(now);
        let slot = self.find_live(key, key_hash, now).ok()?;
        Some(self.cas_of(ItemRef::new(self.slabs.chunk(slot.loc)).seq()))
    }

    /// The live item's cas and value length, without counting a fetch.
    pub fn peek_cas_and_len(
        &mut self,
        key: &[u8],
        key_hash: u64,
        now: Instant32,
    ) -> Option<(u64, usize)> {
        self.tick(now);
        let slot = self.find_live(key, key_hash, now).ok()?;
        let item = ItemRef::new(self.slabs.chunk(slot.loc));
        Some((self.cas_of(item.seq()), item.value_len()))
    }

    /// Stores a counter's initial value (binary incr/decr on a missing key): an `add` that, as
    /// in memcached, counts neither a set nor an incr/decr miss.
    pub fn create_counter(
        &mut self,
        key: &[u8],
        key_hash: u64,
        value: &[u8],
        expires_at: Option<Instant32>,
        now: Instant32,
    ) -> Result<StoreOutcome, StoreError> {
        let saved = self.counters.cmd_set;
        let outcome = self.store(StoreMode::Add, key, key_hash, 0, expires_at, value, now);
        self.counters.cmd_set = saved;
        outcome
    }

    /// Removes the key's item without counting a delete: a `set` refused as too large must not
    /// leave the old value behind (memcached unlinks it too).
    pub fn forget(&mut self, key: &[u8], key_hash: u64, now: Instant32) {
        let saved = (self.counters.delete_hits, self.counters.delete_misses);
        self.delete(key, key_hash, now);
        (self.counters.delete_hits, self.counters.delete_misses) = saved;
    }

    /// Zeroes the counters (not the gauges).
    pub fn reset_stats(&mut self) {
        self.counters = StoreStats::default();
        self.class_counters.fill(ClassCounters::default());
    }

    // ---- helpers shared by the commands ----

    /// Per-operation upkeep: a due delayed flush, one bounded table migration step.
    fn tick(&mut self, now: Instant32) {
        self.now_latest = self.now_latest.max(now);
        if let Some(at) = self.flush_pending {
            if at <= now {
                self.flush_pending = None;
                self.oldest_live_seq = self.seq_next;
            }
        }
        if self.table.is_migrating() {
            let slabs = &self.slabs;
            let key_hash = self.cfg.key_hash;
            self.table
                .migrate_step(MIGRATE_BUCKETS_PER_STEP, &mut |loc| {
                    key_hash(ItemRef::new(slabs.chunk(loc)).key())
                });
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq_next;
        self.seq_next += 1;
        seq
    }

    /// The cas clients see for an item of store sequence `seq`: with one shard, the
    /// sequence itself (memcached's values); with `n`, shard `i`'s `k`-th sequence is
    /// `(k - 1) * n + i + 1`, so values never repeat across shards (memcached has one counter
    /// for the whole server, and clients may take a cas as unique) and still grow with `seq`.
    fn cas_of(&self, seq: u64) -> u64 {
        if self.cfg.cas_enabled {
            seq.saturating_sub(1)
                .wrapping_mul(self.cas_stride)
                .wrapping_add(self.cas_offset + 1)
        } else {
            0
        }
    }

    /// Interleaves this store's cas values with the other shards' (see `cas_of`): shard
    /// `index` of `count`.
    pub fn set_cas_shard(&mut self, index: u16, count: u16) {
        self.cas_stride = u64::from(count.max(1));
        self.cas_offset = u64::from(index);
    }

    /// First step of warming a lookup: start loading the key's home bucket.
    pub fn prefetch_bucket(&self, key_hash: u64) {
        self.table.prefetch(key_hash);
    }

    /// Second step, once the bucket has had time to arrive: start loading the headers of the
    /// items whose tag matches (the lookup compares their keys; the read uses their fields).
    pub fn prefetch_items(&self, key_hash: u64) {
        self.table.home_candidates(key_hash, |loc| {
            if let Some((ptr, len)) = self.slabs.chunk_ptr(loc) {
                // Header, key and the start of the value: the lines a hit reads first.
                let warm = len.min(ITEM_PREFETCH_BYTES);
                let first = ptr as usize & !63;
                let last = (ptr as usize + warm.max(1) - 1) & !63;
                for line in (first..=last).step_by(64) {
                    table::prefetch_line(line as *const u8);
                }
            }
        });
    }

    fn lookup(&self, key: &[u8], key_hash: u64) -> Option<SlotRef> {
        let slabs = &self.slabs;
        self.table.find(key_hash, &mut |loc| {
            ItemRef::new(slabs.chunk(loc)).key() == key
        })
    }

    /// `get_expired` / `get_flushed`: why a read found nothing.
    fn count_miss_reason(&mut self, miss: Miss) {
        match miss {
            Miss::Expired => self.counters.get_expired += 1,
            Miss::Flushed => self.counters.get_flushed += 1,
            Miss::Absent => {}
        }
    }

    /// Why an item is dead at `now`, if it is.
    fn dead_reason(&self, item: ItemRef<'_>, now: Instant32) -> Option<Miss> {
        if item.seq() < self.oldest_live_seq || self.flushed_by_time(item, now) {
            Some(Miss::Flushed)
        } else if is_dead(item.expires_at(), now) {
            Some(Miss::Expired)
        } else {
            None
        }
    }

    /// memcached's `item_is_flushed` without cas: a flush time reached, and the item's last
    /// store or bump at or before it.
    fn flushed_by_time(&self, item: ItemRef<'_>, now: Instant32) -> bool {
        self.oldest_live
            .is_some_and(|at| at <= now && item.last_access() <= at)
    }

    /// The live item for a key; a dead one is reclaimed on the way.
    fn find_live(&mut self, key: &[u8], key_hash: u64, now: Instant32) -> Result<SlotRef, Miss> {
        let slot = self.lookup(key, key_hash).ok_or(Miss::Absent)?;
        match self.dead_reason(ItemRef::new(self.slabs.chunk(slot.loc)), now) {
            None => Ok(slot),
            Some(miss) => {
                self.unlink(slot, Unlink::Reclaimed);
                Err(miss)
            }
        }
    }

    /// Marks a read and returns the view (with the state from before this access).
    fn access(&mut self, loc: Loc, now: Instant32) -> ItemView<'_> {
        let before = ItemRef::new(self.slabs.chunk(loc));
        let (fetched, last_access) = (before.is_fetched(), before.last_access());
        ItemMut::new(self.slabs.chunk_mut(loc)).touch_access(now);
        let slab_class = self.slabs.class_of(loc);
        let item = ItemRef::new(self.slabs.chunk(loc));
        ItemView {
            key: item.key(),
            value: item.value(),
            client_flags: item.client_flags(),
            cas: self.cas_of(item.seq()),
            expires_at: item.expires_at(),
            last_access,
            slab_class,
            fetched,
        }
    }

    /// Allocates a chunk for `layout`, evicting or moving pages as needed. `keep` (the item
    /// being replaced) is pinned; for a plain set it is dropped first if only it stands in the way.
    fn alloc_for(
        &mut self,
        layout: Layout,
        keep: Option<Loc>,
        may_drop_keep: bool,
        now: Instant32,
    ) -> Result<Loc, StoreError> {
        self.pinned = keep;
        let result = self.alloc(layout.total_bytes(), now);
        self.pinned = None;
        match (result, keep) {
            (Err(StoreError::OutOfMemory), Some(keep)) if may_drop_keep => {
                let key_hash = (self.cfg.key_hash)(ItemRef::new(self.slabs.chunk(keep)).key());
                let slot = self.slot_of(key_hash, keep);
                self.unlink(slot, Unlink::Replaced);
                self.alloc(layout.total_bytes(), now)
            }
            (result, _) => result,
        }
    }

    /// The table slot pointing at `loc`.
    fn slot_of(&self, key_hash: u64, loc: Loc) -> SlotRef {
        self.table
            .find(key_hash, &mut |l| l == loc)
            .expect("linked item is in the table")
    }

    /// Links the freshly written item at `loc`, replacing any item with the same key.
    fn link(&mut self, key: &[u8], key_hash: u64, loc: Loc, counts_as_new: bool) {
        let class = self.slabs.class_of(loc);
        let item = ItemRef::new(self.slabs.chunk(loc));
        let (total, seq) = (item.total_bytes(), item.seq());
        let old = self.lookup_other(key, key_hash, loc);
        let slabs = &self.slabs;
        let hash = self.cfg.key_hash;
        let mut hash_of = |l: Loc| hash(ItemRef::new(slabs.chunk(l)).key());
        match old {
            Some(slot) => {
                self.table.replace(slot, key_hash, loc, &mut hash_of);
                self.account_unlink(slot.loc, Unlink::Replaced);
            }
            None => self.table.insert(key_hash, loc, &mut hash_of),
        }
        let class_ref = &mut self.slabs.classes[usize::from(class)];
        class_ref.used_chunks += 1;
        class_ref.mem_requested += total;
        self.curr_items += 1;
        self.bytes += total as u64;
        if counts_as_new {
            self.counters.total_items += 1;
        }
        self.sizes_linked(seq, total);
    }

    /// The slot of `key` other than the one at `loc` (which is not linked yet).
    fn lookup_other(&self, key: &[u8], key_hash: u64, loc: Loc) -> Option<SlotRef> {
        let slabs = &self.slabs;
        self.table.find(key_hash, &mut |l| {
            l != loc && ItemRef::new(slabs.chunk(l)).key() == key
        })
    }

    /// Removes an item from the table and frees its chunk.
    fn unlink(&mut self, slot: SlotRef, why: Unlink) {
        self.table.remove(slot);
        self.account_unlink(slot.loc, why);
    }

    /// Counters, gauges and the chunk of an item already out of the table.
    fn account_unlink(&mut self, loc: Loc, why: Unlink) {
        if why == Unlink::Evicted && self.evicted_log.is_some() {
            self.record_eviction(loc);
        }
        let item = ItemRef::new(self.slabs.chunk(loc));
        let (total, fetched, seq) = (item.total_bytes(), item.is_fetched(), item.seq());
        let has_expiry = item.expires_at().is_some();
        let idle_secs = u64::from(self.now_latest.since(item.last_access()));
        let class = usize::from(self.slabs.class_of(loc));
        let class_counters = &mut self.class_counters[class];
        match why {
            Unlink::Delete | Unlink::Replaced => {}
            // A page move evicts outside the class's own pressure; memcached counts those
            // apart, in `slab_reassign_evictions_nomem` only.
            Unlink::EvictedByPageMove => self.counters.slab_reassign_evictions_nomem += 1,
            Unlink::Evicted => {
                self.counters.evictions += 1;
                class_counters.evicted += 1;
                class_counters.evicted_time = idle_secs;
                self.evictions_window[class] += 1;
                let idle = u32::try_from(idle_secs).unwrap_or(u32::MAX);
                self.eviction_age[class] = match self.last_eviction[class] {
                    None => idle,
                    Some(_) => {
                        ((u64::from(self.eviction_age[class]) * 3 + u64::from(idle)) / 4) as u32
                    }
                };
                self.last_eviction[class] = Some(self.now_latest);
                if has_expiry {
                    class_counters.evicted_nonzero += 1;
                }
                if !fetched {
                    self.counters.evicted_unfetched += 1;
                    class_counters.evicted_unfetched += 1;
                }
            }
            Unlink::Reclaimed | Unlink::CrawlerReclaimed => {
                self.counters.reclaimed += 1;
                class_counters.reclaimed += 1;
                if !fetched {
                    self.counters.expired_unfetched += 1;
                    class_counters.expired_unfetched += 1;
                }
                if why == Unlink::CrawlerReclaimed {
                    self.counters.crawler_reclaimed += 1;
                    class_counters.crawler_reclaimed += 1;
                }
            }
        }
        let class_ref = &mut self.slabs.classes[class];
        class_ref.used_chunks -= 1;
        class_ref.mem_requested -= total;
        self.curr_items -= 1;
        self.bytes -= total as u64;
        self.sizes_unlinked(seq, total);
        self.slabs.free(loc);
    }

    /// Records the item at `loc`, about to be evicted, for the `watch` log (bounded).
    fn record_eviction(&mut self, loc: Loc) {
        let slab_class = self.slabs.class_of(loc);
        let item = ItemRef::new(self.slabs.chunk(loc));
        let Some(log) = &mut self.evicted_log else {
            return;
        };
        if log.len() < EVICTED_LOG_MAX {
            log.push(EvictedItem {
                key: item.key().to_vec(),
                fetched: item.is_fetched(),
                expires_at: item.expires_at(),
                last_access: item.last_access(),
                slab_class,
                value_len: item.value().len(),
            });
        }
    }

    /// Relocates an item into a layout with an expiry field (touch of a no-expiry item).
    fn relocate_with_expiry(
        &mut self,
        slot: SlotRef,
        key_hash: u64,
        expires_at: Option<Instant32>,
        now: Instant32,
    ) -> Option<Loc> {
        let old = ItemRef::new(self.slabs.chunk(slot.loc));
        let (client_flags, seq) = (old.client_flags(), old.seq());
        let (state, meta_bits) = (old.state(), old.meta_bits());
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(old.key());
        let key_len = scratch.len();
        scratch.extend_from_slice(old.value());
        let layout = Layout::new(key_len, scratch.len() - key_len, client_flags, expires_at);
        let result = self.alloc_for(layout, Some(slot.loc), false, now);
        let loc = result.ok();
        if let Some(loc) = loc {
            let (key, value) = scratch.split_at(key_len);
            let new = NewItem {
                key,
                client_flags,
                expires_at,
                seq,
                now: ItemRef::new(self.slabs.chunk(slot.loc)).last_access(),
                value_parts: [value, &[]],
            };
            item::write(self.slabs.chunk_mut(loc), &new);
            // Keep the recency state (FETCHED, CLOCK) of the old item.
            let clock = (state >> 2) & 0b11;
            let chunk = self.slabs.chunk_mut(loc);
            chunk[0] |= state & (item::FETCHED | item::KEY_BINARY);
            ItemMut::new(chunk).set_clock(clock);
            ItemMut::new(chunk).set_meta_bits(meta_bits);
            // A move, not a new item: total_items stays.
            self.link(key, key_hash, loc, false);
        }
        self.scratch = scratch;
        loc
    }

    /// Shard counters, gauges and per-class statistics.
    pub fn stats(&self) -> StoreStats {
        let mut stats = self.counters.clone();
        stats.curr_items = self.curr_items;
        stats.bytes = self.bytes;
        stats.total_malloced = self.slabs.page_bytes() as u64;
        stats.slab_global_page_pool = self.slabs.pool_pages() as u64;
        stats.limit_maxbytes = (self.slabs.units_max * self.slabs.page_size) as u64;
        stats.hash_bytes = self.table.bytes() as u64;
        stats.hash_slots = self.hash_slots() as u64;
        stats.hash_is_expanding = self.table.is_migrating();
        stats.classes = (0..self.slabs.classes.len())
            .filter(|&class| {
                !self.slabs.classes[class].pages.is_empty()
                    || self.class_counters[class] != ClassCounters::default()
                    || (class == usize::from(self.slabs.huge_class())
                        && self.slabs.spare_huge_units() > 0)
            })
            .map(|class| self.class_stats(class as u8))
            .collect();
        stats
    }

    /// The per-class counters of the class `loc` is in.
    fn class_counters_of(&mut self, loc: Loc) -> &mut ClassCounters {
        let class = self.slabs.class_of(loc);
        &mut self.class_counters[usize::from(class)]
    }

    /// One class's statistics; `age` scans the class's items (an admin command's cost).
    fn class_stats(&self, class: u8) -> ClassStats {
        let class_ref = &self.slabs.classes[usize::from(class)];
        let mut oldest: Option<Instant32> = None;
        self.for_each_linked(class, |item| {
            let at = item.last_access();
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        });
        let mut total_pages = class_ref.pages.len() as u64;
        let mut chunks_per_page = u64::from(class_ref.chunks_per_page);
        let mut chunk_size = class_ref.chunk_size as u64;
        let mut used_chunks = class_ref.used_chunks as u64;
        let mut free_chunks = self.slabs.free_chunks(class) as u64;
        if class == self.slabs.huge_class() {
            // Shown as memcached shows an item larger than its largest chunk: in page-sized
            // chunks, one a page, as many as the budget units the items are charged (a huge
            // item's page lives exactly as long as its item).
            let units: u64 = class_ref
                .pages
                .iter()
                .map(|&id| u64::from(self.slabs.pages[id as usize].units))
                .sum();
            (chunk_size, chunks_per_page) = (self.slabs.page_size as u64, 1);
            (total_pages, used_chunks) = (units, units);
            // The spare allocation reads as free chunks, as an emptied page would.
            let spare = self.slabs.spare_huge_units() as u64;
            total_pages += spare;
            free_chunks += spare;
        }
        ClassStats {
            slab_class: class,
            chunk_size,
            chunks_per_page,
            total_pages,
            total_chunks: total_pages * chunks_per_page,
            used_chunks,
            free_chunks,
            free_chunks_end: self.slabs.uncarved_chunks(class) as u64,
            mem_requested: class_ref.mem_requested as u64,
            number: class_ref.used_chunks as u64,
            // Relative to the latest `now` seen (stats takes no `now`).
            age: oldest.map_or(0, |o| u64::from(self.now_latest.since(o))),
            counters: self.class_counters[usize::from(class)],
        }
    }

    fn for_each_linked(&self, class: u8, mut visit: impl FnMut(ItemRef<'_>)) {
        let class_ref = &self.slabs.classes[usize::from(class)];
        for &page_id in &class_ref.pages {
            let carved = self.slabs.pages[page_id as usize].carved;
            for chunk in 0..carved {
                let item = ItemRef::new(self.slabs.chunk(Loc {
                    page: page_id,
                    chunk,
                }));
                if item.is_linked() {
                    visit(item);
                }
            }
        }
    }

    /// Walks the table, chunk states and free lists; panics on a broken invariant.
    pub fn check_invariants(&self) {
        assert!(self.pinned.is_none(), "pin left behind");
        let free_listed = self.slabs.check_invariants();
        let slabs = &self.slabs;
        let hash = self.cfg.key_hash;
        let locs = self
            .table
            .check(&mut |l| hash(ItemRef::new(slabs.chunk(l)).key()));
        assert_eq!(locs.len() as u64, self.curr_items, "curr_items drifted");
        let mut seen = std::collections::HashSet::with_capacity(locs.len());
        for &loc in &locs {
            assert!(seen.insert(loc), "two slots point at one chunk");
            let page = &self.slabs.pages[loc.page as usize];
            assert!(
                !page.vacant && loc.chunk < page.carved,
                "slot points outside carved chunks"
            );
            let item = ItemRef::new(self.slabs.chunk(loc));
            assert!(item.is_linked(), "slot points at a free chunk");
            assert!(
                item.total_bytes() <= self.slabs.chunk_size_of(loc),
                "item overflows its chunk"
            );
            assert!(item.seq() < self.seq_next, "item from the future");
            let found = self
                .lookup(item.key(), hash(item.key()))
                .map(|slot| slot.loc);
            assert_eq!(
                found,
                Some(loc),
                "key does not find its own item (duplicate key?)"
            );
        }
        if let Some(histogram) = &self.sizes {
            let mut expected = sizes::SizeHistogram::new(self.cfg.item_size_max, histogram.seq_min);
            for &loc in &locs {
                let item = ItemRef::new(self.slabs.chunk(loc));
                expected.add(item.seq(), item.total_bytes());
            }
            assert_eq!(
                histogram.counts().collect::<Vec<_>>(),
                expected.counts().collect::<Vec<_>>(),
                "size histogram drifted"
            );
        }
        let mut linked_total = 0usize;
        let mut bytes_total = 0u64;
        let mut carved_total = 0usize;
        for (class, class_ref) in self.slabs.classes.iter().enumerate() {
            let (mut linked, mut bytes) = (0usize, 0usize);
            self.for_each_linked(class as u8, |item| {
                linked += 1;
                bytes += item.total_bytes();
            });
            assert_eq!(linked, class_ref.used_chunks, "used_chunks drifted");
            assert_eq!(bytes, class_ref.mem_requested, "mem_requested drifted");
            linked_total += linked;
            bytes_total += bytes as u64;
            carved_total += class_ref
                .pages
                .iter()
                .map(|&p| self.slabs.pages[p as usize].carved as usize)
                .sum::<usize>();
        }
        assert_eq!(
            linked_total,
            locs.len(),
            "linked chunk missing from the table"
        );
        assert_eq!(bytes_total, self.bytes, "bytes drifted");
        assert_eq!(
            linked_total + free_listed,
            carved_total,
            "carved chunk neither linked nor free"
        );
    }
}

/// memcached's `safe_strtoull` on a value: optional leading C-`isspace` bytes and '+', decimal
/// digits (at least one), then the end or a C-`isspace` byte; past 2^64-1 or a '-' is
/// non-numeric. Any length is accepted ("000...0007" is 7), as `strtoull` does.
fn parse_decimal(value: &[u8]) -> Option<u64> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    let start = value
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(value.len());
    let mut rest = &value[start..];
    if let [b'+', tail @ ..] = rest {
        rest = tail;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits).is_some_and(|&b| !is_space(b)) {
        return None;
    }
    rest[..digits].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests;
