//! Listeners: the client-facing server (HTTP/1.1 and cleartext HTTP/2 on one port), the admin
//! listener, and graceful shutdown.
//!
//! hyper's own limits are set well above the gateway's (`limits`), so that oversized request
//! targets and headers are answered by the gateway in JSON rather than by hyper with an empty
//! body; only requests beyond even those (or with more than [`MAX_HEADERS`] header lines)
//! get hyper's bare answer. `header_read_timeout` works because the connection has a timer.
//!
//! Shutdown: on the signal the listener closes at once, idle keep-alive connections are
//! closed, and in-flight requests get `shutdown_grace` to finish; whatever is still open then
//! (endless streams) is dropped.

pub mod admin;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::Service as _;

use crate::body::{self, ResponseFuture};
use crate::config::ServerConfig;
use crate::stack::GatewayService;

/// Request extension: the TCP peer of the connection, and its IP as a header value (made
/// once per connection, for `X-Forwarded-For`).
#[derive(Debug, Clone)]
pub struct ClientAddr {
    pub addr: SocketAddr,
    pub ip_header: http::HeaderValue,
}

impl ClientAddr {
    pub fn new(addr: SocketAddr) -> ClientAddr {
        let ip_header = http::HeaderValue::try_from(addr.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown"));
        ClientAddr { addr, ip_header }
    }
}

/// Most header lines hyper accepts in one request.
pub const MAX_HEADERS: usize = 512;

/// hyper's view of the stack: boxes the body and records the peer.
///
/// `call` without `poll_ready` is sound here: every layer of the stack is always ready (none
/// buffers or limits concurrency through readiness).
struct Adapter {
    service: GatewayService,
    peer: ClientAddr,
}

impl hyper::service::Service<http::Request<Incoming>> for Adapter {
    type Response = body::Response;
    type Error = std::convert::Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: http::Request<Incoming>) -> ResponseFuture {
        let mut request = request.map(body::boxed);
        request.extensions_mut().insert(self.peer.clone());
        self.service.clone().call(request)
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
        .max_header_list_size((4 * (settings.max_header_bytes + settings.max_uri_bytes)) as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Serves `service` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    service: GatewayService,
    settings: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder(&settings);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let hyper_service = Adapter {
            service: service.clone(),
            peer: ClientAddr::new(peer),
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down: draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("shutdown grace expired; closing the remaining connections")
        }
    }
}
