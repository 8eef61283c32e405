//! Large values sent straight from item memory.
//!
//! A retrieval's reply is normally built in the connection's reply buffer and sent at the end
//! of the loop turn, so a value is copied twice: from its item into the buffer, then by the
//! kernel into the socket. For a large value the first copy costs as much as the second (the
//! item is rarely in cache), and memcached, which sends from the item, does not make it: at
//! 300 KB values corecache spent 1.41x memcached's CPU per request
//! (`tuning/results/20261124-large-values.md`).
//!
//! So while a connection has nothing else on its way out ([`Conn::direct_fd`]), a text
//! retrieval's hit of at least [`DIRECT_VALUE_MIN`] bytes is written at once with one non-blocking `sendmsg` of its
//! line, its data (from the item) and its CRLF. What the socket does not take is copied into
//! the reply buffer as before, and goes out with the rest of the turn's replies. The kernel has
//! copied the bytes by the time `sendmsg` returns, so the item need not outlive the call, and
//! nothing else runs on this core in between.
//!
//! Invariants: the client receives exactly the bytes `compose::value` would have appended, in
//! order; bytes sent here count in `bytes_written` like any other.

use std::os::fd::RawFd;

use super::connection::{Conn, LargeBufs, BUF_KEEP_BYTES};
use crate::protocol::compose;
use crate::shard::ValueOut;

/// The smallest value sent straight from its item. Below it the copy is cheaper than what a
/// send in the middle of the turn costs: the reply no longer leaves with the turn's other
/// replies, and on loopback each such send wakes the client on its own. Measured against
/// copying (get90, 50 connections, `tuning/results/20261124-large-values.md`): 1.38x the
/// CPU per request at 50 KB values, 1.09x at 100 KB, 0.91x at 200 KB, 0.90x at 300 KB.
pub const DIRECT_VALUE_MIN: usize = 192 * 1024;

/// Writes one connection's retrieval hits into its `out`: large values straight to its socket
/// when [`Conn::direct_fd`] allowed it (see the module doc), and others too large for the
/// buffer into one from the core's reserve of large reply buffers, instead of a fresh one.
pub struct LargeValues<'a> {
    fd: Option<RawFd>,
    reserve: &'a mut LargeBufs,
    /// Bytes the socket took here.
    pub sent: u64,
}

impl<'a> LargeValues<'a> {
    pub fn new(fd: Option<RawFd>, reserve: &'a mut LargeBufs) -> LargeValues<'a> {
        LargeValues {
            fd,
            reserve,
            sent: 0,
        }
    }
}

impl ValueOut for LargeValues<'_> {
    #[inline(always)]
    fn value(
        &mut self,
        out: &mut Vec<u8>,
        key: &[u8],
        client_flags: u32,
        data: &[u8],
        cas: Option<u64>,
    ) {
        if data.len() > BUF_KEEP_BYTES / 2 {
            self.large(out, key, client_flags, data, cas);
        } else {
            compose::value(out, key, client_flags, data, cas);
        }
    }
}

impl LargeValues<'_> {
    #[inline(never)]
    fn large(
        &mut self,
        out: &mut Vec<u8>,
        key: &[u8],
        client_flags: u32,
        data: &[u8],
        cas: Option<u64>,
    ) {
        // Anything already in `out` must reach the client first: then copy, as usual.
        let fd = self
            .fd
            .filter(|_| data.len() >= DIRECT_VALUE_MIN && out.is_empty());
        let Some(fd) = fd else {
            let need = out.len() + key.len() + data.len() + 64;
            if need > out.capacity() && need > BUF_KEEP_BYTES {
                if let Some(mut buf) = self.reserve.take(need) {
                    buf.extend_from_slice(out);
                    let small = std::mem::replace(out, buf);
                    self.reserve.give(small);
                }
            }
            return compose::value(out, key, client_flags, data, cas);
        };
        compose::value_head(out, key, client_flags, data.len(), cas);
        let head = out.len();
        let n = send_parts(fd, &[out.as_slice(), data, b"\r\n"]);
        self.sent += n as u64;
        // Whatever was not taken goes into `out`, from where the socket stopped.
        if n < head {
            out.drain(..n);
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.clear();
            let taken = n - head;
            if taken < data.len() {
                out.extend_from_slice(&data[taken..]);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&b"\r\n"[taken - data.len()..]);
            }
        }
    }
}

