//! Integration-test harness: start the real server binary and talk to it byte by byte.
//!
//! # Backends under test
//! * Default: `env!("CARGO_BIN_EXE_corecache")` started as
//!   `corecache -l 127.0.0.1 -p 0 <args>`. The harness waits (at most [`STARTUP_TIMEOUT`]) for
//!   the readiness line `listening 127.0.0.1:<port>` on stdout, read by a thread and handed over
//!   a channel, so a silent or crashed server fails fast with its stderr, never hangs.
//! * Validation mode, `CORECACHE_TEST_SERVER=memcached`: the same tests run against
//!   `/usr/bin/memcached -U 0 -l 127.0.0.1 -p <free port>` (plus `-u root` when running as root).
//!   Flags memcached knows (`-t -m -c -I -f -C -v -F -M -X -B -R -b -D -n -o -a -U -Y`, and `-p -l`
//!   for UNIX socket servers) are passed on, corecache-only flags
//!   (`--io-backend`, `--cpus`) are dropped. Readiness = a TCP connect succeeds (bounded poll).
//!   With `-Y <file>` the readiness probe logs in first with the file's first `user:password`
//!   line (or, when it has none that logs in, takes a `CLIENT_ERROR` as readiness).
//!   Passing in this mode proves the expected bytes are memcached's, not guesses.
//!   `CORECACHE_TEST_MEMCACHED` overrides the memcached path.
//! * `CORECACHE_TEST_BACKENDS=epoll` (comma list) limits [`for_each_config`] to some io backends.
//! * UNIX sockets: [`TestServer::start_unix`] starts `corecache -s <path> <args>` and waits for
//!   `listening unix:<path>`; in validation mode `memcached -s <path> <args>`, ready once the
//!   socket answers `stats` with memcached's pid. [`TestServer::connect_unix`] connects.
//! * TLS: [`TestServer::start_tls`] adds `-Z` and the test certificates of `tests/tls/`
//!   (`-o ssl_chain_cert=...,ssl_key=...`); in validation mode the readiness probe speaks TLS
//!   when the args hold `-Z`. [`TestServer::connect_tls`] (and [`Client::connect_tls`] with a
//!   [`tls_client_config`]) is a [`TlsClient`]: the same [`Client`] over rustls.
//! * UDP: [`TestServer::start_udp`] adds `-U -1` (a free port) and reads the port from the
//!   `listening udp:<addr>` line; in validation mode memcached gets `-U <a port found free>`
//!   (retried like its TCP port). [`TestServer::udp_addr`] is the address, [`UdpClient`] talks
//!   to it in memcached's frames.
//!
//! # API
//! * [`TestServer::start`], [`TestServer::start_corecache_on`] (another loopback address),
//!   [`TestServer::start_unix`], [`TestServer::addr`], [`TestServer::connect`],
//!   [`TestServer::connect_unix`], [`TestServer::unix_path`],
//!   [`TestServer::stats`] / [`TestServer::stats_sub`], [`TestServer::pid`],
//!   [`TestServer::rss_bytes`], [`TestServer::terminate`], [`TestServer::is_memcached`],
//!   [`TestServer::is_running`], [`TestServer::stdout_lines`], [`TestServer::stderr_text`].
//! * Helpers: [`memcached_mode`], [`skip_in_memcached_mode`], [`wait_until`] (bounded poll),
//!   [`is_root`], [`process_gone`],
//!   [`stat_u64`], [`assert_bytes_eq`], [`Rng`] (seeded xorshift).
//! * [`Client`] (over TCP, or a `UnixStream` from [`Client::connect_unix`]): [`Client::send`],
//!   [`Client::read_exact_reply`], [`Client::roundtrip`],
//!   [`Client::read_line`], [`Client::read_until_end`], [`Client::read_through_line`] (and
//!   [`Client::read_through_line_with`], for slow readers), [`Client::expect_closed`],
//!   [`Client::roundtrip_pattern`] (expected bytes with `{cas:NAME}` captures).
//! * [`for_each_config`]: run a body against `-t 1`/`-t 2` x `epoll`/`uring` (one config in
//!   memcached mode). [`escape`] renders bytes with `\r\n` visible.
//!
//! Drop kills and reaps the child; when the test is panicking, the server's stderr is printed.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print its readiness line (or accept a connection).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout of every [`Client`] socket, and the default deadline of reads.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

const MEMCACHED: &str = "/usr/bin/memcached";
/// Starts of memcached tried before a failure is reported (each on a new port).
const MEMCACHED_START_TRIES: usize = 5;

/// True when `CORECACHE_TEST_SERVER=memcached`: tests run against the real memcached.
pub fn memcached_mode() -> bool {
    std::env::var("CORECACHE_TEST_SERVER").is_ok_and(|v| v == "memcached")
}

/// Skip helper for corecache-specific tests. Returns true (and says so) in memcached mode.
pub fn skip_in_memcached_mode(what: &str) -> bool {
    if memcached_mode() {
        eprintln!("skipped in memcached mode: {what}");
        true
    } else {
        false
    }
}

