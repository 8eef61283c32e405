//! memcached's UDP protocol (`-U`): frame headers, replies cut into response objects and
//! 1400-byte datagrams, dropped datagrams, text, meta and binary commands, keys on other shards,
//! both backends, and what `stats` shows. Every expected datagram here is memcached 1.6.18's:
//! each test also runs against it in validation mode
//! (`CORECACHE_TEST_SERVER=memcached cargo test --test udp`), except where it says corecache
//! only.

mod common;

use std::time::Duration;

use common::{
    for_each_config, memcached_mode, skip_in_memcached_mode, stat_u64, udp_request, wait_until,
    Frame, Rng, TestServer, UdpClient, IO_TIMEOUT, STARTUP_TIMEOUT,
};
use corecache::protocol::binary::{opcode, request, response, Status};
use corecache::router::{key_hash, shard_of};

/// `count` keys named `<prefix><n>`, alternating between the shards of a two-shard server (the
/// split does not matter with one shard, or against memcached).
fn keys_across_shards(prefix: &str, count: usize) -> Vec<String> {
    let half = count.div_ceil(2);
    let mut on: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for i in 0.. {
        let k = format!("{prefix}{i}");
        let s = usize::from(shard_of(key_hash(k.as_bytes()), 2).0);
        if on[s].len() < half {
            on[s].push(k);
        }
        if on[0].len() == half && on[1].len() == half {
            break;
        }
    }
    let [zero, one] = on;
    let mut keys = Vec::new();
    for (a, b) in zero.into_iter().zip(one) {
        keys.push(a);
        keys.push(b);
    }
    keys.truncate(count);
    keys
}

fn value_block(key: &str, value: &[u8]) -> Vec<u8> {
    let mut v = format!("VALUE {key} 0 {}\r\n", value.len()).into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\n");
    v
}

fn set(key: &str, value: &[u8]) -> Vec<u8> {
    let mut v = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\n");
    v
}

#[test]
fn set_and_get_echo_the_request_id() {
    for_each_config(|args| {
        let server = TestServer::start_udp(args);
        let mut c = server.udp_client();
        c.exchange(&set("k", b"hello"), &[(0, 1, b"STORED\r\n")]);
        c.exchange(b"get k\r\n", &[(0, 1, b"VALUE k 0 5\r\nhello\r\nEND\r\n")]);
        c.exchange(b"get nope\r\n", &[(0, 1, b"END\r\n")]);
        // Any request id comes back as it was sent, with sequence 0 of 1 and reserved 0; the
        // request's own sequence and reserved bytes are not looked at.
        for id in [0u16, 1, 0x1234, 0xffff] {
            let mut d = udp_request(id, b"get k\r\n");
            d[2..4].copy_from_slice(&[0, 9]);
            d[6..8].copy_from_slice(&[0xab, 0xcd]);
            c.send_raw(&d);
            let frames = c.recv_frames(id, 1, IO_TIMEOUT).expect("the reply");
            assert_eq!(
                frames[0],
                Frame {
                    request_id: id,
                    sequence: 0,
                    total: 1,
                    reserved: 0,
                    payload: b"VALUE k 0 5\r\nhello\r\nEND\r\n".to_vec(),
                }
            );
        }
        // The same item over TCP.
        server
            .connect()
            .roundtrip(b"get k\r\n", b"VALUE k 0 5\r\nhello\r\nEND\r\n");
    });
}

