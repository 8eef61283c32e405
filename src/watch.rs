//! The `watch` event log on a shard's side: which kinds of event some watcher wants, and the
//! lines of this turn's events, formatted as memcached 1.6.18's logger renders them
//! (`ts=<secs>.<usecs> gid=<n> type=<event> ...`, keys URI-encoded, `\n`-terminated).
//!
//! Invariants: nothing is formatted, allocated or counted unless [`EventLog::mask`] has the
//! event's kind (the runtime refreshes it once per loop turn, so with no watcher every hook
//! costs one test of a zero mask); the staged bytes never exceed the worker buffer
//! (`-o worker_logbuf_size`): an event that does not fit is dropped and counted, as memcached
//! drops what does not fit in a worker's buffer.
//!
//! Must not: touch sockets or other shards; the runtime (`runtime::watchers`) moves staged
//! lines to the watchers' connections.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::protocol::watch_kinds;

/// Room one event's line may take at most (a 250-byte key URI-encodes to 750 bytes).
pub const LINE_BYTES_MAX: usize = 1024;
/// Bytes in front of each staged line: kind (u16), gid (u64), line length (u16), little-endian.
const RECORD_HEADER_BYTES: usize = 12;

/// What a lookup found, as memcached's `item_get` `status` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetStatus {
    NotFound,
    Found,
}

/// A storage command's result, as memcached's `item_store` `status` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    NotStored,
    Stored,
    Exists,
    NotFound,
    TooLarge,
    NoMemory,
}

impl StoreStatus {
    fn name(self) -> &'static str {
        match self {
            StoreStatus::NotStored => "not_stored",
            StoreStatus::Stored => "stored",
            StoreStatus::Exists => "exists",
            StoreStatus::NotFound => "not_found",
            StoreStatus::TooLarge => "too_large",
            StoreStatus::NoMemory => "no_memory",
        }
    }
}

/// Why a connection closed (`conn_close` `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CloseReason {
    /// A protocol error closed it (an HTTP request, an over-long line).
    Error,
    /// `quit`, or the client closed it.
    #[default]
    Normal,
    /// `-o idle_timeout`.
    IdleTimeout,
    /// The server is stopping.
    Shutdown,
}

impl CloseReason {
    fn name(self) -> &'static str {
        match self {
            CloseReason::Error => "error",
            CloseReason::Normal => "normal",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// An evicted item, as the `eviction` line shows it.
#[derive(Clone, Copy, Debug)]
pub struct Eviction<'a> {
    pub key: &'a [u8],
    pub fetched: bool,
    /// Seconds until it would have expired (negative once past), `-1` for no expiry.
    pub ttl_secs: i64,
    /// Seconds since its last access.
    pub idle_secs: u32,
    /// Client-visible slab class id.
    pub class_id: u16,
    pub value_len: usize,
}

/// One shard's event log.
#[derive(Debug)]
pub struct EventLog {
    /// The event kinds some watcher anywhere wants (a copy, refreshed every loop turn).
    pub mask: u16,
    /// The descriptor of the client whose request runs now (`cfd`).
    pub cfd: i32,
    staged: Vec<u8>,
    /// Union of the staged records' kinds.
    staged_kinds: u16,
    staged_count: u64,
    capacity: usize,
    gid: Arc<AtomicU64>,
    /// Events staged (memcached's `log_worker_written`) and dropped for want of room
    /// (`log_worker_dropped`) since the runtime last took them.
    pub written: u64,
    pub dropped: u64,
}

impl Default for EventLog {
    fn default() -> EventLog {
        EventLog::new(64 * 1024, Arc::new(AtomicU64::new(0)))
    }
}

impl EventLog {
    /// A log staging at most `capacity` bytes per turn, numbering events from `gid`.
    pub fn new(capacity: usize, gid: Arc<AtomicU64>) -> EventLog {
        EventLog {
            mask: 0,
            cfd: 0,
            staged: Vec::new(),
            staged_kinds: 0,
            staged_count: 0,
            capacity: capacity.max(LINE_BYTES_MAX + RECORD_HEADER_BYTES),
            gid,
            written: 0,
            dropped: 0,
        }
    }

    /// Whether some watcher wants events of `kind`.
    #[inline]
    pub fn wants(&self, kind: u16) -> bool {
        self.mask & kind != 0
    }

    /// Whether lines wait to be delivered.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// The staged records and the union of their kinds; the log starts empty again. The
    /// buffer comes back through [`EventLog::give_back`] to keep its capacity.
    pub fn take_staged(&mut self) -> (Vec<u8>, u16, u64) {
        let kinds = std::mem::take(&mut self.staged_kinds);
        let count = std::mem::take(&mut self.staged_count);
        (std::mem::take(&mut self.staged), kinds, count)
    }

    /// Returns the buffer taken by [`EventLog::take_staged`], emptied.
    pub fn give_back(&mut self, mut buf: Vec<u8>) {
        if self.staged.is_empty() && buf.capacity() <= self.capacity * 2 {
            buf.clear();
            self.staged = buf;
        }
    }

