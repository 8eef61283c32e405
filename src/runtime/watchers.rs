//! `watch`: connections turned into log streams, and the delivery of every shard's event lines
//! to them.
//!
//! * A watcher lives on the core that accepted its connection (its "home"). Each core publishes
//!   the union of its own watchers' kinds in [`WatchShared::home_masks`]; every core reads the
//!   union of all of them once per loop turn into its shard's [`crate::watch::EventLog`], so
//!   with no watcher anywhere each event hook tests a zero mask and does nothing else.
//! * Events are formatted where they happen, staged in the shard's bounded log, and at the end
//!   of the turn handed to each home core with a watcher that wants one of their kinds: this
//!   core's watchers directly, other cores' in the turn's envelope to them (bounded too; what
//!   does not fit is dropped and counted in `log_worker_dropped`).
//! * Each watcher may have at most `-o watcher_logbuf_size` bytes unsent. A line that does not
//!   fit is skipped and counted; once one fits again, a `skipped=<n>` line goes before it, as
//!   memcached writes it. A slow watcher never blocks a shard or another client.
//! * Input from a watcher is read and thrown away (memcached ignores it too); its close
//!   unregisters it.
//!
//! Must not: block, or allocate per event while no watcher exists.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::connection::Conn;
use super::core::{push_reply, Core};
use crate::watch::records;

/// Most watchers at once, as memcached allows.
pub const WATCHERS_MAX: u32 = 20;
/// Room a line needs in a watcher's buffer beyond its own length (memcached asks for 128
/// bytes more, the room of a `skipped=` line).
const LINE_SLACK_BYTES: usize = 128;

const OK: &[u8] = b"OK\r\n";
const NOT_ALLOWED: &[u8] = b"CLIENT_ERROR watch commands not allowed\r\n";
const PIPELINED: &[u8] = b"ERROR cannot pipeline other commands before watch\r\n";
const TOO_MANY: &[u8] = b"WATCHER_TOO_MANY log watcher limit reached\r\n";

/// Process-wide `watch` state: who watches what, the event numbering, and the counters
/// `stats` shows.
#[derive(Debug)]
pub struct WatchShared {
    /// Per core: the union of the kinds its watchers want.
    pub home_masks: Vec<AtomicU16>,
    /// Watchers registered (`log_watchers`).
    pub watchers: AtomicU32,
    /// The last event number handed out (memcached's `gid`).
    pub gid: Arc<AtomicU64>,
    pub worker_written: AtomicU64,
    pub worker_dropped: AtomicU64,
    pub watcher_sent: AtomicU64,
    pub watcher_skipped: AtomicU64,
}

impl WatchShared {
    pub fn new(cores: u16) -> WatchShared {
        WatchShared {
            home_masks: (0..cores).map(|_| AtomicU16::new(0)).collect(),
            watchers: AtomicU32::new(0),
            gid: Arc::new(AtomicU64::new(0)),
            worker_written: AtomicU64::new(0),
            worker_dropped: AtomicU64::new(0),
            watcher_sent: AtomicU64::new(0),
            watcher_skipped: AtomicU64::new(0),
        }
    }

    /// The kinds some watcher on any core wants.
    #[inline]
    pub fn mask(&self) -> u16 {
        self.home_masks
            .iter()
            .fold(0, |m, h| m | h.load(Ordering::Relaxed))
    }
}

/// A connection's state once it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watcher {
    pub kinds: u16,
    /// Events numbered below this happened before the watch began: not shown.
    pub gid_min: u64,
    /// Lines lost since the last one written (`skipped=<n>`).
    pub skipped: u64,
}

