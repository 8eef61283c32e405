//! TLS (`-Z`, `-o ssl_*`), as memcached 1.6.18 (Debian's build, with TLS) serves it: the text,
//! meta and binary protocols over TLS 1.2 and 1.3, `notls:` listeners, UNIX sockets and UDP
//! staying plain, startup errors and exit statuses, the TLS lines of `stats` and `stats
//! settings`, `refresh_certs`, client certificates by `ssl_verify_mode`, and connections that
//! send garbage or stop halfway through the handshake. Tests run against the real memcached
//! too (`CORECACHE_TEST_SERVER=memcached`), except the parts that count handshake errors
//! (memcached counts only the failures it sees at accept time, which races with the client's
//! ClientHello; corecache counts every failed handshake) and the options corecache refuses on
//! purpose (`ssl_min_version` 0 and 1, OpenSSL cipher keywords), said where they are.
//!
//! The certificates are in `tests/tls/` (see its README).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{
    client_available, for_each_config, memcached_mode, process_gone, server_command,
    skip_in_memcached_mode, stat_u64, tls_client_config, tls_client_config_with, tls_dir, tls_file,
    tls_server_certs_option, wait_until, Client, TestServer, TlsClient,
};

/// A directory of its own under the temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "corecache-tls-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// Copies the test file `from` (of `tests/tls/`) to `name` here; returns its path.
    fn copy(&self, from: &str, name: &str) -> String {
        std::fs::copy(tls_file(from), self.path(name)).unwrap();
        self.path(name)
    }

    fn write(&self, name: &str, data: &[u8]) -> String {
        std::fs::write(self.path(name), data).unwrap();
        self.path(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a TLS connection with `config` gets an answer to `version`. (TLS 1.3 ends the
/// client's part of the handshake before the server has checked a client certificate: a
/// refusal shows on the first read.)
fn serves(addr: SocketAddr, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    let Ok(stream) = TcpStream::connect(addr) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let session = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(session, stream);
    if tls.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(tls.read(&mut buf), Ok(n) if buf[..n].starts_with(b"VERSION "))
}

/// Reads until the peer closes (EOF, reset or a TLS alert all count); false if it stays open
/// past the timeout.
fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert, then the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Text, meta and binary requests over TLS, answered as over plain TCP.
#[test]
fn text_meta_and_binary_over_tls() {
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let mut c = server.connect_tls();
        c.roundtrip(b"set k 5 0 3\r\nabc\r\n", b"STORED\r\n");
        c.roundtrip(b"get k\r\n", b"VALUE k 5 3\r\nabc\r\nEND\r\n");
        c.roundtrip(b"ms m 2 T0\r\nhi\r\n", b"HD\r\n");
        c.roundtrip(b"mg m v f\r\n", b"VA 2 f0\r\nhi\r\n");
        c.roundtrip(b"delete k\r\n", b"DELETED\r\n");
        c.roundtrip(b"get k\r\n", b"END\r\n");
        // A binary connection: NOOP, then GET of a missing key.
        let mut b = server.connect_tls();
        let mut noop = vec![0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        noop.extend_from_slice(&[0; 8]);
        b.send(&noop);
        let reply = b.read_n(24).unwrap();
        assert_eq!(&reply[..2], &[0x81, 0x0a]);
        assert_eq!(&reply[12..16], &[0, 0, 0, 7], "opaque echoed");
        // TLS 1.2 serves too.
        let v12 = tls_client_config_with(None, Some(&rustls::version::TLS12));
        let mut old = Client::connect_tls(server.addr(), v12);
        assert_eq!(
            old.stream().conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        old.roundtrip(b"mg m v\r\n", b"VA 2\r\nhi\r\n");
    });
}

/// A value near 1 MB and a long pipeline, both across many TLS records each way.
#[test]
fn large_values_and_pipelines_over_tls() {
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let mut c = server.connect_tls();
        let value: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut set = b"set big 0 0 1000000\r\n".to_vec();
        set.extend_from_slice(&value);
        set.extend_from_slice(b"\r\n");
        c.roundtrip(&set, b"STORED\r\n");
        let mut expected = b"VALUE big 0 1000000\r\n".to_vec();
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\nEND\r\n");
        c.roundtrip(b"get big\r\n", &expected);
        let mut pipeline = Vec::new();
        let mut replies = Vec::new();
        for i in 0..500 {
            pipeline.extend_from_slice(format!("set p{i} 0 0 4\r\nv{i:03}\r\n").as_bytes());
            pipeline.extend_from_slice(format!("get p{i}\r\n").as_bytes());
            replies.extend_from_slice(
                format!("STORED\r\nVALUE p{i} 0 4\r\nv{i:03}\r\nEND\r\n").as_bytes(),
            );
        }
        c.roundtrip(&pipeline, &replies);
    });
}

/// `-l notls:<ip>:<port>` stays plain while the other listener speaks TLS.
#[test]
fn notls_listeners_stay_plain() {
    let (tls_port, plain_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1,notls:127.0.0.1:{plain_port}");
    let mut child = server_command()
        .args([
            "-U",
            "0",
            "-t",
            "2",
            "-p",
            &tls_port.to_string(),
            "-l",
            &listen,
        ])
        .args(["-Z", "-o", &tls_server_certs_option()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let plain: SocketAddr = format!("127.0.0.1:{plain_port}").parse().unwrap();
    let up = wait_until(common::STARTUP_TIMEOUT, || {
        TcpStream::connect(plain).is_ok()
    });
    let result = std::panic::catch_unwind(|| {
        assert!(up, "the notls listener never came up");
        let mut p = Client::connect(plain);
        p.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
        let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
        let mut t = Client::connect_tls(tls, tls_client_config(false));
        t.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Runs the server with `args` (a TCP port of its own, no UDP) and returns its exit status and
/// stderr once it has exited; panics if it keeps running.
fn failed_start(args: &[&str]) -> (i32, String) {
    let port = free_port().to_string();
    let (status, err) = common::run_to_exit(
        server_command()
            .args(["-U", "0", "-l", "127.0.0.1", "-p", &port])
            .args(args),
        &format!("{args:?}: the server did not exit"),
    );
    (status.code().unwrap_or(-1), err)
}

/// Startup errors: memcached's statuses and the start of its messages (the reasons after ` : `
/// are OpenSSL's there and rustls's or the C library's here).
#[test]
fn startup_errors_match_memcached() {
    let dir = TempDir::new("startup");
    let cert = tls_file("server.pem");
    let key = tls_file("server.key");
    let junk = dir.write("junk.pem", b"not a certificate\n");
    let missing = dir.path("missing.pem");
    let with = |extra: &str| format!("ssl_chain_cert={cert},ssl_key={key},{extra}");
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["-Z".into()],
            64,
            "Error loading the certificate chain: (null) : ".into(),
        ),
        (
            vec!["-Z".into(), "-o".into(), format!("ssl_chain_cert={cert}")],
            64,
            "Error loading the key: (null) : ".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={missing},ssl_key={key}"),
            ],
            64,
            format!("Error loading the certificate chain: {missing} : "),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={junk},ssl_key={key}"),
            ],
            64,
            format!("Error loading the certificate chain: {junk} : "),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={cert},ssl_key={}", tls_file("client.key")),
            ],
            64,
            format!("Error loading the key: {} : ", tls_file("client.key")),
        ),
        (
            vec!["-Z".into(), "-o".into(), with("ssl_keyformat=3")],
            64,
            format!("Error loading the key: {key} : "),
        ),
        (
            vec!["-Z".into(), "-o".into(), with("ssl_keyformat=DER")],
            1,
            "could not parse argument to ssl_keyformat".into(),
        ),
        (
            vec!["-Z".into(), "-o".into(), with("ssl_verify_mode=4")],
            1,
            "Invalid ssl_verify_mode. Use help to see valid options.".into(),
        ),
        (
            vec!["-Z".into(), "-o".into(), with("ssl_verify_mode=x")],
            1,
            "could not parse argument to ssl_verify_mode".into(),
        ),
        (
            vec!["-Z".into(), "-o".into(), with("ssl_min_version=4")],
            1,
            "Invalid ssl_min_version. Use help to see valid options.".into(),
        ),
        (
            vec!["-Z".into(), "-o".into(), with("ssl_wbuf_size=-1")],
            1,
            "could not parse argument to ssl_wbuf_size".into(),
        ),
        (
            vec!["-Z".into(), "-o".into(), with("ssl_ciphers=BOGUS")],
            64,
            "Error setting the provided cipher(s): BOGUS".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                with(&format!("ssl_verify_mode=2,ssl_ca_cert={missing}")),
            ],
            64,
            format!("Error loading the CA certificate: {missing} : "),
        ),
    ];
    for (args, code, message) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got_code, err) = failed_start(&args);
        assert_eq!(got_code, code, "{args:?}: {err}");
        assert!(
            err.contains(&message),
            "{args:?}: {err:?} lacks {message:?}"
        );
        if message.contains("missing.pem") {
            assert!(err.contains("No such file or directory"), "{err}");
        }
    }
    // `notls:` without `-Z`: memcached's words and EX_OSERR.
    let port = free_port();
    let out = server_command()
        .args(["-U", "0", "-p", &port.to_string()])
        .args(["-l", &format!("notls:127.0.0.1:{},127.0.0.1", free_port())])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'notls' option is valid only when SSL is enabled"),
        "{err}"
    );
    if memcached_mode() {
        return;
    }
    // corecache refuses what rustls cannot do, where memcached (OpenSSL) starts: TLS 1.0 and
    // 1.1, and OpenSSL's cipher keywords.
    for (extra, message) in [
        ("ssl_min_version=0", "TLS 1.2 and 1.3 only"),
        ("ssl_min_version=1", "TLS 1.2 and 1.3 only"),
        (
            "ssl_ciphers=HIGH:!aNULL",
            "Error setting the provided cipher(s): HIGH:!aNULL (corecache accepts",
        ),
    ] {
        let (code, err) = failed_start(&["-Z", "-o", &with(extra)]);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(message), "{extra}: {err}");
    }
}

