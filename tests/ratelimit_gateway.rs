//! Rate limiting through the whole gateway, over real sockets: headers on allowed and
//! rejected responses, no headers without limits, and the client IP behind a trusted proxy.
//! (Feldera's Python SDK backing off on our 429 is in `python_sdk.rs`.)

pub mod support;

use support::*;

/// A gateway with `extra` configuration in front of a test upstream.
async fn limited_gateway(extra: &str) -> pipeline_gateway::Gateway {
    let upstream = echo_upstream().await;
    gateway(&config_for(&format!("http://{upstream}"), extra)).await
}

#[tokio::test]
async fn limited_gateway_explains_itself_on_allowed_and_rejected_responses() {
    let gateway = limited_gateway(
        r#"
[rate_limit]
# The former name of client_ip, still read.
anonymous = { rate = "1/h", burst = 2 }
"#,
    )
    .await;
    let url = format!("{}/v0/pipelines", gateway.url());
    let first = get(&url).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.json()["path"],
        "/v0/pipelines",
        "reached the upstream"
    );
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"client_ip\";q=2;w=7200")
    );
    assert_eq!(first.header("ratelimit"), Some("\"client_ip\";r=1;t=3600"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(get(&url).await.status, 200);
    let rejected = get(&url).await;
    let details = rejected.error(429, "RateLimitExceeded");
    let retry_after: u64 = rejected
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("retry-after in seconds");
    assert!((3599..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(rejected.header("x-error-source"), Some("gateway"));
    assert_eq!(details["policy"], "client_ip");
    assert_eq!(details["limit"], 2);
    assert_eq!(details["retry_after_s"], retry_after);
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_rate_limit_no_header_is_added() {
    let gateway = limited_gateway("").await;
    let url = format!("{}/v0/pipelines", gateway.url());
    for _ in 0..50 {
        let response = get(&url).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("ratelimit"), None);
        assert_eq!(response.header("ratelimit-policy"), None);
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let gateway = limited_gateway(
        r#"
[rate_limit]
anonymous = { rate = "1/h", burst = 1 }
trusted_proxies = ["127.0.0.0/8"]
"#,
    )
    .await;
    let url = format!("{}/v0/pipelines", gateway.url());
    let via = |client: &'static str| {
        let url = url.clone();
        async move {
            send("GET", &url, &[("x-forwarded-for", client)], b"")
                .await
                .status
        }
    };
    assert_eq!(via("203.0.113.1").await, 200);
    assert_eq!(via("203.0.113.1").await, 429);
    assert_eq!(via("203.0.113.2").await, 200);
    // Two addresses of one IPv6 /64 are one client.
    assert_eq!(via("2001:db8:1:2::1").await, 200);
    assert_eq!(via("2001:db8:1:2::ffff").await, 429);
    // A spoofed left-most entry does not help: the right-most untrusted entry counts.
    assert_eq!(via("198.51.100.7, 203.0.113.1").await, 429);
    gateway.shutdown().await;
}
