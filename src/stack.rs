//! The ONE place that orders the layers: read top to bottom, this is the request path.
//!
//! The stack is built over one [`Runtime`] ([`build`]): every part it uses comes from that
//! snapshot, so a request runs entirely on the configuration it started with. Every layer's
//! service has `Error = Infallible` — a failure is already a response, rendered by
//! `errors.rs` — except tower's load shedding, whose one error (overloaded) the [`Rescue`]
//! right above it turns into a 503. Each line says why the layer sits exactly there.
//!
//! Readiness: every layer forwards `poll_ready` to the one below it (or answers for itself,
//! like `LoadShed`, which is never pending), so the stack as a whole is always ready and the
//! server drives it with `oneshot` (ready, then call) like any tower service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::load_shed::LoadShedLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};

use crate::auth::AuthLayer;
use crate::body::{BoxError, Request, Response};
use crate::check::CheckLayer;
use crate::console::ConsoleLayer;
use crate::cors::CorsLayer;
use crate::errors::GatewayError;
use crate::limits::{BodyLimit, HeaderLimits};
use crate::proxy::{Forward, PipelineQuotaLayer};
use crate::ratelimit::RateLimitLayer;
use crate::routing::{Classify, SelectUpstream};
use crate::runtime::Runtime;
use crate::telemetry::{CatchPanicLayer, Metrics, RequestLogLayer};
use crate::validate::{CanonicalPath, PipelineRequest, RequestHygiene, UnverifiedCredentials};

/// The gateway's whole request path as one cloneable service.
pub type GatewayService = BoxCloneSyncService<Request, Response, Infallible>;

/// A runtime and the request path built over it: what the server swaps as one.
pub struct Snapshot {
    pub runtime: Arc<Runtime>,
    pub service: GatewayService,
    /// The process's metrics (the server counts connections in them).
    pub metrics: Arc<Metrics>,
}

/// Builds the request path over `runtime`.
pub fn build(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Snapshot {
    let server = &runtime.config.server;
    let service = ServiceBuilder::new()
        // Outermost: the request id and span must cover everything below, and the access-log
        // line must see the final response, including one made from a panic.
        .layer(RequestLogLayer::new(metrics.clone(), &runtime.config.log))
        // A panic anywhere below becomes a JSON 500 that the access log still records.
        .layer(CatchPanicLayer)
        // CORS headers on every response to an allowed origin, errors included (a browser
        // must be able to read a 401 or a 429): so it wraps everything that can answer.
        .layer(CorsLayer::decorate(runtime.cors.clone()))
        // Load shedding before any work is spent on the request; after the log so that shed
        // requests are still counted and logged. `LoadShed` answers at once when the
        // concurrency limit has no room (never waits), `Rescue` makes that answer a 503.
        .layer(RescueLayer)
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(server.max_in_flight))
        // Size limits before any parsing work: an oversized request costs nothing more.
        .layer(CheckLayer::new(HeaderLimits {
            max_header_bytes: server.max_header_bytes,
            max_uri_bytes: server.max_uri_bytes,
            max_header_line_bytes: server.max_header_line_bytes,
            max_header_count: server.max_header_count,
        }))
        // Framing and the headers only the gateway may set, before anything reads a header:
        // Host, Transfer-Encoding, Forwarded/X-Real-IP/rewrite headers, Connection-named
        // removals that must not take Authorization or Host away.
        .layer(CheckLayer::new(RequestHygiene))
        // Canonical path before anything reads the path: nothing may classify, authorize or
        // route a path the manager would decode into another one.
        .layer(CheckLayer::new(CanonicalPath))
        // Route match, part 1 (classification): auth needs the endpoint's minimum role, rate
        // limits its name and class; unknown paths and wrong methods stop here (404/405).
        .layer(CheckLayer::new(Classify))
        // Credentials the gateway does not verify (cookies, X-Api-Key, ?api_key=) never reach
        // the manager on API routes; the route kind is known only now.
        .layer(CheckLayer::new(UnverifiedCredentials {
            forward_cookies: runtime.config.auth.forward_cookies,
        }))
        // Body limit per endpoint class (known only now); a declared Content-Length over it
        // is refused before authentication spends anything on the request.
        .layer(CheckLayer::new(BodyLimit {
            max_body_bytes: server.max_body_bytes,
            idle: server.body_idle_timeout,
        }))
        // Limit by client IP just before auth: an unauthenticated flood (forged tokens
        // included) is refused before any signature is verified; after the cheap size and
        // path checks, which cost less than a (possibly Redis) decision.
        .layer(RateLimitLayer::client_ip(runtime.rate_limits.clone()))
        // Preflights and the console's identity-provider question are answered here: after
        // the per-IP limit, before authentication (browsers send neither with credentials).
        .layer(CorsLayer::preflight(runtime.cors.clone()))
        .layer(ConsoleLayer::new(runtime.identity_provider.clone()))
        // Auth slot: the principal and its role, before anything is keyed on who calls.
        .layer(AuthLayer::new(runtime.authenticator.clone()))
        // Limit by principal right after auth, so the key is verified and the endpoint's
        // rule known; before validation and routing, so refused requests cost nothing more.
        .layer(RateLimitLayer::principal(runtime.rate_limits.clone()))
        // Validation after auth and limits: anonymous clients learn nothing about names, and
        // bad requests still spend their budget. Rewrites activate's query.
        .layer(CheckLayer::new(PipelineRequest))
        // Route match, part 2 (upstream): after auth, because routes may select on the
        // verified tenant.
        .layer(CheckLayer::new(SelectUpstream::new(
            runtime.routes.clone(),
            runtime.upstream_names.clone(),
        )))
        // The per-pipeline concurrency quota needs the route (its upstream) and the principal
        // (fair shares); it holds a slot until the response body ends, so it sits around the
        // forwarding, and a refused request costs the manager nothing.
        .layer(PipelineQuotaLayer::new(runtime.upstreams.clone()))
        // Forwarding keeps its own deadline (`proxy::timeout`): only it knows which endpoint
        // had the request when the time ran out, and that endpoint is blamed for it.
        .service(Forward::new(runtime.upstreams.clone()));
    Snapshot {
        service: BoxCloneSyncService::new(service),
        runtime,
        metrics,
    }
}

