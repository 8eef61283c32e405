//! Slab classes, pages and per-page chunk free lists (allocation only; eviction is in `lru.rs`).
//!
//! * A **page** is `page_size` bytes, allocated lazily (so RSS tracks use) while the shard's
//!   budget of `memory_bytes_max / page_size` page units lasts, and owned by one slab class.
//! * A page is **carved** lazily: chunks `0..carved` have been handed out at least once; freed
//!   chunks go on the page's own intrusive free list (the link lives in the free chunk). Keeping
//!   free lists per page lets a whole page be taken away from a class in O(pages of the class).
//! * **Classes**: chunk sizes step by 8 bytes up to [`FINE_CLASS_BYTES_MAX`], then grow by
//!   `slab_growth_factor` (8-byte aligned); the last normal class is `page_size` (one chunk per
//!   page). Fine steps near small sizes keep chunk waste under 8 bytes where most items live.
//!   They add some 20 classes, and each class in use holds at least a page, so a shard with
//!   few pages goes without them (`fine_bytes_max` 0: growth by the factor from the start).
//!   A shard with many pages also splits each growth step in `growth_steps` (the factor's
//!   `growth_steps`-th root per class): twice the classes above the fine steps, and half the
//!   chunk waste of items larger than them.
//! * The **huge** class (the last id) holds items larger than a page: each gets its own exact
//!   allocation, charged `ceil(bytes / page_size)` page units against the same budget. The last
//!   one freed is kept as a spare for the next (memcached's classes likewise keep the pages
//!   their items leave): it stays charged, and is given up as soon as the budget runs short.
//!
//! Invariants (checked by `Store::check_invariants`): `units_used` is the sum of live pages'
//! units and the spare's, and never exceeds `units_max`; every page is in exactly its class's `pages`; a page is in
//! its class's `partial` list iff it has a free or uncarved chunk.

use super::item;
use super::pagemem::{PageArena, PageBuf};

/// Chunk sizes step by 8 bytes up to this size, then by the growth factor.
pub const FINE_CLASS_BYTES_MAX: usize = 256;
/// The smallest chunk: a 16-byte header plus a short key and value.
pub const CHUNK_BYTES_SMALLEST: usize = 24;
/// Class ids are a `u8`; the last one is the huge class.
pub const CLASS_COUNT_MAX: usize = 200;
/// "No chunk" in a free-list link.
pub const NONE: u32 = u32::MAX;
/// Table slots hold 24 bits of page id and 24 bits of chunk index.
pub const PAGE_COUNT_MAX: usize = 1 << 24;
pub const CHUNKS_PER_PAGE_MAX: usize = 1 << 24;

const _: () = assert!(CHUNK_BYTES_SMALLEST >= item::CHUNK_BYTES_MIN);
const _: () = assert!(CLASS_COUNT_MAX <= u8::MAX as usize);

/// Where an item lives: a page and a chunk index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    pub page: u32,
    pub chunk: u32,
}

/// One slab class.
pub struct SlabClass {
    /// 0 for the huge class (each item sized exactly).
    pub chunk_size: usize,
    pub chunks_per_page: u32,
    /// Pages owned by this class.
    pub pages: Vec<u32>,
    /// Pages of this class with a free or uncarved chunk (a stack).
    pub partial: Vec<u32>,
    /// CLOCK hand: an index into `pages` and a chunk index.
    pub hand_page: usize,
    pub hand_chunk: u32,
    /// Chunks holding a linked item.
    pub used_chunks: usize,
    /// Sum of the total bytes of the items in this class.
    pub mem_requested: usize,
}

/// One page: a class's chunks, or one huge item.
pub struct Page {
    pub buf: PageBuf,
    pub class: u8,
    /// Budget units charged (1 for a normal page).
    pub units: u32,
    pub carved: u32,
    pub free_head: u32,
    pub free_count: u32,
    pub in_partial: bool,
    /// A released page id waiting for reuse.
    pub vacant: bool,
}

