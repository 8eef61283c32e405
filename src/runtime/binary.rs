//! The binary protocol on the executor: per-connection detection (first byte 0x80, as memcached
//! decides, for the connection's lifetime), the parse loop, and dispatch.
//!
//! Keyed frames route like text requests: local keys execute inline, remote keys travel as raw
//! frame bytes in a [`RemoteOp::Binary`] and the owner replies with composed response bytes.
//! Every reply (including an empty one from a quiet success) keeps its place through the
//! connection's in-order slots, so quiet replies that are sent stay in request order.

use super::connection::{BufPool, Slot, SlotKind};
use super::core::{compose_reply, ConnAction, Core, PARSE_BUDGET};
use super::mesh::{RemoteOp, StatsKind};
use super::{stats, Shared};
use crate::clock::Instant32;
use crate::config::ProtocolChoice;
use crate::protocol::binary::{
    self, opcode, BinaryError, BinaryRequest, Command, Status, REQUEST_MAGIC,
};
use crate::protocol::sasl::{self, Outcome};
use crate::protocol::SaslGate;
use crate::protocol::StatsGroup;
use crate::router::{key_hash, shard_of};
use std::io::Read;

impl Core {
    /// Decides the connection's protocol on its first byte; true if it is binary.
    pub(super) fn binary_detect(&mut self, idx: u32) -> bool {
        let protocol = self.shared.config.protocol;
        let Some(conn) = self.conn_mut(idx) else {
            return false;
        };
        if conn.binary.is_none() {
            // `-B`: `ascii` reads every byte as text, `binary` every byte as binary frames
            // (a text request is then an invalid header, and the connection is closed). A UDP
            // datagram is always told by its first byte, as memcached tells it.
            let protocol = if conn.udp.is_some() {
                ProtocolChoice::Auto
            } else {
                protocol
            };
            conn.binary = match protocol {
                ProtocolChoice::Auto => conn.rbuf.first().map(|&first| first == REQUEST_MAGIC),
                ProtocolChoice::Ascii => Some(false),
                ProtocolChoice::Binary => Some(true),
            };
        }
        conn.binary == Some(true)
    }

    /// [`Core::process`] for a binary connection.
    pub(super) fn process_binary(&mut self, idx: u32) -> ConnAction {
        let Some(conn) = self.conn_mut(idx) else {
            return ConnAction::Close;
        };
        let rbuf = std::mem::take(&mut conn.rbuf);
        let udp = conn.udp.is_some();
        let mut pos = 0;
        let mut limits = self.limits_for(udp);
        let sasl = self.shared.config.sasl_pwdb.is_some();
        let mut requests = 0;
        // The length of the incomplete frame left at the end, when its header is in.
        let mut want = 0;
        while pos < rbuf.len() {
            if pos >= PARSE_BUDGET || requests >= self.reqs_per_event {
                self.conn_yields += 1;
                break;
            }
            let blocked = self.input_blocked();
            let Some(conn) = self.conn_mut(idx) else {
                break;
            };
            if conn.swallow > 0 {
                let n = conn.swallow.min(rbuf.len() - pos);
                conn.swallow -= n;
                pos += n;
                continue;
            }
            if !conn.may_parse() || blocked {
                break;
            }
            if sasl {
                limits.sasl = if conn.sasl.authenticated {
                    SaslGate::Open
                } else {
                    SaslGate::Locked
                };
            }
            match binary::parse(&rbuf[pos..], &limits) {
                Ok((req, n)) => {
                    if udp {
                        self.udp_begin_binary(idx, &rbuf[pos..pos + n]);
                    }
                    self.dispatch_binary(idx, &req, &rbuf[pos..pos + n]);
                    pos += n;
                    requests += 1;
                    if udp {
                        self.udp_dispatched(idx);
                    }
                }
                Err(BinaryError::Incomplete) => {
                    want = binary::pending_len(&rbuf[pos..]).unwrap_or(0);
                    break;
                }
                Err(BinaryError::Invalid(rej)) => {
                    requests += 1;
                    if udp {
                        self.udp_begin_binary(idx, &rbuf[pos..]);
                    }
                    let mut reply = Vec::new();
                    if let Some(status) = rej.status {
                        binary::error(&mut reply, rej.opcode, status, rej.opaque);
                    }
                    let conn = self
                        .conns
                        .get_mut(idx as usize)
                        .and_then(Option::as_mut)
                        .expect("connection checked above");
                    push_in_order(conn, &mut self.pool, reply);
                    if rej.close {
                        conn.closing = true;
                        pos = rbuf.len();
                    } else {
                        conn.swallow = rej.swallow;
                        pos += rej.consumed.max(1);
                    }
                    self.mark_dirty(idx);
                    if udp {
                        self.udp_dispatched(idx);
                    }
                }
            }
        }
        // A whole frame left unparsed (budget or backpressure) must be come back to, even
        // after EOF; a partial one never completes once the peer has stopped sending.
        self.finish_input(idx, rbuf, pos, want, |rest, conn| {
            !rest.is_empty()
                && conn.swallow == 0
                && !conn.closing
                && binary::parse(rest, &limits) != Err(BinaryError::Incomplete)
        })
    }

