//! The durability log (`--log-dir`): what is logged comes back after a restart (a clean stop,
//! or `kill -9` under `--log-fsync always`, during a compaction too), expired items do not,
//! damaged records are reported and skipped, write errors are not acknowledged, compaction
//! bounds the directory, a copy of the directory is a backup, a version 1 log is adopted, a
//! flush replayed under another shard count removes only its shard's keys, and no log means
//! no files.
//! corecache-only: skipped in `CORECACHE_TEST_SERVER=memcached` mode.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::{for_each_config, skip_in_memcached_mode, TestServer};

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "corecache-durability-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn log_dir(&self) -> String {
        self.0.join("log").to_string_lossy().into_owned()
    }

    /// The newest log segment.
    fn log_file(&self) -> PathBuf {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(self.0.join("log"))
            .expect("the log directory")
            .map(|e| e.expect("an entry").path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("corecache.") && name.ends_with(".log") && name.len() > 14
            })
            .collect();
        segments.sort();
        segments.pop().expect("a segment")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `config` plus `--log-dir <dir> --log-fsync <fsync>`.
fn with_log<'a>(config: &[&'a str], dir: &'a str, fsync: &'a str) -> Vec<&'a str> {
    let mut args = config.to_vec();
    args.extend(["--log-dir", dir, "--log-fsync", fsync]);
    args
}

/// Sends a retrieval and reads its reply through `END`.
fn ask(c: &mut common::Client, request: &[u8]) -> Vec<u8> {
    c.send(request);
    c.read_until_end()
}

fn stat(server: &TestServer, name: &str) -> u64 {
    server
        .stats()
        .get(name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .parse()
        .expect("a number")
}

#[test]
fn mutations_survive_a_restart() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for_each_config(|config| {
        let dir = TempDir::new("mutations");
        let log_dir = dir.log_dir();
        let mut server = TestServer::start(&with_log(config, &log_dir, "everysec"));
        let mut c = server.connect();
        // Twenty keys spread over both shards with -t 2.
        for i in 0..20 {
            c.roundtrip(
                format!("set k{i} {i} 0 2\r\nv{}\r\n", i % 10).as_bytes(),
                b"STORED\r\n",
            );
        }
        c.roundtrip(b"delete k1\r\n", b"DELETED\r\n");
        c.roundtrip(b"set n 0 0 2\r\n10\r\n", b"STORED\r\n");
        c.roundtrip(b"incr n 5\r\n", b"15\r\n");
        c.roundtrip(b"decr n 1\r\n", b"14\r\n");
        c.roundtrip(b"append k2 0 0 3\r\nabc\r\n", b"STORED\r\n");
        c.roundtrip(b"prepend k3 0 0 1\r\nz\r\n", b"STORED\r\n");
        c.roundtrip(b"touch k4 100000\r\n", b"TOUCHED\r\n");
        c.roundtrip(b"ms m 2 F77 T0\r\nhi\r\n", b"HD\r\n");
        c.roundtrip(b"add k5 0 0 1\r\nx\r\n", b"NOT_STORED\r\n");
        c.roundtrip(b"delete missing\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(
            b"set gone 0 0 1\r\nx\r\ndelete gone\r\n",
            b"STORED\r\nDELETED\r\n",
        );
        c.roundtrip(b"md k6 q\r\nmn\r\n", b"MN\r\n");
        c.roundtrip(b"ma n MI D10\r\n", b"HD\r\n");
        let before = ask(&mut c, b"gets k2 k3 k4 m n\r\n");
        drop(c);
        server.stop_and_restart();
        let mut c = server.connect();
        c.roundtrip(b"get k1 k6 gone missing\r\n", b"END\r\n");
        c.roundtrip(
            b"get k0 k2 k3 n m\r\n",
            b"VALUE k0 0 2\r\nv0\r\nVALUE k2 2 5\r\nv2abc\r\nVALUE k3 3 3\r\nzv3\r\n\
              VALUE n 0 2\r\n24\r\nVALUE m 77 2\r\nhi\r\nEND\r\n",
        );
        // Same flags, values and cas values as before the restart.
        assert_eq!(ask(&mut c, b"gets k2 k3 k4 m n\r\n"), before);
        for i in 7..20 {
            c.roundtrip(
                format!("get k{i}\r\n").as_bytes(),
                format!("VALUE k{i} {i} 2\r\nv{}\r\nEND\r\n", i % 10).as_bytes(),
            );
        }
        // The touched item kept its new expiry (about 100000 s away).
        let ttl = {
            c.send(b"mg k4 t\r\n");
            c.read_line()
        };
        let ttl: u64 = String::from_utf8_lossy(&ttl)
            .trim_end()
            .trim_start_matches("HD t")
            .parse()
            .expect("a ttl");
        assert!((99_000..=100_000).contains(&ttl), "ttl {ttl}");
        assert!(stat(&server, "log_replayed") > 0);
        assert_eq!(stat(&server, "log_skipped_bytes"), 0);
        // New cas values are above every replayed one.
        c.roundtrip(b"set fresh 0 0 1\r\nx\r\n", b"STORED\r\n");
        let cas_of = |reply: &[u8]| -> Vec<u64> {
            String::from_utf8_lossy(reply)
                .lines()
                .filter(|l| l.starts_with("VALUE"))
                .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
                .collect()
        };
        let fresh = cas_of(&ask(&mut c, b"gets fresh\r\n"));
        assert!(cas_of(&before).iter().all(|&old| old < fresh[0]));
    });
}

