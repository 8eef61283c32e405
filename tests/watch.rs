//! `watch`: memcached 1.6.18's log streams (fetchers, mutations, evictions, connevents), line by
//! line, on all four configs; every test also runs in memcached validation mode
//! (`CORECACHE_TEST_SERVER=memcached`), which proves the line formats are memcached's.
//!
//! Patterns: `{n}` matches a run of digits (a `-` may lead), `{ts}` a `secs.usecs` timestamp;
//! every other byte matches itself.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::{escape, for_each_config, stat_u64, wait_until, Client, TestServer};

/// Whether `line` matches `pattern` (see the module docs).
fn matches(line: &[u8], pattern: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    while j < pattern.len() {
        let rest = &pattern[j..];
        if rest.starts_with(b"{n}") || rest.starts_with(b"{ts}") {
            let start = i;
            if line.get(i) == Some(&b'-') && rest.starts_with(b"{n}") {
                i += 1;
            }
            let digits_start = i;
            while line.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits_start {
                return false;
            }
            if rest.starts_with(b"{ts}") {
                if line.get(i) != Some(&b'.') {
                    return false;
                }
                i += 1;
                let usecs = i;
                while line.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i == usecs || i - usecs > 6 {
                    return false;
                }
                j += b"{ts}".len();
            } else {
                j += b"{n}".len();
            }
            let _ = start;
            continue;
        }
        if line.get(i) != Some(&pattern[j]) {
            return false;
        }
        i += 1;
        j += 1;
    }
    i == line.len()
}

/// Reads the watcher's next line and asserts it matches `ts={ts} gid={n} <tail>\n`.
#[track_caller]
fn expect_line(watcher: &mut Client, tail: &str) {
    let line = watcher.read_line();
    let pattern = format!("ts={{ts}} gid={{n}} {tail}\n");
    assert!(
        matches(&line, pattern.as_bytes()),
        "watch line\n  expected: {}\n  actual:   {}",
        escape(pattern.as_bytes()),
        escape(&line)
    );
}

/// Expects the next `connevents` line about the client port `port` to match `tail`, skipping
/// lines about other connections (memcached may still log the close of a connection from
/// before the watcher started, such as the harness's readiness probe).
#[track_caller]
fn expect_conn_line(watcher: &mut Client, port: u16, tail: &str) {
    let mark = format!(" rport={port} ");
    for _ in 0..10 {
        let line = watcher.read_line();
        if line.windows(mark.len()).any(|w| w == mark.as_bytes()) {
            let pattern = format!("ts={{ts}} gid={{n}} {tail}\n");
            assert!(
                matches(&line, pattern.as_bytes()),
                "watch line\n  expected: {}\n  actual:   {}",
                escape(pattern.as_bytes()),
                escape(&line)
            );
            return;
        }
    }
    panic!("no connevents line for port {port} in 10 lines");
}

/// Reads lines until one matches `ts={ts} gid={n} <tail>\n` (at most `max` lines).
#[track_caller]
fn find_line(watcher: &mut Client, tail: &str, max: usize) -> Vec<u8> {
    let pattern = format!("ts={{ts}} gid={{n}} {tail}\n");
    for _ in 0..max {
        let line = watcher.read_line();
        if matches(&line, pattern.as_bytes()) {
            return line;
        }
    }
    panic!(
        "no line matching {} in {max} lines",
        escape(pattern.as_bytes())
    );
}

/// Sends `request`, expects `reply`, then expects the watcher's next line to end in `tail`.
#[track_caller]
fn logged(c: &mut Client, w: &mut Client, request: &[u8], reply: &[u8], tail: &str) {
    c.roundtrip(request, reply);
    expect_line(w, tail);
}

/// A connection that has answered `watch <args>` with `OK`.
fn watcher(server: &TestServer, args: &str) -> Client {
    let mut w = server.connect();
    w.roundtrip(format!("watch{args}\r\n").as_bytes(), b"OK\r\n");
    w
}

