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
//! allocation and no header. The client-IP stage keys on the request context's client (its
//! TCP peer, or the client behind trusted proxies); the principal stage limits only requests
//! whose context carries a principal (public paths with auth on have none).
//!
//! With the limiter in memory (no Redis), the decision is made in `call` itself and the
//! layer's future is the inner one, wrapped to add the headers ([`Decorated`]): no box, no
//! clone of the inner service. With Redis the decision waits for it (a boxed future).
//!
//! The principal stage decides up to two budgets, in order: the principal's policy, then its
//! verified tenant's shared budget (`[[rate_limit.tenants]]`). The first refusal answers (so a
//! request refused by its own policy spends nothing of the tenant's); the headers of every
//! budget decided are on the response, and `X-RateLimit-*` shows the tighter one (fewest
//! remaining; a refusal's 0).
//!
//! ```ignore
//! ServiceBuilder::new()
//!     .layer(RateLimitLayer::client_ip(limits.clone()))   // before auth
//!     .layer(AuthLayer::new(authenticator))
//!     .layer(RateLimitLayer::principal(limits))           // after auth
//!     .service(inner)
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::Either;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument;

use super::{RateLimits, Target, Verdict};
use crate::body::{Request, Response, ResponseFuture};
use crate::context::RequestContext;
use crate::errors::GatewayError;
use crate::spans;

/// Where in the stack a [`RateLimitLayer`] sits, which decides what it keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before authentication: the `client_ip` policy, keyed by client IP.
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

