//! The executor's engine, shared by both networking backends: connections, parsing, routing,
//! local execution, envelopes to and from other cores, and in-order replies.
//!
//! A backend only moves bytes: it appends received bytes ([`Core::input_only`]), has them
//! parsed and run warmed ([`Core::process_warmed`]), runs one [`Core::turn_begin`] /
//! [`Core::turn_end`] pair per loop turn, and writes each dirty connection's `out` once.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admin;
use super::connection::{
    BufPool, Conn, GetRest, LargeBufs, Slot, SlotKind, BUF_KEEP_BYTES, GET_RUN_KEYS,
    IDLE_SWEEP_SECS, LARGE_INPUT_MIN,
};
use super::direct::LargeValues;
use super::durable::{LogWait, OnFailure, Target};
use super::mesh::{
    ConnRef, Endpoint, Envelope, Outbox, RemoteOp, RemoteReply, RemoteRequest, StatsKind,
};
use super::park::HeldShard;
use super::stats;
use super::udp::Udp;
use super::Shared;
use crate::clock::Instant32;
use crate::protocol::meta::MetaVerb;
use crate::protocol::parse::{find_byte, parse, pending_len};
use crate::protocol::{compose, GetVerb, Keys, Limits, ParseError, Request, StatsGroup};
use crate::router::{key_hash, shard_of};
use crate::shard::{CopyValue, Shard, ValueOut};
use crate::storage::ClassSet;

/// Envelopes taken from each inbound queue per turn (bounds one turn's work).
const INBOUND_PER_TURN: usize = 16;

/// Bytes parsed from one connection per turn before moving on (fairness between clients).
/// Requests are bounded too, by `-R` (`Core::reqs_per_event`).
pub(super) const PARSE_BUDGET: usize = 256 * 1024;
/// Input left incomplete is looked at for the length of the request it begins (so that a large
/// value's buffer is sized once) only from this many bytes: a small request cut short by a
/// read costs no second look.
const PENDING_HINT_MIN: usize = 1024;

/// What a backend should do with a connection after feeding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnAction {
    Keep,
    Close,
}

/// One executor's state.
pub struct Core {
    pub me: u16,
    pub shard_count: u16,
    pub shard: HeldShard,
    pub(super) conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    generation_next: u32,
    mesh: Endpoint,
    pub(super) outbox: Outbox,
    inbox: Vec<Envelope>,
    /// Replies received from each core so far (see [`Outbox::unanswered`]).
    replies_received: Vec<u64>,
    /// Requests this core ran on another core's parked shard (see `park`).
    pub borrowed_requests: u64,
    pub shared: Arc<Shared>,
    pub(super) limits: Limits,
    pub now: Instant32,
    /// Connections with new output this turn.
    pub dirty: Vec<u32>,
    /// Counters of this core's connections (summed into `stats`).
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// `flush_all` commands received by this core's connections.
    pub cmd_flush: u64,
    /// Times a connection stopped parsing at `-R` requests or [`PARSE_BUDGET`] bytes so others
    /// could run (memcached's `conn_yields`).
    pub conn_yields: u64,
    /// Whether a request that leaves its reply stacked (anything but a retrieval or `mn`, a
    /// silent one included) came before the request now being dispatched in the same parse
    /// pass (`lru_crawler metadump` and `watch` refuse to follow one).
    pub(super) pipeline_stacked: bool,
    /// Connections closed by `-o idle_timeout` (memcached's `idle_kicks`).
    pub idle_kicks: u64,
    /// `-Y`: logins tried by this core's connections, and those refused (memcached's
    /// `auth_cmds`, `auth_errors`).
    pub auth_cmds: u64,
    pub auth_errors: u64,
    rbuf_max: usize,
    /// `-R`: requests one connection runs per turn before the others get theirs.
    pub(super) reqs_per_event: usize,
    last_crawl: Instant32,
    /// During an `lru_crawler crawl` pass: when its next slice may run (`lru_crawler sleep`
    /// after the previous one).
    crawl_slice_at: Option<Instant>,
    /// Reply buffers for slots.
    pub(super) pool: BufPool,
    /// Input buffers large values grew, for the next large values (see [`LargeBufs`]).
    large_rbufs: LargeBufs,
    /// The same for reply buffers.
    large_out: LargeBufs,
    /// The second of the last [`Core::sweep_idle_buffers`].
    swept_at: u32,
    /// Key hashes of the group whose buckets [`Core::warm_group`] asked for last.
    warm_previous: Vec<u64>,
    warm_spare: Vec<u64>,
    /// The same for keys of sleeping shards this core may borrow, with their owners.
    warm_previous_borrowed: Vec<(u16, u64)>,
    warm_spare_borrowed: Vec<(u16, u64)>,
    /// Connections with a `lru_crawler metadump` under way, each listed once (so at most one
    /// entry per connection); [`admin::metadump_pump`] moves them on and forgets the finished.
    pub(super) metadumps: Vec<ConnRef>,
    /// This core's `watch` connections.
    pub(super) watchers: Vec<u32>,
    /// UDP sockets (`-U`) and the datagrams being answered (`runtime::udp`).
    pub(super) udp: Udp,
    /// `-Z`: the TLS server config this core's last TLS connection got, with its generation
    /// (see `runtime::tls`).
    pub(super) tls_config: Option<(u64, Arc<rustls::ServerConfig>)>,
    /// `--log-dir`: this core's queue to the log thread and the replies held for it.
    pub(super) log: Option<super::durable::CoreLog>,
}

/// Chunks the crawler looks at in one slice: once a second, and every turn while an
/// `lru_crawler crawl` pass is under way.
const CRAWL_SLICE_ITEMS: usize = 1000;
/// Most keys in one group of [`Core::warm_group`] (and requests per warming group of an
/// envelope).
const WARM_GROUP_KEYS: usize = 32;
/// Most requests one group scans, local or not (the scan of a long pipeline of keys owned by
/// other shards stops here instead of reading the whole buffer every turn).
const WARM_GROUP_SCAN_MAX: usize = 4 * WARM_GROUP_KEYS;
/// Longest request line [`leading_key`] looks through for its end.
const WARM_LINE_BYTES_MAX: usize = 1024;

/// The key hash of a single-key request from another core (multi-key parts carry none).
fn remote_key_hash(op: &RemoteOp) -> Option<u64> {
    match op {
        RemoteOp::Text {
            key_hash,
            indices_end: 0,
            ..
        }
        | RemoteOp::GetKey { key_hash, .. }
        | RemoteOp::Binary { key_hash, .. } => Some(*key_hash),
        _ => None,
    }
}

/// Answers a retrieval whose keys are all this shard's: `single` is its one key with that
/// key's hash, or `None` for several keys (each hashed here). `END` follows if `end`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn exec_gets(
    shard: &mut Shard,
    verb: GetVerb,
    touch_to: Option<Instant32>,
    single: Option<(&[u8], u64)>,
    keys: Keys<'_>,
    now: Instant32,
    end: bool,
    out: &mut Vec<u8>,
) {
    exec_gets_to(
        shard,
        verb,
        touch_to,
        single,
        keys,
        now,
        end,
        out,
        &mut CopyValue,
    );
}

/// [`exec_gets`], with hits written by `values` (see [`Shard::exec_get_key_to`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn exec_gets_to(
    shard: &mut Shard,
    verb: GetVerb,
    touch_to: Option<Instant32>,
    single: Option<(&[u8], u64)>,
    keys: Keys<'_>,
    now: Instant32,
    end: bool,
    out: &mut Vec<u8>,
    values: &mut impl ValueOut,
) {
    match single {
        Some((k, h)) => shard.exec_get_key_to(verb, touch_to, k, h, now, out, values),
        None => {
            for k in keys.iter() {
                shard.exec_get_key_to(verb, touch_to, k, key_hash(k), now, out, values);
            }
        }
    }
    if end {
        out.extend_from_slice(compose::END);
    }
}

/// Which part of a retrieval [`Core::dispatch_get`] answers: the whole of it, or a run of a
/// long one's keys ([`GET_RUN_KEYS`]); `END` follows the whole and the last run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GetPart {
    Whole,
    Run,
    LastRun,
}

/// A retrieval with more keys than one run ([`GET_RUN_KEYS`]): where its keys start in `raw`
/// (its request line), and the state its first run is answered from.
fn long_get(req: &Request<'_>, raw: &[u8]) -> Option<(usize, GetRest)> {
    let Request::Get {
        verb,
        exptime,
        keys,
    } = *req
    else {
        return None;
    };
    split_get_run(keys.raw())?;
    // The keys are a slice of the line: where they start in it.
    let start = (keys.raw().as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let keys_len = keys.raw().len();
    let rest = GetRest {
        verb,
        exptime,
        keys_len,
        tail_len: raw.len().checked_sub(start + keys_len)?,
    };
    Some((start, rest))
}

/// Where a retrieval's keys are cut into runs: `None` if `raw` (keys separated by spaces)
/// holds at most [`GET_RUN_KEYS`] keys, else where the key after the first `GET_RUN_KEYS`
/// starts.
fn split_get_run(raw: &[u8]) -> Option<usize> {
    // More than GET_RUN_KEYS keys take at least this many bytes, and at least GET_RUN_KEYS
    // spaces: most gets stop here, short of a key-by-key walk. (The count, which the compiler
    // vectorizes, is only for short lines: the walk below stops after GET_RUN_KEYS + 1 keys,
    // a count of a long line's spaces would read all of it for every run.)
    if raw.len() < 2 * GET_RUN_KEYS + 1
        || (raw.len() <= 4096 && raw.iter().filter(|&&b| b == b' ').count() < GET_RUN_KEYS)
    {
        return None;
    }
    let mut keys = 0;
    let mut i = 0;
    loop {
        while raw.get(i) == Some(&b' ') {
            i += 1;
        }
        if i >= raw.len() {
            return None;
        }
        if keys == GET_RUN_KEYS {
            return Some(i);
        }
        while raw.get(i).is_some_and(|&b| b != b' ') {
            i += 1;
        }
        keys += 1;
    }
}

/// The key of the text request at the start of `input` (the first key of a multi-key get),
/// and where the request after it starts (past a storage command's data block). `None` for a
/// line that is incomplete, names no key, or is not one of the common keyed commands.
fn leading_key(input: &[u8]) -> Option<(&[u8], usize)> {
    // Long lines (multi-key gets, junk) are left to the parser rather than searched again here.
    let window = input.get(..WARM_LINE_BYTES_MAX).unwrap_or(input);
    let nl = find_byte(window, b'\n')?;
    let line = window.get(..nl)?;
    let mut rest = line.strip_suffix(b"\r").unwrap_or(line);
    let verb = next_token(&mut rest)?;
    let key = next_token(&mut rest)?;
    let next = match verb {
        b"get" | b"gets" | b"mg" | b"delete" | b"touch" | b"incr" | b"decr" | b"md" | b"ma" => {
            nl + 1
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            next_token(&mut rest)?;
            next_token(&mut rest)?;
            let bytes = decimal(next_token(&mut rest)?)?;
            (nl + 1).checked_add(bytes)?.checked_add(2)?
        }
        _ => return None,
    };
    Some((key, next))
}

/// The next space-separated token of `rest` (leading spaces skipped), advancing `rest` past it.
fn next_token<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let start = rest.iter().position(|&b| b != b' ')?;
    let tail = rest.get(start..)?;
    let len = tail.iter().position(|&b| b == b' ').unwrap_or(tail.len());
    let (token, after) = tail.split_at(len);
    *rest = after;
    Some(token)
}

