//! Forwarding's metrics: per upstream and endpoint, the time each try took to its response
//! headers, retries and retries refused by the budget, and open WebSocket tunnels.
//!
//! [`UpstreamMetrics`] holds the process-wide families (made once, registered once, shared by
//! every runtime); [`UpstreamMeters`] are one upstream's handles into them, looked up once
//! when the upstream is built, so the request path only touches atomics. The state gauges
//! (health, ejection, connections) are read at scrape time from the running runtime
//! (`runtime::RuntimeCollector`), not kept here.
//!
//! Each endpoint also keeps a moving average of its recent latency for the status page
//! ([`EndpointMeter::recent_latency`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::telemetry::metrics::{histogram_family, HistogramFamily, Name, REQUEST_BUCKETS};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: Name,
    endpoint: Name,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Name,
}

/// The families, made once per process.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    durations: HistogramFamily<EndpointLabels>,
    retries: Family<UpstreamLabels, Counter>,
    exhausted: Family<UpstreamLabels, Counter>,
    /// `connections_open{protocol="ws"}`, shared with the server's connection gauges.
    tunnels: Gauge,
}

impl UpstreamMetrics {
    /// `tunnels` is the gauge open WebSocket tunnels are counted in.
    pub fn new(tunnels: Gauge) -> UpstreamMetrics {
        UpstreamMetrics {
            durations: histogram_family(&REQUEST_BUCKETS),
            retries: Family::default(),
            exhausted: Family::default(),
            tunnels,
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending one try to an endpoint to its response headers (or failure), \
             by upstream and endpoint",
            self.durations.clone(),
        );
        registry.register(
            "upstream_retries",
            "Requests sent again to another endpoint, by upstream",
            self.retries.clone(),
        );
        registry.register(
            "upstream_retry_budget_exhausted",
            "Retries that were safe but refused because the upstream's retry budget was spent",
            self.exhausted.clone(),
        );
    }

    /// The handles of upstream `name` with these endpoint URLs.
    pub fn meters(&self, name: &str, endpoints: &[String]) -> UpstreamMeters {
        let upstream = Name::new(name);
        let labels = UpstreamLabels {
            upstream: upstream.clone(),
        };
        UpstreamMeters {
            endpoints: endpoints
                .iter()
                .map(|url| EndpointMeter {
                    duration: self
                        .durations
                        .get_or_create(&EndpointLabels {
                            upstream: upstream.clone(),
                            endpoint: Name::new(url),
                        })
                        .clone(),
                    recent_us: AtomicU64::new(0),
                })
                .collect(),
            retries: self.retries.get_or_create(&labels).clone(),
            exhausted: self.exhausted.get_or_create(&labels).clone(),
            tunnels: self.tunnels.clone(),
        }
    }
}

/// One endpoint's handles.
#[derive(Debug)]
pub struct EndpointMeter {
    duration: Histogram,
    /// Exponential moving average of try latencies (weight 1/8), in microseconds; 0: none yet.
    recent_us: AtomicU64,
}

impl EndpointMeter {
    /// Records one try's time to headers.
    pub fn observe(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.recent_us.load(Ordering::Relaxed);
        // Racing updates may lose a sample: it is a moving average for a page.
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.recent_us.store(new.max(1), Ordering::Relaxed);
    }

    /// The moving average of recent tries; `None` before the first.
    pub fn recent_latency(&self) -> Option<Duration> {
        match self.recent_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// One upstream's handles (see the module docs).
#[derive(Debug)]
pub struct UpstreamMeters {
    pub endpoints: Vec<EndpointMeter>,
    retries: Counter,
    exhausted: Counter,
    tunnels: Gauge,
}

impl UpstreamMeters {
    /// Meters that count into families nobody registered (tests, tools).
    pub fn unregistered(name: &str, endpoints: &[String]) -> UpstreamMeters {
        UpstreamMetrics::new(Gauge::default()).meters(name, endpoints)
    }

    /// Counts a retry decision: sent again, or refused by the budget.
    pub fn retry(&self, allowed: bool) {
        if allowed {
            self.retries.inc();
        } else {
            self.exhausted.inc();
        }
    }

    /// Counts an open WebSocket tunnel until the guard is dropped.
    pub fn tunnel(&self) -> TunnelGuard {
        self.tunnels.inc();
        TunnelGuard(self.tunnels.clone())
    }
}

/// Decrements the tunnel gauge when the tunnel closes.
pub struct TunnelGuard(Gauge);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_latency_moves_towards_new_samples() {
        let meters = UpstreamMeters::unregistered("a", &["http://127.0.0.1:1".into()]);
        let meter = &meters.endpoints[0];
        assert_eq!(meter.recent_latency(), None);
        meter.observe(Duration::from_millis(8));
        assert_eq!(meter.recent_latency(), Some(Duration::from_millis(8)));
        meter.observe(Duration::from_millis(16));
        assert_eq!(meter.recent_latency(), Some(Duration::from_millis(9)));
    }
}
