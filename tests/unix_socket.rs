//! UNIX domain sockets (`-s <path>`, `-a <mask>`): served on both backends like TCP, the socket
//! file's mode from the mask, a stale socket replaced, anything else at the path a startup
//! failure, `stats settings` and `stats conns` naming the socket as memcached does, and no TCP
//! or UDP socket opened. Every test also runs against memcached in validation mode, except
//! where it says corecache only.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

mod common;
use common::{
    for_each_config, is_root, memcached_mode, process_gone, wait_until, Client, TestServer,
};

/// A directory of its own under the temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "corecache-unix-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Permission bits of the file at `path` (not following a symlink).
fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The shard that accepted each of this server's connections, from `stats conns` ids
/// (corecache numbers a connection `n * shards + shard`; listening sockets, which have no
/// `listen_addr`, are left out).
fn accepting_shards(c: &mut Client<UnixStream>, shards: u64) -> BTreeSet<u64> {
    c.stats_sub("conns")
        .keys()
        .filter_map(|k| k.strip_suffix(":listen_addr")?.parse::<u64>().ok())
        .map(|id| id % shards)
        .collect()
}

/// Many connections at `-t 1` and `-t 2` on both backends, each storing and reading its own
/// key, and every key read back from one connection (keys of both shards). At `-t 2`,
/// connections are opened until both shards have accepted some: every executor accepts on
/// its duplicate of the one socket.
#[test]
fn set_and_get_over_many_connections_on_every_backend() {
    const CONNECTIONS_MIN: usize = 48;
    const CONNECTIONS_MAX: usize = 600;
    for_each_config(|args| {
        let dir = TempDir::new("many");
        let path = dir.path("s.sock");
        let server = TestServer::start_unix(&path, args);
        let shards: u64 = args[1].parse().unwrap();
        let mut conns: Vec<Client<UnixStream>> = Vec::new();
        let mut probe = server.connect_unix();
        loop {
            for _ in 0..8 {
                conns.push(server.connect_unix());
            }
            if conns.len() < CONNECTIONS_MIN {
                continue;
            }
            if memcached_mode() || accepting_shards(&mut probe, shards).len() as u64 == shards {
                break;
            }
            assert!(
                conns.len() < CONNECTIONS_MAX,
                "{args:?}: {} connections, all accepted by shards {:?}",
                conns.len(),
                accepting_shards(&mut probe, shards)
            );
        }
        // Pipelined on every connection first, then every reply read: all are served at once.
        for (i, c) in conns.iter_mut().enumerate() {
            let v = format!("value{i}");
            c.send(format!("set key{i} 0 0 {}\r\n{v}\r\nget key{i}\r\n", v.len()).as_bytes());
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let v = format!("value{i}");
            c.read_exact_reply(
                format!("STORED\r\nVALUE key{i} 0 {}\r\n{v}\r\nEND\r\n", v.len()).as_bytes(),
            );
        }
        let keys: Vec<String> = (0..conns.len()).map(|i| format!("key{i}")).collect();
        let mut expected = String::new();
        for (i, k) in keys.iter().enumerate() {
            let v = format!("value{i}");
            expected.push_str(&format!("VALUE {k} 0 {}\r\n{v}\r\n", v.len()));
        }
        expected.push_str("END\r\n");
        probe.roundtrip(
            format!("get {}\r\n", keys.join(" ")).as_bytes(),
            expected.as_bytes(),
        );
        let stats = probe.stats_sub("");
        assert!(
            stats["curr_connections"].parse::<usize>().unwrap() >= conns.len(),
            "{stats:?}"
        );
    });
}

/// `-a`: the file's mode is `mask & 0777` (default 0700), and `stats settings` shows the path
/// as `domain_socket` and the mask in octal as `umask`.
#[test]
fn the_mask_sets_the_file_mode_and_settings_show_socket_and_mask() {
    let dir = TempDir::new("mask");
    for (mask, mode, umask) in [
        (None, 0o700, "700"),
        (Some("0777"), 0o777, "777"),
        (Some("640"), 0o640, "640"),
        (Some("1777"), 0o777, "1777"),
    ] {
        let path = dir.path(&format!("m{}.sock", mask.unwrap_or("default")));
        let mut args = vec!["-t", "2"];
        if let Some(m) = mask {
            args.extend(["-a", m]);
        }
        let server = TestServer::start_unix(&path, &args);
        assert!(is_socket(&path));
        assert_eq!(mode_of(&path), mode, "-a {mask:?}");
        let settings = server.connect_unix().stats_sub("settings");
        assert_eq!(
            settings["domain_socket"],
            path.to_string_lossy(),
            "-a {mask:?}"
        );
        assert_eq!(settings["umask"], umask, "-a {mask:?}");
    }
}

