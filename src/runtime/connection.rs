//! One client connection's state on its home core: the bounded read buffer, the swallow
//! counter for rejected data blocks, the replies ready to send, and the reorder queue of replies
//! still waiting for other shards.

use std::collections::VecDeque;

use super::mesh::StatsKind;
use super::udp::UdpConn;
use crate::storage::{ClassSet, WalkCursor};

/// Above this many bytes of unsent replies, the connection is not read or parsed further until
/// the client drains them (a client that never reads cannot grow server memory).
pub const OUT_HIGH_WATER: usize = 1 << 20;

/// Capacity a connection's input or reply buffer keeps once it is empty; a connection idle for
/// [`IDLE_SWEEP_SECS`] keeps no more in any buffer. So connections that once carried large
/// values cost little while idle (500 connections that each read a 500 KB value held 240 MB
/// until they closed). Larger emptied buffers go to the core's bounded reserves
/// ([`LargeBufs`]), from which the next large value takes one, so a stream of large values
/// does not allocate (and page-fault) a fresh buffer for each. The uring loop's spare reply
/// buffers and the slot-buffer pool keep nothing larger.
pub const BUF_KEEP_BYTES: usize = 64 * 1024;
/// Seconds without a command after which a connection's large buffers are released.
pub const IDLE_SWEEP_SECS: u32 = 2;
/// A request this long or longer (its command line gives the length: a large `set` or `ms`
/// value, or a binary body) has the rest of its bytes received straight into the input buffer
/// room reserved for it, not through the backend's receive buffers and a copy: one receive of
/// the whole rest on io_uring instead of one completion per 4 KiB buffer. Measured on 500 KB
/// sets: `tuning/results/20261124-large-sets.md`.
pub const LARGE_INPUT_MIN: usize = 32 * 1024;

/// Most replies that may wait for other shards on one connection (`pipeline_depth_max`).
pub const SLOTS_MAX: usize = 1024;
/// Keys of a retrieval run at once: a longer `get` is answered in runs of this many keys,
/// the next run only once the connection may parse again ([`Conn::may_parse`]). So a single
/// `get` of thousands of keys (a line may hold up to 1 MB of them) cannot build its whole reply
/// in memory: the reply streams out as the client reads it, as memcached's does.
pub const GET_RUN_KEYS: usize = 16;
/// While a long retrieval is under way, the next run of its keys waits until fewer than this
/// many replies wait for other shards (each run's reply is at most `GET_RUN_KEYS` items).
pub const GET_RUN_SLOTS_MAX: usize = 2;

/// Most keys a connection may have asked of other shards and not yet had all the answers for
/// (their slots still queued): with `-I` items, their replies take at most this many items'
/// worth of memory. A client that pipelines gets for large values another shard owns, and
/// does not read, is not parsed further; see also [`Conn::slot_bytes`].
pub const REMOTE_KEYS_MAX: u32 = 64;

/// A ready slot takes further ready replies while it holds fewer bytes than this (so the bytes
/// slots hold stay bounded by [`SLOTS_MAX`] times this plus one reply).
pub const READY_COALESCE_BYTES: usize = 16 * 1024;

/// A reply that waits for one or more shards, in request order.
#[derive(Debug)]
pub struct Slot {
    pub seq: u64,
    /// Shard parts still to arrive.
    pub parts_left: u32,
    /// Bytes of `buf` counted in [`Conn::slot_bytes`].
    pub held: usize,
    /// Keys asked of other shards for this reply (counted in [`Conn::remote_keys`]).
    pub remote_keys: u32,
    /// Reply bytes gathered so far.
    pub buf: Vec<u8>,
    pub kind: SlotKind,
}

