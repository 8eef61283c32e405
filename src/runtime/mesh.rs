//! Cross-core messaging: one bounded queue per ordered pair of cores, plus wake-ups.
//!
//! * Queues are `std::sync::mpsc::sync_channel`s (a bounded, lock-free array channel), one per
//!   ordered pair, so each has exactly one producer and one consumer.
//! * A core that is about to block sets its `sleeping` flag, re-checks its inbound queues, and
//!   only then blocks; a sender writes the receiver's eventfd only when that flag is set. A busy
//!   core therefore pays no syscall per message.
//! * Envelopes batch everything one core sends another in one loop turn.
//! * Backpressure: a full queue refuses the envelope; the sender keeps it and stops reading
//!   client input until it drains ([`Outbox::blocked`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use crate::clock::Instant32;
use crate::protocol::GetVerb;
use crate::router::ShardId;
use crate::storage::{ClassSet, PageSink, PageSource, WalkCursor};

/// Envelopes in flight per ordered pair of cores.
pub const QUEUE_DEPTH: usize = 64;

/// A connection on its home core: slab index plus generation (so stale replies are dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub index: u32,
    pub generation: u32,
}

/// What a remote shard is asked to do.
#[derive(Clone, Debug)]
pub enum RemoteOp {
    /// Execute the request whose wire bytes are `buf[start..end]`. For a retrieval line split
    /// across shards, `indices[indices_start..indices_end]` of the envelope give each key's
    /// position in the original request.
    Text {
        start: u32,
        end: u32,
        key_hash: u64,
        indices_start: u32,
        indices_end: u32,
    },
    /// Execute a one-key retrieval (`get`, `gets`, `gat`, `gats` of one key) of the key
    /// `buf[start..end]`, END included: parsed at home, so the owner neither copies nor parses
    /// the command line again. `touch_to` is the new expiry of a `gat`/`gats`.
    GetKey {
        start: u32,
        end: u32,
        key_hash: u64,
        verb: GetVerb,
        touch_to: Option<Instant32>,
    },
    /// Execute the binary-protocol frame `buf[start..end]` (header, extras and key; the value
    /// too unless it was too large) and reply with binary response bytes.
    Binary { start: u32, end: u32, key_hash: u64 },
    /// Contribute this shard's counters to a `stats` reply (as `STAT name value` lines).
    Stats(StatsKind),
    /// Invalidate items stored before `at` (now if `at <= now`).
    Flush { at: Instant32 },
    /// Zero this shard's counters.
    ResetStats,
    /// `stats detail on|off|dump` (see `runtime::admin`).
    Detail(DetailOp),
    /// `lru_crawler metadump`: one bounded step of this shard's walk over its live items of
    /// the `classes`, from `from` on (see `runtime::admin`). The reply is the step's item
    /// lines; its `segments` hold the cursor the next step starts from as one `(page, chunk)`
    /// pair, or nothing once this shard's walk is done.
    MetadumpStep { classes: ClassSet, from: WalkCursor },
    /// `cache_memlimit`: this shard's new memory budget in bytes.
    MemLimit { bytes: usize },
    /// `lru_crawler crawl`: sweep this shard's items of these classes for dead ones now, one
    /// whole pass.
    CrawlPass { classes: ClassSet },
    /// `debug_stall` (test hook): sleep `millis` unless this is shard `except`.
    DebugStall { millis: u32, except: u16 },
    /// `slabs automove`: this shard's page-move mode.
    Automove { mode: u8 },
    /// `slabs reassign`: move one of this shard's pages; the part is `1` if it moved, `0` if
    /// the source had none to spare.
    Reassign { src: PageSource, dst: PageSink },
}

/// What `stats detail` asks of each shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetailOp {
    On,
    Off,
    Dump,
}

/// The stats groups gathered from every shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsKind {
    General,
    Items,
    Slabs,
    Sizes,
    /// `stats sizes_enable` (`true`) or `stats sizes_disable`: each shard switches its
    /// histogram; the reply is one status line.
    SizesSwitch(bool),
    /// One line group per connection; shards' parts are concatenated, not summed.
    Conns,
    /// `stats detail dump`: `PREFIX` lines, summed by prefix.
    DetailDump,
    /// `stats cachedump`: each shard's `ITEM` lines for a class, concatenated and cut to
    /// `limit` items (0: no count limit) and memcached's 2 MB reply.
    CacheDump {
        class: u8,
        limit: u32,
    },
}

/// One request inside an envelope.
#[derive(Clone, Debug)]
pub struct RemoteRequest {
    pub conn: ConnRef,
    pub seq: u64,
    /// The client's descriptor (`cfd` in the owner's `watch` lines).
    pub cfd: i32,
    pub op: RemoteOp,
}

