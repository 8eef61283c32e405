//! Streaming parser for memcached's classic text protocol.
//!
//! [`parse`] looks at the start of a read buffer and returns one request and the bytes it used,
//! [`ParseError::Incomplete`] when the buffer is a strict prefix of a request, or
//! [`ParseError::Invalid`] with memcached's exact reply and how many bytes to drop.
//!
//! Everything here mirrors memcached 1.6.18 (`proto_text.c`), checked byte for byte against the
//! real server. The parts that surprise people:
//! * A line ends at `\n`; one `\r` before it is dropped. The command stops at the first NUL byte
//!   (memcached tokenises with `strlen`), and tokens are split on spaces only, so a key may hold
//!   tabs, `\r` and other control bytes.
//! * Numbers are read like C's `strtoul`/`strtol`: leading whitespace and a sign are allowed, and a
//!   trailing whitespace byte other than space ends the number. `flags` wraps modulo 2^32
//!   (`4294967297` is stored as 1), `exptime` and `bytes` wrap to 32-bit signed values.
//! * After `noreply` (the last token), error replies are suppressed too: the reply is empty.
//! * A bad storage line does NOT swallow its data block: the block is then read as a command.
//! * A data block not ending in `\r\n` consumes exactly `bytes + 2` bytes and answers
//!   `CLIENT_ERROR bad data chunk`.
//! * More than `line_len_max` bytes before a newline (the `\r` counts) close the connection
//!   silently, unless the line is a retrieval line (at most 100 leading spaces, then `get `,
//!   `gets `, `gat ` or `gats `; memcached only allows `get`/`gets`). memcached does this only
//!   while the newline has not arrived, so a long line that comes in one read is answered; we
//!   close whether or not the newline is there, so the outcome never depends on read boundaries.
//!   A retrieval line longer than `get_line_len_max` (memcached has no bound) is answered
//!   `SERVER_ERROR line too long` and the connection is closed.
//!
//! Meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`) are parsed in [`super::meta`].
//! Commands memcached has but corecache does not (`lru`, which tunes a segmented LRU corecache
//! does not have, and `misbehave`) answer `ERROR` like an unknown verb. `watch` with an argument
//! that names no event kind answers `ERROR` (nothing with a trailing `noreply`), as memcached.

use super::compose;
use super::{
    GetVerb, Keys, Limits, ParseError, Rejection, Request, ShutdownMode, StatsGroup, StoreVerb,
    CRAWLER_SLEEP_US_MAX,
};

/// memcached skips at most this many leading spaces when deciding whether a newline-less long
/// line is a multi-get.
const LEADING_SPACES_MAX: usize = 100;

/// The most tokens any fixed-arity command takes (`cas` with `noreply`), plus one to detect
/// "too many".
const TOKENS_MAX: usize = 8;

/// Parses one request from the start of `buf`.
///
/// Returns the request and the bytes it used (line, data block and its CRLF), or
/// [`ParseError::Incomplete`] if `buf` is a strict prefix of a request, or
/// [`ParseError::Invalid`] with memcached's reply for a bad request.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<(Request<'a>, usize), ParseError> {
    let newline = find_byte(buf, b'\n');
    let line_bytes = newline.unwrap_or(buf.len());
    if line_bytes > limits.line_len_max {
        if let Some(rejection) = too_long(buf, line_bytes, newline, limits) {
            return Err(rejection);
        }
    }
    let Some(newline) = newline else {
        return Err(ParseError::Incomplete);
    };
    let line_len = newline.saturating_add(1);
    let mut end = newline;
    if newline > 1 && buf.get(newline.wrapping_sub(1)) == Some(&b'\r') {
        end = newline.wrapping_sub(1);
    }
    let mut line = buf.get(..end).unwrap_or_default();
    if let Some(nul) = find_byte(line, 0) {
        line = line.get(..nul).unwrap_or_default();
    }
    parse_line(buf, line, line_len, limits)
}

/// The whole length (command line, data block and its CRLF) of the storage request `buf`
/// starts with, once its command line is complete: a text `set`, `add`, `replace`, `append`,
/// `prepend` or `cas`, or a meta `ms`. Only a hint of how much input to make room for while
/// the data block arrives: the request is not checked, and the caller bounds what it reserves.
pub fn pending_len(buf: &[u8]) -> Option<usize> {
    let newline = find_byte(buf, b'\n')?;
    let end = match newline.checked_sub(1) {
        Some(cr) if buf.get(cr) == Some(&b'\r') => cr,
        _ => newline,
    };
    let tokens = Tokens::collect(Tokenizer::new(buf.get(..end)?));
    let bytes = match tokens.get(0) {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => tokens.get(4),
        b"ms" => tokens.get(2),
        _ => return None,
    };
    let bytes = usize::try_from(strtol_i32(bytes)?).ok()?;
    newline.checked_add(1)?.checked_add(bytes)?.checked_add(2)
}

/// The first `needle` in `haystack`, eight bytes at a time (SWAR; `naive_find_byte` in the tests
/// is the reference).
pub(crate) fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES.wrapping_mul(u64::from(needle));
    let mut chunks = haystack.chunks_exact(8);
    let mut offset = 0usize;
    for chunk in &mut chunks {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(bytes) ^ pattern;
        // The lowest flagged byte is always a real zero byte, so the first match is exact.
        let zero_bytes = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero_bytes != 0 {
            let index = (zero_bytes.trailing_zeros() / 8) as usize;
            return Some(offset.saturating_add(index));
        }
        offset = offset.saturating_add(8);
    }
    let tail = chunks.remainder().iter().position(|&b| b == needle)?;
    Some(offset.saturating_add(tail))
}

/// Whether `key` is a key memcached accepts on the text protocol: 1..=`key_len_max` bytes, none
/// of them a space, NUL or newline. Other control bytes are allowed, as in memcached.
pub fn key_is_valid(key: &[u8], limits: &Limits) -> bool {
    !key.is_empty()
        && key.len() <= limits.key_len_max
        && !key.iter().any(|&b| b == b' ' || b == b'\n' || b == 0)
}

/// A line of more than `line_len_max` bytes before its newline (or before the end of `buf`).
///
/// memcached closes the connection silently once it holds more than 2048 bytes without a
/// newline, unless the line starts like a multi-get. Whether that happens to a long line that
/// does have a newline depends on how TCP split the stream (memcached answers it if it arrived in
/// one read of at most 16 KiB). We close whenever the newline is that late, so the result never
/// depends on read boundaries. Returns `None` for a retrieval line within `get_line_len_max`.
fn too_long(
    buf: &[u8],
    line_bytes: usize,
    newline: Option<usize>,
    limits: &Limits,
) -> Option<ParseError> {
    let consumed = newline.map_or(buf.len(), |newline| newline.saturating_add(1));
    if !is_retrieval_prefix(buf) {
        return Some(reject_close(b"", consumed));
    }
    if line_bytes > limits.get_line_len_max {
        return Some(reject_close(compose::LINE_TOO_LONG, consumed));
    }
    None
}

/// Whether a long unterminated line may be a multi-get: at most 100 leading spaces, then a
/// retrieval verb and a space.
fn is_retrieval_prefix(buf: &[u8]) -> bool {
    let spaces = buf.iter().take_while(|&&b| b == b' ').count();
    if spaces > LEADING_SPACES_MAX {
        return false;
    }
    let rest = buf.get(spaces..).unwrap_or_default();
    [&b"get "[..], b"gets ", b"gat ", b"gats "]
        .iter()
        .any(|verb| rest.starts_with(verb))
}

fn reject(reply: &'static [u8], consumed: usize) -> ParseError {
    ParseError::Invalid(Rejection {
        reply,
        consumed,
        swallow: 0,
        close: false,
    })
}

fn reject_close(reply: &'static [u8], consumed: usize) -> ParseError {
    ParseError::Invalid(Rejection {
        reply,
        consumed,
        swallow: 0,
        close: true,
    })
}

/// A reply memcached suppresses after `noreply` (`out_string` skips it).
fn unless_noreply(noreply: bool, reply: &'static [u8]) -> &'static [u8] {
    if noreply {
        b""
    } else {
        reply
    }
}

/// Splits a command line into space-separated tokens, yielding each with its start offset.
#[derive(Clone)]
struct Tokenizer<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Tokenizer<'a> {
    fn new(line: &'a [u8]) -> Tokenizer<'a> {
        Tokenizer { line, pos: 0 }
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.line.get(self.pos..)?;
        let skip = rest.iter().take_while(|&&b| b == b' ').count();
        let start = self.pos.saturating_add(skip);
        let rest = self.line.get(start..)?;
        if rest.is_empty() {
            self.pos = self.line.len();
            return None;
        }
        let len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        self.pos = start.saturating_add(len);
        Some((start, rest.get(..len).unwrap_or_default()))
    }
}

/// The first few tokens of a line and how many there are (counting stops past `TOKENS_MAX`).
struct Tokens<'a> {
    items: [&'a [u8]; TOKENS_MAX],
    count: usize,
}

impl<'a> Tokens<'a> {
    fn collect(tokenizer: Tokenizer<'a>) -> Tokens<'a> {
        let mut tokens = Tokens {
            items: [&[]; TOKENS_MAX],
            count: 0,
        };
        for (_, token) in tokenizer {
            if let Some(slot) = tokens.items.get_mut(tokens.count) {
                *slot = token;
            }
            tokens.count = tokens.count.saturating_add(1);
            if tokens.count > TOKENS_MAX {
                break;
            }
        }
        tokens
    }

    /// Token `index`, or empty when absent.
    fn get(&self, index: usize) -> &'a [u8] {
        self.items.get(index).copied().unwrap_or_default()
    }

    /// memcached's `set_noreply_maybe`: the last token is exactly `noreply`.
    fn noreply(&self) -> bool {
        self.count <= TOKENS_MAX && self.get(self.count.wrapping_sub(1)) == b"noreply"
    }
}

fn parse_line<'a>(
    buf: &'a [u8],
    line: &'a [u8],
    line_len: usize,
    limits: &Limits,
) -> Result<(Request<'a>, usize), ParseError> {
    let mut tokenizer = Tokenizer::new(line);
    let Some((_, verb)) = tokenizer.next() else {
        return Err(reject(compose::ERROR, line_len));
    };
    if let Some(meta_verb) = super::meta::verb_of(verb) {
        return super::meta::parse(meta_verb, buf, line, line_len, limits);
    }
    let get_verb = match verb {
        b"get" | b"bget" => Some(GetVerb::Get),
        b"gets" => Some(GetVerb::Gets),
        b"gat" => Some(GetVerb::Gat),
        b"gats" => Some(GetVerb::Gats),
        _ => None,
    };
    if let Some(get_verb) = get_verb {
        return parse_retrieval(get_verb, tokenizer, line_len, limits);
    }
    let tokens = Tokens::collect(Tokenizer::new(line));
    let request = match verb {
        b"set" => return parse_storage(StoreVerb::Set, &tokens, buf, line_len, limits),
        b"add" => return parse_storage(StoreVerb::Add, &tokens, buf, line_len, limits),
        b"replace" => return parse_storage(StoreVerb::Replace, &tokens, buf, line_len, limits),
        b"append" => return parse_storage(StoreVerb::Append, &tokens, buf, line_len, limits),
        b"prepend" => return parse_storage(StoreVerb::Prepend, &tokens, buf, line_len, limits),
        b"cas" => return parse_storage(StoreVerb::Cas, &tokens, buf, line_len, limits),
        b"delete" => parse_delete(&tokens, limits),
        b"incr" => parse_arith(true, &tokens, limits),
        b"decr" => parse_arith(false, &tokens, limits),
        b"touch" => parse_touch(&tokens, limits),
        b"flush_all" => parse_flush_all(&tokens),
        b"verbosity" => parse_verbosity(&tokens),
        b"stats" => parse_stats(&tokens),
        b"version" => Ok(Request::Version),
        b"refresh_certs" => Ok(Request::RefreshCerts),
        b"log_compact" => Ok(Request::LogCompact),
        b"quit" => Ok(Request::Quit),
        b"watch" => parse_watch(line, tokens.noreply()),
        b"config" => parse_config(&tokens),
        b"lru_crawler" => parse_lru_crawler(&tokens),
        b"lru" => parse_lru(&tokens),
        b"cache_memlimit" => parse_cache_memlimit(&tokens),
        b"slabs" => parse_slabs(&tokens),
        b"shutdown" => parse_shutdown(&tokens),
        #[cfg(feature = "test-hooks")]
        b"debug_time" => parse_debug_time(&tokens),
        #[cfg(feature = "test-hooks")]
        b"debug_stall" => match (tokens.count, strtoul_u32(tokens.get(1)), tokens.noreply()) {
            (2, Some(millis), false) | (3, Some(millis), true) if millis <= 10_000 => {
                Ok(Request::DebugStall {
                    millis,
                    noreply: tokens.count == 3,
                })
            }
            _ => Err(compose::ERROR),
        },
        _ if looks_like_http(verb, line) => return Err(reject_close(b"", line_len)),
        _ => Err(compose::ERROR),
    };
    match request {
        Ok(request) => Ok((request, line_len)),
        Err(reply) => Err(reject(reply, line_len)),
    }
}

