//! The admin listener (`[admin] listen`), never on the client port: neither auth nor rate
//! limits apply and clients cannot reach it.
//!
//! - `GET /`: the status page, one HTML page for people (`status_page`).
//! - `GET /livez`: the process answers.
//! - `GET /readyz`: the gateway can serve (every readiness check passes, e.g. a JWKS was
//!   loaded).
//! - `GET /metrics`: Prometheus text format.
//! - `GET /config`: the running configuration as JSON — secrets redacted (API key hashes,
//!   shared-secret sources, passwords in URLs) — with its hash and load time.
//! - `GET /upstreams`: every upstream's endpoints: availability, health, ejection, draining,
//!   open/idle/pending connections, last error.
//! - `POST /upstreams/{name}/endpoints/{i}/drain` (and `…/undrain`): stop (or resume) sending
//!   new requests to an endpoint, e.g. for a manager upgrade; open requests and streams go
//!   on. Draining lasts as long as the upstream's settings are unchanged (a reload that
//!   changes them starts fresh).
//! - `POST /reload`: reloads the configuration file; 200 `{"status":"reloaded","hash",…}`, or
//!   400 `InvalidConfiguration` in the error schema with every problem
//!   (`details.problems: [{"path","message"}]`) while the running configuration stays.
//!
//! It shares the client listener's accept loop (errors logged and backed off from), has a
//! header read timeout, and drains on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::{accept_loop, drain, status_page, Current};
use crate::body::{self, Body};
use crate::config::Problems;
use crate::errors::GatewayError;
use crate::telemetry::Metrics;

/// Time an admin client gets to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open admin connections get to finish on shutdown.
const GRACE: Duration = Duration::from_secs(5);

/// What a successful reload reports.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// The new configuration's hash (`Config::hash`).
    pub hash: String,
    pub loaded_at: SystemTime,
}

/// A request to reload the configuration file, and where to answer.
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<ReloadReport, Problems>>,
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn text(status: StatusCode, content: String) -> Response<Body> {
    let mut response = Response::new(body::full(content));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn html(page: String) -> Response<Body> {
    let mut response = Response::new(body::full(page));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(status_page::CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The answer to a failed reload, in the error schema.
pub fn reload_refused(problems: &Problems) -> Response<Body> {
    let list: Vec<serde_json::Value> = problems
        .iter()
        .map(|p| json!({ "path": p.path, "message": p.message }))
        .collect();
    GatewayError::new(
        StatusCode::BAD_REQUEST,
        "InvalidConfiguration",
        format!(
            "The configuration was not reloaded ({} problem(s)); the running one stays",
            list.len()
        ),
    )
    .with_details(json!({ "problems": list }))
    .into_response()
}

async fn answer(
    current: Current,
    metrics: Arc<Metrics>,
    reloads: mpsc::Sender<ReloadRequest>,
    method: Method,
    path: String,
) -> Response<Body> {
    match (method, path.as_str()) {
        (Method::GET, "/") => {
            let runtime = current.load().runtime.clone();
            html(status_page::render(&runtime, metrics.status()))
        }
        (Method::GET, "/livez") => text(StatusCode::OK, "ok\n".into()),
        (Method::GET, "/readyz") => match current.load().runtime.authenticator.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(failures) => text(StatusCode::SERVICE_UNAVAILABLE, failures + "\n"),
        },
        (Method::GET, "/metrics") => text(StatusCode::OK, metrics.encode()),
        (Method::GET, "/config") => {
            let runtime = current.load().runtime.clone();
            json_response(&json!({
                "hash": runtime.config.hash(),
                "loaded_at": unix_seconds(runtime.loaded_at),
                "config": runtime.config.redacted(),
            }))
        }
        (Method::POST, "/reload") => {
            let (reply, answer) = oneshot::channel();
            if reloads.send(ReloadRequest { reply }).await.is_err() {
                return GatewayError::service_unavailable("the gateway is shutting down", 1)
                    .into_response();
            }
            match answer.await {
                Ok(Ok(report)) => json_response(&json!({
                    "status": "reloaded",
                    "hash": report.hash,
                    "loaded_at": unix_seconds(report.loaded_at),
                })),
                Ok(Err(problems)) => reload_refused(&problems),
                Err(_) => GatewayError::service_unavailable("the gateway is shutting down", 1)
                    .into_response(),
            }
        }
        (Method::GET, "/upstreams") => {
            let runtime = current.load().runtime.clone();
            let upstreams: Vec<serde_json::Value> =
                runtime.upstreams.iter().map(|u| u.status()).collect();
            json_response(&json!({ "upstreams": upstreams }))
        }
        (Method::POST, path) if path.starts_with("/upstreams/") => drain_endpoint(&current, path),
        (_, "/" | "/livez" | "/readyz" | "/metrics" | "/config" | "/upstreams") => {
            GatewayError::method_not_allowed(&Method::POST, &path, "GET").into_response()
        }
        (_, "/reload") => {
            GatewayError::method_not_allowed(&Method::GET, &path, "POST").into_response()
        }
        _ => GatewayError::unknown_endpoint(&path).into_response(),
    }
}

/// `POST /upstreams/{name}/endpoints/{i}/drain|undrain`.
fn drain_endpoint(current: &Current, path: &str) -> Response<Body> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (name, index, action) = match parts.as_slice() {
        ["upstreams", name, "endpoints", index, action @ ("drain" | "undrain")] => {
            (*name, *index, *action)
        }
        _ => return GatewayError::unknown_endpoint(path).into_response(),
    };
    let runtime = current.load().runtime.clone();
    let Some(upstream) = runtime.upstreams.iter().find(|u| &*u.name == name) else {
        return GatewayError::new(
            StatusCode::NOT_FOUND,
            "UnknownUpstream",
            format!("No upstream is named '{name}'"),
        )
        .with_details(json!({ "upstream": name }))
        .into_response();
    };
    let Some(endpoint) = index
        .parse::<usize>()
        .ok()
        .and_then(|i| upstream.endpoints.get(i))
    else {
        return GatewayError::new(
            StatusCode::NOT_FOUND,
            "UnknownEndpoint",
            format!("Upstream '{name}' has no endpoint {index}"),
        )
        .with_details(json!({ "upstream": name, "endpoint": index }))
        .into_response();
    };
    endpoint.set_draining(action == "drain");
    tracing::info!(upstream = %name, endpoint = %endpoint.url(), %action, "endpoint {action}ed by an operator");
    json_response(&upstream.status())
}

/// Serves the admin endpoints until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    current: Current,
    metrics: Arc<Metrics>,
    reloads: mpsc::Sender<ReloadRequest>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    accept_loop(&listener, "admin", shutdown, |stream, peer| {
        // With `[admin.tls]` the handshake runs first, on the connection's own task.
        let tls = current.load().runtime.admin_tls.clone();
        let current = current.clone();
        let metrics = metrics.clone();
        let reloads = reloads.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let (current, metrics, reloads) = (current.clone(), metrics.clone(), reloads.clone());
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            async move {
                Ok::<_, Infallible>(answer(current, metrics, reloads, method, path).await)
            }
        });
        if let Some(tls) = tls {
            let (watcher, builder) = (graceful.watcher(), builder.clone());
            tokio::spawn(async move {
                if let Some((stream, _)) = super::tls::accept(stream, peer, &tls).await {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            });
            return;
        }
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
