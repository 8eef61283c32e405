//! The floor under the server's cost per request: the least a cache on corecache's io_uring
//! structure can spend, with none of corecache's work.
//!
//! One thread, one ring (single issuer, deferred task work), a multishot accept, a multishot
//! receive per connection into the server's own provided-buffer ring
//! (`runtime::uring::BufRing`), one send per connection per loop turn, one `io_uring_enter` per
//! turn: the mechanisms corecache's uring backend uses. On top sits
//! the least a text-protocol cache must do: `get <key>` and `set <key> <flags> <exptime>
//! <bytes>` over a `HashMap`, nothing else (no expiry, no memory limit, no stats, no other
//! command; anything else closes the connection). It is not a server for anyone's data; it
//! is a yardstick. `tuning/floor.sh` runs the `get90-p1` load against it, corecache and
//! memcached and reports each one's CPU time per request: the share of corecache's cost that
//! is the kernel's TCP work, which no user-space change can remove.
//!
//! With `--canned` it does not even keep a map: every key of a `get` is a hit with the same
//! 64-byte value, and a `set`'s data is dropped. That leaves the transport alone: the kernel's
//! work plus finding request boundaries.
//!
//! Usage: `loopback_floor [--canned] [PORT]` (default port 0: any free port); prints
//! `listening ADDR`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use corecache::runtime::uring::{BufRing, BGID};
use io_uring::types::{Fd, Fixed};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// Registered-file slots: connections beyond them are closed.
const FIXED_SLOTS: u32 = 4096;
/// The value every `get` finds with `--canned`, with its flags and length.
const CANNED: &[u8] =
    b" 0 64\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";
/// Input a connection may hold before it is closed (one request never needs more here).
const INPUT_MAX: usize = 1 << 20;
/// Replies a connection may have waiting behind its send before its input is left unread
/// (a client that pipelines without reading then fills `INPUT_MAX` and is closed).
const OUT_MAX: usize = 4 << 20;
// user_data: kind (8 bits) | the slot's generation (24 bits) | slot (32 bits).
const K_ACCEPT: u64 = 1 << 56;
const K_RECV: u64 = 2 << 56;
const K_SEND: u64 = 3 << 56;

fn ud(kind: u64, generation: u32, idx: usize) -> u64 {
    kind | (u64::from(generation) & 0xff_ffff) << 32 | idx as u64
}

struct Conn {
    fd: OwnedFd,
    generation: u32,
    input: Vec<u8>,
    out: Vec<u8>,
    /// The buffer the kernel is sending and how much of it it has taken.
    sending: Option<(Vec<u8>, usize)>,
    closing: bool,
}