/// Waits until `stats` shows `log_watchers` at `n` (memcached's logger thread updates it
/// within a second).
#[track_caller]
fn wait_watchers(c: &mut Client, n: u64) {
    let ok = wait_until(Duration::from_secs(5), || {
        stat_u64(&c.stats_sub(""), "log_watchers") == n
    });
    assert!(ok, "log_watchers never reached {n}");
}

#[test]
fn the_matcher_knows_its_placeholders() {
    assert!(matches(b"ts=1.5 gid=7 x=-1\n", b"ts={ts} gid={n} x={n}\n"));
    assert!(!matches(b"ts=1 gid=7\n", b"ts={ts} gid={n}\n"));
    assert!(!matches(b"ts=1.5 gid= \n", b"ts={ts} gid={n} \n"));
    assert!(!matches(b"ts=1.5 gid=7 extra\n", b"ts={ts} gid={n}\n"));
}

#[test]
fn watch_answers_ok_and_fetchers_log_hits_and_misses() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        // No argument: fetchers.
        let mut w = watcher(&server, "");
        let mut c = server.connect();
        c.roundtrip(b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n");
        c.roundtrip(b"get foo\r\n", b"VALUE foo 0 3\r\nbar\r\nEND\r\n");
        c.roundtrip(b"get nope\r\n", b"END\r\n");
        c.send(b"gets foo nope\r\n");
        let reply = c.read_until_end();
        assert!(
            matches(&reply, b"VALUE foo 0 3 {n}\r\nbar\r\nEND\r\n"),
            "{}",
            escape(&reply)
        );
        // The set's own lookup comes first, as memcached logs every lookup.
        expect_line(
            &mut w,
            "type=item_get key=foo status=not_found clsid=0 cfd={n} size=0",
        );
        expect_line(
            &mut w,
            "type=item_get key=foo status=found clsid={n} cfd={n} size=3",
        );
        expect_line(
            &mut w,
            "type=item_get key=nope status=not_found clsid=0 cfd={n} size=0",
        );
        // A multi-key get split across shards logs each shard's keys as that shard runs them:
        // the two lines may come in either order (their gids say which ran first).
        let mut pair = [w.read_line(), w.read_line()];
        pair.sort();
        let found =
            b"ts={ts} gid={n} type=item_get key=foo status=found clsid={n} cfd={n} size=3\n";
        let missing =
            b"ts={ts} gid={n} type=item_get key=nope status=not_found clsid=0 cfd={n} size=0\n";
        let in_order = matches(&pair[0], found) && matches(&pair[1], missing);
        let reversed = matches(&pair[1], found) && matches(&pair[0], missing);
        assert!(
            in_order || reversed,
            "{} {}",
            escape(&pair[0]),
            escape(&pair[1])
        );
        // Deletes, touches and incrs look their key up too: they show in this stream.
        logged(
            &mut c,
            &mut w,
            b"delete foo\r\n",
            b"DELETED\r\n",
            "type=item_get key=foo status=found clsid={n} cfd={n} size=3",
        );
        logged(
            &mut c,
            &mut w,
            b"touch foo 10\r\n",
            b"NOT_FOUND\r\n",
            "type=item_get key=foo status=not_found clsid=0 cfd={n} size=0",
        );
    });
}

