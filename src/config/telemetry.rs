//! `[tracing]` and `[log]`: where the gateway's traces go and what its log says.
//!
//! ```toml
//! [tracing]                                  # off without this section
//! otlp_endpoint = "http://127.0.0.1:4318"    # the collector's OTLP/HTTP base URL
//! protocol = "http/protobuf"                 # "grpc" is refused: not built in (see below)
//! sample_ratio = 0.1                         # new traces kept; a sampled parent is always kept
//! service_name = "pipeline-gateway"
//! queue_size = 2048                          # spans waiting for export; beyond: dropped, counted
//! export_interval = "5s"                     # how often a batch leaves
//! export_timeout = "10s"                     # one export's deadline
//!
//! [log]
//! format = "json"                            # or "text"; default: json unless stderr is a terminal
//! access_fields = ["trace_id", "principal", "status", "duration_us"]   # default: all
//! ```
//!
//! Checks: the endpoint is an `http://` or `https://` URL; the ratio is within 0..=1; the
//! queue holds at least one span. `protocol = "grpc"` is a problem with its reason: OTLP/gRPC
//! would build tonic and a second HTTP/2 stack into the gateway for what OTLP/HTTP does as
//! well (every collector — the OpenTelemetry Collector, Jaeger, Tempo — accepts both).
//!
//! Both sections are read when the process starts: the tracer and the log's format are
//! process-wide. A reload that changes them is logged as needing a restart; the access-log
//! fields follow a reload (the request path is rebuilt with it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over HTTP, protobuf bodies, `POST {otlp_endpoint}/v1/traces`.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP over gRPC: accepted by the parser so that check-config can say why it is refused.
    #[serde(rename = "grpc")]
    Grpc,
}

/// `[tracing]`: OpenTelemetry traces, exported over OTLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's base URL; `/v1/traces` is appended unless the path already ends so.
    pub otlp_endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// The share of new traces kept (a trace the client started and sampled is always kept).
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: f64,
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// Finished spans waiting for export; a span finishing while it is full is dropped and
    /// counted (`pipeline_gateway_trace_spans_dropped_total`), never waited for.
    #[serde(default = "defaults::queue_size")]
    pub queue_size: usize,
    /// How often a batch is exported.
    #[serde(default = "defaults::export_interval", with = "humantime_serde")]
    pub export_interval: Duration,
    /// One export's deadline.
    #[serde(default = "defaults::export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl TracingConfig {
    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }
    }

    pub(super) fn check(&self, path: &str, problems: &mut Problems) {
        match self.otlp_endpoint.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() => {}
            _ => problems.push(
                format!("{path}.otlp_endpoint"),
                format!("{:?} is not an http:// or https:// URL", self.otlp_endpoint),
            ),
        }
        if self.protocol == OtlpProtocol::Grpc {
            problems.push(
                format!("{path}.protocol"),
                "\"grpc\" is not supported: OTLP/gRPC would build tonic into the gateway; \
                 use \"http/protobuf\" (collectors accept both, on port 4318 by default)",
            );
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(
                format!("{path}.sample_ratio"),
                format!("{} is outside 0..=1", self.sample_ratio),
            );
        }
        if self.service_name.is_empty() {
            problems.push(format!("{path}.service_name"), "must not be empty");
        }
        if !(1..=1_000_000).contains(&self.queue_size) {
            problems.push(
                format!("{path}.queue_size"),
                format!("{} is outside 1..=1000000", self.queue_size),
            );
        }
        if self.export_interval.is_zero() {
            problems.push(format!("{path}.export_interval"), "must be above zero");
        }
        if self.export_timeout.is_zero() {
            problems.push(format!("{path}.export_timeout"), "must be above zero");
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// One field of the access-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessField {
    RequestId,
    TraceId,
    SpanId,
    Method,
    Path,
    Status,
    /// The catalogued API endpoint (`pipelines.list`, `activate`, …).
    Endpoint,
    /// The `[[routes]]` entry that took the request (`routes[0]`, `console`).
    Route,
    Upstream,
    /// The upstream endpoint (replica) that answered, `host:port`.
    UpstreamEndpoint,
    /// Tries beyond the first (other endpoints, and re-sends on a closed pooled connection).
    Retries,
    Principal,
    Tenant,
    ErrorCode,
    /// The internal cause of an error response (never a credential).
    Internal,
    /// Request body bytes read when the response headers left.
    BytesIn,
    /// The response's declared `Content-Length` (absent for streamed bodies).
    BytesOut,
    /// Microseconds from the request to its response headers.
    DurationUs,
}

