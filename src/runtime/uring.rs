//! The io_uring backend: multishot accept, multishot recv into a provided-buffer ring, one send
//! per connection per loop turn, and one `io_uring_enter` per turn (submit and wait together).
//!
//! Buffers handed to the kernel (the buffer ring and in-flight send buffers) are owned here and
//! kept alive until the kernel reports it is done with them: the ring until the `IoUring` is
//! dropped (it is declared first, so dropped first), a send buffer until its completion arrives.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

use super::backend::{
    is_accept_shortage, ListenPause, ACCEPT_RETRY, DRAIN_ON_SHUTDOWN, IDLE_WAIT,
    TOO_MANY_CONNECTIONS,
};
use super::connection::{should_close, Stalled, BUF_KEEP_BYTES};
use super::core::Core;
use super::listener::Listener;
use crate::config::Config;

/// Submission queue entries per ring.
const SQ_ENTRIES: u32 = 1024;
/// Most emptied reply buffers kept for the next flush (see `Loop::spare`).
const SPARE_BUFS_MAX: usize = 64;
/// Completion queue entries per ring.
const CQ_ENTRIES: u32 = 8192;
/// Provided receive buffers per core (a power of two) and the size of each, where the kernel
/// consumes buffers incrementally (Linux 6.12 on): each receive takes only the bytes it got
/// from the buffer at the ring's head, and the next receive continues where it stopped. Large
/// buffers then cost small requests nothing, and a large value arrives 64 KiB per completion
/// instead of 4 KiB (`tuning/results/20261124-large-sets.md`).
const INC_BUF_COUNT: u16 = 16;
const INC_BUF_SIZE: usize = 64 * 1024;
/// Without incremental consumption every receive takes a whole buffer: many small ones.
/// Buffers return to the ring in the turn they arrive, so many small ones serve many
/// connections; a bigger ring costs resident memory on every core (measured: 4 MiB of ring
/// was 4 % of the RSS of a million 100-byte items). 1 MiB in all, either way.
const BUF_COUNT: u16 = 256;
pub const BUF_SIZE: usize = 4 * 1024;
/// Distance between the starts of neighbouring whole-use buffers: one cache line more than a
/// buffer. Small requests only touch the first lines of each buffer; at a 4 KiB stride every
/// buffer start falls in the same L1 set and in 16 of the L2's, so the ring evicted its own
/// lines and every receive copied into a cold line. The extra line spreads the starts over all
/// sets.
const BUF_STRIDE: usize = BUF_SIZE + 64;
/// `IOU_PBUF_RING_INC`: the ring's buffers are consumed incrementally.
const PBUF_RING_INC: u16 = 2;
/// The buffer group id of the receive buffer ring.
pub const BGID: u16 = 0;

// user_data layout: kind (8 bits) | generation (24 bits) | index (32 bits).
const K_ACCEPT: u64 = 1;
const K_RECV: u64 = 2;
const K_SEND: u64 = 3;
const K_WAKER: u64 = 4;
const K_CANCEL: u64 = 5;
/// A ring message from another core: new envelopes are waiting.
const K_MSG: u64 = 6;
/// A UDP socket is readable (multishot poll; the index is the socket's).
const K_UDP: u64 = 7;
/// A receive of the rest of a large request straight into the connection's input buffer.
const K_RECV_LARGE: u64 = 8;

fn ud(kind: u64, generation: u32, index: u32) -> u64 {
    kind << 56 | (u64::from(generation) & 0xff_ffff) << 32 | u64::from(index)
}

fn ud_parts(u: u64) -> (u64, u32, u32) {
    (u >> 56, ((u >> 32) & 0xff_ffff) as u32, u as u32)
}

/// A ring of provided buffers the kernel fills with received bytes (group [`BGID`]). Public so
/// that `examples/loopback_floor.rs` measures the very receive path the server uses.
///
/// Where the kernel can, buffers are consumed incrementally (see [`INC_BUF_SIZE`]): a
/// completion's bytes start where the buffer's previous completion's ended, and the buffer
/// goes back to the ring once the kernel reports it used up.
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    data: Vec<u8>,
    tail: u16,
    count: u16,
    size: usize,
    stride: usize,
    /// Incremental consumption: bytes of each buffer the kernel has filled so far.
    used: Option<Vec<u32>>,
}

impl BufRing {
    /// Allocates the ring and its buffers and registers them with `ring`: incrementally
    /// consumed large buffers where the kernel has them, else many small ones.
    ///
    /// # Safety
    ///
    /// The kernel keeps reading and filling this memory through `ring`: the `BufRing` must not
    /// be dropped before `ring` is (declare it first, or hold both in a struct with the ring
    /// as the earlier field).
    pub unsafe fn new(ring: &IoUring) -> io::Result<BufRing> {
        // Tests of the whole-buffer ring, which kernels before 6.12 get.
        #[cfg(feature = "test-hooks")]
        if std::env::var_os("CORECACHE_TEST_WHOLE_BUFS").is_some() {
            // SAFETY: passed on to the caller.
            return unsafe { BufRing::with_layout(ring, BUF_COUNT, BUF_SIZE, false) };
        }
        // SAFETY: passed on to the caller.
        match unsafe { BufRing::with_layout(ring, INC_BUF_COUNT, INC_BUF_SIZE, true) } {
            Ok(br) => Ok(br),
            // SAFETY: passed on to the caller.
            Err(_) => unsafe { BufRing::with_layout(ring, BUF_COUNT, BUF_SIZE, false) },
        }
    }

