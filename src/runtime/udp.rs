//! memcached's UDP protocol (`-U`) on an executor.
//!
//! Each core owns one datagram socket per UDP address (SO_REUSEPORT, see `listener`). A backend
//! only reports readiness ([`Core::udp_receive`] when a socket is readable); reading and sending
//! are plain nonblocking `recvfrom`/`sendto` calls here, the same for both backends (a datagram
//! socket has no stream to keep in order, so io_uring would save little and cost buffers of
//! 64 KiB for the largest datagram).
//!
//! A request datagram becomes a transient [`Conn`] that goes through the ordinary path
//! (`Core::process`, dispatch, other shards' slots), so UDP answers exactly what TCP answers.
//! Its requests run one at a time: a request whose reply waits for another shard holds the
//! next one back until it is complete. That keeps each request's reply whole and in place in
//! `Conn::out`, so it can be cut into memcached's response objects ([`UdpConn`]) when it ends,
//! and sent as memcached sends them at each flush point (see `protocol::udp`). Once no whole
//! request is left, the rest is flushed and the connection forgotten.
//!
//! Bounds: at most [`INFLIGHT_MAX`] datagrams in flight per core (more are dropped and counted,
//! as a full socket buffer drops them); at most [`RECV_PER_TURN`] datagrams read per socket per
//! loop turn; a datagram's unsent reply is flushed once it passes `OUT_HIGH_WATER`; at most
//! [`SPARE_MAX`] finished datagrams' buffers are kept for reuse, none larger than
//! [`SPARE_BYTES_MAX`]. A send the socket refuses (its buffer full) drops that datagram, as UDP
//! may; it is counted.
//!
//! Where memcached 1.6.18 differs, on purpose: a text data block cut off by the end of its
//! datagram is answered at once as a bad data chunk (the parser's `Limits::input_complete`),
//! and any other request cut off is dropped; memcached waits for the rest, taking it from
//! whatever datagram reaches that thread next (a block then never ends in CRLF, so its answer
//! is the same error, only later). A data block to swallow ends with the datagram (memcached
//! swallows later datagrams).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::connection::{Conn, OUT_HIGH_WATER};
use super::core::Core;
use crate::protocol::parse::parse;
use crate::protocol::udp::{self as frame, Datagram};
use crate::protocol::{Limits, ParseError, Request};

/// Datagrams read from one socket per loop turn, at most.
pub const RECV_PER_TURN: usize = 64;
/// Datagrams being answered at once on one core, at most; further ones are dropped.
pub const INFLIGHT_MAX: usize = 256;
/// The receive buffer: room for the largest datagram (memcached's `UDP_READ_BUFFER_SIZE`).
const RECV_BYTES: usize = 65536;
/// Finished datagram connections kept for their buffers, at most: the next datagrams reuse them
/// instead of allocating a connection's input, reply and response-object buffers each.
const SPARE_MAX: usize = 32;
/// A buffer larger than this is freed rather than kept for reuse (one large multiget's reply
/// must not pin its memory for good).
const SPARE_BYTES_MAX: usize = 16 * 1024;

/// One core's UDP sockets and the datagrams it is answering.
#[derive(Debug, Default)]
pub struct Udp {
    sockets: Vec<UdpSocket>,
    /// Server time of the last request per socket, for `stats conns`.
    pub(super) last_cmd: Vec<u32>,
    scratch: Vec<u8>,
    /// Connections whose waiting reply has completed, and those held back by a budget.
    ready: Vec<u32>,
    /// Buffers of finished datagram connections, for the next ones (at most [`SPARE_MAX`]).
    spare: Vec<Spare>,
    inflight: usize,
    /// Request datagrams dropped because [`INFLIGHT_MAX`] were in flight.
    pub recv_dropped: u64,
    /// Reply datagrams the socket refused (its send buffer full) or failed.
    pub send_dropped: u64,
    /// The parser's bounds for a datagram: a whole datagram is one read, so a complete command
    /// line of any length is answered (memcached parses what one read brings).
    limits: Limits,
}

