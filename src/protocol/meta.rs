//! memcached's meta protocol: `mg`, `ms`, `md`, `ma`, `mn`, `me`.
//!
//! PURE like the rest of `protocol`. [`parse`] turns one meta line (plus the `ms` data block) into
//! a [`MetaRequest`]; the reply helpers at the bottom compose return flags. Execution lives in
//! `shard_meta.rs`, which walks the flag tokens again in request order, because memcached applies
//! `T`, `N` and `R` and prints return flags in the order the client sent them.
//!
//! Checked byte for byte against memcached 1.6.18 (`proto_text.c`). The parts that surprise:
//! * A flag is the first byte of a token; the rest is its argument, ignored for flags that take
//!   none (`vv` is `v`). A repeated flag, or a first byte >= 127, is `duplicate flag`.
//! * 20 or more tokens on the line (verb and key included) are `options flags are too long` for
//!   `mg` and `options flags too long` for the others.
//! * `md` and `ma` report every flag error as `invalid or duplicate flag`; `mg` and `ms` say which.
//! * `E` (explicit cas), `x` (md) and `S` (ms) are not flags in 1.6.18: `invalid flag`.
//! * `ms` swallows its data block after a flag error, but not after a bad key or length (the block
//!   is then read as a command and answers `ERROR`).
//! * `q` hides `HD` (and `EN` for `mg`); `NS`, `EX` and `NF` are still sent (memcached 1.6.18
//!   sends `NF` for a quiet `md`/`ma` miss).

use super::{Limits, ParseError, Rejection, Request};

/// memcached's `MFLAG_MAX_OPT_LENGTH`: a line with this many tokens or more is refused.
pub const TOKENS_MAX: usize = 20;
/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`: the longest `O` token, the `O` included.
pub const OPAQUE_LEN_MAX: usize = 32;
/// The longest decoded key (a raw key token is at most 250 bytes).
pub const KEY_LEN_MAX: usize = 250;

pub const HD: &[u8] = b"HD";
pub const NS: &[u8] = b"NS";
pub const EX: &[u8] = b"EX";
pub const NF: &[u8] = b"NF";
pub const EN: &[u8] = b"EN";
/// `mn`'s reply.
pub const MN: &[u8] = b"MN\r\n";

pub const CLIENT_ERROR_BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const CLIENT_ERROR_BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
const CLIENT_ERROR_DUPLICATE: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
const CLIENT_ERROR_INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
const CLIENT_ERROR_INVALID_OR_DUPLICATE: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
const CLIENT_ERROR_DECODING_KEY: &[u8] = b"CLIENT_ERROR error decoding key\r\n";
const CLIENT_ERROR_MG_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags are too long\r\n";
const CLIENT_ERROR_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags too long\r\n";
pub const CLIENT_ERROR_OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
const CLIENT_ERROR_M_LENGTH: &[u8] = b"CLIENT_ERROR incorrect length for M token\r\n";
const CLIENT_ERROR_MS_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ms M token\r\n";
const CLIENT_ERROR_MA_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ma M token\r\n";
const CLIENT_ERROR_INITIAL: &[u8] = b"CLIENT_ERROR invalid numeric initial value\r\n";
const CLIENT_ERROR_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta value\r\n";
const ERROR: &[u8] = b"ERROR\r\n";

/// The meta commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaVerb {
    /// `mg <key> <flags>*`
    Get,
    /// `ms <key> <datalen> <flags>*` and a data block
    Set,
    /// `md <key> <flags>*`
    Delete,
    /// `ma <key> <flags>*`
    Arith,
    /// `mn`: answers `MN`
    Noop,
    /// `me <key> [b]`: item debug line
    Debug,
}

/// `ms` modes (`M<char>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetMode {
    Set,
    Add,
    Append,
    Prepend,
    Replace,
}

/// A decoded key held by value (a base64 key has no bytes in the read buffer to borrow).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MetaKey {
    bytes: [u8; KEY_LEN_MAX],
    len: u8,
}

