//! One client thread: its connections, the request schedule, and the poll loop.
//!
//! Each thread owns `connections` nonblocking TCP connections to every server and drives them
//! with an epoll set of its own (level-triggered; a connection asks for writability only while
//! it has output the socket did not take), so a wait costs the same for 1 or 1,000
//! connections and the load generator stays cheaper per request than the server it drives. A request is generated, routed to its key's server, and queued in that server's
//! backlog; from there it goes to the connection with the fewest requests in flight, which never
//! has more than `pipeline` of them.
//!
//! * Closed loop: a new request is generated whenever a connection has room.
//! * Open loop: requests are generated on a fixed schedule (`rate` per second for this thread).
//!   Latency is measured from the *scheduled* time, so time spent waiting in the backlog (because
//!   the server stalled and the pipeline is full) is part of the latency. The backlog is bounded;
//!   a request that finds it full is dropped and counted.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecache::protocol::binary::{opcode, Status};
use corecache::protocol::client::{
    encode_binary_get, encode_binary_noop, encode_binary_set, encode_get, encode_meta_get,
    encode_meta_noop, encode_meta_set, encode_set, meta_flag, parse_binary_reply, parse_reply,
    BinaryReply, MetaCode, Reply, ReplyError,
};

use crate::report::{Op, Stats};
use crate::workload::{KeyDist, KeyFormat, Mix, Rng, ValueSize};

/// The protocol requests are sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `get <key>...` and `set`.
    Text,
    /// `mg <key> v` and `ms`; a multi-get is `mg <key> v k q` per key, then `mn`.
    Meta,
    /// Binary `GET` and `SET`; a multi-get is `GETKQ` per key, then `NOOP`.
    Binary,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Text => "text",
            Protocol::Meta => "meta",
            Protocol::Binary => "binary",
        }
    }
}

/// Everything a client thread needs to know; shared read-only by all threads.
#[derive(Clone, Debug)]
pub struct Plan {
    pub servers: Vec<SocketAddr>,
    pub protocol: Protocol,
    /// Connect over TLS with this configuration (`--tls-ca`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connections: usize,
    pub pipeline: usize,
    /// Requests per second for this thread; 0 means closed loop.
    pub rate_per_thread: f64,
    pub keys: u64,
    pub key_format: KeyFormat,
    pub key_dist: KeyDist,
    pub value_size: ValueSize,
    pub mix: Mix,
    pub multiget: usize,
    pub read_through: bool,
    pub prefill: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    /// Bound on queued, not yet sent requests per server (open loop).
    pub backlog_max: usize,
    pub seed: u64,
}

/// Counters the main thread reads once a second for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub drops: AtomicU64,
    pub keys: AtomicU64,
    pub hits: AtomicU64,
    /// Prefill sets completed, over all threads.
    pub prefill_sets: AtomicU64,
    /// Threads done with their prefill (and connected), waiting for `start`.
    pub ready_threads: AtomicU64,
    /// Set by the main thread once every thread is ready: the measured run begins.
    pub start: AtomicBool,
}

/// A request that has been generated but not sent.
#[derive(Debug)]
struct Pending {
    op: Op,
    keys: Vec<u64>,
    value_len: usize,
    scheduled_ns: u64,
    measured: bool,
    prefill: bool,
    read_through: bool,
}

/// A request on the wire, waiting for its reply.
#[derive(Debug)]
struct InFlight {
    req: Pending,
    sent_ns: u64,
    /// Keys of a get already accounted for (found or passed over).
    matched: usize,
    hits: u64,
    /// An error reply to one key of a meta or binary multi-get, whose reply goes on until its
    /// closing `MN` / `NOOP`: the request's outcome once that arrives.
    error: Option<Outcome>,
}

/// A connection's byte stream: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.sock.as_raw_fd(),
        }
    }

    /// TLS records (or alerts) waiting for the socket to take them.
    fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.conn.wants_write(),
        }
    }

    /// Plaintext already decrypted and not read yet (TLS), which no poll of the socket reports;
    /// true on a TLS error too, so that the next read reports it.
    fn buffered(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s
                .conn
                .process_new_packets()
                .map_or(true, |state| state.plaintext_bytes_to_read() > 0),
        }
    }

    /// Hands waiting TLS records to the socket, as far as it takes them.
    fn flush_tls(&mut self) -> std::io::Result<()> {
        if let Stream::Tls(s) = self {
            while s.conn.wants_write() {
                s.conn.write_tls(&mut s.sock)?;
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            // TLS takes nothing while its own output is over its limit: wait for the socket.
            Stream::Tls(s) => match s.write(buf)? {
                0 if !buf.is_empty() => Err(ErrorKind::WouldBlock.into()),
                n => Ok(n),
            },
        }
    }
}

/// The TLS client configuration for `--tls-ca`: the CA certificates in `path` are trusted.
pub fn tls_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--tls-ca {}: no certificate in it", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `addr`, over TLS when `tls` is given (the handshake completes here, blocking up
/// to [`CONNECT_TIMEOUT`] per step), and leaves the socket nonblocking.
fn open_stream(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<Stream> {
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    sock.set_nodelay(true)?;
    let Some(config) = tls else {
        sock.set_nonblocking(true)?;
        return Ok(Stream::Plain(sock));
    };
    sock.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    sock.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::clone(config), name)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    stream.sock.set_nonblocking(true)?;
    Ok(Stream::Tls(Box::new(stream)))
}

struct Conn {
    server: usize,
    stream: Option<Stream>,
    retry_at_ns: u64,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    inflight: VecDeque<InFlight>,
    /// The epoll set asks for this connection's writability too.
    out_armed: bool,
}

