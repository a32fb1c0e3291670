//! The running gateway: its listeners, the current snapshot, and reloads.
//!
//! [`Gateway::start`] builds the runtime from a checked configuration and serves it. A reload
//! — [`Gateway::reload`] with a configuration, or [`Gateway::reload_file`] from the file it
//! was started with (what `SIGHUP`, `POST /reload` on the admin listener and
//! `server.watch_config` do) — builds the new runtime next to the running one, reusing what
//! did not change (upstream pools, rate-limit budgets, the Redis connection, key sets of
//! unchanged issuers, the token cache and API keys while still valid), and swaps the
//! snapshot atomically:
//!
//! - A request runs entirely on the snapshot it started with; in-flight requests, open
//!   streams and WebSockets are untouched; a keep-alive connection takes the new snapshot
//!   from its next request.
//! - A configuration that fails (parse, check, or building: unreadable key files, …) changes
//!   nothing: the old one stays, the problems are logged and returned (every one, with its
//!   key path), and `pipeline_gateway_config_reloads_total{result="failed"}` counts it.
//! - A changed `server.listen` (or `admin.listen`) binds the new address first — failing the
//!   reload if it cannot — then drains the old listener's connections within
//!   `shutdown_grace`.
//! - The old runtime's background work (key-set refreshes, the limiter's sweeper) stops; the
//!   new runtime's starts.
//!
//! Reloads are serialized: one at a time, in the order asked.
//!
//! With per-core runtimes ([`Gateway::start_per_core`], `--workers N`), every worker serves
//! the same current snapshot on its own `SO_REUSEPORT` listener (see [`crate::workers`]); a
//! changed `server.listen` rebinds it on every worker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, Problems};
use crate::runtime::{stopped, Process, Runtime};
use crate::server::admin::{ReloadReport, ReloadRequest};
use crate::server::{self, Current};
use crate::stack;
use crate::workers::Workers;