/// Without `-s`, `stats settings` says there is no socket and shows the default mask.
#[test]
fn settings_without_a_socket() {
    let server = TestServer::start(&["-t", "1"]);
    let settings = server.stats_sub("settings");
    assert_eq!(settings["domain_socket"], "NULL");
    assert_eq!(settings["umask"], "700");
}

/// A socket left at the path by an earlier run is replaced; the server leaves its own socket
/// file behind when it stops (as memcached does), and the next start replaces that too.
#[test]
fn a_stale_socket_is_replaced_and_the_socket_stays_after_exit() {
    let dir = TempDir::new("stale");
    let path = dir.path("s.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(is_socket(&path));
    // Nothing listens. (Briefly, a server another test thread is forking may still hold the
    // dropped listener, until its exec closes it.)
    assert!(
        wait_until(Duration::from_secs(5), || UnixStream::connect(&path)
            .is_err()),
        "nothing listens"
    );
    let mut server = TestServer::start_unix(&path, &["-t", "2"]);
    server
        .connect_unix()
        .roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    let status = server.terminate(Duration::from_secs(10));
    if !memcached_mode() {
        assert!(status.success(), "{status:?}");
    }
    assert!(is_socket(&path), "the socket file is left behind");
    let server = TestServer::start_unix(&path, &["-t", "1"]);
    server.connect_unix().roundtrip(b"get k\r\n", b"END\r\n");
}

/// Something other than a socket at the path: left alone, and the server exits non-zero saying
/// it cannot listen there.
#[test]
fn a_file_at_the_path_fails_startup_and_is_left_alone() {
    let dir = TempDir::new("file");
    let path = dir.path("not-a-socket");
    std::fs::write(&path, b"keep me\n").unwrap();
    let mut child = common::server_command()
        .arg("-s")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let pid = child.id();
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("reap the server");
    assert!(
        exited,
        "server {pid} kept running with a file at the socket path"
    );
    // sysexits' EX_OSERR, memcached's status when it cannot listen.
    assert_eq!(out.status.code(), Some(71), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!("failed to listen on UNIX socket: {}", path.display());
    assert!(err.contains(&expected), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me\n");
    if !memcached_mode() {
        assert!(out.stdout.is_empty(), "{:?}", out.stdout);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("Address already in use"), "{err}");
    }
}

/// `stats conns` names a UNIX connection as memcached 1.6.18 does: `addr ?:<AF 0>` (memcached
/// keeps no peer address for it) and `listen_addr unix:<path>`.
#[test]
fn stats_conns_names_the_unix_socket() {
    for_each_config(|args| {
        let dir = TempDir::new("conns");
        let path = dir.path("s.sock");
        let server = TestServer::start_unix(&path, args);
        let _other = server.connect_unix();
        let mut c = server.connect_unix();
        // Parsed by hand: memcached's line for its listening socket can carry bytes that are not
        // UTF-8 after the path. memcached hands a new connection to a worker thread a moment
        // after accepting it, so `_other` may take a few tries to show.
        let mut raw = String::new();
        let listed = wait_until(Duration::from_secs(5), || {
            c.send(b"stats conns\r\n");
            raw = String::from_utf8_lossy(&c.read_until_end()).into_owned();
            raw.matches(":listen_addr ").count() >= 2
        });
        assert!(listed, "{raw}");
        let conns: std::collections::HashMap<&str, &str> = raw
            .lines()
            .filter_map(|l| l.strip_prefix("STAT ")?.split_once(' '))
            .collect();
        let listen = format!("unix:{}", path.display());
        let ids: Vec<&str> = conns
            .keys()
            .filter_map(|k| k.strip_suffix(":listen_addr"))
            .collect();
        for id in ids {
            assert_eq!(conns[format!("{id}:addr").as_str()], "?:<AF 0>", "{id}");
            assert_eq!(conns[format!("{id}:listen_addr").as_str()], listen, "{id}");
        }
    });
}

/// The sockets a process holds, by inode (from its descriptor table).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd dir") {
        let Ok(target) = std::fs::read_link(entry.unwrap().path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            out.insert(inode.parse().unwrap());
        }
    }
    out
}

