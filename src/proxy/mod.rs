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
//! Connections come from each endpoint's own pool ([`pool`], capped: 503
//! `UpstreamOverloaded` beyond it); endpoints are chosen, ejected and health-checked by
//! [`upstream`] and [`endpoint`]; what may be sent again, and how often, is [`retry`]'s rule.
//!
//! Failures map to: connection refused, reset or timed out on connect, or a failed TLS
//! handshake (reason `TLS handshake failed: …`) → 502
//! `UpstreamUnavailable` (counted towards the endpoint's ejection; since nothing was sent,
//! the request goes to another endpoint when one is left and the retry budget allows);
//! every endpoint drained → 503 `NoHealthyUpstream`; connection closed or garbage before the
//! response → 502; request body over the limit → 413; the client's body failing → 400
//! `InvalidRequestBody`. A 502/503/504 from the endpoint itself (not one of the manager's
//! typed errors) counts towards its ejection and, for an idempotent request whose body is
//! kept and without `Retry-After`, is retried on another endpoint. Deadlines, and which
//! endpoint a timeout is blamed on, are [`timeout`]'s.

pub mod body;
pub mod decode;
pub mod endpoint;
pub mod headers;
pub mod metrics;
pub mod normalize;
pub mod pool;
pub mod quota;
pub mod retry;
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
use tracing::Instrument;

use self::endpoint::Observation;
use self::pool::{Checkout, ConnectionPool, Lease, PoolError, Returning};
use self::retry::Replay;
use self::timeout::{Deadline, Waiting};
use crate::body::{self as stack_body, ClientBodyError, Request, Response, ResponseFuture};
use crate::catalog::EndpointClass;
use crate::context::RequestContext;
use crate::errors::GatewayError;
use crate::spans;

pub use self::quota::PipelineQuotaLayer;
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
        // The one box of the forwarding path. What it holds is kept small (see `send`): a
        // future is copied whole every time it moves, whatever state it is in, and this
        // one moves into its box and is polled from there.
        Box::pin(forward(self.upstreams.clone(), request))
    }
}

async fn forward(upstreams: Upstreams, request: Request) -> Result<Response, Infallible> {
    Ok(forward_or_fail(upstreams, request)
        .await
        .unwrap_or_else(GatewayError::into_response))
}

async fn forward_or_fail(upstreams: Upstreams, request: Request) -> Result<Response, GatewayError> {
    let context = RequestContext::of(&request)?.clone();
    let route = context.route()?;
    let upstream = upstreams
        .get(route.upstream)
        .cloned()
        .ok_or_else(|| GatewayError::internal(format!("no upstream #{}", route.upstream)))?;
    let catalogued = context.classified()?.endpoint;
    let deadline = Deadline::start(
        catalogued.class,
        upstream.request_timeout,
        upstream.name.clone(),
        context.progress().cloned(),
    );
    let waiting = Waiting::new();
    let blame = |index| upstream.observe(index, Observation::ServerError, "timed out");
    // The upstream call's span (none while tracing is off): its context is what the manager
    // is sent as `traceparent`.
    let span = spans::upstream_span(&upstream.name, request.method());
    let trace = spans::propagation(&span);
    // Boxed: `Deadline::run` keeps what it is given and what it awaits side by side, and
    // `instrument` moves it once more; a box makes each of those a pointer.
    let tries = Box::pin(send(
        &upstream,
        &context,
        catalogued,
        request,
        deadline.as_ref(),
        &waiting,
        trace,
    ));
    let answer = Deadline::run(deadline.as_ref(), &waiting, tries, blame)
        .instrument(span.clone())
        .await;
    if !span.is_disabled() {
        spans::finish_upstream_span(&span, &context, &answer);
    }
    answer
}

