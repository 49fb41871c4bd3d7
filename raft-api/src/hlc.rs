//! Hybrid logical clock.
//!
//! A [`Hlc`] timestamp pairs a physical time in milliseconds with a logical
//! counter. An [`HlcClock`] never goes backwards, stays close to physical
//! time, and after [`HlcClock::update`] with a remote timestamp every later
//! local timestamp is greater than it, so causally related events are
//! ordered even across nodes whose clocks disagree.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A hybrid logical clock timestamp. Orders by physical time, then by the
/// logical counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical component, milliseconds since an epoch chosen by the driver.
    pub wall_ms: u64,
    /// Logical component, ordering events within one millisecond.
    pub logical: u32,
}

impl Hlc {
    /// Builds a timestamp.
    pub const fn new(wall_ms: u64, logical: u32) -> Self {
        Self { wall_ms, logical }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// A hybrid logical clock. It takes the physical time as an argument, so it
/// works the same under a real clock and in a simulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that has issued nothing yet.
    pub const fn new() -> Self {
        Self {
            last: Hlc::new(0, 0),
        }
    }

    /// The latest timestamp issued or merged.
    pub const fn last(&self) -> Hlc {
        self.last
    }

    /// A new local timestamp, greater than every earlier one.
    pub fn now(&mut self, physical_ms: u64) -> Hlc {
        self.last = if physical_ms > self.last.wall_ms {
            Hlc::new(physical_ms, 0)
        } else {
            Self::bump(self.last)
        };
        self.last
    }

    /// Merges a timestamp received from another node; returns a local
    /// timestamp greater than both it and every earlier local one.
    pub fn update(&mut self, physical_ms: u64, remote: Hlc) -> Hlc {
        let wall = physical_ms.max(self.last.wall_ms).max(remote.wall_ms);
        self.last = if wall == self.last.wall_ms && wall == remote.wall_ms {
            Self::bump(Hlc::new(wall, self.last.logical.max(remote.logical)))
        } else if wall == self.last.wall_ms {
            Self::bump(self.last)
        } else if wall == remote.wall_ms {
            Self::bump(remote)
        } else {
            Hlc::new(wall, 0)
        };
        self.last
    }

    fn bump(t: Hlc) -> Hlc {
        match t.logical.checked_add(1) {
            Some(logical) => Hlc::new(t.wall_ms, logical),
            // The logical counter is exhausted within one millisecond: borrow
            // the next millisecond rather than wrap.
            None => Hlc::new(t.wall_ms + 1, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_physical_time_when_it_advances() {
        let mut c = HlcClock::new();
        assert_eq!(c.now(10), Hlc::new(10, 0));
        assert_eq!(c.now(12), Hlc::new(12, 0));
    }

    #[test]
    fn never_goes_backwards_when_physical_time_does() {
        let mut c = HlcClock::new();
        let a = c.now(100);
        let b = c.now(90);
        let d = c.now(100);
        assert!(b > a && d > b);
        assert_eq!(b, Hlc::new(100, 1));
    }

    #[test]
    fn update_orders_after_remote_timestamp() {
        let mut c = HlcClock::new();
        c.now(5);
        let remote = Hlc::new(50, 7);
        let merged = c.update(6, remote);
        assert!(merged > remote);
        assert_eq!(merged, Hlc::new(50, 8));
        assert!(c.now(7) > merged);
    }

    #[test]
    fn update_with_same_wall_takes_max_logical() {
        let mut c = HlcClock::new();
        c.update(0, Hlc::new(20, 3));
        let t = c.update(20, Hlc::new(20, 9));
        assert_eq!(t, Hlc::new(20, 10));
    }

    #[test]
    fn update_with_old_remote_uses_physical_time() {
        let mut c = HlcClock::new();
        assert_eq!(c.update(30, Hlc::new(10, 4)), Hlc::new(30, 0));
    }

    #[test]
    fn logical_overflow_borrows_next_millisecond() {
        let mut c = HlcClock::new();
        assert_eq!(c.update(0, Hlc::new(1, u32::MAX)), Hlc::new(2, 0));
        assert_eq!(c.now(0), Hlc::new(2, 1));
    }
}
