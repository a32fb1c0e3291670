//! Upstreams under strain: connection caps, outlier ejection, active health checks, safe
//! retries, draining — each over real sockets with two stand-in replicas `a` and `b`.

use std::time::Duration;

use feldera_standin::{Fault, Standin};
use pipeline_gateway::Gateway;
use serde_json::{json, Value};

use crate::support::*;

/// A gateway in front of `endpoints` (one upstream), with `upstream_extra` keys in its
/// `[[upstreams]]` table and an admin listener.
async fn gateway_over(endpoints: &[String], upstream_extra: &str) -> Gateway {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[upstreams]]
name = "primary"
endpoints = [{}]
connect_timeout = "1s"
{timeout}
{upstream_extra}
[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true
[auth]
mode = "off"
"#,
        list.join(", "),
        timeout = if upstream_extra.contains("request_timeout") {
            ""
        } else {
            "request_timeout = \"5s\""
        },
    ))
    .await
}

async fn upstreams(gw: &Gateway) -> Value {
    let admin = gw.admin_addr().expect("admin listener");
    get(&format!("http://{admin}/upstreams")).await.json()["upstreams"][0].clone()
}

fn html(status: u16) -> Fault {
    Fault::Respond {
        status,
        content_type: Some("text/html".into()),
        body: b"<html>bad gateway</html>".to_vec(),
        headers: vec![],
    }
}