impl Page {
    fn has_room(&self, chunks_per_page: u32) -> bool {
        !self.vacant && (self.free_head != NONE || self.carved < chunks_per_page)
    }
}

/// The allocator: classes, pages, and the page budget.
pub struct Slabs {
    pub classes: Vec<SlabClass>,
    pub pages: Vec<Page>,
    vacant_page_ids: Vec<u32>,
    pub units_used: usize,
    pub units_max: usize,
    pub page_size: usize,
    /// Pages handed back by `slabs reassign <class> 0` and not taken since: memcached's global
    /// page pool. New pages come out of it first; the rest of the budget never held a page.
    pool_pages: usize,
    /// The memory of the huge item freed last and the units it is still charged: the next huge
    /// item of the same charge takes it instead of allocating (and zeroing) as much again,
    /// which an overwrite of a large value would otherwise pay on every `set`.
    spare_huge: Option<(PageBuf, u32)>,
    /// Where page memory comes from (declared after `pages`, so it drops after them).
    arena: PageArena,
}

/// The chunk sizes of the normal classes for a page size, growth factor, smallest chunk (`-n`;
/// [`CHUNK_BYTES_SMALLEST`] by default), the size below which they step by 8 bytes, and the
/// classes per growth factor above it (`growth_steps`).
///
/// With one step per factor each size is the one below times the factor, rounded up to 8
/// bytes (memcached's rule). With more, size `k` above the fine steps is the first of them
/// times the factor to the power `k / growth_steps`, rounded up to 8 bytes: taken from that
/// base, the roundings do not compound into a wider ratio. A split that would run out of
/// class ids before the page size (a small `-f`) is not taken: every item above the last
/// class would fall into the page-sized one.
pub fn class_sizes(
    page_size: usize,
    slab_growth_factor: f64,
    chunk_smallest: usize,
    fine_bytes_max: usize,
    growth_steps: u32,
) -> Vec<usize> {
    let sizes = class_sizes_capped(
        page_size,
        slab_growth_factor,
        chunk_smallest,
        fine_bytes_max,
        growth_steps,
    );
    if growth_steps > 1 && sizes.len() >= CLASS_COUNT_MAX - 1 {
        return class_sizes_capped(
            page_size,
            slab_growth_factor,
            chunk_smallest,
            fine_bytes_max,
            1,
        );
    }
    sizes
}

fn class_sizes_capped(
    page_size: usize,
    slab_growth_factor: f64,
    chunk_smallest: usize,
    fine_bytes_max: usize,
    growth_steps: u32,
) -> Vec<usize> {
    assert!(page_size >= chunk_smallest, "page_size too small");
    assert!(slab_growth_factor > 1.0, "slab_growth_factor must exceed 1");
    assert!(growth_steps >= 1, "at least one class per growth factor");
    assert!(
        chunk_smallest >= CHUNK_BYTES_SMALLEST,
        "smallest chunk below the minimum"
    );
    assert_eq!(chunk_smallest % 8, 0, "chunk sizes are 8-byte aligned");
    let step_factor = slab_growth_factor.powf(1.0 / f64::from(growth_steps));
    let mut sizes = Vec::new();
    let mut size = chunk_smallest;
    // The first size grown by the factor, and how many steps above it `size` is.
    let mut base: Option<(usize, i32)> = None;
    while size < page_size && sizes.len() < CLASS_COUNT_MAX - 2 {
        sizes.push(size);
        let grown = if size < fine_bytes_max {
            size + 8
        } else if growth_steps == 1 {
            ((size as f64 * slab_growth_factor) as usize).next_multiple_of(8)
        } else {
            let (from, k) = *base.get_or_insert((size, 0));
            base = Some((from, k + 1));
            ((from as f64 * step_factor.powi(k + 1)).ceil() as usize).next_multiple_of(8)
        };
        size = grown.max(size + 8);
    }
    sizes.push(page_size);
    sizes
}

