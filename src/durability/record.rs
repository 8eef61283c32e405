//! Log records: encoding, decoding and checksums. PURE (no files, no clock, no threads).
//!
//! The byte layout is documented in `doc/log-format.md`; this module is its only
//! implementation. Every number is little-endian; no field is a `usize`.
//!
//! A record says what the state of one key *became* (stored with these fields, or deleted), or
//! that a shard flushed, so replaying a record twice, or replaying a prefix of the log, leaves
//! a state the server really had.

use crc32c::{crc32c, crc32c_append};

/// The first 8 bytes of every file in `--log-dir`.
pub const FILE_MAGIC: [u8; 8] = *b"CCLOG\0\r\n";
/// The file format version this build writes (it reads version 1 logs too).
pub const FILE_VERSION: u16 = 2;
/// The first format version (one log file, `corecache.log`, no snapshots).
pub const FILE_VERSION_1: u16 = 1;
/// Bytes of a version 1 file header: magic, version, reserved, checksum.
pub const FILE_HEADER_BYTES_V1: usize = 16;
/// Bytes of a version 2 file header: the version 1 fields (the reserved field now the file's
/// kind), then the generation, the shard count, reserved, and a checksum of all before it.
pub const FILE_HEADER_BYTES: usize = 32;

/// The first 4 bytes of every record (lets replay find the next record after a damaged one).
pub const RECORD_MAGIC: [u8; 4] = *b"CCr1";
/// Bytes before a record's body: magic, body length, checksum.
pub const RECORD_HEADER_BYTES: usize = 12;
/// The record layout version this build writes (byte 1 of the body).
pub const RECORD_VERSION: u8 = 1;
/// Bytes of a body before its kind-specific part: kind, version, key length, reserved, time.
const BODY_COMMON_BYTES: usize = 16;
/// Bytes of an item record's fixed fields after the common part.
const ITEM_FIXED_BYTES: usize = 28;
/// Bytes of a flush record's fields after the common part.
const FLUSH_FIXED_BYTES: usize = 12;
/// The longest key.
pub const KEY_BYTES_MAX: usize = 250;
/// The largest body a reader accepts: an item record with the longest key and a value of
/// `-I`'s upper bound (1 GiB). Anything longer is damage, not a record.
pub const BODY_BYTES_MAX: usize = BODY_COMMON_BYTES + ITEM_FIXED_BYTES + KEY_BYTES_MAX + (1 << 30);

const _: () = assert!(FILE_HEADER_BYTES_V1 == 8 + 2 + 2 + 4);
const _: () = assert!(FILE_HEADER_BYTES == FILE_HEADER_BYTES_V1 + 8 + 2 + 2 + 4);
const _: () = assert!(BODY_COMMON_BYTES == 1 + 1 + 2 + 4 + 8);
const _: () = assert!(BODY_BYTES_MAX < u32::MAX as usize);

/// Record kinds (byte 0 of the body).
const KIND_ITEM: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_FLUSH: u8 = 3;
const KIND_SNAPSHOT_END: u8 = 4;
/// Bytes of a snapshot end record's fields after the common part.
const SNAPSHOT_END_FIXED_BYTES: usize = 8;

/// `item_bits`: the item was invalidated by `md ... I` (meta's stale mark).
pub const ITEM_BIT_STALE: u8 = 1;
/// `item_bits`: the key was stored base64-encoded (`ms ... b`).
pub const ITEM_BIT_KEY_BINARY: u8 = 2;

/// An item as a record stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemRecord<'a> {
    pub key: &'a [u8],
    pub client_flags: u32,
    /// [`ITEM_BIT_STALE`], [`ITEM_BIT_KEY_BINARY`].
    pub item_bits: u8,
    /// Unix seconds at which the item dies; 0: never.
    pub expires_unix: u64,
    pub cas: u64,
    pub value: &'a [u8],
}

/// A flush as a record stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRecord {
    /// Unix seconds from which items stored before the flush are invalid.
    pub at_unix: u64,
    /// The shard that flushed, and how many shards the server had.
    pub shard: u16,
    pub shard_count: u16,
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// The key's item is now this one.
    Item(ItemRecord<'a>),
    /// The key has no item now.
    Delete { key: &'a [u8] },
    /// A shard ran `flush_all`.
    Flush(FlushRecord),
    /// The last record of a complete snapshot: `records` records precede it in the file.
    SnapshotEnd { records: u64 },
}

/// A decoded record plus the Unix second its shard recorded it at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub record: Record<'a>,
    pub time_unix: u64,
}

