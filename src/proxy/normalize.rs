//! Upstream error responses, brought into the one error schema.
//!
//! Only responses with status >= 400 are looked at, and never a 101, a response to `HEAD`,
//! or the 503 of `GET /v0/cluster_healthz` (its `HealthStatus` body is parsed by clients).
//! Success bodies and streams are never touched. The body is read with a bound in size
//! ([`MAX_ERROR_BODY`]) and time ([`ERROR_BODY_TIMEOUT`]).
//!
//! The manager compresses its errors whenever the client sends `Accept-Encoding` (Feldera's
//! Python SDK always does), so an encoded body is decoded first ([`super::decode`]; the bound
//! applies to the decoded size too) and judged on what it says:
//!
//! - A body in the schema (a JSON object with string `message`, string `error_code` and a
//!   `details` key) passes through byte for byte — still encoded — with its headers.
//! - A JSON object with `error_code` and/or `message` but no `details` keeps them and gets
//!   `details: {}` (the manager's unknown-API-key 401 and wrong-method 403).
//! - An empty 404 becomes `UnknownEndpoint`; an empty 401 becomes `AuthenticationFailed`
//!   with the reason from `WWW-Authenticate`'s `error_description`.
//! - A body longer than the bound (encoded or decoded) becomes `UpstreamError` quoting its
//!   first <= 1 KiB with `details.truncated = true`: never a raw multi-megabyte text body.
//! - A body whose coding is unknown or whose stream is corrupt becomes `UpstreamError` with
//!   `details {"upstream_status", "content_encoding", "reason": "undecodable body"}`.
//! - Anything else becomes `UpstreamError` with `details {"upstream_status", "body"}` (the
//!   first <= 1 KiB of the decoded body as text).
//!
//! Rewritten responses are plain JSON (`Content-Encoding` removed, `Content-Length` of the new
//! body), keep the upstream's status and other headers (`Retry-After`, `WWW-Authenticate`,
//! `Vary`, …) and carry `x-error-source: upstream`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::body::{self, Body, Response};

use super::decode;
use crate::errors::GatewayError;

/// The most bytes of an upstream error body the gateway reads to normalize it.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most bytes of a non-conforming body quoted in `details.body`.
pub const QUOTED_BODY: usize = 1024;
/// How long the gateway waits for an upstream error body.
pub const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a response to `method` with `status` on `endpoint` is normalized at all.
pub fn wants_normalizing(
    method: &http::Method,
    status: StatusCode,
    endpoint: &crate::catalog::Endpoint,
) -> bool {
    status.as_u16() >= 400
        && method != http::Method::HEAD
        && !(endpoint.health_report && status == StatusCode::SERVICE_UNAVAILABLE)
}

/// An upstream error body as read: whole, or its first [`MAX_ERROR_BODY`] bytes.
#[derive(Debug, Clone)]
pub enum ErrorBody {
    Complete(Bytes),
    /// Longer than the bound: only its start was read (the rest is never sent on).
    TooLong(Bytes),
}

/// Reads an upstream error body, bounded in size and time; `Err` is the 502 to answer.
pub async fn read_error_body<B>(mut body: B, upstream: &str) -> Result<ErrorBody, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buffer = BytesMut::new();
    let read = tokio::time::timeout(ERROR_BODY_TIMEOUT, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
                if buffer.len() > MAX_ERROR_BODY {
                    return Ok::<bool, String>(false);
                }
            }
        }
        Ok(true)
    })
    .await;
    match read {
        Ok(Ok(true)) => Ok(ErrorBody::Complete(buffer.freeze())),
        Ok(Ok(false)) => Ok(ErrorBody::TooLong(buffer.freeze())),
        Ok(Err(error)) => Err(GatewayError::upstream_unavailable(
            upstream,
            "error body was cut off",
        )
        .with_internal(format!("reading the upstream error body: {error}"))),
        Err(_) => Err(GatewayError::upstream_unavailable(
            upstream,
            "error body timed out",
        )),
    }
}