#[test]
fn flush_all_survives_a_restart() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for_each_config(|config| {
        let dir = TempDir::new("flush");
        let log_dir = dir.log_dir();
        let mut server = TestServer::start(&with_log(config, &log_dir, "always"));
        let mut c = server.connect();
        for i in 0..10 {
            c.roundtrip(format!("set a{i} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        }
        c.roundtrip(b"flush_all\r\n", b"OK\r\n");
        c.roundtrip(b"set after 0 0 1\r\ny\r\n", b"STORED\r\n");
        // A delayed flush far ahead stays pending across the restart.
        c.roundtrip(b"flush_all 100000\r\n", b"OK\r\n");
        drop(c);
        server.crash_and_restart();
        let mut c = server.connect();
        c.roundtrip(b"get a0 a1 a5 a9\r\n", b"END\r\n");
        c.roundtrip(b"get after\r\n", b"VALUE after 0 1\r\ny\r\nEND\r\n");
    });
}

#[test]
fn acknowledged_sets_survive_kill_9_under_always() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for_each_config(|config| {
        let dir = TempDir::new("kill9");
        let log_dir = dir.log_dir();
        let mut server = TestServer::start(&with_log(config, &log_dir, "always"));
        let mut clients = [server.connect(), server.connect()];
        // Pipelined batches, some noreply: every STORED read was synced first.
        let mut expected = Vec::new();
        for batch in 0..10 {
            for (n, c) in clients.iter_mut().enumerate() {
                let mut req = Vec::new();
                for i in 0..20 {
                    let key = format!("c{n}b{batch}i{i}");
                    let noreply = if i % 5 == 0 { " noreply" } else { "" };
                    req.extend_from_slice(
                        format!("set {key} {i} 0 {}{noreply}\r\n{key}\r\n", key.len()).as_bytes(),
                    );
                    expected.push((key, i));
                }
                req.extend_from_slice(b"mn\r\n");
                c.send(&req);
            }
            for c in clients.iter_mut() {
                let mut reply = Vec::new();
                for _ in 0..16 {
                    reply.extend_from_slice(b"STORED\r\n");
                }
                reply.extend_from_slice(b"MN\r\n");
                c.read_exact_reply(&reply);
            }
        }
        assert!(stat(&server, "log_fsyncs") > 0);
        drop(clients);
        server.crash_and_restart();
        let mut c = server.connect();
        for (key, flags) in &expected {
            c.roundtrip(
                format!("get {key}\r\n").as_bytes(),
                format!("VALUE {key} {flags} {}\r\n{key}\r\nEND\r\n", key.len()).as_bytes(),
            );
        }
        assert_eq!(stat(&server, "log_replayed"), expected.len() as u64);
    });
}

#[test]
fn binary_mutations_wait_for_the_log_and_survive() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    let dir = TempDir::new("binary");
    let log_dir = dir.log_dir();
    let mut server = TestServer::start(&with_log(&["-t", "2"], &log_dir, "always"));
    let mut c = server.connect();
    // Binary SET of key "bk" = "bv", flags 5, then NOOP.
    let mut set = vec![0x80, 0x01, 0, 2, 8, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 7];
    set.extend_from_slice(&[0; 8]);
    set.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 0]);
    set.extend_from_slice(b"bkbv");
    c.send(&set);
    let reply = c.read_n(24).expect("a set response");
    assert_eq!(&reply[..2], &[0x81, 0x01]);
    assert_eq!(&reply[6..8], &[0, 0], "status");
    drop(c);
    server.crash_and_restart();
    let mut c = server.connect();
    c.roundtrip(b"get bk\r\n", b"VALUE bk 5 2\r\nbv\r\nEND\r\n");
}

