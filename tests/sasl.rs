//! Binary-protocol SASL (`-S`): the PLAIN exchange, what is served before and after it, the
//! counters, and the startup refusals, byte for byte as memcached 1.6.18 answers.
//!
//! corecache checks logins against the file `MEMCACHED_SASL_PWDB` names; Debian's memcached
//! (validation mode, `CORECACHE_TEST_SERVER=memcached`) against a Cyrus sasldb made with
//! `saslpasswd2` (package sasl2-bin) and found through `SASL_CONF_PATH`. Both hold the same
//! login, so the same assertions run against both.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{for_each_config, memcached_mode, skip_in_memcached_mode, TestServer};

const USER: &str = "testuser";
const PASSWORD: &str = "testpass";
const GOOD: &[u8] = b"\0testuser\0testpass";

// Opcodes and statuses.
const GET: u8 = 0x00;
const SET: u8 = 0x01;
const NOOP: u8 = 0x0a;
const VERSION: u8 = 0x0b;
const GETQ: u8 = 0x09;
const STAT: u8 = 0x10;
const LIST_MECHS: u8 = 0x20;
const AUTH: u8 = 0x21;
const STEP: u8 = 0x22;
const OK: u16 = 0x00;
const NOT_FOUND: u16 = 0x01;
const EINVAL: u16 = 0x04;
const AUTH_ERROR: u16 = 0x20;
const AUTH_CONTINUE: u16 = 0x21;

fn frame(op: u8, key: &[u8], extras: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
    let body = key.len() + extras.len() + value.len();
    let mut f = vec![0x80, op];
    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
    f.push(extras.len() as u8);
    f.extend_from_slice(&[0, 0, 0]);
    f.extend_from_slice(&(body as u32).to_be_bytes());
    f.extend_from_slice(&opaque.to_be_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(extras);
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}

/// One response: opcode, status, opaque, key and value (extras dropped).
#[derive(Debug, PartialEq)]
struct Response {
    op: u8,
    status: u16,
    opaque: u32,
    key: Vec<u8>,
    value: Vec<u8>,
}

fn resp(op: u8, status: u16, opaque: u32, value: &[u8]) -> Response {
    Response {
        op,
        status,
        opaque,
        key: Vec::new(),
        value: value.to_vec(),
    }
}

struct Conn(TcpStream);

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn(s)
    }

    fn send(&mut self, op: u8, key: &[u8], value: &[u8], opaque: u32) {
        self.0
            .write_all(&frame(op, key, &[], value, opaque))
            .unwrap();
    }

    /// The next response, or `None` once the server has closed the connection.
    fn read(&mut self) -> Option<Response> {
        let mut h = [0u8; 24];
        if self.0.read_exact(&mut h).is_err() {
            return None;
        }
        let key_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let extras_len = usize::from(h[4]);
        let body_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let mut body = vec![0; body_len];
        self.0.read_exact(&mut body).unwrap();
        Some(Response {
            op: h[1],
            status: u16::from_be_bytes([h[6], h[7]]),
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            key: body[extras_len..extras_len + key_len].to_vec(),
            value: body[extras_len + key_len..].to_vec(),
        })
    }

    fn call(&mut self, op: u8, key: &[u8], value: &[u8], opaque: u32) -> Response {
        self.send(op, key, value, opaque);
        self.read().expect("a response")
    }

    fn authenticate(&mut self) {
        assert_eq!(
            self.call(AUTH, b"PLAIN", GOOD, 1),
            resp(AUTH, OK, 1, b"Authenticated")
        );
    }

    /// Stats of one group as name -> value.
    fn stats(&mut self, group: &[u8]) -> Vec<(String, String)> {
        self.send(STAT, group, b"", 0);
        let mut out = Vec::new();
        loop {
            let r = self.read().expect("a stats response");
            assert_eq!(r.status, OK, "{r:?}");
            if r.key.is_empty() {
                return out;
            }
            out.push((
                String::from_utf8(r.key).unwrap(),
                String::from_utf8(r.value).unwrap(),
            ));
        }
    }

    fn assert_closed(&mut self) {
        let mut byte = [0u8; 1];
        match self.0.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to close, got {other:?}"),
        }
    }
}

/// A server with SASL on and the test login: corecache with its password file, or memcached
/// with a sasldb.
struct SaslServer {
    addr: SocketAddr,
    _corecache: Option<TestServer>,
    memcached: Option<Child>,
    dir: PathBuf,
}

