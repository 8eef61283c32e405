//! ASCII authentication (`-Y <file>`), as memcached 1.6.18 serves it: the file's format and its
//! startup errors, the `set` whose data is `<user> <password>`, every reply before and after
//! authenticating, and the counters and settings `stats` shows. Every test runs against the
//! real memcached too (`CORECACHE_TEST_SERVER=memcached`), except where corecache differs on
//! purpose (said at the test).
//!
//! memcached answers only the last of several unauthenticated commands that arrive in one
//! read (corecache answers each), so these tests send such commands one at a time.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

mod common;
use common::{for_each_config, is_root, memcached_mode, stat_u64, Client, TestServer};

const UNAUTHENTICATED: &[u8] = b"CLIENT_ERROR unauthenticated\r\n";
const FAILURE: &[u8] = b"CLIENT_ERROR authentication failure\r\n";
const BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad authentication token format\r\n";
const BAD_TERMINATION: &[u8] = b"CLIENT_ERROR bad command line termination\r\n";

/// A directory of its own under the temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "corecache-auth-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// Writes `data` to the file `name` in the directory; returns its path.
    fn file(&self, name: &str, data: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_string_lossy().into_owned()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The authentication request: `set` with `token` as its data block.
fn auth_request(token: &[u8]) -> Vec<u8> {
    let mut req = format!("set auth 0 0 {}\r\n", token.len()).into_bytes();
    req.extend_from_slice(token);
    req.extend_from_slice(b"\r\n");
    req
}

/// A server whose auth file holds `data`, started with `args` (a config of
/// [`for_each_config`]); the file lives as long as the returned directory.
fn server_with(test: &str, data: &[u8], args: &[&str]) -> (TestServer, TempDir, String) {
    let dir = TempDir::new(test);
    let path = dir.file("auth", data);
    let mut all = args.to_vec();
    all.extend(["-Y", path.as_str()]);
    (TestServer::start(&all), dir, path)
}

/// A connection to `server`, authenticated as `user`/`pass`.
fn login(server: &TestServer, user: &str, pass: &str) -> Client {
    let mut c = server.connect();
    c.roundtrip(
        &auth_request(format!("{user} {pass}").as_bytes()),
        b"STORED\r\n",
    );
    c
}

/// memcached 1.6.18's own test, t/ascii-auth.t: refused before authentication, a wrong
/// password, the right one, then ordinary commands; a second connection with another login.
#[test]
fn login_then_ordinary_commands() {
    for_each_config(|args| {
        let (server, _dir, _) = server_with("login", b"foo:bar\nbaaaz:quux\n", args);
        let mut c = server.connect();
        // A `set` before authenticating is an attempt: "hi" is no `<user> <pass>`.
        c.roundtrip(b"set foo 0 0 2\r\nhi\r\n", BAD_TOKEN);
        c.roundtrip(b"get foo\r\n", UNAUTHENTICATED);
        c.roundtrip(b"set foo 0 0 7\r\nfoo bab\r\n", FAILURE);
        c.roundtrip(b"set foo 0 0 7\r\nfoo bar\r\n", b"STORED\r\n");
        // Nothing was stored by the login.
        c.roundtrip(b"get foo\r\n", b"END\r\n");
        c.roundtrip(b"set toast 0 0 2\r\nhi\r\n", b"STORED\r\n");
        c.roundtrip(b"get toast\r\n", b"VALUE toast 0 2\r\nhi\r\nEND\r\n");
        // Once authenticated, a `set` with credentials as its value is an ordinary set.
        c.roundtrip(b"set foo 0 0 7\r\nfoo bad\r\n", b"STORED\r\n");
        c.roundtrip(b"get foo\r\n", b"VALUE foo 0 7\r\nfoo bad\r\nEND\r\n");
        c.roundtrip(b"mg foo v\r\n", b"VA 7\r\nfoo bad\r\n");
        c.roundtrip(b"mn\r\n", b"MN\r\n");
        c.roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");

        let mut c2 = server.connect();
        c2.roundtrip(b"set foo 0 0 10\r\nbaaaz quux\r\n", b"STORED\r\n");
        c2.roundtrip(b"set toast2 0 0 2\r\nho\r\n", b"STORED\r\n");
        c2.roundtrip(b"get toast2\r\n", b"VALUE toast2 0 2\r\nho\r\nEND\r\n");
        c2.roundtrip(b"get toast\r\n", b"VALUE toast 0 2\r\nhi\r\nEND\r\n");
        // A login pipelined with commands: they run once it has succeeded.
        let mut c3 = server.connect();
        let mut req = auth_request(b"foo bar");
        req.extend_from_slice(b"set p 0 0 1\r\n1\r\nget p\r\n");
        c3.roundtrip(&req, b"STORED\r\nSTORED\r\nVALUE p 0 1\r\n1\r\nEND\r\n");
        c3.roundtrip(b"quit\r\n", b"");
        c3.expect_closed();
    });
}

/// Wrong passwords, unknown users and near misses fail, and the connection may try again.
#[test]
fn wrong_credentials_fail_and_may_be_retried() {
    for_each_config(|args| {
        let (server, _dir, _) = server_with("wrong", b"foo:bar\nbaaaz:quux\n", args);
        let mut c = server.connect();
        for token in [
            &b"foo baz"[..],
            b"foo ba",
            b"foo barr",
            b"fo bar",
            b"nobody bar",
            b"foo quux",
            b"baaaz bar",
            b"FOO bar",
            b"foo bar\r",
            b"foo:bar x",
        ] {
            c.roundtrip(&auth_request(token), FAILURE);
            c.roundtrip(b"get k\r\n", UNAUTHENTICATED);
        }
        c.roundtrip(&auth_request(b"baaaz quux"), b"STORED\r\n");
        c.roundtrip(b"get k\r\n", b"END\r\n");
    });
}

/// Data blocks that are no `<user> <password>`, and what still counts as one: the first two
/// space-separated tokens, up to a NUL; the command line's key, flags and exptime are ignored.
#[test]
fn token_format() {
    for_each_config(|args| {
        let (server, _dir, _) = server_with("token", b"foo:bar\n", args);
        let mut c = server.connect();
        for token in [
            &b"foobar"[..],
            b"foo ",
            b" bar",
            b"",
            b"foo\tbar",
            b"foo\0 bar",
        ] {
            c.roundtrip(&auth_request(token), BAD_TOKEN);
        }
        // The block must end in CRLF; exactly its declared length is consumed.
        c.roundtrip(b"set k 0 0 7\r\nfoo barXY", BAD_TERMINATION);
        c.roundtrip(b"set k 0 0 7\r\nfoo bar\n\r\n", BAD_TERMINATION);
        c.roundtrip(b"\r\n", UNAUTHENTICATED);
        for accepted in [
            &b"set foo 0 0 9\r\nfoo bar x\r\n"[..],
            b"set foo 0 0 11\r\n foo   bar \r\n",
            b"set foo 0 0 9\r\nfoo bar\0x\r\n",
            b"  set  k x y 7 noreply\r\nfoo bar\r\n",
            b"set k 0 0 7\nfoo bar\r\n",
            b"set k 0 0 +7\r\nfoo bar\r\n",
        ] {
            let mut c = server.connect();
            c.roundtrip(accepted, b"STORED\r\n");
        }
        // The length is kept to 32 bits, as memcached keeps it: 2^32 is an empty block.
        let mut c = server.connect();
        c.roundtrip(b"set k 0 0 4294967296\r\n\r\n", BAD_TOKEN);
        // A key past 250 bytes does not matter.
        let mut req = format!("set {} 0 0 7\r\n", "k".repeat(300)).into_bytes();
        req.extend_from_slice(b"foo bar\r\n");
        c.roundtrip(&req, b"STORED\r\n");
    });
}

/// Before authenticating, every command but a well-formed `set` is refused with
/// `CLIENT_ERROR unauthenticated` and the connection stays open (`quit` too); so are meta
/// commands and a binary request (the protocol is ASCII with `-Y`).
#[test]
fn commands_before_auth_are_refused() {
    for_each_config(|args| {
        let (server, _dir, _) = server_with("before", b"foo:bar\n", args);
        let mut c = server.connect();
        for line in [
            &b"get foo\r\n"[..],
            b"gets foo\r\n",
            b"stats\r\n",
            b"stats settings\r\n",
            b"version\r\n",
            b"quit\r\n",
            b"verbosity 1\r\n",
            b"flush_all\r\n",
            b"delete foo\r\n",
            b"incr foo 1\r\n",
            b"touch foo 1\r\n",
            b"mg foo v\r\n",
            b"ms foo 2\r\n",
            b"hi\r\n",
            b"md foo\r\n",
            b"mn\r\n",
            b"me foo\r\n",
            b"watch\r\n",
            b"shutdown\r\n",
            b"add foo 0 0 7\r\n",
            b"foo bar\r\n",
            b"cas foo 0 0 7 1\r\n",
            b"SET foo 0 0 7\r\n",
            b"sets foo 0 0 7\r\n",
            b"set foo 0 0\r\n",
            b"set foo 0 0 abc\r\n",
            b"set foo 0 0 -1\r\n",
            b"set foo 0 0 7x\r\n",
            b"bogus\r\n",
            b"\r\n",
            b"\n\n",
        ] {
            c.roundtrip(line, UNAUTHENTICATED);
        }
        // memcached reads a line only once two bytes have arrived: the `\n` left over above
        // is answered with the next line.
        c.send(b"\r");
        c.read_exact_reply(UNAUTHENTICATED);
        c.roundtrip(b"\n", UNAUTHENTICATED);
        // A binary request is read as text: opcode 0x0a (noop) ends its first "line".
        let mut b = server.connect();
        let mut noop = vec![0x80, 0x0a];
        noop.resize(24, 0);
        b.roundtrip(&noop, UNAUTHENTICATED);
        // Nothing was stored or flushed, and the connection still logs in.
        c.roundtrip(&auth_request(b"foo bar"), b"STORED\r\n");
        c.roundtrip(b"get foo\r\n", b"END\r\n");
        let stats = c.stats_sub("");
        assert_eq!(stat_u64(&stats, "cmd_flush"), 0);
        assert_eq!(stat_u64(&stats, "curr_items"), 0);
    });
}

/// Input that can never make a command: more than 2048 bytes without a newline, or an
/// authentication block too large for memcached's 16 KB read buffer, closes the connection.
#[test]
fn endless_input_closes_the_connection() {
    for_each_config(|args| {
        let (server, _dir, _) = server_with("endless", b"foo:bar\n", args);
        let mut c = server.connect();
        c.send(&[b'x'; 2049]);
        c.expect_closed();
        let mut c = server.connect();
        c.send(b"set k 0 0 20000\r\n");
        c.send(&[b'x'; 16 * 1024 + 100]);
        c.expect_closed();
        // A block that fits is answered.
        let mut c = server.connect();
        let mut token = b"foo ".to_vec();
        token.resize(16 * 1024 - 2, b'b');
        c.roundtrip(&auth_request(&token), FAILURE);
        c.roundtrip(&auth_request(b"foo bar"), b"STORED\r\n");
    });
}

/// `stats` counts logins tried (`auth_cmds`) and refused (`auth_errors`) across connections
/// and shards; malformed attempts count in neither; `stats reset` clears both.
/// `stats settings` shows the file and the ASCII protocol.
#[test]
fn stats_count_logins() {
    for_each_config(|args| {
        let (server, _dir, path) = server_with("stats", b"foo:bar\nbaaaz:quux\n", args);
        // The counts from here on (memcached's readiness probe of the harness logs in too).
        let mut base = login(&server, "foo", "bar");
        let before = base.stats_sub("");
        let count = |stats: &std::collections::HashMap<String, String>, name: &str| {
            stat_u64(stats, name) - stat_u64(&before, name)
        };
        let mut c = server.connect();
        c.roundtrip(&auth_request(b"foobar"), BAD_TOKEN);
        c.roundtrip(b"set k 0 0 7\r\nfoo barXY", BAD_TERMINATION);
        c.roundtrip(b"get k\r\n", UNAUTHENTICATED);
        c.roundtrip(&auth_request(b"foo baz"), FAILURE);
        c.roundtrip(&auth_request(b"foo bar"), b"STORED\r\n");
        for _ in 0..4 {
            let mut other = server.connect();
            other.roundtrip(&auth_request(b"nobody x"), FAILURE);
            other.roundtrip(&auth_request(b"baaaz quux"), b"STORED\r\n");
        }
        let stats = base.stats_sub("");
        assert_eq!(count(&stats, "auth_cmds"), 10);
        assert_eq!(count(&stats, "auth_errors"), 5);
        c.roundtrip(b"stats reset\r\n", b"RESET\r\n");
        let stats = c.stats_sub("");
        assert_eq!(stat_u64(&stats, "auth_cmds"), 0);
        assert_eq!(stat_u64(&stats, "auth_errors"), 0);
        let settings = c.stats_sub("settings");
        assert_eq!(settings["auth_enabled_ascii"], path);
        assert_eq!(settings["auth_enabled_sasl"], "no");
        assert_eq!(settings["binding_protocol"], "ascii");
        assert_eq!(settings["udpport"], "0");
    });
}

/// Without `-Y`: no login is needed, and the fields show it off.
#[test]
fn without_auth_file_nothing_changes() {
    let server = TestServer::start(&["-t", "2"]);
    let mut c = server.connect();
    c.roundtrip(b"set k 0 0 7\r\nfoo bar\r\n", b"STORED\r\n");
    c.roundtrip(b"get k\r\n", b"VALUE k 0 7\r\nfoo bar\r\nEND\r\n");
    let settings = c.stats_sub("settings");
    assert_eq!(settings["auth_enabled_ascii"], "no");
    assert_eq!(settings["binding_protocol"], "auto-negotiate");
    let stats = c.stats_sub("");
    assert_eq!(stat_u64(&stats, "auth_cmds"), 0);
    assert_eq!(stat_u64(&stats, "auth_errors"), 0);
}

/// The auth file as memcached 1.6.18 reads it: every login of several lines (CRLF too), the
/// first eight only, a password with `:` or spaces, the last line of a file of one line
/// without a newline losing its last byte, a long line cut at 255 bytes.
#[test]
fn auth_file_format() {
    let args = ["-t", "2", "--io-backend", "epoll"];
    let ten: Vec<u8> = (0..10)
        .flat_map(|i| format!("u{i}:p{i}\n").into_bytes())
        .collect();
    let mut long = b"foo:".to_vec();
    long.extend_from_slice(&[b'p'; 300]);
    long.extend_from_slice(b"\nx:y\n");
    let p251 = format!("foo {}", "p".repeat(251));
    let p250 = format!("foo {}", "p".repeat(250));
    let cases: [(&[u8], &[&str], &[&str]); 8] = [
        (b"foo:bar\r\nx:y\r\n", &["foo bar", "x y"], &["foo bar\r"]),
        (b"a:b\nfoo:bar", &["a b", "foo bar"], &["foo ba"]),
        (b"foo:bar", &["foo ba"], &["foo bar"]),
        (&ten, &["u0 p0", "u7 p7"], &["u8 p8", "u9 p9"]),
        (b"foo:a:b\nx:b r\n", &["foo a:b"], &["x b", "x b r"]),
        (&long, &[&p251], &[&p250, "x y"]),
        (b"foo:b\rjunk\nx:y\n", &["foo b", "x y"], &["foo b\rjunk"]),
        (b"foo:b\0r\nx:y\n", &["foo b"], &["x y"]),
    ];
    for (data, granted, refused) in cases {
        let (server, _dir, _) = server_with("format", data, &args);
        for token in granted {
            let mut c = server.connect();
            c.roundtrip(&auth_request(token.as_bytes()), b"STORED\r\n");
        }
        for token in refused {
            let mut c = server.connect();
            c.roundtrip(&auth_request(token.as_bytes()), FAILURE);
        }
    }
}

/// An empty file (or any of size 0, such as `/dev/null`) starts a server no one can log in to.
#[test]
fn empty_auth_file_grants_nothing() {
    for (data, path) in [(Some(&b""[..]), None), (None, Some("/dev/null"))] {
        let dir = TempDir::new("empty");
        let path = match (data, path) {
            (Some(d), _) => dir.file("auth", d),
            (None, Some(p)) => p.to_string(),
            (None, None) => unreachable!(),
        };
        let server = TestServer::start(&["-t", "2", "-Y", &path]);
        let mut c = server.connect();
        c.roundtrip(&auth_request(b"foo bar"), FAILURE);
        c.roundtrip(&auth_request(b"  "), BAD_TOKEN);
        c.roundtrip(b"stats\r\n", UNAUTHENTICATED);
    }
}

/// Runs the server under test with `args` (plus a listen address), expecting it to exit at
/// once; returns its exit code and stderr.
fn failed_start(args: &[&str]) -> (i32, String) {
    let mut cmd = if memcached_mode() {
        let mut cmd = Command::new(
            std::env::var("CORECACHE_TEST_MEMCACHED").unwrap_or("/usr/bin/memcached".into()),
        );
        if is_root() {
            cmd.args(["-u", "root"]);
        }
        cmd
    } else {
        Command::new(env!("CARGO_BIN_EXE_corecache"))
    };
    let mut child = cmd
        .args(["-l", "127.0.0.1", "-p", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let deadline = std::time::Instant::now() + common::STARTUP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: the server did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(10)); // bounded exit poll
    };
    let out = child.wait_with_output().expect("collect output");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    let code = status.code().expect("exit code");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Startup errors: memcached's messages (corecache prefixes its name and ends the line) and
/// exit codes for a missing, malformed or unreadable file, and for flags `-Y` cannot go with.
#[test]
fn auth_file_errors_at_startup() {
    let dir = TempDir::new("errors");
    let good = dir.file("good", b"foo:bar\n");
    let missing = dir.path("missing");
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["-Y".into(), missing.clone()],
            1,
            format!(
                "Could not open authfile [{missing}] for reading, error No such file or directory: No such file or directory"
            ),
        ),
        (
            vec!["-Y".into(), String::new()],
            1,
            "Could not open authfile [] for reading, error No such file or directory: No such file or directory".into(),
        ),
    ];
    let malformed = [
        &b"nocolon\n"[..],
        b"foo:bar\n\nx:y\n",
        b"foo:bar\nbad\n",
        b"\n",
        b"foo:bar\r\n",
    ];
    let mut cases = cases;
    for (i, data) in malformed.iter().enumerate() {
        let path = dir.file(&format!("bad{i}"), data);
        cases.push((
            vec!["-Y".into(), path.clone()],
            1,
            format!("Authfile [{path}] has a malformed entry. Should be 'user:password'"),
        ));
    }
    for b in ["auto", "binary"] {
        cases.push((
            vec!["-B".into(), b.into(), "-Y".into(), missing.clone()],
            64,
            "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens."
                .into(),
        ));
    }
    cases.push((
        vec!["-U".into(), "11999".into(), "-Y".into(), good.clone()],
        64,
        "Cannot use UDP with ascii authentication enabled (-U 0 to disable)".into(),
    ));
    for (args, code, message) in cases {
        let mut argv: Vec<&str> = vec!["-U", "0"];
        if args.first().map(String::as_str) == Some("-U") {
            argv.clear();
        }
        argv.extend(args.iter().map(String::as_str));
        let (got_code, stderr) = failed_start(&argv);
        assert_eq!(got_code, code, "{argv:?}: {stderr}");
        assert!(stderr.contains(&message), "{argv:?}: {stderr:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{argv:?}: {stderr:?}");
    }
}

