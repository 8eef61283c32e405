//! Admin operations on a store: the live-item walk behind `lru_crawler metadump`, and changing
//! the memory budget online (`cache_memlimit`).
//!
//! Shrinking evicts whole pages, emptiest first (fewest linked items), until the pages held fit
//! the new budget; growing only raises the budget (pages are allocated lazily anyway). Both keep
//! every invariant `Store::check_invariants` walks.

use super::item::ItemRef;
use super::slab::{Loc, PAGE_COUNT_MAX};
use super::{Store, Unlink};
use crate::clock::Instant32;

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
}

impl Store {
    /// The number of slab classes (valid ids are `0..class_count()`).
    pub fn class_count(&self) -> usize {
        self.slabs.classes.len()
    }

    /// Visits every live item of `class` (all classes if `None`), in page order, until `visit`
    /// returns false. Dead items (expired, flushed) are skipped, not reclaimed.
    pub fn for_each_live_item(
        &self,
        class: Option<u8>,
        now: Instant32,
        mut visit: impl FnMut(ItemMeta<'_>) -> bool,
    ) {
        let classes = match class {
            Some(c) => u32::from(c)..u32::from(c) + 1,
            None => 0..self.slabs.classes.len() as u32,
        };
        for class in classes {
            let Some(class_ref) = self.slabs.classes.get(class as usize) else {
                return;
            };
            for &page in &class_ref.pages {
                let carved = self.slabs.pages[page as usize].carved;
                for chunk in 0..carved {
                    let item = ItemRef::new(self.slabs.chunk(Loc { page, chunk }));
                    if !item.is_linked() || self.dead_reason(item, now).is_some() {
                        continue;
                    }
                    let meta = ItemMeta {
                        key: item.key(),
                        expires_at: item.expires_at(),
                        last_access: item.last_access(),
                        cas: self.cas_of(item.seq()),
                        fetched: item.is_fetched(),
                        slab_class: class as u8,
                        total_bytes: item.total_bytes(),
                    };
                    if !visit(meta) {
                        return;
                    }
                }
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
                return; // a huge item's page goes away with its item
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
        s.for_each_live_item(None, now, |m| {
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
        s.for_each_live_item(None, now.plus(10), |m| {
            seen.push((m.key.to_vec(), m.fetched, m.cas));
            true
        });
        assert_eq!(seen, vec![(b"a".to_vec(), false, 1)]);
        let mut count = 0;
        s.for_each_live_item(None, now, |_| {
            count += 1;
            false
        });
        assert_eq!(count, 1);
    }
}