/// memcached hangs up, without a reply, on an unknown command whose last token starts with
/// `HTTP/` (`GET / HTTP/1.1` sent to the cache port), unless the verb's first letter is one of
/// those it answers `ERROR` for on its own (`g s a c i d t`, or `m` in a two-letter meta verb).
/// Its tokenizer stops after 23 tokens, so on longer lines the 23rd is the one looked at.
fn looks_like_http(verb: &[u8], line: &[u8]) -> bool {
    const TOKENS_SPLIT: usize = 23;
    let own_error = match verb.first() {
        Some(b'g' | b's' | b'a' | b'c' | b'i' | b'd' | b't') => true,
        Some(b'm') => verb.len() == 2,
        _ => false,
    };
    if own_error || verb.len() < 2 {
        return false;
    }
    Tokenizer::new(line)
        .take(TOKENS_SPLIT)
        .last()
        .is_some_and(|(_, token)| token.starts_with(b"HTTP/"))
}

/// `get|gets <key>+`, `gat|gats <exptime> <key>*`.
fn parse_retrieval<'a>(
    verb: GetVerb,
    mut tokenizer: Tokenizer<'a>,
    line_len: usize,
    limits: &Limits,
) -> Result<(Request<'a>, usize), ParseError> {
    let line = tokenizer.line;
    let mut exptime = 0;
    if verb.touches() {
        let Some((_, token)) = tokenizer.next() else {
            return Err(reject(compose::ERROR, line_len));
        };
        let Some(value) = strtol_i32(token) else {
            return Err(reject(compose::CLIENT_ERROR_INVALID_EXPTIME, line_len));
        };
        exptime = i64::from(value);
    }
    let mut first: Option<usize> = None;
    let mut last_end = 0;
    for (start, key) in tokenizer {
        if key.len() > limits.key_len_max {
            return Err(reject(compose::CLIENT_ERROR_BAD_FORMAT, line_len));
        }
        first.get_or_insert(start);
        last_end = start.saturating_add(key.len());
    }
    let raw = match first {
        Some(start) => line.get(start..last_end).unwrap_or_default(),
        // `gat <exptime>` with no key is accepted (END); `get` with no key is not.
        None if verb.touches() => &[][..],
        None => return Err(reject(compose::ERROR, line_len)),
    };
    let keys = Keys::new(raw);
    Ok((
        Request::Get {
            verb,
            exptime,
            keys,
        },
        line_len,
    ))
}

/// `<verb> <key> <flags> <exptime> <bytes> [<cas>] [noreply]\r\n<data>\r\n`.
fn parse_storage<'a>(
    verb: StoreVerb,
    tokens: &Tokens<'a>,
    buf: &'a [u8],
    line_len: usize,
    limits: &Limits,
) -> Result<(Request<'a>, usize), ParseError> {
    let arity_ok = match verb {
        StoreVerb::Cas => tokens.count == 6 || tokens.count == 7,
        _ => tokens.count == 5 || tokens.count == 6,
    };
    if !arity_ok {
        return Err(reject(compose::ERROR, line_len));
    }
    let noreply = tokens.noreply();
    let bad_format = || {
        reject(
            unless_noreply(noreply, compose::CLIENT_ERROR_BAD_FORMAT),
            line_len,
        )
    };
    let key = tokens.get(1);
    if key.len() > limits.key_len_max {
        return Err(bad_format());
    }
    let (Some(client_flags), Some(exptime), Some(value_len)) = (
        strtoul_u32(tokens.get(2)),
        strtol_i32(tokens.get(3)),
        strtol_i32(tokens.get(4)),
    ) else {
        return Err(bad_format());
    };
    let mut cas_expected = 0;
    if verb == StoreVerb::Cas {
        cas_expected = strtoull_u64(tokens.get(5)).ok_or_else(bad_format)?;
    }
    // memcached rejects `bytes` outside 0..=INT_MAX-2 (after wrapping to 32 bits).
    let value_len = match usize::try_from(value_len) {
        Ok(len) if value_len <= i32::MAX - 2 => len,
        _ => return Err(bad_format()),
    };
    // memcached stores nonzero client flags in 4 extra bytes, which count against -I.
    let flags_len = if client_flags == 0 { 0 } else { 4 };
    let item_size = limits
        .item_total_size(key.len(), value_len)
        .saturating_add(flags_len);
    let block_len = value_len.saturating_add(2);
    if item_size > limits.item_size_max {
        let request = Request::TooLarge {
            verb,
            key,
            noreply,
            swallow: block_len,
        };
        return Ok((request, line_len));
    }
    let total = line_len.saturating_add(block_len);
    let bad_chunk = |consumed| {
        let reply = unless_noreply(noreply, compose::CLIENT_ERROR_BAD_DATA_CHUNK);
        reject(reply, consumed)
    };
    let Some(block) = buf.get(line_len..total) else {
        if limits.input_complete {
            return Err(bad_chunk(buf.len()));
        }
        return Err(ParseError::Incomplete);
    };
    let Some((value, b"\r\n")) = block.split_at_checked(value_len) else {
        return Err(bad_chunk(total));
    };
    let request = Request::Store {
        verb,
        key,
        client_flags,
        exptime: i64::from(exptime),
        value,
        cas_expected,
        noreply,
    };
    Ok((request, total))
}

/// `delete <key> [0] [noreply]`.
fn parse_delete<'a>(tokens: &Tokens<'a>, limits: &Limits) -> Result<Request<'a>, &'static [u8]> {
    if !(2..=4).contains(&tokens.count) {
        return Err(compose::ERROR);
    }
    let mut noreply = false;
    if tokens.count > 2 {
        let hold_is_zero = tokens.get(2) == b"0";
        noreply = tokens.noreply();
        let valid = (tokens.count == 3 && (hold_is_zero || noreply))
            || (tokens.count == 4 && hold_is_zero && noreply);
        if !valid {
            return Err(unless_noreply(noreply, compose::CLIENT_ERROR_DELETE_USAGE));
        }
    }
    let key = tokens.get(1);
    if key.len() > limits.key_len_max {
        return Err(unless_noreply(noreply, compose::CLIENT_ERROR_BAD_FORMAT));
    }
    Ok(Request::Delete { key, noreply })
}

/// `incr|decr <key> <delta> [noreply]`.
fn parse_arith<'a>(
    incr: bool,
    tokens: &Tokens<'a>,
    limits: &Limits,
) -> Result<Request<'a>, &'static [u8]> {
    if tokens.count != 3 && tokens.count != 4 {
        return Err(compose::ERROR);
    }
    let noreply = tokens.noreply();
    let key = tokens.get(1);
    if key.len() > limits.key_len_max {
        return Err(unless_noreply(noreply, compose::CLIENT_ERROR_BAD_FORMAT));
    }
    let Some(delta) = strtoull_u64(tokens.get(2)) else {
        return Err(unless_noreply(noreply, compose::CLIENT_ERROR_INVALID_DELTA));
    };
    Ok(Request::Arith {
        incr,
        key,
        delta,
        noreply,
    })
}

/// `touch <key> <exptime> [noreply]`.
fn parse_touch<'a>(tokens: &Tokens<'a>, limits: &Limits) -> Result<Request<'a>, &'static [u8]> {
    if tokens.count != 3 && tokens.count != 4 {
        return Err(compose::ERROR);
    }
    let noreply = tokens.noreply();
    let key = tokens.get(1);
    if key.len() > limits.key_len_max {
        return Err(unless_noreply(noreply, compose::CLIENT_ERROR_BAD_FORMAT));
    }
    let Some(exptime) = strtol_i32(tokens.get(2)) else {
        return Err(unless_noreply(
            noreply,
            compose::CLIENT_ERROR_INVALID_EXPTIME,
        ));
    };
    Ok(Request::Touch {
        key,
        exptime: i64::from(exptime),
        noreply,
    })
}

/// `flush_all [delay] [noreply]`. A delay of 0 or less means now.
fn parse_flush_all<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    if !(1..=3).contains(&tokens.count) {
        return Err(compose::ERROR);
    }
    let noreply = tokens.noreply();
    let mut delay = 0;
    if tokens.count != if noreply { 2 } else { 1 } {
        let Some(value) = strtol_i32(tokens.get(1)) else {
            return Err(unless_noreply(
                noreply,
                compose::CLIENT_ERROR_INVALID_EXPTIME,
            ));
        };
        delay = i64::from(value);
    }
    Ok(Request::FlushAll { delay, noreply })
}

