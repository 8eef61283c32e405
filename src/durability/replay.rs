//! Reading a log back: every intact record in order, damaged stretches skipped.
//!
//! A record is intact when its header is plausible (magic, body length within bounds) and its
//! CRC32C matches. At anything else the reader looks for the next intact record, byte by byte
//! from the damaged one's start (every record begins with the 4-byte magic, so candidates are
//! cheap to rule out), and counts the bytes it passed over. Damage with no intact record after
//! it is the torn tail of a write cut short (a crash, a full disk): [`Scan::tail_from`] says
//! where it starts so the caller can truncate the file there before appending again.
//!
//! Generic over [`Read`], so the unit tests (and fuzzing) run on bytes in memory.

use std::io::{self, Read};

use super::record::{self, Decoded, HeaderCheck, RECORD_HEADER_BYTES, RECORD_MAGIC};

/// Bytes read from the file at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// What a pass over a log found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Intact records.
    pub records: u64,
    /// Bytes of damaged stretches passed over, a torn tail included.
    pub skipped_bytes: u64,
    /// Damaged stretches (a torn tail is one).
    pub damaged: u64,
    /// Where an unreadable tail starts (file offset), if the log ends in one.
    pub tail_from: Option<u64>,
    /// The offset just past the last byte read.
    pub end: u64,
}

/// Reads records from `input`, which is positioned at file offset `offset` (just past the file
/// header), calling `each` with every intact record and its offset, up to `limit` bytes of
/// input (the file length when the pass started).
pub fn scan<R: Read>(
    input: &mut R,
    offset: u64,
    limit: u64,
    mut each: impl FnMut(&Decoded<'_>, u64),
) -> io::Result<Scan> {
    let mut r = Window {
        input,
        buf: Vec::new(),
        start: 0,
        base: offset,
        left: limit.saturating_sub(offset),
    };
    let mut out = Scan::default();
    // Where the damaged stretch being passed over began.
    let mut damaged_at: Option<u64> = None;
    loop {
        r.want(RECORD_HEADER_BYTES)?;
        let here = r.offset();
        let step = match record::parse_header(r.bytes()) {
            HeaderCheck::Short => break,
            HeaderCheck::Bad => None,
            HeaderCheck::Body { body_len, crc } => {
                let len = RECORD_HEADER_BYTES + body_len;
                r.want(len)?;
                match r.bytes().get(RECORD_HEADER_BYTES..len) {
                    Some(body) => record::decode_body(body, crc).map(|d| {
                        if let Some(at) = damaged_at.take() {
                            out.skipped_bytes += here - at;
                            out.damaged += 1;
                        }
                        each(&d, here);
                        len
                    }),
                    None => None,
                }
            }
        };
        match step {
            Some(len) => {
                out.records += 1;
                r.advance(len);
            }
            None => {
                damaged_at.get_or_insert(here);
                r.advance(1);
                r.skip_to_magic()?;
            }
        }
    }
    // Whatever is left (a partial header, or damage with nothing intact after it) is the tail.
    let end = r.offset() + r.bytes().len() as u64;
    let tail = damaged_at.unwrap_or(r.offset());
    if tail < end {
        out.skipped_bytes += end - tail;
        out.damaged += 1;
        out.tail_from = Some(tail);
    }
    out.end = end;
    Ok(out)
}

/// A sliding window over the input.
struct Window<'r, R> {
    input: &'r mut R,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    start: usize,
    /// File offset of `buf[0]`.
    base: u64,
    /// Input bytes not read yet (the pass reads no further).
    left: u64,
}

