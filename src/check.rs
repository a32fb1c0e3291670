//! A layer for synchronous request checks: [`CheckLayer`] runs a [`RequestCheck`] and either
//! passes the (possibly rewritten) request on or answers with the check's [`GatewayError`].
//!
//! Most of the gateway's early phases — size limits, the canonical path, classification,
//! validation — need no I/O. Running them through this one layer keeps each in its own module
//! as a plain function of the request, costs no allocation per request (the future is an
//! `Either` of a ready response and the inner future), and keeps error rendering in
//! `errors.rs`.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use futures_util::future::Either;
use tower::{Layer, Service};

use crate::body::{Request, Response};
use crate::errors::GatewayError;

/// A synchronous check of a request; it may rewrite the request or add extensions.
pub trait RequestCheck: Clone + Send + Sync + 'static {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError>;
}

/// Runs a [`RequestCheck`] before the inner service.
#[derive(Clone)]
pub struct CheckLayer<C>(C);

impl<C> CheckLayer<C> {
    pub fn new(check: C) -> Self {
        CheckLayer(check)
    }
}

impl<C: Clone, S> Layer<S> for CheckLayer<C> {
    type Service = Check<C, S>;
    fn layer(&self, inner: S) -> Check<C, S> {
        Check {
            check: self.0.clone(),
            inner,
        }
    }
}

/// The service of [`CheckLayer`].
#[derive(Clone)]
pub struct Check<C, S> {
    check: C,
    inner: S,
}

impl<C, S> Service<Request> for Check<C, S>
where
    C: RequestCheck,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.check.check(&mut request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(error) => Either::Left(ready(Ok(error.into_response()))),
        }
    }
}
