//! Admin commands that concern the whole server: `config get cluster` (and the legacy
//! `get AmazonElastiCache:cluster`), `stats detail on|off|dump`, `lru_crawler metadump`,
//! `cache_memlimit` and `shutdown`.
//!
//! Commands that touch every shard go out as a broadcast ([`Core::broadcast`]) and answer once
//! every shard has done its part: `stats detail on|off` and `cache_memlimit` answer `OK`,
//! `stats detail dump` gathers every shard's lines.
//!
//! `lru_crawler metadump` lists every live item, however many, and is streamed instead: its slot
//! ([`SlotKind::Metadump`]) walks shard 0, then shard 1, and so on, each in steps of at most
//! [`METADUMP_STEP_BYTES`] of lines (and [`METADUMP_STEP_CHUNKS_MAX`] chunks looked at), one step
//! at a time. A step runs inline for this core's shard and as a [`RemoteOp::MetadumpStep`] over
//! the mesh for another, whose reply carries the cursor to resume at. [`metadump_pump`] asks for
//! the next step only once the slot is at the front of the connection's queue (everything
//! before it is in `out`), no step is in flight, and the connection's unsent output is below
//! [`METADUMP_RESUME_BYTES`]: a dump's output held per connection stays under that plus one
//! step, and a client that reads slowly makes the dump slow instead of the server's memory
//! grow. The connection parses nothing more until the dump has ended (`Conn::may_parse`), so
//! requests pipelined behind it run and answer after `END`, as in memcached. A connection that
//! closes mid-dump (seen when a send fails) just stops asking; a step in flight is answered
//! into the void, as for any reply to a closed connection. Items stored or removed during the dump may
//! or may not be listed (memcached gives no snapshot either); see `storage::WalkCursor`.
//!
//! Replies follow memcached 1.6.18 byte for byte, except where noted:
//! * `lru_crawler metadump` takes `all` or one class id (memcached also takes a comma list);
//!   class ids count from 1 as memcached's do, but name corecache's classes (as in `stats
//!   items`; corecache has finer classes, so more of them), `size` is corecache's item size, and
//!   items come shard by shard in page order (memcached: class by class in LRU order).
//! * `stats detail dump` lists prefixes sorted by name (memcached: hash-table order).
//! * `stats cachedump <class> <limit>` lists every live item of the class, shard by shard in
//!   page order, up to the limit and memcached's 2 MB reply (memcached lists only the cold
//!   segment of its LRU, most recent first); class ids as for metadump.

use std::sync::atomic::Ordering;

use super::cluster::LEGACY_KEY;
use super::connection::{BufPool, Conn, MetadumpWalk, Slot, SlotKind};
use super::core::{push_reply, Core};
use super::mesh::{ConnRef, DetailOp, RemoteOp, RemoteRequest, StatsKind};
use super::stats::class_id_max;
use crate::clock::{Epoch, Instant32};
use crate::protocol::{compose, Keys, Request, ShutdownMode};
use crate::storage::{ClassSet, ItemMeta, PageSink, PageSource, Reassigned, Store, WalkCursor};

/// Bytes of item lines one metadump step stops after (it may pass this by one line, under
/// 1 KiB): the unit in which a dump is walked, sent over the mesh and queued for the client.
pub const METADUMP_STEP_BYTES: usize = 256 * 1024;

/// Chunks one metadump step looks at, at most, listed or not: bounds a step's time where most
/// chunks are free, dead or of another class.
pub const METADUMP_STEP_CHUNKS_MAX: usize = 16 * 1024;

/// A metadump's next step is asked for only while its connection has fewer unsent bytes than
/// this, so the dump output one connection holds stays under this plus one step.
pub const METADUMP_RESUME_BYTES: usize = METADUMP_STEP_BYTES;

