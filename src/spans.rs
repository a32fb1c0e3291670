//! The request's spans: what each is called and which attributes it carries, for the layers
//! that open them (the request log, auth, rate limiting, forwarding). Exporting them is
//! `telemetry::trace`'s; this module only makes spans, and makes none while tracing is off.
//!
//! While off, [`enabled`] is one relaxed atomic load and every function here returns
//! [`Span::none`] or `None` before doing anything else, so a request costs what it cost
//! before tracing existed.
//!
//! Propagation (W3C Trace Context). With tracing on, a client's `traceparent`/`tracestate`
//! are continued when well-formed — the request span becomes a child of the client's span,
//! and the client's sampled flag decides sampling (parent-based) — and a malformed
//! `traceparent` is ignored: the gateway starts a new trace. A client's trace context is
//! believed for correlation only; it never decides anything else. Toward the manager both
//! headers are replaced by the upstream span's context ([`propagation`]). With tracing off
//! the gateway takes no part in traces: the client's headers pass to the manager unchanged.
//!
//! Attributes: the request span carries the HTTP server conventions (`http.request.method`,
//! `url.path`, `url.scheme`, `http.response.status_code`, `server.address`,
//! `client.address`, `network.protocol.version`) and the gateway's own (`feldera.pipeline`,
//! `feldera.endpoint`, `gateway.route`, `gateway.upstream`, `enduser.id` — the principal's
//! name, never a credential —, `error.type` — the response's `error_code`); its status is an
//! error for 5xx answers only (a 4xx is the client's). The `auth` span has `auth.cache_hit`
//! and `auth.jwks_fetch`; the `ratelimit` span the stage, backend (`local`, `redis`), policy
//! and outcome; the `upstream` span (kind client) the upstream, the endpoint that answered
//! last (`server.address`), `gateway.retries` and the status.

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Version};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::body::{Request, Response};
use crate::context::RequestContext;
use crate::errors::{ErrorInfo, GatewayError};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are being made (a `[tracing]` section was configured at start).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turned on by the exporter once it runs (`telemetry::trace`), off when it stops.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The request's server span, a child of the client's trace context when it sent a valid
/// one. `None` while tracing is off.
pub fn request_span(request: &Request, id: &HeaderValue) -> Option<Span> {
    if !enabled() {
        return None;
    }
    let version = match request.version() {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let host = request
        .uri()
        .host()
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
        })
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        id = id.to_str().unwrap_or(""),
        otel.name = %request.method(),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %request.method(),
        url.path = request.uri().path(),
        url.scheme = Empty,
        server.address = host,
        client.address = Empty,
        network.protocol.version = version,
        http.response.status_code = Empty,
        feldera.pipeline = Empty,
        feldera.endpoint = Empty,
        gateway.route = Empty,
        gateway.upstream = Empty,
        enduser.id = Empty,
        error.type = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    Some(span)
}

/// Records on the request span what the request turned out to be.
pub fn finish_request_span(
    span: &Span,
    context: &RequestContext,
    method: &http::Method,
    path: &str,
    response: &Response,
) {
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    span.record("url.scheme", context.connection().scheme);
    span.record(
        "client.address",
        tracing::field::display(context.client_ip()),
    );
    if let Some(classified) = context.classified_opt() {
        span.record("feldera.endpoint", classified.endpoint.name);
        // Through the OpenTelemetry span itself: once a child asked for the span's context,
        // the span has started and `otel.name` is no longer read.
        span.context()
            .span()
            .update_name(format!("{method} {}", classified.endpoint.name));
        if let Some(pipeline) = classified.pipeline(path) {
            span.record("feldera.pipeline", pipeline);
        }
    }
    if let Some(route) = context.route_opt() {
        span.record("gateway.route", &*route.label);
        span.record("gateway.upstream", &*route.upstream_name);
    }
    if let Some(principal) = context.principal() {
        span.record("enduser.id", &*principal.id);
    }
    if let Some(error) = response.extensions().get::<ErrorInfo>() {
        span.record("error.type", &*error.code);
    }
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// The trace and span ids of `span`, as the access log writes them (`None` for a span that
/// is not exported).
pub fn ids(span: &Span) -> Option<(String, String)> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// The trace id of a client's well-formed `traceparent`: what the access log writes while
/// tracing is off, for correlation.
pub fn client_trace_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace_id) = (parts.next()?, parts.next()?);
    let well_formed = version.len() == 2
        && version != "ff"
        && trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && trace_id.bytes().any(|b| b != b'0');
    well_formed.then_some(trace_id)
}

