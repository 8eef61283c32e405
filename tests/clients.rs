//! Real memcached clients against the real binary: the scripts in `tests/clients/` (Python:
//! pymemcache, python-memcached, pylibmc, python-binary-memcached, meta-memcache; Node: memjs,
//! memcached; Ruby: dalli; PHP: the memcached extension, text and binary; Perl:
//! Cache::Memcached::Fast, Cache::Memcached; Go: gomemcache, built offline against Debian's
//! source, over one node and two; Java: spymemcached, text and binary, compiled with javac),
//! pymemcache's own integration tests (shipped in the package) and pylibmc's (from its source
//! release), libmemcached's `memccapable` and `memcdump`, three corecache nodes behind
//! twemproxy (`nutcracker`), and ElastiCache auto discovery with memcached-elasticache (Node)
//! and elasticache-pyclient (Python) over three nodes.
//!
//! Every check starts corecache with `-t 2` on both io backends (or memcached in validation mode,
//! `CORECACHE_TEST_SERVER=memcached`, which proves the scripts' expectations are memcached's).
//! A client that is not installed fails the test when `CORECACHE_REQUIRE_CLIENTS=1` (as `.ci/run`
//! sets it) and is otherwise skipped with a notice. Clients of the binary and meta protocols run
//! only when the server speaks that protocol (probed with one request first); until then they
//! are skipped with a notice saying so.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{client_available as available, memcached_mode, stat_u64, Client, TestServer};

/// How long one client script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The io backends each client runs against (`-t 2` each).
fn configs() -> Vec<Vec<&'static str>> {
    if memcached_mode() {
        return vec![vec!["-t", "2"]];
    }
    vec![
        vec!["-t", "2", "--io-backend", "epoll"],
        vec!["-t", "2", "--io-backend", "uring"],
    ]
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn python_module(module: &str) -> bool {
    available(
        &format!("python3 module {module}"),
        Command::new("python3").args(["-c", &format!("import {module}")]),
    )
}

fn node_module(module: &str) -> bool {
    available(
        &format!("node module {module} (npm install --prefix tests/clients)"),
        Command::new("node")
            .current_dir(clients_dir())
            .args(["-e", &format!("require('{module}')")]),
    )
}

fn ruby_gem(gem: &str) -> bool {
    available(
        &format!("ruby gem {gem} (ruby-{gem})"),
        Command::new("ruby").args(["-e", &format!("require '{gem}'")]),
    )
}

fn php_extension(extension: &str) -> bool {
    available(
        &format!("php extension {extension} (php-cli, php-{extension})"),
        Command::new("php").args([
            "-r",
            &format!("exit(extension_loaded('{extension}') ? 0 : 1);"),
        ]),
    )
}

/// Runs a command to completion within `timeout` (killed after), capturing its output.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = common::wait_child(&mut child, timeout, &format!("{cmd:?}"));
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

#[track_caller]
fn assert_success(what: &str, output: &Output) {
    let text = format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{text}",
        output.status
    );
    eprintln!("{what}: passed\n{text}");
}

/// Which protocol a client needs, so it runs only where the server speaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Text,
    Binary,
    Meta,
}

/// Whether a reply is in the protocol asked.
type ReplyCheck = fn(&[u8]) -> bool;

/// Whether the server answers one request of `protocol` in that protocol.
fn speaks(addr: SocketAddr, protocol: Protocol) -> bool {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (request, want): (&[u8], ReplyCheck) = match protocol {
        Protocol::Text => (b"version\r\n", |r| r.starts_with(b"VERSION ")),
        // A binary NOOP (magic 0x80, opcode 0x0a); the reply starts with magic 0x81.
        Protocol::Binary => (
            &[
                0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            |r| r.first() == Some(&0x81),
        ),
        Protocol::Meta => (b"mn\r\n", |r| r.starts_with(b"MN\r\n")),
    };
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        Ok(n) => want(&reply[..n]),
        Err(_) => false,
    }
}