/// Answers an admin request on connection `idx`.
pub fn dispatch(core: &mut Core, idx: u32, req: &Request<'_>) {
    match *req {
        Request::ConfigGet { key } => {
            let mut buf = Vec::new();
            if key == b"cluster" {
                core.shared.cluster.compose_config(&mut buf);
            } else {
                buf.extend_from_slice(compose::ERROR);
            }
            reply(core, idx, &buf);
        }
        Request::LruCrawlerMetadump { .. } | Request::LruCrawlerCrawl { .. }
            if !core.shared.crawler_enabled.load(Ordering::Relaxed) =>
        {
            reply(core, idx, compose::CLIENT_ERROR_CRAWLER_DISABLED);
        }
        Request::LruCrawlerCrawl { classes } => {
            let class_count = core.shard.store().class_count();
            let classes = match crawl_classes(classes, class_count) {
                Ok(classes) => classes,
                Err(refusal) => return reply(core, idx, refusal),
            };
            // One crawl at a time, as in memcached: every shard's pass must end first.
            let shard_count = u32::from(core.shard_count);
            if core
                .shared
                .crawls_running
                .compare_exchange(0, shard_count, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return reply(core, idx, compose::BUSY_CRAWLER);
            }
            match classes {
                Some(classes) => core.broadcast(
                    idx,
                    SlotKind::Ok { noreply: false },
                    RemoteOp::CrawlPass { classes },
                ),
                None => {
                    core.shared.crawls_running.store(0, Ordering::Release);
                    reply(core, idx, compose::NOTSTARTED_NO_ITEMS);
                }
            }
        }
        Request::LruCrawlerSleep { micros } => {
            core.shared
                .crawler_sleep_us
                .store(micros, Ordering::Relaxed);
            reply(core, idx, compose::OK);
        }
        Request::LruTune {
            hot_pct,
            warm_pct,
            hot_factor_bits,
            warm_factor_bits,
            noreply,
        } => {
            let tune = &core.shared.lru_tune;
            tune.hot_pct.store(hot_pct, Ordering::Relaxed);
            tune.warm_pct.store(warm_pct, Ordering::Relaxed);
            tune.hot_factor.store(hot_factor_bits, Ordering::Relaxed);
            tune.warm_factor.store(warm_factor_bits, Ordering::Relaxed);
            if !noreply {
                reply(core, idx, compose::OK);
            }
        }
        Request::LruCrawlerTocrawl { items } => {
            core.shared.crawler_tocrawl.store(items, Ordering::Relaxed);
            reply(core, idx, compose::OK);
        }
        Request::LruCrawlerSwitch { enable } => {
            let was = core.shared.crawler_enabled.swap(enable, Ordering::Relaxed);
            // memcached cannot start a crawler thread that runs; stopping one that does not
            // run is fine.
            reply(
                core,
                idx,
                if enable && was {
                    compose::ERROR_CRAWLER_START
                } else {
                    compose::OK
                },
            );
        }
        Request::LruCrawlerMetadump { .. } if !core.shared.config.dump_enabled => {
            reply(core, idx, compose::ERROR_METADUMP_DISABLED); // -X
        }
        // As memcached: a dump starts only if no earlier request of the same read left its
        // reply stacked (silent ones included; a retrieval or `mn` flushes the stack). Replies
        // still waiting for another shard go out first: the dump is a slot behind them. A UDP
        // datagram keeps its own count: its requests run one at a time, a request waiting for
        // another shard ending the parse pass, so the pass's flag would forget what came before.
        Request::LruCrawlerMetadump { .. }
            if core.conn(idx).is_some_and(|c| match c.udp.as_deref() {
                Some(udp) => udp.stacked(),
                None => core.pipeline_stacked,
            }) =>
        {
            reply(core, idx, compose::ERROR_METADUMP_PIPELINED);
        }
        Request::LruCrawlerMetadump { classes } => {
            let class_count = core.shard.store().class_count();
            // `hash` has memcached walk its hash table instead of its LRUs: every item once,
            // as the walk of the pages lists them anyway.
            let list = if classes == b"hash" { b"all" } else { classes };
            match crawl_classes(list, class_count) {
                Ok(Some(classes)) => metadump_start(core, idx, classes),
                Ok(None) => reply(core, idx, compose::NOTSTARTED_NO_ITEMS),
                Err(refusal) => reply(core, idx, refusal),
            }
        }
        Request::CacheMemlimit { megabytes, noreply } => {
            let bytes_total = u64::from(megabytes) * 1024 * 1024;
            let shard_count = u64::from(core.shard_count);
            core.shared
                .memory_bytes_max
                .store(bytes_total, Ordering::Relaxed);
            let bytes = usize::try_from(bytes_total / shard_count).unwrap_or(usize::MAX);
            core.broadcast(idx, SlotKind::Ok { noreply }, RemoteOp::MemLimit { bytes });
        }
        Request::SlabsAutomove { mode, noreply } => {
            core.shared.slab_automove.store(mode, Ordering::Relaxed);
            core.broadcast(idx, SlotKind::Ok { noreply }, RemoteOp::Automove { mode });
        }
        Request::SlabsReassign { src, dst } => {
            if src == dst {
                return reply(core, idx, compose::REASSIGN_SAME);
            }
            // External ids: 0 is the free budget, 1.. corecache's classes; -1 (source only)
            // any class.
            let class_count = core.shard.store().class_count();
            let class = |id: i32| {
                u32::try_from(id)
                    .ok()
                    .filter(|&id| id >= 1 && (id as usize) <= class_count)
                    .and_then(super::stats::class_of_id)
            };
            let src = match src {
                -1 => Some(PageSource::Any),
                0 => Some(PageSource::Free),
                id => class(id).map(PageSource::Class),
            };
            let dst = match dst {
                0 => Some(PageSink::Free),
                id => class(id).map(PageSink::Class),
            };
            match (src, dst) {
                (Some(src), Some(dst)) => {
                    core.broadcast(idx, SlotKind::Reassign, RemoteOp::Reassign { src, dst })
                }
                _ => reply(core, idx, compose::REASSIGN_BADCLASS),
            }
        }
        Request::Shutdown { mode } => shutdown(core, idx, mode),
        _ => debug_assert!(false, "not an admin request: {req:?}"),
    }
}

