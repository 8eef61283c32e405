//! Command line -> plain [`Args`] (clap) -> validated [`Config`].
//!
//! Flags reuse memcached 1.6.18's letters, long names and meanings so corecache can replace
//! memcached in an existing unit file, `/etc/memcached.conf` or test harness:
//! * served as memcached serves them: `-p -l -m -c -t -I -f -C -L -v -U -A -P`, `-s` (a UNIX
//!   socket instead of TCP) and `-a` (its access mask), `-u` (drop root to a user once the TCP
//!   sockets are bound), `-d` (daemon), `-b` (listen backlog), `-R` (requests
//!   per connection per loop turn), `-M` (no evictions), `-F` (no `flush_all`), `-X` (no
//!   metadump), `-k` (mlockall), `-r` (core dumps), `-n` (smallest chunk), `-B` (protocol),
//!   `-D` (prefix delimiter, turns `stats detail` on), `-W` (refuse `watch`), `-i` (license),
//!   `-Y` (ASCII authentication: the file is read by the runtime at startup; with it the
//!   protocol is ASCII and UDP is refused, as in memcached), `-S` (binary SASL PLAIN against
//!   the `MEMCACHED_SASL_PWDB` password file; the protocol is binary and ASCII or UDP are
//!   refused, as in memcached), `-Z` (TLS on the TCP listeners
//!   but those given as `-l notls:<ip>:<port>`; its `-o ssl_*` suboptions are kept as typed
//!   in [`TlsOptions`] and checked by `runtime::tls` at startup, with memcached's messages and
//!   exit statuses), and `-o` suboptions (see
//!   [`parse_extended`]): those corecache
//!   can honour are honoured, those tuning machinery it does not have are ignored with one
//!   notice line, unknown ones are refused as memcached refuses them.
//! * refused with a one-line reason, because corecache does not provide the feature: `-e -N`.
//!
//! Unlike memcached, corecache runs as root without `-u` (memcached refuses to).
//!
//! Validation turns every bad value into a one-line reason; `main` prints it and exits 64.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use clap::{ArgAction, Parser, ValueEnum};

use crate::protocol::Limits;
use crate::storage::item::HEADER_BYTES_MIN;
use crate::storage::slab::CHUNK_BYTES_SMALLEST;

/// A switch given as `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// The scheduling policy shard threads run under (`--sched-policy`, `runtime::sched`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchedPolicy {
    /// `SCHED_BATCH`: a waking shard does not preempt the thread running on its CPU.
    Batch,
    /// `SCHED_OTHER`, Linux's default.
    Normal,
}

impl SchedPolicy {
    /// The flag's value for this policy.
    pub fn name(self) -> &'static str {
        match self {
            SchedPolicy::Batch => "batch",
            SchedPolicy::Normal => "normal",
        }
    }
}

/// Which networking backend the executors use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoBackendChoice {
    /// io_uring if the startup probe passes, else epoll.
    Auto,
    /// io_uring; startup fails if it cannot be used.
    Uring,
    /// epoll.
    Epoll,
}

/// `--log-fsync`: when the durability log is flushed to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFsync {
    /// Before a mutation's reply is sent (group commit: one fsync per batch).
    Always,
    /// About once a second.
    Everysec,
    /// Never; the kernel writes back when it decides.
    No,
}

impl LogFsync {
    /// The name `stats settings` shows.
    pub fn name(self) -> &'static str {
        match self {
            LogFsync::Always => "always",
            LogFsync::Everysec => "everysec",
            LogFsync::No => "no",
        }
    }
}

/// `--log-dir` and its companions: the optional durability log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub dir: std::path::PathBuf,
    pub fsync: LogFsync,
    /// The CPU the log thread is pinned to (`None`: not pinned).
    pub cpu: Option<usize>,
    /// `--log-compact-bytes`: a log segment this large (and at least as large as the last
    /// snapshot) starts a compaction; 0: only the `log_compact` command does.
    pub compact_bytes: u64,
}

/// `--log-compact-bytes` when not given: 64 MiB.
pub const LOG_COMPACT_BYTES_DEFAULT: u64 = 64 << 20;

/// `-B`: which wire protocols a connection may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolChoice {
    /// Decided per connection by its first byte (0x80: binary), as memcached's `auto`.
    Auto,
    /// Text and meta only: every byte is read as text.
    Ascii,
    /// Binary only: a connection whose first bytes are not a binary header is closed.
    Binary,
}

impl ProtocolChoice {
    /// The name `stats settings` shows (`binding_protocol`), as memcached prints it.
    pub fn stats_name(self) -> &'static str {
        match self {
            ProtocolChoice::Auto => "auto-negotiate",
            ProtocolChoice::Ascii => "ascii",
            ProtocolChoice::Binary => "binary",
        }
    }
}