#[test]
fn expired_items_do_not_come_back() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    let dir = TempDir::new("expiry");
    let log_dir = dir.log_dir();
    let mut server = TestServer::start(&with_log(&["-t", "2"], &log_dir, "always"));
    let mut c = server.connect();
    let set_at = SystemTime::now();
    c.roundtrip(b"set short 0 1 1\r\ns\r\n", b"STORED\r\n");
    c.roundtrip(b"set long 0 100000 1\r\nl\r\n", b"STORED\r\n");
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let absolute = format!("set abs 0 {} 1\r\na\r\n", unix + 100_000);
    c.roundtrip(absolute.as_bytes(), b"STORED\r\n");
    drop(c);
    // Expiry is kept as wall-clock time: wait (bounded) until `short` is surely dead.
    let dead_at = set_at + Duration::from_secs(3);
    while SystemTime::now() < dead_at {
        std::thread::sleep(Duration::from_millis(50)); // bounded by `dead_at`
    }
    server.crash_and_restart();
    let mut c = server.connect();
    c.roundtrip(b"get short\r\n", b"END\r\n");
    c.roundtrip(
        b"get long abs\r\n",
        b"VALUE long 0 1\r\nl\r\nVALUE abs 0 1\r\na\r\nEND\r\n",
    );
    assert_eq!(stat(&server, "log_replay_expired"), 1);
}

/// The server's startup line about its replay (stderr is read by another thread: bounded
/// wait for it).
fn replay_line(server: &TestServer) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let err = server.stderr_text();
        if let Some(line) = err.lines().find(|l| l.contains("replayed")) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no replay line in {err:?}");
        std::thread::sleep(Duration::from_millis(5)); // bounded poll
    }
}

/// Offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("bytes in the log")
}

#[test]
fn a_torn_tail_and_a_corrupt_record_are_reported_and_skipped() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for_each_config(|config| {
        let dir = TempDir::new("damage");
        let log_dir = dir.log_dir();
        let mut server = TestServer::start(&with_log(config, &log_dir, "always"));
        let mut c = server.connect();
        for i in 0..10 {
            c.roundtrip(
                format!("set d{i} 0 0 8\r\nvalue-{i:02}\r\n").as_bytes(),
                b"STORED\r\n",
            );
        }
        drop(c);
        server.terminate(Duration::from_secs(10));
        // Damage d3's value, and cut d9's record in the middle.
        let path = dir.log_file();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = find(&bytes, b"value-03");
        bytes[at + 6] ^= 0x20;
        let cut = find(&bytes, b"value-09") - 4;
        bytes.truncate(cut);
        std::fs::write(&path, &bytes).unwrap();
        server.crash_and_restart();
        let err = replay_line(&server);
        assert!(
            err.contains("replayed 8 records") && !err.contains("skipped 0 damaged"),
            "{err}"
        );
        let skipped = stat(&server, "log_skipped_bytes");
        assert!(skipped > 0);
        let mut c = server.connect();
        c.roundtrip(b"get d3 d9\r\n", b"END\r\n");
        for i in [0, 1, 2, 4, 5, 6, 7, 8] {
            c.roundtrip(
                format!("get d{i}\r\n").as_bytes(),
                format!("VALUE d{i} 0 8\r\nvalue-{i:02}\r\nEND\r\n").as_bytes(),
            );
        }
        // The torn tail was cut: records appended now are read back after the next restart,
        // and only the corrupt record in the middle is skipped again.
        c.roundtrip(b"set later 0 0 1\r\nL\r\n", b"STORED\r\n");
        drop(c);
        server.crash_and_restart();
        let mut c = server.connect();
        c.roundtrip(
            b"get later d8\r\n",
            b"VALUE later 0 1\r\nL\r\nVALUE d8 0 8\r\nvalue-08\r\nEND\r\n",
        );
        assert!(stat(&server, "log_skipped_bytes") < skipped);
        assert_eq!(stat(&server, "log_replayed"), 9);
    });
}