/// Runs `body` against every server configuration: `-t 1` and `-t 2`, each with
/// `--io-backend epoll` and `--io-backend uring` (4 configs). In memcached mode only
/// `-t 2 --io-backend epoll` runs (memcached ignores the backend). The config is printed first so
/// a failure says which one broke. `args` is always `["-t", N, "--io-backend", B]`, so
/// `args[1]` is the shard count.
pub fn for_each_config(mut body: impl FnMut(&[&str])) {
    let backends: Vec<String> = match std::env::var("CORECACHE_TEST_BACKENDS") {
        Ok(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        Err(_) => vec!["epoll".to_string(), "uring".to_string()],
    };
    let mut configs: Vec<Vec<String>> = Vec::new();
    for threads in ["1", "2"] {
        for backend in &backends {
            configs.push(vec![
                "-t".into(),
                threads.into(),
                "--io-backend".into(),
                backend.clone(),
            ]);
        }
    }
    if memcached_mode() {
        configs = vec![vec![
            "-t".into(),
            "2".into(),
            "--io-backend".into(),
            "epoll".into(),
        ]];
    }
    for config in configs {
        let args: Vec<&str> = config.iter().map(String::as_str).collect();
        eprintln!("=== config: {}", args.join(" "));
        body(&args);
    }
}

/// Starts a server for `args` (a [`for_each_config`] config) and, for io_uring, a second one
/// with the receive buffer ring that kernels before 6.12 get (whole 4 KiB buffers, not
/// incrementally consumed ones): the receive paths differ for large values.
pub fn start_each_receive_ring(args: &[&str]) -> Vec<TestServer> {
    let mut servers = vec![TestServer::start(args)];
    if !memcached_mode() && args.contains(&"uring") {
        eprintln!("=== and with whole receive buffers");
        servers.push(TestServer::start_corecache_with(args, |cmd| {
            cmd.env("CORECACHE_TEST_WHOLE_BUFS", "1");
        }));
    }
    servers
}

/// Renders bytes for assertion messages: printable ASCII as is, `\r` `\n` `\t` `\\` escaped,
/// everything else `\xNN`. Long inputs are shortened in the middle.
pub fn escape(bytes: &[u8]) -> String {
    const KEEP: usize = 400;
    let render = |b: &[u8]| -> String {
        let mut s = String::new();
        for &c in b {
            match c {
                b'\r' => s.push_str("\\r"),
                b'\n' => s.push_str("\\n"),
                b'\t' => s.push_str("\\t"),
                b'\\' => s.push_str("\\\\"),
                0x20..=0x7e => s.push(c as char),
                _ => s.push_str(&format!("\\x{c:02x}")),
            }
        }
        s
    };
    if bytes.len() <= 2 * KEEP {
        render(bytes)
    } else {
        format!(
            "{}...<{} bytes>...{}",
            render(&bytes[..KEEP]),
            bytes.len() - 2 * KEEP,
            render(&bytes[bytes.len() - KEEP..])
        )
    }
}

/// Asserts `actual == expected`, printing both escaped and the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], context: &str) {
    if actual != expected {
        let at = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        let from = at.saturating_sub(40);
        panic!(
            "{context}: reply mismatch at byte {at} (expected {} bytes, got {})\n  expected: {}\n  actual:   {}\n  around mismatch:\n    expected: {}\n    actual:   {}",
            expected.len(),
            actual.len(),
            escape(expected),
            escape(actual),
            escape(&expected[from..expected.len().min(at + 40)]),
            escape(&actual[from..actual.len().min(at + 40)]),
        );
    }
}

/// A running server under test. Drop kills (SIGKILL) and reaps it.
pub struct TestServer {
    child: Option<Child>,
    addr: SocketAddr,
    /// The UDP address served, if started with [`TestServer::start_udp`].
    udp_addr: Option<SocketAddr>,
    /// The UNIX socket served (`-s`), if any; `addr` is then meaningless.
    unix_path: Option<PathBuf>,
    memcached: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

fn drain_stderr(stderr: ChildStderr, sink: Arc<Mutex<Vec<u8>>>) {
    thread::spawn(move || {
        let mut stderr = stderr;
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    });
}

/// How the readiness probe of a server with an auth file (`-Y`) gets past authentication.
enum ProbeLogin {
    /// No `-Y`: `stats` answers at once.
    None,
    /// The auth file's first login: authenticate with it, then `stats`.
    Login(Vec<u8>),
    /// An auth file without a usable first line: the server is taken as ready once it refuses
    /// `stats` as unauthenticated (its pid cannot be checked).
    Unknown,
}

/// The readiness probe's login for `args` (see [`ProbeLogin`]).
fn probe_login(args: &[&str]) -> ProbeLogin {
    let Some(i) = args.iter().position(|&a| a == "-Y") else {
        return ProbeLogin::None;
    };
    let data = args
        .get(i + 1)
        .and_then(|path| std::fs::read(path).ok())
        .unwrap_or_default();
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    match first.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 && colon + 1 < first.len() && data.contains(&b'\n') => {
            let mut token = first[..colon].to_vec();
            token.push(b' ');
            token.extend_from_slice(&first[colon + 1..]);
            let mut req = format!("set probe 0 0 {}\r\n", token.len()).into_bytes();
            req.extend_from_slice(&token);
            req.extend_from_slice(b"\r\n");
            ProbeLogin::Login(req)
        }
        _ => ProbeLogin::Unknown,
    }
}

/// Reads from `stream` until `buf` ends with `end` (bounded); false on a close or error.
fn read_until(stream: &mut impl Read, buf: &mut Vec<u8>, end: &[u8]) -> bool {
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(end) && buf.len() < 1 << 16 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.ends_with(end)
}

/// The `pid` a memcached-protocol server reports in `stats`, if it answers in time (the stream
/// has a read timeout), logging in first as `login` says. With [`ProbeLogin::Unknown`], an
/// `unauthenticated` refusal answers `expected`.
fn stats_pid_as(mut stream: impl Read + Write, login: &ProbeLogin, expected: u32) -> Option<u32> {
    match login {
        ProbeLogin::None => {}
        ProbeLogin::Login(req) => {
            stream.write_all(req).ok()?;
            let mut buf = Vec::new();
            if !read_until(&mut stream, &mut buf, b"\r\n") {
                return None;
            }
            if buf != b"STORED\r\n" {
                // A first line the server reads otherwise (see `tests/auth.rs`): its refusal
                // shows it serves, though not whose it is.
                return buf.starts_with(b"CLIENT_ERROR ").then_some(expected);
            }
        }
        ProbeLogin::Unknown => {
            stream.write_all(b"stats\r\n").ok()?;
            let mut buf = Vec::new();
            let refused = read_until(&mut stream, &mut buf, b"\r\n")
                && buf == b"CLIENT_ERROR unauthenticated\r\n";
            return refused.then_some(expected);
        }
    }
    stats_pid(stream)
}

/// The `pid` a memcached-protocol server reports in `stats`, if it answers in time (the stream
/// has a read timeout).
fn stats_pid(mut stream: impl Read + Write) -> Option<u32> {
    stream.write_all(b"stats\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"END\r\n") && buf.len() < 1 << 16 {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .find_map(|l| l.strip_prefix("STAT pid ")?.trim().parse().ok())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    socket.local_addr().unwrap().port()
}

/// Translates corecache args to memcached args: known flags pass, corecache-only ones drop.
fn memcached_args(args: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        match a {
            // `-o` options are memcached's own (corecache has none); they pass through.
            // `-U` follows the harness's own `-U`, and memcached takes the last one given.
            "-t" | "-m" | "-c" | "-I" | "-f" | "-o" | "-B" | "-R" | "-b" | "-D" | "-n" | "-a"
            | "-p" | "-l" | "-U" | "-Y" | "-e" => {
                out.push(a.to_string());
                out.push(args.get(i + 1).expect("flag needs a value").to_string());
                i += 2;
            }
            "-C" | "-v" | "-vv" | "-A" | "-F" | "-M" | "-X" | "-W" | "-Z" => {
                out.push(a.to_string());
                i += 1;
            }
            "--io-backend" | "--cpus" => i += 2,
            other => panic!("memcached mode: don't know how to translate arg {other:?}"),
        }
    }
    out
}

