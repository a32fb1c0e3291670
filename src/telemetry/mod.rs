//! What the gateway tells operators: request ids, one access-log line per request, metrics.
//!
//! [`RequestLogLayer`] is the outermost layer: it accepts or makes the `x-request-id`, opens
//! the request's tracing span, and writes the access-log line when the response headers
//! leave (method, path, status, endpoint, upstream, principal, latency, request id, and the
//! error code of error responses). Inner layers add what they learn through the
//! [`RequestLog`] request extension. [`CatchPanicLayer`] turns a panic into a JSON 500.

pub mod metrics;
mod panic;
mod request_log;

pub use metrics::Metrics;
pub use panic::CatchPanicLayer;
pub use request_log::{RequestLogLayer, REQUEST_ID};