/// memcached answers a retrieval with one response object per key (a miss is an empty one),
/// `END` on the last, and frames each object as its own message; an empty object heading the
/// reply goes out as a bare header with total 0, one behind a sent object not at all.
#[test]
fn a_multi_key_get_is_one_message_per_key() {
    for_each_config(|args| {
        let server = TestServer::start_udp(args);
        let mut c = server.udp_client();
        let keys = keys_across_shards("mk", 4);
        let (a, b, x, y) = (&keys[0], &keys[1], &keys[2], &keys[3]);
        c.exchange(&set(a, b"1"), &[(0, 1, b"STORED\r\n")]);
        c.exchange(&set(b, b"22"), &[(0, 1, b"STORED\r\n")]);
        let va = value_block(a, b"1");
        let vb = value_block(b, b"22");
        let end = |v: &[u8]| [v, b"END\r\n"].concat();
        c.exchange(
            format!("get {a} {b}\r\n").as_bytes(),
            &[(0, 1, &va), (0, 1, &end(&vb))],
        );
        // A miss between hits: its empty object vanishes behind the sent one.
        c.exchange(
            format!("get {a} {x} {b}\r\n").as_bytes(),
            &[(0, 1, &va), (0, 1, &end(&vb))],
        );
        // A miss first: a bare header (total 0) heads the reply.
        c.exchange(
            format!("get {x} {a}\r\n").as_bytes(),
            &[(0, 0, b""), (0, 1, &end(&va))],
        );
        c.exchange(
            format!("get {x} {y}\r\n").as_bytes(),
            &[(0, 0, b""), (0, 1, b"END\r\n")],
        );
        c.exchange(
            format!("get {a} {a} {a}\r\n").as_bytes(),
            &[(0, 1, &va), (0, 1, &va), (0, 1, &end(&va))],
        );
        // A retrieval flushes: a second one in the datagram starts a new flush.
        c.exchange(
            format!("get {x}\r\nget {x} {b}\r\n").as_bytes(),
            &[(0, 1, b"END\r\n"), (0, 0, b""), (0, 1, &end(&vb))],
        );
        // Other commands queue: nothing heads the second flush empty.
        c.exchange(
            format!("version\r\nget {x} {b}\r\n").as_bytes(),
            &[(0, 1, b"VERSION 1.6.18\r\n"), (0, 1, &end(&vb))],
        );
    });
}

#[test]
fn a_large_value_spans_numbered_datagrams_of_at_most_1400_bytes() {
    for_each_config(|args| {
        let server = TestServer::start_udp(args);
        let mut c = server.udp_client();
        let value: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        c.exchange(&set("big", &value), &[(0, 1, b"STORED\r\n")]);
        let reply = [&value_block("big", &value)[..], b"END\r\n"].concat();
        let frames = c.roundtrip(b"get big\r\n", 4);
        let sizes: Vec<usize> = frames.iter().map(|f| f.payload.len() + 8).collect();
        assert_eq!(sizes, [1400, 1400, 1400, 857]);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!((f.sequence, f.total, f.reserved), (i as u16, 4, 0));
        }
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.payload.clone()).collect();
        common::assert_bytes_eq(&joined, &reply, "reassembled reply");
        // Two keys: two messages, each numbered from 0.
        let frames = c.roundtrip(b"get big big\r\n", 8);
        let heads: Vec<(u16, u16)> = frames.iter().map(|f| (f.sequence, f.total)).collect();
        assert_eq!(heads, [(0, 4), (1, 4), (2, 4), (3, 4)].repeat(2));
        // A request datagram of nearly 64 KiB is read whole.
        let value = vec![b'z'; 60_000];
        let mut payload = set("huge", &value);
        payload.extend_from_slice(b"get huge\r\n");
        let frames = c.roundtrip(&payload, 1 + 44);
        assert_eq!(frames[0].parts(), (0, 1, &b"STORED\r\n"[..]));
        assert_eq!((frames[44].sequence, frames[44].total), (43, 44));
        c.expect_quiet();
    });
}

/// A datagram that is part of a multi-datagram request (total other than 1) is dropped
/// unanswered by memcached 1.6.18, as is one of at most 8 bytes; the next is answered.
#[test]
fn multi_packet_requests_and_short_datagrams_are_dropped() {
    for_each_config(|args| {
        let server = TestServer::start_udp(args);
        let mut c = server.udp_client();
        c.exchange(&set("k", b"v"), &[(0, 1, b"STORED\r\n")]);
        for total in [0u16, 2, 0x0100] {
            let mut d = udp_request(7, b"get k\r\n");
            d[4..6].copy_from_slice(&total.to_be_bytes());
            c.send_raw(&d);
            c.expect_quiet();
        }
        for len in [0, 1, 5, 7, 8] {
            c.send_raw(&udp_request(9, b"get k\r\n")[..len]);
            c.expect_quiet();
        }
        c.exchange(b"get k\r\n", &[(0, 1, b"VALUE k 0 1\r\nv\r\nEND\r\n")]);
    });
}