impl TestServer {
    /// Starts a server with extra `args` (memcached-style flags, e.g. `["-t", "2", "-m", "8"]`)
    /// and returns once it serves. Panics with the server's stderr if it does not come up
    /// within [`STARTUP_TIMEOUT`].
    pub fn start(args: &[&str]) -> TestServer {
        if memcached_mode() {
            Self::start_memcached(args)
        } else {
            Self::start_corecache(args)
        }
    }

    pub fn start_corecache(args: &[&str]) -> TestServer {
        Self::start_corecache_with(args, |_| {})
    }

    /// Starts corecache with its soft and hard RLIMIT_NOFILE set to `nofile`.
    pub fn start_corecache_with_nofile(args: &[&str], nofile: u64) -> TestServer {
        use std::os::unix::process::CommandExt;
        Self::start_corecache_with(args, |cmd| {
            // SAFETY: the closure runs in the forked child before exec and calls only
            // setrlimit, which is async-signal-safe; it touches no memory shared with the parent.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: nofile as libc::rlim_t,
                        rlim_max: nofile as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// Starts corecache after `configure` has adjusted its command.
    pub fn start_corecache_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> TestServer {
        Self::start_corecache_on("127.0.0.1", args, configure)
    }

    /// Starts corecache listening on `ip` (another loopback address, such as `127.0.0.2`, gives
    /// nodes of a cluster distinct addresses), port 0, after `configure` has adjusted its command.
    pub fn start_corecache_on(
        ip: &str,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corecache"));
        configure(&mut cmd);
        cmd.args(["-l", ip, "-p", "0"]).args(args);
        let (mut server, line) = Self::launch_corecache(cmd, args);
        let Some(addr) = line.trim_end().strip_prefix("listening ") else {
            server.fail_startup(&format!(
                "first stdout line is not `listening <addr>`: {:?}",
                line
            ))
        };
        server.addr = match addr.parse() {
            Ok(a) => a,
            Err(e) => server.fail_startup(&format!("bad address in {line:?}: {e}")),
        };
        server
    }

    /// Starts a server on the UNIX socket `path` (`-s <path>` plus `args`, which may carry
    /// `-a <mask>`) and returns once it serves there: corecache has printed
    /// `listening unix:<path>`, or (validation mode) memcached answers `stats` on the socket.
    pub fn start_unix(path: &Path, args: &[&str]) -> TestServer {
        if memcached_mode() {
            return Self::start_memcached_unix(path, args);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corecache"));
        cmd.arg("-s").arg(path).args(args);
        let (mut server, line) = Self::launch_corecache(cmd, args);
        let expected = format!("listening unix:{}", path.display());
        if line.trim_end() != expected {
            server.fail_startup(&format!("first stdout line is {line:?}, not {expected:?}"));
        }
        server.unix_path = Some(path.to_path_buf());
        server
    }

    /// Spawns corecache (`cmd`, its arguments set) and waits for its first stdout line.
    fn launch_corecache(mut cmd: Command, args: &[&str]) -> (TestServer, String) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {:?}: {e}", cmd.get_program()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain_stderr(child.stderr.take().unwrap(), stderr.clone());
        let stdout = child.stdout.take().unwrap();
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let record = stdout_lines.clone();
        let (tx, rx) = mpsc::channel::<Result<String, String>>();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut sent = false;
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) => {
                        if !sent {
                            let _ = tx.send(Err("stdout closed before the readiness line".into()));
                        }
                        return;
                    }
                    Ok(_) => {
                        record
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(line.clone());
                        // Keep draining stdout after the first line so the child never blocks.
                        if !sent {
                            let _ = tx.send(Ok(line.clone()));
                            sent = true;
                        }
                    }
                    Err(e) => {
                        if !sent {
                            let _ = tx.send(Err(format!("reading stdout: {e}")));
                        }
                        return;
                    }
                }
            }
        });
        let mut server = TestServer {
            child: Some(child),
            addr: "127.0.0.1:1".parse().unwrap(),
            udp_addr: None,
            unix_path: None,
            memcached: false,
            stderr,
            stdout_lines,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(why)) => server.fail_startup(&format!("corecache did not start: {why}")),
            Err(_) => server.fail_startup(&format!(
                "corecache printed no readiness line within {STARTUP_TIMEOUT:?}"
            )),
        };
        (server, line)
    }

    /// memcached on the UNIX socket `path`: no port to race for, so one start.
    fn start_memcached_unix(path: &Path, args: &[&str]) -> TestServer {
        let bin = std::env::var("CORECACHE_TEST_MEMCACHED").unwrap_or_else(|_| MEMCACHED.into());
        let mut cmd = Command::new(&bin);
        // memcached refuses to run as root without -u.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        let mut child = cmd
            .args(["-U", "0"])
            .arg("-s")
            .arg(path)
            .args(memcached_args(args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {bin}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain_stderr(child.stderr.take().unwrap(), stderr.clone());
        let mut server = TestServer {
            child: Some(child),
            addr: "127.0.0.1:1".parse().unwrap(),
            udp_addr: None,
            unix_path: Some(path.to_path_buf()),
            memcached: true,
            stderr,
            stdout_lines: Arc::new(Mutex::new(Vec::new())),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let pid = server.pid();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.as_mut().unwrap().try_wait() {
                server.fail_startup(&format!("memcached exited at startup: {status}"));
            }
            if let Ok(probe) = UnixStream::connect(path) {
                let _ = probe.set_read_timeout(Some(Duration::from_secs(2)));
                if stats_pid(probe) == Some(pid) {
                    return server;
                }
            }
            if Instant::now() > deadline {
                server.fail_startup("memcached did not accept a connection in time");
            }
            thread::sleep(Duration::from_millis(10)); // bounded readiness poll
        }
    }

    pub fn start_memcached(args: &[&str]) -> TestServer {
        Self::start_memcached_with(args, false)
    }

    /// memcached, serving UDP too when `udp`.
    fn start_memcached_with(args: &[&str], udp: bool) -> TestServer {
        // memcached cannot bind port 0, so it gets a port found free a moment earlier; another
        // test can take it in between. A start that exits at once is retried on a new port.
        for _ in 1..MEMCACHED_START_TRIES {
            if let Some(server) = Self::try_start_memcached(args, udp, false) {
                return server;
            }
        }
        Self::try_start_memcached(args, udp, true).expect("the last try panics on failure")
    }

    /// A server that also serves memcached's UDP protocol: corecache with `-U -1` (the port
    /// comes from its `listening udp:` line), memcached with `-U <a port found free>`.
    pub fn start_udp(args: &[&str]) -> TestServer {
        if memcached_mode() {
            return Self::start_memcached_with(args, true);
        }
        let args: Vec<&str> = ["-U", "-1"].iter().chain(args).copied().collect();
        let mut server = Self::start_corecache(&args);
        let mut line = None;
        wait_until(STARTUP_TIMEOUT, || {
            line = server.stdout_lines().into_iter().find_map(|l| {
                l.trim_end()
                    .strip_prefix("listening udp:")
                    .map(str::to_owned)
            });
            line.is_some()
        });
        let Some(addr) = line else {
            server.fail_startup("no `listening udp:<addr>` line")
        };
        server.udp_addr = match addr.parse() {
            Ok(a) => Some(a),
            Err(e) => server.fail_startup(&format!("bad UDP address {addr:?}: {e}")),
        };
        server
    }

    /// One start on a fresh port (and a fresh UDP port when `udp`). An early exit is `None`,
    /// or a panic with the server's stderr when `last`.
    fn try_start_memcached(args: &[&str], udp: bool, last: bool) -> Option<TestServer> {
        let bin = std::env::var("CORECACHE_TEST_MEMCACHED").unwrap_or_else(|_| MEMCACHED.into());
        let port = free_port();
        let udp_port = udp.then(free_udp_port);
        let mut cmd = Command::new(&bin);
        // memcached refuses to run as root without -u.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        let udp_arg = udp_port.unwrap_or(0).to_string();
        cmd.args(["-U", &udp_arg, "-l", "127.0.0.1", "-p", &port.to_string()])
            .args(memcached_args(args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {bin}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain_stderr(child.stderr.take().unwrap(), stderr.clone());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut server = TestServer {
            child: Some(child),
            addr,
            udp_addr: udp_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            unix_path: None,
            memcached: true,
            stderr,
            stdout_lines: Arc::new(Mutex::new(Vec::new())),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let login = probe_login(args);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.as_mut().unwrap().try_wait() {
                if !last {
                    server.kill_and_reap();
                    return None;
                }
                server.fail_startup(&format!("memcached exited at startup: {status}"));
            }
            if let Ok(probe) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                // The port may have gone to another test's server: ours reports our pid.
                let pid = server.child.as_ref().map(|c| c.id());
                let _ = probe.set_read_timeout(Some(Duration::from_secs(2)));
                let answer = if args.contains(&"-Z") {
                    // With the client certificate, which servers that verify clients
                    // (`ssl_verify_mode`, `ssl_ca_cert` of `tests/tls/`) take.
                    let session = rustls::ClientConnection::new(
                        tls_client_config(true),
                        "localhost".try_into().unwrap(),
                    )
                    .unwrap();
                    let stream = rustls::StreamOwned::new(session, probe);
                    stats_pid_as(stream, &login, pid.unwrap_or(0))
                } else {
                    stats_pid_as(probe, &login, pid.unwrap_or(0))
                };
                match answer {
                    Some(p) if Some(p) == pid => return Some(server),
                    Some(_) if !last => {
                        server.kill_and_reap();
                        return None;
                    }
                    Some(p) => server.fail_startup(&format!("port {port} answers as pid {p}")),
                    None => {} // not answering yet
                }
            }
            if Instant::now() > deadline {
                server.fail_startup("memcached did not accept a connection in time");
            }
            thread::sleep(Duration::from_millis(10)); // bounded readiness poll
        }
    }

    fn fail_startup(&mut self, why: &str) -> ! {
        let status = match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => format!("exited: {status}"),
            _ => "still running (killed now)".to_string(),
        };
        self.kill_and_reap();
        // Give the stderr drain thread a moment to collect the child's last words (bounded).
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.stderr_text().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let stderr = self.stderr_text();
        // Drop must not print it a second time.
        self.stderr = Arc::new(Mutex::new(Vec::new()));
        panic!(
            "{why}\n  server: {status}\n  args: {:?}\n  stderr:\n{stderr}",
            self.args
        );
    }

    fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The UDP address the server serves (it must have been started with
    /// [`TestServer::start_udp`]).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr.expect("not a UDP server")
    }

    /// A new UDP client of the server (see [`TestServer::udp_addr`]).
    pub fn udp_client(&self) -> UdpClient {
        UdpClient::new(self.udp_addr())
    }

    /// The UNIX socket the server listens on, if it was started with [`TestServer::start_unix`].
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix_path.as_deref()
    }

    /// A new connection to the server's UNIX socket (it must have been started with
    /// [`TestServer::start_unix`]).
    pub fn connect_unix(&self) -> Client<UnixStream> {
        Client::connect_unix(self.unix_path.as_deref().expect("not a UNIX socket server"))
    }

    /// True when this is the real memcached (validation mode).
    pub fn is_memcached(&self) -> bool {
        self.memcached
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already stopped").id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// CPU time (user + system) the server process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = &stat[stat.rfind(')').expect("comm field") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(ticks * 1_000_000 / hz)
    }

    /// Resident set size of the server process (VmRSS from /proc/PID/status), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("VmRSS value");
        kb * 1024
    }

    /// A new connection: TCP_NODELAY, read/write timeouts of [`IO_TIMEOUT`].
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A server with TLS (`-Z` and the test server certificate of `tests/tls/`) and `args`.
    pub fn start_tls(args: &[&str]) -> TestServer {
        let certs = tls_server_certs_option();
        let mut all = vec!["-Z", "-o", certs.as_str()];
        all.extend_from_slice(args);
        Self::start(&all)
    }

    /// A TLS connection trusting the test CA, without a client certificate (handshake done).
    pub fn connect_tls(&self) -> TlsClient {
        Client::connect_tls(self.addr, tls_client_config(false))
    }

    /// `stats` on a fresh connection, as a map from name to value.
    pub fn stats(&self) -> HashMap<String, String> {
        self.stats_sub("")
    }

    /// `stats <sub>` (e.g. "settings") on a fresh connection, as a map.
    pub fn stats_sub(&self, sub: &str) -> HashMap<String, String> {
        let mut c = self.connect();
        c.stats_sub(sub)
    }

    /// Sends SIGTERM and waits (bounded by `timeout`) for the exit; returns its status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.stop_with(libc::SIGTERM, timeout)
    }

    /// Sends `signal` and waits (bounded by `timeout`) for the exit; returns its status.
    pub fn stop_with(&mut self, signal: libc::c_int, timeout: Duration) -> ExitStatus {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                self.kill_and_reap();
                panic!("server did not exit within {timeout:?} of signal {signal}");
            }
            thread::sleep(Duration::from_millis(5)); // bounded exit poll
        }
    }

    /// Every stdout line (with its newline) corecache printed so far (empty for memcached).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (bounded by `timeout`) for the server to exit by itself; its status, or None.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut()?.try_wait().ok()? {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5)); // bounded exit poll
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&err).into_owned()
    }

    /// Everything the server wrote to stderr, once it holds `text` (or 10 s passed). A line
    /// the server wrote before its `listening` line may still be on its way through the
    /// drain thread when the test gets to it, so a test looking for one waits here.
    pub fn stderr_holding(&self, text: &str) -> String {
        wait_until(Duration::from_secs(10), || {
            self.stderr_text().contains(text)
        });
        self.stderr_text()
    }

    /// Kills corecache with SIGKILL (a crash: it writes and syncs nothing more), reaps it, and
    /// starts a new one with the same arguments (so, with `--log-dir`, on the same log). Returns
    /// once the new one serves, which is after it has replayed the log.
    pub fn crash_and_restart(&mut self) {
        self.kill_and_reap();
        self.start_again();
    }

    /// Stops corecache with SIGTERM (a clean exit), then starts it again as
    /// [`TestServer::crash_and_restart`] does.
    pub fn stop_and_restart(&mut self) {
        let status = self.terminate(Duration::from_secs(10));
        assert!(status.success(), "exit status {status:?}");
        self.start_again();
    }

    fn start_again(&mut self) {
        let args = self.args.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        *self = TestServer::start_corecache(&args);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill_and_reap();
        if thread::panicking() {
            let err = self.stderr_text();
            if !err.is_empty() {
                eprintln!(
                    "--- server stderr ({:?}) ---\n{err}\n--- end of server stderr ---",
                    self.args
                );
            }
        }
    }
}