/// `watch [kind ...]`: every argument must name a kind; none means `fetchers`. memcached takes
/// a trailing `noreply` as a kind too (so `ERROR`, which `noreply` silences).
fn parse_watch(line: &[u8], noreply: bool) -> Result<Request<'_>, &'static [u8]> {
    use super::watch_kinds;
    let mut kinds = 0;
    let mut args = 0usize;
    for (_, name) in Tokenizer::new(line).skip(1) {
        args += 1;
        kinds |= watch_kinds::of_name(name).ok_or(unless_noreply(noreply, compose::ERROR))?;
    }
    if args == 0 {
        kinds = watch_kinds::FETCHERS;
    }
    Ok(Request::Watch { kinds })
}

/// `verbosity <level> [noreply]`.
fn parse_verbosity<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    if tokens.count != 2 && tokens.count != 3 {
        return Err(compose::ERROR);
    }
    let noreply = tokens.noreply();
    let Some(level) = strtoul_u32(tokens.get(1)) else {
        return Err(unless_noreply(noreply, compose::CLIENT_ERROR_BAD_FORMAT));
    };
    Ok(Request::Verbosity { level, noreply })
}

/// `stats [group ...]`. `stats detail` takes `on`, `off` or `dump`; anything else is answered
/// here with memcached's usage error.
fn parse_stats<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    if tokens.count < 2 {
        return Ok(Request::Stats {
            group: StatsGroup::General,
        });
    }
    let group = match tokens.get(1) {
        b"settings" => StatsGroup::Settings,
        b"items" => StatsGroup::Items,
        b"slabs" => StatsGroup::Slabs,
        b"sizes" => StatsGroup::Sizes,
        b"sizes_enable" => StatsGroup::SizesSwitch(true),
        b"sizes_disable" => StatsGroup::SizesSwitch(false),
        b"conns" => StatsGroup::Conns,
        b"reset" => StatsGroup::Reset,
        // memcached without external storage configured lists nothing; corecache has none.
        b"extstore" => return Err(compose::END),
        b"detail" => match tokens.get(2) {
            mode @ (b"on" | b"off" | b"dump") => StatsGroup::Detail(mode),
            _ => return Err(compose::CLIENT_ERROR_STATS_DETAIL_USAGE),
        },
        // Argument errors are carried, not answered here: with `-X` memcached refuses the
        // command before it looks at the arguments.
        b"cachedump" => StatsGroup::CacheDump(if tokens.count < 4 {
            Err(compose::CLIENT_ERROR_BAD_COMMAND_LINE)
        } else {
            match (strtoul_u32(tokens.get(2)), strtoul_u32(tokens.get(3))) {
                (Some(class), Some(limit)) => Ok((class, limit)),
                _ => Err(compose::CLIENT_ERROR_BAD_FORMAT),
            }
        }),
        other => StatsGroup::Other(other),
    };
    Ok(Request::Stats { group })
}

/// `debug_time advance <secs>` (feature `test-hooks`; no memcached precedent): `secs` must be
/// plain decimal digits fitting a `u32` (else `CLIENT_ERROR bad command line format`); any other
/// shape is `ERROR`.
#[cfg(feature = "test-hooks")]
fn parse_debug_time<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    if tokens.count != 3 || tokens.get(1) != b"advance" {
        return Err(compose::ERROR);
    }
    let digits = tokens.get(2);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(compose::CLIENT_ERROR_BAD_FORMAT);
    }
    let secs = parse_digits(digits)
        .and_then(|secs| u32::try_from(secs).ok())
        .ok_or(compose::CLIENT_ERROR_BAD_FORMAT)?;
    Ok(Request::DebugTimeAdvance { secs })
}

/// `config get <key>` (ElastiCache auto discovery); any other shape is `ERROR`.
fn parse_config<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    if tokens.count != 3 || tokens.get(1) != b"get" {
        return Err(compose::ERROR);
    }
    Ok(Request::ConfigGet { key: tokens.get(2) })
}

/// `lru_crawler metadump all|hash|<ids>`, `crawl all|<ids>`, `enable`, `disable`, `sleep <us>`
/// and `tocrawl <n>`, as memcached 1.6.18 answers them: other shapes are `ERROR` (the class
/// lists are checked by the runtime), a `sleep`/`tocrawl` value that is not a number is
/// `CLIENT_ERROR bad command line format`, a sleep over a second is refused. (`tocrawl` keeps
/// the low 32 bits of a larger number, as memcached's `uint32_t` setting does.)
fn parse_lru_crawler<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    match (tokens.count, tokens.get(1)) {
        (3, b"sleep") => {
            let micros = strtoul_u32(tokens.get(2)).ok_or(compose::CLIENT_ERROR_BAD_FORMAT)?;
            if micros > CRAWLER_SLEEP_US_MAX {
                return Err(compose::CLIENT_ERROR_CRAWLER_SLEEP);
            }
            Ok(Request::LruCrawlerSleep { micros })
        }
        (3, b"tocrawl") => {
            let items = strtoul_u32(tokens.get(2)).ok_or(compose::CLIENT_ERROR_BAD_FORMAT)?;
            Ok(Request::LruCrawlerTocrawl { items })
        }
        (2, b"enable") => Ok(Request::LruCrawlerSwitch { enable: true }),
        (2, b"disable") => Ok(Request::LruCrawlerSwitch { enable: false }),
        (3, b"crawl") => Ok(Request::LruCrawlerCrawl {
            classes: tokens.get(2),
        }),
        (3, b"metadump") => Ok(Request::LruCrawlerMetadump {
            classes: tokens.get(2),
        }),
        _ => Err(compose::ERROR),
    }
}

/// `lru tune <hot pct> <warm pct> <hot max factor> <warm max factor>`, as memcached 1.6.18
/// answers it without its LRU maintainer (`-o no_lru_maintainer`: the mode `stats settings`
/// reports, as corecache's CLOCK eviction has no segments to move items between): the four
/// settings are kept for `stats settings` and change nothing else. Tokens after the four are
/// ignored. The percentages are `safe_strtoul`s whose 32-bit sum may not pass 80, the factors
/// `safe_strtod`s that must be above 0 (a NaN is not refused, as in C). `lru mode` and
/// `lru temp_ttl` need the maintainer and are `ERROR`, as is any other shape; a trailing
/// `noreply` silences every answer.
fn parse_lru<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    let noreply = tokens.noreply();
    let refuse = |reply| Err(unless_noreply(noreply, reply));
    if tokens.count < 6 || tokens.get(1) != b"tune" {
        return refuse(compose::ERROR);
    }
    let (Some(hot_pct), Some(warm_pct), Some(hot_factor), Some(warm_factor)) = (
        strtoul_u32(tokens.get(2)),
        strtoul_u32(tokens.get(3)),
        strtod_f64(tokens.get(4)),
        strtod_f64(tokens.get(5)),
    ) else {
        return refuse(compose::ERROR);
    };
    if hot_pct.wrapping_add(warm_pct) > 80 {
        return refuse(compose::ERROR_LRU_PCTS);
    }
    if hot_factor <= 0.0 || warm_factor <= 0.0 {
        return refuse(compose::ERROR_LRU_FACTORS);
    }
    Ok(Request::LruTune {
        hot_pct,
        warm_pct,
        hot_factor_bits: hot_factor.to_bits(),
        warm_factor_bits: warm_factor.to_bits(),
        noreply,
    })
}

/// `slabs automove <0|1|2> [noreply]` and `slabs reassign <src> <dst>`, as memcached answers
/// them: other shapes (and an automove mode over 2) are `ERROR`, a value that is not a number
/// is `CLIENT_ERROR bad command line format`. Which classes are valid is the runtime's call.
fn parse_slabs<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    match (tokens.count, tokens.get(1)) {
        (3 | 4, b"automove") => {
            let noreply = tokens.noreply();
            let mode = strtoul_u32(tokens.get(2))
                .ok_or(unless_noreply(noreply, compose::CLIENT_ERROR_BAD_FORMAT))?;
            match u8::try_from(mode) {
                Ok(mode @ 0..=2) => Ok(Request::SlabsAutomove { mode, noreply }),
                _ => Err(unless_noreply(noreply, compose::ERROR)),
            }
        }
        (4, b"reassign") => {
            let src = strtol_i32(tokens.get(2)).ok_or(compose::CLIENT_ERROR_BAD_FORMAT)?;
            let dst = strtol_i32(tokens.get(3)).ok_or(compose::CLIENT_ERROR_BAD_FORMAT)?;
            Ok(Request::SlabsReassign { src, dst })
        }
        _ => Err(compose::ERROR),
    }
}

/// `cache_memlimit <megabytes> [noreply]` (a third argument other than `noreply` is ignored,
/// as memcached does). Below 8 MB and above 10^9 MB are refused with memcached's replies.
fn parse_cache_memlimit<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    if tokens.count != 2 && tokens.count != 3 {
        return Err(compose::ERROR);
    }
    let noreply = tokens.noreply();
    let Some(megabytes) = strtoul_u32(tokens.get(1)) else {
        return Err(unless_noreply(noreply, compose::ERROR));
    };
    if megabytes < 8 {
        return Err(unless_noreply(noreply, compose::MEMLIMIT_TOO_SMALL));
    }
    if megabytes > 1_000_000_000 {
        return Err(unless_noreply(noreply, compose::MEMLIMIT_NOT_BYTES));
    }
    Ok(Request::CacheMemlimit { megabytes, noreply })
}

/// `shutdown [graceful]`; whether it is allowed (`-A`) is the runtime's decision.
fn parse_shutdown<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, &'static [u8]> {
    let mode = match (tokens.count, tokens.get(1)) {
        (1, _) => ShutdownMode::Now,
        (2, b"graceful") => ShutdownMode::Graceful,
        _ => ShutdownMode::Invalid,
    };
    Ok(Request::Shutdown { mode })
}

/// C's `isspace` in the "C" locale.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Decimal digits to a `u64`; `None` on overflow (C's `ERANGE`).
fn parse_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &digit| {
        value
            .checked_mul(10)?
            .checked_add(u64::from(digit.wrapping_sub(b'0')))
    })
}

/// A number as C's `strtoull`/`strtoll` read it, plus memcached's end check: optional leading
/// whitespace, an optional sign, at least one digit, then the end of the token or a whitespace
/// byte. Returns the sign and the magnitude; `None` when memcached's `safe_strto*` would fail
/// before the range checks (no digits, junk after them, magnitude over u64).
fn c_number(token: &[u8]) -> Option<(bool, u64)> {
    let spaces = token.iter().take_while(|&&b| is_c_space(b)).count();
    let mut rest = token.get(spaces..)?;
    let mut negative = false;
    if let Some((&sign @ (b'+' | b'-'), tail)) = rest.split_first() {
        negative = sign == b'-';
        rest = tail;
    }
    let digit_count = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digit_count == 0 {
        return None;
    }
    let (digits, tail) = rest.split_at_checked(digit_count)?;
    if let Some(&next) = tail.first() {
        if !is_c_space(next) {
            return None;
        }
    }
    Some((negative, parse_digits(digits)?))
}

/// memcached's `safe_strtoull`: `strtoull` (a `-` negates modulo 2^64), refusing a minus sign
/// only when the result looks negative as a signed value.
pub(crate) fn strtoull_u64(token: &[u8]) -> Option<u64> {
    let (negative, magnitude) = c_number(token)?;
    let value = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    if negative && (value as i64) < 0 {
        return None;
    }
    Some(value)
}

