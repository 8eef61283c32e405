//! Item layout inside a chunk: a compact header, then the key, then the value.
//!
//! All fields are little-endian and unaligned (read with `from_le_bytes`, no `unsafe`). The
//! header has a fixed 16-byte part and two optional 4-byte fields selected by the state byte:
//!
//! ```text
//! offset  size  field
//! 0       1     state: bit0 LINKED, bit1 FETCHED, bits2-3 CLOCK count (0..=3),
//!               bit4 HAS_CLIENT_FLAGS, bit5 HAS_EXPIRES, bit6 LONG_VALUE_LEN,
//!               bit7 KEY_BINARY (stored by a meta `ms ... b`: meta replies echo the key in base64)
//! 1       1     key_len (1..=250)
//! 2       2|4   value_len: u16, or u32 when LONG_VALUE_LEN
//! +0      8     seq: the per-shard store sequence; it is also the item's cas
//! +8      4     last_access (Instant32) in bits 0-29; bit30 STALE, bit31 TOKEN_SENT (meta
//!               protocol: marked stale by `md I`, a win token was sent by `mg`)
//! +12     4     client_flags        (only when HAS_CLIENT_FLAGS, i.e. nonzero)
//! +12|16  4     expires_at (0: never) (only when HAS_EXPIRES)
//! then          key, value
//! ```
//!
//! So an item with zero client_flags, no expiry and a value under 64 KiB costs 16 bytes of header
//! (memcached: 48 to 56). A free chunk has state 0 (not LINKED) and keeps the index of the next
//! free chunk of its page in bytes 4..8.

use crate::clock::Instant32;

/// The item is in the hash table.
pub const LINKED: u8 = 1 << 0;
/// The item has been read since it was stored.
pub const FETCHED: u8 = 1 << 1;
const CLOCK_SHIFT: u32 = 2;
const CLOCK_MASK: u8 = 0b11 << CLOCK_SHIFT;
/// The largest CLOCK count: a read item survives this many passes of the hand.
pub const CLOCK_MAX: u8 = 3;
const HAS_CLIENT_FLAGS: u8 = 1 << 4;
const HAS_EXPIRES: u8 = 1 << 5;
const LONG_VALUE_LEN: u8 = 1 << 6;
/// The key came base64-encoded (`ms <key> <len> b`); meta replies print it encoded.
pub const KEY_BINARY: u8 = 1 << 7;
/// In the last_access word: the item was invalidated (`md <key> I`) and is served stale.
pub const STALE: u32 = 1 << 30;
/// In the last_access word: a win token (`W`) was sent for this item.
pub const TOKEN_SENT: u32 = 1 << 31;
/// The last_access word's time bits (2^30 s is 34 years of uptime; later times saturate).
const ACCESS_TIME_MASK: u32 = (1 << 30) - 1;

/// Header bytes of the smallest layout.
pub const HEADER_BYTES_MIN: usize = 16;
/// Header bytes of the largest layout.
pub const HEADER_BYTES_MAX: usize = 26;
/// Offset of the next-free link in a free chunk.
const FREE_NEXT_OFFSET: usize = 4;
/// The smallest chunk must hold a free-list link.
pub const CHUNK_BYTES_MIN: usize = 8;

const _: () = assert!(HEADER_BYTES_MIN == 1 + 1 + 2 + 8 + 4);
const _: () = assert!(HEADER_BYTES_MAX == 1 + 1 + 4 + 8 + 4 + 4 + 4);
const _: () = assert!(FREE_NEXT_OFFSET + 4 <= CHUNK_BYTES_MIN);

/// The fields that decide an item's header layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub key_len: usize,
    pub value_len: usize,
    pub has_client_flags: bool,
    pub has_expires: bool,
}

impl Layout {
    pub fn new(
        key_len: usize,
        value_len: usize,
        client_flags: u32,
        expires_at: Option<Instant32>,
    ) -> Layout {
        Layout {
            key_len,
            value_len,
            has_client_flags: client_flags != 0,
            has_expires: expires_at.is_some(),
        }
    }

    fn long_value_len(&self) -> bool {
        self.value_len > usize::from(u16::MAX)
    }

    /// Header bytes for this layout.
    pub fn header_bytes(&self) -> usize {
        HEADER_BYTES_MIN
            + if self.long_value_len() { 2 } else { 0 }
            + if self.has_client_flags { 4 } else { 0 }
            + if self.has_expires { 4 } else { 0 }
    }