/// Runs one client against every config, if installed and the protocol is served.
fn run_client(name: &str, protocol: Protocol, command: impl Fn(SocketAddr) -> Command) {
    for args in configs() {
        let server = TestServer::start(&args);
        if !speaks(server.addr(), protocol) {
            eprintln!(
                "SKIPPED: {name}: the server does not speak the {protocol:?} protocol yet ({args:?})"
            );
            continue;
        }
        let mut cmd = command(server.addr());
        let output = run_bounded(&mut cmd, SCRIPT_TIMEOUT);
        assert_success(&format!("{name} {args:?}"), &output);
    }
}

fn python_script(
    script: &'static str,
    extra: &'static [&'static str],
) -> impl Fn(SocketAddr) -> Command {
    move |addr| {
        let mut cmd = Command::new("python3");
        cmd.current_dir(clients_dir())
            .arg(script)
            .arg(addr.to_string())
            .args(extra);
        cmd
    }
}

#[test]
fn pymemcache_text() {
    if python_module("pymemcache") {
        run_client(
            "pymemcache",
            Protocol::Text,
            python_script("pymemcache_text.py", &[]),
        );
    }
}

#[test]
fn python_memcached_text() {
    if python_module("memcache") {
        run_client(
            "python-memcached",
            Protocol::Text,
            python_script("python_memcached_text.py", &[]),
        );
    }
}

/// pymemcache's own integration tests (shipped in the package as `pymemcache.test`), pointed
/// at the server: the library's authors' expectations, not ours.
#[test]
fn pymemcache_own_integration_suite() {
    if python_module("pymemcache") && python_module("pytest") {
        // By path, so that pytest reads the package's conftest (its --server/--port options).
        let located = Command::new("python3")
            .args([
                "-c",
                "import os, pymemcache.test as t; print(os.path.dirname(t.__file__))",
            ])
            .output()
            .expect("run python3");
        let dir = String::from_utf8_lossy(&located.stdout).trim().to_string();
        let suite = format!("{dir}/test_integration.py");
        run_client("pymemcache's integration suite", Protocol::Text, |addr| {
            let mut cmd = Command::new("python3");
            cmd.current_dir(std::env::temp_dir()).args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                &suite,
                "--server",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ]);
            cmd
        });
    }
}

/// pylibmc's own test suite (from its source release, unpacked by `.ci/run` under
/// `target/client-suites`), pointed at the server by `tests/clients/pylibmc_suite_port.py`.
#[test]
fn pylibmc_own_suite() {
    let suite =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/client-suites/pylibmc-1.6.3");
    let present = available(
        "pylibmc's test suite (target/client-suites, unpacked by .ci/run)",
        Command::new("test").arg("-d").arg(suite.join("tests")),
    );
    if !(present && python_module("pylibmc") && python_module("pytest")) {
        return;
    }
    run_client("pylibmc's own suite", Protocol::Text, |addr| {
        let (host, port) = (addr.ip().to_string(), addr.port().to_string());
        let mut cmd = Command::new("python3");
        cmd.current_dir(&suite)
            .env("PYTHONPATH", clients_dir())
            .env("MEMCACHED_HOST", &host)
            .env("MEMCACHED_PORT", &port)
            .env("PYLIBMC_TEST_HOST", &host)
            .env("PYLIBMC_TEST_PORT", &port)
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "pylibmc_suite_port",
                "tests",
            ]);
        cmd
    });
}

#[test]
fn pylibmc_text() {
    if python_module("pylibmc") {
        run_client(
            "pylibmc text",
            Protocol::Text,
            python_script("pylibmc_client.py", &[]),
        );
    }
}

#[test]
fn pylibmc_binary() {
    if python_module("pylibmc") {
        run_client(
            "pylibmc binary",
            Protocol::Binary,
            python_script("pylibmc_client.py", &["--binary"]),
        );
    }
}