/// The budgets a request spends at `stage`, in the order they are decided.
fn targets(
    limits: &RateLimits,
    stage: Stage,
    request: &Request,
) -> Result<[Option<Target>; 2], GatewayError> {
    let context = RequestContext::of(request)?;
    let peer = context.connection().peer;
    Ok(match stage {
        Stage::ClientIp => {
            let (ip, target) = limits.client_ip_target(peer, request.headers());
            // The client behind trusted proxies: what later layers (and the manager's
            // `X-Forwarded-For`) call the client.
            context.set_client_ip(ip);
            [target, None]
        }
        Stage::Principal => {
            let Some(principal) = context.principal() else {
                return Ok([None, None]);
            };
            let endpoint = context.classified()?.endpoint;
            [
                limits.principal_target(principal, Some(endpoint), Some((peer, request.headers()))),
                limits.tenant_target(principal, Some(endpoint)),
            ]
        }
    })
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

pin_project! {
    /// The inner service's future; its response gets the headers of the budgets decided.
    pub struct Decorated<F> {
        #[pin]
        inner: F,
        decided: [Option<Verdict>; 2],
    }
}

impl<F> Future for Decorated<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        for outcome in this.decided.iter().flatten() {
            outcome.apply(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Decorated<S::Future>, ResponseFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let pass = |inner: &mut S, request, decided| {
            Either::Left(Decorated {
                inner: inner.call(request),
                decided,
            })
        };
        let Some(limits) = &self.limits else {
            return pass(&mut self.inner, request, [None, None]);
        };
        let targets = match targets(limits, self.stage, &request) {
            Ok([None, None]) => return pass(&mut self.inner, request, [None, None]),
            Ok(targets) => targets,
            Err(error) => {
                return Either::Right(Box::pin(std::future::ready(Ok(error.into_response()))))
            }
        };
        let stage = match self.stage {
            Stage::ClientIp => "client_ip",
            Stage::Principal => "principal",
        };
        if limits.is_local() {
            // Decided now, in order; the first refusal answers with the headers of the
            // budgets decided before it. The ratelimit span covers the decision only (none
            // while tracing is off).
            let span = spans::ratelimit_span(stage, limits.backend());
            let entered = span.enter();
            let mut decided: [Option<Verdict>; 2] = [None, None];
            for (slot, target) in targets.iter().enumerate() {
                let Some(outcome) = target.as_ref().and_then(|t| limits.decide_now(t)) else {
                    continue;
                };
                if let Some(rejection) = outcome.rejection() {
                    let mut response = GatewayError::from(rejection).into_response();
                    for earlier in decided.iter().flatten() {
                        earlier.apply(response.headers_mut());
                    }
                    record_verdict(&outcome, Some(&response));
                    return Either::Right(Box::pin(std::future::ready(Ok(response))));
                }
                record_verdict(&outcome, None);
                decided[slot] = Some(outcome);
            }
            drop(entered);
            return pass(&mut self.inner, request, decided);
        }
        let limits = limits.clone();
        // The clone is the one that was not made ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // The ratelimit span covers the decision, not the layers below (none while tracing
        // is off).
        let span = spans::ratelimit_span(stage, limits.backend());
        Either::Right(Box::pin(async move {
            let decision = async {
                let mut decided: Vec<Verdict> = Vec::with_capacity(2);
                for target in targets.iter().flatten() {
                    let Some(outcome) = limits.decide(target).await else {
                        continue;
                    };
                    if let Some(rejection) = outcome.rejection() {
                        let mut response = GatewayError::from(rejection).into_response();
                        for earlier in &decided {
                            earlier.apply(response.headers_mut());
                        }
                        record_verdict(&outcome, Some(&response));
                        return Err(response);
                    }
                    record_verdict(&outcome, None);
                    decided.push(outcome);
                }
                Ok(decided)
            };
            let decided = match decision.instrument(span).await {
                Ok(decided) => decided,
                Err(response) => return Ok(response),
            };
            let mut response = boxed_call(&mut inner, request).await?;
            for outcome in &decided {
                outcome.apply(response.headers_mut());
            }
            Ok(response)
        }))
    }
}

/// Records a verdict on the current (ratelimit) span: the policy and the outcome, and the
/// error code of a refusal.
fn record_verdict(verdict: &Verdict, refusal: Option<&Response>) {
    if !spans::enabled() {
        return;
    }
    let span = tracing::Span::current();
    let (policy, outcome) = match verdict {
        Verdict::Decided { policy, decision } => {
            (policy, if decision.allowed { "allow" } else { "deny" })
        }
        Verdict::AllowedBlind { policy } => (policy, "allow_unavailable"),
        Verdict::Unavailable { policy, .. } => (policy, "deny_unavailable"),
    };
    span.record("ratelimit.policy", &*policy.name);
    span.record("ratelimit.outcome", outcome);
    if let Some(response) = refusal {
        spans::record_error(&span, response, false);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use std::time::UNIX_EPOCH;

    use crate::clock::FakeClock;
    use crate::context::{Connection, RequestContext};
    use http::{Method, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::util::BoxCloneSyncService;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;
    use crate::body;
    use crate::catalog::{classify, Role};
    use crate::config::RateLimitConfig;
    use crate::principal::{Credential, Principal};
    use crate::ratelimit::{LimiterClock, RateLimitMetrics};

    fn limits(toml_text: &str, clock: &Arc<FakeClock>) -> Arc<RateLimits> {
        let config: RateLimitConfig = toml::from_str(toml_text).unwrap();
        let mut problems = crate::config::Problems::default();
        config.check("rate_limit", &mut problems);
        assert!(problems.is_empty(), "{:?}", problems.into_vec());
        Arc::new(
            RateLimits::build(
                &config,
                LimiterClock::new(clock.clone()),
                RateLimitMetrics::default(),
            )
            .unwrap(),
        )
    }

    fn fake_clock() -> Arc<FakeClock> {
        FakeClock::at(UNIX_EPOCH)
    }

    fn request(method: Method, path: &str, principal: Option<Principal>, peer: &str) -> Request {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .body(body::empty())
            .unwrap();
        let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
        let context = RequestContext::attach(&mut request, Arc::new(Connection::plain(peer)));
        context.set_classified(classify(&method, path).unwrap());
        if let Some(principal) = principal {
            context.set_principal(principal);
        }
        request
    }

    fn alice() -> Principal {
        Principal::jwt(
            "https://idp.example",
            "alice",
            Role::Write,
            Some("acme".into()),
        )
    }

    fn anonymous(tenant: Option<&str>) -> Principal {
        Principal {
            id: "anonymous".into(),
            credential: Credential::Anonymous,
            role: Role::Owner,
            tenant: tenant.map(Into::into),
        }
    }

    /// The principal layer in front of a handler answering 200 "ok".
    fn principal_stack(
        limits: Arc<RateLimits>,
    ) -> BoxCloneSyncService<Request, Response, Infallible> {
        BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(RateLimitLayer::principal(Some(limits)))
                .service(service_fn(|_request: Request| async {
                    Ok::<_, Infallible>(Response::new(body::full("ok")))
                })),
        )
    }

    async fn json(response: Response) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_concurrent_requests_from_one_principal_admit_exactly_the_burst() {
        let clock = fake_clock();
        let service = principal_stack(limits(
            r#"principal = { rate = "50/s", burst = 100 }"#,
            &clock,
        ));
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let service = service.clone();
                let request = request(Method::GET, "/v0/pipelines", Some(alice()), "192.0.2.1");
                // Every layer is always ready: call without poll_ready, as the server does.
                let response = service.clone().call(request);
                tokio::spawn(async move { response.await.unwrap().status() })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            match task.await.unwrap() {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(admitted, 100);
    }

    #[tokio::test]
    async fn over_the_limit_is_429_with_schema_details_retry_after_and_headers() {
        let clock = fake_clock();
        let service = principal_stack(limits(
            r#"
            principal = { rate = "50/s", burst = 100 }
            [[rules]]
            name = "lifecycle"
            routes = ["activate", "start", "stop"]
            rate = "5/s"
            burst = 2
            "#,
            &clock,
        ));
        let send = || {
            service.clone().oneshot(request(
                Method::POST,
                "/v0/pipelines/p1/activate",
                Some(alice()),
                "192.0.2.1",
            ))
        };
        let first = send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()["ratelimit-policy"], "\"lifecycle\";q=2;w=1");
        assert_eq!(first.headers()["ratelimit"], "\"lifecycle\";r=1;t=1");
        assert_eq!(first.headers()["x-ratelimit-limit"], "2");
        assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
        assert_eq!(first.headers()["x-ratelimit-reset"], "1");
        let bytes = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok", "the body passes untouched");
        assert_eq!(send().await.unwrap().status(), StatusCode::OK);

        let rejected = send().await.unwrap();
        assert_eq!(rejected.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = rejected.headers().clone();
        assert_eq!(headers["retry-after"], "1", "200 ms rounds up to 1 s");
        assert_eq!(headers["ratelimit"], "\"lifecycle\";r=0;t=1");
        assert_eq!(headers["ratelimit-policy"], "\"lifecycle\";q=2;w=1");
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        assert_eq!(headers["content-type"], "application/json");
        let body = json(rejected).await;
        assert_eq!(body["error_code"], "RateLimitExceeded");
        assert_eq!(body["details"]["limit"], 2);
        assert_eq!(body["details"]["policy"], "lifecycle");
        assert_eq!(body["details"]["retry_after_s"], 1);
        assert_eq!(body["details"]["rate"], "5/s");
        assert!(body["message"].as_str().unwrap().contains("lifecycle"));

        // Refill: one request per 200 ms, no earlier.
        clock.advance(Duration::from_millis(199));
        assert_eq!(
            send().await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            send().await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn rules_and_overrides_choose_the_policy_and_each_has_its_own_budget() {
        let clock = fake_clock();
        let service = principal_stack(limits(
            r#"
            principal = { rate = "1/h", burst = 3 }
            [[rules]]
            routes = ["activate", "class:compiler"]
            rate = "1/h"
            burst = 1
            [[overrides]]
            name = "ci"
            principals = ["key:ci"]
            rate = "1/h"
            burst = 5
            [[overrides]]
            name = "acme-reads"
            tenants = ["acme"]
            routes = ["class:read"]
            rate = "1/h"
            burst = 2
            "#,
            &clock,
        ));
        let policy_of = |method: Method, path: &'static str, principal: Principal| {
            let service = service.clone();
            async move {
                let response = service
                    .oneshot(request(method, path, Some(principal), "192.0.2.1"))
                    .await
                    .unwrap();
                let policy = response.headers()["ratelimit-policy"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                (response.status(), policy)
            }
        };
        let bob = || Principal::api_key("bob", Role::Write, Some("other".into()));
        let (status, policy) = policy_of(Method::POST, "/v0/pipelines/p/activate", bob()).await;
        assert_eq!(
            (status, policy.as_str()),
            (StatusCode::OK, "\"rule-0\";q=1;w=3600")
        );
        let (status, _) = policy_of(Method::POST, "/v0/pipelines/p/activate", bob()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        // The rule's budget is its own: bob's general budget is untouched.
        let (status, policy) = policy_of(Method::GET, "/v0/pipelines", bob()).await;
        assert_eq!(
            (status, policy.as_str()),
            (StatusCode::OK, "\"principal\";q=3;w=10800")
        );
        // A compiler call falls under the same rule, and so shares its budget.
        let (status, _) = policy_of(Method::POST, "/v0/validate_program", bob()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        // The ci key's override beats the rule.
        let ci = || Principal::api_key("ci", Role::Write, None);
        let (status, policy) = policy_of(Method::POST, "/v0/pipelines/p/activate", ci()).await;
        assert_eq!(
            (status, policy.as_str()),
            (StatusCode::OK, "\"ci\";q=5;w=18000")
        );
        // A tenant override limited to reads applies to reads only.
        let (_, policy) = policy_of(Method::GET, "/v0/pipelines", alice()).await;
        assert_eq!(policy, "\"acme-reads\";q=2;w=7200");
        let (_, policy) = policy_of(Method::POST, "/v0/pipelines/p/activate", alice()).await;
        assert_eq!(policy, "\"rule-0\";q=1;w=3600");
    }

    #[tokio::test]
    async fn five_keys_of_one_tenant_share_one_tenant_budget() {
        let clock = fake_clock();
        let service = principal_stack(limits(
            r#"
            principal = { rate = "1/h", burst = 2 }
            [[tenants]]
            name = "shared"
            tenants = ["acme", "beta-*"]
            rate = "1/h"
            burst = 3
            "#,
            &clock,
        ));
        let key =
            |name: &str, tenant: &str| Principal::api_key(name, Role::Write, Some(tenant.into()));
        let send = |principal: Principal| {
            service.clone().oneshot(request(
                Method::GET,
                "/v0/pipelines",
                Some(principal),
                "192.0.2.1",
            ))
        };
        let mut statuses = Vec::new();
        for i in 0..5 {
            let response = send(key(&format!("k{i}"), "acme")).await.unwrap();
            if i == 0 {
                // Both budgets are reported; the legacy headers show the tighter one.
                let items: Vec<_> = response.headers().get_all("ratelimit").iter().collect();
                assert_eq!(items, ["\"principal\";r=1;t=3600", "\"shared\";r=2;t=3600"]);
                assert_eq!(response.headers()["x-ratelimit-remaining"], "1");
            }
            statuses.push(response.status());
        }
        use StatusCode as S;
        assert_eq!(
            statuses,
            [
                S::OK,
                S::OK,
                S::OK,
                S::TOO_MANY_REQUESTS,
                S::TOO_MANY_REQUESTS
            ]
        );
        let refused = send(key("k9", "acme")).await.unwrap();
        let headers = refused.headers().clone();
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        assert_eq!(headers.get_all("ratelimit-policy").iter().count(), 2);
        assert_eq!(json(refused).await["details"]["policy"], "shared");
        // Each matching tenant has its own budget; an unmatched tenant has none.
        assert_eq!(send(key("b", "beta-1")).await.unwrap().status(), S::OK);
        let other = send(key("o", "other")).await.unwrap();
        assert_eq!(other.headers().get_all("ratelimit").iter().count(), 1);
        // A principal refused by its own policy spends nothing of its tenant's budget.
        let noisy = || key("noisy", "beta-2");
        for _ in 0..2 {
            assert_eq!(send(noisy()).await.unwrap().status(), S::OK);
        }
        for _ in 0..5 {
            let response = send(noisy()).await.unwrap();
            assert_eq!(json(response).await["details"]["policy"], "principal");
        }
        let colleague = send(key("quiet", "beta-2")).await.unwrap();
        assert_eq!(colleague.status(), S::OK, "beta-2 has one request left");
        // With auth off the tenant is not verified: no tenant budget.
        let anon = send(anonymous(Some("acme"))).await.unwrap();
        assert_eq!(anon.status(), S::OK);
    }

    #[tokio::test]
    async fn a_tenant_budget_survives_a_rebuild_that_keeps_its_policy() {
        let clock = fake_clock();
        let text = |burst: u32| {
            format!("[[tenants]]\nname = \"shared\"\ntenants = [\"acme\"]\nrate = \"1/h\"\nburst = {burst}\n")
        };
        let build = |text: &str, previous: Option<&RateLimits>| {
            let config: RateLimitConfig = toml::from_str(text).unwrap();
            Arc::new(
                RateLimits::build_reusing(
                    &config,
                    LimiterClock::new(clock.clone()),
                    RateLimitMetrics::default(),
                    previous,
                )
                .unwrap(),
            )
        };
        let acme = Principal::api_key("k", Role::Read, Some("acme".into()));
        let spend = |limits: &Arc<RateLimits>| {
            let target = limits.tenant_target(&acme, None).unwrap();
            limits.decide_local(&target).unwrap()
        };
        let first = build(&text(2), None);
        assert!(spend(&first).allowed && spend(&first).allowed);
        let kept = build(&text(2), Some(&first));
        assert!(!spend(&kept).allowed, "the spent budget came along");
        let changed = build(&text(3), Some(&kept));
        assert!(spend(&changed).allowed, "another burst is another budget");
    }

    #[tokio::test]
    async fn forged_unverified_claims_do_not_change_the_key() {
        let clock = fake_clock();
        let service = principal_stack(limits(
            r#"
            principal = { rate = "1/h", burst = 2 }
            trusted_proxies = []
            [[overrides]]
            tenants = ["acme"]
            rate = "1/h"
            burst = 100
            "#,
            &clock,
        ));
        // Two requests with the same verified principal but different unverified claims:
        // another bearer token, another tenant header, another forwarded address.
        let forged = |token: &str, tenant: &str, xff: &str, peer: &str| {
            let mut request = request(
                Method::GET,
                "/v0/pipelines",
                Some(Principal::api_key("bob", Role::Write, None)),
                peer,
            );
            let headers = request.headers_mut();
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
            headers.insert("feldera-tenant", tenant.parse().unwrap());
            headers.insert("x-forwarded-for", xff.parse().unwrap());
            request
        };
        let a = service.clone().oneshot(forged(
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.",
            "acme",
            "1.1.1.1",
            "192.0.2.1",
        ));
        assert_eq!(a.await.unwrap().status(), StatusCode::OK);
        let b = service
            .clone()
            .oneshot(forged("apikey:other", "acme", "2.2.2.2", "192.0.2.2"));
        assert_eq!(b.await.unwrap().status(), StatusCode::OK);
        let c = service
            .clone()
            .oneshot(forged("x", "globex", "3.3.3.3", "192.0.2.3"));
        assert_eq!(c.await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);

        // With auth off, the tenant is only a header: it never selects a tenant override,
        // and the key is the client IP.
        let anon = |peer: &str| {
            service.clone().oneshot(request(
                Method::GET,
                "/v0/pipelines",
                Some(anonymous(Some("acme"))),
                peer,
            ))
        };
        let first = anon("198.51.100.1").await.unwrap();
        assert_eq!(
            first.headers()["ratelimit-policy"],
            "\"principal\";q=2;w=7200"
        );
        assert_eq!(anon("198.51.100.1").await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            anon("198.51.100.1").await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(anon("198.51.100.2").await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_unauthenticated_flood_is_stopped_before_any_signature_is_verified() {
        let clock = fake_clock();
        let limits = limits(r#"client_ip = { rate = "20/s", burst = 40 }"#, &clock);
        // Stand-in for the auth layer: every request it sees costs one verification.
        let verifications = Arc::new(AtomicUsize::new(0));
        let counted = verifications.clone();
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::client_ip(Some(limits)))
            .service(service_fn(move |_request: Request| {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    let error = GatewayError::new(
                        StatusCode::UNAUTHORIZED,
                        "AuthenticationFailed",
                        "bad signature",
                    );
                    Ok::<_, Infallible>(error.into_response())
                }
            }));
        let mut limited = 0;
        for i in 0..10_000 {
            let mut request = request(Method::GET, "/v0/pipelines", None, "203.0.113.9");
            request.headers_mut().insert(
                "authorization",
                format!("Bearer forged.token.{i}").parse().unwrap(),
            );
            let response = service.clone().oneshot(request).await.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                limited += 1;
            } else {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
                assert_eq!(
                    response.headers()["ratelimit-policy"],
                    "\"client_ip\";q=40;w=2"
                );
            }
        }
        assert_eq!(verifications.load(Ordering::SeqCst), 40);
        assert_eq!(limited, 10_000 - 40);
        // Another client is not affected.
        let other = service
            .clone()
            .oneshot(request(Method::GET, "/v0/pipelines", None, "203.0.113.10"))
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(verifications.load(Ordering::SeqCst), 41);
    }

    #[tokio::test]
    async fn without_rate_limit_nothing_is_limited_and_no_header_is_added() {
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::client_ip(None))
            .layer(RateLimitLayer::principal(None))
            .service(service_fn(|_request: Request| async {
                Ok::<_, Infallible>(Response::new(body::full("ok")))
            }));
        for _ in 0..100 {
            let response = service
                .clone()
                .oneshot(request(
                    Method::GET,
                    "/v0/pipelines",
                    Some(alice()),
                    "192.0.2.1",
                ))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert!(response.headers().get("ratelimit").is_none());
            assert!(response.headers().get("x-ratelimit-limit").is_none());
        }
    }

    #[tokio::test]
    async fn both_stages_report_their_policy_on_one_response() {
        let clock = fake_clock();
        let limits = limits(
            r#"
            client_ip = { rate = "20/s", burst = 40 }
            principal = { rate = "1/h", burst = 3 }
            "#,
            &clock,
        );
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::client_ip(Some(limits.clone())))
            .layer(RateLimitLayer::principal(Some(limits)))
            .service(service_fn(|_request: Request| async {
                Ok::<_, Infallible>(Response::new(body::full("ok")))
            }));
        let response = service
            .oneshot(request(
                Method::GET,
                "/v0/pipelines",
                Some(alice()),
                "192.0.2.1",
            ))
            .await
            .unwrap();
        let items: Vec<_> = response.headers().get_all("ratelimit").iter().collect();
        assert_eq!(
            items,
            ["\"principal\";r=2;t=3600", "\"client_ip\";r=39;t=1"]
        );
        assert_eq!(response.headers()["x-ratelimit-remaining"], "2");
    }
}
