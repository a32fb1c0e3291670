//! What the gateway tells operators: request ids, one access-log line per request, traces,
//! metrics.
//!
//! [`RequestLogLayer`] is the outermost layer: it accepts or makes the `x-request-id`, opens
//! the request's span, and writes the access-log line when the response headers leave (the
//! fields `[log] access_fields` chooses: request and trace ids, method, path, status,
//! endpoint, route, upstream and the endpoint that answered, retries, principal, tenant,
//! error code and internal cause, bytes, duration). Inner layers add what they learn through
//! the request context. [`trace`] exports the spans over OTLP when `[tracing]` is configured.
//! [`CatchPanicLayer`] turns a panic into a JSON 500.
//! [`metrics`] is the Prometheus registry and the request path's own metrics; [`status`] what
//! the admin status page remembers (recent errors, most refused principals).

pub mod metrics;
mod panic;
mod request_log;
pub mod status;
pub mod trace;

pub use metrics::{Metrics, Protocol};
pub use panic::CatchPanicLayer;
pub use request_log::{RequestLogLayer, REQUEST_ID};
pub use status::{CertificateExpiry, StatusBoard};
