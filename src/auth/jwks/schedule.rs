//! When an issuer's key set is fetched: the background refresh and the unknown-`kid` refetch.
//!
//! Plain state and arithmetic on instants of the gateway's clock — no I/O, no task — so the
//! rules are tested with a fake clock:
//!
//! - Background refresh: after a successful load, again in `Cache-Control: max-age`, bounded
//!   to `[min(30s, jwks_refresh), jwks_refresh]` (`jwks_refresh` without the header). A source
//!   loaded at start (a file) is next due in `jwks_refresh`; one never loaded is due at once.
//! - After a failed fetch, the retry backs off exponentially: 2 s after the first failure, then
//!   4 s, 8 s, … capped at `jwks_refresh` ([`retry_delay`]), whether or not a set was ever
//!   loaded (the last good set stays in use meanwhile). Any successful load resets it.
//! - Unknown `kid` ([`RefreshSchedule::may_refetch`]): at most one refetch per
//!   `refetch_cooldown`, whoever asks. A successful refetch also counts as the background
//!   refresh (the next one is due an interval later); a failed one leaves the background
//!   schedule alone.
//!
//! The schedule belongs to the issuer's key set, not to a runtime: a configuration rebuilt
//! with the same source carries it over, so a reload neither refetches early nor forgets a
//! back-off.

use std::time::{Duration, Instant};

/// Shortest background refresh interval (unless `jwks_refresh` is shorter).
pub const MIN_REFRESH: Duration = Duration::from_secs(30);
/// The first retry after a failed fetch; doubled after each further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// The time until the next attempt after `failures` consecutive failed fetches (at least 1):
/// 2 s doubling, capped at `cap` (`jwks_refresh`).
pub fn retry_delay(failures: u32, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    FIRST_RETRY.saturating_mul(1 << doublings).min(cap)
}

/// The time until the next refresh after a successful load with this `max-age`.
pub fn refresh_interval(max_age: Option<Duration>, refresh: Duration) -> Duration {
    let floor = MIN_REFRESH.min(refresh);
    max_age.map_or(refresh, |age| age.clamp(floor, refresh))
}

/// One key set's fetch schedule.
#[derive(Debug, Clone)]
pub struct RefreshSchedule {
    /// `jwks_refresh`.
    refresh: Duration,
    /// `refetch_cooldown`.
    cooldown: Duration,
    next_refresh: Instant,
    /// Failed fetches since the last success (background ones only).
    failures: u32,
    /// When the last unknown-`kid` refetch was allowed.
    last_refetch: Option<Instant>,
}

impl RefreshSchedule {
    /// A schedule at `now`: due in `refresh` when a set is `loaded` already, else at once.
    pub fn new(now: Instant, loaded: bool, refresh: Duration, cooldown: Duration) -> Self {
        RefreshSchedule {
            refresh,
            cooldown,
            next_refresh: if loaded { now + refresh } else { now },
            failures: 0,
            last_refetch: None,
        }
    }

    pub fn next_refresh(&self) -> Instant {
        self.next_refresh
    }

    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next_refresh
    }

    /// Consecutive failed background fetches.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A load succeeded at `now` (background or refetch); returns the time to the next.
    pub fn loaded(&mut self, now: Instant, max_age: Option<Duration>) -> Duration {
        self.failures = 0;
        let wait = refresh_interval(max_age, self.refresh);
        self.next_refresh = now + wait;
        wait
    }

    /// A background fetch failed at `now`; returns the time to the retry.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = retry_delay(self.failures, self.refresh);
        self.next_refresh = now + wait;
        wait
    }

    /// Whether an unknown-`kid` refetch may run at `now`; if so, it is counted as started.
    pub fn may_refetch(&mut self, now: Instant) -> bool {
        if self.last_refetch.is_some_and(|at| now < at + self.cooldown) {
            return false;
        }
        self.last_refetch = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn failures_back_off_from_two_seconds_doubling_to_jwks_refresh() {
        let delays: Vec<u64> = (1..=10).map(|n| retry_delay(n, S(300)).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX, S(300)), S(300), "no overflow");
        assert_eq!(retry_delay(1, S(1)), S(1), "capped below the first retry");
    }

    #[test]
    fn max_age_is_bounded_by_thirty_seconds_and_jwks_refresh() {
        assert_eq!(refresh_interval(None, S(300)), S(300));
        assert_eq!(refresh_interval(Some(S(600)), S(300)), S(300));
        assert_eq!(refresh_interval(Some(S(0)), S(300)), S(30));
        assert_eq!(refresh_interval(Some(S(60)), S(300)), S(60));
        assert_eq!(refresh_interval(Some(S(0)), S(10)), S(10));
    }

    #[test]
    fn a_schedule_retries_with_back_off_and_a_success_resets_it() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(t0, false, S(300), S(30));
        assert!(schedule.is_due(t0), "never loaded: due at once");
        assert_eq!(schedule.failed(t0), S(2));
        assert_eq!(schedule.failed(t0 + S(2)), S(4));
        assert_eq!(schedule.next_refresh(), t0 + S(6));
        assert!(!schedule.is_due(t0 + S(5)));
        assert_eq!(schedule.loaded(t0 + S(6), Some(S(120))), S(120));
        assert_eq!(schedule.failures(), 0);
        assert_eq!(
            schedule.failed(t0 + S(126)),
            S(2),
            "back to the first retry"
        );
        let loaded = RefreshSchedule::new(t0, true, S(300), S(30));
        assert_eq!(loaded.next_refresh(), t0 + S(300));
    }

    #[test]
    fn refetches_are_allowed_once_per_cooldown() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(t0, true, S(300), S(30));
        assert!(schedule.may_refetch(t0));
        assert!(!schedule.may_refetch(t0 + S(29)));
        assert!(schedule.may_refetch(t0 + S(30)));
        assert!(!schedule.may_refetch(t0 + S(31)));
    }
}
