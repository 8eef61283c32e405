//! The restartable cache (`-e PATH`): a graceful stop (SIGUSR1 or `shutdown graceful`) saves
//! the items and the next start restores them with their flags, cas and remaining TTL; a
//! SIGTERM stop saves nothing; an empty metadata file stops the server from starting; each save
//! is restored once. The tests marked so also run against memcached 1.6 (its `-e`);
//! corecache-only: restoring under other settings, damaged files, the startup report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::{
    for_each_config, memcached_mode, skip_in_memcached_mode, wait_until, Client, TestServer,
};

const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh memory file path under the temp dir; the file and its companions are removed on drop.
struct MemFile(PathBuf);

impl MemFile {
    fn new(name: &str) -> MemFile {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "corecache-memfile-{name}-{}-{n}",
            std::process::id()
        ));
        let mf = MemFile(path);
        mf.remove_all();
        mf
    }

    fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    fn meta(&self) -> PathBuf {
        PathBuf::from(format!("{}.meta", self.arg()))
    }

    fn remove_all(&self) {
        for p in [self.0.clone(), self.meta()] {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        self.remove_all();
    }
}

fn with_file<'a>(args: &[&'a str], file: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-e", file]);
    all
}

/// `gets key` → (value, flags, cas), or None on a miss.
fn gets(c: &mut Client, key: &str) -> Option<(Vec<u8>, u32, u64)> {
    c.send(format!("gets {key}\r\n").as_bytes());
    let header = c.read_line();
    if header == b"END\r\n" {
        return None;
    }
    let text = String::from_utf8(header.clone()).expect("ascii header");
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(parts.len(), 5, "{text:?}");
    let len: usize = parts[3].parse().unwrap();
    let data = c.read_n(len + 2).unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(c.read_line(), b"END\r\n");
    Some((
        data[..len].to_vec(),
        parts[2].parse().unwrap(),
        parts[4].parse().unwrap(),
    ))
}