    /// Total item bytes: header, key and value (memcached's `ITEM_ntotal`).
    pub fn total_bytes(&self) -> usize {
        self.header_bytes() + self.key_len + self.value_len
    }
}

/// The full contents of a new item.
pub struct NewItem<'a> {
    pub key: &'a [u8],
    pub client_flags: u32,
    pub expires_at: Option<Instant32>,
    pub seq: u64,
    pub now: Instant32,
    /// The value is the concatenation of these parts (append/prepend write two).
    pub value_parts: [&'a [u8]; 2],
}

impl NewItem<'_> {
    pub fn layout(&self) -> Layout {
        let value_len = self.value_parts[0].len() + self.value_parts[1].len();
        Layout::new(
            self.key.len(),
            value_len,
            self.client_flags,
            self.expires_at,
        )
    }
}

/// Writes `item` into `chunk` (which must hold `layout().total_bytes()`), state LINKED.
pub fn write(chunk: &mut [u8], item: &NewItem<'_>) {
    let layout = item.layout();
    assert!(
        chunk.len() >= layout.total_bytes(),
        "chunk too small for item"
    );
    assert!((1..=usize::from(u8::MAX)).contains(&layout.key_len));
    let mut state = LINKED;
    if layout.has_client_flags {
        state |= HAS_CLIENT_FLAGS;
    }
    if layout.has_expires {
        state |= HAS_EXPIRES;
    }
    let mut at = 2;
    if layout.long_value_len() {
        state |= LONG_VALUE_LEN;
        let len = u32::try_from(layout.value_len).expect("value_len fits u32");
        chunk[at..at + 4].copy_from_slice(&len.to_le_bytes());
        at += 4;
    } else {
        let len = layout.value_len as u16;
        chunk[at..at + 2].copy_from_slice(&len.to_le_bytes());
        at += 2;
    }
    chunk[0] = state;
    chunk[1] = layout.key_len as u8;
    chunk[at..at + 8].copy_from_slice(&item.seq.to_le_bytes());
    let access = item.now.0.min(ACCESS_TIME_MASK);
    chunk[at + 8..at + 12].copy_from_slice(&access.to_le_bytes());
    at += 12;
    if layout.has_client_flags {
        chunk[at..at + 4].copy_from_slice(&item.client_flags.to_le_bytes());
        at += 4;
    }
    if let Some(expires_at) = item.expires_at {
        // 0 encodes "never"; Instant32(0) and Instant32(1) are both long past.
        let raw = expires_at.0.max(1);
        chunk[at..at + 4].copy_from_slice(&raw.to_le_bytes());
        at += 4;
    }
    debug_assert_eq!(at, layout.header_bytes());
    chunk[at..at + layout.key_len].copy_from_slice(item.key);
    at += layout.key_len;
    for part in item.value_parts {
        chunk[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
}

/// A read-only view of an item's header and bytes inside its chunk.
#[derive(Clone, Copy)]
pub struct ItemRef<'a> {
    chunk: &'a [u8],
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl<'a> ItemRef<'a> {
    pub fn new(chunk: &'a [u8]) -> ItemRef<'a> {
        ItemRef { chunk }
    }
    pub fn state(&self) -> u8 {
        self.chunk[0]
    }
    pub fn is_linked(&self) -> bool {
        self.state() & LINKED != 0
    }
    pub fn is_fetched(&self) -> bool {
        self.state() & FETCHED != 0
    }
    pub fn clock(&self) -> u8 {
        (self.state() & CLOCK_MASK) >> CLOCK_SHIFT
    }
    fn long(&self) -> bool {
        self.state() & LONG_VALUE_LEN != 0
    }
    fn seq_offset(&self) -> usize {
        if self.long() {
            6
        } else {
            4
        }
    }
    pub fn key_len(&self) -> usize {
        usize::from(self.chunk[1])
    }
    pub fn value_len(&self) -> usize {
        if self.long() {
            u32_at(self.chunk, 2) as usize
        } else {
            usize::from(u16::from_le_bytes([self.chunk[2], self.chunk[3]]))
        }
    }
    pub fn seq(&self) -> u64 {
        let at = self.seq_offset();
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.chunk[at..at + 8]);
        u64::from_le_bytes(raw)
    }
    pub fn last_access(&self) -> Instant32 {
        Instant32(u32_at(self.chunk, self.seq_offset() + 8) & ACCESS_TIME_MASK)
    }
    /// The meta bits of the last_access word ([`STALE`], [`TOKEN_SENT`]).
    pub fn meta_bits(&self) -> u32 {
        u32_at(self.chunk, self.seq_offset() + 8) & !ACCESS_TIME_MASK
    }
    pub fn is_stale(&self) -> bool {
        self.meta_bits() & STALE != 0
    }
    pub fn token_sent(&self) -> bool {
        self.meta_bits() & TOKEN_SENT != 0
    }
    pub fn key_binary(&self) -> bool {
        self.state() & KEY_BINARY != 0
    }
    pub fn client_flags(&self) -> u32 {
        if self.state() & HAS_CLIENT_FLAGS != 0 {
            u32_at(self.chunk, self.seq_offset() + 12)
        } else {
            0
        }
    }
    fn expires_offset(&self) -> Option<usize> {
        if self.state() & HAS_EXPIRES == 0 {
            return None;
        }
        let flags = if self.state() & HAS_CLIENT_FLAGS != 0 {
            4
        } else {
            0
        };
        Some(self.seq_offset() + 12 + flags)
    }
    pub fn expires_at(&self) -> Option<Instant32> {
        let at = self.expires_offset()?;
        match u32_at(self.chunk, at) {
            0 => None,
            raw => Some(Instant32(raw)),
        }
    }
    pub fn layout(&self) -> Layout {
        Layout {
            key_len: self.key_len(),
            value_len: self.value_len(),
            has_client_flags: self.state() & HAS_CLIENT_FLAGS != 0,
            has_expires: self.state() & HAS_EXPIRES != 0,
        }
    }
    pub fn header_bytes(&self) -> usize {
        self.layout().header_bytes()
    }
    pub fn total_bytes(&self) -> usize {
        self.layout().total_bytes()
    }
    pub fn key(&self) -> &'a [u8] {
        let at = self.header_bytes();
        &self.chunk[at..at + self.key_len()]
    }
    pub fn value(&self) -> &'a [u8] {
        let at = self.header_bytes() + self.key_len();
        &self.chunk[at..at + self.value_len()]
    }
}