#[test]
fn noreply_and_meta_quiet_replies_are_never_sent() {
    for_each_config(|args| {
        let server = TestServer::start_udp(args);
        let mut c = server.udp_client();
        c.exchange(
            b"set k 0 0 1 noreply\r\nv\r\ndelete nope noreply\r\nget k\r\n",
            &[(0, 1, b"VALUE k 0 1\r\nv\r\nEND\r\n")],
        );
        // A skipped reply is not an empty one: the get's bare header still heads its flush.
        c.exchange(
            b"set j 0 0 1 noreply\r\nw\r\nget nope k\r\n",
            &[(0, 0, b""), (0, 1, b"VALUE k 0 1\r\nv\r\nEND\r\n")],
        );
        c.exchange(
            b"mg nope v q\r\nmg k v\r\nms m 2 q\r\nhi\r\nmn\r\n",
            &[(0, 1, b"VA 1\r\nv\r\n"), (0, 1, b"MN\r\n")],
        );
        c.exchange(b"mg m v\r\n", &[(0, 1, b"VA 2\r\nhi\r\n")]);
        // Only a datagram with nothing to answer gets nothing.
        c.send_raw(&udp_request(3, b"set q 0 0 1 noreply\r\nq\r\n"));
        c.expect_quiet();
    });
}

/// Requests on keys of both shards, one datagram: every reply complete and in order.
#[test]
fn keys_on_other_shards_are_answered_in_order() {
    for_each_config(|args| {
        let server = TestServer::start_udp(args);
        let mut c = server.udp_client();
        let keys = keys_across_shards("xs", 6);
        let mut payload = Vec::new();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            payload.extend_from_slice(&set(k, i.to_string().as_bytes()));
            expected.push(b"STORED\r\n".to_vec());
        }
        payload.extend_from_slice(format!("incr {} 10\r\n", keys[1]).as_bytes());
        expected.push(b"11\r\n".to_vec());
        payload.extend_from_slice(format!("delete {}\r\n", keys[2]).as_bytes());
        expected.push(b"DELETED\r\n".to_vec());
        payload.extend_from_slice(format!("mg {} v\r\n", keys[3]).as_bytes());
        expected.push(b"VA 1\r\n3\r\n".to_vec());
        // The retrieval's third key was deleted: its empty object vanishes behind the second's.
        let get = format!("get {} {} {} {}\r\n", keys[0], keys[1], keys[2], keys[5]);
        payload.extend_from_slice(get.as_bytes());
        expected.push(value_block(&keys[0], b"0"));
        expected.push(value_block(&keys[1], b"11"));
        expected.push([&value_block(&keys[5], b"5")[..], b"END\r\n"].concat());
        payload.extend_from_slice(format!("touch {} 0\r\n", keys[4]).as_bytes());
        expected.push(b"TOUCHED\r\n".to_vec());
        let table: Vec<(u16, u16, &[u8])> = expected.iter().map(|e| (0, 1, &e[..])).collect();
        c.exchange(&payload, &table);
        // Many datagrams at once, each answered whole and in order.
        let ids: Vec<u16> = (0..20).map(|_| c.fresh_id()).collect();
        for &id in &ids {
            c.send_raw(&udp_request(id, get.as_bytes()));
        }
        let frames = c
            .recv_any(3 * ids.len(), IO_TIMEOUT)
            .expect("every datagram answered");
        for &id in &ids {
            let got: Vec<&[u8]> = frames
                .iter()
                .filter(|f| f.request_id == id)
                .map(|f| &f.payload[..])
                .collect();
            assert_eq!(got, [&expected[9][..], &expected[10], &expected[11]]);
        }
        c.expect_quiet();
    });
}

fn bin(op: u8, key: &[u8], extras: &[u8], value: &[u8]) -> Vec<u8> {
    request(op, 0xdead_beef, 0, extras, key, value)
}

fn bin_reply(op: u8, status: Status, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    response(&mut out, op, status, 0xdead_beef, 0, extras, key, value);
    out
}

