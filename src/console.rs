//! The manager's web console through the gateway: the one thing the gateway answers for it.
//!
//! The console's files are forwarded like any request (the catalog classifies every `GET` and
//! `HEAD` outside `/v0` as the public `console` endpoint, routed to the console's upstream).
//! What the gateway may answer itself is the console's first question, `GET
//! /config/authentication` — which identity provider to log into: with
//! `[console.authentication]` it answers 200 in the manager's own shape (`{"GenericOidc":
//! {…}}` or `{"AwsCognito": {…}}`), so the console logs into a provider whose tokens the
//! gateway verifies (`check-config` refuses an issuer that is not one of `[[auth.jwt]]`'s).
//! Without it the question goes to the manager like everything else.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{self, HeaderValue};
use tower::{Layer, Service};

use crate::body::{self, Request, Response};
use crate::config::browser::ConsoleAuthentication;
use crate::context::RequestContext;

/// The body the gateway answers `GET /config/authentication` with, made once.
#[derive(Debug, Clone)]
pub struct IdentityProviderAnswer(Bytes);

impl IdentityProviderAnswer {
    pub fn new(config: &ConsoleAuthentication) -> Self {
        IdentityProviderAnswer(Bytes::from(config.manager_body().to_string()))
    }

    fn response(&self) -> Response {
        let mut response = Response::new(body::full(self.0.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Answers the console's identity-provider question when configured.
#[derive(Clone)]
pub struct ConsoleLayer {
    answer: Option<IdentityProviderAnswer>,
}

impl ConsoleLayer {
    pub fn new(answer: Option<IdentityProviderAnswer>) -> Self {
        ConsoleLayer { answer }
    }
}

impl<S> Layer<S> for ConsoleLayer {
    type Service = Console<S>;
    fn layer(&self, inner: S) -> Console<S> {
        Console {
            answer: self.answer.clone(),
            inner,
        }
    }
}

/// The service of [`ConsoleLayer`].
#[derive(Clone)]
pub struct Console<S> {
    answer: Option<IdentityProviderAnswer>,
    inner: S,
}

impl<S> Service<Request> for Console<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(answer) = &self.answer else {
            return Either::Right(self.inner.call(request));
        };
        match RequestContext::of(&request).and_then(|c| c.classified()) {
            Ok(classified) if classified.endpoint.identity_provider => {
                Either::Left(ready(Ok(answer.response())))
            }
            Ok(_) => Either::Right(self.inner.call(request)),
            Err(error) => Either::Left(ready(Ok(error.into_response()))),
        }
    }
}
