//! The runtime: the only place with threads, sockets, rings and timers.
//!
//! One executor thread per shard, pinned to its cpu, each running its own run-to-completion
//! event loop over its own listeners (SO_REUSEPORT TCP sockets, or a duplicate of the one UNIX
//! socket), the connections they accept, and its own SO_REUSEPORT UDP sockets (`-U`). Executors share nothing but the mesh queues
//! (cross-core requests and replies), a few process-wide counters (connections), and the clock
//! offset used by test hooks.
//!
//! Invariants: every buffer and queue here is bounded (see `connection.rs` and `mesh.rs`); an
//! executor never blocks except in its event-loop wait; `listening <addr>` (or
//! `listening unix:<path>`) is printed only once every executor is serving.
//!
//! Must not: touch a store except through its own executor's `Shard`.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod binary;
pub mod cluster;
pub mod connection;
pub mod core;
pub mod direct;
pub mod durable;
pub mod epoll;
pub mod listener;
pub mod memfile;
pub mod mesh;
pub mod park;
pub mod process;
pub mod sched;
pub mod stats;
pub mod tls;
pub mod udp;
pub mod uring;
pub mod watchers;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::clock::{Epoch, Instant32, START};
use crate::config::Config;
use crate::prefix_stats::PrefixStats;
use crate::router::{key_hash, ShardId};
use crate::shard::Shard;
use crate::storage::StoreConfig;

use backend::Backend;
use listener::Listener;

/// memcached's segmented-LRU settings as `lru tune` last set them. memcached without its LRU
/// maintainer (the mode `stats settings` reports) keeps them and uses them for nothing, and so
/// does corecache, whose CLOCK eviction has no segments: they exist so that `lru tune` answers
/// and `stats settings` shows what memcached's would.
pub struct LruTune {
    pub hot_pct: AtomicU32,
    pub warm_pct: AtomicU32,
    /// `f64` bits.
    pub hot_factor: AtomicU64,
    /// `f64` bits.
    pub warm_factor: AtomicU64,
}

impl LruTune {
    /// Starting from the `-o` settings.
    pub fn new(start: &crate::config::LruTuneSettings) -> LruTune {
        LruTune {
            hot_pct: AtomicU32::new(start.hot_pct),
            warm_pct: AtomicU32::new(start.warm_pct),
            hot_factor: AtomicU64::new(start.hot_factor_bits),
            warm_factor: AtomicU64::new(start.warm_factor_bits),
        }
    }
}

/// Process-wide state shared by every executor (read-mostly; nothing on the per-request path
/// except the clock read once per loop turn).
pub struct Shared {
    pub config: Config,
    pub epoch: Epoch,
    started: Instant,
    /// Seconds added to the clock by `debug_time advance` (feature `test-hooks`).
    pub clock_offset_secs: AtomicU32,
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    /// The next connection's serial number, server-wide: its `stats conns` id follows from it
    /// (`stats::conn_id`). Not a statistic, so `stats reset` leaves it.
    pub conn_serial_next: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub verbosity: AtomicU32,
    pub shutdown: AtomicBool,
    /// The TCP addresses actually bound (port 0 resolved); none with `-s`.
    pub bound: Vec<SocketAddr>,
    /// The UDP addresses actually bound (`-U`; port 0 resolved); none without UDP.
    pub udp_bound: Vec<SocketAddr>,
    backend: AtomicU8,
    /// ElastiCache auto discovery node list (`config get cluster`).
    pub cluster: cluster::Cluster,
    /// `-m` in bytes, as changed by `cache_memlimit` (stats read it).
    pub memory_bytes_max: AtomicU64,
    /// `stats detail on|off` (for `stats settings`; each shard keeps its own switch).
    pub detail_enabled: AtomicBool,
    /// Pauses of accepting for want of descriptors or memory, across cores.
    pub listen: backend::ListenStats,
    /// `lru_crawler enable|disable`: whether shards sweep for dead items (and serve
    /// `lru_crawler crawl` and `metadump`).
    pub crawler_enabled: AtomicBool,
    /// `lru_crawler sleep <us>`: the pause between slices of an `lru_crawler crawl` pass.
    pub crawler_sleep_us: AtomicU32,
    /// `lru_crawler tocrawl <n>`: items checked per class in one pass, at most (0: all).
    pub crawler_tocrawl: AtomicU32,
    /// Shards with an `lru_crawler crawl` pass under way (a new crawl then answers `BUSY`).
    pub crawls_running: AtomicU32,
    /// `slabs automove <0|1|2>` (see `storage::lru`).
    pub slab_automove: AtomicU8,
    /// `lru tune`'s settings, shown by `stats settings` (see [`LruTune`]).
    pub lru_tune: LruTune,
    /// `watch`: watchers per core, event numbering, log counters.
    pub watch: watchers::WatchShared,
    /// `-Y`: the logins of the auth file, read once at startup; `None` without `-Y`.
    pub auth: Option<crate::protocol::auth::AuthTable>,
    /// `-Z` and the `-o ssl_*` settings: the server config TLS connections start with, and
    /// the TLS counters of `stats`.
    pub tls: tls::TlsShared,
    /// `--log-dir`: the durability log's shared state; `None` without a log.
    pub log: Option<Arc<crate::durability::writer::LogShared>>,
    /// `-e`: the restartable cache's memory file; `None` without `-e`.
    pub memfile: Option<memfile::MemfileShared>,
    /// Each core's parking place, where it leaves its shard while it sleeps (see `park`).
    pub parking: Vec<park::Parking>,
}