/// The sockets in one of /proc/net's tables as (inode, unix path): `tcp`, `udp`, ... give every
/// socket (inode in field 10, no path); `unix` gives only listening sockets (flags
/// `00010000`), with their paths (an accepted socket shows its listener's path too).
fn proc_net_sockets(table: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
    let unix = table == "unix";
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            if !unix {
                return Some((fields.get(9)?.parse().ok()?, String::new()));
            }
            if *fields.get(3)? != "00010000" {
                return None;
            }
            let path = fields.get(7).unwrap_or(&"").to_string();
            Some((fields.get(6)?.parse().ok()?, path))
        })
        .collect()
}

/// With `-s`, no TCP or UDP socket is opened, whatever `-l`, `-p` and `-U` say: the process's
/// only listening socket is the UNIX one, and the TCP port is not answered. `stats settings`
/// shows `-U` as given.
#[test]
fn with_a_unix_socket_no_tcp_or_udp_port_is_opened() {
    let dir = TempDir::new("notcp");
    let path = dir.path("s.sock");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let udp_port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port().to_string()
    };
    let server = TestServer::start_unix(
        &path,
        &["-t", "2", "-l", "127.0.0.1", "-p", &port, "-U", &udp_port],
    );
    let mut c = server.connect_unix();
    c.roundtrip(b"version\r\n", b"VERSION 1.6.18\r\n");
    let settings = c.stats_sub("settings");
    assert_eq!(settings["udpport"], udp_port);
    assert_eq!(settings["tcpport"], port);
    let ours = socket_inodes(server.pid());
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let inet: Vec<u64> = proc_net_sockets(table)
            .into_iter()
            .map(|(inode, _)| inode)
            .filter(|inode| ours.contains(inode))
            .collect();
        assert!(inet.is_empty(), "{table} sockets {inet:?} of the server");
    }
    let listening: Vec<(u64, String)> = proc_net_sockets("unix")
        .into_iter()
        .filter(|(inode, p)| ours.contains(inode) && !p.is_empty())
        .collect();
    assert_eq!(
        listening
            .iter()
            .map(|(_, p)| p.as_str())
            .collect::<Vec<_>>(),
        vec![path.to_string_lossy()],
        "{listening:?}"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "port {port} answers"
    );
    let settings = c.stats_sub("settings");
    assert_eq!(settings["tcpport"], port, "-p as given");
}

/// Corecache only, as root: with `-u`, the socket is bound after root is dropped, as memcached
/// binds it, so the user owns the socket file.
#[test]
fn the_user_of_u_owns_the_socket_file() {
    if memcached_mode() || !is_root() {
        eprintln!("skipped: needs corecache and root");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("user");
    // The user must be able to create the socket in the directory.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path("s.sock");
    let server = TestServer::start_unix(&path, &["-t", "2", "-u", "nobody"]);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    let uid = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap();
    assert_ne!(uid, 0);
    assert_eq!(meta.uid(), uid);
    server
        .connect_unix()
        .roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
}

/// Corecache only: with `-d`, a relative socket path is taken from the directory corecache was
/// started in (memcached binds it after changing to `/`), as a relative `-P` is.
#[test]
fn a_daemon_binds_a_relative_path_where_it_was_started() {
    if memcached_mode() {
        return;
    }
    let dir = TempDir::new("daemon");
    let out = Command::new(env!("CARGO_BIN_EXE_corecache"))
        .current_dir(&dir.0)
        .args(["-t", "1", "-d", "-s", "rel.sock", "-P", "pid"])
        .stdin(Stdio::null())
        .output()
        .expect("run corecache -d");
    let pid: i32 = std::fs::read_to_string(dir.path("pid"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    let stop = || {
        if pid > 0 {
            // SAFETY: kill(2) on the daemon this test started; it takes no memory.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    };
    let path = dir.path("rel.sock");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || pid <= 0 {
        stop();
        panic!("{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let result = std::panic::catch_unwind(|| {
        assert_eq!(stdout, format!("listening unix:{}\n", path.display()));
        let mut c = Client::connect_unix(&path);
        c.roundtrip(b"set d 0 0 1\r\nx\r\n", b"STORED\r\n");
        assert_eq!(
            c.stats_sub("settings")["domain_socket"],
            path.to_string_lossy()
        );
    });
    stop();
    assert!(
        wait_until(Duration::from_secs(10), || process_gone(pid as u32)),
        "daemon {pid} did not stop"
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
