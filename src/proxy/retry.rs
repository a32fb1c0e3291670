//! When the gateway may send a request again, and how many retries it may add.
//!
//! **Safe retries only** ([`Replay`]): a request is sent again on another endpoint when it was
//! never sent (the connection failed, or a pooled connection turned out closed before any byte
//! was written — hyper hands such a request back untouched), or when its method is idempotent
//! (`GET`, `HEAD`, `PUT`, `DELETE`), its body is kept (empty, or buffered within
//! `retry.buffer_bytes`), and the answer was a 502/503/504 of the endpoint itself without
//! `Retry-After`. Never a `POST` once a byte reached the manager; never a stream or an
//! upload.
//!
//! **A budget** ([`RetryBudget`]): retries are at most `budget_percent` of the requests of the
//! last 10 seconds, and always at least `min_per_second` per second, so retries cannot
//! multiply the load on a struggling manager. A request that may not retry gets the error it
//! met.
//!
//! Feldera's own clients retry too (they honour `Retry-After`, and retry a `POST` only on a
//! 503 `PipelineInteractionUnreachable` saying `Failed to connect to host`): the manager's
//! typed errors reach them byte for byte, and the gateway never retries on them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::Method;

/// Whether `method` may be sent twice with the same effect.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// How a request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Only if it was never sent.
    IfUnsent,
    /// Also after a 502/503/504 of the endpoint itself (idempotent, body kept).
    OnServerError,
}

/// Seconds of history the budget looks at.
const WINDOW: usize = 10;

/// Requests and retries of the last [`WINDOW`] seconds, one slot per second.
#[derive(Debug)]
pub struct RetryBudget {
    epoch: Instant,
    /// Per slot: the second it counts (since `epoch`) in the high half, requests in the
    /// next 16 bits, retries in the low 16 bits — one atomic word, updated together.
    slots: [AtomicU64; WINDOW],
    percent: u64,
    min_per_second: u64,
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (word >> 32, (word >> 16) & 0xffff, word & 0xffff)
}

fn pack(second: u64, requests: u64, retries: u64) -> u64 {
    (second << 32) | (requests.min(0xffff) << 16) | retries.min(0xffff)
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            epoch: Instant::now(),
            slots: Default::default(),
            percent: u64::from(percent),
            min_per_second: u64::from(min_per_second),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() & 0xffff_ffff
    }

    fn add(&self, now: Instant, requests: u64, retries: u64) {
        let second = self.second(now);
        let slot = &self.slots[(second as usize) % WINDOW];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (at, r, t) = unpack(current);
            let next = if at == second {
                pack(second, r + requests, t + retries)
            } else {
                pack(second, requests, retries)
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Counts one request.
    pub fn request(&self, now: Instant) {
        self.add(now, 1, 0);
    }

    /// Whether one more retry fits; counts it when it does.
    pub fn try_retry(&self, now: Instant) -> bool {
        let second = self.second(now);
        let (mut requests, mut retries) = (0, 0);
        for slot in &self.slots {
            let (at, r, t) = unpack(slot.load(Ordering::Relaxed));
            if second.saturating_sub(at) < WINDOW as u64 {
                requests += r;
                retries += t;
            }
        }
        let allowed = (requests * self.percent / 100).max(self.min_per_second * WINDOW as u64);
        if retries >= allowed {
            return false;
        }
        self.add(now, 0, 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retries_are_a_share_of_requests_with_a_floor_and_the_window_moves() {
        let budget = RetryBudget::new(20, 1);
        let t0 = budget.epoch;
        // No traffic: the floor (1/s over 10 s) allows 10.
        for i in 0..10 {
            assert!(budget.try_retry(t0), "retry {i}");
        }
        assert!(!budget.try_retry(t0));
        // 200 requests: 20 % is 40 retries in the window, 10 already spent.
        for _ in 0..200 {
            budget.request(t0);
        }
        let spent = (0..100).filter(|_| budget.try_retry(t0)).count();
        assert_eq!(spent, 30);
        // Ten seconds later the window is empty again.
        let later = t0 + Duration::from_secs(10);
        assert!(budget.try_retry(later));
    }

    #[test]
    fn only_idempotent_methods_may_be_repeated_after_an_answer() {
        assert!(is_idempotent(&Method::GET) && is_idempotent(&Method::DELETE));
        assert!(!is_idempotent(&Method::POST) && !is_idempotent(&Method::PATCH));
    }
}