impl Slabs {
    pub fn new(page_size: usize, slab_growth_factor: f64, memory_bytes_max: usize) -> Slabs {
        Slabs::with_classes(
            page_size,
            slab_growth_factor,
            CHUNK_BYTES_SMALLEST,
            FINE_CLASS_BYTES_MAX,
            1,
            memory_bytes_max,
        )
    }

    /// [`Slabs::new`] with classes starting at `chunk_smallest` bytes (`-n`), stepping by 8
    /// bytes below `fine_bytes_max`, and `growth_steps` classes per growth factor above it
    /// (see [`class_sizes`]).
    pub fn with_classes(
        page_size: usize,
        slab_growth_factor: f64,
        chunk_smallest: usize,
        fine_bytes_max: usize,
        growth_steps: u32,
        memory_bytes_max: usize,
    ) -> Slabs {
        let sizes = class_sizes(
            page_size,
            slab_growth_factor,
            chunk_smallest,
            fine_bytes_max,
            growth_steps,
        );
        let mut classes: Vec<SlabClass> = sizes
            .iter()
            .map(|&chunk_size| {
                let chunks_per_page = page_size / chunk_size;
                assert!(chunks_per_page < CHUNKS_PER_PAGE_MAX, "page_size too large");
                SlabClass::new(chunk_size, chunks_per_page as u32)
            })
            .collect();
        classes.push(SlabClass::new(0, 1));
        let units_max = (memory_bytes_max / page_size).clamp(1, PAGE_COUNT_MAX - 1);
        Slabs {
            classes,
            pages: Vec::new(),
            vacant_page_ids: Vec::new(),
            pool_pages: 0,
            spare_huge: None,
            units_used: 0,
            units_max,
            page_size,
            arena: PageArena::new(page_size, false),
        }
    }

    /// Takes page memory from huge-page regions (`-L`) instead of the heap.
    pub fn with_large_pages(mut self, on: bool) -> Slabs {
        self.arena = PageArena::new(self.page_size, on);
        self
    }

    /// The huge class's id.
    pub fn huge_class(&self) -> u8 {
        (self.classes.len() - 1) as u8
    }

    /// The class for an item of `total_bytes`: the smallest chunk that holds it, else huge.
    pub fn class_for(&self, total_bytes: usize) -> u8 {
        let normal = &self.classes[..self.classes.len() - 1];
        let index = normal.partition_point(|class| class.chunk_size < total_bytes);
        index as u8
    }

    /// Budget units an item of this class and size needs for a new page.
    pub fn units_for(&self, class: u8, total_bytes: usize) -> usize {
        if class == self.huge_class() {
            total_bytes.div_ceil(self.page_size).max(1)
        } else {
            1
        }
    }

    pub fn units_free(&self) -> usize {
        self.units_max - self.units_used
    }

    /// Pages in the global pool (`slab_global_page_pool`); a smaller budget shrinks it too.
    pub fn pool_pages(&self) -> usize {
        self.pool_pages.min(self.units_free())
    }

    /// Counts a page just released into the global pool.
    pub fn pool_put(&mut self) {
        self.pool_pages += 1;
    }

