//! Prometheus metrics, served on the admin listener's `/metrics` (the list, with types, labels
//! and meaning, is docs/metrics.md).
//!
//! [`Metrics`] owns the process's registry (prefix `pipeline_gateway_`) and the metrics of
//! the request path itself: requests by route, endpoint, method, status class and error code;
//! time to response headers by route and endpoint; the lifetime of streams; requests in
//! flight; open client connections by protocol; build information. Other modules register
//! their own families into the same registry while the process is set up
//! (`Metrics::registry_mut`, see `runtime::Process`), so every metric is registered exactly
//! once per process and survives configuration reloads, which rebuild only the runtime.
//!
//! Labels are bounded: routes are named by the upstream they chose, endpoints by the
//! catalogue's static names, error codes by the gateway's fixed set (an answer the manager
//! wrote itself is `error_code="upstream"`): never a principal, a token or a pipeline. On the
//! hot path no label allocates: names are `&'static str` or a shared [`Name`].
//!
//! Deliberately not here: what an operator reads as a page (recent errors, top limited
//! principals) is `super::status`.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::status::StatusBoard;
use crate::body::{Body, BoxError};

/// A label value shared rather than copied: an upstream's, a policy's or an issuer's name,
/// all bounded by the configuration. Cloning it is a reference-count increment.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl Name {
    pub fn new(name: &str) -> Name {
        Name(Arc::from(name))
    }
}

impl From<&Arc<str>> for Name {
    fn from(name: &Arc<str>) -> Name {
        Name(name.clone())
    }
}

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(&self.0)
    }
}

/// One series of a labelled family, looked up on first use and then kept.
///
/// `Family::get_or_create` hashes the whole label set (SipHash) and takes a lock on every
/// call; a counter that every request increments with the same labels (a verified token, an
/// allowed decision of a policy) is worth keeping. Nothing is created before first use, so
/// the exposition does not change. Clones share the kept series; two `Series` are always
/// equal, so a value holding one compares as it did without it.
#[derive(Clone)]
pub struct Series<M>(Arc<std::sync::OnceLock<M>>);

impl<M> Series<M> {
    /// The series, made by `create` the first time.
    pub fn get(&self, create: impl FnOnce() -> M) -> &M {
        self.0.get_or_init(create)
    }
}

impl<M> Default for Series<M> {
    fn default() -> Self {
        Series(Arc::new(std::sync::OnceLock::new()))
    }
}

impl<M> std::fmt::Debug for Series<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Series")
    }
}

impl<M> PartialEq for Series<M> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<M> Eq for Series<M> {}

/// Request latencies: from a 0.5 ms activation to a 5-minute answer.
pub const REQUEST_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// Stream lifetimes: from a second to a day.
pub const STREAM_BUCKETS: [f64; 10] = [
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    12.0 * 3600.0,
    86400.0,
];

/// Makes histograms with fixed buckets (a `Family` needs a constructor that is `Clone`).
#[derive(Debug, Clone, Copy)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// A histogram family with fixed buckets.
pub type HistogramFamily<S> = Family<S, Histogram, Buckets>;

