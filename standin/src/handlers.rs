//! The stand-in's HTTP surface: routing, authentication and every answer it writes.
//!
//! Implemented, answering like the manager (`captured/manager-oss-0.337-more.json`):
//! - public scope: `GET /healthz`, `GET /config/authentication`, `GET /robots.txt`; every
//!   other path outside `/v0` is the web console's static files service (405 text/plain for
//!   methods other than `GET`/`HEAD`, `Not found` 404 otherwise); see [`public_scope`];
//! - `GET /v0/cluster_healthz`, `GET /v0/config` (field order as captured), `/v0/config/demos`
//!   (`[]`), `/v0/config/session` (authentication off: tenant `default`, role `admin`),
//!   `GET /v0/metrics` (200 text/plain, empty);
//! - `GET|POST /v0/api_keys`, `GET|DELETE /v0/api_keys/{name}` (a get answers a one-element
//!   array; the secret is shown once; 409 `DuplicateName`; 404 `UnknownApiKey`);
//! - `GET|POST /v0/pipelines` (`?selector=`), `GET|PUT|PATCH|DELETE /v0/pipelines/{n}`
//!   (answers of create/`PUT`/`PATCH` have no `bootstrap_*`; delete needs the pipeline fully
//!   stopped and its storage cleared);
//! - `POST .../{start,stop,clear,dismiss_error}` with the manager's JSON-string bodies
//!   (`"Pipeline is starting"`, `"Pipeline is forcefully stopping"`, `"Pipeline storage is
//!   being cleared"`, `"Pipeline deployment error has been dismissed"`);
//! - `POST .../{pause,resume,activate}`, `POST .../egress/{view}` (endless, never buffered),
//!   `POST .../ingress/{table}` (streamed, counted), `GET .../query` (a WebSocket that answers
//!   each text message with one JSON line, see [`websocket_query`], or an empty HTTP result);
//!   the streams carry `Content-Encoding: identity`.
//!
//! Edition ([`crate::Edition`]): the open-source build answers `activate` (any name, once its
//! query string parses) and `stop` without `force=true` (before the pipeline is looked up)
//! with 501 `EnterpriseFeature` and the captured message and `details: {"feature"}`;
//! `start?initial=standby` is not refused by edition (the manager does not either).
//!
//! Every other route the manager forwards to a pipeline process (`stats`, `metrics`,
//! checkpoints, transactions, connectors, ...) answers 503 `PipelineInteractionNotDeployed`
//! while the pipeline is not deployed, like the manager, and 501 `StandinNotImplemented` once
//! it is; the remaining management routes answer 404 `UnknownPipelineName` for a missing
//! pipeline and otherwise 501. A known route with a wrong method answers 403
//! `InsufficientPermissions` without `details`; any other `/v0` path is an empty 404.
//!
//! Bodies: a `POST`/`PUT`/`PATCH` that carries JSON needs a JSON `Content-Type` (else a
//! text/plain 400 `Content type error`, before the size limit), then at most 2 MiB (413
//! text/plain), then valid JSON of the manager's struct (400 text/plain `Json deserialize
//! error: ...` with serde's message, struct names included). Query strings that do not parse
//! are a text/plain 400 `Query deserialize error: ...`. Errors the manager raises without
//! fields have `details: {}`.
//!
//! Order of checks per request: fault → compression negotiation (406) → outside `/v0`:
//! public scope → API key → route/method → query string (text/plain 400) → body → pipeline
//! lookup → action. Path segments are percent-decoded one by one after splitting, so `a%2Fb`
//! is a name and `%61ctivate` routes as `activate`.

#![allow(
    clippy::result_large_err,
    reason = "a refused request is answered at once with its `Response`; it is built once per request, never in a loop"
)]

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::state::{
    KeyRole, Pipeline, PipelinePatch, PipelineSpec, Refusal, Selector, Status, StorageStatus,
    Target, ViewKind,
};
use super::{lock, Edition, Fault, Shared};
use crate::body::{boxed, empty, full, Body};
use crate::{compress, console};

/// The largest JSON body the manager accepts (actix-web's default `JsonConfig` limit).
const JSON_LIMIT: usize = 2 * 1024 * 1024;
/// The longest pipeline name.
const NAME_MAXIMUM: usize = 63;
const NAME_PATTERN: &str = "^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$";
const NAME_PATTERN_DESCRIPTION: &str = "be non-empty and only contain lowercase (a-z), uppercase (A-Z), number (0-9), underscore (_) or hyphen (-) characters, but cannot start or end with hyphen or underscore";
const TEXT_PLAIN_UTF8: &str = "text/plain; charset=utf-8";
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The service's error: the one way to close a connection without answering ([`Fault::Reset`]).
#[derive(Debug)]
pub struct ResetConnection;

impl fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stand-in fault: connection reset without an answer")
    }
}

impl std::error::Error for ResetConnection {}

/// Handles one request: fault first, then the manager's behaviour.
pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ResetConnection> {
    shared.record(&req);
    let mut response = match shared.fault_for(req.uri().path()) {
        Some(Fault::Reset) => return Err(ResetConnection),
        Some(Fault::Respond {
            status,
            content_type,
            body,
            headers,
        }) => fault_response(status, content_type, body, headers),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            manager_response(&shared, req).await
        }
        None => manager_response(&shared, req).await,
    };
    response
        .headers_mut()
        .insert("x-standin-instance", shared.instance.clone());
    Ok(response)
}

/// The manager's answer: negotiation of `Accept-Encoding` first (a 406 never reaches the
/// routes), then the route, then compression, as actix's `Compress` wraps the whole app.
async fn manager_response(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let coding = if shared.opts.compression {
        match compress::negotiate(req.headers()) {
            compress::Negotiated::Use(coding) => coding,
            compress::Negotiated::NotAcceptable => return compress::not_acceptable(),
        }
    } else {
        compress::Coding::Identity
    };
    let mut response = route(shared, req).await;
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    compress::encode(coding, response).await
}

/// Marks a forwarded stream the way the manager does (`Content-Encoding: identity`), which
/// also keeps compression off it.
fn identity_stream(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    response
}