/// A token of decimal digits only (at most 19, so it cannot overflow), as a number.
fn decimal(token: &[u8]) -> Option<usize> {
    if token.is_empty() || token.len() > 19 {
        return None;
    }
    token.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
    })
}

impl Core {
    pub fn new(shard: Shard, mesh: Endpoint, shared: Arc<Shared>) -> Core {
        let me = mesh.me.0;
        let shard_count = shared.config.shard_count;
        let limits = shared.config.limits;
        let reqs_per_event = shared.config.reqs_per_event as usize;
        let rbuf_max = limits
            .get_line_len_max
            .max(limits.item_size_max + limits.line_len_max + 2);
        Core {
            me,
            shard_count,
            shard: HeldShard::new(shard),
            conns: Vec::new(),
            free: Vec::new(),
            generation_next: 1,
            mesh,
            outbox: Outbox::new(me, shard_count),
            inbox: Vec::new(),
            replies_received: vec![0; usize::from(shard_count)],
            borrowed_requests: 0,
            now: shared.now(),
            shared,
            limits,
            dirty: Vec::new(),
            bytes_read: 0,
            bytes_written: 0,
            cmd_flush: 0,
            conn_yields: 0,
            pipeline_stacked: false,
            idle_kicks: 0,
            auth_cmds: 0,
            auth_errors: 0,
            rbuf_max,
            reqs_per_event,
            last_crawl: Instant32(0),
            crawl_slice_at: None,
            pool: BufPool::default(),
            large_rbufs: LargeBufs::default(),
            large_out: LargeBufs::default(),
            swept_at: 0,
            warm_previous: Vec::new(),
            warm_spare: Vec::new(),
            warm_previous_borrowed: Vec::new(),
            warm_spare_borrowed: Vec::new(),
            metadumps: Vec::new(),
            watchers: Vec::new(),
            udp: Udp::default(),
            tls_config: None,
            log: None,
        }
    }

    /// Hands this core its queue to the log thread (`--log-dir`).
    pub fn log_attach(&mut self, sender: crate::durability::writer::LogSender) {
        self.log = Some(super::durable::CoreLog::new(sender));
    }

    /// Takes this core's UDP sockets (one per `-U` address), to serve from now on.
    pub fn udp_attach(&mut self, sockets: Vec<std::net::UdpSocket>) {
        self.udp = Udp::new(sockets, self.limits);
    }

    /// This core's mesh endpoint (wakers).
    pub fn mesh(&self) -> &Endpoint {
        &self.mesh
    }

    /// Largest read buffer a connection may hold.
    pub fn rbuf_max(&self) -> usize {
        self.rbuf_max
    }

    /// Memory of this core's connection buffers for `stats`: (input buffers, their bytes,
    /// reply buffers, their bytes, bytes of input buffers no connection holds), counting only
    /// buffers that hold an allocation. Input buffers are the connections' and the core's
    /// reserve of large ones; reply buffers are the connections' output, their slots' and the
    /// pool's.
    pub fn buffer_stats(&self) -> [u64; 5] {
        let mut held = [0u64; 5];
        let mut count = |i: usize, capacity: usize| {
            if capacity > 0 {
                held[i] += 1;
                held[i + 1] += capacity as u64;
            }
        };
        for conn in self.conns.iter().flatten() {
            count(0, conn.rbuf.capacity());
            count(2, conn.out.capacity());
            for slot in &conn.slots {
                count(2, slot.buf.capacity());
            }
        }
        held[2] += self.large_out.count() as u64;
        held[3] += self.large_out.bytes() as u64;
        held[0] += self.large_rbufs.count() as u64;
        held[1] += self.large_rbufs.bytes() as u64;
        held[4] = self.large_rbufs.bytes() as u64;
        let (pooled, pooled_bytes) = self.pool.held();
        held[2] += pooled;
        held[3] += pooled_bytes;
        held
    }

    // ---- connections ----