/// A meta set logs the storage command of its mode (a plain set with a cas to compare as
/// `cas`), with the key decoded from base64, as memcached logs it.
#[test]
fn mutations_log_meta_sets_as_their_mode() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut w = watcher(&server, " mutations");
        let mut c = server.connect();
        // request, reply, the line's fields up to `ttl`, and its size
        let cases: [(&[u8], &[u8], &str, u32); 7] = [
            (
                b"ms a 1\r\nx\r\n",
                b"HD\r\n",
                "key=a status=stored cmd=set",
                1,
            ),
            (
                b"ms a 1 ME\r\nx\r\n",
                b"NS\r\n",
                "key=a status=not_stored cmd=add",
                1,
            ),
            (
                b"ms a 1 MA\r\ny\r\n",
                b"HD\r\n",
                "key=a status=stored cmd=append",
                2,
            ),
            (
                b"ms b 1 MA N0\r\ny\r\n",
                b"NS\r\n",
                "key=b status=not_stored cmd=append",
                1,
            ),
            (
                b"ms a 1 C999\r\nq\r\n",
                b"EX\r\n",
                "key=a status=exists cmd=cas",
                1,
            ),
            (
                b"ms zz 1 MR\r\nq\r\n",
                b"NS\r\n",
                "key=zz status=not_stored cmd=replace",
                1,
            ),
            (
                b"ms ZA== 2 b\r\nxx\r\n",
                b"HD\r\n",
                "key=d status=stored cmd=set",
                2,
            ),
        ];
        for (request, reply, fields, size) in cases {
            let tail = format!("type=item_store {fields} ttl=0 clsid={{n}} cfd={{n}} size={size}");
            logged(&mut c, &mut w, request, reply, &tail);
        }
    });
}

#[test]
fn mutations_log_too_large_meta_sets_without_an_item() {
    for_each_config(|args| {
        let mut args = args.to_vec();
        args.extend(["-I", "512k"]);
        let server = TestServer::start(&args);
        let mut w = watcher(&server, " mutations");
        let mut c = server.connect();
        let big = vec![b'x'; 600 * 1024];
        // request line (the value follows), the command the line names
        let cases: [(&str, &str); 4] = [
            ("ms big 614400 T60", "key=big status=too_large cmd=set"),
            ("ms big 614400 MA", "key=big status=too_large cmd=append"),
            ("ms big 614400 C99", "key=big status=too_large cmd=cas"),
            (
                "ms YmlnMg== 614400 b ME",
                "key=big2 status=too_large cmd=add",
            ),
        ];
        for (line, fields) in cases {
            let mut request = format!("{line}\r\n").into_bytes();
            request.extend_from_slice(&big);
            request.extend_from_slice(b"\r\n");
            // No item was made: no ttl and no size, whatever the request asked for.
            let tail = format!("type=item_store {fields} ttl=0 clsid={{n}} cfd={{n}} size=0");
            logged(
                &mut c,
                &mut w,
                &request,
                b"SERVER_ERROR object too large for cache\r\n",
                &tail,
            );
        }
    });
}

