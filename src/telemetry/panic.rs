//! A panic while handling a request becomes a JSON 500 `InternalError`; the panic message
//! goes to the log only, once (an error line here; the access line's `internal` points at
//! it). Covers the synchronous `call` and the response future; a panic while streaming a
//! body after the headers left cannot become a response (the connection closes).

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tower::{Layer, Service};

use crate::body::{Request, Response, ResponseFuture};
use crate::errors::GatewayError;

#[derive(Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

#[derive(Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

fn panic_response(payload: Box<dyn std::any::Any + Send>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    // The cause is logged here, once, at error level; the access line only points at it.
    tracing::error!(panic = %message, "request handler panicked");
    GatewayError::internal("a request handler panicked (the error line before has the cause)")
        .into_response()
}

impl<S> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> ResponseFuture {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => Box::pin(AssertUnwindSafe(future).catch_unwind().map(|r| match r {
                Ok(response) => response,
                Err(payload) => Ok(panic_response(payload)),
            })),
            Err(payload) => Box::pin(std::future::ready(Ok(panic_response(payload)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn a_panic_becomes_a_json_500_internal_error() {
        let service =
            ServiceBuilder::new()
                .layer(CatchPanicLayer)
                .service_fn(|_: Request| async move {
                    if true {
                        panic!("boom");
                    }
                    Ok::<Response, Infallible>(Response::new(crate::body::empty()))
                });
        let response = service
            .oneshot(Request::new(crate::body::empty()))
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["x-error-source"], "gateway");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error_code"], "InternalError");
        assert_eq!(body["details"], serde_json::json!({}));
        assert!(
            !body["message"].as_str().unwrap().contains("boom"),
            "panic text stays internal"
        );
    }
}
