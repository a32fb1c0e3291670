//! The runtime: everything the request path uses, built from one checked [`Config`] as one
//! value ([`Runtime`]), so that a configuration can be swapped whole.
//!
//! [`Runtime::build`] makes the route table, the upstreams, the authenticator and the rate
//! limiters, reading what the configuration names outside itself (key files, shared secrets,
//! `api_keys_file`, `bearer_env`); every problem it meets is reported with its key path, like
//! the configuration's own check — `check-config` runs both. Nothing here listens, connects or
//! spawns: background work is started by whoever serves the runtime
//! ([`Runtime::run_background`]).
//!
//! What lives longer than one runtime is in [`Process`]: the metrics registry and the metric
//! families every runtime counts into, and the clock.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::auth::{AuthMetrics, Authenticator};
use crate::clock::Clock;
use crate::config::{Config, Problems};
use crate::console::IdentityProviderAnswer;
use crate::cors::CorsPolicy;
use crate::limits::ConnectionMetrics;
use crate::proxy::{Upstream, Upstreams};
use crate::ratelimit::{LimiterClock, RateLimitMetrics, RateLimits};
use crate::routing::RouteTable;
use crate::telemetry::Metrics;

/// What outlives every runtime: metrics and the clock.
pub struct Process {
    pub metrics: Arc<Metrics>,
    pub auth: AuthMetrics,
    pub rate_limits: RateLimitMetrics,
    pub reloads: ReloadMetrics,
    pub connections: ConnectionMetrics,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// Configuration reloads, by result, and when the running one was loaded.
#[derive(Debug, Clone, Default)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    loaded_at: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ReloadMetrics {
    fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (ok, failed)",
            self.reloads.clone(),
        );
        registry.register(
            "config_loaded_timestamp_seconds",
            "When the running configuration was loaded (Unix time)",
            self.loaded_at.clone(),
        );
    }

    /// Counts a reload.
    pub fn record(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Reloads counted with this result so far.
    pub fn count(&self, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { result }).get()
    }

    pub fn loaded(&self, at: SystemTime) {
        let seconds = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.loaded_at.set(seconds);
    }
}

impl Process {
    /// The process's metrics, registered once, on the real clock.
    pub fn new() -> Process {
        Process::with_clock(crate::clock::system())
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Process {
        let mut metrics = Metrics::new();
        let auth = AuthMetrics::default();
        auth.register(metrics.registry_mut());
        let rate_limits = RateLimitMetrics::default();
        rate_limits.register(metrics.registry_mut());
        let reloads = ReloadMetrics::default();
        reloads.register(metrics.registry_mut());
        let connections = ConnectionMetrics::default();
        connections.register(metrics.registry_mut());
        Process {
            metrics: Arc::new(metrics),
            auth,
            rate_limits,
            reloads,
            connections,
            clock,
        }
    }
}

impl Default for Process {
    fn default() -> Self {
        Process::new()
    }
}

/// One configuration, built.
pub struct Runtime {
    pub config: Arc<Config>,
    pub loaded_at: SystemTime,
    pub routes: Arc<RouteTable>,
    /// In the order of `config.upstreams` (the route table's indexes).
    pub upstreams: Upstreams,
    pub upstream_names: Arc<[Arc<str>]>,
    pub authenticator: Arc<Authenticator>,
    /// `None` without `[rate_limit]`.
    pub rate_limits: Option<Arc<RateLimits>>,
    /// `None` without `[cors]`.
    pub cors: Option<Arc<CorsPolicy>>,
    /// `None` without `[console.authentication]`.
    pub identity_provider: Option<IdentityProviderAnswer>,
    /// The process's client-connection counters (`server::conn` counts into them).
    pub connections: ConnectionMetrics,
}

impl Runtime {
    /// Builds everything from a checked configuration; `Err` lists every problem.
    pub fn build(config: Config, process: &Process) -> Result<Runtime, Problems> {
        Runtime::build_reusing(config, process, None)
    }

