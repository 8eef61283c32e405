//! The optional durability log (`--log-dir`): append-only segments of mutation records written
//! by one dedicated thread, snapshots that let old segments go, and their replay at startup.
//!
//! * [`record`] (PURE): the record and file header format, byte by byte in
//!   `doc/log-format.md`.
//! * [`replay`]: reads a file back, skipping damaged stretches and finding a torn tail.
//! * [`files`]: the directory: file names, what startup keeps, adopting a version 1 log.
//! * [`writer`]: the log thread (batches from every shard, one write per batch, the fsync
//!   policy, acknowledgements, segment rotation), and each shard's end of its queues.
//! * [`snapshot`]: the snapshot thread (writes the shards' snapshot slices, then makes the
//!   snapshot durable and removes the segments it supersedes).
//!
//! Invariants: records of one shard reach the file in the order the shard made them; a
//! shard's record number `n` is acknowledged only once every record of that shard up to `n`
//! is written (and, under `--log-fsync always`, fsynced); every queue and buffer is bounded.
//!
//! Must not: touch a store (shards record and replay through `crate::shard`), or block an
//! executor while serving (a full queue is reported back, not waited on).

pub mod files;
pub mod memfile;
pub mod record;
pub mod replay;
pub mod snapshot;
pub mod writer;
