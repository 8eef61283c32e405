//! Hostile and careless clients: endless lines, clients that never read, connection churn,
//! the connection limit, eviction under a small memory limit, garbage bytes, SIGTERM.
//!
//! Checked against memcached 1.6.18 (`CORECACHE_TEST_SERVER=memcached cargo test --test
//! robustness`).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    escape, for_each_config, memcached_mode, skip_in_memcached_mode, start_each_receive_ring,
    stat_u64, wait_until, Client, Rng, TestServer,
};

const MB: u64 = 1 << 20;

/// Sends as much of `bytes` as the server takes; stops at the first error (closed, reset) or
/// when a write blocks for longer than `stall`. Returns how many bytes went out.
fn send_what_is_taken(stream: &mut TcpStream, bytes: &[u8], stall: Duration) -> usize {
    stream.set_write_timeout(Some(stall)).unwrap();
    let mut sent = 0;
    while sent < bytes.len() {
        let end = (sent + 64 * 1024).min(bytes.len());
        match stream.write(&bytes[sent..end]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sent
}

/// 1 MB without a newline: the server closes or rejects that connection, keeps its memory,
/// and other clients are unaffected.
#[test]
fn endless_line_is_cut_off() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut other = server.connect();
        other.roundtrip(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
        let rss_before = server.rss_bytes();

        let mut c = server.connect();
        let junk = vec![b'a'; MB as usize];
        let sent = send_what_is_taken(
            &mut c.stream().try_clone().unwrap(),
            &junk,
            Duration::from_secs(5),
        );
        eprintln!("server took {sent} of {} bytes", junk.len());
        // Either the connection is closed (memcached: silently, after 2048 bytes), or the
        // server answers with an error.
        let got = c.expect_closed_or_error();
        eprintln!("endless line answered with: {}", escape(&got));

        other.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n");
        server
            .connect()
            .roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n");
        let rss_after = server.rss_bytes();
        assert!(
            rss_after < rss_before + 16 * MB,
            "RSS grew from {rss_before} to {rss_after}"
        );
    });
}

trait ClosedOrError {
    fn expect_closed_or_error(&mut self) -> Vec<u8>;
}

impl ClosedOrError for Client {
    /// The connection is closed, or an error line (`CLIENT_ERROR`/`SERVER_ERROR`/`ERROR`) came.
    fn expect_closed_or_error(&mut self) -> Vec<u8> {
        let mut stream = self.stream().try_clone().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.ends_with(b"\r\n")
                        && (got.starts_with(b"CLIENT_ERROR")
                            || got.starts_with(b"SERVER_ERROR")
                            || got.starts_with(b"ERROR"))
                    {
                        return got;
                    }
                }
                Err(e)
                    if e.kind() == ErrorKind::ConnectionReset
                        || e.kind() == ErrorKind::ConnectionAborted =>
                {
                    return got
                }
                Err(e) => panic!(
                    "endless line: neither closed nor rejected ({e}); got {}",
                    escape(&got)
                ),
            }
        }
    }
}

/// Once the server has done all it will for a client that does not read (`get_hits` has
/// stopped moving), its RSS is less than `limit` above `rss_before`.
#[track_caller]
fn assert_growth_while_unread(server: &TestServer, rss_before: u64, limit: u64) {
    let hits = wait_for_quiet_hits(server, Duration::from_secs(10));
    let rss_after = server.rss_bytes();
    eprintln!(
        "{hits} gets answered while the client does not read; RSS {} -> {} MB",
        rss_before / MB,
        rss_after / MB
    );
    assert!(
        rss_after < rss_before + limit,
        "RSS grew by {} MB",
        rss_after.saturating_sub(rss_before) / MB
    );
}

/// Stores `value` under `key` with a `set`.
fn store(c: &mut Client, key: &str, value: &[u8]) {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    c.roundtrip(&req, b"STORED\r\n");
}

/// Polls `get_hits` until it stops moving (the server has done all it is willing to do for
/// a client that does not read), bounded by `timeout`.
fn wait_for_quiet_hits(server: &TestServer, timeout: Duration) -> u64 {
    let mut last = u64::MAX;
    let mut stable = 0;
    let deadline = Instant::now() + timeout;
    loop {
        let hits = stat_u64(&server.stats(), "get_hits");
        if hits == last {
            stable += 1;
            if stable >= 5 {
                return hits;
            }
        } else {
            stable = 0;
            last = hits;
        }
        if Instant::now() > deadline {
            return hits;
        }
        thread::sleep(Duration::from_millis(20)); // bounded poll
    }
}