    /// Registers an accepted connection on socket `fd` (which the backend keeps open until it
    /// drops the connection), with a TLS session when it came from a TLS listener; `None` if
    /// it must be refused (`-c` reached, or its TLS session could not start).
    pub fn open(&mut self, peer: String, tls: bool, fd: std::os::fd::RawFd) -> Option<u32> {
        let session = match tls {
            true => Some(self.tls_session()?),
            false => None,
        };
        let shared = &self.shared;
        let curr = shared.curr_connections.fetch_add(1, Ordering::Relaxed);
        if curr >= shared.config.conns_max as u64 {
            shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
            shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        let serial = shared.conn_serial_next.fetch_add(1, Ordering::Relaxed);
        let idx = self.insert_conn(Conn::new(0, peer));
        let cfd = stats::conn_id(self, serial);
        let auth = self.shared.auth.is_some();
        if let Some(conn) = self.conn_mut(idx) {
            conn.cfd = cfd;
            conn.fd = fd;
            conn.tls = session;
            if auth {
                conn.auth = Some(super::connection::AuthWait::Line);
            }
        }
        if self.shard.log.wants(crate::watch::watch_kinds::CONNEVENTS) {
            if let Some(conn) = self.conns[idx as usize].as_ref() {
                self.shard.log.conn_new(&conn.peer, cfd);
            }
        }
        Some(idx)
    }

    /// Registers a connection (a new generation, idle since now); returns its index.
    pub(super) fn insert_conn(&mut self, mut conn: Conn) -> u32 {
        conn.generation = self.generation_next;
        self.generation_next = self.generation_next.wrapping_add(1).max(1);
        // Idle since it connected (`-o idle_timeout`, `stats conns`).
        conn.last_cmd = self.now.0;
        match self.free.pop() {
            Some(i) => {
                self.conns[i as usize] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                (self.conns.len() - 1) as u32
            }
        }
    }

    /// Forgets a connection (the backend closes its socket; a UDP one has none).
    pub fn close(&mut self, idx: u32) {
        let Some(slot) = self.conns.get_mut(idx as usize) else {
            return;
        };
        if let Some(conn) = slot.take() {
            self.free.push(idx);
            if conn.udp.is_some() {
                self.udp_closed(conn);
            } else {
                self.shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
                if conn.watch.is_some() {
                    self.unregister_watcher(idx);
                } else if self.shard.log.wants(crate::watch::watch_kinds::CONNEVENTS) {
                    self.shard
                        .log
                        .conn_close(&conn.peer, conn.close_reason, conn.cfd);
                }
            }
        }
    }

    pub fn conn(&self, idx: u32) -> Option<&Conn> {
        self.conns.get(idx as usize).and_then(Option::as_ref)
    }

    pub fn conn_mut(&mut self, idx: u32) -> Option<&mut Conn> {
        self.conns.get_mut(idx as usize).and_then(Option::as_mut)
    }

    /// Every open connection's index.
    pub fn conn_indices(&self) -> Vec<u32> {
        (0..self.conns.len() as u32)
            .filter(|&i| self.conns[i as usize].is_some())
            .collect()
    }

    /// Whether the connection should be read from now (bounded buffers, backpressure).
    pub fn wants_read(&self, idx: u32) -> bool {
        self.may_read(idx) && !self.input_blocked()
    }

    /// Whether the connection would read but for a full queue to another shard (which pauses
    /// every connection: nothing signals it draining, so the backends come back every turn to
    /// a connection that may read and is not reading; the loop does not sleep meanwhile).
    pub fn may_read(&self, idx: u32) -> bool {
        self.conn(idx)
            .is_some_and(|c| !c.eof && c.may_parse() && c.rbuf.len() < self.rbuf_max)
    }

    /// Lists the connection for the backend's end-of-turn flush (not a UDP one: `runtime::udp`
    /// sends its replies itself).
    pub(super) fn mark_dirty(&mut self, idx: u32) {
        if let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
            if !c.dirty && c.udp.is_none() {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Marks the connection for the end-of-turn flush if it has output to send or is finished
    /// (for the backends, after I/O on it).
    pub fn mark_if_pending(&mut self, idx: u32) {
        let pending = self
            .conn(idx)
            .is_some_and(|c| !c.unsent().is_empty() || super::connection::should_close(c));
        if pending {
            self.mark_dirty(idx);
        }
    }

    /// Takes the list of connections with output; clears their dirty marks.
    pub fn take_dirty(&mut self, into: &mut Vec<u32>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty);
        for &i in into.iter() {
            if let Some(c) = self.conns.get_mut(i as usize).and_then(Option::as_mut) {
                c.dirty = false;
            }
        }
    }

    /// Appends received bytes without parsing them (the loop processes the connection later in
    /// the turn, after [`Core::warm_group`]).
    pub fn input_only(&mut self, idx: u32, data: &[u8]) {
        if let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
            if c.tls.is_some() {
                return self.input_tls(idx, data);
            }
            let len = c.rbuf.len() + data.len();
            if len > c.rbuf.capacity() && len > BUF_KEEP_BYTES {
                if let Some(mut large) = self.large_rbufs.take(len) {
                    large.extend_from_slice(&c.rbuf);
                    let small = std::mem::replace(&mut c.rbuf, large);
                    self.large_rbufs.give(small);
                }
            }
            c.rbuf.extend_from_slice(data);
        }
        self.bytes_read += data.len() as u64;
    }

    /// The bytes still to come of the large request at the front of the connection's input,
    /// when the backend is to receive them straight into the room reserved for them
    /// ([`LARGE_INPUT_MIN`]): a plain stream connection that may read, whose input buffer
    /// holds the start of a request of at least that length and has room for all of it.
    pub fn large_input_rest(&self, idx: u32) -> Option<usize> {
        let c = self.conn(idx)?;
        if c.want < LARGE_INPUT_MIN
            || c.tls.is_some()
            || c.udp.is_some()
            || c.watch.is_some()
            || c.swallow > 0
            || c.eof
            || !c.may_parse()
            || c.rbuf.capacity() < c.want
        {
            return None;
        }
        let rest = c.want.checked_sub(c.rbuf.len())?;
        (rest > 0).then_some(rest)
    }

    /// Lends the connection's input buffer to the backend, to receive the rest of a large
    /// request into (`Some(rest)` from [`Core::large_input_rest`]); the backend gives it back
    /// with [`Core::input_returned`]. Meanwhile the connection holds an empty buffer, and
    /// nothing else may receive for it.
    pub fn lend_input(&mut self, idx: u32) -> Option<(Vec<u8>, usize)> {
        let rest = self.large_input_rest(idx)?;
        let c = self.conn_mut(idx)?;
        Some((std::mem::take(&mut c.rbuf), rest))
    }

    /// Takes back a buffer lent by [`Core::lend_input`], with `got` bytes received into it.
    pub fn input_returned(&mut self, idx: u32, mut buf: Vec<u8>, got: usize) {
        self.bytes_read += got as u64;
        if let Some(c) = self.conn_mut(idx) {
            // Nothing receives for the connection while its buffer is lent, so its stand-in
            // is empty; keep any bytes in order all the same.
            buf.extend_from_slice(&c.rbuf);
            c.rbuf = buf;
        }
    }

    /// Counts bytes a backend received straight into a connection's input buffer.
    pub fn input_received(&mut self, got: usize) {
        self.bytes_read += got as u64;
    }

    /// Warms the cache for the requests waiting in a group of these connections' input,
    /// before they run; returns how many of `idxs` the group took (at least one when any).
    ///
    /// A lookup of a random key misses the cache twice, on its bucket and then on its item,
    /// and each miss costs more than parsing and answering the request. Run one request at a
    /// time, the misses happen one after another. Instead the loop calls this once per group,
    /// ahead of processing: each call asks for the buckets of the group's local keys and of
    /// its keys of sleeping shards, which this core borrows to run them (up to
    /// [`WARM_GROUP_KEYS`] in all), and for the items of the previous group's keys, whose
    /// buckets have arrived by then. Called two groups ahead of processing, both kinds of line
    /// have a group's worth of work to arrive in. Requests are scanned from the start of each
    /// connection's input while they are common keyed text commands ([`leading_key`]).
    pub fn warm_group(&mut self, idxs: &[u32]) -> usize {
        let mut hashes = std::mem::take(&mut self.warm_spare);
        hashes.clear();
        let mut borrowed = std::mem::take(&mut self.warm_spare_borrowed);
        borrowed.clear();
        // Keys of a sleeping shard are likely run here, on its borrowed store (`borrow`), and
        // miss the cache as local ones would; they are warmed too, under the same borrow.
        let may_borrow = self.shard_count > 1
            && self.shared.config.borrow_idle_shards
            && self.shared.watch.mask() == 0;
        let mut taken = 0;
        let mut scanned = 0;
        'conns: for &idx in idxs {
            taken += 1;
            let Some(c) = self.conns.get(idx as usize).and_then(Option::as_ref) else {
                continue;
            };
            let mut input = c.rbuf.as_slice();
            while let Some((key, next)) = leading_key(input) {
                // Requests for awake shards are scanned but not warmed: bound the scan too.
                scanned += 1;
                if scanned > WARM_GROUP_SCAN_MAX {
                    break 'conns;
                }
                let h = key_hash(key);
                let owner = shard_of(h, self.shard_count).0;
                if owner == self.me {
                    self.shard.prefetch_bucket(h);
                    hashes.push(h);
                } else if may_borrow && self.mesh.is_sleeping(owner) {
                    borrowed.push((owner, h));
                }
                if hashes.len() + borrowed.len() == WARM_GROUP_KEYS {
                    break 'conns;
                }
                let Some(rest) = input.get(next..) else {
                    break;
                };
                input = rest;
            }
        }
        for &h in &self.warm_previous {
            self.shard.prefetch_items(h);
        }
        self.warm_borrowed(&mut borrowed, Shard::prefetch_bucket);
        let previous = std::mem::take(&mut self.warm_previous_borrowed);
        self.warm_borrowed_items(previous);
        self.warm_spare = std::mem::replace(&mut self.warm_previous, hashes);
        self.warm_spare_borrowed = std::mem::replace(&mut self.warm_previous_borrowed, borrowed);
        taken
    }

    /// Warms keys of sleeping shards (sorted here by owner) with `warm`, taking each owner's
    /// parked shard once; an owner that woke meanwhile is skipped (its keys then go to it).
    fn warm_borrowed(&self, keys: &mut [(u16, u64)], warm: fn(&Shard, u64)) {
        if keys.is_empty() {
            return;
        }
        keys.sort_unstable_by_key(|&(owner, _)| owner);
        for run in keys.chunk_by(|a, b| a.0 == b.0) {
            if let Some(parking) = self.shared.parking.get(usize::from(run[0].0)) {
                parking.try_with(|shard| run.iter().for_each(|&(_, h)| warm(shard, h)));
            }
        }
    }

    /// The items of borrowed keys whose buckets were warmed a group ago; the list's buffer
    /// is kept for reuse.
    fn warm_borrowed_items(&mut self, mut keys: Vec<(u16, u64)>) {
        self.warm_borrowed(&mut keys, Shard::prefetch_items);
        keys.clear();
        self.warm_previous_borrowed = keys;
    }

