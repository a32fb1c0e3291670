//! Bodies the proxy wraps: the client's request body on its way up ([`Tracked`]), and an
//! upstream body whose start was already read ([`Prefixed`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{Body, BoxError};

/// Why the client's request body failed on its way to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the request body failed: {0}")]
    Read(BoxError),
}

/// Shared flag: whether the client's request body was received completely.
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(Arc<AtomicBool>);

impl BodyProgress {
    pub fn is_complete(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    fn complete(&self) {
        self.0.store(true, Ordering::Release);
    }
}

pin_project! {
    /// The client's request body: counts bytes against an optional limit, marks its
    /// [`BodyProgress`] when complete, and labels its errors as the client's.
    pub struct Tracked {
        #[pin]
        inner: Body,
        seen: u64,
        limit: Option<u64>,
        progress: BodyProgress,
    }
}

impl Tracked {
    pub fn new(inner: Body, limit: Option<u64>, progress: BodyProgress) -> Tracked {
        if inner.is_end_stream() {
            progress.complete();
        }
        Tracked {
            inner,
            seen: 0,
            limit,
            progress,
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
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
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

pin_project! {
    /// `prefix`, then the rest of `rest`.
    pub struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> Prefixed<B> {
    pub fn new(prefix: Bytes, rest: B) -> Self {
        Prefixed {
            prefix: Some(prefix),
            rest,
        }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}
