//! Admin commands and ElastiCache auto discovery against the real binary, byte by byte, on all
//! four configs; the memcached-compatible ones also run in memcached validation mode
//! (`CORECACHE_TEST_SERVER=memcached`).

mod common;

use std::time::Duration;

use common::{for_each_config, memcached_mode, skip_in_memcached_mode, stat_u64, TestServer};

fn config_reply(version: u64, nodes: &str, head: &str) -> Vec<u8> {
    let payload = format!("{version}\n{nodes}\n");
    format!("{head} 0 {}\r\n{payload}\r\nEND\r\n", payload.len()).into_bytes()
}

#[test]
fn config_get_cluster_lists_this_node_by_default() {
    if skip_in_memcached_mode("auto discovery is corecache's (memcached answers ERROR)") {
        return;
    }
    for_each_config(|args| {
        let server = TestServer::start(args);
        let port = server.addr().port();
        let mut c = server.connect();
        let nodes = format!("127.0.0.1|127.0.0.1|{port}");
        c.roundtrip(
            b"config get cluster\r\n",
            &config_reply(1, &nodes, "CONFIG cluster"),
        );
        c.roundtrip(
            b"get AmazonElastiCache:cluster\r\n",
            &config_reply(1, &nodes, "VALUE AmazonElastiCache:cluster"),
        );
        c.roundtrip(b"config get other\r\n", b"ERROR\r\n");
        c.roundtrip(b"config set cluster\r\n", b"ERROR\r\n");
        c.roundtrip(b"config\r\n", b"ERROR\r\n");
    });
}

#[test]
fn cluster_nodes_flag() {
    if skip_in_memcached_mode("auto discovery is corecache's") {
        return;
    }
    let nodes = "a.example|10.0.0.1|11211,b.example|10.0.0.2|11212";
    for_each_config(|args| {
        let mut args = args.to_vec();
        args.extend(["--cluster-nodes", nodes]);
        let server = TestServer::start(&args);
        let mut c = server.connect();
        let spaced = nodes.replace(',', " ");
        c.roundtrip(
            b"config get cluster\r\n",
            &config_reply(1, &spaced, "CONFIG cluster"),
        );
        c.roundtrip(
            b"get AmazonElastiCache:cluster\r\n",
            &config_reply(1, &spaced, "VALUE AmazonElastiCache:cluster"),
        );
        // Only the key alone is the discovery request; with other keys it is a plain get.
        c.roundtrip(b"get AmazonElastiCache:cluster other\r\n", b"END\r\n");
    });
}

#[test]
fn bad_cluster_node_lists_are_refused_at_startup() {
    if skip_in_memcached_mode("corecache flags") {
        return;
    }
    for bad in [
        &["--cluster-nodes", "a|10.0.0.1"][..],
        &["--cluster-nodes", "a|not-an-ip|1"],
        &["--cluster-config", "/nonexistent/corecache-nodes"],
        &["--cluster-nodes", "a||1", "--cluster-config", "/tmp/x"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_corecache"))
            .args(["-l", "127.0.0.1", "-p", "0"])
            .args(bad)
            .output()
            .expect("run corecache");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad:?} was accepted");
        assert!(stderr.contains("--cluster"), "{bad:?}: {stderr}");
    }
}