    /// Processes these connections' buffered input in order, warming the cache ahead of it
    /// ([`Core::warm_group`]: buckets two groups ahead, items one), and calls `after` for each
    /// connection once it is processed; stops at the first error `after` returns. `ends` is
    /// scratch space for the groups' ends, passed in so a loop can keep its capacity.
    pub fn process_warmed<E>(
        &mut self,
        idxs: &[u32],
        ends: &mut VecDeque<usize>,
        mut after: impl FnMut(&mut Core, u32) -> Result<(), E>,
    ) -> Result<(), E> {
        ends.clear();
        let mut warmed = 0;
        while warmed < idxs.len() && ends.len() < 3 {
            warmed += self.warm_group(&idxs[warmed..]).max(1);
            ends.push_back(warmed);
        }
        if warmed == idxs.len() {
            self.warm_finish();
        }
        let mut group_end = ends.pop_front().unwrap_or(0);
        for (i, &idx) in idxs.iter().enumerate() {
            if i == group_end {
                group_end = ends.pop_front().unwrap_or(idxs.len());
                if warmed < idxs.len() {
                    warmed += self.warm_group(&idxs[warmed..]).max(1);
                    ends.push_back(warmed);
                } else {
                    self.warm_finish();
                }
            }
            self.process(idx);
            if let Err(e) = after(self, idx) {
                self.warm_previous.clear();
                self.warm_previous_borrowed.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends a turn's warming: the last group's items are warmed, and nothing carries over.
    pub fn warm_finish(&mut self) {
        for &h in &self.warm_previous {
            self.shard.prefetch_items(h);
        }
        self.warm_previous.clear();
        let previous = std::mem::take(&mut self.warm_previous_borrowed);
        self.warm_borrowed_items(previous);
    }

    /// Records that the peer closed its sending side.
    pub fn input_eof(&mut self, idx: u32) -> ConnAction {
        match self.conn_mut(idx) {
            Some(c) => c.eof = true,
            None => return ConnAction::Close,
        }
        self.mark_dirty(idx);
        ConnAction::Keep
    }

    /// Parses and dispatches as much of the connection's buffered input as allowed.
    pub fn process(&mut self, idx: u32) -> ConnAction {
        let mut unauthenticated = false;
        if let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
            if c.watch.is_some() {
                // A watcher's input means nothing (memcached reads and ignores it).
                c.rbuf.clear();
                return ConnAction::Keep;
            }
            if self.shard.log.mask != 0 {
                self.shard.log.cfd = c.cfd;
            }
            unauthenticated = c.auth.is_some();
        }
        // `-Y`: nothing takes the usual path before the connection has authenticated.
        if unauthenticated && !self.process_unauthenticated(idx) {
            return ConnAction::Keep;
        }
        if self.binary_detect(idx) {
            return self.process_binary(idx);
        }
        let Some(conn) = self.conn_mut(idx) else {
            return ConnAction::Close;
        };
        let rbuf = std::mem::take(&mut conn.rbuf);
        let udp = conn.udp.is_some();
        let mut pos = 0;
        let limits = self.limits_for(udp);
        // Whether input was left unparsed for a reason other than "incomplete": a budget or
        // backpressure. Such input must be come back to; an incomplete request at EOF is not.
        let mut held_back = false;
        // The length of the incomplete request left at the end, when known and large.
        let mut want = 0;
        let mut requests = 0;
        // memcached's reply stack: requests of this pass whose replies are not flushed yet.
        let mut stacked = false;
        while pos < rbuf.len() {
            if pos >= PARSE_BUDGET || requests >= self.reqs_per_event {
                held_back = true;
                self.conn_yields += 1;
                break;
            }
            let outbox_blocked = self.input_blocked();
            let Some(conn) = self.conn_mut(idx) else {
                break;
            };
            if conn.swallow > 0 {
                let n = conn.swallow.min(rbuf.len() - pos);
                conn.swallow -= n;
                pos += n;
                continue;
            }
            if !conn.may_parse() || outbox_blocked {
                held_back = !conn.closing;
                break;
            }
            if let Some(rest) = conn.get_rest {
                // The next run of a long retrieval's keys (validated with its whole line).
                pos += self.dispatch_get_run(idx, rest, &rbuf[pos..]);
                continue;
            }
            match parse(&rbuf[pos..], &limits) {
                Ok((req, n)) => {
                    let raw = &rbuf[pos..pos + n];
                    if udp {
                        self.udp_begin_text(idx, Some(&req), raw);
                    }
                    self.pipeline_stacked = stacked;
                    if matches!(req, Request::Watch { .. }) && self.watch_waits(idx, stacked, udp) {
                        held_back = true;
                        break;
                    }
                    stacked = !flushes_replies(&req);
                    if let Some((start, first)) = long_get(&req, raw).filter(|_| !udp) {
                        // More keys than one run: the first run now, the rest as the connection
                        // may parse again (`Conn::get_rest`).
                        pos += start + self.dispatch_get_run(idx, first, &raw[start..]);
                        requests += 1;
                        continue;
                    }
                    self.dispatch(idx, &req, raw);
                    pos += n;
                    requests += 1;
                    if udp {
                        self.udp_dispatched(idx);
                    }
                    if matches!(req, Request::Watch { .. })
                        && self.conn(idx).is_some_and(|c| c.watch.is_some())
                    {
                        // What follows `watch` is ignored, as it is on the stream.
                        pos = rbuf.len();
                        break;
                    }
                }
                Err(ParseError::Incomplete) => {
                    // Maybe a large data block on its way: make room for all of it at once.
                    if rbuf.len() - pos >= PENDING_HINT_MIN {
                        want = pending_len(&rbuf[pos..]).unwrap_or(0);
                    }
                    break;
                }
                Err(ParseError::Invalid(rej)) => {
                    requests += 1;
                    stacked = true;
                    if udp {
                        self.udp_begin_text(idx, None, &[]);
                    }
                    let conn = self.conns[idx as usize]
                        .as_mut()
                        .expect("connection checked above");
                    push_reply(conn, &mut self.pool, rej.reply);
                    let rest = rbuf.len() - pos;
                    // Bytes of the rejected request not received yet are swallowed on arrival.
                    conn.swallow = rej.swallow + rej.consumed.saturating_sub(rest);
                    if rej.close {
                        conn.closing = true;
                        conn.close_reason = crate::watch::CloseReason::Error;
                        pos = rbuf.len();
                    } else {
                        pos += rej.consumed.clamp(1, rest);
                    }
                    self.mark_dirty(idx);
                    if udp {
                        self.udp_dispatched(idx);
                    }
                }
            }
        }
        self.finish_input(idx, rbuf, pos, want, |_, _| held_back)
    }

    /// Answers the next run of a long retrieval: `input` starts with the rest of its keys.
    /// Returns the bytes consumed: up to the key after the run, or the whole line after the
    /// last run.
    fn dispatch_get_run(&mut self, idx: u32, rest: GetRest, input: &[u8]) -> usize {
        let raw = input.get(..rest.keys_len).unwrap_or(input);
        let cut = split_get_run(raw);
        let keys = Keys::new(cut.map_or(raw, |c| &raw[..c]));
        let part = if cut.is_some() {
            GetPart::Run
        } else {
            GetPart::LastRun
        };
        self.dispatch_get(idx, rest.verb, rest.exptime, keys, part);
        let Some(conn) = self.conn_mut(idx) else {
            return input.len();
        };
        match cut {
            Some(c) => {
                conn.get_rest = Some(GetRest {
                    keys_len: rest.keys_len - c,
                    ..rest
                });
                c
            }
            None => {
                conn.get_rest = None;
                rest.keys_len + rest.tail_len
            }
        }
    }

    /// A `watch` that memcached would start (its reply stack flushed) waits for the replies
    /// another shard still owes this connection: its log lines must come after them. True if
    /// it must wait (the connection parses nothing more until they are in).
    #[cold]
    fn watch_waits(&mut self, idx: u32, stacked: bool, udp: bool) -> bool {
        let Some(conn) = self.conn_mut(idx) else {
            return false;
        };
        conn.drain_first = !stacked && !udp && !conn.slots.is_empty();
        conn.drain_first
    }

    /// Ends a parse pass (text or binary): drops the `pos` bytes parsed, gives the rest back to
    /// the connection, and records whether it was held back (must be come back to, even after
    /// EOF) as `held_back` decides from the remaining bytes. `want` is the length of the
    /// incomplete request the rest begins, when known (else 0): a large one gets room for all
    /// of it now, rather than a buffer that doubles (and copies) as its data arrives.
    pub(super) fn finish_input(
        &mut self,
        idx: u32,
        mut rbuf: Vec<u8>,
        pos: usize,
        want: usize,
        held_back: impl FnOnce(&[u8], &Conn) -> bool,
    ) -> ConnAction {
        rbuf.drain(..pos.min(rbuf.len()));
        let want = want.min(self.rbuf_max);
        if want > BUF_KEEP_BYTES && want > rbuf.capacity() {
            if let Some(mut large) = self.large_rbufs.take(want) {
                large.extend_from_slice(&rbuf);
                let small = std::mem::replace(&mut rbuf, large);
                self.large_rbufs.give(small);
            } else {
                rbuf.reserve_exact(want - rbuf.len());
            }
        }
        let now = self.now.0;
        let Some(conn) = self.conn_mut(idx) else {
            return ConnAction::Close;
        };
        conn.last_cmd = now;
        conn.want = want;
        conn.held_back = held_back(&rbuf, conn);
        // A buffer a large value grew is not kept once that value is parsed: the core keeps
        // it for the next large value if it has room (see `LargeBufs`).
        let mut released = None;
        if rbuf.capacity() > BUF_KEEP_BYTES && rbuf.is_empty() {
            released = Some(rbuf);
        } else {
            conn.rbuf = rbuf;
            if conn.rbuf.capacity() > BUF_KEEP_BYTES && conn.rbuf.len() <= BUF_KEEP_BYTES / 2 {
                conn.rbuf.shrink_to(BUF_KEEP_BYTES);
            }
        }
        if conn.closing {
            self.mark_dirty(idx);
        }
        if let Some(rbuf) = released {
            self.large_rbufs.give(rbuf);
        }
        ConnAction::Keep
    }

    /// The cross-core reference to a live connection.
    pub(super) fn conn_ref(&self, idx: u32) -> ConnRef {
        let generation = self.conn(idx).map_or(0, |c| c.generation);
        ConnRef {
            index: idx,
            generation,
        }
    }

    // ---- dispatch ----

    /// Runs one parsed text request. Its only caller is [`Core::process`]'s loop, and
    /// `dispatch_get` has only this one: both are inlined there, so a request is matched where
    /// it was parsed instead of being passed through two calls (callgrind, pipelined GETs on
    /// epoll: 1805 -> 1770 instructions per request; the compiler stopped inlining them on
    /// its own once the UDP and `watch` hooks grew these functions).
    #[inline(always)]
    fn dispatch(&mut self, idx: u32, req: &Request<'_>, raw: &[u8]) {
        match *req {
            Request::Get {
                verb,
                exptime,
                keys,
            } => self.dispatch_get(idx, verb, exptime, keys, GetPart::Whole),
            Request::Store { .. }
            | Request::TooLarge { .. }
            | Request::Delete { .. }
            | Request::Arith { .. }
            | Request::Touch { .. } => self.dispatch_keyed(idx, req, raw),
            Request::Meta(meta) if meta.verb == MetaVerb::Noop => {
                let conn = self.conns[idx as usize]
                    .as_mut()
                    .expect("dispatch on a live connection");
                push_reply(conn, &mut self.pool, crate::protocol::meta::MN);
                self.mark_dirty(idx);
            }
            Request::Meta(_) => self.dispatch_keyed(idx, req, raw),
            Request::FlushAll { noreply, .. } if !self.shared.config.flush_enabled => {
                // memcached counts the refused command.
                self.cmd_flush += 1;
                if !noreply {
                    let conn = self.conns[idx as usize]
                        .as_mut()
                        .expect("dispatch on a live connection");
                    push_reply(conn, &mut self.pool, compose::CLIENT_ERROR_FLUSH_DISABLED);
                    self.mark_dirty(idx);
                }
            }
            Request::FlushAll { delay, noreply } => {
                let at = if delay > 0 {
                    self.shard.expires_at(delay, self.now).unwrap_or(self.now)
                } else {
                    self.now
                };
                self.cmd_flush += 1;
                self.broadcast(idx, SlotKind::Flush { noreply }, RemoteOp::Flush { at });
            }
            Request::Stats { group } => self.dispatch_stats(idx, group),
            Request::Version => {
                let mut buf = Vec::with_capacity(32);
                compose::version(&mut buf, compose::MEMCACHED_VERSION);
                let conn = self.conns[idx as usize]
                    .as_mut()
                    .expect("dispatch on a live connection");
                push_reply(conn, &mut self.pool, &buf);
                self.mark_dirty(idx);
            }
            Request::LogCompact => {
                let reply: &[u8] = match &self.shared.log {
                    Some(log) => {
                        log.request_compaction();
                        b"OK\r\n"
                    }
                    None => b"SERVER_ERROR no log (start with --log-dir)\r\n",
                };
                let conn = self.conns[idx as usize]
                    .as_mut()
                    .expect("dispatch on a live connection");
                push_reply(conn, &mut self.pool, reply);
                self.mark_dirty(idx);
            }
            Request::RefreshCerts => {
                let reply = self.refresh_certs();
                let conn = self.conns[idx as usize]
                    .as_mut()
                    .expect("dispatch on a live connection");
                push_reply(conn, &mut self.pool, &reply);
                self.mark_dirty(idx);
            }
            Request::Verbosity { level, noreply } => {
                self.shared.verbosity.store(level, Ordering::Relaxed);
                if !noreply {
                    let conn = self.conns[idx as usize]
                        .as_mut()
                        .expect("dispatch on a live connection");
                    push_reply(conn, &mut self.pool, compose::OK);
                    self.mark_dirty(idx);
                }
            }
            Request::Watch { kinds } => self.dispatch_watch(idx, kinds),
            Request::Quit => {
                let conn = self.conn_mut(idx).expect("dispatch on a live connection");
                conn.closing = true;
                self.mark_dirty(idx);
            }
            Request::ConfigGet { .. }
            | Request::LruCrawlerMetadump { .. }
            | Request::LruCrawlerCrawl { .. }
            | Request::LruCrawlerSwitch { .. }
            | Request::LruCrawlerSleep { .. }
            | Request::LruCrawlerTocrawl { .. }
            | Request::LruTune { .. }
            | Request::CacheMemlimit { .. }
            | Request::SlabsAutomove { .. }
            | Request::SlabsReassign { .. }
            | Request::Shutdown { .. } => admin::dispatch(self, idx, req),
            Request::DebugStall { millis, noreply } => {
                let except = self.me;
                self.broadcast(
                    idx,
                    SlotKind::Ok { noreply },
                    RemoteOp::DebugStall { millis, except },
                );
            }
            Request::DebugTimeAdvance { secs } => {
                self.advance_clock(secs);
                let conn = self.conns[idx as usize]
                    .as_mut()
                    .expect("dispatch on a live connection");
                push_reply(conn, &mut self.pool, compose::OK);
                self.mark_dirty(idx);
            }
        }
    }

    #[cfg(feature = "test-hooks")]
    fn advance_clock(&mut self, secs: u32) {
        self.shared
            .clock_offset_secs
            .fetch_add(secs, Ordering::SeqCst);
        self.now = self.shared.now();
    }

    #[cfg(not(feature = "test-hooks"))]
    fn advance_clock(&mut self, _secs: u32) {}

    fn dispatch_keyed(&mut self, idx: u32, req: &Request<'_>, raw: &[u8]) {
        // A meta key is hashed decoded (base64 keys route by their bytes).
        let hash = match req {
            Request::Meta(meta) => key_hash(meta.key().as_bytes()),
            _ => key_hash(req.key().unwrap_or_default()),
        };
        let swallow = match *req {
            Request::TooLarge { swallow, .. } => Some(swallow),
            Request::Meta(meta) => meta.too_large_swallow,
            _ => None,
        };
        if let Some(swallow) = swallow {
            if let Some(c) = self.conn_mut(idx) {
                c.swallow = swallow;
            }
        }
        let owner = shard_of(hash, self.shard_count).0;
        let now = self.now;
        if owner == self.me && self.log_always() {
            self.exec_held(idx, OnFailure::Text, |shard, out| {
                shard.exec_one(req, hash, now, out)
            });
            return;
        }
        if owner == self.me {
            let conn = self.conns[idx as usize]
                .as_mut()
                .expect("dispatch on a live connection");
            let shard = &mut self.shard;
            compose_reply(conn, &mut self.pool, |out| {
                shard.exec_one(req, hash, now, out)
            });
            self.mark_dirty(idx);
            return;
        }
        if self.borrow(idx, owner, true, |shard, now, out| {
            shard.exec_one(req, hash, now, out)
        }) {
            return;
        }
        // A TooLarge request carries only its line; its block is swallowed here.
        self.forward_text(idx, owner, raw, hash);
    }

    /// Forwards a whole single-key text command to `owner`, which answers it in full.
    fn forward_text(&mut self, idx: u32, owner: u16, raw: &[u8], key_hash: u64) {
        self.forward(idx, owner, raw, |start, end| RemoteOp::Text {
            start,
            end,
            key_hash,
            indices_start: 0,
            indices_end: 0,
        });
    }

    /// Sends a single-key request's wire bytes to the shard that owns its key; its reply
    /// takes a slot in the connection's order. `op` describes the bytes' range in the envelope.
    pub(super) fn forward(
        &mut self,
        idx: u32,
        owner: u16,
        raw: &[u8],
        op: impl FnOnce(u32, u32) -> RemoteOp,
    ) {
        // No buffer yet: the reply usually arrives when this slot is at the front and goes
        // straight to `out` (see `deliver_part`).
        let seq = self.new_slot_with(idx, 1, SlotKind::Plain, Vec::new());
        self.owe_keys(idx, 1);
        let conn = self.conn_ref(idx);
        let cfd = self.conn(idx).map_or(0, |c| c.cfd);
        let env = self.outbox.to(owner);
        let start = env.buf.len() as u32;
        env.buf.extend_from_slice(raw);
        let end = env.buf.len() as u32;
        env.requests.push(RemoteRequest {
            conn,
            seq,
            cfd,
            op: op(start, end),
        });
    }

    /// Records that the newest slot of the connection waits for `keys` keys' answers from
    /// other shards (see [`Conn::remote_keys`]).
    fn owe_keys(&mut self, idx: u32, keys: u32) {
        if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
            if let Some(slot) = conn.slots.back_mut() {
                slot.remote_keys += keys;
                conn.remote_keys += keys;
            }
        }
    }

    /// A retrieval (`get`, `gets`, `gat`, `gats`); inlined into `dispatch` (see there).
    #[inline(always)]
    fn dispatch_get(
        &mut self,
        idx: u32,
        verb: GetVerb,
        exptime: i64,
        keys: Keys<'_>,
        part: GetPart,
    ) {
        // Only a whole `get` of the one key is the discovery request, not a long get's last run.
        if verb == GetVerb::Get && part == GetPart::Whole && admin::try_legacy_get(self, idx, keys)
        {
            return;
        }
        let end = part != GetPart::Run;
        let now = self.now;
        let touch_to = if verb.touches() {
            self.shard.expires_at(exptime, now)
        } else {
            None
        };
        let me = self.me;
        let n = self.shard_count;
        // A one-key retrieval (the common case) hashes its key once, here.
        let mut iter = keys.iter();
        let first = iter.next();
        let single = match iter.next() {
            None => first.map(|k| (k, key_hash(k))),
            Some(_) => None,
        };
        let all_local = match single {
            Some((_, h)) => n == 1 || shard_of(h, n).0 == me,
            None => n == 1 || keys.iter().all(|k| shard_of(key_hash(k), n).0 == me),
        };
        if all_local && verb.touches() && self.log_always() {
            self.exec_held(idx, OnFailure::Keep, |shard, out| {
                exec_gets(shard, verb, touch_to, single, keys, now, end, out)
            });
            return;
        }
        if all_local {
            let conn = self.conns[idx as usize]
                .as_mut()
                .expect("dispatch on a live connection");
            // Not through `compose_reply`: its closure around `exec_gets` is not inlined,
            // which costs the hottest path about 1% (callgrind, get90-p1).
            if conn.slots.is_empty() {
                // Straight into `out`: large hits may go out from their items now if nothing
                // is ahead of them, or be copied into a buffer from the reserve.
                let mut values = LargeValues::new(conn.direct_fd(), &mut self.large_out);
                let (shard, out) = (&mut self.shard, &mut conn.out);
                exec_gets_to(
                    shard,
                    verb,
                    touch_to,
                    single,
                    keys,
                    now,
                    end,
                    out,
                    &mut values,
                );
                self.bytes_written += values.sent;
            } else if let Some(out) = conn.ready_buf() {
                exec_gets(&mut self.shard, verb, touch_to, single, keys, now, end, out);
            } else {
                let mut buf = self.pool.take();
                let shard = &mut self.shard;
                exec_gets(shard, verb, touch_to, single, keys, now, end, &mut buf);
                conn.push_ready(buf, &mut self.pool);
            }
            self.mark_dirty(idx);
            return;
        }
        if let Some((k, key_hash)) = single.filter(|_| end) {
            let owner = shard_of(key_hash, n).0;
            let borrowed = self.borrow(idx, owner, verb.touches(), |shard, now, out| {
                shard.exec_get_key(verb, touch_to, k, key_hash, now, out);
                out.extend_from_slice(compose::END);
            });
            if borrowed {
                return;
            }
            // One remote key: the owner runs the whole command, END included, and its reply
            // is the reply (no per-key segments to reassemble).
            self.forward(idx, owner, k, |start, end| RemoteOp::GetKey {
                start,
                end,
                key_hash,
                verb,
                touch_to,
            });
            return;
        }
        let key_count = keys.iter().count();
        // Split: local keys now, one sub-request per remote owner.
        let mut owners: Vec<u16> = Vec::with_capacity(key_count);
        let mut buf = self.pool.take();
        let mut segments = vec![(0u32, 0u32); key_count];
        let log_before = self.shard.log_seq();
        for (i, k) in keys.iter().enumerate() {
            let h = key_hash(k);
            let owner = shard_of(h, n).0;
            owners.push(owner);
            if owner == me {
                let start = buf.len();
                self.shard.exec_get_key(verb, touch_to, k, h, now, &mut buf);
                segments[i] = (start as u32, (buf.len() - start) as u32);
            }
        }
        let mut remote: Vec<u16> = owners.iter().copied().filter(|&o| o != me).collect();
        remote.sort_unstable();
        remote.dedup();
        // Under `always`, a touch made here is one more part to wait for (its log record).
        let held = self.log_always() && self.shard.log_seq() != log_before;
        let parts = remote.len() as u32 + u32::from(held);
        let seq = self.new_slot_with(idx, parts, SlotKind::Get { segments, end }, buf);
        self.owe_keys(idx, owners.iter().filter(|&&o| o != me).count() as u32);
        if held {
            let generation = self.conn(idx).map_or(0, |c| c.generation);
            self.hold(LogWait {
                record: self.shard.log_seq(),
                target: Target::Local {
                    idx,
                    generation,
                    seq,
                },
                data: Vec::new(),
                segments: Vec::new(),
                on_failure: OnFailure::Keep,
            });
        }
        let conn_ref = self.conn_ref(idx);
        let cfd = self.conn(idx).map_or(0, |c| c.cfd);
        let verb_word: &[u8] = match verb {
            GetVerb::Get => b"get",
            GetVerb::Gets => b"gets",
            GetVerb::Gat => b"gat",
            GetVerb::Gats => b"gats",
        };
        for owner in remote {
            let env = self.outbox.to(owner);
            let start = env.buf.len() as u32;
            env.buf.extend_from_slice(verb_word);
            if verb.touches() {
                env.buf.push(b' ');
                env.buf.extend_from_slice(exptime.to_string().as_bytes());
            }
            let indices_start = env.indices.len() as u32;
            for (i, k) in keys.iter().enumerate() {
                if owners[i] == owner {
                    env.buf.push(b' ');
                    env.buf.extend_from_slice(k);
                    env.indices.push(i as u32);
                }
            }
            let indices_end = env.indices.len() as u32;
            env.buf.extend_from_slice(b"\r\n");
            env.requests.push(RemoteRequest {
                conn: conn_ref,
                seq,
                cfd,
                op: RemoteOp::Text {
                    start,
                    end: env.buf.len() as u32,
                    key_hash: 0,
                    indices_start,
                    indices_end,
                },
            });
        }
    }

    /// Runs a one-key request for `owner`'s key on its shard if `owner` sleeps with it parked
    /// (see `park`), replying in order on the connection; `false` if the request must go to
    /// `owner` instead. `writes`: the request may change the shard (never borrowed with a
    /// durability log, whose records the owner must send).
    pub(super) fn borrow(
        &mut self,
        idx: u32,
        owner: u16,
        writes: bool,
        run: impl FnOnce(&mut Shard, Instant32, &mut Vec<u8>),
    ) -> bool {
        // A `watch` is fed by each shard's owner, which logs what its shard does: ask it. And
        // whatever this core asked of `owner` must have been done first: a connection's
        // earlier set of the key, say, may still wait in `owner`'s queue.
        if !self.shared.config.borrow_idle_shards
            || (writes && self.shared.log.is_some())
            || self.shared.watch.mask() != 0
            || !self.mesh.is_sleeping(owner)
            || self
                .outbox
                .unanswered(owner, self.replies_received[usize::from(owner)])
        {
            return false;
        }
        let Some(parking) = self.shared.parking.get(usize::from(owner)) else {
            return false;
        };
        let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return false;
        };
        let now = self.now;
        let pool = &mut self.pool;
        let done = parking.try_with(|shard| {
            // Lines its owner has yet to hand to the watchers (or a watcher just gone).
            if shard.log.mask != 0 || shard.log.has_staged() {
                return false;
            }
            compose_reply(conn, pool, |out| run(shard, now, out));
            true
        });
        if done != Some(true) {
            return false;
        }
        self.borrowed_requests += 1;
        self.mark_dirty(idx);
        true
    }