/// A new epoll instance (close-on-exec), owned.
fn new_epoll() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with a constant flag; the result is checked before it is owned.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits up to `wait_ns` on `epoll` with `epoll_pwait2`, or with `epoll_wait` (the wait rounded
/// up to whole milliseconds) once `pwait2` is false or the kernel turns out to lack it; returns
/// how many entries of `events` were filled (0 on a timeout or an interrupted wait).
fn epoll_wait_ns(
    epoll: &OwnedFd,
    events: &mut [libc::epoll_event],
    wait_ns: u64,
    pwait2: &mut bool,
) -> usize {
    let cap = events.len().min(i32::MAX as usize) as libc::c_int;
    if *pwait2 {
        let timeout = libc::timespec {
            tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `events` holds `cap` writable entries and `timeout` is a valid timespec, both
        // live across the call; a null sigmask leaves the mask unchanged.
        let n = unsafe {
            libc::epoll_pwait2(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                cap,
                &timeout,
                std::ptr::null(),
            )
        };
        if n >= 0 {
            return n as usize;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
            return 0;
        }
        *pwait2 = false;
    }
    let ms = wait_ns.div_ceil(1_000_000).min(i32::MAX as u64) as libc::c_int;
    // SAFETY: `events` holds `cap` writable entries that live across the call.
    let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), cap, ms) };
    n.max(0) as usize
}

/// Why a connection was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Disconnect,
    Timeout,
    Protocol,
}

const READ_BUF_LEN_MIN: usize = 64 * 1024;
const READ_BUF_LEN_MAX: usize = 64 * 1024 * 1024;
const POLL_WAIT_MAX: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// Reads per connection per loop turn, so one busy connection cannot starve the others.
const READS_PER_TURN_MAX: usize = 16;

/// Where requests come from in one run of the loop.
enum Source {
    /// Set every key in `next..=last` once.
    Prefill { next: u64, last: u64 },
    /// A new request whenever there is room.
    Closed,
    /// One request every `interval_ns`, starting at `next_ns`.
    Open {
        next_ns: u64,
        interval_ns: f64,
        count: u64,
    },
}

pub struct Client {
    plan: Arc<Plan>,
    index: usize,
    threads: usize,
    conns: Vec<Conn>,
    by_server: Vec<Vec<usize>>,
    backlog: Vec<VecDeque<Pending>>,
    rng: Rng,
    value: Vec<u8>,
    key_scratch: Vec<u8>,
    base: Instant,
    depth: usize,
    warmup_end_ns: u64,
    pub stats: Stats,
    progress: Arc<Progress>,
    flushed: [u64; 6],
    /// The epoll set of this thread's connections; an event's data is the connection's index.
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
    /// `epoll_pwait2` (nanosecond timeouts) is there; without it waits round up to milliseconds.
    pwait2: bool,
    /// Connections with decrypted replies waiting (TLS), found before each poll.
    buffered: Vec<usize>,
}