/// Sends `request` to an endpoint of `upstream`, and to another one when that is safe (see
/// the module docs), until an answer's headers are in.
async fn send(
    upstream: &Arc<Upstream>,
    context: &RequestContext,
    catalogued: &'static crate::catalog::Endpoint,
    mut request: Request,
    deadline: Option<&Deadline>,
    waiting: &Waiting,
    trace: Option<http::HeaderMap>,
) -> Result<Response, GatewayError> {
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
        upstream,
        headers::Forwarded {
            client_ip: client_ip_header(context),
            client: context.client_ip(),
            scheme: context.connection().scheme,
            authority: parts.uri.authority().cloned(),
            principal: context.principal(),
            upgrade,
            trace,
        },
    );
    // Nothing of the gateway's own state travels on to the manager.
    parts.extensions.clear();
    let public_host = parts
        .headers
        .get(headers::X_FORWARDED_HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let public = public_host
        .as_deref()
        .map(|host| (context.connection().scheme, host));
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let method = parts.method.clone();
    // Managers speak HTTP/1.1, whatever the client spoke.
    parts.version = http::Version::HTTP_11;
    // What may be sent again after an answer (see `retry`): an idempotent request whose
    // body is kept — empty, or small enough to buffer. Streams and uploads never.
    let streaming = upgrade
        || matches!(
            catalogued.class,
            EndpointClass::Stream | EndpointClass::Ingress
        );
    let idempotent = retry::is_idempotent(&method) && !streaming && upstream.endpoint_count() > 1;
    let (body, kept) =
        keep_for_replay(body, &parts.headers, idempotent, upstream.retry_buffer).await?;
    let replay = match &kept {
        Some(_) => Replay::OnServerError,
        None => Replay::IfUnsent,
    };
    let template = kept.map(|bytes| (parts.method.clone(), parts.headers.clone(), bytes));
    upstream.retries.request(upstream.instant());

    let mut request = Request::from_parts(parts, body);
    let mut tried = 0u64;
    // A pooled connection found closed before anything was written is not the endpoint's
    // fault: the request goes again at once, a bounded number of times.
    let mut stale = 0;
    let mut last: Option<GatewayError> = None;
    loop {
        let (index, endpoint) = match upstream.choose(tried) {
            Ok(chosen) => chosen,
            Err(error) => return Err(last.unwrap_or(error)),
        };
        context.record_try(&endpoint.authority);
        // Origin form on the wire, with the endpoint as `Host` (the client's host went into
        // `X-Forwarded-Host`).
        *request.uri_mut() = Uri::from(path_and_query.clone());
        request.headers_mut().insert(
            http::header::HOST,
            endpoint
                .host
                .clone()
                .ok_or_else(|| GatewayError::internal("the endpoint is no valid Host header"))?,
        );
        let mut lease = match endpoint.pool.checkout().await {
            Ok(Checkout::Reused(lease)) => lease,
            // Boxed: connecting (TCP, TLS, the HTTP/1 handshake) is the largest state of
            // this future and the rarest; inline, every request would carry and copy it.
            Ok(Checkout::Connect(permit)) => {
                match Box::pin(upstream.connect(index, permit)).await {
                    Ok(sender) => Lease::opened_here(sender),
                    Err(error) => {
                        upstream.observe(index, Observation::ConnectFailed, error.reason());
                        let failed =
                            GatewayError::upstream_unavailable(&upstream.name, error.reason())
                                .with_internal(error_chain(&error));
                        // Nothing was sent: another endpoint may have it, within the budget.
                        tried |= bit(index);
                        if has_untried(upstream, tried) && upstream.may_retry() {
                            last = Some(failed);
                            continue;
                        }
                        return Err(failed);
                    }
                }
            }
            Err(PoolError::Overloaded(reason)) => {
                return Err(GatewayError::upstream_overloaded(&upstream.name, reason));
            }
        };
        let pool = endpoint.pool.clone();
        waiting.set(index);
        let try_started = std::time::Instant::now();
        let sent = lease.sender.try_send_request(request);
        // Only a try that can be repeated has a limit of its own.
        let try_timeout = template.as_ref().and(upstream.try_timeout);
        let sent = match Deadline::try_ends(deadline, try_timeout) {
            None => sent.await,
            Some(ends) => match tokio::time::timeout_at(ends, sent).await {
                Ok(sent) => sent,
                Err(_) => {
                    // This try is over (its request and connection dropped); the endpoint
                    // had the whole request, since only a kept body is tried with a limit.
                    waiting.clear();
                    upstream.observe(index, Observation::ServerError, "timed out");
                    tried |= bit(index);
                    let limit = upstream.try_timeout.unwrap_or(upstream.request_timeout);
                    let failed = GatewayError::upstream_timeout(&upstream.name, limit);
                    match &template {
                        Some(template) if has_untried(upstream, tried) && upstream.may_retry() => {
                            request = rebuild(template);
                            last = Some(failed);
                            continue;
                        }
                        _ => return Err(failed),
                    }
                }
            },
        };
        waiting.clear();
        if let Some(meter) = upstream.meters.endpoints.get(index) {
            meter.observe(try_started.elapsed());
        }
        let response = match sent {
            Ok(response) => response,
            Err(mut error) => {
                if let Some(unsent) = error.take_message() {
                    stale += 1;
                    if stale <= 3 {
                        request = unsent;
                        continue;
                    }
                }
                let hyper_error = error.into_error();
                let failed = map_send_error(upstream, &hyper_error);
                match crate::outbound::tls_failure(&hyper_error) {
                    // The manager rejected the handshake (a TLS 1.3 alert that arrives with
                    // the first answer): a connect failure, not a failing server.
                    Some(reason) => upstream.observe(index, Observation::ConnectFailed, reason),
                    None if failed.status() == StatusCode::BAD_GATEWAY => {
                        upstream.observe(index, Observation::ServerError, "no answer");
                    }
                    None => {}
                }
                tried |= bit(index);
                match (&template, replay) {
                    (Some(template), Replay::OnServerError)
                        if failed.status() == StatusCode::BAD_GATEWAY
                            && has_untried(upstream, tried)
                            && upstream.may_retry() =>
                    {
                        request = rebuild(template);
                        last = Some(failed);
                        continue;
                    }
                    _ => return Err(failed),
                }
            }
        };
        let status = response.status();
        if headers::malformed_response(status, response.headers()) {
            upstream.observe(index, Observation::ServerError, "malformed response");
            return Err(
                GatewayError::upstream_unavailable(&upstream.name, "malformed response")
                    .with_internal(format!(
                        "status {status}, transfer-encoding {:?}, content-length {:?}",
                        response.headers().get(http::header::TRANSFER_ENCODING),
                        response.headers().get(http::header::CONTENT_LENGTH)
                    )),
            );
        }
        let mut response = response;
        headers::rewrite_location(response.headers_mut(), &endpoint.authority, public);
        if !matches!(status.as_u16(), 502..=504) || upgrade {
            upstream.observe(index, Observation::Served, "");
            return Ok(respond(
                response,
                lease,
                pool,
                &upstream.name,
                &upstream.meters,
                &method,
                catalogued,
                &path_and_query,
                server_upgrade,
            )
            .await);
        }
        // A 502/503/504: the manager's own word about a pipeline, or the endpoint failing?
        let (mut parts, body) = response.into_parts();
        // Error paths below are boxed for the same reason as connecting.
        let read = Box::pin(normalize::read_error_body(body, &upstream.name)).await;
        let body = match read {
            Ok(body) => body,
            Err(failed) => return Err(failed),
        };
        if Box::pin(normalize::is_manager_error(&parts.headers, &body)).await {
            upstream.observe(index, Observation::Served, "");
        } else {
            upstream.observe(index, Observation::ServerError, status.as_str());
            tried |= bit(index);
            let asked_to_wait = parts.headers.contains_key(http::header::RETRY_AFTER);
            if let (Some(template), Replay::OnServerError, false) =
                (&template, replay, asked_to_wait)
            {
                if has_untried(upstream, tried) && upstream.may_retry() {
                    request = rebuild(template);
                    continue;
                }
            }
        }
        headers::strip_hop_by_hop(&mut parts.headers, false);
        if normalize::wants_normalizing(&method, status, catalogued) {
            return Ok(Box::pin(normalize::normalize_read(
                parts,
                body,
                path_and_query.path(),
            ))
            .await);
        }
        let bytes = match body {
            normalize::ErrorBody::Complete(bytes) | normalize::ErrorBody::TooLong(bytes) => bytes,
        };
        return Ok(http::Response::from_parts(parts, stack_body::full(bytes)));
    }
}