impl MetaKey {
    pub const EMPTY: MetaKey = MetaKey {
        bytes: [0; KEY_LEN_MAX],
        len: 0,
    };

    fn from_slice(key: &[u8]) -> Option<MetaKey> {
        let mut out = MetaKey::EMPTY;
        out.bytes.get_mut(..key.len())?.copy_from_slice(key);
        out.len = u8::try_from(key.len()).ok()?;
        Some(out)
    }

    /// The key bytes (decoded when the request had `b`).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl std::fmt::Debug for MetaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The flag values a meta command carries (their order is kept in [`MetaRequest::flags`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MetaOptions {
    /// `b`: the key token is base64.
    pub base64: bool,
    /// `v`: return the value.
    pub value: bool,
    /// `q`: hide the nominal reply.
    pub quiet: bool,
    /// `u`: no LRU bump.
    pub no_update: bool,
    /// `I`: invalidate (md marks stale; ms with `C` may store a stale value).
    pub invalidate: bool,
    /// `F`: client flags for `ms`.
    pub client_flags: u32,
    /// `C`: compare cas.
    pub cas_expected: Option<u64>,
    /// `M`: the raw mode byte.
    pub mode: Option<u8>,
    /// `T`: new exptime.
    pub exptime: Option<i64>,
    /// `N`: vivify on miss with this exptime.
    pub vivify: Option<i64>,
    /// `R`: win when the remaining ttl is below this exptime.
    pub recache: Option<i64>,
    /// `D`: `ma` delta (default 1).
    pub delta: u64,
    /// `J`: `ma` initial value (default 0).
    pub initial: u64,
}

/// One parsed meta command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    pub verb: MetaVerb,
    /// The key token as sent (base64 when `options.base64`; empty for `mn`). Use [`Self::key`].
    pub key_token: &'a [u8],
    /// The flag tokens as sent, space separated (for in-order execution and return flags).
    pub flags: &'a [u8],
    pub options: MetaOptions,
    /// The `ms` data block, without its CRLF.
    pub value: &'a [u8],
    /// An `ms` whose item would exceed `item_size_max`: the block (this many bytes) is swallowed
    /// and the answer is `SERVER_ERROR object too large for cache`.
    pub too_large_swallow: Option<usize>,
}

impl<'a> MetaRequest<'a> {
    /// The key, decoded if `b` was given (the parser has checked that it decodes).
    pub fn key(&self) -> MetaKey {
        let key = if self.options.base64 {
            base64_decode(self.key_token)
        } else {
            MetaKey::from_slice(self.key_token)
        };
        key.unwrap_or(MetaKey::EMPTY)
    }

    /// Each flag token, in request order.
    pub fn flag_tokens(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.flags.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }

    /// Whether an `O` token is longer than memcached allows (`CLIENT_ERROR opaque token too
    /// long`; `mg` and `ma` answer it after executing).
    pub fn opaque_too_long(&self) -> bool {
        self.flag_tokens()
            .any(|token| token.first() == Some(&b'O') && token.len() > OPAQUE_LEN_MAX)
    }

    /// The `ms` mode.
    pub fn set_mode(&self) -> SetMode {
        match self.options.mode {
            Some(b'E') => SetMode::Add,
            Some(b'A') => SetMode::Append,
            Some(b'P') => SetMode::Prepend,
            Some(b'R') => SetMode::Replace,
            _ => SetMode::Set,
        }
    }

    /// Whether `ma` increments (mode `I`/`+` or none) rather than decrements.
    pub fn incr(&self) -> bool {
        !matches!(self.options.mode, Some(b'D' | b'-'))
    }
}

/// Whether `verb` is a meta command.
pub fn verb_of(token: &[u8]) -> Option<MetaVerb> {
    Some(match token {
        b"mg" => MetaVerb::Get,
        b"ms" => MetaVerb::Set,
        b"md" => MetaVerb::Delete,
        b"ma" => MetaVerb::Arith,
        b"mn" => MetaVerb::Noop,
        b"me" => MetaVerb::Debug,
        _ => return None,
    })
}