/// How a slot's parts become its reply.
#[derive(Debug)]
pub enum SlotKind {
    /// The reply is `buf` as it is.
    Plain,
    /// A retrieval split across shards: `segments[i]` is key i's `(start, len)` in `buf`; the
    /// reply is every key's part in key order, then `END` if `end` (a run of a long retrieval's
    /// keys other than its last has none).
    Get {
        segments: Vec<(u32, u32)>,
        end: bool,
    },
    /// `stats` of some group: `buf` holds every shard's `STAT` lines, summed when complete.
    Stats(StatsKind),
    /// `flush_all`: `OK` once every shard has flushed (nothing if `noreply`).
    Flush { noreply: bool },
    /// `stats reset`: `RESET` once every shard has reset.
    Reset,
    /// Binary `stat` of a gathered group: like `Stats`, converted to binary responses echoing
    /// `opaque` when complete.
    BinaryStats { kind: StatsKind, opaque: u32 },
    /// An admin command (`stats detail on`, `cache_memlimit`): `OK` once every shard has done
    /// its part (nothing if `noreply`).
    Ok { noreply: bool },
    /// `slabs reassign`: each shard's part is `1` (a page moved), `0` (no page to spare) or
    /// `2` (no class to take one from).
    Reassign,
    /// `lru_crawler metadump`, streamed: while this slot is at the front of the queue, each
    /// step's item lines go straight to `out` (`runtime::admin`); `END` follows the last shard's
    /// last step, when the slot completes.
    Metadump(MetadumpWalk),
}

/// Where a streamed `lru_crawler metadump` stands: shards are walked one after another, each
/// in bounded steps, one step at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadumpWalk {
    /// The classes listed.
    pub classes: ClassSet,
    /// The shard being walked.
    pub shard: u16,
    /// Where that shard's next step starts.
    pub cursor: WalkCursor,
    /// A step was asked of another shard and has not answered yet.
    pub step_in_flight: bool,
}

/// The rest of a long retrieval whose first runs of keys have been answered: its keys are the
/// next `keys_len` bytes of the connection's input, and its line ends `tail_len` bytes after
/// them (trailing spaces and the line end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetRest {
    pub verb: crate::protocol::GetVerb,
    pub exptime: i64,
    pub keys_len: usize,
    pub tail_len: usize,
}

/// What an unauthenticated connection (`-Y`) reads next (see `runtime::auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthWait {
    /// A command line: only `set` may try to authenticate.
    Line,
    /// An authentication `set`'s data block of `len` bytes, its CRLF included.
    Block { len: u64 },
}

/// A client connection.
#[derive(Debug)]
pub struct Conn {
    pub generation: u32,
    /// The connection's socket, for large values written straight from their items
    /// ([`super::direct`]); -1 where there is none (UDP, `watch` streams, tests). The backend
    /// owns it and closes it only as it drops the connection.
    pub fd: std::os::fd::RawFd,
    /// Bytes received and not yet parsed.
    pub rbuf: Vec<u8>,
    /// Length of the request at the front of `rbuf` when its command line says it is large and
    /// its data has not all arrived (else 0): `Core::finish_input` reserves room for all of it,
    /// and the backends receive the rest straight into that room ([`LARGE_INPUT_MIN`]).
    pub want: usize,
    /// Bytes still to discard from the input (a rejected data block).
    pub swallow: usize,
    /// Replies ready to send, in order.
    pub out: Vec<u8>,
    /// Bytes at the front of `out` already handed to the kernel (epoll backend).
    pub out_sent: usize,
    /// Bytes handed to an in-flight send outside `out` (io_uring backend).
    pub inflight: usize,
    /// Replies waiting for other shards, by ascending `seq`.
    pub slots: VecDeque<Slot>,
    pub next_seq: u64,
    /// Close once `out` is written (quit, over-long line, peer closed its side).
    pub closing: bool,
    /// Listed in the core's dirty list this turn.
    pub dirty: bool,
    /// The socket may have unread bytes (epoll edge-triggered bookkeeping).
    pub read_ready: bool,
    /// Readiness reported the peer's FIN or an error (epoll): read until EOF or EAGAIN, since
    /// a short read does not show that a FIN waits behind the data, and no new edge will.
    pub read_hup: bool,
    /// The peer closed its write side.
    pub eof: bool,
    /// Parsing stopped with input left for a budget or backpressure (not for lack of bytes).
    pub held_back: bool,
    /// Unix-ish server time of the last command, for `stats conns`.
    pub last_cmd: u32,
    /// Peer address for `stats conns`.
    pub peer: String,
    /// Wire protocol, decided by the first byte received (0x80: binary); `None` until then.
    pub binary: Option<bool>,
    /// `SlotKind::Metadump` slots in `slots` (dumps not finished yet): 0 or 1, since nothing
    /// is parsed during a dump ([`Conn::may_parse`]).
    pub metadump_slots: u32,
    /// Its id in `stats conns`, which is the `cfd` of its `watch` lines (memcached uses the
    /// descriptor for both; corecache's ids are unique across cores and follow the order
    /// connections came in: `stats::conn_id`).
    pub cfd: i32,
    /// Why it closes, for `watch connevents` (normal unless something else is recorded).
    pub close_reason: crate::watch::CloseReason,
    /// Set once the connection has become a `watch` log stream.
    pub watch: Option<super::watchers::Watcher>,
    /// A UDP request datagram's connection (`runtime::udp`): where its replies go.
    pub udp: Option<Box<UdpConn>>,
    /// `-Y`: what the connection reads before it has authenticated; `None` once it has (and
    /// always without `-Y`).
    pub auth: Option<AuthWait>,
    /// `-S`: the connection's SASL exchange (binary protocol).
    pub sasl: crate::protocol::sasl::Exchange,
    /// The next request (a `watch`) waits until every reply ahead of it is in.
    pub drain_first: bool,
    /// `-Z`: the TLS session of a connection from a TLS listener (see `runtime::tls`).
    pub tls: Option<Box<super::tls::TlsConn>>,
    /// TLS: bytes at the front of `out` that are ciphertext already; the rest are replies
    /// still to encrypt ([`Conn::seal`]). Always 0 without TLS.
    pub out_sealed: usize,
    /// A long retrieval answered in runs ([`GET_RUN_KEYS`]) and not finished yet.
    pub get_rest: Option<GetRest>,
    /// Bytes of replies waiting in `slots` (behind one not complete yet), but for what the
    /// last slot took since it was counted ([`Conn::held_bytes`] adds that). They count
    /// against [`OUT_HIGH_WATER`] with the unsent output: a client that pipelines gets of large
    /// values, some another shard's, and does not read, stops being parsed once a megabyte
    /// waits, as it does when every reply goes straight to the output.
    pub slot_bytes: usize,
    /// Keys asked of other shards for replies still in `slots` (at most about
    /// [`REMOTE_KEYS_MAX`]).
    pub remote_keys: u32,
}