/// One client connection with an internal read buffer (bytes read but not yet consumed), over
/// TCP unless made by [`Client::connect_unix`].
pub struct Client<S = TcpStream> {
    stream: S,
    buf: Vec<u8>,
    vars: HashMap<String, Vec<u8>>,
}

impl Client<UnixStream> {
    /// Connects to the UNIX socket at `path` with [`IO_TIMEOUT`] read/write timeouts.
    pub fn connect_unix(path: &Path) -> Client<UnixStream> {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::wrap(stream)
    }
}

/// A [`Client`] over TLS.
pub type TlsClient = Client<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// The directory of the test certificates (see `tests/tls/README.md`).
pub fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("tls")
}

/// A file of [`tls_dir`] as a string path.
pub fn tls_file(name: &str) -> String {
    tls_dir().join(name).to_string_lossy().into_owned()
}

/// `ssl_chain_cert=<server.pem>,ssl_key=<server.key>`, for `-o`.
pub fn tls_server_certs_option() -> String {
    format!(
        "ssl_chain_cert={},ssl_key={}",
        tls_file("server.pem"),
        tls_file("server.key")
    )
}

/// A rustls client config trusting the test CA, presenting the test client certificate when
/// `client_cert`.
pub fn tls_client_config(client_cert: bool) -> Arc<rustls::ClientConfig> {
    tls_client_config_with(client_cert.then_some(("client.pem", "client.key")), None)
}

