//! A shard's side of the binary protocol: executes one keyed binary request against the store
//! and composes memcached 1.6.18's binary response (nothing for a quiet success or quiet miss).
//!
//! Status mapping (checked against memcached): `add` on a present key is `Data exists for
//! key.` (not "Not stored."), `replace` on a missing key is `Not found`, append/prepend on a
//! missing key (or past the item limit) is `Not stored.`. A nonzero request cas turns
//! set/add/replace into a cas store and is checked before delete, incr/decr and
//! append/prepend (`Data exists for key.` on a mismatch).

use super::Shard;
use crate::clock::Instant32;
use crate::protocol::binary::{self, BinaryRequest, Command, Status, StoreOp};
use crate::storage::{ArithOutcome, StoreError, StoreMode, StoreOutcome};

/// incr/decr exptime meaning "fail with Not found rather than create".
const ARITH_NO_CREATE: u32 = 0xffff_ffff;

impl Shard {
    /// Executes a keyed binary request (get family, storage, delete, incr/decr, touch) owned by
    /// this shard and appends its response.
    pub fn exec_binary(
        &mut self,
        req: &BinaryRequest<'_>,
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
    ) {
        let mutates = match req.command {
            Command::Get { touch_exptime, .. } => touch_exptime.is_some(),
            _ => true,
        };
        if mutates && self.recorder_mut().is_some() {
            self.logged(req.key, key_hash, now, |s| {
                s.exec_binary_unlogged(req, key_hash, now, out)
            });
            return;
        }
        self.exec_binary_unlogged(req, key_hash, now, out);
    }

    fn exec_binary_unlogged(
        &mut self,
        req: &BinaryRequest<'_>,
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
    ) {
        let result = match req.command {
            Command::Get {
                with_key,
                touch_exptime,
            } => {
                self.binary_get(req, with_key, touch_exptime, key_hash, now, out);
                return;
            }
            Command::Store {
                op,
                client_flags,
                exptime,
                value,
            } => self.binary_store(req, op, client_flags, exptime, value, key_hash, now),
            Command::TooLarge { op, .. } => {
                if op == StoreOp::Set {
                    self.store.forget(req.key, key_hash, now);
                }
                self.count_store_error(StoreError::TooLarge);
                Err(Status::TooLarge)
            }
            Command::Delete => self.binary_delete(req, key_hash, now),
            Command::Arith {
                incr,
                delta,
                initial,
                exptime,
            } => match self.binary_arith(req, incr, delta, initial, exptime, key_hash, now) {
                Ok((value, cas)) => {
                    if !req.quiet {
                        let body = value.to_be_bytes();
                        binary::response(
                            out,
                            req.opcode,
                            Status::Success,
                            req.opaque,
                            cas,
                            &[],
                            &[],
                            &body,
                        );
                    }
                    Ok(None)
                }
                Err(status) => Err(status),
            },
            Command::Touch { exptime } => {
                let expires_at = self.expires_at(i64::from(exptime), now);
                match self.store.touch(req.key, key_hash, expires_at, now) {
                    Some(item) => {
                        let flags = item.client_flags.to_be_bytes();
                        let cas = item.cas;
                        binary::response(
                            out,
                            req.opcode,
                            Status::Success,
                            req.opaque,
                            cas,
                            &flags,
                            &[],
                            &[],
                        );
                        Ok(None)
                    }
                    None => Err(Status::KeyNotFound),
                }
            }
            _ => {
                debug_assert!(false, "exec_binary called with an unkeyed request");
                Ok(None)
            }
        };
        match result {
            Ok(Some(cas)) if !req.quiet => binary::success(out, req.opcode, req.opaque, cas),
            Ok(_) => {}
            Err(status) => binary::error(out, req.opcode, status, req.opaque),
        }
    }

    fn binary_get(
        &mut self,
        req: &BinaryRequest<'_>,
        with_key: bool,
        touch_exptime: Option<u32>,
        key_hash: u64,
        now: Instant32,
        out: &mut Vec<u8>,
    ) {
        let item = match touch_exptime {
            Some(exptime) => {
                let expires_at = self.expires_at(i64::from(exptime), now);
                self.store.touch(req.key, key_hash, expires_at, now)
            }
            None => self.store.get(req.key, key_hash, now),
        };
        let key: &[u8] = if with_key { req.key } else { &[] };
        match item {
            Some(item) => binary::response(
                out,
                req.opcode,
                Status::Success,
                req.opaque,
                item.cas,
                &item.client_flags.to_be_bytes(),
                key,
                item.value,
            ),
            None if req.quiet => {}
            // getk/gatk misses carry the key and no message.
            None if with_key => binary::response(
                out,
                req.opcode,
                Status::KeyNotFound,
                req.opaque,
                0,
                &[],
                key,
                &[],
            ),
            None => binary::error(out, req.opcode, Status::KeyNotFound, req.opaque),
        }
    }

