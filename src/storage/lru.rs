//! Recency and room-making: CLOCK eviction within a class, and moving pages between classes.
//!
//! **CLOCK** (pointer-free LRU approximation): each item has a 2-bit count in its state byte.
//! A store starts it at 0; every read adds 1 (up to 3). Each class has a hand sweeping its
//! pages' chunks: a dead item is reclaimed, a count above 0 is decremented and skipped, a 0 is
//! evicted. So a burst of new writes (a scan) evicts other unread items first, and a read item
//! survives up to three passes of the hand. One search looks at most [`CLOCK_SCAN_MAX`] chunks,
//! then evicts the lowest count seen (bounded latency). There is no separate bump rate limit:
//! a read costs one byte and four bytes of writes in the item's own cache line.
//!
//! **Rebalancing** (page moves): a class that needs a chunk and has no page takes one from
//! another class. A class that has pages normally evicts its own items, but once it has evicted
//! a page's worth of items since it last gained a page, it takes a page instead from the class
//! with the fewest recent evictions, if that class is under less than half its pressure and
//! (`slabs automove 1`) has gone cold and has a page to spare (see `colder`). The
//! moved page is the one under the donor's hand; its items are evicted (or reclaimed if dead).
//! After every move all windows halve, so pressure is measured over recent history. A workload
//! that shifts from small to large items therefore gets the memory back within a few pages.
//! `slabs automove 0` keeps only the moves to a class with no page; `2` moves after any eviction
//! (memcached's modes; 1 is the default).

use super::item::{ItemMut, ItemRef};
use super::slab::Loc;
use super::{Store, StoreError, Unlink};
use crate::clock::Instant32;

/// The most chunks one CLOCK search examines before evicting the best candidate seen.
pub const CLOCK_SCAN_MAX: usize = 1024;
/// The most room-making steps (evictions or page moves) one allocation may take.
const ROOM_STEPS_MAX: usize = 1 << 20;

impl Store {
    /// Allocates a chunk for an item of `total_bytes`, making room if needed.
    pub(super) fn alloc(&mut self, total_bytes: usize, now: Instant32) -> Result<Loc, StoreError> {
        let class = self.slabs.class_for(total_bytes);
        let units = self.slabs.units_for(class, total_bytes);
        if units > self.slabs.units_max {
            self.class_counters[usize::from(class)].outofmemory += 1;
            return Err(StoreError::OutOfMemory);
        }
        self.last_store[usize::from(class)] = Some(now);
        for _ in 0..ROOM_STEPS_MAX {
            if let Some(loc) = self.slabs.try_alloc(class, total_bytes) {
                return Ok(loc);
            }
            if !self.make_room(class, units, now) {
                break;
            }
        }
        self.class_counters[usize::from(class)].outofmemory += 1;
        Err(StoreError::OutOfMemory)
    }

    /// One step towards room for `class`: an eviction or a page move. False if impossible.
    fn make_room(&mut self, class: u8, units: usize, now: Instant32) -> bool {
        if !self.cfg.evictions_enabled {
            return self.reclaim_dead(class, now) || self.move_empty_page(class);
        }
        let class_index = usize::from(class);
        let has_pages = !self.slabs.classes[class_index].pages.is_empty();
        if class == self.slabs.huge_class() {
            // Units are what is short: evict huge items first, then take pages from others.
            debug_assert!(self.slabs.units_free() < units);
            return (has_pages && self.clock_evict(class, now)) || self.move_page(class, true, now);
        }
        if !has_pages {
            return self.move_page(class, true, now);
        }
        // `slabs automove`: 0 never moves by pressure, 1 after a page's worth of evictions,
        // 2 after any.
        let chunks_per_page = u64::from(self.slabs.classes[class_index].chunks_per_page);
        let threshold = match self.automove {
            0 => u64::MAX,
            1 => chunks_per_page,
            _ => 1,
        };
        if self.evictions_window[class_index] >= threshold && self.move_page(class, false, now) {
            return true;
        }
        self.clock_evict(class, now) || self.move_page(class, true, now)
    }

    /// Evicts (or reclaims) one item of `class` chosen by the CLOCK hand.
    pub(super) fn clock_evict(&mut self, class: u8, now: Instant32) -> bool {
        let mut best: Option<(u8, Loc)> = None;
        for _ in 0..CLOCK_SCAN_MAX {
            let Some(loc) = self.hand_next(class) else {
                break;
            };
            if Some(loc) == self.pinned {
                continue;
            }
            let item = ItemRef::new(self.slabs.chunk(loc));
            if !item.is_linked() {
                continue;
            }
            if self.dead_reason(item, now).is_some() {
                self.unlink_loc(loc, Unlink::Reclaimed);
                return true;
            }
            let clock = item.clock();
            if clock == 0 {
                self.unlink_loc(loc, Unlink::Evicted);
                return true;
            }
            ItemMut::new(self.slabs.chunk_mut(loc)).set_clock(clock - 1);
            if best.is_none_or(|(best_clock, _)| clock - 1 < best_clock) {
                best = Some((clock - 1, loc));
            }
        }
        match best {
            Some((_, loc)) => {
                self.unlink_loc(loc, Unlink::Evicted);
                true
            }
            None => false,
        }
    }

    /// `-M`: reclaims one dead (expired or flushed) item of `class` under the CLOCK hand,
    /// looking at most [`CLOCK_SCAN_MAX`] chunks; live items are left as they are.
    fn reclaim_dead(&mut self, class: u8, now: Instant32) -> bool {
        for _ in 0..CLOCK_SCAN_MAX {
            let Some(loc) = self.hand_next(class) else {
                return false;
            };
            let item = ItemRef::new(self.slabs.chunk(loc));
            if Some(loc) != self.pinned && item.is_linked() && self.dead_reason(item, now).is_some()
            {
                self.unlink_loc(loc, Unlink::Reclaimed);
                return true;
            }
        }
        false
    }

