//! Reply composition for the classic text protocol: fixed replies as constants, and helpers that
//! append a reply to a `Vec<u8>` without allocating (beyond the vector's own growth) or
//! formatting.
//!
//! Every byte string here is what memcached 1.6.18 sends, CRLF included.

/// `STORED`: a storage command succeeded.
pub const STORED: &[u8] = b"STORED\r\n";
/// `NOT_STORED`: `add`/`replace`/`append`/`prepend` precondition failed.
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
/// `EXISTS`: `cas` found the item changed.
pub const EXISTS: &[u8] = b"EXISTS\r\n";
/// `NOT_FOUND`: no such item.
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
/// `DELETED`: `delete` removed the item.
pub const DELETED: &[u8] = b"DELETED\r\n";
/// `TOUCHED`: `touch` updated the exptime.
pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
/// `OK`: `flush_all`, `verbosity`, `stats detail on|off`.
pub const OK: &[u8] = b"OK\r\n";
/// `END`: ends a retrieval or stats reply.
pub const END: &[u8] = b"END\r\n";
/// `ERROR`: unknown command or wrong number of tokens.
pub const ERROR: &[u8] = b"ERROR\r\n";
/// `RESET`: `stats reset`.
pub const RESET: &[u8] = b"RESET\r\n";

/// A malformed command line (bad number, over-long key, ...).
pub const CLIENT_ERROR_BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
/// A data block not followed by CRLF.
pub const CLIENT_ERROR_BAD_DATA_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
/// A bad exptime on `touch`, `gat`, `gats` or a bad `flush_all` delay.
pub const CLIENT_ERROR_INVALID_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
/// A bad `incr`/`decr` delta.
pub const CLIENT_ERROR_INVALID_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
/// `incr`/`decr` on a value that is not a decimal number.
pub const CLIENT_ERROR_NON_NUMERIC: &[u8] =
    b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
/// `delete` with a nonzero hold time or junk after the key (two spaces after the period).
pub const CLIENT_ERROR_DELETE_USAGE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
/// `stats detail` without `on`, `off` or `dump`.
pub const CLIENT_ERROR_STATS_DETAIL_USAGE: &[u8] =
    b"CLIENT_ERROR usage: stats detail on|off|dump\r\n";
/// A storage command whose item exceeds `-I`.
pub const SERVER_ERROR_TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
/// `flush_all` with `-F`.
pub const CLIENT_ERROR_FLUSH_DISABLED: &[u8] = b"CLIENT_ERROR flush_all not allowed\r\n";
/// `lru_crawler metadump` with `-X`.
pub const ERROR_METADUMP_DISABLED: &[u8] = b"ERROR metadump not allowed\r\n";
pub const ERROR_METADUMP_PIPELINED: &[u8] =
    b"ERROR cannot pipeline other commands before metadump\r\n";
/// `stats cachedump` with `-X`.
pub const CLIENT_ERROR_CACHEDUMP_DISABLED: &[u8] = b"CLIENT_ERROR stats cachedump not allowed\r\n";
/// `stats cachedump` with fewer than two arguments.
pub const CLIENT_ERROR_BAD_COMMAND_LINE: &[u8] = b"CLIENT_ERROR bad command line\r\n";
/// `stats cachedump` of a class id memcached could never have.
pub const CLIENT_ERROR_ILLEGAL_SLAB_ID: &[u8] = b"CLIENT_ERROR Illegal slab id\r\n";
/// No memory for the item even after eviction.
pub const SERVER_ERROR_OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";
/// `lru_crawler crawl` or `metadump` while the crawler is disabled.
pub const CLIENT_ERROR_CRAWLER_DISABLED: &[u8] = b"CLIENT_ERROR lru crawler disabled\r\n";
/// `lru_crawler crawl` naming no class.
pub const NOTSTARTED_NO_ITEMS: &[u8] = b"NOTSTARTED no items to crawl\r\n";
/// `lru_crawler enable` while it is enabled.
pub const ERROR_CRAWLER_START: &[u8] = b"ERROR failed to start lru crawler thread\r\n";
/// `lru_crawler metadump` of a class that does not exist.
pub const BADCLASS: &[u8] = b"BADCLASS invalid class id\r\n";
pub const CLIENT_ERROR_CRAWLER_SLEEP: &[u8] = b"CLIENT_ERROR sleep must be one second or less\r\n";
pub const ERROR_LRU_PCTS: &[u8] = b"ERROR hot and warm pcts must not exceed 80\r\n";
pub const ERROR_LRU_FACTORS: &[u8] = b"ERROR hot/warm age factors must be greater than 0\r\n";
pub const REASSIGN_SAME: &[u8] = b"SAME src and dst class are identical\r\n";
pub const REASSIGN_BADCLASS: &[u8] = b"BADCLASS invalid src or dst class id\r\n";
pub const REASSIGN_NOSPARE: &[u8] = b"NOSPARE source class has no spare pages\r\n";
pub const BUSY_CRAWLER: &[u8] = b"BUSY currently processing crawler request\r\n";
/// `cache_memlimit` below 8 MB.
pub const MEMLIMIT_TOO_SMALL: &[u8] = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n";
/// `cache_memlimit` above 10^9 MB (the client probably passed bytes).
pub const MEMLIMIT_NOT_BYTES: &[u8] =
    b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n";
