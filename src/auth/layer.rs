//! The auth slot of the stack: turns the request's credential into a [`Principal`] and checks
//! the endpoint's minimum role.
//!
//! With `[auth] mode = "off"` every request is the anonymous principal with the `owner` role
//! and the tenant the client names in `Feldera-Tenant` (nothing is verified, so nothing is
//! enforced). With authentication on, public endpoints pass without a principal and every
//! other request needs a valid credential.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::StatusCode;
use serde_json::json;
use tower::{Layer, Service};

use crate::body::{Request, Response};
use crate::config::auth::{AuthConfig, AuthMode};
use crate::errors::GatewayError;
use crate::proxy::headers::FELDERA_TENANT;
use crate::routing::{Access, Classified};
use crate::telemetry::RequestLog;

use super::{Credential, Principal, Role};

/// Authenticates requests.
#[derive(Debug)]
pub struct Authenticator {
    mode: AuthMode,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        Authenticator { mode: config.mode }
    }

    fn authenticate(&self, request: &Request) -> Result<Option<Principal>, GatewayError> {
        let access = request
            .extensions()
            .get::<Classified>()
            .map_or(Access::Unclassified, |c| c.endpoint.access);
        match (self.mode, access) {
            (AuthMode::Off, _) => Ok(Some(Principal {
                id: Arc::from("anonymous"),
                credential: Credential::Anonymous,
                role: Role::Owner,
                tenant: request
                    .headers()
                    .get(FELDERA_TENANT)
                    .and_then(|v| v.to_str().ok())
                    .map(Arc::from),
            })),
            (AuthMode::On, Access::Public) => Ok(None),
            (AuthMode::On, _) => Err(GatewayError::new(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "No credentials were provided",
            )
            .with_details(json!({ "reason": "missing_credentials" }))),
        }
    }
}

/// The auth slot.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        AuthLayer { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            authenticator: self.authenticator.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    authenticator: Arc<Authenticator>,
    inner: S,
}

impl<S> Service<Request> for Auth<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<std::future::Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.authenticator.authenticate(&request) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    if let Some(log) = request.extensions().get::<RequestLog>() {
                        log.set_principal(principal.id.clone());
                    }
                    request.extensions_mut().insert(principal);
                }
                Either::Right(self.inner.call(request))
            }
            Err(error) => Either::Left(std::future::ready(Ok(error.into_response()))),
        }
    }
}
