//! `stats` across shards: every shard contributes `name value` lines for its own counters, the
//! connection's core sums them by name and composes memcached's reply with the process-wide
//! fields (pid, uptime, connections, rusage) in memcached's order.

use std::sync::atomic::{AtomicU64, Ordering};

use super::core::Core;
use super::mesh::StatsKind;
use super::Shared;
use crate::clock::Instant32;
use crate::protocol::{compose, StatsGroup};

/// The id clients see for a slab class: memcached's ids count from 1 (its class 0 is the page
/// pool), so corecache's classes are shown from 1 too, and tools that list classes from 1 (such
/// as `memcached-tool`) see the smallest.
pub fn class_id(class: u8) -> u16 {
    u16::from(class) + 1
}

/// The highest class id a command may name: 63, the most memcached can have (ids it could
/// have but does not use list nothing), or more where corecache's finer classes go further.
pub fn class_id_max(class_count: usize) -> u32 {
    u32::try_from(class_count).unwrap_or(u32::MAX).max(63)
}

/// The slab class a client's class id names, if it names one (see [`class_id`]).
pub fn class_of_id(id: u32) -> Option<u8> {
    id.checked_sub(1).and_then(|c| u8::try_from(c).ok())
}

/// This shard's counters for a stats group, as `name value\n` lines.
pub fn shard_part(core: &Core, kind: StatsKind, out: &mut Vec<u8>) {
    let st = core.shard.store().stats();
    match kind {
        StatsKind::General => {
            let [read_bufs, read_bytes, reply_bufs, reply_bytes, read_free] = core.buffer_stats();
            for (name, v) in [
                ("response_obj_count", reply_bufs),
                ("response_obj_bytes", reply_bytes),
                ("read_buf_count", read_bufs),
                ("read_buf_bytes", read_bytes),
                ("read_buf_bytes_free", read_free),
                ("cmd_get", st.cmd_get),
                ("cmd_set", st.cmd_set),
                ("cmd_touch", st.cmd_touch),
                ("get_hits", st.get_hits),
                ("get_misses", st.get_misses),
                ("get_expired", st.get_expired),
                ("get_flushed", st.get_flushed),
                ("delete_misses", st.delete_misses),
                ("delete_hits", st.delete_hits),
                ("incr_misses", st.incr_misses),
                ("incr_hits", st.incr_hits),
                ("decr_misses", st.decr_misses),
                ("decr_hits", st.decr_hits),
                ("cas_misses", st.cas_misses),
                ("cas_hits", st.cas_hits),
                ("cas_badval", st.cas_badval),
                ("touch_hits", st.touch_hits),
                ("touch_misses", st.touch_misses),
                ("bytes_read", core.bytes_read),
                ("bytes_written", core.bytes_written),
                ("cmd_flush", core.cmd_flush),
                ("cmd_meta", core.shard.cmd_meta),
                ("conn_yields", core.conn_yields),
                ("idle_kicks", core.idle_kicks),
                ("auth_cmds", core.auth_cmds),
                ("auth_errors", core.auth_errors),
                ("udp_recv_dropped", core.udp.recv_dropped),
                ("udp_send_dropped", core.udp.send_dropped),
                ("store_too_large", core.shard.store_too_large),
                ("store_no_memory", core.shard.store_no_memory),
                ("hash_bytes", st.hash_bytes),
                ("hash_is_expanding", u64::from(st.hash_is_expanding)),
                ("hash_slots", st.hash_slots),
                ("bytes", st.bytes),
                ("curr_items", st.curr_items),
                ("total_items", st.total_items),
                ("expired_unfetched", st.expired_unfetched),
                ("evicted_unfetched", st.evicted_unfetched),
                ("evictions", st.evictions),
                ("reclaimed", st.reclaimed),
                ("crawler_reclaimed", st.crawler_reclaimed),
                ("crawler_items_checked", st.crawler_items_checked),
                ("lru_crawler_starts", st.lru_crawler_starts),
                ("slabs_moved", st.slabs_moved),
                (
                    "slab_reassign_evictions_nomem",
                    st.slab_reassign_evictions_nomem,
                ),
                ("slab_global_page_pool", st.slab_global_page_pool),
                ("total_malloced", st.total_malloced),
            ] {
                push_line(out, name, v);
            }
            // corecache's own, with more than one shard: requests run on a sleeping core's
            // shard without waking it (see `park`).
            if core.shard_count > 1 {
                push_line(out, "borrowed_requests", core.borrowed_requests);
            }
        }
        StatsKind::Items => {
            for c in st.classes.iter().filter(|c| c.number > 0) {
                let k = &c.counters;
                for (name, v) in [
                    ("number", c.number),
                    ("age", c.age),
                    ("mem_requested", c.mem_requested),
                    ("evicted", k.evicted),
                    ("evicted_nonzero", k.evicted_nonzero),
                    ("evicted_time", k.evicted_time),
                    ("outofmemory", k.outofmemory),
                    // No item refcounts: nothing to repair or find locked at the tail.
                    ("tailrepairs", 0),
                    ("reclaimed", k.reclaimed),
                    ("expired_unfetched", k.expired_unfetched),
                    ("evicted_unfetched", k.evicted_unfetched),
                    ("crawler_reclaimed", k.crawler_reclaimed),
                    ("crawler_items_checked", k.crawler_items_checked),
                    ("lrutail_reflocked", 0),
                ] {
                    push_line(out, &format!("items:{}:{name}", class_id(c.slab_class)), v);
                }
            }
        }
        StatsKind::Slabs => {
            for c in &st.classes {
                for (name, v) in [
                    ("chunk_size", c.chunk_size),
                    ("chunks_per_page", c.chunks_per_page),
                    ("total_pages", c.total_pages),
                    ("total_chunks", c.total_chunks),
                    ("used_chunks", c.used_chunks),
                    ("free_chunks", c.free_chunks),
                    ("free_chunks_end", c.free_chunks_end),
                    ("get_hits", c.counters.get_hits),
                    ("cmd_set", c.counters.cmd_set),
                    ("delete_hits", c.counters.delete_hits),
                    ("incr_hits", c.counters.incr_hits),
                    ("decr_hits", c.counters.decr_hits),
                    ("cas_hits", c.counters.cas_hits),
                    ("cas_badval", c.counters.cas_badval),
                    ("touch_hits", c.counters.touch_hits),
                ] {
                    push_line(out, &format!("{}:{name}", class_id(c.slab_class)), v);
                }
            }
            push_line(
                out,
                "active_slabs",
                st.classes.iter().filter(|c| c.total_pages > 0).count() as u64,
            );
            push_line(out, "total_malloced", st.total_malloced);
        }
        StatsKind::Sizes => match core.shard.store().size_histogram() {
            Some(histogram) => {
                for (size, count) in histogram.counts() {
                    push_line(out, &size.to_string(), u64::from(count));
                }
            }
            None => push_line(out, SIZES_OFF, 1),
        },
        // Switched in `Core::exec_broadcast_op`; no lines.
        StatsKind::SizesSwitch(_) | StatsKind::DetailDump => {}
        StatsKind::Conns => conns_part(core, out),
        StatsKind::CacheDump { class, limit } => {
            super::admin::cachedump_part(core, class, limit, out)
        }
    }
}

