//! Shared limits on the master that real Redis Sentinels name (a master, a replica and the
//! Sentinels, all started by the test; `redis-server` missing: fail).
//!
//! - Two gateway *processes* with `[rate_limit.redis] sentinel = [...]` share nothing but the
//!   master the Sentinels name (one Sentinel of the list is down: it is skipped); together they
//!   admit exactly the burst.
//! - The master is killed: during the outage `on_error` applies (`deny` → 503, `local` → this
//!   instance's own budget); the Sentinels then promote the replica by themselves, and both
//!   gateways find it and decide in Redis again — the shared quota resumes, on the new master.
//!   The outage is held open by starting the replica with `replica-priority 0` (no Sentinel
//!   promotes it) and released after the outage's assertions, so nothing depends on how fast
//!   a failover is.

pub mod support;

use std::time::Duration;

use support::redis_sentinel::MASTER_NAME;
use support::*;

/// How long the Sentinels may take to promote the replica, and the gateways to find it.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
/// How long a gateway may take to notice that the master is gone.
const OUTAGE_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_a_sentinel_master_admit_exactly_the_quota() {
    let setup = RedisSentinels::start(1, true);
    let upstream = format!("http://{}", echo_upstream().await);
    let dead_sentinel = format!("redis://127.0.0.1:{}", closed_port().await);
    let extra = format!(
        r#"
[rate_limit]
client_ip = {{ rate = "1/h", burst = 25 }}
[rate_limit.redis]
sentinel = ["{dead_sentinel}", "{}"]
master_name = "{MASTER_NAME}"
timeout = "500ms"
on_error = "deny"
"#,
        setup.sentinels[0].url()
    );
    let a = GatewayProcess::start(&config_for(&upstream, &extra));
    let b = GatewayProcess::start(&config_for(&upstream, &extra));
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
    let last = get(&format!("{}/v0/pipelines", b.url())).await;
    assert_eq!(last.header("ratelimit"), Some("\"client_ip\";r=0;t=90000"));
    // The budget is on the master the Sentinel named.
    let key = "pipeline-gateway:rl:client_ip:127.0.0.1";
    let on_master: i64 = setup.master.query(redis::cmd("EXISTS").arg(key)).unwrap();
    assert_eq!(on_master, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_on_error_during_the_outage_and_then_decides_in_the_new_master() {
    let mut setup = RedisSentinels::start(3, false);
    let upstream = format!("http://{}", echo_upstream().await);
    let gateway_with = |on_error: &str| {
        let extra = format!(
            r#"
[admin]
listen = "127.0.0.1:0"
[rate_limit]
client_ip = {{ rate = "1/h", burst = 3 }}
trusted_proxies = ["127.0.0.1"]
[rate_limit.redis]
sentinel = {}
master_name = "{MASTER_NAME}"
timeout = "500ms"
on_error = "{on_error}"
key_prefix = "shared:"
"#,
            setup.sentinels_toml()
        );
        config_for(&upstream, &extra)
    };
    let deny = gateway(&gateway_with("deny")).await;
    let local = gateway(&gateway_with("local")).await;
    // One request from `client` (its X-Forwarded-For) at `gateway`; the status.
    async fn status(gateway: &pipeline_gateway::Gateway, client: &str) -> u16 {
        ask(gateway, client).await.status.as_u16()
    }
    async fn ask(gateway: &pipeline_gateway::Gateway, client: &str) -> Reply {
        let url = format!("{}/v0/pipelines", gateway.url());
        send("GET", &url, &[("x-forwarded-for", client)], b"").await
    }
    // Six requests from `client`, alternating between the two gateways.
    let shared_quota = async |client: &str| {
        let mut statuses = Vec::new();
        for i in 0..6 {
            let gateway = if i % 2 == 0 { &deny } else { &local };
            statuses.push(status(gateway, client).await);
        }
        statuses
    };

    // Before: one budget across both gateways, in the master.
    assert_eq!(
        shared_quota("10.1.0.1").await,
        [200, 200, 200, 429, 429, 429]
    );
    setup.wait_replicated();
    let old_master = setup.master.port;

    setup.master.kill();
    // deny: 503 while there is no master.
    assert!(
        eventually(OUTAGE_DEADLINE, async || status(&deny, "10.1.0.2").await
            == 503)
        .await,
        "deny did not answer 503 within {OUTAGE_DEADLINE:?} of the master going away"
    );
    let response = ask(&deny, "10.1.0.2").await;
    response.error(503, "ServiceUnavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
    // local: this instance's own budget — 10.1.0.1, spent in Redis, passes here…
    assert!(
        eventually(OUTAGE_DEADLINE, async || status(&local, "10.1.0.1").await
            == 200)
        .await,
        "local did not fall back to its own budget within {OUTAGE_DEADLINE:?}"
    );
    // …and a fresh client gets the local burst of 3, then 429.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(status(&local, "10.1.0.3").await);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(setup.master_port(), Some(old_master), "no failover yet");

    // The Sentinels may now promote the replica, and do so by themselves.
    setup.release_replica();
    let replica = setup.replica.port;
    assert!(
        eventually(FAILOVER_DEADLINE, async || setup.master_port()
            == Some(replica))
        .await,
        "the Sentinels did not promote the replica within {FAILOVER_DEADLINE:?}"
    );
    // Both gateways decide in the new master again: 10.1.0.1's budget (replicated before the
    // kill) is spent there, while each gateway's own memory would still let it pass.
    for (name, gateway) in [("deny", &deny), ("local", &local)] {
        assert!(
            eventually(FAILOVER_DEADLINE, async || status(gateway, "10.1.0.1")
                .await
                == 429)
            .await,
            "{name} did not decide in the new master within {FAILOVER_DEADLINE:?}"
        );
    }
    // The shared quota resumes, and its budget is on the new master.
    assert_eq!(
        shared_quota("10.1.0.4").await,
        [200, 200, 200, 429, 429, 429]
    );
    let on_new_master: i64 = setup
        .replica
        .query(redis::cmd("EXISTS").arg("shared:client_ip:10.1.0.4"))
        .unwrap();
    assert_eq!(on_new_master, 1);

    // Every fallback was counted under its on_error.
    for (gateway, on_error) in [(&deny, "deny"), (&local, "local")] {
        let admin = gateway.admin_addr().expect("admin listener");
        let text = get(&format!("http://{admin}/metrics")).await.text();
        let fallbacks =
            format!("pipeline_gateway_ratelimit_redis_fallbacks_total{{on_error=\"{on_error}\"}}");
        assert!(metric(&text, &fallbacks) >= 1, "{text}");
    }
    for gateway in [deny, local] {
        gateway.shutdown().await;
    }
}