impl Drop for SaslServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.memcached.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corecache-sasl-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(tag: &str, args: &[&str]) -> SaslServer {
    let dir = scratch_dir(tag);
    if memcached_mode() {
        return start_memcached(dir, args);
    }
    let pwdb = dir.join("passwords");
    std::fs::write(&pwdb, format!("other:x\n{USER}:{PASSWORD}\n")).unwrap();
    let mut all = vec!["-S"];
    all.extend_from_slice(args);
    let server = TestServer::start_corecache_with(&all, |cmd| {
        cmd.env("MEMCACHED_SASL_PWDB", &pwdb);
    });
    SaslServer {
        addr: server.addr(),
        _corecache: Some(server),
        memcached: None,
        dir,
    }
}

/// memcached with a sasldb holding the login; ready once it answers `SASL list mechs`.
fn start_memcached(dir: PathBuf, args: &[&str]) -> SaslServer {
    let db = dir.join("sasldb2");
    std::fs::write(
        dir.join("memcached.conf"),
        format!("mech_list: plain\nsasldb_path: {}\n", db.display()),
    )
    .unwrap();
    let mut pw = Command::new("saslpasswd2")
        .args(["-p", "-a", "memcached", "-c", "-f"])
        .arg(&db)
        .arg(USER)
        .stdin(Stdio::piped())
        .spawn()
        .expect("saslpasswd2 (Debian: sasl2-bin) is needed in memcached mode");
    pw.stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    assert!(pw.wait().unwrap().success());
    let mut rest: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        if a == "--io-backend" {
            it.next();
        } else {
            rest.push(a);
        }
    }
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("/usr/bin/memcached")
            .args(["-S", "-u", "root", "-U", "0", "-l", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(&rest)
            .env("SASL_CONF_PATH", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + common::STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if let Ok(s) = TcpStream::connect(addr) {
                let mut c = Conn(s);
                c.0.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                if c.call(LIST_MECHS, b"", b"", 0).status == OK {
                    return SaslServer {
                        addr,
                        _corecache: None,
                        memcached: Some(child),
                        dir,
                    };
                }
            }
            std::thread::sleep(Duration::from_millis(10)); // bounded readiness poll
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("memcached -S did not start");
}

#[test]
fn plain_authentication_gates_the_binary_protocol() {
    for_each_config(|args| {
        let server = start("gate", args);
        let addr = server.addr;

        // Listing mechanisms and asking the version need no login.
        let mut c = Conn::open(addr);
        assert_eq!(
            c.call(LIST_MECHS, b"", b"", 7),
            resp(LIST_MECHS, OK, 7, b"PLAIN")
        );
        let v = c.call(VERSION, b"", b"", 8);
        assert_eq!((v.op, v.status, v.opaque), (VERSION, OK, 8));
        assert!(v.value.starts_with(b"1.6."), "{v:?}");
        // Anything else is an auth error, and the connection is closed (quiet or not).
        for op in [GET, GETQ, NOOP, STAT] {
            let mut c = Conn::open(addr);
            let key: &[u8] = if matches!(op, GET | GETQ) { b"k" } else { b"" };
            assert_eq!(
                c.call(op, key, b"", 5),
                resp(op, AUTH_ERROR, 5, b"Auth failure."),
                "opcode {op:#x}"
            );
            c.assert_closed();
        }

        // A wrong password, a foreign authorization id or an unknown mechanism fail and
        // leave the connection open; the right login then works.
        let mut c = Conn::open(addr);
        for (mech, data) in [
            (&b"PLAIN"[..], &b"\0testuser\0wrong"[..]),
            (b"PLAIN", b"other\0testuser\0testpass"),
            (b"PLAIN", b"testusertestpass"),
            (b"PLAIN", b"\0testuser\0testpass\0"),
            (b"CRAM-MD5", GOOD),
        ] {
            assert_eq!(
                c.call(AUTH, mech, data, 9),
                resp(AUTH, AUTH_ERROR, 9, b"Auth failure.")
            );
        }
        // The mechanism name is not case sensitive; an authorization id equal to the login
        // is accepted.
        assert_eq!(
            c.call(AUTH, b"plain", b"testuser\0testuser\0testpass", 2),
            resp(AUTH, OK, 2, b"Authenticated")
        );
        let mut set = frame(SET, b"k", &[0, 0, 0, 1, 0, 0, 0, 0], b"value", 3);
        c.0.write_all(&set).unwrap();
        assert_eq!(c.read().unwrap().status, OK);
        let got = c.call(GET, b"k", b"", 4);
        assert_eq!((got.status, &got.value[..]), (OK, &b"value"[..]));
        // Another auth on an authenticated connection fails and drops the login.
        assert_eq!(
            c.call(AUTH, b"PLAIN", GOOD, 6),
            resp(AUTH, AUTH_ERROR, 6, b"Auth failure.")
        );
        assert_eq!(c.call(NOOP, b"", b"", 0).status, AUTH_ERROR);
        c.assert_closed();

        // Listing mechanisms drops the login too.
        let mut c = Conn::open(addr);
        c.authenticate();
        assert_eq!(c.call(NOOP, b"", b"", 0), resp(NOOP, OK, 0, b""));
        assert_eq!(c.call(LIST_MECHS, b"", b"", 0).status, OK);
        assert_eq!(c.call(NOOP, b"", b"", 0).status, AUTH_ERROR);
        c.assert_closed();

        // PLAIN without an initial response: continue, then the credentials as a step.
        let mut c = Conn::open(addr);
        assert_eq!(
            c.call(STEP, b"PLAIN", GOOD, 0),
            resp(STEP, AUTH_ERROR, 0, b"Auth failure.")
        );
        assert_eq!(
            c.call(AUTH, b"PLAIN", b"", 1),
            resp(AUTH, AUTH_CONTINUE, 1, b"")
        );
        assert_eq!(
            c.call(STEP, b"PLAIN", GOOD, 2),
            resp(STEP, OK, 2, b"Authenticated")
        );
        assert_eq!(c.call(GET, b"k", b"", 0).status, OK);
        // A step after success fails and drops the login.
        assert_eq!(c.call(STEP, b"PLAIN", GOOD, 0).status, AUTH_ERROR);
        assert_eq!(c.call(GET, b"k", b"", 0).status, AUTH_ERROR);
        c.assert_closed();

        // Malformed SASL frames: a mechanism over 32 bytes is refused and its data dropped
        // (the connection goes on); extras or an empty mechanism are protocol errors.
        let mut c = Conn::open(addr);
        assert_eq!(
            c.call(AUTH, &[b'P'; 33], GOOD, 0),
            resp(AUTH, EINVAL, 0, b"Invalid arguments")
        );
        c.authenticate();
        assert_eq!(
            c.call(GET, b"missing", b"", 0),
            resp(GET, NOT_FOUND, 0, b"Not found")
        );
        let mut c = Conn::open(addr);
        c.0.write_all(&frame(AUTH, b"PLAIN", b"abcd", GOOD, 0))
            .unwrap();
        assert_eq!(c.read().unwrap().status, EINVAL);
        let mut c = Conn::open(addr);
        assert_eq!(c.call(AUTH, b"", GOOD, 0).status, EINVAL);

        // Every auth and step that ended is counted; failures also as errors.
        let mut c = Conn::open(addr);
        c.authenticate();
        let stats = c.stats(b"");
        let get = |name: &str| {
            stats
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("auth_cmds").as_deref(), Some("13"), "{stats:?}");
        assert_eq!(get("auth_errors").as_deref(), Some("8"), "{stats:?}");
        let settings = c.stats(b"settings");
        assert!(settings.contains(&("auth_enabled_sasl".into(), "yes".into())));
        assert!(settings.contains(&("binding_protocol".into(), "binary".into())));
        set = frame(SET, b"k2", &[0; 8], b"v", 0);
        c.0.write_all(&set).unwrap();
        assert_eq!(c.read().unwrap().status, OK);
    });
}

/// With `-S` only the binary protocol is spoken: a text request is read as the start of a
/// binary header, never answered, and closes the connection once a header's worth is in.
#[test]
fn text_requests_are_not_served_with_sasl() {
    let server = start("text", &[]);
    let mut c = Conn::open(server.addr);
    c.0.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.0.write_all(b"version\r\n").unwrap();
    let mut buf = [0u8; 64];
    let err =
        c.0.read(&mut buf)
            .expect_err("no answer to a short text request");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    c.0.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.0.write_all(b"get a_long_enough_key_for_a_header\r\n")
        .unwrap();
    c.assert_closed();
}

/// memcached's refusals of `-S` with ASCII or UDP, and corecache's of `-S` without a
/// password file.
#[test]
fn startup_refusals() {
    let dir = scratch_dir("refusals");
    let pwdb = dir.join("passwords");
    std::fs::write(&pwdb, format!("{USER}:{PASSWORD}\n")).unwrap();
    let bin: &Path = if memcached_mode() {
        Path::new("/usr/bin/memcached")
    } else {
        Path::new(env!("CARGO_BIN_EXE_corecache"))
    };
    for (args, expect) in [
        (
            &["-B", "ascii"][..],
            "ERROR: You cannot allow the ASCII protocol while using SASL.",
        ),
        (
            &["-B", "auto"],
            "ERROR: You cannot allow the ASCII protocol while using SASL.",
        ),
        (
            &["-U", "11999"],
            "ERROR: Cannot enable UDP while using binary SASL authentication.",
        ),
    ] {
        let out = Command::new(bin)
            .args(["-S", "-u", "root", "-l", "127.0.0.1", "-p", "0"])
            .args(args)
            .env("MEMCACHED_SASL_PWDB", &pwdb)
            .env("SASL_CONF_PATH", &dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    if skip_in_memcached_mode("corecache's password file") {
        return;
    }
    let out = Command::new(bin)
        .args(["-S", "-l", "127.0.0.1", "-p", "0"])
        .env_remove("MEMCACHED_SASL_PWDB")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("MEMCACHED_SASL_PWDB"), "{stderr}");
}

/// The password file is read on every attempt: a login added while the server runs works.
#[test]
fn password_file_changes_apply_at_once() {
    if skip_in_memcached_mode("corecache's password file") {
        return;
    }
    let server = start("reload", &[]);
    let mut c = Conn::open(server.addr);
    assert_eq!(c.call(AUTH, b"PLAIN", b"\0new\0pw", 0).status, AUTH_ERROR);
    let pwdb = server.dir.join("passwords");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&pwdb)
        .unwrap();
    file.write_all(b"new:pw\n").unwrap();
    assert_eq!(c.call(AUTH, b"PLAIN", b"\0new\0pw", 0).status, OK);
}

/// Runs a client script and checks the last line it printed is `expect` (client libraries
/// may log lines of their own before it).
fn run_client(what: &str, cmd: &mut Command, expect: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().last() == Some(expect),
        "{what}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Real clients' SASL PLAIN: Python's python-binary-memcached, Ruby's dalli and Node's memjs
/// log in, store and read back; a wrong password is refused.
#[test]
fn real_clients_authenticate() {
    let server = start("clients", &[]);
    let addr = server.addr.to_string();
    let clients_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    if common::client_available(
        "python3 module bmemcached (python-binary-memcached)",
        Command::new("python3").args(["-c", "import bmemcached"]),
    ) {
        let script = r#"
import sys, bmemcached
good = bmemcached.Client((sys.argv[1],), "testuser", "testpass")
assert good.set("py", "v1") and good.get("py") == "v1", "set/get"
assert good.get_multi(["py", "none"]) == {"py": "v1"}, "get_multi"
bad = bmemcached.Client((sys.argv[1],), "testuser", "wrong")
try:
    bad.set("py", "v2")
    print("wrong password accepted")
except bmemcached.exceptions.MemcachedException as e:
    assert e.code == 0x20, e
    print("ok")
"#;
        run_client(
            "python-binary-memcached",
            Command::new("python3").args(["-c", script, &addr]),
            "ok",
        );
    }
    if common::client_available(
        "ruby gem dalli (ruby-dalli)",
        Command::new("ruby").args(["-e", "require 'dalli'"]),
    ) {
        let script = r#"
require "dalli"
require "logger"
Dalli.logger = Logger.new(nil)
good = Dalli::Client.new(ARGV[0], username: "testuser", password: "testpass")
raise "set/get" unless good.set("rb", "v1") && good.get("rb") == "v1"
raise "get_multi" unless good.get_multi("rb", "none") == { "rb" => "v1" }
bad = Dalli::Client.new(ARGV[0], username: "testuser", password: "wrong")
begin
  bad.get("rb")
  puts "wrong password accepted"
rescue Dalli::DalliError => e
  raise e unless e.message.include?("0x20")
  puts "ok"
end
"#;
        run_client(
            "dalli",
            Command::new("ruby").args(["-e", script, &addr]),
            "ok",
        );
    }
    if common::client_available(
        "node module memjs (npm install --prefix tests/clients)",
        Command::new("node")
            .current_dir(&clients_dir)
            .args(["-e", "require('memjs')"]),
    ) {
        let script = r#"
const memjs = require("memjs");
const server = process.argv[1];
const good = memjs.Client.create(server, { username: "testuser", password: "testpass" });
const bad = memjs.Client.create(server, { username: "testuser", password: "wrong", retries: 0 });
(async () => {
  await good.set("js", "v1", {});
  const { value } = await good.get("js");
  if (value.toString() !== "v1") throw new Error("get: " + value);
  let refused = false;
  try { await bad.get("js"); } catch (e) { refused = true; }
  good.close(); bad.close();
  console.log(refused ? "ok" : "wrong password accepted");
})().catch((e) => { console.error(e); process.exit(1); });
"#;
        run_client(
            "memjs",
            Command::new("node")
                .current_dir(&clients_dir)
                .args(["-e", script, &addr]),
            "ok",
        );
    }
}
