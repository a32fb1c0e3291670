//! Limits on what clients may ask of the gateway: requests in flight (503), and the size
//! of what a client sends: the request target (414), the headers (431) and,
//! per endpoint class, the body (413).
//!
//! hyper answers its own parse errors with empty bodies, so the server configures hyper's
//! limits well above these (see `server`), and these checks answer first, in JSON: the
//! whole head (`max_header_bytes`), one header line (`max_header_line_bytes`, default 16 KiB)
//! and the number of lines (`max_header_count`, default 100) are each a 431.
//! Header size counts every name and value plus 4 bytes per line (`": "` and CRLF), which is
//! what the request takes on the wire in HTTP/1.1.
//!
//! The body limit (`server.max_body_bytes`) applies to every class but ingress. A
//! `Content-Length` over it is rejected at once with 413; otherwise the body is counted as it
//! streams and the forward fails with 413 when it passes the limit (the upstream sees the
//! request aborted, never a truncated body).
//!
//! Connection-level limits (idle and write-idle timeouts, `server.max_connections`) are
//! enforced by `server::conn`; their counters are [`ConnectionMetrics`], kept here so that
//! every runtime counts into the same families.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::Either;
use http::header;
use tower::{Layer, Service};

use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::body::{self, BodyProgress, Request, Response, Tracked};
use crate::check::RequestCheck;
use crate::context::RequestContext;
use crate::errors::GatewayError;

/// Checks the request target and header sizes.
#[derive(Clone, Copy)]
pub struct HeaderLimits {
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_header_line_bytes: usize,
    pub max_header_count: usize,
}

impl RequestCheck for HeaderLimits {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let uri_len = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len());
        if uri_len > self.max_uri_bytes {
            return Err(GatewayError::uri_too_long(uri_len, self.max_uri_bytes));
        }
        let headers = request.headers();
        if headers.len() > self.max_header_count {
            return Err(GatewayError::too_many_headers(
                headers.len(),
                self.max_header_count,
            ));
        }
        let mut size = 0;
        for (name, value) in headers {
            let line = name.as_str().len() + value.len() + 4;
            if line > self.max_header_line_bytes {
                return Err(GatewayError::header_line_too_large(
                    name.as_str(),
                    line,
                    self.max_header_line_bytes,
                ));
            }
            size += line;
        }
        if size > self.max_header_bytes {
            return Err(GatewayError::header_fields_too_large(
                size,
                self.max_header_bytes,
            ));
        }
        Ok(())
    }
}

/// Applies the body limit of the request's endpoint class and tracks the body's progress.
#[derive(Clone, Copy)]
pub struct BodyLimit {
    pub max_body_bytes: u64,
    /// A body that sends nothing for this long is cut off (408).
    pub idle: std::time::Duration,
}

impl RequestCheck for BodyLimit {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let context = RequestContext::of(request)?.clone();
        let limited = context.classified()?.endpoint.class.limits_body();
        let limit = limited.then_some(self.max_body_bytes);
        if let Some(limit) = limit {
            let declared = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(GatewayError::payload_too_large(limit));
            }
        }
        if http_body::Body::is_end_stream(request.body()) {
            return Ok(());
        }
        let progress = BodyProgress::default();
        context.set_progress(progress.clone());
        let inner = std::mem::replace(request.body_mut(), body::empty());
        *request.body_mut() = body::boxed(Tracked::new(inner, limit, progress, self.idle));
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    reason: &'static str,
}

/// Why the gateway closed a client connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No request in progress for `server.idle_timeout`.
    Idle,
    /// The socket took no byte for `server.write_idle_timeout`.
    WriteStalled,
    /// A response (an HTTP/2 stream behind a shut flow-control window, or an HTTP/1.1 body
    /// hyper could not hand on) made no progress for `server.write_idle_timeout`.
    StreamStalled,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::WriteStalled => "write_stalled",
            CloseReason::StreamStalled => "stream_stalled",
        }
    }
}

/// Client connections: open now, refused over `server.max_connections`, and closed by the
/// gateway's timeouts. Clones count into the same metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    refused: Counter,
    closed: Family<CloseLabels, Counter>,
}

impl ConnectionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "client_connections",
            "Client connections open",
            self.open.clone(),
        );
        registry.register(
            "client_connections_refused",
            "Client connections refused over server.max_connections",
            self.refused.clone(),
        );
        registry.register(
            "client_connections_closed",
            "Client connections the gateway closed, by reason (idle, write_stalled, stream_stalled)",
            self.closed.clone(),
        );
    }

    /// Client connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// Takes a connection slot if fewer than `max` are open; the slot is given back when the
    /// returned value is dropped.
    pub fn admit(&self, max: usize) -> Option<ConnectionSlot> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        if self.open.get() >= max {
            self.refused.inc();
            return None;
        }
        self.open.inc();
        Some(ConnectionSlot {
            open: self.open.clone(),
        })
    }

    /// Counts a connection the gateway closed.
    pub fn closed(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&CloseLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Connections closed for `reason` so far.
    pub fn closed_count(&self, reason: CloseReason) -> u64 {
        self.closed
            .get_or_create(&CloseLabels {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Connections refused so far.
    pub fn refused_count(&self) -> u64 {
        self.refused.get()
    }
}

/// One open client connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Gauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Sheds load: at most `max` requests may be in the stack at once (counted until their
/// response headers leave; a stream's body does not hold a slot). Past that: 503
/// `ServiceUnavailable` with `Retry-After: 1`, before any work is spent on the request.
#[derive(Clone)]
pub struct InFlightLayer {
    max: usize,
    current: Arc<AtomicUsize>,
}

impl InFlightLayer {
    pub fn new(max: usize) -> Self {
        InFlightLayer {
            max,
            current: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service of [`InFlightLayer`].
#[derive(Clone)]
pub struct InFlight<S> {
    layer: InFlightLayer,
    inner: S,
}

/// Gives the slot back when the request is answered or dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// The inner future, holding its slot until it completes (or is dropped).
    pub struct InFlightFuture<F> {
        #[pin]
        inner: F,
        slot: Option<Slot>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for InFlightFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        this.slot.take();
        Poll::Ready(output)
    }
}

impl<S> Service<Request> for InFlight<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, InFlightFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let current = &self.layer.current;
        if current.fetch_add(1, Ordering::Relaxed) >= self.layer.max {
            current.fetch_sub(1, Ordering::Relaxed);
            let error = GatewayError::service_unavailable("too many requests in flight", 1);
            return Either::Left(ready(Ok(error.into_response())));
        }
        let slot = Slot(current.clone());
        Either::Right(InFlightFuture {
            inner: self.inner.call(request),
            slot: Some(slot),
        })
    }
}
