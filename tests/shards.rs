//! Requests for keys another core owns, while that core sleeps: answered from its parked
//! shard (`--borrow-idle-shards on`, the default) exactly as the owner would answer them, in
//! order with everything else the connection sent, and counted in `borrowed_requests`.
//! corecache-only: memcached has no shards.

mod common;

use std::path::PathBuf;
use std::thread;

use common::{skip_in_memcached_mode, stat_u64, Client, Rng, TestServer};

/// `-t 2` on each backend, plus `extra`.
fn two_shard_configs<'a>(extra: &[&'a str]) -> Vec<Vec<&'a str>> {
    ["epoll", "uring"]
        .iter()
        .map(|backend| {
            let mut args = vec!["-t", "2", "--io-backend", backend];
            args.extend_from_slice(extra);
            args
        })
        .collect()
}

/// A directory name under the temp dir for this test process, emptied.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corecache-shards-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn set_reply(c: &mut Client, key: &str, value: &str) {
    let cmd = format!("set {key} 7 0 {}\r\n{value}\r\n", value.len());
    c.roundtrip(cmd.as_bytes(), b"STORED\r\n");
}

fn value_reply(key: &str, flags: u32, value: &str) -> String {
    format!("VALUE {key} {flags} {}\r\n{value}\r\nEND\r\n", value.len())
}

/// One client, one request at a time: the other core is idle, so about half the requests are
/// answered from its parked shard, with the same bytes as when each goes to the owner.
#[test]
fn requests_for_an_idle_core_are_served_from_its_shard() {
    if skip_in_memcached_mode("borrowed_requests is corecache's") {
        return;
    }
    for backend in ["epoll", "uring"] {
        let mut counters = Vec::new();
        for mode in ["on", "off"] {
            let args = [
                "-t",
                "2",
                "--io-backend",
                backend,
                "--borrow-idle-shards",
                mode,
            ];
            eprintln!("=== config: {}", args.join(" "));
            let server = TestServer::start(&args);
            let mut c = server.connect();
            for i in 0..64 {
                let key = format!("idle-{i}");
                let value = format!("v{i}");
                c.roundtrip(format!("get {key}\r\n").as_bytes(), b"END\r\n");
                set_reply(&mut c, &key, &value);
                let expected = value_reply(&key, 7, &value);
                c.roundtrip(format!("get {key}\r\n").as_bytes(), expected.as_bytes());
                c.roundtrip(
                    format!("incr {key} 1\r\n").as_bytes(),
                    b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                );
                let meta = format!("VA {} f7\r\n{value}\r\n", value.len());
                c.roundtrip(format!("mg {key} v f\r\n").as_bytes(), meta.as_bytes());
                c.roundtrip(format!("delete {key}\r\n").as_bytes(), b"DELETED\r\n");
                c.roundtrip(format!("gets {key}\r\n").as_bytes(), b"END\r\n");
            }
            let stats = server.stats();
            let borrowed = stat_u64(&stats, "borrowed_requests");
            if mode == "on" {
                // 448 requests, about half for the other core's keys; most find it asleep.
                assert!(
                    borrowed > 0,
                    "no request was served from the idle core's shard"
                );
                assert!(borrowed <= 448, "{borrowed} borrowed of 448 requests");
            } else {
                assert_eq!(borrowed, 0, "--borrow-idle-shards off borrowed {borrowed}");
            }
            let names = [
                "cmd_get",
                "cmd_set",
                "get_hits",
                "get_misses",
                "delete_hits",
                "incr_misses",
                "cmd_meta",
                "curr_items",
                "total_items",
            ];
            counters.push(names.map(|n| (n, stat_u64(&stats, n))));
        }
        assert_eq!(
            counters[0], counters[1],
            "counters differ with and without borrowing"
        );
    }
}

