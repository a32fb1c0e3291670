//! The stand-in's HTTP surface: routing, authentication and every answer it writes.
//!
//! Implemented, answering like the manager: `GET /healthz`, `GET /config/authentication`,
//! `GET /robots.txt`, `GET /v0/cluster_healthz`, `GET /v0/config`, `GET|POST /v0/pipelines`,
//! `GET|PUT|DELETE /v0/pipelines/{n}`, `POST .../{start,stop,pause,resume,activate,dismiss_error}`,
//! `POST .../egress/{view}` (endless, never buffered), `POST .../ingress/{table}` (streamed, counted),
//! `GET .../query` (WebSocket upgrade that echoes raw bytes, or an empty result).
//!
//! Other routes the manager knows answer 404 `UnknownPipelineName` for a missing pipeline and
//! otherwise 501 `StandinNotImplemented`; a known route with a wrong method answers 403
//! `InsufficientPermissions` without `details`; anything else is an empty 404, as the manager does.
//!
//! Order of checks per request: fault → public routes → API key → route/method → query string
//! (text/plain 400) → pipeline lookup → action. Path segments are percent-decoded one by one
//! after splitting, so `a%2Fb` is a name and `%61ctivate` routes as `activate`.

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

use super::state::{Desired, Pipeline, PipelineSpec, Refusal, Selector, Status, Target};
use super::{lock, Fault, Shared};
use crate::body::{boxed, empty, full, Body};
use crate::compress;

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

/// A request resolved to a known route.
enum Route {
    ClusterHealthz,
    Config,
    Pipelines,
    Pipeline(String),
    /// `/v0/pipelines/{name}/{action}` (action may be two segments, e.g. `checkpoint/sync`).
    Action(String, String),
    Egress(String),
    Ingress(String),
    /// A known route the stand-in does not implement.
    Unimplemented(String),
}

