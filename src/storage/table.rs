//! Hash table: `key_hash` -> item location, open addressing over cache-line buckets.
//!
//! * A **slot** is 8 bytes: a 16-bit tag (bits 32..48 of `key_hash`, never 0) over a 24-bit page
//!   id and a 24-bit chunk index. `EMPTY` (0) and `TOMBSTONE` (1) have tag 0.
//! * A **bucket** is 8 slots, one 64-byte cache line. A key's home bucket is multiply-shift of
//!   the low 32 bits of `key_hash` over the home bucket count (any count, so growth need not
//!   double); probing moves to the next bucket while the current one has no EMPTY slot. There is
//!   no wrap-around: [`OVERFLOW_BUCKETS`] extra buckets follow the home buckets.
//! * **Delete** writes EMPTY into a bucket that already has an EMPTY slot (no probe passed
//!   through it), else TOMBSTONE. So a bucket with no EMPTY never gains one, and the invariant
//!   holds: every live slot at bucket `b` for home `h` has no EMPTY in buckets `h..b`.
//! * **Growth is incremental**: when live + tombstones pass [`LOAD_MAX`], a new table sized for
//!   [`LOAD_AFTER_GROWTH`] becomes current, and every later operation migrates
//!   [`MIGRATE_BUCKETS_PER_STEP`] old buckets (re-hashing keys through the caller). Lookups check
//!   the current table, then the old one starting at `max(home, cursor)` (everything below the
//!   cursor has moved). Only a probe running off the end of the overflow area (pathological)
//!   finishes a migration synchronously.
//!
//! Must not touch item bytes: callers supply `matches` and `hash_of` closures.

use super::slab::Loc;

pub const SLOTS_PER_BUCKET: usize = 8;
pub const OVERFLOW_BUCKETS: usize = 32;
pub const HOME_BUCKETS_MIN: usize = 64;
/// Start growing when live + tombstone slots exceed this share of home slots.
pub const LOAD_MAX: f64 = 0.9;
/// A new table is sized so the live items fill this share of it.
pub const LOAD_AFTER_GROWTH: f64 = 0.6;
pub const MIGRATE_BUCKETS_PER_STEP: usize = 2;