/// The `auth` span (see the module docs); [`Span::none`] while tracing is off.
pub fn auth_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "auth",
        auth.cache_hit = Empty,
        auth.jwks_fetch = false,
        error.type = Empty
    )
}

/// Records on the current span (the `auth` span) whether the token cache answered.
pub fn record_cache_hit(hit: bool) {
    if enabled() {
        Span::current().record("auth.cache_hit", hit);
    }
}

/// The `ratelimit` span of one stage; [`Span::none`] while tracing is off.
pub fn ratelimit_span(stage: &'static str, backend: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "ratelimit",
        ratelimit.stage = stage,
        ratelimit.backend = backend,
        ratelimit.policy = Empty,
        ratelimit.outcome = Empty,
        error.type = Empty
    )
}

/// The `upstream` span (kind client) of the call to `upstream`; [`Span::none`] while tracing
/// is off.
pub fn upstream_span(upstream: &str, method: &http::Method) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "upstream",
        otel.name = %format_args!("{method} {upstream}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gateway.upstream = upstream,
        http.request.method = %method,
        server.address = Empty,
        gateway.retries = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Records on the upstream span where the request went and what came back.
pub fn finish_upstream_span(
    span: &Span,
    context: &RequestContext,
    answer: &Result<Response, GatewayError>,
) {
    if let Some((endpoint, retries)) = context.tries() {
        span.record("server.address", endpoint.as_str());
        span.record("gateway.retries", retries);
    }
    let status = match answer {
        Ok(response) => response.status(),
        Err(error) => {
            span.record("error.type", error.code());
            error.status()
        }
    };
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// Records an error response's `error_code` as the span's `error.type` (and, with
/// `server_error`, its status as an error).
pub fn record_error(span: &Span, response: &Response, server_error: bool) {
    if span.is_disabled() {
        return;
    }
    if let Some(error) = response.extensions().get::<ErrorInfo>() {
        span.record("error.type", &*error.code);
    }
    if server_error && response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// The trace context the manager is sent: `traceparent` (and `tracestate`, when the trace
/// carries one) of `span`. `None` while tracing is off: the client's headers then pass as
/// they are.
pub fn propagation(span: &Span) -> Option<HeaderMap> {
    if span.is_disabled() {
        return None;
    }
    let mut headers = HeaderMap::new();
    // An empty `tracestate` is not sent (the propagator writes one when the trace has none).
    TraceContextPropagator::new()
        .inject_context(&span.context(), &mut HeaderInjector(&mut headers));
    if headers.get(TRACESTATE).is_some_and(|v| v.is_empty()) {
        headers.remove(TRACESTATE);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_trace_id_is_read_only_from_a_well_formed_traceparent() {
        let mut headers = HeaderMap::new();
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(TRACEPARENT, HeaderValue::from_static(good));
        assert_eq!(
            client_trace_id(&headers),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            headers.insert(TRACEPARENT, HeaderValue::from_static(bad));
            assert_eq!(client_trace_id(&headers), None, "{bad}");
        }
    }

    #[test]
    fn while_tracing_is_off_no_span_and_no_propagation_is_made() {
        assert!(!enabled());
        assert!(auth_span().is_none());
        assert!(upstream_span("a", &http::Method::GET).is_none());
        assert!(propagation(&Span::none()).is_none());
    }
}