/// A client pipelines 10,000 gets of a 100 KB value (1 GB of replies) and never reads:
/// the server applies backpressure instead of buffering, and serves others meanwhile.
#[test]
fn client_that_never_reads_cannot_grow_memory() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut other = server.connect();
        store(&mut other, "big", &vec![b'v'; 100 * 1024]);
        let rss_before = server.rss_bytes();

        let mut lazy = TcpStream::connect(server.addr()).unwrap();
        lazy.set_nodelay(true).unwrap();
        let gets = b"get big\r\n".repeat(10_000);
        let sent = send_what_is_taken(&mut lazy, &gets, Duration::from_secs(2));
        eprintln!("lazy client: {sent} of {} request bytes taken", gets.len());
        assert_growth_while_unread(&server, rss_before, 200 * MB);
        // Others are served while the lazy client is stuck.
        other.roundtrip(b"set small 0 0 2\r\nok\r\n", b"STORED\r\n");
        other.roundtrip(b"get small\r\n", b"VALUE small 0 2\r\nok\r\nEND\r\n");
        let mut fresh = server.connect();
        fresh.roundtrip(b"get small\r\n", b"VALUE small 0 2\r\nok\r\nEND\r\n");
        drop(lazy);
        // After the lazy client goes away, things are still fine.
        fresh.roundtrip(b"delete small\r\n", b"DELETED\r\n");
    });
}

/// Connections that once carried large values keep no large buffers while idle: 100 clients
/// each store a 300 KB value (text `set` or meta `ms`, sent in pieces) and read a 500 KB one,
/// then stay connected. What the server holds for their input and replies once they are idle
/// (its `stats`) is a few megabytes, not the 80 MB it would be if each connection kept the
/// buffers those values grew (memcached reads values straight into items and keeps none).
#[test]
fn idle_connections_keep_no_large_buffers() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let big = vec![b'g'; 500_000];
        store(&mut c, "big", &big);
        let mut reply = b"VALUE big 0 500000\r\n".to_vec();
        reply.extend_from_slice(&big);
        reply.extend_from_slice(b"\r\nEND\r\n");
        let value = vec![b's'; 300_000];
        let mut idle = Vec::new();
        for i in 0..100 {
            let mut conn = server.connect();
            let mut req = if i % 2 == 0 {
                format!("set k{i} 0 0 {}\r\n", value.len()).into_bytes()
            } else {
                format!("ms k{i} {}\r\n", value.len()).into_bytes()
            };
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
            // In pieces, so the value arrives over several reads.
            for piece in req.chunks(64 * 1024) {
                conn.send(piece);
            }
            conn.read_exact_reply(if i % 2 == 0 { b"STORED\r\n" } else { b"HD\r\n" });
            conn.roundtrip(b"get big\r\n", &reply);
            idle.push(conn);
        }
        // Every value arrived whole.
        let mut check = format!("VALUE k99 0 {}\r\n", value.len()).into_bytes();
        check.extend_from_slice(&value);
        check.extend_from_slice(b"\r\nEND\r\n");
        c.roundtrip(b"get k99\r\n", &check);
        // Emptied large buffers leave their connections at once; each shard may keep up to
        // 4 MB of large input and 4 MB of large reply buffers for the next large values, and
        // a sweep once a second frees what idle connections still hold.
        let shards: u64 = args[1].parse().unwrap();
        let bound = 8 * MB + shards * 8 * MB;
        let held = |stats: &std::collections::HashMap<String, String>| {
            stat_u64(stats, "read_buf_bytes") + stat_u64(stats, "response_obj_bytes")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stats = server.stats();
        while held(&stats) >= bound && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100)); // bounded poll
            stats = server.stats();
        }
        let held = held(&stats);
        eprintln!(
            "idle: read_buf_bytes {} (free {}), response_obj_bytes {}",
            stat_u64(&stats, "read_buf_bytes"),
            stat_u64(&stats, "read_buf_bytes_free"),
            stat_u64(&stats, "response_obj_bytes")
        );
        assert!(
            held < bound,
            "{held} bytes of buffers held for idle connections"
        );
        assert!(stat_u64(&stats, "read_buf_bytes_free") <= shards * 4 * MB);
        drop(idle);
    });
}

