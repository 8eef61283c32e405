//! Pipelining, split reads, cross-shard multi-gets and many concurrent connections.
//!
//! Expected replies come from a small in-test model whose rules were checked against
//! memcached 1.6.18 (`CORECACHE_TEST_SERVER=memcached cargo test --test cluster`).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    for_each_config, skip_in_memcached_mode, stat_u64, wait_until, Client, Rng, TestServer,
};
use corecache::router::{key_hash, shard_of, ShardId};

/// 1,000 mixed commands in ONE write; all replies must come back in order, byte for byte.
#[test]
fn pipeline_1000_mixed_commands_in_one_write() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let mut rng = Rng::new(1000);
        let mut model: HashMap<String, Vec<u8>> = HashMap::new();
        let mut req = Vec::new();
        let mut expected = Vec::new();
        for i in 0..1000u32 {
            let key = format!("p{}", rng.below(40));
            match rng.below(8) {
                0 | 1 => {
                    let v = format!("{}", rng.below(100_000)).into_bytes();
                    req.extend_from_slice(format!("set {key} 0 0 {}\r\n", v.len()).as_bytes());
                    req.extend_from_slice(&v);
                    req.extend_from_slice(b"\r\n");
                    expected.extend_from_slice(b"STORED\r\n");
                    model.insert(key, v);
                }
                2 => {
                    // value with spaces and a fake reply inside
                    let v = format!("v {i} END\r\nVALUE x").into_bytes();
                    req.extend_from_slice(format!("set {key} 9 0 {}\r\n", v.len()).as_bytes());
                    req.extend_from_slice(&v);
                    req.extend_from_slice(b"\r\n");
                    expected.extend_from_slice(b"STORED\r\n");
                    model.insert(key, v);
                }
                3 | 4 => {
                    let k2 = format!("p{}", rng.below(40));
                    req.extend_from_slice(format!("get {key} {k2}\r\n").as_bytes());
                    for k in [&key, &k2] {
                        if let Some(v) = model.get(k) {
                            let flags = if v.starts_with(b"v ") { 9 } else { 0 };
                            expected.extend_from_slice(
                                format!("VALUE {k} {flags} {}\r\n", v.len()).as_bytes(),
                            );
                            expected.extend_from_slice(v);
                            expected.extend_from_slice(b"\r\n");
                        }
                    }
                    expected.extend_from_slice(b"END\r\n");
                }
                5 => {
                    req.extend_from_slice(format!("incr {key} 7\r\n").as_bytes());
                    match model.get(&key) {
                        None => expected.extend_from_slice(b"NOT_FOUND\r\n"),
                        Some(v) if v.starts_with(b"v ") => expected.extend_from_slice(
                            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                        ),
                        Some(v) => {
                            let n: u64 =
                                std::str::from_utf8(v).unwrap().trim_end().parse().unwrap();
                            let r = (n + 7).to_string();
                            expected.extend_from_slice(format!("{r}\r\n").as_bytes());
                            // memcached pads a shorter result in place; a longer one regrows
                            let mut nv = r.into_bytes();
                            if nv.len() < v.len() {
                                nv.resize(v.len(), b' ');
                            }
                            model.insert(key, nv);
                        }
                    }
                }
                6 => {
                    req.extend_from_slice(format!("delete {key}\r\n").as_bytes());
                    if model.remove(&key).is_some() {
                        expected.extend_from_slice(b"DELETED\r\n");
                    } else {
                        expected.extend_from_slice(b"NOT_FOUND\r\n");
                    }
                }
                _ => {
                    req.extend_from_slice(format!("touch {key} 0\r\n").as_bytes());
                    if model.contains_key(&key) {
                        expected.extend_from_slice(b"TOUCHED\r\n");
                    } else {
                        expected.extend_from_slice(b"NOT_FOUND\r\n");
                    }
                }
            }
        }
        eprintln!(
            "pipeline: {} request bytes, {} reply bytes",
            req.len(),
            expected.len()
        );
        c.roundtrip(&req, &expected);
        c.roundtrip(b"get nothing\r\n", b"END\r\n");
    });
}