#[test]
fn a_failed_log_write_is_not_acknowledged() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("efbig");
    let log_dir = dir.log_dir();
    let args = with_log(&["-t", "2"], &log_dir, "always");
    // Files may not grow past 64 KiB: the log's write of a 100 KB value fails (EFBIG).
    let server = TestServer::start_corecache_with(&args, |cmd| {
        // SAFETY: the closure runs in the forked child before exec and calls only setrlimit,
        // which is async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64 * 1024,
                    rlim_max: 64 * 1024,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let mut c = server.connect();
    c.roundtrip(b"set small 0 0 1\r\nx\r\n", b"STORED\r\n");
    let mut big = b"set big 0 0 100000\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'b', 100_000));
    big.extend_from_slice(b"\r\n");
    c.roundtrip(&big, b"SERVER_ERROR log write failed\r\n");
    // The log stays stopped: nothing more is acknowledged as durable.
    c.roundtrip(
        b"set after 0 0 1\r\ny\r\n",
        b"SERVER_ERROR log write failed\r\n",
    );
    c.roundtrip(b"get small\r\n", b"VALUE small 0 1\r\nx\r\nEND\r\n");
    assert_eq!(stat(&server, "log_errors"), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr_text().contains("log write failed") {
        assert!(Instant::now() < deadline, "{}", server.stderr_text());
        std::thread::sleep(Duration::from_millis(5)); // bounded poll
    }
}

#[test]
fn stats_show_the_log_only_when_it_is_on() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    let dir = TempDir::new("stats");
    let log_dir = dir.log_dir();
    let server = TestServer::start(&with_log(&["-t", "2"], &log_dir, "no"));
    let settings = server.stats_sub("settings");
    assert_eq!(settings.get("log_dir"), Some(&log_dir));
    assert_eq!(settings.get("log_fsync").map(String::as_str), Some("no"));
    let mut c = server.connect();
    c.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&server, "log_records") < 1 {
        assert!(Instant::now() < deadline, "the record was never written");
        std::thread::sleep(Duration::from_millis(5)); // bounded poll
    }
    assert!(stat(&server, "log_bytes") > 0);
    assert_eq!(stat(&server, "log_fsyncs"), 0);
    // A new directory: segment 1, no snapshot yet.
    assert_eq!(stat(&server, "log_segment_generation"), 1);
    assert!(stat(&server, "log_segment_bytes") > 32);
    assert_eq!(stat(&server, "log_snapshot_generation"), 0);
    assert_eq!(stat(&server, "log_snapshots"), 0);
    assert_eq!(stat(&server, "log_snapshot_bytes"), 0);
    assert_eq!(
        settings.get("log_compact_bytes").map(String::as_str),
        Some("67108864")
    );
    drop(server);

    let plain = TestServer::start(&["-t", "2"]);
    assert!(!plain.stats().contains_key("log_records"));
    assert!(!plain.stats().contains_key("log_snapshots"));
    assert!(!plain.stats_sub("settings").contains_key("log_dir"));
}