#[test]
fn python_binary_memcached() {
    if python_module("bmemcached") {
        run_client(
            "python-binary-memcached",
            Protocol::Binary,
            python_script("bmemcached_binary.py", &[]),
        );
    }
}

#[test]
fn meta_memcache() {
    if python_module("meta_memcache") {
        run_client(
            "meta-memcache",
            Protocol::Meta,
            python_script("meta_memcache_client.py", &[]),
        );
    }
}

#[test]
fn memjs_binary() {
    if node_module("memjs") {
        run_client("memjs", Protocol::Binary, |addr| {
            let mut cmd = Command::new("node");
            cmd.current_dir(clients_dir())
                .arg("memjs_binary.js")
                .arg(addr.to_string());
            cmd
        });
    }
}

#[test]
fn node_memcached_text() {
    if node_module("memcached") {
        run_client("node memcached", Protocol::Text, |addr| {
            let mut cmd = Command::new("node");
            cmd.current_dir(clients_dir())
                .arg("node_memcached_text.js")
                .arg(addr.to_string());
            cmd
        });
    }
}

#[test]
fn dalli_binary() {
    // dalli 3.0.6 (Debian bookworm's) has only the binary protocol (no `protocol: :meta`).
    if ruby_gem("dalli") {
        run_client("dalli", Protocol::Binary, |addr| {
            let mut cmd = Command::new("ruby");
            cmd.current_dir(clients_dir())
                .arg("dalli_client.rb")
                .arg(addr.to_string());
            cmd
        });
    }
}

fn perl_module(module: &str, package: &str) -> bool {
    available(
        &format!("perl module {module} ({package})"),
        Command::new("perl").args([&format!("-M{module}"), "-e1"]),
    )
}

fn perl_script(script: &'static str) -> impl Fn(SocketAddr) -> Command {
    move |addr| {
        let mut cmd = Command::new("perl");
        cmd.current_dir(clients_dir())
            .arg(script)
            .arg(addr.to_string());
        cmd
    }
}

#[test]
fn perl_cache_memcached_fast() {
    if perl_module("Cache::Memcached::Fast", "libcache-memcached-fast-perl") {
        run_client(
            "Cache::Memcached::Fast",
            Protocol::Text,
            perl_script("perl_memcached_fast.pl"),
        );
    }
}

#[test]
fn perl_cache_memcached() {
    if perl_module("Cache::Memcached", "libcache-memcached-perl") {
        run_client(
            "Cache::Memcached",
            Protocol::Text,
            perl_script("perl_cache_memcached.pl"),
        );
    }
}

fn php_script(extra: &'static [&'static str]) -> impl Fn(SocketAddr) -> Command {
    move |addr| {
        let mut cmd = Command::new("php");
        cmd.current_dir(clients_dir())
            .arg("php_memcached_client.php")
            .arg(addr.to_string())
            .args(extra);
        cmd
    }
}

#[test]
fn php_memcached_text() {
    if php_extension("memcached") {
        run_client("php-memcached text", Protocol::Text, php_script(&[]));
    }
}

#[test]
fn php_memcached_binary() {
    if php_extension("memcached") {
        run_client(
            "php-memcached binary",
            Protocol::Binary,
            php_script(&["--binary"]),
        );
    }
}

/// Where the Go and Java clients are built (under target/, so `cargo clean` removes them).
fn build_dir(what: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(what)
}

