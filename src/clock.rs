//! Server time as memcached keeps it: whole seconds since the process started.
//!
//! PURE: nothing here reads a clock. The runtime samples the wall clock once per tick and hands
//! `now` down; tests construct any `Instant32` they like, so expiry is tested without sleeping.
//!
//! * [`Instant32`] is seconds since start, offset so that `Instant32(1)` is always in the past
//!   (memcached's trick: "already expired" items get time 1 and are dead at once).
//! * [`expires_at`] is the one conversion from a client's `exptime`: 0 means never, negative
//!   means already expired, at most 30 days means relative, beyond that absolute Unix time.

/// Seconds beyond which an exptime is an absolute Unix time (memcached's `REALTIME_MAXDELTA`).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// The first value of the server clock; everything below it is in the past from the start.
pub const START: Instant32 = Instant32(2);

/// Seconds since the server started (plus [`START`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant32(pub u32);

impl Instant32 {
    /// The instant `secs` seconds later, saturating.
    pub fn plus(self, secs: u32) -> Instant32 {
        Instant32(self.0.saturating_add(secs))
    }
    /// Whole seconds from `earlier` to `self`, or 0 if `earlier` is later.
    pub fn since(self, earlier: Instant32) -> u32 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Maps server time to and from Unix time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch {
    /// Unix time (seconds) at which the server clock read [`START`].
    pub started_unix: u64,
}

impl Epoch {
    /// The server instant for a Unix time, clamped to the clock's range (1 for the past).
    pub fn from_unix(&self, unix: i64) -> Instant32 {
        let start = self.started_unix as i64 - i64::from(START.0);
        let rel = unix.saturating_sub(start);
        if rel <= 1 {
            Instant32(1)
        } else {
            Instant32(u32::try_from(rel).unwrap_or(u32::MAX))
        }
    }
    /// The Unix time of a server instant.
    pub fn to_unix(&self, at: Instant32) -> u64 {
        (self.started_unix + u64::from(at.0)).saturating_sub(u64::from(START.0))
    }
}

/// Converts a client's `exptime` into the instant the item dies (`None`: never).
///
/// An item is dead when `expires_at <= now`.
pub fn expires_at(exptime: i64, now: Instant32, epoch: &Epoch) -> Option<Instant32> {
    if exptime == 0 {
        None
    } else if exptime < 0 {
        Some(Instant32(1))
    } else if exptime > REALTIME_MAXDELTA {
        Some(epoch.from_unix(exptime))
    } else {
        // exptime <= 30 days fits in u32.
        Some(now.plus(exptime as u32))
    }
}

/// Whether an item with this expiry is dead at `now`.
pub fn is_dead(expires_at: Option<Instant32>, now: Instant32) -> bool {
    matches!(expires_at, Some(at) if at <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: Epoch = Epoch {
        started_unix: 1_700_000_000,
    };

    #[test]
    fn zero_is_never() {
        assert_eq!(expires_at(0, Instant32(100), &EPOCH), None);
    }

    #[test]
    fn negative_is_already_dead() {
        let now = START;
        let at = expires_at(-1, now, &EPOCH);
        assert!(is_dead(at, now));
    }

    #[test]
    fn relative_dies_exactly_at_its_second() {
        let now = Instant32(10);
        let at = expires_at(5, now, &EPOCH);
        assert_eq!(at, Some(Instant32(15)));
        assert!(!is_dead(at, Instant32(14)));
        assert!(is_dead(at, Instant32(15)));
    }

    #[test]
    fn thirty_days_is_still_relative() {
        let now = Instant32(10);
        assert_eq!(
            expires_at(REALTIME_MAXDELTA, now, &EPOCH),
            Some(Instant32(10 + REALTIME_MAXDELTA as u32))
        );
    }

    #[test]
    fn absolute_future_and_past() {
        let now = START;
        let future = EPOCH.started_unix as i64 + 100;
        assert_eq!(expires_at(future, now, &EPOCH), Some(Instant32(102)));
        let past = EPOCH.started_unix as i64 - 100_000_000;
        let at = expires_at(past, now, &EPOCH);
        assert!(is_dead(at, now));
        assert_eq!(EPOCH.to_unix(Instant32(102)), future as u64);
    }
}
