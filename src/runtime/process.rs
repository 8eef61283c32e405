//! Process-level setup memcached does at startup: core dumps (`-r`), detaching as a daemon
//! (`-d`), dropping root to a user (`-u`) and locking memory (`-k`). One small function per
//! libc call family, each called once from `runtime::run` in this order: bind the listeners,
//! raise RLIMIT_CORE, daemonize, drop privileges, mlockall, then start the executors.
//!
//! Invariants: [`daemonize`] runs while the process has a single thread (fork copies only the
//! caller); [`drop_privileges`] runs before any executor thread exists, so every thread has the
//! new identity; nothing here runs on an executor.
//!
//! Must not: touch sockets, stores or the mesh.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// A user's ids, as `getpwnam` reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Whether the process runs as root (real or effective), as memcached checks before `-u`.
pub fn is_root() -> bool {
    // SAFETY: getuid and geteuid have no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 || libc::geteuid() == 0 }
}

/// Looks a user up by name in the password database.
pub fn lookup_user(name: &str) -> Result<UserIds, String> {
    let unknown = || format!("-u {name}: can't find the user {name} to switch to");
    let c_name = CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; all-zero is a valid value for getpwnam_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to live memory we own, `buf.len()` is its exact size, and
    // `c_name` is NUL-terminated; the strings pwd points to live in `buf`, which outlives them.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(unknown());
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let resolved = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Ok(UserIds {
        name: resolved,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// `-u`: becomes `user` (its uid and primary gid, no supplementary groups). Run as root, before
/// any thread is spawned; afterwards regaining root must fail (checked).
pub fn drop_privileges(user: &UserIds) -> Result<(), String> {
    let name = &user.name;
    // SAFETY: setgroups with a zero count reads no memory; setgid and setuid take plain ids.
    // Order matters: groups and gid first, while still root.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(format!(
                "failed to drop supplementary groups: {}",
                io::Error::last_os_error()
            ));
        }
        if libc::setgid(user.gid) != 0 || libc::setuid(user.uid) != 0 {
            return Err(format!("failed to assume identity of user {name}"));
        }
    }
    // SAFETY: plain id queries and a setuid attempt that must fail; none touch memory.
    let (uid, euid, regained) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            user.uid != 0 && libc::setuid(0) == 0,
        )
    };
    if uid != user.uid || euid != user.uid || regained {
        return Err(format!("failed to assume identity of user {name}"));
    }
    Ok(())
}

/// `-r`: raises the soft and hard core file size limits as far as allowed (unlimited when
/// root, else the hard limit), as memcached does; an error if core files stay disabled.
pub fn enable_coredumps() -> Result<(), String> {
    // SAFETY: getrlimit/setrlimit on rlimit structs we own.
    let soft = unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) != 0 {
                let hard = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &hard);
            }
        }
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) != 0 {
            0
        } else {
            lim.rlim_cur
        }
    };
    if soft == 0 {
        return Err("-r: failed to ensure corefile creation".into());
    }
    Ok(())
}

/// `-k`: locks current and future memory. A failure is a warning on stderr in memcached's
/// words, and the server runs on unlocked.
pub fn lock_memory() {
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        eprintln!(
            "warning: -k invalid, mlockall() failed: {}",
            io::Error::last_os_error()
        );
    }
}

/// The daemon's end of the startup pipe: it reports readiness (the `listening` lines) or the
/// reason it could not start, and the waiting parent prints it and exits.
pub struct DaemonReport {
    pipe: File,
}

impl DaemonReport {
    /// Startup succeeded: hands the parent the text it prints on its stdout.
    pub fn ready(mut self, stdout_text: &str) {
        let _ = self.pipe.write_all(format!("ok\n{stdout_text}").as_bytes());
    }

    /// Startup failed: hands the parent the exit status and the reason.
    pub fn failed(mut self, failure: &super::StartupError) {
        let report = format!("error\n{}\n{}", failure.exit_code, failure.message);
        let _ = self.pipe.write_all(report.as_bytes());
    }
}

/// `-d`: forks. The parent waits for the daemon's report and exits from here: 0 after
/// printing the `listening` lines, the daemon's exit status after printing why startup failed. The daemon (the child)
/// starts a new session, changes to `/` (unless `keep_dir`, as memcached keeps its directory
/// with `-r` so a core file can be written), puts /dev/null on stdin, stdout and stderr, and
/// returns its end of the report pipe.
///
/// Must be called while the process has one thread.
pub fn daemonize(keep_dir: bool) -> Result<DaemonReport, String> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("-d: pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process has one thread (the caller's contract), so the child is a complete
    // copy and may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("-d: fork: {}", io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(write_end);
        parent_wait(File::from(read_end));
    }
    drop(read_end);
    // SAFETY: setsid takes no arguments; the child of a fork is never a group leader.
    if unsafe { libc::setsid() } < 0 {
        return Err(format!("-d: setsid: {}", io::Error::last_os_error()));
    }
    if !keep_dir {
        std::env::set_current_dir("/").map_err(|e| format!("-d: chdir /: {e}"))?;
    }
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("-d: /dev/null: {e}"))?;
    for target in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 of a descriptor we own onto a standard stream number.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target) } < 0 {
            return Err(format!("-d: dup2: {}", io::Error::last_os_error()));
        }
    }
    Ok(DaemonReport {
        pipe: File::from(write_end),
    })
}

/// The parent of `-d`: relays the daemon's report and exits.
fn parent_wait(mut pipe: File) -> ! {
    let mut report = String::new();
    let _ = pipe.read_to_string(&mut report);
    match report.split_once('\n') {
        Some(("ok", text)) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            std::process::exit(0);
        }
        Some(("error", failure)) => {
            let (code, reason) = failure.split_once('\n').unwrap_or(("1", failure));
            eprintln!("corecache: {reason}");
            std::process::exit(code.parse().unwrap_or(1));
        }
        _ => {
            eprintln!("corecache: the daemon exited during startup");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_by_name() {
        let root = lookup_user("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        let err = lookup_user("no-such-user-corecache").unwrap_err();
        assert!(err.contains("can't find the user"), "{err}");
        assert!(lookup_user("nul\0byte").is_err());
    }
}