/// Runs a build step once per test binary (tests run in parallel threads, and two of them share
/// the Java build); panics with the compiler's output if it fails.
fn build_once(
    cell: &'static std::sync::OnceLock<PathBuf>,
    what: &str,
    build: impl FnOnce() -> (Command, PathBuf),
) -> PathBuf {
    cell.get_or_init(|| {
        let (mut cmd, product) = build();
        let started = Instant::now();
        let output = run_bounded(&mut cmd, SCRIPT_TIMEOUT);
        assert!(
            output.status.success(),
            "building {what} failed ({}): {cmd:?}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("built {what} in {:?}", started.elapsed());
        product
    })
    .clone()
}

/// Debian's gomemcache source (golang-github-bradfitz-gomemcache-dev), found through GOPATH.
const GOPATH_DEBIAN: &str = "/usr/share/gocode";

/// The gomemcache program (tests/clients/go_gomemcache), built offline in GOPATH mode against
/// Debian's source, with its build cache under target/.
fn go_gomemcache_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    build_once(&BUILT, "tests/clients/go_gomemcache", || {
        let dir = build_dir("clients-go");
        let product = dir.join("go_gomemcache");
        let mut cmd = Command::new("go");
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH_DEBIAN)
            .env("GOCACHE", dir.join("cache"))
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .arg("build")
            .arg("-o")
            .arg(&product)
            .arg("./tests/clients/go_gomemcache");
        (cmd, product)
    })
}

/// gomemcache (Go, text protocol) against one server, then with a second server, keys spread
/// over both by its ServerList.
#[test]
fn go_gomemcache() {
    if !available(
        "go and gomemcache (golang-go, golang-github-bradfitz-gomemcache-dev)",
        Command::new("sh").args([
            "-c",
            &format!(
                "command -v go && test -f \
                 {GOPATH_DEBIAN}/src/github.com/bradfitz/gomemcache/memcache/memcache.go"
            ),
        ]),
    ) {
        return;
    }
    let program = go_gomemcache_binary();
    for args in configs() {
        let first = TestServer::start(&args);
        let second = TestServer::start(&args);
        let started = Instant::now();
        let output = run_bounded(
            Command::new(&program)
                .arg(first.addr().to_string())
                .arg(second.addr().to_string()),
            SCRIPT_TIMEOUT,
        );
        assert_success(&format!("gomemcache {args:?}"), &output);
        eprintln!("gomemcache {args:?}: {:?}", started.elapsed());
    }
}

/// spymemcached's jar (libspymemcached-java); it needs nothing else on the class path.
const SPYMEMCACHED_JAR: &str = "/usr/share/java/spymemcached.jar";

/// The spymemcached program (tests/clients/SpymemcachedClient.java), compiled with javac.
fn spymemcached_classes() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    build_once(&BUILT, "tests/clients/SpymemcachedClient.java", || {
        let dir = build_dir("clients-java");
        let mut cmd = Command::new("javac");
        cmd.args(["-Xlint:all", "-Werror", "-cp", SPYMEMCACHED_JAR, "-d"])
            .arg(&dir)
            .arg(clients_dir().join("SpymemcachedClient.java"));
        (cmd, dir)
    })
}

fn spymemcached(name: &str, protocol: Protocol, extra: &'static [&'static str]) {
    if !available(
        "javac, java and spymemcached (default-jdk-headless, libspymemcached-java)",
        Command::new("sh").args([
            "-c",
            &format!("command -v javac && command -v java && test -f {SPYMEMCACHED_JAR}"),
        ]),
    ) {
        return;
    }
    let classes = spymemcached_classes();
    let class_path = format!("{}:{SPYMEMCACHED_JAR}", classes.display());
    run_client(name, protocol, |addr| {
        let mut cmd = Command::new("java");
        // The quick JIT tier and the serial collector: less CPU on a shared machine.
        cmd.args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp"])
            .arg(&class_path)
            .arg("SpymemcachedClient")
            .arg(addr.to_string())
            .args(extra);
        cmd
    });
}

#[test]
fn spymemcached_text() {
    spymemcached("spymemcached text", Protocol::Text, &[]);
}

#[test]
fn spymemcached_binary() {
    spymemcached("spymemcached binary", Protocol::Binary, &["--binary"]);
}

