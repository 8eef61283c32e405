//! Startup: bad flags exit non-zero with a one-line reason, and the io_uring probe's fallback
//! to epoll (forced through a test hook, since io_uring cannot be blocked from inside a test).

use std::process::{Command, Stdio};

mod common;
use common::{memcached_mode, skip_in_memcached_mode, TestServer};

/// Runs the server with `args`, expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_corecache"))
        .args(["-l", "127.0.0.1", "-p", "0"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run corecache");
    assert!(!out.status.success(), "{args:?} started");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err:?}"
    );
    err
}

#[test]
fn bad_flags_exit_with_one_line_reasons() {
    if memcached_mode() {
        return;
    }
    assert!(refused(&["-U", "70000"], &[]).contains("udp-port"));
    assert!(refused(&["-t", "0"], &[]).contains("-t 0"));
    assert!(refused(&["-I", "2000m"], &[]).contains("-I"));
    assert!(refused(&["-f", "0.5"], &[]).contains("-f"));
    assert!(refused(&["-m", "0"], &[]).contains("-m"));
    assert!(refused(&["--cpus", "x"], &[]).contains("--cpus"));
    assert!(refused(&["--io-backend", "kqueue"], &[]).contains("kqueue"));
}

#[test]
#[cfg(feature = "test-hooks")]
fn auto_falls_back_to_epoll_and_says_why() {
    if memcached_mode() {
        return;
    }
    std::env::set_var("CORECACHE_TEST_DENY_URING", "1");
    let server = TestServer::start(&["-t", "2", "--io-backend", "auto"]);
    std::env::remove_var("CORECACHE_TEST_DENY_URING");
    let mut c = server.connect();
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n");
    let settings = c.stats_sub("settings");
    assert_eq!(
        settings.get("io_backend").map(String::as_str),
        Some("epoll")
    );
    let err = server.stderr_holding("io_uring unavailable");
    assert!(
        err.contains("io_uring unavailable"),
        "no reason logged: {err:?}"
    );
}

#[test]
#[cfg(feature = "test-hooks")]
fn uring_when_asked_for_refuses_to_start_without_it() {
    if memcached_mode() {
        return;
    }
    let err = refused(
        &["--io-backend", "uring"],
        &[("CORECACHE_TEST_DENY_URING", "1")],
    );
    assert!(err.contains("io_uring unavailable"), "{err}");
}

/// `-L`: item memory comes from 2 MiB-aligned regions advised for transparent huge pages (the
/// `hg` flag in smaps) and serves items as usual; without it, no region is advised.
#[test]
fn large_pages_flag_advises_item_memory() {
    if memcached_mode() {
        return; // memcached's -L preallocates all of -m; a different feature
    }
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"));
    for (flag, expect_advised) in [(Some("-L"), thp), (None, false)] {
        for backend in ["epoll", "uring"] {
            let mut args = vec!["-t", "2", "-m", "64", "--io-backend", backend];
            args.extend(flag);
            let server = TestServer::start(&args);
            let mut c = server.connect();
            let value = "x".repeat(1000);
            let mut req = Vec::new();
            for i in 0..2000 {
                req.extend_from_slice(format!("set lp{i} 0 0 1000\r\n{value}\r\n").as_bytes());
            }
            c.roundtrip(&req, &b"STORED\r\n".repeat(2000));
            for i in [0, 999, 1999] {
                c.roundtrip(
                    format!("get lp{i}\r\n").as_bytes(),
                    format!("VALUE lp{i} 0 1000\r\n{value}\r\nEND\r\n").as_bytes(),
                );
            }
            let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", server.pid()))
                .expect("read smaps");
            let advised = smaps
                .lines()
                .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "hg"))
                .count();
            if expect_advised {
                // One region per shard at least (2,000 items of 1 KB fill two pages or more).
                assert!(advised >= 2, "{args:?}: {advised} advised regions");
            } else {
                assert_eq!(advised, 0, "{args:?}: {advised} advised regions");
            }
        }
    }
}

// ---- memcached's other flags ----

use std::time::{Duration, Instant};

use common::{is_root, process_gone, stat_u64, wait_until, Client};