impl<R: Read> Window<'_, R> {
    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Reads until at least `n` unread bytes are buffered or the input ends.
    fn want(&mut self, n: usize) -> io::Result<()> {
        if self.buf.len() - self.start >= n {
            return Ok(());
        }
        // Drop what has been read, keeping the buffer's allocation.
        self.buf.drain(..self.start);
        self.base += self.start as u64;
        self.start = 0;
        while self.buf.len() < n && self.left > 0 {
            let chunk = (n - self.buf.len()).max(READ_CHUNK_BYTES) as u64;
            let take = chunk.min(self.left) as usize;
            let old = self.buf.len();
            self.buf.resize(old + take, 0);
            let got = match self.input.read(&mut self.buf[old..]) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + got);
            if got == 0 {
                // The file is shorter than it was: stop here.
                self.left = 0;
            }
            self.left -= (got as u64).min(self.left);
        }
        Ok(())
    }

    /// Moves to the next occurrence of the record magic, or to the end of the input.
    fn skip_to_magic(&mut self) -> io::Result<()> {
        loop {
            let found = self
                .bytes()
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC);
            match found {
                Some(at) => {
                    self.advance(at);
                    return Ok(());
                }
                None => {
                    // Keep the last bytes: a magic may straddle the next read.
                    let keep = (RECORD_MAGIC.len() - 1).min(self.bytes().len());
                    self.advance(self.bytes().len() - keep);
                    if self.left == 0 {
                        return Ok(());
                    }
                    self.want(keep + 1)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{encode_delete, encode_item, ItemRecord, Record};
    use super::*;

    fn log_of(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(buf.len());
            let key = format!("key{i}");
            let value = vec![b'v'; i * 7];
            encode_item(
                &mut buf,
                &ItemRecord {
                    key: key.as_bytes(),
                    client_flags: i as u32,
                    item_bits: 0,
                    expires_unix: 0,
                    cas: i as u64 + 1,
                    value: &value,
                },
                100,
            );
        }
        (buf, starts)
    }

    fn read_keys(bytes: &[u8]) -> (Vec<String>, Scan) {
        let mut keys = Vec::new();
        let scan = scan(&mut &bytes[..], 16, 16 + bytes.len() as u64, |d, _| {
            if let Some(k) = d.record.key() {
                keys.push(String::from_utf8(k.to_vec()).unwrap());
            }
        })
        .unwrap();
        (keys, scan)
    }

    #[test]
    fn a_clean_log_reads_whole() {
        let (buf, _) = log_of(20);
        let (keys, s) = read_keys(&buf);
        assert_eq!(keys.len(), 20);
        assert_eq!(s.records, 20);
        assert_eq!(s.skipped_bytes, 0);
        assert_eq!(s.tail_from, None);
        assert_eq!(s.end, 16 + buf.len() as u64);
    }

    #[test]
    fn every_torn_tail_stops_at_the_last_whole_record() {
        let (buf, starts) = log_of(5);
        for cut in 0..buf.len() {
            let (keys, s) = read_keys(&buf[..cut]);
            let whole = starts.iter().filter(|&&st| st < cut).count();
            let intact = if starts.contains(&cut) || cut == 0 {
                whole
            } else {
                whole - 1
            };
            assert_eq!(keys.len(), intact, "cut at {cut}");
            let good_end = starts.get(intact).copied().unwrap_or(buf.len());
            if good_end < cut {
                assert_eq!(s.tail_from, Some(16 + good_end as u64), "cut at {cut}");
                assert_eq!(s.skipped_bytes, (cut - good_end) as u64);
            } else {
                assert_eq!(s.tail_from, None);
            }
        }
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_the_rest_read() {
        let (mut buf, starts) = log_of(6);
        // Damage the value of record 2.
        let at = starts[3] - 3;
        buf[at] ^= 0x55;
        let (keys, s) = read_keys(&buf);
        assert_eq!(keys, ["key0", "key1", "key3", "key4", "key5"]);
        assert_eq!(s.skipped_bytes, (starts[3] - starts[2]) as u64);
        assert_eq!(s.damaged, 1);
        assert_eq!(s.tail_from, None);
        // A damaged length field is skipped the same way.
        let (mut buf, starts) = log_of(6);
        buf[starts[1] + 5] = 0xff;
        let (keys, _) = read_keys(&buf);
        assert_eq!(keys, ["key0", "key2", "key3", "key4", "key5"]);
    }

    #[test]
    fn records_larger_than_a_read_chunk_are_read() {
        let mut buf = Vec::new();
        let value = vec![b'x'; READ_CHUNK_BYTES * 2 + 5];
        encode_item(
            &mut buf,
            &ItemRecord {
                key: b"big",
                client_flags: 0,
                item_bits: 0,
                expires_unix: 0,
                cas: 1,
                value: &value,
            },
            1,
        );
        encode_delete(&mut buf, b"big", 2);
        let mut seen = Vec::new();
        let s = scan(&mut &buf[..], 16, 16 + buf.len() as u64, |d, _| {
            seen.push(matches!(d.record, Record::Item(i) if i.value.len() == value.len()))
        })
        .unwrap();
        assert_eq!(seen, [true, false]);
        assert_eq!(s.records, 2);
    }

    #[test]
    fn garbage_is_all_skipped() {
        let junk: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let (keys, s) = read_keys(&junk);
        assert!(keys.is_empty());
        assert_eq!(s.skipped_bytes, junk.len() as u64);
        assert_eq!(s.tail_from, Some(16));
    }

    /// A fixed-seed xorshift64* generator: one seed drives every damage.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// A log of every record kind, and each record's byte range.
    fn mixed_log() -> (Vec<u8>, Vec<(usize, usize)>) {
        use super::super::record::{encode_flush, encode_snapshot_end, FlushRecord};
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for i in 0..40u32 {
            let start = buf.len();
            let key = format!("key-{i}");
            match i % 5 {
                3 => encode_delete(&mut buf, key.as_bytes(), u64::from(i)),
                4 if i % 10 == 4 => {
                    let flush = FlushRecord {
                        at_unix: u64::from(i) + 5,
                        shard: (i % 3) as u16,
                        shard_count: 3,
                    };
                    encode_flush(&mut buf, &flush, u64::from(i));
                }
                4 => encode_snapshot_end(&mut buf, u64::from(i), u64::from(i)),
                _ => {
                    // Values that hold the record magic too, to tempt the resynchronisation.
                    let mut value = vec![b'0' + (i % 10) as u8; (i as usize * 13) % 200];
                    if i % 7 == 0 {
                        value.extend_from_slice(&RECORD_MAGIC);
                    }
                    encode_item(
                        &mut buf,
                        &ItemRecord {
                            key: key.as_bytes(),
                            client_flags: i,
                            item_bits: (i % 4) as u8,
                            expires_unix: u64::from(i) * 1000,
                            cas: u64::from(i) + 1,
                            value: &value,
                        },
                        u64::from(i),
                    );
                }
            }
            ranges.push((start, buf.len()));
        }
        (buf, ranges)
    }

    /// One damage of `good`; returns the damaged bytes and the first offset that differs.
    fn damage(good: &[u8], rng: &mut Rng) -> (Vec<u8>, usize) {
        let mut bad = good.to_vec();
        match rng.below(5) {
            0 => {
                // Flip a few bytes.
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(bad.len());
                    bad[at] ^= 1 + rng.below(255) as u8;
                }
            }
            1 => {
                // Splice: copy a stretch of the log over another place.
                let from = rng.below(bad.len());
                let len = 1 + rng.below(300).min(bad.len() - from - 1);
                let to = rng.below(bad.len() - len);
                let piece = good[from..from + len].to_vec();
                bad[to..to + len].copy_from_slice(&piece);
            }
            2 => {
                // Splice: insert a stretch of the log elsewhere (a record twice, half a one).
                let from = rng.below(bad.len());
                let len = 1 + rng.below(300).min(bad.len() - from - 1);
                let to = rng.below(bad.len());
                let piece = good[from..from + len].to_vec();
                bad.splice(to..to, piece);
            }
            3 => {
                // Cut a stretch out.
                let from = rng.below(bad.len());
                let len = 1 + rng.below(200).min(bad.len() - from - 1);
                bad.drain(from..from + len);
            }
            _ => {
                // Random garbage over a stretch, then a torn tail.
                let at = rng.below(bad.len());
                for b in bad.iter_mut().skip(at).take(1 + rng.below(64)) {
                    *b = rng.next() as u8;
                }
                let cut = at + rng.below(bad.len() - at);
                bad.truncate(cut.max(1));
            }
        }
        let first = good
            .iter()
            .zip(bad.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(good.len().min(bad.len()));
        (bad, first)
    }

    /// Replays `bad` and checks: every record loaded is one of the log's own records, byte for
    /// byte (so its checksum held), and every record that ends before `first` is loaded, in
    /// order, where it was.
    fn check_replay(bad: &[u8], first: usize, originals: &[&[u8]], ranges: &[(usize, usize)]) {
        let mut loaded = Vec::new();
        let s = scan(&mut &bad[..], 0, bad.len() as u64, |_, at| {
            loaded.push(at as usize)
        })
        .unwrap();
        for &at in &loaded {
            let (_, len) = record::decode(&bad[at..]).expect("a loaded record decodes");
            let bytes = &bad[at..at + len];
            assert!(
                originals.contains(&bytes),
                "a record that was never written, at {at}"
            );
        }
        let kept: Vec<usize> = ranges
            .iter()
            .filter(|&&(_, end)| end <= first)
            .map(|&(start, _)| start)
            .collect();
        assert_eq!(
            &loaded[..kept.len().min(loaded.len())],
            &kept[..],
            "first damage {first}"
        );
        assert!(loaded.len() >= kept.len(), "first damage {first}");
        assert!(s.end <= bad.len() as u64);
    }

    #[test]
    fn damaged_logs_never_load_a_bad_record_and_keep_what_precedes_the_damage() {
        let (good, ranges) = mixed_log();
        let originals: Vec<&[u8]> = ranges.iter().map(|&(a, b)| &good[a..b]).collect();
        // Every cut in the first records' range, and a sample after it.
        for cut in (0..ranges[6].1).chain((ranges[6].1..good.len()).step_by(7)) {
            check_replay(&good[..cut], cut, &originals, &ranges);
        }
        let seed = 0x5eed_c0de_cafe_f00d;
        let mut rng = Rng(seed);
        for round in 0..4000 {
            let (bad, first) = damage(&good, &mut rng);
            let result =
                std::panic::catch_unwind(|| check_replay(&bad, first, &originals, &ranges));
            assert!(result.is_ok(), "seed={seed:#x} round={round}");
        }
    }
}
