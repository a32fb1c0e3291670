//! Hot reload under load: the configuration alternates between two versions (and five broken
//! ones) while fifty clients keep requesting and an egress stream stays open. Nothing fails,
//! the stream never breaks, every answer comes from one version, whole.
//!
//! Version 1 routes to stand-in `a` and names its rate-limit rule `v1`; version 2 routes to
//! stand-in `b` and names it `v2`. A response whose `x-standin-instance` and
//! `RateLimit-Policy` disagree would have been served half by one configuration and half by
//! the other.

pub mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipeline_gateway::config::Config;
use pipeline_gateway::Gateway;
use support::*;

fn version(upstream: &str, tag: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[upstreams]]
name = "primary"
endpoints = ["{upstream}"]
[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true
[auth]
mode = "off"
[rate_limit]
[[rate_limit.rules]]
name = "{tag}"
routes = ["pipeline.get"]
rate = "1000000/s"
burst = 1000000
{extra}
"#
    )
}

async fn post_reload(admin: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let reply = post(&format!("http://{admin}/reload")).await;
    (reply.status.as_u16(), reply.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_load_lose_nothing_and_mix_nothing() {
    let a = standin("a").await;
    let b = standin("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let v1 = version(&a.url(), "v1", "");
    let v2 = version(&b.url(), "v2", "");
    std::fs::write(&path, &v1).unwrap();
    let gw = Gateway::start_from(Config::from_toml(&v1).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    let admin = gw.admin_addr().unwrap();
    let url = format!("{}/v0/pipelines/orders", gw.url());

    // An endless egress stream, opened on version 1 (stand-in a).
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let stream_response = client
        .request(
            http::Request::post(format!("{}/v0/pipelines/live/egress/v", gw.url()))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stream_response.status(), 200);
    assert_eq!(stream_response.headers()["x-standin-instance"], "a");
    let streamed = Arc::new(AtomicU64::new(0));
    let stream_task = {
        let streamed = streamed.clone();
        tokio::spawn(async move {
            let mut body = stream_response.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            streamed.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Err(error) => return Err(error.to_string()),
                }
            }
            Err::<(), String>("the stream ended".to_owned())
        })
    };

    // Fifty clients on keep-alive connections, until the reloads are done.
    let done = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (done, url, counted) = (done.clone(), url.clone(), answers.clone());
        clients.push(tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let (mut answered, mut problems) = ([0u64; 2], Vec::new());
            while !done.load(Ordering::Relaxed) {
                let request = http::Request::get(&url).body(Empty::new()).unwrap();
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let instance = response.headers().get("x-standin-instance").cloned();
                        let policy = response.headers().get("ratelimit-policy").cloned();
                        let _ = response.into_body().collect().await;
                        counted.fetch_add(1, Ordering::Relaxed);
                        match (
                            status.as_u16(),
                            instance.as_ref().and_then(|v| v.to_str().ok()),
                            policy.as_ref().and_then(|v| v.to_str().ok()),
                        ) {
                            (200, Some("a"), Some(p)) if p.starts_with("\"v1\"") => {
                                answered[0] += 1
                            }
                            (200, Some("b"), Some(p)) if p.starts_with("\"v2\"") => {
                                answered[1] += 1
                            }
                            other => problems.push(format!("{other:?}")),
                        }
                    }
                    Err(error) => problems.push(format!("request failed: {error}")),
                }
            }
            (answered, problems)
        }));
    }

    // Fifty good reloads, alternating, and five broken ones among them.
    let broken = [
        "[[upstreams]]\nname = \"x\"\nendpoints = [\"ftp://nope\"]\n".to_owned(),
        v1.replace("upstream = \"primary\"", "upstream = \"eu\""),
        v1.replace("[server]\n", "[server]\nmax_in_flight = 0\n"),
        v2.replace(
            "[auth]\nmode = \"off\"",
            "[auth]\n[[auth.jwt]]\nissuer = \"i\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_file = \"/nonexistent/jwks.json\"",
        ),
        "this is not toml".to_owned(),
    ];
    let mut failed = 0;
    for round in 0..50 {
        let next = if round % 2 == 0 { &v2 } else { &v1 };
        std::fs::write(&path, next).unwrap();
        let (status, body) = post_reload(admin).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(body["status"], "reloaded");
        if round % 10 == 5 {
            std::fs::write(&path, &broken[failed]).unwrap();
            let (status, body) = post_reload(admin).await;
            assert_eq!(status, 400, "broken {failed}: {body}");
            assert_eq!(body["error_code"], "InvalidConfiguration");
            assert!(
                !body["details"]["problems"].as_array().unwrap().is_empty(),
                "{body}"
            );
            failed += 1;
        }
        // Let requests run on this version for a little while.
        let before = answers.load(Ordering::Relaxed);
        let busy = eventually(Duration::from_secs(10), async || {
            answers.load(Ordering::Relaxed) >= before + 20
        })
        .await;
        assert!(busy, "round {round}: requests keep flowing");
    }
    assert_eq!(failed, 5);
    done.store(true, Ordering::Relaxed);
    let mut totals = [0u64; 2];
    for client in clients {
        let (answered, problems) = client.await.unwrap();
        assert!(
            problems.is_empty(),
            "{} problems, e.g. {:?}",
            problems.len(),
            &problems[..problems.len().min(5)]
        );
        totals[0] += answered[0];
        totals[1] += answered[1];
    }
    assert!(totals[0] > 0 && totals[1] > 0, "{totals:?}");

    // The stream opened before the first reload is still flowing, from stand-in a.
    let now = streamed.load(Ordering::Relaxed);
    let flowing = eventually(Duration::from_secs(10), async || {
        streamed.load(Ordering::Relaxed) > now + 64 * 1024
    })
    .await;
    assert!(
        flowing,
        "the egress stream kept flowing through every reload"
    );
    assert!(!stream_task.is_finished(), "the stream never ended");
    stream_task.abort();

    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert!(
        metrics.contains("pipeline_gateway_config_reloads_total{result=\"ok\"} 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pipeline_gateway_config_reloads_total{result=\"failed\"} 5"),
        "{metrics}"
    );
    eprintln!(
        "reload under load: {} answers from version 1, {} from version 2, 0 failed, {} bytes streamed",
        totals[0],
        totals[1],
        streamed.load(Ordering::Relaxed)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_broken_configuration_keeps_the_running_one_and_says_why() {
    let a = standin("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let v1 = version(&a.url(), "v1", "");
    std::fs::write(&path, &v1).unwrap();
    let gw = Gateway::start_from(Config::from_toml(&v1).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    let admin = gw.admin_addr().unwrap();
    let config_before = get(&format!("http://{admin}/config")).await.json();
    std::fs::write(
        &path,
        v1.replace("upstream = \"primary\"", "upstream = \"eu\""),
    )
    .unwrap();
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], "InvalidConfiguration");
    assert_eq!(
        body["details"]["problems"],
        serde_json::json!([{"path": "routes[0].upstream", "message": "unknown upstream \"eu\""}])
    );
    assert_eq!(
        get(&format!("http://{admin}/config")).await.json(),
        config_before
    );
    assert_eq!(
        get(&format!("{}/v0/pipelines/orders", gw.url()))
            .await
            .status,
        200
    );
    // GET /config shows the running configuration, its hash and load time, nothing secret.
    assert_eq!(config_before["hash"].as_str().unwrap().len(), 16);
    assert_eq!(
        config_before["config"]["upstreams"][0]["endpoints"][0],
        a.url()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_new_listen_address_is_bound_and_the_old_one_drained() {
    let a = standin("a").await;
    a.set_fault(
        "/v0/pipelines/orders",
        feldera_standin::Fault::Delay(Duration::from_millis(500)),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let v1 = version(&a.url(), "v1", "");
    std::fs::write(&path, &v1).unwrap();
    let gw = Gateway::start_from(Config::from_toml(&v1).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    let old = gw.local_addr();
    // A request in flight on the old address while it is retired.
    let url = format!("http://{old}/v0/pipelines/orders");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let arrived = eventually(Duration::from_secs(5), async || !a.requests().is_empty()).await;
    assert!(arrived);
    let port = closed_port().await;
    let moved = v1.replace(
        "listen = \"127.0.0.1:0\"\n[admin]",
        &format!("listen = \"127.0.0.1:{port}\"\n[admin]"),
    );
    std::fs::write(&path, &moved).unwrap();
    let report = gw.reload_file().await.expect("reloaded");
    assert_eq!(report.hash.len(), 16);
    assert_eq!(gw.local_addr().port(), port);
    assert_eq!(
        in_flight.await.unwrap().status,
        200,
        "the request in flight finished"
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/v0/pipelines/live"))
            .await
            .status,
        200
    );
    let closed = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(old).await.is_err()
    })
    .await;
    assert!(closed, "the old address no longer accepts");
    gw.shutdown().await;
}

#[tokio::test]
async fn rate_limit_budgets_survive_a_reload_that_keeps_their_policy() {
    let a = standin("a").await;
    let limited = |burst: u32, tag: &str| {
        version(&a.url(), tag, "").replace(
            "[rate_limit]\n",
            &format!("[rate_limit]\nclient_ip = {{ rate = \"1/h\", burst = {burst} }}\n"),
        )
    };
    let v1 = limited(2, "v1");
    let gw = Gateway::start_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Config::from_toml(&v1).unwrap(),
    )
    .await
    .unwrap();
    let url = format!("{}/v0/pipelines/orders", gw.url());
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(get(&url).await.status, 200);
    get(&url).await.error(429, "RateLimitExceeded");
    // Another rule name, same client_ip policy: the spent budget stays spent.
    gw.reload(Config::from_toml(&limited(2, "v2")).unwrap())
        .await
        .expect("reloaded");
    let details = get(&url).await.error(429, "RateLimitExceeded");
    assert_eq!(details["policy"], "client_ip");
    // A changed policy is a new budget.
    gw.reload(Config::from_toml(&limited(3, "v2")).unwrap())
        .await
        .expect("reloaded");
    assert_eq!(get(&url).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn with_watch_config_a_changed_file_is_reloaded_by_itself() {
    let a = standin("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let watched =
        |tag: &str| version(&a.url(), tag, "").replace("[admin]", "watch_config = true\n[admin]");
    std::fs::write(&path, watched("v1")).unwrap();
    let gw = Gateway::start_from(
        Config::from_toml(&watched("v1")).unwrap(),
        Some(path.clone()),
    )
    .await
    .unwrap();
    let url = format!("{}/v0/pipelines/orders", gw.url());
    assert!(get(&url)
        .await
        .header("ratelimit-policy")
        .unwrap()
        .starts_with("\"v1\""));
    std::fs::write(&path, watched("v2")).unwrap();
    let reloaded = eventually(Duration::from_secs(10), async || {
        get(&url)
            .await
            .header("ratelimit-policy")
            .is_some_and(|p| p.starts_with("\"v2\""))
    })
    .await;
    assert!(reloaded, "the changed file was reloaded");
    assert_eq!(gw.process().reloads.count(true), 1);
    gw.shutdown().await;
}