impl Client {
    pub fn new(
        plan: Arc<Plan>,
        index: usize,
        threads: usize,
        progress: Arc<Progress>,
    ) -> Result<Client, String> {
        let epoll = new_epoll().map_err(|e| format!("epoll: {e}"))?;
        let rbuf_len = (2 * (plan.value_size.max + 512)).max(READ_BUF_LEN_MIN);
        let mut conns = Vec::new();
        let mut by_server = vec![Vec::new(); plan.servers.len()];
        for (server, list) in by_server.iter_mut().enumerate() {
            for _ in 0..plan.connections {
                list.push(conns.len());
                conns.push(Conn {
                    server,
                    stream: None,
                    retry_at_ns: 0,
                    wbuf: Vec::with_capacity(4096),
                    wpos: 0,
                    rbuf: vec![0; rbuf_len],
                    rstart: 0,
                    rend: 0,
                    inflight: VecDeque::with_capacity(plan.pipeline),
                    out_armed: false,
                });
            }
        }
        let seed = plan.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len().clamp(1, 1024)];
        Ok(Client {
            backlog: (0..plan.servers.len()).map(|_| VecDeque::new()).collect(),
            value: vec![b'x'; plan.value_size.max],
            key_scratch: Vec::with_capacity(64),
            rng: Rng::new(seed),
            depth: plan.pipeline,
            warmup_end_ns: 0,
            base: Instant::now(),
            stats: Stats::new(),
            plan,
            index,
            threads,
            conns,
            by_server,
            progress,
            flushed: [0; 6],
            epoll,
            events,
            pwait2: true,
            buffered: Vec::new(),
        })
    }

    /// The whole life of a client thread: connect, prefill its share, wait for the others,
    /// then warm-up and the measured run, then drain.
    pub fn run(mut self) -> Stats {
        for i in 0..self.conns.len() {
            self.connect(i);
        }
        if self.plan.prefill {
            let keys = self.plan.keys;
            let first = keys * self.index as u64 / self.threads as u64 + 1;
            let last = keys * (self.index as u64 + 1) / self.threads as u64;
            self.depth = self.plan.pipeline.max(16);
            self.run_loop(Source::Prefill { next: first, last }, u64::MAX);
            self.depth = self.plan.pipeline;
        }
        self.flush_progress();
        self.progress.ready_threads.fetch_add(1, Ordering::AcqRel);
        while !self.progress.start.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_micros(200));
        }
        let start_ns = self.now_ns();
        self.warmup_end_ns = start_ns + self.plan.warmup.as_nanos() as u64;
        let end_ns = self.warmup_end_ns + self.plan.duration.as_nanos() as u64;
        let source = if self.plan.rate_per_thread > 0.0 {
            Source::Open {
                next_ns: start_ns,
                interval_ns: 1e9 / self.plan.rate_per_thread,
                count: 0,
            }
        } else {
            Source::Closed
        };
        self.run_loop(source, end_ns);
        self.stats.measured_ns = self.plan.duration.as_nanos() as u64;
        self.flush_progress();
        self.stats
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Generates, sends and completes requests until `end_ns` (or the prefill is done), then
    /// drains what is in flight.
    fn run_loop(&mut self, mut source: Source, end_ns: u64) {
        // The prefill has no end time: give up when nothing completes for a whole timeout
        // (server unreachable), so the run cannot hang. The failures are already counted.
        let stall_ns = self.plan.timeout.as_nanos() as u64;
        let mut completed = self.stats.wire_gets + self.stats.wire_sets;
        let mut completed_at_ns = self.now_ns();
        loop {
            let now = self.now_ns();
            if now >= end_ns {
                break;
            }
            let completed_now = self.stats.wire_gets + self.stats.wire_sets;
            if completed_now != completed {
                completed = completed_now;
                completed_at_ns = now;
            } else if matches!(source, Source::Prefill { .. })
                && now.saturating_sub(completed_at_ns) > stall_ns
            {
                self.stats.prefill_abandoned = true;
                break;
            }
            self.reconnect_due(now);
            let done = self.generate(&mut source, now);
            if done && self.inflight_total() == 0 {
                break;
            }
            self.flush_writes();
            let wait = self.wait_ns(&source, now, end_ns);
            self.poll(wait);
            self.check_timeouts();
            self.flush_progress();
        }
        self.drain();
    }

    /// Stop generating; wait (bounded) for the replies to what was sent.
    fn drain(&mut self) {
        for queue in &mut self.backlog {
            self.stats.unsent_at_end += queue.len() as u64;
            queue.clear();
        }
        let deadline = self.now_ns() + self.plan.timeout.as_nanos() as u64;
        while self.inflight_total() > 0 && self.now_ns() < deadline {
            self.flush_writes();
            self.poll(POLL_WAIT_MAX.as_nanos() as u64);
            self.check_timeouts();
            self.flush_progress();
        }
        for i in 0..self.conns.len() {
            if !self.conns[i].inflight.is_empty() {
                self.fail(i, Failure::Timeout);
            }
        }
        // Read-through sets queued by the last replies are never sent.
        for queue in &mut self.backlog {
            self.stats.unsent_at_end += queue.len() as u64;
            queue.clear();
        }
    }

    fn inflight_total(&self) -> usize {
        self.conns.iter().map(|c| c.inflight.len()).sum()
    }

    fn wait_ns(&self, source: &Source, now: u64, end_ns: u64) -> u64 {
        let mut wait = (POLL_WAIT_MAX.as_nanos() as u64).min(end_ns.saturating_sub(now));
        if let Source::Open { next_ns, .. } = source {
            wait = wait.min(next_ns.saturating_sub(now));
        }
        wait
    }

    /// Queues new requests as the source allows and sends what fits. Returns true when the
    /// source has nothing more to give.
    fn generate(&mut self, source: &mut Source, now: u64) -> bool {
        self.dispatch_all(now);
        match source {
            Source::Prefill { next, last } => {
                while *next <= *last && self.backlog_empty() && self.has_room_anywhere() {
                    let value_len = self.plan.value_size.sample(&mut self.rng);
                    let req = Pending {
                        op: Op::Set,
                        keys: vec![*next],
                        value_len,
                        scheduled_ns: now,
                        measured: false,
                        prefill: true,
                        read_through: false,
                    };
                    *next += 1;
                    self.enqueue(req, now);
                }
                *next > *last
            }
            Source::Closed => {
                // At most one request can be stuck waiting (its server's connections are full).
                while self.backlog_empty() && self.has_room_anywhere() {
                    let req = self.new_request(now);
                    self.enqueue(req, now);
                }
                false
            }
            Source::Open {
                next_ns,
                interval_ns,
                count,
            } => {
                let start = *next_ns as f64 - *count as f64 * *interval_ns;
                while *next_ns <= now {
                    let scheduled = *next_ns;
                    *count += 1;
                    *next_ns = (start + *count as f64 * *interval_ns) as u64;
                    let req = self.new_request(scheduled);
                    let server = self.server_of(&req);
                    if self.backlog[server].len() >= self.plan.backlog_max {
                        self.stats.drops += 1;
                        continue;
                    }
                    self.enqueue(req, now);
                }
                false
            }
        }
    }

    fn backlog_empty(&self) -> bool {
        self.backlog.iter().all(|q| q.is_empty())
    }

    fn has_room_anywhere(&self) -> bool {
        self.conns
            .iter()
            .any(|c| c.stream.is_some() && c.inflight.len() < self.depth)
    }

    /// A fresh get, multi-get or set drawn from the workload.
    fn new_request(&mut self, scheduled_ns: u64) -> Pending {
        let plan = Arc::clone(&self.plan);
        let first = plan.key_dist.sample(&mut self.rng);
        let measured = scheduled_ns >= self.warmup_end_ns;
        if plan.mix.is_get(&mut self.rng) {
            let mut keys = Vec::with_capacity(plan.multiget);
            keys.push(first);
            let servers = plan.servers.len();
            let server = plan
                .key_format
                .server_of(&mut self.key_scratch, first, servers);
            // Every key of one multi-get must live on the same server: draw from the
            // distribution restricted to that server (bounded tries).
            let mut tries = 0;
            while keys.len() < plan.multiget && tries < 64 * plan.multiget * servers {
                tries += 1;
                let k = plan.key_dist.sample(&mut self.rng);
                if plan.key_format.server_of(&mut self.key_scratch, k, servers) == server {
                    keys.push(k);
                }
            }
            let op = if plan.multiget > 1 {
                Op::MultiGet
            } else {
                Op::Get
            };
            Pending {
                op,
                keys,
                value_len: 0,
                scheduled_ns,
                measured,
                prefill: false,
                read_through: false,
            }
        } else {
            Pending {
                op: Op::Set,
                keys: vec![first],
                value_len: plan.value_size.sample(&mut self.rng),
                scheduled_ns,
                measured,
                prefill: false,
                read_through: false,
            }
        }
    }

    fn server_of(&mut self, req: &Pending) -> usize {
        let first = req.keys.first().copied().unwrap_or(1);
        let servers = self.plan.servers.len();
        self.plan
            .key_format
            .server_of(&mut self.key_scratch, first, servers)
    }

    fn enqueue(&mut self, req: Pending, now: u64) {
        let server = self.server_of(&req);
        self.backlog[server].push_back(req);
        self.dispatch(server, now);
    }

    fn dispatch_all(&mut self, now: u64) {
        for server in 0..self.backlog.len() {
            self.dispatch(server, now);
        }
    }

    /// Moves requests from the server's backlog to its least-loaded connections.
    fn dispatch(&mut self, server: usize, now: u64) {
        while !self.backlog[server].is_empty() {
            let best = self.by_server[server]
                .iter()
                .copied()
                .filter(|&i| self.conns[i].stream.is_some())
                .min_by_key(|&i| self.conns[i].inflight.len());
            let Some(i) = best else { return };
            if self.conns[i].inflight.len() >= self.depth {
                return;
            }
            let Some(req) = self.backlog[server].pop_front() else {
                return;
            };
            self.send(i, req, now);
        }
    }

    fn send(&mut self, i: usize, req: Pending, now: u64) {
        let plan = &self.plan;
        let conn = &mut self.conns[i];
        debug_assert!(conn.inflight.len() < self.depth);
        let out = &mut conn.wbuf;
        let mut key = std::mem::take(&mut self.key_scratch);
        match req.op {
            Op::Get | Op::MultiGet => {
                key.clear();
                let mut starts = Vec::with_capacity(req.keys.len() + 1);
                for &k in &req.keys {
                    starts.push(key.len());
                    plan.key_format.push(&mut key, k);
                }
                starts.push(key.len());
                let keys = starts.windows(2).map(|w| &key[w[0]..w[1]]);
                let multi = req.op == Op::MultiGet;
                match plan.protocol {
                    Protocol::Text => encode_get(out, keys),
                    Protocol::Meta if multi => {
                        keys.for_each(|k| encode_meta_get(out, k, b"v k q"));
                        encode_meta_noop(out);
                    }
                    Protocol::Meta => keys.for_each(|k| encode_meta_get(out, k, b"v")),
                    Protocol::Binary if multi => {
                        keys.for_each(|k| encode_binary_get(out, opcode::GETKQ, k, 0));
                        encode_binary_noop(out, 0);
                    }
                    Protocol::Binary => {
                        keys.for_each(|k| encode_binary_get(out, opcode::GET, k, 0));
                    }
                }
            }
            Op::Set => {
                key.clear();
                plan.key_format
                    .push(&mut key, req.keys.first().copied().unwrap_or(1));
                let value = &self.value[..req.value_len];
                match plan.protocol {
                    Protocol::Text => encode_set(out, &key, 0, 0, value, false),
                    Protocol::Meta => encode_meta_set(out, &key, 0, 0, value),
                    Protocol::Binary => encode_binary_set(out, &key, 0, 0, value, 0),
                }
            }
        }
        self.key_scratch = key;
        conn.inflight.push_back(InFlight {
            req,
            sent_ns: now,
            matched: 0,
            hits: 0,
            error: None,
        });
    }

    fn flush_writes(&mut self) {
        for i in 0..self.conns.len() {
            if self.conns[i].wpos < self.conns[i].wbuf.len() {
                self.write_some(i);
            }
        }
    }

    fn write_some(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        match stream.flush_tls() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => return self.fail(i, Failure::Disconnect),
        }
        while conn.wpos < conn.wbuf.len() {
            match stream.write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => return self.fail(i, Failure::Disconnect),
                Ok(n) => conn.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, Failure::Disconnect),
            }
        }
        conn.wbuf.clear();
        conn.wpos = 0;
    }

    /// Adds, changes or removes connection `i`'s descriptor in the epoll set.
    fn epoll_ctl(&self, op: libc::c_int, i: usize, fd: std::os::fd::RawFd, out: bool) -> bool {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32
                | if out { libc::EPOLLOUT as u32 } else { 0 },
            u64: i as u64,
        };
        // SAFETY: both descriptors are open (the connection's stream owns `fd`) and `ev` is a
        // valid epoll_event for the call.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) == 0 }
    }

    /// Waits up to `wait_ns` for readiness, then writes and reads the connections that have it.
    fn poll(&mut self, wait_ns: u64) {
        // Writability is asked for only while there is output the socket did not take.
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            let Some(stream) = conn.stream.as_ref() else {
                continue;
            };
            let want = conn.wpos < conn.wbuf.len() || stream.wants_write();
            if want != conn.out_armed {
                let fd = stream.as_raw_fd();
                if self.epoll_ctl(libc::EPOLL_CTL_MOD, i, fd, want) {
                    self.conns[i].out_armed = want;
                }
            }
        }
        // Replies a TLS session holds decrypted already: no poll would report them, so they
        // are read now and the wait below only looks.
        let mut buffered = std::mem::take(&mut self.buffered);
        buffered.clear();
        if self.plan.tls.is_some() {
            for (i, conn) in self.conns.iter_mut().enumerate() {
                if conn.stream.as_mut().is_some_and(Stream::buffered) {
                    buffered.push(i);
                }
            }
        }
        let wait_ns = if buffered.is_empty() { wait_ns } else { 0 };
        let mut events = std::mem::take(&mut self.events);
        let ready = epoll_wait_ns(&self.epoll, &mut events, wait_ns, &mut self.pwait2);
        for ev in events.iter().take(ready) {
            let (flags, i) = (ev.events, ev.u64 as usize);
            if i >= self.conns.len() {
                continue;
            }
            if flags & libc::EPOLLOUT as u32 != 0 {
                self.write_some(i);
            }
            let readable = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR;
            if flags & readable as u32 != 0 {
                self.read_some(i);
            }
        }
        for &i in &buffered {
            self.read_some(i);
        }
        self.events = events;
        self.buffered = buffered;
    }

    fn read_some(&mut self, i: usize) {
        for _ in 0..READS_PER_TURN_MAX {
            let conn = &mut self.conns[i];
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            if conn.rend == conn.rbuf.len() {
                if conn.rstart > 0 {
                    conn.rbuf.copy_within(conn.rstart..conn.rend, 0);
                    conn.rend -= conn.rstart;
                    conn.rstart = 0;
                } else if conn.rbuf.len() < READ_BUF_LEN_MAX {
                    let len = conn.rbuf.len() * 2;
                    conn.rbuf.resize(len, 0);
                } else {
                    return self.fail(i, Failure::Protocol);
                }
            }
            let room = conn.rbuf.len() - conn.rend;
            match stream.read(&mut conn.rbuf[conn.rend..]) {
                Ok(0) => return self.fail(i, Failure::Disconnect),
                Ok(n) => {
                    conn.rend += n;
                    if !self.parse_replies(i) {
                        return self.fail(i, Failure::Protocol);
                    }
                    // A short read drained the socket: the next poll reports anything newer,
                    // so a second read here would only return EAGAIN (a wasted syscall).
                    if n < room {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, Failure::Disconnect),
            }
        }
    }

    /// Consumes every complete reply element in the read buffer. False on a protocol error.
    fn parse_replies(&mut self, i: usize) -> bool {
        let now = self.now_ns();
        let protocol = self.plan.protocol;
        let mut misses = Vec::new();
        loop {
            let conn = &mut self.conns[i];
            let (done, used) = {
                let buf = &conn.rbuf[conn.rstart..conn.rend];
                let Some(head) = conn.inflight.front_mut() else {
                    // Bytes nobody asked for.
                    return buf.is_empty();
                };
                let (element, used) = match next_element(protocol, head.req.op, buf) {
                    Ok(ok) => ok,
                    Err(ReplyError::Incomplete) => break,
                    Err(ReplyError::Invalid) => return false,
                };
                match apply(
                    head,
                    element,
                    &self.plan.key_format,
                    &mut self.key_scratch,
                    &mut misses,
                ) {
                    Some(done) => (done, used),
                    None => return false,
                }
            };
            conn.rstart += used;
            if conn.rstart == conn.rend {
                conn.rstart = 0;
                conn.rend = 0;
            }
            if let Some(outcome) = done {
                if let Some(finished) = self.conns[i].inflight.pop_front() {
                    self.complete(finished, outcome, now, &mut misses);
                }
            }
        }
        true
    }

    fn complete(&mut self, f: InFlight, outcome: Outcome, now: u64, misses: &mut Vec<u64>) {
        let latency = now.saturating_sub(f.req.scheduled_ns);
        let keys = f.req.keys.len() as u64;
        match f.req.op {
            Op::Get | Op::MultiGet => {
                self.stats.wire_gets += 1;
                self.stats.wire_keys += keys;
                self.stats.wire_hits += f.hits;
            }
            Op::Set => {
                self.stats.wire_sets += 1;
                if f.req.prefill {
                    self.stats.prefill_sets += 1;
                }
                if f.req.read_through {
                    self.stats.read_through_sets += 1;
                }
            }
        }
        match outcome {
            Outcome::Ok => {}
            Outcome::Error => self.stats.error_replies += 1,
            Outcome::ClientError => self.stats.client_errors += 1,
            Outcome::ServerError => self.stats.server_errors += 1,
            Outcome::Unexpected => self.stats.unexpected_replies += 1,
        }
        if f.req.measured {
            let ok = outcome == Outcome::Ok;
            self.stats.record(f.req.op, latency, ok);
            if matches!(f.req.op, Op::Get | Op::MultiGet) {
                self.stats.measured_keys += keys;
                self.stats.measured_hits += f.hits;
            }
        }
        if self.plan.read_through && outcome == Outcome::Ok {
            for key in misses.drain(..) {
                let req = Pending {
                    op: Op::Set,
                    keys: vec![key],
                    value_len: self.plan.value_size.sample(&mut self.rng),
                    scheduled_ns: now,
                    measured: f.req.measured,
                    prefill: false,
                    read_through: true,
                };
                let server = self.server_of(&req);
                self.backlog[server].push_back(req);
            }
        }
        misses.clear();
    }

    /// Drops a connection: everything in flight on it counts as failed.
    fn fail(&mut self, i: usize, why: Failure) {
        let now = self.now_ns();
        let conn = &mut self.conns[i];
        let lost = conn.inflight.len() as u64;
        for f in conn.inflight.drain(..) {
            if f.req.measured {
                self.stats
                    .record(f.req.op, now.saturating_sub(f.req.scheduled_ns), false);
            }
        }
        match why {
            Failure::Disconnect => self.stats.disconnects += 1,
            Failure::Timeout => self.stats.timeouts += lost.max(1),
            Failure::Protocol => self.stats.protocol_errors += 1,
        }
        self.stats.lost_in_flight += lost;
        if let Some(stream) = conn.stream.take() {
            // Closing the descriptor would drop it from the set too; this says so explicitly.
            let fd = stream.as_raw_fd();
            let _ = self.epoll_ctl(libc::EPOLL_CTL_DEL, i, fd, false);
        }
        let conn = &mut self.conns[i];
        conn.out_armed = false;
        conn.wbuf.clear();
        conn.wpos = 0;
        conn.rstart = 0;
        conn.rend = 0;
        conn.retry_at_ns = now + RECONNECT_DELAY.as_nanos() as u64;
    }

    fn check_timeouts(&mut self) {
        let now = self.now_ns();
        let timeout = self.plan.timeout.as_nanos() as u64;
        for i in 0..self.conns.len() {
            let expired = self.conns[i]
                .inflight
                .front()
                .is_some_and(|f| now.saturating_sub(f.sent_ns) > timeout);
            if expired {
                self.fail(i, Failure::Timeout);
            }
        }
    }

    fn reconnect_due(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            if self.conns[i].stream.is_none() && self.conns[i].retry_at_ns <= now {
                self.connect(i);
            }
        }
    }

    fn connect(&mut self, i: usize) {
        let addr = self.plan.servers[self.conns[i].server];
        match open_stream(addr, self.plan.tls.as_ref()) {
            Ok(stream) => {
                if self.epoll_ctl(libc::EPOLL_CTL_ADD, i, stream.as_raw_fd(), false) {
                    self.conns[i].stream = Some(stream);
                    self.conns[i].out_armed = false;
                } else {
                    self.stats.connect_failures += 1;
                    self.conns[i].retry_at_ns = self.now_ns() + RECONNECT_DELAY.as_nanos() as u64;
                }
            }
            Err(_) => {
                self.stats.connect_failures += 1;
                self.conns[i].retry_at_ns = self.now_ns() + RECONNECT_DELAY.as_nanos() as u64;
            }
        }
    }

    /// Publishes this thread's counters for the progress line.
    fn flush_progress(&mut self) {
        let s = &self.stats;
        let now = [
            s.wire_gets + s.wire_sets,
            s.error_total(),
            s.drops,
            s.measured_keys,
            s.measured_hits,
            s.prefill_sets,
        ];
        let p = &self.progress;
        let counters = [
            &p.ops,
            &p.errors,
            &p.drops,
            &p.keys,
            &p.hits,
            &p.prefill_sets,
        ];
        for ((counter, value), seen) in counters.iter().zip(now).zip(self.flushed) {
            if value != seen {
                counter.fetch_add(value - seen, Ordering::Relaxed);
            }
        }
        self.flushed = now;
    }
}