fn memccapable(mode: &'static str, protocol: Protocol) {
    if !available(
        "memccapable (libmemcached-tools)",
        Command::new("sh").args(["-c", "command -v memccapable"]),
    ) {
        return;
    }
    run_client(&format!("memccapable {mode}"), protocol, |addr| {
        let mut cmd = Command::new("memccapable");
        cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .args(["-t", "5", mode]);
        cmd
    });
}

#[test]
fn memccapable_ascii() {
    memccapable("-a", Protocol::Text);
}

#[test]
fn memccapable_binary() {
    memccapable("-b", Protocol::Binary);
}

/// libmemcached's `memcdump` lists the keys through `stats cachedump`, class by class until the
/// server calls a class id illegal: every stored key on both shards (memcached lists only the
/// cold part of its LRU, so there a subset).
#[test]
fn memcdump_lists_the_keys() {
    if !available(
        "memcdump (libmemcached-tools)",
        Command::new("sh").args(["-c", "command -v memcdump"]),
    ) {
        return;
    }
    for args in configs() {
        let server = TestServer::start(&args);
        let mut c = server.connect();
        let keys: Vec<String> = (0..60).map(|i| format!("dump:{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            // Values of several sizes, so several classes are listed.
            let value = "v".repeat(1 + i * 40);
            c.roundtrip(
                format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
                b"STORED\r\n",
            );
        }
        let output = run_bounded(
            Command::new("memcdump").arg(format!("--servers={}", server.addr())),
            SCRIPT_TIMEOUT,
        );
        assert_success(&format!("memcdump {args:?}"), &output);
        let listed: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let unique: std::collections::HashSet<&String> = listed.iter().collect();
        assert_eq!(unique.len(), listed.len(), "a key listed twice: {listed:?}");
        assert!(listed.iter().all(|k| keys.contains(k)), "{listed:?}");
        // memcached lists only its cold LRU segment, which its maintainer fills at times of its
        // own, so there any subset (even none) is right.
        if !memcached_mode() {
            assert_eq!(listed.len(), keys.len(), "{listed:?}");
        }
    }
}

/// The `memcached-tool` script shipped with memcached: its class table (classes counted from
/// 1, as memcached numbers them), `keys` (from metadump) and `dump` (metadump, then `get`).
#[test]
fn memcached_tool_reads_classes_keys_and_values() {
    const TOOL: &str = "/usr/share/memcached/scripts/memcached-tool";
    if !available(
        "memcached-tool (the memcached package) and perl",
        Command::new("sh").args(["-c", &format!("test -f {TOOL} && command -v perl")]),
    ) {
        return;
    }
    for args in configs() {
        let server = TestServer::start(&args);
        let mut c = server.connect();
        c.roundtrip(b"set tiny 5 0 1\r\nx\r\n", b"STORED\r\n");
        let big = "y".repeat(500);
        c.roundtrip(
            format!("set big 0 0 500\r\n{big}\r\n").as_bytes(),
            b"STORED\r\n",
        );
        let tool = |mode: &str| {
            let output = run_bounded(
                Command::new("perl")
                    .arg(TOOL)
                    .arg(server.addr().to_string())
                    .arg(mode),
                SCRIPT_TIMEOUT,
            );
            assert_success(&format!("memcached-tool {mode} {args:?}"), &output);
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        // display: one row per class in use; the Count column (5th) sums to the items stored.
        let display = tool("display");
        let counts: u64 = display
            .lines()
            .skip(1)
            .map(|row| {
                row.split_whitespace()
                    .nth(4)
                    .expect(row)
                    .parse::<u64>()
                    .expect(row)
            })
            .sum();
        assert_eq!(counts, 2, "{display}");
        let keys = tool("keys");
        assert!(
            keys.contains("key=tiny ") && keys.contains("key=big "),
            "{keys}"
        );
        let dump = tool("dump");
        assert!(dump.contains("add tiny 5 0 1\r\nx\r\n"), "{dump:?}");
        assert!(
            dump.contains(&format!("add big 0 0 500\r\n{big}\r\n")),
            "{dump:?}"
        );
    }
}

/// A child process killed and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Starts nutcracker in front of `nodes` (ketama); returns it and its listen address.
/// nutcracker cannot bind port 0, so it gets a port found free a moment earlier; another test
/// can take that port in between. Such a start is retried on fresh ports (bounded).
const TWEMPROXY_START_TRIES: usize = 5;

fn start_twemproxy(nodes: &[SocketAddr], dir: &std::path::Path) -> (KillOnDrop, SocketAddr) {
    for attempt in 1..=TWEMPROXY_START_TRIES {
        match try_start_twemproxy(nodes, dir) {
            Ok(started) => return started,
            Err(log) if log.contains("Address already in use") => {
                eprintln!("nutcracker port taken (attempt {attempt}), retrying on a new port");
            }
            Err(log) => panic!("nutcracker exited at startup:\n{log}"),
        }
    }
    panic!("nutcracker found no free port in {TWEMPROXY_START_TRIES} tries");
}

/// Whether the port serves nutcracker's stats (a JSON document naming the service).
fn answers_as_nutcracker(port: u16) -> bool {
    use std::io::Read;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut body = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut body);
    String::from_utf8_lossy(&body).contains("\"service\":\"nutcracker\"")
}

/// One start on freshly chosen ports: the proxy and its address, or nutcracker's log.
fn try_start_twemproxy(
    nodes: &[SocketAddr],
    dir: &std::path::Path,
) -> Result<(KillOnDrop, SocketAddr), String> {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stats_port = free_port();
    let mut yaml = format!(
        "corecache:\n  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  \
         timeout: 5000\n  server_retry_timeout: 1000\n  server_failure_limit: 3\n  \
         auto_eject_hosts: false\n  servers:\n"
    );
    for (i, node) in nodes.iter().enumerate() {
        yaml.push_str(&format!("   - {node}:1 node{i}\n"));
    }
    let config = dir.join("nutcracker.yml");
    let log_path = dir.join("nutcracker.log");
    std::fs::write(&config, yaml).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let child = Command::new("nutcracker")
        .arg("-c")
        .arg(&config)
        .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
        .arg("-o")
        .arg(&log_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nutcracker");
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("({status})\n{log}"));
        }
        // Ready when the proxy port accepts and the stats port answers as nutcracker (so
        // neither port belongs to another test's server).
        if TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_ok()
            && answers_as_nutcracker(stats_port)
        {
            return Ok((child, listen));
        }
        assert!(
            Instant::now() < deadline,
            "nutcracker did not listen on {listen}"
        );
        std::thread::sleep(Duration::from_millis(20)); // bounded readiness poll
    }
}