    /// [`BufRing::new`] with `count` (a power of two) buffers of `size` bytes, consumed
    /// incrementally if `inc`.
    ///
    /// # Safety
    ///
    /// As for [`BufRing::new`].
    unsafe fn with_layout(
        ring: &IoUring,
        count: u16,
        size: usize,
        inc: bool,
    ) -> io::Result<BufRing> {
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has nonzero size; the result is checked for null.
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let stride = if inc {
            size
        } else {
            size + BUF_STRIDE - BUF_SIZE
        };
        // From here on `br` owns `entries` (freed by its drop, also on the error return).
        let mut br = BufRing {
            entries,
            entries_layout,
            data: Vec::new(),
            tail: 0,
            count,
            size,
            stride,
            used: inc.then(|| vec![0; usize::from(count)]),
        };
        let flags = if inc { PBUF_RING_INC } else { 0 };
        // SAFETY: `entries` points to `count` zeroed entries that live as long as `br`, which
        // the caller keeps alive longer than the ring (declared after it in `Loop`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BGID, flags)?;
        }
        br.data = vec![0; usize::from(count) * stride];
        for bid in 0..count {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Whether the kernel consumes the buffers incrementally.
    pub fn incremental(&self) -> bool {
        self.used.is_some()
    }

    /// Puts buffer `bid` back at the tail (visible to the kernel after `publish`).
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * self.stride as u64;
        // SAFETY: `slot < count`, inside the allocation; the kernel reads entries only up
        // to the published tail, and this slot is past it.
        unsafe {
            let e = &mut *self.entries.add(slot);
            e.set_addr(addr);
            e.set_len(self.size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: the tail field lives inside the first entry of the ring allocation and is
        // only written by us; the kernel reads it with acquire ordering.
        unsafe {
            let tail = BufRingEntry::tail(self.entries)
                .cast_mut()
                .cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The `len` bytes a completion reported in buffer `bid` (before [`BufRing::release`]).
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.count {
            return &[];
        }
        let b = usize::from(bid);
        let used = self
            .used
            .as_ref()
            .map_or(0, |u| u[b] as usize)
            .min(self.size);
        let start = b * self.stride + used;
        &self.data[start..start + len.min(self.size - used)]
    }

    /// Ends a completion's use of buffer `bid` (`res` and `flags` as it reported them): the
    /// buffer goes back to the ring unless the kernel still fills it (incremental
    /// consumption: more of it left, or nothing taken from it). Visible after `publish`.
    pub fn release(&mut self, bid: u16, res: i32, flags: u32) {
        if bid >= self.count {
            return;
        }
        let Some(used) = self.used.as_mut() else {
            self.push(bid);
            return;
        };
        let Ok(got) = u32::try_from(res) else {
            return;
        };
        if got == 0 {
            // Nothing was taken: the buffer is still the kernel's, however the flags read.
            return;
        }
        if cqueue::buffer_more(flags) {
            used[usize::from(bid)] += got;
        } else {
            used[usize::from(bid)] = 0;
            self.push(bid);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is already gone.
        unsafe { dealloc(self.entries.cast(), self.entries_layout) };
    }
}

/// One connection's kernel-side state.
struct IoConn {
    fd: OwnedFd,
    /// The slot of `fd` in the ring's registered file table, when it has one: operations
    /// name it there, sparing the kernel a descriptor lookup and reference per operation.
    fixed: Option<u32>,
    generation: u32,
    recv_armed: bool,
    cancel_sent: bool,
    /// The buffer being sent and how much of it the kernel has taken.
    send: Option<(Vec<u8>, usize)>,
    /// The connection's input buffer while a receive of the rest of a large request fills its
    /// spare capacity (`recv_armed` is set meanwhile; see [`Loop::arm_large_recv`]).
    lent: Option<Vec<u8>>,
    /// Whether the bytes sent count in `bytes_written`: a plain connection's do; a TLS one
    /// counts its replies as it seals them instead.
    counts_sent: bool,
    /// Shut down; waiting for in-flight operations before closing.
    closing: bool,
}

struct Loop {
    // Field order matters: the ring is dropped before the buffers it refers to.
    ring: IoUring,
    bufs: BufRing,
    listeners: Vec<Listener>,
    accept_armed: Vec<bool>,
    /// Set while accepting pauses after a shortage; the loop re-arms once it passes.
    accept_retry_at: Option<Instant>,
    /// Accepting paused for a shortage, as `stats` reports it.
    accept_pause: ListenPause,
    conns: Vec<Option<IoConn>>,
    waker_fd: RawFd,
    waker_armed: bool,
    dirty: Vec<u32>,
    stalled: Stalled,
    /// The list [`Stalled::take_into`] fills each turn, and the warming groups' ends; both kept
    /// for their capacity.
    taken: Vec<u32>,
    group_ends: VecDeque<usize>,
    /// Emptied reply buffers a connection takes as its next `out` when its current one goes
    /// to the kernel: at most [`SPARE_BUFS_MAX`], none over [`BUF_KEEP_BYTES`].
    spare: Vec<Vec<u8>>,
    buffers_returned: bool,
    wakes: Vec<u16>,
    /// Size of the registered file table (0: none, operations use plain descriptors).
    fixed_slots: u32,
    /// Completions copied out of the ring by `reap` (kept to reuse its allocation).
    cqes: Vec<(u64, i32, u32)>,
    /// UDP sockets (`runtime::udp` reads and writes them with plain syscalls; the ring only
    /// reports them readable), whether each one's poll is armed, and whether datagrams may be
    /// waiting on it (a poll completes once per arrival, so the loop keeps reading until the
    /// socket would block, a turn's budget at a time).
    udp_fds: Vec<RawFd>,
    udp_armed: Vec<bool>,
    udp_readable: Vec<bool>,
}

impl Drop for IoConn {
    fn drop(&mut self) {
        // A buffer the kernel may still write into is never freed: only a ring being torn
        // down with the receive still pending drops it here.
        if let Some(buf) = self.lent.take() {
            std::mem::forget(buf);
        }
    }
}

/// Registered file table entries per core at most; connections beyond use plain descriptors.
const FIXED_FILES_MAX: u32 = 65_536;

/// Checks that io_uring works here with every feature this backend uses.
pub fn probe(_cfg: &Config) -> Result<(), String> {
    // Tests of the fallback: io_uring cannot be blocked from inside a test, so a test build
    // can be told to act as if the probe failed.
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("CORECACHE_TEST_DENY_URING").is_some() {
        return Err("denied by CORECACHE_TEST_DENY_URING".into());
    }
    // The same ring, at the same size, that every executor builds: a probe that passes means
    // the executors' rings fit too (older kernels charge rings to RLIMIT_MEMLOCK).
    // Declared first so that it is dropped after the ring.
    let bufs: BufRing;
    let mut ring = build_ring().map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("probe: {e}"))?;
    for (code, name) in [
        (opcode::Nop::CODE, "nop"),
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
        (opcode::MsgRingData::CODE, "msg_ring"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("opcode {name} unsupported"));
        }
    }
    // A NOP round trip.
    push(&mut ring, &opcode::Nop::new().build().user_data(7))?;
    ring.submit_and_wait(1).map_err(|e| format!("enter: {e}"))?;
    let ok = ring
        .completion()
        .next()
        .is_some_and(|c| c.user_data() == 7 && c.result() == 0);
    if !ok {
        return Err("nop round trip failed".into());
    }
    // A multishot recv on a socketpair through a provided-buffer ring.
    // SAFETY: `bufs` is declared before `ring`, so the ring is dropped first.
    bufs = unsafe { BufRing::new(&ring) }.map_err(|e| format!("buffer ring: {e}"))?;
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array we pass.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(format!("socketpair: {}", io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    push(
        &mut ring,
        &opcode::RecvMulti::new(Fd(a.as_raw_fd()), BGID)
            .build()
            .user_data(9),
    )?;
    ring.submit().map_err(|e| format!("enter: {e}"))?;
    // SAFETY: writes 5 bytes from a live array to a socket we own.
    unsafe { libc::write(b.as_raw_fd(), b"probe".as_ptr().cast(), 5) };
    ring.submit_and_wait(1).map_err(|e| format!("enter: {e}"))?;
    let cqe = ring.completion().next().ok_or("no recv completion")?;
    let got = match cqueue::buffer_select(cqe.flags()) {
        Some(bid) if cqe.result() == 5 => bufs.get(bid, 5) == b"probe",
        _ => false,
    };
    if !got {
        return Err(format!(
            "multishot recv with a buffer ring failed ({})",
            cqe.result()
        ));
    }
    drop(ring);
    drop(bufs);
    Ok(())
}

fn push(ring: &mut IoUring, e: &squeue::Entry) -> Result<(), String> {
    // SAFETY: every entry built in this file points only at memory that outlives the operation
    // (the buffer ring, send buffers kept in `IoConn::send`, input buffers lent to a receive
    // kept in `IoConn::lent`, nothing for the others).
    if unsafe { ring.submission().push(e) }.is_ok() {
        return Ok(());
    }
    ring.submit().map_err(|e| format!("enter: {e}"))?;
    // SAFETY: as above.
    unsafe { ring.submission().push(e) }.map_err(|_| "submission queue full".to_string())
}

/// Builds an executor's ring: single issuer with deferred task work where the kernel has
/// them, and smaller queues when the full size does not fit the locked-memory limit.
fn build_ring() -> io::Result<IoUring> {
    let mut last = io::Error::other("no ring size tried");
    for shrink in [1, 4, 16] {
        let (sq, cq) = (SQ_ENTRIES / shrink, CQ_ENTRIES / shrink);
        let mut b = IoUring::builder();
        b.setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun();
        match b.build(sq) {
            Ok(r) => return Ok(r),
            Err(_) => match IoUring::builder().setup_cqsize(cq).build(sq) {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            },
        }
    }
    Err(last)
}

/// Serves on `listeners` until shutdown.
pub fn run(
    mut core: Core,
    listeners: Vec<Listener>,
    ready: &mpsc::Sender<Result<(), String>>,
) -> io::Result<()> {
    let ring = build_ring()?;
    // SAFETY: both move into `Loop`, whose field order drops the ring before the buffers.
    let bufs = unsafe { BufRing::new(&ring) }?;
    let waker = std::sync::Arc::clone(core.mesh().waker());
    let mut lp = Loop {
        ring,
        bufs,
        accept_armed: vec![false; listeners.len()],
        accept_retry_at: None,
        accept_pause: ListenPause::default(),
        listeners,
        conns: Vec::new(),
        waker_fd: waker.raw_fd(),
        waker_armed: false,
        dirty: Vec::new(),
        stalled: Stalled::default(),
        taken: Vec::new(),
        group_ends: VecDeque::with_capacity(4),
        spare: Vec::new(),
        buffers_returned: false,
        wakes: Vec::new(),
        fixed_slots: 0,
        cqes: Vec::with_capacity(64),
        udp_armed: vec![false; core.udp_fds().len()],
        // Datagrams may have arrived before the poll was armed.
        udp_readable: vec![true; core.udp_fds().len()],
        udp_fds: core.udp_fds(),
    };
    // A sparse table with a slot per possible connection; without it (older kernels) every
    // operation names its plain descriptor.
    let slots = u32::try_from(lp_conns_max(&core))
        .unwrap_or(FIXED_FILES_MAX)
        .min(FIXED_FILES_MAX);
    if lp.ring.submitter().register_files_sparse(slots).is_ok() {
        lp.fixed_slots = slots;
    }
    // Other io_uring cores wake this one with ring messages from now on.
    waker.set_ring_fd(lp.ring.as_raw_fd());
    lp.arm_accepts()?;
    lp.arm_waker()?;
    lp.arm_udp()?;
    let _ = ready.send(Ok(()));
    let mut wait = Duration::ZERO;
    loop {
        // Blocking: the shard waits parked, for other cores to read from (see `park`).
        if !wait.is_zero() {
            core.park();
        }
        let entered = lp.enter(wait);
        core.unpark();
        entered?;
        waker.set_sleeping(false);
        core.turn_begin();
        lp.reap(&mut core)?;
        lp.turn(&mut core)?;
        if core.shared.shutdown.load(Ordering::Relaxed) {
            lp.shutdown(&mut core)?;
            core.save_memfile();
            return Ok(());
        }
        lp.retry_accepts(&core)?;
        wait = if !lp.stalled.is_empty()
            || lp.udp_readable.contains(&true)
            || core.udp_busy()
            || core.outbox_blocked()
            || core.metadump_runnable()
            || core.log_snapshot_runnable()
            || core.crawl_wait() == Some(Duration::ZERO)
            || core.log_staged()
        {
            Duration::ZERO
        } else {
            waker.set_sleeping(true);
            if core.poll_mesh() > 0 {
                waker.set_sleeping(false);
                lp.turn(&mut core)?;
                Duration::ZERO
            } else if lp.accept_retry_at.is_some() {
                ACCEPT_RETRY
            } else {
                core.crawl_wait()
                    .map_or(IDLE_WAIT, |wait| wait.min(IDLE_WAIT))
            }
        };
    }
}

/// The most connections one core may hold.
fn lp_conns_max(core: &Core) -> usize {
    core.shared.config.conns_max
}

fn to_io(e: String) -> io::Error {
    io::Error::other(e)
}

impl Loop {
    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        push(&mut self.ring, e).map_err(to_io)
    }

    /// Submits queued entries and waits for at least one completion (or `wait`).
    fn enter(&mut self, wait: Duration) -> io::Result<()> {
        if self.buffers_returned {
            self.bufs.publish();
            self.buffers_returned = false;
        }
        let res = if wait.is_zero() {
            self.ring.submit()
        } else {
            let ts = Timespec::new()
                .sec(wait.as_secs())
                .nsec(wait.subsec_nanos());
            let args = SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn arm_accepts(&mut self) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            if !self.accept_armed[i] {
                let fd = self.listeners[i].as_raw_fd();
                let e = if self.listeners[i].is_unix() {
                    // Every core waits on the one UNIX socket, and io_uring waits for accepts
                    // exclusively: the kernel wakes only the first waiter in the socket's
                    // queue, so a multishot accept, which keeps its place, would take every
                    // connection to one core. A single accept, re-armed after each connection
                    // (`on_accept`), rejoins at the back of the queue: the cores take turns.
                    opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::AcceptMulti::new(Fd(fd))
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                }
                .user_data(ud(K_ACCEPT, 0, i as u32));
                self.push(&e)?;
                self.accept_armed[i] = true;
            }
        }
        Ok(())
    }

    fn arm_waker(&mut self) -> io::Result<()> {
        if !self.waker_armed {
            let e = opcode::PollAdd::new(Fd(self.waker_fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(ud(K_WAKER, 0, 0));
            self.push(&e)?;
            self.waker_armed = true;
        }
        Ok(())
    }

    /// Arms a multishot readability poll on every UDP socket that has none.
    fn arm_udp(&mut self) -> io::Result<()> {
        for i in 0..self.udp_fds.len() {
            if !self.udp_armed[i] {
                let e = opcode::PollAdd::new(Fd(self.udp_fds[i]), libc::POLLIN as u32)
                    .multi(true)
                    .build()
                    .user_data(ud(K_UDP, 0, i as u32));
                self.push(&e)?;
                self.udp_armed[i] = true;
            }
        }
        Ok(())
    }

    fn arm_recv(&mut self, idx: u32) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        if c.recv_armed || c.closing {
            return Ok(());
        }
        c.recv_armed = true;
        c.cancel_sent = false;
        let e = match c.fixed {
            Some(slot) => opcode::RecvMulti::new(Fixed(slot), BGID).build(),
            None => opcode::RecvMulti::new(Fd(c.fd.as_raw_fd()), BGID).build(),
        }
        .user_data(ud(K_RECV, c.generation, idx));
        self.push(&e)
    }

    /// Lends the connection's input buffer to one receive of the rest of the large request it
    /// holds the start of, into the room reserved for it: the kernel fills it from the socket
    /// as the bytes arrive (`MSG_WAITALL`) and completes once, where a whole-buffer ring would
    /// complete once per 4 KiB and have every byte copied again (measured on 500 KB sets:
    /// 76 µs of server CPU per set, against 99-112 through the ring). Exactly the rest is asked
    /// for, so the receive cannot wait for bytes that are not coming.
    fn arm_large_recv(&mut self, core: &mut Core, idx: u32) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        if c.recv_armed || c.closing {
            return Ok(());
        }
        let Some((mut buf, rest)) = core.lend_input(idx) else {
            return Ok(());
        };
        let room = buf.spare_capacity_mut();
        let len = rest.min(room.len()).min(u32::MAX as usize) as u32;
        let ptr = room.as_mut_ptr().cast::<u8>();
        let e = match c.fixed {
            Some(slot) => opcode::Recv::new(Fixed(slot), ptr, len),
            None => opcode::Recv::new(Fd(c.fd.as_raw_fd()), ptr, len),
        }
        .flags(libc::MSG_WAITALL)
        .build()
        .user_data(ud(K_RECV_LARGE, c.generation, idx));
        // The buffer moves into `c.lent` before the kernel sees the entry; moving a Vec does
        // not move its heap allocation, so the pointer stays valid until the completion.
        c.lent = Some(buf);
        c.recv_armed = true;
        c.cancel_sent = false;
        self.push(&e)
    }

    /// Handles every completion that has arrived.
    fn reap(&mut self, core: &mut Core) -> io::Result<()> {
        let mut cqes = std::mem::take(&mut self.cqes);
        let result = self.reap_into(core, &mut cqes);
        self.cqes = cqes;
        result
    }

    fn reap_into(&mut self, core: &mut Core, cqes: &mut Vec<(u64, i32, u32)>) -> io::Result<()> {
        loop {
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .take(1024)
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if cqes.is_empty() {
                return Ok(());
            }
            for &(u, res, flags) in cqes.iter() {
                let (kind, generation, idx) = ud_parts(u);
                match kind {
                    K_ACCEPT => self.on_accept(core, idx as usize, res, flags)?,
                    K_RECV => self.on_recv(core, idx, generation, res, flags)?,
                    K_RECV_LARGE => self.on_recv_large(core, idx, generation, res)?,
                    K_SEND => self.on_send(core, idx, generation, res)?,
                    K_WAKER => {
                        let mut v: u64 = 0;
                        // SAFETY: reads 8 bytes into a live u64 from our nonblocking eventfd.
                        unsafe { libc::read(self.waker_fd, (&mut v as *mut u64).cast(), 8) };
                        if !cqueue::more(flags) {
                            self.waker_armed = false;
                            self.arm_waker()?;
                        }
                    }
                    K_UDP => {
                        if let Some(r) = self.udp_readable.get_mut(idx as usize) {
                            *r = true;
                        }
                        if !cqueue::more(flags) {
                            if let Some(a) = self.udp_armed.get_mut(idx as usize) {
                                *a = false;
                            }
                            self.arm_udp()?;
                        }
                    }
                    K_MSG if generation == 1 && res < 0 => {
                        // Our ring message to core `idx` failed: wake it the slow way.
                        if let Some(w) = core.mesh().wakers().get(idx as usize) {
                            w.wake();
                        }
                    }
                    // Ring messages from other cores only end the wait; cancels need nothing.
                    _ => {}
                }
            }
        }
    }

    /// Re-arms the listeners paused by a shortage once [`ACCEPT_RETRY`] has passed.
    fn retry_accepts(&mut self, core: &Core) -> io::Result<()> {
        if self.accept_retry_at.is_some_and(|at| Instant::now() >= at) {
            self.accept_retry_at = None;
            self.accept_pause.set(false, &core.shared.listen);
            self.arm_accepts()?;
        }
        Ok(())
    }

    fn on_accept(&mut self, core: &mut Core, li: usize, res: i32, flags: u32) -> io::Result<()> {
        if !cqueue::more(flags) {
            if let Some(a) = self.accept_armed.get_mut(li) {
                *a = false;
            }
            let shortage = res < 0 && is_accept_shortage(&io::Error::from_raw_os_error(-res));
            if shortage {
                self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                self.accept_pause.set(true, &core.shared.listen);
            } else if self.accept_retry_at.is_none() {
                self.arm_accepts()?;
            }
        }
        if res < 0 {
            return Ok(()); // a failed accept concerns that connection only
        }
        // SAFETY: a successful accept completion's result is a new descriptor we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        // A UNIX peer has no address worth naming (`stats conns` shows it as memcached does)
        // and takes no TCP options. (The cores that did not get this connection see nothing:
        // an accept that finds the queue empty waits inside the kernel.)
        let unix = self.listeners.get(li).is_some_and(Listener::is_unix);
        let peer = if unix { String::new() } else { peer_name(&fd) };
        let tls = self.listeners.get(li).is_some_and(Listener::is_tls);
        let Some(idx) = core.open(peer, tls, fd.as_raw_fd()) else {
            // SAFETY: writes a static byte string to the socket we own; best effort.
            unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    TOO_MANY_CONNECTIONS.as_ptr().cast(),
                    TOO_MANY_CONNECTIONS.len(),
                )
            };
            return Ok(());
        };
        if !unix {
            let _ = super::listener::set_int_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
        let generation = core.conn(idx).map_or(0, |c| c.generation) & 0xff_ffff;
        let counts_sent = core.conn(idx).is_some_and(|c| c.tls.is_none());
        if self.conns.len() <= idx as usize {
            self.conns.resize_with(idx as usize + 1, || None);
        }
        let fixed = (idx < self.fixed_slots)
            .then(|| {
                self.ring
                    .submitter()
                    .register_files_update(idx, &[fd.as_raw_fd()])
                    .ok()
                    .map(|_| idx)
            })
            .flatten();
        self.conns[idx as usize] = Some(IoConn {
            fd,
            fixed,
            generation,
            recv_armed: false,
            cancel_sent: false,
            send: None,
            lent: None,
            counts_sent,
            closing: false,
        });
        self.arm_recv(idx)
    }

    fn live(&mut self, idx: u32, generation: u32) -> Option<&mut IoConn> {
        self.conns
            .get_mut(idx as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == generation)
    }

    fn on_recv(
        &mut self,
        core: &mut Core,
        idx: u32,
        generation: u32,
        res: i32,
        flags: u32,
    ) -> io::Result<()> {
        let bid = cqueue::buffer_select(flags);
        let more = cqueue::more(flags);
        if let Some(bid) = bid {
            if res > 0 && self.live(idx, generation).is_some_and(|c| !c.closing) {
                // Parsed later in the turn, after the prefetch pass over every connection.
                let data = self.bufs.get(bid, res as usize);
                core.input_only(idx, data);
            }
            self.bufs.release(bid, res, flags);
            self.buffers_returned = true;
        }
        let Some(c) = self.live(idx, generation) else {
            return Ok(());
        };
        if !more {
            c.recv_armed = false;
        }
        if c.closing {
            return self.try_finish_close(core, idx);
        }
        if res == 0 {
            core.input_eof(idx);
        } else if res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED {
            return self.close(core, idx);
        }
        self.stalled.push(idx);
        Ok(())
    }

    /// The receive into a lent input buffer has ended: the buffer goes back to the connection
    /// with what arrived.
    fn on_recv_large(
        &mut self,
        core: &mut Core,
        idx: u32,
        generation: u32,
        res: i32,
    ) -> io::Result<()> {
        let Some(c) = self.live(idx, generation) else {
            return Ok(());
        };
        c.recv_armed = false;
        let lent = c.lent.take();
        if c.closing {
            return self.try_finish_close(core, idx);
        }
        if let Some(mut buf) = lent {
            let got = usize::try_from(res)
                .unwrap_or(0)
                .min(buf.capacity() - buf.len());
            // SAFETY: the kernel wrote `got` bytes into the spare capacity right after the
            // buffer's length (the receive's target, see `arm_large_recv`), and no more than
            // that capacity.
            unsafe { buf.set_len(buf.len() + got) };
            core.input_returned(idx, buf, got);
        }
        if res == 0 {
            core.input_eof(idx);
        } else if res < 0 && res != -libc::ECANCELED {
            return self.close(core, idx);
        }
        self.stalled.push(idx);
        Ok(())
    }

    fn on_send(&mut self, core: &mut Core, idx: u32, generation: u32, res: i32) -> io::Result<()> {
        let Some(c) = self.live(idx, generation) else {
            return Ok(());
        };
        let Some((mut buf, mut off)) = c.send.take() else {
            return Ok(());
        };
        if c.closing {
            return self.try_finish_close(core, idx);
        }
        if res < 0 {
            if let Some(cc) = core.conn_mut(idx) {
                cc.inflight = 0;
            }
            return self.close(core, idx);
        }
        off += res as usize;
        if c.counts_sent {
            core.bytes_written += res as u64;
        }
        if off < buf.len() {
            if let Some(cc) = core.conn_mut(idx) {
                cc.inflight = buf.len() - off;
            }
            return self.submit_send(idx, buf, off);
        }
        let recv_armed = c.recv_armed;
        if let Some(cc) = core.conn_mut(idx) {
            cc.inflight = 0;
            // A connection with more output on its way keeps a large buffer for it (see
            // `Conn::advance_sent`).
            if buf.capacity() > BUF_KEEP_BYTES
                && cc.streaming()
                && cc.out.is_empty()
                && cc.out.capacity() < buf.capacity()
            {
                buf.clear();
                std::mem::swap(&mut cc.out, &mut buf);
            }
        }
        // The spares keep no large buffers; the core's reserve does, up to its bound.
        if buf.capacity() > BUF_KEEP_BYTES {
            core.give_large_out(buf);
        } else {
            self.recycle(buf);
        }
        // Input held back, or not read while output was high, may resume now: come back to the
        // connection next turn. Otherwise (the common case) there is nothing to parse, and
        // replies that queued while this send was in flight only need a flush.
        if !recv_armed || core.conn(idx).is_some_and(|cc| cc.held_back) {
            self.stalled.push(idx);
        }
        core.mark_if_pending(idx);
        Ok(())
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFS_MAX && buf.capacity() <= BUF_KEEP_BYTES {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn submit_send(&mut self, idx: u32, buf: Vec<u8>, off: usize) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        let rest = &buf[off..];
        let (ptr, len) = (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
        let e = match c.fixed {
            Some(slot) => opcode::Send::new(Fixed(slot), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            None => opcode::Send::new(Fd(c.fd.as_raw_fd()), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
        }
        .user_data(ud(K_SEND, c.generation, idx));
        // The buffer moves into `c.send` before the kernel sees the entry; moving a Vec does not
        // move its heap allocation, so the pointer stays valid until the completion.
        c.send = Some((buf, off));
        self.push(&e)
    }

    /// Mesh, UDP datagrams, stalled input, envelopes out, sends out, receives re-armed or
    /// paused.
    fn turn(&mut self, core: &mut Core) -> io::Result<()> {
        core.poll_mesh();
        for (i, readable) in self.udp_readable.iter_mut().enumerate() {
            if *readable {
                *readable = core.udp_receive(i);
            }
        }
        let mut stalled = std::mem::take(&mut self.taken);
        self.stalled.take_into(&mut stalled);
        let mut group_ends = std::mem::take(&mut self.group_ends);
        let result = core.process_warmed(&stalled, &mut group_ends, |core, idx| {
            // Re-arm or pause the receive, then come back next turn to what no completion
            // would bring back (see `needs_turn`): input left for want of budget, a receive
            // that is not armed while the connection may read, or one paused only by a full
            // queue to another shard. (Input held back by unsent output resumes when a send
            // completes.)
            core.mark_if_pending(idx);
            let armed = self.sync_recv(core, idx);
            if self.needs_turn(core, idx) {
                self.stalled.push(idx);
            }
            armed
        });
        self.taken = stalled;
        self.group_ends = group_ends;
        result?;
        core.turn_end();
        self.wake_receivers(core)?;
        core.take_dirty(&mut self.dirty);
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            self.flush_conn(core, idx)?;
        }
        self.dirty = dirty;
        Ok(())
    }

    /// Wakes the cores this turn's envelopes found asleep: a ring message submitted with this
    /// turn's other entries (no extra syscall), or the eventfd for a core without a ring yet.
    fn wake_receivers(&mut self, core: &mut Core) -> io::Result<()> {
        core.take_wakes(&mut self.wakes);
        let wakes = std::mem::take(&mut self.wakes);
        for &to in &wakes {
            let Some(w) = core.mesh().wakers().get(usize::from(to)) else {
                continue;
            };
            match w.ring_fd() {
                Some(fd) => {
                    let e = opcode::MsgRingData::new(Fd(fd), 0, ud(K_MSG, 0, 0), None)
                        .build()
                        .flags(squeue::Flags::SKIP_SUCCESS)
                        .user_data(ud(K_MSG, 1, u32::from(to)));
                    self.push(&e)?;
                }
                None => w.wake(),
            }
        }
        self.wakes = wakes;
        Ok(())
    }

    /// Whether the connection must be come back to next turn although no completion may
    /// arrive for it: input held back that may be parsed now, or a receive that is not armed
    /// while the connection may read (re-armed by [`Loop::sync_recv`]) or would but for a full
    /// queue to another shard (nothing signals that queue draining).
    fn needs_turn(&self, core: &Core, idx: u32) -> bool {
        let Some(cc) = core.conn(idx) else {
            return false;
        };
        if cc.closing {
            return false;
        }
        if cc.held_back && cc.may_parse() {
            return true;
        }
        let recv_armed = self
            .conns
            .get(idx as usize)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.recv_armed);
        !recv_armed && core.may_read(idx)
    }

    /// Arms or cancels the connection's receive to match whether it may read, and how: into
    /// the buffer ring, or, where the ring's buffers are used whole, the rest of a large
    /// request straight into its input buffer (the ring's receive ends first: it is cancelled,
    /// and its last completion brings the connection back here). With incremental buffers
    /// the ring's 64 KiB completions cost less than that switch (measured on 500 KB sets:
    /// 52 µs of server CPU per set through the ring, 54 switching).
    fn sync_recv(&mut self, core: &mut Core, idx: u32) -> io::Result<()> {
        let wants = core.wants_read(idx);
        let large = wants && !self.bufs.incremental() && core.large_input_rest(idx).is_some();
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        if c.lent.is_some() {
            return Ok(());
        }
        if large && !c.recv_armed {
            return self.arm_large_recv(core, idx);
        }
        if wants && !large && !c.recv_armed {
            return self.arm_recv(idx);
        }
        // The ring's receive ends when the connection may not read, and for the switch.
        if (large || !wants) && c.recv_armed && !c.cancel_sent {
            c.cancel_sent = true;
            let target = ud(K_RECV, c.generation, idx);
            let e = opcode::AsyncCancel::new(target)
                .build()
                .user_data(ud(K_CANCEL, 0, idx));
            return self.push(&e);
        }
        Ok(())
    }

    /// Starts a send of everything the connection has ready, or closes it when finished.
    fn flush_conn(&mut self, core: &mut Core, idx: u32) -> io::Result<()> {
        let in_flight = self
            .conns
            .get(idx as usize)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.send.is_some());
        // Input held back (slots or output were full) may be taken again now that another
        // shard's replies or a finished send made room, and a receive paused for the same
        // reasons may be re-armed: come back to it next turn.
        if self.needs_turn(core, idx) {
            self.stalled.push(idx);
        }
        let Some(cc) = core.conn_mut(idx) else {
            return Ok(());
        };
        cc.close_notify_if_finishing();
        if should_close(cc) && cc.inflight == 0 {
            return self.close(core, idx);
        }
        if in_flight || cc.unsent().is_empty() || cc.holds_partial() {
            return Ok(());
        }
        let replies_bytes = cc.seal();
        core.bytes_written += replies_bytes;
        let Some(cc) = core.conn_mut(idx) else {
            return Ok(());
        };
        let fresh = self.spare.pop().unwrap_or_default();
        let mut buf = std::mem::replace(&mut cc.out, fresh);
        let off = cc.out_sent;
        cc.out_sent = 0;
        cc.out_sealed = 0;
        cc.inflight = buf.len() - off;
        if off > 0 {
            buf.drain(..off);
        }
        self.submit_send(idx, buf, 0)
    }

    /// Begins closing: shut the socket so in-flight operations finish, then drop it.
    fn close(&mut self, core: &mut Core, idx: u32) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            core.close(idx);
            return Ok(());
        };
        if !c.closing {
            c.closing = true;
            // SAFETY: shutdown(2) on a socket we own; completes any pending receive with EOF.
            unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        self.stalled.remove(idx);
        self.try_finish_close(core, idx)
    }

    fn try_finish_close(&mut self, core: &mut Core, idx: u32) -> io::Result<()> {
        let done = self
            .conns
            .get(idx as usize)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.closing && !c.recv_armed && c.send.is_none());
        if done {
            if let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::take) {
                if let Some(slot) = c.fixed {
                    // The table holds its own reference: clear the slot so the socket closes.
                    let _ = self.ring.submitter().register_files_update(slot, &[-1]);
                }
                drop(c); // closes the socket
            }
            core.close(idx);
        }
        Ok(())
    }