    /// Starts a record of `kind` with its `ts=... gid=... ` prefix; `None` (counted as
    /// dropped) when it might not fit.
    fn begin(&mut self, kind: u16) -> Option<usize> {
        if self.staged.len() + RECORD_HEADER_BYTES + LINE_BYTES_MAX > self.capacity {
            self.dropped += 1;
            return None;
        }
        let gid = self.gid.fetch_add(1, Ordering::Relaxed) + 1;
        let start = self.staged.len();
        self.staged.extend_from_slice(&kind.to_le_bytes());
        self.staged.extend_from_slice(&gid.to_le_bytes());
        self.staged.extend_from_slice(&[0, 0]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // memcached prints the microseconds with `%d`: not zero-padded.
        let _ = write!(
            self.staged,
            "ts={}.{} gid={gid} ",
            now.as_secs(),
            now.subsec_micros()
        );
        Some(start)
    }

    /// Ends the record begun at `start` (the line's newline included).
    fn end(&mut self, start: usize, kind: u16) {
        self.staged.push(b'\n');
        let line_len = self.staged.len() - start - RECORD_HEADER_BYTES;
        let len = u16::try_from(line_len).unwrap_or(u16::MAX);
        self.staged[start + 10..start + 12].copy_from_slice(&len.to_le_bytes());
        self.staged_kinds |= kind;
        self.staged_count += 1;
        self.written += 1;
    }

    /// `type=item_get`: a key looked up (`class_id` 0 and size 0 on a miss).
    pub fn item_get(&mut self, key: &[u8], status: GetStatus, class_id: u16, value_len: usize) {
        let kind = watch_kinds::FETCHERS;
        let Some(start) = self.begin(kind) else {
            return;
        };
        self.staged.extend_from_slice(b"type=item_get key=");
        uri_encode(key, &mut self.staged);
        let status = match status {
            GetStatus::NotFound => "not_found",
            GetStatus::Found => "found",
        };
        let _ = write!(
            self.staged,
            " status={status} clsid={class_id} cfd={} size={value_len}",
            self.cfd
        );
        self.end(start, kind);
    }

    /// `type=item_store`: a storage command's outcome. `ttl_secs` is memcached's unsigned
    /// difference between the item's expiry and now (0 for none).
    pub fn item_store(
        &mut self,
        key: &[u8],
        status: StoreStatus,
        cmd: &str,
        ttl_secs: u32,
        class_id: u16,
        value_len: usize,
    ) {
        let kind = watch_kinds::MUTATIONS;
        let Some(start) = self.begin(kind) else {
            return;
        };
        self.staged.extend_from_slice(b"type=item_store key=");
        uri_encode(key, &mut self.staged);
        let _ = write!(
            self.staged,
            " status={} cmd={cmd} ttl={ttl_secs} clsid={class_id} cfd={} size={value_len}",
            status.name(),
            self.cfd
        );
        self.end(start, kind);
    }

    /// `type=eviction`.
    pub fn eviction(&mut self, ev: &Eviction<'_>) {
        let kind = watch_kinds::EVICTIONS;
        let Some(start) = self.begin(kind) else {
            return;
        };
        self.staged.extend_from_slice(b"type=eviction key=");
        uri_encode(ev.key, &mut self.staged);
        let _ = write!(
            self.staged,
            " fetch={} ttl={} la={} clsid={} size={}",
            if ev.fetched { "yes" } else { "no" },
            ev.ttl_secs,
            ev.idle_secs,
            ev.class_id,
            ev.value_len
        );
        self.end(start, kind);
    }

    /// `type=conn_new` for a client at `peer` (`ip:port`, `[ip6]:port`, or empty for a UNIX
    /// socket).
    pub fn conn_new(&mut self, peer: &str, cfd: i32) {
        self.conn_event(peer, None, cfd);
    }

    /// `type=conn_close`.
    pub fn conn_close(&mut self, peer: &str, reason: CloseReason, cfd: i32) {
        self.conn_event(peer, Some(reason), cfd);
    }

    /// A `conn_new` line, or a `conn_close` line if the connection closed for `closed`.
    fn conn_event(&mut self, peer: &str, closed: Option<CloseReason>, cfd: i32) {
        let kind = watch_kinds::CONNEVENTS;
        let Some(start) = self.begin(kind) else {
            return;
        };
        let (rip, rport, transport) = endpoint(peer);
        let event = if closed.is_some() { "close" } else { "new" };
        let _ = write!(
            self.staged,
            "type=conn_{event} rip={rip} rport={rport} transport={transport}"
        );
        if let Some(reason) = closed {
            let _ = write!(self.staged, " reason={}", reason.name());
        }
        let _ = write!(self.staged, " cfd={cfd}");
        self.end(start, kind);
    }
}

/// A connection event's `rip`, `rport` and `transport` from the peer's address text.
fn endpoint(peer: &str) -> (&str, &str, &'static str) {
    match peer.rsplit_once(':') {
        Some((ip, port)) if !peer.is_empty() => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            (ip, port, "tcp")
        }
        _ => ("unix", "0", "local"),
    }
}

/// memcached's `uriencode`: letters, digits and `-._~` stay, every other byte becomes `%XX`.
pub fn uri_encode(key: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// One staged record: its kind, gid and line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u16,
    pub gid: u64,
    pub line: &'a [u8],
}

/// The records of a staged buffer, in order (a malformed tail ends the walk).
pub fn records(mut buf: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        let header = buf.get(..RECORD_HEADER_BYTES)?;
        let kind = u16::from_le_bytes([header[0], header[1]]);
        let mut gid = [0u8; 8];
        gid.copy_from_slice(&header[2..10]);
        let len = usize::from(u16::from_le_bytes([header[10], header[11]]));
        let line = buf.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len)?;
        buf = &buf[RECORD_HEADER_BYTES + len..];
        Some(Record {
            kind,
            gid: u64::from_le_bytes(gid),
            line,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(log: &mut EventLog) -> Vec<(u16, String)> {
        let (buf, _, _) = log.take_staged();
        records(&buf)
            .map(|r| (r.kind, String::from_utf8(r.line.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn lines_have_memcacheds_fields_in_order() {
        let mut log = EventLog {
            cfd: 14,
            ..EventLog::default()
        };
        log.item_get(b"foo", GetStatus::Found, 1, 3);
        log.item_store(b"a b", StoreStatus::Exists, "cas", 0, 2, 1);
        log.eviction(&Eviction {
            key: b"k0",
            fetched: false,
            ttl_secs: -1,
            idle_secs: 0,
            class_id: 39,
            value_len: 500_000,
        });
        log.conn_new("127.0.0.1:53518", 15);
        log.conn_close("[::1]:7", CloseReason::Error, 15);
        log.conn_close("", CloseReason::Normal, 16);
        let got = lines(&mut log);
        let tails: Vec<&str> = got
            .iter()
            .map(|(_, l)| l.split_once(' ').unwrap().1.split_once(' ').unwrap().1)
            .collect();
        assert_eq!(
            tails,
            [
                "type=item_get key=foo status=found clsid=1 cfd=14 size=3\n",
                "type=item_store key=a%20b status=exists cmd=cas ttl=0 clsid=2 cfd=14 size=1\n",
                "type=eviction key=k0 fetch=no ttl=-1 la=0 clsid=39 size=500000\n",
                "type=conn_new rip=127.0.0.1 rport=53518 transport=tcp cfd=15\n",
                "type=conn_close rip=::1 rport=7 transport=tcp reason=error cfd=15\n",
                "type=conn_close rip=unix rport=0 transport=local reason=normal cfd=16\n",
            ]
        );
        assert!(got[0].1.starts_with("ts="));
        assert_eq!(got[0].0, watch_kinds::FETCHERS);
        assert_eq!(log.written, 6);
    }

    #[test]
    fn gids_rise_across_logs_sharing_a_counter() {
        let gid = Arc::new(AtomicU64::new(0));
        let mut a = EventLog::new(4096, Arc::clone(&gid));
        let mut b = EventLog::new(4096, gid);
        a.item_get(b"x", GetStatus::NotFound, 0, 0);
        b.item_get(b"y", GetStatus::NotFound, 0, 0);
        let (ba, _, _) = a.take_staged();
        let (bb, _, _) = b.take_staged();
        let ga = records(&ba).next().unwrap().gid;
        let gb = records(&bb).next().unwrap().gid;
        assert_eq!((ga, gb), (1, 2));
    }

    #[test]
    fn a_full_log_drops_and_counts() {
        let mut log = EventLog::new(0, Arc::new(AtomicU64::new(0)));
        let key = [b'#'; 250];
        for _ in 0..10 {
            log.item_get(&key, GetStatus::NotFound, 0, 0);
        }
        assert_eq!((log.written, log.dropped), (1, 9));
        let (buf, kinds, count) = log.take_staged();
        assert_eq!((kinds, count), (watch_kinds::FETCHERS, 1));
        let line = records(&buf).next().unwrap().line;
        let key_field = line.split(|&b| b == b' ').nth(3).unwrap();
        assert_eq!(key_field.len(), 250 * 3 + "key=".len());
    }

    #[test]
    fn uri_encoding_keeps_unreserved_bytes() {
        let mut out = Vec::new();
        uri_encode(b"Az09-._~/%\xff", &mut out);
        assert_eq!(out, b"Az09-._~%2F%25%FF");
    }

    #[test]
    fn a_truncated_buffer_ends_the_walk() {
        let mut log = EventLog::default();
        log.item_get(b"k", GetStatus::NotFound, 0, 0);
        let (buf, _, _) = log.take_staged();
        assert_eq!(records(&buf[..buf.len() - 1]).count(), 0);
        assert_eq!(records(&buf[..5]).count(), 0);
    }
}
