//! Rate limiting through the whole gateway, over real sockets: headers on allowed and
//! rejected responses, client IP behind a trusted proxy, and Feldera's Python SDK backing off
//! on our 429 and then succeeding.

mod support;

use serde_json::Value;
use support::{get, start_gateway, start_upstream};

#[tokio::test]
async fn limited_gateway_explains_itself_on_allowed_and_rejected_responses() {
    let upstream = start_upstream().await;
    let gateway = start_gateway(
        upstream,
        r#"
[rate_limit]
# The former name of client_ip, still read.
anonymous = { rate = "1/h", burst = 2 }
"#,
    )
    .await;
    let addr = gateway.local_addr();
    let first = get(addr, "/v0/pipelines", &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.body().as_ref(), b"[]");
    assert_eq!(
        first.headers()["ratelimit-policy"],
        "\"client_ip\";q=2;w=7200"
    );
    assert_eq!(first.headers()["ratelimit"], "\"client_ip\";r=1;t=3600");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(get(addr, "/v0/pipelines", &[]).await.status(), 200);
    let rejected = get(addr, "/v0/pipelines", &[]).await;
    assert_eq!(rejected.status(), 429);
    let retry_after: u64 = rejected.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3599..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(rejected.headers()["x-error-source"], "gateway");
    let body: Value = serde_json::from_slice(rejected.body()).unwrap();
    assert_eq!(body["error_code"], "RateLimitExceeded");
    assert_eq!(body["details"]["policy"], "client_ip");
    assert_eq!(body["details"]["limit"], 2);
    assert_eq!(body["details"]["retry_after_s"], retry_after);
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_rate_limit_no_header_is_added() {
    let upstream = start_upstream().await;
    let gateway = start_gateway(upstream, "").await;
    for _ in 0..50 {
        let response = get(gateway.local_addr(), "/v0/pipelines", &[]).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("ratelimit").is_none());
        assert!(response.headers().get("ratelimit-policy").is_none());
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let upstream = start_upstream().await;
    let gateway = start_gateway(
        upstream,
        r#"
[rate_limit]
anonymous = { rate = "1/h", burst = 1 }
trusted_proxies = ["127.0.0.0/8"]
"#,
    )
    .await;
    let addr = gateway.local_addr();
    let via = |client: &'static str| async move {
        get(addr, "/v0/pipelines", &[("x-forwarded-for", client)]).await
    };
    assert_eq!(via("203.0.113.1").await.status(), 200);
    assert_eq!(via("203.0.113.1").await.status(), 429);
    assert_eq!(via("203.0.113.2").await.status(), 200);
    // Two addresses of one IPv6 /64 are one client.
    assert_eq!(via("2001:db8:1:2::1").await.status(), 200);
    assert_eq!(via("2001:db8:1:2::ffff").await.status(), 429);
    // A spoofed left-most entry does not help: the right-most untrusted entry counts.
    assert_eq!(via("198.51.100.7, 203.0.113.1").await.status(), 429);
    gateway.shutdown().await;
}