/// The UDP side of a transient connection: where its reply goes and how it is cut up.
#[derive(Debug)]
pub struct UdpConn {
    socket: usize,
    peer: SocketAddr,
    request_id: u16,
    /// The request being answered, its reply starting at `Open::start` in `Conn::out`.
    open: Option<Open>,
    /// Lengths of the response objects in `Conn::out`, not yet sent (0: an empty object).
    resps: Vec<usize>,
    /// Requests answered since the last flush, silent ones included (memcached's stack of
    /// response objects, which `lru_crawler metadump` refuses to follow).
    unflushed: u32,
    /// Requests answered, for memcached's flush every `-R` requests.
    requests: u32,
}

/// What a finished datagram connection leaves for the next: its emptied buffers.
#[derive(Debug)]
struct Spare {
    rbuf: Vec<u8>,
    out: Vec<u8>,
    udp: Box<UdpConn>,
}

#[derive(Debug)]
struct Open {
    start: usize,
    kind: Kind,
}

/// What decides how a request's reply is cut and whether it flushes.
#[derive(Debug)]
enum Kind {
    /// A text command: one response object, none if its reply is empty (`noreply`, `q`).
    Text,
    /// `mn`: one object, then a flush.
    Flush,
    /// `quit`: an empty object, a flush, and the end of the datagram.
    Quit,
    /// A retrieval of several keys (its line, to find the keys again): one object per key,
    /// then a flush.
    Get(Vec<u8>),
    /// A binary request (its 24-byte header): one object, even when empty.
    Binary([u8; 24]),
}

impl UdpConn {
    /// Whether a reply is queued ahead of the request being answered.
    pub(super) fn stacked(&self) -> bool {
        self.unflushed > 0
    }
}

impl Udp {
    /// Takes this core's sockets, one per UDP address.
    pub fn new(sockets: Vec<UdpSocket>, limits: Limits) -> Udp {
        let count = sockets.len();
        Udp {
            sockets,
            last_cmd: vec![crate::clock::START.0; count],
            limits: Limits {
                line_len_max: RECV_BYTES,
                input_complete: true,
                ..limits
            },
            ..Udp::default()
        }
    }

