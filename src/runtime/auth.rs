//! ASCII authentication (`-Y <file>`), as memcached 1.6.18 serves it.
//!
//! The file is read once at startup ([`load`], after the switch to the `-u` user, as memcached
//! reads it) into the read-only [`AuthTable`] every core shares through `Shared`. A new
//! connection starts unauthenticated (`Conn::auth`); [`Core::process_unauthenticated`] reads
//! its input until it authenticates, and from then on its input takes the usual path. Without
//! `-Y` no connection ever waits for authentication, and the request path tests one field per
//! parse pass.
//!
//! Before authenticating, every command line is answered `CLIENT_ERROR unauthenticated`
//! (`quit` included, and the connection stays open) except `set <key> <flags> <exptime>
//! <bytes>`, whose data block must be `<user> <password>` (see `protocol::auth`):
//! * `STORED`: a login of the file; the connection is authenticated (nothing is stored);
//! * `CLIENT_ERROR authentication failure`: no such login;
//! * `CLIENT_ERROR bad authentication token format`: fewer than two tokens;
//! * `CLIENT_ERROR bad command line termination`: the block does not end in CRLF.
//!
//! `auth_cmds` counts the logins tried (the first two replies), `auth_errors` the failures.
//! As in memcached, a line without a newline after more than 2048 bytes closes the connection;
//! corecache also closes on a longer line whose newline has arrived (as its parser does for
//! any command line), where memcached's answer depends on how the bytes were read. A data
//! block that cannot fit memcached's 16 KB read buffer is never answered: the connection is
//! closed once that much of it has arrived.
//!
//! memcached reuses one reply buffer for everything answered before authentication in one
//! read, so of several such commands arriving together only the last reply is sent; corecache
//! answers each one.

use std::io::Read;

use super::connection::AuthWait;
use super::core::{push_reply, Core, PARSE_BUDGET};
use super::strerror;
use crate::protocol::auth::{
    auth_line, credentials, AuthLine, AuthTable, AUTH_BLOCK_MAX, CLIENT_ERROR_AUTH_FAILURE,
    CLIENT_ERROR_BAD_TERMINATION, CLIENT_ERROR_BAD_TOKEN, CLIENT_ERROR_UNAUTHENTICATED,
    FILE_READ_MAX, STORED,
};

/// Reads the auth file `path` as memcached does, or fails with memcached's message for the
/// reason (startup then exits with status 1, as memcached exits).
pub fn load(path: &str) -> Result<AuthTable, String> {
    let file = std::fs::File::open(path).map_err(|e| {
        let why = strerror(&e);
        format!("Could not open authfile [{path}] for reading, error {why}: {why}")
    })?;
    let size = file
        .metadata()
        .map_err(|e| {
            let why = strerror(&e);
            format!("Could not stat authfile [{path}], error {why}: {why}")
        })?
        .len();
    let mut data = Vec::new();
    // A read error ends the file as it ends memcached's `fgets` loop (a directory reads as
    // empty). The parse reaches no further than FILE_READ_MAX bytes.
    let _ = file.take(FILE_READ_MAX).read_to_end(&mut data);
    AuthTable::parse(&data, size)
        .map_err(|_| format!("Authfile [{path}] has a malformed entry. Should be 'user:password'"))
}

impl Core {
    /// Runs an unauthenticated connection's buffered input until it has authenticated, runs
    /// out of input or budget, or is closed. True when it has authenticated and input is left
    /// for the usual path.
    pub(super) fn process_unauthenticated(&mut self, idx: u32) -> bool {
        let Some(conn) = self.conn_mut(idx) else {
            return false;
        };
        let rbuf = std::mem::take(&mut conn.rbuf);
        let line_len_max = self.limits.line_len_max;
        let mut pos = 0;
        let mut requests = 0;
        let mut held_back = false;
        loop {
            let blocked = self.input_blocked();
            let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
                break;
            };
            let Some(wait) = conn.auth else {
                break;
            };
            let rest = rbuf.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            if !conn.may_parse() || blocked {
                held_back = !conn.closing;
                break;
            }
            if pos >= PARSE_BUDGET || requests >= self.reqs_per_event {
                held_back = true;
                self.conn_yields += 1;
                break;
            }
            let reply = match wait {
                AuthWait::Line => {
                    // memcached looks for a line only once two bytes have arrived.
                    if rest.len() < 2 {
                        break;
                    }
                    let newline = rest.iter().position(|&b| b == b'\n');
                    let Some(nl) = newline.filter(|&nl| nl <= line_len_max) else {
                        if newline.is_some() || rest.len() > line_len_max {
                            conn.closing = true;
                            conn.close_reason = crate::watch::CloseReason::Error;
                            pos = rbuf.len();
                            self.mark_dirty(idx);
                        }
                        break;
                    };
                    pos += nl + 1;
                    requests += 1;
                    match auth_line(rest.get(..nl).unwrap_or_default()) {
                        AuthLine::Refused => CLIENT_ERROR_UNAUTHENTICATED,
                        AuthLine::Attempt { block_len } => {
                            conn.auth = Some(AuthWait::Block { len: block_len });
                            continue;
                        }
                    }
                }
                AuthWait::Block { len } => {
                    if len > AUTH_BLOCK_MAX as u64 && rest.len() >= AUTH_BLOCK_MAX {
                        // memcached's read buffer is full and the block still incomplete.
                        conn.closing = true;
                        conn.close_reason = crate::watch::CloseReason::Error;
                        pos = rbuf.len();
                        self.mark_dirty(idx);
                        break;
                    }
                    let Some(block) = usize::try_from(len).ok().and_then(|n| rest.get(..n)) else {
                        break; // the rest of the block has not arrived
                    };
                    pos += block.len();
                    conn.auth = Some(AuthWait::Line);
                    match block.strip_suffix(b"\r\n").map(credentials) {
                        None => CLIENT_ERROR_BAD_TERMINATION,
                        Some(None) => CLIENT_ERROR_BAD_TOKEN,
                        Some(Some((user, password))) => {
                            self.auth_cmds += 1;
                            let granted = self
                                .shared
                                .auth
                                .as_ref()
                                .is_some_and(|table| table.check(user, password));
                            if granted {
                                conn.auth = None;
                                STORED
                            } else {
                                self.auth_errors += 1;
                                CLIENT_ERROR_AUTH_FAILURE
                            }
                        }
                    }
                }
            };
            push_reply(conn, &mut self.pool, reply);
            self.mark_dirty(idx);
        }
        self.finish_input(idx, rbuf, pos, 0, |_, _| held_back);
        self.conn(idx)
            .is_some_and(|c| c.auth.is_none() && !c.closing && !c.rbuf.is_empty())
    }
}
