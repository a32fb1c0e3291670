//! What the gateway tells operators: request ids, one access-log line per request, metrics.
//!
//! [`RequestLogLayer`] is the outermost layer: it accepts or makes the `x-request-id`, opens
//! the request's tracing span, and writes the access-log line when the response headers
//! leave (method, path, status, endpoint, upstream, principal, latency, request id, and the
//! error code of error responses). Inner layers add what they learn through the
//! [`RequestLog`] request extension. [`CatchPanicLayer`] turns a panic into a JSON 500.
//! [`metrics`] is the Prometheus registry and the request path's own metrics; [`status`] what
//! the admin status page remembers (recent errors, most refused principals).

pub mod metrics;
mod panic;
mod request_log;
pub mod status;

pub use metrics::{Metrics, Protocol};
pub use panic::CatchPanicLayer;
pub use request_log::{RequestLogLayer, REQUEST_ID};
pub use status::{CertificateExpiry, StatusBoard};
