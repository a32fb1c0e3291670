//! Rate limiting through the whole gateway, over real sockets: headers on allowed and
//! rejected responses, no headers without limits, the client IP behind a trusted proxy, and
//! clients past `max_keys` sharing one overflow budget (counted by the early sweep a full
//! limiter asks for). (Feldera's Python SDK backing off on our 429 is in `python_sdk.rs`.)

pub mod support;

use std::time::Duration;

use support::*;

/// How long the early sweep may take to show in the admin `/metrics`.
const SWEEP_DEADLINE: Duration = Duration::from_secs(10);

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

#[tokio::test]
async fn past_max_keys_new_clients_share_one_overflow_budget_counted_by_an_early_sweep() {
    const OVERFLOWED: &str = "pipeline_gateway_ratelimit_overflowed_total{policy=\"client_ip\"}";
    const KEYS: &str = "pipeline_gateway_ratelimit_keys{policy=\"client_ip\"}";
    let gateway = limited_gateway(
        r#"
[admin]
listen = "127.0.0.1:0"
[rate_limit]
client_ip = { rate = "1/h", burst = 3 }
trusted_proxies = ["127.0.0.0/8"]
max_keys = 2
# Longer than the test: only the early sweep of a full limiter can run meanwhile.
sweep_interval = "1h"
"#,
    )
    .await;
    let url = format!("{}/v0/pipelines", gateway.url());
    let via = |client: &'static str| {
        let url = url.clone();
        async move { send("GET", &url, &[("x-forwarded-for", client)], b"").await }
    };
    let remaining = |reply: &Reply| reply.header("ratelimit").map(str::to_owned);
    let own_budget = |left: u32| Some(format!("\"client_ip\";r={left};t={}", 3600 * (3 - left)));

    // Two clients fill the limiter; each has its own budget of 3.
    for held in ["203.0.113.1", "203.0.113.2"] {
        let reply = via(held).await;
        assert_eq!(reply.status, 200, "{held}");
        assert_eq!(remaining(&reply), own_budget(2), "{held}");
    }
    // Four more distinct clients are not held: they spend one shared budget of 3, and the
    // fourth is refused although it never sent a request before.
    for (newcomer, left) in [
        ("198.51.100.1", 2),
        ("198.51.100.2", 1),
        ("198.51.100.3", 0),
    ] {
        let reply = via(newcomer).await;
        assert_eq!(reply.status, 200, "{newcomer}");
        assert_eq!(
            remaining(&reply),
            own_budget(left),
            "{newcomer} spends the shared budget"
        );
    }
    let refused = via("198.51.100.4").await;
    let details = refused.error(429, "RateLimitExceeded");
    assert_eq!(details["policy"], "client_ip");
    assert_eq!(details["limit"], 3);
    // A held client keeps its own budget though the shared one is spent.
    let held = via("203.0.113.1").await;
    assert_eq!(held.status, 200);
    assert_eq!(remaining(&held), own_budget(1));

    // The full limiter asked for an early sweep, which counts the 4 overflowed decisions and
    // keeps the 2 held clients (their budgets are not full again).
    let admin = gateway.admin_addr().expect("admin listener");
    let metrics_url = format!("http://{admin}/metrics");
    let swept = eventually(SWEEP_DEADLINE, async || {
        metric(&get(&metrics_url).await.text(), OVERFLOWED) >= 4
    })
    .await;
    let metrics = get(&metrics_url).await.text();
    assert!(
        swept,
        "no early sweep counted the overflow within {SWEEP_DEADLINE:?}:\n{metrics}"
    );
    assert_eq!(metric(&metrics, OVERFLOWED), 4, "{metrics}");
    assert_eq!(metric(&metrics, KEYS), 2, "{metrics}");
    gateway.shutdown().await;
}