/// How a finished request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error,
    ClientError,
    ServerError,
    /// A reply that is valid but not what the request asks for (e.g. NOT_STORED to a set).
    Unexpected,
}

/// One reply element in protocol-neutral terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element<'a> {
    /// A value for one key of a get: the key when the reply names it, `None` for the next key
    /// asked for. `last`: the value is the whole reply (a single-key meta or binary get).
    Hit { key: Option<&'a [u8]>, last: bool },
    /// The end of a get's reply; keys not matched by then were misses.
    End,
    /// A set's success.
    Stored,
    /// A valid reply that is not what the request asks for (e.g. NOT_STORED to a set).
    Unexpected,
    /// An error reply; `last` unless more of the same request's reply follows (one key of a
    /// meta or binary multi-get).
    Failed { outcome: Outcome, last: bool },
}

/// Takes the next reply element for a request of kind `op` sent in `protocol`.
fn next_element(
    protocol: Protocol,
    op: Op,
    buf: &[u8],
) -> Result<(Element<'_>, usize), ReplyError> {
    let multi = op == Op::MultiGet;
    // Errors to one key of a quiet multi-get do not end its reply: the closing MN/NOOP does.
    let failed = |outcome| Element::Failed {
        outcome,
        last: !(multi && protocol != Protocol::Text),
    };
    if protocol == Protocol::Binary {
        let (reply, used) = parse_binary_reply(buf)?;
        return binary_element(op, &reply, failed).map(|e| (e, used));
    }
    let (reply, used) = parse_reply(buf)?;
    let element = match (reply, op, protocol) {
        (Reply::Error, ..) => failed(Outcome::Error),
        (Reply::ClientError(_), ..) => failed(Outcome::ClientError),
        (Reply::ServerError(_), ..) => failed(Outcome::ServerError),
        (Reply::Value { key, .. }, Op::Get | Op::MultiGet, Protocol::Text) => Element::Hit {
            key: Some(key),
            last: false,
        },
        (Reply::End, Op::Get | Op::MultiGet, Protocol::Text) => Element::End,
        (Reply::Stored, Op::Set, Protocol::Text) => Element::Stored,
        (Reply::NotStored | Reply::Exists | Reply::NotFound, Op::Set, Protocol::Text) => {
            Element::Unexpected
        }
        (Reply::MetaValue { flags, .. }, Op::MultiGet, Protocol::Meta) => Element::Hit {
            // Misses are silent, so a hit must say which key it is.
            key: Some(meta_flag(flags, b'k').ok_or(ReplyError::Invalid)?),
            last: false,
        },
        (Reply::MetaNoop, Op::MultiGet, Protocol::Meta) => Element::End,
        (Reply::MetaValue { .. }, Op::Get, Protocol::Meta) => Element::Hit {
            key: None,
            last: true,
        },
        (
            Reply::Meta {
                code: MetaCode::En, ..
            },
            Op::Get,
            Protocol::Meta,
        ) => Element::End,
        (Reply::Meta { code, .. }, Op::Set, Protocol::Meta) => match code {
            MetaCode::Hd => Element::Stored,
            MetaCode::Ns | MetaCode::Ex | MetaCode::Nf => Element::Unexpected,
            MetaCode::En => return Err(ReplyError::Invalid),
        },
        _ => return Err(ReplyError::Invalid),
    };
    Ok((element, used))
}