/// A listener being served, and how to stop it.
struct Serving {
    /// The address the configuration asked for (`None`: a listener handed in by the caller).
    configured: Option<SocketAddr>,
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Stops accepting and drains; returns the task to wait for.
    fn retire(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

/// What a reload replaces.
struct Live {
    runtime_stop: watch::Sender<bool>,
    client: Serving,
    admin: Option<Serving>,
    /// Listeners being drained after an address change.
    retired: Vec<JoinHandle<()>>,
}

/// The listeners' addresses, readable without waiting for a reload.
#[derive(Debug, Clone, Copy)]
struct Addresses {
    client: SocketAddr,
    admin: Option<SocketAddr>,
}

struct Shared {
    current: Current,
    process: Arc<Process>,
    addresses: ArcSwap<Addresses>,
    config_path: Option<PathBuf>,
    /// `[[server.redirect]]` listeners (bound at start, kept across reloads).
    redirects: Vec<SocketAddr>,
    live: Mutex<Live>,
    reloads: mpsc::Sender<ReloadRequest>,
    /// The gateway's shutdown: every listener and runtime stops on it too.
    shutdown: watch::Receiver<bool>,
    /// The extra per-core runtimes that serve the client listener too (usually none).
    workers: Workers,
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Completes when `own` or `gateway` turns true.
async fn stopped_either(own: watch::Receiver<bool>, gateway: watch::Receiver<bool>) {
    tokio::select! {
        () = stopped(own) => {}
        () = stopped(gateway) => {}
    }
}

/// The client listener of the caller's runtime, and one more for every extra worker, bound to
/// the same address (`SO_REUSEPORT`).
struct ClientListeners {
    own: TcpListener,
    workers: Vec<(tokio::runtime::Handle, TcpListener)>,
}

/// Binds a listener on every extra worker next to `own` (all of them before anything
/// serves, so that a failure starts nothing).
fn bind_workers(own: TcpListener, workers: &Workers) -> std::io::Result<ClientListeners> {
    let local = own.local_addr()?;
    let mut others = Vec::with_capacity(workers.handles().len());
    for handle in workers.handles() {
        // A listener registers with the runtime it is made in: the worker's own.
        let _entered = handle.enter();
        others.push((handle.clone(), server::bind(local)?));
    }
    Ok(ClientListeners {
        own,
        workers: others,
    })
}

/// Serves the client listeners, each on its own runtime.
fn serve_client(
    listeners: ClientListeners,
    current: Current,
    configured: Option<SocketAddr>,
    shutdown: watch::Receiver<bool>,
) -> Serving {
    let local = listeners
        .own
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, signal) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(server::serve(
        listeners.own,
        current.clone(),
        stopped_either(signal.clone(), shutdown.clone()),
    ))];
    for (handle, listener) in listeners.workers {
        tasks.push(handle.spawn(server::serve(
            listener,
            current.clone(),
            stopped_either(signal.clone(), shutdown.clone()),
        )));
    }
    let task = if tasks.len() == 1 {
        tasks.remove(0)
    } else {
        tokio::spawn(async move {
            futures_util::future::join_all(tasks).await;
        })
    };
    Serving {
        configured,
        local,
        stop,
        task,
    }
}

fn serve_admin(
    listener: TcpListener,
    shared_current: Current,
    process: &Process,
    reloads: mpsc::Sender<ReloadRequest>,
    configured: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Serving {
    let local = listener.local_addr().unwrap_or(configured);
    let (stop, signal) = watch::channel(false);
    let task = tokio::spawn(server::admin::serve(
        listener,
        shared_current,
        process.metrics.clone(),
        reloads,
        stopped_either(signal, shutdown),
    ));
    Serving {
        configured: Some(configured),
        local,
        stop,
        task,
    }
}

impl Gateway {
    /// Binds `server.listen` (and `admin.listen`) and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        Gateway::start_from(config, None).await
    }

    /// Starts serving a configuration read from `path`; `reload_file` re-reads it.
    pub async fn start_from(config: Config, path: Option<PathBuf>) -> anyhow::Result<Gateway> {
        let listener = server::bind(config.server.listen)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let configured = config.server.listen;
        Gateway::launch(
            listener,
            Some(configured),
            config,
            Process::new(),
            path,
            Workers::none(),
        )
        .await
    }

    /// [`Gateway::start_from`] on per-core runtimes: the caller's runtime (which should be a
    /// current-thread one) and every one of `workers` accept on their own listener bound to
    /// `server.listen`; see [`crate::workers`].
    pub async fn start_per_core(
        config: Config,
        path: Option<PathBuf>,
        workers: Workers,
    ) -> anyhow::Result<Gateway> {
        let listener = server::bind(config.server.listen)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let configured = config.server.listen;
        Gateway::launch(
            listener,
            Some(configured),
            config,
            Process::new(),
            path,
            workers,
        )
        .await
    }

    /// Starts serving on an already bound listener (`server.listen` is then not bound).
    pub async fn start_on(listener: TcpListener, config: Config) -> anyhow::Result<Gateway> {
        Gateway::start_with(listener, config, Process::new()).await
    }

    /// Starts serving with the given process-wide parts (a fake clock in tests).
    pub async fn start_with(
        listener: TcpListener,
        config: Config,
        process: Process,
    ) -> anyhow::Result<Gateway> {
        Gateway::launch(listener, None, config, process, None, Workers::none()).await
    }

    async fn launch(
        listener: TcpListener,
        configured: Option<SocketAddr>,
        config: Config,
        process: Process,
        config_path: Option<PathBuf>,
        workers: Workers,
    ) -> anyhow::Result<Gateway> {
        let process = Arc::new(process);
        let runtime = Arc::new(Runtime::build(config, &process).map_err(ConfigError::from)?);
        process.reloads.loaded(runtime.loaded_at);
        process.set_live(&runtime);
        let current: Current = Arc::new(ArcSwap::from_pointee(stack::build(
            runtime.clone(),
            process.metrics.clone(),
        )));
        let (reloads, requests) = mpsc::channel(16);
        let (shutdown, signal) = watch::channel(false);
        let admin = match &runtime.config.admin {
            Some(admin) => {
                let listener = server::bind(admin.listen)
                    .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?;
                Some(serve_admin(
                    listener,
                    current.clone(),
                    &process,
                    reloads.clone(),
                    admin.listen,
                    signal.clone(),
                ))
            }
            None => None,
        };
        let (runtime_stop, runtime_signal) = watch::channel(false);
        tokio::spawn(
            runtime
                .clone()
                .run_background(runtime_signal, signal.clone()),
        );
        let listeners =
            bind_workers(listener, &workers).context("cannot listen on every worker")?;
        let client = serve_client(listeners, current.clone(), configured, signal.clone());
        tracing::info!(local_addr = %client.local, workers = workers.count(), "pipeline-gateway listening");
        let mut redirects = Vec::new();
        let mut redirect_tasks = Vec::new();
        for redirect in &runtime.config.server.redirect {
            let listener = server::bind(redirect.listen)
                .with_context(|| format!("cannot listen on {} (redirect)", redirect.listen))?;
            let local = listener.local_addr().unwrap_or(redirect.listen);
            let https_port = redirect.https_port.unwrap_or(client.local.port());
            tracing::info!(local_addr = %local, https_port, "redirecting to https");
            redirects.push(local);
            redirect_tasks.push(tokio::spawn(server::redirect::serve(
                listener,
                https_port,
                stopped(signal.clone()),
            )));
        }
        let addresses = ArcSwap::from_pointee(Addresses {
            client: client.local,
            admin: admin.as_ref().map(|a| a.local),
        });
        let shared = Arc::new(Shared {
            current,
            process,
            addresses,
            config_path,
            redirects,
            live: Mutex::new(Live {
                runtime_stop,
                client,
                admin,
                retired: Vec::new(),
            }),
            reloads,
            shutdown: signal.clone(),
            workers,
        });
        let mut tasks = vec![tokio::spawn(run_reloads(
            shared.clone(),
            requests,
            signal.clone(),
        ))];
        tasks.extend(redirect_tasks);
        if runtime.config.server.watch_config {
            if let Some(path) = shared.config_path.clone() {
                tasks.push(tokio::spawn(watch_file(shared.clone(), path, signal)));
            }
        }
        Ok(Gateway {
            shared,
            shutdown,
            tasks,
        })
    }

    /// The client-facing listener's address (the new one after a reload changed it).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addresses.load().client
    }

