//! Listeners: the client-facing server (HTTP/1.1 and HTTP/2 on one port, in clear text or,
//! with `[server.tls]`, over TLS with ALPN: [`tls`]), the admin listener, and graceful
//! shutdown.
//!
//! Every request is served by the snapshot current when it arrives ([`Current`]): a request
//! runs entirely on the configuration it started with, and a keep-alive connection takes the
//! new one from its next request. The server makes the request's context (with the
//! connection's facts) and drives the stack with `oneshot`, honouring tower's readiness.
//!
//! hyper's own limits are set well above the gateway's (`limits`), so that oversized request
//! targets and headers are answered by the gateway in JSON rather than by hyper with an empty
//! body; only requests beyond even those (or with more than [`MAX_HEADERS`] header lines)
//! get hyper's bare answer. `header_read_timeout` works because the connection has a timer.
//! A connection's own limits — how many may be open, idle and write-idle timeouts, HTTP/2's
//! stream, frame and reset limits — are [`conn`]'s: it wraps each accepted socket.
//!
//! Listening sockets are bound with `SO_REUSEADDR` and `SO_REUSEPORT`, so several gateway
//! processes (or per-core runtimes) can share one port, the kernel balancing connections.
//!
//! Shutdown: on the signal the listener closes at once, idle keep-alive connections are
//! closed, and in-flight requests get `shutdown_grace` to finish; whatever is still open then
//! (endless streams) is dropped.

pub mod admin;
pub mod conn;
pub mod redirect;
pub mod status_page;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower::util::Oneshot;
use tower::ServiceExt as _;

use crate::body;
use crate::config::ServerConfig;
use crate::context::{Connection, RequestContext};
use crate::stack::{GatewayService, Snapshot};
use crate::telemetry::metrics::GaugeGuard;
use crate::telemetry::Protocol;

/// The snapshot serving new requests; swapped whole on reload.
pub type Current = Arc<ArcSwap<Snapshot>>;

/// Most header lines hyper accepts in one request.
pub const MAX_HEADERS: usize = 512;

/// Binds `addr` for listening, with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// hyper's view of the stack: boxes the body, makes the request's context, and drives the
/// current snapshot's service.
struct Adapter {
    current: Current,
    connection: Arc<Connection>,
    /// Counts the connection in `connections_open{protocol}` from its first request (when
    /// its protocol is known) until it closes (when hyper drops this service).
    counted: OnceLock<GaugeGuard>,
    activity: Arc<conn::Activity>,
}

impl hyper::service::Service<http::Request<Incoming>> for Adapter {
    type Response = http::Response<conn::WatchedBody>;
    type Error = std::convert::Infallible;
    type Future = conn::Tracked<Oneshot<GatewayService, body::Request>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let snapshot = self.current.load();
        if self.counted.get().is_none() {
            let protocol = if request.version() == http::Version::HTTP_2 {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            let _ = self.counted.set(snapshot.metrics.connection(protocol));
        }
        let mut request = request.map(body::boxed);
        request
            .extensions_mut()
            .insert(RequestContext::new(self.connection.clone()));
        conn::Tracked::new(&self.activity, snapshot.service.clone().oneshot(request))
    }
}

fn builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Room for the request line, the headers up to the gateway's limits, and some slack.
    let buffer = (2 * (settings.max_header_bytes + settings.max_uri_bytes) + 16 * 1024).max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(buffer)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    conn::http2_limits(&mut builder, settings);
    builder
}

/// Accepts connections until `shutdown` completes, handing each to `serve`. Errors (out of
/// file descriptors and the like) are logged and backed off from, never spun on.
pub async fn accept_loop(
    listener: &TcpListener,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, listener = what, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        serve(stream, peer);
    }
}

/// Waits for `graceful` to drain, at most `grace`.
pub async fn drain(graceful: GracefulShutdown, grace: Duration, what: &'static str) {
    tracing::info!(
        ?grace,
        listener = what,
        "shutting down: draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(listener = what, "all connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(listener = what, "shutdown grace expired; closing the remaining connections")
        }
    }
}

/// Serves the current snapshot on `listener` until `shutdown` completes, then drains.
pub async fn serve(listener: TcpListener, current: Current, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let refusing = Arc::new(tokio::sync::Semaphore::new(conn::MAX_REFUSING));
    accept_loop(&listener, "client", shutdown, |stream, peer| {
        let _ = stream.set_nodelay(true);
        // Connection-level settings come from the snapshot current when it is accepted.
        let snapshot = current.load();
        let settings = &snapshot.runtime.config.server;
        let metrics = snapshot.runtime.connections.clone();
        let Some(slot) = metrics.admit(settings.max_connections) else {
            if snapshot.runtime.tls.is_some() {
                // Nothing readable can be said before a handshake: closed (and counted).
                tracing::debug!(%peer, "over server.max_connections: closed");
                return;
            }
            conn::refuse(
                stream,
                builder(settings),
                settings.max_connections,
                &refusing,
            );
            return;
        };
        let activity = conn::Activity::new();
        if let Some(terminator) = snapshot.runtime.tls.clone() {
            // The handshake runs on the connection's own task, under its timeout.
            let watcher = graceful.watcher();
            let current = current.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let Some((stream, connection)) = tls::accept(stream, peer, &terminator).await
                else {
                    return;
                };
                let hyper_service = Adapter {
                    current,
                    connection,
                    counted: OnceLock::new(),
                    activity: activity.clone(),
                };
                let stream = conn::Watched::new(stream, activity, &settings, metrics);
                let connection = builder(&settings)
                    .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
                    .into_owned();
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
            });
            return;
        }
        let hyper_service = Adapter {
            current: current.clone(),
            connection: Arc::new(Connection::plain(peer)),
            counted: OnceLock::new(),
            activity: activity.clone(),
        };
        let stream = conn::Watched::new(stream, activity, settings, metrics);
        let connection = builder(settings)
            .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    })
    .await;
    drop(listener);
    let grace = current.load().runtime.config.server.shutdown_grace;
    drain(graceful, grace, "client").await;
}
