//! Per-core listening sockets: every executor gets its own socket on each listen address,
//! bound with SO_REUSEPORT so the kernel spreads new connections across cores and each
//! connection stays on the core that accepted it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Binds `count` SO_REUSEPORT sockets to `addr`, each with a listen queue of `backlog` pending
/// connections (`-b`; the kernel caps it at `somaxconn`). With port 0 the first socket picks
/// the port and the others join it. Returns the sockets and the address actually bound.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
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
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) has no memory preconditions; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if addr.is_ipv6() {
        set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
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
    // SAFETY: listen(2) on a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
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

    #[test]
    fn ipv6_loopback_binds_where_available() {
        if let Ok((_, bound)) = bind_group("[::1]:0".parse().unwrap(), 2, 1024) {
            assert!(bound.is_ipv6());
        }
    }
}