/// One non-blocking `sendmsg` of `parts`, in order: the bytes the socket took (0 when it
/// took none or failed; a failure shows again when the rest is sent the usual way).
fn send_parts(fd: RawFd, parts: &[&[u8]; 3]) -> usize {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 3];
    for (v, part) in iov.iter_mut().zip(parts) {
        v.iov_base = part.as_ptr().cast_mut().cast();
        v.iov_len = part.len();
    }
    // SAFETY: an all-zero msghdr is valid (no name, no control data); the iovecs point into
    // `parts`, which outlive the call and which the kernel only reads. Without MSG_ZEROCOPY
    // the kernel copies the bytes before sendmsg returns, so nothing refers to them after.
    // `fd` is the connection's socket, open for as long as its `Conn` exists.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    usize::try_from(sent).unwrap_or(0)
}

impl Conn {
    /// The socket a large value may be written to right now: when the connection is a plain
    /// stream (no TLS, not UDP, not a `watch`) with nothing queued, waiting or in flight
    /// before the reply.
    #[inline(always)]
    pub fn direct_fd(&self) -> Option<RawFd> {
        let idle = self.out.is_empty() && self.inflight == 0 && self.slots.is_empty();
        let plain = self.tls.is_none() && self.udp.is_none() && self.watch.is_none();
        (self.fd >= 0 && idle && plain && !self.closing).then_some(self.fd)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn expected(data: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        compose::value(&mut block, b"k", 5, data, Some(9));
        block
    }

    #[test]
    fn a_large_value_goes_out_whole_without_the_buffer() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let data = vec![b'x'; DIRECT_VALUE_MIN];
        let mut reserve = LargeBufs::default();
        let mut direct = LargeValues::new(Some(a.as_raw_fd()), &mut reserve);
        let mut out = Vec::new();
        direct.value(&mut out, b"k", 5, &data, Some(9));
        let want = expected(&data);
        assert!(out.is_empty(), "the socket took all of it");
        assert_eq!(direct.sent, want.len() as u64);
        let mut got = vec![0; want.len()];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn what_the_socket_does_not_take_is_left_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        // A value larger than the socket's buffer: part goes now, the rest stays in `out`.
        let data: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let mut reserve = LargeBufs::default();
        let mut direct = LargeValues::new(Some(a.as_raw_fd()), &mut reserve);
        let mut out = Vec::new();
        direct.value(&mut out, b"k", 5, &data, Some(9));
        let want = expected(&data);
        assert!(direct.sent > 0 && (direct.sent as usize) < want.len());
        assert_eq!(direct.sent as usize + out.len(), want.len());
        let mut got = vec![0; direct.sent as usize];
        b.read_exact(&mut got).unwrap();
        got.extend_from_slice(&out);
        assert_eq!(got, want);
        // Nothing more is sent directly while `out` holds bytes: the next block is copied.
        let before = out.len();
        direct.value(&mut out, b"k", 5, &data, Some(9));
        assert_eq!(out.len(), before + want.len());
    }

    #[test]
    fn a_closed_peer_or_a_small_value_leaves_everything_in_the_buffer() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut reserve = LargeBufs::default();
        let mut direct = LargeValues::new(Some(a.as_raw_fd()), &mut reserve);
        let mut out = Vec::new();
        let small = vec![b's'; DIRECT_VALUE_MIN - 1];
        direct.value(&mut out, b"k", 5, &small, Some(9));
        assert_eq!(out, expected(&small));
        out.clear();
        drop(b);
        let data = vec![b'x'; DIRECT_VALUE_MIN];
        direct.value(&mut out, b"k", 5, &data, Some(9));
        assert_eq!(direct.sent, 0);
        assert_eq!(out, expected(&data));
    }

    #[test]
    fn a_large_value_that_is_copied_takes_a_buffer_from_the_reserve() {
        let mut reserve = LargeBufs::default();
        reserve.give(Vec::with_capacity(1 << 20));
        let mut values = LargeValues::new(None, &mut reserve);
        let mut out = b"END\r\n".to_vec();
        let data = vec![b'x'; 500_000];
        values.value(&mut out, b"k", 5, &data, Some(9));
        assert_eq!(out.capacity(), 1 << 20, "the reserve's buffer");
        assert_eq!(out, [b"END\r\n".to_vec(), expected(&data)].concat());
        assert_eq!(values.sent, 0);
        assert_eq!(
            reserve.count(),
            0,
            "the small buffer it replaced is not kept"
        );
    }
}
