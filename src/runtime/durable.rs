//! The runtime's side of the durability log (`--log-dir`): opening it and starting the log
//! thread, replaying it into each shard before serving, handing each turn's records to the
//! log thread, and under `--log-fsync always` holding replies until their records are synced.
//!
//! Holding a reply: a mutation that made a record (its shard's record number `n`) does not
//! put its reply in the connection's output. Its reply bytes wait in [`LogWait`]s, in record
//! order, and a slot in the connection's reorder queue (the same mechanism a reply owed by
//! another shard uses) keeps every later reply of that connection behind it. Once the log
//! thread says record `n` is synced, the bytes go into the slot (or, for a request another
//! core sent, back to that core in an envelope) and the connection's replies flow again. A
//! silent mutation (`noreply`, quiet binary, `q` meta) holds an empty slot, so later replies
//! still wait for it.
//!
//! Snapshots: while the log thread's compaction is under way, each core walks its store one
//! bounded slice per loop turn (`durability::snapshot` describes the whole compaction) and
//! the loop does not sleep until its walk is over. Without `--log-dir` none of this runs.

use std::collections::VecDeque;
use std::io::{Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::connection::SlotKind;
use super::core::Core;
use super::mesh::{ConnRef, RemoteReply, Waker};
use super::Shared;
use crate::config::{LogFsync, LogSettings};
use crate::durability::replay;
use crate::durability::snapshot::{
    self, SnapshotChunk, SNAPSHOT_SLICE_BYTES, SNAPSHOT_SLICE_CHUNKS,
};
use crate::durability::writer::{self, Batch, LogSender, LogShared, STAGED_BYTES_MAX};
use crate::protocol::binary::{self as binary_wire, Status};
use crate::shard::durable::Replay;
use crate::shard::Shard;
use crate::storage::WalkCursor;

/// The reply to a held text mutation whose record could not be written.
pub const SERVER_ERROR_LOG: &[u8] = b"SERVER_ERROR log write failed\r\n";

/// Above this many staged bytes (a multiple of [`STAGED_BYTES_MAX`]) a shard also stops
/// taking requests from other cores, so a stalled log stops the whole server instead of
/// growing any buffer.
const STAGED_BYTES_HARD_MAX: usize = 4 * STAGED_BYTES_MAX;

/// Where a held reply goes once its record is synced.
#[derive(Debug)]
pub(super) enum Target {
    /// A slot of one of this core's connections.
    Local { idx: u32, generation: u32, seq: u64 },
    /// Back to the core that sent the request.
    Remote { to: u16, conn: ConnRef, seq: u64 },
}

/// How a reply is replaced when its record could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnFailure {
    /// `SERVER_ERROR log write failed` (nothing for a silent request).
    Text,
    /// A binary `Internal error` response (nothing for a quiet request).
    Binary { opcode: u8, opaque: u32 },
    /// Sent as it is (a `gat` part of a reply gathered from several shards).
    Keep,
}

/// A reply waiting for its record.
#[derive(Debug)]
pub(super) struct LogWait {
    /// The shard's record number that must be synced first.
    pub record: u64,
    pub target: Target,
    pub data: Vec<u8>,
    pub segments: Vec<(u32, u32)>,
    pub on_failure: OnFailure,
}

/// The log state a core keeps.
#[derive(Debug)]
pub(super) struct CoreLog {
    pub sender: LogSender,
    /// `--log-fsync always`: replies wait for their records.
    pub always: bool,
    /// Replies held for their records, by record number.
    pub waits: VecDeque<LogWait>,
    /// The log thread's queue refused the last batch (try again next turn, without sleeping).
    pub refused: bool,
    /// This core's part of the snapshot under way.
    pub walk: SnapshotWalk,
}

/// Where a core's walk of its store for a snapshot stands.
#[derive(Debug, Default)]
pub(super) struct SnapshotWalk {
    /// The snapshot this walk belongs to (0: none yet).
    pub generation: u64,
    /// Where the walk goes on (`None`: over, its last slice sent or waiting in `refused`).
    pub cursor: Option<WalkCursor>,
    /// A slice the snapshot queue refused (sent again before walking further).
    pub refused: Option<SnapshotChunk>,
}