/// memcached's `safe_strtoul` on a 64-bit host: `safe_strtoull`, then truncated to 32 bits.
pub(crate) fn strtoul_u32(token: &[u8]) -> Option<u32> {
    strtoull_u64(token).map(|value| value as u32)
}

/// memcached's `safe_strtol` on a 64-bit host: `strtol` into a 64-bit `long` (out of range
/// fails), then truncated to 32 bits.
pub(crate) fn strtol_i32(token: &[u8]) -> Option<i32> {
    let (negative, magnitude) = c_number(token)?;
    let value: i64 = if negative {
        if magnitude > i64::MIN.unsigned_abs() {
            return None;
        }
        0i64.wrapping_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()?
    };
    Some(value as i32)
}

/// memcached's `safe_strtod`: C's `strtod` over the whole token (decimal, hexadecimal with
/// an optional binary exponent, `inf`, `infinity` and `nan` in any case, an optional sign),
/// refused when nothing is read, when junk follows, or on `ERANGE` (a finite number too large
/// for a double, or one so small it ends subnormal or zero).
pub(crate) fn strtod_f64(token: &[u8]) -> Option<f64> {
    let (value, in_range) = strtod_whole(token)?;
    in_range.then_some(value)
}

/// C's `atof` (as memcached reads `-o hot_max_factor=` and `warm_max_factor=`): `strtod` of
/// the longest prefix that is a number, out of range or not; 0 when none is. Only the first
/// [`ATOF_SCAN_MAX`] bytes are looked at (each candidate prefix is parsed whole, so the scan
/// is quadratic in its length).
pub(crate) fn atof(text: &[u8]) -> f64 {
    let text = text.get(..ATOF_SCAN_MAX).unwrap_or(text);
    (1..=text.len())
        .rev()
        .find_map(|n| strtod_whole(text.get(..n)?))
        .map_or(0.0, |(value, _)| value)
}

/// How much of a value [`atof`] reads: far more than any double needs to be written exactly.
const ATOF_SCAN_MAX: usize = 1024;

/// C's `atoi` on a 64-bit host (as memcached reads `-o hot_lru_pct=` and `warm_lru_pct=`):
/// `strtol` of the leading digits (after blanks and a sign), clamped to 64 bits, then cut to
/// 32; 0 when there are none.
pub(crate) fn atoi(text: &[u8]) -> i32 {
    let spaces = text.iter().take_while(|&&b| is_c_space(b)).count();
    let mut rest = text.get(spaces..).unwrap_or_default();
    let mut negative = false;
    if let Some((&sign @ (b'+' | b'-'), tail)) = rest.split_first() {
        negative = sign == b'-';
        rest = tail;
    }
    let mut value: i128 = 0;
    for &b in rest.iter().take_while(|b| b.is_ascii_digit()) {
        value = (value * 10 + i128::from(b - b'0')).min(i128::from(i64::MAX) + 1);
    }
    let value = if negative { -value } else { value };
    value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64 as i32
}

/// `strtod` of a whole token: its value and whether it was in range (no `ERANGE`); `None`
/// when the token is not entirely a number.
fn strtod_whole(token: &[u8]) -> Option<(f64, bool)> {
    let spaces = token.iter().take_while(|&&b| is_c_space(b)).count();
    let text = token.get(spaces..)?;
    let end = text
        .iter()
        .position(|&b| is_c_space(b))
        .unwrap_or(text.len());
    let text = std::str::from_utf8(text.get(..end)?).ok()?;
    let (negative, body) = match text.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let lower = body.to_ascii_lowercase();
    let (magnitude, in_range) = if lower == "inf" || lower == "infinity" {
        (f64::INFINITY, true)
    } else if lower == "nan" || (lower.starts_with("nan(") && lower.ends_with(')')) {
        (f64::NAN, true)
    } else if let Some(hex) = lower.strip_prefix("0x") {
        hex_magnitude(hex)?
    } else {
        decimal_magnitude(&lower)?
    };
    Some((if negative { -magnitude } else { magnitude }, in_range))
}

/// The value of a decimal `strtod` body (no sign) and whether it is in range; `None` if it is
/// not one.
fn decimal_magnitude(body: &str) -> Option<(f64, bool)> {
    let bytes = body.as_bytes();
    let mantissa_len = bytes
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .count();
    let (mantissa, exponent) = body.split_at_checked(mantissa_len)?;
    if mantissa.bytes().filter(|&b| b == b'.').count() > 1
        || !mantissa.bytes().any(|b| b.is_ascii_digit())
    {
        return None;
    }
    if let Some(digits) = exponent.strip_prefix('e') {
        let digits = digits.strip_prefix(['+', '-']).unwrap_or(digits);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    } else if !exponent.is_empty() {
        return None;
    }
    let value: f64 = body.parse().ok()?;
    Some((value, in_range(value, mantissa)))
}