/// `stats detail on|off|dump`.
pub fn dispatch_detail(core: &mut Core, idx: u32, mode: &[u8]) {
    let op = match mode {
        b"on" => DetailOp::On,
        b"off" => DetailOp::Off,
        _ => DetailOp::Dump,
    };
    match op {
        DetailOp::Dump => core.broadcast(
            idx,
            SlotKind::Stats(super::mesh::StatsKind::DetailDump),
            RemoteOp::Detail(op),
        ),
        DetailOp::On | DetailOp::Off => {
            core.shared
                .detail_enabled
                .store(op == DetailOp::On, Ordering::Relaxed);
            core.broadcast(idx, SlotKind::Ok { noreply: false }, RemoteOp::Detail(op));
        }
    }
}

/// `get AmazonElastiCache:cluster` (the legacy auto discovery form): answered here if that is
/// the only key and a node list is configured. Returns whether it was.
pub fn try_legacy_get(core: &mut Core, idx: u32, keys: Keys<'_>) -> bool {
    if !core.shared.cluster.configured() {
        return false;
    }
    let mut iter = keys.iter();
    if iter.next() != Some(LEGACY_KEY) || iter.next().is_some() {
        return false;
    }
    let mut buf = Vec::new();
    core.shared.cluster.compose_legacy(&mut buf);
    reply(core, idx, &buf);
    true
}

fn shutdown(core: &mut Core, idx: u32, mode: ShutdownMode) {
    if !core.shared.config.shutdown_enabled {
        reply(core, idx, compose::ERROR_SHUTDOWN_DISABLED);
        return;
    }
    if mode == ShutdownMode::Invalid {
        reply(core, idx, compose::CLIENT_ERROR_SHUTDOWN_MODE);
        return;
    }
    if let Some(conn) = core.conn_mut(idx) {
        conn.closing = true;
    }
    core.mark_dirty(idx);
    if core.shared.verbosity.load(Ordering::Relaxed) > 0 {
        eprintln!("shutdown command: stopping");
    }
    // The main thread waits for these signals in sigwait and then stops every executor, so
    // both end in a clean exit 0; as in memcached, `graceful` is SIGUSR1, the stop that saves
    // the memory file (`-e`).
    let signal = match mode {
        ShutdownMode::Graceful => libc::SIGUSR1,
        _ => libc::SIGTERM,
    };
    // SAFETY: kill on our own pid with a signal every thread blocks; no memory is involved.
    unsafe {
        libc::kill(libc::getpid(), signal);
    }
}

fn reply(core: &mut Core, idx: u32, bytes: &[u8]) {
    if let Some(conn) = core.conns.get_mut(idx as usize).and_then(Option::as_mut) {
        push_reply(conn, &mut core.pool, bytes);
    }
    core.mark_dirty(idx);
}

/// The class list of `lru_crawler crawl` and `metadump`, as memcached reads it: `all`, or ids separated by commas
/// (empty ones skipped), each one memcached could have (1 to 63) or one of corecache's
/// classes. `Ok(Some(set))`: the classes to sweep or list (an id past corecache's classes adds none);
/// `Ok(None)`: no id given (`NOTSTARTED`); `Err(BADCLASS)` for a bad id.
fn crawl_classes(list: &[u8], class_count: usize) -> Result<Option<ClassSet>, &'static [u8]> {
    if list == b"all" {
        return Ok(Some(ClassSet::ALL));
    }
    let mut any = false;
    let mut set = ClassSet::EMPTY;
    for id in list.split(|&b| b == b',').filter(|id| !id.is_empty()) {
        any = true;
        let id = crate::protocol::parse::strtoul_u32(id)
            .filter(|id| (1..=class_id_max(class_count)).contains(id))
            .ok_or(compose::BADCLASS)?;
        if let Some(class) = super::stats::class_of_id(id) {
            set.insert(class);
        }
    }
    Ok(any.then_some(set))
}