    fn dispatch_binary(&mut self, idx: u32, req: &BinaryRequest<'_>, raw: &[u8]) {
        let mut reply = Vec::new();
        match req.command {
            Command::Get { .. }
            | Command::Store { .. }
            | Command::TooLarge { .. }
            | Command::Delete
            | Command::Arith { .. }
            | Command::Touch { .. } => return self.dispatch_binary_keyed(idx, req, raw),
            Command::Flush { exptime } => return self.dispatch_binary_flush(idx, req, exptime),
            Command::SaslList => {
                if let Some(c) = self.conn_mut(idx) {
                    c.sasl.list();
                }
                respond(&mut reply, req, Status::Success, sasl::MECHANISMS);
            }
            Command::SaslAuth { step, data } => self.sasl_auth(idx, req, step, data, &mut reply),
            Command::Stat => return self.dispatch_binary_stat(idx, req),
            Command::Noop => binary::success(&mut reply, req.opcode, req.opaque, 0),
            Command::Version => respond(
                &mut reply,
                req,
                Status::Success,
                crate::protocol::compose::MEMCACHED_VERSION.as_bytes(),
            ),
            Command::Quit => {
                if !req.quiet {
                    binary::success(&mut reply, req.opcode, req.opaque, 0);
                }
                let conn = self
                    .conns
                    .get_mut(idx as usize)
                    .and_then(Option::as_mut)
                    .expect("dispatch on a live connection");
                push_in_order(conn, &mut self.pool, reply);
                conn.closing = true;
                self.mark_dirty(idx);
                return;
            }
        }
        self.queue_reply(idx, reply);
    }

    fn dispatch_binary_keyed(&mut self, idx: u32, req: &BinaryRequest<'_>, raw: &[u8]) {
        let hash = key_hash(req.key);
        if let Command::TooLarge { swallow, .. } = req.command {
            if let Some(c) = self.conn_mut(idx) {
                c.swallow = swallow;
            }
        }
        let owner = shard_of(hash, self.shard_count).0;
        if owner == self.me && self.log_always() {
            let now = self.now;
            let on_failure = super::durable::OnFailure::Binary {
                opcode: req.opcode,
                opaque: req.opaque,
            };
            self.exec_held(idx, on_failure, |shard, out| {
                shard.exec_binary(req, hash, now, out)
            });
            return;
        }
        if owner == self.me {
            let now = self.now;
            let conn = self.conns[idx as usize]
                .as_mut()
                .expect("dispatch on a live connection");
            let shard = &mut self.shard;
            compose_reply(conn, &mut self.pool, |out| {
                shard.exec_binary(req, hash, now, out)
            });
            self.mark_dirty(idx);
            return;
        }
        let writes = !matches!(
            req.command,
            Command::Get {
                touch_exptime: None,
                ..
            }
        );
        if self.borrow(idx, owner, writes, |shard, now, out| {
            shard.exec_binary(req, hash, now, out)
        }) {
            return;
        }
        self.forward(idx, owner, raw, |start, end| RemoteOp::Binary {
            start,
            end,
            key_hash: hash,
        });
    }

    /// Executes a binary frame another core routed here (its bytes passed that core's parser).
    pub(super) fn exec_remote_binary(&mut self, raw: &[u8], hash: u64, out: &mut Vec<u8>) {
        match binary::parse(raw, &self.limits) {
            Ok((req, _)) => {
                let now = self.now;
                self.shard.exec_binary(&req, hash, now, out);
            }
            other => debug_assert!(false, "unexpected remote binary frame {other:?}"),
        }
    }

    fn dispatch_binary_flush(&mut self, idx: u32, req: &BinaryRequest<'_>, exptime: u32) {
        if !self.shared.config.flush_enabled {
            // `-F`: memcached answers an auth error, quiet or not.
            let mut reply = Vec::new();
            binary::error(&mut reply, req.opcode, Status::AuthError, req.opaque);
            self.queue_reply(idx, reply);
            return;
        }
        let at = if exptime > 0 {
            self.shard
                .expires_at(i64::from(exptime), self.now)
                .unwrap_or(self.now)
        } else {
            self.now
        };
        self.cmd_flush += 1;
        let mut reply = Vec::new();
        if !req.quiet {
            binary::success(&mut reply, req.opcode, req.opaque, 0);
        }
        self.broadcast_with(idx, reply, SlotKind::Plain, RemoteOp::Flush { at });
    }