fn fault_response(
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Routing

/// The routes the manager knows under `/v0/pipelines/{name}/...`, with their methods.
const PIPELINE_SUBROUTES: &[(&str, &[Method])] = &[
    ("activate", &[Method::POST]),
    ("approve", &[Method::POST]),
    ("checkpoint", &[Method::POST]),
    ("checkpoint/sync", &[Method::POST]),
    ("checkpoint/sync_status", &[Method::GET]),
    ("checkpoint_status", &[Method::GET]),
    ("checkpoints", &[Method::GET]),
    ("checkpoints/remote", &[Method::GET]),
    ("circuit_json_profile", &[Method::GET]),
    ("circuit_profile", &[Method::GET]),
    ("clear", &[Method::POST]),
    ("clock/advance", &[Method::POST]),
    ("commit_transaction", &[Method::POST]),
    ("completion_status", &[Method::GET]),
    ("dataflow_graph", &[Method::GET]),
    ("diff", &[Method::POST]),
    ("dismiss_error", &[Method::POST]),
    ("events", &[Method::GET]),
    ("heap_profile", &[Method::GET]),
    ("logs", &[Method::GET]),
    ("metrics", &[Method::GET]),
    ("pause", &[Method::POST]),
    ("query", &[Method::GET]),
    ("rebalance", &[Method::POST]),
    ("resume", &[Method::POST]),
    ("samply_profile", &[Method::GET, Method::POST]),
    ("start", &[Method::POST]),
    ("start_compaction", &[Method::POST]),
    ("start_transaction", &[Method::POST]),
    ("stats", &[Method::GET]),
    ("stop", &[Method::POST]),
    ("support_bundle", &[Method::GET]),
    ("time_series", &[Method::GET]),
    ("time_series_stream", &[Method::GET]),
    ("update_runtime", &[Method::POST]),
];

/// Subroutes of a pipeline that the manager forwards to the pipeline process, so they answer
/// 503 `PipelineInteractionNotDeployed` while none runs. The others (`clear`, `diff`,
/// `dataflow_graph`, `dismiss_error`, `events`, `logs`, `start`, `stop`, `support_bundle`,
/// `update_runtime`) are answered by the manager itself.
const INTERACTIONS: &[&str] = &[
    "activate",
    "approve",
    "checkpoint",
    "checkpoint/sync",
    "checkpoint/sync_status",
    "checkpoint_status",
    "checkpoints",
    "checkpoints/remote",
    "circuit_json_profile",
    "circuit_profile",
    "clock/advance",
    "commit_transaction",
    "completion_status",
    "heap_profile",
    "metrics",
    "pause",
    "query",
    "rebalance",
    "resume",
    "samply_profile",
    "start_compaction",
    "start_transaction",
    "stats",
    "time_series",
    "time_series_stream",
];

/// A request resolved to a known route.
enum Route {
    ClusterHealthz,
    Config,
    ConfigDemos,
    ConfigSession,
    Metrics,
    ApiKeys,
    ApiKey(String),
    Pipelines,
    Pipeline(String),
    /// `/v0/pipelines/{name}/{action}` (action may be two segments, e.g. `checkpoint/sync`).
    Action(String, String),
    Egress(String),
    Ingress(String),
    /// A known route the manager forwards to the pipeline process and the stand-in does not
    /// implement (connector actions and statistics).
    Interaction(String),
    /// A known route the manager answers itself and the stand-in does not implement.
    Unimplemented(String),
}

/// Resolves `segments` (the path under `/v0`) to a route and the methods it accepts; `None`
/// for an unknown path.
fn resolve(segments: &[&str]) -> Option<(Route, &'static [Method])> {
    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];
    const GET_POST: &[Method] = &[Method::GET, Method::POST];
    const GET_DELETE: &[Method] = &[Method::GET, Method::DELETE];
    const PIPELINE: &[Method] = &[Method::GET, Method::PUT, Method::DELETE, Method::PATCH];
    let route = match segments {
        ["cluster_healthz"] => (Route::ClusterHealthz, GET),
        ["config"] => (Route::Config, GET),
        ["config", "demos"] => (Route::ConfigDemos, GET),
        ["config", "session"] => (Route::ConfigSession, GET),
        ["metrics"] => (Route::Metrics, GET),
        ["api_keys"] => (Route::ApiKeys, GET_POST),
        ["api_keys", name] => (Route::ApiKey((*name).to_owned()), GET_DELETE),
        ["pipelines"] => (Route::Pipelines, GET_POST),
        ["pipelines", name] => (Route::Pipeline((*name).to_owned()), PIPELINE),
        ["pipelines", name, "egress", _] => (Route::Egress((*name).to_owned()), POST),
        ["pipelines", name, "ingress", _] => (Route::Ingress((*name).to_owned()), POST),
        ["pipelines", name, "events", _] => (Route::Unimplemented((*name).to_owned()), GET),
        ["pipelines", name, "tables", _, "connectors", _, "stats" | "completion_token"] => {
            (Route::Interaction((*name).to_owned()), GET_POST)
        }
        ["pipelines", name, "tables", _, "connectors", _, _] => {
            (Route::Interaction((*name).to_owned()), POST)
        }
        ["pipelines", name, "views", _, "connectors", _, "stats"] => {
            (Route::Interaction((*name).to_owned()), GET)
        }
        ["pipelines", name, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
            let action = rest.join("/");
            let (_, methods) = PIPELINE_SUBROUTES
                .iter()
                .find(|(known, _)| *known == action)?;
            (Route::Action((*name).to_owned(), action), *methods)
        }
        _ => return None,
    };
    Some(route)
}

fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let segments: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .skip(1)
        .map(decode_segment)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let Some(("v0", segments)) = segments.split_first().map(|(first, rest)| (*first, rest)) else {
        return public_scope(shared, &req, &segments);
    };
    if let Err(refused) = authenticate(shared, &req) {
        return refused;
    }
    let Some((route, methods)) = resolve(segments) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    if !methods.contains(&method) {
        return no_classification();
    }
    match route {
        Route::ClusterHealthz => cluster_healthz(shared),
        Route::Config => configuration(shared),
        Route::ConfigDemos => json_response(StatusCode::OK, &json!([])),
        Route::ConfigSession => session(),
        Route::Metrics => text_response(StatusCode::OK, "text/plain", ""),
        Route::ApiKeys if method == Method::GET => list_api_keys(shared),
        Route::ApiKeys => create_api_key(shared, req).await,
        Route::ApiKey(name) if method == Method::GET => get_api_key(shared, &name),
        Route::ApiKey(name) => delete_api_key(shared, &name),
        Route::Pipelines if method == Method::GET => list_pipelines(shared, &req),
        Route::Pipelines => create_pipeline(shared, req).await,
        Route::Pipeline(name) => match method {
            Method::GET => get_pipeline(shared, &req, &name),
            Method::PUT => put_pipeline(shared, req, name).await,
            Method::PATCH => patch_pipeline(shared, req, name).await,
            _ => delete_pipeline(shared, &name),
        },
        Route::Action(name, action) => match action.as_str() {
            "start" => start(shared, &req, &name),
            "stop" => stop(shared, &req, &name),
            "clear" => clear(shared, &name),
            "pause" => pause_or_resume(shared, &name, "pause", Target::Paused),
            "resume" => pause_or_resume(shared, &name, "resume", Target::Running),
            "activate" => activate(shared, &req, &name),
            "dismiss_error" => dismiss_error(shared, &name),
            "query" => query(shared, req, &name),
            other if INTERACTIONS.contains(&other) => interaction(shared, &req, &name),
            _ => unimplemented(shared, &req, &name),
        },
        Route::Egress(name) => egress(shared, &name),
        Route::Ingress(name) => ingress(shared, req, &name).await,
        Route::Interaction(name) => interaction(shared, &req, &name),
        Route::Unimplemented(name) => unimplemented(shared, &req, &name),
    }
}