/// This shard's part of an admin broadcast.
pub fn exec_shard_op(core: &mut Core, op: &RemoteOp, out: &mut Vec<u8>) {
    match *op {
        RemoteOp::Detail(DetailOp::On) => core.shard.prefix_stats.enabled = true,
        RemoteOp::Detail(DetailOp::Off) => core.shard.prefix_stats.enabled = false,
        RemoteOp::Detail(DetailOp::Dump) => core.shard.prefix_stats.dump(out),
        RemoteOp::MemLimit { bytes } => {
            let now = core.now;
            core.shard.store_mut().set_memory_limit(bytes, now);
        }
        RemoteOp::CrawlPass { classes } => core.crawl_pass_start(classes),
        RemoteOp::Automove { mode } => core.shard.store_mut().set_automove(mode),
        RemoteOp::Reassign { src, dst } => {
            let now = core.now;
            out.push(match core.shard.store_mut().reassign(src, dst, now) {
                Reassigned::Moved => b'1',
                Reassigned::NoSpare => b'0',
                Reassigned::NoClass => b'2',
            });
        }
        _ => debug_assert!(false, "not an admin op: {op:?}"),
    }
}

/// Opens a metadump's slot on connection `idx`; [`metadump_pump`] takes it from there.
fn metadump_start(core: &mut Core, idx: u32, classes: ClassSet) {
    if udp_dump(core, idx) {
        return;
    }
    let walk = MetadumpWalk {
        classes,
        shard: 0,
        cursor: WalkCursor::START,
        step_in_flight: false,
    };
    core.new_slot(idx, 1, SlotKind::Metadump(walk));
    let conn_ref = core.conn_ref(idx);
    if let Some(conn) = core.conn_mut(idx) {
        conn.metadump_slots += 1;
    }
    if !core.metadumps.contains(&conn_ref) {
        core.metadumps.push(conn_ref);
    }
}

/// A dump asked over UDP: memcached hands the connection to its crawler, whose writes to a
/// datagram socket fail, so nothing is answered and the rest of the datagram is dropped. True
/// (and the datagram ended so) if `idx` is a UDP connection.
fn udp_dump(core: &mut Core, idx: u32) -> bool {
    match core.conn_mut(idx) {
        Some(conn) if conn.udp.is_some() => {
            conn.closing = true;
            true
        }
        _ => false,
    }
}

/// Moves every metadump under way on by at most one step, and forgets the connections that are
/// gone or have no dump left. Called once per loop turn, before the turn's envelopes go out.
pub(super) fn metadump_pump(core: &mut Core) {
    let mut i = 0;
    // Each pass either keeps entry i and moves past it, or removes it: bounded by the list.
    while i < core.metadumps.len() {
        if metadump_next(core, core.metadumps[i]) {
            i += 1;
        } else {
            core.metadumps.swap_remove(i);
        }
    }
}

/// Whether some metadump could take a step now (see [`metadump_pump`]); a connection that is
/// gone counts, so the pump runs and forgets it.
pub(super) fn metadump_runnable(core: &Core) -> bool {
    core.metadumps.iter().any(|r| match core.conn(r.index) {
        Some(c) if c.generation == r.generation => c.metadump_slots > 0 && may_step(c),
        _ => true,
    })
}

/// Whether the connection's front slot is a metadump ready for its next step.
fn may_step(conn: &Conn) -> bool {
    conn.pending_bytes() < METADUMP_RESUME_BYTES
        && matches!(
            conn.slots.front(),
            Some(Slot { kind: SlotKind::Metadump(walk), .. }) if !walk.step_in_flight
        )
}

/// One connection's turn in [`metadump_pump`]: the next step if it may take one (inline for
/// this shard, else asked of the owner). Returns whether the connection stays listed.
fn metadump_next(core: &mut Core, conn_ref: ConnRef) -> bool {
    let Some(conn) = core
        .conns
        .get_mut(conn_ref.index as usize)
        .and_then(Option::as_mut)
    else {
        return false;
    };
    if conn.generation != conn_ref.generation || conn.metadump_slots == 0 {
        return false;
    }
    if !may_step(conn) {
        return true;
    }
    let Some(Slot {
        seq,
        kind: SlotKind::Metadump(walk),
        ..
    }) = conn.slots.front_mut()
    else {
        return true;
    };
    if walk.shard != core.me {
        walk.step_in_flight = true;
        let op = RemoteOp::MetadumpStep {
            classes: walk.classes,
            from: walk.cursor,
        };
        core.outbox.to(walk.shard).requests.push(RemoteRequest {
            conn: conn_ref,
            seq: *seq,
            cfd: 0,
            op,
        });
        return true;
    }
    // The slot is at the front: everything before it is in `out` already.
    let (classes, from) = (walk.classes, walk.cursor);
    let store = core.shard.store();
    let next = metadump_step(
        store,
        &core.shared.epoch,
        core.now,
        classes,
        from,
        &mut conn.out,
    );
    metadump_advance(conn, &mut core.pool, core.shard_count, next);
    core.mark_dirty(conn_ref.index);
    true
}

