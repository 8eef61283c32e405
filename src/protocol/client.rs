//! The client side of the memcached text protocol: request encoders and a streaming reply parser.
//!
//! Used by corecache-bench and the integration tests. PURE like the rest of `protocol`: bytes in,
//! values out, no sockets and no clock.
//!
//! The reply parser works one *element* at a time. A retrieval reply is a run of
//! [`Reply::Value`] elements closed by [`Reply::End`]; a `stats` reply is a run of
//! [`Reply::Stat`] closed by [`Reply::End`]; every other reply is a single element. The caller
//! knows which request is at the head of its pipeline and so knows when a reply is complete.

/// One element of a server reply. Borrows from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `VALUE <key> <client_flags> <bytes> [<cas>]\r\n<data>\r\n`
    Value {
        key: &'a [u8],
        client_flags: u32,
        value: &'a [u8],
        cas: Option<u64>,
    },
    /// `END`
    End,
    /// `STORED`
    Stored,
    /// `NOT_STORED`
    NotStored,
    /// `EXISTS`
    Exists,
    /// `NOT_FOUND`
    NotFound,
    /// `DELETED`
    Deleted,
    /// `TOUCHED`
    Touched,
    /// `OK`
    Ok,
    /// A bare number (the reply to `incr`/`decr`).
    Number(u64),
    /// `STAT <name> <value>`
    Stat { name: &'a [u8], value: &'a [u8] },
    /// `VERSION <text>`
    Version(&'a [u8]),
    /// `ERROR`: the server did not know the command.
    Error,
    /// `CLIENT_ERROR <message>`
    ClientError(&'a [u8]),
    /// `SERVER_ERROR <message>`
    ServerError(&'a [u8]),
}

impl Reply<'_> {
    /// Whether this element is one of the three error replies.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Reply::Error | Reply::ClientError(_) | Reply::ServerError(_)
        )
    }
}

/// Why no element could be taken from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// Not a whole element yet: read more and call again with the same buffer start.
    Incomplete,
    /// The bytes are not a memcached reply; the connection cannot be trusted any more.
    Invalid,
}

/// Longest reply line accepted before the stream is declared invalid (values excluded).
pub const REPLY_LINE_LEN_MAX: usize = 8192;

/// Takes one reply element from the front of `buf`: the element and the bytes it used.
pub fn parse_reply(buf: &[u8]) -> Result<(Reply<'_>, usize), ReplyError> {
    let line_end = match find_crlf(buf) {
        Some(at) => at,
        None if buf.len() > REPLY_LINE_LEN_MAX => return Err(ReplyError::Invalid),
        None => return Err(ReplyError::Incomplete),
    };
    let line = buf.get(..line_end).ok_or(ReplyError::Invalid)?;
    let consumed = line_end + 2;
    let (word, rest) = split_word(line);
    let reply = match word {
        b"VALUE" => return parse_value(buf, rest, consumed),
        b"END" => Reply::End,
        b"STORED" => Reply::Stored,
        b"NOT_STORED" => Reply::NotStored,
        b"EXISTS" => Reply::Exists,
        b"NOT_FOUND" => Reply::NotFound,
        b"DELETED" => Reply::Deleted,
        b"TOUCHED" => Reply::Touched,
        b"OK" => Reply::Ok,
        b"ERROR" => Reply::Error,
        b"CLIENT_ERROR" => Reply::ClientError(rest),
        b"SERVER_ERROR" => Reply::ServerError(rest),
        b"VERSION" => Reply::Version(rest),
        b"STAT" => {
            let (name, value) = split_word(rest);
            if name.is_empty() {
                return Err(ReplyError::Invalid);
            }
            Reply::Stat { name, value }
        }
        _ => match parse_u64(word) {
            Some(number) if rest.is_empty() => Reply::Number(number),
            _ => return Err(ReplyError::Invalid),
        },
    };
    Ok((reply, consumed))
}