    /// Allocates a chunk from free lists, uncarved chunks or a new page; no eviction.
    pub fn try_alloc(&mut self, class: u8, total_bytes: usize) -> Option<Loc> {
        if class == self.huge_class() {
            return self.alloc_huge(total_bytes);
        }
        let class_index = usize::from(class);
        let chunks_per_page = self.classes[class_index].chunks_per_page;
        while let Some(&page_id) = self.classes[class_index].partial.last() {
            let page = &mut self.pages[page_id as usize];
            if page.has_room(chunks_per_page) && page.class == class {
                let chunk = take_chunk(page, self.classes[class_index].chunk_size, chunks_per_page);
                self.drop_full_partial(class_index, page_id);
                return Some(Loc {
                    page: page_id,
                    chunk,
                });
            }
            page.in_partial = false;
            self.classes[class_index].partial.pop();
        }
        if !self.reserve(1) {
            return None;
        }
        let page_id = self.new_page(class, 1, self.page_size);
        self.classes[class_index].partial.push(page_id);
        let page = &mut self.pages[page_id as usize];
        page.in_partial = true;
        let chunk = take_chunk(page, self.classes[class_index].chunk_size, chunks_per_page);
        self.drop_full_partial(class_index, page_id);
        Some(Loc {
            page: page_id,
            chunk,
        })
    }

    /// Gives `class` a fresh page now, if the budget has a page's worth (`slabs reassign`).
    /// The huge class takes its pages per item, so it gets nothing ahead.
    pub fn add_page(&mut self, class: u8) -> bool {
        if class == self.huge_class() || !self.reserve(1) {
            return false;
        }
        let page_id = self.new_page(class, 1, self.page_size);
        self.classes[usize::from(class)].partial.push(page_id);
        self.pages[page_id as usize].in_partial = true;
        true
    }

    /// Pops a page that just ran out of room off the top of its class's partial stack.
    fn drop_full_partial(&mut self, class_index: usize, page_id: u32) {
        let chunks_per_page = self.classes[class_index].chunks_per_page;
        let page = &mut self.pages[page_id as usize];
        if !page.has_room(chunks_per_page) {
            page.in_partial = false;
            let popped = self.classes[class_index].partial.pop();
            assert_eq!(popped, Some(page_id));
        }
    }

    /// Whether `units` of budget are free, giving up the spare huge allocation if that makes
    /// the difference.
    fn reserve(&mut self, units: usize) -> bool {
        if self.units_free() < units {
            self.drop_spare_huge();
        }
        self.units_free() >= units
    }

    /// Frees the spare huge allocation, if any, and returns its units to the budget.
    pub fn drop_spare_huge(&mut self) {
        if let Some((buf, units)) = self.spare_huge.take() {
            self.units_used -= units as usize;
            drop(buf);
        }
    }

    /// Budget units the spare huge allocation holds (0 without one).
    pub fn spare_huge_units(&self) -> usize {
        self.spare_huge
            .as_ref()
            .map_or(0, |(_, units)| *units as usize)
    }

    fn alloc_huge(&mut self, total_bytes: usize) -> Option<Loc> {
        let class = self.huge_class();
        let units = self.units_for(class, total_bytes);
        let page_id = match self.spare_huge.take() {
            // Same charge and room enough: the spare is already paid for.
            Some((buf, spare_units))
                if spare_units as usize == units && buf.len() >= total_bytes =>
            {
                self.place_page(class, spare_units, buf)
            }
            spare => {
                self.spare_huge = spare;
                if !self.reserve(units) {
                    return None;
                }
                self.new_page(class, units as u32, total_bytes)
            }
        };
        let page = &mut self.pages[page_id as usize];
        page.carved = 1;
        Some(Loc {
            page: page_id,
            chunk: 0,
        })
    }

    /// Charges `units` and lists a page of fresh memory of `bytes` in `class`.
    fn new_page(&mut self, class: u8, units: u32, bytes: usize) -> u32 {
        self.pool_pages = self.pool_pages().saturating_sub(units as usize);
        self.units_used += units as usize;
        assert!(self.units_used <= self.units_max);
        let buf = self.arena.alloc(bytes);
        self.place_page(class, units, buf)
    }

