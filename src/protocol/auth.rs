//! memcached's ASCII authentication (`-Y <file>`), as memcached 1.6.18 reads the file and the
//! client's token; PURE (the runtime reads the file and drives a connection through it).
//!
//! * The file: `user:password` lines, parsed as memcached 1.6.18's `authfile_load` parses them,
//!   quirks included, since a file that works with memcached must grant the same logins here
//!   ([`AuthTable::parse`]).
//! * Before a connection has authenticated, every command line is read by
//!   [`auth_line`]: only `set <key> <flags> <exptime> <bytes>` is an attempt; its data block
//!   holds `<user> <password>` ([`credentials`]).

/// Most entries memcached keeps from the file; later lines are not read.
pub const ENTRIES_MAX: usize = 8;
/// memcached reads the file with `fgets` into at most this many bytes, the NUL included: a
/// line is seen 255 bytes at a time.
const ENTRY_LEN_MAX: usize = 256;
/// Bytes of the file the parse can reach: each of at most [`ENTRIES_MAX`] entries takes one
/// read of at most 255 bytes, and one more read may find a malformed line.
pub const FILE_READ_MAX: u64 = ((ENTRIES_MAX + 1) * (ENTRY_LEN_MAX - 1)) as u64;

/// Largest data block an authentication `set` can bring, with its CRLF: memcached's read
/// buffer (16 KB) must hold it whole. A longer one is never answered; the connection is closed
/// once this much of it has arrived.
pub const AUTH_BLOCK_MAX: usize = 16 * 1024;

pub const CLIENT_ERROR_UNAUTHENTICATED: &[u8] = b"CLIENT_ERROR unauthenticated\r\n";
pub const CLIENT_ERROR_AUTH_FAILURE: &[u8] = b"CLIENT_ERROR authentication failure\r\n";
pub const CLIENT_ERROR_BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad authentication token format\r\n";
pub const CLIENT_ERROR_BAD_TERMINATION: &[u8] = b"CLIENT_ERROR bad command line termination\r\n";
pub const STORED: &[u8] = b"STORED\r\n";

