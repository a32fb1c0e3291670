//! One upstream (a pipeline manager) and its replicas ([`Upstream`]): which endpoint gets a
//! request, the connections to each, health, and the retry budget.
//!
//! Endpoints are chosen round robin among the available ones (see [`super::endpoint`]). When
//! none is available — every one ejected or failing its health checks — the upstream is in
//! **panic mode** and tries them all anyway (health checks and outlier detection can be wrong;
//! refusing every request would be worse): a dead manager is then answered with 502
//! `UpstreamUnavailable`, fast. Only when every endpoint is *draining* (an operator took them
//! out) is the answer 503 `NoHealthyUpstream`. Ejection never takes out more than
//! `max_ejected_percent` of the endpoints (but at least one may always go).
//!
//! Connections: each endpoint has its own pool ([`super::pool`]); this module opens new ones
//! (TCP and, for `https`, the TLS handshake — both within `connect_timeout` — then the
//! HTTP/1.1 handshake) and gives each its own task, which holds the pool's permit until the
//! connection closes. A failed TLS handshake is a connect failure with its own reason
//! ([`ConnectError::Tls`]; the settings are `[upstreams.tls]`, see [`crate::outbound`]).
//!
//! Active health checks (`[upstreams.health]`), when configured, run in the runtime's
//! background ([`Upstream::run_health_checks`]), which also closes idle connections past their
//! timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::HeaderValue;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use tokio::sync::OwnedSemaphorePermit;

use super::endpoint::{millis_since, Endpoint, Observation};
use super::metrics::{UpstreamMeters, UpstreamMetrics};
use super::pool::PoolLimits;
use super::retry::RetryBudget;
use crate::body::Body;
use crate::clock::Clock;
use crate::config::{CredentialsMode, HealthConfig, OutlierConfig, Problems, UpstreamConfig};
use crate::errors::GatewayError;
use crate::outbound::{ManagerConnector, OutboundError};