/// One `get` naming a 1 MB value 400 times asks for 400 MB of reply (a get line may hold a
/// megabyte of keys). The server answers it as the client reads instead of building the whole
/// reply first: memory stays bounded while the client does not read, and every value arrives
/// once it does.
#[test]
fn one_get_of_many_large_values_streams() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let value = vec![b'b'; 1_000_000];
        store(&mut c, "big", &value);
        let rss_before = server.rss_bytes();

        let repeats = 400;
        let mut get = b"get".to_vec();
        for _ in 0..repeats {
            get.extend_from_slice(b" big");
        }
        get.extend_from_slice(b"\r\nget nothing\r\n");
        c.send(&get);
        assert_growth_while_unread(&server, rss_before, 100 * MB);

        let mut block = b"VALUE big 0 1000000\r\n".to_vec();
        block.extend_from_slice(&value);
        block.extend_from_slice(b"\r\n");
        for i in 0..repeats {
            match c.read_n(block.len()) {
                Ok(got) if got == block => {}
                Ok(got) => panic!("value {i}: {}", escape(&got[..64.min(got.len())])),
                Err((got, e)) => panic!("value {i}: {e} after {} bytes", got.len()),
            }
        }
        c.read_exact_reply(b"END\r\nEND\r\n");
        c.roundtrip(b"get big nothing\r\n", &[&block[..], b"END\r\n"].concat());
    });
}

/// A client pipelines 1,000 gets of four 1 MB values (1 GB of replies) and does not read.
/// With two shards some of the values are the other shard's: their replies must not pile up
/// in the connection's reorder queue either. Once the client reads, every reply arrives.
#[test]
fn pipelined_gets_of_large_values_from_every_shard_stay_bounded() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let value = vec![b'p'; 1_000_000];
        // Keys that two shards split between them (a and c on one, b and d on the other).
        let keys = ["a", "b", "c", "d"];
        for key in keys {
            store(&mut c, key, &value);
        }
        let rss_before = server.rss_bytes();

        let rounds = 250;
        let gets = b"get a\r\nget b\r\nget c\r\nget d\r\n".repeat(rounds);
        let mut lazy = TcpStream::connect(server.addr()).unwrap();
        lazy.set_nodelay(true).unwrap();
        let sent = send_what_is_taken(&mut lazy, &gets, Duration::from_secs(2));
        eprintln!("{sent} of {} request bytes taken", gets.len());
        assert_growth_while_unread(&server, rss_before, 200 * MB);

        // Now read: the rest of the requests go in as replies come out.
        let reply_len = "VALUE a 0 1000000\r\n".len() + value.len() + "\r\nEND\r\n".len();
        let expected = reply_len * 4 * rounds;
        lazy.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        lazy.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (mut sent, mut got) = (sent, 0);
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < expected {
            assert!(Instant::now() < deadline, "{got} of {expected} reply bytes");
            if sent < gets.len() {
                match lazy.write(&gets[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
            match lazy.read(&mut buf) {
                Ok(0) => panic!("closed after {got} of {expected} reply bytes"),
                Ok(n) => {
                    got += n;
                    tail.extend_from_slice(&buf[..n]);
                    let keep = tail.len().saturating_sub(64);
                    tail.drain(..keep);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got, expected);
        assert!(tail.ends_with(b"ppppp\r\nEND\r\n"), "{}", escape(&tail));
        assert_eq!(
            stat_u64(&server.stats(), "get_hits"),
            4 * rounds as u64,
            "get_hits"
        );
    });
}

/// 2,000 connect/disconnect cycles; stats still answer and curr_connections returns.
#[test]
fn connection_churn() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut watcher = server.connect();
        let baseline = stat_u64(&watcher.stats_sub(""), "curr_connections");
        for i in 0..2000u32 {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            match i % 4 {
                0 => {
                    // a full command and its reply
                    let mut c = Client::from_stream(s);
                    c.roundtrip(b"version\r\n", b"");
                    let line = c.read_line();
                    assert!(line.starts_with(b"VERSION "));
                }
                1 => {
                    // half a command, then gone
                    let _ = s.write_all(b"set half 0 0 10\r\nabc");
                }
                2 => {
                    // a command whose reply is never read
                    let _ = s.write_all(b"get a b c\r\n");
                }
                _ => {} // connect and leave
            }
        }
        // `<=`: the baseline may still include the harness's readiness probe (memcached mode).
        let mut now = 0;
        let ok = wait_until(Duration::from_secs(10), || {
            now = stat_u64(&watcher.stats_sub(""), "curr_connections");
            now <= baseline
        });
        assert!(ok, "curr_connections {now}, baseline {baseline}");
        watcher.roundtrip(b"get half\r\n", b"END\r\n");
        let s = watcher.stats_sub("");
        assert!(stat_u64(&s, "total_connections") >= 2000);
    });
}