    fn shutdown(&mut self, core: &mut Core) -> io::Result<()> {
        for l in self.listeners.drain(..) {
            // Closing a listener ends its multishot accept.
            let _ = l.into_raw_fd();
        }
        let deadline = Instant::now() + DRAIN_ON_SHUTDOWN;
        while Instant::now() < deadline {
            let pending = core.conn_indices().into_iter().any(|i| {
                core.conn(i).is_some_and(|c| {
                    !c.unsent().is_empty() || !c.slots.is_empty() || c.inflight > 0
                })
            });
            if !pending {
                break;
            }
            for idx in core.conn_indices() {
                core.mark_if_pending(idx);
            }
            self.turn(core)?;
            self.enter(Duration::from_millis(10))?;
            self.reap(core)?;
        }
        Ok(())
    }
}

/// The peer address of a socket, as `ip:port`.
fn peer_name(fd: &OwnedFd) -> String {
    // SAFETY: getpeername writes at most `len` bytes into the zeroed storage we pass.
    let (storage, ok) = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let ok = libc::getpeername(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) == 0;
        (storage, ok)
    };
    if !ok {
        return String::new();
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            format!("{ip}:{}", u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            format!("[{ip}]:{}", u16::from_be(a.sin6_port))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_roundtrips() {
        let u = ud(K_SEND, 0xab_cdef, 12345);
        assert_eq!(ud_parts(u), (K_SEND, 0xab_cdef, 12345));
        let u = ud(K_RECV, 0x1ff_ffff, u32::MAX);
        assert_eq!(ud_parts(u), (K_RECV, 0xff_ffff, u32::MAX));
    }

    /// Streams `rounds` messages of `msg_len` bytes through a multishot receive into `bufs`,
    /// one round trip each, and checks that every byte arrives once and in order.
    fn stream_through(ring: &mut IoUring, bufs: &mut BufRing, rounds: usize, msg_len: usize) {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into the array.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: fresh descriptors owned by nothing else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        let mut armed = false;
        let mut round = 0;
        // Every round sends a message and waits for a completion; once all are sent, the loop
        // waits for the rest (bounded: a lost byte fails the comparison below).
        for _ in 0..rounds * 4 {
            if !armed {
                push(
                    ring,
                    &opcode::RecvMulti::new(Fd(a.as_raw_fd()), BGID)
                        .build()
                        .user_data(1),
                )
                .unwrap();
                armed = true;
            }
            if round < rounds {
                let msg: Vec<u8> = (0..msg_len)
                    .map(|j| ((round * 31 + j) % 251) as u8)
                    .collect();
                // SAFETY: writes a live byte buffer to our socket.
                let n = unsafe { libc::write(b.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
                assert_eq!(n, msg_len as isize);
                sent.extend_from_slice(&msg);
                round += 1;
            } else if got.len() == sent.len() {
                break;
            }
            ring.submit_and_wait(1).unwrap();
            let cqes: Vec<_> = ring.completion().map(|c| (c.result(), c.flags())).collect();
            for (res, flags) in cqes {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if res > 0 {
                        got.extend_from_slice(bufs.get(bid, res as usize));
                    }
                    bufs.release(bid, res, flags);
                    bufs.publish();
                }
                if !cqueue::more(flags) {
                    armed = false;
                }
            }
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes arrived out of order or changed");
    }

    /// Streams messages through a buffer ring of `count` buffers of `size` bytes (consumed
    /// incrementally if `inc`) enough to go round it twice; skipped where the kernel lacks it.
    fn ring_round_twice(count: u16, size: usize, inc: bool, msg_len: usize) {
        // Declared first so that it is dropped after the ring.
        let mut bufs: BufRing;
        let Ok(mut ring) = IoUring::new(64) else {
            return;
        };
        // SAFETY: `bufs` is declared before `ring`, so the ring is dropped first.
        match unsafe { BufRing::with_layout(&ring, count, size, inc) } {
            Ok(b) => bufs = b,
            Err(_) => return, // incremental consumption needs Linux 6.12
        }
        assert_eq!(bufs.incremental(), inc);
        if inc {
            // A completion with no bytes leaves its buffer with the kernel.
            let tail = bufs.tail;
            bufs.release(0, 0, 0);
            bufs.release(0, -libc::ENOBUFS, 0);
            assert_eq!(bufs.tail, tail);
        }
        let bytes = usize::from(count) * if inc { size } else { msg_len };
        stream_through(&mut ring, &mut bufs, bytes * 2 / msg_len + 1, msg_len);
    }

    #[test]
    fn whole_buffers_recycle_through_the_kernel() {
        // Exercises BufRing's unsafe ring writes: more receives than buffers must all arrive.
        ring_round_twice(BUF_COUNT, BUF_SIZE, false, 1000);
    }

    #[test]
    fn incremental_buffers_fill_up_and_recycle_through_the_kernel() {
        // Messages that do not divide a buffer: each buffer ends in a short receive.
        ring_round_twice(INC_BUF_COUNT, INC_BUF_SIZE, true, 3000);
    }
}
