//! The admin listener (`[admin] listen`): `/livez` (the process answers), `/readyz` (the
//! gateway can serve: every readiness check passes, e.g. a JWKS was loaded) and `/metrics`
//! (Prometheus text format). Kept off the client-facing port so neither auth nor rate limits
//! apply and clients cannot reach it. It shares the client listener's accept loop (errors
//! logged and backed off from), has the same header read timeout, and drains on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::{accept_loop, drain, Current};
use crate::body::{self, Body};
use crate::telemetry::Metrics;

/// Time an admin client gets to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open admin connections get to finish on shutdown.
const GRACE: Duration = Duration::from_secs(5);

fn text(status: StatusCode, content: String) -> Response<Body> {
    let mut response = Response::new(body::full(content));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn answer(current: &Current, metrics: &Metrics, path: &str) -> Response<Body> {
    match path {
        "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match current.load().runtime.authenticator.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(failures) => text(StatusCode::SERVICE_UNAVAILABLE, failures + "\n"),
        },
        "/metrics" => text(StatusCode::OK, metrics.encode()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Serves the admin endpoints until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    current: Current,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    accept_loop(&listener, "admin", shutdown, |stream, _peer| {
        let current = current.clone();
        let metrics = metrics.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(answer(
                &current,
                &metrics,
                request.uri().path(),
            )))
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _ = connection.await;
        });
    })
    .await;
    drop(listener);
    drain(graceful, GRACE, "admin").await;
}