    /// Ok(Some(cas)) when stored.
    #[allow(clippy::too_many_arguments)]
    fn binary_store(
        &mut self,
        req: &BinaryRequest<'_>,
        op: StoreOp,
        client_flags: u32,
        exptime: u32,
        value: &[u8],
        key_hash: u64,
        now: Instant32,
    ) -> Result<Option<u64>, Status> {
        let concat = matches!(op, StoreOp::Append | StoreOp::Prepend);
        if concat && req.cas != 0 {
            match self.store.peek_cas(req.key, key_hash, now) {
                None => return Err(Status::NotStored),
                Some(cas) if cas != req.cas => return Err(Status::KeyExists),
                Some(_) => {}
            }
        }
        let mode = match op {
            _ if req.cas != 0 && !concat => StoreMode::Cas(req.cas),
            StoreOp::Set => StoreMode::Set,
            StoreOp::Add => StoreMode::Add,
            StoreOp::Replace => StoreMode::Replace,
            StoreOp::Append => StoreMode::Append,
            StoreOp::Prepend => StoreMode::Prepend,
        };
        let expires_at = self.expires_at(i64::from(exptime), now);
        let outcome = self.store.store(
            mode,
            req.key,
            key_hash,
            client_flags,
            expires_at,
            value,
            now,
        );
        match outcome {
            Ok(StoreOutcome::Stored) => Ok(Some(
                self.store.peek_cas(req.key, key_hash, now).unwrap_or(0),
            )),
            Ok(StoreOutcome::NotStored) => Err(match op {
                StoreOp::Add => Status::KeyExists,
                StoreOp::Replace | StoreOp::Set => Status::KeyNotFound,
                StoreOp::Append | StoreOp::Prepend => Status::NotStored,
            }),
            Ok(StoreOutcome::Exists) => Err(Status::KeyExists),
            Ok(StoreOutcome::NotFound) => Err(Status::KeyNotFound),
            Err(e) => {
                self.count_store_error(e);
                Err(match e {
                    StoreError::TooLarge if concat => Status::NotStored,
                    StoreError::TooLarge => Status::TooLarge,
                    StoreError::OutOfMemory => Status::OutOfMemory,
                })
            }
        }
    }

    fn binary_delete(
        &mut self,
        req: &BinaryRequest<'_>,
        key_hash: u64,
        now: Instant32,
    ) -> Result<Option<u64>, Status> {
        if req.cas != 0 {
            match self.store.peek_cas(req.key, key_hash, now) {
                Some(cas) if cas != req.cas => return Err(Status::KeyExists),
                _ => {}
            }
        }
        if self.store.delete(req.key, key_hash, now) {
            Ok(Some(0))
        } else {
            Err(Status::KeyNotFound)
        }
    }

    /// The new value and its cas.
    #[allow(clippy::too_many_arguments)]
    fn binary_arith(
        &mut self,
        req: &BinaryRequest<'_>,
        incr: bool,
        delta: u64,
        initial: u64,
        exptime: u32,
        key_hash: u64,
        now: Instant32,
    ) -> Result<(u64, u64), Status> {
        let present = self.store.peek_cas_and_len(req.key, key_hash, now);
        if let Some((cas, len)) = present {
            // As memcached: an empty value is refused before the cas is compared.
            if len == 0 {
                return Err(Status::NonNumeric);
            }
            if req.cas != 0 && cas != req.cas {
                return Err(Status::KeyExists);
            }
        }
        if present.is_none() && exptime != ARITH_NO_CREATE {
            return self.binary_create_counter(req, initial, exptime, key_hash, now);
        }
        match self.store.arith(req.key, key_hash, incr, delta, now) {
            ArithOutcome::Value(v) => {
                let cas = self.store.peek_cas(req.key, key_hash, now).unwrap_or(0);
                Ok((v, cas))
            }
            ArithOutcome::NonNumeric => Err(Status::NonNumeric),
            ArithOutcome::NotFound => Err(Status::KeyNotFound),
        }
    }

    /// incr/decr of a missing key with an initial value: stores it (flags 0) and returns it.
    fn binary_create_counter(
        &mut self,
        req: &BinaryRequest<'_>,
        initial: u64,
        exptime: u32,
        key_hash: u64,
        now: Instant32,
    ) -> Result<(u64, u64), Status> {
        let expires_at = self.expires_at(i64::from(exptime), now);
        let digits = initial.to_string();
        match self
            .store
            .create_counter(req.key, key_hash, digits.as_bytes(), expires_at, now)
        {
            Ok(StoreOutcome::Stored) => {
                let cas = self.store.peek_cas(req.key, key_hash, now).unwrap_or(0);
                Ok((initial, cas))
            }
            Ok(_) => Err(Status::KeyNotFound),
            Err(_) => Err(Status::OutOfMemory),
        }
    }
}
