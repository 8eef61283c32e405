//! The epoll backend (through mio, edge-triggered): the fallback when io_uring cannot be used.
//!
//! One loop turn: wait for readiness, accept, read every readable connection into the core,
//! handle the mesh, read and answer readable UDP sockets (`runtime::udp`), send this turn's
//! envelopes, then write each connection's replies with one `write` per connection.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::backend::{
    is_accept_shortage, ListenPause, ACCEPT_RETRY, DRAIN_ON_SHUTDOWN, IDLE_WAIT,
    TOO_MANY_CONNECTIONS,
};
use super::connection::{recv_spare, should_close, Stalled};
use super::core::Core;
use super::listener::Listener;

/// Token of the core's wake-up eventfd.
const WAKER: Token = Token(usize::MAX - 1);
/// Listener tokens count down from here.
const LISTENER_BASE: usize = usize::MAX - 2;
/// UDP socket tokens count down from here (below any listener's).
const UDP_BASE: usize = LISTENER_BASE - (1 << 16);
/// New connections accepted per listener per turn.
const ACCEPTS_PER_TURN: usize = 64;
/// Bytes read from one connection per turn.
const READ_PER_TURN: usize = 256 * 1024;

struct Loop {
    poll: Poll,
    listeners: Vec<MioListener>,
    streams: Vec<Option<Stream>>,
    scratch: Vec<u8>,
    dirty: Vec<u32>,
    /// Connections to read or parse this turn: readable ones, and ones whose input was left
    /// unparsed (budget or backpressure).
    stalled: Stalled,
    /// The list [`Stalled::take_into`] fills each turn, and the warming groups' ends; both kept
    /// for their capacity.
    taken: Vec<u32>,
    group_ends: VecDeque<usize>,
    wakes: Vec<u16>,
    /// Per listener: connections may still wait in its queue. Readiness is edge-triggered, so
    /// a listener left with pending connections (turn budget spent, or a shortage) gets no new
    /// event and must be retried by the loop itself.
    accept_pending: Vec<Accept>,
    /// Accepting paused for a shortage, as `stats` reports it.
    accept_pause: ListenPause,
    /// Per UDP socket: datagrams may be waiting (edge-triggered, so the loop keeps reading until
    /// the socket would block, a turn's budget at a time).
    udp_readable: Vec<bool>,
}

/// A listening socket: TCP (`true`: its connections speak TLS), or this core's duplicate of
/// the UNIX socket.
enum MioListener {
    Tcp(TcpListener, bool),
    Unix(UnixListener),
}

impl MioListener {
    fn from_std(l: Listener) -> io::Result<MioListener> {
        Ok(match l {
            Listener::Tcp(l, tls) => {
                l.set_nonblocking(true)?;
                MioListener::Tcp(TcpListener::from_std(l), tls)
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                MioListener::Unix(UnixListener::from_std(l))
            }
        })
    }

    /// Accepts one connection with its peer's name for `stats conns` (empty for a UNIX
    /// peer, which `stats conns` shows as memcached does). TCP connections get TCP_NODELAY.
    /// Every core watches the one UNIX socket, so its EAGAIN often means another core took the
    /// connection: a quiet `WouldBlock` like any other.
    /// The flag says whether the connection speaks TLS.
    fn accept(&self) -> io::Result<(Stream, String, bool)> {
        match self {
            MioListener::Tcp(l, tls) => {
                let (s, peer) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer.to_string(), *tls))
            }
            MioListener::Unix(l) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), String::new(), false))
            }
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            MioListener::Tcp(l, _) => l,
            MioListener::Unix(l) => l,
        }
    }
}

/// An accepted connection; both kinds read and write alike.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Stream {
    /// The socket to register with the poller, whichever kind it is.
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

/// Where a listener's accepting stands after a turn.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Accept {
    /// Queue drained; the next connection raises an event.
    Drained,
    /// The turn's budget ran out: continue next turn without sleeping.
    Budget,
    /// A shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM): retry after [`ACCEPT_RETRY`].
    Shortage,
}