/// As memcached, the file is read as the `-u` user: one only root may read fails to start.
#[test]
fn auth_file_is_read_as_the_user() {
    if !is_root() {
        eprintln!("skipped: needs root for -u");
        return;
    }
    let dir = TempDir::new("user");
    let path = dir.file("auth", b"foo:bar\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stderr) = failed_start(&["-U", "0", "-u", "nobody", "-Y", &path]);
    assert_eq!(code, 1, "{stderr}");
    let message = format!(
        "Could not open authfile [{path}] for reading, error Permission denied: Permission denied"
    );
    assert!(stderr.contains(&message), "{stderr:?}");
    // Readable by the user: served.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = TestServer::start(&["-t", "1", "-Y", &path]);
    login(&server, "foo", "bar").roundtrip(b"get x\r\n", b"END\r\n");
}

/// Random input before authenticating, cut at random points, never takes the server down:
/// each connection is answered or closed, and a new one still logs in. corecache only: memcached
/// answers only the last of the commands that arrive in one read.
#[test]
fn random_input_before_auth_is_survived() {
    if common::skip_in_memcached_mode("replies to pipelined unauthenticated commands differ") {
        return;
    }
    for_each_config(|args| {
        let (server, _dir, _) = server_with("random", b"foo:bar\n", args);
        let mut rng = common::Rng::new(0x5eed_a17c);
        let pieces: [&[u8]; 9] = [
            b"set k 0 0 7\r\n",
            b"foo bar\r\n",
            b"set k 0 0 3\r\n",
            b"get k\r\n",
            b"\r\n",
            b"\n",
            b" ",
            b"\0",
            b"set k 0 0 99999\r\n",
        ];
        for _ in 0..40 {
            let mut c = server.connect();
            let mut input = Vec::new();
            for _ in 0..rng.below(30) {
                if rng.below(3) == 0 {
                    let n = rng.below(64) as usize;
                    input.extend((0..n).map(|_| rng.below(256) as u8));
                } else {
                    input.extend_from_slice(pieces[rng.below(pieces.len() as u64) as usize]);
                }
            }
            for chunk in input.chunks(1 + rng.below(50) as usize) {
                c.send(chunk);
            }
        }
        let mut c = login(&server, "foo", "bar");
        c.roundtrip(
            b"set k 0 0 1\r\nv\r\nget k\r\n",
            b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n",
        );
    });
}