#[test]
fn without_log_dir_no_file_is_written() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    let dir = TempDir::new("nolog");
    let mut server = TestServer::start_corecache_with(&["-t", "2"], |cmd| {
        cmd.current_dir(dir.path());
    });
    let mut c = server.connect();
    c.roundtrip(b"set a 0 0 1\r\nx\r\nflush_all\r\n", b"STORED\r\nOK\r\n");
    drop(c);
    server.terminate(Duration::from_secs(10));
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[test]
fn bad_log_directories_fail_at_startup() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    let dir = TempDir::new("bad");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("log");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_corecache"))
            .args(["-l", "127.0.0.1", "-p", "0"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run corecache")
    };
    let out = run(&["--log-dir", under_file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--log-dir"), "{err}");
    assert!(out.stdout.is_empty());
    // A file that is not a log is left alone.
    std::fs::create_dir_all(dir.path().join("notlog")).unwrap();
    std::fs::write(
        dir.path().join("notlog/corecache.log"),
        b"hello there, not a log",
    )
    .unwrap();
    let out = run(&["--log-dir", dir.path().join("notlog").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a corecache log"));
    let out = run(&["--log-fsync", "always"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-fsync needs --log-dir"));
    // Two servers on one log: the second is refused.
    let log_dir = dir.log_dir();
    let _first = TestServer::start(&["--log-dir", &log_dir]);
    let out = run(&["--log-dir", &log_dir]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

/// The names of the files in the log directory, sorted.
fn log_files(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("log"))
        .expect("the log directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Waits (bounded) until `stat(name)` satisfies `ok`.
fn wait_stat(server: &TestServer, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = stat(server, name);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        std::thread::sleep(Duration::from_millis(5)); // bounded poll
    }
}

/// Waits until `snapshots` snapshots are complete and none is under way.
fn wait_snapshots(server: &TestServer, snapshots: u64) {
    wait_stat(server, "log_snapshots", |n| n >= snapshots);
    wait_stat(server, "log_snapshot_generation", |g| g == 0);
}

/// `set` of `key` to `value`, acknowledged.
fn set(c: &mut common::Client, key: &str, value: &str) {
    c.roundtrip(
        format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
        b"STORED\r\n",
    );
}

fn expect_value(c: &mut common::Client, key: &str, value: &str) {
    c.roundtrip(
        format!("get {key}\r\n").as_bytes(),
        format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()).as_bytes(),
    );
}

#[test]
fn compaction_keeps_every_item_and_bounds_the_directory() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for_each_config(|config| {
        let dir = TempDir::new("compact");
        let log_dir = dir.log_dir();
        let mut args = with_log(config, &log_dir, "always");
        args.extend(["--log-compact-bytes", "16384"]);
        let mut server = TestServer::start(&args);
        assert_eq!(
            server.stats_sub("settings").get("log_compact_bytes"),
            Some(&String::from("16384"))
        );
        let mut c = server.connect();
        // 100 keys rewritten 8 times: about 8 x 100 x 100 bytes of records, several
        // compactions at 16 KiB.
        for round in 0..8 {
            for i in 0..100 {
                set(&mut c, &format!("k{i}"), &format!("{round}-{i:0>90}"));
            }
            c.roundtrip(format!("delete k{round}\r\n").as_bytes(), b"DELETED\r\n");
        }
        c.roundtrip(b"flush_all 100000\r\n", b"OK\r\n");
        let snapshots = wait_stat(&server, "log_snapshots", |n| n >= 2);
        assert_eq!(stat(&server, "log_snapshot_failures"), 0);
        // One more, asked for, with nothing written after it.
        c.roundtrip(b"log_compact\r\n", b"OK\r\n");
        wait_snapshots(&server, snapshots + 1);
        let written = stat(&server, "log_bytes");
        let kept = stat(&server, "log_file_bytes");
        assert!(kept < written / 4, "kept {kept} of {written} bytes");
        // What is left: the marker, one snapshot, and the segment after it.
        let files = log_files(&dir);
        let snaps: Vec<_> = files.iter().filter(|f| f.ends_with(".snap")).collect();
        let segments: Vec<_> = files
            .iter()
            .filter(|f| f.ends_with(".log") && f.as_str() != "corecache.log")
            .collect();
        assert_eq!(snaps.len(), 1, "{files:?}");
        assert_eq!(segments.len(), 1, "{files:?}");
        assert!(files.contains(&String::from("corecache.log")), "{files:?}");
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(
            snaps[0].trim_end_matches(".snap"),
            segments[0].trim_end_matches(".log")
        );
        // Written after the last snapshot: replayed from the segment.
        set(&mut c, "after", "A");
        drop(c);
        server.crash_and_restart();
        let mut c = server.connect();
        for i in 0..100 {
            if i == 7 {
                // Deleted in the last round (the earlier rounds' deletes were set over).
                c.roundtrip(format!("get k{i}\r\n").as_bytes(), b"END\r\n");
            } else {
                expect_value(&mut c, &format!("k{i}"), &format!("7-{i:0>90}"));
            }
        }
        expect_value(&mut c, "after", "A");
        assert_eq!(stat(&server, "log_skipped_bytes"), 0);
        assert!(stat(&server, "log_replayed") < 200);
        // The delayed flush, recorded in the snapshot, is still pending.
        drop(c);
        server.stop_and_restart();
        let mut c = server.connect();
        expect_value(&mut c, "k50", &format!("7-{:0>90}", 50));
    });
}

#[test]
fn a_copy_of_the_directory_starts_a_server_with_the_same_items() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for_each_config(|config| {
        let dir = TempDir::new("backup");
        let log_dir = dir.log_dir();
        let server = TestServer::start(&with_log(config, &log_dir, "always"));
        let mut c = server.connect();
        for i in 0..50 {
            set(&mut c, &format!("b{i}"), &format!("before-{i}"));
        }
        c.roundtrip(b"log_compact\r\n", b"OK\r\n");
        wait_snapshots(&server, 1);
        for i in 0..5 {
            set(&mut c, &format!("b{i}"), &format!("after-{i}"));
        }
        c.roundtrip(b"delete b10\r\n", b"DELETED\r\n");
        // The backup: every file of the directory, copied while the server runs.
        let copy = dir.path().join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        for name in log_files(&dir) {
            std::fs::copy(dir.path().join("log").join(&name), copy.join(&name)).unwrap();
        }
        let copy_dir = copy.to_string_lossy().into_owned();
        // Restored under the other shard count: snapshot records are routed like requests.
        let mut other = config.to_vec();
        other[1] = if config[1] == "1" { "2" } else { "1" };
        let restored = TestServer::start(&with_log(&other, &copy_dir, "always"));
        let mut r = restored.connect();
        for i in 0..50 {
            match i {
                0..5 => expect_value(&mut r, &format!("b{i}"), &format!("after-{i}")),
                10 => r.roundtrip(b"get b10\r\n", b"END\r\n"),
                _ => expect_value(&mut r, &format!("b{i}"), &format!("before-{i}")),
            }
        }
        drop(server);
        // Without a log there is nothing to compact.
        let plain = TestServer::start(config);
        let mut p = plain.connect();
        p.roundtrip(
            b"log_compact\r\n",
            b"SERVER_ERROR no log (start with --log-dir)\r\n",
        );
    });
}

#[test]
fn acknowledged_sets_survive_kill_9_during_compaction() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for_each_config(|config| {
        let dir = TempDir::new("kill9compact");
        let log_dir = dir.log_dir();
        let mut args = with_log(config, &log_dir, "always");
        args.extend(["--log-compact-bytes", "0"]);
        let mut server = TestServer::start(&args);
        let mut c = server.connect();
        // Enough items that a snapshot takes many slices.
        let mut req = Vec::new();
        for i in 0..20_000 {
            req.extend_from_slice(format!("set p{i} 0 0 40 noreply\r\n{i:0>40}\r\n").as_bytes());
        }
        req.extend_from_slice(b"mn\r\n");
        c.send(&req);
        c.read_exact_reply(b"MN\r\n");
        let mut acknowledged = Vec::new();
        // Kill at a different moment of a compaction each time: right after asking for it,
        // and after more and more acknowledged sets while it runs.
        for (attempt, sets) in [0usize, 1, 10, 100, 400].into_iter().enumerate() {
            c.roundtrip(b"log_compact\r\n", b"OK\r\n");
            for i in 0..sets {
                let key = format!("a{attempt}-{i}");
                set(&mut c, &key, &key);
                acknowledged.push(key);
            }
            drop(c);
            server.crash_and_restart();
            c = server.connect();
            for key in &acknowledged {
                expect_value(&mut c, key, key);
            }
            for i in (0..20_000).step_by(997) {
                expect_value(&mut c, &format!("p{i}"), &format!("{i:0>40}"));
            }
            let files = log_files(&dir);
            assert!(
                !files.iter().any(|f| f.ends_with(".tmp")),
                "startup removes unfinished snapshots: {files:?}"
            );
            assert!(files.iter().filter(|f| f.ends_with(".snap")).count() <= 1);
        }
        assert_eq!(stat(&server, "log_skipped_bytes"), 0);
    });
}

/// A key that `shard_of` gives to `shard` of `shard_count`, named `<prefix><n>`.
fn key_on(prefix: &str, shard: u16, shard_count: u16) -> String {
    use corecache::router::{key_hash, shard_of};
    (0..10_000)
        .map(|n| format!("{prefix}{n}"))
        .find(|k| shard_of(key_hash(k.as_bytes()), shard_count).0 == shard)
        .expect("a key on that shard")
}

/// Writes a version 1 log (`corecache.log`), as a version 1 build wrote it, into `dir`.
fn write_v1_log(dir: &Path, records: impl FnOnce(&mut Vec<u8>)) {
    use corecache::durability::record;
    std::fs::create_dir_all(dir).unwrap();
    let mut bytes = record::file_header_v1().to_vec();
    records(&mut bytes);
    std::fs::write(dir.join("corecache.log"), bytes).unwrap();
}

fn item<'a>(key: &'a str, value: &'a str) -> corecache::durability::record::ItemRecord<'a> {
    corecache::durability::record::ItemRecord {
        key: key.as_bytes(),
        client_flags: 0,
        item_bits: 0,
        expires_unix: 0,
        cas: 0,
        value: value.as_bytes(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_flush_replayed_under_another_shard_count_removes_only_its_shards_keys() {
    use corecache::durability::record::{encode_flush, encode_item, FlushRecord};
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    // As written at -t 2: both shards store, shard 0 flushes and then stores again, and only
    // after that is shard 1's flush record written; then shard 1 stores.
    let a0 = key_on("a", 0, 2);
    let b1 = key_on("b", 1, 2);
    let c0 = key_on("c", 0, 2);
    let d1 = key_on("d", 1, 2);
    let t = unix_now() - 10;
    let flush = |shard| FlushRecord {
        at_unix: t,
        shard,
        shard_count: 2,
    };
    for shard_count in ["1", "2", "3"] {
        for backend in ["epoll", "uring"] {
            eprintln!("=== -t {shard_count} --io-backend {backend}");
            let dir = TempDir::new("routedflush");
            let log_dir = dir.log_dir();
            write_v1_log(&dir.path().join("log"), |out| {
                encode_item(out, &item(&a0, "A"), t);
                encode_item(out, &item(&b1, "B"), t);
                encode_flush(out, &flush(0), t);
                encode_item(out, &item(&c0, "C"), t);
                encode_flush(out, &flush(1), t);
                encode_item(out, &item(&d1, "D"), t);
            });
            let config = ["-t", shard_count, "--io-backend", backend];
            let server = TestServer::start(&with_log(&config, &log_dir, "always"));
            let mut c = server.connect();
            c.roundtrip(format!("get {a0} {b1}\r\n").as_bytes(), b"END\r\n");
            expect_value(&mut c, &c0, "C");
            expect_value(&mut c, &d1, "D");
            // Four items; each flush counts once per shard it was applied on (every shard
            // when the shard count changed).
            let n: u64 = shard_count.parse().unwrap();
            let flushes = if n == 2 { 2 } else { 2 * n };
            assert_eq!(stat(&server, "log_replayed"), 4 + flushes);
            // The version 1 log was adopted as segment 0, beside a version 2 marker.
            let files = log_files(&dir);
            assert!(files.contains(&String::from("corecache.0000000000000000.log")));
            assert!(files.contains(&String::from("corecache.log")));
        }
    }
}

#[test]
fn a_flush_written_at_two_shards_replays_at_one_and_three() {
    if skip_in_memcached_mode("the durability log is corecache's") {
        return;
    }
    for backend in ["epoll", "uring"] {
        let dir = TempDir::new("flushcount");
        let log_dir = dir.log_dir();
        let config = ["-t", "2", "--io-backend", backend];
        let server = TestServer::start(&with_log(&config, &log_dir, "always"));
        let mut c = server.connect();
        let keys: Vec<String> = (0..4)
            .map(|n| key_on(&format!("s{n}-"), n % 2, 2))
            .collect();
        for k in &keys {
            set(&mut c, k, "old");
        }
        c.roundtrip(b"flush_all\r\n", b"OK\r\n");
        // Stored on each shard right after the flush: its record may reach the log before the
        // other shard's flush record.
        for k in &keys {
            set(&mut c, &format!("{k}-new"), "new");
        }
        drop(c);
        drop(server);
        for shard_count in ["1", "3", "2"] {
            eprintln!("=== -t {shard_count} --io-backend {backend}");
            let config = ["-t", shard_count, "--io-backend", backend];
            let server = TestServer::start(&with_log(&config, &log_dir, "always"));
            let mut c = server.connect();
            for k in &keys {
                c.roundtrip(format!("get {k}\r\n").as_bytes(), b"END\r\n");
                expect_value(&mut c, &format!("{k}-new"), "new");
            }
        }
    }
}