/// `X-Forwarded-For`: the peer's (made once per connection), or the client resolved behind
/// trusted proxies.
fn client_ip_header(context: &RequestContext) -> http::HeaderValue {
    let connection = context.connection();
    let client = context.client_ip();
    if client == connection.peer.ip() {
        return connection.peer_ip_header.clone();
    }
    http::HeaderValue::try_from(client.to_string())
        .unwrap_or_else(|_| connection.peer_ip_header.clone())
}

fn bit(index: usize) -> u64 {
    1u64 << index.min(63)
}

/// Whether some endpoint is neither tried nor draining.
fn has_untried(upstream: &Upstream, tried: u64) -> bool {
    upstream
        .endpoints
        .iter()
        .enumerate()
        .any(|(i, e)| tried & bit(i) == 0 && !e.is_draining())
}

/// The request to send again: the kept method, headers and body.
fn rebuild(template: &(Method, http::HeaderMap, bytes::Bytes)) -> Request {
    let (method, headers, body) = template;
    let mut request = Request::new(stack_body::full(body.clone()));
    *request.method_mut() = method.clone();
    *request.headers_mut() = headers.clone();
    *request.version_mut() = http::Version::HTTP_11;
    request
}

/// Keeps the body of a request that may be sent again: an empty one always, a small one of
/// an idempotent request by reading it first (a client that sends more than it declared, or
/// fails, gets the same errors as when streaming).
async fn keep_for_replay(
    body: stack_body::Body,
    headers: &http::HeaderMap,
    idempotent: bool,
    limit: usize,
) -> Result<(stack_body::Body, Option<bytes::Bytes>), GatewayError> {
    use http_body_util::BodyExt as _;
    if !idempotent {
        return Ok((body, None));
    }
    if body.is_end_stream() {
        return Ok((body, Some(bytes::Bytes::new())));
    }
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_none_or(|n| n > limit) {
        return Ok((body, None));
    }
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            Ok((stack_body::full(bytes.clone()), Some(bytes)))
        }
        Err(error) => Err(client_body_error(&*error).unwrap_or_else(|| {
            GatewayError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestBody",
                "The request body could not be read",
            )
            .with_internal(error.to_string())
        })),
    }
}

