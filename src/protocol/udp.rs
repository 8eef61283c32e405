//! memcached's UDP framing (`doc/protocol.txt`, "UDP protocol"), as memcached 1.6.18 frames it.
//!
//! Every datagram starts with an 8-byte frame header: request id, sequence number, total
//! datagrams in the message, and a reserved field, each a big-endian `u16`. A request is one
//! datagram (sequence 0 of 1); anything else is dropped unanswered, as is a datagram of at most
//! 8 bytes.
//!
//! A reply is not one message: memcached frames each of its *response objects* separately. A
//! command's reply is one response object, except a text `get`/`gets`/`gat`/`gats`, which has
//! one per requested key (a miss is an empty one) with `END` on the last. Each object becomes
//! `ceil(len / 1392)` datagrams of at most 1400 bytes (the header counts), numbered from 0, all
//! carrying the request id and that total. Objects are sent when memcached *flushes*: after a
//! retrieval, `mn`, a binary `noop` or error, `quit`, every `-R` requests, and once the datagram
//! holds no further whole request. An empty object (a miss, a quiet binary reply) that is the
//! first of its flush goes out as a bare header with total 0; any other empty object vanishes,
//! and a skipped one (text `noreply`, meta `q`) is never sent.
//!
//! PURE: bytes in, lengths and datagrams out.

use super::binary::opcode;
use super::Keys;

/// Bytes of the frame header.
pub const HEADER_BYTES: usize = 8;
/// Largest datagram memcached sends, header included (`UDP_MAX_PAYLOAD_SIZE`).
pub const DATAGRAM_BYTES_MAX: usize = 1400;
/// Reply bytes per datagram.
pub const DATA_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - HEADER_BYTES;

/// A received datagram, as memcached sorts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// At most [`HEADER_BYTES`] long: dropped unread.
    Short,
    /// Part of a multi-datagram request (its header does not say "1 datagram"): memcached
    /// 1.6.18 drops it without a reply.
    MultiPacket { request_id: u16 },
    /// A request: its id and the commands after the header.
    Request { request_id: u16, payload: &'a [u8] },
}

/// Sorts a received datagram. Only the request id and the total are read: memcached ignores the
/// sequence number and the reserved field of a request.
pub fn parse_datagram(datagram: &[u8]) -> Datagram<'_> {
    let (Some(header), Some(payload)) = (
        datagram.first_chunk::<HEADER_BYTES>(),
        datagram.get(HEADER_BYTES..),
    ) else {
        return Datagram::Short;
    };
    if payload.is_empty() {
        return Datagram::Short;
    }
    let request_id = u16::from_be_bytes([header[0], header[1]]);
    if u16::from_be_bytes([header[4], header[5]]) != 1 {
        return Datagram::MultiPacket { request_id };
    }
    Datagram::Request {
        request_id,
        payload,
    }
}

/// A frame header: `request_id`, `sequence`, `total`, reserved 0.
pub fn header(request_id: u16, sequence: u16, total: u16) -> [u8; HEADER_BYTES] {
    let [r0, r1] = request_id.to_be_bytes();
    let [s0, s1] = sequence.to_be_bytes();
    let [t0, t1] = total.to_be_bytes();
    [r0, r1, s0, s1, t0, t1, 0, 0]
}

/// Datagrams one response object of `len` bytes takes (0 for an empty one), as the header's
/// total says it: memcached caps the count at 65535 (a reply that large numbers its datagrams
/// modulo 65536).
pub fn datagrams_for(len: usize) -> u16 {
    u16::try_from(len.div_ceil(DATA_BYTES_MAX)).unwrap_or(u16::MAX)
}