/// Requests that arrive together with the peer's FIN are answered before the connection
/// closes. On epoll a short read ends reading without the EAGAIN probe, so the FIN reported
/// in the same readiness event must still be read; repeated to catch it either way round.
#[test]
fn requests_arriving_with_the_fin_are_answered_then_closed() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        for i in 0..200u32 {
            let mut c = server.connect();
            let req = format!("set fin{i} 0 0 1\r\nv\r\nget fin{i}\r\n");
            c.send(req.as_bytes());
            c.stream().shutdown(std::net::Shutdown::Write).unwrap();
            let expected = format!("STORED\r\nVALUE fin{i} 0 1\r\nv\r\nEND\r\n");
            assert_eq!(
                String::from_utf8_lossy(&c.expect_closed()),
                expected,
                "round {i}"
            );
        }
    });
}

/// A burst of connections that piles up in the listen queue while the server is stopped is
/// served in full once it runs again: accepting continues past one turn's budget even when no
/// further connection arrives to signal the listener, and a late newcomer is not stuck behind
/// the backlog.
#[test]
fn connection_burst_queued_while_stopped_is_all_served() {
    const BURST: usize = 300;
    for_each_config(|args| {
        let server = TestServer::start(args);
        let pid = server.pid() as libc::pid_t;
        // SAFETY: signals the server process this test started and owns.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        // The kernel completes these handshakes into the listen queue; nothing is accepted yet.
        let mut burst: Vec<Client> = (0..BURST).map(|_| server.connect()).collect();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        for (i, c) in burst.iter_mut().enumerate() {
            c.roundtrip(
                format!("set burst{i} 0 0 1\r\nx\r\n").as_bytes(),
                b"STORED\r\n",
            );
        }
        let mut late = server.connect();
        let s = late.stats_sub("");
        assert!(stat_u64(&s, "curr_connections") > BURST as u64);
        late.roundtrip(
            format!("get burst0 burst{}\r\n", BURST - 1).as_bytes(),
            format!(
                "VALUE burst0 0 1\r\nx\r\nVALUE burst{} 0 1\r\nx\r\nEND\r\n",
                BURST - 1
            )
            .as_bytes(),
        );
    });
}