#[test]
fn mutations_log_storage_commands_but_not_deletes() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut w = watcher(&server, " mutations");
        let mut c = server.connect();
        logged(
            &mut c,
            &mut w,
            b"set foo 0 0 3\r\nbar\r\n",
            b"STORED\r\n",
            "type=item_store key=foo status=stored cmd=set ttl=0 clsid={n} cfd={n} size=3",
        );
        logged(
            &mut c,
            &mut w,
            b"add foo 0 0 1\r\nx\r\n",
            b"NOT_STORED\r\n",
            "type=item_store key=foo status=not_stored cmd=add ttl=0 clsid={n} cfd={n} size=1",
        );
        logged(
            &mut c,
            &mut w,
            b"add a 0 100 2\r\nxy\r\n",
            b"STORED\r\n",
            "type=item_store key=a status=stored cmd=add ttl={n} clsid={n} cfd={n} size=2",
        );
        logged(
            &mut c,
            &mut w,
            b"replace nope 0 0 1\r\nx\r\n",
            b"NOT_STORED\r\n",
            "type=item_store key=nope status=not_stored cmd=replace ttl=0 clsid={n} cfd={n} size=1",
        );
        logged(
            &mut c,
            &mut w,
            b"cas foo 0 0 1 999999\r\ny\r\n",
            b"EXISTS\r\n",
            "type=item_store key=foo status=exists cmd=cas ttl=0 clsid={n} cfd={n} size=1",
        );
        logged(
            &mut c,
            &mut w,
            b"cas nope 0 0 1 1\r\ny\r\n",
            b"NOT_FOUND\r\n",
            "type=item_store key=nope status=not_found cmd=cas ttl=0 clsid={n} cfd={n} size=1",
        );
        c.send(b"gets foo\r\n");
        let reply = c.read_until_end();
        let cas = String::from_utf8_lossy(&reply)
            .split_whitespace()
            .nth(4)
            .expect("gets shows a cas")
            .to_string();
        c.roundtrip(
            format!("cas foo 0 0 2 {cas}\r\nok\r\n").as_bytes(),
            b"STORED\r\n",
        );
        expect_line(
            &mut w,
            "type=item_store key=foo status=stored cmd=cas ttl=0 clsid={n} cfd={n} size=2",
        );
        // append keeps the item's expiry and grows its value: the line shows the stored item.
        logged(
            &mut c,
            &mut w,
            b"append foo 0 0 3\r\n!!!\r\n",
            b"STORED\r\n",
            "type=item_store key=foo status=stored cmd=append ttl=0 clsid={n} cfd={n} size=5",
        );
        logged(
            &mut c,
            &mut w,
            b"prepend nope 0 0 1\r\nx\r\n",
            b"NOT_STORED\r\n",
            "type=item_store key=nope status=not_stored cmd=prepend ttl=0 clsid={n} cfd={n} size=1",
        );
        // memcached 1.6.18 logs no mutation for delete, incr or touch: the next line is the set.
        c.roundtrip(b"delete foo\r\n", b"DELETED\r\n");
        logged(
            &mut c,
            &mut w,
            b"set n 0 0 1\r\n1\r\n",
            b"STORED\r\n",
            "type=item_store key=n status=stored cmd=set ttl=0 clsid={n} cfd={n} size=1",
        );
        c.roundtrip(b"incr n 5\r\n", b"6\r\n");
        c.roundtrip(b"touch n 0\r\n", b"TOUCHED\r\n");
        logged(
            &mut c,
            &mut w,
            b"set last 0 0 1\r\nz\r\n",
            b"STORED\r\n",
            "type=item_store key=last status=stored cmd=set ttl=0 clsid={n} cfd={n} size=1",
        );
    });
}

#[test]
fn unknown_watch_arguments_are_errors_and_the_connection_stays_usable() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        // 1.6.18 has no `deletions` stream.
        c.roundtrip(b"watch deletions\r\n", b"ERROR\r\n");
        c.roundtrip(b"watch fetchers bogus\r\n", b"ERROR\r\n");
        c.roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");
        let mut stats = server.connect();
        assert_eq!(stat_u64(&stats.stats_sub(""), "log_watchers"), 0);
        // Every kind memcached names is accepted.
        let mut w = server.connect();
        w.roundtrip(
            b"watch rawcmds evictions fetchers mutations sysevents connevents proxyreqs proxyevents proxyuser\r\n",
            b"OK\r\n",
        );
    });
}

#[test]
fn watch_can_be_disabled() {
    let server = TestServer::start(&["-W"]);
    let mut c = server.connect();
    c.roundtrip(b"watch\r\n", b"CLIENT_ERROR watch commands not allowed\r\n");
    c.roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");
}