/// The `stats conns` id of the connection with server-wide serial number `serial` (also the
/// `cfd` of its `watch` lines). The listening sockets take the first ids (as shard 0 lists
/// them), then each core's UDP sockets, by number, times the shard count plus the core's
/// number; connections follow in the order their cores open them, whichever core that is (two
/// connecting at once may be opened in either order). memcached's ids are descriptors, which a
/// newer connection usually finds higher too: clients (and memcached's own tests) take the last
/// line of `stats conns` for their own connection. Ids wrap round to the first connection id
/// after 2^31 connections.
pub(super) fn conn_id(core: &Core, serial: u64) -> i32 {
    // The socket count, not `addrs()`: no allocation or getsockname per accepted connection.
    let sockets = (listener_count(core) + core.udp.socket_count()) as u64;
    let first = sockets * u64::from(core.shard_count);
    let span = (i32::MAX as u64).saturating_sub(first).max(1);
    i32::try_from(first + serial % span).unwrap_or(i32::MAX)
}

/// The `stats conns` id of this core's UDP socket number `socket` (the `cfd` of the `watch`
/// lines of the datagrams it brings).
pub(super) fn udp_socket_id(core: &Core, socket: usize) -> i32 {
    id_of(core, (listener_count(core) + socket) as u64)
}

/// Listening sockets: one per bound TCP address, or the one UNIX socket.
fn listener_count(core: &Core) -> usize {
    match core.shared.config.unix_socket {
        Some(_) => 1,
        None => core.shared.bound.len(),
    }
}

fn id_of(core: &Core, slot: u64) -> i32 {
    let id = slot * u64::from(core.shard_count) + u64::from(core.me);
    i32::try_from(id).unwrap_or(i32::MAX)
}