/// The command line as typed.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "corecache",
    version,
    about = "A thread-per-core, memcached-compatible cache"
)]
pub struct Args {
    /// TCP port to listen on (0 or -1: pick a free port) [default: 11211, or -U's port when
    /// only -U is given, as in memcached].
    #[arg(
        short = 'p',
        long = "port",
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-1..=65535)
    )]
    pub port: Option<i32>,
    /// Addresses to listen on, comma-separated; each may carry its own `:port` [default:
    /// 127.0.0.1].
    #[arg(short = 'l', long = "listen")]
    pub listen: Option<String>,
    /// Item memory in megabytes, split evenly across shards.
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64)]
    pub memory_limit_mb: u64,
    /// Maximum simultaneous connections.
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024)]
    pub conn_limit: u32,
    /// Shards (one pinned executor thread each); default: available CPUs.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<u16>,
    /// Largest item, with a k or m suffix (1k..1024m).
    #[arg(short = 'I', long = "max-item-size", default_value = "1m")]
    pub max_item_size: String,
    /// Growth factor between slab chunk sizes.
    #[arg(short = 'f', long = "slab-growth-factor", default_value_t = 1.25)]
    pub slab_growth_factor: f64,
    /// Disable cas values (saves 8 bytes per item).
    #[arg(short = 'C', long = "disable-cas")]
    pub disable_cas: bool,
    /// Back item memory with transparent huge pages where the kernel allows (fewer TLB misses;
    /// each shard may hold up to 2 MiB more than its items need). Unlike memcached, nothing is
    /// preallocated.
    #[arg(short = 'L', long = "enable-largepages")]
    pub large_pages: bool,
    /// Verbose logging to stderr (-vv for more).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// UDP port to serve memcached's UDP protocol on, on every -l address (0: no UDP; -1:
    /// pick a free port).
    #[arg(
        short = 'U',
        long = "udp-port",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-1..=65535)
    )]
    pub udp_port: i32,
    /// Allow the `shutdown` command.
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,
    /// Write the process id to this file.
    #[arg(short = 'P', long = "pidfile")]
    pub pidfile: Option<String>,
    /// When started as root: switch to this user (and its group) once the sockets are bound.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Run as a daemon (detach from the terminal; `-P` then holds the daemon's pid).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Listen backlog of every listening socket.
    #[arg(short = 'b', long = "listen-backlog", default_value_t = 1024)]
    pub listen_backlog: i32,
    /// Most requests one connection runs per loop turn before others get their turn.
    #[arg(short = 'R', long = "max-reqs-per-event", default_value_t = REQS_PER_EVENT_DEFAULT)]
    pub max_reqs_per_event: u32,
    /// When memory is full, refuse stores (SERVER_ERROR out of memory) instead of evicting.
    #[arg(short = 'M', long = "disable-evictions")]
    pub disable_evictions: bool,
    /// Refuse `flush_all`.
    #[arg(short = 'F', long = "disable-flush-all")]
    pub disable_flush_all: bool,
    /// Refuse `lru_crawler metadump` and `stats cachedump`.
    #[arg(short = 'X', long = "disable-dumping")]
    pub disable_dumping: bool,
    /// Refuse `watch` (`CLIENT_ERROR watch commands not allowed`).
    #[arg(short = 'W', long = "disable-watch")]
    pub disable_watch: bool,
    /// Lock all memory (mlockall); a failure is a warning.
    #[arg(short = 'k', long = "lock-memory")]
    pub lock_memory: bool,
    /// Raise the core file size limit to its hard maximum.
    #[arg(short = 'r', long = "enable-coredumps")]
    pub enable_coredumps: bool,
    /// Smallest space for key, value and client flags in a chunk, beyond the 16-byte item
    /// header (corecache's smallest chunk is 24 bytes: 8).
    #[arg(short = 'n', long = "slab-min-size", default_value_t = SLAB_MIN_SIZE_DEFAULT)]
    pub slab_min_size: usize,
    /// Wire protocols a connection may speak [default: auto; ascii with -Y].
    #[arg(short = 'B', long = "protocol", value_enum)]
    pub protocol: Option<ProtocolChoice>,
    /// Delimiter between key prefix and id for `stats detail`; turns detail collection on.
    #[arg(short = 'D')]
    pub prefix_delimiter: Option<String>,
    /// memcached's extended options, comma-separated (may be repeated).
    #[arg(short = 'o', long = "extended", action = ArgAction::Append)]
    pub extended: Vec<String>,
    /// Print the license and exit.
    #[arg(short = 'i', long = "license")]
    pub license: bool,
    /// Listen on a UNIX stream socket at this path, and on no TCP port.
    #[arg(short = 's', long = "unix-socket")]
    pub unix_socket: Option<String>,
    /// Access mask of the UNIX socket, in octal.
    #[arg(short = 'a', long = "unix-mask", default_value = "0700")]
    pub unix_mask: String,
    /// Restartable cache: on SIGUSR1 (or `shutdown graceful`) the items are saved to this file
    /// (and its `.meta` companion), and the next start with the same file and settings
    /// restores them. Put it on a RAM disk (tmpfs).
    #[arg(short = 'e', long = "memory-file")]
    pub memory_file: Option<String>,
    /// Binary-protocol SASL authentication (PLAIN), checked against the `user:password` lines
    /// of the file the environment variable `MEMCACHED_SASL_PWDB` names.
    #[arg(short = 'S', long = "enable-sasl")]
    pub enable_sasl: bool,
    /// ASCII authentication: a connection must first send `set` with `<user> <password>`
    /// from this file of `user:password` lines as its data.
    #[arg(short = 'Y', long = "auth-file")]
    pub auth_file: Option<String>,
    /// TLS on every TCP listener not marked `notls:` in `-l` (see the `-o ssl_*` options).
    #[arg(short = 'Z', long = "enable-ssl")]
    pub enable_ssl: bool,
    /// Not served: NAPI ids.
    #[arg(short = 'N', long = "napi_ids")]
    pub napi_ids: Option<String>,
    /// Networking backend.
    #[arg(long = "io-backend", value_enum, default_value_t = IoBackendChoice::Auto)]
    pub io_backend: IoBackendChoice,
    /// One-key text requests for a key another core owns, while that core sleeps: `on` runs
    /// them on its shard in place of waking it (writes only without `--log-dir`); `off` always
    /// sends them to the owner. See README, "The request path".
    #[arg(long = "borrow-idle-shards", value_enum, default_value_t = OnOff::On)]
    pub borrow_idle_shards: OnOff,
    /// Shard threads' scheduling policy: `batch` (SCHED_BATCH: a shard that wakes lets the
    /// thread running on its CPU go on until it blocks, as a client on the same host does after
    /// writing its requests) or `normal` (SCHED_OTHER, where it preempts it). Default: the
    /// policy the process starts with. A real-time or idle policy set from outside (`chrt`) is
    /// kept either way. See tuning/README.md.
    #[arg(long = "sched-policy", value_enum)]
    pub sched_policy: Option<SchedPolicy>,
    /// CPUs to pin shards to, e.g. `0-3,6` (one per shard, in order); default: all, in order.
    #[arg(long = "cpus")]
    pub cpus: Option<String>,
    /// ElastiCache auto discovery: the cluster's nodes, `host|ip|port,...` (default: this node).
    #[arg(long = "cluster-nodes", conflicts_with = "cluster_config")]
    pub cluster_nodes: Option<String>,
    /// ElastiCache auto discovery: a file listing `host|ip|port` nodes, one per line or
    /// space-separated; SIGHUP re-reads it.
    #[arg(long = "cluster-config")]
    pub cluster_config: Option<String>,
    /// Durability: log every mutation to this directory (created if missing) and replay it at
    /// startup.
    #[arg(long = "log-dir")]
    pub log_dir: Option<String>,
    /// When the log is fsynced [default: everysec].
    #[arg(long = "log-fsync", value_enum)]
    pub log_fsync: Option<LogFsync>,
    /// CPU to pin the log thread to [default: the last CPU the process may run on].
    #[arg(long = "log-cpu")]
    pub log_cpu: Option<usize>,
    /// Compact the log (snapshot, then drop the old segments) once its newest segment has
    /// this many bytes and at least as many as the last snapshot; 0: only on `log_compact`
    /// [default: 67108864 (64 MiB)].
    #[arg(long = "log-compact-bytes")]
    pub log_compact_bytes: Option<u64>,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The TCP addresses to listen on (none are bound when `unix_socket` is given).
    pub listen: Vec<SocketAddr>,
    /// Per `listen` address: given as `notls:<ip>[:<port>]`, so it stays plain under `-Z`.
    pub listen_notls: Vec<bool>,
    /// `-l` as typed, if it was (memcached names the whole list when it refuses one of them,
    /// and the port when no `-l` was given).
    pub listen_arg: Option<String>,
    /// `-Z`: TLS on the TCP listeners (not on `notls:` ones, UNIX sockets or UDP).
    pub tls_enabled: bool,
    /// `-o ssl_*` as given (checked and used by `runtime::tls`).
    pub tls: TlsOptions,
    /// `-p` as given (`stats settings` shows it as `tcpport` when no TCP socket is bound).
    pub port: i32,
    /// The UDP addresses to serve (`-U` on every `-l` address; an address's own `:port` wins, as
    /// in memcached). Empty with `-U 0` (the default) or `-s`.
    pub udp_listen: Vec<SocketAddr>,
    /// `-U` as given (`stats settings` shows it as `udpport` when no UDP socket is bound).
    pub udp_port: i32,
    /// `-s`: serve this UNIX socket path instead of TCP.
    pub unix_socket: Option<String>,
    /// `-a`: the access mask as memcached keeps it (see [`parse_unix_mask`]); the socket file's
    /// mode is `unix_mask & 0o777`.
    pub unix_mask: i32,
    pub memory_bytes_max: usize,
    pub conns_max: usize,
    pub shard_count: u16,
    /// CPU for each shard's executor (`None`: do not pin).
    pub shard_cpus: Vec<Option<usize>>,
    pub item_size_max: usize,
    pub slab_growth_factor: f64,
    pub cas_enabled: bool,
    /// `-L`: item memory on transparent huge pages.
    pub large_pages: bool,
    pub verbosity: u8,
    pub io_backend: IoBackendChoice,
    /// `--borrow-idle-shards`: whether a core may run a request on a sleeping owner's shard.
    pub borrow_idle_shards: bool,
    /// `--sched-policy`: what shard threads switch to if they start under a normal policy;
    /// `None` leaves them as they start.
    pub sched_policy: Option<SchedPolicy>,
    pub shutdown_enabled: bool,
    pub pidfile: Option<String>,
    /// `-u`: the user to switch to when started as root.
    pub user: Option<String>,
    /// `-d`: run as a daemon.
    pub daemonize: bool,
    /// `-b`: listen backlog.
    pub listen_backlog: i32,
    /// `-R`: most requests a connection runs per loop turn.
    pub reqs_per_event: u32,
    /// `-M` turns this off: a full store refuses instead of evicting.
    pub evictions_enabled: bool,
    /// `-F` turns this off.
    pub flush_enabled: bool,
    /// `-W` turns this off.
    pub watch_enabled: bool,
    /// `-o watcher_logbuf_size=<KB>`: bytes of log lines a watcher may have unsent.
    pub watcher_logbuf_bytes: usize,
    /// `-o worker_logbuf_size=<KB>`: bytes of log lines a shard stages per loop turn.
    pub worker_logbuf_bytes: usize,
    /// `-X` turns this off.
    pub dump_enabled: bool,
    /// `-k`: mlockall at startup.
    pub lock_memory: bool,
    /// `-r`: raise RLIMIT_CORE.
    pub coredumps: bool,
    /// The smallest slab chunk in bytes (from `-n`).
    pub chunk_bytes_smallest: usize,
    /// `-B` (ascii when `-Y` is given without it).
    pub protocol: ProtocolChoice,
    /// `-Y`: the auth file; connections must authenticate first.
    pub auth_file: Option<String>,
    /// `-S`: the SASL password file (from `MEMCACHED_SASL_PWDB`); binary connections must
    /// authenticate first.
    pub sasl_pwdb: Option<String>,
    /// `-D`: the `stats detail` prefix delimiter.
    pub stat_key_prefix: u8,
    /// `-D` given: `stats detail` starts on.
    pub detail_enabled: bool,
    /// `-o idle_timeout`: close connections idle longer than this many seconds (0: never).
    pub idle_timeout_secs: u32,
    /// `-o lru_crawler|no_lru_crawler`, `lru_crawler_sleep`, `lru_crawler_tocrawl`,
    /// `slab_automove`: where the runtime settings of the same names start.
    pub crawler: CrawlerSettings,
    pub slab_automove: u8,
    /// `-o hot_lru_pct`, `warm_lru_pct`, `hot_max_factor`, `warm_max_factor`: where `lru tune`'s
    /// settings start.
    pub lru_tune: LruTuneSettings,
    /// `-o track_sizes`: `stats sizes` counts items from startup (as `stats sizes_enable`).
    pub track_sizes: bool,
    /// `-o hashpower=N` (12 to 32; 0 when not given): the hash tables start with 2^N slots in
    /// all, split across the shards ([`HASHPOWER_DEFAULT`] when not given).
    pub hashpower_init: u8,
    /// Notices for stderr at startup (ignored `-o` suboptions).
    pub notices: Vec<String>,
    pub limits: Limits,
    /// `--cluster-nodes` as typed (checked by `runtime::cluster` at startup).
    pub cluster_nodes: Option<String>,
    /// `--cluster-config`: the node list file (read at startup and on SIGHUP).
    pub cluster_config: Option<String>,
    /// `--log-dir`, `--log-fsync`, `--log-cpu`, `--log-compact-bytes`: the durability log
    /// (`None`: off).
    pub log: Option<LogSettings>,
    /// `-e`: the restartable cache's memory file (`None`: off).
    pub memory_file: Option<std::path::PathBuf>,
}

