//! One client connection's state on its home core: the bounded read buffer, the swallow
//! counter for rejected data blocks, the replies ready to send, and the reorder queue of replies
//! still waiting for other shards.

use std::collections::VecDeque;

use super::mesh::StatsKind;

/// Above this many bytes of unsent replies, the connection is not read or parsed further until
/// the client drains them (a client that never reads cannot grow server memory).
pub const OUT_HIGH_WATER: usize = 1 << 20;

/// Most replies that may wait for other shards on one connection (`pipeline_depth_max`).
pub const SLOTS_MAX: usize = 1024;

/// A reply that waits for one or more shards, in request order.
#[derive(Debug)]
pub struct Slot {
    pub seq: u64,
    /// Shard parts still to arrive.
    pub parts_left: u32,
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
    /// reply is every key's part in key order, then `END`.
    Get { segments: Vec<(u32, u32)> },
    /// `stats` of some group: `buf` holds every shard's `STAT` lines, summed when complete.
    Stats(StatsKind),
    /// `flush_all`: `OK` once every shard has flushed (nothing if `noreply`).
    Flush { noreply: bool },
    /// `stats reset`: `RESET` once every shard has reset.
    Reset,
    /// An admin command (`stats detail on`, `cache_memlimit`): `OK` once every shard has done
    /// its part (nothing if `noreply`).
    Ok { noreply: bool },
}

/// A client connection.
#[derive(Debug)]
pub struct Conn {
    pub generation: u32,
    /// Bytes received and not yet parsed.
    pub rbuf: Vec<u8>,
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
    /// The peer closed its write side.
    pub eof: bool,
    /// Unix-ish server time of the last command, for `stats conns`.
    pub last_cmd: u32,
    /// Peer address for `stats conns`.
    pub peer: String,
}

impl Conn {
    pub fn new(generation: u32, peer: String) -> Conn {
        Conn {
            generation,
            rbuf: Vec::new(),
            swallow: 0,
            out: Vec::new(),
            out_sent: 0,
            inflight: 0,
            slots: VecDeque::new(),
            next_seq: 0,
            closing: false,
            dirty: false,
            read_ready: true,
            eof: false,
            last_cmd: 0,
            peer,
        }
    }

    /// Whether more requests may be parsed now.
    pub fn may_parse(&self) -> bool {
        !self.closing
            && self.out.len() - self.out_sent + self.inflight < OUT_HIGH_WATER
            && self.slots.len() < SLOTS_MAX
    }

    /// Bytes waiting to be written.
    pub fn unsent(&self) -> &[u8] {
        &self.out[self.out_sent..]
    }

    /// Records that `n` more bytes were written; recycles the buffer once all are.
    pub fn advance_sent(&mut self, n: usize) {
        self.out_sent += n;
        if self.out_sent >= self.out.len() {
            self.out.clear();
            self.out_sent = 0;
            // Do not keep a huge buffer around after one large reply.
            if self.out.capacity() > 4 * OUT_HIGH_WATER {
                self.out = Vec::new();
            }
        }
    }

    /// Moves every completed slot at the front of the queue into `out`.
    pub fn release_ready(&mut self) {
        while self.slots.front().is_some_and(|s| s.parts_left == 0) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            finish_slot(slot, &mut self.out);
        }
    }
}

/// Appends a completed slot's reply.
fn finish_slot(slot: Slot, out: &mut Vec<u8>) {
    match slot.kind {
        SlotKind::Plain => out.extend_from_slice(&slot.buf),
        SlotKind::Get { segments } => {
            for (start, len) in segments {
                let (s, l) = (start as usize, len as usize);
                if let Some(part) = slot.buf.get(s..s + l) {
                    out.extend_from_slice(part);
                }
            }
            out.extend_from_slice(crate::protocol::compose::END);
        }
        SlotKind::Stats(_) => out.extend_from_slice(&slot.buf),
        SlotKind::Flush { noreply } | SlotKind::Ok { noreply } => {
            if !noreply {
                out.extend_from_slice(crate::protocol::compose::OK);
            }
        }
        SlotKind::Reset => out.extend_from_slice(crate::protocol::compose::RESET),
    }
}