/// Pipelined writes and reads of the same keys on one connection: a read answered from the
/// owner's parked shard must see every write the connection sent before it, including writes
/// still on their way to the owner. Each batch is checked byte for byte.
#[test]
fn pipelined_reads_see_the_writes_before_them() {
    if skip_in_memcached_mode("corecache's shards") {
        return;
    }
    // With a log, writes always travel to their owner while reads may be borrowed.
    for (args, with_log) in two_shard_configs(&[])
        .into_iter()
        .map(|args| (args, false))
        .chain(two_shard_configs(&[]).into_iter().map(|args| (args, true)))
    {
        let dir = scratch_dir(&format!("pipe-{}", args[3]));
        let log_dir = dir.to_string_lossy().into_owned();
        let mut args: Vec<&str> = args;
        if with_log {
            args.extend(["--log-dir", log_dir.as_str()]);
        }
        eprintln!("=== config: {}", args.join(" "));
        let server = TestServer::start(&args);
        let mut c = server.connect();
        let mut rng = Rng::new(0x5eed_0001);
        let mut model: Vec<Option<String>> = vec![None; 16];
        for batch in 0..400 {
            let mut request = Vec::new();
            let mut expected = Vec::new();
            for n in 0..1 + rng.below(24) {
                let k = rng.below(16) as usize;
                let key = format!("pipe-{k}");
                match rng.below(5) {
                    0 | 1 => {
                        let value = format!("{batch}.{n}");
                        let noreply = rng.below(2) == 0;
                        request.extend_from_slice(
                            format!(
                                "set {key} 3 0 {}{}\r\n{value}\r\n",
                                value.len(),
                                if noreply { " noreply" } else { "" }
                            )
                            .as_bytes(),
                        );
                        if !noreply {
                            expected.extend_from_slice(b"STORED\r\n");
                        }
                        model[k] = Some(value);
                    }
                    2 if rng.below(20) == 0 => {
                        // Every shard's part of a flush travels to it.
                        request.extend_from_slice(b"flush_all noreply\r\n");
                        model.iter_mut().for_each(|v| *v = None);
                    }
                    2 => {
                        request.extend_from_slice(format!("delete {key} noreply\r\n").as_bytes());
                        model[k] = None;
                    }
                    _ => {
                        request.extend_from_slice(format!("get {key}\r\n").as_bytes());
                        match &model[k] {
                            Some(v) => {
                                expected.extend_from_slice(value_reply(&key, 3, v).as_bytes())
                            }
                            None => expected.extend_from_slice(b"END\r\n"),
                        }
                    }
                }
            }
            // A last read of every key, so each batch ends with something to wait for.
            for (k, value) in model.iter().enumerate() {
                let key = format!("pipe-{k}");
                request.extend_from_slice(format!("get {key}\r\n").as_bytes());
                match value {
                    Some(v) => expected.extend_from_slice(value_reply(&key, 3, v).as_bytes()),
                    None => expected.extend_from_slice(b"END\r\n"),
                }
            }
            c.send(&request);
            c.read_exact_reply(&expected);
        }
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Several clients at once, each writing and reading its own keys on both cores, one request
/// at a time and in short pipelines: every read returns that client's last write, while
/// requests are borrowed and owners wake and sleep under them.
#[test]
fn concurrent_clients_read_their_own_writes() {
    if skip_in_memcached_mode("corecache's shards") {
        return;
    }
    for args in two_shard_configs(&[]) {
        eprintln!("=== config: {}", args.join(" "));
        let server = TestServer::start(&args);
        let before = stat_u64(&server.stats(), "borrowed_requests");
        thread::scope(|s| {
            for client in 0..6u64 {
                let server = &server;
                s.spawn(move || {
                    let mut c = server.connect();
                    let mut rng = Rng::new(0xc0ffee + client);
                    let mut model: Vec<Option<String>> = vec![None; 8];
                    for round in 0..1500 {
                        let k = rng.below(8) as usize;
                        let key = format!("own-{client}-{k}");
                        match rng.below(6) {
                            0 | 1 => {
                                let value = format!("{client}:{round}");
                                set_reply(&mut c, &key, &value);
                                model[k] = Some(value);
                            }
                            2 => {
                                let reply: &[u8] = if model[k].is_some() {
                                    b"DELETED\r\n"
                                } else {
                                    b"NOT_FOUND\r\n"
                                };
                                c.roundtrip(format!("delete {key}\r\n").as_bytes(), reply);
                                model[k] = None;
                            }
                            3 => {
                                // A write and its read in one segment.
                                let value = format!("p{round}");
                                let cmd = format!(
                                    "set {key} 7 0 {}\r\n{value}\r\nget {key}\r\n",
                                    value.len()
                                );
                                let reply = format!("STORED\r\n{}", value_reply(&key, 7, &value));
                                c.roundtrip(cmd.as_bytes(), reply.as_bytes());
                                model[k] = Some(value);
                            }
                            _ => {
                                let reply = match &model[k] {
                                    Some(v) => value_reply(&key, 7, v),
                                    None => "END\r\n".to_string(),
                                };
                                c.roundtrip(format!("get {key}\r\n").as_bytes(), reply.as_bytes());
                            }
                        }
                    }
                });
            }
        });
        let borrowed = stat_u64(&server.stats(), "borrowed_requests") - before;
        eprintln!("borrowed: {borrowed} of 9000 requests");
    }
}

/// With a durability log, writes always go to the owner (it sends their records to the log);
/// reads may still be served from its parked shard.
#[test]
fn with_a_log_only_reads_are_borrowed() {
    if skip_in_memcached_mode("corecache's durability log") {
        return;
    }
    for args in two_shard_configs(&[]) {
        eprintln!("=== config: {}", args.join(" "));
        let dir = scratch_dir(&format!("log-{}", args[3]));
        let log_dir = dir.to_string_lossy().into_owned();
        let mut args: Vec<&str> = args;
        args.extend(["--log-dir", log_dir.as_str()]);
        let server = TestServer::start(&args);
        let mut c = server.connect();
        for i in 0..64 {
            set_reply(&mut c, &format!("logged-{i}"), "x");
            c.roundtrip(format!("delete logged-{i}\r\n").as_bytes(), b"DELETED\r\n");
            set_reply(&mut c, &format!("logged-{i}"), "y");
        }
        assert_eq!(
            stat_u64(&server.stats(), "borrowed_requests"),
            0,
            "a write was borrowed"
        );
        for i in 0..64 {
            let key = format!("logged-{i}");
            c.roundtrip(
                format!("get {key}\r\n").as_bytes(),
                value_reply(&key, 7, "y").as_bytes(),
            );
        }
        assert!(
            stat_u64(&server.stats(), "borrowed_requests") > 0,
            "no read was borrowed"
        );
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Reads binary response frames up to and including the first noop response.
fn read_through_noop(c: &mut Client) -> Vec<u8> {
    use corecache::protocol::binary::{opcode, HEADER_LEN};
    let mut all = Vec::new();
    loop {
        let header = c
            .read_n(HEADER_LEN)
            .unwrap_or_else(|(got, why)| panic!("binary header: {why} after {} bytes", got.len()));
        let body_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let body = c
            .read_n(body_len as usize)
            .unwrap_or_else(|(got, why)| panic!("binary body: {why} after {} bytes", got.len()));
        let done = header[1] == opcode::NOOP;
        all.extend_from_slice(&header);
        all.extend_from_slice(&body);
        if done {
            return all;
        }
    }
}

/// The binary protocol, pipelined with quiet commands: the same random frames sent to a server
/// that borrows idle shards and to one that does not get the same bytes back (cas values
/// included: a borrowed write takes its cas from the owner's shard, as the owner would).
#[test]
fn binary_requests_answer_the_same_when_borrowed() {
    use corecache::protocol::binary::{opcode, request};
    if skip_in_memcached_mode("corecache's shards") {
        return;
    }
    for backend in ["epoll", "uring"] {
        let on = TestServer::start(&["-t", "2", "--io-backend", backend]);
        let off = TestServer::start(&[
            "-t",
            "2",
            "--io-backend",
            backend,
            "--borrow-idle-shards",
            "off",
        ]);
        eprintln!("=== config: -t 2 --io-backend {backend}, borrowing on and off");
        let mut clients = [on.connect(), off.connect()];
        let mut rng = Rng::new(0xb1_0000);
        for batch in 0..300u32 {
            let mut frames = Vec::new();
            for n in 0..1 + rng.below(12) {
                let key = format!("bin-{}", rng.below(12));
                let key = key.as_bytes();
                let opaque = batch * 100 + n as u32;
                let mut flags_exp = 5u32.to_be_bytes().to_vec();
                flags_exp.extend_from_slice(&0u32.to_be_bytes());
                let value = format!("{batch}-{n}");
                let frame = match rng.below(8) {
                    0 => request(opcode::SET, opaque, 0, &flags_exp, key, value.as_bytes()),
                    1 => request(opcode::SETQ, opaque, 0, &flags_exp, key, value.as_bytes()),
                    2 => request(opcode::DELETEQ, opaque, 0, &[], key, &[]),
                    3 => {
                        let mut extras = 1u64.to_be_bytes().to_vec();
                        extras.extend_from_slice(&7u64.to_be_bytes());
                        extras.extend_from_slice(&0u32.to_be_bytes());
                        request(opcode::INCREMENT, opaque, 0, &extras, key, &[])
                    }
                    4 => request(opcode::GETKQ, opaque, 0, &[], key, &[]),
                    5 => request(opcode::GETQ, opaque, 0, &[], key, &[]),
                    _ => request(opcode::GETK, opaque, 0, &[], key, &[]),
                };
                frames.extend_from_slice(&frame);
            }
            frames.extend_from_slice(&request(opcode::NOOP, batch, 0, &[], &[], &[]));
            let replies: Vec<Vec<u8>> = clients
                .iter_mut()
                .map(|c| {
                    c.send(&frames);
                    read_through_noop(c)
                })
                .collect();
            common::assert_bytes_eq(&replies[0], &replies[1], &format!("batch {batch}"));
        }
        assert!(
            stat_u64(&on.stats(), "borrowed_requests") > 0,
            "nothing borrowed"
        );
        assert_eq!(stat_u64(&off.stats(), "borrowed_requests"), 0);
    }
}
