//! The stand-in pipeline manager: an in-memory imitation of Feldera's pipeline manager that the
//! gateway's demo, tests and benchmarks put behind the gateway. A crate of its own: the
//! gateway's library never imports it (only its binary, for `demo` and `stand-in`, and its
//! tests do), and it imports nothing of the gateway.
//!
//! It owns the listener, the connections, the test hooks (recorded requests, faults, ingested
//! byte count) and the options; [`state`] owns the pipelines, their lifecycle and the API
//! keys, [`handlers`] the HTTP surface, [`compress`] the manager's response compression,
//! [`console`] the web console, [`cli`] the `stand-in` command line.
//!
//! Where it implements a request the real manager answers, it answers the same: status,
//! headers that matter, error bodies byte for byte and pipeline objects field for field in the
//! manager's order. `tests/capture_replay.rs` replays both captures of the open-source
//! manager 0.337.0 (`captured/manager-oss-0.337.json`, 23 exchanges, and
//! `manager-oss-0.337-more.json`, 81) in order against a stand-in set up as that build
//! ([`Edition::Oss`], [`Compiler::Absent`], no compression, no console) and every exchange
//! matches. The defaults play an Enterprise manager whose programs compile, with compression
//! and the console on. It implements only the part of the API the gateway exercises (see
//! [`handlers`]).
//!
//! Edge cases:
//! - Faults ([`Standin::set_fault`]) match the raw request path by prefix; the most recently set
//!   matching fault wins. They are a test hook only and cannot be set over HTTP. A `Respond`
//!   fault is sent exactly as given (plus `x-standin-instance`); nothing else is added.
//! - Every other response carries `x-standin-instance`, and every 503 `Retry-After: 5`.
//! - Every `GET`/`HEAD` outside `/v0` and the manager's public routes answers the stand-in's
//!   own web console ([`console`]; a page and a script that list the pipelines and open a
//!   query WebSocket), unless [`StandinOptions::web_console`] is off.
//! - Answers are compressed by the client's `Accept-Encoding` exactly as the manager's actix
//!   `Compress` middleware does ([`compress`]; errors included, streams never), unless
//!   [`StandinOptions::compression`] is off. Faults are never compressed.
//! - Shutdown (or dropping the [`Standin`]) stops accepting and closes every open connection,
//!   endless egress streams and upgraded WebSockets included.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use feldera_standin::{SeedPipeline, SeedStatus, Standin, StandinOptions};
//! let opts = StandinOptions {
//!     seed: vec![SeedPipeline { name: "orders".into(), status: SeedStatus::Standby }],
//!     ..StandinOptions::default()
//! };
//! let standin = Standin::bind("127.0.0.1:0".parse().unwrap(), opts).await?;
//! println!("manager at {}", standin.url());
//! standin.shutdown().await;
//! # Ok(()) }
//! ```

mod body;
pub mod cli;
mod compress;
mod console;
mod handlers;
mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use state::{Compiler, SeedPipeline, SeedStatus};

/// How many requests [`Standin::requests`] remembers.
const RECORDED_REQUESTS: usize = 1000;

/// Which build of the manager the stand-in plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Edition {
    /// The open-source build (`edition: "Open source"`): `activate` (for any name, even an
    /// unknown or invalid one, once its query string parses) and `stop` without
    /// `force=true` answer 501 `EnterpriseFeature`, as captured.
    Oss,
    /// The Enterprise build (`edition: "Enterprise"`): activate works (the demo activates
    /// standby pipelines) and a stop without `force=true` suspends, which the stand-in models
    /// as a stop.
    #[default]
    Enterprise,
}

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct StandinOptions {
    /// Pipelines present at start.
    pub seed: Vec<SeedPipeline>,
    /// How long each transitional status (`Provisioning`, `Initializing`, `Stopping`) lasts.
    pub lifecycle_delay: Duration,
    /// Also answer unknown-pipeline 404s with an empty body (unknown `/v0` paths always get one).
    pub non_json_errors: bool,
    /// When set, every non-public request needs `Authorization: Bearer <key>`.
    pub require_api_key: Option<String>,
    /// Sent back as `x-standin-instance` on every response.
    pub instance: String,
    /// Size of each chunk of the endless egress stream.
    pub egress_chunk_bytes: usize,
    /// Pause between egress chunks (zero: as fast as the reader takes them).
    pub egress_interval: Duration,
    /// Compress answers by the client's `Accept-Encoding` like the manager's actix `Compress`
    /// middleware (see the `compress` module); streams stay identity. On by default, like the
    /// real manager; off, every answer is identity whatever the client accepts.
    pub compression: bool,
    /// What compiling a program ends in: `Success` (default) or, like the captured manager
    /// that has no SQL compiler, `SystemError`.
    pub compiler: Compiler,
    /// The manager build played; Enterprise by default.
    pub edition: Edition,
    /// Serve the stand-in's web console (see the `console` module) on `GET`/`HEAD` outside
    /// `/v0`, like a manager built with its console; off, those paths answer `Not found`
    /// like the captured manager, which was built without one. On by default.
    pub web_console: bool,
    /// What `GET /config/authentication` answers (the identity provider the console logs
    /// into, e.g. `{"generic_oidc": {"issuer": .., "client_id": ..}}`); `None` answers `{}`,
    /// like a manager with authentication off.
    pub console_authentication: Option<serde_json::Value>,
}

