//! The one body type that flows through the stack, in both directions.
//!
//! Requests arrive as `hyper::body::Incoming` and leave toward the upstream in this type;
//! responses from the upstream and responses the gateway writes itself share it too, so
//! every layer has the same signature. It is a boxed, unsynchronised body: one allocation per
//! message, no copying of the bytes it streams.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use pin_project_lite::pin_project;

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

/// A request as every layer sees it.
pub type Request = http::Request<Body>;
/// A response as every layer returns it.
pub type Response = http::Response<Body>;
/// The future of a layer that must box (async work of its own).
pub type ResponseFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

/// Shared progress of the client's request body: whether it was received completely (the
/// timeout layer tells a slow client, 408, from a slow upstream, 504, by it), and how many
/// bytes came so far (the access log's `bytes_in`).
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(std::sync::Arc<ProgressInner>);

#[derive(Debug, Default)]
struct ProgressInner {
    complete: std::sync::atomic::AtomicBool,
    bytes: std::sync::atomic::AtomicU64,
}

impl BodyProgress {
    pub fn is_complete(&self) -> bool {
        self.0.complete.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn complete(&self) {
        self.0
            .complete
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Bytes of the body received so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn received(&self, bytes: usize) {
        self.0
            .bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why the client's request body failed on its way to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the request body failed: {0}")]
    Read(BoxError),
    #[error("the request body sent nothing for {after:?}")]
    Idle { after: std::time::Duration },
}

pin_project! {
    /// The client's request body: counts bytes against an optional limit, fails when the
    /// client sends nothing for `idle` (its timer restarts with every frame), marks its
    /// [`BodyProgress`] when complete, and labels its errors as the client's.
    pub struct Tracked {
        #[pin]
        inner: Body,
        seen: u64,
        limit: Option<u64>,
        progress: BodyProgress,
        idle: std::time::Duration,
        #[pin]
        timer: tokio::time::Sleep,
    }
}

impl Tracked {
    pub fn new(
        inner: Body,
        limit: Option<u64>,
        progress: BodyProgress,
        idle: std::time::Duration,
    ) -> Tracked {
        if inner.is_end_stream() {
            progress.complete();
        }
        Tracked {
            inner,
            seen: 0,
            limit,
            progress,
            idle,
            timer: tokio::time::sleep(idle),
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.poll_frame(cx);
        let Poll::Ready(polled) = polled else {
            // Nothing yet: the client has until the timer to send the next bytes.
            ready!(this.timer.as_mut().poll(cx));
            return Poll::Ready(Some(
                Err(ClientBodyError::Idle { after: *this.idle }.into()),
            ));
        };
        if polled.is_some() {
            let deadline = tokio::time::Instant::now() + *this.idle;
            this.timer.as_mut().reset(deadline);
        }
        match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    this.progress.received(data.len());
                    if let Some(limit) = *this.limit {
                        if *this.seen > limit {
                            return Poll::Ready(Some(Err(
                                ClientBodyError::TooLarge { limit }.into()
                            )));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(ClientBodyError::Read(error).into()))),
            None => {
                this.progress.complete();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