/// Resolves `segments` to a route and the methods it accepts; `None` for an unknown path.
fn resolve(segments: &[String]) -> Option<(Route, &'static [Method])> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];
    const GET_POST: &[Method] = &[Method::GET, Method::POST];
    const PIPELINE: &[Method] = &[Method::GET, Method::PUT, Method::DELETE, Method::PATCH];
    let route = match s.as_slice() {
        ["v0", "cluster_healthz"] => (Route::ClusterHealthz, GET),
        ["v0", "config"] => (Route::Config, GET),
        ["v0", "pipelines"] => (Route::Pipelines, GET_POST),
        ["v0", "pipelines", name] => (Route::Pipeline((*name).to_owned()), PIPELINE),
        ["v0", "pipelines", name, "egress", _] => (Route::Egress((*name).to_owned()), POST),
        ["v0", "pipelines", name, "ingress", _] => (Route::Ingress((*name).to_owned()), POST),
        ["v0", "pipelines", name, "events", _] => (Route::Unimplemented((*name).to_owned()), GET),
        ["v0", "pipelines", name, "tables", _, "connectors", _, "stats" | "completion_token"] => {
            (Route::Unimplemented((*name).to_owned()), GET_POST)
        }
        ["v0", "pipelines", name, "tables", _, "connectors", _, _] => {
            (Route::Unimplemented((*name).to_owned()), POST)
        }
        ["v0", "pipelines", name, "views", _, "connectors", _, "stats"] => {
            (Route::Unimplemented((*name).to_owned()), GET)
        }
        ["v0", "pipelines", name, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
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
    let method = req.method().clone();
    let public = match segments
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["healthz"] => Some(json_response(StatusCode::OK, &json!({"status": "healthy"}))),
        ["config", "authentication"] => Some(json_response(StatusCode::OK, &json!({}))),
        ["robots.txt"] => Some(text_response(
            StatusCode::OK,
            TEXT_PLAIN_UTF8,
            "User-agent: *\nDisallow: /\n",
        )),
        _ => None,
    };
    if let (Some(response), &Method::GET) = (public, &method) {
        return response;
    }
    if let Err(refused) = authenticate(shared, &req) {
        return refused;
    }
    let Some((route, methods)) = resolve(&segments) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    if !methods.contains(&method) {
        return no_classification();
    }
    match route {
        Route::ClusterHealthz => cluster_healthz(shared),
        Route::Config => configuration(),
        Route::Pipelines if method == Method::GET => list_pipelines(shared, &req),
        Route::Pipelines => create_pipeline(shared, req).await,
        Route::Pipeline(name) => match method {
            Method::GET => get_pipeline(shared, &req, &name),
            Method::PUT => put_pipeline(shared, req, name).await,
            Method::DELETE => delete_pipeline(shared, &name),
            _ => unimplemented(shared, &req, &name),
        },
        Route::Action(name, action) => match action.as_str() {
            "start" => start(shared, &req, &name),
            "stop" => stop(shared, &req, &name),
            "pause" => pause_or_resume(shared, &name, "pause", Target::Paused),
            "resume" => pause_or_resume(shared, &name, "resume", Target::Running),
            "activate" => activate(shared, &req, &name),
            "dismiss_error" => dismiss_error(shared, &name),
            "query" => query(shared, req, &name),
            _ => unimplemented(shared, &req, &name),
        },
        Route::Egress(name) => egress(shared, &name),
        Route::Ingress(name) => ingress(shared, req, &name).await,
        Route::Unimplemented(name) => unimplemented(shared, &req, &name),
    }
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
                "Deployment status (current: '{}', desired: '{}') cannot have desired changed to '{}'. {hint}",
                status.as_str(),
                desired.as_str(),
                requested.as_str()
            ),
            Details::Object(vec![
                ("status", json!(status.as_str())),
                ("current_desired_status", json!(desired.as_str())),
                ("new_desired_status", json!(requested.as_str())),
                ("hint", json!(hint)),
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

/// Reads a JSON body the way actix-web's `Json` does: 2 MiB limit (413), text/plain 400 on
/// malformed JSON.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
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

/// `GET /v0/config` (`Configuration`): the Python SDK's client reads it when it is created.
/// The edition is Enterprise because the stand-in implements activate.
#[derive(Serialize)]
struct Configuration {
    posthog: &'static str,
    conceptualhq: &'static str,
    product_fruits: &'static str,
    edition: &'static str,
    license_validity: Option<Value>,
    version: &'static str,
    revision: &'static str,
    runtime_revision: &'static str,
    changelog_url: &'static str,
    build_info: Value,
    build_source: &'static str,
    unstable_features: Option<String>,
    update_info: Option<Value>,
}

fn configuration() -> Response<Body> {
    const REVISION: &str = "5c7931d09fc37e0976143e50a81169dbd98ec0cc";
    json_response(
        StatusCode::OK,
        &Configuration {
            posthog: "",
            conceptualhq: "",
            product_fruits: "",
            edition: "Enterprise",
            license_validity: None,
            version: super::state::PLATFORM_VERSION,
            revision: REVISION,
            runtime_revision: REVISION,
            changelog_url: "https://github.com/feldera/feldera/releases/tag/v0.337.0",
            build_info: json!({}),
            build_source: "source",
            unstable_features: None,
            update_info: None,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Pipeline management

#[derive(Deserialize)]
struct SelectorQuery {
    selector: Option<Selector>,
}

fn list_pipelines<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    let query: SelectorQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut pipelines = lock(&shared.pipelines);
    let views = pipelines.list(
        query.selector.unwrap_or(Selector::All),
        shared.opts.lifecycle_delay,
    );
    json_response(StatusCode::OK, &views)
}

fn get_pipeline<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    let query: SelectorQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut pipelines = lock(&shared.pipelines);
    match pipelines.get_mut(name, shared.opts.lifecycle_delay) {
        Some(pipeline) => json_response(
            StatusCode::OK,
            &pipeline.view(query.selector.unwrap_or(Selector::All)),
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
            Details::Null,
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
    let pipeline = Pipeline::new(spec, SystemTime::now(), Instant::now());
    let response = json_response(StatusCode::CREATED, &pipeline.view(Selector::All));
    pipelines.insert(pipeline);
    response
}

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
                "The pipeline does not exist, thus cannot be renamed.".to_owned(),
                Details::Null,
            );
        }
        let pipeline = Pipeline::new(spec, SystemTime::now(), Instant::now());
        let response = json_response(StatusCode::CREATED, &pipeline.view(Selector::All));
        pipelines.insert(pipeline);
        return response;
    };
    if existing.status() != Status::Stopped {
        return error_response(
            StatusCode::BAD_REQUEST,
            "UpdateRestrictedToStopped",
            "Pipeline can only be updated while stopped. Stop it first by invoking '/stop'."
                .to_owned(),
            Details::Null,
        );
    }
    if spec.name != name && pipelines.contains(&spec.name) {
        return duplicate_name();
    }
    let Some(mut pipeline) = pipelines.remove(&name) else {
        return unknown_pipeline(shared, &name);
    };
    pipeline.update(spec);
    let response = json_response(StatusCode::OK, &pipeline.view(Selector::All));
    pipelines.insert(pipeline);
    response
}

fn delete_pipeline(shared: &Shared, name: &str) -> Response<Body> {
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    if pipeline.status() != Status::Stopped || pipeline.desired() != Desired::Stopped {
        return error_response(
            StatusCode::BAD_REQUEST,
            "DeleteRestrictedToFullyStopped",
            "Cannot delete a pipeline which is not fully stopped. Stop the pipeline first fully by invoking the '/stop' endpoint.".to_owned(),
            Details::Null,
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

fn start<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    let query: StartQuery = match parse_query(req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
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
    match pipeline.start(target, SystemTime::now(), Instant::now()) {
        Ok(()) => status_only(StatusCode::ACCEPTED),
        Err(refused) => refusal(name, refused),
    }
}

#[derive(Deserialize)]
struct StopQuery {
    #[allow(dead_code)]
    force: Option<bool>,
}

fn stop<B>(shared: &Shared, req: &Request<B>, name: &str) -> Response<Body> {
    if let Err(response) = parse_query::<StopQuery, B>(req) {
        return response;
    }
    let mut pipelines = lock(&shared.pipelines);
    let Some(pipeline) = pipelines.get_mut(name, shared.opts.lifecycle_delay) else {
        return unknown_pipeline(shared, name);
    };
    pipeline.stop(SystemTime::now(), Instant::now());
    status_only(StatusCode::ACCEPTED)
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
    status_only(StatusCode::OK)
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
        return websocket_echo(shared, req);
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

/// Completes the WebSocket handshake, then echoes whatever bytes arrive (frames are not parsed).
fn websocket_echo(shared: &Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
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
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "feldera-ws-v1"));
    let mut hasher = Sha1::new();
    hasher.update(&key);
    hasher.update(WEBSOCKET_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());

    let upgrade = hyper::upgrade::on(&mut req);
    let mut closed = shared.closed.subscribe();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        tokio::select! {
            _ = tokio::io::copy(&mut reader, &mut writer) => {}
            _ = closed.wait_for(|closed| *closed) => {}
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