/// The TLS lines of `stats` (only with `-Z`, after `log_watchers`, in memcached's order) and of
/// `stats settings` (always).
#[test]
fn stats_and_settings_show_tls() {
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let mut c = server.connect_tls();
        let (stats, raw) = c.stats_raw("");
        let names: Vec<String> = String::from_utf8_lossy(&raw)
            .lines()
            .filter_map(|l| l.strip_prefix("STAT ")?.split(' ').next().map(String::from))
            .collect();
        let at = |name: &str| names.iter().position(|n| n == name);
        let watchers = at("log_watchers").unwrap();
        assert_eq!(at("ssl_handshake_errors"), Some(watchers + 1), "{names:?}");
        assert_eq!(at("time_since_server_cert_refresh"), Some(watchers + 2));
        assert_eq!(at("ssl_new_sessions"), None);
        assert_eq!(stat_u64(&stats, "ssl_handshake_errors"), 0);
        // Never refreshed: the server's uptime plus a minute, as memcached's clock counts.
        let since = stat_u64(&stats, "time_since_server_cert_refresh");
        let uptime = stat_u64(&stats, "uptime");
        assert!((60..=uptime + 61).contains(&since), "{since} {uptime}");
        let settings = c.stats_sub("settings");
        let expected = [
            ("ssl_enabled", "yes".to_string()),
            ("ssl_chain_cert", tls_file("server.pem")),
            ("ssl_key", tls_file("server.key")),
            ("ssl_verify_mode", "0".into()),
            ("ssl_keyformat", "1".into()),
            ("ssl_ciphers", "NULL".into()),
            ("ssl_ca_cert", "NULL".into()),
            ("ssl_wbuf_size", "16384".into()),
            ("ssl_session_cache", "no".into()),
            ("ssl_kernel_tls", "no".into()),
            ("ssl_min_version", "tlsv1.2".into()),
        ];
        for (name, value) in &expected {
            assert_eq!(settings.get(*name), Some(value), "{name}");
        }
    });
    // Without -Z: no TLS lines in `stats`, memcached's unused settings.
    let server = TestServer::start(&["-t", "1"]);
    let stats = server.stats();
    assert!(!stats.keys().any(|k| k.starts_with("ssl_")), "{stats:?}");
    assert!(!stats.contains_key("time_since_server_cert_refresh"));
    let settings = server.stats_sub("settings");
    assert_eq!(settings["ssl_enabled"], "no");
    assert_eq!(settings["ssl_chain_cert"], "(null)");
    // The session cache adds `ssl_new_sessions`, first; settings show every option.
    let options = format!(
        "{},ssl_session_cache,ssl_verify_mode=1,ssl_ca_cert={},ssl_min_version=3,ssl_wbuf_size=32,ssl_ciphers=ECDHE-ECDSA-AES128-GCM-SHA256",
        tls_server_certs_option(),
        tls_file("ca.pem")
    );
    let server = TestServer::start(&["-t", "2", "-Z", "-o", &options]);
    let mut c = server.connect_tls();
    let (stats, raw) = c.stats_raw("");
    let text = String::from_utf8_lossy(&raw);
    let sessions = text.find("STAT ssl_new_sessions ").unwrap();
    assert!(sessions < text.find("STAT ssl_handshake_errors ").unwrap());
    assert!(stat_u64(&stats, "ssl_new_sessions") >= 1, "TLS 1.3 tickets");
    let settings = c.stats_sub("settings");
    for (name, value) in [
        ("ssl_session_cache", "yes"),
        ("ssl_verify_mode", "1"),
        ("ssl_min_version", "tlsv1.3"),
        ("ssl_wbuf_size", "32768"),
        ("ssl_ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ] {
        assert_eq!(settings[name], value, "{name}");
    }
    assert_eq!(settings["ssl_ca_cert"], tls_file("ca.pem"));
}

