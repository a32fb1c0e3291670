//! In-memory keyed GCRA through `governor`, with a cap on keys and a sweep of idle ones.
//!
//! [`LocalLimiter`] is one policy's budgets in this process: `governor`'s keyed rate limiter
//! over a [`CappedStore`] (a `DashMap` like governor's default store, plus a cap). It is
//! generic over governor's clock so that tests drive time with
//! [`governor::clock::FakeRelativeClock`]; the gateway uses [`LimiterClock`].
//!
//! Memory is bounded two ways. [`LocalLimiter::sweep`] (run periodically by the sweeper task)
//! drops every key whose budget is full again — such a key is indistinguishable from a new
//! one — and shrinks the map. And the store holds at most `max_keys` keys: once full, a key it
//! does not hold yet is decided against one shared *overflow* budget (same quota) instead of
//! getting its own, and the limiter asks for an early sweep. So a flood of distinct keys
//! costs bounded memory and mostly gets 429s, while keys already known keep their own
//! budgets. The cap is approximate by at most the number of threads inserting at once.
//!
//! Decisions are exact under concurrency: each key's state is one atomic compare-and-swap.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::config::values::Rate;

/// The outcome of one decision, whichever store made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests the key may still make at once after this one.
    pub remaining: u32,
    /// When denied: time until one request would be admitted. Zero when allowed.
    pub retry_after: Duration,
    /// Time until the key's budget is full again (an upper bound, within one interval).
    pub reset: Duration,
}

/// The gateway's clock as governor sees it: nanoseconds since the limiter was made.
#[derive(Debug, Clone)]
pub struct LimiterClock {
    clock: Arc<dyn crate::clock::Clock>,
    base: Instant,
}

impl LimiterClock {
    pub fn new(clock: Arc<dyn crate::clock::Clock>) -> Self {
        let base = clock.instant();
        LimiterClock { clock, base }
    }

    /// The real clock.
    pub fn monotonic() -> Self {
        LimiterClock::new(crate::clock::system())
    }
}

impl Clock for LimiterClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        self.clock
            .instant()
            .saturating_duration_since(self.base)
            .into()
    }
}

/// governor's `DashMap` store with a cap and an overflow budget.
pub struct CappedStore<K: Hash + Eq> {
    map: DashMap<K, InMemoryState>,
    overflow: InMemoryState,
    cap: usize,
    counters: Arc<StoreCounters>,
}

#[derive(Debug, Default)]
struct StoreCounters {
    overflowed: AtomicU64,
    full: AtomicBool,
}

impl<K: Hash + Eq + Clone> StateStore for CappedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if self.map.len() < self.cap || self.map.contains_key(key) {
            return StateStore::measure_and_replace(&self.map, key, f);
        }
        self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
        self.counters.full.store(true, Ordering::Relaxed);
        StateStore::measure_and_replace(&self.overflow, &NotKeyed::NonKey, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for CappedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
    }
    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One policy's budgets in this process.
pub struct LocalLimiter<K: Hash + Eq + Clone, C: Clock = LimiterClock> {
    limiter: RateLimiter<K, CappedStore<K>, C, StateInformationMiddleware>,
    counters: Arc<StoreCounters>,
    interval: Duration,
    burst: u32,
}