#[test]
fn evictions_are_logged() {
    for_each_config(|args| {
        let mut args = args.to_vec();
        args.extend(["-m", "8"]);
        let server = TestServer::start(&args);
        let mut w = watcher(&server, " evictions");
        let mut c = server.connect();
        let value = vec![b'v'; 400_000];
        for i in 0..60 {
            let mut req = format!("set k{i} 0 0 {}\r\n", value.len()).into_bytes();
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
            c.roundtrip(&req, b"STORED\r\n");
        }
        let line = find_line(
            &mut w,
            "type=eviction key=k{n} fetch=no ttl=-1 la={n} clsid={n} size=400000",
            1,
        );
        // Each shard evicts its own oldest first. With one shard that is k0; with more, the
        // first eviction is on whichever shard filled first, so it names that shard's oldest.
        let one_shard = args.windows(2).any(|w| w[0] == "-t" && w[1] == "1");
        let key_at = line.windows(4).position(|x| x == b"key=").unwrap() + 4;
        let key_len = line[key_at..].iter().position(|&b| b == b' ').unwrap();
        let key = &line[key_at..key_at + key_len];
        if one_shard {
            assert_eq!(key, b"k0", "the oldest goes first: {}", escape(&line));
        }
        let mut get = b"get ".to_vec();
        get.extend_from_slice(key);
        get.extend_from_slice(b"\r\n");
        c.roundtrip(&get, b"END\r\n");
        assert!(stat_u64(&c.stats_sub(""), "evictions") > 0);
    });
}

/// A line's `cfd` is the client's id in `stats conns` (memcached's descriptor for both), and
/// `stats conns` lists connections in id order (memcached: by descriptor).
#[test]
fn cfd_is_the_connection_id_of_stats_conns() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut w = watcher(&server, " fetchers mutations");
        let mut c = server.connect();
        let port = c.stream().local_addr().unwrap().port();
        let (_, raw) = c.stats_raw("conns");
        let text = String::from_utf8(raw).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter_map(|l| l.split(':').next()?.parse().ok())
            .collect();
        assert!(
            ids.windows(2).all(|p| p[0] <= p[1]),
            "not in id order: {text}"
        );
        let own = format!(":addr tcp:127.0.0.1:{port}");
        let id = text
            .lines()
            .find(|l| l.ends_with(&own))
            .and_then(|l| l.strip_prefix("STAT ")?.split(':').next())
            .unwrap_or_else(|| panic!("no entry for port {port}: {text}"))
            .to_string();
        c.roundtrip(b"set cfdkey 0 0 1\r\nx\r\n", b"STORED\r\n");
        let line = find_line(
            &mut w,
            "type=item_store key=cfdkey status=stored cmd=set ttl=0 clsid={n} cfd={n} size=1",
            20,
        );
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.trim_end().ends_with(&format!(" cfd={id} size=1")),
            "{text}"
        );
    });
}

#[test]
fn connevents_log_new_and_closed_connections_with_reasons() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut w = watcher(&server, " connevents");
        let mut c = server.connect();
        let port = c.stream().local_addr().unwrap().port();
        c.roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");
        c.send(b"quit\r\n");
        c.expect_closed();
        expect_conn_line(
            &mut w,
            port,
            &format!("type=conn_new rip=127.0.0.1 rport={port} transport=tcp cfd={{n}}"),
        );
        expect_conn_line(
            &mut w,
            port,
            &format!(
                "type=conn_close rip=127.0.0.1 rport={port} transport=tcp reason=normal cfd={{n}}"
            ),
        );
        // An HTTP request is a protocol error: closed with reason=error.
        let mut h = server.connect();
        let port = h.stream().local_addr().unwrap().port();
        h.send(b"GET / HTTP/1.1\r\n\r\n");
        h.expect_closed();
        expect_conn_line(
            &mut w,
            port,
            &format!("type=conn_new rip=127.0.0.1 rport={port} transport=tcp cfd={{n}}"),
        );
        expect_conn_line(
            &mut w,
            port,
            &format!(
                "type=conn_close rip=127.0.0.1 rport={port} transport=tcp reason=error cfd={{n}}"
            ),
        );
        // A client that just goes away closes normally.
        let g = server.connect();
        let port = g.stream().local_addr().unwrap().port();
        g.stream().shutdown(Shutdown::Both).unwrap();
        drop(g);
        expect_conn_line(
            &mut w,
            port,
            &format!("type=conn_new rip=127.0.0.1 rport={port} transport=tcp cfd={{n}}"),
        );
        expect_conn_line(
            &mut w,
            port,
            &format!(
                "type=conn_close rip=127.0.0.1 rport={port} transport=tcp reason=normal cfd={{n}}"
            ),
        );
    });
}

