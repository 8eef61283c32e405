//! The log thread and each shard's queue to it.
//!
//! * Each shard stages the records it makes during a loop turn in one buffer and, at the end
//!   of the turn, hands the buffer to the log thread over its own bounded single-producer
//!   queue ([`QUEUE_DEPTH`] batches), getting an emptied buffer back over a second queue so
//!   memory circulates instead of being freed by the other thread.
//! * The log thread takes every batch waiting in every queue, writes them with one `write`,
//!   and under `always` calls `fdatasync` once for all of them (group commit), then publishes,
//!   per shard, the number of the last record written (`always`: synced) and wakes the shards
//!   that wait for it. Under `everysec` it syncs about once a second when something was
//!   written; under `no` never (the kernel writes back on its own schedule).
//! * Backpressure: a full queue refuses the batch ([`LogSender::send`] returns it); the shard
//!   keeps it, stops parsing client input ([`STAGED_BYTES_MAX`]) and tries again next turn.
//! * A failed write or fsync stops the log for good (after an fsync error the kernel may have
//!   dropped the dirty pages, so nothing later can be trusted to be on disk): it is reported
//!   on stderr, every record from the first unwritten one on is acknowledged as failed (under
//!   `always` the shards answer `SERVER_ERROR`), and later batches are discarded.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::files::{self, ReplayFile};
use super::record::FILE_HEADER_BYTES;
use super::snapshot::{SnapshotChunk, SNAPSHOT_QUEUE_DEPTH};
use crate::config::LogFsync;

/// Batches in flight per shard.
pub const QUEUE_DEPTH: usize = 64;
/// A shard whose staged records reach this many bytes stops parsing client input until the
/// log thread takes them (so a shard holds at most about [`QUEUE_DEPTH`] + 1 batches of about
/// this size, plus one turn's overshoot).
pub const STAGED_BYTES_MAX: usize = 1 << 20;
/// Most bytes the log thread gathers for one write.
const WRITE_BYTES_MAX: usize = 16 << 20;
/// After a rotation failed, the log thread waits this long before trying again.
const ROTATE_RETRY: Duration = Duration::from_secs(10);
/// How often `everysec` syncs.
const EVERYSEC: Duration = Duration::from_secs(1);
/// The longest the idle log thread sleeps before looking at its queues again.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// No record has failed (see [`LogShared::failed_from`]).
const NOT_FAILED: u64 = u64::MAX;

/// One shard's records of one or more turns.
#[derive(Debug)]
pub struct Batch {
    pub buf: Vec<u8>,
    /// The shard's number of its last record in `buf` (records are numbered from 1).
    pub last_seq: u64,
}

/// Per shard: how far the log thread has got.
#[derive(Debug)]
struct Progress {
    /// The last record written (under `always`: and synced), or failed.
    acked: AtomicU64,
    /// The first record that was not written, or [`NOT_FAILED`].
    failed_from: AtomicU64,
}

/// State the log thread shares with the shards and `stats`.
#[derive(Debug)]
pub struct LogShared {
    pub dir: PathBuf,
    pub fsync: LogFsync,
    progress: Vec<Progress>,
    /// The log thread is about to park (senders unpark it).
    sleeping: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
    shutdown: AtomicBool,
    /// Records and bytes written, and fsyncs done, since startup.
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Write or fsync errors (at most one: the log stops at the first).
    pub errors: AtomicU64,
    /// Startup: records replayed into the shards, replayed items already expired (not
    /// stored), replayed items a shard could not store (too large for `-I`, or no memory).
    pub replayed: AtomicU64,
    pub replay_expired: AtomicU64,
    pub replay_refused: AtomicU64,
    /// Startup: bytes of damaged records passed over (a torn tail included).
    pub skipped_bytes: AtomicU64,
    /// Bytes of the log segments in the directory.
    pub file_bytes: AtomicU64,
    /// Bytes of the newest segment (compaction starts when it reaches the threshold).
    pub segment_bytes: AtomicU64,
    /// The newest segment's generation.
    pub segment_generation: AtomicU64,
    /// Startup: the snapshot and the segments to replay, in order.
    pub replay_files: OnceLock<Vec<ReplayFile>>,
    /// `--log-compact-bytes`: a segment this large (and at least as large as the last
    /// snapshot) starts a compaction; 0: only `log_compact` does.
    pub compact_bytes: u64,
    /// `log_compact` asked for a compaction.
    pub compact_requested: AtomicBool,
    /// The generation of the snapshot being written (0: none). Set by the log thread once
    /// segment `generation` exists; cleared by the snapshot thread when it is done or failed.
    pub snapshot_generation: AtomicU64,
    /// Snapshots completed and failed since startup.
    pub snapshots: AtomicU64,
    pub snapshot_failures: AtomicU64,
    /// Records in the snapshot being written (or the last one).
    pub snapshot_records: AtomicU64,
    /// Bytes of the newest complete snapshot.
    pub snapshot_bytes: AtomicU64,
}

