//! Cross-origin resource sharing, from `[cors]`: browsers on another origin (a console served
//! elsewhere, notebooks) may call the API.
//!
//! Two layers over one [`CorsPolicy`]:
//! - [`CorsLayer::decorate`] sits near the top of the stack: every response to a request
//!   whose `Origin` is allowed — errors included, so a browser can read our 401 and 429
//!   bodies — gets `Access-Control-Allow-Origin` (the origin itself; `*` only when `*` is
//!   allowed and credentials are not), `Access-Control-Allow-Credentials` when configured,
//!   `Access-Control-Expose-Headers`, and `Vary: Origin`. A disallowed origin gets nothing
//!   (the browser then hides the response from the page).
//! - [`CorsLayer::preflight`] answers preflights (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`, classified as the catalog's `preflight`) itself: after
//!   the per-IP limit, before authentication (browsers send preflights without credentials).
//!   An allowed origin asking for allowed methods and headers gets 204 with
//!   `Access-Control-Allow-Methods`, `-Allow-Headers` and `-Max-Age`; anything else is 403
//!   `CorsRejected` in the schema, saying what was refused.
//!
//! Without `[cors]` both layers pass everything through: preflights then go to the manager
//! (unauthenticated, like the manager expects), which answers them itself.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use pin_project_lite::pin_project;
use serde_json::json;
use tower::{Layer, Service};

use crate::body::{self, Request, Response};
use crate::config::CorsConfig;
use crate::context::RequestContext;
use crate::errors::GatewayError;

/// `[cors]`, ready to answer.
#[derive(Debug)]
pub struct CorsPolicy {
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let text = items.collect::<Vec<_>>().join(", ");
    // Method and header names are valid header-value text.
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""))
}

impl CorsPolicy {
    pub fn new(config: &CorsConfig) -> CorsPolicy {
        let methods: Vec<Method> = config.allow_methods.iter().map(|m| m.0.clone()).collect();
        let headers: Vec<HeaderName> = config.allow_headers.iter().map(|h| h.0.clone()).collect();
        let expose: Vec<&str> = config.expose_headers.iter().map(|h| h.0.as_str()).collect();
        CorsPolicy {
            any_origin: config.allow_origins.iter().any(|o| o == "*"),
            origins: config
                .allow_origins
                .iter()
                .filter(|o| *o != "*")
                .cloned()
                .collect(),
            allow_methods: joined(methods.iter().map(Method::as_str)),
            allow_headers: joined(headers.iter().map(HeaderName::as_str)),
            expose_headers: (!expose.is_empty()).then(|| joined(expose.into_iter())),
            methods,
            headers,
            credentials: config.allow_credentials,
            max_age: HeaderValue::from(config.max_age.as_secs()),
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, when it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let text = origin.to_str().ok()?;
        if self.origins.iter().any(|o| o == text) {
            return Some(origin.clone());
        }
        // `*` is refused with credentials by `check-config`.
        self.any_origin.then(|| HeaderValue::from_static("*"))
    }

    /// Adds the response headers for an allowed `origin`.
    fn decorate(&self, origin: &HeaderValue, headers: &mut http::HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        let Some(allowed) = self.allow_origin(origin) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// The answer to a preflight: 204, or the refusal.
    fn preflight(&self, request: &Request) -> Result<Response, GatewayError> {
        let headers = request.headers();
        let origin = headers.get(header::ORIGIN);
        if origin.and_then(|o| self.allow_origin(o)).is_none() {
            let origin = origin.and_then(|o| o.to_str().ok()).unwrap_or("");
            return Err(rejected(
                "origin",
                json!({ "origin": origin }),
                "the origin is not allowed",
            ));
        }
        let method = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        if !method.as_ref().is_some_and(|m| self.methods.contains(m)) {
            let asked = headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|m| m.to_str().ok())
                .unwrap_or("");
            return Err(rejected(
                "method",
                json!({ "method": asked }),
                "the method is not allowed",
            ));
        }
        let refused: Vec<String> = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .filter(|h| !self.headers.iter().any(|allowed| allowed.as_str() == h))
            .collect();
        if !refused.is_empty() {
            return Err(rejected(
                "headers",
                json!({ "headers": refused }),
                "a request header is not allowed",
            ));
        }
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(response)
    }
}

fn rejected(what: &'static str, mut details: serde_json::Value, reason: &str) -> GatewayError {
    details["refused"] = what.into();
    GatewayError::new(
        StatusCode::FORBIDDEN,
        "CorsRejected",
        format!("Cross-origin request refused: {reason}"),
    )
    .with_details(details)
}

/// Which of the two CORS jobs a layer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Decorate,
    Preflight,
}