/// The element a binary response packet is for a request of kind `op`.
fn binary_element<'a>(
    op: Op,
    reply: &BinaryReply<'a>,
    failed: impl Fn(Outcome) -> Element<'a>,
) -> Result<Element<'a>, ReplyError> {
    let status = reply.status;
    let ok = status == Status::Success.code();
    let outcome = if status == Status::UnknownCommand.code() {
        Outcome::Error
    } else if [
        Status::InvalidArguments,
        Status::NonNumeric,
        Status::AuthError,
    ]
    .iter()
    .any(|s| s.code() == status)
    {
        Outcome::ClientError
    } else {
        Outcome::ServerError
    };
    let element = match (op, reply.opcode) {
        (Op::Get, opcode::GET) if ok => Element::Hit {
            key: None,
            last: true,
        },
        (Op::Get, opcode::GET) if status == Status::KeyNotFound.code() => Element::End,
        (Op::MultiGet, opcode::GETKQ) if ok => Element::Hit {
            key: Some(reply.key),
            last: false,
        },
        // A quiet get answers no miss; any other status is an error for that key.
        (Op::MultiGet, opcode::GETKQ) if status != Status::KeyNotFound.code() => failed(outcome),
        (Op::MultiGet, opcode::NOOP) if ok => Element::End,
        (Op::Set, opcode::SET) if ok => Element::Stored,
        (Op::Set, opcode::SET)
            if [Status::KeyExists, Status::NotStored, Status::KeyNotFound]
                .iter()
                .any(|s| s.code() == status) =>
        {
            Element::Unexpected
        }
        (Op::Get, opcode::GET) | (Op::Set, opcode::SET) => failed(outcome),
        // A server that cannot parse a frame may answer with an opcode it did not get.
        (_, _) if !ok && status != Status::KeyNotFound.code() => failed(outcome),
        _ => return Err(ReplyError::Invalid),
    };
    Ok(element)
}

