//! The time an upstream gets to answer, by endpoint class.
//!
//! Streams (`egress`, `query`, `logs`, …) and ingress have no timeout; compiler calls get
//! 300 s, slow operations 120 s, everything else the upstream's `request_timeout`. The timer
//! covers sending the request and receiving the response *headers*; a response body then
//! streams without a deadline. When the timer fires before the client finished sending its
//! body, the client was the slow one: 408 `RequestTimeout`; otherwise 504 `UpstreamTimeout`.
//! Either way the upstream request is dropped, which closes its connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{Request, Response};
use crate::errors::GatewayError;
use crate::routing::Classified;

use super::{BodyProgress, SelectedUpstream};

/// Applies the per-class upstream timeout.
#[derive(Clone, Copy, Default)]
pub struct TimeoutLayer;

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
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
    type Future = Either<S::Future, TimeoutFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let extensions = request.extensions();
        let (Some(classified), Some(upstream)) = (
            extensions.get::<Classified>(),
            extensions.get::<SelectedUpstream>(),
        ) else {
            return Either::Left(self.inner.call(request));
        };
        let Some(limit) = classified
            .endpoint
            .class
            .timeout(upstream.0.request_timeout)
        else {
            return Either::Left(self.inner.call(request));
        };
        let upstream = upstream.0.name.clone();
        let progress = extensions.get::<BodyProgress>().cloned();
        Either::Right(TimeoutFuture {
            inner: tokio::time::timeout(limit, self.inner.call(request)),
            limit,
            upstream,
            progress,
        })
    }
}
