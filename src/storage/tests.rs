//! Store unit tests: tiny stores, explicit `now`, exact counter deltas.

use super::*;
use crate::clock::START;

/// FNV-1a, then a final mix so the tag and home bits both vary.
fn test_hash(key: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in key {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    hash ^ (hash >> 32)
}

fn config(memory_bytes_max: usize, page_size: usize) -> StoreConfig {
    StoreConfig {
        memory_bytes_max,
        page_size,
        slab_growth_factor: 1.25,
        item_size_max: page_size,
        cas_enabled: true,
        key_hash: test_hash,
        large_pages: false,
        chunk_bytes_smallest: crate::storage::slab::CHUNK_BYTES_SMALLEST,
        fine_class_bytes_max: crate::storage::slab::FINE_CLASS_BYTES_MAX,
        growth_steps: 1,
        evictions_enabled: true,
    }
}

/// Two 1 KiB pages.
/// Pages slab class `class` holds.
fn pages_of(store: &Store, class: u8) -> u64 {
    store
        .stats()
        .classes
        .iter()
        .find(|c| c.slab_class == class)
        .map_or(0, |c| c.total_pages)
}

fn tiny() -> Store {
    Store::new(config(2048, 1024))
}

const T0: Instant32 = START;

fn at(secs: u32) -> Instant32 {
    T0.plus(secs)
}

fn set(
    store: &mut Store,
    key: &str,
    value: &[u8],
    expires_at: Option<Instant32>,
    now: Instant32,
) -> StoreOutcome {
    let key = key.as_bytes();
    let result = store.store(
        StoreMode::Set,
        key,
        test_hash(key),
        0,
        expires_at,
        value,
        now,
    );
    store.check_invariants();
    result.expect("set")
}

fn mode(
    store: &mut Store,
    mode: StoreMode,
    key: &str,
    flags: u32,
    value: &[u8],
    now: Instant32,
) -> StoreOutcome {
    let key = key.as_bytes();
    let result = store.store(mode, key, test_hash(key), flags, None, value, now);
    store.check_invariants();
    result.expect("store")
}

fn get(store: &mut Store, key: &str, now: Instant32) -> Option<Vec<u8>> {
    let key = key.as_bytes();
    let value = store
        .get(key, test_hash(key), now)
        .map(|view| view.value.to_vec());
    store.check_invariants();
    value
}

fn gets(store: &mut Store, key: &str, now: Instant32) -> Option<(Vec<u8>, u32, u64)> {
    let key = key.as_bytes();
    store
        .get(key, test_hash(key), now)
        .map(|view| (view.value.to_vec(), view.client_flags, view.cas))
}

fn arith(store: &mut Store, key: &str, incr: bool, delta: u64, now: Instant32) -> ArithOutcome {
    let key = key.as_bytes();
    let outcome = store.arith(key, test_hash(key), incr, delta, now);
    store.check_invariants();
    outcome
}

#[test]
fn expiry_absent_past_future_and_boundary() {
    let mut store = tiny();
    set(&mut store, "never", b"v", None, T0);
    set(&mut store, "past", b"v", Some(Instant32(1)), T0);
    set(&mut store, "future", b"v", Some(at(10)), T0);
    assert_eq!(get(&mut store, "never", at(1_000_000)), Some(b"v".to_vec()));
    assert_eq!(get(&mut store, "past", T0), None);
    assert_eq!(get(&mut store, "future", at(9)), Some(b"v".to_vec()));
    let before = store.stats();
    assert_eq!(
        get(&mut store, "future", at(10)),
        None,
        "now == expires_at is a miss"
    );
    let after = store.stats();
    assert_eq!(after.get_expired - before.get_expired, 1);
    assert_eq!(after.get_misses - before.get_misses, 1);
    assert_eq!(after.reclaimed - before.reclaimed, 1);
    assert_eq!(
        after.expired_unfetched - before.expired_unfetched,
        0,
        "it was fetched at 9"
    );
    assert_eq!(after.curr_items, 1);
}

#[test]
fn flush_now_and_same_second_set_survives() {
    let mut store = tiny();
    set(&mut store, "a", b"1", None, T0);
    set(&mut store, "b", b"2", None, T0);
    store.flush_all(T0, T0);
    set(&mut store, "b", b"3", None, T0);
    assert_eq!(get(&mut store, "a", T0), None);
    assert_eq!(
        get(&mut store, "b", T0),
        Some(b"3".to_vec()),
        "set after flush, same second"
    );
    let stats = store.stats();
    assert_eq!(stats.get_flushed, 1);
    assert_eq!(stats.get_misses, 1);
}

#[test]
fn immediate_flush_takes_a_cas_id_and_a_delayed_one_does_not() {
    let mut store = tiny();
    set(&mut store, "a", b"1", None, T0);
    assert_eq!(store.peek_cas(b"a", test_hash(b"a"), T0), Some(1));
    store.flush_all(T0, T0);
    set(&mut store, "b", b"2", None, T0);
    assert_eq!(store.peek_cas(b"b", test_hash(b"b"), T0), Some(3));
    store.flush_all(at(10), T0);
    set(&mut store, "c", b"3", None, T0);
    assert_eq!(store.peek_cas(b"c", test_hash(b"c"), T0), Some(4));
}

#[test]
fn delayed_flush_takes_effect_at_its_second() {
    let mut store = tiny();
    set(&mut store, "a", b"1", None, T0);
    store.flush_all(at(5), T0);
    set(&mut store, "b", b"2", None, at(4));
    assert_eq!(get(&mut store, "a", at(4)), Some(b"1".to_vec()));
    assert_eq!(get(&mut store, "a", at(5)), None);
    assert_eq!(
        get(&mut store, "b", at(5)),
        None,
        "stored before the flush moment"
    );
    set(&mut store, "c", b"3", None, at(5));
    assert_eq!(get(&mut store, "c", at(6)), Some(b"3".to_vec()));
}

#[test]
fn add_replace_append_prepend() {
    let mut store = tiny();
    assert_eq!(
        mode(&mut store, StoreMode::Replace, "k", 1, b"x", T0),
        StoreOutcome::NotStored
    );
    assert_eq!(
        mode(&mut store, StoreMode::Append, "k", 1, b"x", T0),
        StoreOutcome::NotStored
    );
    assert_eq!(
        mode(&mut store, StoreMode::Add, "k", 7, b"mid", T0),
        StoreOutcome::Stored
    );
    assert_eq!(
        mode(&mut store, StoreMode::Add, "k", 8, b"zzz", T0),
        StoreOutcome::NotStored
    );
    assert_eq!(
        mode(&mut store, StoreMode::Append, "k", 9, b">", T0),
        StoreOutcome::Stored
    );
    assert_eq!(
        mode(&mut store, StoreMode::Prepend, "k", 9, b"<", T0),
        StoreOutcome::Stored
    );
    let (value, flags, _) = gets(&mut store, "k", T0).unwrap();
    assert_eq!(value, b"<mid>");
    assert_eq!(flags, 7, "append/prepend keep the flags");
    assert_eq!(
        mode(&mut store, StoreMode::Replace, "k", 2, b"new", T0),
        StoreOutcome::Stored
    );
    assert_eq!(gets(&mut store, "k", T0).unwrap().1, 2);
}

#[test]
fn append_keeps_expiry() {
    let mut store = tiny();
    let key = b"k";
    store
        .store(
            StoreMode::Set,
            key,
            test_hash(key),
            0,
            Some(at(10)),
            b"a",
            T0,
        )
        .unwrap();
    mode(&mut store, StoreMode::Append, "k", 0, b"b", at(1));
    assert_eq!(get(&mut store, "k", at(9)), Some(b"ab".to_vec()));
    assert_eq!(get(&mut store, "k", at(10)), None);
}

#[test]
fn cas_paths() {
    let mut store = tiny();
    assert_eq!(
        mode(&mut store, StoreMode::Cas(1), "k", 0, b"v", T0),
        StoreOutcome::NotFound
    );
    set(&mut store, "k", b"v1", None, T0);
    let (_, _, cas1) = gets(&mut store, "k", T0).unwrap();
    assert_ne!(cas1, 0);
    assert_eq!(
        mode(&mut store, StoreMode::Cas(cas1 + 1), "k", 0, b"v2", T0),
        StoreOutcome::Exists
    );
    assert_eq!(
        mode(&mut store, StoreMode::Cas(cas1), "k", 0, b"v2", T0),
        StoreOutcome::Stored
    );
    let (value, _, cas2) = gets(&mut store, "k", T0).unwrap();
    assert_eq!(value, b"v2");
    assert!(cas2 > cas1);
    let stats = store.stats();
    assert_eq!(
        (stats.cas_misses, stats.cas_badval, stats.cas_hits),
        (1, 1, 1)
    );
    assert_eq!(stats.cmd_set, 4);
}

#[test]
fn cas_disabled_reads_zero() {
    let mut cfg = config(2048, 1024);
    cfg.cas_enabled = false;
    let mut store = Store::new(cfg);
    set(&mut store, "k", b"v", None, T0);
    assert_eq!(gets(&mut store, "k", T0).unwrap().2, 0);
    // Flush still works without cas: the sequence is kept internally.
    store.flush_all(T0, T0);
    assert_eq!(get(&mut store, "k", T0), None);
}

#[test]
fn flush_without_cas_flushes_by_time_as_memcached() {
    let mut cfg = config(2048, 1024);
    cfg.cas_enabled = false;
    let mut store = Store::new(cfg);
    // Immediate: the rest of the flush's second is flushed too (memcached's `oldest_live`
    // without cas), the next second's stores live.
    store.flush_all(at(2), at(2));
    store.set_oldest_live(at(2));
    set(&mut store, "a", b"1", None, at(2));
    assert_eq!(get(&mut store, "a", at(2)), None, "same second");
    assert_eq!(store.stats().get_flushed, 1);
    set(&mut store, "a", b"2", None, at(3));
    assert_eq!(
        get(&mut store, "a", at(3)),
        Some(b"2".to_vec()),
        "next second"
    );
    // Delayed: nothing changes before its second; then everything up to it is flushed.
    store.flush_all(at(10), at(3));
    store.set_oldest_live(at(10));
    set(&mut store, "b", b"3", None, at(9));
    assert_eq!(get(&mut store, "a", at(9)), Some(b"2".to_vec()));
    set(&mut store, "c", b"4", None, at(10));
    assert_eq!(get(&mut store, "a", at(10)), None);
    assert_eq!(get(&mut store, "b", at(10)), None);
    assert_eq!(
        get(&mut store, "c", at(10)),
        None,
        "stored in the flush's second"
    );
    set(&mut store, "c", b"5", None, at(11));
    assert_eq!(get(&mut store, "c", at(11)), Some(b"5".to_vec()));
}

#[test]
fn set_oldest_live_does_nothing_with_cas() {
    let mut store = tiny();
    store.flush_all(at(2), at(2));
    store.set_oldest_live(at(2));
    set(&mut store, "a", b"1", None, at(2));
    assert_eq!(get(&mut store, "a", at(2)), Some(b"1".to_vec()));
}

#[test]
fn incr_decr_edges() {
    let mut store = tiny();
    assert_eq!(arith(&mut store, "n", true, 1, T0), ArithOutcome::NotFound);
    set(&mut store, "n", b"10", None, T0);
    assert_eq!(arith(&mut store, "n", false, 1, T0), ArithOutcome::Value(9));
    assert_eq!(
        get(&mut store, "n", T0),
        Some(b"9 ".to_vec()),
        "memcached pads in place"
    );
    assert_eq!(
        arith(&mut store, "n", true, 991, T0),
        ArithOutcome::Value(1000)
    );
    assert_eq!(
        get(&mut store, "n", T0),
        Some(b"1000".to_vec()),
        "longer: a new item"
    );
    assert_eq!(
        arith(&mut store, "n", false, 5000, T0),
        ArithOutcome::Value(0),
        "decr floors at 0"
    );
    set(&mut store, "n", u64::MAX.to_string().as_bytes(), None, T0);
    assert_eq!(
        arith(&mut store, "n", true, 2, T0),
        ArithOutcome::Value(1),
        "incr wraps"
    );
    for bad in [
        &b"abc"[..],
        b"",
        b"12a",
        b"-1",
        b"18446744073709551616",
        b" ",
    ] {
        set(&mut store, "n", bad, None, T0);
        assert_eq!(
            arith(&mut store, "n", true, 1, T0),
            ArithOutcome::NonNumeric,
            "{bad:?}"
        );
    }
    for (good, result) in [
        (&b"  7"[..], 8),
        (b"+7", 8),
        (b"7 junk", 8),
        (b"00000000000000000000000007", 8),
    ] {
        set(&mut store, "n", good, None, T0);
        assert_eq!(
            arith(&mut store, "n", true, 1, T0),
            ArithOutcome::Value(result),
            "{good:?}"
        );
    }
    let key = b"f";
    store
        .store(
            StoreMode::Set,
            key,
            test_hash(key),
            5,
            Some(at(50)),
            b"99",
            T0,
        )
        .unwrap();
    let cas_before = gets(&mut store, "f", T0).unwrap().2;
    assert_eq!(
        arith(&mut store, "f", true, 1, T0),
        ArithOutcome::Value(100)
    );
    let (value, flags, cas_after) = gets(&mut store, "f", T0).unwrap();
    assert_eq!((value.as_slice(), flags), (&b"100"[..], 5));
    assert!(cas_after > cas_before);
    assert_eq!(get(&mut store, "f", at(50)), None, "expiry kept");
    let stats = store.stats();
    assert_eq!(stats.incr_misses, 1);
    assert_eq!(stats.decr_hits, 2);
}

#[test]
fn delete_and_touch_counters() {
    let mut store = tiny();
    set(&mut store, "k", b"v", None, T0);
    let key = b"k";
    assert!(store.touch(key, test_hash(key), Some(at(5)), T0).is_some());
    store.check_invariants();
    assert!(store
        .touch(b"x", test_hash(b"x"), Some(at(5)), T0)
        .is_none());
    assert_eq!(get(&mut store, "k", at(4)), Some(b"v".to_vec()));
    assert_eq!(get(&mut store, "k", at(5)), None, "touch set the expiry");
    set(&mut store, "k", b"v", Some(at(100)), at(5));
    assert!(store.touch(key, test_hash(key), None, at(6)).is_some());
    assert_eq!(
        get(&mut store, "k", at(1000)),
        Some(b"v".to_vec()),
        "touch cleared the expiry"
    );
    assert!(store.delete(key, test_hash(key), at(1000)));
    assert!(!store.delete(key, test_hash(key), at(1000)));
    let stats = store.stats();
    assert_eq!(
        (stats.cmd_touch, stats.touch_hits, stats.touch_misses),
        (3, 2, 1)
    );
    assert_eq!((stats.delete_hits, stats.delete_misses), (1, 1));
    assert_eq!((stats.curr_items, stats.bytes), (0, 0));
    store.check_invariants();
}

#[test]
fn get_counters_exact() {
    let mut store = tiny();
    set(&mut store, "k", b"v", None, T0);
    store.reset_stats();
    get(&mut store, "k", T0);
    get(&mut store, "k", T0);
    get(&mut store, "nope", T0);
    let stats = store.stats();
    assert_eq!((stats.cmd_get, stats.get_hits, stats.get_misses), (3, 2, 1));
    assert_eq!((stats.curr_items, stats.total_items), (1, 0));
    assert_eq!(stats.bytes, 16 + 1 + 1);
    let view = store.get(b"k", test_hash(b"k"), at(3)).unwrap();
    assert!(view.fetched);
    assert_eq!(view.last_access, T0);
}

/// Items that land in one class of the tiny store: 100-byte chunks, 10 per page, 20 in all.
fn fill_value() -> Vec<u8> {
    vec![b'x'; 70]
}

fn key_of(i: usize) -> String {
    format!("key:{i:04}")
}

#[test]
fn eviction_follows_clock_after_a_read() {
    let mut store = tiny();
    let value = fill_value();
    let class = store.class_for(8, value.len(), 0, None);
    let per_page =
        store.stats().limit_maxbytes as usize / 2 / store.class_chunk_sizes()[usize::from(class)];
    let capacity = per_page * 2;
    for i in 0..capacity {
        set(&mut store, &key_of(i), &value, None, T0);
    }
    assert_eq!(store.stats().evictions, 0);
    assert!(get(&mut store, &key_of(0), T0).is_some());
    // The next set evicts the oldest unread item (key 1), not the read key 0.
    set(&mut store, &key_of(capacity), &value, None, T0);
    assert_eq!(store.stats().evictions, 1);
    assert!(get(&mut store, &key_of(0), T0).is_some());
    assert!(get(&mut store, &key_of(1), T0).is_none());
    assert!(get(&mut store, &key_of(2), T0).is_some());
    let stats = store.stats();
    assert_eq!(stats.evicted_unfetched, 1);
    assert_eq!(
        stats
            .classes
            .iter()
            .map(|c| c.counters.evicted)
            .sum::<u64>(),
        1
    );
}

#[test]
fn read_items_survive_a_scan_of_new_writes() {
    let mut store = tiny();
    let value = fill_value();
    let capacity = 20;
    for i in 0..capacity {
        set(&mut store, &key_of(i), &value, None, T0);
    }
    let hot = [3, 7, 15];
    for &i in &hot {
        assert!(get(&mut store, &key_of(i), T0).is_some());
    }
    // A scan: as many new keys as the store holds, minus the hot ones.
    for i in 100..100 + capacity - hot.len() {
        set(&mut store, &key_of(i), &value, None, at(1));
    }
    for &i in &hot {
        assert!(
            get(&mut store, &key_of(i), at(2)).is_some(),
            "hot key {i} survived the scan"
        );
    }
}

#[test]
fn rebalancing_moves_pages_to_large_items() {
    let mut store = Store::new(config(8 * 1024, 1024));
    for i in 0..200 {
        set(&mut store, &key_of(i), b"small", None, T0);
    }
    let small_class = store.class_for(8, 5, 0, None);
    assert!(store
        .stats()
        .classes
        .iter()
        .all(|c| c.slab_class == small_class));
    let large = vec![b'L'; 900];
    for i in 0..40 {
        let outcome = set(&mut store, &format!("large:{i}"), &large, None, at(1));
        assert_eq!(outcome, StoreOutcome::Stored);
        assert_eq!(
            get(&mut store, &format!("large:{i}"), at(1)),
            Some(large.clone())
        );
    }
    let stats = store.stats();
    let large_pages = pages_of(&store, store.class_for(8, 900, 0, None));
    assert!(
        large_pages >= 6,
        "large items got most of the memory back: {large_pages}"
    );
    assert!(stats.slabs_moved >= 6);
}

/// `slabs automove 1` keeps pages where they are while every class evicts items of about the
/// same age, however different their eviction counts (here a class of 3 chunks a page evicts
/// three times as often as one of 25), and moves them once a class goes cold.
#[test]
fn pages_stay_put_while_classes_evict_alike_and_move_from_a_cold_one() {
    let mut store = Store::new(config(16 * 1024, 1024));
    let (small, large) = (b"s".as_slice(), vec![b'L'; 300]);
    let small_class = store.class_for(12, small.len(), 0, None);
    let large_class = store.class_for(12, large.len(), 0, None);
    // The small class fills three pages first; then the large one takes the rest.
    for i in 0..75 {
        set(&mut store, &format!("first:{i:05}"), small, None, at(1));
    }
    assert_eq!(pages_of(&store, small_class), 3);
    let mut moved_after_fill = None;
    for i in 0..3000u32 {
        let now = at(1 + i / 100);
        for j in 0..3 {
            set(&mut store, &format!("large:{i:05}:{j}"), &large, None, now);
        }
        set(&mut store, &format!("small:{i:05}"), small, None, now);
        if i == 300 {
            assert!(store.stats().evictions > 0, "both classes are full");
            moved_after_fill = Some(store.stats().slabs_moved);
        }
    }
    assert_eq!(
        Some(store.stats().slabs_moved),
        moved_after_fill,
        "no page moved while both classes evicted items of the same age"
    );
    store.check_invariants();
    // The small class goes cold: the large one takes its pages (all but its last).
    let small_pages = pages_of(&store, small_class);
    let large_pages = pages_of(&store, large_class);
    assert_eq!(small_pages, 3);
    for i in 0..3000u32 {
        set(
            &mut store,
            &format!("later:{i:05}"),
            &large,
            None,
            at(100 + i / 100),
        );
    }
    assert_eq!(pages_of(&store, small_class), 1);
    assert_eq!(pages_of(&store, large_class), large_pages + small_pages - 1);
    store.check_invariants();
}

#[test]
fn crawler_respects_its_budget() {
    let mut store = Store::new(config(64 * 1024, 1024));
    for i in 0..30 {
        set(&mut store, &key_of(i), b"v", Some(at(5)), T0);
    }
    assert_eq!(store.crawl(at(4), 1000, 0), 0, "nothing dead yet");
    let mut total = 0;
    for _ in 0..100 {
        let reclaimed = store.crawl(at(5), 7, 0);
        assert!(reclaimed <= 7);
        store.check_invariants();
        total += reclaimed;
    }
    assert_eq!(total, 30);
    let stats = store.stats();
    assert_eq!(
        (
            stats.reclaimed,
            stats.crawler_reclaimed,
            stats.expired_unfetched
        ),
        (30, 30, 30)
    );
    assert_eq!(stats.curr_items, 0);
}

#[test]
fn crawler_counts_the_items_it_checks_and_the_passes_it_begins() {
    let mut store = Store::new(config(64 * 1024, 1024));
    for i in 0..30 {
        set(&mut store, &key_of(i), b"v", None, T0);
    }
    assert_eq!(store.stats().lru_crawler_starts, 0);
    // A budget far over the chunks: the first pass checks all 30, then the sweep wraps.
    store.crawl(T0, 10_000, 0);
    let stats = store.stats();
    assert!(stats.lru_crawler_starts >= 1);
    assert!(stats.crawler_items_checked >= 30);
    // Item by item: 30 live items are checked 30 times per pass, free chunks not at all.
    let mut store = Store::new(config(64 * 1024, 1024));
    for i in 0..30 {
        set(&mut store, &key_of(i), b"v", None, T0);
    }
    let mut passes = Vec::new();
    for _ in 0..2000 {
        store.crawl(T0, 1, 0);
        passes.push(store.stats().lru_crawler_starts);
    }
    let stats = store.stats();
    let starts = stats.lru_crawler_starts;
    assert!(starts >= 2, "{starts} passes in 2000 steps");
    // Every completed pass checked every item once.
    assert!(stats.crawler_items_checked >= 30 * (starts - 1));
    assert!(stats.crawler_items_checked <= 30 * starts);
    assert!(passes.windows(2).all(|w| w[1] - w[0] <= 1));
    store.reset_stats();
    assert_eq!(store.stats().crawler_items_checked, 0);
}

#[test]
fn large_item_round_trips() {
    let mut cfg = config(8 << 20, 1 << 20);
    cfg.item_size_max = 2 << 20;
    let mut store = Store::new(cfg);
    let value: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    set(&mut store, "big", &value, None, T0);
    assert_eq!(get(&mut store, "big", T0), Some(value.clone()));
    let stats = store.stats();
    assert_eq!(stats.curr_items, 1);
    assert_eq!(stats.classes.len(), 1);
    // The huge class reads as page-sized chunks, one per budget unit its item is charged
    // (1 MiB of value plus the header: two).
    let huge = &stats.classes[0];
    assert_eq!(huge.chunk_size, 1 << 20, "huge class");
    assert_eq!(
        (huge.chunks_per_page, huge.total_pages, huge.total_chunks),
        (1, 2, 2)
    );
    assert_eq!((huge.used_chunks, huge.number, huge.free_chunks), (2, 1, 0));
    mode(&mut store, StoreMode::Append, "big", 0, b"tail", T0);
    assert_eq!(get(&mut store, "big", T0).unwrap().len(), value.len() + 4);
    assert!(store.delete(b"big", test_hash(b"big"), T0));
    store.check_invariants();
    // The allocation stays as the spare, shown as the class's free chunks.
    let stats = store.stats();
    let huge = stats.classes.last().expect("the huge class is listed");
    assert_eq!(huge.slab_class, store.slabs.huge_class());
    assert_eq!(
        (
            huge.total_pages,
            huge.used_chunks,
            huge.free_chunks,
            huge.number
        ),
        (2, 0, 2, 0)
    );
    assert!(stats.total_malloced > 1 << 20, "{}", stats.total_malloced);
}

/// Eight budget units of 64 KiB pages, items up to 1 MiB: a 100,000-byte item is huge and
/// charged 2 units. Returns the store and its page size.
fn huge_store() -> (Store, usize) {
    let page = 64 << 10;
    let mut cfg = config(8 * page, page);
    cfg.item_size_max = 1 << 20;
    (Store::new(cfg), page)
}

/// The spare huge allocation: reused by the next huge item of the same charge, replaced by a
/// later one, and given up (never evicting for it) when pages, a smaller limit or a page move
/// want its budget.
#[test]
fn the_huge_spare_is_reused_and_never_costs_an_eviction() {
    let (mut store, page) = huge_store();
    let value = |fill: u8, len: usize| vec![fill; len];
    set(&mut store, "a", &value(b'a', 100_000), None, T0);
    let one = store.stats().total_malloced;
    assert!((100_000..110_000).contains(&one), "{one}");
    // The first overwrite allocates afresh and keeps the old item's memory as the spare; from
    // then on each overwrite takes the spare and leaves its own: memory stays at two items'.
    set(&mut store, "a", &value(b'b', 100_000), None, T0);
    assert_eq!(store.stats().total_malloced, 2 * one);
    for round in 0..5u8 {
        set(&mut store, "a", &value(b'c' + round, 100_000), None, T0);
        assert_eq!(store.stats().total_malloced, 2 * one, "round {round}");
        assert_eq!(get(&mut store, "a", T0), Some(value(b'c' + round, 100_000)));
    }
    // A smaller value of the same charge reuses it too and reads back exactly.
    set(&mut store, "a", &value(b'x', 70_000), None, T0);
    assert_eq!(store.stats().total_malloced, 2 * one);
    assert_eq!(get(&mut store, "a", T0), Some(value(b'x', 70_000)));
    // A larger charge (3 units) cannot: fresh memory; the item it replaces becomes the spare
    // and the spare before it is freed.
    set(&mut store, "a", &value(b'y', 150_000), None, T0);
    let header = one - 100_000;
    assert_eq!(store.stats().total_malloced, 150_000 + header + one);
    assert_eq!(get(&mut store, "a", T0), Some(value(b'y', 150_000)));
    // Deleting leaves the last freed one as the spare (3 units); the earlier spare is freed.
    assert!(store.delete(b"a", test_hash(b"a"), T0));
    store.check_invariants();
    assert_eq!(store.stats().total_malloced, 150_000 + header);
    assert_eq!(store.slabs.spare_huge_units(), 3);
    // Small items filling all 8 units take the spare's budget instead of evicting each other.
    let small = value(b's', 1000);
    let mut count = 0;
    while store.stats().total_malloced < (8 * page) as u64 && count < 10_000 {
        set(&mut store, &key_of(count), &small, None, T0);
        count += 1;
    }
    let stats = store.stats();
    assert_eq!(stats.evictions, 0, "{count} items");
    assert_eq!(store.slabs.spare_huge_units(), 0);
    let small = stats
        .classes
        .iter()
        .find(|c| c.number > 0)
        .expect("a class");
    assert_eq!((small.total_pages, small.number), (8, count as u64));
    let small = value(b's', 1000);
    for i in 0..count {
        assert_eq!(get(&mut store, &key_of(i), T0), Some(small.clone()), "{i}");
    }
}

/// Items larger than a page are evicted oldest first, as any class's: each is one page, and the
/// CLOCK hand sweeps a class's pages in the order they came.
#[test]
fn huge_items_are_evicted_oldest_first() {
    let (mut store, _) = huge_store();
    // 2 units each: four fit, and each new one evicts the oldest.
    let value = vec![b'v'; 100_000];
    for i in 0..12 {
        set(&mut store, &key_of(i), &value, None, T0);
        let present: Vec<usize> = (0..=i)
            .filter(|&k| {
                let key = key_of(k);
                // A look in the table, not a read: no second chance given.
                store
                    .lookup(key.as_bytes(), test_hash(key.as_bytes()))
                    .is_some()
            })
            .collect();
        let expected: Vec<usize> = (i.saturating_sub(3)..=i).collect();
        assert_eq!(present, expected, "after storing {i}");
    }
    assert_eq!(store.stats().evictions, 8);
}

#[test]
fn a_smaller_limit_and_page_moves_take_the_huge_spare_first() {
    let (mut store, page) = huge_store();
    let big = vec![b'b'; 100_000];
    set(&mut store, "big", &big, None, T0);
    set(&mut store, "small", b"v", None, T0);
    assert!(store.delete(b"big", test_hash(b"big"), T0));
    assert_eq!(store.slabs.spare_huge_units(), 2);
    // 2 units left: the small item's page and one more; the spare goes, not the small item.
    store.set_memory_limit(2 * page, T0);
    store.check_invariants();
    assert_eq!(store.slabs.spare_huge_units(), 0);
    assert_eq!(get(&mut store, "small", T0), Some(b"v".to_vec()));
    assert_eq!(store.stats().evictions, 0);
    // A huge item evicted by a page move gives its whole budget back, spare included.
    store.set_memory_limit(8 * page, T0);
    set(&mut store, "big", &big, None, T0);
    let huge_page = store.slabs.classes[usize::from(store.slabs.huge_class())].pages[0];
    store.evict_page(huge_page, T0);
    store.check_invariants();
    assert_eq!(store.slabs.spare_huge_units(), 0);
    assert_eq!(store.slabs.units_used, 1, "only the small item's page");
    assert_eq!(get(&mut store, "big", T0), None);
}

#[test]
fn too_large_and_out_of_memory() {
    let mut store = tiny();
    let key = b"k";
    let over = vec![0u8; 1025];
    assert_eq!(
        store.store(StoreMode::Set, key, test_hash(key), 0, None, &over, T0),
        Err(StoreError::TooLarge)
    );
    let mut cfg = config(2048, 1024);
    cfg.item_size_max = 8192;
    let mut store = Store::new(cfg);
    let value = vec![0u8; 4000];
    assert_eq!(
        store.store(StoreMode::Set, key, test_hash(key), 0, None, &value, T0),
        Err(StoreError::OutOfMemory),
        "needs four pages of a two-page store"
    );
    let stats = store.stats();
    assert_eq!(
        stats
            .classes
            .iter()
            .map(|c| c.counters.outofmemory)
            .sum::<u64>(),
        1
    );
    // A huge item that fits the budget evicts everything else.
    set(&mut store, "a", b"1", None, T0);
    let value = vec![1u8; 1500];
    store
        .store(StoreMode::Set, key, test_hash(key), 0, None, &value, T0)
        .unwrap();
    store.check_invariants();
    assert_eq!(get(&mut store, "a", T0), None);
    assert_eq!(get(&mut store, "k", T0), Some(value));
}

#[test]
fn touch_moves_a_compact_item_and_keeps_cas() {
    let mut store = tiny();
    set(&mut store, "k", b"v", None, T0);
    let cas = gets(&mut store, "k", T0).unwrap().2;
    let key = b"k";
    let view = store
        .touch(key, test_hash(key), Some(at(3)), at(1))
        .unwrap();
    assert_eq!(
        (view.value, view.cas, view.expires_at),
        (&b"v"[..], cas, Some(at(3)))
    );
    store.check_invariants();
    assert_eq!(store.stats().total_items, 1);
}

#[test]
fn table_grows_incrementally_under_load() {
    let mut store = Store::new(config(64 << 20, 1 << 20));
    for i in 0..5000 {
        let key = key_of(i);
        let key = key.as_bytes();
        store
            .store(StoreMode::Set, key, test_hash(key), 0, None, b"v", T0)
            .unwrap();
        if i % 500 == 0 {
            store.check_invariants();
        }
    }
    for i in 0..5000 {
        let key = key_of(i);
        let hit = store
            .get(key.as_bytes(), test_hash(key.as_bytes()), T0)
            .is_some();
        assert!(hit, "{i}");
    }
    for i in (0..5000).step_by(2) {
        assert!(store.delete(key_of(i).as_bytes(), test_hash(key_of(i).as_bytes()), T0));
    }
    store.check_invariants();
    assert_eq!(store.stats().curr_items, 2500);
}

/// The memory target: 1,000,000 items of 11-byte keys and 100-byte values.
/// `cargo test --release --lib bytes_per_item -- --ignored --nocapture`
#[test]
#[ignore]
fn bytes_per_item() {
    let mut store = Store::new(config(1 << 30, 1 << 20));
    let value = vec![b'v'; 100];
    let count = 1_000_000;
    for i in 1..=count {
        let key = format!("key:{i:07}");
        let key = key.as_bytes();
        store
            .store(StoreMode::Set, key, test_hash(key), 0, None, &value, T0)
            .unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.curr_items, count as u64);
    let class = store.class_for(11, 100, 0, None);
    let chunk = store.class_chunk_sizes()[usize::from(class)];
    println!(
        "items {count}: chunk {chunk} B, pages {} B, table {} B, total {:.1} B/item",
        stats.total_malloced,
        stats.hash_bytes,
        (stats.total_malloced + stats.hash_bytes) as f64 / count as f64
    );
}

#[test]
fn class_stats_report_chunks_pages_and_age() {
    let mut store = Store::new(config(64 * 1024, 1024));
    let value = fill_value();
    for i in 0..15 {
        set(&mut store, &key_of(i), &value, None, T0);
    }
    get(&mut store, &key_of(0), at(30));
    let stats = store.stats();
    assert_eq!(stats.classes.len(), 1);
    let class = &stats.classes[0];
    let total = 16 + 8 + 70;
    assert_eq!(class.chunk_size, 96);
    assert_eq!(class.chunks_per_page, 1024 / 96);
    assert_eq!(class.total_pages, 2);
    assert_eq!(class.total_chunks, 2 * (1024 / 96));
    assert_eq!(class.used_chunks, 15);
    assert_eq!(class.number, 15);
    assert_eq!(class.free_chunks, class.total_chunks - 15);
    assert_eq!(class.mem_requested, 15 * total);
    assert_eq!(stats.bytes, 15 * total);
    assert_eq!(class.age, 30, "the oldest access is at T0");
    assert_eq!(stats.total_malloced, 2048);
}

/// Sets, gets and deletes over 3,000 keys while the table grows and migrates (tombstones,
/// lookups in the old table), against a HashMap, from one fixed seed.
#[test]
fn many_keys_through_table_migrations_match_a_map() {
    let mut store = Store::new(config(16 << 20, 1 << 20));
    let mut model: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut saw_migration = false;
    for step in 0..60_000u32 {
        let roll = next();
        // Keys grow over time so the table keeps growing.
        let key = key_of((roll >> 8) as usize % (500 + step as usize / 20));
        let hash = test_hash(key.as_bytes());
        match roll % 4 {
            0 | 1 => {
                let value = format!("{step}-{}", roll % 997).into_bytes();
                store
                    .store(StoreMode::Set, key.as_bytes(), hash, 0, None, &value, T0)
                    .unwrap();
                model.insert(key, value);
            }
            2 => {
                let got = store
                    .get(key.as_bytes(), hash, T0)
                    .map(|v| v.value.to_vec());
                assert_eq!(got.as_ref(), model.get(&key), "step {step} key {key}");
            }
            _ => {
                assert_eq!(
                    store.delete(key.as_bytes(), hash, T0),
                    model.remove(&key).is_some()
                );
            }
        }
        saw_migration |= store.stats().hash_is_expanding;
        if step % 5_000 == 0 {
            store.check_invariants();
        }
    }
    store.check_invariants();
    assert!(saw_migration);
    assert_eq!(store.stats().curr_items, model.len() as u64);
    assert_eq!(store.stats().evictions, 0);
}

#[test]
fn add_on_a_present_item_bumps_without_fetching() {
    let mut store = tiny();
    set(&mut store, "k", b"v", None, T0);
    assert_eq!(
        mode(&mut store, StoreMode::Add, "k", 0, b"w", at(3)),
        StoreOutcome::NotStored
    );
    let view = store.get(b"k", test_hash(b"k"), at(4)).unwrap();
    assert!(!view.fetched, "add does not count as a read");
    assert_eq!(view.last_access, at(3), "but it is a recent access");
}

/// `-M`: a full store refuses new items instead of evicting, keeps every item it has, and
/// still reclaims dead items.
#[test]
fn without_evictions_a_full_store_refuses_and_keeps_what_it_has() {
    let mut cfg = config(2048, 1024);
    cfg.evictions_enabled = false;
    let mut store = Store::new(cfg);
    let value = [7u8; 100];
    let mut stored = Vec::new();
    let refused = loop {
        let key = format!("k{}", stored.len());
        let result = store.store(
            StoreMode::Set,
            key.as_bytes(),
            test_hash(key.as_bytes()),
            0,
            Some(at(50)),
            &value,
            T0,
        );
        store.check_invariants();
        match result {
            Ok(StoreOutcome::Stored) => stored.push(key),
            other => break other,
        }
        assert!(stored.len() < 100, "a two-page store never fills");
    };
    assert_eq!(refused, Err(StoreError::OutOfMemory));
    assert!(stored.len() >= 2);
    for key in &stored {
        assert_eq!(
            get(&mut store, key, T0).as_deref(),
            Some(&value[..]),
            "{key}"
        );
    }
    let stats = store.stats();
    assert_eq!(stats.evictions, 0);
    let outofmemory: u64 = stats.classes.iter().map(|c| c.counters.outofmemory).sum();
    assert_eq!(outofmemory, 1);
    // Once they are dead, their chunks are reused (reclaimed, not evicted).
    assert_eq!(
        set(&mut store, "kx", &value, Some(at(100)), at(60)),
        StoreOutcome::Stored
    );
    assert_eq!(store.stats().evictions, 0);
    assert_eq!(store.stats().reclaimed, 1);
}

/// `-M`: a page emptied by deletes goes to a class that needs one, evicting nothing.
#[test]
fn without_evictions_empty_pages_still_move() {
    let mut cfg = config(2048, 1024);
    cfg.evictions_enabled = false;
    let mut store = Store::new(cfg);
    let small = [1u8; 100];
    let mut keys = Vec::new();
    while store
        .store(
            StoreMode::Set,
            format!("s{}", keys.len()).as_bytes(),
            test_hash(format!("s{}", keys.len()).as_bytes()),
            0,
            None,
            &small,
            T0,
        )
        .is_ok()
    {
        keys.push(format!("s{}", keys.len()));
    }
    let big = [2u8; 600];
    let too_big = store.store(StoreMode::Set, b"big", test_hash(b"big"), 0, None, &big, T0);
    assert_eq!(too_big, Err(StoreError::OutOfMemory));
    for key in &keys {
        assert!(store.delete(key.as_bytes(), test_hash(key.as_bytes()), T0));
    }
    assert_eq!(set(&mut store, "big", &big, None, T0), StoreOutcome::Stored);
    assert_eq!(store.stats().evictions, 0);
}

#[test]
fn crawl_pass_sweeps_only_the_classes_asked_for() {
    let mut store = Store::new(config(64 * 1024, 1024));
    let big = vec![b'B'; 200];
    for i in 0..20 {
        set(&mut store, &key_of(i), b"v", Some(at(5)), T0);
        set(&mut store, &format!("big:{i:02}"), &big, Some(at(5)), T0);
    }
    let small_class = store.class_for(8, 1, 0, Some(at(5)));
    let big_class = store.class_for(6, big.len(), 0, Some(at(5)));
    assert_ne!(small_class, big_class);
    let mut classes = ClassSet::EMPTY;
    classes.insert(big_class);
    store.request_crawl_pass(classes);
    let mut reclaimed = 0;
    for _ in 0..1000 {
        if !store.crawl_pass_requested() {
            break;
        }
        reclaimed += store.crawl(at(5), 7, 0);
    }
    assert!(!store.crawl_pass_requested(), "the pass ended");
    assert_eq!(reclaimed, 20, "only the big items");
    assert_eq!(store.stats().curr_items, 20);
    store.check_invariants();
    // The sweeps after the pass cover every class again.
    let mut later = 0;
    for _ in 0..1000 {
        later += store.crawl(at(5), 7, 0);
    }
    assert_eq!(later, 20);
}

#[test]
fn tocrawl_caps_the_items_checked_per_class_in_a_pass() {
    let mut store = Store::new(config(64 * 1024, 1024));
    for i in 0..30 {
        set(&mut store, &key_of(i), b"v", Some(at(5)), T0);
    }
    store.request_crawl_pass(ClassSet::ALL);
    let mut reclaimed = 0;
    for _ in 0..1000 {
        if !store.crawl_pass_requested() {
            break;
        }
        reclaimed += store.crawl(at(5), 4, 10);
    }
    assert!(!store.crawl_pass_requested());
    assert_eq!(reclaimed, 10, "one pass checks 10 items of the class");
    assert_eq!(store.stats().crawler_items_checked, 10);
    assert_eq!(store.stats().curr_items, 20);
}

#[test]
fn reassign_moves_one_page_and_keeps_a_class_its_last() {
    let mut store = Store::new(config(8 * 1024, 1024));
    for i in 0..200 {
        set(&mut store, &key_of(i), b"small", None, T0);
    }
    let small = store.class_for(8, 5, 0, None);
    let large = store.class_for(8, 900, 0, None);
    let small_pages = pages_of(&store, small);
    assert!(small_pages >= 2, "{small_pages}");
    let items = store.stats().curr_items;
    assert_eq!(
        store.reassign(PageSource::Class(small), PageSink::Class(large), T0),
        Reassigned::Moved
    );
    assert_eq!(pages_of(&store, small), small_pages - 1);
    assert_eq!(
        pages_of(&store, large),
        1,
        "the destination got its page at once"
    );
    assert!(
        store.stats().curr_items < items,
        "the page's items were evicted"
    );
    assert_eq!(store.stats().slabs_moved, 1);
    store.check_invariants();
    // The destination has one page: it keeps it.
    assert_eq!(
        store.reassign(PageSource::Class(large), PageSink::Class(small), T0),
        Reassigned::NoSpare
    );
    // The global pool holds only pages given back to it, not budget that never held one.
    assert_eq!(store.stats().slab_global_page_pool, 0);
    assert_eq!(
        store.reassign(PageSource::Free, PageSink::Class(large), T0),
        Reassigned::NoSpare
    );
    let evictions = store.stats().evictions;
    for pool in 1..=2 {
        assert_eq!(
            store.reassign(PageSource::Class(small), PageSink::Free, T0),
            Reassigned::Moved
        );
        assert_eq!(store.stats().slab_global_page_pool, pool);
    }
    // Page moves evict outside the class's pressure: counted apart, as memcached does.
    assert!(store.stats().slab_reassign_evictions_nomem > 0);
    assert_eq!(store.stats().evictions, evictions);
    // Like any class, the pool keeps its last page.
    assert_eq!(
        store.reassign(PageSource::Free, PageSink::Class(large), T0),
        Reassigned::Moved
    );
    assert_eq!(store.stats().slab_global_page_pool, 1);
    assert_eq!(
        store.reassign(PageSource::Free, PageSink::Class(large), T0),
        Reassigned::NoSpare
    );
    assert_eq!(pages_of(&store, large), 2);
    // New pages come out of the pool first.
    assert_eq!(
        store.reassign(PageSource::Class(small), PageSink::Free, T0),
        Reassigned::Moved
    );
    assert_eq!(store.stats().slab_global_page_pool, 2);
    let mid = store.class_for(8, 400, 0, None);
    assert_eq!(pages_of(&store, mid), 0);
    set(&mut store, "mid:one", &[b'm'; 400], None, T0);
    assert_eq!(pages_of(&store, mid), 1);
    assert_eq!(store.stats().slab_global_page_pool, 1);
    assert_eq!(
        store.reassign(PageSource::Any, PageSink::Class(large), T0),
        Reassigned::Moved
    );
    // Once no class has a page to spare, `Any` finds none.
    while store.reassign(PageSource::Any, PageSink::Free, T0) == Reassigned::Moved {}
    assert_eq!(
        store.reassign(PageSource::Any, PageSink::Free, T0),
        Reassigned::NoClass
    );
    store.check_invariants();
}

#[test]
fn automove_zero_keeps_pages_where_they_are() {
    // As `rebalancing_moves_pages_to_large_items`, with moves by pressure off: the large class
    // gets the page it must have (it had none), and then evicts its own items.
    let mut store = Store::new(config(8 * 1024, 1024));
    store.set_automove(0);
    for i in 0..200 {
        set(&mut store, &key_of(i), b"small", None, T0);
    }
    let large = vec![b'L'; 900];
    for i in 0..40 {
        let outcome = set(&mut store, &format!("large:{i}"), &large, None, at(1));
        assert_eq!(outcome, StoreOutcome::Stored);
    }
    let small_class = store.class_for(8, 5, 0, None);
    let large_pages: u64 = store
        .stats()
        .classes
        .iter()
        .filter(|c| c.slab_class != small_class)
        .map(|c| c.total_pages)
        .sum();
    assert_eq!(large_pages, 1, "the large class evicted its own items");
    store.check_invariants();
}

#[test]
fn cas_values_interleave_across_shards() {
    let mut shard0 = tiny();
    let mut shard1 = tiny();
    shard0.set_cas_shard(0, 2);
    shard1.set_cas_shard(1, 2);
    let mut seen = Vec::new();
    for i in 0..3 {
        let key = format!("k{i}");
        set(&mut shard0, &key, b"v", None, T0);
        set(&mut shard1, &key, b"v", None, T0);
        let hash = test_hash(key.as_bytes());
        seen.push(shard0.peek_cas(key.as_bytes(), hash, T0).unwrap());
        seen.push(shard1.peek_cas(key.as_bytes(), hash, T0).unwrap());
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    // One shard: the sequence itself, as memcached counts.
    let mut single = tiny();
    set(&mut single, "a", b"v", None, T0);
    set(&mut single, "b", b"v", None, T0);
    assert_eq!(single.peek_cas(b"b", test_hash(b"b"), T0), Some(2));
}

#[test]
fn size_histogram_counts_exactly_the_items_stored_since_it_was_switched_on() {
    // Small memory, so evictions and page moves unlink items too.
    let mut store = Store::new(config(64 << 10, 4 << 10));
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut run = |store: &mut Store, steps: u32| {
        for step in 0..steps {
            let roll = next();
            let key = key_of((roll >> 8) as usize % 300);
            let hash = test_hash(key.as_bytes());
            match roll % 6 {
                0 | 1 => {
                    let len = (roll >> 20) as usize % 900;
                    let _ = store.store(
                        StoreMode::Set,
                        key.as_bytes(),
                        hash,
                        0,
                        None,
                        &vec![b'1'; len],
                        T0,
                    );
                }
                2 => {
                    // A short number: an `incr` that fits renews the sequence in place.
                    let _ = store.store(StoreMode::Set, key.as_bytes(), hash, 0, None, b"100", T0);
                    store.arith(key.as_bytes(), hash, true, roll % 7, T0);
                }
                3 => {
                    store.meta_delete(key.as_bytes(), hash, T0, None, Some(None));
                }
                4 => {
                    store.delete(key.as_bytes(), hash, T0);
                }
                _ => {
                    store.arith(key.as_bytes(), hash, roll % 2 == 0, 1, T0);
                }
            }
            if step % 97 == 0 {
                // Compares the histogram with a recount of the linked items.
                store.check_invariants();
            }
        }
    };
    run(&mut store, 3_000);
    assert!(store.size_histogram().is_none());
    store.set_size_tracking(true);
    assert_eq!(
        store.size_histogram().unwrap().counts().count(),
        0,
        "older items are not counted"
    );
    run(&mut store, 20_000);
    store.check_invariants();
    let stats = store.stats();
    assert!(stats.evictions > 0, "the workload evicts");
    let counted: u32 = store
        .size_histogram()
        .unwrap()
        .counts()
        .map(|(_, n)| n)
        .sum();
    assert!(counted > 0 && u64::from(counted) <= stats.curr_items);
    store.set_size_tracking(false);
    assert!(store.size_histogram().is_none());
    store.check_invariants();
}
