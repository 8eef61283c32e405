//! Choosing the networking backend: a functional io_uring probe at startup, with epoll as the
//! fallback when io_uring is blocked (seccomp EPERM, gVisor ENOSYS), short of locked memory
//! (ENOMEM), or too old (EINVAL, missing opcodes).
//!
//! Both backends drive the same [`super::core::Core`]: they differ only in how bytes move.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Config, IoBackendChoice};

/// Longest wait when idle (the clock and the crawler tick at least this often).
pub const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How soon accepting is retried after a shortage (descriptors, buffers, memory): at once
/// would spin while the shortage lasts.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// How long shutdown waits for queued replies to drain.
pub const DRAIN_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// The reply memcached sends before closing a connection over the `-c` limit.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";

/// Accept errors that mean the process is short of something for now: retrying at once would
/// spin, so accepting pauses for [`ACCEPT_RETRY`].
pub fn is_accept_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Pauses of accepting for a shortage, across cores: memcached's `listen_disabled_num`,
/// `time_in_listen_disabled_us` and `accepting_conns`.
#[derive(Debug, Default)]
pub struct ListenStats {
    /// Pauses begun (a pause resumed and taken up again within two retries counts once).
    pub disabled_num: AtomicU64,
    /// Microseconds spent paused, summed over cores.
    pub disabled_us: AtomicU64,
    /// Cores paused right now.
    pub paused: AtomicU64,
}

/// One core's pause of accepting, kept in step with [`ListenStats`].
#[derive(Debug, Default)]
pub struct ListenPause {
    since: Option<Instant>,
    resumed: Option<Instant>,
}

impl ListenPause {
    /// Records that this core's accepting is `paused` (for a shortage) or not, as of now.
    pub fn set(&mut self, paused: bool, stats: &ListenStats) {
        match (paused, self.since) {
            (true, None) => {
                let now = Instant::now();
                // A retry that meets the same shortage continues the pause it interrupted.
                let continued = self
                    .resumed
                    .is_some_and(|at| now.duration_since(at) <= 2 * ACCEPT_RETRY);
                if !continued {
                    stats.disabled_num.fetch_add(1, Ordering::Relaxed);
                }
                stats.paused.fetch_add(1, Ordering::Relaxed);
                self.since = Some(now);
            }
            (false, Some(since)) => {
                let now = Instant::now();
                let us = u64::try_from(now.duration_since(since).as_micros()).unwrap_or(u64::MAX);
                stats.disabled_us.fetch_add(us, Ordering::Relaxed);
                stats.paused.fetch_sub(1, Ordering::Relaxed);
                self.since = None;
                self.resumed = Some(now);
            }
            _ => {}
        }
    }
}

/// The backend every executor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Epoll,
}

/// Picks the backend for `choice`, probing io_uring unless epoll was asked for.
pub fn choose(choice: IoBackendChoice, cfg: &Config) -> Result<Backend, String> {
    if choice == IoBackendChoice::Epoll {
        return Ok(Backend::Epoll);
    }
    raise_memlock_limit();
    match super::uring::probe(cfg) {
        Ok(()) => Ok(Backend::Uring),
        Err(why) if choice == IoBackendChoice::Auto => {
            eprintln!("io_uring unavailable ({why}); using epoll");
            Ok(Backend::Epoll)
        }
        Err(why) => Err(format!("--io-backend uring: io_uring unavailable: {why}")),
    }
}

/// Raises the soft RLIMIT_MEMLOCK to the hard limit (older kernels charge rings to it).
fn raise_memlock_limit() {
    // SAFETY: getrlimit/setrlimit on a zeroed rlimit struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_counts_once_and_a_retry_meeting_the_same_shortage_continues_it() {
        let stats = ListenStats::default();
        let mut pause = ListenPause::default();
        pause.set(false, &stats);
        assert_eq!(stats.disabled_num.load(Ordering::Relaxed), 0);
        pause.set(true, &stats);
        pause.set(true, &stats);
        assert_eq!(stats.disabled_num.load(Ordering::Relaxed), 1);
        assert_eq!(stats.paused.load(Ordering::Relaxed), 1);
        std::thread::sleep(Duration::from_millis(2)); // time to measure, not synchronisation
        pause.set(false, &stats);
        assert_eq!(stats.paused.load(Ordering::Relaxed), 0);
        assert!(stats.disabled_us.load(Ordering::Relaxed) >= 2_000);
        // Paused again at once (the retry met the shortage): the same pause.
        pause.set(true, &stats);
        assert_eq!(stats.disabled_num.load(Ordering::Relaxed), 1);
        pause.set(false, &stats);
        // Paused again after a while of accepting: a new pause.
        pause.resumed = Some(Instant::now() - 3 * ACCEPT_RETRY);
        pause.set(true, &stats);
        assert_eq!(stats.disabled_num.load(Ordering::Relaxed), 2);
        assert_eq!(stats.paused.load(Ordering::Relaxed), 1);
    }
}