/// With fewer descriptors than `-c` asks for, the server says so at startup; connections
/// beyond the descriptors wait in the listen queue without the server spinning on EMFILE,
/// and are served as earlier ones close.
#[test]
fn descriptor_shortage_pauses_accepting_and_recovers() {
    if skip_in_memcached_mode("memcached refuses to start when -c exceeds the open-file limit") {
        return;
    }
    const NOFILE: u64 = 64;
    const CLIENTS: usize = 150;
    for_each_config(|args| {
        let server = TestServer::start_corecache_with_nofile(args, NOFILE);
        let err = server.stderr_holding("open-file limit 64");
        assert!(
            err.contains("open-file limit 64"),
            "no warning about the open-file limit: {err}"
        );
        let mut waiting: Vec<(usize, TcpStream)> = (0..CLIENTS)
            .map(|i| {
                let mut s = TcpStream::connect(server.addr()).unwrap();
                s.write_all(b"version\r\n").unwrap();
                s.set_nonblocking(true).unwrap();
                (i, s)
            })
            .collect();
        // Hold the shortage for a while: retrying is paced, not a busy loop.
        let window = Duration::from_millis(500);
        let before = server.cpu_time();
        thread::sleep(window); // a measurement window, not a synchronisation wait
        let used = server.cpu_time() - before;
        eprintln!("server CPU during {window:?} of descriptor shortage: {used:?}");
        assert!(
            used < window / 2,
            "server used {used:?} of CPU in {window:?}"
        );
        // Close each connection once it has its answer: the descriptor it frees lets a
        // waiting one in (on whichever shard retries first, so not in connect order).
        let mut served = 0;
        let ok = wait_until(Duration::from_secs(30), || {
            waiting.retain_mut(|(i, s)| {
                let mut buf = [0u8; 64];
                match s.read(&mut buf) {
                    Ok(n) => {
                        assert!(
                            buf[..n].starts_with(b"VERSION "),
                            "client {i}: {}",
                            escape(&buf[..n])
                        );
                        served += 1;
                        false
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                    Err(e) => panic!("client {i}: {e}"),
                }
            });
            waiting.is_empty()
        });
        assert!(
            ok,
            "{served} of {CLIENTS} served; still waiting: {:?}",
            waiting.iter().map(|w| w.0).collect::<Vec<_>>()
        );
        let mut c = server.connect();
        let s = c.stats_sub("");
        assert!(stat_u64(&s, "total_connections") > CLIENTS as u64);
        // The pauses show as memcached shows a disabled listener; accepting again now.
        assert!(stat_u64(&s, "listen_disabled_num") >= 1, "{s:?}");
        assert!(
            stat_u64(&s, "time_in_listen_disabled_us") >= 1_000,
            "paused for less than a millisecond: {s:?}"
        );
        assert_eq!(stat_u64(&s, "accepting_conns"), 1);
    });
}

/// Outcome of one connection attempt under a connection limit.
enum Attempt {
    Served(Client),
    Refused(Vec<u8>),
}

fn attempt(server: &TestServer) -> Attempt {
    let mut c = server.connect();
    c.send(b"version\r\n");
    // A refused connection gets "ERROR Too many open connections\r\n" and a close; because we
    // already wrote, the close may arrive as a reset that eats that line.
    match c.read_n(8) {
        Ok(head) if head == b"VERSION " => {
            let _ = c.read_line();
            Attempt::Served(c)
        }
        Ok(head) => {
            let mut all = head;
            all.extend_from_slice(&c.expect_closed());
            Attempt::Refused(all)
        }
        Err((partial, _)) => Attempt::Refused(partial),
    }
}

/// `-c N`: connections beyond the limit get memcached's `ERROR Too many open connections`
/// and are closed; `rejected_connections` counts them.
///
/// memcached counts its own file descriptors against `-c` (it even fails to start with
/// `-c 10`), so in memcached mode the test uses `-c 30 -t 1` and only checks that the limit
/// is at most `-c`; corecache must serve exactly `-c 10` clients.
#[test]
fn connection_limit_is_enforced() {
    let (limit, args): (usize, &[&str]) = if memcached_mode() {
        (30, &["-c", "30", "-t", "1"])
    } else {
        (10, &["-c", "10", "-t", "2"])
    };
    let server = TestServer::start(args);
    let mut served = Vec::new();
    let mut refusals = 0u64;
    loop {
        match attempt(&server) {
            Attempt::Served(c) => served.push(c),
            Attempt::Refused(bytes) => {
                refusals += 1;
                assert!(
                    bytes.is_empty() || bytes == b"ERROR Too many open connections\r\n",
                    "refusal bytes: {}",
                    escape(&bytes)
                );
                break;
            }
        }
        assert!(
            served.len() <= limit,
            "more than -c {limit} connections served"
        );
    }
    eprintln!(
        "served {} connections before the first refusal",
        served.len()
    );
    if !memcached_mode() {
        assert_eq!(served.len(), limit, "connections served with -c {limit}");
    }
    // The exact refusal, read without writing first.
    let mut c = server.connect();
    let bytes = c.expect_closed();
    refusals += 1;
    assert_eq!(
        bytes,
        b"ERROR Too many open connections\r\n",
        "refusal: {}",
        escape(&bytes)
    );
    // The served connections still work.
    for c in served.iter_mut().take(3) {
        c.roundtrip(b"get x\r\n", b"END\r\n");
    }
    // Free one slot; a new connection is served (retry while the close is processed).
    served.pop();
    let mut stats_conn = None;
    let ok = wait_until(Duration::from_secs(10), || match attempt(&server) {
        Attempt::Served(c) => {
            stats_conn = Some(c);
            true
        }
        Attempt::Refused(_) => {
            refusals += 1;
            false
        }
    });
    assert!(ok, "no slot became free after a close");
    let s = stats_conn.unwrap().stats_sub("");
    assert_eq!(stat_u64(&s, "rejected_connections"), refusals);
    assert_eq!(stat_u64(&s, "max_connections"), limit as u64);
}

/// `-m 8` with 50 MB of 10 KB values: evictions happen, memory stays bounded, recent keys live.
#[test]
fn eviction_under_small_memory_limit() {
    for_each_config(|args| {
        let mut full = args.to_vec();
        full.extend_from_slice(&["-m", "8"]);
        let server = TestServer::start(&full);
        let mut c = server.connect();
        let value = vec![b'e'; 10 * 1024];
        let total = 5000; // 50 MB
        for batch in 0..total / 100 {
            let mut req = Vec::with_capacity(100 * (value.len() + 40));
            for i in batch * 100..(batch + 1) * 100 {
                req.extend_from_slice(format!("set ev{i} 0 0 {}\r\n", value.len()).as_bytes());
                req.extend_from_slice(&value);
                req.extend_from_slice(b"\r\n");
            }
            c.roundtrip(&req, &b"STORED\r\n".repeat(100));
        }
        let rss = server.rss_bytes();
        eprintln!("RSS after 50 MB into -m 8: {} MB", rss / MB);
        assert!(rss < 64 * MB, "server RSS {} MB", rss / MB);
        let s = c.stats_sub("");
        let evictions = stat_u64(&s, "evictions");
        let items = stat_u64(&s, "curr_items");
        eprintln!("evictions {evictions}, curr_items {items}");
        assert!(evictions > 0);
        assert_eq!(items + evictions, total as u64, "items + evictions");
        assert!(stat_u64(&s, "bytes") <= 8 * MB);
        // Per class: evictions add up, and the latest one's idle time is reported (these items
        // were stored moments before they went, so it is small).
        let items_stats = c.stats_sub("items");
        let per_class = |field: &str| -> Vec<u64> {
            items_stats
                .iter()
                .filter(|(k, _)| k.ends_with(&format!(":{field}")))
                .map(|(_, v)| v.parse().unwrap())
                .collect()
        };
        assert_eq!(per_class("evicted").iter().sum::<u64>(), evictions);
        let idle = per_class("evicted_time");
        assert!(!idle.is_empty() && idle.iter().all(|&t| t < 60), "{idle:?}");
        for i in total - 20..total {
            let mut expected = format!("VALUE ev{i} 0 {}\r\n", value.len()).into_bytes();
            expected.extend_from_slice(&value);
            expected.extend_from_slice(b"\r\nEND\r\n");
            c.roundtrip(format!("get ev{i}\r\n").as_bytes(), &expected);
        }
        c.roundtrip(b"get ev0\r\n", b"END\r\n");
    });
}

/// Random bytes (seeded) and random near-protocol lines never kill the server, and a
/// bystander connection keeps getting correct answers.
#[test]
fn garbage_never_kills_the_server() {
    for_each_config(|args| {
        let mut server = TestServer::start(args);
        let mut bystander = server.connect();
        bystander.roundtrip(b"set bystander 0 0 4\r\nsafe\r\n", b"STORED\r\n");
        let verbs: &[&[u8]] = &[
            b"get",
            b"gets",
            b"gat",
            b"gats",
            b"set",
            b"add",
            b"replace",
            b"append",
            b"prepend",
            b"cas",
            b"incr",
            b"decr",
            b"touch",
            b"delete",
            b"version",
            b"verbosity",
            b"stats",
            b"noreply",
            b"quit",
            b"mg",
            b"ms",
            b"md",
            b"ma",
            b"mn",
            b"me",
        ];
        for seed in 0..16u64 {
            let mut rng = Rng::new(seed);
            let mut junk = Vec::new();
            while junk.len() < 32 * 1024 {
                match rng.below(3) {
                    0 => {
                        // raw random bytes
                        for _ in 0..rng.below(200) {
                            junk.push(rng.next_u64() as u8);
                        }
                    }
                    _ => {
                        // a near-protocol line: verb, random tokens, sometimes a data block
                        junk.extend_from_slice(verbs[rng.below(verbs.len() as u64) as usize]);
                        for _ in 0..rng.below(6) {
                            junk.extend_from_slice(b" ");
                            match rng.below(5) {
                                0 => {
                                    junk.extend_from_slice(format!("k{}", rng.below(10)).as_bytes())
                                }
                                1 => junk.extend_from_slice(rng.below(100).to_string().as_bytes()),
                                2 => junk.extend_from_slice(
                                    (rng.next_u64() as i64).to_string().as_bytes(),
                                ),
                                3 => junk.extend_from_slice(b"noreply"),
                                4 if rng.below(2) == 0 => {
                                    // a meta flag, with a token or a number or alone
                                    let flags = b"bcCdDEfhIklMnNoOpqPsStTuvVx";
                                    junk.push(flags[rng.below(flags.len() as u64) as usize]);
                                    match rng.below(3) {
                                        0 => junk.extend_from_slice(
                                            (rng.next_u64() as i64 % 100_000)
                                                .to_string()
                                                .as_bytes(),
                                        ),
                                        1 => junk.push(b"SEAPRID+-"[rng.below(9) as usize]),
                                        _ => {}
                                    }
                                }
                                _ => junk.push(rng.next_u64() as u8),
                            }
                        }
                        junk.extend_from_slice(if rng.below(4) == 0 { b"\n" } else { b"\r\n" });
                        if rng.below(3) == 0 {
                            for _ in 0..rng.below(20) {
                                junk.push(rng.next_u64() as u8);
                            }
                            junk.extend_from_slice(b"\r\n");
                        }
                    }
                }
            }
            let mut victim = TcpStream::connect(server.addr()).unwrap();
            victim.set_nodelay(true).unwrap();
            let reader = {
                // Drain replies so the server never blocks on this connection.
                let mut r = victim.try_clone().unwrap();
                r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                })
            };
            send_what_is_taken(&mut victim, &junk, Duration::from_secs(5));
            let _ = victim.shutdown(std::net::Shutdown::Both);
            drop(victim);
            reader.join().unwrap();
            assert!(server.is_running(), "server died on garbage seed {seed}");
            bystander.roundtrip(
                b"get bystander\r\n",
                b"VALUE bystander 0 4\r\nsafe\r\nEND\r\n",
            );
        }
        server.connect().roundtrip(
            b"get bystander\r\n",
            b"VALUE bystander 0 4\r\nsafe\r\nEND\r\n",
        );
    });
}

