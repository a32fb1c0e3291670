//! The gateway's one notion of time: wall-clock time (token `exp`/`nbf`, key expiry) and a
//! monotonic instant (cooldowns, rate-limit budgets, endpoint ejection). Injectable, so tests
//! move time instead of sleeping; every module that reads time takes an `Arc<dyn Clock>`
//! (the rate limiter through an adapter to governor's clock, `ratelimit::local::LimiterClock`).
//!
//! [`SystemClock`] is the real one; [`FakeClock`] starts at a given wall time and only moves
//! when told to ([`FakeClock::advance`]), both readings moving together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time.
    fn now(&self) -> SystemTime;
    /// Monotonic time.
    fn instant(&self) -> Instant;

    /// Wall-clock seconds since the Unix epoch (fractional).
    fn unix_seconds(&self) -> f64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// The real clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct FakeClock {
    wall: SystemTime,
    base: Instant,
    offset_ns: AtomicU64,
}

impl FakeClock {
    /// A fake clock reading `wall` now.
    pub fn at(wall: SystemTime) -> Arc<FakeClock> {
        Arc::new(FakeClock {
            wall,
            base: Instant::now(),
            offset_ns: AtomicU64::new(0),
        })
    }

    /// Moves both readings forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ns.fetch_add(
            u64::try_from(by.as_nanos()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_ns.load(Ordering::SeqCst))
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.wall + self.offset()
    }
    fn instant(&self) -> Instant {
        self.base + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_advanced() {
        let clock = FakeClock::at(UNIX_EPOCH + Duration::from_secs(1000));
        let i = clock.instant();
        assert_eq!(clock.unix_seconds(), 1000.0);
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.unix_seconds(), 1005.0);
        assert_eq!(clock.instant() - i, Duration::from_secs(5));
    }
}
