//! Admin commands that concern the whole server: `config get cluster` (and the legacy
//! `get AmazonElastiCache:cluster`), `stats detail on|off|dump`, `lru_crawler metadump`,
//! `cache_memlimit` and `shutdown`.
//!
//! Commands that touch every shard go out as a broadcast ([`Core::broadcast`]) and answer once
//! every shard has done its part: `stats detail on|off` and `cache_memlimit` answer `OK`, the
//! dumps gather every shard's lines ([`finish`]). Replies follow memcached 1.6.18 byte for byte,
//! except where noted:
//! * `lru_crawler metadump` takes `all` or one class id (memcached also takes a comma list);
//!   class ids are corecache's (as in `stats items`), `size` is corecache's item size, and each
//!   shard contributes at most [`METADUMP_BYTES_MAX`] bytes (memcached streams without bound).
//! * `stats detail dump` lists prefixes sorted by name (memcached: hash-table order).

use std::sync::atomic::Ordering;

use super::cluster::LEGACY_KEY;
use super::connection::SlotKind;
use super::core::{push_reply, Core};
use super::mesh::{DetailOp, RemoteOp, StatsKind};
use crate::clock::Instant32;
use crate::protocol::{compose, Keys, Request, ShutdownMode};
use crate::storage::ItemMeta;

/// The most bytes of item lines one shard adds to a metadump reply.
pub const METADUMP_BYTES_MAX: usize = 8 << 20;

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
        Request::LruCrawlerMetadump { .. } if !core.shared.config.dump_enabled => {
            reply(core, idx, compose::ERROR_METADUMP_DISABLED); // -X
        }
        Request::LruCrawlerMetadump { class } => {
            let class_count = core.shard.store().class_count();
            match class.map(u8::try_from) {
                None => core.broadcast(
                    idx,
                    SlotKind::Stats(StatsKind::Metadump),
                    RemoteOp::Metadump { class: None },
                ),
                Some(Ok(c)) if usize::from(c) < class_count => core.broadcast(
                    idx,
                    SlotKind::Stats(StatsKind::Metadump),
                    RemoteOp::Metadump { class: Some(c) },
                ),
                Some(_) => reply(core, idx, compose::BADCLASS),
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
            SlotKind::Stats(StatsKind::DetailDump),
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
/// the only key. Returns whether it was.
pub fn try_legacy_get(core: &mut Core, idx: u32, keys: Keys<'_>) -> bool {
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
    // The main thread waits for SIGTERM in sigwait and then stops every executor gracefully,
    // so `shutdown` and `shutdown graceful` both end in a clean exit 0.
    // SAFETY: kill on our own pid with a signal every thread blocks; no memory is involved.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

fn reply(core: &mut Core, idx: u32, bytes: &[u8]) {
    if let Some(conn) = core.conns.get_mut(idx as usize).and_then(Option::as_mut) {
        push_reply(conn, &mut core.pool, bytes);
    }
    core.mark_dirty(idx);
}

/// This shard's part of an admin broadcast.
pub fn exec_shard_op(core: &mut Core, op: &RemoteOp, out: &mut Vec<u8>) {
    match *op {
        RemoteOp::Detail(DetailOp::On) => core.shard.prefix_stats.enabled = true,
        RemoteOp::Detail(DetailOp::Off) => core.shard.prefix_stats.enabled = false,
        RemoteOp::Detail(DetailOp::Dump) => core.shard.prefix_stats.dump(out),
        RemoteOp::Metadump { class } => metadump_part(core, class, out),
        RemoteOp::MemLimit { bytes } => {
            let now = core.now;
            core.shard.store_mut().set_memory_limit(bytes, now);
        }
        _ => debug_assert!(false, "not an admin op: {op:?}"),
    }
}

fn metadump_part(core: &Core, class: Option<u8>, out: &mut Vec<u8>) {
    let epoch = core.shared.epoch;
    let limit = out.len() + METADUMP_BYTES_MAX;
    core.shard
        .store()
        .for_each_live_item(class, core.now, |item| {
            metadump_line(item, |at| epoch.to_unix(at), out);
            out.len() < limit
        });
}

/// `key=<urlencoded> exp=<unix or -1> la=<unix> cas=<n> fetch=<yes|no> cls=<id> size=<n>\n`.
fn metadump_line(item: ItemMeta<'_>, to_unix: impl Fn(Instant32) -> u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"key=");
    url_encode(item.key, out);
    let exp = match item.expires_at {
        Some(at) => to_unix(at).to_string(),
        None => "-1".to_string(),
    };
    let line = format!(
        " exp={exp} la={} cas={} fetch={} cls={} size={}\n",
        to_unix(item.last_access),
        item.cas,
        if item.fetched { "yes" } else { "no" },
        item.slab_class,
        item.total_bytes
    );
    out.extend_from_slice(line.as_bytes());
}

/// memcached's `uriencode`: unreserved bytes as they are, everything else `%XX` (upper case).
fn url_encode(key: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Composes a gathered admin dump (`StatsKind::DetailDump` or `StatsKind::Metadump`).
pub fn finish(kind: StatsKind, parts: &[u8], out: &mut Vec<u8>) {
    match kind {
        StatsKind::DetailDump => crate::prefix_stats::merge_dumps(parts, out),
        _ => {
            out.extend_from_slice(parts);
            out.extend_from_slice(compose::END);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadump_lines_match_memcached() {
        let mut out = Vec::new();
        let item = ItemMeta {
            key: b"k% 1",
            expires_at: None,
            last_access: Instant32(5),
            cas: 3,
            fetched: false,
            slab_class: 1,
            total_bytes: 69,
        };
        metadump_line(item, |at| 1000 + u64::from(at.0), &mut out);
        assert_eq!(
            out,
            b"key=k%25%201 exp=-1 la=1005 cas=3 fetch=no cls=1 size=69\n"
        );
    }
}
