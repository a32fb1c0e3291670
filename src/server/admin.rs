//! The admin listener (`[admin] listen`): `/livez` (the process answers), `/readyz` (the
//! gateway can serve: every readiness check passes, e.g. a JWKS was loaded) and `/metrics`
//! (Prometheus text format). Kept off the client-facing port so neither auth nor rate limits
//! apply and clients cannot reach it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::telemetry::Metrics;

/// A readiness check: `Err(reason)` while the gateway cannot serve.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

fn text(status: StatusCode, content: String) -> Response<Body> {
    let mut response = Response::new(body::full(content));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the admin endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    checks: Vec<ReadinessCheck>,
    shutdown: impl Future<Output = ()>,
) {
    let checks = Arc::new(checks);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let metrics = metrics.clone();
        let checks = checks.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let response = match request.uri().path() {
                "/livez" => text(StatusCode::OK, "ok\n".into()),
                "/readyz" => {
                    let failures: Vec<String> =
                        checks.iter().filter_map(|check| check().err()).collect();
                    if failures.is_empty() {
                        text(StatusCode::OK, "ready\n".into())
                    } else {
                        text(StatusCode::SERVICE_UNAVAILABLE, failures.join("\n") + "\n")
                    }
                }
                "/metrics" => text(StatusCode::OK, metrics.encode()),
                _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
            };
            std::future::ready(Ok::<_, Infallible>(response))
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