/// memcached serves the binary protocol over UDP too (told by each datagram's first byte,
/// whatever `-B` says). Quiet replies are empty response objects: one heading a flush is a bare
/// header; `noop` and errors flush. (`-C`: no cas values to tell apart.)
#[test]
fn binary_requests_are_served_over_udp() {
    for_each_config(|args| {
        let args: Vec<&str> = args.iter().copied().chain(["-C", "-B", "ascii"]).collect();
        let server = TestServer::start_udp(&args);
        let mut c = server.udp_client();
        let flags = [0u8; 8];
        c.exchange(
            &bin(opcode::SET, b"a", &flags, b"x"),
            &[(
                0,
                1,
                &bin_reply(opcode::SET, Status::Success, &[], &[], &[]),
            )],
        );
        let hit = bin_reply(opcode::GET, Status::Success, &[0; 4], &[], b"x");
        c.exchange(&bin(opcode::GET, b"a", &[], &[]), &[(0, 1, &hit)]);
        let hit_k = bin_reply(opcode::GETK, Status::Success, &[0; 4], b"a", b"x");
        let miss_k = bin_reply(opcode::GETK, Status::KeyNotFound, &[], b"b", &[]);
        let noop = bin_reply(opcode::NOOP, Status::Success, &[], &[], &[]);
        let getk_a = bin(opcode::GETK, b"a", &[], &[]);
        let getq_b = bin(opcode::GETQ, b"b", &[], &[]);
        let noop_req = bin(opcode::NOOP, &[], &[], &[]);
        c.exchange(
            &[&getk_a[..], &bin(opcode::GETK, b"b", &[], &[]), &noop_req].concat(),
            &[(0, 1, &hit_k), (0, 1, &miss_k), (0, 1, &noop)],
        );
        // A quiet miss first: a bare header; noop flushes, so the next one heads another.
        c.exchange(
            &[&getq_b[..], &noop_req, &getq_b, &getk_a].concat(),
            &[(0, 0, b""), (0, 1, &noop), (0, 0, b""), (0, 1, &hit_k)],
        );
        // ... behind a sent reply it vanishes.
        c.exchange(
            &[&getk_a[..], &getq_b, &noop_req].concat(),
            &[(0, 1, &hit_k), (0, 1, &noop)],
        );
        // An error flushes: the quiet miss after it heads a flush.
        let miss = bin_reply(opcode::GET, Status::KeyNotFound, &[], &[], b"Not found");
        c.exchange(
            &[&bin(opcode::GET, b"b", &[], &[])[..], &getq_b, &getk_a].concat(),
            &[(0, 1, &miss), (0, 0, b""), (0, 1, &hit_k)],
        );
        // A text datagram is text, a binary one binary, on the same server.
        c.exchange(b"get a\r\n", &[(0, 1, b"VALUE a 0 1\r\nx\r\nEND\r\n")]);
        // Binary quit answers and ends the datagram; a bad header ends it unanswered, with
        // what was queued before it.
        let version = bin_reply(
            opcode::VERSION,
            Status::Success,
            &[],
            &[],
            corecache::protocol::compose::MEMCACHED_VERSION.as_bytes(),
        );
        let version_req = bin(opcode::VERSION, &[], &[], &[]);
        let quit = bin_reply(opcode::QUIT, Status::Success, &[], &[], &[]);
        c.exchange(
            &[
                &version_req[..],
                &bin(opcode::QUIT, &[], &[], &[]),
                &version_req,
            ]
            .concat(),
            &[(0, 1, &version), (0, 1, &quit)],
        );
        let mut bad = version_req.clone();
        bad.push(0x81);
        bad.extend_from_slice(&[b'j'; 23]);
        c.send_raw(&udp_request(5, &bad));
        c.expect_quiet();
    });
}