/// A request split one byte per write (TCP_NODELAY) parses the same as in one piece.
#[test]
fn command_split_byte_by_byte() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let script: &[(&[u8], &[u8])] = &[
            (b"set split 5 0 6\r\nab\r\ncd\r\n", b"STORED\r\n"),
            (
                b"get split nope split\r\n",
                b"VALUE split 5 6\r\nab\r\ncd\r\nVALUE split 5 6\r\nab\r\ncd\r\nEND\r\n",
            ),
            (b"set n 0 0 2\r\n41\r\n", b"STORED\r\n"),
            (b"incr n 1\r\n", b"42\r\n"),
            (b"delete n noreply\r\n", b""),
            (b"bogus\r\n", b"ERROR\r\n"),
            (b"get n\r\n", b"END\r\n"),
        ];
        for (req, expected) in script {
            for b in req.iter() {
                c.send(std::slice::from_ref(b));
            }
            c.read_exact_reply(expected);
        }
        // And several pipelined commands, byte by byte, with the replies read at the end.
        let mut all_req = Vec::new();
        let mut all_rep = Vec::new();
        for (req, expected) in script {
            all_req.extend_from_slice(req);
            all_rep.extend_from_slice(expected);
        }
        for b in &all_req {
            c.send(std::slice::from_ref(b));
        }
        c.read_exact_reply(&all_rep);
    });
}

/// Keys owned by `shard` among `n` shards, in a deterministic order.
fn keys_on_shard(prefix: &str, shard: u16, n: u16, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| shard_of(key_hash(k.as_bytes()), n) == ShardId(shard))
        .take(count)
        .collect()
}

fn two_shard_configs(mut body: impl FnMut(&[&str])) {
    for_each_config(|args| {
        if args[1] == "2" {
            body(args)
        }
    });
}

/// A multi-key get whose keys live on both shards answers in request order, misses skipped.
#[test]
fn multi_get_across_shards_keeps_request_order() {
    two_shard_configs(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let s0 = keys_on_shard("x", 0, 2, 4);
        let s1 = keys_on_shard("x", 1, 2, 4);
        // stored: s0[0], s1[0], s0[1], s1[1]; misses: s0[2], s1[2], s0[3], s1[3]
        for k in [&s0[0], &s1[0], &s0[1], &s1[1]] {
            c.roundtrip(
                format!("set {k} 1 0 {}\r\n{k}\r\n", k.len()).as_bytes(),
                b"STORED\r\n",
            );
        }
        let order = [
            &s1[2], &s0[0], &s1[0], &s0[2], &s1[3], &s0[1], &s1[1], &s0[3], &s0[0],
        ];
        let hits = [&s0[0], &s1[0], &s0[1], &s1[1]];
        for verb in ["get", "gets", "gat 0", "gats 0"] {
            let mut req = verb.to_string();
            for k in order {
                req.push(' ');
                req.push_str(k);
            }
            req.push_str("\r\n");
            let mut expected = String::new();
            for k in order {
                if hits.contains(&k) {
                    if verb.starts_with("gets") || verb.starts_with("gats") {
                        expected
                            .push_str(&format!("VALUE {k} 1 {} {{cas:{k}}}\r\n{k}\r\n", k.len()));
                    } else {
                        expected.push_str(&format!("VALUE {k} 1 {}\r\n{k}\r\n", k.len()));
                    }
                }
            }
            expected.push_str("END\r\n");
            c.roundtrip_pattern(req.as_bytes(), expected.as_bytes());
        }
    });
}

/// One write of single-key retrievals (`get`, `gats`, `gat`, `touch`), half of them for the
/// other shard, with values from 1 byte to 20 KB and misses between them: the replies come back
/// in request order, byte for byte. Local replies that wait behind a forwarded one share a
/// ready slot up to a size bound, and a forwarded reply at the front goes straight out; both
/// must keep the order.
#[test]
fn pipelined_single_key_retrievals_across_shards_keep_order() {
    two_shard_configs(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let mut rng = Rng::new(77);
        let mut keys = keys_on_shard("one", 0, 2, 12);
        keys.extend(keys_on_shard("one", 1, 2, 12));
        let mut values: HashMap<&str, Vec<u8>> = HashMap::new();
        // Every third key stays missing.
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
            let len = match i % 4 {
                0 => 1,
                1 => 100,
                2 => 5_000,
                _ => 20_000,
            };
            let v: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            let mut req = format!("set {k} {i} 0 {len}\r\n").into_bytes();
            req.extend_from_slice(&v);
            req.extend_from_slice(b"\r\n");
            c.roundtrip(&req, b"STORED\r\n");
            values.insert(k.as_str(), v);
        }
        let flags = |k: &str| keys.iter().position(|x| x == k).unwrap();
        let mut req = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..600 {
            let k = keys[rng.below(keys.len() as u64) as usize].as_str();
            let verb = rng.below(4);
            let line = match verb {
                0 | 1 => format!("get {k}\r\n"),
                2 => format!("gat 0 {k}\r\n"),
                _ => format!("touch {k} 0\r\n"),
            };
            req.extend_from_slice(line.as_bytes());
            match (verb, values.get(k)) {
                (3, Some(_)) => expected.extend_from_slice(b"TOUCHED\r\n"),
                (3, None) => expected.extend_from_slice(b"NOT_FOUND\r\n"),
                (_, Some(v)) => {
                    expected.extend_from_slice(
                        format!("VALUE {k} {} {}\r\n", flags(k), v.len()).as_bytes(),
                    );
                    expected.extend_from_slice(v);
                    expected.extend_from_slice(b"\r\nEND\r\n");
                }
                (_, None) => expected.extend_from_slice(b"END\r\n"),
            }
        }
        let mut writer = c.stream().try_clone().unwrap();
        let sender = thread::spawn(move || {
            use std::io::Write;
            writer.write_all(&req).unwrap();
        });
        c.read_exact_reply(&expected);
        sender.join().unwrap();
        c.roundtrip(b"mn\r\n", b"MN\r\n");
    });
}