/// A rustls client config trusting the test CA, with the certificate and key files of
/// [`tls_dir`] named by `cert`, limited to one TLS version when `version` says so.
pub fn tls_client_config_with(
    cert: Option<(&str, &str)>,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(tls_dir().join("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    let one;
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        Some(v) => {
            one = [v];
            &one
        }
        None => &all,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some((pem, key)) => {
            let chain = CertificateDer::pem_file_iter(tls_dir().join(pem))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(tls_dir().join(key)).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

impl TlsClient {
    /// Connects to `addr` over TLS (server name `localhost`) and completes the handshake;
    /// panics if it fails.
    #[track_caller]
    pub fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsClient {
        Self::try_connect_tls(addr, config).unwrap_or_else(|e| panic!("TLS to {addr}: {e}"))
    }

    /// Connects and completes the handshake, or says why it failed.
    pub fn try_connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<TlsClient, String> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let session = rustls::ClientConnection::new(config, "localhost".try_into().unwrap())
            .map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(session, stream);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(Client::wrap(tls))
    }
}

impl Client {
    /// Connects to `addr` with TCP_NODELAY and [`IO_TIMEOUT`] read/write timeouts.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Self::from_stream(stream)
    }

    /// Wraps an already connected stream (sets NODELAY and timeouts).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::wrap(stream)
    }
}

impl<S: Read + Write> Client<S> {
    /// A client over a connected stream (its timeouts already set).
    fn wrap(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
            vars: HashMap::new(),
        }
    }

    /// The underlying socket (for custom timeouts or raw writes).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Writes all of `bytes` in one `write_all`.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {}: {e}", escape(&bytes[..bytes.len().min(80)])));
    }

    /// Writes `bytes` as separate writes: the first `first` bytes, then `each` at a time.
    #[track_caller]
    pub fn send_in_pieces(&mut self, bytes: &[u8], first: usize, each: usize) {
        let (head, mut rest) = bytes.split_at(first.min(bytes.len()));
        self.send(head);
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(each.clamp(1, rest.len()));
            self.send(piece);
            rest = after;
        }
    }

    /// Reads more bytes into the buffer. Ok(0) = EOF.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        self.fill_at_most(deadline, 64 * 1024)
    }

    /// Reads at most `max` (at most 64 KiB) more bytes into the buffer. Ok(0) = EOF.
    fn fill_at_most(&mut self, deadline: Instant, max: usize) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let max = max.clamp(1, chunk.len());
        loop {
            match self.stream.read(&mut chunk[..max]) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e)
                    if (e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut)
                        && Instant::now() < deadline =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads exactly `n` bytes (within [`IO_TIMEOUT`]); on EOF/timeout returns what arrived.
    pub fn read_n(&mut self, n: usize) -> Result<Vec<u8>, (Vec<u8>, String)> {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(0) => return Err((std::mem::take(&mut self.buf), "EOF".into())),
                Ok(_) => {}
                Err(e) => return Err((std::mem::take(&mut self.buf), e.to_string())),
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads exactly `expected.len()` bytes and asserts they equal `expected`, printing both
    /// sides escaped on mismatch (or on EOF/timeout).
    #[track_caller]
    pub fn read_exact_reply(&mut self, expected: &[u8]) {
        match self.read_n(expected.len()) {
            Ok(got) => assert_bytes_eq(&got, expected, "read_exact_reply"),
            Err((got, why)) => panic!(
                "read_exact_reply: {why} after {} of {} bytes\n  expected: {}\n  actual:   {}",
                got.len(),
                expected.len(),
                escape(expected),
                escape(&got)
            ),
        }
    }

    /// `send(request)` then `read_exact_reply(expected)`.
    #[track_caller]
    pub fn roundtrip(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request);
        self.read_exact_reply(expected);
    }

    /// Reads one line including its `\r\n` (or `\n`).
    #[track_caller]
    pub fn read_line(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return self.buf.drain(..=i).collect();
            }
            match self.fill(deadline) {
                Ok(0) => panic!("read_line: EOF; partial: {}", escape(&self.buf)),
                Ok(_) => {}
                Err(e) => panic!("read_line: {e}; partial: {}", escape(&self.buf)),
            }
        }
    }

    /// Reads until a line equal to `last_line` (`\r\n` included) has arrived and returns
    /// everything up to and including it; later bytes stay buffered. Unlike
    /// [`Client::read_until_end`] it is linear in the reply's size, for replies of many
    /// megabytes (`lru_crawler metadump`). Each read waits at most [`IO_TIMEOUT`].
    #[track_caller]
    pub fn read_through_line(&mut self, last_line: &[u8]) -> Vec<u8> {
        self.read_through_line_with(last_line, 64 * 1024, || {})
    }

    /// [`Client::read_through_line`] for a slow reader: reads of at most `read_bytes_max`
    /// bytes, with `between_reads` called after each (to pause, or to do other work).
    #[track_caller]
    pub fn read_through_line_with(
        &mut self,
        last_line: &[u8],
        read_bytes_max: usize,
        mut between_reads: impl FnMut(),
    ) -> Vec<u8> {
        assert!(last_line.ends_with(b"\n"), "a whole line");
        // Where the first line not yet compared starts (the buffer starts at a line).
        let mut line_start = 0;
        loop {
            while let Some(i) = self.buf[line_start..].iter().position(|&b| b == b'\n') {
                let line_end = line_start + i + 1;
                if &self.buf[line_start..line_end] == last_line {
                    return self.buf.drain(..line_end).collect();
                }
                line_start = line_end;
            }
            let deadline = Instant::now() + IO_TIMEOUT;
            match self.fill_at_most(deadline, read_bytes_max) {
                Ok(0) => panic!(
                    "EOF before {}; {} bytes read: {}",
                    escape(last_line),
                    self.buf.len(),
                    escape(&self.buf)
                ),
                Ok(_) => between_reads(),
                Err(e) => panic!(
                    "{e} before {}; {} bytes read: {}",
                    escape(last_line),
                    self.buf.len(),
                    escape(&self.buf)
                ),
            }
        }
    }

    /// Reads lines until a line equal to `END\r\n` (also stops at an `ERROR`/`*_ERROR` line,
    /// `RESET\r\n`, or the one-line `BUSY ...` and `BADCLASS ...` answers of the crawler
    /// commands, so that the caller sees them rather than a read timeout) and returns
    /// everything read, terminator included. Meant for `stats` and dump output.
    #[track_caller]
    pub fn read_until_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = self.read_line();
            out.extend_from_slice(&line);
            if line == b"END\r\n"
                || line == b"RESET\r\n"
                || line.starts_with(b"ERROR")
                || line.starts_with(b"CLIENT_ERROR")
                || line.starts_with(b"SERVER_ERROR")
                || line.starts_with(b"BUSY ")
                || line.starts_with(b"BADCLASS ")
            {
                return out;
            }
        }
    }

    /// Sends `stats <sub>` and parses `STAT name value` lines (asserting the shape).
    #[track_caller]
    pub fn stats_sub(&mut self, sub: &str) -> HashMap<String, String> {
        let (map, _) = self.stats_raw(sub);
        map
    }

    /// Like [`Client::stats_sub`] but also returns the raw reply bytes.
    #[track_caller]
    pub fn stats_raw(&mut self, sub: &str) -> (HashMap<String, String>, Vec<u8>) {
        let req = if sub.is_empty() {
            "stats\r\n".to_string()
        } else {
            format!("stats {sub}\r\n")
        };
        self.send(req.as_bytes());
        let raw = self.read_until_end();
        assert!(
            raw.ends_with(b"END\r\n"),
            "{req:?} did not end with END: {}",
            escape(&raw)
        );
        let text = String::from_utf8(raw.clone()).expect("stats output is UTF-8");
        let mut map = HashMap::new();
        for line in text.split("\r\n") {
            if line.is_empty() || line == "END" {
                continue;
            }
            let rest = line
                .strip_prefix("STAT ")
                .unwrap_or_else(|| panic!("{req:?}: line without STAT prefix: {line:?}"));
            let (name, value) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("{req:?}: line without value: {line:?}"));
            assert!(!name.is_empty(), "{req:?}: empty stat name in {line:?}");
            map.insert(name.to_string(), value.to_string());
        }
        (map, raw)
    }

    /// Asserts the server closes the connection (EOF or reset) within [`IO_TIMEOUT`], and
    /// returns the bytes that arrived before the close.
    #[track_caller]
    pub fn expect_closed(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match self.fill(deadline) {
                Ok(0) => return std::mem::take(&mut self.buf),
                Ok(_) => {}
                Err(e)
                    if e.kind() == ErrorKind::ConnectionReset
                        || e.kind() == ErrorKind::ConnectionAborted =>
                {
                    return std::mem::take(&mut self.buf)
                }
                Err(e) => panic!(
                    "expected the server to close the connection, got {e}; read so far: {}",
                    escape(&self.buf)
                ),
            }
        }
    }

    /// Sets a named capture (see [`Client::roundtrip_pattern`]).
    pub fn set_var(&mut self, name: &str, value: &[u8]) {
        self.vars.insert(name.to_string(), value.to_vec());
    }

    /// A captured variable, e.g. the cas token captured by `{cas:a}`.
    pub fn var(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(name).map(Vec::as_slice)
    }

    /// Like [`Client::roundtrip`] with placeholders:
    /// * in `expected`: `{cas:NAME}` matches a run of digits; the first time NAME is seen it is
    ///   captured, later it must equal the capture. `{line}` matches any bytes up to `\r`.
    /// * in `request`: `{cas:NAME}` is replaced by the capture; `{badcas:NAME}` by a different
    ///   number (capture + 1000).
    #[track_caller]
    pub fn roundtrip_pattern(&mut self, request: &[u8], expected: &[u8]) {
        let req = self.substitute(request);
        self.send(&req);
        self.read_pattern(expected);
    }

    fn substitute(&self, request: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(request.len());
        let mut i = 0;
        while i < request.len() {
            if let Some((kind, name, len)) = placeholder(&request[i..]) {
                let v = self
                    .vars
                    .get(name)
                    .unwrap_or_else(|| panic!("no captured value for {{{kind}:{name}}}"));
                match kind {
                    "cas" => out.extend_from_slice(v),
                    "badcas" => {
                        let n: u64 = std::str::from_utf8(v).unwrap().parse().unwrap();
                        out.extend_from_slice((n.wrapping_add(1000)).to_string().as_bytes());
                    }
                    _ => unreachable!(),
                }
                i += len;
            } else {
                out.push(request[i]);
                i += 1;
            }
        }
        out
    }

    /// Reads a reply matching `expected` with placeholders (see [`Client::roundtrip_pattern`]).
    #[track_caller]
    pub fn read_pattern(&mut self, expected: &[u8]) {
        let mut got = Vec::new();
        let mut i = 0;
        let fail = |got: &[u8], why: &str| -> ! {
            panic!(
                "read_pattern: {why}\n  expected: {}\n  actual:   {}",
                escape(expected),
                escape(got)
            )
        };
        while i < expected.len() {
            if expected[i..].starts_with(b"{line}") {
                loop {
                    let b = self.next_byte().unwrap_or_else(|e| fail(&got, &e));
                    if b == b'\r' {
                        self.buf.insert(0, b);
                        break;
                    }
                    got.push(b);
                }
                i += b"{line}".len();
            } else if let Some((kind, name, len)) = placeholder(&expected[i..]) {
                assert_eq!(
                    kind, "cas",
                    "only {{cas:NAME}} may appear in expected bytes"
                );
                let mut digits = Vec::new();
                loop {
                    let b = self.next_byte().unwrap_or_else(|e| fail(&got, &e));
                    if b.is_ascii_digit() {
                        digits.push(b);
                        got.push(b);
                    } else {
                        self.buf.insert(0, b);
                        break;
                    }
                }
                if digits.is_empty() {
                    fail(&got, &format!("expected digits for {{cas:{name}}}"));
                }
                match self.vars.get(name) {
                    Some(prev) if *prev != digits => {
                        fail(&got, &format!("{{cas:{name}}} was {} before", escape(prev)))
                    }
                    Some(_) => {}
                    None => {
                        self.vars.insert(name.to_string(), digits);
                    }
                }
                i += len;
            } else {
                let b = self.next_byte().unwrap_or_else(|e| fail(&got, &e));
                got.push(b);
                if b != expected[i] {
                    // Show a little more of what came, to make the mismatch readable.
                    let extra = self.buf.len().min(80);
                    got.extend_from_slice(&self.buf[..extra]);
                    fail(&got, &format!("mismatch at expected byte {i}"));
                }
                i += 1;
            }
        }
    }

    fn next_byte(&mut self) -> Result<u8, String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.buf.is_empty() {
            match self.fill(deadline) {
                Ok(0) => return Err("EOF".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(self.buf.remove(0))
    }
}

/// Parses `{cas:NAME}` / `{badcas:NAME}` at the start of `s`: (kind, name, total length).
fn placeholder(s: &[u8]) -> Option<(&'static str, &str, usize)> {
    for kind in ["cas", "badcas"] {
        let open = format!("{{{kind}:");
        if s.starts_with(open.as_bytes()) {
            let rest = &s[open.len()..];
            let end = rest.iter().position(|&b| b == b'}')?;
            let name = std::str::from_utf8(&rest[..end]).ok()?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            return Some((kind, name, open.len() + end + 1));
        }
    }
    None
}

/// A tiny deterministic PRNG (xorshift64*) for seeded workloads and garbage.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One datagram of memcached's UDP protocol: the frame header's fields and the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub request_id: u16,
    pub sequence: u16,
    pub total: u16,
    pub reserved: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Splits a received datagram (at least a header).
    pub fn parse(datagram: &[u8]) -> Frame {
        assert!(
            datagram.len() >= 8,
            "datagram shorter than a header: {datagram:?}"
        );
        let field = |i: usize| u16::from_be_bytes([datagram[i], datagram[i + 1]]);
        Frame {
            request_id: field(0),
            sequence: field(2),
            total: field(4),
            reserved: field(6),
            payload: datagram[8..].to_vec(),
        }
    }

    /// `(sequence, total, payload)`, for byte-level tables.
    pub fn parts(&self) -> (u16, u16, &[u8]) {
        (self.sequence, self.total, &self.payload)
    }
}