impl Core {
    /// `watch <kinds>` on connection `idx`.
    pub(super) fn dispatch_watch(&mut self, idx: u32, kinds: u16) {
        if let Some(conn) = self.conn_mut(idx).filter(|c| c.udp.is_some()) {
            // memcached turns its UDP "connection" into a watcher whose lines cannot be
            // sent: nothing is answered and the rest of the datagram is not read.
            conn.closing = true;
            return;
        }
        let shared = Arc::clone(&self.shared);
        let reply = if !shared.config.watch_enabled {
            Some(NOT_ALLOWED)
        } else if self.pipeline_stacked {
            // As memcached (see `Core::pipeline_stacked`). Replies still owed by another shard
            // are in by now (`Core::process` holds a watch back until they are).
            Some(PIPELINED)
        } else if shared
            .watch
            .watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < WATCHERS_MAX).then_some(n + 1)
            })
            .is_err()
        {
            Some(TOO_MANY)
        } else {
            None
        };
        let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        match reply {
            Some(reply) => push_reply(conn, &mut self.pool, reply),
            None => {
                let gid_min = shared.watch.gid.fetch_add(1, Ordering::Relaxed) + 1;
                conn.watch = Some(Watcher {
                    kinds,
                    gid_min,
                    skipped: 0,
                });
                conn.out.extend_from_slice(OK);
                self.watchers.push(idx);
                self.publish_home_mask();
            }
        }
        self.mark_dirty(idx);
    }

    /// Forgets a watcher whose connection is closing.
    pub(super) fn unregister_watcher(&mut self, idx: u32) {
        self.watchers.retain(|&i| i != idx);
        self.shared.watch.watchers.fetch_sub(1, Ordering::AcqRel);
        self.publish_home_mask();
    }

    /// Publishes the union of this core's watchers' kinds, and takes the new union of all
    /// cores at once (the other cores take it at their next turn).
    fn publish_home_mask(&mut self) {
        let mask = self
            .watchers
            .iter()
            .filter_map(|&i| self.conn(i).and_then(|c| c.watch))
            .fold(0, |m, w| m | w.kinds);
        if let Some(home) = self.shared.watch.home_masks.get(usize::from(self.me)) {
            home.store(mask, Ordering::Release);
        }
        let all = self.shared.watch.mask();
        self.shard.set_watch_mask(all);
    }

    /// Start of a turn: which kinds some watcher wants now.
    #[inline]
    pub(super) fn watch_refresh(&mut self) {
        let mask = self.shared.watch.mask();
        self.shard.set_watch_mask(mask);
    }

    /// End of a turn: hands the staged lines to every core whose watchers want some of them
    /// (this core's directly, others' in this turn's envelope to them).
    pub(super) fn watch_flush(&mut self) {
        if self.shard.log.mask == 0 && !self.shard.log.has_staged() {
            return;
        }
        let now = self.now;
        self.shard.log_evictions(now);
        if !self.shard.log.has_staged() {
            return;
        }
        let (staged, kinds, count) = self.shard.log.take_staged();
        let shared = Arc::clone(&self.shared);
        let cap = shared.config.worker_logbuf_bytes;
        let mut dropped = std::mem::take(&mut self.shard.log.dropped);
        for (home, mask) in shared.watch.home_masks.iter().enumerate() {
            if mask.load(Ordering::Acquire) & kinds == 0 {
                continue;
            }
            let home = home as u16;
            if home == self.me {
                self.deliver_log(&staged);
                continue;
            }
            let env = self.outbox.to(home);
            // An envelope a full queue holds back keeps at most one worker buffer of lines.
            if env.log.len() + staged.len() > cap.max(staged.len()) {
                dropped += count;
            } else {
                env.log.extend_from_slice(&staged);
            }
        }
        let written = std::mem::take(&mut self.shard.log.written);
        shared
            .watch
            .worker_written
            .fetch_add(written, Ordering::Relaxed);
        if dropped > 0 {
            shared
                .watch
                .worker_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        self.shard.log.give_back(staged);
    }

    /// Writes staged records into the buffers of this core's watchers that want them.
    pub(super) fn deliver_log(&mut self, staged: &[u8]) {
        let room = self.shared.config.watcher_logbuf_bytes;
        let (mut sent, mut skipped) = (0u64, 0u64);
        for i in 0..self.watchers.len() {
            let idx = self.watchers[i];
            let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
                continue;
            };
            let (s, k) = write_records(conn, staged, room);
            sent += s;
            skipped += k;
            if s > 0 {
                self.mark_dirty(idx);
            }
        }
        let watch = &self.shared.watch;
        watch.watcher_sent.fetch_add(sent, Ordering::Relaxed);
        if skipped > 0 {
            watch.watcher_skipped.fetch_add(skipped, Ordering::Relaxed);
        }
    }

    /// Whether lines are staged that the next turn must deliver (the loop must not sleep).
    pub fn log_staged(&self) -> bool {
        self.shard.log.has_staged()
    }
}

/// Appends the records a watcher wants to its output while they fit in `room` unsent bytes;
/// returns (lines written, lines skipped).
fn write_records(conn: &mut Conn, staged: &[u8], room: usize) -> (u64, u64) {
    let Some(mut w) = conn.watch else {
        return (0, 0);
    };
    let (mut sent, mut skipped) = (0, 0);
    for r in records(staged) {
        if r.kind & w.kinds == 0 || r.gid < w.gid_min {
            continue;
        }
        if conn.pending_bytes() + r.line.len() + LINE_SLACK_BYTES > room {
            w.skipped += 1;
            skipped += 1;
            continue;
        }
        if w.skipped > 0 {
            conn.out
                .extend_from_slice(format!("skipped={}\n", w.skipped).as_bytes());
            w.skipped = 0;
        }
        conn.out.extend_from_slice(r.line);
        sent += 1;
    }
    conn.watch = Some(w);
    (sent, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{EventLog, GetStatus};

    fn staged(n: usize) -> Vec<u8> {
        let mut log = EventLog::default();
        for _ in 0..n {
            log.item_get(b"k", GetStatus::NotFound, 0, 0);
        }
        log.take_staged().0
    }

    #[test]
    fn a_full_watcher_skips_then_says_how_many() {
        let mut conn = Conn::new(1, String::new());
        conn.watch = Some(Watcher {
            kinds: crate::watch::watch_kinds::FETCHERS,
            gid_min: 0,
            skipped: 0,
        });
        let lines = staged(10);
        let line_len = records(&lines).next().unwrap().line.len();
        // Room for two lines and their slack.
        let room = 2 * line_len + LINE_SLACK_BYTES;
        assert_eq!(write_records(&mut conn, &lines, room), (2, 8));
        let _ = conn.advance_sent(conn.out.len());
        assert_eq!(write_records(&mut conn, &staged(1), room), (1, 0));
        let text = String::from_utf8(conn.out.clone()).unwrap();
        assert!(text.starts_with("skipped=8\nts="), "{text}");
        assert_eq!(conn.watch.unwrap().skipped, 0);
    }

    #[test]
    fn watchers_see_only_their_kinds_and_newer_events() {
        let mut conn = Conn::new(1, String::new());
        conn.watch = Some(Watcher {
            kinds: crate::watch::watch_kinds::MUTATIONS,
            gid_min: 0,
            skipped: 0,
        });
        assert_eq!(write_records(&mut conn, &staged(3), 1 << 20), (0, 0));
        conn.watch = Some(Watcher {
            kinds: crate::watch::watch_kinds::FETCHERS,
            gid_min: u64::MAX,
            skipped: 0,
        });
        assert_eq!(write_records(&mut conn, &staged(3), 1 << 20), (0, 0));
        assert!(conn.out.is_empty());
    }
}
