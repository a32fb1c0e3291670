//! The gateway's one error type and the one place an error body is written.
//!
//! Every failure the gateway answers itself becomes a [`GatewayError`]: an HTTP status, a
//! Feldera-style `error_code`, a public `message` and `details` (always present, `{}` when there
//! is nothing to add). [`GatewayError::into_response`] renders it as
//! `{"message","error_code","details"}` with `content-type: application/json` and
//! `x-error-source` saying who produced it (`gateway`, or `upstream` when the gateway rewrote a
//! non-conforming upstream error), `cache-control: no-store` and
//! `x-content-type-options: nosniff`. Internal detail that must not reach clients goes into
//! [`ErrorInfo::internal`], a response extension the access log reads.
//!
//! Modules keep their own error enums and convert to this type at their layer boundary; no
//! other code writes an error body.

use std::borrow::Cow;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::body::{self, Body};

/// Header naming who produced an error response.
pub const ERROR_SOURCE: HeaderName = HeaderName::from_static("x-error-source");

/// Who produced an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The gateway decided to answer with an error.
    Gateway,
    /// The upstream answered with an error the gateway rewrote into the schema.
    Upstream,
}

impl ErrorSource {
    fn header_value(self) -> HeaderValue {
        match self {
            ErrorSource::Gateway => HeaderValue::from_static("gateway"),
            ErrorSource::Upstream => HeaderValue::from_static("upstream"),
        }
    }
}

/// Response extension on every error response: what the access log reports about it.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// The `error_code` of the body.
    pub code: Cow<'static, str>,
    /// Detail for operators only (never sent to the client).
    pub internal: Option<String>,
}

/// An error answered by the gateway, in Feldera's error schema. Boxed, so a `Result` with it
/// stays one word wide on the (common) success path.
#[derive(Debug, Clone)]
pub struct GatewayError(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    details: Value,
    source: ErrorSource,
    headers: Vec<(HeaderName, HeaderValue)>,
    internal: Option<String>,
}

#[derive(Serialize)]
struct Schema<'a> {
    message: &'a str,
    error_code: &'a str,
    details: &'a Value,
}

