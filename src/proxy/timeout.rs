//! The time an upstream gets to answer, by endpoint class.
//!
//! Streams (`egress`, `query`, `logs`, …) and ingress have no timeout; compiler calls get
//! 300 s, slow operations 120 s, everything else the upstream's `request_timeout`. The timer
//! covers sending the request and receiving the response *headers*; a response body then
//! streams without a deadline. When the timer fires before the client finished sending its
//! body, the client was the slow one: 408 `RequestTimeout`; otherwise 504 `UpstreamTimeout`.
//! Either way the upstream request is dropped, which closes its connection. A request that
//! reaches this layer without a classification or a route is a bug in the stack's order: a
//! 500 `InternalError`, never a request forwarded without its deadline.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use std::future::{ready, Ready};

use futures_util::future::Either;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{BodyProgress, Request, Response};
use crate::context::RequestContext;
use crate::errors::GatewayError;

use super::Upstreams;

/// Applies the per-class upstream timeout.
#[derive(Clone)]
pub struct TimeoutLayer {
    upstreams: Upstreams,
}

impl TimeoutLayer {
    pub fn new(upstreams: Upstreams) -> Self {
        TimeoutLayer { upstreams }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            upstreams: self.upstreams.clone(),
            inner,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone)]
pub struct Timeout<S> {
    upstreams: Upstreams,
    inner: S,
}

/// What the timer needs: the limit, the upstream's name, the client's body progress.
type Deadline = (Duration, Arc<str>, Option<BodyProgress>);

/// The deadline of `request`: `Ok(None)` for streams.
fn deadline(upstreams: &Upstreams, request: &Request) -> Result<Option<Deadline>, GatewayError> {
    let context = RequestContext::of(request)?;
    let class = context.classified()?.endpoint.class;
    let route = context.route()?;
    let upstream = upstreams
        .get(route.upstream)
        .ok_or_else(|| GatewayError::internal(format!("no upstream #{}", route.upstream)))?;
    Ok(class
        .timeout(upstream.request_timeout)
        .map(|limit| (limit, upstream.name.clone(), context.progress().cloned())))
}

pin_project! {
    /// The inner future under a deadline; on expiry, 408 or 504 (see the module docs).
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
        upstream: Arc<str>,
        progress: Option<BodyProgress>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for TimeoutFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(_) if this.progress.as_ref().is_some_and(|p| !p.is_complete()) => {
                Ok(GatewayError::request_timeout(*this.limit).into_response())
            }
            Err(_) => {
                Ok(GatewayError::upstream_timeout(this.upstream, *this.limit).into_response())
            }
        })
    }
}

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<Ready<Result<Response, Infallible>>, Either<S::Future, TimeoutFuture<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match deadline(&self.upstreams, &request) {
            Err(error) => Either::Left(ready(Ok(error.into_response()))),
            Ok(None) => Either::Right(Either::Left(self.inner.call(request))),
            Ok(Some((limit, upstream, progress))) => Either::Right(Either::Right(TimeoutFuture {
                inner: tokio::time::timeout(limit, self.inner.call(request)),
                limit,
                upstream,
                progress,
            })),
        }
    }
}