/// What [`start`] returns: the shared state, each shard's sender, the log thread (which
/// joins the snapshot thread before it returns).
pub(super) type Started = (Arc<LogShared>, Vec<LogSender>, std::thread::JoinHandle<()>);

/// Opens the log, publishes what its scan found, and starts the log thread (pinned to
/// `settings.cpu`). Returns the shared state and each shard's sender.
pub(super) fn start(
    settings: &LogSettings,
    shard_count: u16,
    wakers: Vec<Arc<Waker>>,
) -> Result<Started, String> {
    let shared = Arc::new(LogShared::new(
        settings.dir.clone(),
        settings.fsync,
        shard_count,
        settings.compact_bytes,
    ));
    let file = writer::open(&settings.dir, &shared)?;
    let (senders, queues, snapshots) = writer::queues(&shared, shard_count);
    let cpu = settings.cpu;
    let pin = move || {
        if let Some(cpu) = cpu {
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
        }
    };
    let snapshot_shared = Arc::clone(&shared);
    let snapshot_thread = std::thread::Builder::new()
        .name(String::from("snapshot"))
        .spawn(move || {
            pin();
            snapshot::run(snapshots, snapshot_shared, shard_count);
        })
        .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
    let thread_shared = Arc::clone(&shared);
    let handle = std::thread::Builder::new()
        .name(String::from("log"))
        .spawn(move || {
            pin();
            writer::run(file, queues, Arc::clone(&thread_shared), |shard| {
                if let Some(w) = wakers.get(shard) {
                    w.wake_if_sleeping();
                }
            });
            let _ = snapshot_thread.join();
        })
        .map_err(|e| format!("cannot start the log thread: {e}"))?;
    Ok((shared, senders, handle))
}

/// Replays the snapshot and then the segments after it into shard `me` (records of the keys
/// it owns, and flushes), then starts recording. Runs on the shard's executor before it
/// serves.
pub(super) fn replay_into(shard: &mut Shard, me: u16, shared: &Shared) -> Result<(), String> {
    let Some(log) = &shared.log else {
        return Ok(());
    };
    let count = shared.config.shard_count;
    let mut st = Replay::new(me, count, shared.now());
    for f in log.replay_files.get().map_or(&[][..], Vec::as_slice) {
        let shown = f.path.display();
        let mut file = std::fs::File::open(&f.path).map_err(|e| format!("{shown}: {e}"))?;
        file.seek(SeekFrom::Start(f.records_from))
            .map_err(|e| format!("{shown}: {e}"))?;
        replay::scan(&mut file, f.records_from, f.records_to, |d, _| {
            shard.replay_if_mine(d, &mut st);
        })
        .map_err(|e| format!("{shown}: {e}"))?;
    }
    shard.replay_finish(&st);
    log.replayed.fetch_add(st.applied, Ordering::Relaxed);
    log.replay_expired.fetch_add(st.expired, Ordering::Relaxed);
    log.replay_refused.fetch_add(st.refused, Ordering::Relaxed);
    shard.enable_recording();
    Ok(())
}

/// The startup line on stderr once every shard has replayed.
pub(super) fn replay_report(log: &LogShared) -> String {
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    format!(
        "log {}: replayed {} records ({} items already expired, {} not stored), skipped {} \
         damaged bytes; fsync {}",
        log.dir.display(),
        load(&log.replayed),
        load(&log.replay_expired),
        load(&log.replay_refused),
        load(&log.skipped_bytes),
        log.fsync.name(),
    )
}

impl CoreLog {
    pub(super) fn new(sender: LogSender) -> CoreLog {
        let always = sender.shared().fsync == LogFsync::Always;
        CoreLog {
            sender,
            always,
            waits: VecDeque::new(),
            refused: false,
            walk: SnapshotWalk::default(),
        }
    }
}

impl Core {
    /// Whether this core stops parsing client input for the log: its staged records reached
    /// [`STAGED_BYTES_MAX`] (the log thread is behind).
    #[inline]
    pub(super) fn log_full(&self) -> bool {
        self.log.is_some()
            && self
                .shard
                .recorder()
                .is_some_and(|r| r.staged.len() >= STAGED_BYTES_MAX)
    }