impl LogShared {
    pub fn new(dir: PathBuf, fsync: LogFsync, shard_count: u16, compact_bytes: u64) -> LogShared {
        LogShared {
            dir,
            fsync,
            progress: (0..shard_count)
                .map(|_| Progress {
                    acked: AtomicU64::new(0),
                    failed_from: AtomicU64::new(NOT_FAILED),
                })
                .collect(),
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
            shutdown: AtomicBool::new(false),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            replay_expired: AtomicU64::new(0),
            replay_refused: AtomicU64::new(0),
            skipped_bytes: AtomicU64::new(0),
            file_bytes: AtomicU64::new(0),
            segment_bytes: AtomicU64::new(0),
            segment_generation: AtomicU64::new(0),
            replay_files: OnceLock::new(),
            compact_bytes,
            compact_requested: AtomicBool::new(false),
            snapshot_generation: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            snapshot_failures: AtomicU64::new(0),
            snapshot_records: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
        }
    }

    /// Shard `shard`'s last acknowledged record and its first failed one ([`u64::MAX`]: none).
    pub fn acked(&self, shard: usize) -> (u64, u64) {
        let p = &self.progress[shard];
        // `failed_from` is stored before `acked`: read in the other order.
        let acked = p.acked.load(Ordering::SeqCst);
        (acked, p.failed_from.load(Ordering::SeqCst))
    }

    /// Asks the log thread to write what is queued, sync, and stop.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.unpark();
    }

    /// Whether the log thread was asked to stop.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// `log_compact`: starts a compaction soon (after the one under way, if any).
    pub fn request_compaction(&self) {
        self.compact_requested.store(true, Ordering::SeqCst);
        self.unpark();
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// A shard's end of its queue to the log thread.
#[derive(Debug)]
pub struct LogSender {
    tx: SyncSender<Batch>,
    spares: Receiver<Vec<u8>>,
    shared: Arc<LogShared>,
    /// To the snapshot thread (one queue shared by every shard).
    snapshots: SyncSender<SnapshotChunk>,
}

impl LogSender {
    /// Hands a batch to the log thread; gives it back if the queue is full.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, batch: Batch) -> Result<(), Batch> {
        match self.tx.try_send(batch) {
            Ok(()) => {
                if self.shared.sleeping.load(Ordering::SeqCst) {
                    self.shared.unpark();
                }
                Ok(())
            }
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => Err(b),
        }
    }

    /// Hands a batch over, waiting for room (shutdown only: an executor must not block while
    /// it serves).
    pub fn send_blocking(&self, batch: Batch) {
        let _ = self.tx.send(batch);
        self.shared.unpark();
    }

    /// An emptied buffer to stage records in.
    pub fn spare(&self) -> Vec<u8> {
        self.spares.try_recv().unwrap_or_default()
    }

    pub fn shared(&self) -> &Arc<LogShared> {
        &self.shared
    }

    /// Hands a slice of a snapshot to the snapshot thread; gives it back if its queue is full.
    #[allow(clippy::result_large_err)]
    pub fn send_snapshot(&self, chunk: SnapshotChunk) -> Result<(), SnapshotChunk> {
        match self.snapshots.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(c)) | Err(TrySendError::Disconnected(c)) => Err(c),
        }
    }
}

/// The log thread's ends of the shards' queues.
pub struct LogQueues {
    batches: Vec<Receiver<Batch>>,
    spares: Vec<SyncSender<Vec<u8>>>,
}