impl Conn {
    pub fn new(generation: u32, peer: String) -> Conn {
        Conn {
            generation,
            fd: -1,
            rbuf: Vec::new(),
            want: 0,
            swallow: 0,
            out: Vec::new(),
            out_sent: 0,
            inflight: 0,
            slots: VecDeque::new(),
            next_seq: 0,
            closing: false,
            dirty: false,
            read_ready: true,
            read_hup: false,
            eof: false,
            held_back: false,
            last_cmd: 0,
            peer,
            binary: None,
            metadump_slots: 0,
            cfd: -1,
            close_reason: crate::watch::CloseReason::Normal,
            watch: None,
            udp: None,
            auth: None,
            sasl: Default::default(),
            drain_first: false,
            tls: None,
            out_sealed: 0,
            get_rest: None,
            slot_bytes: 0,
            remote_keys: 0,
        }
    }

    /// Whether more requests may be parsed now. Not during a metadump: requests after it run
    /// once it has ended, as in memcached (a `flush_all` behind it must not empty it). A UDP
    /// datagram's requests run one at a time (`runtime::udp`). The next run of a long
    /// retrieval's keys also waits for all but [`GET_RUN_SLOTS_MAX`]` - 1` of the replies other
    /// shards owe.
    pub fn may_parse(&self) -> bool {
        !self.closing
            && self.pending_bytes() + self.held_bytes() < OUT_HIGH_WATER
            && self.remote_keys < REMOTE_KEYS_MAX
            && self.slots.len() < SLOTS_MAX
            && self.metadump_slots == 0
            && (self.udp.is_none() || self.slots.is_empty())
            && (!self.drain_first || self.slots.is_empty())
            && (self.get_rest.is_none() || self.slots.len() < GET_RUN_SLOTS_MAX)
    }

