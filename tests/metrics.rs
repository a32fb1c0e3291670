//! The admin `/metrics`, read with a real Prometheus text parser (`prometheus-parse`) after a
//! scripted mix of requests over real sockets: a real gateway on 127.0.0.1:0 in front of a
//! stand-in manager, an upstream whose only endpoint is a closed port, and an upstream whose
//! first endpoint is a closed port (so its first request is retried on the stand-in). Every
//! count is asserted exactly; a reload must neither reset nor duplicate a series.

pub mod support;

use std::collections::HashMap;

use pipeline_gateway::auth::apikey;
use pipeline_gateway::config::Config;
use pipeline_gateway::Gateway;
use prometheus_parse::{Sample, Scrape, Value};
use support::{closed_port, gateway, get, seeded, send, standin, standin_with, Reply};

/// The scrape of the gateway's admin `/metrics`, parsed.
async fn scrape(gw: &Gateway) -> Scrape {
    let admin = gw.admin_addr().expect("admin listener");
    let reply = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid Prometheus text")
}

/// The samples of `name` whose labels include every pair of `labels`.
fn samples<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The one sample of `name` with exactly these labels (a duplicate series fails).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples(scrape, name, labels)
        .into_iter()
        .filter(|s| s.labels.iter().count() == labels.len())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one series {name}{labels:?}; found {found:?}"
    );
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// The sum of `name` over every series matching `labels`.
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, name, labels)
        .iter()
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

/// A histogram's observation count for these labels.
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    samples(scrape, name, labels)
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.last().map_or(0, |b| b.count as u64),
            _ => 0,
        })
        .sum()
}

fn config_text(manager: &str, dead: u16, other_dead: u16, keys: &[(&str, &str, &str)]) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "primary"
endpoints = ["{manager}"]
connect_timeout = "1s"
request_timeout = "5s"

[[upstreams]]
name = "dead"
endpoints = ["http://127.0.0.1:{dead}"]
connect_timeout = "1s"
request_timeout = "5s"

[[upstreams]]
name = "pair"
endpoints = ["http://127.0.0.1:{other_dead}", "{manager}"]
connect_timeout = "1s"
request_timeout = "5s"

[[routes]]
pipelines = ["dead-*"]
upstream = "dead"

[[routes]]
pipelines = ["pair-*"]
upstream = "pair"

[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true

[rate_limit]
[[rate_limit.overrides]]
name = "slow-robot"
principals = ["key:robot"]
rate = "1/h"
burst = 1

[auth]
"#
    );
    for (name, hash, role) in keys {
        text.push_str(&format!(
            "[[auth.api_keys]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nrole = \"{role}\"\n"
        ));
    }
    text
}