/// Random binary-protocol packets over TCP (the right magic byte, any opcode, lengths that
/// agree or not with the body) and random UDP datagrams (frame headers with any fields, text
/// and binary payloads) never kill the server, and a bystander keeps its answers.
#[test]
fn binary_and_udp_garbage_never_kill_the_server() {
    for_each_config(|args| {
        let mut server = TestServer::start_udp(args);
        let mut bystander = server.connect();
        bystander.roundtrip(b"set bystander 0 0 4\r\nsafe\r\n", b"STORED\r\n");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        // Reply bytes over every connection: the packets must get past the first one often.
        let mut answered_total = 0;
        for seed in 0..8u64 {
            let mut rng = Rng::new(1000 + seed);
            let packet = |rng: &mut Rng| {
                // Mostly the extras and body each opcode wants (so that a connection gets past
                // its first packet), sometimes anything.
                // (Not flush: it would take the bystander's key with it.)
                let opcode = match rng.below(0x30) as u8 {
                    0x08 | 0x18 => 0x0a,
                    op => op,
                };
                let (extras, value) = match opcode {
                    0x01..=0x03 | 0x11..=0x13 => (8, true),
                    0x05 | 0x06 | 0x15 | 0x16 => (20, false),
                    0x1c..=0x1e => (4, false),
                    0x0e | 0x0f | 0x19 | 0x1a => (0, true),
                    _ => (0, false),
                };
                let sane = rng.below(5) != 0;
                let key_len = match (sane, opcode) {
                    (true, 0x07 | 0x0a | 0x0b | 0x10 | 0x17) => 0,
                    (true, _) => [1, 10, 250][rng.below(3) as usize],
                    _ => [0, 1, 10, 250, 300][rng.below(5) as usize],
                };
                let extras_len = match sane {
                    true => extras,
                    false => [0, 4, 8, 12, 20, rng.below(40)][rng.below(6) as usize],
                };
                let value_len = match (sane, value) {
                    (true, false) => 0,
                    _ => [0, 3, 100, rng.below(3000)][rng.below(4) as usize],
                };
                let mut body_len = (key_len + extras_len + value_len) as u32;
                if rng.below(5) == 0 {
                    body_len =
                        [0, 1, body_len.wrapping_sub(1), body_len + 1][rng.below(4) as usize];
                }
                let mut p = vec![0x80, opcode];
                p.extend_from_slice(&(key_len as u16).to_be_bytes());
                p.push(extras_len as u8);
                p.extend_from_slice(&[0, 0, 0]);
                p.extend_from_slice(&body_len.to_be_bytes());
                p.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes());
                p.extend_from_slice(&rng.next_u64().to_be_bytes());
                for _ in 0..extras_len {
                    p.push(rng.next_u64() as u8);
                }
                for i in 0..key_len {
                    p.push(b'a' + (i % 3) as u8);
                }
                for _ in 0..value_len {
                    p.push(rng.next_u64() as u8);
                }
                p
            };
            // Many short connections: a packet the server refuses closes its connection, so
            // each gets a few packets, most of them well formed.
            let mut answered = 0;
            for _ in 0..32 {
                let mut junk = Vec::new();
                for _ in 0..=rng.below(8) {
                    junk.extend_from_slice(&packet(&mut rng));
                }
                let mut victim = TcpStream::connect(server.addr()).unwrap();
                let reader = {
                    let mut r = victim.try_clone().unwrap();
                    r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        let mut got = 0;
                        while let Ok(n) = r.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        got
                    })
                };
                send_what_is_taken(&mut victim, &junk, Duration::from_secs(5));
                let _ = victim.shutdown(std::net::Shutdown::Write);
                answered += reader.join().unwrap();
            }
            answered_total += answered;
            for _ in 0..200 {
                let mut d = Vec::new();
                for field in 0..4 {
                    let v = match (field, rng.below(4)) {
                        (1 | 3, 0..=2) => 0,
                        (2, 0..=2) => 1,
                        _ => rng.next_u64() as u16,
                    };
                    d.extend_from_slice(&v.to_be_bytes());
                }
                match rng.below(3) {
                    0 => d.extend_from_slice(&packet(&mut rng)),
                    1 => d.extend_from_slice(b"get a aa\r\nset a 0 0 2\r\nhi"),
                    _ => {
                        for _ in 0..rng.below(100) {
                            d.push(rng.next_u64() as u8);
                        }
                    }
                }
                if rng.below(10) == 0 {
                    d.truncate(rng.below(9) as usize);
                }
                let _ = udp.send_to(&d, server.udp_addr());
                let mut buf = [0u8; 2048];
                while udp.recv_from(&mut buf).is_ok() {}
            }
            assert!(
                server.is_running(),
                "server died on binary/UDP garbage seed {seed}"
            );
            bystander.roundtrip(
                b"get bystander\r\n",
                b"VALUE bystander 0 4\r\nsafe\r\nEND\r\n",
            );
        }
        assert!(
            answered_total > 8 * 32 * 48,
            "only {answered_total} reply bytes"
        );
    });
}