    /// Bytes of replies waiting in `slots`: [`Conn::slot_bytes`] plus what local replies added
    /// to the last slot since ([`Conn::ready_buf`] hands it out uncounted).
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.slot_bytes
            + self
                .slots
                .back()
                .map_or(0, |s| s.buf.len().saturating_sub(s.held))
    }

    /// Counts what the last slot took since it was last counted: called before a slot is
    /// queued behind it, after which [`Conn::ready_buf`] no longer hands it out.
    pub fn count_last_slot(&mut self) {
        if let Some(s) = self.slots.back_mut() {
            let extra = s.buf.len().saturating_sub(s.held);
            s.held += extra;
            self.slot_bytes += extra;
        }
    }

    /// Reply bytes not yet taken by the kernel: unsent in `out` plus an in-flight send.
    pub fn pending_bytes(&self) -> usize {
        self.out.len() - self.out_sent + self.inflight
    }

    /// Whether ready replies should wait for the slots behind them rather than go out now.
    ///
    /// A pipelining client's batch whose later requests went to other shards would otherwise
    /// be answered in pieces: the local prefix this turn, the rest a mesh round trip later. Each
    /// piece costs a send here and a read (and, for a client that refills its pipeline as
    /// replies arrive, a smaller next batch) there. Holding the prefix until the slots complete
    /// costs it one mesh round trip, which the batch's last reply waits for anyway. Bounded:
    /// past [`PARTIAL_HOLD_BYTES_MAX`] ready bytes go out regardless.
    pub fn holds_partial(&self) -> bool {
        !self.slots.is_empty()
            && !self.closing
            && self.out.len() - self.out_sent < PARTIAL_HOLD_BYTES_MAX
    }

    /// Bytes waiting to be written.
    pub fn unsent(&self) -> &[u8] {
        &self.out[self.out_sent..]
    }

    /// Records that `n` more bytes were written; recycles the buffer once all are. An emptied
    /// buffer larger than [`BUF_KEEP_BYTES`] is not kept unless more output is on its way
    /// ([`Conn::streaming`]): it is returned, for the core's reserve of large reply buffers.
    pub fn advance_sent(&mut self, n: usize) -> Option<Vec<u8>> {
        self.out_sent += n;
        if self.out_sent >= self.out.len() {
            self.out.clear();
            self.out_sent = 0;
            self.out_sealed = 0;
            if self.out.capacity() > BUF_KEEP_BYTES && !self.streaming() {
                return Some(std::mem::take(&mut self.out));
            }
        }
        None
    }

    /// Whether more output is on its way without a new request: replies waiting for other
    /// shards, the next run of a long retrieval, a metadump. Such a connection keeps its
    /// large reply buffer for that output.
    pub fn streaming(&self) -> bool {
        !self.slots.is_empty() || self.get_rest.is_some() || self.metadump_slots > 0
    }

    /// Where a reply that is complete now goes, in order: `out` when nothing waits before it,
    /// else the last slot's buffer when that slot is a ready plain reply still under
    /// [`READY_COALESCE_BYTES`] (consecutive local replies behind a remote one share a slot);
    /// `None` when the reply needs a slot of its own ([`Conn::push_ready`]).
    #[inline(always)]
    pub fn ready_buf(&mut self) -> Option<&mut Vec<u8>> {
        if self.slots.is_empty() {
            return Some(&mut self.out);
        }
        match self.slots.back_mut() {
            Some(s)
                if s.parts_left == 0
                    && matches!(s.kind, SlotKind::Plain)
                    && s.buf.len() < READY_COALESCE_BYTES =>
            {
                Some(&mut s.buf)
            }
            _ => None,
        }
    }

    /// Queues a reply that is complete now: straight into `out` when nothing waits before it,
    /// else as a ready slot behind the replies still waiting. Returns the buffer when unused.
    pub fn push_ready(&mut self, buf: Vec<u8>, pool: &mut BufPool) {
        if self.slots.is_empty() {
            self.out.extend_from_slice(&buf);
            pool.give(buf);
            return;
        }
        self.count_last_slot();
        self.slot_bytes += buf.len();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            seq,
            parts_left: 0,
            held: buf.len(),
            remote_keys: 0,
            buf,
            kind: SlotKind::Plain,
        });
        self.release_ready(pool);
    }

    /// Moves every completed slot at the front of the queue into `out`; their buffers go back
    /// to the pool.
    pub fn release_ready(&mut self, pool: &mut BufPool) {
        while self.slots.front().is_some_and(|s| s.parts_left == 0) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            debug_assert!(self.slot_bytes >= slot.held && self.remote_keys >= slot.remote_keys);
            self.slot_bytes = self.slot_bytes.saturating_sub(slot.held);
            self.remote_keys = self.remote_keys.saturating_sub(slot.remote_keys);
            pool.give(finish_slot(slot, &mut self.out));
        }
    }
}