/// Serves on `listeners` until shutdown.
pub fn run(
    mut core: Core,
    listeners: Vec<Listener>,
    ready: &mpsc::Sender<Result<(), String>>,
) -> io::Result<()> {
    let poll = Poll::new()?;
    let waker_fd = core.mesh().waker().raw_fd();
    poll.registry()
        .register(&mut SourceFd(&waker_fd), WAKER, Interest::READABLE)?;
    let listeners_len = listeners.len();
    let mut mio_listeners = Vec::with_capacity(listeners_len);
    for (i, l) in listeners.into_iter().enumerate() {
        let mut l = MioListener::from_std(l)?;
        poll.registry()
            .register(l.source(), Token(LISTENER_BASE - i), Interest::READABLE)?;
        mio_listeners.push(l);
    }
    let udp_fds = core.udp_fds();
    for (i, fd) in udp_fds.iter().enumerate() {
        poll.registry()
            .register(&mut SourceFd(fd), Token(UDP_BASE - i), Interest::READABLE)?;
    }
    let mut lp = Loop {
        poll,
        listeners: mio_listeners,
        streams: Vec::new(),
        scratch: vec![0; 64 * 1024],
        dirty: Vec::new(),
        stalled: Stalled::default(),
        taken: Vec::new(),
        group_ends: VecDeque::with_capacity(4),
        wakes: Vec::new(),
        accept_pending: vec![Accept::Drained; listeners_len],
        accept_pause: ListenPause::default(),
        // Datagrams may have arrived before the registration.
        udp_readable: vec![true; udp_fds.len()],
    };
    let _ = ready.send(Ok(()));
    let mut events = Events::with_capacity(1024);
    let mut timeout = Some(Duration::ZERO);
    let waker = std::sync::Arc::clone(core.mesh().waker());
    loop {
        // Blocking: the shard waits parked, for other cores to read from (see `park`).
        if timeout != Some(Duration::ZERO) {
            core.park();
        }
        let polled = lp.poll.poll(&mut events, timeout);
        core.unpark();
        if let Err(e) = polled {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        waker.set_sleeping(false);
        core.turn_begin();
        for li in 0..lp.accept_pending.len() {
            if lp.accept_pending[li] != Accept::Drained {
                lp.accept(&mut core, li)?;
            }
        }
        for ev in events.iter() {
            match ev.token() {
                WAKER => waker.drain(),
                Token(t) if t > LISTENER_BASE - lp.listeners.len() && t <= LISTENER_BASE => {
                    lp.accept(&mut core, LISTENER_BASE - t)?;
                }
                Token(t) if t > UDP_BASE - lp.udp_readable.len() && t <= UDP_BASE => {
                    if let Some(r) = lp.udp_readable.get_mut(UDP_BASE - t) {
                        *r = true;
                    }
                }
                Token(t) => {
                    let idx = t as u32;
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        if let Some(c) = core.conn_mut(idx) {
                            c.read_ready = true;
                            c.read_hup |= ev.is_read_closed() || ev.is_error();
                        }
                        // Read in the turn, with every other readable connection, before any
                        // input is parsed (see `turn`).
                        lp.stalled.push(idx);
                    }
                    if ev.is_writable() {
                        core.mark_if_pending(idx);
                    }
                }
            }
        }
        lp.turn(&mut core);
        if core.shared.shutdown.load(Ordering::Relaxed) {
            lp.shutdown(&mut core);
            core.save_memfile();
            return Ok(());
        }
        // Sleep only if nothing is pending: flag, re-check the mesh, then block.
        timeout = if lp.busy(&core) || core.log_staged() {
            Some(Duration::ZERO)
        } else {
            waker.set_sleeping(true);
            if core.poll_mesh() > 0 {
                waker.set_sleeping(false);
                lp.turn(&mut core);
                Some(Duration::ZERO)
            } else if lp.accept_pending.contains(&Accept::Shortage) {
                Some(ACCEPT_RETRY)
            } else {
                Some(
                    core.crawl_wait()
                        .map_or(IDLE_WAIT, |wait| wait.min(IDLE_WAIT)),
                )
            }
        };
    }
}

impl Loop {
    fn busy(&self, core: &Core) -> bool {
        !self.stalled.is_empty()
            || self.udp_readable.contains(&true)
            || core.udp_busy()
            || core.outbox_blocked()
            || core.metadump_runnable()
            || core.log_snapshot_runnable()
            || core.crawl_wait() == Some(Duration::ZERO)
            || self.accept_pending.contains(&Accept::Budget)
    }