/// The logins of an auth file: at most [`ENTRIES_MAX`] `(user, password)` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthTable {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The file has a line without `:` (memcached: "has a malformed entry").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl AuthTable {
    /// Parses the start of an auth file (`data`, at least its first [`FILE_READ_MAX`] bytes or
    /// all of it) whose size as `fstat` reports it is `size`, exactly as memcached 1.6.18 does.
    ///
    /// memcached reads line by line with `fgets` into a buffer of `size` bytes, each line
    /// written where the previous line's password ended, at most 255 bytes per read. So:
    /// * a line is `user:password`; the user ends at the first `:`, the password at the first
    ///   `\n`, `\r` or NUL after it (anything after a `\r` or NUL on that line is ignored);
    /// * a read without `:` before its end or a NUL is malformed (an empty line is);
    /// * a line longer than 255 bytes is cut there, and reading stops after it; so does it
    ///   after a NUL in a password, and after the [`ENTRIES_MAX`]th entry;
    /// * the reads are bounded by the room left in the buffer, which is short by one byte for
    ///   the last line: a file of one line without a newline loses the password's last
    ///   byte, and one of one CRLF line is malformed (its `\n` is read alone). A file whose
    ///   size is 0 (empty, or a special file such as `/dev/null`) has no entries.
    pub fn parse(data: &[u8], size: u64) -> Result<AuthTable, Malformed> {
        let mut entries = Vec::new();
        // `cur`: where the next read is written in memcached's buffer, whose end is `size`.
        // `pos`: how far the file has been read.
        let mut cur: u64 = 0;
        let mut pos: usize = 0;
        loop {
            if cur >= size {
                break; // fgets with no room reads nothing and returns NULL
            }
            let room = (size - cur).min(ENTRY_LEN_MAX as u64) as usize;
            let chunk: &[u8] = if room == 1 {
                &[] // room for the NUL only: an empty string, not the end
            } else {
                let rest = data.get(pos..).unwrap_or_default();
                if rest.is_empty() {
                    break; // end of file
                }
                let max = (room - 1).min(rest.len());
                let take = rest
                    .iter()
                    .take(max)
                    .position(|&b| b == b'\n')
                    .map_or(max, |nl| nl + 1);
                rest.get(..take).unwrap_or_default()
            };
            pos += chunk.len();
            // The read as C sees it: up to its first NUL (or the terminator after it).
            let text_end = chunk.iter().position(|&b| b == 0).unwrap_or(chunk.len());
            let text = chunk.get(..text_end).unwrap_or_default();
            let Some(colon) = text.iter().position(|&b| b == b':') else {
                return Err(Malformed);
            };
            let user = text.get(..colon).unwrap_or_default();
            let after = chunk.get(colon + 1..).unwrap_or_default();
            let pass_len = after
                .iter()
                .position(|&b| matches!(b, b'\n' | b'\r' | 0))
                .unwrap_or(after.len());
            let pass = after.get(..pass_len).unwrap_or_default();
            entries.push((user.to_vec(), pass.to_vec()));
            if entries.len() == ENTRIES_MAX {
                break;
            }
            let end = colon + 1 + pass_len;
            if chunk.get(end).is_none_or(|&b| b == 0) {
                break; // the password ended at a NUL: memcached takes it for the end of file
            }
            cur += end as u64;
        }
        Ok(AuthTable { entries })
    }

    /// Whether `user` and `password` are one of the file's logins (every entry is compared,
    /// each in time independent of where the bytes differ).
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let mut found = false;
        for (u, p) in &self.entries {
            found |= same(u, user) & same(p, password);
        }
        found
    }

    /// How many logins the file gave.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Byte equality that looks at every byte of equal-length inputs.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an unauthenticated connection's command line (without its `\n`) asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthLine {
    /// `set <key> <flags> <exptime> <bytes> ...`: a data block of `bytes` bytes and CRLF
    /// follows, holding the credentials. Key, flags, exptime and anything after are ignored.
    Attempt { block_len: u64 },
    /// Anything else: `CLIENT_ERROR unauthenticated`, and the next line is read.
    Refused,
}

/// Reads a command line as memcached 1.6.18 does before authentication: split on spaces (a
/// NUL ends the line), at least five tokens, the first exactly `set`, the fifth a number as
/// memcached's `safe_strtoul` takes it, kept to its low 32 bits as memcached keeps it.
pub fn auth_line(line: &[u8]) -> AuthLine {
    let mut tokens = tokens(line);
    if tokens.next() != Some(b"set".as_slice()) {
        return AuthLine::Refused;
    }
    match tokens.nth(3).and_then(safe_strtoul) {
        Some(n) => AuthLine::Attempt {
            block_len: u64::from(n) + 2,
        },
        None => AuthLine::Refused,
    }
}

/// The user and password of an authentication data block (without its CRLF): its first two
/// space-separated tokens (a NUL ends the block, further tokens are ignored), as memcached
/// 1.6.18 tokenizes it. `None`: fewer than two tokens (`bad authentication token format`).
pub fn credentials(block: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut tokens = tokens(block);
    Some((tokens.next()?, tokens.next()?))
}

/// memcached's tokenizer: the text up to its first NUL, split on spaces, empty pieces dropped.
fn tokens(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    text.get(..end)
        .unwrap_or_default()
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
}