#[test]
fn long_keys_are_uri_encoded() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut w = watcher(&server, " mutations");
        let mut c = server.connect();
        let key = "#".repeat(250);
        c.roundtrip(
            format!("set {key} 0 0 9\r\nmemcached\r\n").as_bytes(),
            b"STORED\r\n",
        );
        let encoded = "%23".repeat(250);
        expect_line(
            &mut w,
            &format!("type=item_store key={encoded} status=stored cmd=set ttl=0 clsid={{n}} cfd={{n}} size=9"),
        );
    });
}

#[test]
fn two_watchers_see_only_their_kinds() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut fetchers = watcher(&server, " fetchers");
        let mut mutations = watcher(&server, " mutations");
        let mut c = server.connect();
        wait_watchers(&mut c, 2);
        c.roundtrip(b"set vfoo 0 0 4\r\nvbar\r\n", b"STORED\r\n");
        c.roundtrip(b"get vfoo\r\n", b"VALUE vfoo 0 4\r\nvbar\r\nEND\r\n");
        c.roundtrip(b"set vend 0 0 1\r\nx\r\n", b"STORED\r\n");
        expect_line(
            &mut fetchers,
            "type=item_get key=vfoo status=not_found clsid=0 cfd={n} size=0",
        );
        expect_line(
            &mut fetchers,
            "type=item_get key=vfoo status=found clsid={n} cfd={n} size=4",
        );
        expect_line(
            &mut fetchers,
            "type=item_get key=vend status=not_found clsid=0 cfd={n} size=0",
        );
        expect_line(
            &mut mutations,
            "type=item_store key=vfoo status=stored cmd=set ttl=0 clsid={n} cfd={n} size=4",
        );
        expect_line(
            &mut mutations,
            "type=item_store key=vend status=stored cmd=set ttl=0 clsid={n} cfd={n} size=1",
        );
        // Both at once on one connection.
        let mut both = watcher(&server, " fetchers mutations");
        wait_watchers(&mut c, 3);
        c.roundtrip(b"set wfoo 0 0 2\r\nab\r\n", b"STORED\r\n");
        expect_line(
            &mut both,
            "type=item_get key=wfoo status=not_found clsid=0 cfd={n} size=0",
        );
        expect_line(
            &mut both,
            "type=item_store key=wfoo status=stored cmd=set ttl=0 clsid={n} cfd={n} size=2",
        );
    });
}

#[test]
fn a_watcher_sees_events_of_keys_on_every_shard() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut w = watcher(&server, "");
        // Ten keys: with two shards both own some (the chance that one owns all is 2^-9 per
        // seeded hash; the keys are fixed, so this is checked once, not a flake).
        let mut c = server.connect();
        for i in 0..10 {
            c.roundtrip(format!("get spread{i}\r\n").as_bytes(), b"END\r\n");
        }
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..10 {
            let line = String::from_utf8(w.read_line()).unwrap();
            let key = line.split(' ').nth(3).unwrap().to_string();
            seen.push(key);
        }
        seen.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("key=spread{i}")).collect();
        want.sort();
        assert_eq!(seen, want);
        // A multi-key get split across shards logs every key.
        c.send(b"get spread0 spread1 spread2 spread3 spread4 spread5\r\n");
        assert_eq!(c.read_until_end(), b"END\r\n");
        for _ in 0..6 {
            find_line(
                &mut w,
                "type=item_get key=spread{n} status=not_found clsid=0 cfd={n} size=0",
                1,
            );
        }
    });
}

