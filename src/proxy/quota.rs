//! The per-pipeline concurrency quota: a Feldera pipeline accepts at most 100 concurrent HTTP
//! connections and answers the 101st with 429 `ApiConnectionLimit`, so one client's hundred
//! open `egress` streams would lock everyone else out of it. The gateway keeps each pipeline
//! (per upstream) under `pipeline_concurrency` open requests (default 90), shared fairly:
//! no principal may hold more than `max(per_principal_min, quota / active principals)` of
//! them, where the active principals are those holding at least one (the asker included).
//!
//! A request counts from when it is forwarded until its response body ends (a stream counts
//! while it is open) or is dropped. Over the quota, or over its fair share: 429
//! `RateLimitExceeded` with `Retry-After: 1` and
//! `RateLimit-Policy: "pipeline-concurrency";q=<quota>;qu="concurrent-requests"`. Requests
//! that name no pipeline are not counted. Who a principal is: its verified id; with
//! authentication off, the client's IP (everyone is the same anonymous principal then).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::{HeaderValue, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde_json::json;
use tower::{Layer, Service};

use super::Upstreams;
use crate::body::{self, Body, BoxError, Request, Response};
use crate::context::RequestContext;
use crate::errors::GatewayError;
use crate::principal::Credential;

/// The maps' hasher: every request hashes a pipeline name and a principal here, twice
/// (taking and giving back its slot); foldhash (randomly seeded per process) costs a
/// fraction of SipHash on such short keys.
type Hasher = foldhash::fast::RandomState;

/// Who holds what of one pipeline's quota.
#[derive(Debug)]
struct Holding {
    /// The pipeline's name, shared with the slots taken of it.
    pipeline: Arc<str>,
    total: usize,
    by_principal: HashMap<Arc<str>, usize, Hasher>,
}

/// The open requests of every pipeline of one upstream.
#[derive(Debug, Default)]
pub struct PipelineQuota {
    pipelines: Mutex<HashMap<Arc<str>, Holding, Hasher>>,
}

/// What refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The pipeline's quota is taken.
    Full,
    /// The principal holds its fair share already.
    FairShare { share: usize },
}

/// A slot of a pipeline's quota, given back when dropped.
pub struct Slot {
    quota: Arc<PipelineQuota>,
    pipeline: Arc<str>,
    principal: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut pipelines = self
            .quota
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(holding) = pipelines.get_mut(&*self.pipeline) {
            holding.total = holding.total.saturating_sub(1);
            if let Some(held) = holding.by_principal.get_mut(&self.principal) {
                *held -= 1;
                if *held == 0 {
                    holding.by_principal.remove(&self.principal);
                }
            }
            if holding.total == 0 {
                pipelines.remove(&*self.pipeline);
            }
        }
    }
}

impl PipelineQuota {
    /// Takes a slot of `pipeline` for `principal`, or says why not.
    pub fn acquire(
        self: &Arc<Self>,
        pipeline: &str,
        principal: &Arc<str>,
        quota: usize,
        floor: usize,
    ) -> Result<Slot, Refusal> {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before inserting, so that a pipeline already held costs no allocation.
        if !pipelines.contains_key(pipeline) {
            let name: Arc<str> = pipeline.into();
            pipelines.insert(
                name.clone(),
                Holding {
                    pipeline: name,
                    total: 0,
                    by_principal: HashMap::default(),
                },
            );
        }
        let Some(holding) = pipelines.get_mut(pipeline) else {
            return Err(Refusal::Full);
        };
        if holding.total >= quota {
            return Err(Refusal::Full);
        }
        let held = holding.by_principal.get(principal).copied().unwrap_or(0);
        let active = holding.by_principal.len() + usize::from(held == 0);
        let share = (quota / active.max(1)).max(floor);
        if held >= share {
            return Err(Refusal::FairShare { share });
        }
        holding.total += 1;
        match holding.by_principal.get_mut(principal) {
            Some(count) => *count += 1,
            None => {
                holding.by_principal.insert(principal.clone(), 1);
            }
        }
        Ok(Slot {
            quota: self.clone(),
            pipeline: holding.pipeline.clone(),
            principal: principal.clone(),
        })
    }

    /// Requests open on `pipeline` now.
    pub fn open(&self, pipeline: &str) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pipeline)
            .map_or(0, |h| h.total)
    }
}

fn refused(pipeline: &str, quota: usize, refusal: Refusal) -> GatewayError {
    let (message, share) = match refusal {
        Refusal::Full => (
            format!("Pipeline '{pipeline}' already has {quota} requests open through the gateway"),
            None,
        ),
        Refusal::FairShare { share } => (
            format!("You already hold your fair share ({share}) of pipeline '{pipeline}''s open requests"),
            Some(share),
        ),
    };
    let policy = format!("\"pipeline-concurrency\";q={quota};qu=\"concurrent-requests\"");
    GatewayError::new(StatusCode::TOO_MANY_REQUESTS, "RateLimitExceeded", message)
        .with_details(json!({
            "policy": "pipeline-concurrency",
            "limit": quota,
            "pipeline": pipeline,
            "share": share,
            "retry_after_s": 1,
        }))
        .with_retry_after(1)
        .with_header(
            http::header::HeaderName::from_static("ratelimit-policy"),
            HeaderValue::try_from(policy)
                .unwrap_or(HeaderValue::from_static("\"pipeline-concurrency\"")),
        )
}