/// Everything outside `/v0`, as the manager's public scope routes it: `GET /healthz`,
/// `GET /robots.txt` and the `/config` scope (only `GET /config/authentication`; anything
/// else under `/config` is the app's empty 404); every other request falls through to the
/// static files service of the web console, which refuses methods other than `GET` and
/// `HEAD` with a text/plain 405 and serves the console ([`console::serve`]), or, with the
/// console off, answers 404 `Not found` (no content type). `HEAD /healthz` and
/// `HEAD /robots.txt` fall through too: those routes of the manager are `GET` only.
fn public_scope<B>(shared: &Shared, req: &Request<B>, segments: &[&str]) -> Response<Body> {
    let method = req.method();
    let get = method == Method::GET;
    match segments {
        ["config", "authentication"] if get => {
            json_response(StatusCode::OK, &console_authentication(shared))
        }
        ["config", ..] => status_only(StatusCode::NOT_FOUND),
        ["healthz"] if get => json_response(StatusCode::OK, &json!({"status": "healthy"})),
        ["robots.txt"] if get => text_response(
            StatusCode::OK,
            TEXT_PLAIN_UTF8,
            "User-agent: *\nDisallow: /\n",
        ),
        _ if !get && method != Method::HEAD => {
            let mut response = text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT_PLAIN_UTF8,
                "This resource only supports GET and HEAD.",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ if shared.opts.web_console => console::serve(req.uri().path(), req.headers()),
        _ => {
            let mut response = Response::new(full("Not found"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// `GET /config/authentication`: the identity provider the web console logs into (`{}`: none).
fn console_authentication(shared: &Shared) -> Value {
    shared
        .opts
        .console_authentication
        .clone()
        .unwrap_or_else(|| json!({}))
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Checks `Authorization: Bearer <key>` when a key is required. Browser WebSockets may carry
/// the key in `Sec-WebSocket-Protocol: feldera-bearer.<base64url(key)>` instead.
fn authenticate<B>(shared: &Shared, req: &Request<B>) -> Result<(), Response<Body>> {
    let Some(expected) = &shared.opts.require_api_key else {
        return Ok(());
    };
    let token = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
        None => websocket_bearer(req),
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        let mut response = status_only(StatusCode::UNAUTHORIZED);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(response);
    };
    if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(text_response(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            r#"{"error_code":"AuthenticationFailed","message":"Unauthorized API key"}"#,
        ))
    }
}

fn websocket_bearer<B>(req: &Request<B>) -> Option<String> {
    let protocols = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?;
    let encoded = protocols
        .split(',')
        .find_map(|p| p.trim().strip_prefix("feldera-bearer."))?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()?;
    String::from_utf8(decoded).ok()
}

// ---------------------------------------------------------------------------------------------
// Response helpers: the only places that write bodies.

/// `details` of an error body; object keys keep the order given (the manager's order).
enum Details {
    /// No `details` key at all (the 403 for an unclassified endpoint).
    Absent,
    Null,
    Object(Vec<(&'static str, Value)>),
    Array(Vec<Value>),
}

impl Details {
    fn is_absent(&self) -> bool {
        matches!(self, Details::Absent)
    }
}

impl Serialize for Details {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Details::Absent | Details::Null => serializer.serialize_unit(),
            Details::Array(items) => items.serialize(serializer),
            Details::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: String,
    error_code: &'a str,
    #[serde(skip_serializing_if = "Details::is_absent")]
    details: Details,
}

fn error_response(
    status: StatusCode,
    error_code: &str,
    message: String,
    details: Details,
) -> Response<Body> {
    json_response(
        status,
        &ErrorBody {
            message,
            error_code,
            details,
        },
    )
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(full(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT_PLAIN_UTF8,
            &error.to_string(),
        ),
    }
}

fn text_response(status: StatusCode, content_type: &'static str, text: &str) -> Response<Body> {
    let mut response = Response::new(full(text.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

fn no_classification() -> Response<Body> {
    error_response(
        StatusCode::FORBIDDEN,
        "InsufficientPermissions",
        "This endpoint has no access-control classification and is denied".to_owned(),
        Details::Absent,
    )
}

/// 501 `EnterpriseFeature` of the open-source build.
fn enterprise_feature(feature: &str) -> Response<Body> {
    error_response(
        StatusCode::NOT_IMPLEMENTED,
        "EnterpriseFeature",
        format!("Cannot use enterprise-only feature ({feature}) in Feldera community edition."),
        Details::Object(vec![("feature", json!(feature))]),
    )
}

fn unknown_pipeline(shared: &Shared, name: &str) -> Response<Body> {
    if shared.opts.non_json_errors {
        return status_only(StatusCode::NOT_FOUND);
    }
    error_response(
        StatusCode::NOT_FOUND,
        "UnknownPipelineName",
        format!("Unknown pipeline name '{name}'"),
        Details::Object(vec![("pipeline_name", json!(name))]),
    )
}

fn refusal(name: &str, refusal: Refusal) -> Response<Body> {
    match refusal {
        Refusal::NotDeployed { status, desired } => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "PipelineInteractionNotDeployed",
            format!(
                "Unable to interact with pipeline because the deployment status ({}) indicates it is not (yet) fully provisioned pipeline-id=N/A pipeline-name=\"{name}\"",
                status.as_str().to_lowercase()
            ),
            Details::Object(vec![
                ("pipeline_name", json!(name)),
                ("status", json!(status.as_str())),
                ("desired_status", json!(desired.as_str())),
            ]),
        ),
        Refusal::InvalidTransition { action, status } => error_response(
            StatusCode::BAD_REQUEST,
            "InvalidTransition",
            format!("Cannot {action} the pipeline while its status is {}", status.as_str()),
            Details::Array(vec![json!(action), json!(status.as_str())]),
        ),
        Refusal::IllegalAction { status, desired, requested, hint } => error_response(
            StatusCode::BAD_REQUEST,
            "IllegalPipelineAction",
            format!(
                "Deployment resources status (current: '{}', desired: '{}') cannot have desired changed to '{}'. {hint}",
                status.resources(),
                desired.resources(),
                requested.resources()
            ),
            Details::Object(vec![
                ("status", json!(status.resources())),
                ("current_desired_status", json!(desired.resources())),
                ("new_desired_status", json!(requested.resources())),
                ("hint", json!(hint)),
            ]),
        ),
        Refusal::InitialImmutable => error_response(
            StatusCode::BAD_REQUEST,
            "InitialImmutableUnlessStopped",
            "Initial desired runtime status cannot be changed unless the pipeline is desired to become Stopped.".to_owned(),
            Details::Object(vec![]),
        ),
        Refusal::CompilationError => error_response(
            StatusCode::BAD_REQUEST,
            "CannotStartWithCompilationError",
            "Cannot process `/start` if the `program_status` is `SqlError`, `RustError` or `SystemError`. Make changes to fix the error, which will trigger recompilation.".to_owned(),
            Details::Object(vec![]),
        ),
        Refusal::ClearingStorage => error_response(
            StatusCode::BAD_REQUEST,
            "CannotStartWhileClearingStorage",
            "Cannot process `/start` if the `storage_status` is `Clearing`. Wait for the storage to become cleared before trying again.".to_owned(),
            Details::Object(vec![]),
        ),
        Refusal::StorageImmutable { status, desired, storage } => error_response(
            StatusCode::BAD_REQUEST,
            "StorageStatusImmutableUnlessStopped",
            format!(
                "Cannot transition storage status from '{}' to 'clearing' with resources status '{}' and desired status '{}'. Storage status cannot be changed unless the pipeline is fully stopped.",
                storage.as_str().to_lowercase(),
                status.resources().to_lowercase(),
                desired.resources().to_lowercase()
            ),
            Details::Object(vec![
                ("resources_status", json!(status.resources())),
                ("resources_desired_status", json!(desired.resources())),
                ("current_status", json!(storage.as_str())),
                ("new_status", json!("Clearing")),
            ]),
        ),
    }
}

/// Parses the query string the way actix-web's `Query` does, failing with its text/plain 400.
fn parse_query<T: DeserializeOwned, B>(req: &Request<B>) -> Result<T, Response<Body>> {
    serde_urlencoded::from_str(req.uri().query().unwrap_or("")).map_err(|e| {
        text_response(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN_UTF8,
            &format!("Query deserialize error: {e}"),
        )
    })
}

/// Whether `Content-Type` is JSON the way actix-web's `Json` extractor decides: a parseable
/// media type whose subtype or suffix is `json` (`application/json`, `text/json`,
/// `application/merge-patch+json`, parameters allowed).
fn is_json<B>(req: &Request<B>) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !token(kind) || !token(subtype) {
        return false;
    }
    let (subtype, suffix) = match subtype.split_once('+') {
        Some((subtype, suffix)) => (subtype, Some(suffix)),
        None => (subtype, None),
    };
    subtype.eq_ignore_ascii_case("json") || suffix.is_some_and(|s| s.eq_ignore_ascii_case("json"))
}

/// Reads a JSON body the way actix-web's `Json` does: a `Content-Type` that is not JSON is a
/// text/plain 400 `Content type error` (checked first), then the 2 MiB limit (413), then a
/// text/plain 400 on malformed JSON.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    if !is_json(&req) {
        return Err(text_response(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN_UTF8,
            "Content type error",
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > JSON_LIMIT as u64) {
        return Err(text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            TEXT_PLAIN_UTF8,
            &format!(
                "JSON payload ({length} bytes) is larger than allowed (limit: {JSON_LIMIT} bytes)."
            ),
        ));
    }
    let bytes = match Limited::new(req.into_body(), JSON_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return Err(text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT_PLAIN_UTF8,
                &format!("JSON payload has exceeded limit ({JSON_LIMIT} bytes)."),
            ))
        }
        Err(error) => {
            return Err(text_response(
                StatusCode::BAD_REQUEST,
                TEXT_PLAIN_UTF8,
                &format!("Error that occur during reading payload: {error}"),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        text_response(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN_UTF8,
            &format!("Json deserialize error: {e}"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Health

#[derive(Serialize)]
struct ServiceStatus {
    healthy: bool,
    message: String,
    unchanged_since: String,
    checked_at: String,
}

#[derive(Serialize)]
struct HealthStatus {
    all_healthy: bool,
    api: ServiceStatus,
    compiler: ServiceStatus,
    runner: ServiceStatus,
}

fn cluster_healthz(shared: &Shared) -> Response<Body> {
    let since = super::state::timestamp(shared.started_at);
    let now = super::state::timestamp(SystemTime::now());
    let service = |name: &str| ServiceStatus {
        healthy: true,
        message: format!(
            "Healthy: The {name} service responded successfully to the last health check."
        ),
        unchanged_since: since.clone(),
        checked_at: now.clone(),
    };
    json_response(
        StatusCode::OK,
        &HealthStatus {
            all_healthy: true,
            api: service("api"),
            compiler: service("compiler"),
            runner: service("runner"),
        },
    )
}

/// `GET /v0/config` (`Configuration`), in the manager's field order. The Python SDK's client
/// reads it when it is created. `edition` is the one the stand-in plays.
#[derive(Serialize)]
struct Configuration {
    posthog: &'static str,
    conceptualhq: &'static str,
    product_fruits: &'static str,
    edition: &'static str,
    version: &'static str,
    revision: &'static str,
    runtime_revision: &'static str,
    unstable_features: Option<String>,
    changelog_url: &'static str,
    license_validity: Option<Value>,
    update_info: Option<Value>,
    build_info: BuildInformation,
    build_source: &'static str,
}

/// `build_info` (`BuildInformation`): the stand-in's own, in the manager's shape.
#[derive(Serialize)]
struct BuildInformation {
    build_timestamp: String,
    build_cpu: &'static str,
    build_os: &'static str,
    cargo_dependencies: &'static str,
    cargo_features: &'static str,
    cargo_debug: &'static str,
    cargo_opt_level: &'static str,
    cargo_target_triple: &'static str,
    rustc_version: &'static str,
}

fn configuration(shared: &Shared) -> Response<Body> {
    const REVISION: &str = "5c7931d09fc37e0976143e50a81169dbd98ec0cc";
    json_response(
        StatusCode::OK,
        &Configuration {
            posthog: "",
            conceptualhq: "",
            product_fruits: "",
            edition: match shared.opts.edition {
                Edition::Oss => "Open source",
                Edition::Enterprise => "Enterprise",
            },
            version: super::state::PLATFORM_VERSION,
            revision: REVISION,
            runtime_revision: REVISION,
            unstable_features: None,
            changelog_url: "https://github.com/feldera/feldera/releases/tag/v0.337.0",
            license_validity: None,
            update_info: None,
            build_info: BuildInformation {
                build_timestamp: super::state::timestamp(shared.started_at),
                build_cpu: "stand-in",
                build_os: std::env::consts::OS,
                cargo_dependencies: "",
                cargo_features: "",
                cargo_debug: "false",
                cargo_opt_level: "0",
                cargo_target_triple: std::env::consts::ARCH,
                rustc_version: "",
            },
            build_source: "source",
        },
    )
}

/// `GET /v0/config/session` (`SessionInfo`) as the manager answers with authentication off.
#[derive(Serialize)]
struct SessionInfo {
    tenant_id: &'static str,
    tenant_name: &'static str,
    role: &'static str,
    memberships: [(); 0],
}

fn session() -> Response<Body> {
    json_response(
        StatusCode::OK,
        &SessionInfo {
            tenant_id: "00000000-0000-0000-0000-000000000000",
            tenant_name: "default",
            role: "admin",
            memberships: [],
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Pipeline management

#[derive(Deserialize)]
struct SelectorQuery {
    selector: Option<Selector>,
}

/// A JSON answer that must not be cached (`Cache-Control: no-cache`, as the manager sends with
/// pipelines and API keys).
fn uncached<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let mut response = json_response(status, value);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn list_pipelines<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    let query: SelectorQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut pipelines = lock(&shared.pipelines);
    let views = pipelines.list(
        query.selector.unwrap_or(Selector::All).into(),
        shared.opts.lifecycle_delay,
    );
    uncached(StatusCode::OK, &views)
}

fn get_pipeline<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    let query: SelectorQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut pipelines = lock(&shared.pipelines);
    match pipelines.get_mut(name, shared.opts.lifecycle_delay) {
        Some(pipeline) => uncached(
            StatusCode::OK,
            &pipeline.view(query.selector.unwrap_or(Selector::All).into()),
        ),
        None => unknown_pipeline(shared, name),
    }
}

/// The manager's name rule, checked in its order: empty, length, pattern.
fn validate_name(name: &str) -> Result<(), Response<Body>> {
    if name.is_empty() {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "EmptyName",
            "Name cannot be be empty".to_owned(),
            Details::Object(vec![]),
        ));
    }
    if name.len() > NAME_MAXIMUM {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "TooLongName",
            format!(
                "Name '{name}' is longer ({}) than maximum allowed ({NAME_MAXIMUM})",
                name.len()
            ),
            Details::Object(vec![
                ("name", json!(name)),
                ("length", json!(name.len())),
                ("maximum", json!(NAME_MAXIMUM)),
            ]),
        ));
    }
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let ends_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if !(inner_ok && ends_ok) {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "NameDoesNotMatchPattern",
            format!("Name '{name}' should {NAME_PATTERN_DESCRIPTION} (pattern: '{NAME_PATTERN}')"),
            Details::Object(vec![
                ("name", json!(name)),
                ("pattern", json!(NAME_PATTERN)),
                ("pattern_description", json!(NAME_PATTERN_DESCRIPTION)),
            ]),
        ));
    }
    Ok(())
}

fn duplicate_name() -> Response<Body> {
    error_response(
        StatusCode::CONFLICT,
        "DuplicateName",
        "An entity with this name already exists".to_owned(),
        Details::Object(vec![]),
    )
}

fn update_restricted_to_stopped() -> Response<Body> {
    error_response(
        StatusCode::BAD_REQUEST,
        "UpdateRestrictedToStopped",
        "Pipeline can only be updated while stopped. Stop it first by invoking '/stop'.".to_owned(),
        Details::Object(vec![]),
    )
}

async fn create_pipeline(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let spec: PipelineSpec = match read_json(req).await {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    if let Err(response) = validate_name(&spec.name) {
        return response;
    }
    let mut pipelines = lock(&shared.pipelines);
    if pipelines.contains(&spec.name) {
        return duplicate_name();
    }
    let pipeline = Pipeline::new(
        spec,
        shared.opts.compiler,
        SystemTime::now(),
        Instant::now(),
    );
    let response = uncached(StatusCode::CREATED, &pipeline.view(ViewKind::Info));
    pipelines.insert(pipeline);
    response
}

/// `PUT`: creates (201) when no pipeline has the path's name and the body's name is the
/// same, otherwise replaces the stopped pipeline (200, a rename included).
async fn put_pipeline(shared: &Shared, req: Request<Incoming>, name: String) -> Response<Body> {
    let spec: PipelineSpec = match read_json(req).await {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    if let Err(response) = validate_name(&spec.name) {
        return response;
    }
    let delay = shared.opts.lifecycle_delay;
    let mut pipelines = lock(&shared.pipelines);
    let Some(existing) = pipelines.get_mut(&name, delay) else {
        if spec.name != name {
            return error_response(
                StatusCode::BAD_REQUEST,
                "CannotRenameNonExistingPipeline",
                "The pipeline name in the request body does not match the one provided in the URL path. This is not allowed when no pipeline with the name provided in the URL path exists.".to_owned(),
                Details::Object(vec![]),
            );
        }
        let pipeline = Pipeline::new(
            spec,
            shared.opts.compiler,
            SystemTime::now(),
            Instant::now(),
        );
        let response = uncached(StatusCode::CREATED, &pipeline.view(ViewKind::Info));
        pipelines.insert(pipeline);
        return response;
    };
    if !existing.fully_stopped() {
        return update_restricted_to_stopped();
    }
    if spec.name != name && pipelines.contains(&spec.name) {
        return duplicate_name();
    }
    let Some(mut pipeline) = pipelines.remove(&name) else {
        return unknown_pipeline(shared, &name);
    };
    pipeline.replace(spec, SystemTime::now(), Instant::now());
    let response = uncached(StatusCode::OK, &pipeline.view(ViewKind::Info));
    pipelines.insert(pipeline);
    response
}

/// `PATCH`: the given fields of a stopped pipeline change (a rename included).
async fn patch_pipeline(shared: &Shared, req: Request<Incoming>, name: String) -> Response<Body> {
    let patch: PipelinePatch = match read_json(req).await {
        Ok(patch) => patch,
        Err(response) => return response,
    };
    if let Some(Err(response)) = patch.name.as_deref().map(validate_name) {
        return response;
    }
    let mut pipelines = lock(&shared.pipelines);
    let Some(existing) = pipelines.get_mut(&name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, &name);
    };
    if !existing.fully_stopped() {
        return update_restricted_to_stopped();
    }
    if let Some(new_name) = patch.name.as_deref() {
        if new_name != name && pipelines.contains(new_name) {
            return duplicate_name();
        }
    }
    let Some(mut pipeline) = pipelines.remove(&name) else {
        return unknown_pipeline(shared, &name);
    };
    pipeline.apply(patch, SystemTime::now(), Instant::now());
    let response = uncached(StatusCode::OK, &pipeline.view(ViewKind::Info));
    pipelines.insert(pipeline);
    response
}

fn delete_pipeline(shared: &Shared, name: &str) -> Response<Body> {
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    if !pipeline.fully_stopped() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "DeleteRestrictedToFullyStopped",
            "Cannot delete a pipeline which is not fully stopped. Stop the pipeline first fully by invoking the '/stop' endpoint.".to_owned(),
            Details::Object(vec![]),
        );
    }
    if pipeline.storage() != StorageStatus::Cleared {
        return error_response(
            StatusCode::BAD_REQUEST,
            "DeleteRestrictedToClearedStorage",
            "Cannot delete pipeline unless its storage is cleared. Clear storage first using `/clear`.".to_owned(),
            Details::Object(vec![]),
        );
    }
    pipelines.remove(name);
    status_only(StatusCode::OK)
}

fn unimplemented<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    if !lock(&shared.pipelines).contains(name) {
        return unknown_pipeline(shared, name);
    }
    error_response(
        StatusCode::NOT_IMPLEMENTED,
        "StandinNotImplemented",
        format!(
            "The stand-in pipeline manager does not implement {} {}",
            req.method(),
            req.uri().path()
        ),
        Details::Object(vec![
            ("method", json!(req.method().as_str())),
            ("path", json!(req.uri().path())),
        ]),
    )
}

/// A route the manager forwards to the pipeline process: 503 while none runs, otherwise
/// the stand-in's 501 (it has no pipeline process to forward to).
fn interaction<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    match deployed(shared, name) {
        Ok(()) => unimplemented(shared, req, name),
        Err(response) => response,
    }
}

// ---------------------------------------------------------------------------------------------
// API keys

#[derive(Deserialize)]
struct NewApiKeyRequest {
    name: String,
    #[serde(default)]
    role: Option<KeyRole>,
}

#[derive(Serialize)]
struct NewApiKeyResponse<'a> {
    id: String,
    name: &'a str,
    api_key: String,
}

fn unknown_api_key(name: &str) -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        "UnknownApiKey",
        format!("Unknown API key '{name}'"),
        Details::Object(vec![("name", json!(name))]),
    )
}

fn list_api_keys(shared: &Shared) -> Response<Body> {
    uncached(StatusCode::OK, &lock(&shared.api_keys).list())
}

/// `GET /v0/api_keys/{name}` answers a one-element array, as the manager does.
fn get_api_key(shared: &Shared, name: &str) -> Response<Body> {
    match lock(&shared.api_keys).get(name) {
        Some(key) => uncached(StatusCode::OK, &[key]),
        None => unknown_api_key(name),
    }
}

/// `POST /v0/api_keys`: 201 with the secret, shown this once; 409 `DuplicateName`. The role
/// defaults to `read`; `admin` and `owner` are not mintable and the stand-in does not know
/// the manager's exact refusal, so it answers its own 501.
async fn create_api_key(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let request: NewApiKeyRequest = match read_json(req).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let role = request.role.unwrap_or(KeyRole::Read);
    if matches!(role, KeyRole::Admin | KeyRole::Owner) {
        return error_response(
            StatusCode::NOT_IMPLEMENTED,
            "StandinNotImplemented",
            "The stand-in pipeline manager does not implement minting admin or owner API keys"
                .to_owned(),
            Details::Object(vec![
                ("method", json!(method.as_str())),
                ("path", json!(path)),
            ]),
        );
    }
    match lock(&shared.api_keys).create(&request.name, role) {
        Some((descr, api_key)) => uncached(
            StatusCode::CREATED,
            &NewApiKeyResponse {
                id: descr.id.to_string(),
                name: &descr.name,
                api_key,
            },
        ),
        None => duplicate_name(),
    }
}

fn delete_api_key(shared: &Shared, name: &str) -> Response<Body> {
    match lock(&shared.api_keys).remove(name) {
        Some(_) => status_only(StatusCode::OK),
        None => unknown_api_key(name),
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle actions

#[derive(Deserialize)]
struct StartQuery {
    initial: Option<String>,
    #[allow(dead_code)]
    bootstrap_policy: Option<String>,
    #[allow(dead_code)]
    silent_bootstrap: Option<bool>,
    #[allow(dead_code)]
    concurrent_bootstrap: Option<bool>,
    #[allow(dead_code)]
    dismiss_error: Option<bool>,
}

/// `POST /start`: the `initial` value is checked before the pipeline is looked up (405
/// `UnsupportedPipelineAction`), then 202 `"Pipeline is starting"`.
fn start<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    let query: StartQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let target = match query.initial.as_deref() {
        None | Some("running") => Target::Running,
        Some("paused") => Target::Paused,
        Some("standby") => Target::Standby,
        Some(other) => {
            let action = format!("/start?initial={other}");
            let reason = format!("unknown initial runtime desired status: {other}");
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "UnsupportedPipelineAction",
                format!("Unsupported pipeline action '{action}': {reason}"),
                Details::Object(vec![("action", json!(action)), ("reason", json!(reason))]),
            );
        }
    };
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    match pipeline.start(target, SystemTime::now(), Instant::now()) {
        Ok(()) => json_response(StatusCode::ACCEPTED, "Pipeline is starting"),
        Err(refused) => refusal(name, refused),
    }
}

#[derive(Deserialize)]
struct StopQuery {
    force: Option<bool>,
}

/// `POST /stop`: `force=true` stops at once (202 `"Pipeline is forcefully stopping"`);
/// without it the Enterprise edition suspends (the stand-in stops: 202 `"Pipeline is
/// suspending"` from a provisioned pipeline, otherwise the forced answer).
fn stop<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    let query: StopQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let force = query.force.unwrap_or(false);
    if !force && shared.opts.edition == Edition::Oss {
        return enterprise_feature("stop?force=false");
    }
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    let provisioned = pipeline.status().is_deployed();
    pipeline.stop(SystemTime::now(), Instant::now());
    let message = if force || !provisioned {
        "Pipeline is forcefully stopping"
    } else {
        "Pipeline is suspending"
    };
    json_response(StatusCode::ACCEPTED, message)
}