/// memcached's `-n` default is 48 bytes beyond its 48-byte item header; corecache's smallest
/// chunk is 24 bytes, 8 beyond its 16-byte header, so its default is 8.
pub const SLAB_MIN_SIZE_DEFAULT: usize = CHUNK_BYTES_SMALLEST - HEADER_BYTES_MIN;
/// The largest `-n`: the smallest chunk must leave room for more classes below a 1 MiB page.
pub const SLAB_MIN_SIZE_MAX: usize = 512 * 1024;

/// The license line `-i` prints.
pub const LICENSE: &str = concat!(
    "corecache ",
    env!("CARGO_PKG_VERSION"),
    " is licensed under the ",
    env!("CARGO_PKG_LICENSE"),
    " license.\n"
);

/// `-R` unless given. memcached's default is 20; here a connection that stops at the bound
/// resumes only next loop turn, after that turn's sends, so 20 costs a pipeline 64 deep a
/// third more CPU per request (`tuning/results/20261122-reqs-per-event.md`). 200 keeps that
/// cost small while still bounding one connection's share of a turn.
pub const REQS_PER_EVENT_DEFAULT: u32 = 200;

/// `-p` unless given (memcached's port).
pub const PORT_DEFAULT: i32 = 11211;

/// `-l` unless given. memcached listens on every interface by default; a cache has no
/// access control of its own, so corecache stays on loopback until told otherwise.
pub const LISTEN_DEFAULT: &str = "127.0.0.1";

/// The largest `-t`: shard ids are `u16` and the mesh has one queue per ordered pair of shards.
pub const SHARD_COUNT_MAX: u16 = 256;

impl Config {
    /// Parses and validates a command line. `Err(Ok(text))` is help or version text to print
    /// before exiting successfully; `Err(Err(reason))` is a one-line reason to refuse to start.
    pub fn from_args<I, T>(args: I) -> Result<Config, Result<String, String>>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args).map_err(|e| match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Ok(e.to_string())
            }
            _ => Err(one_line(&e.to_string())),
        })?;
        if args.license {
            return Err(Ok(LICENSE.to_string()));
        }
        Config::validate(args).map_err(Err)
    }

    /// Turns plain arguments into settings, or a one-line reason.
    pub fn validate(a: Args) -> Result<Config, String> {
        refuse_unserved(&a)?;
        let unix_socket = check_unix_socket(a.unix_socket.as_deref())?;
        // As memcached: `-U <port>` without `-p` moves the TCP port there too.
        let tcp_port = match a.port {
            Some(port) => port,
            None if a.udp_port != 0 => a.udp_port,
            None => PORT_DEFAULT,
        };
        // memcached's `-p -1` picks a free port, as 0 does here.
        let port = u16::try_from(tcp_port.max(0)).unwrap_or(0);
        // With a UNIX socket no TCP socket is opened, so `-l` only shows in `stats settings`
        // (as in memcached, which does not look at it then).
        let listen_text = a.listen.as_deref().unwrap_or(LISTEN_DEFAULT);
        let (listen, listen_notls) = match unix_socket {
            Some(_) => parse_listen(listen_text, port).unwrap_or_default(),
            None => parse_listen(listen_text, port)?,
        };
        // UDP on the same addresses (`-U -1` picks a free port); none with `-U 0` or `-s`.
        // Datagrams are never TLS, `notls:` or not.
        let udp_listen = match (&unix_socket, a.udp_port) {
            (None, udp_port) if udp_port != 0 => {
                parse_listen(listen_text, u16::try_from(udp_port.max(0)).unwrap_or(0))?.0
            }
            _ => Vec::new(),
        };
        if a.memory_limit_mb == 0 || a.memory_limit_mb > (1 << 30) {
            return Err(format!(
                "-m {}: must be 1..1073741824 MB",
                a.memory_limit_mb
            ));
        }
        let memory_bytes_max = usize::try_from(a.memory_limit_mb * 1024 * 1024)
            .map_err(|_| format!("-m {}: too large for this machine", a.memory_limit_mb))?;
        if a.conn_limit == 0 {
            return Err("-c 0: at least one connection must be allowed".into());
        }
        let cpus_available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shard_count = match a.threads {
            Some(0) => return Err("-t 0: at least one shard is needed".into()),
            Some(t) if t > SHARD_COUNT_MAX => {
                return Err(format!("-t {t}: at most {SHARD_COUNT_MAX} shards"))
            }
            Some(t) => t,
            None => u16::try_from(cpus_available.min(usize::from(SHARD_COUNT_MAX))).unwrap_or(1),
        };
        let item_size_max = parse_size(&a.max_item_size)?;
        if !(a.slab_growth_factor > 1.0 && a.slab_growth_factor <= 4.0) {
            return Err(format!(
                "-f {}: the slab growth factor must be above 1.0 and at most 4.0",
                a.slab_growth_factor
            ));
        }
        let per_shard = memory_bytes_max / usize::from(shard_count);
        if item_size_max > per_shard.max(1024 * 1024) {
            return Err(format!(
                "-I {}: larger than one shard's share of -m ({} bytes); raise -m or lower -I",
                a.max_item_size, per_shard
            ));
        }
        let shard_cpus = match &a.cpus {
            Some(list) => {
                let cpus = parse_cpu_list(list)?;
                if cpus.len() < usize::from(shard_count) {
                    return Err(format!(
                        "--cpus {list}: {} cpus for {shard_count} shards",
                        cpus.len()
                    ));
                }
                cpus.into_iter()
                    .take(usize::from(shard_count))
                    .map(Some)
                    .collect()
            }
            // Without `--cpus`, shards are pinned only when there is one for every CPU the
            // process may run on (its `taskset`/cpuset mask), in ascending order: the server
            // then owns those cores. With fewer shards than CPUs the kernel places them. A
            // pinned shard keeps a client on the same host (a load generator, an application)
            // from moving off its CPU: the kernel wakes the client next to the shard that
            // answered it and can move only the client away, so both run on one CPU while
            // another idles; a single-threaded memcaslap against `-t 1` on two CPUs ran at half
            // the rate it reaches unpinned (tuning/results/20261122-pinning.md).
            None => {
                let allowed = allowed_cpus();
                if usize::from(shard_count) == allowed.len() {
                    allowed.into_iter().map(Some).collect()
                } else {
                    vec![None; usize::from(shard_count)]
                }
            }
        };
        let cas_enabled = !a.disable_cas;
        let large_pages = a.large_pages;
        let process = check_process_flags(&a)?;
        let extended = parse_extended(&a.extended)?;
        let sasl_pwdb = check_sasl_flags(&a, std::env::var("MEMCACHED_SASL_PWDB").ok())?;
        let protocol = check_auth_flags(&a)?;
        let log = check_log_flags(&a)?;
        if a.memory_file.as_deref() == Some("") {
            return Err(String::from("-e: the memory file name is empty"));
        }
        if a.memory_file.is_some() && log.is_some() {
            return Err(String::from(
                "-e and --log-dir cannot be combined: the log restores the cache at startup",
            ));
        }
        let limits = Limits {
            item_size_max,
            cas_enabled,
            ..Limits::DEFAULT
        };
        Ok(Config {
            listen,
            listen_notls,
            listen_arg: a.listen.clone(),
            tls_enabled: a.enable_ssl,
            tls: extended.tls,
            port: tcp_port,
            udp_listen,
            udp_port: a.udp_port,
            unix_socket,
            unix_mask: parse_unix_mask(&a.unix_mask),
            memory_bytes_max,
            conns_max: a.conn_limit as usize,
            shard_count,
            shard_cpus,
            item_size_max,
            slab_growth_factor: a.slab_growth_factor,
            cas_enabled,
            large_pages,
            verbosity: a.verbose,
            io_backend: a.io_backend,
            borrow_idle_shards: a.borrow_idle_shards == OnOff::On,
            sched_policy: a.sched_policy,
            shutdown_enabled: a.enable_shutdown,
            pidfile: a.pidfile,
            user: a.user.filter(|u| !u.is_empty()),
            daemonize: a.daemon,
            listen_backlog: process.listen_backlog,
            reqs_per_event: process.reqs_per_event,
            evictions_enabled: !a.disable_evictions,
            flush_enabled: !a.disable_flush_all,
            watch_enabled: !a.disable_watch,
            watcher_logbuf_bytes: extended.watcher_logbuf_bytes,
            worker_logbuf_bytes: extended.worker_logbuf_bytes,
            dump_enabled: !a.disable_dumping,
            lock_memory: a.lock_memory,
            coredumps: a.enable_coredumps,
            chunk_bytes_smallest: process.chunk_bytes_smallest,
            protocol,
            auth_file: a.auth_file,
            sasl_pwdb,
            stat_key_prefix: process.stat_key_prefix,
            detail_enabled: a.prefix_delimiter.is_some(),
            idle_timeout_secs: extended.idle_timeout_secs,
            crawler: extended.crawler,
            slab_automove: extended.slab_automove,
            lru_tune: extended.lru_tune,
            track_sizes: extended.track_sizes,
            hashpower_init: extended.hashpower_init,
            notices: extended.notices,
            limits,
            cluster_nodes: a.cluster_nodes,
            cluster_config: a.cluster_config,
            log,
            memory_file: a.memory_file.map(std::path::PathBuf::from),
        })
    }
}