#[test]
fn three_nodes_behind_twemproxy() {
    if !available(
        "nutcracker (twemproxy)",
        Command::new("sh").args(["-c", "command -v nutcracker"]),
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("corecache-twemproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nodes: Vec<TestServer> = (0..3).map(|_| TestServer::start(&["-t", "2"])).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(TestServer::addr).collect();
    let (_proxy, listen) = start_twemproxy(&addrs, &dir);
    let mut c = Client::connect(listen);
    let keys = 20_000;
    let batch = 500;
    let key = |i: usize| format!("tw:{i}");
    let value = |i: usize| format!("value-{i}-{}", "x".repeat(i % 50));
    // Pipelined sets, one batch at a time.
    for start in (0..keys).step_by(batch) {
        let mut request = Vec::new();
        for i in start..start + batch {
            let v = value(i);
            request
                .extend_from_slice(format!("set {} 0 0 {}\r\n{v}\r\n", key(i), v.len()).as_bytes());
        }
        c.send(&request);
        c.read_exact_reply(&b"STORED\r\n".repeat(batch));
    }
    // Every key reads back through the proxy (multi-gets, which twemproxy splits by node).
    for start in (0..keys).step_by(100) {
        let names: Vec<String> = (start..start + 100).map(key).collect();
        let mut expected = Vec::new();
        for i in start..start + 100 {
            let v = value(i);
            expected
                .extend_from_slice(format!("VALUE {} 0 {}\r\n{v}\r\n", key(i), v.len()).as_bytes());
        }
        expected.extend_from_slice(b"END\r\n");
        c.roundtrip(format!("get {}\r\n", names.join(" ")).as_bytes(), &expected);
    }
    // Spread over all three nodes.
    let mut total = 0;
    for (i, node) in nodes.iter().enumerate() {
        let items = stat_u64(&node.stats(), "curr_items");
        assert!(items > 0, "node {i} holds no keys");
        eprintln!("node {i}: curr_items {items}");
        total += items;
    }
    assert_eq!(total, keys as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

// ElastiCache auto discovery: cluster-aware clients that find every node through one.

/// The addresses of the three nodes. Distinct loopback addresses, as ElastiCache nodes have
/// distinct addresses (elasticache-pyclient's ring, uhashring's, names a node by its host).
const DISCOVERY_IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// How many keys each phase of a discovery script stores.
const DISCOVERY_KEYS: u64 = 300;

/// A client script that reports progress on stdout and takes input on stdin.
struct Script {
    what: String,
    child: KillOnDrop,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    /// Its stdout and stderr so far, for failure messages.
    output: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Script {
    fn start(what: &str, cmd: &mut Command) -> Script {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = output.clone();
        let out_reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let log = output.clone();
        let err_reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("[stderr] {line}\n"));
            }
        });
        Script {
            what: what.to_string(),
            stdin: child.stdin.take(),
            child: KillOnDrop(child),
            lines,
            output,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Stops the script (if still running) and fails with everything it printed.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.0.kill();
        let status = self.child.0.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        panic!(
            "{}: {why} ({status:?})\n{}",
            self.what,
            self.output.lock().unwrap()
        );
    }

    /// Waits (at most [`SCRIPT_TIMEOUT`]) for a stdout line ending in `want`.
    fn expect_line(&mut self, want: &str) {
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim_end().ends_with(want) => return,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {want:?} within {SCRIPT_TIMEOUT:?}"))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("exited before {want:?}"))
                }
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if let Err(e) = stdin.write_all(format!("{line}\n").as_bytes()) {
            self.fail(&format!("writing its stdin: {e}"));
        }
    }

    /// Closes stdin and waits (bounded) for a successful exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.fail("did not exit");
            }
            std::thread::sleep(Duration::from_millis(20)); // bounded child poll
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if !status.success() {
            self.fail("failed");
        }
        eprintln!("{}: passed\n{}", self.what, self.output.lock().unwrap());
    }
}