/// `quit` flushes (its own empty object heads an empty flush) and ends the datagram; an HTTP
/// line or a runaway line ends it without sending what was queued; `lru_crawler metadump` over
/// UDP answers nothing unless a reply is queued ahead of it.
#[test]
fn closing_commands_end_the_datagram_as_in_memcached() {
    for_each_config(|args| {
        // memcached's UDP connection keeps some state of a close (a quit's stays for good), so
        // each case gets a fresh server.
        let fresh = || TestServer::start_udp(args);
        let exchange = |payload: &[u8], expected: &[(u16, u16, &[u8])]| {
            let server = fresh();
            server.udp_client().exchange(payload, expected);
        };
        let unanswered = |payload: &[u8]| {
            let server = fresh();
            let mut c = server.udp_client();
            c.send_raw(&udp_request(4, payload));
            let metadump = payload.starts_with(b"lru_crawler metadump");
            c.expect_quiet_but_late(metadump.then_some(4));
        };
        exchange(b"quit\r\nversion\r\n", &[(0, 0, b"")]);
        exchange(
            b"mn\r\nquit\r\nversion\r\n",
            &[(0, 1, b"MN\r\n"), (0, 0, b"")],
        );
        exchange(b"version\r\nquit\r\n", &[(0, 1, b"VERSION 1.6.18\r\n")]);
        unanswered(b"version\r\nGET / HTTP/1.1\r\n");
        let mut runaway = b"version\r\n".to_vec();
        runaway.extend_from_slice(&[b'x'; 3000]);
        unanswered(&runaway);
        // A long line whose newline is in the datagram is answered.
        runaway.extend_from_slice(b"\r\nversion\r\n");
        exchange(
            &runaway,
            &[
                (0, 1, b"VERSION 1.6.18\r\n"),
                (0, 1, b"ERROR\r\n"),
                (0, 1, b"VERSION 1.6.18\r\n"),
            ],
        );
        unanswered(b"lru_crawler metadump all\r\nversion\r\n");
        exchange(
            b"set k 0 0 1 noreply\r\nv\r\nlru_crawler metadump all\r\nversion\r\n",
            &[
                (
                    0,
                    1,
                    b"ERROR cannot pipeline other commands before metadump\r\n",
                ),
                (0, 1, b"VERSION 1.6.18\r\n"),
            ],
        );
        // `watch` likewise: nothing answered, and no watcher is left behind. (memcached's
        // logger may still send that datagram a bare header a moment later: corecache only.)
        if memcached_mode() {
            return;
        }
        let server = fresh();
        let mut c = server.udp_client();
        c.send_raw(&udp_request(4, b"watch\r\nversion\r\n"));
        c.expect_quiet();
        c.exchange(b"version\r\n", &[(0, 1, b"VERSION 1.6.18\r\n")]);
        assert_eq!(stat_u64(&server.stats(), "log_watchers"), 0);
    });
}

/// memcached flushes after its first `-R` + 1 requests and then every `-R`: an empty object
/// right after such a point heads a flush.
#[test]
fn replies_flush_every_reqs_per_event_requests() {
    for_each_config(|args| {
        let args: Vec<&str> = args.iter().copied().chain(["-R", "2"]).collect();
        let server = TestServer::start_udp(&args);
        let mut c = server.udp_client();
        c.exchange(&set("a", b"x"), &[(0, 1, b"STORED\r\n")]);
        let end = b"VALUE a 0 1\r\nx\r\nEND\r\n";
        for (mgs, bare) in [(2, false), (3, true), (4, false), (5, true)] {
            let mut payload = b"mg a v\r\n".repeat(mgs);
            payload.extend_from_slice(b"get nope a\r\n");
            let mut want: Vec<(u16, u16, &[u8])> = vec![(0, 1, b"VA 1\r\nx\r\n"); mgs];
            if bare {
                want.push((0, 0, b""));
            }
            want.push((0, 1, end));
            c.exchange(&payload, &want);
        }
    });
}

/// `stats settings` shows the UDP port; `stats` counts each thread's (shard's) UDP socket as a
/// connection and UDP traffic in the usual counters, headers included in the bytes.
#[test]
fn stats_show_the_udp_port_and_count_udp_traffic() {
    for_each_config(|args| {
        let server = TestServer::start_udp(args);
        let settings = server.stats_sub("settings");
        assert_eq!(
            settings["udpport"],
            server.udp_addr().port().to_string(),
            "{settings:?}"
        );
        let shards: u64 = args[1].parse().unwrap();
        // One TCP connection (this `stats` one) besides the UDP sockets, once the start-up
        // probe's close has been counted (memcached counts it a moment later).
        let mut before = server.stats();
        wait_until(Duration::from_secs(5), || {
            before = server.stats();
            stat_u64(&before, "curr_connections") == 1 + shards
        });
        assert_eq!(stat_u64(&before, "curr_connections"), 1 + shards);
        let mut c: UdpClient = server.udp_client();
        let request = set("k", b"v");
        c.exchange(&request, &[(0, 1, b"STORED\r\n")]);
        c.exchange(
            b"get k nope\r\n",
            &[(0, 1, b"VALUE k 0 1\r\nv\r\n"), (0, 1, b"END\r\n")],
        );
        let after = server.stats();
        let delta = |name: &str| stat_u64(&after, name) - stat_u64(&before, name);
        assert_eq!(delta("cmd_get"), 2);
        assert_eq!(delta("get_hits"), 1);
        assert_eq!(delta("get_misses"), 1);
        assert_eq!(delta("cmd_set"), 1);
        // Two stats commands over TCP, and over UDP: the set, the get and the two `version`s
        // of `exchange`, each with its 8-byte header.
        let tcp_in = b"stats\r\n".len() as u64;
        let udp_in = 8 + request.len() as u64 + 8 + 12 + 2 * (8 + 9);
        assert_eq!(delta("bytes_read"), tcp_in + udp_in);
        let udp_out = (8 + 8) + (8 + 16) + (8 + 5) + 2 * (8 + 16);
        let tcp_out =
            stat_u64(&after, "bytes_written") - stat_u64(&before, "bytes_written") - udp_out;
        assert!(tcp_out > 1000, "the first stats reply: {tcp_out}");
        let conns = server.stats_sub("conns");
        let udp_lines = conns
            .iter()
            .filter(|(k, v)| k.ends_with(":UDP") && *v == "UDP");
        assert_eq!(udp_lines.count() as u64, shards, "{conns:?}");
        let udp_addr = format!("udp:{}", server.udp_addr());
        assert_eq!(
            conns.values().filter(|v| **v == udp_addr).count() as u64,
            shards,
            "{conns:?}"
        );
    });
}

