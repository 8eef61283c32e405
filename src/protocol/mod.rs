//! The memcached wire protocol: bytes in, typed requests out; replies composed into buffers.
//!
//! PURE: no storage, no sockets, no clock. Everything here is a function of its inputs, so it
//! can be fuzzed and unit-tested byte by byte.
//!
//! Invariants:
//! * [`parse::parse`] never panics on any input. On success `0 < consumed <= buf.len()`, every
//!   key is 1..=`key_len_max` bytes with no space, NUL or newline byte (memcached 1.6.18 accepts
//!   every other byte, tabs and control bytes included; see [`parse::key_is_valid`]), and a
//!   storage request's value is exactly its declared length.
//! * A request borrows from the read buffer ([`Request<'a>`]); nothing is copied while parsing.
//! * A rejected request says exactly how many bytes to drop ([`Rejection::consumed`]) and how many
//!   more to discard as they arrive ([`Rejection::swallow`]), so an oversized data block is never
//!   buffered.
//!
//! Must not touch: storage, runtime, clocks, threads.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// memcached's ASCII authentication (`-Y`): the auth file and what a connection sends before it
/// has authenticated.
pub mod auth;
/// memcached's binary protocol (a connection whose first byte is 0x80): frame parser, composer.
pub mod binary;
pub mod client;
pub mod compose;
pub mod meta;
pub mod parse;
pub mod sasl;
/// memcached's UDP frame header and how a reply is cut into datagrams.
pub mod udp;

/// Bounds the parser enforces. Built once from the validated config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key in bytes (memcached: 250).
    pub key_len_max: usize,
    /// Largest item (`-I`), counted as memcached counts it: item header, key, value and CRLF.
    pub item_size_max: usize,
    /// Whether items carry a cas value (`-C` turns it off); memcached counts 8 bytes for it.
    pub cas_enabled: bool,
    /// A command line (other than `get`/`gets`/`gat`/`gats`) longer than this without a newline
    /// closes the connection, as memcached does (2048). The parser also closes when the newline
    /// is there but later than this, so the outcome does not depend on read boundaries.
    pub line_len_max: usize,
    /// Bound on a retrieval line with many keys (memcached leaves it unbounded; we do not).
    pub get_line_len_max: usize,
    /// The buffer is all the input there is (a UDP datagram): a data block that runs past its
    /// end is answered as one that does not end in CRLF (`CLIENT_ERROR bad data chunk`, which
    /// memcached answers for it too) and consumes the rest of the buffer, instead of
    /// [`ParseError::Incomplete`]. A command line cut off stays incomplete.
    pub input_complete: bool,
    /// Binary SASL (`-S`) as it stands for the connection being parsed.
    pub sasl: SaslGate,
}

/// Where a binary connection stands with SASL (`-S`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslGate {
    /// SASL is off: its commands are answered `Unknown command`.
    Off,
    /// Not authenticated: only SASL's commands and `version` are served; anything else is
    /// answered `Auth failure.` and closes the connection.
    Locked,
    /// Authenticated.
    Open,
}

impl Limits {
    /// memcached's defaults: 250-byte keys, 1 MiB items, cas on.
    pub const DEFAULT: Limits = Limits {
        key_len_max: 250,
        item_size_max: 1024 * 1024,
        cas_enabled: true,
        line_len_max: 2048,
        get_line_len_max: 1024 * 1024,
        input_complete: false,
        sasl: SaslGate::Off,
    };