/// Frames one flush of a reply: `reply` is the response objects' bytes back to back and `resps`
/// their lengths in order (0: an empty object). Calls `emit` with each datagram, header
/// included. Bytes beyond the sum of `resps` are framed as one more object; lengths beyond the
/// reply are cut to it.
pub fn frame(reply: &[u8], resps: &[usize], request_id: u16, mut emit: impl FnMut(&[u8])) {
    let mut buf = [0u8; DATAGRAM_BYTES_MAX];
    let mut rest = reply;
    let mut sent_any = false;
    let mut object = |len: usize, rest: &mut &[u8], sent_any: &mut bool| {
        let (body, after) = rest.split_at(len.min(rest.len()));
        *rest = after;
        if body.is_empty() {
            // Only the first object of a flush goes out empty: once a datagram has gone, memcached
            // retires every empty object queued behind it unsent.
            if !*sent_any {
                emit(&header(request_id, 0, 0));
                *sent_any = true;
            }
            return;
        }
        let total = datagrams_for(body.len());
        for (sequence, chunk) in body.chunks(DATA_BYTES_MAX).enumerate() {
            let head = header(request_id, sequence as u16, total);
            let (h, d) = buf.split_at_mut(HEADER_BYTES);
            h.copy_from_slice(&head);
            let Some(d) = d.get_mut(..chunk.len()) else {
                return;
            };
            d.copy_from_slice(chunk);
            emit(buf.get(..HEADER_BYTES + chunk.len()).unwrap_or_default());
        }
        *sent_any = true;
    };
    for &len in resps {
        object(len, &mut rest, &mut sent_any);
    }
    if !rest.is_empty() {
        object(rest.len(), &mut rest, &mut sent_any);
    }
}

/// Splits a text retrieval reply into memcached's response objects, one per key of `keys` (a
/// miss: 0 bytes) with `END` counted in the last. `None` when `reply` is not `VALUE` blocks of
/// those keys, in order, then `END` (an error reply: one object).
pub fn get_resps(reply: &[u8], keys: Keys<'_>) -> Option<Vec<usize>> {
    let mut lens = Vec::new();
    let mut rest = reply;
    for key in keys.iter() {
        let mut len = 0;
        if let Some((block_key, block_len)) = value_block(rest) {
            // Keys repeated in one request all hit or all miss, so a block belongs to the
            // first key still waiting that has its name.
            if block_key == key {
                len = block_len;
                rest = rest.get(block_len..)?;
            }
        }
        lens.push(len);
    }
    if rest != super::compose::END {
        return None;
    }
    *lens.last_mut()? += rest.len();
    Some(lens)
}

/// The key and total length of the `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n` block at
/// the start of `buf`, if one is there whole.
fn value_block(buf: &[u8]) -> Option<(&[u8], usize)> {
    let line = buf.strip_prefix(b"VALUE ")?;
    let line_len = line.windows(2).position(|w| w == b"\r\n")?;
    let mut tokens = line.get(..line_len)?.split(|&b| b == b' ');
    let key = tokens.next()?;
    let _client_flags = tokens.next()?;
    let bytes: usize = std::str::from_utf8(tokens.next()?).ok()?.parse().ok()?;
    let len = 6usize
        .checked_add(line_len)?
        .checked_add(2)?
        .checked_add(bytes)?
        .checked_add(2)?;
    (len <= buf.len()).then_some((key, len))
}

/// Whether memcached flushes its queued UDP responses right after a binary request with this
/// 24-byte `request` header is answered with `reply` (the response frames, possibly none). It
/// does after `noop` and after an error it sends without swallowing a body, but not after the
/// key-bearing miss of `getk`/`gatk`. (`quit` and protocol errors close, which flushes too.)
pub fn binary_flushes(request: &[u8], reply: &[u8]) -> bool {
    let (Some(request), Some(response)) = (
        request.first_chunk::<24>(),
        reply.first_chunk::<HEADER_BINARY_BYTES>(),
    ) else {
        return false;
    };
    let op = request[1];
    let status = u16::from_be_bytes([response[6], response[7]]);
    let key_len = u32::from(u16::from_be_bytes([request[2], request[3]]));
    let extras_len = u32::from(request[4]);
    let body_len = u32::from_be_bytes([request[8], request[9], request[10], request[11]]);
    match status {
        0 => op == opcode::NOOP,
        // A miss: `getk`/`gatk` answer it with the key and go on; the others send an error.
        STATUS_KEY_ENOENT => !matches!(op, opcode::GETK | opcode::GATK),
        // Too large to store: the value is swallowed first, and a swallow does not flush.
        STATUS_E2BIG => body_len.saturating_sub(key_len + extras_len) == 0,
        // An unknown command swallows its body (SASL commands, unserved: all but the key).
        STATUS_UNKNOWN_COMMAND => {
            let swallow = match op {
                opcode::SASL_LIST_MECHS | opcode::SASL_AUTH | opcode::SASL_STEP => {
                    body_len.saturating_sub(key_len)
                }
                _ => body_len,
            };
            swallow == 0
        }
        _ => true,
    }
}

/// Whether the binary request with this header is `quit` or `quitq` (memcached flushes, then
/// closes).
pub fn binary_is_quit(request: &[u8]) -> bool {
    matches!(request.get(1), Some(&opcode::QUIT) | Some(&opcode::QUITQ))
}