/// This core's connections as final `STAT <id>:<field> <value>` lines (ids: [`conn_id`]).
fn conns_part(core: &Core, out: &mut Vec<u8>) {
    let unix_socket = core.shared.config.unix_socket.as_deref();
    let listeners = listener_addrs(&core.shared.bound, unix_socket);
    let shards = u64::from(core.shard_count);
    // Listening sockets first, as memcached lists them (by descriptor, lowest first), once
    // for the server: shard 0 gives them, with ids that no connection takes.
    if core.me == 0 {
        let up = u64::from(core.now.since(crate::clock::START));
        for (i, addr) in listeners.iter().enumerate() {
            let id = i as u64 * shards;
            compose::stat_str(out, &format!("{id}:addr"), addr);
            compose::stat_str(out, &format!("{id}:state"), "conn_listening");
            compose::stat(out, &format!("{id}:secs_since_last_cmd"), up);
        }
    }
    // This core's UDP sockets next, one "connection" each, as memcached lists one per worker
    // thread, in state `conn_read`.
    let udp_addrs = core.udp.addrs();
    for (j, addr) in udp_addrs.iter().enumerate() {
        let id = udp_socket_id(core, j);
        let last = core.udp.last_cmd.get(j).copied().unwrap_or(0);
        compose::stat_str(out, &format!("{id}:UDP"), "UDP");
        compose::stat_str(out, &format!("{id}:addr"), &format!("udp:{addr}"));
        compose::stat_str(out, &format!("{id}:state"), "conn_read");
        let idle = core.now.0.saturating_sub(last);
        compose::stat(out, &format!("{id}:secs_since_last_cmd"), u64::from(idle));
    }
    // A connection's `listen_addr`: the (first) listening socket's `addr`.
    let listen = listeners.first().map_or("tcp:", String::as_str);
    for idx in core.conn_indices() {
        let Some(c) = core.conn(idx) else { continue };
        if c.udp.is_some() {
            continue; // a datagram being answered: shown as its socket's line above
        }
        let id = c.cfd;
        compose::stat_str(out, &format!("{id}:addr"), &peer_addr(&c.peer, unix_socket));
        compose::stat_str(out, &format!("{id}:listen_addr"), listen);
        compose::stat_str(out, &format!("{id}:state"), conn_state(c));
        let idle = core.now.0.saturating_sub(c.last_cmd);
        compose::stat(out, &format!("{id}:secs_since_last_cmd"), u64::from(idle));
    }
}

/// The shards' `stats conns` lines ordered by connection id, as memcached lists its
/// connections by descriptor (each connection's fields keep their order).
fn conns_in_id_order(parts: &[u8], out: &mut Vec<u8>) {
    let id_of = |line: &[u8]| -> u64 {
        let rest = line.strip_prefix(b"STAT ").unwrap_or(line);
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let mut lines: Vec<&[u8]> = parts
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort_by_key(|l| id_of(l)); // stable: a connection's fields stay in order
    for line in lines {
        out.extend_from_slice(line);
    }
}

/// The `addr` of each listening socket: `tcp:<ip>:<port>`, or the one `unix:<path>` with `-s`
/// (then every connection came through it).
fn listener_addrs(bound: &[std::net::SocketAddr], unix_socket: Option<&str>) -> Vec<String> {
    match unix_socket {
        Some(path) => vec![format!("unix:{path}")],
        None => bound.iter().map(|a| format!("tcp:{a}")).collect(),
    }
}

/// memcached's name for what a connection is doing, from what it holds: a reply being
/// gathered (its own `stats conns` among them) is `conn_parse_cmd`, replies not yet written
/// `conn_mwrite`, a data block arriving `conn_nread` (a rejected one `conn_swallow`), waiting
/// for (the rest of) a command line `conn_read`, or `conn_new_cmd` before its first byte.
fn conn_state(c: &super::connection::Conn) -> &'static str {
    if c.closing {
        "conn_closing"
    } else if !c.slots.is_empty() {
        "conn_parse_cmd"
    } else if !c.unsent().is_empty() || c.inflight > 0 {
        "conn_mwrite"
    } else if c.swallow > 0 {
        "conn_swallow"
    } else if c.rbuf.contains(&b'\n') {
        "conn_nread"
    } else if c.binary.is_none() {
        "conn_new_cmd"
    } else {
        "conn_read"
    }
}

/// `stats conns` `addr`: `tcp:<ip>:<port>` of the peer. For a UNIX connection memcached 1.6.18
/// prints `?:<AF 0>` (it keeps no peer address for one, bound or not), and so does corecache.
fn peer_addr(peer: &str, unix_socket: Option<&str>) -> String {
    match unix_socket {
        Some(_) => "?:<AF 0>".into(),
        None => format!("tcp:{peer}"),
    }
}

/// `stats settings` `umask`: the `-a` mask in octal, as memcached prints its int (`%o`).
fn umask_text(mask: i32) -> String {
    format!("{:o}", mask as u32)
}

fn push_line(out: &mut Vec<u8>, name: &str, v: u64) {
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b'\n');
}

/// Fields that describe a class's shape rather than count something: take one shard's value.
fn is_shape(name: &str) -> bool {
    // `evicted_time` too: the shards' latest evictions are not ordered, so the longest idle
    // time of them stands for the class.
    name.ends_with(":chunk_size")
        || name.ends_with(":chunks_per_page")
        || name.ends_with(":age")
        || name.ends_with(":evicted_time")
}

/// Sums the shards' lines by name, keeping the order of first appearance.
fn sum_parts(parts: &[u8]) -> Vec<(String, u64)> {
    let mut sums: Vec<(String, u64)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for line in parts.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = String::from_utf8_lossy(line);
        let Some((name, v)) = text.split_once(' ') else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match index.get(name) {
            Some(&i) => {
                let entry: &mut (String, u64) = &mut sums[i];
                entry.1 = if is_shape(name) {
                    entry.1.max(v)
                } else {
                    entry.1 + v
                };
            }
            None => {
                index.insert(name.to_string(), sums.len());
                sums.push((name.to_string(), v));
            }
        }
    }
    sums
}