/// The value of a hexadecimal `strtod` body after `0x`: hex digits with an optional point,
/// then an optional `p` and a decimal power of two.
fn hex_magnitude(body: &str) -> Option<(f64, bool)> {
    let (mantissa, power) = match body.split_once('p') {
        Some((m, p)) => (m, Some(p)),
        None => (body, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value = 0f64;
    for c in whole.chars() {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in fraction.chars() {
        value += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    if let Some(power) = power {
        let digits = power.strip_prefix(['+', '-']).unwrap_or(power);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let exp: i32 = power.parse().unwrap_or(if power.starts_with('-') {
            i32::MIN
        } else {
            i32::MAX
        });
        value *= 2f64.powi(exp.clamp(-2200, 2200));
    }
    Some((value, in_range(value, mantissa)))
}

/// `strtod`'s `ERANGE`: a result that overflowed to infinity, or a nonzero mantissa that came
/// out zero or subnormal.
fn in_range(value: f64, mantissa: &str) -> bool {
    let nonzero = mantissa.bytes().any(|b| b.is_ascii_hexdigit() && b != b'0');
    !(value.is_infinite() || (nonzero && !value.is_normal()))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    //! Every expected reply below was checked against the real memcached 1.6.18
    //! (`memcached -p <port> -U 0 -l 127.0.0.1`, and `-I 1m` for the size limit) by sending the
    //! same bytes over a socket.
    use super::*;
    use crate::protocol::compose::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits::DEFAULT;

    fn keys(raw: &[u8]) -> Keys<'_> {
        Keys::new(raw)
    }

    fn ok(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf, &LIMITS) {
            Ok(parsed) => parsed,
            Err(error) => panic!("{:?}: {error:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn rejected(buf: &[u8]) -> Rejection {
        match parse(buf, &LIMITS) {
            Err(ParseError::Invalid(rejection)) => rejection,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Asserts a rejection that consumes the whole buffer, keeps the connection and swallows
    /// nothing.
    #[test]
    fn pending_len_reads_the_block_length_of_storage_requests() {
        assert_eq!(pending_len(b"set k 0 0 100000\r\nabc"), Some(18 + 100_002));
        assert_eq!(pending_len(b"cas k 0 0 5 7 noreply\r\n"), Some(23 + 7));
        assert_eq!(pending_len(b"append k 0 0 3\n"), Some(15 + 5));
        assert_eq!(pending_len(b"ms k 70000 T0\r\nxy"), Some(15 + 70_002));
        // No whole line yet, no storage command, or no usable length: no hint.
        assert_eq!(pending_len(b"set k 0 0 100000"), None);
        assert_eq!(pending_len(b"get k\r\n"), None);
        assert_eq!(pending_len(b"set k 0 0 -1\r\n"), None);
        assert_eq!(pending_len(b"set k 0 0 x\r\n"), None);
        assert_eq!(pending_len(b"ms k\r\n"), None);
        assert_eq!(pending_len(b"\r\n"), None);
    }

    #[test]
    fn http_requests_are_hung_up_on_without_a_reply() {
        for line in [
            &b"GET / HTTP/1.0\r\n"[..],
            b"PUT /asdf/asd/fasdfasdf/sadf HTTP/1.1\r\n",
            b"DELETE HTTP/1.1\r\n",
            b"mget x HTTP/1.1\r\n",
        ] {
            let rejection = rejected(line);
            assert!(rejection.close, "{:?}", String::from_utf8_lossy(line));
            assert_eq!(rejection.reply, b"");
        }
        // Verbs memcached answers ERROR for on their own letter, a one-letter verb, and an
        // `HTTP/` token that is not the last: ERROR, connection kept.
        for line in [
            &b"gxt / HTTP/1.1\r\n"[..],
            b"delet / HTTP/1.1\r\n",
            b"mx / HTTP/1.1\r\n",
            b"X / HTTP/1.1\r\n",
            b"GET / HTTP/1.1 x\r\n",
        ] {
            assert_rejects(line, compose::ERROR);
        }
        // memcached's tokenizer stops after 23 tokens: the 23rd counts, not the last.
        let mut long = b"FOO".to_vec();
        for i in 1..30 {
            long.extend_from_slice(if i == 22 { b" HTTP/1.1" } else { b" x" });
        }
        long.extend_from_slice(b"\r\n");
        assert!(rejected(&long).close);
    }

    fn assert_rejects(buf: &[u8], reply: &[u8]) {
        let rejection = rejected(buf);
        assert_eq!(
            rejection,
            Rejection {
                reply: rejection.reply,
                consumed: buf.len(),
                swallow: 0,
                close: false
            },
            "{:?}",
            String::from_utf8_lossy(buf)
        );
        assert_eq!(
            String::from_utf8_lossy(rejection.reply),
            String::from_utf8_lossy(reply),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }

    fn store<'a>(verb: StoreVerb, key: &'a [u8], value: &'a [u8]) -> Request<'a> {
        store_full(verb, key, value, 0, 0, 0, false)
    }

    fn store_full<'a>(
        verb: StoreVerb,
        key: &'a [u8],
        value: &'a [u8],
        client_flags: u32,
        exptime: i64,
        cas_expected: u64,
        noreply: bool,
    ) -> Request<'a> {
        Request::Store {
            verb,
            key,
            client_flags,
            exptime,
            value,
            cas_expected,
            noreply,
        }
    }

    #[test]
    fn retrieval_lines() {
        let cases: &[(&[u8], GetVerb, i64, &[u8])] = &[
            (b"get a\r\n", GetVerb::Get, 0, b"a"),
            (b"get a\n", GetVerb::Get, 0, b"a"),
            (b"get  a  b \r\n", GetVerb::Get, 0, b"a  b"),
            (b"  get a\r\n", GetVerb::Get, 0, b"a"),
            (b"gets a b c\r\n", GetVerb::Gets, 0, b"a b c"),
            (b"bget a\r\n", GetVerb::Get, 0, b"a"),
            (b"gat 10 a\r\n", GetVerb::Gat, 10, b"a"),
            (b"gats -1 a b\r\n", GetVerb::Gats, -1, b"a b"),
            // `gat <exptime>` without keys answers END.
            (b"gat 10\r\n", GetVerb::Gat, 10, b""),
            // exptime wraps to 32 bits as in memcached's safe_strtol.
            (b"gat 4294967306 a\r\n", GetVerb::Gat, 10, b"a"),
            // Only one \r is stripped: the key is "a\r".
            (b"get a\r\r\n", GetVerb::Get, 0, b"a\r"),
            // Control bytes are key bytes; NUL ends the command.
            (
                b"get a\x01b a\tb a\x7f\r\n",
                GetVerb::Get,
                0,
                b"a\x01b a\tb a\x7f",
            ),
            (b"get a\x00 b\r\n", GetVerb::Get, 0, b"a"),
        ];
        for &(buf, verb, exptime, raw) in cases {
            let expected = Request::Get {
                verb,
                exptime,
                keys: keys(raw),
            };
            assert_eq!(
                ok(buf),
                (expected, buf.len()),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        let key250 = [b"get ".to_vec(), vec![b'k'; 250], b"\r\n".to_vec()].concat();
        assert_eq!(ok(&key250).1, key250.len());
        let (request, _) = ok(b"get a  b c\r\n");
        let Request::Get { keys, .. } = request else {
            panic!()
        };
        assert_eq!(keys.iter().collect::<Vec<_>>(), [&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn storage_lines() {
        let (request, consumed) = ok(b"set a 0 0 1\r\nx\r\n");
        assert_eq!((request, consumed), (store(StoreVerb::Set, b"a", b"x"), 16));
        assert_eq!(
            ok(b"set a 0 0 1\nx\r\n").0,
            store(StoreVerb::Set, b"a", b"x")
        );
        assert_eq!(
            ok(b"add a 0 0 0\r\n\r\n").0,
            store(StoreVerb::Add, b"a", b"")
        );
        assert_eq!(
            ok(b"replace a 0 0 1\r\nx\r\n").0,
            store(StoreVerb::Replace, b"a", b"x")
        );
        assert_eq!(
            ok(b"append a 0 0 1\r\nx\r\n").0,
            store(StoreVerb::Append, b"a", b"x")
        );
        assert_eq!(
            ok(b"prepend a 0 0 1\r\nx\r\n").0,
            store(StoreVerb::Prepend, b"a", b"x")
        );
        // Data may itself hold CR and LF.
        assert_eq!(
            ok(b"set a 0 0 2\r\nx\r\r\n").0,
            store(StoreVerb::Set, b"a", b"x\r")
        );
        assert_eq!(
            ok(b"  set   a  5  -1  1  \r\nx\r\n").0,
            store_full(StoreVerb::Set, b"a", b"x", 5, -1, 0, false)
        );
        let numbers: &[(&[u8], u32, i64)] = &[
            (b"set a 4294967295 0 1\r\nx\r\n", u32::MAX, 0),
            (b"set a 4294967296 0 1\r\nx\r\n", 0, 0),
            (b"set a 4294967297 0 1\r\nx\r\n", 1, 0),
            (b"set a -0 0 1\r\nx\r\n", 0, 0),
            (b"set a -18446744073709551615 0 1\r\nx\r\n", 1, 0),
            (b"set a +5 0 1\r\nx\r\n", 5, 0),
            (b"set a 5\t 0 1\r\nx\r\n", 5, 0),
            (b"set a \t5 0 1\r\nx\r\n", 5, 0),
            (b"set a 0 2147483647 1\r\nx\r\n", 0, 2147483647),
            (b"set a 0 2147483648 1\r\nx\r\n", 0, -2147483648),
            (b"set a 0 -2147483649 1\r\nx\r\n", 0, 2147483647),
            (b"set a 0 -4294967296 1\r\nx\r\n", 0, 0),
        ];
        for &(buf, client_flags, exptime) in numbers {
            let expected = store_full(StoreVerb::Set, b"a", b"x", client_flags, exptime, 0, false);
            assert_eq!(
                ok(buf),
                (expected, buf.len()),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // `bytes` wraps to 32 bits too: 4294967297 reads as 1.
        assert_eq!(
            ok(b"set a 0 0 4294967297\r\nx\r\n").0,
            store(StoreVerb::Set, b"a", b"x")
        );
        // One \r is stripped from "\r\r\n"; the other ends `bytes` like C's whitespace.
        assert_eq!(
            ok(b"set a 0 0 1\r\r\nx\r\n").0,
            store(StoreVerb::Set, b"a", b"x")
        );
        // A sixth token that is not `noreply` is ignored.
        assert_eq!(
            ok(b"set a 0 0 1 foo\r\nx\r\n").0,
            store(StoreVerb::Set, b"a", b"x")
        );
        assert_eq!(
            ok(b"set a 0 0 1 noreply\r\nx\r\n").0,
            store_full(StoreVerb::Set, b"a", b"x", 0, 0, 0, true)
        );
        assert_eq!(
            ok(b"cas a 0 0 1 18446744073709551615 noreply\r\nx\r\n").0,
            store_full(StoreVerb::Cas, b"a", b"x", 0, 0, u64::MAX, true)
        );
        let control = ok(b"set a\x01\tb\r 0 0 1\r\nx\r\n").0;
        assert_eq!(control.key(), Some(&b"a\x01\tb\r"[..]));
    }

    #[test]
    fn other_commands() {
        let cases: &[(&[u8], Request<'_>)] = &[
            (
                b"delete a\r\n",
                Request::Delete {
                    key: b"a",
                    noreply: false,
                },
            ),
            (
                b"delete a 0\r\n",
                Request::Delete {
                    key: b"a",
                    noreply: false,
                },
            ),
            (
                b"delete a noreply\r\n",
                Request::Delete {
                    key: b"a",
                    noreply: true,
                },
            ),
            (
                b"delete a 0 noreply\r\n",
                Request::Delete {
                    key: b"a",
                    noreply: true,
                },
            ),
            (
                b"delete a  0  noreply  \r\n",
                Request::Delete {
                    key: b"a",
                    noreply: true,
                },
            ),
            (
                b"delete noreply\r\n",
                Request::Delete {
                    key: b"noreply",
                    noreply: false,
                },
            ),
            (
                b"incr a 1\r\n",
                Request::Arith {
                    incr: true,
                    key: b"a",
                    delta: 1,
                    noreply: false,
                },
            ),
            (
                b"decr a 18446744073709551615 noreply\r\n",
                Request::Arith {
                    incr: false,
                    key: b"a",
                    delta: u64::MAX,
                    noreply: true,
                },
            ),
            (
                b"incr a 1 2\r\n",
                Request::Arith {
                    incr: true,
                    key: b"a",
                    delta: 1,
                    noreply: false,
                },
            ),
            (
                b"touch a 10\r\n",
                Request::Touch {
                    key: b"a",
                    exptime: 10,
                    noreply: false,
                },
            ),
            (
                b"touch a -1 noreply\r\n",
                Request::Touch {
                    key: b"a",
                    exptime: -1,
                    noreply: true,
                },
            ),
            (
                b"flush_all\r\n",
                Request::FlushAll {
                    delay: 0,
                    noreply: false,
                },
            ),
            (
                b"flush_all 0\r\n",
                Request::FlushAll {
                    delay: 0,
                    noreply: false,
                },
            ),
            (
                b"flush_all -1\r\n",
                Request::FlushAll {
                    delay: -1,
                    noreply: false,
                },
            ),
            (
                b"flush_all noreply\r\n",
                Request::FlushAll {
                    delay: 0,
                    noreply: true,
                },
            ),
            (
                b"flush_all 10 noreply\r\n",
                Request::FlushAll {
                    delay: 10,
                    noreply: true,
                },
            ),
            (
                b"flush_all 10 0\r\n",
                Request::FlushAll {
                    delay: 10,
                    noreply: false,
                },
            ),
            (b"version\r\n", Request::Version),
            (b"version x\r\n", Request::Version),
            (b"log_compact\r\n", Request::LogCompact),
            (b"quit\r\n", Request::Quit),
            (b"quit x\r\n", Request::Quit),
            (
                b"verbosity 1\r\n",
                Request::Verbosity {
                    level: 1,
                    noreply: false,
                },
            ),
            (
                b"verbosity 1 noreply\r\n",
                Request::Verbosity {
                    level: 1,
                    noreply: true,
                },
            ),
            (
                b"verbosity 1 2\r\n",
                Request::Verbosity {
                    level: 1,
                    noreply: false,
                },
            ),
            (
                b"verbosity 4294967296\r\n",
                Request::Verbosity {
                    level: 0,
                    noreply: false,
                },
            ),
            (
                b"stats\r\n",
                Request::Stats {
                    group: StatsGroup::General,
                },
            ),
            (
                b"stats  \r\n",
                Request::Stats {
                    group: StatsGroup::General,
                },
            ),
            (
                b"stats settings\r\n",
                Request::Stats {
                    group: StatsGroup::Settings,
                },
            ),
            (
                b"stats items x\r\n",
                Request::Stats {
                    group: StatsGroup::Items,
                },
            ),
            (
                b"stats slabs\r\n",
                Request::Stats {
                    group: StatsGroup::Slabs,
                },
            ),
            (
                b"stats sizes\r\n",
                Request::Stats {
                    group: StatsGroup::Sizes,
                },
            ),
            (
                b"stats conns\r\n",
                Request::Stats {
                    group: StatsGroup::Conns,
                },
            ),
            (
                b"stats reset x\r\n",
                Request::Stats {
                    group: StatsGroup::Reset,
                },
            ),
            (
                b"stats detail on x\r\n",
                Request::Stats {
                    group: StatsGroup::Detail(b"on"),
                },
            ),
            (
                b"stats detail dump\r\n",
                Request::Stats {
                    group: StatsGroup::Detail(b"dump"),
                },
            ),
            (
                b"stats foo\r\n",
                Request::Stats {
                    group: StatsGroup::Other(b"foo"),
                },
            ),
            (
                b"stats cachedump 1 1\r\n",
                Request::Stats {
                    group: StatsGroup::CacheDump(Ok((1, 1))),
                },
            ),
            (
                b"stats cachedump 4294967298 0 extra\r\n",
                Request::Stats {
                    group: StatsGroup::CacheDump(Ok((2, 0))),
                },
            ),
            (
                b"stats cachedump 1\r\n",
                Request::Stats {
                    group: StatsGroup::CacheDump(Err(compose::CLIENT_ERROR_BAD_COMMAND_LINE)),
                },
            ),
            (
                b"stats cachedump 1 -1\r\n",
                Request::Stats {
                    group: StatsGroup::CacheDump(Err(compose::CLIENT_ERROR_BAD_FORMAT)),
                },
            ),
        ];
        for &(buf, expected) in cases {
            assert_eq!(
                ok(buf),
                (expected, buf.len()),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn rejections() {
        let long_key = vec![b'k'; 251];
        let with_long_key = |prefix: &[u8], suffix: &[u8]| [prefix, &long_key[..], suffix].concat();
        let cases: Vec<(Vec<u8>, &[u8])> = vec![
            (b"\r\n".to_vec(), ERROR),
            (b"\n".to_vec(), ERROR),
            (b"   \r\n".to_vec(), ERROR),
            (b"\r\r\n".to_vec(), ERROR),
            (b"\x00\r\n".to_vec(), ERROR),
            (b"GET a\r\n".to_vec(), ERROR),
            (b"foo\r\n".to_vec(), ERROR),
            (b"g\r\n".to_vec(), ERROR),
            (b"mx\r\n".to_vec(), ERROR),
            (b"get\r\n".to_vec(), ERROR),
            (b"get \r\n".to_vec(), ERROR),
            (b"gets\r\n".to_vec(), ERROR),
            (b"gat\r\n".to_vec(), ERROR),
            (with_long_key(b"get ", b"\r\n"), CLIENT_ERROR_BAD_FORMAT),
            (with_long_key(b"get a ", b" b\r\n"), CLIENT_ERROR_BAD_FORMAT),
            (with_long_key(b"gat 10 ", b"\r\n"), CLIENT_ERROR_BAD_FORMAT),
            (b"gat x a\r\n".to_vec(), CLIENT_ERROR_INVALID_EXPTIME),
            (b"set a 0 0\r\n".to_vec(), ERROR),
            (b"set a 0 0 1 1 2\r\n".to_vec(), ERROR),
            (
                b"set a 0 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24\r\n"
                    .to_vec(),
                ERROR,
            ),
            (b"cas a 0 0 1\r\n".to_vec(), ERROR),
            (b"set a -1 0 1\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (
                b"set a 18446744073709551616 0 1\r\n".to_vec(),
                CLIENT_ERROR_BAD_FORMAT,
            ),
            (b"set a 5x 0 1\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (b"set a 0 abc 1\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (
                b"set a 0 99999999999999999999 1\r\n".to_vec(),
                CLIENT_ERROR_BAD_FORMAT,
            ),
            (b"set a 0 0 -1\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (b"set a 0 0 abc\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (
                b"set a 0 0 2147483646\r\n".to_vec(),
                CLIENT_ERROR_BAD_FORMAT,
            ),
            (b"cas a 0 0 1 abc\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (b"cas a 0 0 1 -1\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (
                with_long_key(b"set ", b" 0 0 1\r\n"),
                CLIENT_ERROR_BAD_FORMAT,
            ),
            // After `noreply` memcached suppresses its error replies.
            (b"set a 0 0 abc noreply\r\n".to_vec(), b""),
            (b"set a 0 0 noreply\r\n".to_vec(), b""),
            (with_long_key(b"set ", b" 0 0 1 noreply\r\n"), b""),
            (b"delete\r\n".to_vec(), ERROR),
            (b"delete a 1\r\n".to_vec(), CLIENT_ERROR_DELETE_USAGE),
            (b"delete a x\r\n".to_vec(), CLIENT_ERROR_DELETE_USAGE),
            (b"delete a 0 0\r\n".to_vec(), CLIENT_ERROR_DELETE_USAGE),
            (b"delete a 1 noreply\r\n".to_vec(), b""),
            (b"delete a 0 noreply x\r\n".to_vec(), ERROR),
            (with_long_key(b"delete ", b"\r\n"), CLIENT_ERROR_BAD_FORMAT),
            (b"incr a\r\n".to_vec(), ERROR),
            (b"incr a 1 2 3\r\n".to_vec(), ERROR),
            (b"incr a -1\r\n".to_vec(), CLIENT_ERROR_INVALID_DELTA),
            (b"incr a x\r\n".to_vec(), CLIENT_ERROR_INVALID_DELTA),
            (
                b"decr a 18446744073709551616\r\n".to_vec(),
                CLIENT_ERROR_INVALID_DELTA,
            ),
            (b"incr a x noreply\r\n".to_vec(), b""),
            (with_long_key(b"incr ", b" 1\r\n"), CLIENT_ERROR_BAD_FORMAT),
            (b"touch a\r\n".to_vec(), ERROR),
            (b"touch a 1 2 3\r\n".to_vec(), ERROR),
            (b"touch a x\r\n".to_vec(), CLIENT_ERROR_INVALID_EXPTIME),
            (b"touch a x noreply\r\n".to_vec(), b""),
            (with_long_key(b"touch ", b" 1\r\n"), CLIENT_ERROR_BAD_FORMAT),
            (b"flush_all x\r\n".to_vec(), CLIENT_ERROR_INVALID_EXPTIME),
            (b"flush_all x noreply\r\n".to_vec(), b""),
            (
                b"flush_all noreply 5\r\n".to_vec(),
                CLIENT_ERROR_INVALID_EXPTIME,
            ),
            (b"flush_all 1 2 3\r\n".to_vec(), ERROR),
            (b"flush_all 0 noreply x\r\n".to_vec(), ERROR),
            (b"get\ta\r\n".to_vec(), ERROR),
            (b"verbosity\r\n".to_vec(), ERROR),
            (b"verbosity x\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (b"verbosity -1\r\n".to_vec(), CLIENT_ERROR_BAD_FORMAT),
            (b"verbosity noreply\r\n".to_vec(), b""),
            (
                b"stats detail\r\n".to_vec(),
                CLIENT_ERROR_STATS_DETAIL_USAGE,
            ),
            (
                b"stats detail x\r\n".to_vec(),
                CLIENT_ERROR_STATS_DETAIL_USAGE,
            ),
            // Without the feature, and for memcached, this is an unknown command.
            #[cfg(not(feature = "test-hooks"))]
            (b"debug_time advance 10\r\n".to_vec(), ERROR),
        ];
        for (buf, reply) in &cases {
            assert_rejects(buf, reply);
        }
    }

    #[test]
    fn bad_storage_line_does_not_swallow_its_block() {
        // memcached: "set a -1 0 1\r\nx\r\n" -> "CLIENT_ERROR bad command line format\r\nERROR\r\n"
        let buf = b"set a -1 0 1\r\nx\r\n";
        assert_eq!(rejected(buf).consumed, 14);
        assert_eq!(rejected(&buf[14..]).reply, ERROR);
    }

    #[test]
    fn bad_data_chunk_consumes_bytes_plus_two() {
        // memcached: "set a 0 0 1\r\nxyz\r\nget a\r\n" ->
        // "CLIENT_ERROR bad data chunk\r\nERROR\r\nVALUE ..." ("xyz" eaten, then "\r\n" is an
        // empty command line).
        let buf = b"set a 0 0 1\r\nxyz\r\nget a\r\n";
        let rejection = rejected(buf);
        assert_eq!(
            rejection,
            Rejection {
                reply: CLIENT_ERROR_BAD_DATA_CHUNK,
                consumed: 16,
                swallow: 0,
                close: false
            }
        );
        assert_eq!(rejected(&buf[16..]).reply, ERROR);
        assert_eq!(
            parse(&buf[16..], &LIMITS),
            Err(ParseError::Invalid(Rejection {
                reply: ERROR,
                consumed: 2,
                swallow: 0,
                close: false
            }))
        );
        // A bare LF does not end a data block: "x\nZ" is eaten.
        assert_eq!(rejected(b"set a 0 0 1\r\nx\nZget a\r\n").consumed, 16);
        // noreply silences it.
        assert_eq!(rejected(b"set a 0 0 1 noreply\r\nxyz\r\n").reply, b"");
        // The data block must be there in full before the verdict.
        assert_eq!(
            parse(b"set a 0 0 1\r\nx\n", &LIMITS),
            Err(ParseError::Incomplete)
        );
    }

    #[test]
    fn too_large_is_decided_on_the_line() {
        // memcached -I 1m: with key "a", bytes 1048516 is stored and 1048517 is too large;
        // with nonzero flags (4 more bytes) 1048512 is stored and 1048513 is too large.
        let limits = Limits::DEFAULT;
        let line = b"set a 0 0 1048517\r\n";
        assert_eq!(
            parse(line, &limits),
            Ok((
                Request::TooLarge {
                    verb: StoreVerb::Set,
                    key: b"a",
                    noreply: false,
                    swallow: 1048519
                },
                line.len()
            ))
        );
        assert_eq!(
            parse(b"set a 0 0 1048516\r\n", &limits),
            Err(ParseError::Incomplete)
        );
        assert_eq!(
            parse(b"set a 1 0 1048512\r\n", &limits),
            Err(ParseError::Incomplete)
        );
        assert!(matches!(
            parse(b"set a 1 0 1048513 noreply\r\n", &limits),
            Ok((
                Request::TooLarge {
                    noreply: true,
                    swallow: 1048515,
                    ..
                },
                27
            ))
        ));
        let no_cas = Limits {
            cas_enabled: false,
            ..limits
        };
        assert_eq!(
            parse(b"set a 0 0 1048524\r\n", &no_cas),
            Err(ParseError::Incomplete)
        );
        assert!(matches!(
            parse(b"cas a 0 0 1048525 1\r\n", &no_cas),
            Ok((
                Request::TooLarge {
                    verb: StoreVerb::Cas,
                    ..
                },
                _
            ))
        ));
    }

    #[test]
    fn long_lines() {
        // memcached: 2048 bytes without a newline wait; 2049 close the connection silently.
        assert_eq!(parse(&[b'x'; 2048], &LIMITS), Err(ParseError::Incomplete));
        let closed = Rejection {
            reply: b"",
            consumed: 2049,
            swallow: 0,
            close: true,
        };
        assert_eq!(
            parse(&[b'x'; 2049], &LIMITS),
            Err(ParseError::Invalid(closed))
        );
        let set = [&b"set "[..], &[b'k'; 3000]].concat();
        assert!(matches!(
            rejected(&set),
            Rejection {
                reply: b"",
                close: true,
                ..
            }
        ));
        // A long multi-get keeps reading (memcached: get/gets only; we also allow gat/gats).
        for verb in [&b"get "[..], b"gets ", b"gat 1 ", b"gats 1 "] {
            let get = [verb, &b"k ".repeat(1500)].concat();
            assert_eq!(parse(&get, &LIMITS), Err(ParseError::Incomplete));
        }
        // ...but not after more than 100 leading spaces.
        let spaced = [&b" ".repeat(101), &b"get "[..], &b"k ".repeat(1500)].concat();
        assert!(rejected(&spaced).close);
        let spaced = [&b" ".repeat(100), &b"get "[..], &b"k ".repeat(1500)].concat();
        assert_eq!(parse(&spaced, &LIMITS), Err(ParseError::Incomplete));
        // A long line whose newline has arrived is closed too, so that the outcome does not
        // depend on read boundaries (memcached answers it only when it arrives in one read).
        let set = [&b"set "[..], &[b'k'; 3000], b" 0 0 1\r\n"].concat();
        assert!(matches!(
            rejected(&set),
            Rejection {
                reply: b"",
                close: true,
                ..
            }
        ));
        // Up to line_len_max bytes before the newline, the \r included, are fine.
        let line = [&b"version "[..], &[b'v'; 2039]].concat();
        assert_eq!(ok(&[&line[..], b"\r\n"].concat()).0, Request::Version);
        assert!(rejected(&[&line[..], b"v\r\n"].concat()).close);
        assert_eq!(ok(&[&line[..], b"v\n"].concat()).0, Request::Version);
        // A long complete multi-get within get_line_len_max parses.
        let get = [&b"get "[..], &b"k ".repeat(3000), b"\r\n"].concat();
        assert!(matches!(ok(&get).0, Request::Get { .. }));
        // Our own bound on retrieval lines: answered and closed.
        let small = Limits {
            get_line_len_max: 4096,
            ..LIMITS
        };
        let get = [&b"get "[..], &b"k ".repeat(3000)].concat();
        let rejection = match parse(&get, &small) {
            Err(ParseError::Invalid(rejection)) => rejection,
            other => panic!("{other:?}"),
        };
        assert_eq!((rejection.reply, rejection.close), (LINE_TOO_LONG, true));
        let get = [&b"get "[..], &b"k ".repeat(3000), b"\r\n"].concat();
        assert!(matches!(
            parse(&get, &small),
            Err(ParseError::Invalid(Rejection {
                reply: LINE_TOO_LONG,
                close: true,
                ..
            }))
        ));
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn debug_time() {
        assert_eq!(
            ok(b"debug_time advance 10\r\n").0,
            Request::DebugTimeAdvance { secs: 10 }
        );
        assert_rejects(b"debug_time back 10\r\n", ERROR);
    }

    #[test]
    fn admin_commands() {
        let config = |key: &'static [u8]| Request::ConfigGet { key };
        assert_eq!(ok(b"config get cluster\r\n").0, config(b"cluster"));
        assert_eq!(ok(b"config get other\n").0, config(b"other"));
        assert_rejects(b"config\r\n", ERROR);
        assert_rejects(b"config set cluster\r\n", ERROR);
        assert_rejects(b"config get cluster x\r\n", ERROR);

        let metadump = |classes| Request::LruCrawlerMetadump { classes };
        assert_eq!(ok(b"lru_crawler metadump all\r\n").0, metadump(b"all"));
        assert_eq!(ok(b"lru_crawler metadump 3,1\r\n").0, metadump(b"3,1"));
        assert_rejects(b"lru_crawler metadump\r\n", ERROR);
        assert_rejects(b"lru_crawler metadump 1 2\r\n", ERROR);
        assert_eq!(
            ok(b"lru_crawler crawl 1,2\r\n").0,
            Request::LruCrawlerCrawl { classes: b"1,2" }
        );
        assert_eq!(
            ok(b"lru_crawler disable\r\n").0,
            Request::LruCrawlerSwitch { enable: false }
        );
        assert_rejects(b"lru_crawler crawl\r\n", ERROR);
        assert_rejects(b"lru_crawler crawl all x\r\n", ERROR);
        assert_rejects(b"lru_crawler enable x\r\n", ERROR);
        assert_eq!(
            ok(b"lru_crawler sleep 10\r\n").0,
            Request::LruCrawlerSleep { micros: 10 }
        );
        assert_rejects(b"lru_crawler sleep 1000001\r\n", CLIENT_ERROR_CRAWLER_SLEEP);
        assert_rejects(b"lru_crawler sleep x\r\n", CLIENT_ERROR_BAD_FORMAT);
        assert_eq!(
            ok(b"lru_crawler tocrawl 4294967297\r\n").0,
            Request::LruCrawlerTocrawl { items: 1 }
        );
        assert_rejects(b"lru_crawler tocrawl -1\r\n", CLIENT_ERROR_BAD_FORMAT);
        assert_eq!(
            ok(b"slabs automove 2 noreply\r\n").0,
            Request::SlabsAutomove {
                mode: 2,
                noreply: true
            }
        );
        assert_rejects(b"slabs automove 3\r\n", ERROR);
        assert_rejects(b"slabs automove x\r\n", CLIENT_ERROR_BAD_FORMAT);
        assert_eq!(
            ok(b"slabs reassign -1 4\r\n").0,
            Request::SlabsReassign { src: -1, dst: 4 }
        );
        assert_rejects(b"slabs reassign 1 x\r\n", CLIENT_ERROR_BAD_FORMAT);
        assert_rejects(b"slabs reassign 1 2 3\r\n", ERROR);
        assert_rejects(b"stats extstore\r\n", END);

        let memlimit = |megabytes, noreply| Request::CacheMemlimit { megabytes, noreply };
        assert_eq!(ok(b"cache_memlimit 100\r\n").0, memlimit(100, false));
        assert_eq!(ok(b"cache_memlimit 8 noreply\r\n").0, memlimit(8, true));
        assert_eq!(ok(b"cache_memlimit 8 x\r\n").0, memlimit(8, false));
        assert_rejects(b"cache_memlimit\r\n", ERROR);
        assert_rejects(b"cache_memlimit x\r\n", ERROR);
        assert_rejects(b"cache_memlimit -5\r\n", ERROR);
        assert_rejects(b"cache_memlimit 1 2 3\r\n", ERROR);
        assert_rejects(b"cache_memlimit 7\r\n", compose::MEMLIMIT_TOO_SMALL);
        assert_rejects(b"cache_memlimit 7 noreply\r\n", b"");
        assert_rejects(
            b"cache_memlimit 1000000001\r\n",
            compose::MEMLIMIT_NOT_BYTES,
        );

        let shutdown = |mode| Request::Shutdown { mode };
        assert_eq!(ok(b"shutdown\r\n").0, shutdown(ShutdownMode::Now));
        assert_eq!(
            ok(b"shutdown graceful\r\n").0,
            shutdown(ShutdownMode::Graceful)
        );
        assert_eq!(ok(b"shutdown now\r\n").0, shutdown(ShutdownMode::Invalid));
        assert_eq!(
            ok(b"shutdown graceful x\r\n").0,
            shutdown(ShutdownMode::Invalid)
        );
    }

    /// A pipeline of valid requests of every kind, newline styles mixed.
    const PIPELINE: &[u8] = b"get a\r\nset b 1 2 3\r\nxyz\r\ngets a b\nincr c 5\r\n\
        delete d noreply\r\ncas e 0 0 2 77\r\nhi\r\ntouch f 9\r\ngat 5 g h\r\n\
        flush_all 3\r\nversion\r\nstats items\r\nverbosity 1\r\nquit\r\n";

    fn parse_all(buf: &[u8]) -> Vec<(Request<'_>, usize)> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < buf.len() {
            let (request, used) = parse(&buf[offset..], &LIMITS).unwrap();
            out.push((request, used));
            offset += used;
        }
        out
    }

    #[test]
    fn pipelined_requests_chain() {
        let all = parse_all(PIPELINE);
        assert_eq!(all.len(), 13);
        assert_eq!(
            all.iter().map(|&(_, used)| used).sum::<usize>(),
            PIPELINE.len()
        );
        assert_eq!(
            all[1].0,
            store_full(StoreVerb::Set, b"b", b"xyz", 1, 2, 0, false)
        );
        assert_eq!(all[12].0, Request::Quit);
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let mut offset = 0;
        for (_, used) in parse_all(PIPELINE) {
            let request = &PIPELINE[offset..offset + used];
            for cut in 0..used {
                assert_eq!(
                    parse(&request[..cut], &LIMITS),
                    Err(ParseError::Incomplete),
                    "{:?}",
                    String::from_utf8_lossy(&request[..cut])
                );
            }
            offset += used;
        }
    }

    #[test]
    fn key_validity() {
        assert!(key_is_valid(b"a", &LIMITS));
        assert!(key_is_valid(b"a\x01\t\r\x7f\xff", &LIMITS));
        assert!(key_is_valid(&[b'k'; 250], &LIMITS));
        assert!(!key_is_valid(&[b'k'; 251], &LIMITS));
        assert!(!key_is_valid(b"", &LIMITS));
        assert!(!key_is_valid(b"a b", &LIMITS));
        assert!(!key_is_valid(b"a\nb", &LIMITS));
        assert!(!key_is_valid(b"a\x00b", &LIMITS));
        let short = Limits {
            key_len_max: 4,
            ..LIMITS
        };
        assert_rejects_with(b"get abcde\r\n", &short, CLIENT_ERROR_BAD_FORMAT);
        assert_rejects_with(b"touch abcde 1\r\n", &short, CLIENT_ERROR_BAD_FORMAT);
    }

    fn assert_rejects_with(buf: &[u8], limits: &Limits, reply: &[u8]) {
        match parse(buf, limits) {
            Err(ParseError::Invalid(rejection)) => assert_eq!(rejection.reply, reply),
            other => panic!("{other:?}"),
        }
    }

    /// `input_complete` (a UDP datagram): a data block running past the buffer's end is a bad
    /// data chunk that takes the rest of the buffer; a cut-off line stays incomplete.
    #[test]
    fn a_block_cut_off_by_complete_input_is_a_bad_data_chunk() {
        let final_input = Limits {
            input_complete: true,
            ..LIMITS
        };
        for buf in [
            &b"set k 0 0 10\r\nabc"[..],
            b"set k 0 0 3\r\nabc\r",
            b"set k 0 0 0\r\n",
            b"cas k 0 0 3 1\r\n",
            b"ms k 10 q\r\nabc",
        ] {
            let want = Rejection {
                reply: CLIENT_ERROR_BAD_DATA_CHUNK,
                consumed: buf.len(),
                swallow: 0,
                close: false,
            };
            assert_eq!(parse(buf, &final_input), Err(ParseError::Invalid(want)));
            assert_eq!(parse(buf, &LIMITS), Err(ParseError::Incomplete));
        }
        let rejection = match parse(b"set k 0 0 3 noreply\r\nab", &final_input) {
            Err(ParseError::Invalid(rejection)) => rejection,
            other => panic!("{other:?}"),
        };
        assert_eq!(rejection.reply, b"");
        for cut_line in [&b"get foo"[..], b"set k 0 0 3", b"mg k v", b""] {
            assert_eq!(parse(cut_line, &final_input), Err(ParseError::Incomplete));
        }
        assert!(parse(b"set k 0 0 3\r\nabc\r\n", &final_input).is_ok());
    }

    /// `safe_strtod` as glibc's `strtod` reads whole tokens (values checked against memcached's
    /// `lru tune` and `stats settings`).
    #[test]
    fn c_doubles() {
        for (text, value) in [
            ("1", 1.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("+2.5", 2.5),
            ("-0.25", -0.25),
            ("1e-1", 0.1),
            ("1E+2", 100.0),
            ("0x10", 16.0),
            ("0x1p-2", 0.25),
            ("0X.8P1", 1.0),
            ("0e-400", 0.0),
            ("1e308", 1e308),
            ("2.3e-308", 2.3e-308),
        ] {
            assert_eq!(strtod_f64(text.as_bytes()), Some(value), "{text}");
        }
        assert_eq!(strtod_f64(b"INF"), Some(f64::INFINITY));
        assert_eq!(strtod_f64(b"-infinity"), Some(f64::NEG_INFINITY));
        assert!(strtod_f64(b"nan").is_some_and(f64::is_nan));
        assert!(strtod_f64(b"nan(abc)").is_some_and(f64::is_nan));
        for junk in [
            "", "x", "1e", "1e+", "0x", "1.5.5", "1x", ".", "-", "1e400", "-1e400", "1e-310",
            "1e-400", "0x1p", "infinit", "0x1g",
        ] {
            assert_eq!(strtod_f64(junk.as_bytes()), None, "{junk:?}");
        }
    }

    #[test]
    fn c_atoi_and_atof() {
        for (text, value) in [
            ("30", 30),
            ("1x", 1),
            ("x", 0),
            ("", 0),
            (" -5", -5),
            ("+7", 7),
            ("4294967297", 1),
            ("99999999999999999999", -1),
        ] {
            assert_eq!(atoi(text.as_bytes()), value, "{text:?}");
        }
        for (text, value) in [
            ("1.5", 1.5),
            ("1.5x", 1.5),
            ("x", 0.0),
            ("0x", 0.0),
            ("1e", 1.0),
        ] {
            assert_eq!(atof(text.as_bytes()), value, "{text:?}");
        }
        assert_eq!(atof(b"1e400"), f64::INFINITY);
        assert_eq!(atof(b"1e-400"), 0.0);
        assert!(atof(b"nan").is_nan());
        // A long value that is no number is refused quickly, not after a quadratic scan.
        assert_eq!(atof("+-".repeat(100_000).as_bytes()), 0.0);
    }

    #[test]
    fn lru_tune_is_checked_as_memcached_checks_it() {
        assert_eq!(
            ok(b"lru tune 10 25 0.1 2 extra\r\n").0,
            Request::LruTune {
                hot_pct: 10,
                warm_pct: 25,
                hot_factor_bits: 0.1f64.to_bits(),
                warm_factor_bits: 2f64.to_bits(),
                noreply: false,
            }
        );
        assert!(matches!(
            ok(b"lru tune 4294967295 1 1 1 noreply\r\n").0,
            Request::LruTune {
                hot_pct: u32::MAX,
                warm_pct: 1,
                noreply: true,
                ..
            }
        ));
        assert_rejects(b"lru tune 50 40 1 1\r\n", ERROR_LRU_PCTS);
        assert_rejects(b"lru tune 1 1 0 1\r\n", ERROR_LRU_FACTORS);
        assert_rejects(b"lru tune 1 1 1 -1\r\n", ERROR_LRU_FACTORS);
        assert_rejects(b"lru tune 1 1 1\r\n", ERROR);
        assert_rejects(b"lru mode flat\r\n", ERROR);
        assert_rejects(b"lru temp_ttl 5\r\n", ERROR);
        assert_rejects(b"lru tune 90 0 1 1 noreply\r\n", b"");
        assert_rejects(b"lru noreply\r\n", b"");
    }

    /// memcached's `safe_strto*` helpers against hand-checked values.
    #[test]
    fn c_numbers() {
        assert_eq!(strtoull_u64(b"0"), Some(0));
        assert_eq!(strtoull_u64(b"-0"), Some(0));
        assert_eq!(strtoull_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(strtoull_u64(b"18446744073709551616"), None);
        assert_eq!(strtoull_u64(b"-1"), None);
        assert_eq!(
            strtoull_u64(b"-9223372036854775809"),
            Some(9223372036854775807)
        );
        assert_eq!(strtoull_u64(b""), None);
        assert_eq!(strtoull_u64(b"+"), None);
        assert_eq!(strtoull_u64(b"\t"), None);
        assert_eq!(strtoull_u64(b"1\r"), Some(1));
        assert_eq!(strtoull_u64(b"1x"), None);
        assert_eq!(strtol_i32(b"-9223372036854775808"), Some(0));
        assert_eq!(strtol_i32(b"-9223372036854775809"), None);
        assert_eq!(strtol_i32(b"9223372036854775807"), Some(-1));
        assert_eq!(strtol_i32(b"9223372036854775808"), None);
        assert_eq!(strtol_i32(b"-1"), Some(-1));
        assert_eq!(strtoul_u32(b"4294967297"), Some(1));
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_filter("key byte", |&b| b != b' ' && b != b'\n' && b != 0),
            1..20,
        )
        .prop_filter("not a lone \\r at the end", |key| {
            key.last() != Some(&b'\r')
        })
    }

    /// A valid request, encoded; one of every kind.
    fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
        let key = key_strategy();
        let value = proptest::collection::vec(any::<u8>(), 0..40);
        (
            0u8..8,
            key,
            value,
            any::<u32>(),
            any::<i32>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(kind, key, value, flags, exptime, number, noreply)| {
                let noreply: &[u8] = if noreply { b" noreply" } else { b"" };
                let mut out = Vec::new();
                match kind {
                    0 => out.extend_from_slice(b"get "),
                    1 => out.extend_from_slice(format!("gats {exptime} ").as_bytes()),
                    2 | 3 => {
                        let verb = if kind == 2 { "set" } else { "cas" };
                        out.extend_from_slice(verb.as_bytes());
                        out.push(b' ');
                        out.extend_from_slice(&key);
                        out.extend_from_slice(
                            format!(" {flags} {exptime} {}", value.len()).as_bytes(),
                        );
                        if kind == 3 {
                            out.extend_from_slice(format!(" {number}").as_bytes());
                        }
                        out.extend_from_slice(noreply);
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(&value);
                        out.extend_from_slice(b"\r\n");
                        return out;
                    }
                    4 => out.extend_from_slice(b"delete "),
                    5 => out.extend_from_slice(b"incr "),
                    6 => out.extend_from_slice(b"touch "),
                    _ => return format!("flush_all {exptime}\n").into_bytes(),
                }
                out.extend_from_slice(&key);
                match kind {
                    5 => out.extend_from_slice(format!(" {number}").as_bytes()),
                    6 => out.extend_from_slice(format!(" {exptime}").as_bytes()),
                    _ => {}
                }
                if kind >= 4 {
                    out.extend_from_slice(noreply);
                }
                out.extend_from_slice(b"\r\n");
                out
            })
    }

    fn check_request(request: &Request<'_>, used: usize, len: usize) {
        assert!(0 < used && used <= len);
        if let Some(key) = request.key() {
            assert!(key_is_valid(key, &LIMITS), "{key:?}");
        }
        if let Request::Get { keys, .. } = request {
            for key in keys.iter() {
                assert!(key_is_valid(key, &LIMITS), "{key:?}");
            }
        }
    }

    fn naive_find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
        haystack.iter().position(|&b| b == needle)
    }

    #[test]
    fn find_byte_edges() {
        for len in 0..40 {
            for at in 0..len {
                let mut haystack = vec![b'x'; len];
                haystack[at] = b'\n';
                if at + 1 < len {
                    haystack[len - 1] = b'\n';
                }
                assert_eq!(find_byte(&haystack, b'\n'), Some(at));
            }
            assert_eq!(find_byte(&vec![b'x'; len], b'\n'), None);
        }
        // Bytes next to the needle value must not be confused with it (borrow propagation).
        assert_eq!(
            find_byte(b"\x0b\x0a\x0a\x0b\x0b\x0b\x0b\x0b", b'\n'),
            Some(1)
        );
        assert_eq!(
            find_byte(b"\x01\x01\x00\x01\x01\x01\x01\x01\x00", 0),
            Some(2)
        );
        assert_eq!(find_byte(b"\x80\x81\xff\x7f\x01\x00", 0), Some(5));
    }

    proptest! {
        #[test]
        fn find_byte_matches_naive(
            haystack in proptest::collection::vec(
                prop::sample::select(vec![0u8, 1, 9, 10, 11, 127, 128, 255, b'x']), 0..64),
            needle in prop::sample::select(vec![0u8, 10, 255]),
        ) {
            prop_assert_eq!(find_byte(&haystack, needle), naive_find_byte(&haystack, needle));
        }

        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            match parse(&buf, &LIMITS) {
                Ok((request, used)) => {
                    check_request(&request, used, buf.len());
                    if let Request::Store { value, .. } = request {
                        // The value sits right before the final CRLF of the block.
                        prop_assert_eq!(&buf[used - 2..used], b"\r\n");
                        prop_assert!(value.len() + 2 <= used);
                    }
                }
                Err(ParseError::Incomplete) => prop_assert!(!buf.contains(&b'\n') || buf.len() < 2048),
                Err(ParseError::Invalid(rejection)) => {
                    prop_assert!(rejection.consumed <= buf.len());
                    prop_assert!(rejection.close || rejection.consumed >= 1);
                }
            }
        }

        #[test]
        fn never_panics_on_verbs(
            verb in prop::sample::select(vec![
                "get ", "gets ", "gat ", "gats ", "set ", "add ", "replace ", "append ",
                "prepend ", "cas ", "delete ", "incr ", "decr ", "touch ", "flush_all ",
                "verbosity ", "stats ", "version ", "quit ",
            ]),
            tail in proptest::collection::vec(
                prop::sample::select(b" 0123456789-+\r\nxnoreply\t\x00".to_vec()), 0..60),
        ) {
            let buf = [verb.as_bytes(), &tail].concat();
            match parse(&buf, &LIMITS) {
                Ok((request, used)) => check_request(&request, used, buf.len()),
                Err(ParseError::Incomplete) => {}
                Err(ParseError::Invalid(rejection)) => prop_assert!(rejection.consumed <= buf.len()),
            }
        }

        #[test]
        fn declared_length_is_the_value_length(
            value in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let buf = [format!("set k 0 0 {}\r\n", value.len()).as_bytes(), &value, b"\r\n"].concat();
            let (request, used) = parse(&buf, &LIMITS).unwrap();
            prop_assert_eq!(used, buf.len());
            let Request::Store { value: parsed, .. } = request else { panic!() };
            prop_assert_eq!(parsed, &value[..]);
        }

        #[test]
        fn any_split_parses_the_same(
            requests in proptest::collection::vec(request_strategy(), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let buf = requests.concat();
            let whole = parse_all(&buf);
            prop_assert_eq!(whole.len(), requests.len());
            let cut = cut.index(buf.len() + 1);
            // Feed `buf[..cut]` first, then the whole buffer, as a connection would.
            let mut split = Vec::new();
            let mut offset = 0;
            while offset < buf.len() {
                let available = if offset < cut { &buf[offset..cut] } else { &buf[offset..] };
                match parse(available, &LIMITS) {
                    Ok((request, used)) => {
                        split.push((request, used));
                        offset += used;
                    }
                    Err(ParseError::Incomplete) => {
                        prop_assert!(offset < cut);
                        let (request, used) = parse(&buf[offset..], &LIMITS).unwrap();
                        split.push((request, used));
                        offset += used;
                    }
                    Err(error) => panic!("{error:?}"),
                }
            }
            prop_assert_eq!(split, whole);
        }
    }
}