fn set(c: &mut Client, key: &str, flags: u32, ttl: u32, value: &[u8]) {
    let mut req = format!("set {key} {flags} {ttl} {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    c.roundtrip(&req, b"STORED\r\n");
}

/// A value of `len` bytes with every byte value in it, and `\r\n` inside.
fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn graceful_stop(server: &mut TestServer) {
    let status = server.stop_with(libc::SIGUSR1, STOP_TIMEOUT);
    assert!(status.success(), "graceful stop: {status}");
    after_stop();
}

/// memcached refuses to restore a save made in the current wall-clock second (it takes a
/// non-positive downtime for a clock gone wrong), so in memcached mode the next start waits
/// for the next second. corecache has no such rule.
fn after_stop() {
    if !memcached_mode() {
        return;
    }
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let stopped = secs(SystemTime::now());
    while secs(SystemTime::now()) == stopped {
        std::thread::sleep(Duration::from_millis(20)); // bounded: under one second
    }
}

/// Items of several sizes (one spanning many slab chunks) come back from a SIGUSR1 stop with
/// their values, flags and cas; a `cas` with a saved cas still succeeds; new cas values do not
/// collide with restored ones; `stats settings` names the file.
#[test]
fn graceful_stop_saves_and_the_next_start_restores() {
    for_each_config(|args| {
        let mf = MemFile::new("basic");
        let file = mf.arg();
        let args = [&with_file(args, &file)[..], &["-m", "64", "-I", "2m"]].concat();
        let mut server = TestServer::start(&args);
        assert_eq!(server.stats_sub("settings")["memory_file"], file);
        let mut c = server.connect();
        let items: Vec<(String, u32, Vec<u8>)> = [0usize, 1, 10, 100, 5_000, 700_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| (format!("key{i}"), i as u32 * 1000 + 7, value(len, i as u8)))
            .collect();
        for (key, flags, v) in &items {
            set(&mut c, key, *flags, 0, v);
        }
        for i in 0..200 {
            set(
                &mut c,
                &format!("many{i}"),
                i,
                3600,
                format!("v{i}").as_bytes(),
            );
        }
        c.roundtrip(b"delete many7\r\n", b"DELETED\r\n");
        let before: Vec<_> = items.iter().map(|(k, _, _)| gets(&mut c, k)).collect();
        drop(c);
        graceful_stop(&mut server);

        let server = TestServer::start(&args);
        let mut c = server.connect();
        for ((key, flags, v), saved) in items.iter().zip(&before) {
            let got = gets(&mut c, key).unwrap_or_else(|| panic!("{key} restored"));
            assert_eq!(&got.0, v, "{key}");
            assert_eq!(got.1, *flags, "{key}");
            assert_eq!(Some(&got), saved.as_ref(), "{key}: same cas");
        }
        for i in 0..200 {
            let got = gets(&mut c, &format!("many{i}"));
            if i == 7 {
                assert_eq!(got, None, "a deleted key stays deleted");
            } else {
                assert_eq!(got.map(|g| g.0), Some(format!("v{i}").into_bytes()));
            }
        }
        let cas_max = before.iter().flatten().map(|g| g.2).max().unwrap();
        let (_, _, cas0) = before[0].clone().unwrap();
        c.roundtrip(
            format!("cas key0 1 0 3 {cas0}\r\nnew\r\n").as_bytes(),
            b"STORED\r\n",
        );
        let (_, _, fresh) = gets(&mut c, "key0").unwrap();
        assert!(fresh > cas_max, "new cas {fresh} above restored {cas_max}");
        // Restored once: the metadata is gone, so a crash now starts empty.
        assert!(!mf.meta().exists(), "metadata removed at startup");
    });
}

/// The hash table comes back as large as it was (`hash_power_level`), items or not, as
/// memcached restores its hash power: a start with `-o hashpower=18` and one item, saved and
/// started again without the option, reads 18.
#[test]
fn a_restart_restores_the_hash_power() {
    for_each_config(|args| {
        let mf = MemFile::new("hashpower");
        let file = mf.arg();
        let base = with_file(args, &file);
        let mut server = TestServer::start(&[&base[..], &["-o", "hashpower=18"]].concat());
        assert_eq!(server.stats()["hash_power_level"], "18");
        let mut c = server.connect();
        set(&mut c, "one", 0, 0, b"v");
        drop(c);
        graceful_stop(&mut server);
        let mut server = TestServer::start(&base);
        assert_eq!(server.stats()["hash_power_level"], "18");
        let mut c = server.connect();
        assert_eq!(gets(&mut c, "one").map(|g| g.0), Some(b"v".to_vec()));
        drop(c);
        // Without a save, the next start is back at the default.
        server.terminate(STOP_TIMEOUT);
        let server = TestServer::start(&base);
        assert_eq!(server.stats()["hash_power_level"], "16");
    });
}

/// `shutdown graceful` (with `-A`) saves as SIGUSR1 does; `shutdown` saves nothing.
#[test]
fn shutdown_graceful_saves_and_shutdown_does_not() {
    for_each_config(|args| {
        let mf = MemFile::new("shutdown");
        let file = mf.arg();
        let args = [&with_file(args, &file)[..], &["-A"]].concat();
        for (mode, kept) in [("shutdown graceful", true), ("shutdown", false)] {
            let mut server = TestServer::start(&args);
            let mut c = server.connect();
            set(&mut c, "k", 3, 0, b"kept");
            c.send(format!("{mode}\r\n").as_bytes());
            assert_eq!(c.expect_closed(), b"", "{mode} sends no reply");
            let status = server.wait_exit(STOP_TIMEOUT).expect("exited");
            assert!(status.success(), "{mode}: {status}");
            after_stop();
            let server = TestServer::start(&args);
            let mut c = server.connect();
            let got = gets(&mut c, "k").map(|g| (g.0, g.1));
            let want = kept.then(|| (b"kept".to_vec(), 3));
            assert_eq!(got, want, "after {mode}");
        }
    });
}

/// A SIGTERM stop saves nothing, and neither does a crash: the next start is empty.
#[test]
fn sigterm_and_crash_save_nothing() {
    for_each_config(|args| {
        let mf = MemFile::new("sigterm");
        let file = mf.arg();
        let args = with_file(args, &file);
        let mut server = TestServer::start(&args);
        set(&mut server.connect(), "k", 0, 0, b"v");
        let status = server.terminate(STOP_TIMEOUT);
        assert!(status.success(), "{status}");
        let mut server = TestServer::start(&args);
        assert_eq!(gets(&mut server.connect(), "k"), None, "after SIGTERM");
        // A save restored once is not restored again after a crash.
        set(&mut server.connect(), "k", 0, 0, b"v");
        graceful_stop(&mut server);
        let server = TestServer::start(&args);
        assert!(gets(&mut server.connect(), "k").is_some(), "restored");
        drop(server); // SIGKILL
        let server = TestServer::start(&args);
        assert_eq!(gets(&mut server.connect(), "k"), None, "after a crash");
    });
}

/// TTLs keep running while the server is down: an item due meanwhile is gone, a longer one
/// keeps what is left of its TTL.
#[test]
fn ttls_run_while_stopped() {
    let mf = MemFile::new("ttl");
    let file = mf.arg();
    let args = with_file(&["-t", "2"], &file);
    let mut server = TestServer::start(&args);
    let mut c = server.connect();
    let set_at = Instant::now();
    set(&mut c, "short", 0, 2, b"s");
    set(&mut c, "long", 0, 100, b"l");
    graceful_stop(&mut server);
    // Wait out the short TTL (memcached's clock has one-second steps).
    std::thread::sleep(Duration::from_millis(3100).saturating_sub(set_at.elapsed()));
    let server = TestServer::start(&args);
    let mut c = server.connect();
    assert_eq!(gets(&mut c, "short"), None, "expired while stopped");
    c.send(b"mg long t v\r\n");
    let line = String::from_utf8(c.read_line()).unwrap();
    let ttl: u32 = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix('t'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!((90..=98).contains(&ttl), "remaining TTL {ttl} ({line:?})");
    assert_eq!(c.read_line(), b"l\r\n");
}

/// Starts corecache with `-e file`, expects it to exit unsuccessfully within the startup
/// timeout (a server that comes up instead is killed and the test fails); returns its stderr.
fn refused_start(file: &str) -> String {
    let (status, err) = common::run_to_exit(
        std::process::Command::new(env!("CARGO_BIN_EXE_corecache")).args([
            "-l",
            "127.0.0.1",
            "-p",
            "0",
            "-e",
            file,
        ]),
        &format!("corecache -e {file} started instead of refusing"),
    );
    assert!(!status.success(), "{status}: {err}");
    err
}

/// An empty metadata file is not a save: the server refuses to start (memcached aborts), and
/// the file is removed, so the next start is a clean one.
#[test]
fn empty_metadata_stops_the_start() {
    if skip_in_memcached_mode("corecache's exit status and message") {
        return;
    }
    let mf = MemFile::new("empty");
    std::fs::write(mf.meta(), b"").unwrap();
    let err = refused_start(&mf.arg());
    assert!(err.contains("empty metadata file"), "{err}");
    assert!(!mf.meta().exists());
    let server = TestServer::start(&["-e", &mf.arg()]);
    assert_eq!(gets(&mut server.connect(), "k"), None);
}

/// A memory file that cannot be created stops the start (memcached cannot map it either),
/// instead of losing the save at the next stop.
#[test]
fn an_unwritable_memory_file_stops_the_start() {
    if skip_in_memcached_mode("corecache's exit status and message") {
        return;
    }
    let err = refused_start("/nonexistent-dir/corecache.mem");
    assert!(err.contains("-e: /nonexistent-dir/corecache.mem"), "{err}");
}

fn save(mf: &MemFile, args: &[&str], fill: impl FnOnce(&mut Client)) {
    let mut server = TestServer::start_corecache(&with_file(args, &mf.arg()));
    fill(&mut server.connect());
    graceful_stop(&mut server);
    assert!(mf.meta().exists(), "metadata written");
}

/// corecache restores item by item, so the shard count, memory limit and cas setting may
/// change across the restart; what no longer fits is counted as not stored.
#[test]
fn restore_under_other_settings() {
    if skip_in_memcached_mode("memcached needs the same settings to restore") {
        return;
    }
    let mf = MemFile::new("settings");
    let keys = 3000;
    save(&mf, &["-t", "1", "-m", "64"], |c| {
        for i in 0..keys {
            set(c, &format!("k{i}"), i, 0, &value(1000, i as u8));
        }
    });
    // More shards: every key is found on the shard that owns it now.
    let mut server = TestServer::start_corecache(&with_file(&["-t", "3", "-m", "64"], &mf.arg()));
    let mut c = server.connect();
    for i in (0..keys).step_by(7) {
        let got = gets(&mut c, &format!("k{i}")).expect("restored");
        assert_eq!((got.0, got.1), (value(1000, i as u8), i));
    }
    assert_eq!(server.stats()["curr_items"], keys.to_string());
    let restored = format!("restored {keys} items");
    let report = server.stderr_holding(&restored);
    assert!(report.contains(&restored), "{report}");
    assert!(!mf.0.exists(), "the memory file is removed once restored");
    graceful_stop(&mut server);
    // Less memory, with evictions off: some items are not stored, and the report says so.
    let server = TestServer::start_corecache(&with_file(&["-t", "1", "-m", "2", "-M"], &mf.arg()));
    let items: u64 = server.stats()["curr_items"].parse().unwrap();
    assert!(items > 0 && items < keys as u64, "{items}");
    let refused = format!("{} not stored", keys as u64 - items);
    let report = server.stderr_holding(&refused);
    assert!(report.contains(&refused), "{report}");
}

/// A data file that does not match its metadata (cut short, or not a save at all) is not
/// restored: the server says why and starts empty.
#[test]
fn damaged_memory_file_starts_empty() {
    if skip_in_memcached_mode("corecache's file checks") {
        return;
    }
    for (damage, why) in [
        ("truncated", "bytes"),
        ("replaced", "not a corecache save"),
        ("removed", "missing"),
    ] {
        let mf = MemFile::new(damage);
        save(&mf, &["-t", "1"], |c| set(c, "k", 0, 0, b"v"));
        let len = std::fs::metadata(&mf.0).unwrap().len();
        match damage {
            "truncated" => {
                let f = std::fs::OpenOptions::new().write(true).open(&mf.0).unwrap();
                f.set_len(len - 1).unwrap();
            }
            "replaced" => std::fs::write(&mf.0, vec![b'x'; len as usize]).unwrap(),
            _ => std::fs::remove_file(&mf.0).unwrap(),
        }
        let server = TestServer::start_corecache(&with_file(&["-t", "1"], &mf.arg()));
        assert_eq!(gets(&mut server.connect(), "k"), None, "{damage}");
        // The server wrote its report before listening; the thread that collects its stderr
        // may not have read it yet.
        let reported =
            |err: &str| err.contains(why) && err.contains("starting with an empty cache");
        wait_until(Duration::from_secs(10), || reported(&server.stderr_text()));
        let err = server.stderr_text();
        assert!(reported(&err), "{damage}: {err}");
        assert!(!mf.meta().exists(), "{damage}: metadata removed");
    }
}

/// Not in memcached mode: memcached's file is its whole memory (`-m`), corecache's only the
/// items; a save of a few items stays small.
#[test]
fn the_memory_file_holds_the_items_only() {
    if memcached_mode() {
        return;
    }
    let mf = MemFile::new("size");
    save(&mf, &["-t", "2", "-m", "1024"], |c| {
        for i in 0..100 {
            set(c, &format!("k{i}"), 0, 0, &value(100, i));
        }
    });
    let len = std::fs::metadata(Path::new(&mf.0)).unwrap().len();
    assert!((100 * 100..100 * 300).contains(&len), "{len} bytes");
}
