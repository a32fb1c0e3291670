//! Request ids, the request's tracing span and the access log.
//!
//! The layer takes a handle to the request's context before passing the request on, so the
//! access-log line sees what inner layers learned (endpoint, principal, upstream) whatever
//! answered the request. A request without a context (only possible when a test drives the
//! stack directly) is answered 500 `InternalError` and logged.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderName, HeaderValue};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::body::{Request, Response, ResponseFuture};
use crate::context::RequestContext;
use crate::errors::ErrorInfo;

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
        let text = format!("{:08x}-{:012x}", self.prefix, n);
        HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("invalid"))
    }
}

/// The outermost layer: request id, span, access log, request metrics.
#[derive(Clone)]
pub struct RequestLogLayer {
    ids: Arc<IdMaker>,
    metrics: Arc<Metrics>,
}

impl RequestLogLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        RequestLogLayer {
            ids: Arc::new(IdMaker {
                prefix: rand::random(),
                counter: AtomicU64::new(0),
            }),
            metrics,
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
        // The access-log line needs the method and path after the request has moved on;
        // copy them only when the line will be written.
        let logged = tracing::enabled!(target: "access", tracing::Level::INFO)
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
        let span = tracing::info_span!("request", id = id.to_str().unwrap_or(""));
        let metrics = self.layer.metrics.clone();
        let in_flight = metrics.in_flight();
        // For the status page's recent errors (a reference-counted copy, not an allocation).
        let uri = request.uri().clone();
        let method = request.method().clone();
        let future: ResponseFuture = {
            let _entered = span.enter();
            Box::pin(self.inner.call(request))
        };
        Box::pin(
            async move {
                let Ok(mut response) = future.await;
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
                if let Some((method, path)) = logged {
                    tracing::info!(
                        target: "access",
                        method = %method,
                        path = %path,
                        status,
                        endpoint,
                        upstream = context.route_opt().map_or("-", |r| &*r.upstream_name),
                        principal = context.principal().map_or("-", |p| &*p.id),
                        error_code = error.map_or("-", |e| &*e.code),
                        internal = error.and_then(|e| e.internal.as_deref()).unwrap_or("-"),
                        latency_us = latency.as_micros() as u64,
                        request_id = id.to_str().unwrap_or(""),
                    );
                }
                if streamed {
                    response = response.map(|body| metrics.time_stream(endpoint, start, body));
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