/// Composes the whole reply of a gathered stats group.
pub fn finish(shared: &Shared, kind: StatsKind, now: Instant32, parts: &[u8], out: &mut Vec<u8>) {
    if kind == StatsKind::DetailDump {
        crate::prefix_stats::merge_dumps(parts, out);
        return;
    }
    if let StatsKind::CacheDump { limit, .. } = kind {
        super::admin::cachedump_finish(parts, limit, out);
        return;
    }
    if kind == StatsKind::Conns {
        conns_in_id_order(parts, out);
        out.extend_from_slice(compose::END);
        return;
    }
    let sums = sum_parts(parts);
    match kind {
        StatsKind::General => general(shared, now, &sums, out),
        StatsKind::Items | StatsKind::Slabs => {
            let mut sorted = sums;
            // Per-class lines by class number (stable: field order within a class is kept);
            // totals without a class number go last.
            sorted.sort_by_key(|(name, _)| class_of(name, kind));
            if kind == StatsKind::Slabs {
                recount_active_slabs(&mut sorted);
            }
            for (name, v) in &sorted {
                compose::stat(out, name, *v);
            }
        }
        StatsKind::Sizes => {
            if sums.iter().any(|(name, _)| name == SIZES_OFF) {
                compose::stat_str(out, "sizes_status", "disabled");
            } else {
                let mut sorted = sums;
                sorted.sort_by_key(|(size, _)| size.parse::<u64>().unwrap_or(u64::MAX));
                for (size, count) in &sorted {
                    compose::stat(out, size, *count);
                }
            }
        }
        StatsKind::SizesSwitch(on) => {
            // memcached ends these replies without `END`.
            if !on {
                compose::stat_str(out, "sizes_status", "disabled");
            } else if shared.config.cas_enabled {
                compose::stat_str(out, "sizes_status", "enabled");
            } else {
                compose::stat_str(out, "sizes_status", "error");
                compose::stat_str(out, "sizes_error", "cas_support_disabled");
            }
            return;
        }
        StatsKind::Conns | StatsKind::DetailDump | StatsKind::CacheDump { .. } => {}
    }
    out.extend_from_slice(compose::END);
}

/// `active_slabs` is the number of classes listed (memcached counts the classes with pages),
/// not the sum of the shards' counts: a class with pages on two shards is one class.
fn recount_active_slabs(sums: &mut [(String, u64)]) {
    let active = sums
        .iter()
        .filter(|(name, v)| name.ends_with(":total_pages") && *v > 0)
        .count() as u64;
    if let Some(entry) = sums.iter_mut().find(|(name, _)| name == "active_slabs") {
        entry.1 = active;
    }
}

fn class_of(name: &str, kind: StatsKind) -> u32 {
    let rest = match kind {
        StatsKind::Items => name.strip_prefix("items:").unwrap_or(name),
        _ => name,
    };
    rest.split(':')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(u32::MAX)
}

/// A shard's `stats sizes` part when its histogram is off (not a number, so never a size).
const SIZES_OFF: &str = "sizes_off";

/// Summed counters, in memcached's order (after the connection fields).
const COUNTERS: &[&str] = &[
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
];
/// Hash table fields (after `hash_power_level`).
const TABLE: &[&str] = &["hash_bytes", "hash_is_expanding"];
/// Item and eviction fields (memcached's last block).
const ITEMS: &[&str] = &[
    "bytes",
    "curr_items",
    "total_items",
    "slab_global_page_pool",
    "expired_unfetched",
    "evicted_unfetched",
    "evictions",
    "reclaimed",
    "crawler_reclaimed",
    "crawler_items_checked",
];
/// Lines the shards send that feed other fields rather than print as they are.
const INPUTS: &[&str] = &[
    "conn_yields",
    "hash_slots",
    "total_malloced",
    "response_obj_count",
    "response_obj_bytes",
    "read_buf_count",
    "read_buf_bytes",
    "read_buf_bytes_free",
    "bytes_read",
    "bytes_written",
    "slabs_moved",
    "lru_crawler_starts",
    "slab_reassign_evictions_nomem",
    "idle_kicks",
    "auth_cmds",
    "auth_errors",
    "udp_recv_dropped",
    "udp_send_dropped",
];