#[test]
fn cluster_config_file_reloads_on_sighup() {
    if skip_in_memcached_mode("auto discovery is corecache's") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("corecache-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nodes");
    std::fs::write(&path, "a|10.0.0.1|11211\nb|10.0.0.2|11211\n").unwrap();
    let server = TestServer::start(&["-t", "2", "--cluster-config", path.to_str().unwrap()]);
    let mut c = server.connect();
    let two = "a|10.0.0.1|11211 b|10.0.0.2|11211";
    c.roundtrip(
        b"config get cluster\r\n",
        &config_reply(1, two, "CONFIG cluster"),
    );
    let hup = |server: &TestServer| {
        // SAFETY: kill(2) on the child we spawned and still own.
        let rc = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0);
    };
    // Same list on one line: the version stays.
    std::fs::write(&path, format!("{two}\n")).unwrap();
    hup(&server);
    // A changed list: the version goes up once the main thread has re-read the file.
    std::fs::write(
        &path,
        "# three nodes\na|10.0.0.1|11211\nb|10.0.0.2|11211\nc||11213\n",
    )
    .unwrap();
    hup(&server);
    let three = "a|10.0.0.1|11211 b|10.0.0.2|11211 c||11213";
    let expected = config_reply(2, three, "CONFIG cluster");
    let mut last = Vec::new();
    let changed = common::wait_until(Duration::from_secs(5), || {
        c.send(b"config get cluster\r\n");
        last = c.read_until_end();
        last == expected
    });
    assert!(changed, "after SIGHUP: {}", common::escape(&last));
    // A broken file keeps the old list.
    std::fs::write(&path, "not a node\n").unwrap();
    hup(&server);
    std::thread::sleep(Duration::from_millis(100)); // let the main thread handle the signal
    c.roundtrip(b"config get cluster\r\n", &expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stats detail dump` lines, sorted (memcached lists them in hash order).
fn sorted_dump(c: &mut common::Client) -> Vec<String> {
    c.send(b"stats detail dump\r\n");
    let reply = String::from_utf8(c.read_until_end()).unwrap();
    assert!(reply.ends_with("END\r\n"), "{reply:?}");
    let mut lines: Vec<String> = reply.split_inclusive("\r\n").map(str::to_string).collect();
    lines.pop();
    lines.sort();
    lines
}

#[test]
fn stats_detail_counts_per_prefix() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(
            b"stats detail\r\n",
            b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        );
        c.roundtrip(
            b"stats detail x\r\n",
            b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        );
        c.roundtrip(b"stats detail dump\r\n", b"END\r\n");
        // Not counted while off.
        c.roundtrip(b"set foo:z 0 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"stats detail on\r\n", b"OK\r\n");
        assert_eq!(server.stats_sub("settings")["detail_enabled"], "yes");
        c.roundtrip(b"set foo:a 0 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"add foo:a 0 0 1\r\nx\r\n", b"NOT_STORED\r\n");
        c.roundtrip(
            b"get foo:a foo:b bar:c nocolon\r\n",
            b"VALUE foo:a 0 1\r\nx\r\nEND\r\n",
        );
        c.roundtrip(b"delete foo:a\r\n", b"DELETED\r\n");
        c.roundtrip(b"delete baz:q\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(b"incr foo:n 1\r\n", b"NOT_FOUND\r\n");
        let expected = vec![
            "PREFIX bar get 1 hit 0 set 0 del 0\r\n".to_string(),
            "PREFIX baz get 0 hit 0 set 0 del 1\r\n".to_string(),
            "PREFIX foo get 2 hit 1 set 2 del 1\r\n".to_string(),
        ];
        assert_eq!(sorted_dump(&mut c), expected);
        // Off stops counting but keeps the counts.
        c.roundtrip(b"stats detail off\r\n", b"OK\r\n");
        c.roundtrip(b"get foo:a\r\n", b"END\r\n");
        assert_eq!(sorted_dump(&mut c), expected);
        assert_eq!(server.stats_sub("settings")["detail_enabled"], "no");
        // stats reset clears them.
        c.roundtrip(b"stats reset\r\n", b"RESET\r\n");
        c.roundtrip(b"stats detail dump\r\n", b"END\r\n");
    });
}

/// Parses one metadump line into (key, exp, fetch, cls).
fn metadump_fields(line: &str) -> (String, String, String, String) {
    let mut key = String::new();
    let (mut exp, mut fetch, mut cls) = (String::new(), String::new(), String::new());
    for field in line.trim_end().split(' ') {
        let (name, value) = field.split_once('=').expect("name=value");
        match name {
            "key" => key = value.to_string(),
            "exp" => exp = value.to_string(),
            "fetch" => fetch = value.to_string(),
            "cls" => cls = value.to_string(),
            "la" | "cas" | "size" => assert!(value.parse::<u64>().is_ok(), "{line:?}"),
            other => panic!("unexpected field {other:?} in {line:?}"),
        }
    }
    (key, exp, fetch, cls)
}

#[test]
fn lru_crawler_metadump_lists_live_items_of_every_shard() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(b"lru_crawler metadump\r\n", b"ERROR\r\n");
        c.roundtrip(
            b"lru_crawler metadump 99\r\n",
            b"BADCLASS invalid class id\r\n",
        );
        c.roundtrip(
            b"lru_crawler metadump x\r\n",
            b"BADCLASS invalid class id\r\n",
        );
        let count = 40;
        for i in 0..count {
            let key = format!("key{i}");
            c.roundtrip(
                format!("set {key} 0 0 2\r\nab\r\n").as_bytes(),
                b"STORED\r\n",
            );
        }
        c.roundtrip(b"set k%20 1 1000 2\r\nab\r\n", b"STORED\r\n");
        c.roundtrip(b"get key3\r\n", b"VALUE key3 0 2\r\nab\r\nEND\r\n");
        c.roundtrip(b"set gone 0 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"delete gone\r\n", b"DELETED\r\n");
        c.send(b"lru_crawler metadump all\r\n");
        let reply = String::from_utf8(c.read_until_end()).unwrap();
        assert!(reply.ends_with("\nEND\r\n"), "{reply:?}");
        let lines: Vec<&str> = reply.lines().filter(|l| *l != "END").collect();
        assert_eq!(lines.len(), count + 1, "{reply}");
        let mut seen = std::collections::HashMap::new();
        for line in &lines {
            assert!(
                !line.ends_with('\r'),
                "item lines end in a bare \\n: {line:?}"
            );
            let (key, exp, fetch, cls) = metadump_fields(line);
            seen.insert(key, (exp, fetch, cls));
        }
        assert_eq!(seen["key3"].1, "yes");
        assert_eq!(seen["key4"].0, "-1");
        assert_eq!(seen["key4"].1, "no");
        let (exp, _, cls) = &seen["k%2520"];
        assert!(
            exp.parse::<u64>().unwrap() > 1_600_000_000,
            "exp is unix time"
        );
        // One class at a time lists a subset.
        c.send(format!("lru_crawler metadump {cls}\r\n").as_bytes());
        let one = String::from_utf8(c.read_until_end()).unwrap();
        assert!(one.contains("key=k%2520 "), "{one}");
        // The connection is still usable.
        c.roundtrip(b"get key3\r\n", b"VALUE key3 0 2\r\nab\r\nEND\r\n");
    });
}

#[test]
fn cache_memlimit_replies() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        for (request, reply) in [
            (&b"cache_memlimit\r\n"[..], &b"ERROR\r\n"[..]),
            (b"cache_memlimit x\r\n", b"ERROR\r\n"),
            (b"cache_memlimit -5\r\n", b"ERROR\r\n"),
            (b"cache_memlimit 100 x y\r\n", b"ERROR\r\n"),
            (
                b"cache_memlimit 0\r\n",
                b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
            ),
            (
                b"cache_memlimit 7\r\n",
                b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
            ),
            (b"cache_memlimit 7 noreply\r\n", b""),
            (b"cache_memlimit 100 noreply\r\n", b""),
            (b"cache_memlimit 100\r\n", b"OK\r\n"),
        ] {
            c.send(request);
            if !reply.is_empty() {
                c.read_exact_reply(reply);
            }
        }
        assert_eq!(stat_u64(&server.stats(), "limit_maxbytes"), 100 << 20);
        assert_eq!(
            server.stats_sub("settings")["maxbytes"],
            (100u64 << 20).to_string()
        );
    });
}

#[test]
fn cache_memlimit_shrinks_by_evicting_and_grows_back() {
    if skip_in_memcached_mode("memcached shrinks lazily; corecache evicts at once") {
        return;
    }
    for_each_config(|args| {
        let mut args = args.to_vec();
        args.extend(["-m", "64"]);
        let server = TestServer::start(&args);
        let mut c = server.connect();
        let value = vec![b'v'; 10_000];
        let keys = 3000;
        for i in 0..keys {
            let mut request = format!("set key{i} 0 0 {} noreply\r\n", value.len()).into_bytes();
            request.extend_from_slice(&value);
            request.extend_from_slice(b"\r\n");
            c.send(&request);
        }
        c.roundtrip(b"get sync\r\n", b"END\r\n"); // every noreply set is done
        let before = server.stats();
        assert!(
            stat_u64(&before, "curr_items") > keys * 9 / 10,
            "{before:?}"
        );
        c.roundtrip(b"cache_memlimit 8\r\n", b"OK\r\n");
        let after = server.stats();
        assert_eq!(stat_u64(&after, "limit_maxbytes"), 8 << 20);
        assert!(
            stat_u64(&server.stats_sub("slabs"), "total_malloced") <= 8 << 20,
            "{after:?}"
        );
        assert!(stat_u64(&after, "curr_items") < keys / 2);
        assert!(stat_u64(&after, "evictions") > 0);
        // Still serving: sets evict within the new budget.
        for i in 0..200 {
            let mut request = format!("set new{i} 0 0 {}\r\n", value.len()).into_bytes();
            request.extend_from_slice(&value);
            request.extend_from_slice(b"\r\n");
            c.roundtrip(&request, b"STORED\r\n");
        }
        assert!(stat_u64(&server.stats_sub("slabs"), "total_malloced") <= 8 << 20);
        c.roundtrip(b"cache_memlimit 64\r\n", b"OK\r\n");
        let evictions = stat_u64(&server.stats(), "evictions");
        for i in 0..1000 {
            let mut request = format!("set more{i} 0 0 {} noreply\r\n", value.len()).into_bytes();
            request.extend_from_slice(&value);
            request.extend_from_slice(b"\r\n");
            c.send(&request);
        }
        c.roundtrip(b"get sync\r\n", b"END\r\n");
        let grown = server.stats();
        assert_eq!(
            stat_u64(&grown, "evictions"),
            evictions,
            "room after growing"
        );
        assert_eq!(stat_u64(&grown, "limit_maxbytes"), 64 << 20);
    });
}

#[test]
fn shutdown_needs_dash_a() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(b"shutdown\r\n", b"ERROR: shutdown not enabled\r\n");
        c.roundtrip(b"shutdown graceful\r\n", b"ERROR: shutdown not enabled\r\n");
        c.roundtrip(b"shutdown x\r\n", b"ERROR: shutdown not enabled\r\n");
        c.roundtrip(b"verbosity 1\r\n", b"OK\r\n");
        c.roundtrip(b"verbosity\r\n", b"ERROR\r\n");
    });
}

#[test]
fn shutdown_with_dash_a_exits_cleanly() {
    for mode in ["shutdown", "shutdown graceful"] {
        for_each_config(|args| {
            let mut args = args.to_vec();
            args.push("-A");
            let mut server = TestServer::start(&args);
            let mut c = server.connect();
            c.roundtrip(b"shutdown x\r\n", b"CLIENT_ERROR invalid shutdown mode\r\n");
            c.send(format!("{mode}\r\n").as_bytes());
            assert_eq!(c.expect_closed(), b"", "{mode} sends no reply");
            let status = server
                .wait_exit(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("still running after {mode}"));
            if !memcached_mode() {
                assert_eq!(status.code(), Some(0), "{mode}: {status}");
            }
        });
    }
}
