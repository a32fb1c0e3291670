//! The ONE place that orders the layers: read top to bottom, this is the request path.
//!
//! Every layer's service has `Error = Infallible`: a failure is already a response, rendered
//! by `errors.rs`. Each line says why the layer sits exactly there.

use std::convert::Infallible;
use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::auth::{AuthLayer, Authenticator};
use crate::body::{Request, Response};
use crate::check::CheckLayer;
use crate::config::ServerConfig;
use crate::limits::{BodyLimit, HeaderLimits, InFlightLayer};
use crate::proxy::{Forward, TimeoutLayer};
use crate::ratelimit::{RateLimitLayer, RateLimits};
use crate::routing::{Classify, SelectUpstream};
use crate::telemetry::{CatchPanicLayer, Metrics, RequestLogLayer};
use crate::validate::{CanonicalPath, PipelineRequest};

/// The gateway's whole request path as one cloneable service.
pub type GatewayService = BoxCloneSyncService<Request, Response, Infallible>;

/// What the stack is built from.
pub struct StackParts {
    pub server: ServerConfig,
    pub metrics: Arc<Metrics>,
    pub authenticator: Arc<Authenticator>,
    pub select_upstream: SelectUpstream,
    /// `None` without `[rate_limit]`: both rate-limit layers pass everything through.
    pub rate_limits: Option<Arc<RateLimits>>,
}

/// Builds the request path.
pub fn build(parts: StackParts) -> GatewayService {
    let service = ServiceBuilder::new()
        // Outermost: the request id and span must cover everything below, and the access-log
        // line must see the final response, including one made from a panic.
        .layer(RequestLogLayer::new(parts.metrics))
        // A panic anywhere below becomes a JSON 500 that the access log still records.
        .layer(CatchPanicLayer)
        // Load shedding before any work is spent on the request; after the log so that shed
        // requests are still counted and logged.
        .layer(InFlightLayer::new(parts.server.max_in_flight))
        // Size limits before any parsing work: an oversized request costs nothing more.
        .layer(CheckLayer::new(HeaderLimits {
            max_header_bytes: parts.server.max_header_bytes,
            max_uri_bytes: parts.server.max_uri_bytes,
        }))
        // Canonical path before anything reads the path: nothing may classify, authorize or
        // route a path the manager would decode into another one.
        .layer(CheckLayer::new(CanonicalPath))
        // Route match, part 1 (classification): auth needs the endpoint's minimum role, rate
        // limits its name and class; unknown paths and wrong methods stop here (404/405).
        .layer(CheckLayer::new(Classify))
        // Body limit per endpoint class (known only now); a declared Content-Length over it
        // is refused before authentication spends anything on the request.
        .layer(CheckLayer::new(BodyLimit {
            max_body_bytes: parts.server.max_body_bytes,
        }))
        // Limit by client IP just before auth: an unauthenticated flood (forged tokens
        // included) is refused before any signature is verified; after the cheap size and
        // path checks, which cost less than a (possibly Redis) decision.
        .layer(RateLimitLayer::client_ip(parts.rate_limits.clone()))
        // Auth slot: the principal and its role, before anything is keyed on who calls.
        .layer(AuthLayer::new(parts.authenticator))
        // Limit by principal right after auth, so the key is verified and the endpoint's
        // rule known; before validation and routing, so refused requests cost nothing more.
        .layer(RateLimitLayer::principal(parts.rate_limits))
        // Validation after auth and limits: anonymous clients learn nothing about names, and
        // bad requests still spend their budget. Rewrites activate's query.
        .layer(CheckLayer::new(PipelineRequest))
        // Route match, part 2 (upstream): after auth, because routes may select on the
        // verified tenant.
        .layer(CheckLayer::new(parts.select_upstream))
        // Timeout just around forwarding: it covers only the upstream's time to answer.
        .layer(TimeoutLayer)
        .service(Forward);
    BoxCloneSyncService::new(service)
}
