//! Bodies stream through without buffering: an endless egress and a 100 MB ingress pass with
//! flat memory. Memory is this test process's RSS (gateway and stand-in run in it).

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

const MB: u64 = 1024 * 1024;
/// RSS may grow by at most this while 100 MB stream through; buffering would grow by ~100 MB.
const MAX_GROWTH: u64 = 40 * MB;

#[tokio::test]
async fn endless_egress_streams_100_mb_with_flat_memory() {
    let upstream = standin_with(feldera_standin::StandinOptions {
        egress_chunk_bytes: 64 * 1024,
        ..seeded()
    })
    .await;
    let gw = gateway(&config_for(&upstream.url(), "")).await;
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(format!("{}/v0/pipelines/live/egress/v", gw.url()))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut baseline = 0;
    let mut peak = 0;
    let mut frames = 0u64;
    while received < 100 * MB {
        let frame = body.frame().await.expect("stream goes on").expect("frame");
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
        }
        frames += 1;
        if baseline == 0 && received > 5 * MB {
            baseline = rss_bytes();
        }
        // Reading /proc for every frame would dominate the test: every 64th frame.
        if baseline != 0 && frames % 64 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    assert!(baseline > 0 && peak > 0, "RSS was measured");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "egress: {} MB streamed, RSS baseline {} MB, peak {} MB, growth {} MB",
        received / MB,
        baseline / MB,
        peak / MB,
        growth / MB
    );
    assert!(growth < MAX_GROWTH, "RSS grew by {} MB", growth / MB);
}

#[tokio::test]
async fn ingress_of_100_mb_streams_through_with_flat_memory() {
    let (gw, upstream) = pair().await;
    let chunk = Bytes::from(vec![b'{'; 256 * 1024]);
    let chunks = 400; // 100 MB
    let baseline = rss_bytes();
    let stream = futures_util::stream::iter(0..chunks).map(move |i| {
        if i % 16 == 0 {
            PEAK.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
        }
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(chunk.clone()))
    });
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(format!("{}/v0/pipelines/live/ingress/t", gw.url()))
        .body(StreamBody::new(stream))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(upstream.ingested_bytes(), 100 * MB);
    let peak = PEAK.load(std::sync::atomic::Ordering::Relaxed);
    assert!(baseline > 0 && peak > 0, "RSS was measured");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "ingress: 100 MB uploaded, RSS baseline {} MB, peak {} MB, growth {} MB",
        baseline / MB,
        peak / MB,
        growth / MB
    );
    assert!(growth < MAX_GROWTH, "RSS grew by {} MB", growth / MB);
}

static PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
