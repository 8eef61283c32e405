//! Listening sockets, one set per executor.
//!
//! TCP: every executor gets its own socket on each listen address, bound with SO_REUSEPORT so
//! the kernel spreads new connections across cores and each connection stays on the core that
//! accepted it.
//!
//! UDP (`-U`): every executor gets its own datagram socket on each address, bound with
//! SO_REUSEPORT like the TCP listeners, so the kernel spreads datagrams across cores by their
//! source address (one client's datagrams all reach one core) and each core reads only its own
//! queue. (memcached instead duplicates one socket into every worker thread, and every thread
//! wakes for every datagram.) SO_REUSEADDR is not set: a port held by any other socket, memcached's
//! among them, fails the bind.
//!
//! UNIX (`-s`): AF_UNIX has no SO_REUSEPORT spreading, so one socket is bound and every
//! executor gets a duplicate descriptor of it. Each core arms its own accept on its duplicate;
//! the kernel hands each connection to one of them, and the others find nothing (EAGAIN, or no
//! completion at all on io_uring) and wait again.

use std::ffi::OsStr;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;

/// A listening socket of either family. Connections accepted from either are served alike;
/// only the accept-time setup (TCP_NODELAY, the peer's name) differs.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket; `true` when its connections speak TLS (`-Z`, not `notls:`).
    Tcp(TcpListener, bool),
    Unix(UnixListener),
}

impl Listener {
    /// Whether connections from this socket speak TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Listener::Tcp(_, true))
    }

    /// Whether connections from this socket are UNIX ones (no TCP options, no peer address).
    pub fn is_unix(&self) -> bool {
        matches!(self, Listener::Unix(_))
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l, _) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl IntoRawFd for Listener {
    fn into_raw_fd(self) -> RawFd {
        match self {
            Listener::Tcp(l, _) => l.into_raw_fd(),
            Listener::Unix(l) => l.into_raw_fd(),
        }
    }
}

/// Binds `count` SO_REUSEPORT sockets to `addr`, each with a listen queue of `backlog` pending
/// connections (`-b`; the kernel caps it at `somaxconn`). With port 0 the first socket picks
/// the port and the others join it. Returns the sockets and the address actually bound.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    claim_port(addr, libc::SOCK_STREAM)?;
    let mut out = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let l = bind_one(bound, backlog)?;
        bound = l.local_addr()?;
        out.push(l);
    }
    Ok((out, bound))
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let fd = stream_socket(family(addr))?;
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if addr.is_ipv6() {
        set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    bind(&fd, addr)?;
    listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

/// Binds `count` SO_REUSEPORT datagram sockets to `addr` (nonblocking, send buffers as large as
/// the kernel allows, as memcached sizes its UDP sockets). With port 0 the first socket picks
/// the port and the others join it. Returns the sockets and the address actually bound.
pub fn bind_udp_group(addr: SocketAddr, count: usize) -> io::Result<(Vec<UdpSocket>, SocketAddr)> {
    claim_port(addr, libc::SOCK_DGRAM)?;
    let mut out = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let fd = new_socket(family(bound), libc::SOCK_DGRAM)?;
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        if bound.is_ipv6() {
            set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        // The kernel caps the size at `wmem_max`; a refusal only leaves the default.
        let _ = set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, UDP_SNDBUF_BYTES);
        bind(&fd, bound)?;
        let socket = UdpSocket::from(fd);
        bound = socket.local_addr()?;
        out.push(socket);
    }
    Ok((out, bound))
}

/// Fails with `EADDRINUSE` if any socket already holds `addr` (port 0: nothing to check).
///
/// SO_REUSEPORT lets every socket of the same user join a group, another process's included: a
/// second corecache started on a running one's port would bind, and the kernel would spread new
/// connections (or datagrams) across both caches, so that a client's `set` and its next `get`
/// could reach different ones. A socket bound first without SO_REUSEPORT conflicts with any
/// existing holder of the address, as memcached's single socket does. SO_REUSEADDR on the TCP
/// probe, as on the listeners, lets a restart bind over connections left in TIME_WAIT.
fn claim_port(addr: SocketAddr, kind: libc::c_int) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let fd = new_socket(family(addr), kind)?;
    if kind == libc::SOCK_STREAM {
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    }
    if addr.is_ipv6() {
        set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    bind(&fd, addr)
    // The probe closes here; the group binds next.
}

/// The send buffer asked for each UDP socket: memcached's `MAX_SENDBUF_SIZE`.
const UDP_SNDBUF_BYTES: i32 = 256 * 1024 * 1024;

