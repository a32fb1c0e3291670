//! Every row of the error table, each produced for real, and upstream errors brought into
//! the schema (or passed through byte for byte when they already are).

use std::time::Duration;

use feldera_standin::Fault;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn respond(status: u16, content_type: Option<&str>, body: &[u8]) -> Fault {
    Fault::Respond {
        status,
        content_type: content_type.map(str::to_owned),
        body: body.to_vec(),
        headers: vec![],
    }
}

#[tokio::test]
async fn only_get_and_head_reach_the_console_outside_the_api() {
    let (gw, upstream) = pair().await;
    let reply = post(&format!("{}/admin/secrets", gw.url())).await;
    let details = reply.error(405, "MethodNotAllowed");
    assert_eq!(details["allowed"], serde_json::json!(["GET", "HEAD"]));
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    assert_eq!(reply.header("x-error-source"), Some("gateway"));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn upstream_empty_404_becomes_unknown_endpoint_from_upstream() {
    let (gw, _upstream) = pair().await;
    let reply = get(&format!("{}/v0/no-such-endpoint", gw.url())).await;
    let details = reply.error(404, "UnknownEndpoint");
    assert_eq!(details["path"], "/v0/no-such-endpoint");
    assert_eq!(reply.header("x-error-source"), Some("upstream"));
}

#[tokio::test]
async fn oversized_request_target_is_414_and_oversized_headers_431() {
    let (gw, upstream) = pair().await;
    let long = format!("{}/v0/pipelines?x={}", gw.url(), "a".repeat(9000));
    let details = get(&long).await.error(414, "UriTooLong");
    assert_eq!(details["limit"], 8192);
    // Each line is under `max_header_line_bytes` (16 KiB); together they pass the head limit.
    let big = "b".repeat(10_000);
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines", gw.url()),
        &[
            ("x-big-1", &big),
            ("x-big-2", &big),
            ("x-big-3", &big),
            ("x-big-4", &big),
        ],
        b"",
    )
    .await;
    let details = reply.error(431, "RequestHeaderFieldsTooLarge");
    assert_eq!(details["limit"], 32768);
    assert!(details["size"].as_u64().unwrap() > 40_000);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn declared_body_over_the_limit_is_413_before_any_upstream_trip() {
    let (gw, upstream) = pair().await;
    let body = vec![b'x'; 2 * 1024 * 1024 + 1];
    let reply = send("POST", &format!("{}/v0/pipelines", gw.url()), &[], &body).await;
    let details = reply.error(413, "PayloadTooLarge");
    assert_eq!(details["limit"], 2 * 1024 * 1024);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let upstream = standin("a").await;
    let gw = gateway(&config_for(&upstream.url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_body_bytes = 65536",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(b"POST /v0/pipelines HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    // 128 KiB in chunks: past the 64 KiB limit; the gateway may answer before all is sent.
    for _ in 0..8 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes).await;
    let reply = parse_raw(&bytes);
    let details = reply.error(413, "PayloadTooLarge");
    assert_eq!(details["limit"], 65536);
}

#[tokio::test]
async fn client_that_stalls_its_body_gets_408() {
    let upstream = standin("a").await;
    upstream.set_fault(
        "/v0/pipelines/orders/activate",
        Fault::Delay(Duration::from_secs(30)),
    );
    let gw = gateway(
        &config_for(&upstream.url(), "")
            .replace("request_timeout = \"5s\"", "request_timeout = \"300ms\""),
    )
    .await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(b"POST /v0/pipelines/orders/activate HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\nconnection: close\r\n\r\nonly-a-part")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes).await;
    let details = parse_raw(&bytes).error(408, "RequestTimeout");
    assert_eq!(details["timeout_s"], 0.3);
}

#[tokio::test]
async fn slow_upstream_is_504_upstream_timeout() {
    let upstream = standin("a").await;
    upstream.set_fault(
        "/v0/pipelines/orders",
        Fault::Delay(Duration::from_secs(30)),
    );
    let gw = gateway(
        &config_for(&upstream.url(), "")
            .replace("request_timeout = \"5s\"", "request_timeout = \"300ms\""),
    )
    .await;
    let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
    let details = reply.error(504, "UpstreamTimeout");
    assert_eq!(details, json!({"upstream": "primary", "timeout_s": 0.3}));
}

#[tokio::test]
async fn a_dead_upstream_is_502_every_time_even_once_ejected() {
    let port = closed_port().await;
    let gw = gateway(&config_for(&format!("http://127.0.0.1:{port}"), "")).await;
    // The refused endpoint is ejected, but with nothing else to try the upstream is in panic
    // mode and tries it anyway: a fast, typed 502 rather than a 503 about health.
    for _ in 0..2 {
        let reply = get(&format!("{}/v0/pipelines", gw.url())).await;
        let details = reply.error(502, "UpstreamUnavailable");
        assert_eq!(
            details,
            json!({"upstream": "primary", "reason": "connection refused"})
        );
    }
}

#[tokio::test]
async fn upstream_resetting_the_connection_is_502() {
    let (gw, upstream) = pair().await;
    upstream.set_fault("/v0/pipelines/orders", Fault::Reset);
    let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
    let details = reply.error(502, "UpstreamUnavailable");
    assert_eq!(details["reason"], "connection closed before the response");
}

#[tokio::test]
async fn upstream_answering_garbage_is_502_malformed_response() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"SMTP ready\r\n\r\n").await;
        }
    });
    let gw = gateway(&config_for(&format!("http://{addr}"), "")).await;
    let reply = get(&format!("{}/v0/pipelines", gw.url())).await;
    let details = reply.error(502, "UpstreamUnavailable");
    assert_eq!(details["reason"], "malformed response");
}