async fn instance(gw: &Gateway, path: &str) -> String {
    let reply = get(&format!("{}{path}", gw.url())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.header("x-standin-instance").unwrap_or("").to_owned()
}

#[tokio::test]
async fn past_the_connection_cap_requests_wait_then_get_503_upstream_overloaded() {
    let upstream = standin("a").await;
    upstream.set_fault("/v0/pipelines/orders", Fault::Delay(Duration::from_secs(2)));
    let gw = gateway_over(
        &[upstream.url()],
        "max_connections = 1\nmax_pending = 1\npending_timeout = \"10s\"",
    )
    .await;
    let slow = format!("{}/v0/pipelines/orders", gw.url());
    let first = tokio::spawn({
        let slow = slow.clone();
        async move { get(&slow).await }
    });
    let arrived = eventually(Duration::from_secs(5), async || {
        !upstream.requests().is_empty()
    })
    .await;
    assert!(arrived);
    // The second waits for the one connection…
    let second = tokio::spawn({
        let url = format!("{}/v0/pipelines/live", gw.url());
        async move { get(&url).await }
    });
    let waiting = eventually(Duration::from_secs(5), async || {
        upstreams(&gw).await["endpoints"][0]["connections"]["pending"] == 1
    })
    .await;
    assert!(waiting, "the second request waits for the connection");
    // … and a third finds the waiting room full.
    let reply = get(&format!("{}/v0/pipelines/billing", gw.url())).await;
    let details = reply.error(503, "UpstreamOverloaded");
    assert_eq!(
        details,
        json!({"upstream": "primary", "reason": "too many requests waiting for a connection"})
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(
        second.await.unwrap().status,
        200,
        "served once the connection was free"
    );
    let pool = &upstreams(&gw).await["endpoints"][0]["connections"];
    assert_eq!(pool["open"], 1, "one connection, reused: {pool}");
}

#[tokio::test]
async fn a_refusing_replica_is_ejected_and_its_requests_go_to_the_other() {
    let a = standin("a").await;
    let dead = format!("http://127.0.0.1:{}", closed_port().await);
    let gw = gateway_over(&[dead, a.url()], "").await;
    // Every request is answered by `a`: the first one meeting the dead endpoint is sent
    // again (nothing of it was sent), and the dead endpoint is then ejected.
    for _ in 0..6 {
        assert_eq!(instance(&gw, "/v0/pipelines/orders").await, "a");
    }
    let status = upstreams(&gw).await;
    let dead = &status["endpoints"][0];
    assert_eq!(dead["available"], false, "{status}");
    assert!(dead["ejected_for_s"].as_f64().unwrap() > 0.0, "{status}");
    assert_eq!(dead["last_error"]["reason"], "connection refused");
    // A POST is sent again too when it was never sent.
    let reply = post(&format!("{}/v0/pipelines/orders/pause", gw.url())).await;
    assert_ne!(reply.status, 502, "{}", reply.text());
}

#[tokio::test]
async fn the_endpoints_own_5xx_eject_it_and_idempotent_requests_are_retried() {
    let (a, b) = (standin("a").await, standin("b").await);
    b.set_fault("/v0/", html(502));
    let gw = gateway_over(
        &[a.url(), b.url()],
        "[upstreams.outlier]\nconsecutive_5xx = 2\nbase_ejection = \"1m\"",
    )
    .await;
    for _ in 0..8 {
        assert_eq!(instance(&gw, "/v0/pipelines/orders").await, "a");
    }
    let status = upstreams(&gw).await;
    assert_eq!(status["endpoints"][1]["available"], false, "{status}");
    assert_eq!(status["endpoints"][1]["last_error"]["reason"], "502");
    assert!(
        !b.requests().is_empty() && b.requests().len() <= 2,
        "b saw at most the two requests that ejected it: {}",
        b.requests().len()
    );
}

#[tokio::test]
async fn a_manager_that_never_answers_is_ejected_by_its_timeouts() {
    let (a, b) = (standin("a").await, standin("b").await);
    b.set_fault("/v0/", Fault::Delay(Duration::from_secs(600)));
    let gw = gateway_over(
        &[a.url(), b.url()],
        "request_timeout = \"300ms\"\n\
         [upstreams.outlier]\nconsecutive_5xx = 2\nbase_ejection = \"1m\"",
    )
    .await;
    let mut timeouts = 0;
    for _ in 0..10 {
        let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
        if reply.status == 504 {
            let details = reply.error(504, "UpstreamTimeout");
            assert_eq!(details, json!({"upstream": "primary", "timeout_s": 0.3}));
            timeouts += 1;
        } else {
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.header("x-standin-instance"), Some("a"));
        }
    }
    // Round robin gave `b` every other request until its second timeout ejected it.
    assert_eq!(timeouts, 2);
    let status = upstreams(&gw).await;
    assert_eq!(status["endpoints"][1]["available"], false, "{status}");
    assert_eq!(status["endpoints"][1]["last_error"]["reason"], "timed out");
}

#[tokio::test]
async fn past_try_timeout_an_idempotent_request_goes_to_another_endpoint() {
    let (a, b) = (standin("a").await, standin("b").await);
    b.set_fault("/v0/", Fault::Delay(Duration::from_secs(600)));
    let gw = gateway_over(
        &[a.url(), b.url()],
        "[upstreams.outlier]\nconsecutive_5xx = 2\nbase_ejection = \"1m\"\n\
         [upstreams.retry]\ntry_timeout = \"100ms\"",
    )
    .await;
    // No client sees the hung endpoint: each try it gets is cut short and sent to `a`.
    for _ in 0..6 {
        assert_eq!(instance(&gw, "/v0/pipelines/orders").await, "a");
    }
    let status = upstreams(&gw).await;
    assert_eq!(status["endpoints"][1]["available"], false, "{status}");
    assert_eq!(status["endpoints"][1]["last_error"]["reason"], "timed out");
    assert_eq!(b.requests().len(), 2, "b had the two tries that ejected it");
}

#[tokio::test]
async fn a_post_that_reached_the_manager_is_never_sent_twice() {
    let (a, b) = (standin("a").await, standin("b").await);
    a.set_fault("/v0/pipelines/orders/start", html(502));
    b.set_fault("/v0/pipelines/orders/start", html(502));
    let gw = gateway_over(&[a.url(), b.url()], "").await;
    let reply = post(&format!("{}/v0/pipelines/orders/start", gw.url())).await;
    let details = reply.error(502, "UpstreamError");
    assert_eq!(details["upstream_status"], 502);
    let starts = |s: &Standin| {
        s.requests()
            .iter()
            .filter(|r| r.uri.path() == "/v0/pipelines/orders/start")
            .count()
    };
    assert_eq!(starts(&a) + starts(&b), 1, "sent exactly once");
}

#[tokio::test]
async fn the_managers_typed_errors_never_eject_and_retry_after_is_honoured() {
    let with_stopped = |instance: &str| {
        let mut options = seeded();
        options.instance = instance.to_owned();
        options.seed.push(feldera_standin::SeedPipeline {
            name: "stopped".into(),
            status: feldera_standin::SeedStatus::Stopped,
        });
        options
    };
    let (a, b) = (
        standin_with(with_stopped("a")).await,
        standin_with(with_stopped("b")).await,
    );
    let gw = gateway_over(
        &[a.url(), b.url()],
        "[upstreams.outlier]\nconsecutive_5xx = 1",
    )
    .await;
    // A pipeline that is not deployed: the manager's 503 PipelineInteractionNotDeployed.
    for _ in 0..6 {
        let reply = post(&format!("{}/v0/pipelines/stopped/pause", gw.url())).await;
        reply.error(503, "PipelineInteractionNotDeployed");
        assert_eq!(reply.header("retry-after"), Some("5"));
    }
    let status = upstreams(&gw).await;
    for endpoint in status["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["available"], true, "{status}");
    }
    // An endpoint that asks to wait is not asked again by the gateway: its answer (and
    // Retry-After) go to the client.
    b.set_fault(
        "/v0/pipelines/live",
        Fault::Respond {
            status: 503,
            content_type: Some("text/plain".into()),
            body: b"maintenance".to_vec(),
            headers: vec![("retry-after".into(), "30".into())],
        },
    );
    a.set_fault(
        "/v0/pipelines/live",
        Fault::Respond {
            status: 503,
            content_type: Some("text/plain".into()),
            body: b"maintenance".to_vec(),
            headers: vec![("retry-after".into(), "30".into())],
        },
    );
    let reply = get(&format!("{}/v0/pipelines/live", gw.url())).await;
    reply.error(503, "UpstreamError");
    assert_eq!(reply.header("retry-after"), Some("30"));
}

#[tokio::test]
async fn without_retry_budget_an_endpoints_failure_reaches_the_client() {
    let a = standin("a").await;
    let dead = format!("http://127.0.0.1:{}", closed_port().await);
    let gw = gateway_over(
        &[dead, a.url()],
        "[upstreams.retry]\nbudget_percent = 0\nmin_per_second = 0",
    )
    .await;
    let replies = [
        get(&format!("{}/v0/pipelines/orders", gw.url())).await,
        get(&format!("{}/v0/pipelines/orders", gw.url())).await,
    ];
    let failed = replies.iter().filter(|r| r.status == 502).count();
    assert_eq!(
        failed, 1,
        "the first request met the dead endpoint and was not retried"
    );
}

#[tokio::test]
async fn active_health_checks_take_an_endpoint_out_and_bring_it_back() {
    let (a, b) = (standin("a").await, standin("b").await);
    let gw = gateway_over(
        &[a.url(), b.url()],
        "[upstreams.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
         unhealthy_after = 2\nhealthy_after = 2",
    )
    .await;
    b.set_fault("/healthz", html(500));
    let out = eventually(Duration::from_secs(10), async || {
        upstreams(&gw).await["endpoints"][1]["healthy"] == false
    })
    .await;
    assert!(out, "b failed its checks");
    b.clear_requests();
    for _ in 0..6 {
        assert_eq!(instance(&gw, "/v0/pipelines/orders").await, "a");
    }
    assert!(b.requests().iter().all(|r| r.uri.path() == "/healthz"));
    b.clear_faults();
    let back = eventually(Duration::from_secs(10), async || {
        upstreams(&gw).await["endpoints"][1]["healthy"] == true
    })
    .await;
    assert!(back, "b passed its checks again");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(instance(&gw, "/v0/pipelines/orders").await);
    }
    assert_eq!(seen.len(), 2, "both serve again: {seen:?}");
}