/// `shutdown` without `-A`.
pub const ERROR_SHUTDOWN_DISABLED: &[u8] = b"ERROR: shutdown not enabled\r\n";
/// `shutdown <anything but graceful>` with `-A`.
pub const CLIENT_ERROR_SHUTDOWN_MODE: &[u8] = b"CLIENT_ERROR invalid shutdown mode\r\n";
/// A retrieval line longer than `get_line_len_max` (corecache's own bound; memcached has none).
pub const LINE_TOO_LONG: &[u8] = b"SERVER_ERROR line too long\r\n";

/// The longest decimal `u64` (`18446744073709551615`).
const U64_DIGITS_MAX: usize = 20;

/// Appends `n` in decimal.
#[inline]
pub fn decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; U64_DIGITS_MAX];
    let mut start = U64_DIGITS_MAX;
    let mut rest = n;
    loop {
        start = start.saturating_sub(1);
        if let Some(slot) = digits.get_mut(start) {
            // `rest % 10` is below 10, so the cast cannot truncate.
            *slot = b'0'.wrapping_add((rest % 10) as u8);
        }
        rest /= 10;
        if rest == 0 || start == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// `VALUE <key> <client_flags> <bytes>[ <cas>]\r\n<data>\r\n`: one hit of a retrieval reply.
pub fn value(out: &mut Vec<u8>, key: &[u8], client_flags: u32, data: &[u8], cas: Option<u64>) {
    out.reserve(key.len().saturating_add(data.len()).saturating_add(64));
    value_head(out, key, client_flags, data.len(), cas);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The line of a `VALUE` block, before its data: `VALUE <key> <flags> <bytes>[ <cas>]\r\n`.
#[inline(always)]
pub fn value_head(out: &mut Vec<u8>, key: &[u8], client_flags: u32, len: usize, cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    decimal(out, u64::from(client_flags));
    out.push(b' ');
    decimal(out, len as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        decimal(out, cas);
    }
    out.extend_from_slice(b"\r\n");
}

/// `<n>\r\n`: the reply to a successful `incr`/`decr`.
pub fn number(out: &mut Vec<u8>, n: u64) {
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `STAT <name> <value>\r\n`.
pub fn stat(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    number(out, value);
}

/// `STAT <name> <value>\r\n` with a text value.
pub fn stat_str(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The version `version` and `stats` report: the memcached release whose behaviour corecache
/// follows. Clients gate features on it (memccapable relaxes its error checks from 1.6 on,
/// ElastiCache discovery clients send `config get cluster` only from 1.4.14 on), so reporting
/// corecache's own `0.x` made them treat it as an ancient memcached. corecache's own version is
/// in `stats settings` (`corecache_version`) and `corecache --version`.
pub const MEMCACHED_VERSION: &str = "1.6.18";

/// `VERSION <version>\r\n`.
pub fn version(out: &mut Vec<u8>, version: &str) {
    out.extend_from_slice(b"VERSION ");
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composed(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn decimal_matches_to_string_at_edges() {
        let mut edges = vec![0, 1, 9, 10, 11, 99, 100, 101, u64::MAX, u64::MAX - 1];
        let mut power = 1u64;
        while let Some(next) = power.checked_mul(10) {
            edges.extend([power - 1, power, power + 1, next - 1]);
            power = next;
        }
        edges.extend([power - 1, power, power + 1]);
        edges.extend([
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            i64::MAX as u64,
        ]);
        for n in edges {
            assert_eq!(
                composed(|out| decimal(out, n)),
                n.to_string().into_bytes(),
                "{n}"
            );
        }
    }

    #[test]
    fn decimal_appends() {
        let mut out = b"x".to_vec();
        decimal(&mut out, 42);
        number(&mut out, 7);
        assert_eq!(out, b"x427\r\n");
    }

    #[test]
    fn value_without_and_with_cas() {
        assert_eq!(
            composed(|out| value(out, b"foo", 5, b"bar", None)),
            b"VALUE foo 5 3\r\nbar\r\n"
        );
        assert_eq!(
            composed(|out| value(out, b"k", u32::MAX, b"", Some(u64::MAX))),
            b"VALUE k 4294967295 0 18446744073709551615\r\n\r\n"
        );
    }

    #[test]
    fn stats_and_version() {
        assert_eq!(
            composed(|out| stat(out, "curr_items", 0)),
            b"STAT curr_items 0\r\n"
        );
        assert_eq!(
            composed(|out| stat_str(out, "version", "1.6.18")),
            b"STAT version 1.6.18\r\n"
        );
        assert_eq!(
            composed(|out| version(out, "1.6.18")),
            b"VERSION 1.6.18\r\n"
        );
    }

    #[test]
    fn fixed_replies_end_in_crlf() {
        let all = [
            STORED,
            NOT_STORED,
            EXISTS,
            NOT_FOUND,
            DELETED,
            TOUCHED,
            OK,
            END,
            ERROR,
            RESET,
            CLIENT_ERROR_BAD_FORMAT,
            CLIENT_ERROR_BAD_DATA_CHUNK,
            CLIENT_ERROR_INVALID_EXPTIME,
            CLIENT_ERROR_INVALID_DELTA,
            CLIENT_ERROR_NON_NUMERIC,
            CLIENT_ERROR_DELETE_USAGE,
            CLIENT_ERROR_STATS_DETAIL_USAGE,
            SERVER_ERROR_TOO_LARGE,
            SERVER_ERROR_OUT_OF_MEMORY,
            LINE_TOO_LONG,
        ];
        for reply in all {
            assert!(reply.ends_with(b"\r\n"));
            assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1);
        }
    }
}
