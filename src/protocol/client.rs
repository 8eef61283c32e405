//! The client side of the memcached protocols: request encoders and streaming reply parsers for
//! the text protocol, its meta commands, and the binary protocol.
//!
//! Used by corecache-bench and the integration tests. PURE like the rest of `protocol`: bytes in,
//! values out, no sockets and no clock.
//!
//! The text reply parser ([`parse_reply`], which also reads meta replies: their two-letter
//! codes never clash with a text reply word) works one *element* at a time. A retrieval reply is
//! a run of [`Reply::Value`] elements closed by [`Reply::End`]; a `stats` reply is a run of
//! [`Reply::Stat`] closed by [`Reply::End`]; a meta reply is one element; so is every other
//! reply. A quiet meta multi-get (`mg <key> v k q` per key, then `mn`) is a run of
//! [`Reply::MetaValue`] for the hits closed by [`Reply::MetaNoop`]. The binary parser
//! ([`parse_binary_reply`]) takes one 24-byte-header packet at a time; a quiet binary multi-get
//! (GETKQ per key, then NOOP) is answered by one packet per hit and the NOOP's. The caller
//! knows which request is at the head of its pipeline and so knows when a reply is complete.

use super::binary;

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
    /// `VA <bytes> <flags>*\r\n<data>\r\n`: a meta get hit. `flags` is the rest of the line
    /// (read one with [`meta_flag`]).
    MetaValue { value: &'a [u8], flags: &'a [u8] },
    /// A meta reply without data: `HD`, `EN`, `NS`, `EX` or `NF`, and its flags.
    Meta { code: MetaCode, flags: &'a [u8] },
    /// `MN`: the reply to `mn`, which closes a run of quiet meta commands.
    MetaNoop,
}

/// The status code of a meta reply that carries no data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaCode {
    /// `HD`: success (stored, deleted, touched, or a hit without a value asked for).
    Hd,
    /// `EN`: a meta get miss.
    En,
    /// `NS`: not stored.
    Ns,
    /// `EX`: the compare-and-swap value did not match.
    Ex,
    /// `NF`: no such item.
    Nf,
}

/// The token of meta flag `flag` in a reply's flags (`k` in `s3 kfoo` gives `foo`); `None`
/// when the flag is not there. A flag without a token gives an empty slice.
pub fn meta_flag(flags: &[u8], flag: u8) -> Option<&[u8]> {
    flags
        .split(|&b| b == b' ')
        .find(|t| t.first() == Some(&flag))
        .map(|t| t.get(1..).unwrap_or_default())
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
        b"VA" => return parse_meta_value(buf, rest, consumed),
        b"HD" => meta(MetaCode::Hd, rest),
        b"EN" => meta(MetaCode::En, rest),
        b"NS" => meta(MetaCode::Ns, rest),
        b"EX" => meta(MetaCode::Ex, rest),
        b"NF" => meta(MetaCode::Nf, rest),
        b"MN" if rest.is_empty() => Reply::MetaNoop,
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
    let (value, total) = data_block(buf, header_len, value_len)?;
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

fn meta<'a>(code: MetaCode, flags: &'a [u8]) -> Reply<'a> {
    Reply::Meta { code, flags }
}

/// The rest of a `VA` line after the code, then its data block.
fn parse_meta_value<'a>(
    buf: &'a [u8],
    header: &'a [u8],
    header_len: usize,
) -> Result<(Reply<'a>, usize), ReplyError> {
    let (bytes_text, flags) = split_word(header);
    let value_len = parse_u64(bytes_text)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(ReplyError::Invalid)?;
    let (value, total) = data_block(buf, header_len, value_len)?;
    Ok((Reply::MetaValue { value, flags }, total))
}