fn reject(reply: &'static [u8], consumed: usize, swallow: usize) -> ParseError {
    ParseError::Invalid(Rejection {
        reply,
        consumed,
        swallow,
        close: false,
    })
}

/// Space-separated tokens of a line with their start offsets.
fn tokens(line: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = line.get(pos..)?;
        let skip = rest.iter().take_while(|&&b| b == b' ').count();
        let start = pos.saturating_add(skip);
        let rest = line.get(start..)?;
        if rest.is_empty() {
            pos = line.len();
            return None;
        }
        let len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        pos = start.saturating_add(len);
        Some((start, rest.get(..len).unwrap_or_default()))
    })
}

/// Parses a meta command line `line` (CR and LF stripped; `line_len` bytes of `buf` including
/// them). `buf` starts at the line, for the `ms` data block.
pub fn parse<'a>(
    verb: MetaVerb,
    buf: &'a [u8],
    line: &'a [u8],
    line_len: usize,
    limits: &Limits,
) -> Result<(Request<'a>, usize), ParseError> {
    let err = |reply| reject(reply, line_len, 0);
    let mut request = MetaRequest {
        verb,
        key_token: &[],
        flags: &[],
        options: MetaOptions {
            delta: 1,
            ..MetaOptions::default()
        },
        value: &[],
        too_large_swallow: None,
    };
    if verb == MetaVerb::Noop {
        return Ok((Request::Meta(request), line_len));
    }
    let mut words = tokens(line).skip(1);
    let Some((_, key)) = words.next() else {
        let reply = if verb == MetaVerb::Debug {
            CLIENT_ERROR_BAD_FORMAT
        } else {
            ERROR
        };
        return Err(err(reply));
    };
    if key.len() > limits.key_len_max.min(KEY_LEN_MAX) {
        return Err(err(CLIENT_ERROR_BAD_FORMAT));
    }
    if verb == MetaVerb::Debug {
        return parse_debug(request, key, words, line_len);
    }
    let word_count = tokens(line).take(TOKENS_MAX).count();
    let mut flags_at = line.len();
    let mut value_len = None;
    if verb == MetaVerb::Set {
        let Some((_, len_token)) = words.next() else {
            return Err(err(CLIENT_ERROR_BAD_FORMAT));
        };
        if word_count >= TOKENS_MAX {
            return Err(err(CLIENT_ERROR_TOO_LONG));
        }
        let len = super::parse::strtol_i32(len_token)
            .filter(|&len| (0..=i32::MAX - 2).contains(&len))
            .and_then(|len| usize::try_from(len).ok());
        let Some(len) = len else {
            return Err(err(CLIENT_ERROR_BAD_FORMAT));
        };
        value_len = Some(len);
    } else if word_count >= TOKENS_MAX {
        let reply = if verb == MetaVerb::Get {
            CLIENT_ERROR_MG_TOO_LONG
        } else {
            CLIENT_ERROR_TOO_LONG
        };
        return Err(err(reply));
    }
    if let Some((start, _)) = words.next() {
        flags_at = start;
    }
    request.flags = line.get(flags_at..).unwrap_or_default();
    let block_len = value_len.map_or(0, |len| len.saturating_add(2));
    let preparse_error = |reply: &'static [u8]| {
        let reply = match verb {
            MetaVerb::Delete | MetaVerb::Arith => CLIENT_ERROR_INVALID_OR_DUPLICATE,
            _ => reply,
        };
        reject(reply, line_len, block_len)
    };
    request.key_token = key;
    preparse(&mut request, key).map_err(preparse_error)?;
    check_after_preparse(&request).map_err(|reply| reject(reply, line_len, block_len))?;
    let Some(value_len) = value_len else {
        return Ok((Request::Meta(request), line_len));
    };
    finish_set(request, buf, line_len, value_len, limits)
}