/// Another shard answered the step of the metadump in slot `pos` of connection `idx` (of the
/// generation the caller checked): its lines go to `out`, and the walk moves on.
pub(super) fn metadump_answered(
    core: &mut Core,
    idx: u32,
    pos: u64,
    data: &[u8],
    segments: &[(u32, u32)],
) {
    let Some(conn) = core.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
        return;
    };
    // A step is only asked for by the front slot, which stays there until the dump ends.
    let expected = pos == 0
        && matches!(
            conn.slots.front(),
            Some(Slot { kind: SlotKind::Metadump(walk), .. }) if walk.step_in_flight
        );
    if !expected {
        debug_assert!(false, "metadump step answered out of turn");
        return;
    }
    conn.out.extend_from_slice(data);
    let next = segments
        .first()
        .map(|&(page, chunk)| WalkCursor { page, chunk });
    metadump_advance(conn, &mut core.pool, core.shard_count, next);
    core.mark_dirty(idx);
}

/// Records where the connection's front metadump goes after a step that ended at `next`
/// (`None`: that shard is done): the same shard again, the next shard from its start, or, after
/// the last shard, the end (the slot completes and `END` follows the lines).
fn metadump_advance(
    conn: &mut Conn,
    pool: &mut BufPool,
    shard_count: u16,
    next: Option<WalkCursor>,
) {
    let Some(Slot {
        parts_left,
        kind: SlotKind::Metadump(walk),
        ..
    }) = conn.slots.front_mut()
    else {
        return;
    };
    walk.step_in_flight = false;
    match next {
        Some(cursor) => walk.cursor = cursor,
        None if walk.shard + 1 < shard_count => {
            walk.shard += 1;
            walk.cursor = WalkCursor::START;
        }
        None => {
            *parts_left = 0;
            conn.metadump_slots -= 1;
            conn.release_ready(pool);
        }
    }
}

/// One step of a shard's part of a metadump: the lines of its live items of the `classes` from `from`
/// on, until [`METADUMP_STEP_BYTES`] are written or [`METADUMP_STEP_CHUNKS_MAX`] chunks looked
/// at. Returns where the next step starts, `None` once the shard's walk is done.
pub(super) fn metadump_step(
    store: &Store,
    epoch: &Epoch,
    now: Instant32,
    classes: ClassSet,
    from: WalkCursor,
    out: &mut Vec<u8>,
) -> Option<WalkCursor> {
    let limit = out.len() + METADUMP_STEP_BYTES;
    store.for_each_live_item_from(classes, from, METADUMP_STEP_CHUNKS_MAX, now, |item| {
        metadump_line(item, |at| epoch.to_unix(at), out);
        out.len() < limit
    })
}

/// Most bytes of a `stats cachedump` reply with its `END` (memcached's limit; it counts a
/// terminating NUL too, hence the 6 below).
const CACHEDUMP_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Most chunks one shard looks at for a `stats cachedump`: bounds the walk of a huge class.
const CACHEDUMP_CHUNKS_MAX: usize = 1 << 22;

/// `stats cachedump <class> <limit>`: with `-X` refused before the arguments are looked at, as
/// memcached does; an id past [`class_id_max`] is illegal, one this store does not use (0
/// included, as memcached takes it) lists nothing; otherwise every shard lists its part.
pub fn dispatch_cachedump(core: &mut Core, idx: u32, args: Result<(u32, u32), &'static [u8]>) {
    if !core.shared.config.dump_enabled {
        return reply(core, idx, compose::CLIENT_ERROR_CACHEDUMP_DISABLED);
    }
    let (class, limit) = match args {
        Ok(args) => args,
        Err(error) => return reply(core, idx, error),
    };
    let class_count = core.shard.store().class_count();
    if class > class_id_max(class_count) {
        return reply(core, idx, compose::CLIENT_ERROR_ILLEGAL_SLAB_ID);
    }
    match super::stats::class_of_id(class) {
        Some(class) if usize::from(class) < class_count => {
            let kind = StatsKind::CacheDump { class, limit };
            core.broadcast(idx, SlotKind::Stats(kind), RemoteOp::Stats(kind));
        }
        _ => reply(core, idx, compose::END),
    }
}

