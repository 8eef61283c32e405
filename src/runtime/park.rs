//! Requests run on an idle core's shard (`--borrow-idle-shards`).
//!
//! A core owns its shard alone while it is awake. Just before it blocks for input it leaves
//! the shard in its [`Parking`] place, and takes it back as soon as it wakes. While the shard is
//! parked, another core with a one-key request for one of its keys may lock the place and run
//! the request itself ([`Parking::try_with`]) instead of sending it over the mesh, which would
//! have to wake the owner and then wait to be woken by the reply: two thread wake-ups for a
//! lookup of a few hundred nanoseconds.
//!
//! * A busy owner never parks, so under load cross-core requests still travel over the mesh,
//!   batched, and the owner's cache stays its own.
//! * The borrower holds the lock for one request; an owner that wakes meanwhile waits for that
//!   request, not for a queue.
//! * A core borrows only while it has no request to that owner unanswered, so whatever a
//!   connection sent the owner before has been applied (`Core::borrow`).
//! * Writes are not borrowed under a durability log (the owner sends its shard's records), nor
//!   is anything while a `watch` is on (the owner logs its shard's events).

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use crate::shard::Shard;

/// Where a sleeping core leaves its shard.
#[derive(Default)]
pub struct Parking {
    slot: Mutex<Option<Box<Shard>>>,
}

impl Parking {
    /// Runs `f` on the parked shard, unless its owner is awake or another core holds it.
    pub fn try_with<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> Option<R> {
        let mut slot = match self.slot.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        slot.as_deref_mut().map(f)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Box<Shard>>> {
        // A core that panicked while holding the lock ends the process; the shard itself is
        // never left half-moved.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A core's own shard: in its hands while it is awake, parked while it sleeps.
pub struct HeldShard {
    shard: Option<Box<Shard>>,
}

impl HeldShard {
    pub fn new(shard: Shard) -> HeldShard {
        HeldShard {
            shard: Some(Box::new(shard)),
        }
    }

    /// Leaves the shard at `at` for other cores to read while this core sleeps.
    pub fn park(&mut self, at: &Parking) {
        debug_assert!(self.shard.is_some(), "parked twice");
        let shard = self.shard.take();
        *at.lock() = shard;
    }

    /// Takes the shard back from `at`, waiting for a borrower's lookup to end.
    pub fn unpark(&mut self, at: &Parking) {
        debug_assert!(self.shard.is_none(), "unparked twice");
        self.shard = at.lock().take();
    }

    /// Whether the shard is in this core's hands (it is, except between park and unpark).
    pub fn is_held(&self) -> bool {
        self.shard.is_some()
    }
}

impl Deref for HeldShard {
    type Target = Shard;

    fn deref(&self) -> &Shard {
        self.shard
            .as_deref()
            .expect("a core holds its shard while awake")
    }
}

impl DerefMut for HeldShard {
    fn deref_mut(&mut self) -> &mut Shard {
        self.shard
            .as_deref_mut()
            .expect("a core holds its shard while awake")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Instant32;
    use crate::protocol::{GetVerb, Request, StoreVerb};
    use crate::router::{key_hash, ShardId};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    fn shard() -> Shard {
        Shard::for_tests(4 << 20)
    }

    fn get(shard: &mut Shard, key: &[u8], now: Instant32) -> Vec<u8> {
        let mut out = Vec::new();
        shard.exec_get_key(GetVerb::Get, None, key, key_hash(key), now, &mut out);
        out
    }

    fn set(shard: &mut Shard, key: &[u8], value: &[u8], now: Instant32) -> Vec<u8> {
        let req = Request::Store {
            verb: StoreVerb::Set,
            key,
            client_flags: 0,
            exptime: 0,
            value,
            cas_expected: 0,
            noreply: false,
        };
        let mut out = Vec::new();
        shard.exec_keyed(&req, key_hash(key), now, &mut out);
        out
    }

    #[test]
    fn only_a_parked_shard_can_be_borrowed() {
        let parking = Parking::default();
        let mut held = HeldShard::new(shard());
        assert_eq!(parking.try_with(|_| ()), None, "awake: nothing parked");
        held.park(&parking);
        assert!(!held.is_held());
        assert_eq!(parking.try_with(|s| s.id), Some(ShardId(0)));
        // A borrower in the middle of a lookup keeps others out.
        parking.try_with(|_| assert_eq!(parking.try_with(|_| ()), None));
        held.unpark(&parking);
        assert!(held.is_held());
        assert_eq!(parking.try_with(|_| ()), None, "taken back");
    }

    /// The owner parks and unparks in a loop while storing; a borrower reads all the while.
    /// Every read sees a whole reply, and the owner always gets its shard back.
    #[test]
    fn owner_and_borrower_take_turns() {
        let parking = Arc::new(Parking::default());
        let stop = Arc::new(AtomicBool::new(false));
        let borrowed = Arc::new(AtomicU64::new(0));
        let now = Instant32(100);
        let borrower = {
            let (parking, stop, borrowed) = (parking.clone(), stop.clone(), borrowed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(reply) = parking.try_with(|s| get(s, b"counter", now)) {
                        let text = String::from_utf8(reply).unwrap();
                        assert!(
                            text.is_empty() || text.starts_with("VALUE counter 0 "),
                            "{text:?}"
                        );
                        borrowed.fetch_add(1, Ordering::Relaxed);
                    }
                    std::hint::spin_loop();
                }
            })
        };
        let mut held = HeldShard::new(shard());
        for i in 0..20_000u32 {
            let value = i.to_string();
            assert_eq!(
                set(&mut held, b"counter", value.as_bytes(), now),
                b"STORED\r\n"
            );
            held.park(&parking);
            if i % 64 == 0 {
                std::thread::yield_now();
            }
            held.unpark(&parking);
            assert!(held.is_held());
        }
        stop.store(true, Ordering::Relaxed);
        borrower.join().unwrap();
        assert_eq!(
            get(&mut held, b"counter", now),
            b"VALUE counter 0 5\r\n19999\r\n"
        );
    }
}