/// `stats` in memcached's field order.
fn general(shared: &Shared, now: Instant32, sums: &[(String, u64)], out: &mut Vec<u8>) {
    let get = |name: &str| sums.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
    let cfg = &shared.config;
    let (user, system) = rusage();
    compose::stat(out, "pid", u64::from(std::process::id()));
    compose::stat(out, "uptime", u64::from(now.since(crate::clock::START)));
    compose::stat(out, "time", shared.epoch.to_unix(now));
    compose::stat_str(out, "version", compose::MEMCACHED_VERSION);
    compose::stat(out, "pointer_size", 64);
    compose::stat_str(out, "rusage_user", &user);
    compose::stat_str(out, "rusage_system", &system);
    compose::stat(out, "max_connections", cfg.conns_max as u64);
    let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
    // memcached counts each worker thread's UDP socket as a connection, open since startup.
    let udp = shared.udp_conns();
    for (name, v, plus) in [
        ("curr_connections", &shared.curr_connections, udp),
        ("total_connections", &shared.total_connections, udp),
        ("rejected_connections", &shared.rejected_connections, 0),
        ("connection_structures", &shared.curr_connections, udp),
    ] {
        compose::stat(out, name, load(v) + plus);
    }
    // Buffer memory. Allocation failure aborts the process, so there is never an `oom` to
    // count. The free input bytes are each core's spare large input buffer.
    compose::stat(out, "response_obj_oom", 0);
    compose::stat(out, "response_obj_count", get("response_obj_count"));
    compose::stat(out, "response_obj_bytes", get("response_obj_bytes"));
    compose::stat(out, "read_buf_count", get("read_buf_count"));
    compose::stat(out, "read_buf_bytes", get("read_buf_bytes"));
    compose::stat(out, "read_buf_bytes_free", get("read_buf_bytes_free"));
    compose::stat(out, "read_buf_oom", 0);
    compose::stat(
        out,
        "reserved_fds",
        super::fds_reserved(cfg.shard_count) as u64,
    );
    for name in COUNTERS {
        compose::stat(out, name, get(name));
    }
    // Logins tried with `-Y` (SASL is not served).
    compose::stat(out, "auth_cmds", get("auth_cmds"));
    compose::stat(out, "auth_errors", get("auth_errors"));
    if cfg.idle_timeout_secs > 0 {
        compose::stat(out, "idle_kicks", get("idle_kicks"));
    }
    compose::stat(out, "bytes_read", get("bytes_read"));
    compose::stat(out, "bytes_written", get("bytes_written"));
    compose::stat(out, "limit_maxbytes", load(&shared.memory_bytes_max));
    let listen = &shared.listen;
    compose::stat(out, "accepting_conns", u64::from(load(&listen.paused) == 0));
    compose::stat(out, "listen_disabled_num", load(&listen.disabled_num));
    compose::stat(out, "time_in_listen_disabled_us", load(&listen.disabled_us));
    compose::stat(out, "threads", u64::from(cfg.shard_count));
    compose::stat(out, "conn_yields", get("conn_yields"));
    compose::stat(out, "hash_power_level", power_level(get("hash_slots")));
    for name in TABLE {
        compose::stat(out, name, get(name));
    }
    // `slabs reassign` and automove move a page at once, evicting the page's live items (it
    // never copies them into other chunks), so nothing is rescued, reclaimed inline, found busy
    // or left running.
    compose::stat(out, "slab_reassign_rescues", 0);
    compose::stat(out, "slab_reassign_chunk_rescues", 0);
    compose::stat(
        out,
        "slab_reassign_evictions_nomem",
        get("slab_reassign_evictions_nomem"),
    );
    compose::stat(out, "slab_reassign_inline_reclaim", 0);
    compose::stat(out, "slab_reassign_busy_items", 0);
    compose::stat(out, "slab_reassign_busy_deletes", 0);
    compose::stat(out, "slab_reassign_running", 0);
    compose::stat(out, "slabs_moved", get("slabs_moved"));
    // As memcached, only while the crawler is on (`-o no_lru_crawler`, `lru_crawler disable`).
    if shared.crawler_enabled.load(Ordering::Relaxed) {
        let crawling = shared.crawls_running.load(Ordering::Relaxed) > 0;
        compose::stat(out, "lru_crawler_running", u64::from(crawling));
        compose::stat(out, "lru_crawler_starts", get("lru_crawler_starts"));
    }
    compose::stat(out, "malloc_fails", 0);
    let watch = &shared.watch;
    for (name, counter) in [
        ("log_worker_dropped", &watch.worker_dropped),
        ("log_worker_written", &watch.worker_written),
        ("log_watcher_skipped", &watch.watcher_skipped),
        ("log_watcher_sent", &watch.watcher_sent),
    ] {
        compose::stat(out, name, counter.load(Ordering::Relaxed));
    }
    let watchers = watch.watchers.load(Ordering::Relaxed);
    compose::stat(out, "log_watchers", u64::from(watchers));
    // With `-Z` only, as memcached; sessions only with `ssl_session_cache`.
    let tls = &shared.tls;
    if tls.enabled {
        if tls.settings.session_cache {
            let sessions = tls.new_sessions.load(Ordering::Relaxed);
            compose::stat(out, "ssl_new_sessions", sessions);
        }
        let errors = tls.handshake_errors.load(Ordering::Relaxed);
        compose::stat(out, "ssl_handshake_errors", errors);
        let since = tls.secs_since_refresh(now);
        compose::stat(out, "time_since_server_cert_refresh", since);
    }
    // No NAPI ids, no proxy: memcached shows these at 0 when unused.
    for name in ["unexpected_napi_ids", "round_robin_fallback"] {
        compose::stat(out, name, 0);
    }
    for name in ITEMS {
        compose::stat(out, name, get(name));
    }
    // No item refcounts, so the tail is never locked.
    compose::stat(out, "lrutail_reflocked", 0);
    // corecache's own, with UDP only: request datagrams dropped for too many in flight on a
    // core, and reply datagrams a full socket buffer refused.
    if udp > 0 {
        compose::stat(out, "udp_recv_dropped", get("udp_recv_dropped"));
        compose::stat(out, "udp_send_dropped", get("udp_send_dropped"));
    }
    // corecache's own, with `--log-dir` only: the durability log.
    if let Some(log) = &shared.log {
        log_stats(log, out);
    }
    // Anything else the stores count, after memcached's fields.
    let listed = |name: &str| {
        COUNTERS
            .iter()
            .chain(TABLE)
            .chain(ITEMS)
            .chain(INPUTS)
            .any(|&n| n == name)
    };
    for (name, v) in sums {
        if !listed(name) {
            compose::stat(out, name, *v);
        }
    }
}

