//! Slow, idle and abusive clients at the connection level (issue 13 §4): idle connections are
//! closed, a request or stream in progress never is, connections beyond `max_connections` are
//! refused in the schema, a client that takes nothing of its response is cut off (HTTP/1.1
//! with a full socket, HTTP/2 with a shut flow-control window), and HTTP/2's limits and
//! rapid-reset defence are in force. Timeouts are configured short; every wait polls with a
//! deadline and nothing asserts how long something took.

use std::time::{Duration, Instant};

use bytes::Bytes;
use feldera_standin::Fault;
use http_body_util::{BodyExt, Empty};
use pipeline_gateway::limits::CloseReason;
use pipeline_gateway::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::support::*;

/// Longest any wait below may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

/// The one-upstream test configuration with these `[server]` keys.
fn config_with(url: &str, server: &str) -> String {
    config_for(url, "").replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
}

fn closed(gw: &Gateway, reason: CloseReason) -> u64 {
    gw.process().connections.closed_count(reason)
}

/// Reads until the peer closes (end of file or reset); panics if it stays open past the
/// deadline. Returns the bytes read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("the gateway kept the connection open past {DEADLINE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

async fn h1_handshake(
    gw: &Gateway,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(gw.local_addr()).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    (sender, tokio::spawn(connection))
}