impl Record<'_> {
    /// The key a record is about (`None` for a flush).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Record::Item(item) => Some(item.key),
            Record::Delete { key } => Some(key),
            Record::Flush(_) | Record::SnapshotEnd { .. } => None,
        }
    }
}

/// What a file in `--log-dir` holds (version 2 header, bytes 10..12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A log segment: records in the order they were written.
    Segment,
    /// A snapshot: every live item of every shard, then an end record.
    Snapshot,
    /// `corecache.log` in a version 2 directory: no records, it marks the directory as
    /// version 2 (so a build that reads only version 1 refuses it instead of starting empty).
    Marker,
}

impl FileKind {
    fn code(self) -> u16 {
        match self {
            FileKind::Segment => 1,
            FileKind::Snapshot => 2,
            FileKind::Marker => 3,
        }
    }

    fn from_code(code: u16) -> Option<FileKind> {
        match code {
            1 => Some(FileKind::Segment),
            2 => Some(FileKind::Snapshot),
            3 => Some(FileKind::Marker),
            _ => None,
        }
    }
}

/// A checked file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// [`FILE_VERSION_1`] (a log, generation 0) or [`FILE_VERSION`].
    pub version: u16,
    pub kind: FileKind,
    /// Segments and snapshots are numbered; a snapshot of generation `g` holds what the
    /// segments before `g` hold, and replay continues with segment `g`.
    pub generation: u64,
    /// A snapshot: the shard count of the server that wrote it (0 otherwise).
    pub shard_count: u16,
    /// Where the records start: the header's length.
    pub bytes: usize,
}