/// Builds one queue per shard: the shards' senders and the log thread's receivers, and the
/// snapshot thread's queue ([`SNAPSHOT_QUEUE_DEPTH`] slices per shard).
pub fn queues(
    shared: &Arc<LogShared>,
    shard_count: u16,
) -> (Vec<LogSender>, LogQueues, Receiver<SnapshotChunk>) {
    let (snap_tx, snap_rx) = sync_channel(SNAPSHOT_QUEUE_DEPTH * usize::from(shard_count));
    let mut senders = Vec::new();
    let mut queues = LogQueues {
        batches: Vec::new(),
        spares: Vec::new(),
    };
    for _ in 0..shard_count {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let (spare_tx, spare_rx) = sync_channel(QUEUE_DEPTH);
        senders.push(LogSender {
            tx,
            spares: spare_rx,
            shared: Arc::clone(shared),
            snapshots: snap_tx.clone(),
        });
        queues.batches.push(rx);
        queues.spares.push(spare_tx);
    }
    (senders, queues, snap_rx)
}

/// The segment the log thread appends to.
#[derive(Debug)]
pub struct LogFile {
    pub file: File,
    pub path: PathBuf,
    pub generation: u64,
    /// The segment's length.
    pub bytes: u64,
    /// The directory's lock, held as long as the log thread runs.
    _lock: File,
}

/// Opens `dir` ([`files::open`]), publishes what startup found in `shared` (the files to
/// replay, the sizes) and returns the newest segment, positioned for appending.
pub fn open(dir: &Path, shared: &LogShared) -> Result<LogFile, String> {
    let opened = files::open(dir)?;
    let mut plan: Vec<ReplayFile> = opened.snapshot.iter().cloned().collect();
    plan.extend(opened.segments.iter().cloned());
    let _ = shared.replay_files.set(plan);
    if let (Some(snapshot), false) = (&opened.snapshot, opened.snapshot_complete) {
        eprintln!(
            "corecache: {} is damaged or lacks its end record; its intact records are loaded",
            snapshot.path.display()
        );
    }
    shared
        .skipped_bytes
        .store(opened.scan.skipped_bytes, Ordering::Relaxed);
    shared
        .file_bytes
        .store(opened.segment_bytes, Ordering::Relaxed);
    shared
        .snapshot_bytes
        .store(opened.snapshot_bytes, Ordering::Relaxed);
    let newest = opened.segments.last().expect("a segment").clone();
    shared
        .segment_generation
        .store(newest.generation, Ordering::Relaxed);
    shared
        .segment_bytes
        .store(newest.records_to, Ordering::Relaxed);
    Ok(LogFile {
        file: opened.current,
        path: newest.path,
        generation: newest.generation,
        bytes: newest.records_to,
        _lock: opened.lock,
    })
}

/// The log thread: runs until [`LogShared::stop`] once every queue is empty. `wake(shard)`
/// wakes a shard after its records were acknowledged (`always` only: nothing else waits).
pub fn run(mut log: LogFile, queues: LogQueues, shared: Arc<LogShared>, wake: impl Fn(usize)) {
    let _ = shared.thread.set(std::thread::current());
    let shard_count = queues.batches.len();
    let mut w = Writer {
        buf: Vec::new(),
        last: vec![None; shard_count],
        written: vec![0; shard_count],
        failed: false,
        dirty: false,
        synced_at: Instant::now(),
        rotate_after: Instant::now(),
    };
    loop {
        w.maybe_rotate(&mut log, &shared, &wake, shard_count);
        if w.round(&mut log, &queues, &shared, &wake) {
            continue;
        }
        shared.sleeping.store(true, Ordering::SeqCst);
        // Re-check after the flag: a batch sent before it was set finds no one to unpark us.
        if w.round(&mut log, &queues, &shared, &wake) {
            shared.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            w.sync(&mut log, &shared);
            return;
        }
        let wait = match (shared.fsync, w.dirty) {
            (LogFsync::Everysec, true) => EVERYSEC.saturating_sub(w.synced_at.elapsed()),
            _ => IDLE_WAIT,
        };
        std::thread::park_timeout(wait);
        shared.sleeping.store(false, Ordering::SeqCst);
        if shared.fsync == LogFsync::Everysec && w.dirty && w.synced_at.elapsed() >= EVERYSEC {
            w.sync(&mut log, &shared);
        }
    }
}

