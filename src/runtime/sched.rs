//! The scheduling policy shard threads run under (`--sched-policy`).
//!
//! Under Linux's normal policy a thread that wakes preempts the one running on its CPU. When a
//! client shares the server's CPUs (an application or a load generator on the same host), every
//! request it writes wakes the shard that owns the connection, and the shard preempts the client
//! before it has written its next request: one context switch per request each way, and replies
//! that go out one at a time. Under `SCHED_BATCH` a waking shard waits for the running thread to
//! block or for the scheduler tick, then serves everything that arrived meanwhile. A shard alone
//! on its CPU runs the same either way. The cost is the tick's wait whenever the CPU is busy
//! with something that does not block at once: a CPU-bound neighbour, or a client thread's
//! longer stretches of work. That shows in the latency tail, so the default leaves the policy
//! the process starts with; `tuning/README.md` has the figures on both sides.
//!
//! Only the two policies an unprivileged process may choose between are switched: a thread that
//! starts under a real-time policy or `SCHED_IDLE` (set from outside, with `chrt` or a service
//! manager) keeps it.

use crate::config::SchedPolicy;

/// The policy the calling thread runs under, as `sched_getscheduler` reports it (without
/// `SCHED_RESET_ON_FORK`), or `None` if it cannot be read.
pub fn current() -> Option<libc::c_int> {
    // SAFETY: `sched_getscheduler` takes a pid by value (0: the calling thread) and touches no
    // memory of ours; it only returns a policy number or -1.
    let policy = unsafe { libc::sched_getscheduler(0) };
    (policy >= 0).then_some(policy & !libc::SCHED_RESET_ON_FORK)
}

/// The name `stats settings` shows for a policy number (`chrt`'s names, lower case).
pub fn name(policy: Option<libc::c_int>) -> &'static str {
    match policy {
        Some(libc::SCHED_OTHER) => "normal",
        Some(libc::SCHED_BATCH) => "batch",
        Some(libc::SCHED_IDLE) => "idle",
        Some(libc::SCHED_FIFO) => "fifo",
        Some(libc::SCHED_RR) => "rr",
        // SCHED_DEADLINE (6) has no constant in every libc version.
        Some(6) => "deadline",
        _ => "unknown",
    }
}

/// Puts the calling thread under `wanted` if it runs under the other of the two normal
/// policies; leaves any other policy as it is. Returns the policy the thread runs under after.
pub fn apply(wanted: SchedPolicy) -> Result<Option<libc::c_int>, String> {
    let now = current();
    let target = match (wanted, now) {
        (SchedPolicy::Batch, Some(libc::SCHED_OTHER)) => libc::SCHED_BATCH,
        (SchedPolicy::Normal, Some(libc::SCHED_BATCH)) => libc::SCHED_OTHER,
        _ => return Ok(now),
    };
    // The normal policies take priority 0 only; the nice value is kept.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` that lives across the call, which only reads it;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, target, &param) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "--sched-policy {}: cannot set it ({err}); the thread stays {}",
            wanted.name(),
            name(now)
        ));
    }
    Ok(current())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each switch on a thread of its own, so the test process's other threads keep theirs.
    fn on_new_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("thread")
    }

    #[test]
    fn a_normal_thread_switches_to_batch_and_back() {
        let (start, batch, again, normal) = on_new_thread(|| {
            let start = current();
            let batch = apply(SchedPolicy::Batch).expect("batch");
            // Asking again for the policy it has changes nothing.
            let again = apply(SchedPolicy::Batch).expect("batch again");
            let normal = apply(SchedPolicy::Normal).expect("normal");
            (start, batch, again, normal)
        });
        assert_eq!(start, Some(libc::SCHED_OTHER));
        assert_eq!(batch, Some(libc::SCHED_BATCH));
        assert_eq!(again, Some(libc::SCHED_BATCH));
        assert_eq!(normal, Some(libc::SCHED_OTHER));
        assert_eq!(name(batch), "batch");
        assert_eq!(name(normal), "normal");
    }

    /// A policy set from outside other than the two normal ones is kept by either setting.
    #[test]
    fn an_idle_thread_stays_idle() {
        let policies = on_new_thread(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in `apply`: a valid `sched_param`, pid 0 is this thread.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            let batch = apply(SchedPolicy::Batch).expect("batch");
            let normal = apply(SchedPolicy::Normal).expect("normal");
            (batch, normal)
        });
        assert_eq!(policies, (Some(libc::SCHED_IDLE), Some(libc::SCHED_IDLE)));
        assert_eq!(name(policies.0), "idle");
    }
}
