//! Which shard owns a key, and how a multi-key request splits across shards.
//!
//! PURE: no I/O. `key_hash` is computed once per key (seeded xxh3) and carried with the
//! request. [`shard_of`] uses the high 32 bits (multiply-shift range reduction); each store's
//! hash table uses the low bits, so the two choices stay independent.

pub mod hash;

pub use hash::{key_hash, shard_of};

/// A shard's number: the key partition one executor owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);
