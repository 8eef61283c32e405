//! Memory for slab pages: 2 MiB-aligned regions taken from the kernel and advised for
//! transparent huge pages, split into page-sized blocks.
//!
//! A cache's reads land on random items, so with 4 KiB pages nearly every lookup also misses
//! the TLB, and under virtualisation a TLB miss is a two-level page walk. Backing slab pages with
//! 2 MiB pages removes most of those misses (memcached offers the same with `-L`). Where the
//! kernel has transparent huge pages off, or `mmap` fails, blocks are still correct 4 KiB-backed
//! memory, or the page falls back to the heap.
//!
//! Off by default, as in memcached (`-L` turns it on): a region is resident as a whole once any
//! of it is touched, so each shard holds up to a region more than its pages need.
//!
//! A released block is handed back to the kernel (`MADV_DONTNEED`), so RSS follows the pages in
//! use, and it reads as zeros when it is handed out again, like a fresh one.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Size and alignment of one region (one x86-64 huge page).
pub const REGION_BYTES: usize = 2 << 20;
/// Pages smaller than this stay on the heap: a whole region for a few tiny pages would cost more
/// memory than it saves in TLB misses.
pub const ARENA_PAGE_BYTES_MIN: usize = 64 * 1024;

/// The memory of one page: heap memory (huge items, small page sizes, `-L` off, or when mapping
/// failed) or a block of an arena region. Either way it is a pointer and a length, so reading a
/// chunk costs no branch on where the page came from.
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Owned heap memory (freed on drop); otherwise an arena block, which only
    /// [`PageArena::release`] takes back.
    heap: bool,
}

// SAFETY: a `PageBuf` owns its memory exclusively, like a `Box`: heap memory is its own, and the
// arena hands each block to one page at a time and touches it again only after
// `PageArena::release` takes the `PageBuf` back by value. Moving it to another thread moves
// that ownership.
unsafe impl Send for PageBuf {}

impl PageBuf {
    fn from_heap(bytes: Box<[u8]>) -> PageBuf {
        let len = bytes.len();
        let raw = Box::into_raw(bytes).cast::<u8>();
        PageBuf {
            // A Box's pointer is never null (dangling but non-null when empty).
            ptr: NonNull::new(raw).unwrap_or(NonNull::dangling()),
            len,
            heap: true,
        }
    }

    /// Whether this page is an arena block.
    pub fn is_block(&self) -> bool {
        !self.heap
    }
}

impl Default for PageBuf {
    fn default() -> PageBuf {
        PageBuf::from_heap(Box::new([]))
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if self.heap {
            // SAFETY: `ptr`/`len` came from `Box::into_raw` of a `Box<[u8]>` of that length
            // (`from_heap`) and were not freed since: this rebuilds and drops that Box once.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    self.ptr.as_ptr(),
                    self.len,
                ))
            });
        }
    }
}

impl Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is this page's memory: its own heap allocation, or an arena
        // block inside a live mapping (regions are unmapped only when the arena drops, after
        // its pages) that belongs to this page only.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference to the memory.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// Page-sized blocks carved from huge-page-advised regions.
pub struct PageArena {
    /// Block size, or 0 when pages of this size come from the heap.
    block: usize,
    /// Addresses of blocks not handed out.
    free: Vec<usize>,
    /// Start addresses of the mapped regions (each [`REGION_BYTES`]).
    regions: Vec<usize>,
}

impl PageArena {
    /// An arena for pages of `page_size` bytes. Used when `enabled` and the size divides a
    /// region evenly and is not tiny; otherwise every page comes from the heap.
    pub fn new(page_size: usize, enabled: bool) -> PageArena {
        let usable = enabled
            && (ARENA_PAGE_BYTES_MIN..=REGION_BYTES).contains(&page_size)
            && REGION_BYTES % page_size == 0;
        PageArena {
            block: if usable { page_size } else { 0 },
            free: Vec::new(),
            regions: Vec::new(),
        }
    }

    /// Zeroed memory for a page of `bytes`: an arena block when `bytes` is the block size.
    pub fn alloc(&mut self, bytes: usize) -> PageBuf {
        if bytes == self.block && bytes > 0 {
            if self.free.is_empty() {
                self.map_region();
            }
            if let Some(addr) = self.free.pop() {
                if let Some(ptr) = NonNull::new(addr as *mut u8) {
                    return PageBuf {
                        ptr,
                        len: bytes,
                        heap: false,
                    };
                }
            }
        }
        PageBuf::from_heap(vec![0u8; bytes].into_boxed_slice())
    }