const HEADER_BINARY_BYTES: usize = 24;
const STATUS_KEY_ENOENT: u16 = 0x0001;
const STATUS_E2BIG: u16 = 0x0003;
const STATUS_UNKNOWN_COMMAND: u16 = 0x0081;

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_sorted_as_memcached_sorts_them() {
        assert_eq!(parse_datagram(b""), Datagram::Short);
        assert_eq!(
            parse_datagram(b"\x00\x01\x00\x00\x00\x01\x00"),
            Datagram::Short
        );
        // Exactly a header: memcached reads only datagrams longer than one.
        assert_eq!(
            parse_datagram(b"\x00\x01\x00\x00\x00\x01\x00\x00"),
            Datagram::Short
        );
        assert_eq!(
            parse_datagram(b"\x12\x34\x00\x00\x00\x01\x00\x00get a\r\n"),
            Datagram::Request {
                request_id: 0x1234,
                payload: b"get a\r\n"
            }
        );
        // Sequence and reserved bytes are not looked at.
        assert_eq!(
            parse_datagram(b"\xff\xff\x00\x07\x00\x01\xab\xcdx"),
            Datagram::Request {
                request_id: 0xffff,
                payload: b"x"
            }
        );
        for total in [[0u8, 0], [0, 2], [1, 1], [0xff, 0xff]] {
            let d = [0, 9, 0, 0, total[0], total[1], 0, 0, b'x'];
            assert_eq!(
                parse_datagram(&d),
                Datagram::MultiPacket { request_id: 9 },
                "{total:?}"
            );
        }
    }

    #[test]
    fn headers_are_big_endian() {
        assert_eq!(header(0x1234, 2, 0x0304), [0x12, 0x34, 0, 2, 3, 4, 0, 0]);
        assert_eq!(datagrams_for(0), 0);
        assert_eq!(datagrams_for(1), 1);
        assert_eq!(datagrams_for(DATA_BYTES_MAX), 1);
        assert_eq!(datagrams_for(DATA_BYTES_MAX + 1), 2);
        assert_eq!(datagrams_for(usize::MAX), u16::MAX);
    }

    fn framed(reply: &[u8], resps: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        frame(reply, resps, 7, |d| out.push(d.to_vec()));
        out
    }

    fn head(d: &[u8]) -> (u16, u16, u16) {
        let h = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        assert_eq!(h(6), 0, "reserved");
        (h(0), h(2), h(4))
    }

    #[test]
    fn each_response_object_is_its_own_message() {
        // memcached 1.6.18, `get a b a` with a stored and b missing: [VALUE a], [], [VALUE a END].
        let a = b"VALUE a 0 1\r\nx\r\n";
        let reply = [&a[..], a, b"END\r\n"].concat();
        let out = framed(&reply, &[16, 0, 21]);
        assert_eq!(out.len(), 2, "the empty object behind a sent one vanishes");
        assert_eq!(head(&out[0]), (7, 0, 1));
        assert_eq!(&out[0][8..], a);
        assert_eq!(head(&out[1]), (7, 0, 1));
        assert_eq!(&out[1][8..], &reply[16..]);
        // `get b a`: the empty object heads the flush and goes out as a bare header.
        let out = framed(&reply[16..], &[0, 21]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], header(7, 0, 0));
        // Two empty objects at the head: one bare header.
        let out = framed(b"END\r\n", &[0, 0, 5]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], header(7, 0, 0));
        assert_eq!(&out[1][8..], b"END\r\n");
        // Nothing at all.
        assert!(framed(b"", &[]).is_empty());
    }

    #[test]
    fn a_large_object_is_split_into_numbered_datagrams() {
        let reply: Vec<u8> = (0..5020u32).map(|i| i as u8).collect();
        let out = framed(&reply, &[5020]);
        assert_eq!(out.len(), 4);
        let mut joined = Vec::new();
        for (i, d) in out.iter().enumerate() {
            assert_eq!(head(d), (7, i as u16, 4));
            assert!(d.len() <= DATAGRAM_BYTES_MAX);
            joined.extend_from_slice(&d[8..]);
        }
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            [1400, 1400, 1400, 852]
        );
        assert_eq!(joined, reply);
        // Objects are numbered apart; lengths past the reply are cut, bytes past them framed.
        let out = framed(&reply[..3000], &[1392, 100]);
        assert_eq!(
            out.iter().map(|d| head(d)).collect::<Vec<_>>(),
            [(7, 0, 1), (7, 0, 1), (7, 0, 2), (7, 1, 2)]
        );
        let out = framed(&reply[..10], &[4, 100]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].len(), 8 + 6);
    }

    #[test]
    fn retrieval_replies_split_per_key() {
        let keys = |line: &'static [u8]| Keys::new(line);
        let a = b"VALUE a 0 1\r\nx\r\n";
        let reply = [&a[..], a, b"END\r\n"].concat();
        assert_eq!(get_resps(&reply, keys(b"a b a")), Some(vec![16, 0, 21]));
        assert_eq!(get_resps(b"END\r\n", keys(b"b b")), Some(vec![0, 5]));
        let gets = b"VALUE a 5 3 42\r\nxyz\r\nEND\r\n";
        assert_eq!(get_resps(gets, keys(b"zz a")), Some(vec![0, 26]));
        // Data that looks like a header is data.
        let tricky = b"VALUE a 0 11\r\nVALUE b 0 1\r\nEND\r\n";
        assert_eq!(get_resps(tricky, keys(b"a b")), Some(vec![27, 5]));
        // Not a retrieval reply: no split.
        assert_eq!(
            get_resps(b"CLIENT_ERROR bad command line format\r\n", keys(b"a")),
            None
        );
        assert_eq!(get_resps(b"VALUE a 0 5\r\nx\r\nEND\r\n", keys(b"a")), None);
        assert_eq!(get_resps(&reply, keys(b"a")), None);
        assert_eq!(
            get_resps(b"VALUE a 0 99999999999999999999\r\n", keys(b"a")),
            None
        );
    }

    fn req(op: u8, key_len: u16, extras_len: u8, body_len: u32) -> Vec<u8> {
        let mut h = vec![0x80, op];
        h.extend_from_slice(&key_len.to_be_bytes());
        h.extend_from_slice(&[extras_len, 0, 0, 0]);
        h.extend_from_slice(&body_len.to_be_bytes());
        h.extend_from_slice(&[0; 12]);
        h
    }

    fn resp(op: u8, status: u16) -> Vec<u8> {
        let mut h = vec![0x81, op, 0, 0, 0, 0];
        h.extend_from_slice(&status.to_be_bytes());
        h.extend_from_slice(&[0; 16]);
        h
    }

    #[test]
    fn binary_flush_points_follow_memcached() {
        // Checked against memcached 1.6.18 over UDP (an empty object queued right behind the
        // request shows whether it flushed).
        assert!(binary_flushes(
            &req(opcode::NOOP, 0, 0, 0),
            &resp(opcode::NOOP, 0)
        ));
        assert!(!binary_flushes(
            &req(opcode::GETK, 1, 0, 1),
            &resp(opcode::GETK, 0)
        ));
        assert!(!binary_flushes(&req(opcode::GETQ, 1, 0, 1), b""), "quiet");
        assert!(binary_flushes(
            &req(opcode::GET, 1, 0, 1),
            &resp(opcode::GET, 1)
        ));
        assert!(!binary_flushes(
            &req(opcode::GETK, 1, 0, 1),
            &resp(opcode::GETK, 1)
        ));
        assert!(binary_flushes(
            &req(opcode::DELETE, 1, 0, 1),
            &resp(opcode::DELETE, 1)
        ));
        assert!(!binary_flushes(
            &req(opcode::SET, 1, 8, 19),
            &resp(opcode::SET, 3)
        ));
        assert!(binary_flushes(
            &req(opcode::SET, 1, 8, 9),
            &resp(opcode::SET, 3)
        ));
        assert!(!binary_flushes(&req(0xee, 0, 0, 4), &resp(0xee, 0x81)));
        assert!(binary_flushes(&req(0xee, 0, 0, 0), &resp(0xee, 0x81)));
        assert!(binary_flushes(
            &req(opcode::SASL_AUTH, 5, 0, 5),
            &resp(opcode::SASL_AUTH, 0x81)
        ));
        assert!(!binary_flushes(
            &req(opcode::SASL_AUTH, 5, 0, 9),
            &resp(opcode::SASL_AUTH, 0x81)
        ));
        assert!(!binary_flushes(b"short", &resp(opcode::NOOP, 0)));
        assert!(binary_is_quit(&req(opcode::QUIT, 0, 0, 0)));
        assert!(binary_is_quit(&req(opcode::QUITQ, 0, 0, 0)));
        assert!(!binary_is_quit(&req(opcode::NOOP, 0, 0, 0)));
    }
}
