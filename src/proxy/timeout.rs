//! The time an upstream gets to answer, by endpoint class.
//!
//! Streams (`egress`, `query`, `logs`, …) and ingress have no timeout; compiler calls get
//! 300 s, slow operations 120 s, everything else the upstream's `request_timeout`. The timer
//! covers sending the request and receiving the response *headers*; a response body then
//! streams without a deadline. When the timer fires before the client finished sending its
//! body, the client was the slow one: 408 `RequestTimeout`; otherwise 504 `UpstreamTimeout`.
//! Either way the upstream request is dropped, which closes its connection.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tower::{Layer, Service};

use crate::body::{Request, Response, ResponseFuture};
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

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, ResponseFuture>;

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
        let name = upstream.0.name.clone();
        let progress = extensions.get::<BodyProgress>().cloned();
        let future: ResponseFuture = Box::pin(self.inner.call(request));
        Either::Right(Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(response) => response,
                Err(_) if progress.is_some_and(|p| !p.is_complete()) => {
                    Ok(GatewayError::request_timeout(limit).into_response())
                }
                Err(_) => Ok(GatewayError::upstream_timeout(&name, limit).into_response()),
            }
        }))
    }
}
