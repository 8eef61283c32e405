//! Counters with memcached's names, per shard and per slab class.
//!
//! Counting rules (the caller must not count these again):
//! * The Store counts every command counter itself; the caller counts none of them.
//! * `cmd_get` counts every [`super::Store::get`] call (one per key of a multi-get);
//!   `cmd_touch` counts every `touch` call (touch and gat; a gat caller that also wants
//!   memcached's `get_hits` for gat must not call `get` again: gat counts only `touch_*`);
//!   `cmd_set` counts every `store` call, including ones that fail (memcached counts `cmd_set`
//!   before it knows the outcome).
//! * `get_expired` / `get_flushed` are misses that found a dead item (they also count in
//!   `get_misses`). A dead item found by any command is unlinked and counted in `reclaimed`
//!   (plus `expired_unfetched` if nobody read it).
//! * `incr_*`/`decr_*`/`cas_*`/`touch_*`/`delete_*` count hits and misses as memcached does;
//!   `cas_badval` is a cas whose `cas_expected` differed.

/// Shard-wide counters and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub cmd_get: u64,
    pub cmd_set: u64,
    pub cmd_touch: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub get_expired: u64,
    pub get_flushed: u64,
    pub delete_hits: u64,
    pub delete_misses: u64,
    pub incr_hits: u64,
    pub incr_misses: u64,
    pub decr_hits: u64,
    pub decr_misses: u64,
    pub cas_hits: u64,
    pub cas_misses: u64,
    pub cas_badval: u64,
    pub touch_hits: u64,
    pub touch_misses: u64,
    /// Gauge: linked items.
    pub curr_items: u64,
    pub total_items: u64,
    /// Gauge: sum of the linked items' sizes (header + key + value), memcached's `bytes`.
    pub bytes: u64,
    pub evictions: u64,
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub evicted_unfetched: u64,
    /// Items reclaimed by [`super::Store::crawl`] (memcached's `crawler_reclaimed`).
    pub crawler_reclaimed: u64,
    /// Linked items the crawler examined (memcached's `crawler_items_checked`).
    pub crawler_items_checked: u64,
    /// Crawler passes begun over every class (memcached's `lru_crawler_starts`).
    pub lru_crawler_starts: u64,
    /// Pages moved between classes (memcached's `slabs_moved`).
    pub slabs_moved: u64,
    /// Live items evicted because their page moved to another class (memcached's
    /// `slab_reassign_evictions_nomem`: corecache never rescues them into other chunks; like
    /// memcached, it does not count them in `evictions`).
    pub slab_reassign_evictions_nomem: u64,
    /// Gauge: pages in the global page pool (memcached's `slab_global_page_pool`).
    pub slab_global_page_pool: u64,
    /// Gauge: page memory held, bytes (memcached's `total_malloced`).
    pub total_malloced: u64,
    /// Gauge: the shard's page budget, bytes (memcached's `limit_maxbytes`).
    pub limit_maxbytes: u64,
    /// Gauge: hash table slot memory, bytes.
    pub hash_bytes: u64,
    /// Gauge: home slots of the current hash table (one item each at most; memcached's
    /// `hash_power_level` is the base-2 logarithm of the slots across shards).
    pub hash_slots: u64,
    /// Gauge: whether the table is migrating to a new size (memcached's `hash_is_expanding`).
    pub hash_is_expanding: bool,
    /// Per slab class, for `stats slabs` / `stats items`; only classes holding pages.
    pub classes: Vec<ClassStats>,
}

/// One slab class's gauges and counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub slab_class: u8,
    /// The page size for the huge class (items over a page, each sized exactly), whose
    /// `total_pages`, `total_chunks` and `used_chunks` count the page units its items are
    /// charged.
    pub chunk_size: u64,
    pub chunks_per_page: u64,
    pub total_pages: u64,
    pub total_chunks: u64,
    pub used_chunks: u64,
    pub free_chunks: u64,
    /// Chunks of this class's pages not carved out yet (part of `free_chunks`).
    pub free_chunks_end: u64,
    pub mem_requested: u64,
    /// `stats items`: linked items in this class.
    pub number: u64,
    /// `stats items`: seconds since the least recently accessed item was read or stored.
    pub age: u64,
    pub counters: ClassCounters,
}

/// Per-class event counters (reset by `reset_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounters {
    pub evicted: u64,
    pub evicted_nonzero: u64,
    pub evicted_unfetched: u64,
    pub outofmemory: u64,
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub crawler_reclaimed: u64,
    /// Seconds between the last access and the eviction of the class's latest evicted item.
    pub evicted_time: u64,
    /// Linked items of the class the crawler looked at.
    pub crawler_items_checked: u64,
    /// `stats slabs`: hits and storage commands by the class of the item concerned.
    pub get_hits: u64,
    pub cmd_set: u64,
    pub delete_hits: u64,
    pub incr_hits: u64,
    pub decr_hits: u64,
    pub cas_hits: u64,
    pub cas_badval: u64,
    pub touch_hits: u64,
}