/// This shard's part of a `stats cachedump`: its live items of `class`, each as a
/// length-prefixed `ITEM` line (binary-protocol keys may hold any byte, so lines are framed
/// rather than split on newlines), at most `limit` of them (0: any number) and no more than fit
/// one reply. Items stored with a base64 key are skipped, as memcached skips them.
pub(super) fn cachedump_part(core: &Core, class: u8, limit: u32, out: &mut Vec<u8>) {
    let epoch = &core.shared.epoch;
    let mut shown: u32 = 0;
    let mut bytes = 0;
    let mut line = Vec::new();
    core.shard.store().for_each_live_item_from(
        ClassSet::only(class),
        WalkCursor::START,
        CACHEDUMP_CHUNKS_MAX,
        core.now,
        |item| {
            if item.key_binary {
                return true;
            }
            line.clear();
            cachedump_line(item, |at| epoch.to_unix(at), &mut line);
            if bytes + line.len() + 6 > CACHEDUMP_BYTES_MAX {
                return false;
            }
            bytes += line.len();
            out.extend_from_slice(&(line.len() as u32).to_le_bytes());
            out.extend_from_slice(&line);
            shown += 1;
            limit == 0 || shown < limit
        },
    );
}

/// Joins the shards' parts of a `stats cachedump` into its reply: their lines in arrival order,
/// cut at `limit` lines (0: no limit) and at memcached's reply size, then `END`.
pub(super) fn cachedump_finish(parts: &[u8], limit: u32, out: &mut Vec<u8>) {
    let mut rest = parts;
    let mut shown: u32 = 0;
    let mut bytes = 0;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((line, tail)) = tail.split_at_checked(len) else {
            break;
        };
        if (limit != 0 && shown >= limit) || bytes + line.len() + 6 > CACHEDUMP_BYTES_MAX {
            break;
        }
        out.extend_from_slice(line);
        bytes += line.len();
        shown += 1;
        rest = tail;
    }
    out.extend_from_slice(compose::END);
}

/// `ITEM <key> [<value bytes> b; <expiry as Unix time, 0 if none> s]\r\n`. The key ends at its
/// first NUL byte, as memcached copies it with `strncpy`.
fn cachedump_line(item: ItemMeta<'_>, to_unix: impl Fn(Instant32) -> u64, out: &mut Vec<u8>) {
    let key = item.key.split(|&b| b == 0).next().unwrap_or_default();
    let exp = item.expires_at.map_or(0, to_unix);
    out.extend_from_slice(b"ITEM ");
    out.extend_from_slice(key);
    out.extend_from_slice(format!(" [{} b; {exp} s]\r\n", item.value_len).as_bytes());
}