/// Whether the connection is finished: closing or at EOF, with nothing left to send or await.
pub fn should_close(c: &Conn) -> bool {
    finishing(c) && c.unsent().is_empty() && c.inflight == 0
}

/// Whether the connection will produce no more output: closing or at EOF, with no reply
/// awaited and no input held back (what it has queued may still be unsent).
pub fn finishing(c: &Conn) -> bool {
    (c.closing || c.eof) && c.slots.is_empty() && (c.closing || !c.held_back)
}

/// Connections a loop must come back to next turn, each listed once. Membership is a flag per
/// connection index, so queueing costs O(1) however many connections are waiting (a linear
/// `contains` made a turn with many readable connections quadratic).
#[derive(Debug, Default)]
pub struct Stalled {
    list: Vec<u32>,
    queued: Vec<bool>,
}

impl Stalled {
    /// Queues `idx` unless it is queued already.
    pub fn push(&mut self, idx: u32) {
        let i = idx as usize;
        if self.queued.len() <= i {
            self.queued.resize(i + 1, false);
        }
        if !self.queued[i] {
            self.queued[i] = true;
            self.list.push(idx);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Moves the queue, in arrival order, into `into` (cleared first); pushes after this start
    /// a new queue. The two vectors swap, so a loop that hands `into` back each turn allocates
    /// nothing once both have grown.
    pub fn take_into(&mut self, into: &mut Vec<u32>) {
        into.clear();
        std::mem::swap(&mut self.list, into);
        for &idx in into.iter() {
            self.queued[idx as usize] = false;
        }
    }

    /// Forgets a connection that is gone.
    pub fn remove(&mut self, idx: u32) {
        if self.queued.get(idx as usize).copied().unwrap_or(false) {
            self.queued[idx as usize] = false;
            self.list.retain(|&i| i != idx);
        }
    }
}

/// Most ready bytes [`Conn::holds_partial`] keeps back.
pub const PARTIAL_HOLD_BYTES_MAX: usize = 32 * 1024;

/// Most buffers a core keeps for reuse, the largest one it keeps, and the most bytes all of
/// them may hold.
const POOL_BUFS_MAX: usize = 1024;
const POOL_BUF_BYTES_MAX: usize = BUF_KEEP_BYTES;
const POOL_BYTES_MAX: usize = 4 << 20;

/// Reply buffers for slots, reused so a reply that waits behind another shard's costs no
/// allocation. Bounded in count, in the size of what it keeps and in the bytes it holds.
#[derive(Debug, Default)]
pub struct BufPool {
    bufs: Vec<Vec<u8>>,
    /// Capacity of `bufs`, summed.
    bytes: usize,
}

impl BufPool {
    /// Buffers held for reuse and their capacity in bytes.
    pub fn held(&self) -> (u64, u64) {
        (self.bufs.len() as u64, self.bytes as u64)
    }

    /// An empty buffer, with capacity if one was returned before.
    pub fn take(&mut self) -> Vec<u8> {
        let buf = self.bufs.pop().unwrap_or_default();
        self.bytes -= buf.capacity();
        buf
    }

    /// Returns a buffer for reuse (dropped if the pool is full or the buffer is large).
    pub fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity > 0
            && capacity <= POOL_BUF_BYTES_MAX
            && self.bufs.len() < POOL_BUFS_MAX
            && self.bytes + capacity <= POOL_BYTES_MAX
        {
            buf.clear();
            self.bytes += capacity;
            self.bufs.push(buf);
        }
    }
}

/// Most bytes of large input buffers, and of large reply buffers, a core keeps for reuse
/// ([`LargeBufs`]).
const LARGE_BUFS_BYTES_MAX: usize = 4 << 20;

/// Input or reply buffers that large values grew (over [`BUF_KEEP_BYTES`]), released by their
/// connections once emptied, for the next large value on any connection. Idle connections
/// then hold none, while connections streaming large values do not allocate (and page-fault)
/// a fresh buffer for every value. At most [`LARGE_BUFS_BYTES_MAX`] bytes in all; a buffer
/// that does not fit is freed.
#[derive(Debug, Default)]
pub struct LargeBufs {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl LargeBufs {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Buffers held.
    pub fn count(&self) -> usize {
        self.bufs.len()
    }