#[test]
fn input_on_a_watcher_is_ignored() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut w = watcher(&server, " mutations");
        w.send(b"stats\r\nversion\r\nfoo bar\r\n");
        let mut c = server.connect();
        logged(
            &mut c,
            &mut w,
            b"set after 0 0 1\r\nx\r\n",
            b"STORED\r\n",
            "type=item_store key=after status=stored cmd=set ttl=0 clsid={n} cfd={n} size=1",
        );
    });
}

#[test]
fn log_watchers_counts_watchers_until_they_disconnect() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        assert_eq!(stat_u64(&c.stats_sub(""), "log_watchers"), 0);
        let w1 = watcher(&server, " fetchers");
        wait_watchers(&mut c, 1);
        let w2 = watcher(&server, " mutations");
        wait_watchers(&mut c, 2);
        drop(w1);
        wait_watchers(&mut c, 1);
        drop(w2);
        wait_watchers(&mut c, 0);
        // Events with nobody watching go nowhere and the server serves on.
        c.roundtrip(b"set x 0 0 1\r\nx\r\n", b"STORED\r\n");
        let mut w3 = watcher(&server, " mutations");
        wait_watchers(&mut c, 1);
        c.roundtrip(b"set y 0 0 1\r\ny\r\n", b"STORED\r\n");
        expect_line(
            &mut w3,
            "type=item_store key=y status=stored cmd=set ttl=0 clsid={n} cfd={n} size=1",
        );
        // memcached's logger thread adds to these counters a moment after the line goes out.
        let counted = wait_until(Duration::from_secs(5), || {
            let stats = c.stats_sub("");
            stat_u64(&stats, "log_watcher_sent") >= 1 && stat_u64(&stats, "log_worker_written") >= 1
        });
        assert!(counted, "{:?}", c.stats_sub(""));
    });
}

#[test]
fn a_watcher_that_stops_reading_loses_lines_then_says_so() {
    for_each_config(|args| {
        let mut args = args.to_vec();
        args.extend(["-o", "watcher_logbuf_size=8"]);
        let server = TestServer::start(&args);
        let mut w = watcher(&server, "");
        let mut c = server.connect();
        wait_watchers(&mut c, 1);
        // Far more log than the socket buffers and the watcher's 8 KB hold, while the watcher
        // reads nothing; the client is answered throughout.
        let spacer = "X".repeat(180);
        let mut batch = Vec::new();
        for i in 0..100 {
            batch.extend_from_slice(format!("get foo{i}{spacer}\r\n").as_bytes());
        }
        for _ in 0..800 {
            c.send(&batch);
            let reply = c
                .read_n(100 * 5)
                .unwrap_or_else(|(got, e)| panic!("client starved: {e}; got {}", escape(&got)));
            assert_eq!(reply, b"END\r\n".repeat(100));
        }
        assert!(wait_until(Duration::from_secs(5), || {
            stat_u64(&c.stats_sub(""), "log_watcher_skipped") > 0
        }));
        // Now read: once room frees, the next line is preceded by `skipped=<n>`.
        let mut found = false;
        for i in 0..2_000_000 {
            if i % 100 == 0 {
                c.roundtrip(b"get foob\r\n", b"END\r\n");
            }
            let line = w.read_line();
            if line.starts_with(b"skipped=") {
                assert!(matches(&line, b"skipped={n}\n"), "{}", escape(&line));
                found = true;
                break;
            }
        }
        assert!(found, "no skipped= line");
        c.roundtrip(b"get foob\r\n", b"END\r\n");
        let line = w.read_line();
        let flood = format!(
            "ts={{ts}} gid={{n}} type=item_get key=foo{{n}}{spacer} status=not_found clsid=0 cfd={{n}} size=0\n"
        );
        let after =
            b"ts={ts} gid={n} type=item_get key=foob status=not_found clsid=0 cfd={n} size=0\n";
        assert!(
            matches(&line, flood.as_bytes()) || matches(&line, after),
            "a real line follows: {}",
            escape(&line)
        );
    });
}