impl<K, C> LocalLimiter<K, C>
where
    K: Hash + Eq + Clone,
    C: Clock,
    C::Instant: Reference,
{
    /// `rate` and `burst` as in the configuration (`burst >= 1`, clamped otherwise).
    pub fn new(rate: Rate, burst: u32, max_keys: usize, clock: C) -> Self {
        let interval = rate.interval();
        let burst = burst.max(1);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN));
        let counters = Arc::new(StoreCounters::default());
        let store = CappedStore {
            map: DashMap::new(),
            overflow: InMemoryState::default(),
            cap: max_keys.max(1),
            counters: counters.clone(),
        };
        LocalLimiter {
            limiter: RateLimiter::<K, CappedStore<K>, C, NoOpMiddleware<C::Instant>>::new(
                quota, store, clock,
            )
            .with_middleware(),
            counters,
            interval,
            burst,
        }
    }

    /// Decides one request of `key`, consuming budget when allowed.
    pub fn decide(&self, key: &K) -> Decision {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(self.burst);
                Decision {
                    allowed: true,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset: self.interval * (self.burst - remaining),
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.limiter.clock().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    retry_after,
                    reset: retry_after + self.interval * (self.burst - 1),
                }
            }
        }
    }

    /// Drops keys whose budget is full again and shrinks the map; returns the keys left.
    pub fn sweep(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.counters.full.store(false, Ordering::Relaxed);
        self.limiter.len()
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// Decisions made against the overflow budget since the last call.
    pub fn take_overflowed(&self) -> u64 {
        self.counters.overflowed.swap(0, Ordering::Relaxed)
    }

    /// Whether the store reached its cap since the last sweep.
    pub fn is_full(&self) -> bool {
        self.counters.full.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn rate(text: &str) -> Rate {
        Rate::parse(text).unwrap()
    }

    fn limiter(
        text: &str,
        burst: u32,
        cap: usize,
    ) -> (LocalLimiter<u32, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            LocalLimiter::new(rate(text), burst, cap, clock.clone()),
            clock,
        )
    }

    #[test]
    fn a_fresh_key_gets_exactly_its_burst() {
        let (limiter, _clock) = limiter("5/s", 10, 100);
        let decisions: Vec<Decision> = (0..15).map(|_| limiter.decide(&1)).collect();
        assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 10);
        assert!(decisions[..10].iter().all(|d| d.allowed));
        assert_eq!(decisions[0].remaining, 9);
        assert_eq!(decisions[9].remaining, 0);
        assert_eq!(decisions[9].reset, Duration::from_secs(2));
        let denied = decisions[10];
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_millis(200));
        assert_eq!(denied.reset, Duration::from_millis(2000));
    }

    #[test]
    fn budget_refills_one_request_per_interval() {
        let (limiter, clock) = limiter("5/s", 2, 100);
        assert!(limiter.decide(&1).allowed);
        assert!(limiter.decide(&1).allowed);
        assert!(!limiter.decide(&1).allowed);
        clock.advance(Duration::from_millis(199));
        let early = limiter.decide(&1);
        assert!(!early.allowed);
        assert_eq!(early.retry_after, Duration::from_millis(1));
        clock.advance(Duration::from_millis(1));
        assert!(limiter.decide(&1).allowed);
        assert!(!limiter.decide(&1).allowed);
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            limiter.decide(&1).remaining,
            1,
            "full again after a long pause"
        );
    }

    #[test]
    fn keys_have_separate_budgets() {
        let (limiter, _clock) = limiter("1/h", 1, 100);
        assert!(limiter.decide(&1).allowed);
        assert!(!limiter.decide(&1).allowed);
        assert!(limiter.decide(&2).allowed);
    }

    #[test]
    fn sweep_drops_only_keys_whose_budget_is_full_again() {
        let (limiter, clock) = limiter("10/s", 5, 1000);
        for key in 0..100 {
            limiter.decide(&key);
        }
        clock.advance(Duration::from_secs(1));
        for _ in 0..5 {
            limiter.decide(&7);
        }
        assert_eq!(limiter.len(), 100);
        assert_eq!(limiter.sweep(), 1, "only key 7 is still spending");
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sweep(), 0);
    }

    #[test]
    fn past_the_cap_new_keys_share_one_overflow_budget() {
        let (limiter, _clock) = limiter("1/h", 2, 10);
        for key in 0..10 {
            assert!(limiter.decide(&key).allowed);
        }
        assert!(!limiter.is_full());
        // Keys 10.. are new and the store is full: they share one budget of 2.
        let admitted = (10..1000).filter(|key| limiter.decide(key).allowed).count();
        assert_eq!(admitted, 2);
        assert_eq!(limiter.len(), 10);
        assert!(limiter.is_full());
        assert_eq!(limiter.take_overflowed(), 990);
        // A known key keeps its own budget.
        assert!(limiter.decide(&3).allowed);
    }

    #[test]
    fn the_cap_holds_under_a_flood_of_distinct_keys() {
        let clock = FakeRelativeClock::default();
        let limiter: LocalLimiter<u32, FakeRelativeClock> =
            LocalLimiter::new(rate("20/s"), 40, 10_000, clock);
        let admitted = (0..200_000u32)
            .filter(|i| limiter.decide(&(0x0b00_0000 + i)).allowed)
            .count();
        assert_eq!(limiter.len(), 10_000);
        // 10,000 keys with their own budget, then all newcomers share one budget of 40.
        assert_eq!(admitted, 10_000 + 40);
        assert!(limiter.is_full());
    }
}