/// The rest of a `VALUE` line after the verb, then its data block.
fn parse_value<'a>(
    buf: &'a [u8],
    header: &'a [u8],
    header_len: usize,
) -> Result<(Reply<'a>, usize), ReplyError> {
    let (key, rest) = split_word(header);
    let (flags_text, rest) = split_word(rest);
    let (bytes_text, rest) = split_word(rest);
    let (cas_text, rest) = split_word(rest);
    if key.is_empty() || !rest.is_empty() {
        return Err(ReplyError::Invalid);
    }
    let client_flags = parse_u64(flags_text)
        .and_then(|f| u32::try_from(f).ok())
        .ok_or(ReplyError::Invalid)?;
    let value_len = parse_u64(bytes_text)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(ReplyError::Invalid)?;
    let cas = if cas_text.is_empty() {
        None
    } else {
        Some(parse_u64(cas_text).ok_or(ReplyError::Invalid)?)
    };
    let value_end = header_len
        .checked_add(value_len)
        .ok_or(ReplyError::Invalid)?;
    let total = value_end.checked_add(2).ok_or(ReplyError::Invalid)?;
    if buf.len() < total {
        return Err(ReplyError::Incomplete);
    }
    if buf.get(value_end..total) != Some(b"\r\n".as_slice()) {
        return Err(ReplyError::Invalid);
    }
    let value = buf.get(header_len..value_end).ok_or(ReplyError::Invalid)?;
    Ok((
        Reply::Value {
            key,
            client_flags,
            value,
            cas,
        },
        total,
    ))
}

/// Position of the first `\r\n` in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// The first space-separated word and the rest after the separating spaces.
fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(at) => {
            let (word, rest) = line.split_at(at);
            let skip = rest.iter().take_while(|&&b| b == b' ').count();
            (word, rest.get(skip..).unwrap_or_default())
        }
        None => (line, &[]),
    }
}

/// A decimal `u64` with no sign and no spaces.
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 || at == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

