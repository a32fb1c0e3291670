//! The one body type that flows through the stack, in both directions.
//!
//! Requests arrive as `hyper::body::Incoming` and leave toward the upstream in this type;
//! responses from the upstream and responses the gateway writes itself share it too, so
//! every layer has the same signature. It is a boxed, unsynchronised body: one allocation per
//! message, no copying of the bytes it streams.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// The error any body in the stack may yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response body of every layer.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with nothing in it.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
