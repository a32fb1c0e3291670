//! Request ids, the request's span and the access log.
//!
//! The layer takes a handle to the request's context before passing the request on, so the
//! access-log line sees what inner layers learned (endpoint, principal, route, upstream, the
//! endpoint that answered and the tries it took) whatever answered the request. A request
//! without a context (only possible when a test drives the stack directly) is answered 500
//! `InternalError` and logged.
//!
//! The span: with tracing off, a plain `request{id}` span (what log lines inside a request
//! carry); with tracing on, the request's server span (`spans::request_span`), whose
//! attributes are recorded from the context once the response headers are in. The access
//! line is written after the span's work, outside it (its facts are the span's attributes
//! already), with the span's `trace_id` and `span_id`; with tracing off, `trace_id` is the
//! client's, when it sent a well-formed `traceparent` (correlation only).
//!
//! The line is written when the response headers leave: `bytes_in` is what the client had
//! sent of its body by then, `bytes_out` the response's declared `Content-Length` (absent for
//! a streamed answer), `duration_us` the time to headers. Nothing in it is a credential: the
//! principal is its name (`key:<name>`, `jwt:<iss>#<sub>`), and internal causes are written by
//! the layers that produce them, which never put a token or key in one.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderName, HeaderValue};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::body::{Request, Response, ResponseFuture};
use crate::config::{AccessField, LogConfig};
use crate::context::RequestContext;
use crate::errors::ErrorInfo;
use crate::spans;

use super::metrics::Answered;
use super::Metrics;
use crate::catalog::EndpointClass;

/// The error code of an error answer the manager wrote itself.
static UPSTREAM: std::borrow::Cow<'static, str> = std::borrow::Cow::Borrowed("upstream");

/// The request-id header, accepted from clients, sent upstream and echoed back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Accepts a client's id when it is 1 to 128 characters of `[A-Za-z0-9._:-]`.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Makes ids unique per process without a syscall: a random prefix and a counter.
struct IdMaker {
    prefix: u32,
    counter: AtomicU64,
}

impl IdMaker {
    fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // `{prefix:08x}-{n:012x}`, written by hand: this runs for every request.
        let mut id = [b'-'; 21];
        hex_into(&mut id[..8], u64::from(self.prefix));
        hex_into(&mut id[9..], n);
        HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("invalid"))
    }
}