/// The `value_len` bytes after a header of `header_len` bytes and the `\r\n` closing them:
/// the data and the length of the whole element.
fn data_block(
    buf: &[u8],
    header_len: usize,
    value_len: usize,
) -> Result<(&[u8], usize), ReplyError> {
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
    Ok((value, total))
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

/// Appends `mg <key> <flags>\r\n` (`flags` such as `v`, or `v k q` for one key of a quiet
/// multi-get).
pub fn encode_meta_get(out: &mut Vec<u8>, key: &[u8], flags: &[u8]) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key);
    if !flags.is_empty() {
        out.push(b' ');
        out.extend_from_slice(flags);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `ms <key> <bytes>[ F<client_flags>][ T<exptime>]\r\n<value>\r\n`; the flags are
/// left out when zero, which is what the server assumes without them.
pub fn encode_meta_set(
    out: &mut Vec<u8>,
    key: &[u8],
    client_flags: u32,
    exptime: i64,
    value: &[u8],
) {
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_decimal(out, value.len() as u64);
    if client_flags != 0 {
        out.extend_from_slice(b" F");
        push_decimal(out, u64::from(client_flags));
    }
    if exptime != 0 {
        out.extend_from_slice(b" T");
        if exptime < 0 {
            out.push(b'-');
        }
        push_decimal(out, exptime.unsigned_abs());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `mn\r\n`.
pub fn encode_meta_noop(out: &mut Vec<u8>) {
    out.extend_from_slice(b"mn\r\n");
}

/// Appends a binary request carrying only a key (`GET`, `GETK`, `GETKQ`, ...; opcodes in
/// [`binary::opcode`]).
pub fn encode_binary_get(out: &mut Vec<u8>, op: u8, key: &[u8], opaque: u32) {
    binary_request(out, op, opaque, &[], key, &[]);
}

/// Appends a request frame: a response frame's layout with the request magic (cas 0).
fn binary_request(out: &mut Vec<u8>, op: u8, opaque: u32, extras: &[u8], key: &[u8], value: &[u8]) {
    let start = out.len();
    let ok = binary::Status::Success;
    binary::response(out, op, ok, opaque, 0, extras, key, value);
    if let Some(magic) = out.get_mut(start) {
        *magic = binary::REQUEST_MAGIC;
    }
}

/// Appends a binary `SET` (client flags and expiration time as extras).
pub fn encode_binary_set(
    out: &mut Vec<u8>,
    key: &[u8],
    client_flags: u32,
    exptime: u32,
    value: &[u8],
    opaque: u32,
) {
    let mut extras = [0u8; 8];
    let (f, e) = extras.split_at_mut(4);
    f.copy_from_slice(&client_flags.to_be_bytes());
    e.copy_from_slice(&exptime.to_be_bytes());
    binary_request(out, binary::opcode::SET, opaque, &extras, key, value);
}

/// Appends a binary `NOOP`.
pub fn encode_binary_noop(out: &mut Vec<u8>, opaque: u32) {
    binary_request(out, binary::opcode::NOOP, opaque, &[], &[], &[]);
}

/// Largest binary response body accepted before the stream is declared invalid.
pub const BINARY_BODY_LEN_MAX: usize = 1 << 30;

/// One binary response packet. Borrows from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryReply<'a> {
    pub opcode: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl BinaryReply<'_> {
    /// The client flags a `GET`-family hit carries in its extras.
    pub fn client_flags(&self) -> Option<u32> {
        let bytes: [u8; 4] = self.extras.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }
}

/// Takes one binary response packet from the front of `buf`: the packet and the bytes it used.
pub fn parse_binary_reply(buf: &[u8]) -> Result<(BinaryReply<'_>, usize), ReplyError> {
    // A first byte that cannot start a response is refused at once, not after 24 bytes.
    match buf.first() {
        None => return Err(ReplyError::Incomplete),
        Some(&b) if b != binary::RESPONSE_MAGIC => return Err(ReplyError::Invalid),
        Some(_) => {}
    }
    let Some(h) = binary::parse_header(buf) else {
        return Err(ReplyError::Incomplete);
    };
    // Bytes 6 and 7, the vbucket of a request, are the status of a response.
    let status = match buf.get(6..8) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => return Err(ReplyError::Incomplete),
    };
    let key_len = usize::from(h.key_len);
    let extras_len = usize::from(h.extras_len);
    let body_len = h.body_len as usize;
    if body_len > BINARY_BODY_LEN_MAX || key_len + extras_len > body_len {
        return Err(ReplyError::Invalid);
    }
    let (opaque, cas) = (h.opaque, h.cas);
    let total = binary::HEADER_LEN + body_len;
    let Some(body) = buf.get(binary::HEADER_LEN..total) else {
        return Err(ReplyError::Incomplete);
    };
    let (extras, rest) = body
        .split_at_checked(extras_len)
        .ok_or(ReplyError::Invalid)?;
    let (key, value) = rest.split_at_checked(key_len).ok_or(ReplyError::Invalid)?;
    Ok((
        BinaryReply {
            opcode: h.opcode,
            status,
            opaque,
            cas,
            extras,
            key,
            value,
        },
        total,
    ))
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

    #[test]
    fn encode_meta_bytes() {
        let mut out = Vec::new();
        encode_meta_get(&mut out, b"a", b"v");
        encode_meta_get(&mut out, b"b", b"v k q");
        encode_meta_get(&mut out, b"c", b"");
        encode_meta_noop(&mut out);
        encode_meta_set(&mut out, b"k", 0, 0, b"hello");
        encode_meta_set(&mut out, b"k", 7, -1, b"");
        encode_meta_set(&mut out, b"k", 0, 30, b"x");
        assert_eq!(
            out,
            b"mg a v\r\nmg b v k q\r\nmg c\r\nmn\r\nms k 5\r\nhello\r\n\
ms k 0 F7 T-1\r\n\r\nms k 1 T30\r\nx\r\n"
        );
    }

    #[test]
    fn parses_meta_replies() {
        let replies = all(
            b"VA 2 kfoo s2\r\nhi\r\nVA 0\r\n\r\nEN\r\nHD\r\nHD c5 Oab\r\nNS\r\nEX\r\nNF\r\nMN\r\n",
        );
        assert_eq!(
            replies,
            vec![
                Reply::MetaValue {
                    value: b"hi",
                    flags: b"kfoo s2"
                },
                Reply::MetaValue {
                    value: b"",
                    flags: b""
                },
                Reply::Meta {
                    code: MetaCode::En,
                    flags: b""
                },
                Reply::Meta {
                    code: MetaCode::Hd,
                    flags: b""
                },
                Reply::Meta {
                    code: MetaCode::Hd,
                    flags: b"c5 Oab"
                },
                Reply::Meta {
                    code: MetaCode::Ns,
                    flags: b""
                },
                Reply::Meta {
                    code: MetaCode::Ex,
                    flags: b""
                },
                Reply::Meta {
                    code: MetaCode::Nf,
                    flags: b""
                },
                Reply::MetaNoop,
            ]
        );
        assert_eq!(meta_flag(b"kfoo s2", b'k'), Some(b"foo".as_slice()));
        assert_eq!(meta_flag(b"kfoo s2", b's'), Some(b"2".as_slice()));
        assert_eq!(meta_flag(b"kfoo s2 b", b'b'), Some(b"".as_slice()));
        assert_eq!(meta_flag(b"kfoo s2", b'c'), None);
        assert_eq!(meta_flag(b"", b'k'), None);
        for bad in [
            b"VA x\r\nab\r\n".as_slice(),
            b"VA 1\r\nab\r\n",
            b"VA\r\n",
            b"MN extra\r\n",
        ] {
            assert_eq!(parse_reply(bad), Err(ReplyError::Invalid), "{bad:?}");
        }
        let stream: &[u8] = b"VA 10 kkey:1\r\n0123456789\r\nMN\r\n";
        let first = parse_reply(stream).unwrap().1;
        assert_eq!(first, stream.len() - 4);
        for cut in 0..first {
            assert_eq!(
                parse_reply(&stream[..cut]),
                Err(ReplyError::Incomplete),
                "{cut}"
            );
        }
    }

    #[test]
    fn binary_requests_parse_as_the_server_reads_them() {
        use crate::protocol::binary::{parse, Command};
        let limits = crate::protocol::Limits::default();
        let mut out = Vec::new();
        encode_binary_get(&mut out, binary::opcode::GETKQ, b"key:1", 9);
        encode_binary_set(&mut out, b"k", 3, 60, b"hello", 10);
        encode_binary_noop(&mut out, 11);
        let (get, used) = parse(&out, &limits).unwrap();
        assert_eq!(
            (get.opcode, get.quiet, get.opaque, get.key),
            (binary::opcode::GETKQ, true, 9, b"key:1".as_slice())
        );
        let rest = &out[used..];
        let (set, used) = parse(rest, &limits).unwrap();
        assert_eq!(
            (set.opcode, set.opaque, set.key),
            (binary::opcode::SET, 10, b"k".as_slice())
        );
        match set.command {
            Command::Store {
                client_flags,
                exptime,
                value,
                ..
            } => assert_eq!((client_flags, exptime, value), (3, 60, b"hello".as_slice())),
            other => panic!("{other:?}"),
        }
        let (noop, used2) = parse(&rest[used..], &limits).unwrap();
        assert_eq!((noop.command, noop.opaque), (Command::Noop, 11));
        assert_eq!(used2, rest.len() - used);
    }

    #[test]
    fn parses_binary_replies_and_every_prefix_is_incomplete() {
        let mut stream = Vec::new();
        binary::response(
            &mut stream,
            binary::opcode::GETK,
            binary::Status::Success,
            5,
            42,
            &7u32.to_be_bytes(),
            b"key:1",
            b"value",
        );
        let first_len = stream.len();
        binary::error(
            &mut stream,
            binary::opcode::GET,
            binary::Status::KeyNotFound,
            6,
        );
        binary::success(&mut stream, binary::opcode::NOOP, 7, 0);
        let (hit, used) = parse_binary_reply(&stream).unwrap();
        assert_eq!(used, first_len);
        assert_eq!(
            hit,
            BinaryReply {
                opcode: binary::opcode::GETK,
                status: 0,
                opaque: 5,
                cas: 42,
                extras: &7u32.to_be_bytes(),
                key: b"key:1",
                value: b"value",
            }
        );
        assert_eq!(hit.client_flags(), Some(7));
        let (miss, used2) = parse_binary_reply(&stream[used..]).unwrap();
        assert_eq!(
            (miss.status, miss.opaque, miss.value),
            (
                binary::Status::KeyNotFound.code(),
                6,
                b"Not found".as_slice()
            )
        );
        assert_eq!(miss.client_flags(), None);
        let (noop, used3) = parse_binary_reply(&stream[used + used2..]).unwrap();
        assert_eq!((noop.opcode, noop.opaque), (binary::opcode::NOOP, 7));
        assert_eq!(used + used2 + used3, stream.len());
        for cut in 0..first_len {
            assert_eq!(
                parse_binary_reply(&stream[..cut]),
                Err(ReplyError::Incomplete),
                "{cut}"
            );
        }
    }

    #[test]
    fn rejects_binary_garbage() {
        // Wrong magic is refused at the first byte; so is a request echoed back.
        assert_eq!(parse_binary_reply(b"V"), Err(ReplyError::Invalid));
        let req = binary::request(binary::opcode::NOOP, 0, 0, &[], &[], &[]);
        assert_eq!(parse_binary_reply(&req), Err(ReplyError::Invalid));
        // key + extras longer than the body.
        let mut bad = Vec::new();
        binary::response(
            &mut bad,
            binary::opcode::GETK,
            binary::Status::Success,
            0,
            0,
            &[0; 4],
            b"k",
            b"",
        );
        bad[11] = 4;
        assert_eq!(parse_binary_reply(&bad), Err(ReplyError::Invalid));
        // A body over the bound.
        let mut huge = bad.clone();
        huge[8..12].copy_from_slice(&(BINARY_BODY_LEN_MAX as u32 + 1).to_be_bytes());
        assert_eq!(parse_binary_reply(&huge), Err(ReplyError::Invalid));
    }
}