/// A CORS layer (see the module docs); `None` policy: pass through.
#[derive(Clone)]
pub struct CorsLayer {
    policy: Option<Arc<CorsPolicy>>,
    job: Job,
}

impl CorsLayer {
    /// Adds the CORS headers to every response to an allowed origin.
    pub fn decorate(policy: Option<Arc<CorsPolicy>>) -> Self {
        CorsLayer {
            policy,
            job: Job::Decorate,
        }
    }

    /// Answers preflights.
    pub fn preflight(policy: Option<Arc<CorsPolicy>>) -> Self {
        CorsLayer {
            policy,
            job: Job::Preflight,
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;
    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            policy: self.policy.clone(),
            job: self.job,
            inner,
        }
    }
}

/// The service of [`CorsLayer`].
#[derive(Clone)]
pub struct Cors<S> {
    policy: Option<Arc<CorsPolicy>>,
    job: Job,
    inner: S,
}

pin_project! {
    /// The inner future; its response gets the CORS headers of `origin`.
    pub struct DecorateFuture<F> {
        #[pin]
        inner: F,
        policy: Arc<CorsPolicy>,
        origin: HeaderValue,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for DecorateFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        this.policy.decorate(this.origin, response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<Ready<Result<Response, Infallible>>, Either<S::Future, DecorateFuture<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(policy) = &self.policy else {
            return Either::Right(Either::Left(self.inner.call(request)));
        };
        match self.job {
            Job::Decorate => match request.headers().get(header::ORIGIN).cloned() {
                Some(origin) => Either::Right(Either::Right(DecorateFuture {
                    policy: policy.clone(),
                    origin,
                    inner: self.inner.call(request),
                })),
                None => Either::Right(Either::Left(self.inner.call(request))),
            },
            Job::Preflight => {
                let is_preflight = match RequestContext::of(&request).and_then(|c| c.classified()) {
                    Ok(classified) => *classified.endpoint == crate::catalog::PREFLIGHT,
                    Err(error) => return Either::Left(ready(Ok(error.into_response()))),
                };
                if !is_preflight {
                    return Either::Right(Either::Left(self.inner.call(request)));
                }
                let answer = policy
                    .preflight(&request)
                    .unwrap_or_else(GatewayError::into_response);
                Either::Left(ready(Ok(answer)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> CorsPolicy {
        let config: CorsConfig = toml::from_str(&format!(
            "allow_origins = [\"https://console.example.com\"]\n{extra}"
        ))
        .unwrap();
        CorsPolicy::new(&config)
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> Request {
        let mut request = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/v0/pipelines")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, method);
        if !headers.is_empty() {
            request = request.header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers);
        }
        request.body(body::empty()).unwrap()
    }

    #[test]
    fn an_allowed_preflight_gets_methods_headers_and_max_age() {
        let p = policy("allow_credentials = true");
        let answer = p
            .preflight(&preflight(
                "https://console.example.com",
                "POST",
                "Authorization, content-type",
            ))
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let h = answer.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, POST, PUT, PATCH, DELETE"
        );
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type, feldera-tenant"
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
    }

    #[test]
    fn a_refused_preflight_says_what_was_refused() {
        let p = policy("");
        for (request, refused) in [
            (preflight("https://evil.example", "GET", ""), "origin"),
            (
                preflight("https://console.example.com", "TRACE", ""),
                "method",
            ),
            (
                preflight("https://console.example.com", "GET", "x-secret"),
                "headers",
            ),
        ] {
            let error = p.preflight(&request).unwrap_err();
            assert_eq!(error.status(), StatusCode::FORBIDDEN);
            assert_eq!(error.code(), "CorsRejected");
            assert_eq!(error.details()["refused"], refused);
        }
    }

    #[test]
    fn responses_name_the_allowed_origin_never_star_with_credentials() {
        let p = policy("allow_credentials = true");
        let mut headers = http::HeaderMap::new();
        p.decorate(
            &HeaderValue::from_static("https://console.example.com"),
            &mut headers,
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://console.example.com"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[header::VARY], "origin");
        let mut other = http::HeaderMap::new();
        p.decorate(
            &HeaderValue::from_static("https://evil.example"),
            &mut other,
        );
        assert!(other.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let star: CorsConfig = toml::from_str("allow_origins = [\"*\"]").unwrap();
        let mut any = http::HeaderMap::new();
        CorsPolicy::new(&star).decorate(&HeaderValue::from_static("https://x.example"), &mut any);
        assert_eq!(any[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