    /// `-M`: gives `class` the budget of a page of another class that holds no item (so
    /// nothing is evicted). False if no class has an empty page.
    fn move_empty_page(&mut self, class: u8) -> bool {
        let empty = self
            .slabs
            .classes
            .iter()
            .enumerate()
            .filter(|(donor, _)| *donor != usize::from(class))
            .flat_map(|(_, donor)| donor.pages.iter().copied())
            .find(|&id| {
                let page = &self.slabs.pages[id as usize];
                !page.vacant && page.carved == page.free_count
            });
        let Some(page_id) = empty else {
            return false;
        };
        self.slabs.release_page(page_id);
        self.counters.slabs_moved += 1;
        true
    }

    /// The chunk under the class's hand, advancing it. None if the class has no chunks.
    fn hand_next(&mut self, class: u8) -> Option<Loc> {
        let page_count = self.slabs.classes[usize::from(class)].pages.len();
        // At most one wrap over all pages to find a page with carved chunks.
        for _ in 0..=page_count {
            let class_ref = &mut self.slabs.classes[usize::from(class)];
            if class_ref.hand_page >= class_ref.pages.len() {
                class_ref.hand_page = 0;
                class_ref.hand_chunk = 0;
                if class_ref.pages.is_empty() {
                    return None;
                }
            }
            let page_id = class_ref.pages[class_ref.hand_page];
            let carved = self.slabs.pages[page_id as usize].carved;
            let class_ref = &mut self.slabs.classes[usize::from(class)];
            if class_ref.hand_chunk < carved {
                let loc = Loc {
                    page: page_id,
                    chunk: class_ref.hand_chunk,
                };
                class_ref.hand_chunk += 1;
                return Some(loc);
            }
            class_ref.hand_page += 1;
            class_ref.hand_chunk = 0;
        }
        None
    }

    /// Unlinks the item at `loc` (found in the table by re-hashing its key).
    pub(super) fn unlink_loc(&mut self, loc: Loc, why: Unlink) {
        let key_hash = (self.cfg.key_hash)(ItemRef::new(self.slabs.chunk(loc)).key());
        let slot = self.slot_of(key_hash, loc);
        self.unlink(slot, why);
    }

    /// Moves a page from a donor class to the free budget for `class`. `forced`: any donor
    /// with a page will do; otherwise only one under less than half of `class`'s pressure.
    fn move_page(&mut self, class: u8, forced: bool, now: Instant32) -> bool {
        let Some((_donor, page_id)) = self.pick_donor(class, forced) else {
            return false;
        };
        self.evict_page(page_id, now);
        self.counters.slabs_moved += 1;
        for window in &mut self.evictions_window {
            *window /= 2;
        }
        self.evictions_window[usize::from(class)] = 0;
        true
    }

    /// `slabs automove 1`: whether `donor`'s items are used so much less than `taker`'s that a
    /// page is worth more in `taker`. A donor that has never evicted is cold once it has stored
    /// nothing for a second; one that has evicted, once it has stored nothing for twice the age
    /// at which the taker evicts (plus two seconds), or when it evicts items idle that long
    /// itself. Classes that all evict items of about the same age keep their pages, as
    /// memcached's automover keeps them (it compares the ages at the classes' tails). Without
    /// this rule pages kept moving to the classes of fewest chunks per page (they reach a page's
    /// worth of evictions first), each move evicting a page of live items: at `-m 64`, values of
    /// 1 to 100,000 bytes gave a hit ratio of 0.366, against 0.390 with moves off and memcached's
    /// 0.41.
    fn colder(&self, donor: usize, taker: usize) -> bool {
        let idle = self.last_store[donor].map_or(u32::MAX, |at| self.now_latest.since(at));
        if self.last_eviction[donor].is_none() {
            return idle >= 1;
        }
        let bar = self.eviction_age[taker].saturating_mul(2).saturating_add(2);
        idle >= bar || self.eviction_age[donor] >= bar
    }

    /// The donor class and the page to take (the one under its hand, never the pinned page).
    fn pick_donor(&self, class: u8, forced: bool) -> Option<(u8, u32)> {
        let pinned_page = self.pinned.map(|loc| loc.page);
        let pressure = self.evictions_window[usize::from(class)];
        let mut best: Option<(u64, usize, u8, u32)> = None;
        for (donor, donor_ref) in self.slabs.classes.iter().enumerate() {
            if donor == usize::from(class) || donor_ref.pages.is_empty() {
                continue;
            }
            let window = self.evictions_window[donor];
            if !forced && window * 2 >= pressure {
                continue;
            }
            // A class keeps its last page unless the taker has none: taking it only makes the
            // donor take one back (evicting another page) the next time it stores an item.
            if !forced
                && self.automove == 1
                && (donor_ref.pages.len() < 2 || !self.colder(donor, usize::from(class)))
            {
                continue;
            }
            let hand = donor_ref.hand_page.min(donor_ref.pages.len() - 1);
            let candidates = [hand, (hand + 1) % donor_ref.pages.len()];
            let Some(page_id) = candidates
                .iter()
                .map(|&i| donor_ref.pages[i])
                .find(|&p| Some(p) != pinned_page)
            else {
                continue;
            };
            // Fewest recent evictions first, then the most pages.
            let rank = (window, usize::MAX - donor_ref.pages.len());
            if best.is_none_or(|(w, p, _, _)| rank < (w, p)) {
                best = Some((rank.0, rank.1, donor as u8, page_id));
            }
        }
        best.map(|(_, _, donor, page_id)| (donor, page_id))
    }
}