/// The `Uid:` or `Gid:` fields of /proc/<pid>/status (real, effective, saved, filesystem).
fn proc_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .expect("field")
        .split_whitespace()
        .map(|v| v.parse().expect("id"))
        .collect()
}

fn proc_status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn user_flag_drops_root_after_binding() {
    if memcached_mode() || !is_root() {
        eprintln!("skipped: needs corecache and root");
        return;
    }
    let server = TestServer::start(&["-t", "2", "-u", "nobody"]);
    let pid = server.pid();
    let uids = proc_ids(pid, "Uid:");
    assert_eq!(uids.len(), 4);
    assert!(uids.iter().all(|&u| u == uids[0] && u != 0), "{uids:?}");
    let gids = proc_ids(pid, "Gid:");
    assert!(gids.iter().all(|&g| g == gids[0] && g != 0), "{gids:?}");
    assert_eq!(
        proc_status_field(pid, "Groups:"),
        "",
        "supplementary groups kept"
    );
    // Every executor thread runs as the user too.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let tid: u32 = task.unwrap().file_name().to_string_lossy().parse().unwrap();
        assert_eq!(proc_ids(tid, "Uid:"), uids, "thread {tid}");
    }
    let mut c = server.connect();
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n");
}

#[test]
fn unknown_user_is_refused_as_root() {
    if memcached_mode() || !is_root() {
        eprintln!("skipped: needs corecache and root");
        return;
    }
    let err = refused(&["-u", "no-such-user-corecache"], &[]);
    assert!(
        err.contains("can't find the user no-such-user-corecache"),
        "{err}"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_corecache"))
        .args(["-l", "127.0.0.1", "-p", "0", "-u", "no-such-user-corecache"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run corecache");
    assert_eq!(status.code(), Some(67), "memcached's EX_NOUSER");
}

/// Kills a daemon (not our child) if a test fails before stopping it.
struct DaemonGuard(Option<libc::pid_t>);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: kill(2) on the daemon this test started; it takes no memory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn daemon_detaches_writes_its_pid_and_serves() {
    if memcached_mode() {
        return;
    }
    let pidfile = std::env::temp_dir().join(format!("corecache-daemon-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    // The parent exits once the daemon serves, after printing the daemon's listening line.
    let out = Command::new(env!("CARGO_BIN_EXE_corecache"))
        .args(["-l", "127.0.0.1", "-p", "0", "-t", "1", "-d", "-P"])
        .arg(&pidfile)
        .stdin(Stdio::null())
        .output()
        .expect("run corecache -d");
    let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
    let pid: u32 = text.trim().parse().unwrap_or(0);
    let mut guard = DaemonGuard((pid > 0).then_some(pid as libc::pid_t));
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pid > 0, "pidfile holds {text:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let addr = stdout
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("no listening line: {stdout:?}"));
    assert!(!process_gone(pid), "daemon {pid} is not running");
    // A new session led by the daemon, working directory `/`.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session id (setsid)");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        std::path::Path::new("/")
    );
    let mut c = Client::connect(addr.parse().unwrap());
    c.roundtrip(b"set d 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.roundtrip(b"get d\r\n", b"VALUE d 0 1\r\nx\r\nEND\r\n");
    // SIGTERM stops it cleanly: it exits and removes its pidfile.
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    assert!(
        wait_until(Duration::from_secs(10), || process_gone(pid)),
        "daemon did not stop"
    );
    guard.0 = None;
    assert!(!pidfile.exists(), "pidfile left behind");
}

#[test]
fn disable_flush_all_refuses_flush() {
    let server = TestServer::start(&["-t", "2", "-F"]);
    let mut c = server.connect();
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    c.roundtrip(
        b"flush_all\r\nflush_all 10\r\nflush_all noreply\r\nget k\r\n",
        b"CLIENT_ERROR flush_all not allowed\r\nCLIENT_ERROR flush_all not allowed\r\n\
VALUE k 0 1\r\nv\r\nEND\r\n",
    );
    // Binary flush and flushq: an auth error, quiet or not ("Auth failure.").
    for opcode in [0x08u8, 0x18] {
        let mut req = vec![0x80, opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        req.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        req.extend_from_slice(&[0; 8]);
        let mut reply = vec![0x81, opcode, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 13];
        reply.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        reply.extend_from_slice(&[0; 8]);
        reply.extend_from_slice(b"Auth failure.");
        server.connect().roundtrip(&req, &reply);
    }
    let settings = c.stats_sub("settings");
    assert_eq!(settings["flush_enabled"], "no");
    c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n");
}

#[test]
fn disable_evictions_answers_out_of_memory_and_keeps_items() {
    let server = TestServer::start(&["-t", "1", "-m", "2", "-M"]);
    let mut c = server.connect();
    let value = "x".repeat(10_000);
    let mut stored = 0;
    loop {
        c.send(format!("set k{stored} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
        let line = c.read_line();
        if line == b"STORED\r\n" {
            stored += 1;
            assert!(stored < 1000, "2 MB never filled");
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&line),
            "SERVER_ERROR out of memory storing object\r\n"
        );
        break;
    }
    assert!(stored > 10, "only {stored} items fit");
    for i in 0..stored {
        c.roundtrip(
            format!("get k{i}\r\n").as_bytes(),
            format!("VALUE k{i} 0 {}\r\n{value}\r\nEND\r\n", value.len()).as_bytes(),
        );
    }
    let stats = c.stats_sub("");
    assert_eq!(stat_u64(&stats, "evictions"), 0);
    assert_eq!(stat_u64(&stats, "curr_items"), stored);
    assert!(stat_u64(&stats, "store_no_memory") >= 1);
    let items = c.stats_sub("items");
    assert!(
        items
            .iter()
            .any(|(k, v)| k.ends_with(":outofmemory") && v != "0"),
        "{items:?}"
    );
    assert_eq!(c.stats_sub("settings")["evictions"], "off");
}

#[test]
fn disable_dumping_refuses_metadump_and_cachedump() {
    let server = TestServer::start(&["-t", "2", "-X"]);
    let mut c = server.connect();
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    c.roundtrip(
        b"lru_crawler metadump all\r\n",
        b"ERROR metadump not allowed\r\n",
    );
    c.roundtrip(
        b"lru_crawler metadump 1\r\n",
        b"ERROR metadump not allowed\r\n",
    );
    c.roundtrip(
        b"stats cachedump 1 1\r\n",
        b"CLIENT_ERROR stats cachedump not allowed\r\n",
    );
    assert_eq!(c.stats_sub("settings")["dump_enabled"], "no");
    let other = TestServer::start(&["-t", "1"]);
    assert_eq!(other.stats_sub("settings")["dump_enabled"], "yes");
}

#[test]
fn backlog_and_requests_per_event_flags() {
    common::for_each_config(|config| {
        let mut args = config.to_vec();
        args.extend_from_slice(&["-b", "77", "-R", "1"]);
        let server = TestServer::start(&args);
        let settings = server.stats_sub("settings");
        assert_eq!(settings["tcp_backlog"], "77");
        assert_eq!(settings["reqs_per_event"], "1");
        if !server.is_memcached() && std::path::Path::new("/usr/bin/ss").exists() {
            // A listening socket's Send-Q is its backlog.
            let port = server.addr().port().to_string();
            let out = Command::new("/usr/bin/ss")
                .args(["-ltnH", "sport", "=", &format!(":{port}")])
                .output()
                .expect("ss");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(!text.trim().is_empty(), "ss lists no listener on {port}");
            for line in text.lines() {
                assert_eq!(line.split_whitespace().nth(2), Some("77"), "{text}");
            }
        }
        // One request per turn still answers a whole pipeline, in order, also when the
        // client has closed its side before the server got through it.
        let mut c = server.connect();
        let mut req = Vec::new();
        let mut expect = Vec::new();
        for i in 0..100 {
            req.extend_from_slice(
                format!("set r{i} 0 0 1\r\n{}\r\nget r{i}\r\n", i % 10).as_bytes(),
            );
            expect.extend_from_slice(
                format!("STORED\r\nVALUE r{i} 0 1\r\n{}\r\nEND\r\n", i % 10).as_bytes(),
            );
        }
        c.send(&req);
        c.stream().shutdown(std::net::Shutdown::Write).unwrap();
        c.read_exact_reply(&expect);
        assert!(c.expect_closed().is_empty());
    });
}

#[test]
fn prefix_delimiter_turns_detail_on() {
    let server = TestServer::start(&["-t", "2", "-D", "#"]);
    let mut c = server.connect();
    let settings = c.stats_sub("settings");
    assert_eq!(settings["stat_key_prefix"], "#");
    assert_eq!(settings["detail_enabled"], "yes");
    c.roundtrip(
        b"set a#1 0 0 1\r\nx\r\nget a#1\r\nget b:2\r\nstats detail dump\r\n",
        b"STORED\r\nVALUE a#1 0 1\r\nx\r\nEND\r\nEND\r\nPREFIX a get 1 hit 1 set 1 del 0\r\nEND\r\n",
    );
}

#[test]
fn slab_min_size_sets_the_smallest_chunk() {
    if memcached_mode() {
        return; // memcached's classes start at its 48-byte header plus -n
    }
    for (args, shown, smallest) in [(&[][..], "8", 24u64), (&["-n", "48"][..], "48", 64)] {
        let mut all = vec!["-t", "1"];
        all.extend_from_slice(args);
        let server = TestServer::start(&all);
        let mut c = server.connect();
        assert_eq!(c.stats_sub("settings")["chunk_size"], shown, "{args:?}");
        c.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
        let slabs = c.stats_sub("slabs");
        let min = slabs
            .iter()
            .filter(|(k, _)| k.ends_with(":chunk_size"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .filter(|&v| v > 0)
            .min();
        assert_eq!(min, Some(smallest), "{args:?}");
        // The one-byte item sits in the smallest class.
        let used = slabs
            .iter()
            .find(|(k, v)| k.ends_with(":used_chunks") && *v == "1")
            .map(|(k, _)| k.split(':').next().unwrap().to_string())
            .expect("a used chunk");
        assert_eq!(stat_u64(&slabs, &format!("{used}:chunk_size")), smallest);
    }
}

/// A shard whose share of `-m` holds 256 pages takes two slab classes per growth factor above
/// the 8-byte steps: a 1 KB value's item (1,045 bytes) gets a 1,096-byte chunk there, where a
/// 64-page shard's classes (one per factor from 24 bytes) give it 1,184.
#[test]
fn a_large_shard_splits_each_growth_step() {
    if memcached_mode() {
        return; // memcached's classes do not depend on -m
    }
    for (memory_mb, chunk) in [("64", 1184), ("256", 1096)] {
        let server = TestServer::start(&["-t", "1", "-m", memory_mb]);
        let mut c = server.connect();
        let mut set = b"set k1024 0 0 1024\r\n".to_vec();
        set.extend_from_slice(&[b'v'; 1024]);
        set.extend_from_slice(b"\r\n");
        c.roundtrip(&set, b"STORED\r\n");
        let slabs = c.stats_sub("slabs");
        let used = slabs
            .iter()
            .find(|(k, v)| k.ends_with(":used_chunks") && *v == "1")
            .map(|(k, _)| k.split(':').next().unwrap().to_string())
            .expect("a used chunk");
        assert_eq!(
            stat_u64(&slabs, &format!("{used}:chunk_size")),
            chunk,
            "-m {memory_mb}"
        );
    }
}

#[test]
fn protocol_flag_restricts_connections() {
    let get_a = [
        0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, b'a',
    ];
    // ascii: a binary frame is read as text (one unknown command up to the newline).
    let server = TestServer::start(&["-t", "2", "-B", "ascii"]);
    let mut c = server.connect();
    let mut req = get_a.to_vec();
    req.extend_from_slice(b"\r\nversion\r\n");
    c.roundtrip(&req, b"ERROR\r\nVERSION 1.6.18\r\n");
    assert_eq!(c.stats_sub("settings")["binding_protocol"], "ascii");
    if memcached_mode() {
        // The harness's readiness probe speaks text; these bytes were checked by hand against
        // memcached -B binary (the same reply, and a close after 24 bytes of text).
        return;
    }
    // binary: a binary get works; text is an invalid header, and the connection closes.
    let server = TestServer::start(&["-t", "2", "-B", "binary"]);
    let mut reply = vec![0x81, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7];
    reply.extend_from_slice(&[0; 8]);
    reply.extend_from_slice(b"Not found");
    server.connect().roundtrip(&get_a, &reply);
    let mut c = server.connect();
    c.send(b"get aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    assert!(c.expect_closed().is_empty());
    let auto = TestServer::start(&["-t", "1"]);
    assert_eq!(
        auto.stats_sub("settings")["binding_protocol"],
        "auto-negotiate"
    );
}

#[test]
fn idle_timeout_closes_idle_connections() {
    let server = TestServer::start(&["-t", "2", "-o", "idle_timeout=1"]);
    let mut busy = server.connect();
    assert_eq!(busy.stats_sub("settings")["idle_timeout"], "1");
    // With a timeout set, `stats` counts the connections it closed.
    assert_eq!(stat_u64(&busy.stats_sub(""), "idle_kicks"), 0);
    let started = Instant::now();
    let mut idle = server.connect();
    // Closed without a reply (bounded by the client's read timeout, 10 s).
    assert!(idle.expect_closed().is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed too early"
    );
    // The counter of connections drops with it.
    assert!(wait_until(Duration::from_secs(10), || {
        stat_u64(&server.stats(), "curr_connections") <= 2
    }));
    assert!(stat_u64(&server.stats(), "idle_kicks") >= 1);
    // Without one, memcached does not list the field.
    let plain = TestServer::start(&["-t", "1"]);
    assert!(!plain.stats().contains_key("idle_kicks"));
}

/// `-o no_modern` (memcached's 1.4 defaults) turns the crawler and the automover off;
/// `no_slab_automove` the automover.
#[test]
fn no_modern_turns_the_crawler_and_automove_off() {
    let server = TestServer::start(&["-t", "1", "-o", "no_modern"]);
    let settings = server.stats_sub("settings");
    assert_eq!(settings["lru_crawler"], "no");
    assert_eq!(settings["slab_automove"], "0");
    let server = TestServer::start(&["-t", "1", "-o", "no_slab_automove"]);
    assert_eq!(server.stats_sub("settings")["slab_automove"], "0");
}

#[test]
fn ignored_extended_options_start_with_one_notice() {
    if memcached_mode() {
        return;
    }
    let server = TestServer::start(&[
        "-t",
        "1",
        "-o",
        "modern,hot_lru_pct=20,lru_crawler_sleep=50",
    ]);
    // Honoured suboptions are not in the notice; they show in `stats settings`.
    assert_eq!(server.stats_sub("settings")["lru_crawler_sleep"], "50");
    server
        .connect()
        .roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");
    assert!(wait_until(Duration::from_secs(5), || server
        .stderr_text()
        .contains("ignoring -o options")));
    let err = server.stderr_text();
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("ignoring -o")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for name in ["modern", "hot_lru_pct"] {
        assert!(lines[0].contains(name), "{name}: {err}");
    }
    assert!(!lines[0].contains("lru_crawler_sleep"), "{err}");
}

/// `-o hot_lru_pct=`, `warm_lru_pct=`, `hot_max_factor=`, `warm_max_factor=` are read as
/// memcached reads them (`atoi`, `atof`: trailing junk ignored) and show in `stats settings`,
/// where `lru tune` then changes them; memcached shows the same.
#[test]
fn lru_settings_from_the_command_line_show_in_stats_settings() {
    let server = TestServer::start(&[
        "-t",
        "1",
        "-o",
        "hot_lru_pct=30x,warm_lru_pct=50,hot_max_factor=1.5,warm_max_factor=3e0",
    ]);
    let mut c = server.connect();
    let settings = c.stats_sub("settings");
    for (name, value) in [
        ("hot_lru_pct", "30"),
        ("warm_lru_pct", "50"),
        ("hot_max_factor", "1.50"),
        ("warm_max_factor", "3.00"),
    ] {
        assert_eq!(settings[name], value, "{name}");
    }
    c.roundtrip(b"lru tune 10 20 0.5 1\r\n", b"OK\r\n");
    assert_eq!(c.stats_sub("settings")["warm_lru_pct"], "20");
}

#[test]
fn unserved_flags_and_unknown_suboptions_are_refused() {
    if memcached_mode() {
        return;
    }
    for (args, expect) in [
        (&["-N", "1"][..], "-N:"),
        (
            &[
                "-e",
                "/tmp/corecache.mem",
                "--log-dir",
                "/tmp/corecache.log",
            ],
            "-e and --log-dir",
        ),
        (&["-s", ""], "-s: the UNIX socket path is empty"),
        // -S is served (tests/sasl.rs): without a password file it fails startup.
        (&["-S"], "-S: set MEMCACHED_SASL_PWDB"),
        (&["--enable-sasl"], "-S: set MEMCACHED_SASL_PWDB"),
        // -Y is served (tests/auth.rs): a file that cannot be read fails startup.
        (
            &["-Y", "/nonexistent/corecache-auth"],
            "Could not open authfile [/nonexistent/corecache-auth] for reading",
        ),
        // -Z is served (tests/tls.rs): without a certificate it fails startup.
        (&["-Z"], "Error loading the certificate chain: (null) : "),
        (&["-N", "1"], "-N:"),
        (&["-o", "bogus"], "Illegal suboption \"bogus\""),
        (&["-o", "idle_timeout"], "idle_timeout"),
        (
            &["-o", "slab_automove=3"],
            "slab_automove must be between 0 and 2",
        ),
        (
            &["-o", "lru_crawler_sleep=1000001"],
            "LRU crawler sleep must be between 0 and 1 second",
        ),
        (
            &["-o", "lru_crawler_tocrawl=x"],
            "lru_crawler_tocrawl takes a numeric 32bit value",
        ),
        // memcached's checks of its segmented-LRU settings (read with atoi and atof).
        (&["-o", "hot_lru_pct=0"], "hot_lru_pct must be > 1 and < 80"),
        (
            &["-o", "warm_lru_pct=x"],
            "warm_lru_pct must be > 1 and < 80",
        ),
        (&["-o", "hot_lru_pct"], "Missing hot_lru_pct argument"),
        // memcached's range for the hash table's starting size (read with atoi).
        (
            &["-o", "hashpower=11"],
            "Initial hashtable multiplier of 11 is too low",
        ),
        (
            &["-o", "hashpower=x"],
            "Initial hashtable multiplier of 0 is too low",
        ),
        (
            &["-o", "hashpower=33"],
            "Initial hashtable multiplier of 33 is too high",
        ),
        (
            &["-o", "hashpower"],
            "Missing numeric argument for hashpower",
        ),
        (&["-o", "warm_max_factor=0"], "warm_max_factor must be > 0"),
        (&["-o", "hot_max_factor=-1"], "hot_max_factor must be > 0"),
        (
            &["-o", "hot_lru_pct=41"],
            "hot_lru_pct + warm_lru_pct cannot be more than 80% combined",
        ),
        (&["-B", "foo"], "foo"),
        (&["-R", "0"], "-R 0"),
        (&["-D", "ab"], "-D"),
    ] {
        let err = refused(args, &[]);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn license_prints_and_exits() {
    if memcached_mode() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_corecache"))
        .arg("-i")
        .output()
        .expect("run corecache -i");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Apache-2.0"));
}

#[test]
fn lock_memory_and_coredumps() {
    if memcached_mode() {
        return;
    }
    let server = TestServer::start(&["-t", "1", "-m", "8", "-k", "-r"]);
    let pid = server.pid();
    let locked_kb: u64 = proc_status_field(pid, "VmLck:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0);
    let err = if locked_kb > 0 {
        server.stderr_text()
    } else {
        server.stderr_holding("mlockall() failed")
    };
    if is_root() {
        assert!(locked_kb > 0, "nothing locked; stderr: {err}");
    } else {
        assert!(locked_kb > 0 || err.contains("mlockall() failed"), "{err}");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    // soft == hard, and not 0.
    assert_eq!(fields[4], fields[5], "{core}");
    assert_ne!(fields[4], "0", "{core}");
    server
        .connect()
        .roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");
}

/// `MEMCACHED_PORT_FILENAME`: the bound ports, in memcached's format, for harnesses that start
/// the server on a free port.
#[test]
fn the_port_file_names_the_bound_port() {
    if skip_in_memcached_mode("memcached binds no free port for -p 0") {
        return;
    }
    let path = std::env::temp_dir().join(format!("corecache-ports-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = TestServer::start_corecache_with(&["-t", "2"], |cmd| {
        cmd.env("MEMCACHED_PORT_FILENAME", &path);
    });
    let text = std::fs::read_to_string(&path).expect("port file written before listening");
    assert_eq!(text, format!("TCP INET: {}\n", server.addr().port()));
    let mut lock = path.clone().into_os_string();
    lock.push(".lck");
    assert!(!std::path::Path::new(&lock).exists(), "renamed into place");
    std::fs::remove_file(&path).unwrap();
}

/// A port another socket listens on: the server exits at once with memcached's status for a
/// socket it cannot listen on (sysexits' `EX_OSERR`, 71), saying so on stderr.
#[test]
fn a_port_in_use_fails_startup_with_memcached_status() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut server = common::server_command();
    server.args(["-U", "0", "-l", "127.0.0.1", "-p", &port]);
    let (status, err) = exit_of_refused(server);
    assert_eq!(status.code(), Some(71), "{status:?}");
    // memcached's words: the `-l` list as given, then the C library's reason.
    assert!(
        err.contains("failed to listen on one of interface(s) 127.0.0.1: Address already in use\n"),
        "{err}"
    );
    if memcached_mode() {
        return;
    }
    // Without `-l` memcached names the port instead (it would listen on every interface,
    // where this port is not taken; corecache's default is loopback, where it is).
    let mut server = common::server_command();
    server.args(["-U", "0", "-p", &port]);
    let (status, err) = exit_of_refused(server);
    assert_eq!(status.code(), Some(71), "{status:?}");
    assert!(
        err.contains(&format!(
            "failed to listen on TCP port {port}: Address already in use\n"
        )),
        "{err}"
    );
    // With -d the UNIX socket is bound in the daemon, whose parent exits with its status.
    let out = Command::new(env!("CARGO_BIN_EXE_corecache"))
        .args(["-d", "-s", "/nonexistent-corecache-dir/x.sock"])
        .stdin(Stdio::null())
        .output()
        .expect("run corecache -d");
    assert_eq!(out.status.code(), Some(71), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to listen on UNIX socket"), "{err}");
}

/// A second server on the port a running one listens on fails to start, as memcached does,
/// instead of sharing the port with it (corecache's listeners use SO_REUSEPORT, which would let
/// the kernel split new connections between the two caches). The first keeps serving.
#[test]
fn a_second_server_on_a_running_ones_port_fails() {
    let first = TestServer::start(&["-t", "2"]);
    let mut c = first.connect();
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    let port = first.addr().port().to_string();
    let mut second = common::server_command();
    second.args(["-U", "0", "-t", "2", "-l", "127.0.0.1", "-p", &port]);
    let (status, err) = exit_of_refused(second);
    assert_eq!(status.code(), Some(71), "{status:?}");
    assert!(err.contains("Address already in use"), "{err}");
    // Every new connection still reaches the first server.
    for _ in 0..16 {
        let mut c = first.connect();
        c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n");
    }
    if memcached_mode() {
        // memcached's UDP socket has SO_REUSEADDR, which lets a second one bind it.
        return;
    }
    let first_udp = TestServer::start_udp(&["-t", "2"]);
    let udp_port = first_udp.udp_addr().port().to_string();
    let mut second = Command::new(env!("CARGO_BIN_EXE_corecache"));
    second.args(["-t", "2", "-l", "127.0.0.1", "-p", "0", "-U", &udp_port]);
    let (status, err) = exit_of_refused(second);
    assert_eq!(status.code(), Some(71), "{status:?}");
    assert!(err.contains("Address already in use"), "{err}");
}

/// Runs a server expected to refuse to start: its exit status and stderr. One that is still
/// running after [`common::STARTUP_TIMEOUT`] is killed and the test fails.
fn exit_of_refused(mut cmd: Command) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the server");
    let deadline = Instant::now() + common::STARTUP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on a port another one holds");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    (status, err)
}

/// The scheduling policy of each of `pid`'s threads named `shard-*` (field 41 of
/// /proc/<pid>/task/<tid>/stat), and of its main thread.
fn shard_policies(pid: u32) -> (Vec<u32>, u32) {
    let policy = |tid: &str| -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).expect("stat");
        // Fields after the command name, which is in parentheses; the first is field 3.
        let rest = &stat[stat.rfind(')').expect("comm") + 1..];
        rest.split_whitespace()
            .nth(41 - 3)
            .expect("policy")
            .parse()
            .expect("number")
    };
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let tid = entry
            .expect("task")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        if comm.starts_with("shard-") {
            shards.push(policy(&tid));
        }
    }
    (shards, policy(&pid.to_string()))
}

/// Starts corecache with its first thread under `policy` (as `chrt` would), then `args`.
fn start_under_policy(policy: libc::c_int, args: &[&str]) -> TestServer {
    use std::os::unix::process::CommandExt;
    TestServer::start_corecache_with(args, |cmd| {
        // SAFETY: the closure runs in the forked child before exec and calls only
        // sched_setscheduler, a system call, with a `sched_param` on its own stack.
        unsafe {
            cmd.pre_exec(move || {
                let param = libc::sched_param { sched_priority: 0 };
                if libc::sched_setscheduler(0, policy, &param) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
}

type PolicyCase = (
    Option<libc::c_int>,
    &'static [&'static str],
    u32,
    u32,
    &'static str,
);

/// `--sched-policy`: without it shard threads keep the policy the process started with;
/// `batch` moves them from SCHED_OTHER to SCHED_BATCH and `normal` from SCHED_BATCH to
/// SCHED_OTHER; a policy set from outside that is neither, SCHED_IDLE here, is kept. The other threads keep what they started with. `stats settings`
/// names the answering shard's policy.
#[test]
fn shard_threads_run_under_the_sched_policy() {
    if skip_in_memcached_mode("--sched-policy is corecache's") {
        return;
    }
    const OTHER: u32 = libc::SCHED_OTHER as u32;
    const BATCH: u32 = libc::SCHED_BATCH as u32;
    const IDLE: u32 = libc::SCHED_IDLE as u32;
    for backend in ["epoll", "uring"] {
        // (policy started under, flags, shard threads' policy, main thread's, `stats settings`)
        const TO_NORMAL: &[&str] = &["--sched-policy", "normal"];
        const TO_BATCH: &[&str] = &["--sched-policy", "batch"];
        let cases: [PolicyCase; 6] = [
            (None, &[], OTHER, OTHER, "normal"),
            (None, TO_BATCH, BATCH, OTHER, "batch"),
            (None, TO_NORMAL, OTHER, OTHER, "normal"),
            (Some(libc::SCHED_BATCH), &[], BATCH, BATCH, "batch"),
            (Some(libc::SCHED_BATCH), TO_NORMAL, OTHER, BATCH, "normal"),
            (Some(libc::SCHED_IDLE), TO_BATCH, IDLE, IDLE, "idle"),
        ];
        for (start, extra, shard, main, shown) in cases {
            let mut args = vec!["-t", "2", "--io-backend", backend];
            args.extend_from_slice(extra);
            eprintln!("=== config: {} (started under {start:?})", args.join(" "));
            let server = match start {
                Some(policy) => start_under_policy(policy, &args),
                None => TestServer::start_corecache(&args),
            };
            let (shards, main_thread) = shard_policies(server.pid());
            assert_eq!(shards, vec![shard; 2], "{args:?}");
            assert_eq!(main_thread, main, "{args:?}");
            assert_eq!(
                server.stats_sub("settings")["sched_policy"],
                shown,
                "{args:?}"
            );
            // And it serves.
            let mut c = server.connect();
            c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
            c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n");
        }
    }
}