/// Mutations of a linked item's header in place.
pub struct ItemMut<'a> {
    chunk: &'a mut [u8],
}

impl<'a> ItemMut<'a> {
    pub fn new(chunk: &'a mut [u8]) -> ItemMut<'a> {
        ItemMut { chunk }
    }
    fn view(&self) -> ItemRef<'_> {
        ItemRef::new(self.chunk)
    }
    /// A read: mark FETCHED, raise the CLOCK count, record the access time.
    pub fn touch_access(&mut self, now: Instant32) {
        let clock = (self.view().clock() + 1).min(CLOCK_MAX);
        self.chunk[0] = (self.chunk[0] & !CLOCK_MASK) | FETCHED | (clock << CLOCK_SHIFT);
        self.set_access_word(now.0.min(ACCESS_TIME_MASK) | self.view().meta_bits());
    }
    fn set_access_word(&mut self, word: u32) {
        let at = self.view().seq_offset() + 8;
        self.chunk[at..at + 4].copy_from_slice(&word.to_le_bytes());
    }
    /// Sets the meta bits ([`STALE`], [`TOKEN_SENT`]) of the last_access word.
    pub fn set_meta_bits(&mut self, bits: u32) {
        assert_eq!(bits & ACCESS_TIME_MASK, 0, "not a meta bit");
        let time = self.view().last_access().0;
        self.set_access_word(time | bits);
    }
    /// Marks the item as not read since it was stored (meta `ma`, which memcached does not
    /// count as a fetch).
    pub fn clear_fetched(&mut self) {
        self.chunk[0] &= !FETCHED;
    }
    pub fn set_key_binary(&mut self) {
        self.chunk[0] |= KEY_BINARY;
    }
    /// Recency only (memcached's bump on an add that found the item): CLOCK +1 and the access
    /// time, without marking it FETCHED.
    pub fn bump(&mut self, now: Instant32) {
        let fetched = self.chunk[0] & FETCHED;
        self.touch_access(now);
        self.chunk[0] = (self.chunk[0] & !FETCHED) | fetched;
    }
    pub fn set_clock(&mut self, clock: u8) {
        assert!(clock <= CLOCK_MAX);
        self.chunk[0] = (self.chunk[0] & !CLOCK_MASK) | (clock << CLOCK_SHIFT);
    }
    pub fn set_seq(&mut self, seq: u64) {
        let at = self.view().seq_offset();
        self.chunk[at..at + 8].copy_from_slice(&seq.to_le_bytes());
    }
    /// Sets the expiry; returns false when the layout has no expiry field and one is needed.
    pub fn set_expires_at(&mut self, expires_at: Option<Instant32>) -> bool {
        match (self.view().expires_offset(), expires_at) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(at), expires_at) => {
                let raw = expires_at.map_or(0, |e| e.0.max(1));
                self.chunk[at..at + 4].copy_from_slice(&raw.to_le_bytes());
                true
            }
        }
    }
    /// The value bytes, for in-place incr/decr.
    pub fn value_mut(&mut self) -> &mut [u8] {
        let view = self.view();
        let at = view.header_bytes() + view.key_len();
        let len = view.value_len();
        &mut self.chunk[at..at + len]
    }
}

