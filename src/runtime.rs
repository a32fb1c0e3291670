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
//! families every runtime counts into, and the clock. The gauges that describe the running
//! runtime's state (endpoint health, ejection, pools, key sets, the configuration's hash) are
//! read at scrape time from the runtime [`Process::set_live`] last named
//! ([`RuntimeCollector`]), so a reload neither resets nor duplicates them and a removed
//! upstream's series disappear.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

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
use crate::proxy::metrics::UpstreamMetrics;
use crate::proxy::{Upstream, Upstreams};
use crate::ratelimit::{LimiterClock, RateLimitMetrics, RateLimits};
use crate::routing::RouteTable;
use crate::telemetry::metrics::Name;
use crate::telemetry::{Metrics, Protocol};
use crate::tls::{TlsMetrics, TlsTerminator};

/// What outlives every runtime: metrics and the clock.
pub struct Process {
    pub metrics: Arc<Metrics>,
    pub auth: AuthMetrics,
    pub rate_limits: RateLimitMetrics,
    pub reloads: ReloadMetrics,
    pub tls: TlsMetrics,
    pub upstreams: UpstreamMetrics,
    pub connections: ConnectionMetrics,
    pub clock: Arc<dyn Clock>,
    /// The runtime serving now, for the scrape-time gauges.
    live: Arc<ArcSwapOption<Runtime>>,
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
    last_ok: Gauge,
}

impl ReloadMetrics {
    fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        // Both results exist from the start, at 0.
        for result in ["ok", "failed"] {
            let _ = self.reloads.get_or_create(&ReloadLabels { result });
        }
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
        registry.register(
            "config_last_reload_successful",
            "1 when the last reload (or the start) succeeded, 0 when it failed and an older \
             configuration is still running",
            self.last_ok.clone(),
        );
    }

    /// Counts a reload.
    pub fn record(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        self.last_ok.set(i64::from(ok));
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
        self.last_ok.set(1);
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
        let rate_limits = RateLimitMetrics::with_board(metrics.status().clone());
        rate_limits.register(metrics.registry_mut());
        let reloads = ReloadMetrics::default();
        reloads.register(metrics.registry_mut());
        let tls = TlsMetrics::default();
        tls.register(metrics.registry_mut());
        crate::telemetry::trace::register(metrics.registry_mut());
        let upstreams = UpstreamMetrics::new(metrics.connection_gauge(Protocol::WebSocket));
        upstreams.register(metrics.registry_mut());
        let live = Arc::new(ArcSwapOption::empty());
        metrics
            .registry_mut()
            .register_collector(Box::new(RuntimeCollector { live: live.clone() }));
        let connections = ConnectionMetrics::default();
        connections.register(metrics.registry_mut());
        Process {
            metrics: Arc::new(metrics),
            auth,
            rate_limits,
            reloads,
            tls,
            upstreams,
            connections,
            clock,
            live,
        }
    }

    /// Names the runtime now serving (at start and after every reload).
    pub fn set_live(&self, runtime: &Arc<Runtime>) {
        self.live.store(Some(runtime.clone()));
    }
}

/// Encodes one gauge family from `(labels, value)` pairs.
fn gauges<S: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: Name,
    endpoint: Name,
}

#[derive(Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    upstream: Name,
    endpoint: Name,
    state: &'static str,
}

#[derive(Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Name,
}

#[derive(Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: Name,
}

#[derive(Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    hash: String,
}

/// The gauges of the running runtime's state, read at every scrape (see the module docs).
pub struct RuntimeCollector {
    live: Arc<ArcSwapOption<Runtime>>,
}