/// `--log-dir`, `--log-fsync`, `--log-cpu`, `--log-compact-bytes`: the companions need the
/// directory.
fn check_log_flags(a: &Args) -> Result<Option<LogSettings>, String> {
    let Some(dir) = &a.log_dir else {
        return match (a.log_fsync, a.log_cpu, a.log_compact_bytes) {
            (None, None, None) => Ok(None),
            (Some(_), _, _) => Err(String::from("--log-fsync needs --log-dir")),
            (None, Some(_), _) => Err(String::from("--log-cpu needs --log-dir")),
            (None, None, Some(_)) => Err(String::from("--log-compact-bytes needs --log-dir")),
        };
    };
    if dir.is_empty() {
        return Err(String::from("--log-dir: empty path"));
    }
    let cpu = match a.log_cpu {
        Some(cpu) => {
            if !allowed_cpus().contains(&cpu) {
                return Err(format!(
                    "--log-cpu {cpu}: not a CPU this process may run on"
                ));
            }
            Some(cpu)
        }
        None => allowed_cpus().last().copied(),
    };
    Ok(Some(LogSettings {
        dir: std::path::PathBuf::from(dir),
        fsync: a.log_fsync.unwrap_or(LogFsync::Everysec),
        cpu,
        compact_bytes: a.log_compact_bytes.unwrap_or(LOG_COMPACT_BYTES_DEFAULT),
    }))
}

/// Flags for memcached features corecache does not provide: refused with a reason rather than
/// accepted and ignored, since a client or operator relying on them would be misled.
fn refuse_unserved(a: &Args) -> Result<(), String> {
    let refused: [(bool, &str, &str); 1] =
        [(a.napi_ids.is_some(), "-N", "NAPI ids are not supported")];
    match refused.iter().find(|(given, _, _)| *given) {
        Some((_, flag, why)) => Err(format!("{flag}: {why} by corecache")),
        None => Ok(()),
    }
}

/// `-S`: memcached's refusals of ASCII (`-B ascii` or `auto` given) and of UDP, in its order,
/// then the password file. memcached falls back on Cyrus SASL's own databases without
/// `MEMCACHED_SASL_PWDB`; corecache has only the password file, so it refuses to start.
fn check_sasl_flags(a: &Args, pwdb: Option<String>) -> Result<Option<String>, String> {
    if !a.enable_sasl {
        return Ok(None);
    }
    if matches!(a.protocol, Some(p) if p != ProtocolChoice::Binary) {
        return Err("ERROR: You cannot allow the ASCII protocol while using SASL.".into());
    }
    if a.udp_port != 0 {
        return Err("ERROR: Cannot enable UDP while using binary SASL authentication.".into());
    }
    match pwdb {
        Some(path) if !path.is_empty() => Ok(Some(path)),
        _ => Err(
            "-S: set MEMCACHED_SASL_PWDB to a file of user:password lines; corecache \
                  reads no Cyrus SASL database"
                .into(),
        ),
    }
}

/// `-B` as it applies, and the flags `-Y` cannot go with, refused with memcached's words (it
/// checks them after its other flags): with an auth file only the ASCII protocol is spoken
/// (the default becomes `ascii`; `-B auto` or `binary` is refused), and no UDP port may be
/// served (whatever `-s` says).
fn check_auth_flags(a: &Args) -> Result<ProtocolChoice, String> {
    if a.auth_file.is_none() {
        // `-S` speaks binary only (its refusals were checked before).
        let default = if a.enable_sasl {
            ProtocolChoice::Binary
        } else {
            ProtocolChoice::Auto
        };
        return Ok(a.protocol.unwrap_or(default));
    }
    match a.protocol {
        None | Some(ProtocolChoice::Ascii) => {}
        Some(_) => return Err(
            "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens."
                .into(),
        ),
    }
    if a.udp_port != 0 {
        return Err("Cannot use UDP with ascii authentication enabled (-U 0 to disable)".into());
    }
    Ok(ProtocolChoice::Ascii)
}

/// The longest UNIX socket path: `sun_path` holds 108 bytes, the last a NUL.
pub const UNIX_PATH_BYTES_MAX: usize = 107;

/// `-s`: a path that fits a UNIX socket address. memcached binds an empty path as an abstract
/// socket of NULs and cuts a long one short; both are refused here instead.
pub fn check_unix_socket(path: Option<&str>) -> Result<Option<String>, String> {
    match path {
        None => Ok(None),
        Some("") => Err("-s: the UNIX socket path is empty".into()),
        Some(p) if p.len() > UNIX_PATH_BYTES_MAX => Err(format!(
            "-s {p}: longer than the {UNIX_PATH_BYTES_MAX} bytes a UNIX socket path may have"
        )),
        Some(p) => Ok(Some(p.to_string())),
    }
}

/// `-a <mask>` as memcached reads it, so every mask means what it means there: C's
/// `strtol(text, NULL, 8)` (leading white space, an optional sign, then octal digits up to the
/// first other byte; no digits is 0; out of range saturates at the 64-bit limits), kept in a C
/// `int` (the low 32 bits). `stats settings` shows the result in octal as `umask`.
pub fn parse_unix_mask(text: &str) -> i32 {
    let s = text.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    let mut saturated = false;
    for d in digits.bytes().take_while(|b| (b'0'..=b'7').contains(b)) {
        match value
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
        {
            Some(v) => value = v,
            None => {
                saturated = true;
                break;
            }
        }
    }
    let long = match (saturated, negative) {
        (true, false) => i64::MAX,
        (true, true) => i64::MIN,
        (false, false) => value,
        (false, true) => -value,
    };
    // C's conversion of a long to an int keeps the low 32 bits.
    long as i32
}

/// The checked values of `-b -R -n -D`.
struct ProcessFlags {
    listen_backlog: i32,
    reqs_per_event: u32,
    chunk_bytes_smallest: usize,
    stat_key_prefix: u8,
}

fn check_process_flags(a: &Args) -> Result<ProcessFlags, String> {
    if a.listen_backlog < 1 {
        return Err(format!(
            "-b {}: the backlog must be at least 1",
            a.listen_backlog
        ));
    }
    if a.max_reqs_per_event == 0 {
        return Err("-R 0: the number of requests per event must be greater than 0".into());
    }
    if a.slab_min_size == 0 || a.slab_min_size > SLAB_MIN_SIZE_MAX {
        return Err(format!(
            "-n {}: must be 1..{SLAB_MIN_SIZE_MAX} bytes",
            a.slab_min_size
        ));
    }
    let stat_key_prefix = match a.prefix_delimiter.as_deref() {
        None => crate::prefix_stats::DELIMITER,
        Some(d) => match d.as_bytes() {
            [c] if c.is_ascii_graphic() => *c,
            _ => {
                return Err(format!(
                    "-D {d:?}: the delimiter must be one printable character"
                ))
            }
        },
    };
    Ok(ProcessFlags {
        listen_backlog: a.listen_backlog,
        reqs_per_event: a.max_reqs_per_event,
        chunk_bytes_smallest: chunk_bytes_smallest(a.slab_min_size),
        stat_key_prefix,
    })
}

/// The smallest chunk for `-n <bytes>`: the item header plus that many bytes, 8-byte aligned,
/// never below [`CHUNK_BYTES_SMALLEST`].
pub fn chunk_bytes_smallest(slab_min_size: usize) -> usize {
    (HEADER_BYTES_MIN + slab_min_size)
        .next_multiple_of(8)
        .max(CHUNK_BYTES_SMALLEST)
}

/// What the `-o` suboptions decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Extended {
    pub idle_timeout_secs: u32,
    pub crawler: CrawlerSettings,
    /// 0: pages move only to a class that has none; 1: also by eviction pressure (default);
    /// 2: on every eviction where another class is under less pressure.
    pub slab_automove: u8,
    pub lru_tune: LruTuneSettings,
    pub track_sizes: bool,
    /// `hashpower`: 0 when not given.
    pub hashpower_init: u8,
    /// `watcher_logbuf_size` and `worker_logbuf_size`, in bytes (given in KB).
    pub watcher_logbuf_bytes: usize,
    pub worker_logbuf_bytes: usize,
    /// `ssl_*`: TLS settings as given.
    pub tls: TlsOptions,
    /// One line naming the ignored suboptions and why, if any were.
    pub notices: Vec<String>,
}

/// memcached's `-o ssl_*` suboptions as given (`None`: not given). Their values are checked by
/// `runtime::tls` at startup (with memcached's messages and exit statuses), with `-Z` or not,
/// since `stats settings` shows them either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `ssl_chain_cert`: the server's certificate chain, PEM.
    pub chain_cert: Option<String>,
    /// `ssl_key`: the server's private key.
    pub key: Option<String>,
    /// `ssl_keyformat`: 1 PEM (the default), 2 DER.
    pub keyformat: Option<String>,
    /// `ssl_verify_mode`: 0 none, 1 request, 2 require, 3 once.
    pub verify_mode: Option<String>,
    /// `ssl_ca_cert`: CA certificates client certificates are checked against, PEM.
    pub ca_cert: Option<String>,
    /// `ssl_ciphers`: TLS 1.2 cipher suites, in OpenSSL's names.
    pub ciphers: Option<String>,
    /// `ssl_wbuf_size`: memcached's per-connection TLS write buffer, in KB.
    pub wbuf_size: Option<String>,
    /// `ssl_session_cache`: keep sessions for resumption.
    pub session_cache: bool,
    /// `ssl_kernel_tls`: memcached's kernel TLS offload (accepted; corecache encrypts in user
    /// space).
    pub kernel_tls: bool,
    /// `ssl_min_version`: 0 TLS 1.0, 1 TLS 1.1, 2 TLS 1.2 (the default), 3 TLS 1.3.
    pub min_version: Option<String>,
}