    /// Leaves this core's shard for other cores to read from while this core sleeps.
    pub fn park(&mut self) {
        if self.shard_count > 1 && self.shared.config.borrow_idle_shards {
            self.shard.park(&self.shared.parking[usize::from(self.me)]);
        }
    }

    /// Takes this core's shard back after sleeping (waiting for a read under way).
    pub fn unpark(&mut self) {
        if !self.shard.is_held() {
            self.shard
                .unpark(&self.shared.parking[usize::from(self.me)]);
        }
    }

    /// Opens a waiting slot; returns its seq.
    pub(super) fn new_slot(&mut self, idx: u32, parts: u32, kind: SlotKind) -> u64 {
        let buf = self.pool.take();
        self.new_slot_with(idx, parts, kind, buf)
    }

    /// Opens a waiting slot whose reply starts as `buf`; returns its seq.
    pub(super) fn new_slot_with(
        &mut self,
        idx: u32,
        parts: u32,
        kind: SlotKind,
        buf: Vec<u8>,
    ) -> u64 {
        let conn = self.conns[idx as usize]
            .as_mut()
            .expect("slot on a live connection");
        conn.count_last_slot();
        conn.slot_bytes += buf.len();
        let seq = conn.next_seq;
        conn.next_seq += 1;
        conn.slots.push_back(Slot {
            seq,
            parts_left: parts,
            held: buf.len(),
            remote_keys: 0,
            buf,
            kind,
        });
        seq
    }

