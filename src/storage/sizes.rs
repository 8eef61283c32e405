//! `stats sizes`: how many items there are of each size, in 32-byte steps (memcached's
//! `-o track_sizes` and `stats sizes_enable` / `stats sizes_disable`).
//!
//! As in memcached, the histogram counts the items stored since it was switched on: an item
//! is counted when it is linked if its sequence number (its cas) is at least the one the store
//! would have given next when tracking started, and uncounted when it is unlinked by the same
//! test. An item whose sequence is renewed in place (`incr` that fits, `md I`) is counted at
//! that moment if it was not before, so every count it adds is taken off again once.

use super::Store;

/// The width of one bucket, in bytes.
pub const SIZE_STEP: usize = 32;

/// Item counts by size, rounded up to [`SIZE_STEP`].
#[derive(Clone, Debug)]
pub struct SizeHistogram {
    /// `buckets[i]`: items of `(i - 1) * SIZE_STEP + 1 ..= i * SIZE_STEP` bytes.
    buckets: Vec<u32>,
    /// Items of a lower sequence were stored before tracking began.
    pub(super) seq_min: u64,
}

impl SizeHistogram {
    /// A histogram of sizes up to `item_size_max` (larger items are not counted), for items
    /// of sequence `seq_min` or later.
    pub fn new(item_size_max: usize, seq_min: u64) -> SizeHistogram {
        SizeHistogram {
            buckets: vec![0; item_size_max / SIZE_STEP + 1],
            seq_min,
        }
    }

    fn bucket(&mut self, seq: u64, total_bytes: usize) -> Option<&mut u32> {
        if seq < self.seq_min {
            return None;
        }
        self.buckets.get_mut(total_bytes.div_ceil(SIZE_STEP))
    }

    pub(super) fn add(&mut self, seq: u64, total_bytes: usize) {
        if let Some(count) = self.bucket(seq, total_bytes) {
            *count += 1;
        }
    }

    fn remove(&mut self, seq: u64, total_bytes: usize) {
        if let Some(count) = self.bucket(seq, total_bytes) {
            *count = count.saturating_sub(1);
        }
    }

    /// Each non-empty bucket as (its upper bound in bytes, item count), smallest first.
    pub fn counts(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| (i * SIZE_STEP, n))
    }
}

impl Store {
    /// Switches the size histogram on (a new, empty one unless it is on already) or off.
    pub fn set_size_tracking(&mut self, on: bool) {
        match (on, self.sizes.is_some()) {
            (true, false) => {
                self.sizes = Some(SizeHistogram::new(self.cfg.item_size_max, self.seq_next));
            }
            (false, _) => self.sizes = None,
            (true, true) => {}
        }
    }

    /// The size histogram, when tracking is on.
    pub fn size_histogram(&self) -> Option<&SizeHistogram> {
        self.sizes.as_ref()
    }

    pub(super) fn sizes_linked(&mut self, seq: u64, total_bytes: usize) {
        if let Some(h) = &mut self.sizes {
            h.add(seq, total_bytes);
        }
    }

    pub(super) fn sizes_unlinked(&mut self, seq: u64, total_bytes: usize) {
        if let Some(h) = &mut self.sizes {
            h.remove(seq, total_bytes);
        }
    }

    /// A linked item's sequence goes from `old` to `new` in place.
    pub(super) fn sizes_restamped(&mut self, old: u64, new: u64, total_bytes: usize) {
        if let Some(h) = &mut self.sizes {
            if old < h.seq_min {
                h.add(new, total_bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_to_32_bytes_and_skip_older_items() {
        let mut h = SizeHistogram::new(1024, 10);
        h.add(10, 1);
        h.add(11, 32);
        h.add(12, 33);
        h.add(9, 64); // stored before tracking began
        h.add(13, 1025); // over item_size_max
        assert_eq!(h.counts().collect::<Vec<_>>(), [(32, 2), (64, 1)]);
        h.remove(9, 33); // not counted, so not uncounted
        h.remove(12, 33);
        assert_eq!(h.counts().collect::<Vec<_>>(), [(32, 2)]);
        h.remove(14, 700); // never counted: no underflow
        assert_eq!(h.counts().collect::<Vec<_>>(), [(32, 2)]);
    }
}