/// Errors memcached finds after the preparse: long opaque tokens and bad modes.
fn check_after_preparse(request: &MetaRequest<'_>) -> Result<(), &'static [u8]> {
    match (request.verb, request.options.mode) {
        (MetaVerb::Set, Some(b'E' | b'A' | b'P' | b'R' | b'S')) => {}
        (MetaVerb::Set, Some(_)) => return Err(CLIENT_ERROR_MS_MODE),
        (MetaVerb::Arith, Some(b'I' | b'+' | b'D' | b'-')) => {}
        (MetaVerb::Arith, Some(_)) => return Err(CLIENT_ERROR_MA_MODE),
        _ => {}
    }
    // mg and ma find a long opaque only while composing their reply, after the work is done.
    let checks_now = matches!(request.verb, MetaVerb::Set | MetaVerb::Delete);
    if checks_now && request.opaque_too_long() {
        return Err(CLIENT_ERROR_OPAQUE_TOO_LONG);
    }
    Ok(())
}

/// The `ms` data block, or `too_large_swallow` when the item cannot fit.
fn finish_set<'a>(
    mut request: MetaRequest<'a>,
    buf: &'a [u8],
    line_len: usize,
    value_len: usize,
    limits: &Limits,
) -> Result<(Request<'a>, usize), ParseError> {
    let flags_len = if request.options.client_flags == 0 {
        0
    } else {
        4
    };
    let item_size = limits
        .item_total_size(request.key().as_bytes().len(), value_len)
        .saturating_add(flags_len);
    let block_len = value_len.saturating_add(2);
    if item_size > limits.item_size_max {
        request.too_large_swallow = Some(block_len);
        return Ok((Request::Meta(request), line_len));
    }
    let total = line_len.saturating_add(block_len);
    let Some(block) = buf.get(line_len..total) else {
        if limits.input_complete {
            let reply = super::compose::CLIENT_ERROR_BAD_DATA_CHUNK;
            return Err(reject(reply, buf.len(), 0));
        }
        return Err(ParseError::Incomplete);
    };
    let Some((value, b"\r\n")) = block.split_at_checked(value_len) else {
        return Err(reject(
            super::compose::CLIENT_ERROR_BAD_DATA_CHUNK,
            total,
            0,
        ));
    };
    request.value = value;
    Ok((Request::Meta(request), total))
}

/// `me <key> [b]`.
fn parse_debug<'a>(
    mut request: MetaRequest<'a>,
    key: &'a [u8],
    mut words: impl Iterator<Item = (usize, &'a [u8])>,
    line_len: usize,
) -> Result<(Request<'a>, usize), ParseError> {
    let binary = words.next().is_some_and(|(_, t)| t == b"b");
    let decoded = if binary {
        base64_decode(key)
    } else {
        MetaKey::from_slice(key)
    };
    if decoded.filter(|k| k.len > 0).is_none() {
        return Err(reject(CLIENT_ERROR_BAD_FORMAT, line_len, 0));
    }
    request.key_token = key;
    request.options.base64 = binary;
    Ok((Request::Meta(request), line_len))
}