/// Asks the CPU to load the cache line holding `ptr` (a hint: no effect on correctness, and
/// nothing on targets without a prefetch instruction here).
#[inline]
pub fn prefetch_line(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing into the program; any address is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

const EMPTY: u64 = 0;
// `LineSlots::try_empty` relies on zeroed memory reading as empty slots.
const _: () = assert!(EMPTY == 0);
const TOMBSTONE: u64 = 1;
const BITS_24: u64 = (1 << 24) - 1;

fn tag_of(key_hash: u64) -> u64 {
    match (key_hash >> 32) & 0xFFFF {
        0 => 1,
        tag => tag,
    }
}

fn encode(key_hash: u64, loc: Loc) -> u64 {
    debug_assert!(u64::from(loc.page) <= BITS_24 && u64::from(loc.chunk) <= BITS_24);
    (tag_of(key_hash) << 48) | (u64::from(loc.page) << 24) | u64::from(loc.chunk)
}

fn is_live(slot: u64) -> bool {
    slot >> 48 != 0
}

fn decode(slot: u64) -> Loc {
    Loc {
        page: ((slot >> 24) & BITS_24) as u32,
        chunk: (slot & BITS_24) as u32,
    }
}

/// Slot memory whose first slot starts a cache line, so that each bucket of
/// [`SLOTS_PER_BUCKET`] slots is exactly one line. A `Vec<u64>` is only 8-byte aligned, and a
/// large one typically starts 16 bytes into a page (the allocator's header), which made every
/// bucket straddle two lines: two cache misses per lookup instead of one. The vector holds
/// up to a bucket's worth of extra slots and the table uses the aligned run inside it.
struct LineSlots {
    raw: Vec<u64>,
    start: usize,
    len: usize,
}

impl LineSlots {
    /// `len` empty slots, the first at a 64-byte boundary.
    fn empty(len: usize) -> LineSlots {
        LineSlots::aligned(vec![EMPTY; len + SLOTS_PER_BUCKET - 1], len)
    }

    /// [`LineSlots::empty`], or `None` when the memory cannot be had (a table sized by a
    /// setting, not by the keys it holds). The memory comes zeroed from the allocator, as
    /// `vec![0; n]`'s does, so pages never touched cost nothing: writing the zeros here would
    /// make a table of `-o hashpower=31` resident at once.
    fn try_empty(len: usize) -> Option<LineSlots> {
        let total = len.checked_add(SLOTS_PER_BUCKET - 1)?;
        let layout = std::alloc::Layout::array::<u64>(total).ok()?;
        // SAFETY: `layout` has a non-zero size (`total` is at least SLOTS_PER_BUCKET - 1 > 0
        // slots of 8 bytes). `alloc_zeroed` returns null or memory for `total` u64s, all
        // zero bytes, which is a valid u64 (EMPTY).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<u64>();
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` was allocated by the global allocator with the layout of `total`
        // u64s (what a Vec of capacity `total` uses), is initialised for all of them, and is
        // owned by nothing else: the Vec takes it over and frees it with the same layout.
        let raw = unsafe { Vec::from_raw_parts(ptr, total, total) };
        Some(LineSlots::aligned(raw, len))
    }

    fn aligned(raw: Vec<u64>, len: usize) -> LineSlots {
        let line = SLOTS_PER_BUCKET * std::mem::size_of::<u64>();
        let past_line = raw.as_ptr() as usize % line;
        let start = (line - past_line) % line / std::mem::size_of::<u64>();
        LineSlots { raw, start, len }
    }
}

impl std::ops::Deref for LineSlots {
    type Target = [u64];

    #[inline]
    fn deref(&self) -> &[u64] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for LineSlots {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u64] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

struct Buckets {
    slots: LineSlots,
    home_count: usize,
    live: usize,
    tombstones: usize,
}

impl Buckets {
    fn new(home_count: usize) -> Buckets {
        Buckets::with_slots(
            LineSlots::empty((home_count + OVERFLOW_BUCKETS) * SLOTS_PER_BUCKET),
            home_count,
        )
    }

    fn try_new(home_count: usize) -> Option<Buckets> {
        let len = home_count
            .checked_add(OVERFLOW_BUCKETS)?
            .checked_mul(SLOTS_PER_BUCKET)?;
        Some(Buckets::with_slots(LineSlots::try_empty(len)?, home_count))
    }

    fn with_slots(slots: LineSlots, home_count: usize) -> Buckets {
        Buckets {
            slots,
            home_count,
            live: 0,
            tombstones: 0,
        }
    }

    fn bucket_count(&self) -> usize {
        self.home_count + OVERFLOW_BUCKETS
    }

    fn home(&self, key_hash: u64) -> usize {
        (((key_hash & 0xFFFF_FFFF) * self.home_count as u64) >> 32) as usize
    }

    fn bucket(&self, bucket: usize) -> &[u64] {
        &self.slots[bucket * SLOTS_PER_BUCKET..(bucket + 1) * SLOTS_PER_BUCKET]
    }

    /// The home bucket's slots, for prefetching.
    #[inline]
    fn home_bucket(&self, key_hash: u64) -> &[u64] {
        self.bucket(self.home(key_hash))
    }

    fn find(
        &self,
        key_hash: u64,
        bucket_min: usize,
        matches: &mut dyn FnMut(Loc) -> bool,
    ) -> Option<usize> {
        let tag = tag_of(key_hash);
        for bucket in self.home(key_hash).max(bucket_min)..self.bucket_count() {
            let mut saw_empty = false;
            for (i, &slot) in self.bucket(bucket).iter().enumerate() {
                if slot == EMPTY {
                    saw_empty = true;
                } else if slot >> 48 == tag && matches(decode(slot)) {
                    return Some(bucket * SLOTS_PER_BUCKET + i);
                }
            }
            if saw_empty {
                return None;
            }
        }
        None
    }

    /// Inserts a slot for a key known to be absent; false when the probe runs off the end.
    fn insert(&mut self, key_hash: u64, loc: Loc) -> bool {
        for bucket in self.home(key_hash)..self.bucket_count() {
            let start = bucket * SLOTS_PER_BUCKET;
            let bucket_slots = &mut self.slots[start..start + SLOTS_PER_BUCKET];
            if let Some(slot) = bucket_slots.iter_mut().find(|s| !is_live(**s)) {
                if *slot == TOMBSTONE {
                    self.tombstones -= 1;
                }
                *slot = encode(key_hash, loc);
                self.live += 1;
                return true;
            }
        }
        false
    }

    fn remove(&mut self, index: usize) {
        assert!(is_live(self.slots[index]), "removing a dead slot");
        let bucket = index / SLOTS_PER_BUCKET;
        let has_empty = self.bucket(bucket).contains(&EMPTY);
        if has_empty {
            self.slots[index] = EMPTY;
        } else {
            self.slots[index] = TOMBSTONE;
            self.tombstones += 1;
        }
        self.live -= 1;
    }

    fn over_load(&self) -> bool {
        (self.live + self.tombstones) as f64
            > LOAD_MAX * (self.home_count * SLOTS_PER_BUCKET) as f64
    }
}

/// Home buckets for `live` keys at [`LOAD_AFTER_GROWTH`].
fn home_count_for(live: usize) -> usize {
    ((live as f64 / (LOAD_AFTER_GROWTH * SLOTS_PER_BUCKET as f64)).ceil() as usize)
        .max(HOME_BUCKETS_MIN)
}

/// Where a found slot is: in the current or the old (migrating) table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRef {
    in_old: bool,
    index: usize,
    pub loc: Loc,
}

/// The hash table with its incremental migration.
pub struct Table {
    cur: Buckets,
    old: Option<Buckets>,
    /// Old buckets below this have been migrated.
    cursor: usize,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    pub fn new() -> Table {
        Table {
            cur: Buckets::new(HOME_BUCKETS_MIN),
            old: None,
            cursor: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.cur.live + self.old.as_ref().map_or(0, |old| old.live)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of slot memory (both tables while migrating).
    pub fn bytes(&self) -> usize {
        (self.cur.slots.len() + self.old.as_ref().map_or(0, |old| old.slots.len())) * 8
    }

    /// Home slots of the current table (overflow buckets not counted).
    pub fn home_slots(&self) -> usize {
        self.cur.home_count * SLOTS_PER_BUCKET
    }

    pub fn is_migrating(&self) -> bool {
        self.old.is_some()
    }

    /// Asks the CPU to start loading the home bucket of `key_hash` (current table only).
    #[inline]
    pub fn prefetch(&self, key_hash: u64) {
        // One line: buckets are line-aligned (`LineSlots`).
        prefetch_line(self.cur.home_bucket(key_hash).as_ptr().cast());
    }

    /// Locations in `key_hash`'s home bucket (current table) whose tag matches: the items a
    /// lookup will compare keys with first. Reads the bucket; call after [`Table::prefetch`].
    #[inline]
    pub fn home_candidates(&self, key_hash: u64, mut each: impl FnMut(Loc)) {
        let tag = tag_of(key_hash);
        for &slot in self.cur.home_bucket(key_hash) {
            if slot >> 48 == tag {
                each(decode(slot));
            }
        }
    }

    /// The slot of the key whose location `matches` accepts.
    pub fn find(&self, key_hash: u64, matches: &mut dyn FnMut(Loc) -> bool) -> Option<SlotRef> {
        if let Some(index) = self.cur.find(key_hash, 0, matches) {
            return Some(SlotRef {
                in_old: false,
                index,
                loc: decode(self.cur.slots[index]),
            });
        }
        let old = self.old.as_ref()?;
        let index = old.find(key_hash, self.cursor, matches)?;
        Some(SlotRef {
            in_old: true,
            index,
            loc: decode(old.slots[index]),
        })
    }

    pub fn remove(&mut self, slot: SlotRef) {
        let buckets = if slot.in_old {
            self.old.as_mut().expect("old table while migrating")
        } else {
            &mut self.cur
        };
        assert_eq!(
            decode(buckets.slots[slot.index]),
            slot.loc,
            "stale slot ref"
        );
        buckets.remove(slot.index);
    }

    /// Points a found slot at a new location (same key).
    pub fn replace(
        &mut self,
        slot: SlotRef,
        key_hash: u64,
        loc: Loc,
        hash_of: &mut dyn FnMut(Loc) -> u64,
    ) {
        if slot.in_old {
            self.remove(slot);
            self.insert(key_hash, loc, hash_of);
        } else {
            assert_eq!(
                decode(self.cur.slots[slot.index]),
                slot.loc,
                "stale slot ref"
            );
            self.cur.slots[slot.index] = encode(key_hash, loc);
        }
    }

    /// Inserts a key known to be absent, then starts growth if the table is loaded.
    pub fn insert(&mut self, key_hash: u64, loc: Loc, hash_of: &mut dyn FnMut(Loc) -> u64) {
        let mut attempts = 0;
        while !self.cur.insert(key_hash, loc) {
            // Pathological probe off the end: finish any migration and rebuild bigger, now.
            attempts += 1;
            assert!(attempts <= 8, "table insert cannot find a slot");
            self.finish_migration(hash_of);
            self.start_growth(self.len() + self.cur.home_count * SLOTS_PER_BUCKET / 2);
            self.finish_migration(hash_of);
        }
        if self.cur.over_load() {
            self.finish_migration(hash_of);
            self.start_growth(self.len());
        }
    }

    /// Sizes an empty table for `items` keys at once (the load a growth leaves), so that
    /// filling it in bulk (a restore) never migrates: growth would re-read every item's key
    /// to rehash it. Does nothing to a table holding keys or already that large.
    pub fn reserve(&mut self, items: usize) {
        // A table sized by the keys about to be stored: their memory is had already.
        let _ = self.reserve_buckets(home_count_for(items));
    }

    /// Sizes an empty table to at least `slots` home slots (`-o hashpower`, or the size a
    /// restart restores). Like [`Table::reserve`], nothing once it holds keys. False, with the
    /// table as it was, when that much memory cannot be allocated.
    pub fn reserve_slots(&mut self, slots: usize) -> bool {
        self.reserve_buckets(slots.div_ceil(SLOTS_PER_BUCKET))
    }

    fn reserve_buckets(&mut self, home_count: usize) -> bool {
        if !self.is_empty() || self.old.is_some() || home_count <= self.cur.home_count {
            return true;
        }
        match Buckets::try_new(home_count) {
            Some(buckets) => {
                self.cur = buckets;
                self.cursor = 0;
                true
            }
            None => false,
        }
    }

    fn start_growth(&mut self, live: usize) {
        assert!(self.old.is_none());
        let old = std::mem::replace(&mut self.cur, Buckets::new(home_count_for(live)));
        self.cursor = 0;
        if old.live > 0 {
            self.old = Some(old);
        }
    }

    /// Migrates up to `bucket_budget` old buckets; returns true while a migration remains.
    pub fn migrate_step(
        &mut self,
        bucket_budget: usize,
        hash_of: &mut dyn FnMut(Loc) -> u64,
    ) -> bool {
        let Some(old) = self.old.as_mut() else {
            return false;
        };
        let end = (self.cursor + bucket_budget).min(old.bucket_count());
        for index in self.cursor * SLOTS_PER_BUCKET..end * SLOTS_PER_BUCKET {
            let slot = old.slots[index];
            if is_live(slot) {
                let loc = decode(slot);
                let key_hash = hash_of(loc);
                debug_assert_eq!(tag_of(key_hash), slot >> 48);
                old.slots[index] = TOMBSTONE;
                old.live -= 1;
                if !self.cur.insert(key_hash, loc) {
                    // Cannot happen while the new table is sparse; recover by a bigger rebuild.
                    self.recover_migration(key_hash, loc, end, hash_of);
                    return self.old.is_some();
                }
            }
        }
        self.cursor = end;
        if end == old.bucket_count() || old.live == 0 {
            self.old = None;
            self.cursor = 0;
        }
        self.old.is_some()
    }

    fn recover_migration(
        &mut self,
        key_hash: u64,
        loc: Loc,
        end: usize,
        hash_of: &mut dyn FnMut(Loc) -> u64,
    ) {
        // Gather everything (current + the rest of old + the one in hand) into a fresh table.
        let mut items: Vec<(u64, Loc)> = vec![(key_hash, loc)];
        let cur = std::mem::replace(&mut self.cur, Buckets::new(HOME_BUCKETS_MIN));
        let old = self.old.take();
        let mut collect = |buckets: &Buckets, from: usize| {
            for &slot in &buckets.slots[from * SLOTS_PER_BUCKET..] {
                if is_live(slot) {
                    items.push((hash_of(decode(slot)), decode(slot)));
                }
            }
        };
        collect(&cur, 0);
        if let Some(old) = old.as_ref() {
            collect(old, self.cursor.min(end));
        }
        self.cursor = 0;
        let live = items.len();
        self.cur = Buckets::new(((live * 2) / SLOTS_PER_BUCKET).max(HOME_BUCKETS_MIN));
        for (key_hash, loc) in items {
            assert!(
                self.cur.insert(key_hash, loc),
                "rebuild at half load must fit"
            );
        }
    }

    fn finish_migration(&mut self, hash_of: &mut dyn FnMut(Loc) -> u64) {
        let mut steps = 0usize;
        while self.migrate_step(1024, hash_of) {
            steps += 1;
            assert!(steps < (1 << 32), "migration does not end");
        }
    }

    /// Every live slot: (location, whether it is findable from its home). For `check_invariants`.
    pub fn check(&self, hash_of: &mut dyn FnMut(Loc) -> u64) -> Vec<Loc> {
        let mut locs = Vec::with_capacity(self.len());
        let tables = [(Some(&self.cur), 0), (self.old.as_ref(), self.cursor)];
        for (buckets, bucket_min) in tables {
            let Some(buckets) = buckets else { continue };
            let mut live = 0;
            let mut tombstones = 0;
            for bucket in 0..buckets.bucket_count() {
                for &slot in buckets.bucket(bucket) {
                    if slot == TOMBSTONE {
                        tombstones += 1;
                    }
                    if !is_live(slot) || bucket < bucket_min {
                        continue;
                    }
                    live += 1;
                    let loc = decode(slot);
                    let key_hash = hash_of(loc);
                    assert_eq!(
                        tag_of(key_hash),
                        slot >> 48,
                        "slot tag does not match its key"
                    );
                    let home = buckets.home(key_hash);
                    assert!(home <= bucket, "slot before its home bucket");
                    for between in home.max(bucket_min)..bucket {
                        assert!(
                            !buckets.bucket(between).contains(&EMPTY),
                            "EMPTY on a probe path"
                        );
                    }
                    locs.push(loc);
                }
            }
            assert_eq!(live, buckets.live, "live count drifted");
            if bucket_min == 0 {
                assert_eq!(tombstones, buckets.tombstones, "tombstone count drifted");
            }
        }
        locs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mix(x: u64) -> u64 {
        let x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn loc_of(i: u64) -> Loc {
        Loc {
            page: (i >> 10) as u32,
            chunk: (i & 1023) as u32,
        }
    }

    fn id_of(loc: Loc) -> u64 {
        (u64::from(loc.page) << 10) | u64::from(loc.chunk)
    }

    #[test]
    fn buckets_are_whole_cache_lines() {
        for len in [8, 64, 8 * 1024, 256 * 1024] {
            let slots = LineSlots::empty(len);
            assert_eq!(slots.len(), len);
            assert_eq!(slots.as_ptr() as usize % 64, 0, "{len} slots");
            assert!(slots.iter().all(|&s| s == EMPTY));
        }
        let mut table = Table::new();
        let mut hash_of = |loc: Loc| mix(id_of(loc));
        for i in 0..10_000 {
            table.insert(mix(i), loc_of(i), &mut hash_of);
            while table.migrate_step(64, &mut hash_of) {}
        }
        for buckets in [&table.cur].into_iter().chain(table.old.as_ref()) {
            assert_eq!(buckets.slots.as_ptr() as usize % 64, 0);
        }
    }

    #[test]
    fn a_reserved_table_fills_without_migrating() {
        let mut table = Table::new();
        let mut hash_of = |loc: Loc| mix(id_of(loc));
        table.reserve(50_000);
        let home = table.home_slots();
        assert!(home >= 50_000, "{home}");
        for i in 0..50_000u64 {
            table.insert(mix(i), loc_of(i), &mut hash_of);
            assert!(!table.is_migrating(), "migrating at {i}");
        }
        assert_eq!(table.home_slots(), home);
        assert!(table.find(mix(7), &mut |loc| id_of(loc) == 7).is_some());
        // Neither a table with keys nor a smaller reserve changes it.
        table.reserve(1_000_000);
        table.reserve(10);
        assert_eq!(table.home_slots(), home);
        let mut small = Table::new();
        small.reserve(10);
        assert_eq!(small.home_slots(), HOME_BUCKETS_MIN * SLOTS_PER_BUCKET);
    }

    #[test]
    fn reserved_slots_size_an_empty_table_only() {
        let mut table = Table::new();
        assert!(table.reserve_slots(1 << 16));
        assert_eq!(table.home_slots(), 1 << 16);
        // Rounded up to whole buckets; never shrunk.
        table.reserve_slots((1 << 17) + 1);
        assert_eq!(table.home_slots(), (1 << 17) + SLOTS_PER_BUCKET);
        table.reserve_slots(10);
        assert_eq!(table.home_slots(), (1 << 17) + SLOTS_PER_BUCKET);
        let mut hash_of = |loc: Loc| mix(id_of(loc));
        table.insert(mix(1), loc_of(1), &mut hash_of);
        table.reserve_slots(1 << 20);
        assert_eq!(table.home_slots(), (1 << 17) + SLOTS_PER_BUCKET);
        // Below the smallest table: the smallest table.
        let mut small = Table::new();
        small.reserve_slots(8);
        assert_eq!(small.home_slots(), HOME_BUCKETS_MIN * SLOTS_PER_BUCKET);
        // More than can be allocated: refused, the table unchanged.
        assert!(!small.reserve_slots(usize::MAX / 4));
        assert!(!small.reserve_slots(1 << 60));
        assert_eq!(small.home_slots(), HOME_BUCKETS_MIN * SLOTS_PER_BUCKET);
    }

    #[test]
    fn insert_find_remove_through_growth() {
        let mut table = Table::new();
        let mut hash_of = |loc: Loc| mix(id_of(loc));
        let mut present = HashMap::new();
        for i in 0..20_000u64 {
            table.insert(mix(i), loc_of(i), &mut hash_of);
            present.insert(i, true);
            table.migrate_step(MIGRATE_BUCKETS_PER_STEP, &mut hash_of);
            if i % 3 == 0 {
                let victim = i / 2;
                if present.remove(&victim).is_some() {
                    let slot = table
                        .find(mix(victim), &mut |l| l == loc_of(victim))
                        .unwrap();
                    table.remove(slot);
                }
            }
        }
        assert_eq!(table.len(), present.len());
        for i in 0..20_000u64 {
            let found = table.find(mix(i), &mut |l| l == loc_of(i));
            assert_eq!(found.is_some(), present.contains_key(&i), "key {i}");
        }
        assert_eq!(table.check(&mut hash_of).len(), present.len());
        // 8-byte slots, load at least LOAD_AFTER_GROWTH-ish after growth.
        assert!(table.bytes() <= present.len() * 8 * 3);
    }

    #[test]
    fn colliding_tags_are_told_apart_by_location() {
        let mut table = Table::new();
        let mut hash_of = |_loc: Loc| 0xABCD_0000_0000_0007u64;
        for i in 0..100u64 {
            table.insert(0xABCD_0000_0000_0007, loc_of(i), &mut hash_of);
        }
        for i in 0..100u64 {
            let slot = table
                .find(0xABCD_0000_0000_0007, &mut |l| l == loc_of(i))
                .unwrap();
            assert_eq!(slot.loc, loc_of(i));
        }
        table.check(&mut hash_of);
    }

    #[test]
    fn growth_is_incremental_and_bounded_per_step() {
        let mut table = Table::new();
        let mut hash_of = |loc: Loc| mix(id_of(loc));
        let mut i = 0u64;
        while !table.is_migrating() {
            table.insert(mix(i), loc_of(i), &mut hash_of);
            i += 1;
        }
        let old_buckets = HOME_BUCKETS_MIN + OVERFLOW_BUCKETS;
        let mut steps = 0;
        while table.migrate_step(MIGRATE_BUCKETS_PER_STEP, &mut hash_of) {
            steps += 1;
            // Every key stays findable mid-migration.
            for j in 0..i {
                assert!(table.find(mix(j), &mut |l| l == loc_of(j)).is_some());
            }
        }
        // Many small steps (it ends early once the old table is empty).
        assert!(steps > 8);
        assert!(steps < old_buckets.div_ceil(MIGRATE_BUCKETS_PER_STEP));
        assert_eq!(table.len() as u64, i);
        table.check(&mut hash_of);
    }
}