/// The version 2 header of a new file.
pub fn file_header(kind: FileKind, generation: u64, shard_count: u16) -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0u8; FILE_HEADER_BYTES];
    h[..8].copy_from_slice(&FILE_MAGIC);
    h[8..10].copy_from_slice(&FILE_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&kind.code().to_le_bytes());
    // The version 1 checksum place keeps a checksum of the first 12 bytes, so a version 1
    // reader reports the version instead of a damaged header.
    let crc = crc32c(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h[16..24].copy_from_slice(&generation.to_le_bytes());
    h[24..26].copy_from_slice(&shard_count.to_le_bytes());
    let crc = crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The version 1 header (what a version 1 build wrote; tests build old logs with it).
pub fn file_header_v1() -> [u8; FILE_HEADER_BYTES_V1] {
    let mut h = [0u8; FILE_HEADER_BYTES_V1];
    h[..8].copy_from_slice(&FILE_MAGIC);
    h[8..10].copy_from_slice(&FILE_VERSION_1.to_le_bytes());
    let crc = crc32c(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a file header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header needs (a file whose creation was cut short).
    Short,
    /// Not a corecache log (or a damaged header).
    NotALog,
    /// A file of another format version.
    Version(u16),
}

/// Checks the header at the start of `bytes` (version 1 or 2).
pub fn check_file_header(bytes: &[u8]) -> Result<FileHeader, HeaderError> {
    let Some(h) = bytes.get(..FILE_HEADER_BYTES_V1) else {
        return Err(HeaderError::Short);
    };
    if h[..8] != FILE_MAGIC {
        return Err(HeaderError::NotALog);
    }
    let crc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if crc != crc32c(&h[..12]) {
        return Err(HeaderError::NotALog);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    let code = u16::from_le_bytes([h[10], h[11]]);
    match version {
        FILE_VERSION_1 if code == 0 => Ok(FileHeader {
            version,
            kind: FileKind::Segment,
            generation: 0,
            shard_count: 0,
            bytes: FILE_HEADER_BYTES_V1,
        }),
        FILE_VERSION => {
            let Some(h) = bytes.get(..FILE_HEADER_BYTES) else {
                return Err(HeaderError::Short);
            };
            let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
            if crc != crc32c(&h[..28]) {
                return Err(HeaderError::NotALog);
            }
            Ok(FileHeader {
                version,
                kind: FileKind::from_code(code).ok_or(HeaderError::NotALog)?,
                generation: u64_at(h, 16).ok_or(HeaderError::NotALog)?,
                shard_count: u16::from_le_bytes([h[24], h[25]]),
                bytes: FILE_HEADER_BYTES,
            })
        }
        FILE_VERSION_1 => Err(HeaderError::NotALog),
        other => Err(HeaderError::Version(other)),
    }
}

/// Appends an item record.
pub fn encode_item(out: &mut Vec<u8>, item: &ItemRecord<'_>, time_unix: u64) {
    assert!(!item.key.is_empty() && item.key.len() <= KEY_BYTES_MAX);
    let value_len = u32::try_from(item.value.len()).expect("value length fits a record");
    let start = begin(out, KIND_ITEM, item.key.len(), time_unix);
    out.extend_from_slice(&item.client_flags.to_le_bytes());
    out.push(item.item_bits);
    out.extend_from_slice(&[0u8; 3]);
    out.extend_from_slice(&item.expires_unix.to_le_bytes());
    out.extend_from_slice(&item.cas.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(item.key);
    out.extend_from_slice(item.value);
    finish(out, start);
}

/// Appends a delete record.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8], time_unix: u64) {
    assert!(!key.is_empty() && key.len() <= KEY_BYTES_MAX);
    let start = begin(out, KIND_DELETE, key.len(), time_unix);
    out.extend_from_slice(key);
    finish(out, start);
}

/// Appends a flush record.
pub fn encode_flush(out: &mut Vec<u8>, flush: &FlushRecord, time_unix: u64) {
    let start = begin(out, KIND_FLUSH, 0, time_unix);
    out.extend_from_slice(&flush.at_unix.to_le_bytes());
    out.extend_from_slice(&flush.shard.to_le_bytes());
    out.extend_from_slice(&flush.shard_count.to_le_bytes());
    finish(out, start);
}

/// Appends a snapshot's end record: `records` records precede it in the file.
pub fn encode_snapshot_end(out: &mut Vec<u8>, records: u64, time_unix: u64) {
    let start = begin(out, KIND_SNAPSHOT_END, 0, time_unix);
    out.extend_from_slice(&records.to_le_bytes());
    finish(out, start);
}

/// Writes the record header (length and checksum left zero) and the body's common part;
/// returns where the record starts.
fn begin(out: &mut Vec<u8>, kind: u8, key_len: usize, time_unix: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&[0u8; 8]);
    out.push(kind);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&(key_len as u16).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&time_unix.to_le_bytes());
    start
}

/// Fills in the body length and the checksum of the record that starts at `start`.
fn finish(out: &mut [u8], start: usize) {
    let body_len = out.len() - start - RECORD_HEADER_BYTES;
    let len_bytes = (body_len as u32).to_le_bytes();
    out[start + 4..start + 8].copy_from_slice(&len_bytes);
    let crc = checksum(&len_bytes, &out[start + RECORD_HEADER_BYTES..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C over the body length's bytes, then the body.
fn checksum(len_bytes: &[u8; 4], body: &[u8]) -> u32 {
    crc32c_append(crc32c(len_bytes), body)
}

/// What [`parse_header`] found at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// A plausible record header whose body is `body_len` bytes.
    Body { body_len: usize, crc: u32 },
    /// Fewer than [`RECORD_HEADER_BYTES`] bytes.
    Short,
    /// No record starts here.
    Bad,
}

/// Reads a record header (magic, length within bounds).
pub fn parse_header(bytes: &[u8]) -> HeaderCheck {
    let Some(h) = bytes.get(..RECORD_HEADER_BYTES) else {
        return HeaderCheck::Short;
    };
    if h[..4] != RECORD_MAGIC {
        return HeaderCheck::Bad;
    }
    let body_len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if !(BODY_COMMON_BYTES..=BODY_BYTES_MAX).contains(&body_len) {
        return HeaderCheck::Bad;
    }
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    HeaderCheck::Body { body_len, crc }
}

/// Checks a body against its header's checksum and decodes it; `None` if it is damaged.
pub fn decode_body(body: &[u8], crc: u32) -> Option<Decoded<'_>> {
    let len_bytes = (body.len() as u32).to_le_bytes();
    if checksum(&len_bytes, body) != crc {
        return None;
    }
    let common = body.get(..BODY_COMMON_BYTES)?;
    let (kind, version) = (common[0], common[1]);
    if version != RECORD_VERSION {
        return None;
    }
    let key_len = usize::from(u16::from_le_bytes([common[2], common[3]]));
    let time_unix = u64_at(common, 8)?;
    let rest = &body[BODY_COMMON_BYTES..];
    let record = match kind {
        KIND_ITEM => {
            let fixed = rest.get(..ITEM_FIXED_BYTES)?;
            let value_len = u32_at(fixed, 24)? as usize;
            let tail = &rest[ITEM_FIXED_BYTES..];
            if key_len == 0 || key_len > KEY_BYTES_MAX || tail.len() != key_len + value_len {
                return None;
            }
            Record::Item(ItemRecord {
                key: &tail[..key_len],
                client_flags: u32_at(fixed, 0)?,
                item_bits: fixed[4],
                expires_unix: u64_at(fixed, 8)?,
                cas: u64_at(fixed, 16)?,
                value: &tail[key_len..],
            })
        }
        KIND_DELETE => {
            if key_len == 0 || key_len > KEY_BYTES_MAX || rest.len() != key_len {
                return None;
            }
            Record::Delete { key: rest }
        }
        KIND_FLUSH => {
            if rest.len() != FLUSH_FIXED_BYTES {
                return None;
            }
            Record::Flush(FlushRecord {
                at_unix: u64_at(rest, 0)?,
                shard: u16::from_le_bytes([rest[8], rest[9]]),
                shard_count: u16::from_le_bytes([rest[10], rest[11]]),
            })
        }
        KIND_SNAPSHOT_END => {
            if rest.len() != SNAPSHOT_END_FIXED_BYTES {
                return None;
            }
            Record::SnapshotEnd {
                records: u64_at(rest, 0)?,
            }
        }
        _ => return None,
    };
    Some(Decoded { record, time_unix })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Decodes the one record at the start of `bytes`; returns it and its length.
pub fn decode(bytes: &[u8]) -> Option<(Decoded<'_>, usize)> {
    let HeaderCheck::Body { body_len, crc } = parse_header(bytes) else {
        return None;
    };
    let end = RECORD_HEADER_BYTES + body_len;
    let body = bytes.get(RECORD_HEADER_BYTES..end)?;
    decode_body(body, crc).map(|d| (d, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &'static [u8], value: &'static [u8]) -> ItemRecord<'static> {
        ItemRecord {
            key,
            client_flags: 0xdead_beef,
            item_bits: ITEM_BIT_STALE,
            expires_unix: 1_900_000_000,
            cas: 42,
            value,
        }
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode_item(&mut buf, &item(b"k", b"hello"), 7);
        encode_delete(&mut buf, b"gone", 8);
        let flush = FlushRecord {
            at_unix: 1_800_000_000,
            shard: 1,
            shard_count: 2,
        };
        encode_flush(&mut buf, &flush, 9);
        let (a, n1) = decode(&buf).unwrap();
        assert_eq!(a.record, Record::Item(item(b"k", b"hello")));
        assert_eq!(a.time_unix, 7);
        let (b, n2) = decode(&buf[n1..]).unwrap();
        assert_eq!(b.record, Record::Delete { key: b"gone" });
        let (c, n3) = decode(&buf[n1 + n2..]).unwrap();
        assert_eq!(c.record, Record::Flush(flush));
        assert_eq!(c.time_unix, 9);
        assert_eq!(n1 + n2 + n3, buf.len());
    }

    /// The documented layout (doc/log-format.md), byte by byte, for a delete of `ab`.
    #[test]
    fn the_delete_layout_is_as_documented() {
        let mut buf = Vec::new();
        encode_delete(&mut buf, b"ab", 0x0102_0304_0506_0708);
        assert_eq!(buf.len(), 12 + 16 + 2);
        assert_eq!(&buf[..4], b"CCr1");
        assert_eq!(&buf[4..8], &18u32.to_le_bytes());
        assert_eq!(buf[12], KIND_DELETE);
        assert_eq!(buf[13], RECORD_VERSION);
        assert_eq!(&buf[14..16], &2u16.to_le_bytes());
        assert_eq!(&buf[16..20], &[0, 0, 0, 0]);
        assert_eq!(&buf[20..28], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&buf[28..], b"ab");
        let crc = crc32c_append(crc32c(&buf[4..8]), &buf[12..]);
        assert_eq!(&buf[8..12], &crc.to_le_bytes());
    }

    #[test]
    fn the_item_layout_is_as_documented() {
        let mut buf = Vec::new();
        encode_item(&mut buf, &item(b"key", b"vv"), 1);
        assert_eq!(buf.len(), 12 + 16 + 28 + 3 + 2);
        let body = &buf[12..];
        assert_eq!(&body[16..20], &0xdead_beefu32.to_le_bytes());
        assert_eq!(body[20], ITEM_BIT_STALE);
        assert_eq!(&body[21..24], &[0, 0, 0]);
        assert_eq!(&body[24..32], &1_900_000_000u64.to_le_bytes());
        assert_eq!(&body[32..40], &42u64.to_le_bytes());
        assert_eq!(&body[40..44], &2u32.to_le_bytes());
        assert_eq!(&body[44..], b"keyvv");
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode_item(&mut buf, &item(b"key", b"value"), 3);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(decode(&damaged).is_none(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let mut buf = Vec::new();
        encode_item(&mut buf, &item(b"key", b"value"), 3);
        for len in 0..buf.len() {
            assert!(decode(&buf[..len]).is_none(), "length {len}");
        }
    }

    #[test]
    fn file_headers_are_checked() {
        let v1 = file_header_v1();
        let read = check_file_header(&v1).unwrap();
        assert_eq!(
            (read.version, read.kind, read.generation),
            (1, FileKind::Segment, 0)
        );
        assert_eq!(read.bytes, 16);
        let mut other = v1;
        other[8] = 2;
        assert_eq!(check_file_header(&other), Err(HeaderError::NotALog));
        let mut wrong = v1;
        wrong[0] = b'X';
        assert_eq!(check_file_header(&wrong), Err(HeaderError::NotALog));
        assert_eq!(check_file_header(&v1[..15]), Err(HeaderError::Short));
        let v2 = file_header(FileKind::Snapshot, 0x0102_0304_0506_0708, 3);
        let read = check_file_header(&v2).unwrap();
        assert_eq!(read.kind, FileKind::Snapshot);
        assert_eq!(
            (read.generation, read.shard_count),
            (0x0102_0304_0506_0708, 3)
        );
        assert_eq!(read.bytes, 32);
        assert_eq!(check_file_header(&v2[..31]), Err(HeaderError::Short));
        for byte in 0..FILE_HEADER_BYTES {
            let mut damaged = v2;
            damaged[byte] ^= 0x10;
            assert!(check_file_header(&damaged).is_err(), "byte {byte}");
        }
        // A version 1 reader checks bytes 0..16 alone: it finds version 2 there.
        assert_eq!(crc32c(&v2[..12]).to_le_bytes(), v2[12..16]);
        let mut future = v2;
        future[8] = 9;
        let crc = crc32c(&future[..12]);
        future[12..16].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(check_file_header(&future), Err(HeaderError::Version(9)));
    }

    /// The version 2 header, byte by byte (doc/log-format.md).
    #[test]
    fn the_v2_header_layout_is_as_documented() {
        let h = file_header(FileKind::Segment, 7, 0);
        assert_eq!(&h[..8], b"CCLOG\0\r\n");
        assert_eq!(&h[8..10], &[2, 0]);
        assert_eq!(&h[10..12], &[1, 0]);
        assert_eq!(&h[16..24], &7u64.to_le_bytes());
        assert_eq!(&h[24..28], &[0, 0, 0, 0]);
        assert_eq!(&h[28..32], &crc32c(&h[..28]).to_le_bytes());
        assert_eq!(file_header(FileKind::Marker, 0, 0)[10], 3);
    }

    #[test]
    fn the_snapshot_end_layout_is_as_documented() {
        let mut buf = Vec::new();
        encode_snapshot_end(&mut buf, 0x1122, 5);
        assert_eq!(buf.len(), 12 + 16 + 8);
        assert_eq!(buf[12], KIND_SNAPSHOT_END);
        assert_eq!(&buf[12 + 16..], &0x1122u64.to_le_bytes());
        let (d, n) = decode(&buf).unwrap();
        assert_eq!(d.record, Record::SnapshotEnd { records: 0x1122 });
        assert_eq!(n, buf.len());
    }
}