/// C's `isspace` in the C locale.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// memcached's `safe_strtoul` on a 64-bit host, then the cast to its 32-bit result: `strtoul`
/// (leading white space, a sign, decimal digits; a `-` negates modulo 2^64), refused when
/// nothing was read, on overflow, when a byte other than white space follows the digits, or
/// when a `-` gave a value that is negative as a signed 64-bit number.
fn safe_strtoul(token: &[u8]) -> Option<u32> {
    let start = token.iter().position(|&b| !c_space(b))?;
    let s = token.get(start..)?;
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, s.get(1..)?),
        Some(b'+') => (false, s.get(1..)?),
        _ => (false, s),
    };
    let count = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if count == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits.get(..count)? {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if digits.get(count).is_some_and(|&b| !c_space(b)) {
        return None;
    }
    let value = if negative {
        value.wrapping_neg()
    } else {
        value
    };
    if (value as i64) < 0 && negative {
        return None;
    }
    Some(value as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn table(data: &[u8]) -> Result<AuthTable, Malformed> {
        AuthTable::parse(data, data.len() as u64)
    }

    fn logins(data: &[u8]) -> Vec<(String, String)> {
        table(data)
            .unwrap()
            .entries
            .iter()
            .map(|(u, p)| {
                (
                    String::from_utf8_lossy(u).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                )
            })
            .collect()
    }

    fn pair(u: &str, p: &str) -> (String, String) {
        (u.to_string(), p.to_string())
    }

    #[test]
    fn lines_are_user_colon_password() {
        assert_eq!(
            logins(b"foo:bar\nbaaaz:quux\n"),
            [pair("foo", "bar"), pair("baaaz", "quux")]
        );
        assert_eq!(logins(b"foo:a:b\n"), [pair("foo", "a:b")]);
        assert_eq!(logins(b"foo:b r\n"), [pair("foo", "b r")]);
        assert_eq!(logins(b":pass\n"), [pair("", "pass")]);
        assert_eq!(logins(b"user:\n"), [pair("user", "")]);
        assert_eq!(logins(b"foo:bar\t\n"), [pair("foo", "bar\t")]);
        assert_eq!(logins(b" foo : bar \n"), [pair(" foo ", " bar ")]);
    }

    #[test]
    fn crlf_lines_and_carriage_returns() {
        assert_eq!(
            logins(b"foo:bar\r\nx:y\r\n"),
            [pair("foo", "bar"), pair("x", "y")]
        );
        // A lone CRLF line: its `\n` is read alone, in the last byte of room.
        assert_eq!(table(b"foo:bar\r\n"), Err(Malformed));
        // What follows a `\r` on its line is skipped.
        assert_eq!(
            logins(b"foo:b\rjunk\nx:y\n"),
            [pair("foo", "b"), pair("x", "y")]
        );
    }

    #[test]
    fn the_last_line_of_a_one_line_file_loses_a_byte_without_a_newline() {
        assert_eq!(logins(b"foo:bar"), [pair("foo", "ba")]);
        assert_eq!(logins(b"foo:bar\n"), [pair("foo", "bar")]);
        assert_eq!(
            logins(b"a:b\nfoo:bar"),
            [pair("a", "b"), pair("foo", "bar")]
        );
        assert_eq!(logins(b"x:y\nfoo:bar"), logins(b"x:y\nfoo:bar\n"));
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(table(b"nocolon\n"), Err(Malformed));
        assert_eq!(table(b"foo:bar\n\nx:y\n"), Err(Malformed));
        assert_eq!(table(b"foo:bar\n\n"), Err(Malformed));
        assert_eq!(table(b"\n"), Err(Malformed));
        assert_eq!(table(b"foo:bar\nbad\n"), Err(Malformed));
        let mut long_user = vec![b'u'; 255];
        long_user.extend_from_slice(b":\n");
        assert_eq!(table(&long_user), Err(Malformed));
        long_user.remove(0);
        assert_eq!(table(&long_user).unwrap().len(), 1);
    }

    #[test]
    fn empty_or_sizeless_files_have_no_entries() {
        assert!(table(b"").unwrap().is_empty());
        // A special file reports size 0 whatever it holds.
        assert!(AuthTable::parse(b"garbage", 0).unwrap().is_empty());
    }

    #[test]
    fn long_lines_nuls_and_the_entry_limit_stop_reading() {
        let mut long = b"foo:".to_vec();
        long.extend_from_slice(&[b'p'; 300]);
        long.extend_from_slice(b"\nx:y\n");
        let t = table(&long).unwrap();
        assert_eq!(t.len(), 1);
        assert!(t.check(b"foo", &[b'p'; 251]));
        assert_eq!(logins(b"foo:b\0r\nx:y\n"), [pair("foo", "b")]);
        let ten: Vec<u8> = (0..10)
            .flat_map(|i| format!("u{i}:p{i}\n").into_bytes())
            .collect();
        let t = table(&ten).unwrap();
        assert_eq!(t.len(), ENTRIES_MAX);
        assert!(t.check(b"u7", b"p7"));
        assert!(!t.check(b"u8", b"p8"));
        // Three short lines, then one of 300 bytes without `:` in its first 255.
        let mut data = b"fo:b\n".repeat(3);
        data.extend_from_slice(&[b'z'; 300]);
        data.push(b'\n');
        assert_eq!(table(&data), Err(Malformed));
    }

    #[test]
    fn check_compares_whole_user_and_password() {
        let t = table(b"foo:bar\nbaaaz:quux\n").unwrap();
        assert!(t.check(b"foo", b"bar"));
        assert!(t.check(b"baaaz", b"quux"));
        assert!(!t.check(b"foo", b"quux"));
        assert!(!t.check(b"foo", b"ba"));
        assert!(!t.check(b"fo", b"bar"));
        assert!(!t.check(b"foo", b"barr"));
    }

    #[test]
    fn auth_lines() {
        let attempt = |n| AuthLine::Attempt { block_len: n };
        assert_eq!(auth_line(b"set k 0 0 7\r"), attempt(9));
        assert_eq!(auth_line(b"set k 0 0 7"), attempt(9));
        assert_eq!(auth_line(b"  set  k 0 0 7 noreply\r"), attempt(9));
        assert_eq!(auth_line(b"set k x y 7\r"), attempt(9));
        assert_eq!(auth_line(b"set k 0 0 +7\r"), attempt(9));
        assert_eq!(auth_line(b"set k 0 0 4294967296\r"), attempt(2));
        assert_eq!(auth_line(b"set k 0 0 4294967297\r"), attempt(3));
        assert_eq!(auth_line(b"set k 0 0 -0\r"), attempt(2));
        for refused in [
            &b"get foo\r"[..],
            b"set k 0 0\r",
            b"set k 0 0 \r",
            b"set k 0 0 abc\r",
            b"set k 0 0 -1\r",
            b"set k 0 0 7x\r",
            b"set k 0 0 99999999999999999999\r",
            b"SET k 0 0 7\r",
            b"sets k 0 0 7\r",
            b"add k 0 0 7\r",
            b"set\0 k 0 0 7\r",
            b"",
            b"\r",
        ] {
            assert_eq!(auth_line(refused), AuthLine::Refused, "{refused:?}");
        }
    }

    #[test]
    fn credentials_are_the_first_two_tokens() {
        assert_eq!(credentials(b"foo bar"), Some((&b"foo"[..], &b"bar"[..])));
        assert_eq!(
            credentials(b" foo   bar x"),
            Some((&b"foo"[..], &b"bar"[..]))
        );
        assert_eq!(credentials(b"foo bar\0x"), Some((&b"foo"[..], &b"bar"[..])));
        assert_eq!(
            credentials(b"foo bar\r"),
            Some((&b"foo"[..], &b"bar\r"[..]))
        );
        for bad in [
            &b"foobar"[..],
            b"foo ",
            b" pass",
            b"",
            b"foo\0 bar",
            b"foo\tbar",
        ] {
            assert_eq!(credentials(bad), None, "{bad:?}");
        }
    }
}
