//! OpenTelemetry export: the spans `spans` makes, sent to a collector over OTLP/HTTP
//! (protobuf). Off unless `[tracing]` is configured: [`TraceExport::start`] is called once
//! by the binary when it sets up logging, and turns span making on (`spans::enabled`).
//!
//! Sampling is parent-based: a trace the client started and sampled is always kept, one it
//! started and did not sample is not, and `sample_ratio` decides for new traces (by trace
//! id, so every span of a trace is kept or none).
//!
//! Export never blocks a request. A finished (sampled) span goes into a bounded queue,
//! drained by the SDK's batch processor on its own thread every `export_interval`; a span
//! finishing while `queue_size` spans wait is dropped and counted
//! (`pipeline_gateway_trace_spans_dropped_total`). The export itself runs on the gateway's
//! tokio runtime ([`OtlpClient`]: the gateway's own hyper client and rustls connector, no
//! reqwest, no tonic), bounded by `export_timeout`; a collector that is down costs one failed
//! export per interval (a warning, its spans counted as dropped too), and nothing else.
//!
//! What it deliberately does not do: OTLP/gRPC (refused by check-config, see
//! `config::telemetry`), metrics or logs over OTLP (metrics are Prometheus', logs go to
//! stderr), and changing exporters on reload (the exporter is process-wide; a changed
//! `[tracing]` takes effect at restart).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::TracingConfig;

/// Spans not exported: dropped at a full queue, or lost in a failed export (process-wide,
/// like the exporter).
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Registers `trace_spans_dropped_total` (zero while tracing is off).
pub fn register(registry: &mut Registry) {
    registry.register(
        "trace_spans_dropped",
        "Finished spans not exported: the export queue was full, or their export failed",
        DROPPED.clone(),
    );
}

/// The running exporter: keep it for the process's life, [`TraceExport::shutdown`] at exit.
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Builds the exporter and its batch processor, and turns tracing on. `runtime` is the
    /// runtime the exports run on (the gateway's).
    pub fn start(
        config: &TracingConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<TraceExport, String> {
        let client = OtlpClient::new(runtime, config.export_timeout);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.traces_url())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| format!("tracing: the OTLP exporter: {e}"))?;
        let queued = Arc::new(AtomicUsize::new(0));
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.queue_size)
            .with_max_export_batch_size(config.queue_size.min(512))
            .with_scheduled_delay(config.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(CountedExporter {
            inner: exporter,
            queued: queued.clone(),
        })
        .with_batch_config(batch)
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedQueue {
                inner: processor,
                queued,
                limit: config.queue_size,
            })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        crate::spans::set_enabled(true);
        Ok(TraceExport { provider })
    }

    /// The `tracing` layer that turns the gateway's spans into OpenTelemetry spans. Log
    /// events inside a span become span events, except the access-log line (its facts are
    /// the span's attributes already).
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("pipeline-gateway");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                !(metadata.is_event() && metadata.target() == "access")
            }))
    }

    /// Exports what is queued and stops. Blocks: call it outside the runtime's threads
    /// (`spawn_blocking`) while the runtime still runs, since the export runs on it.
    pub fn shutdown(self) {
        crate::spans::set_enabled(false);
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "tracing: the last spans were not exported");
        }
    }
}

/// Counts spans handed to the batch processor and drops (counting them) those beyond the
/// queue's size, so the processor's own queue is never the one that overflows.
#[derive(Debug)]
struct BoundedQueue {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl SpanProcessor for BoundedQueue {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            DROPPED.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, taking spans off [`BoundedQueue`]'s count as their batch leaves.
#[derive(Debug)]
struct CountedExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountedExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        let export = self.inner.export(batch);
        async move {
            let result = export.await;
            if let Err(error) = &result {
                // At most one line per export interval; the spans are counted as lost.
                DROPPED.inc_by(spans as u64);
                tracing::warn!(%error, spans, "tracing: an export failed; its spans are lost");
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: the gateway's connector (plain HTTP or rustls), each export
/// spawned onto the gateway's runtime (the batch processor's thread has none) and bounded by
/// `timeout`, the collector's answer read up to 64 KiB.
#[derive(Clone)]
struct OtlpClient {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpClient {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> OtlpClient {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(crate::outbound::https_connector(timeout));
        OtlpClient {
            client,
            runtime,
            timeout,
        }
    }
}

impl HttpClient for OtlpClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let request = http::Request::from_parts(parts, Full::new(body));
            let response = tokio::time::timeout(timeout, client.request(request)).await??;
            let (parts, body) = response.into_parts();
            let body = tokio::time::timeout(timeout, Limited::new(body, 64 * 1024).collect())
                .await?
                .map_err(|e| -> HttpError { e })?
                .to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        });
        Box::pin(async move { task.await? })
    }
}
