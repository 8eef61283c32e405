//! The Store against a HashMap model: random op sequences over 16 keys, value sizes that cross
//! slab class boundaries (and the page size), and a clock that only moves forward.
//!
//! * Roomy memory: every result, value, flag, cas and expiry matches the model exactly.
//! * Tight memory: no wrong answers. A disagreement is allowed only for a key that may have been
//!   evicted (the store's `evictions` rose since the key was last written); the model then
//!   forgets the key and must agree with the store's answer from there.
//!
//! `check_invariants()` runs after every op.

use std::collections::HashMap;

use corecache::clock::*;
use corecache::storage::*;
use proptest::prelude::*;

const PAGE_SIZE: usize = 1024;
const ITEM_SIZE_MAX: usize = 3000;

fn hash(key: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 32)
}

#[derive(Clone)]
enum Op {
    Store(Mode, u8, u32, Option<u32>, Vec<u8>),
    /// cas with the key's current cas (true) or a wrong one.
    Cas(u8, bool, Vec<u8>),
    Get(u8),
    Delete(u8),
    Arith(u8, bool, u64),
    Touch(u8, Option<u32>),
    Flush(u32),
    Advance(u32),
    Crawl(usize),
    /// `cache_memlimit`: a new budget of this many pages.
    MemLimit(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// A cas whose `cas_expected` matched: a set that keeps the old item on failure.
    CasMatched,
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => (0u64..100).prop_map(|n| format!(" {n}").into_bytes()),
        6 => (prop::sample::select(vec![0usize, 1, 7, 50, 90, 200, 300, 500, 700, 990, 1010, 1500, 2900, 3001]), any::<u8>())
            .prop_map(|(len, seed)| (0..len).map(|i| seed.wrapping_add(i as u8)).collect()),
    ]
}