impl AccessField {
    pub const ALL: [AccessField; 18] = [
        AccessField::RequestId,
        AccessField::TraceId,
        AccessField::SpanId,
        AccessField::Method,
        AccessField::Path,
        AccessField::Status,
        AccessField::Endpoint,
        AccessField::Route,
        AccessField::Upstream,
        AccessField::UpstreamEndpoint,
        AccessField::Retries,
        AccessField::Principal,
        AccessField::Tenant,
        AccessField::ErrorCode,
        AccessField::Internal,
        AccessField::BytesIn,
        AccessField::BytesOut,
        AccessField::DurationUs,
    ];
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `None`: JSON unless stderr (where the log goes) is a terminal. `--log-format`
    /// overrides it.
    pub format: Option<LogFormat>,
    /// The access-log line's fields, in any order; default: all of them.
    pub access_fields: Vec<AccessField>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: None,
            access_fields: AccessField::ALL.to_vec(),
        }
    }
}

mod defaults {
    use std::time::Duration;
    pub fn sample_ratio() -> f64 {
        1.0
    }
    pub fn service_name() -> String {
        "pipeline-gateway".to_owned()
    }
    pub fn queue_size() -> usize {
        2048
    }
    pub fn export_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn export_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn problems(section: &str) -> Vec<String> {
        let text = format!(
            "[auth]\nmode = \"off\"\n[[upstreams]]\nname = \"a\"\n\
             endpoints = [\"http://127.0.0.1:1\"]\n[[routes]]\npipelines = [\"*\"]\n\
             upstream = \"a\"\ndefault = true\n{section}"
        );
        let config: Config = crate::config::parse_toml(&text).expect("parses");
        config.check().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn tracing_problems_name_their_keys_and_grpc_says_why() {
        let found = problems(
            "[tracing]\notlp_endpoint = \"collector:4318\"\nprotocol = \"grpc\"\n\
             sample_ratio = 1.5\nqueue_size = 0\n",
        );
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].starts_with("tracing.otlp_endpoint: \"collector:4318\" is not"));
        assert!(found[1].starts_with("tracing.protocol: \"grpc\" is not supported: OTLP/gRPC"));
        assert_eq!(found[2], "tracing.sample_ratio: 1.5 is outside 0..=1");
        assert_eq!(found[3], "tracing.queue_size: 0 is outside 1..=1000000");
    }

    #[test]
    fn a_minimal_tracing_section_is_valid_and_defaults_to_everything_sampled() {
        let text = "otlp_endpoint = \"http://127.0.0.1:4318/\"";
        let tracing: TracingConfig = toml::from_str(text).expect("parses");
        assert_eq!(tracing.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(tracing.sample_ratio, 1.0);
        assert_eq!(tracing.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert!(problems(&format!("[tracing]\n{text}\n")).is_empty());
    }

    #[test]
    fn log_fields_are_checked_names() {
        let log: LogConfig =
            toml::from_str("format = \"text\"\naccess_fields = [\"trace_id\", \"retries\"]")
                .expect("parses");
        assert_eq!(log.format, Some(LogFormat::Text));
        assert_eq!(
            log.access_fields,
            [AccessField::TraceId, AccessField::Retries]
        );
        assert!(toml::from_str::<LogConfig>("access_fields = [\"token\"]").is_err());
    }
}
