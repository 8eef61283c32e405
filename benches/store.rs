//! Store micro-benchmarks (the pure core only): get hit, get miss, set (overwrite and new keys
//! under eviction), slab allocation + free, and key hashing with shard selection.
//!
//! `cargo bench --bench store`

use std::hint::black_box;

use corecache::clock::START;
use corecache::router::hash::{key_hash, shard_of};
use corecache::storage::{Store, StoreConfig, StoreMode};
use criterion::{criterion_group, criterion_main, Criterion};

const KEYS: usize = 100_000;

fn store(memory_bytes_max: usize) -> Store {
    Store::new(StoreConfig {
        memory_bytes_max,
        page_size: 1 << 20,
        slab_growth_factor: 1.25,
        item_size_max: 1 << 20,
        cas_enabled: true,
        key_hash,
        large_pages: false,
        chunk_bytes_smallest: corecache::storage::slab::CHUNK_BYTES_SMALLEST,
        fine_class_bytes_max: corecache::storage::slab::FINE_CLASS_BYTES_MAX,
        growth_steps: 1,
        evictions_enabled: true,
    })
}

fn keys() -> Vec<(Vec<u8>, u64)> {
    (0..KEYS)
        .map(|i| {
            let key = format!("key:{i:07}").into_bytes();
            let hash = key_hash(&key);
            (key, hash)
        })
        .collect()
}

fn filled(keys: &[(Vec<u8>, u64)], memory_bytes_max: usize) -> Store {
    let mut store = store(memory_bytes_max);
    let value = [b'v'; 100];
    for (key, hash) in keys {
        store
            .store(StoreMode::Set, key, *hash, 0, None, &value, START)
            .expect("fill");
    }
    store
}

fn bench_get(c: &mut Criterion) {
    let keys = keys();
    let mut store = filled(&keys, 64 << 20);
    let mut i = 0;
    c.bench_function("get_hit", |b| {
        b.iter(|| {
            let (key, hash) = &keys[i % KEYS];
            i = i.wrapping_add(7919);
            black_box(store.get(key, *hash, START).map(|view| view.value.len()))
        })
    });
    // The same over 1,000 keys (cache-resident): the CPU cost without DRAM misses.
    let hot = &keys[..1000];
    c.bench_function("get_hit_cached", |b| {
        b.iter(|| {
            let (key, hash) = &hot[i % hot.len()];
            i = i.wrapping_add(7919);
            black_box(store.get(key, *hash, START).map(|view| view.value.len()))
        })
    });
    let missing: Vec<(Vec<u8>, u64)> = (0..KEYS)
        .map(|i| {
            let key = format!("absent:{i:07}").into_bytes();
            let hash = key_hash(&key);
            (key, hash)
        })
        .collect();
    c.bench_function("get_miss", |b| {
        b.iter(|| {
            let (key, hash) = &missing[i % KEYS];
            i = i.wrapping_add(7919);
            black_box(store.get(key, *hash, START).is_some())
        })
    });
}

fn bench_set(c: &mut Criterion) {
    let keys = keys();
    let value = [b'w'; 100];
    let mut store = filled(&keys, 64 << 20);
    let mut i = 0;
    c.bench_function("set_overwrite", |b| {
        b.iter(|| {
            let (key, hash) = &keys[i % KEYS];
            i = i.wrapping_add(7919);
            black_box(store.store(StoreMode::Set, key, *hash, 0, None, &value, START))
        })
    });
    // 4 MiB holds about 32k of the 100k keys: every set of a new key evicts.
    let mut store = filled(&keys, 4 << 20);
    c.bench_function("set_evicting", |b| {
        b.iter(|| {
            let (key, hash) = &keys[i % KEYS];
            i = i.wrapping_add(7919);
            black_box(store.store(StoreMode::Set, key, *hash, 0, None, &value, START))
        })
    });
}

fn bench_slab(c: &mut Criterion) {
    use corecache::storage::slab::Slabs;
    let mut slabs = Slabs::new(1 << 20, 1.25, 64 << 20);
    let class = slabs.class_for(127);
    let mut held = Vec::with_capacity(1024);
    c.bench_function("slab_alloc_free_x1024", |b| {
        b.iter(|| {
            for _ in 0..1024 {
                held.push(slabs.try_alloc(class, 127).expect("room"));
            }
            for loc in held.drain(..) {
                // Freeing needs a chunk that looks like an item; a never-linked chunk is fine.
                slabs.free(loc);
            }
        })
    });
}

fn bench_hash(c: &mut Criterion) {
    let short = b"key:0000001";
    let long = [b'k'; 250];
    c.bench_function("key_hash_11_bytes", |b| {
        b.iter(|| key_hash(black_box(short)))
    });
    c.bench_function("key_hash_250_bytes", |b| {
        b.iter(|| key_hash(black_box(&long)))
    });
    c.bench_function("key_hash_and_shard_of_4", |b| {
        b.iter(|| shard_of(key_hash(black_box(short)), black_box(4)))
    });
}

criterion_group!(benches, bench_get, bench_set, bench_slab, bench_hash);
criterion_main!(benches);