/// Why a new connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused")]
    Refused(#[source] crate::body::BoxError),
    #[error("connect timed out")]
    TimedOut,
    #[error("connect failed")]
    Failed(#[source] crate::body::BoxError),
    /// The TLS handshake failed; `reason` says how (`TLS handshake failed: …`).
    #[error("{reason}")]
    Tls {
        reason: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake failed")]
    Handshake(#[source] hyper::Error),
}

impl ConnectError {
    /// The fixed reason clients see.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Refused(_) => "connection refused",
            ConnectError::TimedOut => "connect timed out",
            ConnectError::Failed(_) => "connect failed",
            ConnectError::Tls { reason, .. } => reason,
            ConnectError::Handshake(_) => "connect failed",
        }
    }
}

/// An upstream: its name, replicas and per-upstream settings.
pub struct Upstream {
    pub name: Arc<str>,
    pub request_timeout: Duration,
    pub credentials: CredentialsMode,
    /// `Bearer <key>` for `credentials = "replace"`, read from the environment at start.
    pub replacement_authorization: Option<HeaderValue>,
    pub endpoints: Vec<Endpoint>,
    pub retries: RetryBudget,
    /// Largest request body kept so that an idempotent request can be sent again.
    pub retry_buffer: usize,
    /// One endpoint's time for one try of a request that may be sent again (`None`: the
    /// request's whole timeout).
    pub try_timeout: Option<Duration>,
    /// Requests open at once per pipeline (0: no quota), and a principal's floor.
    pub pipeline_concurrency: usize,
    pub per_principal_min: usize,
    /// Who holds what of each pipeline's quota (kept across reloads with the upstream).
    pub quota: Arc<super::quota::PipelineQuota>,
    outlier: OutlierConfig,
    base_ejection: Duration,
    health: Option<HealthConfig>,
    next: AtomicUsize,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    connector: ManagerConnector,
    connect_timeout: Duration,
    /// Handles into the process's metrics (per endpoint, in the order of `endpoints`).
    pub meters: UpstreamMeters,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the upstream `at` (its key path, for problems) from a checked configuration;
    /// reads `bearer_env`.
    pub fn new(
        config: &UpstreamConfig,
        at: &str,
        clock: Arc<dyn Clock>,
        metrics: &UpstreamMetrics,
    ) -> Result<Upstream, Problems> {
        let mut problems = Problems::default();
        let limits = PoolLimits {
            max_connections: config.max_connections,
            max_pending: config.max_pending,
            pending_timeout: config.pending_timeout,
            idle_timeout: config.pool_idle_timeout,
            max_idle: config.pool_max_idle_per_endpoint,
        };
        let endpoints: Vec<Endpoint> = config
            .endpoints
            .iter()
            .map(|url| Endpoint::new(url.scheme.clone(), url.authority.clone(), limits))
            .collect();
        let urls: Vec<String> = endpoints.iter().map(Endpoint::url).collect();
        let meters = metrics.meters(&config.name, &urls);
        let replacement_authorization = match (config.credentials, &config.bearer_env) {
            (CredentialsMode::Replace, Some(var)) => match std::env::var(var) {
                Ok(key) => match HeaderValue::try_from(format!("Bearer {key}")) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        Some(value)
                    }
                    Err(_) => {
                        problems.push(
                            format!("{at}.bearer_env"),
                            format!("environment variable {var} is not a valid header value"),
                        );
                        None
                    }
                },
                Err(_) => {
                    problems.push(
                        format!("{at}.bearer_env"),
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
            _ => None,
        };
        let connector = match ManagerConnector::new(
            config.connect_timeout,
            config.tls.as_ref(),
            &format!("{at}.tls"),
        ) {
            Ok(connector) => Some(connector),
            Err(more) => {
                problems.extend(more);
                None
            }
        };
        let Some(connector) = connector else {
            return Err(problems);
        };
        let epoch = clock.instant();
        problems.into_result(Upstream {
            name: config.name.as_str().into(),
            request_timeout: config.request_timeout,
            credentials: config.credentials,
            replacement_authorization,
            endpoints,
            retries: RetryBudget::new(config.retry.budget_percent, config.retry.min_per_second),
            retry_buffer: config.retry.buffer_bytes,
            try_timeout: config.retry.try_timeout,
            pipeline_concurrency: config.pipeline_concurrency,
            per_principal_min: config.per_principal_min,
            quota: Arc::default(),
            outlier: config.outlier.clone(),
            base_ejection: config.base_ejection(),
            health: config.health.clone(),
            next: AtomicUsize::new(0),
            clock,
            epoch,
            connector,
            connect_timeout: config.connect_timeout,
            meters,
        })
    }

    /// Whether one more retry fits the budget; counts the retry, or the refusal.
    pub fn may_retry(&self) -> bool {
        let allowed = self.retries.try_retry(self.instant());
        self.meters.retry(allowed);
        allowed
    }

    /// Health checks' settings, when configured.
    pub fn health(&self) -> Option<&HealthConfig> {
        self.health.as_ref()
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Now, in the milliseconds ejections are kept in.
    pub fn now_ms(&self) -> u64 {
        millis_since(self.epoch, self.clock.instant())
    }

    pub fn instant(&self) -> Instant {
        self.clock.instant()
    }

    /// The next endpoint to try, skipping those in `tried` (a bitmask of indexes, for
    /// retries); see the module docs for panic mode and draining.
    pub fn choose(&self, tried: u64) -> Result<(usize, &Endpoint), GatewayError> {
        let n = self.endpoints.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let now = self.now_ms();
        let untried = |index: usize| index >= 64 || tried & (1 << index) == 0;
        let candidates = (0..n)
            .map(|offset| (start + offset) % n)
            .filter(|i| untried(*i));
        if let Some(index) = candidates
            .clone()
            .find(|i| self.endpoints[*i].is_available(now))
        {
            return Ok((index, &self.endpoints[index]));
        }
        // Panic mode: nothing is available, so anything not drained is tried.
        if let Some(index) = candidates
            .clone()
            .find(|i| !self.endpoints[*i].is_draining())
        {
            return Ok((index, &self.endpoints[index]));
        }
        if self.endpoints.iter().all(Endpoint::is_draining) {
            return Err(GatewayError::no_healthy_upstream(&self.name, 1));
        }
        Err(GatewayError::internal("every endpoint was tried"))
    }

    /// Records what a request saw at endpoint `index`, ejecting it when its errors ask for
    /// it and `max_ejected_percent` allows.
    pub fn observe(&self, index: usize, observation: Observation, reason: &str) {
        let Some(endpoint) = self.endpoints.get(index) else {
            return;
        };
        if !endpoint.observe(observation, &self.outlier, reason) {
            return;
        }
        let now = self.now_ms();
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        let allowed =
            (self.endpoints.len() * self.outlier.max_ejected_percent as usize / 100).max(1);
        if ejected >= allowed {
            tracing::warn!(upstream = %self.name, endpoint = %endpoint.url(), %reason,
                "endpoint failing, but max_ejected_percent keeps it in rotation");
            return;
        }
        let length = endpoint.eject(now, self.base_ejection, self.outlier.max_ejection);
        tracing::warn!(upstream = %self.name, endpoint = %endpoint.url(), %reason,
            ejected_for = ?length, "endpoint ejected");
    }

    /// Every endpoint's state, for operators (`GET /upstreams` on the admin listener).
    pub fn status(&self) -> serde_json::Value {
        let now = self.now_ms();
        let endpoints: Vec<serde_json::Value> = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let last_error = e.last_error().map(|error| {
                    serde_json::json!({
                        "reason": error.reason,
                        "at": error.at.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64()),
                    })
                });
                serde_json::json!({
                    "index": index,
                    "url": e.url(),
                    "available": e.is_available(now),
                    "healthy": e.is_healthy(),
                    "ejected_for_s": e.ejected_for_ms(now) as f64 / 1000.0,
                    "draining": e.is_draining(),
                    "connections": { "open": e.pool.open(), "idle": e.pool.idle_count(), "pending": e.pool.pending() },
                    "last_error": last_error,
                })
            })
            .collect();
        serde_json::json!({
            "name": &*self.name,
            "health_checks": self.health.is_some(),
            "endpoints": endpoints,
        })
    }

    /// A new connection to endpoint `index`; its task keeps `permit` while it is open.
    pub async fn connect(
        &self,
        index: usize,
        permit: OwnedSemaphorePermit,
    ) -> Result<SendRequest<Body>, ConnectError> {
        let endpoint = &self.endpoints[index];
        let connecting = self
            .connector
            .connect(&endpoint.scheme, &endpoint.authority);
        let io = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(ConnectError::TimedOut),
            Ok(Err(OutboundError::Tls { reason, source })) => {
                return Err(ConnectError::Tls { reason, source });
            }
            Ok(Err(OutboundError::Tcp(error))) => {
                let refused = find_io_kind(&*error) == Some(std::io::ErrorKind::ConnectionRefused);
                let timed_out = find_io_kind(&*error) == Some(std::io::ErrorKind::TimedOut)
                    || error.to_string().contains("timed out");
                return Err(if refused {
                    ConnectError::Refused(error)
                } else if timed_out {
                    ConnectError::TimedOut
                } else {
                    ConnectError::Failed(error)
                });
            }
            Ok(Ok(io)) => io,
        };
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ConnectError::Handshake)?;
        let upstream = self.name.clone();
        tokio::spawn(async move {
            // The permit counts this connection against `max_connections` until it closes.
            let _permit = permit;
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%upstream, %error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Whether a TLS file (`[upstreams.tls]`) changed since this upstream read it: a reload
    /// then builds it anew even when its configuration is the same.
    pub fn tls_files_changed(&self) -> bool {
        self.connector.files_changed()
    }

    /// Active health checks (when configured), pool upkeep and, with `watch_files`, the TLS
    /// files' poll ([`ManagerConnector::refresh`]) until `stop` completes.
    pub async fn run_health_checks(
        self: Arc<Self>,
        watch_files: bool,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let interval = self.health.as_ref().map_or(Duration::from_secs(1), |h| {
            h.interval.min(Duration::from_secs(1))
        });
        let mut next_check = Instant::now();
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
            for endpoint in &self.endpoints {
                endpoint.pool.prune();
            }
            if watch_files {
                match self.connector.refresh() {
                    None => {}
                    Some(Ok(())) => {
                        tracing::info!(upstream = %self.name, "TLS files changed: new connections use them");
                    }
                    Some(Err(problems)) => {
                        tracing::warn!(upstream = %self.name, %problems,
                            "TLS files changed but cannot be used; the old ones stay");
                    }
                }
            }
            let Some(health) = &self.health else {
                continue;
            };
            if Instant::now() < next_check {
                continue;
            }
            next_check = Instant::now() + health.interval;
            let checks = self
                .endpoints
                .iter()
                .enumerate()
                .map(|(index, _)| self.check(index, health));
            futures_util::future::join_all(checks).await;
        }
    }

    /// One active check of endpoint `index`.
    async fn check(&self, index: usize, health: &HealthConfig) {
        let endpoint = &self.endpoints[index];
        let outcome = tokio::time::timeout(health.timeout, self.probe(index, &health.path)).await;
        let (passed, reason) = match outcome {
            Ok(Ok(status)) if status.is_success() => (true, String::new()),
            Ok(Ok(status)) => (false, format!("answered {status}")),
            Ok(Err(reason)) => (false, reason),
            Err(_) => (false, "timed out".to_owned()),
        };
        if let Some(healthy) = endpoint.checked(
            passed,
            health.unhealthy_after,
            health.healthy_after,
            &reason,
        ) {
            if healthy {
                tracing::info!(upstream = %self.name, endpoint = %endpoint.url(), "endpoint healthy again");
            } else {
                tracing::warn!(upstream = %self.name, endpoint = %endpoint.url(), %reason, "endpoint unhealthy");
            }
        }
    }

    /// `GET path` on a connection of its own (outside the pool and its cap).
    async fn probe(&self, index: usize, path: &str) -> Result<http::StatusCode, String> {
        let endpoint = &self.endpoints[index];
        let io = self
            .connector
            .connect(&endpoint.scheme, &endpoint.authority)
            .await
            .map_err(|e| match e {
                OutboundError::Tls { reason, .. } => reason.to_owned(),
                OutboundError::Tcp(e) => format!("connect: {e}"),
            })?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let driving = tokio::spawn(connection);
        let path = PathAndQuery::try_from(path).map_err(|e| e.to_string())?;
        let request = http::Request::get(path.as_str())
            .header(http::header::HOST, endpoint.authority.as_str())
            .header(http::header::USER_AGENT, "pipeline-gateway-health-check")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        drop(sender);
        driving.abort();
        Ok(status)
    }
}

/// The kind of the first I/O error in `error`'s chain.
fn find_io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = cause.source();
    }
    None
}