/// `POST /clear`: 202 `"Pipeline storage is being cleared"`, also when already cleared.
fn clear(shared: &Shared, name: &str) -> Response<Body> {
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    match pipeline.clear(Instant::now()) {
        Ok(()) => json_response(StatusCode::ACCEPTED, "Pipeline storage is being cleared"),
        Err(refused) => refusal(name, refused),
    }
}

fn transition_body(from: Status, to: Target) -> Response<Body> {
    let message = if from.as_str() == to.as_str() {
        format!("Pipeline is already {}", to.as_str())
    } else {
        format!(
            "Pipeline transitioning from {} to {}",
            from.as_str(),
            to.as_str()
        )
    };
    json_response(StatusCode::ACCEPTED, &message)
}

fn pause_or_resume(
    shared: &Shared,
    name: &str,
    action: &'static str,
    target: Target,
) -> Response<Body> {
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    match pipeline.pause_or_resume(action, target, SystemTime::now(), Instant::now()) {
        Ok(from) => transition_body(from, target),
        Err(refused) => refusal(name, refused),
    }
}

/// `initial` of activate: the manager's `RuntimeDesiredStatus`, lowercase on the wire.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ActivateInitial {
    Unavailable,
    Coordination,
    Standby,
    Paused,
    Running,
    Suspended,
}