pub fn histogram_family<S: Clone + std::hash::Hash + Eq>(
    buckets: &'static [f64],
) -> HistogramFamily<S> {
    Family::new_with_constructor(Buckets(buckets))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Name,
    endpoint: &'static str,
    method: &'static str,
    status_class: &'static str,
    error_code: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: Name,
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The commit the binary was built from (`build.rs`: `git rev-parse`, else `unknown`).
pub const COMMIT: &str = env!("PIPELINE_GATEWAY_COMMIT");
/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The client protocol of a connection or tunnel (`connections_open{protocol}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// An upgraded WebSocket tunnel (its HTTP/1.1 connection is counted as `h1` too).
    WebSocket,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
            Protocol::WebSocket => "ws",
        }
    }
}

/// What the access-log layer learnt about one answered request.
pub struct Answered<'a> {
    /// The upstream the route table chose; `None` when the request was answered before.
    pub route: Option<&'a Arc<str>>,
    pub endpoint: &'static str,
    pub method: &'a Method,
    pub status: u16,
    /// The gateway's `error_code`, when the gateway wrote the answer.
    pub error_code: Option<&'a Cow<'static, str>>,
    pub latency: Duration,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<DurationLabels>,
    streams: HistogramFamily<StreamLabels>,
    in_flight: Gauge,
    connections: Family<ProtocolLabels, Gauge>,
    /// The not-routed route label, made once.
    unrouted: Name,
    status: Arc<StatusBoard>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET`, `POST`… as a static label; anything else is `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `2xx`, `4xx`…
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

static UPSTREAM_CODE: Cow<'static, str> = Cow::Borrowed("upstream");
static NO_CODE: Cow<'static, str> = Cow::Borrowed("");

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pipeline_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route (the upstream chosen, `none` before routing), \
             endpoint, method, status class and error_code (`upstream`: the manager's own \
             error; empty: no error)",
            requests.clone(),
        );
        let durations = histogram_family(&REQUEST_BUCKETS);
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route and endpoint (streams too: \
             their lifetime is stream_duration_seconds)",
            durations.clone(),
        );
        let streams = histogram_family(&STREAM_BUCKETS);
        registry.register(
            "stream_duration_seconds",
            "Lifetime of streamed answers (egress, query and the other stream endpoints), \
             from request to the end of the response body, by endpoint",
            streams.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests received whose response headers have not left yet",
            in_flight.clone(),
        );
        let connections = Family::<ProtocolLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Open client connections by protocol (h1, h2) and upgraded WebSocket tunnels (ws)",
            connections.clone(),
        );
        registry.register(
            "build",
            "The running build: version and commit",
            Info::new(BuildLabels {
                version: VERSION,
                commit: COMMIT,
            }),
        );
        Metrics {
            registry,
            requests,
            durations,
            streams,
            in_flight,
            connections,
            unrouted: Name::new("none"),
            status: Arc::new(StatusBoard::new()),
        }
    }

    /// For modules registering their own metrics while the process is set up.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// What the status page shows that Prometheus does not keep.
    pub fn status(&self) -> &Arc<StatusBoard> {
        &self.status
    }

    /// Counts an answered request and its time to headers.
    pub fn observe_request(&self, answered: &Answered<'_>) {
        let route = answered
            .route
            .map_or_else(|| self.unrouted.clone(), Name::from);
        let error_code = match answered.error_code {
            Some(code) => code.clone(),
            None if answered.status >= 400 => UPSTREAM_CODE.clone(),
            None => NO_CODE.clone(),
        };
        self.durations
            .get_or_create(&DurationLabels {
                route: route.clone(),
                endpoint: answered.endpoint,
            })
            .observe(answered.latency.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                endpoint: answered.endpoint,
                method: method_label(answered.method),
                status_class: status_class(answered.status),
                error_code,
            })
            .inc();
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.in_flight.clone())
    }

    /// Counts an open connection (or tunnel) of `protocol` until the guard is dropped.
    pub fn connection(&self, protocol: Protocol) -> GaugeGuard {
        GaugeGuard::new(self.connection_gauge(protocol))
    }

    /// The gauge open connections of `protocol` are counted in.
    pub fn connection_gauge(&self, protocol: Protocol) -> Gauge {
        self.connections
            .get_or_create(&ProtocolLabels {
                protocol: protocol.as_str(),
            })
            .clone()
    }

    /// Wraps a streamed answer's body so that its lifetime (from `started`) is observed when
    /// it ends or is dropped.
    pub fn time_stream(&self, endpoint: &'static str, started: Instant, body: Body) -> Body {
        let histogram = self
            .streams
            .get_or_create(&StreamLabels { endpoint })
            .clone();
        crate::body::boxed(TimedBody {
            inner: body,
            histogram,
            started,
        })
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Increments a gauge now and decrements it when dropped.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A response body whose lifetime is observed when dropped (at its end, or when the client
/// goes away).
struct TimedBody {
    inner: Body,
    histogram: Histogram,
    started: Instant,
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_static() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").expect("method")),
            "other"
        );
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(502), "5xx");
    }

    #[test]
    fn an_answer_is_counted_with_its_labels_and_the_build_is_described() {
        let metrics = Metrics::new();
        let route: Arc<str> = Arc::from("primary");
        let code = Cow::Borrowed("UnknownPipelineName");
        metrics.observe_request(&Answered {
            route: Some(&route),
            endpoint: "pipelines.get",
            method: &Method::GET,
            status: 404,
            error_code: Some(&code),
            latency: Duration::from_millis(3),
        });
        metrics.observe_request(&Answered {
            route: None,
            endpoint: "-",
            method: &Method::GET,
            status: 502,
            error_code: None,
            latency: Duration::from_millis(3),
        });
        let text = metrics.encode();
        assert!(text.contains(
            "pipeline_gateway_requests_total{route=\"primary\",endpoint=\"pipelines.get\",\
             method=\"GET\",status_class=\"4xx\",error_code=\"UnknownPipelineName\"} 1"
        ));
        assert!(text.contains("route=\"none\""), "{text}");
        assert!(text.contains("error_code=\"upstream\""), "{text}");
        assert!(
            text.contains("pipeline_gateway_build_info{version=\""),
            "{text}"
        );
        assert!(text.contains(
            "pipeline_gateway_request_duration_seconds_bucket{le=\"0.005\",route=\"primary\",endpoint=\"pipelines.get\"} 1"
        ) || text.contains("pipeline_gateway_request_duration_seconds_bucket{route=\"primary\",endpoint=\"pipelines.get\",le=\"0.005\"} 1"), "{text}");
    }
}
