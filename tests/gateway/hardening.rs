//! Headers and framing an attacker at the edge would try first (issue 13 §5), and a stalled
//! upload (§4): refused in the schema, or cleaned before the manager sees the request.

use std::net::SocketAddr;
use std::time::Duration;

use feldera_standin::Fault;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

async fn raw_request(addr: SocketAddr, head: &str) -> Reply {
    raw(addr, head.as_bytes()).await
}

#[tokio::test]
async fn host_must_be_one_valid_authority() {
    let (gw, upstream) = pair().await;
    let addr = gw.local_addr();
    for (head, reason) in [
        (
            "GET /v0/pipelines HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
            "more than one Host header",
        ),
        (
            "GET /v0/pipelines HTTP/1.1\r\nconnection: close\r\n\r\n",
            "an HTTP/1.1 request needs a Host header",
        ),
        (
            "GET /v0/pipelines HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n",
            "the Host header is not a valid authority",
        ),
        // Found by tests/properties.rs: an absolute-form target names its own host.
        (
            "GET http://b/v0/pipelines HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
            "the Host header and the request target name different hosts",
        ),
    ] {
        let details = raw_request(addr, head).await.error(400, "InvalidRequest");
        assert_eq!(details["reason"], reason);
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn path_bytes_outside_pchar_are_invalid_path() {
    // Found by tests/properties.rs: hyper lets these through, no valid path has them.
    let (gw, upstream) = pair().await;
    for path in [
        "/v0/pipelines/a{b}",
        "/v0/pipelines/p|q/stats",
        "/v0/pipelines/\"p\"",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n");
        let details = raw_request(gw.local_addr(), &head)
            .await
            .error(400, "InvalidPath");
        assert_eq!(
            details["reason"], "character not allowed in a path",
            "{path}"
        );
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_501() {
    let (gw, upstream) = pair().await;
    let reply = raw_request(
        gw.local_addr(),
        "POST /v0/pipelines HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: gzip, chunked\r\n\
         connection: close\r\n\r\n0\r\n\r\n",
    )
    .await;
    let details = reply.error(501, "UnsupportedTransferCoding");
    assert_eq!(details["transfer_encoding"], "gzip");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn one_oversized_header_line_and_too_many_lines_are_431_in_json() {
    let (gw, upstream) = pair().await;
    let url = format!("{}/v0/pipelines", gw.url());
    let big = "x".repeat(17_000);
    let details = send("GET", &url, &[("x-big", &big)], b"")
        .await
        .error(431, "RequestHeaderFieldsTooLarge");
    assert_eq!(details["header"], "x-big");
    assert_eq!(details["limit"], 16384);
    let names: Vec<String> = (0..101).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let details = send("GET", &url, &many, b"")
        .await
        .error(431, "RequestHeaderFieldsTooLarge");
    assert_eq!(details["limit"], 100);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn headers_that_name_the_client_are_the_gateways_to_set() {
    let (gw, upstream) = pair().await;
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/orders?api_key=leak&selector=all", gw.url()),
        &[
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/v0/tenants"),
            ("connection", "authorization, x-request-id"),
            ("authorization", "Bearer kept"),
            ("cookie", "session=steal"),
            ("x-api-key", "unverified"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    let request = seen.last().unwrap();
    let h = &request.headers;
    for gone in [
        "x-real-ip",
        "x_forwarded_for",
        "x-http-method-override",
        "x-original-url",
        "cookie",
        "x-api-key",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the manager: {h:?}");
    }
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    let forwarded = h["forwarded"].to_str().unwrap();
    assert!(
        forwarded.starts_with("for=127.0.0.1;proto=http;host="),
        "{forwarded}"
    );
    assert_eq!(
        h["authorization"], "Bearer kept",
        "Connection cannot remove it"
    );
    assert!(h.get("x-request-id").is_some());
    assert_eq!(request.uri.query(), Some("selector=all"));
}

#[tokio::test]
async fn the_console_keeps_its_cookies() {
    let (gw, upstream) = pair().await;
    let reply = send(
        "GET",
        &format!("{}/", gw.url()),
        &[("cookie", "theme=dark")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream.requests().last().unwrap().headers["cookie"],
        "theme=dark"
    );
}

/// An upstream that answers every request with `response` (raw bytes) and closes.
async fn raw_upstream(response: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn malformed_upstream_framing_is_502_never_passed_on() {
    for response in [
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 600 Weird\r\ncontent-length: 0\r\n\r\n",
    ] {
        let gw = gateway(&config_for(&raw_upstream(response).await, "")).await;
        let reply = get(&format!("{}/v0/pipelines", gw.url())).await;
        let details = reply.error(502, "UpstreamUnavailable");
        assert_eq!(details["reason"], "malformed response", "{response:?}");
    }
}

#[tokio::test]
async fn a_location_at_the_upstreams_own_address_points_at_the_gateway() {
    let (gw, upstream) = pair().await;
    let own = format!("{}/v0/pipelines/orders", upstream.url());
    upstream.set_fault(
        "/v0/pipelines/moved",
        Fault::Respond {
            status: 308,
            content_type: None,
            body: vec![],
            headers: vec![("location".into(), own)],
        },
    );
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/moved", gw.url()),
        &[("host", "gateway.example:8443")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some("http://gateway.example:8443/v0/pipelines/orders")
    );
}

#[tokio::test]
async fn an_upload_that_stalls_is_408_and_the_upstream_request_aborted() {
    let upstream = standin("a").await;
    let gw = gateway(&config_for(&upstream.url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nbody_idle_timeout = \"300ms\"",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(
            b"POST /v0/pipelines/live/ingress/t HTTP/1.1\r\nhost: gw\r\n\
              transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    // … and then nothing more.
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await;
    assert!(
        read.is_ok(),
        "the gateway answered instead of waiting for ever"
    );
    let reply = parse_raw(&bytes);
    let details = reply.error(408, "RequestTimeout");
    assert_eq!(details, json!({"timeout_s": 0.3}));
}

/// Smuggling shapes (RFC 9112 §6.3): a body framed two ways, or two lengths. hyper settles
/// both before the gateway sees a request: `Transfer-Encoding` wins over `Content-Length`
/// and the connection is closed after the answer, and two different lengths are refused.
/// Either way the request hidden behind the first never reaches the manager.
#[tokio::test]
async fn a_request_hidden_behind_a_body_framed_two_ways_never_reaches_the_manager() {
    let (gw, upstream) = pair().await;
    let addr = gw.local_addr();
    let send = |head: &'static str| async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let answer = send(
        "POST /v0/pipelines HTTP/1.1\r\nhost: gw\r\ncontent-length: 4\r\n\
         transfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /v0/pipelines/smuggled HTTP/1.1\r\nhost: gw\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, http::Method::POST);
    assert_eq!(seen[0].headers["transfer-encoding"], "chunked");
    assert!(!seen[0].headers.contains_key("content-length"));

    let answer = send(
        "POST /v0/pipelines HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\ncontent-length: 40\r\n\r\n\
         {}GET /v0/pipelines/smuggled HTTP/1.1\r\nhost: gw\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert_eq!(upstream.requests().len(), 1);
}