#[derive(Deserialize)]
struct ActivateQuery {
    initial: Option<ActivateInitial>,
}

fn activate<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    let query: ActivateQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    if shared.opts.edition == Edition::Oss {
        return enterprise_feature("start from object store (S3)");
    }
    let target = match query.initial {
        None | Some(ActivateInitial::Running) => Target::Running,
        Some(ActivateInitial::Paused) => Target::Paused,
        Some(other) => {
            let status = format!("{other:?}");
            return error_response(
                StatusCode::BAD_REQUEST,
                "InvalidActivateStatus",
                format!("Invalid activation status {status} (only running and paused are valid)"),
                Details::Object(vec![("status", json!(status))]),
            );
        }
    };
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    match pipeline.activate(target, SystemTime::now(), Instant::now()) {
        Ok(from) => transition_body(from, target),
        Err(refused) => refusal(name, refused),
    }
}

fn dismiss_error(shared: &Shared, name: &str) -> Response<Body> {
    // The stand-in never has a deployment error, so there is nothing to dismiss.
    if lock(&shared.pipelines)
        .get_mut(name, shared.opts.lifecycle_delay)
        .is_none()
    {
        return unknown_pipeline(shared, name);
    }
    json_response(
        StatusCode::OK,
        "Pipeline deployment error has been dismissed",
    )
}