/// `key=<urlencoded> exp=<unix or -1> la=<unix> cas=<n> fetch=<yes|no> cls=<id> size=<n>\n`.
fn metadump_line(item: ItemMeta<'_>, to_unix: impl Fn(Instant32) -> u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"key=");
    crate::watch::uri_encode(item.key, out);
    let exp = match item.expires_at {
        Some(at) => to_unix(at).to_string(),
        None => "-1".to_string(),
    };
    let line = format!(
        " exp={exp} la={} cas={} fetch={} cls={} size={}\n",
        to_unix(item.last_access),
        item.cas,
        if item.fetched { "yes" } else { "no" },
        super::stats::class_id(item.slab_class),
        item.total_bytes
    );
    out.extend_from_slice(line.as_bytes());
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8};
    use std::sync::Arc;

    use crate::config::Config;
    use crate::router::{key_hash, shard_of, ShardId};
    use crate::runtime::{cluster::Cluster, mesh, Shared};
    use crate::shard::Shard;
    use crate::storage::{StoreConfig, StoreMode};

    /// Most dump bytes a connection may hold: below the resume mark, plus one step and a line.
    const PENDING_BYTES_MAX: usize = METADUMP_RESUME_BYTES + METADUMP_STEP_BYTES + 1024;

    /// `shard_count` cores wired by a real mesh, driven by hand from this thread.
    pub(in crate::runtime) fn cores(shard_count: u16) -> Vec<Core> {
        let n = shard_count.to_string();
        let config = Config::from_args(["corecache", "-t", n.as_str(), "-m", "256"])
            .unwrap_or_else(|e| panic!("config: {e:?}"));
        let bound = vec!["127.0.0.1:11211".parse().unwrap()];
        let shared = Arc::new(Shared {
            epoch: Epoch {
                started_unix: 1_700_000_000,
            },
            started: std::time::Instant::now(),
            clock_offset_secs: AtomicU32::new(0),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            conn_serial_next: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            verbosity: AtomicU32::new(0),
            shutdown: AtomicBool::new(false),
            cluster: Cluster::new(None, None, &bound).unwrap(),
            bound,
            udp_bound: Vec::new(),
            backend: AtomicU8::new(0),
            memory_bytes_max: AtomicU64::new(config.memory_bytes_max as u64),
            crawler_enabled: AtomicBool::new(true),
            crawler_sleep_us: AtomicU32::new(0),
            crawler_tocrawl: AtomicU32::new(0),
            crawls_running: AtomicU32::new(0),
            slab_automove: AtomicU8::new(1),
            lru_tune: crate::runtime::LruTune::new(&Default::default()),
            detail_enabled: AtomicBool::new(false),
            listen: crate::runtime::backend::ListenStats::default(),
            watch: crate::runtime::watchers::WatchShared::new(shard_count),
            auth: None,
            tls: crate::runtime::tls::TlsShared::new(&config.tls, false).expect("no TLS"),
            log: None,
            memfile: None,
            parking: (0..shard_count)
                .map(|_| crate::runtime::park::Parking::default())
                .collect(),
            config,
        });
        let endpoints = mesh::build(shard_count).unwrap();
        endpoints
            .into_iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let cfg = &shared.config;
                let store_cfg = StoreConfig {
                    memory_bytes_max: cfg.memory_bytes_max / usize::from(shard_count),
                    page_size: 1 << 20,
                    slab_growth_factor: cfg.slab_growth_factor,
                    item_size_max: cfg.item_size_max,
                    cas_enabled: true,
                    key_hash,
                    large_pages: false,
                    chunk_bytes_smallest: cfg.chunk_bytes_smallest,
                    fine_class_bytes_max: crate::storage::slab::FINE_CLASS_BYTES_MAX,
                    growth_steps: 1,
                    evictions_enabled: cfg.evictions_enabled,
                };
                let shard = Shard::new(ShardId(i as u16), store_cfg, shared.epoch);
                Core::new(shard, endpoint, Arc::clone(&shared))
            })
            .collect()
    }

    /// Stores `count` items, each in its owner's store; returns their keys.
    fn fill(cores: &mut [Core], count: usize) -> Vec<String> {
        let shard_count = cores.len() as u16;
        let keys: Vec<String> = (0..count)
            .map(|i| format!("metadump-unit-test-key-{i:07}-with-some-padding-to-60-bytes"))
            .collect();
        for key in &keys {
            let h = key_hash(key.as_bytes());
            let core = &mut cores[usize::from(shard_of(h, shard_count).0)];
            let now = core.now;
            let stored = core.shard.store_mut().store(
                StoreMode::Set,
                key.as_bytes(),
                h,
                0,
                None,
                b"value",
                now,
            );
            assert!(stored.is_ok());
        }
        keys
    }

    /// One loop turn of every core, in order: mesh in, input held back that may be parsed
    /// now (as a backend comes back to it), metadump steps and envelopes out.
    fn turn(cores: &mut [Core]) {
        for core in cores.iter_mut() {
            core.poll_mesh();
            for idx in core.conn_indices() {
                if core.conn(idx).is_some_and(|c| c.held_back && c.may_parse()) {
                    core.process(idx);
                }
            }
            core.turn_end();
        }
    }

    /// Takes everything the connection has to send, as a client reading it all would.
    fn drain(core: &mut Core, idx: u32, into: &mut Vec<u8>) {
        let conn = core.conn_mut(idx).expect("connection open");
        into.extend_from_slice(conn.unsent());
        let n = conn.unsent().len();
        let _ = conn.advance_sent(n);
    }

    /// Checks a dump lists every key once and ends in `END`, then `tail`.
    fn assert_complete(reply: &[u8], keys: &[String], tail: &[u8]) {
        let text = std::str::from_utf8(reply).unwrap();
        let Some(lines) = text.strip_suffix(std::str::from_utf8(tail).unwrap()) else {
            panic!(
                "reply does not end in the pipelined reply: ...{:?}",
                &text[text.len().saturating_sub(200)..]
            );
        };
        let lines = lines.strip_suffix("END\r\n").expect("END closes the dump");
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for line in lines.lines() {
            let key = line
                .strip_prefix("key=")
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or_else(|| panic!("not an item line: {line:?}"));
            *seen.entry(key).or_default() += 1;
        }
        assert_eq!(seen.len(), keys.len(), "every key listed");
        for key in keys {
            assert_eq!(seen.get(key.as_str()), Some(&1), "{key}");
        }
    }

    #[test]
    fn metadump_streams_every_item_with_bounded_output_and_waits_for_the_reader() {
        for shard_count in [1u16, 2] {
            let mut cores = cores(shard_count);
            // About 3.5 MiB of lines in all: many steps per shard.
            let keys = fill(&mut cores, 25_000);
            let idx = cores[0].open("test".into(), false, -1).unwrap();
            cores[0].input_only(idx, b"lru_crawler metadump all\r\nversion\r\n");
            cores[0].process(idx);
            // What follows the dump waits for it, unparsed.
            let conn = cores[0].conn(idx).unwrap();
            assert_eq!(conn.rbuf, b"version\r\n");
            assert!(conn.held_back && !conn.may_parse());
            assert_eq!(conn.slots.len(), 1);
            // Nobody reads: output stops growing below the bound, and the dump stops asking.
            let mut turns = 0;
            while cores[0].conn(idx).unwrap().pending_bytes() < METADUMP_RESUME_BYTES {
                turn(&mut cores);
                turns += 1;
                assert!(turns < 100, "the dump makes progress");
            }
            let held = cores[0].conn(idx).unwrap().out.len();
            for _ in 0..10 {
                turn(&mut cores);
                assert!(!cores[0].metadump_runnable());
            }
            assert_eq!(
                cores[0].conn(idx).unwrap().out.len(),
                held,
                "no step unread"
            );
            assert!(held <= PENDING_BYTES_MAX);
            // A reader that takes everything every third turn gets the whole dump, then the
            // pipelined reply; the output held never passes the bound.
            let mut reply = Vec::new();
            for round in 0..100_000 {
                let conn = cores[0].conn(idx).unwrap();
                assert!(
                    conn.pending_bytes() <= PENDING_BYTES_MAX,
                    "{}",
                    conn.pending_bytes()
                );
                if round % 3 == 0 {
                    drain(&mut cores[0], idx, &mut reply);
                }
                let conn = cores[0].conn(idx).unwrap();
                if conn.slots.is_empty() && conn.rbuf.is_empty() {
                    drain(&mut cores[0], idx, &mut reply);
                    break;
                }
                turn(&mut cores);
            }
            let version = format!("VERSION {}\r\n", compose::MEMCACHED_VERSION);
            assert_complete(&reply, &keys, version.as_bytes());
            assert!(reply.len() > 3 * METADUMP_STEP_BYTES * usize::from(shard_count));
            // Once done the connection is no longer listed.
            turn(&mut cores);
            assert!(cores[0].metadumps.is_empty());
        }
    }

    #[test]
    fn a_connection_closed_mid_dump_ends_it_and_a_new_one_dumps_afresh() {
        let mut cores = cores(2);
        let keys = fill(&mut cores, 8_000);
        // On core 1, so the first step (shard 0) goes over the mesh.
        let idx = cores[1].open("first".into(), false, -1).unwrap();
        cores[1].input_only(idx, b"lru_crawler metadump all\r\n");
        cores[1].process(idx);
        cores[1].turn_end(); // the step to shard 0 is in flight
        cores[1].close(idx);
        // The connection's index is taken again at once; the old step's answer is dropped.
        let again = cores[1].open("second".into(), false, -1).unwrap();
        assert_eq!(again, idx);
        cores[0].poll_mesh();
        cores[0].turn_end();
        cores[1].poll_mesh();
        assert!(cores[1].conn(again).unwrap().out.is_empty());
        cores[1].turn_end();
        assert!(
            cores[1].metadumps.is_empty(),
            "the closed connection is forgotten"
        );
        cores[1].input_only(again, b"lru_crawler metadump all\r\nversion\r\n");
        cores[1].process(again);
        let mut reply = Vec::new();
        for _ in 0..10_000 {
            turn(&mut cores);
            drain(&mut cores[1], again, &mut reply);
            let conn = cores[1].conn(again).unwrap();
            if conn.slots.is_empty() && conn.rbuf.is_empty() {
                break;
            }
        }
        let version = format!("VERSION {}\r\n", compose::MEMCACHED_VERSION);
        assert_complete(&reply, &keys, version.as_bytes());
        // Closing while a dump waits for a slow reader leaves nothing behind either.
        cores[1].input_only(again, b"lru_crawler metadump all\r\n");
        cores[1].process(again);
        for _ in 0..5 {
            turn(&mut cores);
        }
        cores[1].close(again);
        for _ in 0..5 {
            turn(&mut cores);
        }
        assert!(cores.iter().all(|c| c.metadumps.is_empty()));
        assert!(!cores[1].metadump_runnable());
    }

    #[test]
    fn metadump_lines_match_memcached() {
        let mut out = Vec::new();
        let item = ItemMeta {
            key: b"k% 1",
            expires_at: None,
            last_access: Instant32(5),
            cas: 3,
            fetched: false,
            slab_class: 0,
            total_bytes: 69,
            value_len: 3,
            key_binary: false,
            client_flags: 0,
            stale: false,
            value: b"abc",
        };
        metadump_line(item, |at| 1000 + u64::from(at.0), &mut out);
        assert_eq!(
            out,
            b"key=k%25%201 exp=-1 la=1005 cas=3 fetch=no cls=1 size=69\n"
        );
    }
}