fn sighup(server: &TestServer) {
    // SAFETY: kill(2) on a child this test spawned and still owns.
    let rc = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "SIGHUP {}", server.pid());
}

/// Writes `entries` to the nodes' `--cluster-config` file, SIGHUPs every node, and waits until
/// each serves them as `version`.
fn publish_nodes(nodes: &[TestServer], path: &std::path::Path, entries: &[String], version: u64) {
    std::fs::write(path, format!("{}\n", entries.join("\n"))).unwrap();
    let payload = format!("{version}\n{}\n", entries.join(" "));
    let expected = format!("CONFIG cluster 0 {}\r\n{payload}\r\nEND\r\n", payload.len());
    for node in nodes {
        sighup(node);
        let mut c = node.connect();
        let mut last = Vec::new();
        let served = common::wait_until(Duration::from_secs(5), || {
            c.send(b"config get cluster\r\n");
            last = c.read_until_end();
            last == expected.as_bytes()
        });
        assert!(
            served,
            "{} after SIGHUP: {}",
            node.addr(),
            common::escape(&last)
        );
    }
}

/// Runs a discovery client script against three nodes on each io backend (see the scripts'
/// headers): `command(endpoint, nodes)` starts it with the configuration endpoint (node 0) and
/// the `host:port` list it must discover. After `phase 1 ok` every node holds some of the keys;
/// then node 2 leaves the list (SIGHUP), the script is sent the new list, and after `phase 2 ok`
/// its new keys are on nodes 0 and 1 only.
fn discovery_client(what: &str, command: impl Fn(&str, &str) -> Command) {
    for backend in ["epoll", "uring"] {
        let dir = std::env::temp_dir().join(format!(
            "corecache-discovery-{}-{what}-{backend}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nodes");
        // The ports are known once the nodes listen: until then the file holds a placeholder.
        std::fs::write(&path, "pending|127.0.0.1|1\n").unwrap();
        let args = [
            "-t",
            "2",
            "--io-backend",
            backend,
            "--cluster-config",
            path.to_str().unwrap(),
        ];
        let nodes: Vec<TestServer> = DISCOVERY_IPS
            .iter()
            .map(|ip| TestServer::start_corecache_on(ip, &args, |_| {}))
            .collect();
        let entries: Vec<String> = nodes
            .iter()
            .map(|n| format!("{0}|{0}|{1}", n.addr().ip(), n.addr().port()))
            .collect();
        let host_ports = |nodes: &[TestServer]| -> String {
            let list: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
            list.join(",")
        };
        publish_nodes(&nodes, &path, &entries, 2);

        let name = format!("{what} [--io-backend {backend}]");
        let endpoint = nodes[0].addr().to_string();
        let mut script = Script::start(&name, &mut command(&endpoint, &host_ports(&nodes)));
        script.expect_line("phase 1 ok");
        let items = |node: &TestServer| stat_u64(&node.stats(), "curr_items");
        let before: Vec<u64> = nodes.iter().map(items).collect();
        eprintln!("{name}: curr_items per node after phase 1: {before:?}");
        assert!(
            before.iter().all(|&n| n > 0),
            "a node got no keys: {before:?}"
        );
        assert_eq!(before.iter().sum::<u64>(), DISCOVERY_KEYS, "{before:?}");

        // Node 2 leaves the cluster (it keeps running: the client must stop using it).
        let sets_on_dropped = stat_u64(&nodes[2].stats(), "cmd_set");
        publish_nodes(&nodes, &path, &entries[..2], 3);
        script.send_line(&host_ports(&nodes[..2]));
        script.expect_line("phase 2 ok");
        script.finish();
        let after: Vec<u64> = nodes.iter().map(items).collect();
        eprintln!("{name}: curr_items per node after phase 2: {after:?}");
        assert_eq!(
            stat_u64(&nodes[2].stats(), "cmd_set"),
            sets_on_dropped,
            "node 2 was written after it left the list"
        );
        assert!(after[0] > before[0] && after[1] > before[1], "{after:?}");
        assert_eq!(
            after[0] + after[1],
            before[0] + before[1] + DISCOVERY_KEYS,
            "{after:?}"
        );
        drop(nodes);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn memcached_elasticache_discovers_the_cluster() {
    if common::skip_in_memcached_mode("auto discovery (config get cluster) is corecache's") {
        return;
    }
    if node_module("memcached-elasticache") {
        discovery_client("memcached-elasticache", |endpoint, nodes| {
            let mut cmd = Command::new("node");
            cmd.current_dir(clients_dir())
                .args(["memcached_elasticache.js", endpoint, nodes]);
            cmd
        });
    }
}

#[test]
fn elasticache_pyclient_discovers_the_cluster() {
    if common::skip_in_memcached_mode("auto discovery (config get cluster) is corecache's") {
        return;
    }
    if python_module("elasticache_pyclient") {
        discovery_client("elasticache-pyclient", |endpoint, nodes| {
            let mut cmd = Command::new("python3");
            cmd.current_dir(clients_dir())
                .args(["pyclient_discovery.py", endpoint, nodes]);
            cmd
        });
    }
}