    /// The largest buffer held, if its capacity is at least `min`.
    pub fn take(&mut self, min: usize) -> Option<Vec<u8>> {
        let (i, _) = self
            .bufs
            .iter()
            .enumerate()
            .max_by_key(|(_, b)| b.capacity())
            .filter(|(_, b)| b.capacity() >= min)?;
        let buf = self.bufs.swap_remove(i);
        self.bytes -= buf.capacity();
        Some(buf)
    }

    /// Keeps an emptied buffer if there is room for it.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity > BUF_KEEP_BYTES && self.bytes + capacity <= LARGE_BUFS_BYTES_MAX {
            buf.clear();
            self.bytes += capacity;
            self.bufs.push(buf);
        }
    }
}

/// Appends a completed slot's reply; gives back its buffer./// Appends a completed slot's reply; gives back its buffer.
fn finish_slot(slot: Slot, out: &mut Vec<u8>) -> Vec<u8> {
    match slot.kind {
        SlotKind::Plain => out.extend_from_slice(&slot.buf),
        SlotKind::Get { segments, end } => {
            for (start, len) in segments {
                let (s, l) = (start as usize, len as usize);
                if let Some(part) = slot.buf.get(s..s + l) {
                    out.extend_from_slice(part);
                }
            }
            if end {
                out.extend_from_slice(crate::protocol::compose::END);
            }
        }
        SlotKind::Stats(_) => out.extend_from_slice(&slot.buf),
        SlotKind::Flush { noreply } | SlotKind::Ok { noreply } => {
            if !noreply {
                out.extend_from_slice(crate::protocol::compose::OK);
            }
        }
        SlotKind::Reset => out.extend_from_slice(crate::protocol::compose::RESET),
        // A page moved on some shard: OK; else a shard had no page to spare: NOSPARE; else no
        // shard found a class to take from (`-1`): BADCLASS, as memcached answers.
        SlotKind::Reassign => out.extend_from_slice(if slot.buf.contains(&b'1') {
            crate::protocol::compose::OK
        } else if slot.buf.contains(&b'0') {
            crate::protocol::compose::REASSIGN_NOSPARE
        } else {
            crate::protocol::compose::REASSIGN_BADCLASS
        }),
        SlotKind::BinaryStats { .. } => out.extend_from_slice(&slot.buf),
        SlotKind::Metadump(_) => {
            out.extend_from_slice(&slot.buf);
            out.extend_from_slice(crate::protocol::compose::END);
        }
    }
    slot.buf
}