impl Shared {
    /// The server clock: seconds since start (plus [`START`]) plus any test offset.
    pub fn now(&self) -> Instant32 {
        let secs = self.started.elapsed().as_secs();
        let secs = u32::try_from(secs).unwrap_or(u32::MAX);
        START
            .plus(secs)
            .plus(self.clock_offset_secs.load(Ordering::Relaxed))
    }

    /// UDP sockets across executors (one per UDP address per shard), each one "connection" in
    /// `stats`, as memcached counts each worker thread's UDP socket.
    pub fn udp_conns(&self) -> u64 {
        (self.udp_bound.len() * usize::from(self.config.shard_count)) as u64
    }

    /// Name of the backend in use.
    pub fn backend_name(&self) -> &'static str {
        match self.backend.load(Ordering::Relaxed) {
            1 => "io_uring",
            _ => "epoll",
        }
    }
}

/// Descriptors the server needs besides its connections, per shard (listeners, ring or epoll
/// instance, wake-up eventfd) and for the process (standard streams, signal handling, files).
const FDS_PER_SHARD: usize = 8;
const FDS_PER_PROCESS: usize = 32;

/// Largest slab page (memcached's page size): the largest chunk of the normal classes.
pub const PAGE_BYTES_MAX: usize = 1 << 20;
/// Smallest slab page: the page arena's smallest block.
pub const PAGE_BYTES_MIN: usize = crate::storage::pagemem::ARENA_PAGE_BYTES_MIN;
/// Pages a shard's budget should hold at least: memcached's default `-m 64` holds 64 of its
/// 1 MiB pages, shared by every thread.
pub const SHARD_PAGES_MIN: usize = 64;

/// Pages a shard's budget must hold for its small slab classes to step by 8 bytes.
pub const FINE_CLASSES_PAGES_MIN: usize = 256;

/// Below which chunk size a shard with `memory_bytes` of budget in pages of `page` bytes steps
/// its classes by 8 bytes: [`FINE_CLASS_BYTES_MAX`](crate::storage::slab::FINE_CLASS_BYTES_MAX)
/// when the budget holds [`FINE_CLASSES_PAGES_MIN`] pages, else 0 (classes grow by `-f` from
/// the smallest chunk). The fine steps keep chunk waste under 8 bytes for small items, but they
/// add some 20 classes (68 up to 1 MiB instead of 48), and a class in use holds at least a page:
/// at `-m 64` (64 pages), values of 100 to 20,000 bytes left 17 small classes a page each
/// holding a dozen items, 15 MB of the 64 nearly empty, and the hit ratio 0.279 against
/// memcached's 0.345; without them it is 0.32, while 64-byte values keep 0.87
/// (tuning/results/20261123-page-size-hit-ratio.md).
pub fn fine_class_bytes_max(memory_bytes: usize, page: usize) -> usize {
    if memory_bytes / page.max(1) >= FINE_CLASSES_PAGES_MIN {
        crate::storage::slab::FINE_CLASS_BYTES_MAX
    } else {
        0
    }
}

/// Classes per growth factor above the fine steps for a shard with `memory_bytes` of budget in
/// pages of `page` bytes: 2 where the budget holds [`FINE_CLASSES_PAGES_MIN`] pages (as the
/// fine steps), else 1.
///
/// At `-f 1.25` an item above the fine steps wastes up to a fifth of its chunk (a 1,050-byte
/// item takes 1,240 bytes); two classes per factor halve that (1,096 bytes) for 37 classes
/// more, 104 in all up to 1 MiB. Each class in use holds at least a page, so small budgets keep
/// one class per factor: at 64 pages (`-m 64`) the split lowered the hit ratio of values of 1
/// to 100,000 bytes from 0.39 to 0.37, while from 256 pages up it raised the hit ratio of every
/// mix tried (tuning/results/20261124-split-growth.md).
pub fn growth_steps(memory_bytes: usize, page: usize) -> u32 {
    if memory_bytes / page.max(1) >= FINE_CLASSES_PAGES_MIN {
        2
    } else {
        1
    }
}