/// A request datagram: the 8-byte header (`request_id`, sequence 0, total 1) and `payload`.
pub fn udp_request(request_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&request_id.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    d.extend_from_slice(payload);
    d
}

/// A UDP client: its own socket (a 4 MiB receive buffer where the kernel allows, so replies of
/// many datagrams are not dropped on arrival), [`IO_TIMEOUT`] reads, request ids of its own.
pub struct UdpClient {
    socket: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

/// Attempts of [`UdpClient::roundtrip`]: a datagram lost on loopback (only in theory) is asked
/// again under a new request id.
const UDP_ATTEMPTS: usize = 3;

impl UdpClient {
    pub fn new(server: SocketAddr) -> UdpClient {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp client");
        let bytes: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a pointer to a live c_int and its exact size; a refusal only
        // leaves the default buffer.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        UdpClient {
            socket,
            server,
            next_id: 0x1100,
        }
    }

    /// A request id not used before by this client.
    pub fn fresh_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Sends one raw datagram.
    pub fn send_raw(&self, datagram: &[u8]) {
        self.socket
            .send_to(datagram, self.server)
            .unwrap_or_else(|e| panic!("sendto {}: {e}", self.server));
    }

    /// Reads datagrams (each within `timeout`) until `count` carry `request_id`; others are
    /// skipped. `None` on a timeout.
    pub fn recv_frames(
        &self,
        request_id: u16,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<Frame>> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while frames.len() < count {
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let frame = Frame::parse(&buf[..n]);
                    if frame.request_id == request_id {
                        frames.push(frame);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) => panic!("recvfrom: {e}"),
            }
        }
        Some(frames)
    }

    /// Reads `count` datagrams, whatever their request ids (each within `timeout`); `None` on a
    /// timeout.
    pub fn recv_any(&self, count: usize, timeout: Duration) -> Option<Vec<Frame>> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 70_000];
        let mut frames = Vec::with_capacity(count);
        while frames.len() < count {
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => frames.push(Frame::parse(&buf[..n])),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) => panic!("recvfrom: {e}"),
            }
        }
        Some(frames)
    }

    /// Sends `payload` as a request and returns the `count` datagrams answering it (each checked
    /// to carry the request id sent), asking again under a new id (up to [`UDP_ATTEMPTS`]
    /// times) if they do not all arrive within [`IO_TIMEOUT`].
    #[track_caller]
    pub fn roundtrip(&mut self, payload: &[u8], count: usize) -> Vec<Frame> {
        for _ in 0..UDP_ATTEMPTS {
            let id = self.fresh_id();
            self.send_raw(&udp_request(id, payload));
            if let Some(frames) = self.recv_frames(id, count, IO_TIMEOUT) {
                return frames;
            }
        }
        panic!(
            "no complete reply ({count} datagrams) to {} after {UDP_ATTEMPTS} attempts",
            escape(&payload[..payload.len().min(80)])
        );
    }

    /// [`UdpClient::roundtrip`], its datagrams compared with `expected` as `(sequence, total,
    /// payload)` (reserved always 0), then [`UdpClient::expect_quiet`].
    #[track_caller]
    pub fn exchange(&mut self, payload: &[u8], expected: &[(u16, u16, &[u8])]) {
        let frames = self.roundtrip(payload, expected.len());
        let what = escape(&payload[..payload.len().min(120)]);
        for (i, (got, want)) in frames.iter().zip(expected).enumerate() {
            let (sequence, total, bytes) = got.parts();
            assert_eq!(
                (sequence, total),
                (want.0, want.1),
                "datagram {i} of {what}"
            );
            assert_bytes_eq(bytes, want.2, &format!("datagram {i} of {what}"));
            assert_eq!(got.reserved, 0, "datagram {i} of {what}");
        }
        self.expect_quiet();
    }

    /// Asserts that the next datagram this client receives answers a `version` sent now:
    /// nothing else was still on its way (a server answers one client's datagrams in order).
    #[track_caller]
    pub fn expect_quiet(&mut self) {
        self.expect_quiet_but_late(None);
    }

    /// [`UdpClient::expect_quiet`], except that in memcached mode answers to datagram `late`
    /// are passed over: memcached's crawler thread runs an `lru_crawler metadump` when it gets
    /// to it, and under load the replies queued behind the dump may then still go out.
    pub fn expect_quiet_but_late(&mut self, late: Option<u16>) {
        let id = self.fresh_id();
        self.send_raw(&udp_request(id, b"version\r\n"));
        self.socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = vec![0u8; 70_000];
        let mut frame;
        loop {
            let (n, _) = self
                .socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("no answer to a version: {e}"));
            frame = Frame::parse(&buf[..n]);
            // memcached's crawler (`lru_crawler metadump`) may still put a bare header on the
            // socket for the unanswered datagram; corecache sends nothing for it.
            let bare = frame.total == 0 && frame.payload.is_empty() && frame.request_id != id;
            let late_answer = late == Some(frame.request_id);
            if !((bare || late_answer) && memcached_mode()) {
                break;
            }
        }
        assert_eq!(
            (frame.request_id, frame.parts()),
            (id, (0, 1, &b"VERSION 1.6.18\r\n"[..])),
            "something else arrived first: {frame:?}"
        );
    }
}