/// A client that stops inside a large value and closes costs nothing: its connection goes (it
/// is not kept waiting for the rest), nothing is stored, and others are served. One that
/// stops inside a large value and stays does not hold up a SIGTERM. On every receive path (see
/// `start_each_receive_ring`).
#[test]
fn clients_that_stop_inside_a_large_value_hold_nothing() {
    for_each_config(|args| {
        for mut server in start_each_receive_ring(args) {
            let mut b = server.connect();
            b.roundtrip(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
            let before = b.stats_sub("");
            let conns = stat_u64(&before, "curr_connections");
            let line = b"set big 0 0 500000\r\n";
            let mut a = server.connect();
            a.send(&[&line[..], &[b'v'; 100_000]].concat());
            // Once the server has the command line, more of the value, then the close.
            let seen = wait_until(Duration::from_secs(5), || {
                let now = b.stats_sub("");
                stat_u64(&now, "bytes_read") >= stat_u64(&before, "bytes_read") + 4096
            });
            assert!(seen, "the server read none of the value");
            a.send(&[b'v'; 100_000]);
            drop(a);
            let gone = wait_until(Duration::from_secs(5), || {
                stat_u64(&b.stats_sub(""), "curr_connections") == conns
            });
            assert!(
                gone,
                "the connection that stopped inside a value stayed open"
            );
            b.roundtrip(b"get big\r\n", b"END\r\n");
            b.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n");
            let mut c = server.connect();
            c.send(&[&line[..], &[b'v'; 200_000]].concat());
            let started = Instant::now();
            let status = server.terminate(Duration::from_secs(5));
            eprintln!("exit after SIGTERM: {status} in {:?}", started.elapsed());
            assert!(status.success(), "exit status after SIGTERM: {status}");
        }
    });
}

/// SIGTERM: the server exits with status 0, promptly, even with clients connected.
/// (memcached 1.6.18 does the same.)
#[test]
fn sigterm_exits_zero_promptly() {
    for_each_config(|args| {
        let mut server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
        let idle = server.connect();
        let started = Instant::now();
        let status = server.terminate(Duration::from_secs(5));
        eprintln!("exit after SIGTERM: {status} in {:?}", started.elapsed());
        assert!(status.success(), "exit status after SIGTERM: {status}");
        drop(idle);
    });
}
