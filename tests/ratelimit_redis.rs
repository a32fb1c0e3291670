//! Cluster-wide limits through a real `redis-server` started by the test (missing: fail).
//!
//! - Two gateway *processes* (the built binary, twice, each with its own config file) share
//!   nothing but Redis; together they admit exactly the burst. Separate processes rule out any
//!   accidental sharing of memory between the two limiters.
//! - Killing Redis applies `on_error` (`deny` → 503, `local` → this instance's own budget,
//!   `allow` → through, policy header only) within the timeout, counts the fallbacks, and the
//!   limiter goes back to Redis once Redis returns.

pub mod support;

use std::time::Duration;

use support::*;

/// How long Redis going away or coming back may take to show in the gateway's answers.
const REDIS_CHANGE_DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_redis_admit_exactly_the_quota() {
    let redis = RedisServer::start();
    let upstream = format!("http://{}", echo_upstream().await);
    let extra = format!(
        r#"
[rate_limit]
client_ip = {{ rate = "1/h", burst = 25 }}
[rate_limit.redis]
url = "{}"
timeout = "500ms"
on_error = "deny"
"#,
        redis.url()
    );
    let a = GatewayProcess::start(&config_for(&upstream, &extra));
    let b = GatewayProcess::start(&config_for(&upstream, &extra));
    // 40 requests at each, all at once.
    let mut tasks = Vec::new();
    for i in 0..80 {
        let url = format!("{}/v0/pipelines", if i % 2 == 0 { &a } else { &b }.url());
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    let (mut admitted, mut rejected) = (0, 0);
    for task in tasks {
        let response = task.await.unwrap();
        match response.status.as_u16() {
            200 => admitted += 1,
            429 => rejected += 1,
            other => panic!("unexpected {other}: {}", response.text()),
        }
    }
    assert_eq!(admitted, 25, "exactly the burst across both instances");
    assert_eq!(rejected, 55);
    // Both instances report the shared remaining budget.
    let last = get(&format!("{}/v0/pipelines", a.url())).await;
    assert_eq!(last.header("ratelimit"), Some("\"client_ip\";r=0;t=90000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_applies_on_error_and_the_limiter_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let upstream = format!("http://{}", echo_upstream().await);
    let gateway_with = |on_error: &str| {
        let extra = format!(
            r#"
[admin]
listen = "127.0.0.1:0"
[rate_limit]
client_ip = {{ rate = "1/h", burst = 3 }}
[rate_limit.redis]
url = "{}"
on_error = "{on_error}"
key_prefix = "{on_error}:"
"#,
            redis.url()
        );
        config_for(&upstream, &extra)
    };
    let deny = gateway(&gateway_with("deny")).await;
    let local = gateway(&gateway_with("local")).await;
    let allow = gateway(&gateway_with("allow")).await;
    let pipelines = |gateway: &pipeline_gateway::Gateway| format!("{}/v0/pipelines", gateway.url());

    // Redis decides: one request spends one unit of the shared budget.
    let response = get(&pipelines(&deny)).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("ratelimit"),
        Some("\"client_ip\";r=2;t=3600")
    );

    redis.kill();
    assert!(
        eventually(REDIS_CHANGE_DEADLINE, async || get(&pipelines(&deny))
            .await
            .status
            == 503)
        .await,
        "deny did not answer 503 within {REDIS_CHANGE_DEADLINE:?} of Redis going away"
    );
    let response = get(&pipelines(&deny)).await;
    response.error(503, "ServiceUnavailable");
    assert_eq!(response.header("retry-after"), Some("1"));

    // local: this instance's own budget of 3, then 429.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&pipelines(&local)).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    // allow: through, with the policy but no (unknown) remaining count.
    for _ in 0..5 {
        let response = get(&pipelines(&allow)).await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("ratelimit-policy"),
            Some("\"client_ip\";q=3;w=10800")
        );
        assert_eq!(response.header("ratelimit"), None);
    }

    // Every fallback is counted.
    let admin = deny.admin_addr().expect("admin listener");
    let text = get(&format!("http://{admin}/metrics")).await.text();
    assert!(
        metric(
            &text,
            "pipeline_gateway_ratelimit_redis_fallbacks_total{on_error=\"deny\"}"
        ) >= 2,
        "{text}"
    );

    // Redis returns (empty: no persistence); the limiter goes back to it by itself.
    let _redis = RedisServer::start_on(port).expect("restart redis-server on the same port");
    assert!(
        eventually(REDIS_CHANGE_DEADLINE, async || get(&pipelines(&deny))
            .await
            .status
            == 200)
        .await,
        "deny did not recover within {REDIS_CHANGE_DEADLINE:?} of Redis coming back"
    );
    let response = get(&pipelines(&deny)).await;
    assert_eq!(response.status, 200);
    let remaining = response.header("ratelimit").expect("ratelimit").to_owned();
    assert!(
        remaining.starts_with("\"client_ip\";r=1;"),
        "{remaining}: decided by Redis again"
    );

    for gateway in [deny, local, allow] {
        gateway.shutdown().await;
    }
}