impl Default for Extended {
    fn default() -> Extended {
        Extended {
            idle_timeout_secs: 0,
            crawler: CrawlerSettings::default(),
            slab_automove: 1,
            lru_tune: LruTuneSettings::default(),
            track_sizes: false,
            hashpower_init: 0,
            watcher_logbuf_bytes: 256 * 1024,
            worker_logbuf_bytes: 64 * 1024,
            tls: TlsOptions::default(),
            notices: Vec::new(),
        }
    }
}

/// memcached's segmented-LRU settings (`-o hot_lru_pct=`, `warm_lru_pct=`, `hot_max_factor=`,
/// `warm_max_factor=`, and later `lru tune`), read and checked as memcached reads them (`atoi`,
/// `atof`) and shown by `stats settings`. corecache's CLOCK eviction has no segments, so they
/// change nothing else, as in memcached without its LRU maintainer. Factors as `f64` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LruTuneSettings {
    pub hot_pct: u32,
    pub warm_pct: u32,
    pub hot_factor_bits: u64,
    pub warm_factor_bits: u64,
}

impl Default for LruTuneSettings {
    /// memcached 1.6.18's defaults.
    fn default() -> LruTuneSettings {
        LruTuneSettings {
            hot_pct: 20,
            warm_pct: 40,
            hot_factor_bits: 0.2f64.to_bits(),
            warm_factor_bits: 2.0f64.to_bits(),
        }
    }
}

/// The crawler's settings, as memcached names them (`lru_crawler`, `lru_crawler_sleep`,
/// `lru_crawler_tocrawl`), changed at run time by `lru_crawler enable|disable|sleep|tocrawl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrawlerSettings {
    pub enabled: bool,
    /// Microseconds between slices of an `lru_crawler crawl` pass (at most one second).
    pub sleep_us: u32,
    /// Items checked per class in one pass, at most (0: all).
    pub tocrawl: u32,
}

impl Default for CrawlerSettings {
    fn default() -> CrawlerSettings {
        CrawlerSettings {
            enabled: true,
            sleep_us: CRAWLER_SLEEP_US_DEFAULT,
            tocrawl: 0,
        }
    }
}

/// The hash tables' slots in all at startup are 2^this, as memcached's table starts (its
/// `HASHPOWER_DEFAULT`), unless `-o hashpower` says otherwise.
pub const HASHPOWER_DEFAULT: u8 = 16;
/// The range `-o hashpower` takes, as memcached's.
pub const HASHPOWER_MIN: u8 = 12;
pub const HASHPOWER_MAX: u8 = 32;

/// memcached's default `lru_crawler_sleep`.
pub const CRAWLER_SLEEP_US_DEFAULT: u32 = 100;
pub use crate::protocol::CRAWLER_SLEEP_US_MAX;

/// memcached's `-o` suboptions that tune machinery corecache does not have, with the reason.
/// Accepted (so existing command lines start) and named in one startup notice.
const EXTENDED_IGNORED: &[(&str, &str)] = &[
    (
        "no_maxconns_fast",
        "over-limit connections are always answered and closed",
    ),
    ("no_hashexpand", "the hash table grows incrementally"),
    ("tail_repair_time", "no item refcounts to repair"),
    ("lru_maintainer", "CLOCK eviction, no LRU maintainer"),
    ("no_lru_maintainer", "CLOCK eviction, no LRU maintainer"),
    ("temporary_ttl", "CLOCK eviction, no temporary LRU"),
    ("slab_reassign", "pages move between classes on demand"),
    ("no_slab_reassign", "pages move between classes on demand"),
    (
        "slab_automove_ratio",
        "pages move between classes on demand",
    ),
    (
        "slab_automove_window",
        "pages move between classes on demand",
    ),
    (
        "slab_automove_freeratio",
        "pages move between classes on demand",
    ),
    ("slab_sizes", "slab classes come from -f and -n"),
    ("slab_chunk_max", "slab classes come from -f and -n"),
    ("no_chunked_items", "items are never chunked"),
    (
        "read_buf_mem_limit",
        "read buffers are bounded per connection",
    ),
    ("no_inline_ascii_resp", "nothing to turn off"),
    ("inline_ascii_response", "nothing to turn on"),
    ("modern", "nothing to turn on"),
    ("drop_privileges", "no seccomp sandbox"),
    ("no_drop_privileges", "no seccomp sandbox"),
    ("sock_cookie_id", "no socket cookies"),
];

/// Prefixes of suboption families that are ignored as a whole: extstore.
const EXTENDED_IGNORED_PREFIXES: &[(&str, &str)] = &[("ext_", "no external storage")];

/// Parses memcached's `-o` lists. Honoured: `idle_timeout=<secs>`, `hashpower=<12-32>`,
/// `maxconns_fast` (corecache's only over-limit behaviour), `hash_algorithm=xxh3` (corecache's
/// hash), `lru_crawler`,
/// `no_lru_crawler`, `lru_crawler_sleep=<us>`, `lru_crawler_tocrawl=<n>`, `slab_automove=<0-2>`
/// (refused out of range with memcached's messages). `hash_algorithm=`
/// `murmur3|jenkins` is accepted with a notice (the hash table's hash is internal; corecache
/// always uses xxh3). Suboptions tuning machinery corecache lacks are accepted and named in one
/// notice line. Unknown names are refused with memcached's message.
pub fn parse_extended(lists: &[String]) -> Result<Extended, String> {
    let mut out = Extended::default();
    let mut ignored: Vec<String> = Vec::new();
    for opt in lists
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|o| !o.is_empty())
    {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        match name {
            "maxconns_fast" => {}
            "idle_timeout" => {
                let v = value.ok_or("-o idle_timeout: missing numeric argument")?;
                out.idle_timeout_secs = v
                    .parse()
                    .map_err(|_| format!("-o idle_timeout={v}: not a number of seconds"))?;
            }
            "watcher_logbuf_size" | "worker_logbuf_size" => {
                let v = value.ok_or(format!("Missing {name} argument"))?;
                let kb: usize = v
                    .parse()
                    .ok()
                    .filter(|&kb: &usize| kb <= 1 << 20)
                    .ok_or(format!("could not parse argument to {name}"))?;
                if name == "watcher_logbuf_size" {
                    out.watcher_logbuf_bytes = kb * 1024;
                } else {
                    out.worker_logbuf_bytes = kb * 1024;
                }
            }
            "hot_lru_pct" | "warm_lru_pct" => {
                let v = value.ok_or(format!("Missing {name} argument"))?;
                let pct = crate::protocol::parse::atoi(v.as_bytes());
                if !(1..80).contains(&pct) {
                    return Err(format!("{name} must be > 1 and < 80"));
                }
                let pct = pct as u32;
                if name == "hot_lru_pct" {
                    out.lru_tune.hot_pct = pct;
                } else {
                    out.lru_tune.warm_pct = pct;
                }
                ignored.push(format!("{name} (CLOCK eviction, no segmented LRU)"));
            }
            "hot_max_factor" | "warm_max_factor" => {
                let v = value.ok_or(format!("Missing {name} argument"))?;
                let factor = crate::protocol::parse::atof(v.as_bytes());
                if factor <= 0.0 {
                    return Err(format!("{name} must be > 0"));
                }
                if name == "hot_max_factor" {
                    out.lru_tune.hot_factor_bits = factor.to_bits();
                } else {
                    out.lru_tune.warm_factor_bits = factor.to_bits();
                }
                ignored.push(format!("{name} (CLOCK eviction, no segmented LRU)"));
            }
            "lru_crawler" => out.crawler.enabled = true,
            "no_lru_crawler" => out.crawler.enabled = false,
            "no_slab_automove" => out.slab_automove = 0,
            "track_sizes" => out.track_sizes = true,
            // memcached reads the value with atoi and takes 12 to 32.
            "hashpower" => {
                let v = value.ok_or("Missing numeric argument for hashpower")?;
                let power = crate::protocol::parse::atoi(v.as_bytes());
                if power < i32::from(HASHPOWER_MIN) {
                    return Err(format!(
                        "Initial hashtable multiplier of {power} is too low"
                    ));
                }
                if power > i32::from(HASHPOWER_MAX) {
                    return Err(format!(
                        "Initial hashtable multiplier of {power} is too high; choose a value \
                         based on \"STAT hash_power_level\" from a running instance"
                    ));
                }
                out.hashpower_init = power as u8;
            }
            // memcached's 1.4 defaults: no crawler, no automove (the rest of what it turns off,
            // corecache does not have).
            "no_modern" => {
                out.crawler.enabled = false;
                out.slab_automove = 0;
            }
            "lru_crawler_sleep" => {
                out.crawler.sleep_us = value
                    .and_then(|v| v.parse().ok())
                    .filter(|&us| us <= CRAWLER_SLEEP_US_MAX)
                    .ok_or("LRU crawler sleep must be between 0 and 1 second")?;
            }
            "lru_crawler_tocrawl" => {
                out.crawler.tocrawl = value
                    .and_then(|v| v.parse().ok())
                    .ok_or("lru_crawler_tocrawl takes a numeric 32bit value")?;
            }
            "slab_automove" => {
                // Bare `slab_automove` is mode 1, as in memcached.
                out.slab_automove = match value {
                    None => 1,
                    Some(v) => v
                        .parse()
                        .ok()
                        .filter(|&mode| mode <= 2)
                        .ok_or("slab_automove must be between 0 and 2")?,
                };
            }
            "ssl_chain_cert" | "ssl_key" | "ssl_keyformat" | "ssl_verify_mode" | "ssl_ca_cert"
            | "ssl_ciphers" | "ssl_wbuf_size" | "ssl_min_version" => {
                let v = value.ok_or(format!("Missing {name} argument"))?.to_string();
                let tls = &mut out.tls;
                let field = match name {
                    "ssl_chain_cert" => &mut tls.chain_cert,
                    "ssl_key" => &mut tls.key,
                    "ssl_keyformat" => &mut tls.keyformat,
                    "ssl_verify_mode" => &mut tls.verify_mode,
                    "ssl_ca_cert" => &mut tls.ca_cert,
                    "ssl_ciphers" => &mut tls.ciphers,
                    "ssl_wbuf_size" => &mut tls.wbuf_size,
                    _ => &mut tls.min_version,
                };
                *field = Some(v);
            }
            // Flags in memcached: any value (or none) turns them on.
            "ssl_session_cache" => out.tls.session_cache = true,
            "ssl_kernel_tls" => out.tls.kernel_tls = true,
            "hash_algorithm" => match value {
                Some("xxh3") => {}
                Some(v @ ("murmur3" | "jenkins")) => ignored.push(format!(
                    "hash_algorithm={v} (corecache always hashes keys with xxh3)"
                )),
                _ => {
                    return Err("-o hash_algorithm: unknown option (jenkins, murmur3, xxh3)".into())
                }
            },
            _ => {
                let why = EXTENDED_IGNORED
                    .iter()
                    .chain(EXTENDED_IGNORED_PREFIXES)
                    .find(|(n, _)| name == *n || (n.ends_with('_') && name.starts_with(n)))
                    .map(|(_, why)| *why)
                    .ok_or_else(|| format!("Illegal suboption \"{opt}\""))?;
                ignored.push(format!("{name} ({why})"));
            }
        }
    }
    if out.lru_tune.hot_pct + out.lru_tune.warm_pct > 80 {
        return Err("hot_lru_pct + warm_lru_pct cannot be more than 80% combined".into());
    }
    if !ignored.is_empty() {
        out.notices.push(format!(
            "ignoring -o options for memcached machinery corecache does not have: {}",
            ignored.join(", ")
        ));
    }
    Ok(out)
}

