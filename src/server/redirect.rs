//! `[[server.redirect]]`: a plain-HTTP listener that only redirects to https.
//!
//! Every request is answered `308 Permanent Redirect` to `https://HOST[:PORT]PATH?QUERY`: the
//! host the client asked for (its `Host` header, or the request target's authority, without
//! the port), the port of the TLS listener (`https_port`, default: `server.listen`'s; left
//! out when 443), and the path and query unchanged. 308 keeps the method and the body, so a
//! `POST` is repeated as a `POST`. A request without a usable host gets a 400
//! `InvalidRequest` (`details.reason = "missing_host"`). Nothing is proxied, nothing is
//! authenticated: the redirect carries no credential anywhere.
//!
//! The listeners are bound when the gateway starts; a reload does not add, remove or move
//! them (a restart does).

use std::convert::Infallible;
use std::future::Future;

use http::{header, HeaderValue, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::body;
use crate::errors::GatewayError;

/// The answer to one request: the 308, or the 400 without a host.
pub fn redirect(request: &http::Request<Incoming>, https_port: u16) -> body::Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .and_then(|authority| {
            let authority: http::uri::Authority = authority.parse().ok()?;
            Some(authority.host().to_owned())
        });
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return GatewayError::invalid_request("missing_host").into_response();
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let Ok(location) = HeaderValue::try_from(location) else {
        return GatewayError::invalid_request("missing_host").into_response();
    };
    let mut response = http::Response::new(body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// Serves redirects on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, https_port: u16, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    super::accept_loop(&listener, "redirect", shutdown, |stream, peer| {
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(redirect(&request, https_port)))
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "redirect connection ended with an error");
            }
        });
    })
    .await;
    drop(listener);
    super::drain(graceful, std::time::Duration::from_secs(1), "redirect").await;
}
