//! The snapshot thread: writes the slices of a snapshot the shards send, and once every shard
//! has sent its last one, makes the snapshot durable and removes what it supersedes.
//!
//! A compaction, from start to end:
//!
//! 1. The log thread syncs the newest segment, creates segment `g` (synced, directory synced)
//!    and sets [`LogShared::snapshot_generation`] to `g`. Every record made from then on is
//!    written to segment `g` or later.
//! 2. Each shard, seeing `g`, walks its live items in bounded slices (one per loop turn, at
//!    most [`SNAPSHOT_SLICE_BYTES`] plus one item, at most [`SNAPSHOT_SLICE_CHUNKS`] chunks
//!    looked at), encoding each as an item record, and sends the slices here over one bounded
//!    queue ([`SNAPSHOT_QUEUE_DEPTH`] slices per shard; a full queue makes the shard keep its
//!    slice and walk no further until it is taken). An item changed during the walk may be
//!    in the snapshot old, new or not at all; the change's record is in segment `g` or later,
//!    which replay applies after the snapshot.
//! 3. This thread appends the slices to `corecache.<g>.snap.tmp` (header first). After the
//!    last shard's last slice: an end record (the record count), fsync, rename to
//!    `corecache.<g>.snap`, fsync of the directory. Only then are the segments before `g` and
//!    older snapshots removed (and the directory synced again).
//!
//! A crash at any step leaves either the old snapshot with every segment after it, or the new
//! snapshot (with, perhaps, superseded files that startup removes): replay finds every synced
//! record either way. An I/O error abandons the snapshot (the temporary file is removed, the
//! shards stop walking, the error is reported and counted); the next compaction starts over.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::files;
use super::record::{self, FileKind};
use super::writer::LogShared;

/// Slices in the snapshot queue per shard.
pub const SNAPSHOT_QUEUE_DEPTH: usize = 4;
/// A shard ends a slice once it holds this many bytes of records (one item may overshoot it).
pub const SNAPSHOT_SLICE_BYTES: usize = 256 << 10;
/// The most slab chunks a shard looks at for one slice (one loop turn).
pub const SNAPSHOT_SLICE_CHUNKS: usize = 4096;
/// How long the idle snapshot thread waits before looking at the shutdown flag again.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// A slice of one shard's part of snapshot `generation`.
#[derive(Debug)]
pub struct SnapshotChunk {
    pub generation: u64,
    pub shard: u16,
    /// Encoded records.
    pub buf: Vec<u8>,
    pub records: u64,
    /// The shard's walk is over: this is its last slice.
    pub last: bool,
}

/// The snapshot being written.
struct InProgress {
    generation: u64,
    file: File,
    temp: PathBuf,
    bytes: u64,
    records: u64,
    /// Per shard: its last slice arrived.
    done: Vec<bool>,
}

/// The snapshot thread: runs until the log is stopped (an unfinished snapshot is abandoned,
/// and its temporary file removed at the next startup).
pub fn run(rx: Receiver<SnapshotChunk>, shared: Arc<LogShared>, shard_count: u16) {
    let mut current: Option<InProgress> = None;
    loop {
        let chunk = match rx.recv_timeout(IDLE_WAIT) {
            Ok(chunk) => chunk,
            Err(RecvTimeoutError::Timeout) => {
                if shared.stopping() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if chunk.generation != shared.snapshot_generation.load(Ordering::SeqCst) {
            // A slice of an abandoned snapshot.
            continue;
        }
        if let Err(e) = take(&mut current, chunk, &shared, shard_count) {
            if let Some(p) = current.take() {
                let _ = std::fs::remove_file(&p.temp);
            }
            shared.snapshot_failures.fetch_add(1, Ordering::Relaxed);
            shared.snapshot_generation.store(0, Ordering::SeqCst);
            eprintln!(
                "corecache: log compaction failed in {}: {e}; the log keeps every segment, and \
                 the next compaction starts over",
                shared.dir.display()
            );
        }
    }
}

/// Appends a slice; finishes the snapshot after the last one.
fn take(
    current: &mut Option<InProgress>,
    chunk: SnapshotChunk,
    shared: &LogShared,
    shard_count: u16,
) -> std::io::Result<()> {
    let generation = chunk.generation;
    if current.as_ref().is_none_or(|p| p.generation != generation) {
        if let Some(old) = current.take() {
            let _ = std::fs::remove_file(&old.temp);
        }
        let temp = shared.dir.join(files::snapshot_temp_name(generation));
        let mut file = File::create(&temp)?;
        let header = record::file_header(FileKind::Snapshot, generation, shard_count);
        file.write_all(&header)?;
        *current = Some(InProgress {
            generation,
            file,
            temp,
            bytes: header.len() as u64,
            records: 0,
            done: vec![false; usize::from(shard_count)],
        });
    }
    let p = current.as_mut().expect("a snapshot in progress");
    p.file.write_all(&chunk.buf)?;
    p.bytes += chunk.buf.len() as u64;
    p.records += chunk.records;
    shared.snapshot_records.store(p.records, Ordering::Relaxed);
    if chunk.last {
        if let Some(d) = p.done.get_mut(usize::from(chunk.shard)) {
            *d = true;
        }
    }
    if !p.done.iter().all(|&d| d) {
        return Ok(());
    }
    let p = current.take().expect("a snapshot in progress");
    finish(p, shared)
}

/// The end record, fsync, rename, fsync of the directory; then the superseded files go.
fn finish(mut p: InProgress, shared: &LogShared) -> std::io::Result<()> {
    let mut end = Vec::new();
    let time_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    record::encode_snapshot_end(&mut end, p.records, time_unix);
    p.file.write_all(&end)?;
    p.bytes += end.len() as u64;
    p.file.sync_all()?;
    drop(p.file);
    let dir = &shared.dir;
    std::fs::rename(&p.temp, dir.join(files::snapshot_name(p.generation)))?;
    files::sync_dir(dir)?;
    // The snapshot is durable: from here on a crash restarts from it.
    shared.snapshot_bytes.store(p.bytes, Ordering::Relaxed);
    shared.snapshots.fetch_add(1, Ordering::Relaxed);
    shared.snapshot_generation.store(0, Ordering::SeqCst);
    match files::remove_superseded(dir, p.generation) {
        Ok(removed) => {
            shared.file_bytes.fetch_sub(
                removed.min(shared.file_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        Err(e) => eprintln!(
            "corecache: log compaction: snapshot {} is complete, but the files it supersedes \
             could not all be removed ({e}); startup removes them",
            p.generation
        ),
    }
    Ok(())
}