    /// Bytes memcached charges against `item_size_max` for an item with these lengths: its
    /// 48-byte item header, 8 bytes of cas when enabled, the key and its NUL, the value and CRLF.
    /// memcached also charges 4 bytes for nonzero client flags, which this does not count (checked
    /// with `-I 1m`: key `a`, flags 0 first rejects 1048517 value bytes, flags 1 first rejects
    /// 1048513); the parser adds them.
    pub fn item_total_size(&self, key_len: usize, value_len: usize) -> usize {
        let cas = if self.cas_enabled { 8 } else { 0 };
        48usize
            .saturating_add(cas)
            .saturating_add(key_len)
            .saturating_add(1)
            .saturating_add(value_len)
            .saturating_add(2)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The storage commands; they share one line format and a data block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreVerb {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

/// The retrieval commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GetVerb {
    /// `get <key>*`
    Get,
    /// `gets <key>*`: like get, with the cas value.
    Gets,
    /// `gat <exptime> <key>*`: get and touch.
    Gat,
    /// `gats <exptime> <key>*`: get and touch, with the cas value.
    Gats,
}

impl GetVerb {
    /// Whether replies carry the cas value.
    pub fn with_cas(self) -> bool {
        matches!(self, GetVerb::Gets | GetVerb::Gats)
    }
    /// Whether the command also touches.
    pub fn touches(self) -> bool {
        matches!(self, GetVerb::Gat | GetVerb::Gats)
    }
}

/// The keys of a retrieval line: a validated, space-separated run of keys, borrowed from the
/// read buffer. Iterating allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys<'a> {
    raw: &'a [u8],
}

impl<'a> Keys<'a> {
    /// Wraps bytes the parser has already validated: keys separated by one or more spaces.
    pub fn new(raw: &'a [u8]) -> Keys<'a> {
        Keys { raw }
    }
    /// The raw run of keys.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    /// Each key, in request order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.raw.split(|&b| b == b' ').filter(|k| !k.is_empty())
    }
}

/// What `stats` was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsGroup<'a> {
    /// `stats`
    General,
    /// `stats settings`
    Settings,
    /// `stats items`
    Items,
    /// `stats slabs`
    Slabs,
    /// `stats sizes`
    Sizes,
    /// `stats sizes_enable` (`true`) or `stats sizes_disable`
    SizesSwitch(bool),
    /// `stats conns`
    Conns,
    /// `stats reset`
    Reset,
    /// `stats detail on|off|dump`
    Detail(&'a [u8]),
    /// `stats cachedump <class> <limit>`: the class id and the most items to list (0: as many
    /// as fit memcached's 2 MB reply), or the error memcached answers for the arguments.
    CacheDump(Result<(u32, u32), &'static [u8]>),
    /// Any other argument; memcached answers these with an error or an empty list.
    Other(&'a [u8]),
}

/// The longest `lru_crawler sleep` memcached accepts: one second, in microseconds.
pub const CRAWLER_SLEEP_US_MAX: u32 = 1_000_000;

/// One parsed request. Borrows keys and values from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `get`, `gets`, `gat`, `gats`. `exptime` is 0 unless the verb touches.
    Get {
        verb: GetVerb,
        exptime: i64,
        keys: Keys<'a>,
    },
    /// `set`, `add`, `replace`, `append`, `prepend`, `cas` with their complete data block.
    Store {
        verb: StoreVerb,
        key: &'a [u8],
        client_flags: u32,
        exptime: i64,
        value: &'a [u8],
        /// The client's cas value; 0 unless `verb` is `Cas`.
        cas_expected: u64,
        noreply: bool,
    },
    /// A storage command whose item would exceed `item_size_max`. The reply is
    /// `SERVER_ERROR object too large for cache`, `swallow` more bytes (the data block and its
    /// CRLF) must be discarded, and a `set` also removes the key's old item (as memcached does).
    TooLarge {
        verb: StoreVerb,
        key: &'a [u8],
        noreply: bool,
        swallow: usize,
    },
    /// `delete <key> [0] [noreply]`
    Delete { key: &'a [u8], noreply: bool },
    /// `incr`/`decr <key> <delta> [noreply]`
    Arith {
        incr: bool,
        key: &'a [u8],
        delta: u64,
        noreply: bool,
    },
    /// `touch <key> <exptime> [noreply]`
    Touch {
        key: &'a [u8],
        exptime: i64,
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`
    FlushAll { delay: i64, noreply: bool },
    /// `version`
    Version,
    /// `refresh_certs` (any arguments ignored): reload the TLS certificate and key files.
    RefreshCerts,
    /// `log_compact`: start a compaction of the durability log (snapshot, drop old segments).
    LogCompact,
    /// `verbosity <level> [noreply]`
    Verbosity { level: u32, noreply: bool },
    /// `stats [group]`
    Stats { group: StatsGroup<'a> },
    /// `quit`: close after the replies before it are written.
    Quit,
    /// `watch [kind ...]`: turn the connection into a log stream of these event kinds (a set of
    /// [`watch_kinds`] bits; no argument means `fetchers`).
    Watch { kinds: u16 },
    /// `debug_time advance <secs>`: moves the server clock (feature `test-hooks` only; without
    /// the feature the parser answers `ERROR` as for any unknown command).
    DebugTimeAdvance { secs: u32 },
    /// `debug_stall <millis> [noreply]`: every other shard sleeps that long (at most 10 s), to
    /// test what a stalled shard does to its peers (feature `test-hooks` only, like
    /// `debug_time`).
    DebugStall { millis: u32, noreply: bool },
    /// `config get <key>`: ElastiCache auto discovery; only `cluster` has a value.
    ConfigGet { key: &'a [u8] },
    /// `lru_crawler metadump all|hash|<id>[,<id>...]`: one line per live item of those classes;
    /// the ids are checked where the classes are known.
    LruCrawlerMetadump { classes: &'a [u8] },
    /// `lru_crawler crawl all|<id>[,<id>...]`: a sweep for dead items now; the ids are checked
    /// where the classes are known.
    LruCrawlerCrawl { classes: &'a [u8] },
    /// `lru_crawler enable` (`true`) or `lru_crawler disable`.
    LruCrawlerSwitch { enable: bool },
    /// `lru_crawler sleep <microseconds>` (at most one second).
    LruCrawlerSleep { micros: u32 },
    /// `lru_crawler tocrawl <items>` (per class and pass; 0: all).
    LruCrawlerTocrawl { items: u32 },
    /// `lru tune <hot pct> <warm pct> <hot max factor> <warm max factor>`, checked; the
    /// factors as `f64` bits (so the request stays `Eq`).
    LruTune {
        hot_pct: u32,
        warm_pct: u32,
        hot_factor_bits: u64,
        warm_factor_bits: u64,
        noreply: bool,
    },
    /// `cache_memlimit <megabytes> [noreply]`: a new `-m`, already checked against memcached's
    /// bounds (8 to 1000000000 MB).
    CacheMemlimit { megabytes: u32, noreply: bool },
    /// `slabs automove <0|1|2> [noreply]`.
    SlabsAutomove { mode: u8, noreply: bool },
    /// `slabs reassign <src> <dst>` (memcached's class ids; 0 is the free budget, `-1` as
    /// `src` any class).
    SlabsReassign { src: i32, dst: i32 },
    /// `shutdown [graceful]` (allowed only with `-A`).
    Shutdown { mode: ShutdownMode },
    /// A meta command (`mg`, `ms`, `md`, `ma`, `mn`, `me`); see [`meta`].
    Meta(meta::MetaRequest<'a>),
}

/// What `shutdown` was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// `shutdown`
    Now,
    /// `shutdown graceful`
    Graceful,
    /// Any other argument: `CLIENT_ERROR invalid shutdown mode` (when shutdown is allowed).
    Invalid,
}

impl<'a> Request<'a> {
    /// The single key this request addresses, if it addresses exactly one. `None` for meta
    /// commands, whose key may be base64 on the wire: use [`meta::MetaRequest::key`].
    pub fn key(&self) -> Option<&'a [u8]> {
        match *self {
            Request::Store { key, .. }
            | Request::TooLarge { key, .. }
            | Request::Delete { key, .. }
            | Request::Arith { key, .. }
            | Request::Touch { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Why a request could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not a whole request yet: read more and try again with the same buffer start.
    Incomplete,
    /// A bad request: send the reply, drop `consumed` bytes, then discard `swallow` more.
    Invalid(Rejection),
}

/// How to answer and skip a bad request, exactly as memcached does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The whole reply, CRLF included (e.g. `b"CLIENT_ERROR bad command line format\r\n"`);
    /// empty when memcached sends nothing.
    pub reply: &'static [u8],
    /// Bytes of the buffer that belong to the bad request (at least 1 unless `close`).
    pub consumed: usize,
    /// Further bytes to discard as they arrive (a rejected data block), beyond `consumed`.
    pub swallow: usize,
    /// Close the connection after sending `reply` (memcached does this for over-long lines).
    pub close: bool,
}

/// The event kinds of `watch`, with memcached's bit values (`LOG_*` in its logger.h).
pub mod watch_kinds {
    /// `sysevents`: accepted; corecache logs no system events.
    pub const SYSEVENTS: u16 = 1 << 1;
    /// `fetchers`: `item_get` lines, one per key lookup.
    pub const FETCHERS: u16 = 1 << 2;
    /// `mutations`: `item_store` lines, one per storage command.
    pub const MUTATIONS: u16 = 1 << 3;
    /// `connevents`: `conn_new` and `conn_close` lines.
    pub const CONNEVENTS: u16 = 1 << 5;
    /// `evictions`: `eviction` lines.
    pub const EVICTIONS: u16 = 1 << 6;
    /// `rawcmds`: accepted; corecache logs no raw commands.
    pub const RAWCMDS: u16 = 1 << 9;
    /// `proxyreqs`, `proxyevents`, `proxyuser`: accepted; corecache has no proxy.
    pub const PROXYREQS: u16 = 1 << 10;
    pub const PROXYEVENTS: u16 = 1 << 11;
    pub const PROXYUSER: u16 = 1 << 12;

    /// The bit a `watch` argument names, as memcached 1.6.18 spells them.
    pub fn of_name(name: &[u8]) -> Option<u16> {
        Some(match name {
            b"rawcmds" => RAWCMDS,
            b"evictions" => EVICTIONS,
            b"fetchers" => FETCHERS,
            b"mutations" => MUTATIONS,
            b"sysevents" => SYSEVENTS,
            b"connevents" => CONNEVENTS,
            b"proxyreqs" => PROXYREQS,
            b"proxyevents" => PROXYEVENTS,
            b"proxyuser" => PROXYUSER,
            _ => return None,
        })
    }
}