/// Turns the one error below it — tower's `Overloaded` — into the gateway's 503; any other
/// error (none exists today) into a 500. Linkerd's "rescue" step: no layer writes its own
/// error body.
#[derive(Clone, Copy, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            not_ready: None,
        }
    }
}

/// The service of [`RescueLayer`].
pub struct Rescue<S> {
    inner: S,
    /// Readiness failed with this error: the next call answers it without calling `inner`.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Rescue<S> {
    fn clone(&self) -> Self {
        Rescue {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

fn rescue(error: BoxError) -> Response {
    if error.is::<Overloaded>() {
        GatewayError::service_unavailable("too many requests in flight", 1).into_response()
    } else {
        GatewayError::internal(format!("a layer failed: {error}")).into_response()
    }
}

pin_project! {
    /// The inner future, its error rescued; or the rescued readiness error.
    pub struct RescueFuture<F> {
        #[pin]
        inner: Option<F>,
        failed: Option<BoxError>,
    }
}

impl<F, E> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let error = this
                .failed
                .take()
                .unwrap_or_else(|| "polled after completion".into());
            return Poll::Ready(Ok(rescue(error)));
        };
        Poll::Ready(Ok(match ready!(inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => rescue(error.into()),
        }))
    }
}

impl<S> Service<Request> for Rescue<S>
where
    S: Service<Request, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A readiness error is kept and answered by the next call (which then does not call
        // the inner service), so readiness itself never fails.
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => {}
            Err(error) => self.not_ready = Some(error.into()),
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.not_ready.take() {
            Some(error) => RescueFuture {
                inner: None,
                failed: Some(error),
            },
            None => RescueFuture {
                inner: Some(self.inner.call(request)),
                failed: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use http::StatusCode;
    use http_body_util::BodyExt;

    use super::*;
    use crate::config::Config;
    use crate::context::{Connection, RequestContext};
    use crate::runtime::Process;

    fn snapshot(extra_server: &str) -> Snapshot {
        let config = Config::from_toml(&format!(
            "[server]\n{extra_server}\n[auth]\nmode = \"off\"\n\
             [[upstreams]]\nname = \"a\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[routes]]\npipelines = [\"*\"]\nupstream = \"a\"\ndefault = true\n"
        ))
        .expect("config");
        let process = Process::new();
        let runtime = Runtime::build(config, &process).expect("runtime");
        build(Arc::new(runtime), process.metrics.clone())
    }

    fn request() -> Request {
        let mut request = http::Request::get("/v0/pipelines")
            .header(http::header::HOST, "gw")
            .body(crate::body::empty())
            .expect("request");
        RequestContext::attach(
            &mut request,
            Arc::new(Connection::plain("127.0.0.1:9".parse().expect("addr"))),
        );
        request
    }

    /// Every layer is ready at once: polled with a waker that can never wake anything, the
    /// whole stack answers `Ready`. A layer that returned `Pending` here would park the
    /// connection forever, since nothing would ever wake it.
    #[tokio::test]
    async fn the_stack_is_ready_without_a_waker() {
        let mut service = snapshot("").service;
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    }

    /// When `max_in_flight` is taken, readiness is still immediate and the call is a JSON 503
    /// (`LoadShed` over `ConcurrencyLimit`, rescued), never a wait.
    #[tokio::test]
    async fn a_full_stack_sheds_with_a_503_instead_of_waiting() {
        let snapshot = snapshot("max_in_flight = 1");
        let mut cx = Context::from_waker(Waker::noop());
        // The first clone takes the one slot by becoming ready and holding the permit.
        let mut holder = snapshot.service.clone();
        assert!(matches!(holder.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let mut shed = snapshot.service.clone();
        assert!(matches!(shed.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let response = shed.call(request()).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error_code"], "ServiceUnavailable");
        // Once the holder lets go, the next request gets through the shedding layers. (The
        // shed clone is dropped first, as the server's `oneshot` drops it at call: alive, its
        // queued semaphore acquire would be first in line for the freed slot.)
        drop(shed);
        drop(holder);
        let mut next = snapshot.service.clone();
        assert!(matches!(next.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let response = next.call(request()).await.expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error_code"], "UpstreamUnavailable", "{json}");
    }
}