    /// How many UDP sockets this core serves.
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// Each socket's local address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

impl Core {
    /// The UDP sockets' descriptors, in socket order, for the backend to watch.
    pub fn udp_fds(&self) -> Vec<RawFd> {
        self.udp.sockets.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Whether UDP work is waiting that no event will announce: a reply completed by another
    /// shard, or a datagram held back by the parse budget (the loop must not sleep).
    pub fn udp_busy(&self) -> bool {
        !self.udp.ready.is_empty()
    }

    /// Reads and answers up to [`RECV_PER_TURN`] datagrams from socket `socket`; true if more may
    /// be waiting (the budget ran out), false once it would block.
    pub fn udp_receive(&mut self, socket: usize) -> bool {
        let mut buf = std::mem::take(&mut self.udp.scratch);
        buf.resize(RECV_BYTES, 0);
        let mut more = true;
        for _ in 0..RECV_PER_TURN {
            let Some(sock) = self.udp.sockets.get(socket) else {
                more = false;
                break;
            };
            match sock.recv_from(&mut buf) {
                Ok((n, peer)) => self.udp_datagram(socket, peer, buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                // EINTR, or an error the socket had queued: the next datagram may be fine.
                Err(_) => {}
            }
        }
        self.udp.scratch = buf;
        more
    }

    /// One received datagram: dropped, or opened as a connection and run as far as it goes.
    fn udp_datagram(&mut self, socket: usize, peer: SocketAddr, datagram: &[u8]) {
        // memcached counts every datagram it reads past a header, answered or not.
        if datagram.len() > frame::HEADER_BYTES {
            self.bytes_read += datagram.len() as u64;
        }
        let Datagram::Request {
            request_id,
            payload,
        } = frame::parse_datagram(datagram)
        else {
            return;
        };
        if self.udp.inflight >= INFLIGHT_MAX {
            self.udp.recv_dropped += 1;
            return;
        }
        if let Some(t) = self.udp.last_cmd.get_mut(socket) {
            *t = self.now.0;
        }
        let mut conn = Conn::new(0, String::new());
        // `cfd` in `watch` lines: the socket the datagram came in on, as memcached logs it.
        conn.cfd = super::stats::udp_socket_id(self, socket);
        let (udp, resps) = match self.udp.spare.pop() {
            Some(spare) => {
                conn.rbuf = spare.rbuf;
                conn.out = spare.out;
                let mut udp = spare.udp;
                let resps = std::mem::take(&mut udp.resps);
                (Some(udp), resps)
            }
            None => (None, Vec::new()),
        };
        conn.rbuf.extend_from_slice(payload);
        let fresh = UdpConn {
            socket,
            peer,
            request_id,
            open: None,
            resps,
            unflushed: 0,
            requests: 0,
        };
        conn.udp = Some(match udp {
            Some(mut b) => {
                *b = fresh;
                b
            }
            None => Box::new(fresh),
        });
        self.udp.inflight += 1;
        let idx = self.insert_conn(conn);
        self.udp_run(idx);
    }

    /// Forgets a UDP connection (from `Core::close`), keeping its buffers for the next datagram.
    pub(super) fn udp_closed(&mut self, conn: Conn) {
        self.udp.inflight = self.udp.inflight.saturating_sub(1);
        let Conn {
            mut rbuf,
            mut out,
            udp: Some(mut udp),
            ..
        } = conn
        else {
            return;
        };
        if self.udp.spare.len() >= SPARE_MAX
            || rbuf.capacity() > SPARE_BYTES_MAX
            || out.capacity() > SPARE_BYTES_MAX
            || udp.resps.capacity() > SPARE_BYTES_MAX / 8
        {
            return;
        }
        rbuf.clear();
        out.clear();
        udp.resps.clear();
        udp.open = None;
        self.udp.spare.push(Spare { rbuf, out, udp });
    }

    /// Every UDP connection that may move on now: its waiting reply completed, or its parse
    /// budget renewed with the turn.
    pub(super) fn udp_turn(&mut self) {
        let ready = std::mem::take(&mut self.udp.ready);
        for idx in ready {
            self.udp_run(idx);
        }
    }

    /// A slot of UDP connection `idx` completed: the request waiting on it may end.
    pub(super) fn udp_slot_done(&mut self, idx: u32) {
        if !self.udp.ready.contains(&idx) {
            self.udp.ready.push(idx);
        }
    }

    /// The parser's bounds for a connection (a UDP one or not).
    pub(super) fn limits_for(&self, udp: bool) -> Limits {
        if udp {
            self.udp.limits
        } else {
            self.limits
        }
    }

    /// Moves a UDP connection on as far as it can go: ends its request if the reply is whole,
    /// runs the next ones, and once none is left, flushes and forgets it.
    fn udp_run(&mut self, idx: u32) {
        let Some(conn) = self.conn(idx) else { return };
        let Some(udp) = conn.udp.as_deref() else {
            return;
        };
        if udp.open.is_some() {
            if !conn.slots.is_empty() {
                return; // another shard's reply will bring us back
            }
            self.udp_end(idx);
        }
        let Some(conn) = self.conn(idx) else { return };
        if !conn.closing && !conn.rbuf.is_empty() && conn.swallow == 0 {
            if self.outbox_blocked() {
                self.udp.ready.push(idx);
                return;
            }
            self.process(idx);
            let Some(conn) = self.conn(idx) else { return };
            if conn.udp.as_deref().is_some_and(|u| u.open.is_some()) {
                return; // waiting for another shard
            }
            if conn.held_back && !conn.closing {
                self.udp.ready.push(idx); // the budget ran out: next turn
                return;
            }
        }
        self.udp_complete(idx);
    }

    /// Notes the request about to run on connection `idx` (a text one, `req` unless rejected).
    pub(super) fn udp_begin_text(&mut self, idx: u32, req: Option<&Request<'_>>, raw: &[u8]) {
        let Some(conn) = self.conn_mut(idx) else {
            return;
        };
        let start = conn.out.len();
        let Some(udp) = conn.udp.as_deref_mut() else {
            return;
        };
        let kind = match req {
            Some(Request::Get { keys, .. }) if keys.iter().nth(1).is_some() => {
                Kind::Get(raw.to_vec())
            }
            Some(Request::Get { .. }) => Kind::Flush,
            Some(Request::Meta(meta)) if meta.verb == crate::protocol::meta::MetaVerb::Noop => {
                Kind::Flush
            }
            Some(Request::Quit) => Kind::Quit,
            _ => Kind::Text,
        };
        udp.open = Some(Open { start, kind });
    }

    /// Notes the binary request about to run (`raw`: its bytes from the header on).
    pub(super) fn udp_begin_binary(&mut self, idx: u32, raw: &[u8]) {
        let Some(conn) = self.conn_mut(idx) else {
            return;
        };
        let start = conn.out.len();
        let Some(udp) = conn.udp.as_deref_mut() else {
            return;
        };
        let mut header = [0u8; 24];
        for (h, &b) in header.iter_mut().zip(raw) {
            *h = b;
        }
        udp.open = Some(Open {
            start,
            kind: Kind::Binary(header),
        });
    }

    /// After a request's dispatch: ends it now unless its reply waits for another shard.
    pub(super) fn udp_dispatched(&mut self, idx: u32) {
        if self
            .conn(idx)
            .is_some_and(|c| c.udp.is_some() && c.slots.is_empty())
        {
            self.udp_end(idx);
        }
    }

    /// Ends the open request of connection `idx`, whose reply is whole at the end of `out`: cuts
    /// it into response objects and flushes where memcached flushes.
    fn udp_end(&mut self, idx: u32) {
        let reqs_per_event = self.reqs_per_event;
        let limits = self.udp.limits;
        let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(udp) = conn.udp.as_deref_mut() else {
            return;
        };
        let Some(open) = udp.open.take() else {
            return;
        };
        let reply = conn.out.get(open.start..).unwrap_or_default();
        udp.unflushed += 1;
        udp.requests += 1;
        let (mut flush, quit) = match &open.kind {
            Kind::Text if reply.is_empty() => (false, false), // skipped: never sent
            Kind::Text => {
                udp.resps.push(reply.len());
                (false, false)
            }
            Kind::Flush => {
                udp.resps.push(reply.len());
                (true, false)
            }
            Kind::Quit => {
                udp.resps.push(reply.len());
                (true, true)
            }
            Kind::Get(line) => {
                let split = match parse(line, &limits) {
                    Ok((Request::Get { keys, .. }, _)) => frame::get_resps(reply, keys),
                    _ => None,
                };
                udp.resps.extend(split.unwrap_or_else(|| vec![reply.len()]));
                (true, false)
            }
            Kind::Binary(header) => {
                udp.resps.push(reply.len());
                (
                    frame::binary_flushes(header, reply),
                    frame::binary_is_quit(header),
                )
            }
        };
        if conn.closing {
            // `quit` and a reply sent before closing (a binary protocol error) go out with
            // what is queued; any other close (an HTTP line, a runaway line, a bad binary
            // header, `shutdown`) drops the queued replies unsent, as memcached's does.
            if reply.is_empty() && !quit {
                conn.out.clear();
                udp.resps.clear();
                udp.unflushed = 0;
                return;
            }
            flush = true;
        }
        // memcached yields (and flushes) after its first `-R` + 1 requests, then every `-R`.
        let r = u32::try_from(reqs_per_event).unwrap_or(u32::MAX).max(1);
        flush |= udp.requests > r && (udp.requests - 1) % r == 0;
        flush |= conn.out.len() >= OUT_HIGH_WATER;
        if flush {
            self.udp_flush(idx);
        }
    }

    /// No whole request is left on connection `idx`: flushes what is queued and forgets it.
    fn udp_complete(&mut self, idx: u32) {
        let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        // A text line longer than memcached's 2048 bytes that has no newline closes the
        // connection without a reply (and drops what was queued), unless it is a retrieval.
        let runaway = !conn.closing
            && conn.binary != Some(true)
            && conn.swallow == 0
            && !conn.rbuf.contains(&b'\n')
            && matches!(parse(&conn.rbuf, &self.limits), Err(ParseError::Invalid(r)) if r.close);
        if !runaway && !conn.closing {
            self.udp_flush(idx);
        }
        self.close(idx);
    }

    /// Sends the queued response objects of connection `idx` as memcached frames them.
    fn udp_flush(&mut self, idx: u32) {
        let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(udp) = conn.udp.as_deref_mut() else {
            return;
        };
        let Some(sock) = self.udp.sockets.get(udp.socket) else {
            return;
        };
        let (mut written, mut dropped) = (0u64, 0u64);
        frame::frame(
            &conn.out,
            &udp.resps,
            udp.request_id,
            |datagram| match send(sock, datagram, udp.peer) {
                Ok(n) => written += n as u64,
                Err(_) => dropped += 1,
            },
        );
        conn.out.clear();
        udp.resps.clear();
        udp.unflushed = 0;
        self.bytes_written += written;
        self.udp.send_dropped += dropped;
    }
}

/// One nonblocking `sendto`, retried if a signal interrupts it.
fn send(sock: &UdpSocket, datagram: &[u8], peer: SocketAddr) -> io::Result<usize> {
    loop {
        match sock.send_to(datagram, peer) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::router::{key_hash, shard_of};
    use crate::runtime::admin::tests::cores;
    use crate::runtime::listener::bind_udp_group;

    fn request(id: u16, payload: &[u8]) -> Vec<u8> {
        [&frame::header(id, 0, 1)[..], payload].concat()
    }

    /// Sends `payload` as one request datagram to core 0 (which owns every key) and returns the
    /// reply datagrams' payloads, joined, once `len` bytes of them have come.
    fn roundtrip(
        core: &mut Core,
        client: &std::net::UdpSocket,
        addr: SocketAddr,
        (id, payload): (u16, &[u8]),
        len: usize,
    ) -> Vec<u8> {
        client.send_to(&request(id, payload), addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        client
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut reply = Vec::new();
        while reply.len() < len {
            core.turn_begin();
            core.udp_receive(0);
            core.turn_end();
            while let Ok((n, _)) = client.recv_from(&mut buf) {
                assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), id);
                reply.extend_from_slice(&buf[8..n]);
            }
            assert!(Instant::now() < deadline, "no whole reply to {id}");
        }
        reply
    }

    /// A finished datagram leaves its buffers for the next one (none over
    /// [`SPARE_BYTES_MAX`]; the bound on their number is checked by the in-flight test below), and a reused connection starts empty: nothing of an earlier
    /// datagram's request or reply reaches the next one's.
    #[test]
    fn finished_datagrams_leave_their_buffers_for_the_next_without_leftovers() {
        let mut cores = cores(1);
        let (sockets, addr) = bind_udp_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        cores[0].udp_attach(sockets);
        let core = &mut cores[0];
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let stored = b"STORED\r\n";
        let reply = roundtrip(core, &client, addr, (1, b"set small 0 0 2\r\nhi\r\n"), 8);
        assert_eq!(reply, stored);
        assert_eq!(
            core.udp.spare.len(),
            1,
            "the finished datagram's buffers are kept"
        );
        // A partial command at the end of a datagram is dropped with it, not carried over.
        let hit = b"VALUE small 0 2\r\nhi\r\nEND\r\n";
        let reply = roundtrip(core, &client, addr, (2, b"get small\r\nget sm"), hit.len());
        assert_eq!(reply, hit);
        let reply = roundtrip(
            core,
            &client,
            addr,
            (3, b"all\r\nget small\r\n"),
            7 + hit.len(),
        );
        assert_eq!(reply, [b"ERROR\r\n".as_slice(), hit].concat());
        assert_eq!(core.udp.spare.len(), 1, "one datagram at a time reuses one");

        // A reply larger than SPARE_BYTES_MAX: its buffer is freed, not kept.
        let big = vec![b'x'; SPARE_BYTES_MAX + 1];
        let set = [b"set big 0 0 16385\r\n".as_slice(), &big, b"\r\n"].concat();
        assert_eq!(roundtrip(core, &client, addr, (4, &set), 8), stored);
        assert!(
            core.udp.spare.is_empty(),
            "the big request's buffer was freed"
        );
        let len = "VALUE big 0 16385\r\n".len() + big.len() + 7;
        let reply = roundtrip(core, &client, addr, (5, b"get big\r\n"), len);
        assert_eq!(reply.len(), len);
        assert!(reply.ends_with(b"x\r\nEND\r\n"));
        assert!(
            core.udp.spare.is_empty(),
            "the big reply's buffer was freed"
        );
        let reply = roundtrip(core, &client, addr, (6, b"get small\r\n"), hit.len());
        assert_eq!(reply, hit);
        assert_eq!(core.udp.spare.len(), 1);
        assert!(core
            .udp
            .spare
            .iter()
            .all(|s| s.rbuf.capacity() <= SPARE_BYTES_MAX && s.out.capacity() <= SPARE_BYTES_MAX));

        assert_eq!(core.udp.inflight, 0);
    }

    /// Core 0 takes every datagram while core 1, which owns their key, does not run: the first
    /// [`INFLIGHT_MAX`] wait in flight, the rest are dropped and counted; once core 1 answers,
    /// every one in flight is answered whole and forgotten.
    #[test]
    fn datagrams_past_the_in_flight_bound_are_dropped_and_counted() {
        let mut cores = cores(2);
        let (sockets, addr) = bind_udp_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        cores[0].udp_attach(sockets);
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| shard_of(key_hash(k.as_bytes()), 2).0 == 1)
            .unwrap();
        let get = format!("get {key}\r\n");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = INFLIGHT_MAX + 44;
        let deadline = Instant::now() + Duration::from_secs(10);
        let core = &mut cores[0];
        // A few at a time, so that none overflows the socket's receive buffer.
        for sent in 1..=total {
            let id = (sent - 1) as u16;
            client.send_to(&request(id, get.as_bytes()), addr).unwrap();
            if sent % 16 != 0 && sent != total {
                continue;
            }
            loop {
                core.turn_begin();
                core.udp_receive(0);
                core.turn_end();
                if core.udp.inflight + core.udp.recv_dropped as usize == sent {
                    break;
                }
                assert!(Instant::now() < deadline, "datagrams did not arrive");
            }
        }
        assert_eq!(core.udp.inflight, INFLIGHT_MAX);
        assert_eq!(core.udp.recv_dropped, 44);
        assert!(
            !core.udp_busy(),
            "waiting on core 1, nothing to do meanwhile"
        );

        client
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut answered = std::collections::HashSet::new();
        let mut buf = [0u8; 2048];
        while answered.len() < INFLIGHT_MAX {
            assert!(Instant::now() < deadline, "{} answered", answered.len());
            for core in cores.iter_mut() {
                core.turn_begin();
                core.poll_mesh();
                core.turn_end();
            }
            while let Ok((n, _)) = client.recv_from(&mut buf) {
                assert_eq!(&buf[2..8], &[0, 0, 0, 1, 0, 0]);
                assert_eq!(&buf[8..n], b"END\r\n");
                assert!(answered.insert(u16::from_be_bytes([buf[0], buf[1]])));
            }
        }
        assert!(answered.iter().all(|&id| usize::from(id) < total));
        assert_eq!(cores[0].udp.inflight, 0);
        assert_eq!(cores[0].bytes_written, (INFLIGHT_MAX * (8 + 5)) as u64);
        // Of the datagrams finished together, SPARE_MAX left their buffers for the next.
        assert_eq!(cores[0].udp.spare.len(), SPARE_MAX);
    }
}