    /// Takes a page's memory back: a block returns to the free list, its memory to the kernel.
    pub fn release(&mut self, buf: PageBuf) {
        if buf.is_block() {
            // SAFETY: the block is ours again (taken by value); MADV_DONTNEED on private
            // anonymous memory drops its contents, and the next touch reads zeros.
            unsafe { libc::madvise(buf.ptr.as_ptr().cast(), buf.len, libc::MADV_DONTNEED) };
            self.free.push(buf.ptr.as_ptr() as usize);
        }
        // A heap page is freed by its drop; a block's drop does nothing.
    }

    /// Regions mapped so far.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Maps one aligned region and adds its blocks to the free list (nothing on failure: the
    /// caller falls back to the heap).
    fn map_region(&mut self) {
        // Map twice the size, then trim to the aligned region in the middle.
        let span = 2 * REGION_BYTES;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; it
        // aliases nothing.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(REGION_BYTES);
        let head = aligned - start;
        let tail = span - head - REGION_BYTES;
        // SAFETY: both ranges are parts of the mapping just made that we never hand out.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + REGION_BYTES) as *mut libc::c_void, tail);
            }
            // Advice only; where transparent huge pages are off it fails and changes nothing.
            libc::madvise(
                aligned as *mut libc::c_void,
                REGION_BYTES,
                libc::MADV_HUGEPAGE,
            );
        }
        self.regions.push(aligned);
        let blocks = REGION_BYTES / self.block;
        // Highest first, so blocks are handed out in address order.
        self.free
            .extend((0..blocks).rev().map(|i| aligned + i * self.block));
    }
}

impl Drop for PageArena {
    fn drop(&mut self) {
        for &r in &self.regions {
            // SAFETY: each region is a mapping this arena made; the pages using its blocks are
            // gone or never read again (the store drops its pages before its arena).
            unsafe { libc::munmap(r as *mut libc::c_void, REGION_BYTES) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_zeroed_disjoint_aligned_and_reusable() {
        let page = 1 << 20;
        let mut arena = PageArena::new(page, true);
        let mut a = arena.alloc(page);
        let mut b = arena.alloc(page);
        assert!(a.is_block() && b.is_block());
        assert_eq!(arena.region_count(), 1);
        assert_eq!(
            a.as_ptr() as usize % REGION_BYTES,
            0,
            "first block starts a region"
        );
        assert!(a.iter().all(|&x| x == 0) && b.iter().all(|&x| x == 0));
        a.fill(0xa5);
        b.fill(0x5a);
        assert!(a.iter().all(|&x| x == 0xa5), "writes to b must not reach a");
        let a_addr = a.as_ptr() as usize;
        arena.release(a);
        let c = arena.alloc(page);
        assert_eq!(c.as_ptr() as usize, a_addr, "a released block is reused");
        assert!(c.iter().all(|&x| x == 0), "a reused block reads as zeros");
        // A third page needs a second region.
        let d = arena.alloc(page);
        assert_eq!(arena.region_count(), 2);
        assert!(b.iter().all(|&x| x == 0x5a));
        drop((b, c, d));
    }

    #[test]
    fn other_sizes_come_from_the_heap() {
        let mut arena = PageArena::new(1 << 20, true);
        let odd = arena.alloc(3 << 20);
        assert!(!odd.is_block());
        assert_eq!(odd.len(), 3 << 20);
        arena.release(odd);
        let mut tiny = PageArena::new(1024, true);
        assert!(!tiny.alloc(1024).is_block());
        assert_eq!(tiny.region_count(), 0);
        let mut off = PageArena::new(1 << 20, false);
        assert!(!off.alloc(1 << 20).is_block());
        assert_eq!(off.region_count(), 0);
    }

    #[test]
    fn pages_move_across_threads() {
        let mut arena = PageArena::new(1 << 20, true);
        let mut p = arena.alloc(1 << 20);
        p[7] = 7;
        let p = std::thread::spawn(move || {
            assert_eq!(p[7], 7);
            p
        })
        .join()
        .unwrap();
        arena.release(p);
    }
}