/// `refresh_certs`: `OK` and new connections get the files as they are now; a file that does
/// not load is named in the reply and everything goes on with the files loaded before;
/// without `-Z` it is an error line.
#[test]
fn refresh_certs_reloads_the_files() {
    for_each_config(|args| {
        let dir = TempDir::new("refresh");
        let cert = dir.copy("server.pem", "cert.pem");
        let key = dir.copy("server.key", "cert.key");
        let option = format!("ssl_chain_cert={cert},ssl_key={key}");
        let mut all = vec!["-Z", "-o", option.as_str()];
        all.extend_from_slice(args);
        let server = TestServer::start(&all);
        let mut c = server.connect_tls();
        c.roundtrip(b"refresh_certs\r\n", b"OK\r\n");
        let since = stat_u64(&c.stats_sub(""), "time_since_server_cert_refresh");
        assert!(since <= 2, "{since}");
        // A chain file that is not PEM.
        std::fs::write(&cert, b"junk").unwrap();
        c.send(b"refresh_certs\r\n");
        let line = c.read_line();
        let want = format!("Error loading the certificate chain: {cert} : ");
        assert!(line.starts_with(want.as_bytes()), "{line:?}");
        // A key that is not the certificate's.
        std::fs::copy(tls_file("server.pem"), &cert).unwrap();
        std::fs::copy(tls_file("client.key"), &key).unwrap();
        c.send(b"refresh_certs noreply\r\n");
        let line = c.read_line();
        let want = format!("Error loading the key: {key} : ");
        assert!(line.starts_with(want.as_bytes()), "{line:?}");
        // A missing key.
        std::fs::remove_file(&key).unwrap();
        c.send(b"refresh_certs\r\n");
        let line = String::from_utf8_lossy(&c.read_line()).into_owned();
        assert!(line.starts_with(&format!("Error loading the key: {key} : ")));
        assert!(line.ends_with("No such file or directory\r\n"), "{line:?}");
        // The old files still serve new connections.
        assert!(serves(server.addr(), tls_client_config(false)));
        // A different valid pair (the client's, which no client takes as a server's) is
        // what new connections get after OK; the open one goes on.
        std::fs::copy(tls_file("client.pem"), &cert).unwrap();
        std::fs::copy(tls_file("client.key"), &key).unwrap();
        c.roundtrip(b"refresh_certs\r\n", b"OK\r\n");
        assert!(!serves(server.addr(), tls_client_config(false)));
        c.send(b"version\r\n");
        assert!(c.read_line().starts_with(b"VERSION "));
        std::fs::copy(tls_file("server.pem"), &cert).unwrap();
        std::fs::copy(tls_file("server.key"), &key).unwrap();
        c.roundtrip(b"refresh_certs\r\n", b"OK\r\n");
        assert!(serves(server.addr(), tls_client_config(false)));
    });
    let server = TestServer::start(&["-t", "1"]);
    let mut c = server.connect();
    c.roundtrip(b"refresh_certs\r\n", b"Error TLS not enabled\r\n");
}

