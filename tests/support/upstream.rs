//! The one small test upstream besides the stand-in: [`echo_upstream`] answers every request
//! with 200 and what it received (method, path, headers), so a test sees what the manager
//! would see. [`serve`] is its server, and serves any other handler a test needs (a JWKS
//! endpoint, a page for the browser). [`closed_port`] is a port where no upstream listens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Answers one request (the body is not read).
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `handler` over HTTP/1.1 on 127.0.0.1:0 until the test ends.
pub async fn serve(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An upstream that answers 200 with `{"method","path","headers"}` as it received them.
pub async fn echo_upstream() -> SocketAddr {
    serve(Arc::new(|request: Request<Incoming>| {
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .keys()
            .map(|name| {
                let values: Vec<&str> = request
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (name.to_string(), json!(values.join(", ")))
            })
            .collect();
        let body = json!({
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "headers": headers,
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }))
    .await
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}