/// Whether an error body (decoded as needed) is one of the manager's typed errors (a JSON
/// object with an `error_code`): the manager is alive and speaking about a pipeline, not an
/// endpoint (or a proxy in front of it) failing.
pub async fn is_manager_error(headers: &HeaderMap, body: &ErrorBody) -> bool {
    let ErrorBody::Complete(raw) = body else {
        return false;
    };
    let codings = decode::codings(headers);
    let decoded = if codings.is_empty() {
        raw.clone()
    } else {
        match decode::decode(raw.clone(), &codings, MAX_ERROR_BODY).await {
            Ok(decoded) => decoded,
            Err(_) => return false,
        }
    };
    serde_json::from_slice::<Map<String, Value>>(&decoded)
        .is_ok_and(|object| object.get("error_code").is_some_and(Value::is_string))
}

/// Normalizes an upstream error response (see the module docs).
pub async fn normalize(response: http::Response<Incoming>, upstream: &str, path: &str) -> Response {
    let (parts, incoming) = response.into_parts();
    match read_error_body(incoming, upstream).await {
        Ok(body) => normalize_read(parts, body, path).await,
        Err(error) => error.into_response(),
    }
}

/// Normalizes an upstream error response whose body was already read.
pub async fn normalize_read(parts: http::response::Parts, body: ErrorBody, path: &str) -> Response {
    let (raw, complete) = match body {
        ErrorBody::Complete(raw) => (raw, true),
        ErrorBody::TooLong(raw) => (raw, false),
    };
    let codings = decode::codings(&parts.headers);
    let decoded = if !complete {
        // Too long to judge: the first part is quoted, never the whole body passed on.
        let prefix = if codings.is_empty() {
            raw.clone()
        } else {
            decode::decode_prefix(raw.clone(), &codings, QUOTED_BODY).await
        };
        return rewritten(
            &parts,
            too_long(parts.status, &prefix, &codings, &parts.headers),
        );
    } else if codings.is_empty() {
        raw.clone()
    } else {
        match decode::decode(raw.clone(), &codings, MAX_ERROR_BODY).await {
            Ok(decoded) => decoded,
            Err(decode::DecodeError::TooLarge { .. }) => {
                let prefix = decode::decode_prefix(raw, &codings, QUOTED_BODY).await;
                return rewritten(
                    &parts,
                    too_long(parts.status, &prefix, &codings, &parts.headers),
                );
            }
            Err(decode::DecodeError::Undecodable(reason)) => {
                let error =
                    GatewayError::new(parts.status, "UpstreamError", status_text(parts.status))
                        .with_details(json!({
                            "upstream_status": parts.status.as_u16(),
                            "content_encoding": decode::content_encoding_text(&parts.headers),
                            "reason": "undecodable body",
                        }))
                        .with_internal(reason)
                        .from_upstream();
                return rewritten(&parts, error);
            }
        }
    };
    match rewrite(parts.status, &parts.headers, &decoded, path) {
        // Conforming: the upstream's bytes, still encoded, and its headers, untouched.
        None => http::Response::from_parts(parts, body::full(raw)),
        Some(error) => rewritten(&parts, error),
    }
}

/// The schema error for a body longer than the bound: `UpstreamError` quoting its start.
fn too_long(
    status: StatusCode,
    prefix: &[u8],
    codings: &[String],
    headers: &HeaderMap,
) -> GatewayError {
    let mut details = json!({
        "upstream_status": status.as_u16(),
        "body": quote(prefix),
        "truncated": true,
    });
    if !codings.is_empty() {
        details["content_encoding"] = decode::content_encoding_text(headers).into();
    }
    GatewayError::new(status, "UpstreamError", status_text(status))
        .with_details(details)
        .with_internal(format!(
            "upstream error body longer than {MAX_ERROR_BODY} bytes"
        ))
        .from_upstream()
}

/// `error` as the response, with the upstream's status and its headers that do not describe
/// the old body (`Content-Encoding` goes: the new body is plain JSON; `Vary` stays).
fn rewritten(parts: &http::response::Parts, error: GatewayError) -> Response {
    let mut response = error.into_response();
    copy_headers(&parts.headers, response.headers_mut());
    *response.status_mut() = parts.status;
    response
}