/// Appends `get <key> <key>...\r\n`.
pub fn encode_get<'k>(out: &mut Vec<u8>, keys: impl IntoIterator<Item = &'k [u8]>) {
    out.extend_from_slice(b"get");
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `set <key> <client_flags> <exptime> <bytes> [noreply]\r\n<value>\r\n`.
pub fn encode_set(
    out: &mut Vec<u8>,
    key: &[u8],
    client_flags: u32,
    exptime: i64,
    value: &[u8],
    noreply: bool,
) {
    out.extend_from_slice(b"set ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_decimal(out, u64::from(client_flags));
    out.push(b' ');
    if exptime < 0 {
        out.push(b'-');
    }
    push_decimal(out, exptime.unsigned_abs());
    out.push(b' ');
    push_decimal(out, value.len() as u64);
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `stats\r\n`.
pub fn encode_stats(out: &mut Vec<u8>) {
    out.extend_from_slice(b"stats\r\n");
}

/// Appends `<prefix><n>` with `n` zero-padded to at least `width` digits.
pub fn encode_key(out: &mut Vec<u8>, prefix: &[u8], n: u64, width: usize) {
    out.extend_from_slice(prefix);
    let start = out.len();
    push_decimal(out, n);
    let digits = out.len() - start;
    if digits < width {
        let pad = width - digits;
        out.splice(start..start, std::iter::repeat_n(b'0', pad));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn all(mut buf: &[u8]) -> Vec<Reply<'_>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (reply, used) = parse_reply(buf).unwrap();
            out.push(reply);
            buf = &buf[used..];
        }
        out
    }

    #[test]
    fn encode_get_and_set_bytes() {
        let mut out = Vec::new();
        encode_get(&mut out, [b"a".as_slice(), b"bc".as_slice()]);
        encode_set(&mut out, b"k", 5, 0, b"hello", false);
        encode_set(&mut out, b"k", 0, -1, b"", true);
        encode_stats(&mut out);
        assert_eq!(
            out,
            b"get a bc\r\nset k 5 0 5\r\nhello\r\nset k 0 -1 0 noreply\r\n\r\nstats\r\n"
        );
    }

    #[test]
    fn key_formatting() {
        let mut out = Vec::new();
        encode_key(&mut out, b"key:", 1, 7);
        assert_eq!(out, b"key:0000001");
        out.clear();
        encode_key(&mut out, b"key:", 1234567, 7);
        assert_eq!(out, b"key:1234567");
        out.clear();
        encode_key(&mut out, b"k", 12345678, 7);
        assert_eq!(out, b"k12345678");
        out.clear();
        encode_key(&mut out, b"", 0, 3);
        assert_eq!(out, b"000");
        out.clear();
        push_decimal(&mut out, u64::MAX);
        assert_eq!(out, u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn parses_every_simple_reply() {
        let replies = all(
            b"END\r\nSTORED\r\nNOT_STORED\r\nEXISTS\r\nNOT_FOUND\r\nDELETED\r\n\
TOUCHED\r\nOK\r\n42\r\nERROR\r\nCLIENT_ERROR bad data chunk\r\nSERVER_ERROR out of memory\r\n\
VERSION 1.6.18\r\nSTAT pid 7\r\n",
        );
        assert_eq!(
            replies,
            vec![
                Reply::End,
                Reply::Stored,
                Reply::NotStored,
                Reply::Exists,
                Reply::NotFound,
                Reply::Deleted,
                Reply::Touched,
                Reply::Ok,
                Reply::Number(42),
                Reply::Error,
                Reply::ClientError(b"bad data chunk"),
                Reply::ServerError(b"out of memory"),
                Reply::Version(b"1.6.18"),
                Reply::Stat {
                    name: b"pid",
                    value: b"7"
                },
            ]
        );
        assert!(replies[9].is_error() && replies[10].is_error() && replies[11].is_error());
        assert!(!replies[0].is_error());
    }

    #[test]
    fn parses_values_with_and_without_cas() {
        let replies = all(b"VALUE k 3 5\r\nhe\r\no\r\nVALUE kk 0 0 99\r\n\r\nEND\r\n");
        assert_eq!(
            replies,
            vec![
                Reply::Value {
                    key: b"k",
                    client_flags: 3,
                    value: b"he\r\no",
                    cas: None
                },
                Reply::Value {
                    key: b"kk",
                    client_flags: 0,
                    value: b"",
                    cas: Some(99)
                },
                Reply::End,
            ]
        );
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let stream: &[u8] = b"VALUE key:0000001 0 10\r\n0123456789\r\nEND\r\nSTORED\r\n";
        let first = parse_reply(stream).unwrap().1;
        for cut in 0..first {
            assert_eq!(
                parse_reply(&stream[..cut]),
                Err(ReplyError::Incomplete),
                "{cut}"
            );
        }
        // Split the stream at every point: feeding it in two reads yields the same elements.
        let whole = all(stream);
        for cut in 0..stream.len() {
            let mut buf = stream[..cut].to_vec();
            let mut got = Vec::new();
            let mut start = 0;
            let mut fed_rest = false;
            loop {
                match parse_reply(&buf[start..]) {
                    Ok((reply, used)) => {
                        got.push(format!("{reply:?}"));
                        start += used;
                    }
                    Err(ReplyError::Incomplete) if !fed_rest => {
                        buf.extend_from_slice(&stream[cut..]);
                        fed_rest = true;
                    }
                    Err(ReplyError::Incomplete) => break,
                    Err(ReplyError::Invalid) => panic!("invalid at cut {cut}"),
                }
            }
            let want: Vec<String> = whole.iter().map(|r| format!("{r:?}")).collect();
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            b"HELLO\r\n".as_slice(),
            b"VALUE k x 1\r\na\r\n",
            b"VALUE k 0 1\r\nab\r\n",
            b"VALUE 0 1\r\na\r\n",
            b"12 13\r\n",
            b"VALUE k 0 99999999999999999999999\r\n",
        ] {
            assert_eq!(parse_reply(bad), Err(ReplyError::Invalid), "{bad:?}");
        }
        let long = vec![b'A'; REPLY_LINE_LEN_MAX + 1];
        assert_eq!(parse_reply(&long), Err(ReplyError::Invalid));
    }

    #[test]
    fn value_roundtrip() {
        // What a set stores comes back in a VALUE element with the same key, flags and bytes.
        for len in [0usize, 1, 2, 63, 1024, 70_000] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut key = Vec::new();
            encode_key(&mut key, b"key:", len as u64, 7);
            let mut set = Vec::new();
            encode_set(&mut set, &key, 77, 0, &value, false);
            let header_len = set.iter().position(|&b| b == b'\n').unwrap() + 1;
            assert_eq!(&set[header_len..set.len() - 2], value.as_slice());
            let mut reply = b"VALUE ".to_vec();
            reply.extend_from_slice(&key);
            reply.extend_from_slice(format!(" 77 {len}\r\n").as_bytes());
            reply.extend_from_slice(&value);
            reply.extend_from_slice(b"\r\nEND\r\n");
            let (first, used) = parse_reply(&reply).unwrap();
            assert_eq!(
                first,
                Reply::Value {
                    key: &key,
                    client_flags: 77,
                    value: &value,
                    cas: None
                }
            );
            assert_eq!(parse_reply(&reply[used..]).unwrap(), (Reply::End, 5));
        }
    }
}