/// memcached's `_meta_flag_preparse`: one pass over the flag tokens. Returns the error reply;
/// value errors keep scanning (the last message wins), unknown or repeated flags stop at once.
fn preparse(request: &mut MetaRequest<'_>, key: &[u8]) -> Result<(), &'static [u8]> {
    let mut seen = [false; 127];
    let mut error: Option<&'static [u8]> = None;
    let options = &mut request.options;
    let flags = request.flags;
    for token in flags.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
        let Some((&flag, arg)) = token.split_first() else {
            continue;
        };
        match seen.get_mut(usize::from(flag)) {
            Some(seen) if !*seen => *seen = true,
            _ => return Err(CLIENT_ERROR_DUPLICATE),
        }
        let number = |reply| error_if_none(super::parse::strtol_i32(arg), reply);
        match flag {
            b'b' => {
                options.base64 = true;
                if base64_decode(key).filter(|k| k.len > 0).is_none() {
                    error = Some(CLIENT_ERROR_DECODING_KEY);
                }
            }
            b'N' => match number(CLIENT_ERROR_BAD_TOKEN) {
                Ok(v) => options.vivify = Some(i64::from(v)),
                Err(e) => error = Some(e),
            },
            b'T' => match number(CLIENT_ERROR_BAD_TOKEN) {
                Ok(v) => options.exptime = Some(i64::from(v)),
                Err(e) => error = Some(e),
            },
            b'R' => match number(CLIENT_ERROR_BAD_TOKEN) {
                Ok(v) => options.recache = Some(i64::from(v)),
                Err(e) => error = Some(e),
            },
            b'l' | b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'h' => {}
            b'v' => options.value = true,
            b'u' => options.no_update = true,
            b'q' => options.quiet = true,
            b'I' => options.invalidate = true,
            b'F' => match super::parse::strtoul_u32(arg) {
                Some(v) => options.client_flags = v,
                // memcached sets no message here: the default (or an earlier one) is sent.
                None => error = Some(error.unwrap_or(CLIENT_ERROR_BAD_FORMAT)),
            },
            b'C' => match super::parse::strtoull_u64(arg) {
                Some(v) => options.cas_expected = Some(v),
                None => error = Some(CLIENT_ERROR_BAD_TOKEN),
            },
            b'M' => match arg {
                [mode] => options.mode = Some(*mode),
                _ => error = Some(CLIENT_ERROR_M_LENGTH),
            },
            b'J' => match super::parse::strtoull_u64(arg) {
                Some(v) => options.initial = v,
                None => error = Some(CLIENT_ERROR_INITIAL),
            },
            b'D' => match super::parse::strtoull_u64(arg) {
                Some(v) => options.delta = v,
                None => error = Some(CLIENT_ERROR_DELTA),
            },
            _ => return Err(CLIENT_ERROR_INVALID_FLAG),
        }
    }
    match error {
        Some(reply) => Err(reply),
        None => Ok(()),
    }
}