/// Polls `cond` every few milliseconds until it is true or `timeout` passes; returns the result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10)); // bounded poll interval
    }
}

/// Waits for `child` to exit within `timeout`; past it the child is killed and reaped and the
/// test panics, naming `what`.
pub fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10)); // bounded exit poll
    }
}

/// Runs a server command that is expected to exit by itself (a start that fails) within
/// [`STARTUP_TIMEOUT`]; returns its exit status and stderr. One that keeps running is killed
/// and the test panics, naming `what`.
pub fn run_to_exit(cmd: &mut Command, what: &str) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let status = wait_child(&mut child, STARTUP_TIMEOUT, what);
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status, err)
}

/// A bare command for the server under test, for tests that watch it fail to start: memcached
/// (with `-u root` when running as root, which memcached requires) in memcached mode,
/// corecache otherwise.
pub fn server_command() -> Command {
    if memcached_mode() {
        let mut cmd = Command::new(MEMCACHED);
        if is_root() {
            cmd.args(["-u", "root"]);
        }
        cmd
    } else {
        Command::new(env!("CARGO_BIN_EXE_corecache"))
    }
}

/// Whether this test process runs as root (the `-u` tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gone, or a zombie waiting for its new parent to reap it (a daemon's, for one).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A numeric stat as u64 (panics with the name if missing or not a number).
#[track_caller]
pub fn stat_u64(stats: &HashMap<String, String>, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("stat {name} missing"))
        .parse()
        .unwrap_or_else(|e| panic!("stat {name}={:?}: {e}", stats[name]))
}

/// True if the client can run; otherwise fails (CORECACHE_REQUIRE_CLIENTS=1) or says it skips.
pub fn client_available(what: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CORECACHE_REQUIRE_CLIENTS").is_ok_and(|v| v == "1") {
        panic!("{what} is not installed and CORECACHE_REQUIRE_CLIENTS=1 (run .ci/run)");
    }
    eprintln!("SKIPPED: {what} is not installed (set CORECACHE_REQUIRE_CLIENTS=1 to fail)");
    false
}