/// One reply inside an envelope: `buf[start..end]` are reply bytes; for a split retrieval,
/// the envelope's `segments[segments_start..segments_end]` list `(key index, length)` of each
/// key's part in order (for a metadump step, the cursor to resume at: see
/// [`RemoteOp::MetadumpStep`]).
#[derive(Clone, Debug)]
pub struct RemoteReply {
    pub conn: ConnRef,
    pub seq: u64,
    pub start: u32,
    pub end: u32,
    pub segments_start: u32,
    pub segments_end: u32,
}

/// Everything one core sends another in one loop turn. All variable-size parts live in the
/// envelope's own arenas, so an envelope is a handful of vectors that are recycled, never freed
/// by the core that did not allocate them (a cross-thread `free` takes the allocator's lock).
#[derive(Debug, Default)]
pub struct Envelope {
    pub from: u16,
    /// Wire bytes (requests) or reply bytes, referenced by range.
    pub buf: Vec<u8>,
    pub requests: Vec<RemoteRequest>,
    pub replies: Vec<RemoteReply>,
    /// Key positions of split retrievals, referenced by range from requests.
    pub indices: Vec<u32>,
    /// `(key index, length)` of split retrieval replies, referenced by range from replies.
    pub segments: Vec<(u32, u32)>,
    /// `watch` log records for the receiver's watchers (see `crate::watch::records`).
    pub log: Vec<u8>,
}

impl Envelope {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.replies.is_empty() && self.log.is_empty()
    }

    /// Empties the envelope, keeping its capacity for reuse.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.requests.clear();
        self.replies.clear();
        self.indices.clear();
        self.segments.clear();
        self.log.clear();
    }
}

/// A core's wake-up: an eventfd plus the flag saying the core is (about to be) asleep.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
    /// The core's io_uring fd once it has one (-1 before, and on epoll): other io_uring cores
    /// wake it with a ring message instead of an eventfd write.
    ring_fd: AtomicI32,
}

impl Waker {
    fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            fd,
            sleeping: AtomicBool::new(false),
            ring_fd: AtomicI32::new(-1),
        })
    }

    /// The eventfd the core's event loop watches.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wakes the core unconditionally (shutdown, signals).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; errors (EAGAIN when the
        // counter is saturated) are harmless since the core is awake then anyway.
        unsafe {
            libc::write(self.raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Wakes the core only if it said it is about to sleep.
    pub fn wake_if_sleeping(&self) {
        if self.is_sleeping() {
            self.wake();
        }
    }

    /// Whether the core said it is about to sleep.
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }

    /// Publishes the core's io_uring fd.
    pub fn set_ring_fd(&self, fd: RawFd) {
        self.ring_fd.store(fd, Ordering::Release);
    }

    /// The core's io_uring fd, if it has one.
    pub fn ring_fd(&self) -> Option<RawFd> {
        let fd = self.ring_fd.load(Ordering::Acquire);
        (fd >= 0).then_some(fd)
    }

    /// Drains the eventfd counter after a wake-up.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN is fine (nothing to drain).
        unsafe {
            libc::read(self.raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    /// Marks the core as about to sleep (call, then re-check queues, then block).
    pub fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::SeqCst);
    }
}

/// Builds the full mesh: the endpoint of every core.
pub fn build(core_count: u16) -> std::io::Result<Vec<Endpoint>> {
    let n = usize::from(core_count);
    let wakers: Vec<Arc<Waker>> = (0..n)
        .map(|_| Waker::new().map(Arc::new))
        .collect::<Result<_, _>>()?;
    // senders[from][to], receivers[to][from]
    let mut senders: Vec<Vec<Option<SyncSender<Envelope>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut receivers: Vec<Vec<Option<Receiver<Envelope>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = sync_channel(QUEUE_DEPTH);
                senders[from][to] = Some(tx);
                receivers[to][from] = Some(rx);
            }
        }
    }
    let mut endpoints = Vec::with_capacity(n);
    for (me, (tx, rx)) in senders.into_iter().zip(receivers).enumerate() {
        endpoints.push(Endpoint {
            me: ShardId(me as u16),
            senders: tx,
            receivers: rx,
            wakers: wakers.clone(),
        });
    }
    Ok(endpoints)
}

/// One core's view of the mesh.
pub struct Endpoint {
    pub me: ShardId,
    senders: Vec<Option<SyncSender<Envelope>>>,
    receivers: Vec<Option<Receiver<Envelope>>>,
    wakers: Vec<Arc<Waker>>,
}

impl Endpoint {
    /// This core's own waker.
    pub fn waker(&self) -> &Arc<Waker> {
        &self.wakers[usize::from(self.me.0)]
    }

