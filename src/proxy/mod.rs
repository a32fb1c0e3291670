//! Forwarding: the innermost service. Sends the request to an endpoint of the selected
//! upstream, streams both bodies, tunnels WebSocket upgrades, and brings upstream errors into
//! the schema.
//!
//! Upgrades: only a `GET` asking for exactly `websocket` on an endpoint the catalog marks as
//! a WebSocket (the manager's ad-hoc `query`) is forwarded as an upgrade; anywhere else the
//! `Upgrade` header (and `HTTP2-Settings`) is stripped and the request goes on as a plain one.
//! An upstream `101` is tunnelled only in answer to such a request and only to `websocket`;
//! any other `101` becomes 502 `UpstreamUnavailable` ("unexpected protocol upgrade"), never a
//! tunnel — a tunnel is a connection on which nothing the gateway checks applies anymore.
//!
//! Bodies are never buffered: the request body goes up as the client sends it (counted
//! against the route's limit by [`body::Tracked`]), the response body comes down as the
//! upstream sends it. Only error bodies (status >= 400) are read, with a bound, to be
//! normalized ([`normalize`]).
//!
//! Failures map to: connection refused, reset or timed out on connect → 502
//! `UpstreamUnavailable` (and the endpoint is skipped for its cooldown; a request with no
//! body is retried once on each other endpoint, since nothing of it was sent); every endpoint
//! in cooldown → 503 `NoHealthyUpstream`; connection closed or garbage before the response →
//! 502; request body over the limit → 413; the client's body failing → 400
//! `InvalidRequestBody`.

pub mod body;
pub mod decode;
pub mod headers;
pub mod normalize;
pub mod timeout;
pub mod upstream;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::Service;

use crate::body::{self as stack_body, ClientBodyError, Request, Response, ResponseFuture};
use crate::context::RequestContext;
use crate::errors::GatewayError;

pub use self::timeout::TimeoutLayer;
pub use self::upstream::Upstream;

/// The upstreams of one runtime snapshot, in the order of `config.upstreams` (the index the
/// route in the request context names).
pub type Upstreams = Arc<[Arc<Upstream>]>;

/// The innermost service: forwards to the upstream routing chose.
#[derive(Clone)]
pub struct Forward {
    upstreams: Upstreams,
}

impl Forward {
    pub fn new(upstreams: Upstreams) -> Self {
        Forward { upstreams }
    }
}

impl Service<Request> for Forward {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> ResponseFuture {
        let upstreams = self.upstreams.clone();
        Box::pin(async move {
            Ok(forward(upstreams, request)
                .await
                .unwrap_or_else(GatewayError::into_response))
        })
    }
}

async fn forward(upstreams: Upstreams, mut request: Request) -> Result<Response, GatewayError> {
    let context = RequestContext::of(&request)?.clone();
    let route = context.route()?;
    let pool = upstreams
        .get(route.upstream)
        .cloned()
        .ok_or_else(|| GatewayError::internal(format!("no upstream #{}", route.upstream)))?;
    let catalogued = context.classified()?.endpoint;
    // Upgrades only where the manager serves a WebSocket, and only to one: anywhere else the
    // `Upgrade` header is stripped (a server may ignore it, RFC 9110 §7.8), so no tunnel can
    // carry requests past the stack's checks.
    let upgrade = catalogued.websocket
        && request.method() == Method::GET
        && headers::is_websocket_upgrade(request.headers());
    let server_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    headers::rewrite_request(
        &mut parts.headers,
        &pool,
        headers::Forwarded {
            client_ip: context.connection().peer_ip_header.clone(),
            scheme: context.connection().scheme,
            authority: parts.uri.authority().cloned(),
            principal: context.principal(),
            upgrade,
        },
    );
    // Nothing of the gateway's own state travels on to the manager.
    parts.extensions.clear();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let method = parts.method.clone();
    // A request with no body can be sent again if its connection fails: keep what it takes.
    let resend = (body.is_end_stream() && pool.endpoint_count() > 1)
        .then(|| (parts.method.clone(), parts.headers.clone()));
    // Managers speak HTTP/1.1, whatever the client spoke.
    parts.version = http::Version::HTTP_11;
    let mut request = Request::from_parts(parts, body);
    let mut tried = 0u64;
    loop {
        let (index, endpoint) = pool.choose(tried)?;
        *request.uri_mut() = Uri::builder()
            .scheme(endpoint.scheme.clone())
            .authority(endpoint.authority.clone())
            .path_and_query(path_and_query.clone())
            .build()
            .map_err(|e| GatewayError::internal(format!("building the upstream URI: {e}")))?;
        match pool.client().request(request).await {
            Ok(response) => {
                pool.mark_up(index);
                return Ok(respond(
                    response,
                    &pool.name,
                    &method,
                    catalogued,
                    &path_and_query,
                    server_upgrade,
                )
                .await);
            }
            Err(error) if error.is_connect() => {
                pool.mark_down(index);
                tried |= 1u64 << index.min(63);
                let reason = connect_reason(&error);
                let Some((method, headers)) = &resend else {
                    return Err(unavailable(&pool, reason, &error));
                };
                if pool.choose(tried).is_err() {
                    return Err(unavailable(&pool, reason, &error));
                }
                let mut again = Request::new(stack_body::empty());
                *again.method_mut() = method.clone();
                *again.headers_mut() = headers.clone();
                request = again;
            }
            Err(error) => return Err(map_send_error(&pool, &error)),
        }
    }
}