/// The answer for the client's own body failing, when that is what `error` is.
fn client_body_error(error: &(dyn std::error::Error + 'static)) -> Option<GatewayError> {
    let body_error = error
        .downcast_ref::<ClientBodyError>()
        .or_else(|| find_cause::<ClientBodyError>(error))?;
    Some(match body_error {
        ClientBodyError::TooLarge { limit } => GatewayError::payload_too_large(*limit),
        ClientBodyError::Idle { after } => {
            GatewayError::request_timeout(*after).with_internal("the client's request body stalled")
        }
        ClientBodyError::Read(_) => GatewayError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "The request body could not be read",
        )
        .with_internal(error_chain(error)),
    })
}

fn map_send_error(upstream: &Upstream, error: &hyper::Error) -> GatewayError {
    // The client's own body failing is found deeper in the chain than hyper's error that
    // wraps it, so look for it first.
    if let Some(client) = client_body_error(error) {
        return client;
    }
    if let Some(reason) = crate::outbound::tls_failure(error) {
        return GatewayError::upstream_unavailable(&upstream.name, reason)
            .with_internal(error_chain(error));
    }
    let reason = if error.is_parse() {
        "malformed response"
    } else if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        "connection closed before the response"
    } else {
        "request failed"
    };
    GatewayError::upstream_unavailable(&upstream.name, reason).with_internal(error_chain(error))
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

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the facts of one response"
)]
async fn respond(
    mut response: http::Response<Incoming>,
    lease: Lease,
    pool: Arc<ConnectionPool>,
    upstream: &str,
    meters: &metrics::UpstreamMeters,
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
        let tunnel_guard = meters.tunnel();
        tokio::spawn(tunnel(server_upgrade, upstream_upgrade, tunnel_guard));
        return normalize::passthrough(response);
    }
    headers::strip_hop_by_hop(response.headers_mut(), false);
    if normalize::wants_normalizing(method, status, endpoint) {
        // Boxed: reading and rewriting an error body is the rare path (see `send`).
        return Box::pin(normalize::normalize(
            response,
            upstream,
            path_and_query.path(),
        ))
        .await;
    }
    // The connection goes back to the pool once this body has been read to its end.
    response.map(|incoming| stack_body::boxed(Returning::new(incoming, lease, pool)))
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections.
async fn tunnel(
    server: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _open: metrics::TunnelGuard,
) {
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