/// Applies one reply element to the request at the head of the pipeline. `None`: protocol
/// error. `Some(None)`: the request needs more elements. `Some(Some(outcome))`: it is complete;
/// for a get, `misses` then holds the keys that were not found.
fn apply(
    head: &mut InFlight,
    element: Element<'_>,
    format: &KeyFormat,
    scratch: &mut Vec<u8>,
    misses: &mut Vec<u64>,
) -> Option<Option<Outcome>> {
    let is_get = matches!(head.req.op, Op::Get | Op::MultiGet);
    match element {
        Element::Failed { outcome, last } => {
            if !last {
                head.error.get_or_insert(outcome);
                return Some(None);
            }
            Some(Some(outcome))
        }
        Element::Hit { key, last } if is_get => {
            // Values come back in request order; keys passed over were misses.
            let keys = &head.req.keys;
            let at = match key {
                None => 0,
                Some(key) => keys.iter().skip(head.matched).position(|&k| {
                    scratch.clear();
                    format.push(scratch, k);
                    scratch.as_slice() == key
                })?,
            };
            let found = head.matched + at;
            if found >= keys.len() {
                return None;
            }
            misses.extend_from_slice(&keys[head.matched..found]);
            head.matched = found + 1;
            head.hits += 1;
            if last {
                misses.extend_from_slice(&keys[head.matched..]);
                head.matched = keys.len();
                return Some(Some(head.error.unwrap_or(Outcome::Ok)));
            }
            Some(None)
        }
        Element::End if is_get => {
            misses.extend_from_slice(&head.req.keys[head.matched..]);
            head.matched = head.req.keys.len();
            Some(Some(head.error.unwrap_or(Outcome::Ok)))
        }
        Element::Stored if !is_get => Some(Some(Outcome::Ok)),
        Element::Unexpected if !is_get => Some(Some(Outcome::Unexpected)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecache::protocol::binary;
    use std::os::unix::net::UnixStream;

    /// Feeds `reply` to a request of kind `op` for key numbers `keys`: the outcome once the
    /// request completes (`None`: still waiting; `Err`: protocol error), its hits, its misses,
    /// and the bytes left over.
    fn feed(
        protocol: Protocol,
        op: Op,
        keys: &[u64],
        reply: &[u8],
    ) -> (Result<Option<Outcome>, ()>, u64, Vec<u64>, usize) {
        let format = KeyFormat::new("key:", 1000);
        let mut head = InFlight {
            req: Pending {
                op,
                keys: keys.to_vec(),
                value_len: 0,
                scheduled_ns: 0,
                measured: true,
                prefill: false,
                read_through: false,
            },
            sent_ns: 0,
            matched: 0,
            hits: 0,
            error: None,
        };
        let (mut scratch, mut misses, mut at) = (Vec::new(), Vec::new(), 0);
        loop {
            let (element, used) = match next_element(protocol, op, &reply[at..]) {
                Ok(ok) => ok,
                Err(ReplyError::Incomplete) => {
                    return (Ok(None), head.hits, misses, reply.len() - at)
                }
                Err(ReplyError::Invalid) => return (Err(()), head.hits, misses, reply.len() - at),
            };
            at += used;
            match apply(&mut head, element, &format, &mut scratch, &mut misses) {
                None => return (Err(()), head.hits, misses, reply.len() - at),
                Some(Some(outcome)) => {
                    return (Ok(Some(outcome)), head.hits, misses, reply.len() - at)
                }
                Some(None) => {}
            }
        }
    }

    fn bin(op: u8, status: binary::Status, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let extras: &[u8] =
            if status == binary::Status::Success && op != opcode::SET && op != opcode::NOOP {
                &[0, 0, 0, 0]
            } else {
                &[]
            };
        let value = if status == binary::Status::Success {
            value
        } else {
            status.message()
        };
        binary::response(&mut out, op, status, 0, 1, extras, key, value);
        out
    }

    const OK: Result<Option<Outcome>, ()> = Ok(Some(Outcome::Ok));

    #[test]
    fn text_replies_complete_requests() {
        let t = Protocol::Text;
        let r = feed(
            t,
            Op::MultiGet,
            &[1, 2, 3],
            b"VALUE key:0000002 0 1\r\nx\r\nEND\r\nSTORED\r\n",
        );
        assert_eq!(r, (OK, 1, vec![1, 3], 8));
        assert_eq!(feed(t, Op::Get, &[1], b"END\r\n"), (OK, 0, vec![1], 0));
        assert_eq!(feed(t, Op::Set, &[1], b"STORED\r\n"), (OK, 0, vec![], 0));
        assert_eq!(
            feed(t, Op::Set, &[1], b"NOT_STORED\r\n").0,
            Ok(Some(Outcome::Unexpected))
        );
        assert_eq!(
            feed(t, Op::MultiGet, &[1, 2], b"CLIENT_ERROR bad\r\n").0,
            Ok(Some(Outcome::ClientError))
        );
        // A value for a key not asked for, a reply of the wrong kind, a meta reply.
        assert_eq!(
            feed(t, Op::Get, &[1], b"VALUE key:0000009 0 1\r\nx\r\n").0,
            Err(())
        );
        assert_eq!(feed(t, Op::Get, &[1], b"STORED\r\n").0, Err(()));
        assert_eq!(feed(t, Op::Get, &[1], b"EN\r\n").0, Err(()));
        assert_eq!(
            feed(t, Op::Get, &[1], b"VALUE key:0000001 0 1\r\nx").0,
            Ok(None)
        );
    }

    #[test]
    fn meta_replies_complete_requests() {
        let m = Protocol::Meta;
        assert_eq!(
            feed(m, Op::Get, &[1], b"VA 1\r\nx\r\nHD\r\n"),
            (OK, 1, vec![], 4)
        );
        assert_eq!(feed(m, Op::Get, &[1], b"EN\r\n"), (OK, 0, vec![1], 0));
        // Quiet multi-get: hits name their key, misses are silent, MN closes.
        let r = feed(
            m,
            Op::MultiGet,
            &[1, 2, 3],
            b"VA 1 kkey:0000002\r\nx\r\nMN\r\n",
        );
        assert_eq!(r, (OK, 1, vec![1, 3], 0));
        let r = feed(
            m,
            Op::MultiGet,
            &[1, 2],
            b"VA 1 kkey:0000001\r\nx\r\nVA 2 kkey:0000002\r\nxy\r\nMN\r\n",
        );
        assert_eq!(r, (OK, 2, vec![], 0));
        // An error for one key does not end the multi-get; it is its outcome at MN.
        let r = feed(
            m,
            Op::MultiGet,
            &[1, 2],
            b"CLIENT_ERROR bad command line format\r\nVA 1 kkey:0000002\r\nx\r\nMN\r\n",
        );
        assert_eq!(r, (Ok(Some(Outcome::ClientError)), 1, vec![1], 0));
        assert_eq!(feed(m, Op::Set, &[1], b"HD\r\n"), (OK, 0, vec![], 0));
        assert_eq!(
            feed(m, Op::Set, &[1], b"NS\r\n").0,
            Ok(Some(Outcome::Unexpected))
        );
        assert_eq!(
            feed(m, Op::Set, &[1], b"SERVER_ERROR out of memory\r\n").0,
            Ok(Some(Outcome::ServerError))
        );
        assert_eq!(
            feed(m, Op::Get, &[1], b"ERROR\r\n").0,
            Ok(Some(Outcome::Error))
        );
        // A quiet hit without its key, a text reply, a miss where misses are silent.
        assert_eq!(feed(m, Op::MultiGet, &[1, 2], b"VA 1\r\nx\r\n").0, Err(()));
        assert_eq!(feed(m, Op::Get, &[1], b"END\r\n").0, Err(()));
        assert_eq!(feed(m, Op::MultiGet, &[1, 2], b"EN\r\n").0, Err(()));
        assert_eq!(feed(m, Op::Set, &[1], b"STORED\r\n").0, Err(()));
    }

    #[test]
    fn binary_replies_complete_requests() {
        use binary::Status as S;
        let b = Protocol::Binary;
        let hit = bin(opcode::GET, S::Success, b"", b"x");
        assert_eq!(feed(b, Op::Get, &[1], &hit), (OK, 1, vec![], 0));
        let miss = bin(opcode::GET, S::KeyNotFound, b"", b"");
        assert_eq!(feed(b, Op::Get, &[1], &miss), (OK, 0, vec![1], 0));
        let mut multi = bin(opcode::GETKQ, S::Success, b"key:0000003", b"x");
        multi.extend(bin(opcode::NOOP, S::Success, b"", b""));
        assert_eq!(
            feed(b, Op::MultiGet, &[1, 2, 3], &multi),
            (OK, 1, vec![1, 2], 0)
        );
        let mut err = bin(opcode::GETKQ, S::InvalidArguments, b"", b"");
        err.extend(bin(opcode::NOOP, S::Success, b"", b""));
        assert_eq!(
            feed(b, Op::MultiGet, &[1], &err),
            (Ok(Some(Outcome::ClientError)), 0, vec![1], 0)
        );
        assert_eq!(
            feed(b, Op::Set, &[1], &bin(opcode::SET, S::Success, b"", b"")),
            (OK, 0, vec![], 0)
        );
        assert_eq!(
            feed(b, Op::Set, &[1], &bin(opcode::SET, S::NotStored, b"", b"")).0,
            Ok(Some(Outcome::Unexpected))
        );
        assert_eq!(
            feed(b, Op::Set, &[1], &bin(opcode::SET, S::TooLarge, b"", b"")).0,
            Ok(Some(Outcome::ServerError))
        );
        assert_eq!(
            feed(b, Op::Get, &[1], &bin(0x55, S::UnknownCommand, b"", b"")).0,
            Ok(Some(Outcome::Error))
        );
        // A hit for a key not asked for, a miss where misses are silent, a reply of the wrong
        // kind, a text reply.
        assert_eq!(
            feed(
                b,
                Op::MultiGet,
                &[1],
                &bin(opcode::GETKQ, S::Success, b"key:0000009", b"x")
            )
            .0,
            Err(())
        );
        assert_eq!(
            feed(
                b,
                Op::MultiGet,
                &[1],
                &bin(opcode::GETKQ, S::KeyNotFound, b"", b"")
            )
            .0,
            Err(())
        );
        assert_eq!(
            feed(b, Op::Get, &[1], &bin(opcode::SET, S::Success, b"", b"")).0,
            Err(())
        );
        assert_eq!(feed(b, Op::Get, &[1], b"END\r\n").0, Err(()));
        let cut = &hit[..hit.len() - 1];
        assert_eq!(feed(b, Op::Get, &[1], cut).0, Ok(None));
    }

    /// Both wait paths report a ready descriptor with its data and time out on a quiet one.
    #[test]
    fn epoll_waits_report_readiness_and_time_out() {
        for mut pwait2 in [true, false] {
            let epoll = new_epoll().unwrap();
            let fd = epoll.as_raw_fd();
            let (mut a, b) = UnixStream::pair().unwrap();
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 7,
            };
            // SAFETY: both descriptors are open and `ev` is valid for the call.
            let added = unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, b.as_raw_fd(), &mut ev) };
            assert_eq!(added, 0);
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 4];
            let quiet = epoll_wait_ns(&epoll, &mut events, 1_000_000, &mut pwait2);
            assert_eq!(quiet, 0, "pwait2 {pwait2}");
            a.write_all(b"x").unwrap();
            let ready = epoll_wait_ns(&epoll, &mut events, 1_000_000_000, &mut pwait2);
            assert_eq!(ready, 1, "pwait2 {pwait2}");
            let (flags, data) = (events[0].events, events[0].u64);
            assert_eq!(data, 7);
            assert_ne!(flags & libc::EPOLLIN as u32, 0);
        }
    }
}