/// The slab page size of a shard with `memory_bytes` of budget (`slab_chunk_max` in `stats
/// settings`): memcached's 1 MiB when the budget holds [`SHARD_PAGES_MIN`] of them, else the
/// largest power of two that it holds that many of, down to [`PAGE_BYTES_MIN`].
///
/// memcached splits `-m` into 1 MiB pages for all its threads; a shard splits only its own
/// part. With 1 MiB pages `-m 64 -t 2` left 32 pages per shard for the ~40 slab classes that
/// values of 16 to 2,000 bytes use, so a class without a page took one from another, dropping
/// its items: 3,000 such items (3 MB) could not all stay in a 64 MB cache. Pages much smaller
/// than that cost hit ratio when values are large (a class of chunks close to the page size
/// wastes most of each page): measured with corecache-bench at `-m 64 -t 2`, 64 pages per
/// shard (512 KiB) kept every one of those 3,000 items and raised the zipf read-through hit
/// ratio with 16-1,000 byte values from 0.818 to 0.852 (memcached: 0.831), while 100-20,000
/// byte values went from 0.273 to 0.293 and 1-100,000 byte values stayed within noise (0.360
/// against 0.352); 256 pages of 128 KiB dropped the last to 0.285. Items larger than a page are
/// stored whole outside the classes, as before.
pub fn page_bytes(memory_bytes: usize) -> usize {
    let mut page = PAGE_BYTES_MAX;
    while page > PAGE_BYTES_MIN && memory_bytes / page < SHARD_PAGES_MIN {
        page /= 2;
    }
    page
}

/// Descriptors set aside for everything but connections (`reserved_fds` in `stats`).
pub fn fds_reserved(shards: u16) -> usize {
    FDS_PER_PROCESS + FDS_PER_SHARD * usize::from(shards)
}

/// Raises the soft RLIMIT_NOFILE so `-c` connections fit, as far as the hard limit allows
/// (memcached does the same). Where it does not, accepting pauses on EMFILE and resumes as
/// descriptors free up; the shortfall is reported once here.
fn raise_nofile_limit(conns_max: usize, shards: usize) {
    let want = (conns_max + FDS_PER_PROCESS + FDS_PER_SHARD * shards) as libc::rlim_t;
    // SAFETY: getrlimit/setrlimit on a zeroed rlimit struct we own.
    let (soft, hard) = unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
        (lim.rlim_cur, lim.rlim_max)
    };
    if soft < want {
        eprintln!(
            "open-file limit {soft} (hard {hard}) is below the {want} that -c {conns_max} needs; \
             connections beyond it wait in the listen queue"
        );
    }
}

/// `MEMCACHED_PORT_FILENAME`: memcached's way of telling a test harness the ports it bound
/// (`TCP INET: <port>` or `TCP INET6: <port>` per listen address, then `UDP INET: <port>` per
/// UDP address), written to `<file>.lck` and renamed into place once complete. A failure is
/// reported and serving goes on, as there.
fn write_port_file(path: &std::path::Path, bound: &[SocketAddr], udp_bound: &[SocketAddr]) {
    let text = port_file_text(bound, udp_bound);
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lck");
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&lock)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&lock, path));
    if let Err(e) = written {
        eprintln!("failed to write the port file {}: {e}", path.display());
    }
}

/// The port file's lines.
fn port_file_text(bound: &[SocketAddr], udp_bound: &[SocketAddr]) -> String {
    let line = |transport: &str, a: &SocketAddr| {
        let family = if a.is_ipv4() { "INET" } else { "INET6" };
        format!("{transport} {family}: {}\n", a.port())
    };
    let tcp = bound.iter().map(|a| line("TCP", a));
    tcp.chain(udp_bound.iter().map(|a| line("UDP", a)))
        .collect()
}

/// Exit status for an unknown `-u` user (sysexits' `EX_NOUSER`, as memcached exits).
const EX_NOUSER: i32 = 67;
/// Exit status when a socket cannot be bound or listened on (sysexits' `EX_OSERR`, as
/// memcached exits).
pub const EX_OSERR: i32 = 71;

/// Why startup failed, and the exit status that tells a service manager so.
#[derive(Debug)]
pub struct StartupError {
    pub message: String,
    pub exit_code: i32,
}