    /// `http://ADDR` of the client-facing listener (`https://ADDR` with `[server.tls]`).
    pub fn url(&self) -> String {
        let scheme = match self.shared.current.load().runtime.tls {
            Some(_) => "https",
            None => "http",
        };
        format!("{scheme}://{}", self.local_addr())
    }

    /// The `[[server.redirect]]` listeners' addresses, in configuration order.
    pub fn redirect_addrs(&self) -> &[SocketAddr] {
        &self.shared.redirects
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.addresses.load().admin
    }

    /// The current runtime's authenticator (signature-verification counter, readiness).
    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.shared.current.load().runtime.authenticator.clone()
    }

    /// The current runtime.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.current.load().runtime.clone()
    }

    /// The process-wide parts (metrics, clock).
    pub fn process(&self) -> &Arc<Process> {
        &self.shared.process
    }

    /// Reloads with `config` (already parsed and checked); `Err` lists every problem and
    /// leaves the running configuration in place.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, Problems> {
        reload(&self.shared, config).await
    }

    /// Reloads from the file the gateway was started with.
    pub async fn reload_file(&self) -> Result<ReloadReport, Problems> {
        reload_from_file(&self.shared).await
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
        let mut live = self.shared.live.lock().await;
        let _ = live.runtime_stop.send(true);
        let mut tasks: Vec<JoinHandle<()>> = live.retired.drain(..).collect();
        let client = std::mem::replace(&mut live.client, placeholder());
        tasks.push(client.retire());
        if let Some(admin) = live.admin.take() {
            tasks.push(admin.retire());
        }
        drop(live);
        for task in tasks {
            let _ = task.await;
        }
        self.shared.workers.stop().await;
    }

    /// Drains and waits.
    pub async fn shutdown(self) {
        self.begin_shutdown();
        self.wait().await;
    }
}

/// A listener slot with nothing in it (after shutdown took the real one).
fn placeholder() -> Serving {
    let (stop, _) = watch::channel(true);
    Serving {
        configured: None,
        local: SocketAddr::from(([0, 0, 0, 0], 0)),
        stop,
        task: tokio::spawn(async {}),
    }
}

/// Serves reload requests (admin, signals) one at a time until shutdown.
async fn run_reloads(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<ReloadRequest>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let request = tokio::select! {
            request = requests.recv() => request,
            () = stopped(shutdown.clone()) => None,
        };
        let Some(request) = request else { return };
        let outcome = reload_from_file(&shared).await;
        let _ = request.reply.send(outcome);
    }
}

/// Reloads when the configuration file's content changes (checked every second).
async fn watch_file(shared: Arc<Shared>, path: PathBuf, shutdown: watch::Receiver<bool>) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stopped(shutdown.clone()) => return,
        }
        let now = std::fs::read(&path).ok();
        if now.is_some() && now != last {
            last = now;
            tracing::info!(path = %path.display(), "configuration file changed: reloading");
            let _ = reload_from_file(&shared).await;
        }
    }
}