/// Marks a chunk free and links it to `next` (a chunk index in the same page, or `u32::MAX`).
pub fn write_free(chunk: &mut [u8], next: u32) {
    chunk[0] = 0;
    chunk[FREE_NEXT_OFFSET..FREE_NEXT_OFFSET + 4].copy_from_slice(&next.to_le_bytes());
}

/// The next-free link of a free chunk.
pub fn free_next(chunk: &[u8]) -> u32 {
    assert_eq!(chunk[0] & LINKED, 0, "free chunk is linked");
    u32_at(chunk, FREE_NEXT_OFFSET)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(flags: u32, exp: Option<Instant32>, value_len: usize) {
        let value = vec![7u8; value_len];
        let item = NewItem {
            key: b"key:0000001",
            client_flags: flags,
            expires_at: exp,
            seq: 0x0102_0304_0506_0708,
            now: Instant32(42),
            value_parts: [&value[..value_len / 2], &value[value_len / 2..]],
        };
        let layout = item.layout();
        let mut chunk = vec![0u8; layout.total_bytes()];
        write(&mut chunk, &item);
        let view = ItemRef::new(&chunk);
        assert!(view.is_linked());
        assert!(!view.is_fetched());
        assert_eq!(view.key(), b"key:0000001");
        assert_eq!(view.value(), &value[..]);
        assert_eq!(view.client_flags(), flags);
        assert_eq!(view.expires_at(), exp);
        assert_eq!(view.seq(), 0x0102_0304_0506_0708);
        assert_eq!(view.last_access(), Instant32(42));
        assert_eq!(view.layout(), layout);
    }

    #[test]
    fn layouts_roundtrip() {
        for flags in [0, 1, u32::MAX] {
            for exp in [None, Some(Instant32(5))] {
                for len in [0, 100, 65_535, 65_536, 200_000] {
                    roundtrip(flags, exp, len);
                }
            }
        }
    }

    #[test]
    fn sizes() {
        // The 1M-item target: 11-byte key + 100-byte value fits a 128-byte chunk.
        let layout = Layout::new(11, 100, 0, None);
        assert_eq!(layout.header_bytes(), 16);
        assert_eq!(layout.total_bytes(), 127);
        assert_eq!(
            Layout::new(1, 70_000, 1, Some(Instant32(9))).header_bytes(),
            HEADER_BYTES_MAX
        );
    }

    #[test]
    fn access_and_expiry_updates() {
        let item = NewItem {
            key: b"k",
            client_flags: 3,
            expires_at: Some(Instant32(10)),
            seq: 1,
            now: Instant32(2),
            value_parts: [b"v", b""],
        };
        let mut chunk = vec![0u8; 64];
        write(&mut chunk, &item);
        let mut m = ItemMut::new(&mut chunk);
        for _ in 0..5 {
            m.touch_access(Instant32(8));
        }
        assert!(m.set_expires_at(None));
        let view = ItemRef::new(&chunk);
        assert_eq!(view.clock(), CLOCK_MAX);
        assert!(view.is_fetched());
        assert_eq!(view.last_access(), Instant32(8));
        assert_eq!(view.expires_at(), None);
        assert!(!view.is_stale() && !view.token_sent() && !view.key_binary());
        let mut m = ItemMut::new(&mut chunk);
        m.set_meta_bits(STALE | TOKEN_SENT);
        m.set_key_binary();
        m.touch_access(Instant32(9));
        let view = ItemRef::new(&chunk);
        assert!(view.is_stale() && view.token_sent() && view.key_binary());
        assert_eq!(view.last_access(), Instant32(9));
        assert_eq!(view.client_flags(), 3);
        ItemMut::new(&mut chunk).set_meta_bits(0);
        assert_eq!(ItemRef::new(&chunk).meta_bits(), 0);
        let view = ItemRef::new(&chunk);
        assert_eq!(view.client_flags(), 3);
        write_free(&mut chunk, 17);
        assert_eq!(free_next(&chunk), 17);
    }
}