    /// [`Runtime::build`], carrying over from `previous` what did not change: an upstream
    /// (its connection pool and health) whose settings are equal, every rate-limit budget
    /// whose policy is the same, the Redis connection, and authentication's state where it is
    /// still valid (key sets of unchanged issuers, the token cache, the API-key store: see
    /// `auth::state`).
    pub fn build_reusing(
        config: Config,
        process: &Process,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, Problems> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut problems = Problems::default();
        let routes = RouteTable::build(&config);
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (i, upstream) in config.upstreams.iter().enumerate() {
            let kept = previous.and_then(|p| {
                let j = p.config.upstreams.iter().position(|u| u == upstream)?;
                p.upstreams.get(j).cloned()
            });
            if let Some(kept) = kept {
                upstreams.push(kept);
                continue;
            }
            match Upstream::new(upstream, &format!("upstreams[{i}]"), process.clock.clone()) {
                Ok(upstream) => upstreams.push(Arc::new(upstream)),
                Err(more) => problems.extend(more),
            }
        }
        let clock = process.clock.clone();
        let authenticator = match previous {
            Some(previous) => Authenticator::new_reusing(
                &config.auth,
                "auth",
                clock,
                &process.auth,
                &previous.authenticator,
            ),
            None => Authenticator::new(&config.auth, "auth", clock, &process.auth),
        };
        let rate_limits = match &config.rate_limit {
            Some(rate_limit) => match RateLimits::build_reusing(
                rate_limit,
                LimiterClock::new(process.clock.clone()),
                process.rate_limits.clone(),
                previous.and_then(|p| p.rate_limits.as_deref()),
            ) {
                Ok(limits) => Some(Arc::new(limits)),
                Err(error) => {
                    problems.push("rate_limit.redis", error.to_string());
                    None
                }
            },
            None => None,
        };
        let (routes, authenticator) = match (routes, authenticator) {
            (Ok(routes), Ok(authenticator)) => (routes, authenticator),
            (routes, authenticator) => {
                if let Err(more) = routes {
                    problems.extend(more);
                }
                if let Err(more) = authenticator {
                    problems.extend(more);
                }
                return Err(problems);
            }
        };
        let upstream_names = config
            .upstreams
            .iter()
            .map(|u| Arc::from(u.name.as_str()))
            .collect();
        let cors = config.cors.as_ref().map(|c| Arc::new(CorsPolicy::new(c)));
        let identity_provider = config
            .console
            .as_ref()
            .and_then(|c| c.authentication.as_ref())
            .map(IdentityProviderAnswer::new);
        problems.into_result(Runtime {
            config: Arc::new(config),
            loaded_at: SystemTime::now(),
            routes: Arc::new(routes),
            upstreams: upstreams.into(),
            upstream_names,
            authenticator: Arc::new(authenticator),
            rate_limits,
            cors,
            identity_provider,
            connections: process.connections.clone(),
        })
    }

    /// This runtime's background work until `stop` or `shutdown` turns true: key-set
    /// refreshes and `api_keys_file` re-reads, the upstreams' health checks and pool upkeep, and the
    /// rate limiter's sweeper.
    pub async fn run_background(
        self: Arc<Self>,
        stop: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) {
        let until = || {
            let (stop, shutdown) = (stop.clone(), shutdown.clone());
            async move {
                tokio::select! {
                    () = stopped(stop) => {}
                    () = stopped(shutdown) => {}
                }
            }
        };
        let auth = self.authenticator.clone().run_background(until());
        let upstreams = futures_util::future::join_all(
            self.upstreams
                .iter()
                .map(|upstream| upstream.clone().run_health_checks(until())),
        );
        match self.rate_limits.clone() {
            Some(limits) => {
                tokio::join!(auth, upstreams, limits.run_sweeper(until()));
            }
            None => {
                tokio::join!(auth, upstreams);
            }
        }
    }
}

/// Completes when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
