//! Cluster-wide limits through a real `redis-server` started by the test (missing: fail).
//!
//! - Two gateway *processes* (the built binary, twice, each with its own config file) share
//!   nothing but Redis; together they admit exactly the burst. Separate processes rule out any
//!   accidental sharing of memory between the two limiters.
//! - Killing Redis applies `on_error` (`deny` → 503, `local` → this instance's own budget,
//!   `allow` → through, policy header only) within the timeout, counts the fallbacks, and the
//!   limiter goes back to Redis once Redis returns.

mod support;

use std::time::{Duration, Instant};

use support::{config_text, get, start_gateway, start_upstream, GatewayProcess, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_redis_admit_exactly_the_quota() {
    let redis = RedisServer::start();
    let upstream = start_upstream().await;
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
    let a = GatewayProcess::start(&config_text("127.0.0.1:0", upstream, &extra));
    let b = GatewayProcess::start(&config_text("127.0.0.1:0", upstream, &extra));
    // 40 requests at each, all at once.
    let mut tasks = Vec::new();
    for i in 0..80 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        tasks.push(tokio::spawn(async move {
            get(addr, "/v0/pipelines", &[]).await
        }));
    }
    let (mut admitted, mut rejected) = (0, 0);
    for task in tasks {
        let response = task.await.unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => rejected += 1,
            other => panic!("unexpected {other}: {:?}", response.body()),
        }
    }
    assert_eq!(admitted, 25, "exactly the burst across both instances");
    assert_eq!(rejected, 55);
    // Both instances report the shared remaining budget.
    let last = get(a.addr, "/v0/pipelines", &[]).await;
    assert_eq!(last.headers()["ratelimit"], "\"client_ip\";r=0;t=90000");
}

async fn until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_applies_on_error_and_the_limiter_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let upstream = start_upstream().await;
    let gateway_with = |on_error: &str| {
        format!(
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
        )
    };
    let deny = start_gateway(upstream, &gateway_with("deny")).await;
    let local = start_gateway(upstream, &gateway_with("local")).await;
    let allow = start_gateway(upstream, &gateway_with("allow")).await;

    // Redis decides: one request spends one unit of the shared budget.
    let response = get(deny.local_addr(), "/v0/pipelines", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ratelimit"], "\"client_ip\";r=2;t=3600");

    redis.kill();
    until("deny to answer 503", || async {
        get(deny.local_addr(), "/v0/pipelines", &[]).await.status() == 503
    })
    .await;
    let response = get(deny.local_addr(), "/v0/pipelines", &[]).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["error_code"], "ServiceUnavailable");

    // local: this instance's own budget of 3, then 429.
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..5 {
            out.push(
                get(local.local_addr(), "/v0/pipelines", &[])
                    .await
                    .status()
                    .as_u16(),
            );
        }
        out
    };
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    // allow: through, with the policy but no (unknown) remaining count.
    for _ in 0..5 {
        let response = get(allow.local_addr(), "/v0/pipelines", &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"client_ip\";q=3;w=10800"
        );
        assert!(response.headers().get("ratelimit").is_none());
    }

    // Every fallback is counted.
    let metrics = get(deny.admin_addr().unwrap(), "/metrics", &[]).await;
    let text = String::from_utf8_lossy(metrics.body()).into_owned();
    assert!(
        metric(
            &text,
            "pipeline_gateway_ratelimit_redis_fallbacks_total{on_error=\"deny\"}"
        ) >= 2,
        "{text}"
    );

    // Redis returns (empty: no persistence); the limiter goes back to it by itself.
    let _redis = RedisServer::start_on(port).expect("restart redis-server on the same port");
    until("deny to recover", || async {
        get(deny.local_addr(), "/v0/pipelines", &[]).await.status() == 200
    })
    .await;
    let response = get(deny.local_addr(), "/v0/pipelines", &[]).await;
    assert_eq!(response.status(), 200);
    let remaining = response.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(
        remaining.starts_with("\"client_ip\";r=1;"),
        "{remaining}: decided by Redis again"
    );

    for gateway in [deny, local, allow] {
        gateway.shutdown().await;
    }
}