    /// Lists a page of `buf`, whose `units` are already charged, in `class`.
    fn place_page(&mut self, class: u8, units: u32, buf: PageBuf) -> u32 {
        let page = Page {
            buf,
            class,
            units,
            carved: 0,
            free_head: NONE,
            free_count: 0,
            in_partial: false,
            vacant: false,
        };
        let page_id = match self.vacant_page_ids.pop() {
            Some(id) => {
                self.pages[id as usize] = page;
                id
            }
            None => {
                assert!(self.pages.len() < PAGE_COUNT_MAX, "page ids exhausted");
                self.pages.push(page);
                (self.pages.len() - 1) as u32
            }
        };
        self.classes[usize::from(class)].pages.push(page_id);
        page_id
    }

    /// Returns a chunk whose item has been unlinked. A huge item's page goes, and its memory
    /// becomes the spare (the one spare before it is freed).
    pub fn free(&mut self, loc: Loc) {
        let class = self.pages[loc.page as usize].class;
        if class == self.huge_class() {
            let (buf, units) = self.vacate_page(loc.page);
            self.drop_spare_huge();
            self.spare_huge = Some((buf, units));
            return;
        }
        let chunk_size = self.classes[usize::from(class)].chunk_size;
        let page = &mut self.pages[loc.page as usize];
        assert!(loc.chunk < page.carved, "freeing an uncarved chunk");
        let start = loc.chunk as usize * chunk_size;
        item::write_free(&mut page.buf[start..start + chunk_size], page.free_head);
        page.free_head = loc.chunk;
        page.free_count += 1;
        if !page.in_partial {
            page.in_partial = true;
            self.classes[usize::from(class)].partial.push(loc.page);
        }
    }

    /// Takes a page away from its class and returns its units to the budget. Every item in it
    /// must already be unlinked.
    pub fn release_page(&mut self, page_id: u32) {
        let (buf, units) = self.vacate_page(page_id);
        self.units_used -= units as usize;
        self.arena.release(buf);
    }

    /// Takes a page out of its class and hands back its memory and the units it is charged
    /// (still counted in `units_used`).
    fn vacate_page(&mut self, page_id: u32) -> (PageBuf, u32) {
        let page = &mut self.pages[page_id as usize];
        assert!(!page.vacant, "releasing a vacant page");
        let class = usize::from(page.class);
        let units = page.units;
        page.vacant = true;
        page.in_partial = false;
        let buf = std::mem::take(&mut page.buf);
        let class = &mut self.classes[class];
        let index = class
            .pages
            .iter()
            .position(|&p| p == page_id)
            .expect("page listed in its class");
        // Kept in the order pages came (not swap_remove): the CLOCK hand sweeps them oldest
        // first, and for the huge class, one item a page, that order is the eviction order.
        // Moving the newest page into the hole under the hand evicted the newest items first.
        class.pages.remove(index);
        class.partial.retain(|&p| p != page_id);
        if index < class.hand_page {
            class.hand_page -= 1;
        } else if index == class.hand_page {
            class.hand_chunk = 0;
        }
        if class.hand_page >= class.pages.len() {
            class.hand_page = 0;
            class.hand_chunk = 0;
        }
        self.vacant_page_ids.push(page_id);
        (buf, units)
    }

    pub fn chunk_size_of(&self, loc: Loc) -> usize {
        let page = &self.pages[loc.page as usize];
        match self.classes[usize::from(page.class)].chunk_size {
            0 => page.buf.len(),
            size => size,
        }
    }

    /// Where a chunk starts and its size, if `loc` names a live page (for prefetching; the
    /// pointer is never dereferenced).
    pub fn chunk_ptr(&self, loc: Loc) -> Option<(*const u8, usize)> {
        let page = self.pages.get(loc.page as usize)?;
        // A huge item's class has chunk size 0: its one chunk starts the page.
        let size = self.classes.get(usize::from(page.class))?.chunk_size;
        let start = loc.chunk as usize * size;
        let rest = page.buf.get(start..)?;
        Some((rest.as_ptr(), if size == 0 { rest.len() } else { size }))
    }