/// What the layer decided for one request.
enum Decision {
    Pass,
    Hold(Slot),
    Refuse(GatewayError),
}

fn decide(upstreams: &Upstreams, request: &Request) -> Decision {
    let result = (|| {
        let context = RequestContext::of(request)?;
        let route = context.route()?;
        let Some(upstream) = upstreams.get(route.upstream) else {
            return Ok(Decision::Pass);
        };
        let quota = upstream.pipeline_concurrency;
        let Some(pipeline) = context.classified()?.pipeline(request.uri().path()) else {
            return Ok(Decision::Pass);
        };
        if quota == 0 {
            return Ok(Decision::Pass);
        }
        let principal: Arc<str> = match context.principal() {
            Some(p) if !matches!(p.credential, Credential::Anonymous) => p.id.clone(),
            _ => format!("ip:{}", context.client_ip()).into(),
        };
        Ok(
            match upstream
                .quota
                .acquire(pipeline, &principal, quota, upstream.per_principal_min)
            {
                Ok(slot) => Decision::Hold(slot),
                Err(refusal) => Decision::Refuse(refused(pipeline, quota, refusal)),
            },
        )
    })();
    result.unwrap_or_else(Decision::Refuse)
}

/// Applies the per-pipeline quota (see the module docs).
#[derive(Clone)]
pub struct PipelineQuotaLayer {
    upstreams: Upstreams,
}

impl PipelineQuotaLayer {
    pub fn new(upstreams: Upstreams) -> Self {
        PipelineQuotaLayer { upstreams }
    }
}

impl<S> Layer<S> for PipelineQuotaLayer {
    type Service = PipelineQuotaService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PipelineQuotaService {
            upstreams: self.upstreams.clone(),
            inner,
        }
    }
}

/// The service of [`PipelineQuotaLayer`].
#[derive(Clone)]
pub struct PipelineQuotaService<S> {
    upstreams: Upstreams,
    inner: S,
}

pin_project! {
    /// The inner future holding a slot; the response body then holds it.
    pub struct HoldingFuture<F> {
        #[pin]
        inner: F,
        slot: Option<Slot>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for HoldingFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let slot = this.slot.take();
        Poll::Ready(Ok(response.map(|inner| body::boxed(Held { inner, slot }))))
    }
}

pin_project! {
    /// A response body holding its request's slot until it ends or is dropped.
    struct Held {
        #[pin]
        inner: Body,
        slot: Option<Slot>,
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            this.slot.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S> Service<Request> for PipelineQuotaService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<Ready<Result<Response, Infallible>>, Either<S::Future, HoldingFuture<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match decide(&self.upstreams, &request) {
            Decision::Pass => Either::Right(Either::Left(self.inner.call(request))),
            Decision::Refuse(error) => Either::Left(ready(Ok(error.into_response()))),
            Decision::Hold(slot) => Either::Right(Either::Right(HoldingFuture {
                inner: self.inner.call(request),
                slot: Some(slot),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_principal_cannot_take_a_pipeline_from_the_others() {
        let quota = Arc::new(PipelineQuota::default());
        let (alice, bob, carol): (Arc<str>, Arc<str>, Arc<str>) =
            ("alice".into(), "bob".into(), "carol".into());
        // Alone, alice may take the whole quota of 6.
        let mut held: Vec<Slot> = (0..6)
            .map(|_| quota.acquire("p", &alice, 6, 1).unwrap())
            .collect();
        assert_eq!(quota.acquire("p", &alice, 6, 1).err(), Some(Refusal::Full));
        assert_eq!(quota.acquire("p", &bob, 6, 1).err(), Some(Refusal::Full));
        // Once slots free up, bob gets in and alice is held to her share (6 / 2).
        held.truncate(2);
        let _bob = quota.acquire("p", &bob, 6, 1).unwrap();
        let _third = quota.acquire("p", &alice, 6, 1).unwrap();
        assert_eq!(
            quota.acquire("p", &alice, 6, 1).err(),
            Some(Refusal::FairShare { share: 3 })
        );
        // A third principal's share is 6 / 3 = 2; the floor lets everyone have at least 1.
        let _carol = quota.acquire("p", &carol, 6, 1).unwrap();
        assert_eq!(quota.open("p"), 5);
        drop(held);
        assert_eq!(quota.open("p"), 3);
        drop(_third);
        assert_eq!(quota.open("p"), 2);
        // Other pipelines are untouched.
        assert!(quota.acquire("q", &alice, 6, 1).is_ok());
    }
}