impl From<String> for StartupError {
    /// A failure with the generic status 1.
    fn from(message: String) -> StartupError {
        StartupError {
            message,
            exit_code: 1,
        }
    }
}

/// A socket that cannot be listened on.
/// The C library's words for an error (`strerror`), without Rust's `(os error N)`: what
/// memcached prints after a failed call.
pub(crate) fn strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn listen_failure(message: String) -> StartupError {
    StartupError {
        message,
        exit_code: EX_OSERR,
    }
}

/// A TCP or UDP socket that could not be bound, in memcached's words: the `-l` list as given,
/// or the port when there was none, then the C library's reason.
fn bind_failure(config: &Config, transport: &str, port: i32, e: &std::io::Error) -> StartupError {
    let what = match &config.listen_arg {
        Some(list) => format!("one of interface(s) {list}"),
        None => format!("{transport} port {port}"),
    };
    listen_failure(format!("failed to listen on {what}: {}", strerror(e)))
}

/// Starts every executor, prints `listening` lines, and serves until SIGTERM or SIGINT.
///
/// Order (see `process`): bind every TCP listener and UDP socket (as root, so ports below 1024
/// work), raise
/// RLIMIT_CORE (`-r`), detach (`-d`, while the process still has one thread), drop root
/// (`-u`), bind the UNIX socket (`-s`: as memcached does, after detaching and as the `-u` user,
/// who then owns the socket file), lock memory (`-k`, after the fork and the identity change,
/// as memcached does), write the pidfile, start the executors, announce. A daemon's `listening`
/// lines and startup errors go to the parent, which prints them and exits.
pub fn run(mut config: Config) -> Result<(), StartupError> {
    block_signals();
    let shard_count = usize::from(config.shard_count);
    raise_nofile_limit(config.conns_max, shard_count);
    // memcached ignores -u unless it runs as root; an unknown user fails before binding.
    let user = match &config.user {
        Some(name) if process::is_root() => match process::lookup_user(name) {
            Ok(ids) => Some(ids),
            Err(msg) => {
                // memcached exits with EX_NOUSER here, not with a generic failure.
                eprintln!("corecache: {msg}");
                std::process::exit(EX_NOUSER);
            }
        },
        _ => None,
    };
    // The TLS settings and files, before any socket, as memcached checks them.
    let tls = tls::TlsShared::new(&config.tls, config.tls_enabled)?;
    if config.tls.kernel_tls && config.tls_enabled {
        eprintln!(
            "corecache: ignoring -o ssl_kernel_tls: records are encrypted in user space (rustls)"
        );
    }
    if !config.tls_enabled && config.unix_socket.is_none() && config.listen_notls.contains(&true) {
        return Err(listen_failure(format!(
            "'notls' option is valid only when SSL is enabled; failed to listen on one of interface(s) {}",
            config.listen_arg.as_deref().unwrap_or(crate::config::LISTEN_DEFAULT)
        )));
    }

    // Bind every TCP listener before anything is announced. With a UNIX socket (`-s`) there
    // is none: memcached then opens no TCP (or UDP) socket, whatever `-l` and `-p` say.
    let mut per_core: Vec<Vec<Listener>> = (0..shard_count).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let tcp = if config.unix_socket.is_none() {
        config.listen.as_slice()
    } else {
        &[]
    };
    for (i, &addr) in tcp.iter().enumerate() {
        let (group, actual) = listener::bind_group(addr, shard_count, config.listen_backlog)
            .map_err(|e| bind_failure(&config, "TCP", config.port, &e))?;
        let speaks_tls =
            config.tls_enabled && !config.listen_notls.get(i).copied().unwrap_or(false);
        for (core, l) in group.into_iter().enumerate() {
            per_core[core].push(Listener::Tcp(l, speaks_tls));
        }
        bound.push(actual);
    }
    // Then the UDP sockets (`-U`; `config.udp_listen` is empty without UDP and with `-s`).
    let mut per_core_udp: Vec<Vec<UdpSocket>> = (0..shard_count).map(|_| Vec::new()).collect();
    let mut udp_bound = Vec::new();
    for &addr in &config.udp_listen {
        let (group, actual) = listener::bind_udp_group(addr, shard_count)
            .map_err(|e| bind_failure(&config, "UDP", config.udp_port, &e))?;
        for (core, s) in group.into_iter().enumerate() {
            per_core_udp[core].push(s);
        }
        udp_bound.push(actual);
    }
    let sockets = Sockets {
        per_core,
        per_core_udp,
        bound,
        udp_bound,
        tls,
    };
    if config.coredumps {
        process::enable_coredumps()?;
    }
    let mut report = None;
    if config.daemonize {
        // The daemon may leave the working directory: a relative pidfile or socket path keeps
        // its meaning.
        if let Some(path) = &config.pidfile {
            let cwd = std::env::current_dir().map_err(|e| format!("-P {path}: {e}"))?;
            config.pidfile = Some(cwd.join(path).to_string_lossy().into_owned());
        }
        if let Some(path) = &config.unix_socket {
            let cwd = std::env::current_dir().map_err(|e| format!("-s {path}: {e}"))?;
            let absolute = cwd.join(path).to_string_lossy().into_owned();
            config.unix_socket = crate::config::check_unix_socket(Some(&absolute))?;
        }
        report = Some(process::daemonize(config.coredumps)?);
    }
    let result = serve(config, sockets, user.as_ref(), &mut report);
    if let (Err(failure), Some(report)) = (&result, report) {
        report.failed(failure);
    }
    result
}