// ---------------------------------------------------------------------------------------------
// Data: egress, ingress, ad-hoc query

/// Looks `name` up and checks that a pipeline process is there to talk to.
fn deployed(shared: &Shared, name: &str) -> Result<(), Response<Body>> {
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return Err(unknown_pipeline(shared, name));
    };
    if pipeline.status().is_deployed() {
        Ok(())
    } else {
        Err(refusal(
            name,
            Refusal::NotDeployed {
                status: pipeline.status(),
                desired: pipeline.desired(),
            },
        ))
    }
}

fn egress(shared: &Shared, name: &str) -> Response<Body> {
    if let Err(response) = deployed(shared, name) {
        return response;
    }
    let stream = EgressStream {
        sequence_number: 0,
        chunk_bytes: shared.opts.egress_chunk_bytes,
        interval: shared.opts.egress_interval,
        pause: None,
    };
    let mut response = Response::new(boxed(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    identity_stream(response)
}

/// The endless egress body: one newline-terminated `Chunk` JSON object of `chunk_bytes` per
/// frame, made only when hyper asks for the next frame, i.e. when the connection can take it.
/// Memory stays at one chunk however long the client reads.
struct EgressStream {
    sequence_number: u64,
    chunk_bytes: usize,
    interval: Duration,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl EgressStream {
    fn chunk(&self) -> Bytes {
        let head = format!(
            "{{\"sequence_number\":{},\"snapshot\":false,\"text_data\":\"",
            self.sequence_number
        );
        let tail = "\"}\n";
        let padding = self.chunk_bytes.saturating_sub(head.len() + tail.len());
        let mut chunk = BytesMut::with_capacity(head.len() + padding + tail.len());
        chunk.put_slice(head.as_bytes());
        chunk.put_bytes(b'x', padding);
        chunk.put_slice(tail.as_bytes());
        chunk.freeze()
    }
}

impl http_body::Body for EgressStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        let chunk = this.chunk();
        this.sequence_number += 1;
        if !this.interval.is_zero() {
            this.pause = Some(Box::pin(tokio::time::sleep(this.interval)));
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

#[derive(Serialize)]
struct CompletionTokenResponse {
    token: String,
}

async fn ingress(shared: &Shared, req: Request<Incoming>, name: &str) -> Response<Body> {
    if let Err(response) = deployed(shared, name) {
        return response;
    }
    let mut body = req.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                    shared
                        .ingested
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "InputReadError",
                    format!("Error reading the request body: {error}"),
                    Details::Null,
                )
            }
        }
    }
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{name}:{received}:{}", uuid::Uuid::new_v4()));
    identity_stream(json_response(
        StatusCode::OK,
        &CompletionTokenResponse { token },
    ))
}