    /// Sends `op` to every other shard, runs it here, and replies when all have answered.
    pub(super) fn broadcast(&mut self, idx: u32, kind: SlotKind, op: RemoteOp) {
        self.broadcast_with(idx, Vec::new(), kind, op);
    }

    /// Like [`Core::broadcast`], with the reply starting as `head` (the shards' parts follow).
    pub(super) fn broadcast_with(&mut self, idx: u32, head: Vec<u8>, kind: SlotKind, op: RemoteOp) {
        let others = u32::from(self.shard_count) - 1;
        let seq = self.new_slot(idx, others + 1, kind);
        if !head.is_empty() {
            if let Some(slot) = self.conn_mut(idx).and_then(|c| c.slots.back_mut()) {
                slot.buf = head;
            }
        }
        let conn_ref = self.conn_ref(idx);
        for to in 0..self.shard_count {
            if to != self.me {
                self.outbox.to(to).requests.push(RemoteRequest {
                    conn: conn_ref,
                    seq,
                    cfd: 0,
                    op: op.clone(),
                });
            }
        }
        let mut part = Vec::new();
        let log_before = self.shard.log_seq();
        self.exec_broadcast_op(&op, &mut part);
        if self.log_always() && self.shard.log_seq() != log_before {
            // A flush: its OK waits for this shard's flush record too.
            self.hold(LogWait {
                record: self.shard.log_seq(),
                target: Target::Local {
                    idx,
                    generation: conn_ref.generation,
                    seq,
                },
                data: part,
                segments: Vec::new(),
                on_failure: OnFailure::Keep,
            });
            return;
        }
        self.deliver_part(idx, conn_ref.generation, seq, &part, &[]);
    }

    fn dispatch_stats(&mut self, idx: u32, group: StatsGroup<'_>) {
        let kind = match group {
            StatsGroup::General => StatsKind::General,
            StatsGroup::Items => StatsKind::Items,
            StatsGroup::Slabs => StatsKind::Slabs,
            StatsGroup::Sizes => StatsKind::Sizes,
            StatsGroup::SizesSwitch(on) => StatsKind::SizesSwitch(on),
            StatsGroup::Conns => StatsKind::Conns,
            StatsGroup::Reset => {
                self.broadcast(idx, SlotKind::Reset, RemoteOp::ResetStats);
                return;
            }
            StatsGroup::Detail(mode) => {
                admin::dispatch_detail(self, idx, mode);
                return;
            }
            StatsGroup::CacheDump(args) => {
                admin::dispatch_cachedump(self, idx, args);
                return;
            }
            StatsGroup::Settings | StatsGroup::Other(_) => {
                let mut buf = Vec::new();
                stats::local_group(self, group, &mut buf);
                let conn = self.conns[idx as usize]
                    .as_mut()
                    .expect("dispatch on a live connection");
                push_reply(conn, &mut self.pool, &buf);
                self.mark_dirty(idx);
                return;
            }
        };
        self.broadcast(idx, SlotKind::Stats(kind), RemoteOp::Stats(kind));
    }

    /// This shard's part of a broadcast operation.
    pub(super) fn exec_broadcast_op(&mut self, op: &RemoteOp, out: &mut Vec<u8>) {
        match *op {
            RemoteOp::Stats(StatsKind::SizesSwitch(on)) => {
                // Without cas there is no sequence to count from: memcached refuses.
                if !on || self.shared.config.cas_enabled {
                    self.shard.store_mut().set_size_tracking(on);
                }
            }
            RemoteOp::Stats(kind) => stats::shard_part(self, kind, out),
            RemoteOp::Flush { at } => {
                let now = self.now;
                self.shard.store_mut().flush_all(at, now);
                self.shard.store_mut().set_oldest_live(at);
                self.shard.record_flush(at, now, self.shard_count);
            }
            RemoteOp::ResetStats => {
                self.shard.store_mut().reset_stats();
                self.shard.reset_counters();
                self.shard.prefix_stats.clear();
                self.bytes_read = 0;
                self.bytes_written = 0;
                self.cmd_flush = 0;
                self.conn_yields = 0;
                self.idle_kicks = 0;
                self.auth_cmds = 0;
                self.auth_errors = 0;
            }
            RemoteOp::Detail(_)
            | RemoteOp::MemLimit { .. }
            | RemoteOp::CrawlPass { .. }
            | RemoteOp::Automove { .. }
            | RemoteOp::Reassign { .. } => admin::exec_shard_op(self, op, out),
            RemoteOp::DebugStall { millis, except } => {
                if self.me != except {
                    std::thread::sleep(Duration::from_millis(u64::from(millis)));
                }
            }
            RemoteOp::MetadumpStep { .. } => {
                debug_assert!(false, "metadump steps are not broadcast")
            }
            RemoteOp::Text { .. } | RemoteOp::GetKey { .. } => {
                debug_assert!(false, "text ops are not broadcast")
            }
            RemoteOp::Binary { .. } => debug_assert!(false, "binary ops are not broadcast"),
        }
    }

