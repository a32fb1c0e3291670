//! One endpoint (a replica of a manager): where it is, its connections, and whether it should
//! get requests.
//!
//! An endpoint is **available** when it is not draining (an operator's `POST
//! /upstreams/{name}/endpoints/{i}/drain`), not failed by active health checks
//! (`unhealthy_after` consecutive failed checks; back after `healthy_after` passed ones), and
//! not ejected. **Ejection** is passive: `consecutive_connect_failures` failed connections, or
//! `consecutive_5xx` 502/503/504 answers from the endpoint itself, take it out for
//! `base_ejection`, doubled for each ejection since it last served well (capped at
//! `max_ejection`). The manager's typed errors about a pipeline (`PipelineInteraction…`,
//! `NotDeployed`, …) prove the manager alive and count as success. The upstream decides
//! whether an ejection may happen at all (`max_ejected_percent`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::uri::{Authority, Scheme};

use super::pool::{ConnectionPool, PoolLimits};
use crate::config::OutlierConfig;

const HEALTHY: u8 = 0;
const UNHEALTHY: u8 = 1;

/// What an endpoint's last failure was, for operators.
#[derive(Debug, Clone)]
pub struct LastError {
    pub at: SystemTime,
    pub reason: String,
}

/// One replica.
#[derive(Debug)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `authority` as the `Host` header every forwarded request carries (made once; `None`
    /// only if it were no valid header value, which an authority always is).
    pub host: Option<http::HeaderValue>,
    pub pool: Arc<ConnectionPool>,
    active: AtomicU8,
    check_streak: AtomicU32,
    connect_failures: AtomicU32,
    server_errors: AtomicU32,
    /// Milliseconds (since the upstream's epoch) until which it is ejected; 0 = not.
    ejected_until_ms: AtomicU64,
    /// Ejections since it last served well (the doubling exponent).
    ejections: AtomicU32,
    draining: AtomicBool,
    last_error: Mutex<Option<LastError>>,
}

/// What one request taught about an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// It answered (anything but a 502/503/504 of its own).
    Served,
    /// The connection failed (refused, timed out, TLS).
    ConnectFailed,
    /// A 502/503/504 from the endpoint itself, or a broken answer.
    ServerError,
}

impl Endpoint {
    pub fn new(scheme: Scheme, authority: Authority, limits: PoolLimits) -> Endpoint {
        Endpoint {
            scheme,
            host: http::HeaderValue::from_str(authority.as_str()).ok(),
            authority,
            pool: Arc::new(ConnectionPool::new(limits)),
            active: AtomicU8::new(HEALTHY),
            check_streak: AtomicU32::new(0),
            connect_failures: AtomicU32::new(0),
            server_errors: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether active health checks currently pass (true without checks).
    pub fn is_healthy(&self) -> bool {
        self.active.load(Ordering::Relaxed) == HEALTHY
    }

    /// Whether it is ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Milliseconds until the ejection ends (0 when not ejected).
    pub fn ejected_for_ms(&self, now_ms: u64) -> u64 {
        self.ejected_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms)
    }

    /// Whether it may get requests at `now_ms`.
    pub fn is_available(&self, now_ms: u64) -> bool {
        !self.is_draining() && self.is_healthy() && !self.is_ejected(now_ms)
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remember(&self, reason: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastError {
            at: SystemTime::now(),
            reason,
        });
    }

    /// Records what a request saw; returns whether the endpoint now asks to be ejected
    /// (the upstream decides whether it may be).
    pub fn observe(&self, observation: Observation, outlier: &OutlierConfig, reason: &str) -> bool {
        match observation {
            Observation::Served => {
                self.connect_failures.store(0, Ordering::Relaxed);
                self.server_errors.store(0, Ordering::Relaxed);
                self.ejections.store(0, Ordering::Relaxed);
                false
            }
            Observation::ConnectFailed => {
                self.remember(reason.to_owned());
                let n = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
                outlier.consecutive_connect_failures > 0
                    && n >= outlier.consecutive_connect_failures
            }
            Observation::ServerError => {
                self.remember(reason.to_owned());
                let n = self.server_errors.fetch_add(1, Ordering::Relaxed) + 1;
                outlier.consecutive_5xx > 0 && n >= outlier.consecutive_5xx
            }
        }
    }

    /// Ejects the endpoint from `now_ms`: `base` doubled per ejection since it last served
    /// well, at most `max`. Returns the ejection's length.
    pub fn eject(&self, now_ms: u64, base: Duration, max: Duration) -> Duration {
        let times = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let length = base.saturating_mul(1u32 << times).min(max);
        let until = now_ms + u64::try_from(length.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.connect_failures.store(0, Ordering::Relaxed);
        self.server_errors.store(0, Ordering::Relaxed);
        length
    }

    /// Records an active health check; returns the new health when it changed.
    pub fn checked(
        &self,
        passed: bool,
        unhealthy_after: u32,
        healthy_after: u32,
        reason: &str,
    ) -> Option<bool> {
        let healthy = self.is_healthy();
        if passed == healthy {
            self.check_streak.store(0, Ordering::Relaxed);
            return None;
        }
        if !passed {
            self.remember(format!("health check: {reason}"));
        }
        let streak = self.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if passed {
            healthy_after
        } else {
            unhealthy_after
        };
        if streak < needed {
            return None;
        }
        self.check_streak.store(0, Ordering::Relaxed);
        self.active
            .store(if passed { HEALTHY } else { UNHEALTHY }, Ordering::Relaxed);
        if passed {
            // Back by active checks: whatever ejected it is over.
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
        Some(passed)
    }
}

/// Milliseconds since `epoch` by `now`, +1 so that 0 always means "never".
pub fn millis_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX / 2) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new(
            Scheme::HTTP,
            Authority::from_static("127.0.0.1:1"),
            PoolLimits {
                max_connections: 1,
                max_pending: 1,
                pending_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                max_idle: 1,
            },
        )
    }

    #[test]
    fn repeated_ejections_double_until_the_cap_and_a_success_resets_them() {
        let e = endpoint();
        let outlier = OutlierConfig {
            consecutive_5xx: 2,
            ..OutlierConfig::default()
        };
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(35));
        assert!(!e.observe(Observation::ServerError, &outlier, "502"));
        assert!(e.observe(Observation::ServerError, &outlier, "502"));
        assert_eq!(e.eject(1000, base, max), Duration::from_secs(10));
        assert!(e.is_ejected(10_999) && !e.is_ejected(11_000));
        assert_eq!(e.eject(20_000, base, max), Duration::from_secs(20));
        assert_eq!(
            e.eject(50_000, base, max),
            Duration::from_secs(35),
            "capped"
        );
        e.observe(Observation::Served, &outlier, "");
        assert_eq!(e.eject(90_000, base, max), Duration::from_secs(10));
        assert_eq!(e.last_error().unwrap().reason, "502");
    }

    #[test]
    fn health_changes_after_the_configured_streaks() {
        let e = endpoint();
        assert_eq!(e.checked(false, 2, 3, "refused"), None);
        assert_eq!(e.checked(false, 2, 3, "refused"), Some(false));
        assert!(!e.is_available(1));
        assert_eq!(e.checked(true, 2, 3, ""), None);
        assert_eq!(e.checked(true, 2, 3, ""), None);
        assert_eq!(e.checked(true, 2, 3, ""), Some(true));
        assert!(e.is_available(1));
        e.set_draining(true);
        assert!(!e.is_available(1));
    }
}
