//! Startup: bad flags exit non-zero with a one-line reason, and the io_uring probe's fallback
//! to epoll (forced through a test hook, since io_uring cannot be blocked from inside a test).

use std::process::{Command, Stdio};

mod common;
use common::{memcached_mode, TestServer};

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
    assert!(refused(&["-U", "11211"], &[]).contains("UDP"));
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
    assert!(
        server.stderr_text().contains("io_uring unavailable"),
        "no reason logged: {:?}",
        server.stderr_text()
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