    /// Whether this core stops taking requests from other cores for the log.
    pub(super) fn log_stalled(&self) -> bool {
        self.log.is_some()
            && self
                .shard
                .recorder()
                .is_some_and(|r| r.staged.len() >= STAGED_BYTES_HARD_MAX)
    }

    /// Whether replies are held for their records (`--log-fsync always`).
    #[inline]
    pub(super) fn log_always(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.always)
    }

    /// Whether the last batch was refused (the loop must come back without sleeping).
    pub(super) fn log_refused(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.refused)
    }

    /// End of a turn: hands the records staged this turn to the log thread.
    pub(super) fn log_send(&mut self) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let Some(rec) = self.shard.recorder_mut() else {
            return;
        };
        if rec.staged.is_empty() {
            log.refused = false;
            return;
        }
        let buf = std::mem::replace(&mut rec.staged, log.sender.spare());
        let batch = Batch {
            buf,
            last_seq: rec.seq,
        };
        if self.shared.shutdown.load(Ordering::Relaxed) {
            log.sender.send_blocking(batch);
            log.refused = false;
            return;
        }
        match log.sender.send(batch) {
            Ok(()) => log.refused = false,
            Err(batch) => {
                // Keep appending to the refused batch; the spare goes back to the allocator.
                rec.staged = batch.buf;
                log.refused = true;
            }
        }
    }

    /// Whether this core has snapshot work to do (the loop must come back without sleeping).
    pub(super) fn log_snapshot_runnable(&self) -> bool {
        let Some(log) = self.log.as_ref() else {
            return false;
        };
        let generation = log
            .sender
            .shared()
            .snapshot_generation
            .load(Ordering::Relaxed);
        generation != 0
            && (generation != log.walk.generation
                || log.walk.cursor.is_some()
                || log.walk.refused.is_some())
    }

    /// End of a turn, while a snapshot is under way: one bounded slice of this core's walk
    /// (or, if the snapshot queue refused the last slice, that slice again).
    pub(super) fn log_snapshot_step(&mut self) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let generation = log
            .sender
            .shared()
            .snapshot_generation
            .load(Ordering::SeqCst);
        if generation == 0 {
            // None under way (or the last one was abandoned): drop what is left of a walk.
            log.walk.cursor = None;
            log.walk.refused = None;
            return;
        }
        let mut buf = Vec::new();
        let mut records = 0;
        if generation != log.walk.generation {
            // A new snapshot: the walk starts over, from this turn on.
            log.walk = SnapshotWalk {
                generation,
                cursor: Some(WalkCursor::START),
                refused: None,
            };
            let count = self.shared.config.shard_count;
            records += self.shard.snapshot_begin(count, self.now, &mut buf);
        }
        let Some(log) = self.log.as_mut() else {
            return;
        };
        if let Some(chunk) = log.walk.refused.take() {
            if let Err(chunk) = log.sender.send_snapshot(chunk) {
                log.walk.refused = Some(chunk);
            }
            return;
        }
        let Some(from) = log.walk.cursor else {
            return;
        };
        let (next, n) = self.shard.snapshot_slice(
            from,
            self.now,
            SNAPSHOT_SLICE_BYTES,
            SNAPSHOT_SLICE_CHUNKS,
            &mut buf,
        );
        records += n;
        let Some(log) = self.log.as_mut() else {
            return;
        };
        log.walk.cursor = next;
        if buf.is_empty() && next.is_some() {
            return;
        }
        let chunk = SnapshotChunk {
            generation,
            shard: self.me,
            buf,
            records,
            last: next.is_none(),
        };
        if let Err(chunk) = log.sender.send_snapshot(chunk) {
            log.walk.refused = Some(chunk);
        }
    }

    /// Releases the replies whose records the log thread has acknowledged; returns how many.
    pub(super) fn log_acks(&mut self) -> usize {
        let Some(log) = self.log.as_ref() else {
            return 0;
        };
        if log.waits.is_empty() {
            return 0;
        }
        let (acked, failed_from) = log.sender.shared().acked(usize::from(self.me));
        let mut released = 0;
        while let Some(log) = self.log.as_mut() {
            if log.waits.front().is_none_or(|w| w.record > acked) {
                break;
            }
            let Some(mut w) = log.waits.pop_front() else {
                break;
            };
            if w.record >= failed_from {
                fail_reply(&mut w);
            }
            released += 1;
            self.release(w);
        }
        released
    }

    /// Sends a released reply on to its slot or its core.
    fn release(&mut self, w: LogWait) {
        match w.target {
            Target::Local {
                idx,
                generation,
                seq,
            } => {
                self.deliver_part(idx, generation, seq, &w.data, &w.segments);
                self.pool.give(w.data);
            }
            Target::Remote { to, conn, seq } => {
                let env = self.outbox.to(to);
                let start = env.buf.len() as u32;
                env.buf.extend_from_slice(&w.data);
                let segments_start = env.segments.len() as u32;
                env.segments.extend_from_slice(&w.segments);
                env.replies.push(RemoteReply {
                    conn,
                    seq,
                    start,
                    end: env.buf.len() as u32,
                    segments_start,
                    segments_end: env.segments.len() as u32,
                });
                self.pool.give(w.data);
            }
        }
    }

    /// Runs a local mutation under `always`: its reply waits in a slot until the records it
    /// made are synced (or goes out in order at once if it made none).
    pub(super) fn exec_held(
        &mut self,
        idx: u32,
        on_failure: OnFailure,
        run: impl FnOnce(&mut Shard, &mut Vec<u8>),
    ) {
        let before = self.shard.log_seq();
        let mut buf = self.pool.take();
        run(&mut self.shard, &mut buf);
        let after = self.shard.log_seq();
        if after == before {
            // Nothing to wait for: a ready reply, in order.
            if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
                conn.push_ready(buf, &mut self.pool);
            }
            self.mark_dirty(idx);
            return;
        }
        let seq = self.new_slot_with(idx, 1, SlotKind::Plain, Vec::new());
        let generation = self.conn(idx).map_or(0, |c| c.generation);
        self.hold(LogWait {
            record: after,
            target: Target::Local {
                idx,
                generation,
                seq,
            },
            data: buf,
            segments: Vec::new(),
            on_failure,
        });
    }

    /// Queues a held reply.
    pub(super) fn hold(&mut self, w: LogWait) {
        if let Some(log) = self.log.as_mut() {
            debug_assert!(log.waits.back().is_none_or(|b| b.record <= w.record));
            log.waits.push_back(w);
        }
    }

    /// Under `always`, after executing a request from core `from` whose reply was appended to
    /// that core's envelope from `start` (segments from `segments_start`): if the request made
    /// records, takes the reply back out of the envelope to hold it. Returns whether it did.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hold_remote(
        &mut self,
        before: u64,
        from: u16,
        conn: ConnRef,
        seq: u64,
        start: u32,
        segments_start: u32,
        on_failure: OnFailure,
    ) -> bool {
        let after = self.shard.log_seq();
        if after == before {
            return false;
        }
        let mut data = self.pool.take();
        let env = self.outbox.to(from);
        data.extend_from_slice(env.buf.get(start as usize..).unwrap_or_default());
        env.buf.truncate(start as usize);
        let segments: Vec<(u32, u32)> = env.segments.drain(segments_start as usize..).collect();
        self.hold(LogWait {
            record: after,
            target: Target::Remote {
                to: from,
                conn,
                seq,
            },
            data,
            segments,
            on_failure,
        });
        true
    }
}

/// Replaces a reply whose record was not written.
fn fail_reply(w: &mut LogWait) {
    if w.data.is_empty() {
        // A silent request: it promised no reply.
        return;
    }
    match w.on_failure {
        OnFailure::Text => {
            w.data.clear();
            w.data.extend_from_slice(SERVER_ERROR_LOG);
        }
        OnFailure::Binary { opcode, opaque } => {
            w.data.clear();
            binary_wire::error(&mut w.data, opcode, Status::Internal, opaque);
        }
        OnFailure::Keep => {}
    }
}