/// Pushes `e`, submitting first when the queue is full.
fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an entry names (receive buffers of the registered ring, a
        // connection's `sending` vector) stays alive and unmoved until its completion
        // arrives: `sending` is only replaced after its send completes, and connections
        // are only dropped once nothing of theirs is in flight.
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// Answers the complete requests at the start of `input` into `out`; returns the bytes used,
/// or `None` on a request this server does not serve.
fn answer(
    map: Option<&mut HashMap<Vec<u8>, Vec<u8>>>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Option<usize> {
    let mut map = map;
    let mut used = 0;
    while let Some(eol) = input[used..].windows(2).position(|w| w == b"\r\n") {
        let line = &input[used..used + eol];
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        match words.next()? {
            b"get" => {
                for key in words {
                    let found = match map.as_deref() {
                        Some(map) => map.get(key).map(Vec::as_slice),
                        None => Some(CANNED),
                    };
                    if let Some(v) = found {
                        // The value is stored with its flags line prefix: "<flags> <len>".
                        out.extend_from_slice(b"VALUE ");
                        out.extend_from_slice(key);
                        out.extend_from_slice(v);
                    }
                }
                out.extend_from_slice(b"END\r\n");
                used += eol + 2;
            }
            b"set" => {
                let key = words.next()?;
                let flags = words.next()?;
                let _exptime = words.next()?;
                let len_word = words.next()?;
                let len: usize = std::str::from_utf8(len_word).ok()?.parse().ok()?;
                if len > INPUT_MAX {
                    return None;
                }
                let data = used + eol + 2;
                if input.len() < data + len + 2 {
                    break; // the data block has not all arrived
                }
                if let Some(map) = map.as_deref_mut() {
                    let mut v = Vec::with_capacity(flags.len() + len_word.len() + len + 6);
                    v.push(b' ');
                    v.extend_from_slice(flags);
                    v.push(b' ');
                    v.extend_from_slice(len_word);
                    v.extend_from_slice(b"\r\n");
                    v.extend_from_slice(&input[data..data + len + 2]);
                    map.insert(key.to_vec(), v);
                }
                out.extend_from_slice(b"STORED\r\n");
                used = data + len + 2;
            }
            _ => return None,
        }
    }
    Some(used)
}

/// Serves on `listener` until it fails.
fn serve(listener: TcpListener, canned: bool) -> io::Result<()> {
    // Declared first so that it is dropped after the ring.
    let mut bufs: BufRing;
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(8192)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1024)?;
    // SAFETY: `bufs` is declared before `ring`, so the ring is dropped first.
    bufs = unsafe { BufRing::new(&ring) }?;
    ring.submitter().register_files_sparse(FIXED_SLOTS)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut generation: u32 = 0;
    let mut dirty: Vec<usize> = Vec::new();
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let lfd = Fd(listener.as_raw_fd());
    push(
        &mut ring,
        &opcode::AcceptMulti::new(lfd).build().user_data(K_ACCEPT),
    )?;
    loop {
        ring.submit_and_wait(1)?;
        let cqes: Vec<cqueue::Entry> = ring.completion().collect();
        for cqe in cqes {
            let (kind, gen, idx, res) = (
                cqe.user_data() & (0xff << 56),
                ((cqe.user_data() >> 32) & 0xff_ffff) as u32,
                (cqe.user_data() & 0xffff_ffff) as usize,
                cqe.result(),
            );
            // A completion of a connection that has since left its slot.
            let stale = |conns: &[Option<Conn>]| {
                conns
                    .get(idx)
                    .and_then(Option::as_ref)
                    .is_none_or(|c| c.generation & 0xff_ffff != gen)
            };
            match kind {
                K_ACCEPT => {
                    if !cqueue::more(cqe.flags()) {
                        push(
                            &mut ring,
                            &opcode::AcceptMulti::new(lfd).build().user_data(K_ACCEPT),
                        )?;
                    }
                    if res < 0 {
                        continue;
                    }
                    // SAFETY: a successful accept's result is a new descriptor owned by no one.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    let one: libc::c_int = 1;
                    // SAFETY: a valid socket, option and option length.
                    unsafe {
                        libc::setsockopt(
                            fd.as_raw_fd(),
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    let idx = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    if idx >= FIXED_SLOTS as usize {
                        conns.truncate(FIXED_SLOTS as usize);
                        continue; // dropping `fd` closes it
                    }
                    ring.submitter()
                        .register_files_update(idx as u32, &[fd.as_raw_fd()])?;
                    generation = generation.wrapping_add(1);
                    let recv = opcode::RecvMulti::new(Fixed(idx as u32), BGID)
                        .build()
                        .user_data(ud(K_RECV, generation, idx));
                    conns[idx] = Some(Conn {
                        fd,
                        generation,
                        input: Vec::new(),
                        out: Vec::new(),
                        sending: None,
                        closing: false,
                    });
                    push(&mut ring, &recv)?;
                }
                K_RECV => {
                    let more = cqueue::more(cqe.flags());
                    if stale(&conns) {
                        if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                            bufs.release(bid, res, cqe.flags());
                        }
                        continue;
                    }
                    let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                        continue;
                    };
                    if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                        if res > 0 && c.input.len() < INPUT_MAX {
                            c.input.extend_from_slice(bufs.get(bid, res as usize));
                            dirty.push(idx);
                        }
                        bufs.release(bid, res, cqe.flags());
                    }
                    if res == 0 || (res < 0 && res != -libc::ENOBUFS) {
                        c.closing = true;
                        dirty.push(idx);
                    } else if !more {
                        let recv = opcode::RecvMulti::new(Fixed(idx as u32), BGID)
                            .build()
                            .user_data(ud(K_RECV, c.generation, idx));
                        push(&mut ring, &recv)?;
                    }
                }
                K_SEND => {
                    if stale(&conns) {
                        continue;
                    }
                    let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                        continue;
                    };
                    let Some((buf, mut off)) = c.sending.take() else {
                        continue;
                    };
                    if res < 0 {
                        c.closing = true;
                    } else {
                        off += res as usize;
                        if off < buf.len() {
                            let send = opcode::Send::new(
                                Fixed(idx as u32),
                                buf[off..].as_ptr(),
                                (buf.len() - off) as u32,
                            )
                            .build()
                            .user_data(ud(K_SEND, c.generation, idx));
                            c.sending = Some((buf, off));
                            push(&mut ring, &send)?;
                            continue;
                        }
                        // Keep the emptied vector for the next reply.
                        if c.out.is_empty() {
                            c.out = buf;
                            c.out.clear();
                        }
                    }
                    dirty.push(idx);
                }
                _ => {}
            }
        }
        bufs.publish();
        for idx in dirty.drain(..) {
            let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if !c.closing && c.out.len() < OUT_MAX {
                let map = if canned { None } else { Some(&mut map) };
                match answer(map, &c.input, &mut c.out) {
                    Some(used) => {
                        c.input.drain(..used);
                    }
                    None => c.closing = true,
                }
                if c.input.len() >= INPUT_MAX {
                    c.closing = true;
                }
            }
            if c.closing {
                // Shutting the socket down ends its multishot receive (whose late
                // completions the generation marks stale); the connection is dropped once
                // no send owns its buffer.
                // SAFETY: a valid socket descriptor.
                unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
                if c.sending.is_none() {
                    ring.submitter().register_files_update(idx as u32, &[-1])?;
                    conns[idx] = None;
                }
                continue;
            }
            if c.sending.is_none() && !c.out.is_empty() {
                let buf = std::mem::take(&mut c.out);
                let send = opcode::Send::new(Fixed(idx as u32), buf.as_ptr(), buf.len() as u32)
                    .build()
                    .user_data(ud(K_SEND, c.generation, idx));
                c.sending = Some((buf, 0));
                push(&mut ring, &send)?;
            }
        }
    }
}