fn ttl_strategy() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![3 => Just(None), 1 => Just(Some(0)), 2 => (1u32..6).prop_map(Some)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u8..16;
    let mode = prop::sample::select(vec![
        Mode::Set,
        Mode::Set,
        Mode::Add,
        Mode::Replace,
        Mode::Append,
        Mode::Prepend,
    ]);
    let flags = prop_oneof![Just(0u32), any::<u32>()];
    prop_oneof![
        8 => (mode, key.clone(), flags, ttl_strategy(), value_strategy())
            .prop_map(|(m, k, f, t, v)| Op::Store(m, k, f, t, v)),
        2 => (key.clone(), any::<bool>(), value_strategy()).prop_map(|(k, ok, v)| Op::Cas(k, ok, v)),
        8 => key.clone().prop_map(Op::Get),
        2 => key.clone().prop_map(Op::Delete),
        2 => (key.clone(), any::<bool>(), prop_oneof![0u64..10, Just(u64::MAX)])
            .prop_map(|(k, i, d)| Op::Arith(k, i, d)),
        2 => (key.clone(), ttl_strategy()).prop_map(|(k, t)| Op::Touch(k, t)),
        1 => (0u32..4).prop_map(Op::Flush),
        3 => (0u32..3).prop_map(Op::Advance),
        1 => (1usize..20).prop_map(Op::Crawl),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct ModelItem {
    value: Vec<u8>,
    flags: u32,
    expires_at: Option<Instant32>,
    cas: u64,
}

/// What an op returned, in a form both sides produce.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Stored(Result<StoreOutcome, StoreError>),
    Hit(Option<(Vec<u8>, u32, u64)>),
    Deleted(bool),
    Arith(ArithOutcome),
    Nothing,
}

struct Model {
    items: HashMap<Vec<u8>, ModelItem>,
    seq_next: u64,
    flush_pending: Option<Instant32>,
}

fn key_of(k: u8) -> Vec<u8> {
    format!("key:{k:02}").into_bytes()
}

fn expires(ttl: Option<u32>, now: Instant32) -> Option<Instant32> {
    ttl.map(|t| if t == 0 { Instant32(1) } else { now.plus(t) })
}

/// memcached's rule (C `isspace`, `strtoull`), written independently of the store's parser.
fn parse_number(value: &[u8]) -> Option<u64> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    let start = value
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(value.len());
    let mut rest = &value[start..];
    if rest.first() == Some(&b'+') {
        rest = &rest[1..];
    }
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if end == 0 || rest.get(end).is_some_and(|&b| !is_space(b)) {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

impl Model {
    fn tick(&mut self, now: Instant32) {
        if self.flush_pending.is_some_and(|at| at <= now) {
            self.flush_pending = None;
            self.items.clear();
        }
        self.items.retain(|_, item| !is_dead(item.expires_at, now));
    }

    fn next_cas(&mut self) -> u64 {
        self.seq_next += 1;
        self.seq_next - 1
    }

    fn hit(&self, key: &[u8]) -> Option<(Vec<u8>, u32, u64)> {
        self.items
            .get(key)
            .map(|i| (i.value.clone(), i.flags, i.cas))
    }

    fn apply(&mut self, op: &Op, now: Instant32) -> Answer {
        self.tick(now);
        match op {
            Op::Store(mode, k, flags, ttl, value) => {
                Answer::Stored(self.store(*mode, &key_of(*k), *flags, *ttl, value, now))
            }
            Op::Cas(k, correct, value) => {
                let key = key_of(*k);
                if value.len() > ITEM_SIZE_MAX {
                    return Answer::Stored(Err(StoreError::TooLarge));
                }
                let Some(item) = self.items.get(&key) else {
                    return Answer::Stored(Ok(StoreOutcome::NotFound));
                };
                if !*correct {
                    return Answer::Stored(Ok(StoreOutcome::Exists));
                }
                let _ = item;
                Answer::Stored(self.store(Mode::CasMatched, &key, 0, None, value, now))
            }
            Op::Get(k) => Answer::Hit(self.hit(&key_of(*k))),
            Op::Delete(k) => Answer::Deleted(self.items.remove(&key_of(*k)).is_some()),
            Op::Arith(k, incr, delta) => {
                let key = key_of(*k);
                let Some(item) = self.items.get(&key) else {
                    return Answer::Arith(ArithOutcome::NotFound);
                };
                let Some(n) = parse_number(&item.value) else {
                    return Answer::Arith(ArithOutcome::NonNumeric);
                };
                let result = if *incr {
                    n.wrapping_add(*delta)
                } else {
                    n.saturating_sub(*delta)
                };
                let digits = result.to_string().into_bytes();
                let old_len = item.value.len();
                let cas = self.next_cas();
                let item = self.items.get_mut(&key).expect("present");
                item.value = digits;
                if item.value.len() < old_len {
                    item.value.resize(old_len, b' ');
                }
                item.cas = cas;
                Answer::Arith(ArithOutcome::Value(result))
            }
            Op::Touch(k, ttl) => {
                let key = key_of(*k);
                match self.items.get_mut(&key) {
                    Some(item) => {
                        item.expires_at = expires(*ttl, now);
                        let hit = (item.value.clone(), item.flags, item.cas);
                        // A touch to the past kills the item right away for the next op.
                        Answer::Hit(Some(hit))
                    }
                    None => Answer::Hit(None),
                }
            }
            Op::Flush(delay) => {
                if *delay == 0 {
                    // An immediate flush takes a cas id, as memcached's does.
                    self.next_cas();
                    self.flush_pending = None;
                    self.items.clear();
                } else {
                    self.flush_pending = Some(now.plus(*delay));
                }
                Answer::Nothing
            }
            Op::Advance(_) | Op::Crawl(_) | Op::MemLimit(_) => Answer::Nothing,
        }
    }

    fn store(
        &mut self,
        mode: Mode,
        key: &[u8],
        flags: u32,
        ttl: Option<u32>,
        value: &[u8],
        now: Instant32,
    ) -> Result<StoreOutcome, StoreError> {
        if value.len() > ITEM_SIZE_MAX {
            if mode == Mode::Set {
                self.items.remove(key);
            }
            return Err(StoreError::TooLarge);
        }
        let old = self.items.get(key).cloned();
        let new = match (mode, old) {
            (Mode::Add, Some(_)) => return Ok(StoreOutcome::NotStored),
            (Mode::Replace | Mode::Append | Mode::Prepend, None) => {
                return Ok(StoreOutcome::NotStored)
            }
            (Mode::Append, Some(old)) => ModelItem {
                value: [&old.value[..], value].concat(),
                ..old
            },
            (Mode::Prepend, Some(old)) => ModelItem {
                value: [value, &old.value[..]].concat(),
                ..old
            },
            _ => ModelItem {
                value: value.to_vec(),
                flags,
                expires_at: expires(ttl, now),
                cas: 0,
            },
        };
        if new.value.len() > ITEM_SIZE_MAX {
            return Err(StoreError::TooLarge);
        }
        let cas = self.next_cas();
        self.items.insert(key.to_vec(), ModelItem { cas, ..new });
        Ok(StoreOutcome::Stored)
    }
}

fn run_store(store: &mut Store, op: &Op, now: Instant32) -> Answer {
    match op {
        Op::Store(mode, k, flags, ttl, value) => {
            let key = key_of(*k);
            let mode = match mode {
                Mode::Set => StoreMode::Set,
                Mode::Add => StoreMode::Add,
                Mode::Replace => StoreMode::Replace,
                Mode::Append => StoreMode::Append,
                Mode::Prepend => StoreMode::Prepend,
                Mode::CasMatched => unreachable!("not generated"),
            };
            Answer::Stored(store.store(
                mode,
                &key,
                hash(&key),
                *flags,
                expires(*ttl, now),
                value,
                now,
            ))
        }
        Op::Cas(k, correct, value) => {
            let key = key_of(*k);
            // Peek at the current cas without counting a get: use the stats-neutral route of
            // reading through `get` and compensating is not needed; counters are not compared.
            let current = store.get(&key, hash(&key), now).map(|view| view.cas);
            let cas_expected = match (current, correct) {
                (Some(cas), true) => cas,
                (Some(cas), false) => cas.wrapping_add(1_000_000),
                (None, _) => 12345,
            };
            Answer::Stored(store.store(
                StoreMode::Cas(cas_expected),
                &key,
                hash(&key),
                0,
                None,
                value,
                now,
            ))
        }
        Op::Get(k) => {
            let key = key_of(*k);
            Answer::Hit(
                store
                    .get(&key, hash(&key), now)
                    .map(|v| (v.value.to_vec(), v.client_flags, v.cas)),
            )
        }
        Op::Delete(k) => {
            let key = key_of(*k);
            Answer::Deleted(store.delete(&key, hash(&key), now))
        }
        Op::Arith(k, incr, delta) => {
            let key = key_of(*k);
            Answer::Arith(store.arith(&key, hash(&key), *incr, *delta, now))
        }
        Op::Touch(k, ttl) => {
            let key = key_of(*k);
            Answer::Hit(
                store
                    .touch(&key, hash(&key), expires(*ttl, now), now)
                    .map(|v| (v.value.to_vec(), v.client_flags, v.cas)),
            )
        }
        Op::Flush(delay) => {
            store.flush_all(now.plus(*delay), now);
            Answer::Nothing
        }
        Op::Advance(_) => Answer::Nothing,
        Op::Crawl(budget) => {
            assert!(store.crawl(now, *budget, 0) <= *budget);
            Answer::Nothing
        }
        Op::MemLimit(pages) => {
            store.set_memory_limit(pages * PAGE_SIZE, now);
            assert!(store.stats().total_malloced <= (pages * PAGE_SIZE) as u64);
            Answer::Nothing
        }
    }
}

fn brief_op(op: &Op) -> String {
    format!("{op:?}")
}

/// Compact: values print as their length (and text when short).
impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = |v: &Vec<u8>| {
            if v.len() <= 24 {
                format!("{:?}", String::from_utf8_lossy(v))
            } else {
                format!("<{} bytes>", v.len())
            }
        };
        match self {
            Op::Store(mode, k, flags, ttl, v) => {
                write!(f, "Store({mode:?}, {k}, {flags}, {ttl:?}, {})", value(v))
            }
            Op::Cas(k, ok, v) => write!(f, "Cas({k}, {ok}, {})", value(v)),
            Op::Get(k) => write!(f, "Get({k})"),
            Op::Delete(k) => write!(f, "Delete({k})"),
            Op::Arith(k, incr, d) => write!(f, "Arith({k}, {incr}, {d})"),
            Op::Touch(k, ttl) => write!(f, "Touch({k}, {ttl:?})"),
            Op::Flush(d) => write!(f, "Flush({d})"),
            Op::Advance(d) => write!(f, "Advance({d})"),
            Op::Crawl(b) => write!(f, "Crawl({b})"),
            Op::MemLimit(p) => write!(f, "MemLimit({p})"),
        }
    }
}