impl std::fmt::Debug for RuntimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeCollector").finish_non_exhaustive()
    }
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(runtime) = self.live.load_full() else {
            return Ok(());
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut endpoints = Vec::new();
        for upstream in runtime.upstreams.iter() {
            let now = upstream.now_ms();
            for endpoint in &upstream.endpoints {
                endpoints.push((
                    Name::from(&upstream.name),
                    Name::new(&endpoint.url()),
                    endpoint,
                    now,
                ));
            }
        }
        let labels = |(u, e, _, _): &(Name, Name, _, _)| EndpointLabels {
            upstream: u.clone(),
            endpoint: e.clone(),
        };
        gauges(
            &mut encoder,
            "upstream_endpoint_available",
            "1 when the endpoint gets requests: healthy, not ejected, not draining",
            endpoints
                .iter()
                .map(|x| (labels(x), flag(x.2.is_available(x.3)))),
        )?;
        gauges(
            &mut encoder,
            "upstream_endpoint_healthy",
            "1 unless active health checks found the endpoint failing",
            endpoints
                .iter()
                .map(|x| (labels(x), flag(x.2.is_healthy()))),
        )?;
        gauges(
            &mut encoder,
            "upstream_endpoint_ejected",
            "1 while the endpoint is ejected after consecutive failures",
            endpoints
                .iter()
                .map(|x| (labels(x), flag(x.2.is_ejected(x.3)))),
        )?;
        gauges(
            &mut encoder,
            "upstream_endpoint_draining",
            "1 while an operator drains the endpoint",
            endpoints
                .iter()
                .map(|x| (labels(x), flag(x.2.is_draining()))),
        )?;
        gauges(
            &mut encoder,
            "upstream_connections",
            "Connections to the endpoint by state: open (all, in use or idle), idle, and \
             pending (requests waiting for a connection)",
            endpoints.iter().flat_map(|x| {
                let pool = &x.2.pool;
                [
                    ("open", pool.open()),
                    ("idle", pool.idle_count()),
                    ("pending", pool.pending()),
                ]
                .map(|(state, n)| {
                    (
                        ConnectionLabels {
                            upstream: x.0.clone(),
                            endpoint: x.1.clone(),
                            state,
                        },
                        n as f64,
                    )
                })
            }),
        )?;
        gauges(
            &mut encoder,
            "upstream_endpoints_available",
            "Endpoints of the upstream that get requests (0: every one is down)",
            runtime.upstreams.iter().map(|u| {
                let now = u.now_ms();
                let n = u.endpoints.iter().filter(|e| e.is_available(now)).count();
                (
                    UpstreamLabels {
                        upstream: Name::from(&u.name),
                    },
                    n as f64,
                )
            }),
        )?;
        let now = SystemTime::now();
        let key_sets: Vec<_> = runtime.authenticator.state().key_sets().cloned().collect();
        gauges(
            &mut encoder,
            "auth_jwks_keys",
            "Keys in the issuer's current key set (absent before one was loaded)",
            key_sets.iter().filter_map(|set| {
                let keys = set.keys()?;
                Some((
                    IssuerLabels {
                        issuer: Name::new(set.issuer()),
                    },
                    keys.len() as f64,
                ))
            }),
        )?;
        gauges(
            &mut encoder,
            "auth_jwks_age_seconds",
            "Seconds since the issuer's key set was last loaded successfully",
            key_sets.iter().filter_map(|set| {
                let at = set.loaded_at()?;
                Some((
                    IssuerLabels {
                        issuer: Name::new(set.issuer()),
                    },
                    now.duration_since(at).map_or(0.0, |d| d.as_secs_f64()),
                ))
            }),
        )?;
        gauges(
            &mut encoder,
            "config_info",
            "The running configuration's hash (the value is always 1)",
            [(
                HashLabels {
                    hash: runtime.config.hash(),
                },
                1.0,
            )],
        )?;
        Ok(())
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
    /// `None` without `[server.tls]` (the listener speaks clear text).
    pub tls: Option<Arc<TlsTerminator>>,
    /// `None` without `[admin.tls]`.
    pub admin_tls: Option<Arc<TlsTerminator>>,
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
            // An upstream whose TLS files changed is built anew, so that the reload takes them.
            let kept = previous.and_then(|p| {
                let j = p.config.upstreams.iter().position(|u| u == upstream)?;
                p.upstreams
                    .get(j)
                    .filter(|u| !u.tls_files_changed())
                    .cloned()
            });
            if let Some(kept) = kept {
                upstreams.push(kept);
                continue;
            }
            match Upstream::new(
                upstream,
                &format!("upstreams[{i}]"),
                process.clock.clone(),
                &process.upstreams,
            ) {
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
        // An unchanged `[server.tls]` (`[admin.tls]`) carries the terminator (its session
        // cache and ticket key), whose files are then checked at once, as `SIGHUP` promises.
        let tls = terminator(
            config.server.tls.as_ref(),
            "server.tls",
            previous.and_then(|p| p.tls.clone()),
            process,
            &mut problems,
        );
        let admin_tls = terminator(
            config.admin.as_ref().and_then(|a| a.tls.as_ref()),
            "admin.tls",
            previous.and_then(|p| p.admin_tls.clone()),
            process,
            &mut problems,
        );
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
            tls,
            admin_tls,
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
        let watch_files = self.config.server.watch_config;
        let upstreams = futures_util::future::join_all(
            self.upstreams
                .iter()
                .map(|upstream| upstream.clone().run_health_checks(watch_files, until())),
        );
        let sweeper = async {
            if let Some(limits) = self.rate_limits.clone() {
                limits.run_sweeper(until()).await;
            }
        };
        let certificates = async {
            if let Some(tls) = self.tls.clone() {
                tls.run_watch(until()).await;
            }
        };
        let admin_certificates = async {
            if let Some(tls) = self.admin_tls.clone() {
                tls.run_watch(until()).await;
            }
        };
        tokio::join!(auth, upstreams, sweeper, certificates, admin_certificates);
    }
}

/// The TLS terminator for `config` (problems under `at`): `previous`'s when it serves the same
/// configuration (its files re-read), else a new one.
fn terminator(
    config: Option<&crate::config::TlsConfig>,
    at: &str,
    previous: Option<Arc<TlsTerminator>>,
    process: &Process,
    problems: &mut Problems,
) -> Option<Arc<TlsTerminator>> {
    let config = config?;
    let built = match previous {
        Some(carried) if carried.serves(config) => carried.reload_if_changed().map(|_| carried),
        _ => TlsTerminator::build(config, at, &process.tls).map(Arc::new),
    };
    match built {
        Ok(terminator) => Some(terminator),
        Err(more) => {
            problems.extend(more);
            None
        }
    }
}

/// Completes when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