fn main() -> io::Result<()> {
    let mut canned = false;
    let mut port: u16 = 0;
    for arg in std::env::args().skip(1) {
        if arg == "--canned" {
            canned = true;
        } else {
            port = arg
                .parse()
                .map_err(|_| io::Error::other("usage: loopback_floor [--canned] [PORT]"))?;
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening {}", listener.local_addr()?);
    io::stdout().flush()?;
    serve(listener, canned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecache::runtime::uring::BUF_SIZE;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpStream;

    #[test]
    fn answer_serves_get_and_set_and_waits_for_a_whole_data_block() {
        let mut map = HashMap::new();
        let mut out = Vec::new();
        assert_eq!(
            answer(Some(&mut map), b"set k 5 0 3\r\nab", &mut out),
            Some(0)
        );
        let input = b"set k 5 0 3\r\nabc\r\nget k x\r\n";
        assert_eq!(answer(Some(&mut map), input, &mut out), Some(27));
        assert_eq!(out, b"STORED\r\nVALUE k 5 3\r\nabc\r\nEND\r\n");
        assert_eq!(answer(Some(&mut map), b"delete k\r\n", &mut out), None);
        out.clear();
        assert_eq!(answer(None, input, &mut out), Some(27));
        let mut canned = b"STORED\r\nVALUE k".to_vec();
        canned.extend_from_slice(CANNED);
        canned.extend_from_slice(b"VALUE x");
        canned.extend_from_slice(CANNED);
        canned.extend_from_slice(b"END\r\n");
        assert_eq!(out, canned);
    }

    /// Runs the ring, the buffer ring and its unsafe code against real sockets: many
    /// connections, replies split across receives, a value bigger than one receive buffer.
    #[test]
    fn serves_many_connections_over_the_ring() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The server thread serves until the test process ends.
        std::thread::spawn(move || serve(listener, false));
        let mut conns: Vec<BufReader<TcpStream>> = (0..20)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                BufReader::new(s)
            })
            .collect();
        let big = vec![b'x'; 3 * BUF_SIZE];
        for (i, c) in conns.iter_mut().enumerate() {
            let value = if i == 0 {
                big.clone()
            } else {
                format!("v{i}").into_bytes()
            };
            let mut req = format!("set key{i} {i} 0 {}\r\n", value.len()).into_bytes();
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
            // Split the request in two writes to cross receive boundaries.
            let (a, b) = req.split_at(req.len() / 2);
            c.get_mut().write_all(a).unwrap();
            c.get_mut().write_all(b).unwrap();
            let mut line = String::new();
            c.read_line(&mut line).unwrap();
            assert_eq!(line, "STORED\r\n");
        }
        for round in 0..50 {
            for (i, c) in conns.iter_mut().enumerate() {
                let j = (i + round) % 20;
                let req = format!("get key{j} missing\r\n");
                c.get_mut().write_all(req.as_bytes()).unwrap();
                let mut line = String::new();
                c.read_line(&mut line).unwrap();
                let len = if j == 0 {
                    big.len()
                } else {
                    format!("v{j}").len()
                };
                assert_eq!(line, format!("VALUE key{j} {j} {len}\r\n"));
                let mut data = vec![0; len + 2];
                c.read_exact(&mut data).unwrap();
                let mut end = String::new();
                c.read_line(&mut end).unwrap();
                assert_eq!(end, "END\r\n");
            }
        }
    }
}