/// Folds a multi-line message into one line, without clap's "error:" prefix and help hint.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `1m`, `512k`, `2048` (bytes) -> bytes, within 1k..1024m.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1024usize),
        Some((i, 'm' | 'M')) => (&t[..i], 1024 * 1024),
        _ => (t, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("-I {s}: not a size (use e.g. 1m, 512k)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("-I {s}: too large"))?;
    if !(1024..=1024 * 1024 * 1024).contains(&bytes) {
        return Err(format!("-I {s}: must be between 1k and 1024m"));
    }
    Ok(bytes)
}

/// The CPUs this process may run on (its affinity mask), ascending.
fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

/// `0-3,6` -> [0, 1, 2, 3, 6].
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpus {s}: expected a list like 0-3,6");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("--cpus {s}: empty"));
    }
    Ok(out)
}

/// `127.0.0.1,::1,10.0.0.1:11311,notls:127.0.0.1:11312` with default port -> socket
/// addresses, and for each whether it was marked `notls:` (plain under `-Z`).
fn parse_listen(list: &str, port: u16) -> Result<(Vec<SocketAddr>, Vec<bool>), String> {
    let mut out = Vec::new();
    let mut notls = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (part, plain) = match part.strip_prefix("notls:") {
            Some(rest) => (rest, true),
            None => (part, false),
        };
        notls.push(plain);
        if let Ok(ip) = part.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
        } else if let Ok(sa) = part.parse::<SocketAddr>() {
            out.push(sa);
        } else {
            let resolved = (part, port)
                .to_socket_addrs()
                .map_err(|e| format!("-l {part}: {e}"))?
                .next()
                .ok_or_else(|| format!("-l {part}: no address"))?;
            out.push(resolved);
        }
    }
    if out.is_empty() {
        return Err("-l: no address to listen on".into());
    }
    Ok((out, notls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, String> {
        Config::from_args(std::iter::once("corecache").chain(args.iter().copied()))
            .map_err(|e| e.unwrap_or_else(|reason| reason))
    }

    #[test]
    fn log_compact_bytes_needs_the_log_and_defaults_to_64_mib() {
        let e = cfg(&["--log-compact-bytes", "1000"]).unwrap_err();
        assert!(e.contains("--log-compact-bytes needs --log-dir"), "{e}");
        let c = cfg(&["--log-dir", "/nonexistent/log"]).unwrap();
        assert_eq!(c.log.map(|l| l.compact_bytes), Some(64 << 20));
        let c = cfg(&["--log-dir", "/nonexistent/log", "--log-compact-bytes", "0"]).unwrap();
        assert_eq!(c.log.map(|l| l.compact_bytes), Some(0));
        assert!(cfg(&["--log-dir", "d", "--log-compact-bytes", "-1"]).is_err());
    }

    #[test]
    fn port_minus_one_picks_a_free_port() {
        let c = cfg(&["-p", "-1", "-l", "127.0.0.1"]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:0".parse().unwrap()]);
        let c = cfg(&["-p", "11300", "-l", "127.0.0.1"]).unwrap();
        assert_eq!(c.listen[0].port(), 11300);
        for bad in ["-2", "65536", "x"] {
            assert!(cfg(&["-p", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn udp_follows_memcached_ports() {
        // Off by default and with -U 0.
        let c = cfg(&[]).unwrap();
        assert!(c.udp_listen.is_empty());
        assert_eq!((c.port, c.udp_port), (11211, 0));
        assert!(cfg(&["-U", "0"]).unwrap().udp_listen.is_empty());
        // On every -l address; an address's own port wins, as for TCP.
        let c = cfg(&[
            "-U",
            "11300",
            "-p",
            "11400",
            "-l",
            "127.0.0.1,127.0.0.2:999",
        ])
        .unwrap();
        assert_eq!(
            c.udp_listen,
            vec![
                "127.0.0.1:11300".parse().unwrap(),
                "127.0.0.2:999".parse().unwrap()
            ]
        );
        assert_eq!(c.listen[0].port(), 11400);
        // -U alone moves TCP there too; -U -1 picks free ports.
        let c = cfg(&["-U", "11300"]).unwrap();
        assert_eq!((c.port, c.listen[0].port()), (11300, 11300));
        let c = cfg(&["-U", "-1", "-p", "0"]).unwrap();
        assert_eq!(c.udp_listen, vec!["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(c.udp_port, -1);
        // A UNIX socket turns UDP off; -U is kept for `stats settings`.
        let c = cfg(&["-s", "/tmp/s.sock", "-U", "11300"]).unwrap();
        assert!(c.udp_listen.is_empty());
        assert_eq!((c.udp_port, c.port), (11300, 11300));
        for bad in ["-2", "65536", "x"] {
            assert!(cfg(&["-U", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_memcached_defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:11211".parse().unwrap()]);
        assert_eq!(c.memory_bytes_max, 64 << 20);
        assert_eq!(c.conns_max, 1024);
        assert_eq!(c.item_size_max, 1 << 20);
        assert!(c.cas_enabled);
        assert_eq!(c.slab_growth_factor, 1.25);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2000m").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), Ok(vec![0, 1, 2, 3, 6]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn listen_lists() {
        let c = cfg(&["-l", "127.0.0.1,127.0.0.2:999", "-p", "0"]).unwrap();
        assert_eq!(
            c.listen,
            vec![
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.2:999".parse().unwrap()
            ]
        );
        // Kept as typed, for memcached's listen-failure message; absent when not given.
        assert_eq!(c.listen_arg.as_deref(), Some("127.0.0.1,127.0.0.2:999"));
        assert_eq!(cfg(&["-p", "0"]).unwrap().listen_arg, None);
    }

    #[test]
    fn shard_threads_keep_their_policy_unless_told() {
        assert_eq!(cfg(&[]).unwrap().sched_policy, None);
        let batch = cfg(&["--sched-policy", "batch"]).unwrap();
        assert_eq!(batch.sched_policy, Some(SchedPolicy::Batch));
        let normal = cfg(&["--sched-policy", "normal"]).unwrap();
        assert_eq!(normal.sched_policy, Some(SchedPolicy::Normal));
        assert_eq!(SchedPolicy::Batch.name(), "batch");
        assert_eq!(SchedPolicy::Normal.name(), "normal");
        assert!(cfg(&["--sched-policy", "fifo"]).is_err());
    }

    #[test]
    fn borrowing_idle_shards_is_on_unless_turned_off() {
        assert!(cfg(&[]).unwrap().borrow_idle_shards);
        assert!(
            cfg(&["--borrow-idle-shards", "on"])
                .unwrap()
                .borrow_idle_shards
        );
        assert!(
            !cfg(&["--borrow-idle-shards", "off"])
                .unwrap()
                .borrow_idle_shards
        );
        let e = cfg(&["--borrow-idle-shards", "maybe"]).unwrap_err();
        assert!(e.contains("maybe"), "{e}");
    }

    #[test]
    fn bad_values_have_reasons() {
        assert!(cfg(&["-t", "0"]).is_err());
        assert!(cfg(&["-f", "1.0"]).is_err());
        assert!(cfg(&["-m", "0"]).is_err());
        assert!(cfg(&["-c", "0"]).is_err());
        assert!(cfg(&["-I", "10k", "-t", "2"]).is_ok());
        assert!(cfg(&["-t", "2", "--cpus", "0"]).is_err());
        let err = cfg(&["--io-backend", "kqueue"]).unwrap_err();
        assert!(err.contains("kqueue") && !err.contains('\n'), "{err}");
    }

    /// Every memcached flag corecache serves, in its short and its long form.
    #[test]
    fn memcached_flags_short_and_long() {
        let forms: [(&[&str], &[&str]); 12] = [
            (&["-u", "nobody"], &["--user", "nobody"]),
            (&["-d"], &["--daemon"]),
            (&["-b", "64"], &["--listen-backlog", "64"]),
            (&["-R", "5"], &["--max-reqs-per-event", "5"]),
            (&["-M"], &["--disable-evictions"]),
            (&["-F"], &["--disable-flush-all"]),
            (&["-X"], &["--disable-dumping"]),
            (&["-k"], &["--lock-memory"]),
            (&["-r"], &["--enable-coredumps"]),
            (&["-n", "48"], &["--slab-min-size", "48"]),
            (&["-B", "binary"], &["--protocol", "binary"]),
            (&["-o", "idle_timeout=7"], &["--extended", "idle_timeout=7"]),
        ];
        for (short, long) in forms {
            let a = cfg(short).unwrap_or_else(|e| panic!("{short:?}: {e}"));
            let b = cfg(long).unwrap_or_else(|e| panic!("{long:?}: {e}"));
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{short:?} vs {long:?}");
            let default = cfg(&[]).unwrap();
            assert_ne!(
                format!("{a:?}"),
                format!("{default:?}"),
                "{short:?} changed nothing"
            );
        }
        let c = cfg(&[
            "-u", "nobody", "-d", "-b", "64", "-R", "5", "-M", "-F", "-X", "-k", "-r",
        ])
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert!(c.daemonize && c.lock_memory && c.coredumps);
        assert_eq!((c.listen_backlog, c.reqs_per_event), (64, 5));
        assert!(!c.evictions_enabled && !c.flush_enabled && !c.dump_enabled);
        let c = cfg(&["-n", "48", "-B", "ascii", "-D", "#", "-o", "idle_timeout=7"]).unwrap();
        assert_eq!(c.chunk_bytes_smallest, 64);
        assert_eq!(c.protocol, ProtocolChoice::Ascii);
        assert_eq!(c.stat_key_prefix, b'#');
        assert!(c.detail_enabled);
        assert_eq!(c.idle_timeout_secs, 7);
        assert!(c.notices.is_empty());
        // -W refuses `watch`; the log buffers are given in KB.
        assert!(!cfg(&["-W"]).unwrap().watch_enabled);
        assert!(cfg(&[]).unwrap().watch_enabled);
        let c = cfg(&["-o", "watcher_logbuf_size=8,worker_logbuf_size=16"]).unwrap();
        assert_eq!(
            (c.watcher_logbuf_bytes, c.worker_logbuf_bytes),
            (8192, 16384)
        );
        assert!(cfg(&["-o", "watcher_logbuf_size=x"]).is_err());
        assert!(cfg(&["-o", "worker_logbuf_size"]).is_err());
        // -vvv counts, -u with an empty name is no user.
        assert_eq!(cfg(&["-vvv"]).unwrap().verbosity, 3);
        assert_eq!(cfg(&["-u", ""]).unwrap().user, None);
    }

    #[test]
    fn memcached_flag_defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.user, None);
        assert!(!c.daemonize && !c.lock_memory && !c.coredumps);
        assert_eq!(
            (c.listen_backlog, c.reqs_per_event),
            (1024, REQS_PER_EVENT_DEFAULT)
        );
        assert!(c.evictions_enabled && c.flush_enabled && c.dump_enabled);
        assert_eq!(c.chunk_bytes_smallest, CHUNK_BYTES_SMALLEST);
        assert_eq!(c.protocol, ProtocolChoice::Auto);
        assert_eq!((c.stat_key_prefix, c.detail_enabled), (b':', false));
        assert_eq!(c.idle_timeout_secs, 0);
    }

    #[test]
    fn memcached_flag_bad_values() {
        for (args, expect) in [
            (&["-b", "0"][..], "-b 0"),
            (&["-b", "x"], "-b"),
            (&["-R", "0"], "-R 0"),
            (&["-n", "0"], "-n 0"),
            (&["-n", "600000"], "-n 600000"),
            (&["-B", "foo"], "foo"),
            (&["-D", ""], "-D"),
            (&["-D", "ab"], "-D"),
            (&["-o", "bogus"], "Illegal suboption \"bogus\""),
            (&["-o", "idle_timeout"], "idle_timeout"),
            (&["-o", "idle_timeout=x"], "idle_timeout=x"),
            (&["-o", "hash_algorithm=md5"], "hash_algorithm"),
        ] {
            let err = cfg(args).unwrap_err();
            assert!(err.contains(expect), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{args:?}: {err}");
        }
    }

    /// Features corecache does not provide are refused, short and long form.
    #[test]
    fn unserved_features_are_refused() {
        for (short, long, flag) in [(&["-N", "1"][..], &["--napi_ids", "1"][..], "-N")] {
            for args in [short, long] {
                let err = cfg(args).unwrap_err();
                assert!(
                    err.starts_with(flag) && err.contains("corecache"),
                    "{args:?}: {err}"
                );
            }
        }
    }

    /// `-e`: short and long form; not with the log (which restores the cache itself), not empty.
    #[test]
    fn memory_file_flag() {
        assert_eq!(cfg(&[]).unwrap().memory_file, None);
        for args in [&["-e", "/tmp/m"][..], &["--memory-file", "/tmp/m"][..]] {
            assert_eq!(
                cfg(args).unwrap().memory_file,
                Some(std::path::PathBuf::from("/tmp/m"))
            );
        }
        let e = cfg(&["-e", "/tmp/m", "--log-dir", "/tmp/l"]).unwrap_err();
        assert!(e.contains("-e and --log-dir cannot be combined"), "{e}");
        let e = cfg(&["-e", ""]).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

    /// `-S`: memcached's refusals in its order, binary by default, and the password file.
    #[test]
    fn sasl_flags() {
        let args = |list: &[&str]| {
            let mut all = vec!["corecache"];
            all.extend_from_slice(list);
            Args::try_parse_from(all).unwrap()
        };
        let pw = || Some("/tmp/pw".to_string());
        assert_eq!(check_sasl_flags(&args(&[]), None), Ok(None));
        assert_eq!(check_sasl_flags(&args(&["-S"]), pw()), Ok(pw()));
        assert_eq!(
            check_sasl_flags(&args(&["-S", "-B", "binary"]), pw()),
            Ok(pw())
        );
        for (list, expect) in [
            (
                &["-S", "-B", "ascii"][..],
                "ASCII protocol while using SASL",
            ),
            (
                &["-S", "-B", "auto", "-U", "1"],
                "ASCII protocol while using SASL",
            ),
            (
                &["-S", "-U", "11211"],
                "Cannot enable UDP while using binary SASL",
            ),
        ] {
            let err = check_sasl_flags(&args(list), pw()).unwrap_err();
            assert!(
                err.starts_with("ERROR: ") && err.contains(expect),
                "{list:?}: {err}"
            );
        }
        for missing in [None, Some(String::new())] {
            let err = check_sasl_flags(&args(&["-S"]), missing).unwrap_err();
            assert!(err.starts_with("-S: set MEMCACHED_SASL_PWDB"), "{err}");
        }
        assert_eq!(check_auth_flags(&args(&["-S"])), Ok(ProtocolChoice::Binary));
        // With an auth file too, memcached speaks ASCII (its -Y check comes second).
        assert_eq!(
            check_auth_flags(&args(&["-S", "-Y", "/tmp/a"])),
            Ok(ProtocolChoice::Ascii)
        );
    }

    /// `-Z`, `-l notls:` and the `-o ssl_*` suboptions, kept as given for `runtime::tls`.
    #[test]
    fn tls_flags_and_options() {
        for flag in ["-Z", "--enable-ssl"] {
            assert!(cfg(&[flag]).unwrap().tls_enabled);
        }
        let c = cfg(&["-l", "127.0.0.1,notls:127.0.0.1:11312", "-p", "11311"]).unwrap();
        assert_eq!(
            c.listen,
            vec![
                "127.0.0.1:11311".parse().unwrap(),
                "127.0.0.1:11312".parse().unwrap()
            ]
        );
        assert_eq!(c.listen_notls, vec![false, true]);
        assert!(!c.tls_enabled);
        let ext = |list: &str| parse_extended(&[list.to_string()]);
        let e =
            ext("ssl_chain_cert=c.pem,ssl_key=k.pem,ssl_verify_mode=x,ssl_session_cache").unwrap();
        assert!(e.notices.is_empty(), "{:?}", e.notices);
        assert_eq!(e.tls.chain_cert.as_deref(), Some("c.pem"));
        assert_eq!(e.tls.key.as_deref(), Some("k.pem"));
        assert_eq!(
            e.tls.verify_mode.as_deref(),
            Some("x"),
            "checked at startup"
        );
        assert!(e.tls.session_cache && !e.tls.kernel_tls);
        assert!(ext("ssl_key").is_err());
    }

    /// `-Y`: the protocol becomes ASCII; binary (or auto) and UDP are refused as memcached
    /// refuses them.
    #[test]
    fn auth_file_flag() {
        for args in [&["-Y", "/tmp/a"][..], &["--auth-file", "/tmp/a"]] {
            let c = cfg(args).unwrap();
            assert_eq!(c.auth_file.as_deref(), Some("/tmp/a"));
            assert_eq!(c.protocol, ProtocolChoice::Ascii);
        }
        assert_eq!(cfg(&[]).unwrap().auth_file, None);
        let c = cfg(&["-Y", "/tmp/a", "-B", "ascii"]).unwrap();
        assert_eq!(c.protocol, ProtocolChoice::Ascii);
        for b in ["auto", "binary"] {
            let err = cfg(&["-Y", "/tmp/a", "-B", b]).unwrap_err();
            assert_eq!(
                err,
                "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens."
            );
        }
        for args in [
            &["-Y", "/tmp/a", "-U", "11211"][..],
            &["-Y", "/tmp/a", "-U", "-1"],
            &["-Y", "/tmp/a", "-U", "11211", "-s", "/tmp/s"],
        ] {
            let err = cfg(args).unwrap_err();
            assert_eq!(
                err, "Cannot use UDP with ascii authentication enabled (-U 0 to disable)",
                "{args:?}"
            );
        }
        // The protocol check comes first, as in memcached.
        let err = cfg(&["-Y", "/tmp/a", "-U", "1", "-B", "binary"]).unwrap_err();
        assert!(err.contains("BINARY"), "{err}");
    }

    #[test]
    fn unix_socket_flags() {
        let c = cfg(&[]).unwrap();
        assert_eq!((c.unix_socket.as_deref(), c.unix_mask), (None, 0o700));
        let a = cfg(&["-s", "/tmp/s.sock", "-a", "0777"]).unwrap();
        let b = cfg(&["--unix-socket", "/tmp/s.sock", "--unix-mask", "0777"]).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(
            (a.unix_socket.as_deref(), a.unix_mask),
            (Some("/tmp/s.sock"), 0o777)
        );
        // No TCP socket is opened with -s, so -l is not resolved and cannot fail startup.
        let c = cfg(&[
            "-s",
            "/tmp/s.sock",
            "-l",
            "no-such-host.invalid",
            "-p",
            "1234",
        ])
        .unwrap();
        assert!(c.listen.is_empty());
        assert_eq!(c.port, 1234);
        assert!(cfg(&["-l", "no-such-host.invalid"]).is_err());
        // -a alone is kept (memcached shows it in `stats settings` without -s too).
        assert_eq!(cfg(&["-a", "644"]).unwrap().unix_mask, 0o644);
        let longest = format!("/{}", "x".repeat(UNIX_PATH_BYTES_MAX - 1));
        assert!(cfg(&["-s", &longest]).is_ok());
        for (path, expect) in [("", "empty"), (&*format!("{longest}y"), "107 bytes")] {
            let err = cfg(&["-s", path]).unwrap_err();
            assert!(
                err.starts_with("-s") && err.contains(expect),
                "{path:?}: {err}"
            );
        }
    }

    /// `-a` means what strtol(text, NULL, 8) stored in an int means (each checked against
    /// memcached's `stats settings` umask and the socket file's mode).
    #[test]
    fn unix_mask_parses_as_c_strtol_base_8() {
        for (text, mask) in [
            ("0700", 0o700),
            ("700", 0o700),
            ("0777", 0o777),
            ("1777", 0o1777),
            ("644", 0o644),
            (" 7", 0o7),
            ("\t+17", 0o17),
            ("78", 0o7),
            ("0x7", 0),
            ("abc", 0),
            ("", 0),
            ("99999999999", 0),
            ("-1", -1),
            ("-0", 0),
            // Past 32 bits: the low 32 bits of the long.
            ("77777777777", 0o77777777777_i64 as i32),
            // Past 64 bits: LONG_MAX or LONG_MIN, whose low 32 bits are -1 and 0.
            ("7777777777777777777777777", -1),
            ("-7777777777777777777777777", 0),
        ] {
            assert_eq!(parse_unix_mask(text), mask, "{text:?}");
        }
    }

    #[test]
    fn extended_options() {
        let ext =
            |list: &[&str]| parse_extended(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(ext(&[]).unwrap(), Extended::default());
        let e = ext(&["maxconns_fast,hash_algorithm=xxh3", "idle_timeout=3"]).unwrap();
        assert_eq!(e.idle_timeout_secs, 3);
        assert!(e.notices.is_empty());
        // hashpower: memcached's range, read with atoi; honoured, so no notice.
        for (given, power) in [("12", 12), ("20", 20), ("32", 32), ("17x", 17)] {
            let e = ext(&[&format!("hashpower={given}")]).unwrap();
            assert_eq!((e.hashpower_init, e.notices.len()), (power, 0), "{given}");
        }
        assert_eq!(ext(&["idle_timeout=1"]).unwrap().hashpower_init, 0);
        for (given, why) in [("11", "too low"), ("-1", "too low"), ("33", "too high")] {
            let err = ext(&[&format!("hashpower={given}")]).unwrap_err();
            assert!(err.contains(why), "{given}: {err}");
        }
        let e = ext(&["modern,hot_lru_pct=20,ext_path=/x:1G,hash_algorithm=murmur3"]).unwrap();
        assert_eq!(e.notices.len(), 1, "{:?}", e.notices);
        for name in ["modern", "hot_lru_pct", "ext_path", "murmur3"] {
            assert!(e.notices[0].contains(name), "{name}: {:?}", e.notices);
        }
        assert!(
            ext(&["ext_"]).is_ok(),
            "a family prefix alone is still extstore's"
        );
        assert!(ext(&["hot_lru"]).is_err());
        let e = ext(&["no_lru_crawler,lru_crawler_sleep=0,lru_crawler_tocrawl=50,slab_automove=2"])
            .unwrap();
        assert_eq!(
            e.crawler,
            CrawlerSettings {
                enabled: false,
                sleep_us: 0,
                tocrawl: 50
            }
        );
        assert_eq!(e.slab_automove, 2);
        assert!(e.notices.is_empty(), "{:?}", e.notices);
        for bad in [
            "lru_crawler_sleep=1000001",
            "lru_crawler_sleep",
            "lru_crawler_tocrawl=-1",
            "lru_crawler_tocrawl=4294967296",
            "slab_automove=3",
            "slab_automove=-1",
        ] {
            assert!(ext(&[bad]).is_err(), "{bad}");
        }
        // A bare `slab_automove` is mode 1; `no_slab_automove` and `no_modern` are 0.
        assert_eq!(ext(&["no_modern,slab_automove"]).unwrap().slab_automove, 1);
        assert_eq!(ext(&["no_slab_automove"]).unwrap().slab_automove, 0);
        let sizes = ext(&["track_sizes"]).unwrap();
        assert!(sizes.track_sizes && sizes.notices.is_empty());
        assert!(!ext(&["no_modern"]).unwrap().track_sizes);
    }

    #[test]
    fn license_and_chunk_sizes() {
        let text = Config::from_args(["corecache", "-i"]).unwrap_err().unwrap();
        assert!(text.contains("Apache-2.0"), "{text}");
        assert_eq!(
            Config::from_args(["corecache", "--license"])
                .unwrap_err()
                .unwrap(),
            text
        );
        assert_eq!(chunk_bytes_smallest(1), CHUNK_BYTES_SMALLEST);
        assert_eq!(chunk_bytes_smallest(8), 24);
        assert_eq!(chunk_bytes_smallest(9), 32);
        assert_eq!(chunk_bytes_smallest(48), 64);
    }

    /// `--cpus` pins shards where it says. Without it, shards are pinned only when there is
    /// one for each CPU of the process's affinity mask: confined to one CPU (as by `taskset -c
    /// N`), the one shard is pinned to that CPU, not to CPU 0; more or fewer shards than CPUs
    /// are left to the kernel.
    #[test]
    fn default_pinning_needs_a_shard_per_allowed_cpu() {
        let c = cfg(&["-t", "2", "--cpus", "3,1"]).unwrap();
        assert_eq!(c.shard_cpus, vec![Some(3), Some(1)]);
        assert!(cfg(&["-t", "2", "--cpus", "1"]).is_err());
        std::thread::spawn(|| {
            let all = allowed_cpus();
            let last = *all.last().expect("at least one cpu");
            let n = u16::try_from(all.len()).unwrap();
            let c = cfg(&["-t", &n.to_string()]).unwrap();
            assert_eq!(
                c.shard_cpus,
                all.iter().map(|&c| Some(c)).collect::<Vec<_>>()
            );
            let c = cfg(&["-t", &(n + 1).to_string()]).unwrap();
            assert!(c.shard_cpus.iter().all(Option::is_none));
            if n > 1 {
                let c = cfg(&["-t", "1"]).unwrap();
                assert_eq!(c.shard_cpus, vec![None], "fewer shards than cpus");
            }
            assert!(core_affinity::set_for_current(core_affinity::CoreId {
                id: last
            }));
            assert_eq!(allowed_cpus(), vec![last]);
            let c = cfg(&["-t", "1"]).unwrap();
            assert_eq!(c.shard_cpus, vec![Some(last)]);
            let c = cfg(&["-t", "2"]).unwrap();
            assert_eq!(c.shard_cpus, vec![None, None]);
        })
        .join()
        .unwrap();
    }
}
