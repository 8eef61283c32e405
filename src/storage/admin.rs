//! Admin operations on a store: the live-item walk behind `lru_crawler metadump`, changing
//! the memory budget online (`cache_memlimit`), and moving a page between classes by hand
//! (`slabs reassign`).
//!
//! The walk is resumable: each call looks at a bounded number of chunks and returns a
//! [`WalkCursor`] to continue from, so a caller can list millions of items in short steps with
//! the store changing in between; the cursor's documentation states what a resumed walk
//! guarantees.
//!
//! Shrinking evicts whole pages, emptiest first (fewest linked items), until the pages held fit
//! the new budget; growing only raises the budget (pages are allocated lazily anyway). Both keep
//! every invariant `Store::check_invariants` walks.

use super::item::ItemRef;
use super::slab::{Loc, PAGE_COUNT_MAX};
use super::{ClassSet, Store, Unlink};
use crate::clock::Instant32;

/// Where a walk of the live items ([`Store::for_each_live_item_from`]) resumes: a page id and
/// a chunk index in that page.
///
/// The walk goes by page id, then by chunk, over the pages of the class asked for. Page ids are
/// stable: an item never moves while it is linked, and its page keeps its id and its class
/// until it is released, which unlinks the item first. (A class's page list would not do:
/// releasing a page shifts the pages after it down one place, so a cursor into that list
/// could skip a page that never changed.) Hence the guarantee of a walk resumed any number of
/// times, with any changes to the store between resumes: an item that is live, and neither
/// removed nor rewritten, from the walk's start to its end is visited exactly once. Items
/// stored, rewritten (a `set` of an existing key writes a new item) or removed during the walk
/// may or may not be visited, and a rewritten key may be visited twice (old and new item);
/// memcached's metadump gives no snapshot either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalkCursor {
    pub page: u32,
    pub chunk: u32,
}

/// Where `slabs reassign` takes a page from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSource {
    /// The free budget (memcached's class 0, the global page pool).
    Free,
    Class(u8),
    /// The class with the most pages (memcached's `-1`).
    Any,
}

/// What `slabs reassign` did on one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reassigned {
    Moved,
    /// The source has no page to spare (`NOSPARE`).
    NoSpare,
    /// `Any` found no class with a page to spare (memcached answers `BADCLASS`).
    NoClass,
}

/// Where `slabs reassign` puts the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSink {
    /// Back to the free budget (memcached's class 0).
    Free,
    Class(u8),
}

impl WalkCursor {
    /// The start of a walk.
    pub const START: WalkCursor = WalkCursor { page: 0, chunk: 0 };
}

/// One live item, as `lru_crawler metadump` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemMeta<'a> {
    pub key: &'a [u8],
    pub expires_at: Option<Instant32>,
    pub last_access: Instant32,
    /// 0 when cas is disabled.
    pub cas: u64,
    pub fetched: bool,
    pub slab_class: u8,
    /// Bytes the item takes in its chunk (header, key, value).
    pub total_bytes: usize,
    /// Bytes of the value alone.
    pub value_len: usize,
    /// Stored by a meta command with a base64 key (`b`).
    pub key_binary: bool,
    /// The client's flags, meta's stale mark and the value (what a snapshot records).
    pub client_flags: u32,
    pub stale: bool,
    pub value: &'a [u8],
}

impl Store {
    /// The number of slab classes (valid ids are `0..class_count()`).
    pub fn class_count(&self) -> usize {
        self.slabs.classes.len()
    }