/// A UDP port another socket holds fails startup with memcached's status and one-line reason.
#[test]
fn a_taken_udp_port_fails_startup() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let out = common::server_command()
        .args(["-l", "127.0.0.1", "-p", "0", "-t", "2", "-U", &port])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // sysexits' EX_OSERR, as for a TCP port in use.
    assert_eq!(out.status.code(), Some(71), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed to listen on one of interface(s) 127.0.0.1: Address already in use\n"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing announced");
}

/// corecache only (memcached binds no free port for -p 0): the port file lists the UDP port
/// after the TCP one, as memcached writes it for `-p -1 -U -1`.
#[test]
fn the_port_file_names_the_udp_port() {
    if skip_in_memcached_mode("memcached binds no free port for -p 0") {
        return;
    }
    let path = std::env::temp_dir().join(format!("corecache-udp-ports-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = TestServer::start_corecache_with(&["-t", "2", "-U", "-1"], |cmd| {
        cmd.env("MEMCACHED_PORT_FILENAME", &path);
    });
    let text = std::fs::read_to_string(&path).expect("port file written before listening");
    let udp_line = || {
        server.stdout_lines().iter().find_map(|l| {
            l.trim_end()
                .strip_prefix("listening udp:127.0.0.1:")
                .map(str::to_owned)
        })
    };
    wait_until(STARTUP_TIMEOUT, || udp_line().is_some());
    let udp_port = udp_line().expect("a listening udp line");
    assert_eq!(
        text,
        format!("TCP INET: {}\nUDP INET: {udp_port}\n", server.addr().port())
    );
    std::fs::remove_file(&path).unwrap();
}

/// corecache only: `-U 0` (the default) serves no UDP; `stats settings` shows 0.
#[test]
fn udp_is_off_by_default() {
    if memcached_mode() {
        return;
    }
    let server = TestServer::start(&["-t", "2"]);
    assert_eq!(server.stats_sub("settings")["udpport"], "0");
    // Only the `stats` connection itself, once the start-up probe's close has been counted
    // (its shard may count it a moment later): no UDP socket counts as one.
    let only_stats = wait_until(Duration::from_secs(5), || {
        stat_u64(&server.stats(), "curr_connections") == 1
    });
    assert!(only_stats, "{:?}", server.stats().get("curr_connections"));
    assert!(server.stdout_lines().iter().all(|l| !l.contains("udp")));
}