fn op_key(op: &Op) -> Option<Vec<u8>> {
    match op {
        Op::Store(_, k, ..)
        | Op::Cas(k, ..)
        | Op::Get(k)
        | Op::Delete(k)
        | Op::Arith(k, ..)
        | Op::Touch(k, _) => Some(key_of(*k)),
        _ => None,
    }
}

/// Runs the ops against both; returns the store's final stats.
fn run(ops: &[Op], memory_bytes_max: usize, tight: bool) -> StoreStats {
    let mut store = Store::new(StoreConfig {
        memory_bytes_max,
        page_size: PAGE_SIZE,
        slab_growth_factor: 1.25,
        item_size_max: ITEM_SIZE_MAX,
        cas_enabled: true,
        key_hash: hash,
        large_pages: false,
        chunk_bytes_smallest: corecache::storage::slab::CHUNK_BYTES_SMALLEST,
        fine_class_bytes_max: corecache::storage::slab::FINE_CLASS_BYTES_MAX,
        // The class layouts the server picks: two classes per growth factor for the roomy
        // runs (256 pages), one for the tight ones.
        growth_steps: if tight { 1 } else { 2 },
        evictions_enabled: true,
    });
    let mut model = Model {
        items: HashMap::new(),
        seq_next: 1,
        flush_pending: None,
    };
    // Evictions seen when each key was last written.
    let mut written_at_evictions: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut now = START;
    for (step, op) in ops.iter().enumerate() {
        if let Op::Advance(secs) = op {
            now = now.plus(*secs);
        }
        let key = op_key(op);
        let brief = |answer: &Answer| -> String {
            let text = format!("{answer:?}");
            if text.len() > 160 {
                format!("{}..({} chars)", &text[..160], text.len())
            } else {
                text
            }
        };
        // The model's cas op needs the store's view of "correct": both use the current cas.
        let mut shadow = Model {
            items: model.items.clone(),
            seq_next: model.seq_next,
            flush_pending: model.flush_pending,
        };
        let expected = shadow.apply(op, now);
        let actual = run_store(&mut store, op, now);
        store.check_invariants();
        // Items leave by eviction or with a page moved to another class.
        let stats = store.stats();
        let evictions = stats.evictions + stats.slab_reassign_evictions_nomem;
        if expected == actual
            || (tight && matches!(actual, Answer::Stored(Err(StoreError::OutOfMemory))))
        {
            if expected == actual {
                model = shadow;
            } else {
                // Out of memory in a tight store: the store changed nothing but (for a set) the
                // old item, which it unlinked.
                model.tick(now);
                if let (Op::Store(Mode::Set, ..), Some(key)) = (op, &key) {
                    model.items.remove(key);
                }
            }
        } else {
            let key = key.clone().unwrap_or_default();
            let evicted_since = written_at_evictions
                .get(&key)
                .is_some_and(|&at| evictions > at)
                || !written_at_evictions.contains_key(&key) && evictions > 0;
            assert!(
                tight && evicted_since,
                "step {step}: {} at {now:?}: model {} store {}",
                brief_op(op),
                brief(&expected),
                brief(&actual)
            );
            // The key may have been evicted: forget it and replay the op on the model.
            model.tick(now);
            model.items.remove(&key);
            let replayed = model.apply(op, now);
            assert!(
                replayed == actual,
                "step {step}: {} after forgetting an evicted key: model {} store {}",
                brief_op(op),
                brief(&replayed),
                brief(&actual)
            );
        }
        let wrote = matches!(
            actual,
            Answer::Stored(Ok(StoreOutcome::Stored)) | Answer::Arith(ArithOutcome::Value(_))
        );
        if let (Some(key), true) = (key, wrote) {
            written_at_evictions.insert(key, evictions);
        }
    }
    store.stats()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn roomy_store_matches_the_model(ops in prop::collection::vec(op_strategy(), 1..200)) {
        let stats = run(&ops, 256 * PAGE_SIZE, false);
        prop_assert_eq!(stats.evictions, 0);
    }

    #[test]
    fn tight_store_never_answers_wrong(ops in prop::collection::vec(op_strategy(), 1..300)) {
        run(&ops, 6 * PAGE_SIZE, true);
    }

    /// `cache_memlimit` shrinking and growing between ops: evictions only, never a wrong answer.
    /// Budgets stay at 6 pages or more, like the tight test: a touch that must relocate the
    /// largest item (3 pages) needs room for both copies, and below that it answers a miss with
    /// no eviction to show for it (a limit of the compact layout, not of the budget change).
    #[test]
    fn memory_limit_changes_never_answer_wrong(
        ops in prop::collection::vec(
            prop_oneof![20 => op_strategy(), 1 => (6usize..16).prop_map(Op::MemLimit)],
            1..300,
        )
    ) {
        run(&ops, 6 * PAGE_SIZE, true);
    }
}

/// The tight configuration really evicts and moves pages (a fixed sequence, so it is not luck):
/// small values first, then, a few seconds later, large ones, which take the pages of the
/// classes gone cold.
#[test]
fn tight_configuration_exercises_eviction() {
    let mut ops = Vec::new();
    for round in 0..6u8 {
        if round == 3 {
            ops.push(Op::Advance(5));
        }
        for k in 0..16u8 {
            let sizes = if round < 3 {
                [90usize, 300]
            } else {
                [700, 1500]
            };
            let len = sizes[usize::from((k + round) % 2)];
            ops.push(Op::Store(Mode::Set, k, 0, None, vec![b'a' + round; len]));
            ops.push(Op::Get(k.wrapping_mul(7) % 16));
        }
    }
    let stats = run(&ops, 6 * PAGE_SIZE, true);
    assert!(stats.evictions > 0);
    assert!(stats.slabs_moved > 0);
}