impl GatewayError {
    /// An error with empty `details` (`{}`).
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        GatewayError(Box::new(Inner {
            status,
            code: code.into(),
            message: message.into(),
            details: Value::Object(Default::default()),
            source: ErrorSource::Gateway,
            headers: Vec::new(),
            internal: None,
        }))
    }

    /// Replaces `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.0.details = details;
        self
    }

    /// Adds a response header (e.g. `Allow`, `WWW-Authenticate`, rate-limit headers).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// Adds `Retry-After: secs`.
    pub fn with_retry_after(self, secs: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// Marks the error as produced by the upstream (the gateway only rewrote its shape).
    pub fn from_upstream(mut self) -> Self {
        self.0.source = ErrorSource::Upstream;
        self
    }

    /// Attaches operator-only detail, logged by the access log and never sent.
    pub fn with_internal(mut self, internal: impl Into<String>) -> Self {
        self.0.internal = Some(internal.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn code(&self) -> &str {
        &self.0.code
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn details(&self) -> &Value {
        &self.0.details
    }

    /// The JSON body, exactly as sent.
    pub fn body_bytes(&self) -> Vec<u8> {
        let schema = Schema {
            message: &self.0.message,
            error_code: &self.0.code,
            details: &self.0.details,
        };
        // Serialising strings and a `Value` cannot fail.
        serde_json::to_vec(&schema).unwrap_or_default()
    }

    /// Renders the error as a response. This is the only place an error body is written.
    pub fn into_response(self) -> Response<Body> {
        let bytes = self.body_bytes();
        let mut response = Response::new(body::full(bytes));
        let inner = *self.0;
        *response.status_mut() = inner.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(ERROR_SOURCE, inner.source.header_value());
        // An error is about this one request: never cached, never sniffed into HTML.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        for (name, value) in inner.headers {
            headers.append(name, value);
        }
        response.extensions_mut().insert(ErrorInfo {
            code: inner.code,
            internal: inner.internal,
        });
        response
    }

    // ---- the gateway's own errors (the table in docs/errors.md) ----

    /// 404: the gateway serves no such endpoint.
    pub fn unknown_endpoint(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "UnknownEndpoint",
            format!("Unknown endpoint '{path}'"),
        )
        .with_details(json!({ "path": path }))
    }

    /// 405 with `Allow`.
    pub fn method_not_allowed(method: &http::Method, path: &str, allow: &'static str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("Method {method} is not allowed on '{path}' (allowed: {allow})"),
        )
        .with_details(
            json!({ "method": method.as_str(), "allowed": allow.split(", ").collect::<Vec<_>>() }),
        )
        .with_header(header::ALLOW, HeaderValue::from_static(allow))
    }

    /// 400: a path that is not in canonical form.
    pub fn invalid_path(reason: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidPath",
            format!("Request path is not in canonical form: {reason}"),
        )
        .with_details(json!({ "reason": reason }))
    }

    /// 408: the client did not send its request in time.
    pub fn request_timeout(after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "The request was not received completely within {}",
                humantime::format_duration(after)
            ),
        )
        .with_details(json!({ "timeout_s": after.as_secs_f64() }))
    }

    /// 413: the request body is larger than this route allows.
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
        .with_details(json!({ "limit": limit }))
    }

    /// 414: the request target is longer than the limit.
    pub fn uri_too_long(length: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "UriTooLong",
            format!("Request target is {length} bytes, more than the limit of {limit}"),
        )
        .with_details(json!({ "length": length, "limit": limit }))
    }

    /// 431: the request headers are larger than the limit.
    pub fn header_fields_too_large(size: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLarge",
            format!("Request headers take {size} bytes, more than the limit of {limit}"),
        )
        .with_details(json!({ "size": size, "limit": limit }))
    }

    /// 431: one header line is larger than the limit (its name is named; its value never).
    pub fn header_line_too_large(name: &str, size: usize, limit: usize) -> Self {
        let name: String = name.chars().take(64).collect();
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLarge",
            format!("Request header '{name}' takes {size} bytes, more than the limit of {limit}"),
        )
        .with_details(json!({ "header": name, "size": size, "limit": limit }))
    }

    /// 431: more header lines than the limit.
    pub fn too_many_headers(count: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLarge",
            format!("The request has {count} header lines, more than the limit of {limit}"),
        )
        .with_details(json!({ "count": count, "limit": limit }))
    }

    /// 400: the request is not well-formed HTTP in a way the gateway refuses to guess about.
    pub fn invalid_request(reason: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("The request is malformed: {reason}"),
        )
        .with_details(json!({ "reason": reason }))
    }

    /// 400: a plain HTTP request on a listener that speaks TLS (answered before any TLS, then
    /// the connection is closed).
    pub fn plain_http_on_tls_port() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "This port speaks TLS: send the request with https://",
        )
        .with_details(json!({ "reason": "plain_http_on_tls_port" }))
    }

    /// 501: a transfer coding the gateway does not implement (RFC 9112 §6.1).
    pub fn unsupported_transfer_coding(coding: &str) -> Self {
        let coding: String = coding.chars().take(64).collect();
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "UnsupportedTransferCoding",
            format!("Transfer-Encoding '{coding}' is not implemented; only chunked is"),
        )
        .with_details(json!({ "transfer_encoding": coding }))
    }

    /// 502: the upstream could not be reached or answered with something that is not HTTP.
    pub fn upstream_unavailable(upstream: &str, reason: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "UpstreamUnavailable",
            format!("Upstream '{upstream}' is unavailable: {reason}"),
        )
        .with_details(json!({ "upstream": upstream, "reason": reason }))
    }

    /// 503: every endpoint of the upstream is marked unhealthy.
    pub fn no_healthy_upstream(upstream: &str, retry_after_s: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NoHealthyUpstream",
            format!("No healthy endpoint of upstream '{upstream}' is available"),
        )
        .with_details(json!({ "upstream": upstream }))
        .with_retry_after(retry_after_s)
    }

    /// 503: the endpoint's connections and waiting room are full.
    pub fn upstream_overloaded(upstream: &str, reason: &'static str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UpstreamOverloaded",
            format!("Upstream '{upstream}' is overloaded: {reason}"),
        )
        .with_details(json!({ "upstream": upstream, "reason": reason }))
        .with_retry_after(1)
    }

    /// 503: the gateway cannot serve requests right now (e.g. it is shutting down).
    pub fn service_unavailable(reason: &'static str, retry_after_s: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("The gateway cannot serve this request now: {reason}"),
        )
        .with_details(json!({ "reason": reason }))
        .with_retry_after(retry_after_s)
    }

    /// 503: the client connection is one more than `server.max_connections`; the connection
    /// is closed after this answer.
    pub fn too_many_connections(limit: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TooManyConnections",
            format!("The gateway has its limit of {limit} client connections open"),
        )
        .with_details(json!({ "limit": limit }))
        .with_retry_after(1)
    }

    /// 504: the upstream did not answer in time.
    pub fn upstream_timeout(upstream: &str, after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "UpstreamTimeout",
            format!(
                "Upstream '{upstream}' did not answer within {}",
                humantime::format_duration(after)
            ),
        )
        .with_details(json!({ "upstream": upstream, "timeout_s": after.as_secs_f64() }))
    }

    /// 500: a bug; the detail goes to the log only.
    pub fn internal(internal: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The gateway failed to process the request",
        )
        .with_internal(internal)
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.0.status.as_u16(),
            self.0.code,
            self.0.message
        )
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_schema_with_details_and_source_header() {
        let response = GatewayError::payload_too_large(10).into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[ERROR_SOURCE], "gateway");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["error_code"], "PayloadTooLarge");
        assert_eq!(value["details"]["limit"], 10);
        assert!(value["message"].as_str().unwrap().contains("10 bytes"));
    }

    #[test]
    fn new_error_has_empty_object_details() {
        let error = GatewayError::new(StatusCode::BAD_REQUEST, "X", "y");
        assert_eq!(error.details(), &json!({}));
        assert_eq!(
            error.body_bytes(),
            br#"{"message":"y","error_code":"X","details":{}}"#
        );
    }
}
