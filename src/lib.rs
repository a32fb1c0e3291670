//! pipeline-gateway: an edge gateway for Feldera pipeline managers.
//!
//! [`Gateway::start`] is the one entry point the binary and the tests share: it builds every
//! runtime part from a checked [`config::Config`], binds the listeners and serves until
//! [`Gateway::shutdown`] (or the binary's signal handler) asks it to drain. The request path
//! itself is laid out in [`stack`].

pub mod auth;
pub mod body;
pub mod check;
pub mod config;
pub mod errors;
pub mod limits;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::proxy::UpstreamPool;
use crate::routing::{RouteTable, SelectUpstream};
use crate::telemetry::Metrics;

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    authenticator: Arc<Authenticator>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds `server.listen` (and `admin.listen`) and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        Gateway::start_on(listener, config).await
    }

    /// Starts serving on an already bound listener.
    pub async fn start_on(listener: TcpListener, config: Config) -> anyhow::Result<Gateway> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let problems = config.check();
        if !problems.is_empty() {
            return Err(config::ConfigError::Invalid(problems).into());
        }
        let mut metrics = Metrics::new();
        let rate_limits = match &config.rate_limit {
            Some(rate_limit) => Some(Arc::new(ratelimit::RateLimits::build(
                rate_limit,
                ratelimit::LimiterClock::monotonic(),
                Some(metrics.registry_mut()),
            )?)),
            None => None,
        };
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| UpstreamPool::new(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!(e))?;
        let table =
            RouteTable::build(&config).map_err(|p| config::ConfigError::Invalid(p.into_vec()))?;
        // Auth registers its counters (signature verifications, failures) before the registry
        // is shared.
        let authenticator = Arc::new(
            Authenticator::new(&config.auth, metrics.registry_mut()).map_err(anyhow::Error::msg)?,
        );
        let metrics = Arc::new(metrics);
        let service = stack::build(stack::StackParts {
            server: config.server.clone(),
            metrics: metrics.clone(),
            authenticator: authenticator.clone(),
            select_upstream: SelectUpstream::new(table, upstreams),
            rate_limits: rate_limits.clone(),
        });

        let (shutdown, signal) = watch::channel(false);
        let wait_for = |mut signal: watch::Receiver<bool>| async move {
            let _ = signal.wait_for(|stop| *stop).await;
        };
        let local_addr = listener.local_addr()?;
        let mut tasks = Vec::new();
        let mut admin_addr = None;
        if let Some(admin) = &config.admin {
            let admin_listener = TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?;
            admin_addr = Some(admin_listener.local_addr()?);
            let auth_ready = authenticator.clone();
            let checks: Vec<server::admin::ReadinessCheck> =
                vec![Arc::new(move || auth_ready.readiness())];
            tasks.push(tokio::spawn(server::admin::serve(
                admin_listener,
                metrics.clone(),
                checks,
                wait_for(signal.clone()),
            )));
        }
        if let Some(rate_limits) = rate_limits {
            // Sweeps idle rate-limit keys until shutdown.
            tasks.push(tokio::spawn(
                rate_limits.run_sweeper(wait_for(signal.clone())),
            ));
        }
        // Key-set refreshes and API-key file reloads, until shutdown.
        tasks.push(tokio::spawn(
            authenticator
                .clone()
                .run_background(wait_for(signal.clone())),
        ));
        tasks.push(tokio::spawn(server::serve(
            listener,
            service,
            config.server.clone(),
            wait_for(signal),
        )));
        tracing::info!(%local_addr, "pipeline-gateway listening");
        Ok(Gateway {
            local_addr,
            admin_addr,
            authenticator,
            shutdown,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` of the client-facing listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The authenticator (signature-verification counter, readiness), for tests.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting and starts draining; returns at once.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the gateway has drained (after [`Gateway::begin_shutdown`]).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Drains and waits.
    pub async fn shutdown(self) {
        self.begin_shutdown();
        self.wait().await;
    }
}