/// `ssl_verify_mode`: 1 asks for a client certificate and takes none, 2 and 3 require one;
/// a certificate must chain to `ssl_ca_cert` and be a client's; without a CA file every
/// certificate is refused.
#[test]
fn client_certificates_by_verify_mode() {
    let client = Some(("client.pem", "client.key"));
    // The server's certificate, offered as a client's: issued by the CA, but not for clients.
    let wrong = Some(("server.pem", "server.key"));
    let ca = tls_file("ca.pem");
    for (mode, with_ca, none_ok, client_ok) in [
        (1, true, true, true),
        (2, true, false, true),
        (3, true, false, true),
        (2, false, false, false),
    ] {
        // memcached refuses every handshake here too (checked by hand), which leaves the
        // harness no way to see that it serves.
        if !with_ca && memcached_mode() {
            continue;
        }
        let mut options = format!("{},ssl_verify_mode={mode}", tls_server_certs_option());
        if with_ca {
            options.push_str(&format!(",ssl_ca_cert={ca}"));
        }
        let server = TestServer::start(&["-t", "2", "-Z", "-o", &options]);
        let addr = server.addr();
        let context = format!("mode {mode}, CA {with_ca}");
        assert_eq!(
            serves(addr, tls_client_config_with(None, None)),
            none_ok,
            "{context}: no certificate"
        );
        assert_eq!(
            serves(addr, tls_client_config_with(client, None)),
            client_ok,
            "{context}: client certificate"
        );
        assert!(
            !serves(addr, tls_client_config_with(wrong, None)),
            "{context}: the server's certificate as a client's"
        );
    }
}

/// Garbage where a ClientHello belongs closes that connection (after an alert, if any) and
/// nothing else; corecache counts it in `ssl_handshake_errors`.
#[test]
fn garbage_instead_of_a_client_hello_closes_the_connection() {
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let mut good = server.connect_tls();
        good.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
        for garbage in [
            &b"get a\r\n"[..],
            &[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0][..],
            &[0x80; 64][..],
        ] {
            let mut raw = TcpStream::connect(server.addr()).unwrap();
            raw.write_all(garbage).unwrap();
            assert!(
                closed_by_peer(&mut raw, Duration::from_secs(5)),
                "{garbage:?}"
            );
        }
        good.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
        if !memcached_mode() {
            let errors = stat_u64(&good.stats_sub(""), "ssl_handshake_errors");
            assert_eq!(errors, 3);
        }
    });
}

