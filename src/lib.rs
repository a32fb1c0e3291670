//! pipeline-gateway: an edge gateway for Feldera pipeline managers.
//!
//! [`Gateway::start`] is the one entry point the binary and the tests share: it builds the
//! runtime from a checked [`config::Config`], binds the listeners and serves until
//! [`Gateway::shutdown`] (or the binary's signal handler) asks it to drain. The request path
//! itself is laid out in [`stack`].
//!
//! Floors (a module imports only from floors below it; see the README's layout section):
//!
//! 1. `body`, `errors`, `catalog`, `principal`, `context`, `clock`, `check`, `wire` — the
//!    vocabulary
//! 2. `config` — plain data and its checks
//! 3. `validate`, `routing`, `auth`, `ratelimit`, `proxy`, `limits`, `telemetry`, `outbound`,
//!    `cors`, `console`
//! 4. `runtime` — everything of floor 3, built from one configuration
//! 5. `stack`, `server` — the request path and the listeners over a runtime
//! 6. this file — the gateway

pub mod auth;
pub mod body;
pub mod catalog;
pub mod check;
pub mod clock;
pub mod config;
pub mod console;
pub mod context;
pub mod cors;
pub mod errors;
pub mod limits;
pub mod outbound;
pub mod principal;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod validate;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::runtime::{stopped, Process, Runtime};
use crate::server::Current;

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    current: Current,
    process: Arc<Process>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds `server.listen` (and `admin.listen`) and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        let listener = server::bind(config.server.listen)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        Gateway::start_on(listener, config).await
    }

    /// Starts serving on an already bound listener.
    pub async fn start_on(listener: TcpListener, config: Config) -> anyhow::Result<Gateway> {
        Gateway::start_with(listener, config, Process::new()).await
    }

    /// Starts serving with the given process-wide parts (a fake clock in tests).
    pub async fn start_with(
        listener: TcpListener,
        config: Config,
        process: Process,
    ) -> anyhow::Result<Gateway> {
        let process = Arc::new(process);
        let runtime =
            Arc::new(Runtime::build(config, &process).map_err(config::ConfigError::from)?);
        let snapshot = stack::build(runtime.clone(), process.metrics.clone());
        let current: Current = Arc::new(ArcSwap::from_pointee(snapshot));

        let (shutdown, signal) = watch::channel(false);
        let local_addr = listener.local_addr()?;
        let mut tasks = Vec::new();
        let mut admin_addr = None;
        if let Some(admin) = &runtime.config.admin {
            let admin_listener = server::bind(admin.listen)
                .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?;
            admin_addr = Some(admin_listener.local_addr()?);
            tasks.push(tokio::spawn(server::admin::serve(
                admin_listener,
                current.clone(),
                process.metrics.clone(),
                stopped(signal.clone()),
            )));
        }
        // Key-set refreshes, API-key file reloads and the rate limiter's sweeper.
        tasks.push(tokio::spawn(runtime.run_background(signal.clone())));
        tasks.push(tokio::spawn(server::serve(
            listener,
            current.clone(),
            stopped(signal),
        )));
        tracing::info!(%local_addr, "pipeline-gateway listening");
        Ok(Gateway {
            local_addr,
            admin_addr,
            current,
            process,
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

    /// The current runtime's authenticator (signature-verification counter, readiness).
    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.current.load().runtime.authenticator.clone()
    }

    /// The current runtime.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load().runtime.clone()
    }

    /// The process-wide parts (metrics, clock).
    pub fn process(&self) -> &Arc<Process> {
        &self.process
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

/// Loads a configuration file and builds its runtime without serving it: every problem of
/// the file and of what it names (key files, secrets, environment variables). What
/// `check-config` runs; the server runs the same two steps.
pub fn check_config(path: &std::path::Path) -> Result<Config, config::ConfigError> {
    let config = Config::load(path)?;
    Runtime::build(config.clone(), &Process::new())?;
    Ok(config)
}