/// The schema error for a non-conforming body, or `None` when it conforms.
pub fn rewrite(
    status: StatusCode,
    headers: &HeaderMap,
    bytes: &Bytes,
    path: &str,
) -> Option<GatewayError> {
    let object: Option<Map<String, Value>> = serde_json::from_slice(bytes).ok();
    if let Some(object) = &object {
        let message = object.get("message").and_then(Value::as_str);
        let code = object.get("error_code").and_then(Value::as_str);
        if let (Some(_), Some(_), true) = (message, code, object.contains_key("details")) {
            return None;
        }
        if message.is_some() || code.is_some() {
            let code = code.unwrap_or("UpstreamError").to_owned();
            let message = message
                .map(str::to_owned)
                .unwrap_or_else(|| status_text(status));
            return Some(GatewayError::new(status, code, message).from_upstream());
        }
    }
    let error = if bytes.is_empty() && status == StatusCode::NOT_FOUND {
        GatewayError::unknown_endpoint(path)
    } else if bytes.is_empty() && status == StatusCode::UNAUTHORIZED {
        let reason = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(error_description)
            .unwrap_or("unauthorized");
        GatewayError::new(
            status,
            "AuthenticationFailed",
            format!("The pipeline manager rejected the credentials: {reason}"),
        )
        .with_details(json!({ "reason": reason }))
    } else {
        let quoted = quote(bytes);
        GatewayError::new(status, "UpstreamError", status_text(status))
            .with_details(json!({ "upstream_status": status.as_u16(), "body": quoted }))
    };
    Some(error.from_upstream())
}

fn status_text(status: StatusCode) -> String {
    format!(
        "The pipeline manager answered {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

/// `error_description="…"` of a `WWW-Authenticate` value.
fn error_description(value: &str) -> Option<&str> {
    let start = value.find("error_description=\"")? + "error_description=\"".len();
    let rest = &value[start..];
    Some(&rest[..rest.find('"')?])
}

/// The first <= 1 KiB of `bytes`, as text, cut at a character boundary.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BODY + 4)]);
    let mut end = text.len().min(QUOTED_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Copies the upstream's headers onto the rewritten response, except those that describe
/// the old body.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    // The error's own headers (content type, source, caching) win over the upstream's.
    let own: Vec<header::HeaderName> = to.keys().cloned().collect();
    for (name, value) in from {
        if own.contains(name)
            || name == header::CONTENT_TYPE
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_ENCODING
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Boxes an upstream body untouched.
pub fn passthrough(response: http::Response<Incoming>) -> Response {
    response.map(|b: Incoming| -> Body { body::boxed(b) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(status: u16, body: &str) -> Option<GatewayError> {
        rewrite(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            &Bytes::from(body.to_owned()),
            "/v0/x",
        )
    }

    #[test]
    fn conforming_bodies_pass_through() {
        assert!(rewritten(404, r#"{"message":"m","error_code":"C","details":null}"#).is_none());
    }

    #[test]
    fn json_without_details_keeps_code_and_message() {
        let e = rewritten(
            401,
            r#"{"error_code":"AuthenticationFailed","message":"Unauthorized API key"}"#,
        )
        .unwrap();
        assert_eq!(e.code(), "AuthenticationFailed");
        assert_eq!(e.message(), "Unauthorized API key");
        assert_eq!(e.details(), &json!({}));
    }

    #[test]
    fn empty_404_and_401_get_their_codes() {
        assert_eq!(rewritten(404, "").unwrap().code(), "UnknownEndpoint");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::WWW_AUTHENTICATE,
            "Bearer error_description=\"ExpiredSignature\""
                .parse()
                .unwrap(),
        );
        let e = rewrite(StatusCode::UNAUTHORIZED, &headers, &Bytes::new(), "/").unwrap();
        assert_eq!(e.code(), "AuthenticationFailed");
        assert_eq!(e.details()["reason"], "ExpiredSignature");
    }

    #[test]
    fn anything_else_is_upstream_error_quoting_at_most_one_kib() {
        let e = rewritten(400, &"x".repeat(5000)).unwrap();
        assert_eq!(e.code(), "UpstreamError");
        assert_eq!(e.details()["upstream_status"], 400);
        assert_eq!(e.details()["body"].as_str().unwrap().len(), 1024);
        let e = rewritten(500, "<html>oops</html>").unwrap();
        assert_eq!(e.details()["body"], "<html>oops</html>");
    }
}