/// A client that stops halfway through its ClientHello holds only its own connection: other
/// clients are served meanwhile, and its close counts no handshake error.
#[test]
fn a_handshake_that_stops_halfway_blocks_nothing() {
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let mut watcher = server.connect_tls();
        let before = watcher.stats_sub("")["curr_connections"].clone();
        let mut stalled = Vec::new();
        for _ in 0..4 {
            let mut raw = TcpStream::connect(server.addr()).unwrap();
            raw.write_all(&[0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3])
                .unwrap();
            stalled.push(raw);
        }
        let silent = TcpStream::connect(server.addr()).unwrap();
        for i in 0..5 {
            let mut c = server.connect_tls();
            c.roundtrip(
                format!("set s{i} 0 0 1\r\n{i}\r\n").as_bytes(),
                b"STORED\r\n",
            );
        }
        // Still open: nothing came back, no close.
        let first = &mut stalled[0];
        assert!(!closed_by_peer(first, Duration::from_millis(200)));
        drop(stalled);
        drop(silent);
        if !memcached_mode() {
            let closed = wait_until(Duration::from_secs(5), || {
                watcher.stats_sub("")["curr_connections"] == before
            });
            assert!(closed, "the stalled connections closed");
            let errors = stat_u64(&watcher.stats_sub(""), "ssl_handshake_errors");
            assert_eq!(errors, 0);
        }
    });
}

/// `ssl_min_version=3` refuses a TLS 1.2 client; `ssl_ciphers` limits TLS 1.2's suites.
#[test]
fn min_version_and_ciphers() {
    let options = format!("{},ssl_min_version=3", tls_server_certs_option());
    let server = TestServer::start(&["-t", "2", "-Z", "-o", &options]);
    let v12 = tls_client_config_with(None, Some(&rustls::version::TLS12));
    assert!(TlsClient::try_connect_tls(server.addr(), v12).is_err());
    assert!(serves(server.addr(), tls_client_config(false)));
    if !memcached_mode() {
        assert_eq!(
            stat_u64(&server.connect_tls().stats_sub(""), "ssl_handshake_errors"),
            1
        );
    }
    let options = format!(
        "{},ssl_ciphers=ECDHE-ECDSA-CHACHA20-POLY1305",
        tls_server_certs_option()
    );
    let server = TestServer::start(&["-t", "1", "-Z", "-o", &options]);
    let v12 = tls_client_config_with(None, Some(&rustls::version::TLS12));
    let c = Client::connect_tls(server.addr(), v12);
    let suite = c.stream().conn.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(
        suite,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    );
}

/// With `-Z`, a UNIX socket and UDP stay plain, as in memcached.
#[test]
fn unix_sockets_and_udp_stay_plain() {
    let dir = TempDir::new("unix");
    let path = PathBuf::from(dir.path("tls.sock"));
    let option = tls_server_certs_option();
    let server = TestServer::start_unix(&path, &["-t", "2", "-Z", "-o", &option]);
    let mut c = server.connect_unix();
    c.roundtrip(b"set u 0 0 1\r\nu\r\n", b"STORED\r\n");
    drop(server);
    let server = TestServer::start_udp(&["-t", "2", "-Z", "-o", &option]);
    let mut udp = server.udp_client();
    let frames = udp.roundtrip(b"version\r\n", 1);
    assert!(frames[0].parts().2.starts_with(b"VERSION "));
    let mut c = server.connect_tls();
    c.roundtrip(b"get u\r\n", b"END\r\n");
}