#[tokio::test]
async fn a_drained_endpoint_gets_no_new_requests_and_all_drained_is_503() {
    let (a, b) = (standin("a").await, standin("b").await);
    let gw = gateway_over(&[a.url(), b.url()], "").await;
    let admin = gw.admin_addr().unwrap();
    let drained = post(&format!(
        "http://{admin}/upstreams/primary/endpoints/0/drain"
    ))
    .await;
    assert_eq!(drained.status, 200);
    assert_eq!(drained.json()["endpoints"][0]["draining"], true);
    for _ in 0..4 {
        assert_eq!(instance(&gw, "/v0/pipelines/orders").await, "b");
    }
    post(&format!(
        "http://{admin}/upstreams/primary/endpoints/1/drain"
    ))
    .await;
    let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
    let details = reply.error(503, "NoHealthyUpstream");
    assert_eq!(details["upstream"], "primary");
    assert_eq!(reply.header("retry-after"), Some("1"));
    post(&format!(
        "http://{admin}/upstreams/primary/endpoints/0/undrain"
    ))
    .await;
    assert_eq!(instance(&gw, "/v0/pipelines/orders").await, "a");
    let unknown = post(&format!("http://{admin}/upstreams/nope/endpoints/0/drain")).await;
    unknown.error(404, "UnknownUpstream");
}

