//! Choosing the networking backend: a functional io_uring probe at startup, with epoll as the
//! fallback when io_uring is blocked (seccomp EPERM, gVisor ENOSYS), short of locked memory
//! (ENOMEM), or too old (EINVAL, missing opcodes).
//!
//! Both backends drive the same [`super::core::Core`]: they differ only in how bytes move.

use std::io;
use std::time::Duration;

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
