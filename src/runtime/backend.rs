//! Choosing the networking backend: a functional io_uring probe at startup, with epoll as the
//! fallback when io_uring is blocked (seccomp EPERM, gVisor ENOSYS), short of locked memory
//! (ENOMEM), or too old (EINVAL, missing opcodes).
//!
//! Both backends drive the same [`super::core::Core`]: they differ only in how bytes move.

use crate::config::{Config, IoBackendChoice};

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
