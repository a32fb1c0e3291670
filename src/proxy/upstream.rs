//! One upstream (a pipeline manager) and its replicas ([`Upstream`]): endpoint choice,
//! passive health, and the pooled HTTP client toward it.
//!
//! Endpoints are chosen round robin. An endpoint that refuses or times out a connection is
//! skipped for `unhealthy_cooldown`; when every endpoint is skipped the pool answers 503
//! `NoHealthyUpstream` with `Retry-After` set to the shortest remaining cooldown, instead of
//! waiting on connections known to fail. Keep-alive connections are pooled per endpoint and
//! closed after `pool_idle_timeout` (the client has its own timer for that).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::HeaderValue;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::clock::Clock;
use crate::config::{CredentialsMode, Problems, UpstreamConfig};
use crate::errors::GatewayError;

/// The client type toward upstreams (plain HTTP or HTTPS).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// One replica of the upstream.
#[derive(Debug)]
pub struct EndpointState {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Milliseconds since the pool's epoch until which the endpoint is skipped; 0 = healthy.
    down_until_ms: AtomicU64,
}

/// An upstream: its name, replicas, client and per-upstream settings.
pub struct Upstream {
    pub name: Arc<str>,
    pub request_timeout: Duration,
    pub credentials: CredentialsMode,
    /// `Bearer <key>` for `credentials = "replace"`, read from the environment at start.
    pub replacement_authorization: Option<HeaderValue>,
    endpoints: Vec<EndpointState>,
    next: AtomicUsize,
    cooldown: Duration,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    client: UpstreamClient,
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
    ) -> Result<Upstream, Problems> {
        let mut problems = Problems::default();
        let endpoints = config
            .endpoints
            .iter()
            .map(|url| EndpointState {
                scheme: url.scheme.clone(),
                authority: url.authority.clone(),
                down_until_ms: AtomicU64::new(0),
            })
            .collect();
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
        let epoch = clock.instant();
        problems.into_result(Upstream {
            name: config.name.as_str().into(),
            request_timeout: config.request_timeout,
            credentials: config.credentials,
            replacement_authorization,
            endpoints,
            next: AtomicUsize::new(0),
            cooldown: config.unhealthy_cooldown,
            clock,
            epoch,
            client: build_client(config),
        })
    }

    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 always means "healthy".
        let elapsed = self.clock.instant().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// The next endpoint to try, skipping those in cooldown and those in `tried`
    /// (a bitmask of endpoint indexes, for retries).
    pub fn choose(&self, tried: u64) -> Result<(usize, &EndpointState), GatewayError> {
        let n = self.endpoints.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let now = self.now_ms();
        let mut soonest = u64::MAX;
        for offset in 0..n {
            let index = (start + offset) % n;
            if index < 64 && tried & (1 << index) != 0 {
                continue;
            }
            let endpoint = &self.endpoints[index];
            let down_until = endpoint.down_until_ms.load(Ordering::Relaxed);
            if down_until <= now {
                return Ok((index, endpoint));
            }
            soonest = soonest.min(down_until - now);
        }
        let retry_after_s = if soonest == u64::MAX {
            self.cooldown.as_secs().max(1)
        } else {
            soonest.div_ceil(1000).max(1)
        };
        Err(GatewayError::no_healthy_upstream(&self.name, retry_after_s))
    }

    /// Records that `index` failed to connect: skip it for the cooldown.
    pub fn mark_down(&self, index: usize) {
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        self.endpoints[index]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    /// Records that `index` answered: it is healthy again.
    pub fn mark_up(&self, index: usize) {
        let state = &self.endpoints[index].down_until_ms;
        if state.load(Ordering::Relaxed) != 0 {
            state.store(0, Ordering::Relaxed);
        }
    }
}

fn build_client(config: &UpstreamConfig) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_endpoint)
        .build(crate::outbound::https_connector(config.connect_timeout))
}