fn unavailable(
    pool: &Upstream,
    reason: &'static str,
    error: &hyper_util::client::legacy::Error,
) -> GatewayError {
    GatewayError::upstream_unavailable(&pool.name, reason).with_internal(error_chain(error))
}

fn connect_reason(error: &hyper_util::client::legacy::Error) -> &'static str {
    match find_cause::<std::io::Error>(error).map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused",
        Some(std::io::ErrorKind::TimedOut) => "connect timed out",
        _ if error_chain(error).contains("timed out") => "connect timed out",
        _ => "connect failed",
    }
}

fn map_send_error(pool: &Upstream, error: &hyper_util::client::legacy::Error) -> GatewayError {
    // The client's own body failing is found deeper in the chain than hyper's error that
    // wraps it, so look for it first.
    if let Some(body_error) = find_cause::<ClientBodyError>(error) {
        return match body_error {
            ClientBodyError::TooLarge { limit } => GatewayError::payload_too_large(*limit),
            ClientBodyError::Read(_) => GatewayError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestBody",
                "The request body could not be read",
            )
            .with_internal(error_chain(error)),
        };
    }
    let reason = match find_cause::<hyper::Error>(error) {
        Some(e) if e.is_parse() => "malformed response",
        Some(e) if e.is_incomplete_message() || e.is_closed() || e.is_canceled() => {
            "connection closed before the response"
        }
        _ => "request failed",
    };
    unavailable(pool, reason, error)
}

/// The first cause of type `T` in `error`'s source chain.
fn find_cause<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn respond(
    mut response: http::Response<Incoming>,
    upstream: &str,
    method: &Method,
    endpoint: &crate::catalog::Endpoint,
    path_and_query: &PathAndQuery,
    server_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // A tunnel only where one was asked for and allowed, and only to a WebSocket.
        let Some(server_upgrade) =
            server_upgrade.filter(|_| headers::is_websocket_upgrade(response.headers()))
        else {
            return GatewayError::upstream_unavailable(upstream, "unexpected protocol upgrade")
                .with_internal(format!(
                    "the upstream answered 101 (upgrade {:?}) to a request that may not upgrade",
                    response.headers().get(http::header::UPGRADE)
                ))
                .into_response();
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(server_upgrade, upstream_upgrade));
        return normalize::passthrough(response);
    }
    headers::strip_hop_by_hop(response.headers_mut(), false);
    if normalize::wants_normalizing(method, status, endpoint) {
        return normalize::normalize(response, upstream, path_and_query.path()).await;
    }
    normalize::passthrough(response)
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections.
async fn tunnel(server: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (server, upstream) = match tokio::try_join!(server, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let mut server = TokioIo::new(server);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut server, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}