/// One random datagram (seeded): raw bytes, a near-protocol text payload, or binary frames with
/// random fields, under a random header (sometimes too short, or not a single-datagram one).
fn junk_datagram(rng: &mut Rng) -> Vec<u8> {
    let verbs: &[&[u8]] = &[
        b"get",
        b"gets",
        b"gat",
        b"set",
        b"add",
        b"cas",
        b"incr",
        b"delete",
        b"touch",
        b"mg",
        b"ms",
        b"md",
        b"ma",
        b"mn",
        b"version",
        b"stats",
        b"quit",
        b"lru_crawler metadump",
        b"verbosity",
        b"flush_all 999999",
    ];
    let mut payload = Vec::new();
    for _ in 0..=rng.below(6) {
        match rng.below(3) {
            0 => (0..rng.below(300)).for_each(|_| payload.push(rng.next_u64() as u8)),
            1 => {
                payload.extend_from_slice(verbs[rng.below(verbs.len() as u64) as usize]);
                for _ in 0..rng.below(6) {
                    payload.extend_from_slice(b" ");
                    match rng.below(4) {
                        0 => payload.extend_from_slice(format!("k{}", rng.below(8)).as_bytes()),
                        1 => payload.extend_from_slice(rng.below(3000).to_string().as_bytes()),
                        2 => payload.extend_from_slice(b"noreply"),
                        _ => payload.push(rng.next_u64() as u8),
                    }
                }
                payload.extend_from_slice(b"\r\n");
                (0..rng.below(40)).for_each(|_| payload.push(b'v'));
                if rng.below(2) == 0 {
                    payload.extend_from_slice(b"\r\n");
                }
            }
            _ => {
                let key = format!("k{}", rng.below(8));
                let value = vec![b'b'; rng.below(40) as usize];
                let extras = vec![0u8; [0, 4, 8, 20][rng.below(4) as usize]];
                let op = [
                    opcode::GET,
                    opcode::GETQ,
                    opcode::GETK,
                    opcode::SET,
                    opcode::SETQ,
                    opcode::DELETE,
                    opcode::INCREMENT,
                    opcode::NOOP,
                    opcode::STAT,
                    opcode::QUIT,
                    opcode::TOUCH,
                    rng.next_u64() as u8,
                ][rng.below(12) as usize];
                let mut frame = request(op, 7, 0, &extras, key.as_bytes(), &value);
                if rng.below(4) == 0 {
                    // Lengths that do not add up.
                    let i = 2 + rng.below(10) as usize;
                    frame[i] = rng.next_u64() as u8;
                }
                let cut = frame.len() - rng.below(frame.len() as u64 / 4 + 1) as usize;
                payload.extend_from_slice(&frame[..cut]);
            }
        }
    }
    let mut d = udp_request(rng.next_u64() as u16, &payload);
    match rng.below(8) {
        0 => d.truncate(rng.below(9) as usize),
        1 => d[4] = rng.next_u64() as u8,
        _ => {}
    }
    d
}

/// Random datagrams (seeded) never kill the server, and a bystander keeps being answered
/// correctly over UDP and TCP. Corecache only: memcached carries a datagram's unfinished
/// command over into whatever datagram comes next (a data block, a swallow, a `quit`'s close),
/// so garbage leaves it eating the bystander's datagrams.
#[test]
fn garbage_datagrams_never_kill_the_server() {
    if skip_in_memcached_mode("memcached's UDP connections carry state across datagrams") {
        return;
    }
    for_each_config(|args| {
        let mut server = TestServer::start_udp(args);
        let mut bystander = server.udp_client();
        bystander.exchange(&set("safe", b"ok"), &[(0, 1, b"STORED\r\n")]);
        let junk = server.udp_client();
        let before = stat_u64(&server.stats(), "bytes_read");
        let mut rng = Rng::new(0x0dd_da7a);
        for round in 0..20 {
            for _ in 0..100 {
                junk.send_raw(&junk_datagram(&mut rng));
            }
            assert!(server.is_running(), "server died in round {round}");
            bystander.exchange(
                b"get safe\r\n",
                &[(0, 1, b"VALUE safe 0 2\r\nok\r\nEND\r\n")],
            );
        }
        server
            .connect()
            .roundtrip(b"get safe\r\n", b"VALUE safe 0 2\r\nok\r\nEND\r\n");
        // The junk did arrive (a datagram longer than a header counts, answered or not).
        let read = stat_u64(&server.stats(), "bytes_read") - before;
        assert!(read > 200_000, "only {read} bytes read");
    });
}