impl Default for StandinOptions {
    fn default() -> Self {
        StandinOptions {
            seed: Vec::new(),
            lifecycle_delay: Duration::from_millis(200),
            non_json_errors: false,
            require_api_key: None,
            instance: "standin".to_owned(),
            egress_chunk_bytes: 4096,
            egress_interval: Duration::ZERO,
            compression: true,
            compiler: Compiler::Succeeds,
            edition: Edition::Enterprise,
            web_console: true,
            console_authentication: None,
        }
    }
}

/// A request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: http::Method,
    /// Path and query as received.
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

/// A misbehaviour injected for requests whose path starts with a given prefix.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// Answer this instead of handling the request.
    Respond {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// Close the connection without answering.
    Reset,
}

/// What every connection shares: options, pipelines and the test hooks.
struct Shared {
    opts: StandinOptions,
    instance: HeaderValue,
    started_at: SystemTime,
    pipelines: Mutex<state::Pipelines>,
    api_keys: Mutex<state::ApiKeys>,
    requests: Mutex<VecDeque<RecordedRequest>>,
    faults: Mutex<Vec<(String, Fault)>>,
    ingested: AtomicU64,
    /// Flips to `true` at shutdown; upgraded connections watch it.
    closed: watch::Sender<bool>,
}

/// Locks `mutex`, ignoring poisoning: every critical section leaves its data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(opts: StandinOptions) -> Shared {
        let instance = HeaderValue::from_str(&opts.instance)
            .unwrap_or_else(|_| HeaderValue::from_static("standin"));
        Shared {
            instance,
            started_at: SystemTime::now(),
            pipelines: Mutex::new(state::Pipelines::seeded(&opts.seed, opts.compiler)),
            api_keys: Mutex::new(state::ApiKeys::default()),
            requests: Mutex::new(VecDeque::new()),
            faults: Mutex::new(Vec::new()),
            ingested: AtomicU64::new(0),
            closed: watch::Sender::new(false),
            opts,
        }
    }

    fn record<B>(&self, req: &http::Request<B>) {
        let mut requests = lock(&self.requests);
        if requests.len() == RECORDED_REQUESTS {
            requests.pop_front();
        }
        requests.push_back(RecordedRequest {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        });
    }

    fn fault_for(&self, path: &str) -> Option<Fault> {
        lock(&self.faults)
            .iter()
            .rev()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, fault)| fault.clone())
    }
}

/// A running stand-in. Dropping it shuts it down too, without waiting.
pub struct Standin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Standin {
    /// Binds `addr` (port 0 allowed) and serves in a background tokio task.
    pub async fn bind(addr: SocketAddr, opts: StandinOptions) -> std::io::Result<Standin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_shared(listener, Arc::clone(&shared), async move {
            let _ = stopped.await;
        }));
        Ok(Standin {
            addr,
            shared,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, with `127.0.0.1` for an unspecified bind address.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The last (at most 1000) requests received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Total bytes consumed by all ingress requests so far.
    pub fn ingested_bytes(&self) -> u64 {
        self.shared.ingested.load(Ordering::Relaxed)
    }

    /// Injects `fault` for every request whose path starts with `path_prefix`.
    pub fn set_fault(&self, path_prefix: &str, fault: Fault) {
        lock(&self.shared.faults).push((path_prefix.to_owned(), fault));
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Stops accepting, closes every connection and waits for the server task to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves the stand-in on `listener` until `shutdown` completes, then closes every connection.
pub async fn serve(
    listener: TcpListener,
    opts: StandinOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_shared(listener, Arc::new(Shared::new(opts)), shutdown).await;
}

async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "stand-in: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    shared.closed.send_replace(true);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handlers::handle(Arc::clone(&shared), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %error, "stand-in: connection ended with an error");
    }
}