/// A 100-key get across shards, every third key missing.
#[test]
fn multi_get_100_keys() {
    two_shard_configs(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let a = keys_on_shard("m", 0, 2, 50);
        let b = keys_on_shard("m", 1, 2, 50);
        let keys: Vec<&String> = a.iter().zip(&b).flat_map(|(x, y)| [x, y]).collect();
        let mut set_req = Vec::new();
        let mut set_rep = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if i % 3 != 2 {
                let v = format!("value-of-{k}-{}", "z".repeat(i));
                set_req
                    .extend_from_slice(format!("set {k} {i} 0 {}\r\n{v}\r\n", v.len()).as_bytes());
                set_rep.extend_from_slice(b"STORED\r\n");
            }
        }
        c.roundtrip(&set_req, &set_rep);
        let mut req = b"get".to_vec();
        let mut expected = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            req.extend_from_slice(format!(" {k}").as_bytes());
            if i % 3 != 2 {
                let v = format!("value-of-{k}-{}", "z".repeat(i));
                expected
                    .extend_from_slice(format!("VALUE {k} {i} {}\r\n{v}\r\n", v.len()).as_bytes());
            }
        }
        req.extend_from_slice(b"\r\n");
        expected.extend_from_slice(b"END\r\n");
        c.roundtrip(&req, &expected);
        // Twice more, pipelined, to catch replies of one request overtaking another.
        let mut two = req.clone();
        two.extend_from_slice(&req);
        let mut two_rep = expected.clone();
        two_rep.extend_from_slice(&expected);
        c.roundtrip(&two, &two_rep);
    });
}

/// 200 connections open at once, each setting and reading back its own keys.
#[test]
fn two_hundred_concurrent_connections() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        const CONNS: usize = 200;
        const ROUNDS: usize = 5;
        let addr = server.addr();
        let barrier = Arc::new(Barrier::new(CONNS + 1));
        let started = Instant::now();
        let handles: Vec<_> = (0..CONNS)
            .map(|id| {
                let barrier = barrier.clone();
                thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        let mut c = Client::connect(addr);
                        barrier.wait(); // everyone connected
                        barrier.wait(); // main thread checked curr_connections
                        for round in 0..ROUNDS {
                            let key = format!("c{id}:{round}");
                            let v = format!("{id}/{round}/{}", "v".repeat(id % 50));
                            let mut req =
                                format!("set {key} {id} 0 {}\r\n{v}\r\n", v.len()).into_bytes();
                            req.extend_from_slice(
                                format!("get {key} c{id}:missing\r\n").as_bytes(),
                            );
                            let mut rep = b"STORED\r\n".to_vec();
                            rep.extend_from_slice(
                                format!("VALUE {key} {id} {}\r\n{v}\r\nEND\r\n", v.len())
                                    .as_bytes(),
                            );
                            c.roundtrip(&req, &rep);
                        }
                        // all of this connection's keys, in one get
                        let mut req = b"get".to_vec();
                        let mut rep = Vec::new();
                        for round in 0..ROUNDS {
                            let key = format!("c{id}:{round}");
                            let v = format!("{id}/{round}/{}", "v".repeat(id % 50));
                            req.extend_from_slice(format!(" {key}").as_bytes());
                            rep.extend_from_slice(
                                format!("VALUE {key} {id} {}\r\n{v}\r\n", v.len()).as_bytes(),
                            );
                        }
                        req.extend_from_slice(b"\r\n");
                        rep.extend_from_slice(b"END\r\n");
                        c.roundtrip(&req, &rep);
                    })
                    .unwrap()
            })
            .collect();
        barrier.wait();
        // All 200 are connected from the client's side; the server sees them soon after
        // (+1: the connection that asks).
        let mut seen = 0;
        let ok = wait_until(Duration::from_secs(10), || {
            seen = stat_u64(&server.stats(), "curr_connections");
            seen > CONNS as u64
        });
        assert!(ok, "curr_connections {seen}, expected > {CONNS}");
        barrier.wait();
        for h in handles {
            h.join().expect("a client thread failed");
        }
        let elapsed = started.elapsed();
        eprintln!("200 connections x {ROUNDS} rounds: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(30), "too slow: {elapsed:?}");
        let s = server.stats();
        assert!(stat_u64(&s, "curr_items") >= (CONNS * ROUNDS) as u64);
    });
}