fn family(addr: SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` is a properly initialised sockaddr of `len` bytes for this family.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new nonblocking, close-on-exec stream socket of `domain`.
fn stream_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    new_socket(domain, libc::SOCK_STREAM)
}

/// A new nonblocking, close-on-exec socket of `domain` and `kind`.
fn new_socket(domain: libc::c_int, kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) has no memory preconditions; the result is checked before use.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn listen(fd: &OwnedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `-s <path>`, `-a <mask>`: binds a UNIX stream socket at `path` and duplicates it for each of
/// `count` executors.
///
/// A socket already at the path (left by an earlier run: the server does not remove its socket
/// on exit, as memcached does not) is unlinked first; anything else there is left alone and the
/// bind fails. The file is created with mode `mask & 0o777`: the process umask is set to the
/// complement around bind(2) and restored after, so this must run while the process has a
/// single thread (no other thread may create files meanwhile).
pub fn bind_unix(
    path: &str,
    mask: i32,
    count: usize,
    backlog: i32,
) -> io::Result<Vec<UnixListener>> {
    let path = OsStr::new(path);
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        // A failure shows as the bind's EADDRINUSE below.
        let _ = std::fs::remove_file(path);
    }
    let fd = stream_socket(libc::AF_UNIX)?;
    let (addr, len) = sockaddr_un(path.as_bytes())?;
    let mode = socket_mode(mask);
    // SAFETY: umask(2) only swaps the process's file mode mask; bind(2) reads `len` bytes of
    // the initialised `addr`; the old mask is restored before anything else runs.
    let rc = unsafe {
        let old = libc::umask(!mode & 0o777);
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        );
        libc::umask(old);
        rc
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    listen(&fd, backlog)?;
    let first = UnixListener::from(fd);
    let mut out = Vec::with_capacity(count);
    for _ in 1..count {
        // A duplicate descriptor (close-on-exec) of the same socket.
        out.push(first.try_clone()?);
    }
    out.push(first);
    Ok(out)
}

/// The socket file's permission bits for `-a <mask>`.
pub fn socket_mode(mask: i32) -> libc::mode_t {
    (mask & 0o777) as libc::mode_t
}

/// A UNIX socket address for `path` and its length (the path and its terminating NUL).
fn sockaddr_un(path: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.is_empty() || path.len() >= addr.sun_path.len() || path.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a UNIX socket path",
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(path) {
        *dst = src as libc::c_char;
    }
    let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    Ok((addr, (offset + path.len() + 1) as libc::socklen_t))
}

/// Sets an integer socket option.
pub fn set_int_opt(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port() {
        let (ls, bound) = bind_group("127.0.0.1:0".parse().unwrap(), 3, 1024).unwrap();
        assert_ne!(bound.port(), 0);
        for l in &ls {
            assert_eq!(l.local_addr().unwrap(), bound);
        }
        // Any socket of the group can take a connection.
        let _c = std::net::TcpStream::connect(bound).unwrap();
    }

    /// `-b`: the backlog reaches the kernel (`ss` shows it as a listener's Send-Q; here, a
    /// backlog of 1 holds at most two unaccepted connections before SYNs are dropped).
    #[test]
    fn the_backlog_bounds_unaccepted_connections() {
        let (ls, bound) = bind_group("127.0.0.1:0".parse().unwrap(), 1, 1).unwrap();
        let mut connected = Vec::new();
        for _ in 0..4 {
            let Ok(c) =
                std::net::TcpStream::connect_timeout(&bound, std::time::Duration::from_millis(300))
            else {
                break;
            };
            connected.push(c);
        }
        assert!(
            connected.len() < 4,
            "backlog 1 held {} connections",
            connected.len()
        );
        drop(ls);
    }

    /// Held by every test that binds a UNIX socket: the umask is process-wide, and tests of
    /// one binary run in parallel.
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn umask_lock() -> std::sync::MutexGuard<'static, ()> {
        UMASK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh path under the temp dir, and its directory (removed on drop).
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("corecache-listener-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, file: &str) -> String {
            self.0.join(file).to_string_lossy().into_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode_of(path: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Exercises the umask swap around bind(2): the file gets `mask & 0o777`, and the
    /// process's own umask is back afterwards.
    #[test]
    fn a_unix_socket_gets_the_mask_as_its_mode_and_the_umask_is_restored() {
        let _umask = umask_lock();
        let dir = TempDir::new("mode");
        // SAFETY: umask(2) reads and restores the process's mask; no memory involved.
        let before = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        for (mask, mode) in [(0o700, 0o700), (0o777, 0o777), (0o1644, 0o644), (-1, 0o777)] {
            let path = dir.path(&format!("m{mask}.sock"));
            let ls = bind_unix(&path, mask, 1, 16).unwrap();
            assert_eq!(mode_of(&path), mode, "mask {mask:o}");
            drop(ls);
        }
        // SAFETY: as above.
        let after = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        assert_eq!(before, after);
    }

    #[test]
    fn every_duplicate_accepts_from_the_one_socket() {
        let _umask = umask_lock();
        use std::os::unix::net::UnixStream;
        let dir = TempDir::new("dup");
        let path = dir.path("s.sock");
        let ls = bind_unix(&path, 0o700, 3, 16).unwrap();
        assert_eq!(ls.len(), 3);
        let fds: std::collections::HashSet<_> = ls.iter().map(|l| l.as_raw_fd()).collect();
        assert_eq!(fds.len(), 3, "distinct descriptors");
        for l in &ls {
            let _c = UnixStream::connect(&path).unwrap();
            let (_s, _) = l.accept().expect("this duplicate takes the connection");
            // Nonblocking: nothing more is queued.
            assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn a_stale_socket_is_replaced_and_anything_else_is_left_alone() {
        let _umask = umask_lock();
        use std::os::unix::net::UnixStream;
        let dir = TempDir::new("stale");
        let path = dir.path("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(UnixStream::connect(&path).is_err(), "stale socket refuses");
        let ls = bind_unix(&path, 0o700, 1, 16).unwrap();
        let _c = UnixStream::connect(&path).unwrap();
        drop(ls);

        let file = dir.path("file");
        std::fs::write(&file, b"keep me").unwrap();
        let err = bind_unix(&file, 0o700, 1, 16).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        // A symlink to a socket is not a socket: left alone too.
        let target = dir.path("t.sock");
        let _l = UnixListener::bind(&target).unwrap();
        let link = dir.path("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(bind_unix(&link, 0o700, 1, 16).is_err());
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[test]
    fn unix_addresses_hold_the_path_and_its_nul() {
        let (addr, len) = sockaddr_un(b"/tmp/x").unwrap();
        assert_eq!(addr.sun_family, libc::AF_UNIX as libc::sa_family_t);
        assert_eq!(addr.sun_path[..7], [47, 116, 109, 112, 47, 120, 0]);
        assert_eq!(
            len as usize,
            std::mem::offset_of!(libc::sockaddr_un, sun_path) + 7
        );
        assert!(sockaddr_un(&[b'x'; 107]).is_ok());
        assert!(sockaddr_un(&[b'x'; 108]).is_err());
        assert!(sockaddr_un(b"").is_err());
        assert!(sockaddr_un(b"a\0b").is_err());
        assert_eq!(
            (socket_mode(0o700), socket_mode(0o1777), socket_mode(0)),
            (0o700, 0o777, 0)
        );
    }

    #[test]
    fn a_udp_group_shares_one_port_and_a_taken_port_fails() {
        let (socks, bound) = bind_udp_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_ne!(bound.port(), 0);
        assert_eq!(socks.len(), 3);
        for s in &socks {
            assert_eq!(s.local_addr().unwrap(), bound);
            // Nonblocking: nothing queued.
            let mut buf = [0u8; 8];
            assert_eq!(
                s.recv_from(&mut buf).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
        }
        // Every datagram reaches exactly one socket of the group.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", bound).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut got = 0;
        while got == 0 && std::time::Instant::now() < deadline {
            for s in &socks {
                let mut buf = [0u8; 16];
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    assert_eq!(
                        (&buf[..n], from),
                        (&b"hello"[..], client.local_addr().unwrap())
                    );
                    got += 1;
                }
            }
        }
        assert_eq!(got, 1);
        // A port held by a socket outside the group (no SO_REUSEPORT) is refused.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = bind_udp_group(other.local_addr().unwrap(), 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
    }

    /// A second group on a port a group already holds is refused, TCP and UDP: the kernel
    /// would let it join (same user), and two processes would split one port's clients.
    #[test]
    fn a_held_port_is_not_joined_by_a_second_group() {
        let (_tcp, held) = bind_group("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let err = bind_group(held, 2, 16).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        let (_udp, held) = bind_udp_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let err = bind_udp_group(held, 2).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        // A free port given explicitly binds the whole group.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (group, bound) = bind_group(free, 2, 16).unwrap();
        assert_eq!((group.len(), bound), (2, free));
        // So does a port whose last connection is in TIME_WAIT (a restart).
        let client = std::net::TcpStream::connect(free).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let server_side = loop {
            if let Some((c, _)) = group.iter().find_map(|l| l.accept().ok()) {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "nothing accepted");
            std::thread::yield_now();
        };
        drop(server_side); // the server closes first: TIME_WAIT is on its side
        drop(client);
        drop(group);
        let (again, _) = bind_group(free, 2, 16).unwrap();
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn ipv6_loopback_binds_where_available() {
        if let Ok((_, bound)) = bind_group("[::1]:0".parse().unwrap(), 2, 1024) {
            assert!(bound.is_ipv6());
        }
    }
}