    /// Visits every live item of the `classes`, in walk order (see [`WalkCursor`]), until
    /// `visit` returns false. Dead items (expired, flushed) are skipped, not reclaimed.
    pub fn for_each_live_item(
        &self,
        classes: ClassSet,
        now: Instant32,
        visit: impl FnMut(ItemMeta<'_>) -> bool,
    ) {
        self.for_each_live_item_from(classes, WalkCursor::START, usize::MAX, now, visit);
    }

    /// The resumable form of [`Store::for_each_live_item`]: visits the live items of the
    /// `classes` at `from` or after it, looking at no more than `chunks_max` chunks (a
    /// page of another class, or a vacant one, counts as one), and stops early after an item
    /// for which `visit` returns false. Returns where to resume, or `None` once the walk has
    /// passed the last page.
    ///
    /// Any cursor is safe to resume from, whatever happened to the store in between: a page
    /// released since is skipped, a chunk past a page's carved end ends that page, and a page
    /// id past the last one ends the walk. The guarantee across resumes is the one in
    /// [`WalkCursor`].
    pub fn for_each_live_item_from(
        &self,
        classes: ClassSet,
        from: WalkCursor,
        chunks_max: usize,
        now: Instant32,
        mut visit: impl FnMut(ItemMeta<'_>) -> bool,
    ) -> Option<WalkCursor> {
        let mut budget = chunks_max.max(1);
        let mut at = from;
        loop {
            let page = self.slabs.pages.get(at.page as usize)?;
            let wanted = !page.vacant && classes.contains(usize::from(page.class));
            if !wanted || at.chunk >= page.carved {
                at = WalkCursor {
                    page: at.page + 1,
                    chunk: 0,
                };
                budget -= 1;
                if budget == 0 {
                    return Some(at);
                }
                continue;
            }
            let loc = Loc {
                page: at.page,
                chunk: at.chunk,
            };
            at.chunk += 1;
            budget -= 1;
            let item = ItemRef::new(self.slabs.chunk(loc));
            let live = item.is_linked() && self.dead_reason(item, now).is_none();
            if live {
                let meta = ItemMeta {
                    key: item.key(),
                    expires_at: item.expires_at(),
                    last_access: item.last_access(),
                    cas: self.cas_of(item.seq()),
                    fetched: item.is_fetched(),
                    slab_class: page.class,
                    total_bytes: item.total_bytes(),
                    value_len: item.value_len(),
                    key_binary: item.key_binary(),
                    client_flags: item.client_flags(),
                    stale: item.is_stale(),
                    value: item.value(),
                };
                if !visit(meta) {
                    return Some(at);
                }
            }
            if budget == 0 {
                return Some(at);
            }
        }
    }

    /// Sets this store's memory budget (`cache_memlimit`), in bytes (at least one page).
    /// Shrinking below the pages held evicts whole pages, emptiest first. Returns the number of
    /// pages released.
    pub fn set_memory_limit(&mut self, memory_bytes_max: usize, now: Instant32) -> usize {
        self.tick(now);
        let units_max = (memory_bytes_max / self.slabs.page_size).clamp(1, PAGE_COUNT_MAX - 1);
        self.cfg.memory_bytes_max = memory_bytes_max;
        self.slabs.units_max = units_max;
        if self.slabs.units_used > units_max {
            self.slabs.drop_spare_huge();
        }
        if self.slabs.units_used <= units_max {
            return 0;
        }
        // Emptiest pages first: (linked items, page id).
        let mut order: Vec<(u32, u32)> = Vec::new();
        for class_ref in &self.slabs.classes {
            for &page_id in &class_ref.pages {
                let page = &self.slabs.pages[page_id as usize];
                order.push((page.carved - page.free_count, page_id));
            }
        }
        order.sort_unstable();
        let mut released = 0;
        for (_, page_id) in order {
            if self.slabs.units_used <= units_max {
                break;
            }
            self.evict_page(page_id, now);
            released += 1;
        }
        assert!(self.slabs.units_used <= units_max, "pages left over budget");
        released
    }

    /// `slabs reassign`: takes a page from `src` (its items evicted, dead ones reclaimed) and
    /// gives it to `dst`, which gets a fresh page at once. Refused (nothing changed) when
    /// `src` (a class or the global pool) has fewer than two pages: memcached's rule, a class
    /// keeps one. `Any` takes from the class with the most pages.
    pub fn reassign(&mut self, src: PageSource, dst: PageSink, now: Instant32) -> Reassigned {
        self.tick(now);
        let dst_class = match dst {
            PageSink::Class(class) => Some(class),
            PageSink::Free => None,
        };
        let src_class = match src {
            PageSource::Free => None,
            PageSource::Class(class) => Some(class),
            PageSource::Any => {
                // Class indices are u8 (at most 256 classes).
                let most = (0..self.slabs.classes.len())
                    .map(|c| c as u8)
                    .filter(|&c| Some(c) != dst_class)
                    .max_by_key(|&c| self.slabs.classes[usize::from(c)].pages.len());
                match most {
                    Some(class) if self.slabs.classes[usize::from(class)].pages.len() >= 2 => {
                        Some(class)
                    }
                    _ => return Reassigned::NoClass,
                }
            }
        };
        match src_class {
            Some(class) => {
                let class_ref = &self.slabs.classes[usize::from(class)];
                if class_ref.pages.len() < 2 {
                    return Reassigned::NoSpare;
                }
                let hand = class_ref.hand_page.min(class_ref.pages.len() - 1);
                let page_id = class_ref.pages[hand];
                self.evict_page(page_id, now);
                self.counters.slabs_moved += 1;
            }
            // The pool is memcached's class 0, and keeps one page like any class.
            None if self.slabs.pool_pages() < 2 => return Reassigned::NoSpare,
            None => {}
        }
        match dst_class {
            Some(class) => {
                self.slabs.add_page(class);
            }
            None => self.slabs.pool_put(),
        }
        Reassigned::Moved
    }

    /// `slabs automove`: 0 moves pages only to a class that has none, 1 also by eviction
    /// pressure, 2 on every eviction while another class is under less pressure (see `lru`).
    pub fn set_automove(&mut self, mode: u8) {
        self.automove = mode.min(2);
    }

    /// Unlinks every item of a page (reclaiming dead ones, evicting live ones) and releases it.
    pub(super) fn evict_page(&mut self, page_id: u32, now: Instant32) {
        let carved = self.slabs.pages[page_id as usize].carved;
        for chunk in 0..carved {
            let loc = Loc {
                page: page_id,
                chunk,
            };
            let item = ItemRef::new(self.slabs.chunk(loc));
            if item.is_linked() {
                let why = match self.dead_reason(item, now) {
                    Some(_) => Unlink::Reclaimed,
                    None => Unlink::EvictedByPageMove,
                };
                self.unlink_loc(loc, why);
            }
            if self.slabs.pages[page_id as usize].vacant {
                // A huge item's page went with its item, its memory to the spare: the page's
                // budget is what is wanted back.
                self.slabs.drop_spare_huge();
                return;
            }
        }
        self.slabs.release_page(page_id);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{StoreConfig, StoreMode};
    use super::*;
    use crate::clock::START;

    fn hash(key: &[u8]) -> u64 {
        key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn store(pages: usize) -> Store {
        Store::new(StoreConfig {
            memory_bytes_max: pages * 1024,
            page_size: 1024,
            slab_growth_factor: 1.25,
            item_size_max: 4096,
            cas_enabled: true,
            key_hash: hash,
            large_pages: false,
            chunk_bytes_smallest: crate::storage::slab::CHUNK_BYTES_SMALLEST,
            fine_class_bytes_max: crate::storage::slab::FINE_CLASS_BYTES_MAX,
            growth_steps: 1,
            evictions_enabled: true,
        })
    }

    fn set(s: &mut Store, key: &str, len: usize, now: Instant32) {
        let value = vec![b'v'; len];
        let r = s.store(
            StoreMode::Set,
            key.as_bytes(),
            hash(key.as_bytes()),
            0,
            None,
            &value,
            now,
        );
        assert!(r.is_ok());
        s.check_invariants();
    }

    #[test]
    fn shrinking_evicts_pages_to_fit_and_growing_makes_room() {
        let now = START;
        let mut s = store(8);
        for i in 0..200 {
            set(&mut s, &format!("k{i}"), 40 + (i % 5) * 60, now);
        }
        set(&mut s, "huge", 2500, now);
        let items_before = s.stats().curr_items;
        assert!(
            s.slabs.units_used > 4,
            "the test needs more than 4 pages in use"
        );
        let released = s.set_memory_limit(4 * 1024, now);
        s.check_invariants();
        assert!(released > 0);
        assert!(s.slabs.units_used <= 4);
        let stats = s.stats();
        assert_eq!(stats.limit_maxbytes, 4 * 1024);
        assert!(stats.curr_items < items_before);
        assert!(stats.evictions > 0);
        // Everything left is still readable.
        let mut keys = Vec::new();
        s.for_each_live_item(ClassSet::ALL, now, |m| {
            keys.push(m.key.to_vec());
            true
        });
        assert_eq!(keys.len() as u64, stats.curr_items);
        for k in keys {
            assert!(s.get(&k, hash(&k), now).is_some());
        }
        // Grow again: new sets fit without evicting.
        s.set_memory_limit(64 * 1024, now);
        let evictions = s.stats().evictions;
        for i in 0..100 {
            set(&mut s, &format!("n{i}"), 100, now);
        }
        assert_eq!(s.stats().evictions, evictions);
        assert_eq!(s.stats().limit_maxbytes, 64 * 1024);
    }

    #[test]
    fn metadump_walk_skips_dead_items_and_stops_on_request() {
        let now = START;
        let mut s = store(8);
        set(&mut s, "a", 10, now);
        let gone = now.plus(5);
        let r = s.store(StoreMode::Set, b"b", hash(b"b"), 0, Some(gone), b"x", now);
        assert!(r.is_ok());
        let mut seen = Vec::new();
        s.for_each_live_item(ClassSet::ALL, now.plus(10), |m| {
            seen.push((m.key.to_vec(), m.fetched, m.cas));
            true
        });
        assert_eq!(seen, vec![(b"a".to_vec(), false, 1)]);
        let mut count = 0;
        s.for_each_live_item(ClassSet::ALL, now, |_| {
            count += 1;
            false
        });
        assert_eq!(count, 1);
    }

    /// Every live item's position and key, in walk order, straight from the pages (the
    /// reference the resumable walk is checked against).
    fn live_positions(s: &Store, class: Option<u8>, now: Instant32) -> Vec<(WalkCursor, Vec<u8>)> {
        let mut out = Vec::new();
        for (page_id, page) in s.slabs.pages.iter().enumerate() {
            if page.vacant || class.is_some_and(|c| c != page.class) {
                continue;
            }
            for chunk in 0..page.carved {
                let loc = Loc {
                    page: page_id as u32,
                    chunk,
                };
                let item = ItemRef::new(s.slabs.chunk(loc));
                if item.is_linked() && s.dead_reason(item, now).is_none() {
                    let at = WalkCursor {
                        page: loc.page,
                        chunk,
                    };
                    out.push((at, item.key().to_vec()));
                }
            }
        }
        out
    }

    /// Walks from `from` to the end in steps of at most `chunks_max` chunks; every key seen.
    fn walk_in_steps(
        s: &Store,
        class: Option<u8>,
        from: WalkCursor,
        chunks_max: usize,
        now: Instant32,
    ) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut cursor = Some(from);
        let mut steps = 0;
        while let Some(at) = cursor {
            let classes = class.map_or(ClassSet::ALL, ClassSet::only);
            cursor = s.for_each_live_item_from(classes, at, chunks_max, now, |m| {
                keys.push(m.key.to_vec());
                true
            });
            if let Some(next) = cursor {
                assert!(next > at, "a step makes progress: {at:?} -> {next:?}");
            }
            steps += 1;
            assert!(steps < 100_000, "the walk ends");
        }
        keys
    }

    /// A store with items in several classes and pages, holes from deletes, an expired item
    /// and a huge item.
    fn mixed_store(now: Instant32) -> Store {
        let mut s = store(64);
        for i in 0..120 {
            set(&mut s, &format!("k{i}"), 8 + (i % 4) * 70, now);
        }
        for i in (0..120).step_by(7) {
            assert!(s.delete(
                format!("k{i}").as_bytes(),
                hash(format!("k{i}").as_bytes()),
                now
            ));
        }
        let r = s.store(
            StoreMode::Set,
            b"soon",
            hash(b"soon"),
            0,
            Some(now.plus(1)),
            b"x",
            now,
        );
        assert!(r.is_ok());
        set(&mut s, "huge", 2500, now);
        s.check_invariants();
        s
    }

    #[test]
    fn a_walk_resumed_at_any_cursor_sees_each_later_item_once() {
        let now = START;
        let later = now.plus(5); // "soon" has expired by then
        let s = mixed_store(now);
        let page_count = s.slabs.pages.len() as u32;
        assert!(page_count >= 4, "the test needs several pages");
        let mut classes: Vec<Option<u8>> = vec![None];
        classes.extend((0..s.class_count() as u8).map(Some));
        for class in classes {
            let reference = live_positions(&s, class, later);
            let all: Vec<Vec<u8>> = reference.iter().map(|(_, k)| k.clone()).collect();
            // From the start, in steps of any size: every item exactly once, in order.
            for chunks_max in [1, 2, 3, 5, 64, usize::MAX] {
                assert_eq!(
                    walk_in_steps(&s, class, WalkCursor::START, chunks_max, later),
                    all
                );
            }
            // From every cursor (including past each page's end and past the last page).
            for page in 0..page_count + 2 {
                let carved = s.slabs.pages.get(page as usize).map_or(0, |p| p.carved);
                for chunk in 0..carved + 2 {
                    let from = WalkCursor { page, chunk };
                    let expected: Vec<Vec<u8>> = reference
                        .iter()
                        .filter(|(at, _)| *at >= from)
                        .map(|(_, k)| k.clone())
                        .collect();
                    assert_eq!(
                        walk_in_steps(&s, class, from, 3, later),
                        expected,
                        "{from:?}"
                    );
                }
            }
        }
        // Past the last page (or at an absurd one) the walk is over.
        let far = WalkCursor {
            page: u32::MAX,
            chunk: u32::MAX,
        };
        assert_eq!(
            s.for_each_live_item_from(ClassSet::ALL, far, 10, now, |_| true),
            None
        );
    }

    #[test]
    fn a_walk_stops_after_the_item_visit_refuses_and_resumes_past_it() {
        let now = START;
        let s = mixed_store(now);
        let all = walk_in_steps(&s, None, WalkCursor::START, usize::MAX, now);
        let mut seen = Vec::new();
        let mut cursor = Some(WalkCursor::START);
        while let Some(at) = cursor {
            // One item per step: the visit asks to stop after each.
            cursor = s.for_each_live_item_from(ClassSet::ALL, at, usize::MAX, now, |m| {
                seen.push(m.key.to_vec());
                false
            });
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn releasing_a_page_behind_the_cursor_skips_nothing_ahead() {
        // One class, five full pages. Releasing the first page shifts the others down one
        // place in the class's page list; a walk by page id does not care.
        let now = START;
        let mut s = store(5);
        for i in 0..1000 {
            set(&mut s, &format!("key{i:04}"), 20, now);
        }
        let class = s
            .slabs
            .class_for(ItemRef::new(s.slabs.chunk(Loc { page: 0, chunk: 0 })).total_bytes());
        assert_eq!(s.slabs.classes[usize::from(class)].pages.len(), 5);
        let per_page = s.slabs.pages[0].carved as usize;
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut visited = 0;
        let limit = per_page + per_page / 2;
        let cursor = s.for_each_live_item_from(
            ClassSet::only(class),
            WalkCursor::START,
            usize::MAX,
            now,
            |m| {
                seen.push(m.key.to_vec());
                visited += 1;
                visited < limit
            },
        );
        let cursor = cursor.expect("stopped mid-walk");
        assert_eq!(cursor.page, 1);
        s.evict_page(0, now);
        s.check_invariants();
        let pages = &s.slabs.classes[usize::from(class)].pages;
        assert_eq!(pages, &[1, 2, 3, 4], "the others keep their order");
        let ahead = live_positions(&s, Some(class), now);
        seen.extend(walk_in_steps(&s, Some(class), cursor, 7, now));
        // Every item that stayed live, exactly once (page 0's items are gone).
        let mut expected: Vec<Vec<u8>> = ahead.into_iter().map(|(_, k)| k).collect();
        let mut got: Vec<Vec<u8>> = seen.split_off(per_page);
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_cursor_into_a_released_or_reused_page_resumes_safely() {
        let now = START;
        let mut s = store(8);
        for i in 0..150 {
            set(&mut s, &format!("a{i:03}"), 20, now);
        }
        let pages = s.slabs.pages.len() as u32;
        assert!(pages >= 3);
        assert_eq!(s.stats().evictions, 0);
        let cursor = WalkCursor {
            page: 1,
            chunk: s.slabs.pages[1].carved - 1,
        };
        s.evict_page(1, now);
        s.check_invariants();
        // The released page is skipped; later pages are walked.
        let later: Vec<Vec<u8>> = live_positions(&s, None, now)
            .into_iter()
            .filter(|(at, _)| at.page > 1)
            .map(|(_, k)| k)
            .collect();
        assert!(!later.is_empty());
        assert_eq!(walk_in_steps(&s, None, cursor, 4, now), later);
        // The page id comes back in a class of one chunk per page: the cursor's chunk is past
        // its end.
        set(&mut s, "big", 950, now);
        assert!(!s.slabs.pages[1].vacant, "the released id was reused");
        assert_eq!(s.slabs.pages[1].carved, 1);
        assert_eq!(walk_in_steps(&s, None, cursor, 4, now), later);
        // From the start of that page, the new item is seen.
        let from_page = walk_in_steps(&s, None, WalkCursor { page: 1, chunk: 0 }, 4, now);
        assert_eq!(from_page.first().map(Vec::as_slice), Some(&b"big"[..]));
    }

    #[test]
    fn items_live_for_a_whole_walk_across_changes_are_seen_once() {
        // Steps of the walk interleaved with sets, rewrites, deletes and page releases, from a
        // seeded generator: every stable item (never touched, still there at the end) is seen
        // exactly once, and every key seen was stored at some point.
        for seed in 1..=20u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let now = START;
            let mut s = store(24);
            let stable: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
            for (i, k) in stable.iter().enumerate() {
                set(&mut s, k, 10 + (i % 3) * 90, now);
            }
            let mut seen: Vec<String> = Vec::new();
            let mut cursor = Some(WalkCursor::START);
            let mut temp = 0u64;
            while let Some(at) = cursor {
                cursor =
                    s.for_each_live_item_from(ClassSet::ALL, at, 1 + next(40) as usize, now, |m| {
                        seen.push(String::from_utf8(m.key.to_vec()).unwrap());
                        true
                    });
                match next(4) {
                    0 => {
                        for _ in 0..next(20) {
                            temp += 1;
                            set(
                                &mut s,
                                &format!("t{}", next(temp + 1)),
                                next(300) as usize,
                                now,
                            );
                        }
                    }
                    1 => {
                        let k = format!("t{}", next(temp + 1));
                        s.delete(k.as_bytes(), hash(k.as_bytes()), now);
                    }
                    2 => {
                        // Release a random page (its items are no longer stable).
                        let live: Vec<u32> = (0..s.slabs.pages.len() as u32)
                            .filter(|&p| !s.slabs.pages[p as usize].vacant)
                            .collect();
                        if !live.is_empty() {
                            s.evict_page(live[next(live.len() as u64) as usize], now);
                        }
                    }
                    _ => {}
                }
                s.check_invariants();
            }
            for k in &stable {
                let live_now = s.get(k.as_bytes(), hash(k.as_bytes()), now).is_some();
                let times = seen.iter().filter(|&x| x == k).count();
                if live_now {
                    assert_eq!(times, 1, "seed {seed}: {k}");
                } else {
                    assert!(times <= 1, "seed {seed}: {k}");
                }
            }
            assert!(seen
                .iter()
                .all(|k| k.starts_with('s') || k.starts_with('t')));
        }
    }
}
