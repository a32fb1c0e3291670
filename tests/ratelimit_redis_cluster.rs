//! Shared limits on a real local Redis Cluster (3 masters, `redis-cli --cluster create`),
//! started by the test (`redis-server` or `redis-cli` missing: fail).
//!
//! - Two gateway *processes* with `[rate_limit.redis] cluster = [seeds]` share nothing but the
//!   cluster; together they admit exactly each client's burst, and the budgets are spread over
//!   the masters by their keys' hash slots (one key per script call, so no call spans nodes).
//! - The master holding a budget dies: `on_error` applies (`deny` → 503); it restarts as
//!   itself (same ports and node file, empty) and the gateway decides in it again by itself.

pub mod support;

use std::time::Duration;

use support::*;

/// How long the gateway may take to notice that a node is gone.
const OUTAGE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a restarted node may take to rejoin, and the gateway to use it again.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_a_redis_cluster_admit_exactly_the_quota() {
    let cluster = RedisCluster::start(3);
    let upstream = format!("http://{}", echo_upstream().await);
    let extra = format!(
        r#"
[rate_limit]
client_ip = {{ rate = "1/h", burst = 5 }}
trusted_proxies = ["127.0.0.1"]
[rate_limit.redis]
cluster = {}
timeout = "500ms"
on_error = "deny"
"#,
        cluster.seeds_toml()
    );
    let a = GatewayProcess::start(&config_for(&upstream, &extra));
    let b = GatewayProcess::start(&config_for(&upstream, &extra));
    // 8 clients (by X-Forwarded-For, one budget each) × 12 requests, half at each gateway,
    // all at once.
    let mut tasks = Vec::new();
    for client in 1..=8 {
        for i in 0..12 {
            let url = format!("{}/v0/pipelines", if i % 2 == 0 { &a } else { &b }.url());
            let ip = format!("10.0.0.{client}");
            tasks.push(tokio::spawn(async move {
                let reply = send("GET", &url, &[("x-forwarded-for", &ip)], b"").await;
                (client, reply)
            }));
        }
    }
    let mut admitted = [0; 9];
    let mut rejected = [0; 9];
    for task in tasks {
        let (client, reply) = task.await.unwrap();
        match reply.status.as_u16() {
            200 => admitted[client] += 1,
            429 => rejected[client] += 1,
            other => panic!("client {client}: unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(
        admitted[1..],
        [5; 8],
        "exactly the burst of each client across both instances"
    );
    assert_eq!(rejected[1..], [7; 8]);
    // One key per client, and the keys live on every master (the hash slots decided).
    let keys = cluster.keys_per_node();
    assert_eq!(keys.iter().sum::<u64>(), 8, "{keys:?}");
    assert!(
        keys.iter().all(|&n| n > 0),
        "every master holds budgets: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_master_applies_on_error_to_its_budgets_and_the_limiter_recovers() {
    let mut cluster = RedisCluster::start(3);
    let upstream = format!("http://{}", echo_upstream().await);
    let extra = format!(
        r#"
[rate_limit]
client_ip = {{ rate = "1/h", burst = 3 }}
[rate_limit.redis]
cluster = {}
timeout = "500ms"
on_error = "deny"
"#,
        cluster.seeds_toml()
    );
    let deny = gateway(&config_for(&upstream, &extra)).await;
    let url = format!("{}/v0/pipelines", deny.url());
    let response = get(&url).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("ratelimit"),
        Some("\"client_ip\";r=2;t=3600")
    );
    let owner = cluster
        .node_holding("pipeline-gateway:rl:client_ip:127.0.0.1")
        .expect("a node holds the budget");

    // The master holding the budget dies (no replica takes over): deny answers 503.
    cluster.nodes[owner].kill();
    assert!(
        eventually(OUTAGE_DEADLINE, async || get(&url).await.status == 503).await,
        "deny did not answer 503 within {OUTAGE_DEADLINE:?} of the node going away"
    );
    let response = get(&url).await;
    response.error(503, "ServiceUnavailable");
    assert_eq!(response.header("retry-after"), Some("1"));

    // It comes back (empty) with its slots; the cluster decides again — with deny, any
    // answer but 503 is Redis's.
    cluster.restart(owner);
    assert!(
        eventually(RECOVERY_DEADLINE, async || get(&url).await.status != 503).await,
        "the limiter did not decide in the cluster again within {RECOVERY_DEADLINE:?}"
    );
    let response = get(&url).await;
    assert_eq!(response.status, 200);
    let remaining = response.header("ratelimit").expect("ratelimit").to_owned();
    assert!(
        remaining.starts_with("\"client_ip\";r=1;"),
        "{remaining}: decided in the restarted node's fresh budget"
    );
    deny.shutdown().await;
}