    fn dispatch_binary_stat(&mut self, idx: u32, req: &BinaryRequest<'_>) {
        let opaque = req.opaque;
        let group = match req.key {
            b"" => StatsKind::General,
            b"items" => StatsKind::Items,
            b"slabs" => StatsKind::Slabs,
            b"sizes" => StatsKind::Sizes,
            b"sizes_enable" => StatsKind::SizesSwitch(true),
            b"sizes_disable" => StatsKind::SizesSwitch(false),
            b"reset" => {
                let mut reply = Vec::new();
                binary::success(&mut reply, opcode::STAT, opaque, 0);
                self.broadcast_with(idx, reply, SlotKind::Plain, RemoteOp::ResetStats);
                return;
            }
            key => {
                let mut reply = Vec::new();
                if key == b"settings" {
                    let mut text = Vec::new();
                    stats::local_group(self, StatsGroup::Settings, &mut text);
                    binary::stats_from_text(&text, opaque, &mut reply);
                } else if key == b"detail dump" {
                    // memcached sends the (empty, detail is off) dump as one stat, "END\r\n".
                    let dump = b"END\r\n";
                    binary::response(
                        &mut reply,
                        opcode::STAT,
                        Status::Success,
                        opaque,
                        0,
                        &[],
                        b"detailed",
                        dump,
                    );
                    binary::success(&mut reply, opcode::STAT, opaque, 0);
                } else if key.starts_with(b"detail ") {
                    // memcached answers `detail on|off` with the terminator alone.
                    binary::success(&mut reply, opcode::STAT, opaque, 0);
                } else {
                    // Unknown groups, and `conns` (text only in memcached): Not found.
                    binary::error(&mut reply, opcode::STAT, Status::KeyNotFound, opaque);
                }
                self.queue_reply(idx, reply);
                return;
            }
        };
        self.broadcast_with(
            idx,
            Vec::new(),
            SlotKind::BinaryStats {
                kind: group,
                opaque,
            },
            RemoteOp::Stats(group),
        );
    }
}

impl Core {
    /// `SASL auth` / `SASL step`: the exchange moves on, checked against the password file,
    /// which is read on every attempt as memcached reads it (so edits apply at once).
    fn sasl_auth(
        &mut self,
        idx: u32,
        req: &BinaryRequest<'_>,
        step: bool,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) {
        let config = &self.shared.config;
        let check = |user: &[u8], password: &[u8]| {
            let Some(path) = config.sasl_pwdb.as_deref() else {
                return false;
            };
            let mut db = Vec::new();
            match std::fs::File::open(path) {
                Ok(f) => {
                    let _ = f.take(sasl::PWDB_READ_MAX).read_to_end(&mut db);
                }
                Err(e) => {
                    if config.verbosity > 0 {
                        eprintln!("WARNING: Failed to open sasl database <{path}>: {e}");
                    }
                    return false;
                }
            }
            sasl::pwdb_check(&db, user, password)
        };
        let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let outcome = conn.sasl.request(step, req.key, data, check);
        match outcome {
            Outcome::Authenticated => {
                self.auth_cmds += 1;
                respond(reply, req, Status::Success, b"Authenticated");
            }
            Outcome::Continue => respond(reply, req, Status::AuthContinue, &[]),
            Outcome::Failed => {
                self.auth_cmds += 1;
                self.auth_errors += 1;
                binary::error(reply, req.opcode, Status::AuthError, req.opaque);
            }
        }
    }

    /// Queues a complete binary reply in order and marks the connection for writing.
    fn queue_reply(&mut self, idx: u32, reply: Vec<u8>) {
        if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
            push_in_order(conn, &mut self.pool, reply);
        }
        self.mark_dirty(idx);
    }
}

/// Converts a completed binary stats slot (every shard's parts gathered) into its responses.
pub(super) fn finish_stats_slot(shared: &Shared, now: Instant32, slot: &mut Slot) {
    if let SlotKind::BinaryStats { kind, opaque } = slot.kind {
        let parts = std::mem::take(&mut slot.buf);
        let mut text = Vec::with_capacity(parts.len());
        stats::finish(shared, kind, now, &parts, &mut text);
        let mut reply = Vec::with_capacity(text.len() * 2);
        if let StatsKind::SizesSwitch(_) = kind {
            // memcached ends these without the empty stat, as its text replies lack `END`.
            binary::stat_entries_from_text(&text, opaque, &mut reply);
        } else {
            binary::stats_from_text(&text, opaque, &mut reply);
        }
        slot.buf = reply;
        slot.kind = SlotKind::Plain;
    }
}

/// Appends a response to `req` with this status and value (no extras, key or cas).
fn respond(out: &mut Vec<u8>, req: &BinaryRequest<'_>, status: Status, value: &[u8]) {
    binary::response(out, req.opcode, status, req.opaque, 0, &[], &[], value);
}

/// Appends a reply in order: straight to `out` when nothing waits, else as a ready slot. An
/// empty reply (a quiet success) takes no slot.
fn push_in_order(conn: &mut super::connection::Conn, pool: &mut BufPool, reply: Vec<u8>) {
    if !reply.is_empty() {
        conn.push_ready(reply, pool);
    }
}