/// The log thread's state between rounds.
struct Writer {
    buf: Vec<u8>,
    /// Per shard: the last record taken this round.
    last: Vec<Option<u64>>,
    /// Per shard: the last record written before this round.
    written: Vec<u64>,
    failed: bool,
    /// Written since the last sync.
    dirty: bool,
    synced_at: Instant,
    /// No rotation before this (after a failed one).
    rotate_after: Instant,
}

impl Writer {
    /// Takes what the queues hold, writes it, syncs under `always`, acknowledges. Returns
    /// whether anything was taken.
    fn round(
        &mut self,
        log: &mut LogFile,
        queues: &LogQueues,
        shared: &LogShared,
        wake: &impl Fn(usize),
    ) -> bool {
        self.buf.clear();
        self.last.fill(None);
        for (shard, rx) in queues.batches.iter().enumerate() {
            for _ in 0..QUEUE_DEPTH {
                if self.buf.len() >= WRITE_BYTES_MAX {
                    break;
                }
                match rx.try_recv() {
                    Ok(mut batch) => {
                        self.buf.extend_from_slice(&batch.buf);
                        self.last[shard] = Some(batch.last_seq);
                        batch.buf.clear();
                        let _ = queues.spares[shard].try_send(batch.buf);
                    }
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
        }
        if self.last.iter().all(Option::is_none) {
            return false;
        }
        if !self.failed {
            self.write(log, shared);
        }
        for (shard, last) in self.last.iter().enumerate() {
            let Some(last) = *last else { continue };
            let p = &shared.progress[shard];
            if self.failed && p.failed_from.load(Ordering::SeqCst) == NOT_FAILED {
                p.failed_from
                    .store(self.written[shard] + 1, Ordering::SeqCst);
            }
            if !self.failed {
                let records = last - self.written[shard];
                shared.records.fetch_add(records, Ordering::Relaxed);
                self.written[shard] = last;
            }
            p.acked.store(last, Ordering::SeqCst);
            if shared.fsync == LogFsync::Always {
                wake(shard);
            }
        }
        true
    }

    /// Writes the gathered batches; under `always`, syncs them.
    fn write(&mut self, log: &mut LogFile, shared: &LogShared) {
        if let Err(e) = log.file.write_all(&self.buf) {
            self.fail(shared, &log.path, "write", &e);
            return;
        }
        let n = self.buf.len() as u64;
        log.bytes += n;
        shared.bytes.fetch_add(n, Ordering::Relaxed);
        shared.file_bytes.fetch_add(n, Ordering::Relaxed);
        shared.segment_bytes.store(log.bytes, Ordering::Relaxed);
        self.dirty = true;
        if shared.fsync == LogFsync::Always {
            self.sync(log, shared);
        }
    }

    /// Starts a compaction when one is due (see [`LogShared::compact_bytes`]) or asked for,
    /// and none is under way: syncs the segment (so the segments stay a prefix of what was
    /// made), starts the next one (durable before anything is written to it), and tells the
    /// shards to snapshot. Every record a shard makes from then on goes to the new segment.
    fn maybe_rotate(
        &mut self,
        log: &mut LogFile,
        shared: &LogShared,
        wake: &impl Fn(usize),
        shard_count: usize,
    ) {
        if self.failed || shared.snapshot_generation.load(Ordering::SeqCst) != 0 {
            return;
        }
        let threshold = shared
            .compact_bytes
            .max(shared.snapshot_bytes.load(Ordering::Relaxed));
        let due = shared.compact_bytes > 0 && log.bytes >= threshold;
        if !due && !shared.compact_requested.load(Ordering::SeqCst) {
            return;
        }
        if Instant::now() < self.rotate_after {
            return;
        }
        shared.compact_requested.store(false, Ordering::SeqCst);
        self.sync(log, shared);
        if self.failed {
            return;
        }
        let generation = log.generation + 1;
        match files::create_segment(&shared.dir, generation) {
            Ok(file) => {
                log.file = file;
                log.path = shared.dir.join(files::segment_name(generation));
                log.generation = generation;
                log.bytes = FILE_HEADER_BYTES as u64;
                shared
                    .file_bytes
                    .fetch_add(FILE_HEADER_BYTES as u64, Ordering::Relaxed);
                shared.segment_bytes.store(log.bytes, Ordering::Relaxed);
                shared
                    .segment_generation
                    .store(generation, Ordering::Relaxed);
                shared.snapshot_records.store(0, Ordering::Relaxed);
                shared
                    .snapshot_generation
                    .store(generation, Ordering::SeqCst);
                for shard in 0..shard_count {
                    wake(shard);
                }
            }
            Err(e) => {
                shared.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                self.rotate_after = Instant::now() + ROTATE_RETRY;
                eprintln!(
                    "corecache: log compaction: cannot start segment {generation} in {}: {e};                      trying again later",
                    shared.dir.display()
                );
            }
        }
    }

    /// fdatasync, if anything was written since the last one.
    fn sync(&mut self, log: &mut LogFile, shared: &LogShared) {
        if !self.dirty || self.failed {
            return;
        }
        match log.file.sync_data() {
            Ok(()) => {
                shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.dirty = false;
                self.synced_at = Instant::now();
            }
            Err(e) => self.fail(shared, &log.path, "fsync", &e),
        }
    }

    /// Stops the log at its first error (see the module docs).
    fn fail(&mut self, shared: &LogShared, path: &Path, what: &str, e: &std::io::Error) {
        self.failed = true;
        shared.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "corecache: log {what} failed on {}: {e}; the log is stopped: mutations are no \
             longer logged (under --log-fsync always they are answered SERVER_ERROR); restart \
             to recover",
            path.display()
        );
        // Records of this round that were not written are not durable.
        for (shard, p) in shared.progress.iter().enumerate() {
            if p.failed_from.load(Ordering::SeqCst) == NOT_FAILED {
                p.failed_from
                    .store(self.written[shard] + 1, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record;
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corecache-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn shared_for(dir: &Path, shards: u16) -> Arc<LogShared> {
        Arc::new(LogShared::new(
            dir.to_path_buf(),
            LogFsync::Always,
            shards,
            0,
        ))
    }

    #[test]
    fn batches_are_written_acknowledged_and_read_back() {
        let dir = temp_dir("roundtrip");
        let shared = shared_for(&dir, 2);
        let log = open(&dir, &shared).unwrap();
        assert_eq!(log.bytes, FILE_HEADER_BYTES as u64);
        assert_eq!(log.generation, 1);
        let (senders, queues, _snapshots) = queues(&shared, 2);
        let s2 = Arc::clone(&shared);
        let t = std::thread::spawn(move || run(log, queues, s2, |_| {}));
        for (shard, sender) in senders.iter().enumerate() {
            let mut buf = sender.spare();
            for i in 0..3 {
                record::encode_delete(&mut buf, format!("k{shard}-{i}").as_bytes(), 1);
            }
            sender.send(Batch { buf, last_seq: 3 }).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while (0..2).any(|s| shared.acked(s).0 < 3) {
            assert!(Instant::now() < deadline, "no acknowledgement");
            std::thread::yield_now();
        }
        assert_eq!(shared.acked(0), (3, u64::MAX));
        assert_eq!(shared.records.load(Ordering::Relaxed), 6);
        assert!(shared.fsyncs.load(Ordering::Relaxed) >= 1);
        // A second opener is refused while the first holds the lock.
        assert!(files::open(&dir).unwrap_err().contains("in use"));
        shared.stop();
        t.join().unwrap();
        let again = files::open(&dir).unwrap();
        assert_eq!(again.scan.records, 6);
        assert_eq!(again.scan.skipped_bytes, 0);
        drop(again);
        // A torn tail is cut at startup.
        let path = dir.join(files::segment_name(1));
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let cut = files::open(&dir).unwrap();
        assert_eq!(cut.scan.records, 5);
        assert!(cut.scan.skipped_bytes > 0);
        let to = cut.segments.last().unwrap().records_to;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), to);
        drop(cut);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused() {
        let dir = temp_dir("notalog");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(files::MARKER_FILE_NAME),
            b"this is not a log at all",
        )
        .unwrap();
        assert!(files::open(&dir)
            .unwrap_err()
            .contains("not a corecache log"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