/// Receives at most `max` bytes from socket `fd` into `buf`'s spare capacity (non-blocking),
/// appending them to `buf`: a read straight into the buffer, where reading into a scratch
/// buffer and appending would copy every byte once more. `Ok(0)` is end of input.
pub fn recv_spare(fd: std::os::fd::RawFd, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    let room = buf.spare_capacity_mut();
    let n = room.len().min(max);
    // SAFETY: `room` is `buf`'s allocated spare capacity, at least `n` bytes long, and nothing
    // else refers to it during the call; recv(2) writes at most `n` bytes there.
    let got = unsafe { libc::recv(fd, room.as_mut_ptr().cast(), n, libc::MSG_DONTWAIT) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let got = got as usize;
    // SAFETY: recv(2) initialized the `got <= n` bytes after the buffer's length.
    unsafe { buf.set_len(buf.len() + got) };
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_spare_appends_what_arrives_within_its_bounds() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let mut buf = Vec::with_capacity(16);
        buf.extend_from_slice(b"ab");
        let e = recv_spare(fd, &mut buf, 100).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        let sent = b"cdefghijklmnopqrstuvwxyz0123456789";
        b.write_all(sent).unwrap();
        assert_eq!(recv_spare(fd, &mut buf, 5).unwrap(), 5, "at most `max`");
        assert_eq!(buf, b"abcdefg");
        let room = buf.capacity() - buf.len();
        assert_eq!(
            recv_spare(fd, &mut buf, 100).unwrap(),
            room,
            "at most the spare room"
        );
        buf.reserve(100);
        drop(b);
        let rest = sent.len() - 5 - room;
        assert_eq!(recv_spare(fd, &mut buf, 100).unwrap(), rest);
        assert_eq!(buf, [&b"ab"[..], sent].concat());
        assert_eq!(recv_spare(fd, &mut buf, 100).unwrap(), 0, "end of input");
    }

    #[test]
    fn released_slots_keep_order_and_return_buffers() {
        let mut pool = BufPool::default();
        let mut c = Conn::new(1, String::new());
        for (seq, parts_left, bytes) in [(0u64, 1u32, b"A" as &[u8]), (1, 0, b"B"), (2, 0, b"C")] {
            let mut buf = pool.take();
            buf.extend_from_slice(bytes);
            c.slots.push_back(Slot {
                seq,
                parts_left,
                held: 0,
                remote_keys: 0,
                buf,
                kind: SlotKind::Plain,
            });
        }
        c.release_ready(&mut pool);
        assert!(c.out.is_empty(), "B and C wait behind A");
        c.slots[0].parts_left = 0;
        c.release_ready(&mut pool);
        assert_eq!(c.out, b"ABC");
        assert_eq!(pool.bufs.len(), 3);
        assert!(pool.take().is_empty());
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = BufPool::default();
        pool.give(Vec::with_capacity(POOL_BUF_BYTES_MAX + 1));
        assert!(pool.bufs.is_empty());
        for _ in 0..POOL_BUFS_MAX + 5 {
            pool.give(Vec::with_capacity(16));
        }
        assert_eq!(pool.bufs.len(), POOL_BUFS_MAX);
        assert_eq!(
            pool.held(),
            (POOL_BUFS_MAX as u64, 16 * POOL_BUFS_MAX as u64)
        );
        // In bytes too: large buffers fill it before the count does.
        let mut pool = BufPool::default();
        for _ in 0..POOL_BUFS_MAX {
            pool.give(Vec::with_capacity(POOL_BUF_BYTES_MAX));
        }
        assert_eq!(pool.bufs.len(), POOL_BYTES_MAX / POOL_BUF_BYTES_MAX);
        assert_eq!(pool.held().1, POOL_BYTES_MAX as u64);
        let buf = pool.take();
        assert_eq!(buf.capacity(), POOL_BUF_BYTES_MAX);
        assert_eq!(pool.held().1, (POOL_BYTES_MAX - POOL_BUF_BYTES_MAX) as u64);
    }
}

#[cfg(test)]
mod large_bufs_tests {
    use super::{LargeBufs, BUF_KEEP_BYTES, LARGE_BUFS_BYTES_MAX};

    #[test]
    fn takes_the_largest_that_fits_and_holds_a_bounded_total() {
        let mut large = LargeBufs::default();
        // Small buffers are not kept: a connection keeps those itself.
        large.give(Vec::with_capacity(BUF_KEEP_BYTES));
        assert_eq!((large.count(), large.bytes()), (0, 0));
        large.give(Vec::with_capacity(300_000));
        large.give(Vec::with_capacity(600_000));
        assert_eq!((large.count(), large.bytes()), (2, 900_000));
        assert!(large.take(700_000).is_none(), "none is large enough");
        let buf = large.take(100_000).unwrap();
        assert_eq!(buf.capacity(), 600_000);
        assert!(buf.is_empty());
        assert_eq!((large.count(), large.bytes()), (1, 300_000));
        // The total is bounded: what does not fit is freed.
        for _ in 0..100 {
            large.give(Vec::with_capacity(1 << 20));
        }
        assert!(large.bytes() <= LARGE_BUFS_BYTES_MAX);
        assert_eq!(large.bytes(), 300_000 + 3 * (1 << 20));
        large.give(Vec::with_capacity(LARGE_BUFS_BYTES_MAX + 1));
        assert_eq!(large.count(), 4);
    }
}

#[cfg(test)]
mod stalled_tests {
    use super::Stalled;

    #[test]
    fn queues_each_connection_once_until_taken() {
        let mut s = Stalled::default();
        assert!(s.is_empty());
        for idx in [5, 2, 5, 9, 2] {
            s.push(idx);
        }
        s.remove(9);
        s.remove(40); // never queued
        let mut out = vec![7];
        s.take_into(&mut out);
        assert_eq!(out, vec![5, 2]);
        assert!(s.is_empty());
        s.push(5); // may be queued again once taken
        s.push(9);
        s.take_into(&mut out);
        assert_eq!(out, vec![5, 9]);
    }
}
