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

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::record::{self, FILE_HEADER_BYTES};
use super::replay::{self, Scan};
use crate::config::LogFsync;

/// Batches in flight per shard.
pub const QUEUE_DEPTH: usize = 64;
/// A shard whose staged records reach this many bytes stops parsing client input until the
/// log thread takes them (so a shard holds at most about [`QUEUE_DEPTH`] + 1 batches of about
/// this size, plus one turn's overshoot).
pub const STAGED_BYTES_MAX: usize = 1 << 20;
/// Most bytes the log thread gathers for one write.
const WRITE_BYTES_MAX: usize = 16 << 20;
/// The log file's name inside `--log-dir`.
pub const LOG_FILE_NAME: &str = "corecache.log";
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
    /// The log file's size.
    pub file_bytes: AtomicU64,
    /// Startup: where the intact records end (replay reads up to here).
    pub replay_to: AtomicU64,
}

impl LogShared {
    pub fn new(dir: PathBuf, fsync: LogFsync, shard_count: u16) -> LogShared {
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
            replay_to: AtomicU64::new(0),
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
}

/// The log thread's ends of the shards' queues.
pub struct LogQueues {
    batches: Vec<Receiver<Batch>>,
    spares: Vec<SyncSender<Vec<u8>>>,
}

/// Builds one queue per shard: the shards' senders and the log thread's receivers.
pub fn queues(shared: &Arc<LogShared>, shard_count: u16) -> (Vec<LogSender>, LogQueues) {
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
        });
        queues.batches.push(rx);
        queues.spares.push(spare_tx);
    }
    (senders, queues)
}

/// An opened, locked and checked log file, positioned for appending.
#[derive(Debug)]
pub struct LogFile {
    pub file: File,
    pub path: PathBuf,
    /// Where records start and where the intact part ends (records past the header up to here
    /// are to be replayed).
    pub records_from: u64,
    pub records_to: u64,
    /// What the startup scan found.
    pub scan: Scan,
}

/// Opens (creating if needed) the log in `dir`, takes its lock, checks the header, scans the
/// records, cuts off a torn tail and positions the file at its end. Errors are one-line
/// reasons for the startup failure message.
pub fn open(dir: &Path) -> Result<LogFile, String> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|e| format!("--log-dir {shown}: {e}"))?;
    let path = dir.join(LOG_FILE_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("--log-dir {shown}: cannot open {}: {e}", path.display()))?;
    lock(&file).map_err(|e| format!("--log-dir {shown}: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len < FILE_HEADER_BYTES as u64 {
        // New, or its creation was cut short before the header was complete.
        start_new(&mut file, dir).map_err(|e| format!("--log-dir {shown}: {e}"))?;
        return Ok(LogFile {
            file,
            path,
            records_from: FILE_HEADER_BYTES as u64,
            records_to: FILE_HEADER_BYTES as u64,
            scan: Scan {
                end: FILE_HEADER_BYTES as u64,
                ..Scan::default()
            },
        });
    }
    let mut header = [0u8; FILE_HEADER_BYTES];
    file.read_exact(&mut header)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match record::check_file_header(&header) {
        Ok(()) => {}
        Err(record::HeaderError::NotALog) => {
            return Err(format!(
                "{} is not a corecache log (or its header is damaged); move it away to start \
                 an empty log",
                path.display()
            ))
        }
        Err(record::HeaderError::Version(v)) => {
            return Err(format!(
                "{}: log format version {v}, this build reads version {}",
                path.display(),
                record::FILE_VERSION
            ))
        }
    }
    let mut reader = &file;
    let scan = replay::scan(&mut reader, FILE_HEADER_BYTES as u64, len, |_, _| {})
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let records_to = scan.tail_from.unwrap_or(scan.end);
    if records_to < len {
        // A torn or damaged tail: cut it so new records follow the last intact one.
        file.set_len(records_to)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{}: cannot cut the damaged tail: {e}", path.display()))?;
    }
    file.seek(SeekFrom::Start(records_to))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(LogFile {
        file,
        path,
        records_from: FILE_HEADER_BYTES as u64,
        records_to,
        scan,
    })
}

/// Writes a new file's header and makes the file's existence durable.
fn start_new(file: &mut File, dir: &Path) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&record::file_header())?;
    file.sync_all()?;
    File::open(dir)?.sync_all()
}

/// Takes an exclusive lock on the log file, so two servers never append to one log.
fn lock(file: &File) -> Result<(), String> {
    // SAFETY: flock on a descriptor this function borrows; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(String::from(
            "the log is in use by another corecache process",
        ))
    } else {
        Err(format!("cannot lock the log: {e}"))
    }
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
    };
    shared.file_bytes.store(log.records_to, Ordering::Relaxed);
    loop {
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
        shared.bytes.fetch_add(n, Ordering::Relaxed);
        shared.file_bytes.fetch_add(n, Ordering::Relaxed);
        self.dirty = true;
        if shared.fsync == LogFsync::Always {
            self.sync(log, shared);
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
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corecache-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn batches_are_written_acknowledged_and_read_back() {
        let dir = temp_dir("roundtrip");
        let log = open(&dir).unwrap();
        assert_eq!(log.records_to, FILE_HEADER_BYTES as u64);
        let shared = Arc::new(LogShared::new(dir.clone(), LogFsync::Always, 2));
        let (senders, queues) = queues(&shared, 2);
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
        assert!(open(&dir).unwrap_err().contains("in use"));
        shared.stop();
        t.join().unwrap();
        let again = open(&dir).unwrap();
        assert_eq!(again.scan.records, 6);
        assert_eq!(again.scan.skipped_bytes, 0);
        drop(again);
        // A torn tail is cut at startup.
        let path = dir.join(LOG_FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let cut = open(&dir).unwrap();
        assert_eq!(cut.scan.records, 5);
        assert!(cut.scan.skipped_bytes > 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), cut.records_to);
        drop(cut);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused() {
        let dir = temp_dir("notalog");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOG_FILE_NAME), b"this is not a log at all").unwrap();
        assert!(open(&dir).unwrap_err().contains("not a corecache log"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