/// corecache only (memcached mode binds one address): UDP is served on every `-l` address, each
/// announced on its own `listening udp:` line.
#[test]
fn udp_is_served_on_every_listen_address() {
    if skip_in_memcached_mode("the harness starts memcached on one address") {
        return;
    }
    let server =
        TestServer::start_corecache_on("127.0.0.1,127.0.0.2", &["-t", "2", "-U", "-1"], |_| {});
    let udp_addrs = || -> Vec<std::net::SocketAddr> {
        server
            .stdout_lines()
            .iter()
            .filter_map(|l| l.trim_end().strip_prefix("listening udp:")?.parse().ok())
            .collect()
    };
    wait_until(STARTUP_TIMEOUT, || udp_addrs().len() == 2);
    let addrs = udp_addrs();
    assert_eq!(
        addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
        ["127.0.0.1", "127.0.0.2"],
        "{:?}",
        server.stdout_lines()
    );
    for addr in addrs {
        let mut c = UdpClient::new(addr);
        c.exchange(b"version\r\n", &[(0, 1, b"VERSION 1.6.18\r\n")]);
    }
    let shards = 2;
    // One UDP socket per address per shard, and this `stats` connection (once earlier ones'
    // closes have been counted).
    let counted = wait_until(Duration::from_secs(5), || {
        stat_u64(&server.stats(), "curr_connections") == 1 + 2 * shards
    });
    assert!(counted, "{:?}", server.stats().get("curr_connections"));
}

/// One expected reply datagram: `(sequence, total, payload)`.
type Expected<'a> = (u16, u16, &'a [u8]);

/// A data block cut off by the end of its datagram is answered `CLIENT_ERROR bad data chunk`
/// under the request's id (nothing after `noreply`; always for meta), after the replies ahead
/// of it; a command line cut off is dropped unanswered. memcached's worker sends that error
/// only once the next datagram reaches it, which it reads raw as the block's rest (header
/// included) and so never answers; corecache answers at once, and the next datagram is served
/// (memcached mode sends follow-up datagrams until the error arrives).
#[test]
fn a_data_block_cut_off_by_the_datagram_end_is_a_bad_data_chunk() {
    const BAD: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
    let cases: [(&[u8], &[Expected]); 7] = [
        (b"set k 0 0 10\r\nabc", &[(0, 1, BAD)]),
        (b"set k 0 0 3\r\nabc", &[(0, 1, BAD)]),
        (b"set k 0 0 0\r\n", &[(0, 1, BAD)]),
        (b"cas k 0 0 10 1\r\nabc", &[(0, 1, BAD)]),
        (b"append k 0 0 5\r\nab", &[(0, 1, BAD)]),
        (b"ms k 10 q\r\nabc", &[(0, 1, BAD)]),
        (
            b"version\r\nset k 0 0 5\r\nab",
            &[(0, 1, b"VERSION 1.6.18\r\n"), (0, 1, BAD)],
        ),
    ];
    for_each_config(|args| {
        // memcached's worker threads all read the one socket: with one, the follow-up
        // datagram surely reaches the worker that waits for the block's rest.
        let args = if memcached_mode() {
            &["-t", "1"][..]
        } else {
            args
        };
        for (payload, expected) in cases {
            // memcached keeps the cut-off request's state: a fresh server each.
            let server = TestServer::start_udp(args);
            let mut c = server.udp_client();
            if !memcached_mode() {
                c.exchange(payload, expected);
                c.exchange(b"get k\r\n", &[(0, 1, b"END\r\n")]);
                continue;
            }
            c.send_raw(&udp_request(7, payload));
            let mut frames = None;
            for follow_up in 0..16u16 {
                c.send_raw(&udp_request(100 + follow_up, b"mn\r\n"));
                frames = c.recv_frames(7, expected.len(), Duration::from_millis(500));
                if frames.is_some() {
                    break;
                }
            }
            let frames = frames.expect("memcached's answer");
            let got: Vec<_> = frames.iter().map(|f| f.parts()).collect();
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(payload));
        }
    });
    if skip_in_memcached_mode("noreply and cut-off lines: memcached takes the next datagram") {
        return;
    }
    let server = TestServer::start_udp(&["-t", "2"]);
    let mut c = server.udp_client();
    for quiet in [
        &b"set k 0 0 3 noreply\r\nab"[..],
        b"get foo",
        b"set k 0 0 3",
        b"mg k v",
    ] {
        c.send_raw(&udp_request(5, quiet));
        c.expect_quiet();
    }
    c.exchange(b"version\r\nget foo", &[(0, 1, b"VERSION 1.6.18\r\n")]);
    c.exchange(b"set k 0 0 3\r\nabc\r\nget k", &[(0, 1, b"STORED\r\n")]);
}