async fn reload_from_file(shared: &Arc<Shared>) -> Result<ReloadReport, Problems> {
    let Some(path) = &shared.config_path else {
        let mut problems = Problems::default();
        problems.push("", "the gateway was not started from a configuration file");
        return Err(problems);
    };
    match load(path) {
        Ok(config) => reload(shared, config).await,
        Err(problems) => {
            shared.process.reloads.record(false);
            log_failure(&problems);
            Err(problems)
        }
    }
}

/// Reads, parses and checks the file, with every problem as `Problems`.
fn load(path: &Path) -> Result<Config, Problems> {
    Config::load(path).map_err(|error| {
        let mut problems = Problems::default();
        match error {
            ConfigError::Invalid(list) => {
                for problem in list {
                    problems.push(problem.path, problem.message);
                }
            }
            ConfigError::Parse(problem) => problems.push(problem.path, problem.message),
            other => problems.push("", other.to_string()),
        }
        problems
    })
}

fn log_failure(problems: &Problems) {
    tracing::warn!(%problems, "configuration not reloaded; the running one stays");
}

async fn reload(shared: &Arc<Shared>, config: Config) -> Result<ReloadReport, Problems> {
    let mut live = shared.live.lock().await;
    let outcome = swap(shared, &mut live, config);
    match &outcome {
        Ok(report) => {
            shared.process.reloads.record(true);
            tracing::info!(hash = %report.hash, "configuration reloaded");
        }
        Err(problems) => {
            shared.process.reloads.record(false);
            log_failure(problems);
        }
    }
    outcome
}

fn swap(shared: &Arc<Shared>, live: &mut Live, config: Config) -> Result<ReloadReport, Problems> {
    let previous = shared.current.load().runtime.clone();
    let bind_problem = |at: &str, addr: SocketAddr, error: std::io::Error| {
        let mut problems = Problems::default();
        problems.push(at, format!("cannot listen on {addr}: {error}"));
        problems
    };
    // Bind new addresses before anything changes, so a failure changes nothing.
    let new_client = match live.client.configured {
        Some(old) if old != config.server.listen => Some(
            server::bind(config.server.listen)
                .and_then(|own| bind_workers(own, &shared.workers))
                .map_err(|e| bind_problem("server.listen", config.server.listen, e))?,
        ),
        _ => None,
    };
    let old_admin = live.admin.as_ref().and_then(|a| a.configured);
    let new_admin_addr = config.admin.as_ref().map(|a| a.listen);
    let new_admin = match new_admin_addr {
        Some(addr) if Some(addr) != old_admin => {
            Some(server::bind(addr).map_err(|e| bind_problem("admin.listen", addr, e))?)
        }
        _ => None,
    };
    let runtime = Arc::new(Runtime::build_reusing(
        config,
        &shared.process,
        Some(&previous),
    )?);
    if previous.config.tracing != runtime.config.tracing
        || previous.config.log.format != runtime.config.log.format
    {
        tracing::warn!(
            "[tracing] or [log] format changed: they take effect when the process restarts"
        );
    }
    let hash = runtime.config.hash();
    shared.current.store(Arc::new(stack::build(
        runtime.clone(),
        shared.process.metrics.clone(),
    )));
    shared.process.reloads.loaded(runtime.loaded_at);
    shared.process.set_live(&runtime);
    // The old runtime's background work stops; the new one's starts.
    let (stop, signal) = watch::channel(false);
    let _ = std::mem::replace(&mut live.runtime_stop, stop).send(true);
    tokio::spawn(
        runtime
            .clone()
            .run_background(signal, shared.shutdown.clone()),
    );
    if let Some(listeners) = new_client {
        let serving = serve_client(
            listeners,
            shared.current.clone(),
            Some(runtime.config.server.listen),
            shared.shutdown.clone(),
        );
        tracing::info!(local_addr = %serving.local, "now listening on the new address");
        let old = std::mem::replace(&mut live.client, serving);
        live.retired.push(old.retire());
    }
    if new_admin_addr != old_admin {
        if let Some(old) = live.admin.take() {
            live.retired.push(old.retire());
        }
        if let (Some(listener), Some(addr)) = (new_admin, new_admin_addr) {
            live.admin = Some(serve_admin(
                listener,
                shared.current.clone(),
                &shared.process,
                shared.reloads.clone(),
                addr,
                shared.shutdown.clone(),
            ));
        }
    }
    live.retired.retain(|task| !task.is_finished());
    shared.addresses.store(Arc::new(Addresses {
        client: live.client.local,
        admin: live.admin.as_ref().map(|a| a.local),
    }));
    Ok(ReloadReport {
        hash,
        loaded_at: runtime.loaded_at,
    })
}