/// The sockets bound before the identity change: per executor its TCP listeners and UDP
/// sockets, and the addresses bound (ports resolved).
struct Sockets {
    per_core: Vec<Vec<Listener>>,
    per_core_udp: Vec<Vec<UdpSocket>>,
    bound: Vec<SocketAddr>,
    udp_bound: Vec<SocketAddr>,
    /// The TLS settings and loaded files.
    tls: tls::TlsShared,
}

/// [`run`] from the identity change on: starts the executors, announces, serves, stops.
fn serve(
    config: Config,
    sockets: Sockets,
    user: Option<&process::UserIds>,
    report: &mut Option<process::DaemonReport>,
) -> Result<(), StartupError> {
    let Sockets {
        mut per_core,
        per_core_udp,
        bound,
        udp_bound,
        tls,
    } = sockets;
    let shard_count = per_core.len();
    if let Some(user) = user {
        process::drop_privileges(user)?;
    }
    // As memcached, the auth file is read as the `-u` user.
    let auth = match &config.auth_file {
        Some(path) => Some(auth::load(path)?),
        None => None,
    };
    if let Some(path) = &config.unix_socket {
        // Still one thread: the umask swap around bind(2) affects no one else.
        let group = listener::bind_unix(path, config.unix_mask, shard_count, config.listen_backlog)
            .map_err(|e| {
                listen_failure(format!(
                    "failed to listen on UNIX socket: {path}: {}",
                    strerror(&e)
                ))
            })?;
        for (core, l) in group.into_iter().enumerate() {
            per_core[core].push(Listener::Unix(l));
        }
    }
    if config.lock_memory {
        process::lock_memory();
    }
    let backend = backend::choose(config.io_backend, &config)?;
    let cluster = cluster::Cluster::new(
        config.cluster_nodes.as_deref(),
        config.cluster_config.as_deref(),
        &bound,
    )?;
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let endpoints = mesh::build(config.shard_count).map_err(|e| format!("mesh: {e}"))?;
    let wakers: Vec<_> = endpoints
        .first()
        .map(|e| e.wakers().to_vec())
        .unwrap_or_default();
    // The memory file's metadata is read (and removed) as the `-u` user, before any executor.
    let memfile = match &config.memory_file {
        Some(path) => Some(memfile::MemfileShared::open(path)?),
        None => None,
    };
    // The log is opened (and its damaged tail cut) as the `-u` user, before any executor.
    let (log, mut log_senders, log_thread) = match &config.log {
        Some(settings) => {
            let (log, senders, thread) =
                durable::start(settings, config.shard_count, wakers.clone())?;
            (
                Some(log),
                senders.into_iter().map(Some).collect(),
                Some(thread),
            )
        }
        None => (None, Vec::new(), None),
    };
    log_senders.resize_with(shard_count, || None);
    let shared = Arc::new(Shared {
        epoch: Epoch {
            started_unix: unix_now,
        },
        started: Instant::now(),
        clock_offset_secs: AtomicU32::new(0),
        curr_connections: AtomicU64::new(0),
        total_connections: AtomicU64::new(0),
        conn_serial_next: AtomicU64::new(0),
        rejected_connections: AtomicU64::new(0),
        verbosity: AtomicU32::new(u32::from(config.verbosity)),
        shutdown: AtomicBool::new(false),
        bound: bound.clone(),
        udp_bound: udp_bound.clone(),
        backend: AtomicU8::new(u8::from(backend == Backend::Uring)),
        cluster,
        memory_bytes_max: AtomicU64::new(config.memory_bytes_max as u64),
        detail_enabled: AtomicBool::new(config.detail_enabled),
        crawler_enabled: AtomicBool::new(config.crawler.enabled),
        crawler_sleep_us: AtomicU32::new(config.crawler.sleep_us),
        crawler_tocrawl: AtomicU32::new(config.crawler.tocrawl),
        crawls_running: AtomicU32::new(0),
        slab_automove: AtomicU8::new(config.slab_automove),
        lru_tune: LruTune::new(&config.lru_tune),
        listen: backend::ListenStats::default(),
        watch: watchers::WatchShared::new(config.shard_count),
        auth,
        tls,
        log,
        memfile,
        parking: (0..shard_count).map(|_| park::Parking::default()).collect(),
        config,
    });
    if let Some(path) = &shared.config.pidfile {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("-P {path}: {e}"))?;
    }

    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(shard_count);
    let per_core = per_core.into_iter().zip(per_core_udp);
    let per_core = per_core.zip(log_senders);
    for (i, (endpoint, ((listeners, udp), log_sender))) in
        endpoints.into_iter().zip(per_core).enumerate()
    {
        let shared = Arc::clone(&shared);
        let ready = ready_tx.clone();
        let sockets = ExecutorSockets {
            listeners,
            udp,
            log_sender,
        };
        let t = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || executor(i, endpoint, sockets, shared, backend, ready))
            .map_err(|e| format!("cannot start executor {i}: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(String::from("an executor stopped during startup").into()),
        }
    }
    if let Some(log) = &shared.log {
        eprintln!("corecache: {}", durable::replay_report(log));
    }
    if let Some(line) = shared.memfile.as_ref().and_then(|m| m.restore_done()) {
        eprintln!("corecache: {line}");
    }
    if shared.config.verbosity > 0 {
        eprintln!(
            "corecache {}: {} shards, backend {}",
            env!("CARGO_PKG_VERSION"),
            shard_count,
            shared.backend_name()
        );
    }
    // memcached writes no port file when it serves a UNIX socket.
    if let (Some(path), None) = (
        std::env::var_os("MEMCACHED_PORT_FILENAME"),
        &shared.config.unix_socket,
    ) {
        write_port_file(std::path::Path::new(&path), &bound, &udp_bound);
    }
    let announcement = announcement(&bound, &udp_bound, shared.config.unix_socket.as_deref());
    match report.take() {
        Some(report) => report.ready(&announcement),
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(announcement.as_bytes());
            let _ = out.flush();
        }
    }

    let stop = wait_for_stop_signal(&shared);
    let saving = match (stop, &shared.memfile) {
        (Stop::Graceful, Some(mf)) => {
            eprintln!("Gracefully stopping");
            match mf.begin_save(shared.config.shard_count) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("corecache: -e: not saved: {e}");
                    false
                }
            }
        }
        (Stop::Graceful, None) => {
            eprintln!("Gracefully stopping");
            false
        }
        (Stop::Now, _) => false,
    };
    shared.shutdown.store(true, Ordering::SeqCst);
    for w in &wakers {
        w.wake();
    }
    for t in threads {
        let _ = t.join();
    }
    if let (true, Some(mf)) = (saving, &shared.memfile) {
        match mf.finish_save(shared.config.shard_count) {
            Ok(records) => eprintln!(
                "corecache: -e {}: saved {records} records",
                mf.path.display()
            ),
            Err(e) => eprintln!("corecache: -e: not saved: {e}"),
        }
    }
    // Every executor has handed over its last records: write, sync, stop.
    if let (Some(log), Some(thread)) = (&shared.log, log_thread) {
        log.stop();
        let _ = thread.join();
    }
    if let Some(path) = &shared.config.pidfile {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The lines printed on stdout once every executor serves: `listening <ip>:<port>` per TCP
/// address, then `listening udp:<ip>:<port>` per UDP address; or `listening unix:<path>`.
fn announcement(
    bound: &[SocketAddr],
    udp_bound: &[SocketAddr],
    unix_socket: Option<&str>,
) -> String {
    match unix_socket {
        Some(path) => format!("listening unix:{path}\n"),
        None => {
            let tcp = bound.iter().map(|a| format!("listening {a}\n"));
            tcp.chain(udp_bound.iter().map(|a| format!("listening udp:{a}\n")))
                .collect()
        }
    }
}

/// One executor's sockets: its TCP (or UNIX) listeners and its UDP sockets.
struct ExecutorSockets {
    listeners: Vec<Listener>,
    udp: Vec<UdpSocket>,
    /// `--log-dir`: the executor's queue to the log thread.
    log_sender: Option<crate::durability::writer::LogSender>,
}

/// One executor: pin, build the shard, serve until shutdown.
fn executor(
    i: usize,
    endpoint: mesh::Endpoint,
    sockets: ExecutorSockets,
    shared: Arc<Shared>,
    backend: Backend,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let cfg = &shared.config;
    if let Some(Some(cpu)) = cfg.shard_cpus.get(i) {
        core_affinity::set_for_current(core_affinity::CoreId { id: *cpu });
    }
    // A policy that cannot be set (a seccomp filter, say) is reported once and not fatal: the
    // shard serves the same under the policy it has.
    match cfg.sched_policy.map(sched::apply) {
        Some(Err(e)) if i == 0 => eprintln!("corecache: {e}"),
        Some(Ok(policy)) if i == 0 && cfg.verbosity > 1 => {
            eprintln!("corecache: shard threads run under {}", sched::name(policy))
        }
        _ => {}
    }
    let shard_bytes = cfg.memory_bytes_max / usize::from(cfg.shard_count);
    let page_size = page_bytes(shard_bytes);
    let store_cfg = StoreConfig {
        memory_bytes_max: shard_bytes,
        page_size,
        fine_class_bytes_max: fine_class_bytes_max(shard_bytes, page_size),
        growth_steps: growth_steps(shard_bytes, page_size),
        slab_growth_factor: cfg.slab_growth_factor,
        item_size_max: cfg.item_size_max,
        cas_enabled: cfg.cas_enabled,
        key_hash,
        large_pages: cfg.large_pages,
        chunk_bytes_smallest: cfg.chunk_bytes_smallest,
        evictions_enabled: cfg.evictions_enabled,
    };
    let mut shard = Shard::new(ShardId(i as u16), store_cfg, shared.epoch);
    // memcached's table starts with 2^hashpower buckets; corecache's shards share that many
    // slots.
    let power = match cfg.hashpower_init {
        0 => crate::config::HASHPOWER_DEFAULT,
        power => power,
    };
    if !shard
        .store_mut()
        .reserve_hash_slots((1usize << power) / usize::from(cfg.shard_count))
    {
        let _ = ready.send(Err(String::from("Failed to init hashtable.")));
        return;
    }
    shard.prefix_stats = PrefixStats::new(cfg.stat_key_prefix, cfg.detail_enabled);
    shard.log = crate::watch::EventLog::new(cfg.worker_logbuf_bytes, Arc::clone(&shared.watch.gid));
    shard.store_mut().set_automove(cfg.slab_automove);
    shard.store_mut().set_cas_shard(i as u16, cfg.shard_count);
    // At startup every item is stored after tracking began, so it needs no cas to tell (with
    // `-C` memcached refuses only `stats sizes_enable`).
    if cfg.track_sizes {
        shard.store_mut().set_size_tracking(true);
    }
    if let Err(e) = durable::replay_into(&mut shard, i as u16, &shared) {
        let _ = ready.send(Err(format!("executor {i}: log replay: {e}")));
        return;
    }
    if let Err(e) = memfile::restore_into(&mut shard, i as u16, &shared) {
        let _ = ready.send(Err(format!("executor {i}: {e}")));
        return;
    }
    let mut core = core::Core::new(shard, endpoint, Arc::clone(&shared));
    core.udp_attach(sockets.udp);
    if let Some(sender) = sockets.log_sender {
        core.log_attach(sender);
    }
    let listeners = sockets.listeners;
    let result = match backend {
        Backend::Epoll => epoll::run(core, listeners, &ready),
        Backend::Uring => uring::run(core, listeners, &ready),
    };
    if let Err(e) = result {
        let msg = format!("executor {i}: {e}");
        if ready.send(Err(msg.clone())).is_err() || shared.shutdown.load(Ordering::Relaxed) {
            eprintln!("{msg}");
        } else {
            // Serving already started: one dead shard takes the process down.
            eprintln!("{msg}");
            std::process::exit(1);
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and so in every executor spawned after),
/// and ignores SIGPIPE (a write to a closed socket returns EPIPE instead) and SIGXFSZ.
fn block_signals() {
    // SAFETY: plain libc signal-mask calls on a zero-initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        // A log write past RLIMIT_FSIZE fails with EFBIG (reported, see `durability::writer`)
        // instead of killing the process.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// How the server was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT (`shutdown`).
    Now,
    /// SIGUSR1 (`shutdown graceful`): as memcached, the one stop that saves the memory file.
    Graceful,
}

/// Waits (in the main thread) for SIGTERM, SIGINT or SIGUSR1 (the `shutdown` command raises
/// SIGTERM, `shutdown graceful` SIGUSR1). SIGHUP re-reads `--cluster-config` and keeps
/// waiting.
fn wait_for_stop_signal(shared: &Shared) -> Stop {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait on a set of signals blocked in every thread.
        let rc = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigwait(&set, &mut sig)
        };
        // sigwait can return early (a tracer attaching, for one): keep waiting.
        if rc != 0 {
            continue;
        }
        match sig {
            libc::SIGUSR1 => return Stop::Graceful,
            libc::SIGHUP => {}
            _ => return Stop::Now,
        }
        match shared.cluster.reload() {
            Ok(version) if shared.verbosity.load(Ordering::Relaxed) > 0 => {
                eprintln!("SIGHUP: cluster config version {version}");
            }
            Ok(_) => {}
            Err(e) => eprintln!("SIGHUP: keeping the old cluster config: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_growth_steps_need_a_budget_of_256_pages() {
        const MB: usize = 1 << 20;
        assert_eq!(growth_steps(256 * MB, MB), 2);
        assert_eq!(growth_steps(255 * MB, MB), 1);
        assert_eq!(growth_steps(64 * MB, page_bytes(64 * MB)), 1);
        assert_eq!(growth_steps(1 << 30, page_bytes(1 << 30)), 2);
        assert_eq!(growth_steps(0, 0), 1);
    }

    #[test]
    fn fine_classes_need_a_budget_of_256_pages() {
        const MB: usize = 1 << 20;
        let fine = crate::storage::slab::FINE_CLASS_BYTES_MAX;
        assert_eq!(fine_class_bytes_max(256 * MB, MB), fine);
        assert_eq!(fine_class_bytes_max(255 * MB, MB), 0);
        // -m 64 -t 1, and -t 2 (512 KiB pages): 64 pages either way.
        assert_eq!(fine_class_bytes_max(64 * MB, page_bytes(64 * MB)), 0);
        assert_eq!(fine_class_bytes_max(32 * MB, page_bytes(32 * MB)), 0);
        assert_eq!(fine_class_bytes_max(4 << 30, page_bytes(4 << 30)), fine);
        assert_eq!(fine_class_bytes_max(0, 0), 0);
    }

    #[test]
    fn page_size_leaves_every_shard_enough_pages() {
        const MB: usize = 1 << 20;
        // memcached's 1 MiB pages once a shard has 64 MB or more (-m 64 -t 1 as before).
        assert_eq!(page_bytes(64 * MB), MB);
        assert_eq!(page_bytes(64 << 30), MB);
        // -m 64 -t 2: 32 MB per shard in 64 pages of 512 KiB.
        assert_eq!(page_bytes(32 * MB), 512 * 1024);
        assert_eq!(page_bytes(63 * MB), 512 * 1024);
        assert_eq!(page_bytes(8 * MB), 128 * 1024);
        // Never below the arena's smallest block, however small the budget (-m 64 -t 32).
        assert_eq!(page_bytes(2 * MB), PAGE_BYTES_MIN);
        assert_eq!(page_bytes(0), PAGE_BYTES_MIN);
        for mb in 1..2048 {
            let page = page_bytes(mb * MB);
            assert!(page.is_power_of_two() && (PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&page));
            assert!(
                page == PAGE_BYTES_MIN || mb * MB / page >= SHARD_PAGES_MIN,
                "{mb}"
            );
        }
    }

    #[test]
    fn the_announcement_names_every_tcp_address_or_the_unix_socket() {
        let bound: Vec<SocketAddr> = vec![
            "127.0.0.1:11211".parse().unwrap(),
            "[::1]:11211".parse().unwrap(),
        ];
        assert_eq!(
            announcement(&bound, &[], None),
            "listening 127.0.0.1:11211\nlistening [::1]:11211\n"
        );
        assert_eq!(
            announcement(&bound[..1], &bound[1..], None),
            "listening 127.0.0.1:11211\nlistening udp:[::1]:11211\n"
        );
        assert_eq!(
            announcement(&[], &[], Some("/run/corecache.sock")),
            "listening unix:/run/corecache.sock\n"
        );
    }

    /// As memcached 1.6.18 writes it for `-p -1 -U -1`: TCP lines, then UDP lines.
    #[test]
    fn the_port_file_lists_tcp_then_udp_ports() {
        let tcp: Vec<SocketAddr> = vec![
            "127.0.0.1:40799".parse().unwrap(),
            "[::1]:40799".parse().unwrap(),
        ];
        let udp: Vec<SocketAddr> = vec!["127.0.0.1:48738".parse().unwrap()];
        assert_eq!(
            port_file_text(&tcp, &udp),
            "TCP INET: 40799\nTCP INET6: 40799\nUDP INET: 48738\n"
        );
        assert_eq!(port_file_text(&tcp[..1], &[]), "TCP INET: 40799\n");
    }
}
