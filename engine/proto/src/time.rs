//! Time as data. The protocol core never reads a clock: drivers pass `now` in.

use core::time::Duration;

/// A point in time, in nanoseconds since an arbitrary epoch chosen by the driver.
///
/// Only differences between two `Instant`s from the same driver mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    nanos_since_epoch: u64,
}

impl Instant {
    pub const ZERO: Instant = Instant {
        nanos_since_epoch: 0,
    };

    pub const fn from_nanos(nanos_since_epoch: u64) -> Instant {
        Instant { nanos_since_epoch }
    }

    pub const fn as_nanos(self) -> u64 {
        self.nanos_since_epoch
    }

    /// `duration` earlier, if that is not before the epoch.
    pub fn checked_sub(self, duration: Duration) -> Option<Instant> {
        let nanos = u64::try_from(duration.as_nanos()).ok()?;
        self.nanos_since_epoch
            .checked_sub(nanos)
            .map(Instant::from_nanos)
    }

    /// `duration` earlier, or the epoch if that is before it.
    pub fn saturating_sub(self, duration: Duration) -> Instant {
        self.checked_sub(duration).unwrap_or(Instant::ZERO)
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(
            self.nanos_since_epoch
                .saturating_sub(earlier.nanos_since_epoch),
        )
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant::from_nanos(self.nanos_since_epoch.saturating_add(nanos))
    }
}

/// Converts the OS monotonic clock into protocol `Instant`s. Lives here so every driver
/// uses one definition; it is the only place the core touches `std::time`, and only when
/// a driver constructs it.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    epoch: std::time::Instant,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            epoch: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        let nanos = self.epoch.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How long the caller should sleep until `deadline` (zero if it has passed).
    pub fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_since(self.now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The wall clock in Unix milliseconds, for drivers only (fleet heartbeats carry it, and a
/// director compares it with its own to refuse replays); the machines take it as an argument.
pub fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