    pub fn chunk(&self, loc: Loc) -> &[u8] {
        let size = self.chunk_size_of(loc);
        let start = loc.chunk as usize * size;
        &self.pages[loc.page as usize].buf[start..start + size]
    }

    pub fn chunk_mut(&mut self, loc: Loc) -> &mut [u8] {
        let size = self.chunk_size_of(loc);
        let start = loc.chunk as usize * size;
        &mut self.pages[loc.page as usize].buf[start..start + size]
    }

    pub fn class_of(&self, loc: Loc) -> u8 {
        self.pages[loc.page as usize].class
    }

    /// Bytes of page memory held (normal pages count whole; huge items and the spare their
    /// allocation).
    pub fn page_bytes(&self) -> usize {
        let spare = self.spare_huge.as_ref().map_or(0, |(buf, _)| buf.len());
        self.pages.iter().map(|page| page.buf.len()).sum::<usize>() + spare
    }

    /// Chunks of the class's pages not carved out yet.
    pub fn uncarved_chunks(&self, class: u8) -> usize {
        let class_ref = &self.classes[usize::from(class)];
        class_ref
            .pages
            .iter()
            .map(|&p| (class_ref.chunks_per_page - self.pages[p as usize].carved) as usize)
            .sum()
    }

    /// Chunks of the class's pages holding no item: free-listed or not carved out yet.
    pub fn free_chunks(&self, class: u8) -> usize {
        let free_listed: usize = self.classes[usize::from(class)]
            .pages
            .iter()
            .map(|&p| self.pages[p as usize].free_count as usize)
            .sum();
        free_listed + self.uncarved_chunks(class)
    }

    /// Walks pages, classes and free lists; panics on a broken invariant. Returns the number of
    /// free-listed chunks seen.
    pub fn check_invariants(&self) -> usize {
        let units: usize = self
            .pages
            .iter()
            .filter(|p| !p.vacant)
            .map(|p| p.units as usize)
            .sum();
        assert_eq!(
            units + self.spare_huge_units(),
            self.units_used,
            "units_used drifted"
        );
        assert!(self.units_used <= self.units_max, "over budget");
        let mut free_seen = 0;
        for (class_id, class) in self.classes.iter().enumerate() {
            for &page_id in &class.pages {
                let page = &self.pages[page_id as usize];
                assert!(!page.vacant, "class lists a vacant page");
                assert_eq!(usize::from(page.class), class_id, "page in the wrong class");
                assert!(page.carved <= class.chunks_per_page);
                let has_room = page.has_room(class.chunks_per_page);
                assert_eq!(page.in_partial, has_room && class.chunk_size != 0);
                if page.in_partial {
                    assert!(class.partial.contains(&page_id), "partial page not listed");
                }
                free_seen += self.check_free_list(page, class);
            }
            for &page_id in &class.partial {
                assert_eq!(usize::from(self.pages[page_id as usize].class), class_id);
            }
            assert!(class.hand_page <= class.pages.len());
        }
        free_seen
    }

    fn check_free_list(&self, page: &Page, class: &SlabClass) -> usize {
        let mut next = page.free_head;
        let mut count = 0u32;
        while next != NONE {
            assert!(next < page.carved, "free link past carved chunks");
            assert!(count < page.carved, "free list cycle");
            let start = next as usize * class.chunk_size;
            next = item::free_next(&page.buf[start..start + class.chunk_size]);
            count += 1;
        }
        assert_eq!(count, page.free_count, "free_count drifted");
        count as usize
    }
}

impl SlabClass {
    fn new(chunk_size: usize, chunks_per_page: u32) -> SlabClass {
        SlabClass {
            chunk_size,
            chunks_per_page,
            pages: Vec::new(),
            partial: Vec::new(),
            hand_page: 0,
            hand_chunk: 0,
            used_chunks: 0,
            mem_requested: 0,
        }
    }
}