    /// Mesh, stalled input, envelopes out (waking sleeping receivers), replies out.
    fn turn(&mut self, core: &mut Core) {
        core.poll_mesh();
        for (i, readable) in self.udp_readable.iter_mut().enumerate() {
            if *readable {
                *readable = core.udp_receive(i);
            }
        }
        let mut stalled = std::mem::take(&mut self.taken);
        self.stalled.take_into(&mut stalled);
        // All reads first, then the parsing, warmed a group ahead as on io_uring: the lookups'
        // cache misses overlap instead of following one another.
        for &idx in &stalled {
            self.fill(core, idx);
        }
        let mut group_ends = std::mem::take(&mut self.group_ends);
        let _ = core.process_warmed(&stalled, &mut group_ends, |core, idx| {
            self.after_io(core, idx);
            Ok::<(), ()>(())
        });
        self.group_ends = group_ends;
        self.taken = stalled;
        core.turn_end();
        core.take_wakes(&mut self.wakes);
        for &to in &self.wakes {
            if let Some(w) = core.mesh().wakers().get(usize::from(to)) {
                w.wake();
            }
        }
        core.take_dirty(&mut self.dirty);
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            self.write(core, idx);
        }
        self.dirty = dirty;
    }

    /// Accepts up to [`ACCEPTS_PER_TURN`] connections from listener `li` and records in
    /// `accept_pending` whether more may be waiting.
    fn accept(&mut self, core: &mut Core, li: usize) -> io::Result<()> {
        let state = self.accept_some(core, li)?;
        if let Some(p) = self.accept_pending.get_mut(li) {
            *p = state;
        }
        let paused = self.accept_pending.contains(&Accept::Shortage);
        self.accept_pause.set(paused, &core.shared.listen);
        Ok(())
    }

    fn accept_some(&mut self, core: &mut Core, li: usize) -> io::Result<Accept> {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listeners.get(li) else {
                return Ok(Accept::Drained);
            };
            let (mut stream, peer, tls) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accept::Drained),
                Err(e) if is_accept_shortage(&e) => return Ok(Accept::Shortage),
                // The failure concerns that one connection; the next may be fine.
                Err(e) if is_connection_accept_error(&e) => continue,
                Err(e) => return Err(e),
            };
            let Some(idx) = core.open(peer, tls, std::os::fd::AsRawFd::as_raw_fd(&stream)) else {
                let _ = stream.write(TOO_MANY_CONNECTIONS);
                continue;
            };
            let token = Token(idx as usize);
            if self
                .poll
                .registry()
                .register(
                    stream.source(),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                core.close(idx);
                continue;
            }
            if self.streams.len() <= idx as usize {
                self.streams.resize_with(idx as usize + 1, || None);
            }
            self.streams[idx as usize] = Some(stream);
        }
        Ok(Accept::Budget)
    }

    /// Reads what the connection may take now into its input buffer, unparsed.
    fn fill(&mut self, core: &mut Core, idx: u32) {
        let mut total = 0;
        while core.wants_read(idx) && core.conn(idx).is_some_and(|c| c.read_ready) {
            let Some(stream) = self.streams.get_mut(idx as usize).and_then(Option::as_mut) else {
                return;
            };
            // The rest of a large request goes straight into the room reserved for it; other
            // input through the scratch buffer, which needs no room kept on the connection.
            let large = core.large_input_rest(idx);
            let n = match large {
                Some(rest) => rest.min(READ_PER_TURN),
                None => core
                    .rbuf_max()
                    .saturating_sub(core.conn(idx).map_or(0, |c| c.rbuf.len()))
                    .min(self.scratch.len()),
            };
            if n == 0 {
                break;
            }
            let (read, direct) = match (large, core.conn_mut(idx)) {
                (Some(_), Some(c)) => (
                    recv_spare(std::os::fd::AsRawFd::as_raw_fd(stream), &mut c.rbuf, n),
                    true,
                ),
                _ => {
                    let scratch = &mut self.scratch;
                    let n = n.min(scratch.len());
                    (stream.read(&mut scratch[..n]), false)
                }
            };
            match read {
                Ok(0) => {
                    if let Some(c) = core.conn_mut(idx) {
                        c.read_ready = false;
                    }
                    core.input_eof(idx);
                    break;
                }
                Ok(got) => {
                    total += got;
                    if direct {
                        core.input_received(got);
                    } else {
                        core.input_only(idx, &self.scratch[..got]);
                    }
                    if got < n && core.conn(idx).is_some_and(|c| !c.read_hup) {
                        // A short read took everything queued: bytes (or a FIN) arriving later
                        // raise a new edge, so reading on would only return EAGAIN, a wasted
                        // syscall per request at pipeline 1. A FIN already reported is read.
                        if let Some(c) = core.conn_mut(idx) {
                            c.read_ready = false;
                        }
                        break;
                    }
                    if total >= READ_PER_TURN {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(c) = core.conn_mut(idx) {
                        c.read_ready = false;
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(core, idx);
                    return;
                }
            }
        }
    }

    /// Notes unfinished work so the next turn comes back to this connection.
    fn after_io(&mut self, core: &mut Core, idx: u32) {
        self.resume_if_waiting(core, idx);
        core.mark_if_pending(idx);
    }

    /// One write of everything the connection has ready.
    fn write(&mut self, core: &mut Core, idx: u32) {
        let Some(stream) = self.streams.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(c) = core.conn_mut(idx) else { return };
        if c.holds_partial() {
            self.resume_if_waiting(core, idx);
            return; // sent with the rest once the slots complete
        }
        c.close_notify_if_finishing();
        // A TLS connection counts the replies it encrypts, a plain one the bytes it writes.
        let mut counted = c.seal();
        let mut written = 0u64;
        let mut failed = false;
        let mut emptied = None;
        while !c.unsent().is_empty() {
            match stream.write(c.unsent()) {
                Ok(0) => break,
                Ok(n) => {
                    emptied = c.advance_sent(n);
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let close = failed || should_close(c);
        counted += c.sent_counted(written);
        core.bytes_written += counted;
        if let Some(buf) = emptied {
            core.give_large_out(buf);
        }
        if close {
            self.drop_conn(core, idx);
            return;
        }
        self.resume_if_waiting(core, idx);
    }

    /// Comes back next turn to a connection whose input waits (unread in the socket, or read
    /// but held back) once it may be taken. Readiness is edge-triggered: no new event reports
    /// input that was already signalled, so whatever unblocks parsing (a write draining the
    /// output, another shard's replies freeing slots, a metadump ending) must requeue the
    /// connection here. Input already read is parsed even when no more may be read (the peer
    /// closed its side, or the read buffer is full).
    fn resume_if_waiting(&mut self, core: &Core, idx: u32) {
        let Some(c) = core.conn(idx) else { return };
        // Paused by a full queue to another shard: nothing reports the queue draining, so
        // come back every turn until it has.
        let read_more = c.read_ready && core.may_read(idx);
        // Input already read but held back (`-R`, the parse budget, a metadump) is parsed even
        // after the peer's FIN, and even with a full read buffer: neither needs another read.
        // (Held back by a full outbox: requeued every turn until it drains, which the loop
        // waits for busily anyway.)
        let parse_more = c.held_back && c.may_parse();
        if read_more || parse_more {
            self.stalled.push(idx);
        }
    }

    fn drop_conn(&mut self, core: &mut Core, idx: u32) {
        if let Some(mut s) = self.streams.get_mut(idx as usize).and_then(Option::take) {
            let _ = self.poll.registry().deregister(s.source());
        }
        self.stalled.remove(idx);
        core.close(idx);
    }

    /// Stop accepting, flush what is queued (bounded), close everything.
    fn shutdown(&mut self, core: &mut Core) {
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l.source());
        }
        self.listeners.clear();
        let deadline = Instant::now() + DRAIN_ON_SHUTDOWN;
        let mut events = Events::with_capacity(256);
        while Instant::now() < deadline {
            let pending: Vec<u32> = core
                .conn_indices()
                .into_iter()
                .filter(|&i| {
                    core.conn(i)
                        .is_some_and(|c| !c.unsent().is_empty() || !c.slots.is_empty())
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            core.poll_mesh();
            core.turn_end();
            for idx in pending {
                self.write(core, idx);
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(10)));
        }
        for idx in core.conn_indices() {
            self.drop_conn(core, idx);
        }
    }
}

/// Accept errors that concern one connection only, not the listener.
fn is_connection_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM)
    )
}