/// The durability log's counters: records, bytes and fsyncs since startup, write or fsync
/// errors, the segments' size, what the startup replay did, and compaction: the newest
/// segment (generation, bytes), the snapshot under way (its generation, 0 if none, and its
/// records so far), snapshots completed and failed, and the newest snapshot's size.
fn log_stats(log: &crate::durability::writer::LogShared, out: &mut Vec<u8>) {
    for (name, counter) in [
        ("log_records", &log.records),
        ("log_bytes", &log.bytes),
        ("log_fsyncs", &log.fsyncs),
        ("log_errors", &log.errors),
        ("log_file_bytes", &log.file_bytes),
        ("log_replayed", &log.replayed),
        ("log_replay_expired", &log.replay_expired),
        ("log_replay_refused", &log.replay_refused),
        ("log_skipped_bytes", &log.skipped_bytes),
        ("log_segment_generation", &log.segment_generation),
        ("log_segment_bytes", &log.segment_bytes),
        ("log_snapshot_generation", &log.snapshot_generation),
        ("log_snapshot_records", &log.snapshot_records),
        ("log_snapshots", &log.snapshots),
        ("log_snapshot_failures", &log.snapshot_failures),
        ("log_snapshot_bytes", &log.snapshot_bytes),
    ] {
        compose::stat(out, name, counter.load(Ordering::Relaxed));
    }
}

/// memcached's `hash_power_level`: the base-2 logarithm of the hash table's slots (rounded
/// down: corecache's tables are not powers of two).
/// C's `printf("%.2f")` as memcached's `stats settings` prints a factor: `nan`, `-nan`, `inf`
/// and `-inf` spelled as glibc spells them, and cut to the 126 bytes memcached's stat value
/// buffer holds.
fn c_fixed2(value: f64) -> String {
    let sign = if value.is_sign_negative() { "-" } else { "" };
    let mut text = if value.is_nan() {
        format!("{sign}nan")
    } else if value.is_infinite() {
        format!("{sign}inf")
    } else {
        format!("{value:.2}")
    };
    text.truncate(126);
    text
}

fn power_level(slots: u64) -> u64 {
    u64::from(slots.checked_ilog2().unwrap_or(0))
}

/// Process CPU time as memcached prints it: `seconds.microseconds`.
fn rusage() -> (String, String) {
    // SAFETY: getrusage writes into the zeroed struct we pass; it has no other effects.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let fmt = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    (fmt(ru.ru_utime), fmt(ru.ru_stime))
}

/// `stats settings` lines of memcached's extstore, which corecache does not have, with the
/// values memcached shows when it is not in use.
const UNUSED_EXT_SETTINGS: &[(&str, &str)] = &[
    ("ext_item_size", "512"),
    ("ext_item_age", "4294967295"),
    ("ext_low_ttl", "0"),
    ("ext_recache_rate", "2000"),
    ("ext_wbuf_size", "4194304"),
    ("ext_compact_under", "0"),
    ("ext_drop_under", "0"),
    ("ext_max_sleep", "1000000"),
    ("ext_max_frag", "0.80"),
    ("slab_automove_freeratio", "0.010"),
    ("ext_drop_unread", "no"),
];