fn take_chunk(page: &mut Page, chunk_size: usize, chunks_per_page: u32) -> u32 {
    if page.free_head != NONE {
        let chunk = page.free_head;
        let start = chunk as usize * chunk_size;
        page.free_head = item::free_next(&page.buf[start..start + chunk_size]);
        page.free_count -= 1;
        chunk
    } else {
        assert!(page.carved < chunks_per_page, "page has no room");
        page.carved += 1;
        page.carved - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_sizes_are_fine_then_grow() {
        let sizes = class_sizes(1 << 20, 1.25, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 1);
        assert_eq!(&sizes[..4], &[24, 32, 40, 48]);
        assert!(
            sizes.contains(&128),
            "a 127-byte item gets a 128-byte chunk"
        );
        assert_eq!(*sizes.last().unwrap(), 1 << 20);
        for pair in sizes.windows(2) {
            assert!(pair[1] > pair[0]);
            assert_eq!(pair[0] % 8, 0);
        }
        assert!(sizes.len() < CLASS_COUNT_MAX);
    }

    /// Without fine steps the classes grow by the factor from the smallest chunk: fewer
    /// classes, each at most a factor wider than the one below.
    #[test]
    fn class_sizes_without_fine_steps_grow_from_the_start() {
        let sizes = class_sizes(1 << 20, 1.25, CHUNK_BYTES_SMALLEST, 0, 1);
        assert_eq!(&sizes[..8], &[24, 32, 40, 56, 72, 96, 120, 152]);
        let fine = class_sizes(1 << 20, 1.25, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 1);
        assert!(
            sizes.len() + 20 <= fine.len(),
            "{} vs {}",
            sizes.len(),
            fine.len()
        );
        assert_eq!(*sizes.last().unwrap(), 1 << 20);
        for pair in sizes.windows(2) {
            assert!(pair[1] > pair[0] && pair[1] % 8 == 0);
            assert!(pair[1] as f64 <= pair[0] as f64 * 1.25 + 8.0, "{pair:?}");
        }
    }

    /// Two steps per factor: the fine steps are unchanged, then every class is at most the
    /// factor's square root (plus the 8-byte rounding) above the one below, every other class
    /// comes within rounding of one factor step, and there are about twice as many above 256.
    #[test]
    fn class_sizes_split_each_growth_step_when_asked() {
        let one = class_sizes(1 << 20, 1.25, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 1);
        let two = class_sizes(1 << 20, 1.25, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 2);
        let fine = one.iter().filter(|&&s| s <= FINE_CLASS_BYTES_MAX).count();
        assert_eq!(&one[..fine], &two[..fine]);
        assert_eq!(two[fine - 1], FINE_CLASS_BYTES_MAX);
        let (above_one, above_two) = (one.len() - fine, two.len() - fine);
        assert!(
            (2 * above_one - 4..=2 * above_one + 2).contains(&above_two),
            "{above_one} then {above_two}"
        );
        assert!(two.len() < CLASS_COUNT_MAX);
        assert_eq!(*two.last().unwrap(), 1 << 20);
        let root = 1.25f64.sqrt();
        for pair in two[fine - 1..two.len() - 1].windows(2) {
            assert!(pair[1] > pair[0] && pair[1] % 8 == 0, "{pair:?}");
            assert!(pair[1] as f64 <= pair[0] as f64 * root + 8.0, "{pair:?}");
        }
        // Taken from the base, k steps are the factor to the k/2 (rounded up to 8 bytes).
        for (k, &size) in two[fine - 1..two.len() - 1].iter().enumerate() {
            let exact = 256.0 * root.powi(k as i32);
            assert!(
                size as f64 >= exact && (size as f64) < exact + 8.0,
                "{k}: {size}"
            );
        }
        // A 1,050-byte item (1 KB value): 1,240-byte chunks with one step, 1,096 with two.
        let chunk_for = |sizes: &[usize], bytes| *sizes.iter().find(|&&s| s >= bytes).unwrap();
        assert_eq!(chunk_for(&one, 1050), 1240);
        assert_eq!(chunk_for(&two, 1050), 1096);
    }

    /// A factor so small that two steps per factor would use every class id long before the
    /// page size keeps one step per factor.
    #[test]
    fn a_split_that_runs_out_of_class_ids_is_not_taken() {
        let one = class_sizes(1 << 20, 1.05, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 1);
        let two = class_sizes(1 << 20, 1.05, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 2);
        assert_eq!(one, two);
        assert!(one.len() < CLASS_COUNT_MAX);
        // The class below the page is within reach of it, not a jump from a few KiB.
        assert!(one[one.len() - 2] > 512 * 1024, "{}", one[one.len() - 2]);
        // -f 1.2 leaves room for the split.
        let one = class_sizes(1 << 20, 1.2, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 1);
        let two = class_sizes(1 << 20, 1.2, CHUNK_BYTES_SMALLEST, FINE_CLASS_BYTES_MAX, 2);
        assert!(two.len() > one.len() && two.len() < CLASS_COUNT_MAX - 1);
    }

    /// `-n`: the classes start at the smallest chunk asked for and keep their shape above it.
    #[test]
    fn class_sizes_follow_the_smallest_chunk() {
        let sizes = class_sizes(1 << 20, 1.25, 64, FINE_CLASS_BYTES_MAX, 1);
        assert_eq!(&sizes[..3], &[64, 72, 80]);
        let slabs = Slabs::with_classes(1 << 20, 1.25, 64, FINE_CLASS_BYTES_MAX, 1, 4 << 20);
        assert_eq!(
            slabs.classes[usize::from(slabs.class_for(1))].chunk_size,
            64
        );
        let big = class_sizes(1 << 20, 1.25, 1000, FINE_CLASS_BYTES_MAX, 1);
        assert_eq!(big[0], 1000);
        assert!(big[1] >= 1250);
    }

    #[test]
    fn alloc_free_reuse_and_budget() {
        let mut slabs = Slabs::new(1024, 1.25, 2048);
        let class = slabs.class_for(100);
        assert_eq!(slabs.classes[usize::from(class)].chunk_size, 104);
        let per_page = slabs.classes[usize::from(class)].chunks_per_page as usize;
        let mut locs = Vec::new();
        while let Some(loc) = slabs.try_alloc(class, 100) {
            locs.push(loc);
        }
        assert_eq!(locs.len(), per_page * 2);
        assert_eq!(slabs.units_used, 2);
        slabs.free(locs[3]);
        assert_eq!(slabs.check_invariants(), 1);
        assert_eq!(slabs.try_alloc(class, 100), Some(locs[3]));
        slabs.release_page(locs[0].page);
        assert_eq!(slabs.units_used, 1);
        slabs.check_invariants();
        let huge = slabs.class_for(1500);
        assert_eq!(huge, slabs.huge_class());
        assert_eq!(slabs.units_for(huge, 1500), 2);
        assert_eq!(slabs.try_alloc(huge, 1500), None);
    }

    #[test]
    fn chunk_ptr_points_at_the_chunk() {
        for large_pages in [false, true] {
            let mut slabs = Slabs::new(1 << 20, 1.25, 8 << 20).with_large_pages(large_pages);
            let class = slabs.class_for(100);
            let a = slabs.try_alloc(class, 100).unwrap();
            let b = slabs.try_alloc(class, 100).unwrap();
            for loc in [a, b] {
                let (ptr, len) = slabs.chunk_ptr(loc).unwrap();
                assert_eq!(ptr, slabs.chunk(loc).as_ptr());
                assert_eq!(len, slabs.chunk(loc).len());
            }
            assert!(slabs
                .chunk_ptr(Loc {
                    page: 999,
                    chunk: 0
                })
                .is_none());
        }
    }
}