/// corecache prints exactly one `listening 127.0.0.1:<port>` line, only once every shard
/// serves, for every io backend and shard count; each shard then answers at once.
#[test]
fn readiness_line_is_exact_and_every_shard_serves() {
    if skip_in_memcached_mode("the readiness line is corecache's") {
        return;
    }
    for_each_config(|args| {
        let server = TestServer::start(args);
        let n: u16 = args[1].parse().unwrap();
        // Right after the line, keys of every shard are served (no warm-up window).
        let mut c = server.connect();
        for shard in 0..n {
            let k = &keys_on_shard("ready", shard, n, 1)[0];
            c.roundtrip(
                format!("set {k} 0 0 1\r\nx\r\nget {k}\r\n").as_bytes(),
                format!("STORED\r\nVALUE {k} 0 1\r\nx\r\nEND\r\n").as_bytes(),
            );
        }
        let lines = server.stdout_lines();
        let want = format!("listening {}\n", server.addr());
        assert_eq!(lines, vec![want], "stdout of {args:?}");
        assert_ne!(server.addr().port(), 0);
        assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
        let s = server.stats();
        assert_eq!(stat_u64(&s, "threads"), u64::from(n));
    });
}

/// Segments with data the client's socket has received so far (TCP_INFO).
fn data_segments_in(c: &Client) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; zeroed is a valid value for every field.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            c.stream().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(TCP_INFO)");
    info.tcpi_data_segs_in
}

/// A pipelined batch of gets whose keys alternate between two shards is answered with one
/// send: the replies ready on the connection's own shard wait for the other shard's rather
/// than going out as a separate, partial answer. Both orders (own shard's key first, other
/// shard's key first) are tried, so one of them has a local prefix whichever shard took the
/// connection.
#[test]
fn pipelined_batch_across_shards_is_answered_in_one_send() {
    if skip_in_memcached_mode("how corecache batches replies across its shards") {
        return;
    }
    for_each_config(|args| {
        if args[1] != "2" {
            return;
        }
        let server = TestServer::start(args);
        let mut c = server.connect();
        let mut by_shard: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for i in 0.. {
            let k = format!("batch{i}");
            let s = shard_of(key_hash(k.as_bytes()), 2).0 as usize;
            if by_shard[s].len() < 8 {
                by_shard[s].push(k);
            }
            if by_shard.iter().all(|v| v.len() == 8) {
                break;
            }
        }
        for keys in &by_shard {
            for k in keys {
                c.roundtrip(format!("set {k} 0 0 2\r\nok\r\n").as_bytes(), b"STORED\r\n");
            }
        }
        for first in [0usize, 1] {
            let mut req = Vec::new();
            let mut want = Vec::new();
            for (a, b) in by_shard[first].iter().zip(&by_shard[1 - first]) {
                for k in [a, b] {
                    req.extend_from_slice(format!("get {k}\r\n").as_bytes());
                    want.extend_from_slice(format!("VALUE {k} 0 2\r\nok\r\nEND\r\n").as_bytes());
                }
            }
            let before = data_segments_in(&c);
            c.roundtrip(&req, &want);
            let segments = data_segments_in(&c) - before;
            assert_eq!(
                segments, 1,
                "shard {first}'s key first: 16 replies in {segments} sends"
            );
        }
    });
}