async fn get_as(gw: &Gateway, path: &str, key: Option<&str>) -> Reply {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    send("GET", &format!("{}{path}", gw.url()), &headers, b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_mix_of_requests_is_counted_exactly() {
    let manager = standin("a").await;
    let (dead, other_dead) = (closed_port().await, closed_port().await);
    let (writer, reader, robot) = (apikey::generate(), apikey::generate(), apikey::generate());
    let text = config_text(
        &manager.url(),
        dead,
        other_dead,
        &[
            ("writer", &apikey::hash(&writer), "write"),
            ("reader", &apikey::hash(&reader), "read"),
            ("robot", &apikey::hash(&robot), "read"),
        ],
    );
    let gw = gateway(&text).await;

    // 1 ok.
    let ok = get_as(&gw, "/v0/pipelines", Some(&writer)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // 2 without credentials, 1 with an unknown key: 401 by reason.
    for _ in 0..2 {
        let answer = get_as(&gw, "/v0/pipelines", None).await;
        assert_eq!(
            answer.error(401, "AuthenticationFailed")["reason"],
            "missing_credentials"
        );
    }
    let unknown = get_as(&gw, "/v0/pipelines", Some(&apikey::generate())).await;
    assert_eq!(
        unknown.error(401, "AuthenticationFailed")["reason"],
        "invalid_api_key"
    );
    // 1 forbidden: a read key deleting.
    let forbidden = send(
        "DELETE",
        &format!("{}/v0/pipelines/orders", gw.url()),
        &[("authorization", &format!("Bearer {reader}"))],
        b"",
    )
    .await;
    forbidden.error(403, "InsufficientPermissions");
    // The robot's budget is one request: then two 429s.
    let first = get_as(&gw, "/v0/pipelines", Some(&robot)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    for _ in 0..2 {
        let limited = get_as(&gw, "/v0/pipelines", Some(&robot)).await;
        assert_eq!(
            limited.error(429, "RateLimitExceeded")["policy"],
            "slow-robot"
        );
    }
    // 1 404 from the manager itself.
    let missing = get_as(&gw, "/v0/pipelines/no-such-pipeline", Some(&writer)).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["error_code"], "UnknownPipelineName");
    // 1 502 from an upstream whose only endpoint is down.
    let down = get_as(&gw, "/v0/pipelines/dead-one", Some(&writer)).await;
    let details = down.error(502, "UpstreamUnavailable");
    assert_eq!(details["upstream"], "dead");
    // 1 retried: the pair's first endpoint refuses the connection, the stand-in answers.
    let retried = get_as(&gw, "/v0/pipelines/pair-one", Some(&writer)).await;
    assert_eq!(retried.status, 404, "{}", retried.text());
    assert_eq!(retried.header("x-standin-instance"), Some("a"));

    let m = scrape(&gw).await;
    let requests = "pipeline_gateway_requests_total";
    let list = [("endpoint", "pipelines.list"), ("method", "GET")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        list.iter().chain(extra).copied().collect()
    };
    assert_eq!(
        value(
            &m,
            requests,
            &with(&[
                ("route", "primary"),
                ("status_class", "2xx"),
                ("error_code", "")
            ])
        ),
        2.0,
        "the writer's and the robot's first"
    );
    assert_eq!(
        value(
            &m,
            requests,
            &with(&[
                ("route", "none"),
                ("status_class", "4xx"),
                ("error_code", "AuthenticationFailed")
            ])
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            requests,
            &with(&[
                ("route", "none"),
                ("status_class", "4xx"),
                ("error_code", "RateLimitExceeded")
            ])
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            requests,
            &[
                ("route", "none"),
                ("endpoint", "pipeline.delete"),
                ("method", "DELETE"),
                ("status_class", "4xx"),
                ("error_code", "InsufficientPermissions")
            ]
        ),
        1.0
    );
    let get_one = |route, class, code| {
        value(
            &m,
            requests,
            &[
                ("route", route),
                ("endpoint", "pipeline.get"),
                ("method", "GET"),
                ("status_class", class),
                ("error_code", code),
            ],
        )
    };
    assert_eq!(
        get_one("primary", "4xx", "upstream"),
        1.0,
        "the manager's 404"
    );
    assert_eq!(get_one("dead", "5xx", "UpstreamUnavailable"), 1.0);
    assert_eq!(get_one("pair", "4xx", "upstream"), 1.0);
    assert_eq!(sum(&m, requests, &[]), 11.0, "every request once");
    assert_eq!(
        histogram_count(
            &m,
            "pipeline_gateway_request_duration_seconds",
            &[("route", "primary"), ("endpoint", "pipelines.list")]
        ),
        2
    );
    assert_eq!(
        histogram_count(&m, "pipeline_gateway_request_duration_seconds", &[]),
        11
    );
    assert_eq!(value(&m, "pipeline_gateway_requests_in_flight", &[]), 0.0);

    // Authentication: outcomes by kind and reason.
    let outcomes = "pipeline_gateway_auth_outcomes_total";
    let outcome = |kind, outcome, reason| {
        value(
            &m,
            outcomes,
            &[("kind", kind), ("outcome", outcome), ("reason", reason)],
        )
    };
    assert_eq!(
        outcome("none", "unauthenticated", "missing_credentials"),
        2.0
    );
    assert_eq!(
        outcome("api_key", "unauthenticated", "invalid_api_key"),
        1.0
    );
    assert_eq!(
        outcome("api_key", "forbidden", "insufficient_permissions"),
        1.0
    );
    // The writer 4 times, the robot 3 times (the limit comes after authentication).
    assert_eq!(outcome("api_key", "ok", ""), 7.0);
    assert_eq!(sum(&m, outcomes, &[]), 11.0);
    assert_eq!(
        value(
            &m,
            "pipeline_gateway_auth_failures_total",
            &[("reason", "missing_credentials")]
        ),
        2.0
    );

    // Rate limits: decisions by policy and outcome.
    let decisions = "pipeline_gateway_ratelimit_decisions_total";
    assert_eq!(
        value(
            &m,
            decisions,
            &[("policy", "slow-robot"), ("decision", "allow")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            decisions,
            &[("policy", "slow-robot"), ("decision", "deny")]
        ),
        2.0
    );

    // Upstreams: one retry, no budget refusal; tries timed per endpoint; state gauges.
    assert_eq!(
        value(
            &m,
            "pipeline_gateway_upstream_retries_total",
            &[("upstream", "pair")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "pipeline_gateway_upstream_retry_budget_exhausted_total",
            &[]
        ),
        0.0
    );
    let manager_url = manager.url();
    let manager_url = manager_url.trim_end_matches('/');
    assert_eq!(
        histogram_count(
            &m,
            "pipeline_gateway_upstream_request_duration_seconds",
            &[("upstream", "primary"), ("endpoint", manager_url)]
        ),
        3,
        "every try that reached the primary's manager"
    );
    assert_eq!(
        value(
            &m,
            "pipeline_gateway_upstream_endpoint_available",
            &[("upstream", "primary"), ("endpoint", manager_url)]
        ),
        1.0
    );
    // One refused connection ejects (`consecutive_connect_failures = 1` by default).
    let available = |upstream| {
        value(
            &m,
            "pipeline_gateway_upstream_endpoints_available",
            &[("upstream", upstream)],
        )
    };
    assert_eq!(available("dead"), 0.0);
    assert_eq!(available("pair"), 1.0);
    assert_eq!(available("primary"), 1.0);
    assert_eq!(
        value(
            &m,
            "pipeline_gateway_upstream_endpoint_ejected",
            &[
                ("upstream", "dead"),
                ("endpoint", &format!("http://127.0.0.1:{dead}"))
            ]
        ),
        1.0
    );
    let connections = |state| {
        value(
            &m,
            "pipeline_gateway_upstream_connections",
            &[
                ("upstream", "primary"),
                ("endpoint", manager_url),
                ("state", state),
            ],
        )
    };
    assert_eq!(connections("pending"), 0.0);
    assert!(connections("idle") <= connections("open"));

    // Server and build.
    let build = samples(&m, "pipeline_gateway_build_info", &[]);
    assert_eq!(build.len(), 1);
    assert_eq!(
        build[0].labels.get("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(build[0].labels.get("commit").is_some_and(|c| !c.is_empty()));
    assert!(!samples(
        &m,
        "pipeline_gateway_connections_open",
        &[("protocol", "h1")]
    )
    .is_empty());
    assert_eq!(
        samples(&m, "pipeline_gateway_config_info", &[]).len(),
        1,
        "the running configuration's hash"
    );

    // A reload rebuilds the runtime: nothing resets, nothing is registered twice.
    let config = Config::from_toml(&text).expect("config");
    gw.reload(config).await.expect("reload");
    let again = get_as(&gw, "/v0/pipelines", Some(&writer)).await;
    assert_eq!(again.status, 200);
    let m = scrape(&gw).await;
    assert_eq!(
        value(
            &m,
            requests,
            &with(&[
                ("route", "primary"),
                ("status_class", "2xx"),
                ("error_code", "")
            ])
        ),
        3.0
    );
    assert_eq!(sum(&m, requests, &[]), 12.0);
    assert_eq!(
        value(
            &m,
            "pipeline_gateway_config_reloads_total",
            &[("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "pipeline_gateway_config_last_reload_successful", &[]),
        1.0
    );
    assert_eq!(samples(&m, "pipeline_gateway_build_info", &[]).len(), 1);
    let mut series: HashMap<String, usize> = HashMap::new();
    for s in &m.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        *series
            .entry(format!("{}{{{}}}", s.metric, labels.join(",")))
            .or_default() += 1;
    }
    let twice: Vec<_> = series.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "series exported twice: {twice:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_is_counted_and_flagged() {
    let manager = standin("a").await;
    let (dead, other_dead) = (closed_port().await, closed_port().await);
    let text = config_text(&manager.url(), dead, other_dead, &[]);
    let gw = gateway(&text).await;
    // The runtime cannot be built: the manager's key is in an environment variable that is
    // not set. The running configuration stays.
    let broken = text.replace(
        "name = \"dead\"\n",
        "name = \"dead\"\ncredentials = \"replace\"\n\
         bearer_env = \"PIPELINE_GATEWAY_TEST_METRICS_NEVER_SET\"\n",
    );
    assert_ne!(broken, text);
    let config = Config::from_toml(&broken).expect("a valid configuration");
    assert!(gw.reload(config).await.is_err());
    let m = scrape(&gw).await;
    assert_eq!(
        value(
            &m,
            "pipeline_gateway_config_reloads_total",
            &[("result", "failed")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "pipeline_gateway_config_last_reload_successful", &[]),
        0.0
    );
    gw.shutdown().await;
}

/// An endless egress stream: its request is timed to its response headers at once, and its
/// lifetime when the client goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_timed_to_headers_and_its_lifetime_when_it_ends() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let manager = standin_with(seeded()).await;
    let text = support::config_for(&manager.url(), "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let gw = gateway(&text).await;
    let mut stream = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /v0/pipelines/live/egress/orders_view HTTP/1.1\r\nHost: gw\r\n\
              Content-Length: 0\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = vec![0u8; 4096];
    let n = stream.read(&mut head).await.expect("read");
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lifetimes = |m: &Scrape| {
        histogram_count(
            m,
            "pipeline_gateway_stream_duration_seconds",
            &[("endpoint", "egress")],
        )
    };
    let m = scrape(&gw).await;
    assert_eq!(
        histogram_count(
            &m,
            "pipeline_gateway_request_duration_seconds",
            &[("endpoint", "egress")]
        ),
        1,
        "timed to its headers while it streams"
    );
    assert_eq!(lifetimes(&m), 0, "still streaming");
    drop(stream);
    let ended = support::eventually(std::time::Duration::from_secs(10), async || {
        lifetimes(&scrape(&gw).await) == 1
    })
    .await;
    assert!(
        ended,
        "the stream's lifetime is observed when the client leaves"
    );
    gw.shutdown().await;
}
