//! The optional durability log (`--log-dir`): an append-only file of mutation records written
//! by one dedicated thread, and its replay at startup.
//!
//! * [`record`] (PURE): the record format, byte by byte in `doc/log-format.md`.
//! * [`replay`]: reads a log back, skipping damaged stretches and finding a torn tail.
//! * [`writer`]: the log thread (batches from every shard, one write per batch, the fsync
//!   policy, acknowledgements), and each shard's end of its queue to it.
//!
//! Invariants: records of one shard reach the file in the order the shard made them; a
//! shard's record number `n` is acknowledged only once every record of that shard up to `n`
//! is written (and, under `--log-fsync always`, fsynced); every queue and buffer is bounded.
//!
//! Must not: touch a store (shards record and replay through `crate::shard`), or block an
//! executor while serving (a full queue is reported back, not waited on).

pub mod record;
pub mod replay;
pub mod writer;