/// A request in origin form (`GET /path HTTP/1.1`, as browsers send it).
fn get_request(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .header("host", "gw")
        .body(Empty::new())
        .expect("request")
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_idle_timeout() {
    let upstream = standin("a").await;
    let gw = gateway(&config_with(&upstream.url(), "idle_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.expect("connect");
    let bytes = read_until_closed(&mut stream).await;
    assert!(bytes.is_empty(), "nothing is answered to nothing");
    assert_eq!(closed(&gw, CloseReason::Idle), 1);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_after_idle_timeout_between_requests() {
    let upstream = standin("a").await;
    // hyper's header_read_timeout would also close it; make sure the gateway's does.
    let gw = gateway(&config_with(
        &upstream.url(),
        "idle_timeout = \"300ms\"\nheader_read_timeout = \"60s\"",
    ))
    .await;
    let (mut sender, connection) = h1_handshake(&gw).await;
    for _ in 0..2 {
        let response = sender
            .send_request(get_request("/v0/pipelines"))
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("body");
    }
    let ended = timeout(DEADLINE, connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "closed cleanly: {ended:?}");
    assert_eq!(closed(&gw, CloseReason::Idle), 1);
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn an_h2c_connection_with_no_stream_open_is_closed_after_idle_timeout() {
    let upstream = standin("a").await;
    let gw = gateway(&config_with(&upstream.url(), "idle_timeout = \"300ms\"")).await;
    let stream = TcpStream::connect(gw.local_addr()).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("{}/v0/pipelines", gw.url()))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    drop(client);
    timeout(DEADLINE, connection)
        .await
        .expect("the gateway closes an idle HTTP/2 connection")
        .expect("connection task")
        .ok();
    assert_eq!(closed(&gw, CloseReason::Idle), 1);
}

#[tokio::test]
async fn a_slow_answer_and_a_long_stream_are_not_cut_by_idle_timeout() {
    let upstream = standin("a").await;
    // The manager takes five idle timeouts to answer.
    upstream.set_fault(
        "/v0/pipelines/orders",
        Fault::Delay(Duration::from_millis(1000)),
    );
    let gw = gateway(&config_with(
        &upstream.url(),
        "idle_timeout = \"200ms\"\nwrite_idle_timeout = \"200ms\"",
    ))
    .await;
    let (mut sender, connection) = h1_handshake(&gw).await;
    let response = sender
        .send_request(get_request("/v0/pipelines/orders"))
        .await
        .expect("a slow answer arrives on its keep-alive connection");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("body");

    // An endless egress stream read steadily for five idle (and write-idle) timeouts.
    let request = http::Request::post("/v0/pipelines/live/egress/v")
        .header("host", "gw")
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("stream head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let started = Instant::now();
    let mut received = 0usize;
    while started.elapsed() < Duration::from_millis(1000) {
        let frame = timeout(DEADLINE, body.frame())
            .await
            .expect("the stream keeps flowing")
            .expect("the stream was not cut")
            .expect("frame");
        received += frame.data_ref().map_or(0, |d| d.len());
    }
    assert!(received > 0);
    assert!(!connection.is_finished(), "the connection is still open");
    assert_eq!(closed(&gw, CloseReason::Idle), 0);
    assert_eq!(closed(&gw, CloseReason::WriteStalled), 0);
    assert_eq!(closed(&gw, CloseReason::StreamStalled), 0);
}

#[tokio::test]
async fn connections_over_max_connections_are_refused_with_503_in_the_schema() {
    let upstream = standin("a").await;
    let gw = gateway(&config_with(&upstream.url(), "max_connections = 2")).await;
    let addr = gw.local_addr();
    let first = TcpStream::connect(addr).await.expect("connect");
    let second = TcpStream::connect(addr).await.expect("connect");
    // Both are accepted (the open gauge says so) before the third arrives.
    let counted = eventually(DEADLINE, async || gw.process().connections.open() == 2).await;
    assert!(counted, "two connections open");

    let reply = raw(
        addr,
        b"GET /v0/pipelines HTTP/1.1\r\nhost: gw\r\nconnection: keep-alive\r\n\r\n",
    )
    .await;
    let details = reply.error(503, "TooManyConnections");
    assert_eq!(details["limit"], 2);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(gw.process().connections.refused_count(), 1);

    // A slot given back is a slot taken again.
    drop(first);
    let freed = eventually(DEADLINE, async || gw.process().connections.open() == 1).await;
    assert!(freed, "a closed connection gives its slot back");
    let reply = raw(
        addr,
        b"GET /v0/pipelines HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    drop(second);
    assert!(upstream.requests().len() == 1, "only the admitted request");
}

#[tokio::test]
async fn an_h1_client_that_reads_nothing_is_closed_after_write_idle_timeout() {
    let upstream = standin("a").await;
    let gw = gateway(&config_with(
        &upstream.url(),
        "write_idle_timeout = \"300ms\"",
    ))
    .await;
    // A small receive buffer, so the socket fills soon.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket.connect(gw.local_addr()).await.expect("connect");
    stream
        .write_all(
            b"POST /v0/pipelines/live/egress/v HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .expect("write");
    // Read nothing until the gateway has given up on this client.
    let cut = eventually(DEADLINE, async || {
        closed(&gw, CloseReason::WriteStalled) + closed(&gw, CloseReason::StreamStalled) == 1
    })
    .await;
    assert!(cut, "the stalled response is cut and counted");
    let bytes = read_until_closed(&mut stream).await;
    assert!(bytes.starts_with(b"HTTP/1.1 200"), "the stream had begun");
    assert_eq!(closed(&gw, CloseReason::Idle), 0);
    let text = gw.process().metrics.encode();
    assert_eq!(
        metric(&text, "pipeline_gateway_client_connections_closed_total{"),
        1
    );
}

#[tokio::test]
async fn an_h2_stream_behind_a_shut_window_is_closed_after_write_idle_timeout() {
    let upstream = standin("a").await;
    let gw = gateway(&config_with(
        &upstream.url(),
        "write_idle_timeout = \"300ms\"",
    ))
    .await;
    let stream = TcpStream::connect(gw.local_addr()).await.expect("connect");
    // Every stream starts with a window of zero, and the client never opens it.
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(stream)
        .await
        .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::post(format!("{}/v0/pipelines/live/egress/v", gw.url()))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = timeout(DEADLINE, response)
        .await
        .expect("the head is not flow-controlled")
        .expect("response");
    assert_eq!(response.status(), 200);
    let _body = response.into_body();
    let ended = timeout(DEADLINE, connection).await;
    assert!(ended.is_ok(), "the gateway closed the stalled connection");
    assert_eq!(closed(&gw, CloseReason::StreamStalled), 1);
    assert_eq!(closed(&gw, CloseReason::Idle), 0);
}

// ---- HTTP/2 settings and the rapid-reset defence, in raw frames ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads frames until `want` returns something; panics at end of stream or the deadline.
async fn read_frames<T>(
    stream: &mut TcpStream,
    mut want: impl FnMut(u8, u32, &[u8]) -> Option<T>,
) -> T {
    let mut buf = Vec::new();
    let end = Instant::now() + DEADLINE;
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            if let Some(found) = want(kind, id, &buf[9..9 + len]) {
                return found;
            }
            buf.drain(..9 + len);
        }
        let mut chunk = [0u8; 16 * 1024];
        let left = end.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("the connection ended or stalled before the frame: {other:?}"),
        }
    }
}

const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

#[tokio::test]
async fn h2_limits_are_announced_explicitly() {
    let (gw, _upstream) = pair().await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.expect("write");
    let settings = read_frames(&mut stream, |kind, _, payload| {
        (kind == SETTINGS && !payload.is_empty()).then(|| {
            payload
                .chunks_exact(6)
                .map(|s| {
                    (
                        u16::from_be_bytes([s[0], s[1]]),
                        u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                    )
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    let value = |id: u16| settings.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
    assert_eq!(value(0x3), Some(100), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(value(0x5), Some(16_384), "SETTINGS_MAX_FRAME_SIZE");
    // Above the gateway's own header limits (4 × (32 KiB + 8 KiB)).
    assert_eq!(value(0x6), Some(163_840), "SETTINGS_MAX_HEADER_LIST_SIZE");
}

#[tokio::test]
async fn rapid_reset_over_h2c_is_answered_with_goaway_enhance_your_calm() {
    let (gw, upstream) = pair().await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.expect("connect");
    // HPACK, static table only: :method GET, :scheme http, :path /v0/pipelines is not in the
    // table, so `:path /` (index 4); :authority "gw" as a literal with an indexed name.
    let block = [0x82, 0x86, 0x84, 0x01, 0x02, b'g', b'w'];
    let mut burst = PREFACE.to_vec();
    burst.extend(frame(SETTINGS, 0, 0, &[]));
    // HEADERS (END_STREAM | END_HEADERS) then RST_STREAM(CANCEL), 200 times, in one write:
    // every stream is reset before the gateway could take it.
    for i in 0..200u32 {
        let id = 2 * i + 1;
        burst.extend(frame(0x1, 0x5, id, &block));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    stream.write_all(&burst).await.expect("write");
    let code = read_frames(&mut stream, |kind, _, payload| {
        (kind == GOAWAY && payload.len() >= 8)
            .then(|| u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]))
    })
    .await;
    assert_eq!(code, 0xb, "GOAWAY ENHANCE_YOUR_CALM");
    read_until_closed(&mut stream).await;
    // Nothing of the burst reached the manager beyond the streams taken before the limit.
    assert!(upstream.requests().len() <= 21);
}