/// 20,000 pipelined `noreply` sets over two shards fill the connection's reply slots many
/// times over; each time the other shard's answers free them, parsing must resume by itself
/// (no reply goes out, so no finished send brings the connection back), and the final get is
/// answered. Also a 2 MB pipeline of 1 KB sets with replies, read while it is written.
#[test]
fn pipelines_that_fill_the_reply_slots_keep_going() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let value = "v".repeat(100);
        let mut req = Vec::new();
        for i in 0..20_000 {
            req.extend_from_slice(format!("set nr{i} 0 0 100 noreply\r\n{value}\r\n").as_bytes());
        }
        req.extend_from_slice(b"get nr0 nr19999\r\n");
        c.roundtrip(
            &req,
            format!("VALUE nr0 0 100\r\n{value}\r\nVALUE nr19999 0 100\r\n{value}\r\nEND\r\n")
                .as_bytes(),
        );
        let value = "x".repeat(1000);
        let mut req = Vec::new();
        for i in 0..2000 {
            req.extend_from_slice(format!("set big{i} 0 0 1000\r\n{value}\r\n").as_bytes());
        }
        let mut writer = c.stream().try_clone().unwrap();
        let sender = thread::spawn(move || {
            use std::io::Write;
            writer.write_all(&req).unwrap();
        });
        c.read_exact_reply(&b"STORED\r\n".repeat(2000));
        sender.join().unwrap();
    });
}

/// A connection that fills its reply slots with requests for another shard stops reading
/// (its receive is paused) until that shard answers. Here the other shard is stopped for a
/// while (`debug_stall`; in production, a descheduled thread) and the slots fill exactly as
/// the read input runs out, so no input is left over to come back for. Once the answers free
/// the slots, reading must resume: the request sent meanwhile is answered.
#[cfg(feature = "test-hooks")]
#[test]
fn reading_resumes_when_answers_free_a_full_slot_queue() {
    if skip_in_memcached_mode("debug_stall needs corecache's test-hooks") {
        return;
    }
    two_shard_configs(|args| {
        let server = TestServer::start(args);
        // The connection's shard is not known: try keys of each shard (for one of them the
        // requests are forwarded).
        for shard in 0..2 {
            let mut c = server.connect();
            // noreply throughout: no reply is sent, so nothing but the freed slots can bring
            // the connection back.
            let mut batch = b"debug_stall 1000 noreply\r\n".to_vec();
            // `debug_stall` takes one slot: these take the other 1023.
            for key in keys_on_shard(&format!("slot{shard}:"), shard, 2, 1023) {
                batch.extend_from_slice(format!("set {key} 0 0 1 noreply\r\nx\r\n").as_bytes());
            }
            c.send(&batch);
            // Sent once the batch has been read and the receive paused (well inside the
            // stall), so it waits in the socket, not in the read buffer.
            thread::sleep(Duration::from_millis(200));
            c.send(b"mn\r\n");
            c.read_exact_reply(b"MN\r\n");
        }
        let c = server.connect();
        drop(c);
        assert_eq!(stat_u64(&server.stats(), "curr_items"), 2046);
    });
}

/// A peer shard that stops for a while (here `debug_stall`; in production, a descheduled
/// thread) fills the queue to it, so the connection's shard stops reading that client. Once
/// the peer drains its queue, reading must resume: with edge-triggered readiness nothing
/// else would report the client's input again, and the client, blocked on a full socket,
/// would wait forever.
#[cfg(feature = "test-hooks")]
#[test]
fn reading_resumes_after_a_stalled_peer_drains_its_queue() {
    if skip_in_memcached_mode("debug_stall needs corecache's test-hooks") {
        return;
    }
    two_shard_configs(|args| {
        // Whole reads parsed per turn (no `-R` yield), so a turn can end with nothing left to
        // parse but more to read: the state in which the queue filling must not lose the
        // connection.
        let mut args = args.to_vec();
        args.extend_from_slice(&["-R", "1000000"]);
        let server = TestServer::start(&args);
        let mut c = server.connect();
        let value = "v".repeat(100);
        let count = 200_000;
        let mut batch = b"debug_stall 300\r\n".to_vec();
        for i in 0..count {
            batch.extend_from_slice(
                format!("set stall:{i:06} 0 0 100 noreply\r\n{value}\r\n").as_bytes(),
            );
        }
        // Blocks while the server does not read; with reading never resumed, it times out.
        c.send(&batch);
        c.roundtrip(b"mn\r\n", b"OK\r\nMN\r\n");
        assert_eq!(stat_u64(&c.stats_sub(""), "curr_items"), count);
    });
}