/// Groups answered by the connection's core alone.
pub fn local_group(core: &Core, group: StatsGroup<'_>, out: &mut Vec<u8>) {
    let shared = &core.shared;
    let cfg = &shared.config;
    match group {
        StatsGroup::Settings => {
            // The bound port (port 0 resolved); with `-s`, `-p` as given, as memcached shows.
            let port = shared
                .bound
                .first()
                .map_or(i64::from(cfg.port), |a| i64::from(a.port()));
            let inter = cfg
                .listen
                .first()
                .map_or(String::new(), |a| a.ip().to_string());
            compose::stat(
                out,
                "maxbytes",
                shared.memory_bytes_max.load(Ordering::Relaxed),
            );
            compose::stat(out, "maxconns", cfg.conns_max as u64);
            compose::stat_str(out, "tcpport", &port.to_string());
            // Likewise the bound UDP port, or `-U` as given (0: off).
            let udp_port = shared
                .udp_bound
                .first()
                .map_or(i64::from(cfg.udp_port), |a| i64::from(a.port()));
            compose::stat_str(out, "udpport", &udp_port.to_string());
            compose::stat_str(out, "inter", &inter);
            compose::stat(
                out,
                "verbosity",
                u64::from(shared.verbosity.load(Ordering::Relaxed)),
            );
            compose::stat(out, "oldest", 0);
            let yes_no = |on: bool| if on { "yes" } else { "no" };
            compose::stat_str(
                out,
                "evictions",
                if cfg.evictions_enabled { "on" } else { "off" },
            );
            compose::stat_str(
                out,
                "domain_socket",
                cfg.unix_socket.as_deref().unwrap_or("NULL"),
            );
            compose::stat_str(out, "umask", &umask_text(cfg.unix_mask));
            compose::stat_str(out, "shutdown_command", yes_no(cfg.shutdown_enabled));
            compose::stat_str(
                out,
                "growth_factor",
                &format!("{:.2}", cfg.slab_growth_factor),
            );
            // memcached's chunk_size: the smallest chunk's room beyond the item header (-n).
            compose::stat(
                out,
                "chunk_size",
                (cfg.chunk_bytes_smallest - crate::storage::item::HEADER_BYTES_MIN) as u64,
            );
            compose::stat(out, "num_threads", u64::from(cfg.shard_count));
            // memcached's value is its thread count, UDP or not.
            compose::stat(out, "num_threads_per_udp", u64::from(cfg.shard_count));
            compose::stat_str(
                out,
                "stat_key_prefix",
                &char::from(cfg.stat_key_prefix).to_string(),
            );
            let detail = shared.detail_enabled.load(Ordering::Relaxed);
            compose::stat_str(out, "detail_enabled", yes_no(detail));
            compose::stat(out, "reqs_per_event", u64::from(cfg.reqs_per_event));
            compose::stat_str(out, "cas_enabled", yes_no(cfg.cas_enabled));
            compose::stat(out, "tcp_backlog", cfg.listen_backlog.max(0) as u64);
            compose::stat_str(out, "binding_protocol", cfg.protocol.stats_name());
            let sasl = if cfg.sasl_pwdb.is_some() { "yes" } else { "no" };
            compose::stat_str(out, "auth_enabled_sasl", sasl);
            // memcached shows the `-Y` path as given.
            compose::stat_str(
                out,
                "auth_enabled_ascii",
                cfg.auth_file.as_deref().unwrap_or("no"),
            );
            compose::stat(out, "item_size_max", cfg.item_size_max as u64);
            compose::stat_str(out, "maxconns_fast", "yes");
            compose::stat(out, "hashpower_init", u64::from(cfg.hashpower_init));
            compose::stat_str(out, "slab_reassign", "yes");
            compose::stat(
                out,
                "slab_automove",
                u64::from(shared.slab_automove.load(Ordering::Relaxed)),
            );
            // Tunables of memcached's automove and LRU machinery that corecache's CLOCK
            // eviction does not have: shown with memcached's defaults, as memcached shows them
            // with that machinery off (`-o no_lru_maintainer`).
            compose::stat_str(out, "slab_automove_ratio", "0.80");
            compose::stat(out, "slab_automove_window", 30);
            compose::stat(
                out,
                "slab_chunk_max",
                super::page_bytes(cfg.memory_bytes_max / usize::from(cfg.shard_count)) as u64,
            );
            compose::stat_str(
                out,
                "lru_crawler",
                yes_no(shared.crawler_enabled.load(Ordering::Relaxed)),
            );
            compose::stat(
                out,
                "lru_crawler_sleep",
                u64::from(shared.crawler_sleep_us.load(Ordering::Relaxed)),
            );
            compose::stat(
                out,
                "lru_crawler_tocrawl",
                u64::from(shared.crawler_tocrawl.load(Ordering::Relaxed)),
            );
            compose::stat(out, "tail_repair_time", 0);
            compose::stat_str(out, "flush_enabled", yes_no(cfg.flush_enabled));
            compose::stat_str(out, "dump_enabled", yes_no(cfg.dump_enabled));
            compose::stat_str(out, "hash_algorithm", "xxh3");
            compose::stat_str(out, "lru_maintainer_thread", "no");
            compose::stat_str(out, "lru_segmented", "no");
            let tune = &shared.lru_tune;
            // memcached keeps these in `int`s: a percentage past 2^31 shows negative.
            for (name, pct) in [
                ("hot_lru_pct", &tune.hot_pct),
                ("warm_lru_pct", &tune.warm_pct),
            ] {
                let pct = pct.load(Ordering::Relaxed) as i32;
                compose::stat_str(out, name, &pct.to_string());
            }
            for (name, bits) in [
                ("hot_max_factor", &tune.hot_factor),
                ("warm_max_factor", &tune.warm_factor),
            ] {
                let value = f64::from_bits(bits.load(Ordering::Relaxed));
                compose::stat_str(out, name, &c_fixed2(value));
            }
            compose::stat_str(out, "temp_lru", "no");
            compose::stat_str(out, "temporary_ttl", "61");
            compose::stat(out, "idle_timeout", u64::from(cfg.idle_timeout_secs));
            // Input buffers are bounded per connection, not in total.
            compose::stat(out, "watcher_logbuf_size", cfg.watcher_logbuf_bytes as u64);
            compose::stat(out, "worker_logbuf_size", cfg.worker_logbuf_bytes as u64);
            compose::stat(out, "read_buf_mem_limit", 0);
            let tracked = core.shard.store().size_histogram().is_some();
            compose::stat_str(out, "track_sizes", yes_no(tracked));
            compose::stat_str(out, "inline_ascii_response", "no");
            // No external storage: its settings as memcached shows them unused.
            for (name, value) in UNUSED_EXT_SETTINGS {
                compose::stat_str(out, name, value);
            }
            let tls = &shared.tls;
            for (name, value) in tls.settings.settings_lines(tls.enabled) {
                compose::stat_str(out, name, &value);
            }
            compose::stat_str(out, "num_napi_ids", "(null)");
            match &cfg.memory_file {
                Some(path) => compose::stat_str(out, "memory_file", &path.to_string_lossy()),
                None => compose::stat_str(out, "memory_file", "(null)"),
            }
            compose::stat_str(out, "io_backend", shared.backend_name());
            // The policy of the shard thread answering: `--sched-policy`, or one set from
            // outside that it keeps.
            compose::stat_str(
                out,
                "sched_policy",
                super::sched::name(super::sched::current()),
            );
            compose::stat_str(out, "corecache_version", env!("CARGO_PKG_VERSION"));
            if let Some(log) = &cfg.log {
                compose::stat_str(out, "log_dir", &log.dir.to_string_lossy());
                compose::stat_str(out, "log_fsync", log.fsync.name());
                compose::stat(out, "log_compact_bytes", log.compact_bytes);
            }
            out.extend_from_slice(compose::END);
        }
        StatsGroup::Other(_) => {
            // memcached answers an unknown stats group with a bare ERROR.
            out.extend_from_slice(compose::ERROR);
        }
        // `stats detail` is gathered from every shard (`runtime::admin`).
        _ => out.extend_from_slice(compose::END),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked against memcached 1.6.18 (`stats conns` over TCP and over `-s`, and `stats
    /// settings` umask for `-a 0700`, `-a 1777`, `-a -1`).
    #[test]
    fn conns_and_settings_name_unix_sockets_as_memcached_does() {
        let tcp: std::net::SocketAddr = "127.0.0.1:11211".parse().unwrap();
        assert_eq!(listener_addrs(&[tcp], None), ["tcp:127.0.0.1:11211"]);
        assert_eq!(peer_addr("127.0.0.1:5000", None), "tcp:127.0.0.1:5000");
        assert_eq!(
            listener_addrs(&[], Some("/tmp/m.sock")),
            ["unix:/tmp/m.sock"]
        );
        assert_eq!(peer_addr("", Some("/tmp/m.sock")), "?:<AF 0>");
        assert_eq!(umask_text(0o700), "700");
        assert_eq!(umask_text(0o1777), "1777");
        assert_eq!(umask_text(0), "0");
        assert_eq!(umask_text(-1), "37777777777");
    }

    #[test]
    fn sums_by_name_in_first_seen_order() {
        let parts = b"b 1\na 2\n1:chunk_size 96\nb 3\n1:chunk_size 96\n";
        let s = sum_parts(parts);
        assert_eq!(
            s,
            vec![
                ("b".into(), 4),
                ("a".into(), 2),
                ("1:chunk_size".into(), 96)
            ]
        );
    }

    #[test]
    fn power_level_is_the_log_of_the_slots_rounded_down() {
        assert_eq!(power_level(0), 0);
        assert_eq!(power_level(1 << 16), 16);
        assert_eq!(power_level((1 << 17) - 1), 16);
        assert_eq!(power_level(3 << 16), 17);
    }

    #[test]
    fn active_slabs_counts_each_class_once() {
        // Two shards with pages in class 1, one of them in class 2 too.
        let parts = b"1:chunk_size 48\n1:total_pages 1\nactive_slabs 1\n\
                      1:chunk_size 48\n1:total_pages 1\n2:chunk_size 56\n2:total_pages 1\n\
                      active_slabs 2\n";
        let mut sums = sum_parts(parts);
        assert_eq!(sums.iter().find(|(n, _)| n == "active_slabs").unwrap().1, 3);
        recount_active_slabs(&mut sums);
        assert_eq!(sums.iter().find(|(n, _)| n == "active_slabs").unwrap().1, 2);
    }

    #[test]
    fn classes_sort_numerically() {
        assert!(class_of("2:x", StatsKind::Slabs) < class_of("10:x", StatsKind::Slabs));
        assert_eq!(class_of("items:7:number", StatsKind::Items), 7);
        assert_eq!(class_of("active_slabs", StatsKind::Slabs), u32::MAX);
    }
}