/// pymemcache over TLS (`tls_context=`): a real client's set, get and delete.
#[test]
fn pymemcache_over_tls() {
    if !client_available(
        "python3 module pymemcache",
        Command::new("python3").args(["-c", "import pymemcache"]),
    ) {
        return;
    }
    let script = r#"
import ssl, sys
from pymemcache.client.base import Client
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = Client(("127.0.0.1", int(sys.argv[1])), tls_context=ctx, connect_timeout=10, timeout=10)
assert c.set("k", b"v" * 100000)
assert c.get("k") == b"v" * 100000
assert c.get_many(["k", "missing"]) == {"k": b"v" * 100000}
assert c.delete("k")
assert c.get("k") is None
print("ok")
"#;
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let out = Command::new("python3")
            .args(["-c", script, &server.addr().port().to_string()])
            .arg(tls_file("ca.pem"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout == b"ok\n",
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The number after `"name":` inside the JSON object `"section":{...}` of `json`.
fn json_field(json: &str, section: &str, name: &str) -> u64 {
    let start = json
        .find(&format!("\"{section}\":{{"))
        .unwrap_or_else(|| panic!("no {section} in {json}"));
    let body = &json[start..];
    let body = &body[..body.find('}').unwrap()];
    let at = body
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {section}.{name} in {json}"));
    let rest = &body[at + name.len() + 3..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

/// corecache-bench over TLS (`--tls-ca`): a pipelined multiget and set load with no errors,
/// and the counts it reports equal the server's `stats` deltas (read over TLS too). Against
/// corecache, replies span several TLS records (8 keys of up to 3000 bytes); memcached 1.6.18
/// gets smaller values, since it stalls on pipelined requests larger than a TLS record (see
/// `pipelined_requests_larger_than_a_record_are_all_answered`).
#[test]
fn bench_load_over_tls_counts_match_server_stats() {
    let (sizes, multiget) = match memcached_mode() {
        true => ("10-500", "3"),
        false => ("10-3000", "8"),
    };
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let counters = || {
            let stats = server.connect_tls().stats_sub("");
            ["cmd_get", "get_hits", "get_misses", "cmd_set"].map(|name| stat_u64(&stats, name))
        };
        let before = counters();
        let ca = tls_dir().join("ca.pem");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_corecache-bench"))
            .args(["--server", &server.addr().to_string(), "--json", "--quiet"])
            .args(["--tls-ca", ca.to_str().unwrap()])
            .args(["--connections", "8", "--pipeline", "4", "--keys", "2000"])
            .args(["--multiget", multiget, "--value-size", sizes, "--prefill"])
            .args(["--duration", "0.5", "--warmup", "0"])
            .output()
            .unwrap();
        let json = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "bench failed: {json}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(json_field(&json, "errors", "total"), 0, "{json}");
        let after = counters();
        let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let reported: Vec<u64> = ["cmd_get", "get_hits", "get_misses", "cmd_set"]
            .iter()
            .map(|name| json_field(&json, "server_totals", name))
            .collect();
        assert_eq!(reported, delta, "bench totals vs server deltas\n{json}");
        assert!(reported[0] > 0 && reported[3] >= 2000, "{json}");
    });
}

/// Several requests in one write, each larger than a TLS record (16 KiB of plaintext), so one
/// read of the socket brings more records than the first request needs: every reply comes.
/// memcached 1.6.18 answers some and leaves the rest until the client sends more (none came in
/// 20 s): records it has read already are not looked at again. So this runs against corecache
/// only.
#[test]
fn pipelined_requests_larger_than_a_record_are_all_answered() {
    if skip_in_memcached_mode("memcached 1.6.18 stalls on pipelined requests over TLS records") {
        return;
    }
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let mut c = server.connect_tls();
        for (size, depth) in [(8_000usize, 4usize), (20_000, 16), (100_000, 8)] {
            let value = vec![b'v'; size];
            let mut batch = Vec::new();
            let mut gets = Vec::new();
            let mut replies = Vec::new();
            for i in 0..depth {
                batch.extend_from_slice(format!("set r{size}-{i} 0 0 {size}\r\n").as_bytes());
                batch.extend_from_slice(&value);
                batch.extend_from_slice(b"\r\n");
                gets.extend_from_slice(format!("get r{size}-{i}\r\n").as_bytes());
                replies.extend_from_slice(format!("VALUE r{size}-{i} 0 {size}\r\n").as_bytes());
                replies.extend_from_slice(&value);
                replies.extend_from_slice(b"\r\nEND\r\n");
            }
            c.roundtrip(&batch, &b"STORED\r\n".repeat(depth));
            c.roundtrip(&gets, &replies);
        }
    });
}

/// TLS 1.3 session tickets are issued with or without `ssl_session_cache`, as memcached's
/// OpenSSL issues them, and a client that kept one resumes its session on its next
/// connection. (The ticket also answers the client's Finished at once: without it, a client
/// that sent its first request right behind its Finished waited for the server's delayed ACK.)
#[test]
fn tls13_tickets_resume_sessions_with_or_without_the_session_cache() {
    for cache in [false, true] {
        let certs = tls_server_certs_option();
        let options = match cache {
            true => format!("{certs},ssl_session_cache"),
            false => certs,
        };
        let server = TestServer::start(&["-Z", "-o", &options]);
        let config = tls_client_config_with(None, Some(&rustls::version::TLS13));
        for (round, expected) in [
            (0, rustls::HandshakeKind::Full),
            (1, rustls::HandshakeKind::Resumed),
        ] {
            let mut c = Client::connect_tls(server.addr(), Arc::clone(&config));
            // The tickets come after the handshake: a roundtrip receives them.
            c.roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");
            assert_eq!(
                c.stream().conn.handshake_kind(),
                Some(expected),
                "connection {round}, ssl_session_cache {cache}"
            );
        }
    }
}

/// Ruby's dalli (binary protocol) over TLS with its `ssl_context`: its whole check script but
/// get_multi, which dalli 3.0.6 cannot run over its own TLS socket against any server.
#[test]
fn dalli_over_tls() {
    if !client_available(
        "ruby gem dalli (ruby-dalli)",
        Command::new("ruby").args(["-e", "require 'dalli'"]),
    ) {
        return;
    }
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let out = Command::new("ruby")
            .current_dir(&clients)
            .arg("dalli_client.rb")
            .arg(server.addr().to_string())
            .arg("--tls-ca")
            .arg(tls_file("ca.pem"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("dalli_binary: ok"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// How a TLS connection ended, as the client sees it after the replies.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The server's close_notify alert, then the close.
    CloseNotify,
    /// The close with no alert at all.
    Truncated,
    /// A fatal alert (or another TLS error), then the close.
    Error(String),
    /// Still open when the read timed out.
    Open,
}

/// A handshaken TLS session over a raw socket, for tests that control the TLS layer
/// themselves (send close_notify, half-close, read how the server ends).
struct RawTls {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl RawTls {
    fn connect(
        addr: SocketAddr,
        version: Option<&'static rustls::SupportedProtocolVersion>,
    ) -> RawTls {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let config = tls_client_config_with(None, version);
        let session =
            rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(session, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        RawTls { tls }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).unwrap();
        self.tls.flush().unwrap();
    }

    /// `version`, answered.
    fn roundtrip_version(&mut self) {
        self.send(b"version\r\n");
        let mut reply = [0u8; 16];
        self.tls.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"VERSION 1.6.18\r\n");
    }

    /// Reads the replies until the connection ends; returns them and how it ended.
    fn ending(&mut self) -> (Vec<u8>, Ending) {
        let mut replies = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.read(&mut buf) {
                Ok(0) => return (replies, Ending::CloseNotify),
                Ok(n) => replies.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return (replies, Ending::Truncated)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return (replies, Ending::Open)
                }
                Err(e) => return (replies, Ending::Error(e.to_string())),
            }
        }
    }
}

/// When the server closes an established TLS connection (`quit`, a request line too long
/// to be one, the binary protocol's bad magic, `idle_timeout`) or answers the client's own
/// close_notify, it sends its close_notify after the last reply, as memcached's
/// `SSL_shutdown` does. A client that ends with a bare TCP FIN gets none (memcached's
/// OpenSSL sends a fatal alert; corecache closes without one: both say the stream was cut),
/// and neither does a connection idle-closed before its handshake, nor any connection when
/// SIGTERM ends the server.
#[test]
fn closes_send_close_notify_as_memcached_does() {
    let version = b"VERSION 1.6.18\r\n";
    let mut bad_magic = vec![0x80, 0x0a];
    bad_magic.resize(24, 0);
    bad_magic.push(0x99);
    bad_magic.resize(48, 0);
    let noop_reply = {
        let mut r = vec![0x81, 0x0a];
        r.resize(24, 0);
        r
    };
    for_each_config(|args| {
        let mut all = vec!["-o", "idle_timeout=1"];
        all.extend_from_slice(args);
        let server = TestServer::start_tls(&all);
        for tls_version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let connect = || RawTls::connect(server.addr(), Some(tls_version));
            let what = format!("{:?}", tls_version.version);
            let mut c = connect();
            c.send(b"version\r\nquit\r\n");
            assert_eq!(
                c.ending(),
                (version.to_vec(), Ending::CloseNotify),
                "quit {what}"
            );
            let mut c = connect();
            c.send(&[b'x'; 3000]);
            assert_eq!(c.ending(), (Vec::new(), Ending::CloseNotify), "line {what}");
            let mut c = connect();
            c.send(&bad_magic);
            assert_eq!(
                c.ending(),
                (noop_reply.clone(), Ending::CloseNotify),
                "magic {what}"
            );
            let mut c = connect();
            c.send(b"version\r\n");
            assert_eq!(
                c.ending(),
                (version.to_vec(), Ending::CloseNotify),
                "idle {what}"
            );
            let mut c = connect();
            c.send(b"version\r\n");
            c.tls.conn.send_close_notify();
            c.tls.flush().unwrap();
            assert_eq!(
                c.ending(),
                (version.to_vec(), Ending::CloseNotify),
                "peer {what}"
            );
            let mut c = connect();
            c.send(b"version\r\n");
            c.tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
            let (replies, ending) = c.ending();
            if memcached_mode() {
                // Its fatal alert can come in the same read as the reply, which rustls then
                // does not hand over.
                assert!(matches!(ending, Ending::Error(_)), "FIN {what}: {ending:?}");
            } else {
                assert_eq!(
                    (replies, ending),
                    (version.to_vec(), Ending::Truncated),
                    "FIN {what}"
                );
            }
        }
        // Idle-closed before any handshake: the close and nothing else.
        let mut raw = TcpStream::connect(server.addr()).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        assert!(raw.read_to_end(&mut got).is_ok());
        assert_eq!(got, b"");
        // SIGTERM: the process exits without closing sessions (memcached's too).
        let mut c = RawTls::connect(server.addr(), None);
        c.roundtrip_version();
        let mut server = server;
        assert!(server.terminate(Duration::from_secs(10)).success());
        assert_eq!(c.ending(), (Vec::new(), Ending::Truncated), "SIGTERM");
    });
}

/// SIGKILLs a daemon this test started when the test ends, however it ends.
struct DaemonGuard(i32);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: kill(2) on the daemon this test started; it takes no memory.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// `-d` with relative certificate paths, started in the directory holding the files: the
/// files load (both servers read them before detaching), and `refresh_certs` reads the same
/// files again although the daemon has left for `/`; memcached's daemon reads them from `/`
/// and fails. The paths show as given.
#[test]
fn a_daemon_reloads_relative_certificate_paths_from_where_it_started() {
    let configs: Vec<Vec<&str>> = if memcached_mode() {
        vec![vec![]]
    } else {
        vec![vec!["--io-backend", "epoll"], vec!["--io-backend", "uring"]]
    };
    for config in configs {
        eprintln!("=== config: {config:?}");
        let dir = TempDir::new("daemon");
        let cert = dir.copy("server.pem", "cert.pem");
        let key = dir.copy("server.key", "cert.key");
        let port = free_port();
        let pid_path = dir.path("pid");
        let out = server_command()
            .current_dir(&dir.0)
            .args([
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "1",
            ])
            .args(["-d", "-P", &pid_path, "-Z"])
            .args(["-o", "ssl_chain_cert=cert.pem,ssl_key=cert.key"])
            .args(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read_pid = || {
            std::fs::read_to_string(&pid_path)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // memcached's parent exits before the daemon has bound its port.
        let up = wait_until(common::STARTUP_TIMEOUT, || {
            read_pid().is_some() && TcpStream::connect(addr).is_ok()
        });
        let pid = read_pid().unwrap_or(0);
        let mut guard = DaemonGuard(pid);
        assert!(up, "the daemon does not serve");
        let mut c = Client::connect_tls(addr, tls_client_config(false));
        let settings = c.stats_sub("settings");
        assert_eq!(settings["ssl_chain_cert"], "cert.pem");
        assert_eq!(settings["ssl_key"], "cert.key");
        // Another valid pair (the client's, which no client takes as a server's) under the
        // same names: what new connections get if the files are read again.
        std::fs::copy(tls_file("client.pem"), &cert).unwrap();
        std::fs::copy(tls_file("client.key"), &key).unwrap();
        c.send(b"refresh_certs\r\n");
        let line = c.read_line();
        if memcached_mode() {
            let want = b"Error loading the certificate chain: cert.pem : ";
            assert!(line.starts_with(want), "{}", String::from_utf8_lossy(&line));
            assert!(serves(addr, tls_client_config(false)));
        } else {
            assert_eq!(line, b"OK\r\n");
            assert!(!serves(addr, tls_client_config(false)));
            std::fs::copy(tls_file("server.pem"), &cert).unwrap();
            std::fs::copy(tls_file("server.key"), &key).unwrap();
            c.roundtrip(b"refresh_certs\r\n", b"OK\r\n");
            assert!(serves(addr, tls_client_config(false)));
        }
        drop(c);
        // SAFETY: kill(2) on the daemon this test started; it takes no memory.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let gone = wait_until(Duration::from_secs(10), || process_gone(pid as u32));
        assert!(gone, "daemon {pid} did not stop");
        guard.0 = 0;
    }
}

/// `bytes_read` and `bytes_written` count the requests and replies, not the TLS records that
/// carry them (memcached counts what `SSL_read` returns and `SSL_write` takes): a handshake
/// counts nothing.
#[test]
fn byte_counters_count_plaintext() {
    for_each_config(|args| {
        let server = TestServer::start_tls(args);
        let mut c = server.connect_tls();
        let before = c.stats_sub("");
        if !memcached_mode() {
            // (memcached mode's startup probe sent a `stats` already.)
            assert_eq!(stat_u64(&before, "bytes_written"), 0);
            assert_eq!(stat_u64(&before, "bytes_read"), b"stats\r\n".len() as u64);
        }
        let stats_reply: usize = before
            .iter()
            .map(|(name, value)| format!("STAT {name} {value}\r\n").len())
            .sum::<usize>()
            + b"END\r\n".len();
        // A second connection: its handshake, a request and its reply.
        let mut d = server.connect_tls();
        d.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
        let after = c.stats_sub("");
        let read = stat_u64(&after, "bytes_read") - stat_u64(&before, "bytes_read");
        assert_eq!(read, b"set k 0 0 1\r\nv\r\nstats\r\n".len() as u64);
        let written = stat_u64(&after, "bytes_written") - stat_u64(&before, "bytes_written");
        assert_eq!(written, (stats_reply + b"STORED\r\n".len()) as u64);
    });
}
