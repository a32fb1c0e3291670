//! The two rate-limit layers of the stack: [`RateLimitLayer::client_ip`] (before
//! authentication) and [`RateLimitLayer::principal`] (after it).
//!
//! Behaviour: a request the limiter refuses is answered at once (429 `RateLimitExceeded`, or
//! 503 when Redis is down and `on_error = "deny"`) and goes no further; an allowed request
//! continues, and its response — whatever answers it, including an error from an inner layer
//! or the upstream — gets the rate-limit headers (see [`super::headers`]). Only headers are
//! added; the body is passed through untouched, so streams stay streams.
//!
//! Edge cases: without `[rate_limit]` (`None`) the layer is a pass-through with no
//! allocation and no header. The client-IP stage needs the [`ClientAddr`] extension the
//! server inserts; a request without it (only possible in unit tests) is not limited by IP.
//! The principal stage limits only requests carrying a [`Principal`] extension.
//!
//! ```ignore
//! ServiceBuilder::new()
//!     .layer(RateLimitLayer::client_ip(limits.clone()))   // before auth
//!     .layer(AuthLayer::new(authenticator))
//!     .layer(RateLimitLayer::principal(limits))           // after auth
//!     .service(inner)
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tower::{Layer, Service};

use super::{RateLimits, Target};
use crate::auth::Principal;
use crate::body::{Request, Response, ResponseFuture};
use crate::errors::GatewayError;
use crate::routing::Classified;
use crate::server::ClientAddr;

/// Where in the stack a [`RateLimitLayer`] sits, which decides what it keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before authentication: the `anonymous` policy, keyed by client IP.
    ClientIp,
    /// After authentication: overrides, rules and `principal`, keyed by principal.
    Principal,
}

/// Rate limiting at one stage.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: Option<Arc<RateLimits>>,
    stage: Stage,
}

impl RateLimitLayer {
    /// The limit by client IP, for the slot before authentication.
    pub fn client_ip(limits: Option<Arc<RateLimits>>) -> Self {
        RateLimitLayer {
            limits,
            stage: Stage::ClientIp,
        }
    }

    /// The limit by principal, for the slot after authentication.
    pub fn principal(limits: Option<Arc<RateLimits>>) -> Self {
        RateLimitLayer {
            limits,
            stage: Stage::Principal,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            limits: self.limits.clone(),
            stage: self.stage,
            inner,
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    limits: Option<Arc<RateLimits>>,
    stage: Stage,
    inner: S,
}

fn target(limits: &RateLimits, stage: Stage, request: &Request) -> Option<Target> {
    let peer = request.extensions().get::<ClientAddr>().map(|c| c.0);
    match stage {
        Stage::ClientIp => limits.client_ip_target(peer?, request.headers()),
        Stage::Principal => {
            let principal = request.extensions().get::<Principal>()?;
            let endpoint = request
                .extensions()
                .get::<Classified>()
                .map(|c| &c.endpoint);
            limits.principal_target(
                principal,
                endpoint,
                peer.map(|peer| (peer, request.headers())),
            )
        }
    }
}

/// Boxes the inner call so the layer's future names no `S::Future` (whose `Send` rustc cannot
/// prove inside an `async` block for every lifetime of the body's error type).
fn boxed_call<S>(inner: &mut S, request: Request) -> ResponseFuture
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    Box::pin(inner.call(request))
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, ResponseFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(limits) = &self.limits else {
            return Either::Left(self.inner.call(request));
        };
        let Some(target) = target(limits, self.stage, &request) else {
            return Either::Left(self.inner.call(request));
        };
        let limits = limits.clone();
        // The clone is the one that was not made ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let Some(outcome) = limits.decide(&target).await else {
                return boxed_call(&mut inner, request).await;
            };
            if let Some(rejection) = outcome.rejection() {
                return Ok(GatewayError::from(rejection).into_response());
            }
            let mut response = boxed_call(&mut inner, request).await?;
            outcome.apply(response.headers_mut());
            Ok(response)
        }))
    }
}