/// Opens an endless egress stream through the gateway as `principal` (an API key), keeping
/// the response alive.
async fn open_stream(gw: &Gateway, key: &str) -> http::Response<hyper::body::Incoming> {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    client
        .request(
            http::Request::post(format!("{}/v0/pipelines/live/egress/v", gw.url()))
                .header("authorization", format!("Bearer {key}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap()
}

fn key(seed: char) -> String {
    format!("apikey:{}", seed.to_string().repeat(128))
}

#[tokio::test]
async fn one_principal_cannot_lock_everyone_out_of_a_pipeline() {
    let upstream = standin("a").await;
    let (alice, bob) = (key('a'), key('b'));
    let entry = |name: &str, k: &str| {
        format!(
            "[[auth.api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"write\"\n",
            pipeline_gateway::auth::apikey::hash(k)
        )
    };
    let config = config_for(&upstream.url(), "")
        .replace(
            "request_timeout = \"5s\"",
            "request_timeout = \"5s\"\npipeline_concurrency = 4\nper_principal_min = 1",
        )
        .replace(
            "[auth]\nmode = \"off\"",
            &format!("[auth]\n{}{}", entry("alice", &alice), entry("bob", &bob)),
        );
    let gw = gateway(&config).await;
    // Alice alone may hold the whole quota of 4 …
    let mut streams = Vec::new();
    for _ in 0..4 {
        let stream = open_stream(&gw, &alice).await;
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let fifth = open_stream(&gw, &alice).await;
    assert_eq!(fifth.status(), 429);
    assert_eq!(
        fifth.headers()["ratelimit-policy"],
        "\"pipeline-concurrency\";q=4;qu=\"concurrent-requests\""
    );
    assert_eq!(fifth.headers()["retry-after"], "1");
    let body = http_body_util::BodyExt::collect(fifth.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error_code"], "RateLimitExceeded");
    assert_eq!(body["details"]["policy"], "pipeline-concurrency");
    assert_eq!(body["details"]["pipeline"], "live");
    // … a closed stream gives its slot back at once; bob takes it, and from then on alice is
    // held to her fair share (4 / 2) while bob may open another.
    streams.pop();
    let bob_in = eventually(Duration::from_secs(5), async || {
        open_stream(&gw, &bob).await.status() == 200
    })
    .await;
    assert!(bob_in, "bob got the freed slot");
    streams.truncate(1);
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/live", gw.url()),
        &[("authorization", &format!("Bearer {alice}"))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "alice holds 1 of her share of 2");
    let again = open_stream(&gw, &bob).await;
    assert_eq!(again.status(), 200);
    // Other pipelines are not affected.
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/orders", gw.url()),
        &[("authorization", &format!("Bearer {alice}"))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
}