    /// Whether core `core` is asleep or about to be (its shard may be parked).
    pub fn is_sleeping(&self, core: u16) -> bool {
        self.wakers
            .get(usize::from(core))
            .is_some_and(|w| w.is_sleeping())
    }

    /// Every core's waker (for shutdown).
    pub fn wakers(&self) -> &[Arc<Waker>] {
        &self.wakers
    }

    /// Tries to hand an envelope to `to`; gives it back if that queue is full. `Ok(true)` means
    /// the receiver is asleep and must be woken (the backend decides how).
    // A refused envelope goes back to the caller by value: a 128-byte move, cheaper than a
    // box per send.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, to: u16, env: Envelope) -> Result<bool, Envelope> {
        let Some(tx) = self.senders.get(usize::from(to)).and_then(Option::as_ref) else {
            return Err(env);
        };
        match tx.try_send(env) {
            Ok(()) => Ok(self.wakers[usize::from(to)].is_sleeping()),
            Err(TrySendError::Full(env)) | Err(TrySendError::Disconnected(env)) => Err(env),
        }
    }

    /// Takes up to `max` envelopes from every inbound queue.
    pub fn drain(&self, max: usize, out: &mut Vec<Envelope>) {
        for rx in self.receivers.iter().flatten() {
            for _ in 0..max {
                match rx.try_recv() {
                    Ok(env) => out.push(env),
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
        }
    }
}

/// Above this capacity a received envelope's buffer is not kept for reuse.
const RECYCLE_BYTES_MAX: usize = 4 << 20;
/// Emptied envelopes kept per peer: enough for the envelopes in flight each way, so memory
/// circulates between the two cores instead of being freed by the one that did not allocate it.
const SPARES_PER_PEER: usize = 8;

/// The envelopes being filled this turn, one per destination, plus any refused by a full queue,
/// plus one spare per destination (an emptied envelope that came from it, to send back).
pub struct Outbox {
    pending: Vec<Envelope>,
    blocked: Vec<bool>,
    spare: Vec<Vec<Envelope>>,
    /// Cores that were asleep when an envelope was handed to them this turn.
    wake: Vec<u16>,
    /// Requests handed to each core so far (each is answered by exactly one reply).
    requests_sent: Vec<u64>,
}

impl Outbox {
    pub fn new(me: u16, core_count: u16) -> Outbox {
        Outbox {
            pending: (0..core_count)
                .map(|_| Envelope {
                    from: me,
                    ..Envelope::default()
                })
                .collect(),
            blocked: vec![false; usize::from(core_count)],
            spare: (0..core_count).map(|_| Vec::new()).collect(),
            wake: Vec::new(),
            requests_sent: vec![0; usize::from(core_count)],
        }
    }

    /// Whether a request for `to` waits here, or was sent and not all are answered: of
    /// `requests_sent`, `replies` came back.
    pub fn unanswered(&self, to: u16, replies: u64) -> bool {
        let to = usize::from(to);
        self.requests_sent
            .get(to)
            .is_some_and(|&sent| sent != replies)
            || self
                .pending
                .get(to)
                .is_some_and(|env| !env.requests.is_empty())
    }

    /// Takes the cores to wake after this turn's sends.
    pub fn take_wakes(&mut self, into: &mut Vec<u16>) {
        into.clear();
        std::mem::swap(into, &mut self.wake);
    }

    /// Keeps a handled envelope to carry the next batch back to the core it came from.
    pub fn recycle(&mut self, mut env: Envelope) {
        let from = usize::from(env.from);
        if env.buf.capacity() > RECYCLE_BYTES_MAX {
            return;
        }
        if let Some(spares) = self.spare.get_mut(from) {
            if spares.len() < SPARES_PER_PEER {
                env.clear();
                spares.push(env);
            }
        }
    }

    /// The envelope for `to`, to append to.
    pub fn to(&mut self, to: u16) -> &mut Envelope {
        &mut self.pending[usize::from(to)]
    }

    /// Whether some envelope could not be delivered last time (stop reading client input).
    pub fn blocked(&self) -> bool {
        self.blocked.iter().any(|&b| b)
    }

    /// Sends every non-empty envelope; those refused stay for the next turn.
    pub fn flush(&mut self, mesh: &Endpoint) {
        for (to, env) in self.pending.iter_mut().enumerate() {
            if env.is_empty() {
                self.blocked[to] = false;
                continue;
            }
            let from = env.from;
            let mut next = self.spare[to].pop().unwrap_or_default();
            next.from = from;
            let full = std::mem::replace(env, next);
            let requests = full.requests.len() as u64;
            match mesh.try_send(to as u16, full) {
                Ok(asleep) => {
                    self.requests_sent[to] += requests;
                    self.blocked[to] = false;
                    if asleep && !self.wake.contains(&(to as u16)) {
                        self.wake.push(to as u16);
                    }
                }
                Err(back) => {
                    *env = back;
                    self.blocked[to] = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_travel_between_cores() {
        let eps = build(2).unwrap();
        let mut out = Outbox::new(0, 2);
        out.to(1).buf.extend_from_slice(b"get a\r\n");
        out.to(1).requests.push(RemoteRequest {
            conn: ConnRef {
                index: 3,
                generation: 1,
            },
            seq: 7,
            cfd: 0,
            op: RemoteOp::ResetStats,
        });
        out.flush(&eps[0]);
        assert!(!out.blocked());
        let mut got = Vec::new();
        eps[1].drain(8, &mut got);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].from, 0);
        assert_eq!(got[0].requests[0].seq, 7);
    }

    #[test]
    fn a_full_queue_blocks_and_keeps_the_envelope() {
        let eps = build(2).unwrap();
        let mut out = Outbox::new(0, 2);
        for i in 0..QUEUE_DEPTH + 1 {
            out.to(1).replies.push(RemoteReply {
                conn: ConnRef {
                    index: 0,
                    generation: 0,
                },
                seq: i as u64,
                start: 0,
                end: 0,
                segments_start: 0,
                segments_end: 0,
            });
            out.flush(&eps[0]);
        }
        assert!(out.blocked());
        let mut got = Vec::new();
        eps[1].drain(usize::MAX, &mut got);
        assert_eq!(got.len(), QUEUE_DEPTH);
        out.flush(&eps[0]);
        assert!(!out.blocked());
    }

    #[test]
    fn handled_envelopes_go_back_to_their_sender() {
        let eps = build(2).unwrap();
        let mut out0 = Outbox::new(0, 2);
        out0.to(1).buf.extend_from_slice(&[7; 1000]);
        out0.to(1).requests.push(RemoteRequest {
            conn: ConnRef {
                index: 0,
                generation: 0,
            },
            seq: 0,
            cfd: 0,
            op: RemoteOp::ResetStats,
        });
        out0.flush(&eps[0]);
        let mut got = Vec::new();
        eps[1].drain(8, &mut got);
        let env = got.pop().unwrap();
        let ptr = env.buf.as_ptr();
        let mut out1 = Outbox::new(1, 2);
        out1.recycle(env);
        out1.to(0).buf.push(1);
        out1.to(0).requests.push(RemoteRequest {
            conn: ConnRef {
                index: 0,
                generation: 0,
            },
            seq: 1,
            cfd: 0,
            op: RemoteOp::ResetStats,
        });
        out1.flush(&eps[1]);
        // The next envelope core 1 fills for core 0 reuses core 0's allocation.
        out1.to(0).buf.push(2);
        assert_eq!(out1.to(0).buf.as_ptr(), ptr);
        assert_eq!(out1.to(0).from, 1);
        assert!(out1.to(0).requests.is_empty());
    }

    #[test]
    fn sends_to_a_sleeping_core_ask_for_a_wakeup() {
        let eps = build(2).unwrap();
        let mut out = Outbox::new(0, 2);
        let mut wakes = Vec::new();
        out.to(1).buf.push(1);
        out.to(1).requests.push(RemoteRequest {
            conn: ConnRef {
                index: 0,
                generation: 0,
            },
            seq: 0,
            cfd: 0,
            op: RemoteOp::ResetStats,
        });
        out.flush(&eps[0]);
        out.take_wakes(&mut wakes);
        assert!(wakes.is_empty(), "an awake core needs no wake-up");
        eps[1].waker().set_sleeping(true);
        out.to(1).requests.push(RemoteRequest {
            conn: ConnRef {
                index: 0,
                generation: 0,
            },
            seq: 1,
            cfd: 0,
            op: RemoteOp::ResetStats,
        });
        out.flush(&eps[0]);
        out.take_wakes(&mut wakes);
        assert_eq!(wakes, vec![1]);
    }

    #[test]
    fn wakeups_only_when_sleeping() {
        let eps = build(2).unwrap();
        let w = eps[1].waker();
        w.wake_if_sleeping();
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an eventfd we own.
        let n = unsafe { libc::read(w.raw_fd(), (&mut v as *mut u64).cast(), 8) };
        assert_eq!(n, -1, "no wake-up expected while awake");
        w.set_sleeping(true);
        w.wake_if_sleeping();
        // SAFETY: as above.
        let n = unsafe { libc::read(w.raw_fd(), (&mut v as *mut u64).cast(), 8) };
        assert_eq!(n, 8);
        assert_eq!(v, 1);
    }
}