#[tokio::test]
async fn conforming_upstream_error_passes_byte_for_byte() {
    let (gw, upstream) = pair().await;
    let body = br#"{ "message" : "odd spacing kept",  "error_code":"Custom","details":[1,2] }"#;
    upstream.set_fault(
        "/v0/pipelines/orders",
        Fault::Respond {
            status: 409,
            content_type: Some("application/json".into()),
            body: body.to_vec(),
            headers: vec![("retry-after".into(), "7".into())],
        },
    );
    let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
    assert_eq!(reply.status, 409);
    assert_eq!(&reply.body[..], &body[..]);
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(reply.header("x-error-source"), None);
}

#[tokio::test]
async fn non_conforming_upstream_errors_are_rewritten_keeping_status() {
    let (gw, upstream) = pair().await;
    let url = format!("{}/v0/pipelines/orders", gw.url());

    upstream.set_fault(
        "/v0/pipelines/orders",
        respond(500, Some("text/html"), b"<html>boom</html>"),
    );
    let reply = get(&url).await;
    let details = reply.error(500, "UpstreamError");
    assert_eq!(
        details,
        json!({"upstream_status": 500, "body": "<html>boom</html>"})
    );
    assert_eq!(reply.header("x-error-source"), Some("upstream"));

    upstream.set_fault(
        "/v0/pipelines/orders",
        respond(
            400,
            Some("text/plain; charset=utf-8"),
            b"Query deserialize error: duplicate field `initial`",
        ),
    );
    let details = get(&url).await.error(400, "UpstreamError");
    assert_eq!(
        details["body"],
        "Query deserialize error: duplicate field `initial`"
    );

    upstream.set_fault(
        "/v0/pipelines/orders",
        respond(
            403,
            Some("application/json"),
            br#"{"message":"denied","error_code":"InsufficientPermissions"}"#,
        ),
    );
    let reply = get(&url).await;
    assert_eq!(reply.error(403, "InsufficientPermissions"), json!({}));
    assert_eq!(reply.json()["message"], "denied");

    upstream.set_fault("/v0/pipelines/orders", respond(502, None, b""));
    let details = get(&url).await.error(502, "UpstreamError");
    assert_eq!(details, json!({"upstream_status": 502, "body": ""}));

    upstream.set_fault(
        "/v0/pipelines/orders",
        respond(500, Some("text/plain"), &vec![b'z'; 5000]),
    );
    let details = get(&url).await.error(500, "UpstreamError");
    assert_eq!(details["body"].as_str().unwrap().len(), 1024);
}

#[tokio::test]
async fn upstream_empty_401_becomes_authentication_failed_with_its_reason() {
    let (gw, upstream) = pair().await;
    upstream.set_fault(
        "/v0/pipelines",
        Fault::Respond {
            status: 401,
            content_type: None,
            body: vec![],
            headers: vec![(
                "www-authenticate".into(),
                "Bearer error_description=\"ExpiredSignature\"".into(),
            )],
        },
    );
    let reply = get(&format!("{}/v0/pipelines", gw.url())).await;
    let details = reply.error(401, "AuthenticationFailed");
    assert_eq!(details["reason"], "ExpiredSignature");
    assert!(reply.header("www-authenticate").is_some());
}

#[tokio::test]
async fn cluster_healthz_503_body_is_left_alone() {
    let (gw, upstream) = pair().await;
    let body = br#"{"all_healthy":false,"api":{"healthy":false}}"#;
    upstream.set_fault(
        "/v0/cluster_healthz",
        respond(503, Some("application/json"), body),
    );
    let reply = get(&format!("{}/v0/cluster_healthz", gw.url())).await;
    assert_eq!(reply.status, 503);
    assert_eq!(&reply.body[..], &body[..]);
}

#[tokio::test]
async fn upstream_json_errors_keep_their_retry_after() {
    let (gw, _upstream) = pair().await;
    // The stand-in answers pause of a Stopped pipeline like the manager: 503 + Retry-After: 5.
    let created = send(
        "POST",
        &format!("{}/v0/pipelines", gw.url()),
        &[("content-type", "application/json")],
        br#"{"name":"fresh","program_code":""}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let reply = post(&format!("{}/v0/pipelines/fresh/pause", gw.url())).await;
    reply.error(503, "PipelineInteractionNotDeployed");
    assert_eq!(reply.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn requests_past_max_in_flight_get_503_service_unavailable() {
    let upstream = standin("a").await;
    upstream.set_fault(
        "/v0/pipelines/orders",
        Fault::Delay(Duration::from_secs(30)),
    );
    let gw = gateway(&config_for(&upstream.url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_in_flight = 1",
    ))
    .await;
    let url = format!("{}/v0/pipelines/orders", gw.url());
    let _held = tokio::spawn(async move { get(&url).await });
    let arrived = eventually(Duration::from_secs(5), async || {
        !upstream.requests().is_empty()
    })
    .await;
    assert!(arrived);
    let reply = get(&format!("{}/v0/pipelines", gw.url())).await;
    let details = reply.error(503, "ServiceUnavailable");
    assert_eq!(details["reason"], "too many requests in flight");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn upstream_that_never_accepts_is_502_after_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    // hangs until the gateway's connect_timeout (300 ms here) gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let attempt =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await;
        match attempt {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let gw = gateway(
        &config_for(&format!("http://{addr}"), "")
            .replace("connect_timeout = \"1s\"", "connect_timeout = \"300ms\""),
    )
    .await;
    let reply = get(&format!("{}/v0/pipelines", gw.url())).await;
    let details = reply.error(502, "UpstreamUnavailable");
    assert_eq!(details["reason"], "connect timed out");
    drop(listener);
}
