//! Bodies stream through the gateway in both directions, proved by cause and effect: the
//! client reads the start of a response that the upstream never finishes, and the upstream
//! receives each piece of an upload before the client sends the next. A gateway that held
//! either body back until its end would leave the test waiting for something that cannot
//! happen; every wait has a deadline and says what did not arrive.
//!
//! What streaming 100 MB costs in memory is a measurement of the gateway process, not a test
//! (the test process also runs the stand-in and the other tests): it belongs with `bench/`.

use std::convert::Infallible;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::support::*;

/// How long one piece of a stream may take to get through the gateway.
const STEP_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn endless_egress_reaches_the_client_while_the_upstream_is_still_sending() {
    const CHUNKS: u64 = 64;
    let (gw, _upstream) = pair().await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(format!("{}/v0/pipelines/live/egress/v", gw.url()))
        .body(Empty::new())
        .unwrap();
    // The stand-in's egress never ends: a gateway that waited for the end of the response
    // would never send its head or its first byte.
    let response = timeout(STEP_DEADLINE, client.request(request))
        .await
        .unwrap_or_else(|_| {
            panic!("no response head within {STEP_DEADLINE:?}: the gateway waits for the body")
        })
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let mut body = response.into_body();
    let mut pending = Vec::new();
    let mut chunks = 0u64;
    while chunks < CHUNKS {
        let frame = timeout(STEP_DEADLINE, body.frame())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "chunk {chunks} of an endless stream did not arrive within \
                     {STEP_DEADLINE:?}: the gateway holds the response back"
                )
            })
            .expect("an endless stream goes on")
            .expect("frame");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let chunk: Value = serde_json::from_slice(&line).expect("each chunk is a JSON line");
            assert_eq!(
                chunk["sequence_number"], chunks,
                "chunks arrive whole and in order"
            );
            chunks += 1;
        }
    }
    // The upstream is still sending: its stream has no end.
}

#[tokio::test]
async fn each_upload_chunk_reaches_the_upstream_before_the_client_sends_the_next() {
    const CHUNK: u64 = 64 * 1024;
    const CHUNKS: u64 = 8;
    let (gw, upstream) = pair().await;
    // The upload's body is what the test sends down this channel, when it decides to.
    let (chunks, receiver) = mpsc::channel::<Bytes>(1);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(chunk)), receiver))
        },
    )));
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(format!("{}/v0/pipelines/live/ingress/t", gw.url()))
        .body(body)
        .unwrap();
    let response = tokio::spawn(client.request(request));
    for i in 0..CHUNKS {
        chunks
            .send(Bytes::from(vec![b'{'; CHUNK as usize]))
            .await
            .expect("the request is still reading its body");
        // The next chunk waits until this one is at the upstream: a gateway that waited for
        // the end of the upload would never deliver it.
        let sent = (i + 1) * CHUNK;
        assert!(
            eventually(STEP_DEADLINE, async || upstream.ingested_bytes() >= sent).await,
            "chunk {i} did not reach the upstream within {STEP_DEADLINE:?} (it has {} of the \
             {sent} bytes sent): the gateway holds the upload back",
            upstream.ingested_bytes()
        );
    }
    drop(chunks); // the end of the upload
    let response = timeout(STEP_DEADLINE, response)
        .await
        .unwrap_or_else(|_| panic!("no answer within {STEP_DEADLINE:?} of the upload's end"))
        .expect("request task")
        .expect("response");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The stand-in's completion token says how many bytes this request delivered.
    let answer: Value = serde_json::from_slice(&body).expect("JSON answer");
    let token = base64::engine::general_purpose::STANDARD
        .decode(answer["token"].as_str().expect("token"))
        .expect("base64 token");
    let token = String::from_utf8(token).expect("UTF-8 token");
    let total = CHUNKS * CHUNK;
    assert!(
        token.starts_with(&format!("live:{total}:")),
        "the upstream received {total} bytes in this request: {token}"
    );
}