    /// A shard's part of a waiting reply arrived (from the mesh or from this core).
    pub(super) fn deliver_part(
        &mut self,
        idx: u32,
        generation: u32,
        seq: u64,
        data: &[u8],
        segments: &[(u32, u32)],
    ) {
        let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return; // connection gone: drop the reply
        };
        if conn.generation != generation {
            return;
        }
        let Some(front) = conn.slots.front() else {
            return;
        };
        let Some(pos) = seq.checked_sub(front.seq) else {
            return;
        };
        let Some(slot) = conn.slots.get_mut(pos as usize) else {
            return;
        };
        if matches!(slot.kind, SlotKind::Metadump(_)) {
            admin::metadump_answered(self, idx, pos, data, segments);
            return;
        }
        if pos == 0
            && slot.parts_left == 1
            && slot.buf.is_empty()
            && matches!(slot.kind, SlotKind::Plain)
        {
            // The reply the connection waits for next, complete in one part (a forwarded
            // single-key command): straight into `out`, not through the slot's buffer.
            if let Some(slot) = conn.slots.pop_front() {
                debug_assert!(conn.remote_keys >= slot.remote_keys);
                conn.remote_keys = conn.remote_keys.saturating_sub(slot.remote_keys);
                self.pool.give(slot.buf);
            }
            conn.out.extend_from_slice(data);
            conn.release_ready(&mut self.pool);
            if conn.udp.is_some() {
                self.udp_slot_done(idx);
            } else {
                self.mark_dirty(idx);
            }
            return;
        }
        if slot.buf.capacity() == 0 {
            slot.buf = self.pool.take();
        }
        let base = slot.buf.len() as u32;
        slot.buf.extend_from_slice(data);
        slot.held += data.len();
        if let SlotKind::Get { segments: segs, .. } = &mut slot.kind {
            let mut off = base;
            for &(key_index, len) in segments {
                if let Some(s) = segs.get_mut(key_index as usize) {
                    *s = (off, len);
                }
                off += len;
            }
        }
        slot.parts_left = slot.parts_left.saturating_sub(1);
        let complete = slot.parts_left == 0;
        conn.slot_bytes += data.len();
        if complete {
            if let SlotKind::Stats(kind) = slot.kind {
                let parts = std::mem::take(&mut slot.buf);
                let mut reply = Vec::with_capacity(parts.len());
                stats::finish(&self.shared, kind, self.now, &parts, &mut reply);
                let slot = conn.slots.get_mut(pos as usize).expect("slot found above");
                slot.buf = reply;
                slot.kind = SlotKind::Plain;
            }
            if let Some(slot) = conn.slots.get_mut(pos as usize) {
                super::binary::finish_stats_slot(&self.shared, self.now, slot);
            }
            conn.release_ready(&mut self.pool);
            if conn.udp.is_some() {
                self.udp_slot_done(idx);
            } else {
                self.mark_dirty(idx);
            }
        }
    }

    // ---- loop turn ----

    /// Start of a loop turn: sample the clock.
    pub fn turn_begin(&mut self) {
        self.now = self.shared.now();
        self.watch_refresh();
        if self.now.0 != self.swept_at {
            self.swept_at = self.now.0;
            self.sweep_idle_buffers();
        }
    }

    /// Keeps an emptied large reply buffer for the next large reply, if the reserve has room.
    pub fn give_large_out(&mut self, buf: Vec<u8>) {
        self.large_out.give(buf);
    }

    /// Once a second: connections without a command for [`IDLE_SWEEP_SECS`] give up empty
    /// input and reply buffers larger than [`BUF_KEEP_BYTES`] (a reply buffer that grew while
    /// replies waited behind another shard's, say). They go to the core's reserves, when
    /// they have room.
    fn sweep_idle_buffers(&mut self) {
        let now = self.now.0;
        for conn in self.conns.iter_mut().flatten() {
            if now.saturating_sub(conn.last_cmd) < IDLE_SWEEP_SECS {
                continue;
            }
            if conn.out.is_empty() && conn.out.capacity() > BUF_KEEP_BYTES {
                self.large_out.give(std::mem::take(&mut conn.out));
            }
            if conn.rbuf.is_empty() && conn.rbuf.capacity() > BUF_KEEP_BYTES {
                self.large_rbufs.give(std::mem::take(&mut conn.rbuf));
            }
        }
    }

    /// Handles every envelope that other cores sent; returns how many arrived.
    pub fn poll_mesh(&mut self) -> usize {
        let acks = if self.log.is_some() {
            self.log_acks()
        } else {
            0
        };
        let mut inbox = std::mem::take(&mut self.inbox);
        if !self.log_stalled() {
            self.mesh.drain(INBOUND_PER_TURN, &mut inbox);
        }
        let count = inbox.len() + acks;
        if count > 0 {
            // Requests from other cores may have been sent after this turn sampled the clock
            // (and after a `debug_time` jump there): never execute them with an older `now`.
            self.now = self.shared.now();
        }
        for env in inbox.drain(..) {
            self.handle_envelope(env);
        }
        self.inbox = inbox;
        count
    }

    fn handle_envelope(&mut self, env: Envelope) {
        let from = env.from;
        // Warm buckets two groups ahead and items one group ahead, as for local input.
        let g = WARM_GROUP_KEYS;
        let hashes = |from: usize| {
            env.requests
                .iter()
                .skip(from)
                .take(g)
                .filter_map(|r| remote_key_hash(&r.op))
        };
        hashes(0)
            .chain(hashes(g))
            .for_each(|h| self.shard.prefetch_bucket(h));
        hashes(0).for_each(|h| self.shard.prefetch_items(h));
        for (i, req) in env.requests.iter().enumerate() {
            if i % g == 0 {
                hashes(i + 2 * g).for_each(|h| self.shard.prefetch_bucket(h));
                hashes(i + g).for_each(|h| self.shard.prefetch_items(h));
            }
            self.exec_remote(from, &env, req);
        }
        if !env.log.is_empty() {
            self.deliver_log(&env.log);
        }
        if let Some(received) = self.replies_received.get_mut(usize::from(from)) {
            *received += env.replies.len() as u64;
        }
        for rep in &env.replies {
            let data = env
                .buf
                .get(rep.start as usize..rep.end as usize)
                .unwrap_or_default();
            let segments = env
                .segments
                .get(rep.segments_start as usize..rep.segments_end as usize)
                .unwrap_or_default();
            self.deliver_part(rep.conn.index, rep.conn.generation, rep.seq, data, segments);
        }
        self.outbox.recycle(env);
    }

    /// Executes a request sent by core `from` and queues the reply back to it.
    fn exec_remote(&mut self, from: u16, env_in: &Envelope, req: &RemoteRequest) {
        if self.shard.log.mask != 0 {
            self.shard.log.cfd = req.cfd;
        }
        if let RemoteOp::GetKey {
            start: s,
            end: e,
            key_hash,
            verb,
            touch_to,
        } = req.op
        {
            // The common case, without taking the envelope out and putting it back.
            let key = env_in.buf.get(s as usize..e as usize).unwrap_or_default();
            let now = self.now;
            let log_before = self.shard.log_seq();
            let reply = self.outbox.to(from);
            let start = reply.buf.len() as u32;
            self.shard
                .exec_get_key(verb, touch_to, key, key_hash, now, &mut reply.buf);
            reply.buf.extend_from_slice(compose::END);
            let segments = reply.segments.len() as u32;
            reply.replies.push(RemoteReply {
                conn: req.conn,
                seq: req.seq,
                start,
                end: reply.buf.len() as u32,
                segments_start: segments,
                segments_end: segments,
            });
            if touch_to.is_some() && self.log_always() {
                self.hold_remote_reply(log_before, from, req, start, segments, OnFailure::Keep);
            }
            return;
        }
        let log_before = self.shard.log_seq();
        let mut reply = std::mem::take(self.outbox.to(from));
        let start = reply.buf.len() as u32;
        let segments_start = reply.segments.len() as u32;
        match &req.op {
            RemoteOp::Text {
                start: s,
                end: e,
                key_hash: h,
                indices_start,
                indices_end,
            } => {
                let raw = env_in.buf.get(*s as usize..*e as usize).unwrap_or_default();
                let indices = env_in
                    .indices
                    .get(*indices_start as usize..*indices_end as usize)
                    .unwrap_or_default();
                let now = self.now;
                match parse(raw, &self.limits) {
                    Ok((
                        Request::Get {
                            verb,
                            exptime,
                            keys,
                        },
                        _,
                    )) => {
                        let touch_to = if verb.touches() {
                            self.shard.expires_at(exptime, now)
                        } else {
                            None
                        };
                        if indices.is_empty() {
                            // A whole command forwarded to the owner of its one key.
                            for k in keys.iter() {
                                self.shard
                                    .exec_get_key(verb, touch_to, k, *h, now, &mut reply.buf);
                            }
                            reply.buf.extend_from_slice(compose::END);
                        }
                        for (k, &i) in keys.iter().zip(indices.iter()) {
                            let before = reply.buf.len();
                            self.shard.exec_get_key(
                                verb,
                                touch_to,
                                k,
                                key_hash(k),
                                now,
                                &mut reply.buf,
                            );
                            reply.segments.push((i, (reply.buf.len() - before) as u32));
                        }
                    }
                    Ok((Request::Meta(meta), _)) => {
                        let now = self.now;
                        self.shard.exec_meta(&meta, *h, now, &mut reply.buf);
                    }
                    Ok((r, _)) if r.key().is_some() => {
                        self.shard.exec_keyed(&r, *h, now, &mut reply.buf);
                    }
                    // Bytes were validated by the sender's parser; anything else is a bug.
                    other => debug_assert!(false, "unexpected remote request {other:?}"),
                }
            }
            RemoteOp::Binary {
                start: s,
                end: e,
                key_hash: h,
            } => {
                let raw = env_in.buf.get(*s as usize..*e as usize).unwrap_or_default();
                self.exec_remote_binary(raw, *h, &mut reply.buf);
            }
            RemoteOp::GetKey { .. } => {} // answered above
            RemoteOp::MetadumpStep { classes, from } => {
                let store = self.shard.store();
                let next = admin::metadump_step(
                    store,
                    &self.shared.epoch,
                    self.now,
                    *classes,
                    *from,
                    &mut reply.buf,
                );
                if let Some(at) = next {
                    reply.segments.push((at.page, at.chunk));
                }
            }
            op => self.exec_broadcast_op(op, &mut reply.buf),
        }
        let end = reply.buf.len() as u32;
        let segments_end = reply.segments.len() as u32;
        reply.replies.push(RemoteReply {
            conn: req.conn,
            seq: req.seq,
            start,
            end,
            segments_start,
            segments_end,
        });
        *self.outbox.to(from) = reply;
        if self.log_always() {
            let on_failure = on_failure_of(env_in, &req.op);
            self.hold_remote_reply(log_before, from, req, start, segments_start, on_failure);
        }
    }

    /// Under `always`: holds the reply to `req` just appended to `from`'s envelope if the
    /// request made log records.
    fn hold_remote_reply(
        &mut self,
        log_before: u64,
        from: u16,
        req: &RemoteRequest,
        start: u32,
        segments_start: u32,
        on_failure: OnFailure,
    ) {
        if self.hold_remote(
            log_before,
            from,
            req.conn,
            req.seq,
            start,
            segments_start,
            on_failure,
        ) {
            self.outbox.to(from).replies.pop();
        }
    }

    /// End of a loop turn: move metadumps on, do bounded housekeeping (an `lru_crawler crawl`
    /// slice when due; once a second: the background crawler's slice, and closing idle
    /// connections), then send this turn's envelopes.
    pub fn turn_end(&mut self) {
        self.udp_turn();
        admin::metadump_pump(self);
        let crawler = self.shared.crawler_enabled.load(Ordering::Relaxed);
        let tocrawl = self.shared.crawler_tocrawl.load(Ordering::Relaxed);
        if crawler && self.crawl_wait() == Some(Duration::ZERO) {
            // `lru_crawler crawl`: a bounded slice every `lru_crawler sleep` until the pass
            // is done.
            let now = self.now;
            self.shard
                .store_mut()
                .crawl(now, CRAWL_SLICE_ITEMS, tocrawl);
            self.crawl_slice_done();
        }
        if self.now != self.last_crawl {
            self.last_crawl = self.now;
            if crawler {
                let now = self.now;
                let pass = self.shard.store().crawl_pass_requested();
                self.shard
                    .store_mut()
                    .crawl(now, CRAWL_SLICE_ITEMS, tocrawl);
                if pass {
                    self.crawl_slice_done();
                }
            }
            self.close_idle();
        }
        self.watch_flush();
        if self.log.is_some() {
            self.log_snapshot_step();
        }
        self.log_send();
        // After the crawl slices: a remote `lru_crawler crawl` part is answered only once this
        // shard's pass has had its first slice (so an empty pass is over by the `OK`).
        self.outbox.flush(&self.mesh);
    }

    /// Starts this shard's part of an `lru_crawler crawl` (its first slice runs this turn).
    pub(super) fn crawl_pass_start(&mut self, classes: ClassSet) {
        self.shard.store_mut().request_crawl_pass(classes);
        self.crawl_slice_at = Some(Instant::now());
    }

    /// After a slice of a requested pass: schedules the next one, or, if the pass is over,
    /// counts this shard out of the running crawl.
    fn crawl_slice_done(&mut self) {
        if self.shard.store().crawl_pass_requested() {
            let sleep = self.shared.crawler_sleep_us.load(Ordering::Relaxed);
            self.crawl_slice_at = Some(Instant::now() + Duration::from_micros(u64::from(sleep)));
        } else if self.crawl_slice_at.take().is_some() {
            self.shared.crawls_running.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `-o idle_timeout=<secs>`: marks for closing every connection that has sent no command
    /// for longer than that and has nothing left to send or wait for (memcached closes such a
    /// connection without a reply). The backend closes it at the end of this turn.
    fn close_idle(&mut self) {
        let timeout = self.shared.config.idle_timeout_secs;
        if timeout == 0 {
            return;
        }
        let now = self.now.0;
        for idx in 0..self.conns.len() as u32 {
            let Some(c) = self.conn_mut(idx) else {
                continue;
            };
            let quiet = c.slots.is_empty() && c.unsent().is_empty() && c.inflight == 0;
            // A watcher is never idle; a UDP datagram's connection ends with its requests.
            if quiet
                && !c.closing
                && c.watch.is_none()
                && c.udp.is_none()
                && now.saturating_sub(c.last_cmd) > timeout
            {
                c.closing = true;
                c.close_reason = crate::watch::CloseReason::IdleTimeout;
                self.idle_kicks += 1;
                self.mark_dirty(idx);
            }
        }
    }

    /// The cores that must be woken because this turn's envelopes reached them asleep.
    pub fn take_wakes(&mut self, into: &mut Vec<u16>) {
        self.outbox.take_wakes(into);
    }

    /// Whether envelopes (or log records) are still waiting to be delivered (the loop must
    /// not sleep long).
    pub fn outbox_blocked(&self) -> bool {
        self.outbox.blocked() || self.log_refused()
    }

    /// Whether client input must wait: a full queue to another shard, or the log behind.
    #[inline]
    pub(super) fn input_blocked(&self) -> bool {
        self.outbox.blocked() || self.log_full()
    }

    /// While an `lru_crawler crawl` pass is under way here (and the crawler enabled): how long
    /// until its next slice may run (zero: now). The loop sleeps no longer than that.
    pub fn crawl_wait(&self) -> Option<Duration> {
        if !self.shared.crawler_enabled.load(Ordering::Relaxed) {
            return None;
        }
        let at = self.crawl_slice_at?;
        Some(at.saturating_duration_since(Instant::now()))
    }

    /// Whether a metadump could take its next step at the next [`Core::turn_end`] (the loop
    /// must not sleep: no event may come to wake it, e.g. when its output was all written).
    pub fn metadump_runnable(&self) -> bool {
        admin::metadump_runnable(self)
    }
}

/// How a held reply to a request from another core is replaced if its record fails: binary
/// frames get a binary error (their header gives the opcode and opaque), retrievals (`gat`)
/// are kept, anything else gets the text error.
fn on_failure_of(env: &Envelope, op: &RemoteOp) -> OnFailure {
    match *op {
        RemoteOp::Binary { start, end, .. } => {
            let raw = env
                .buf
                .get(start as usize..end as usize)
                .unwrap_or_default();
            match (raw.get(1), raw.get(12..16)) {
                (Some(&opcode), Some(o)) => OnFailure::Binary {
                    opcode,
                    opaque: u32::from_be_bytes([o[0], o[1], o[2], o[3]]),
                },
                _ => OnFailure::Keep,
            }
        }
        RemoteOp::Text { start, .. } if env.buf.get(start as usize) == Some(&b'g') => {
            OnFailure::Keep
        }
        RemoteOp::Text { .. } => OnFailure::Text,
        _ => OnFailure::Keep,
    }
}

/// Appends a reply in order: straight to `out` when nothing waits, else as a ready slot.
pub(super) fn push_reply(conn: &mut Conn, pool: &mut BufPool, reply: &[u8]) {
    if !reply.is_empty() {
        compose_reply(conn, pool, |out| out.extend_from_slice(reply));
    }
}

/// Composes a reply that is complete now, in order: in place where the connection's ready
/// output can take it, else in a pooled buffer queued as a ready slot (none for an empty
/// reply, such as a quiet or `noreply` success).
#[inline(always)]
pub(super) fn compose_reply(
    conn: &mut Conn,
    pool: &mut BufPool,
    compose: impl FnOnce(&mut Vec<u8>),
) {
    if let Some(out) = conn.ready_buf() {
        compose(out);
    } else {
        let mut buf = pool.take();
        compose(&mut buf);
        if buf.is_empty() {
            pool.give(buf);
        } else {
            conn.push_ready(buf, pool);
        }
    }
}

/// Whether memcached sends its stacked replies once `req` is answered: a retrieval (`get`,
/// `gets`, `gat`, `gats`) and `mn` flush them, any other request leaves its own (silent or not)
/// on the stack, which `lru_crawler metadump` and `watch` refuse to follow.
fn flushes_replies(req: &Request<'_>) -> bool {
    match req {
        Request::Get { .. } => true,
        Request::Meta(meta) => meta.verb == crate::protocol::meta::MetaVerb::Noop,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{leading_key, split_get_run, Keys, GET_RUN_KEYS};

    #[test]
    fn leading_key_walks_keyed_text_requests() {
        let input =
            b"get a b\r\nset k 0 0 5\r\nhello\r\nmg m v\r\ncas c 1 2 3 99\r\nxyz\r\nincr n 1\r\n";
        let mut keys = Vec::new();
        let mut rest: &[u8] = input;
        while let Some((key, next)) = leading_key(rest) {
            keys.push(String::from_utf8(key.to_vec()).unwrap());
            rest = &rest[next..];
        }
        assert_eq!(keys, ["a", "k", "m", "c", "n"]);
        assert!(rest.is_empty());
        // Runs of spaces separate tokens as in the parser; a bare `\n` ends a line too.
        assert_eq!(
            leading_key(b"  get   spaced  \r\n"),
            Some((&b"spaced"[..], 18))
        );
        assert_eq!(
            leading_key(b"set  k  1 2  3\nabc\r\nget x\r\n"),
            Some((&b"k"[..], 20))
        );
        assert_eq!(leading_key(b"set k 0 0 +3\r\nabc\r\n"), None);
    }

    #[test]
    fn leading_key_stops_where_it_cannot_know() {
        assert_eq!(leading_key(b"get incomplete"), None);
        assert_eq!(leading_key(b"stats\r\n"), None);
        assert_eq!(leading_key(b"get\r\n"), None);
        assert_eq!(leading_key(b"set k 0 0 notanumber\r\n"), None);
        assert_eq!(leading_key(b"\x80\x00\x00"), None);
        // A data block not yet received: the key is known, the next request's start lies
        // past the end of the input.
        let (key, next) = leading_key(b"set k 0 0 100\r\nabc").unwrap();
        assert_eq!(key, b"k");
        assert!(next > 18);
        // Absurd lengths do not overflow.
        assert_eq!(leading_key(b"set k 0 0 18446744073709551615\r\n"), None);
        // A line longer than the scan looks at is left to the parser.
        let mut long = b"get ".to_vec();
        long.extend(std::iter::repeat_n(b'k', 2000));
        long.extend_from_slice(b"\r\n");
        assert_eq!(leading_key(&long), None);
    }

    #[test]
    fn split_get_run_cuts_after_a_run_of_keys() {
        let keys = |n: usize, gap: &str| {
            (0..n)
                .map(|i| format!("key{i}"))
                .collect::<Vec<_>>()
                .join(gap)
        };
        assert_eq!(split_get_run(b"a"), None);
        assert_eq!(split_get_run(keys(GET_RUN_KEYS, " ").as_bytes()), None);
        // Trailing spaces after a full run are no further key.
        assert_eq!(
            split_get_run(format!("{}   ", keys(GET_RUN_KEYS, "  ")).as_bytes()),
            None
        );
        // One key more: the cut is where that key starts, whatever the gaps before it.
        for gap in [" ", "   "] {
            let raw = keys(GET_RUN_KEYS + 1, gap);
            let cut = split_get_run(raw.as_bytes()).unwrap();
            assert_eq!(&raw[cut..], format!("key{GET_RUN_KEYS}"));
            assert_eq!(
                Keys::new(&raw.as_bytes()[..cut]).iter().count(),
                GET_RUN_KEYS
            );
        }
        // Short keys: a run of GET_RUN_KEYS one-byte keys and the rest.
        let raw = "a ".repeat(40);
        assert_eq!(split_get_run(raw.as_bytes()), Some(2 * GET_RUN_KEYS));
    }
}