/// `format` of an ad-hoc query (`AdHocResultFormat`).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum AdHocResultFormat {
    Text,
    Json,
    Parquet,
    ArrowIpc,
    Hash,
}

#[derive(Deserialize)]
struct AdHocQuery {
    #[allow(dead_code)]
    sql: String,
    format: AdHocResultFormat,
}

fn query(shared: &Arc<Shared>, req: Request<Incoming>, name: &str) -> Response<Body> {
    if let Err(response) = deployed(shared, name) {
        return response;
    }
    let wants_websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_websocket {
        return websocket_query(shared, req);
    }
    let query: AdHocQuery = match parse_query(&req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    // No tables, so every query has an empty result.
    let content_type = match query.format {
        AdHocResultFormat::Text | AdHocResultFormat::Hash => "text/plain",
        AdHocResultFormat::Json => "application/x-ndjson",
        AdHocResultFormat::Parquet | AdHocResultFormat::ArrowIpc => "application/octet-stream",
    };
    identity_stream(text_response(StatusCode::OK, content_type, ""))
}

/// Whether two bytes can start a frame from a WebSocket client: no reserved bit (no extension
/// is negotiated), a defined opcode, and the mask bit.
fn starts_client_frame([first, second]: [u8; 2]) -> bool {
    first & 0x70 == 0 && matches!(first & 0x0f, 0 | 1 | 2 | 8 | 9 | 10) && second & 0x80 != 0
}

/// Echoes the bytes of a tunnel that is not WebSocket traffic, `first` included.
async fn echo_raw(
    io: TokioIo<hyper::upgrade::Upgraded>,
    first: [u8; 2],
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = tokio::io::split(io);
    if writer.write_all(&first).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy(&mut reader, &mut writer) => {}
        _ = closed.wait_for(|closed| *closed) => {}
    }
}

/// The answer to each text message of the query WebSocket: one JSON line.
#[derive(Serialize)]
struct QueryAnswer<'a> {
    text: &'static str,
    echo: &'a str,
}

/// Completes the WebSocket handshake (RFC 6455 §4.2.2): `Sec-WebSocket-Accept` from the key,
/// and `Sec-WebSocket-Protocol: feldera-ws-v1` when the client offers it (a browser fails a
/// connection whose offered subprotocols the server ignores); the `feldera-bearer.*` entry is
/// never echoed. Then it speaks real frames ([`tokio_tungstenite`]): each text message is
/// answered with one text message, the JSON line `{"text":"stand-in query answer","echo":..}`;
/// binary messages are echoed; pings are answered; a close is answered and ends it, and so
/// does the stand-in's shutdown.
///
/// Edge case kept for the gateway's tunnel test: when the first two bytes after the handshake
/// cannot start a client frame (reserved bits set, an unknown opcode, or no mask, which RFC
/// 6455 §5.1 requires of every client frame), the connection is not WebSocket traffic and its
/// bytes are echoed raw, as the stand-in always did.
fn websocket_query(shared: &Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return text_response(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN_UTF8,
            "WebSocket upgrade without Sec-WebSocket-Key",
        );
    };
    let offers_v1 = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "feldera-ws-v1"));
    let mut hasher = Sha1::new();
    hasher.update(&key);
    hasher.update(WEBSOCKET_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());

    let upgrade = hyper::upgrade::on(&mut req);
    let mut closed = shared.closed.subscribe();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut first = [0u8; 2];
        let read = tokio::select! {
            read = io.read_exact(&mut first) => read,
            _ = closed.wait_for(|closed| *closed) => return,
        };
        if read.is_err() {
            return;
        }
        if !starts_client_frame(first) {
            echo_raw(io, first, closed).await;
            return;
        }
        let mut socket = tokio_tungstenite::WebSocketStream::from_partially_read(
            io,
            first.to_vec(),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        loop {
            let message = tokio::select! {
                message = socket.next() => message,
                _ = closed.wait_for(|closed| *closed) => break,
            };
            let reply = match message {
                Some(Ok(Message::Text(text))) => {
                    let answer = QueryAnswer {
                        text: "stand-in query answer",
                        echo: text.as_str(),
                    };
                    match serde_json::to_string(&answer) {
                        Ok(line) => Message::text(line),
                        Err(_) => continue,
                    }
                }
                Some(Ok(Message::Binary(data))) => Message::Binary(data),
                // Pings are answered and closes replied to by the library on the next read.
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    });

    let mut response = status_only(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if offers_v1 {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("feldera-ws-v1"),
        );
    }
    response
}
