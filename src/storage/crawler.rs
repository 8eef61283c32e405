//! The crawler: a budgeted sweep over every class's chunks that reclaims dead items (expired
//! or flushed), so memory comes back even for keys nobody reads again.
//!
//! The cursor (class, page index, chunk) persists between calls; each call examines at most
//! `budget_items` chunks. Page moves may shift the page list under the cursor; the cursor is
//! then clamped, which can skip or revisit a few chunks (harmless for a sweep).
//!
//! A pass asked for with `lru_crawler crawl <ids>` sweeps only those classes; `tocrawl` (memcached's
//! `lru_crawler tocrawl`) caps the items checked per class in one pass, for every sweep.

use super::item::ItemRef;
use super::slab::Loc;
use super::{Store, Unlink};
use crate::clock::Instant32;

/// Where the sweep is.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cursor {
    class: usize,
    page_index: usize,
    chunk: u32,
    /// Linked items checked in `class` during this pass (for `tocrawl`).
    checked_in_class: u32,
}

/// A set of slab classes (internal indices; a class index is a `u8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassSet([u64; 4]);

impl ClassSet {
    pub const ALL: ClassSet = ClassSet([u64::MAX; 4]);
    pub const EMPTY: ClassSet = ClassSet([0; 4]);

    /// The set of one class.
    pub fn only(class: u8) -> ClassSet {
        let mut set = ClassSet::EMPTY;
        set.insert(class);
        set
    }

    pub fn insert(&mut self, class: u8) {
        self.0[usize::from(class / 64)] |= 1 << (class % 64);
    }

    pub fn contains(&self, class: usize) -> bool {
        class < 256 && self.0[class / 64] & (1 << (class % 64)) != 0
    }
}

impl Cursor {
    fn at_start(&self) -> bool {
        self.class == 0 && self.page_index == 0 && self.chunk == 0
    }
}

impl Store {
    /// Asks for a whole pass over `classes` (`lru_crawler crawl`): the sweep starts over, and
    /// [`Store::crawl_pass_requested`] holds until a call to [`Store::crawl`] ends the pass.
    /// The sweeps after it cover every class again.
    pub fn request_crawl_pass(&mut self, classes: ClassSet) {
        self.crawl_cursor = Cursor::default();
        self.crawl_pass = true;
        self.crawl_classes = classes;
    }

    /// Whether a pass asked for by [`Store::request_crawl_pass`] is still under way.
    pub fn crawl_pass_requested(&self) -> bool {
        self.crawl_pass
    }

    /// Examines at most `budget_items` chunks, and at most one pass over every class (or the
    /// classes of a requested pass), checking at most `tocrawl` linked items per class in a pass
    /// (0: all), reclaiming dead items; returns how many it reclaimed (also counted in
    /// `reclaimed` and `crawler_reclaimed`; the linked items it looked at count in
    /// `crawler_items_checked`).
    pub fn crawl(&mut self, now: Instant32, budget_items: usize, tocrawl: u32) -> usize {
        self.tick(now);
        let mut reclaimed = 0;
        let mut examined = 0;
        // Empty classes cost a step each, so the loop ends even when nothing is stored.
        let mut steps = 0;
        let steps_max = budget_items + self.slabs.classes.len() + 1;
        while examined < budget_items && steps < steps_max {
            // One pass at most per call: a small cache is not swept again in the same call.
            let cursor = &self.crawl_cursor;
            if steps > 0 && (cursor.class >= self.slabs.classes.len() || cursor.at_start()) {
                break;
            }
            steps += 1;
            let Some(loc) = self.crawl_next(tocrawl) else {
                continue;
            };
            examined += 1;
            let item = ItemRef::new(self.slabs.chunk(loc));
            if !item.is_linked() {
                continue;
            }
            self.crawl_cursor.checked_in_class += 1;
            self.counters.crawler_items_checked += 1;
            self.class_counters[usize::from(self.slabs.class_of(loc))].crawler_items_checked += 1;
            if self.dead_reason(item, now).is_some() {
                self.unlink_loc(loc, Unlink::CrawlerReclaimed);
                reclaimed += 1;
            }
        }
        // A pass ends with the cursor past the last class.
        if self.crawl_cursor.class >= self.slabs.classes.len() && self.crawl_pass {
            self.crawl_pass = false;
            self.crawl_classes = ClassSet::ALL;
        }
        reclaimed
    }

    /// The next chunk to examine, or None when the cursor moved to the next class. Counts a
    /// pass over every class as it begins, if anything is stored (memcached's
    /// `lru_crawler_starts`).
    fn crawl_next(&mut self, tocrawl: u32) -> Option<Loc> {
        let cursor = &mut self.crawl_cursor;
        if cursor.class >= self.slabs.classes.len() {
            *cursor = Cursor::default();
        }
        if cursor.at_start() && self.curr_items > 0 {
            self.counters.lru_crawler_starts += 1;
        }
        let class = &self.slabs.classes[cursor.class];
        let class_done = !self.crawl_classes.contains(cursor.class)
            || (tocrawl > 0 && cursor.checked_in_class >= tocrawl);
        if class_done || cursor.page_index >= class.pages.len() {
            cursor.class += 1;
            cursor.page_index = 0;
            cursor.chunk = 0;
            cursor.checked_in_class = 0;
            return None;
        }
        let page_id = class.pages[cursor.page_index];
        let page = &self.slabs.pages[page_id as usize];
        if cursor.chunk >= page.carved {
            cursor.page_index += 1;
            cursor.chunk = 0;
            return None;
        }
        let loc = Loc {
            page: page_id,
            chunk: cursor.chunk,
        };
        cursor.chunk += 1;
        Some(loc)
    }
}
