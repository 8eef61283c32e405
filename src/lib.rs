//! corecache: a thread-per-core, shared-nothing, memcached-compatible in-memory cache.
//!
//! # Layout
//! - [`config`]: command line (memcached's flags) -> validated [`config::Config`].
//! - [`clock`]: server time in seconds since start; exptime conversion. PURE.
//! - [`protocol`]: memcached wire protocol: streaming parser and reply composer. PURE.
//! - [`storage`]: one [`storage::Store`] per shard: slab allocator, hash table, LRU, expiry. PURE.
//! - [`router`]: `key_hash` (seeded xxh3) and `shard_of`. PURE.
//! - [`prefix_stats`]: `stats detail` per-prefix counters, one per shard. PURE.
//! - [`shard`]: glue: executes a parsed request against a store and composes its reply.
//! - [`shard_meta`]: the same for memcached's meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`).
//! - [`watch`]: the `watch` event log of one shard: event kinds and memcached's line formats.
//! - [`durability`]: the optional append-only log (`--log-dir`): record format, replay, the
//!   directory's files, the log thread, snapshots and compaction.
//! - [`runtime`]: the only place with threads, sockets, rings and timers.
//!
//! Dependency direction: `main -> runtime -> {router, shard, durability, config, clock}`;
//! `shard -> {protocol, storage, router, prefix_stats, watch, durability::record}`. `protocol`, `storage`, `prefix_stats`, `clock`
//! and `router` use nothing above them (enforced by `tests/layering.rs`).
//!
//! # The request path
//! A connection's core reads into a bounded buffer, parses, and hashes each key once. It runs
//! local keys inline and batches remote keys into one envelope per owning shard per loop turn.
//! The owner runs `Shard::execute`, and replies return over the mesh. Replies are written in
//! `seq` order, all of one loop turn in one send.

pub mod clock;
pub mod config;
pub mod durability;
pub mod prefix_stats;
pub mod protocol;
pub mod router;
pub mod runtime;
pub mod shard;
pub mod shard_meta;
pub mod storage;
pub mod watch;