fn error_if_none<T>(value: Option<T>, reply: &'static [u8]) -> Result<T, &'static [u8]> {
    value.ok_or(reply)
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_value(byte: u8) -> Option<u32> {
    let value = match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Standard base64 with padding; `None` on any malformed input (memcached answers
/// `CLIENT_ERROR error decoding key`).
pub fn base64_decode(input: &[u8]) -> Option<MetaKey> {
    if input.is_empty() || input.len() % 4 != 0 {
        return None;
    }
    let mut out = MetaKey::EMPTY;
    let mut len = 0usize;
    let quads = input.len() / 4;
    for (index, quad) in input.chunks_exact(4).enumerate() {
        let last = index + 1 == quads;
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut word = 0u32;
        for &byte in quad.get(..4 - pad)? {
            word = (word << 6) | base64_value(byte)?;
        }
        word <<= 6 * pad as u32;
        let bytes = word.to_be_bytes();
        for &byte in bytes.get(1..4 - pad)? {
            *out.bytes.get_mut(len)? = byte;
            len += 1;
        }
    }
    out.len = u8::try_from(len).ok()?;
    Some(out)
}

/// Appends `input` in standard base64 with padding.
pub fn base64_encode(out: &mut Vec<u8>, input: &[u8]) {
    for chunk in input.chunks(3) {
        let mut word = 0u32;
        for (i, &byte) in chunk.iter().enumerate() {
            word |= u32::from(byte) << (16 - 8 * i as u32);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (word >> (18 - 6 * i as u32)) & 0x3f;
                out.push(BASE64_ALPHABET.get(index as usize).copied().unwrap_or(b'A'));
            } else {
                out.push(b'=');
            }
        }
    }
}

/// ` k<key>`, or ` k<base64> b` for a binary key.
pub fn key_flag(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        base64_encode(out, key);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// ` <c><n>`.
pub fn number_flag(out: &mut Vec<u8>, flag: u8, n: u64) {
    out.push(b' ');
    out.push(flag);
    super::compose::decimal(out, n);
}

/// ` <token>` (an `O` token echoed as sent).
pub fn token_flag(out: &mut Vec<u8>, token: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(token);
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    //! Expected replies were checked against memcached 1.6.18 over a socket.
    use super::*;
    use crate::protocol::parse::parse as parse_any;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits::DEFAULT;

    fn meta(buf: &[u8]) -> (MetaRequest<'_>, usize) {
        match parse_any(buf, &LIMITS) {
            Ok((Request::Meta(m), n)) => (m, n),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn rejected(buf: &[u8]) -> Rejection {
        match parse_any(buf, &LIMITS) {
            Err(ParseError::Invalid(r)) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn mg_flags() {
        let line = b"mg foo s v c f t k O123 h l q u\r\n";
        let (m, n) = meta(line);
        assert_eq!(n, line.len());
        assert_eq!(m.verb, MetaVerb::Get);
        assert_eq!(m.key().as_bytes(), b"foo");
        assert!(m.options.value && m.options.quiet && m.options.no_update);
        assert_eq!(m.flag_tokens().count(), 11);
        let (m, _) = meta(b"mg foo T30 N-1 R5 P L\r\n");
        assert_eq!(m.options.exptime, Some(30));
        assert_eq!(m.options.vivify, Some(-1));
        assert_eq!(m.options.recache, Some(5));
        let (m, _) = meta(b"mg Zm9v b k\r\n");
        assert_eq!(m.key().as_bytes(), b"foo");
        assert!(m.options.base64);
        let (m, _) = meta(b"mg foo vv k1x\r\n");
        assert!(m.options.value);
        let (m, _) = meta(b"mn extra\r\n");
        assert_eq!(m.verb, MetaVerb::Noop);
    }

    #[test]
    fn ms_block() {
        let (m, n) = meta(b"ms foo 2 T10 F5 MA C7 I\r\nhi\r\n");
        assert_eq!(n, 29);
        assert_eq!(m.value, b"hi");
        assert_eq!(m.options.client_flags, 5);
        assert_eq!(m.options.cas_expected, Some(7));
        assert_eq!(m.set_mode(), SetMode::Append);
        assert!(m.options.invalidate);
        assert_eq!(
            parse_any(b"ms foo 2\r\nh", &LIMITS),
            Err(ParseError::Incomplete)
        );
        let (m, n) = meta(b"ms foo 2000000\r\n");
        assert_eq!((m.too_large_swallow, n), (Some(2_000_002), 16));
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"mg\r\n", b"ERROR\r\n", 0),
            (b"md\r\n", b"ERROR\r\n", 0),
            (b"me\r\n", CLIENT_ERROR_BAD_FORMAT, 0),
            (b"mg foo b\r\n", CLIENT_ERROR_DECODING_KEY, 0),
            (b"mg foo E5\r\n", CLIENT_ERROR_INVALID_FLAG, 0),
            (b"mg foo v v\r\n", CLIENT_ERROR_DUPLICATE, 0),
            (b"mg foo T\r\n", CLIENT_ERROR_BAD_TOKEN, 0),
            (b"md foo x\r\n", CLIENT_ERROR_INVALID_OR_DUPLICATE, 0),
            (b"md foo q q\r\n", CLIENT_ERROR_INVALID_OR_DUPLICATE, 0),
            (b"ma foo Dabc\r\n", CLIENT_ERROR_INVALID_OR_DUPLICATE, 0),
            (b"ma foo MX\r\n", CLIENT_ERROR_MA_MODE, 0),
            (b"ms foo\r\n", CLIENT_ERROR_BAD_FORMAT, 0),
            (b"ms foo x\r\n", CLIENT_ERROR_BAD_FORMAT, 0),
            (b"ms foo -1\r\n", CLIENT_ERROR_BAD_FORMAT, 0),
            (b"ms foo 2 S\r\n", CLIENT_ERROR_INVALID_FLAG, 4),
            (b"ms foo 2 Ma\r\n", CLIENT_ERROR_MS_MODE, 4),
            (b"ms foo 2 M\r\n", CLIENT_ERROR_M_LENGTH, 4),
            (b"ms foo 2 F-1\r\n", CLIENT_ERROR_BAD_FORMAT, 4),
            (b"ms foo 2 Tabc\r\n", CLIENT_ERROR_BAD_TOKEN, 4),
            (
                b"mg foo P P P P P P P P P P P P P P P P P P\r\n",
                CLIENT_ERROR_MG_TOO_LONG,
                0,
            ),
            (
                b"ms foo 2 P P P P P P P P P P P P P P P P P\r\n",
                CLIENT_ERROR_TOO_LONG,
                0,
            ),
        ];
        for &(buf, reply, swallow) in cases {
            let r = rejected(buf);
            assert_eq!(
                (r.reply, r.consumed, r.swallow),
                (reply, buf.len(), swallow),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        let long_o = b"md foo Oabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\r\n";
        assert_eq!(rejected(long_o).reply, CLIENT_ERROR_OPAQUE_TOO_LONG);
        let (m, _) = meta(b"mg foo Oabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\r\n");
        assert!(m.opaque_too_long());
        let mut long_key = b"mg ".to_vec();
        long_key.extend(std::iter::repeat_n(b'a', 251));
        long_key.extend_from_slice(b" v\r\n");
        assert_eq!(rejected(&long_key).reply, CLIENT_ERROR_BAD_FORMAT);
    }

    #[test]
    fn base64_roundtrip() {
        for len in 0..=187usize {
            let input: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let mut encoded = Vec::new();
            base64_encode(&mut encoded, &input);
            if len == 0 {
                assert!(base64_decode(&encoded).is_none());
                continue;
            }
            assert_eq!(base64_decode(&encoded).unwrap().as_bytes(), &input[..]);
        }
        assert!(base64_decode(b"foo").is_none());
        assert!(base64_decode(b"Zg==Zg==").is_none());
        assert!(base64_decode(b"Z===").is_none());
        assert_eq!(base64_decode(b"Y250Mg==").unwrap().as_bytes(), b"cnt2");
    }

    fn meta_line() -> impl Strategy<Value = Vec<u8>> {
        let flag = prop::sample::select(vec![
            "v", "k", "c", "f", "s", "t", "h", "l", "q", "u", "O1", "b", "T10", "N5", "R3", "C4",
            "F2", "MA", "MD", "J9", "D2", "I", "E1", "x", "Tz", "vv",
        ]);
        (
            prop::sample::select(vec!["mg", "ms", "md", "ma", "mn", "me"]),
            prop::sample::select(vec!["foo", "Zm9v", "a\tb", "cnt"]),
            0usize..4,
            prop::collection::vec(flag, 0..5),
        )
            .prop_map(|(verb, key, len, flags)| {
                let mut line = format!("{verb} {key}");
                if verb == "ms" {
                    line.push_str(&format!(" {len}"));
                }
                for f in flags {
                    line.push(' ');
                    line.push_str(f);
                }
                line.push_str("\r\n");
                let mut bytes = line.into_bytes();
                if verb == "ms" {
                    bytes.extend(std::iter::repeat_n(b'x', len));
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes
            })
    }

    fn outcome(buf: &[u8]) -> String {
        format!("{:?}", parse_any(buf, &LIMITS))
    }

    proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut line = b"mg ".to_vec();
            line.extend_from_slice(&buf);
            let _ = parse_any(&line, &LIMITS);
            line[1] = b's';
            let _ = parse_any(&line, &LIMITS);
            line[1] = b'a';
            let _ = parse_any(&line, &LIMITS);
        }

        #[test]
        fn any_split_parses_the_same(line in meta_line(), cut in 0usize..64) {
            let whole = outcome(&line);
            let cut = cut.min(line.len());
            // A strict prefix is incomplete, or (for a rejected ms) the same rejection.
            let prefix = parse_any(&line[..cut], &LIMITS);
            if cut < line.len() {
                match prefix {
                    Err(ParseError::Incomplete) => {}
                    Err(ParseError::Invalid(_)) | Ok(_) => {
                        prop_assert_eq!(outcome(&line[..cut]), whole.clone());
                    }
                }
            }
            // Bytes after the request never change it.
            let mut longer = line.clone();
            longer.extend_from_slice(b"mn\r\n");
            prop_assert_eq!(outcome(&longer), whole);
        }
    }
}