/// Writes the low `out.len()` hex digits of `n` into `out`, zero-padded (lowercase).
fn hex_into(out: &mut [u8], mut n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The access-log fields chosen, as a set of bits (one per [`AccessField`]).
#[derive(Debug, Clone, Copy)]
struct Fields(u32);

impl Fields {
    fn of(chosen: &[AccessField]) -> Fields {
        Fields(
            chosen
                .iter()
                .fold(0, |bits, field| bits | 1 << *field as u32),
        )
    }

    fn has(self, field: AccessField) -> bool {
        self.0 & (1 << field as u32) != 0
    }
}

/// The outermost layer: request id, span, access log, request metrics.
#[derive(Clone)]
pub struct RequestLogLayer {
    ids: Arc<IdMaker>,
    metrics: Arc<Metrics>,
    fields: Fields,
}

impl RequestLogLayer {
    pub fn new(metrics: Arc<Metrics>, log: &LogConfig) -> Self {
        RequestLogLayer {
            ids: Arc::new(IdMaker {
                prefix: rand::random(),
                counter: AtomicU64::new(0),
            }),
            metrics,
            fields: Fields::of(&log.access_fields),
        }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLogService<S>;
    fn layer(&self, inner: S) -> RequestLogService<S> {
        RequestLogService {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct RequestLogService<S> {
    layer: RequestLogLayer,
    inner: S,
}

impl<S> Service<Request> for RequestLogService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> ResponseFuture {
        let start = Instant::now();
        let id = match request.headers().get(&REQUEST_ID) {
            Some(value) if acceptable(value) => value.clone(),
            _ => {
                let id = self.layer.ids.next();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let context = match RequestContext::of(&request) {
            Ok(context) => context.clone(),
            Err(error) => {
                let mut response = error.into_response();
                response.headers_mut().insert(REQUEST_ID, id);
                return Box::pin(std::future::ready(Ok(response)));
            }
        };
        context.set_id(id.clone());
        let traced = spans::request_span(&request, &id);
        // The access-log line and the span's attributes need the method and path after the
        // request has moved on; copy them only when one of them will be written.
        let logged = tracing::enabled!(target: "access", tracing::Level::INFO);
        let kept = (logged || traced.is_some())
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
        let fields = self.layer.fields;
        let client_trace = (logged && traced.is_none() && fields.has(AccessField::TraceId))
            .then(|| spans::client_trace_id(request.headers()).map(str::to_owned))
            .flatten();
        let span = match &traced {
            Some(span) => span.clone(),
            None => tracing::info_span!("request", id = id.to_str().unwrap_or("")),
        };
        let metrics = self.layer.metrics.clone();
        let in_flight = metrics.in_flight();
        // For the status page's recent errors (a reference-counted copy, not an allocation).
        let uri = request.uri().clone();
        let method = request.method().clone();
        let future: ResponseFuture = {
            let _entered = span.enter();
            Box::pin(self.inner.call(request))
        };
        Box::pin(async move {
            let Ok(mut response) = future.instrument(span).await;
            response.headers_mut().insert(REQUEST_ID, id.clone());
            let latency = start.elapsed();
            let status = response.status().as_u16();
            let error = response.extensions().get::<ErrorInfo>();
            drop(in_flight);
            let classified = context.classified_opt();
            let endpoint = classified.map_or("-", |c| c.endpoint.name);
            metrics.observe_request(&Answered {
                route: context.route_opt().map(|r| &r.upstream_name),
                endpoint,
                method: &method,
                status,
                error_code: error.map(|e| &e.code),
                latency,
            });
            if status >= 400 {
                let code = error.map_or(&UPSTREAM, |e| &e.code);
                metrics.status().error(code.clone(), status, uri.path());
            }
            // A stream's lifetime runs until its body ends (a WebSocket's tunnel is counted
            // by forwarding, as an open `ws` connection).
            let streamed = (200..300).contains(&status)
                && classified.is_some_and(|c| c.endpoint.class == EndpointClass::Stream);
            if let Some((method, path)) = kept {
                if let Some(span) = &traced {
                    spans::finish_request_span(span, &context, &method, &path, &response);
                }
                if logged {
                    let ids = traced.as_ref().and_then(spans::ids);
                    let trace_id = match &ids {
                        Some((trace_id, _)) => Some(trace_id.as_str()),
                        None => client_trace.as_deref(),
                    };
                    write_access_line(AccessLine {
                        fields,
                        id: &id,
                        trace_id,
                        span_id: ids.as_ref().map(|(_, span_id)| span_id.as_str()),
                        method: &method,
                        path: &path,
                        context: &context,
                        response: &response,
                        latency,
                    });
                }
            }
            if streamed {
                response = response.map(|body| metrics.time_stream(endpoint, start, body));
            }
            Ok(response)
        })
    }
}

/// What one access-log line is made of.
struct AccessLine<'a> {
    fields: Fields,
    id: &'a HeaderValue,
    trace_id: Option<&'a str>,
    span_id: Option<&'a str>,
    method: &'a http::Method,
    path: &'a str,
    context: &'a RequestContext,
    response: &'a Response,
    latency: std::time::Duration,
}

/// Writes the access-log line: every chosen field, `-` for a text fact not known (numbers
/// not known are left out).
fn write_access_line(line: AccessLine<'_>) {
    use AccessField as F;
    let AccessLine {
        fields,
        context,
        response,
        ..
    } = line;
    let on = |field| fields.has(field);
    let error = response.extensions().get::<ErrorInfo>();
    let route = context.route_opt();
    let principal = context.principal();
    let tries = context.tries();
    let bytes_out = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    tracing::info!(
        target: "access",
        request_id = on(F::RequestId).then(|| line.id.to_str().unwrap_or("")),
        trace_id = on(F::TraceId).then(|| line.trace_id.unwrap_or("-")),
        span_id = on(F::SpanId).then(|| line.span_id.unwrap_or("-")),
        method = on(F::Method).then(|| display(line.method)),
        path = on(F::Path).then_some(line.path),
        status = on(F::Status).then(|| response.status().as_u16()),
        endpoint = on(F::Endpoint)
            .then(|| context.classified_opt().map_or("-", |c| c.endpoint.name)),
        route = on(F::Route).then(|| route.map_or("-", |r| &*r.label)),
        upstream = on(F::Upstream).then(|| route.map_or("-", |r| &*r.upstream_name)),
        upstream_endpoint = on(F::UpstreamEndpoint)
            .then(|| tries.as_ref().map_or("-", |(endpoint, _)| endpoint.as_str())),
        retries = on(F::Retries)
            .then(|| tries.as_ref().map(|(_, retries)| *retries))
            .flatten(),
        principal = on(F::Principal).then(|| principal.map_or("-", |p| &*p.id)),
        tenant = on(F::Tenant)
            .then(|| principal.and_then(|p| p.tenant.as_deref()).unwrap_or("-")),
        error_code = on(F::ErrorCode).then(|| error.map_or("-", |e| &*e.code)),
        internal = on(F::Internal)
            .then(|| error.and_then(|e| e.internal.as_deref()).unwrap_or("-")),
        bytes_in = on(F::BytesIn)
            .then(|| context.progress().map_or(0, |p| p.bytes())),
        bytes_out = on(F::BytesOut).then_some(bytes_out).flatten(),
        duration_us = on(F::DurationUs).then_some(line.latency.as_micros() as u64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_prefix_and_the_counter_in_fixed_width_hex() {
        let ids = IdMaker {
            prefix: 0x00c0_ffee,
            counter: AtomicU64::new(0xab_cdef_0123),
        };
        assert_eq!(ids.next(), "00c0ffee-00abcdef0123");
        assert_eq!(ids.next(), "00c0ffee-00abcdef0124");
        // A counter past twelve digits keeps its low twelve, as `{:012x}` never would:
        // the width stays fixed (wrapping takes 2^48 requests).
        let wide = IdMaker {
            prefix: u32::MAX,
            counter: AtomicU64::new(0x1_0000_0000_0005),
        };
        assert_eq!(wide.next(), "ffffffff-000000000005");
    }
}
